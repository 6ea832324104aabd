//! Retry policy: how long a worker waits before retrying a failed request.
//!
//! Owns the backoff arithmetic only: capped exponential growth, jitter, the
//! server's `Retry-After` hint, and when to give up. It is pure: it never
//! sleeps, reads the clock, logs, or decides *whether* an error is retryable
//! (the API client's error type knows that). Pausing the whole pool on a
//! `Retry-After` is the limiter's job; this only says how long one worker waits.

use std::time::Duration;

/// Jittered, capped exponential backoff.
///
/// Retry `n` (1-based) draws from `[d/2, d]` where `d = min(cap, base * 2^(n-1))`
/// ("equal jitter"). Full jitter (`[0, d]`) spreads retries a bit more, but it
/// can pick a delay near zero, and an immediate retry after a 429 or a 503 is
/// a request slot spent on a server that just said it is overloaded. Equal
/// jitter keeps at least half the backoff while still de-synchronising the
/// workers that failed together; the shared limiter already spaces the
/// retries out, so the extra spread of full jitter buys little here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Retries after the first attempt; `0` means never retry.
    pub max_retries: u32,
    /// Delay scale of the first retry (drawn from `[base/2, base]`).
    pub base: Duration,
    /// Upper bound of the computed delay (a larger server hint still wins).
    pub cap: Duration,
}

impl Default for RetryPolicy {
    /// 5 retries, 500 ms doubling up to 30 s: 0.5, 1, 2, 4, 8 s before jitter,
    /// so a request gives up after about 8-16 s of backoff in total, long
    /// enough to ride out a gateway restart, short enough that a dead API is
    /// reported within a minute.
    fn default() -> Self {
        RetryPolicy {
            max_retries: 5,
            base: Duration::from_millis(500),
            cap: Duration::from_secs(30),
        }
    }
}

impl RetryPolicy {
    /// Delay before retry number `retry` (1-based), or None when retries are exhausted.
    ///
    /// `server_hint` (Retry-After) wins over the computed delay when larger: the
    /// server knows when it will accept work again, and retrying earlier only
    /// earns another 429. The hint is not capped; the caller decides whether a
    /// very long hint is worth waiting for. `retry == 0` is treated as the
    /// first retry rather than a panic.
    pub fn delay(
        &self,
        retry: u32,
        server_hint: Option<Duration>,
        rng: &mut impl rand::Rng,
    ) -> Option<Duration> {
        if retry > self.max_retries {
            return None;
        }
        let ceiling = self.ceiling(retry.max(1));
        let jittered = equal_jitter(ceiling, rng);
        Some(match server_hint {
            Some(hint) if hint > jittered => hint,
            _ => jittered,
        })
    }

    /// `min(cap, base * 2^(retry-1))`, without overflow for any `retry`.
    fn ceiling(&self, retry: u32) -> Duration {
        let doublings = retry.saturating_sub(1);
        // 2^31 already exceeds any sensible cap/base ratio; clamping the shift
        // keeps `checked_mul` meaningful instead of overflowing the shift.
        let factor = 1u32 << doublings.min(31);
        self.base
            .checked_mul(factor)
            .map_or(self.cap, |d| d.min(self.cap))
    }
}

/// A duration drawn uniformly from `[d/2, d]`, at nanosecond resolution.
fn equal_jitter(d: Duration, rng: &mut impl rand::Rng) -> Duration {
    // Durations above ~584 years do not fit u64 nanoseconds; nobody backs off
    // that long, so saturating is only a guard against a silly `cap`.
    let full = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
    let half = full / 2;
    Duration::from_nanos(rng.random_range(half..=full))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    const MS: fn(u64) -> Duration = Duration::from_millis;

    fn rng() -> StdRng {
        StdRng::seed_from_u64(0x6d61_696c_7369_6674)
    }

    #[test]
    fn delays_double_then_cap_and_stay_in_the_jitter_band() {
        let policy = RetryPolicy {
            max_retries: 8,
            base: MS(500),
            cap: Duration::from_secs(10),
        };
        // (retry, ceiling before jitter)
        let table = [
            (1, MS(500)),
            (2, MS(1_000)),
            (3, MS(2_000)),
            (4, MS(4_000)),
            (5, MS(8_000)),
            (6, MS(10_000)), // 16 s capped
            (7, MS(10_000)),
            (8, MS(10_000)),
        ];
        let mut rng = rng();
        for (retry, ceiling) in table {
            for _ in 0..1_000 {
                let d = policy.delay(retry, None, &mut rng);
                let d = d.unwrap_or_else(|| panic!("retry {retry} should be allowed"));
                assert!(
                    d >= ceiling / 2 && d <= ceiling,
                    "retry {retry}: {d:?} outside [{:?}, {ceiling:?}]",
                    ceiling / 2
                );
            }
        }
    }

    #[test]
    fn jitter_actually_spreads_the_delays() {
        let policy = RetryPolicy::default();
        let mut rng = rng();
        let draws: Vec<Duration> = (0..1_000)
            .filter_map(|_| policy.delay(3, None, &mut rng))
            .collect();
        let (lo, hi) = (MS(1_000), MS(2_000));
        // Both halves of the band get used: not a constant, not one-sided.
        assert!(draws.iter().any(|d| *d < lo + MS(250)));
        assert!(draws.iter().any(|d| *d > hi - MS(250)));
    }

    #[test]
    fn gives_up_after_max_retries() {
        let table = [
            (0u32, 1u32, None),
            (3, 3, Some(())),
            (3, 4, None),
            (5, 6, None),
        ];
        let mut rng = rng();
        for (max_retries, retry, expect) in table {
            let policy = RetryPolicy {
                max_retries,
                ..RetryPolicy::default()
            };
            let got = policy.delay(retry, None, &mut rng).map(|_| ());
            assert_eq!(got, expect, "max_retries {max_retries}, retry {retry}");
        }
    }

    #[test]
    fn server_hint_wins_only_when_larger() {
        let policy = RetryPolicy::default(); // retry 1 draws from [250 ms, 500 ms]
        let mut rng = rng();
        // (hint, expected lower bound, expected upper bound)
        let table = [
            (None, MS(250), MS(500)),
            (Some(MS(100)), MS(250), MS(500)),
            (Some(MS(7_000)), MS(7_000), MS(7_000)),
            // A hint beyond the cap is still honoured: the server knows best.
            (
                Some(Duration::from_secs(120)),
                Duration::from_secs(120),
                Duration::from_secs(120),
            ),
        ];
        for (hint, lo, hi) in table {
            let d = policy.delay(1, hint, &mut rng);
            let d = d.unwrap_or_else(|| panic!("retry 1 allowed"));
            assert!(
                d >= lo && d <= hi,
                "hint {hint:?}: {d:?} outside [{lo:?}, {hi:?}]"
            );
        }
    }

    #[test]
    fn odd_inputs_do_not_panic() {
        let mut rng = rng();
        let huge = RetryPolicy {
            max_retries: u32::MAX,
            base: Duration::from_secs(u64::MAX / 4),
            cap: Duration::MAX,
        };
        assert!(huge.delay(u32::MAX, None, &mut rng).is_some());
        let zero = RetryPolicy {
            max_retries: 3,
            base: Duration::ZERO,
            cap: Duration::ZERO,
        };
        assert_eq!(zero.delay(2, None, &mut rng), Some(Duration::ZERO));
        // retry 0 is a caller slip; treat it as the first retry.
        let d = RetryPolicy::default().delay(0, None, &mut rng);
        assert!(d.is_some_and(|d| d <= MS(500)));
    }
}
