//! From the command line as typed ([`crate::cli`]) to a validated, immutable [`Config`]: the
//! one place that reads flags and the environment. Nothing past this point sees clap types.

use std::path::PathBuf;
use std::time::Duration;

use crate::api::{self, ApiSettings};
use crate::cli::{Args, Command, GlobalArgs, ValidateArgs};
use crate::exit::usage;
use crate::input::{ColumnSpec, InputOptions, Source};
use crate::output::CheckpointEvery;
use crate::plan::Freshness;
use crate::progress::Display;
use crate::retry::RetryPolicy;
use crate::validate::{default_output, ValidateConfig};

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
            Command::Validate(v) => Config::Validate(Box::new(validate_config(*v, g, api)?)),
        })
    }
}

fn validate_config(
    v: ValidateArgs,
    g: &GlobalArgs,
    api: ApiSettings,
) -> anyhow::Result<ValidateConfig> {
    let stdin = v.input.as_os_str() == "-";
    let input = if stdin {
        Source::Stdin
    } else {
        Source::Path(v.input.clone())
    };
    if !stdin && !v.input.exists() {
        return Err(usage(format!(
            "the input file {} does not exist",
            v.input.display()
        )));
    }
    let output = match v.output {
        Some(p) if p.as_os_str() == "-" => None,
        Some(p) => Some(p),
        None if stdin => None,
        None => Some(default_output(&v.input)),
    };
    let email_column = v.email_column.map(|c| match c.trim().parse::<usize>() {
        Ok(n) if n >= 1 && !c.trim().is_empty() => ColumnSpec::Index(n),
        _ => ColumnSpec::Name(c),
    });
    let state_dir: PathBuf = match v.state_dir.or_else(api::default_state_dir) {
        Some(dir) => dir,
        None => {
            return Err(usage(
                "cannot find a per-user state directory; give one with --state-dir or MAILSIFT_STATE_DIR",
            ))
        }
    };
    if v.restart && v.force {
        return Err(usage(
            "--restart and --force mean the same for a finished job; give one",
        ));
    }
    Ok(ValidateConfig {
        input,
        output,
        input_options: InputOptions {
            delimiter: v.delimiter,
            no_header: v.no_header,
            email_column,
            column_prefix: v.column_prefix.filter(|p| !p.is_empty()),
        },
        company: v.columns == "all",
        rate: v.rate,
        concurrency: v.concurrency as usize,
        retry: RetryPolicy {
            max_retries: v.max_retries,
            ..RetryPolicy::default()
        },
        freshness: Freshness {
            max_age: v.max_age,
            max_age_unknown: Duration::from_secs(86_400),
            refresh: v.refresh,
        },
        state_dir,
        restart: v.restart,
        force: v.force,
        report: v.report,
        grace: v.grace,
        display: Display::choose(g.quiet),
        api,
        checkpoint: CheckpointEvery {
            rows: v.checkpoint_rows,
            interval: Duration::from_secs(2),
        },
    })
}
