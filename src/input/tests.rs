//! Tests of the whole input path: `open` + `Reader` over streams and files.

use super::*;
use rand::{Rng, SeedableRng};
use std::io::Write;

/// A reader that hands out at most `chunk` bytes per call, to stress the tee's bookkeeping.
struct Trickle {
    data: Vec<u8>,
    pos: usize,
    chunk: usize,
}

impl Read for Trickle {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let n = self.chunk.min(out.len()).min(self.data.len() - self.pos);
        out[..n].copy_from_slice(&self.data[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

fn stream(bytes: &[u8], opts: &InputOptions) -> Result<(Layout, Reader), InputError> {
    open_stream("test input", Box::new(Cursor::new(bytes.to_vec())), opts)
}

fn collect(reader: Reader) -> Vec<Row> {
    reader.map(|r| r.expect("row")).collect()
}

fn read_all(bytes: &[u8], opts: &InputOptions) -> (Layout, Vec<Row>) {
    let (layout, reader) = stream(bytes, opts).expect("open");
    (layout, collect(reader))
}

fn read_with(
    bytes: &[u8],
    opts: &InputOptions,
    limits: Limits,
    chunk: usize,
) -> (Layout, Vec<Row>) {
    let input = Box::new(Trickle {
        data: bytes.to_vec(),
        pos: 0,
        chunk,
    });
    let (layout, reader) = open_input(
        "test input".into(),
        Input::Stream(input),
        None,
        opts,
        None,
        limits,
        Format::Utf8 { how: "test" },
    )
    .expect("open");
    (layout, collect(reader))
}

fn concat(layout: &Layout, rows: &[Row]) -> Vec<u8> {
    let mut out = Vec::new();
    for row in layout.header.iter().chain(rows) {
        out.extend_from_slice(&row.raw);
    }
    out
}

fn opts() -> InputOptions {
    InputOptions::default()
}

fn column(i: usize) -> InputOptions {
    InputOptions {
        email_column: Some(ColumnSpec::Index(i)),
        ..InputOptions::default()
    }
}

fn temp_file(bytes: &[u8]) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("input.csv");
    File::create(&path)
        .and_then(|mut f| f.write_all(bytes))
        .expect("write");
    (dir, path)
}

const FIXTURE_CRLF: &[u8] = include_bytes!("../../tests/fixtures/crlf.csv");
const FIXTURE_SEMICOLON: &[u8] = include_bytes!("../../tests/fixtures/semicolon_bom_latin1.csv");
const FIXTURE_ANNOTATED: &[u8] = include_bytes!("../../tests/fixtures/annotated.csv");
const FIXTURE_CR_LIST: &[u8] = include_bytes!("../../tests/fixtures/cr_only_list.txt");

#[test]
fn raw_bytes_are_preserved() {
    // (input, expected concatenation of header + rows: the input minus BOM and blank lines)
    let crlf_without_blank = FIXTURE_CRLF.replace(b"\r\n\r\nZ", b"\r\nZ");
    let cr_without_blank = FIXTURE_CR_LIST.replace(b"\r\r", b"\r");
    let cases: Vec<(&[u8], &[u8])> = vec![
        (b"email\na@b.co\nc@d.co\n", b"email\na@b.co\nc@d.co\n"),
        (b"email\na@b.co\nc@d.co", b"email\na@b.co\nc@d.co"),
        (
            b"email\r\na@b.co\r\nc@d.co\r\n",
            b"email\r\na@b.co\r\nc@d.co\r\n",
        ),
        (b"email\ra@b.co\rc@d.co\r", b"email\ra@b.co\rc@d.co\r"),
        (
            b"email\n\na@b.co\n\n\nc@d.co\n\n",
            b"email\na@b.co\nc@d.co\n",
        ),
        (b"email\r\n\r\na@b.co\r\n", b"email\r\na@b.co\r\n"),
        (b"\n\nemail\na@b.co\n", b"email\na@b.co\n"),
        (b"\xEF\xBB\xBFemail\na@b.co\n", b"email\na@b.co\n"),
        (
            b"name,email\n\"a\nb\",x@y.co\n",
            b"name,email\n\"a\nb\",x@y.co\n",
        ),
        (
            b"name,email\r\n\"a\r\n\r\nb\",x@y.co\r\n",
            b"name,email\r\n\"a\r\n\r\nb\",x@y.co\r\n",
        ),
        (
            b"name,email\n\"a,\"\"b\"\"\",x@y.co\n",
            b"name,email\n\"a,\"\"b\"\"\",x@y.co\n",
        ),
        // Mostly UTF-8: the stray Latin-1 byte passes through (a Latin-1 file is decoded, see
        // `decode`).
        (
            "name,email\nJörg,j@x.co\nB\u{f6}b,k@x.co\n"
                .as_bytes()
                .iter()
                .chain(b"B\xf6b,l@x.co\n")
                .copied()
                .collect::<Vec<u8>>()
                .leak(),
            "name,email\nJörg,j@x.co\nB\u{f6}b,k@x.co\n"
                .as_bytes()
                .iter()
                .chain(b"B\xf6b,l@x.co\n")
                .copied()
                .collect::<Vec<u8>>()
                .leak(),
        ),
        (b"name,email\na\0b,j@x.co\n", b"name,email\na\0b,j@x.co\n"),
        (
            b"name,email,x\na,j@x.co\nb\nc,k@x.co,1,2,3\n",
            b"name,email,x\na,j@x.co\nb\nc,k@x.co,1,2,3\n",
        ),
        (
            b"name,email\n  ,  \n,,\nx,j@x.co\n",
            b"name,email\n  ,  \n,,\nx,j@x.co\n",
        ),
        // Mixed endings within one file.
        (
            b"email\na@b.co\r\nc@d.co\re@f.co",
            b"email\na@b.co\r\nc@d.co\re@f.co",
        ),
        // Unbalanced quote at the very end: the rest is one field.
        (
            b"name,email\nx,j@x.co\n\"open,k@x.co\n",
            b"name,email\nx,j@x.co\n\"open,k@x.co\n",
        ),
        (FIXTURE_CRLF, &crlf_without_blank),
        (FIXTURE_SEMICOLON, &FIXTURE_SEMICOLON[3..]),
        (FIXTURE_ANNOTATED, FIXTURE_ANNOTATED),
        (FIXTURE_CR_LIST, &cr_without_blank),
    ];
    let small = Limits {
        sample: 8,
        row: 1024,
    };
    for (input, want) in &cases {
        let (layout, rows) = read_all(input, &opts());
        assert_eq!(
            concat(&layout, &rows),
            *want,
            "{:?}",
            String::from_utf8_lossy(input)
        );
        // Same rows whatever the read sizes and sample size.
        for chunk in [1, 2, 3, 7] {
            let (layout2, rows2) = read_with(input, &opts(), small, chunk);
            // `read_with` skips the encoding detection; everything else must agree.
            let layout2 = Layout {
                format: layout.format.clone(),
                ..layout2
            };
            assert_eq!(layout2, layout, "chunk {chunk}: {input:?}");
            assert_eq!(rows2, rows, "chunk {chunk}: {input:?}");
        }
    }
}

trait Replace {
    fn replace(&self, from: &[u8], to: &[u8]) -> Vec<u8>;
}

impl Replace for [u8] {
    fn replace(&self, from: &[u8], to: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut i = 0;
        while i < self.len() {
            if self[i..].starts_with(from) {
                out.extend_from_slice(to);
                i += from.len();
            } else {
                out.push(self[i]);
                i += 1;
            }
        }
        out
    }
}

#[test]
fn row_fields_table() {
    // Each row: (line, start, raw, keep, fields, email)
    type Want<'a> = (u64, u64, &'a [u8], usize, usize, Option<&'a [u8]>);
    let cases: Vec<(&[u8], Vec<Want>)> = vec![
        (
            b"name,email\r\nJane,jane@x.co\r\n\r\n\"Bob\r\nRoe\",\"bob@y.co\"\r\nshort\r\nlast,l@z.co",
            vec![
                (2, 12, b"Jane,jane@x.co\r\n", 14, 2, Some(b"jane@x.co")),
                (4, 30, b"\"Bob\r\nRoe\",\"bob@y.co\"\r\n", 21, 2, Some(b"bob@y.co")),
                (6, 53, b"short\r\n", 5, 1, None),
                (7, 60, b"last,l@z.co", 11, 2, Some(b"l@z.co")),
            ],
        ),
        (
            b"\xEF\xBB\xBFemail\ra@b.co\r\rc@d.co\r",
            vec![
                (2, 9, b"a@b.co\r", 6, 1, Some(b"a@b.co")),
                (4, 17, b"c@d.co\r", 6, 1, Some(b"c@d.co")),
            ],
        ),
        (
            // The unterminated quote makes the final line ending data: keep it.
            b"email\n\"a@b.co\n",
            vec![(2, 6, b"\"a@b.co\n", 8, 1, Some(b"a@b.co\n"))],
        ),
    ];
    for (input, want) in cases {
        let (layout, rows) = read_all(input, &opts());
        assert!(layout.has_header, "{input:?}");
        let got: Vec<Want> = rows
            .iter()
            .map(|r| {
                (
                    r.line,
                    r.start,
                    &r.raw[..],
                    r.keep,
                    r.fields,
                    r.email.as_deref(),
                )
            })
            .collect();
        assert_eq!(got, want, "{:?}", String::from_utf8_lossy(input));
        for row in &rows {
            assert_eq!(&input[row.start as usize..][..row.raw.len()], &row.raw[..]);
        }
    }
}

#[test]
fn layout_table() {
    // (input, options, delimiter, has_header, email column, how found, terminator)
    type Want = (u8, bool, usize, &'static str, &'static [u8]);
    let cases: Vec<(&[u8], InputOptions, Want)> = vec![
        (
            FIXTURE_CRLF,
            opts(),
            (b',', true, 2, "header name", b"\r\n"),
        ),
        (
            FIXTURE_SEMICOLON,
            opts(),
            (b';', true, 1, "header name", b"\n"),
        ),
        (
            FIXTURE_CR_LIST,
            opts(),
            (b',', false, 0, "single column", b"\r"),
        ),
        (
            b"a\tb\tcontact\n1\t2\tx@y.co\n",
            opts(),
            (b'\t', true, 2, "content", b"\n"),
        ),
        (
            b"a|b\n1|x@y.co\n2|z@y.co\n",
            opts(),
            (b'|', true, 1, "content", b"\n"),
        ),
        (
            b"1|x@y.co\n2|z@y.co\n",
            opts(),
            (b'|', false, 1, "content", b"\n"),
        ),
        (
            b"Jane,jane@x.co\nBob,bob@y.co\n",
            opts(),
            (b',', false, 1, "content", b"\n"),
        ),
        (
            b"x;y\n1;2\n",
            column(2),
            (b';', true, 1, "--email-column", b"\n"),
        ),
        (
            b"x;y\n1;2\n",
            InputOptions {
                no_header: true,
                ..column(1)
            },
            (b';', false, 0, "--email-column", b"\n"),
        ),
        (
            b"a,b\n1,2\n",
            InputOptions {
                delimiter: Some(b';'),
                ..column(1)
            },
            (b';', true, 0, "--email-column", b"\n"),
        ),
        (
            b"name,Mail Box\nJane,j@x.co\n",
            InputOptions {
                email_column: Some(ColumnSpec::Name("mail box".into())),
                ..opts()
            },
            (b',', true, 1, "--email-column", b"\n"),
        ),
        (b"", opts(), (b',', false, 0, "single column", b"\n")),
        (
            b"\xEF\xBB\xBF\n\n",
            opts(),
            (b',', false, 0, "single column", b"\n"),
        ),
    ];
    for (input, options, want) in cases {
        let (layout, rows) = read_all(input, &options);
        let got = (
            layout.delimiter,
            layout.has_header,
            layout.email_column,
            layout.how_found,
            &layout.terminator[..],
        );
        assert_eq!(
            got,
            want,
            "{:?} {options:?}",
            String::from_utf8_lossy(input)
        );
        assert_eq!(layout.header.is_some(), layout.has_header);
        if layout.has_header {
            assert_eq!(
                layout.email_column_name.as_deref(),
                layout.headers.get(layout.email_column).map(String::as_str)
            );
        } else {
            assert!(layout.headers.is_empty() && layout.email_column_name.is_none());
        }
        assert_eq!(layout.bom, input.starts_with(BOM));
        if input.trim_ascii().is_empty() || input == b"\xEF\xBB\xBF\n\n" {
            assert!(rows.is_empty());
        }
    }
}

#[test]
fn fixture_semicolon_reads_non_utf8_rows() {
    let (layout, rows) = read_all(FIXTURE_SEMICOLON, &opts());
    assert_eq!(layout.headers, ["Name", "E-Mail-Adresse", "Firma"]);
    assert_eq!(layout.header.as_ref().map(|h| h.start), Some(3));
    assert_eq!(rows.len(), 2);
    assert_eq!(&rows[0].raw[..5], b"J\xf6rg;");
    assert_eq!(
        rows[1].email.as_deref(),
        Some(&b"anna@beispiel-gmbh.de"[..])
    );
    assert_eq!(rows[1].fields, 3);
}

#[test]
fn column_errors_table() {
    let headers = b"first,last,contact\nJane,Doe,call me\n";
    let cases: Vec<(&[u8], InputOptions, &str)> = vec![
        (headers, opts(), "no email column found; the header (line 1) has 3 columns: 1 \"first\", 2 \"last\", 3 \"contact\"; name it with --email-column NAME or --email-column INDEX"),
        (b"Jane,Doe\nBob,Roe\n", InputOptions { no_header: true, ..opts() }, "the first row (line 1) has 2 columns: 1 \"Jane\", 2 \"Doe\""),
        (headers, column(4), "--email-column 4 is out of range: the header (line 1) has 3 columns"),
        (headers, column(0), "indexes start at 1"),
        (
            headers,
            InputOptions { email_column: Some(ColumnSpec::Name("mail".into())), ..opts() },
            "there is no column named \"mail\"; the header (line 1) has 3 columns: 1 \"first\"",
        ),
        (
            headers,
            InputOptions { no_header: true, email_column: Some(ColumnSpec::Name("contact".into())), ..opts() },
            "--no-header says test input has no header",
        ),
        (headers, InputOptions { delimiter: Some(b'"'), ..opts() }, "invalid delimiter '\"'"),
    ];
    for (input, options, want) in cases {
        let err = stream(input, &options).expect_err("must fail");
        let msg = err.to_string();
        assert!(msg.contains(want), "{options:?}: {msg}");
        assert!(err.is_usage(), "{msg}");
        assert!(msg.contains("test input") || matches!(err, InputError::BadDelimiter { .. }));
    }
}

#[test]
fn named_column_matching_table() {
    let input = b"E-Mail,email ,Work Email\na@b.co,c@d.co,e@f.co\n";
    let cases: &[(&str, usize)] = &[
        ("E-Mail", 0),
        ("email ", 1),
        ("email", 1),
        ("Work Email", 2),
        ("work_email", 2),
        ("WORKEMAIL", 2),
        (" E-Mail ", 0),
    ];
    for (name, want) in cases {
        let options = InputOptions {
            email_column: Some(ColumnSpec::Name(name.to_string())),
            ..opts()
        };
        let (layout, _) = read_all(input, &options);
        assert_eq!(layout.email_column, *want, "{name:?}");
    }
}

#[test]
fn replace_from_cuts_old_annotations() {
    let (layout, rows) = read_all(FIXTURE_ANNOTATED, &opts());
    assert_eq!(layout.replace_from, Some(2));
    assert_eq!(layout.email_column, 1);
    let header = layout.header.as_ref().expect("header");
    assert_eq!(&header.raw[..header.keep], b"name,email");
    let kept: Vec<&[u8]> = rows.iter().map(|r| &r.raw[..r.keep]).collect();
    assert_eq!(
        kept,
        [
            &b"Jane,jane@acme-corp.com"[..],
            b"\"Roe, Bob\",bob@northwind.io",
            b"short,row@x.io",
        ]
    );

    // With a prefix, only the prefixed block is ours.
    let prefixed = b"email,lm_email_status,lm_email_message,lm_email_normalized,lm_mx_provider,lm_mx_record,lm_is_catch_all,lm_credits_consumed,lm_checked_at,lm_source\r\n\"a,b\"@x.co,valid,\"m,1\",n,p,r,false,0,t,api\r\n";
    let options = InputOptions {
        column_prefix: Some("lm_".into()),
        email_column: Some(ColumnSpec::Index(1)),
        ..opts()
    };
    let (layout, rows) = read_all(prefixed, &options);
    assert_eq!(layout.replace_from, Some(1));
    assert_eq!(&rows[0].raw[..rows[0].keep], b"\"a,b\"@x.co");
    let (layout, _) = read_all(prefixed, &column(1));
    assert_eq!(layout.replace_from, None);

    // Pointing --email-column into the block keeps every column.
    let (layout, rows) = read_all(FIXTURE_ANNOTATED, &column(5));
    assert_eq!(layout.replace_from, None);
    assert_eq!(rows[0].keep, rows[0].raw.len() - 1);
}

#[test]
fn resume_gives_the_same_rows_as_a_full_read() {
    let mut input = b"\xEF\xBB\xBFname,email\r\n".to_vec();
    for i in 0..60 {
        match i % 5 {
            0 => input.extend_from_slice(format!("\"P{i}\r\nx\",p{i}@x.co\r\n").as_bytes()),
            1 => input.extend_from_slice(format!("P{i},p{i}@x.co\r\n\r\n").as_bytes()),
            2 => input.extend_from_slice(format!("P{i},p{i}@x.co\n").as_bytes()),
            3 => input.extend_from_slice(format!("P{i},p{i}@x.co\r").as_bytes()),
            _ => {
                input.extend_from_slice(b"J\xf6");
                input.extend_from_slice(format!("{i},p{i}@x.co,extra\r\n").as_bytes());
            }
        }
    }
    input.extend_from_slice(b"last,l@x.co");
    let (_dir, path) = temp_file(&input);
    let source = Location::Path(path);
    let (layout, reader) = open(&source, &opts(), None).expect("open");
    assert_eq!(reader.source_len(), Some(input.len() as u64));
    let full = collect(reader);
    assert_eq!(full.len(), 61);

    for i in 0..full.len() {
        // From the row's own start, and from the end of the previous row (before blank lines).
        let mut points = vec![Resume {
            byte: full[i].start,
            line: full[i].line,
        }];
        if i > 0 {
            points.push(full[i - 1].resume_after());
        }
        for at in points {
            let (layout2, reader) = open(&source, &opts(), Some(at)).expect("resume");
            assert_eq!(layout2, layout);
            let mut reader = reader;
            let rest: Vec<Row> = reader.by_ref().map(|r| r.expect("row")).collect();
            assert_eq!(rest, full[i..], "resume at {at:?}");
            assert_eq!(reader.bytes_read(), input.len() as u64);
        }
    }

    // At or before the first data row: a full read.
    for byte in [0, 3, full[0].start] {
        let (_, reader) = open(&source, &opts(), Some(Resume { byte, line: 1 })).expect("open");
        assert_eq!(collect(reader), full);
    }
    // At the very end: nothing left.
    let end = Resume {
        byte: input.len() as u64,
        line: 99,
    };
    let (_, reader) = open(&source, &opts(), Some(end)).expect("open");
    assert!(collect(reader).is_empty());
    // Past the end: the input changed.
    let past = Resume {
        byte: input.len() as u64 + 1,
        line: 99,
    };
    let err = open(&source, &opts(), Some(past)).expect_err("past end");
    assert!(
        matches!(err, InputError::ResumePastEnd { .. }) && err.is_usage(),
        "{err}"
    );
}

#[test]
fn stdin_cannot_resume() {
    let err = open(
        &Location::Stdin,
        &opts(),
        Some(Resume { byte: 10, line: 2 }),
    )
    .expect_err("stdin resume");
    assert!(matches!(err, InputError::StdinResume) && err.is_usage());
}

#[test]
fn file_and_stream_agree() {
    let (_dir, path) = temp_file(FIXTURE_CRLF);
    let (layout, reader) = open(&Location::Path(path), &opts(), None).expect("open");
    let from_file = collect(reader);
    let (layout2, from_stream) = read_all(FIXTURE_CRLF, &opts());
    assert_eq!((layout, from_file), (layout2, from_stream));
}

#[test]
fn missing_file_is_a_usage_error_naming_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("nope.csv");
    let err = open(&Location::Path(path.clone()), &opts(), None).expect_err("missing");
    assert!(err.is_usage());
    assert!(err.to_string().contains(&path.display().to_string()));
    let chain = format!("{:#}", anyhow::Error::new(err));
    assert!(chain.contains("No such file"), "{chain}");
    // A directory opens but cannot be read.
    let err = open(&Location::Path(dir.path().to_path_buf()), &opts(), None).expect_err("dir");
    assert!(err.is_usage(), "{err}");
}

#[test]
fn unbalanced_quote_is_capped_and_named() {
    let limits = Limits {
        sample: 16,
        row: 64,
    };
    let mut input = b"name,email\na,a@x.co\nb,b@x.co\n\n\"broken,c@x.co\n".to_vec();
    input.extend(std::iter::repeat_n(b'z', 500));
    let stream = Box::new(Cursor::new(input));
    let (_, reader) = open_input(
        "big.csv".into(),
        Input::Stream(stream),
        None,
        &opts(),
        None,
        limits,
        Format::Utf8 { how: "test" },
    )
    .expect("open");
    let results: Vec<Result<Row, InputError>> = reader.collect();
    assert_eq!(results.len(), 3, "{results:?}");
    assert!(results[0].is_ok() && results[1].is_ok());
    match &results[2] {
        Err(err @ InputError::RowTooLong { line: 5, .. }) => {
            let msg = err.to_string();
            assert!(
                msg.contains("big.csv")
                    && msg.contains("line 5")
                    && msg.contains("unbalanced quote")
            );
            assert!(err.is_usage());
        }
        other => panic!("{other:?}"),
    }

    // Already in the sample: the first row never ends.
    let mut input = b"\n\"name,email\n".to_vec();
    input.extend(std::iter::repeat_n(b'z', 500));
    let stream = Box::new(Cursor::new(input));
    let err = open_input(
        "big.csv".into(),
        Input::Stream(stream),
        None,
        &opts(),
        None,
        limits,
        Format::Utf8 { how: "test" },
    )
    .expect_err("too long");
    assert!(
        matches!(err, InputError::RowTooLong { line: 2, .. }),
        "{err}"
    );
}

#[test]
fn long_rows_within_the_cap_are_fine() {
    // Rows far larger than the sample and the csv buffer, but under the cap.
    let big = "x".repeat(200_000);
    let input = format!("name,email\n\"{big}\",a@x.co\n{big},b@x.co\n");
    let (layout, rows) = read_all(input.as_bytes(), &opts());
    assert_eq!(layout.email_column, 1);
    assert_eq!(rows.len(), 2);
    assert_eq!(concat(&layout, &rows), input.as_bytes());
}

#[test]
fn bytes_read_reaches_the_end() {
    let (_, mut reader) = stream(FIXTURE_CRLF, &opts()).expect("open");
    assert!(reader.bytes_read() <= FIXTURE_CRLF.len() as u64);
    assert_eq!(reader.source_len(), None);
    reader.by_ref().for_each(drop);
    assert_eq!(reader.bytes_read(), FIXTURE_CRLF.len() as u64);
}

/// Random CSV-ish bytes: every row must sit at its `start`, gaps must be line endings only,
/// fields must match a plain `csv` parse, and every resume point must give the same tail.
#[test]
fn random_inputs_keep_every_byte() {
    let pieces: &[&[u8]] = &[
        b"a",
        b"bc",
        b",",
        b",",
        b"\"",
        b"\"\"",
        b"\r",
        b"\n",
        b"\r\n",
        b"\xc3\xa9",
        b"\xff",
        b"\0",
        b" ",
        b"x@y.co",
    ];
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let options = InputOptions {
        delimiter: Some(b','),
        no_header: true,
        email_column: Some(ColumnSpec::Index(1)),
        // Bytes as they are: random bytes would otherwise be decoded as a legacy encoding.
        encoding: Some(encoding_rs::UTF_8),
        ..InputOptions::default()
    };
    for round in 0..300 {
        let mut input = Vec::new();
        for _ in 0..rng.random_range(0..60) {
            input.extend_from_slice(pieces[rng.random_range(0..pieces.len())]);
        }
        let chunk = rng.random_range(1..5);
        let limits = Limits {
            sample: 4,
            row: 1 << 20,
        };
        let (layout, rows) = read_with(&input, &options, limits, chunk);
        assert!(layout.header.is_none());

        let mut reference = csv::ReaderBuilder::new()
            .has_headers(false)
            .flexible(true)
            .from_reader(&input[..]);
        let records: Vec<csv::ByteRecord> = reference
            .byte_records()
            .map(|r| r.expect("slice"))
            .collect();
        assert_eq!(rows.len(), records.len(), "round {round}: {input:?}");

        let mut pos = 0usize;
        for (row, record) in rows.iter().zip(&records) {
            let start = row.start as usize;
            assert!(start >= pos, "round {round}");
            // A \r\n is one terminator: never split between a row and the gap after it.
            assert!(!(input[..start].ends_with(b"\r") && input[start..].starts_with(b"\n")));
            assert!(input[pos..start].iter().all(|b| *b == b'\r' || *b == b'\n'));
            assert_eq!(
                &input[start..start + row.raw.len()],
                &row.raw[..],
                "round {round}"
            );
            assert_eq!(row.fields, record.len());
            assert_eq!(row.email.as_deref(), record.get(0));
            assert!(row.keep <= row.raw.len());
            assert_eq!(
                row.line,
                1 + rows::line_breaks(&input[..start]),
                "round {round}"
            );
            pos = start + row.raw.len();
        }
        assert!(input[pos..].iter().all(|b| *b == b'\r' || *b == b'\n'));
        assert!(!(input[..pos].ends_with(b"\r") && input[pos..].starts_with(b"\n")));

        if rows.len() > 1 {
            let (_dir, path) = temp_file(&input);
            let i = rng.random_range(1..rows.len());
            let at = rows[i - 1].resume_after();
            let (_, reader) = open(&Location::Path(path), &options, Some(at)).expect("resume");
            assert_eq!(collect(reader), rows[i..], "round {round}: {input:?}");
        }
    }
}

#[test]
fn sample_contacts_file_reads_as_documented() {
    use crate::address::{check, Checked};
    let sample: &[u8] = include_bytes!("../../samples/contacts.csv");
    let (layout, rows) = read_all(sample, &opts());
    assert_eq!(
        (
            layout.delimiter,
            layout.has_header,
            layout.email_column,
            layout.how_found
        ),
        (b',', true, 3, "header name")
    );
    assert_eq!(layout.email_column_name.as_deref(), Some("Email"));
    assert_eq!(concat(&layout, &rows), sample);
    assert!(rows.len() >= 200, "{}", rows.len());
    let (mut empty, mut invalid, mut valid, mut idn, mut ragged) = (0, 0, 0, 0, 0);
    let mut keys = std::collections::HashSet::new();
    let mut duplicates = 0;
    for row in &rows {
        ragged += usize::from(row.fields != 6);
        match check(row.email.as_deref().unwrap_or_default()) {
            Checked::Empty => empty += 1,
            Checked::Invalid { .. } => invalid += 1,
            Checked::Valid(a) => {
                valid += 1;
                idn += usize::from(a.normalized.contains("xn--"));
                duplicates += usize::from(!keys.insert(a.key));
            }
        }
    }
    assert!(
        empty >= 3 && invalid >= 10 && valid >= 150,
        "{empty} {invalid} {valid}"
    );
    assert!(
        idn >= 2 && duplicates >= 2 && ragged >= 1,
        "{idn} {duplicates} {ragged}"
    );
}

#[test]
fn reader_can_move_to_a_blocking_thread() {
    fn assert_send<T: Send + 'static>() {}
    assert_send::<Reader>();
    assert_send::<Layout>();
    assert_send::<InputError>();
}

#[test]
fn a_file_cut_short_or_grown_while_read_is_reported_not_taken() {
    // (what happens to the file after the first row is read, rows that must come out first)
    let body: String = (0..40_000)
        .map(|i| format!("{i},user{i}@example.com\n"))
        .collect();
    let input = format!("id,email\n{body}");
    type Change = fn(&std::path::Path, usize);
    let cases: &[(&str, Change)] = &[
        ("cut", |path, len| {
            std::fs::OpenOptions::new()
                .write(true)
                .open(path)
                .and_then(|f| f.set_len(len as u64 / 3))
                .expect("truncate");
        }),
        ("grown", |path, _| {
            std::fs::OpenOptions::new()
                .append(true)
                .open(path)
                .and_then(|mut f| f.write_all(b"99999,late@example.com\n"))
                .expect("append");
        }),
    ];
    for (name, change) in cases {
        let (_dir, path) = temp_file(input.as_bytes());
        let (_, mut reader) = open(&Location::Path(path.clone()), &opts(), None).expect("open");
        let first = reader.next().expect("a row").expect("row");
        assert_eq!(first.line, 2);
        change(&path, input.len());
        let mut rows = 1;
        let err = loop {
            match reader.next() {
                Some(Ok(row)) => {
                    // Every row handed out is a whole row of the original.
                    assert!(row.raw.ends_with(b".com\n"), "{name}: {:?}", row.raw);
                    rows += 1;
                }
                Some(Err(e)) => break e,
                None => panic!("{name}: the change went unnoticed after {rows} rows"),
            }
        };
        assert!(matches!(err, InputError::Changed { .. }), "{name}: {err}");
        let text = err.to_string();
        assert!(
            text.contains("changed while it was being read") && text.contains("--restart"),
            "{text}"
        );
        assert!(err.is_usage());
        assert!(reader.next().is_none());
    }
}

#[test]
fn binary_input_without_an_email_column_is_named_as_such() {
    let mut gzip = b"\x1F\x8B\x08\x00\x00\x00".to_vec();
    gzip.extend((0..3000u32).map(|i| (i.wrapping_mul(2654435761) >> 11) as u8));
    let err = stream(&gzip, &opts()).expect_err("no email column");
    assert!(matches!(err, InputError::NotText { .. }), "{err}");
    assert!(err.to_string().contains("gzip"), "{err}");
    // A ZIP (a workbook?) is refused by its first bytes, before any parsing.
    let err = stream(&[b"PK\x03\x04".as_slice(), &gzip].concat(), &opts()).expect_err("zip");
    assert!(matches!(err, InputError::SheetNotAFile { .. }), "{err}");
    // A text file without addresses still lists its columns.
    let err = stream(b"first,last\nJane,Doe\n", &opts()).expect_err("no email column");
    assert!(matches!(err, InputError::NoEmailColumn { .. }), "{err}");
}
