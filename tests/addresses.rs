//! The address corpus (issue 12, point 9): real-world shapes of what people paste into an
//! email column, each with what mailsift must make of it (the address it sends, or why it
//! refuses it) and the typo suggestion it writes beside it. The table is
//! `tests/fixtures/addresses.tsv`; every case runs on every `cargo test`, and a failure lists
//! every case that went wrong, not just the first.

use mailsift::address::{self, Checked};
use serde_json::Value;

use crate::util::{assert_none_sent_twice, rows, Dir, Mock};

const CORPUS: &str = include_str!("fixtures/addresses.tsv");

/// The corpus escapes: `\u{hex}` a character, `\xNN` a raw byte, `\t` a tab, `\\` a
/// backslash; anything else is taken as it is.
fn unescape(text: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('\\') {
        out.extend_from_slice(&rest.as_bytes()[..at]);
        let escape = &rest[at + 1..];
        let taken = if let Some(hex) = escape.strip_prefix("u{") {
            let end = hex.find('}').expect("a closed \\u{...}");
            let c = u32::from_str_radix(&hex[..end], 16)
                .ok()
                .and_then(char::from_u32)
                .expect("a character");
            out.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes());
            2 + end + 1
        } else if let Some(hex) = escape.strip_prefix('x') {
            out.push(u8::from_str_radix(&hex[..2], 16).expect("\\xNN"));
            3
        } else if escape.starts_with('t') {
            out.push(b'\t');
            1
        } else if escape.starts_with('\\') {
            out.push(b'\\');
            1
        } else {
            out.push(b'\\');
            0
        };
        rest = &escape[taken..];
    }
    out.extend_from_slice(rest.as_bytes());
    out
}

struct Case {
    line: usize,
    cell: Vec<u8>,
    expected: String,
    suggestion: String,
}

fn corpus() -> Vec<Case> {
    CORPUS
        .lines()
        .enumerate()
        .filter(|(_, line)| !line.is_empty() && !line.starts_with('#'))
        .map(|(i, line)| {
            let mut fields = line.split('\t');
            let cell = unescape(fields.next().unwrap_or_default());
            let text = |f: Option<&str>| {
                String::from_utf8(unescape(f.unwrap_or_default())).expect("UTF-8 expectation")
            };
            let expected = text(fields.next());
            let suggestion = text(fields.next());
            assert!(
                fields.next().is_none(),
                "line {}: at most three columns",
                i + 1
            );
            Case {
                line: i + 1,
                cell,
                expected,
                suggestion,
            }
        })
        .collect()
}

/// What `check` made of a cell, in the corpus notation, and the normalised form.
fn outcome(checked: &Checked) -> (String, &str) {
    match checked {
        Checked::Empty => ("-".to_owned(), ""),
        Checked::Invalid { normalized, reason } => (format!("! {reason}"), normalized),
        Checked::Valid(a) => (format!("= {}", a.normalized), &a.normalized),
    }
}

#[test]
fn every_shape_in_the_corpus_gets_its_expected_result_and_suggestion() {
    let cases = corpus();
    assert!(cases.len() >= 300, "the corpus has {} cases", cases.len());
    let mut wrong = Vec::new();
    for case in &cases {
        let checked = address::check(&case.cell);
        let (got, normalized) = outcome(&checked);
        // A reason is matched by its start: the corpus names the problem, not every word.
        let result_ok = match case.expected.strip_prefix("! ") {
            Some(reason) => got.starts_with("! ") && got[2..].starts_with(reason),
            None => got == case.expected,
        };
        let suggestion = address::suggest(normalized).unwrap_or_default();
        if !result_ok || suggestion != case.suggestion {
            wrong.push(format!(
                "line {}: {:?}\n    expected {} | suggestion {:?}\n    got      {} | suggestion {:?}",
                case.line,
                String::from_utf8_lossy(&case.cell),
                case.expected,
                case.suggestion,
                got,
                suggestion
            ));
        }
        if let Checked::Valid(a) = &checked {
            // What is sent is accepted as itself, and the key is its lower-case form.
            assert_eq!(
                address::check(a.normalized.as_bytes()),
                checked,
                "line {}",
                case.line
            );
            assert_eq!(a.key, a.normalized.to_lowercase(), "line {}", case.line);
        }
    }
    assert!(
        wrong.is_empty(),
        "{} of {} corpus cases went wrong:\n{}",
        wrong.len(),
        cases.len(),
        wrong.join("\n")
    );
}

#[test]
fn the_corpus_covers_every_kind_it_promises() {
    let cases = corpus();
    let count = |pred: &dyn Fn(&Case) -> bool| cases.iter().filter(|c| pred(c)).count();
    let starting = |prefix: &str| count(&|c| c.expected.starts_with(prefix));
    assert!(starting("= ") >= 150, "valid shapes");
    assert!(starting("! ") >= 100, "refused shapes");
    assert!(starting("-") >= 10, "empty shapes");
    assert!(count(&|c| !c.suggestion.is_empty()) >= 40, "typos");
    for reason in [
        "! contains an invisible character",
        "! contains an invisible text-direction mark",
        "! symbol, emoji or punctuation in the domain",
        "! broken punycode",
        "! top-level domain does not exist",
        "! .test is reserved",
        "! example.com is reserved",
    ] {
        assert!(starting(reason) >= 1, "{reason}");
    }
}

/// What the mock was asked, lower-cased (its normalisation), and how often.
fn asked(mock: &Mock) -> Vec<(String, u64)> {
    mock.stats()
        .per_address
        .unwrap_or_default()
        .into_iter()
        .collect()
}

#[test]
fn check_shares_the_address_rules_and_the_suggestion() {
    let mock = Mock::fast();
    let dir = Dir::new();
    let run = |extra: &[&str]| -> Vec<Value> {
        let mut args = vec![
            "check",
            "--json",
            "valid.a@acme.test",
            "valid.b@example.com",
            "valid.c@acme.notatld",
            "valid.d@acme-corp.con",
            "Jane Doe (valid.e@gmial.com)",
            "mailto:valid.f%2Btag@acme-corp.com",
            "\u{200f}\"valid.g@acme-corp.com\u{201d}\u{3002}",
            "valid.h@i\u{2764}.ws",
        ];
        args.extend_from_slice(extra);
        let out = dir.mailsift(&mock).args(&args).assert().success();
        serde_json::from_slice(&out.get_output().stdout).unwrap()
    };
    let lines = run(&[]);
    let field = |lines: &[Value], i: usize, f: &str| lines[i][f].as_str().unwrap_or("").to_owned();
    for (i, reason) in [
        (0, ".test is reserved"),
        (1, "example.com is reserved"),
        (2, "top-level domain does not exist"),
        (3, "top-level domain does not exist"),
        (7, "symbol, emoji or punctuation in the domain"),
    ] {
        assert_eq!(field(&lines, i, "source"), "syntax", "{i}");
        assert_eq!(field(&lines, i, "status"), "invalid", "{i}");
        assert!(
            field(&lines, i, "message").starts_with(reason),
            "{i}: {:?}",
            lines[i]
        );
    }
    assert_eq!(field(&lines, 3, "suggestion"), "valid.d@acme-corp.com");
    assert_eq!(field(&lines, 4, "normalized"), "valid.e@gmial.com");
    assert_eq!(field(&lines, 4, "suggestion"), "valid.e@gmail.com");
    assert_eq!(lines[0]["suggestion"], Value::Null);
    // What was sent: the addresses as normalised, never the suggestion, and nothing refused.
    assert_eq!(
        asked(&mock),
        [
            ("valid.e@gmial.com".to_owned(), 1),
            ("valid.f+tag@acme-corp.com".to_owned(), 1),
            ("valid.g@acme-corp.com".to_owned(), 1),
        ]
    );

    // --allow-unknown-tld sends the unknown top-level domains, and only those.
    let lines = run(&["--allow-unknown-tld"]);
    assert_eq!(field(&lines, 2, "source"), "api");
    assert_eq!(field(&lines, 3, "source"), "api");
    assert_eq!(field(&lines, 0, "source"), "syntax");
    let asked = asked(&mock);
    assert!(
        asked.contains(&("valid.c@acme.notatld".to_owned(), 1)),
        "{asked:?}"
    );
    assert!(!asked
        .iter()
        .any(|(a, _)| a.ends_with(".test") || a.contains("example.com")));

    // The text form says it too.
    let out = dir.ok(&mock, "check valid.i@hotmial.com");
    let text = String::from_utf8(out.get_output().stdout.clone()).unwrap();
    assert!(
        text.contains("(did you mean valid.i@hotmail.com?)"),
        "{text}"
    );
}

/// One file for `estimate` and `validate`: what each row is, and what must come of it.
const ROWS: &[(&str, &str)] = &[
    ("valid.a@acme-corp.com", "api"),
    ("jose\u{301}.valid@acme-corp.com", "api"),
    ("jos\u{e9}.valid@acme-corp.com", "duplicate"), // the same address once composed (NFC)
    ("Jane Doe (valid.b@acme-corp.com)", "api"),
    ("\u{200e}valid.c@acme-corp.com\u{3002}", "api"),
    ("mailto:valid.d%2Btag@acme-corp.com", "api"),
    ("valid.e@gmial.com", "api"),
    ("valid.f@acme.test", "syntax"),
    ("valid.g@example.com", "syntax"),
    ("valid.h@printer.local", "syntax"),
    ("valid.i@acme.notatld", "syntax"), // sent with --allow-unknown-tld
    ("valid.j@acme-corp.con", "syntax"), // sent with --allow-unknown-tld
    ("valid.k@i\u{2764}.ws", "syntax"),
    ("valid.l@xn--a.com", "syntax"),
    ("va\u{200b}lid.m@acme-corp.com", "syntax"),
    ("", "empty"),
];

fn rows_file(dir: &Dir) {
    let mut csv = String::from("name,email\n");
    for (i, (cell, _)) in ROWS.iter().enumerate() {
        csv.push_str(&format!("n{i},\"{cell}\"\n"));
    }
    dir.write("in.csv", csv);
}

#[test]
fn estimate_counts_what_validate_then_does() {
    let mock = Mock::fast();
    let dir = Dir::new();
    rows_file(&dir);
    let count = |source: &str| ROWS.iter().filter(|(_, s)| *s == source).count() as u64;
    let estimate = |extra: &[&str]| -> Value {
        let mut args = vec!["estimate", "in.csv", "--json"];
        args.extend_from_slice(extra);
        let out = dir.mailsift(&mock).args(&args).assert().success();
        serde_json::from_slice(&out.get_output().stdout).unwrap()
    };
    let e = estimate(&[]);
    assert_eq!(e["syntax_rejects"], count("syntax"));
    assert_eq!(e["duplicates"], count("duplicate"));
    assert_eq!(e["empty"], count("empty"));
    assert_eq!(e["requests"], count("api"));
    let relaxed = estimate(&["--allow-unknown-tld"]);
    assert_eq!(relaxed["syntax_rejects"], count("syntax") - 2);
    assert_eq!(relaxed["requests"], count("api") + 2);
    assert_eq!(mock.stats().validations, 0, "an estimate spends nothing");

    dir.ok(&mock, "validate in.csv -o out.csv -q");
    assert_eq!(
        mock.stats().validations,
        count("api"),
        "the estimate was exact"
    );
    let out = rows(&dir.read("out.csv"));
    let header = &out[0];
    let col = |name: &str| header.iter().position(|h| h == name).expect(name);
    // New columns only ever go at the end: the suggestion, then the other addresses of a cell.
    assert_eq!(
        header[header.len() - 2..],
        ["email_suggestion", "email_others"],
        "{header:?}"
    );
    for (row, (cell, source)) in out[1..].iter().zip(ROWS) {
        assert_eq!(&row[col("source")], source, "{cell:?}");
        assert_eq!(row[1], *cell, "the input cell is kept as it was");
    }
    let suggestion = |i: usize| out[i + 1][col("email_suggestion")].clone();
    assert_eq!(suggestion(6), "valid.e@gmail.com");
    assert_eq!(out[7][col("email_normalized")], "valid.e@gmial.com");
    assert_eq!(suggestion(11), "valid.j@acme-corp.com");
    assert_eq!(suggestion(0), "");
    assert_eq!(out[6][col("email_normalized")], "valid.d+tag@acme-corp.com");
    assert_eq!(
        out[3][col("email_normalized")],
        "jos\u{e9}.valid@acme-corp.com"
    );
    assert!(out[8][col("email_message")].starts_with(".test is reserved"));
    assert!(out[15][col("email_message")].starts_with("contains an invisible character"));

    // The same file again, with unknown top-level domains allowed: the options that shape
    // the output changed, so it runs again, and sends those two (and only those).
    dir.ok(&mock, "validate in.csv -o out.csv -q --allow-unknown-tld");
    assert_eq!(mock.stats().validations, count("api") + 2);
    assert_none_sent_twice(&mock.stats(), "validate again with --allow-unknown-tld");
    let out = rows(&dir.read("out.csv"));
    assert_eq!(out[11][col("source")], "api");
    assert_eq!(out[12][col("source")], "api");
    assert_eq!(out[12][col("email_suggestion")], "valid.j@acme-corp.com");
}
