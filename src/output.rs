//! The output: one writer task owns the output file, puts rows back in input order, appends
//! the annotation columns, and checkpoints.
//!
//! Answers arrive out of order; the writer keeps a bounded window of planned rows and writes
//! the head as soon as its verdict is known, so the file always holds a prefix of the input.
//! Every few thousand rows or seconds it takes a checkpoint, in this order:
//!
//! 1. flush the buffer and fsync `<output>.partial`;
//! 2. record the watermark (input offset of the next row, output length) in the job record;
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

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::sync::{mpsc, Notify};
use tokio_util::sync::CancellationToken;

use crate::address::{self, Checked};
use crate::cell;
use crate::durable::{self, FileSum};
use crate::input::{Layout, Row};
use crate::plan::{Outcome, Planned, Source};
use crate::report::Counters;
use crate::schema::{format_credits, rfc3339, ANNOTATION_COLUMNS, COMPANY_COLUMNS, SPLITS};
use crate::store::{JobRecord, Store, Watermark};

/// How rows are written: the input's delimiter and line ending, the annotation columns.
#[derive(Debug, Clone)]
pub struct RowFormat {
    pub delimiter: u8,
    /// Line ending for rows that had none (the last line of a file).
    pub terminator: Vec<u8>,
    /// Short rows are padded to this many fields, so the annotations line up under the header.
    pub pad_to: Option<usize>,
    pub company: bool,
    pub prefix: String,
    /// Write the API's text as it came (`--raw-fields`), without neutralising formulas.
    pub raw_fields: bool,
}

impl RowFormat {
    pub fn new(layout: &Layout, company: bool, prefix: Option<&str>) -> RowFormat {
        let pad_to = layout
            .replace_from
            .or_else(|| layout.header.as_ref().map(|h| h.fields));
        RowFormat {
            delimiter: layout.delimiter,
            terminator: layout.terminator.clone(),
            pad_to,
            company,
            prefix: prefix.unwrap_or("").to_owned(),
            raw_fields: false,
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
            out.push(self.delimiter);
            field(
                &mut out,
                format!("{}{name}", self.prefix).as_bytes(),
                self.delimiter,
            );
        }
        out.extend_from_slice(terminator(&header.raw).unwrap_or(&self.terminator));
        out
    }

    /// Appends one annotated row to `out`.
    pub fn row(&self, out: &mut Vec<u8>, planned: &Planned, outcome: &Outcome) {
        let row = &planned.row;
        out.extend_from_slice(&row.raw[..row.keep]);
        if let Some(want) = self.pad_to {
            let have = self.kept_fields(row);
            for _ in have..want {
                out.push(self.delimiter);
            }
        }
        let d = self.delimiter;
        let put = |out: &mut Vec<u8>, value: &str| {
            out.push(d);
            field(out, value.as_bytes(), d);
        };
        // Text that came from the API: a spreadsheet must not run it as a formula.
        let api = |out: &mut Vec<u8>, value: &str| {
            out.push(d);
            if !self.raw_fields && value.starts_with(FORMULA_STARTS) {
                let mut quoted = Vec::with_capacity(value.len() + 1);
                quoted.push(b'\'');
                quoted.extend_from_slice(value.as_bytes());
                field(out, &quoted, d);
            } else {
                field(out, value.as_bytes(), d);
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
        api(out, text(|a| a.mx_provider.as_deref()));
        api(out, text(|a| a.mx_record.as_deref()));
        put(
            out,
            match answer.and_then(|a| a.is_catch_all) {
                Some(true) => "true",
                Some(false) => "false",
                None => "",
            },
        );
        let (mut credits, checked_at, source) = match outcome {
            Outcome::Empty => ("0".to_owned(), String::new(), Source::Empty.as_str()),
            Outcome::Syntax(_) => ("0".to_owned(), String::new(), Source::Syntax.as_str()),
            Outcome::Answer { answer, source } => (
                // What this row cost in this run: duplicates and cache hits are free.
                if *source == Source::Api {
                    format_credits(answer.credits)
                } else {
                    "0".to_owned()
                },
                rfc3339(answer.checked_at),
                source.as_str(),
            ),
            // The request may or may not have been charged: say nothing rather than guess.
            Outcome::Error { .. } => (String::new(), String::new(), Source::Api.as_str()),
        };
        if !planned.others.is_empty() {
            // The row cost what all its addresses cost; unknown if one of them is an error.
            let (paid, known) = cost(planned);
            credits = if known {
                format_credits(paid)
            } else {
                String::new()
            };
        }
        put(out, &credits);
        put(out, &checked_at);
        put(out, source);
        put(out, &address::suggest(shown).unwrap_or_default());
        put(
            out,
            &best.map_or_else(String::new, |best| others(planned, best)),
        );
        if self.company {
            let c = answer.map(|a| &a.company);
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

/// Writes one CSV field, quoted only when it must be.
fn field(out: &mut Vec<u8>, value: &[u8], delimiter: u8) {
    let needs_quotes = value
        .iter()
        .any(|&b| b == delimiter || b == b'"' || b == b'\n' || b == b'\r');
    if !needs_quotes {
        out.extend_from_slice(value);
        return;
    }
    out.push(b'"');
    for &b in value {
        if b == b'"' {
            out.push(b'"');
        }
        out.push(b);
    }
    out.push(b'"');
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

/// What the writer needs to record checkpoints.
pub struct Checkpoint {
    pub store: Arc<Store>,
    pub job_id: [u8; 16],
    pub record: JobRecord,
    /// Brings the record's totals (calls, credits, counts) up to date.
    pub update: Box<dyn Fn(&mut JobRecord) + Send + Sync>,
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
    pub checkpoint: Option<Checkpoint>,
    pub every: CheckpointEvery,
    pub counters: Arc<Counters>,
}

/// Receives planned rows and writes them in order until the input ends, or until `done`
/// (the pool has stopped) leaves the head of the queue without a verdict.
pub async fn run(
    mut writer: Writer,
    mut planned: mpsc::Receiver<Vec<Planned>>,
    wake: Arc<Notify>,
    pool_done: CancellationToken,
    window: usize,
) -> anyhow::Result<(WriteEnd, Writer)> {
    let mut queue: VecDeque<Planned> = VecDeque::with_capacity(window);
    let mut input_open = true;
    let mut buf = Vec::with_capacity(64 * 1024);
    let mut since_checkpoint = 0u64;
    let mut last_checkpoint = tokio::time::Instant::now();
    let end = loop {
        // Read before draining: every verdict the pool will ever give is in by the time it is
        // done, so a head still unresolved after this drain will stay so.
        let pool_is_done = pool_done.is_cancelled();
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
        if pool_is_done && !queue.is_empty() {
            // No worker is left to answer the head: everything behind it waits for the
            // next run. Rows already in the queue are not lost: they are re-read on resume.
            break WriteEnd::Stopped;
        }
        tokio::select! {
            biased;
            _ = wake.notified() => {}
            next = planned.recv(), if input_open && queue.len() < window => match next {
                Some(batch) => queue.extend(batch),
                None => input_open = false,
            },
            _ = pool_done.cancelled(), if !queue.is_empty() => {}
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
                if let Some(cp) = &mut self.checkpoint {
                    cp.record.watermark = self.watermark;
                    cp.record.updated_at = crate::clock::now();
                    (cp.update)(&mut cp.record);
                    cp.store.save_job(&cp.job_id, &cp.record)?;
                    crash_point("record");
                    let store = cp.store.clone();
                    tokio::task::spawn_blocking(move || store.flush()).await??;
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
            eprintln!("mailsift: MAILSIFT_TEST_CRASH_AT={point}:{n}: crashing on purpose");
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
pub fn others(planned: &Planned, best: usize) -> String {
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
        match address::check(piece) {
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
    use crate::store::Answer;

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
            delimiter: b',',
            terminator: b"\n".to_vec(),
            pad_to: Some(3),
            company,
            prefix: String::new(),
            raw_fields: false,
        }
    }

    fn write(
        format: &RowFormat,
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
            mx_provider: Some("Google, \"Workspace\"".into()),
            mx_record: Some("aspmx.l.google.com".into()),
            is_catch_all: Some(false),
            credits: 0.05,
            checked_at: 0,
            run: 1,
            first_row: 0,
            company: Company {
                name: Some("Acme".into()),
                ..Company::default()
            },
        });
        let f = format(false);
        let api = Outcome::Answer {
            answer: answer.clone(),
            source: Source::Api,
        };
        assert_eq!(
            write(&f, "Jane,\"x, y\",jane@acme.com\r\n", 3, "jane@acme.com", api),
            "Jane,\"x, y\",jane@acme.com,valid,Email is valid.,jane@acme.com,\"Google, \"\"Workspace\"\"\",aspmx.l.google.com,false,0.05,1970-01-01T00:00:00Z,api,,\r\n"
        );
        // A likely typo gets a suggestion; the address sent stays as it was.
        let typo = Outcome::Answer {
            answer: answer.clone(),
            source: Source::Api,
        };
        assert!(write(&f, "x,Jane@GMIAL.com\n", 2, "Jane@gmial.com", typo)
            .ends_with(",Jane@gmial.com,\"Google, \"\"Workspace\"\"\",aspmx.l.google.com,false,0.05,1970-01-01T00:00:00Z,api,Jane@gmail.com,\n"));
        let dup = Outcome::Answer {
            answer: answer.clone(),
            source: Source::Duplicate,
        };
        assert!(write(&f, "a,b,c", 3, "c", dup).ends_with(",0,1970-01-01T00:00:00Z,duplicate,,\n"));
        // A short row is padded so the columns line up; a long one is kept whole.
        assert_eq!(
            write(&f, "only\n", 1, "", Outcome::Empty),
            "only,,,missing,no email address in this row,,,,,0,,empty,,\n"
        );
        assert!(write(&f, "a,b,c,d\n", 4, "", Outcome::Empty).starts_with("a,b,c,d,missing,"));
        assert_eq!(
            write(
                &f,
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
            write(&f, "x,y,z\n", 3, "z", err),
            "x,y,z,error,rejected by the API (HTTP 400: bad),z,,,,,,api,,\n"
        );
        let all = write(
            &format(true),
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
        f.delimiter = b';';
        let header = f.header(&row("a;b;c\r\n", 3));
        assert_eq!(
            String::from_utf8(header).unwrap(),
            "a;b;c;lm_email_status;lm_email_message;lm_email_normalized;lm_mx_provider;lm_mx_record;lm_is_catch_all;lm_credits_consumed;lm_checked_at;lm_source;lm_email_suggestion;lm_email_others\r\n"
        );
    }
}
