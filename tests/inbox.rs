//! `mailsift inbox`: cron-driven file drops.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command as StdCommand};
use std::time::{Duration, SystemTime};

use leadmagic_mock::{Latency, MockConfig};
use predicates::prelude::*;
use serde_json::Value;

use crate::util::{eventually, rows, text, Dir, Mock, Printed};

fn list(n: usize, tag: &str) -> String {
    let mut out = String::from("name,email\n");
    for i in 0..n {
        out.push_str(&format!("{tag} {i},{tag}{i}@example-{}.com\n", i % 5));
    }
    out
}

/// Sets a file's modification time `age` into the past.
fn age(path: &Path, age: Duration) {
    let file = File::options().write(true).open(path).unwrap();
    file.set_modified(SystemTime::now() - age).unwrap();
}

fn setup() -> Dir {
    let dir = Dir::new();
    std::fs::create_dir(dir.path("in")).unwrap();
    dir
}

fn inbox(dir: &Dir, mock: &Mock) -> assert_cmd::Command {
    let mut cmd = dir.mailsift(mock);
    cmd.args(["inbox", "in", "--out", "out", "--settle", "0s"]);
    cmd
}

/// Names the inbox leaves alone: hidden, partial, temporary, backup and non-list files.
const IGNORED: [&str; 7] = [
    ".hidden.csv",
    "x.csv.partial",
    "y.tmp",
    "z.csv~",
    "dl.crdownload",
    "p.part",
    "notes.md",
];

#[test]
fn once_processes_ready_files_oldest_first_and_ignores_the_rest() {
    let mock = Mock::fast();
    let dir = setup();
    dir.write("in/newer.csv", list(5, "b"));
    dir.write("in/older.txt", "a1@acme-corp.com\na2@acme-corp.com\n");
    age(&dir.path("in/older.txt"), Duration::from_secs(120));
    age(&dir.path("in/newer.csv"), Duration::from_secs(60));
    for ignored in IGNORED {
        dir.write(&format!("in/{ignored}"), list(3, "x"));
    }
    let out = inbox(&dir, &mock).arg("--once").assert().success();
    let log = text(&out.get_output().stderr);
    let older = log.find("Finished in/older.txt").expect(&log);
    let newer = log.find("Finished in/newer.csv").expect(&log);
    assert!(older < newer, "oldest first: {log}");
    assert_eq!(rows(&dir.read("out/newer.validated.csv")).len(), 6);
    assert_eq!(rows(&dir.read("out/older.validated.csv")).len(), 2);
    let report: Value = serde_json::from_slice(&dir.read("out/newer.report.json")).unwrap();
    assert_eq!(report["outcome"], "done");
    assert!(
        dir.path("in/processed/older.txt").exists() && dir.path("in/processed/newer.csv").exists()
    );
    assert!(!dir.path("in/older.txt").exists());
    for ignored in IGNORED {
        assert!(
            dir.path(&format!("in/{ignored}")).exists(),
            "{ignored} was left alone"
        );
    }
    assert_eq!(mock.stats().validations, 7);
}

#[test]
fn a_file_still_being_written_waits_for_the_settle_period_or_its_marker() {
    let mock = Mock::fast();
    let dir = setup();
    dir.write("in/slow.csv", list(3, "s"));
    // Just written: not settled.
    dir.ok(&mock, "inbox in --out out --once --settle 1h")
        .stderr_has(&["Waiting in/slow.csv"]);
    assert!(dir.path("in/slow.csv").exists() && mock.stats().validations == 0);
    // Unchanged for longer than the settle period: ready.
    age(&dir.path("in/slow.csv"), Duration::from_secs(7200));
    dir.ok(&mock, "inbox in --out out --once --settle 1h");
    assert!(dir.path("out/slow.validated.csv").exists());

    // With --require-marker only NAME.ready makes a file ready; the marker goes afterwards.
    dir.write("in/marked.csv", list(2, "m"));
    inbox(&dir, &mock)
        .args(["--once", "--require-marker"])
        .assert()
        .success();
    assert!(dir.path("in/marked.csv").exists());
    dir.write("in/marked.csv.ready", "");
    inbox(&dir, &mock)
        .args(["--once", "--require-marker"])
        .assert()
        .success();
    assert!(dir.path("out/marked.validated.csv").exists());
    assert!(!dir.path("in/marked.csv.ready").exists() && !dir.path("in/marked.csv").exists());
}

#[test]
fn an_unprocessable_file_is_set_aside_with_the_reason_and_the_rest_go_on() {
    let mock = Mock::fast();
    let dir = setup();
    dir.write("in/bad.csv", "first,last\nJane,Doe\n");
    age(&dir.path("in/bad.csv"), Duration::from_secs(60));
    dir.write("in/good.csv", list(4, "g"));
    inbox(&dir, &mock).arg("--once").assert().success();
    assert!(dir.path("in/failed/bad.csv").exists());
    let reason = String::from_utf8(dir.read("in/failed/bad.csv.error.txt")).unwrap();
    assert!(
        reason.contains("first") && reason.contains("--email-column"),
        "{reason}"
    );
    assert!(dir.path("out/good.validated.csv").exists());
}

#[test]
fn overlapping_invocations_exit_quietly_or_wait() {
    let mock = Mock::fast();
    let dir = setup();
    dir.write("in/a.csv", list(3, "a"));
    let held = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.path("in/.mailsift-inbox.lock"))
        .unwrap();
    held.lock().unwrap();
    inbox(&dir, &mock).arg("--once").assert().success().stderr(
        predicate::str::contains("another mailsift inbox run")
            .and(predicate::str::contains("--wait")),
    );
    assert!(dir.path("in/a.csv").exists());

    let mut child = spawn(&dir, &mock, &["--once", "--wait"]);
    let stderr = lines(&mut child);
    eventually("the second run to wait", || {
        stderr.try_iter().any(|l| l.contains("waiting for it"))
    });
    held.unlock().unwrap();
    assert!(child.wait().unwrap().success());
    assert!(dir.path("out/a.validated.csv").exists());
}

fn spawn(dir: &Dir, mock: &Mock, extra: &[&str]) -> Child {
    let mut args = vec!["inbox", "in", "--out", "out", "--settle", "0s"];
    args.extend_from_slice(extra);
    dir.command(mock).args(args).spawn().unwrap()
}

/// The child's stderr lines, as they come.
fn lines(child: &mut Child) -> std::sync::mpsc::Receiver<String> {
    let (tx, rx) = std::sync::mpsc::channel();
    let stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    rx
}

#[test]
fn killed_mid_file_the_next_run_resumes_it_and_pays_once() {
    let dir = setup();
    dir.write("ref.csv", list(300, "k"));
    dir.reference("ref.csv", "ref.validated.csv");

    let mock = Mock::start(MockConfig {
        rate_per_min: 600_000,
        latency: Latency::Fixed(Duration::from_millis(20)),
        ..MockConfig::default()
    });
    dir.write("in/big.csv", list(300, "k"));
    let mut child = spawn(
        &dir,
        &mock,
        &["--once", "--concurrency", "8", "--checkpoint-rows", "10"],
    );
    eventually("requests to flow", || mock.stats().validations >= 80);
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    assert!(
        dir.path("in/big.csv").exists(),
        "the file stays until it is done"
    );

    inbox(&dir, &mock)
        .args(["--once", "--concurrency", "8"])
        .assert()
        .success();
    assert_eq!(
        dir.read("out/big.validated.csv"),
        dir.read("ref.validated.csv")
    );
    assert!(dir.path("in/processed/big.csv").exists());
    let stats = mock.stats();
    assert!(
        stats.repeated.len() <= 8,
        "at most the requests in flight at the kill: {:?}",
        stats.repeated
    );
}

#[test]
fn out_of_credits_stops_and_leaves_the_remaining_files() {
    let dir = setup();
    dir.write(
        "in/one.csv",
        "email\n".to_owned()
            + &(0..40)
                .map(|i| format!("valid{i}@acme-corp.com\n"))
                .collect::<String>(),
    );
    age(&dir.path("in/one.csv"), Duration::from_secs(60));
    dir.write("in/two.csv", list(5, "t"));
    let mock = Mock::start(MockConfig {
        rate_per_min: 600_000,
        credits: 1.0,
        ..MockConfig::default()
    });
    inbox(&dir, &mock)
        .args(["--once", "--concurrency", "2"])
        .assert()
        .code(4)
        .stderr(predicate::str::contains("Stopped in/one.csv"));
    assert!(dir.path("in/one.csv").exists() && dir.path("in/two.csv").exists());
    mock.server.set_credits(100.0);
    inbox(&dir, &mock).arg("--once").assert().success();
    assert!(dir.path("in/processed/one.csv").exists() && dir.path("in/processed/two.csv").exists());
    assert_eq!(rows(&dir.read("out/one.validated.csv")).len(), 41);
}

#[test]
fn the_on_complete_hook_gets_paths_and_counts_but_not_the_key() {
    let mock = Mock::fast();
    let dir = setup();
    dir.write(
        "in/h.csv",
        "email\nvalid1@acme-corp.com\ninvalid2@acme-corp.com\nvalid3@acme-corp.com\n",
    );
    inbox(&dir, &mock)
        .args([
            "--once",
            "--split",
            "--log-format",
            "json",
            "--on-complete",
            "env | grep -E '^(MAILSIFT_|LEADMAGIC_API_KEY)' | sort > hook.txt",
        ])
        .assert()
        .success();
    let env = String::from_utf8(dir.read("hook.txt")).unwrap();
    for want in [
        "MAILSIFT_INPUT=",
        "MAILSIFT_OUTPUT=",
        "MAILSIFT_REPORT=",
        "MAILSIFT_ROWS=3",
        "MAILSIFT_VALID=2",
        "MAILSIFT_INVALID=1",
        "MAILSIFT_DELIVERABLE=",
    ] {
        assert!(env.contains(want), "{want} missing from {env}");
    }
    assert!(
        env.contains("processed/h.csv"),
        "the hook sees where the input went: {env}"
    );
    assert!(!env.contains("LEADMAGIC_API_KEY"), "{env}");
}

#[test]
fn json_logs_are_one_object_per_event() {
    let mock = Mock::fast();
    let dir = setup();
    dir.write("in/j.csv", list(3, "j"));
    dir.write("in/bad.csv", "a,b\n1,2\n");
    let out = inbox(&dir, &mock)
        .args(["--once", "--log-format", "json"])
        .assert()
        .success();
    let events: Vec<Value> = text(&out.get_output().stderr)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let names: Vec<&str> = events
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    assert!(
        names.contains(&"started") && names.contains(&"finished") && names.contains(&"failed"),
        "{names:?}"
    );
    let finished = events.iter().find(|e| e["event"] == "finished").unwrap();
    assert_eq!(finished["summary"]["rows"]["total"], 3);
    assert!(finished["time"].as_str().unwrap().ends_with('Z'));
}

#[test]
fn watching_picks_up_files_dropped_while_it_runs() {
    let mock = Mock::fast();
    let dir = setup();
    let mut child = spawn(&dir, &mock, &["--interval", "50ms"]);
    // It says at once that it is watching, and where results go.
    let said = lines(&mut child);
    let first = said
        .recv_timeout(std::time::Duration::from_secs(60))
        .expect("a first line on stderr");
    assert_eq!(
        first,
        "    Watching in: every 50ms, results to out (stop with Ctrl-C or SIGTERM)"
    );
    dir.write("in/first.csv", list(3, "f"));
    eventually("first.csv to be processed", || {
        dir.path("in/processed/first.csv").exists()
    });
    dir.write("in/second.csv", list(3, "s"));
    eventually("second.csv to be processed", || {
        dir.path("in/processed/second.csv").exists()
    });
    let kill = StdCommand::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    assert_eq!(
        child.wait().unwrap().code(),
        Some(0),
        "a signal while idle is a clean stop"
    );
    assert!(dir.path("out/second.validated.csv").exists());
}
