//! Who owns an output, and what a finished job leaves (issue 11, points 2, 5 and 10): two jobs
//! aimed at one file, a finished file replaced or edited behind the job's back, a kill at the
//! very end, and the report's path.

use std::time::Duration;

use leadmagic_mock::{Latency, MockConfig};
use serde_json::Value;

use crate::crash::assert_same_file;
use crate::util::{
    assert_none_sent_twice, contacts, finish, is_root, rows, signal, text, wait_for, Dir, Mock,
};

/// A mock slow enough that a 3,000-row job is still running when the test acts on it.
fn slow_mock() -> Mock {
    Mock::start(MockConfig {
        rate_per_min: 1_000_000,
        latency: Latency::Fixed(Duration::from_millis(3)),
        ..MockConfig::default()
    })
}

/// Another list: none of its addresses is in [`contacts`].
fn others(n: usize) -> String {
    contacts(n)
        .replace("example-", "elsewhere-")
        .replace("Example-", "Elsewhere-")
}

fn report(dir: &Dir, name: &str) -> Value {
    serde_json::from_slice(&dir.read(name)).unwrap()
}

#[test]
fn a_second_job_aimed_at_a_running_jobs_output_exits_2_naming_its_pid() {
    // The outsider's attack: a 3,000-row job writing out/out.csv, then a 500-row job with its
    // own state directory (as the "state directory in use" message advises) writing the same
    // -o. Both used to write out.csv.partial: the second exited 0, the first failed renaming,
    // and the final file held rows of neither input.
    let dir = Dir::new();
    dir.write("in.csv", contacts(3000));
    dir.write("small.csv", others(500));
    std::fs::create_dir(dir.path("out")).unwrap();
    let reference = dir.reference("in.csv", "ref.csv");
    let mock = slow_mock();
    let first_job = [
        "validate",
        "in.csv",
        "-o",
        "out/out.csv",
        "--split",
        "--report",
        "out/report.json",
        "--concurrency",
        "8",
    ];
    let mut first = dir.command(&mock).args(first_job).spawn().unwrap();
    assert!(wait_for(&mut first, || mock.validations() >= 50));
    // Frozen mid-run, the first job holds its files for as long as the test needs.
    signal(first.id(), "STOP");
    // The second job talks to a server of its own, so what it sends is counted apart.
    let second_mock = Mock::fast();
    let pid = first.id().to_string();
    for (what, target) in [
        ("the same output", &["-o", "out/out.csv"][..]),
        ("the output is its split file", &["-o", "out/out.risky.csv"]),
        (
            "the same report",
            &["-o", "out/small.csv", "--report", "out/report.json"],
        ),
    ] {
        let out = dir
            .mailsift(&second_mock)
            .args(["validate", "small.csv", "--state-dir", "state2"])
            .args(target)
            .assert()
            .code(2);
        let stderr = text(&out.get_output().stderr);
        assert!(
            stderr.contains("is being written by another job")
                && stderr.contains(&format!("pid {pid}")),
            "{what}: {stderr}"
        );
    }
    assert_eq!(
        second_mock.stats().requests,
        0,
        "the second job sent nothing"
    );
    assert!(!dir.path("out/small.csv.partial").exists());
    signal(first.id(), "CONT");
    let (code, stderr) = finish(first);
    assert_eq!(code, Some(0), "{stderr}");
    assert_same_file(
        &dir.read("out/out.csv"),
        &reference,
        "with a second job refused",
    );
    assert_eq!(report(&dir, "out/report.json")["rows"]["total"], 3000);
    assert_none_sent_twice(&mock.stats(), "with a second job refused");
    // Released at the end: no lock file is left, and the other job may now write the file.
    let left: Vec<_> = std::fs::read_dir(dir.path("out"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".lock"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
    dir.mailsift(&mock)
        .args(["validate", "small.csv", "-o", "out/out.csv", "-q"])
        .args(["--state-dir", "state2"])
        .assert()
        .success();
    assert_eq!(rows(&dir.read("out/out.csv")).len(), 501);
}

#[test]
fn a_killed_jobs_output_is_free_at_once() {
    let dir = Dir::new();
    dir.write("in.csv", contacts(3000));
    dir.write("small.csv", others(500));
    let mock = slow_mock();
    let mut first = dir
        .command(&mock)
        .args(["validate", "in.csv", "-o", "out.csv", "--concurrency", "8"])
        .spawn()
        .unwrap();
    assert!(wait_for(&mut first, || mock.validations() >= 50));
    first.kill().unwrap(); // SIGKILL: no destructor runs, the OS frees the lock
    first.wait().unwrap();
    assert!(
        dir.path(".out.csv.lock").exists(),
        "left behind by the kill"
    );
    dir.mailsift(&mock)
        .args(["validate", "small.csv", "-o", "out.csv", "-q"])
        .args(["--state-dir", "state2"])
        .assert()
        .success();
    assert_eq!(rows(&dir.read("out.csv")).len(), 501);
    assert!(!dir.path(".out.csv.lock").exists());
}

#[test]
fn a_finished_output_that_is_not_the_jobs_bytes_is_written_again_from_the_cache() {
    let dir = Dir::new();
    dir.write("in.csv", contacts(300));
    dir.write("other.csv", others(300));
    let mock = Mock::fast();
    let job = ["validate", "in.csv", "-o", "out.csv", "--split"];
    dir.mailsift(&mock).args(job).assert().success();
    let first = dir.read("out.csv");
    let statuses =
        |bytes: &[u8]| -> Vec<String> { rows(bytes).into_iter().map(|r| r[4].clone()).collect() };
    let asked = mock.validations();
    dir.mailsift(&mock)
        .args(["validate", "other.csv", "-o", "other.out.csv", "-q"])
        .args(["--state-dir", "state2"])
        .assert()
        .success();
    let others_paid = mock.validations() - asked;
    let again = |what: &str| {
        let out = dir.mailsift(&mock).args(job).assert().success();
        let stderr = text(&out.get_output().stderr);
        assert!(
            stderr.contains("is not the file this job wrote"),
            "{what}: {stderr}"
        );
        assert_eq!(statuses(&dir.read("out.csv")), statuses(&first), "{what}");
        assert_eq!(
            mock.validations(),
            asked + others_paid,
            "{what}: nothing paid twice"
        );
    };
    // Replaced by another job's file.
    std::fs::copy(dir.path("other.out.csv"), dir.path("out.csv")).unwrap();
    again("replaced by another job's output");
    // Edited in place, the same length.
    let mut edited = dir.read("out.csv");
    let at = edited.len() / 2;
    edited[at] = if edited[at] == b'x' { b'y' } else { b'x' };
    dir.write("out.csv", &edited);
    again("edited");
    std::fs::remove_file(dir.path("out.csv")).unwrap();
    again("deleted");
    // A split file counts too.
    std::fs::write(dir.path("out.risky.csv"), b"").unwrap();
    again("a split file emptied");
    // Untouched: done, nothing to do.
    let out = dir.mailsift(&mock).args(job).assert().success();
    assert!(text(&out.get_output().stderr).contains("already done"));
    assert_none_sent_twice(&mock.stats(), "rewritten four times");
}

#[test]
fn a_done_jobs_missing_report_is_written_again_from_its_record() {
    // The outsider killed the process in the ~2 ms between "done" and the report: the rerun
    // said "already done" and never wrote --report. A finished job keeps its report.
    let dir = Dir::new();
    dir.write("in.csv", contacts(200));
    let mock = Mock::fast();
    let job = [
        "validate", "in.csv", "-o", "out.csv", "--report", "rep.json",
    ];
    dir.mailsift(&mock).args(job).assert().success();
    let written = dir.read("rep.json");
    std::fs::remove_file(dir.path("rep.json")).unwrap();
    let asked = mock.validations();
    let out = dir.mailsift(&mock).args(job).assert().success();
    assert!(text(&out.get_output().stderr).contains("already done"));
    assert_eq!(dir.read("rep.json"), written, "the finishing run's report");
    assert_eq!(mock.validations(), asked);
    // Asked for on standard output, the same report.
    let out = dir
        .mailsift(&mock)
        .args(["validate", "in.csv", "-o", "out.csv", "--report", "-"])
        .assert()
        .success();
    let printed: Value = serde_json::from_slice(&out.get_output().stdout).unwrap();
    assert_eq!(printed, serde_json::from_slice::<Value>(&written).unwrap());
    assert_eq!(printed["rows"]["total"], 200);
}

#[test]
fn killed_at_the_end_the_rerun_finishes_with_the_real_report() {
    let job = [
        "validate", "in.csv", "-o", "out.csv", "--split", "--report", "rep.json",
    ];
    // After the last rename (the output in place, no report, not done); after the report
    // (not done): each time the same command ends the job with the real counts, asking nothing.
    for point in ["rename:4", "report:1"] {
        let dir = Dir::new();
        dir.write("in.csv", contacts(400));
        let reference = dir.reference("in.csv", "ref.csv");
        let mock = Mock::fast();
        let (code, stderr) = finish(
            dir.command(&mock)
                .args(job)
                .env("MAILSIFT_TEST_CRASH_AT", point)
                .spawn()
                .unwrap(),
        );
        assert_eq!(
            code,
            Some(mailsift::output::CRASH_EXIT),
            "{point}: {stderr}"
        );
        assert_eq!(
            dir.path("rep.json").exists(),
            point == "report:1",
            "{point}"
        );
        let asked = mock.validations();
        let out = dir.mailsift(&mock).args(job).assert().success();
        let stderr = text(&out.get_output().stderr);
        assert!(!stderr.contains("already done"), "{point}: {stderr}");
        assert_eq!(mock.validations(), asked, "{point}: nothing asked again");
        assert_same_file(&dir.read("out.csv"), &reference, point);
        let rep = report(&dir, "rep.json");
        assert_eq!(rep["outcome"], "done", "{point}");
        assert_eq!(rep["rows"]["total"], 400, "{point}");
        assert_eq!(rep["output"], "out.csv", "{point}");
        assert_none_sent_twice(&mock.stats(), point);
    }
}

/// The `--on-complete` environment the inbox's hook saw.
fn hook_env(dir: &Dir) -> String {
    String::from_utf8(dir.read("hook.txt")).unwrap()
}

#[test]
fn the_inbox_after_a_kill_at_the_end_hands_the_hook_the_real_counts() {
    let mock = Mock::fast();
    let dir = Dir::new();
    std::fs::create_dir(dir.path("in")).unwrap();
    let inbox = |crash: Option<&str>| {
        let mut cmd = dir.command(&mock);
        cmd.args(["inbox", "in", "--out", "out", "--settle", "0s", "--once"])
            .args(["--on-complete", "env | grep '^MAILSIFT_' > hook.txt"]);
        if let Some(point) = crash {
            cmd.env("MAILSIFT_TEST_CRASH_AT", point);
        }
        finish(cmd.spawn().unwrap())
    };
    let check = |what: &str, stem: &str| {
        let env = hook_env(&dir);
        let report = dir.path(&format!("out/{stem}.report.json"));
        assert!(env.contains("MAILSIFT_ROWS=100\n"), "{what}: {env}");
        assert!(env.contains("MAILSIFT_VALID="), "{what}: {env}");
        assert!(
            env.contains(&format!("MAILSIFT_REPORT=out/{stem}.report.json\n")) && report.exists(),
            "{what}: {env}"
        );
        assert!(
            dir.path(&format!("in/processed/{stem}.csv")).exists(),
            "{what}"
        );
        std::fs::remove_file(dir.path("hook.txt")).unwrap();
    };
    for (stem, point) in [("a", "rename:1"), ("b", "report:1")] {
        dir.write(&format!("in/{stem}.csv"), contacts(100));
        let (code, stderr) = inbox(Some(point));
        assert_eq!(
            code,
            Some(mailsift::output::CRASH_EXIT),
            "{point}: {stderr}"
        );
        assert!(!dir.path("hook.txt").exists());
        let (code, stderr) = inbox(None);
        assert_eq!(code, Some(0), "{point}: {stderr}");
        check(point, stem);
    }
    // The window the outsider hit: the job marked done, its report not yet written. (Built
    // here by finishing the inbox's job without a report.)
    dir.write("in/c.csv", contacts(100));
    dir.mailsift(&mock)
        .args(["validate", "in/c.csv", "-o", "out/c.validated.csv", "-q"])
        .assert()
        .success();
    let (code, stderr) = inbox(None);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stderr.contains("100 rows"), "{stderr}");
    check("done without a report", "c");
}

#[test]
fn report_dash_writes_standard_output_and_no_file_named_dash() {
    let dir = Dir::new();
    dir.write("in.csv", contacts(50));
    let mock = Mock::fast();
    let out = dir
        .mailsift(&mock)
        .args(["validate", "in.csv", "-o", "out.csv", "--report", "-", "-q"])
        .assert()
        .success();
    let printed: Value = serde_json::from_slice(&out.get_output().stdout).unwrap();
    assert_eq!(printed["rows"]["total"], 50);
    assert_eq!(printed["outcome"], "done");
    assert!(!dir.path("-").exists());
    // The output on standard output too: refused before anything is asked.
    let out = dir
        .mailsift(&mock)
        .args(["validate", "in.csv", "-o", "-", "--report", "-"])
        .assert()
        .code(2);
    assert!(text(&out.get_output().stderr).contains("--report -"));
}

#[test]
fn a_bad_report_path_is_exit_2_before_anything_is_sent() {
    let dir = Dir::new();
    dir.write("in.csv", contacts(50));
    dir.write("a-file", "not a directory");
    std::fs::create_dir(dir.path("a-dir")).unwrap();
    let mut cases = vec![
        (
            "its directory does not exist",
            "missing/rep.json",
            "cannot write the report",
        ),
        (
            "its parent is a file",
            "a-file/rep.json",
            "cannot write the report",
        ),
        ("it is a directory", "a-dir", "is a directory"),
        ("it is the input", "in.csv", "is the input file"),
        ("it is the output", "out.csv", "is the output"),
    ];
    if !is_root() {
        std::fs::create_dir(dir.path("locked")).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.path("locked"), std::fs::Permissions::from_mode(0o555))
            .unwrap();
        cases.push(("not writable", "locked/rep.json", "cannot write the report"));
    }
    let mock = Mock::fast();
    for (why, path, says) in cases {
        let out = dir
            .mailsift(&mock)
            .args(["validate", "in.csv", "-o", "out.csv", "--report", path])
            .assert()
            .code(2);
        let stderr = text(&out.get_output().stderr);
        assert!(
            stderr.contains(says) && stderr.contains(path),
            "{why}: {stderr}"
        );
    }
    assert_eq!(mock.stats().requests, 0, "nothing was sent");
    assert!(!dir.path("out.csv.partial").exists());
}

#[test]
fn a_row_over_16_mib_is_exit_2_and_leaves_nothing_that_breaks_the_next_run() {
    let dir = Dir::new();
    let good = contacts(300);
    // An unbalanced quote near the end swallows 17 MiB.
    let bad = format!(
        "{good}300,\"Name, 300,user300@example-6.com,{}\n",
        "x".repeat(17 << 20)
    );
    dir.write("in.csv", &bad);
    let mock = Mock::fast();
    let job = ["validate", "in.csv", "-o", "out.csv", "--split"];
    let out = dir.mailsift(&mock).args(job).assert().code(2);
    let stderr = text(&out.get_output().stderr);
    assert!(stderr.contains("16 MiB"), "{stderr}");
    let left: Vec<_> = dir
        .files()
        .into_iter()
        .filter(|p| p.to_string_lossy().contains("out."))
        .collect();
    assert!(left.is_empty(), "{left:?}");
    // The fixed file is a new job, not "changed since the interrupted run"; what was paid for
    // comes from the cache.
    dir.write("in.csv", &good);
    let reference = dir.reference("in.csv", "ref.csv");
    dir.mailsift(&mock).args(job).assert().success();
    let statuses =
        |bytes: &[u8]| -> Vec<String> { rows(bytes).into_iter().map(|r| r[4].clone()).collect() };
    assert_eq!(statuses(&dir.read("out.csv")), statuses(&reference));
    assert_none_sent_twice(&mock.stats(), "after the row too long");
}

#[test]
fn a_report_that_cannot_be_written_at_the_end_is_written_by_the_same_command() {
    // Checked before the first request, the report's directory can still go away during the
    // run. The output is complete and the job done; the same command writes the report from
    // the job record, asking nothing.
    let dir = Dir::new();
    dir.write("in.csv", contacts(1500));
    std::fs::create_dir(dir.path("reports")).unwrap();
    let mock = slow_mock();
    let job = [
        "validate",
        "in.csv",
        "-o",
        "out.csv",
        "--report",
        "reports/rep.json",
        "--concurrency",
        "8",
    ];
    let mut child = dir.command(&mock).args(job).spawn().unwrap();
    assert!(wait_for(&mut child, || mock.validations() >= 50));
    std::fs::remove_dir_all(dir.path("reports")).unwrap();
    let (code, stderr) = finish(child);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("the output is complete, but its report could not be written")
            && stderr.contains("reports/rep.json"),
        "{stderr}"
    );
    assert_eq!(rows(&dir.read("out.csv")).len(), 1501);
    std::fs::create_dir(dir.path("reports")).unwrap();
    let asked = mock.validations();
    let out = dir.mailsift(&mock).args(job).assert().success();
    assert!(text(&out.get_output().stderr).contains("already done"));
    assert_eq!(mock.validations(), asked);
    let rep = report(&dir, "reports/rep.json");
    assert_eq!(
        (rep["outcome"].as_str(), rep["rows"]["total"].as_u64()),
        (Some("done"), Some(1500))
    );
}

/// `--report /dev/null` and `-o /dev/null`, as an outsider types them: a device is never
/// renamed over (as root that replaced /dev/null itself with a file). A FIFO stands in for the
/// device, so a regression cannot damage the machine running the tests.
#[cfg(unix)]
#[test]
fn a_device_or_pipe_as_report_is_written_in_place_and_as_output_is_refused() {
    use std::os::unix::fs::FileTypeExt;
    let mock = Mock::fast();
    let dir = Dir::new();
    dir.write("in.csv", others(20));
    let fifo = dir.path("pipe");
    let made = std::process::Command::new("mkfifo").arg(&fifo).status();
    if !made.is_ok_and(|s| s.success()) {
        eprintln!("skipped: mkfifo is not available here");
        return;
    }
    let reader = {
        let fifo = fifo.clone();
        std::thread::spawn(move || std::fs::read(fifo).unwrap())
    };
    dir.mailsift(&mock)
        .args(["validate", "in.csv", "-q", "--report", "pipe"])
        .assert()
        .success();
    let report: Value = serde_json::from_slice(&reader.join().unwrap()).unwrap();
    assert_eq!(report["rows"]["total"], 20);
    assert!(std::fs::metadata(&fifo).unwrap().file_type().is_fifo());
    assert!(!dir.path(".pipe.lock").exists());

    let sent = mock.stats().validations;
    dir.mailsift(&mock)
        .args(["validate", "in.csv", "-o", "pipe", "--restart"])
        .assert()
        .code(2)
        .stderr(predicates::str::contains("-o -"));
    assert_eq!(mock.stats().validations, sent, "nothing sent");
    assert!(std::fs::metadata(&fifo).unwrap().file_type().is_fifo());
    assert!(!dir.path("pipe.partial").exists());
}
