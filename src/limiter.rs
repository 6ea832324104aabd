//! The one request-rate limiter shared by every API worker.
//!
//! Owns the pacing of outgoing requests: the rate in force (configured, or
//! followed from the server's `RateLimit-Limit` header), the whole-pool pause
//! that a `Retry-After` imposes, and the fair queue of workers waiting for a
//! slot. It is the only module that uses `governor`.
//!
//! It must not send requests, parse headers, decide on retries (see
//! `retry.rs`) or count anything but its own cells: callers hand it plain
//! numbers and instants. It never sleeps on a clock other than tokio's (or the
//! test clock), so a paused tokio runtime pauses it too.
//!
//! Guarantee, for a rate of R/min: in every closed 60 s window at most R
//! requests pass (`quota_for` has the arithmetic), and with enough
//! waiting workers at least 98% of R pass for R >= 50.

use std::fmt;
use std::future::Future;
use std::num::{IntErrorKind, NonZeroU32, ParseIntError};
use std::pin::Pin;
use std::str::FromStr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use governor::clock::Clock;
use governor::middleware::NoOpMiddleware;
use governor::nanos::Nanos;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};
use tokio::sync::Notify;
use tokio::time::Instant;

/// Highest rate accepted from the user or the server: 1M/min (~16.7k/s) is
/// far above any LeadMagic plan; a larger `RateLimit-Limit` is a broken header.
const MAX_PER_MINUTE: u32 = 1_000_000;

/// Largest burst the limiter ever allows; see `quota_for`.
const MAX_BURST: u32 = 5;

const MINUTE_NANOS: u64 = 60_000_000_000;

/// A request rate, always expressed per minute (the unit of the API's limit).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Rate {
    /// Requests per minute; the limiter clamps it to 1..=1,000,000.
    pub per_minute: u32,
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/min", self.per_minute)
    }
}

/// Why a `--rate` value was refused; the message lists the accepted forms.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid rate {input:?}: {problem}; write N/min (or N/m), N/s (or N/sec), \
     or a bare N meaning per minute, between 1/min and {max}/min",
    max = MAX_PER_MINUTE
)]
pub struct ParseRateError {
    input: String,
    problem: &'static str,
}

impl FromStr for Rate {
    type Err = ParseRateError;

    /// Accepts `300/min`, `300/m`, `50/s`, `50/sec` and a bare `3000` (per
    /// minute), case-insensitive, with spaces around the parts tolerated.
    fn from_str(input: &str) -> Result<Rate, ParseRateError> {
        let fail = |problem| ParseRateError {
            input: input.to_owned(),
            problem,
        };
        let text = input.trim();
        let (count, unit) = match text.split_once('/') {
            Some((count, unit)) => (count.trim(), unit.trim()),
            None => (text, "min"),
        };
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

/// Where the limiter reads time and sleeps. Production uses tokio's clock;
/// the unit tests use a virtual clock so that minutes of traffic run in
/// milliseconds without tokio's `test-util` feature.
trait Timer: Send + Sync {
    fn now(&self) -> Instant;
    fn sleep_until(&self, deadline: Instant) -> Pin<Box<dyn Future<Output = ()> + Send + '_>>;
}

/// tokio's clock: follows `tokio::time::pause()` when a test runtime uses it.
struct TokioTimer;

impl Timer for TokioTimer {
    fn now(&self) -> Instant {
        Instant::now()
    }

    fn sleep_until(&self, deadline: Instant) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        Box::pin(tokio::time::sleep_until(deadline))
    }
}

/// governor's view of [`Timer`]: nanoseconds since the limiter was built.
/// governor's own clocks read the OS clock directly and would ignore a paused
/// tokio runtime.
#[derive(Clone)]
struct GovernorClock {
    epoch: Instant,
    timer: Arc<dyn Timer>,
}

impl Clock for GovernorClock {
    type Instant = Nanos;

    fn now(&self) -> Nanos {
        let elapsed = self.timer.now().saturating_duration_since(self.epoch);
        Nanos::new(u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX))
    }
}

type Cells = RateLimiter<NotKeyed, InMemoryState, GovernorClock, NoOpMiddleware<Nanos>>;

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

/// What the limiter knows right now; guarded by a std mutex because
/// `observe_limit` and `pause_until` are called from synchronous code.
struct State {
    rate: Rate,
    cells: Cells,
    paused_until: Option<Instant>,
}

/// The pool-wide request pacer. `Send + Sync`; share it through an `Arc`.
pub struct Limiter {
    /// The user's `--rate`, or the default: the ceiling under `CapOnly`.
    configured: Rate,
    follow: FollowServer,
    timer: Arc<dyn Timer>,
    /// Zero point of the governor clock.
    epoch: Instant,
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
    /// A limiter at `rate` (clamped to 1..=1,000,000 per minute), on tokio's clock.
    pub fn new(rate: Rate, follow_server: FollowServer) -> Limiter {
        Limiter::with_timer(rate, follow_server, Arc::new(TokioTimer))
    }

    /// [`Limiter::new`] on another clock.
    fn with_timer(rate: Rate, follow: FollowServer, timer: Arc<dyn Timer>) -> Limiter {
        let configured = Rate {
            per_minute: rate.per_minute.clamp(1, MAX_PER_MINUTE),
        };
        let epoch = timer.now();
        let clock = GovernorClock {
            epoch,
            timer: Arc::clone(&timer),
        };
        Limiter {
            configured,
            follow,
            epoch,
            gate: tokio::sync::Mutex::new(()),
            rate_changed: Notify::new(),
            state: Mutex::new(State {
                rate: configured,
                // Full bucket at start: the first burst helps the first minute
                // and cannot break the window bound (see `quota_for`).
                cells: RateLimiter::direct_with_clock(quota_for(configured), clock),
                paused_until: None,
            }),
            timer,
        }
    }

    /// Wait until one request may go out; the caller must then send it.
    ///
    /// Waiters are served in arrival order. Cancel-safe: dropping the future
    /// while it waits consumes nothing.
    pub async fn acquire(&self) {
        let _turn = self.gate.lock().await;
        loop {
            let Some(deadline) = self.take_cell() else {
                return;
            };
            // Created after `take_cell` released the state lock; a rate change
            // in between is not lost, because `notify_one` leaves a permit.
            let rate_changed = self.rate_changed.notified();
            tokio::select! {
                biased;
                () = rate_changed => {}
                () = self.timer.sleep_until(deadline) => {}
            }
            // Loop: the pause may have been extended, or the rate changed,
            // while we slept.
        }
    }

    /// Takes a cell, or says until when to sleep before trying again.
    fn take_cell(&self) -> Option<Instant> {
        let state = self.lock_state();
        let now = self.timer.now();
        if let Some(until) = state.paused_until.filter(|until| *until > now) {
            return Some(until);
        }
        match state.cells.check() {
            Ok(()) => None,
            Err(not_until) => Some(self.epoch + Duration::from(not_until.earliest_possible())),
        }
    }

    /// Pause the whole pool until `until` (e.g. a 429's `Retry-After`).
    ///
    /// Extends a running pause, never shortens it: several workers report
    /// the same overload, and the latest end is the one the server asked for.
    pub fn pause_until(&self, until: Instant, why: &'static str) {
        let now = self.timer.now();
        if until <= now {
            return;
        }
        let mut state = self.lock_state();
        let previous = state.paused_until.filter(|previous| *previous > now);
        if previous.is_some_and(|previous| previous >= until) {
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
        // A fresh GCRA state would grant a full burst on top of what the old
        // one just let through; drain it so the switch looks like a burst
        // has just gone out, and the next cell comes one new interval later.
        let quota = quota_for(target);
        let cells = RateLimiter::direct_with_clock(quota, self.governor_clock());
        let _drained = cells.check_n(quota.burst_size());
        state.cells = cells;
        state.rate = target;
        drop(state);
        self.rate_changed.notify_one();
        if target.per_minute == server_per_minute {
            tracing::info!("following the server's limit: {target}");
        } else {
            tracing::info!(
                "the server allows {server_per_minute}/min; keeping the configured {target}"
            );
        }
    }

    /// The rate in force now.
    pub fn rate(&self) -> Rate {
        self.lock_state().rate
    }

    /// The end of the current pool-wide pause, if one is running.
    pub fn paused_until(&self) -> Option<Instant> {
        let now = self.timer.now();
        self.lock_state().paused_until.filter(|until| *until > now)
    }

    fn governor_clock(&self) -> GovernorClock {
        GovernorClock {
            epoch: self.epoch,
            timer: Arc::clone(&self.timer),
        }
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

#[cfg(test)]
mod tests {
    //! The pacing tests run on a virtual clock with a tiny single-threaded
    //! executor that jumps time to the next sleeper whenever every task is
    //! blocked: tokio's `start_paused` auto-advance, which this crate cannot
    //! use because tokio's `test-util` feature is not enabled.

    use super::*;
    use std::cell::RefCell;
    use std::collections::{BTreeMap, VecDeque};
    use std::rc::Rc;
    use std::task::{Context, Poll, Wake, Waker};

    const SEC: Duration = Duration::from_secs(1);
    const MINUTE: Duration = Duration::from_secs(60);

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    fn ms(m: u64) -> Duration {
        Duration::from_millis(m)
    }

    fn rate(per_minute: u32) -> Rate {
        Rate { per_minute }
    }

    // ---- virtual time ---------------------------------------------------

    struct SimTimer {
        epoch: Instant,
        inner: Mutex<SimInner>,
    }

    #[derive(Default)]
    struct SimInner {
        now: Duration,
        sleepers: BTreeMap<(Duration, u64), Waker>,
        next_id: u64,
    }

    impl SimTimer {
        fn new() -> Arc<SimTimer> {
            Arc::new(SimTimer {
                epoch: Instant::now(),
                inner: Mutex::default(),
            })
        }

        fn inner(&self) -> MutexGuard<'_, SimInner> {
            self.inner.lock().unwrap_or_else(PoisonError::into_inner)
        }

        fn elapsed(&self) -> Duration {
            self.inner().now
        }

        fn at(&self, offset: Duration) -> Instant {
            self.epoch + offset
        }

        /// Jumps to the earliest sleeper's deadline and wakes everyone due;
        /// false when nobody sleeps.
        fn advance(&self) -> bool {
            let due = {
                let mut inner = self.inner();
                let Some((&(deadline, _), _)) = inner.sleepers.first_key_value() else {
                    return false;
                };
                let now = inner.now.max(deadline);
                inner.now = now;
                let later = inner.sleepers.split_off(&(now, u64::MAX));
                std::mem::replace(&mut inner.sleepers, later)
            };
            due.into_values().for_each(Waker::wake);
            true
        }
    }

    impl Timer for SimTimer {
        fn now(&self) -> Instant {
            self.at(self.elapsed())
        }

        fn sleep_until(&self, deadline: Instant) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
            Box::pin(SimSleep {
                timer: self,
                deadline: deadline.saturating_duration_since(self.epoch),
                key: None,
            })
        }
    }

    struct SimSleep<'a> {
        timer: &'a SimTimer,
        deadline: Duration,
        key: Option<(Duration, u64)>,
    }

    impl Future for SimSleep<'_> {
        type Output = ();

        fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
            let this = self.get_mut();
            let mut inner = this.timer.inner();
            if inner.now >= this.deadline {
                if let Some(key) = this.key.take() {
                    inner.sleepers.remove(&key);
                }
                return Poll::Ready(());
            }
            let key = match this.key {
                Some(key) => key,
                None => {
                    inner.next_id += 1;
                    let key = (this.deadline, inner.next_id);
                    this.key = Some(key);
                    key
                }
            };
            inner.sleepers.insert(key, cx.waker().clone());
            Poll::Pending
        }
    }

    impl Drop for SimSleep<'_> {
        fn drop(&mut self) {
            if let Some(key) = self.key.take() {
                self.timer.inner().sleepers.remove(&key);
            }
        }
    }

    type Task = Pin<Box<dyn Future<Output = ()>>>;

    struct TaskWaker {
        id: usize,
        ready: Arc<Mutex<VecDeque<usize>>>,
    }

    impl Wake for TaskWaker {
        fn wake(self: Arc<Self>) {
            self.ready
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push_back(self.id);
        }
    }

    /// Runs every task to completion, advancing virtual time only when no
    /// task can make progress. Deterministic: one thread, FIFO wake order.
    fn run(timer: &SimTimer, tasks: Vec<Task>) {
        let ready = Arc::new(Mutex::new((0..tasks.len()).collect::<VecDeque<_>>()));
        let wakers: Vec<Waker> = (0..tasks.len())
            .map(|id| {
                let ready = Arc::clone(&ready);
                Waker::from(Arc::new(TaskWaker { id, ready }))
            })
            .collect();
        let mut tasks: Vec<Option<Task>> = tasks.into_iter().map(Some).collect();
        let mut live = tasks.len();
        while live > 0 {
            let next = ready
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .pop_front();
            match next {
                Some(id) => {
                    let Some(task) = tasks[id].as_mut() else {
                        continue; // a stale wake-up of a finished task
                    };
                    let mut cx = Context::from_waker(&wakers[id]);
                    if task.as_mut().poll(&mut cx).is_ready() {
                        tasks[id] = None;
                        live -= 1;
                    }
                }
                None => {
                    assert!(timer.advance(), "deadlock: {live} tasks wait, none sleeps");
                    assert!(timer.elapsed() < secs(3_600), "runaway simulation");
                }
            }
        }
    }

    /// `workers` tasks acquire in a loop until `until`; returns the instants
    /// (since start) of the acquisitions before `until`, in order.
    fn run_workers(
        timer: &Arc<SimTimer>,
        limiter: &Arc<Limiter>,
        workers: usize,
        until: Duration,
        mut extra: Vec<Task>,
    ) -> Vec<Duration> {
        let log = Rc::new(RefCell::new(Vec::new()));
        let mut tasks: Vec<Task> = (0..workers)
            .map(|_| {
                let (timer, limiter, log) = (timer.clone(), limiter.clone(), log.clone());
                Box::pin(async move {
                    while timer.elapsed() < until {
                        limiter.acquire().await;
                        log.borrow_mut().push(timer.elapsed());
                    }
                }) as Task
            })
            .collect();
        tasks.append(&mut extra);
        run(timer, tasks);
        let mut times = log.take();
        times.retain(|t| *t < until);
        times
    }

    /// Most acquisitions in any closed window `[t, t + width]`.
    fn max_in_window(times: &[Duration], width: Duration) -> usize {
        let mut end = 0;
        let mut most = 0;
        for (start, t) in times.iter().enumerate() {
            while end < times.len() && times[end] <= *t + width {
                end += 1;
            }
            most = most.max(end - start);
        }
        most
    }

    /// Fewest acquisitions in any window `[s, s + width)` with
    /// `from <= s` and `s + width <= to`. The count only drops just after an
    /// acquisition leaves the window, so checking `s = from` and `s` right
    /// after each acquisition covers every window.
    fn min_in_window(times: &[Duration], width: Duration, from: Duration, to: Duration) -> usize {
        // `[lo, lo + width)` for the first window, `(lo, lo + width]` for the
        // one starting just after an acquisition at `lo`.
        let count = |lo: Duration, starts_at_lo: bool| {
            times
                .iter()
                .filter(|t| {
                    if starts_at_lo {
                        **t >= lo && **t < lo + width
                    } else {
                        **t > lo && **t <= lo + width
                    }
                })
                .count()
        };
        let mut fewest = count(from, true);
        for t in times.iter().filter(|t| **t >= from && **t + width <= to) {
            fewest = fewest.min(count(*t, false));
        }
        fewest
    }

    fn count_in(times: &[Duration], from: Duration, to: Duration) -> usize {
        times.iter().filter(|t| **t >= from && **t <= to).count()
    }

    fn sleep_to(timer: &SimTimer, at: Duration) -> impl Future<Output = ()> + '_ {
        timer.sleep_until(timer.at(at))
    }

    // ---- rate parsing ---------------------------------------------------

    #[test]
    fn rate_parses_the_documented_forms() {
        let table = [
            ("300/min", 300),
            ("300/m", 300),
            ("50/s", 3_000),
            ("50/sec", 3_000),
            ("3000", 3_000),
            ("  120 / MIN ", 120),
            ("2/Second", 120),
            ("1000000", 1_000_000),
            ("1/min", 1),
        ];
        for (text, per_minute) in table {
            assert_eq!(text.parse::<Rate>(), Ok(rate(per_minute)), "{text:?}");
        }
    }

    #[test]
    fn rate_errors_name_the_problem_and_the_accepted_forms() {
        let table = [
            ("", "number is missing"),
            ("/min", "number is missing"),
            ("300/", "unit after '/' is missing"),
            ("300/h", "unknown unit"),
            ("fast", "whole number"),
            ("1.5/s", "whole number"),
            ("-5", "whole number"),
            ("0/min", "at least 1/min"),
            ("1000001", "too high"),
            ("20000/s", "too high"),
            ("99999999999", "too high"),
        ];
        for (text, problem) in table {
            let message = match text.parse::<Rate>() {
                Ok(parsed) => panic!("{text:?} parsed as {parsed}"),
                Err(error) => error.to_string(),
            };
            assert!(message.contains(problem), "{text:?}: {message}");
            assert!(
                message.contains("N/min") && message.contains("N/s"),
                "{message}"
            );
        }
    }

    #[test]
    fn rate_displays_per_minute() {
        assert_eq!(rate(300).to_string(), "300/min");
        assert_eq!(
            "50/s".parse::<Rate>().map(|r| r.to_string()),
            Ok("3000/min".into())
        );
    }

    // ---- quota arithmetic ---------------------------------------------------

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
            assert_eq!(quota.burst_size().get(), burst, "{per_minute}/min");
            assert_eq!(
                quota.replenish_interval().as_nanos(),
                nanos,
                "{per_minute}/min"
            );
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
            assert!(
                most <= u128::from(per_minute),
                "{per_minute}/min lets {most} through"
            );
            // Steady state: one cell per interval, i.e. R - b per minute,
            // give or take the nanosecond of rounding per interval.
            let refills = u128::from(per_minute) - burst;
            if refills > 0 {
                let slack = interval * refills - u128::from(MINUTE_NANOS);
                assert!(
                    slack < refills,
                    "{per_minute}/min: interval rounded by too much"
                );
            }
            if per_minute >= 50 {
                assert!(
                    refills * 100 >= u128::from(per_minute) * 98,
                    "{per_minute}/min: {refills}"
                );
            }
        }
    }

    // ---- pacing -------------------------------------------------------------

    fn check_pacing(per_minute: u32) {
        let timer = SimTimer::new();
        let limiter = Arc::new(Limiter::with_timer(
            rate(per_minute),
            FollowServer::Yes,
            timer.clone(),
        ));
        let horizon = secs(180);
        let times = run_workers(&timer, &limiter, 256, horizon, Vec::new());

        let most = max_in_window(&times, MINUTE);
        assert!(
            most <= per_minute as usize,
            "{per_minute}/min: {most} in one minute"
        );
        let fewest = min_in_window(&times, MINUTE, Duration::ZERO, horizon);
        assert!(
            fewest * 100 >= per_minute as usize * 98,
            "{per_minute}/min: only {fewest} in some minute"
        );
        let per_second = max_in_window(&times, SEC);
        let allowed = per_minute as usize / 60 + 5;
        assert!(
            per_second <= allowed,
            "{per_minute}/min: {per_second} in one second"
        );
    }

    #[test]
    fn pacing_at_3000_per_minute_with_256_workers() {
        check_pacing(3_000);
    }

    #[test]
    fn pacing_at_300_per_minute_with_256_workers() {
        check_pacing(300);
    }

    #[test]
    fn waiters_are_served_in_arrival_order() {
        let timer = SimTimer::new();
        let limiter = Arc::new(Limiter::with_timer(
            rate(600),
            FollowServer::Yes,
            timer.clone(),
        ));
        let order = Rc::new(RefCell::new(Vec::new()));
        let tasks = (0..20)
            .map(|id| {
                let (limiter, order) = (limiter.clone(), order.clone());
                Box::pin(async move {
                    limiter.acquire().await;
                    order.borrow_mut().push(id);
                }) as Task
            })
            .collect();
        run(&timer, tasks);
        assert_eq!(*order.borrow(), (0..20).collect::<Vec<_>>());
    }

    // ---- pause ------------------------------------------------------------

    #[test]
    fn pause_stops_everybody_and_only_ever_extends() {
        let timer = SimTimer::new();
        let limiter = Arc::new(Limiter::with_timer(
            rate(3_000),
            FollowServer::Yes,
            timer.clone(),
        ));
        let control = {
            let (timer, limiter) = (timer.clone(), limiter.clone());
            Box::pin(async move {
                assert_eq!(limiter.paused_until(), None);
                sleep_to(&timer, secs(10)).await;
                limiter.pause_until(timer.at(secs(15)), "test: 429");
                assert_eq!(limiter.paused_until(), Some(timer.at(secs(15))));

                sleep_to(&timer, secs(12)).await;
                // Shorter: ignored. In the past: ignored.
                limiter.pause_until(timer.at(secs(13)), "test: shorter");
                limiter.pause_until(timer.at(secs(1)), "test: past");
                assert_eq!(limiter.paused_until(), Some(timer.at(secs(15))));
                // Longer: extends.
                limiter.pause_until(timer.at(secs(17)), "test: longer");
                assert_eq!(limiter.paused_until(), Some(timer.at(secs(17))));

                sleep_to(&timer, secs(17)).await;
                assert_eq!(limiter.paused_until(), None);
            }) as Task
        };
        let times = run_workers(&timer, &limiter, 64, secs(20), vec![control]);

        let during = count_in(
            &times,
            secs(10) + Duration::from_nanos(1),
            secs(17) - Duration::from_nanos(1),
        );
        assert_eq!(during, 0, "acquired while paused");
        assert!(
            count_in(&times, secs(9), secs(10)) > 40,
            "ran before the pause"
        );
        // Resumes at once, with no more than the burst at the restart instant.
        let restart = count_in(&times, secs(17), secs(17));
        assert!(
            (1..=5).contains(&restart),
            "{restart} at the restart instant"
        );
        assert!(
            count_in(&times, secs(17), secs(20)) > 140,
            "ran after the pause"
        );
    }

    // ---- following the server -------------------------------------------------

    #[test]
    fn follow_server_moves_both_ways_and_cap_only_never_exceeds_the_configured_rate() {
        // (follow, configured, server values observed in turn, rate after each)
        // (server limit observed, rate in force afterwards)
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
            let limiter = Limiter::with_timer(rate(configured), follow, SimTimer::new());
            for (server, expected) in steps {
                limiter.observe_limit(*server);
                assert_eq!(limiter.rate(), rate(*expected), "{follow:?} after {server}");
            }
        }
    }

    #[test]
    fn a_lower_server_limit_paces_the_next_requests_and_a_higher_one_speeds_them_up() {
        let timer = SimTimer::new();
        let limiter = Arc::new(Limiter::with_timer(
            rate(3_000),
            FollowServer::Yes,
            timer.clone(),
        ));
        let control = {
            let (timer, limiter) = (timer.clone(), limiter.clone());
            Box::pin(async move {
                sleep_to(&timer, secs(30)).await;
                limiter.observe_limit(300);
                sleep_to(&timer, secs(90)).await;
                limiter.observe_limit(3_000);
            }) as Task
        };
        let times = run_workers(&timer, &limiter, 256, secs(150), vec![control]);

        // Lowered at once: the next request waits one new interval (~202 ms).
        let next = times.iter().find(|t| **t > secs(30));
        assert!(
            next.is_some_and(|t| *t >= secs(30) + ms(200)),
            "next after lowering: {next:?}"
        );
        let slow: Vec<Duration> = times
            .iter()
            .copied()
            .filter(|t| *t > secs(30) && *t <= secs(90))
            .collect();
        assert!(max_in_window(&slow, MINUTE) <= 300);
        assert!(slow.len() >= 294, "only {} at 300/min", slow.len());
        assert!(max_in_window(&slow, SEC) <= 300 / 60 + 5);

        // Raised again: back to ~3000/min straight away.
        let fast = count_in(&times, secs(90), secs(150));
        assert!((2_940..=3_000).contains(&fast), "{fast} at 3000/min");
        assert!(max_in_window(&times, MINUTE) <= 3_000);
    }

    #[test]
    fn cap_only_keeps_the_configured_rate_when_the_server_allows_more() {
        let timer = SimTimer::new();
        let limiter = Arc::new(Limiter::with_timer(
            rate(300),
            FollowServer::CapOnly,
            timer.clone(),
        ));
        let control = {
            let (timer, limiter) = (timer.clone(), limiter.clone());
            Box::pin(async move {
                sleep_to(&timer, secs(10)).await;
                limiter.observe_limit(3_000);
            }) as Task
        };
        let times = run_workers(&timer, &limiter, 64, secs(120), vec![control]);
        assert!(max_in_window(&times, MINUTE) <= 300);
        assert_eq!(limiter.rate(), rate(300));
    }

    #[test]
    fn out_of_range_rates_are_clamped() {
        let timer = SimTimer::new();
        let table = [(0, 1), (1, 1), (u32::MAX, MAX_PER_MINUTE)];
        for (given, used) in table {
            let limiter = Limiter::with_timer(rate(given), FollowServer::Yes, timer.clone());
            assert_eq!(limiter.rate(), rate(used), "{given}");
        }
    }

    // ---- the real clock -----------------------------------------------------

    #[tokio::test]
    async fn acquire_works_on_the_tokio_clock_and_is_send() {
        fn assert_send_sync<T: Send + Sync>(_: &T) {}
        fn assert_send<T: Send>(future: T) -> T {
            future
        }
        // 600k/min: a 100 µs interval keeps this real-clock smoke test short.
        let limiter = Arc::new(Limiter::new(rate(600_000), FollowServer::Yes));
        assert_send_sync(&*limiter);
        let workers: Vec<_> = (0..4)
            .map(|_| {
                let limiter = limiter.clone();
                tokio::spawn(async move {
                    for _ in 0..5 {
                        assert_send(limiter.acquire()).await;
                    }
                })
            })
            .collect();
        for worker in workers {
            assert!(worker.await.is_ok());
        }
        assert!(format!("{limiter:?}").contains("600000"));
    }
}
