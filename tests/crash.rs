//! Crash and resume (issue 4): the real binary against the mock with latency, stopped at seeded
//! random moments by SIGKILL, SIGTERM, SIGINT, or a crash inside a checkpoint (the "power cut"),
//! then resumed with the same command. Every case ends with the file an uninterrupted run
//! writes, byte for byte, and pays twice only for requests that were in flight at a crash.
//!
//! `cargo test -- --ignored` runs the long variant: 200 kill points.

use std::collections::{BTreeSet, HashMap};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::util::{
    assert_none_sent_twice, contacts, finish, signal, wait_for_validations, Dir, Mock,
};

/// Requests the binary keeps in flight in these tests: the most a crash can leave unanswered.
const CONCURRENCY: u64 = 16;

/// A mock whose answers take a few milliseconds, so requests really are in flight at a kill.
pub fn slow_mock() -> Mock {
    Mock::lognormal(1_000_000, 3, 40)
}

/// The command every run of the job uses: the same one each time, as a user would.
const JOB: &str =
    "validate in.csv -o out.csv --concurrency 16 --checkpoint-rows 40 --rate 600000/min";

/// The job of these tests over `contacts(rows)`: its directory, the file an uninterrupted run
/// writes and how many distinct addresses that run sends, and the slow mock to run it against.
fn job_of(rows: usize) -> (Dir, Vec<u8>, u64, Mock) {
    let dir = Dir::new();
    dir.write("in.csv", contacts(rows));
    let (reference, unique) = dir.reference_counted("in.csv", "ref.csv");
    (dir, reference, unique, slow_mock())
}

/// Compares two outputs and names the first line that differs.
pub fn assert_same_file(got: &[u8], want: &[u8], what: &str) {
    if got == want {
        return;
    }
    let (g, w): (Vec<&[u8]>, Vec<&[u8]>) = (
        got.split(|&b| b == b'\n').collect(),
        want.split(|&b| b == b'\n').collect(),
    );
    let at = g
        .iter()
        .zip(&w)
        .position(|(a, b)| a != b)
        .unwrap_or(g.len().min(w.len()));
    panic!(
        "{what}: the file differs from the uninterrupted run at line {} ({} vs {} lines)\n got: {}\nwant: {}",
        at + 1,
        g.len(),
        w.len(),
        String::from_utf8_lossy(g.get(at).copied().unwrap_or_default()),
        String::from_utf8_lossy(w.get(at).copied().unwrap_or_default()),
    );
}

/// Addresses the mock has seen whose answer is not in the store: the requests that were in
/// flight when the process died (sent, their outcome unknown to it). Only these may be sent
/// again.
fn unanswered(dir: &Dir, mock: &Mock) -> Vec<String> {
    let store = dir.store();
    let seen = mock.stats().per_address.unwrap_or_default();
    seen.into_keys()
        .filter(|a| store.get(&store.key(a)).unwrap().is_none())
        .collect()
}

/// What a sequence of crashes may cost: per address, how many crashes found it in flight.
#[derive(Default)]
struct Crashes {
    count: u64,
    in_flight: HashMap<String, u64>,
}

impl Crashes {
    fn record(&mut self, dir: &Dir, mock: &Mock) {
        self.count += 1;
        for address in unanswered(dir, mock) {
            *self.in_flight.entry(address).or_default() += 1;
        }
    }

    /// The money rule: an address goes out more than once only if it was in flight at a
    /// crash (once more per such crash), and in total at most `concurrency` extra calls per
    /// crash.
    fn check(&self, mock: &Mock, unique: u64) {
        let stats = mock.stats();
        assert_eq!(stats.unique_addresses, unique, "every address was asked");
        for (address, n) in &stats.repeated {
            let allowed = 1 + self.in_flight.get(address).copied().unwrap_or(0);
            assert!(
                *n <= allowed,
                "{address} sent {n} times, in flight at {} crashes",
                allowed - 1
            );
        }
        let extra = stats.validations - stats.unique_addresses;
        assert!(
            extra <= self.count * CONCURRENCY,
            "{extra} extra calls after {} crashes",
            self.count
        );
    }
}

/// Runs the job to the end and checks what every ending must leave: the reference file, no
/// partial file, and a state directory that is free (its lock released).
fn resume_to_the_end(dir: &Dir, mock: &Mock, reference: &[u8], what: &str) -> String {
    let out = dir.ok(mock, JOB);
    assert_same_file(&dir.read("out.csv"), reference, what);
    assert!(
        !dir.path("out.csv.partial").exists(),
        "{what}: partial left"
    );
    drop(dir.store()); // opens: nobody holds the lock
    crate::util::text(&out.get_output().stderr)
}

fn sigkill_at_random_moments(kills: usize, rows: usize, seed: u64) {
    let (dir, reference, unique, mock) = job_of(rows);
    let mut rng = StdRng::seed_from_u64(seed);
    // Kill points: the k-th validation to arrive (counted over all runs of the job).
    let mut points = BTreeSet::new();
    while points.len() < kills {
        points.insert(rng.random_range(1..unique));
    }
    let mut crashes = Crashes::default();
    for point in points {
        dir.kill_at(&mock, JOB, point);
        crashes.record(&dir, &mock);
    }
    let stderr = resume_to_the_end(&dir, &mock, &reference, "after SIGKILLs");
    assert!(stderr.contains("resuming after"), "{stderr}");
    crashes.check(&mock, unique);
}

#[test]
fn sigkill_at_20_random_moments_then_resume_gives_the_identical_file_and_pays_only_for_in_flight() {
    sigkill_at_random_moments(20, 3000, 4);
}

#[test]
#[ignore = "long: 200 kill points over 10,000 rows; run with `cargo test -- --ignored`"]
fn sigkill_at_200_random_moments() {
    sigkill_at_random_moments(200, 10_000, 40);
}

#[test]
fn sigterm_and_sigint_stop_cleanly_and_cost_zero_extra_calls() {
    let (dir, reference, unique, mock) = job_of(1500);
    let mut rng = StdRng::seed_from_u64(5);
    let mut stopped = 0;
    for (i, name) in ["TERM", "INT", "TERM", "INT", "INT", "TERM"]
        .iter()
        .enumerate()
    {
        let started = mock.validations();
        // Somewhere in the run, after it has settled in (its signal handler is listening).
        let point = started + CONCURRENCY + rng.random_range(0..unique / 8);
        let mut child = dir.spawn(&mock, JOB);
        if !wait_for_validations(&mut child, &mock, point) {
            break; // the job finished first: nothing left to interrupt
        }
        signal(child.id(), name);
        let (code, stderr) = finish(child);
        assert_eq!(code, Some(5), "SIG{name} #{i}: {stderr}");
        assert!(
            stderr.contains("run the same command to resume"),
            "{stderr}"
        );
        assert!(dir.path("out.csv.partial").exists() && !dir.path("out.csv").exists());
        stopped += 1;
    }
    assert!(stopped >= 3, "only {stopped} stops landed");
    resume_to_the_end(&dir, &mock, &reference, "after SIGTERM/SIGINT");
    let stats = mock.stats();
    assert_none_sent_twice(&stats, "after SIGTERM/SIGINT");
    assert_eq!(stats.validations, unique, "zero extra calls");
}

/// The partial file after a power cut: the kernel kept everything up to the last fsync, and of
/// what came after, any prefix, possibly followed by junk (blocks allocated, data never
/// written). The checkpoint in the store never points past the last fsync.
fn lose_the_unsynced_tail(dir: &Dir, rng: &mut StdRng) {
    let store = dir.store();
    let job = store.jobs().next().expect("the job record exists");
    drop(store);
    let partial = dir.path("out.csv.partial");
    let meta =
        std::fs::metadata(&partial).expect("a crash in a checkpoint leaves the partial file");
    let durable = job.watermark.output_bytes.min(meta.len());
    let keep = rng.random_range(durable..=meta.len());
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(&partial)
        .unwrap();
    file.set_len(keep).unwrap();
    if rng.random_bool(0.5) {
        // Zeros where the data never made it: the length survived, the bytes did not.
        file.set_len(keep + rng.random_range(1..4096)).unwrap();
    }
}

// Why this holds (see `output.rs`): a checkpoint (1) writes the buffered rows and fsyncs the
// partial file, (2) records the watermark (rows written, output length, input offset) in the
// store, (3) flushes the store. A power cut anywhere leaves a recorded watermark no newer than
// the last completed fsync: between (1) and (3) the store still holds the previous watermark,
// whose bytes an earlier fsync made durable. Resume truncates the partial file to the recorded
// length, dropping whatever half-written tail the cut left, and re-reads the input from the
// recorded offset; answers paid for after the checkpoint come from the store, where each was
// made durable (group commit) before its row could be written. The final rename happens only
// after a last fsync, and the directory is fsynced after it.
#[test]
fn a_power_cut_inside_a_checkpoint_still_resumes_to_the_identical_file() {
    let (dir, reference, unique, mock) = job_of(1200);
    let mut rng = StdRng::seed_from_u64(6);
    let mut crashes = Crashes::default();
    for (point, n) in [
        ("write", 2),
        ("fsync", 3),
        ("record", 2),
        ("write", 1),
        ("fsync", 1),
        ("record", 4),
        ("write", 3),
    ] {
        dir.crash_at(&mock, JOB, &format!("{point}:{n}"));
        crashes.record(&dir, &mock);
        lose_the_unsynced_tail(&dir, &mut rng);
    }
    // The last window: the file renamed into place, the job not yet marked done. The next run
    // writes it again from the store, asking nothing.
    dir.crash_at(&mock, JOB, "rename:1");
    crashes.record(&dir, &mock);
    let before = mock.validations();
    resume_to_the_end(&dir, &mock, &reference, "after the power cuts");
    assert_eq!(mock.validations(), before, "nothing asked after the rename");
    crashes.check(&mock, unique);
}

#[test]
fn a_partial_file_shorter_than_its_checkpoint_is_started_over_from_the_store() {
    // Impossible with the fsync ordering above, but a user may have copied or edited the file:
    // the run must notice and rewrite it rather than trust it.
    let (dir, reference, _, mock) = job_of(400);
    dir.crash_at(&mock, JOB, "record:3");
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(dir.path("out.csv.partial"))
        .unwrap();
    file.set_len(10).unwrap(); // shorter than the first checkpoint's header and rows
    let stderr = resume_to_the_end(&dir, &mock, &reference, "after a shortened partial");
    assert!(
        stderr.contains("writing the file again from the start"),
        "{stderr}"
    );
    let stats = mock.stats();
    assert!(
        stats.repeated.len() as u64 <= CONCURRENCY,
        "only requests in flight at the crash go out again: {:?}",
        stats.repeated
    );
}

#[test]
fn killed_then_the_answer_tables_lost_since_their_last_sync_the_journal_pays_for_nothing_twice() {
    // Issue 15: a checkpoint syncs the answer cache's journal, not its tables. A `kill -9`
    // mid-run, then the tables' unsynced pages lost (this run never synced them: its journal
    // stays below the size that does): every answer comes back from the journal on opening,
    // so only the requests in flight at the kill go out again.
    let (dir, reference, unique, mock) = job_of(1500);
    dir.kill_at(&mock, JOB, unique / 2);
    let answers = dir.state().join("answers");
    let mut lost = 0;
    for entry in std::fs::read_dir(&answers).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "tbl") {
            std::fs::write(&path, b"").unwrap();
            lost += 1;
        }
    }
    assert!(lost > 10, "{lost} tables");
    let mut crashes = Crashes::default();
    crashes.record(&dir, &mock);
    resume_to_the_end(&dir, &mock, &reference, "after a kill and lost tables");
    crashes.check(&mock, unique);
}
