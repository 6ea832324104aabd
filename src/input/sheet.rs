//! Spreadsheets (.xlsx, .xlsm, .xlsb, .xls, .ods) read with `calamine` and turned into CSV text.
//!
//! Owns recognising a workbook by its first bytes, opening it (a password or damage is a clear
//! error), choosing the sheet, and a producer thread that writes the sheet's rows as CSV into a
//! bounded channel, read back through [`Chunks`]. Everything after that (header, email column,
//! rows, resume) is the CSV path: a sheet is read exactly as the CSV a careful export would give.
//!
//! Must not: hold more than a few chunks of that CSV in memory (an .xlsx sheet is streamed cell
//! by cell; calamine loads an .xls or .ods sheet whole), or produce different text for the same
//! file (resume skips the rows already written by counting bytes of this text).
//!
//! The text of a cell: strings as they are; whole numbers without a decimal point, others in
//! their shortest exact form; dates as `YYYY-MM-DD` (plus ` HH:MM:SS` when there is a time);
//! booleans `TRUE`/`FALSE`; errors as Excel shows them (`#N/A`). Empty rows become blank lines,
//! so a row's line number is its row number in the sheet (unless a cell holds a line break).

use std::fs::File;
use std::io::{self, BufReader, Read};
use std::path::Path;
use std::sync::mpsc::{self, Receiver, SyncSender};

use calamine::{
    open_workbook, Data, DataRef, Ods, OdsError, Reader as _, Sheets, Xls, XlsError, Xlsb, Xlsx,
    XlsxError,
};

use super::InputError;

/// What the first bytes say the file is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Magic {
    /// A ZIP archive: .xlsx, .xlsm, .xlsb, .ods (or any other ZIP).
    Zip,
    /// An OLE compound file: .xls (or an encrypted .xlsx, or a Word document).
    Compound,
}

pub(super) fn magic(head: &[u8]) -> Option<Magic> {
    if head.starts_with(b"PK\x03\x04") || head.starts_with(b"PK\x05\x06") {
        Some(Magic::Zip)
    } else if head.starts_with(b"\xD0\xCF\x11\xE0\xA1\xB1\x1A\xE1") {
        Some(Magic::Compound)
    } else {
        None
    }
}

type Book = Sheets<BufReader<File>>;

/// The sheet being read, for the opening lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SheetInfo {
    /// ".xlsx", ".xls", ".ods", ...
    pub kind: &'static str,
    pub name: String,
    /// 1-based, and how many sheets the workbook has.
    pub index: usize,
    pub count: usize,
}

/// Opens the workbook at `path` and starts streaming the chosen sheet as CSV text.
pub(super) fn open(
    path: &Path,
    file: &str,
    head: &[u8],
    magic: Magic,
    wanted: Option<&str>,
    delimiter: u8,
) -> Result<(Chunks, SheetInfo), InputError> {
    let (mut book, kind) = guard(file, || open_book(path, file, head, magic))?;
    let names = book.sheet_names();
    let index = match wanted {
        Some(wanted) => find_sheet(&names, wanted).ok_or_else(|| InputError::UnknownSheet {
            file: file.to_owned(),
            name: wanted.to_owned(),
            sheets: names.clone(),
        })?,
        None => 0,
    };
    let info = SheetInfo {
        kind,
        name: names.get(index).cloned().unwrap_or_default(),
        index: index + 1,
        count: names.len(),
    };
    let (tx, rx) = mpsc::sync_channel(4);
    let chunks = Chunks {
        rx,
        buf: Vec::new(),
        pos: 0,
    };
    if names.is_empty() {
        return Ok((chunks, info));
    }
    let (sheet, name) = (info.name.clone(), file.to_owned());
    std::thread::Builder::new()
        .name("sheet-reader".into())
        .spawn(move || {
            let sent = tx.clone();
            let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
                produce(&mut book, &sheet, delimiter, &sent)
            }));
            let failure = match result {
                Ok(Ok(())) | Ok(Err(Stop::Closed)) => return,
                Ok(Err(Stop::Failed(text))) => text,
                Err(_) => "the reader crashed on it".to_owned(),
            };
            let _ = tx.send(Err(io::Error::other(format!(
                "{name}: the sheet cannot be read to its end ({failure}); open it in a \
                 spreadsheet program and save it again, or export it as CSV"
            ))));
        })
        .map_err(|source| InputError::Open {
            file: file.to_owned(),
            source,
        })?;
    Ok((chunks, info))
}

/// Runs calamine, turning a panic on a hostile file into the "damaged" error.
fn guard<T>(file: &str, f: impl FnOnce() -> Result<T, InputError>) -> Result<T, InputError> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or_else(|_| {
        Err(InputError::Workbook {
            file: file.to_owned(),
            problem: "the reader crashed on it".to_owned(),
        })
    })
}

fn open_book(
    path: &Path,
    file: &str,
    head: &[u8],
    magic: Magic,
) -> Result<(Book, &'static str), InputError> {
    let password = || InputError::Password {
        file: file.to_owned(),
    };
    let damaged = |problem: String| InputError::Workbook {
        file: file.to_owned(),
        problem,
    };
    match magic {
        Magic::Zip => {
            let xlsx_error = match open_workbook::<Xlsx<_>, _>(path) {
                Ok(book) => return Ok((Sheets::Xlsx(book), ".xlsx")),
                Err(XlsxError::Password) => return Err(password()),
                Err(e) => e.to_string(),
            };
            let ods_error = match open_workbook::<Ods<_>, _>(path) {
                Ok(book) => return Ok((Sheets::Ods(book), ".ods")),
                Err(OdsError::Password) => return Err(password()),
                Err(e) => e.to_string(),
            };
            if let Ok(book) = open_workbook::<Xlsb<_>, _>(path) {
                return Ok((Sheets::Xlsb(book), ".xlsb"));
            }
            // The names of a workbook's parts are stored in the clear in the archive.
            let has = |name: &[u8]| head.windows(name.len()).any(|w| w == name);
            if has(b"opendocument") || has(b"content.xml") {
                Err(damaged(ods_error))
            } else if has(b"[Content_Types].xml") || has(b"xl/") {
                Err(damaged(xlsx_error))
            } else {
                Err(InputError::NotText {
                    file: file.to_owned(),
                    kind: Some("a ZIP archive, and not a spreadsheet (.xlsx, .ods) either"),
                })
            }
        }
        Magic::Compound => {
            let xls_error = match open_workbook::<Xls<_>, _>(path) {
                Ok(book) => return Ok((Sheets::Xls(book), ".xls")),
                Err(XlsError::Password) => return Err(password()),
                Err(e) => e.to_string(),
            };
            // An encrypted .xlsx is a compound file holding the encrypted package.
            if let Err(XlsxError::Password) = open_workbook::<Xlsx<_>, _>(path) {
                return Err(password());
            }
            Err(damaged(format!(
                "{xls_error}; if it is not a spreadsheet (a Word or Outlook file), export the \
                 list as CSV"
            )))
        }
    }
}

/// A sheet by exact name, then by name ignoring case and surrounding spaces, then by 1-based
/// number.
fn find_sheet(names: &[String], wanted: &str) -> Option<usize> {
    names
        .iter()
        .position(|n| n == wanted)
        .or_else(|| {
            names
                .iter()
                .position(|n| n.trim().to_lowercase() == wanted.trim().to_lowercase())
        })
        .or_else(|| {
            wanted
                .trim()
                .parse::<usize>()
                .ok()
                .filter(|&i| i >= 1 && i <= names.len())
                .map(|i| i - 1)
        })
}

/// Why the producer stopped early.
enum Stop {
    /// The reader went away (the run stopped): nothing to report.
    Closed,
    Failed(String),
}

/// Writes the rows of one sheet as CSV, in chunks, into the channel.
struct Emitter<'a> {
    tx: &'a SyncSender<io::Result<Vec<u8>>>,
    out: Vec<u8>,
    delimiter: u8,
    /// The sheet row number of the next line to write (0-based).
    next_row: u32,
}

const CHUNK: usize = 64 * 1024;

impl Emitter<'_> {
    /// Writes sheet row `row` (0-based) with its cells; rows skipped since the last one become
    /// blank lines. Trailing empty cells are dropped; a row with none is a blank line.
    fn row(&mut self, row: u32, cells: &[String]) -> Result<(), Stop> {
        while self.next_row < row {
            self.out.extend_from_slice(b"\r\n");
            self.next_row += 1;
            self.spill()?;
        }
        let used = cells
            .iter()
            .rposition(|c| !c.is_empty())
            .map_or(0, |i| i + 1);
        for (i, cell) in cells[..used].iter().enumerate() {
            if i > 0 {
                self.out.push(self.delimiter);
            }
            let d = self.delimiter;
            if cell
                .bytes()
                .any(|b| b == d || b == b'"' || b == b'\r' || b == b'\n')
            {
                self.out.push(b'"');
                self.out
                    .extend_from_slice(cell.replace('"', "\"\"").as_bytes());
                self.out.push(b'"');
            } else {
                self.out.extend_from_slice(cell.as_bytes());
            }
        }
        self.out.extend_from_slice(b"\r\n");
        self.next_row = row + 1;
        self.spill()
    }

    fn spill(&mut self) -> Result<(), Stop> {
        if self.out.len() >= CHUNK {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), Stop> {
        if self.out.is_empty() {
            return Ok(());
        }
        let chunk = std::mem::replace(&mut self.out, Vec::with_capacity(CHUNK + 4096));
        self.tx.send(Ok(chunk)).map_err(|_| Stop::Closed)
    }
}

fn produce(
    book: &mut Book,
    sheet: &str,
    delimiter: u8,
    tx: &SyncSender<io::Result<Vec<u8>>>,
) -> Result<(), Stop> {
    let mut out = Emitter {
        tx,
        out: Vec::with_capacity(CHUNK + 4096),
        delimiter,
        next_row: 0,
    };
    let failed = |e: &dyn std::fmt::Display| Stop::Failed(e.to_string());
    if let Sheets::Xlsx(xlsx) = book {
        // Streamed cell by cell: memory stays flat on a sheet of a million rows.
        let mut cells = xlsx.worksheet_cells_reader(sheet).map_err(|e| failed(&e))?;
        let mut row: Option<u32> = None;
        let mut values: Vec<String> = Vec::new();
        while let Some(cell) = cells.next_cell().map_err(|e| failed(&e))? {
            let (r, c) = cell.get_position();
            if row != Some(r) {
                if let Some(done) = row {
                    out.row(done, &values)?;
                }
                values.clear();
                row = Some(r);
            }
            let c = c as usize;
            if values.len() <= c {
                values.resize(c + 1, String::new());
            }
            values[c] = match cell.get_value() {
                DataRef::SharedString(s) => (*s).to_owned(),
                other => text(&Data::from(other.clone())),
            };
        }
        if let Some(done) = row {
            out.row(done, &values)?;
        }
    } else {
        let range = book.worksheet_range(sheet).map_err(|e| failed(&e))?;
        let (top, left) = range.start().unwrap_or((0, 0));
        let mut values: Vec<String> = Vec::new();
        for (i, cells) in range.rows().enumerate() {
            values.clear();
            values.resize(left as usize, String::new());
            values.extend(cells.iter().map(text));
            out.row(top + i as u32, &values)?;
        }
    }
    out.flush()
}

/// The text of a cell, as the module header describes.
fn text(value: &Data) -> String {
    match value {
        Data::String(s) | Data::DateTimeIso(s) | Data::DurationIso(s) => s.clone(),
        Data::Int(i) => i.to_string(),
        Data::Float(f) => number(*f),
        Data::Bool(b) => (if *b { "TRUE" } else { "FALSE" }).to_owned(),
        Data::DateTime(d) if d.is_datetime() => {
            let (y, mo, day, h, mi, s, _) = d.to_ymd_hms_milli();
            if (h, mi, s) == (0, 0, 0) {
                format!("{y:04}-{mo:02}-{day:02}")
            } else {
                format!("{y:04}-{mo:02}-{day:02} {h:02}:{mi:02}:{s:02}")
            }
        }
        Data::DateTime(d) => number(d.as_f64()),
        Data::Error(e) => e.to_string(),
        Data::Empty => String::new(),
    }
}

/// A number as a spreadsheet shows it in General format, up to precision: integers without
/// `.0`, others in Rust's shortest exact form.
fn number(f: f64) -> String {
    if f.fract() == 0.0 && f.abs() < 1e15 {
        format!("{}", f as i64)
    } else {
        format!("{f}")
    }
}

/// The CSV text of a sheet, fed by the producer thread.
pub(super) struct Chunks {
    rx: Receiver<io::Result<Vec<u8>>>,
    buf: Vec<u8>,
    pos: usize,
}

impl Read for Chunks {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.buf.len() {
            match self.rx.recv() {
                Ok(chunk) => {
                    self.buf = chunk?;
                    self.pos = 0;
                }
                // The producer is done (it sends an error before leaving early).
                Err(_) => return Ok(0),
            }
        }
        let n = out.len().min(self.buf.len() - self.pos);
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_read_as_a_spreadsheet_shows_them() {
        for (f, want) in [
            (1234.0, "1234"),
            (4915112345678.0, "4915112345678"),
            (0.1, "0.1"),
            (-2.5, "-2.5"),
            (1e20, "100000000000000000000"),
        ] {
            assert_eq!(number(f), want);
        }
    }

    #[test]
    fn sheets_are_found_by_name_then_number() {
        let names = vec!["Contacts".to_owned(), "2".to_owned(), "Leads".to_owned()];
        assert_eq!(find_sheet(&names, "Leads"), Some(2));
        assert_eq!(find_sheet(&names, " leads "), Some(2));
        assert_eq!(find_sheet(&names, "2"), Some(1), "a sheet named 2 wins");
        assert_eq!(find_sheet(&names, "3"), Some(2));
        assert_eq!(find_sheet(&names, "4"), None);
        assert_eq!(find_sheet(&names, "0"), None);
    }
}
