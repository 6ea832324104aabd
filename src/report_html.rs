//! The report as a web page: one self-contained HTML file (inline CSS and SVG, no script, no
//! network: its Content-Security-Policy forbids any fetch) made from the JSON report.
//!
//! The page is always built from the JSON form ([`ReportView`]), both at the end of a run
//! (`--report-html`) and later (`mailsift report REPORT.json --html PATH`), so the two cannot
//! disagree, and a report written by an older mailsift (without the newer fields) still
//! renders, with those sections marked as missing.
//!
//! Every text that comes from the input, the server or the file system (file names, domains,
//! provider names, reasons) goes through [`Esc`].

use std::collections::BTreeMap;
use std::fmt::{self, Display};
use std::io::Write;
use std::path::Path;

use anyhow::Context;
use serde::Deserialize;

use crate::exit::{usage, Exit};
use crate::report::{Summary, REPORT_SCHEMA};
use crate::schema::STATUSES;
use crate::schema::{format_credits, rfc3339};
use crate::store::{JobState, Store};

const CSS: &str = include_str!("report_html.css");

/// Domains and providers shown (the JSON report lists more).
const DOMAINS_SHOWN: usize = 12;
const PROVIDERS_SHOWN: usize = 10;

/// The JSON report as read back: every field optional, so older reports render too.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct ReportView {
    pub schema: String,
    pub input: String,
    pub output: Option<String>,
    pub outcome: String,
    pub rows: RowsView,
    pub statuses: BTreeMap<String, u64>,
    pub sources: BTreeMap<String, u64>,
    pub requests: u64,
    pub retries: u64,
    pub maybe_charged_twice: u64,
    pub credits: CreditsView,
    pub rate_limit_per_minute: u64,
    pub daily_quota_left: Option<u64>,
    pub elapsed_seconds: f64,
    pub rows_per_second: f64,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    pub mailsift_version: Option<String>,
    pub domains: Option<BreakdownView>,
    pub providers: Option<BreakdownView>,
    pub syntax_rejects: Option<BTreeMap<String, u64>>,
    /// Made from a job record rather than a JSON report: totals of all runs, no timing.
    #[serde(skip)]
    pub from_job: bool,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RowsView {
    pub total: u64,
    pub this_run: u64,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct CreditsView {
    pub spent_this_run: f64,
    pub spent_job: f64,
    pub balance_start: Option<f64>,
    pub balance_end: Option<f64>,
    pub max_credits: Option<f64>,
    pub announced_max: Option<f64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct BreakdownView {
    pub exact: bool,
    pub top: Vec<NamedView>,
    pub other: GroupView,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct NamedView {
    pub name: String,
    pub rows: u64,
    pub statuses: BTreeMap<String, u64>,
    pub missed_at_most: u64,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct GroupView {
    pub rows: u64,
    pub statuses: BTreeMap<String, u64>,
}

impl ReportView {
    /// Reads a JSON report, refusing what is not one (or a version this mailsift cannot read).
    pub fn parse(bytes: &[u8], path: &Path) -> anyhow::Result<ReportView> {
        let view: ReportView = serde_json::from_slice(bytes).map_err(|e| {
            usage(format!(
                "{} is not a mailsift JSON report ({e}); give the file a run wrote with --report",
                path.display()
            ))
        })?;
        if view.schema != REPORT_SCHEMA {
            let what = if view.schema.starts_with("mailsift.report/") {
                format!(
                    "was written by another version of mailsift (schema {}; this one reads {REPORT_SCHEMA})",
                    view.schema
                )
            } else {
                format!("is not a mailsift report (no \"schema\": \"{REPORT_SCHEMA}\")")
            };
            return Err(usage(format!("{} {what}", path.display())));
        }
        Ok(view)
    }

    fn status(&self, name: &str) -> u64 {
        self.statuses.get(name).copied().unwrap_or(0)
    }

    fn source(&self, name: &str) -> u64 {
        self.sources.get(name).copied().unwrap_or(0)
    }
}

/// Writes the page for a run's summary (what `--report-html` does at the end of a run).
pub fn write_summary(summary: &Summary, path: &Path) -> anyhow::Result<()> {
    let view: ReportView = serde_json::from_value(serde_json::to_value(summary)?)?;
    write(&page(&view), path)
}

/// `mailsift report REPORT.json --html PATH`, or with a job's input or output file instead of
/// a report: the page made from that job's record in the state directory.
pub fn command(report: &Path, html: &Path, state_dir: &Path) -> anyhow::Result<Exit> {
    let bytes = std::fs::read(report).map_err(|e| {
        usage(format!(
            "cannot read the report {}: {e}; give the JSON file a run wrote with --report",
            report.display()
        ))
    })?;
    let json = bytes.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{');
    let view = if json {
        ReportView::parse(&bytes, report)?
    } else {
        from_job(report, state_dir)?
    };
    write(&page(&view), html)?;
    Ok(Exit::Ok)
}

/// The view of the latest job whose input or output is `file`, from its record.
fn from_job(file: &Path, state_dir: &Path) -> anyhow::Result<ReportView> {
    let not_found = || {
        usage(format!(
            "{} is not a JSON report, and no job in the state directory {} read or wrote it; give \
             the JSON file a run wrote with --report, or the --state-dir the job ran with",
            file.display(),
            state_dir.display()
        ))
    };
    let key = std::fs::canonicalize(file)?.display().to_string();
    if !state_dir.join("db").exists() {
        return Err(not_found());
    }
    let store = Store::open(state_dir)?;
    let record = store
        .jobs()
        .filter(|r| r.input == key || r.output == key)
        .max_by_key(|r| r.updated_at)
        .ok_or_else(not_found)?;
    let outcome = match record.state {
        // Not running now (the state directory was free): it was killed.
        JobState::Running => "interrupted".to_owned(),
        state => serde_json::to_value(state)?
            .as_str()
            .unwrap_or("failed")
            .to_owned(),
    };
    Ok(ReportView {
        schema: REPORT_SCHEMA.to_owned(),
        input: record.input,
        output: Some(record.output),
        outcome,
        rows: RowsView {
            total: record.watermark.rows,
            this_run: record.watermark.rows,
        },
        statuses: record.counts,
        requests: record.api_calls,
        credits: CreditsView {
            spent_this_run: record.credits_spent,
            spent_job: record.credits_spent,
            ..CreditsView::default()
        },
        started_at: Some(rfc3339(record.started_at)),
        finished_at: Some(rfc3339(record.updated_at)),
        mailsift_version: Some(env!("CARGO_PKG_VERSION").to_owned()),
        from_job: true,
        ..ReportView::default()
    })
}

/// Writes `html` to `path` (`-`: standard output) through a temporary name and a rename, so
/// nobody opens half a page.
pub fn write(html: &str, path: &Path) -> anyhow::Result<()> {
    if path.as_os_str() == "-" {
        let mut out = std::io::stdout().lock();
        return out
            .write_all(html.as_bytes())
            .and_then(|()| out.flush())
            .context("writing the HTML report to standard output");
    }
    crate::durable::write_atomic(path, html.as_bytes())
        .with_context(|| format!("writing the HTML report {}", path.display()))
}

/// Text made safe for HTML content and attribute values.
pub struct Esc<'a>(pub &'a str);

impl Display for Esc<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut rest = self.0;
        while let Some(i) = rest.find(['&', '<', '>', '"', '\'']) {
            f.write_str(&rest[..i])?;
            f.write_str(match rest.as_bytes()[i] {
                b'&' => "&amp;",
                b'<' => "&lt;",
                b'>' => "&gt;",
                b'"' => "&quot;",
                _ => "&#39;",
            })?;
            rest = &rest[i + 1..];
        }
        f.write_str(rest)
    }
}

/// Credits as the summary prints them, with thousands separated: "999,992.45".
fn credits_text(credits: f64) -> String {
    let plain = format_credits(credits);
    let (sign, plain) = plain.split_at(usize::from(plain.starts_with('-')));
    let (whole, frac) = plain
        .split_once('.')
        .map_or((plain, None), |(w, f)| (w, Some(f)));
    match (whole.parse::<u64>(), frac) {
        (Ok(n), Some(frac)) => format!("{sign}{}.{frac}", int(n)),
        (Ok(n), None) => format!("{sign}{}", int(n)),
        _ => format!("{sign}{plain}"),
    }
}

/// 1234567 → "1,234,567".
fn int(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn share(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 * 100.0 / whole as f64
    }
}

/// A percentage for people: "50.7%", "<0.1%", "–" for a share of nothing.
fn pct(part: u64, whole: u64) -> String {
    let p = share(part, whole);
    match () {
        _ if whole == 0 => "–".to_owned(),
        _ if part > 0 && p < 0.1 => "<0.1%".to_owned(),
        _ if part < whole && p > 99.9 => ">99.9%".to_owned(),
        _ => format!("{p:.1}%"),
    }
}

fn duration(secs: f64) -> String {
    let secs = secs.max(0.0);
    if secs < 60.0 {
        return format!("{secs:.1} s");
    }
    let whole = secs.round() as u64;
    let (h, m, s) = (whole / 3600, whole / 60 % 60, whole % 60);
    if h > 0 {
        format!("{h} h {m} min")
    } else {
        format!("{m} min {s} s")
    }
}

/// "2026-12-01T23:41:11Z" → "2026-12-01 23:41 UTC".
fn date(rfc3339: &str) -> String {
    match (rfc3339.get(..10), rfc3339.get(11..16)) {
        (Some(day), Some(time)) if rfc3339.ends_with('Z') => format!("{day} {time} UTC"),
        _ => rfc3339.to_owned(),
    }
}

/// What people call each status.
fn label(status: &str) -> &str {
    match status {
        "valid" => "Valid",
        "valid_catch_all" => "Valid (catch-all)",
        "catch_all" => "Catch-all",
        "unknown" => "Unknown",
        "invalid" => "Invalid",
        "missing" => "No address",
        "error" => "Error",
        _ => "Other",
    }
}

/// The three groups of `--split`, and errors (in none of them).
const GROUPS: [(&str, &str, &[&str]); 3] = [
    ("deliverable", "Deliverable", &["valid"]),
    (
        "risky",
        "Risky",
        &["valid_catch_all", "catch_all", "unknown"],
    ),
    ("undeliverable", "Undeliverable", &["invalid", "missing"]),
];

fn group_count(statuses: &BTreeMap<String, u64>, members: &[&str]) -> u64 {
    members
        .iter()
        .map(|s| statuses.get(*s).copied().unwrap_or(0))
        .sum()
}

/// The statuses present, in display order (unknown names from a newer server last, as other).
fn status_order(statuses: &BTreeMap<String, u64>) -> Vec<(&'static str, u64)> {
    let mut out: Vec<(&'static str, u64)> = STATUSES
        .iter()
        .map(|s| (*s, statuses.get(*s).copied().unwrap_or(0)))
        .collect();
    let strays: u64 = statuses
        .iter()
        .filter(|(k, _)| !STATUSES.contains(&k.as_str()))
        .map(|(_, n)| n)
        .sum();
    if let Some(other) = out.iter_mut().find(|(s, _)| *s == "other") {
        other.1 += strays;
    }
    out.retain(|(_, n)| *n > 0);
    out
}

fn outcome_badge(outcome: &str) -> (&'static str, String) {
    let (class, text) = match outcome {
        "done" => ("ok", "Complete"),
        "interrupted" => ("warn", "Interrupted · resumable"),
        "out_of_credits" => ("warn", "Out of credits · resumable"),
        "budget_reached" => ("warn", "Budget reached · resumable"),
        "too_many_failures" => ("warn", "API unavailable · resumable"),
        "output_closed" => ("warn", "Output closed early"),
        "key_rejected" => ("bad", "API key rejected"),
        "failed" => ("bad", "Failed"),
        other => return ("warn", Esc(other).to_string()),
    };
    (class, text.to_owned())
}

/// The whole page.
pub fn page(r: &ReportView) -> String {
    let file = Path::new(&r.input)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| r.input.clone());
    let version = r.mailsift_version.as_deref().unwrap_or("");
    let mut out = String::with_capacity(32 * 1024);
    out.push_str(&format!(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'; img-src data:\">\n\
         <meta name=\"generator\" content=\"mailsift {}\">\n\
         <link rel=\"icon\" href=\"data:,\">\n\
         <title>{} · mailsift report</title>\n<style>\n{CSS}</style>\n</head>\n<body>\n<main class=\"page\">\n",
        Esc(version),
        Esc(&file),
    ));
    header(&mut out, r, &file);
    cards(&mut out, r);
    out.push_str("<div class=\"grid two\">\n");
    verdicts(&mut out, r);
    credits(&mut out, r);
    out.push_str("</div>\n");
    breakdown(
        &mut out,
        r,
        "domains",
        "Top domains",
        "Rows whose address passed the syntax check, by domain.",
        "Domain",
        r.domains.as_ref(),
        DOMAINS_SHOWN,
        "other domains",
    );
    breakdown(
        &mut out,
        r,
        "providers",
        "Mail providers",
        "Answered rows by the mail provider the API found for the domain.",
        "Provider",
        r.providers.as_ref(),
        PROVIDERS_SHOWN,
        "other providers",
    );
    out.push_str("<div class=\"grid three\">\n");
    quality(&mut out, r);
    syntax(&mut out, r);
    run(&mut out, r);
    out.push_str("</div>\n");
    out.push_str(&format!(
        "<footer>Made by mailsift{}{} from {}. This page is self-contained: it loads nothing \
         from the network.</footer>\n</main>\n</body>\n</html>\n",
        if version.is_empty() { "" } else { " " },
        Esc(version),
        if r.from_job {
            "the job's record".to_owned()
        } else {
            format!("a <code>{REPORT_SCHEMA}</code> report")
        },
    ));
    out
}

fn header(out: &mut String, r: &ReportView, file: &str) {
    let (class, badge) = outcome_badge(&r.outcome);
    let mut meta = Vec::new();
    if let Some(at) = r.finished_at.as_deref() {
        meta.push(format!(
            "<time datetime=\"{}\">{}</time>",
            Esc(at),
            Esc(&date(at))
        ));
    }
    meta.push(format!("{} rows", int(r.rows.this_run)));
    if !r.from_job {
        meta.push(duration(r.elapsed_seconds));
    }
    out.push_str(&format!(
        "<header class=\"top\">\n<div class=\"brand\">{LOGO}<span>mailsift</span></div>\n\
         <div class=\"kind\">Email validation report</div>\n</header>\n\
         <section class=\"hero\">\n<div>\n<h1 title=\"{path}\">{name}</h1>\n\
         <p class=\"meta\">{meta}</p>\n{full}</div>\n\
         <span class=\"badge {class}\" id=\"outcome\">{badge}</span>\n</section>\n",
        path = Esc(&r.input),
        name = Esc(file),
        meta = meta.join(" <span class=\"dot\">·</span> "),
        full = if r.input == file {
            String::new()
        } else {
            format!("<p class=\"path\">{}</p>\n", Esc(&r.input))
        },
    ));
    if r.from_job {
        out.push_str(
            "<p class=\"note\">Made from the job's record in the state directory: the totals \
             of all its runs. Domains, providers, syntax problems, where the verdicts came from \
             and timing are in the JSON report (<code>--report</code>) only.</p>\n",
        );
    } else if r.rows.total != r.rows.this_run {
        out.push_str(&format!(
            "<p class=\"note\">This run wrote {} of the job's {} rows (earlier runs wrote the \
             rest); the figures below are for this run.</p>\n",
            int(r.rows.this_run),
            int(r.rows.total)
        ));
    }
}

const LOGO: &str = "<svg class=\"logo\" viewBox=\"0 0 24 24\" aria-hidden=\"true\">\
<rect x=\"2\" y=\"5\" width=\"20\" height=\"14\" rx=\"3\" fill=\"currentColor\"/>\
<path d=\"M5 8l7 5 7-5\" fill=\"none\" stroke=\"#fff\" stroke-width=\"1.8\" stroke-linecap=\"round\" stroke-linejoin=\"round\"/></svg>";

/// How much of a credit limit is used, in percent (a limit of 0 is full once anything is spent).
fn used_pct(used: f64, max: f64) -> f64 {
    if max > 0.0 {
        (used / max * 100.0).clamp(0.0, 100.0)
    } else if used > 0.0 {
        100.0
    } else {
        0.0
    }
}

/// The limit the credits are measured against: (spent, limit, what the limit is, its short
/// name). `--max-credits` counts the whole job; the announced maximum this run.
fn credit_limit(r: &ReportView) -> Option<(f64, f64, &'static str, &'static str)> {
    let c = &r.credits;
    match (c.max_credits, c.announced_max) {
        (Some(max), _) => Some((
            c.spent_job,
            max,
            "--max-credits, for the whole job",
            "budget",
        )),
        (None, Some(max)) => Some((
            c.spent_this_run,
            max,
            "the most this run could cost, as announced at its start",
            "at most",
        )),
        (None, None) => None,
    }
}

fn cards(out: &mut String, r: &ReportView) {
    let rows = r.rows.this_run;
    out.push_str("<section class=\"cards\" id=\"totals\">\n");
    out.push_str(&format!(
        "<div class=\"card\"><div class=\"label\">Rows checked</div>\
         <div class=\"value\" data-value=\"{rows}\">{}</div><div class=\"sub\">{}</div></div>\n",
        int(rows),
        if r.from_job {
            "all runs of the job".to_owned()
        } else {
            format!("{} rows/s", int(r.rows_per_second.max(0.0).round() as u64))
        }
    ));
    for (key, name, members) in GROUPS {
        let n = group_count(&r.statuses, members);
        out.push_str(&format!(
            "<div class=\"card {key}\" id=\"card-{key}\"><div class=\"label\">{name}</div>\
             <div class=\"value\" data-value=\"{n}\">{}</div><div class=\"sub\">{} of rows</div>\
             <div class=\"meter\"><span style=\"width:{:.2}%\"></span></div></div>\n",
            int(n),
            pct(n, rows),
            share(n, rows)
        ));
    }
    let (spent, sub, meter) = match credit_limit(r) {
        Some((used, max, _, short)) => (
            used,
            format!("of {} {short}", credits_text(max)),
            format!(
                "<div class=\"meter\"><span style=\"width:{:.2}%\"></span></div>",
                used_pct(used, max)
            ),
        ),
        None => (
            r.credits.spent_this_run,
            "no limit set".to_owned(),
            String::new(),
        ),
    };
    out.push_str(&format!(
        "<div class=\"card credits\" id=\"card-credits\"><div class=\"label\">Credits spent</div>\
         <div class=\"value\">{}</div><div class=\"sub\">{sub}</div>{meter}</div>\n",
        credits_text(spent)
    ));
    out.push_str("</section>\n");
}

/// The donut: one arc per status, on a circle of circumference 100 so lengths are percents.
fn donut(statuses: &[(&'static str, u64)], total: u64) -> String {
    const R: &str = "15.91549";
    let mut svg = format!(
        "<svg class=\"donut\" viewBox=\"0 0 42 42\" role=\"img\" aria-label=\"Verdicts of {} rows\">\
         <circle class=\"ring\" cx=\"21\" cy=\"21\" r=\"{R}\"/>",
        int(total)
    );
    let mut start = 0.0;
    let several = statuses.len() > 1;
    for (status, n) in statuses {
        let len = share(*n, total);
        // A hairline gap between arcs, unless the arc is too short to spare it.
        let drawn = if several && len > 1.0 { len - 0.4 } else { len };
        svg.push_str(&format!(
            "<circle class=\"seg s-{status}\" data-status=\"{status}\" data-rows=\"{n}\" cx=\"21\" cy=\"21\" r=\"{R}\" \
             stroke-dasharray=\"{drawn:.3} {:.3}\" stroke-dashoffset=\"{:.3}\"><title>{}: {} ({})</title></circle>",
            100.0 - drawn,
            25.0 - start,
            label(status),
            int(*n),
            pct(*n, total)
        ));
        start += len;
    }
    let deliverable = statuses
        .iter()
        .find(|(s, _)| *s == "valid")
        .map_or(0, |(_, n)| *n);
    svg.push_str(&format!(
        "<text class=\"big\" x=\"21\" y=\"21.2\">{}</text><text class=\"small\" x=\"21\" y=\"26.6\">deliverable</text></svg>",
        if total == 0 {
            "–".to_owned()
        } else {
            format!("{:.0}%", share(deliverable, total))
        }
    ));
    svg
}

fn verdicts(out: &mut String, r: &ReportView) {
    let total = r.rows.this_run.max(r.statuses.values().sum());
    let statuses = status_order(&r.statuses);
    out.push_str("<section class=\"panel\" id=\"verdicts\">\n<h2>Verdicts</h2>\n");
    if statuses.is_empty() {
        out.push_str("<p class=\"empty\">No rows were written by this run.</p>\n</section>\n");
        return;
    }
    out.push_str("<div class=\"donut-wrap\">\n");
    out.push_str(&donut(&statuses, total));
    out.push_str("\n<table class=\"legend\">\n<tbody>\n");
    for (status, n) in &statuses {
        out.push_str(&format!(
            "<tr data-status=\"{status}\"><td><i class=\"sw s-{status}\"></i>{}</td>\
             <td class=\"num\">{}</td><td class=\"num muted\">{}</td></tr>\n",
            label(status),
            int(*n),
            pct(*n, total)
        ));
    }
    out.push_str("</tbody>\n</table>\n</div>\n");
    // The three groups of --split as one bar.
    out.push_str("<div class=\"stack groups\" role=\"img\" aria-label=\"Deliverable, risky and undeliverable shares\">");
    for (key, name, members) in GROUPS {
        let n = group_count(&r.statuses, members);
        if n > 0 {
            out.push_str(&format!(
                "<span class=\"g-{key}\" style=\"width:{:.3}%\" title=\"{name}: {} ({})\"></span>",
                share(n, total),
                int(n),
                pct(n, total)
            ));
        }
    }
    out.push_str(
        "</div>\n<p class=\"hint\">Deliverable: valid. Risky: catch-all and unknown. \
                  Undeliverable: invalid and no address. The same groups as <code>--split</code>.",
    );
    let errors = r.status("error");
    if errors > 0 {
        out.push_str(&format!(
            " {} rows ended with an error and are in none of them: <code>--retry-errors</code> asks again.",
            int(errors)
        ));
    }
    out.push_str("</p>\n</section>\n");
}

fn credits(out: &mut String, r: &ReportView) {
    let c = &r.credits;
    let f = credits_text;
    out.push_str("<section class=\"panel\" id=\"credits\">\n<h2>Credits</h2>\n");
    match credit_limit(r) {
        Some((used, max, what, _)) => {
            let p = used_pct(used, max);
            out.push_str(&format!(
                "<div class=\"gauge\"><div class=\"gauge-head\"><span class=\"gauge-num\">{}</span>\
                 <span class=\"muted\">of {} · {p:.0}%</span></div>\
                 <div class=\"meter big\"><span style=\"width:{p:.2}%\"></span></div>\
                 <div class=\"hint\">Measured against {what}.</div></div>\n",
                f(used),
                f(max)
            ));
        }
        None => out.push_str(&format!(
            "<div class=\"gauge\"><div class=\"gauge-head\"><span class=\"gauge-num\">{}</span>\
             <span class=\"muted\">spent · no limit set</span></div></div>\n",
            f(c.spent_this_run)
        )),
    }
    let spent = if r.from_job {
        "Spent by the job, all runs"
    } else {
        "Spent by this run"
    };
    let mut rows = vec![(spent.to_owned(), f(c.spent_this_run))];
    if (c.spent_job - c.spent_this_run).abs() > 1e-6 {
        rows.push(("Spent by the job, all runs".to_owned(), f(c.spent_job)));
    }
    let valid = r.status("valid");
    if valid > 0 && c.spent_this_run > 0.0 {
        rows.push((
            "Per deliverable address".to_owned(),
            format!("{:.4}", c.spent_this_run / valid as f64)
                .trim_end_matches('0')
                .trim_end_matches('.')
                .to_owned(),
        ));
    }
    let free = r.source("cache") + r.source("duplicate") + r.source("syntax");
    if !r.sources.is_empty() {
        rows.push(("Rows answered without a request".to_owned(), int(free)));
    }
    if let Some(b) = c.balance_start {
        rows.push(("Balance before".to_owned(), f(b)));
    }
    if let Some(b) = c.balance_end {
        rows.push(("Balance after".to_owned(), f(b)));
    }
    if r.maybe_charged_twice > 0 {
        rows.push((
            "Requests possibly charged twice".to_owned(),
            int(r.maybe_charged_twice),
        ));
    }
    kv(out, &rows);
    out.push_str("</section>\n");
}

/// A two-column list of facts (values are numbers or already escaped).
fn kv(out: &mut String, rows: &[(String, String)]) {
    out.push_str("<dl class=\"kv\">\n");
    for (k, v) in rows {
        out.push_str(&format!("<dt>{k}</dt><dd>{v}</dd>\n"));
    }
    out.push_str("</dl>\n");
}

/// A bar of the verdict mix of some rows.
fn stack(statuses: &BTreeMap<String, u64>) -> String {
    let order = status_order(statuses);
    let total: u64 = order.iter().map(|(_, n)| n).sum();
    let mut bar = String::from("<div class=\"stack\">");
    for (status, n) in order {
        bar.push_str(&format!(
            "<span class=\"s-{status}\" style=\"width:{:.3}%\" title=\"{}: {} ({})\"></span>",
            share(n, total),
            label(status),
            int(n),
            pct(n, total)
        ));
    }
    bar.push_str("</div>");
    bar
}

/// What a section says when the report lacks its data.
fn absent(r: &ReportView) -> &'static str {
    if r.from_job {
        "<p class=\"empty\">Only in a JSON report (<code>--report</code>).</p>\n"
    } else {
        "<p class=\"empty\">Not in this report (written by an older mailsift).</p>\n"
    }
}

#[allow(clippy::too_many_arguments)]
fn breakdown(
    out: &mut String,
    r: &ReportView,
    id: &str,
    title: &str,
    what: &str,
    column: &str,
    b: Option<&BreakdownView>,
    shown: usize,
    others: &str,
) {
    out.push_str(&format!(
        "<section class=\"panel\" id=\"{id}\">\n<h2>{title}</h2>\n<p class=\"hint\">{what}</p>\n"
    ));
    let Some(b) = b else {
        out.push_str(absent(r));
        out.push_str("</section>\n");
        return;
    };
    let counted = b.top.iter().map(|n| n.rows).sum::<u64>() + b.other.rows;
    if counted == 0 {
        out.push_str("<p class=\"empty\">No rows to show.</p>\n</section>\n");
        return;
    }
    out.push_str(&format!(
        "<table class=\"bars\">\n<thead><tr><th>{column}</th><th class=\"num\">Rows</th>\
         <th class=\"num\">Share</th><th class=\"mix\">Verdict mix</th><th class=\"num\">Deliverable</th></tr></thead>\n<tbody>\n"
    ));
    let mut other = GroupView {
        rows: b.other.rows,
        statuses: b.other.statuses.clone(),
    };
    for (i, n) in b.top.iter().enumerate() {
        if i >= shown {
            other.rows += n.rows;
            for (s, c) in &n.statuses {
                *other.statuses.entry(s.clone()).or_insert(0) += c;
            }
            continue;
        }
        let name = if n.name.is_empty() {
            "<em class=\"muted\">none given</em>".to_owned()
        } else {
            Esc(&n.name).to_string()
        };
        let rows = if n.missed_at_most > 0 {
            format!(
                "<span title=\"up to {} more: counts are approximate\">≥{}</span>",
                int(n.missed_at_most),
                int(n.rows)
            )
        } else {
            int(n.rows)
        };
        out.push_str(&format!(
            "<tr><td class=\"name\" title=\"{}\">{name}</td><td class=\"num\">{rows}</td><td class=\"num muted\">{}</td>\
             <td class=\"mix\">{}</td><td class=\"num\">{}</td></tr>\n",
            Esc(&n.name),
            pct(n.rows, counted),
            stack(&n.statuses),
            pct(n.statuses.get("valid").copied().unwrap_or(0), n.rows)
        ));
    }
    if other.rows > 0 {
        out.push_str(&format!(
            "<tr class=\"other\"><td class=\"name\"><em>{others}</em></td><td class=\"num\">{}</td><td class=\"num muted\">{}</td>\
             <td class=\"mix\">{}</td><td class=\"num\">{}</td></tr>\n",
            int(other.rows),
            pct(other.rows, counted),
            stack(&other.statuses),
            pct(other.statuses.get("valid").copied().unwrap_or(0), other.rows)
        ));
    }
    out.push_str("</tbody>\n</table>\n");
    if !b.exact {
        out.push_str(
            "<p class=\"hint\">Too many distinct names to count each exactly in bounded memory: \
             the largest are found and counted from when they were first among the largest \
             (≥ marks a lower bound).</p>\n",
        );
    }
    out.push_str("</section>\n");
}

/// Where rows' verdicts came from (the `source` column), with what people call it.
const SOURCES: [(&str, &str); 5] = [
    ("api", "Asked the API"),
    ("duplicate", "Duplicates (asked once)"),
    ("cache", "Cache hits (free)"),
    ("syntax", "Syntax rejects (never sent)"),
    ("empty", "No address"),
];

fn quality(out: &mut String, r: &ReportView) {
    let answered = if r.sources.is_empty() {
        // A job record has no sources: rows with a verdict (syntax rejects included).
        r.rows.this_run.saturating_sub(r.status("missing"))
    } else {
        r.source("api") + r.source("cache") + r.source("duplicate")
    };
    let catch_all = r.status("catch_all") + r.status("valid_catch_all");
    out.push_str(&format!(
        "<section class=\"panel\" id=\"quality\">\n<h2>List quality</h2>\n\
         <div class=\"stat\"><span class=\"stat-num\" id=\"catch-all-share\">{}</span>\
         <span class=\"muted\">of answered rows are on catch-all domains</span></div>\
         <div class=\"meter amber\"><span style=\"width:{:.2}%\"></span></div>\n\
         <h3>Where the verdicts came from</h3>\n",
        pct(catch_all, answered),
        share(catch_all, answered)
    ));
    let total: u64 = SOURCES.iter().map(|(s, _)| r.source(s)).sum();
    if total == 0 {
        out.push_str(absent(r));
        out.push_str("</section>\n");
        return;
    }
    out.push_str("<div class=\"stack sources\">");
    for (source, name) in SOURCES {
        let n = r.source(source);
        if n > 0 {
            out.push_str(&format!(
                "<span class=\"src-{source}\" style=\"width:{:.3}%\" title=\"{name}: {}\"></span>",
                share(n, total),
                int(n)
            ));
        }
    }
    out.push_str("</div>\n<table class=\"legend\">\n<tbody>\n");
    for (source, name) in SOURCES {
        let n = r.source(source);
        out.push_str(&format!(
            "<tr data-source=\"{source}\"><td><i class=\"sw src-{source}\"></i>{name}</td>\
             <td class=\"num\">{}</td><td class=\"num muted\">{}</td></tr>\n",
            int(n),
            pct(n, total)
        ));
    }
    out.push_str("</tbody>\n</table>\n</section>\n");
}

fn syntax(out: &mut String, r: &ReportView) {
    out.push_str("<section class=\"panel\" id=\"syntax\">\n<h2>Syntax rejects</h2>\n");
    match &r.syntax_rejects {
        None => out.push_str(absent(r)),
        Some(reasons) if reasons.is_empty() => {
            out.push_str("<p class=\"empty\">Every address passed the syntax check.</p>\n")
        }
        Some(reasons) => {
            let mut reasons: Vec<_> = reasons.iter().collect();
            reasons.sort_by(|a, b| b.1.cmp(a.1).then_with(|| a.0.cmp(b.0)));
            let most = *reasons[0].1;
            out.push_str("<ul class=\"reasons\">\n");
            for (reason, n) in reasons {
                out.push_str(&format!(
                    "<li><div class=\"reason\"><span>{}</span><span class=\"num\">{}</span></div>\
                     <div class=\"meter red\"><span style=\"width:{:.2}%\"></span></div></li>\n",
                    Esc(reason),
                    int(*n),
                    share(*n, most)
                ));
            }
            out.push_str(
                "</ul>\n<p class=\"hint\">Marked invalid and never sent: they cost nothing.</p>\n",
            );
        }
    }
    out.push_str("</section>\n");
}

fn run(out: &mut String, r: &ReportView) {
    let mut rows = Vec::new();
    if let Some(at) = &r.started_at {
        rows.push(("Started".to_owned(), Esc(&date(at)).to_string()));
    }
    if !r.from_job {
        rows.push(("Took".to_owned(), duration(r.elapsed_seconds)));
        rows.push((
            "Speed".to_owned(),
            format!("{} rows/s", int(r.rows_per_second.max(0.0).round() as u64)),
        ));
    }
    rows.push((
        "Requests".to_owned(),
        format!(
            "{}{}",
            int(r.requests),
            if r.from_job {
                String::new()
            } else {
                format!(" <small>{} retries</small>", int(r.retries))
            }
        ),
    ));
    if r.rate_limit_per_minute > 0 {
        rows.push((
            "Rate limit".to_owned(),
            format!("{}/min", int(r.rate_limit_per_minute)),
        ));
    }
    if let Some(left) = r.daily_quota_left {
        rows.push(("Daily quota left".to_owned(), int(left)));
    }
    if let Some(output) = &r.output {
        let name = Path::new(output)
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| output.clone());
        rows.push((
            "Output".to_owned(),
            format!(
                "<span class=\"file\" title=\"{}\">{}</span>",
                Esc(output),
                Esc(&name)
            ),
        ));
    }
    out.push_str("<section class=\"panel\" id=\"run\">\n<h2>Run</h2>\n");
    kv(out, &rows);
    out.push_str("</section>\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(json: &str) -> ReportView {
        ReportView::parse(json.as_bytes(), Path::new("r.json")).unwrap()
    }

    const HOSTILE: &str = "<script>alert(1)</script>\"'&";

    #[test]
    fn text_from_the_input_and_the_server_is_escaped() {
        let json = serde_json::json!({
            "schema": REPORT_SCHEMA,
            "input": format!("/tmp/{HOSTILE}.csv"),
            "output": format!("/tmp/{HOSTILE}.validated.csv"),
            "outcome": HOSTILE,
            "finished_at": HOSTILE,
            "started_at": HOSTILE,
            "mailsift_version": HOSTILE,
            "rows": {"total": 3, "this_run": 3},
            "statuses": {"valid": 1, "invalid": 1, HOSTILE: 1},
            "domains": {"exact": true, "top": [{"name": HOSTILE, "rows": 2, "statuses": {"valid": 1, HOSTILE: 1}, "missed_at_most": 0}], "other": {"rows": 0, "statuses": {}}},
            "providers": {"exact": true, "top": [{"name": HOSTILE, "rows": 1, "statuses": {"valid": 1}, "missed_at_most": 0}], "other": {"rows": 0, "statuses": {}}},
            "syntax_rejects": {HOSTILE: 1},
        });
        let html = page(&view(&json.to_string()));
        assert!(!html.contains("<script"), "{html}");
        assert!(!html.contains("alert(1)</"), "{html}");
        assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;&quot;&#39;&amp;"));
        // The only tags are the page's own.
        let tags: std::collections::BTreeSet<&str> = html
            .split('<')
            .skip(1)
            .map(|t| {
                t.split([' ', '>', '\n'])
                    .next()
                    .unwrap()
                    .trim_start_matches('/')
            })
            .collect();
        let allowed = [
            "!DOCTYPE", "html", "head", "meta", "link", "title", "style", "body", "main", "header",
            "div", "span", "svg", "rect", "path", "section", "h1", "h2", "h3", "p", "time",
            "circle", "text", "table", "tbody", "thead", "tr", "th", "td", "i", "code", "dl", "dt",
            "dd", "em", "small", "ul", "li", "footer",
        ];
        for tag in tags {
            assert!(allowed.contains(&tag), "unexpected tag <{tag}>");
        }
    }

    #[test]
    fn an_empty_report_renders_without_numbers_to_divide() {
        let html = page(&view(&format!(r#"{{"schema":"{REPORT_SCHEMA}"}}"#)));
        assert!(html.contains("No rows were written by this run."));
        assert!(html.contains("Not in this report"));
        assert!(!html.contains("NaN") && !html.contains("inf"), "{html}");
        let html = page(&ReportView {
            schema: REPORT_SCHEMA.into(),
            domains: Some(BreakdownView::default()),
            providers: Some(BreakdownView::default()),
            syntax_rejects: Some(BTreeMap::new()),
            ..ReportView::default()
        });
        assert!(html.contains("No rows to show."));
        assert!(html.contains("Every address passed the syntax check."));
        assert!(!html.contains("NaN"));
    }

    #[test]
    fn numbers_are_the_reports() {
        let json = serde_json::json!({
            "schema": REPORT_SCHEMA,
            "input": "leads.csv",
            "outcome": "done",
            "rows": {"total": 1_234_567, "this_run": 1_234_567},
            "statuses": {"valid": 1_000_000, "catch_all": 200_000, "unknown": 30_000, "invalid": 4_000, "missing": 567},
            "sources": {"api": 1_000_000, "cache": 230_000, "syntax": 4_000, "empty": 567},
            "credits": {"spent_this_run": 50_000.25, "spent_job": 50_000.25, "max_credits": 100_000.0},
            "elapsed_seconds": 4000.0,
        });
        let html = page(&view(&json.to_string()));
        let card = |id: &str| {
            let at = html.find(&format!("id=\"card-{id}\"")).unwrap();
            html[at..]
                .split("data-value=\"")
                .nth(1)
                .unwrap()
                .split('"')
                .next()
                .unwrap()
                .to_owned()
        };
        assert_eq!(card("deliverable"), "1000000");
        assert_eq!(card("risky"), "230000");
        assert_eq!(card("undeliverable"), "4567");
        assert!(html.contains(">1,234,567<"));
        assert!(html.contains("50,000.25") && html.contains("of 100,000 budget"));
        assert!(html.contains("1 h 6 min"));
        // The donut's arcs add up to the whole circle.
        let arcs: f64 = html
            .split("data-rows=\"")
            .skip(1)
            .map(|s| s.split('"').next().unwrap().parse::<f64>().unwrap())
            .sum();
        assert_eq!(arcs, 1_234_567.0);
        assert!(html.contains("Complete"));
    }

    #[test]
    fn formats() {
        assert_eq!(int(0), "0");
        assert_eq!(int(999), "999");
        assert_eq!(int(1000), "1,000");
        assert_eq!(int(1_234_567), "1,234,567");
        assert_eq!(pct(1, 3), "33.3%");
        assert_eq!(pct(0, 0), "–");
        assert_eq!(pct(1, 10_000), "<0.1%");
        assert_eq!(pct(9_999, 10_000), ">99.9%");
        assert_eq!(duration(3.84), "3.8 s");
        assert_eq!(duration(125.0), "2 min 5 s");
        assert_eq!(date("2026-12-01T23:41:11Z"), "2026-12-01 23:41 UTC");
        assert_eq!(credits_text(999_992.45), "999,992.45");
        assert_eq!(credits_text(1_000_000.0), "1,000,000");
        assert_eq!(credits_text(0.05), "0.05");
        assert_eq!(credits_text(-1234.5), "-1,234.5");
        assert_eq!(used_pct(0.0, 0.0), 0.0);
        assert_eq!(used_pct(1.0, 0.0), 100.0);
        assert_eq!(used_pct(5.0, 4.0), 100.0);
        assert_eq!(used_pct(1.0, 4.0), 25.0);
    }

    #[test]
    fn what_is_not_a_report_is_refused() {
        let path = Path::new("x.json");
        assert!(ReportView::parse(b"not json", path).is_err());
        let e = ReportView::parse(b"{\"schema\":\"mailsift.report/2\"}", path).unwrap_err();
        assert!(format!("{e:#}").contains("another version"), "{e:#}");
        let e = ReportView::parse(b"{\"input\":\"x\"}", path).unwrap_err();
        assert!(format!("{e:#}").contains("not a mailsift report"), "{e:#}");
    }
}
