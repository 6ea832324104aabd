//! Counters shared by the stages, and the summary made from them at the end (printed, and
//! written as JSON by `--report`).
//!
//! Stages only add to counters; the progress display and the summary only read them.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use serde::Serialize;

use crate::plan::{Outcome, Source};
use crate::schema::{format_credits, STATUSES};
use crate::tally::{Breakdown, Profile, DOMAINS_REPORTED, PROVIDERS_REPORTED};

pub(crate) fn status_index(outcome: &Outcome) -> usize {
    let name = match outcome {
        Outcome::Empty => "missing",
        Outcome::Syntax(_) => "invalid",
        Outcome::Error { .. } => "error",
        Outcome::Answer { answer, .. } => answer.status.as_ref().map_or("unknown", |s| s.as_str()),
    };
    STATUSES
        .iter()
        .position(|s| *s == name)
        .unwrap_or(STATUSES.len() - 1)
}

/// Live counters. Credits are kept in millionths so they can be atomics.
#[derive(Debug, Default)]
pub struct Counters {
    /// Input offset up to which rows are written: what the progress bar shows (the reader
    /// runs ahead by a few thousand rows, so its position would overstate progress).
    pub input_done: AtomicU64,
    rows: AtomicU64,
    statuses: [AtomicU64; 8],
    sources: [AtomicU64; 5],
    credits_micro: AtomicU64,
    /// HTTP requests sent to the validation endpoint, retries included.
    pub requests: AtomicU64,
    pub retries: AtomicU64,
    /// Requests whose outcome was unknown (timeout or reset after sending): may be charged.
    pub maybe_charged: AtomicU64,
    pub in_flight: AtomicU64,
    /// Latest `X-Credits-Remaining`, as f64 bits (u64::MAX: not seen yet).
    balance_bits: AtomicU64,
    /// Rate limit followed now (requests per minute).
    pub rate: AtomicU64,
    /// Latest `X-RateLimit-Remaining-Daily` (u64::MAX: not seen).
    pub daily_left: AtomicU64,
    /// Rows per domain, provider and syntax problem: only the writer adds, so never contended.
    tally: Mutex<Profile>,
    /// `--max-credits`, and the most this run could cost as announced at its start (f64 bits;
    /// u64::MAX: none).
    max_credits_bits: AtomicU64,
    announced_max_bits: AtomicU64,
}

impl Counters {
    pub fn new() -> Counters {
        Counters {
            balance_bits: AtomicU64::new(u64::MAX),
            daily_left: AtomicU64::new(u64::MAX),
            max_credits_bits: AtomicU64::new(u64::MAX),
            announced_max_bits: AtomicU64::new(u64::MAX),
            ..Counters::default()
        }
    }

    /// Counts a row the writer has written.
    pub fn row_written(&self, outcome: &Outcome) {
        self.rows.fetch_add(1, Ordering::Relaxed);
        self.statuses[status_index(outcome)].fetch_add(1, Ordering::Relaxed);
        let source = match outcome {
            Outcome::Empty => Some(Source::Empty),
            Outcome::Syntax(_) => Some(Source::Syntax),
            Outcome::Answer { source, .. } => Some(*source),
            Outcome::Error { .. } => None,
        };
        if let Some(source) = source {
            let i = Source::ALL.iter().position(|s| *s == source).unwrap_or(0);
            self.sources[i].fetch_add(1, Ordering::Relaxed);
        }
        if let Outcome::Answer {
            answer,
            source: Source::Api,
        } = outcome
        {
            let micro = (answer.credits.max(0.0) * 1e6).round() as u64;
            self.credits_micro.fetch_add(micro, Ordering::Relaxed);
        }
    }

    /// Credits paid for the addresses of a row other than the one it shows (a cell with
    /// several addresses): `row_written` counted only that one.
    pub fn add_credits(&self, credits: f64) {
        let micro = (credits.max(0.0) * 1e6).round() as u64;
        self.credits_micro.fetch_add(micro, Ordering::Relaxed);
    }

    /// Counts a written row by its domain, mail provider or syntax problem.
    pub fn tally(&self, normalized: &str, outcome: &Outcome) {
        self.tally.lock().unwrap_or_else(|e| e.into_inner()).add(
            normalized,
            outcome,
            status_index(outcome),
        );
    }

    pub fn set_max_credits(&self, max: Option<f64>) {
        store_f64(&self.max_credits_bits, max);
    }

    pub fn set_announced_max(&self, max: f64) {
        store_f64(&self.announced_max_bits, Some(max));
    }

    pub fn rows(&self) -> u64 {
        self.rows.load(Ordering::Relaxed)
    }

    pub fn status(&self, name: &str) -> u64 {
        STATUSES
            .iter()
            .position(|s| *s == name)
            .map_or(0, |i| self.statuses[i].load(Ordering::Relaxed))
    }

    /// Rows written per status.
    pub fn status_counts(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        STATUSES.iter().map(|s| (*s, self.status(s)))
    }

    pub fn source(&self, source: Source) -> u64 {
        let i = Source::ALL.iter().position(|s| *s == source).unwrap_or(0);
        self.sources[i].load(Ordering::Relaxed)
    }

    /// Credits spent by this run: the sum of `credits_consumed` over its `api` rows.
    pub fn credits_spent(&self) -> f64 {
        self.credits_micro.load(Ordering::Relaxed) as f64 / 1e6
    }

    pub fn api_calls(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    pub fn set_balance(&self, balance: f64) {
        self.balance_bits
            .store(balance.to_bits(), Ordering::Relaxed);
    }

    pub fn balance(&self) -> Option<f64> {
        let bits = self.balance_bits.load(Ordering::Relaxed);
        (bits != u64::MAX).then(|| f64::from_bits(bits))
    }
}

fn store_f64(bits: &AtomicU64, value: Option<f64>) {
    bits.store(value.map_or(u64::MAX, f64::to_bits), Ordering::Relaxed);
}

fn load_f64(bits: &AtomicU64) -> Option<f64> {
    let bits = bits.load(Ordering::Relaxed);
    (bits != u64::MAX).then(|| f64::from_bits(bits))
}

/// The version of the `--report` JSON; bumped when a field changes meaning or goes away
/// (fields may be added within a version).
pub const REPORT_SCHEMA: &str = "mailsift.report/1";

/// The end-of-run summary; `--report` writes it as JSON (schema documented in the README).
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub schema: &'static str,
    pub input: String,
    /// The output file (its `.partial` name while the job is unfinished); null for stdout.
    pub output: Option<String>,
    /// The `--split` files, when written.
    pub split: Option<BTreeMap<&'static str, String>>,
    /// done, interrupted, out_of_credits, budget_reached, key_rejected, too_many_failures,
    /// output_closed, failed.
    pub outcome: &'static str,
    pub rows: Rows,
    /// Rows written by this run per status; they add up to `rows.this_run`.
    pub statuses: BTreeMap<&'static str, u64>,
    /// Rows written by this run per source (rows with status error have none).
    pub sources: BTreeMap<&'static str, u64>,
    /// HTTP requests to the validation endpoint, retries included.
    pub requests: u64,
    pub retries: u64,
    /// Requests whose outcome was unknown (timeout or reset after sending): they may have
    /// been charged, and were asked again.
    pub maybe_charged_twice: u64,
    pub credits: Credits,
    /// The limit followed at the end (requests per minute).
    pub rate_limit_per_minute: u64,
    /// `X-RateLimit-Remaining-Daily` from the last answer, when the server sent it.
    pub daily_quota_left: Option<u64>,
    pub elapsed_seconds: f64,
    pub rows_per_second: f64,
    /// When the run started and ended (RFC 3339, UTC), and the mailsift that wrote this.
    pub started_at: String,
    pub finished_at: String,
    pub mailsift_version: &'static str,
    /// This run's rows whose address passed the syntax check, by domain (Space-Saving: see
    /// `tally.rs`).
    pub domains: Breakdown,
    /// This run's rows with an answer, by the answer's `mx_provider` ("" when none).
    pub providers: Breakdown,
    /// This run's syntax rejects by reason.
    pub syntax_rejects: BTreeMap<&'static str, u64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Rows {
    /// Rows in the output so far, earlier runs of the job included.
    pub total: u64,
    pub this_run: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Credits {
    /// What this run's requests were charged (`credits_consumed`; unknown outcomes counted at
    /// the worst case).
    pub spent_this_run: f64,
    /// What the job has paid so far, all runs together (unknown outcomes counted at the
    /// worst case).
    pub spent_job: f64,
    pub balance_start: Option<f64>,
    /// From `X-Credits-Remaining` on the last answer.
    pub balance_end: Option<f64>,
    /// `--max-credits` (for the whole job), when set.
    pub max_credits: Option<f64>,
    /// The most this run could cost, as announced at its start (when it was counted).
    pub announced_max: Option<f64>,
}

impl Summary {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        counters: &Counters,
        input: String,
        output: Option<String>,
        split: Option<[std::path::PathBuf; 3]>,
        outcome: &'static str,
        rows_before: u64,
        (spent_this_run, spent_job): (f64, f64),
        balance_start: Option<f64>,
        elapsed: Duration,
    ) -> Summary {
        let this_run = counters.rows();
        let secs = elapsed.as_secs_f64();
        let daily = counters.daily_left.load(Ordering::Relaxed);
        let tally = counters.tally.lock().unwrap_or_else(|e| e.into_inner());
        let now = crate::clock::now();
        Summary {
            schema: REPORT_SCHEMA,
            input,
            output,
            split: split.map(|paths| {
                crate::schema::SPLITS
                    .iter()
                    .zip(paths)
                    .map(|(kind, p)| (*kind, p.display().to_string()))
                    .collect()
            }),
            outcome,
            rows: Rows {
                total: rows_before + this_run,
                this_run,
            },
            statuses: counters
                .status_counts()
                .filter(|(s, n)| *n > 0 || *s != "other")
                .collect(),
            sources: Source::ALL
                .iter()
                .map(|s| (s.as_str(), counters.source(*s)))
                .collect(),
            requests: counters.api_calls(),
            retries: counters.retries.load(Ordering::Relaxed),
            maybe_charged_twice: counters.maybe_charged.load(Ordering::Relaxed),
            credits: Credits {
                spent_this_run: (spent_this_run * 1e6).round() / 1e6,
                spent_job: (spent_job * 1e6).round() / 1e6,
                balance_start,
                balance_end: counters.balance(),
                max_credits: load_f64(&counters.max_credits_bits),
                announced_max: load_f64(&counters.announced_max_bits),
            },
            rate_limit_per_minute: counters.rate.load(Ordering::Relaxed),
            daily_quota_left: (daily != u64::MAX).then_some(daily),
            elapsed_seconds: (secs * 1000.0).round() / 1000.0,
            rows_per_second: if secs > 0.0 {
                (this_run as f64 / secs).round()
            } else {
                0.0
            },
            started_at: crate::schema::rfc3339(now - elapsed.as_secs() as i64),
            finished_at: crate::schema::rfc3339(now),
            mailsift_version: env!("CARGO_PKG_VERSION"),
            domains: tally.domains.report(DOMAINS_REPORTED),
            providers: tally.providers.report(PROVIDERS_REPORTED),
            syntax_rejects: tally.syntax.clone(),
        }
    }

    /// The human summary printed at the end, cargo's way: a status word, then the details
    /// aligned under the message; verdict counts coloured when stderr keeps colour
    /// ([`crate::term::paint`]).
    pub fn text(&self) -> String {
        use crate::term::{paint, verdict, STATUS};
        const INDENT: &str = "             ";
        let f = format_credits;
        let word = if self.outcome == "done" {
            "Finished"
        } else {
            "Stopped"
        };
        let mut out = format!(
            "{} {} rows in {:.1}s ({} rows/s)\n",
            paint(STATUS, format_args!("{word:>12}")),
            self.rows.this_run,
            self.elapsed_seconds,
            self.rows_per_second
        );
        if self.rows.total != self.rows.this_run {
            out.push_str(&format!(
                "{INDENT}{} rows in the output so far (earlier runs included)\n",
                self.rows.total
            ));
        }
        let statuses = STATUSES
            .iter()
            .filter_map(|k| self.statuses.get(k).filter(|n| **n > 0).map(|n| (k, n)))
            .map(|(k, n)| paint(verdict(k), format_args!("{k} {n}")))
            .collect::<Vec<_>>()
            .join(", ");
        if !statuses.is_empty() {
            out.push_str(&format!("{INDENT}status:  {statuses}\n"));
        }
        let source = |s: &str| self.sources.get(s).copied().unwrap_or(0);
        out.push_str(&format!(
            "{INDENT}api calls {} (retries {}), cache hits {}, duplicates {}, syntax rejects {}\n",
            self.requests,
            self.retries,
            source("cache"),
            source("duplicate"),
            source("syntax")
        ));
        out.push_str(&format!(
            "{INDENT}credits spent {}",
            f(self.credits.spent_this_run)
        ));
        if (self.credits.spent_job - self.credits.spent_this_run).abs() > 1e-6 {
            out.push_str(&format!(
                " ({} for the whole job)",
                f(self.credits.spent_job)
            ));
        }
        if let Some(balance) = self.credits.balance_end.or(self.credits.balance_start) {
            out.push_str(&format!(", balance {}", f(balance)));
        }
        out.push('\n');
        if self.maybe_charged_twice > 0 {
            out.push_str(&format!(
                "{INDENT}{} requests had an unknown outcome (timeout or reset) and may have been \
                 charged twice\n",
                self.maybe_charged_twice
            ));
        }
        if let Some(output) = &self.output {
            out.push_str(&format!("{INDENT}output: {output}"));
        }
        if let Some(split) = &self.split {
            for path in split.values() {
                out.push_str(&format!("\n{INDENT}        {path}"));
            }
        }
        out
    }

    /// Prints the summary on stderr: [`Self::text`], or under `--log-format json` one line
    /// with the whole report in its `summary` field.
    pub fn print(&self) {
        if !crate::term::json() {
            return crate::term::line(&self.text());
        }
        let mut fields = serde_json::Map::new();
        fields.insert("status".into(), self.outcome.into());
        fields.insert(
            "summary".into(),
            serde_json::to_value(self).unwrap_or_default(),
        );
        crate::term::json_line(
            "info",
            &format!("{} rows, outcome {}", self.rows.this_run, self.outcome),
            fields,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::Status;
    use crate::store::Answer;
    use std::sync::Arc;

    #[test]
    fn counts_add_up() {
        let c = Counters::new();
        let answer = |s: Status, credits: f64| {
            Arc::new(Answer {
                status: Some(s),
                credits,
                ..Answer::default()
            })
        };
        c.row_written(&Outcome::Answer {
            answer: answer(Status::Valid, 0.05),
            source: Source::Api,
        });
        c.row_written(&Outcome::Answer {
            answer: answer(Status::Valid, 0.05),
            source: Source::Duplicate,
        });
        c.row_written(&Outcome::Answer {
            answer: answer(Status::Other("x".into()), 0.05),
            source: Source::Api,
        });
        c.row_written(&Outcome::Empty);
        c.row_written(&Outcome::Syntax("missing @"));
        c.row_written(&Outcome::Error {
            message: "down".into(),
        });
        assert_eq!(c.rows(), 6);
        assert_eq!(
            (c.status("valid"), c.status("other"), c.status("missing")),
            (2, 1, 1)
        );
        assert_eq!((c.status("invalid"), c.status("error")), (1, 1));
        assert_eq!(c.source(Source::Duplicate), 1);
        assert!((c.credits_spent() - 0.1).abs() < 1e-9);
        assert_eq!(c.balance(), None);
        c.set_balance(12.5);
        assert_eq!(c.balance(), Some(12.5));

        let s = Summary::new(
            &c,
            "in.csv".into(),
            Some("out.csv".into()),
            None,
            "done",
            10,
            (0.1, 0.2),
            Some(5.0),
            Duration::from_secs(2),
        );
        assert_eq!(
            (s.rows.total, s.rows.this_run, s.rows_per_second),
            (16, 6, 3.0)
        );
        let total: u64 = s.statuses.values().sum();
        assert_eq!(total, 6);
        let text = s.text();
        assert!(
            text.contains("valid 2") && text.contains("credits spent 0.1"),
            "{text}"
        );
    }
}
