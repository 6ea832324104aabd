//! The row stream: `csv` records paired with the exact bytes they came from.
//!
//! Owns the tee that remembers the not-yet-claimed input bytes, the recovery of each row's raw
//! bytes from the parser's byte positions, line numbering, the per-row size cap, and the
//! quote-aware cut of our old annotation columns (`Row::keep`).
//!
//! Must not: buffer more than one row (plus one read chunk) of input, change a single byte of a
//! row, or decide anything about the layout (that is `detect`'s job, done once in `open`).
//!
//! Why the one-row lookahead: the parser ends a record at the `\r` of a `\r\n` and swallows the
//! `\n` at the start of the next record, so a row's raw bytes are only known once the next
//! record (or the end of input) has been read.

use std::io::{self, Read};

use super::{InputError, Row};

/// Marker carried inside an `io::Error` when a row outgrows the cap.
#[derive(Debug)]
struct RowTooLong;

impl std::fmt::Display for RowTooLong {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("row too long")
    }
}

impl std::error::Error for RowTooLong {}

/// A reader that keeps a copy of every byte it hands out until the row reader claims it.
pub(super) struct Tee {
    inner: Box<dyn Read + Send>,
    /// Bytes read from `inner` and not yet dropped; `buf[0]` is at absolute offset `base`.
    buf: Vec<u8>,
    base: u64,
    /// `buf[..head]` is claimed (belongs to rows already built) and is dropped lazily on the next
    /// read, so the drain cost is paid once per chunk, not once per row.
    head: usize,
    /// Unclaimed bytes allowed before a read fails with [`RowTooLong`].
    limit: usize,
}

impl Tee {
    pub(super) fn new(inner: Box<dyn Read + Send>, base: u64, limit: usize) -> Tee {
        Tee {
            inner,
            buf: Vec::new(),
            base,
            head: 0,
            limit,
        }
    }

    /// The bytes at absolute offsets `start..end`, if still held.
    fn get(&self, start: u64, end: u64) -> Option<&[u8]> {
        let from = usize::try_from(start.checked_sub(self.base)?).ok()?;
        let to = usize::try_from(end.checked_sub(self.base)?).ok()?;
        self.buf.get(from..to)
    }

    /// Bytes from absolute offset `start` to the end of what has been read.
    fn unclaimed_from(&self, start: u64) -> &[u8] {
        let from = start
            .checked_sub(self.base)
            .and_then(|n| usize::try_from(n).ok())
            .unwrap_or(0);
        self.buf.get(from..).unwrap_or(&[])
    }

    /// Everything before absolute offset `end` may be dropped.
    fn claim(&mut self, end: u64) {
        let to = end
            .checked_sub(self.base)
            .and_then(|n| usize::try_from(n).ok())
            .unwrap_or(0);
        self.head = to.min(self.buf.len());
    }
}

impl Read for Tee {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if self.head > 0 {
            self.buf.drain(..self.head);
            self.base += self.head as u64;
            self.head = 0;
        }
        // The parser asks for more only after consuming everything it holds, so what is
        // unclaimed here is the row in progress: cap it.
        if self.buf.len() > self.limit {
            return Err(io::Error::other(RowTooLong));
        }
        let n = loop {
            match self.inner.read(out) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                other => break other?,
            }
        };
        self.buf.extend_from_slice(&out[..n]);
        Ok(n)
    }
}

/// How the row reader cuts rows; fixed by `open` from the layout.
pub(super) struct RowConfig {
    pub(super) file: String,
    pub(super) delimiter: u8,
    pub(super) email_column: usize,
    pub(super) replace_from: Option<usize>,
    pub(super) row_limit: usize,
    /// The text is converted from the file (decoded, or a sheet): its length is not the file's,
    /// and the converter checks the file's length itself.
    pub(super) converted: bool,
}

/// Streams the rows of a CSV input; see [`super::open`].
///
/// Blank lines (nothing between two line endings) are not rows: they are skipped and do not
/// appear in any `raw`. Line numbers still count them.
pub struct Reader {
    csv: csv::Reader<Tee>,
    record: csv::ByteRecord,
    /// Absolute offset of the first byte the parser sees.
    origin: u64,
    /// The last row read, held back until we know whether a `\n` completes its `\r`.
    pending: Option<Row>,
    /// Line number of the byte just after the last row taken.
    line: u64,
    config: RowConfig,
    /// Quote-aware scanner for `keep` and terminators, configured like the parser.
    scanner: csv_core::Reader,
    /// An error met while a row was pending: reported after that row.
    deferred: Option<InputError>,
    done: bool,
    source_len: Option<u64>,
}

impl std::fmt::Debug for Reader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reader")
            .field("file", &self.config.file)
            .field("bytes_read", &self.bytes_read())
            .field("line", &self.line)
            .finish_non_exhaustive()
    }
}

impl Reader {
    /// A reader over `input`, whose first byte is at absolute offset `origin` and on `line`.
    pub(super) fn new(
        input: Box<dyn Read + Send>,
        origin: u64,
        line: u64,
        config: RowConfig,
        source_len: Option<u64>,
    ) -> Reader {
        let tee = Tee::new(input, origin, config.row_limit);
        let csv = csv::ReaderBuilder::new()
            .has_headers(false)
            .flexible(true)
            .delimiter(config.delimiter)
            .buffer_capacity(64 * 1024)
            .from_reader(tee);
        let scanner = csv_core::ReaderBuilder::new()
            .delimiter(config.delimiter)
            .build();
        Reader {
            csv,
            record: csv::ByteRecord::new(),
            origin,
            pending: None,
            line,
            config,
            scanner,
            deferred: None,
            done: false,
            source_len,
        }
    }

    /// Absolute input offset the parser has reached: drives a progress bar.
    pub fn bytes_read(&self) -> u64 {
        self.origin + self.csv.position().byte()
    }

    /// Size of the input file, when known (not for stdin or pipes).
    pub fn source_len(&self) -> Option<u64> {
        self.source_len
    }

    /// Builds a row from the record just parsed and swaps it with the pending one.
    fn take_record(&mut self) -> Result<Option<Row>, InputError> {
        let start = self.origin
            + self
                .record
                .position()
                .map_or_else(|| self.csv.position().byte(), |p| p.byte());
        let end = self.origin + self.csv.position().byte();
        let Some(span) = self.csv.get_ref().get(start, end) else {
            return Err(InputError::Read {
                file: self.config.file.clone(),
                line: self.line,
                source: io::Error::other("internal error: lost track of the row's bytes"),
            });
        };
        let mut skip = 0;
        if let Some(prev) = &mut self.pending {
            if prev.raw.last() == Some(&b'\r') && span.first() == Some(&b'\n') {
                prev.raw.push(b'\n');
                skip = 1;
            }
        }
        let lead = span[skip..]
            .iter()
            .take_while(|&&b| b == b'\r' || b == b'\n')
            .count();
        let line = self.line + line_breaks(&span[skip..skip + lead]);
        let body = &span[skip + lead..];
        if body.is_empty() {
            // Only line endings: nothing to emit (the parser does not return such records,
            // this is defensive).
            self.line = line;
            self.csv.get_mut().claim(end);
            return Ok(None);
        }
        let row = Row {
            line,
            start: start + (skip + lead) as u64,
            raw: body.to_vec(),
            keep: 0,
            fields: self.record.len(),
            email: self
                .record
                .get(self.config.email_column)
                .map(<[u8]>::to_vec),
        };
        self.line = line + line_breaks(&row.raw);
        self.csv.get_mut().claim(end);
        Ok(self.pending.replace(row))
    }

    /// Sets `keep` once the row's raw bytes are final.
    fn finish(&mut self, mut row: Row, last: bool) -> Row {
        let mut content = row.raw.len() - terminator_len(&row.raw);
        // Only the last row can end inside an open quote (at end of input): then its trailing
        // line ending is data, not a terminator, and every line after the quote is part of one
        // field. The bytes pass through; the user is told which line to fix.
        if last && self.ends_in_open_quote(&row.raw) {
            content = row.raw.len();
            let last_line =
                row.line + line_breaks(&row.raw) - u64::from(terminator_len(&row.raw) > 0);
            tracing::warn!(
                "{}: the quote opened in the row at line {} is never closed, so lines {}-{} are \
                 one field of that row: kept as they are, not validated. Fix the quoting on \
                 line {} and run the same command again",
                self.config.file,
                row.line,
                row.line,
                last_line,
                row.line
            );
        }
        row.keep = match self.config.replace_from {
            Some(0) => 0,
            Some(k) if row.fields > k => {
                field_start(&mut self.scanner, &row.raw[..content], k).map_or(content, |s| s - 1)
            }
            _ => content,
        };
        row
    }

    /// True when the input ends inside a quoted field of `raw` (the last row): nothing, not even
    /// an added line ending, would end that record.
    fn ends_in_open_quote(&mut self, raw: &[u8]) -> bool {
        let mut probe = Vec::with_capacity(raw.len() + 1);
        probe.extend_from_slice(raw);
        probe.push(b'\n');
        !ends_record(&mut self.scanner, &probe)
    }

    /// The input changed under us: it ended at another offset than its size when opened (cut
    /// short or grown while it was read). The rows read so far may end with a torn one, so the
    /// one held back is dropped and the reader reports the change instead.
    fn check_length(&mut self) {
        let (Some(len), None, false) = (self.source_len, &self.deferred, self.config.converted)
        else {
            return;
        };
        let at = self.bytes_read();
        if at == len {
            return;
        }
        let line = self.pending.take().map_or(self.line, |row| row.line);
        self.deferred = Some(InputError::Changed {
            file: self.config.file.clone(),
            len,
            at,
            line,
        });
    }

    /// At the end of input the parser swallows a final `\n` without starting a record: give it
    /// to the last row when it completes that row's `\r\n`.
    fn complete_last_crlf(&mut self) {
        let Some(prev) = &mut self.pending else {
            return;
        };
        let end = prev.start + prev.raw.len() as u64;
        if prev.raw.last() == Some(&b'\r')
            && self.csv.get_ref().unclaimed_from(end).first() == Some(&b'\n')
        {
            prev.raw.push(b'\n');
        }
    }

    fn map_csv_error(&self, err: csv::Error) -> InputError {
        let file = self.config.file.clone();
        let source = match err.into_kind() {
            csv::ErrorKind::Io(e) => e,
            other => io::Error::other(format!("{other:?}")),
        };
        if source
            .get_ref()
            .is_some_and(|inner| inner.is::<RowTooLong>())
        {
            // The row in progress starts after any blank lines left in the tee.
            let end = self
                .pending
                .as_ref()
                .map_or(self.origin, |p| p.start + p.raw.len() as u64);
            let mut rest = self.csv.get_ref().unclaimed_from(end);
            if self
                .pending
                .as_ref()
                .is_some_and(|p| p.raw.ends_with(b"\r"))
                && rest.first() == Some(&b'\n')
            {
                rest = &rest[1..];
            }
            let lead = rest
                .iter()
                .take_while(|&&b| b == b'\r' || b == b'\n')
                .count();
            return InputError::RowTooLong {
                file,
                line: self.line + line_breaks(&rest[..lead]),
                limit_mib: self.config.row_limit.div_ceil(1024 * 1024),
            };
        }
        InputError::Read {
            file,
            line: self.line,
            source,
        }
    }
}

impl Iterator for Reader {
    type Item = Result<Row, InputError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if self.done {
                if let Some(row) = self.pending.take() {
                    return Some(Ok(self.finish(row, self.deferred.is_none())));
                }
                return self.deferred.take().map(Err);
            }
            match self.csv.read_byte_record(&mut self.record) {
                Ok(true) => match self.take_record() {
                    Ok(Some(prev)) => return Some(Ok(self.finish(prev, false))),
                    Ok(None) => {}
                    Err(e) => {
                        self.done = true;
                        self.deferred = Some(e);
                    }
                },
                Ok(false) => {
                    self.done = true;
                    self.complete_last_crlf();
                    self.check_length();
                }
                Err(e) => {
                    self.done = true;
                    self.deferred = Some(self.map_csv_error(e));
                    self.complete_last_crlf();
                }
            }
        }
    }
}

/// Line breaks in `bytes`: `\n`, `\r\n` and a lone `\r` each count once.
pub(super) fn line_breaks(bytes: &[u8]) -> u64 {
    // A vectorised search: a row's only break is usually its last byte.
    memchr::memchr2_iter(b'\n', b'\r', bytes)
        .filter(|&i| bytes[i] == b'\n' || bytes.get(i + 1) != Some(&b'\n'))
        .count() as u64
}

/// Length of the line ending at the end of `raw` (syntactically).
fn terminator_len(raw: &[u8]) -> usize {
    if raw.ends_with(b"\r\n") {
        2
    } else if raw.ends_with(b"\n") || raw.ends_with(b"\r") {
        1
    } else {
        0
    }
}

/// True when the parser ends the record in `raw` before running out of input, i.e. the final
/// line ending is a real terminator and not inside an unbalanced quote.
fn ends_record(scanner: &mut csv_core::Reader, raw: &[u8]) -> bool {
    use csv_core::ReadRecordResult as R;
    scanner.reset();
    let mut out = [0u8; 4096];
    let mut ends = [0usize; 64];
    let mut pos = 0;
    loop {
        let (res, nin, _, _) = scanner.read_record(&raw[pos..], &mut out, &mut ends);
        pos += nin;
        match res {
            R::Record => return true,
            R::OutputFull | R::OutputEndsFull => {}
            R::InputEmpty | R::End => return false,
        }
    }
}

/// Byte offset in `content` (a row without its terminator) where field `k` (0-based, k >= 1)
/// starts, if the row has that many fields. The delimiter before it is at `offset - 1`.
fn field_start(scanner: &mut csv_core::Reader, content: &[u8], k: usize) -> Option<usize> {
    use csv_core::ReadFieldResult as F;
    scanner.reset();
    let mut out = [0u8; 4096];
    let mut pos = 0;
    let mut fields = 0;
    loop {
        let (res, nin, _) = scanner.read_field(&content[pos..], &mut out);
        pos += nin;
        match res {
            F::Field { record_end } => {
                fields += 1;
                if record_end {
                    return None;
                }
                if fields == k {
                    return Some(pos);
                }
            }
            F::OutputFull => {}
            // Input exhausted before the k-th delimiter: the row has at most k fields.
            F::InputEmpty | F::End => return None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_breaks_table() {
        let cases: &[(&[u8], u64)] = &[
            (b"", 0),
            (b"a", 0),
            (b"a\n", 1),
            (b"a\r\n", 1),
            (b"a\r", 1),
            (b"\r\r\n\n", 3),
            (b"\"x\ny\"\r\n", 2),
        ];
        for (bytes, want) in cases {
            assert_eq!(line_breaks(bytes), *want, "{bytes:?}");
        }
        // Every arrangement of up to eight bytes of `a`, `\r` and `\n`, against the rule
        // counted byte by byte.
        for len in 0..=8u32 {
            for mut n in 0..3u32.pow(len) {
                let bytes: Vec<u8> = (0..len)
                    .map(|_| {
                        let b = [b'a', b'\r', b'\n'][(n % 3) as usize];
                        n /= 3;
                        b
                    })
                    .collect();
                let want = (0..bytes.len())
                    .filter(|&i| {
                        bytes[i] == b'\n' || (bytes[i] == b'\r' && bytes.get(i + 1) != Some(&b'\n'))
                    })
                    .count() as u64;
                assert_eq!(line_breaks(&bytes), want, "{bytes:?}");
            }
        }
    }

    #[test]
    fn field_start_table() {
        let cases: &[(&[u8], usize, Option<usize>)] = &[
            (b"a,b,c", 1, Some(2)),
            (b"a,b,c", 2, Some(4)),
            (b"a,b,c", 3, None),
            (b"\"a,1\",b,c", 1, Some(6)),
            (b"\"a\nb\",\"x,\"\"y\",c", 2, Some(14)),
            (b"a\"b,c", 1, Some(4)),
            (b"a,", 1, Some(2)),
            (b"", 1, None),
        ];
        let mut scanner = csv_core::Reader::new();
        for (content, k, want) in cases {
            assert_eq!(
                field_start(&mut scanner, content, *k),
                *want,
                "{content:?} {k}"
            );
        }
    }

    #[test]
    fn ends_record_table() {
        let cases: &[(&[u8], bool)] = &[
            (b"a,b\n", true),
            (b"a,b\r\n", true),
            (b"a,b\r", true),
            (b"a,\"b\n", false),
            (b"a,\"b\"\"\n", false),
            (b"a,\"b\"\n", true),
        ];
        let mut scanner = csv_core::Reader::new();
        for (raw, want) in cases {
            assert_eq!(ends_record(&mut scanner, raw), *want, "{raw:?}");
        }
    }
}
