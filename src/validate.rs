//! `mailsift validate`: one job in three phases, each a function of its own.
//!
//! 1. `prepare`: what the job is (fresh, resumed, or already done), where it resumes, what
//!    it may spend; the input opened at the checkpoint, the outputs locked and opened, the
//!    stages built.
//! 2. `pipeline::run`: the stages run (the topology is drawn there).
//! 3. `conclude`: from how the run ended, the job's state, the exit code and the last word;
//!    a complete run's files finished, the report written, and then the job recorded.

use std::collections::BTreeMap;
use std::future::Future;
use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::api::Api;
use crate::client::ApiError;
use crate::config::{ValidateConfig, DEFAULT_RATE};
use crate::estimate::{self, Estimate};
use crate::exit::{usage, Exit};
use crate::input::{self, Layout, Reader, Resume};
use crate::journal::Journal;
use crate::ledger::Ledger;
use crate::limiter::{FollowServer, Limiter};
use crate::output::{self, RowFormat, Sink, WriteEnd, Writer};
use crate::pipeline::{self, Ended, Services, Stages};
use crate::plan::{Freshness, Planner};
use crate::pool::Pool;
use crate::progress::Display;
use crate::report::{Counters, Summary};
use crate::schema;
use crate::stop::{Halt, Stop};
use crate::store::{self, JobRecord, JobState, Store, Tally, Watermark};

/// Runs one job to its end or to a resumable stop.
pub async fn run(
    config: ValidateConfig,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<Exit> {
    let started = Instant::now();
    check_paths(&config)?;
    // Opening may sync (a new store, a converted one) and wait for the lock: not on a worker.
    let state_dir = config.state_dir.clone();
    let store = Arc::new(tokio::task::spawn_blocking(move || Store::open(&state_dir)).await??);
    let Some(prepared) = prepare(config, store, started).await? else {
        return Ok(Exit::Ok);
    };
    let ended = pipeline::run(prepared.stages, prepared.services, shutdown).await?;
    conclude(prepared.job, ended).await
}

/// A job ready to run: its stages, and what [`conclude`] needs once they end.
struct Prepared {
    job: JobContext,
    stages: Stages,
    services: Services,
}

/// How this run starts, decided from the job record.
struct JobPlan {
    /// The job's id and record, for a file written to a file (what can resume).
    job: Option<([u8; 16], JobRecord)>,
    /// Where to pick up, if resuming.
    resume: Option<Watermark>,
    run: u64,
    freshness: Freshness,
}

/// What the job is, kept aside while the stages run.
struct JobContext {
    config: ValidateConfig,
    started: Instant,
    input_name: String,
    layout: Layout,
    store: Arc<Store>,
    counters: Arc<Counters>,
    ledger: Arc<Ledger>,
    limiter: Arc<Limiter>,
    stop: Arc<Stop>,
    balance_start: Option<f64>,
    /// Rows an earlier run wrote.
    rows_before: u64,
    /// Every file the job writes is this process's alone until it ends.
    _locks: Vec<crate::durable::Lock>,
    /// The client (and the sandbox server it talks to, if any) outlives the pool.
    _api: Api,
    /// Stopped and waited for when the job ends: it holds the store.
    _counting: Option<Counting>,
}

/// Says `text` on standard error unless `--quiet`.
fn say_unless(quiet: bool) -> impl Fn(String) {
    move |text: String| {
        if !quiet {
            crate::term::line(&text);
        }
    }
}

/// Decides how the job starts and makes its stages ready; `None` when there is nothing to do.
async fn prepare(
    config: ValidateConfig,
    store: Arc<Store>,
    started: Instant,
) -> anyhow::Result<Option<Prepared>> {
    let say = say_unless(config.display == Display::Quiet);
    let input_name = match &config.input {
        input::Location::Path(p) => p.display().to_string(),
        input::Location::Stdin => "standard input".to_owned(),
    };
    // Before anything of the job's is read or written: its files are this process's alone.
    let locks = lock_outputs(&config)?;

    // The layout, read once from the start of the input.
    let source = config.input.clone();
    let opts = config.input_options.clone();
    let (layout, reader) =
        tokio::task::spawn_blocking(move || input::open(&source, &opts, None)).await??;
    // Later opens of the input (resume, the cost note) read it the same way without detecting
    // the encoding again.
    let mut input_options = config.input_options.clone();
    match &layout.format {
        input::Format::Decoded { encoding, .. } => input_options.encoding = Some(encoding),
        input::Format::Utf8 { .. } => input_options.encoding = Some(encoding_rs::UTF_8),
        input::Format::Sheet(_) => {}
    }

    if matches!(config.input, input::Location::Stdin) {
        say(
            "mailsift: reading standard input: this run cannot resume if it is stopped \
             (answers already paid for stay cached)"
                .into(),
        );
    }
    let Some(plan) = plan_job(&config, &store, &layout, &say)? else {
        return Ok(None);
    };
    // Requests the job's last run sent and never saw the outcome of (it was killed): asked
    // again, and counted as spent at their worst case from now on. Said before it is folded
    // in, so no crash can lose the warning.
    let job_id = plan.job.as_ref().map(|(id, _)| *id);
    let left_in_flight = job_id
        .and_then(|id| store.tally(&id))
        .map_or(0, |t| t.in_flight);

    say(describe_start(
        &input_name,
        &config,
        &layout,
        plan.resume.as_ref(),
        left_in_flight,
    ));

    // Only now, with the input understood, is a key needed; and before any file is created.
    let api = Api::connect(&config.api, config.concurrency).await?;
    if api.sandbox.is_some() {
        say(format!(
            "mailsift: sandbox mode: answers come from {}",
            api.describe
        ));
    }
    // The balance, once, for free: a rejected key, a refused redirect or a base URL where
    // nothing answers stops here, before anything is read.
    let balance_start = match api.client.first_contact().await {
        Ok(reply) => Some(reply.body.credits),
        Err(
            e @ (ApiError::KeyRejected { .. }
            | ApiError::Refused { .. }
            | ApiError::Unreachable { .. }),
        ) => return Err(e.into()),
        Err(e) => {
            tracing::warn!("could not read the balance: {e}");
            None
        }
    };

    let mut format = RowFormat::new(
        &layout,
        config.company,
        config.input_options.column_prefix.as_deref(),
    );
    format.raw_fields = config.raw_fields;
    format.rules = config.rules;
    let (reader, sink, watermark) = open_outputs(
        &config,
        &layout,
        &format,
        &input_options,
        plan.resume.as_ref(),
        reader,
    )
    .await?;

    let counters = Arc::new(Counters::new());
    if let Some(balance) = balance_start {
        counters.set_balance(balance);
    }
    counters.set_max_credits(config.budget.max_credits);
    let limiter = Arc::new(match config.rate {
        Some(rate) => Limiter::new(rate, FollowServer::CapOnly),
        None => Limiter::new(DEFAULT_RATE, FollowServer::Yes),
    });
    let cost = estimate::cost_per_check(&store, config.budget.cost_per_check);
    // The job's spend so far: the record read through its tally (see `Store::job`), so what
    // a killed run paid and the worst case of what it left in flight are in.
    let before = plan.job.as_ref().map_or(Tally::default(), |(_, r)| Tally {
        spent: store::micros(r.credits_spent),
        requests: r.api_calls,
        ..Tally::default()
    });
    let ledger = Arc::new(Ledger::open(
        config.budget.max_credits,
        config.budget.min_balance,
        before,
        cost.0,
        job_id.map(|id| (store.clone(), id)),
    )?);
    counters
        .maybe_charged
        .fetch_add(left_in_flight, Ordering::Relaxed);

    let stop = Arc::new(Stop::new());
    if let (Some(min), Some(balance)) = (config.budget.min_balance, balance_start) {
        if balance < min {
            stop.halt(Halt::Budget(format!(
                "the balance ({}) is below --min-balance {}; top up, or lower --min-balance",
                schema::format_credits(balance),
                schema::format_credits(min)
            )));
        }
    }

    let rows_before = watermark.rows;
    counters.input_done.store(watermark.byte, Ordering::Relaxed);
    let journal = match plan.job {
        Some((id, record)) => Some(
            Journal::start(
                store.clone(),
                id,
                record,
                plan.run,
                counters.clone(),
                ledger.clone(),
            )
            .await?,
        ),
        None => None,
    };
    let writer = Writer {
        sink,
        format,
        watermark,
        journal,
        every: config.checkpoint,
        counters: counters.clone(),
    };

    // What the run can cost, counted from the input (spending nothing): before the first
    // request for a small file, alongside the run for a big one, so it never delays a resume.
    let mut counting = None;
    let mut note: Option<pipeline::Note> = None;
    if let (input::Location::Path(path), false) = (&config.input, stop.stop.is_cancelled()) {
        let small = std::fs::metadata(path).is_ok_and(|m| m.len() <= 8 << 20);
        let resume = plan.resume.map(|m| Resume {
            byte: m.byte,
            line: m.line,
        });
        let (source, store, rules) = (config.input.clone(), store.clone(), config.rules);
        let (freshness, run) = (plan.freshness, plan.run);
        let (thread, counted) = Counting::start(!small, move |ended| {
            let (_, reader) = input::open(&source, &input_options, resume)?;
            estimate::count(
                reader.take_while(|_| !ended.load(Ordering::Relaxed)),
                &store,
                &freshness,
                crate::clock::now(),
                Some(run),
                false,
                rules,
            )
        })?;
        counting = Some(thread);
        let counters = counters.clone();
        let priced = async move {
            let estimate = counted.await.ok()?.ok()?.priced(cost);
            counters.set_announced_max(estimate.max_cost);
            Some(cost_note(&estimate, balance_start))
        };
        if small {
            if let Some(text) = priced.await {
                say(text);
            }
        } else {
            note = Some(Box::pin(priced));
        }
    }

    let window = (config.concurrency * 16).max(1024);
    let planner = Planner::new(
        store.clone(),
        plan.run,
        plan.freshness,
        crate::clock::now(),
        config.concurrency + window,
    )
    .with_rules(config.rules);
    let pool = Pool {
        api: api.client.clone(),
        limiter: limiter.clone(),
        store: store.clone(),
        policy: config.retry,
        counters: counters.clone(),
        ledger: ledger.clone(),
        stop: stop.clone(),
        run: plan.run,
        recorded_cost: Default::default(),
    };
    let stages = Stages {
        reader,
        planner,
        first_row: rows_before,
        pool,
        workers: config.concurrency,
        writer,
        window,
    };
    let services = Services {
        stop: stop.clone(),
        counters: counters.clone(),
        display: config.display,
        // Converted text has no known length: the bar shows what was read.
        input_len: input_len(&config.input).filter(|_| !layout.format.converted()),
        grace: config.grace,
        note,
    };
    let job = JobContext {
        config,
        started,
        input_name,
        layout,
        store,
        counters,
        ledger,
        limiter,
        stop,
        balance_start,
        rows_before,
        _locks: locks,
        _api: api,
        _counting: counting,
    };
    Ok(Some(Prepared {
        job,
        stages,
        services,
    }))
}

/// Opens the outputs: cut back to the checkpoint with the input reopened there, when resuming;
/// else fresh, with the header (and the byte order mark) written. Returns the reader to go on
/// with, the outputs, and the watermark they start at.
async fn open_outputs(
    config: &ValidateConfig,
    layout: &Layout,
    format: &RowFormat,
    input_options: &input::InputOptions,
    resume: Option<&Watermark>,
    reader: Reader,
) -> anyhow::Result<(Reader, Sink, Watermark)> {
    Ok(match (resume, &config.output) {
        (Some(mark), Some(output)) => {
            let source = config.input.clone();
            let opts = input_options.clone();
            let at = Resume {
                byte: mark.byte,
                line: mark.line,
            };
            let (_, reader) =
                tokio::task::spawn_blocking(move || input::open(&source, &opts, Some(at)))
                    .await??;
            (
                reader,
                Sink::files(output, config.split, Some(mark))?,
                *mark,
            )
        }
        (_, output) => {
            let mut sink = match output {
                Some(output) => Sink::files(output, config.split, None)?,
                None => Sink::stdout(),
            };
            let mut mark = Watermark {
                line: 1,
                ..Watermark::default()
            };
            if layout.bom || layout.format.converted() {
                // The input's UTF-8 BOM stays, and text converted to UTF-8 (from another
                // encoding or a workbook) gets one: spreadsheets need it to read it as UTF-8.
                const BOM: &[u8] = b"\xEF\xBB\xBF";
                sink.header(BOM, &mut mark)?;
            }
            if let Some(header) = &layout.header {
                let next = header.resume_after();
                mark.byte = next.byte;
                mark.line = next.line;
                sink.header(&format.header(header), &mut mark)?;
            }
            (reader, sink, mark)
        }
    })
}

/// What is said last, after the summary, so that the last line says what to do.
enum Last {
    Nothing,
    /// Unless `--quiet`.
    Say(&'static str),
    /// What to do after a resumable stop: said even with `--quiet`, since the person or script
    /// that started the run must act on it; not said when embedded (the inbox logs it).
    Advise(String),
    /// The run failed: the error is the command's.
    Fail(anyhow::Error),
}

/// Finishes the job from how its run ended: one decision gives the job's state, the exit code,
/// the report's outcome and the last word.
async fn conclude(job: JobContext, ended: Ended) -> anyhow::Result<Exit> {
    let JobContext {
        config,
        started,
        input_name,
        layout,
        store,
        counters,
        ledger,
        limiter,
        stop,
        balance_start,
        rows_before,
        ..
    } = job;
    let Ended {
        read,
        planned,
        written,
        mut writer,
        interrupted,
    } = ended;
    let say = say_unless(config.display == Display::Quiet);
    const INTERRUPTED: &str = "mailsift: interrupted; run the same command to resume.";
    let complete = !stop.stop.is_cancelled()
        && written == WriteEnd::Complete
        && matches!(read, Ok(true))
        && planned.is_ok();
    let at_once = |e: ApiError| anyhow::Error::new(e).context("stopped at once; progress is saved");
    let (state, exit, outcome, last) = match stop.reason() {
        Some(Halt::KeyRejected(e)) => (
            JobState::KeyRejected,
            Exit::KeyRejected,
            "key_rejected",
            Last::Fail(at_once(e)),
        ),
        Some(Halt::Refused(e)) => (
            JobState::Failed,
            Exit::Failed,
            "redirect_refused",
            Last::Fail(at_once(e)),
        ),
        Some(Halt::OutOfCredits(e)) => (
            JobState::OutOfCredits,
            Exit::OutOfCredits,
            "out_of_credits",
            Last::Advise(format!(
                "mailsift: {e}. Top up, then run the same command to resume."
            )),
        ),
        Some(Halt::Budget(why)) => (
            JobState::BudgetReached,
            Exit::OutOfCredits,
            "budget_reached",
            Last::Advise(format!(
                "mailsift: stopped: {why}. Progress is saved; then run the same command to \
                 continue."
            )),
        ),
        Some(Halt::StoreFailed(why)) => (
            JobState::Failed,
            Exit::Failed,
            "failed",
            Last::Fail(anyhow::anyhow!("{why}")),
        ),
        Some(Halt::TooManyFailures(why)) => (
            JobState::TooManyFailures,
            Exit::TooManyFailures,
            "too_many_failures",
            Last::Advise(format!(
                "mailsift: the API seems unavailable: {why}. Run the same command later to \
                 resume."
            )),
        ),
        None if written == WriteEnd::BrokenPipe => (
            JobState::Interrupted,
            Exit::Ok,
            "output_closed",
            if interrupted {
                Last::Say(INTERRUPTED)
            } else {
                Last::Nothing
            },
        ),
        None if complete => (JobState::Done, Exit::Ok, "done", Last::Nothing),
        None if interrupted => (
            JobState::Interrupted,
            Exit::Interrupted,
            "interrupted",
            Last::Say(INTERRUPTED),
        ),
        None => (
            JobState::Failed,
            Exit::Failed,
            "failed",
            Last::Fail(anyhow::anyhow!(
                "the run ended before every row was written (this is a bug in mailsift); \
                 progress is saved: run the same command to resume"
            )),
        ),
    };

    let journal = writer.journal.take();
    let mut finished = if state == JobState::Done {
        writer.finish()?
    } else {
        None
    };
    // A workbook output was checkpointed as CSV: it becomes a workbook here, before its size
    // and hash are kept and the job is marked done (a kill here leaves it to be finished again).
    if let Some((path, files)) = finished.as_mut().filter(|(p, _)| crate::xlsx::is_xlsx(p)) {
        let cells = crate::xlsx::Conversion {
            delimiter: layout.delimiter,
            typed: matches!(layout.format, input::Format::Sheet(_)),
            annotations: schema::ANNOTATION_COLUMNS.len()
                + if config.company {
                    schema::COMPANY_COLUMNS.len()
                } else {
                    0
                },
        };
        let workbook = path.clone();
        tokio::task::spawn_blocking(move || crate::xlsx::convert(&workbook, cells)).await??;
        files[0] = crate::durable::FileSum::of(path)
            .with_context(|| format!("reading {}", path.display()))?;
    }
    // A row too long is the input's own fault, and fixing it changes the input: the job is
    // forgotten and its partial files removed, so the fixed file starts afresh (answers already
    // paid for come from the cache) rather than being refused as changed, and nothing half
    // written is left beside the output.
    let discard = matches!(read, Err(input::InputError::RowTooLong { .. }));
    if let (true, Some(output)) = (discard, &config.output) {
        for part in std::iter::once(output.clone()).chain(output::split_paths(output)) {
            let _ = std::fs::remove_file(output::partial_path(&part));
        }
    }
    let output_name = match (&finished, &config.output) {
        (Some((path, _)), _) => Some(path.display().to_string()),
        (None, Some(output)) if !discard => {
            Some(output::partial_path(output).display().to_string())
        }
        _ => None,
    };
    // The rate in force at the end, for the report.
    counters
        .rate
        .store(limiter.rate().per_minute as u64, Ordering::Relaxed);
    let summary = Summary::new(
        &counters,
        input_name,
        output_name,
        config
            .split
            .then(|| config.output.as_deref().map(output::split_paths))
            .flatten(),
        outcome,
        rows_before,
        (ledger.spent_this_run(), ledger.spent()),
        balance_start,
        started.elapsed(),
    );
    // The report comes before the job is marked done: a job found done has its report. Should
    // writing it fail, the job is marked done all the same (its files are complete) and keeps
    // the report, for the same command to write it.
    let report = String::from_utf8(serde_json::to_vec_pretty(&summary)?)?;
    let reported = match &config.report {
        Some(path) => write_report(path, &report),
        None => Ok(()),
    }
    .and_then(|()| match &config.report_html {
        Some(path) => crate::report_html::write_summary(&summary, path),
        None => Ok(()),
    });
    if state == JobState::Done {
        output::crash_point("report");
    }
    if let Some(journal) = journal {
        if discard {
            journal.forget()?;
        } else {
            journal.end(state, finished.map(|(_, files)| (files, report)))?;
        }
    }
    let flushing = store.clone();
    tokio::task::spawn_blocking(move || flushing.flush()).await??;
    if config.display != Display::Quiet {
        summary.print();
    }
    if let Err(e) = reported {
        return Err(if state == JobState::Done {
            e.context(
                "the output is complete, but its report could not be written; fix the cause \
                 and run the same command to write it (nothing is asked again)",
            )
        } else {
            e
        });
    }

    // Errors that end the run come after the summary, so the last line says what to do.
    read?;
    planned?;
    match last {
        Last::Nothing => {}
        Last::Say(text) => say(text.into()),
        Last::Advise(text) => {
            if config.announce {
                crate::term::line(&text);
            }
        }
        Last::Fail(e) => return Err(e),
    }
    Ok(exit)
}

/// Refuses outputs that cannot work before anything is opened (or paid for).
fn check_paths(config: &ValidateConfig) -> anyhow::Result<()> {
    if let Some(report) = &config.report {
        check_report(report, config)?;
    }
    let Some(output) = &config.output else {
        return Ok(());
    };
    if let input::Location::Path(input) = &config.input {
        if same_file(input, output) {
            return Err(usage(format!(
                "the output {} is the input file; choose another with -o",
                output.display()
            )));
        }
    }
    if output.is_dir() {
        return Err(usage(format!(
            "the output {} is a directory; give -o a file name",
            output.display()
        )));
    }
    // The output is written beside itself as `.partial` and renamed into place: over a device
    // (`-o /dev/null`) that rename would replace the device with a file.
    if crate::durable::is_special(output) {
        return Err(usage(format!(
            "the output {} is a device or a pipe, not a file; give -o a file name, or -o - to \
             write standard output (and redirect that where you like)",
            output.display()
        )));
    }
    Ok(())
}

/// `--report PATH` must be writable before the first request, not found broken after the
/// money is spent: its directory must exist and take a file (the temporary one the report
/// is written through).
fn check_report(report: &Path, config: &ValidateConfig) -> anyhow::Result<()> {
    if report.as_os_str() == "-" {
        return match config.output {
            None => Err(usage(
                "--report - and the output both go to standard output; give the output a file \
                 with -o PATH, or the report a file with --report PATH",
            )),
            Some(_) => Ok(()),
        };
    }
    let is_input = matches!(&config.input, input::Location::Path(i) if same_file(i, report));
    let is_output = config
        .output
        .as_ref()
        .is_some_and(|o| absolute(o) == absolute(report));
    if is_input || is_output {
        return Err(usage(format!(
            "--report {} is the {}; choose another path for the report",
            report.display(),
            if is_input { "input file" } else { "output" }
        )));
    }
    if report.is_dir() {
        return Err(usage(format!(
            "--report {} is a directory; give --report a file name",
            report.display()
        )));
    }
    // A device or a pipe (`--report /dev/null`) is written in place, not through a temporary
    // file beside it; it is not opened here (a pipe's reader would take that for the end).
    if crate::durable::is_special(report) {
        return Ok(());
    }
    let probe = crate::durable::temporary(report);
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&probe)
    {
        Ok(_) => {
            let _ = std::fs::remove_file(&probe);
            Ok(())
        }
        Err(e) => Err(usage(format!(
            "cannot write the report {}: {e}. Check that its directory exists and is writable, \
             or choose another --report",
            report.display()
        ))),
    }
}

/// Locks every file the job writes (the output with its `.partial`, the split files, the
/// report) through a lock file beside each, `.<name>.lock`, so that two jobs, even with
/// separate state directories, never write one file. The locks are released (and their files
/// removed) when dropped; a killed process's are freed by the OS.
fn lock_outputs(config: &ValidateConfig) -> anyhow::Result<Vec<crate::durable::Lock>> {
    let Some(output) = &config.output else {
        return Ok(Vec::new());
    };
    let mut paths = vec![output.clone()];
    if config.split {
        paths.extend(output::split_paths(output));
    }
    // A device is no file two jobs could clobber, and no lock file belongs beside it.
    if let Some(report) = config
        .report
        .as_ref()
        .filter(|r| r.as_os_str() != "-" && !crate::durable::is_special(r))
    {
        paths.push(report.clone());
    }
    let mut locks = Vec::with_capacity(paths.len());
    for path in paths {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let lock_path = path.with_file_name(format!(".{name}.lock"));
        let what = if config.report.as_ref() == Some(&path) {
            "--report"
        } else {
            "output with -o"
        };
        match crate::durable::Lock::try_take(&lock_path) {
            Ok(Ok(lock)) => locks.push(lock.removed_when_released()),
            Ok(Err(holder)) => {
                return Err(usage(format!(
                    "{} is being written by another job: {holder}. Wait for it to finish, or \
                     choose another {what}",
                    path.display(),
                )))
            }
            // Where no lock file can be made, the file itself cannot be either: said before
            // anything is spent (exit 2), naming the file the user knows.
            Err(e) => {
                let file = if what == "--report" {
                    path.clone()
                } else {
                    output::partial_path(&path)
                };
                return Err(usage(format!(
                    "cannot create {} (nor its lock file {}): {e}. Check that the directory \
                     exists and is writable, or choose another {what}",
                    file.display(),
                    lock_path.display()
                )));
            }
        }
    }
    Ok(locks)
}

/// Finds the job's record and decides how this run starts: fresh, resumed, or nothing to do
/// (`None`).
fn plan_job(
    config: &ValidateConfig,
    store: &Store,
    layout: &Layout,
    say: &dyn Fn(String),
) -> anyhow::Result<Option<JobPlan>> {
    let mut plan = JobPlan {
        job: None,
        resume: None,
        run: rand::random(),
        freshness: config.freshness,
    };
    let (input::Location::Path(input_path), Some(output_path)) = (&config.input, &config.output)
    else {
        return Ok(Some(plan));
    };
    let input_key = absolute(input_path);
    let output_key = absolute(output_path);
    let id = Store::job_id(&input_key, &output_key);
    let fingerprint = fingerprint(input_path)?;
    let options = describe_options(layout, config);
    let now = crate::clock::now();
    let mut fresh = JobRecord {
        input: input_key,
        output: output_key,
        fingerprint: fingerprint.clone(),
        options: options.clone(),
        run: plan.run,
        state: JobState::Running,
        watermark: Watermark::default(),
        started_at: now,
        updated_at: now,
        api_calls: 0,
        credits_spent: 0.0,
        counts: BTreeMap::new(),
        input_bytes: std::fs::metadata(input_path).map_or(0, |m| m.len()),
        files: Vec::new(),
        report: None,
    };
    let old = store.job(&id)?;
    // The same input run again (--force, --restart, a finished output gone): the same job, and
    // what it has paid stays paid. A changed input is a new job.
    if let Some(old) = old.as_ref().filter(|o| o.fingerprint == fingerprint) {
        fresh.credits_spent = old.credits_spent;
        fresh.api_calls = old.api_calls;
    }
    let record = match old {
        Some(old) if old.state == JobState::Done && config.retry_errors => {
            // Same run: its answers keep their source; only rows without one are asked.
            plan.run = old.run;
            plan.freshness = Freshness {
                max_age: Duration::MAX,
                max_age_unknown: Duration::MAX,
                max_age_catch_all: Duration::MAX,
                refresh: false,
            };
            let errors = old.counts.get("error").copied().unwrap_or(0);
            say(format!(
                "mailsift: asking again for the {errors} rows whose status was error"
            ));
            JobRecord {
                state: JobState::Running,
                updated_at: now,
                watermark: Watermark::default(),
                ..old
            }
        }
        None if config.retry_errors => {
            return Err(usage(format!(
            "there is no finished job for {} -> {} to retry errors of; run without --retry-errors",
            input_path.display(),
            output_path.display()
        )))
        }
        Some(old) if old.state != JobState::Done && config.retry_errors => {
            return Err(usage(format!(
                "the job for {} is not finished ({}); run the same command without \
                 --retry-errors to finish it first",
                input_path.display(),
                old.state.as_str()
            )))
        }
        // Done, and the input is the same file it was: nothing to do. (A new file dropped
        // under an old name is a new job.)
        Some(old)
            if old.state == JobState::Done
                && old.fingerprint == fingerprint
                && old.options == options
                && !config.force
                && !config.restart =>
        {
            if still_written(&old, output_path, config.split) {
                say(format!(
                    "mailsift: this job is already done: {} (nothing to do; --force runs it \
                     again from the cache, --retry-errors asks again for rows with errors)",
                    output_path.display()
                ));
                if let Some(path) = &config.report {
                    match &old.report {
                        Some(report) => write_report(path, report)?,
                        None => say(format!(
                            "mailsift: no report was kept for this job (an older mailsift \
                             finished it), so {} is not written; --force runs the job again \
                             from the cache and writes it",
                            path.display()
                        )),
                    }
                }
                return Ok(None);
            }
            say(format!(
                "mailsift: {} is not the file this job wrote (it was changed, replaced or \
                 removed since): writing it again (answers already paid for come from the \
                 cache)",
                output_path.display()
            ));
            fresh
        }
        Some(old) if old.state != JobState::Done && !config.restart => {
            if old.fingerprint != fingerprint {
                return Err(usage(format!(
                    "{} changed since the interrupted run of this job, so it cannot resume. Run \
                     with --restart to start over (answers already paid for come from the cache)",
                    input_path.display()
                )));
            }
            if old.options != options {
                return Err(usage(format!(
                    "the options that shape the output changed since the interrupted run (then: \
                     {}; now: {}). Run with the same options to resume, or --restart",
                    old.options, options
                )));
            }
            plan.run = old.run;
            let parts_ok =
                old.watermark.rows > 0 && parts_cover(output_path, config.split, &old.watermark);
            if parts_ok {
                plan.resume = Some(old.watermark);
            } else if old.watermark.rows > 0 {
                say(format!(
                    "mailsift: {} is missing or shorter than the checkpoint says; writing the \
                     file again from the start (answers already paid for come from the cache)",
                    output::partial_path(output_path).display()
                ));
            }
            let mut record = JobRecord {
                state: JobState::Running,
                updated_at: now,
                ..old
            };
            if plan.resume.is_none() {
                // Written again from the start: the totals start again too.
                record.counts.clear();
            }
            record
        }
        _ => fresh,
    };
    plan.job = Some((id, record));
    Ok(Some(plan))
}

/// Whether the partial files hold at least what the checkpoint says.
fn parts_cover(output: &Path, split: bool, mark: &Watermark) -> bool {
    let len = |p: &Path| std::fs::metadata(output::partial_path(p)).map_or(0, |m| m.len());
    len(output) >= mark.output_bytes
        && (!split
            || output::split_paths(output)
                .iter()
                .zip(mark.split_bytes)
                .all(|(p, want)| len(p) >= want))
}

/// Whether a done job's files still hold the bytes it wrote. A record of a version that kept
/// no sums has only the output's existence to go on.
fn still_written(job: &JobRecord, output: &Path, split: bool) -> bool {
    if job.files.is_empty() {
        return output.exists();
    }
    let mut paths = vec![output.to_owned()];
    if split {
        paths.extend(output::split_paths(output));
    }
    paths.len() == job.files.len() && job.files.iter().zip(&paths).all(|(f, p)| f.matches(p))
}

/// Writes the report: to standard output for `-`, else atomically to the file.
fn write_report(path: &Path, report: &str) -> anyhow::Result<()> {
    if path.as_os_str() == "-" {
        let mut out = std::io::stdout().lock();
        return writeln!(out, "{report}")
            .and_then(|()| out.flush())
            .context("writing the report to standard output");
    }
    crate::durable::write_atomic(path, report.as_bytes())
        .with_context(|| format!("writing the report {}", path.display()))
}

/// The cost note's count, on a thread of its own. It holds the store, so when the run ends it
/// is stopped and waited for (the next file of an inbox opens the store again).
struct Counting {
    ended: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Counting {
    /// Starts `count`, which stops early once the flag it is given is set. `background`:
    /// alongside the run it only informs, so it takes the CPU the run leaves (all of it
    /// against the real API's rate limit), not half of what a run from the cache needs.
    fn start(
        background: bool,
        count: impl FnOnce(&AtomicBool) -> anyhow::Result<Estimate> + Send + 'static,
    ) -> std::io::Result<(
        Counting,
        tokio::sync::oneshot::Receiver<anyhow::Result<Estimate>>,
    )> {
        let ended = Arc::new(AtomicBool::new(false));
        let (done, counted) = tokio::sync::oneshot::channel();
        let thread = {
            let ended = ended.clone();
            std::thread::Builder::new()
                .name("cost-note".into())
                .spawn(move || {
                    if background {
                        background_priority();
                    }
                    let _ = done.send(count(&ended));
                })?
        };
        let counting = Counting {
            ended,
            thread: Some(thread),
        };
        Ok((counting, counted))
    }
}

impl Drop for Counting {
    fn drop(&mut self) {
        self.ended.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Lets the calling thread run only when the CPU would otherwise be idle (Linux:
/// `SCHED_IDLE`, for this thread only).
fn background_priority() {
    #[cfg(target_os = "linux")]
    // SAFETY: `sched_setscheduler` with pid 0 changes the calling thread's policy only; the
    // `sched_param` it reads is a valid, initialised local that outlives the call. Its result
    // is ignored on purpose: at normal priority the count is merely less polite.
    unsafe {
        let param = libc::sched_param { sched_priority: 0 };
        libc::sched_setscheduler(0, libc::SCHED_IDLE, &param);
    }
}

/// The line about cost that appears once the input has been counted.
fn cost_note(e: &Estimate, balance: Option<f64>) -> String {
    let f = schema::format_credits;
    let mut text = format!(
        "mailsift: this run sends at most {} requests: at most {} credits ({} per check, from {})",
        e.requests,
        f(e.max_cost),
        f(e.cost_per_check),
        e.cost_source
    );
    if let Some(balance) = balance {
        text.push_str(&format!("; balance {}", f(balance)));
        if balance < e.max_cost {
            text.push_str(
                "\nmailsift: warning: the balance may not cover this run; if it runs out, the \
                 run stops with exit code 4 and the same command resumes after a top-up",
            );
        }
    }
    text
}

fn input_len(source: &input::Location) -> Option<u64> {
    match source {
        input::Location::Path(p) => std::fs::metadata(p)
            .ok()
            .filter(|m| m.is_file())
            .map(|m| m.len()),
        input::Location::Stdin => None,
    }
}

/// The options that shape the output bytes; a resume with different ones is refused.
fn describe_options(layout: &Layout, config: &ValidateConfig) -> String {
    format!(
        "delimiter {:?}, header {}, email column {}, columns {}, prefix {:?}, split {}{}",
        layout.delimiter as char,
        if layout.has_header { "yes" } else { "no" },
        layout.email_column + 1,
        if config.company { "all" } else { "basic" },
        config.input_options.column_prefix.as_deref().unwrap_or(""),
        if config.split { "yes" } else { "no" },
        if config.rules.allow_unknown_tld {
            ", unknown top-level domains sent"
        } else {
            ""
        },
    ) + if config.raw_fields {
        ", raw fields"
    } else {
        ""
    } + &layout.format.option()
}

fn describe_start(
    input: &str,
    config: &ValidateConfig,
    layout: &Layout,
    resume: Option<&Watermark>,
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
    text.push_str(&format!("\n  {}", layout.format.describe()));
    match &config.output {
        Some(out) if crate::xlsx::is_xlsx(out) => text.push_str("; the output is a workbook"),
        Some(_) if layout.format.converted() => {
            text.push_str("; the output is UTF-8 text with a byte order mark")
        }
        _ => {}
    }
    if let Some(mark) = resume {
        text.push_str(&format!(
            "\n  resuming after {} rows written (input line {})",
            mark.rows, mark.line
        ));
    }
    if left_in_flight > 0 {
        text.push_str(&format!(
            "\n  {left_in_flight} requests were in flight when the last run stopped: they are \
             asked again and may have been charged twice"
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
pub(crate) fn fingerprint(path: &Path) -> anyhow::Result<String> {
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

    #[test]
    fn the_cost_note_warns_when_the_balance_falls_short() {
        let e = Estimate {
            requests: 10,
            ..Estimate::default()
        }
        .priced((0.25, "--cost-per-check"));
        let rich = cost_note(&e, Some(100.0));
        assert!(
            rich.contains("at most 10 requests: at most 2.5 credits") && !rich.contains("warning"),
            "{rich}"
        );
        let poor = cost_note(&e, Some(1.0));
        assert!(
            poor.contains("warning: the balance may not cover this run"),
            "{poor}"
        );
    }
}
