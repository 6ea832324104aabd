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
    let args = Args::parse();
    if let Some(text) = mailsift::cli::generated(&args.command) {
        return print_generated(text);
    }
    let verbosity = mailsift::config::verbosity(&args.global);
    init_logging(verbosity);
    let code = match run(args) {
        Ok(exit) => exit,
        // Whoever read the output has stopped (`mailsift status | head -1`): as ripgrep does,
        // that is success, not an error to shout about.
        Err(error) if stdout_closed(&error) => Exit::Ok,
        Err(error) => {
            eprintln!("mailsift: error: {error:#}");
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
    let config = Config::from_args(args, std::env::var(mailsift::api::KEY_VAR).ok())?;
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

fn init_logging(verbosity: u8) {
    let level = match verbosity {
        0 => tracing::Level::ERROR,
        1 => tracing::Level::WARN,
        2 => tracing::Level::INFO,
        3 => tracing::Level::DEBUG,
        _ => tracing::Level::TRACE,
    };
    use std::io::IsTerminal;
    tracing_subscriber::fmt()
        .with_max_level(level)
        .with_writer(std::io::stderr)
        // Colour codes only for a person at a terminal, not in cron mail or log files.
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
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
