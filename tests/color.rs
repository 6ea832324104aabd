//! Colour and the one message style (issue 14, point 2): cargo's colours where a person reads
//! stderr, none where a program does (a pipe, `--color never`, `NO_COLOR`), and under
//! `--log-format json` nothing on stderr but JSON lines.

use crate::util::{text, Dir, Mock};

const ESC: &str = "\x1b[";

/// `mailsift ARGS` against `mock` with no colour settings from the environment; its stderr.
fn stderr_of(dir: &Dir, mock: &Mock, env: &[(&str, &str)], args: &[&str]) -> String {
    let mut cmd = dir.mailsift(mock);
    cmd.env_remove("NO_COLOR")
        .env_remove("CLICOLOR_FORCE")
        .env_remove("CLICOLOR");
    for (name, value) in env {
        cmd.env(name, value);
    }
    text(&cmd.args(args).output().unwrap().stderr)
}

#[test]
fn colour_only_when_asked_for_or_forced_and_never_under_no_color() {
    let mock = Mock::fast();
    let dir = Dir::new();
    let missing = ["validate", "missing.csv"];
    let coloured = |env: &[(&str, &str)], flags: &[&str]| {
        let args: Vec<&str> = flags.iter().chain(&missing).copied().collect();
        let stderr = stderr_of(&dir, &mock, env, &args);
        assert!(stderr.contains("missing.csv"), "{stderr}");
        stderr.contains(ESC)
    };
    // Piped (as here): none, unless asked for.
    assert!(!coloured(&[], &[]));
    assert!(!coloured(&[], &["--color", "auto"]));
    assert!(!coloured(&[], &["--color", "never"]));
    assert!(coloured(&[], &["--color", "always"]));
    assert!(coloured(&[], &["--color=always"]));
    // CLICOLOR_FORCE forces it; NO_COLOR (any value) wins over that; the flag over both.
    assert!(coloured(&[("CLICOLOR_FORCE", "1")], &[]));
    assert!(!coloured(
        &[("CLICOLOR_FORCE", "1"), ("NO_COLOR", "1")],
        &[]
    ));
    assert!(!coloured(&[("CLICOLOR_FORCE", "1")], &["--color", "never"]));
    assert!(coloured(&[("NO_COLOR", "1")], &["--color", "always"]));
}

#[test]
fn clap_help_and_errors_follow_the_color_flag() {
    let dir = Dir::new();
    let help = |flag: &str| {
        let out = dir
            .bare()
            .args([flag, "validate", "--help"])
            .output()
            .unwrap();
        text(&out.stdout)
    };
    let always = help("--color=always");
    // cargo's colours: bold green headings, bold cyan flags.
    assert!(always.contains("\x1b[1m\x1b[32mUsage:\x1b[0m"), "{always}");
    assert!(
        always.contains("\x1b[1m\x1b[36m--output\x1b[0m"),
        "{always}"
    );
    assert!(!help("--color=never").contains(ESC));
    let error = |flag: &str| {
        text(
            &dir.bare()
                .args([flag, "frobnicate"])
                .output()
                .unwrap()
                .stderr,
        )
    };
    assert!(error("--color=always").contains("\x1b[1m\x1b[31merror:"));
    assert!(!error("--color=never").contains(ESC));
}

/// On a terminal (a pseudo-terminal from util-linux's `script`): colour by default, none
/// under `NO_COLOR`.
#[test]
fn a_terminal_gets_colour_unless_no_color_is_set() {
    if std::process::Command::new("script")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("skipped: util-linux's script (for a pseudo-terminal) is not installed");
        return;
    }
    let dir = Dir::new();
    let bin = assert_cmd::cargo::cargo_bin("mailsift");
    let on_terminal = |no_color: Option<&str>| {
        let mut cmd = std::process::Command::new("script");
        cmd.args([
            "-qec",
            &format!("{} validate missing.csv", bin.display()),
            "/dev/null",
        ])
        .current_dir(dir.path("."))
        .env("TERM", "xterm-256color")
        .env_remove("CLICOLOR_FORCE")
        .env_remove("CLICOLOR")
        .env_remove("NO_COLOR");
        if let Some(value) = no_color {
            cmd.env("NO_COLOR", value);
        }
        let out = cmd.output().unwrap();
        let said = text(&out.stdout);
        assert!(said.contains("missing.csv"), "{said:?}");
        said
    };
    assert!(
        on_terminal(None).contains("mailsift: \x1b[1m\x1b[31merror\x1b[0m: "),
        "{:?}",
        on_terminal(None)
    );
    assert!(!on_terminal(Some("1")).contains(ESC));
    // An empty NO_COLOR is no request (no-color.org).
    assert!(on_terminal(Some("")).contains(ESC));
}

/// `mailsift ARGS` on a pseudo-terminal (util-linux's `script`) against `mock`: what the
/// terminal showed. `None` where `script` is missing.
fn on_a_terminal(dir: &Dir, mock: &Mock, args: &str) -> Option<String> {
    let bin = assert_cmd::cargo::cargo_bin("mailsift");
    let out = std::process::Command::new("script")
        .args(["-qec", &format!("{} {args}", bin.display()), "/dev/null"])
        .current_dir(dir.path("."))
        .env("TERM", "xterm-256color")
        .env("LEADMAGIC_BASE_URL", mock.url())
        .env("LEADMAGIC_API_KEY", "mock-key")
        .env("MAILSIFT_STATE_DIR", dir.state())
        .env_remove("NO_COLOR")
        .env_remove("CLICOLOR_FORCE")
        .output()
        .ok()?;
    Some(text(&out.stdout))
}

/// At `-vv` a request line comes with every answer: a bar between them would be torn, so a
/// terminal gets the plain progress lines instead (none in a run this short).
#[test]
fn at_vv_a_terminal_gets_request_lines_and_no_bar() {
    let mock = Mock::fixed_latency(250);
    let dir = Dir::new();
    dir.write(
        "in.csv",
        "email\nann@acme-corp.com\nbob@initech.com\ncy@globex.com\n",
    );
    let run = |flags: &str, output: &str| {
        let args = format!("{flags} validate in.csv -o {output} --concurrency 1");
        on_a_terminal(&dir, &mock, &args)
    };
    let Some(plain) = run("", "a.csv") else {
        eprintln!("skipped: util-linux's script (for a pseudo-terminal) is not installed");
        return;
    };
    // The bar's message line, as a control: the run is long enough to draw it.
    assert!(plain.contains("rows/s ·"), "no bar: {plain:?}");
    let chatty = run("-vv", "b.csv").unwrap();
    assert!(
        chatty.contains("method=") || chatty.contains("method\x1b"),
        "{chatty:?}"
    );
    assert!(!chatty.contains("rows/s ·"), "a bar at -vv: {chatty:?}");
}

/// A warning from tracing (the key file's permissions) and one written by hand (a failed
/// `--on-complete` hook) read alike, coloured alike.
#[cfg(unix)]
#[test]
fn tracing_warnings_and_hand_written_ones_share_one_style() {
    use std::os::unix::fs::PermissionsExt;
    let mock = Mock::fast();
    let dir = Dir::new();
    let key = dir.write("key.txt", "mock-key\n");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    std::fs::create_dir(dir.path("in")).unwrap();
    dir.write("in/list.csv", "email\nann@acme-corp.com\n");
    for (flag, prefix) in [
        ("--color=never", "mailsift: warning: "),
        (
            "--color=always",
            "mailsift: \x1b[1m\x1b[33mwarning\x1b[0m: ",
        ),
    ] {
        std::fs::rename(dir.path("in/processed/list.csv"), dir.path("in/list.csv")).ok();
        let stderr = stderr_of(
            &dir,
            &mock,
            &[],
            &[
                flag,
                "--api-key-file",
                "key.txt",
                "inbox",
                "in",
                "--out",
                "out",
                "--once",
                "--settle",
                "0s",
                "--on-complete",
                "exit 3",
            ],
        );
        let line = |what: &str| {
            stderr
                .lines()
                .find(|l| l.contains(what))
                .unwrap_or_else(|| panic!("no {what:?} in:\n{stderr}"))
                .to_owned()
        };
        let traced = line("readable by other users");
        let by_hand = line("--on-complete exited");
        assert!(traced.starts_with(prefix), "{flag}: {traced:?}");
        assert!(by_hand.starts_with(prefix), "{flag}: {by_hand:?}");
        let status = line("in/list.csv -> out/");
        assert!(
            status.starts_with("  Validating ") || status.contains("Validating\x1b[0m "),
            "{flag}: {status:?}"
        );
    }
}

/// Under `--log-format json`, wherever it is given: every line on stderr is a JSON object
/// with a time, a level and a message; none carries an escape, even with `--color always`.
#[test]
fn json_logs_are_the_only_thing_on_stderr() {
    let mock = Mock::fast();
    let dir = Dir::new();
    std::fs::create_dir(dir.path("in")).unwrap();
    dir.write("in/list.csv", "email\nann@acme-corp.com\nbob@initech.com\n");
    dir.write("in/broken.csv", "first,last\nJane,Doe\n");
    let stderr = stderr_of(
        &dir,
        &mock,
        &[("CLICOLOR_FORCE", "1")],
        &[
            "--color=always",
            "-vv",
            "inbox",
            "in",
            "--out",
            "out",
            "--once",
            "--settle",
            "0s",
            "--log-format",
            "json",
            "--on-complete",
            "exit 3",
        ],
    );
    let lines = json_lines(&stderr);
    let events: Vec<&str> = lines.iter().filter_map(|l| l["event"].as_str()).collect();
    for event in ["started", "finished", "failed", "hook_failed"] {
        assert!(events.contains(&event), "no {event} in {events:?}");
    }
    assert!(
        lines.iter().any(|l| l["method"] == "POST"),
        "no request line: {stderr}"
    );
    let hook = lines.iter().find(|l| l["event"] == "hook_failed").unwrap();
    assert_eq!(hook["level"], "warning");
}

/// Each line of `stderr` as a JSON object with `time`, `level` and no escapes.
fn json_lines(stderr: &str) -> Vec<serde_json::Value> {
    assert!(!stderr.contains(ESC), "{stderr}");
    let lines: Vec<serde_json::Value> = stderr
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: not JSON: {l:?}")))
        .collect();
    assert!(!lines.is_empty());
    for line in &lines {
        assert!(
            line["time"].is_string() && line["level"].is_string(),
            "{line}"
        );
    }
    lines
}

/// `validate` too: its opening lines, cost line, summary and advice are JSON lines.
#[test]
fn validate_under_json_logs_writes_only_json_lines() {
    let mock = Mock::fast();
    let dir = Dir::new();
    dir.write("in.csv", "email\nann@acme-corp.com\nbob@initech.com\n");
    let stderr = stderr_of(
        &dir,
        &mock,
        &[],
        &[
            "--log-format",
            "json",
            "validate",
            "in.csv",
            "-o",
            "out.csv",
        ],
    );
    let lines = json_lines(&stderr);
    let summary = lines
        .iter()
        .find(|l| l["status"] == "done")
        .unwrap_or_else(|| panic!("no summary line: {stderr}"));
    assert_eq!(summary["summary"]["rows"]["total"], 2);
}
