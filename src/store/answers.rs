//! The answer cache on disk, built so that neither memory nor the time to open grows with
//! the number of answers: sled kept ~40 bytes per key in memory and replayed its whole log
//! when opened (benches/RESULTS.md), which a 10-million-row list cannot afford.
//!
//! `<state>/answers/` holds:
//! - `NN.tbl`, one per partition (NN = 00..63, from the key's first byte): a hash table of
//!   4 KiB buckets, each four groups of 32 slots of 32 bytes (12 of key, 18 of value, 2 of
//!   checksum: a damaged slot reads as absent). A key goes into its home group, or when that
//!   is full into the next group of the same bucket with room. A group's used slots come
//!   first; an empty slot is zeros (a value's first byte, its format, is never 0). A lookup is
//!   one 1 KiB read, the home group, unless that group is full (rare below 70% load): then
//!   the whole bucket. When a bucket is full its partition doubles: written whole to
//!   `NN.tbl.tmp`, synced, renamed over the old one.
//! - `details`: append-only records `[len: u32][BLAKE3 of the bytes: 8][bytes]` of what
//!   every address of a domain shares (MX, company), written once per domain; a value points
//!   at one by offset and keeps the first byte of its hash. A record that fails either check
//!   reads as absent: the address is asked again.
//! - `verdicts`: the same records for the verdict proper (status, message, charge,
//!   catch-all), at most 255, each starting with its index; synced as it is added.
//! - `runs`: the run ids, 8 bytes each, synced as they are added; a value holds an index.
//! - `in-flight`: left by the version before, which marked requests in flight there; read
//!   once by [`Answers::take_legacy_markers`] (the job tallies in `../spend` do it now).
//!
//! Every write is a positioned write into a file sized beforehand (a slot never straddles a
//! page): once it returns the data is the kernel's and survives a `kill -9`. [`Answers::sync`],
//! at every checkpoint, makes it survive a power cut too.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use super::{le_uint, locked, read, write, Answer, CacheKey};

const PARTS: usize = 64;
const BUCKET: usize = 4096;
const GROUP: usize = 1024;
const SLOT: usize = 32;
const KEY: usize = 12;
/// A value: `[3] [run index: u16] [first_row: u32] [checked_at: u32] [domain record: 40 bits]
/// [verdict index: u8] [check: u8]`, or, for an answer that does not fit (a row past 2^32, a
/// time outside u32, more than 65,535 runs or 255 verdicts), `[1] [offset of its whole
/// encoding in `details`: 40 bits] [check: u8]`. Little-endian; the check is the first byte of
/// the record's hash, so a value never reads another record than the one it was written with
/// (after a power cut, records lost with the file's tail may be written anew at their offset).
pub(super) const VALUE: usize = 18;
const OFFSET_BITS: u32 = 40;
/// Decoded domain records kept in memory; past it the memo starts over (the file still has
/// everything).
const MEMO: usize = 1 << 16;
const MAX_VERDICTS: usize = 255;
/// No record is this long (ten texts of at most 64 KiB); a longer length is damage.
const MAX_RECORD: usize = 1 << 20;

pub(super) struct Answers {
    dir: PathBuf,
    parts: Vec<RwLock<Part>>,
    /// What writing answers appends to, and its memo.
    logs: Mutex<Logs>,
    /// What reading answers needs: runs and verdicts (all of them), domains (a memo).
    known: RwLock<Known>,
    /// `details`, for reading records without taking `logs`.
    details: Arc<File>,
}

/// One partition's table; no file until its first answer.
struct Part {
    /// Shared with a sync in progress, which runs without the lock.
    file: Option<Arc<File>>,
    buckets: u64,
    dirty: bool,
}

/// An append-only file of records.
struct Log {
    file: Arc<File>,
    len: u64,
    dirty: bool,
}

struct Logs {
    details: Log,
    verdicts: Log,
    runs: File,
    run_index: HashMap<u64, u16>,
    verdict_index: HashMap<Vec<u8>, u8>,
    /// No verdict can be added: 255 there, or the file is damaged (an index could be reused).
    verdicts_full: bool,
    /// Domain records by content, bounded by [`MEMO`].
    domains: HashMap<Vec<u8>, (u64, u8)>,
}

#[derive(Default)]
struct Known {
    runs: Vec<u64>,
    verdicts: Vec<Option<Arc<Answer>>>,
    /// By offset and check byte, as values hold them.
    domains: HashMap<(u64, u8), Arc<Answer>>,
}

impl Answers {
    pub(super) fn open(dir: &Path) -> io::Result<Answers> {
        let dir = dir.join("answers");
        std::fs::create_dir_all(&dir)?;
        let mut parts = Vec::with_capacity(PARTS);
        for part in 0..PARTS {
            let path = table(&dir, part);
            let _ = std::fs::remove_file(path.with_extension("tbl.tmp"));
            let file = match open_rw(&path, false) {
                // Empty: created by a process that died before sizing it (see `put`).
                Ok(file) if file.metadata()?.len() == 0 => None,
                Ok(file) => Some(Arc::new(file)),
                Err(e) if e.kind() == io::ErrorKind::NotFound => None,
                Err(e) => return Err(e),
            };
            let mut buckets = 0;
            if let Some(file) = &file {
                let len = file.metadata()?.len();
                buckets = len / BUCKET as u64;
                if len % BUCKET as u64 != 0 || !buckets.is_power_of_two() {
                    return Err(damaged(&path, "its length is not a whole table"));
                }
            }
            parts.push(RwLock::new(Part {
                file,
                buckets,
                dirty: false,
            }));
        }
        let details = Log::open(&dir.join("details"))?;
        let mut verdicts = Log::open(&dir.join("verdicts"))?;
        let runs_file = open_rw(&dir.join("runs"), true)?;
        let mut bytes = vec![0; runs_file.metadata()?.len() as usize / 8 * 8];
        read_at(&runs_file, &mut bytes, 0)?;
        // Only a crash inside an 8-byte write leaves a partial id: dropped.
        runs_file.set_len(bytes.len() as u64)?;
        let mut known = Known {
            runs: bytes
                .chunks_exact(8)
                .map(|b| u64::from_le_bytes(b.try_into().unwrap_or_default()))
                .collect(),
            ..Known::default()
        };
        let run_index = known
            .runs
            .iter()
            .enumerate()
            .map(|(i, &r)| (r, i as u16))
            .collect();
        // Every verdict record, in order; each says its index. A record cut off by the end of
        // the file was never synced, so no value holds its index: it is dropped. Other damage
        // ends the scan, and then no index is handed out again (values may hold lost ones).
        let mut verdict_index = HashMap::new();
        let mut at = 0;
        let mut verdicts_full = false;
        while at < verdicts.len {
            let Some(record) = read_record(&verdicts.file, at) else {
                let mut head = [0; 4];
                let torn = read_at(&verdicts.file, &mut head, at).is_err()
                    || at + 12 + u64::from(u32::from_le_bytes(head)) > verdicts.len;
                if torn {
                    verdicts.file.set_len(at)?;
                    verdicts.len = at;
                } else {
                    verdicts_full = true;
                }
                break;
            };
            at += 12 + record.len() as u64;
            let (Some(&index), Some(verdict)) =
                (record.first(), Answer::decode_verdict(&record[1..]))
            else {
                verdicts_full = true;
                break;
            };
            let index = usize::from(index);
            if known.verdicts.len() <= index {
                known.verdicts.resize(index + 1, None);
            }
            known.verdicts[index] = Some(Arc::new(verdict));
            verdict_index.insert(record[1..].to_vec(), index as u8);
        }
        verdicts_full |= known.verdicts.len() >= MAX_VERDICTS;
        Ok(Answers {
            parts,
            details: details.file.clone(),
            logs: Mutex::new(Logs {
                details,
                verdicts,
                runs: runs_file,
                run_index,
                verdict_index,
                verdicts_full,
                domains: HashMap::new(),
            }),
            known: RwLock::new(known),
            dir,
        })
    }

    /// The cached answer; a damaged one (or one whose details are lost) reads as absent, so it
    /// is asked again rather than written wrong.
    pub(super) fn get(&self, key: &CacheKey) -> io::Result<Option<Answer>> {
        match self.value(key)? {
            Some(value) => Ok(self.decode(&value)),
            None => Ok(None),
        }
    }

    fn value(&self, key: &CacheKey) -> io::Result<Option<[u8; VALUE]>> {
        let (part, stored) = split(key);
        let part = read(&self.parts[part]);
        let Some(file) = &part.file else {
            return Ok(None);
        };
        let at = bucket_of(&stored, part.buckets) * BUCKET as u64;
        let mut group = [0; GROUP];
        read_at(file, &mut group, at + (home(&stored) * GROUP) as u64)?;
        let used = group.chunks_exact(SLOT).take_while(|s| s[KEY] != 0);
        if let Some(slot) = used.clone().find(|s| s[..KEY] == stored) {
            return Ok(value_of(slot));
        }
        if used.count() < GROUP / SLOT {
            return Ok(None);
        }
        let mut page = [0; BUCKET];
        read_at(file, &mut page, at)?;
        Ok(page
            .chunks_exact(SLOT)
            .find(|s| s[KEY] != 0 && s[..KEY] == stored)
            .and_then(value_of))
    }

    /// Caches an answer; once this returns it survives the process (see the module docs).
    pub(super) fn put(&self, key: &CacheKey, answer: &Answer) -> io::Result<()> {
        let value = self.encode(answer)?;
        let (part, stored) = split(key);
        let path = table(&self.dir, part);
        let mut part = write(&self.parts[part]);
        let mut slot = [0; SLOT];
        slot[..KEY].copy_from_slice(&stored);
        slot[KEY..KEY + VALUE].copy_from_slice(&value);
        let check = checksum(&slot[..KEY + VALUE]);
        slot[KEY + VALUE..].copy_from_slice(&check);
        loop {
            if part.file.is_none() {
                // A `kill -9` before `set_len` leaves it empty: opening takes that as no table.
                let file = open_rw(&path, true)?;
                file.set_len(BUCKET as u64)?;
                *part = Part {
                    file: Some(Arc::new(file)),
                    buckets: 1,
                    dirty: true,
                };
            }
            let file = part.file.as_ref().expect("opened above");
            let bucket = bucket_of(&stored, part.buckets);
            let mut page = [0; BUCKET];
            read_at(file, &mut page, bucket * BUCKET as u64)?;
            let same = page
                .chunks_exact(SLOT)
                .position(|s| s[KEY] != 0 && s[..KEY] == stored);
            if let Some(i) = same.or_else(|| free_slot(&page, &stored)) {
                write_at(file, &slot, bucket * BUCKET as u64 + (i * SLOT) as u64)?;
                part.dirty = true;
                return Ok(());
            }
            grow(&mut part, &path)?;
        }
    }

    /// Every cached answer that decodes.
    pub(super) fn all(&self) -> impl Iterator<Item = Answer> + '_ {
        (0..PARTS).flat_map(move |part| {
            let mut found = Vec::new();
            let _ = self.each_page(part, |page| {
                for slot in page.chunks_exact(SLOT).filter(|s| s[KEY] != 0) {
                    if let Some(answer) = value_of(slot).and_then(|v| self.decode(&v)) {
                        found.push(answer);
                    }
                }
                false
            });
            found
        })
    }

    /// Removes the answers for which `remove` says so (and any that no longer decode);
    /// returns how many.
    pub(super) fn retain(&self, remove: impl Fn(&Answer) -> bool) -> io::Result<u64> {
        let mut removed = 0;
        for part in 0..PARTS {
            self.each_page(part, |page| {
                let used: Vec<[u8; SLOT]> = page
                    .chunks_exact(SLOT)
                    .filter(|s| s[KEY] != 0)
                    .filter_map(|s| s.try_into().ok())
                    .collect();
                let kept: Vec<&[u8; SLOT]> = used
                    .iter()
                    .filter(|s| {
                        let answer = value_of(&s[..]).and_then(|v| self.decode(&v));
                        answer.is_some_and(|a| !remove(&a))
                    })
                    .collect();
                if kept.len() == used.len() {
                    return false;
                }
                removed += (used.len() - kept.len()) as u64;
                // Placed again from scratch, so every key is in its home group if it fits.
                page.fill(0);
                for slot in kept {
                    place(page, slot);
                }
                true
            })?;
        }
        Ok(removed)
    }

    /// Calls `f` on every bucket of a partition; writes the page back when `f` says it changed.
    fn each_page(
        &self,
        part: usize,
        mut f: impl FnMut(&mut [u8; BUCKET]) -> bool,
    ) -> io::Result<()> {
        let mut part = write(&self.parts[part]);
        let Some(file) = &part.file else {
            return Ok(());
        };
        let mut changed = false;
        let mut page = [0; BUCKET];
        for bucket in 0..part.buckets {
            let at = bucket * BUCKET as u64;
            read_at(file, &mut page, at)?;
            if f(&mut page) {
                write_at(file, &page, at)?;
                changed = true;
            }
        }
        part.dirty |= changed;
        Ok(())
    }

    /// Makes every answer written so far survive a power cut. The files are synced without
    /// their locks held (a sync can take long), so lookups and answers go on meanwhile.
    pub(super) fn sync(&self) -> io::Result<()> {
        // The records first, so a table synced never points past them.
        let details = {
            let mut logs = locked(&self.logs);
            std::mem::take(&mut logs.details.dirty).then(|| logs.details.file.clone())
        };
        if let Some(file) = details {
            file.sync_data()
                .inspect_err(|_| locked(&self.logs).details.dirty = true)?;
        }
        for part in &self.parts {
            let file = {
                let mut part = write(part);
                std::mem::take(&mut part.dirty)
                    .then(|| part.file.clone())
                    .flatten()
            };
            if let Some(file) = file {
                file.sync_data().inspect_err(|_| write(part).dirty = true)?;
            }
        }
        Ok(())
    }

    /// Bytes on disk.
    pub(super) fn size(&self) -> u64 {
        std::fs::read_dir(&self.dir)
            .into_iter()
            .flatten()
            .filter_map(|e| e.ok()?.metadata().ok())
            .map(|m| m.len())
            .sum()
    }

    /// How many requests the version before left marked in flight (`in-flight`, one 16-byte
    /// key per slot, zeros when free).
    pub(super) fn legacy_markers(&self) -> io::Result<u64> {
        match std::fs::read(self.dir.join("in-flight")) {
            Ok(bytes) => Ok(bytes
                .chunks_exact(16)
                .filter(|k| k.iter().any(|&b| b != 0))
                .count() as u64),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(0),
            Err(e) => Err(e),
        }
    }

    /// Removes the markers of the version before, once they are counted elsewhere.
    pub(super) fn drop_legacy_markers(&self) -> io::Result<()> {
        match std::fs::remove_file(self.dir.join("in-flight")) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    fn encode(&self, answer: &Answer) -> io::Result<[u8; VALUE]> {
        let mut logs = locked(&self.logs);
        let mut out = [0; VALUE];
        let run = self.run_index(&mut logs, answer.run)?;
        let verdict = self.verdict_index(&mut logs, answer)?;
        let (Some(run), Some(verdict), Ok(checked_at), Ok(first_row)) = (
            run,
            verdict,
            u32::try_from(answer.checked_at),
            u32::try_from(answer.first_row),
        ) else {
            let (offset, check) = logs.details.append(&answer.encode())?;
            out[0] = 1;
            out[1..6].copy_from_slice(&offset.to_le_bytes()[..5]);
            out[6] = check;
            return Ok(out);
        };
        let domain = answer.encode_domain();
        let (offset, check) = match logs.domains.get(&domain) {
            Some(&found) => found,
            None => {
                let found = logs.details.append(&domain)?;
                if logs.domains.len() >= MEMO {
                    logs.domains.clear();
                }
                logs.domains.insert(domain, found);
                found
            }
        };
        out[0] = 3;
        out[1..3].copy_from_slice(&run.to_le_bytes());
        out[3..7].copy_from_slice(&first_row.to_le_bytes());
        out[7..11].copy_from_slice(&checked_at.to_le_bytes());
        out[11..16].copy_from_slice(&offset.to_le_bytes()[..5]);
        out[16] = verdict;
        out[17] = check;
        Ok(out)
    }

    /// The index of a run, recording a new one; `None` past 65,535 runs.
    fn run_index(&self, logs: &mut Logs, run: u64) -> io::Result<Option<u16>> {
        if let Some(&index) = logs.run_index.get(&run) {
            return Ok(Some(index));
        }
        let Ok(index) = u16::try_from(logs.run_index.len()) else {
            return Ok(None);
        };
        write_at(&logs.runs, &run.to_le_bytes(), u64::from(index) * 8)?;
        // Synced before any value holds the index (once per run).
        logs.runs.sync_data()?;
        write(&self.known).runs.push(run);
        logs.run_index.insert(run, index);
        Ok(Some(index))
    }

    /// The index of an answer's verdict, recording a new one; `None` when none is left.
    fn verdict_index(&self, logs: &mut Logs, answer: &Answer) -> io::Result<Option<u8>> {
        let bytes = answer.encode_verdict();
        if let Some(&index) = logs.verdict_index.get(&bytes) {
            return Ok(Some(index));
        }
        if logs.verdicts_full {
            return Ok(None);
        }
        let mut known = write(&self.known);
        let index = known.verdicts.len() as u8;
        let mut record = vec![index];
        record.extend_from_slice(&bytes);
        logs.verdicts.append(&record)?;
        logs.verdicts.sync()?;
        known
            .verdicts
            .push(Answer::decode_verdict(&bytes).map(Arc::new));
        logs.verdicts_full = known.verdicts.len() >= MAX_VERDICTS;
        logs.verdict_index.insert(bytes, index);
        Ok(Some(index))
    }

    fn decode(&self, value: &[u8; VALUE]) -> Option<Answer> {
        match value[0] {
            1 => Answer::decode(&self.record(le_uint(&value[1..6]), value[6])?),
            3 => {
                let offset = le_uint(&value[11..16]);
                let (run, verdict, domain) = {
                    let known = read(&self.known);
                    (
                        *known.runs.get(le_uint(&value[1..3]) as usize)?,
                        known.verdicts.get(usize::from(value[16]))?.clone()?,
                        known.domains.get(&(offset, value[17])).cloned(),
                    )
                };
                let domain = match domain {
                    Some(domain) => domain,
                    None => {
                        let bytes = self.record(offset, value[17])?;
                        let domain = Arc::new(Answer::decode_domain(&bytes)?);
                        let mut known = write(&self.known);
                        if known.domains.len() >= MEMO {
                            known.domains.clear();
                        }
                        known.domains.insert((offset, value[17]), domain.clone());
                        domain
                    }
                };
                Some(Answer {
                    run,
                    first_row: le_uint(&value[3..7]),
                    checked_at: le_uint(&value[7..11]) as i64,
                    ..verdict.with_domain(&domain)
                })
            }
            _ => None,
        }
    }

    /// The `details` record at `offset` if it is whole and the one the value was written with.
    fn record(&self, offset: u64, check: u8) -> Option<Vec<u8>> {
        read_record(&self.details, offset).filter(|r| blake3::hash(r).as_bytes()[0] == check)
    }
}

impl Log {
    fn open(path: &Path) -> io::Result<Log> {
        let file = open_rw(path, true)?;
        Ok(Log {
            len: file.metadata()?.len(),
            file: Arc::new(file),
            dirty: false,
        })
    }

    /// Appends a record; returns its offset and the first byte of its hash.
    fn append(&mut self, bytes: &[u8]) -> io::Result<(u64, u8)> {
        let offset = self.len;
        if offset >= 1 << OFFSET_BITS || bytes.len() > MAX_RECORD {
            return Err(io::Error::other("the answer cache's details file is full"));
        }
        let hash = blake3::hash(bytes);
        let mut record = Vec::with_capacity(12 + bytes.len());
        record.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
        record.extend_from_slice(&hash.as_bytes()[..8]);
        record.extend_from_slice(bytes);
        write_at(&self.file, &record, offset)?;
        self.len += record.len() as u64;
        self.dirty = true;
        Ok((offset, hash.as_bytes()[0]))
    }

    fn sync(&mut self) -> io::Result<()> {
        if self.dirty {
            self.file.sync_data()?;
            self.dirty = false;
        }
        Ok(())
    }
}

/// The record at `offset`, if it is whole and its hash matches.
fn read_record(file: &File, offset: u64) -> Option<Vec<u8>> {
    let mut head = [0; 12];
    read_at(file, &mut head, offset).ok()?;
    let len = u32::from_le_bytes(head[..4].try_into().ok()?) as usize;
    if len > MAX_RECORD {
        return None;
    }
    let mut bytes = vec![0; len];
    read_at(file, &mut bytes, offset + 12).ok()?;
    (blake3::hash(&bytes).as_bytes()[..8] == head[4..]).then_some(bytes)
}

/// Doubles a partition until every bucket has room: rewritten whole beside the old table,
/// synced, then renamed over it, so a crash leaves one or the other.
fn grow(part: &mut Part, path: &Path) -> io::Result<()> {
    let file = part
        .file
        .as_ref()
        .expect("only a table that exists is full");
    let mut old = vec![0; part.buckets as usize * BUCKET];
    read_at(file, &mut old, 0)?;
    let mut buckets = part.buckets * 2;
    let new = loop {
        let mut new = vec![0; buckets as usize * BUCKET];
        // Damaged slots are left behind: they would read as absent anyway.
        let fits = old
            .chunks_exact(SLOT)
            .filter(|s| s[KEY] != 0 && value_of(s).is_some())
            .filter_map(|s| <&[u8; SLOT]>::try_from(s).ok())
            .all(|slot| {
                let stored: [u8; KEY] = slot[..KEY].try_into().unwrap_or_default();
                let at = bucket_of(&stored, buckets) as usize * BUCKET;
                let page: &mut [u8; BUCKET] = (&mut new[at..at + BUCKET])
                    .try_into()
                    .expect("a whole bucket");
                place(page, slot)
            });
        if fits {
            break new;
        }
        // 128 keys alike in 64 bits do not happen by chance.
        if buckets >= part.buckets << 8 {
            return Err(damaged(path, "too many keys alike to place"));
        }
        buckets *= 2;
    };
    let tmp = path.with_extension("tbl.tmp");
    {
        let file = open_rw(&tmp, true)?;
        file.set_len(0)?;
        write_at(&file, &new, 0)?;
        file.sync_data()?;
    }
    std::fs::rename(&tmp, path)?;
    part.file = Some(Arc::new(open_rw(path, false)?));
    part.buckets = buckets;
    part.dirty = true;
    Ok(())
}

/// The first free slot for a key in a bucket: in its home group, else in the next group with
/// room.
fn free_slot(page: &[u8; BUCKET], stored: &[u8; KEY]) -> Option<usize> {
    let per_group = GROUP / SLOT;
    let groups = BUCKET / GROUP;
    (0..groups)
        .map(|g| (home(stored) + g) % groups)
        .find_map(|g| (g * per_group..(g + 1) * per_group).find(|&i| page[i * SLOT + KEY] == 0))
}

/// Puts a slot into a bucket that does not hold its key; false when the bucket is full.
fn place(page: &mut [u8; BUCKET], slot: &[u8; SLOT]) -> bool {
    let stored: [u8; KEY] = slot[..KEY].try_into().unwrap_or_default();
    match free_slot(page, &stored) {
        Some(i) => {
            page[i * SLOT..(i + 1) * SLOT].copy_from_slice(slot);
            true
        }
        None => false,
    }
}

/// A key's home group within its bucket (bits the bucket index does not use).
fn home(stored: &[u8; KEY]) -> usize {
    usize::from(stored[0]) % (BUCKET / GROUP)
}

fn table(dir: &Path, part: usize) -> PathBuf {
    dir.join(format!("{part:02}.tbl"))
}

/// A slot's value, if its checksum holds (damage reads as absent: asked again).
fn value_of(slot: &[u8]) -> Option<[u8; VALUE]> {
    let (body, check) = slot.split_at(KEY + VALUE);
    (checksum(body) == check).then(|| body[KEY..].try_into().ok())?
}

/// 16 bits of FNV-1a: catches damaged slots (a flipped byte, a torn page), not attacks.
fn checksum(bytes: &[u8]) -> [u8; 2] {
    let hash = bytes.iter().fold(0x811c_9dc5_u32, |h, &b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    });
    ((hash >> 16) as u16 ^ hash as u16).to_le_bytes()
}

/// The partition of a key and the bytes of it a slot keeps.
fn split(key: &CacheKey) -> (usize, [u8; KEY]) {
    let mut stored = [0; KEY];
    stored.copy_from_slice(&key[16 - KEY..]);
    (usize::from(key[0]) % PARTS, stored)
}

fn bucket_of(stored: &[u8; KEY], buckets: u64) -> u64 {
    let mut bits = [0; 8];
    bits.copy_from_slice(&stored[KEY - 8..]);
    u64::from_le_bytes(bits) & (buckets - 1)
}

pub(super) fn open_rw(path: &Path, create: bool) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(create)
        .truncate(false)
        .open(path)
}

fn damaged(path: &Path, why: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("{} is damaged: {why}", path.display()),
    )
}

#[cfg(unix)]
pub(super) fn read_at(file: &File, buf: &mut [u8], at: u64) -> io::Result<()> {
    std::os::unix::fs::FileExt::read_exact_at(file, buf, at)
}

#[cfg(unix)]
pub(super) fn write_at(file: &File, buf: &[u8], at: u64) -> io::Result<()> {
    std::os::unix::fs::FileExt::write_all_at(file, buf, at)
}

#[cfg(windows)]
pub(super) fn read_at(file: &File, mut buf: &mut [u8], mut at: u64) -> io::Result<()> {
    while !buf.is_empty() {
        match std::os::windows::fs::FileExt::seek_read(file, buf, at)? {
            0 => return Err(io::ErrorKind::UnexpectedEof.into()),
            n => {
                buf = &mut std::mem::take(&mut buf)[n..];
                at += n as u64;
            }
        }
    }
    Ok(())
}

#[cfg(windows)]
pub(super) fn write_at(file: &File, mut buf: &[u8], mut at: u64) -> io::Result<()> {
    while !buf.is_empty() {
        let n = std::os::windows::fs::FileExt::seek_write(file, buf, at)?;
        buf = &buf[n..];
        at += n as u64;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(row: u64, checked_at: i64) -> Answer {
        Answer {
            status: Some(crate::client::Status::Valid),
            credits: 1.0,
            checked_at,
            run: 9,
            first_row: row,
            ..Answer::default()
        }
    }

    fn key(i: u64) -> CacheKey {
        let mut key = [0; 16];
        key.copy_from_slice(&blake3::hash(&i.to_le_bytes()).as_bytes()[..16]);
        key
    }

    #[test]
    fn tables_grow_and_keep_every_answer() {
        let dir = tempfile::tempdir().unwrap();
        let n = 40_000;
        {
            let answers = Answers::open(dir.path()).unwrap();
            for i in 0..n {
                answers.put(&key(i), &answer(i, 1_000 + i as i64)).unwrap();
            }
            for i in (0..n).step_by(97) {
                assert_eq!(
                    answers.get(&key(i)).unwrap(),
                    Some(answer(i, 1_000 + i as i64))
                );
            }
            assert_eq!(answers.get(&key(n)).unwrap(), None);
        }
        let tables = dir.path().join("answers");
        // 40,000 answers over 64 partitions: grown from one bucket each, by doubling.
        let sizes: Vec<u64> = (0..PARTS)
            .map(|p| std::fs::metadata(table(&tables, p)).unwrap().len())
            .collect();
        assert!(sizes.iter().all(|&s| s >= 4 * BUCKET as u64), "{sizes:?}");
        assert!(sizes.iter().sum::<u64>() < 40 * 1024 * 1024, "{sizes:?}");
        // A table doubled but not yet renamed (a crash in between) is dropped on opening.
        std::fs::write(table(&tables, 3).with_extension("tbl.tmp"), b"half").unwrap();
        let answers = Answers::open(dir.path()).unwrap();
        assert!(!table(&tables, 3).with_extension("tbl.tmp").exists());
        for i in 0..n {
            assert_eq!(answers.get(&key(i)).unwrap().map(|a| a.first_row), Some(i));
        }
        assert_eq!(answers.all().count(), n as usize);
        // Removal keeps the rest findable (used slots stay first in their bucket).
        assert_eq!(
            answers
                .retain(|a| a.checked_at < 1_000 + n as i64 / 2)
                .unwrap(),
            n / 2
        );
        for i in 0..n {
            let found = answers.get(&key(i)).unwrap().is_some();
            assert_eq!(found, i >= n / 2, "{i}");
        }
        answers.put(&key(1), &answer(1, 5)).unwrap();
        assert_eq!(answers.get(&key(1)).unwrap(), Some(answer(1, 5)));
    }

    #[test]
    fn a_full_home_group_overflows_into_the_rest_of_its_bucket() {
        let dir = tempfile::tempdir().unwrap();
        let answers = Answers::open(dir.path()).unwrap();
        // Partition 0, home group 0: one bucket holds them all until it has 128.
        let crowded = |i: u64| {
            let mut k = key(i);
            k[0] = 0;
            k[2] = 0;
            k
        };
        for i in 0..100 {
            answers.put(&crowded(i), &answer(i, i as i64)).unwrap();
        }
        let tables = dir.path().join("answers");
        assert_eq!(
            std::fs::metadata(table(&tables, 0)).unwrap().len(),
            BUCKET as u64
        );
        for i in 0..100 {
            assert_eq!(
                answers.get(&crowded(i)).unwrap().map(|a| a.first_row),
                Some(i)
            );
        }
        assert_eq!(answers.get(&crowded(100)).unwrap(), None);
        // Removing some places the rest again, home first: all still found.
        assert_eq!(answers.retain(|a| a.first_row % 3 == 0).unwrap(), 34);
        for i in 0..100 {
            assert_eq!(
                answers.get(&crowded(i)).unwrap().is_some(),
                i % 3 != 0,
                "{i}"
            );
        }
        // Past 128 the table doubles; keys that share 64 more bits may need more.
        for i in 100..400 {
            answers.put(&crowded(i), &answer(i, i as i64)).unwrap();
        }
        for i in 100..400 {
            assert_eq!(
                answers.get(&crowded(i)).unwrap().map(|a| a.first_row),
                Some(i)
            );
        }
    }

    #[test]
    fn verdicts_are_indexed_up_to_255_and_past_that_answers_are_stored_whole() {
        let dir = tempfile::tempdir().unwrap();
        let distinct = |i: u64| Answer {
            message: Some(format!("message {i}")),
            mx_provider: Some("Google".into()),
            ..answer(i, 1_700_000_000)
        };
        {
            let answers = Answers::open(dir.path()).unwrap();
            for i in 0..300 {
                answers.put(&key(i), &distinct(i)).unwrap();
                assert_eq!(answers.get(&key(i)).unwrap(), Some(distinct(i)));
            }
        }
        let answers = Answers::open(dir.path()).unwrap();
        for i in 0..300 {
            assert_eq!(answers.get(&key(i)).unwrap(), Some(distinct(i)), "{i}");
        }
        assert_eq!(read(&answers.known).verdicts.len(), MAX_VERDICTS);
        // A record cut short at the end (a crash while adding it): dropped, and the index
        // given to the next new verdict.
        let path = dir.path().join("answers").join("verdicts");
        let intact = std::fs::read(&path).unwrap();
        std::fs::write(&path, &intact[..intact.len() - 5]).unwrap();
        let answers = Answers::open(dir.path()).unwrap();
        assert_eq!(answers.get(&key(0)).unwrap(), Some(distinct(0)));
        assert_eq!(answers.get(&key(254)).unwrap(), None);
        assert_eq!(read(&answers.known).verdicts.len(), MAX_VERDICTS - 1);
        answers.put(&key(254), &distinct(254)).unwrap();
        assert_eq!(answers.get(&key(254)).unwrap(), Some(distinct(254)));
        drop(answers);
        // A damaged verdicts file: the intact ones still read, and no index is given twice.
        let mut bytes = std::fs::read(&path).unwrap();
        let len = bytes.len();
        bytes[len - 3] ^= 1;
        std::fs::write(&path, bytes).unwrap();
        let answers = Answers::open(dir.path()).unwrap();
        assert_eq!(answers.get(&key(0)).unwrap(), Some(distinct(0)));
        assert_eq!(answers.get(&key(254)).unwrap(), None);
        answers.put(&key(999), &distinct(999)).unwrap();
        assert_eq!(answers.get(&key(999)).unwrap(), Some(distinct(999)));
        assert_eq!(read(&answers.known).verdicts.len(), MAX_VERDICTS - 1);
    }

    #[test]
    fn a_value_never_reads_a_record_written_later_at_its_offset() {
        // After a power cut the tail of `details` may be lost and written anew: a value that
        // survived must not take the new record at its offset for its own.
        let dir = tempfile::tempdir().unwrap();
        let with_mx = |mx: &str| Answer {
            mx_provider: Some(mx.into()),
            ..answer(1, 5)
        };
        let first = with_mx("first.example");
        {
            let answers = Answers::open(dir.path()).unwrap();
            answers.put(&key(1), &first).unwrap();
        }
        let path = dir.path().join("answers").join("details");
        let check = blake3::hash(&first.encode_domain()).as_bytes()[0];
        let other = (0..)
            .map(|i| with_mx(&format!("other{i}.example")))
            .find(|a| blake3::hash(&a.encode_domain()).as_bytes()[0] != check)
            .unwrap();
        std::fs::write(&path, b"").unwrap();
        let answers = Answers::open(dir.path()).unwrap();
        answers.put(&key(2), &other).unwrap();
        assert_eq!(answers.get(&key(2)).unwrap(), Some(other));
        assert_eq!(answers.get(&key(1)).unwrap(), None);
    }

    #[test]
    fn a_damaged_slot_reads_as_absent_and_growing_leaves_it_behind() {
        let dir = tempfile::tempdir().unwrap();
        let answers = Answers::open(dir.path()).unwrap();
        let crowded = |i: u64| {
            let mut k = key(i);
            k[0] = 0;
            k
        };
        for i in 0..100 {
            answers.put(&crowded(i), &answer(i, 1)).unwrap();
        }
        // One bit of one stored value flips on disk.
        let path = table(&dir.path().join("answers"), 0);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[KEY + 5] ^= 0x10;
        std::fs::write(&path, bytes).unwrap();
        let lost: Vec<u64> = (0..100)
            .filter(|&i| answers.get(&crowded(i)).unwrap().is_none())
            .collect();
        assert_eq!(lost.len(), 1);
        // More answers double the table (one bucket holds 128): the damaged slot stays behind.
        for i in 100..300 {
            answers.put(&crowded(i), &answer(i, 1)).unwrap();
        }
        assert!(std::fs::metadata(&path).unwrap().len() > BUCKET as u64);
        assert_eq!(answers.all().count(), 299);
        assert_eq!(answers.get(&crowded(lost[0])).unwrap(), None);
        // Asked again, it is stored again.
        answers.put(&crowded(lost[0]), &answer(lost[0], 1)).unwrap();
        assert_eq!(answers.all().count(), 300);
    }

    #[test]
    fn a_table_of_a_damaged_length_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        {
            let answers = Answers::open(dir.path()).unwrap();
            for i in 0..200 {
                answers.put(&key(i), &answer(i, 1)).unwrap();
            }
        }
        // Empty (a `kill -9` between creating and sizing it): no table yet, and usable.
        let empty = table(&dir.path().join("answers"), 1);
        std::fs::write(&empty, b"").unwrap();
        {
            let answers = Answers::open(dir.path()).unwrap();
            let mut k = key(7);
            k[0] = 1;
            answers.put(&k, &answer(7, 1)).unwrap();
            assert_eq!(answers.get(&k).unwrap(), Some(answer(7, 1)));
        }
        let path = table(&dir.path().join("answers"), 0);
        let file = OpenOptions::new().write(true).open(&path).unwrap();
        file.set_len(3 * BUCKET as u64).unwrap();
        let err = Answers::open(dir.path()).err().unwrap();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        assert!(err.to_string().contains("00.tbl"), "{err}");
    }

    #[test]
    fn markers_of_the_version_before_are_counted_once() {
        let dir = tempfile::tempdir().unwrap();
        let answers = Answers::open(dir.path()).unwrap();
        assert_eq!(answers.legacy_markers().unwrap(), 0);
        let mut bytes = vec![0; 16 * 5];
        bytes[3] = 1;
        bytes[16 * 4 + 15] = 9;
        std::fs::write(dir.path().join("answers").join("in-flight"), bytes).unwrap();
        assert_eq!(answers.legacy_markers().unwrap(), 2);
        answers.drop_legacy_markers().unwrap();
        assert_eq!(answers.legacy_markers().unwrap(), 0);
        answers.drop_legacy_markers().unwrap();
    }
}
