//! Hostile servers (issue 11), written from outside, without the mock: one that redirects to
//! another port, one that records whatever reaches it, one that echoes the request headers
//! back, one that answers text a spreadsheet would run, and base URLs where nothing answers.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use serde_json::{json, Value};

use crate::util::{assert_lines_start, json as json_of, rows, text, Dir, Mock};

/// One request as it arrived.
#[derive(Debug, Clone)]
struct Request {
    method: String,
    path: String,
    /// The request line and headers, as sent.
    head: String,
    body: Vec<u8>,
}

/// A tiny HTTP/1.1 server on 127.0.0.1:0: one thread per connection, one request per
/// connection, every request recorded, answered by `respond` (an empty answer closes the
/// connection without a word).
struct Tiny {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Request>>>,
    accepted: Arc<AtomicUsize>,
}

type Respond = dyn Fn(&Request) -> Vec<u8> + Send + Sync;

impl Tiny {
    fn start(respond: impl Fn(&Request) -> Vec<u8> + Send + Sync + 'static) -> Tiny {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let accepted = Arc::new(AtomicUsize::new(0));
        let respond: Arc<Respond> = Arc::new(respond);
        let (seen2, accepted2) = (seen.clone(), accepted.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                accepted2.fetch_add(1, Ordering::SeqCst);
                let (seen, respond) = (seen2.clone(), respond.clone());
                std::thread::spawn(move || serve(stream, &seen, &*respond));
            }
        });
        Tiny {
            addr,
            seen,
            accepted,
        }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn requests(&self) -> Vec<Request> {
        self.seen.lock().unwrap().clone()
    }

    fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

fn serve(mut stream: TcpStream, seen: &Mutex<Vec<Request>>, respond: &Respond) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let length: usize = head
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse().ok())?
        })
        .unwrap_or(0);
    while buf.len() < head_end + length {
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    let mut words = head.split_whitespace();
    let request = Request {
        method: words.next().unwrap_or_default().to_owned(),
        path: words.next().unwrap_or_default().to_owned(),
        head: head.clone(),
        body: buf[head_end..head_end + length].to_vec(),
    };
    seen.lock().unwrap().push(request.clone());
    let answer = respond(&request);
    let _ = stream.write_all(&answer);
}

fn response(status: u16, headers: &[(&str, &str)], body: &str) -> Vec<u8> {
    let mut out = format!("HTTP/1.1 {status} X\r\nConnection: close\r\n");
    for (name, value) in headers {
        out.push_str(&format!("{name}: {value}\r\n"));
    }
    out.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    out.into_bytes()
}

fn ok_json(value: Value) -> Vec<u8> {
    response(
        200,
        &[("Content-Type", "application/json")],
        &value.to_string(),
    )
}

/// The address a validation request asked about.
fn email_of(request: &Request) -> String {
    serde_json::from_slice::<Value>(&request.body).unwrap_or_default()["email"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// Distinctive, so a hit cannot be a coincidence; the pieces catch a key cut short.
const KEY: &str = "lmk-9HostileSECRETq3Wv7Xc1Zp5Lm8";

fn assert_no_key(what: &str, bytes: &[u8]) {
    for piece in [KEY, &KEY[4..16], &KEY[16..]] {
        assert!(
            !bytes.windows(piece.len()).any(|w| w == piece.as_bytes()),
            "{piece:?} found in {what}: {}",
            text(bytes)
        );
    }
}

/// The binary pointed at `url` with the key.
fn at(dir: &Dir, url: &str) -> assert_cmd::Command {
    let mut cmd = dir.bare();
    cmd.env("LEADMAGIC_BASE_URL", url)
        .env("LEADMAGIC_API_KEY", KEY)
        .timeout(std::time::Duration::from_secs(90));
    cmd
}

/// Every command that sends the key, as argument lists.
fn every_command() -> Vec<Vec<&'static str>> {
    vec![
        vec!["credits"],
        vec!["check", "valid.jane@acme-corp.com"],
        vec![
            "validate",
            "in.csv",
            "-o",
            "out.csv",
            "--report",
            "r.json",
            "--max-retries",
            "0",
        ],
        vec!["estimate", "in.csv"],
    ]
}

#[test]
fn redirects_to_another_origin_are_refused_and_the_key_never_reaches_it() {
    // The third server: records whatever reaches it, and would answer like the API.
    let elsewhere = Tiny::start(|r| {
        if r.method == "GET" {
            ok_json(json!({"credits": 5}))
        } else {
            ok_json(json!({"email_status": "valid", "credits_consumed": 0.05}))
        }
    });
    let dir = Dir::new();
    dir.write(
        "in.csv",
        "email\nvalid.jane@acme-corp.com\nvalid.bob@acme-corp.com\n",
    );
    for status in [301, 302, 307, 308] {
        // Redirects everything to the same path on another port (another origin).
        let target = elsewhere.url();
        let redirector = Tiny::start(move |r| {
            let location = format!("{target}{}", r.path);
            response(status, &[("Location", &location)], "")
        });
        for args in every_command() {
            let out = at(&dir, &redirector.url()).args(&args).output().unwrap();
            let stderr = text(&out.stderr);
            assert_eq!(out.status.code(), Some(1), "{status} {args:?}: {stderr}");
            assert!(
                stderr.contains("redirect") && stderr.contains(&elsewhere.url()),
                "{status} {args:?}: {stderr}"
            );
            assert_no_key(&format!("{status} {args:?} stderr"), &out.stderr);
            assert!(!redirector.requests().is_empty(), "the base URL was asked");
        }
    }
    // The validation endpoint alone redirects, after a balance answered normally: the run
    // stops at the first refusal, resumable, and nothing went to the other origin.
    let target = elsewhere.url();
    let post_only = Tiny::start(move |r| match r.method.as_str() {
        "GET" => ok_json(json!({"credits": 100})),
        _ => response(307, &[("Location", &format!("{target}{}", r.path))], ""),
    });
    let out = at(&dir, &post_only.url())
        .args(every_command()[2].clone())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let report: Value = serde_json::from_slice(&dir.read("r.json")).unwrap();
    assert_eq!(report["outcome"], "redirect_refused");
    assert!(
        elsewhere.requests().is_empty(),
        "the other origin was reached: {:?}",
        elsewhere.requests()
    );
}

#[test]
fn a_redirect_within_the_origin_is_followed() {
    let server = Tiny::start(|r| match r.path.as_str() {
        "/v1/credits" => response(307, &[("Location", "/v2/credits")], ""),
        _ => ok_json(json!({"credits": 42})),
    });
    let dir = Dir::new();
    let out = at(&dir, &server.url()).arg("credits").output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "42 credits\n");
    let key_sent = server
        .requests()
        .iter()
        .filter(|r| r.head.contains(KEY))
        .count();
    assert_eq!(key_sent, 2, "the same origin gets the key both times");
}

/// Answers with the request echoed back: the whole head (key included) in a 500's body, a
/// 400's message, and a 200's `message` and MX fields.
fn echoing_server() -> Tiny {
    Tiny::start(|r| {
        let head = r.head.clone();
        if r.method == "GET" {
            return ok_json(json!({"credits": 100, "debug": head}));
        }
        let email = email_of(r);
        if email.starts_with("fail") {
            response(500, &[("Content-Type", "text/plain")], &head)
        } else if email.starts_with("bad") {
            let body = json!({"error": {"message": head}}).to_string();
            response(400, &[("Content-Type", "application/json")], &body)
        } else {
            // A debug page that cuts the key short, too.
            let cut = head.find(KEY).map(|at| &head[at..at + 14]).unwrap_or("");
            ok_json(json!({
                "email": email, "email_status": "valid", "credits_consumed": 0.05,
                "message": head, "mx_provider": cut, "mx_record": format!("{cut}.mx"),
                "company_name": head,
            }))
        }
    })
}

#[test]
fn text_echoed_by_a_server_is_scrubbed_of_the_key_everywhere() {
    let server = echoing_server();
    let dir = Dir::new();
    let mut input = String::from("email,name\n");
    for i in 0..12 {
        input.push_str(&format!("user{i}@acme-corp.com,n{i}\n"));
    }
    input.push_str("fail.one@acme-corp.com,f\nbad.one@acme-corp.com,b\n");
    dir.write("in.csv", &input);
    for args in [
        "-vvvv credits --json",
        "-vvvv check user0@acme-corp.com bad.two@acme-corp.com --json",
        "-vvvv validate in.csv -o out.csv --report r.json --max-retries 0 --columns all",
        "-vvvv estimate in.csv",
    ] {
        let out = at(&dir, &server.url())
            .args(args.split_whitespace())
            .output()
            .unwrap();
        assert_eq!(
            out.status.code(),
            Some(0),
            "{args:?}: {}",
            text(&out.stderr)
        );
        assert_no_key(&format!("{args:?} stdout"), &out.stdout);
        assert_no_key(&format!("{args:?} stderr"), &out.stderr);
    }
    // The server did echo the key: what was written shows where it was taken out.
    assert!(server.requests().iter().all(|r| r.head.contains(KEY)));
    let output = dir.read("out.csv");
    let rows = rows(&output);
    let column = |name: &str| rows[0].iter().position(|h| h == name).unwrap();
    let by_email: HashMap<&str, &Vec<String>> =
        rows[1..].iter().map(|r| (r[0].as_str(), r)).collect();
    let message = column("email_message");
    for email in [
        "user0@acme-corp.com",
        "fail.one@acme-corp.com",
        "bad.one@acme-corp.com",
    ] {
        let cell = &by_email[email][message];
        assert!(cell.contains("[redacted]"), "{email}: {cell}");
    }
    assert_eq!(
        by_email["fail.one@acme-corp.com"][column("email_status")],
        "error"
    );
    assert_eq!(
        by_email["user0@acme-corp.com"][column("mx_provider")],
        "[redacted]"
    );
    for path in dir.files() {
        assert_no_key(&path.display().to_string(), &std::fs::read(&path).unwrap());
    }
    assert!(dir.files().iter().any(|p| p.starts_with(dir.state())));
}

#[test]
fn api_text_that_a_spreadsheet_would_run_is_neutralised_unless_raw_fields() {
    let server = Tiny::start(|r| {
        if r.method == "GET" {
            return ok_json(json!({"credits": 100}));
        }
        ok_json(json!({
            "email": email_of(r), "email_status": "valid", "credits_consumed": 0.05,
            "message": "=HYPERLINK(\"http://evil.example\",\"click\")",
            "mx_provider": "+cmd|' /C calc'!A0", "mx_record": "-2+3",
            "company_name": "@SUM(1+1)", "company_industry": "=1+1",
            "company_size": "Plain", "company_location": {"name": "-x"},
        }))
    });
    let dir = Dir::new();
    // Input fields that look like formulas are the user's own: they stay byte-exact.
    let input = "email,name\r\nuser1@acme-corp.com,=1+1\r\nuser2@acme-corp.com,\"@x, y\"\r\n";
    dir.write("in.csv", input);
    let run = |out: &str, extra: &[&str]| {
        let o = at(&dir, &server.url())
            .args(["validate", "in.csv", "-o", out, "--columns", "all", "-q"])
            .args(extra)
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
        dir.read(out)
    };
    let safe = run("safe.csv", &[]);
    let safe_rows = rows(&safe);
    let header = safe_rows[0].clone();
    let cell =
        |row: &[String], name: &str| row[header.iter().position(|h| h == name).unwrap()].clone();
    for row in &safe_rows[1..] {
        assert_eq!(
            cell(row, "email_message"),
            "'=HYPERLINK(\"http://evil.example\",\"click\")"
        );
        assert_eq!(cell(row, "mx_provider"), "'+cmd|' /C calc'!A0");
        assert_eq!(cell(row, "mx_record"), "'-2+3");
        assert_eq!(cell(row, "company_name"), "'@SUM(1+1)");
        assert_eq!(cell(row, "company_industry"), "'=1+1");
        assert_eq!(cell(row, "company_size"), "Plain");
        assert_eq!(cell(row, "company_location"), "'-x");
        assert_eq!(cell(row, "email_status"), "valid");
    }
    assert_lines_start(
        &safe,
        &[
            (1, "user1@acme-corp.com,=1+1,"),
            (2, "user2@acme-corp.com,\"@x, y\","),
        ],
    );

    let raw = rows(&run("raw.csv", &["--raw-fields"]));
    assert_eq!(
        cell(&raw[1], "email_message"),
        "=HYPERLINK(\"http://evil.example\",\"click\")"
    );
    assert_eq!(cell(&raw[1], "mx_record"), "-2+3");
}

#[test]
fn a_base_url_that_never_answered_fails_fast_with_exit_6_naming_it() {
    let dir = Dir::new();
    dir.write("in.csv", crate::util::contacts(300));
    // A listener that takes every connection and closes it without a word: each attempt is
    // counted. Before issue 11, 256 workers retried for minutes (1,290-1,536 connections).
    let silent = Tiny::start(|_| Vec::new());
    let stderr = ends_unavailable(&dir, &silent.url());
    assert!(
        stderr.contains(&format!("cannot reach the API at {}", silent.url())),
        "{stderr}"
    );
    assert!(silent.accepted() <= 5, "{} connections", silent.accepted());
    assert!(!dir.path("out.csv").exists() && !dir.path("out.csv.partial").exists());

    // A closed port, for every command that talks to the API.
    let closed = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    for args in every_command() {
        let out = at(&dir, &url).args(&args).output().unwrap();
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(6), "{args:?}: {stderr}");
        assert!(
            stderr.contains(&format!("cannot reach the API at {url}")),
            "{args:?}: {stderr}"
        );
    }
}

/// A 300-row job with 256 workers against `url`, which must end with exit 6: its stderr.
fn ends_unavailable(dir: &Dir, url: &str) -> String {
    let out = at(dir, url)
        .args("validate in.csv -o out.csv --concurrency 256".split_whitespace())
        .output()
        .unwrap();
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(6), "{stderr}");
    stderr
}

#[test]
fn a_gateway_whose_api_never_answered_fails_fast_too() {
    let gateway = Tiny::start(|_| {
        response(
            502,
            &[("Content-Type", "text/html")],
            "<h1>502 Bad Gateway</h1>",
        )
    });
    let dir = Dir::new();
    dir.write("in.csv", crate::util::contacts(300));
    let stderr = ends_unavailable(&dir, &gateway.url());
    assert!(
        stderr.contains("HTTP 502") && stderr.contains(&gateway.url()),
        "{stderr}"
    );
    assert_eq!(gateway.requests().len(), 5, "only the balance, 5 times");
    assert!(gateway.requests().iter().all(|r| r.method == "GET"));
}

#[test]
fn daily_quota_left_is_null_when_the_server_never_sent_it() {
    let quiet = Tiny::start(|r| match r.method.as_str() {
        "GET" => ok_json(json!({"credits": 100})),
        _ => ok_json(json!({"email_status": "valid", "credits_consumed": 0.05})),
    });
    let dir = Dir::new();
    dir.write("in.csv", "email\nuser1@acme-corp.com\n");
    let out = at(&dir, &quiet.url())
        .args(["validate", "in.csv", "-o", "a.csv", "--report", "a.json"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let report = json_of(&dir.read("a.json"));
    assert!(report["daily_quota_left"].is_null(), "{report}");

    // The mock sends the header: the report carries its value.
    let mock = Mock::fast();
    dir.ok(&mock, "validate in.csv -o b.csv --report b.json --refresh");
    let report = json_of(&dir.read("b.json"));
    assert!(report["daily_quota_left"].as_u64().is_some(), "{report}");
}
