//! The `mailsift` binary: parse, set up logging and the runtime, run, map the outcome to an
//! exit code. Everything else lives in the library.

use std::process::ExitCode;

use clap::Parser;
use mailsift::cli::Args;
use mailsift::{Config, Exit};

/// glibc's allocator spent a seventh of a fast run's CPU in its arena locks and free-list
/// upkeep (perf, benches/RESULTS.md); mimalloc's thread-local heaps do not.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    // Before clap parses: its own help and errors follow `--color` too.
    mailsift::internals::term::init(
        mailsift::internals::term::color_in_args(std::env::args_os()),
        false,
        false,
    );
    let args = Args::parse();
    if let Some(text) = mailsift::cli::generated(&args.command) {
        return print_generated(text);
    }
    let verbosity = args.global.verbosity();
    let json = args.global.log_format == "json";
    mailsift::internals::term::init(color(args.global.color), json, verbosity >= 3);
    init_logging(verbosity);
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

fn color(choice: clap::ColorChoice) -> mailsift::internals::term::ColorChoice {
    match choice {
        clap::ColorChoice::Auto => mailsift::internals::term::ColorChoice::Auto,
        clap::ColorChoice::Always => mailsift::internals::term::ColorChoice::Always,
        clap::ColorChoice::Never => mailsift::internals::term::ColorChoice::Never,
    }
}

/// Prints a completion script or the manual page; a closed pipe (`| head`) is no failure.
fn print_generated(text: anyhow::Result<Vec<u8>>) -> ExitCode {
    use std::io::Write;
    let bytes = match text {
        Ok(bytes) => bytes,
        Err(error) => {
            mailsift::internals::term::error(format_args!("{error:#}"));
            return ExitCode::from(Exit::for_error(&error).code());
        }
    };
    match std::io::stdout().lock().write_all(&bytes) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            mailsift::internals::term::error(format_args!("writing to standard output: {e}"));
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
        // The bar is taken off the screen first: no destructor runs after exit().
        mailsift::internals::term::clear_live();
        mailsift::internals::term::note(
            "stopped at once; run the same command to resume from the last checkpoint",
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
/// address. The key is never a field of any event. Each line is written in the program's one
/// style by `mailsift::internals::term`.
fn init_logging(verbosity: u8) {
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
    // Escapes always: the writer drops them where colour is off.
    let format = tracing_subscriber::fmt::layer()
        .with_writer(mailsift::internals::term::Event::default)
        .with_ansi(!mailsift::internals::term::json())
        .event_format(mailsift::internals::term::Lines);
    tracing_subscriber::registry()
        .with(format.with_filter(filter))
        .init();
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
