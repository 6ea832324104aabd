//! Sliding-window and bucket counters over arrival times.
//!
//! Owns the arithmetic of "how many arrivals in the last N seconds", "the most ever seen in
//! any N-second window" and "arrivals per fixed bucket since the first one". Times are
//! nanoseconds since the server's epoch (a `tokio::time::Instant`, so paused test time works).
//! It must not read a clock or lock anything itself: callers pass `now`.

use std::collections::VecDeque;

/// Nanoseconds since the server's epoch.
pub(crate) type Nanos = u64;

pub(crate) const SECOND: Nanos = 1_000_000_000;
pub(crate) const MINUTE: Nanos = 60 * SECOND;

/// The rate limiter's window: the most recent arrivals within `span`, but at most `cap` of
/// them. Remaining and reset never need to look further back than the largest limit, so the
/// cap bounds memory even in soft mode where nothing is refused.
#[derive(Debug)]
pub(crate) struct LimitWindow {
    span: Nanos,
    cap: usize,
    times: VecDeque<Nanos>,
}

impl LimitWindow {
    pub(crate) fn new(span: Nanos, cap: usize) -> Self {
        Self {
            span,
            cap: cap.max(1),
            times: VecDeque::new(),
        }
    }

    fn prune(&mut self, now: Nanos) {
        // An arrival at exactly `now - span` has left: the window is (now - span, now].
        while self.times.front().is_some_and(|&t| t + self.span <= now) {
            self.times.pop_front();
        }
    }

    /// Records one arrival at `now`.
    pub(crate) fn record(&mut self, now: Nanos) {
        self.prune(now);
        self.times.push_back(now);
        if self.times.len() > self.cap {
            self.times.pop_front();
        }
    }

    /// Arrivals in the window (saturating at the cap).
    pub(crate) fn count(&mut self, now: Nanos) -> usize {
        self.prune(now);
        self.times.len()
    }

    /// Nanoseconds until the window holds fewer than `limit` arrivals (0 if it already does),
    /// or, below the limit, until its oldest arrival leaves (0 when empty).
    pub(crate) fn until_below(&mut self, now: Nanos, limit: usize) -> Nanos {
        self.prune(now);
        let len = self.times.len();
        let index = if len >= limit && limit > 0 {
            len - limit
        } else {
            0
        };
        match self.times.get(index) {
            Some(&t) => (t + self.span).saturating_sub(now),
            // An empty window with a zero limit: nothing will ever leave, say one full span.
            None if limit == 0 => self.span,
            None => 0,
        }
    }
}

/// Exact sliding count of every arrival within `span`, remembering the highest count ever
/// reached. The highest count over all windows is always reached by a window that ends at an
/// arrival, so checking at each arrival is exact.
#[derive(Debug)]
pub(crate) struct PeakWindow {
    span: Nanos,
    times: VecDeque<Nanos>,
    peak: u64,
}

impl PeakWindow {
    pub(crate) fn new(span: Nanos) -> Self {
        Self {
            span,
            times: VecDeque::new(),
            peak: 0,
        }
    }

    pub(crate) fn record(&mut self, now: Nanos) {
        while self.times.front().is_some_and(|&t| t + self.span <= now) {
            self.times.pop_front();
        }
        self.times.push_back(now);
        self.peak = self.peak.max(self.times.len() as u64);
    }

    pub(crate) fn peak(&self) -> u64 {
        self.peak
    }
}

/// Arrivals per fixed bucket of `width`, counted from the first arrival.
#[derive(Debug)]
pub(crate) struct Buckets {
    width: Nanos,
    first: Option<Nanos>,
    counts: Vec<u64>,
}

impl Buckets {
    pub(crate) fn new(width: Nanos) -> Self {
        Self {
            width,
            first: None,
            counts: Vec::new(),
        }
    }

    pub(crate) fn record(&mut self, now: Nanos) {
        let first = *self.first.get_or_insert(now);
        let index = usize::try_from(now.saturating_sub(first) / self.width).unwrap_or(usize::MAX);
        if index >= self.counts.len() {
            // A bucket per elapsed unit, even empty ones: idle gaps show up as zeros.
            self.counts.resize(index.saturating_add(1), 0);
        }
        if let Some(c) = self.counts.get_mut(index) {
            *c += 1;
        }
    }

    pub(crate) fn counts(&self) -> &[u64] {
        &self.counts
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Nanos = 1_000_000;

    #[test]
    fn limit_window_counts_and_forgets() {
        // (arrival times in ms, count asked at ms, expected count)
        let cases: &[(&[u64], u64, usize)] = &[
            (&[], 0, 0),
            (&[0, 10, 20], 20, 3),
            (&[0, 10, 20], 60_000, 2),
            (&[0, 10, 20], 60_010, 1),
            (&[0, 10, 20], 60_020, 0),
            (&[0, 59_999], 60_000, 1),
        ];
        for (arrivals, at, want) in cases {
            let mut w = LimitWindow::new(MINUTE, 100);
            for &t in arrivals.iter() {
                w.record(t * MS);
            }
            assert_eq!(w.count(at * MS), *want, "{arrivals:?} at {at}");
        }
    }

    #[test]
    fn limit_window_is_capped() {
        let mut w = LimitWindow::new(MINUTE, 3);
        for t in 0..10 {
            w.record(t * MS);
        }
        assert_eq!(w.count(10 * MS), 3);
        // The three kept are the latest (7, 8, 9 ms): the first leaves at 60 s + 7 ms.
        assert_eq!(w.until_below(10 * MS, 3), MINUTE - 3 * MS);
    }

    #[test]
    fn until_below() {
        // (arrivals ms, now ms, limit, expected ms)
        let cases: &[(&[u64], u64, usize, u64)] = &[
            (&[], 0, 2, 0),
            (&[], 0, 0, 60_000),
            (&[0], 1_000, 2, 59_000),
            (&[0, 500], 1_000, 2, 59_000),
            (&[0, 500, 700], 1_000, 2, 59_500),
            (&[0, 500, 700], 1_000, 1, 59_700),
        ];
        for (arrivals, now, limit, want) in cases {
            let mut w = LimitWindow::new(MINUTE, 10);
            for &t in arrivals.iter() {
                w.record(t * MS);
            }
            assert_eq!(
                w.until_below(now * MS, *limit),
                want * MS,
                "{arrivals:?} now {now} limit {limit}"
            );
        }
    }

    #[test]
    fn peak_window_finds_the_busiest_span() {
        // (arrivals in ms, span ms, expected peak)
        let cases: &[(&[u64], u64, u64)] = &[
            (&[], 1_000, 0),
            (&[0], 1_000, 1),
            (&[0, 999], 1_000, 2),
            (&[0, 1_000], 1_000, 1),
            (&[0, 100, 200, 5_000, 5_001, 5_002, 5_003], 1_000, 4),
            (&[0, 30_000, 59_999, 60_000, 61_000], 60_000, 4),
        ];
        for (arrivals, span, want) in cases {
            let mut w = PeakWindow::new(span * MS);
            for &t in arrivals.iter() {
                w.record(t * MS);
            }
            assert_eq!(w.peak(), *want, "{arrivals:?} span {span}");
        }
    }

    #[test]
    fn buckets_start_at_the_first_arrival() {
        let cases: &[(&[u64], &[u64])] = &[
            (&[], &[]),
            (&[5_000], &[1]),
            (&[5_000, 5_999, 6_000], &[2, 1]),
            (&[1_000, 4_500], &[1, 0, 0, 1]),
        ];
        for (arrivals, want) in cases {
            let mut b = Buckets::new(SECOND);
            for &t in arrivals.iter() {
                b.record(t * MS);
            }
            assert_eq!(b.counts(), *want, "{arrivals:?}");
        }
    }
}
