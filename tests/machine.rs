//! Faults on this machine (issue 4): an output that cannot be written, a full disk, an input
//! deleted or cut short under a running job, a damaged or foreign state directory, and two
//! runs on one state directory. Each gets a clear message and an exit code from DESIGN.md,
//! never a panic, and the state directory stays usable.

use std::path::{Path, PathBuf};
use std::process::{Command as StdCommand, Stdio};
use std::time::Duration;

use leadmagic_mock::{Latency, MockConfig};
use predicates::prelude::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::crash::assert_same_file;
use crate::util::{
    assert_none_sent_twice, contacts, finish, is_root, rows, signal, text, wait_for, Dir, Mock,
};

/// No panic report, whatever happened.
fn no_panic(stderr: &str) {
    assert!(
        !stderr.contains("panicked") && !stderr.contains("RUST_BACKTRACE"),
        "{stderr}"
    );
}

/// The state directory still works: a small job runs to the end on it.
fn store_still_usable(dir: &Dir, mock: &Mock) {
    dir.write("small.csv", "email\nok1@acme-corp.com\nok2@acme-corp.com\n");
    dir.mailsift(mock)
        .args(["validate", "small.csv", "-o", "small.out.csv", "-q"])
        .assert()
        .success();
}

/// A tmpfs mounted for one test, unmounted when dropped. `None` where mounting is not allowed
/// (not root, or no CAP_SYS_ADMIN in a container): the caller then says what it skipped.
struct Tmpfs {
    path: PathBuf,
}

impl Tmpfs {
    fn mount(path: &Path, options: &str) -> Option<Tmpfs> {
        std::fs::create_dir_all(path).unwrap();
        let mounted = StdCommand::new("mount")
            .args(["-t", "tmpfs", "-o", options, "tmpfs"])
            .arg(path)
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        mounted.then(|| Tmpfs {
            path: path.to_owned(),
        })
    }

    fn remount(&self, options: &str) {
        let status = StdCommand::new("mount")
            .args(["-o", &format!("remount,{options}")])
            .arg(&self.path)
            .status()
            .unwrap();
        assert!(status.success());
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = StdCommand::new("umount").arg("-l").arg(&self.path).status();
    }
}

#[test]
fn an_output_that_cannot_be_created_is_exit_2_before_anything_is_spent() {
    let mock = Mock::fast();
    let dir = Dir::new();
    dir.write("in.csv", contacts(50));
    dir.write("a-file", "not a directory");
    // (how the output directory refuses, -o)
    let mut cases: Vec<(&str, String)> = vec![
        ("its parent is a regular file", "a-file/out.csv".into()),
        ("its parent does not exist", "missing/out.csv".into()),
    ];
    // As root, permission bits do not stop writes: a read-only mount does, where allowed.
    let readonly = Tmpfs::mount(&dir.path("ro"), "ro,size=64k");
    if readonly.is_some() {
        cases.push((
            "the directory is on a read-only file system",
            "ro/out.csv".into(),
        ));
    } else {
        eprintln!("note: cannot mount a read-only tmpfs here; that case is skipped");
    }
    if !is_root() {
        std::fs::create_dir(dir.path("locked")).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.path("locked"), std::fs::Permissions::from_mode(0o555))
            .unwrap();
        cases.push(("the directory is not writable", "locked/out.csv".into()));
    }
    for (why, output) in &cases {
        let out = dir
            .mailsift(&mock)
            .args(["validate", "in.csv", "-o", output])
            .assert()
            .code(2);
        let stderr = text(&out.get_output().stderr);
        no_panic(&stderr);
        assert!(
            stderr.contains(&format!("cannot create {output}.partial"))
                && stderr.contains("choose another output with -o"),
            "{why}: {stderr}"
        );
    }
    assert_eq!(mock.validations(), 0, "nothing was asked");
    store_still_usable(&dir, &mock);
}

#[test]
fn an_output_path_that_is_a_directory_is_exit_2() {
    let mock = Mock::fast();
    let dir = Dir::new();
    dir.write("in.csv", contacts(20));
    std::fs::create_dir(dir.path("out.csv")).unwrap();
    std::fs::create_dir(dir.path("in.validated.csv")).unwrap();
    for args in [&["-o", "out.csv"][..], &[][..]] {
        dir.mailsift(&mock)
            .args(["validate", "in.csv"])
            .args(args)
            .assert()
            .code(2)
            .stderr(predicate::str::contains("is a directory").and(predicate::str::contains("-o")));
    }
    assert_eq!(mock.validations(), 0);
    store_still_usable(&dir, &mock);
}

#[test]
fn a_full_disk_under_the_output_is_exit_1_and_the_same_command_resumes_once_there_is_room() {
    // /dev/full answers every write with ENOSPC, as a full disk does; the partial file is a
    // link to it. Works everywhere on Linux, no privileges needed.
    let mock = Mock::fast();
    let dir = Dir::new();
    dir.write("in.csv", contacts(600));
    let reference = dir.reference("in.csv", "ref.csv");
    std::os::unix::fs::symlink("/dev/full", dir.path("out.csv.partial")).unwrap();
    let job = [
        "validate",
        "in.csv",
        "-o",
        "out.csv",
        "--checkpoint-rows",
        "50",
    ];
    let out = dir.mailsift(&mock).args(job).assert().code(1);
    let stderr = text(&out.get_output().stderr);
    no_panic(&stderr);
    assert!(
        stderr.contains("writing out.csv.partial")
            && stderr.contains("No space left on device")
            && stderr.contains("run the same command to resume"),
        "{stderr}"
    );
    let asked = mock.validations();
    std::fs::remove_file(dir.path("out.csv.partial")).unwrap(); // room again
    dir.mailsift(&mock).args(job).arg("-q").assert().success();
    assert_same_file(&dir.read("out.csv"), &reference, "after the disk was full");
    let stats = mock.stats();
    assert_none_sent_twice(&stats, "after the disk was full");
    assert!(stats.validations >= asked);
}

#[test]
fn a_disk_that_fills_up_mid_run_then_gets_room_resumes_to_the_identical_file() {
    let dir = Dir::new();
    let Some(disk) = Tmpfs::mount(&dir.path("small-disk"), "size=256k") else {
        eprintln!("note: cannot mount a tmpfs here; the /dev/full test covers a full disk");
        return;
    };
    dir.write("in.csv", contacts(4000)); // about 1 MB of output
    let reference = dir.reference("in.csv", "ref.csv");
    let mock = Mock::fast();
    let job = [
        "validate",
        "in.csv",
        "-o",
        "small-disk/out.csv",
        "--checkpoint-rows",
        "100",
    ];
    let out = dir.mailsift(&mock).args(job).assert().code(1);
    let stderr = text(&out.get_output().stderr);
    no_panic(&stderr);
    assert!(stderr.contains("No space left on device"), "{stderr}");
    assert!(dir.path("small-disk/out.csv.partial").exists());
    disk.remount("size=8m");
    dir.mailsift(&mock).args(job).assert().success();
    assert_same_file(
        &dir.read("small-disk/out.csv"),
        &reference,
        "after room was made",
    );
    assert_none_sent_twice(&mock.stats(), "after room was made");
}

#[test]
fn a_full_disk_under_the_state_directory_is_exit_1_with_a_message_and_resumes_later() {
    let dir = Dir::new();
    let Some(disk) = Tmpfs::mount(&dir.path("state"), "size=256k") else {
        eprintln!("note: cannot mount a tmpfs here; the state store's full disk is not tested");
        return;
    };
    dir.write("in.csv", contacts(3000));
    let reference = dir.reference("in.csv", "ref.csv");
    let mock = Mock::fast();
    let job = ["validate", "in.csv", "-o", "out.csv"];
    let out = dir.mailsift(&mock).args(job).assert().code(1);
    let stderr = text(&out.get_output().stderr);
    no_panic(&stderr);
    assert!(
        stderr.contains("writing the state store in") && stderr.contains("No space left on device"),
        "{stderr}"
    );
    assert!(
        stderr.lines().count() < 20,
        "one message, not one per worker: {stderr}"
    );
    disk.remount("size=64m");
    dir.mailsift(&mock).args(job).assert().success();
    assert_same_file(&dir.read("out.csv"), &reference, "after room was made");
}

/// A mock slow enough that the job is still running when the test acts on it.
fn slow_mock() -> Mock {
    Mock::start(MockConfig {
        rate_per_min: 1_000_000,
        latency: Latency::Fixed(Duration::from_millis(3)),
        ..MockConfig::default()
    })
}

#[test]
fn an_input_deleted_during_the_run_is_read_to_the_end() {
    // The open file stays readable after its name is gone (Unix): the job finishes whole.
    let dir = Dir::new();
    dir.write("in.csv", contacts(1500));
    let reference = dir.reference("in.csv", "ref.csv");
    let mock = slow_mock();
    let mut child = dir
        .command(&mock)
        .args(["validate", "in.csv", "-o", "out.csv", "--concurrency", "8"])
        .spawn()
        .unwrap();
    assert!(wait_for(&mut child, || mock.validations() >= 100));
    std::fs::remove_file(dir.path("in.csv")).unwrap();
    let (code, stderr) = finish(child);
    assert_eq!(code, Some(0), "{stderr}");
    assert_same_file(&dir.read("out.csv"), &reference, "input deleted mid-run");
    // Run again: the input is gone, and the message says so.
    dir.mailsift(&mock)
        .args(["validate", "in.csv", "-o", "out.csv"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("in.csv does not exist"));
}

#[test]
fn an_input_cut_short_during_the_run_is_exit_2_naming_it_and_nothing_torn_is_written() {
    let dir = Dir::new();
    let input = contacts(12_000);
    dir.write("in.csv", &input);
    let mock = slow_mock();
    let job = ["validate", "in.csv", "-o", "out.csv", "--concurrency", "8"];
    let mut child = dir.command(&mock).args(job).spawn().unwrap();
    // The reader runs at most a few thousand rows ahead of the answers: cut well past that.
    assert!(wait_for(&mut child, || mock.validations() >= 50));
    let cut = input.len() as u64 * 2 / 5 + 7; // mid-row
    std::fs::OpenOptions::new()
        .write(true)
        .open(dir.path("in.csv"))
        .unwrap()
        .set_len(cut)
        .unwrap();
    let (code, stderr) = finish(child);
    no_panic(&stderr);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("in.csv changed while it was being read") && stderr.contains("--restart"),
        "{stderr}"
    );
    // What was written is whole rows of the original, in order.
    let written = rows(&dir.read("out.csv.partial"));
    let original = rows(input.as_bytes());
    assert!(written.len() > 1000, "{} rows written", written.len());
    for (got, want) in written.iter().zip(&original).skip(1) {
        assert_eq!(&got[..want.len()], &want[..]);
    }
    // The same command refuses the changed file; --restart runs it as it is now.
    dir.mailsift(&mock)
        .args(job)
        .assert()
        .code(2)
        .stderr(predicate::str::contains("changed").and(predicate::str::contains("--restart")));
    dir.mailsift(&mock)
        .args(job)
        .args(["--restart", "-q"])
        .assert()
        .success();
}

/// Damages the store's files in one of several ways. sled takes some damage as a torn end
/// of its log and carries on with what it can read (answers lost are asked again); other damage
/// it refuses, and some used to make it panic. The answer cache reads a damaged answer as
/// absent, and refuses a table of a length no table has.
fn damage(state: &Path, how: usize, rng: &mut StdRng) -> &'static str {
    let answers = state.join("answers");
    let flip = |path: &Path, n: usize, rng: &mut StdRng| {
        let mut bytes = std::fs::read(path).unwrap();
        for _ in 0..n {
            let at = rng.random_range(0..bytes.len());
            bytes[at] ^= 1 << rng.random_range(0..8);
        }
        std::fs::write(path, bytes).unwrap();
    };
    match how {
        5 => {
            for part in 0..64 {
                let table = answers.join(format!("{part:02}.tbl"));
                if table.exists() {
                    flip(&table, 8, rng);
                }
            }
            return "8 flipped bits in every answer table";
        }
        6 => {
            std::fs::OpenOptions::new()
                .write(true)
                .open(answers.join("07.tbl"))
                .unwrap()
                .set_len(1000)
                .unwrap();
            return "an answer table cut short";
        }
        7 => {
            flip(&answers.join("details"), 20, rng);
            flip(&answers.join("verdicts"), 3, rng);
            return "flipped bits in the domain and verdict records";
        }
        _ => {}
    }
    let db = state.join("db").join("db");
    let conf = state.join("db").join("conf");
    let mut bytes = std::fs::read(&db).unwrap();
    let len = bytes.len();
    match how {
        0 => {
            for _ in 0..20 {
                let at = rng.random_range(0..len);
                bytes[at] ^= 0xff;
            }
            std::fs::write(&db, bytes).unwrap();
            "20 flipped bytes"
        }
        1 => {
            let noise: Vec<u8> = (0..62).map(|_| rng.random()).collect();
            std::fs::write(&conf, noise).unwrap();
            "a random config file"
        }
        2 => {
            std::fs::OpenOptions::new()
                .write(true)
                .open(&conf)
                .unwrap()
                .set_len(10)
                .unwrap();
            "a config file cut short"
        }
        3 => {
            let at = rng.random_range(0..len);
            let end = (at + 64 * 1024).min(len);
            rng.fill(&mut bytes[at..end]);
            std::fs::write(&db, bytes).unwrap();
            "64 KiB of random bytes"
        }
        _ => {
            std::fs::remove_file(&db).unwrap();
            std::fs::create_dir(&db).unwrap();
            "the database file replaced by a directory"
        }
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

#[test]
fn a_damaged_state_directory_is_refused_with_a_message_never_a_panic() {
    let mock = Mock::fast();
    let dir = Dir::new();
    dir.write("in.csv", contacts(500));
    dir.mailsift(&mock)
        .args(["validate", "in.csv", "-o", "first.csv", "-q"])
        .assert()
        .success();
    let mut rng = StdRng::seed_from_u64(8);
    let mut refused = 0;
    for (i, how) in [0, 1, 2, 3, 4, 0, 3, 5, 6, 7, 5].into_iter().enumerate() {
        let state = dir.path(&format!("state{i}"));
        copy_dir(&dir.state(), &state);
        let what = damage(&state, how, &mut rng);
        let out = dir
            .mailsift(&mock)
            .env("MAILSIFT_STATE_DIR", &state)
            .args(["validate", "in.csv", "-o", &format!("out{i}.csv"), "-q"])
            .output()
            .unwrap();
        let stderr = text(&out.stderr);
        no_panic(&stderr);
        match out.status.code() {
            // Carried on with what was intact, asking again for the rest: the job comes out
            // whole and every verdict is right (only the charge, `checked_at` and `source` of
            // a row answered from the cache differ from the first run's; the suggestion and
            // the other addresses after them do not).
            Some(0) => {
                let (got, want) = (
                    rows(&dir.read(&format!("out{i}.csv"))),
                    rows(&dir.read("first.csv")),
                );
                assert_eq!(got.len(), want.len(), "{what}");
                for (g, w) in got.iter().zip(&want) {
                    assert_eq!(g[..g.len() - 5], w[..w.len() - 5], "{what}");
                    assert_eq!(g[g.len() - 2..], w[w.len() - 2..], "{what}");
                }
            }
            Some(2) => {
                refused += 1;
                assert!(
                    stderr.contains(&format!("state store in {}", state.display()))
                        && stderr.contains("Move it aside"),
                    "{what}: {stderr}"
                );
                // Doing what the message says works.
                std::fs::rename(&state, dir.path(&format!("state{i}.broken"))).unwrap();
                dir.mailsift(&mock)
                    .env("MAILSIFT_STATE_DIR", &state)
                    .args(["validate", "in.csv", "-o", &format!("out{i}.csv"), "-q"])
                    .assert()
                    .success();
            }
            other => panic!("{what}: exit {other:?}: {stderr}"),
        }
    }
    assert!(
        refused >= 3,
        "only {refused} of the damaged stores were refused"
    );
}

#[test]
fn a_state_directory_from_another_version_is_refused_and_left_alone() {
    let mock = Mock::fast();
    let dir = Dir::new();
    dir.write("in.csv", contacts(30));
    store_still_usable(&dir, &mock);
    {
        let db = sled::open(dir.state().join("db")).unwrap();
        db.open_tree("meta")
            .unwrap()
            .insert("schema", "mailsift-store-999")
            .unwrap();
        db.flush().unwrap();
    }
    dir.mailsift(&mock)
        .args(["validate", "in.csv"])
        .assert()
        .code(2)
        .stderr(
            predicate::str::contains("another version of mailsift (mailsift-store-999)")
                .and(predicate::str::contains("--state-dir"))
                .and(predicate::str::contains("panicked").not()),
        );
    let db = sled::open(dir.state().join("db")).unwrap();
    let schema = db
        .open_tree("meta")
        .unwrap()
        .get("schema")
        .unwrap()
        .unwrap();
    assert_eq!(&schema[..], b"mailsift-store-999", "not overwritten");
    assert_eq!(mock.validations(), 2, "nothing asked for the refused run");
}

#[test]
fn two_runs_on_one_state_directory_the_second_fails_fast_and_nothing_is_corrupted() {
    let dir = Dir::new();
    dir.write("in.csv", contacts(800));
    dir.write("other.csv", contacts(200));
    let reference = dir.reference("in.csv", "ref.csv");
    let mock = slow_mock();
    let mut first = dir
        .command(&mock)
        .args(["validate", "in.csv", "-o", "out.csv", "--concurrency", "8"])
        .spawn()
        .unwrap();
    assert!(wait_for(&mut first, || mock.validations() >= 50));
    // Frozen mid-run (SIGSTOP), the first run holds the directory for as long as the test
    // needs, however slow the machine: the others wait up to a second for the lock, then fail.
    signal(first.id(), "STOP");
    for args in [
        ["validate", "in.csv", "-o", "out.csv"],
        ["validate", "other.csv", "-o", "other.out.csv"],
    ] {
        let out = dir.mailsift(&mock).args(args).assert().code(2);
        let stderr = text(&out.get_output().stderr);
        assert!(
            stderr.contains("is in use by another mailsift process (pid")
                && stderr.contains(&first.id().to_string())
                && stderr.contains("--state-dir"),
            "{stderr}"
        );
    }
    assert!(
        first.try_wait().unwrap().is_none(),
        "the second failed while the first ran"
    );
    assert!(!dir.path("other.out.csv.partial").exists());
    signal(first.id(), "CONT");
    let (code, stderr) = finish(first);
    assert_eq!(code, Some(0), "{stderr}");
    assert_same_file(
        &dir.read("out.csv"),
        &reference,
        "with a second run refused",
    );
    assert_none_sent_twice(&mock.stats(), "with a second run refused");
    dir.mailsift(&mock)
        .args(["validate", "other.csv", "-o", "other.out.csv", "-q"])
        .assert()
        .success();
}
