//! From the command line as typed ([`crate::cli`]) to a validated, immutable [`Config`]: the
//! one place that reads flags and the environment. Nothing past this point sees clap types.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::address;
use crate::api::{self, ApiSettings};
use crate::cli::{
    Args, CacheAction, CacheArgs, Command, FormatArgs, GlobalArgs, JobArgs, StateArgs,
};
use crate::exit::usage;
use crate::input::{self, ColumnSpec, InputOptions, Location};
use crate::limiter::Rate;
use crate::output::CheckpointEvery;
use crate::plan::Freshness;
use crate::progress::Display;
use crate::retry::RetryPolicy;

/// The starting rate when the user gave none: the lowest limit LeadMagic documents. The
/// server's advertised limit is followed from the first answer on.
pub const DEFAULT_RATE: Rate = Rate { per_minute: 300 };

/// Spending limits.
#[derive(Debug, Clone, Copy, Default)]
pub struct Budget {
    /// The most the job may spend, earlier runs included.
    pub max_credits: Option<f64>,
    /// Stop when the balance falls below this.
    pub min_balance: Option<f64>,
    /// The price of one charged check until an answer shows it.
    pub cost_per_check: Option<f64>,
}

/// Everything `validate` needs, validated.
#[derive(Debug, Clone)]
pub struct ValidateConfig {
    /// Where the CSV is read from.
    pub input: input::Location,
    /// `None`: standard output.
    pub output: Option<PathBuf>,
    /// What the user said about the input (delimiter, header, email column); the rest is
    /// detected.
    pub input_options: InputOptions,
    /// Add the free company columns (`--columns all`).
    pub company: bool,
    /// `--raw-fields`: API text is written without neutralising formulas.
    pub raw_fields: bool,
    /// Also write the deliverable, risky and undeliverable files beside the output (`--split`).
    pub split: bool,
    /// Requests per minute to start at; `None`: 300 a minute (the lowest limit LeadMagic
    /// documents), then the server's advertised limit.
    pub rate: Option<Rate>,
    /// Requests waiting for an answer at once.
    pub concurrency: usize,
    /// How failed requests are retried.
    pub retry: RetryPolicy,
    /// How old a cached answer may be and still be used.
    pub freshness: Freshness,
    /// The state directory: answer cache and job records.
    pub state_dir: PathBuf,
    /// Start over even though an interrupted run of this job exists, or its input changed.
    pub restart: bool,
    /// Run a finished job again (its answers come from the cache).
    pub force: bool,
    /// Run a finished job again, asking only for the rows whose status is `error`.
    pub retry_errors: bool,
    /// Spending limits.
    pub budget: Budget,
    /// Where to write the JSON report (`--report`).
    pub report: Option<PathBuf>,
    /// `--report-html`: the report as a web page.
    pub report_html: Option<PathBuf>,
    /// After Ctrl-C or SIGTERM, how long requests in flight may take to finish.
    pub grace: Duration,
    /// How progress is shown: a bar, log lines or nothing.
    pub display: Display,
    /// Print what to do after a resumable stop (off when the inbox runs the job: it logs that).
    pub announce: bool,
    /// How to reach the API (base URL, key, timeout, sandbox).
    pub api: ApiSettings,
    /// What the address check lets through (`--allow-unknown-tld`).
    pub rules: address::Rules,
    /// How often the writer takes a checkpoint.
    pub checkpoint: CheckpointEvery,
}

/// The default output path: `<stem>.validated.csv` beside the input.
pub fn default_output(input: &Path) -> PathBuf {
    let stem = input
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let stem = stem.strip_suffix(".validated").unwrap_or(&stem).to_owned();
    input.with_file_name(format!("{stem}.validated.csv"))
}

/// What to do, fully decided.
#[derive(Debug)]
pub enum Config {
    /// `mailsift credits`: print the balance.
    Credits {
        /// How to reach the API (base URL, key, timeout, sandbox).
        api: ApiSettings,
        /// Print JSON instead of text.
        json: bool,
    },
    /// `mailsift check`: validate a few addresses given on the command line.
    Check {
        /// How to reach the API (base URL, key, timeout, sandbox).
        api: ApiSettings,
        /// The addresses, as typed.
        addresses: Vec<String>,
        /// Print JSON instead of text.
        json: bool,
        /// How failed requests are retried.
        retry: RetryPolicy,
        /// The answer cache `validate` uses (`sandbox/` inside it with --sandbox).
        state_dir: PathBuf,
        /// How old a cached answer may be and still be used.
        freshness: Freshness,
        /// What the address check lets through.
        rules: address::Rules,
    },
    /// `mailsift validate`: one validation job.
    Validate(Box<ValidateConfig>),
    /// `mailsift estimate`: what a job would cost, spending nothing.
    Estimate(Box<EstimateConfig>),
    /// `mailsift inbox`: validate every file dropped into a directory.
    Inbox(Box<InboxConfig>),
    /// `mailsift status`: the jobs in the state directory.
    Status {
        /// The state directory.
        state_dir: PathBuf,
        /// Print JSON instead of text.
        json: bool,
    },
    /// `mailsift cache stats`.
    CacheStats {
        /// The state directory.
        state_dir: PathBuf,
        /// Print JSON instead of text.
        json: bool,
    },
    /// `mailsift cache clear`.
    CacheClear {
        /// The state directory.
        state_dir: PathBuf,
        /// Clear only answers older than this.
        older_than: Option<Duration>,
        /// Say what would be cleared, clear nothing.
        dry_run: bool,
        /// Do not ask for confirmation.
        yes: bool,
    },
    /// `mailsift report`: a JSON report rendered as HTML.
    Report {
        /// The JSON report to read.
        report: PathBuf,
        /// The HTML file to write.
        html: PathBuf,
        /// The state directory.
        state_dir: PathBuf,
    },
}

/// `mailsift estimate`.
#[derive(Debug, Clone)]
pub struct EstimateConfig {
    pub input: Location,
    pub input_options: InputOptions,
    pub freshness: Freshness,
    pub state_dir: PathBuf,
    pub cost_per_check: Option<f64>,
    pub json: bool,
    pub api: ApiSettings,
    pub rules: address::Rules,
}

/// `mailsift inbox`.
#[derive(Debug, Clone)]
pub struct InboxConfig {
    pub inbox: PathBuf,
    pub outbox: PathBuf,
    pub once: bool,
    pub interval: Duration,
    pub patterns: Vec<glob::Pattern>,
    pub settle: Duration,
    pub require_marker: bool,
    pub archive: PathBuf,
    pub failed: PathBuf,
    pub wait: bool,
    pub json_log: bool,
    /// Log only failures and stops.
    pub quiet: bool,
    pub on_complete: Option<String>,
    /// Also write OUTBOX/STEM.report.html.
    pub report_html: bool,
    /// Every file runs as this job, with its own input, output and report.
    pub template: ValidateConfig,
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
            Command::Check {
                addresses,
                json,
                cache,
                state,
                allow_unknown_tld,
            } => Config::Check {
                api,
                addresses,
                json,
                retry: RetryPolicy::default(),
                state_dir: state_dir(&state, g.sandbox)?,
                freshness: freshness(&cache),
                rules: address::Rules { allow_unknown_tld },
            },
            Command::Validate(v) => {
                let input = input(&v.input)?;
                let output = match v.output {
                    Some(p) if p.as_os_str() == "-" => None,
                    Some(p) => Some(p),
                    None if input == Location::Stdin => None,
                    None => Some(default_output(&v.input)),
                };
                if v.job.split && output.is_none() {
                    return Err(usage(
                        "--split writes files beside the output: give -o PATH",
                    ));
                }
                if output.is_none() && v.report_html.as_deref() == Some(Path::new("-")) {
                    return Err(usage(
                        "--report-html - and the output both go to standard output: give one a file",
                    ));
                }
                let mut config = job(input, output, &v.format, &v.job, g, api)?;
                config.report = v.report;
                config.report_html = v.report_html;
                config.restart = v.restart;
                config.force = v.force;
                config.retry_errors = v.retry_errors;
                Config::Validate(Box::new(config))
            }
            Command::Estimate(e) => Config::Estimate(Box::new(EstimateConfig {
                input: input(&e.input)?,
                input_options: input_options(&e.format, None),
                freshness: freshness(&e.cache),
                state_dir: state_dir(&e.state, g.sandbox)?,
                cost_per_check: e.cost_per_check,
                json: e.json,
                api,
                rules: rules(&e.format),
            })),
            Command::Inbox(i) => {
                if !i.inbox.is_dir() {
                    return Err(usage(format!(
                        "the inbox {} is not a directory; create it or name another",
                        i.inbox.display()
                    )));
                }
                let patterns = if i.pattern.is_empty() {
                    vec!["*.csv".to_owned(), "*.txt".to_owned()]
                } else {
                    i.pattern.clone()
                };
                let patterns = patterns
                    .iter()
                    .map(|p| {
                        glob::Pattern::new(p).map_err(|e| usage(format!("--pattern {p:?}: {e}")))
                    })
                    .collect::<anyhow::Result<Vec<_>>>()?;
                let mut template = job(Location::Stdin, None, &i.format, &i.job, g, api)?;
                template.display = Display::Quiet;
                template.announce = false;
                Config::Inbox(Box::new(InboxConfig {
                    archive: i
                        .archive
                        .clone()
                        .unwrap_or_else(|| i.inbox.join("processed")),
                    failed: i.failed.clone().unwrap_or_else(|| i.inbox.join("failed")),
                    inbox: i.inbox,
                    outbox: i.out,
                    once: i.once,
                    interval: i.interval,
                    patterns,
                    settle: i.settle,
                    require_marker: i.require_marker,
                    wait: i.wait,
                    json_log: g.log_format == "json",
                    quiet: g.quiet,
                    on_complete: i.on_complete,
                    report_html: i.report_html,
                    template,
                }))
            }
            Command::Report(r) => Config::Report {
                state_dir: state_dir(&r.state, g.sandbox)?,
                report: r.report,
                html: r.html,
            },
            Command::Status { state, json } => Config::Status {
                state_dir: state_dir(&state, g.sandbox)?,
                json,
            },
            Command::Cache {
                action: CacheAction::Stats { state, json },
            } => Config::CacheStats {
                state_dir: state_dir(&state, g.sandbox)?,
                json,
            },
            Command::Cache {
                action:
                    CacheAction::Clear {
                        state,
                        older_than,
                        dry_run,
                        yes,
                    },
            } => Config::CacheClear {
                state_dir: state_dir(&state, g.sandbox)?,
                older_than,
                dry_run,
                yes,
            },
            Command::Completions { .. } | Command::Man { .. } => {
                anyhow::bail!("completions and man are printed by cli::generated, not run")
            }
        })
    }
}

/// The settings of one job, from the flags `validate` and `inbox` share.
fn job(
    input: Location,
    output: Option<PathBuf>,
    format: &FormatArgs,
    j: &JobArgs,
    g: &GlobalArgs,
    api: ApiSettings,
) -> anyhow::Result<ValidateConfig> {
    Ok(ValidateConfig {
        input,
        output,
        input_options: input_options(format, j.column_prefix.clone()),
        company: j.columns == "all",
        raw_fields: j.raw_fields,
        split: j.split,
        rate: j.rate,
        concurrency: j.concurrency as usize,
        retry: RetryPolicy {
            max_retries: j.max_retries,
            ..RetryPolicy::default()
        },
        freshness: freshness(&j.cache),
        state_dir: state_dir(&j.state, g.sandbox)?,
        restart: false,
        force: false,
        retry_errors: false,
        budget: Budget {
            max_credits: j.max_credits,
            min_balance: j.min_balance,
            cost_per_check: j.cost_per_check,
        },
        report: None,
        report_html: None,
        grace: j.grace,
        display: Display::choose(g.quiet),
        announce: true,
        api,
        rules: rules(format),
        checkpoint: CheckpointEvery {
            rows: j.checkpoint_rows,
            interval: Duration::from_secs(2),
        },
    })
}

fn input(path: &Path) -> anyhow::Result<Location> {
    if path.as_os_str() == "-" {
        return Ok(Location::Stdin);
    }
    if !path.exists() {
        return Err(usage(format!(
            "the input file {} does not exist",
            path.display()
        )));
    }
    Ok(Location::Path(path.to_owned()))
}

fn input_options(args: &FormatArgs, column_prefix: Option<String>) -> InputOptions {
    let email_column = args
        .email_column
        .clone()
        .map(|c| match c.trim().parse::<usize>() {
            Ok(n) if n >= 1 => ColumnSpec::Index(n),
            _ => ColumnSpec::Name(c),
        });
    InputOptions {
        delimiter: args.delimiter,
        no_header: args.no_header,
        email_column,
        column_prefix: column_prefix.filter(|p| !p.is_empty()),
        encoding: args.encoding,
        sheet: args.sheet.clone(),
    }
}

fn rules(args: &FormatArgs) -> address::Rules {
    address::Rules {
        allow_unknown_tld: args.allow_unknown_tld,
    }
}

fn freshness(args: &CacheArgs) -> Freshness {
    Freshness {
        max_age: args.max_age,
        max_age_unknown: args.max_age_unknown,
        max_age_catch_all: args.max_age_catch_all,
        refresh: args.refresh,
    }
}

/// Where `--sandbox` keeps its state, inside the state directory.
pub const SANDBOX_DIR: &str = "sandbox";

fn state_dir(args: &StateArgs, sandbox: bool) -> anyhow::Result<PathBuf> {
    let dir = args.state_dir.clone().or_else(api::default_state_dir).ok_or_else(|| {
        usage("cannot find a per-user state directory; give one with --state-dir or MAILSIFT_STATE_DIR")
    })?;
    // The sandbox's made-up answers must never be served from the cache to a real run.
    Ok(if sandbox { dir.join(SANDBOX_DIR) } else { dir })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_output_sits_beside_the_input() {
        assert_eq!(
            default_output(Path::new("dir/list.csv")),
            Path::new("dir/list.validated.csv")
        );
        assert_eq!(
            default_output(Path::new("list.txt")),
            Path::new("list.validated.csv")
        );
        assert_eq!(
            default_output(Path::new("list.validated.csv")),
            Path::new("list.validated.csv")
        );
        assert_eq!(
            default_output(Path::new("noext")),
            Path::new("noext.validated.csv")
        );
    }
}
