//! The plan: what each row needs before any money is spent.
//!
//! Per row, in input order: extract and check the address; empty → `missing`, failing the
//! local syntax check → `invalid` (source `syntax`), asked already in this run → share that
//! answer (one request, many rows, also while the request is in flight), a fresh answer in
//! the store → use it (source `cache`), otherwise → one job for the worker pool.
//!
//! A cell holding several addresses ([`crate::cell`]) is decided address by address, each
//! exactly as a one-address cell would be (so an address is paid for once across the file
//! and across runs, whichever cells hold it); the row waits for all of them and shows the
//! best ([`Outcome::rank`]).
//!
//! The planner holds no per-address memory beyond the requests in flight: in-run duplicates
//! are found through the store, where every answer lands the moment it is paid for, tagged
//! with the run and the row that asked. So memory stays flat however long the file is, and a
//! resumed run tells its own answers (`api`, `duplicate`) from an earlier run's (`cache`)
//! exactly as the uninterrupted run would have.

use foldhash::{HashMap, HashMapExt};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::address::{self, Checked};
use crate::cell;
use crate::client::Status;
use crate::input::Row;
use crate::store::{Answer, CacheKey, Found, Store};

/// Where a row's verdict came from (the `source` column).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    Api,
    Cache,
    Duplicate,
    Syntax,
    Empty,
}

impl Source {
    pub const ALL: [Source; 5] = [
        Source::Api,
        Source::Cache,
        Source::Duplicate,
        Source::Syntax,
        Source::Empty,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Source::Api => "api",
            Source::Cache => "cache",
            Source::Duplicate => "duplicate",
            Source::Syntax => "syntax",
            Source::Empty => "empty",
        }
    }
}

/// A row's verdict, once known.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// No address in the cell (`missing`).
    Empty,
    /// Failed the local syntax check (`invalid`, never sent).
    Syntax(&'static str),
    /// An answer from the API, now or earlier.
    Answer { answer: Arc<Answer>, source: Source },
    /// The request failed for good (`error`): retries ran out, or the API refused it.
    Error { message: Arc<str> },
}

impl Outcome {
    /// How good a verdict is for the row (higher is better): the row shows its best address.
    ///
    /// valid > valid_catch_all > catch_all > unknown (and statuses this version does not know) >
    /// error (no answer yet: `--retry-errors` asks again) > invalid (from the API or the syntax
    /// check alike) > missing. Between equals, the first in the cell wins.
    pub fn rank(&self) -> u8 {
        match self {
            Outcome::Answer { answer, .. } => match answer.status {
                Some(Status::Valid) => 7,
                Some(Status::ValidCatchAll) => 6,
                Some(Status::CatchAll) => 5,
                Some(Status::Invalid) => 2,
                Some(Status::Unknown | Status::Other(_)) | None => 4,
            },
            Outcome::Error { .. } => 3,
            Outcome::Syntax(_) => 2,
            Outcome::Empty => 0,
        }
    }
}

/// What a request ends in, shared by every row that waits for it.
#[derive(Debug, Clone)]
pub enum Resolved {
    Answered(Arc<Answer>),
    Failed(Arc<str>),
}

/// A request in flight; the rows asking the same address hold the same `Pending`. The writer
/// records its outcome when the pool settles it ([`Settled`]), and every row holding it sees it.
#[derive(Debug)]
pub struct Pending {
    /// The row that asked first: its source is `api`, the others' `duplicate`.
    pub first_row: u64,
    cell: OnceLock<Resolved>,
}

impl Pending {
    pub fn new(first_row: u64) -> Pending {
        Pending {
            first_row,
            cell: OnceLock::new(),
        }
    }

    /// Records the outcome; later calls are ignored (there is only one request).
    pub fn resolve(&self, resolved: Resolved) {
        let _ = self.cell.set(resolved);
    }

    pub fn get(&self) -> Option<&Resolved> {
        self.cell.get()
    }

    /// The outcome as seen by row `row`.
    pub fn outcome_for(&self, row: u64) -> Option<Outcome> {
        Some(match self.get()? {
            Resolved::Answered(answer) => Outcome::Answer {
                answer: answer.clone(),
                source: if row == self.first_row {
                    Source::Api
                } else {
                    Source::Duplicate
                },
            },
            Resolved::Failed(message) => Outcome::Error {
                message: message.clone(),
            },
        })
    }
}

/// A row and what it waits for, on its way to the writer.
#[derive(Debug)]
pub struct Planned {
    /// Data row number, 0-based, stable across resumes.
    pub seq: u64,
    pub row: Row,
    /// The address as sent (or as read, when it failed the check); empty when missing. In a
    /// cell with several addresses, the first.
    pub normalized: String,
    pub slot: Slot,
    /// A cell with several addresses: the others planned, in cell order, each once (empty
    /// for a cell with one address).
    pub others: Vec<(String, Slot)>,
}

#[derive(Debug)]
pub enum Slot {
    Ready(Outcome),
    Wait(Arc<Pending>),
}

impl Planned {
    /// The row's outcome once every address it waits for has one: the best of them.
    pub fn outcome(&self) -> Option<Outcome> {
        if self.others.is_empty() {
            return self.outcome_of(&self.slot);
        }
        self.best().map(|(_, outcome)| outcome)
    }

    /// The outcome of one of this row's slots, if known by now.
    pub fn outcome_of(&self, slot: &Slot) -> Option<Outcome> {
        match slot {
            Slot::Ready(outcome) => Some(outcome.clone()),
            Slot::Wait(pending) => pending.outcome_for(self.seq),
        }
    }

    /// The row's addresses and their slots, in cell order.
    pub fn addresses(&self) -> impl Iterator<Item = (&str, &Slot)> {
        std::iter::once((self.normalized.as_str(), &self.slot))
            .chain(self.others.iter().map(|(a, s)| (a.as_str(), s)))
    }

    /// Once every address has its outcome: the one the row shows (the best, the first of
    /// equals; see [`Outcome::rank`]), as an index into [`Planned::addresses`], and its outcome.
    pub fn best(&self) -> Option<(usize, Outcome)> {
        let mut best: Option<(usize, Outcome)> = None;
        for (i, (_, slot)) in self.addresses().enumerate() {
            let outcome = self.outcome_of(slot)?;
            if best.as_ref().is_none_or(|(_, b)| outcome.rank() > b.rank()) {
                best = Some((i, outcome));
            }
        }
        best
    }
}

/// A request for the worker pool.
#[derive(Debug)]
pub struct Job {
    pub key: CacheKey,
    /// The normalised address to send.
    pub address: String,
    pub pending: Arc<Pending>,
}

impl Job {
    /// The job's outcome, for the writer.
    pub fn settled(&self, resolved: Resolved) -> Settled {
        Settled {
            pending: self.pending.clone(),
            resolved,
        }
    }
}

/// A request's outcome, on its way from the pool to the writer.
#[derive(Debug)]
pub struct Settled {
    pub pending: Arc<Pending>,
    pub resolved: Resolved,
}

impl Settled {
    /// Records the outcome for every row waiting for the request.
    pub fn apply(self) {
        self.pending.resolve(self.resolved);
    }
}

/// The queue from the planner to the worker pool: bounded, many workers taking from it. It
/// counts the jobs not yet done, queued or in a worker's hands: when none is left, no answer
/// can come until the planner queues more (see [`crate::pool`]).
pub fn job_queue(capacity: usize) -> (Queue, Jobs) {
    let (tx, rx) = async_channel::bounded(capacity.max(1));
    let open = Arc::new(AtomicUsize::new(0));
    (
        Queue {
            tx,
            open: open.clone(),
        },
        Jobs { rx, open },
    )
}

/// The planner's end of the job queue.
pub struct Queue {
    tx: async_channel::Sender<Job>,
    open: Arc<AtomicUsize>,
}

impl Queue {
    /// Queues a job, waiting while the queue is full. False: the pool is gone.
    pub async fn send(&self, job: Job) -> bool {
        /// Uncounts a job that did not make it into the queue (refused, or the send dropped).
        struct Uncount<'a>(&'a AtomicUsize);
        impl Drop for Uncount<'_> {
            fn drop(&mut self) {
                self.0.fetch_sub(1, Ordering::AcqRel);
            }
        }
        // Counted before a worker can take it, so the count never reads empty while a job is
        // on its way to a worker.
        self.open.fetch_add(1, Ordering::AcqRel);
        let uncount = Uncount(&self.open);
        let sent = self.tx.send(job).await.is_ok();
        if sent {
            // Counted until a worker is done with it (`Jobs::done`).
            std::mem::forget(uncount);
        }
        sent
    }
}

/// The workers' end of the job queue.
#[derive(Clone)]
pub struct Jobs {
    rx: async_channel::Receiver<Job>,
    open: Arc<AtomicUsize>,
}

impl Jobs {
    /// The next job; `None` once the planner is done and the queue empty.
    pub async fn recv(&self) -> Option<Job> {
        self.rx.recv().await.ok()
    }

    /// A worker is done with a job. True when that leaves none queued or in hand.
    pub fn done(&self) -> bool {
        self.open.fetch_sub(1, Ordering::AcqRel) == 1
    }
}

/// How long answers stay good.
#[derive(Debug, Clone, Copy)]
pub struct Freshness {
    pub max_age: Duration,
    /// `unknown` is free and usually transient: asked again sooner.
    pub max_age_unknown: Duration,
    /// `catch_all` is free too.
    pub max_age_catch_all: Duration,
    /// Ignore earlier runs' answers altogether.
    pub refresh: bool,
}

impl Freshness {
    pub fn is_fresh(&self, answer: &Answer, now: i64) -> bool {
        self.is_fresh_at(answer.status.as_ref(), answer.checked_at, now)
    }

    /// [`Freshness::is_fresh`] of an answer with this status, checked at `checked_at`.
    pub fn is_fresh_at(&self, status: Option<&Status>, checked_at: i64, now: i64) -> bool {
        if self.refresh {
            return false;
        }
        let limit = match status {
            Some(Status::Unknown) | None => self.max_age_unknown.min(self.max_age),
            Some(Status::CatchAll) => self.max_age_catch_all.min(self.max_age),
            _ => self.max_age,
        };
        let age = now.saturating_sub(checked_at).max(0) as u64;
        age <= limit.as_secs()
    }
}

/// Counts the planner keeps (the writer counts statuses).
#[derive(Debug, Default, Clone, Copy)]
pub struct PlanCounts {
    pub jobs: u64,
}

/// The part of planning that needs no memory of earlier rows, so it runs ahead of the planner
/// on the reader's thread (issue 15: on a run answered from the store this half of a row's
/// work ran on the same runtime worker as the writer, so the two shared one core): each
/// address checked, its key derived, and the slot the store holds for it read, a batch of
/// rows at a time. The planner decodes what was found and uses it if it can (an answer does
/// not leave the store during a run); where nothing usable was found it asks the store
/// again, since an answer of this run may have landed in between.
#[derive(Clone)]
pub struct Lookup {
    store: Arc<Store>,
    run: u64,
    freshness: Freshness,
    now: i64,
    /// What the address check lets through (`--allow-unknown-tld`).
    rules: address::Rules,
}

/// A row with its addresses checked and looked up ([`Lookup::row`]), for the planner.
pub struct Looked {
    row: Row,
    addresses: Addresses,
}

enum Addresses {
    One(Ahead),
    /// A cell with several addresses: the first ones, each once, in cell order.
    Several(Vec<Ahead>),
}

/// One address as the lookup left it.
enum Ahead {
    /// Empty, or failing the syntax check: decided already.
    Decided(String, Outcome),
    Valid {
        normalized: String,
        key: CacheKey,
        /// The store's slot for the key, if it had one (decoded by the planner: the reader
        /// thread is the busier one on a run answered from the store).
        found: Option<Found>,
    },
}

impl Lookup {
    /// One row, checked and looked up.
    pub fn row(&self, row: Row) -> Looked {
        let mut looked = self.check(row);
        self.find(&mut looked);
        looked
    }

    /// A batch of rows: every address checked and its slots asked for first, then each looked
    /// up, so the batch's reads from the answer tables overlap.
    pub fn rows(&self, rows: Vec<Row>) -> Vec<Looked> {
        let mut looked: Vec<Looked> = rows.into_iter().map(|row| self.check(row)).collect();
        for row in &mut looked {
            self.find(row);
        }
        looked
    }

    /// The row's addresses checked, each valid one's key derived and its slots prefetched.
    fn check(&self, row: Row) -> Looked {
        let addresses = match cell::of_row(&row) {
            None => Addresses::One(self.address(match &row.email {
                Some(cell) => address::check_with(cell, self.rules),
                None => Checked::Empty,
            })),
            Some(pieces) => Addresses::Several(
                cell::checked(pieces, self.rules)
                    .into_iter()
                    .map(|checked| self.address(checked))
                    .collect(),
            ),
        };
        Looked { row, addresses }
    }

    fn address(&self, checked: Checked) -> Ahead {
        match checked {
            Checked::Empty => Ahead::Decided(String::new(), Outcome::Empty),
            Checked::Invalid { normalized, reason } => {
                Ahead::Decided(normalized, Outcome::Syntax(reason))
            }
            Checked::Valid(address) => {
                let key = self.store.key(&address.key);
                self.store.prefetch(&key);
                Ahead::Valid {
                    normalized: address.normalized,
                    key,
                    found: None,
                }
            }
        }
    }

    /// Fetches the slots the store holds for the row's addresses.
    fn find(&self, looked: &mut Looked) {
        let aheads = match &mut looked.addresses {
            Addresses::One(ahead) => std::slice::from_mut(ahead),
            Addresses::Several(aheads) => aheads.as_mut_slice(),
        };
        for ahead in aheads {
            if let Ahead::Valid { key, found, .. } = ahead {
                // A store that cannot be read is left to the planner: it looks again, and
                // reports the error in its place in the run.
                *found = self.store.find(key).ok().flatten();
            }
        }
    }

    /// Where a stored answer's verdict comes from for row `seq`; `None`: it is too old to use.
    fn source(&self, answer: &Answer, seq: u64) -> Option<Source> {
        if answer.run == self.run {
            // Answered in this run (before a crash, or earlier in the file).
            if answer.first_row >= seq {
                Some(Source::Api)
            } else {
                Some(Source::Duplicate)
            }
        } else if self.freshness.is_fresh(answer, self.now) {
            Some(Source::Cache)
        } else {
            None
        }
    }
}

/// The planner's state: the lookup's settings, and the requests in flight.
pub struct Planner {
    lookup: Lookup,
    in_flight: HashMap<CacheKey, Arc<Pending>>,
    /// Past this many entries, resolved ones are swept (their answers are in the store).
    sweep_at: usize,
    pub counts: PlanCounts,
}

impl Planner {
    pub fn new(store: Arc<Store>, run: u64, freshness: Freshness, now: i64, window: usize) -> Self {
        Planner {
            lookup: Lookup {
                store,
                run,
                freshness,
                now,
                rules: address::Rules::default(),
            },
            in_flight: HashMap::new(),
            sweep_at: window.max(64) * 2,
            counts: PlanCounts::default(),
        }
    }

    /// Checks addresses with these rules instead of the default (strict) ones.
    pub fn with_rules(mut self, rules: address::Rules) -> Self {
        self.lookup.rules = rules;
        self
    }

    /// The half of planning that can run ahead, on another thread.
    pub fn lookup(&self) -> Lookup {
        self.lookup.clone()
    }

    /// Decides one row: returns the planned row, and puts the requests to send in `jobs`.
    pub fn plan(
        &mut self,
        seq: u64,
        looked: Looked,
        jobs: &mut Vec<Job>,
    ) -> anyhow::Result<Planned> {
        let Looked { row, addresses } = looked;
        let (normalized, slot, others) = match addresses {
            Addresses::One(ahead) => {
                let (normalized, slot) = self.decide(seq, ahead, jobs)?;
                (normalized, slot, Vec::new())
            }
            Addresses::Several(aheads) => {
                let mut planned = Vec::with_capacity(aheads.len());
                for ahead in aheads {
                    planned.push(self.decide(seq, ahead, jobs)?);
                }
                let mut planned = planned.into_iter();
                let (normalized, slot) = planned
                    .next()
                    .unwrap_or((String::new(), Slot::Ready(Outcome::Empty)));
                (normalized, slot, planned.collect())
            }
        };
        Ok(Planned {
            seq,
            row,
            normalized,
            slot,
            others,
        })
    }

    /// [`Planner::plan`] with the lookup done here (for tests).
    #[cfg(test)]
    pub fn plan_row(&mut self, seq: u64, row: Row, jobs: &mut Vec<Job>) -> anyhow::Result<Planned> {
        let looked = self.lookup.row(row);
        self.plan(seq, looked, jobs)
    }

    /// One address: its text for the output and how its verdict comes. (Inlined: the
    /// one-address path stays as fast as it was.)
    #[inline(always)]
    fn decide(
        &mut self,
        seq: u64,
        ahead: Ahead,
        jobs: &mut Vec<Job>,
    ) -> anyhow::Result<(String, Slot)> {
        let (normalized, key, found) = match ahead {
            Ahead::Decided(normalized, outcome) => return Ok((normalized, Slot::Ready(outcome))),
            Ahead::Valid {
                normalized,
                key,
                found,
            } => (normalized, key, found),
        };
        if let Some(pending) = self.in_flight.get(&key) {
            return Ok((normalized, Slot::Wait(pending.clone())));
        }
        let store = &self.lookup.store;
        // What the lookup found is used if it can be; else the store is asked again.
        let usable =
            |answer: Option<Answer>| answer.and_then(|a| Some((self.lookup.source(&a, seq)?, a)));
        let found = match usable(found.and_then(|found| store.decode(&found))) {
            Some(found) => Some(found),
            None => usable(store.get(&key)?),
        };
        if let Some((source, answer)) = found {
            let outcome = Outcome::Answer {
                answer: Arc::new(answer),
                source,
            };
            return Ok((normalized, Slot::Ready(outcome)));
        }
        if self.in_flight.len() >= self.sweep_at {
            self.in_flight.retain(|_, p| p.get().is_none());
            self.sweep_at = (self.in_flight.len() * 2).max(self.sweep_at);
        }
        let pending = Arc::new(Pending::new(seq));
        self.in_flight.insert(key, pending.clone());
        self.counts.jobs += 1;
        jobs.push(Job {
            key,
            address: normalized.clone(),
            pending: pending.clone(),
        });
        Ok((normalized, Slot::Wait(pending)))
    }
}

/// The planner stage: rows in (in batches, see [`crate::pipeline`]), planned rows to the
/// writer (in the same batches) and jobs to the pool, in input order. Ends when the rows end
/// or a receiver is gone (shutdown).
pub async fn run(
    mut planner: Planner,
    first_seq: u64,
    mut rows: mpsc::Receiver<Vec<Looked>>,
    planned: mpsc::Sender<Vec<Planned>>,
    jobs: Queue,
    stop: CancellationToken,
) -> anyhow::Result<PlanCounts> {
    let mut seq = first_seq;
    let mut batch_jobs = Vec::new();
    loop {
        let batch = tokio::select! {
            biased;
            _ = stop.cancelled() => break,
            rows = rows.recv() => match rows {
                Some(rows) => rows,
                None => break,
            },
        };
        let mut plans = Vec::with_capacity(batch.len());
        for row in batch {
            plans.push(planner.plan(seq, row, &mut batch_jobs)?);
            seq += 1;
        }
        // The writer gets the rows first, so they hold their places while their jobs wait for
        // a worker; both queues are bounded, so a slow API slows the reader down.
        let sent = tokio::select! {
            biased;
            _ = stop.cancelled() => false,
            sent = planned.send(plans) => sent.is_ok(),
        };
        if !sent {
            break;
        }
        for job in batch_jobs.drain(..) {
            let sent = tokio::select! {
                biased;
                _ = stop.cancelled() => false,
                sent = jobs.send(job) => sent,
            };
            if !sent {
                return Ok(planner.counts);
            }
        }
    }
    Ok(planner.counts)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fresh() -> Freshness {
        Freshness {
            max_age: Duration::from_secs(30 * 86_400),
            max_age_unknown: Duration::from_secs(86_400),
            max_age_catch_all: Duration::from_secs(7 * 86_400),
            refresh: false,
        }
    }

    fn answer(status: Status, run: u64, first_row: u64, checked_at: i64) -> Answer {
        Answer {
            status: Some(status),
            run,
            first_row,
            checked_at,
            ..Answer::default()
        }
    }

    /// Plans one row; returns it and the one job it needs, if any.
    fn plan(planner: &mut Planner, seq: u64, cell: &str) -> (Planned, Option<Job>) {
        let mut jobs = Vec::new();
        let planned = planner
            .plan_row(seq, Row::of_email(cell), &mut jobs)
            .unwrap();
        assert!(jobs.len() <= 1, "{cell:?}");
        (planned, jobs.pop())
    }

    fn source(p: &Planned) -> Option<Source> {
        match p.outcome()? {
            Outcome::Answer { source, .. } => Some(source),
            Outcome::Syntax(_) => Some(Source::Syntax),
            Outcome::Empty => Some(Source::Empty),
            Outcome::Error { .. } => None,
        }
    }

    #[test]
    fn each_row_gets_the_cheapest_way_to_its_verdict() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(dir.path()).unwrap());
        let now = 1_800_000_000;
        let day = 86_400;
        store
            .put(
                &store.key("old@cache.com"),
                &answer(Status::Valid, 1, 0, now - day),
            )
            .unwrap();
        store
            .put(
                &store.key("stale@cache.com"),
                &answer(Status::Valid, 1, 0, now - 31 * day),
            )
            .unwrap();
        store
            .put(
                &store.key("unk@cache.com"),
                &answer(Status::Unknown, 1, 0, now - 2 * day),
            )
            .unwrap();
        // Answered by this run (2) for row 6, before a crash.
        store
            .put(
                &store.key("mine@run.com"),
                &answer(Status::Invalid, 2, 6, now),
            )
            .unwrap();

        let mut planner = Planner::new(store.clone(), 2, fresh(), now, 16);
        let cells = [
            ("", Some(Source::Empty), false),
            ("not an address", Some(Source::Syntax), false),
            ("old@cache.com", Some(Source::Cache), false),
            ("stale@cache.com", None, true),
            ("unk@cache.com", None, true),
            ("new@x.com", None, true),
            ("mine@run.com", Some(Source::Api), false),
            ("NEW@X.COM", None, false),
            ("mine@run.com", Some(Source::Duplicate), false),
        ];
        for (seq, (cell, want, asks)) in cells.iter().enumerate() {
            let (plan, job) = plan(&mut planner, seq as u64, cell);
            assert_eq!(source(&plan), *want, "{cell}");
            assert_eq!(job.is_some(), *asks, "{cell}");
        }
        assert_eq!(planner.counts.jobs, 3);
    }

    #[test]
    fn duplicates_share_one_request_in_flight() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(dir.path()).unwrap());
        let mut planner = Planner::new(store, 1, fresh(), 0, 16);
        let (first, job) = plan(&mut planner, 0, "Jane@Acme-Corp.com");
        let job = job.unwrap();
        assert_eq!(job.address, "Jane@acme-corp.com");
        let (second, none) = plan(&mut planner, 1, " jane@ACME-CORP.com ");
        assert!(none.is_none());
        assert!(first.outcome().is_none() && second.outcome().is_none());
        job.pending
            .resolve(Resolved::Answered(Arc::new(Answer::default())));
        assert_eq!(source(&first), Some(Source::Api));
        assert_eq!(source(&second), Some(Source::Duplicate));
    }

    #[test]
    fn refresh_ignores_earlier_runs_but_not_this_one() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(dir.path()).unwrap());
        store
            .put(&store.key("a@b.co"), &answer(Status::Valid, 1, 0, 0))
            .unwrap();
        store
            .put(&store.key("c@d.co"), &answer(Status::Valid, 2, 0, 0))
            .unwrap();
        let mut planner = Planner::new(
            store,
            2,
            Freshness {
                refresh: true,
                ..fresh()
            },
            0,
            16,
        );
        assert!(plan(&mut planner, 1, "a@b.co").1.is_some());
        assert_eq!(
            source(&plan(&mut planner, 2, "c@d.co").0),
            Some(Source::Duplicate)
        );
    }

    /// The lookup runs ahead of the planner: an address it found nothing for may be answered
    /// (by an earlier row's request) before the planner reaches its row, and that request may
    /// have left the planner's memory by then. The planner looks again: never paid twice.
    #[test]
    fn an_answer_that_lands_after_the_lookup_is_not_paid_for_again() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(dir.path()).unwrap());
        let run = 3;
        let mut planner = Planner::new(store.clone(), run, fresh(), 0, 16);
        let lookup = planner.lookup();
        let early = lookup.row(Row::of_email("ann@x.com"));
        let mut seq = 0;
        let (_, job) = plan(&mut planner, seq, "Ann@x.com");
        let job = job.expect("asked once");
        store
            .put(&job.key, &answer(Status::Valid, run, seq, 0))
            .unwrap();
        job.pending
            .resolve(Resolved::Answered(Arc::new(Answer::default())));
        // Enough other requests, all answered, for the planner to forget ann's.
        while !planner.in_flight.is_empty() || seq < 2 {
            seq += 1;
            let (_, job) = plan(&mut planner, seq, &format!("p{seq}@x.com"));
            job.unwrap()
                .pending
                .resolve(Resolved::Answered(Arc::new(Answer::default())));
            if !planner.in_flight.contains_key(&store.key("ann@x.com")) {
                break;
            }
        }
        assert!(!planner.in_flight.contains_key(&store.key("ann@x.com")));
        let mut jobs = Vec::new();
        let planned = planner.plan(seq + 1, early, &mut jobs).unwrap();
        assert!(jobs.is_empty(), "ann@x.com was paid for already");
        assert_eq!(source(&planned), Some(Source::Duplicate));
    }

    #[test]
    fn each_address_of_a_cell_is_decided_like_a_cell_of_its_own() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(dir.path()).unwrap());
        let now = 1_800_000_000;
        store
            .put(
                &store.key("old@cache.com"),
                &answer(Status::Valid, 1, 0, now),
            )
            .unwrap();
        let mut planner = Planner::new(store, 2, fresh(), now, 16);
        let (alone, job) = plan(&mut planner, 0, "a@x.com");
        let first = job.unwrap();
        let mut jobs = Vec::new();
        let cell = "A@x.com; old@cache.com, not-an-address@, b@x.com | B@X.com";
        let several = planner.plan_row(1, Row::of_email(cell), &mut jobs).unwrap();
        // a@x.com is in flight for row 0, old@ is cached, the reject is free, B@X.com repeats
        // b@x.com in the same cell: one request, for b@x.com.
        assert_eq!(jobs.len(), 1);
        assert_eq!(jobs[0].address, "b@x.com");
        let addresses: Vec<&str> = several.addresses().map(|(a, _)| a).collect();
        assert_eq!(
            addresses,
            ["A@x.com", "old@cache.com", "not-an-address@", "b@x.com"]
        );
        assert!(several.outcome().is_none(), "waits for all its addresses");
        first.pending.resolve(Resolved::Answered(Arc::new(answer(
            Status::Invalid,
            2,
            0,
            now,
        ))));
        assert_eq!(source(&alone), Some(Source::Api));
        assert!(several.outcome().is_none(), "b@x.com is still in flight");
        jobs[0].pending.resolve(Resolved::Failed("HTTP 500".into()));
        // The cached valid one wins over invalid, error and the syntax reject.
        let (best, outcome) = several.best().unwrap();
        assert_eq!(best, 1);
        assert_eq!(
            source(&Planned {
                others: Vec::new(),
                ..several
            }),
            Some(Source::Duplicate)
        );
        assert!(matches!(
            outcome,
            Outcome::Answer {
                source: Source::Cache,
                ..
            }
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn the_job_queue_counts_a_job_until_a_worker_is_done_with_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let job = |address: &str| Job {
            key: store.key(address),
            address: address.to_owned(),
            pending: Arc::new(Pending::new(0)),
        };
        let (queue, jobs) = job_queue(1);
        assert!(queue.send(job("a@x.com")).await);
        // The queue is full: a send given up on is not counted.
        let full = tokio::time::timeout(Duration::from_secs(1), queue.send(job("b@x.com")));
        assert!(full.await.is_err());
        assert_eq!(jobs.recv().await.unwrap().address, "a@x.com");
        assert!(jobs.done(), "nothing queued, nothing in hand");
        assert!(queue.send(job("c@x.com")).await);
        let c = jobs.recv().await.unwrap();
        assert!(queue.send(job("d@x.com")).await);
        assert!(!jobs.done(), "d is queued: {c:?} was not the last");
        let _d = jobs.recv().await.unwrap();
        assert!(jobs.done());
        drop(queue);
        assert!(
            jobs.recv().await.is_none(),
            "closed once the planner is gone"
        );
    }

    #[test]
    fn a_cell_of_thousands_of_addresses_asks_only_the_first_ones() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(dir.path()).unwrap());
        let mut planner = Planner::new(store, 1, fresh(), 0, 16);
        let cell: Vec<String> = (0..5000).map(|i| format!("u{i}@x.com")).collect();
        let mut jobs = Vec::new();
        let planned = planner
            .plan_row(0, Row::of_email(&cell.join(";")), &mut jobs)
            .unwrap();
        assert_eq!(jobs.len(), cell::MAX_ASKED);
        assert_eq!(planned.addresses().count(), cell::MAX_ASKED);
        assert_eq!(planner.counts.jobs, cell::MAX_ASKED as u64);
    }
}
