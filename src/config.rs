//! From the command line as typed ([`crate::cli`]) to a validated, immutable [`Config`]: the
//! one place that reads flags and the environment. Nothing past this point sees clap types.

use std::path::PathBuf;
use std::time::Duration;

use crate::api::{self, ApiSettings};
use crate::cli::{Args, CacheAction, CacheArgs, Command, GlobalArgs, InputArgs, StateArgs};
use crate::exit::usage;
use crate::input::{ColumnSpec, InputOptions, Source};
use crate::output::CheckpointEvery;
use crate::plan::Freshness;
use crate::progress::Display;
use crate::retry::RetryPolicy;
use crate::validate::{default_output, Budget, ValidateConfig};

/// What to do, fully decided.
#[derive(Debug)]
pub enum Config {
    Credits {
        api: ApiSettings,
        json: bool,
    },
    Check {
        api: ApiSettings,
        addresses: Vec<String>,
        json: bool,
        retry: RetryPolicy,
    },
    Validate(Box<ValidateConfig>),
    Estimate(Box<EstimateConfig>),
    Status {
        state_dir: PathBuf,
        json: bool,
    },
    CacheStats {
        state_dir: PathBuf,
        json: bool,
    },
    CacheClear {
        state_dir: PathBuf,
        older_than: Option<Duration>,
    },
}

/// `mailsift estimate`.
#[derive(Debug, Clone)]
pub struct EstimateConfig {
    pub input: Source,
    pub input_options: InputOptions,
    pub freshness: Freshness,
    pub state_dir: PathBuf,
    pub cost_per_check: Option<f64>,
    pub json: bool,
    pub api: ApiSettings,
}

/// How verbose the logs are: 0 quiet, 1 default, 2+ more.
pub fn verbosity(global: &GlobalArgs) -> u8 {
    if global.quiet {
        0
    } else {
        1 + global.verbose
    }
}

impl Config {
    /// Validates the arguments; `env_key` is the value of LEADMAGIC_API_KEY.
    pub fn from_args(args: Args, env_key: Option<String>) -> anyhow::Result<Config> {
        let g = &args.global;
        let api = ApiSettings::new(
            &g.base_url,
            g.sandbox,
            g.api_key_file.as_deref(),
            env_key,
            g.timeout,
        )?;
        Ok(match args.command {
            Command::Credits { json } => Config::Credits { api, json },
            Command::Check { addresses, json } => Config::Check {
                api,
                addresses,
                json,
                retry: RetryPolicy::default(),
            },
            Command::Validate(v) => {
                let (input, input_options) = input(&v.input, v.column_prefix.clone())?;
                let stdin = input == Source::Stdin;
                let output = match v.output {
                    Some(p) if p.as_os_str() == "-" => None,
                    Some(p) => Some(p),
                    None if stdin => None,
                    None => Some(default_output(&v.input.input)),
                };
                if v.split && output.is_none() {
                    return Err(usage(
                        "--split writes files beside the output: give -o PATH",
                    ));
                }
                Config::Validate(Box::new(ValidateConfig {
                    input,
                    output,
                    input_options,
                    company: v.columns == "all",
                    split: v.split,
                    rate: v.rate,
                    concurrency: v.concurrency as usize,
                    retry: RetryPolicy {
                        max_retries: v.max_retries,
                        ..RetryPolicy::default()
                    },
                    freshness: freshness(&v.cache),
                    state_dir: state_dir(&v.state)?,
                    restart: v.restart,
                    force: v.force,
                    retry_errors: v.retry_errors,
                    budget: Budget {
                        max_credits: v.max_credits,
                        min_balance: v.min_balance,
                        cost_per_check: v.cost_per_check,
                    },
                    report: v.report,
                    grace: v.grace,
                    display: Display::choose(g.quiet),
                    api,
                    checkpoint: CheckpointEvery {
                        rows: v.checkpoint_rows,
                        interval: Duration::from_secs(2),
                    },
                }))
            }
            Command::Estimate(e) => {
                let (input, input_options) = input(&e.input, None)?;
                Config::Estimate(Box::new(EstimateConfig {
                    input,
                    input_options,
                    freshness: freshness(&e.cache),
                    state_dir: state_dir(&e.state)?,
                    cost_per_check: e.cost_per_check,
                    json: e.json,
                    api,
                }))
            }
            Command::Status { state, json } => Config::Status {
                state_dir: state_dir(&state)?,
                json,
            },
            Command::Cache {
                action: CacheAction::Stats { state, json },
            } => Config::CacheStats {
                state_dir: state_dir(&state)?,
                json,
            },
            Command::Cache {
                action: CacheAction::Clear { state, older_than },
            } => Config::CacheClear {
                state_dir: state_dir(&state)?,
                older_than,
            },
        })
    }
}

fn input(
    args: &InputArgs,
    column_prefix: Option<String>,
) -> anyhow::Result<(Source, InputOptions)> {
    let stdin = args.input.as_os_str() == "-";
    if !stdin && !args.input.exists() {
        return Err(usage(format!(
            "the input file {} does not exist",
            args.input.display()
        )));
    }
    let source = if stdin {
        Source::Stdin
    } else {
        Source::Path(args.input.clone())
    };
    let email_column = args
        .email_column
        .clone()
        .map(|c| match c.trim().parse::<usize>() {
            Ok(n) if n >= 1 => ColumnSpec::Index(n),
            _ => ColumnSpec::Name(c),
        });
    Ok((
        source,
        InputOptions {
            delimiter: args.delimiter,
            no_header: args.no_header,
            email_column,
            column_prefix: column_prefix.filter(|p| !p.is_empty()),
        },
    ))
}

fn freshness(args: &CacheArgs) -> Freshness {
    Freshness {
        max_age: args.max_age,
        max_age_unknown: args.max_age_unknown,
        max_age_catch_all: args.max_age_catch_all,
        refresh: args.refresh,
    }
}

fn state_dir(args: &StateArgs) -> anyhow::Result<PathBuf> {
    args.state_dir.clone().or_else(api::default_state_dir).ok_or_else(|| {
        usage("cannot find a per-user state directory; give one with --state-dir or MAILSIFT_STATE_DIR")
    })
}
