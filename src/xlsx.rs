//! `-o FILE.xlsx`: the finished output turned into a real workbook (`rust_xlsxwriter`).
//!
//! The run writes and checkpoints CSV exactly as for a `.csv` output (`FILE.xlsx.partial` is
//! CSV text, so resume works unchanged). Once every row is written, the CSV is converted into
//! one sheet, written beside it and renamed over it, before the job is marked done. A kill
//! during the conversion leaves the job unfinished: the next run writes the rows again from the
//! cache (nothing is paid twice) and converts again.
//!
//! Cells: the input's columns keep their text; when the input was itself a workbook, numbers,
//! booleans and dates (as [`crate::input`] wrote them) become numbers, booleans and dates again.
//! Our columns are text. Text is never read as a formula.
//!
//! Must not: hold the rows in memory (the sheet is written in constant-memory mode, row by row).

use std::fs::File;
use std::path::{Path, PathBuf};

use anyhow::Context;
use rust_xlsxwriter::{ExcelDateTime, Format, Workbook, XlsxError};

/// Excel's limits for one sheet.
const MAX_ROWS: u64 = 1_048_576;
const MAX_COLUMNS: usize = 16_384;
const MAX_TEXT: usize = 32_767;

/// True when `path` names an .xlsx file (by extension, ignoring case).
pub fn is_xlsx(path: &Path) -> bool {
    path.extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("xlsx"))
}

/// How to read the CSV being converted.
#[derive(Debug, Clone, Copy)]
pub struct Conversion {
    pub delimiter: u8,
    /// The input was a workbook: its cells' types are restored.
    pub typed: bool,
    /// The last this many columns are ours (always text).
    pub annotations: usize,
}

/// Converts the finished CSV output at `path` into a workbook at the same path.
///
/// When the rows do not fit in a sheet (over 1,048,576), the CSV is moved to `FILE.csv` beside
/// it, so that nothing paid for is lost, and the error says so.
pub fn convert(path: &Path, cells: Conversion) -> anyhow::Result<()> {
    let temp = sibling(path, ".partial.xlsx");
    match write(path, &temp, cells) {
        Ok(()) => {}
        Err(e) => {
            let _ = std::fs::remove_file(&temp);
            let kept = path.with_extension("csv");
            std::fs::rename(path, &kept)
                .with_context(|| format!("keeping the rows in {}", kept.display()))?;
            return Err(e.context(format!(
                "the rows are all written, as CSV, to {}; choose a .csv output with -o",
                kept.display()
            )));
        }
    }
    crate::durable::install(&temp, path)
        .with_context(|| format!("saving {} as {}", temp.display(), path.display()))?;
    Ok(())
}

fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

fn write(csv_path: &Path, out: &Path, cells: Conversion) -> anyhow::Result<()> {
    let fail = |e: XlsxError| anyhow::anyhow!("writing the workbook {}: {e}", out.display());
    let mut input = std::io::BufReader::new(
        File::open(csv_path).with_context(|| format!("reading {}", csv_path.display()))?,
    );
    // Skip the UTF-8 byte order mark the CSV may start with.
    let mut bom = [0u8; 3];
    let n = std::io::Read::read(&mut input, &mut bom)?;
    let prefix: Vec<u8> = if bom[..n] == *b"\xEF\xBB\xBF" {
        Vec::new()
    } else {
        bom[..n].to_vec()
    };
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .delimiter(cells.delimiter)
        .from_reader(std::io::Read::chain(&prefix[..], input));

    let mut book = Workbook::new();
    let date = Format::new().set_num_format("yyyy-mm-dd");
    let date_time = Format::new().set_num_format("yyyy-mm-dd hh:mm:ss");
    let sheet = book.add_worksheet_with_constant_memory();
    sheet.set_name("mailsift").map_err(fail)?;
    let mut record = csv::ByteRecord::new();
    let mut row: u32 = 0;
    while reader
        .read_byte_record(&mut record)
        .with_context(|| format!("reading {}", csv_path.display()))?
    {
        if u64::from(row) >= MAX_ROWS {
            anyhow::bail!(
                "the output has more than {MAX_ROWS} rows, more than an .xlsx sheet holds"
            );
        }
        if record.len() > MAX_COLUMNS {
            anyhow::bail!(
                "line {} has {} columns, more than an .xlsx sheet holds ({MAX_COLUMNS})",
                row + 1,
                record.len()
            );
        }
        let ours = record.len().saturating_sub(cells.annotations);
        for (c, field) in record.iter().enumerate() {
            let text = String::from_utf8_lossy(field);
            if text.is_empty() {
                continue;
            }
            let col = c as u16;
            let typed = cells.typed && row > 0 && c < ours;
            match typed.then(|| typed_value(&text)).flatten() {
                Some(Typed::Number(n)) => sheet.write_number(row, col, n),
                Some(Typed::Bool(b)) => sheet.write_boolean(row, col, b),
                Some(Typed::Date(d, with_time)) => sheet.write_datetime_with_format(
                    row,
                    col,
                    &d,
                    if with_time { &date_time } else { &date },
                ),
                None => {
                    let text: String = if text.chars().count() > MAX_TEXT {
                        text.chars().take(MAX_TEXT).collect()
                    } else {
                        text.into_owned()
                    };
                    sheet.write_string(row, col, text)
                }
            }
            .map_err(fail)?;
        }
        row += 1;
    }
    if row > 1 {
        sheet.set_freeze_panes(1, 0).map_err(fail)?;
    }
    book.save(out).map_err(fail)
}

enum Typed {
    Number(f64),
    Bool(bool),
    Date(ExcelDateTime, bool),
}

/// A cell's type back from the text a workbook cell was read as (see `input::sheet`): only
/// text that reads back to exactly the same string, so "007" or "+49 151" stay text.
fn typed_value(text: &str) -> Option<Typed> {
    match text {
        "TRUE" => return Some(Typed::Bool(true)),
        "FALSE" => return Some(Typed::Bool(false)),
        _ => {}
    }
    if let Ok(n) = text.parse::<f64>() {
        let back = if n.fract() == 0.0 && n.abs() < 1e15 {
            format!("{}", n as i64)
        } else {
            format!("{n}")
        };
        return (back == text && n.is_finite()).then_some(Typed::Number(n));
    }
    let b = text.as_bytes();
    let digits = |r: std::ops::Range<usize>| -> Option<u32> {
        let part = text.get(r)?;
        part.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| part.parse().ok())
            .flatten()
    };
    if (b.len() == 10 || b.len() == 19) && b.get(4) == Some(&b'-') && b.get(7) == Some(&b'-') {
        let (y, m, d) = (digits(0..4)?, digits(5..7)?, digits(8..10)?);
        let date = ExcelDateTime::from_ymd(y as u16, m as u8, d as u8).ok()?;
        if b.len() == 10 {
            return Some(Typed::Date(date, false));
        }
        if b[10] != b' ' || b[13] != b':' || b[16] != b':' {
            return None;
        }
        let (h, mi, s) = (digits(11..13)?, digits(14..16)?, digits(17..19)?);
        let date = date.and_hms(h as u16, mi as u8, s as f64).ok()?;
        return Some(Typed::Date(date, true));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_text_that_reads_back_the_same_is_typed() {
        let number = |t: &str| matches!(typed_value(t), Some(Typed::Number(_)));
        assert!(number("1234") && number("0.1") && number("-2.5") && number("4915112345678"));
        for text in ["007", "+49151", "1e3", "1.50", "NaN", "inf", " 1", "12-34"] {
            assert!(typed_value(text).is_none(), "{text}");
        }
        assert!(matches!(
            typed_value("2024-03-01"),
            Some(Typed::Date(_, false))
        ));
        assert!(matches!(
            typed_value("2024-03-01 10:20:30"),
            Some(Typed::Date(_, true))
        ));
        assert!(typed_value("2024-13-01").is_none());
        assert!(matches!(typed_value("TRUE"), Some(Typed::Bool(true))));
        assert!(typed_value("true").is_none());
    }

    #[test]
    fn xlsx_by_extension() {
        assert!(is_xlsx(Path::new("out.xlsx")) && is_xlsx(Path::new("a/OUT.XLSX")));
        assert!(!is_xlsx(Path::new("out.csv")) && !is_xlsx(Path::new("xlsx")));
    }
}
