//! The mock's mutable state: accepted key, credit balance, rate-limit window and statistics.
//!
//! Owns every counter behind the one `std::sync::Mutex` of the server and the snapshot types
//! built from it (`Stats`, the per-response `Meter` that becomes the rate-limit and credit
//! headers). It must not do I/O or await: the lock is held for a few counter updates only,
//! never across a sleep or a socket write.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::window::{Buckets, LimitWindow, Nanos, PeakWindow, MINUTE, SECOND};
use crate::MockConfig;

/// Credits are kept in millionths so that many small charges add up exactly (0.05 × 20 is 1,
/// not 0.9999999).
pub(crate) type Micros = i64;

pub(crate) fn to_micros(credits: f64) -> Micros {
    if credits.is_finite() {
        (credits * 1e6).round() as Micros
    } else {
        0
    }
}

pub(crate) fn from_micros(micros: Micros) -> f64 {
    micros as f64 / 1e6
}

const DAY: Nanos = 24 * 60 * MINUTE;

/// A snapshot of the server's counters, as served by `GET /__mock/stats` (`per_address` only
/// with `?full=1`) and returned by `MockServer::stats` (always with `per_address`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Stats {
    /// Every HTTP request, admin ones included.
    pub requests: u64,
    /// Arrivals at `POST /v1/people/email-validation`, whatever their outcome.
    pub validations: u64,
    /// Validations answered 200.
    pub answered: u64,
    /// Responses sent, per HTTP status code.
    pub by_status: BTreeMap<u16, u64>,
    /// Credits charged since start (or the last reset).
    pub credits_charged: f64,
    /// The current credit balance.
    pub balance: f64,
    /// 429 answers sent.
    pub rate_limited: u64,
    /// Connections aborted with a reset (fault `p_reset`).
    pub resets: u64,
    /// Requests left unanswered (fault `p_hang`).
    pub hangs: u64,
    /// Responses cut in half (fault `p_truncated`).
    pub truncated: u64,
    /// Validation requests being handled right now.
    pub in_flight: u64,
    /// The most validation requests ever handled at once.
    pub max_in_flight: u64,
    /// The most validation arrivals in any sliding 60 s window.
    pub max_in_window_60s: u64,
    /// The most validation arrivals in any sliding 1 s window.
    pub max_in_window_1s: u64,
    /// Validation arrivals per 60 s bucket, from the first arrival on.
    pub per_minute: Vec<u64>,
    /// Validation arrivals per 1 s bucket, from the first arrival on.
    pub per_second: Vec<u64>,
    /// Distinct normalised addresses that arrived.
    pub unique_addresses: u64,
    /// Normalised addresses that arrived more than once, with their arrival counts.
    pub repeated: BTreeMap<String, u64>,
    /// Every normalised address with its arrival count (only in full snapshots).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_address: Option<BTreeMap<String, u64>>,
}

/// What the rate-limit and credit headers of one response say.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Meter {
    pub(crate) limit: u64,
    pub(crate) remaining: u64,
    pub(crate) reset_secs: u64,
    pub(crate) daily_remaining: u64,
    pub(crate) daily_percent: f64,
    pub(crate) soft: bool,
    pub(crate) credits: Micros,
    pub(crate) cost: Micros,
}

/// Counters that `POST /__mock/reset` zeroes.
#[derive(Debug)]
struct Counters {
    requests: u64,
    validations: u64,
    answered: u64,
    by_status: BTreeMap<u16, u64>,
    credits_charged: Micros,
    rate_limited: u64,
    resets: u64,
    hangs: u64,
    truncated: u64,
    peak_60s: PeakWindow,
    peak_1s: PeakWindow,
    per_minute: Buckets,
    per_second: Buckets,
    per_address: HashMap<String, u64>,
}

impl Counters {
    fn new() -> Self {
        Self {
            requests: 0,
            validations: 0,
            answered: 0,
            by_status: BTreeMap::new(),
            credits_charged: 0,
            rate_limited: 0,
            resets: 0,
            hangs: 0,
            truncated: 0,
            peak_60s: PeakWindow::new(MINUTE),
            peak_1s: PeakWindow::new(SECOND),
            per_minute: Buckets::new(MINUTE),
            per_second: Buckets::new(SECOND),
            per_address: HashMap::new(),
        }
    }
}

/// Everything that changes while the server runs. Always used through [`Shared::lock`].
#[derive(Debug)]
pub(crate) struct State {
    api_key: String,
    balance: Micros,
    /// Arrivals the rate limit counts: authenticated validations that were not refused.
    limiter: LimitWindow,
    day: u64,
    day_used: u64,
    counters: Counters,
}

/// Why a validation was refused by the hard limit, and for how long.
pub(crate) struct Limited {
    pub(crate) retry_after_secs: u64,
}

impl State {
    fn new(config: &MockConfig) -> Self {
        let cap = config
            .rate_per_min
            .max(config.advertise_limit.unwrap_or(0))
            .max(1) as usize;
        Self {
            api_key: config.api_key.clone(),
            balance: to_micros(config.credits),
            limiter: LimitWindow::new(
                Nanos::try_from(config.limit_window.as_nanos())
                    .unwrap_or(MINUTE)
                    .max(1),
                cap,
            ),
            day: 0,
            day_used: 0,
            counters: Counters::new(),
        }
    }

    /// Counts one HTTP request of any kind.
    pub(crate) fn count_request(&mut self) {
        self.counters.requests += 1;
    }

    /// Counts one arrival at the validation endpoint, before anything is decided about it.
    pub(crate) fn count_validation(&mut self, now: Nanos) {
        let c = &mut self.counters;
        c.validations += 1;
        c.peak_60s.record(now);
        c.peak_1s.record(now);
        c.per_minute.record(now);
        c.per_second.record(now);
    }

    /// Counts an arrival of a normalised address; returns its attempt number (1-based).
    pub(crate) fn count_address(&mut self, norm: &str) -> u64 {
        // get_mut first: the common case (first arrival) allocates the key only once, and a
        // repeat allocates nothing.
        if let Some(n) = self.counters.per_address.get_mut(norm) {
            *n += 1;
            return *n;
        }
        self.counters.per_address.insert(norm.to_owned(), 1);
        1
    }

    pub(crate) fn count_status(&mut self, status: u16) {
        *self.counters.by_status.entry(status).or_insert(0) += 1;
    }

    pub(crate) fn count_rate_limited(&mut self) {
        self.counters.rate_limited += 1;
    }

    pub(crate) fn count_reset(&mut self) {
        self.counters.resets += 1;
    }

    pub(crate) fn count_hang(&mut self) {
        self.counters.hangs += 1;
    }

    pub(crate) fn count_truncated(&mut self) {
        self.counters.truncated += 1;
    }

    /// Whether one of the presented keys (header slots, possibly empty) is the accepted one.
    pub(crate) fn authorized(&self, presented: &[Option<&str>]) -> bool {
        presented.iter().flatten().any(|k| *k == self.api_key)
    }

    pub(crate) fn set_api_key(&mut self, key: &str) {
        key.clone_into(&mut self.api_key);
    }

    pub(crate) fn balance(&self) -> Micros {
        self.balance
    }

    pub(crate) fn set_balance(&mut self, micros: Micros) {
        self.balance = micros;
    }

    /// Whether the balance covers `cost` (checked before every validation answer).
    pub(crate) fn can_pay(&self, cost: Micros) -> bool {
        self.balance >= cost
    }

    /// Charges an answered validation.
    pub(crate) fn charge(&mut self, cost: Micros) {
        self.balance -= cost;
        self.counters.credits_charged += cost;
        self.counters.answered += 1;
    }

    /// Counts an answer that was not charged (a free status).
    pub(crate) fn answered_free(&mut self) {
        self.counters.answered += 1;
    }

    /// Lets an authenticated validation through the rate limit, or says how long to wait.
    /// In soft mode nothing is refused, but every arrival still counts towards the headers.
    pub(crate) fn admit(&mut self, config: &MockConfig, now: Nanos) -> Result<(), Limited> {
        let limit = config.rate_per_min as usize;
        if config.hard_limit && self.limiter.count(now) >= limit {
            let wait = self.limiter.until_below(now, limit);
            return Err(Limited {
                retry_after_secs: wait.div_ceil(SECOND).max(1),
            });
        }
        self.limiter.record(now);
        let day = now / DAY;
        if day != self.day {
            self.day = day;
            self.day_used = 0;
        }
        self.day_used += 1;
        Ok(())
    }

    /// The header values for a response sent at `now` that cost `cost`.
    pub(crate) fn meter(&mut self, config: &MockConfig, now: Nanos, cost: Micros) -> Meter {
        let limit = u64::from(config.advertise_limit.unwrap_or(config.rate_per_min));
        let used = self.limiter.count(now) as u64;
        let reset = self
            .limiter
            .until_below(now, usize::try_from(limit).unwrap_or(usize::MAX));
        let day_used = if now / DAY == self.day {
            self.day_used
        } else {
            0
        };
        let daily_percent = if config.daily_quota == 0 {
            100.0
        } else {
            day_used as f64 * 100.0 / config.daily_quota as f64
        };
        Meter {
            limit,
            remaining: limit.saturating_sub(used),
            reset_secs: reset.div_ceil(SECOND),
            daily_remaining: config.daily_quota.saturating_sub(day_used),
            daily_percent,
            soft: !config.hard_limit,
            credits: self.balance,
            cost,
        }
    }

    /// Zeroes the statistics; key, balance and the rate-limit window are behaviour, not
    /// statistics, and stay.
    pub(crate) fn reset_stats(&mut self) {
        self.counters = Counters::new();
    }

    pub(crate) fn stats(&self, full: bool, in_flight: u64, max_in_flight: u64) -> Stats {
        let c = &self.counters;
        let repeated = c
            .per_address
            .iter()
            .filter(|(_, &n)| n > 1)
            .map(|(k, &n)| (k.clone(), n))
            .collect();
        Stats {
            requests: c.requests,
            validations: c.validations,
            answered: c.answered,
            by_status: c.by_status.clone(),
            credits_charged: from_micros(c.credits_charged),
            balance: from_micros(self.balance),
            rate_limited: c.rate_limited,
            resets: c.resets,
            hangs: c.hangs,
            truncated: c.truncated,
            in_flight,
            max_in_flight,
            max_in_window_60s: c.peak_60s.peak(),
            max_in_window_1s: c.peak_1s.peak(),
            per_minute: c.per_minute.counts().to_vec(),
            per_second: c.per_second.counts().to_vec(),
            unique_addresses: c.per_address.len() as u64,
            repeated,
            per_address: full.then(|| c.per_address.iter().map(|(k, &n)| (k.clone(), n)).collect()),
        }
    }
}

/// What every connection task shares: the fixed configuration, the state behind one lock,
/// and the lock-free in-flight gauge.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) config: MockConfig,
    pub(crate) cost: Micros,
    epoch: Instant,
    state: Mutex<State>,
    in_flight: AtomicU64,
    max_in_flight: AtomicU64,
    request_ids: AtomicU64,
}

impl Shared {
    pub(crate) fn new(config: MockConfig) -> Self {
        Self {
            cost: to_micros(config.cost).max(0),
            state: Mutex::new(State::new(&config)),
            config,
            epoch: Instant::now(),
            in_flight: AtomicU64::new(0),
            max_in_flight: AtomicU64::new(0),
            request_ids: AtomicU64::new(0),
        }
    }

    /// The state; a panic elsewhere while holding it leaves counters that are still usable,
    /// so poisoning is ignored rather than turned into a second panic.
    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Nanoseconds since the server started, on tokio's clock (pausable in tests).
    pub(crate) fn now(&self) -> Nanos {
        u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// A fresh number for `meta.request_id`.
    pub(crate) fn next_request_id(&self) -> u64 {
        self.request_ids.fetch_add(1, Ordering::Relaxed)
    }

    /// Marks one validation as in flight until the returned guard is dropped.
    pub(crate) fn enter(self: &std::sync::Arc<Self>) -> InFlight {
        let now = self.in_flight.fetch_add(1, Ordering::Relaxed) + 1;
        self.max_in_flight.fetch_max(now, Ordering::Relaxed);
        InFlight {
            shared: std::sync::Arc::clone(self),
        }
    }

    pub(crate) fn stats(&self, full: bool) -> Stats {
        let in_flight = self.in_flight.load(Ordering::Relaxed);
        let max = self.max_in_flight.load(Ordering::Relaxed);
        self.lock().stats(full, in_flight, max)
    }

    /// Validation arrivals so far: `stats().validations` without copying the per-address map,
    /// cheap enough to poll.
    pub(crate) fn validations(&self) -> u64 {
        self.lock().counters.validations
    }

    pub(crate) fn reset_stats(&self) {
        let mut state = self.lock();
        state.reset_stats();
        self.max_in_flight
            .store(self.in_flight.load(Ordering::Relaxed), Ordering::Relaxed);
    }
}

/// One validation in flight; dropping it (response written, connection gone) ends it.
#[derive(Debug)]
pub(crate) struct InFlight {
    shared: std::sync::Arc<Shared>,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.shared.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(rate: u32, hard: bool, advertise: Option<u32>) -> MockConfig {
        MockConfig {
            rate_per_min: rate,
            hard_limit: hard,
            advertise_limit: advertise,
            daily_quota: 10,
            ..MockConfig::default()
        }
    }

    #[test]
    fn micros_round_trip() {
        let cases: &[(f64, Micros)] = &[
            (0.05, 50_000),
            (0.25, 250_000),
            (1_000_000.0, 1_000_000_000_000),
            (f64::NAN, 0),
        ];
        for (credits, micros) in cases {
            assert_eq!(to_micros(*credits), *micros, "{credits}");
        }
        let twenty: Micros = (0..20).map(|_| to_micros(0.05)).sum();
        assert_eq!(from_micros(twenty), 1.0);
    }

    #[test]
    fn hard_limit_refuses_with_retry_after() {
        let cfg = config(2, true, None);
        let mut st = State::new(&cfg);
        // (arrival second, expected: Ok or Retry-After seconds)
        let cases: &[(u64, Result<(), u64>)] = &[
            (0, Ok(())),
            (10, Ok(())),
            (20, Err(40)),
            (59, Err(1)),
            (60, Ok(())),
            (61, Err(9)),
            (70, Ok(())),
        ];
        for (at, want) in cases {
            let got = st.admit(&cfg, at * SECOND).map_err(|l| l.retry_after_secs);
            assert_eq!(got, *want, "at {at}s");
        }
    }

    #[test]
    fn soft_mode_admits_everything_but_reports_zero_remaining() {
        let cfg = config(2, false, None);
        let mut st = State::new(&cfg);
        for i in 0..5 {
            assert!(st.admit(&cfg, i * SECOND).is_ok());
        }
        let m = st.meter(&cfg, 5 * SECOND, 0);
        assert_eq!((m.limit, m.remaining, m.soft), (2, 0, true));
        // The window's two latest arrivals are at 3 s and 4 s: remaining is positive again
        // once the one at 3 s leaves, at 63 s.
        assert_eq!(m.reset_secs, 58);
        assert_eq!(m.daily_remaining, 5);
        assert!((m.daily_percent - 50.0).abs() < 1e-9);
    }

    #[test]
    fn advertised_limit_replaces_the_real_one_in_headers() {
        let cfg = config(3000, true, Some(100));
        let mut st = State::new(&cfg);
        for i in 0..150 {
            assert!(st.admit(&cfg, i * 1_000_000).is_ok(), "real limit is 3000");
        }
        let m = st.meter(&cfg, SECOND, 0);
        assert_eq!((m.limit, m.remaining), (100, 0));
    }

    #[test]
    fn stats_report_repeats_and_reset_zeroes_them() {
        let cfg = config(10, false, None);
        let mut st = State::new(&cfg);
        for (i, address) in ["a@x", "b@x", "a@x", "a@x"].iter().enumerate() {
            st.count_validation(i as u64 * SECOND);
            st.count_address(address);
        }
        let s = st.stats(true, 0, 0);
        assert_eq!(s.validations, 4);
        assert_eq!(s.unique_addresses, 2);
        assert_eq!(s.repeated, BTreeMap::from([("a@x".to_owned(), 3)]));
        assert_eq!(s.per_second, vec![1, 1, 1, 1]);
        assert_eq!(s.max_in_window_60s, 4);
        assert_eq!(s.max_in_window_1s, 1);
        assert_eq!(st.stats(false, 0, 0).per_address, None);
        st.reset_stats();
        assert_eq!(st.stats(true, 0, 0).validations, 0);
        assert_eq!(st.stats(true, 0, 0).per_address, Some(BTreeMap::new()));
    }
}
