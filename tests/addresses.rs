//! The address corpus (issue 12, point 9): real-world shapes of what people paste into an
//! email column, each with what mailsift must make of it (the address it sends, or why it
//! refuses it) and the typo suggestion it writes beside it. The table is
//! `tests/fixtures/addresses.tsv`; every case runs on every `cargo test`, and a failure lists
//! every case that went wrong, not just the first.

use mailsift::address::{self, Checked};

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
