//! Files as Excel, LibreOffice and CRMs export them (issue 12): UTF-16 "Unicode Text",
//! Windows-1252 CSV, .xlsx, .xls and .ods workbooks, each built here byte by byte the way the
//! program that makes it does. Every test checks the parsed output rows and that the addresses
//! were sent (the mock's counters), not rejected by the local syntax check.

use std::io::Write;

use crate::crash::{assert_same_file, slow_mock};
use crate::util::{rows_with, text, Dir, Mock};

const BOM: &[u8] = b"\xEF\xBB\xBF";

/// The contacts every format here carries: (name, cell in the email column, address sent).
const PEOPLE: &[(&str, &str, &str)] = &[
    ("José", "josé@acme-corp.com", "josé@acme-corp.com"),
    ("Zoë", "Zoë <zoe@acme-corp.com>", "zoe@acme-corp.com"),
    ("Jörg", "joerg@beispiel-gmbh.de", "joerg@beispiel-gmbh.de"),
    ("Renée", "renee@acme-corp.com", "renee@acme-corp.com"),
];

fn utf16(text: &str, little: bool) -> Vec<u8> {
    let mut out = if little {
        vec![0xFF, 0xFE]
    } else {
        vec![0xFE, 0xFF]
    };
    for unit in text.encode_utf16() {
        out.extend(if little {
            unit.to_le_bytes()
        } else {
            unit.to_be_bytes()
        });
    }
    out
}

/// Excel's "Unicode Text": tab-separated, CRLF, every cell as typed.
fn unicode_text() -> String {
    let mut out = String::from("Name\tEmail\tCity\r\n");
    for (name, cell, _) in PEOPLE {
        out.push_str(&format!("{name}\t{cell}\tMünchen\r\n"));
    }
    out
}

struct Run {
    code: Option<i32>,
    stderr: String,
    out: Vec<u8>,
    mock: Mock,
}

fn validate(dir: &Dir, args: &[&str]) -> Run {
    let mock = Mock::fast();
    let out = dir
        .mailsift(&mock)
        .arg("validate")
        .args(args)
        .output()
        .unwrap();
    let stderr = text(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    Run {
        code: out.status.code(),
        stderr,
        out: std::fs::read(dir.path("out.csv")).unwrap_or_default(),
        mock,
    }
}

/// The output parsed: it must start with a UTF-8 byte order mark (converted text) and hold
/// the input's rows in order with the name column intact.
fn parsed(run: &Run, delimiter: u8) -> Vec<Vec<String>> {
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert!(
        run.out.starts_with(BOM),
        "UTF-8 with a BOM: {:?}",
        &run.out[..8.min(run.out.len())]
    );
    let body = std::str::from_utf8(&run.out[3..]).expect("the output is UTF-8");
    rows_with(body.as_bytes(), delimiter)
}

fn column(rows: &[Vec<String>], name: &str) -> usize {
    rows[0]
        .iter()
        .position(|c| c == name)
        .unwrap_or_else(|| panic!("no column {name} in {:?}", rows[0]))
}

/// Every person's row came out with the name as typed and the address sent to the API.
fn assert_people_sent(run: &Run, rows: &[Vec<String>]) {
    let (status, source, normalized) = (
        column(rows, "email_status"),
        column(rows, "source"),
        column(rows, "email_normalized"),
    );
    assert_eq!(rows.len(), PEOPLE.len() + 1, "{rows:?}");
    for ((name, _, sent), row) in PEOPLE.iter().zip(&rows[1..]) {
        assert_eq!(row[0], *name, "{row:?}");
        assert_eq!(row[source], "api", "{row:?}");
        assert_ne!(row[status], "invalid", "{row:?}");
        assert_eq!(row[normalized].to_lowercase(), *sent, "{row:?}");
    }
    let stats = run.mock.stats();
    let per_address = stats.per_address.unwrap();
    for (_, _, sent) in PEOPLE {
        assert_eq!(per_address.get(*sent), Some(&1), "{sent}: {per_address:?}");
    }
    assert_eq!(stats.validations, PEOPLE.len() as u64);
}

#[test]
fn excel_unicode_text_utf16le_tab_is_read_and_every_address_sent() {
    let dir = Dir::new();
    dir.write("export.txt", utf16(&unicode_text(), true));
    let run = validate(&dir, &["export.txt", "-o", "out.csv"]);
    assert!(
        run.stderr.contains("read as UTF-16LE (byte order mark"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("delimiter tab"), "{}", run.stderr);
    let rows = parsed(&run, b'\t');
    assert_eq!(rows[0][..3], ["Name", "Email", "City"]);
    assert!(rows[1..].iter().all(|r| r[2] == "München"), "{rows:?}");
    assert_people_sent(&run, &rows);
}

#[test]
fn utf16be_with_a_bom_is_read_and_every_address_sent() {
    let dir = Dir::new();
    dir.write("export.txt", utf16(&unicode_text(), false));
    let run = validate(&dir, &["export.txt", "-o", "out.csv"]);
    assert!(run.stderr.contains("read as UTF-16BE"), "{}", run.stderr);
    assert_people_sent(&run, &parsed(&run, b'\t'));
}

/// Excel's "CSV" on a Western Windows: Windows-1252, semicolons (a German locale), and the
/// junk a copy from a web page leaves: non-breaking spaces (0xA0) and curly quotes (0x93 0x94).
fn cp1252_export() -> Vec<u8> {
    let mut out = b"Name;E-Mail;Firma\r\n".to_vec();
    out.extend_from_slice(b"Jos\xe9;jos\xe9@acme-corp.com;Acme\r\n");
    out.extend_from_slice(b"Zo\xeb;\xa0Zo\xeb <zoe@acme-corp.com>\xa0;Acme\r\n");
    out.extend_from_slice(b"J\xf6rg;\x93joerg@beispiel-gmbh.de\x94;Beispiel GmbH\r\n");
    out.extend_from_slice(b"Ren\xe9e;\xa0renee@acme-corp.com;\x93Acme\x94\r\n");
    out
}

#[test]
fn windows_1252_with_nbsp_and_curly_quotes_is_read_and_every_address_sent() {
    let dir = Dir::new();
    dir.write("export.csv", cp1252_export());
    let run = validate(&dir, &["export.csv", "-o", "out.csv"]);
    assert!(
        run.stderr
            .contains("read as windows-1252 (guessed from the content"),
        "{}",
        run.stderr
    );
    let rows = parsed(&run, b';');
    // The same text, now in UTF-8: the junk around the addresses is kept in the cell.
    assert_eq!(rows[2][1], "\u{a0}Zoë <zoe@acme-corp.com>\u{a0}");
    assert_eq!(rows[3][1], "\u{201c}joerg@beispiel-gmbh.de\u{201d}");
    assert_eq!(rows[4][2], "\u{201c}Acme\u{201d}");
    assert_people_sent(&run, &rows);
}

#[test]
fn encoding_flag_overrides_detection_and_a_bad_label_is_exit_2() {
    let dir = Dir::new();
    // Latin-1 bytes; told it is ISO-8859-15, the one byte where the two differ (0xA4) is €.
    dir.write("list.csv", b"email;note\njos\xe9@acme-corp.com;5 \xa4\n");
    let run = validate(
        &dir,
        &["list.csv", "-o", "out.csv", "--encoding", "iso-8859-15"],
    );
    assert!(
        run.stderr.contains("read as ISO-8859-15 (--encoding"),
        "{}",
        run.stderr
    );
    let rows = parsed(&run, b';');
    assert_eq!(rows[1][..2], ["josé@acme-corp.com", "5 €"]);
    assert_eq!(run.mock.stats().validations, 1);

    let bad = validate(
        &dir,
        &["list.csv", "-o", "out2.csv", "--encoding", "klingon"],
    );
    assert_eq!(bad.code, Some(2), "{}", bad.stderr);
    assert!(bad.stderr.contains("not an encoding"), "{}", bad.stderr);
}

#[test]
fn a_utf8_file_with_a_few_bad_bytes_stays_utf8_and_passes_them_through() {
    let dir = Dir::new();
    let mut input =
        "name,email\nJosé,josé@acme-corp.com\nZoë,zoe@acme-corp.com\nRenée,renee@acme-corp.com\n"
            .as_bytes()
            .to_vec();
    input.extend_from_slice(b"Bad\xff,bad@acme-corp.com\n");
    dir.write("mixed.csv", &input);
    let run = validate(&dir, &["mixed.csv", "-o", "out.csv"]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert!(
        run.stderr.contains("read as UTF-8 (mostly UTF-8)"),
        "{}",
        run.stderr
    );
    assert!(!run.out.starts_with(BOM), "no BOM added to a UTF-8 input");
    assert!(run.out.starts_with(b"name,email,"));
    // Every input line is the start of its output line, byte for byte.
    for (a, b) in input
        .split(|&c| c == b'\n')
        .zip(run.out.split(|&c| c == b'\n'))
    {
        assert!(b.starts_with(a), "{} vs {}", text(a), text(b));
    }
    assert_eq!(run.mock.stats().validations, 4);
}

/// Kills the job with SIGKILL at three moments, resumes it, and compares with an uninterrupted
/// run: resume skips converted text by offset, so it must convert exactly the same text again.
fn killed_and_resumed_gives_the_same_file(dir: &Dir, input: &str, output: &str) {
    let job = format!(
        "validate {input} -o {output} --concurrency 16 --checkpoint-rows 40 --rate 600000/min"
    );
    let reference_name = format!("ref.{}", output.rsplit('.').next().unwrap());
    let reference = dir.reference(input, &reference_name);
    let mock = slow_mock();
    for point in [150, 700, 1400] {
        dir.kill_at(&mock, &job, point);
    }
    let out = dir.ok(&mock, &job);
    let stderr = text(&out.get_output().stderr);
    assert!(stderr.contains("resuming after"), "{stderr}");
    if output.ends_with(".xlsx") {
        // A workbook's bytes carry its creation time: compare the cells.
        assert_eq!(
            sheet_cells(&dir.path(output)),
            sheet_cells(&dir.path(&reference_name)),
            "{input}"
        );
        assert!(!dir.path(&format!("{output}.partial")).exists());
    } else {
        assert_same_file(&dir.read(output), &reference, input);
    }
    let stats = mock.stats();
    // Only requests in flight at a kill may repeat: at most 16 per kill.
    assert!(
        stats.validations - stats.unique_addresses <= 3 * 16,
        "{stats:?}"
    );
}

/// 2,000 contacts with accented names, in the shape of `util::contacts`.
fn accented_contacts(n: usize) -> String {
    let mut out = String::from("id\tname\temail\tnote\r\n");
    for i in 0..n {
        let email = match i % 20 {
            5 => "not-an-address".to_owned(),
            7 => String::new(),
            13 => format!("\"Zoë {i} <user{i}@example-{}.com>\"", i % 7),
            _ => format!("user{i}@example-{}.com", i % 7),
        };
        out.push_str(&format!("{i}\tJosé Müller {i}\t{email}\tnote «{i}»\r\n"));
    }
    out
}

#[test]
fn a_utf16_input_killed_three_times_resumes_to_the_identical_file() {
    let dir = Dir::new();
    dir.write("in.txt", utf16(&accented_contacts(2000), true));
    killed_and_resumed_gives_the_same_file(&dir, "in.txt", "out.csv");
}

#[test]
fn a_windows_1252_input_killed_three_times_resumes_to_the_identical_file() {
    let dir = Dir::new();
    let text = accented_contacts(2000).replace('\t', ";");
    let (bytes, _, unmappable) = encoding_rs::WINDOWS_1252.encode(&text);
    assert!(!unmappable);
    dir.write("in.csv", bytes);
    killed_and_resumed_gives_the_same_file(&dir, "in.csv", "out.csv");
}

/// The first sheet of a workbook, every cell as calamine reads it.
fn sheet_cells(path: &std::path::Path) -> Vec<Vec<calamine::Data>> {
    use calamine::Reader;
    let mut book = calamine::open_workbook_auto(path).unwrap();
    let range = book.worksheet_range_at(0).unwrap().unwrap();
    range.rows().map(<[calamine::Data]>::to_vec).collect()
}

#[test]
fn an_xlsx_to_xlsx_job_killed_three_times_resumes_to_the_same_workbook() {
    let dir = Dir::new();
    let mut book = rust_xlsxwriter::Workbook::new();
    let sheet = book.add_worksheet();
    for (r, line) in accented_contacts(2000).lines().enumerate() {
        for (c, cell) in line.split('\t').enumerate() {
            let cell = cell.trim_matches('"');
            match cell.parse::<f64>() {
                Ok(n) => sheet.write_number(r as u32, c as u16, n).unwrap(),
                Err(_) => sheet.write_string(r as u32, c as u16, cell).unwrap(),
            };
        }
    }
    book.save(dir.path("in.xlsx")).unwrap();
    killed_and_resumed_gives_the_same_file(&dir, "in.xlsx", "out.xlsx");
}

/// A workbook as Excel writes one: a first sheet of notes, then the contacts with a number
/// column (phone), a date, a boolean, a blank row and an empty cell.
fn xlsx_workbook(path: &std::path::Path) {
    use rust_xlsxwriter::{ExcelDateTime, Format, Workbook};
    let mut book = Workbook::new();
    let notes = book.add_worksheet().set_name("Notes").unwrap();
    notes.write_string(0, 0, "exported from the CRM").unwrap();
    let date = Format::new().set_num_format("yyyy-mm-dd");
    let sheet = book.add_worksheet().set_name("Leads").unwrap();
    for (c, name) in ["Name", "Email", "Phone", "Since", "Opt-in"]
        .iter()
        .enumerate()
    {
        sheet.write_string(0, c as u16, *name).unwrap();
    }
    for (i, (name, cell, _)) in PEOPLE.iter().enumerate() {
        // Row 3 (index 2) is left blank, as people do.
        let r = if i >= 1 { i as u32 + 2 } else { i as u32 + 1 };
        sheet.write_string(r, 0, *name).unwrap();
        sheet.write_string(r, 1, *cell).unwrap();
        sheet
            .write_number(r, 2, 4915112345678.0 + i as f64)
            .unwrap();
        let day = ExcelDateTime::from_ymd(2024, 3, i as u8 + 1).unwrap();
        sheet.write_datetime_with_format(r, 3, &day, &date).unwrap();
        if i != 3 {
            sheet.write_boolean(r, 4, i % 2 == 0).unwrap();
        }
    }
    book.save(path).unwrap();
}

#[test]
fn an_xlsx_is_read_by_sheet_name_with_cells_as_excel_shows_them() {
    let dir = Dir::new();
    xlsx_workbook(&dir.path("leads.xlsx"));
    let run = validate(&dir, &["leads.xlsx", "-o", "out.csv", "--sheet", "Leads"]);
    assert!(
        run.stderr
            .contains("sheet \"Leads\" (2 of 2) of an .xlsx workbook"),
        "{}",
        run.stderr
    );
    let rows = parsed(&run, b',');
    assert_eq!(rows[0][..5], ["Name", "Email", "Phone", "Since", "Opt-in"]);
    assert_eq!(
        rows[1][..5],
        [
            "José",
            "josé@acme-corp.com",
            "4915112345678",
            "2024-03-01",
            "TRUE"
        ]
    );
    assert_eq!(
        rows[4][..5],
        [
            "Renée",
            "renee@acme-corp.com",
            "4915112345681",
            "2024-03-04",
            ""
        ]
    );
    assert_people_sent(&run, &rows);
}

#[test]
fn the_first_sheet_is_the_default_and_a_sheet_can_be_named_by_number() {
    let dir = Dir::new();
    xlsx_workbook(&dir.path("leads.xlsx"));
    // The first sheet holds one note: read as a one-column list, nothing to send.
    let first = validate(&dir, &["leads.xlsx", "-o", "out.csv"]);
    assert_eq!(first.code, Some(0), "{}", first.stderr);
    assert!(
        first.stderr.contains("sheet \"Notes\" (1 of 2)"),
        "{}",
        first.stderr
    );
    assert_eq!(first.mock.stats().validations, 0);
    let second = validate(&dir, &["leads.xlsx", "-o", "out.csv", "--sheet", "2"]);
    assert_people_sent(&second, &parsed(&second, b','));
    let missing = validate(
        &dir,
        &["leads.xlsx", "-o", "out.csv", "--sheet", "Contacts"],
    );
    assert_eq!(missing.code, Some(2), "{}", missing.stderr);
    assert!(
        missing
            .stderr
            .contains("leads.xlsx has no sheet \"Contacts\"")
            && missing
                .stderr
                .contains("2 sheets: 1 \"Notes\", 2 \"Leads\""),
        "{}",
        missing.stderr
    );
}

#[test]
fn a_workbook_is_found_by_its_bytes_whatever_its_name() {
    let dir = Dir::new();
    xlsx_workbook(&dir.path("leads.csv"));
    let run = validate(&dir, &["leads.csv", "-o", "out.csv", "--sheet", "Leads"]);
    assert!(run.stderr.contains(".xlsx workbook"), "{}", run.stderr);
    assert_people_sent(&run, &parsed(&run, b','));
}

/// A zip archive holding `files`, each stored (no compression) or deflated.
fn zip_archive(files: &[(&str, &[u8])], stored: bool) -> Vec<u8> {
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let method = if stored {
        zip::CompressionMethod::Stored
    } else {
        zip::CompressionMethod::Deflated
    };
    let options = zip::write::SimpleFileOptions::default().compression_method(method);
    for (name, contents) in files {
        zip.start_file(*name, options).unwrap();
        zip.write_all(contents).unwrap();
    }
    zip.finish().unwrap().into_inner()
}

/// An OpenDocument spreadsheet as LibreOffice writes its parts (the minimum a reader needs).
fn ods_workbook() -> Vec<u8> {
    let cell =
        |text: &str| {
            format!(
            "<table:table-cell office:value-type=\"string\"><text:p>{}</text:p></table:table-cell>",
            text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
        )
        };
    let mut rows = format!(
        "<table:table-row>{}{}{}</table:table-row>",
        cell("Name"),
        cell("Email"),
        cell("Score")
    );
    for (name, email, _) in PEOPLE {
        rows.push_str(&format!(
            "<table:table-row>{}{}<table:table-cell office:value-type=\"float\" office:value=\"42\"><text:p>42</text:p></table:table-cell></table:table-row>",
            cell(name),
            cell(email)
        ));
    }
    let content = format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<office:document-content xmlns:office="urn:oasis:names:tc:opendocument:xmlns:office:1.0" xmlns:table="urn:oasis:names:tc:opendocument:xmlns:table:1.0" xmlns:text="urn:oasis:names:tc:opendocument:xmlns:text:1.0" office:version="1.2"><office:body><office:spreadsheet><table:table table:name="Kontakte">{rows}</table:table></office:spreadsheet></office:body></office:document-content>"#
    );
    let manifest = r#"<?xml version="1.0" encoding="UTF-8"?>
<manifest:manifest xmlns:manifest="urn:oasis:names:tc:opendocument:xmlns:manifest:1.0" manifest:version="1.2"><manifest:file-entry manifest:full-path="/" manifest:media-type="application/vnd.oasis.opendocument.spreadsheet"/><manifest:file-entry manifest:full-path="content.xml" manifest:media-type="text/xml"/></manifest:manifest>"#;
    // The mimetype entry comes first and is stored, as the format requires.
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let stored =
        zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    let deflated = zip::write::SimpleFileOptions::default();
    zip.start_file("mimetype", stored).unwrap();
    zip.write_all(b"application/vnd.oasis.opendocument.spreadsheet")
        .unwrap();
    zip.start_file("META-INF/manifest.xml", deflated).unwrap();
    zip.write_all(manifest.as_bytes()).unwrap();
    zip.start_file("content.xml", deflated).unwrap();
    zip.write_all(content.as_bytes()).unwrap();
    zip.finish().unwrap().into_inner()
}

#[test]
fn an_ods_is_read_and_every_address_sent() {
    let dir = Dir::new();
    dir.write("kontakte.ods", ods_workbook());
    let run = validate(&dir, &["kontakte.ods", "-o", "out.csv"]);
    assert!(
        run.stderr
            .contains("sheet \"Kontakte\" (1 of 1) of an .ods workbook"),
        "{}",
        run.stderr
    );
    let rows = parsed(&run, b',');
    assert_eq!(rows[1][2], "42");
    assert_people_sent(&run, &rows);
}

/// One BIFF8 record.
fn record(out: &mut Vec<u8>, kind: u16, data: &[u8]) {
    out.extend(kind.to_le_bytes());
    out.extend((data.len() as u16).to_le_bytes());
    out.extend_from_slice(data);
}

/// A BIFF8 string of UTF-16 characters: length, flags (1 = two bytes per character), text.
fn biff_string(text: &str, short: bool) -> Vec<u8> {
    let units: Vec<u16> = text.encode_utf16().collect();
    let mut out = if short {
        vec![units.len() as u8]
    } else {
        (units.len() as u16).to_le_bytes().to_vec()
    };
    out.push(1);
    out.extend(units.iter().flat_map(|u| u.to_le_bytes()));
    out
}

/// An Excel 97-2003 workbook (.xls): an OLE compound file whose "Workbook" stream holds the
/// BIFF8 records Excel writes for one sheet of strings and numbers (the minimum a reader needs:
/// BOF, BoundSheet8, EOF, then the sheet's BOF, its cells and EOF). `protected` adds the
/// FilePass record an encrypted workbook starts with.
fn xls_workbook(path: &std::path::Path, protected: bool) {
    let bof = |kind: u16| {
        let mut data = vec![0u8; 16];
        data[..2].copy_from_slice(&0x0600u16.to_le_bytes());
        data[2..4].copy_from_slice(&kind.to_le_bytes());
        data
    };
    let mut globals = Vec::new();
    record(&mut globals, 0x0809, &bof(0x0005));
    if protected {
        record(&mut globals, 0x002F, &[1, 0, 1, 0, 1, 0]);
    }
    let name = biff_string("Contacts", true);
    let bound_len = 4 + 4 + 2 + name.len(); // header, then position, state and type, name
    let sheet_at = globals.len() + bound_len + 4; // after BoundSheet8 and EOF
    let mut bound = (sheet_at as u32).to_le_bytes().to_vec();
    bound.extend([0, 0]);
    bound.extend(name);
    record(&mut globals, 0x0085, &bound);
    record(&mut globals, 0x000A, &[]);
    assert_eq!(globals.len(), sheet_at);
    let mut sheet = Vec::new();
    record(&mut sheet, 0x0809, &bof(0x0010));
    let label = |sheet: &mut Vec<u8>, row: u16, col: u16, text: &str| {
        let mut data = row.to_le_bytes().to_vec();
        data.extend(col.to_le_bytes());
        data.extend(0u16.to_le_bytes());
        data.extend(biff_string(text, false));
        record(sheet, 0x0204, &data);
    };
    label(&mut sheet, 0, 0, "Name");
    label(&mut sheet, 0, 1, "Email");
    label(&mut sheet, 0, 2, "Score");
    for (i, (name, email, _)) in PEOPLE.iter().enumerate() {
        let row = i as u16 + 1;
        label(&mut sheet, row, 0, name);
        label(&mut sheet, row, 1, email);
        let mut number = row.to_le_bytes().to_vec();
        number.extend(2u16.to_le_bytes());
        number.extend(0u16.to_le_bytes());
        number.extend((row as f64 * 1.5).to_le_bytes());
        record(&mut sheet, 0x0203, &number);
    }
    record(&mut sheet, 0x000A, &[]);
    globals.extend(sheet);
    let mut file = cfb::create(path).unwrap();
    file.create_stream("Workbook")
        .unwrap()
        .write_all(&globals)
        .unwrap();
    file.flush().unwrap();
}

#[test]
fn an_xls_is_read_and_every_address_sent() {
    let dir = Dir::new();
    xls_workbook(&dir.path("old.xls"), false);
    let run = validate(&dir, &["old.xls", "-o", "out.csv"]);
    assert!(
        run.stderr
            .contains("sheet \"Contacts\" (1 of 1) of an .xls workbook"),
        "{}",
        run.stderr
    );
    let rows = parsed(&run, b',');
    assert_eq!(rows[0][..3], ["Name", "Email", "Score"]);
    assert_eq!(rows[1][2], "1.5");
    assert_eq!(rows[2][2], "3");
    assert_people_sent(&run, &rows);
}

fn assert_refused(run: &Run, what: &[&str]) {
    assert_eq!(run.code, Some(2), "{}", run.stderr);
    for part in what {
        assert!(run.stderr.contains(part), "{part:?} in {}", run.stderr);
    }
    assert!(run.stderr.lines().count() <= 2, "short: {}", run.stderr);
    assert!(run.out.is_empty());
    assert_eq!(run.mock.stats().validations, 0);
}

#[test]
fn a_password_protected_xls_is_exit_2_naming_the_file() {
    let dir = Dir::new();
    xls_workbook(&dir.path("secret.xls"), true);
    let run = validate(&dir, &["secret.xls", "-o", "out.csv"]);
    assert_refused(&run, &["secret.xls is protected with a password", "export"]);
}

#[test]
fn a_password_protected_xlsx_is_exit_2_naming_the_file() {
    // Excel saves an encrypted .xlsx as a compound file holding the encrypted package.
    let dir = Dir::new();
    let mut file = cfb::create(dir.path("secret.xlsx")).unwrap();
    file.create_stream("EncryptionInfo")
        .unwrap()
        .write_all(&[4, 0, 4, 0, 0x40, 0, 0, 0])
        .unwrap();
    file.create_stream("EncryptedPackage")
        .unwrap()
        .write_all(&[0x5a; 4096])
        .unwrap();
    file.flush().unwrap();
    drop(file);
    let run = validate(&dir, &["secret.xlsx", "-o", "out.csv"]);
    assert_refused(&run, &["secret.xlsx is protected with a password"]);
}

#[test]
fn a_damaged_xlsx_is_exit_2_naming_the_file() {
    let dir = Dir::new();
    xlsx_workbook(&dir.path("whole.xlsx"));
    let whole = dir.read("whole.xlsx");
    dir.write("cut.xlsx", &whole[..whole.len() / 2]);
    let run = validate(&dir, &["cut.xlsx", "-o", "out.csv"]);
    assert_refused(
        &run,
        &[
            "cut.xlsx is a spreadsheet that cannot be read",
            "save it again",
        ],
    );
}

/// Issue 11, point 10: a stored (uncompressed) ZIP renamed .csv was read as CSV, its list of
/// addresses found inside the archive's bytes and sent.
#[test]
fn a_stored_zip_renamed_csv_is_refused_as_not_a_csv() {
    let dir = Dir::new();
    let list = b"email\njane@acme-corp.com\nbob@acme-corp.com\n";
    dir.write("list.csv", zip_archive(&[("list.csv", list)], true));
    let run = validate(&dir, &["list.csv", "-o", "out.csv"]);
    assert_refused(
        &run,
        &[
            "list.csv does not look like a CSV",
            "ZIP archive",
            "not a spreadsheet",
        ],
    );
}

#[test]
fn a_workbook_on_standard_input_is_refused_with_what_to_do() {
    let dir = Dir::new();
    xlsx_workbook(&dir.path("leads.xlsx"));
    let mock = Mock::fast();
    let out = dir
        .mailsift(&mock)
        .args(["validate", "-", "-o", "out.csv"])
        .pipe_stdin(dir.path("leads.xlsx"))
        .unwrap()
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("pass it as a path"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(mock.stats().validations, 0);
}

#[test]
fn an_xlsx_output_is_a_real_workbook_with_the_original_cells_and_ours() {
    use calamine::Data;
    let dir = Dir::new();
    xlsx_workbook(&dir.path("leads.xlsx"));
    let run = validate(&dir, &["leads.xlsx", "-o", "out.xlsx", "--sheet", "Leads"]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert!(!dir.path("out.xlsx.partial").exists());
    let cells = sheet_cells(&dir.path("out.xlsx"));
    let header: Vec<String> = cells[0].iter().map(|c| c.to_string()).collect();
    assert_eq!(
        header[..6],
        ["Name", "Email", "Phone", "Since", "Opt-in", "email_status"]
    );
    let at = |name: &str| header.iter().position(|h| h == name).unwrap();
    // Types come back as they were; the blank row is not a row (as a blank line in a CSV).
    assert_eq!(cells.len(), PEOPLE.len() + 1);
    let jose = &cells[1];
    assert_eq!(jose[0], Data::String("José".into()));
    assert_eq!(jose[2], Data::Float(4915112345678.0));
    // A date again (2024-03-01 is Excel's day 45352), not the text it was read as.
    match &jose[3] {
        Data::DateTime(d) => assert_eq!(d.as_f64(), 45352.0),
        other => panic!("{other:?}"),
    }
    assert_eq!(jose[4], Data::Bool(true));
    assert_eq!(jose[at("source")], Data::String("api".into()));
    assert_eq!(
        jose[at("email_normalized")],
        Data::String("josé@acme-corp.com".into())
    );
    assert_eq!(cells[2][0], Data::String("Zoë".into()));
    assert_eq!(run.mock.stats().validations, PEOPLE.len() as u64);
}

#[test]
fn a_csv_to_xlsx_output_keeps_every_field_as_text() {
    use calamine::Data;
    let dir = Dir::new();
    dir.write(
        "in.csv",
        "name,email,zip,phone\nJosé,josé@acme-corp.com,01234,+49 151 1234\nBob,=cmd|' /C calc'!A0,1234,5\n",
    );
    let run = validate(&dir, &["in.csv", "-o", "out.xlsx"]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    let cells = sheet_cells(&dir.path("out.xlsx"));
    assert_eq!(
        cells[1][..4],
        [
            Data::String("José".into()),
            Data::String("josé@acme-corp.com".into()),
            Data::String("01234".into()),
            Data::String("+49 151 1234".into()),
        ]
    );
    // Text that looks like a formula stays text in the workbook.
    assert_eq!(cells[2][1], Data::String("=cmd|' /C calc'!A0".into()));
    assert_eq!(cells[2][2], Data::String("1234".into()));
}
