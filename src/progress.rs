//! What a person sees while a job runs: an indicatif bar on a terminal, one plain line every
//! ten seconds otherwise (also at `-vv`, whose request lines would tear a bar, and under
//! `--log-format json`), nothing with `--quiet`. The only user of `indicatif`.
//!
//! While the bar is drawn, every line [`crate::term`] prints goes above it, and the bar is
//! taken off the screen however the run ends: done, an error, a panic, or a second Ctrl-C.
//!
//! Progress only reads the counters; it never blocks a stage.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::report::Counters;
use crate::schema::{format_credits, STATUSES};

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
        } else if crate::term::bar_fits() {
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
    notes: mpsc::Receiver<String>,
    done: CancellationToken,
) {
    let bar = ProgressBar::with_draw_target(total, ProgressDrawTarget::stderr());
    draw(bar, counters, total.is_some(), notes, done).await
}

/// The bar on the screen: registered with [`crate::term`] so lines go above it, and cleared
/// when dropped, so a run that ends by an error or a panic (its task dropped with the runtime)
/// leaves no stale bar behind.
struct OnScreen(ProgressBar);

impl crate::term::Live for OnScreen {
    fn suspend(&self, print: &mut dyn FnMut()) {
        self.0.suspend(print)
    }
    fn clear(&self) {
        self.0.finish_and_clear()
    }
}

struct Shown(Arc<OnScreen>);

impl Shown {
    fn new(bar: ProgressBar) -> Shown {
        let shown = Arc::new(OnScreen(bar));
        crate::term::set_live(Some(shown.clone()));
        Shown(shown)
    }
}

impl Drop for Shown {
    fn drop(&mut self) {
        crate::term::set_live(None);
        crate::term::Live::clear(&*self.0);
    }
}

async fn draw(
    bar: ProgressBar,
    counters: Arc<Counters>,
    known_total: bool,
    mut notes: mpsc::Receiver<String>,
    done: CancellationToken,
) {
    let template = if known_total {
        "{spinner} [{elapsed_precise}] {wide_bar} {percent:>3}% ETA {eta}\n  {msg}"
    } else {
        "{spinner} [{elapsed_precise}] {bytes} read\n  {msg}"
    };
    if let Ok(style) = ProgressStyle::with_template(template) {
        bar.set_style(style.progress_chars("=> "));
    }
    // A resumed run starts part of the way in: the ETA must come from this run's pace, not
    // from a jump from 0 to the resume point in its first tick.
    let resumed_at = counters.input_done.load(Ordering::Relaxed);
    bar.set_position(resumed_at);
    bar.reset_eta();
    let shown = Shown::new(bar.clone());
    let started = Instant::now();
    loop {
        let read = counters.input_done.load(Ordering::Relaxed).max(resumed_at);
        bar.set_position(read);
        let rows = counters.rows();
        let rate = rows as f64 / started.elapsed().as_secs_f64().max(0.001);
        let line = format!("{rows} rows · {rate:.0} rows/s · {}", counts(&counters));
        bar.set_message(fit(&line, message_width()));
        tokio::select! {
            _ = done.cancelled() => break,
            Some(note) = notes.recv() => crate::term::line(&note),
            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
        }
    }
    drop(shown);
}

/// Room for the message line under the bar: the terminal's width (read on every tick, so a
/// resized window is followed) less the indent, and less two columns for the `^C` a terminal
/// echoes at the cursor. A last line that reaches the margin wraps when anything more is
/// written, the bar is then redrawn one line too low, and every redraw leaves a stale copy.
fn message_width() -> usize {
    let columns = terminal_size::terminal_size_of(std::io::stderr())
        .map_or(80, |(terminal_size::Width(w), _)| usize::from(w));
    columns.saturating_sub(5).max(10)
}

/// `text` cut to `width` characters, with an ellipsis where it was cut.
fn fit(text: &str, width: usize) -> String {
    if text.chars().count() <= width {
        return text.to_owned();
    }
    let mut cut: String = text.chars().take(width.saturating_sub(1)).collect();
    cut.push('…');
    cut
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
                crate::term::line(&note);
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
        crate::term::status(
            "Progress",
            format_args!(
                "{rows} rows written, {percent}{:.0} rows/s, {} in flight, {}",
                rows as f64 / secs,
                counters.in_flight.load(Ordering::Relaxed),
                counts(&counters)
            ),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every way the bar's task ends takes the bar off the screen and stops routing lines
    /// through it: cancelled (the run is over), dropped (an error return or a panic drops the
    /// task with the runtime), and `term::clear_live` (a second Ctrl-C exits the process).
    /// One test, since the live display is the process's.
    #[tokio::test]
    async fn the_bar_leaves_the_screen_however_the_run_ends() {
        async fn shown(bar: &ProgressBar, done: CancellationToken) -> tokio::task::JoinHandle<()> {
            let (_notes, notes_rx) = mpsc::channel(1);
            let counters = Arc::new(Counters::new());
            let task = tokio::spawn(draw(bar.clone(), counters, true, notes_rx, done));
            for _ in 0..10_000 {
                if crate::term::live().is_some() {
                    return task;
                }
                tokio::task::yield_now().await;
            }
            panic!("the bar never registered");
        }
        let gone = |bar: &ProgressBar, how: &str| {
            assert!(bar.is_finished(), "{how}: still drawn");
            assert!(
                crate::term::live().is_none(),
                "{how}: lines still go through it"
            );
        };

        let (bar, done) = (ProgressBar::hidden(), CancellationToken::new());
        let task = shown(&bar, done.clone()).await;
        done.cancel();
        task.await.unwrap();
        gone(&bar, "cancelled");

        let bar = ProgressBar::hidden();
        let task = shown(&bar, CancellationToken::new()).await;
        task.abort();
        assert!(task.await.unwrap_err().is_cancelled());
        gone(&bar, "dropped");

        let bar = ProgressBar::hidden();
        let task = shown(&bar, CancellationToken::new()).await;
        crate::term::clear_live();
        gone(&bar, "cleared before exit");
        task.abort();
    }

    #[test]
    fn a_message_is_cut_to_the_width_it_is_given() {
        for (text, width, expected) in [
            ("12 rows · 3 rows/s", 40, "12 rows · 3 rows/s"),
            ("12 rows · 3 rows/s", 18, "12 rows · 3 rows/s"),
            ("12 rows · 3 rows/s", 10, "12 rows ·…"),
            ("", 10, ""),
        ] {
            let fitted = fit(text, width);
            assert_eq!(fitted, expected, "{text:?} in {width}");
            assert!(fitted.chars().count() <= width);
        }
    }
}
