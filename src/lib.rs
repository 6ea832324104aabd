//! mailsift: clean email lists in bulk through the LeadMagic email-validation API.
//!
//! The pipeline of `mailsift validate` (see [`validate`] for the topology):
//!
//! ```text
//! input ──► plan ──► validate ──► store ──► output
//! (csv rows) (normalise,  (rate-limited   (answer tables;  (ordered annotated CSV,
//!            syntax,      worker pool,    sled: job        checkpoint, atomic finish,
//!            dedupe,      retries)        checkpoints)     report, progress)
//!            cache hit)
//! ```
//!
//! One module, one dependency: `csv` only in [`input`] and [`output`], `reqwest` only in
//! [`client`], `sled` only in [`store`], `indicatif` only in [`progress`], `governor` only in
//! [`limiter`]. [`address`], [`cell`], [`plan`], [`retry`] and the reorder logic are pure.

pub mod address;
pub mod api;
pub mod cell;
pub mod check;
pub mod cli;
pub mod client;
pub mod clock;
pub mod config;
pub mod durable;
pub mod estimate;
pub mod exit;
pub mod inbox;
pub mod input;
pub mod inspect;
pub mod limiter;
pub mod mock;
pub mod output;
pub mod plan;
pub mod pool;
pub mod progress;
pub mod report;
pub mod report_html;
pub mod retry;
pub mod store;
pub mod tally;
pub mod term;
pub mod validate;
pub mod xlsx;

use std::future::Future;

pub use config::Config;
pub use exit::Exit;

/// Runs one command. `shutdown` resolves on the first Ctrl-C or SIGTERM (tests pass their
/// own); commands that can stop cleanly listen to it.
pub async fn run(
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<Exit> {
    match config {
        Config::Credits { api, json } => {
            let api = api::Api::connect(&api, 1).await?;
            check::credits(&api, json).await
        }
        Config::Check {
            api,
            addresses,
            json,
            retry,
            state_dir,
            freshness,
            rules,
        } => {
            let api = api::Api::connect(&api, 1).await?;
            let cache = check::open_cache(&state_dir);
            let cache = cache.as_ref();
            check::check(&api, &addresses, json, retry, cache, &freshness, rules).await
        }
        Config::Validate(config) => validate::run(*config, shutdown).await,
        Config::Estimate(config) => estimate::run(*config).await,
        Config::Inbox(config) => inbox::run(*config, shutdown).await,
        Config::Report {
            report,
            html,
            state_dir,
        } => report_html::command(&report, &html, &state_dir),
        Config::Status { state_dir, json } => inspect::status(&state_dir, json),
        Config::CacheStats { state_dir, json } => inspect::cache_stats(&state_dir, json),
        Config::CacheClear {
            state_dir,
            older_than,
            dry_run,
            yes,
        } => inspect::cache_clear(&state_dir, older_than, dry_run, yes),
    }
}
