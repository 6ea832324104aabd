//! What an install needs besides the binary: shell completions and manual pages, generated
//! from the same flag definitions the program parses, so they cannot drift from them.

use std::process::Command as Std;

use crate::util::{Dir, Printed};

/// Every command a user can type after `mailsift`.
const COMMANDS: [&str; 9] = [
    "credits",
    "check",
    "validate",
    "estimate",
    "inbox",
    "status",
    "cache",
    "completions",
    "man",
];

fn stdout_of(dir: &Dir, args: &[&str]) -> String {
    let out = dir.bare().args(args).assert().success().stderr("");
    String::from_utf8(out.get_output().stdout.clone()).unwrap()
}

#[test]
fn completions_name_every_command_and_flag_for_each_shell() {
    let dir = Dir::new();
    for shell in ["bash", "zsh", "fish", "powershell", "elvish"] {
        let script = stdout_of(&dir, &["completions", shell]);
        for word in COMMANDS.iter().chain(&["--max-credits", "--sandbox"]) {
            let word = if shell == "fish" {
                word.trim_start_matches("--")
            } else {
                word
            };
            assert!(script.contains(word), "{shell} completion lacks {word}");
        }
    }
    dir.bare_run("completions tcsh")
        .code(2)
        .stderr_has(&["bash"]);
}

#[test]
fn the_bash_completion_is_valid_bash_and_completes_commands() {
    let bash = which("bash").expect("bash, which the completion is for, on this machine");
    let dir = Dir::new();
    let script = dir.path("mailsift.bash");
    std::fs::write(&script, stdout_of(&dir, &["completions", "bash"])).unwrap();
    // Load it, then ask it what follows `mailsift val` as bash would on a Tab.
    let probe = format!(
        "source {}; COMP_WORDS=(mailsift val); COMP_CWORD=1; COMP_LINE='mailsift val'; \
         COMP_POINT=${{#COMP_LINE}}; _mailsift mailsift val mailsift; printf '%s\\n' \"${{COMPREPLY[@]}}\"",
        script.display()
    );
    let out = Std::new(bash).args(["-c", &probe]).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "validate");
}

#[test]
fn the_manual_pages_cover_every_command_its_flags_and_the_exit_codes() {
    let dir = Dir::new();
    let main = stdout_of(&dir, &["man"]);
    assert!(main.contains(".TH mailsift 1"));
    for command in COMMANDS {
        assert!(main.contains(command), "the main page lacks {command}");
    }
    assert!(
        main.contains("Exit codes"),
        "the main page lacks the exit codes"
    );

    let validate = stdout_of(&dir, &["man", "validate"]);
    assert!(validate.contains(".TH mailsift-validate 1"));
    for flag in ["max\\-credits", "split", "sandbox", "api\\-key\\-file"] {
        assert!(validate.contains(flag), "validate's page lacks --{flag}");
    }

    dir.bare_run("man frobnicate")
        .code(2)
        .stderr_has(&["frobnicate", "validate"]);
}

#[test]
fn completions_and_man_need_no_key_and_end_quietly_on_a_closed_pipe() {
    // The reading end is closed before the program starts, as after `| head -1` has read
    // its line: every write fails with a broken pipe.
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    for args in [&["man"][..], &["completions", "zsh"]] {
        let out = Std::new(assert_cmd::cargo::cargo_bin("mailsift"))
            .args(args)
            .env_remove("LEADMAGIC_API_KEY")
            .stdout(writer.try_clone().unwrap())
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0), "{args:?}");
        assert_eq!(String::from_utf8_lossy(&out.stderr), "", "{args:?}");
    }
}

fn which(name: &str) -> Result<std::path::PathBuf, ()> {
    std::env::var_os("PATH")
        .and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|dir| dir.join(name))
                .find(|path| path.is_file())
        })
        .ok_or(())
}
