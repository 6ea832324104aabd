//! The harness: a temporary directory, a mock server on its own runtime, and the real binary
//! pointed at both.

use std::path::{Path, PathBuf};

use assert_cmd::Command;
use leadmagic_mock::{MockConfig, MockServer, Stats};

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

    /// Validation arrivals so far; cheap to poll.
    pub fn validations(&self) -> u64 {
        self.server.validations()
    }

    /// Stops the server and waits until every connection is gone: the API "goes away".
    pub fn shutdown(self) {
        let Mock { server, _runtime } = self;
        _runtime.block_on(server.shutdown());
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

    /// The binary started in the background against `mock`, its stderr piped, for tests
    /// that signal or kill it.
    pub fn spawn(&self, mock: &Mock, args: &[&str]) -> std::process::Child {
        self.command(mock).args(args).spawn().unwrap()
    }

    /// The binary as a plain `std` command (to spawn, signal and kill), with the same clean
    /// environment as [`Dir::mailsift`].
    pub fn command(&self, mock: &Mock) -> std::process::Command {
        self.command_at(&mock.url())
    }

    /// Like [`Dir::command`], for an API at `url` (a mock running as its own process).
    pub fn command_at(&self, url: &str) -> std::process::Command {
        let mut cmd = std::process::Command::new(assert_cmd::cargo::cargo_bin("mailsift"));
        cmd.current_dir(self.tmp.path())
            .env_remove("RUST_LOG")
            .env("LEADMAGIC_BASE_URL", url)
            .env("LEADMAGIC_API_KEY", "mock-key")
            .env("MAILSIFT_STATE_DIR", self.state())
            .env("MAILSIFT_NOW", NOW)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped());
        cmd
    }

    /// Opens the state directory's store from the test (the binary must not be running).
    pub fn store(&self) -> mailsift::store::Store {
        mailsift::store::Store::open(&self.state()).unwrap()
    }

    /// Every file under the scratch directory, recursively.
    pub fn files(&self) -> Vec<PathBuf> {
        fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
            for entry in std::fs::read_dir(dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    walk(&path, out);
                } else {
                    out.push(path);
                }
            }
        }
        let mut out = Vec::new();
        walk(self.tmp.path(), &mut out);
        out
    }

    /// An uninterrupted run of `input` into `output`, against a mock of its own with a state
    /// directory of its own (`ref-state`): what every interrupted run must end up equal to.
    /// Returns the output's bytes.
    pub fn reference(&self, input: &str, output: &str) -> Vec<u8> {
        let mock = Mock::fast();
        self.mailsift(&mock)
            .args([
                "validate",
                input,
                "-o",
                output,
                "-q",
                "--state-dir",
                "ref-state",
            ])
            .assert()
            .success();
        self.read(output)
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

/// No address went out twice.
pub fn assert_none_sent_twice(stats: &Stats, what: &str) {
    assert!(
        stats.repeated.is_empty(),
        "{what}: sent twice: {:?}",
        stats.repeated
    );
}

/// Requests refused with 402 were not charged and are asked again; nothing else repeats.
pub fn assert_only_refused_ones_repeated(stats: &Stats) {
    let refused = stats.by_status.get(&402).copied().unwrap_or(0);
    assert!(refused > 0);
    assert!(
        stats.repeated.len() as u64 <= refused,
        "{:?}",
        stats.repeated
    );
    assert!(
        stats.repeated.values().all(|n| *n == 2),
        "{:?}",
        stats.repeated
    );
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

/// Sends a signal (`TERM`, `INT`, `STOP`, `CONT`...) to a process with kill(1): std has no
/// portable way and the tests take no libc dependency for it.
pub fn signal(pid: u32, name: &str) {
    let status = std::process::Command::new("kill")
        .args([format!("-{name}"), pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "kill -{name} {pid}");
}

/// Waits (polling) until `done()` holds or the child exits; true if `done()` held first.
pub fn wait_for(child: &mut std::process::Child, mut done: impl FnMut() -> bool) -> bool {
    loop {
        if done() {
            return true;
        }
        if child.try_wait().unwrap().is_some() {
            return false;
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
}

/// The child's exit code and stderr, once it ends.
pub fn finish(child: std::process::Child) -> (Option<i32>, String) {
    let out = child.wait_with_output().unwrap();
    (out.status.code(), text(&out.stderr))
}

/// A contacts file of `n` data rows: mostly distinct addresses, plus in-file duplicates (near
/// and far, other case), syntax rejects, empty cells and quoted fields with commas and line
/// breaks. Deterministic.
pub fn contacts(n: usize) -> String {
    let mut out = String::from("id,name,email,note\n");
    for i in 0..n {
        let email = match i % 20 {
            3 => format!("User{}@Example-{}.com", i - 1, (i - 1) % 7),
            5 => "not-an-address".to_owned(),
            7 => String::new(),
            // Row i - 199 holds a plain address (i - 199 ends in 12): a far duplicate.
            11 if i > 200 => format!("user{}@example-{}.com", i - 199, (i - 199) % 7),
            13 => format!("\"Name {i} <user{i}@example-{}.com>\"", i % 7),
            _ => format!("user{i}@example-{}.com", i % 7),
        };
        let note = if i % 9 == 0 {
            format!("\"a, \"\"quoted\"\"\nnote {i}\"")
        } else {
            format!("n{i}")
        };
        out.push_str(&format!("{i},\"Name, {i}\",{email},{note}\n"));
    }
    out
}

/// True when the tests run as root, where permission bits do not stop writes.
pub fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    let dir = tempfile::tempdir().unwrap();
    let probe = dir.path().join("probe");
    std::fs::write(&probe, b"").unwrap();
    std::fs::metadata(&probe).unwrap().uid() == 0
}
