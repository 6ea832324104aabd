//! The scenario harness for the fault and spend tests: a scenario is a mock configured for it,
//! an input, one command line, and what must come of it (exit code, stderr, the mock's
//! counters, what it charged, the rows written, the report). [`run`] drives a table of them,
//! naming the scenario in every failure; checks of a scenario's own go in its `then`.

use std::collections::BTreeMap;
use std::ops::RangeInclusive;

use leadmagic_mock::{MockConfig, Stats};
use serde_json::Value;

use crate::util::{column, json, rows, Dir, Mock, STATUSES};

pub struct Scenario {
    pub name: &'static str,
    pub mock: MockConfig,
    /// The input, written to `in.csv`.
    pub input: String,
    /// The command line after `mailsift`, split at white space.
    pub args: &'static str,
    /// Environment the command runs with, beyond the harness's.
    pub env: &'static [(&'static str, &'static str)],
    pub expect: Expect,
    /// Checks of this scenario's own, once the harness's have passed.
    pub then: fn(&Ran),
}

/// The configuration of [`Mock::fast`]: a mock that answers as fast as the tests ask.
pub fn fast() -> MockConfig {
    MockConfig {
        rate_per_min: 600_000,
        ..MockConfig::default()
    }
}

/// [`fast`], holding `credits`.
pub fn with_credits(credits: f64) -> MockConfig {
    MockConfig { credits, ..fast() }
}

impl Default for Scenario {
    /// A scenario against a [`fast`] mock that must exit 0.
    fn default() -> Scenario {
        Scenario {
            name: "",
            mock: fast(),
            input: String::new(),
            args: "",
            env: &[],
            expect: Expect::default(),
            then: |_| {},
        }
    }
}

/// What a scenario's run must come to. Unset fields are not checked.
#[derive(Default)]
pub struct Expect {
    pub code: i32,
    /// Texts stderr must hold.
    pub stderr: &'static [&'static str],
    /// Texts stderr must not hold.
    pub not_stderr: &'static [&'static str],
    /// Validation arrivals at the mock.
    pub validations: Option<RangeInclusive<u64>>,
    /// Validations the mock answered 200.
    pub answered: Option<u64>,
    /// 429 answers the mock sent.
    pub rate_limited: Option<RangeInclusive<u64>>,
    /// Responses the mock sent with these HTTP statuses.
    pub by_status: &'static [(u16, u64)],
    /// Credits the mock charged.
    pub charged: Option<RangeInclusive<f64>>,
    /// The mock's balance at the end.
    pub balance: Option<RangeInclusive<f64>>,
    /// Rows of `out.csv`, the header included.
    pub rows: Option<usize>,
    /// No row of `out.csv` is an `error` row.
    pub all_answered: bool,
    /// Every row of `in.csv` is in `out.csv` with a status and `r.json` adds up (see
    /// [`assert_every_row_accounted`]).
    pub accounted: bool,
    /// Values in `r.json`, by JSON pointer.
    pub report: &'static [(&'static str, Lit)],
}

/// A literal a report value is compared with.
#[derive(Clone, Copy, Debug)]
pub enum Lit {
    Str(&'static str),
    Num(f64),
}

/// What a scenario's run left, for its own checks.
pub struct Ran {
    pub dir: Dir,
    pub mock: Mock,
    /// The mock's statistics when the run ended.
    pub stats: Stats,
}

impl Ran {
    /// The `--report` file `r.json`.
    pub fn report(&self) -> Value {
        json(&self.dir.read("r.json"))
    }
}

/// Runs each scenario against a mock of its own in a directory of its own, and checks it.
pub fn run(scenarios: impl IntoIterator<Item = Scenario>) {
    for scenario in scenarios {
        let ran = run_one(&scenario);
        (scenario.then)(&ran);
    }
}

fn run_one(s: &Scenario) -> Ran {
    let (name, e) = (s.name, &s.expect);
    let mock = Mock::start(s.mock.clone());
    let dir = Dir::new();
    dir.write("in.csv", &s.input);
    let mut cmd = dir.mailsift(&mock);
    cmd.args(s.args.split_whitespace())
        .envs(s.env.iter().copied());
    let out = cmd.output().unwrap();
    let stderr = crate::util::text(&out.stderr);
    assert_eq!(out.status.code(), Some(e.code), "{name}: {stderr}");
    for want in e.stderr {
        assert!(stderr.contains(want), "{name}: no {want:?} in {stderr}");
    }
    for unwanted in e.not_stderr {
        assert!(
            !stderr.contains(unwanted),
            "{name}: {unwanted:?} in {stderr}"
        );
    }

    let stats = mock.settled();
    let within = |what: &str, got: u64, want: &Option<RangeInclusive<u64>>| {
        if let Some(want) = want {
            assert!(want.contains(&got), "{name}: {got} {what}, not {want:?}");
        }
    };
    within("validations", stats.validations, &e.validations);
    within("answered", stats.answered, &e.answered.map(|n| n..=n));
    within("429s", stats.rate_limited, &e.rate_limited);
    for (status, n) in e.by_status {
        let got = stats.by_status.get(status).copied().unwrap_or(0);
        assert_eq!(got, *n, "{name}: {status} answers: {:?}", stats.by_status);
    }
    for (what, got, want) in [
        ("credits charged", stats.credits_charged, &e.charged),
        ("balance", stats.balance, &e.balance),
    ] {
        if let Some(want) = want {
            assert!(
                got >= want.start() - 1e-9 && got <= want.end() + 1e-9,
                "{name}: {what} {got}, not {want:?}"
            );
        }
    }

    if e.rows.is_some() || e.all_answered {
        let out = rows(&dir.read("out.csv"));
        if let Some(n) = e.rows {
            assert_eq!(out.len(), n, "{name}: rows of out.csv");
        }
        if e.all_answered {
            let status = column(&out, "email_status");
            let errors: Vec<_> = out[1..].iter().filter(|r| r[status] == "error").collect();
            assert!(errors.is_empty(), "{name}: error rows {errors:?}");
        }
    }
    if e.accounted {
        assert_every_row_accounted(&dir, &s.input, "out.csv", "r.json");
    }
    if !e.report.is_empty() {
        let report = json(&dir.read("r.json"));
        for (pointer, want) in e.report {
            let got = &report.pointer(pointer);
            let same = match (got, want) {
                (Some(Value::String(got)), Lit::Str(want)) => got == want,
                (Some(Value::Number(got)), Lit::Num(want)) => got.as_f64() == Some(*want),
                _ => false,
            };
            assert!(same, "{name}: report {pointer} is {got:?}, not {want:?}");
        }
    }
    Ran { dir, mock, stats }
}

/// The sum of one of the report's `{name: count}` lists.
pub fn counts(report: &Value, list: &str) -> BTreeMap<String, u64> {
    report[list]
        .as_object()
        .unwrap_or_else(|| panic!("no {list} in the report"))
        .iter()
        .map(|(name, n)| (name.clone(), n.as_u64().unwrap()))
        .collect()
}

/// Every data row has a status, the report's counts add up to the row count, and error rows
/// say why. Returns the output's rows.
pub fn assert_every_row_accounted(
    dir: &Dir,
    input: &str,
    output: &str,
    report_name: &str,
) -> Vec<Vec<String>> {
    let inp = rows(input.as_bytes());
    let out = rows(&dir.read(output));
    assert_eq!(out.len(), inp.len(), "every row comes out");
    let (status, message) = (column(&out, "email_status"), column(&out, "email_message"));
    for row in &out[1..] {
        assert!(STATUSES.contains(&row[status].as_str()), "{row:?}");
        if row[status] == "error" {
            assert!(!row[message].is_empty(), "an error says why: {row:?}");
        }
    }
    let report = json(&dir.read(report_name));
    let rows_total = report["rows"]["total"].as_u64().unwrap();
    assert_eq!(rows_total as usize, out.len() - 1);
    let statuses = counts(&report, "statuses");
    assert_eq!(statuses.values().sum::<u64>(), rows_total, "{statuses:?}");
    let sources = counts(&report, "sources");
    assert_eq!(
        sources.values().sum::<u64>() + statuses.get("error").copied().unwrap_or(0),
        rows_total,
        "every row has a source or is an error: {sources:?}"
    );
    let errors = out[1..].iter().filter(|r| r[status] == "error").count() as u64;
    assert_eq!(statuses.get("error").copied().unwrap_or(0), errors);
    out
}
