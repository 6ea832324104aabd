//! Address normalisation and the local syntax check: what may be sent to the API.
//!
//! Owns: turning one raw CSV cell into either nothing (`Empty`), a verdict we can give for free
//! (`Invalid`, never sent: the API would charge for it), or a normalised [`Address`] whose `key`
//! is the dedupe/cache identity; and the typo suggestion of the `email_suggestion` column
//! ([`suggest`]).
//!
//! Must not: do I/O, allocate more than needed on the common path (a bench requires at least
//! 2,000,000 checks/s on plain ASCII addresses, so no regex and two allocations at most), or
//! panic on any input bytes. It knows nothing about CSV, the cache or the API client.
//!
//! The syntax accepted is the practical subset of RFC 5321/5322 that mail providers accept,
//! plus RFC 6531 (non-ASCII local parts, NFC-normalised). Quoted local parts, IP-literal
//! domains and comments are rejected on purpose: real mailboxes practically never use them and
//! the API charges for them. Domains follow IDNA2008 (UTS #46 non-transitional, with the
//! hyphen, bidi and joiner checks and the STD3 rules, then letters, marks and digits only), and
//! a domain that cannot receive mail (a reserved name, a top-level domain that does not exist)
//! is rejected too: asking about it would be paid for and could only answer `invalid`.

use std::borrow::Cow;

use icu_normalizer::ComposingNormalizerBorrowed;
use icu_properties::props::{GeneralCategory, GeneralCategoryGroup};
use icu_properties::CodePointMapData;
use idna::uts46::{AsciiDenyList, DnsLength, Hyphens, Uts46};

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
    /// What we send and print: local part as written (NFC), domain lower-cased, IDN as ASCII
    /// (punycode).
    pub normalized: String,
    /// `normalized`, fully lower-cased: the dedupe/cache key.
    pub key: String,
}

/// What the user may relax in the check (`--allow-unknown-tld`). The default is the strict
/// check every command uses unless told otherwise.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Rules {
    /// Send addresses whose top-level domain is not in the bundled list (a TLD newer than it).
    pub allow_unknown_tld: bool,
}

/// In bytes, as RFC 5321 counts them (UTF-8 for a non-ASCII local part, RFC 6531).
const MAX_LOCAL: usize = 64;
const MAX_DOMAIN: usize = 253;
const MAX_LABEL: usize = 63;
const MAX_ADDRESS: usize = 254;

/// Normalises and checks one raw cell (bytes as they appear in the CSV field, unescaped) with
/// the default [`Rules`].
pub fn check(raw: &[u8]) -> Checked {
    check_with(raw, Rules::default())
}

/// Normalises and checks one raw cell.
///
/// Normalisation: trim whitespace and invisible marks (NBSP, zero-width, BOM, bidi marks...);
/// strip surrounding quotes (straight, typographic or mismatched), `mailto:` (any case,
/// `//` and `?query` dropped, percent-escapes decoded), `Name <addr>`, `Name (addr)`,
/// `[addr]`, `Label: addr`, and punctuation left by copy-paste before or after the address
/// (`,;:` `。，；、）` ...); NFC-normalise the local part; lower-case the domain and convert a
/// non-ASCII domain to ASCII (punycode). Never panics.
pub fn check_with(raw: &[u8], rules: Rules) -> Checked {
    let text = match std::str::from_utf8(raw) {
        Ok(text) => text,
        Err(_) => {
            let lossy = String::from_utf8_lossy(raw);
            let cleaned = extract(&lossy);
            if is_blank(&cleaned) {
                return Checked::Empty;
            }
            return invalid(&cleaned, "not valid UTF-8");
        }
    };
    // Most cells are a bare address: nothing to peel, nothing blank (a measured third of the
    // check's time on a real mix went to looking for wrappers that are not there).
    if is_plain(text) {
        return check_plain(text, rules).unwrap_or_else(|| check_syntax(text, rules));
    }
    let s = extract(text);
    if is_blank(&s) {
        return Checked::Empty;
    }
    check_syntax(&s, rules)
}

/// A cell that [`peel`] leaves as it is: only letters, digits and `._+-@`, starting and ending
/// with a letter or digit (no quote, bracket, colon, space, mark or edge punctuation to strip).
fn is_plain(text: &str) -> bool {
    let bytes = text.as_bytes();
    bytes.first().is_some_and(u8::is_ascii_alphanumeric)
        && bytes.last().is_some_and(u8::is_ascii_alphanumeric)
        && bytes
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'+' | b'-' | b'@'))
}

/// Peels copy-paste wrappers off a cell. A `mailto:` link is a URI, so its percent-escapes are
/// decoded (`%2B` is `+`, RFC 6068) and the result peeled once more (an escaped quote or space).
fn extract(text: &str) -> Cow<'_, str> {
    let (s, escaped) = peel(text);
    if !escaped {
        return Cow::Borrowed(s);
    }
    let decoded = percent_encoding::percent_decode_str(s).decode_utf8_lossy();
    Cow::Owned(peel(&decoded).0.to_owned())
}

/// The peeling loop; every step shrinks the slice, so it ends. Also says whether a `mailto:`
/// with percent-escapes was unwrapped.
fn peel(mut s: &str) -> (&str, bool) {
    let mut escaped = false;
    loop {
        s = s.trim_matches(is_trim_char);
        if let Some(inner) = strip_quote_pair(s) {
            s = inner;
            continue;
        }
        if let Some(rest) = strip_mailto(s) {
            escaped |= rest.contains('%');
            s = rest;
            continue;
        }
        if let Some(inner) = unwrap_brackets(s) {
            s = inner;
            continue;
        }
        if let Some(rest) = strip_label(s) {
            s = rest;
            continue;
        }
        let t = if s.contains('@') {
            trim_junk(s)
        } else {
            s.trim_end_matches(['.', ',', ';'])
        };
        if t.len() != s.len() {
            s = t;
            continue;
        }
        return (s, escaped);
    }
}

/// `mailto:addr`, `mailto://addr` (a common mistake), any case; the `?subject=...` part goes.
fn strip_mailto(s: &str) -> Option<&str> {
    let rest = s
        .get(..7)
        .filter(|scheme| scheme.eq_ignore_ascii_case("mailto:"))
        .map(|_| &s[7..])?;
    let rest = rest.strip_prefix("//").unwrap_or(rest);
    Some(rest.split('?').next().unwrap_or(rest))
}

/// Brackets an address comes in, besides `<...>`: ASCII, full-width and CJK ones.
const BRACKETS: [(char, char); 10] = [
    ('(', ')'),
    ('[', ']'),
    ('（', '）'),
    ('［', '］'),
    ('【', '】'),
    ('〈', '〉'),
    ('《', '》'),
    ('「', '」'),
    ('『', '』'),
    ('＜', '＞'),
];

/// `Name <addr>` (what is inside the last `<...>`, as in a mail header); `Name (addr)`,
/// `[addr]` and the like when the brackets end the cell and hold an `@`; and `addr (comment)`.
fn unwrap_brackets(s: &str) -> Option<&str> {
    if let Some(lt) = s.rfind('<') {
        if let Some(len) = s[lt + 1..].find('>') {
            return Some(&s[lt + 1..lt + 1 + len]);
        }
    }
    let last = s.chars().next_back()?;
    let &(open, close) = BRACKETS.iter().find(|&&(_, close)| close == last)?;
    let body = &s[..s.len() - close.len_utf8()];
    let at = body.rfind(open)?;
    let inner = &body[at + open.len_utf8()..];
    if inner.contains('@') {
        return Some(inner);
    }
    let before = &body[..at];
    (before.ends_with(char::is_whitespace) && before.contains('@')).then_some(before)
}

/// `Email: addr`, `E-mail (work): addr`, `邮箱：addr`: a label and a colon before the address.
/// The colon is followed by a space (or is a full-width one), or the label names email
/// (`email:addr`): `ja:ne@x.com` is a broken address, not a label.
fn strip_label(s: &str) -> Option<&str> {
    // Two byte searches: quicker than one search for either character.
    let colon = s.find(':').into_iter().chain(s.find('：')).min()?;
    let label = &s[..colon];
    let rest = &s[colon..];
    let full_width = rest.starts_with('：');
    let rest = &rest[rest.chars().next()?.len_utf8()..];
    let is_label = !label.is_empty()
        && label.chars().all(|c| {
            c.is_alphanumeric() || c.is_whitespace() || matches!(c, '-' | '_' | '.' | '(' | ')')
        });
    let names_email = || {
        let label = label.to_lowercase();
        ["mail", "courriel", "correo", "邮箱", "メール", "почта"]
            .iter()
            .any(|word| label.contains(word))
    };
    let separated = full_width || rest.starts_with(char::is_whitespace) || names_email();
    (is_label && separated && rest.contains('@') && !rest.trim_start().starts_with('/'))
        .then_some(rest)
}

/// Copy-paste debris around an address: punctuation and symbols after it (a domain ends with
/// a letter or digit, so nothing of the address goes), separators, brackets and symbols before
/// it, and quotes that close nothing (a quote that has a partner in the local part stays, for
/// the "quoted local part" message).
fn trim_junk(s: &str) -> &str {
    let mut s = s.trim_end_matches(|c: char| {
        is_trim_char(c)
            || (c.is_ascii_punctuation() && !matches!(c, '@' | '-'))
            || (!c.is_ascii() && is_punctuation_or_symbol(c))
    });
    while let Some(c) = s.chars().next() {
        let rest = &s[c.len_utf8()..];
        let junk = match quote_family(c) {
            Some(family) => !rest.chars().any(|r| quote_family(r) == Some(family)),
            None => {
                is_trim_char(c)
                    || matches!(c, ',' | ';' | ':' | '(' | ')' | '[' | ']' | '<' | '>')
                    // A list bullet or quote marker: `* addr`, `- addr`, `> addr`.
                    || (matches!(c, '*' | '-' | '+' | '#' | '>')
                        && rest.starts_with(char::is_whitespace))
                    || (!c.is_ascii() && is_punctuation_or_symbol(c))
            }
        };
        if !junk {
            break;
        }
        s = rest;
    }
    s
}

fn general_category(c: char) -> GeneralCategory {
    CodePointMapData::<GeneralCategory>::new().get(c)
}

/// Punctuation and symbols, but not U+FFFD: that one marks text lost to a misread encoding,
/// which the check must report, not hide.
fn is_punctuation_or_symbol(c: char) -> bool {
    if c == char::REPLACEMENT_CHARACTER {
        return false;
    }
    let gc = general_category(c);
    GeneralCategoryGroup::Punctuation.contains(gc) || GeneralCategoryGroup::Symbol.contains(gc)
}

/// Whitespace in the Unicode sense plus the invisible characters spreadsheets and web pages
/// leave around copied addresses (zero-width marks, BOM, soft hyphen, bidi marks).
fn is_trim_char(c: char) -> bool {
    c.is_whitespace() || is_invisible(c) || is_bidi_control(c)
}

/// Zero-width and other invisible formatting characters.
fn is_invisible(c: char) -> bool {
    matches!(
        c,
        '\u{00AD}' | '\u{034F}' | '\u{180E}' | '\u{200B}'..='\u{200D}' | '\u{2060}'..='\u{2064}' | '\u{FEFF}'
    )
}

/// The marks that set text direction (LRM, RLM, ALM, embeddings, overrides, isolates).
fn is_bidi_control(c: char) -> bool {
    matches!(
        c,
        '\u{061C}' | '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}'
    )
}

/// Double and single quotes, straight and typographic: which family a quote belongs to.
fn quote_family(c: char) -> Option<u8> {
    match c {
        '"' | '\u{201C}' | '\u{201D}' | '\u{201E}' | '\u{201F}' | '\u{00AB}' | '\u{00BB}'
        | '\u{2033}' | '\u{301D}' | '\u{301E}' | '\u{FF02}' => Some(b'"'),
        '\'' | '`' | '\u{2018}' | '\u{2019}' | '\u{201A}' | '\u{201B}' | '\u{2039}'
        | '\u{203A}' | '\u{00B4}' | '\u{2032}' | '\u{FF07}' => Some(b'\''),
        _ => None,
    }
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

/// Blank means nothing but whitespace, invisible marks and quote characters is left.
fn is_blank(s: &str) -> bool {
    s.chars()
        .all(|c| is_trim_char(c) || quote_family(c).is_some())
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

const INVISIBLE: &str =
    "contains an invisible character (zero-width space, joiner or soft hyphen) inside the address";
const BIDI: &str = "contains an invisible text-direction mark (bidi control) inside the address";
const TOO_LONG_LOCAL: &str =
    "local part longer than 64 bytes (the limit of RFC 5321; a non-ASCII letter takes 2 to 4)";

fn check_syntax(s: &str, rules: Rules) -> Checked {
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
    let (mut invisible, mut bidi, mut replacement) = (false, false, false);
    if !ascii {
        for c in s.chars() {
            if c.is_control() {
                control = true;
            } else if c.is_whitespace() {
                space = true;
            } else if is_bidi_control(c) {
                bidi = true;
            } else if is_invisible(c) {
                invisible = true;
            } else if c == char::REPLACEMENT_CHARACTER {
                replacement = true;
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
    if bidi {
        return invalid(s, BIDI);
    }
    if invisible {
        return invalid(s, INVISIBLE);
    }
    if replacement {
        return invalid(
            s,
            "contains \u{FFFD}, a character lost when the file's encoding was misread",
        );
    }
    let at = match first_at {
        None => return invalid(s, "missing @"),
        Some(_) if ats > 1 => return invalid(s, "more than one @"),
        Some(at) => at,
    };
    let local = &s[..at];
    let domain = &s[at + 1..];
    // The form that is sent and compared: `josé` typed with a combining accent is `josé`.
    let local = if local.is_ascii() {
        Cow::Borrowed(local)
    } else {
        ComposingNormalizerBorrowed::new_nfc().normalize(local)
    };
    if let Err(reason) = check_local(&local) {
        return invalid(s, reason);
    }
    if domain.is_empty() {
        return invalid(s, "nothing after @");
    }
    if domain.starts_with('[') {
        return invalid(s, "IP-literal domain not accepted");
    }

    let mut normalized = String::with_capacity(s.len());
    normalized.push_str(&local);
    normalized.push('@');
    let domain_at = normalized.len();
    if domain.is_ascii() {
        // Fast path: no IDNA for the common case.
        normalized.push_str(domain);
        normalized[domain_at..].make_ascii_lowercase();
    } else {
        match domain_to_ascii(domain) {
            Ok(ascii) => normalized.push_str(&ascii),
            Err(reason) => return invalid(s, reason),
        }
    }
    let ascii = &normalized[domain_at..];
    let checked = check_labels(ascii)
        // Typed as punycode: it must decode, and be the form its Unicode name encodes to.
        .and_then(|punycode| match punycode && domain.is_ascii() {
            true => check_punycode(ascii),
            false => Ok(()),
        })
        .and_then(|()| check_receives_mail(ascii, rules));
    if let Err(reason) = checked {
        return Checked::Invalid { normalized, reason };
    }
    if normalized.len() > MAX_ADDRESS {
        return Checked::Invalid {
            normalized,
            reason: "address longer than 254 bytes",
        };
    }
    let key = if normalized.is_ascii() {
        normalized.to_ascii_lowercase()
    } else {
        normalized.to_lowercase()
    };
    Checked::Valid(Address { normalized, key })
}

/// [`check_syntax`] of a plain cell ([`is_plain`]) in one pass, for the common case: a valid
/// address whose domain has no punycode label. `None` for anything else, which
/// [`check_syntax`] then decides; for what this accepts, it gives the same answer (the test
/// `the_plain_path_agrees_with_the_full_check` holds the two together).
fn check_plain(text: &str, rules: Rules) -> Option<Checked> {
    let bytes = text.as_bytes();
    if bytes.len() > MAX_ADDRESS {
        return None;
    }
    let at = memchr::memchr(b'@', bytes)?;
    // A plain cell starts with a letter or digit and holds only atext and dots: the local
    // part needs only its length and its dots looked at.
    let (local, domain) = (&bytes[..at], &bytes[at + 1..]);
    if local.is_empty()
        || local.len() > MAX_LOCAL
        || local.ends_with(b".")
        || local.windows(2).any(|pair| pair == b"..")
        || domain.len() > MAX_DOMAIN
    {
        return None;
    }
    let mut tld: &[u8] = &[];
    let mut count = 0;
    for label in domain.split(|&b| b == b'.') {
        let ok = !label.is_empty()
            && label.len() <= MAX_LABEL
            && label
                .iter()
                .all(|&b| b.is_ascii_alphanumeric() || b == b'-')
            && label[0] != b'-'
            && label[label.len() - 1] != b'-'
            && label.get(2..4) != Some(b"--");
        if !ok {
            return None;
        }
        tld = label;
        count += 1;
    }
    if count < 2 || tld.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let mut normalized = text.to_owned();
    normalized[at + 1..].make_ascii_lowercase();
    check_receives_mail(&normalized[at + 1..], rules).ok()?;
    let key = normalized.to_ascii_lowercase();
    Some(Checked::Valid(Address { normalized, key }))
}

fn check_local(local: &str) -> Result<(), &'static str> {
    let bytes = local.as_bytes();
    if bytes.is_empty() {
        return Err("nothing before @");
    }
    if bytes.len() > MAX_LOCAL {
        return Err(TOO_LONG_LOCAL);
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

/// An international domain name to ASCII, the strict way: IDNA2008's repertoire as typed
/// (letters, marks and digits: no symbols, emoji or punctuation), then UTS #46
/// non-transitional with the STD3 rules, CheckHyphens, CheckBidi, CheckJoiners and the DNS
/// lengths. (Mapping letters, marks and digits yields letters, marks and digits, so the
/// result needs no second look; `xn--` typed as such does, in [`check_punycode`].)
fn domain_to_ascii(domain: &str) -> Result<String, &'static str> {
    // Before UTS #46 maps them away: `acme™.com` is not `acmetm.com`. The full-width dots and
    // hyphen are the ones East Asian keyboards type.
    let typed =
        |c: char| c.is_ascii() || is_idna2008_char(c) || matches!(c, '。' | '．' | '｡' | '－');
    if !domain.chars().all(typed) {
        return Err(SYMBOL_IN_DOMAIN);
    }
    let ascii = Uts46::new()
        .to_ascii(
            domain.as_bytes(),
            AsciiDenyList::STD3,
            Hyphens::Check,
            DnsLength::Verify,
        )
        .map_err(|_| "invalid international domain name")?;
    Ok(ascii.into_owned())
}

/// Every `xn--` label of an ASCII domain decodes to letters, marks and digits (RFC 5892's
/// LetterDigits, less its DISALLOWED exceptions, plus the CONTEXTO characters).
fn idna2008_repertoire(ascii: &str) -> Result<(), &'static str> {
    for label in ascii.split('.') {
        let Some(encoded) = label.strip_prefix("xn--") else {
            continue;
        };
        let decoded = idna::punycode::decode_to_string(encoded)
            .ok_or("broken punycode (xn--) label in the domain")?;
        if !decoded.chars().all(is_idna2008_char) {
            return Err(SYMBOL_IN_DOMAIN);
        }
    }
    Ok(())
}

const SYMBOL_IN_DOMAIN: &str =
    "symbol, emoji or punctuation in the domain (not allowed in domain names)";

fn is_idna2008_char(c: char) -> bool {
    if c.is_ascii() {
        return c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-';
    }
    match c {
        // CONTEXTO: middle dots, Greek keraia, Hebrew geresh and gershayim.
        '\u{00B7}' | '\u{0375}' | '\u{05F3}' | '\u{05F4}' | '\u{30FB}' => true,
        // RFC 5892 2.6: letters made DISALLOWED by exception.
        '\u{0640}'
        | '\u{07FA}'
        | '\u{302E}'
        | '\u{302F}'
        | '\u{3031}'..='\u{3035}'
        | '\u{303B}' => false,
        _ => {
            let gc = general_category(c);
            GeneralCategoryGroup::Letter.contains(gc)
                || GeneralCategoryGroup::Mark.contains(gc)
                || gc == GeneralCategory::DecimalNumber
        }
    }
}

/// Checks the labels of an ASCII (post-IDN), lower-cased domain; says whether one of them is
/// punycode (`xn--`).
fn check_labels(domain: &str) -> Result<bool, &'static str> {
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
    let mut punycode = false;
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
        if label.get(2..4) == Some("--") {
            if !label.starts_with("xn--") {
                return Err("domain label with -- in third and fourth place (reserved by IDNA)");
            }
            punycode = true;
        }
        last = label;
    }
    if last.bytes().all(|b| b.is_ascii_digit()) {
        return Err("top-level domain is numeric");
    }
    Ok(punycode)
}

/// A domain typed with `xn--` labels: the same strict rules as a Unicode one, and the
/// canonical encoding (what its Unicode form encodes to).
fn check_punycode(domain: &str) -> Result<(), &'static str> {
    let canonical = Uts46::new()
        .to_ascii(
            domain.as_bytes(),
            AsciiDenyList::STD3,
            Hyphens::Check,
            DnsLength::Verify,
        )
        .map_err(|_| "broken punycode (xn--) label in the domain")?;
    idna2008_repertoire(&canonical)?;
    if canonical != domain {
        return Err("punycode (xn--) label in the domain is not in canonical form");
    }
    Ok(())
}

/// `text` split at the last `byte` (ASCII), without it: [`str::rsplit_once`] through the
/// memchr crate's vectorised search. Each row takes four such splits, and the generic search
/// was 3% of a run answered from the store.
pub(crate) fn split_last(text: &str, byte: u8) -> Option<(&str, &str)> {
    debug_assert!(byte.is_ascii());
    let at = memchr::memrchr(byte, text.as_bytes())?;
    Some((&text[..at], &text[at + 1..]))
}

/// The last label of `domain` (all of it when it has no dot).
fn last_label(domain: &str) -> &str {
    split_last(domain, b'.').map_or(domain, |(_, label)| label)
}

/// Whether mail to this (valid, ASCII) domain can be delivered at all.
fn check_receives_mail(domain: &str, rules: Rules) -> Result<(), &'static str> {
    let tld = last_label(domain);
    if let Some(reason) = reserved(domain, tld) {
        return Err(reason);
    }
    if !rules.allow_unknown_tld && !tld_exists(tld) {
        return Err(UNKNOWN_TLD);
    }
    Ok(())
}

const UNKNOWN_TLD: &str = "top-level domain does not exist (not in the bundled public suffix \
                           list; --allow-unknown-tld sends it anyway)";

/// Special-use names (RFC 2606, 6761, 6762, 7686, 9476; ICANN's `.internal`): no mail server
/// answers for them, so the API could only answer `invalid`, and charge for it.
const RESERVED_TLDS: [(&str, &str); 9] = [
    (
        "test",
        ".test is reserved for testing (RFC 2606): it cannot receive mail",
    ),
    (
        "example",
        ".example is reserved for examples (RFC 2606): it cannot receive mail",
    ),
    (
        "invalid",
        ".invalid is reserved to be invalid (RFC 2606): it cannot receive mail",
    ),
    (
        "localhost",
        ".localhost is this computer (RFC 6761): it cannot receive mail",
    ),
    (
        "local",
        ".local is a local-network name (mDNS, RFC 6762): it cannot receive mail",
    ),
    (
        "onion",
        ".onion is a Tor address (RFC 7686): mail servers cannot reach it",
    ),
    (
        "arpa",
        ".arpa is DNS infrastructure: it cannot receive mail",
    ),
    (
        "internal",
        ".internal is for private networks (ICANN): it cannot receive mail",
    ),
    (
        "alt",
        ".alt is outside the DNS (RFC 9476): it cannot receive mail",
    ),
];

const RESERVED_DOMAINS: [(&str, &str); 3] = [
    (
        "example.com",
        "example.com is reserved for examples (RFC 2606): it cannot receive mail",
    ),
    (
        "example.net",
        "example.net is reserved for examples (RFC 2606): it cannot receive mail",
    ),
    (
        "example.org",
        "example.org is reserved for examples (RFC 2606): it cannot receive mail",
    ),
];

/// Why mail to `domain` (ASCII, lower-case; `tld` its last label) can never be delivered.
fn reserved(domain: &str, tld: &str) -> Option<&'static str> {
    if let Some((_, reason)) = RESERVED_TLDS.iter().find(|(name, _)| *name == tld) {
        return Some(reason);
    }
    RESERVED_DOMAINS
        .iter()
        .find(|(name, _)| {
            domain
                .strip_suffix(name)
                .is_some_and(|sub| sub.is_empty() || sub.ends_with('.'))
        })
        .map(|(_, reason)| *reason)
}

/// Is `tld` (ASCII, lower-case) a top-level domain of the root zone? The `psl` crate compiles
/// the public suffix list, whose ICANN section lists every delegated TLD, into a lookup;
/// updating the crate updates the list.
fn tld_exists(tld: &str) -> bool {
    // Most addresses end in one of these: no need to walk the list.
    if matches!(
        tld,
        "com" | "net" | "org" | "io" | "co" | "de" | "uk" | "fr" | "edu"
    ) {
        return true;
    }
    psl::suffix(tld.as_bytes()).is_some_and(|s| s.is_known() && s.typ() == Some(psl::Type::Icann))
}

/// Common mailbox providers, most used first (a tie goes to the first). An address at one of
/// them exactly never gets a suggestion.
const PROVIDERS: &[&str] = &[
    "gmail.com",
    "yahoo.com",
    "hotmail.com",
    "outlook.com",
    "icloud.com",
    "aol.com",
    "live.com",
    "msn.com",
    "googlemail.com",
    "protonmail.com",
    "proton.me",
    "me.com",
    "mac.com",
    "ymail.com",
    "rocketmail.com",
    "mail.com",
    "email.com",
    "gmx.com",
    "gmx.de",
    "gmx.net",
    "web.de",
    "t-online.de",
    "zoho.com",
    "yandex.ru",
    "yandex.com",
    "mail.ru",
    "comcast.net",
    "verizon.net",
    "att.net",
    "sbcglobal.net",
    "bellsouth.net",
    "charter.net",
    "cox.net",
    "btinternet.com",
    "hotmail.co.uk",
    "hotmail.fr",
    "hotmail.de",
    "hotmail.it",
    "hotmail.es",
    "live.co.uk",
    "live.fr",
    "outlook.fr",
    "outlook.de",
    "yahoo.co.uk",
    "yahoo.fr",
    "yahoo.de",
    "yahoo.es",
    "yahoo.it",
    "yahoo.ca",
    "yahoo.co.in",
    "yahoo.co.jp",
    "yahoo.com.br",
    "orange.fr",
    "wanadoo.fr",
    "laposte.net",
    "free.fr",
    "sfr.fr",
    "libero.it",
    "virgilio.it",
    "seznam.cz",
    "wp.pl",
    "o2.pl",
    "interia.pl",
    "qq.com",
    "163.com",
    "126.com",
    "naver.com",
    "hanmail.net",
    "rediffmail.com",
    "uol.com.br",
    "bol.com.br",
    "fastmail.com",
    "tutanota.com",
    "mailbox.org",
    "posteo.de",
    "shaw.ca",
    "rogers.com",
    "bigpond.com",
    "optusnet.com.au",
];

/// The address the user probably meant, when the domain of `address` (an address as
/// normalised by [`check`], valid or not) is one or two typing errors away from a common
/// mailbox provider (`gmial.com`, `hotmial.com`, `yahoo.con`), or its top-level domain does
/// not exist and is one error from `.com`, `.net` or `.org` (`acme.cmo`). Only a suggestion:
/// the address sent is never changed. `None` when nothing is likely, or when the suggestion
/// would not pass the check itself.
pub fn suggest(address: &str) -> Option<String> {
    let (local, domain) = split_last(address, b'@')?;
    with_local(local, &better_domain(domain)?)
}

/// [`suggest`] for a writer that meets the same domains row after row: the part that depends
/// on the domain alone is worked out once per domain. `suggest` on every row was a quarter of
/// the CPU of the thread that plans and writes a run from the cache (issue 15).
#[derive(Debug, Clone, Default)]
pub struct Suggester {
    memo: foldhash::HashMap<Box<str>, Option<Box<str>>>,
}

/// Domains a [`Suggester`] remembers before it starts over: a few MB at most (tests start
/// over sooner).
const SUGGESTER_MEMO: usize = if cfg!(test) { 64 } else { 1 << 16 };

impl Suggester {
    /// What [`suggest`] says of `address`.
    pub fn suggest(&mut self, address: &str) -> Option<String> {
        let (local, domain) = split_last(address, b'@')?;
        if let Some(better) = self.memo.get(domain) {
            return with_local(local, better.as_deref()?);
        }
        if self.memo.len() >= SUGGESTER_MEMO {
            self.memo.clear();
        }
        let better: Option<Box<str>> = better_domain(domain).map(Into::into);
        let suggestion = better
            .as_deref()
            .and_then(|better| with_local(local, better));
        self.memo.insert(domain.into(), better);
        suggestion
    }
}

/// The domain [`suggest`] puts in place of `domain`, whatever the local part.
fn better_domain(domain: &str) -> Option<Cow<'static, str>> {
    if domain.is_empty() || !domain.is_ascii() {
        return None;
    }
    // Lower-case already when the check passed it: copied only when it must change.
    let domain = match domain.bytes().any(|b| b.is_ascii_uppercase()) {
        true => Cow::Owned(domain.to_ascii_lowercase()),
        false => Cow::Borrowed(domain),
    };
    if PROVIDERS.contains(&&*domain) {
        return None;
    }
    provider_typo(&domain).map(Cow::Borrowed).or_else(|| {
        let (name, tld) = split_last(&domain, b'.')?;
        tld_typo(tld).map(|tld| Cow::Owned(format!("{name}.{tld}")))
    })
}

/// `local` at the `better` domain, if that passes the check like any cell and comes out with
/// the local part unchanged.
fn with_local(local: &str, better: &str) -> Option<String> {
    if local.is_empty() {
        return None;
    }
    match check(format!("{local}@{better}").as_bytes()) {
        Checked::Valid(a) if split_last(&a.normalized, b'@').is_some_and(|(l, _)| l == local) => {
            Some(a.normalized)
        }
        _ => None,
    }
}

/// The provider `domain` (ASCII, lower-case, not a provider itself) is a typo of.
///
/// Whether what follows the name may be a slip for a provider's ending depends on that text
/// alone, so it is decided once, not once per provider: almost every domain of a real list is
/// then turned down by a length and byte comparison per provider (issue 15: the check per
/// provider was a quarter of the CPU of a run answered from the cache).
fn provider_typo(domain: &str) -> Option<&'static str> {
    let (name, rest) = domain.split_once('.').unwrap_or((domain, ""));
    // Whether `rest` may stand for a provider's ending other than itself: `.co`, `.cm` and
    // `.om` for `.com`; a top-level domain that does not exist for one an edit away.
    let com_typo = matches!(rest, "co" | "cm" | "om");
    let missing_tld = !rest.is_empty() && !tld_exists(last_label(rest));
    // Then only a provider with this very ending can match: none for most domains.
    if !rest.is_empty() && !com_typo && !missing_tld && !provider_endings().contains(&rest) {
        return None;
    }
    let mut best: Option<(usize, &'static str)> = None;
    for &(provider, p_name, p_rest) in split_providers() {
        let distance = if rest.is_empty() {
            // `gmail` or `gmailcom`: the top-level domain or its dot left out.
            match name == p_name || name.strip_prefix(p_name) == Some(p_rest) {
                true => 0,
                false => continue,
            }
        } else if rest == p_rest
            || (com_typo && p_rest == "com")
            || (missing_tld && strsim::osa_distance(rest, p_rest) == 1)
        {
            match name == p_name {
                true => 0,
                false => match name_typo(name, p_name) {
                    Some(distance) => distance,
                    None => continue,
                },
            }
        } else {
            continue;
        };
        if best.is_none_or(|(d, _)| distance < d) {
            best = Some((distance, provider));
        }
    }
    best.map(|(_, provider)| provider)
}

/// What follows the first dot of the [`PROVIDERS`], each once.
fn provider_endings() -> &'static [&'static str] {
    static ENDINGS: std::sync::LazyLock<Vec<&str>> = std::sync::LazyLock::new(|| {
        let mut endings: Vec<&str> = split_providers().iter().map(|p| p.2).collect();
        endings.sort_unstable();
        endings.dedup();
        endings
    });
    &ENDINGS
}

/// [`PROVIDERS`] cut at their first dot: `(provider, name, rest)`.
fn split_providers() -> &'static [(&'static str, &'static str, &'static str)] {
    static SPLIT: std::sync::LazyLock<Vec<(&str, &str, &str)>> = std::sync::LazyLock::new(|| {
        PROVIDERS
            .iter()
            .map(|&p| {
                let (name, rest) = p.split_once('.').unwrap_or((p, ""));
                (p, name, rest)
            })
            .collect()
    });
    &SPLIT
}

/// How many edits (insert, delete, replace, swap two neighbours) `name` is from a provider's
/// `p_name`, if few enough to be a slip of the fingers: two for a long name, one for a
/// five-letter one, none for shorter ones (`aon` is a real company, not `aol`). The first
/// letter must be right, or one key over on a QWERTY keyboard.
fn name_typo(name: &str, p_name: &str) -> Option<usize> {
    let limit = match p_name.len() {
        0..=4 => return None,
        5 => 1,
        _ => 2,
    };
    if name.len().abs_diff(p_name.len()) > limit {
        return None;
    }
    let (first, p_first) = (name.as_bytes().first()?, p_name.as_bytes()[0]);
    let distance = strsim::osa_distance(name, p_name);
    if distance > limit {
        return None;
    }
    let first_ok = *first == p_first
        || (distance == 1 && name[1..] == p_name[1..] && adjacent(*first, p_first));
    first_ok.then_some(distance)
}

/// Keys next to each other on a QWERTY keyboard.
fn adjacent(a: u8, b: u8) -> bool {
    const ROWS: [&[u8]; 3] = [b"qwertyuiop", b"asdfghjkl", b"zxcvbnm"];
    let at = |k: u8| {
        ROWS.iter()
            .enumerate()
            .find_map(|(r, row)| row.iter().position(|&c| c == k).map(|c| (r, c)))
    };
    match (at(a), at(b)) {
        // Rows are staggered: a key touches two keys of the row above and below.
        (Some((ra, ca)), Some((rb, cb))) => match ra.abs_diff(rb) {
            0 => ca.abs_diff(cb) == 1,
            1 => {
                let (upper, lower) = if ra < rb { (ca, cb) } else { (cb, ca) };
                lower == upper || lower + 1 == upper
            }
            _ => false,
        },
        _ => false,
    }
}

/// A top-level domain that does not exist, one edit from `.com`, `.net` or `.org`.
fn tld_typo(tld: &str) -> Option<&'static str> {
    if tld.len() < 2 || tld_exists(tld) {
        return None;
    }
    ["com", "net", "org"]
        .into_iter()
        .find(|good| strsim::osa_distance(tld, good) == 1)
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
                "用户@例子.中国",
                "用户@xn--fsqu00a.xn--fiqs8s",
                "用户@xn--fsqu00a.xn--fiqs8s",
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
                INVISIBLE,
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
            (long_local.into_bytes(), TOO_LONG_LOCAL),
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
            (long_address.into_bytes(), "address longer than 254 bytes"),
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

    fn reason(raw: &str) -> &'static str {
        match check(raw.as_bytes()) {
            Checked::Invalid { reason, .. } => reason,
            other => panic!("{raw:?}: expected invalid, got {other:?}"),
        }
    }

    #[test]
    fn local_parts_are_nfc_before_dedupe_and_sending() {
        let precomposed = valid("Jos\u{e9}@acme-corp.com");
        let combining = valid("Jose\u{301}@acme-corp.com");
        assert_eq!(combining, precomposed);
        assert_eq!(combining.0, "Jos\u{e9}@acme-corp.com");
    }

    #[test]
    fn the_local_part_limit_counts_bytes_of_the_form_sent() {
        // 32 x U+00E9 is 64 bytes once composed, though typed as 96 (e + U+0301).
        let composed_64 = format!("{}@acme-corp.com", "e\u{301}".repeat(32));
        assert_eq!(valid(&composed_64).0.split('@').next().unwrap().len(), 64);
        // 33 of them are 33 characters but 66 bytes: over the limit, and the message says bytes.
        let over = format!("{}@acme-corp.com", "\u{e9}".repeat(33));
        assert_eq!(reason(&over), TOO_LONG_LOCAL);
        assert!(TOO_LONG_LOCAL.contains("64 bytes"));
    }

    #[test]
    fn a_stray_closing_quote_is_junk_not_a_punycode_label() {
        // Lenient (web) IDNA turned this into jane@example.xn--com-9o0a and it was paid for.
        assert_eq!(valid("jane@acme-corp.com\u{201d}").0, "jane@acme-corp.com");
        assert_eq!(
            valid("\"jane@acme-corp.com\u{201d}").0,
            "jane@acme-corp.com"
        );
        assert!(reason("jane@acme-corp.co\u{201d}m").starts_with("symbol, emoji or punctuation"));
        assert!(reason("jane@example.com\u{201d}").starts_with("example.com is reserved"));
    }

    #[test]
    fn unknown_top_level_domains_are_refused_unless_allowed() {
        let relaxed = Rules {
            allow_unknown_tld: true,
        };
        for raw in ["jane@acme-corp.notatld", "jane@acme.con", "jane@acme.corp"] {
            assert_eq!(reason(raw), UNKNOWN_TLD, "{raw}");
            assert!(
                matches!(check_with(raw.as_bytes(), relaxed), Checked::Valid(_)),
                "{raw}"
            );
        }
        // Reserved names stay refused: no rule makes them receive mail.
        for raw in ["jane@acme.test", "jane@example.com", "jane@box.local"] {
            assert!(
                matches!(check_with(raw.as_bytes(), relaxed), Checked::Invalid { .. }),
                "{raw}"
            );
        }
        for tld in [
            "com",
            "io",
            "uk",
            "photography",
            "xn--p1ai",
            "xn--fiqs8s",
            "museum",
        ] {
            assert!(tld_exists(tld), "{tld}");
        }
        for tld in [
            "con",
            "cmo",
            "corp",
            "lan",
            "home",
            "mail",
            "xn--zckzah",
            "c",
        ] {
            assert!(!tld_exists(tld), "{tld}");
        }
    }

    /// `rest` (what follows a provider's name) is a typo of the provider's `p_rest`: the
    /// straightforward rule [`provider_typo`] must keep.
    fn is_tld_typo(rest: &str, p_rest: &str) -> bool {
        if rest.is_empty() || rest == p_rest {
            return false;
        }
        if p_rest == "com" && matches!(rest, "co" | "cm" | "om") {
            return true;
        }
        let tld = rest.rsplit('.').next().unwrap_or(rest);
        !tld_exists(tld) && strsim::osa_distance(rest, p_rest) == 1
    }

    /// [`provider_typo`] as it was first written, provider by provider: the reference the
    /// quick one must agree with.
    fn provider_typo_reference(domain: &str) -> Option<&'static str> {
        let (name, rest) = domain.split_once('.').unwrap_or((domain, ""));
        let mut best: Option<(usize, &'static str)> = None;
        for &provider in PROVIDERS {
            let (p_name, p_rest) = provider.split_once('.').unwrap_or((provider, ""));
            let distance = if rest.is_empty() {
                match name == p_name || name == [p_name, p_rest].concat() {
                    true => 0,
                    false => continue,
                }
            } else if rest == p_rest || is_tld_typo(rest, p_rest) {
                match name == p_name {
                    true => 0,
                    false => match name_typo(name, p_name) {
                        Some(distance) => distance,
                        None => continue,
                    },
                }
            } else {
                continue;
            };
            if best.is_none_or(|(d, _)| distance < d) {
                best = Some((distance, provider));
            }
        }
        best.map(|(_, provider)| provider)
    }

    #[test]
    fn provider_typo_agrees_with_the_provider_by_provider_rule() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(0x7479_706f);
        let endings = [
            "com",
            "con",
            "cmo",
            "co",
            "cm",
            "om",
            "comm",
            "net",
            "nte",
            "de",
            "ed",
            "fr",
            "rf",
            "co.uk",
            "co.ukk",
            "couk",
            "co.in",
            "co.jp",
            "com.br",
            "com.bt",
            "ru",
            "me",
            "mee",
            "org",
            "io",
            "xyz",
            "zz",
            "acme-corp.com",
            "com.au",
            "com.auu",
            "",
        ];
        let letters = b"abcdefghijklmnopqrstuvwxyz0123456789.-";
        let mut agreed = 0;
        let mut found = 0;
        for _ in 0..50_000 {
            let &(provider, p_name, p_rest) =
                &split_providers()[rng.random_range(0..split_providers().len())];
            // A provider's name with up to three random edits, or a random word.
            let mut name: Vec<u8> = match rng.random_range(0..4) {
                0 => (0..rng.random_range(0..9))
                    .map(|_| letters[rng.random_range(0..letters.len())])
                    .collect(),
                _ => p_name.as_bytes().to_vec(),
            };
            for _ in 0..rng.random_range(0..4) {
                let at = rng.random_range(0..=name.len());
                let c = letters[rng.random_range(0..letters.len())];
                match rng.random_range(0..4) {
                    0 => name.insert(at, c),
                    1 if at < name.len() => {
                        name.remove(at);
                    }
                    2 if at < name.len() => name[at] = c,
                    3 if at + 1 < name.len() => name.swap(at, at + 1),
                    _ => {}
                }
            }
            let name = String::from_utf8(name).unwrap();
            let ending = match rng.random_range(0..3) {
                0 => p_rest,
                _ => endings[rng.random_range(0..endings.len())],
            };
            let domain = match (ending, rng.random_range(0..8)) {
                ("", _) => name,
                (ending, 0) => format!("{name}{ending}"),
                (ending, _) => format!("{name}.{ending}"),
            };
            let want = provider_typo_reference(&domain);
            assert_eq!(provider_typo(&domain), want, "{domain:?} ({provider})");
            agreed += 1;
            found += usize::from(want.is_some());
        }
        // The domains reach both answers often enough to mean something.
        assert!(
            found > agreed / 10 && found < agreed * 9 / 10,
            "{found} of {agreed}"
        );
    }

    #[test]
    fn suggestions() {
        let cases: &[(&str, Option<&str>)] = &[
            ("jane@gmial.com", Some("jane@gmail.com")),
            ("Jane.Doe@GMAIL.CON", Some("Jane.Doe@gmail.com")),
            ("jane@hotmial.com", Some("jane@hotmail.com")),
            ("jane@yahoo.con", Some("jane@yahoo.com")),
            ("jane@gmail.cmo", Some("jane@gmail.com")),
            ("jane@gmial.con", Some("jane@gmail.com")),
            ("jane@hotmai.co.uk", Some("jane@hotmail.co.uk")),
            ("jane@yaho.fr", Some("jane@yahoo.fr")),
            ("jane@gmailcom", Some("jane@gmail.com")),
            ("jane@fmail.com", Some("jane@gmail.com")),
            ("jane@acme-corp.cmo", Some("jane@acme-corp.com")),
            ("jane@acme-corp.nte", Some("jane@acme-corp.net")),
            ("jane@acme-corp.ogr", Some("jane@acme-corp.org")),
            // Exact providers, real domains near them, real top-level domains: nothing.
            ("jane@gmail.com", None),
            ("jane@hotmail.co.uk", None),
            ("jane@yahoo.co.jp", None),
            ("jane@email.com", None),
            ("jane@aon.com", None),
            ("jane@ao.com", None),
            ("jane@cloud.com", None),
            ("jane@wahoo.com", None),
            ("jane@life.com", None),
            ("jane@gmail.net", None),
            ("jane@acme-corp.co", None),
            ("jane@acme-corp.cm", None),
            // No suggestion that would itself be refused, nor for what holds no address.
            ("jane doe@gmial.com", None),
            ("@gmial.com", None),
            ("gmial.com", None),
            ("", None),
            ("jane@b\u{fc}cher.con", None),
        ];
        for (address, want) in cases {
            assert_eq!(suggest(address).as_deref(), *want, "{address}");
        }
    }

    #[test]
    fn the_suggester_says_what_suggest_says_row_after_row() {
        // Domains with and without a suggestion, met again under other local parts (one
        // that the suggestion would refuse), in other cases, and past the memo's size.
        let domains = [
            "gmial.com",
            "GMAIL.CON",
            "gmail.com",
            "acme-corp.cmo",
            "acme-corp.com",
        ];
        let locals = ["jane", "Jane.Doe", "jane doe", "", "x"];
        let mut addresses: Vec<String> = Vec::new();
        for round in 0..3 {
            for domain in domains {
                for local in locals {
                    addresses.push(format!("{local}@{domain}"));
                }
            }
            if round == 1 {
                addresses.extend((0..SUGGESTER_MEMO).map(|i| format!("a@d{i}.cmo")));
            }
        }
        addresses.extend(["gmial.com".into(), "@".into(), "a@b\u{fc}cher.con".into()]);
        let mut suggester = Suggester::default();
        let mut suggested = 0;
        for address in &addresses {
            let want = suggest(address);
            suggested += usize::from(want.is_some());
            assert_eq!(suggester.suggest(address), want, "{address}");
        }
        assert!(
            suggester.memo.len() < SUGGESTER_MEMO,
            "{}",
            suggester.memo.len()
        );
        assert!(suggested > SUGGESTER_MEMO, "{suggested}");
    }

    #[test]
    fn typo_targets_are_not_real_top_level_domains() {
        for tld in ["con", "cmo", "comm", "vom", "xom", "nte", "ogr", "cpm"] {
            assert!(!tld_exists(tld) && tld_typo(tld).is_some(), "{tld}");
        }
        for tld in ["co", "cm", "om", "net", "ne", "org"] {
            assert_eq!(tld_typo(tld), None, "{tld} exists");
        }
        assert!(adjacent(b'g', b'f') && adjacent(b'g', b'h') && adjacent(b'g', b't'));
        assert!(adjacent(b'g', b'b') && adjacent(b'y', b'u') && !adjacent(b'y', b'w'));
        assert!(!adjacent(b'g', b'e') && !adjacent(b'1', b'2'));
    }

    #[test]
    fn never_panics_on_garbage() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(0x6d61_696c);
        // Fragments that exercise every branch when glued together at random.
        let pieces: &[&str] = &[
            "a",
            "Z",
            "@",
            ".",
            "..",
            "-",
            "<",
            ">",
            "\"",
            "'",
            " ",
            "\u{a0}",
            "\u{200b}",
            "mailto:",
            "MAILTO:",
            "?",
            ",",
            ";",
            "[",
            "]",
            "é",
            "ü",
            "用",
            "xn--",
            "\u{feff}",
            "\u{201c}",
            "\u{201d}",
            "\0",
            "\r\n",
            "com",
            "bücher",
            "1",
            "_",
            "\u{200e}",
            "\u{202e}",
            "。",
            "，",
            "（",
            "）",
            "(",
            ")",
            "[",
            "]",
            ":",
            "：",
            "Email: ",
            "mailto://",
            "%2B",
            "%",
            "%E9",
            "\u{301}",
            "❤",
            "™",
            "xn--a",
            "xn--i-7iq",
            "gmial",
            "gmail",
            "hotmial",
            ".con",
            ".cmo",
            ".test",
            "example",
            ".local",
            "* ",
            "\u{fffd}",
            "\u{ff0e}",
            "ｇ",
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
            let checked = check(&bytes);
            if let Checked::Valid(a) = &checked {
                // Whatever passes must pass again unchanged: normalisation is idempotent.
                assert_eq!(check(a.normalized.as_bytes()), checked);
                assert!(a.normalized.len() <= MAX_ADDRESS);
            }
            let normalized = match &checked {
                Checked::Valid(a) => &a.normalized,
                Checked::Invalid { normalized, .. } => normalized,
                Checked::Empty => continue,
            };
            if let Some(s) = suggest(normalized) {
                assert!(matches!(check(s.as_bytes()), Checked::Valid(_)), "{s:?}");
            }
        }
    }

    #[test]
    fn the_plain_path_agrees_with_the_full_check() {
        use rand::prelude::IndexedRandom;
        let mut rng = rand::rngs::StdRng::seed_from_u64(0x706c_6169);
        let sized = |rng: &mut rand::rngs::StdRng, edges: &[usize]| {
            let len = if rng.random_bool(0.5) {
                *edges.choose(rng).unwrap()
            } else {
                rng.random_range(1..12)
            };
            let mut text: Vec<u8> = (0..len)
                .map(|_| *b"abkxyzQZ0179".choose(rng).unwrap())
                .collect();
            // Now and then a character that may break a rule, anywhere.
            if rng.random_bool(0.3) {
                let at = rng.random_range(0..len);
                text[at] = *b"-_+.".choose(rng).unwrap();
            }
            String::from_utf8(text).unwrap()
        };
        let tlds: Vec<&str> =
            "com COM io uk de org Net co museum test example localhost zz 123 1a \
                               xn--p1ai ab--cd -co co-"
                .split_whitespace()
                .chain([""])
                .collect();
        let (mut cells, mut fast) = (0, 0);
        for round in 0..40_000 {
            let cell = if round % 2 == 0 {
                // An address's shape, with lengths at and around every limit.
                let local = sized(&mut rng, &[1, 63, 64, 65]);
                let labels: Vec<String> = (0..rng.random_range(0..4))
                    .map(|_| sized(&mut rng, &[1, 2, 4, 63, 64]))
                    .collect();
                let tld = tlds.choose(&mut rng).unwrap();
                let mut domain = labels.join(".");
                if !domain.is_empty() || rng.random_bool(0.9) {
                    domain.push('.');
                }
                domain.push_str(tld);
                if rng.random_bool(0.05) {
                    domain = domain.replace('.', "..");
                }
                format!("{local}@{domain}")
            } else {
                // Pieces glued at random.
                let pieces = [
                    "a", "Z", "9", ".", "..", "-", "--", "_", "+", "@", "com", "xn--",
                ];
                (0..rng.random_range(1..14))
                    .map(|_| *pieces.choose(&mut rng).unwrap())
                    .collect()
            };
            if !super::is_plain(&cell) {
                continue;
            }
            cells += 1;
            for allow_unknown_tld in [false, true] {
                let rules = Rules { allow_unknown_tld };
                let full = super::check_syntax(&cell, rules);
                if let Some(plain) = super::check_plain(&cell, rules) {
                    assert_eq!(plain, full, "{cell:?}");
                    fast += 1;
                }
                assert_eq!(check_with(cell.as_bytes(), rules), full, "{cell:?}");
            }
        }
        // The plain path took many cells and left many to the full check: the comparison
        // covers both sides of every rule it decides.
        assert!(
            fast > 4_000 && cells * 2 - fast > 8_000,
            "{cells} plain, {fast} fast"
        );
    }

    #[test]
    fn split_last_is_rsplit_once() {
        for text in [
            "a@b.com", "a@b@c", "@", "", "x", "é@ü.de", "a.b.c", "@@", "ü",
        ] {
            for byte in [b'@', b'.'] {
                assert_eq!(
                    super::split_last(text, byte),
                    text.rsplit_once(byte as char),
                    "{text:?}"
                );
            }
        }
    }

    #[test]
    fn a_plain_cell_is_what_peeling_leaves_it() {
        for cell in [
            "jane@acme-corp.com",
            "j.doe+tag@mail.acme-corp.co.uk",
            "a-b_c@x-y.io",
            "1@2.3",
            "a@b",
            "@x.com",
            "x@",
            "-a@b.com",
            "a@b.com.",
            "a@b.com-",
            "+a@b.com",
            "a..b@@c",
        ] {
            if super::is_plain(cell) {
                assert_eq!(super::peel(cell), (cell, false), "{cell:?}");
            }
        }
        assert!(super::is_plain("jane@acme-corp.com"));
        for cell in [
            "-a@b.com",
            "a@b.com.",
            " a@b.com",
            "<a@b.com>",
            "mailto:a@b.com",
            "é@b.com",
        ] {
            assert!(!super::is_plain(cell), "{cell:?}");
        }
    }
}
