//! The state directory: a `sled` database holding the job records (checkpoints) and a few
//! settings, and the answer cache in `answers`. The only user of `sled`.
//!
//! - Addresses are never stored in the clear: every key is a keyed BLAKE3 hash of the
//!   normalised address under a salt generated per store.
//! - A verdict is put the moment it is paid for; once [`Store::put`] returns, a `kill -9` can
//!   no longer lose it, and the next checkpoint's [`Store::flush`] syncs it to the disk.
//! - The answer cache is not in sled: sled keeps ~40 bytes per key in memory and replays its
//!   whole log when opened, so memory and the time to resume grew with every address cached
//!   (benches/RESULTS.md). `answers` needs neither; a store of the earlier layout is moved
//!   over the first time it is opened.
//! - One process at a time: a lock file is taken before sled is opened, so a second run fails
//!   within a second with a message instead of sled's lock error.
//! - A damaged store or one from another version is refused with a message naming the
//!   directory and what to do (exit 2), never a panic: sled can panic on some damaged files,
//!   so opening it runs under `catch_unwind` with that thread's panic message silenced.
//!
//! It knows nothing of CSV, HTTP or freshness rules: callers decide what an entry means.

mod answers;
mod spend;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{
    Arc, Condvar, Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard,
};

use anyhow::Context;
use serde::{Deserialize, Serialize};

use crate::client::{Company, Status};
use crate::durable::Lock;

use answers::Answers;
pub use answers::Found;
use spend::Spend;
pub use spend::{credits, micros, Tally};

/// The running job's last checkpoint, as JSON beside the database.
const RUNNING: &str = "running-job.json";

/// Bump when the on-disk layout changes; a store of another version is refused with a message.
const SCHEMA: &[u8] = b"mailsift-store-3";
/// The answer tables with narrow checks, converted in place by
/// `Answers::convert_layout_2` when opened.
const SCHEMA_2: &[u8] = b"mailsift-store-2";
/// The layout before: answers in sled, moved over by [`Store::migrate`] when opened.
const SCHEMA_1: &[u8] = b"mailsift-store-1";

/// A cache key: 16 bytes of keyed BLAKE3 over the normalised, lower-cased address.
pub type CacheKey = [u8; 16];

/// Of a cached answer, what decides whether it can be used ([`crate::plan::Freshness`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Stamp {
    /// The run that paid for it.
    pub run: u64,
    /// The verdict.
    pub status: Option<Status>,
    /// When it was answered (Unix seconds).
    pub checked_at: i64,
}

impl Stamp {
    /// The stamp of a whole answer.
    pub fn of(answer: &Answer) -> Stamp {
        Stamp {
            run: answer.run,
            status: answer.status.clone(),
            checked_at: answer.checked_at,
        }
    }
}

/// A paid-for verdict, as cached.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Answer {
    /// The verdict; `None` when the answer named none.
    pub status: Option<Status>,
    /// The API's message about the address.
    pub message: Option<String>,
    /// Whether the domain accepts every address.
    pub is_catch_all: Option<bool>,
    /// What the request that produced it was charged.
    pub credits: f64,
    /// When it was answered (Unix seconds).
    pub checked_at: i64,
    /// The run that paid for it, and the row that asked: a resumed run tells its own answers
    /// (source `api`/`duplicate`) from an earlier run's (source `cache`) by these.
    pub run: u64,
    /// The row that asked, in the run that paid (see `run`).
    pub first_row: u64,
    /// MX and company: what every address of the domain shares, one copy for all the answers
    /// read from a domain record (copying its texts into each cached row cost some 6% of the
    /// cache path's CPU, issue 15).
    pub domain: Arc<Domain>,
}

/// What the API said of an address's domain rather than of the address.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Domain {
    /// The mail provider the API named.
    pub mx_provider: Option<String>,
    /// The domain's MX record, as the API gave it.
    pub mx_record: Option<String>,
    /// The free company enrichment that came with the answer (`--columns all`).
    pub company: Company,
}

impl Answer {
    /// The full, self-contained form (value format 1): the header, then the details.
    fn encode(&self) -> Vec<u8> {
        let details = self.encode_details();
        let mut out = Vec::with_capacity(25 + details.len());
        out.push(1); // format version of the value
        out.extend_from_slice(&self.run.to_le_bytes());
        out.extend_from_slice(&self.first_row.to_le_bytes());
        out.extend_from_slice(&self.checked_at.to_le_bytes());
        out.extend_from_slice(&details);
        out
    }

    /// What many addresses share (the verdict, messages, MX, company): everything but the run,
    /// the row and the time. The verdict's part, then the domain's.
    fn encode_details(&self) -> Vec<u8> {
        let mut out = self.encode_verdict();
        out.extend_from_slice(&self.encode_domain());
        out
    }

    /// The verdict proper: charge, catch-all, status and message (a handful of distinct ones).
    fn encode_verdict(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(48);
        out.extend_from_slice(&self.credits.to_le_bytes());
        out.push(match self.is_catch_all {
            None => 0,
            Some(false) => 1,
            Some(true) => 2,
        });
        put_texts(
            &mut out,
            &[
                self.status.as_ref().map(Status::as_str),
                self.message.as_deref(),
            ],
        );
        out
    }

    /// What every address of a domain shares: MX and company.
    fn encode_domain(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(128);
        let c = &self.domain.company;
        put_texts(
            &mut out,
            &[
                self.domain.mx_provider.as_deref(),
                self.domain.mx_record.as_deref(),
                c.name.as_deref(),
                c.industry.as_deref(),
                c.size.as_deref(),
                c.founded.as_deref(),
                c.location.as_deref(),
                c.linkedin_url.as_deref(),
            ],
        );
        out
    }

    fn decode(bytes: &[u8]) -> Option<Answer> {
        if bytes.first() != Some(&1) {
            return None;
        }
        let header = bytes.get(1..25)?;
        Some(Answer {
            run: le_uint(&header[..8]),
            first_row: le_uint(&header[8..16]),
            checked_at: le_uint(&header[16..]) as i64,
            ..Answer::decode_details(&bytes[25..])?
        })
    }

    /// The details of [`Answer::encode_details`]; run, row and time are left at zero.
    fn decode_details(bytes: &[u8]) -> Option<Answer> {
        let mut r = Bytes(bytes);
        let verdict = Answer::read_verdict(&mut r)?;
        let domain = Answer::read_domain(&mut r)?;
        Some(verdict.with_domain(&Arc::new(domain)))
    }

    /// The parts of [`Answer::encode_verdict`] (the rest left empty).
    fn decode_verdict(bytes: &[u8]) -> Option<Answer> {
        let mut r = Bytes(bytes);
        let verdict = Answer::read_verdict(&mut r)?;
        r.0.is_empty().then_some(verdict)
    }

    /// The parts of [`Answer::encode_domain`] (the rest left empty).
    fn decode_domain(bytes: &[u8]) -> Option<Domain> {
        let mut r = Bytes(bytes);
        let domain = Answer::read_domain(&mut r)?;
        r.0.is_empty().then_some(domain)
    }

    fn read_verdict(r: &mut Bytes<'_>) -> Option<Answer> {
        let credits = f64::from_bits(u64::from_le_bytes(r.take(8)?.try_into().ok()?));
        let is_catch_all = match r.take(1)?[0] {
            1 => Some(false),
            2 => Some(true),
            _ => None,
        };
        Some(Answer {
            status: r.text()?.map(|s| Status::parse(&s)),
            message: r.text()?,
            is_catch_all,
            credits,
            ..Answer::default()
        })
    }

    fn read_domain(r: &mut Bytes<'_>) -> Option<Domain> {
        Some(Domain {
            mx_provider: r.text()?,
            mx_record: r.text()?,
            company: Company {
                name: r.text()?,
                industry: r.text()?,
                size: r.text()?,
                founded: r.text()?,
                location: r.text()?,
                linkedin_url: r.text()?,
            },
        })
    }

    /// This verdict with the MX and company of `domain`.
    fn with_domain(&self, domain: &Arc<Domain>) -> Answer {
        Answer {
            status: self.status.clone(),
            message: self.message.clone(),
            is_catch_all: self.is_catch_all,
            credits: self.credits,
            domain: domain.clone(),
            ..Answer::default()
        }
    }
}

/// Texts as `[len: u16][UTF-8]`, an absent one as empty.
fn put_texts(out: &mut Vec<u8>, texts: &[Option<&str>]) {
    for text in texts {
        let bytes = text.unwrap_or("").as_bytes();
        let len = bytes.len().min(u16::MAX as usize);
        out.extend_from_slice(&(len as u16).to_le_bytes());
        out.extend_from_slice(&bytes[..len]);
    }
}

/// A reader over encoded bytes; every read is `None` past the end.
struct Bytes<'a>(&'a [u8]);

impl<'a> Bytes<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let (head, tail) = (self.0.get(..n)?, self.0.get(n..)?);
        self.0 = tail;
        Some(head)
    }

    fn text(&mut self) -> Option<Option<String>> {
        let len = u16::from_le_bytes(self.take(2)?.try_into().ok()?) as usize;
        let s = std::str::from_utf8(self.take(len)?).ok()?;
        Some((!s.is_empty()).then(|| s.to_owned()))
    }
}

/// Reads a cache value of the sled layout this version moved away from (see
/// [`Store::migrate`]): format 1 whole, or format 2 `[2] [run index: u16] [first_row: 48 bits]
/// [checked_at: u32] [details id: 40 bits]` with the details in the `details` tree under the
/// id's low five bytes, big-endian.
fn legacy_answer(value: &[u8], runs: &[u64], details: &sled::Tree) -> Option<Answer> {
    if value.first() != Some(&2) {
        return Answer::decode(value);
    }
    let v = value.get(..18)?;
    let id = le_uint(&v[13..18]).to_be_bytes();
    let bytes = details.get(&id[3..]).ok()??;
    Some(Answer {
        run: *runs.get(le_uint(&v[1..3]) as usize)?,
        first_row: le_uint(&v[3..9]),
        checked_at: le_uint(&v[9..13]) as i64,
        ..Answer::decode_details(&bytes)?
    })
}

/// A little-endian unsigned integer of up to 8 bytes.
fn le_uint(bytes: &[u8]) -> u64 {
    let mut buf = [0; 8];
    buf[..bytes.len()].copy_from_slice(bytes);
    u64::from_le_bytes(buf)
}

/// Takes a lock. Every update under the store's locks leaves its state consistent, so a
/// poisoned lock is simply taken over.
fn locked<T>(lock: &Mutex<T>) -> MutexGuard<'_, T> {
    lock.lock().unwrap_or_else(PoisonError::into_inner)
}

fn read<T>(lock: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(PoisonError::into_inner)
}

fn write<T>(lock: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(PoisonError::into_inner)
}

/// Where a job stands, for `resume` and the status report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    /// A run is under way, or died without a word (the lock tells which).
    Running,
    /// Stopped by a signal: resumable.
    Interrupted,
    /// The server said the credits ran out (402): resumable.
    OutOfCredits,
    /// `--max-credits` or `--min-balance` stopped it: resumable.
    BudgetReached,
    /// The API key was rejected (401).
    KeyRejected,
    /// Too many failed requests, or nothing answered at the base URL: resumable.
    TooManyFailures,
    /// Ended by an error.
    Failed,
    /// Every row written, the output in place.
    Done,
}

/// The checkpoint: the output is durable up to `output_bytes`, which holds every row before
/// the input row starting at `byte` (line `line`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Watermark {
    /// Input offset of the next row to read.
    pub byte: u64,
    /// Line number of that row.
    pub line: u64,
    /// Rows written so far.
    pub rows: u64,
    /// Length of the durable output, in bytes.
    pub output_bytes: u64,
    /// Lengths of the `--split` files (deliverable, risky, undeliverable).
    #[serde(default)]
    pub split_bytes: [u64; 3],
}

/// One job: an input file validated into an output file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobRecord {
    /// The input, as the command line named it.
    pub input: String,
    /// The output path.
    pub output: String,
    /// Identifies the input's content (size and sampled hashes), to refuse a changed input.
    pub fingerprint: String,
    /// The options that shape the output; a resume with others is refused.
    pub options: String,
    /// The id of the run that wrote the record (a random number per run).
    pub run: u64,
    /// Where the job stands.
    pub state: JobState,
    /// The last checkpoint.
    pub watermark: Watermark,
    /// When the job started (Unix seconds).
    pub started_at: i64,
    /// When the record was last written (Unix seconds).
    pub updated_at: i64,
    /// Requests sent, all runs of the job together.
    pub api_calls: u64,
    /// Credits charged, all runs of the job together.
    pub credits_spent: f64,
    /// Rows written per status, all runs of the job together.
    #[serde(default)]
    pub counts: std::collections::BTreeMap<String, u64>,
    /// The input's size, for progress in `mailsift status`.
    #[serde(default)]
    pub input_bytes: u64,
    /// The finished files as the job wrote them, the output's first, then the split files': a
    /// rerun finds the job done only while the files still hold these bytes. Empty until the
    /// job is done (and in records of versions that kept none).
    #[serde(default)]
    pub files: Vec<crate::durable::FileSum>,
    /// The report (the `--report` JSON) of the run that finished the job, so a rerun can
    /// write it again.
    #[serde(default)]
    pub report: Option<String>,
}

impl JobState {
    /// The state's name as `mailsift status` prints it.
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Running => "running",
            JobState::Interrupted => "interrupted",
            JobState::OutOfCredits => "out of credits",
            JobState::BudgetReached => "budget reached",
            JobState::KeyRejected => "key rejected",
            JobState::TooManyFailures => "too many failures",
            JobState::Failed => "failed",
            JobState::Done => "done",
        }
    }
}

/// The open state directory.
pub struct Store {
    dir: PathBuf,
    db: sled::Db,
    jobs: sled::Tree,
    meta: sled::Tree,
    answers: Arc<Answers>,
    /// Each job's spend and requests in flight.
    spend: Mutex<Spend>,
    /// Syncs the answers to disk off the checkpoint's path; see [`Store::flush`].
    syncer: Syncer,
    salt: [u8; 32],
    _lock: Lock,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

impl Store {
    /// Opens (creating if needed) the store in `dir`, taking its lock.
    pub fn open(dir: &Path) -> anyhow::Result<Store> {
        std::fs::create_dir_all(dir).with_context(|| {
            format!(
                "cannot create the state directory {}; choose another with --state-dir or \
                 MAILSIFT_STATE_DIR",
                dir.display()
            )
        })?;
        let lock = lock(dir)?;
        // sled can panic on some damaged files: everything it reads while opening runs here.
        let (db, salt, meta, layout_2) = quietly_catching_panics(|| open_sled(dir))
            .map_err(|panic| unusable(dir, &format!("it is damaged: {panic}")))??;
        let journal_key = blake3::derive_key(answers::JOURNAL_CONTEXT, &salt);
        let answers = Answers::open_keyed(dir, &journal_key)
            .map(Arc::new)
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::InvalidData => unusable(dir, &e.to_string()),
                _ => anyhow::Error::new(e)
                    .context(format!("cannot open the state store in {}", dir.display())),
            })?;
        let spend = Spend::open(&dir.join("spend"))
            .with_context(|| format!("cannot open the state store in {}", dir.display()))?;
        let store = Store {
            dir: dir.to_owned(),
            jobs: db
                .open_tree("jobs")
                .map_err(|e| unusable(dir, &e.to_string()))?,
            meta,
            syncer: Syncer::start(answers.clone(), spend.file()?)
                .with_context(|| format!("cannot open the state store in {}", dir.display()))?,
            spend: Mutex::new(spend),
            answers,
            db,
            salt,
            _lock: lock,
        };
        quietly_catching_panics(|| store.migrate())
            .map_err(|panic| unusable(dir, &format!("it is damaged: {panic}")))??;
        if layout_2 {
            let converted = store
                .answers
                .convert_layout_2()
                .and_then(|n| store.answers.settle().map(|()| n))
                .with_context(|| writing(dir))?;
            store
                .meta
                .insert("schema", SCHEMA)
                .with_context(|| writing(dir))?;
            store.db.flush().with_context(|| writing(dir))?;
            tracing::info!("converted {converted} cached answers to the wider checks");
        }
        let markers = store
            .answers
            .legacy_markers()
            .with_context(|| store.reading())?;
        if markers > 0 {
            store.adopt_legacy_markers(markers)?;
            store
                .answers
                .drop_legacy_markers()
                .with_context(|| writing(dir))?;
        }
        Ok(store)
    }

    /// Moves what the earlier layout kept in sled (answers and in-flight markers) into
    /// [`Answers`], once, so an upgrade never asks again what was paid for.
    fn migrate(&self) -> anyhow::Result<()> {
        let names = ["cache", "details", "runs", "in_flight"];
        if !self
            .db
            .tree_names()
            .iter()
            .any(|n| names.iter().any(|m| m.as_bytes() == &n[..]))
        {
            return Ok(());
        }
        let tree = |name: &str| {
            self.db
                .open_tree(name)
                .map_err(|e| unusable(&self.dir, &e.to_string()))
        };
        let (cache, details, runs, in_flight) = (
            tree("cache")?,
            tree("details")?,
            tree("runs")?,
            tree("in_flight")?,
        );
        let runs: Vec<u64> = runs
            .iter()
            .values()
            .filter_map(|v| Some(u64::from_le_bytes(v.ok()?.as_ref().try_into().ok()?)))
            .collect();
        let mut moved = 0u64;
        for entry in cache.iter() {
            let (key, value) = entry.with_context(|| self.reading())?;
            let (Ok(key), Some(answer)) = (
                CacheKey::try_from(key.as_ref()),
                legacy_answer(&value, &runs, &details),
            ) else {
                continue;
            };
            self.answers
                .put(&key, &answer)
                .with_context(|| writing(&self.dir))?;
            moved += 1;
        }
        let mut markers = 0;
        for entry in in_flight.iter() {
            let (key, value) = entry.with_context(|| self.reading())?;
            markers += if key.as_ref() == b"markers" {
                value.len() as u64 / 16
            } else {
                1
            };
        }
        self.adopt_legacy_markers(markers)?;
        self.answers.settle().with_context(|| writing(&self.dir))?;
        for name in names {
            self.db
                .drop_tree(name)
                .with_context(|| writing(&self.dir))?;
        }
        self.db.flush().with_context(|| writing(&self.dir))?;
        if moved > 0 {
            tracing::info!("moved {moved} cached answers to the new cache layout");
        }
        Ok(())
    }

    /// The cache key of a normalised, lower-cased address.
    pub fn key(&self, address_key: &str) -> CacheKey {
        let hash = blake3::keyed_hash(&self.salt, address_key.as_bytes());
        let mut key = [0; 16];
        key.copy_from_slice(&hash.as_bytes()[..16]);
        key
    }

    /// A job's id, from what identifies it: its input and output paths.
    pub fn job_id(input: &str, output: &str) -> [u8; 16] {
        let mut hasher = blake3::Hasher::new();
        hasher.update(input.as_bytes());
        hasher.update(b"\0");
        hasher.update(output.as_bytes());
        let mut id = [0; 16];
        id.copy_from_slice(&hasher.finalize().as_bytes()[..16]);
        id
    }

    /// A cached verdict; a damaged one (or one whose details are lost) reads as absent, so it
    /// is asked again rather than written wrong.
    pub fn get(&self, key: &CacheKey) -> anyhow::Result<Option<Answer>> {
        self.answers.get(key).with_context(|| self.reading())
    }

    /// [`Store::get`] in two halves, which may run on two threads (see [`crate::plan::Lookup`]):
    /// the slot for `key` as it is now, and [`Store::decode`] of it later.
    pub fn find(&self, key: &CacheKey) -> anyhow::Result<Option<Found>> {
        self.answers.find(key).with_context(|| self.reading())
    }

    /// The answer in what [`Store::find`] found; `None` when its check fails.
    pub fn decode(&self, found: &Found) -> Option<Answer> {
        self.answers.decode_found(found)
    }

    /// Starts loading what [`Store::find`] of `key` will read, so that a batch's lookups
    /// ([`crate::plan::Lookup::rows`]) wait for memory together: a hint, with no effect but
    /// speed.
    pub fn prefetch(&self, key: &CacheKey) {
        self.answers.prefetch(key);
    }

    /// What [`Store::get`] would say about a cached verdict's run, status and age, without
    /// building the answer: `Some` exactly when `get` is.
    pub fn stamp(&self, key: &CacheKey) -> anyhow::Result<Option<Stamp>> {
        self.answers.stamp(key).with_context(|| self.reading())
    }

    /// Caches a verdict. Once this returns, the answer survives the process (`kill -9`); the
    /// next [`Store::flush`] makes it survive a power cut. It may sync a file (a table that
    /// grows): from async code use [`Store::put_async`].
    pub fn put(&self, key: &CacheKey, answer: &Answer) -> anyhow::Result<()> {
        self.answers
            .put(key, answer)
            .with_context(|| writing(&self.dir))
    }

    /// [`Store::put`] for async code: a table that must grow first grows on a blocking
    /// thread, so no async worker waits on a sync.
    pub async fn put_async(
        self: &Arc<Self>,
        key: &CacheKey,
        answer: &Answer,
    ) -> anyhow::Result<()> {
        let placed = self
            .answers
            .try_put(key, answer)
            .with_context(|| writing(&self.dir))?;
        if !placed {
            let (store, key, answer) = (self.clone(), *key, answer.clone());
            tokio::task::spawn_blocking(move || store.put(&key, &answer)).await??;
        }
        Ok(())
    }

    /// A job's tally: what it has spent and how many of its requests are in flight, as of
    /// the last request sent or answer stored (`None`: the job never sent one).
    pub fn tally(&self, job: &[u8; 16]) -> Option<Tally> {
        locked(&self.spend).get(job)
    }

    /// Records a job's tally. Once this returns it survives the process (`kill -9`); the next
    /// [`Store::flush`] makes it survive a power cut.
    pub fn set_tally(&self, job: &[u8; 16], tally: Tally) -> anyhow::Result<()> {
        locked(&self.spend)
            .set(job, tally)
            .with_context(|| writing(&self.dir))
    }

    /// Requests the version before marked in flight belong to no job: they are given to the
    /// job a killed run left running (one process per directory, so the latest), at the worst
    /// case, so its next run announces them and counts them against its budget.
    fn adopt_legacy_markers(&self, markers: u64) -> anyhow::Result<()> {
        let killed = self
            .jobs
            .iter()
            .filter_map(|e| {
                let (id, v) = e.ok()?;
                let record: JobRecord = serde_json::from_slice(&v).ok()?;
                let id: [u8; 16] = id.as_ref().try_into().ok()?;
                (record.state == JobState::Running).then_some((record.updated_at, id, record))
            })
            .max_by_key(|(at, _, _)| *at);
        let Some((_, id, record)) = killed.filter(|_| markers > 0) else {
            return Ok(());
        };
        // The higher documented price when no answer has shown one.
        let worst = micros(self.last_cost().unwrap_or(0.25));
        let mut tally = self.tally(&id).unwrap_or(Tally {
            spent: micros(record.credits_spent),
            requests: record.api_calls,
            ..Tally::default()
        });
        tally.in_flight += markers;
        tally.reserved += markers * worst;
        self.set_tally(&id, tally)
    }

    fn reading(&self) -> String {
        format!("reading the state store in {}", self.dir.display())
    }

    /// Makes the job records survive a power cut, and starts syncing the answers in the
    /// background (blocking: checkpoints run it off the async workers).
    ///
    /// The answers are already safe from a crash; syncing them only spares asking again after
    /// a power cut. It syncs their journal (about 48 bytes per answer since the last
    /// checkpoint), and now and then the tables (once the journal reaches 1/16 of their size:
    /// hundreds of megabytes on a 10M-row job), so the writer does not wait for it. A failure
    /// shows at the next flush; the last one, which syncs the tables too, is waited for when
    /// the store is dropped.
    pub fn flush(&self) -> anyhow::Result<()> {
        self.syncer.request().with_context(|| writing(&self.dir))?;
        self.db.flush().with_context(|| writing(&self.dir))?;
        Ok(())
    }

    /// Like [`Store::flush`], and waits until the answers are synced too.
    pub fn sync(&self) -> anyhow::Result<()> {
        self.answers.settle().with_context(|| writing(&self.dir))?;
        // Not under the lock: the workers write tallies under it.
        let spend = locked(&self.spend).file();
        spend
            .and_then(|file| file.sync_data())
            .with_context(|| writing(&self.dir))?;
        self.db.flush().with_context(|| writing(&self.dir))?;
        Ok(())
    }

    /// The price of a charged check in the last answer seen (the API's prices change; the last
    /// answer is the best guess for the next).
    pub fn last_cost(&self) -> Option<f64> {
        let bytes = self.meta.get("last_cost").ok()??;
        Some(f64::from_le_bytes(bytes.as_ref().try_into().ok()?))
            .filter(|c| c.is_finite() && *c > 0.0)
    }

    /// Records the price of a charged check (see [`Store::last_cost`]).
    pub fn set_last_cost(&self, cost: f64) -> anyhow::Result<()> {
        if cost.is_finite() && cost > 0.0 && self.last_cost() != Some(cost) {
            self.meta.insert("last_cost", &cost.to_le_bytes())?;
        }
        Ok(())
    }

    /// A job's record. Its spend and calls are those of its last request, not of its last
    /// checkpoint: after a crash they include what was paid since, and the requests whose
    /// outcome is unknown at their worst case.
    pub fn job(&self, id: &[u8; 16]) -> anyhow::Result<Option<JobRecord>> {
        match self.jobs.get(id).with_context(|| self.reading())? {
            None => Ok(None),
            // A record this version cannot read (damaged, or another layout) is no record:
            // the job starts over, answers already paid for still come from the cache.
            Some(bytes) => Ok(serde_json::from_slice(&bytes)
                .ok()
                .map(|r| with_tally(r, self.tally(id)))),
        }
    }

    /// Writes a job record (flushed with the next [`Store::flush`]).
    pub fn save_job(&self, id: &[u8; 16], job: &JobRecord) -> anyhow::Result<()> {
        let json = serde_json::to_vec(job)?;
        self.jobs
            .insert(id, json.as_slice())
            .with_context(|| writing(&self.dir))?;
        // A copy outside the database, for `mailsift status` while this process holds the lock.
        let running = self.dir.join(RUNNING);
        if job.state == JobState::Running {
            crate::durable::write_atomic(&running, &json).with_context(|| writing(&self.dir))?;
        } else {
            let _ = std::fs::remove_file(running);
        }
        Ok(())
    }

    /// Forgets a job (its answers stay cached, and its spend stays in the tally).
    pub fn remove_job(&self, id: &[u8; 16]) -> anyhow::Result<()> {
        self.jobs.remove(id).with_context(|| writing(&self.dir))?;
        let _ = std::fs::remove_file(self.dir.join(RUNNING));
        Ok(())
    }

    /// The job a running process last checkpointed, read without the lock, with its spend
    /// as of its last request.
    pub fn running_job(dir: &Path) -> Option<JobRecord> {
        let record: JobRecord =
            serde_json::from_slice(&std::fs::read(dir.join(RUNNING)).ok()?).ok()?;
        let id = Store::job_id(&record.input, &record.output);
        let tally = Spend::read(&dir.join("spend"), &id);
        Some(with_tally(record, tally))
    }

    /// Every cached answer (decodable ones).
    pub fn answers(&self) -> impl Iterator<Item = Answer> + '_ {
        self.answers.all()
    }

    /// Removes cached answers given before `before` (Unix seconds), or all of them. Returns
    /// how many were removed.
    pub fn clear_cache(&self, before: Option<i64>) -> anyhow::Result<u64> {
        let removed = self
            .answers
            .retain(|a| before.is_none_or(|t| a.checked_at < t))
            .with_context(|| writing(&self.dir))?;
        self.sync()?;
        Ok(removed)
    }

    /// Bytes the state directory holds.
    pub fn size_on_disk(&self) -> u64 {
        self.db.size_on_disk().unwrap_or(0) + self.answers.size()
    }

    /// The pid of the process using the state directory, if one is.
    pub fn holder(dir: &Path) -> Option<String> {
        Lock::holder(&dir.join("lock")).map(|h| h.0.unwrap_or_default())
    }

    /// Every job, its spend and calls as of its last request (see [`Store::job`]).
    pub fn jobs(&self) -> impl Iterator<Item = JobRecord> + '_ {
        self.jobs.iter().filter_map(|e| {
            let (id, v) = e.ok()?;
            let record = serde_json::from_slice(&v).ok()?;
            Some(with_tally(record, self.tally(id.as_ref().try_into().ok()?)))
        })
    }
}

/// A record with its spend and calls as of the job's last request: never less than the
/// checkpoint says.
fn with_tally(mut record: JobRecord, tally: Option<Tally>) -> JobRecord {
    if let Some(t) = tally {
        record.credits_spent = record.credits_spent.max(credits(t.worst()));
        record.api_calls = record.api_calls.max(t.requests);
    }
    record
}

/// A thread that syncs the answers when asked, one sync at a time; requests made during a
/// sync are served by one more.
struct Syncer {
    shared: Arc<(Mutex<SyncState>, Condvar)>,
    thread: Option<std::thread::JoinHandle<()>>,
}

#[derive(Default)]
struct SyncState {
    requested: bool,
    stopping: bool,
    /// The last sync's failure, for the next request to report.
    failed: Option<std::io::Error>,
}

impl Syncer {
    fn start(answers: Arc<Answers>, spend: File) -> std::io::Result<Syncer> {
        let shared = Arc::new((Mutex::new(SyncState::default()), Condvar::new()));
        let state = shared.clone();
        let thread = std::thread::Builder::new()
            .name("store-sync".into())
            .spawn(move || {
                let (lock, wake) = &*state;
                loop {
                    let mut s = locked(lock);
                    while !s.requested && !s.stopping {
                        s = wake.wait(s).unwrap_or_else(PoisonError::into_inner);
                    }
                    let last = !s.requested;
                    s.requested = false;
                    drop(s);
                    // The last one (the store closed) syncs the tables too: the next opening
                    // replays nothing.
                    let synced = if last {
                        answers.settle()
                    } else {
                        answers.sync()
                    };
                    if let Err(e) = synced.and_then(|()| spend.sync_data()) {
                        locked(lock).failed = Some(e);
                    }
                    if last {
                        return;
                    }
                }
            })?;
        Ok(Syncer {
            shared,
            thread: Some(thread),
        })
    }

    /// Asks for a sync; reports the previous one's failure.
    fn request(&self) -> std::io::Result<()> {
        let (lock, wake) = &*self.shared;
        let mut s = locked(lock);
        if let Some(e) = s.failed.take() {
            return Err(e);
        }
        s.requested = true;
        wake.notify_one();
        Ok(())
    }
}

impl Drop for Syncer {
    /// Waits for a last sync of everything written.
    fn drop(&mut self) {
        let (lock, wake) = &*self.shared;
        locked(lock).stopping = true;
        wake.notify_one();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// "writing the state store in DIR", the context of every failed write (a full disk, most often).
fn writing(dir: &Path) -> String {
    format!(
        "writing the state store in {} (is the disk full?); the last checkpoint is kept: \
         fix the cause, then run the same command to resume",
        dir.display()
    )
}

/// The database, its salt and its `meta` tree; the schema checked (or written, for a new
/// store). True when the answer tables are of layout 2, to be converted.
fn open_sled(dir: &Path) -> anyhow::Result<(sled::Db, [u8; 32], sled::Tree, bool)> {
    let db = open_db(dir)?;
    let mut layout_2 = false;
    let meta = db
        .open_tree("meta")
        .map_err(|e| unusable(dir, &e.to_string()))?;
    match meta
        .get("schema")
        .map_err(|e| unusable(dir, &e.to_string()))?
    {
        Some(found) if found.as_ref() == SCHEMA_1 => {
            meta.insert("schema", SCHEMA)
                .with_context(|| writing(dir))?;
        }
        // Written once the tables are converted (a crash before: converted again, the rest).
        Some(found) if found.as_ref() == SCHEMA_2 => layout_2 = true,
        Some(found) if found.as_ref() != SCHEMA => {
            return Err(crate::exit::usage(format!(
                "the state directory {} was written by another version of mailsift ({}); \
                 use another --state-dir, or move this one aside to start fresh",
                dir.display(),
                String::from_utf8_lossy(&found)
            )))
        }
        Some(_) => {}
        None => {
            meta.insert("schema", SCHEMA)
                .with_context(|| writing(dir))?;
        }
    }
    let salt = match meta
        .get("salt")
        .map_err(|e| unusable(dir, &e.to_string()))?
    {
        Some(salt) => salt
            .as_ref()
            .try_into()
            .map_err(|_| unusable(dir, "the salt record is damaged"))?,
        None => {
            let salt: [u8; 32] = rand::random();
            meta.insert("salt", &salt).with_context(|| writing(dir))?;
            db.flush().with_context(|| writing(dir))?;
            salt
        }
    };
    Ok((db, salt, meta, layout_2))
}

/// Opens sled. Our lock is already held, so sled's own lock can only be held by a store of this
/// process that is still shutting down (a flush finishing on a blocking thread): wait for it
/// briefly rather than fail.
fn open_db(dir: &Path) -> anyhow::Result<sled::Db> {
    let config = sled::Config::new()
        .path(dir.join("db"))
        // It holds job records and settings only: a small page cache is plenty.
        .cache_capacity(8 * 1024 * 1024)
        // Durability is ours to decide (checkpoints), not a timer's.
        .flush_every_ms(None);
    let mut tries = 0;
    loop {
        match config.open() {
            Ok(db) => return Ok(db),
            Err(sled::Error::Io(e))
                if e.kind() == std::io::ErrorKind::WouldBlock && tries < 100 =>
            {
                tries += 1;
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            // The disk or the permissions, not the data: exit 1 with the OS's reason.
            Err(sled::Error::Io(e))
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::PermissionDenied
                        | std::io::ErrorKind::StorageFull
                        | std::io::ErrorKind::ReadOnlyFilesystem
                        | std::io::ErrorKind::QuotaExceeded
                ) =>
            {
                return Err(e)
                    .with_context(|| format!("cannot open the state store in {}", dir.display()))
            }
            Err(e) => return Err(unusable(dir, &e.to_string())),
        }
    }
}

/// A damaged or foreign store: the user has to move it aside (exit 2).
fn unusable(dir: &Path, why: &str) -> anyhow::Error {
    crate::exit::usage(format!(
        "the state store in {} cannot be used ({why}). Move it aside (mv {0} {0}.broken) to \
         start with an empty cache; finished output files are not affected",
        dir.display()
    ))
}

thread_local! {
    /// Set while this thread runs code whose panics are caught and reported as errors.
    static PANICS_ARE_CAUGHT: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Runs `f`, turning a panic into an error message. The panic hook stays silent for this
/// thread meanwhile (panics of other threads are printed as before), so the user sees one
/// clear error instead of a panic report.
fn quietly_catching_panics<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    static HOOK: std::sync::Once = std::sync::Once::new();
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !PANICS_ARE_CAUGHT.with(|caught| caught.get()) {
                previous(info);
            }
        }));
    });
    PANICS_ARE_CAUGHT.with(|caught| caught.set(true));
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    PANICS_ARE_CAUGHT.with(|caught| caught.set(false));
    result.map_err(|payload| {
        payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "sled panicked".to_owned())
    })
}

/// Takes the state directory's lock, or says who holds it and how to run jobs side by side.
fn lock(dir: &Path) -> anyhow::Result<Lock> {
    let path = dir.join("lock");
    match Lock::try_take(&path).with_context(|| format!("cannot lock {}", path.display()))? {
        Ok(lock) => Ok(lock),
        Err(holder) => Err(crate::exit::usage(format!(
            "the state directory {} is in use by {holder}. Wait for it to finish, or run the \
             other job with its own state directory (--state-dir DIR or MAILSIFT_STATE_DIR); \
             separate state directories do not share the cache",
            dir.display()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer() -> Answer {
        Answer {
            status: Some(Status::ValidCatchAll),
            message: Some("Email is valid (catch-all).".into()),
            is_catch_all: Some(true),
            credits: 0.05,
            checked_at: 1_790_000_000,
            run: 42,
            first_row: 7,
            domain: Arc::new(Domain {
                mx_provider: Some("Google Workspace".into()),
                mx_record: None,
                company: Company {
                    name: Some("Acme, Inc.".into()),
                    location: Some("Zürich, CH".into()),
                    ..Company::default()
                },
            }),
        }
    }

    #[test]
    fn answers_round_trip() {
        for a in [
            answer(),
            Answer::default(),
            Answer {
                status: Some(Status::Other("new".into())),
                ..answer()
            },
        ] {
            assert_eq!(Answer::decode(&a.encode()), Some(a));
        }
        // Damaged values read as absent, never panic.
        let good = answer().encode();
        for cut in 0..good.len() {
            assert_eq!(Answer::decode(&good[..cut]), None);
        }
        assert_eq!(Answer::decode(&[9, 9, 9]), None);
    }

    #[test]
    fn answers_round_trip_compact_or_whole_and_after_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let cases = [
            answer(),
            Answer::default(),
            Answer {
                status: Some(Status::Other("new".into())),
                run: u64::MAX,
                ..answer()
            },
            // Do not fit the compact form: stored whole.
            Answer {
                first_row: 1 << 48,
                ..answer()
            },
            Answer {
                checked_at: -1,
                ..answer()
            },
            Answer {
                checked_at: i64::from(u32::MAX) + 1,
                ..answer()
            },
        ];
        let keys: Vec<CacheKey> = (0..cases.len() as u8).map(|i| [i; 16]).collect();
        let details = dir.path().join("answers").join("details");
        {
            let store = Store::open(dir.path()).unwrap();
            for (key, a) in keys.iter().zip(&cases) {
                store.put(key, a).unwrap();
                assert_eq!(store.get(key).unwrap().as_ref(), Some(a));
            }
            // Shared details are stored once.
            let len = std::fs::metadata(&details).unwrap().len();
            for row in 100..200 {
                let a = Answer {
                    first_row: row,
                    ..answer()
                };
                store.put(&store.key(&format!("{row}@x.co")), &a).unwrap();
            }
            assert_eq!(std::fs::metadata(&details).unwrap().len(), len);
            // A new answer for the same key replaces the old one.
            let newer = Answer {
                checked_at: 1_800_000_000,
                ..answer()
            };
            store.put(&keys[0], &newer).unwrap();
            assert_eq!(store.get(&keys[0]).unwrap(), Some(newer));
            store.put(&keys[0], &cases[0]).unwrap();
        }
        // Reopened: runs and details come back from disk, not from the memo; no flush
        // needed (what a `kill -9` leaves).
        let store = Store::open(dir.path()).unwrap();
        for (key, a) in keys.iter().zip(&cases) {
            assert_eq!(store.get(key).unwrap().as_ref(), Some(a));
        }
        assert_eq!(store.answers().count(), cases.len() + 100);
        drop(store);
        // Lost or damaged details read as absent (asked again), never as a wrong answer.
        let mut bytes = std::fs::read(&details).unwrap();
        for b in &mut bytes[12..] {
            *b ^= 0x55;
        }
        std::fs::write(&details, bytes).unwrap();
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.get(&keys[0]).unwrap(), None);
        std::fs::write(&details, b"").unwrap();
        assert_eq!(store.get(&keys[3]).unwrap(), None);
    }

    #[test]
    fn a_store_of_the_sled_layout_is_moved_over_once() {
        let dir = tempfile::tempdir().unwrap();
        let a = answer();
        let compact_key = [1; 16];
        let whole_key = [2; 16];
        let marker = [3; 16];
        {
            // What version 1 wrote: the answers, their details and runs in sled trees.
            let db = sled::open(dir.path().join("db")).unwrap();
            let meta = db.open_tree("meta").unwrap();
            meta.insert("schema", SCHEMA_1).unwrap();
            meta.insert("salt", &[7u8; 32]).unwrap();
            db.open_tree("runs")
                .unwrap()
                .insert(0u16.to_be_bytes(), &a.run.to_le_bytes())
                .unwrap();
            let id: u64 = 0x01_0203_0405;
            db.open_tree("details")
                .unwrap()
                .insert(&id.to_be_bytes()[3..], a.encode_details())
                .unwrap();
            let mut value = vec![2, 0, 0];
            value.extend_from_slice(&a.first_row.to_le_bytes()[..6]);
            value.extend_from_slice(&(a.checked_at as u32).to_le_bytes());
            value.extend_from_slice(&id.to_le_bytes()[..5]);
            let cache = db.open_tree("cache").unwrap();
            cache.insert(compact_key, value).unwrap();
            let whole = Answer {
                first_row: 1 << 50,
                ..a.clone()
            };
            cache.insert(whole_key, whole.encode()).unwrap();
            cache.insert([4; 16], &[2, 9, 9][..]).unwrap(); // damaged: dropped
            db.open_tree("in_flight")
                .unwrap()
                .insert("markers", &marker[..])
                .unwrap();
            // The job that was running when that version was killed.
            let killed = JobRecord {
                state: JobState::Running,
                ..job()
            };
            db.open_tree("jobs")
                .unwrap()
                .insert(
                    Store::job_id("in.csv", "out.csv"),
                    serde_json::to_vec(&killed).unwrap(),
                )
                .unwrap();
            db.flush().unwrap();
        }
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.get(&compact_key).unwrap(), Some(a.clone()));
        assert_eq!(store.get(&whole_key).unwrap().unwrap().first_row, 1 << 50);
        assert_eq!(store.answers().count(), 2);
        assert_eq!(store.key("x@y.co"), {
            let h = blake3::keyed_hash(&[7; 32], b"x@y.co");
            <[u8; 16]>::try_from(&h.as_bytes()[..16]).unwrap()
        });
        // Its marker is the killed job's request in flight, at the higher documented price.
        let tally = store.tally(&Store::job_id("in.csv", "out.csv")).unwrap();
        assert_eq!((tally.in_flight, tally.reserved), (1, 250_000));
        assert_eq!(tally.spent, micros(job().credits_spent));
        assert!(!store.db.tree_names().iter().any(|n| &n[..] == b"cache"));
        assert_eq!(&store.meta.get("schema").unwrap().unwrap()[..], SCHEMA);
        drop(store);
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.get(&compact_key).unwrap(), Some(a));
        assert_eq!(store.answers().count(), 2);
    }

    #[test]
    fn a_table_grows_on_a_blocking_thread_while_the_async_workers_go_on() {
        // Issue 15: growth never runs on an async worker. One worker thread only: had
        // `put_async` grown the table in place, waiting here for a growth held up on purpose,
        // nothing else on that runtime could run.
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(dir.path()).unwrap());
        let crowded = |i: u8| {
            let mut k = [i; 16];
            k[0] = 0; // partition 0: one bucket of 128 slots at first
            k
        };
        for i in 0..128 {
            store.put(&crowded(i), &answer()).unwrap();
        }
        let other = [1; 16];
        let held = store.answers.holding_growth(0);
        let (said, heard) = std::sync::mpsc::channel();
        let runtime = {
            let store = store.clone();
            std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .build()
                    .unwrap();
                rt.block_on(async {
                    let (started, has_started) = tokio::sync::oneshot::channel();
                    let growing = tokio::spawn({
                        let store = store.clone();
                        async move {
                            let _ = started.send(());
                            store.put_async(&crowded(128), &answer()).await
                        }
                    });
                    has_started.await.unwrap();
                    // The task above is waiting for the growth: this one goes on.
                    store.put_async(&other, &answer()).await.unwrap();
                    assert!(store.get(&other).unwrap().is_some());
                    said.send("went on").unwrap();
                    growing.await.unwrap().unwrap();
                    said.send("grown").unwrap();
                });
            })
        };
        let wait = std::time::Duration::from_secs(60);
        assert_eq!(heard.recv_timeout(wait), Ok("went on"));
        assert!(heard.try_recv().is_err(), "the growth waits for `held`");
        assert_eq!(store.get(&crowded(128)).unwrap(), None);
        drop(held);
        assert_eq!(heard.recv_timeout(wait), Ok("grown"));
        runtime.join().unwrap();
        for i in 0..=128 {
            assert_eq!(store.get(&crowded(i)).unwrap(), Some(answer()), "{i}");
        }
    }

    #[test]
    fn a_store_of_layout_2_is_converted_once_when_opened() {
        let dir = tempfile::tempdir().unwrap();
        let keys: Vec<CacheKey> = (0..50u8).map(|i| [i; 16]).collect();
        {
            let store = Store::open(dir.path()).unwrap();
            for (i, key) in keys.iter().enumerate() {
                let a = Answer {
                    first_row: i as u64,
                    ..answer()
                };
                store.put(key, &a).unwrap();
            }
            // What the version before left: its tables, its schema.
            store.answers.downgrade_to_layout_2();
            store.meta.insert("schema", SCHEMA_2).unwrap();
            store.sync().unwrap();
        }
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(&store.meta.get("schema").unwrap().unwrap()[..], SCHEMA);
        for (i, key) in keys.iter().enumerate() {
            assert_eq!(store.get(key).unwrap().unwrap().first_row, i as u64);
        }
        assert_eq!(store.answers.convert_layout_2().unwrap(), 0);
    }

    #[test]
    fn keys_are_salted_and_addresses_never_stored() {
        let dir = tempfile::tempdir().unwrap();
        let one = Store::open(&dir.path().join("a")).unwrap();
        let two = Store::open(&dir.path().join("b")).unwrap();
        let address = "jane.plaintext@example.com";
        assert_ne!(one.key(address), two.key(address));
        one.put(&one.key(address), &answer()).unwrap();
        assert_eq!(one.get(&one.key(address)).unwrap(), Some(answer()));
        assert_eq!(one.get(&one.key("other@example.com")).unwrap(), None);
        one.flush().unwrap();
        drop(one);
        for entry in walk(&dir.path().join("a")) {
            let bytes = std::fs::read(&entry).unwrap();
            assert!(
                !bytes
                    .windows(address.len())
                    .any(|w| w == address.as_bytes()),
                "{entry:?}"
            );
        }
        // Reopened, the same salt finds the same entry.
        let again = Store::open(&dir.path().join("a")).unwrap();
        assert_eq!(again.get(&again.key(address)).unwrap(), Some(answer()));
    }

    fn walk(dir: &Path) -> Vec<PathBuf> {
        let mut files = Vec::new();
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                files.extend(walk(&path));
            } else {
                files.push(path);
            }
        }
        files
    }

    #[test]
    fn a_second_process_is_refused_with_a_message() {
        let dir = tempfile::tempdir().unwrap();
        let _first = Store::open(dir.path()).unwrap();
        let err = Store::open(dir.path()).unwrap_err();
        let text = err.to_string();
        assert!(text.contains(&dir.path().display().to_string()), "{text}");
        assert!(
            text.contains("--state-dir") && text.contains(&std::process::id().to_string()),
            "{text}"
        );
    }

    #[test]
    fn another_schema_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Store::open(dir.path()).unwrap();
            store
                .db
                .open_tree("meta")
                .unwrap()
                .insert("schema", "mailsift-store-0")
                .unwrap();
            store.flush().unwrap();
        }
        let text = Store::open(dir.path()).unwrap_err().to_string();
        assert!(text.contains("another version"), "{text}");
    }

    fn job() -> JobRecord {
        JobRecord {
            input: "in.csv".into(),
            output: "out.csv".into(),
            fingerprint: "f".into(),
            options: "o".into(),
            run: 1,
            state: JobState::Interrupted,
            watermark: Watermark {
                byte: 10,
                line: 2,
                rows: 1,
                output_bytes: 20,
                split_bytes: [0; 3],
            },
            started_at: 1,
            updated_at: 2,
            api_calls: 3,
            credits_spent: 0.1,
            counts: [("valid".to_owned(), 1)].into_iter().collect(),
            input_bytes: 30,
            files: vec![crate::durable::FileSum {
                size: 20,
                blake3: "h".into(),
            }],
            report: Some("{}".into()),
        }
    }

    #[test]
    fn an_older_job_record_loads_and_a_job_can_be_forgotten() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let id = Store::job_id("in.csv", "out.csv");
        let job = job();
        store.save_job(&id, &job).unwrap();
        let saved = store.job(&id).unwrap().unwrap();
        assert_eq!((&saved.files, &saved.report), (&job.files, &job.report));
        // A record of a version that kept no sums and no report still loads.
        let mut old = serde_json::to_value(&job).unwrap();
        old.as_object_mut().unwrap().remove("files");
        old.as_object_mut().unwrap().remove("report");
        let old: JobRecord = serde_json::from_value(old).unwrap();
        assert_eq!((old.files.len(), old.report), (0, None));
        store.remove_job(&id).unwrap();
        assert_eq!(store.job(&id).unwrap(), None);
    }

    #[test]
    fn jobs_read_their_spend_through_the_tally() {
        let dir = tempfile::tempdir().unwrap();
        let id = Store::job_id("in.csv", "out.csv");
        let other = Store::job_id("in.csv", "other.csv");
        assert_ne!(id, other);
        let job = job();
        {
            let store = Store::open(dir.path()).unwrap();
            assert_eq!(store.job(&id).unwrap(), None);
            store.save_job(&id, &job).unwrap();
            assert_eq!(store.job(&id).unwrap(), Some(job.clone()));
            assert_eq!(store.jobs().collect::<Vec<_>>(), vec![job.clone()]);
            // Paid since the checkpoint, with two requests in flight: a crash (no flush).
            let tally = Tally {
                spent: 300_000,
                reserved: 100_000,
                in_flight: 2,
                requests: 9,
            };
            store.set_tally(&id, tally).unwrap();
            assert_eq!(store.tally(&other), None);
        }
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.tally(&id).unwrap().in_flight, 2);
        assert_eq!(store.tally(&other), None, "another job inherits nothing");
        let seen = store.job(&id).unwrap().unwrap();
        assert_eq!((seen.credits_spent, seen.api_calls), (0.4, 9));
        assert_eq!(store.jobs().next().unwrap().credits_spent, 0.4);
        // A checkpoint ahead of the tally (a store of the version before) is kept.
        store
            .set_tally(
                &id,
                Tally {
                    spent: 50_000,
                    ..Tally::default()
                },
            )
            .unwrap();
        assert_eq!(store.job(&id).unwrap().unwrap().credits_spent, 0.1);
    }

    #[test]
    fn markers_of_the_version_before_go_to_the_job_that_was_running() {
        let dir = tempfile::tempdir().unwrap();
        let (running, done) = (
            Store::job_id("in.csv", "out.csv"),
            Store::job_id("b.csv", "out.csv"),
        );
        {
            let store = Store::open(dir.path()).unwrap();
            store
                .save_job(
                    &running,
                    &JobRecord {
                        state: JobState::Running,
                        ..job()
                    },
                )
                .unwrap();
            store
                .save_job(
                    &done,
                    &JobRecord {
                        state: JobState::Done,
                        updated_at: 9,
                        ..job()
                    },
                )
                .unwrap();
            store.set_last_cost(0.05).unwrap();
            store.flush().unwrap();
        }
        let mut markers = vec![0; 16 * 4];
        markers[0] = 1;
        markers[16 * 2] = 1;
        std::fs::write(dir.path().join("answers").join("in-flight"), markers).unwrap();
        let store = Store::open(dir.path()).unwrap();
        let tally = store.tally(&running).unwrap();
        assert_eq!((tally.in_flight, tally.reserved), (2, 100_000));
        assert_eq!(store.tally(&done), None);
        assert!(!dir.path().join("answers").join("in-flight").exists());
        drop(store);
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.tally(&running).unwrap().in_flight, 2, "counted once");
    }

    #[test]
    fn panics_become_errors_and_only_this_threads_are_silenced() {
        let caught = quietly_catching_panics(|| -> u32 { panic!("tried to serialize X") });
        assert_eq!(caught, Err("tried to serialize X".to_owned()));
        let formatted = quietly_catching_panics(|| -> u32 { panic!("{} {}", "page", 7) });
        assert_eq!(formatted, Err("page 7".to_owned()));
        assert_eq!(quietly_catching_panics(|| 5), Ok(5));
        // Outside, panics are reported as before (the hook delegates).
        assert!(!PANICS_ARE_CAUGHT.with(|c| c.get()));
        assert!(std::thread::spawn(|| panic!("elsewhere")).join().is_err());
    }

    #[test]
    fn a_damaged_store_is_a_usage_error_naming_the_directory() {
        let dir = tempfile::tempdir().unwrap();
        drop(Store::open(dir.path()).unwrap());
        std::fs::write(dir.path().join("db").join("conf"), [7u8; 62]).unwrap();
        let err = Store::open(dir.path()).unwrap_err();
        assert_eq!(crate::exit::Exit::for_error(&err), crate::exit::Exit::Usage);
        let text = err.to_string();
        assert!(
            text.contains(&dir.path().display().to_string()) && text.contains("Move it aside"),
            "{text}"
        );
    }
}
