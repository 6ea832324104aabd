//! Several addresses in one cell (issue 12, point 3): each is validated and paid for once
//! across the file and across runs; the row keeps its place, shows its best address and lists
//! the others in `email_others`; `--split`, resume, `estimate` and re-validation follow.
//!
//! The mock's reserved prefixes pick the verdicts: `valid…`, `invalid…`, `unknown…`,
//! `catchall…`, `vcatchall…`, `reject…` (HTTP 400: an `error` row).

use std::collections::BTreeMap;

use serde_json::Value;

use crate::crash::assert_same_file;
use crate::util::{assert_none_sent_twice, rows, with_input, Dir, Mock};

/// Output rows keyed by the input's `id` column, each as column name → value.
fn by_id(bytes: &[u8]) -> BTreeMap<String, BTreeMap<String, String>> {
    let rows = rows(bytes);
    let header = &rows[0];
    rows[1..]
        .iter()
        .map(|row| {
            let fields: BTreeMap<String, String> =
                header.iter().cloned().zip(row.iter().cloned()).collect();
            (fields["id"].clone(), fields)
        })
        .collect()
}

fn validate(dir: &Dir, mock: &Mock, input: &str, output: &str, extra: &[&str]) -> Vec<u8> {
    dir.mailsift(mock)
        .args(["validate", input, "-o", output, "-q"])
        .args(extra)
        .assert()
        .success();
    dir.read(output)
}

const CELLS: &str = "\
id,email
semicolon,validsc1@x.com; invalidsc2@x.com
comma,\"invalidcm1@x.com, validcm2@x.com\"
pipe,unknownp1@x.com|catchallp2@x.com|invalidp3@x.com
spaces,unknownsp1@x.com   vcatchallsp2@x.com
lines,\"invalidnl1@x.com
validnl2@x.com\r
unknownnl3@x.com\"
angles,\"<invalidan1@x.com>, <validan2@x.com>\"
names,\"Jane <catchallnm1@x.com>, Bob <validnm2@x.com>\"
quoted,\"\"\"Doe, Jane\"\" <validq1@x.com>; \"\"Roe, Bob\"\" <unknownq2@x.com>\"
one-name,\"\"\"Doe, Jane\"\" <validdoe@x.com>\"
syntax,\"nobody@, invalidsy2@x.com\"
error,rejectme@x.com; invalider2@x.com
same-twice,validtw@x.com; VALIDTW@X.COM
single,validsingle@x.com
";

#[test]
fn every_address_of_a_cell_is_validated_and_the_row_shows_the_best() {
    let (mock, dir) = with_input(CELLS);
    let out = by_id(&validate(&dir, &mock, "in.csv", "out.csv", &[]));
    let want: &[(&str, &str, &str, &str)] = &[
        // id, email_status, email_normalized, email_others
        (
            "semicolon",
            "valid",
            "validsc1@x.com",
            "invalidsc2@x.com:invalid",
        ),
        (
            "comma",
            "valid",
            "validcm2@x.com",
            "invalidcm1@x.com:invalid",
        ),
        (
            "pipe",
            "catch_all",
            "catchallp2@x.com",
            "unknownp1@x.com:unknown; invalidp3@x.com:invalid",
        ),
        (
            "spaces",
            "valid_catch_all",
            "vcatchallsp2@x.com",
            "unknownsp1@x.com:unknown",
        ),
        (
            "lines",
            "valid",
            "validnl2@x.com",
            "invalidnl1@x.com:invalid; unknownnl3@x.com:unknown",
        ),
        (
            "angles",
            "valid",
            "validan2@x.com",
            "invalidan1@x.com:invalid",
        ),
        (
            "names",
            "valid",
            "validnm2@x.com",
            "catchallnm1@x.com:catch_all",
        ),
        (
            "quoted",
            "valid",
            "validq1@x.com",
            "unknownq2@x.com:unknown",
        ),
        ("one-name", "valid", "validdoe@x.com", ""),
        // A syntax reject and an API `invalid` rank alike: the first in the cell is shown.
        ("syntax", "invalid", "nobody@", "invalidsy2@x.com:invalid"),
        // An error outranks invalid: the row is not settled, --retry-errors asks again.
        (
            "error",
            "error",
            "rejectme@x.com",
            "invalider2@x.com:invalid",
        ),
        ("same-twice", "valid", "validtw@x.com", ""),
        ("single", "valid", "validsingle@x.com", ""),
    ];
    for (id, status, normalized, others) in want {
        let row = &out[*id];
        assert_eq!(
            (
                row["email_status"].as_str(),
                row["email_normalized"].as_str(),
                row["email_others"].as_str()
            ),
            (*status, *normalized, *others),
            "row {id}"
        );
    }
    // The other columns are the shown address's.
    assert_eq!(out["names"]["email_message"], "Email is valid.");
    assert_eq!(out["syntax"]["source"], "syntax");
    assert_eq!(out["syntax"]["email_message"], "nothing after @");
    let stats = mock.stats();
    assert_none_sent_twice(&stats, "one run");
    let sent = stats.per_address.unwrap();
    for address in [
        "validsc1@x.com",
        "invalidsc2@x.com",
        "invalidcm1@x.com",
        "invalidan1@x.com",
        "validan2@x.com",
        "catchallnm1@x.com",
        "unknownnl3@x.com",
        "invalidsy2@x.com",
        "validtw@x.com",
    ] {
        assert_eq!(sent.get(address), Some(&1), "{address}");
    }
    assert!(!sent.keys().any(|a| a.contains("nobody")));
    // 24 distinct addresses pass the syntax check.
    assert_eq!(stats.validations, 24);
}

#[test]
fn an_address_is_paid_once_whichever_cells_hold_it_in_this_run_and_the_next() {
    let mock = Mock::fast();
    let dir = Dir::new();
    dir.write(
        "in.csv",
        "id,email\n\
         1,validone@x.com\n\
         2,validone@x.com; invalidtwo@x.com\n\
         3,INVALIDTWO@x.com | validthree@x.com | validone@x.com\n\
         4,validthree@x.com\n",
    );
    let out = by_id(&validate(&dir, &mock, "in.csv", "out.csv", &[]));
    let stats = mock.stats();
    assert_none_sent_twice(&stats, "one file");
    assert_eq!(stats.validations, 3);
    // credits_consumed is what the row's addresses cost in this run: the mock charges 0.05
    // for valid and invalid answers; an address a row did not pay for itself is free to it.
    let credits: Vec<&str> = ["1", "2", "3", "4"]
        .iter()
        .map(|id| out[*id]["credits_consumed"].as_str())
        .collect();
    assert_eq!(credits, ["0.05", "0.05", "0.05", "0"]);
    assert_eq!(out["2"]["source"], "duplicate", "validone@ was row 1's");
    assert_eq!(out["3"]["source"], "api", "validthree@ is row 3's");
    assert_eq!(
        out["3"]["email_others"],
        "INVALIDTWO@x.com:invalid; validone@x.com:valid"
    );

    // Another file, another run: only the new address is asked.
    dir.write(
        "more.csv",
        "id,email\n\
         a,\"validthree@x.com, validfour@x.com\"\n\
         b,invalidtwo@x.com;validone@x.com\n",
    );
    let more = by_id(&validate(&dir, &mock, "more.csv", "more.out.csv", &[]));
    let stats = mock.stats();
    assert_none_sent_twice(&stats, "two runs");
    assert_eq!(stats.validations, 4);
    assert_eq!(
        (
            more["a"]["source"].as_str(),
            more["a"]["credits_consumed"].as_str()
        ),
        ("cache", "0.05"),
        "the shown address came from the cache; the row paid for validfour@"
    );
    assert_eq!(more["b"]["credits_consumed"], "0");
}

#[test]
fn split_files_follow_the_best_verdict_and_the_report_counts_every_credit() {
    let mock = Mock::fast();
    let dir = Dir::new();
    dir.write(
        "in.csv",
        "id,email\n\
         d,invalidd1@x.com; validd2@x.com\n\
         r,invalidr1@x.com; unknownr2@x.com\n\
         u,bad@; invalidu2@x.com\n\
         e,invalide1@x.com; rejecte2@x.com\n",
    );
    validate(
        &dir,
        &mock,
        "in.csv",
        "out.csv",
        &["--split", "--report", "report.json"],
    );
    let ids = |name: &str| -> Vec<String> { by_id(&dir.read(name)).into_keys().collect() };
    assert_eq!(ids("out.deliverable.csv"), ["d"]);
    assert_eq!(ids("out.risky.csv"), ["r"]);
    assert_eq!(ids("out.undeliverable.csv"), ["u"]);
    assert_eq!(ids("out.csv"), ["d", "e", "r", "u"]);
    let report: Value = serde_json::from_slice(&dir.read("report.json")).unwrap();
    // Charged: validd2, invalidd1, invalidr1, invalidu2, invalide1 (unknown and the 400 are free).
    let charged = mock.stats().credits_charged;
    assert!((charged - 0.25).abs() < 1e-9, "{charged}");
    assert_eq!(report["credits"]["spent_this_run"], 0.25);
    assert_eq!(report["statuses"]["valid"], 1);
    assert_eq!(report["statuses"]["error"], 1);
}

#[test]
fn a_cell_with_thousands_of_addresses_asks_twenty_and_lists_the_rest_as_skipped() {
    let mock = Mock::fast();
    let dir = Dir::new();
    let many: Vec<String> = (0..3000).map(|i| format!("invalidmany{i}@x.com")).collect();
    let mut input = format!("id,email\nmany,\"{}\"\n", many.join(", "));
    // And many rows of many addresses each, through one worker: nothing waits forever.
    for row in 0..60 {
        let cell: Vec<String> = (0..30).map(|i| format!("r{row}a{i}@x.com")).collect();
        input.push_str(&format!("{row},{}\n", cell.join(";")));
    }
    dir.write("in.csv", &input);
    let out = by_id(&validate(
        &dir,
        &mock,
        "in.csv",
        "out.csv",
        &["--concurrency", "1"],
    ));
    let stats = mock.stats();
    assert_eq!(stats.validations, 20 + 60 * 20);
    let others: Vec<&str> = out["many"]["email_others"].split("; ").collect();
    assert_eq!(others.len(), 2999);
    assert_eq!(others[0], "invalidmany1@x.com:invalid");
    assert_eq!(others[18], "invalidmany19@x.com:invalid");
    assert_eq!(others[19], "invalidmany20@x.com:skipped");
    assert_eq!(others[2998], "invalidmany2999@x.com:skipped");
    assert_eq!(out.len(), 61);
}

/// Past the cap, the free syntax check names a piece `invalid` or `skipped` by the rules the
/// run was given: with `--allow-unknown-tld` a domain under a TLD newer than the bundled list
/// is `skipped` (it would have been asked), without it `invalid`.
#[test]
fn the_pieces_past_the_cap_are_checked_by_the_runs_rules() {
    let dir = Dir::new();
    let mock = Mock::fast();
    let cell: Vec<String> = (1..=20)
        .map(|i| format!("valid{i}@x.com"))
        .chain(["newtld@x.notatldyet".to_owned()])
        .collect();
    dir.write(
        "in.csv",
        format!("id,email\nmany,\"{}\"\n", cell.join("; ")),
    );
    for (extra, want) in [
        (&[][..], "newtld@x.notatldyet:invalid"),
        (&["--allow-unknown-tld"][..], "newtld@x.notatldyet:skipped"),
    ] {
        let out = by_id(&validate(&dir, &mock, "in.csv", "out.csv", extra));
        let others = &out["many"]["email_others"];
        assert!(others.ends_with(want), "{extra:?}: {others}");
    }
}

#[test]
fn estimate_counts_each_address_of_a_cell() {
    let mock = Mock::fast();
    let dir = Dir::new();
    dir.write(
        "in.csv",
        "id,email\n\
         1,a@x.com; b@x.com\n\
         2,b@x.com | c@x.com | c@x.com | nope@\n\
         3,\n\
         4,d@x.com\n",
    );
    let out = dir.ok(&mock, "estimate in.csv --json");
    let e: Value = serde_json::from_slice(&out.get_output().stdout).unwrap();
    assert_eq!(
        (
            &e["rows"],
            &e["empty"],
            &e["syntax_rejects"],
            &e["duplicates"],
            &e["requests"]
        ),
        (
            &Value::from(4),
            &Value::from(1),
            &Value::from(1),
            &Value::from(1),
            &Value::from(4)
        )
    );
    validate(&dir, &mock, "in.csv", "out.csv", &[]);
    assert_eq!(mock.stats().validations, 4, "as estimated");
}

#[test]
fn validating_an_annotated_file_again_replaces_the_others_column() {
    let mock = Mock::fast();
    let dir = Dir::new();
    dir.write(
        "in.csv",
        "id,email\n1,validx@x.com; invalidy@x.com\n2,validz@x.com\n",
    );
    let first = validate(&dir, &mock, "in.csv", "out.csv", &[]);
    let again = validate(&dir, &mock, "out.csv", "again.csv", &[]);
    let header = &rows(&again)[0];
    assert_eq!(
        header.iter().filter(|c| *c == "email_others").count(),
        1,
        "{header:?}"
    );
    assert_eq!(rows(&again)[0], rows(&first)[0]);
    let again = by_id(&again);
    assert_eq!(again["1"]["email_others"], "invalidy@x.com:invalid");
    assert_eq!(again["1"]["source"], "cache");
    assert_eq!(again["2"]["email_others"], "");
    assert_eq!(mock.stats().validations, 3, "the second run asks nothing");

    // A file annotated before `email_others` existed: its old block is replaced too.
    let old = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/annotated.csv");
    dir.write("old.csv", std::fs::read(old).unwrap());
    let header = rows(&validate(&dir, &mock, "old.csv", "old.out.csv", &[]))[0].clone();
    let want: Vec<&str> = ["name", "email"]
        .into_iter()
        .chain(mailsift::schema::ANNOTATION_COLUMNS)
        .collect();
    assert_eq!(header, want);
}

/// A file of multi-address cells (and single ones, duplicates, rejects) for the crash tests.
fn mixed(n: usize) -> String {
    let mut out = String::from("id,email,note\n");
    for i in 0..n {
        let email = match i % 6 {
            0 => format!("u{i}@x.com; u{}@x.com", i + 1),
            1 => format!("\"Jane {i} <u{i}@x.com>, Bob <u{}@y.com>\"", i / 2),
            2 => format!("u{}@x.com|bad{i}@|u{i}@z.com", i - 2),
            3 => format!("u{i}@x.com"),
            4 => format!("\"u{i}@x.com\nu{}@x.com\"", i - 4),
            _ => format!("\"\"\"Doe, {i}\"\" <u{i}@w.com>\""),
        };
        out.push_str(&format!("{i},{email},n{i}\n"));
    }
    out
}

#[test]
fn a_crash_inside_checkpoints_and_a_kill_resume_to_the_identical_file() {
    let dir = Dir::new();
    dir.write("in.csv", mixed(900));
    let reference = dir.reference("in.csv", "ref.csv");
    let mock = Mock::lognormal(1_000_000, 2, 20);
    let job = "validate in.csv -o out.csv --concurrency 8 --checkpoint-rows 30";
    for (point, n) in [("write", 2), ("record", 3), ("fsync", 2)] {
        dir.crash_at(&mock, job, &format!("{point}:{n}"));
    }
    dir.kill_at(&mock, job, mock.validations() + 100);
    dir.ok(&mock, job);
    assert_same_file(&dir.read("out.csv"), &reference, "after crashes and a kill");
    let stats = mock.stats();
    // Only requests in flight at a crash may go out again: at most 8 per crash.
    let extra = stats.validations - stats.unique_addresses;
    assert!(extra <= 4 * 8, "{extra} extra calls: {:?}", stats.repeated);
}
