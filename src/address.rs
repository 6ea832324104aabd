//! Address normalisation and the local syntax check: what may be sent to the API.
//!
//! Owns: turning one raw CSV cell into either nothing (`Empty`), a verdict we can give for free
//! (`Invalid`, never sent: the API would charge for it), or a normalised [`Address`] whose `key`
//! is the dedupe/cache identity.
//!
//! Must not: do I/O, allocate more than needed on the common path (a bench requires at least
//! 2,000,000 checks/s on plain ASCII addresses, so no regex and two allocations at most), or
//! panic on any input bytes. It knows nothing about CSV, the cache or the API client.
//!
//! The syntax accepted is the practical subset of RFC 5321/5322 that mail providers accept,
//! plus RFC 6531 (non-ASCII local parts). Quoted local parts, IP-literal domains and comments are
//! rejected on purpose: real mailboxes practically never use them and the API charges for them.

/// The outcome of [`check`] for one cell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Checked {
    /// Cell missing, blank, or only whitespace/quotes.
    Empty,
    /// Fails the local syntax check: never sent to the API.
    Invalid {
        /// The cell after trimming and extraction (best effort), for the output.
        normalized: String,
        /// Short human reason, e.g. "missing @".
        reason: &'static str,
    },
    /// Passes the syntax check.
    Valid(Address),
}

/// A syntactically valid, normalised address.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Address {
    /// What we send and print: local part as written, domain lower-cased, IDN as ASCII (punycode).
    pub normalized: String,
    /// `normalized`, fully lower-cased: the dedupe/cache key.
    pub key: String,
}

const MAX_LOCAL: usize = 64;
const MAX_DOMAIN: usize = 253;
const MAX_LABEL: usize = 63;
const MAX_ADDRESS: usize = 254;

/// Normalises and checks one raw cell (bytes as they appear in the CSV field, unescaped).
///
/// Normalisation: trim ASCII and Unicode whitespace (NBSP, zero-width space, BOM...), strip
/// surrounding quotes, `mailto:` (any case, `?query` dropped), `Name <addr>` (the part inside
/// the angle brackets) and trailing `.` `,` `;` left by copy-paste; lower-case the domain and
/// convert a non-ASCII domain to ASCII (punycode). Never panics.
pub fn check(raw: &[u8]) -> Checked {
    let text = match std::str::from_utf8(raw) {
        Ok(text) => text,
        Err(_) => {
            let lossy = String::from_utf8_lossy(raw);
            let cleaned = extract(&lossy);
            if is_blank(cleaned) {
                return Checked::Empty;
            }
            return invalid(cleaned, "not valid UTF-8");
        }
    };
    let s = extract(text);
    if is_blank(s) {
        return Checked::Empty;
    }
    check_syntax(s)
}

/// Peels copy-paste wrappers off a cell; every step shrinks the slice, so the loop ends.
fn extract(mut s: &str) -> &str {
    loop {
        s = s.trim_matches(is_trim_char);
        if let Some(inner) = strip_quote_pair(s) {
            s = inner;
            continue;
        }
        if s.len() >= 7 && s.as_bytes()[..7].eq_ignore_ascii_case(b"mailto:") {
            // The 7 bytes are ASCII, so index 7 is a char boundary.
            s = &s[7..];
            if let Some(q) = s.find('?') {
                s = &s[..q];
            }
            continue;
        }
        if let Some(lt) = s.rfind('<') {
            if let Some(len) = s[lt + 1..].find('>') {
                s = &s[lt + 1..lt + 1 + len];
                continue;
            }
        }
        let t = s.trim_end_matches(['.', ',', ';']);
        if t.len() != s.len() {
            s = t;
            continue;
        }
        return s;
    }
}

/// Whitespace in the Unicode sense plus the invisible characters spreadsheets and web pages
/// leave around copied addresses (zero-width space/joiners, word joiner, BOM).
fn is_trim_char(c: char) -> bool {
    c.is_whitespace() || is_invisible(c)
}

fn is_invisible(c: char) -> bool {
    matches!(
        c,
        '\u{200B}' | '\u{200C}' | '\u{200D}' | '\u{2060}' | '\u{FEFF}' | '\u{00AD}'
    )
}

fn is_quote_char(c: char) -> bool {
    matches!(
        c,
        '"' | '\''
            | '`'
            | '\u{201C}'
            | '\u{201D}'
            | '\u{2018}'
            | '\u{2019}'
            | '\u{00AB}'
            | '\u{00BB}'
    )
}

/// Strips one pair of matching surrounding quotes, straight or typographic.
fn strip_quote_pair(s: &str) -> Option<&str> {
    const PAIRS: [(char, char); 7] = [
        ('"', '"'),
        ('\'', '\''),
        ('`', '`'),
        ('\u{201C}', '\u{201D}'),
        ('\u{2018}', '\u{2019}'),
        ('\u{00AB}', '\u{00BB}'),
        ('\u{201E}', '\u{201C}'),
    ];
    let mut chars = s.chars();
    let first = chars.next()?;
    let last = chars.next_back()?;
    PAIRS
        .iter()
        .find(|&&(open, close)| first == open && last == close)
        .map(|_| &s[first.len_utf8()..s.len() - last.len_utf8()])
}

/// Blank means nothing but whitespace and quote characters is left.
fn is_blank(s: &str) -> bool {
    s.chars().all(|c| is_trim_char(c) || is_quote_char(c))
}

fn invalid(normalized: &str, reason: &'static str) -> Checked {
    Checked::Invalid {
        normalized: normalized.to_owned(),
        reason,
    }
}

/// RFC 5322 atext (ASCII part); non-ASCII is allowed separately (RFC 6531).
fn is_atext(b: u8) -> bool {
    b.is_ascii_alphanumeric()
        || matches!(
            b,
            b'!' | b'#'
                | b'$'
                | b'%'
                | b'&'
                | b'\''
                | b'*'
                | b'+'
                | b'/'
                | b'='
                | b'?'
                | b'^'
                | b'_'
                | b'`'
                | b'{'
                | b'|'
                | b'}'
                | b'~'
                | b'-'
        )
}

fn check_syntax(s: &str) -> Checked {
    let bytes = s.as_bytes();
    let mut first_at = None;
    let mut ats = 0usize;
    let mut ascii = true;
    let mut space = false;
    let mut control = false;
    for (i, &b) in bytes.iter().enumerate() {
        match b {
            b'@' => {
                ats += 1;
                first_at.get_or_insert(i);
            }
            b' ' => space = true,
            0..=0x1f | 0x7f => control = true,
            0x80.. => ascii = false,
            _ => {}
        }
    }
    let mut invisible = false;
    if !ascii {
        for c in s.chars() {
            if c.is_control() {
                control = true;
            } else if c.is_whitespace() {
                space = true;
            } else if is_invisible(c) {
                invisible = true;
            }
        }
    }
    if control {
        return invalid(s, "contains a control character");
    }
    if bytes.first() == Some(&b'"') {
        return invalid(s, "quoted local part not accepted");
    }
    if space {
        return invalid(s, "contains a space");
    }
    if invisible {
        return invalid(s, "contains an invisible character");
    }
    let at = match first_at {
        None => return invalid(s, "missing @"),
        Some(_) if ats > 1 => return invalid(s, "more than one @"),
        Some(at) => at,
    };
    let local = &s[..at];
    let domain = &s[at + 1..];
    if let Err(reason) = check_local(local) {
        return invalid(s, reason);
    }
    if domain.is_empty() {
        return invalid(s, "nothing after @");
    }
    if domain.starts_with('[') {
        return invalid(s, "IP-literal domain not accepted");
    }

    let mut normalized = String::with_capacity(s.len());
    normalized.push_str(local);
    normalized.push('@');
    if domain.is_ascii() {
        // Fast path: no idna for the common case.
        normalized.extend(domain.bytes().map(|b| char::from(b.to_ascii_lowercase())));
    } else {
        match idna::domain_to_ascii(domain) {
            Ok(ascii) => normalized.push_str(&ascii),
            Err(_) => return invalid(s, "invalid international domain name"),
        }
    }
    if let Err(reason) = check_domain(&normalized[local.len() + 1..]) {
        return Checked::Invalid { normalized, reason };
    }
    if normalized.len() > MAX_ADDRESS {
        return Checked::Invalid {
            normalized,
            reason: "address longer than 254 characters",
        };
    }
    let key = if normalized.is_ascii() {
        normalized.to_ascii_lowercase()
    } else {
        normalized.to_lowercase()
    };
    Checked::Valid(Address { normalized, key })
}

fn check_local(local: &str) -> Result<(), &'static str> {
    let bytes = local.as_bytes();
    if bytes.is_empty() {
        return Err("nothing before @");
    }
    if bytes.len() > MAX_LOCAL {
        return Err("local part longer than 64 characters");
    }
    if bytes[0] == b'.' {
        return Err("local part starts with a dot");
    }
    if bytes[bytes.len() - 1] == b'.' {
        return Err("local part ends with a dot");
    }
    let mut prev_dot = false;
    for &b in bytes {
        if b == b'.' {
            if prev_dot {
                return Err("local part has two dots in a row");
            }
            prev_dot = true;
            continue;
        }
        prev_dot = false;
        if b == b'"' {
            return Err("quoted local part not accepted");
        }
        // Bytes >= 0x80 belong to non-ASCII characters, already screened for spaces/controls.
        if b < 0x80 && !is_atext(b) {
            return Err("forbidden character in local part");
        }
    }
    Ok(())
}

/// Checks an ASCII (post-IDN), lower-cased domain.
fn check_domain(domain: &str) -> Result<(), &'static str> {
    if domain.is_empty() {
        return Err("nothing after @");
    }
    if domain.len() > MAX_DOMAIN {
        return Err("domain longer than 253 characters");
    }
    if domain.starts_with('.') {
        return Err("domain starts with a dot");
    }
    if !domain.contains('.') {
        return Err("domain has no dot");
    }
    let mut last = "";
    for label in domain.split('.') {
        if label.is_empty() {
            return Err("domain has an empty label (two dots in a row)");
        }
        if label.len() > MAX_LABEL {
            return Err("domain label longer than 63 characters");
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        {
            return Err("forbidden character in domain");
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err("domain label starts or ends with a hyphen");
        }
        last = label;
    }
    if last.bytes().all(|b| b.is_ascii_digit()) {
        return Err("top-level domain is numeric");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    fn valid(raw: &str) -> (String, String) {
        match check(raw.as_bytes()) {
            Checked::Valid(a) => (a.normalized, a.key),
            other => panic!("{raw:?}: expected valid, got {other:?}"),
        }
    }

    #[test]
    fn normalisation_table() {
        let cases: &[(&str, &str, &str)] = &[
            // raw, normalized, key
            (
                "jane@acme-corp.com",
                "jane@acme-corp.com",
                "jane@acme-corp.com",
            ),
            (
                "  jane@acme-corp.com\t",
                "jane@acme-corp.com",
                "jane@acme-corp.com",
            ),
            (
                "\u{a0}jane@acme-corp.com\u{a0}",
                "jane@acme-corp.com",
                "jane@acme-corp.com",
            ),
            (
                "\u{200b}jane@acme-corp.com\u{feff}",
                "jane@acme-corp.com",
                "jane@acme-corp.com",
            ),
            (
                "\u{feff}jane@acme-corp.com",
                "jane@acme-corp.com",
                "jane@acme-corp.com",
            ),
            (
                "Jane.Doe@ACME-Corp.COM",
                "Jane.Doe@acme-corp.com",
                "jane.doe@acme-corp.com",
            ),
            (
                "\"jane@acme-corp.com\"",
                "jane@acme-corp.com",
                "jane@acme-corp.com",
            ),
            (
                "'jane@acme-corp.com'",
                "jane@acme-corp.com",
                "jane@acme-corp.com",
            ),
            (
                "\u{201c}jane@acme-corp.com\u{201d}",
                "jane@acme-corp.com",
                "jane@acme-corp.com",
            ),
            (
                "mailto:jane@acme-corp.com",
                "jane@acme-corp.com",
                "jane@acme-corp.com",
            ),
            (
                "MAILTO:jane@acme-corp.com",
                "jane@acme-corp.com",
                "jane@acme-corp.com",
            ),
            (
                "MailTo:jane@acme-corp.com?subject=hi",
                "jane@acme-corp.com",
                "jane@acme-corp.com",
            ),
            (
                "Jane Doe <jane@acme-corp.com>",
                "jane@acme-corp.com",
                "jane@acme-corp.com",
            ),
            (
                "\"Doe, Jane\" <jane@acme-corp.com>",
                "jane@acme-corp.com",
                "jane@acme-corp.com",
            ),
            (
                "<mailto:jane@acme-corp.com>",
                "jane@acme-corp.com",
                "jane@acme-corp.com",
            ),
            (
                "jane@acme-corp.com.",
                "jane@acme-corp.com",
                "jane@acme-corp.com",
            ),
            (
                "jane@acme-corp.com,",
                "jane@acme-corp.com",
                "jane@acme-corp.com",
            ),
            (
                "jane@acme-corp.com;",
                "jane@acme-corp.com",
                "jane@acme-corp.com",
            ),
            (
                "jane@acme-corp.com ;",
                "jane@acme-corp.com",
                "jane@acme-corp.com",
            ),
            (
                "Jane <jane@acme-corp.com>,",
                "jane@acme-corp.com",
                "jane@acme-corp.com",
            ),
            (
                "o'brien@northwind.io",
                "o'brien@northwind.io",
                "o'brien@northwind.io",
            ),
            (
                "a+tag@northwind.io",
                "a+tag@northwind.io",
                "a+tag@northwind.io",
            ),
            (
                "user@bücher.de",
                "user@xn--bcher-kva.de",
                "user@xn--bcher-kva.de",
            ),
            (
                "user@BÜCHER.de",
                "user@xn--bcher-kva.de",
                "user@xn--bcher-kva.de",
            ),
            (
                "user@xn--bcher-kva.de",
                "user@xn--bcher-kva.de",
                "user@xn--bcher-kva.de",
            ),
            (
                "José@acme-corp.com",
                "José@acme-corp.com",
                "josé@acme-corp.com",
            ),
            (
                "ÉMILE@acme-corp.com",
                "ÉMILE@acme-corp.com",
                "émile@acme-corp.com",
            ),
            (
                "用户@例子.广告",
                "用户@xn--fsqu00a.xn--4rr70v",
                "用户@xn--fsqu00a.xn--4rr70v",
            ),
            ("x@a.b.c.d.e.co", "x@a.b.c.d.e.co", "x@a.b.c.d.e.co"),
            ("1@2.com", "1@2.com", "1@2.com"),
            (
                "!#$%&'*+/=?^_`{|}~-@x.io",
                "!#$%&'*+/=?^_`{|}~-@x.io",
                "!#$%&'*+/=?^_`{|}~-@x.io",
            ),
        ];
        for (raw, normalized, key) in cases {
            assert_eq!(
                valid(raw),
                (normalized.to_string(), key.to_string()),
                "{raw:?}"
            );
        }
    }

    #[test]
    fn empty_table() {
        let cases: &[&[u8]] = &[
            b"",
            b"   ",
            b"\t\r\n",
            b"\"\"",
            b"\"",
            b"''",
            b"\" \"",
            "\u{a0}\u{200b}".as_bytes(),
            b"<>",
            b"mailto:",
        ];
        for raw in cases {
            assert_eq!(
                check(raw),
                Checked::Empty,
                "{:?}",
                String::from_utf8_lossy(raw)
            );
        }
    }

    #[test]
    fn invalid_table() {
        let long_local = format!("{}@x.com", "a".repeat(65));
        let long_label = format!("a@{}.com", "b".repeat(64));
        let max_address = format!("a@{}co", "abcdefghi.".repeat(25)); // 1 + 1 + 252 = 254 ok
        let too_long_domain = format!("a@{}comx", "abcdefghi.".repeat(25)); // 254
        let long_address = format!("{}@{}com", "a".repeat(64), "abcdefghi.".repeat(19)); // 64+1+193
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (b"\xff\xfe@x.com".to_vec(), "not valid UTF-8"),
            (b"jane.acme-corp.com".to_vec(), "missing @"),
            (b"jane@@acme-corp.com".to_vec(), "more than one @"),
            (b"a@b@acme-corp.com".to_vec(), "more than one @"),
            (b"jane doe@acme-corp.com".to_vec(), "contains a space"),
            (b"John Doe jane@acme-corp.com".to_vec(), "contains a space"),
            (
                "jane\u{a0}doe@acme-corp.com".as_bytes().to_vec(),
                "contains a space",
            ),
            (
                "jane\u{200b}doe@acme-corp.com".as_bytes().to_vec(),
                "contains an invisible character",
            ),
            (
                b"jane\x00@acme-corp.com".to_vec(),
                "contains a control character",
            ),
            (
                b"jane\x07@acme-corp.com".to_vec(),
                "contains a control character",
            ),
            (
                b"\"john doe\"@acme-corp.com".to_vec(),
                "quoted local part not accepted",
            ),
            (
                b"\"john\"@acme-corp.com".to_vec(),
                "quoted local part not accepted",
            ),
            (b"@acme-corp.com".to_vec(), "nothing before @"),
            (b"jane@".to_vec(), "nothing after @"),
            (
                b".jane@acme-corp.com".to_vec(),
                "local part starts with a dot",
            ),
            (
                b"jane.@acme-corp.com".to_vec(),
                "local part ends with a dot",
            ),
            (
                b"ja..ne@acme-corp.com".to_vec(),
                "local part has two dots in a row",
            ),
            (
                b"ja,ne@acme-corp.com".to_vec(),
                "forbidden character in local part",
            ),
            (
                b"ja(ne)@acme-corp.com".to_vec(),
                "forbidden character in local part",
            ),
            (
                b"ja\\ne@acme-corp.com".to_vec(),
                "forbidden character in local part",
            ),
            (
                long_local.into_bytes(),
                "local part longer than 64 characters",
            ),
            (b"jane@localhost".to_vec(), "domain has no dot"),
            (
                b"jane@[192.168.0.1]".to_vec(),
                "IP-literal domain not accepted",
            ),
            (b"jane@192.168.0.1".to_vec(), "top-level domain is numeric"),
            (b"jane@acme.123".to_vec(), "top-level domain is numeric"),
            (b"jane@.acme.com".to_vec(), "domain starts with a dot"),
            (
                b"jane@acme..com".to_vec(),
                "domain has an empty label (two dots in a row)",
            ),
            (
                b"jane@-acme.com".to_vec(),
                "domain label starts or ends with a hyphen",
            ),
            (
                b"jane@acme-.com".to_vec(),
                "domain label starts or ends with a hyphen",
            ),
            (b"jane@ac_me.com".to_vec(), "forbidden character in domain"),
            (b"jane@acme.c*m".to_vec(), "forbidden character in domain"),
            (
                long_label.into_bytes(),
                "domain label longer than 63 characters",
            ),
            (
                too_long_domain.into_bytes(),
                "domain longer than 253 characters",
            ),
            (
                long_address.into_bytes(),
                "address longer than 254 characters",
            ),
            ("jane@exa mple.com".as_bytes().to_vec(), "contains a space"),
        ];
        for (raw, reason) in cases {
            match check(&raw) {
                Checked::Invalid { reason: got, .. } => {
                    assert_eq!(got, reason, "{:?}", String::from_utf8_lossy(&raw))
                }
                other => panic!(
                    "{:?}: expected {reason:?}, got {other:?}",
                    String::from_utf8_lossy(&raw)
                ),
            }
        }
        // The boundary cases just inside the limits are valid.
        assert!(matches!(check(max_address.as_bytes()), Checked::Valid(_)));
        let max_local = format!("{}@x.com", "a".repeat(64));
        assert!(matches!(check(max_local.as_bytes()), Checked::Valid(_)));
        let max_label = format!("a@{}.com", "b".repeat(63));
        assert!(matches!(check(max_label.as_bytes()), Checked::Valid(_)));
    }

    #[test]
    fn invalid_keeps_a_readable_normalized_form() {
        let cases: &[(&[u8], &str)] = &[
            (b"  Jane <jane@localhost> ", "jane@localhost"),
            (b"mailto:bad@@x.com", "bad@@x.com"),
            (b"jane@ACME_CORP.COM", "jane@acme_corp.com"),
            (b"\xffjane@x.com", "\u{fffd}jane@x.com"),
        ];
        for (raw, want) in cases {
            match check(raw) {
                Checked::Invalid { normalized, .. } => assert_eq!(normalized, *want),
                other => panic!("{raw:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn never_panics_on_garbage() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(0x6d61_696c);
        // Fragments that exercise every branch when glued together at random.
        let pieces: &[&str] = &[
            "a", "Z", "@", ".", "..", "-", "<", ">", "\"", "'", " ", "\u{a0}", "\u{200b}",
            "mailto:", "MAILTO:", "?", ",", ";", "[", "]", "é", "ü", "用", "xn--", "\u{feff}",
            "\u{201c}", "\u{201d}", "\0", "\r\n", "com", "bücher", "1", "_",
        ];
        for _ in 0..20_000 {
            let len = rng.random_range(0..40);
            let bytes: Vec<u8> = if rng.random_bool(0.5) {
                (0..len).map(|_| rng.random()).collect()
            } else {
                let mut s = String::new();
                for _ in 0..len {
                    s.push_str(pieces[rng.random_range(0..pieces.len())]);
                }
                let mut b = s.into_bytes();
                if !b.is_empty() && rng.random_bool(0.1) {
                    let cut = rng.random_range(0..b.len());
                    b.truncate(cut); // may split a UTF-8 sequence
                }
                b
            };
            if let Checked::Valid(a) = check(&bytes) {
                // Whatever passes must pass again unchanged: normalisation is idempotent.
                assert_eq!(check(a.normalized.as_bytes()), Checked::Valid(a.clone()));
                assert!(a.normalized.len() <= MAX_ADDRESS);
            }
        }
    }
}
