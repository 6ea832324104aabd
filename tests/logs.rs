//! What the program says on stderr (issue 14, items 2 and 4): one message style for tracing
//! events too (`mailsift: warning: ...`, or JSON lines under `inbox --log-format json`), and
//! at `-vv` one line per request with its method, path, status, latency and retry number,
//! never the key, the address only at `-vvv`.

use leadmagic_mock::MockConfig;

use crate::util::{text, Dir, Mock};

/// Distinctive, so a hit cannot be a coincidence.
const KEY: &str = "lmk-LOGS3kd9Qz7SECRETm2Xv8Tp4";

fn mock(p_500: f64) -> Mock {
    Mock::start(MockConfig {
        api_key: KEY.to_owned(),
        rate_per_min: 600_000,
        p_500,
        seed: 7,
        ..MockConfig::default()
    })
}

const ADDRESSES: [&str; 6] = [
    "ann@acme-corp.com",
    "bob@acme-corp.com",
    "cy@initech.com",
    "dee@initech.com",
    "eve@globex.com",
    "fay@globex.com",
];

/// `validate` of [`ADDRESSES`] at the given verbosity; its stderr.
fn validate(mock: &Mock, verbosity: &str) -> String {
    let dir = Dir::new();
    dir.write("in.csv", format!("email\n{}\n", ADDRESSES.join("\n")));
    let out = dir
        .mailsift(mock)
        .env("LEADMAGIC_API_KEY", KEY)
        .args([
            verbosity,
            "validate",
            "in.csv",
            "-o",
            "out.csv",
            "--max-retries",
            "8",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    text(&out.stderr)
}

/// The request lines of a stderr: `key=value` fields after `mailsift: debug: `.
fn requests(stderr: &str) -> Vec<Vec<(String, String)>> {
    stderr
        .lines()
        .filter_map(|line| line.strip_prefix("mailsift: debug: "))
        .filter(|fields| fields.starts_with("method="))
        .map(|fields| {
            fields
                .split(' ')
                .map(|pair| {
                    let (k, v) = pair.split_once('=').expect("key=value");
                    (k.to_owned(), v.to_owned())
                })
                .collect()
        })
        .collect()
}

fn field<'a>(line: &'a [(String, String)], name: &str) -> Option<&'a str> {
    line.iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

#[test]
fn vv_logs_each_validation_request_without_the_address_or_the_key() {
    // Half the requests answer 500 (the same ones every run: the mock's draws are seeded by
    // address and attempt): retries are logged with their number.
    let mock = mock(0.5);
    let stderr = validate(&mock, "-vv");
    assert!(!stderr.contains(KEY), "the key in the log:\n{stderr}");
    for address in ADDRESSES {
        assert!(
            !stderr.contains(address),
            "{address} logged at -vv:\n{stderr}"
        );
    }
    // hyper's and reqwest's connection lines ("connecting to 127.0.0.1:PORT") wait for -vvvv.
    let host = mock.url().trim_start_matches("http://").to_owned();
    assert!(
        !stderr.contains(&host),
        "connection lines at -vv:\n{stderr}"
    );
    let validations: Vec<_> = requests(&stderr)
        .into_iter()
        .filter(|l| field(l, "path") == Some("/v1/people/email-validation"))
        .collect();
    assert_eq!(
        validations.len() as u64,
        mock.stats().validations,
        "one line per request the mock saw:\n{stderr}"
    );
    for line in &validations {
        assert_eq!(field(line, "method"), Some("POST"), "{line:?}");
        let status: u16 = field(line, "status").expect("status").parse().unwrap();
        assert!(status == 200 || status == 500, "{line:?}");
        field(line, "latency_ms")
            .expect("latency")
            .parse::<u64>()
            .unwrap();
        field(line, "retry").expect("retry").parse::<u32>().unwrap();
        assert_eq!(field(line, "address"), None);
    }
    let retried = validations
        .iter()
        .filter(|l| field(l, "retry") != Some("0"))
        .count();
    let failed = validations
        .iter()
        .filter(|l| field(l, "status") == Some("500"))
        .count();
    assert!(failed > 0, "seed 7 gives 500s:\n{stderr}");
    assert_eq!(
        retried, failed,
        "each 500 is followed by a retry:\n{stderr}"
    );
    assert_eq!(validations.len() - failed, ADDRESSES.len());
    assert!(validate(&mock, "-vvvv").contains(&host), "-vvvv shows them");
}

#[test]
fn vvv_adds_the_address_and_never_the_key() {
    let mock = mock(0.5);
    let stderr = validate(&mock, "-vvv");
    assert!(!stderr.contains(KEY), "the key in the log:\n{stderr}");
    let lines = requests(&stderr);
    // Each address's attempts are numbered 0, 1, 2, ... and only the last one got its 200.
    for address in ADDRESSES {
        let tries: Vec<_> = lines
            .iter()
            .filter(|l| field(l, "address") == Some(address))
            .collect();
        assert!(
            !tries.is_empty(),
            "{address} not in the -vvv lines:\n{stderr}"
        );
        for (n, line) in tries.iter().enumerate() {
            assert_eq!(
                field(line, "retry"),
                Some(n.to_string().as_str()),
                "{line:?}"
            );
            let last = n + 1 == tries.len();
            let want = if last { "200" } else { "500" };
            assert_eq!(field(line, "status"), Some(want), "{line:?}");
        }
    }
    assert!(
        lines.len() > ADDRESSES.len() + 1,
        "no retry at seed 7:\n{stderr}"
    );
}

#[test]
fn a_request_that_gets_no_answer_logs_the_transport_error_kind() {
    // A port nothing listens on: every attempt of the first contact fails to connect.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    let dir = Dir::new();
    let out = dir
        .bare()
        .env("LEADMAGIC_BASE_URL", &url)
        .env("LEADMAGIC_API_KEY", KEY)
        .args(["-vv", "credits"])
        .output()
        .unwrap();
    let stderr = text(&out.stderr);
    assert!(!out.status.success());
    let lines = requests(&stderr);
    assert!(!lines.is_empty(), "no request line:\n{stderr}");
    for line in &lines {
        assert_eq!(field(line, "path"), Some("/v1/credits"), "{line:?}");
        assert_eq!(field(line, "error"), Some("connect"), "{line:?}");
        assert_eq!(field(line, "status"), None, "{line:?}");
    }
    assert!(!stderr.contains(KEY));
}

#[cfg(unix)]
#[test]
fn tracing_warnings_read_as_the_programs_own_messages_or_as_json_lines() {
    use std::os::unix::fs::PermissionsExt;
    let mock = mock(0.0);
    let dir = Dir::new();
    let key = dir.write("key.txt", format!("{KEY}\n"));
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    dir.write("in.csv", "email\nann@acme-corp.com\n");

    // Runs with the key in a file others can read.
    let with_key_file = |line: &str| {
        dir.mailsift(&mock)
            .env_remove("LEADMAGIC_API_KEY")
            .args(["--api-key-file", "key.txt"])
            .args(line.split_whitespace())
            .output()
            .unwrap()
    };
    let out = with_key_file("validate in.csv -o out.csv");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stderr = text(&out.stderr);
    let warning = stderr
        .lines()
        .find(|l| l.contains("readable by other users"))
        .unwrap_or_else(|| panic!("no warning:\n{stderr}"));
    assert!(
        warning.starts_with("mailsift: warning: the API key file "),
        "not in the program's style: {warning:?}"
    );

    std::fs::create_dir(dir.path("in")).unwrap();
    dir.write("in/list.csv", "email\nbob@acme-corp.com\n");
    let out = with_key_file("-vv inbox in --out out --once --settle 0s --log-format json");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stderr = text(&out.stderr);
    assert!(!stderr.contains(KEY));
    let lines: Vec<serde_json::Value> = stderr
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: not JSON: {l:?}")))
        .collect();
    let warning = lines
        .iter()
        .find(|l| {
            l["message"]
                .as_str()
                .is_some_and(|m| m.contains("readable by other users"))
        })
        .unwrap_or_else(|| panic!("no JSON warning:\n{stderr}"));
    assert_eq!(warning["level"], "warning", "{warning}");
    let request = lines
        .iter()
        .find(|l| l["path"] == "/v1/people/email-validation")
        .unwrap_or_else(|| panic!("no JSON request line at -vv:\n{stderr}"));
    assert_eq!(request["method"], "POST");
    assert_eq!(request["status"], 200);
    assert_eq!(request["retry"], 0);
    assert!(request["latency_ms"].is_u64() && request.get("address").is_none());

    // The error that ends the program is a JSON line too.
    let out = dir
        .mailsift(&mock)
        .args([
            "inbox",
            "missing",
            "--out",
            "out",
            "--once",
            "--log-format",
            "json",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = text(&out.stderr);
    let line: serde_json::Value = serde_json::from_str(stderr.trim_end())
        .unwrap_or_else(|e| panic!("{e}: not one JSON line: {stderr:?}"));
    assert_eq!(line["level"], "error", "{line}");
    assert!(
        line["message"].as_str().unwrap().contains("missing"),
        "{line}"
    );
}
