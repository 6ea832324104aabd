//! What the fuzz targets check, shared by the cargo-fuzz targets (`fuzz_targets/`) and by the
//! plain test that replays the committed seeds on every `cargo test` (`tests/fuzz_seeds.rs`),
//! so the properties are exercised in CI without a nightly toolchain.
//!
//! Each function takes arbitrary bytes and panics only when a property of mailsift breaks:
//! never on input mailsift is allowed to refuse.

use std::borrow::Cow;
use std::io::{Cursor, Read};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use mailsift::address::{self, Checked};
use mailsift::internals::cell;
use mailsift::internals::client::Status;
use mailsift::internals::input::{self, Charset, ColumnSpec, Format, InputOptions, Location, Row};
use mailsift::internals::output::{self, RowFormat};
use mailsift::internals::plan::{Freshness, Job, Outcome, Planned, Planner, Resolved};
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

fn freshness() -> Freshness {
    Freshness {
        max_age: Duration::from_secs(86_400),
        max_age_unknown: Duration::from_secs(3_600),
        max_age_catch_all: Duration::from_secs(3_600),
        refresh: false,
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
        let mut format = RowFormat::new(&layout, company, Some("lm_"));
        let mut rows: Vec<Row> = layout.header.iter().cloned().collect();
        if let Some(header) = &layout.header {
            let line = format.header(header);
            assert!(line.starts_with(&header.raw[..header.keep]));
        }
        let mut planner = Planner::new(store(), 1, freshness(), 0, 64);
        let mut jobs = Vec::new();
        for (seq, row) in reader.enumerate() {
            let Ok(row) = row else { break };
            assert!(row.keep <= row.raw.len() && !row.raw.is_empty());
            let looked = planner.lookup().row(row.clone());
            let planned = planner
                .plan(seq as u64, looked, &mut jobs)
                .expect("planning");
            for job in jobs.drain(..) {
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
        assert_rows_cover(&text_of(data, &layout.format), layout.bom, &rows);
    }
}

/// The text rows are cut from: the bytes themselves, or their decoding.
fn text_of<'a>(data: &'a [u8], format: &Format) -> Cow<'a, [u8]> {
    match format {
        Format::Decoded { encoding, .. } => Cow::Owned(
            encoding
                .decode_with_bom_removal(data)
                .0
                .into_owned()
                .into_bytes(),
        ),
        _ => Cow::Borrowed(data),
    }
}

/// The encoding detection and the streaming decoder: total; UTF-8 text is never decoded as
/// something else; the stream gives the same text as decoding at once, whatever the read
/// sizes; and resuming a decoded file after any row gives the same rows as reading on.
pub fn decoder(data: &[u8]) {
    let detection = input::detect_charset(data, true, None).expect("reading a slice");
    let has_bom = data.starts_with(b"\xFF\xFE") || data.starts_with(b"\xFE\xFF");
    if std::str::from_utf8(data).is_ok() && !data.contains(&0) && !has_bom {
        assert_eq!(
            detection.charset,
            Charset::Utf8,
            "valid UTF-8 stays as it is"
        );
    }
    let Charset::Decoded(encoding) = detection.charset else {
        return;
    };
    let (whole, _) = encoding.decode_with_bom_removal(data);
    for size in [1, 3, 4096] {
        let len = data.len() as u64;
        let mut stream =
            input::Transcode::new(Box::new(Cursor::new(data.to_vec())), encoding, Some(len));
        let mut got = Vec::new();
        let mut buf = vec![0; size];
        loop {
            let n = stream
                .read(&mut buf)
                .expect("decoding never fails on bytes");
            if n == 0 {
                break;
            }
            got.extend_from_slice(&buf[..n]);
        }
        assert_eq!(got, whole.as_bytes(), "read size {size}");
    }
    // Through a file, as a run reads it: rows, then a resume after one of them.
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = dir.path().join("input.txt");
    std::fs::write(&path, data).expect("writing the input");
    let source = Location::Path(path);
    let opts = InputOptions {
        email_column: Some(ColumnSpec::Index(1)),
        no_header: true,
        ..InputOptions::default()
    };
    let Ok((layout, reader)) = input::open(&source, &opts, None) else {
        return;
    };
    let rows: Vec<Row> = reader.map_while(Result::ok).collect();
    assert_rows_cover(&text_of(data, &layout.format), layout.bom, &rows);
    if rows.len() > 1 {
        let i = rows.len() / 2;
        let (_, again) = input::open(&source, &opts, Some(rows[i - 1].resume_after()))
            .expect("resuming where a row ended");
        let rest: Vec<Row> = again.map_while(Result::ok).collect();
        assert_eq!(rest, rows[i..], "resume after row {i}");
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

/// The cell splitter (a cell holding several addresses) and the row planned from it: no
/// panic; a cell left whole (also in a row whose quote never closes) is planned exactly as one
/// address; a cut cell gives at least two
/// pieces, each a slice of the cell, in order, with an `@`, and no `@` outside double quotes
/// is left out; the row waits for each of its first addresses once, shows the best verdict,
/// and its `email_others` splits back into one `ADDRESS:STATUS` item per other address.
pub fn cells(data: &[u8]) {
    let row = Row {
        line: 1,
        start: 0,
        raw: data.to_vec(),
        keep: data.len(),
        fields: 1,
        email: Some(data.to_vec()),
    };
    let mut planner = Planner::new(store(), 1, freshness(), 0, 64);
    let mut jobs = Vec::new();
    let looked = planner.lookup().row(row.clone());
    let planned = planner.plan(0, looked, &mut jobs).expect("planning");
    let whole = |planned: &Planned, jobs: &[Job]| {
        let want = match address::check(data) {
            Checked::Empty => String::new(),
            Checked::Invalid { normalized, .. } => normalized,
            Checked::Valid(a) => a.normalized,
        };
        assert!(planned.others.is_empty() && jobs.len() <= 1, "{data:?}");
        assert_eq!(planned.normalized, want, "a cell left whole is one address");
    };
    let Some(pieces) = cell::several(data) else {
        whole(&planned, &jobs);
        return;
    };

    let pieces: Vec<&[u8]> = pieces.collect();
    assert!(pieces.len() >= 2, "{data:?}");
    let base = data.as_ptr() as usize;
    let mut covered = vec![false; data.len()];
    let mut at = 0;
    for piece in &pieces {
        let start = piece.as_ptr() as usize - base;
        assert!(start >= at && start + piece.len() <= data.len(), "{data:?}");
        assert!(piece.contains(&b'@') && std::str::from_utf8(piece).is_ok());
        covered[start..start + piece.len()].fill(true);
        at = start + piece.len();
    }
    let (mut quoted, mut escaped) = (false, false);
    for (i, &b) in data.iter().enumerate() {
        if quoted {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                quoted = false;
            }
        } else if b == b'"' {
            quoted = true;
        } else if b == b'@' {
            assert!(covered[i], "the @ at {i} of {data:?} is in no piece");
        }
    }

    if cell::of_row(&row).is_none() {
        let quotes = data.iter().filter(|&&b| b == b'"').count();
        assert!(
            quotes % 2 == 1,
            "only a row whose quote never closes is left whole"
        );
        whole(&planned, &jobs);
        return;
    }

    // Planned: the first pieces, checked, each once; only addresses that pass are sent.
    let checked = cell::checked(
        cell::several(data).expect("cut above"),
        address::Rules::default(),
    );
    assert_eq!(planned.addresses().count(), checked.len().max(1));
    for (i, job) in jobs.iter().enumerate() {
        assert!(matches!(
            address::check(job.address.as_bytes()),
            Checked::Valid(_)
        ));
        let status = [
            Status::Valid,
            Status::Invalid,
            Status::Unknown,
            Status::CatchAll,
        ][i % 4]
            .clone();
        let answer = Answer {
            status: Some(status),
            ..Answer::default()
        };
        job.pending.resolve(Resolved::Answered(Arc::new(answer)));
    }
    let (best, outcome) = planned.best().expect("every address answered");
    for (_, slot) in planned.addresses() {
        let other = planned.outcome_of(slot).expect("answered");
        assert!(other.rank() <= outcome.rank(), "the best is shown");
    }

    let listed = output::others(&planned, best, Default::default());
    let past_cap = pieces[pieces.len().min(cell::MAX_ASKED)..]
        .iter()
        .filter(|p| address::check(p) != Checked::Empty)
        .count();
    let want = planned.addresses().count() - 1 + past_cap;
    let items: Vec<&str> = if listed.is_empty() {
        Vec::new()
    } else {
        listed.split("; ").collect()
    };
    assert_eq!(items.len(), want, "{listed:?}");
    for item in items {
        let (_, status) = item.rsplit_once(':').expect("ADDRESS:STATUS");
        assert!(
            [
                "valid",
                "invalid",
                "unknown",
                "catch_all",
                "missing",
                "skipped"
            ]
            .contains(&status),
            "{item:?}"
        );
    }
}
