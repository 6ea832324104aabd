//! The budget ledger: what the job may spend, and what it has spent.
//!
//! `--max-credits` counts every credit the job paid (earlier runs included, and the worst case
//! of requests whose outcome a crash left unknown) plus the worst case of the requests in
//! flight, so the budget holds even if every one of them comes back charged. For a job that can
//! resume, the ledger is the one writer of the job's tally in the store.

use std::sync::{Arc, Mutex};

use crate::store::{credits, micros, Store, Tally};

/// Why a request may not be sent.
#[derive(Debug)]
pub enum Refusal {
    /// `--max-credits` would be passed: what is spent or committed, and the limit.
    OverBudget { committed: f64, max: f64 },
    /// The job's tally could not be written.
    Unrecorded(anyhow::Error),
}

/// What the job may spend, and what it has spent: `--max-credits` counts every credit the
/// job paid (earlier runs included, and the worst case of requests whose outcome a crash left
/// unknown) plus the worst case of the requests in flight, so the budget holds even if every
/// one of them comes back charged.
///
/// For a job that can resume, every change is written to the store's tally of the job as it
/// happens: a request counts as in flight from the moment it is sent until its answer is
/// stored, so after a `kill -9` the next run knows what was paid and what may have been.
pub struct Ledger {
    pub max_credits: Option<f64>,
    pub min_balance: Option<f64>,
    state: Mutex<LedgerState>,
    /// The store and job id the tally is kept under.
    durable: Option<(Arc<Store>, [u8; 16])>,
}

impl std::fmt::Debug for Ledger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ledger")
            .field("max_credits", &self.max_credits)
            .field("state", &self.with(|s| *s))
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Default, Clone, Copy)]
struct LedgerState {
    /// The job's totals, all runs together, in millionths of a credit.
    job: Tally,
    /// What this run's requests were charged (unknown outcomes at the worst case).
    this_run: u64,
    /// The price of one charged check, as last seen.
    cost: u64,
}

impl Ledger {
    /// `before`: the job's tally when the run starts (nothing in flight), written at once.
    pub fn open(
        max_credits: Option<f64>,
        min_balance: Option<f64>,
        before: Tally,
        cost: f64,
        durable: Option<(Arc<Store>, [u8; 16])>,
    ) -> anyhow::Result<Ledger> {
        if let Some((store, job)) = &durable {
            store.set_tally(job, before)?;
        }
        Ok(Ledger {
            max_credits,
            min_balance,
            state: Mutex::new(LedgerState {
                job: before,
                this_run: 0,
                cost: micros(cost),
            }),
            durable,
        })
    }

    fn with<T>(&self, f: impl FnOnce(&mut LedgerState) -> T) -> T {
        let mut state = self
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        f(&mut state)
    }

    /// Applies a change and writes the tally (under the lock, so writes land in order).
    fn update<T>(&self, f: impl FnOnce(&mut LedgerState) -> T) -> anyhow::Result<T> {
        self.with(|s| {
            let out = f(s);
            if let Some((store, job)) = &self.durable {
                store.set_tally(job, s.job)?;
            }
            Ok(out)
        })
    }

    /// Reserves the worst case of one request about to be sent, and counts it in flight.
    pub fn reserve(&self) -> Result<u64, Refusal> {
        self.update(|s| {
            let worst = s.cost;
            if let Some(max) = self.max_credits {
                if s.job.worst() + worst > micros(max) {
                    return Err(Refusal::OverBudget {
                        committed: credits(s.job.worst()),
                        max,
                    });
                }
            }
            s.job.reserved += worst;
            s.job.in_flight += 1;
            s.job.requests += 1;
            Ok(worst)
        })
        .map_err(Refusal::Unrecorded)?
    }

    /// Settles a request in flight with what it cost (`None`: unknown, so the worst case is
    /// kept as spent).
    pub fn settle(&self, reserved: u64, charged: Option<f64>) -> anyhow::Result<()> {
        self.update(|s| {
            let known = charged.map(micros);
            let charged = known.unwrap_or(reserved);
            s.job.reserved = s.job.reserved.saturating_sub(reserved);
            s.job.in_flight = s.job.in_flight.saturating_sub(1);
            s.job.spent += charged;
            s.this_run += charged;
            if let Some(cost) = known.filter(|c| *c > 0) {
                s.cost = cost;
            }
        })
    }

    /// A request given up in flight (the grace period ran out): its outcome stays unknown,
    /// and it stays in flight in the job's tally for the next run to count.
    pub fn abandon(&self, reserved: u64) {
        self.with(|s| s.this_run += reserved);
    }

    /// Credits the job may have been charged so far, all runs together: requests in flight at
    /// their worst case.
    pub fn spent(&self) -> f64 {
        self.with(|s| credits(s.job.worst()))
    }

    /// Credits this run's requests were charged (unknown outcomes at the worst case).
    pub fn spent_this_run(&self) -> f64 {
        self.with(|s| credits(s.this_run))
    }
}
