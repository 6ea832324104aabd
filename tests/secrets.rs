//! The API key never reaches disk, logs, reports or errors (issue 4): whole jobs with the most
//! verbose logging, faults, a rejected key and a key file, then every byte they left behind is
//! searched for the key.

use std::time::Duration;

use leadmagic_mock::{Latency, MockConfig};

use crate::util::{contacts, text, Dir, Mock};

/// Distinctive, so a hit cannot be a coincidence; the pieces catch a key cut by a log line.
const KEY: &str = "lmk-7Q2x9SECRETw4Zr8pV1nB6tY3hJ5";
const REVOKED: &str = "lmk-REVOKEDk3Jd8sQ2mX7vL1pW9zR4";

fn pieces(key: &str) -> Vec<&str> {
    vec![key, &key[4..16], &key[16..]]
}

fn assert_nowhere(what: &str, bytes: &[u8]) {
    for key in [KEY, REVOKED] {
        for piece in pieces(key) {
            assert!(
                !bytes.windows(piece.len()).any(|w| w == piece.as_bytes()),
                "{piece:?} found in {what}"
            );
        }
    }
}

#[test]
fn the_key_appears_nowhere_after_a_verbose_job_with_faults_a_rejected_key_and_a_key_file() {
    let mock = Mock::start(MockConfig {
        api_key: KEY.to_owned(),
        rate_per_min: 1_000_000,
        latency: Latency::Fixed(Duration::from_millis(1)),
        p_500: 0.04,
        p_reset: 0.02,
        p_truncated: 0.02,
        p_503: 0.02,
        seed: 5,
        ..MockConfig::default()
    });
    let dir = Dir::new();
    dir.write("in.csv", contacts(120));
    dir.write("key.txt", format!("{KEY}\n"));
    let mut outputs = Vec::new();
    // What runs, the key in its environment (none: it reads the key file), its command line.
    let runs: [(&str, Option<&str>, &str); 5] = [
        (
            "a whole job, key from the environment",
            Some(KEY),
            "-vvvv validate in.csv -o out.csv --report report.json --max-retries 8",
        ),
        (
            "a whole job, key from a file",
            None,
            "-vvvv --api-key-file key.txt validate in.csv -o again.csv --refresh \
             --report again.json --max-retries 8",
        ),
        ("credits", Some(KEY), "-vvvv credits --json"),
        (
            "check",
            Some(KEY),
            "-vvvv check valid.a@acme-corp.com b.c@acme-corp.com --json",
        ),
        (
            "a rejected key",
            Some(REVOKED),
            "-vvvv validate in.csv -o rejected.csv --refresh --report rejected.json",
        ),
    ];
    for (what, key, line) in runs {
        let mut cmd = dir.mailsift(&mock);
        match key {
            Some(key) => cmd.env("LEADMAGIC_API_KEY", key),
            None => cmd.env_remove("LEADMAGIC_API_KEY"),
        };
        let out = cmd.args(line.split_whitespace()).output().unwrap();
        assert!(
            !out.stderr.is_empty(),
            "{what}: -vvvv logs something to search"
        );
        assert_nowhere(&format!("{what}: stderr"), &out.stderr);
        assert_nowhere(&format!("{what}: stdout"), &out.stdout);
        outputs.push((what, out.status.code(), text(&out.stderr)));
    }
    let codes: Vec<Option<i32>> = outputs.iter().map(|(_, code, _)| *code).collect();
    assert_eq!(codes, [Some(0), Some(0), Some(0), Some(0), Some(3)]);
    // The verbose logs did show requests, retries and the rejection, just not the key.
    let all: String = outputs.iter().map(|(_, _, e)| e.as_str()).collect();
    assert!(all.contains("retry") && all.contains("X-API-Key"), "{all}");
    assert!(
        mock.stats().repeated.values().any(|n| *n > 1),
        "faults were retried"
    );

    // Every file left behind: outputs, reports, the state directory (sled's files, the lock).
    let mut searched = 0;
    for path in dir.files() {
        if path == dir.path("key.txt") {
            continue;
        }
        assert_nowhere(&path.display().to_string(), &std::fs::read(&path).unwrap());
        searched += 1;
    }
    assert!(
        dir.files().iter().any(|p| p.starts_with(dir.state())),
        "the state directory was searched"
    );
    assert!(searched >= 8, "{searched} files searched");
}
