//! `mailsift validate` against the mock: order, money, resume, faults, odd input.

use std::collections::{BTreeMap, HashSet};
use std::future::Future;
use std::path::Path;
use std::process::Command as StdCommand;
use std::time::Duration;

use clap::Parser;
use mailsift::mock::{Latency, MockConfig, MockServer};
use mailsift::{Config, Exit};
use predicates::prelude::*;

use crate::util::{
    assert_none_sent_twice, assert_only_refused_ones_repeated, rows, rows_with, sample, text, Dir,
    Mock,
};

/// Index of a column in a parsed output.
fn column(rows: &[Vec<String>], name: &str) -> usize {
    rows[0]
        .iter()
        .position(|c| c == name)
        .unwrap_or_else(|| panic!("no column {name}"))
}

/// A list of `n` distinct addresses, some duplicated, some broken, some empty.
fn list(n: usize) -> String {
    let mut out = String::from("id,name,email\n");
    for i in 0..n {
        let email = match i % 10 {
            3 => format!("USER{}@Example-{}.com", i - 1, (i - 1) % 7), // same as the row before, other case
            5 => "not-an-address".to_owned(),
            7 => String::new(),
            _ => format!("user{i}@example-{}.com", i % 7),
        };
        out.push_str(&format!("{i},\"Name, {i}\",{email}\n"));
    }
    out
}

#[test]
fn the_sample_comes_back_whole_in_order_and_each_address_is_paid_once() {
    let mock = Mock::fast();
    let dir = Dir::new();
    let input = dir.write("contacts.csv", std::fs::read(sample()).unwrap());
    dir.mailsift(&mock)
        .args(["validate", "contacts.csv", "-q"])
        .assert()
        .success()
        .stderr("");
    let out = dir.read("contacts.validated.csv");
    assert!(!dir.path("contacts.validated.csv.partial").exists());
    let inp = rows(&std::fs::read(&input).unwrap());
    let outp = rows(&out);
    assert_eq!(inp.len(), outp.len(), "every row comes out");
    for (i, (a, b)) in inp.iter().zip(&outp).enumerate().skip(1) {
        assert_eq!(
            &b[..a.len().min(6)],
            &a[..a.len().min(6)],
            "row {i} keeps its fields"
        );
    }
    let (status, source, normalized) = (
        column(&outp, "email_status"),
        column(&outp, "source"),
        column(&outp, "email_normalized"),
    );
    let allowed = [
        "valid",
        "valid_catch_all",
        "catch_all",
        "unknown",
        "invalid",
        "missing",
        "error",
    ];
    let mut api = HashSet::new();
    let mut never_sent = Vec::new();
    for row in &outp[1..] {
        assert!(allowed.contains(&row[status].as_str()), "{row:?}");
        match row[source].as_str() {
            "api" => assert!(
                api.insert(row[normalized].to_lowercase()),
                "api twice: {row:?}"
            ),
            "syntax" | "empty" => never_sent.push(row[normalized].to_lowercase()),
            "duplicate" => {}
            other => panic!("source {other} in a first run"),
        }
    }
    let stats = mock.stats();
    assert_none_sent_twice(&stats, "one run");
    assert_eq!(stats.validations as usize, api.len());
    let sent = stats.per_address.unwrap();
    for address in never_sent.iter().filter(|a| !a.is_empty()) {
        assert!(
            !sent.contains_key(address),
            "{address} failed the syntax check but was sent"
        );
    }

    // The same job again: done, nothing to do. Forced: everything from the cache.
    dir.mailsift(&mock)
        .args(["validate", "contacts.csv"])
        .assert()
        .success()
        .stderr(predicate::str::contains("already done"));
    dir.mailsift(&mock)
        .args(["validate", "contacts.csv", "--force", "-q"])
        .assert()
        .success();
    assert_eq!(
        mock.stats().validations as usize,
        api.len(),
        "a second run sends nothing"
    );
    let again = rows(&dir.read("contacts.validated.csv"));
    assert!(again[1..]
        .iter()
        .all(|r| ["cache", "syntax", "empty"].contains(&r[source].as_str())));
}

#[test]
fn order_is_kept_under_random_latency() {
    let mock = Mock::start(MockConfig {
        rate_per_min: 600_000,
        latency: Latency::LogNormal {
            median: Duration::from_millis(5),
            p99: Duration::from_millis(80),
        },
        ..MockConfig::default()
    });
    let dir = Dir::new();
    dir.write("in.csv", list(400));
    dir.mailsift(&mock)
        .args([
            "validate",
            "in.csv",
            "-o",
            "out.csv",
            "-q",
            "--concurrency",
            "64",
        ])
        .assert()
        .success();
    let out = rows(&dir.read("out.csv"));
    assert_eq!(out.len(), 401);
    for (i, row) in out[1..].iter().enumerate() {
        assert_eq!(row[0], i.to_string(), "row {i} out of order");
    }
    assert!(mock.stats().max_in_flight > 1, "requests really overlapped");
    assert_none_sent_twice(&mock.stats(), "overlapping requests");
}

/// Parses a command line into the config the binary would use.
fn config(args: &[String], state: &Path, mock_url: &str) -> mailsift::config::ValidateConfig {
    let state = state.display().to_string();
    let mut argv = vec!["mailsift", "--base-url", mock_url, "-q"];
    argv.extend(args.iter().map(String::as_str));
    argv.extend_from_slice(&["--state-dir", &state]);
    match Config::from_args(
        mailsift::cli::Args::parse_from(argv),
        Some("mock-key".into()),
    )
    .unwrap()
    {
        Config::Validate(config) => *config,
        other => panic!("{other:?}"),
    }
}

/// The output with the time column blanked: in-process runs cannot pin the clock.
fn without_times(bytes: &[u8]) -> Vec<Vec<String>> {
    let mut out = rows(bytes);
    let at = column(&out, "checked_at");
    for row in &mut out[1..] {
        row[at].clear();
    }
    out
}

async fn validate(
    args: &[String],
    state: &Path,
    mock: &MockServer,
    stop: impl Future<Output = ()>,
) -> Exit {
    mailsift::validate::run(config(args, state, &mock.url()), stop)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interrupted_at_many_points_then_resumed_gives_the_same_file_and_pays_once() {
    let quick = || MockConfig {
        rate_per_min: 600_000,
        latency: Latency::LogNormal {
            median: Duration::from_millis(2),
            p99: Duration::from_millis(30),
        },
        ..MockConfig::default()
    };
    let dir = Dir::new();
    dir.write("in.csv", list(300));
    let reference = {
        let mock = MockServer::start(quick()).await.unwrap();
        let args = absolute(&dir, &["validate", "in.csv", "-o", "ref.csv"]);
        let state = dir.path("ref-state");
        assert_eq!(
            validate(&args, &state, &mock, std::future::pending()).await,
            Exit::Ok
        );
        without_times(&dir.read("ref.csv"))
    };
    for (i, stop_after) in [1u64, 10, 40, 90, 150, 200].into_iter().enumerate() {
        let mock = MockServer::start(quick()).await.unwrap();
        let out = format!("out{i}.csv");
        let args = absolute(
            &dir,
            &["validate", "in.csv", "-o", &out, "--checkpoint-rows", "7"],
        );
        let stop = async {
            while mock.stats().validations < stop_after {
                tokio::task::yield_now().await;
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        };
        let state = dir.path(&format!("state{i}"));
        let first = validate(&args, &state, &mock, stop).await;
        assert!(first == Exit::Interrupted || first == Exit::Ok, "{first:?}");
        assert_eq!(
            validate(&args, &state, &mock, std::future::pending()).await,
            Exit::Ok
        );
        assert!(
            without_times(&dir.read(&out)) == reference,
            "stopped after {stop_after}: files differ"
        );
        assert_none_sent_twice(&mock.stats(), &format!("stopped after {stop_after}"));
    }
}

fn absolute(dir: &Dir, args: &[&str]) -> Vec<String> {
    args.iter()
        .map(|a| {
            if a.ends_with(".csv") {
                dir.path(a).display().to_string()
            } else {
                a.to_string()
            }
        })
        .collect()
}

#[test]
fn sigterm_stops_cleanly_and_the_same_command_resumes_to_the_identical_file() {
    let mock = Mock::start(MockConfig {
        rate_per_min: 600_000,
        latency: Latency::Fixed(Duration::from_millis(40)),
        ..MockConfig::default()
    });
    let dir = Dir::new();
    dir.write("in.csv", list(400));
    let reference = dir.reference("in.csv", "ref.csv");

    let child = dir.spawn(
        &mock,
        &[
            "validate",
            "in.csv",
            "-o",
            "out.csv",
            "--concurrency",
            "8",
            "--checkpoint-rows",
            "10",
        ],
    );
    while mock.stats().validations < 60 {
        std::thread::sleep(Duration::from_millis(2));
    }
    let kill = StdCommand::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(Exit::Interrupted.code().into()),
        "{}",
        text(&out.stderr)
    );
    assert!(
        text(&out.stderr).contains("run the same command to resume"),
        "{}",
        text(&out.stderr)
    );
    assert!(dir.path("out.csv.partial").exists() && !dir.path("out.csv").exists());

    dir.mailsift(&mock)
        .args(["validate", "in.csv", "-o", "out.csv", "--concurrency", "8"])
        .assert()
        .success()
        .stderr(predicate::str::contains("resuming after"));
    assert_eq!(
        dir.read("out.csv"),
        reference,
        "byte-identical to the uninterrupted run"
    );
    assert_none_sent_twice(&mock.stats(), "interrupted and resumed");
}

#[test]
fn out_of_credits_stops_resumably_and_a_top_up_finishes_the_identical_file() {
    let dir = Dir::new();
    dir.write("in.csv", list(200));
    dir.reference("in.csv", "ref.csv");

    let poor = Mock::start(MockConfig {
        rate_per_min: 600_000,
        credits: 2.0,
        ..MockConfig::default()
    });
    dir.mailsift(&poor)
        .args(["validate", "in.csv", "-o", "out.csv", "--concurrency", "4"])
        .assert()
        .code(4)
        .stderr(predicate::str::contains(
            "Top up, then run the same command to resume",
        ));
    assert!(!dir.path("out.csv").exists());
    poor.server.set_credits(1000.0);
    dir.mailsift(&poor)
        .args(["validate", "in.csv", "-o", "out.csv", "-q"])
        .assert()
        .success();
    assert_eq!(dir.read("out.csv"), dir.read("ref.csv"));
    assert_only_refused_ones_repeated(&poor.stats());
}

#[test]
fn a_rejected_key_stops_at_once_with_exit_3() {
    let mock = Mock::fast();
    let dir = Dir::new();
    dir.write("in.csv", list(50));
    dir.mailsift(&mock)
        .env("LEADMAGIC_API_KEY", "revoked")
        .args(["validate", "in.csv"])
        .assert()
        .code(3)
        .stderr(
            predicate::str::contains("X-API-Key").and(predicate::str::contains("revoked").not()),
        );
    // The free balance call at the start finds the bad key: not one validation is sent.
    assert_eq!(mock.stats().by_status.get(&401).copied(), Some(1));
    assert_eq!(mock.stats().validations, 0);
}

#[test]
fn hard_rate_limit_429s_pause_the_whole_pool_and_every_row_gets_its_verdict() {
    // The server refuses more than 20 requests in any second but advertises far more, so the
    // client overruns it.
    let mock = Mock::start(MockConfig {
        rate_per_min: 20,
        limit_window: Duration::from_secs(1),
        hard_limit: true,
        advertise_limit: Some(1_000_000),
        ..MockConfig::default()
    });
    let dir = Dir::new();
    let mut input = String::from("email\n");
    for i in 0..100 {
        input.push_str(&format!("u{i}@acme-corp.com\n"));
    }
    dir.write("in.csv", input);
    dir.mailsift(&mock)
        .args([
            "validate",
            "in.csv",
            "-o",
            "out.csv",
            "-q",
            "--rate",
            "100000/min",
            "--max-retries",
            "8",
        ])
        .assert()
        .success();
    let out = rows(&dir.read("out.csv"));
    let status = column(&out, "email_status");
    assert!(
        out[1..].iter().all(|r| r[status] != "error"),
        "every row answered"
    );
    let stats = mock.stats();
    assert!(stats.rate_limited > 0, "the test did hit the limit");
    // Without a pool-wide pause each of the 256 workers would keep running into the wall.
    assert!(stats.rate_limited < 100, "{} 429s", stats.rate_limited);
    assert_eq!(stats.answered, 100);
}

#[test]
fn odd_bytes_and_ragged_rows_pass_through_unchanged() {
    let mock = Mock::fast();
    let dir = Dir::new();
    let mut input = b"name;email;city\r\n".to_vec();
    input.extend_from_slice(b"Jos\xe9;valid.jose@acme-corp.com;M\xfcnchen\r\n"); // Latin-1
    input.extend_from_slice(b"short;short@acme-corp.com\r\n"); // too few fields
    input.extend_from_slice(b"long;long@acme-corp.com;x;y;z\r\n"); // too many
    input.extend_from_slice(b"\"multi\r\nline\";ml@acme-corp.com;\"a;b\"\r\n");
    input.extend_from_slice(b"last;last@acme-corp.com;end"); // no final line ending
    dir.write("odd.csv", &input);
    dir.mailsift(&mock)
        .args(["validate", "odd.csv", "-q"])
        .assert()
        .success();
    let out = dir.read("odd.validated.csv");
    // Issue 12: the Latin-1 bytes make it a Windows-1252 file, decoded: the same text comes out
    // in UTF-8, after a byte order mark; every other byte is as it was.
    let out = out.strip_prefix(b"\xEF\xBB\xBF").expect("a BOM").to_vec();
    let lines: Vec<&[u8]> = out.split(|&b| b == b'\n').collect();
    assert!(
        lines[1].starts_with("José;valid.jose@acme-corp.com;München;valid;".as_bytes()),
        "{}",
        text(lines[1])
    );
    assert!(
        lines[2].starts_with(b"short;short@acme-corp.com;;"),
        "padded: {}",
        text(lines[2])
    );
    assert!(
        lines[3].starts_with(b"long;long@acme-corp.com;x;y;z;"),
        "{}",
        text(lines[3])
    );
    assert!(out.windows(22).any(|w| w == b"\"multi\r\nline\";ml@acme-"));
    assert!(out.ends_with(b"api;;\r\n"), "{}", text(&out));
    assert_eq!(rows(&out).len(), 6);
}

#[test]
fn stdin_to_stdout() {
    let mock = Mock::fast();
    let dir = Dir::new();
    let out = dir
        .mailsift(&mock)
        .args(["validate", "-"])
        .write_stdin("a@acme-corp.com\nb@acme-corp.com\nbroken@\n")
        .assert()
        .success()
        .stderr(predicate::str::contains("cannot resume"));
    let rows = rows(&out.get_output().stdout);
    assert_eq!(rows.len(), 3, "no header in, none out");
    assert_eq!(rows[0][0], "a@acme-corp.com");
    assert_eq!(rows[2][1], "invalid");
}

#[test]
fn the_email_column_is_found_by_name_by_content_or_by_flag() {
    let mock = Mock::fast();
    let dir = Dir::new();
    let cases: &[(&str, &str, &[&str], &str)] = &[
        (
            "named",
            "ID\tWork E-Mail\tNote\n1\tjane@acme.com\tx\n",
            &[],
            "jane@acme.com",
        ),
        (
            "content",
            "who,contact,x\nJane,jane@acme.com,1\nBob,bob@acme.com,2\n",
            &[],
            "jane@acme.com",
        ),
        (
            "flag",
            "a,b\nx@acme.com,y@acme.com\n",
            &["--email-column", "2"],
            "y@acme.com",
        ),
        (
            "flagname",
            "a,b\nx@acme.com,y@acme.com\n",
            &["--email-column", "b"],
            "y@acme.com",
        ),
    ];
    for (name, body, extra, want) in cases {
        dir.write(&format!("{name}.csv"), body);
        let mut cmd = dir.mailsift(&mock);
        cmd.args(["validate", &format!("{name}.csv"), "-o", "-", "-q"])
            .args(*extra);
        let out = cmd.assert().success();
        let delimiter = if *name == "named" { b'\t' } else { b',' };
        let rows = rows_with(&out.get_output().stdout, delimiter);
        assert_eq!(rows[1][column(&rows, "email_normalized")], *want, "{name}");
    }
    dir.write("none.csv", "first,last\nJane,Doe\n");
    dir.mailsift(&mock)
        .args(["validate", "none.csv"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("first").and(predicate::str::contains("--email-column")));
}

#[test]
fn revalidating_an_annotated_file_replaces_the_columns() {
    let mock = Mock::fast();
    let dir = Dir::new();
    dir.write("in.csv", list(30));
    dir.mailsift(&mock)
        .args(["validate", "in.csv", "-o", "once.csv", "-q"])
        .assert()
        .success();
    dir.mailsift(&mock)
        .args(["validate", "once.csv", "-o", "twice.csv", "-q"])
        .assert()
        .success();
    let once = rows(&dir.read("once.csv"));
    let twice = rows(&dir.read("twice.csv"));
    assert_eq!(once[0], twice[0], "no second set of columns");
    assert_eq!(once.len(), twice.len());
}

#[test]
fn a_changed_input_is_refused_until_restart() {
    let dir = Dir::new();
    dir.write("in.csv", list(100));
    let poor = Mock::start(MockConfig {
        rate_per_min: 600_000,
        credits: 1.0,
        ..MockConfig::default()
    });
    dir.mailsift(&poor)
        .args(["validate", "in.csv", "-q"])
        .assert()
        .code(4);
    dir.write("in.csv", list(101));
    poor.server.set_credits(100.0);
    dir.mailsift(&poor)
        .args(["validate", "in.csv"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("changed").and(predicate::str::contains("--restart")));
    dir.mailsift(&poor)
        .args(["validate", "in.csv", "-q", "--restart"])
        .assert()
        .success();
    assert_eq!(rows(&dir.read("in.validated.csv")).len(), 102);
    assert_only_refused_ones_repeated(&poor.stats());
}

#[test]
fn a_second_run_on_the_same_state_directory_fails_fast() {
    let mock = Mock::fast();
    let dir = Dir::new();
    dir.write("in.csv", list(10));
    let _held = mailsift::store::Store::open(&dir.state()).unwrap();
    dir.mailsift(&mock)
        .args(["validate", "in.csv"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("in use").and(predicate::str::contains("--state-dir")));
}

#[test]
fn no_key_no_sandbox_is_exit_2_and_the_sandbox_runs_the_sample() {
    let dir = Dir::new();
    dir.write("c.csv", std::fs::read(sample()).unwrap());
    dir.bare()
        .args(["validate", "c.csv"])
        .assert()
        .code(2)
        .stderr(
            predicate::str::contains("LEADMAGIC_API_KEY")
                .and(predicate::str::contains("--sandbox")),
        );
    assert!(
        !dir.path("c.validated.csv.partial").exists(),
        "nothing is created without a key"
    );
    let out = dir
        .bare()
        .args(["validate", "c.csv", "--sandbox"])
        .assert()
        .success();
    let stderr = text(&out.get_output().stderr);
    assert!(
        stderr.contains("sandbox") && stderr.contains("credits spent"),
        "{stderr}"
    );
    let out = rows(&dir.read("c.validated.csv"));
    let status = column(&out, "email_status");
    let counts: BTreeMap<String, usize> = out[1..].iter().fold(BTreeMap::new(), |mut m, r| {
        *m.entry(r[status].clone()).or_default() += 1;
        m
    });
    for status in [
        "valid",
        "invalid",
        "catch_all",
        "unknown",
        "valid_catch_all",
        "missing",
    ] {
        assert!(
            counts.contains_key(status),
            "{status} missing from {counts:?}"
        );
    }
}
