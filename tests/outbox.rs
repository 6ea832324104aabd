//! The inbox's outbox (issue 14, point 6): a file dropped again under a name already used gets
//! results of its own (`STEM-2.*`, as the archive names it); the same file, stopped and run
//! again, resumes into its own output.

use crate::util::{assert_none_sent_twice, contacts, rows, text, Dir, Mock};

fn inbox(dir: &Dir, mock: &Mock, args: &[&str]) -> std::process::Output {
    dir.mailsift(mock)
        .args(["inbox", "in", "--out", "out", "--once", "--settle", "0s"])
        .args(args)
        .output()
        .unwrap()
}

/// The addresses of an annotated CSV, in order.
fn addresses(bytes: &[u8]) -> Vec<String> {
    rows(bytes)
        .into_iter()
        .skip(1)
        .map(|r| r[1].clone())
        .collect()
}

#[test]
fn a_file_dropped_again_under_the_same_name_never_overwrites_the_earlier_results() {
    let mock = Mock::fast();
    let dir = Dir::new();
    std::fs::create_dir(dir.path("in")).unwrap();
    let first = "name,email\nAnn,ann@acme-corp.com\nBob,bob@acme-corp.com\n";
    let second = "name,email\nCy,cy@initech.com\n";
    dir.write("in/a.csv", first);
    let out = inbox(&dir, &mock, &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    dir.write("in/a.csv", second);
    let out = inbox(&dir, &mock, &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("in/a.csv -> out/a-2.validated.csv"),
        "{}",
        text(&out.stderr)
    );

    assert_eq!(
        addresses(&dir.read("out/a.validated.csv")),
        ["ann@acme-corp.com", "bob@acme-corp.com"]
    );
    assert_eq!(
        addresses(&dir.read("out/a-2.validated.csv")),
        ["cy@initech.com"]
    );
    for (report, total) in [("a", 2), ("a-2", 1)] {
        let report: serde_json::Value =
            serde_json::from_slice(&dir.read(&format!("out/{report}.report.json"))).unwrap();
        assert_eq!(report["rows"]["total"], total, "{report}");
    }
    assert_eq!(dir.read("in/processed/a.csv"), first.as_bytes());
    assert_eq!(dir.read("in/processed/a-2.csv"), second.as_bytes());
}

#[test]
fn a_stopped_file_resumes_into_its_own_output() {
    let mock = Mock::fast();
    let dir = Dir::new();
    std::fs::create_dir(dir.path("in")).unwrap();
    dir.write("in/a.csv", contacts(40));
    // Out of budget part of the way: exit 4, the file stays in the inbox.
    let out = inbox(&dir, &mock, &["--max-credits", "0.5", "--concurrency", "1"]);
    assert_eq!(out.status.code(), Some(4), "{}", text(&out.stderr));
    assert!(dir.path("in/a.csv").exists());
    let asked = mock.validations();
    assert!(asked > 0 && asked < 40, "{asked} asked before the stop");

    let out = inbox(&dir, &mock, &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("in/a.csv -> out/a.validated.csv"),
        "{}",
        text(&out.stderr)
    );
    assert!(!dir.path("out/a-2.validated.csv").exists());
    assert_eq!(rows(&dir.read("out/a.validated.csv")).len(), 41);
    assert_none_sent_twice(&mock.stats(), "resumed");
    let report: serde_json::Value = serde_json::from_slice(&dir.read("out/a.report.json")).unwrap();
    assert_eq!(report["rows"]["total"], 40);
    assert!(
        report["rows"]["this_run"].as_u64().unwrap() < 40,
        "{report}"
    );
}
