//! Faults from the API (issue 4): the mock's fault flags, hard 429s with both `Retry-After`
//! forms, credits running out, the key revoked, and the API going away (closed or frozen).
//! Each ends with every row accounted for, the rate respected, and a resumable exit where the
//! job could not finish.

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::time::Duration;

use leadmagic_mock::{Latency, MockConfig, Stats};
use predicates::prelude::*;

use crate::crash::assert_same_file;
use crate::scenario::{self, assert_every_row_accounted, Expect, Ran, Scenario};
use crate::util::{
    assert_only_refused_ones_repeated, column, contacts, finish, finish_with, json, rows, signal,
    wait_for, Dir, Mock,
};

/// The data rows of `contacts(n)` plus addresses the mock always fails (`fail*`: 500 on every
/// attempt) or refuses (`reject*`: 400), spaced out so they never make ten failures in a row.
fn faulty_contacts(n: usize) -> String {
    let mut out = contacts(n);
    for i in 0..4 {
        out.push_str(&format!("f{i},F,fail{i}@acme-corp.com,x\n"));
        for j in 0..10 {
            out.push_str(&format!("g{i}.{j},G,filler{j}@example-{i}.org,x\n"));
        }
        out.push_str(&format!("r{i},R,reject{i}@acme-corp.com,x\n"));
    }
    out
}

/// `n` distinct addresses, one a row.
fn addresses(n: usize) -> String {
    let mut out = String::from("email\n");
    for i in 0..n {
        out.push_str(&format!("u{i}@acme-corp.com\n"));
    }
    out
}

/// At `per_minute`, the limiter lets at most `burst + floor(window / interval)` requests out in
/// any window (see `limiter.rs`); arrivals at the server may bunch by scheduling jitter, here
/// allowed up to 100 ms.
fn most_in_one_second(per_minute: u64) -> u64 {
    let burst = (per_minute / 100).clamp(1, 5);
    let interval_ns = 60_000_000_000u64.div_ceil(per_minute - burst);
    burst + 1_100_000_000 / interval_ns
}

#[test]
fn api_faults_every_row_gets_a_verdict_or_an_error_and_the_rate_holds() {
    let mock = Mock::start(MockConfig {
        rate_per_min: 1_000_000,
        latency: Latency::Fixed(Duration::from_millis(2)),
        p_500: 0.01,
        p_reset: 0.01,
        p_hang: 0.005,
        p_truncated: 0.005,
        p_503: 0.01,
        hang: Duration::from_secs(2),
        seed: 3,
        ..MockConfig::default()
    });
    let dir = Dir::new();
    let input = faulty_contacts(700);
    dir.write("in.csv", &input);
    let run = |mock: &Mock, out: &str, state: &str| {
        dir.ok(
            mock,
            &format!(
                "validate in.csv -o {out} -q --state-dir {state} --timeout 500ms \
                 --max-retries 3 --rate 30000/min --report {out}.json"
            ),
        );
    };
    // The same job against a calm mock gives the reference; both run at once (the backoffs of
    // the always-failing addresses dominate either run).
    let calm = Mock::fast();
    std::thread::scope(|s| {
        s.spawn(|| run(&calm, "calm.csv", "calm-state"));
        run(&mock, "out.csv", "state");
    });
    let out = assert_every_row_accounted(&dir, &input, "out.csv", "out.csv.json");

    let stats = mock.stats();
    assert!(
        stats.by_status.get(&500).copied().unwrap_or(0) > 4,
        "{:?}",
        stats.by_status
    );
    assert!(
        stats.by_status.get(&502).copied().unwrap_or(0)
            + stats.by_status.get(&503).copied().unwrap_or(0)
            > 0,
        "{:?}",
        stats.by_status
    );
    assert!(
        stats.resets > 0 && stats.hangs > 0 && stats.truncated > 0,
        "{stats:?}"
    );
    // Retries are bounded: no address went out more than 1 + max-retries times.
    assert!(
        stats.repeated.values().all(|n| *n <= 4),
        "{:?}",
        stats.repeated
    );
    assert!(
        stats.max_in_window_1s <= most_in_one_second(30_000),
        "{} requests in one second",
        stats.max_in_window_1s
    );
    assert!(stats.max_in_window_60s <= 30_000);

    // Every row that got an answer is the row a fault-free run writes; the rest are `error`.
    let reference = rows(&dir.read("calm.csv"));
    let status = column(&out, "email_status");
    for (got, want) in out.iter().zip(&reference) {
        assert!(got == want || got[status] == "error", "{got:?}\n{want:?}");
    }
    let failed: HashSet<&str> = out[1..]
        .iter()
        .filter(|r| r[status] == "error")
        .map(|r| r[2].as_str())
        .collect();
    for always in ["fail0@acme-corp.com", "reject3@acme-corp.com"] {
        assert!(failed.contains(always), "{always} is an error row");
    }
}

/// Faults that a single run meets and must end as documented: the mock's configuration, the
/// command and what must come of it.
#[test]
fn faults_of_a_single_run_end_as_documented() {
    // The server admits `per_second` requests a second but advertises far more, so the
    // client overruns it and must obey the Retry-After of each 429: without a pool-wide
    // pause each of the 256 workers would keep running into the wall, and without coming
    // back slower the pool would run into it after every pause (108 429s for 100 rows once,
    // on a loaded machine; pool::tests has the same case on the paused clock).
    let hard_429s = |name, per_second, retry_after_date, n: u64| Scenario {
        name,
        mock: MockConfig {
            rate_per_min: per_second,
            limit_window: Duration::from_secs(1),
            hard_limit: true,
            retry_after_date,
            advertise_limit: Some(1_000_000),
            ..MockConfig::default()
        },
        input: addresses(n as usize),
        args: "validate in.csv -o out.csv -q --report r.json --rate 100000/min --max-retries 8",
        expect: Expect {
            accounted: true,
            all_answered: true,
            answered: Some(n),
            rate_limited: Some(1..=n - 1),
            ..Expect::default()
        },
        ..Scenario::default()
    };
    // The failure is held until an answer shows the API is up; here no other request
    // follows, and the rows behind it (more than the queues between reader and writer hold,
    // about 3 windows of 1,024 rows) fill the writer's window. The run must still finish.
    let mut stall = String::from("email\nfail.once@acme-corp.com\n");
    for i in 0..8000 {
        stall.push_str(&format!("not-an-address-{i}\n"));
    }
    scenario::run([
        hard_429s("429s with Retry-After in seconds", 40, false, 80),
        hard_429s("429s with Retry-After as a date", 40, true, 80),
        hard_429s("429s past 20 a second", 20, false, 100),
        Scenario {
            name: "a rejected key stops at once with exit 3",
            input: contacts(50),
            args: "validate in.csv",
            env: &[("LEADMAGIC_API_KEY", "revoked")],
            expect: Expect {
                code: 3,
                stderr: &["X-API-Key"],
                not_stderr: &["revoked"],
                // The free balance call at the start finds the bad key: not one validation.
                by_status: &[(401, 1)],
                validations: Some(0..=0),
                ..Expect::default()
            },
            ..Scenario::default()
        },
        Scenario {
            name: "a request that fails for good before thousands of rows without requests",
            input: stall,
            args: "validate in.csv -o out.csv -q --max-retries 1 --concurrency 4",
            expect: Expect {
                rows: Some(8002),
                ..Expect::default()
            },
            then: |ran| assert_eq!(rows(&ran.dir.read("out.csv"))[1][1], "error"),
            ..Scenario::default()
        },
    ]);
}

#[test]
#[ignore = "long: a 70 s run checked over real 60 s windows; run with `cargo test -- --ignored`"]
fn the_rate_holds_over_real_60_second_windows() {
    scenario::run([Scenario {
        name: "600/min over 70 s with faults and retries",
        mock: MockConfig {
            rate_per_min: 1_000_000,
            latency: Latency::Fixed(Duration::from_millis(20)),
            p_500: 0.02,
            p_reset: 0.02,
            seed: 9,
            ..MockConfig::default()
        },
        input: contacts(900),
        args: "validate in.csv -o out.csv -q --report r.json --rate 600/min --max-retries 3",
        expect: Expect {
            accounted: true,
            // The run spans more than a minute.
            validations: Some(601..=u64::MAX),
            ..Expect::default()
        },
        then: |ran: &Ran| {
            assert!(
                ran.stats.max_in_window_60s <= 600,
                "{}",
                ran.stats.max_in_window_60s
            )
        },
        ..Scenario::default()
    }]);
}

#[test]
fn out_of_credits_halfway_then_a_top_up_resumes_to_the_identical_file() {
    // Rows, credits, concurrency, and where the checkpoint must stand when the credits end.
    let cases: [(usize, f64, &str, Option<std::ops::Range<u64>>); 2] = [
        // About 550 charged answers in the file; credits for 250 of them: halfway.
        (800, 12.5, "16", Some(101..700)),
        (200, 2.0, "4", None),
    ];
    for (n, credits, concurrency, halfway) in cases {
        let dir = Dir::new();
        dir.write("in.csv", contacts(n));
        let reference = dir.reference("in.csv", "ref.csv");
        let mock = Mock::start(MockConfig {
            rate_per_min: 1_000_000,
            latency: Latency::Fixed(Duration::from_millis(2)),
            credits,
            ..MockConfig::default()
        });
        let job = format!("validate in.csv -o out.csv --concurrency {concurrency}");
        dir.run(&mock, &job)
            .code(4)
            .stderr(predicate::str::contains(
                "Top up, then run the same command to resume",
            ));
        assert!(!dir.path("out.csv").exists());
        let record = dir.store().jobs().next().unwrap();
        assert_eq!(record.state, mailsift::store::JobState::OutOfCredits);
        if let Some(halfway) = halfway {
            assert!(
                halfway.contains(&record.watermark.rows),
                "stopped halfway: {:?}",
                record.watermark
            );
        }
        mock.server.set_credits(1000.0);
        dir.ok(&mock, &job)
            .stderr(predicate::str::contains("resuming after"));
        assert_same_file(&dir.read("out.csv"), &reference, "after a top-up");
        assert_only_refused_ones_repeated(&mock.stats());
    }
}

#[test]
fn a_key_revoked_halfway_exits_3_keeps_the_checkpoint_and_a_good_key_finishes() {
    let dir = Dir::new();
    dir.write("in.csv", contacts(800));
    let reference = dir.reference("in.csv", "ref.csv");
    let mock = Mock::fixed_latency(2);
    let job = "validate in.csv -o out.csv --concurrency 16 --checkpoint-rows 50";
    let child = dir.spawn_until(&mock, job, 300);
    mock.server.set_api_key("rotated-key");
    let stderr = finish_with(child, 3, &["progress is saved", "X-API-Key"]);
    assert!(!stderr.contains("mock-key"), "{stderr}");
    // The checkpoint is intact: the partial file holds at least what the record says.
    let record = dir.store().jobs().next().unwrap();
    assert_eq!(record.state, mailsift::store::JobState::KeyRejected);
    assert!(record.watermark.rows >= 50, "{:?}", record.watermark);
    let partial = std::fs::metadata(dir.path("out.csv.partial"))
        .unwrap()
        .len();
    assert!(partial >= record.watermark.output_bytes);
    let refused = mock.stats().by_status.get(&401).copied().unwrap_or(0);
    assert!(refused > 0);

    dir.mailsift(&mock)
        .env("LEADMAGIC_API_KEY", "rotated-key")
        .args(job.split_whitespace())
        .assert()
        .success()
        .stderr(predicate::str::contains("resuming after"));
    assert_same_file(&dir.read("out.csv"), &reference, "after a new key");
    // Again only what was refused (not charged) or abandoned in flight (maybe charged).
    let stats = mock.stats();
    let extra = stats.validations - stats.unique_addresses;
    assert!(
        extra <= refused + 16,
        "{extra} extra calls, {refused} refused"
    );
}

/// The mock's statistics over plain HTTP (for a mock running as its own process).
fn http_stats(addr: &str) -> Stats {
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream
        .write_all(b"GET /__mock/stats HTTP/1.1\r\nHost: mock\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).unwrap();
    let body = response.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    serde_json::from_slice(&response[body..]).unwrap()
}

#[test]
fn the_api_going_away_mid_run_ends_resumably_after_bounded_retries() {
    let dir = Dir::new();
    dir.write("in.csv", contacts(1000));
    let reference = dir.reference("in.csv", "ref.csv");
    let job = "validate in.csv -o out.csv --concurrency 8 --max-retries 2 --report r.json";
    let mock = Mock::fixed_latency(3);
    let url = mock.url();
    let child = dir.spawn_until(&mock, job, 200);
    let before = mock.stats();
    mock.shutdown(); // the port is closed: every new connection is refused
    finish_with(
        child,
        6,
        &[
            "the API seems unavailable",
            "Run the same command later to resume",
        ],
    );
    let report = json(&dir.read("r.json"));
    assert_eq!(report["outcome"], "too_many_failures");
    // Bounded: ten jobs in a row failed for good, each after 1 + 2 attempts, plus what the
    // other workers had started: no busy loop.
    let after = report["requests"].as_u64().unwrap() - before.validations;
    assert!(
        (10..=(10 + 8) * 3 + 8).contains(&after),
        "{after} attempts after the API went away"
    );

    // The API comes back (a new server on another port): the same command finishes the job,
    // asking again only what was not answered before the outage.
    let back = Mock::fast();
    assert_ne!(back.url(), url);
    dir.ok(&back, job)
        .stderr(predicate::str::contains("resuming after"));
    assert_same_file(&dir.read("out.csv"), &reference, "after the outage");
    let asked_before: HashSet<String> = before.per_address.unwrap().into_keys().collect();
    let again: Vec<String> = back
        .stats()
        .per_address
        .unwrap()
        .into_keys()
        .filter(|a| asked_before.contains(a))
        .collect();
    assert!(again.len() <= 8 * 2, "asked again: {again:?}");
}

#[test]
fn a_frozen_api_times_out_and_ends_resumably() {
    // The mock as its own process, stopped with SIGSTOP: connections are accepted by the
    // kernel and never answered, so every request times out.
    let mut mock = Reaped(
        std::process::Command::new(assert_cmd::cargo::cargo_bin("leadmagic-mock"))
            .args("--port 0 --latency-ms 3 --rate-per-min 600000 -q".split_whitespace())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut line = String::new();
    BufReader::new(mock.0.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let url = line.trim().rsplit(' ').next().unwrap().to_owned();
    let addr = url.trim_start_matches("http://").to_owned();
    let dir = Dir::new();
    dir.write("in.csv", contacts(600));
    let job = "validate in.csv -o out.csv --concurrency 8 --max-retries 1 --timeout 300ms";
    let run = |dir: &Dir| {
        let mut cmd = dir.command_at(&url);
        cmd.args(job.split_whitespace());
        cmd
    };
    let mut child = run(&dir).spawn().unwrap();
    let started = wait_for(&mut child, "150 validations at the mock process", || {
        http_stats(&addr).validations >= 150
    });
    assert!(started, "the job ended before 150 validations");
    signal(mock.0.id(), "STOP");
    let (code, stderr) = finish(child);
    signal(mock.0.id(), "CONT");
    assert_eq!(code, Some(6), "{stderr}");
    assert!(stderr.contains("timed out"), "{stderr}");
    finish_with(run(&dir).spawn().unwrap(), 0, &[]);
    assert_eq!(
        rows(&dir.read("out.csv")).len(),
        rows(&dir.read("in.csv")).len()
    );
    let stats = http_stats(&addr);
    // Timed-out requests may have been charged and are asked again: at most 2 attempts for
    // each of the (10 + 8) jobs that failed, beyond one call per address.
    assert!(
        stats.validations - stats.unique_addresses <= 18 * 2,
        "{stats:?}"
    );
}

/// A child process killed when the test ends, however it ends.
struct Reaped(std::process::Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
