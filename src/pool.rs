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

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, Notify};
use tokio_util::sync::CancellationToken;

use crate::client::{ApiError, Client, Meta, Reply, Status, Verdict};
use crate::limiter::Limiter;
use crate::plan::{Job, Resolved};
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
    OutOfCredits(ApiError),
    TooManyFailures(String),
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
    halt: Mutex<Option<Halt>>,
    failures_in_a_row: AtomicU32,
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
            halt: Mutex::new(None),
            failures_in_a_row: AtomicU32::new(0),
        }
    }

    /// Why the pool stopped, if it stopped itself.
    pub fn halt(&self) -> Option<Halt> {
        self.halt.lock().map(|h| h.clone()).unwrap_or(None)
    }

    fn set_halt(&self, halt: Halt) {
        if let Ok(mut slot) = self.halt.lock() {
            // A rejected key outranks everything: nothing more can be done with it.
            if slot.is_none() || matches!(halt, Halt::KeyRejected(_)) {
                *slot = Some(halt);
            }
        }
    }

    /// One worker: takes jobs until the queue closes or the pool stops.
    pub async fn work(self: Arc<Self>, jobs: Arc<tokio::sync::Mutex<mpsc::Receiver<Job>>>) {
        loop {
            let job = tokio::select! {
                biased;
                _ = self.stop.cancelled() => return,
                job = async { jobs.lock().await.recv().await } => job,
            };
            let Some(job) = job else { return };
            if let Err(e) = self.ask(&job).await {
                // The store failed: nothing can be cached, so nothing more may be bought.
                tracing::error!("{e:#}");
                self.set_halt(Halt::TooManyFailures(format!("{e:#}")));
                self.stop.cancel();
                return;
            }
        }
    }

    /// Asks for one address until it has an answer, fails for good, or the pool stops. A job
    /// left unresolved is asked again by the next run.
    async fn ask(&self, job: &Job) -> anyhow::Result<()> {
        // The marker outlives a crash: the next run reports the request as maybe charged. It
        // reaches the disk with the next group commit (any worker's answer, moments later)
        // instead of costing a flush of its own before every request: a `kill -9` in between
        // can only under-count "maybe charged twice" by the requests sent since that commit.
        // The answer itself is still durable before its row is written (below).
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
                return Ok(());
            };
            let error = match result {
                Ok(reply) => {
                    self.follow(&reply.meta);
                    self.failures_in_a_row.store(0, Ordering::Relaxed);
                    let answer = self.answer(reply, job);
                    self.store.put(&job.key, &answer)?;
                    self.store.clear_in_flight(&job.key)?;
                    self.store.durable().await?;
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
                ApiError::Transient { .. } => {}
            }
            if error.maybe_charged() {
                self.counters.maybe_charged.fetch_add(1, Ordering::Relaxed);
            }
            retry += 1;
            let delay = self
                .policy
                .delay(retry, error.retry_after(), &mut rand::rng());
            let Some(delay) = delay else {
                let failures = self.failures_in_a_row.fetch_add(1, Ordering::Relaxed) + 1;
                if failures >= FAILURES_IN_A_ROW {
                    // Leave this job unresolved: the next run asks again.
                    self.set_halt(Halt::TooManyFailures(format!(
                        "{failures} requests in a row failed after {} attempts each; the last: {error}",
                        self.policy.max_retries + 1
                    )));
                    self.stop.cancel();
                    return Ok(());
                }
                if !error.maybe_charged() {
                    self.store.clear_in_flight(&job.key)?;
                }
                let message = format!(
                    "{error} (gave up after {} attempts)",
                    self.policy.max_retries + 1
                );
                self.resolve(job, Resolved::Failed(message.into()));
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
        }
        let now = tokio::time::Instant::now();
        if meta.rate_remaining == Some(0) {
            if let Some(reset) = meta.rate_reset.filter(|r| !r.is_zero()) {
                self.limiter
                    .pause_until(now + reset, "RateLimit-Remaining: 0");
            }
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
