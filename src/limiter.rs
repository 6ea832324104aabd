//! The one request-rate limiter shared by every API worker.
//!
//! Owns the pacing of outgoing requests: the rate in force (configured, or
//! followed from the server's `RateLimit-Limit` header), the whole-pool pause
//! that a `Retry-After` imposes, and the fair queue of workers waiting for a
//! slot. It is the only module that uses `governor`.
//!
//! It must not send requests, parse headers, decide on retries (see
//! `retry.rs`) or count anything but its own cells and the 429s it is told
//! of: callers hand it plain numbers and instants.
//!
//! A 429 means the server admits less than the rate in force, whatever its
//! headers say. The pool pauses for the `Retry-After`, and the limiter learns
//! a lower ceiling from what the server admitted before refusing (see
//! [`Limiter::rate_limited`]), so the pool comes back slower instead of
//! running into the same wall at every window; each minute without a 429
//! doubles the ceiling until it no longer binds.
//!
//! It reads and sleeps on tokio's clock only, so a paused tokio runtime
//! pauses it too.
//!
//! Guarantee, for a rate of R/min: in every closed 60 s window at most R
//! requests pass (`quota_for` has the arithmetic), and with enough
//! waiting workers at least 98% of R pass for R >= 50.

use std::fmt;
use std::num::{IntErrorKind, NonZeroU32, ParseIntError};
use std::str::FromStr;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use governor::clock::Clock;
use governor::middleware::NoOpMiddleware;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::client::Meta;

/// Highest rate accepted from the user or the server: 1M/min (~16.7k/s) is
/// far above any LeadMagic plan; a larger `RateLimit-Limit` is a broken header.
const MAX_PER_MINUTE: u32 = 1_000_000;

/// Largest burst the limiter ever allows; see `quota_for`.
const MAX_BURST: u32 = 5;

const MINUTE_NANOS: u64 = 60_000_000_000;

/// A request rate, always expressed per minute (the unit of the API's limit).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Rate {
    /// Requests per minute; the limiter clamps it to 1..=1,000,000, except
    /// [`Rate::UNLIMITED`].
    pub per_minute: u32,
}

impl Rate {
    /// `--rate unlimited`: no pacing of our own, for servers without a limit
    /// (benchmarks against the mock, a private deployment). A lower limit the
    /// server advertises still wins, and its pauses are still honoured.
    pub const UNLIMITED: Rate = Rate {
        per_minute: u32::MAX,
    };

    pub fn is_unlimited(self) -> bool {
        self == Rate::UNLIMITED
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_unlimited() {
            return f.write_str("unlimited");
        }
        write!(f, "{}/min", self.per_minute)
    }
}

/// Why a `--rate` value was refused; the message lists the accepted forms.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid rate {input:?}: {problem}; write N/min (or N/m), N/s (or N/sec), \
     or a bare N meaning per minute, between 1/min and {max}/min, or unlimited",
    max = MAX_PER_MINUTE
)]
pub struct ParseRateError {
    input: String,
    problem: &'static str,
}

impl FromStr for Rate {
    type Err = ParseRateError;

    /// Accepts `300/min`, `300/m`, `50/s`, `50/sec`, a bare `3000` (per
    /// minute) and `unlimited`, case-insensitive, with spaces around the parts
    /// tolerated.
    fn from_str(input: &str) -> Result<Rate, ParseRateError> {
        let fail = |problem| ParseRateError {
            input: input.to_owned(),
            problem,
        };
        let text = input.trim();
        if text.eq_ignore_ascii_case("unlimited") {
            return Ok(Rate::UNLIMITED);
        }
        let (count, unit) = text.split_once('/').unwrap_or((text, "min"));
        let (count, unit) = (count.trim(), unit.trim());
        let per_unit_to_per_minute: u32 = match unit.to_ascii_lowercase().as_str() {
            "min" | "m" | "minute" => 1,
            "s" | "sec" | "second" => 60,
            "" => return Err(fail("the unit after '/' is missing")),
            _ => return Err(fail("unknown unit")),
        };
        if count.is_empty() {
            return Err(fail("the number is missing"));
        }
        let count: u32 = count.parse().map_err(|error: ParseIntError| {
            fail(match error.kind() {
                IntErrorKind::PosOverflow => "the rate is too high",
                _ => "the count must be a whole number",
            })
        })?;
        if count == 0 {
            return Err(fail("the rate must be at least 1/min"));
        }
        count
            .checked_mul(per_unit_to_per_minute)
            .filter(|per_minute| *per_minute <= MAX_PER_MINUTE)
            .map(|per_minute| Rate { per_minute })
            .ok_or_else(|| fail("the rate is too high"))
    }
}

/// How the limiter reacts to the limit the server advertises.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FollowServer {
    /// The rate is the documented default: follow the server's advertised
    /// limit up or down, since the account may have a custom limit.
    Yes,
    /// The user gave `--rate`: follow the server only downwards, never above
    /// what the user asked for (they may share the key with other jobs).
    CapOnly,
}

/// governor's clock, read from tokio's: time since the limiter was built.
/// governor's own clocks read the OS clock and would ignore a paused tokio
/// runtime (`tokio::time::pause`, which the tests use).
#[derive(Clone, Copy)]
struct TokioClock {
    epoch: Instant,
}

impl Clock for TokioClock {
    type Instant = Duration;

    fn now(&self) -> Duration {
        Instant::now().saturating_duration_since(self.epoch)
    }
}

type Cells = RateLimiter<NotKeyed, InMemoryState, TokioClock, NoOpMiddleware<Duration>>;

/// The governor quota that keeps `rate` in every 60 s window.
///
/// governor's `Quota::per_minute(n)` would let n requests out at once and
/// another n over the following minute: up to 2n in one sliding window.
/// GCRA with emission interval T and burst b lets at most `b + floor(W/T)`
/// cells through in any closed window of length W. So pick a small b and
/// T = 60 s / (R - b), rounded *up* to the nanosecond: then
/// `b + 60 s / T <= R` in every 60 s window.
///
/// b = R/100 clamped to 1..=5 keeps the long-run throughput `(R - b)/R` at
/// or above 98% for every R >= 50 (below that a single cell is already more
/// than 2%). The burst lets the pool catch up after a short stall, nothing more.
/// - 3000/min: b = 5, T = 60 s / 2995 = 20.03 ms; at most 5 + 49 = 54 per
///   second, 2995 per minute in steady state (99.8%).
/// - 300/min: b = 3, T = 60 s / 297 = 202 ms; at most 3 + 4 = 7 per second,
///   297 per minute in steady state (99%).
///
/// Because T is computed from R - b rather than R - b + 1, a 60 s window
/// holds R only when it spans the burst and the last cell exactly; request
/// timing may jitter by up to T/2 before a server-side window could see R + 1.
/// At 1/min there is no room for a replenished cell inside 60 s, so T is 61 s.
fn quota_for(rate: Rate) -> Quota {
    let per_minute = rate.per_minute.clamp(1, MAX_PER_MINUTE);
    let burst = (per_minute / 100).clamp(1, MAX_BURST);
    let refills = per_minute - burst;
    let interval = if refills == 0 {
        Duration::from_secs(61)
    } else {
        Duration::from_nanos(MINUTE_NANOS.div_ceil(u64::from(refills)))
    };
    let burst = NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN);
    // `with_period` only refuses a zero interval, which the arithmetic above
    // cannot produce (60 s / 1M = 60 µs).
    Quota::with_period(interval)
        .unwrap_or_else(|| Quota::per_minute(NonZeroU32::MIN))
        .allow_burst(burst)
}

/// Cells for `quota` whose burst has just gone out: the next cell comes one interval later.
///
/// A full bucket at start would let the first burst out at once: that keeps the window bound
/// on our clock, but the first requests open new connections and reach the server later than
/// the ones after them, so the server's 60 s window could see R + 1 (a 429 under a hard limit,
/// measured by the utilisation bench), and a `RateLimit-Remaining: 0` pause whose refilled
/// burst then overshoots the 1 s bound. Starting drained costs the burst once (R - b in the
/// first minute instead of R, still >= 98%).
fn drained(quota: Quota, clock: TokioClock) -> Cells {
    let cells = RateLimiter::direct_with_clock(quota, clock);
    let _drained = cells.check_n(quota.burst_size());
    cells
}

const WHY_429: &str = "HTTP 429 Retry-After";

/// A minute without a 429 doubles a learned ceiling.
const RECOVERY: Duration = Duration::from_secs(60);

/// What the limiter knows right now; guarded by a std mutex because
/// `observe_limit` and `pause_until` are called from synchronous code.
struct State {
    /// The configured rate, or the one followed from the server's headers.
    rate: Rate,
    /// A lower ceiling learned from 429s, and since when it holds.
    learned: Option<(Rate, Instant)>,
    /// Cells at [`State::effective`].
    cells: Cells,
    paused_until: Option<Instant>,
    stretch: Stretch,
}

/// The requests sent since the last 429's pause ended (or ever), and how many of them the
/// server refused: what a 429 is learned from once its pause is over.
#[derive(Default)]
struct Stretch {
    /// When its first cell was handed out.
    since: Option<Instant>,
    sent: u64,
    refused: u64,
    /// A 429 of this stretch paused the pool: learn from it when the pause ends, when the
    /// answers in flight at the 429 are in.
    refusing: bool,
}

impl State {
    /// The rate in force: the lower of the followed rate and the learned ceiling.
    fn effective(&self) -> Rate {
        self.learned
            .map_or(self.rate, |(ceiling, _)| ceiling.min(self.rate))
    }

    /// Sets the followed rate and the learned ceiling (dropped unless it is below the rate),
    /// and re-paces the cells if the rate in force changed: a fresh GCRA state would grant a
    /// full burst on top of what the old one just let through, so it starts drained, as if a
    /// burst had just gone out, and the next cell comes one new interval later.
    fn set(&mut self, rate: Rate, learned: Option<(Rate, Instant)>, clock: TokioClock) {
        let before = self.effective();
        self.rate = rate;
        self.learned = learned.filter(|(ceiling, _)| *ceiling < rate);
        if self.effective() != before {
            self.cells = drained(quota_for(self.effective()), clock);
        }
    }
}

/// The pool-wide request pacer. `Send + Sync`; share it through an `Arc`.
pub struct Limiter {
    /// The user's `--rate`, or the default: the ceiling under `CapOnly`.
    configured: Rate,
    follow: FollowServer,
    clock: TokioClock,
    /// FIFO queue of acquirers: only the holder looks at the limiter and
    /// sleeps, so 256 waiting workers cost one timer, not 256 that all wake
    /// at every replenishment (tokio's mutex is fair).
    gate: tokio::sync::Mutex<()>,
    /// Wakes the gate holder when the rate changes, so a faster rate takes
    /// effect at once instead of after a sleep computed from the old one.
    rate_changed: Notify,
    state: Mutex<State>,
}

impl Limiter {
    /// A limiter at `rate` (clamped to 1..=1,000,000 per minute unless
    /// [`Rate::UNLIMITED`]), on tokio's clock.
    pub fn new(rate: Rate, follow_server: FollowServer) -> Limiter {
        let configured = if rate.is_unlimited() {
            rate
        } else {
            Rate {
                per_minute: rate.per_minute.clamp(1, MAX_PER_MINUTE),
            }
        };
        let clock = TokioClock {
            epoch: Instant::now(),
        };
        Limiter {
            configured,
            follow: follow_server,
            clock,
            gate: tokio::sync::Mutex::new(()),
            rate_changed: Notify::new(),
            state: Mutex::new(State {
                rate: configured,
                learned: None,
                cells: drained(quota_for(configured), clock),
                paused_until: None,
                stretch: Stretch::default(),
            }),
        }
    }

    /// Wait until one request may go out; the caller must then send it, and hand the instant
    /// returned to [`Limiter::rate_limited`] if the answer is a 429.
    ///
    /// Waiters are served in arrival order. Cancel-safe: dropping the future
    /// while it waits consumes nothing.
    pub async fn acquire(&self) -> Instant {
        let _turn = self.gate.lock().await;
        loop {
            let deadline = match self.take_cell() {
                Ok(granted) => return granted,
                Err(deadline) => deadline,
            };
            // Created after `take_cell` released the state lock; a rate change
            // in between is not lost, because `notify_one` leaves a permit.
            let rate_changed = self.rate_changed.notified();
            tokio::select! {
                biased;
                () = rate_changed => {}
                () = tokio::time::sleep_until(deadline) => {}
            }
            // Loop: the pause may have been extended, or the rate changed,
            // while we slept.
        }
    }

    /// Takes a cell (and says when), or says until when to sleep before trying again.
    fn take_cell(&self) -> Result<Instant, Instant> {
        let mut state = self.lock_state();
        let now = Instant::now();
        if let Some(until) = state.paused_until.filter(|until| *until > now) {
            return Err(until);
        }
        if state.stretch.refusing {
            self.learn_from_429s(&mut state);
        }
        if let Some((ceiling, since)) = state.learned {
            if now.duration_since(since) >= RECOVERY {
                let doubled = Rate {
                    per_minute: ceiling.per_minute.saturating_mul(2),
                };
                let rate = state.rate;
                state.set(rate, Some((doubled, now)), self.clock);
                if state.learned.is_none() {
                    tracing::info!("no 429 for a minute: back to {}", state.rate);
                }
            }
        }
        if !state.effective().is_unlimited() {
            if let Err(not_until) = state.cells.check() {
                return Err(self.clock.epoch + not_until.earliest_possible());
            }
        }
        state.stretch.since.get_or_insert(now);
        state.stretch.sent += 1;
        Ok(now)
    }

    /// At the end of a 429's pause: the stretch's requests that were not refused were
    /// admitted, over the time from the first of them to the end of the pause (when the
    /// server's window had room again). That rate becomes the ceiling, a tenth below the rate
    /// in force at least. Nothing is learned when nothing was admitted: the window was full
    /// before the stretch began (another job on the key), or the server refuses everything.
    fn learn_from_429s(&self, state: &mut State) {
        let stretch = std::mem::take(&mut state.stretch);
        let (Some(since), Some(end)) = (stretch.since, state.paused_until) else {
            return;
        };
        let admitted = stretch.sent.saturating_sub(stretch.refused);
        let before = state.effective();
        if admitted == 0 {
            return;
        }
        let span = end.duration_since(since).as_secs_f64().max(1e-3);
        let estimate = (admitted as f64 * 60.0 / span).clamp(1.0, f64::from(MAX_PER_MINUTE));
        let lower = if before.is_unlimited() {
            estimate
        } else {
            estimate.min(f64::from(before.per_minute) * 0.9)
        };
        let ceiling = Rate {
            per_minute: (lower as u32).max(1),
        };
        state.set(state.rate, Some((ceiling, end)), self.clock);
        let after = state.effective();
        if after != before {
            tracing::info!(
                "the server refused requests at {before}, and admitted {admitted} in {span:.1} s: \
                 sending at {after} from now"
            );
        }
    }

    /// A request granted at `granted` was refused with a 429: pause the whole pool for
    /// `retry_after`; when the pause ends, the pool sends no faster than the server admitted
    /// (see `learn_from_429s`). A 429 for a request sent before the last such pause ended
    /// is that overload's, reported late: it only extends the pause.
    pub fn rate_limited(&self, granted: Instant, retry_after: Duration) {
        let now = Instant::now();
        let mut state = self.lock_state();
        if state.stretch.since.is_some_and(|since| granted >= since) {
            state.stretch.refused += 1;
            // Without a pause there is no window to learn over.
            state.stretch.refusing |= !retry_after.is_zero();
        }
        Self::pause(state, now, now + retry_after, WHY_429);
    }

    /// Pause the whole pool until `until` (e.g. a 429's `Retry-After`).
    ///
    /// Extends a running pause, never shortens it: several workers report
    /// the same overload, and the latest end is the one the server asked for.
    pub fn pause_until(&self, until: Instant, why: &'static str) {
        Self::pause(self.lock_state(), Instant::now(), until, why);
    }

    /// [`Limiter::pause_until`] with the state already locked: whatever the caller changed
    /// under the same lock takes effect with the pause, no cell handed out in between.
    fn pause(mut state: MutexGuard<'_, State>, now: Instant, until: Instant, why: &'static str) {
        let previous = state.paused_until.filter(|previous| *previous > now);
        if until <= now || previous.is_some_and(|previous| previous >= until) {
            return;
        }
        state.paused_until = Some(until);
        drop(state);
        let secs = until.duration_since(now).as_secs_f64();
        // One line per pause, not per 429: the rest of the pool reports the
        // same overload while it is already paused.
        if previous.is_some() {
            tracing::debug!(
                reason = why,
                "extending the pause by the server: {secs:.1} s left"
            );
        } else {
            tracing::info!(reason = why, "pausing all requests for {secs:.1} s");
        }
    }

    /// Take the limit the server advertises (`RateLimit-Limit` /
    /// `X-RateLimit-Limit`, per minute) into account. Cheap when nothing
    /// changes, so call it on every response.
    pub fn observe_limit(&self, server_per_minute: u32) {
        if server_per_minute == 0 || server_per_minute > MAX_PER_MINUTE {
            tracing::debug!("ignoring an implausible server rate limit: {server_per_minute}/min");
            return;
        }
        let target = Rate {
            per_minute: match self.follow {
                FollowServer::Yes => server_per_minute,
                FollowServer::CapOnly => server_per_minute.min(self.configured.per_minute),
            },
        };
        let mut state = self.lock_state();
        if state.rate == target {
            return;
        }
        // A learned ceiling at or above the new rate no longer binds.
        let learned = state.learned;
        state.set(target, learned, self.clock);
        let effective = state.effective();
        drop(state);
        self.rate_changed.notify_one();
        tracing::info!("{}", limit_note(server_per_minute, target, effective));
    }

    /// Follows the rate headers of one response: the advertised limit ([`Limiter::observe_limit`]),
    /// a window used up (`RateLimit-Remaining: 0`: pause until it resets), a daily quota used
    /// up (pause, and look again in a while). The one place the server's rate headers act.
    pub fn follow(&self, meta: &Meta) {
        if let Some(limit) = meta.rate_limit {
            self.observe_limit(limit);
        }
        let now = Instant::now();
        if meta.rate_remaining == Some(0) {
            if let Some(reset) = meta.rate_reset.filter(|r| !r.is_zero()) {
                self.pause_until(now + reset, "RateLimit-Remaining: 0");
            }
        }
        if meta.daily_remaining == Some(0) {
            // The reset time of the daily quota is not documented: look again in a while.
            let wait = meta
                .rate_reset
                .unwrap_or(Duration::from_secs(60))
                .max(Duration::from_secs(60));
            self.pause_until(now + wait, "daily quota exhausted");
        }
    }

    /// The rate in force now: the followed rate, or a lower ceiling learned from 429s.
    pub fn rate(&self) -> Rate {
        self.lock_state().effective()
    }

    /// The end of the current pool-wide pause, if one is running.
    pub fn paused_until(&self) -> Option<Instant> {
        let now = Instant::now();
        self.lock_state().paused_until.filter(|until| *until > now)
    }

    /// The state stays consistent even if a holder panicked (every update is
    /// a plain assignment), so a poisoned lock is simply taken over.
    fn lock_state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl fmt::Debug for Limiter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Limiter")
            .field("rate", &self.rate())
            .field("configured", &self.configured)
            .field("follow", &self.follow)
            .field("paused_until", &self.paused_until())
            .finish_non_exhaustive()
    }
}

/// What a new advertised limit means for the rate in force: followed, capped by `--rate`, or
/// held below by what the server's 429s taught ([`Limiter::rate_limited`]).
fn limit_note(server_per_minute: u32, target: Rate, effective: Rate) -> String {
    if effective < target {
        format!(
            "the server allows {server_per_minute}/min; staying at {effective}, what it admitted \
             before its last 429 (doubled after each minute without one)"
        )
    } else if target.per_minute == server_per_minute {
        format!("following the server's limit: {target}")
    } else {
        format!("the server allows {server_per_minute}/min; keeping the configured {target}")
    }
}

#[cfg(test)]
mod tests {
    //! Timed tests run on tokio's paused clock: when every task is blocked the
    //! runtime jumps to the next timer, so minutes of traffic take milliseconds.

    use super::*;
    use std::future::Future;
    use std::sync::Arc;
    use tokio::time::sleep_until;

    const SEC: Duration = Duration::from_secs(1);
    const MINUTE: Duration = Duration::from_secs(60);
    const NANO: Duration = Duration::from_nanos(1);

    /// Acquisition instants, as offsets from the start of a run.
    type Times = Vec<Duration>;

    fn rate(per_minute: u32) -> Rate {
        Rate { per_minute }
    }

    fn limiter(per_minute: u32, follow: FollowServer) -> Arc<Limiter> {
        Arc::new(Limiter::new(rate(per_minute), follow))
    }

    /// Spawns `n` tasks that acquire in a loop for `until` from now; the future
    /// yields the acquisition times (since now) before `until`, sorted.
    /// Spawning also proves that `Limiter` is `Send + Sync` and `acquire` `Send`.
    fn run(limiter: &Arc<Limiter>, n: usize, until: Duration) -> impl Future<Output = Times> {
        let start = Instant::now();
        let mut workers = tokio::task::JoinSet::new();
        for _ in 0..n {
            let limiter = Arc::clone(limiter);
            workers.spawn(async move {
                let mut times = Vec::new();
                while start.elapsed() < until {
                    limiter.acquire().await;
                    times.push(start.elapsed());
                }
                times
            });
        }
        async move {
            let mut times = workers.join_all().await.concat(); // re-raises panics
            times.retain(|t| *t < until);
            times.sort();
            times
        }
    }

    /// Acquisitions in the closed window `[from, to]`; `times` is sorted.
    fn count_in(times: &[Duration], from: Duration, to: Duration) -> usize {
        times.partition_point(|t| *t <= to) - times.partition_point(|t| *t < from)
    }

    /// Most acquisitions in any closed window `[t, t + width]`.
    fn max_in_window(times: &[Duration], width: Duration) -> usize {
        let counts = times.iter().map(|t| count_in(times, *t, *t + width));
        counts.max().unwrap_or(0)
    }

    /// Fewest acquisitions in any window `[s, s + width)` inside `[from, to]`.
    /// The count only drops just after an acquisition leaves the window, so
    /// `s = from` and `s` one nanosecond after each acquisition cover them all.
    fn min_in_window(times: &[Duration], width: Duration, from: Duration, to: Duration) -> usize {
        let first = count_in(times, from, from + width - NANO);
        let inside = times.iter().filter(|t| **t >= from && **t + width <= to);
        let after = |t: &Duration| count_in(times, *t + NANO, *t + width);
        inside.map(after).fold(first, usize::min)
    }

    #[test]
    fn rate_parsing_table() {
        // (input, Ok(per minute) or Err(part of the stated problem))
        let table: [(&str, Result<u32, &str>); 20] = [
            ("300/min", Ok(300)),
            ("300/m", Ok(300)),
            ("50/s", Ok(3_000)),
            ("50/sec", Ok(3_000)),
            ("3000", Ok(3_000)),
            ("  120 / MIN ", Ok(120)),
            ("2/Second", Ok(120)),
            ("1000000", Ok(1_000_000)),
            ("1/min", Ok(1)),
            ("", Err("number is missing")),
            ("/min", Err("number is missing")),
            ("300/", Err("unit after '/' is missing")),
            ("300/h", Err("unknown unit")),
            ("fast", Err("whole number")),
            ("1.5/s", Err("whole number")),
            ("-5", Err("whole number")),
            ("0/min", Err("at least 1/min")),
            ("1000001", Err("too high")),
            ("20000/s", Err("too high")),
            ("99999999999", Err("too high")),
        ];
        for (text, expected) in table {
            match (text.parse::<Rate>(), expected) {
                (Ok(parsed), Ok(per_minute)) => assert_eq!(parsed, rate(per_minute), "{text:?}"),
                (Err(error), Err(problem)) => {
                    let message = error.to_string();
                    let forms = message.contains("N/min") && message.contains("N/s");
                    assert!(forms && message.contains(problem), "{text:?}: {message}");
                }
                (got, _) => panic!("{text:?}: got {got:?}, expected {expected:?}"),
            }
        }
        assert_eq!(rate(300).to_string(), "300/min");
        let shown = "50/s".parse::<Rate>().map(|r| r.to_string());
        assert_eq!(shown.as_deref(), Ok("3000/min"));
    }

    #[test]
    fn quota_table() {
        // (rate/min, burst, replenish interval in ns)
        let table = [
            (1, 1, 61_000_000_000),
            (2, 1, 60_000_000_000),
            (60, 1, 1_016_949_153),
            (300, 3, 202_020_203),
            (3_000, 5, 20_033_389),
            (1_000_000, 5, 60_001),
        ];
        for (per_minute, burst, nanos) in table {
            let quota = quota_for(rate(per_minute));
            let interval = quota.replenish_interval().as_nanos();
            let got = (quota.burst_size().get(), interval);
            assert_eq!(got, (burst, nanos), "{per_minute}/min");
        }
    }

    #[test]
    fn every_quota_keeps_the_minute_bound_and_98_percent() {
        for per_minute in (1..=20_000).chain([100_000, 999_999, 1_000_000]) {
            let quota = quota_for(rate(per_minute));
            let burst = u128::from(quota.burst_size().get());
            let interval = quota.replenish_interval().as_nanos();
            // GCRA bound over a closed 60 s window.
            let most = burst + u128::from(MINUTE_NANOS) / interval;
            assert!(most <= u128::from(per_minute), "{per_minute}/min: {most}");
            // Steady state: one cell per interval, i.e. R - b per minute,
            // give or take the nanosecond of rounding per interval.
            let refills = u128::from(per_minute) - burst;
            if refills > 0 {
                let slack = interval * refills - u128::from(MINUTE_NANOS);
                assert!(slack < refills, "{per_minute}/min: rounded by {slack} ns");
            }
            if per_minute >= 50 {
                let enough = refills * 100 >= u128::from(per_minute) * 98;
                assert!(enough, "{per_minute}/min: {refills}");
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn pacing_with_256_workers_over_three_minutes() {
        for per_minute in [3_000, 300] {
            let times = run(&limiter(per_minute, FollowServer::Yes), 256, SEC * 180).await;
            let r = per_minute as usize;
            // (most in any 60 s, fewest in any 60 s, most in any 1 s)
            let most = max_in_window(&times, MINUTE);
            let fewest = min_in_window(&times, MINUTE, Duration::ZERO, SEC * 180);
            let per_second = max_in_window(&times, SEC);
            let figures = (most, fewest, per_second);
            assert!(most <= r, "{per_minute}/min: {figures:?}");
            assert!(fewest * 100 >= r * 98, "{per_minute}/min: {figures:?}");
            assert!(per_second <= r / 60 + 5, "{per_minute}/min: {figures:?}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn waiters_are_served_in_arrival_order() {
        let limiter = limiter(600, FollowServer::Yes);
        let (granted, mut grants) = tokio::sync::mpsc::unbounded_channel();
        for id in 0..20 {
            let (limiter, granted) = (Arc::clone(&limiter), granted.clone());
            tokio::spawn(async move {
                limiter.acquire().await;
                assert!(granted.send(id).is_ok());
            });
        }
        drop(granted);
        let mut order = Vec::new();
        while let Some(id) = grants.recv().await {
            order.push(id);
        }
        assert_eq!(order, (0..20).collect::<Vec<_>>());
    }

    #[tokio::test(start_paused = true)]
    async fn pause_stops_everybody_and_only_ever_extends() {
        let limiter = limiter(3_000, FollowServer::Yes);
        let start = Instant::now();
        let workers = run(&limiter, 64, SEC * 20);
        assert_eq!(limiter.paused_until(), None);
        sleep_until(start + SEC * 10).await;
        limiter.pause_until(start + SEC * 15, "test: 429");
        assert_eq!(limiter.paused_until(), Some(start + SEC * 15));

        sleep_until(start + SEC * 12).await;
        // Shorter: ignored. In the past: ignored. Longer: extends.
        limiter.pause_until(start + SEC * 13, "test: shorter");
        limiter.pause_until(start + SEC, "test: past");
        assert_eq!(limiter.paused_until(), Some(start + SEC * 15));
        limiter.pause_until(start + SEC * 17, "test: longer");
        assert_eq!(limiter.paused_until(), Some(start + SEC * 17));

        sleep_until(start + SEC * 17).await;
        assert_eq!(limiter.paused_until(), None);
        let times = workers.await;
        let during = count_in(&times, SEC * 10 + NANO, SEC * 17 - NANO);
        assert_eq!(during, 0, "acquired while paused");
        let before = count_in(&times, SEC * 9, SEC * 10);
        assert!(before > 40, "{before} in the second before the pause");
        // Resumes at once, with no more than the burst at the restart instant.
        let restart = count_in(&times, SEC * 17, SEC * 17);
        assert!((1..=5).contains(&restart), "{restart} at the restart");
        let after = count_in(&times, SEC * 17, SEC * 20);
        assert!(after > 140, "{after} in the 3 s after the pause");
    }

    #[tokio::test(start_paused = true)]
    async fn a_429_lowers_the_rate_to_what_was_admitted_and_a_clean_minute_doubles_it() {
        let limiter = limiter(3_000, FollowServer::Yes);
        let start = Instant::now();
        // 60 cells from 20 ms to 1.2 s at 3000/min, then 429s for the last two, saying the
        // window has room 1.8 s later: 58 admitted from the first cell to the end of the
        // pause, 2.98 s: 1,168/min, learned once the pause is over.
        let mut granted = Vec::new();
        for _ in 0..60 {
            granted.push(limiter.acquire().await);
        }
        limiter.rate_limited(granted[59], SEC * 3 - start.elapsed());
        limiter.rate_limited(granted[58], SEC);
        assert_eq!(limiter.paused_until(), Some(start + SEC * 3));
        assert_eq!(limiter.rate(), rate(3_000));
        // The next cell comes one interval of the new rate after the pause.
        assert!(limiter.acquire().await > start + SEC * 3);
        let learned = limiter.rate().per_minute;
        assert_eq!(learned, 1_168);

        // A 429 for a request sent before that pause is the same overload: it only extends.
        sleep_until(start + SEC * 4).await;
        limiter.rate_limited(granted[0], SEC);
        assert_eq!(limiter.paused_until(), Some(start + SEC * 5));
        assert!(limiter.acquire().await >= start + SEC * 5);
        assert_eq!(limiter.rate().per_minute, learned);

        // The server's higher limit does not lift it: the 429 said otherwise.
        limiter.observe_limit(6_000);
        assert_eq!(limiter.rate().per_minute, learned);
        // Until the first minute after the pause is over.
        let times = run(&limiter, 64, SEC * 55).await;
        assert!(max_in_window(&times, MINUTE) <= learned as usize);
        assert!(
            times.len() >= learned as usize * 55 / 60 - 5,
            "{}",
            times.len()
        );

        // Each minute without a 429 doubles it, until the server's limit binds again.
        let mut rates = Vec::new();
        for minute in 1..=4 {
            sleep_until(start + SEC * 5 + MINUTE * minute).await;
            limiter.acquire().await;
            rates.push(limiter.rate().per_minute);
        }
        assert_eq!(rates, [2_336, 4_672, 6_000, 6_000]);
    }

    #[test]
    fn the_log_says_which_rate_is_in_force() {
        assert_eq!(
            limit_note(6_000, rate(6_000), rate(6_000)),
            "following the server's limit: 6000/min"
        );
        assert_eq!(
            limit_note(6_000, rate(3_000), rate(3_000)),
            "the server allows 6000/min; keeping the configured 3000/min"
        );
        // A learned ceiling binds under the new limit: the log must not claim to follow it.
        let note = limit_note(6_000, rate(6_000), rate(1_168));
        assert!(
            note.starts_with("the server allows 6000/min; staying at 1168/min"),
            "{note}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_429_before_anything_was_admitted_only_pauses() {
        // The server's window was full before the first request (another job on the key).
        let limiter = limiter(3_000, FollowServer::Yes);
        let first = limiter.acquire().await;
        limiter.rate_limited(first, SEC * 30);
        assert_eq!(limiter.paused_until(), Some(first + SEC * 30));
        assert_eq!(limiter.acquire().await, first + SEC * 30);
        assert_eq!(limiter.rate(), rate(3_000));
    }

    #[test]
    fn follow_server_moves_both_ways_and_cap_only_never_exceeds_the_configured_rate() {
        // (follow, configured, [(server limit observed, rate in force afterwards)])
        type Steps = &'static [(u32, u32)];
        let table: [(FollowServer, u32, Steps); 2] = [
            (
                FollowServer::Yes,
                3_000,
                &[
                    (1_000, 1_000),
                    (3_000, 3_000),
                    (6_000, 6_000),
                    (0, 6_000),
                    (2_000_000, 6_000),
                ],
            ),
            (
                FollowServer::CapOnly,
                300,
                &[
                    (3_000, 300),
                    (100, 100),
                    (1_000, 300),
                    (250, 250),
                    (0, 250),
                    (u32::MAX, 250),
                ],
            ),
        ];
        for (follow, configured, steps) in table {
            let limiter = Limiter::new(rate(configured), follow);
            for (server, expected) in steps {
                limiter.observe_limit(*server);
                assert_eq!(limiter.rate(), rate(*expected), "{follow:?} after {server}");
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_lower_server_limit_paces_the_next_requests_and_a_higher_one_speeds_them_up() {
        let limiter = limiter(3_000, FollowServer::Yes);
        let start = Instant::now();
        let workers = run(&limiter, 256, SEC * 150);
        sleep_until(start + SEC * 30).await;
        limiter.observe_limit(300);
        sleep_until(start + SEC * 90).await;
        limiter.observe_limit(3_000);
        let times = workers.await;

        // Lowered at once: the next request waits one new interval (~202 ms).
        let next = times.iter().find(|t| **t > SEC * 30);
        let waited = next.is_some_and(|t| *t >= SEC * 30 + Duration::from_millis(200));
        assert!(waited, "next after lowering: {next:?}");
        let slow = &times[count_in(&times, Duration::ZERO, SEC * 30)..];
        let slow = &slow[..count_in(slow, Duration::ZERO, SEC * 90)];
        assert!(max_in_window(slow, MINUTE) <= 300);
        assert!(slow.len() >= 294, "only {} at 300/min", slow.len());
        assert!(max_in_window(slow, SEC) <= 300 / 60 + 5);

        // Raised again: back to ~3000/min straight away.
        let fast = count_in(&times, SEC * 90, SEC * 150);
        assert!((2_940..=3_000).contains(&fast), "{fast} at 3000/min");
        assert!(max_in_window(&times, MINUTE) <= 3_000);
    }

    #[tokio::test(start_paused = true)]
    async fn cap_only_keeps_the_configured_rate_when_the_server_allows_more() {
        let limiter = limiter(300, FollowServer::CapOnly);
        let workers = run(&limiter, 64, SEC * 120);
        tokio::time::sleep(SEC * 10).await;
        limiter.observe_limit(3_000);
        assert!(max_in_window(&workers.await, MINUTE) <= 300);
        assert_eq!(limiter.rate(), rate(300));
    }

    #[test]
    fn out_of_range_rates_are_clamped_and_shown() {
        // u32::MAX itself is `Rate::UNLIMITED`, tested below.
        for (given, used) in [(0, 1), (1, 1), (u32::MAX - 1, MAX_PER_MINUTE)] {
            let limiter = Limiter::new(rate(given), FollowServer::Yes);
            assert_eq!(limiter.rate(), rate(used), "{given}");
            let shown = format!("{limiter:?}");
            assert!(shown.contains(&used.to_string()), "{shown}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn unlimited_paces_nothing_but_follows_a_lower_server_limit_and_pauses() {
        for text in ["unlimited", " Unlimited "] {
            assert_eq!(text.parse::<Rate>(), Ok(Rate::UNLIMITED), "{text:?}");
        }
        assert_eq!(Rate::UNLIMITED.to_string(), "unlimited");
        let limiter = limiter(u32::MAX, FollowServer::CapOnly);
        assert_eq!(limiter.rate(), Rate::UNLIMITED);
        let start = Instant::now();
        for _ in 0..10_000 {
            limiter.acquire().await;
        }
        assert_eq!(start.elapsed(), Duration::ZERO, "no pacing at all");
        // A pause still stops everybody.
        limiter.pause_until(start + SEC, "test");
        limiter.acquire().await;
        assert_eq!(start.elapsed(), SEC);
        // The server's limit still wins when it is lower.
        limiter.observe_limit(300);
        assert_eq!(limiter.rate(), rate(300));
        let times = run(&limiter, 16, MINUTE).await;
        assert!(times.len() <= 300, "{}", times.len());
    }
}
