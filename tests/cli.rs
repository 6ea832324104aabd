//! `credits`, `check`, keys and exit codes, through the real binary.

use predicates::prelude::*;
use serde_json::Value;

use crate::util::{assert_none_sent_twice, text, with_input, Dir, Mock, Printed};

#[test]
fn credits_prints_the_balance() {
    let mock = Mock::fast();
    mock.server.set_credits(1234.5);
    let dir = Dir::new();
    dir.mailsift(&mock)
        .arg("credits")
        .assert()
        .success()
        .stdout("1234.5 credits\n");
    let out = dir.ok(&mock, "credits --json");
    let json: Value = serde_json::from_slice(&out.get_output().stdout).unwrap();
    assert_eq!(json["credits"], 1234.5);
    assert_eq!(mock.stats().validations, 0, "the balance is free");
}

#[test]
fn check_prints_each_verdict_and_sends_each_address_once() {
    let mock = Mock::fast();
    let dir = Dir::new();
    let out = dir.ok(
        &mock,
        "check valid.jane@acme-corp.com Valid.Jane@ACME-CORP.com invalid.bob@acme-corp.com \
         catchall.x@northwind.io not-an-address --json",
    );
    let lines: Vec<Value> = serde_json::from_slice(&out.get_output().stdout).unwrap();
    let field = |i: usize, f: &str| lines[i][f].as_str().unwrap_or_default().to_owned();
    assert_eq!(lines.len(), 5);
    assert_eq!(
        (field(0, "status"), field(0, "source")),
        ("valid".into(), "api".into())
    );
    assert_eq!(lines[0]["credits_consumed"], 0.05);
    assert_eq!(
        (field(1, "status"), field(1, "source")),
        ("valid".into(), "duplicate".into())
    );
    assert_eq!(field(2, "status"), "invalid");
    assert_eq!(
        (field(3, "status"), lines[3]["credits_consumed"].as_f64()),
        ("catch_all".into(), Some(0.0))
    );
    assert_eq!(
        (field(4, "status"), field(4, "source")),
        ("invalid".into(), "syntax".into())
    );
    let stats = mock.stats();
    assert_eq!(
        stats.validations, 3,
        "duplicate and syntax-invalid addresses are not sent"
    );
    assert_none_sent_twice(&stats, "validate");

    let plain = dir.ok(&mock, "check valid.jane@gmail.com");
    let text = String::from_utf8(plain.get_output().stdout.clone()).unwrap();
    assert!(text.starts_with("valid.jane@gmail.com  valid"), "{text}");
    assert!(
        text.contains("credits 0.05") && text.contains("Google Workspace"),
        "{text}"
    );
}

#[test]
fn a_wrong_key_exits_3_and_says_where_to_look_without_printing_it() {
    let mock = Mock::fast();
    let dir = Dir::new();
    let secret = "sk_live_WRONG_4f9a8c2e";
    for args in [vec!["credits"], vec!["check", "valid@acme-corp.com"]] {
        let out = dir
            .mailsift(&mock)
            .env("LEADMAGIC_API_KEY", secret)
            .args(&args)
            .assert()
            .code(3)
            .stderr(predicate::str::contains("X-API-Key"))
            .stderr(predicate::str::contains("LEADMAGIC_API_KEY"));
        let output = out.get_output();
        for stream in [&output.stdout, &output.stderr] {
            assert!(!String::from_utf8_lossy(stream).contains(secret));
        }
    }
}

#[test]
fn no_key_exits_2_and_suggests_the_sandbox() {
    let dir = Dir::new();
    dir.bare_run("credits")
        .code(2)
        .stderr_has(&["LEADMAGIC_API_KEY", "--sandbox"]);
}

#[test]
fn the_sandbox_needs_no_key() {
    let dir = Dir::new();
    dir.bare()
        .args(["--sandbox", "credits"])
        .assert()
        .success()
        .stdout(predicate::str::ends_with(" credits\n"));
    dir.bare_run("check --sandbox valid@acme-corp.com")
        .success()
        .stdout_has(&["valid"]);
}

#[test]
fn the_key_file_is_read_and_a_shared_one_is_warned_about() {
    let mock = Mock::fast();
    let dir = Dir::new();
    let file = dir.write("key", "mock-key\n");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        dir.mailsift(&mock)
            .env_remove("LEADMAGIC_API_KEY")
            .args(["credits", "--api-key-file"])
            .arg(&file)
            .assert()
            .success()
            .stderr(
                predicate::str::contains("readable by other users")
                    .and(predicate::str::contains("chmod 600")),
            );
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    dir.mailsift(&mock)
        .env("LEADMAGIC_API_KEY", "wrong-but-ignored")
        .args(["credits", "--api-key-file"])
        .arg(&file)
        .assert()
        .success()
        .stderr("");
    dir.run(&mock, "credits --api-key-file does-not-exist")
        .code(2)
        .stderr_has(&["does-not-exist"]);
}

#[test]
fn help_documents_the_exit_codes_and_the_key() {
    let dir = Dir::new();
    dir.bare_run("--help")
        .success()
        .stdout_has(&["Exit codes:", "LEADMAGIC_API_KEY"]);
    dir.bare_run("validate --help")
        .success()
        .stdout_has(&["Exit codes:"]);
    dir.bare_run("frobnicate").code(2);
}

/// The help of `mailsift ARGS...`, run with both env-backed flags set, so a value leaking
/// into it would show.
fn help_of(dir: &Dir, args: &[&str]) -> String {
    let out = dir
        .bare()
        .env("LEADMAGIC_BASE_URL", "http://127.0.0.1:9/env-url")
        .args(args)
        .assert()
        .success()
        .stderr("");
    text(&out.get_output().stdout)
}

/// A help text cut at its "Global options:" heading: (before it, the global block).
fn split_globals(help: &str) -> (&str, &str) {
    match help.split_once("\nGlobal options:\n") {
        Some((own, rest)) => (own, rest.split("\n\n").next().unwrap_or_default()),
        None => (help, ""),
    }
}

#[test]
fn each_help_lists_its_own_options_first_then_only_the_globals_that_act() {
    let dir = Dir::new();
    const API: [&str; 3] = ["--timeout", "--base-url", "--api-key-file"];
    for command in [
        &["validate"][..],
        &["estimate"],
        &["inbox"],
        &["check"],
        &["credits"],
    ] {
        let help = help_of(&dir, &[command, &["--help"]].concat());
        let (own, globals) = split_globals(&help);
        assert!(own.contains("\nOptions:\n"), "{command:?}:\n{help}");
        for flag in API.iter().chain(&["--sandbox", "--quiet", "--verbose"]) {
            assert!(
                globals.contains(flag),
                "{command:?} lacks global {flag}:\n{help}"
            );
            assert!(
                !own.contains(flag),
                "{command:?} lists {flag} among its own:\n{help}"
            );
        }
    }
    let validate = help_of(&dir, &["validate", "--help"]);
    assert!(split_globals(&validate).0.contains("--max-credits"));

    // They read the state directory, which --sandbox changes, and never the API.
    for command in [
        &["status"][..],
        &["cache"],
        &["cache", "stats"],
        &["cache", "clear"],
        &["report"],
    ] {
        for help in [
            help_of(&dir, &[command, &["--help"]].concat()),
            help_of(&dir, &[&["help"], command].concat()),
        ] {
            let (_, globals) = split_globals(&help);
            assert!(globals.contains("--sandbox"), "{command:?}:\n{help}");
            for flag in API {
                assert!(!help.contains(flag), "{command:?} lists {flag}:\n{help}");
            }
        }
    }
    // They print text and exit: no global does anything for them.
    for command in ["completions", "man"] {
        let help = help_of(&dir, &[command, "--help"]);
        assert!(!help.contains("Global options"), "{command}:\n{help}");
        assert!(!help.contains("--sandbox"), "{command}:\n{help}");
        assert!(!help.contains("--verbose"), "{command}:\n{help}");
    }
    // Hidden from help, still accepted: scripts that pass them keep working.
    dir.bare_run("status --timeout 5s --base-url http://127.0.0.1:9")
        .success();
}

#[test]
fn usage_lines_and_help_show_no_environment_values() {
    let dir = Dir::new();
    let state = dir.state().display().to_string();
    for (args, usage) in [
        (
            &["validate"][..],
            "Usage: mailsift validate [OPTIONS] <INPUT>\n",
        ),
        (&["check"], "Usage: mailsift check [OPTIONS] <ADDRESS>...\n"),
        (
            &["estimate"],
            "Usage: mailsift estimate [OPTIONS] <INPUT>\n",
        ),
        (
            &["cache", "clear", "--bogus"],
            "Usage: mailsift cache clear [OPTIONS]\n",
        ),
    ] {
        let out = dir
            .bare()
            .env("LEADMAGIC_BASE_URL", "http://127.0.0.1:9/env-url")
            .args(args)
            .assert()
            .code(2);
        let err = text(&out.get_output().stderr);
        assert!(err.contains(usage), "{args:?}:\n{err}");
        assert!(
            !err.contains("--state-dir") && !err.contains("--base-url"),
            "{err}"
        );
    }
    for args in [
        &["validate", "--help"][..],
        &["status", "--help"],
        &["--help"],
    ] {
        let help = help_of(&dir, args);
        assert!(
            !help.contains(&state) && !help.contains("env-url"),
            "{args:?}:\n{help}"
        );
    }
    let validate = help_of(&dir, &["validate", "--help"]);
    assert!(validate.contains("[env: MAILSIFT_STATE_DIR]"), "{validate}");
    assert!(validate.contains("[env: LEADMAGIC_BASE_URL]"), "{validate}");
}

#[test]
fn exit_code_tables_appear_only_where_they_apply() {
    let dir = Dir::new();
    let validate = help_of(&dir, &["validate", "--help"]);
    let inbox = help_of(&dir, &["inbox", "--help"]);
    for help in [&validate, &inbox] {
        for code in [
            "  3  API key rejected",
            "  4  out of credits",
            "  5  interrupted",
        ] {
            assert!(help.contains(code), "lacks {code:?}:\n{help}");
        }
    }
    // estimate spends nothing and runs no job: it cannot run out of credits or be resumed.
    let estimate = help_of(&dir, &["estimate", "--help"]);
    assert!(estimate.contains("Exit codes:"), "{estimate}");
    for code in ["  0  ", "  2  ", "  3  API key rejected", "  6  "] {
        assert!(
            estimate.contains(code),
            "estimate lacks {code:?}:\n{estimate}"
        );
    }
    for code in ["  4  ", "  5  ", "every row written", "resume"] {
        assert!(
            !estimate.contains(code),
            "estimate has {code:?}:\n{estimate}"
        );
    }
    for command in [
        &["status"][..],
        &["cache"],
        &["cache", "clear"],
        &["completions"],
        &["man"],
        &["report"],
    ] {
        let help = help_of(&dir, &[command, &["--help"]].concat());
        assert!(!help.contains("Exit codes"), "{command:?}:\n{help}");
    }
}

#[test]
fn validate_estimate_and_inbox_help_show_examples() {
    let dir = Dir::new();
    let examples = |command: &str| {
        let help = help_of(&dir, &[command, "--help"]);
        let (_, examples) = help
            .split_once("\nExamples:\n")
            .unwrap_or_else(|| panic!("{command} has no examples:\n{help}"));
        examples.split("\n\n").next().unwrap().to_owned()
    };
    let validate = examples("validate");
    for shown in [
        "--sandbox",
        "--max-credits 500",
        "--split",
        "-o out.xlsx",
        "validate -",
    ] {
        assert!(validate.contains(shown), "lacks {shown:?}:\n{validate}");
    }
    let estimate = examples("estimate");
    assert!(
        estimate.contains("mailsift estimate leads.csv --sandbox"),
        "{estimate}"
    );
    let inbox = examples("inbox");
    assert!(inbox.contains("*/10 * * * *  mailsift inbox"), "{inbox}");
    assert!(inbox.contains("--once"), "{inbox}");
}

#[test]
fn an_unreachable_api_is_reported_not_hung_on() {
    let dir = Dir::new();
    // A port nothing listens on: connecting fails at once.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    dir.bare()
        .env("LEADMAGIC_API_KEY", "k")
        .args(["credits", "--base-url", &url])
        .assert()
        .code(6)
        .stderr(predicate::str::contains(format!(
            "cannot reach the API at {url}"
        )))
        .stderr(predicate::str::contains("cannot connect"));
}

/// `check`'s verdicts as JSON, and the mock's validation count after it.
fn check_json(dir: &Dir, mock: &Mock, args: &[&str]) -> Vec<Value> {
    let out = dir
        .mailsift(mock)
        .arg("check")
        .args(args)
        .arg("--json")
        .assert()
        .success();
    serde_json::from_slice(&out.get_output().stdout).unwrap()
}

#[test]
fn check_reads_and_fills_the_answer_cache_validate_uses() {
    let (mock, dir) = with_input("email\nvalid.jane@acme-corp.com\n");
    dir.ok(&mock, "validate in.csv -o out.csv -q");
    assert_eq!(mock.stats().validations, 1);
    // Validated a minute ago: not paid for again, whatever the case.
    let lines = check_json(&dir, &mock, &["VALID.JANE@acme-corp.com"]);
    assert_eq!(
        (lines[0]["status"].as_str(), lines[0]["source"].as_str()),
        (Some("valid"), Some("cache"))
    );
    assert_eq!(lines[0]["credits_consumed"], 0.0);
    assert_eq!(mock.stats().validations, 1);
    // --refresh asks again; another state directory has its own cache.
    check_json(&dir, &mock, &["valid.jane@acme-corp.com", "--refresh"]);
    assert_eq!(mock.stats().validations, 2);
    check_json(
        &dir,
        &mock,
        &["valid.jane@acme-corp.com", "--state-dir", "other"],
    );
    assert_eq!(mock.stats().validations, 3);

    // What check paid for, validate finds in the cache.
    check_json(&dir, &mock, &["valid.bob@acme-corp.com"]);
    assert_eq!(mock.stats().validations, 4);
    dir.write("two.csv", "email\nValid.Bob@acme-corp.com\n");
    dir.ok(&mock, "validate two.csv -o two.out.csv -q");
    assert_eq!(mock.stats().validations, 4);
    let rows = crate::util::rows(&dir.read("two.out.csv"));
    let source = rows[0].iter().position(|h| h == "source").unwrap();
    assert_eq!(
        rows[1].get(source).map(String::as_str),
        Some("cache"),
        "{rows:?}"
    );
}

#[test]
fn check_folds_unicode_case_like_validate() {
    let mock = Mock::fast();
    let dir = Dir::new();
    let lines = check_json(&dir, &mock, &["José@acme-corp.com", "JOSÉ@ACME-CORP.COM"]);
    assert_eq!(lines[1]["source"], "duplicate", "{lines:?}");
    assert_eq!(mock.stats().validations, 1);
}

#[test]
fn check_cuts_an_argument_holding_several_addresses_as_validate_cuts_a_cell() {
    let mock = Mock::fast();
    let dir = Dir::new();
    let lines = check_json(
        &dir,
        &mock,
        &[
            "valid.a@acme-corp.com; Bob <invalid.b@acme-corp.com>, valid.a@acme-corp.com",
            "valid.c@acme-corp.com|valid.a@acme-corp.com",
        ],
    );
    let got: Vec<(&str, &str, &str)> = lines
        .iter()
        .map(|l| {
            (
                l["normalized"].as_str().unwrap(),
                l["status"].as_str().unwrap(),
                l["source"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            ("valid.a@acme-corp.com", "valid", "api"),
            ("invalid.b@acme-corp.com", "invalid", "api"),
            ("valid.a@acme-corp.com", "valid", "duplicate"),
            ("valid.c@acme-corp.com", "valid", "api"),
            ("valid.a@acme-corp.com", "valid", "duplicate"),
        ]
    );
    let stats = mock.stats();
    assert_eq!(stats.validations, 3);
    assert_none_sent_twice(&stats, "check with several addresses per argument");
}

#[test]
fn estimate_with_a_rejected_key_prints_the_estimate_warns_and_exits_3() {
    let (mock, dir) = with_input("email\nvalid.jane@acme-corp.com\nnope\n");
    let out = dir
        .mailsift(&mock)
        .env("LEADMAGIC_API_KEY", "revoked-key")
        .args(["estimate", "in.csv"])
        .output()
        .unwrap();
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(
        stdout.contains("2 rows") && stdout.contains("1 requests to send"),
        "{stdout}"
    );
    assert!(stdout.contains("balance: unknown"), "{stdout}");
    assert!(stderr.contains("API key was rejected"), "{stderr}");
    assert!(!stderr.contains("revoked-key") && !stdout.contains("revoked-key"));
}

#[test]
fn a_reader_that_stops_early_is_not_an_error_for_any_command() {
    let (mock, dir) = with_input("email\nvalid.jane@acme-corp.com\n");
    dir.ok(&mock, "validate in.csv -o out.csv -q");
    let commands: &[&[&str]] = &[
        &["status"],
        &["status", "--json"],
        &["cache", "stats"],
        &["credits"],
        &["check", "valid.jane@acme-corp.com"],
        &["estimate", "in.csv"],
        &["validate", "in.csv", "-o", "-", "-q"],
        &["cache", "clear", "--older-than", "3650d"],
    ];
    for args in commands {
        // `| head -0`: the reading end is gone before the first byte is written.
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let out = std::process::Command::new(assert_cmd::cargo::cargo_bin("mailsift"))
            .current_dir(dir.tmp.path())
            .env("LEADMAGIC_BASE_URL", mock.url())
            .env("LEADMAGIC_API_KEY", "mock-key")
            .env("MAILSIFT_STATE_DIR", dir.state())
            .env("MAILSIFT_NOW", crate::util::NOW)
            .args(*args)
            .stdout(writer)
            .output()
            .unwrap();
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {stderr}");
        assert!(
            !stderr.to_lowercase().contains("broken pipe") && !stderr.contains("error"),
            "{args:?}: {stderr}"
        );
    }
}

#[test]
fn the_sandbox_keeps_its_made_up_answers_out_of_the_real_cache() {
    let (mock, dir) = with_input("email\nvalid.jane@acme-corp.com\n");
    dir.bare_run("--sandbox validate in.csv -o s.csv -q")
        .success();
    // The real run must ask the API: the sandbox's answer is not in its cache.
    dir.ok(&mock, "validate in.csv -o r.csv -q");
    assert_eq!(mock.stats().validations, 1);
}

#[test]
fn check_goes_without_the_cache_while_a_job_holds_the_state_directory() {
    let mock = Mock::fast();
    let dir = Dir::new();
    let held = dir.store();
    let out = dir.ok(&mock, "check valid.jane@acme-corp.com");
    let stderr = text(&out.get_output().stderr);
    assert!(
        stderr.contains("neither reads nor fills the answer cache") && stderr.contains("in use"),
        "{stderr}"
    );
    drop(held);
    assert!(dir.store().answers().next().is_none(), "nothing was cached");
}
