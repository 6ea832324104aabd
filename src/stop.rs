//! The stop controller: why a run stops early, and the two tokens every stage listens to.
//!
//! `stop` ends reading, planning and new requests (requests in flight finish); `abort`
//! abandons the requests in flight too. Whoever finds a reason to stop gives it here
//! ([`Stop::halt`]); the first reason is kept, except that a rejected key (or a refused
//! redirect) outranks everything and aborts at once. A signal stops without a reason.
//!
//! It also keeps the failure streak. A request that failed for good is not an `error` row at
//! once: it is held ([`Stop::hold`]) until a later answer, or the work running out, shows the
//! API is up ([`Stop::release`]). If instead [`FAILURES_IN_A_ROW`] fail in a row, the API is
//! taken to be down: the run halts and the held requests stay unresolved, so the next run asks
//! them again and an outage leaves no `error` rows an uninterrupted run would not have.

use std::sync::Mutex;

use tokio_util::sync::CancellationToken;

use crate::client::ApiError;
use crate::plan::Settled;

/// After this many requests in a row failed for good, the API is taken to be down and the
/// run stops (resumable) instead of marking every remaining row `error`.
pub const FAILURES_IN_A_ROW: u32 = 10;

/// Why the run stopped early.
#[derive(Debug, Clone)]
pub enum Halt {
    KeyRejected(ApiError),
    /// A redirect out of the base URL's origin: nothing more is sent.
    Refused(ApiError),
    OutOfCredits(ApiError),
    /// `--max-credits` or `--min-balance` reached.
    Budget(String),
    TooManyFailures(String),
    /// The store cannot be written (a full disk, most often): nothing can be cached, so
    /// nothing more may be bought.
    StoreFailed(String),
}

/// The halt decision and the tokens that carry it out.
#[derive(Debug, Default)]
pub struct Stop {
    /// No new requests: a signal, 402, the budget, too many failures. Requests in flight
    /// finish.
    pub stop: CancellationToken,
    /// Abandon requests in flight too: 401, a refused redirect, or the grace period after a
    /// signal ran out.
    pub abort: CancellationToken,
    reason: Mutex<Option<Halt>>,
    streak: Mutex<Streak>,
}

/// The current run of requests that failed for good, and their outcomes held back.
#[derive(Debug, Default)]
struct Streak {
    failures: u32,
    held: Vec<Settled>,
}

impl Stop {
    pub fn new() -> Stop {
        Stop::default()
    }

    /// Stops the run for `halt`: no new requests, and for a rejected key or a refused redirect
    /// none in flight either.
    pub fn halt(&self, halt: Halt) {
        let abort = matches!(halt, Halt::KeyRejected(_) | Halt::Refused(_));
        if let Ok(mut slot) = self.reason.lock() {
            // A rejected key (or a refused redirect) outranks everything: nothing more can be
            // done with it.
            if slot.is_none() || abort {
                *slot = Some(halt);
            }
        }
        if abort {
            self.abort.cancel();
        }
        self.stop.cancel();
    }

    /// Why the run stopped, if something stopped it (a signal gives no reason).
    pub fn reason(&self) -> Option<Halt> {
        self.reason.lock().map(|h| h.clone()).unwrap_or(None)
    }

    /// Holds the outcome of a request that failed for good. When that makes too many failures
    /// in a row the run halts (decided under the streak's lock, so no answer can release the
    /// held ones in between); `why` says it from the count.
    pub fn hold(&self, failed: Settled, why: impl FnOnce(u32) -> String) {
        let mut streak = self.streak.lock().unwrap_or_else(|p| p.into_inner());
        streak.failures += 1;
        streak.held.push(failed);
        if streak.failures >= FAILURES_IN_A_ROW {
            self.halt(Halt::TooManyFailures(why(streak.failures)));
        }
    }

    /// An answer came, or the work ran out: the held failures were not an outage, and are
    /// handed back to become `error` rows. Once the run has halted they stay held.
    pub fn release(&self) -> Vec<Settled> {
        let mut streak = self.streak.lock().unwrap_or_else(|p| p.into_inner());
        if self.reason().is_some() {
            return Vec::new();
        }
        streak.failures = 0;
        std::mem::take(&mut streak.held)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::plan::{Pending, Resolved};

    fn failed(row: u64) -> Settled {
        Settled {
            pending: Arc::new(Pending::new(row)),
            resolved: Resolved::Failed("HTTP 500".into()),
        }
    }

    fn rejected() -> ApiError {
        ApiError::KeyRejected {
            message: "bad key".into(),
        }
    }

    #[test]
    fn the_first_reason_is_kept_but_a_rejected_key_outranks_it() {
        let stop = Stop::new();
        stop.halt(Halt::Budget("budget".into()));
        stop.halt(Halt::TooManyFailures("down".into()));
        assert!(matches!(stop.reason(), Some(Halt::Budget(_))));
        assert!(stop.stop.is_cancelled() && !stop.abort.is_cancelled());
        stop.halt(Halt::KeyRejected(rejected()));
        assert!(matches!(stop.reason(), Some(Halt::KeyRejected(_))));
        assert!(stop.abort.is_cancelled());
    }

    #[test]
    fn failures_are_held_until_an_answer_or_released_never_after_a_halt() {
        let stop = Stop::new();
        for row in 0..FAILURES_IN_A_ROW - 1 {
            stop.hold(failed(row.into()), |n| format!("{n} failed"));
        }
        assert!(stop.reason().is_none());
        assert_eq!(stop.release().len(), (FAILURES_IN_A_ROW - 1) as usize);
        // The streak starts again after a release.
        for row in 0..FAILURES_IN_A_ROW {
            stop.hold(failed(row.into()), |n| format!("{n} failed"));
        }
        assert!(matches!(stop.reason(), Some(Halt::TooManyFailures(why)) if why == "10 failed"));
        assert!(stop.stop.is_cancelled());
        assert!(stop.release().is_empty(), "held ones stay for the next run");
    }
}
