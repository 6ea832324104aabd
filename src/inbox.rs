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
use crate::durable::{write_atomic, Lock};
use crate::exit::Exit;
use crate::input::Source;
use crate::store::{JobState, Store};
use crate::validate::{self, ValidateConfig};

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
/// the state directory holds an unfinished job of that very file. [`Validate`] in the program,
/// a fake in the unit tests.
pub(crate) trait Jobs {
    /// Runs one job to its end or to a resumable stop (`stop` is cancelled by a signal).
    fn run(
        &self,
        job: ValidateConfig,
        stop: CancellationToken,
    ) -> impl Future<Output = anyhow::Result<Exit>> + Send;

    /// Whether a job of `input`, with the content it has now, stopped before finishing
    /// `output`: the same file, which resumes into its own output.
    fn resumes(
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

    async fn resumes(&self, input: &Path, output: &Path) -> anyhow::Result<bool> {
        let (dir, input, output) = (
            self.state_dir.clone(),
            input.to_owned(),
            output.to_owned(),
        );
        // Opening the store may wait for its lock: not on a worker.
        tokio::task::spawn_blocking(move || unfinished(&dir, &input, &output)).await?
    }
}

/// Whether the job record of `input` -> `output` in `dir` is unfinished and was made from the
/// content `input` has now. Read-only: a state directory that does not exist is not created.
fn unfinished(dir: &Path, input: &Path, output: &Path) -> anyhow::Result<bool> {
    if !dir.join("db").exists() {
        return Ok(false);
    }
    // The keys validate gives a job: the absolute paths (the output's folder exists).
    let absolute = |path: &Path| -> anyhow::Result<String> {
        let dir = std::fs::canonicalize(path.parent().unwrap_or(Path::new(".")))
            .with_context(|| format!("reading {}", path.display()))?;
        Ok(dir
            .join(path.file_name().unwrap_or_default())
            .display()
            .to_string())
    };
    let id = Store::job_id(&absolute(input)?, &absolute(output)?);
    let Some(record) = Store::open(dir)?.job(&id)? else {
        return Ok(false);
    };
    Ok(record.state != JobState::Done && record.fingerprint == fingerprint(input)?)
}

/// The content of a file as validate's job record identifies it: its size, and hashes of its
/// first and last MiB and of 16 blocks spread between. The same function as
/// `validate::fingerprint` (private there), so that a record's fingerprint can be compared.
fn fingerprint(path: &Path) -> anyhow::Result<String> {
    use std::io::{Read, Seek, SeekFrom};
    const EDGE: u64 = 1 << 20;
    const BLOCK: u64 = 4096;
    let mut file =
        std::fs::File::open(path).with_context(|| format!("reading {}", path.display()))?;
    let len = file.metadata()?.len();
    let mut hasher = blake3::Hasher::new();
    hasher.update(&len.to_le_bytes());
    let mut offsets = vec![(0, EDGE.min(len))];
    if len > 2 * EDGE {
        for i in 1..=16 {
            offsets.push((len / 17 * i, BLOCK));
        }
        offsets.push((len - EDGE, EDGE));
    } else if len > EDGE {
        offsets.push((EDGE, len - EDGE));
    }
    let mut buf = Vec::new();
    for (at, size) in offsets {
        file.seek(SeekFrom::Start(at))?;
        buf.clear();
        (&mut file).take(size).read_to_end(&mut buf)?;
        hasher.update(&buf);
    }
    Ok(hasher.finalize().to_hex()[..32].to_owned())
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

    let Some(_lock) = lock(&config, &log, &cancel).await? else {
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
        for (path, ready) in scan(&config)? {
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
            if let Some(exit) = process(&config, jobs, &log, &cancel, &path).await? {
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
    job.input = Source::Path(path.to_owned());
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
/// never overwrites the results of the earlier one. The same file, stopped and resumed, keeps
/// writing its own output.
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
        if jobs.resumes(path, &output).await? {
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
        for (kind, path) in crate::output::SPLITS
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
