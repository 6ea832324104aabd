//! The `leadmagic-mock` program that mailsift installs: one run of the real binary. The mock
//! server itself is tested in its own crate (leadmagic-mock/tests).

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use serde_json::Value;

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client builds")
}

#[test]
fn the_binary_serves_until_killed() {
    let mut child = Command::new(assert_cmd::cargo::cargo_bin("leadmagic-mock"))
        .args(["--port", "0", "--credits", "42"])
        .env("LEADMAGIC_MOCK_API_KEY", "bin-key")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("binary starts");
    let stdout = child.stdout.take().expect("piped stdout");
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .expect("reads the listening line");
    let url = line
        .trim_end()
        .strip_prefix("leadmagic-mock listening on ")
        .unwrap_or_else(|| panic!("unexpected line {line:?}"))
        .to_owned();
    assert!(url.starts_with("http://127.0.0.1:"), "{url}");

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let body: Value = runtime.block_on(async {
        client()
            .get(format!("{url}/v1/credits"))
            .header("X-API-Key", "bin-key")
            .send()
            .await
            .expect("answered")
            .json()
            .await
            .expect("json")
    });
    assert_eq!(body["credits"], 42.0);
    child.kill().expect("kills");
    child.wait().expect("reaped");
}
