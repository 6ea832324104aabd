//! `status` and `cache`: looking at the state directory, and clearing what was paid for only
//! on someone's word.

use serde_json::Value;

use crate::util::{contacts, Dir, Mock, Printed};

fn json(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes).expect("JSON on stdout")
}

fn entries(dir: &Dir) -> u64 {
    let out = dir.bare_run("cache stats --json").success();
    json(&out.get_output().stdout)["entries"].as_u64().unwrap()
}

/// A state directory holding the answers of one 60-row job.
fn validated(mock: &Mock) -> Dir {
    let dir = Dir::new();
    dir.write("in.csv", contacts(60));
    dir.mailsift(mock)
        .args(["validate", "in.csv", "-q"])
        .assert()
        .success();
    dir
}

#[test]
fn cache_clear_removes_paid_answers_only_when_told_to() {
    let mock = Mock::fast();
    let dir = validated(&mock);
    let cached = entries(&dir);
    assert!(cached > 0);

    // No terminal to ask (cron, a script): nothing is removed without --yes.
    dir.bare_run("cache clear").code(2).stderr_has(&["--yes"]);
    assert_eq!(entries(&dir), cached);

    // A dry run counts and removes nothing, and says ages as a person would.
    let later = 1_790_000_000 + 2 * 86_400;
    let says = format!("would remove {cached} cached answers older than 1 day");
    dir.bare_run_at(later, "cache clear --older-than 1d --dry-run")
        .success()
        .stdout_has(&[&says]);
    assert_eq!(entries(&dir), cached);

    let says = format!("removed {cached} cached answers older than 1 day");
    dir.bare_run_at(later, "cache clear --older-than 1d --yes")
        .success()
        .stdout_has(&[&says]);
    assert_eq!(entries(&dir), 0);
    dir.bare_run("cache clear --yes --dry-run").code(2);
}

#[test]
fn looking_at_a_state_directory_that_does_not_exist_creates_nothing() {
    let dir = Dir::new();
    let missing = dir.path("no-such-state");
    for args in [
        &["status"][..],
        &["status", "--json"],
        &["cache", "stats"],
        &["cache", "stats", "--json"],
        &["cache", "clear", "--yes"],
    ] {
        dir.bare()
            .env("MAILSIFT_STATE_DIR", &missing)
            .args(args)
            .assert()
            .success();
        assert!(!missing.exists(), "{args:?} created {}", missing.display());
    }
    let out = dir
        .bare()
        .env("MAILSIFT_STATE_DIR", &missing)
        .args(["cache", "stats"])
        .assert()
        .success();
    assert!(String::from_utf8_lossy(&out.get_output().stdout).contains("0 cached answers"));
}

#[test]
fn status_points_to_the_sandbox_after_a_sandbox_run() {
    let dir = Dir::new();
    dir.write("in.csv", contacts(5));
    dir.bare_run("--sandbox validate in.csv -q").success();
    dir.bare_run("status")
        .success()
        .stdout_has(&["no jobs", "mailsift --sandbox status"]);
    let out = dir.bare_run("status --json").success();
    let status = json(&out.get_output().stdout);
    assert_eq!(status["jobs"].as_array().unwrap().len(), 0);
    assert!(status["note"].as_str().unwrap().contains("--sandbox"));
    let out = dir.bare_run("--sandbox status --json").success();
    assert_eq!(
        json(&out.get_output().stdout)["jobs"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
}

#[test]
fn status_prints_credits_as_the_sum_a_person_would_write() {
    let mock = Mock::fast();
    let dir = validated(&mock);
    let out = dir.bare_run("status --json").success();
    let text = String::from_utf8_lossy(&out.get_output().stdout).into_owned();
    let spent = &json(text.as_bytes())["jobs"][0]["credits_spent"];
    let charged = mock.stats().credits_charged;
    assert!(charged > 0.0);
    assert!(
        (spent.as_f64().unwrap() - charged).abs() < 1e-6,
        "{spent} vs {charged}"
    );
    // Written the short way: no float noise such as 67.6499999999983.
    let decimals = spent.to_string().split('.').nth(1).map_or(0, str::len);
    assert!(decimals <= 6, "credits_spent written as {spent}");
}
