//! The harness: a temporary directory, a mock server on its own runtime, and the real binary
//! pointed at both.

use std::path::{Path, PathBuf};

use assert_cmd::Command;
use mailsift::mock::{MockConfig, MockServer, Stats};

/// The pinned clock of every run (Unix seconds).
pub const NOW: &str = "1790000000";

/// A running mock and the runtime that drives it (tests themselves stay synchronous).
pub struct Mock {
    pub server: MockServer,
    _runtime: tokio::runtime::Runtime,
}

impl Mock {
    pub fn start(config: MockConfig) -> Mock {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let server = runtime.block_on(MockServer::start(config)).unwrap();
        Mock {
            server,
            _runtime: runtime,
        }
    }

    /// A mock that answers as fast as the tests can ask.
    pub fn fast() -> Mock {
        Mock::start(MockConfig {
            rate_per_min: 600_000,
            ..MockConfig::default()
        })
    }

    pub fn stats(&self) -> Stats {
        self.server.stats()
    }

    pub fn url(&self) -> String {
        self.server.url()
    }
}

/// A scratch directory with a state directory inside.
pub struct Dir {
    pub tmp: tempfile::TempDir,
}

impl Dir {
    pub fn new() -> Dir {
        Dir {
            tmp: tempfile::tempdir().unwrap(),
        }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.tmp.path().join(name)
    }

    pub fn write(&self, name: &str, contents: impl AsRef<[u8]>) -> PathBuf {
        let path = self.path(name);
        std::fs::write(&path, contents).unwrap();
        path
    }

    pub fn read(&self, name: &str) -> Vec<u8> {
        std::fs::read(self.path(name)).unwrap_or_else(|e| panic!("reading {name}: {e}"))
    }

    pub fn state(&self) -> PathBuf {
        self.path("state")
    }

    /// The binary, with a clean environment pointing at `mock` (key `mock-key`).
    pub fn mailsift(&self, mock: &Mock) -> Command {
        let mut cmd = self.bare();
        cmd.env("LEADMAGIC_BASE_URL", mock.url())
            .env("LEADMAGIC_API_KEY", "mock-key");
        cmd
    }

    /// The binary started in the background against `mock` (same environment as
    /// [`Dir::mailsift`]), its stderr piped, for tests that signal or kill it.
    pub fn spawn(&self, mock: &Mock, args: &[&str]) -> std::process::Child {
        std::process::Command::new(assert_cmd::cargo::cargo_bin("mailsift"))
            .current_dir(self.tmp.path())
            .env_remove("RUST_LOG")
            .env("LEADMAGIC_BASE_URL", mock.url())
            .env("LEADMAGIC_API_KEY", "mock-key")
            .env("MAILSIFT_STATE_DIR", self.state())
            .env("MAILSIFT_NOW", NOW)
            .args(args)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    }

    /// The binary with no key and no base URL.
    pub fn bare(&self) -> Command {
        let mut cmd = Command::cargo_bin("mailsift").unwrap();
        cmd.current_dir(self.tmp.path())
            .env_remove("LEADMAGIC_API_KEY")
            .env_remove("LEADMAGIC_BASE_URL")
            .env("MAILSIFT_STATE_DIR", self.state())
            // Pinned, so two runs of one input are comparable byte for byte.
            .env("MAILSIFT_NOW", NOW)
            .env_remove("RUST_LOG");
        cmd
    }
}

/// Parses CSV bytes into rows of strings.
pub fn rows(bytes: &[u8]) -> Vec<Vec<String>> {
    rows_with(bytes, b',')
}

pub fn rows_with(bytes: &[u8], delimiter: u8) -> Vec<Vec<String>> {
    csv::ReaderBuilder::new()
        .has_headers(false)
        .delimiter(delimiter)
        .flexible(true)
        .from_reader(bytes)
        .byte_records()
        .map(|r| {
            r.unwrap()
                .iter()
                .map(|f| String::from_utf8_lossy(f).into_owned())
                .collect()
        })
        .collect()
}

pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

pub fn sample() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/samples/contacts.csv"))
}
