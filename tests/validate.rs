//! `mailsift validate` against the mock: order, money, resume, faults, odd input.

use std::collections::{BTreeMap, HashSet};
use std::future::Future;
use std::path::Path;
use std::time::Duration;

use clap::Parser;
use leadmagic_mock::{Latency, MockConfig, MockServer};
use mailsift::{Config, Exit};
use predicates::prelude::*;

use crate::util::{
    assert_lines_start, assert_none_sent_twice, assert_only_refused_ones_repeated, column,
    finish_with, rows, rows_with, sample, signal, text, with_input, Dir, Mock, STATUSES,
};

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
    dir.ok(&mock, "validate contacts.csv -q").stderr("");
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
    let mut api = HashSet::new();
    let mut never_sent = Vec::new();
    for row in &outp[1..] {
        assert!(STATUSES.contains(&row[status].as_str()), "{row:?}");
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
    dir.ok(&mock, "validate contacts.csv")
        .stderr(predicate::str::contains("already done"));
    dir.ok(&mock, "validate contacts.csv --force -q");
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
    let mock = Mock::lognormal(600_000, 5, 80);
    let dir = Dir::new();
    dir.write("in.csv", list(400));
    dir.ok(&mock, "validate in.csv -o out.csv -q --concurrency 64");
    let out = rows(&dir.read("out.csv"));
    assert_eq!(out.len(), 401);
    for (i, row) in out[1..].iter().enumerate() {
        assert_eq!(row[0], i.to_string(), "row {i} out of order");
    }
    assert!(mock.stats().max_in_flight > 1, "requests really overlapped");
    assert_none_sent_twice(&mock.stats(), "overlapping requests");
}

/// Parses a command line into the config the binary would use.
fn config(args: &[String], state: &Path, mock_url: &str) -> mailsift::ValidateConfig {
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
    let mut interrupted = 0;
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
        // A late stop point may come after the run has ended.
        assert!(first == Exit::Interrupted || first == Exit::Ok, "{first:?}");
        interrupted += usize::from(first == Exit::Interrupted);
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
    assert!(
        interrupted >= 3,
        "only {interrupted} runs were stopped midway"
    );
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
    let mock = Mock::fixed_latency(40);
    let dir = Dir::new();
    dir.write("in.csv", list(400));
    let reference = dir.reference("in.csv", "ref.csv");

    let job = "validate in.csv -o out.csv --concurrency 8 --checkpoint-rows 10";
    let child = dir.spawn_until(&mock, job, 60);
    signal(child.id(), "TERM");
    let code = Exit::Interrupted.code().into();
    finish_with(child, code, &["run the same command to resume"]);
    assert!(dir.path("out.csv.partial").exists() && !dir.path("out.csv").exists());

    dir.ok(&mock, "validate in.csv -o out.csv --concurrency 8")
        .stderr(predicate::str::contains("resuming after"));
    assert_eq!(
        dir.read("out.csv"),
        reference,
        "byte-identical to the uninterrupted run"
    );
    assert_none_sent_twice(&mock.stats(), "interrupted and resumed");
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
    dir.ok(&mock, "validate odd.csv -q");
    let out = dir.read("odd.validated.csv");
    // Issue 12: the Latin-1 bytes make it a Windows-1252 file, decoded: the same text comes out
    // in UTF-8, after a byte order mark; every other byte is as it was.
    let out = out.strip_prefix(b"\xEF\xBB\xBF").expect("a BOM").to_vec();
    assert_lines_start(
        &out,
        &[
            (1, "José;valid.jose@acme-corp.com;München;valid;"),
            (2, "short;short@acme-corp.com;;"), // padded
            (3, "long;long@acme-corp.com;x;y;z;"),
        ],
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
    dir.run(&mock, "validate none.csv")
        .code(2)
        .stderr(predicate::str::contains("first").and(predicate::str::contains("--email-column")));
}

#[test]
fn revalidating_an_annotated_file_replaces_the_columns() {
    let (mock, dir) = with_input(list(30));
    dir.ok(&mock, "validate in.csv -o once.csv -q");
    dir.ok(&mock, "validate once.csv -o twice.csv -q");
    let once = rows(&dir.read("once.csv"));
    let twice = rows(&dir.read("twice.csv"));
    assert_eq!(once[0], twice[0], "no second set of columns");
    assert_eq!(once.len(), twice.len());
}

#[test]
fn a_changed_input_is_refused_until_restart() {
    let dir = Dir::new();
    dir.write("in.csv", list(100));
    let poor = Mock::with_credits(1.0);
    dir.run(&poor, "validate in.csv -q").code(4);
    dir.write("in.csv", list(101));
    poor.server.set_credits(100.0);
    dir.run(&poor, "validate in.csv")
        .code(2)
        .stderr(predicate::str::contains("changed").and(predicate::str::contains("--restart")));
    dir.ok(&poor, "validate in.csv -q --restart");
    assert_eq!(rows(&dir.read("in.validated.csv")).len(), 102);
    assert_only_refused_ones_repeated(&poor.stats());
}

#[test]
fn a_second_run_on_the_same_state_directory_fails_fast() {
    let (mock, dir) = with_input(list(10));
    let _held = mailsift::store::Store::open(&dir.state()).unwrap();
    dir.run(&mock, "validate in.csv")
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
    let out = dir.bare_run("validate c.csv --sandbox").success();
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
