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
use mailsift::input::{self, Charset, ColumnSpec, Format, InputOptions, Row, Source};
use mailsift::output::RowFormat;
use mailsift::plan::{Freshness, Outcome, Planner, Resolved};
use mailsift::store::{Answer, Store};

/// The normaliser and syntax check: total (no panic), and what it accepts is what it sends.
pub fn address(data: &[u8]) {
    let Checked::Valid(a) = address::check(data) else {
        return;
    };
    let sent = &a.normalized;
    assert_eq!(sent.matches('@').count(), 1, "{sent:?}");
    assert!(
        !sent.chars().any(|c| c.is_control() || c.is_whitespace()),
        "{sent:?}"
    );
    let domain = &sent[sent.find('@').unwrap_or(0) + 1..];
    assert!(
        domain.is_ascii() && domain == domain.to_ascii_lowercase() && domain.contains('.'),
        "the domain goes out lower-case ASCII: {sent:?}"
    );
    assert!(sent.len() <= 254, "{sent:?}");
    assert_eq!(
        a.key,
        sent.to_lowercase(),
        "the key is the lower-cased address"
    );
    // Idempotent: the address as sent is accepted as itself.
    match address::check(sent.as_bytes()) {
        Checked::Valid(again) => assert_eq!(again, a, "{data:?}"),
        other => panic!("{sent:?} (from {data:?}) is refused when checked again: {other:?}"),
    }
}

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
    let source = Source::Path(path);
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
