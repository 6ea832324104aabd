//! The output: one writer task owns the output file, puts rows back in input order, appends
//! the annotation columns, and checkpoints.
//!
//! Answers arrive out of order, settled by the pool on a channel of their own; the writer keeps
//! a bounded window of planned rows (a full window holds the planner back) and writes the head
//! as soon as its verdict is known, so the file always holds a prefix of the input.
//! Every few thousand rows or seconds it takes a checkpoint, in this order:
//!
//! 1. flush the buffer and fsync `<output>.partial`;
//! 2. record the watermark (input offset of the next row, output length) in the job record
//!    ([`Journal`]);
//! 3. flush the store.
//!
//! A checkpoint therefore never points past durable output. If the process dies between 1 and
//! 3, or a power cut loses the newest store writes, the recorded watermark is an older one,
//! still covered by the fsynced bytes: resume truncates the partial file back to it and
//! re-plans from there, the rows in between coming from the cache.
//!
//! At the end ([`Writer::finish`]) every file is fsynced, hashed (the job record keeps its size
//! and hash, so a rerun can tell the file is still the job's), renamed into place, and its
//! directory fsynced; `validate` then writes the report, and only then marks the job done.
//!
//! Workers never write files. The writer writes no row it has not got a verdict for.
//!
//! Test hook: `MAILSIFT_TEST_CRASH_AT=<point>:<n>` ends the process on the spot the n-th time
//! the writer reaches `point` (see [`crash_point`]), so the tests can put a "power cut" exactly
//! inside a checkpoint. Unset, it costs one atomic load per checkpoint.

use std::borrow::Cow;
use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::sync::mpsc;

use crate::address::{self, Checked};
use crate::cell;
use crate::durable::{self, FileSum};
use crate::input::{Layout, Row};
use crate::journal::Journal;
use crate::plan::{Outcome, Planned, Settled, Source};
use crate::report::Counters;
use crate::schema::{format_credits, rfc3339, ANNOTATION_COLUMNS, COMPANY_COLUMNS, SPLITS};
use crate::store::Watermark;

/// How rows are written: the input's delimiter and line ending, the annotation columns.
#[derive(Debug, Clone)]
pub struct RowFormat {
    /// Line ending for rows that had none (the last line of a file).
    pub terminator: Vec<u8>,
    /// Short rows are padded to this many fields, so the annotations line up under the header.
    pub pad_to: Option<usize>,
    pub company: bool,
    pub prefix: String,
    /// Write the API's text as it came (`--raw-fields`), without neutralising formulas.
    pub raw_fields: bool,
    /// What the free syntax check lets through, for the addresses past the cap of a cell.
    pub rules: address::Rules,
    /// The delimiter, and which fields need quotes (those holding it, a quote or a line break).
    pub quoter: csv_core::Writer,
    /// The last `checked_at` written, and its text (rows answered together are written
    /// together).
    last_time: (i64, String),
    suggester: address::Suggester,
}

/// The CSV writer that quotes fields for `delimiter` as the `csv` crate would.
pub fn quoter(delimiter: u8) -> csv_core::Writer {
    csv_core::WriterBuilder::new().delimiter(delimiter).build()
}

impl RowFormat {
    pub fn new(layout: &Layout, company: bool, prefix: Option<&str>) -> RowFormat {
        let pad_to = layout
            .replace_from
            .or_else(|| layout.header.as_ref().map(|h| h.fields));
        RowFormat {
            terminator: layout.terminator.clone(),
            pad_to,
            company,
            prefix: prefix.unwrap_or("").to_owned(),
            raw_fields: false,
            rules: address::Rules::default(),
            quoter: quoter(layout.delimiter),
            last_time: (i64::MIN, String::new()),
            suggester: address::Suggester::default(),
        }
    }

    /// The header line: the input's header (minus old annotation columns) plus ours.
    pub fn header(&self, header: &Row) -> Vec<u8> {
        let mut out = Vec::with_capacity(header.raw.len() + 200);
        out.extend_from_slice(&header.raw[..header.keep]);
        let names = ANNOTATION_COLUMNS.iter().chain(if self.company {
            &COMPANY_COLUMNS[..]
        } else {
            &[]
        });
        for name in names {
            out.push(self.quoter.get_delimiter());
            field(
                &mut out,
                format!("{}{name}", self.prefix).as_bytes(),
                &self.quoter,
            );
        }
        out.extend_from_slice(terminator(&header.raw).unwrap_or(&self.terminator));
        out
    }

    /// Appends one annotated row to `out`.
    pub fn row(&mut self, out: &mut Vec<u8>, planned: &Planned, outcome: &Outcome) {
        let row = &planned.row;
        out.extend_from_slice(&row.raw[..row.keep]);
        if let Some(want) = self.pad_to {
            let have = self.kept_fields(row);
            for _ in have..want {
                out.push(self.quoter.get_delimiter());
            }
        }
        let (d, q) = (self.quoter.get_delimiter(), &self.quoter);
        let put = |out: &mut Vec<u8>, value: &str| {
            out.push(d);
            field(out, value.as_bytes(), q);
        };
        // Text that came from the API: a spreadsheet must not run it as a formula.
        let api = |out: &mut Vec<u8>, value: &str| {
            out.push(d);
            if !self.raw_fields && value.starts_with(FORMULA_STARTS) {
                let mut quoted = Vec::with_capacity(value.len() + 1);
                quoted.push(b'\'');
                quoted.extend_from_slice(value.as_bytes());
                field(out, &quoted, q);
            } else {
                field(out, value.as_bytes(), q);
            }
        };
        let (status, message): (&str, &str) = match outcome {
            Outcome::Empty => ("missing", "no email address in this row"),
            Outcome::Syntax(reason) => ("invalid", reason),
            Outcome::Answer { answer, .. } => (
                answer.status.as_ref().map_or("unknown", |s| s.as_str()),
                answer.message.as_deref().unwrap_or(""),
            ),
            Outcome::Error { message } => ("error", message),
        };
        api(out, status);
        api(out, message);
        // A cell with several addresses: the row shows its best one and lists the others.
        let best = (!planned.others.is_empty()).then(|| planned.best().map_or(0, |(i, _)| i));
        let shown = match best {
            Some(best) => planned.addresses().nth(best).map_or("", |(a, _)| a),
            None => &planned.normalized,
        };
        put(out, shown);
        let answer = match outcome {
            Outcome::Answer { answer, .. } => Some(answer),
            _ => None,
        };
        let text =
            |f: fn(&crate::store::Answer) -> Option<&str>| answer.and_then(|a| f(a)).unwrap_or("");
        api(out, text(|a| a.domain.mx_provider.as_deref()));
        api(out, text(|a| a.domain.mx_record.as_deref()));
        put(
            out,
            match answer.and_then(|a| a.is_catch_all) {
                Some(true) => "true",
                Some(false) => "false",
                None => "",
            },
        );
        let (mut credits, checked_at, source): (Cow<str>, _, _) = match outcome {
            Outcome::Empty => ("0".into(), None, Source::Empty.as_str()),
            Outcome::Syntax(_) => ("0".into(), None, Source::Syntax.as_str()),
            Outcome::Answer { answer, source } => (
                // What this row cost in this run: duplicates and cache hits are free.
                if *source == Source::Api {
                    format_credits(answer.credits).into()
                } else {
                    "0".into()
                },
                Some(answer.checked_at),
                source.as_str(),
            ),
            // The request may or may not have been charged: say nothing rather than guess.
            Outcome::Error { .. } => ("".into(), None, Source::Api.as_str()),
        };
        if !planned.others.is_empty() {
            // The row cost what all its addresses cost; unknown if one of them is an error.
            let (paid, known) = cost(planned);
            credits = if known {
                format_credits(paid).into()
            } else {
                "".into()
            };
        }
        put(out, &credits);
        match checked_at {
            Some(at) => {
                if self.last_time.0 != at {
                    self.last_time = (at, rfc3339(at));
                }
                put(out, &self.last_time.1);
            }
            None => put(out, ""),
        }
        put(out, source);
        put(out, &self.suggester.suggest(shown).unwrap_or_default());
        put(
            out,
            &best.map_or_else(String::new, |best| others(planned, best, self.rules)),
        );
        if self.company {
            let c = answer.map(|a| &a.domain.company);
            for value in [
                c.and_then(|c| c.name.as_deref()),
                c.and_then(|c| c.industry.as_deref()),
                c.and_then(|c| c.size.as_deref()),
                c.and_then(|c| c.founded.as_deref()),
                c.and_then(|c| c.location.as_deref()),
                c.and_then(|c| c.linkedin_url.as_deref()),
            ] {
                api(out, value.unwrap_or(""));
            }
        }
        out.extend_from_slice(terminator(&row.raw).unwrap_or(&self.terminator));
    }

    fn kept_fields(&self, row: &Row) -> usize {
        match self.pad_to {
            Some(limit) => row.fields.min(limit),
            None => row.fields,
        }
    }
}

/// The line ending a raw row ends with, if any.
fn terminator(raw: &[u8]) -> Option<&[u8]> {
    if raw.ends_with(b"\r\n") {
        Some(b"\r\n")
    } else if raw.ends_with(b"\n") {
        Some(b"\n")
    } else if raw.ends_with(b"\r") {
        Some(b"\r")
    } else {
        None
    }
}

/// What a spreadsheet may take for the start of a formula (OWASP's CSV injection list). A
/// cell of API text starting with one gets a leading `'`, which spreadsheets show as text.
const FORMULA_STARTS: [char; 6] = ['=', '+', '-', '@', '\t', '\r'];

/// Writes one CSV field, quoted only when it must be (the quoter decides, as `csv` does).
fn field(out: &mut Vec<u8>, value: &[u8], quoter: &csv_core::Writer) {
    if !quoter.should_quote(value) {
        out.extend_from_slice(value);
        return;
    }
    let quote = quoter.get_quote();
    let start = out.len();
    // The most quoting can make of a field: every byte a doubled quote, and the two around it.
    out.resize(start + 2 * value.len() + 2, 0);
    out[start] = quote;
    let (_, _, written) = csv_core::quote(
        value,
        &mut out[start + 1..],
        quote,
        quoter.get_escape(),
        true,
    );
    out.truncate(start + 1 + written);
    out.push(quote);
}

/// One file being written: `<path>.partial`, renamed to `path` at the end.
pub struct PartialFile {
    file: io::BufWriter<File>,
    partial: PathBuf,
    path: PathBuf,
}

impl PartialFile {
    /// Creates `<path>.partial`, or reopens it cut back to `resume_at` bytes (whatever came
    /// after the last checkpoint is written again).
    pub fn open(path: &Path, resume_at: Option<u64>) -> anyhow::Result<PartialFile> {
        let partial = partial_path(path);
        let file = match resume_at {
            Some(len) => {
                let mut file = std::fs::OpenOptions::new()
                    .write(true)
                    .open(&partial)
                    .with_context(|| format!("cannot reopen {} to resume", partial.display()))?;
                file.set_len(len)
                    .with_context(|| format!("truncating {}", partial.display()))?;
                io::Seek::seek(&mut file, io::SeekFrom::End(0))?;
                file
            }
            // Before anything is spent: the user's to fix, like an unreadable input (exit 2).
            None => File::create(&partial).map_err(|e| {
                crate::exit::usage(format!(
                    "cannot create {}: {e}. Check that the directory exists and is writable, or \
                     choose another output with -o",
                    partial.display()
                ))
            })?,
        };
        Ok(PartialFile {
            file: io::BufWriter::with_capacity(256 * 1024, file),
            partial,
            path: path.to_owned(),
        })
    }

    fn write(&mut self, bytes: &[u8]) -> anyhow::Result<()> {
        self.file
            .write_all(bytes)
            .with_context(|| write_failed(&self.partial))
    }

    /// Flushes and fsyncs (off the async threads).
    async fn sync(&mut self) -> anyhow::Result<()> {
        self.file
            .flush()
            .with_context(|| write_failed(&self.partial))?;
        crash_point("write");
        let handle = self.file.get_ref().try_clone()?;
        let what = write_failed(&self.partial);
        tokio::task::spawn_blocking(move || handle.sync_data())
            .await?
            .context(what)?;
        crash_point("fsync");
        Ok(())
    }

    /// fsync, then rename into place, then fsync the directory so the rename is durable too.
    /// Returns the finished file's size and hash, for the job record.
    fn finish(self) -> anyhow::Result<FileSum> {
        let PartialFile {
            file,
            partial,
            path,
        } = self;
        let file = file
            .into_inner()
            .map_err(|e| e.into_error())
            .with_context(|| format!("writing {}", partial.display()))?;
        file.sync_all()
            .with_context(|| format!("saving {} to disk", partial.display()))?;
        drop(file);
        let sum =
            FileSum::of(&partial).with_context(|| format!("reading {}", partial.display()))?;
        std::fs::rename(&partial, &path)
            .with_context(|| format!("renaming {} to {}", partial.display(), path.display()))?;
        crash_point("rename");
        durable::sync_dir(&path).with_context(|| format!("saving {} to disk", path.display()))?;
        Ok(sum)
    }
}

/// The partial file's name for an output path.
pub fn partial_path(output: &Path) -> PathBuf {
    let mut name = output.as_os_str().to_owned();
    name.push(".partial");
    PathBuf::from(name)
}

/// The split files' paths: `<stem>.deliverable.csv` etc. beside the output.
pub fn split_paths(output: &Path) -> [PathBuf; 3] {
    let stem = output
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    SPLITS.map(|kind| output.with_file_name(format!("{stem}.{kind}.csv")))
}

/// valid → deliverable; valid_catch_all, catch_all, unknown (and statuses this version does
/// not know) → risky; invalid, missing → undeliverable; error → none (main output only).
fn split_of(outcome: &Outcome) -> Option<usize> {
    match outcome {
        Outcome::Empty | Outcome::Syntax(_) => Some(2),
        Outcome::Error { .. } => None,
        Outcome::Answer { answer, .. } => match answer.status.as_ref().map(|s| s.as_str()) {
            Some("valid") => Some(0),
            Some("invalid") => Some(2),
            _ => Some(1),
        },
    }
}

/// Where the rows go.
pub enum Sink {
    /// Files, checkpointed and renamed into place at the end.
    Files {
        main: PartialFile,
        splits: Option<Box<[PartialFile; 3]>>,
    },
    /// Standard output: no checkpoints, no resume.
    Stdout(io::BufWriter<io::Stdout>),
}

impl Sink {
    pub fn stdout() -> Sink {
        Sink::Stdout(io::BufWriter::with_capacity(256 * 1024, io::stdout()))
    }

    /// Opens the output (and the split files), fresh or cut back to a checkpoint.
    pub fn files(output: &Path, split: bool, resume: Option<&Watermark>) -> anyhow::Result<Sink> {
        let main = PartialFile::open(output, resume.map(|w| w.output_bytes))?;
        let splits = if split {
            let paths = split_paths(output);
            let mut parts = Vec::with_capacity(3);
            for (i, path) in paths.iter().enumerate() {
                parts.push(PartialFile::open(path, resume.map(|w| w.split_bytes[i]))?);
            }
            let parts: [PartialFile; 3] = parts
                .try_into()
                .map_err(|_| anyhow::anyhow!("three split files"))?;
            Some(Box::new(parts))
        } else {
            None
        };
        Ok(Sink::Files { main, splits })
    }

    /// Writes the header line to every file.
    pub fn header(&mut self, line: &[u8], watermark: &mut Watermark) -> anyhow::Result<()> {
        match self {
            Sink::Stdout(out) => out.write_all(line).context("writing standard output")?,
            Sink::Files { main, splits } => {
                main.write(line)?;
                for (i, part) in splits.iter_mut().flat_map(|p| p.iter_mut()).enumerate() {
                    part.write(line)?;
                    watermark.split_bytes[i] += line.len() as u64;
                }
            }
        }
        watermark.output_bytes += line.len() as u64;
        Ok(())
    }

    fn row(
        &mut self,
        bytes: &[u8],
        outcome: &Outcome,
        watermark: &mut Watermark,
    ) -> io::Result<()> {
        match self {
            Sink::Stdout(out) => out.write_all(bytes)?,
            Sink::Files { main, splits } => {
                main.file.write_all(bytes)?;
                if let (Some(parts), Some(i)) = (splits, split_of(outcome)) {
                    parts[i].file.write_all(bytes)?;
                    watermark.split_bytes[i] += bytes.len() as u64;
                }
            }
        }
        watermark.output_bytes += bytes.len() as u64;
        Ok(())
    }

    /// The context of a failed write: what, and for a file how to carry on.
    fn write_failed(&self) -> String {
        match self {
            Sink::Files { main, .. } => write_failed(&main.partial),
            Sink::Stdout(_) => "writing standard output".to_owned(),
        }
    }
}

/// When to checkpoint.
#[derive(Debug, Clone, Copy)]
pub struct CheckpointEvery {
    pub rows: u64,
    pub interval: Duration,
}

/// How the writer ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteEnd {
    /// Every planned row was written and the input ended.
    Complete,
    /// Stopped at a row whose verdict will not come in this run.
    Stopped,
    /// The reader of standard output went away.
    BrokenPipe,
}

/// The writer task and what it knows.
pub struct Writer {
    pub sink: Sink,
    pub format: RowFormat,
    /// Where the next row to write starts in the input, and how long the output is.
    pub watermark: Watermark,
    /// The job's record, for a job that can resume.
    pub journal: Option<Journal>,
    pub every: CheckpointEvery,
    pub counters: Arc<Counters>,
}

/// Receives planned rows, and the pool's settled requests, and writes the rows in order until
/// the input ends, or until the pool is gone (`settled` closed) with the row at the head of the
/// window still waiting.
pub async fn run(
    mut writer: Writer,
    mut planned: mpsc::Receiver<Vec<Planned>>,
    mut settled: mpsc::Receiver<Settled>,
    window: usize,
) -> anyhow::Result<(WriteEnd, Writer)> {
    let mut queue: VecDeque<Planned> = VecDeque::with_capacity(window);
    let mut input_open = true;
    let mut pool_open = true;
    let mut buf = Vec::with_capacity(64 * 1024);
    let mut since_checkpoint = 0u64;
    let mut last_checkpoint = tokio::time::Instant::now();
    let end = loop {
        // Write every row at the head whose verdict is known.
        while let Some(outcome) = queue.front().and_then(Planned::outcome) {
            let planned = queue.pop_front().expect("the front was just seen");
            buf.clear();
            writer.format.row(&mut buf, &planned, &outcome);
            if let Err(e) = writer.sink.row(&buf, &outcome, &mut writer.watermark) {
                if e.kind() == io::ErrorKind::BrokenPipe {
                    return Ok((WriteEnd::BrokenPipe, writer));
                }
                return Err(e).with_context(|| writer.sink.write_failed());
            }
            writer.counters.row_written(&outcome);
            if !planned.others.is_empty() {
                // `row_written` counted what the address shown cost: add the others.
                let shown = match &outcome {
                    Outcome::Answer {
                        answer,
                        source: Source::Api,
                    } => answer.credits,
                    _ => 0.0,
                };
                writer.counters.add_credits(cost(&planned).0 - shown);
            }
            writer.counters.tally(&planned.normalized, &outcome);
            let next = planned.row.resume_after();
            writer.watermark.byte = next.byte;
            writer
                .counters
                .input_done
                .store(next.byte, std::sync::atomic::Ordering::Relaxed);
            writer.watermark.line = next.line;
            writer.watermark.rows += 1;
            since_checkpoint += 1;
        }
        if since_checkpoint > 0
            && (since_checkpoint >= writer.every.rows
                || last_checkpoint.elapsed() >= writer.every.interval)
        {
            writer.checkpoint().await?;
            since_checkpoint = 0;
            last_checkpoint = tokio::time::Instant::now();
        }
        if queue.is_empty() && !input_open {
            break WriteEnd::Complete;
        }
        if !pool_open && !queue.is_empty() {
            // The pool is gone and every outcome it settled is in: the head will not be
            // answered in this run, and everything behind it waits for the next. Rows already
            // in the window are not lost: they are re-read on resume.
            break WriteEnd::Stopped;
        }
        tokio::select! {
            biased;
            next = settled.recv(), if pool_open => match next {
                Some(first) => {
                    first.apply();
                    while let Ok(next) = settled.try_recv() {
                        next.apply();
                    }
                }
                None => pool_open = false,
            },
            next = planned.recv(), if input_open && queue.len() < window => match next {
                Some(batch) => queue.extend(batch),
                None => input_open = false,
            },
            _ = tokio::time::sleep(writer.every.interval), if since_checkpoint > 0 => {}
        }
    };
    writer.checkpoint().await?;
    Ok((end, writer))
}

/// "writing PARTIAL", with what to do: the checkpoint before the failure is still good.
fn write_failed(partial: &Path) -> String {
    format!(
        "writing {} (is the disk full?); the last checkpoint is kept: free some space or fix the \
         cause, then run the same command to resume",
        partial.display()
    )
}

impl Writer {
    /// Makes the output durable up to the watermark, then records it (see the module docs
    /// for why this order).
    pub async fn checkpoint(&mut self) -> anyhow::Result<()> {
        match &mut self.sink {
            Sink::Stdout(out) => match out.flush() {
                Err(e) if e.kind() != io::ErrorKind::BrokenPipe => {
                    Err(e).context("writing standard output")
                }
                _ => Ok(()),
            },
            Sink::Files { main, splits } => {
                main.sync().await?;
                for part in splits.iter_mut().flat_map(|p| p.iter_mut()) {
                    part.sync().await?;
                }
                if let Some(journal) = &mut self.journal {
                    journal.checkpoint(self.watermark)?;
                    crash_point("record");
                    journal.flush().await?;
                }
                Ok(())
            }
        }
    }

    /// Ends a complete run: every file fsynced and renamed into place. Returns the output's
    /// path and the finished files' sums, the output's first, then the split files' (nothing
    /// for standard output).
    pub fn finish(self) -> anyhow::Result<Option<(PathBuf, Vec<FileSum>)>> {
        match self.sink {
            Sink::Stdout(mut out) => {
                let _ = out.flush();
                Ok(None)
            }
            Sink::Files { main, splits } => {
                let path = main.path.clone();
                let mut sums = Vec::with_capacity(4);
                for part in splits.into_iter().flat_map(|p| *p) {
                    sums.push(part.finish()?);
                }
                sums.insert(0, main.finish()?);
                Ok(Some((path, sums)))
            }
        }
    }
}

/// The test hook `MAILSIFT_TEST_CRASH_AT=<point>:<n>`: ends the process at once the n-th time
/// (1-based) the writer reaches `point`. The points, in the order a checkpoint meets them:
///
/// - `write`: the buffered rows were handed to the OS, not yet fsynced (a power cut here loses
///   them: the tests cut the file back to simulate that);
/// - `fsync`: the output is durable, the watermark not yet recorded;
/// - `record`: the watermark is recorded in the store, the store not yet flushed;
/// - `rename`: at the end, a partial file is renamed into place, the job not yet marked done;
/// - `report`: at the end, every file is in place and the report written, the job not yet
///   marked done.
///
/// `std::process::exit` runs no destructor and flushes nothing of ours: whatever the process
/// still held (the output buffer, the store's unflushed job record) is lost, as in a crash. For tests
/// only; undocumented for users on purpose.
pub(crate) fn crash_point(point: &str) {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::OnceLock;
    static PLAN: OnceLock<Option<(String, u64)>> = OnceLock::new();
    static REACHED: AtomicU64 = AtomicU64::new(0);
    let plan = PLAN.get_or_init(|| {
        let text = std::env::var("MAILSIFT_TEST_CRASH_AT").ok()?;
        let (at, n) = text.split_once(':')?;
        Some((at.to_owned(), n.parse().ok()?))
    });
    if let Some((at, n)) = plan {
        if at == point && REACHED.fetch_add(1, Ordering::Relaxed) + 1 == *n {
            crate::term::note(format_args!(
                "MAILSIFT_TEST_CRASH_AT={point}:{n}: crashing on purpose"
            ));
            std::process::exit(CRASH_EXIT);
        }
    }
}

/// The exit code of a crash on purpose (`MAILSIFT_TEST_CRASH_AT`); no real outcome uses it.
pub const CRASH_EXIT: i32 = 99;

/// The `email_status` word of an outcome.
fn status(outcome: &Outcome) -> &str {
    match outcome {
        Outcome::Empty => "missing",
        Outcome::Syntax(_) => "invalid",
        Outcome::Answer { answer, .. } => answer.status.as_ref().map_or("unknown", |s| s.as_str()),
        Outcome::Error { .. } => "error",
    }
}

/// The `email_others` column of a row whose cell held several addresses: every address but
/// the one the row shows (`best`, an index into [`Planned::addresses`]), in cell order, as
/// `ADDRESS:STATUS` joined by `"; "`, then the pieces past [`cell::MAX_ASKED`] as
/// `ADDRESS:skipped` (or `:invalid`, when the free syntax check rejects them). Valid
/// addresses hold no `;`, `:` or space; a `;` in a rejected one is written `%3B` (and a `;` or
/// `:` in a status `%3B`, `%3A`), so the list always splits at `"; "` and each item at its
/// last `:`.
pub fn others(planned: &Planned, best: usize, rules: address::Rules) -> String {
    let mut out = String::new();
    let mut item = |address: &str, status: &str| {
        if !out.is_empty() {
            out.push_str("; ");
        }
        out.push_str(&address.replace(';', "%3B"));
        out.push(':');
        // A status this version does not know is the server's text: kept splittable too.
        out.push_str(&status.replace(';', "%3B").replace(':', "%3A"));
    };
    for (i, (address, slot)) in planned.addresses().enumerate() {
        if i != best {
            let outcome = planned.outcome_of(slot);
            item(address, outcome.as_ref().map_or("error", status));
        }
    }
    let past_cap = cell::of_row(&planned.row)
        .into_iter()
        .flatten()
        .skip(cell::MAX_ASKED);
    for piece in past_cap {
        match address::check_with(piece, rules) {
            Checked::Valid(a) => item(&a.normalized, "skipped"),
            Checked::Invalid { normalized, .. } => item(&normalized, "invalid"),
            Checked::Empty => {}
        }
    }
    out
}

/// What a row's addresses cost in this run: the answers this row paid for (source `api`),
/// summed; and whether that is all of it (not when one of them ended in `error`: whether it
/// was charged is unknown, and the `credits_consumed` column prints no guess).
fn cost(planned: &Planned) -> (f64, bool) {
    let (mut paid, mut known) = (0.0, true);
    for (_, slot) in planned.addresses() {
        match planned.outcome_of(slot) {
            Some(Outcome::Answer {
                answer,
                source: Source::Api,
            }) => paid += answer.credits,
            Some(Outcome::Error { .. }) | None => known = false,
            Some(_) => {}
        }
    }
    (paid, known)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::{Company, Status};
    use crate::plan::Slot;
    use crate::store::{Answer, Domain};

    fn row(raw: &str, fields: usize) -> Row {
        let keep = raw.trim_end_matches(['\r', '\n']).len();
        Row {
            line: 2,
            start: 0,
            raw: raw.as_bytes().to_vec(),
            keep,
            fields,
            email: None,
        }
    }

    fn format(company: bool) -> RowFormat {
        RowFormat {
            terminator: b"\n".to_vec(),
            pad_to: Some(3),
            company,
            prefix: String::new(),
            raw_fields: false,
            rules: address::Rules::default(),
            quoter: quoter(b','),
            last_time: (i64::MIN, String::new()),
            suggester: address::Suggester::default(),
        }
    }

    fn write(
        format: &mut RowFormat,
        raw: &str,
        fields: usize,
        normalized: &str,
        outcome: Outcome,
    ) -> String {
        let planned = Planned {
            seq: 0,
            row: row(raw, fields),
            normalized: normalized.into(),
            slot: Slot::Ready(outcome.clone()),
            others: Vec::new(),
        };
        let mut out = Vec::new();
        format.row(&mut out, &planned, &outcome);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn rows_keep_their_bytes_and_gain_the_columns() {
        let answer = Arc::new(Answer {
            status: Some(Status::Valid),
            message: Some("Email is valid.".into()),
            is_catch_all: Some(false),
            credits: 0.05,
            checked_at: 0,
            run: 1,
            first_row: 0,
            domain: Arc::new(Domain {
                mx_provider: Some("Google, \"Workspace\"".into()),
                mx_record: Some("aspmx.l.google.com".into()),
                company: Company {
                    name: Some("Acme".into()),
                    ..Company::default()
                },
            }),
        });
        let mut f = format(false);
        let api = Outcome::Answer {
            answer: answer.clone(),
            source: Source::Api,
        };
        assert_eq!(
            write(&mut f, "Jane,\"x, y\",jane@acme.com\r\n", 3, "jane@acme.com", api),
            "Jane,\"x, y\",jane@acme.com,valid,Email is valid.,jane@acme.com,\"Google, \"\"Workspace\"\"\",aspmx.l.google.com,false,0.05,1970-01-01T00:00:00Z,api,,\r\n"
        );
        // A likely typo gets a suggestion; the address sent stays as it was.
        let typo = Outcome::Answer {
            answer: answer.clone(),
            source: Source::Api,
        };
        assert!(write(&mut f, "x,Jane@GMIAL.com\n", 2, "Jane@gmial.com", typo)
            .ends_with(",Jane@gmial.com,\"Google, \"\"Workspace\"\"\",aspmx.l.google.com,false,0.05,1970-01-01T00:00:00Z,api,Jane@gmail.com,\n"));
        let dup = Outcome::Answer {
            answer: answer.clone(),
            source: Source::Duplicate,
        };
        assert!(
            write(&mut f, "a,b,c", 3, "c", dup).ends_with(",0,1970-01-01T00:00:00Z,duplicate,,\n")
        );
        // The time of each row its own, whichever came before (the last one is remembered).
        for (at, text) in [
            (1_800_000_000, "2027-01-15T08:00:00Z"),
            (1_800_000_001, "2027-01-15T08:00:01Z"),
            (0, "1970-01-01T00:00:00Z"),
            (1_800_000_001, "2027-01-15T08:00:01Z"),
        ] {
            let cached = Outcome::Answer {
                answer: Arc::new(Answer {
                    checked_at: at,
                    ..(*answer).clone()
                }),
                source: Source::Cache,
            };
            let line = write(&mut f, "a,b,c", 3, "c", cached);
            assert!(line.ends_with(&format!(",0,{text},cache,,\n")), "{line}");
        }
        // A short row is padded so the columns line up; a long one is kept whole.
        assert_eq!(
            write(&mut f, "only\n", 1, "", Outcome::Empty),
            "only,,,missing,no email address in this row,,,,,0,,empty,,\n"
        );
        assert!(write(&mut f, "a,b,c,d\n", 4, "", Outcome::Empty).starts_with("a,b,c,d,missing,"));
        assert_eq!(
            write(
                &mut f,
                "x,y,bad@\n",
                3,
                "bad@",
                Outcome::Syntax("domain is empty")
            ),
            "x,y,bad@,invalid,domain is empty,bad@,,,,0,,syntax,,\n"
        );
        let err = Outcome::Error {
            message: "rejected by the API (HTTP 400: bad)".into(),
        };
        assert_eq!(
            write(&mut f, "x,y,z\n", 3, "z", err),
            "x,y,z,error,rejected by the API (HTTP 400: bad),z,,,,,,api,,\n"
        );
        let all = write(
            &mut format(true),
            "a,b,c\n",
            3,
            "c",
            Outcome::Answer {
                answer,
                source: Source::Cache,
            },
        );
        assert!(
            all.ends_with(",0,1970-01-01T00:00:00Z,cache,,,Acme,,,,,\n"),
            "{all}"
        );
    }

    #[test]
    fn header_gets_prefixed_names() {
        let mut f = format(false);
        f.prefix = "lm_".into();
        f.quoter = quoter(b';');
        let header = f.header(&row("a;b;c\r\n", 3));
        assert_eq!(
            String::from_utf8(header).unwrap(),
            "a;b;c;lm_email_status;lm_email_message;lm_email_normalized;lm_mx_provider;lm_mx_record;lm_is_catch_all;lm_credits_consumed;lm_checked_at;lm_source;lm_email_suggestion;lm_email_others\r\n"
        );
    }

    /// The writer's side of a run: planned rows in, settled requests in, rows out.
    mod writer {
        use std::collections::BTreeMap;

        use super::*;
        use crate::journal::Journal;
        use crate::ledger::Ledger;
        use crate::plan::{Pending, Resolved, Settled};
        use crate::store::{JobRecord, JobState, Store, Tally};

        const JOB: [u8; 16] = [3; 16];

        /// Data row `seq` of a file whose rows are `r<seq>\n`, waiting for `pending`.
        fn waiting(seq: u64, pending: &Arc<Pending>) -> Planned {
            let raw = format!("r{seq}\n").into_bytes();
            Planned {
                seq,
                row: Row {
                    line: seq + 1,
                    start: seq * 3,
                    keep: raw.len() - 1,
                    raw,
                    fields: 1,
                    email: None,
                },
                normalized: format!("u{seq}@x.com"),
                slot: Slot::Wait(pending.clone()),
                others: Vec::new(),
            }
        }

        fn answered(pending: &Arc<Pending>) -> Settled {
            Settled {
                pending: pending.clone(),
                resolved: Resolved::Answered(Arc::new(crate::store::Answer {
                    status: Some(crate::client::Status::Valid),
                    ..crate::store::Answer::default()
                })),
            }
        }

        fn record() -> JobRecord {
            JobRecord {
                input: "in.csv".into(),
                output: "out.csv".into(),
                fingerprint: String::new(),
                options: String::new(),
                run: 1,
                state: JobState::Running,
                watermark: Watermark::default(),
                started_at: 0,
                updated_at: 0,
                api_calls: 0,
                credits_spent: 0.0,
                counts: BTreeMap::new(),
                input_bytes: 0,
                files: Vec::new(),
                report: None,
            }
        }

        struct Setup {
            dir: tempfile::TempDir,
            store: Arc<Store>,
            writer: Writer,
        }

        /// A writer to `out.csv` checkpointing every `rows` rows (and hourly), its job
        /// recorded in a store of its own.
        async fn setup(rows: u64) -> Setup {
            let dir = tempfile::tempdir().unwrap();
            let store = Arc::new(Store::open(&dir.path().join("state")).unwrap());
            let counters = Arc::new(Counters::new());
            let ledger = Ledger::open(None, None, Tally::default(), 0.0, None).unwrap();
            let journal = Journal::start(
                store.clone(),
                JOB,
                record(),
                1,
                counters.clone(),
                Arc::new(ledger),
            )
            .await
            .unwrap();
            let writer = Writer {
                sink: Sink::files(&dir.path().join("out.csv"), false, None).unwrap(),
                format: format(false),
                watermark: Watermark::default(),
                journal: Some(journal),
                every: CheckpointEvery {
                    rows,
                    interval: Duration::from_secs(3600),
                },
                counters,
            };
            Setup { dir, store, writer }
        }

        /// Waits (in real time: the writer syncs on blocking threads) until `done`, for 20 s
        /// at most.
        async fn until(what: &str, done: impl Fn() -> bool) {
            let deadline = std::time::Instant::now() + Duration::from_secs(20);
            while !done() {
                assert!(
                    std::time::Instant::now() < deadline,
                    "waited 20 s for {what}"
                );
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }

        fn written_rows(store: &Store) -> u64 {
            store.job(&JOB).unwrap().unwrap().watermark.rows
        }

        /// The first field of each line of `out.csv.partial` (or of `out.csv` once finished).
        fn lines(dir: &Path, file: &str) -> Vec<String> {
            std::fs::read_to_string(dir.join(file))
                .unwrap()
                .lines()
                .map(|l| l.split(',').next().unwrap().to_owned())
                .collect()
        }

        #[tokio::test]
        async fn rows_go_out_in_input_order_whatever_order_their_answers_come_in() {
            let Setup { dir, writer, .. } = setup(u64::MAX).await;
            let (planned_tx, planned) = mpsc::channel(8);
            let (settled_tx, settled) = mpsc::channel(8);
            let task = tokio::spawn(run(writer, planned, settled, 16));
            let pending: Vec<_> = (0..5).map(|row| Arc::new(Pending::new(row))).collect();
            // Row 5 asks what row 1 asked: it waits for the same request.
            let mut rows: Vec<_> = (0..5)
                .map(|seq| waiting(seq, &pending[seq as usize]))
                .collect();
            rows.push(waiting(5, &pending[1]));
            planned_tx.send(rows).await.unwrap();
            drop(planned_tx);
            for p in pending.iter().rev() {
                settled_tx.send(answered(p)).await.unwrap();
            }
            let (end, writer) = task.await.unwrap().unwrap();
            assert_eq!(end, WriteEnd::Complete);
            assert_eq!(writer.watermark.rows, 6);
            let (path, _) = writer.finish().unwrap().unwrap();
            assert_eq!(path, dir.path().join("out.csv"));
            assert_eq!(
                lines(dir.path(), "out.csv"),
                ["r0", "r1", "r2", "r3", "r4", "r5"]
            );
            let text = std::fs::read_to_string(dir.path().join("out.csv")).unwrap();
            let sources: Vec<&str> = text
                .lines()
                .map(|l| l.split(',').nth(11).unwrap())
                .collect();
            assert_eq!(sources, ["api", "api", "api", "api", "api", "duplicate"]);
        }

        #[tokio::test(start_paused = true)]
        async fn a_full_window_holds_the_planner_back_until_the_head_is_written() {
            let Setup {
                dir: _dir, writer, ..
            } = setup(u64::MAX).await;
            let (planned_tx, planned) = mpsc::channel(1);
            let (settled_tx, settled) = mpsc::channel(8);
            let _task = tokio::spawn(run(writer, planned, settled, 2));
            let pending: Vec<_> = (0..5).map(|row| Arc::new(Pending::new(row))).collect();
            // Two rows in the window, one in the channel: the fourth must wait.
            for seq in 0..3 {
                planned_tx
                    .send(vec![waiting(seq, &pending[seq as usize])])
                    .await
                    .unwrap();
            }
            let fourth = planned_tx.send(vec![waiting(3, &pending[3])]);
            let waited = tokio::time::timeout(Duration::from_secs(60), fourth).await;
            assert!(waited.is_err(), "the window is full: the fourth row waits");
            // Answering a row behind the head frees nothing.
            settled_tx.send(answered(&pending[1])).await.unwrap();
            let fourth = planned_tx.send(vec![waiting(3, &pending[3])]);
            assert!(tokio::time::timeout(Duration::from_secs(60), fourth)
                .await
                .is_err());
            settled_tx.send(answered(&pending[0])).await.unwrap();
            let fourth = planned_tx.send(vec![waiting(3, &pending[3])]);
            tokio::time::timeout(Duration::from_secs(60), fourth)
                .await
                .expect("the head and the row behind it are written: room again")
                .unwrap();
        }

        #[tokio::test]
        async fn a_checkpoint_comes_every_so_many_rows_and_at_the_end() {
            let Setup {
                dir: _dir,
                store,
                writer,
            } = setup(2).await;
            let counters = writer.counters.clone();
            let (planned_tx, planned) = mpsc::channel(8);
            let (settled_tx, settled) = mpsc::channel(8);
            let task = tokio::spawn(run(writer, planned, settled, 16));
            let pending: Vec<_> = (0..3).map(|row| Arc::new(Pending::new(row))).collect();
            planned_tx
                .send(vec![waiting(0, &pending[0]), waiting(1, &pending[1])])
                .await
                .unwrap();
            settled_tx.send(answered(&pending[0])).await.unwrap();
            settled_tx.send(answered(&pending[1])).await.unwrap();
            until("a checkpoint after 2 rows", || written_rows(&store) == 2).await;
            // One row more is written, and waits for the next checkpoint: here, the end.
            planned_tx
                .send(vec![waiting(2, &pending[2])])
                .await
                .unwrap();
            settled_tx.send(answered(&pending[2])).await.unwrap();
            let done = || {
                counters
                    .input_done
                    .load(std::sync::atomic::Ordering::Relaxed)
            };
            until("row 2 written", || done() == 9).await;
            assert_eq!(written_rows(&store), 2);
            drop(planned_tx);
            let (end, writer) = task.await.unwrap().unwrap();
            assert_eq!(end, WriteEnd::Complete);
            assert_eq!(written_rows(&store), 3);
            assert_eq!(
                store.job(&JOB).unwrap().unwrap().watermark,
                writer.watermark
            );
        }

        #[tokio::test]
        async fn when_the_pool_is_gone_the_writer_stops_at_the_first_unanswered_row() {
            let Setup {
                dir, store, writer, ..
            } = setup(u64::MAX).await;
            let (planned_tx, planned) = mpsc::channel(8);
            let (settled_tx, settled) = mpsc::channel(8);
            let task = tokio::spawn(run(writer, planned, settled, 16));
            let pending: Vec<_> = (0..5).map(|row| Arc::new(Pending::new(row))).collect();
            let rows = (0..5)
                .map(|seq| waiting(seq, &pending[seq as usize]))
                .collect();
            planned_tx.send(rows).await.unwrap();
            for i in [3, 1, 0] {
                settled_tx.send(answered(&pending[i])).await.unwrap();
            }
            // The pool stopped (a signal, a halt): row 2 will not be answered in this run, and
            // the input is still open.
            drop(settled_tx);
            let (end, writer) = task.await.unwrap().unwrap();
            assert_eq!(end, WriteEnd::Stopped);
            assert_eq!(writer.watermark.rows, 2);
            // Written, made durable and recorded: a resume starts at row 2.
            assert_eq!(written_rows(&store), 2);
            assert_eq!(
                store.job(&JOB).unwrap().unwrap().watermark,
                writer.watermark
            );
            assert_eq!(lines(dir.path(), "out.csv.partial"), ["r0", "r1"]);
            drop(planned_tx);
        }
    }
}
