//! The pipeline of one `validate` run: every channel, every task and every token, in one
//! place. [`crate::validate`] prepares the stages and concludes from how they ended.
//!
//! ```text
//! reader thread ──rows──► planner ──planned rows (window)──► writer ──► <output>.partial
//!  (input, the   (1024)   (plan)                              (output)    + checkpoints
//!   lookup)
//!                            │                                   ▲        (journal)
//!                            └──jobs (N)──► N workers ──settled──┘
//!                                          (pool: limiter, ledger, store)
//! ```
//!
//! Every queue is bounded, so a slow API slows the reader down and memory stays flat. The
//! writer puts rows back in input order: a row waits in its window until every request it
//! waits for is settled. Shutdown: `stop` ends reading, planning and new requests; requests in
//! flight get the grace period, then `abort`; when the workers are gone the `settled` channel
//! closes, and the writer writes what it can, in order, and takes a last checkpoint.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::input::{self, Reader};
use crate::output::{self, WriteEnd, Writer};
use crate::plan::{self, PlanCounts, Planner};
use crate::pool::{self, Pool};
use crate::progress::{self, Display};
use crate::report::Counters;
use crate::stop::Stop;

/// The stages of a run, ready to start.
pub struct Stages {
    pub reader: Reader,
    pub planner: Planner,
    /// The data row the reader starts at (rows before it were written by an earlier run).
    pub first_row: u64,
    pub pool: Pool,
    pub workers: usize,
    pub writer: Writer,
    /// How many planned rows the writer holds while the row at its head waits.
    pub window: usize,
}

/// What the stages share with the person watching.
pub struct Services {
    pub stop: Arc<Stop>,
    pub counters: Arc<Counters>,
    pub display: Display,
    /// The input's length, for the progress bar.
    pub input_len: Option<u64>,
    /// How long requests in flight may finish after a signal.
    pub grace: Duration,
    /// A note to show above the bar once it is ready (the cost of the run, counted alongside).
    pub note: Option<Note>,
}

/// A line for the display that is not ready yet.
pub type Note = Pin<Box<dyn Future<Output = Option<String>> + Send>>;

/// How the stages ended.
pub struct Ended {
    /// `Ok(true)`: the input was read to its end.
    pub read: Result<bool, input::InputError>,
    pub planned: anyhow::Result<PlanCounts>,
    pub written: WriteEnd,
    pub writer: Writer,
    /// A shutdown was asked for.
    pub interrupted: bool,
}

/// Runs the stages until the pool is done (the work ran out, or it stopped), then lets the
/// others finish.
pub async fn run(
    stages: Stages,
    services: Services,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<Ended> {
    let Stages {
        reader,
        planner,
        first_row,
        pool,
        workers,
        writer,
        window,
    } = stages;
    let stop = services.stop;
    // Rows travel in batches: one channel hop (and one thread wake-up) per batch, not per row.
    let (rows_tx, rows_rx) = mpsc::channel(1024 / ROW_BATCH);
    let (planned_tx, planned_rx) = mpsc::channel(window / ROW_BATCH);
    let (jobs_tx, jobs_rx) = plan::job_queue(workers);
    // Room for a window's worth, so a writer busy with a checkpoint does not hold up workers.
    let (settled_tx, settled_rx) = mpsc::channel(window);
    let (notes_tx, notes_rx) = mpsc::channel(4);
    let progress_done = CancellationToken::new();

    // The reader runs on a blocking thread: file I/O and CSV parsing are synchronous.
    let reader = {
        let stop = stop.stop.clone();
        let lookup = planner.lookup();
        tokio::task::spawn_blocking(move || read_rows(reader, &lookup, rows_tx, stop))
    };
    if let Some(note) = services.note {
        let notes = notes_tx.clone();
        tokio::spawn(async move {
            if let Some(note) = note.await {
                let _ = notes.send(note).await;
            }
        });
    }
    let planner = tokio::spawn(plan::run(
        planner,
        first_row,
        rows_rx,
        planned_tx,
        jobs_tx,
        stop.stop.clone(),
    ));
    let mut pool = tokio::spawn(pool::run(Arc::new(pool), workers, jobs_rx, settled_tx));
    let writer = tokio::spawn(output::run(writer, planned_rx, settled_rx, window));
    let progress = tokio::spawn(progress::run(
        services.display,
        services.counters.clone(),
        services.input_len,
        notes_rx,
        progress_done.clone(),
    ));

    // Wait for the pool, reacting to a shutdown request meanwhile.
    let mut interrupted = false;
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut pool => break,
            _ = &mut shutdown, if !interrupted => {
                interrupted = true;
                let note = format!(
                    "mailsift: stopping: no new requests; waiting up to {} for {} in flight \
                     (press Ctrl-C again to quit at once)",
                    humantime::format_duration(services.grace),
                    services.counters.in_flight.load(Ordering::Relaxed)
                );
                // Said through the display, above the bar: a line printed beside a live bar is
                // drawn over by its next tick.
                if let Err(full) = notes_tx.try_send(note) {
                    if services.display != Display::Quiet {
                        crate::term::line(&full.into_inner());
                    }
                }
                stop.stop.cancel();
                let (abort, grace) = (stop.abort.clone(), services.grace);
                tokio::spawn(async move {
                    tokio::time::sleep(grace).await;
                    abort.cancel();
                });
            }
        }
    }
    let read = reader.await.context("the reader thread failed")?;
    let planned = planner.await.context("the planner failed")?;
    let (written, writer) = writer.await.context("the writer failed")??;
    progress_done.cancel();
    let _ = progress.await;
    Ok(Ended {
        read,
        planned,
        written,
        writer,
        interrupted,
    })
}

/// Rows per message from the reader to the planner.
const ROW_BATCH: usize = 64;

/// Reads rows into the channel, each looked up ([`plan::Lookup`]). `Ok(true)`: the input
/// ended; `Ok(false)`: stopped early.
///
/// From a regular file rows go in batches of [`ROW_BATCH`]; from a pipe one by one, so rows
/// trickling in on standard input are not held back waiting for a batch to fill.
fn read_rows(
    reader: Reader,
    lookup: &plan::Lookup,
    rows: mpsc::Sender<Vec<plan::Looked>>,
    stop: CancellationToken,
) -> Result<bool, input::InputError> {
    let size = if reader.source_len().is_some() {
        ROW_BATCH
    } else {
        1
    };
    let mut batch = Vec::with_capacity(size);
    let mut ended = true;
    for row in reader {
        batch.push(row?);
        if batch.len() >= size {
            let full = std::mem::replace(&mut batch, Vec::with_capacity(size));
            if stop.is_cancelled() || rows.blocking_send(lookup.rows(full)).is_err() {
                ended = false;
                break;
            }
        }
    }
    if ended
        && !batch.is_empty()
        && (stop.is_cancelled() || rows.blocking_send(lookup.rows(batch)).is_err())
    {
        ended = false;
    }
    Ok(ended)
}
