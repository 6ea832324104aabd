//! The worker pool: a fixed number of long-lived tasks that take jobs from the planner's queue,
//! wait on the shared limiter, ask the API, retry what is worth retrying, cache every answer the
//! moment it is paid for, and send each outcome on to the writer.
//!
//! Concurrency and rate are separate knobs: the limiter decides when a request may go out, the
//! number of workers how many may be waiting for an answer at once (Little's law: rate ×
//! latency). The server's rate headers are the limiter's to follow ([`Limiter::follow`]); what
//! a run may spend is the [`Ledger`]'s; when to stop is the [`Stop`] controller's. The pool
//! only asks, through [`Ask`] (the real [`Client`], or a fake in the tests).
//!
//! A request that failed for good is held by the stop controller until a later answer shows
//! the API is up, or until no answer can come any more: nothing queued and nothing in a
//! worker's hands (the rows waiting on it may be what keeps the planner from queuing more, so
//! waiting longer would wait forever), or the work ended normally. Workers never touch files
//! other than through the store.

use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use tokio::sync::mpsc;

use crate::client::{ApiError, Client, Meta, Reply, Status, Verdict};
use crate::ledger::{Ledger, Refusal};
use crate::limiter::Limiter;
use crate::plan::{Job, Jobs, Resolved, Settled};
use crate::report::Counters;
use crate::retry::RetryPolicy;
use crate::stop::{Halt, Stop};
use crate::store::{Answer, Domain, Store};

/// Asks the API about one address: the one thing the pool needs of HTTP.
pub trait Ask: Send + Sync + 'static {
    /// One attempt (`retry`: how many came before it, for the logs).
    fn validate(
        &self,
        email: &str,
        retry: u32,
    ) -> impl Future<Output = Result<Reply<Verdict>, ApiError>> + Send;
}

impl Ask for Client {
    fn validate(
        &self,
        email: &str,
        retry: u32,
    ) -> impl Future<Output = Result<Reply<Verdict>, ApiError>> + Send {
        Client::validate(self, email, retry)
    }
}

/// What every worker shares.
pub struct Pool<A = Client> {
    pub api: A,
    pub limiter: Arc<Limiter>,
    pub store: Arc<Store>,
    pub policy: RetryPolicy,
    pub counters: Arc<Counters>,
    pub ledger: Arc<Ledger>,
    pub stop: Arc<Stop>,
    /// This run's id, stamped on every answer it pays for.
    pub run: u64,
    /// The price of a check this pool last recorded in the store ([`Store::set_last_cost`]).
    pub recorded_cost: std::sync::Mutex<Option<f64>>,
}

/// Runs `workers` workers until the queue closes or the pool stops. Every outcome goes to
/// `settled`; the channel closes when this returns, so the writer knows no more will come.
pub async fn run<A: Ask>(
    pool: Arc<Pool<A>>,
    workers: usize,
    jobs: Jobs,
    settled: mpsc::Sender<Settled>,
) {
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..workers {
        set.spawn(pool.clone().work(jobs.clone(), settled.clone()));
    }
    while set.join_next().await.is_some() {}
    if !pool.stop.stop.is_cancelled() {
        // Every job done and nothing stopped the pool: the failures held since the last answer
        // were not an outage. They are `error` rows.
        pool.release(&settled).await;
    }
}

impl<A: Ask> Pool<A> {
    /// One worker: takes jobs until the queue closes or the pool stops.
    async fn work(self: Arc<Self>, jobs: Jobs, settled: mpsc::Sender<Settled>) {
        loop {
            let job = tokio::select! {
                biased;
                _ = self.stop.stop.cancelled() => return,
                job = jobs.recv() => job,
            };
            let Some(job) = job else { return };
            if let Err(e) = self.ask(&job, &settled).await {
                // Every worker meets the same failure: the first one reports it, at the end.
                self.stop.halt(Halt::StoreFailed(format!("{e:#}")));
                return;
            }
            if jobs.done() && !self.stop.stop.is_cancelled() {
                // Nothing queued and nothing in hand: no answer can come to settle the failures
                // held so far.
                self.release(&settled).await;
            }
        }
    }

    /// Asks for one address until it has an answer, fails for good, or the pool stops. A job
    /// left unresolved is asked again by the next run.
    ///
    /// Each attempt counts in flight in the job's tally from the moment it is sent (after the
    /// limiter's wait) until its outcome is known; an answer is stored before it is settled,
    /// so a crash in between counts it at the worst case, never at less.
    async fn ask(&self, job: &Job, settled: &mpsc::Sender<Settled>) -> anyhow::Result<()> {
        let mut retry = 0;
        loop {
            let granted = tokio::select! {
                biased;
                _ = self.stop.stop.cancelled() => return Ok(()),
                granted = self.limiter.acquire() => granted,
            };
            let reserved = match self.ledger.reserve() {
                Ok(reserved) => reserved,
                Err(Refusal::OverBudget { committed, max }) => {
                    self.stop.halt(Halt::Budget(format!(
                        "the budget is reached: {} of --max-credits {} spent or committed; \
                         raise --max-credits to go further",
                        crate::schema::format_credits(committed),
                        crate::schema::format_credits(max)
                    )));
                    return Ok(());
                }
                Err(Refusal::Unrecorded(e)) => {
                    self.stop.halt(Halt::StoreFailed(format!("{e:#}")));
                    anyhow::bail!("the job's spend could not be recorded");
                }
            };
            self.counters.requests.fetch_add(1, Ordering::Relaxed);
            self.counters.in_flight.fetch_add(1, Ordering::Relaxed);
            let result = tokio::select! {
                biased;
                _ = self.stop.abort.cancelled() => None,
                r = self.api.validate(&job.address, retry) => Some(r),
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
                    self.release(settled).await;
                    let answer = self.answer(reply, job);
                    self.store.put_async(&job.key, &answer).await?;
                    self.ledger.settle(reserved, Some(charged.unwrap_or(0.0)))?;
                    if let Some(cost) = charged.filter(|c| *c > 0.0) {
                        // The store's copy is read and written only when the price changed
                        // since this pool last recorded it, not once per answer; under the
                        // lock, so the last price recorded is the last one seen.
                        let mut recorded = self
                            .recorded_cost
                            .lock()
                            .unwrap_or_else(std::sync::PoisonError::into_inner);
                        if *recorded != Some(cost) {
                            self.store.set_last_cost(cost)?;
                            *recorded = Some(cost);
                        }
                    }
                    send(settled, job.settled(Resolved::Answered(Arc::new(answer)))).await;
                    return Ok(());
                }
                Err(error) => error,
            };
            self.ledger
                .settle(reserved, (!error.maybe_charged()).then_some(0.0))?;
            match &error {
                ApiError::KeyRejected { .. } => {
                    self.stop.halt(Halt::KeyRejected(error.clone()));
                    return Ok(());
                }
                ApiError::Refused { .. } => {
                    self.stop.halt(Halt::Refused(error.clone()));
                    return Ok(());
                }
                ApiError::OutOfCredits { .. } => {
                    self.stop.halt(Halt::OutOfCredits(error.clone()));
                    return Ok(());
                }
                ApiError::Rejected { .. } => {
                    let failed = Resolved::Failed(error.to_string().into());
                    send(settled, job.settled(failed)).await;
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
            if let ApiError::RateLimited { .. } = error {
                // A 429 concerns every worker: the whole pool waits, then comes back slower.
                // Told even when this job gives up: the limiter would count it as admitted.
                let pause = delay.or(error.retry_after()).unwrap_or_default();
                self.limiter.rate_limited(granted, pause);
            }
            let Some(delay) = delay else {
                let attempts = self.policy.max_retries + 1;
                let message = format!("{error} (gave up after {attempts} attempts)");
                // Held: an outage leaves it unresolved, for the next run to ask again.
                self.stop
                    .hold(job.settled(Resolved::Failed(message.into())), |failures| {
                        format!(
                            "{failures} requests in a row failed after {attempts} attempts \
                             each; the last: {error}"
                        )
                    });
                return Ok(());
            };
            self.counters.retries.fetch_add(1, Ordering::Relaxed);
            tracing::debug!("retry {retry} in {delay:?}: {error}");
            tokio::select! {
                biased;
                _ = self.stop.stop.cancelled() => return Ok(()),
                _ = tokio::time::sleep(delay) => {}
            }
        }
    }

    /// Sends the held failures on, as `error` rows (see [`Stop::release`]).
    async fn release(&self, settled: &mpsc::Sender<Settled>) {
        for failed in self.stop.release() {
            send(settled, failed).await;
        }
    }

    /// Follows an answer's headers: the rate ones are the limiter's, the balance is shown and
    /// checked against `--min-balance`.
    fn follow(&self, meta: &Meta) {
        self.limiter.follow(meta);
        if let Some(balance) = meta.credits_remaining {
            self.counters.set_balance(balance);
            if let Some(min) = self.ledger.min_balance.filter(|min| balance < *min) {
                self.stop.halt(Halt::Budget(format!(
                    "the balance ({}) fell below --min-balance {}; top up, or lower \
                     --min-balance",
                    crate::schema::format_credits(balance),
                    crate::schema::format_credits(min)
                )));
            }
        }
        if let Some(left) = meta.daily_remaining {
            self.counters.daily_left.store(left, Ordering::Relaxed);
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
            domain: Arc::new(Domain {
                mx_provider: body.mx_provider,
                mx_record: body.mx_record,
                company: body.company,
            }),
            is_catch_all: body.is_domain_catch_all,
            credits: body.credits_consumed.or(meta.credits_cost).unwrap_or(0.0),
            checked_at: crate::clock::now(),
            run: self.run,
            first_row: job.pending.first_row,
        }
    }
}

/// Hands an outcome to the writer. Gone only when the writer failed, which ends the run anyway.
async fn send(settled: &mpsc::Sender<Settled>, outcome: Settled) {
    let _ = settled.send(outcome).await;
}

#[cfg(test)]
mod tests {
    use std::collections::{HashMap, VecDeque};
    use std::sync::Mutex;
    use std::time::Duration;

    use super::*;
    use crate::limiter::{FollowServer, Rate};
    use crate::plan::{self, Pending};
    use crate::store::Tally;

    type Outcome = Result<Reply<Verdict>, ApiError>;

    /// The API, scripted: each address answers what its script says next, at once; past its
    /// script, a valid answer costing one credit, after `latency`.
    #[derive(Default)]
    struct Fake {
        script: Mutex<HashMap<String, VecDeque<Outcome>>>,
        asked: Mutex<Vec<String>>,
        latency: Duration,
        wall: Option<Wall>,
    }

    /// A hard limit like the mock's: `limit` admitted in any sliding `window`, a 429 beyond
    /// it with `Retry-After` in whole seconds until the oldest admission leaves the window.
    #[derive(Default)]
    struct Wall {
        limit: usize,
        window: Duration,
        admitted: Mutex<VecDeque<tokio::time::Instant>>,
        refused: std::sync::atomic::AtomicUsize,
    }

    /// The API behind a hard limit of `limit` a second, answering in 5 ms.
    fn behind_a_wall(limit: usize) -> Fake {
        Fake {
            latency: Duration::from_millis(5),
            wall: Some(Wall {
                limit,
                window: Duration::from_secs(1),
                ..Wall::default()
            }),
            ..Fake::default()
        }
    }

    impl Wall {
        fn arrive(&self) -> Result<(), Duration> {
            let now = tokio::time::Instant::now();
            let mut admitted = self.admitted.lock().unwrap();
            while admitted.front().is_some_and(|t| now - *t >= self.window) {
                admitted.pop_front();
            }
            if admitted.len() < self.limit {
                admitted.push_back(now);
                return Ok(());
            }
            self.refused.fetch_add(1, Ordering::Relaxed);
            let until = admitted
                .front()
                .map_or(self.window, |t| *t + self.window - now);
            Err(Duration::from_secs(
                until.as_secs_f64().ceil().max(1.0) as u64
            ))
        }
    }

    impl Fake {
        fn answers(self, address: &str, outcomes: impl IntoIterator<Item = Outcome>) -> Fake {
            self.script
                .lock()
                .unwrap()
                .insert(address.to_owned(), outcomes.into_iter().collect());
            self
        }

        fn asked(&self, address: &str) -> usize {
            self.asked
                .lock()
                .unwrap()
                .iter()
                .filter(|a| *a == address)
                .count()
        }
    }

    impl Ask for Fake {
        fn validate(
            &self,
            email: &str,
            _retry: u32,
        ) -> impl Future<Output = Result<Reply<Verdict>, ApiError>> + Send {
            self.asked.lock().unwrap().push(email.to_owned());
            let scripted = self
                .script
                .lock()
                .unwrap()
                .get_mut(email)
                .and_then(VecDeque::pop_front);
            let latency = self.latency;
            let refused = self.wall.as_ref().and_then(|wall| wall.arrive().err());
            async move {
                match (scripted, refused) {
                    (Some(next), _) => next,
                    (None, Some(retry_after)) => {
                        tokio::time::sleep(latency).await;
                        Err(ApiError::RateLimited {
                            retry_after: Some(retry_after),
                            message: "HTTP 429".into(),
                            meta: Box::default(),
                        })
                    }
                    (None, None) => {
                        tokio::time::sleep(latency).await;
                        valid(1.0)
                    }
                }
            }
        }
    }

    fn valid(credits: f64) -> Outcome {
        Ok(Reply {
            body: Verdict {
                status: Some(Status::Valid),
                credits_consumed: Some(credits),
                ..Verdict::default()
            },
            meta: Meta::default(),
        })
    }

    fn transient() -> Outcome {
        Err(ApiError::Transient {
            message: "HTTP 503".into(),
            maybe_charged: false,
            retry_after: None,
        })
    }

    const JOB: [u8; 16] = [7; 16];

    struct Run {
        pool: Arc<Pool<Fake>>,
        _dir: tempfile::TempDir,
    }

    fn pool(fake: Fake, max_credits: Option<f64>) -> Run {
        pool_at(fake, max_credits, Rate::UNLIMITED, 2)
    }

    fn pool_at(fake: Fake, max_credits: Option<f64>, rate: Rate, max_retries: u32) -> Run {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(dir.path()).unwrap());
        let ledger = Ledger::open(
            max_credits,
            None,
            Tally::default(),
            1.0,
            Some((store.clone(), JOB)),
        )
        .unwrap();
        let pool = Pool {
            recorded_cost: Default::default(),
            api: fake,
            limiter: Arc::new(Limiter::new(rate, FollowServer::CapOnly)),
            store,
            policy: RetryPolicy {
                max_retries,
                base: Duration::from_millis(100),
                cap: Duration::from_secs(1),
            },
            counters: Arc::new(Counters::new()),
            ledger: Arc::new(ledger),
            stop: Arc::new(Stop::new()),
            run: 1,
        };
        Run {
            pool: Arc::new(pool),
            _dir: dir,
        }
    }

    /// Queues one job per address (the first row of each is its index), runs the pool with
    /// `workers` to the end, and returns each job's outcome as the writer would see it.
    async fn ask_all(run: &Run, addresses: &[&str], workers: usize) -> Vec<Option<Resolved>> {
        let (queue, jobs) = plan::job_queue(workers);
        let (settled_tx, mut settled) = mpsc::channel(addresses.len() + 1);
        let task = tokio::spawn(super::run(run.pool.clone(), workers, jobs, settled_tx));
        let mut pending = Vec::new();
        for (row, address) in addresses.iter().enumerate() {
            let job = Job {
                key: run.pool.store.key(address),
                address: (*address).to_owned(),
                pending: Arc::new(Pending::new(row as u64)),
            };
            pending.push(job.pending.clone());
            if !queue.send(job).await {
                break;
            }
        }
        drop(queue);
        task.await.unwrap();
        // The channel closes once the pool is done: every outcome is in.
        while let Some(outcome) = settled.recv().await {
            outcome.apply();
        }
        pending.iter().map(|p| p.get().cloned()).collect()
    }

    fn answered(outcome: &Option<Resolved>) -> bool {
        matches!(outcome, Some(Resolved::Answered(_)))
    }

    #[tokio::test(start_paused = true)]
    async fn a_transient_failure_is_retried_and_the_answer_stored() {
        let fake = Fake::default().answers("a@x.com", [transient(), transient(), valid(1.0)]);
        let run = pool(fake, None);
        let outcomes = ask_all(&run, &["a@x.com"], 1).await;
        assert!(answered(&outcomes[0]), "{outcomes:?}");
        assert_eq!(run.pool.api.asked("a@x.com"), 3);
        let stored = run.pool.store.get(&run.pool.store.key("a@x.com")).unwrap();
        assert_eq!(stored.map(|a| (a.run, a.first_row)), Some((1, 0)));
        assert_eq!(run.pool.counters.retries.load(Ordering::Relaxed), 2);
        assert_eq!(run.pool.ledger.spent(), 1.0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_failure_for_good_is_held_until_an_answer_shows_the_api_is_up() {
        let gone = [transient(), transient(), transient()];
        let fake = Fake::default().answers("down@x.com", gone);
        let run = pool(fake, None);
        let outcomes = ask_all(&run, &["down@x.com", "up@x.com"], 1).await;
        assert!(
            matches!(&outcomes[0], Some(Resolved::Failed(m)) if m.contains("gave up after 3 attempts")),
            "{outcomes:?}"
        );
        assert!(answered(&outcomes[1]));
        assert!(run.pool.stop.reason().is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn after_a_429_the_pool_comes_back_at_what_the_server_admitted() {
        // The faults test's case, on the paused clock: a server that admits 20 a second
        // whatever its headers say, 100 rows, 256 workers, our rate far above the server's.
        // Pausing alone ran into the wall again after every pause: 32 429s at 100,000/min,
        // 8 now. Unlimited sends all 100 at once, so 80 are refused before any 429 is back.
        let fast = Rate {
            per_minute: 100_000,
        };
        for (rate, most) in [(fast, 10), (Rate::UNLIMITED, 82)] {
            let run = pool_at(behind_a_wall(20), None, rate, 8);
            let addresses: Vec<String> = (0..100).map(|i| format!("u{i}@x.com")).collect();
            let addresses: Vec<&str> = addresses.iter().map(String::as_str).collect();
            let outcomes = ask_all(&run, &addresses, 256).await;
            assert!(outcomes.iter().all(answered), "{rate}: {outcomes:?}");
            let wall = run.pool.api.wall.as_ref().unwrap();
            let refused = wall.refused.load(Ordering::Relaxed);
            assert!((1..=most).contains(&refused), "{rate}: {refused} 429s");
            // The server's 1,200/min, or a little below (1,175 and 1,194 here).
            let learned = run.pool.limiter.rate().per_minute;
            assert!((1_100..=1_200).contains(&learned), "{rate}: {learned}/min");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_server_that_refuses_everything_is_given_up_on_as_before() {
        // Nothing is ever admitted, so nothing is learned: the pool does not crawl towards
        // 1/min, it retries on the server's word and halts after the failures in a row.
        let rate = Rate { per_minute: 3_000 };
        let run = pool_at(behind_a_wall(0), None, rate, 5);
        let addresses: Vec<String> = (0..100).map(|i| format!("u{i}@x.com")).collect();
        let addresses: Vec<&str> = addresses.iter().map(String::as_str).collect();
        let start = tokio::time::Instant::now();
        let outcomes = ask_all(&run, &addresses, 256).await;
        assert!(matches!(
            run.pool.stop.reason(),
            Some(Halt::TooManyFailures(_))
        ));
        assert!(outcomes.iter().all(Option::is_none), "{outcomes:?}");
        assert_eq!(run.pool.limiter.rate(), rate);
        // 10 jobs in a row failing after 6 attempts each ends it. Every second's pause lets
        // the limiter's burst of 5 out: 102.5 s here, as with pausing alone.
        let took = start.elapsed();
        assert!(took < Duration::from_secs(120), "{took:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn too_many_failures_in_a_row_halt_and_leave_them_unresolved() {
        let mut fake = Fake::default();
        let addresses: Vec<String> = (0..12).map(|i| format!("u{i}@x.com")).collect();
        for address in &addresses {
            fake = fake.answers(address, [transient(), transient(), transient()]);
        }
        let run = pool(fake, None);
        let addresses: Vec<&str> = addresses.iter().map(String::as_str).collect();
        let outcomes = ask_all(&run, &addresses, 1).await;
        assert!(matches!(
            run.pool.stop.reason(),
            Some(Halt::TooManyFailures(_))
        ));
        assert!(
            outcomes.iter().all(Option::is_none),
            "the next run asks them again: {outcomes:?}"
        );
        assert_eq!(run.pool.api.asked.lock().unwrap().len(), 30);
    }

    #[tokio::test(start_paused = true)]
    async fn the_store_keeps_the_last_price_seen_while_it_changes() {
        let fake = Fake::default()
            .answers("a@x.com", [valid(0.05)])
            .answers("b@x.com", [valid(0.05)])
            .answers("c@x.com", [valid(0.25)])
            .answers("d@x.com", [valid(0.0)])
            .answers("e@x.com", [valid(0.05)])
            .answers("f@x.com", [valid(0.25)]);
        let run = pool(fake, None);
        let store = run.pool.store.clone();
        assert_eq!(store.last_cost(), None);
        for (address, want) in [
            ("a@x.com", 0.05),
            ("b@x.com", 0.05),
            ("c@x.com", 0.25),
            // A free answer says nothing of the price.
            ("d@x.com", 0.25),
            ("e@x.com", 0.05),
            ("f@x.com", 0.25),
        ] {
            ask_all(&run, &[address], 1).await;
            assert_eq!(store.last_cost(), Some(want), "after {address}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_budget_stops_new_requests_before_they_are_sent() {
        let run = pool(Fake::default(), Some(2.0));
        let outcomes = ask_all(&run, &["a@x.com", "b@x.com", "c@x.com"], 1).await;
        assert!(answered(&outcomes[0]) && answered(&outcomes[1]));
        assert!(outcomes[2].is_none());
        assert_eq!(run.pool.api.asked("c@x.com"), 0);
        assert!(matches!(run.pool.stop.reason(), Some(Halt::Budget(_))));
        assert_eq!(run.pool.ledger.spent(), 2.0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_rejected_key_aborts_at_once_and_out_of_credits_lets_the_rest_finish() {
        let rejected = Err(ApiError::KeyRejected {
            message: "bad key".into(),
        });
        let fake = Fake {
            latency: Duration::from_secs(1),
            ..Fake::default()
        }
        .answers("first@x.com", [rejected]);
        let run = pool(fake, None);
        let outcomes = ask_all(&run, &["slow@x.com", "first@x.com"], 2).await;
        assert!(matches!(run.pool.stop.reason(), Some(Halt::KeyRejected(_))));
        assert!(run.pool.stop.abort.is_cancelled());
        // The other request, in flight at the same moment, is abandoned: it may be charged.
        assert!(outcomes.iter().all(Option::is_none), "{outcomes:?}");
        assert_eq!(run.pool.counters.maybe_charged.load(Ordering::Relaxed), 1);

        let broke = Err(ApiError::OutOfCredits {
            message: "no credits".into(),
        });
        let fake = Fake {
            latency: Duration::from_secs(1),
            ..Fake::default()
        }
        .answers("first@x.com", [broke]);
        let run = pool(fake, None);
        let outcomes = ask_all(&run, &["slow@x.com", "first@x.com", "never@x.com"], 2).await;
        assert!(matches!(
            run.pool.stop.reason(),
            Some(Halt::OutOfCredits(_))
        ));
        assert!(!run.pool.stop.abort.is_cancelled());
        assert!(answered(&outcomes[0]), "in flight, so it finishes");
        assert!(outcomes[1].is_none() && outcomes[2].is_none());
        assert_eq!(run.pool.api.asked("never@x.com"), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_counts_in_flight_from_its_sending_until_its_answer_is_stored() {
        let fake = Fake {
            latency: Duration::from_secs(10),
            ..Fake::default()
        };
        let run = pool(fake, None);
        let asking = {
            let run_pool = run.pool.clone();
            tokio::spawn(async move {
                let (queue, jobs) = plan::job_queue(1);
                let (tx, _rx) = mpsc::channel(4);
                let job = Job {
                    key: run_pool.store.key("a@x.com"),
                    address: "a@x.com".into(),
                    pending: Arc::new(Pending::new(0)),
                };
                assert!(queue.send(job).await);
                drop(queue);
                super::run(run_pool, 1, jobs, tx).await;
            })
        };
        tokio::time::sleep(Duration::from_secs(5)).await;
        let store = &run.pool.store;
        let tally = store.tally(&JOB).unwrap();
        assert_eq!(
            (tally.in_flight, tally.reserved, tally.spent),
            (1, 1_000_000, 0)
        );
        assert_eq!(run.pool.counters.in_flight.load(Ordering::Relaxed), 1);
        asking.await.unwrap();
        let tally = store.tally(&JOB).unwrap();
        assert_eq!(
            (tally.in_flight, tally.reserved, tally.spent),
            (0, 0, 1_000_000)
        );
        assert!(store.get(&store.key("a@x.com")).unwrap().is_some());
    }

    #[tokio::test(start_paused = true)]
    async fn rows_asking_the_same_address_share_one_request() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(dir.path()).unwrap());
        let mut planner = crate::plan::Planner::new(
            store.clone(),
            1,
            crate::plan::Freshness {
                max_age: Duration::MAX,
                max_age_unknown: Duration::MAX,
                max_age_catch_all: Duration::MAX,
                refresh: false,
            },
            0,
            16,
        );
        let mut jobs = Vec::new();
        let rows: Vec<_> = ["a@x.com", "A@X.COM", "b@x.com; a@x.com"]
            .iter()
            .enumerate()
            .map(|(seq, cell)| {
                planner
                    .plan_row(seq as u64, crate::input::Row::of_email(cell), &mut jobs)
                    .unwrap()
            })
            .collect();
        assert_eq!(jobs.len(), 2, "a@x.com once, b@x.com once");
        let run = pool(Fake::default(), None);
        let (queue, receiver) = plan::job_queue(2);
        let (tx, mut settled) = mpsc::channel(4);
        let task = tokio::spawn(super::run(run.pool.clone(), 2, receiver, tx));
        for job in jobs {
            assert!(queue.send(job).await);
        }
        drop(queue);
        task.await.unwrap();
        while let Some(outcome) = settled.recv().await {
            outcome.apply();
        }
        assert_eq!(run.pool.api.asked("a@x.com"), 1);
        let sources: Vec<_> = rows
            .iter()
            .map(|r| match r.outcome() {
                Some(crate::plan::Outcome::Answer { source, .. }) => Some(source),
                _ => None,
            })
            .collect();
        use crate::plan::Source::{Api, Duplicate};
        assert_eq!(sources, [Some(Api), Some(Duplicate), Some(Api)]);
    }
}
