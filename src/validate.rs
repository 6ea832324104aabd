//! `mailsift validate`: the orchestrator. This one function creates every channel, spawns
//! every task and owns the cancellation tokens, so the whole topology reads in one place:
//!
//! ```text
//! reader thread ──rows──► planner ──planned rows──────────────► writer ──► <output>.partial
//!  (input.rs)     (1024)  (plan.rs)    (window)               (output.rs)   + checkpoints
//!                             │                                   ▲
//!                             └──jobs──► N workers ──verdicts─────┘ (Pending + wake)
//!                              (N)       (pool.rs, limiter, store)
//! ```
//!
//! Every queue is bounded, so a slow API slows the reader down and memory stays flat.
//! Shutdown: `stop` ends reading, planning and new requests; requests in flight get the grace
//! period, then `abort`; when the workers are gone the writer writes what it can, in order,
//! and takes a last checkpoint.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::sync::{mpsc, Notify};
use tokio_util::sync::CancellationToken;

use crate::api::{Api, ApiSettings};
use crate::exit::{usage, Exit};
use crate::input::{self, InputOptions, Layout, Reader, Resume};
use crate::limiter::{FollowServer, Limiter, Rate};
use crate::output::{self, Checkpoint, CheckpointEvery, RowFormat, Sink, WriteEnd, Writer};
use crate::plan::{self, Freshness, Planner};
use crate::pool::{Halt, Pool};
use crate::progress::{self, Display};
use crate::report::{Counters, Summary};
use crate::retry::RetryPolicy;
use crate::store::{JobRecord, JobState, Store, Watermark};

/// The starting rate when the user gave none: the lowest limit LeadMagic documents. The
/// server's advertised limit is followed from the first answer on.
pub const DEFAULT_RATE: Rate = Rate { per_minute: 300 };

/// Everything `validate` needs, validated.
#[derive(Debug, Clone)]
pub struct ValidateConfig {
    pub input: input::Source,
    /// `None`: standard output.
    pub output: Option<PathBuf>,
    pub input_options: InputOptions,
    pub company: bool,
    pub rate: Option<Rate>,
    pub concurrency: usize,
    pub retry: RetryPolicy,
    pub freshness: Freshness,
    pub state_dir: PathBuf,
    pub restart: bool,
    pub force: bool,
    pub report: Option<PathBuf>,
    pub grace: Duration,
    pub display: Display,
    pub api: ApiSettings,
    pub checkpoint: CheckpointEvery,
}

/// The default output path: `<stem>.validated.csv` beside the input.
pub fn default_output(input: &Path) -> PathBuf {
    let stem = input
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let stem = stem.strip_suffix(".validated").unwrap_or(&stem).to_owned();
    input.with_file_name(format!("{stem}.validated.csv"))
}

/// How this run starts.
enum Start {
    Fresh,
    Resume(Watermark),
}

/// Runs one job to its end or to a resumable stop.
pub async fn run(
    config: ValidateConfig,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<Exit> {
    let started = Instant::now();
    let say = |text: String| {
        if config.display != Display::Quiet {
            eprintln!("{text}");
        }
    };
    let input_name = match &config.input {
        input::Source::Path(p) => p.display().to_string(),
        input::Source::Stdin => "standard input".to_owned(),
    };
    if let (input::Source::Path(i), Some(o)) = (&config.input, &config.output) {
        if same_file(i, o) {
            return Err(usage(format!(
                "the output {} is the input file; choose another with -o",
                o.display()
            )));
        }
    }
    if let Some(output) = &config.output {
        if output.is_dir() {
            return Err(usage(format!(
                "the output {} is a directory; give -o a file name",
                output.display()
            )));
        }
    }

    let store = Arc::new(Store::open(&config.state_dir)?);
    let left_in_flight = store.take_in_flight()?;

    // The layout, read once from the start of the input.
    let source = config.input.clone();
    let opts = config.input_options.clone();
    let (layout, reader) =
        tokio::task::spawn_blocking(move || input::open(&source, &opts, None)).await??;

    // The job record exists only for a file written to a file: those are what can resume.
    let resumable = matches!(config.input, input::Source::Path(_)) && config.output.is_some();
    if !resumable && matches!(config.input, input::Source::Stdin) {
        say("mailsift: reading standard input: this run cannot resume if it is stopped (answers already paid for are still cached)".into());
    }
    let options = describe_options(&layout, &config);
    let mut job = None;
    let mut start = Start::Fresh;
    let mut run_id: u64 = rand::random();
    if let (true, input::Source::Path(input_path), Some(output_path)) =
        (resumable, &config.input, &config.output)
    {
        let input_key = absolute(input_path);
        let output_key = absolute(output_path);
        let id = Store::job_id(&input_key, &output_key);
        let fingerprint = fingerprint(input_path)?;
        let now = crate::clock::now();
        let fresh_record = |run: u64| JobRecord {
            input: input_key.clone(),
            output: output_key.clone(),
            fingerprint: fingerprint.clone(),
            options: options.clone(),
            run,
            state: JobState::Running,
            watermark: Watermark::default(),
            started_at: now,
            updated_at: now,
            api_calls: 0,
            credits_spent: 0.0,
        };
        let record = match store.job(&id)? {
            Some(old) if old.state == JobState::Done && !config.force && !config.restart => {
                if Path::new(&old.output).exists() {
                    say(format!(
                        "mailsift: this job is already done: {} (nothing to do; --force runs it again from the cache)",
                        output_path.display()
                    ));
                    return Ok(Exit::Ok);
                }
                fresh_record(run_id)
            }
            Some(old) if old.state != JobState::Done && !config.restart => {
                if old.fingerprint != fingerprint {
                    return Err(usage(format!(
                        "{} changed since the interrupted run of this job, so it cannot resume. \
                         Run with --restart to start over (answers already paid for come from the cache)",
                        input_path.display()
                    )));
                }
                if old.options != options {
                    return Err(usage(format!(
                        "the options that shape the output changed since the interrupted run \
                         (then: {}; now: {}). Run with the same options to resume, or --restart",
                        old.options, options
                    )));
                }
                run_id = old.run;
                let partial = Sink::partial_path(output_path);
                let partial_len = std::fs::metadata(&partial).map(|m| m.len()).unwrap_or(0);
                if old.watermark.rows > 0 && partial_len >= old.watermark.output_bytes {
                    start = Start::Resume(old.watermark);
                } else if old.watermark.rows > 0 {
                    say(format!(
                        "mailsift: {} is missing or shorter than the checkpoint says; starting the file over (answers already paid for come from the cache)",
                        partial.display()
                    ));
                }
                JobRecord {
                    state: JobState::Running,
                    updated_at: now,
                    ..old
                }
            }
            _ => fresh_record(run_id),
        };
        job = Some((id, record));
    }

    let company = config.company;
    let format = RowFormat::new(
        &layout,
        company,
        config.input_options.column_prefix.as_deref(),
    );
    let (reader, sink, watermark) = match &start {
        Start::Resume(mark) => {
            let source = config.input.clone();
            let opts = config.input_options.clone();
            let at = Resume {
                byte: mark.byte,
                line: mark.line,
            };
            let (_, reader) =
                tokio::task::spawn_blocking(move || input::open(&source, &opts, Some(at)))
                    .await??;
            let output = config
                .output
                .as_ref()
                .expect("a resumable job writes a file");
            (
                reader,
                open_partial(output, Some(mark.output_bytes))?,
                *mark,
            )
        }
        Start::Fresh => {
            let mut sink = match &config.output {
                Some(output) => open_partial(output, None)?,
                None => Sink::Stdout(std::io::BufWriter::with_capacity(
                    256 * 1024,
                    std::io::stdout(),
                )),
            };
            let mut mark = Watermark {
                line: 1,
                ..Watermark::default()
            };
            if let Some(header) = &layout.header {
                let line = format.header(header);
                write_header(&mut sink, &line)?;
                let next = header.resume_after();
                mark = Watermark {
                    byte: next.byte,
                    line: next.line,
                    rows: 0,
                    output_bytes: line.len() as u64,
                };
            }
            (reader, sink, mark)
        }
    };

    say(describe_start(
        &input_name,
        &config,
        &layout,
        &start,
        left_in_flight,
    ));

    // Only now, with the input understood, is a key needed.
    let api = Api::connect(&config.api, config.concurrency).await?;
    if api.sandbox.is_some() {
        say(format!(
            "mailsift: sandbox mode: answers come from {}",
            api.describe
        ));
    }

    let counters = Arc::new(Counters::new());
    let limiter = Arc::new(match config.rate {
        Some(rate) => Limiter::new(rate, FollowServer::CapOnly),
        None => Limiter::new(DEFAULT_RATE, FollowServer::Yes),
    });
    counters.rate.store(
        limiter.rate().per_minute as u64,
        std::sync::atomic::Ordering::Relaxed,
    );

    let stop = CancellationToken::new();
    let abort = CancellationToken::new();
    let pool_done = CancellationToken::new();
    let progress_done = CancellationToken::new();
    let wake = Arc::new(Notify::new());
    let window = (config.concurrency * 16).max(1024);
    // Rows travel in batches: one channel hop (and one thread wake-up) per batch, not per row.
    let (rows_tx, rows_rx) = mpsc::channel(1024 / ROW_BATCH);
    let (planned_tx, planned_rx) = mpsc::channel(window);
    let (jobs_tx, jobs_rx) = mpsc::channel(config.concurrency);

    let rows_before = watermark.rows;
    if let Some((id, record)) = &mut job {
        record.run = run_id;
        store.save_job(id, record)?;
    }
    let writer = Writer {
        sink,
        format,
        watermark,
        checkpoint: job.as_ref().map(|(id, record)| Checkpoint {
            store: store.clone(),
            job_id: *id,
            record: record.clone(),
        }),
        every: config.checkpoint,
        counters: counters.clone(),
    };

    // The reader runs on a blocking thread: file I/O and CSV parsing are synchronous.
    let reader_task = {
        let stop = stop.clone();
        let counters = counters.clone();
        tokio::task::spawn_blocking(move || read_rows(reader, rows_tx, stop, counters))
    };
    let planner = Planner::new(
        store.clone(),
        run_id,
        config.freshness,
        crate::clock::now(),
        config.concurrency + window,
    );
    let planner_task = tokio::spawn(plan::run(
        planner,
        rows_before,
        rows_rx,
        planned_tx,
        jobs_tx,
        stop.clone(),
    ));
    let pool = Arc::new(Pool::new(
        api.client.clone(),
        limiter.clone(),
        store.clone(),
        config.retry,
        counters.clone(),
        wake.clone(),
        stop.clone(),
        abort.clone(),
        run_id,
    ));
    let jobs_rx = Arc::new(tokio::sync::Mutex::new(jobs_rx));
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..config.concurrency {
        workers.spawn(pool.clone().work(jobs_rx.clone()));
    }
    let writer_task = tokio::spawn(output::run(
        writer,
        planned_rx,
        wake.clone(),
        pool_done.clone(),
        window,
    ));
    let progress_task = tokio::spawn(progress::run(
        config.display,
        counters.clone(),
        reader_len(&config.input),
        progress_done.clone(),
    ));

    // Wait for the workers, reacting to a shutdown request meanwhile.
    let mut interrupted = false;
    tokio::pin!(shutdown);
    let grace = config.grace;
    loop {
        tokio::select! {
            next = workers.join_next() => if next.is_none() { break },
            _ = &mut shutdown, if !interrupted => {
                interrupted = true;
                say(format!(
                    "mailsift: stopping: no new requests; waiting up to {} for {} in flight (press Ctrl-C again to quit at once)",
                    humantime::format_duration(grace),
                    counters.in_flight.load(std::sync::atomic::Ordering::Relaxed)
                ));
                stop.cancel();
                let abort = abort.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(grace).await;
                    abort.cancel();
                });
            }
        }
    }
    pool_done.cancel();
    // With the pool gone the planner cannot be waiting on it; make sure it and the reader end.
    stop_if_halted(&pool, &stop);
    let read_end = reader_task.await.context("the reader thread failed")?;
    let planned = planner_task.await.context("the planner failed")?;
    let (write_end, writer) = writer_task.await.context("the writer failed")??;
    progress_done.cancel();
    let _ = progress_task.await;

    let halt = pool.halt();
    let complete = !stop.is_cancelled()
        && write_end == WriteEnd::Complete
        && matches!(read_end, Ok(true))
        && planned.is_ok();
    let rows_total_before = rows_before;
    let (state, exit, outcome) = if let Some(halt) = &halt {
        match halt {
            Halt::KeyRejected(_) => (JobState::KeyRejected, Exit::KeyRejected, "key_rejected"),
            Halt::OutOfCredits(_) => (JobState::OutOfCredits, Exit::OutOfCredits, "out_of_credits"),
            Halt::TooManyFailures(_) => (
                JobState::TooManyFailures,
                Exit::TooManyFailures,
                "too_many_failures",
            ),
        }
    } else if write_end == WriteEnd::BrokenPipe {
        (JobState::Interrupted, Exit::Ok, "output_closed")
    } else if complete {
        (JobState::Done, Exit::Ok, "done")
    } else if interrupted {
        (JobState::Interrupted, Exit::Interrupted, "interrupted")
    } else {
        (JobState::Failed, Exit::Failed, "failed")
    };

    let mut writer = writer;
    let checkpoint = writer.checkpoint.take();
    let final_path = if state == JobState::Done {
        writer.finish()?
    } else {
        None
    };
    if let Some(mut cp) = checkpoint {
        cp.record.state = state;
        cp.record.updated_at = crate::clock::now();
        cp.store.save_job(&cp.job_id, &cp.record)?;
        cp.store.flush()?;
    } else {
        store.flush()?;
    }

    let summary = Summary::new(
        &counters,
        input_name.clone(),
        final_path
            .as_ref()
            .map(|p| p.display().to_string())
            .or_else(|| {
                config
                    .output
                    .as_ref()
                    .map(|o| Sink::partial_path(o).display().to_string())
            }),
        outcome,
        rows_total_before,
        started.elapsed(),
    );
    if let Some(path) = &config.report {
        let json = serde_json::to_vec_pretty(&summary)?;
        std::fs::write(path, json)
            .with_context(|| format!("writing the report {}", path.display()))?;
    }
    if config.display != Display::Quiet {
        eprint!("{}", summary.text());
    }

    // Errors that end the run are reported after the summary, so the last line says what to do.
    read_end?;
    planned?;
    match halt {
        Some(Halt::KeyRejected(e)) => {
            return Err(anyhow::Error::new(e).context("stopped at once; the checkpoint is saved"))
        }
        Some(Halt::OutOfCredits(e)) => {
            eprintln!("mailsift: {e}. Top up, then run the same command to resume.");
        }
        Some(Halt::TooManyFailures(why)) => {
            eprintln!(
                "mailsift: the API seems unavailable: {why}. Run the same command later to resume."
            );
        }
        None if interrupted => {
            say("mailsift: interrupted; run the same command to resume.".into());
        }
        None if exit == Exit::Failed => anyhow::bail!(
            "the run ended before every row was written (this is a bug in mailsift); \
             the checkpoint is saved: run the same command to resume"
        ),
        None => {}
    }
    Ok(exit)
}

fn stop_if_halted(pool: &Pool, stop: &CancellationToken) {
    if pool.halt().is_some() {
        stop.cancel();
    }
}

/// Rows per message from the reader to the planner.
const ROW_BATCH: usize = 64;

/// Reads rows into the channel. `Ok(true)`: the input ended; `Ok(false)`: stopped early.
///
/// From a regular file rows go in batches of [`ROW_BATCH`]; from a pipe one by one, so rows
/// trickling in on standard input are not held back waiting for a batch to fill.
fn read_rows(
    mut reader: Reader,
    rows: mpsc::Sender<Vec<input::Row>>,
    stop: CancellationToken,
    counters: Arc<Counters>,
) -> Result<bool, input::InputError> {
    let size = if reader.source_len().is_some() {
        ROW_BATCH
    } else {
        1
    };
    let mut batch = Vec::with_capacity(size);
    let mut ended = true;
    while let Some(row) = reader.next() {
        batch.push(row?);
        if batch.len() >= size {
            counters
                .bytes_read
                .store(reader.bytes_read(), std::sync::atomic::Ordering::Relaxed);
            let full = std::mem::replace(&mut batch, Vec::with_capacity(size));
            if stop.is_cancelled() || rows.blocking_send(full).is_err() {
                ended = false;
                break;
            }
        }
    }
    if ended && !batch.is_empty() && (stop.is_cancelled() || rows.blocking_send(batch).is_err()) {
        ended = false;
    }
    counters
        .bytes_read
        .store(reader.bytes_read(), std::sync::atomic::Ordering::Relaxed);
    Ok(ended)
}

fn reader_len(source: &input::Source) -> Option<u64> {
    match source {
        input::Source::Path(p) => std::fs::metadata(p)
            .ok()
            .filter(|m| m.is_file())
            .map(|m| m.len()),
        input::Source::Stdin => None,
    }
}

fn open_partial(output: &Path, resume_at: Option<u64>) -> anyhow::Result<Sink> {
    let partial = Sink::partial_path(output);
    let file = match resume_at {
        Some(len) => {
            let file = std::fs::OpenOptions::new()
                .write(true)
                .open(&partial)
                .with_context(|| format!("cannot reopen {} to resume", partial.display()))?;
            // Drop whatever was written after the last checkpoint: it is written again.
            file.set_len(len).with_context(|| format!("truncating {}", partial.display()))?;
            let mut file = file;
            use std::io::Seek;
            file.seek(std::io::SeekFrom::End(0))?;
            file
        }
        None => std::fs::File::create(&partial).map_err(|e| {
            anyhow::anyhow!(
                "cannot create {}: {e}. Check that the directory exists and is writable, or choose another output with -o",
                partial.display()
            )
        })?,
    };
    Ok(Sink::File {
        file: std::io::BufWriter::with_capacity(256 * 1024, file),
        partial,
        path: output.to_owned(),
    })
}

fn write_header(sink: &mut Sink, line: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    match sink {
        Sink::File { file, partial, .. } => file
            .write_all(line)
            .with_context(|| format!("writing {}", partial.display())),
        Sink::Stdout(out) => out.write_all(line).context("writing standard output"),
    }
}

/// The options that shape the output bytes; a resume with different ones is refused.
fn describe_options(layout: &Layout, config: &ValidateConfig) -> String {
    format!(
        "delimiter {:?}, header {}, email column {}, columns {}, prefix {:?}",
        layout.delimiter as char,
        if layout.has_header { "yes" } else { "no" },
        layout.email_column + 1,
        if config.company { "all" } else { "basic" },
        config.input_options.column_prefix.as_deref().unwrap_or(""),
    )
}

fn describe_start(
    input: &str,
    config: &ValidateConfig,
    layout: &Layout,
    start: &Start,
    left_in_flight: u64,
) -> String {
    let output = config
        .output
        .as_ref()
        .map_or("standard output".to_owned(), |p| p.display().to_string());
    let column = match &layout.email_column_name {
        Some(name) => format!("column {} ({name:?})", layout.email_column + 1),
        None => format!("column {}", layout.email_column + 1),
    };
    let delimiter = match layout.delimiter {
        b'\t' => "tab".to_owned(),
        d => format!("'{}'", d as char),
    };
    let mut text = format!(
        "mailsift: {input} -> {output}\n  addresses in {column}, found by {}; delimiter {delimiter}; {}",
        layout.how_found,
        if layout.has_header { "header row kept" } else { "no header row" },
    );
    if let Start::Resume(mark) = start {
        text.push_str(&format!(
            "\n  resuming after {} rows written (input line {})",
            mark.rows, mark.line
        ));
    }
    if left_in_flight > 0 {
        text.push_str(&format!(
            "\n  {left_in_flight} requests were in flight when the last run stopped: they are asked again and may have been charged twice"
        ));
    }
    text
}

fn absolute(path: &Path) -> String {
    let path = std::fs::canonicalize(path).unwrap_or_else(|_| {
        // The output does not exist yet: canonicalise its directory.
        let dir = path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let name = path.file_name().map(|n| n.to_owned()).unwrap_or_default();
        std::fs::canonicalize(dir)
            .unwrap_or_else(|_| dir.to_owned())
            .join(name)
    });
    path.display().to_string()
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (std::fs::canonicalize(a), std::fs::canonicalize(b)) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

/// Identifies the input's content without reading all of it: its size, and hashes of its first
/// and last MiB and of 16 blocks spread between. Appending, truncating, any edit that changes
/// the length, and edits near the start or the end change it.
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_output_sits_beside_the_input() {
        assert_eq!(
            default_output(Path::new("dir/list.csv")),
            Path::new("dir/list.validated.csv")
        );
        assert_eq!(
            default_output(Path::new("list.txt")),
            Path::new("list.validated.csv")
        );
        assert_eq!(
            default_output(Path::new("list.validated.csv")),
            Path::new("list.validated.csv")
        );
        assert_eq!(
            default_output(Path::new("noext")),
            Path::new("noext.validated.csv")
        );
    }

    #[test]
    fn fingerprint_sees_edits_anywhere() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("in.csv");
        let body: Vec<u8> = (0..3_000_000u32).map(|i| b'a' + (i % 26) as u8).collect();
        std::fs::write(&path, &body).unwrap();
        let base = fingerprint(&path).unwrap();
        assert_eq!(base, fingerprint(&path).unwrap());
        for at in [0, body.len() / 17 * 8 + 5, body.len() - 1] {
            let mut edited = body.clone();
            edited[at] ^= 1;
            std::fs::write(&path, &edited).unwrap();
            assert_ne!(fingerprint(&path).unwrap(), base, "edit at {at}");
        }
        std::fs::write(&path, &body[..body.len() - 1]).unwrap();
        assert_ne!(fingerprint(&path).unwrap(), base);
    }
}
