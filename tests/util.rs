//! The harness: a temporary directory, a mock server on its own runtime, and the real binary
//! pointed at both.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use assert_cmd::assert::Assert;
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
        Mock::start(crate::scenario::fast())
    }

    /// A fast mock holding `credits` (to run out of).
    pub fn with_credits(credits: f64) -> Mock {
        Mock::start(crate::scenario::with_credits(credits))
    }

    /// A mock that fails 30% of validations with a 500 (seeded), otherwise fast.
    pub fn flaky() -> Mock {
        Mock::start(MockConfig {
            rate_per_min: 600_000,
            p_500: 0.3,
            seed: 7,
            ..MockConfig::default()
        })
    }

    /// A mock whose every answer takes `ms` milliseconds, so a job is still running when the
    /// test acts on it.
    pub fn fixed_latency(ms: u64) -> Mock {
        Mock::start(MockConfig {
            rate_per_min: 1_000_000,
            latency: leadmagic_mock::Latency::Fixed(Duration::from_millis(ms)),
            ..MockConfig::default()
        })
    }

    /// A mock whose answers take a log-normal time (`median` and `p99` in milliseconds), so
    /// requests overlap and finish out of order.
    pub fn lognormal(rate_per_min: u32, median: u64, p99: u64) -> Mock {
        Mock::start(MockConfig {
            rate_per_min,
            latency: leadmagic_mock::Latency::LogNormal {
                median: Duration::from_millis(median),
                p99: Duration::from_millis(p99),
            },
            ..MockConfig::default()
        })
    }

    pub fn stats(&self) -> Stats {
        self.server.stats()
    }

    /// The statistics once the mock has finished every request it received (a killed
    /// client's requests are still answered and charged when their latency ends).
    pub fn settled(&self) -> Stats {
        eventually("the mock to finish the requests in flight", || {
            self.stats().in_flight == 0
        });
        self.stats()
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

    /// `mailsift` against `mock` with the arguments written in `line` (split at white
    /// space), run to its end.
    pub fn run(&self, mock: &Mock, line: &str) -> Assert {
        self.mailsift(mock).args(line.split_whitespace()).assert()
    }

    /// [`Dir::run`] that must succeed.
    pub fn ok(&self, mock: &Mock, line: &str) -> Assert {
        self.run(mock, line).success()
    }

    /// The binary started in the background against `mock` with the arguments written in
    /// `line`, its stderr piped, for tests that signal or kill it.
    pub fn spawn(&self, mock: &Mock, line: &str) -> std::process::Child {
        self.command(mock)
            .args(line.split_whitespace())
            .spawn()
            .unwrap()
    }

    /// [`Dir::spawn`], returned once the mock has received `n` validations in all; fails if
    /// the job ends first.
    pub fn spawn_until(&self, mock: &Mock, line: &str, n: u64) -> std::process::Child {
        let mut child = self.spawn(mock, line);
        if !wait_for_validations(&mut child, mock, n) {
            let (code, stderr) = finish(child);
            panic!("the job ended ({code:?}) before validation {n}: {stderr}");
        }
        child
    }

    /// Kills the job with SIGKILL once the mock has received `n` validations in all.
    pub fn kill_at(&self, mock: &Mock, line: &str, n: u64) {
        let mut child = self.spawn_until(mock, line, n);
        child.kill().unwrap();
        let (code, _) = finish(child);
        assert_eq!(code, None, "killed by SIGKILL at validation {n}");
    }

    /// Runs the job with the test crash point `at` (`write:2`, `rename:1`...), which it must
    /// reach: the process exits with `CRASH_EXIT` there. Returns its stderr.
    pub fn crash_at(&self, mock: &Mock, line: &str, at: &str) -> String {
        let mut child = self.command(mock);
        child
            .args(line.split_whitespace())
            .env("MAILSIFT_TEST_CRASH_AT", at);
        let (code, stderr) = finish(child.spawn().unwrap());
        assert_eq!(
            code,
            Some(mailsift::internals::CRASH_EXIT),
            "crash at {at}: {stderr}"
        );
        stderr
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
        self.reference_counted(input, output).0
    }

    /// [`Dir::reference`], with the number of distinct addresses the run sent (each once).
    pub fn reference_counted(&self, input: &str, output: &str) -> (Vec<u8>, u64) {
        let mock = Mock::fast();
        self.ok(
            &mock,
            &format!("validate {input} -o {output} -q --state-dir ref-state"),
        );
        let stats = mock.stats();
        assert_none_sent_twice(&stats, "the uninterrupted run");
        (self.read(output), stats.unique_addresses)
    }

    /// [`Dir::bare`] with the arguments written in `line`, run to its end.
    pub fn bare_run(&self, line: &str) -> Assert {
        self.bare().args(line.split_whitespace()).assert()
    }

    /// [`Dir::bare_run`] at another time than [`NOW`] (Unix seconds).
    pub fn bare_run_at(&self, now: u64, line: &str) -> Assert {
        self.bare()
            .env("MAILSIFT_NOW", now.to_string())
            .args(line.split_whitespace())
            .assert()
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
            .env_remove("RUST_LOG")
            .timeout(PATIENCE);
        cmd
    }
}

/// What a finished command printed.
pub trait Printed {
    /// Standard error holds each of `texts`.
    fn stderr_has(self, texts: &[&str]) -> Self;
    /// Standard output holds each of `texts`.
    fn stdout_has(self, texts: &[&str]) -> Self;
}

impl Printed for Assert {
    fn stderr_has(self, texts: &[&str]) -> Assert {
        let stderr = text(&self.get_output().stderr);
        for want in texts {
            assert!(stderr.contains(want), "no {want:?} in stderr: {stderr}");
        }
        self
    }

    fn stdout_has(self, texts: &[&str]) -> Assert {
        let stdout = text(&self.get_output().stdout);
        for want in texts {
            assert!(stdout.contains(want), "no {want:?} in stdout: {stdout}");
        }
        self
    }
}

/// A fast mock and a scratch directory holding `input` as `in.csv`: how most tests begin.
pub fn with_input(input: impl AsRef<[u8]>) -> (Mock, Dir) {
    let dir = Dir::new();
    dir.write("in.csv", input);
    (Mock::fast(), dir)
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

/// How long a test waits for what another thread or process brings about (a run of the
/// binary included), however loaded the machine: far longer than any of them takes, short of
/// hanging the suite.
pub const PATIENCE: Duration = Duration::from_secs(180);

/// Waits (polling) until `done()` holds; fails naming `what` after [`PATIENCE`].
pub fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !done() {
        assert!(
            Instant::now() < deadline,
            "timed out after {PATIENCE:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Waits (polling) until `done()` holds or the child exits; true if `done()` held first.
/// After [`PATIENCE`] it kills the child and fails naming `what`.
pub fn wait_for(
    child: &mut std::process::Child,
    what: &str,
    mut done: impl FnMut() -> bool,
) -> bool {
    let deadline = Instant::now() + PATIENCE;
    loop {
        if done() {
            return true;
        }
        if child.try_wait().unwrap().is_some() {
            return false;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("timed out after {PATIENCE:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Reads the child's stderr until a line holds `text`; fails after [`PATIENCE`] or if stderr
/// ends first. Returns what it read.
pub fn wait_for_line(child: &mut std::process::Child, text: &str) -> String {
    use std::io::BufRead;
    let stderr = std::io::BufReader::new(child.stderr.take().expect("stderr piped"));
    let (lines, seen) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in stderr.lines().map_while(Result::ok) {
            if lines.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + PATIENCE;
    let mut read = String::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match seen.recv_timeout(left) {
            Ok(line) => {
                read.push_str(&line);
                read.push('\n');
                if line.contains(text) {
                    return read;
                }
            }
            Err(e) => {
                let _ = child.kill();
                panic!("waiting for a line with {text:?} on stderr: {e}; read: {read}");
            }
        }
    }
}

/// [`wait_for`] the mock to have received `n` validations in all.
pub fn wait_for_validations(child: &mut std::process::Child, mock: &Mock, n: u64) -> bool {
    let what = format!("the mock to receive {n} validations");
    wait_for(child, &what, || mock.validations() >= n)
}

/// The child's exit code and stderr, once it ends; after [`PATIENCE`] it is killed and the
/// test fails.
pub fn finish(child: std::process::Child) -> (Option<i32>, String) {
    let pid = child.id();
    let (done, ended) = std::sync::mpsc::channel();
    std::thread::spawn(move || done.send(child.wait_with_output()));
    match ended.recv_timeout(PATIENCE) {
        Ok(out) => {
            let out = out.unwrap();
            (out.status.code(), text(&out.stderr))
        }
        Err(_) => {
            signal(pid, "KILL");
            panic!("timed out after {PATIENCE:?} waiting for process {pid} to end");
        }
    }
}

/// Waits for the child to end with `code` and a stderr holding each of `texts`; returns the
/// stderr.
pub fn finish_with(child: std::process::Child, code: i32, texts: &[&str]) -> String {
    let (got, stderr) = finish(child);
    assert_eq!(got, Some(code), "{stderr}");
    for text in texts {
        assert!(stderr.contains(text), "no {text:?} in: {stderr}");
    }
    stderr
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

/// Every value `email_status` may take.
#[rustfmt::skip]
pub const STATUSES: [&str; 7] =
    ["valid", "valid_catch_all", "catch_all", "unknown", "invalid", "missing", "error"];

/// Each line `n` (counted from 0) of `bytes` starts with its text.
pub fn assert_lines_start(bytes: &[u8], want: &[(usize, &str)]) {
    let lines: Vec<&[u8]> = bytes.split(|&b| b == b'\n').collect();
    for (n, start) in want {
        assert!(
            lines[*n].starts_with(start.as_bytes()),
            "line {n} does not start with {start:?}: {}",
            text(lines[*n])
        );
    }
}

/// Index of the column `name` in parsed rows' header.
pub fn column(rows: &[Vec<String>], name: &str) -> usize {
    rows[0]
        .iter()
        .position(|c| c == name)
        .unwrap_or_else(|| panic!("no column {name} in {:?}", rows[0]))
}

/// Parses JSON bytes (a report, a `--json` answer), showing them when they are not JSON.
pub fn json(bytes: &[u8]) -> serde_json::Value {
    serde_json::from_slice(bytes).unwrap_or_else(|e| panic!("{e}: {}", text(bytes)))
}
