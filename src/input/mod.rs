//! The streaming CSV input: layout detection and rows that keep their original bytes.
//!
//! Owns all CSV *reading* (the `csv` crate is used only here and in the output writer): opening
//! the source, sniffing the delimiter, stripping a UTF-8 BOM, deciding whether there is a header,
//! finding the email column, spotting our own annotation columns in a re-validated file, and
//! streaming rows whose `raw` bytes are exactly the input's.
//!
//! Before any of that, what the file is: a workbook by its first bytes (`sheet`: read with
//! calamine as CSV text), or text in some encoding (`decode`: UTF-8 is read as bytes, anything
//! else is decoded to UTF-8). For converted text, `raw` and offsets are of that text, and a
//! resume converts again and skips to the offset.
//!
//! Must not: validate or normalise addresses beyond calling [`crate::address::check`] for
//! column detection, hold more than one row (plus a 64 KiB sample and one read chunk) in memory,
//! or use async I/O: the reader is blocking and is meant to run on a `spawn_blocking` thread
//! feeding a bounded channel.
//!
//! Decisions worth knowing:
//! - Blank lines (nothing between two line endings) are not rows: they are skipped, appear in
//!   no `raw`, but still count for line numbers. A line of spaces or of bare delimiters is a row.
//! - A row longer than 16 MiB (typically an unbalanced quote swallowing the rest of the file)
//!   ends the stream with [`InputError::RowTooLong`], naming the line where it started.
//! - An empty input (or only a BOM and blank lines) is not an error: it has no header, one
//!   column and no rows.
//! - A quote that is never closed makes the rest of the file one field of its row: the bytes
//!   pass through and a warning names the line (a row over 16 MiB is the error above).
//! - A file that ends at another offset than its size when opened (cut short or grown while it
//!   was read) ends the stream with [`InputError::Changed`]: the output would match neither
//!   version.
//! - Without an email column, a sample full of control bytes is reported as "not a CSV"
//!   ([`InputError::NotText`]) instead of listing binary garbage as column names.

mod decode;
mod detect;
mod rows;
mod sheet;

use std::fs::File;
use std::io::{self, Cursor, Read, Seek, SeekFrom};
use std::path::PathBuf;

use encoding_rs::Encoding;

pub use decode::{detect as detect_charset, Charset, Transcode};
pub use rows::Reader;
pub use sheet::SheetInfo;

const BOM: &[u8] = b"\xEF\xBB\xBF";
/// The sample `open` reads (and keeps) to decide the layout.
const SAMPLE_BYTES: usize = 64 * 1024;
/// Cap on one row's bytes: bounds memory when a quote is never closed.
const ROW_LIMIT: usize = 16 * 1024 * 1024;
/// Data rows looked at for column detection.
const SAMPLE_RECORDS: usize = 200;
const STDIN_NAME: &str = "standard input";

/// Where the CSV is read from: a file, or standard input (`-`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    Path(PathBuf),
    Stdin,
}

/// The user's choice of email column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ColumnSpec {
    /// A header name: matched exactly first, then normalised (case, spaces, punctuation).
    Name(String),
    /// 1-based, as the user types it.
    Index(usize),
}

/// What the user told us about the input; everything else is detected.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InputOptions {
    /// Field delimiter; sniffed among `,` `;` tab `|` when `None`.
    pub delimiter: Option<u8>,
    /// The first row is data, not a header.
    pub no_header: bool,
    /// The email column; detected by header name or content when `None`.
    pub email_column: Option<ColumnSpec>,
    /// Prefix of our annotation column names, to recognise them in an annotated input.
    pub column_prefix: Option<String>,
    /// The text encoding (`--encoding`); detected when `None`. UTF-8 means "bytes as they are".
    pub encoding: Option<&'static Encoding>,
    /// The sheet of a workbook (`--sheet`): a name, or a 1-based number; the first when `None`.
    pub sheet: Option<String>,
}

/// How the file's bytes became the CSV text that rows, and their offsets, are cut from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Format {
    /// Text read as bytes: UTF-8, or mostly UTF-8 (an invalid byte passes through unchanged).
    Utf8 { how: &'static str },
    /// Text decoded to UTF-8 from another encoding.
    Decoded {
        encoding: &'static Encoding,
        how: &'static str,
    },
    /// A sheet of a workbook, read as the CSV text `sheet` makes of it.
    Sheet(SheetInfo),
}

impl Format {
    /// Rows are converted text, not the file's bytes: offsets count bytes of that text, and the
    /// output gets a UTF-8 byte order mark so that spreadsheets read it as UTF-8.
    pub fn converted(&self) -> bool {
        !matches!(self, Format::Utf8 { .. })
    }

    /// For the opening lines, e.g. "read as UTF-16LE (byte order mark)".
    pub fn describe(&self) -> String {
        match self {
            Format::Utf8 { how } => format!("read as UTF-8 ({how})"),
            Format::Decoded { encoding, how } => {
                format!(
                    "read as {} ({how}; --encoding to override)",
                    encoding.name()
                )
            }
            Format::Sheet(info) => format!(
                "sheet {:?} ({} of {}) of an {} workbook",
                info.name, info.index, info.count, info.kind
            ),
        }
    }

    /// What must be the same for a run to resume: empty for UTF-8 text, as before.
    pub fn option(&self) -> String {
        match self {
            Format::Utf8 { .. } => String::new(),
            Format::Decoded { encoding, .. } => format!(", encoding {}", encoding.name()),
            Format::Sheet(info) => format!(", sheet {:?}", info.name),
        }
    }
}

/// The input's shape, decided once by [`open`] from a sample at its start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    pub delimiter: u8,
    pub has_header: bool,
    /// The header row itself (raw bytes kept like any row).
    pub header: Option<Row>,
    /// Header names (lossy UTF-8), for messages; empty without header.
    pub headers: Vec<String>,
    /// 0-based.
    pub email_column: usize,
    pub email_column_name: Option<String>,
    /// "header name", "content", "--email-column" or "single column".
    pub how_found: &'static str,
    /// When the header ends with our own annotation columns (a re-validated file): the index of
    /// the first of them. Every row's `keep` then stops before that field, so the writer
    /// replaces those columns instead of stacking a second set.
    pub replace_from: Option<usize>,
    /// The file's dominant line ending (`\n`, `\r\n` or `\r`), for rows lacking one.
    pub terminator: Vec<u8>,
    /// The input started with a UTF-8 BOM (not part of any row's `raw`).
    pub bom: bool,
    /// How the text was obtained (encoding, or the sheet of a workbook).
    pub format: Format,
}

/// One CSV record and the exact bytes it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    /// 1-based line number where the row starts (for messages).
    pub line: u64,
    /// Byte offset of the row's first byte in the source (BOM counted).
    pub start: u64,
    /// The row's original bytes, terminator included (if any).
    pub raw: Vec<u8>,
    /// `raw[..keep]` is what the output keeps: raw minus terminator, minus replaced columns.
    pub keep: usize,
    /// Number of fields in the row (ragged rows are kept).
    pub fields: usize,
    /// Unescaped bytes of the email cell, `None` if the row is too short.
    pub email: Option<Vec<u8>>,
}

impl Row {
    /// A one-field row holding just `email` (for the tests of the stages that take rows).
    #[cfg(test)]
    pub fn of_email(email: &str) -> Row {
        Row {
            line: 1,
            start: 0,
            raw: format!("{email}\n").into_bytes(),
            keep: email.len(),
            fields: 1,
            email: Some(email.as_bytes().to_vec()),
        }
    }

    /// Where the row after this one starts: the checkpoint to record once this row is written.
    pub fn resume_after(&self) -> Resume {
        Resume {
            byte: self.start + self.raw.len() as u64,
            line: self.line + rows::line_breaks(&self.raw),
        }
    }
}

/// Where the next unread row starts (from a checkpoint).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resume {
    pub byte: u64,
    pub line: u64,
}

/// Why the input cannot be read. Every message names the input, the line when there is one, and
/// what to do.
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    // The io::Error is the `source`, not part of the text: printed with `{:#}` the chain reads
    // "cannot read x.csv (check ...): No such file or directory".
    #[error("cannot read {file} (check the path and its permissions)")]
    Open {
        file: String,
        #[source]
        source: io::Error,
    },
    #[error("reading {file} failed near line {line} (check the disk or the pipe feeding it, then run the same command again)")]
    Read {
        file: String,
        line: u64,
        #[source]
        source: io::Error,
    },
    #[error(
        "{file}: no email column found; {}; name it with --email-column NAME or --email-column INDEX (1-based)",
        describe_columns(columns, *has_header)
    )]
    NoEmailColumn {
        file: String,
        /// Header names, or the first row's values without a header.
        columns: Vec<String>,
        has_header: bool,
    },
    #[error(
        "{file}: there is no column named {name:?}; the header (line 1) has {}; pass one of these names or a 1-based index to --email-column",
        list_columns(headers)
    )]
    UnknownColumn {
        file: String,
        name: String,
        headers: Vec<String>,
    },
    #[error(
        "{file}: --email-column {index} is out of range: {}; indexes start at 1",
        describe_columns(columns, *has_header)
    )]
    ColumnOutOfRange {
        file: String,
        index: usize,
        columns: Vec<String>,
        has_header: bool,
    },
    #[error("--email-column {name:?} names a column, but --no-header says {file} has no header; give a 1-based column index instead")]
    NameWithoutHeader { file: String, name: String },
    #[error("{file}: the row starting at line {line} is longer than {limit_mib} MiB (unbalanced quote?); fix the quoting on that line and run again")]
    RowTooLong {
        file: String,
        line: u64,
        limit_mib: usize,
    },
    #[error("cannot resume reading from standard input: it cannot be re-read; pass the input as a file path, or start over with --restart")]
    StdinResume,
    #[error("{file}: cannot resume, the input is not a regular file that can be re-read from the middle; pass a regular file, or start over with --restart")]
    NotSeekable { file: String },
    #[error("{file}: the checkpoint points at byte {byte} (line {line}) but the file has only {len} bytes: the input changed since the last run; start over with --restart")]
    ResumePastEnd {
        file: String,
        byte: u64,
        line: u64,
        len: u64,
    },
    #[error("invalid delimiter {:?}: a delimiter cannot be a quote or a line ending; pick another with --delimiter", char::from(*delimiter))]
    BadDelimiter { delimiter: u8 },
    #[error("{file} changed while it was being read: it had {len} bytes when the run started, but reading ended at byte {at} (line {line}). Wait until nothing writes to it any more, then run again with --restart")]
    Changed {
        file: String,
        len: u64,
        at: u64,
        line: u64,
    },
    #[error("{file} is protected with a password: open it in your spreadsheet program, remove the password (save it without one), or export the list as CSV, and run again")]
    Password { file: String },
    #[error("{file} is a spreadsheet that cannot be read ({problem}); open it in your spreadsheet program and save it again, or export the list as CSV")]
    Workbook { file: String, problem: String },
    #[error(
        "{file} has no sheet {name:?}; it has {}; pass one of these names or a 1-based number to --sheet",
        list_columns(sheets).replace("column", "sheet")
    )]
    UnknownSheet {
        file: String,
        name: String,
        sheets: Vec<String>,
    },
    #[error("{file} looks like a spreadsheet ({kind}); mailsift reads a spreadsheet only from a file path: pass it as a path, or export the list as CSV")]
    SheetNotAFile { file: String, kind: &'static str },
    #[error("{file} does not look like a CSV or text file (line 1 starts with binary bytes{}); export it as CSV and run again", kind.map(|k| format!(": it looks like {k}")).unwrap_or_default())]
    NotText {
        file: String,
        /// What the first bytes suggest, e.g. "a ZIP archive (an .xlsx spreadsheet?)".
        kind: Option<&'static str>,
    },
}

impl InputError {
    /// True when the user (flags, file, its contents) must act: exit code 2. False for I/O
    /// failures in the middle of reading (exit code 1).
    pub fn is_usage(&self) -> bool {
        !matches!(self, InputError::Read { .. })
    }
}

/// "the header (line 1) has 3 columns: 1 \"a\", 2 \"b\", 3 \"c\"" or the first-row equivalent.
fn describe_columns(columns: &[String], has_header: bool) -> String {
    let what = if has_header {
        "the header (line 1)"
    } else {
        "the first row (line 1)"
    };
    format!("{what} has {}", list_columns(columns))
}

fn list_columns(columns: &[String]) -> String {
    const SHOWN: usize = 40;
    if columns.is_empty() {
        return "no columns".to_owned();
    }
    let mut out = format!(
        "{} column{}: ",
        columns.len(),
        if columns.len() == 1 { "" } else { "s" }
    );
    for (i, name) in columns.iter().take(SHOWN).enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        let short: String = name.chars().take(40).collect();
        out.push_str(&format!("{} {:?}", i + 1, short));
    }
    if columns.len() > SHOWN {
        out.push_str(", ...");
    }
    out
}

/// Sizes that tests shrink to exercise growth and caps cheaply.
#[derive(Debug, Clone, Copy)]
struct Limits {
    sample: usize,
    row: usize,
}

const LIMITS: Limits = Limits {
    sample: SAMPLE_BYTES,
    row: ROW_LIMIT,
};

/// Opens the input, decides its layout from a sample at its start, and returns a reader
/// positioned at the first data row, or at `resume` when given (the layout is still read from
/// the start; a `resume.byte` at or before the first data row just starts there).
///
/// What the file is comes first, from its first bytes: a workbook (ZIP or OLE magic, whatever
/// its name) is read with calamine; text is read as UTF-8 or decoded (see `decode`).
pub fn open(
    source: &Location,
    opts: &InputOptions,
    resume: Option<Resume>,
) -> Result<(Layout, Reader), InputError> {
    let path = match source {
        Location::Stdin => {
            if resume.is_some() {
                return Err(InputError::StdinResume);
            }
            return open_stream(STDIN_NAME, Box::new(io::stdin()), opts);
        }
        Location::Path(path) => path,
    };
    let file = path.display().to_string();
    let open_error = |source| InputError::Open {
        file: file.clone(),
        source,
    };
    let mut handle = File::open(path).map_err(open_error)?;
    let meta = handle.metadata().map_err(open_error)?;
    let len = meta.is_file().then_some(meta.len());
    let (head, eof) = read_head(&mut handle, LIMITS.sample).map_err(open_error)?;
    if let Some(magic) = sheet::magic(&head) {
        if len.is_none() {
            return Err(InputError::SheetNotAFile {
                file,
                kind: "a ZIP or Office file",
            });
        }
        let mut opts = opts.clone();
        let delimiter = *opts.delimiter.get_or_insert(b',');
        let (chunks, info) =
            sheet::open(path, &file, &head, magic, opts.sheet.as_deref(), delimiter)?;
        let input = Input::Converted(Box::new(chunks));
        return open_input(file, input, len, &opts, resume, LIMITS, Format::Sheet(info));
    }
    let detection = match opts.encoding {
        Some(encoding) if encoding == encoding_rs::UTF_8 => decode::Detection {
            charset: Charset::Utf8,
            how: "--encoding",
        },
        Some(encoding) => decode::Detection {
            charset: Charset::Decoded(encoding),
            how: "--encoding",
        },
        None => {
            // A regular file is looked at past its start when that is plain ASCII.
            let mut rest = len
                .map(|_| {
                    let mut f = File::open(path)?;
                    f.seek(SeekFrom::Start(head.len() as u64))?;
                    Ok(f)
                })
                .transpose()
                .map_err(open_error)?;
            decode::detect(&head, eof, rest.as_mut().map(|f| f as &mut dyn Read))
                .map_err(open_error)?
        }
    };
    // Put the head back in front of the rest: seek for a regular file, chain for a pipe.
    let input = if len.is_some() {
        handle.seek(SeekFrom::Start(0)).map_err(open_error)?;
        Input::File(handle)
    } else {
        Input::Stream(Box::new(Cursor::new(head).chain(handle)))
    };
    let (input, format) = match detection.charset {
        Charset::Utf8 => (input, Format::Utf8 { how: detection.how }),
        Charset::Decoded(encoding) => (
            Input::Converted(Box::new(Transcode::new(input.into_read(), encoding, len))),
            Format::Decoded {
                encoding,
                how: detection.how,
            },
        ),
    };
    open_input(file, input, len, opts, resume, LIMITS, format)
}

/// Like [`open`] over any reader (stdin, tests, the fuzz targets): no resume, no known length.
pub fn open_stream(
    name: &str,
    mut input: Box<dyn Read + Send>,
    opts: &InputOptions,
) -> Result<(Layout, Reader), InputError> {
    let open_error = |source| InputError::Open {
        file: name.to_owned(),
        source,
    };
    let (head, eof) = read_head(&mut input, LIMITS.sample).map_err(open_error)?;
    if sheet::magic(&head).is_some() {
        return Err(InputError::SheetNotAFile {
            file: name.to_owned(),
            kind: "a ZIP or Office file",
        });
    }
    let detection = match opts.encoding {
        Some(encoding) if encoding != encoding_rs::UTF_8 => decode::Detection {
            charset: Charset::Decoded(encoding),
            how: "--encoding",
        },
        Some(_) => decode::Detection {
            charset: Charset::Utf8,
            how: "--encoding",
        },
        None => decode::detect(&head, eof, None).map_err(open_error)?,
    };
    let whole: Box<dyn Read + Send> = Box::new(Cursor::new(head).chain(input));
    let (input, format) = match detection.charset {
        Charset::Utf8 => (Input::Stream(whole), Format::Utf8 { how: detection.how }),
        Charset::Decoded(encoding) => (
            Input::Converted(Box::new(Transcode::new(whole, encoding, None))),
            Format::Decoded {
                encoding,
                how: detection.how,
            },
        ),
    };
    open_input(name.to_owned(), input, None, opts, None, LIMITS, format)
}

/// Reads up to `limit` bytes; `true` when that is the whole input.
fn read_head(input: &mut dyn Read, limit: usize) -> io::Result<(Vec<u8>, bool)> {
    let mut head = Vec::with_capacity(limit);
    input.take(limit as u64).read_to_end(&mut head)?;
    let eof = head.len() < limit;
    Ok((head, eof))
}

enum Input {
    /// A regular file of text read as it is, which we may seek in to resume.
    File(File),
    /// Text read as it is from a pipe: no resume.
    Stream(Box<dyn Read + Send>),
    /// Text converted from a regular file (decoded, or a sheet): resume skips converted bytes.
    Converted(Box<dyn Read + Send>),
}

impl Input {
    fn as_read(&mut self) -> &mut dyn Read {
        match self {
            Input::File(f) => f,
            Input::Stream(r) | Input::Converted(r) => r,
        }
    }

    fn into_read(self) -> Box<dyn Read + Send> {
        match self {
            Input::File(f) => Box::new(f),
            Input::Stream(r) | Input::Converted(r) => r,
        }
    }
}

/// The start of the input, kept so that nothing read for detection is lost.
struct Sample {
    bytes: Vec<u8>,
    bom: bool,
    delimiter: u8,
    /// Complete records of the sample (at most `SAMPLE_RECORDS + 1`), BOM excluded.
    records: Vec<csv::ByteRecord>,
}

impl Sample {
    fn bom_len(&self) -> usize {
        if self.bom {
            BOM.len()
        } else {
            0
        }
    }
}

/// Reads at least `limits.sample` bytes (or all), growing until it holds two complete records,
/// so that the header and the start of the next row are inside it.
fn read_sample(
    file: &str,
    input: &mut dyn Read,
    opts: &InputOptions,
    limits: Limits,
) -> Result<Sample, InputError> {
    let mut bytes = Vec::new();
    let mut eof = false;
    let mut target = limits.sample.max(BOM.len());
    loop {
        while !eof && bytes.len() < target {
            let filled = bytes.len();
            bytes.resize(target, 0);
            let n = loop {
                match input.read(&mut bytes[filled..]) {
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(source) => {
                        return Err(InputError::Open {
                            file: file.to_owned(),
                            source,
                        })
                    }
                    Ok(n) => break n,
                }
            };
            bytes.truncate(filled + n);
            eof = n == 0;
        }
        let bom = bytes.starts_with(BOM);
        let body = &bytes[if bom { BOM.len() } else { 0 }..];
        let delimiter = opts
            .delimiter
            .unwrap_or_else(|| detect::sniff_delimiter(body, eof));
        let records = detect::parse_sample(body, delimiter, eof, SAMPLE_RECORDS + 1);
        if eof || records.len() >= 2 || target >= limits.row {
            if !eof && records.is_empty() {
                let lead = body
                    .iter()
                    .take_while(|&&b| b == b'\r' || b == b'\n')
                    .count();
                return Err(InputError::RowTooLong {
                    file: file.to_owned(),
                    line: 1 + rows::line_breaks(&body[..lead]),
                    limit_mib: limits.row.div_ceil(1024 * 1024),
                });
            }
            return Ok(Sample {
                bytes,
                bom,
                delimiter,
                records,
            });
        }
        target = target.saturating_mul(2).min(limits.row);
    }
}

fn open_input(
    file: String,
    mut input: Input,
    len: Option<u64>,
    opts: &InputOptions,
    resume: Option<Resume>,
    limits: Limits,
    format: Format,
) -> Result<(Layout, Reader), InputError> {
    if let Some(d) = opts.delimiter {
        if matches!(d, b'"' | b'\r' | b'\n') {
            return Err(InputError::BadDelimiter { delimiter: d });
        }
    }
    if let (true, Some(ColumnSpec::Name(name))) = (opts.no_header, &opts.email_column) {
        return Err(InputError::NameWithoutHeader {
            file,
            name: name.clone(),
        });
    }
    let sample = read_sample(&file, input.as_read(), opts, limits)?;
    let converted = format.converted();
    let mut layout = decide_layout(&file, &sample, opts, format)?;

    let bom_len = sample.bom_len() as u64;
    let (delimiter, email_column, replace_from) =
        (layout.delimiter, layout.email_column, layout.replace_from);
    let config = |file: &str| rows::RowConfig {
        file: file.to_owned(),
        delimiter,
        email_column,
        replace_from,
        row_limit: limits.row,
        converted,
    };
    let (data_start, data_line) = if layout.has_header {
        // The sample holds the whole header row (read_sample made sure of it).
        let mut cursor = Cursor::new(sample.bytes.clone());
        cursor.set_position(bom_len);
        let mut header_rows = Reader::new(Box::new(cursor), bom_len, 1, config(&file), None);
        match header_rows.next() {
            Some(Ok(header)) => {
                let next = header.resume_after();
                layout.header = Some(header);
                (next.byte, next.line)
            }
            Some(Err(e)) => return Err(e),
            None => (bom_len, 1),
        }
    } else {
        (bom_len, 1)
    };

    let reader = match (resume, input) {
        (Some(at), Input::File(mut handle)) if at.byte > data_start => {
            let Some(len) = len else {
                return Err(InputError::NotSeekable { file });
            };
            if at.byte > len {
                return Err(InputError::ResumePastEnd {
                    file,
                    byte: at.byte,
                    line: at.line,
                    len,
                });
            }
            handle
                .seek(SeekFrom::Start(at.byte))
                .map_err(|source| InputError::Read {
                    file: file.clone(),
                    line: at.line,
                    source,
                })?;
            Reader::new(Box::new(handle), at.byte, at.line, config(&file), Some(len))
        }
        (Some(at), Input::Converted(mut stream)) if at.byte > data_start => {
            // Converted text cannot be sought in: convert again and skip what was done. The
            // sample already holds its first bytes.
            let have = sample.bytes.len() as u64;
            if at.byte <= have {
                let mut cursor = Cursor::new(sample.bytes);
                cursor.set_position(at.byte);
                let stream = Box::new(cursor.chain(stream));
                Reader::new(stream, at.byte, at.line, config(&file), len)
            } else {
                let skip = at.byte - have;
                let skipped =
                    io::copy(&mut (&mut stream).take(skip), &mut io::sink()).map_err(|source| {
                        InputError::Read {
                            file: file.clone(),
                            line: at.line,
                            source,
                        }
                    })?;
                if skipped < skip {
                    return Err(InputError::ResumePastEnd {
                        file,
                        byte: at.byte,
                        line: at.line,
                        len: have + skipped,
                    });
                }
                Reader::new(stream, at.byte, at.line, config(&file), len)
            }
        }
        (Some(_), Input::Stream(_)) if file == STDIN_NAME => return Err(InputError::StdinResume),
        (Some(_), Input::Stream(_)) => return Err(InputError::NotSeekable { file }),
        (_, input) => {
            // Chain the sample back in front of the rest so nothing read is lost.
            let mut cursor = Cursor::new(sample.bytes);
            cursor.set_position(data_start);
            let stream = Box::new(cursor.chain(input.into_read()));
            Reader::new(stream, data_start, data_line, config(&file), len)
        }
    };
    Ok((layout, reader))
}

/// Header, email column and annotation block from the sampled records.
fn decide_layout(
    file: &str,
    sample: &Sample,
    opts: &InputOptions,
    format: Format,
) -> Result<Layout, InputError> {
    let prefix = opts.column_prefix.as_deref();
    let records = &sample.records;
    let body = &sample.bytes[sample.bom_len()..];
    let mut layout = Layout {
        delimiter: sample.delimiter,
        has_header: false,
        header: None,
        headers: Vec::new(),
        email_column: 0,
        email_column_name: None,
        how_found: "single column",
        replace_from: None,
        terminator: detect::dominant_terminator(body),
        bom: sample.bom,
        format,
    };
    if records.is_empty() {
        // Nothing to read: any column will do, but a bad index is still a mistake.
        if let Some(ColumnSpec::Index(i)) = opts.email_column {
            if i == 0 {
                return Err(out_of_range(file, 0, Vec::new(), false));
            }
            layout.email_column = i - 1;
            layout.how_found = "--email-column";
        }
        return Ok(layout);
    }

    layout.has_header = match (&opts.email_column, opts.no_header) {
        (_, true) => false,
        (Some(ColumnSpec::Name(_)), false) => true,
        _ => detect::looks_like_header(records, prefix),
    };
    let first = detect::names(&records[0]);
    let data = if layout.has_header {
        layout.headers = first.clone();
        &records[1..]
    } else {
        &records[..]
    };
    let width = data
        .iter()
        .map(csv::ByteRecord::len)
        .chain([layout.headers.len()])
        .max()
        .unwrap_or(0);
    if layout.has_header {
        layout.replace_from = detect::replace_from(&layout.headers, prefix);
    }

    let (column, how) = match &opts.email_column {
        Some(ColumnSpec::Index(i)) => {
            if *i == 0 || *i > width {
                return Err(out_of_range(file, *i, first, layout.has_header));
            }
            (i - 1, "--email-column")
        }
        Some(ColumnSpec::Name(name)) => match find_named(&layout.headers, name) {
            Some(i) => (i, "--email-column"),
            None => {
                return Err(InputError::UnknownColumn {
                    file: file.to_owned(),
                    name: name.clone(),
                    headers: layout.headers,
                })
            }
        },
        None => {
            let headers = layout.has_header.then_some(&layout.headers[..]);
            let stop = layout.replace_from.unwrap_or(usize::MAX);
            detect::find_email_column(headers, data, width, stop, prefix).ok_or_else(|| {
                // Say "not a CSV" rather than list garbage as column names.
                if detect::looks_binary(body) {
                    return InputError::NotText {
                        file: file.to_owned(),
                        kind: detect::binary_kind(body),
                    };
                }
                InputError::NoEmailColumn {
                    file: file.to_owned(),
                    columns: first,
                    has_header: layout.has_header,
                }
            })?
        }
    };
    // The user may point at a column inside what looks like our annotation block: then keep
    // every column rather than cut away the addresses we read.
    if layout.replace_from.is_some_and(|from| column >= from) {
        layout.replace_from = None;
    }
    layout.email_column = column;
    layout.email_column_name = layout.headers.get(column).cloned();
    layout.how_found = how;
    Ok(layout)
}

fn out_of_range(file: &str, index: usize, columns: Vec<String>, has_header: bool) -> InputError {
    InputError::ColumnOutOfRange {
        file: file.to_owned(),
        index,
        columns,
        has_header,
    }
}

/// A header named by the user: exact, then trimmed, then normalised (case, spaces, punctuation).
fn find_named(headers: &[String], name: &str) -> Option<usize> {
    let normalized = detect::normalize_header(name);
    headers
        .iter()
        .position(|h| h == name)
        .or_else(|| headers.iter().position(|h| h.trim() == name.trim()))
        .or_else(|| {
            (!normalized.is_empty())
                .then(|| {
                    headers
                        .iter()
                        .position(|h| detect::normalize_header(h) == normalized)
                })
                .flatten()
        })
}

#[cfg(test)]
mod tests;
