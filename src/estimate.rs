//! What a job will cost, before any money is spent: `mailsift estimate`, and the line
//! `validate` prints at its start.
//!
//! It reads the input the way `validate` does (same layout detection, same normalisation and
//! syntax check, same cutting of cells that hold several addresses, same cache freshness) and
//! counts. Nothing is sent, nothing is written.

use foldhash::{HashSet, HashSetExt};

use serde::Serialize;

use crate::address::{self, Checked};
use crate::cell;
use crate::input::{InputError, Row};
use crate::plan::Freshness;
use crate::store::Store;

/// The documented price of a charged check when nothing better is known (the higher of the
/// two prices LeadMagic's docs have given).
pub const DOCUMENTED_MAX_COST: f64 = 0.25;

/// What the input holds and what it will cost.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Estimate {
    pub rows: u64,
    /// Rows with no address.
    pub empty: u64,
    /// Addresses that fail the local syntax check (never sent, never paid for).
    pub syntax_rejects: u64,
    /// Addresses an earlier row (or cell) already has (counted only when deduplicating).
    pub duplicates: u64,
    /// Addresses with a fresh answer in the store.
    pub fresh_in_store: u64,
    /// Requests still to send.
    pub requests: u64,
    /// Credits per charged check used for the maximum, and where that figure comes from.
    pub cost_per_check: f64,
    pub cost_source: &'static str,
    /// catch_all and unknown answers are free, so the minimum is always 0.
    pub min_cost: f64,
    pub max_cost: f64,
}

/// Where the price of one check comes from, most trustworthy first.
pub fn cost_per_check(store: &Store, flag: Option<f64>) -> (f64, &'static str) {
    if let Some(cost) = store.last_cost() {
        return (cost, "the last answer the store has seen");
    }
    match flag {
        Some(cost) => (cost, "--cost-per-check"),
        None => (DOCUMENTED_MAX_COST, "the higher documented price"),
    }
}

/// Counts the rows of `reader`. With `dedupe`, repeated addresses are counted once (memory: a
/// few bytes per distinct address); without, every sendable row counts as a request, which
/// still gives a true maximum. Answers paid for by `run` (the current run) count as requests:
/// that run is paying for them.
pub fn count(
    reader: impl Iterator<Item = Result<Row, InputError>>,
    store: &Store,
    freshness: &Freshness,
    now: i64,
    run: Option<u64>,
    dedupe: bool,
    rules: address::Rules,
) -> anyhow::Result<Estimate> {
    let mut seen: HashSet<u64> = HashSet::new();
    let mut e = Estimate::default();
    for row in reader {
        let row = row?;
        e.rows += 1;
        let Some(cell) = &row.email else {
            e.empty += 1;
            continue;
        };
        match cell::of_row(&row) {
            None => e.address(
                address::check_with(cell, rules),
                store,
                freshness,
                now,
                run,
                dedupe,
                &mut seen,
            )?,
            // As the planner does: the first addresses of the cell, each once.
            Some(pieces) => {
                for checked in cell::checked(pieces, rules) {
                    e.address(checked, store, freshness, now, run, dedupe, &mut seen)?;
                }
            }
        }
    }
    Ok(e)
}

impl Estimate {
    /// Counts one address (one cell, or one address of a cell that holds several).
    #[allow(clippy::too_many_arguments)]
    fn address(
        &mut self,
        checked: Checked,
        store: &Store,
        freshness: &Freshness,
        now: i64,
        run: Option<u64>,
        dedupe: bool,
        seen: &mut HashSet<u64>,
    ) -> anyhow::Result<()> {
        let address = match checked {
            Checked::Empty => {
                self.empty += 1;
                return Ok(());
            }
            Checked::Invalid { .. } => {
                self.syntax_rejects += 1;
                return Ok(());
            }
            Checked::Valid(address) => address,
        };
        let key = store.key(&address.key);
        if dedupe && !seen.insert(u64::from_le_bytes(key[..8].try_into().expect("8 bytes"))) {
            self.duplicates += 1;
            return Ok(());
        }
        // Only whether the answer can be used: its texts are not needed (issue 15: decoding
        // them was a fifth of the CPU of a run answered from the cache).
        match store.stamp(&key)? {
            // An answer of this very run (a resumed job's, or what `--retry-errors` keeps) is
            // used as it is: no request either.
            Some(s)
                if Some(s.run) == run
                    || freshness.is_fresh_at(s.status.as_ref(), s.checked_at, now) =>
            {
                self.fresh_in_store += 1
            }
            _ => self.requests += 1,
        }
        Ok(())
    }

    /// Fills in the cost range.
    pub fn priced(mut self, cost: (f64, &'static str)) -> Estimate {
        self.cost_per_check = cost.0;
        self.cost_source = cost.1;
        self.min_cost = 0.0;
        self.max_cost = round(self.requests as f64 * cost.0);
        self
    }
}

fn round(credits: f64) -> f64 {
    (credits * 1e6).round() / 1e6
}

/// `mailsift estimate`: counts, prices, and (with a key) compares with the balance.
pub async fn run(config: crate::config::EstimateConfig) -> anyhow::Result<crate::exit::Exit> {
    use crate::api::{Api, Endpoint};

    let store = std::sync::Arc::new(Store::open(&config.state_dir)?);
    let (source, opts, freshness, rules) = (
        config.input.clone(),
        config.input_options.clone(),
        config.freshness,
        config.rules,
    );
    let counting = store.clone();
    let estimate = tokio::task::spawn_blocking(move || -> anyhow::Result<Estimate> {
        let (_, reader) = crate::input::open(&source, &opts, None)?;
        count(
            reader,
            &counting,
            &freshness,
            crate::clock::now(),
            None,
            true,
            rules,
        )
    })
    .await??
    .priced(cost_per_check(&store, config.cost_per_check));

    // The balance is free; without a key, the estimate simply goes without it. When it cannot
    // be read (a rejected key, a dead URL), the estimate is still printed, then the error
    // decides the exit code.
    let has_key = !matches!(config.api.endpoint, Endpoint::Remote { key: None, .. });
    let mut failure = None;
    let balance = if has_key {
        let api = Api::connect(&config.api, 1).await?;
        match api.client.first_contact().await {
            Ok(reply) => Some(reply.body.credits),
            Err(e) => {
                failure = Some(e);
                None
            }
        }
    } else {
        None
    };
    let covered = balance.map(|b| b >= estimate.max_cost);
    print(&config, &estimate, balance, covered, failure.is_some())?;
    match failure {
        Some(e) => Err(anyhow::Error::new(e)
            .context("the estimate is printed above, but the balance could not be read")),
        None => Ok(crate::exit::Exit::Ok),
    }
}

fn print(
    config: &crate::config::EstimateConfig,
    estimate: &Estimate,
    balance: Option<f64>,
    covered: Option<bool>,
    failed: bool,
) -> anyhow::Result<()> {
    use crate::schema::format_credits as f;
    use std::io::Write;

    let mut out = std::io::stdout().lock();
    if config.json {
        let mut value = serde_json::to_value(estimate)?;
        value["balance"] = serde_json::json!(balance);
        value["balance_covers_max"] = serde_json::json!(covered);
        writeln!(out, "{}", serde_json::to_string_pretty(&value)?)?;
        return Ok(());
    }
    let e = estimate;
    writeln!(out, "{} rows", e.rows)?;
    writeln!(out, "  {} without an address", e.empty)?;
    writeln!(
        out,
        "  {} fail the syntax check (never sent)",
        e.syntax_rejects
    )?;
    writeln!(
        out,
        "  {} repeat an earlier row's address (sent once)",
        e.duplicates
    )?;
    writeln!(
        out,
        "  {} have a fresh answer in the cache",
        e.fresh_in_store
    )?;
    writeln!(out, "{} requests to send", e.requests)?;
    writeln!(
        out,
        "cost: between 0 and {} credits ({} per charged check, from {}; catch_all and unknown \
         answers are free)",
        f(e.max_cost),
        f(e.cost_per_check),
        e.cost_source
    )?;
    match (balance, covered) {
        (Some(b), Some(true)) => {
            writeln!(out, "balance: {} credits, enough for the maximum", f(b))?
        }
        (Some(b), _) => writeln!(
            out,
            "balance: {} credits, NOT enough for the maximum: the run may stop with exit code 4 \
             (top up, then run the same command to resume)",
            f(b)
        )?,
        (None, _) if failed => writeln!(out, "balance: unknown (it could not be read: see below)")?,
        (None, _) => writeln!(
            out,
            "balance: unknown (no API key; set LEADMAGIC_API_KEY to compare)"
        )?,
    }
    Ok(())
}
