//! The `leadmagic-mock` program: the mock server as a standalone process.
//!
//! Owns the command line only: flags → [`MockConfig`], logging setup, the "listening" line and
//! waiting for SIGINT/SIGTERM. Everything the server does lives in the rest of this crate; this
//! module must not grow behaviour of its own. The binary that calls [`main`] is mailsift's
//! `leadmagic-mock` target, so that installing mailsift installs the mock beside it.

use std::io::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context as _};
use clap::Parser;

use crate::{Latency, MockConfig, MockServer};

/// A LeadMagic-compatible mock of the email-validation API, for tests and for rehearsing a
/// mailsift setup without spending credits. Prints `leadmagic-mock listening on URL` once
/// bound, then serves until SIGINT or SIGTERM. See docs/mock.md for the verdict rules.
#[derive(Debug, Parser)]
#[command(name = "leadmagic-mock", version)]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    host: IpAddr,

    /// Port to listen on (0 = any free port; the listening line tells which).
    #[arg(long, default_value_t = 0)]
    port: u16,

    /// The API key the mock accepts (in `X-API-Key` or `Authorization: Bearer`).
    #[arg(
        long,
        env = "LEADMAGIC_MOCK_API_KEY",
        default_value = "mock-key",
        hide_env_values = true
    )]
    api_key: String,

    /// Starting credit balance.
    #[arg(long, default_value_t = 1_000_000.0, value_parser = non_negative)]
    credits: f64,

    /// Credits charged per valid, valid_catch_all or invalid answer (catch_all and unknown
    /// are free).
    #[arg(long, default_value_t = 0.05, value_parser = non_negative)]
    cost: f64,

    /// Validations allowed per sliding 60-second window.
    #[arg(long, default_value_t = 3000, value_parser = clap::value_parser!(u32).range(1..))]
    rate_per_min: u32,

    /// Length of the sliding window the rate applies to, in seconds (the API's is 60).
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..))]
    limit_window_secs: u64,

    /// Refuse requests beyond the rate with 429 and Retry-After (default: soft mode, which
    /// only counts them, like the real API).
    #[arg(long)]
    hard_limit: bool,

    /// Send Retry-After as an HTTP-date instead of seconds.
    #[arg(long, requires = "hard_limit")]
    retry_after_date: bool,

    /// Advertise this limit in the RateLimit headers instead of the real one.
    #[arg(long, value_name = "N")]
    advertise_limit: Option<u32>,

    /// Daily quota reported in X-RateLimit-Remaining-Daily and
    /// X-RateLimit-Daily-Usage-Percent.
    #[arg(long, default_value_t = 1_000_000)]
    daily_quota: u64,

    /// Wait this long before answering each validation.
    #[arg(long, value_name = "MS", conflicts_with_all = ["latency_median_ms", "latency_p99_ms"])]
    latency_ms: Option<u64>,

    /// Log-normal latency: the median wait (needs --latency-p99-ms).
    #[arg(long, value_name = "MS", requires = "latency_p99_ms")]
    latency_median_ms: Option<u64>,

    /// Log-normal latency: the 99th-percentile wait (needs --latency-median-ms).
    #[arg(long, value_name = "MS", requires = "latency_median_ms")]
    latency_p99_ms: Option<u64>,

    /// Seed of the fault and latency draws: a run is reproducible for a given seed.
    #[arg(long, default_value_t = 1)]
    seed: u64,

    /// Probability of a 500 with a JSON error body.
    #[arg(long, default_value_t = 0.0, value_parser = probability)]
    p_500: f64,

    /// Probability of a 502 or 503 (alternating) with an HTML body.
    #[arg(long, default_value_t = 0.0, value_parser = probability)]
    p_503: f64,

    /// Probability of reading the request, then resetting the connection (no response, not
    /// charged).
    #[arg(long, default_value_t = 0.0, value_parser = probability)]
    p_reset: f64,

    /// Probability of reading the request, then answering nothing for --hang (not charged).
    #[arg(long, default_value_t = 0.0, value_parser = probability)]
    p_hang: f64,

    /// Probability of charging, then sending only half of the body and closing.
    #[arg(long, default_value_t = 0.0, value_parser = probability)]
    p_truncated: f64,

    /// How long a hung request stays unanswered before the connection is closed, in seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = 3600.0, value_parser = non_negative)]
    hang: f64,

    /// Largest request head accepted; larger ones get 431.
    #[arg(long, value_name = "BYTES", default_value_t = 16 * 1024)]
    max_header_bytes: usize,

    /// Largest request body accepted; larger ones get 413.
    #[arg(long, value_name = "BYTES", default_value_t = 64 * 1024)]
    max_body_bytes: usize,

    /// Log nothing but errors.
    #[arg(short, long, conflicts_with = "verbose")]
    quiet: bool,

    /// Log every request (to stderr; API keys are never logged).
    #[arg(short, long)]
    verbose: bool,
}

fn probability(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(p) if (0.0..=1.0).contains(&p) => Ok(p),
        _ => Err(format!("{s:?} is not a probability between 0 and 1")),
    }
}

fn non_negative(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(x) if x.is_finite() && x >= 0.0 => Ok(x),
        _ => Err(format!("{s:?} is not a non-negative number")),
    }
}

impl Args {
    /// The validated configuration; nothing below this sees clap types.
    fn config(&self) -> anyhow::Result<MockConfig> {
        let latency = match (self.latency_ms, self.latency_median_ms, self.latency_p99_ms) {
            (Some(ms), _, _) => Latency::Fixed(Duration::from_millis(ms)),
            (None, Some(median), Some(p99)) => {
                if p99 < median {
                    bail!(
                        "--latency-p99-ms ({p99}) must not be below --latency-median-ms ({median})"
                    );
                }
                Latency::LogNormal {
                    median: Duration::from_millis(median),
                    p99: Duration::from_millis(p99),
                }
            }
            _ => Latency::None,
        };
        if self.api_key.is_empty() {
            bail!("--api-key must not be empty");
        }
        Ok(MockConfig {
            bind: SocketAddr::new(self.host, self.port),
            api_key: self.api_key.clone(),
            credits: self.credits,
            cost: self.cost,
            rate_per_min: self.rate_per_min,
            limit_window: Duration::from_secs(self.limit_window_secs),
            hard_limit: self.hard_limit,
            retry_after_date: self.retry_after_date,
            advertise_limit: self.advertise_limit,
            daily_quota: self.daily_quota,
            latency,
            seed: self.seed,
            p_500: self.p_500,
            p_503: self.p_503,
            p_reset: self.p_reset,
            p_hang: self.p_hang,
            p_truncated: self.p_truncated,
            hang: Duration::from_secs_f64(self.hang),
            max_head_bytes: self.max_header_bytes,
            max_body_bytes: self.max_body_bytes,
        })
    }
}

/// Parses the command line, serves until SIGINT or SIGTERM, and says how it ended.
pub fn main() -> ExitCode {
    let args = Args::parse();
    let level = if args.quiet {
        tracing::Level::ERROR
    } else if args.verbose {
        tracing::Level::DEBUG
    } else {
        tracing::Level::WARN
    };
    tracing_subscriber::fmt()
        .with_max_level(level)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("leadmagic-mock: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &Args) -> anyhow::Result<()> {
    let config = args.config()?;
    let bind = config.bind;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    runtime.block_on(async {
        let server = MockServer::start(config)
            .await
            .with_context(|| format!("listening on {bind}"))?;
        let mut stdout = std::io::stdout().lock();
        writeln!(stdout, "leadmagic-mock listening on {}", server.url())
            .and_then(|()| stdout.flush())
            .context("writing the listening line")?;
        drop(stdout);
        wait_for_signal().await?;
        tracing::info!("shutting down");
        server.shutdown().await;
        Ok(())
    })
}

/// Resolves on the first SIGINT or SIGTERM.
async fn wait_for_signal() -> anyhow::Result<()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
        tokio::select! {
            r = tokio::signal::ctrl_c() => r.context("waiting for SIGINT")?,
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    tokio::signal::ctrl_c()
        .await
        .context("waiting for Ctrl-C")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        Args::command().debug_assert();
    }

    /// Flags, and a check on the config they give.
    type ConfigCase = (&'static [&'static str], fn(&MockConfig) -> bool);

    #[test]
    fn flags_become_config() {
        let cases: &[ConfigCase] = &[
            (&[], |c| {
                c.rate_per_min == 3000 && !c.hard_limit && c.latency == Latency::None
            }),
            (
                &["--hard-limit", "--rate-per-min", "2", "--retry-after-date"],
                |c| c.hard_limit && c.rate_per_min == 2 && c.retry_after_date,
            ),
            (&["--latency-ms", "25"], |c| {
                c.latency == Latency::Fixed(Duration::from_millis(25))
            }),
            (
                &["--latency-median-ms", "50", "--latency-p99-ms", "400"],
                |c| matches!(c.latency, Latency::LogNormal { .. }),
            ),
            (&["--port", "8080", "--host", "0.0.0.0"], |c| {
                c.bind.to_string() == "0.0.0.0:8080"
            }),
            (&["--p-reset", "1", "--hang", "0.5"], |c| {
                c.p_reset == 1.0 && c.hang == Duration::from_millis(500)
            }),
        ];
        for (flags, check) in cases {
            let argv = std::iter::once("leadmagic-mock").chain(flags.iter().copied());
            let config = Args::try_parse_from(argv)
                .expect("flags parse")
                .config()
                .expect("valid config");
            assert!(check(&config), "{flags:?}: {config:?}");
        }
    }

    #[test]
    fn bad_flags_are_refused() {
        let cases: &[&[&str]] = &[
            &["--p-500", "1.5"],
            &["--cost", "-1"],
            &["--rate-per-min", "0"],
            &[
                "--latency-ms",
                "5",
                "--latency-median-ms",
                "5",
                "--latency-p99-ms",
                "9",
            ],
            &["--latency-median-ms", "5"],
            &["--retry-after-date"],
            &["-q", "-v"],
        ];
        for flags in cases {
            let argv = std::iter::once("leadmagic-mock").chain(flags.iter().copied());
            assert!(Args::try_parse_from(argv).is_err(), "{flags:?}");
        }
        let argv = [
            "leadmagic-mock",
            "--latency-median-ms",
            "50",
            "--latency-p99-ms",
            "10",
        ];
        let args = Args::try_parse_from(argv).expect("parses");
        assert!(args.config().is_err());
    }
}
