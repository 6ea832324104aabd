//! `mailsift status` and `mailsift cache`: looking at the state directory without running a
//! job. They read the store and print; they never send a request.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::time::Duration;

use serde::Serialize;

use crate::exit::Exit;
use crate::schema::{format_credits, rfc3339};
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
            // Sums of prices such as 0.05 pick up binary noise (67.6499999999983).
            credits_spent: (record.credits_spent * 1e6).round() / 1e6,
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
    if views.is_empty() && dir.join(crate::config::SANDBOX_DIR).join("db").exists() {
        note = Some(
            "jobs run with --sandbox are kept apart: see them with `mailsift --sandbox status`"
                .to_owned(),
        );
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
    // Looking must not create a state directory where there is none (a mistyped path).
    let store = existing(dir)?;
    let now = crate::clock::now();
    let mut stats = CacheStats::default();
    for answer in store.iter().flat_map(|s| s.answers()) {
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
    stats.size_on_disk_bytes = store.as_ref().map_or(0, Store::size_on_disk);
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
        "  size on disk: {}",
        human_size(stats.size_on_disk_bytes)
    )?;
    Ok(Exit::Ok)
}

/// `mailsift cache clear [--older-than AGE] [--dry-run] [--yes]`. Every cached answer was
/// paid for, so removing them is confirmed: by a person at a terminal, or by `--yes`.
pub fn cache_clear(
    dir: &Path,
    older_than: Option<Duration>,
    dry_run: bool,
    yes: bool,
) -> anyhow::Result<Exit> {
    let what = match older_than {
        Some(age) => format!(" older than {}", human_age(age)),
        None => String::new(),
    };
    // Not println!: it panics when standard output is closed (`| head`).
    let Some(store) = existing(dir)? else {
        writeln!(
            std::io::stdout(),
            "no cached answers{what} in {} (there is no state there)",
            dir.display()
        )?;
        return Ok(Exit::Ok);
    };
    let before =
        older_than.map(|age| crate::clock::now() - age.as_secs().min(i64::MAX as u64) as i64);
    let doomed = store
        .answers()
        .filter(|a| before.is_none_or(|t| a.checked_at < t))
        .count();
    if doomed == 0 || dry_run {
        let verb = if dry_run { "would remove" } else { "removed" };
        writeln!(
            std::io::stdout(),
            "{verb} {doomed} cached answers{what} from {}",
            dir.display()
        )?;
        return Ok(Exit::Ok);
    }
    let question = format!(
        "remove {doomed} cached answers{what} from {}? They were paid for; an unfinished job \
         asks for them again. [y/N] ",
        dir.display()
    );
    if !yes && !confirm(&question)? {
        writeln!(std::io::stdout(), "removed nothing")?;
        return Ok(Exit::Ok);
    }
    let removed = store.clear_cache(before)?;
    writeln!(
        std::io::stdout(),
        "removed {removed} cached answers{what} from {}",
        dir.display()
    )?;
    Ok(Exit::Ok)
}

/// Asks a person at a terminal; without one (a script, cron) there is nobody to ask, and
/// paid answers are not removed on nobody's word.
fn confirm(question: &str) -> anyhow::Result<bool> {
    use std::io::IsTerminal;
    if !std::io::stdin().is_terminal() {
        return Err(crate::exit::usage(
            "cache clear removes answers that were paid for, and there is no terminal to \
             confirm it: add --yes to remove them (or --dry-run to count them)",
        ));
    }
    crate::term::ask(question);
    let mut answer = String::new();
    std::io::stdin().read_line(&mut answer)?;
    Ok(matches!(answer.trim(), "y" | "Y" | "yes" | "Yes" | "YES"))
}

/// The store in `dir`, or `None` when `dir` holds none: read-only commands create nothing.
fn existing(dir: &Path) -> anyhow::Result<Option<Store>> {
    if dir.join("db").exists() {
        Store::open(dir).map(Some)
    } else {
        Ok(None)
    }
}

/// Bytes the way `du -h` and `ls -lh` print them: 512 B, 4.0 KiB, 1.3 MiB, 2.0 GiB.
fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut size = bytes as f64 / 1024.0;
    let mut unit = 0;
    while size >= 1024.0 && unit < UNITS.len() - 1 {
        size /= 1024.0;
        unit += 1;
    }
    format!("{size:.1} {}", UNITS[unit])
}

/// An age the way a person says it: `1 day`, `36 hours`, `2 weeks`, `90 minutes`.
fn human_age(age: Duration) -> String {
    const WEEK: u64 = 7 * 86_400;
    let (n, unit) = match age.as_secs() {
        s if s >= WEEK && s % WEEK == 0 && s / WEEK < 5 => (s / WEEK, "week"),
        s if s >= 86_400 && s % 86_400 == 0 => (s / 86_400, "day"),
        s if s >= 3_600 && s % 3_600 == 0 => (s / 3_600, "hour"),
        s if s >= 60 && s % 60 == 0 => (s / 60, "minute"),
        s => (s, "second"),
    };
    format!("{n} {unit}{}", if n == 1 { "" } else { "s" })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::{human_age, human_size};

    #[test]
    fn sizes_read_as_du_prints_them() {
        for (bytes, text) in [
            (0, "0 B"),
            (1023, "1023 B"),
            (1024, "1.0 KiB"),
            (1536, "1.5 KiB"),
            (9 * 1024 * 1024 + 300_000, "9.3 MiB"),
            (3 << 30, "3.0 GiB"),
        ] {
            assert_eq!(human_size(bytes), text, "{bytes}");
        }
    }

    #[test]
    fn ages_read_as_a_person_says_them() {
        for (secs, text) in [
            (86_400, "1 day"),
            (3 * 86_400, "3 days"),
            (14 * 86_400, "2 weeks"),
            (30 * 86_400, "30 days"),
            (36 * 3_600, "36 hours"),
            (90 * 60, "90 minutes"),
            (45, "45 seconds"),
        ] {
            assert_eq!(human_age(Duration::from_secs(secs)), text, "{secs}");
        }
    }
}
