//! Text encodings: which one a file is in, and a reader that turns it into UTF-8.
//!
//! Owns the decision (byte order mark, then UTF-8 validity, then `chardetng`'s guess among the
//! legacy encodings) and the streaming transcoder (`encoding_rs`).
//!
//! Must not: look at CSV structure, or decode a file that is UTF-8: those pass through as bytes,
//! so that a stray invalid byte in a UTF-8 file stays exactly as it was.
//!
//! The rule for a mix, decided on the evidence (the first 64 KiB; for a regular file whose start
//! is plain ASCII, up to 256 KiB of later blocks holding other bytes): the file is UTF-8 when it
//! has no invalid sequence, or at least as many valid multi-byte characters as invalid
//! sequences. Windows-1252 text almost never forms valid UTF-8 pairs, so a file of accented
//! letters in a legacy encoding is recognised, while a UTF-8 file with a few damaged bytes is
//! not turned into mojibake.

use std::io::{self, Read};

use encoding_rs::{CoderResult, Decoder, Encoding, UTF_16BE, UTF_16LE, UTF_8};

/// How the input's bytes become the text that rows are cut from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Charset {
    /// UTF-8 (or ASCII): bytes are read as they are.
    Utf8,
    /// Transcoded from this encoding to UTF-8.
    Decoded(&'static Encoding),
}

/// Which charset, and how we know.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Detection {
    pub charset: Charset,
    /// "byte order mark", "valid UTF-8", "mostly UTF-8", "guessed from the content", "--encoding".
    pub how: &'static str,
}

/// Evidence collected past the first sample, at most this many bytes.
const EVIDENCE_BYTES: usize = 256 * 1024;
const CHUNK: usize = 64 * 1024;

/// Decides the charset from the start of the input (`head`, `eof` when it is the whole input)
/// and, when the start is plain ASCII, from later blocks read from `rest` (a regular file).
pub fn detect(head: &[u8], eof: bool, rest: Option<&mut dyn Read>) -> io::Result<Detection> {
    if head.starts_with(b"\xEF\xBB\xBF") {
        return Ok(found(Charset::Utf8, "byte order mark"));
    }
    if let Some((encoding, _)) = Encoding::for_bom(head) {
        return Ok(found(Charset::Decoded(encoding), "byte order mark"));
    }
    if let Some(encoding) = utf16_without_bom(head) {
        return Ok(found(
            Charset::Decoded(encoding),
            "guessed from the content",
        ));
    }
    if super::detect::looks_binary(head) {
        // Not text at all: leave the bytes alone so the "not a CSV" check sees them.
        return Ok(found(Charset::Utf8, "not text"));
    }
    let mut tally = Tally::default();
    let mut guess = chardetng::EncodingDetector::new();
    let carry = tally.add(head, eof);
    guess.feed(head, eof);
    if let (true, false, Some(rest)) = (head.is_ascii(), eof, rest) {
        let mut buf = vec![0u8; CHUNK];
        let mut kept = 0;
        // The head is ASCII: nothing of it is left over.
        let mut carry: Vec<u8> = head[head.len() - carry..].to_vec();
        while kept < EVIDENCE_BYTES {
            let n = read_full(rest, &mut buf)?;
            let chunk = &buf[..n];
            if !chunk.is_ascii() || !carry.is_empty() {
                let mut joined = std::mem::take(&mut carry);
                joined.extend_from_slice(chunk);
                let left = tally.add(&joined, n == 0);
                carry = joined[joined.len() - left..].to_vec();
                guess.feed(&joined[..joined.len() - left], false);
                kept += n;
            }
            if n == 0 {
                break;
            }
        }
        guess.feed(b"", true);
    }
    if tally.invalid == 0 {
        return Ok(found(Charset::Utf8, "valid UTF-8"));
    }
    if tally.multibyte >= tally.invalid {
        return Ok(found(Charset::Utf8, "mostly UTF-8"));
    }
    let encoding = guess.guess(None, false);
    Ok(found(
        if encoding == UTF_8 {
            Charset::Utf8
        } else {
            Charset::Decoded(encoding)
        },
        "guessed from the content",
    ))
}

fn found(charset: Charset, how: &'static str) -> Detection {
    Detection { charset, how }
}

fn read_full(input: &mut dyn Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match input.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// UTF-16 saved without a byte order mark: text whose every other byte is zero. Needs a fair
/// amount of text (32 bytes) and nearly all zeros on one side, none on the other.
fn utf16_without_bom(head: &[u8]) -> Option<&'static Encoding> {
    let pairs = head.len().min(4096) / 2;
    if pairs < 16 {
        return None;
    }
    let (mut even, mut odd) = (0, 0);
    for pair in head[..pairs * 2].chunks_exact(2) {
        even += usize::from(pair[0] == 0);
        odd += usize::from(pair[1] == 0);
    }
    let most = pairs * 9 / 10;
    match (even, odd) {
        (0, o) if o >= most => Some(UTF_16LE),
        (e, 0) if e >= most => Some(UTF_16BE),
        _ => None,
    }
}

/// Valid multi-byte characters and invalid sequences seen.
#[derive(Debug, Default)]
struct Tally {
    multibyte: u64,
    invalid: u64,
}

impl Tally {
    /// Counts `bytes`; returns how many bytes at the end are an incomplete sequence left for the
    /// next block (0 at the end of input, where it counts as invalid).
    fn add(&mut self, bytes: &[u8], at_end: bool) -> usize {
        let mut rest = bytes;
        loop {
            match std::str::from_utf8(rest) {
                Ok(text) => {
                    self.multibyte += lead_bytes(text.as_bytes());
                    return 0;
                }
                Err(e) => {
                    self.multibyte += lead_bytes(&rest[..e.valid_up_to()]);
                    match e.error_len() {
                        Some(n) => {
                            self.invalid += 1;
                            rest = &rest[e.valid_up_to() + n..];
                        }
                        None if at_end => {
                            self.invalid += 1;
                            return 0;
                        }
                        None => return rest.len() - e.valid_up_to(),
                    }
                }
            }
        }
    }
}

fn lead_bytes(valid: &[u8]) -> u64 {
    valid.iter().filter(|&&b| b >= 0xC0).count() as u64
}

/// Reads `inner` in `encoding` and yields UTF-8 (a byte order mark of that encoding is dropped;
/// malformed sequences become U+FFFD). When `expect_len` is given, reading must end exactly
/// there: a file that grew or shrank while it was read is an error, not a silently different
/// output.
pub struct Transcode {
    inner: Box<dyn Read + Send>,
    decoder: Decoder,
    input: Vec<u8>,
    /// `input[start..end]` is read and not yet decoded.
    start: usize,
    end: usize,
    eof: bool,
    output: Vec<u8>,
    /// `output[taken..]` is decoded and not yet handed out.
    taken: usize,
    finished: bool,
    consumed: u64,
    expect_len: Option<u64>,
}

impl Transcode {
    pub fn new(
        inner: Box<dyn Read + Send>,
        encoding: &'static Encoding,
        expect_len: Option<u64>,
    ) -> Transcode {
        Transcode {
            inner,
            decoder: encoding.new_decoder_with_bom_removal(),
            input: vec![0; CHUNK],
            start: 0,
            end: 0,
            eof: false,
            output: Vec::with_capacity(CHUNK * 3 + 16),
            taken: 0,
            finished: false,
            consumed: 0,
            expect_len,
        }
    }
}

impl Read for Transcode {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        loop {
            if self.taken < self.output.len() {
                let n = out.len().min(self.output.len() - self.taken);
                out[..n].copy_from_slice(&self.output[self.taken..self.taken + n]);
                self.taken += n;
                return Ok(n);
            }
            if self.finished || out.is_empty() {
                return Ok(0);
            }
            if self.start == self.end && !self.eof {
                let n = loop {
                    match self.inner.read(&mut self.input) {
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        other => break other?,
                    }
                };
                self.consumed += n as u64;
                self.start = 0;
                self.end = n;
                self.eof = n == 0;
                if let (true, Some(len)) = (self.eof, self.expect_len) {
                    if self.consumed != len {
                        return Err(io::Error::other(format!(
                            "the file changed while it was being read: it had {len} bytes when \
                             the run started, but reading ended at byte {}; wait until nothing \
                             writes to it any more, then run again with --restart",
                            self.consumed
                        )));
                    }
                }
            }
            self.output.clear();
            self.taken = 0;
            let room = self
                .decoder
                .max_utf8_buffer_length(self.end - self.start)
                .unwrap_or(CHUNK * 3)
                .max(16);
            self.output.resize(room, 0);
            let (result, read, written, _) = self.decoder.decode_to_utf8(
                &self.input[self.start..self.end],
                &mut self.output,
                self.eof,
            );
            self.start += read;
            self.output.truncate(written);
            if self.eof && result == CoderResult::InputEmpty && self.start == self.end {
                self.finished = true;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use encoding_rs::WINDOWS_1252;

    fn decide(bytes: &[u8]) -> Detection {
        detect(bytes, true, None).unwrap()
    }

    #[test]
    fn detection_table() {
        let utf16le: Vec<u8> = "email\r\njane@acme.com\r\n"
            .encode_utf16()
            .flat_map(u16::to_le_bytes)
            .collect();
        let utf16be: Vec<u8> = "email\r\njane@acme.com\r\n"
            .encode_utf16()
            .flat_map(u16::to_be_bytes)
            .collect();
        let with_bom = |bom: &[u8], body: &[u8]| [bom, body].concat();
        let cases: Vec<(&str, Vec<u8>, Charset, &str)> = vec![
            ("ascii", b"email\njane@acme.com\n".to_vec(), Charset::Utf8, "valid UTF-8"),
            ("utf8", "email\njosé@acme.com\n".into(), Charset::Utf8, "valid UTF-8"),
            (
                "utf8 bom",
                b"\xEF\xBB\xBFemail\nJ\xF6rg\n".to_vec(),
                Charset::Utf8,
                "byte order mark",
            ),
            (
                "utf16le bom",
                with_bom(b"\xFF\xFE", &utf16le),
                Charset::Decoded(UTF_16LE),
                "byte order mark",
            ),
            (
                "utf16be bom",
                with_bom(b"\xFE\xFF", &utf16be),
                Charset::Decoded(UTF_16BE),
                "byte order mark",
            ),
            (
                "utf16le bare",
                utf16le.clone(),
                Charset::Decoded(UTF_16LE),
                "guessed from the content",
            ),
            (
                "cp1252",
                b"name;email\r\nJos\xe9;jos\xe9@acme-corp.com\r\nZo\xeb;\x93Zo\xeb\x94 <zoe@acme-corp.com>\xa0\r\n"
                    .to_vec(),
                Charset::Decoded(WINDOWS_1252),
                "guessed from the content",
            ),
            // Mostly UTF-8, one damaged byte: stays UTF-8 (the byte passes through).
            (
                "utf8 with a bad byte",
                "name\nJosé\nZoë\nMüller\n\u{fc}\n"
                    .bytes()
                    .chain([0xE9, b'\n'])
                    .collect(),
                Charset::Utf8,
                "mostly UTF-8",
            ),
        ];
        for (name, bytes, charset, how) in cases {
            let got = decide(&bytes);
            assert_eq!((got.charset, got.how), (charset, how), "{name}");
        }
    }

    #[test]
    fn a_legacy_byte_far_into_an_ascii_file_is_found() {
        let mut file = b"email\n".to_vec();
        while file.len() < 300 * 1024 {
            file.extend_from_slice(b"someone@acme-corp.com\n");
        }
        let head = file[..CHUNK].to_vec();
        file.extend_from_slice(b"Jos\xe9 <jos\xe9@acme-corp.com>\n");
        let mut rest = &file[CHUNK..];
        let got = detect(&head, false, Some(&mut rest)).unwrap();
        assert_eq!(got.charset, Charset::Decoded(WINDOWS_1252));
        // Without looking further, the start alone says UTF-8.
        assert_eq!(detect(&head, false, None).unwrap().charset, Charset::Utf8);
    }

    #[test]
    fn a_sequence_cut_by_a_block_boundary_is_not_invalid() {
        let mut t = Tally::default();
        let bytes = "aé".as_bytes();
        let left = t.add(&bytes[..2], false);
        assert_eq!((left, t.invalid), (1, 0));
        t.add(&bytes[1..], true);
        assert_eq!((t.multibyte, t.invalid), (1, 0));
    }

    #[test]
    fn transcoding_survives_any_read_size() {
        let text = "name\temail\r\nZoë\t\u{201c}zoe@acme-corp.com\u{201d}\r\n".repeat(5000);
        let mut bytes = vec![0xFF, 0xFE];
        bytes.extend(text.encode_utf16().flat_map(u16::to_le_bytes));
        for size in [1, 3, 7, 4096, 1 << 20] {
            let len = bytes.len() as u64;
            let mut t = Transcode::new(
                Box::new(io::Cursor::new(bytes.clone())),
                UTF_16LE,
                Some(len),
            );
            let mut out = Vec::new();
            let mut buf = vec![0; size];
            loop {
                let n = t.read(&mut buf).unwrap();
                if n == 0 {
                    break;
                }
                out.extend_from_slice(&buf[..n]);
            }
            assert_eq!(String::from_utf8(out).unwrap(), text, "read size {size}");
        }
    }

    #[test]
    fn a_file_that_changed_length_is_an_error() {
        let bytes = b"Jos\xe9\n".to_vec();
        let mut t = Transcode::new(Box::new(io::Cursor::new(bytes)), WINDOWS_1252, Some(99));
        let mut out = String::new();
        let err = t.read_to_string(&mut out).unwrap_err();
        assert!(err.to_string().contains("changed"), "{err}");
    }
}
