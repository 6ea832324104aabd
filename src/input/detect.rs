//! Layout detection over a sample of the input: delimiter, line ending, header, email column,
//! and our own annotation block (for re-validating an annotated file).
//!
//! Owns the heuristics only: pure functions over bytes and `csv::ByteRecord`s, no I/O, no
//! errors (the caller turns "not found" into a message that lists what was seen).

use crate::address::{self, Checked};
use crate::schema::{ANNOTATION_COLUMNS, COMPANY_COLUMNS, FIRST_RELEASE_COLUMNS};

/// Delimiters we sniff, in tie-break order.
const CANDIDATE_DELIMITERS: [u8; 4] = [b',', b';', b'\t', b'|'];

/// Records used by the delimiter sniffer; enough to see ragged rows, cheap on 64 KiB.
const SNIFF_RECORDS: usize = 100;

/// Header names that mean "the email column", normalised (see [`normalize_header`]), in order of
/// preference: a generic name beats a qualified one, "work" beats "personal".
const EMAIL_HEADER_NAMES: &[&str] = &[
    "email",
    "emailaddress",
    "mail",
    "mailaddress",
    "emailaddr",
    "emailid",
    "email1",
    "emailaddress1",
    "primaryemail",
    "primaryemailaddress",
    "emails",
    "courriel",
    "correo",
    "correoelectronico",
    "correoelectrónico",
    "emailadresse",
    "mailadresse",
    "epost",
    "eposta",
    "workemail",
    "workemailaddress",
    "businessemail",
    "businessemailaddress",
    "companyemail",
    "professionalemail",
    "officeemail",
    "contactemail",
    "contactemailaddress",
    "personalemail",
    "personalemailaddress",
    "privateemail",
    "email2",
    "secondaryemail",
];

/// Parses the complete records at the start of `sample` (at most `max`).
///
/// When the sample is not the whole input its last record may be cut short, so it is dropped,
/// unless `max` records were found before reaching it.
pub(super) fn parse_sample(
    sample: &[u8],
    delimiter: u8,
    at_eof: bool,
    max: usize,
) -> Vec<csv::ByteRecord> {
    let mut rdr = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .delimiter(delimiter)
        .from_reader(sample);
    let mut records = Vec::new();
    let mut record = csv::ByteRecord::new();
    // Reading from a slice cannot fail with I/O; any error just ends the sample.
    while records.len() <= max {
        match rdr.read_byte_record(&mut record) {
            Ok(true) => records.push(record.clone()),
            _ => break,
        }
    }
    if records.len() > max {
        records.truncate(max);
    } else if !at_eof {
        records.pop();
    }
    records
}

/// Picks the delimiter whose field count is consistent (> 1, same on at least 90% of the sampled
/// records) with the most fields; `,` when none is.
pub(super) fn sniff_delimiter(sample: &[u8], at_eof: bool) -> u8 {
    // The winner splits most records into its most common field count (a few ragged rows are
    // tolerated: more than half must agree), then the one with more fields.
    let mut best: Option<((usize, usize), u8)> = None;
    for delimiter in CANDIDATE_DELIMITERS {
        let records = parse_sample(sample, delimiter, at_eof, SNIFF_RECORDS);
        if records.is_empty() {
            continue;
        }
        let mut counts: Vec<(usize, usize)> = Vec::new();
        for record in &records {
            match counts.iter_mut().find(|(len, _)| *len == record.len()) {
                Some((_, n)) => *n += 1,
                None => counts.push((record.len(), 1)),
            }
        }
        let Some(&(fields, n)) = counts
            .iter()
            .max_by_key(|&&(len, n)| (n, std::cmp::Reverse(len)))
        else {
            continue;
        };
        if fields < 2 || n * 2 <= records.len() {
            continue;
        }
        let score = (n * 1000 / records.len(), fields);
        if best.is_none_or(|(best_score, _)| score > best_score) {
            best = Some((score, delimiter));
        }
    }
    best.map_or(b',', |(_, delimiter)| delimiter)
}

/// The most common line ending in the sample (`\r\n`, `\n` or `\r`); `\n` when there is none.
pub(super) fn dominant_terminator(sample: &[u8]) -> Vec<u8> {
    let (mut crlf, mut lf, mut cr) = (0usize, 0usize, 0usize);
    let mut i = 0;
    while i < sample.len() {
        match sample[i] {
            b'\r' if sample.get(i + 1) == Some(&b'\n') => {
                crlf += 1;
                i += 1;
            }
            // A final `\r` may be the first half of a `\r\n` cut by the sample's end.
            b'\r' if i + 1 < sample.len() => cr += 1,
            b'\n' => lf += 1,
            _ => {}
        }
        i += 1;
    }
    if crlf > 0 && crlf >= lf && crlf >= cr {
        b"\r\n".to_vec()
    } else if cr > lf {
        b"\r".to_vec()
    } else {
        b"\n".to_vec()
    }
}

/// Lower-cases a header name and keeps only letters and digits, so `E-Mail Address`,
/// `email_address` and `EmailAddress` compare equal.
pub(super) fn normalize_header(name: &str) -> String {
    name.chars()
        .filter(|c| c.is_alphanumeric())
        .flat_map(char::to_lowercase)
        .collect()
}

/// True for one of our own annotation columns (with or without the configured prefix): they
/// hold addresses too, but are never the input's email column.
pub(super) fn is_annotation_name(name: &str, prefix: Option<&str>) -> bool {
    let normalized = normalize_header(name);
    ANNOTATION_COLUMNS
        .iter()
        .chain(&COMPANY_COLUMNS)
        .any(|base| {
            normalized == normalize_header(base)
                || prefix.is_some_and(|p| normalized == normalize_header(&format!("{p}{base}")))
        })
}

/// Rank of an exact email header name (lower is better), if it is one.
fn exact_rank(name: &str) -> Option<usize> {
    let normalized = normalize_header(name);
    EMAIL_HEADER_NAMES.iter().position(|n| *n == normalized)
}

/// A name that mentions email without being an exact match (`Email (work)`, `EmailAddr_2`).
fn mentions_email(name: &str, prefix: Option<&str>) -> bool {
    let normalized = normalize_header(name);
    (normalized.contains("email") || normalized.contains("courriel"))
        && !is_annotation_name(name, prefix)
}

/// Does this header cell name an email column?
fn names_email_column(name: &str, prefix: Option<&str>) -> bool {
    exact_rank(name).is_some() || mentions_email(name, prefix)
}

/// If the header ends with our annotation block (as this version or an earlier one wrote it,
/// with or without the company columns, same prefix), the index of its first column.
pub(super) fn replace_from(headers: &[String], prefix: Option<&str>) -> Option<usize> {
    let prefix = prefix.unwrap_or("");
    let matches = |h: &String, base: &&str| {
        let h = h.trim().as_bytes();
        h.len() == prefix.len() + base.len()
            && h[..prefix.len()].eq_ignore_ascii_case(prefix.as_bytes())
            && h[prefix.len()..].eq_ignore_ascii_case(base.as_bytes())
    };
    (FIRST_RELEASE_COLUMNS..=ANNOTATION_COLUMNS.len())
        .rev()
        .flat_map(|n| [(n, &COMPANY_COLUMNS[..]), (n, &[][..])])
        .find_map(|(n, company)| {
            let start = headers.len().checked_sub(n + company.len())?;
            let mut names = ANNOTATION_COLUMNS[..n].iter().chain(company);
            headers[start..]
                .iter()
                .all(|h| names.next().is_some_and(|base| matches(h, base)))
                .then_some(start)
        })
}

fn lossy(field: &[u8]) -> String {
    String::from_utf8_lossy(field).into_owned()
}

/// Per column: (valid addresses, non-empty cells) over the given records.
fn content_scores(records: &[csv::ByteRecord], width: usize) -> Vec<(usize, usize)> {
    let mut scores = vec![(0usize, 0usize); width];
    for record in records {
        for (score, field) in scores.iter_mut().zip(record.iter()) {
            match address::check(field) {
                Checked::Empty => {}
                Checked::Invalid { .. } => score.1 += 1,
                Checked::Valid(_) => {
                    score.0 += 1;
                    score.1 += 1;
                }
            }
        }
    }
    scores
}

/// A column whose values are addresses: at least one valid and at least half of the non-empty
/// ones valid. Returns the best such column among those `allowed`.
fn best_by_content(
    records: &[csv::ByteRecord],
    width: usize,
    allowed: impl Fn(usize) -> bool,
) -> Option<usize> {
    content_scores(records, width)
        .into_iter()
        .enumerate()
        .filter(|&(i, (valid, non_empty))| allowed(i) && valid > 0 && valid * 2 >= non_empty)
        // max_by_key keeps the last maximum; reverse the index so the leftmost wins ties.
        .max_by_key(|&(i, (valid, _))| (valid, std::cmp::Reverse(i)))
        .map(|(i, _)| i)
}

/// Decides whether the first sampled record is a header (when the user did not say).
///
/// Yes when a cell names an email column; yes when the first row holds no address-like value
/// (no `@`) while later rows hold addresses, unless the first row is empty exactly where the
/// later rows keep their addresses (then it is a data row with a missing address). When no row
/// holds an address, a first row with every cell filled is taken as a header, so that the
/// "no email column" message can list names.
pub(super) fn looks_like_header(records: &[csv::ByteRecord], prefix: Option<&str>) -> bool {
    let Some(first) = records.first() else {
        return false;
    };
    if first.iter().any(|f| f.contains(&b'@')) {
        return false;
    }
    if first
        .iter()
        .any(|f| names_email_column(&String::from_utf8_lossy(f), prefix))
    {
        return true;
    }
    let later = &records[1..];
    let width = later.iter().map(|r| r.len()).max().unwrap_or(0);
    if let Some(column) = best_by_content(later, width, |_| true) {
        return first
            .get(column)
            .is_some_and(|f| !String::from_utf8_lossy(f).trim().is_empty());
    }
    !first.is_empty()
        && first
            .iter()
            .all(|f| !String::from_utf8_lossy(f).trim().is_empty())
}

/// Finds the email column automatically: by header name, then by content, then the only column.
/// `data` are the sampled data rows (header excluded); columns from `stop` on (our annotation
/// block) are never picked.
pub(super) fn find_email_column(
    headers: Option<&[String]>,
    data: &[csv::ByteRecord],
    width: usize,
    stop: usize,
    prefix: Option<&str>,
) -> Option<(usize, &'static str)> {
    let allowed = |i: usize| {
        i < stop
            && headers
                .and_then(|h| h.get(i))
                .is_none_or(|name| !is_annotation_name(name, prefix))
    };
    if let Some(headers) = headers {
        let exact = headers
            .iter()
            .enumerate()
            .filter(|&(i, _)| allowed(i))
            .filter_map(|(i, name)| exact_rank(name).map(|rank| (rank, i)))
            .min();
        if let Some((_, i)) = exact {
            return Some((i, "header name"));
        }
        // A name that only mentions email (`email_opt_in`?) must also hold addresses.
        let mentions =
            |i: usize| allowed(i) && headers.get(i).is_some_and(|n| mentions_email(n, prefix));
        if let Some(i) = best_by_content(data, width, mentions) {
            return Some((i, "header name"));
        }
    }
    if width == 1 && allowed(0) {
        return Some((0, "single column"));
    }
    best_by_content(data, width, allowed).map(|i| (i, "content"))
}

/// Header names (or first-row values) as text, for messages.
pub(super) fn names(record: &csv::ByteRecord) -> Vec<String> {
    record.iter().map(lossy).collect()
}

/// Bytes looked at to tell text from binary.
const BINARY_PROBE: usize = 4096;

/// True when the start of the input is mostly not text: more than 1 in 100 of its first bytes
/// are control characters other than tab, line endings and form feed. Text in any 8-bit
/// encoding (Latin-1, UTF-8) has none; compressed or binary formats have about one in eight.
pub(super) fn looks_binary(sample: &[u8]) -> bool {
    let probe = &sample[..sample.len().min(BINARY_PROBE)];
    let controls = probe
        .iter()
        .filter(|&&b| (b < 0x20 && !matches!(b, b'\t' | b'\n' | b'\r' | 0x0c)) || b == 0x7f)
        .count();
    controls * 100 > probe.len()
}

/// What the first bytes of a binary input suggest it is, for the message.
pub(super) fn binary_kind(sample: &[u8]) -> Option<&'static str> {
    const MAGIC: &[(&[u8], &str)] = &[
        (
            b"PK\x03\x04",
            "a ZIP archive (an .xlsx or .ods spreadsheet?)",
        ),
        (
            b"\xD0\xCF\x11\xE0",
            "an old Office document (an .xls spreadsheet?)",
        ),
        (b"\x1F\x8B", "a gzip-compressed file"),
        (b"%PDF", "a PDF document"),
        (b"SQLite format 3\0", "an SQLite database"),
    ];
    MAGIC
        .iter()
        .find(|(magic, _)| sample.starts_with(magic))
        .map(|(_, kind)| *kind)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binary_table() {
        let random: Vec<u8> = (0..4096u32)
            .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
            .collect();
        let cases: &[(&[u8], bool, Option<&str>)] = &[
            (b"name,email\njane,jane@acme.com\n", false, None),
            (b"Jos\xe9;M\xfcnchen;\xff\xfe\r\n", false, None),
            (b"a\tb\x0cc\r\n", false, None),
            (b"name\0,email\njane,jane@acme.com\n", true, None),
            (b"PK\x03\x04\x14\0\x06\0\x08\0\0\0!\0", true, Some("ZIP")),
            (b"\x1F\x8B\x08\0\0\0\0\0\0\x03", true, Some("gzip")),
            (&random, true, None),
            (b"", false, None),
        ];
        for (bytes, binary, kind) in cases {
            assert_eq!(looks_binary(bytes), *binary, "{bytes:?}");
            match kind {
                Some(word) => assert!(binary_kind(bytes).unwrap().contains(word), "{bytes:?}"),
                None if bytes.len() < 100 => assert_eq!(binary_kind(bytes), None, "{bytes:?}"),
                None => {}
            }
        }
    }

    fn records(text: &str, delimiter: u8) -> Vec<csv::ByteRecord> {
        parse_sample(text.as_bytes(), delimiter, true, 200)
    }

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn sniff_table() {
        let cases: &[(&str, u8)] = &[
            ("a,b,c\n1,2,3\n", b','),
            ("a;b;c\n1;2;3\n", b';'),
            ("a\tb\tc\n1\t2\t3\n", b'\t'),
            ("a|b|c\n1|2|3\n", b'|'),
            // Commas inside quoted fields do not count.
            (
                "name;email\n\"Doe, Jane\";jane@x.com\n\"Roe, Rick\";rick@x.com\n",
                b';',
            ),
            // Commas in free text vary per row; semicolons are consistent.
            (
                "a;b;notes\n1;2;hello, world\n3;4;no comma\n5;6;x,y,z\n",
                b';',
            ),
            // Ragged rows do not hide the delimiter.
            ("n;e;c\nx;y;z\nshort;s\nlong;l;x;y;z\na;b;c\nd;e;f\n", b';'),
            // A plain list of addresses: no candidate has more than one field.
            ("jane@x.com\nbob@y.org\n", b','),
            // Consistent with two candidates: the one with more fields wins.
            ("a,b;c,d;e;f\n1,2;3,4;5;6\n", b';'),
            // Nothing consistent: default.
            ("a,b\n1;2;3\nx|y\n", b','),
            ("", b','),
            // Quoted line breaks keep records whole.
            ("a;b\n\"multi\nline; text\";2\n3;4\n", b';'),
        ];
        for (text, want) in cases {
            assert_eq!(sniff_delimiter(text.as_bytes(), true), *want, "{text:?}");
        }
    }

    #[test]
    fn sample_drops_a_cut_last_record_unless_at_eof() {
        let text = b"a,b\n1,2\n3,4";
        assert_eq!(parse_sample(text, b',', true, 200).len(), 3);
        assert_eq!(parse_sample(text, b',', false, 200).len(), 2);
        assert_eq!(parse_sample(text, b',', false, 2).len(), 2);
        assert_eq!(parse_sample(text, b',', false, 1).len(), 1);
    }

    #[test]
    fn terminator_table() {
        let cases: &[(&[u8], &[u8])] = &[
            (b"a\nb\n", b"\n"),
            (b"a\r\nb\r\n", b"\r\n"),
            (b"a\rb\rc", b"\r"),
            (b"a", b"\n"),
            (b"a\r\nb\nc\r\n", b"\r\n"),
            (b"a\nb\nc\r\n", b"\n"),
            (b"a\n", b"\n"),
            (b"a\r", b"\n"), // a lone final \r might be half a \r\n
        ];
        for (text, want) in cases {
            assert_eq!(dominant_terminator(text), want.to_vec(), "{text:?}");
        }
    }

    #[test]
    fn header_name_table() {
        // (header, column picked)
        type Found = Option<(usize, &'static str)>;
        let cases: &[(&[&str], Found)] = &[
            (&["first_name", "Email"], Some((1, "header name"))),
            (&["first_name", "E-Mail"], Some((1, "header name"))),
            (&["first_name", "e_mail"], Some((1, "header name"))),
            (&["first_name", "EMAIL ADDRESS"], Some((1, "header name"))),
            (&["first_name", "Email-Address"], Some((1, "header name"))),
            (&["first_name", "emailAddress"], Some((1, "header name"))),
            (&["first_name", "Mail"], Some((1, "header name"))),
            (&["first_name", "Work Email"], Some((1, "header name"))),
            (&["first_name", "Business E-mail"], Some((1, "header name"))),
            (&["first_name", "Personal Email"], Some((1, "header name"))),
            (&["first_name", "Contact Email"], Some((1, "header name"))),
            (&["first_name", "Email1"], Some((1, "header name"))),
            (&["first_name", "Primary Email"], Some((1, "header name"))),
            (&["first_name", "Courriel"], Some((1, "header name"))),
            (&["first_name", " email "], Some((1, "header name"))),
            // Exact and generic beats qualified, wherever it stands.
            (
                &["Personal Email", "Work Email", "Email"],
                Some((2, "header name")),
            ),
            (&["Work Email", "Personal Email"], Some((0, "header name"))),
            // Our own annotation columns are never the input column.
            (
                &["email_status", "email_message", "email_normalized", "Email"],
                Some((3, "header name")),
            ),
            (&["email_normalized", "email_status"], None),
            // Not an exact name, and the column holds no addresses: fall back to content.
            (&["Email (work)", "other"], Some((1, "content"))),
            // "contains email" needs addresses in the column (the data below has them in 1).
            (&["email_opt_in", "contact"], Some((1, "content"))),
            (&["name", "Email (work)"], Some((1, "header name"))),
        ];
        let data = records("yes,jane@acme-corp.com\nno,bob@northwind.io\n", b',');
        for (header, want) in cases {
            let header = strings(header);
            let found =
                find_email_column(Some(&header), &data, 2.max(header.len()), usize::MAX, None);
            assert_eq!(found, *want, "{header:?}");
        }
    }

    #[test]
    fn content_fallback_table() {
        // (csv without header, expected column, how)
        let cases: &[(&str, Option<(usize, &str)>)] = &[
            (
                "Jane,jane@acme-corp.com\nBob,bob@northwind.io\n",
                Some((1, "content")),
            ),
            // Half the non-empty values valid is enough; empty cells do not count.
            (
                "a,jane@acme-corp.com\nb,not an address\nc,\n",
                Some((1, "content")),
            ),
            // Fewer than half valid: not an email column.
            ("a,jane@acme-corp.com\nb,x\nc,y\n", None),
            // The column with the most valid addresses wins.
            (
                "a@b.co,jane@acme-corp.com\nx,bob@northwind.io\n",
                Some((1, "content")),
            ),
            (
                "jane@acme-corp.com\nbob@northwind.io\n",
                Some((0, "single column")),
            ),
            ("not an address\n", Some((0, "single column"))),
            ("Jane,Doe\nBob,Roe\n", None),
        ];
        for (text, want) in cases {
            let data = records(text, b',');
            let width = data.iter().map(|r| r.len()).max().unwrap_or(0);
            assert_eq!(
                find_email_column(None, &data, width, usize::MAX, None),
                *want,
                "{text:?}"
            );
        }
    }

    #[test]
    fn content_never_picks_annotation_columns() {
        let header = strings(&["name", "contact", "email_status", "email_normalized"]);
        let data = records("Jane,x,valid,jane@acme-corp.com\n", b',');
        assert_eq!(
            find_email_column(Some(&header), &data, 4, usize::MAX, None),
            None
        );
        let data = records("Jane,jane@acme-corp.com,valid,jane@acme-corp.com\n", b',');
        assert_eq!(
            find_email_column(Some(&header), &data, 4, usize::MAX, None),
            Some((1, "content"))
        );
        // Columns from `stop` on are excluded whatever their name.
        let header = strings(&["a", "b"]);
        let data = records("x,jane@acme-corp.com\n", b',');
        assert_eq!(find_email_column(Some(&header), &data, 2, 1, None), None);
    }

    #[test]
    fn header_detection_table() {
        let cases: &[(&str, bool)] = &[
            ("name,email\nJane,jane@acme-corp.com\n", true),
            ("name,Contact\nJane,jane@acme-corp.com\n", true),
            ("Email\n", true),
            ("jane@acme-corp.com\nbob@northwind.io\n", false),
            ("Jane,jane@acme-corp.com\nBob,bob@northwind.io\n", false),
            // First data row simply lacks its address: still data.
            ("Jane,\nBob,bob@northwind.io\n", false),
            // No addresses anywhere: a fully filled first row reads as a header.
            ("name,phone\nJane,555\n", true),
            ("name,phone\n", true),
            (",phone\nJane,555\n", false),
            ("", false),
        ];
        for (text, want) in cases {
            assert_eq!(
                looks_like_header(&records(text, b','), None),
                *want,
                "{text:?}"
            );
        }
    }

    #[test]
    fn replace_from_table() {
        let mut annotated = strings(&["name", "email"]);
        annotated.extend(ANNOTATION_COLUMNS.iter().map(|s| s.to_string()));
        let mut with_company = annotated.clone();
        with_company.extend(COMPANY_COLUMNS.iter().map(|s| s.to_string()));
        let prefixed: Vec<String> = ["name", "email"]
            .iter()
            .map(|s| s.to_string())
            .chain(ANNOTATION_COLUMNS.iter().map(|s| format!("lm_{s}")))
            .collect();
        let mut upper = annotated.clone();
        upper[2] = "Email_Status".into();
        // A file annotated by the first release, before later columns were appended.
        let first_release = annotated[..2 + FIRST_RELEASE_COLUMNS].to_vec();
        let mut first_with_company = first_release.clone();
        first_with_company.extend(COMPANY_COLUMNS.iter().map(|s| s.to_string()));
        let mut partial = first_release.clone();
        partial.pop();
        // Written before `email_others` existed.
        let legacy: Vec<String> = ["name", "email"]
            .iter()
            .chain(ANNOTATION_COLUMNS.iter().filter(|c| **c != "email_others"))
            .map(|s| s.to_string())
            .collect();

        let cases: Vec<(&Vec<String>, Option<&str>, Option<usize>)> = vec![
            (&annotated, None, Some(2)),
            (&with_company, None, Some(2)),
            (&prefixed, Some("lm_"), Some(2)),
            (&prefixed, None, None),
            (&annotated, Some("lm_"), None),
            (&upper, None, Some(2)),
            (&first_release, None, Some(2)),
            (&first_with_company, None, Some(2)),
            (&partial, None, None),
            (&legacy, None, Some(2)),
        ];
        for (headers, prefix, want) in cases {
            assert_eq!(
                replace_from(headers, prefix),
                want,
                "{headers:?} {prefix:?}"
            );
        }
        let only = strings(&ANNOTATION_COLUMNS);
        assert_eq!(replace_from(&only, None), Some(0));
        assert_eq!(replace_from(&strings(&["a"]), None), None);
    }

    #[test]
    fn normalize_header_table() {
        let cases: &[(&str, &str)] = &[
            ("E-Mail Address", "emailaddress"),
            ("email_address", "emailaddress"),
            ("EmailAddress", "emailaddress"),
            (" Work  Email ", "workemail"),
            ("Correo Electrónico", "correoelectrónico"),
        ];
        for (raw, want) in cases {
            assert_eq!(normalize_header(raw), *want);
        }
    }
}
