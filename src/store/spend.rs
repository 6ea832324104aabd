//! What each job has spent, and how many of its requests are in flight, written with every
//! request sent and every answer stored, so a `kill -9` never forgets money spent.
//!
//! `<state>/spend` holds, per job, two 64-byte copies of its tally (128 bytes, so a pair never
//! straddles a page): `[job id: 16] [seq: u64] [spent: u64] [reserved: u64] [in flight: u64]
//! [requests: u64] [check: 8]`, credits in millionths, little-endian, the check the first
//! 8 bytes of the BLAKE3 of the rest. An update goes to the copy `seq % 2`; reading takes the
//! valid copy with the higher `seq`, so a copy torn by a kill or a power cut leaves the one
//! before. A new job's pair is written whole at the end of the file (a positioned write, so
//! the file system has found room for it); every later update is a copy of 64 bytes into the
//! file mapped shared, like the answer tables (`answers.rs`): no system call, and in the page
//! cache (so it survives a `kill -9`) the moment the copy ends. Two updates per request (sent,
//! answered) made this write the one system call left per row (issue 15). A `fsync` of the
//! file at every checkpoint (the store's syncer) makes the tallies survive a power cut too.

use foldhash::{HashMap, HashMapExt};
use std::fs::File;
use std::io;
use std::path::Path;

use memmap2::MmapMut;

use super::answers::{open_rw, read_at, write_at};

const COPY: usize = 64;
const PAIR: usize = 2 * COPY;

/// A job's tally. Credits in millionths.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tally {
    /// Charged: every answer's `credits_consumed`, and the worst case of every request whose
    /// outcome was never known.
    pub spent: u64,
    /// The worst case of the requests in flight.
    pub reserved: u64,
    /// Requests sent whose answer is not stored yet (after a crash: their outcome is unknown).
    pub in_flight: u64,
    /// Requests sent, all runs of the job together.
    pub requests: u64,
}

impl Tally {
    /// What the job may have been charged: its requests in flight at their worst case.
    pub fn worst(&self) -> u64 {
        self.spent + self.reserved
    }
}

pub(super) struct Spend {
    file: File,
    /// The file mapped shared (`None` while it is empty).
    map: Option<MmapMut>,
    /// Each job's pair index and latest tally and seq.
    jobs: HashMap<[u8; 16], (u64, Tally, u64)>,
    /// The pair a new job gets: past every pair in the file, readable or not.
    next: u64,
}

impl Spend {
    pub(super) fn open(path: &Path) -> io::Result<Spend> {
        let file = open_rw(path, true)?;
        let len = file.metadata()?.len();
        let (pairs, next) = (len / PAIR as u64, len.div_ceil(PAIR as u64));
        let mut bytes = vec![0; pairs as usize * PAIR];
        read_at(&file, &mut bytes, 0)?;
        let mut jobs = HashMap::new();
        for (index, pair) in bytes.chunks_exact(PAIR).enumerate() {
            let newest = pair
                .chunks_exact(COPY)
                .filter_map(decode)
                .max_by_key(|(_, seq, _)| *seq);
            if let Some((job, seq, tally)) = newest {
                jobs.insert(job, (index as u64, tally, seq));
            }
        }
        let map = Self::map(&file)?;
        Ok(Spend {
            file,
            map,
            jobs,
            next,
        })
    }

    fn map(file: &File) -> io::Result<Option<MmapMut>> {
        if file.metadata()?.len() == 0 {
            return Ok(None);
        }
        // SAFETY: a map is unsound if the file changes under it other than through it. Only
        // this process writes the file (the state directory's lock keeps out every other
        // mailsift), through this map or through `write_at` past its end, and never
        // truncates it; other processes only read it ([`Spend::read`]). A file cut short by
        // another program would end the process with SIGBUS, not read wrong.
        Ok(Some(unsafe { MmapMut::map_mut(file)? }))
    }

    /// A job's tally, read without opening the store (another process may be writing it:
    /// a copy caught mid-write fails its check, and the other copy is read).
    pub(super) fn read(path: &Path, job: &[u8; 16]) -> Option<Tally> {
        let bytes = std::fs::read(path).ok()?;
        bytes
            .chunks_exact(COPY)
            .filter_map(decode)
            .filter(|(id, _, _)| id == job)
            .max_by_key(|(_, seq, _)| *seq)
            .map(|(_, _, tally)| tally)
    }

    pub(super) fn get(&self, job: &[u8; 16]) -> Option<Tally> {
        self.jobs.get(job).map(|(_, tally, _)| *tally)
    }

    /// Records a job's tally; once this returns it survives the process.
    pub(super) fn set(&mut self, job: &[u8; 16], tally: Tally) -> io::Result<()> {
        let Some(&(index, _, seq)) = self.jobs.get(job) else {
            // A new pair, written whole (copy 1 holds seq 1, copy 0 nothing valid yet) past
            // every pair in the file, then mapped with the rest.
            let index = self.next;
            let mut pair = [0; PAIR];
            pair[COPY..].copy_from_slice(&encode(job, 1, &tally));
            write_at(&self.file, &pair, index * PAIR as u64)?;
            self.map = Self::map(&self.file)?;
            self.next += 1;
            self.jobs.insert(*job, (index, tally, 1));
            return Ok(());
        };
        let seq = seq + 1;
        let at = (index * PAIR as u64 + (seq % 2) * COPY as u64) as usize;
        let copy = self
            .map
            .as_mut()
            .and_then(|map| map.get_mut(at..at + COPY))
            .ok_or_else(|| io::Error::other("a job's tally lies past the end of its file"))?;
        copy.copy_from_slice(&encode(job, seq, &tally));
        self.jobs.insert(*job, (index, tally, seq));
        Ok(())
    }

    /// The file, for syncing without the lock.
    pub(super) fn file(&self) -> io::Result<File> {
        self.file.try_clone()
    }
}

fn encode(job: &[u8; 16], seq: u64, t: &Tally) -> [u8; COPY] {
    let mut out = [0; COPY];
    out[..16].copy_from_slice(job);
    for (i, n) in [seq, t.spent, t.reserved, t.in_flight, t.requests]
        .iter()
        .enumerate()
    {
        out[16 + i * 8..24 + i * 8].copy_from_slice(&n.to_le_bytes());
    }
    let check = blake3::hash(&out[..56]);
    out[56..].copy_from_slice(&check.as_bytes()[..8]);
    out
}

fn decode(copy: &[u8]) -> Option<([u8; 16], u64, Tally)> {
    if blake3::hash(&copy[..56]).as_bytes()[..8] != copy[56..64] {
        return None;
    }
    let n = |i: usize| super::le_uint(&copy[16 + i * 8..24 + i * 8]);
    Some((
        copy[..16].try_into().ok()?,
        n(0),
        Tally {
            spent: n(1),
            reserved: n(2),
            in_flight: n(3),
            requests: n(4),
        },
    ))
}

/// Credits in millionths, as tallies keep them (negative and non-finite amounts are 0).
pub fn micros(credits: f64) -> u64 {
    if credits.is_finite() && credits > 0.0 {
        (credits * 1e6).round() as u64
    } else {
        0
    }
}

/// Millionths back to credits.
pub fn credits(micros: u64) -> f64 {
    micros as f64 / 1e6
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tally(n: u64) -> Tally {
        Tally {
            spent: n * 50_000,
            reserved: n,
            in_flight: n % 7,
            requests: n * 3,
        }
    }

    #[test]
    fn tallies_survive_the_process_and_a_torn_copy_reads_as_the_one_before() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("spend");
        let (a, b) = ([1; 16], [2; 16]);
        {
            let mut spend = Spend::open(&path).unwrap();
            assert_eq!(spend.get(&a), None);
            for n in 1..=10 {
                spend.set(&a, tally(n)).unwrap();
                spend.set(&b, tally(100 + n)).unwrap();
            }
        }
        // Not synced, not closed cleanly: what a `kill -9` leaves.
        let spend = Spend::open(&path).unwrap();
        assert_eq!(
            (spend.get(&a), spend.get(&b)),
            (Some(tally(10)), Some(tally(110)))
        );
        drop(spend);
        // A power cut tears the last write of job a (seq 10, copy 0): the one before holds.
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[30] ^= 0xff;
        std::fs::write(&path, &bytes).unwrap();
        let mut spend = Spend::open(&path).unwrap();
        assert_eq!(spend.get(&a), Some(tally(9)));
        assert_eq!(spend.get(&b), Some(tally(110)));
        // And goes on from there.
        spend.set(&a, tally(20)).unwrap();
        drop(spend);
        assert_eq!(Spend::open(&path).unwrap().get(&a), Some(tally(20)));
        // A file cut short (a new job's pair half written): the jobs before are intact.
        let len = std::fs::metadata(&path).unwrap().len();
        let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        file.set_len(len + 40).unwrap();
        let spend = Spend::open(&path).unwrap();
        assert_eq!(spend.get(&b), Some(tally(110)));
    }

    #[test]
    fn a_tally_is_in_the_file_the_moment_set_returns() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("spend");
        let (a, b) = ([1; 16], [2; 16]);
        let mut spend = Spend::open(&path).unwrap();
        for n in 1..=5 {
            spend.set(&a, tally(n)).unwrap();
            // Another process reads the file while this one still holds it.
            assert_eq!(Spend::read(&path, &a), Some(tally(n)));
        }
        // A job added later (the file grows and is mapped again) and one opened before.
        spend.set(&b, tally(7)).unwrap();
        spend.set(&a, tally(6)).unwrap();
        spend.set(&b, tally(8)).unwrap();
        assert_eq!(Spend::read(&path, &b), Some(tally(8)));
        // A `kill -9`: no destructor runs, nothing is synced or unmapped.
        std::mem::forget(spend);
        let spend = Spend::open(&path).unwrap();
        assert_eq!(
            (spend.get(&a), spend.get(&b)),
            (Some(tally(6)), Some(tally(8)))
        );
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 2 * PAIR as u64);
    }

    #[test]
    fn micros_round_and_refuse_nonsense() {
        assert_eq!(micros(0.05) * 20, micros(1.0));
        assert_eq!(micros(-1.0), 0);
        assert_eq!(micros(f64::NAN), 0);
        assert_eq!(credits(micros(29.75)), 29.75);
    }
}
