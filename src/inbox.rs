//! `mailsift inbox`: validate the files dropped into a folder, one at a time, with nobody
//! watching (cron, systemd timers, SFTP drops).
//!
//! Each ready file runs as an ordinary `validate` job (so it resumes after any stop exactly as
//! `validate` does), writes its results to the outbox, and is then moved to the archive; a file
//! that cannot be processed goes to the failed folder with a note saying why. A lock on the
//! inbox keeps overlapping invocations apart. Events are logged one line each, as text or JSON.
//!
//! It owns no CSV, HTTP or store logic: all of that is `validate`'s.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use anyhow::Context;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use crate::config::InboxConfig;
use crate::config::ValidateConfig;
use crate::durable::{write_atomic, Lock};
use crate::exit::Exit;
use crate::input::Location;
use crate::store::Store;
use crate::validate;

/// Names that are someone else's work in progress, never picked up.
const TEMPORARY: [&str; 6] = [".partial", ".tmp", "~", ".crdownload", ".part", ".ready"];
/// The lock that keeps two inbox runs on one folder apart (hidden, so never picked up).
const LOCK: &str = ".mailsift-inbox.lock";

/// One line per event, in the program's style ([`crate::term`]) for people, or as a JSON object
/// for log shippers: `time`, `level`, `event`, `message`, `file` and the event's details.
struct Log {
    json: bool,
    quiet: bool,
}

impl Log {
    fn event(&self, event: &str, file: Option<&Path>, message: &str, details: Value) {
        let trouble = matches!(event, "failed" | "hook_failed");
        if self.quiet && !trouble && event != "stopped" {
            return;
        }
        if self.json {
            let mut fields = serde_json::Map::new();
            fields.insert("event".into(), event.into());
            if let Some(file) = file {
                fields.insert("file".into(), file.display().to_string().into());
            }
            if let Value::Object(details) = details {
                fields.extend(details);
            }
            let level = if trouble { "warning" } else { "info" };
            return crate::term::json_line(level, message, fields);
        }
        let text = match file {
            Some(file) if event == "finished" => format!("{}: {message}", file.display()),
            Some(file) if event == "started" => format!("{} {message}", file.display()),
            Some(file) => format!("{}: {message}", file.display()),
            None => message.to_owned(),
        };
        match event {
            "failed" | "hook_failed" => crate::term::warn(text),
            "locked" => crate::term::note(text),
            "started" => crate::term::status("Validating", text),
            other => {
                let mut word = other.to_owned();
                word[..1].make_ascii_uppercase();
                crate::term::status(&word, text)
            }
        }
    }
}

/// What the inbox needs from the rest of mailsift: running one file's job, and knowing whether
/// the state directory holds a job of that very file. [`Validate`] in the program, a fake in
/// the unit tests.
pub(crate) trait Jobs {
    /// Runs one job to its end or to a resumable stop (`stop` is cancelled by a signal).
    fn run(
        &self,
        job: ValidateConfig,
        stop: CancellationToken,
    ) -> impl Future<Output = anyhow::Result<Exit>> + Send;

    /// Whether the state directory holds a job of `input`, with the content it has now, writing
    /// `output`: the same file run again (stopped before its end, or killed after it before the
    /// input was archived), which goes on with its own output.
    fn same_file(
        &self,
        input: &Path,
        output: &Path,
    ) -> impl Future<Output = anyhow::Result<bool>> + Send;
}

/// The jobs of `mailsift validate`, and their records in the state directory.
struct Validate {
    state_dir: PathBuf,
}

impl Jobs for Validate {
    async fn run(&self, job: ValidateConfig, stop: CancellationToken) -> anyhow::Result<Exit> {
        validate::run(job, stop.cancelled_owned()).await
    }

    async fn same_file(&self, input: &Path, output: &Path) -> anyhow::Result<bool> {
        let (dir, input, output) = (self.state_dir.clone(), input.to_owned(), output.to_owned());
        // Opening the store may wait for its lock: not on a worker.
        tokio::task::spawn_blocking(move || job_of(&dir, &input, &output)).await?
    }
}

/// Whether `dir` holds a job record of `input` -> `output` made from the content `input` has
/// now. Read-only: a state directory that does not exist is not created.
fn job_of(dir: &Path, input: &Path, output: &Path) -> anyhow::Result<bool> {
    if !dir.join("db").exists() {
        return Ok(false);
    }
    // The keys validate gives a job: the canonical paths (of the folder, for an output not
    // written yet).
    let absolute = |path: &Path| -> String {
        let path = std::fs::canonicalize(path).unwrap_or_else(|_| {
            let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
            let dir = dir.unwrap_or(Path::new("."));
            let name = path.file_name().unwrap_or_default();
            std::fs::canonicalize(dir)
                .unwrap_or_else(|_| dir.to_owned())
                .join(name)
        });
        path.display().to_string()
    };
    let id = Store::job_id(&absolute(input), &absolute(output));
    let Some(record) = Store::open(dir)?.job(&id)? else {
        return Ok(false);
    };
    Ok(record.fingerprint == validate::fingerprint(input)?)
}

/// Runs the inbox until it is empty (`--once`) or until a signal.
pub async fn run(
    config: InboxConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<Exit> {
    let jobs = Validate {
        state_dir: config.template.state_dir.clone(),
    };
    watch(&config, &jobs, shutdown).await
}

async fn watch(
    config: &InboxConfig,
    jobs: &impl Jobs,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<Exit> {
    let log = Log {
        json: config.json_log,
        quiet: config.quiet,
    };
    let cancel = CancellationToken::new();
    let on_signal = cancel.clone();
    tokio::spawn(async move {
        shutdown.await;
        on_signal.cancel();
    });

    let Some(_lock) = lock(config, &log, &cancel).await? else {
        return Ok(if cancel.is_cancelled() {
            Exit::Interrupted
        } else {
            Exit::Ok
        });
    };
    for dir in [&config.outbox, &config.archive, &config.failed] {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create the folder {}", dir.display()))?;
    }
    if !config.once {
        // A service that says nothing when it starts looks like one that did not start.
        log.event(
            "watching",
            Some(&config.inbox),
            &format!(
                "every {}, results to {} (stop with Ctrl-C or SIGTERM)",
                humantime::format_duration(config.interval),
                config.outbox.display()
            ),
            json!({ "outbox": config.outbox, "interval_seconds": config.interval.as_secs_f64() }),
        );
    }
    loop {
        for (path, ready) in scan(config)? {
            if cancel.is_cancelled() {
                log.event("stopped", None, "interrupted by a signal", json!({}));
                return Ok(Exit::Interrupted);
            }
            if !ready {
                log.event(
                    "waiting",
                    Some(&path),
                    "still being written (or no .ready marker yet)",
                    json!({}),
                );
                continue;
            }
            if let Some(exit) = process(config, jobs, &log, &cancel, &path).await? {
                return Ok(exit);
            }
        }
        if config.once {
            return Ok(Exit::Ok);
        }
        tokio::select! {
            _ = cancel.cancelled() => {
                log.event("stopped", None, "stopped by a signal while idle", json!({}));
                return Ok(Exit::Ok);
            }
            _ = tokio::time::sleep(config.interval) => {}
        }
    }
}

/// Validates one file and moves it on. `Some(exit)` ends the inbox run.
async fn process(
    config: &InboxConfig,
    jobs: &impl Jobs,
    log: &Log,
    cancel: &CancellationToken,
    path: &Path,
) -> anyhow::Result<Option<Exit>> {
    let (output, report) = outputs(config, jobs, path).await?;
    log.event(
        "started",
        Some(path),
        &format!("-> {}", output.display()),
        json!({ "output": output }),
    );

    let mut job = config.template.clone();
    job.input = Location::Path(path.to_owned());
    job.output = Some(output.clone());
    job.report = Some(report.clone());
    job.report_html = config.report_html.then(|| report.with_extension("html"));
    let result = jobs.run(job, cancel.clone()).await;
    let exit = match &result {
        Ok(exit) => *exit,
        Err(e) => Exit::for_error(e),
    };
    match exit {
        Exit::Ok => {
            let summary: Value = std::fs::read(&report)
                .ok()
                .and_then(|b| serde_json::from_slice(&b).ok())
                .unwrap_or(Value::Null);
            let archived = move_to(path, &config.archive)?;
            let _ = std::fs::remove_file(marker(path));
            let rows = summary["rows"]["total"].as_u64().unwrap_or(0);
            log.event(
                "finished",
                Some(path),
                &format!("{rows} rows -> {}; input moved to {}", output.display(), archived.display()),
                json!({ "output": output, "report": report, "archived": archived, "summary": summary }),
            );
            if let Some(command) = &config.on_complete {
                hook(
                    command,
                    log,
                    &archived,
                    &output,
                    &report,
                    &summary,
                    config.template.split,
                );
            }
            Ok(None)
        }
        // The file's own fault (no email column, unreadable): set it aside, go on.
        Exit::Usage => {
            let why = format!(
                "{:#}",
                result
                    .err()
                    .unwrap_or_else(|| anyhow::anyhow!("usage error"))
            );
            let moved = move_to(path, &config.failed)?;
            let note = moved.with_file_name(format!(
                "{}.error.txt",
                moved
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default()
            ));
            write_atomic(&note, format!("{why}\n").as_bytes())
                .with_context(|| format!("writing {}", note.display()))?;
            let _ = std::fs::remove_file(marker(path));
            log.event(
                "failed",
                Some(path),
                &why,
                json!({ "moved_to": moved, "reason": note }),
            );
            Ok(None)
        }
        // Everything else concerns every file: stop, leave the files where they are; the next
        // run resumes this one.
        other => {
            let why = match result {
                Err(e) => format!("{e:#}"),
                Ok(_) => match other {
                    Exit::Interrupted => {
                        "interrupted by a signal; the next run resumes this file".into()
                    }
                    Exit::OutOfCredits => {
                        "out of credits or budget reached; the remaining files stay in the inbox"
                            .into()
                    }
                    Exit::TooManyFailures => {
                        "the API looks down; the next run resumes this file".into()
                    }
                    _ => "stopped".into(),
                },
            };
            log.event(
                "stopped",
                Some(path),
                &why,
                json!({ "exit_code": other.code() }),
            );
            Ok(Some(other))
        }
    }
}

/// Takes the inbox lock. `None`: another run holds it (and `--wait` was not given), or a
/// signal came while waiting.
async fn lock(
    config: &InboxConfig,
    log: &Log,
    cancel: &CancellationToken,
) -> anyhow::Result<Option<Lock>> {
    let path = config.inbox.join(LOCK);
    let cannot = || format!("cannot lock {}", path.display());
    if let Ok(lock) = Lock::try_take(&path).with_context(cannot)? {
        return Ok(Some(lock));
    }
    if !config.wait {
        log.event(
            "locked",
            None,
            &format!(
                "another mailsift inbox run is processing {}; exiting (use --wait to wait for it)",
                config.inbox.display()
            ),
            json!({}),
        );
        return Ok(None);
    }
    log.event(
        "waiting",
        None,
        "another mailsift inbox run holds the folder; waiting for it",
        json!({}),
    );
    let waiting = {
        let path = path.clone();
        tokio::task::spawn_blocking(move || Lock::wait(&path))
    };
    tokio::select! {
        locked = waiting => Ok(Some(locked?.with_context(cannot)?)),
        _ = cancel.cancelled() => Ok(None),
    }
}

/// The candidate files, oldest first, each with whether it is ready.
fn scan(config: &InboxConfig) -> anyhow::Result<Vec<(PathBuf, bool)>> {
    let now = SystemTime::now();
    let mut found = Vec::new();
    let entries = std::fs::read_dir(&config.inbox)
        .with_context(|| format!("cannot read the inbox {}", config.inbox.display()))?;
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let meta = match entry.metadata() {
            Ok(meta) if meta.is_file() => meta,
            _ => continue,
        };
        if name.starts_with('.')
            || TEMPORARY.iter().any(|t| name.ends_with(t))
            || name.ends_with(".error.txt")
            || !config.patterns.iter().any(|p| p.matches(&name))
        {
            continue;
        }
        let path = entry.path();
        let modified = meta.modified().unwrap_or(now);
        let ready = if config.require_marker {
            marker(&path).exists()
        } else {
            now.duration_since(modified).unwrap_or(Duration::ZERO) >= config.settle
        };
        found.push((modified, path, ready));
    }
    found.sort();
    Ok(found
        .into_iter()
        .map(|(_, path, ready)| (path, ready))
        .collect())
}

/// Where a file's results go: OUTBOX/STEM.validated.csv and STEM.report.json, or STEM-2.*,
/// STEM-3.* as the archive names them, so that a file dropped again under a name already used
/// never overwrites the results of the earlier one. The same file run again (stopped and
/// resumed, or killed after its job's end) keeps its own output.
async fn outputs(
    config: &InboxConfig,
    jobs: &impl Jobs,
    path: &Path,
) -> anyhow::Result<(PathBuf, PathBuf)> {
    use crate::output::{partial_path, split_paths};
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    for n in 1..=10_000 {
        let name = match n {
            1 => stem.clone(),
            n => format!("{stem}-{n}"),
        };
        let output = config.outbox.join(format!("{name}.validated.csv"));
        let report = config.outbox.join(format!("{name}.report.json"));
        if jobs.same_file(path, &output).await? {
            return Ok((output, report));
        }
        let mut files = vec![report.with_extension("html"), report.clone()];
        for written in std::iter::once(output.clone()).chain(split_paths(&output)) {
            files.push(partial_path(&written));
            files.push(written);
        }
        if !files.iter().any(|f| f.symlink_metadata().is_ok()) {
            return Ok((output, report));
        }
    }
    anyhow::bail!(
        "{} holds results for 10000 files named {stem}: move some away",
        config.outbox.display()
    )
}

fn marker(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".ready");
    PathBuf::from(name)
}

/// Moves a file into `dir`, keeping its name (`name-2.ext` and so on if taken).
fn move_to(path: &Path, dir: &Path) -> anyhow::Result<PathBuf> {
    let name = path.file_name().unwrap_or_default();
    let mut target = dir.join(name);
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let ext = path
        .extension()
        .map(|e| format!(".{}", e.to_string_lossy()))
        .unwrap_or_default();
    let mut n = 2;
    while target.exists() {
        target = dir.join(format!("{stem}-{n}{ext}"));
        n += 1;
    }
    if std::fs::rename(path, &target).is_err() {
        // Another filesystem: copy, then remove.
        std::fs::copy(path, &target)
            .and_then(|_| std::fs::remove_file(path))
            .with_context(|| format!("cannot move {} to {}", path.display(), dir.display()))?;
    }
    Ok(target)
}

/// Runs `--on-complete` with the file's paths and counts in the environment. The API key is
/// not passed on: the hook has no use for it.
fn hook(
    command: &str,
    log: &Log,
    input: &Path,
    output: &Path,
    report: &Path,
    summary: &Value,
    split: bool,
) {
    let mut cmd = std::process::Command::new("sh");
    cmd.arg("-c")
        .arg(command)
        .env_remove(crate::api::KEY_VAR)
        .env("MAILSIFT_INPUT", input)
        .env("MAILSIFT_OUTPUT", output)
        .env("MAILSIFT_REPORT", report)
        .env(
            "MAILSIFT_ROWS",
            summary["rows"]["total"].as_u64().unwrap_or(0).to_string(),
        )
        .env(
            "MAILSIFT_CREDITS_SPENT",
            summary["credits"]["spent_this_run"].to_string(),
        );
    if let Some(statuses) = summary["statuses"].as_object() {
        for (status, n) in statuses {
            cmd.env(format!("MAILSIFT_{}", status.to_uppercase()), n.to_string());
        }
    }
    if split {
        for (kind, path) in crate::schema::SPLITS
            .iter()
            .zip(crate::output::split_paths(output))
        {
            cmd.env(format!("MAILSIFT_{}", kind.to_uppercase()), path);
        }
    }
    match cmd.status() {
        Ok(status) if status.success() => {}
        Ok(status) => log.event(
            "hook_failed",
            Some(input),
            &format!("--on-complete exited with {status}"),
            json!({}),
        ),
        Err(e) => log.event(
            "hook_failed",
            Some(input),
            &format!("--on-complete could not run: {e}"),
            json!({}),
        ),
    }
}

#[cfg(test)]
mod tests {
    //! The inbox's own logic (which files, which names, what moves where, what is said and run)
    //! behind a fake job runner: no CSV is read and nothing is validated here.

    use std::collections::VecDeque;
    use std::sync::{Arc, Mutex};

    use clap::Parser;
    use tokio::sync::mpsc;

    use super::*;
    use crate::cli::Args;
    use crate::config::Config;
    use crate::output::partial_path;

    /// One job the fake was asked to run.
    #[derive(Debug, Clone, PartialEq)]
    struct Run {
        input: PathBuf,
        output: PathBuf,
        report: PathBuf,
    }

    /// Runs no job: answers from a script, writes what a job would write (the input's lines
    /// under a `validated` header and a report on success, a partial file on a stop), and keeps
    /// a record of each job, as the state directory would.
    #[derive(Default)]
    struct Fake {
        script: Mutex<VecDeque<anyhow::Result<Exit>>>,
        runs: Mutex<Vec<Run>>,
        /// The jobs' records: input, output, and the input's content then.
        jobs: Mutex<Vec<(PathBuf, PathBuf, Vec<u8>)>>,
        seen: Option<mpsc::UnboundedSender<PathBuf>>,
    }

    impl Fake {
        fn answering(script: Vec<anyhow::Result<Exit>>) -> Fake {
            Fake {
                script: Mutex::new(script.into()),
                ..Fake::default()
            }
        }

        fn runs(&self) -> Vec<Run> {
            self.runs.lock().unwrap().clone()
        }
    }

    impl Jobs for Fake {
        async fn run(&self, job: ValidateConfig, _stop: CancellationToken) -> anyhow::Result<Exit> {
            let Location::Path(input) = job.input else {
                panic!("the inbox runs files, not standard input")
            };
            let (output, report) = (job.output.unwrap(), job.report.unwrap());
            let content = std::fs::read(&input).unwrap();
            self.runs.lock().unwrap().push(Run {
                input: input.clone(),
                output: output.clone(),
                report: report.clone(),
            });
            let result = self
                .script
                .lock()
                .unwrap()
                .pop_front()
                .unwrap_or(Ok(Exit::Ok));
            match &result {
                Ok(Exit::Ok) => {
                    let rows = content.iter().filter(|b| **b == b'\n').count();
                    std::fs::write(&output, [b"validated\n".as_slice(), &content].concat())
                        .unwrap();
                    let summary = json!({
                        "rows": { "total": rows },
                        "statuses": { "valid": rows },
                        "credits": { "spent_this_run": 0.5 },
                    });
                    std::fs::write(&report, summary.to_string()).unwrap();
                }
                Ok(_) => std::fs::write(partial_path(&output), "validated\n").unwrap(),
                Err(_) => {}
            }
            if result.is_ok() {
                let record = (input.clone(), output, content);
                self.jobs.lock().unwrap().push(record);
            }
            if let Some(seen) = &self.seen {
                let _ = seen.send(input);
            }
            result
        }

        async fn same_file(&self, input: &Path, output: &Path) -> anyhow::Result<bool> {
            let now = std::fs::read(input)?;
            Ok(self
                .jobs
                .lock()
                .unwrap()
                .iter()
                .any(|(i, o, content)| i == input && o == output && *content == now))
        }
    }

    /// A folder with `in/` (the inbox) and the config of `mailsift inbox in --out out` plus
    /// `args`, as the command line makes it.
    struct Drop {
        dir: tempfile::TempDir,
    }

    impl Drop {
        fn new() -> Drop {
            let dir = tempfile::tempdir().unwrap();
            std::fs::create_dir(dir.path().join("in")).unwrap();
            Drop { dir }
        }

        fn path(&self, name: &str) -> PathBuf {
            self.dir.path().join(name)
        }

        /// Writes `in/NAME`, last changed `age` ago.
        fn put(&self, name: &str, content: &str, age: Duration) -> PathBuf {
            let path = self.path("in").join(name);
            std::fs::write(&path, content).unwrap();
            let file = std::fs::File::options().write(true).open(&path).unwrap();
            file.set_modified(SystemTime::now() - age).unwrap();
            path
        }

        fn read(&self, name: &str) -> String {
            std::fs::read_to_string(self.path(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
        }

        fn config(&self, args: &[&str]) -> InboxConfig {
            let root = |name: &str| self.path(name).display().to_string();
            let mut line = vec![
                "mailsift".to_owned(),
                "--sandbox".into(),
                "--quiet".into(),
                "inbox".into(),
                root("in"),
                "--out".into(),
                root("out"),
                "--state-dir".into(),
                root("state"),
            ];
            if !args.contains(&"--settle") {
                line.extend(["--settle".into(), "0s".into()]);
            }
            line.extend(args.iter().map(|a| a.to_string()));
            match Config::from_args(Args::try_parse_from(line).unwrap(), None).unwrap() {
                Config::Inbox(config) => *config,
                other => panic!("{other:?}"),
            }
        }
    }

    async fn once(config: &InboxConfig, fake: &Fake) -> Exit {
        watch(config, fake, std::future::pending()).await.unwrap()
    }

    const MINUTE: Duration = Duration::from_secs(60);

    #[tokio::test]
    async fn a_file_dropped_again_under_a_used_name_gets_results_of_its_own() {
        let drop = Drop::new();
        let config = drop.config(&["--once"]);
        let fake = Fake::default();
        drop.put("a.csv", "email\nann@acme.com\n", MINUTE);
        assert_eq!(once(&config, &fake).await, Exit::Ok);
        drop.put("a.csv", "email\nbob@initech.com\ncy@initech.com\n", MINUTE);
        assert_eq!(once(&config, &fake).await, Exit::Ok);
        drop.put("a.csv", "email\ndee@globex.com\n", MINUTE);
        assert_eq!(once(&config, &fake).await, Exit::Ok);

        assert_eq!(
            drop.read("out/a.validated.csv"),
            "validated\nemail\nann@acme.com\n"
        );
        assert_eq!(
            drop.read("out/a-2.validated.csv"),
            "validated\nemail\nbob@initech.com\ncy@initech.com\n"
        );
        assert_eq!(
            drop.read("out/a-3.validated.csv"),
            "validated\nemail\ndee@globex.com\n"
        );
        for (report, rows) in [("a", 2), ("a-2", 3), ("a-3", 2)] {
            let summary: Value =
                serde_json::from_str(&drop.read(&format!("out/{report}.report.json"))).unwrap();
            assert_eq!(summary["rows"]["total"], rows, "{report}");
        }
        assert_eq!(drop.read("in/processed/a.csv"), "email\nann@acme.com\n");
        assert_eq!(drop.read("in/processed/a-3.csv"), "email\ndee@globex.com\n");
    }

    #[tokio::test]
    async fn a_stopped_file_resumes_into_its_own_output_and_a_replaced_one_does_not() {
        let drop = Drop::new();
        let config = drop.config(&["--once"]);
        let fake = Fake::answering(vec![
            Ok(Exit::Interrupted),
            Ok(Exit::OutOfCredits),
            Ok(Exit::Ok),
        ]);
        drop.put("a.csv", "email\nann@acme.com\n", MINUTE);
        assert_eq!(once(&config, &fake).await, Exit::Interrupted);
        assert!(
            drop.path("in/a.csv").exists(),
            "a stopped file stays in the inbox"
        );
        assert_eq!(once(&config, &fake).await, Exit::OutOfCredits);
        assert_eq!(once(&config, &fake).await, Exit::Ok);
        let outputs: Vec<PathBuf> = fake.runs().into_iter().map(|r| r.output).collect();
        assert_eq!(outputs, vec![drop.path("out/a.validated.csv"); 3]);
        assert_eq!(
            drop.read("out/a.validated.csv"),
            "validated\nemail\nann@acme.com\n"
        );

        // Stopped, then replaced by another file of the same name before the next run: that
        // one is new, and the stopped job's files are left alone.
        let fake = Fake::answering(vec![Ok(Exit::Interrupted)]);
        drop.put("b.csv", "email\nbob@initech.com\n", MINUTE);
        assert_eq!(once(&config, &fake).await, Exit::Interrupted);
        drop.put("b.csv", "email\ncy@globex.com\n", MINUTE);
        assert_eq!(once(&config, &fake).await, Exit::Ok);
        let outputs: Vec<PathBuf> = fake.runs().into_iter().map(|r| r.output).collect();
        assert_eq!(
            outputs,
            [
                drop.path("out/b.validated.csv"),
                drop.path("out/b-2.validated.csv")
            ]
        );
        assert!(partial_path(&drop.path("out/b.validated.csv")).exists());
        assert_eq!(
            drop.read("out/b-2.validated.csv"),
            "validated\nemail\ncy@globex.com\n"
        );
    }

    /// Killed after the job's end, before the input was archived: the next run is the same
    /// job, with the same output (validate then finds it done); the same content dropped again
    /// is the same job too, and nothing is written beside it.
    #[tokio::test]
    async fn the_same_file_run_again_keeps_its_output() {
        let drop = Drop::new();
        let config = drop.config(&["--once"]);
        let fake = Fake::default();
        let content = "email\nann@acme.com\n";
        let input = drop.put("a.csv", content, MINUTE);
        std::fs::create_dir(drop.path("out")).unwrap();
        std::fs::write(drop.path("out/a.validated.csv"), "validated\n").unwrap();
        let record = (input, drop.path("out/a.validated.csv"), content.into());
        fake.jobs.lock().unwrap().push(record);
        assert_eq!(once(&config, &fake).await, Exit::Ok);
        drop.put("a.csv", content, MINUTE);
        assert_eq!(once(&config, &fake).await, Exit::Ok);
        let outputs: Vec<PathBuf> = fake.runs().into_iter().map(|r| r.output).collect();
        assert_eq!(outputs, vec![drop.path("out/a.validated.csv"); 2]);
        assert!(!drop.path("out/a-2.validated.csv").exists());
        assert!(drop.path("in/processed/a-2.csv").exists());
    }

    #[tokio::test]
    async fn a_file_the_job_refuses_is_set_aside_with_a_note_and_the_rest_go_on() {
        let drop = Drop::new();
        let config = drop.config(&["--once"]);
        let why = "bad.csv, line 1: no column holds addresses; name it with --email-column";
        let fake = Fake::answering(vec![Err(crate::exit::usage(why))]);
        drop.put("bad.csv", "name\nAnn\n", 2 * MINUTE);
        drop.put("good.csv", "email\nann@acme.com\n", MINUTE);
        assert_eq!(once(&config, &fake).await, Exit::Ok);

        assert_eq!(drop.read("in/failed/bad.csv"), "name\nAnn\n");
        assert_eq!(drop.read("in/failed/bad.csv.error.txt"), format!("{why}\n"));
        assert!(!drop.path("out/bad.validated.csv").exists());
        assert_eq!(drop.read("in/processed/good.csv"), "email\nann@acme.com\n");
        assert!(drop.path("out/good.report.json").exists());
    }

    #[tokio::test]
    async fn a_stop_that_concerns_every_file_ends_the_run_and_moves_nothing() {
        let drop = Drop::new();
        let config = drop.config(&["--once"]);
        for exit in [Exit::OutOfCredits, Exit::KeyRejected, Exit::TooManyFailures] {
            let fake = Fake::answering(vec![Ok(exit)]);
            drop.put("first.csv", "email\nann@acme.com\n", 2 * MINUTE);
            drop.put("second.csv", "email\nbob@acme.com\n", MINUTE);
            assert_eq!(once(&config, &fake).await, exit);
            let inputs: Vec<PathBuf> = fake.runs().into_iter().map(|r| r.input).collect();
            assert_eq!(inputs, [drop.path("in/first.csv")], "{exit:?}");
            assert!(drop.path("in/second.csv").exists());
            assert!(!drop.path("in/processed").join("first.csv").exists());
        }
    }

    #[tokio::test]
    async fn only_ready_files_are_claimed() {
        let drop = Drop::new();
        let fake = Fake::default();
        for name in ["a.csv.partial", "b.csv.tmp", ".c.csv", "d.md", "e.csv~"] {
            drop.put(name, "email\nann@acme.com\n", MINUTE);
        }
        drop.put("fresh.csv", "email\nann@acme.com\n", Duration::ZERO);
        let config = drop.config(&["--once", "--settle", "30s"]);
        assert_eq!(once(&config, &fake).await, Exit::Ok);
        assert_eq!(fake.runs(), []);
        assert!(drop.path("in/fresh.csv").exists());

        // With --require-marker, age does not matter, the marker does; it goes with the file.
        let config = drop.config(&["--once", "--settle", "30s", "--require-marker"]);
        drop.put("marked.csv", "email\nbob@acme.com\n", Duration::ZERO);
        drop.put("marked.csv.ready", "", Duration::ZERO);
        assert_eq!(once(&config, &fake).await, Exit::Ok);
        let inputs: Vec<PathBuf> = fake.runs().into_iter().map(|r| r.input).collect();
        assert_eq!(inputs, [drop.path("in/marked.csv")]);
        assert!(!drop.path("in/marked.csv.ready").exists());
        assert!(drop.path("in/fresh.csv").exists());

        // A pattern picks other names.
        let config = drop.config(&["--once", "--pattern", "*.md"]);
        assert_eq!(once(&config, &fake).await, Exit::Ok);
        assert_eq!(fake.runs().last().unwrap().input, drop.path("in/d.md"));
        assert_eq!(fake.runs().len(), 2);
    }

    #[tokio::test]
    async fn the_hook_gets_the_files_and_counts_and_its_failure_stops_nothing() {
        let drop = Drop::new();
        let said = drop.path("hook.txt");
        let hook = format!(
            "printf '%s|%s|%s|%s|%s' \"$MAILSIFT_ROWS\" \"$MAILSIFT_VALID\" \
             \"$MAILSIFT_CREDITS_SPENT\" \"$(basename \"$MAILSIFT_OUTPUT\")\" \
             \"$(basename \"$MAILSIFT_INPUT\")\" >> '{}'; exit 3",
            said.display()
        );
        let config = drop.config(&["--once", "--on-complete", &hook]);
        let fake = Fake::default();
        drop.put("a.csv", "email\nann@acme.com\nbob@acme.com\n", 2 * MINUTE);
        drop.put("b.csv", "email\ncy@acme.com\n", MINUTE);
        assert_eq!(once(&config, &fake).await, Exit::Ok);
        assert_eq!(
            drop.read("hook.txt"),
            "3|3|0.5|a.validated.csv|a.csv2|2|0.5|b.validated.csv|b.csv"
        );
        assert!(drop.path("in/processed/b.csv").exists());
    }

    #[tokio::test(start_paused = true)]
    async fn watching_looks_again_every_interval_and_a_signal_ends_it_while_idle() {
        let drop = Drop::new();
        let config = drop.config(&["--interval", "30s"]);
        let (seen, mut runs) = mpsc::unbounded_channel();
        let fake = Arc::new(Fake {
            seen: Some(seen),
            ..Fake::default()
        });
        let (signal, signalled) = tokio::sync::oneshot::channel::<()>();
        drop.put("first.csv", "email\nann@acme.com\n", MINUTE);
        let started = tokio::time::Instant::now();
        let watching = tokio::spawn({
            let fake = fake.clone();
            async move {
                let shutdown = async {
                    let _ = signalled.await;
                };
                watch(&config, &*fake, shutdown).await
            }
        });

        assert_eq!(runs.recv().await, Some(drop.path("in/first.csv")));
        assert_eq!(started.elapsed(), Duration::ZERO);
        drop.put("second.csv", "email\nbob@acme.com\n", MINUTE);
        assert_eq!(runs.recv().await, Some(drop.path("in/second.csv")));
        assert_eq!(started.elapsed(), Duration::from_secs(30));
        tokio::time::sleep(Duration::from_secs(45)).await;
        signal.send(()).unwrap();
        assert_eq!(watching.await.unwrap().unwrap(), Exit::Ok);
        assert_eq!(fake.runs().len(), 2, "nothing new, nothing run");
        assert!(drop.path("in/processed/second.csv").exists());
    }
}
