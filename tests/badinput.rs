//! The bad-input corpus (issue 4), generated here: every file a CRM export or a careless edit
//! can produce, each with its defined outcome: processed as the README documents (every byte
//! of every row kept, addresses that fail the syntax check never sent), or a clear error that
//! names the file and the line. Never a panic.

use leadmagic_mock::Stats;

use crate::util::{rows_with, text, Dir, Mock};

/// What a run of `validate FILE -o out.csv` gave.
struct Run {
    code: Option<i32>,
    stderr: String,
    out: Vec<u8>,
    stats: Stats,
}

fn run(name: &str, input: &[u8]) -> Run {
    let mock = Mock::fast();
    let dir = Dir::new();
    dir.write(name, input);
    let out = dir
        .mailsift(&mock)
        .args(["validate", name, "-o", "out.csv"])
        .output()
        .unwrap();
    let stderr = text(&out.stderr);
    assert!(
        !stderr.contains("panicked") && !stderr.contains("RUST_BACKTRACE"),
        "{name}: {stderr}"
    );
    Run {
        code: out.status.code(),
        stderr,
        out: std::fs::read(dir.path("out.csv")).unwrap_or_default(),
        stats: mock.stats(),
    }
}

/// The output is the input's rows, each followed by the annotation columns: checks that every
/// output line starts with the input line's bytes.
fn assert_rows_kept(input: &[u8], out: &[u8], separator: u8, name: &str) {
    let lines = |b: &[u8]| -> Vec<Vec<u8>> {
        b.split(|&c| c == separator)
            .filter(|l| !l.is_empty() && *l != b"\r")
            .map(|l| l.strip_suffix(b"\r").unwrap_or(l).to_vec())
            .collect()
    };
    let (inp, outp) = (lines(input), lines(out));
    assert_eq!(inp.len(), outp.len(), "{name}: line count");
    for (a, b) in inp.iter().zip(&outp) {
        assert!(b.starts_with(a), "{name}: {} vs {}", text(a), text(b));
    }
}

fn column(rows: &[Vec<String>], name: &str) -> usize {
    rows[0].iter().position(|c| c == name).unwrap()
}

#[test]
fn an_empty_file_gives_an_empty_output_and_asks_nothing() {
    let r = run("empty.csv", b"");
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    assert!(r.out.is_empty());
    assert_eq!(r.stats.validations, 0);
}

#[test]
fn a_header_only_file_gives_the_header_with_the_new_columns() {
    let r = run("header.csv", b"name,email\r\n");
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    assert_eq!(
        text(&r.out),
        "name,email,email_status,email_message,email_normalized,mx_provider,mx_record,\
         is_catch_all,credits_consumed,checked_at,source,email_suggestion,email_others\r\n"
    );
    assert_eq!(r.stats.validations, 0);
}

#[test]
fn bom_and_semicolons_are_detected_and_the_bom_is_kept() {
    let input = "\u{feff}Name;E-Mail;Stadt\nJürgen;valid.j@beispiel.de;München\nAnna;anna@beispiel.de;Köln\n";
    let r = run("bom.csv", input.as_bytes());
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    assert!(r.stderr.contains("delimiter ';'"), "{}", r.stderr);
    assert!(r
        .out
        .starts_with("\u{feff}Name;E-Mail;Stadt;email_status".as_bytes()));
    let rows = rows_with(&r.out[3..], b';');
    assert_eq!(rows[1][3], "valid");
    assert_eq!(r.stats.validations, 2);
    assert_rows_kept(&input.as_bytes()[3..], &r.out[3..], b'\n', "bom");
}

#[test]
fn tab_separated_files_are_read_and_written_with_tabs() {
    let input = b"id\tname\temail\n1\tJane, Doe\tjane@acme.com\n2\tBob\tbob@acme.com\n";
    let r = run("tabs.tsv", input);
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    assert!(r.stderr.contains("delimiter tab"), "{}", r.stderr);
    let rows = rows_with(&r.out, b'\t');
    assert_eq!(rows[0].len(), 3 + 11);
    assert_eq!(rows[1][column(&rows, "email_normalized")], "jane@acme.com");
    assert_rows_kept(input, &r.out, b'\n', "tabs");
}

#[test]
fn carriage_return_only_line_endings_are_kept() {
    let input = b"name,email\rJane,jane@acme.com\rBob,bob@acme.com\r";
    let r = run("cr.csv", input);
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    assert!(!r.out.contains(&b'\n'), "no line feed added");
    assert_eq!(r.out.iter().filter(|&&b| b == b'\r').count(), 3);
    assert_rows_kept(input, &r.out, b'\r', "cr");
    assert_eq!(r.stats.validations, 2);
}

#[test]
fn an_unbalanced_quote_keeps_every_byte_and_a_warning_names_its_line() {
    let input =
        b"name,email\nJane,jane@acme.com\nBob,\"bob@acme.com\nZoe,zoe@acme.com\nMax,max@acme.com\n";
    let r = run("quote.csv", input);
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    assert!(
        r.stderr
            .contains("quote.csv: the quote opened in the row at line 3 is never closed")
            && r.stderr
                .contains("Fix the quoting on line 3 and run the same command again"),
        "{}",
        r.stderr
    );
    // Rows before the quote are validated; from the quote on, one field, kept, not sent.
    assert!(r.out.starts_with(b"name,email,email_status"));
    assert!(r.out.windows(input.len() - 30).any(|w| w == &input[30..]));
    let sent = r.stats.per_address.unwrap();
    assert!(sent.contains_key("jane@acme.com") && !sent.contains_key("zoe@acme.com"));
}

#[test]
fn a_finished_job_whose_input_was_fixed_runs_again_with_the_same_command() {
    let mock = Mock::fast();
    let dir = Dir::new();
    let broken = "name,email\nJane,jane@acme.com\nBob,\"bob@acme.com\nZoe,zoe@acme.com\n";
    dir.write("quote.csv", broken);
    let job = ["validate", "quote.csv", "-o", "out.csv"];
    dir.mailsift(&mock).args(job).assert().success();
    dir.write("quote.csv", broken.replace("\"bob", "bob"));
    let out = dir.mailsift(&mock).args(job).assert().success();
    let stderr = text(&out.get_output().stderr);
    assert!(
        !stderr.contains("already done") && !stderr.contains("never closed"),
        "{stderr}"
    );
    let rows = rows_with(&dir.read("out.csv"), b',');
    assert_eq!(rows.len(), 4);
    assert_eq!(
        rows[1][column(&rows, "source")],
        "cache",
        "paid for by the first run"
    );
    assert_eq!(rows[2][column(&rows, "source")], "api");
    assert_eq!(rows[3][column(&rows, "email_normalized")], "zoe@acme.com");
    // Unchanged, it is done.
    dir.mailsift(&mock)
        .args(job)
        .assert()
        .success()
        .stderr(predicates::str::contains("already done"));
}

#[test]
fn nul_bytes_pass_through_and_an_address_with_one_is_never_sent() {
    let input = b"name,email,note\nJa\0ne,jane@acme.com,x\nBob,bob\0@acme.com,y\0z\n";
    let r = run("nul.csv", input);
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    assert_rows_kept(input, &r.out, b'\n', "nul");
    let rows = rows_with(&r.out, b',');
    let (status, source) = (column(&rows, "email_status"), column(&rows, "source"));
    assert_eq!(
        (rows[2][status].as_str(), rows[2][source].as_str()),
        ("invalid", "syntax")
    );
    assert_eq!(r.stats.validations, 1, "only jane was sent");
}

/// Issue 12: a Latin-1 (Windows-1252) file used to pass through as bytes, its accented
/// addresses rejected as "not valid UTF-8" and never asked. It is now decoded: the output is the
/// same text in UTF-8 (with a byte order mark) and every address is sent.
#[test]
fn a_latin1_file_is_decoded_and_its_accented_address_sent() {
    let input = b"name;email;city\r\nJos\xe9;jose@acme.com;M\xfcnchen\r\nB\xf6b;b\xf6b@acme.com;K\xf6ln\r\n";
    let r = run("latin1.csv", input);
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    assert!(r.stderr.contains("read as windows-1252"), "{}", r.stderr);
    let text = std::str::from_utf8(r.out.strip_prefix(b"\xEF\xBB\xBF").expect("BOM")).unwrap();
    let (decoded, _) = encoding_rs::WINDOWS_1252.decode_without_bom_handling(input);
    assert_rows_kept(decoded.as_bytes(), text.as_bytes(), b'\n', "latin1");
    let rows = rows_with(text.as_bytes(), b';');
    let source = column(&rows, "source");
    assert_eq!(rows[2][..2], ["Böb", "böb@acme.com"]);
    assert_eq!(rows[2][source], "api");
    assert_eq!(r.stats.validations, 2);
}

#[test]
fn a_10_mb_field_passes_through_whole() {
    let big = "x".repeat(10 * 1024 * 1024);
    let input = format!("name,notes,email\nJane,\"{big}\",jane@acme.com\nBob,short,bob@acme.com\n");
    let r = run("big.csv", input.as_bytes());
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    assert!(r.out.len() > input.len());
    assert_rows_kept(input.as_bytes(), &r.out, b'\n', "big");
    assert_eq!(r.stats.validations, 2);
}

#[test]
fn ten_thousand_columns_are_fine() {
    let mut header: Vec<String> = (0..10_000).map(|i| format!("c{i}")).collect();
    header[7777] = "Email".into();
    let mut input = header.join(",") + "\n";
    for r in 0..3 {
        let mut row: Vec<String> = (0..10_000).map(|i| format!("v{r}.{i}")).collect();
        row[7777] = format!("user{r}@acme.com");
        input.push_str(&(row.join(",") + "\n"));
    }
    let r = run("wide.csv", input.as_bytes());
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    assert!(r.stderr.contains("column 7778 (\"Email\")"), "{}", r.stderr);
    assert_rows_kept(input.as_bytes(), &r.out, b'\n', "wide");
    assert_eq!(r.stats.validations, 3);
}

#[test]
fn a_binary_file_renamed_csv_is_exit_2_saying_it_is_not_a_csv() {
    // The start of an .xlsx (a ZIP archive), then noise.
    let mut input = b"PK\x03\x04\x14\x00\x06\x00\x08\x00\x00\x00!\x00".to_vec();
    let mut x: u32 = 7;
    input.extend((0..50_000).map(|_| {
        x = x.wrapping_mul(1_103_515_245).wrapping_add(12_345);
        (x >> 16) as u8
    }));
    let r = run("export.csv", &input);
    assert_eq!(r.code, Some(2), "{}", r.stderr);
    assert!(
        r.stderr.contains("export.csv does not look like a CSV")
            && r.stderr.contains("line 1")
            && r.stderr.contains("ZIP")
            && r.stderr.contains("export it as CSV"),
        "{}",
        r.stderr
    );
    assert!(r.stderr.lines().count() <= 2, "short: {}", r.stderr);
    assert_eq!(r.stats.validations, 0);
}

#[test]
fn duplicate_header_names_use_the_first_matching_column_and_keep_both() {
    let input = b"email,name,email\njane@acme.com,Jane,other@acme.com\n";
    let r = run("dup.csv", input);
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    assert!(r.stderr.contains("column 1 (\"email\")"), "{}", r.stderr);
    assert_rows_kept(input, &r.out, b'\n', "dup");
    let sent = r.stats.per_address.unwrap();
    assert!(sent.contains_key("jane@acme.com") && !sent.contains_key("other@acme.com"));
}

#[test]
fn blank_lines_are_not_rows_and_line_numbers_still_count_them() {
    let input = b"name,email\n\nJane,jane@acme.com\n\n\r\n\nBob,\"bob@acme.com\n";
    let r = run("blank.csv", input);
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    let rows = rows_with(&r.out, b',');
    assert_eq!(rows.len(), 3, "header and two rows: {rows:?}");
    assert!(!r.out.windows(2).any(|w| w == b"\n\n"), "no blank line");
    // The warning's line number counts the blank lines.
    assert!(r.stderr.contains("at line 7"), "{}", r.stderr);
}

#[test]
fn a_header_without_an_email_like_column_is_exit_2_listing_the_headers() {
    let input = b"first,last,company\nJane,Doe,Acme\nBob,Roe,Initech\n";
    let r = run("names.csv", input);
    assert_eq!(r.code, Some(2), "{}", r.stderr);
    assert!(
        r.stderr.contains("names.csv: no email column found")
            && r.stderr.contains(
                "the header (line 1) has 3 columns: 1 \"first\", 2 \"last\", 3 \"company\""
            )
            && r.stderr.contains("--email-column"),
        "{}",
        r.stderr
    );
    assert!(r.out.is_empty());
    assert_eq!(r.stats.validations, 0);
}

#[test]
fn unicode_local_parts_are_kept_and_idn_domains_are_sent_as_ascii() {
    let input = "name,email\n\
                 José,josé@acme.com\n\
                 Li,用户@例子.中国\n\
                 Max,Müller@MÜNCHEN.de\n\
                 Bad,a@-bad-.de\n\
                 Dup,MÜLLER@münchen.DE\n";
    let r = run("idn.csv", input.as_bytes());
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    assert_rows_kept(input.as_bytes(), &r.out, b'\n', "idn");
    let rows = rows_with(&r.out, b',');
    let (normalized, source) = (column(&rows, "email_normalized"), column(&rows, "source"));
    let got: Vec<(&str, &str)> = rows[1..]
        .iter()
        .map(|r| (r[normalized].as_str(), r[source].as_str()))
        .collect();
    assert_eq!(
        got,
        [
            ("josé@acme.com", "api"),
            ("用户@xn--fsqu00a.xn--fiqs8s", "api"),
            ("Müller@xn--mnchen-3ya.de", "api"),
            ("a@-bad-.de", "syntax"),
            ("MÜLLER@xn--mnchen-3ya.de", "duplicate"),
        ]
    );
    let sent = r.stats.per_address.unwrap();
    assert!(sent.contains_key("müller@xn--mnchen-3ya.de"), "{sent:?}");
    assert_eq!(r.stats.validations, 3);
}
