//! What the fuzz targets check, shared by the cargo-fuzz targets (`fuzz_targets/`) and by the
//! plain test that replays the committed seeds on every `cargo test` (`tests/fuzz_seeds.rs`),
//! so the properties are exercised in CI without a nightly toolchain.
//!
//! Each function takes arbitrary bytes and panics only when a property of mailsift breaks:
//! never on input mailsift is allowed to refuse.

use std::io::Cursor;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use mailsift::address::{self, Checked};
use mailsift::input::{self, ColumnSpec, InputOptions, Row};
use mailsift::output::RowFormat;
use mailsift::plan::{Freshness, Outcome, Planner, Resolved};
use mailsift::store::{Answer, Store};

/// The normaliser, syntax check and suggestion: total (no panic), what the check accepts is
/// what it sends, nothing it sends can be refused for free, and a suggestion is a valid
/// address that differs from the one sent only in its domain.
pub fn address(data: &[u8]) {
    let relaxed = address::Rules {
        allow_unknown_tld: true,
    };
    let strict = address::check(data);
    let lenient = address::check_with(data, relaxed);
    // Relaxing the rules only ever lets more through, and never changes what is sent.
    match (&strict, &lenient) {
        (Checked::Valid(a), Checked::Valid(b)) => assert_eq!(a, b, "{data:?}"),
        (Checked::Valid(_), other) => panic!("{data:?} valid, refused when relaxed: {other:?}"),
        (Checked::Empty, other) => assert_eq!(other, &Checked::Empty, "{data:?}"),
        _ => {}
    }
    if let Checked::Invalid { normalized, .. } = &strict {
        suggestion(normalized);
    }
    let Checked::Valid(a) = lenient else {
        return;
    };
    let sent = &a.normalized;
    assert_eq!(sent.matches('@').count(), 1, "{sent:?}");
    assert!(
        !sent.chars().any(|c| c.is_control()
            || c.is_whitespace()
            || c == char::REPLACEMENT_CHARACTER
            || INVISIBLE.contains(&c)),
        "nothing invisible is sent: {sent:?}"
    );
    let (local, domain) = sent.split_once('@').unwrap_or_default();
    assert!(local.len() <= 64, "{sent:?}");
    assert!(
        domain.is_ascii() && domain == domain.to_ascii_lowercase() && domain.contains('.'),
        "the domain goes out lower-case ASCII: {sent:?}"
    );
    for label in domain.split('.') {
        assert!(
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && (label.get(2..4) != Some("--") || label.starts_with("xn--")),
            "a DNS label by the IDNA rules: {sent:?}"
        );
    }
    let tld = domain.rsplit('.').next().unwrap_or_default();
    assert!(
        !RESERVED_TLDS.contains(&tld)
            && !["example.com", "example.net", "example.org"]
                .iter()
                .any(|r| domain == *r || domain.ends_with(&format!(".{r}"))),
        "a reserved name is never sent: {sent:?}"
    );
    assert!(sent.len() <= 254, "{sent:?}");
    assert_eq!(
        a.key,
        sent.to_lowercase(),
        "the key is the lower-cased address"
    );
    // Idempotent: the address as sent is accepted as itself.
    match address::check_with(sent.as_bytes(), relaxed) {
        Checked::Valid(again) => assert_eq!(again, a, "{data:?}"),
        other => panic!("{sent:?} (from {data:?}) is refused when checked again: {other:?}"),
    }
    if let Some(s) = suggestion(sent) {
        assert_ne!(&s, sent, "a suggestion differs from what is sent");
    }
}

/// A suggestion passes the strict check as itself and keeps the local part.
fn suggestion(normalized: &str) -> Option<String> {
    let s = address::suggest(normalized)?;
    match address::check(s.as_bytes()) {
        Checked::Valid(v) => assert_eq!(v.normalized, s, "{normalized:?}"),
        other => panic!("suggestion {s:?} for {normalized:?} is refused: {other:?}"),
    }
    let local = |a: &str| a.rsplit_once('@').map(|(l, _)| l.to_owned());
    assert_eq!(
        local(&s),
        local(normalized),
        "only the domain is suggested: {normalized:?} -> {s:?}"
    );
    Some(s)
}

/// Zero-width, invisible and bidi formatting characters: trimmed at the edges, refused inside.
const INVISIBLE: &[char] = &[
    '\u{00AD}', '\u{034F}', '\u{061C}', '\u{180E}', '\u{200B}', '\u{200C}', '\u{200D}', '\u{200E}',
    '\u{200F}', '\u{202A}', '\u{202B}', '\u{202C}', '\u{202D}', '\u{202E}', '\u{2060}', '\u{2061}',
    '\u{2062}', '\u{2063}', '\u{2064}', '\u{2066}', '\u{2067}', '\u{2068}', '\u{2069}', '\u{FEFF}',
];

/// Top-level domains that can never receive mail.
const RESERVED_TLDS: &[&str] = &[
    "test",
    "example",
    "invalid",
    "localhost",
    "local",
    "onion",
    "arpa",
    "internal",
    "alt",
];

/// One store for the whole process: the planner only reads it here.
fn store() -> Arc<Store> {
    static STORE: OnceLock<(tempfile::TempDir, Arc<Store>)> = OnceLock::new();
    let (_, store) = STORE.get_or_init(|| {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let store = Arc::new(Store::open(dir.path()).expect("a store"));
        (dir, store)
    });
    store.clone()
}

/// The reader, the planner and the row writer, with the layout detected and with the first
/// column forced (so that input without an email column still reaches the reader):
/// no panic, and every byte of every row is where the reader says it is.
pub fn reader_planner(data: &[u8]) {
    let forced = InputOptions {
        email_column: Some(ColumnSpec::Index(1)),
        no_header: true,
        ..InputOptions::default()
    };
    for (company, opts) in [(false, InputOptions::default()), (true, forced)] {
        let source = Box::new(Cursor::new(data.to_vec()));
        // Refusing the input (no email column, a row over the cap) is fine; a panic is not.
        let Ok((layout, reader)) = input::open_stream("fuzz input", source, &opts) else {
            continue;
        };
        let format = RowFormat::new(&layout, company, Some("lm_"));
        let mut rows: Vec<Row> = layout.header.iter().cloned().collect();
        if let Some(header) = &layout.header {
            let line = format.header(header);
            assert!(line.starts_with(&header.raw[..header.keep]));
        }
        let freshness = Freshness {
            max_age: Duration::from_secs(86_400),
            max_age_unknown: Duration::from_secs(3_600),
            max_age_catch_all: Duration::from_secs(3_600),
            refresh: false,
        };
        let mut planner = Planner::new(store(), 1, freshness, 0, 64);
        for (seq, row) in reader.enumerate() {
            let Ok(row) = row else { break };
            assert!(row.keep <= row.raw.len() && !row.raw.is_empty());
            let (planned, job) = planner.plan(seq as u64, row.clone()).expect("planning");
            if let Some(job) = &job {
                // Only an address that passes the check is ever sent, as normalised.
                match address::check(job.address.as_bytes()) {
                    Checked::Valid(a) => assert_eq!(a.normalized, job.address),
                    other => panic!("{:?} would be sent: {other:?}", job.address),
                }
                job.pending
                    .resolve(Resolved::Answered(Arc::new(Answer::default())));
            }
            let outcome = planned.outcome().unwrap_or(Outcome::Error {
                message: "waiting".into(),
            });
            let mut out = Vec::new();
            format.row(&mut out, &planned, &outcome);
            assert!(
                out.starts_with(&row.raw[..row.keep]),
                "the row's bytes come first"
            );
            rows.push(row);
        }
        assert_rows_cover(data, layout.bom, &rows);
    }
}

/// Rows sit at their offsets with their exact bytes, in order, and what lies between them
/// (and after the last) is only line endings: blank lines, the one thing that is dropped.
fn assert_rows_cover(data: &[u8], bom: bool, rows: &[Row]) {
    let mut at = if bom { 3 } else { 0 };
    for row in rows {
        let start = usize::try_from(row.start).expect("an offset");
        assert!(start >= at, "rows in order");
        assert!(
            data[at..start].iter().all(|&b| b == b'\r' || b == b'\n'),
            "only line endings between rows: {:?}",
            &data[at..start]
        );
        assert_eq!(&data[start..start + row.raw.len()], &row.raw[..]);
        at = start + row.raw.len();
    }
    // The reader may stop early on a refused row (over the cap): only a whole read is checked.
    if at < data.len() && data[at..].iter().any(|&b| b != b'\r' && b != b'\n') {
        assert!(
            data.len() - at > 1024 * 1024,
            "{} bytes after the last row were dropped",
            data.len() - at
        );
    }
}
