//! Seeded, reproducible chance: which fault an arrival gets and how long it waits.
//!
//! Owns the mapping (seed, normalised address, attempt number) → uniform number in [0, 1), and
//! the fault and latency decisions built on it. It must hold no state and read no clock or RNG:
//! the same run gives the same faults whatever the concurrency or timing of the client.

use std::time::Duration;

use crate::verdict::fnv1a_continue;

/// How long the mock waits before answering a validation.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum Latency {
    /// Answer at once.
    #[default]
    None,
    /// Always wait this long.
    Fixed(Duration),
    /// Log-normal with this median and 99th percentile
    /// (`sigma = ln(p99 / median) / 2.3263`, the z-score of the 99th percentile).
    LogNormal {
        /// The median wait.
        median: Duration,
        /// The 99th-percentile wait (a p99 below the median is treated as the median).
        p99: Duration,
    },
}

/// A fault injected into one validation arrival.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fault {
    /// A 500 with a JSON error body.
    Status500,
    /// A 502 (`bad_gateway == true`) or 503 with an HTML body.
    Html5xx { bad_gateway: bool },
    /// Read the request, then abort the connection (RST), no response.
    Reset,
    /// Read the request, answer nothing for the configured hang time, then close.
    Hang,
    /// Process and charge, then send the head and only half the body, then close.
    Truncated,
}

/// Fault probabilities; checked in this order against one uniform draw, so their sum
/// should not exceed 1 (excess goes to the later ones being less likely than asked).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub(crate) struct FaultOdds {
    pub(crate) p_500: f64,
    pub(crate) p_503: f64,
    pub(crate) p_reset: f64,
    pub(crate) p_hang: f64,
    pub(crate) p_truncated: f64,
}

/// Separates the independent draws made for one arrival.
#[derive(Clone, Copy)]
#[repr(u8)]
enum Salt {
    Fault = 1,
    LatencyA = 2,
    LatencyB = 3,
}

/// A uniform number in [0, 1), a pure function of its inputs.
fn uniform(seed: u64, salt: Salt, norm: &str, attempt: u64) -> f64 {
    let mut h = fnv1a_continue(0xcbf2_9ce4_8422_2325, &seed.to_le_bytes());
    h = fnv1a_continue(h, &[salt as u8]);
    h = fnv1a_continue(h, norm.as_bytes());
    h = fnv1a_continue(h, &attempt.to_le_bytes());
    // FNV's high bits mix poorly for inputs that differ only at the end (the attempt number):
    // the splitmix64 finaliser spreads every input bit over the whole word.
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^= h >> 31;
    (h >> 11) as f64 / (1u64 << 53) as f64
}

/// The fault (if any) for the `attempt`-th arrival (1-based) of a normalised address.
/// 502 and 503 alternate with the attempt number (odd attempts 502, even 503).
pub(crate) fn fault_for(seed: u64, odds: &FaultOdds, norm: &str, attempt: u64) -> Option<Fault> {
    let u = uniform(seed, Salt::Fault, norm, attempt);
    let mut edge = 0.0;
    let table = [
        (odds.p_500, Fault::Status500),
        (
            odds.p_503,
            Fault::Html5xx {
                bad_gateway: attempt % 2 == 1,
            },
        ),
        (odds.p_reset, Fault::Reset),
        (odds.p_hang, Fault::Hang),
        (odds.p_truncated, Fault::Truncated),
    ];
    for (p, fault) in table {
        edge += p.clamp(0.0, 1.0);
        if u < edge {
            return Some(fault);
        }
    }
    None
}

/// The wait before answering the `attempt`-th arrival of a normalised address.
pub(crate) fn latency_for(seed: u64, latency: &Latency, norm: &str, attempt: u64) -> Duration {
    match *latency {
        Latency::None => Duration::ZERO,
        Latency::Fixed(d) => d,
        Latency::LogNormal { median, p99 } => {
            let median_ms = median.as_secs_f64() * 1000.0;
            if median_ms <= 0.0 {
                return Duration::ZERO;
            }
            let ratio = p99.as_secs_f64() * 1000.0 / median_ms;
            let sigma = if ratio > 1.0 {
                ratio.ln() / 2.3263
            } else {
                0.0
            };
            // Box-Muller: two independent uniforms give one standard normal. 1 - u keeps the
            // logarithm's argument in (0, 1].
            let u1 = 1.0 - uniform(seed, Salt::LatencyA, norm, attempt);
            let u2 = uniform(seed, Salt::LatencyB, norm, attempt);
            let z = (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos();
            let ms = median_ms * (sigma * z).exp();
            // Cap at one hour so a freak draw cannot overflow or stall a run forever.
            Duration::from_secs_f64((ms / 1000.0).min(3600.0))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uniform_is_in_range_and_spread() {
        let draws: Vec<f64> = (0..10_000)
            .map(|i| uniform(1, Salt::Fault, "a@b.com", i))
            .collect();
        assert!(draws.iter().all(|u| (0.0..1.0).contains(u)));
        let mean = draws.iter().sum::<f64>() / draws.len() as f64;
        assert!((0.48..0.52).contains(&mean), "mean {mean}");
    }

    #[test]
    fn fault_decisions_are_deterministic_and_depend_on_every_input() {
        let odds = FaultOdds {
            p_500: 0.25,
            p_reset: 0.25,
            ..FaultOdds::default()
        };
        let run = |seed| -> Vec<Option<Fault>> {
            (1..=200)
                .map(|attempt| fault_for(seed, &odds, "x@y.com", attempt))
                .collect()
        };
        assert_eq!(run(1), run(1), "same inputs, same faults");
        assert_ne!(run(1), run(2), "the seed matters");
        let hits = run(1).iter().filter(|f| f.is_some()).count();
        assert!((70..=130).contains(&hits), "about half faulted: {hits}");
    }

    #[test]
    fn certain_and_impossible_faults() {
        let cases: &[(FaultOdds, u64, Option<Fault>)] = &[
            (FaultOdds::default(), 1, None),
            (
                FaultOdds {
                    p_500: 1.0,
                    ..FaultOdds::default()
                },
                1,
                Some(Fault::Status500),
            ),
            (
                FaultOdds {
                    p_503: 1.0,
                    ..FaultOdds::default()
                },
                1,
                Some(Fault::Html5xx { bad_gateway: true }),
            ),
            (
                FaultOdds {
                    p_503: 1.0,
                    ..FaultOdds::default()
                },
                2,
                Some(Fault::Html5xx { bad_gateway: false }),
            ),
            (
                FaultOdds {
                    p_reset: 1.0,
                    ..FaultOdds::default()
                },
                3,
                Some(Fault::Reset),
            ),
            (
                FaultOdds {
                    p_hang: 1.0,
                    ..FaultOdds::default()
                },
                1,
                Some(Fault::Hang),
            ),
            (
                FaultOdds {
                    p_truncated: 1.0,
                    ..FaultOdds::default()
                },
                1,
                Some(Fault::Truncated),
            ),
        ];
        for (odds, attempt, want) in cases {
            for address in ["a@b.com", "zzz@q.org", ""] {
                assert_eq!(fault_for(9, odds, address, *attempt), *want, "{odds:?}");
            }
        }
    }

    #[test]
    fn latency_kinds() {
        let fixed = Latency::Fixed(Duration::from_millis(40));
        assert_eq!(latency_for(1, &Latency::None, "a@b", 1), Duration::ZERO);
        assert_eq!(latency_for(1, &fixed, "a@b", 1), Duration::from_millis(40));
        let flat = Latency::LogNormal {
            median: Duration::from_millis(100),
            p99: Duration::from_millis(100),
        };
        let d = latency_for(1, &flat, "a@b", 7);
        assert!((d.as_secs_f64() - 0.1).abs() < 1e-9, "{d:?}");
    }

    #[test]
    fn log_normal_has_the_asked_median_and_p99() {
        let latency = Latency::LogNormal {
            median: Duration::from_millis(200),
            p99: Duration::from_millis(2000),
        };
        let mut samples: Vec<f64> = (0..20_000)
            .map(|i| latency_for(3, &latency, &format!("user{i}@x.com"), 1).as_secs_f64())
            .collect();
        samples.sort_by(f64::total_cmp);
        let median = samples[samples.len() / 2];
        let p99 = samples[samples.len() * 99 / 100];
        assert!((0.18..0.22).contains(&median), "median {median}");
        assert!((1.7..2.3).contains(&p99), "p99 {p99}");
        assert_eq!(
            latency_for(3, &latency, "user5@x.com", 1),
            latency_for(3, &latency, "user5@x.com", 1)
        );
    }
}
