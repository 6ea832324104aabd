//! What a person sees while a job runs: an indicatif bar on a terminal, one plain line every
//! ten seconds otherwise, nothing with `--quiet`. The only user of `indicatif`.
//!
//! Progress only reads the counters; it never blocks a stage.

use std::io::IsTerminal;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::output::format_credits;
use crate::report::{Counters, STATUSES};

/// How progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Display {
    Bar,
    Lines,
    Quiet,
}

impl Display {
    pub fn choose(quiet: bool) -> Display {
        if quiet {
            Display::Quiet
        } else if std::io::stderr().is_terminal() {
            Display::Bar
        } else {
            Display::Lines
        }
    }
}

fn counts(counters: &Counters) -> String {
    let mut parts: Vec<String> = STATUSES
        .iter()
        .map(|s| (s, counters.status(s)))
        .filter(|(_, n)| *n > 0)
        .map(|(s, n)| format!("{s} {n}"))
        .collect();
    parts.push(format!(
        "credits {}",
        format_credits(counters.credits_spent())
    ));
    if let Some(balance) = counters.balance() {
        parts.push(format!("balance {}", format_credits(balance)));
    }
    parts.join(" · ")
}

/// Runs until `done` is cancelled. `total` is the input's size in bytes, when known; `notes`
/// are lines other stages want shown (printed above the bar, so it is not torn).
pub async fn run(
    display: Display,
    counters: Arc<Counters>,
    total: Option<u64>,
    notes: mpsc::Receiver<String>,
    done: CancellationToken,
) {
    match display {
        Display::Quiet => {
            drop(notes);
            done.cancelled().await
        }
        Display::Bar => bar(counters, total, notes, done).await,
        Display::Lines => lines(counters, total, notes, done).await,
    }
}

async fn bar(
    counters: Arc<Counters>,
    total: Option<u64>,
    mut notes: mpsc::Receiver<String>,
    done: CancellationToken,
) {
    let bar = match total {
        Some(total) => ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr()),
        None => ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr()),
    };
    let template = if total.is_some() {
        "{spinner} [{elapsed_precise}] {wide_bar} {percent:>3}% ETA {eta}\n  {msg}"
    } else {
        "{spinner} [{elapsed_precise}] {bytes} read\n  {msg}"
    };
    if let Ok(style) = ProgressStyle::with_template(template) {
        bar.set_style(style.progress_chars("=> "));
    }
    let started = Instant::now();
    loop {
        let read = counters.input_done.load(Ordering::Relaxed);
        bar.set_position(read);
        let rows = counters.rows();
        let rate = rows as f64 / started.elapsed().as_secs_f64().max(0.001);
        bar.set_message(format!(
            "{rows} rows · {rate:.0} rows/s · {}",
            counts(&counters)
        ));
        tokio::select! {
            _ = done.cancelled() => break,
            Some(note) = notes.recv() => bar.println(note),
            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
        }
    }
    bar.finish_and_clear();
}

async fn lines(
    counters: Arc<Counters>,
    total: Option<u64>,
    mut notes: mpsc::Receiver<String>,
    done: CancellationToken,
) {
    let started = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_secs(10));
    tick.tick().await;
    loop {
        tokio::select! {
            _ = done.cancelled() => return,
            Some(note) = notes.recv() => {
                eprintln!("{note}");
                continue;
            }
            _ = tick.tick() => {}
        }
        let rows = counters.rows();
        let secs = started.elapsed().as_secs_f64().max(0.001);
        let read = counters.input_done.load(Ordering::Relaxed);
        let percent = total
            .filter(|t| *t > 0)
            .map(|t| format!("{:.1}% read, ", read as f64 * 100.0 / t as f64))
            .unwrap_or_default();
        eprintln!(
            "mailsift: {rows} rows written, {percent}{:.0} rows/s, {} in flight, {}",
            rows as f64 / secs,
            counters.in_flight.load(Ordering::Relaxed),
            counts(&counters)
        );
    }
}
