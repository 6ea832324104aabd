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
use crate::store::{credits, micros, Answer, Store, Tally};

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
    /// `before`: the job's tally when the run starts (nothing in flight).
    pub fn new(
        max_credits: Option<f64>,
        min_balance: Option<f64>,
        before: Tally,
        cost: f64,
        durable: Option<(Arc<Store>, [u8; 16])>,
    ) -> Ledger {
        Ledger {
            max_credits,
            min_balance,
            state: Mutex::new(LedgerState {
                job: before,
                this_run: 0,
                cost: micros(cost),
            }),
            durable,
        }
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
    fn reserve(&self) -> Result<u64, Halt> {
        self.update(|s| {
            let worst = s.cost;
            if let Some(max) = self.max_credits {
                if s.job.worst() + worst > micros(max) {
                    return Err(Halt::Budget(format!(
                        "the budget is reached: {} of --max-credits {} spent or committed; \
                         raise --max-credits to go further",
                        crate::schema::format_credits(credits(s.job.worst())),
                        crate::schema::format_credits(max)
                    )));
                }
            }
            s.job.reserved += worst;
            s.job.in_flight += 1;
            s.job.requests += 1;
            Ok(worst)
        })
        .map_err(|e| Halt::StoreFailed(format!("{e:#}")))?
    }

    /// Settles a request in flight with what it cost (`None`: unknown, so the worst case is
    /// kept as spent).
    fn settle(&self, reserved: u64, charged: Option<f64>) -> anyhow::Result<()> {
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
    fn abandon(&self, reserved: u64) {
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
    ///
    /// Each attempt counts in flight in the job's tally from the moment it is sent (after the
    /// limiter's wait) until its outcome is known; an answer is stored before it is settled,
    /// so a crash in between counts it at the worst case, never at less.
    async fn ask(&self, job: &Job) -> anyhow::Result<()> {
        let mut retry = 0;
        loop {
            tokio::select! {
                biased;
                _ = self.stop.cancelled() => return Ok(()),
                _ = self.limiter.acquire() => {}
            }
            let reserved = match self.ledger.reserve() {
                Ok(reserved) => reserved,
                Err(halt) => {
                    let failed = matches!(halt, Halt::StoreFailed(_));
                    self.set_halt(halt);
                    self.stop.cancel();
                    if failed {
                        anyhow::bail!("the job's spend could not be recorded");
                    }
                    return Ok(());
                }
            };
            self.counters.requests.fetch_add(1, Ordering::Relaxed);
            self.counters.in_flight.fetch_add(1, Ordering::Relaxed);
            let result = tokio::select! {
                biased;
                _ = self.abort.cancelled() => None,
                r = self.client.validate(&job.address, retry) => Some(r),
            };
            self.counters.in_flight.fetch_sub(1, Ordering::Relaxed);
            let Some(result) = result else {
                // Abandoned in flight: it may have been charged. It stays in flight in the
                // job's tally, so the next run announces it and counts it at the worst case.
                self.counters.maybe_charged.fetch_add(1, Ordering::Relaxed);
                self.ledger.abandon(reserved);
                return Ok(());
            };
            let error = match result {
                Ok(reply) => {
                    let charged = reply.body.credits_consumed.or(reply.meta.credits_cost);
                    self.follow(&reply.meta);
                    self.end_streak();
                    let answer = self.answer(reply, job);
                    self.store.put_async(&job.key, &answer).await?;
                    self.ledger.settle(reserved, Some(charged.unwrap_or(0.0)))?;
                    if let Some(cost) = charged.filter(|c| *c > 0.0) {
                        self.store.set_last_cost(cost)?;
                    }
                    self.resolve(job, Resolved::Answered(Arc::new(answer)));
                    return Ok(());
                }
                Err(error) => error,
            };
            self.ledger
                .settle(reserved, (!error.maybe_charged()).then_some(0.0))?;
            match &error {
                ApiError::KeyRejected { .. } => {
                    self.set_halt(Halt::KeyRejected(error.clone()));
                    self.abort.cancel();
                    self.stop.cancel();
                    return Ok(());
                }
                ApiError::Refused { .. } => {
                    self.set_halt(Halt::Refused(error.clone()));
                    self.abort.cancel();
                    self.stop.cancel();
                    return Ok(());
                }
                ApiError::OutOfCredits { .. } => {
                    self.set_halt(Halt::OutOfCredits(error.clone()));
                    self.stop.cancel();
                    return Ok(());
                }
                ApiError::Rejected { .. } => {
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
                    "the balance ({}) fell below --min-balance {}; top up, or lower \
                     --min-balance",
                    crate::schema::format_credits(balance),
                    crate::schema::format_credits(min)
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
