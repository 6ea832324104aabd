//! Spend control and reporting: estimate, budgets, split files, retry of errors, the report,
//! status and the cache commands.

use std::collections::BTreeMap;

use mailsift::mock::MockConfig;
use predicates::prelude::*;
use serde_json::Value;

use crate::util::{assert_none_sent_twice, rows, text, Dir, Mock};

/// `n` rows: addresses `valid*`, `invalid*`, `catchall*`, `unknown*` in turn (all charged but
/// the free ones), plus a duplicate, a syntax reject and an empty cell every ten rows.
fn list(n: usize) -> String {
    let mut out = String::from("id,email\n");
    for i in 0..n {
        let email = match i % 10 {
            7 => format!("VALID{}@acme-corp.com", i - 7), // the duplicate of row i-7 (a `valid` one)
            8 => "broken@".to_owned(),
            9 => String::new(),
            k => format!(
                "{}{i}@acme-corp.com",
                ["valid", "invalid", "catchall", "unknown"][k % 4]
            ),
        };
        out.push_str(&format!("{i},{email}\n"));
    }
    out
}

fn json(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes).unwrap_or_else(|e| panic!("{e}: {}", text(bytes)))
}

#[test]
fn estimate_counts_and_prices_without_spending() {
    let mock = Mock::fast();
    let dir = Dir::new();
    dir.write("in.csv", list(100));
    let out = dir
        .mailsift(&mock)
        .args(["estimate", "in.csv", "--json"])
        .assert()
        .success();
    let e = json(&out.get_output().stdout);
    assert_eq!(e["rows"], 100);
    assert_eq!(e["empty"], 10);
    assert_eq!(e["syntax_rejects"], 10);
    assert_eq!(e["duplicates"], 10);
    assert_eq!(e["fresh_in_store"], 0);
    assert_eq!(e["requests"], 70);
    assert_eq!(
        e["cost_per_check"], 0.25,
        "nothing seen yet: the higher documented price"
    );
    assert_eq!(e["min_cost"], 0.0);
    assert_eq!(e["max_cost"], 17.5);
    assert_eq!(e["balance"], 1_000_000.0);
    assert_eq!(e["balance_covers_max"], true);
    assert_eq!(mock.stats().validations, 0, "an estimate spends nothing");

    // After a run the cache answers, and the last price seen is used.
    dir.mailsift(&mock)
        .args(["validate", "in.csv", "-q"])
        .assert()
        .success();
    dir.write("more.csv", list(120));
    let out = dir
        .mailsift(&mock)
        .args(["estimate", "more.csv", "--json"])
        .assert()
        .success();
    let e = json(&out.get_output().stdout);
    assert_eq!(
        (e["fresh_in_store"].as_u64(), e["requests"].as_u64()),
        (Some(70), Some(14))
    );
    assert_eq!(e["cost_per_check"], 0.05);

    // No key: no balance, and a plain-text answer.
    dir.bare()
        .args(["estimate", "in.csv", "--cost-per-check", "0.1"])
        .assert()
        .success()
        .stdout(predicate::str::contains("100 rows"))
        .stdout(predicate::str::contains("balance: unknown"));
}

#[test]
fn validate_states_the_balance_and_the_maximum_cost_and_warns_when_short() {
    let mock = Mock::start(MockConfig {
        rate_per_min: 600_000,
        credits: 1.0,
        ..MockConfig::default()
    });
    let dir = Dir::new();
    dir.write("in.csv", list(100));
    dir.mailsift(&mock)
        .args(["validate", "in.csv", "--cost-per-check", "0.05"])
        .assert()
        .code(4)
        .stderr(predicate::str::contains(
            // Duplicates are not looked for here (that would take memory): still a true maximum.
            "at most 80 requests: at most 4 credits",
        ))
        .stderr(predicate::str::contains(
            "warning: the balance may not cover this run",
        ))
        .stderr(predicate::str::contains(
            "Top up, then run the same command to resume",
        ));
}

#[test]
fn a_budget_reached_mid_run_then_raised_finishes_the_identical_file() {
    let dir = Dir::new();
    dir.write("in.csv", list(200));
    dir.reference("in.csv", "ref.csv");

    let mock = Mock::fast();
    let out = dir
        .mailsift(&mock)
        .args([
            "validate",
            "in.csv",
            "-o",
            "out.csv",
            "--max-credits",
            "2",
            "--report",
            "r1.json",
        ])
        .assert()
        .code(4)
        .stderr(predicate::str::contains("--max-credits 2"));
    let _ = out;
    let report = json(&dir.read("r1.json"));
    assert_eq!(report["outcome"], "budget_reached");
    assert!(report["credits"]["spent_job"].as_f64().unwrap() <= 2.0 + 1e-9);
    assert!(
        mock.stats().credits_charged <= 2.0 + 1e-9,
        "the budget held: {}",
        mock.stats().credits_charged
    );

    // The same budget again: the job as a whole still stays within it. (The first run stopped
    // early: it reserved the documented worst case for each request in flight before any answer
    // showed the real price.)
    dir.mailsift(&mock)
        .args([
            "validate",
            "in.csv",
            "-o",
            "out.csv",
            "--max-credits",
            "2",
            "-q",
        ])
        .assert()
        .code(4);
    let charged = mock.stats().credits_charged;
    assert!(charged <= 2.0 + 1e-9, "{charged}");

    dir.mailsift(&mock)
        .args([
            "validate",
            "in.csv",
            "-o",
            "out.csv",
            "--max-credits",
            "100",
            "-q",
        ])
        .assert()
        .success();
    assert_eq!(dir.read("out.csv"), dir.read("ref.csv"));
    assert_none_sent_twice(&mock.stats(), "budget reached, then resumed");
}

#[test]
fn min_balance_keeps_a_reserve() {
    let mock = Mock::start(MockConfig {
        rate_per_min: 600_000,
        credits: 3.0,
        ..MockConfig::default()
    });
    let dir = Dir::new();
    dir.write("in.csv", list(200));
    dir.mailsift(&mock)
        .args([
            "validate",
            "in.csv",
            "--min-balance",
            "2",
            "--concurrency",
            "1",
        ])
        .assert()
        .code(4)
        .stderr(predicate::str::contains("below --min-balance 2"));
    let balance = mock.stats().balance;
    assert!(
        (1.9..2.0).contains(&balance),
        "stopped as soon as the balance fell below 2: {balance}"
    );
    // Already below: nothing is sent at all.
    let sent = mock.stats().validations;
    dir.mailsift(&mock)
        .args(["validate", "in.csv", "--min-balance", "2"])
        .assert()
        .code(4);
    assert_eq!(mock.stats().validations, sent);
}

#[test]
fn split_files_partition_the_rows_by_deliverability() {
    let mock = Mock::fast();
    let dir = Dir::new();
    dir.write("in.csv", list(50));
    dir.mailsift(&mock)
        .args(["validate", "in.csv", "-o", "out.csv", "--split", "-q"])
        .assert()
        .success();
    let all = rows(&dir.read("out.csv"));
    let status = all[0].iter().position(|c| c == "email_status").unwrap();
    let mut total = 0;
    for (kind, allowed) in [
        ("deliverable", &["valid"][..]),
        ("risky", &["valid_catch_all", "catch_all", "unknown"][..]),
        ("undeliverable", &["invalid", "missing"][..]),
    ] {
        let part = rows(&dir.read(&format!("out.{kind}.csv")));
        assert_eq!(part[0], all[0], "{kind} has the same header");
        assert!(
            part[1..]
                .iter()
                .all(|r| allowed.contains(&r[status].as_str())),
            "{kind}"
        );
        let expected: Vec<_> = all[1..]
            .iter()
            .filter(|r| allowed.contains(&r[status].as_str()))
            .collect();
        assert_eq!(
            part[1..].iter().collect::<Vec<_>>(),
            expected,
            "{kind} keeps input order"
        );
        total += part.len() - 1;
        assert!(!dir.path(&format!("out.{kind}.csv.partial")).exists());
    }
    assert_eq!(
        total,
        all.len() - 1,
        "no error rows here, so every row is in one split file"
    );
}

#[test]
fn retry_errors_asks_again_only_for_the_rows_that_failed() {
    let dir = Dir::new();
    dir.write("in.csv", list(100));
    let flaky = Mock::start(MockConfig {
        rate_per_min: 600_000,
        p_500: 0.3,
        seed: 7,
        ..MockConfig::default()
    });
    dir.mailsift(&flaky)
        .args([
            "validate",
            "in.csv",
            "-q",
            "--max-retries",
            "0",
            "--report",
            "r.json",
        ])
        .assert()
        .success();
    let errors = json(&dir.read("r.json"))["statuses"]["error"]
        .as_u64()
        .unwrap();
    assert!(errors > 0, "the test needs some errors");
    let before = rows(&dir.read("in.validated.csv"));
    let status = before[0].iter().position(|c| c == "email_status").unwrap();
    let normalized = before[0]
        .iter()
        .position(|c| c == "email_normalized")
        .unwrap();
    // Duplicates of a failed address failed with it; they are asked once.
    let failed: std::collections::HashSet<String> = before[1..]
        .iter()
        .filter(|r| r[status] == "error")
        .map(|r| r[normalized].to_lowercase())
        .collect();

    let healthy = Mock::fast();
    dir.mailsift(&healthy)
        .args(["validate", "in.csv", "--retry-errors"])
        .assert()
        .success()
        .stderr(predicate::str::contains(format!(
            "asking again for the {errors} rows"
        )));
    assert_eq!(
        healthy.stats().validations,
        failed.len() as u64,
        "only the failed rows were asked"
    );
    let after = rows(&dir.read("in.validated.csv"));
    for (b, a) in before.iter().zip(&after) {
        if b[status] == "error" {
            assert_ne!(a[status], "error");
        } else {
            assert_eq!(a, b, "rows that had an answer are unchanged");
        }
    }
}

#[test]
fn the_report_follows_its_schema_and_adds_up() {
    let mock = Mock::fast();
    let dir = Dir::new();
    dir.write("in.csv", list(60));
    dir.mailsift(&mock)
        .args(["validate", "in.csv", "-q", "--report", "r.json"])
        .assert()
        .success();
    let r = json(&dir.read("r.json"));
    assert_eq!(r["schema"], "mailsift.report/1");
    assert_eq!(r["outcome"], "done");
    let statuses: u64 = r["statuses"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_u64().unwrap())
        .sum();
    let sources: u64 = r["sources"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_u64().unwrap())
        .sum();
    assert_eq!(r["rows"]["this_run"], 60);
    assert_eq!(statuses, 60);
    assert_eq!(sources, 60, "no error rows, so every row has a source");
    assert_eq!(r["requests"], 42);
    assert_eq!(r["sources"]["duplicate"], 6);
    assert_eq!(r["credits"]["balance_start"], 1_000_000.0);
    let spent = r["credits"]["spent_this_run"].as_f64().unwrap();
    assert!((spent - mock.stats().credits_charged).abs() < 1e-9);
    assert!(r["credits"]["balance_end"].as_f64().unwrap() < 1_000_000.0);
    // The client followed the mock's advertised limit.
    assert_eq!(r["rate_limit_per_minute"], 600_000);
    for key in [
        "retries",
        "maybe_charged_twice",
        "daily_quota_left",
        "elapsed_seconds",
        "rows_per_second",
    ] {
        assert!(r.get(key).is_some(), "{key} missing");
    }
}

#[test]
fn status_lists_jobs_and_where_they_stand() {
    let dir = Dir::new();
    dir.write("a.csv", list(40));
    dir.write("b.csv", list(200));
    let mock = Mock::start(MockConfig {
        rate_per_min: 600_000,
        credits: 3.0,
        ..MockConfig::default()
    });
    dir.mailsift(&mock)
        .args(["validate", "a.csv", "-q"])
        .assert()
        .success();
    dir.mailsift(&mock)
        .args(["validate", "b.csv", "-q", "--checkpoint-rows", "10"])
        .assert()
        .code(4);
    let out = dir.bare().args(["status", "--json"]).assert().success();
    let jobs = json(&out.get_output().stdout)["jobs"]
        .as_array()
        .unwrap()
        .clone();
    let by_input: BTreeMap<String, &Value> = jobs
        .iter()
        .map(|j| {
            (
                j["input"]
                    .as_str()
                    .unwrap()
                    .rsplit('/')
                    .next()
                    .unwrap()
                    .to_owned(),
                j,
            )
        })
        .collect();
    assert_eq!(by_input["a.csv"]["state"], "done");
    assert_eq!(by_input["a.csv"]["rows_written"], 40);
    assert_eq!(by_input["a.csv"]["percent"], 100.0);
    assert_eq!(by_input["b.csv"]["state"], "out of credits");
    assert!(by_input["b.csv"]["rows_written"].as_u64().unwrap() < 200);
    assert!(by_input["b.csv"]["credits_spent"].as_f64().unwrap() > 0.0);
    dir.bare()
        .arg("status")
        .assert()
        .success()
        .stdout(predicate::str::contains("b.csv").and(predicate::str::contains("out of credits")));
}

#[test]
fn cache_stats_and_clear() {
    let mock = Mock::fast();
    let dir = Dir::new();
    dir.write("in.csv", list(40));
    dir.mailsift(&mock)
        .args(["validate", "in.csv", "-q"])
        .assert()
        .success();
    let out = dir
        .bare()
        .args(["cache", "stats", "--json"])
        .assert()
        .success();
    let s = json(&out.get_output().stdout);
    assert_eq!(s["entries"], 28);
    assert_eq!(s["by_status"]["valid"], 8);
    assert_eq!(s["by_age"]["< 1 day"], 28);
    assert!(s["size_on_disk_bytes"].as_u64().unwrap() > 0);

    // Answers given at the pinned time are a day old a day later.
    dir.bare()
        .env("MAILSIFT_NOW", (1_790_000_000 + 2 * 86_400).to_string())
        .args(["cache", "clear", "--older-than", "3d"])
        .assert()
        .success()
        .stdout(predicate::str::contains("removed 0 cached answers"));
    dir.bare()
        .env("MAILSIFT_NOW", (1_790_000_000 + 2 * 86_400).to_string())
        .args(["cache", "clear", "--older-than", "1d"])
        .assert()
        .success()
        .stdout(predicate::str::contains("removed 28 cached answers"));
    let out = dir
        .bare()
        .args(["cache", "stats", "--json"])
        .assert()
        .success();
    assert_eq!(json(&out.get_output().stdout)["entries"], 0);
}
