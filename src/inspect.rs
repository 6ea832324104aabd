//! `mailsift status` and `mailsift cache`: looking at the state directory without running a
//! job. They read the store and print; they never send a request.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::time::Duration;

use serde::Serialize;

use crate::exit::Exit;
use crate::output::{format_credits, rfc3339};
use crate::store::{JobRecord, Store};

/// One job, as `status` shows it.
#[derive(Debug, Serialize)]
pub struct JobView {
    pub input: String,
    pub output: String,
    pub state: String,
    pub rows_written: u64,
    /// How much of the input has been written, when its size is known.
    pub percent: Option<f64>,
    pub counts: BTreeMap<String, u64>,
    pub api_calls: u64,
    pub credits_spent: f64,
    pub started: String,
    pub updated: String,
}

impl JobView {
    fn new(record: &JobRecord, state: String) -> JobView {
        JobView {
            input: record.input.clone(),
            output: record.output.clone(),
            state,
            rows_written: record.watermark.rows,
            percent: (record.input_bytes > 0).then(|| {
                let done = if record.state == crate::store::JobState::Done {
                    record.input_bytes
                } else {
                    record.watermark.byte.min(record.input_bytes)
                };
                (done as f64 * 1000.0 / record.input_bytes as f64).round() / 10.0
            }),
            counts: record.counts.clone(),
            api_calls: record.api_calls,
            credits_spent: record.credits_spent,
            started: rfc3339(record.started_at),
            updated: rfc3339(record.updated_at),
        }
    }
}

/// `mailsift status`.
pub fn status(dir: &Path, json: bool) -> anyhow::Result<Exit> {
    let mut views = Vec::new();
    let mut note = None;
    if let Some(pid) = Store::holder(dir) {
        // A job is running: its last checkpoint is readable without the lock.
        if let Some(record) = Store::running_job(dir) {
            views.push(JobView::new(&record, format!("running (pid {pid})")));
        }
        note = Some(format!(
            "a mailsift process (pid {pid}) is using {}; other jobs are listed once it ends",
            dir.display()
        ));
    } else if dir.join("db").exists() {
        let store = Store::open(dir)?;
        let mut records: Vec<JobRecord> = store.jobs().collect();
        records.sort_by_key(|r| std::cmp::Reverse(r.updated_at));
        for record in &records {
            // Nobody holds the lock, so a job still marked running was killed mid-run.
            let state = match record.state {
                crate::store::JobState::Running => {
                    "interrupted (the process was killed)".to_owned()
                }
                other => other.as_str().to_owned(),
            };
            views.push(JobView::new(record, state));
        }
    }
    let mut out = std::io::stdout().lock();
    if json {
        writeln!(
            out,
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({ "jobs": views, "note": note }))?
        )?;
        return Ok(Exit::Ok);
    }
    if views.is_empty() {
        writeln!(out, "no jobs in {}", dir.display())?;
    }
    for v in &views {
        let percent = v
            .percent
            .map(|p| format!(" ({p}% of the input)"))
            .unwrap_or_default();
        let counts: Vec<String> = v.counts.iter().map(|(s, n)| format!("{s} {n}")).collect();
        writeln!(out, "{} -> {}", v.input, v.output)?;
        writeln!(
            out,
            "  {}: {} rows written{percent}",
            v.state, v.rows_written
        )?;
        if !counts.is_empty() {
            writeln!(out, "  {}", counts.join(", "))?;
        }
        writeln!(
            out,
            "  api calls {}, credits spent {}; started {}, last updated {}",
            v.api_calls,
            format_credits(v.credits_spent),
            v.started,
            v.updated
        )?;
    }
    if let Some(note) = note {
        writeln!(out, "({note})")?;
    }
    Ok(Exit::Ok)
}

/// `mailsift cache stats`.
#[derive(Debug, Default, Serialize)]
pub struct CacheStats {
    pub entries: u64,
    pub by_status: BTreeMap<String, u64>,
    /// Entries by age: under a day, a week, 30 days, 90 days, older.
    pub by_age: BTreeMap<&'static str, u64>,
    pub size_on_disk_bytes: u64,
}

const AGES: [(&str, u64); 4] = [
    ("< 1 day", 1),
    ("1-7 days", 7),
    ("7-30 days", 30),
    ("30-90 days", 90),
];

pub fn cache_stats(dir: &Path, json: bool) -> anyhow::Result<Exit> {
    let store = Store::open(dir)?;
    let now = crate::clock::now();
    let mut stats = CacheStats::default();
    for answer in store.answers() {
        stats.entries += 1;
        let status = answer
            .status
            .as_ref()
            .map_or("unknown", |s| s.as_str())
            .to_owned();
        *stats.by_status.entry(status).or_default() += 1;
        let days = (now - answer.checked_at).max(0) as u64 / 86_400;
        let bucket = AGES
            .iter()
            .find(|(_, limit)| days < *limit)
            .map_or("older", |(name, _)| name);
        *stats.by_age.entry(bucket).or_default() += 1;
    }
    stats.size_on_disk_bytes = store.size_on_disk();
    let mut out = std::io::stdout().lock();
    if json {
        writeln!(out, "{}", serde_json::to_string_pretty(&stats)?)?;
        return Ok(Exit::Ok);
    }
    writeln!(out, "{} cached answers in {}", stats.entries, dir.display())?;
    let list = |m: Vec<(String, u64)>| {
        m.into_iter()
            .map(|(k, n)| format!("{k} {n}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    if stats.entries > 0 {
        writeln!(
            out,
            "  by status: {}",
            list(stats.by_status.clone().into_iter().collect())
        )?;
        let ages = AGES.iter().map(|(n, _)| *n).chain(["older"]);
        let by_age = ages
            .filter_map(|a| stats.by_age.get(a).map(|n| (a.to_owned(), *n)))
            .collect();
        writeln!(out, "  by age:    {}", list(by_age))?;
    }
    writeln!(
        out,
        "  size on disk: {:.1} MiB",
        stats.size_on_disk_bytes as f64 / (1024.0 * 1024.0)
    )?;
    Ok(Exit::Ok)
}

/// `mailsift cache clear [--older-than AGE]`.
pub fn cache_clear(dir: &Path, older_than: Option<Duration>) -> anyhow::Result<Exit> {
    let store = Store::open(dir)?;
    let before =
        older_than.map(|age| crate::clock::now() - age.as_secs().min(i64::MAX as u64) as i64);
    let removed = store.clear_cache(before)?;
    let what = match older_than {
        Some(age) => format!(" older than {}", humantime::format_duration(age)),
        None => String::new(),
    };
    // Not println!: it panics when standard output is closed (`| head`).
    writeln!(
        std::io::stdout(),
        "removed {removed} cached answers{what} from {}",
        dir.display()
    )?;
    Ok(Exit::Ok)
}
