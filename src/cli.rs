//! The command line as typed: clap-derive types that mirror the flags and do no I/O.
//!
//! They are turned once into a validated [`crate::config`] value; nothing below the commands'
//! entry points sees a clap type. Help text is the `///` on each flag.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};

use crate::exit::EXIT_CODES_HELP;

const KEY_HELP: &str = "\
The API key:
  mailsift reads it from the LEADMAGIC_API_KEY environment variable, or from the file named by
  --api-key-file (preferred on shared machines: keep it readable by you only, chmod 600).
  There is deliberately no flag that takes the key itself: it would show in process lists.
  --sandbox needs no key: it runs against the bundled mock server and spends nothing.";

#[derive(Debug, Parser)]
#[command(
    name = "mailsift",
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

#[derive(Debug, clap::Args)]
pub struct GlobalArgs {
    /// Read the API key from this file instead of the LEADMAGIC_API_KEY variable
    #[arg(long, global = true, value_name = "PATH")]
    pub api_key_file: Option<PathBuf>,

    /// The API's base URL
    #[arg(
        long,
        global = true,
        env = "LEADMAGIC_BASE_URL",
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
    },
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
