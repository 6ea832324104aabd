//! mailsift: clean email lists in bulk through the LeadMagic email-validation API.
//!
//! The pipeline of `mailsift validate` ([`validate`] prepares and concludes a job,
//! `pipeline` draws and runs its stages):
//!
//! ```text
//! input ──► plan ──► pool ──► output
//! (csv rows) (normalise,  (rate-limited    (ordered annotated CSV,
//!            syntax,      workers, retries; checkpoints, atomic finish)
//!            dedupe,      limiter, ledger,
//!            cache hit)   stop, store)
//! ```
//!
//! One module, one dependency: `csv` only in `input` and `output`, `reqwest` only in `client`,
//! `sled` only in [`store`], `indicatif` only in `progress`, `governor` only in `limiter`.
//! [`address`], `cell`, `plan`, `retry` and the reorder logic are pure. No module imports one
//! that imports it back (tests/layering.rs); [`schema`] is the bottom that input and output
//! share.
//!
//! # Embedding
//!
//! Another program runs any command the binary runs: parse a [`cli::Args`], turn it into a
//! [`Config`] (which checks every flag and reads the key file), and [`run`] it. The [`Exit`]
//! it returns, or [`Exit::for_error`] of its error, is the code the binary would exit with.
//! A [`ValidateConfig`] can be adjusted and run alone with [`validate::run`]; what a job
//! leaves behind is read through [`store::Store`] (job records, cached answers) and
//! [`schema`] (the output's columns).
//!
//! ```no_run
//! use clap::Parser as _;
//!
//! # async fn demo() -> anyhow::Result<()> {
//! let args = mailsift::cli::Args::parse_from(["mailsift", "validate", "leads.csv"]);
//! let config = mailsift::Config::from_args(args, std::env::var(mailsift::KEY_VAR).ok())?;
//! let stop = async {
//!     let _ = tokio::signal::ctrl_c().await;
//! };
//! let exit = mailsift::run(config, stop).await?;
//! println!("exit code {}", exit.code());
//! # Ok(())
//! # }
//! ```

#![warn(missing_docs)]

// The public API: enough to run any command, or one validation job, from another program,
// and to read what it leaves behind (the output's columns, the state directory).
pub mod address;
pub mod cli;
pub mod clock;
pub mod schema;
pub mod store;
pub mod validate;

// Everything else is the crate's own: `pub` inside these modules means "for the rest of the
// crate". The binaries, benches and fuzz targets reach what they need through `internals`;
// missing_docs does not exempt what a hidden module re-exports, so the modules it reaches
// allow it: they are documented for the crate's readers, not as an API.
pub(crate) mod api;
#[allow(missing_docs)]
pub(crate) mod cell;
pub(crate) mod check;
#[allow(missing_docs)]
pub(crate) mod client;
pub(crate) mod config;
pub(crate) mod durable;
pub(crate) mod estimate;
pub(crate) mod exit;
pub(crate) mod inbox;
#[allow(missing_docs)]
pub(crate) mod input;
pub(crate) mod inspect;
pub(crate) mod journal;
pub(crate) mod ledger;
pub(crate) mod limiter;
#[allow(missing_docs)]
pub(crate) mod output;
pub(crate) mod pipeline;
#[allow(missing_docs)]
pub(crate) mod plan;
pub(crate) mod pool;
pub(crate) mod progress;
#[allow(missing_docs)]
pub(crate) mod report;
pub(crate) mod report_html;
pub(crate) mod retry;
pub(crate) mod stop;
pub(crate) mod tally;
pub(crate) mod term;
pub(crate) mod xlsx;

use std::future::Future;

pub use api::KEY_VAR;
pub use config::Config;
pub use config::ValidateConfig;
pub use exit::Exit;

/// Internals for the benches and the fuzz targets, which drive single stages, and for the
/// tests (the fuzz checks they run, the crash hook's exit code): not part of the API,
/// undocumented, free to change.
///
/// A hidden module rather than a `bench` cargo feature: the test binary compiles the fuzz
/// checks too, so a feature would have to be on for every `cargo test`, and a feature that is
/// always on hides nothing. Re-exporting item by item keeps every other internal item under
/// the dead-code lint.
#[doc(hidden)]
pub mod internals {
    pub use crate::output::CRASH_EXIT;

    pub mod cell {
        pub use crate::cell::{checked, of_row, several, MAX_ASKED};
    }
    pub mod client {
        pub use crate::client::{ApiKey, Client, ClientConfig, Status};
    }
    pub mod input {
        pub use crate::input::{
            detect_charset, open, open_stream, Charset, ColumnSpec, Format, InputOptions, Location,
            Row, Transcode,
        };
    }
    pub mod output {
        pub use crate::output::{others, run, CheckpointEvery, RowFormat, Sink, WriteEnd, Writer};
    }
    pub mod plan {
        pub use crate::plan::{
            Freshness, Job, Looked, Lookup, Outcome, Pending, Planned, Planner, Resolved, Settled,
            Slot,
        };
    }
    pub mod report {
        pub use crate::report::Counters;
    }
    /// What the binary prints and how (colour, one message style, JSON lines).
    pub mod term {
        pub use crate::term::{
            clear_live, color_in_args, error, init, json, note, ColorChoice, Event, Lines,
        };
    }
}

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

// Here rather than in exit.rs: it names the typed errors of `client` and `input`, and exit.rs
// must stay below every module that raises a usage error (tests/layering.rs).
impl Exit {
    /// The exit code an error stands for: the first cause in its chain that has one.
    pub fn for_error(error: &anyhow::Error) -> Exit {
        for cause in error.chain() {
            if cause.is::<exit::UsageError>() {
                return Exit::Usage;
            }
            if let Some(input) = cause.downcast_ref::<input::InputError>() {
                if input.is_usage() {
                    return Exit::Usage;
                }
            }
            match cause.downcast_ref::<client::ApiError>() {
                Some(client::ApiError::KeyRejected { .. }) => return Exit::KeyRejected,
                Some(client::ApiError::OutOfCredits { .. }) => return Exit::OutOfCredits,
                Some(client::ApiError::Unreachable { .. }) => return Exit::TooManyFailures,
                _ => {}
            }
        }
        Exit::Failed
    }
}
