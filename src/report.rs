//! Counters shared by the stages, and the summary made from them at the end (printed, and
//! written as JSON by `--report`).
//!
//! Stages only add to counters; the progress display and the summary only read them.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::Serialize;

use crate::output::format_credits;
use crate::plan::{Outcome, Source};

/// The statuses a row can end with, in display order (an unknown API status counts as
/// `other`).
pub const STATUSES: [&str; 8] = [
    "valid",
    "valid_catch_all",
    "catch_all",
    "unknown",
    "invalid",
    "missing",
    "error",
    "other",
];

fn status_index(outcome: &Outcome) -> usize {
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
    pub bytes_read: AtomicU64,
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
}

impl Counters {
    pub fn new() -> Counters {
        Counters {
            balance_bits: AtomicU64::new(u64::MAX),
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

    pub fn rows(&self) -> u64 {
        self.rows.load(Ordering::Relaxed)
    }

    pub fn status(&self, name: &str) -> u64 {
        STATUSES
            .iter()
            .position(|s| *s == name)
            .map_or(0, |i| self.statuses[i].load(Ordering::Relaxed))
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

/// The end-of-run summary; `--report` writes it as JSON.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub input: String,
    pub output: Option<String>,
    /// "done", "interrupted", "out_of_credits", "key_rejected", "too_many_failures".
    pub outcome: &'static str,
    /// Data rows written (header not counted), this run and earlier runs of the same job.
    pub rows: u64,
    pub rows_this_run: u64,
    pub statuses: Vec<(String, u64)>,
    pub sources: Vec<(String, u64)>,
    pub api_calls: u64,
    pub retries: u64,
    pub cache_hits: u64,
    pub duplicates: u64,
    pub syntax_rejects: u64,
    pub credits_spent: f64,
    pub maybe_charged_twice: u64,
    pub rate_limit_per_minute: u64,
    pub balance: Option<f64>,
    pub elapsed_seconds: f64,
    pub rows_per_second: f64,
}

impl Summary {
    pub fn new(
        counters: &Counters,
        input: String,
        output: Option<String>,
        outcome: &'static str,
        rows_before: u64,
        elapsed: Duration,
    ) -> Summary {
        let rows_this_run = counters.rows();
        let secs = elapsed.as_secs_f64();
        Summary {
            input,
            output,
            outcome,
            rows: rows_before + rows_this_run,
            rows_this_run,
            statuses: STATUSES
                .iter()
                .map(|s| (s.to_string(), counters.status(s)))
                .filter(|(s, n)| *n > 0 || s != "other")
                .collect(),
            sources: Source::ALL
                .iter()
                .map(|s| (s.as_str().to_owned(), counters.source(*s)))
                .collect(),
            api_calls: counters.api_calls(),
            retries: counters.retries.load(Ordering::Relaxed),
            cache_hits: counters.source(Source::Cache),
            duplicates: counters.source(Source::Duplicate),
            syntax_rejects: counters.source(Source::Syntax),
            credits_spent: counters.credits_spent(),
            maybe_charged_twice: counters.maybe_charged.load(Ordering::Relaxed),
            rate_limit_per_minute: counters.rate.load(Ordering::Relaxed),
            balance: counters.balance(),
            elapsed_seconds: (secs * 1000.0).round() / 1000.0,
            rows_per_second: if secs > 0.0 {
                (rows_this_run as f64 / secs).round()
            } else {
                0.0
            },
        }
    }

    /// The human summary printed at the end.
    pub fn text(&self) -> String {
        let mut out = String::new();
        let counts = |pairs: &[(String, u64)]| {
            pairs
                .iter()
                .filter(|(_, n)| *n > 0)
                .map(|(s, n)| format!("{s} {n}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        out.push_str(&format!(
            "{} rows in {:.1}s ({} rows/s)\n",
            self.rows_this_run, self.elapsed_seconds, self.rows_per_second
        ));
        if self.rows != self.rows_this_run {
            out.push_str(&format!(
                "  {} rows in the output so far (earlier runs included)\n",
                self.rows
            ));
        }
        let statuses = counts(&self.statuses);
        if !statuses.is_empty() {
            out.push_str(&format!("  status:  {statuses}\n"));
        }
        out.push_str(&format!(
            "  api calls {} (retries {}), cache hits {}, duplicates {}, syntax rejects {}\n",
            self.api_calls, self.retries, self.cache_hits, self.duplicates, self.syntax_rejects
        ));
        out.push_str(&format!(
            "  credits spent {}",
            format_credits(self.credits_spent)
        ));
        if let Some(balance) = self.balance {
            out.push_str(&format!(", balance {}", format_credits(balance)));
        }
        out.push('\n');
        if self.maybe_charged_twice > 0 {
            out.push_str(&format!(
                "  {} requests had an unknown outcome (timeout or reset) and may have been charged twice\n",
                self.maybe_charged_twice
            ));
        }
        if let Some(output) = &self.output {
            out.push_str(&format!("  output: {output}\n"));
        }
        out
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
            "done",
            10,
            Duration::from_secs(2),
        );
        assert_eq!((s.rows, s.rows_this_run, s.rows_per_second), (16, 6, 3.0));
        let total: u64 = s.statuses.iter().map(|(_, n)| n).sum();
        assert_eq!(total, 6);
        let text = s.text();
        assert!(
            text.contains("valid 2") && text.contains("credits spent 0.1"),
            "{text}"
        );
    }
}
