//! The `mailsift` binary: parse, set up logging and the runtime, run, map the outcome to an
//! exit code. Everything else lives in the library.

use std::process::ExitCode;

use clap::Parser;
use mailsift::cli::{Args, Command};
use mailsift::{Config, Exit};
use tracing_subscriber::fmt::FormatFields;

/// glibc's allocator spent a seventh of a fast run's CPU in its arena locks and free-list
/// upkeep (perf, benches/RESULTS.md); mimalloc's thread-local heaps do not.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let args = Args::parse();
    if let Some(text) = mailsift::cli::generated(&args.command) {
        return print_generated(text);
    }
    let verbosity = args.global.verbosity();
    // `inbox --log-format json` promises JSON lines on stderr: tracing's too.
    let json = matches!(&args.command, Command::Inbox(inbox) if inbox.log_format == "json");
    init_logging(verbosity, json);
    let code = match run(args) {
        Ok(exit) => exit,
        // Whoever read the output has stopped (`mailsift status | head -1`): as ripgrep does,
        // that is success, not an error to shout about.
        Err(error) if stdout_closed(&error) => Exit::Ok,
        Err(error) => {
            // Through tracing: `mailsift: error: ...`, or a JSON line under --log-format json.
            tracing::error!("{error:#}");
            Exit::for_error(&error)
        }
    };
    ExitCode::from(code.code())
}

/// Prints a completion script or the manual page; a closed pipe (`| head`) is no failure.
fn print_generated(text: anyhow::Result<Vec<u8>>) -> ExitCode {
    use std::io::Write;
    let bytes = match text {
        Ok(bytes) => bytes,
        Err(error) => {
            eprintln!("mailsift: error: {error:#}");
            return ExitCode::from(Exit::for_error(&error).code());
        }
    };
    match std::io::stdout().lock().write_all(&bytes) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            eprintln!("mailsift: error: writing to standard output: {e}");
            ExitCode::from(Exit::Failed.code())
        }
        _ => ExitCode::SUCCESS,
    }
}

fn run(args: Args) -> anyhow::Result<Exit> {
    let config = Config::from_args(args, std::env::var(mailsift::KEY_VAR).ok())?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(mailsift::run(config, shutdown_signal()))
}

/// Resolves on the first Ctrl-C or SIGTERM. A second one ends the process at once: the last
/// checkpoint is consistent whenever it is taken.
async fn shutdown_signal() {
    wait_for_signal().await;
    tokio::spawn(async {
        wait_for_signal().await;
        eprintln!(
            "mailsift: stopped at once; run the same command to resume from the last checkpoint"
        );
        std::process::exit(Exit::Interrupted.code().into());
    });
}

#[cfg(unix)]
async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("installing a SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("installing a SIGINT handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}

#[cfg(not(unix))]
async fn wait_for_signal() {
    let _ = tokio::signal::ctrl_c().await;
}

/// Which lines reach stderr: mailsift's own events by verbosity, other crates' (hyper's
/// connection lines, reqwest's) only at `-vvvv`. Without a flag: warnings and errors; `-v`
/// what happens; `-vv` each request (method, path, status, latency, retry); `-vvv` with its
/// address. The key is never a field of any event.
fn init_logging(verbosity: u8, json: bool) {
    use std::io::IsTerminal;
    use tracing_subscriber::filter::{LevelFilter, Targets};
    use tracing_subscriber::prelude::*;
    let (ours, others) = match verbosity {
        0 => (LevelFilter::ERROR, LevelFilter::ERROR),
        1 => (LevelFilter::WARN, LevelFilter::WARN),
        2 => (LevelFilter::INFO, LevelFilter::WARN),
        3 => (LevelFilter::DEBUG, LevelFilter::WARN),
        4 => (LevelFilter::TRACE, LevelFilter::WARN),
        _ => (LevelFilter::TRACE, LevelFilter::TRACE),
    };
    let filter = Targets::new()
        .with_default(others)
        .with_target(env!("CARGO_CRATE_NAME"), ours);
    // Colour only for a person at a terminal who has not asked for none (no-color.org).
    let ansi = std::io::stderr().is_terminal()
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let format = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(ansi && !json)
        .event_format(Lines { json });
    tracing_subscriber::registry()
        .with(format.with_filter(filter))
        .init();
}

/// Every tracing event in the program's one message style: `mailsift: warning: ...` as cargo
/// writes it (no timestamp, the level in lower case, structured fields as `key=value`), or
/// under `inbox --log-format json` one JSON object per line, shaped as inbox's own events.
struct Lines {
    json: bool,
}

impl<S, N> tracing_subscriber::fmt::FormatEvent<S, N> for Lines
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &tracing_subscriber::fmt::FmtContext<'_, S, N>,
        mut writer: tracing_subscriber::fmt::format::Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        let level = *event.metadata().level();
        let word = match level {
            tracing::Level::ERROR => "error",
            tracing::Level::WARN => "warning",
            tracing::Level::INFO => "info",
            tracing::Level::DEBUG => "debug",
            tracing::Level::TRACE => "trace",
        };
        if self.json {
            let mut fields = JsonFields(serde_json::Map::new());
            event.record(&mut fields);
            let mut line = serde_json::json!({
                "time": mailsift::schema::rfc3339(mailsift::clock::now()),
                "level": word,
            });
            if let serde_json::Value::Object(line) = &mut line {
                line.extend(fields.0);
            }
            return writeln!(writer, "{line}");
        }
        write!(writer, "mailsift: ")?;
        if writer.has_ansi_escapes() {
            // cargo's colours: bold red errors, bold yellow warnings, bold cyan the rest.
            let colour = match level {
                tracing::Level::ERROR => "1;31",
                tracing::Level::WARN => "1;33",
                _ => "1;36",
            };
            write!(writer, "\x1b[{colour}m{word}\x1b[0m: ")?;
        } else {
            write!(writer, "{word}: ")?;
        }
        ctx.format_fields(writer.by_ref(), event)?;
        writeln!(writer)
    }
}

/// An event's fields as JSON values: numbers and booleans stay typed.
struct JsonFields(serde_json::Map<String, serde_json::Value>);

impl tracing::field::Visit for JsonFields {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        self.0
            .insert(field.name().into(), format!("{value:?}").into());
    }
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_i64(&mut self, field: &tracing::field::Field, value: i64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_u64(&mut self, field: &tracing::field::Field, value: u64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_f64(&mut self, field: &tracing::field::Field, value: f64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_bool(&mut self, field: &tracing::field::Field, value: bool) {
        self.0.insert(field.name().into(), value.into());
    }
}

/// A broken pipe anywhere in the chain. Only writes to standard output can meet one: API
/// errors carry text, not the I/O errors beneath them, and everything else writes files.
fn stdout_closed(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
    })
}
