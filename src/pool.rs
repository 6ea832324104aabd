//! The worker pool: a fixed number of long-lived tasks that take jobs, wait on the shared
//! limiter, ask the API, retry what is worth retrying, and cache every answer the moment it is
//! paid for.
//!
//! Concurrency and rate are separate knobs: the limiter decides when a request may go out, the
//! number of workers how many may be waiting for an answer at once (Little's law: rate ×
//! latency). Server hints (`Retry-After`, `RateLimit-Remaining: 0`, an exhausted daily quota)
//! pause the shared limiter, so the whole pool slows down, not one worker.
//!
//! A worker stops the pool for the cases that concern every request: 401 (abort at once),
//! 402 (stop sending, let the others finish), and a run of requests that failed for good
//! (the API looks down). Workers never touch files other than through the store.
//!
//! A request that failed for good is not an `error` row at once: it is held until a later
//! answer shows the API is up (or the work ends normally, or the pool runs out of requests to
//! send). If instead the failures go on until the pool stops, the held ones stay unresolved and
//! the next run asks them again, so an outage does not leave `error` rows in the resumed file
//! that an uninterrupted run would not have.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, Notify};
use tokio_util::sync::CancellationToken;

use crate::client::{ApiError, Client, Meta, Reply, Status, Verdict};
use crate::limiter::Limiter;
use crate::plan::{Job, Pending, Resolved};
use crate::report::Counters;
use crate::retry::RetryPolicy;
use crate::store::{Answer, Store};

/// After this many requests in a row failed for good, the API is taken to be down and the
/// run stops (resumable) instead of marking every remaining row `error`.
const FAILURES_IN_A_ROW: u32 = 10;

/// Why the pool stopped early.
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

/// What the job may spend, and what it has spent: `--max-credits` counts every credit the
/// job paid (earlier runs included) plus the worst case of the requests in flight, so the
/// budget holds even if every one of them comes back charged.
#[derive(Debug)]
pub struct Ledger {
    pub max_credits: Option<f64>,
    pub min_balance: Option<f64>,
    state: Mutex<LedgerState>,
}

#[derive(Debug, Default, Clone, Copy)]
struct LedgerState {
    /// Charged so far (earlier runs of the job included), in credits.
    spent: f64,
    /// Worst case of the requests in flight.
    reserved: f64,
    /// The price of one charged check, as last seen.
    cost: f64,
}

impl Ledger {
    pub fn new(
        max_credits: Option<f64>,
        min_balance: Option<f64>,
        spent_before: f64,
        cost: f64,
    ) -> Ledger {
        Ledger {
            max_credits,
            min_balance,
            state: Mutex::new(LedgerState {
                spent: spent_before,
                reserved: 0.0,
                cost,
            }),
        }
    }

    fn with<T>(&self, f: impl FnOnce(&mut LedgerState) -> T) -> T {
        let mut state = self
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        f(&mut state)
    }

    /// Reserves the worst case of one request; `Err` when the budget cannot take it.
    fn reserve(&self) -> Result<f64, String> {
        self.with(|s| {
            let worst = s.cost;
            if let Some(max) = self.max_credits {
                if s.spent + s.reserved + worst > max + 1e-9 {
                    return Err(format!(
                        "the budget is reached: {} of --max-credits {} spent or committed",
                        crate::output::format_credits(s.spent + s.reserved),
                        crate::output::format_credits(max)
                    ));
                }
            }
            s.reserved += worst;
            Ok(worst)
        })
    }

    /// Settles a reservation with what the request really cost (`None`: unknown, so the
    /// worst case is kept as spent).
    fn settle(&self, reserved: f64, charged: Option<f64>) {
        self.with(|s| {
            s.reserved = (s.reserved - reserved).max(0.0);
            s.spent += charged.unwrap_or(reserved);
            if let Some(c) = charged.filter(|c| *c > 0.0) {
                s.cost = c;
            }
        })
    }

    /// Releases a reservation for a request that was not charged.
    fn release(&self, reserved: f64) {
        self.settle(reserved, Some(0.0));
    }

    /// Credits spent by the job so far.
    pub fn spent(&self) -> f64 {
        self.with(|s| s.spent)
    }
}

/// What every worker shares.
pub struct Pool {
    pub client: Client,
    pub limiter: Arc<Limiter>,
    pub store: Arc<Store>,
    pub policy: RetryPolicy,
    pub counters: Arc<Counters>,
    /// Wakes the writer when a verdict lands.
    pub wake: Arc<Notify>,
    /// No new requests: a signal, 402, or too many failures. Requests in flight finish.
    pub stop: CancellationToken,
    /// Abandon requests in flight too: 401, or the grace period after a signal ran out.
    pub abort: CancellationToken,
    /// This run's id, stamped on every answer it pays for.
    pub run: u64,
    pub ledger: Ledger,
    halt: Mutex<Option<Halt>>,
    streak: Mutex<Streak>,
    /// Workers running `work`: the last one out releases the held failures.
    workers: AtomicU32,
    /// Workers holding a job (taken, not yet finished).
    busy: AtomicU32,
    /// Rung when `busy` drops to 0, for the worker waiting on the queue.
    idle: Notify,
}

/// The current run of requests that failed for good, and their outcomes held back.
#[derive(Default)]
struct Streak {
    failures: u32,
    held: Vec<(Arc<Pending>, Arc<str>)>,
}

impl Pool {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        client: Client,
        limiter: Arc<Limiter>,
        store: Arc<Store>,
        policy: RetryPolicy,
        counters: Arc<Counters>,
        wake: Arc<Notify>,
        stop: CancellationToken,
        abort: CancellationToken,
        run: u64,
        ledger: Ledger,
    ) -> Pool {
        Pool {
            client,
            limiter,
            store,
            policy,
            counters,
            wake,
            stop,
            abort,
            run,
            ledger,
            halt: Mutex::new(None),
            streak: Mutex::new(Streak::default()),
            workers: AtomicU32::new(0),
            busy: AtomicU32::new(0),
            idle: Notify::new(),
        }
    }

    /// Why the pool stopped, if it stopped itself.
    pub fn halt(&self) -> Option<Halt> {
        self.halt.lock().map(|h| h.clone()).unwrap_or(None)
    }

    /// Stops the pool for a reason found outside it (a balance too low at the start).
    pub fn halt_with(&self, halt: Halt) {
        self.set_halt(halt);
        self.stop.cancel();
    }

    fn set_halt(&self, halt: Halt) {
        if let Ok(mut slot) = self.halt.lock() {
            // A rejected key (or a refused redirect) outranks everything: nothing more can be
            // done with it.
            if slot.is_none() || matches!(halt, Halt::KeyRejected(_) | Halt::Refused(_)) {
                *slot = Some(halt);
            }
        }
    }

    /// One worker: takes jobs until the queue closes or the pool stops.
    pub async fn work(self: Arc<Self>, jobs: Arc<tokio::sync::Mutex<mpsc::Receiver<Job>>>) {
        self.workers.fetch_add(1, Ordering::AcqRel);
        self.take_jobs(jobs).await;
        if self.workers.fetch_sub(1, Ordering::AcqRel) == 1 && !self.stop.is_cancelled() {
            // The last worker out, every job done and nothing stopped the pool: the failures
            // held since the last answer were not an outage. They are `error` rows.
            self.end_streak();
        }
    }

    async fn take_jobs(&self, jobs: Arc<tokio::sync::Mutex<mpsc::Receiver<Job>>>) {
        loop {
            let job = tokio::select! {
                biased;
                _ = self.stop.cancelled() => return,
                job = self.next_job(&jobs) => job,
            };
            let Some(job) = job else { return };
            let asked = self.ask(&job).await;
            if self.busy.fetch_sub(1, Ordering::AcqRel) == 1 {
                // Nobody holds a job now: let the worker waiting on the queue look again.
                self.idle.notify_one();
            }
            if let Err(e) = asked {
                // Every worker meets the same failure: the first one reports it, at the end.
                self.set_halt(Halt::StoreFailed(format!("{e:#}")));
                self.stop.cancel();
                return;
            }
        }
    }

    /// The next job, counted as busy from the moment it is taken (under the queue's lock, so
    /// the check below is exact). With none queued and none in hand, no answer can come to
    /// settle the failures held so far, and the rows waiting on them may be what keeps the
    /// planner from queuing more (the writer's window is full): they are released as `error`
    /// rows, or the run would wait forever.
    async fn next_job(&self, jobs: &tokio::sync::Mutex<mpsc::Receiver<Job>>) -> Option<Job> {
        let mut queue = jobs.lock().await;
        loop {
            if queue.is_empty() && self.busy.load(Ordering::Acquire) == 0 {
                self.end_streak();
            }
            tokio::select! {
                job = queue.recv() => {
                    if job.is_some() {
                        self.busy.fetch_add(1, Ordering::AcqRel);
                    }
                    return job;
                }
                // The last busy worker finished: look again.
                () = self.idle.notified() => {}
            }
        }
    }

    /// Asks for one address until it has an answer, fails for good, or the pool stops. A job
    /// left unresolved is asked again by the next run.
    async fn ask(&self, job: &Job) -> anyhow::Result<()> {
        // The marker outlives a crash: the next run reports the request as maybe charged. The
        // answer is in the store (safe from a `kill -9`) before its row can be written.
        self.store.mark_in_flight(&job.key)?;
        let mut retry = 0;
        loop {
            tokio::select! {
                biased;
                _ = self.stop.cancelled() => {
                    // Not sent this time round; a retry's earlier attempt may have been charged,
                    // but that attempt has been counted already.
                    return self.store.clear_in_flight(&job.key);
                }
                _ = self.limiter.acquire() => {}
            }
            let reserved = match self.ledger.reserve() {
                Ok(reserved) => reserved,
                Err(why) => {
                    self.set_halt(Halt::Budget(why));
                    self.stop.cancel();
                    return self.store.clear_in_flight(&job.key);
                }
            };
            self.counters.requests.fetch_add(1, Ordering::Relaxed);
            self.counters.in_flight.fetch_add(1, Ordering::Relaxed);
            let result = tokio::select! {
                biased;
                _ = self.abort.cancelled() => None,
                r = self.client.validate(&job.address) => Some(r),
            };
            self.counters.in_flight.fetch_sub(1, Ordering::Relaxed);
            let Some(result) = result else {
                // Abandoned in flight: it may have been charged; the marker stays.
                self.counters.maybe_charged.fetch_add(1, Ordering::Relaxed);
                self.ledger.settle(reserved, None);
                return Ok(());
            };
            match &result {
                Ok(reply) => {
                    let charged = reply.body.credits_consumed.or(reply.meta.credits_cost);
                    self.ledger.settle(reserved, Some(charged.unwrap_or(0.0)));
                    if let Some(cost) = charged.filter(|c| *c > 0.0) {
                        self.store.set_last_cost(cost)?;
                    }
                }
                Err(e) if e.maybe_charged() => self.ledger.settle(reserved, None),
                Err(_) => self.ledger.release(reserved),
            }
            let error = match result {
                Ok(reply) => {
                    self.follow(&reply.meta);
                    self.end_streak();
                    let answer = self.answer(reply, job);
                    self.store.put(&job.key, &answer)?;
                    self.store.clear_in_flight(&job.key)?;
                    self.resolve(job, Resolved::Answered(Arc::new(answer)));
                    return Ok(());
                }
                Err(error) => error,
            };
            match &error {
                ApiError::KeyRejected { .. } => {
                    self.set_halt(Halt::KeyRejected(error.clone()));
                    self.abort.cancel();
                    self.stop.cancel();
                    return self.store.clear_in_flight(&job.key);
                }
                ApiError::Refused { .. } => {
                    self.set_halt(Halt::Refused(error.clone()));
                    self.abort.cancel();
                    self.stop.cancel();
                    return self.store.clear_in_flight(&job.key);
                }
                ApiError::OutOfCredits { .. } => {
                    self.set_halt(Halt::OutOfCredits(error.clone()));
                    self.stop.cancel();
                    return self.store.clear_in_flight(&job.key);
                }
                ApiError::Rejected { .. } => {
                    self.store.clear_in_flight(&job.key)?;
                    self.resolve(job, Resolved::Failed(error.to_string().into()));
                    return Ok(());
                }
                ApiError::RateLimited { meta, .. } => self.follow(meta),
                // Only a command's first contact says Unreachable; here it is one more failure.
                ApiError::Transient { .. } | ApiError::Unreachable { .. } => {}
            }
            if error.maybe_charged() {
                self.counters.maybe_charged.fetch_add(1, Ordering::Relaxed);
            }
            retry += 1;
            let delay = self
                .policy
                .delay(retry, error.retry_after(), &mut rand::rng());
            let Some(delay) = delay else {
                if !error.maybe_charged() {
                    self.store.clear_in_flight(&job.key)?;
                }
                let message = format!(
                    "{error} (gave up after {} attempts)",
                    self.policy.max_retries + 1
                );
                let halted = self.hold_failure(job, message.into(), |failures| {
                    format!(
                        "{failures} requests in a row failed after {} attempts each; the last: {error}",
                        self.policy.max_retries + 1
                    )
                });
                if halted {
                    // The held jobs stay unresolved: the next run asks them again.
                    self.stop.cancel();
                }
                return Ok(());
            };
            if let ApiError::RateLimited { .. } = error {
                // A 429 concerns every worker: the whole pool waits.
                self.limiter
                    .pause_until(tokio::time::Instant::now() + delay, "HTTP 429 Retry-After");
            }
            self.counters.retries.fetch_add(1, Ordering::Relaxed);
            tracing::debug!("retry {retry} in {delay:?}: {error}");
            tokio::select! {
                biased;
                _ = self.stop.cancelled() => return Ok(()),
                _ = tokio::time::sleep(delay) => {}
            }
        }
    }

    fn resolve(&self, job: &Job, resolved: Resolved) {
        job.pending.resolve(resolved);
        self.wake.notify_one();
    }

    /// Holds a job that failed for good. True when that makes too many failures in a row:
    /// the pool halts (decided under the streak's lock, so no answer can release the held jobs
    /// in between).
    fn hold_failure(&self, job: &Job, message: Arc<str>, why: impl FnOnce(u32) -> String) -> bool {
        let mut streak = self.streak.lock().unwrap_or_else(|p| p.into_inner());
        streak.failures += 1;
        streak.held.push((job.pending.clone(), message));
        if streak.failures < FAILURES_IN_A_ROW {
            return false;
        }
        self.set_halt(Halt::TooManyFailures(why(streak.failures)));
        true
    }

    /// An answer came (or the work ended normally): the held failures were not an outage, so
    /// they become `error` rows. Once the pool has halted they stay unresolved instead.
    fn end_streak(&self) {
        let held = {
            let mut streak = self.streak.lock().unwrap_or_else(|p| p.into_inner());
            if self.halt().is_some() {
                return;
            }
            streak.failures = 0;
            std::mem::take(&mut streak.held)
        };
        if held.is_empty() {
            return;
        }
        for (pending, message) in held {
            pending.resolve(Resolved::Failed(message));
        }
        self.wake.notify_one();
    }

    /// Follows the server's rate-limit and credit headers.
    fn follow(&self, meta: &Meta) {
        if let Some(limit) = meta.rate_limit {
            self.limiter.observe_limit(limit);
        }
        self.counters
            .rate
            .store(self.limiter.rate().per_minute as u64, Ordering::Relaxed);
        if let Some(balance) = meta.credits_remaining {
            self.counters.set_balance(balance);
            if let Some(min) = self.ledger.min_balance.filter(|min| balance < *min) {
                self.set_halt(Halt::Budget(format!(
                    "the balance ({}) fell below --min-balance {}",
                    crate::output::format_credits(balance),
                    crate::output::format_credits(min)
                )));
                self.stop.cancel();
            }
        }
        let now = tokio::time::Instant::now();
        if meta.rate_remaining == Some(0) {
            if let Some(reset) = meta.rate_reset.filter(|r| !r.is_zero()) {
                self.limiter
                    .pause_until(now + reset, "RateLimit-Remaining: 0");
            }
        }
        if let Some(left) = meta.daily_remaining {
            self.counters.daily_left.store(left, Ordering::Relaxed);
        }
        if meta.daily_remaining == Some(0) {
            // The reset time of the daily quota is not documented: look again in a while.
            let wait = meta
                .rate_reset
                .unwrap_or(Duration::from_secs(60))
                .max(Duration::from_secs(60));
            self.limiter
                .pause_until(now + wait, "daily quota exhausted");
        }
    }

    fn answer(&self, reply: Reply<Verdict>, job: &Job) -> Answer {
        let Reply { body, meta } = reply;
        let mut message = body.message;
        let status = body.status.or_else(|| {
            message.get_or_insert_with(|| "the API's answer had no email_status".to_owned());
            Some(Status::Unknown)
        });
        Answer {
            status,
            message,
            mx_provider: body.mx_provider,
            mx_record: body.mx_record,
            is_catch_all: body.is_domain_catch_all,
            credits: body.credits_consumed.or(meta.credits_cost).unwrap_or(0.0),
            checked_at: crate::clock::now(),
            run: self.run,
            first_row: job.pending.first_row,
            company: body.company,
        }
    }
}
