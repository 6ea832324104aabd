//! Everything mailsift says on standard error, in one style, whether written by hand or by
//! tracing: cargo's status lines (`  Validating leads.csv`: a bold green word right-aligned in
//! 12 columns) and `mailsift: warning: ...`, `mailsift: error: ...`, `mailsift: note: ...`
//! (bold yellow, bold red, bold cyan). Under `--log-format json` every line is one JSON object
//! instead (`time`, `level`, `message`, more fields), and nothing else reaches stderr.
//!
//! Colour goes through `anstream`, as clap's own help does: escapes are dropped when stderr is
//! not a terminal, when `NO_COLOR` is set to anything, or with `--color never`; `--color
//! always` and `CLICOLOR_FORCE` keep them. A live progress bar registers itself ([`set_live`])
//! so that every line is printed above it rather than through it.

use std::fmt::Display;
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

pub use anstream::ColorChoice;
use anstyle::{AnsiColor, Style};
use serde_json::{Map, Value};
use tracing_subscriber::fmt::FormatFields;

/// Status words (`Validating`, `Finished`): cargo's bold green.
pub const STATUS: Style = AnsiColor::Green.on_default().bold();
pub const ERROR: Style = AnsiColor::Red.on_default().bold();
pub const WARNING: Style = AnsiColor::Yellow.on_default().bold();
/// `note:` and `info:`: cargo's bold cyan.
pub const NOTE: Style = AnsiColor::Cyan.on_default().bold();
/// `debug:` and `trace:`, which come by the hundred at `-vv`: out of the way.
pub const QUIET: Style = Style::new().dimmed();

/// The colours of clap's help and errors: cargo's.
pub const HELP: clap::builder::Styles = clap::builder::Styles::styled()
    .header(STATUS)
    .usage(STATUS)
    .literal(AnsiColor::Cyan.on_default().bold())
    .placeholder(AnsiColor::Cyan.on_default())
    .error(ERROR)
    .valid(AnsiColor::Cyan.on_default().bold())
    .invalid(WARNING);

static JSON: AtomicBool = AtomicBool::new(false);
static CHATTY: AtomicBool = AtomicBool::new(false);

/// Set once, by `main`, before anything is said: the colour choice (for clap's output too),
/// JSON lines or text, and whether a log line per request is on (`-vv`), which a progress bar
/// would only tear.
pub fn init(color: ColorChoice, json: bool, chatty: bool) {
    color.write_global();
    JSON.store(json, Ordering::Relaxed);
    CHATTY.store(chatty, Ordering::Relaxed);
}

/// `--color` as given on the command line, read before clap parses it, so that clap's own help
/// and errors follow it as well. The last one wins, as with clap; `--` ends the options.
pub fn color_in_args(args: impl IntoIterator<Item = std::ffi::OsString>) -> ColorChoice {
    let mut choice = ColorChoice::Auto;
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        let value = match arg.to_str() {
            Some("--") => break,
            Some("--color") => args.next(),
            Some(arg) => arg.strip_prefix("--color=").map(Into::into),
            None => None,
        };
        choice = match value.as_ref().and_then(|v| v.to_str()) {
            Some("always") => ColorChoice::Always,
            Some("never") => ColorChoice::Never,
            Some("auto") => ColorChoice::Auto,
            _ => choice,
        };
    }
    choice
}

/// Messages are JSON lines (`--log-format json`).
pub fn json() -> bool {
    JSON.load(Ordering::Relaxed)
}

/// A progress bar fits: stderr is a terminal, and neither JSON lines nor per-request log lines
/// (`-vv`) go there.
pub fn bar_fits() -> bool {
    use std::io::IsTerminal;
    std::io::stderr().is_terminal() && !json() && !CHATTY.load(Ordering::Relaxed)
}

/// Whether what is written to stderr now keeps its colour.
pub fn colour() -> bool {
    !json() && anstream::AutoStream::choice(&std::io::stderr()) != ColorChoice::Never
}

/// `text` in `style` when stderr keeps colour, plain otherwise: for text that is built first
/// and printed later.
pub fn paint(style: Style, text: impl Display) -> String {
    if colour() {
        format!("{style}{text}{style:#}")
    } else {
        text.to_string()
    }
}

/// The colour of a verdict: deliverable green, undeliverable red, risky yellow.
pub fn verdict(status: &str) -> Style {
    match status {
        "valid" => AnsiColor::Green.on_default(),
        "invalid" | "missing" | "error" => AnsiColor::Red.on_default(),
        "valid_catch_all" | "catch_all" | "unknown" => AnsiColor::Yellow.on_default(),
        _ => Style::new(),
    }
}

/// `  Validating leads.csv -> leads.validated.csv`: what is happening now.
pub fn status(word: &str, message: impl Display) {
    if json() {
        let mut fields = Map::new();
        fields.insert("status".into(), word.to_lowercase().into());
        return json_line("info", &message.to_string(), fields);
    }
    emit(&format!("{STATUS}{word:>12}{STATUS:#} {message}\n"));
}

/// `mailsift: warning: ...`
pub fn warn(message: impl Display) {
    say("warning", &message.to_string());
}

/// `mailsift: error: ...`
pub fn error(message: impl Display) {
    say("error", &message.to_string());
}

/// `mailsift: note: ...`
pub fn note(message: impl Display) {
    say("note", &message.to_string());
}

/// A message already written as `mailsift: ...` (possibly several lines, some of them
/// `mailsift: warning: ...`), in this module's style: its level words coloured, or as one JSON
/// line whose level is the gravest one named.
pub fn line(text: &str) {
    if json() {
        let mut level = "info";
        let mut message = Vec::new();
        for line in text.lines() {
            let line = line.strip_prefix("mailsift: ").unwrap_or(line);
            let (word, rest) = split_level(line);
            if word == Some("error") || (word == Some("warning") && level != "error") {
                level = word.unwrap_or(level);
            }
            message.push(if word.is_some() { rest } else { line });
        }
        return json_line(level, &message.join("\n"), Map::new());
    }
    let mut out = String::new();
    for line in text.lines() {
        match line.strip_prefix("mailsift: ").map(split_level) {
            Some((Some(word), rest)) => {
                out.push_str(&prefix(word));
                out.push_str(rest);
            }
            _ => out.push_str(line),
        }
        out.push('\n');
    }
    emit(&out);
}

/// A question to a person at the terminal, the answer typed on the same line.
pub fn ask(question: &str) {
    emit(question);
}

fn split_level(line: &str) -> (Option<&'static str>, &str) {
    for word in ["error", "warning", "note"] {
        if let Some(rest) = line
            .strip_prefix(word)
            .and_then(|rest| rest.strip_prefix(": "))
        {
            return (Some(word), rest);
        }
    }
    (None, line)
}

/// `mailsift: warning: `, its level word in colour.
pub fn prefix(word: &str) -> String {
    let style = match word {
        "error" => ERROR,
        "warning" => WARNING,
        "debug" | "trace" => QUIET,
        _ => NOTE,
    };
    format!("mailsift: {style}{word}{style:#}: ")
}

fn say(word: &str, message: &str) {
    if json() {
        return json_line(word, message, Map::new());
    }
    emit(&format!("{}{message}\n", prefix(word)));
}

/// One JSON line: `time`, `level`, `message`, then `fields`.
pub fn json_line(level: &str, message: &str, fields: Map<String, Value>) {
    let mut line = Map::new();
    line.insert(
        "time".into(),
        crate::schema::rfc3339(crate::clock::now()).into(),
    );
    line.insert("level".into(), level.into());
    line.insert("message".into(), message.into());
    line.extend(fields);
    emit(&format!("{}\n", Value::Object(line)));
}

/// Something drawn on stderr that lines must be printed above: the progress bar.
pub trait Live: Send + Sync {
    /// Takes the display off the screen, runs `print`, draws it again below.
    fn suspend(&self, print: &mut dyn FnMut());
    /// Takes the display off the screen for good.
    fn clear(&self);
}

static LIVE: Mutex<Option<Arc<dyn Live>>> = Mutex::new(None);

pub(crate) fn live() -> Option<Arc<dyn Live>> {
    LIVE.lock().unwrap_or_else(|e| e.into_inner()).clone()
}

/// Registers the display every line is printed above (`None`: there is none any more).
pub fn set_live(display: Option<Arc<dyn Live>>) {
    *LIVE.lock().unwrap_or_else(|e| e.into_inner()) = display;
}

/// Clears the live display, if any, for a process about to end without unwinding (the second
/// Ctrl-C), so no stale bar stays on the screen.
pub fn clear_live() {
    if let Some(display) = LIVE.lock().unwrap_or_else(|e| e.into_inner()).take() {
        display.clear();
    }
}

/// Writes `text` to stderr in one piece, above the live display if there is one, without
/// escapes where colour is off. A failed write to stderr has nowhere to be reported.
fn emit(text: &str) {
    let mut print = || {
        let mut stderr = anstream::stderr().lock();
        let _ = stderr.write_all(text.as_bytes());
        let _ = stderr.flush();
    };
    match live() {
        Some(display) => display.suspend(&mut print),
        None => print(),
    }
}

/// tracing's writer: each event is buffered and printed by `emit` in one piece.
#[derive(Default)]
pub struct Event(Vec<u8>);

impl Write for Event {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for Event {
    fn drop(&mut self) {
        if !self.0.is_empty() {
            emit(&String::from_utf8_lossy(&self.0));
        }
    }
}

/// Every tracing event in this module's style: `mailsift: warning: ...` (no timestamp, the
/// level in lower case, structured fields as `key=value`), or a JSON line whose fields keep
/// their types.
pub struct Lines;

impl<S, N> tracing_subscriber::fmt::FormatEvent<S, N> for Lines
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    N: for<'a> tracing_subscriber::fmt::FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &tracing_subscriber::fmt::FmtContext<'_, S, N>,
        mut writer: tracing_subscriber::fmt::format::Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        let word = match *event.metadata().level() {
            tracing::Level::ERROR => "error",
            tracing::Level::WARN => "warning",
            tracing::Level::INFO => "info",
            tracing::Level::DEBUG => "debug",
            tracing::Level::TRACE => "trace",
        };
        if json() {
            let mut fields = JsonFields(Map::new());
            event.record(&mut fields);
            let mut line = Map::new();
            line.insert(
                "time".into(),
                crate::schema::rfc3339(crate::clock::now()).into(),
            );
            line.insert("level".into(), word.into());
            line.extend(fields.0);
            return writeln!(writer, "{}", Value::Object(line));
        }
        write!(writer, "{}", prefix(word))?;
        ctx.format_fields(writer.by_ref(), event)?;
        writeln!(writer)
    }
}

/// An event's fields as JSON values: numbers and booleans stay typed.
struct JsonFields(Map<String, Value>);

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_color_flag_is_found_before_clap_parses() {
        let args = |line: &str| line.split(' ').map(Into::into).collect::<Vec<_>>();
        for (line, want) in [
            ("mailsift validate a.csv", ColorChoice::Auto),
            ("mailsift --color never validate a.csv", ColorChoice::Never),
            (
                "mailsift validate --color=always a.csv",
                ColorChoice::Always,
            ),
            (
                "mailsift --color never --color=auto status",
                ColorChoice::Auto,
            ),
            ("mailsift check -- --color never", ColorChoice::Auto),
            ("mailsift --color", ColorChoice::Auto),
        ] {
            assert_eq!(color_in_args(args(line)), want, "{line}");
        }
    }

    #[test]
    fn level_words_are_found_in_lines_written_by_hand() {
        assert_eq!(split_level("warning: low"), (Some("warning"), "low"));
        assert_eq!(split_level("error: gone"), (Some("error"), "gone"));
        assert_eq!(split_level("warnings: 3"), (None, "warnings: 3"));
        assert_eq!(split_level("sandbox mode"), (None, "sandbox mode"));
    }

    #[test]
    fn verdicts_are_coloured_by_what_they_mean() {
        assert_eq!(verdict("valid"), AnsiColor::Green.on_default());
        assert_eq!(verdict("invalid"), AnsiColor::Red.on_default());
        for risky in ["catch_all", "valid_catch_all", "unknown"] {
            assert_eq!(verdict(risky), AnsiColor::Yellow.on_default(), "{risky}");
        }
        assert_eq!(verdict("other"), Style::new());
    }
}
