//! The command line as typed: clap-derive types that mirror the flags and do no I/O.
//!
//! They are turned once into a validated [`crate::Config`]; nothing below the commands'
//! entry points sees a clap type. Help text is the `///` on each flag.

// clap makes help text of doc comments, so an item here has one only where `--help` should
// show it: the undocumented ones are option groups and subcommand holders.
#![allow(missing_docs)]

use std::path::PathBuf;
use std::time::Duration;

use clap::Subcommand;

use crate::exit::{ESTIMATE_EXIT_CODES_HELP, EXIT_CODES_HELP};

const KEY_HELP: &str = "\
The API key:
  mailsift reads it from the LEADMAGIC_API_KEY environment variable, or from the file named by
  --api-key-file (preferred on shared machines: keep it readable by you only, chmod 600).
  There is deliberately no flag that takes the key itself: it would show in process lists.
  --sandbox needs no key: it runs against the bundled mock server and spends nothing.";

/// The whole command line. `Parser` and `CommandFactory` are implemented by hand below, so that
/// every way of getting the command (parsing, `--help`, completions, man pages) goes through
/// `finish`.
#[derive(Debug, clap::Args)]
#[command(
    version,
    about = "Clean email lists in bulk through the LeadMagic email-validation API.",
    long_about = "Clean email lists in bulk through the LeadMagic email-validation API: reads a CSV \
                  of any size, validates every address once (rate-limited, resumable, cached), and \
                  writes the same CSV back with the verdict appended to every row.",
    after_help = format!("{KEY_HELP}\n\n{EXIT_CODES_HELP}"),
)]
pub struct Args {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

impl clap::CommandFactory for Args {
    fn command() -> clap::Command {
        finish(<Args as clap::Args>::augment_args(clap::Command::new(
            "mailsift",
        )))
    }

    fn command_for_update() -> clap::Command {
        finish(<Args as clap::Args>::augment_args_for_update(
            clap::Command::new("mailsift"),
        ))
    }
}

impl clap::Parser for Args {}

/// The global flags that only matter to commands that talk to the API.
const API_GLOBALS: [&str; 3] = ["api_key_file", "base_url", "timeout"];

/// Builds the command (which copies the global flags into every subcommand), then tidies what
/// each subcommand's help shows: globals that do nothing for a command are hidden from its help
/// (still accepted, so scripts that pass them keep working), and usage lines are fixed to the
/// generated ones, because clap otherwise lists in them, as if typed, the flags an environment
/// variable filled (`Usage: mailsift validate --state-dir <DIR> <INPUT>`).
fn finish(command: clap::Command) -> clap::Command {
    let mut command = command.styles(crate::term::HELP);
    command.build();
    // Only in-place changes from here on: a built command indexes its flags by position.
    let globals: Vec<String> = command
        .get_arguments()
        .filter(|a| a.is_global_set())
        .map(|a| a.get_id().to_string())
        .collect();
    command.mut_subcommands(|sub| {
        let sub = match sub.get_name() {
            // They read the state directory (--sandbox picks its sandbox/ part), never the API.
            "status" | "cache" | "report" => hide(sub, &API_GLOBALS),
            // They print text and exit: no global flag does anything for them.
            "completions" | "man" => hide(sub, &globals),
            _ => sub,
        };
        fix_usage(sub)
    })
}

/// Hides the flags `ids` from `command`'s help and its subcommands'.
fn hide<S: AsRef<str>>(command: clap::Command, ids: &[S]) -> clap::Command {
    command
        .mut_args(|arg| {
            let hidden = arg.is_hide_set() || ids.iter().any(|id| arg.get_id() == id.as_ref());
            arg.hide(hidden)
        })
        .mut_subcommands(|sub| hide(sub, ids))
}

/// Pins the usage line of `command` and its subcommands to the one their help shows, with no
/// flag filled in.
fn fix_usage(mut command: clap::Command) -> clap::Command {
    // Styled, so the pinned line keeps clap's colours; without its `Usage: ` heading.
    let usage = command.render_usage().ansi().to_string();
    let usage = match usage.split_once("Usage:") {
        Some((_, rest)) => rest.trim_start_matches("\x1b[0m").trim_start_matches(' '),
        None => &usage,
    };
    command
        .override_usage(clap::builder::StyledStr::from(usage.to_owned()))
        .mut_subcommands(fix_usage)
}

#[derive(Debug, clap::Args)]
#[command(next_help_heading = "Global options")]
pub struct GlobalArgs {
    /// Read the API key from this file instead of the LEADMAGIC_API_KEY variable
    #[arg(long, global = true, value_name = "PATH")]
    pub api_key_file: Option<PathBuf>,

    /// The API's base URL
    #[arg(
        long,
        global = true,
        env = "LEADMAGIC_BASE_URL",
        hide_env_values = true,
        value_name = "URL",
        default_value = crate::client::DEFAULT_BASE_URL
    )]
    pub base_url: String,

    /// Run against the bundled mock server, started in-process: no key needed, nothing spent
    #[arg(long, global = true)]
    pub sandbox: bool,

    /// Give up on one request after this long (e.g. 30s, 2m)
    #[arg(long, global = true, value_name = "DURATION", default_value = "30s", value_parser = parse_duration)]
    pub timeout: Duration,

    /// Print only errors
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub quiet: bool,

    /// Log more (-v: what happens, -vv: every request)
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,

    /// Colour: auto (on a terminal, unless NO_COLOR is set), always, or never
    #[arg(long, global = true, value_name = "WHEN", default_value = "auto")]
    pub color: clap::ColorChoice,

    /// Messages on stderr as text, or as json: one object per line (inbox's file events,
    /// warnings, errors, -v and -vv lines, progress), and nothing else on stderr
    #[arg(long, global = true, value_name = "FORMAT", default_value = "text", value_parser = ["text", "json"])]
    pub log_format: String,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Show the credit balance (free)
    Credits {
        /// Print the API's answer as JSON
        #[arg(long)]
        json: bool,
    },
    /// Validate a few addresses and print each verdict: the way to try a key
    Check {
        /// The addresses to validate (each costs credits, unless it fails the local syntax check)
        #[arg(required = true, value_name = "ADDRESS")]
        addresses: Vec<String>,
        /// Print the verdicts as JSON
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        cache: CacheArgs,
        #[command(flatten)]
        state: StateArgs,
        /// Send addresses whose top-level domain is not in mailsift's list (one newer than it)
        #[arg(long)]
        allow_unknown_tld: bool,
    },
    /// Validate every address of a CSV file and write it back with the verdicts appended
    Validate(Box<ValidateArgs>),
    /// Say what validating a file would cost, spending nothing
    Estimate(Box<EstimateArgs>),
    /// Validate files dropped into a folder, one at a time (for cron and file drops)
    Inbox(Box<InboxArgs>),
    /// Make the HTML report of a finished run from its JSON report (or of a job from its record)
    Report(ReportArgs),
    /// List the jobs in the state directory and how far each got
    Status {
        #[command(flatten)]
        state: StateArgs,
        /// Print as JSON
        #[arg(long)]
        json: bool,
    },
    /// Look at or clear the answer cache
    Cache {
        #[command(subcommand)]
        action: CacheAction,
    },
    /// Print a shell completion script (e.g. `mailsift completions bash > ~/.local/share/bash-completion/completions/mailsift`)
    Completions {
        /// The shell to complete for
        #[arg(value_name = "SHELL")]
        shell: clap_complete::Shell,
    },
    /// Print a manual page in roff (e.g. `mailsift man | man -l -`, `mailsift man validate`)
    Man {
        /// The command whose page to print [default: the main page, listing every command]
        #[arg(value_name = "COMMAND")]
        command: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum CacheAction {
    /// Entries, by status and by age, and the size on disk
    Stats {
        #[command(flatten)]
        state: StateArgs,
        /// Print as JSON
        #[arg(long)]
        json: bool,
    },
    /// Remove cached answers (all, or those older than --older-than)
    Clear {
        #[command(flatten)]
        state: StateArgs,
        /// Remove only answers older than this (e.g. 30d)
        #[arg(long, value_name = "AGE", value_parser = parse_duration)]
        older_than: Option<Duration>,
        /// Say how many answers would be removed, and remove none
        #[arg(long)]
        dry_run: bool,
        /// Remove without asking (needed when no terminal can be asked: scripts and cron)
        #[arg(long, short = 'y', conflicts_with = "dry_run")]
        yes: bool,
    },
}

impl GlobalArgs {
    /// How verbose the logs are: 0 quiet (`-q`), 1 by default, 2 and more with each `-v`.
    pub fn verbosity(&self) -> u8 {
        if self.quiet {
            0
        } else {
            1 + self.verbose
        }
    }
}

/// What `completions` and `man` print, generated from these very types so they never drift
/// from the flags; `None` for the commands that do real work.
pub fn generated(command: &Command) -> Option<anyhow::Result<Vec<u8>>> {
    use clap::CommandFactory;
    let mut out = Vec::new();
    match command {
        Command::Completions { shell } => {
            clap_complete::generate(*shell, &mut Args::command(), "mailsift", &mut out);
            Some(Ok(out))
        }
        Command::Man { command } => Some(man_page(command.as_deref()).and_then(|man| {
            man.render(&mut out)?;
            Ok(out)
        })),
        _ => None,
    }
}

/// The page of `mailsift` itself, or of one of its commands (`mailsift-validate(1)`).
fn man_page(command: Option<&str>) -> anyhow::Result<clap_mangen::Man> {
    use clap::CommandFactory;
    let mut main = Args::command();
    let Some(name) = command else {
        return Ok(clap_mangen::Man::new(main));
    };
    // Building propagates the global flags to every command, so its page lists them too.
    main.build();
    let Some(sub) = main.find_subcommand(name) else {
        let names: Vec<&str> = main.get_subcommands().map(|c| c.get_name()).collect();
        return Err(crate::exit::usage(format!(
            "there is no command '{name}'; pages exist for: {}",
            names.join(", ")
        )));
    };
    let page = sub
        .clone()
        .name(format!("mailsift-{name}"))
        .bin_name(format!("mailsift {name}"))
        .version(env!("CARGO_PKG_VERSION"));
    Ok(clap_mangen::Man::new(page))
}

/// `mailsift report`.
#[derive(Debug, clap::Args)]
pub struct ReportArgs {
    /// The JSON report a run wrote with --report; or a job's input or output file, for a page
    /// made from the job's record in the state directory (totals only)
    #[arg(value_name = "REPORT.json")]
    pub report: PathBuf,

    #[command(flatten)]
    pub state: StateArgs,

    /// Write the self-contained HTML page to this file; - writes standard output
    #[arg(long, value_name = "PATH")]
    pub html: PathBuf,
}

/// Where the state lives.
#[derive(Debug, Clone, clap::Args)]
pub struct StateArgs {
    /// Where jobs and the answer cache live [default: the per-user state directory]
    #[arg(
        long,
        value_name = "DIR",
        env = "MAILSIFT_STATE_DIR",
        hide_env_values = true
    )]
    pub state_dir: Option<PathBuf>,
}

/// How the input is read (the file itself is a positional argument).
#[derive(Debug, Clone, clap::Args)]
pub struct FormatArgs {
    /// Field delimiter: , ; | or tab [default: detected]
    #[arg(long, value_name = "CHAR", value_parser = parse_delimiter)]
    pub delimiter: Option<u8>,

    /// The first line is data, not a header [default: detected]
    #[arg(long)]
    pub no_header: bool,

    /// The column holding the addresses, by header name or 1-based number [default: detected]
    #[arg(long, value_name = "NAME|INDEX")]
    pub email_column: Option<String>,

    /// The text encoding of the input, e.g. utf-8, utf-16le, windows-1252, latin1, shift_jis
    /// [default: detected]
    #[arg(long, value_name = "LABEL", value_parser = parse_encoding)]
    pub encoding: Option<&'static encoding_rs::Encoding>,

    /// The sheet of a spreadsheet input (.xlsx, .xls, .ods), by name or 1-based number
    /// [default: the first]
    #[arg(long, value_name = "NAME|N")]
    pub sheet: Option<String>,
    /// Send addresses whose top-level domain is not in mailsift's list (one newer than it)
    #[arg(long)]
    pub allow_unknown_tld: bool,
}

/// How long earlier answers are reused.
#[derive(Debug, Clone, clap::Args)]
pub struct CacheArgs {
    /// Reuse earlier answers younger than this
    #[arg(long, value_name = "DURATION", default_value = "30d", value_parser = parse_duration)]
    pub max_age: Duration,

    /// ... but unknown answers (free, often transient) only this long
    #[arg(long, value_name = "DURATION", default_value = "1d", value_parser = parse_duration)]
    pub max_age_unknown: Duration,

    /// ... and catch_all answers (free) only this long
    #[arg(long, value_name = "DURATION", default_value = "7d", value_parser = parse_duration)]
    pub max_age_catch_all: Duration,

    /// Ask again even for addresses with a fresh answer in the cache
    #[arg(long)]
    pub refresh: bool,
}

#[derive(Debug, clap::Args)]
#[command(after_help = format!("{ESTIMATE_EXAMPLES}\n\n{ESTIMATE_EXIT_CODES_HELP}"))]
pub struct EstimateArgs {
    /// The CSV (or one-address-per-line text) file; - reads standard input
    #[arg(value_name = "INPUT")]
    pub input: PathBuf,
    #[command(flatten)]
    pub format: FormatArgs,
    #[command(flatten)]
    pub cache: CacheArgs,
    #[command(flatten)]
    pub state: StateArgs,

    /// Credits per charged check, when the store has not seen a price yet [default: 0.25]
    #[arg(long, value_name = "CREDITS", value_parser = non_negative)]
    pub cost_per_check: Option<f64>,

    /// Print as JSON
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, clap::Args)]
#[command(after_help = format!("{VALIDATE_EXAMPLES}\n\n{EXIT_CODES_HELP}"))]
pub struct ValidateArgs {
    /// The CSV (or one-address-per-line text) file to validate; - reads standard input
    #[arg(value_name = "INPUT")]
    pub input: PathBuf,

    /// Where to write the annotated CSV [default: INPUT_STEM.validated.csv beside the input;
    /// standard output when reading standard input]; - writes standard output; a name ending
    /// in .xlsx writes a workbook
    #[arg(short, long, value_name = "PATH")]
    pub output: Option<PathBuf>,

    /// Write the summary as JSON to this file (schema in the README); - writes standard output
    #[arg(long, value_name = "PATH")]
    pub report: Option<PathBuf>,

    /// Write the report as a self-contained web page (charts, top domains, credits) to this file
    #[arg(long, value_name = "PATH")]
    pub report_html: Option<PathBuf>,

    /// Start over even though an interrupted run of this job exists (or its input changed)
    #[arg(long)]
    pub restart: bool,

    /// Run a finished job again (answers come from the cache)
    #[arg(long, conflicts_with = "restart")]
    pub force: bool,

    /// Run a finished job again, asking only for the rows whose status is error
    #[arg(long, conflicts_with_all = ["restart", "force", "refresh"])]
    pub retry_errors: bool,

    #[command(flatten)]
    pub format: FormatArgs,
    #[command(flatten)]
    pub job: JobArgs,
}

/// How a job runs: shared by `validate` and `inbox`.
#[derive(Debug, Clone, clap::Args)]
pub struct JobArgs {
    #[command(flatten)]
    pub cache: CacheArgs,
    #[command(flatten)]
    pub state: StateArgs,

    /// Which annotation columns to add: basic, or all (adds the free company fields)
    #[arg(long, value_name = "SET", default_value = "basic", value_parser = ["basic", "all"])]
    pub columns: String,

    /// Prefix for the annotation column names (e.g. lm_)
    #[arg(long, value_name = "PREFIX")]
    pub column_prefix: Option<String>,

    /// Write the API's text (email_message, mx_*, company_*) as it came, even when it starts
    /// with = + - @ tab or CR (by default such a cell gets a leading ' so a spreadsheet does
    /// not run it as a formula)
    #[arg(long)]
    pub raw_fields: bool,

    /// Also write STEM.deliverable.csv (valid), STEM.risky.csv (valid_catch_all, catch_all,
    /// unknown) and STEM.undeliverable.csv (invalid, missing) beside the output
    #[arg(long)]
    pub split: bool,

    /// Requests per minute (N/min, N/s, or unlimited) [default: 300/min, then the server's
    /// advertised limit]
    #[arg(long, value_name = "RATE")]
    pub rate: Option<crate::limiter::Rate>,

    /// Requests waiting for an answer at once (answers can take seconds)
    #[arg(long, value_name = "N", default_value = "256", value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub concurrency: u32,

    /// Retries of one request after a 429, 5xx, timeout or reset
    #[arg(long, value_name = "N", default_value = "5")]
    pub max_retries: u32,

    /// Stop sending before this job's spending could pass this many credits (exit 4; raise
    /// it and run the same command to continue)
    #[arg(long, value_name = "CREDITS", value_parser = non_negative)]
    pub max_credits: Option<f64>,

    /// Stop sending when the balance falls below this many credits (exit 4)
    #[arg(long, value_name = "CREDITS", value_parser = non_negative)]
    pub min_balance: Option<f64>,

    /// Credits per charged check, for budgets, until an answer shows the price [default: 0.25]
    #[arg(long, value_name = "CREDITS", value_parser = non_negative)]
    pub cost_per_check: Option<f64>,

    /// Save progress at least every N rows (and every 2 seconds)
    #[arg(long, value_name = "N", default_value = "100000", value_parser = clap::value_parser!(u64).range(1..))]
    pub checkpoint_rows: u64,

    /// After Ctrl-C or SIGTERM, how long requests in flight may take to finish
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_duration)]
    pub grace: Duration,
}

#[derive(Debug, clap::Args)]
#[command(after_help = format!("{INBOX_EXAMPLES}\n\n{INBOX_HELP}"))]
pub struct InboxArgs {
    /// The folder files are dropped into
    #[arg(value_name = "INBOX")]
    pub inbox: PathBuf,

    /// Where the validated files go (OUTBOX/STEM.validated.csv, STEM.report.json, split files)
    #[arg(long, value_name = "OUTBOX")]
    pub out: PathBuf,

    /// Process every ready file, then exit (the cron form); without it, keep watching
    #[arg(long)]
    pub once: bool,

    /// How often to look for new files when watching
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = parse_duration)]
    pub interval: Duration,

    /// Which file names to pick up (repeatable) [default: *.csv and *.txt]
    #[arg(long, value_name = "GLOB")]
    pub pattern: Vec<String>,

    /// A file is ready once it has not changed for this long
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_duration)]
    pub settle: Duration,

    /// A file is ready only once NAME.ready exists beside it (removed after processing)
    #[arg(long)]
    pub require_marker: bool,

    /// Where processed inputs are moved [default: INBOX/processed]
    #[arg(long, value_name = "DIR")]
    pub archive: Option<PathBuf>,

    /// Where inputs that cannot be processed are moved, with NAME.error.txt [default: INBOX/failed]
    #[arg(long, value_name = "DIR")]
    pub failed: Option<PathBuf>,

    /// If another inbox run holds the folder, wait for it instead of exiting
    #[arg(long)]
    pub wait: bool,

    /// A shell command run after each file, with its paths and counts in MAILSIFT_* variables
    #[arg(long, value_name = "CMD")]
    pub on_complete: Option<String>,

    /// Also write OUTBOX/STEM.report.html: the report as a self-contained web page
    #[arg(long)]
    pub report_html: bool,

    #[command(flatten)]
    pub format: FormatArgs,
    #[command(flatten)]
    pub job: JobArgs,
}

// Examples: a line indented by two spaces says what the command under it (indented by four)
// does. A unit test parses every such command, so none can drift from the flags.

const VALIDATE_EXAMPLES: &str = "\
Examples:
  Try it first: the bundled mock server, no key needed, nothing spent
    mailsift validate leads.csv --sandbox
  Stop before the job could spend more than 500 credits (raise it and rerun to go on)
    mailsift validate leads.csv --max-credits 500
  A workbook, plus deliverable, risky and undeliverable files beside it
    mailsift validate leads.csv -o out.xlsx --split
  A CRM export whose address column is not detected, with a JSON report
    mailsift validate export.csv --email-column \"Work Email\" --report report.json
  One address per line in, annotated CSV out
    cat addresses.txt | mailsift validate - > verdicts.csv";

const ESTIMATE_EXAMPLES: &str = "\
Examples:
  What validating a file would cost, compared with the balance (free)
    mailsift estimate leads.csv
  The same without a key: the sandbox's cache and made-up balance
    mailsift estimate leads.csv --sandbox
  As JSON, for a script that decides on --max-credits
    mailsift estimate leads.csv --json";

const INBOX_EXAMPLES: &str = "\
Examples:
  From cron: every 10 minutes, process what is ready, then exit
    */10 * * * *  mailsift inbox /srv/drop --out /srv/done --once --api-key-file ~/.mailsift-key
  Keep watching, at most 1000 credits per file, with deliverable/risky/undeliverable files
    mailsift inbox drop/ --out done/ --max-credits 1000 --split
  Try the folder workflow without a key
    mailsift inbox drop/ --out done/ --once --sandbox";

const INBOX_HELP: &str = "\
Exit codes (for the scheduler):
  0  every ready file was processed (files that could not be, moved to --failed), or another
     inbox run holds the folder
  1  failed (I/O: a file could not be moved, the outbox is not writable)
  2  usage error (bad flags, the inbox does not exist, no API key)
  3  API key rejected: fix the key; nothing more is sent until then
  4  out of credits or budget reached: the file in progress and the rest stay in the inbox;
     the next run resumes after a top-up
  5  interrupted by a signal: the next run resumes the file it was on
  6  the API looks down: the next run resumes";

fn non_negative(text: &str) -> Result<f64, String> {
    match text.trim().parse::<f64>() {
        Ok(n) if n.is_finite() && n >= 0.0 => Ok(n),
        _ => Err(format!("{text:?} is not a number of credits (0 or more)")),
    }
}

fn parse_encoding(text: &str) -> Result<&'static encoding_rs::Encoding, String> {
    encoding_rs::Encoding::for_label(text.trim().as_bytes()).ok_or_else(|| {
        format!(
            "{text:?} is not an encoding name mailsift knows; use a label such as utf-8, \
             utf-16le, utf-16be, windows-1252, latin1, iso-8859-15, windows-1250, shift_jis"
        )
    })
}

fn parse_delimiter(text: &str) -> Result<u8, String> {
    match text {
        "," | "comma" => Ok(b','),
        ";" | "semicolon" => Ok(b';'),
        "|" | "pipe" => Ok(b'|'),
        "\\t" | "\t" | "tab" => Ok(b'\t'),
        other if other.len() == 1 && other.is_ascii() && other != "\"" => Ok(other.as_bytes()[0]),
        other => Err(format!("{other:?} is not a delimiter; use , ; | or tab")),
    }
}

/// A duration as people type it: `30s`, `500ms`, `2m`, `30d`, or plain seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if let Ok(secs) = text.parse::<f64>() {
        return if secs.is_finite() && secs >= 0.0 {
            Ok(Duration::from_secs_f64(secs))
        } else {
            Err(format!("{text:?} is not a duration"))
        };
    }
    humantime::parse_duration(text)
        .map_err(|e| format!("{text:?} is not a duration ({e}); write e.g. 30s, 500ms, 2m, 30d"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn clap_definition_is_consistent() {
        Args::command().debug_assert();
    }

    #[test]
    fn every_example_in_help_parses() {
        use clap::Parser;
        for examples in [VALIDATE_EXAMPLES, ESTIMATE_EXAMPLES, INBOX_EXAMPLES] {
            let commands: Vec<&str> = examples.lines().filter(|l| l.starts_with("    ")).collect();
            assert!(commands.len() >= 3, "{examples}");
            for line in commands {
                // From `mailsift` to a pipe or redirection, split as a shell would.
                let start = line.find("mailsift ").expect(line);
                let command = line[start..].split(['|', '>']).next().unwrap();
                let words: Vec<String> = command
                    .split('"')
                    .enumerate()
                    .flat_map(|(i, part)| match i % 2 {
                        0 => part.split_whitespace().map(str::to_owned).collect(),
                        _ => vec![part.to_owned()],
                    })
                    .collect();
                if let Err(e) = Args::try_parse_from(&words) {
                    panic!("{line}\n{e}");
                }
            }
        }
    }

    #[test]
    fn durations() {
        let ok: &[(&str, Duration)] = &[
            ("30", Duration::from_secs(30)),
            ("1.5", Duration::from_millis(1500)),
            ("30s", Duration::from_secs(30)),
            ("500ms", Duration::from_millis(500)),
            ("2m", Duration::from_secs(120)),
            ("30d", Duration::from_secs(30 * 86_400)),
            ("1h 30m", Duration::from_secs(5400)),
        ];
        for (text, want) in ok {
            assert_eq!(parse_duration(text).as_ref(), Ok(want), "{text}");
        }
        for bad in ["", "-1", "soon", "NaN", "5 parsecs"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn there_is_no_flag_that_takes_the_key() {
        let command = Args::command();
        let mut names = Vec::new();
        for sub in std::iter::once(&command).chain(command.get_subcommands()) {
            names.extend(
                sub.get_arguments()
                    .filter_map(|a| a.get_long())
                    .map(str::to_owned),
            );
        }
        assert!(names.iter().any(|n| n == "api-key-file"));
        assert!(
            !names.iter().any(|n| n == "api-key" || n == "key"),
            "{names:?}"
        );
    }
}
