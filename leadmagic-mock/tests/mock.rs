//! The LeadMagic mock server, driven in-process over real sockets with `reqwest` (and raw TCP
//! where the bytes matter).

use std::time::Duration;

use leadmagic_mock::{verdict_for, Latency, MockConfig, MockServer, Stats, Verdict};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const KEY: &str = "mock-key";
const VALIDATE: &str = "/v1/people/email-validation";

/// Headers every response must carry, whatever its status.
const METER_HEADERS: &[&str] = &[
    "ratelimit-limit",
    "ratelimit-remaining",
    "ratelimit-reset",
    "x-ratelimit-limit",
    "x-ratelimit-remaining",
    "x-ratelimit-reset",
    "x-ratelimit-remaining-daily",
    "x-ratelimit-daily-usage-percent",
    "x-ratelimit-soft-mode",
    "x-credits-remaining",
    "x-credits-cost",
    "content-type",
    "content-length",
];

async fn start(config: MockConfig) -> MockServer {
    MockServer::start(config).await.expect("mock starts")
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client builds")
}

async fn validate(server: &MockServer, email: &str) -> reqwest::Response {
    client()
        .post(format!("{}{VALIDATE}", server.url()))
        .header("X-API-Key", KEY)
        .json(&json!({ "email": email }))
        .send()
        .await
        .expect("request is answered")
}

fn header<'a>(resp: &'a reqwest::Response, name: &str) -> &'a str {
    resp.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_else(|| panic!("missing header {name}"))
}

fn assert_metered(resp: &reqwest::Response) {
    for name in METER_HEADERS {
        assert!(
            resp.headers().contains_key(*name),
            "{} lacks {name}",
            resp.status()
        );
    }
}

/// Sends raw bytes on a fresh connection and reads until the server closes it.
async fn raw(server: &MockServer, request: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut stream = TcpStream::connect(server.addr()).await?;
    stream.write_all(request).await?;
    let mut out = Vec::new();
    stream.read_to_end(&mut out).await?;
    Ok(out)
}

/// Status, lower-cased headers and body of a raw response.
fn parse_raw(bytes: &[u8]) -> (u16, Vec<(String, String)>, Vec<u8>) {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut resp = httparse::Response::new(&mut headers);
    let head_len = match resp.parse(bytes) {
        Ok(httparse::Status::Complete(n)) => n,
        other => panic!("not a response head: {other:?}"),
    };
    let headers = resp
        .headers
        .iter()
        .map(|h| {
            (
                h.name.to_ascii_lowercase(),
                String::from_utf8_lossy(h.value).into_owned(),
            )
        })
        .collect();
    (resp.code.unwrap_or(0), headers, bytes[head_len..].to_vec())
}

fn raw_header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

fn post(path: &str, headers: &str, body: &str) -> Vec<u8> {
    format!(
        "POST {path} HTTP/1.1\r\nHost: x\r\n{headers}Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

#[tokio::test]
async fn auth_accepts_both_header_forms_and_rejects_the_rest() {
    let server = start(MockConfig::default()).await;
    let url = format!("{}/v1/credits", server.url());
    let c = client();
    // (header name, header value, expected status)
    let cases: &[(Option<(&str, &str)>, u16)] = &[
        (Some(("X-API-Key", KEY)), 200),
        (Some(("x-api-key", KEY)), 200),
        (Some(("Authorization", "Bearer mock-key")), 200),
        (Some(("X-API-Key", "wrong")), 401),
        (Some(("Authorization", "Bearer wrong")), 401),
        (Some(("Authorization", "mock-key")), 401),
        (None, 401),
    ];
    for (hdr, want) in cases {
        let mut req = c.get(&url);
        if let Some((name, value)) = hdr {
            req = req.header(*name, *value);
        }
        let resp = req.send().await.expect("answered");
        assert_eq!(resp.status().as_u16(), *want, "{hdr:?}");
        assert_metered(&resp);
        if *want == 401 {
            let body: Value = resp.json().await.expect("json");
            assert_eq!(
                body,
                json!({"error": {"code": "UNAUTHORIZED", "message": "Invalid or missing API key", "status": 401}})
            );
        }
    }
    // The validation endpoint checks the key too, before anything else.
    let resp = c
        .post(format!("{}{VALIDATE}", server.url()))
        .json(&json!({"email": "valid@x.com"}))
        .send()
        .await
        .expect("answered");
    assert_eq!(resp.status(), 401);
    assert_eq!(server.stats().credits_charged, 0.0);
    server.shutdown().await;
}

#[tokio::test]
async fn unknown_paths_404_and_wrong_methods_405() {
    let server = start(MockConfig::default()).await;
    let c = client();
    let base = server.url();
    let cases: &[(reqwest::Method, &str, u16, Option<&str>)] = &[
        (reqwest::Method::GET, "/nope", 404, None),
        (reqwest::Method::POST, "/v1/credit", 404, None),
        (reqwest::Method::GET, VALIDATE, 405, Some("POST")),
        (reqwest::Method::PUT, VALIDATE, 405, Some("POST")),
        (reqwest::Method::POST, "/v1/credits", 405, Some("GET")),
        (reqwest::Method::GET, "/__mock/reset", 405, Some("POST")),
    ];
    for (method, path, want, allow) in cases {
        let resp = c
            .request(method.clone(), format!("{base}{path}"))
            .header("X-API-Key", KEY)
            .send()
            .await
            .expect("answered");
        assert_eq!(resp.status().as_u16(), *want, "{method} {path}");
        assert_metered(&resp);
        assert_eq!(
            resp.headers().get("allow").and_then(|v| v.to_str().ok()),
            *allow
        );
        let body: Value = resp.json().await.expect("json");
        assert_eq!(body["error"]["status"], *want);
        assert!(body["error"]["code"].is_string());
    }
    server.shutdown().await;
}

#[tokio::test]
async fn credits_endpoint_reports_the_balance_for_free() {
    let server = start(MockConfig {
        credits: 15432.5,
        ..MockConfig::default()
    })
    .await;
    let c = client();
    for _ in 0..2 {
        let resp = c
            .get(format!("{}/v1/credits", server.url()))
            .header("X-API-Key", KEY)
            .send()
            .await
            .expect("answered");
        assert_eq!(resp.status(), 200);
        assert_eq!(header(&resp, "content-type"), "application/json");
        assert_eq!(header(&resp, "x-credits-remaining"), "15432.50");
        assert_eq!(header(&resp, "x-credits-cost"), "0");
        let body: Value = resp.json().await.expect("json");
        assert_eq!(
            body,
            json!({"credits": 15432.5, "is_frozen": false, "credits_frozen": 0,
                   "credits_liquid": 15432.5, "credit_freeze_message": null,
                   "credit_freeze_plan_hint": null})
        );
    }
    assert_eq!(server.stats().balance, 15432.5);
    server.shutdown().await;
}

#[tokio::test]
async fn every_verdict_pattern() {
    let server = start(MockConfig::default()).await;
    // (address, status, email_status, charged)
    let cases: &[(&str, u16, Option<&str>, f64)] = &[
        ("valid@acme.io", 200, Some("valid"), 0.05),
        ("vcatchall@acme.io", 200, Some("valid_catch_all"), 0.05),
        ("invalid@acme.io", 200, Some("invalid"), 0.05),
        ("catchall@acme.io", 200, Some("catch_all"), 0.0),
        ("anybody@catchall.test", 200, Some("catch_all"), 0.0),
        ("unknown@acme.io", 200, Some("unknown"), 0.0),
        ("no-at-sign", 200, Some("invalid"), 0.05),
        ("  Max@Acme.IO ", 200, Some("invalid"), 0.05),
        ("niaj@acme.io", 200, Some("unknown"), 0.0),
        ("reject@acme.io", 400, None, 0.0),
        ("fail@acme.io", 500, None, 0.0),
    ];
    let mut charged = 0.0;
    for (address, status, email_status, cost) in cases {
        let resp = validate(&server, address).await;
        assert_eq!(resp.status().as_u16(), *status, "{address}");
        assert_metered(&resp);
        assert_eq!(
            header(&resp, "x-credits-cost").parse::<f64>().ok(),
            Some(*cost)
        );
        let body: Value = resp.json().await.expect("json body");
        charged += cost;
        match email_status {
            Some(s) => {
                assert_eq!(body["email_status"], *s, "{address}");
                assert_eq!(body["email"], *address, "echoed as sent");
                assert_eq!(body["credits_consumed"].as_f64(), Some(*cost));
                assert_eq!(body["_mock"], true);
                assert!(body["message"].is_string());
                assert!(body["is_domain_catch_all"].is_boolean());
                let status = verdict_for(address).email_status();
                assert_eq!(status, Some(*s), "verdict_for agrees");
            }
            None if *status == 400 => {
                assert_eq!(body["success"], false);
                let error = &body["errors"][0];
                assert_eq!(error["code"], "validation_error");
                assert_eq!(error["status"], 400);
                assert!(error["detail"].as_str().unwrap_or("").contains(address));
                assert!(body["meta"]["request_id"].is_string());
                assert!(body["meta"]["timestamp"].is_string());
            }
            None => assert_eq!(body["error"]["status"], 500),
        }
    }
    let stats = server.stats();
    assert!((stats.credits_charged - charged).abs() < 1e-9);
    assert_eq!(stats.answered, 9);
    assert_eq!(verdict_for("fail@acme.io"), Verdict::Fail);
    server.shutdown().await;
}

#[tokio::test]
async fn malformed_requests_get_the_errors_array_shape() {
    let server = start(MockConfig::default()).await;
    let c = client();
    let bodies = ["not json", r#"{"email": 5}"#, r#"{"first_name": "A"}"#, ""];
    for body in bodies {
        let resp = c
            .post(format!("{}{VALIDATE}", server.url()))
            .header("X-API-Key", KEY)
            .header("Content-Type", "application/json")
            .body(body)
            .send()
            .await
            .expect("answered");
        assert_eq!(resp.status(), 400, "{body:?}");
        assert_metered(&resp);
        let json: Value = resp.json().await.expect("json");
        assert_eq!(json["success"], false);
        assert_eq!(
            json["errors"][0]["type"],
            "https://api.leadmagic.io/errors/validation_error"
        );
        assert_eq!(json["errors"][0]["code"], "validation_error");
    }
    let stats = server.stats();
    assert_eq!(stats.validations, 4);
    assert_eq!(stats.unique_addresses, 0);
    server.shutdown().await;
}

#[tokio::test]
async fn charging_free_statuses_and_running_out() {
    let server = start(MockConfig {
        credits: 0.1,
        ..MockConfig::default()
    })
    .await;
    // (address, expected status, balance after)
    let steps: &[(&str, u16, &str)] = &[
        ("catchall@a.io", 200, "0.10"),
        ("valid1@a.io", 200, "0.05"),
        ("unknown@a.io", 200, "0.05"),
        ("valid2@a.io", 200, "0.00"),
        // Short of credits: every validation is refused, free ones too.
        ("valid3@a.io", 402, "0.00"),
        ("catchall2@a.io", 402, "0.00"),
    ];
    for (address, status, balance) in steps {
        let resp = validate(&server, address).await;
        assert_eq!(resp.status().as_u16(), *status, "{address}");
        assert_eq!(header(&resp, "x-credits-remaining"), *balance, "{address}");
        if *status == 402 {
            assert_eq!(header(&resp, "x-credits-cost"), "0");
            let body: Value = resp.json().await.expect("json");
            assert_eq!(
                body,
                json!({"error": {"code": "INSUFFICIENT_CREDITS",
                    "message": "Insufficient credits. Top up to continue.", "status": 402}})
            );
        }
    }
    server.set_credits(1.0);
    let resp = validate(&server, "valid3@a.io").await;
    assert_eq!(resp.status(), 200);
    assert_eq!(header(&resp, "x-credits-remaining"), "0.95");
    let stats = server.stats();
    assert!((stats.credits_charged - 0.15).abs() < 1e-9);
    assert_eq!(stats.by_status.get(&402), Some(&2));
    server.shutdown().await;
}

#[tokio::test]
async fn hard_limit_answers_429_with_retry_after_seconds() {
    let server = start(MockConfig {
        rate_per_min: 2,
        hard_limit: true,
        ..MockConfig::default()
    })
    .await;
    for address in ["valid1@a.io", "valid2@a.io"] {
        let resp = validate(&server, address).await;
        assert_eq!(resp.status(), 200);
        assert_eq!(header(&resp, "x-ratelimit-soft-mode"), "false");
    }
    let resp = validate(&server, "valid3@a.io").await;
    assert_eq!(resp.status(), 429);
    assert_metered(&resp);
    assert_eq!(header(&resp, "ratelimit-remaining"), "0");
    assert_eq!(header(&resp, "x-credits-cost"), "0");
    let secs: u64 = header(&resp, "retry-after").parse().expect("delta-seconds");
    assert!((1..=60).contains(&secs), "{secs}");
    let body: Value = resp.json().await.expect("json");
    assert_eq!(body["error"], "Too Many Requests");
    assert!(body["message"].is_string());
    let stats = server.stats();
    assert_eq!(stats.rate_limited, 1);
    assert_eq!(stats.per_address.as_ref().map(|m| m.len()), Some(3));
    assert!((stats.credits_charged - 0.10).abs() < 1e-9, "429 is free");
    server.shutdown().await;
}

#[tokio::test]
async fn hard_limit_retry_after_as_http_date() {
    let server = start(MockConfig {
        rate_per_min: 2,
        hard_limit: true,
        retry_after_date: true,
        ..MockConfig::default()
    })
    .await;
    let mut statuses = Vec::new();
    for i in 0..3 {
        let resp = validate(&server, &format!("valid{i}@a.io")).await;
        statuses.push(resp.status().as_u16());
        if resp.status() == 429 {
            let date = header(&resp, "retry-after");
            assert!(httpdate::parse_http_date(date).is_ok(), "{date}");
        }
    }
    assert_eq!(statuses, [200, 200, 429]);
    server.shutdown().await;
}

#[tokio::test]
async fn soft_mode_counts_but_never_refuses() {
    let server = start(MockConfig {
        rate_per_min: 2,
        advertise_limit: Some(1),
        ..MockConfig::default()
    })
    .await;
    for i in 0..4 {
        let resp = validate(&server, &format!("valid{i}@a.io")).await;
        assert_eq!(resp.status(), 200);
        assert_eq!(header(&resp, "x-ratelimit-soft-mode"), "true");
        assert_eq!(header(&resp, "ratelimit-limit"), "1", "advertised limit");
        assert_eq!(header(&resp, "ratelimit-remaining"), "0");
    }
    let stats = server.stats();
    assert_eq!((stats.rate_limited, stats.max_in_window_60s), (0, 4));
    server.shutdown().await;
}

#[tokio::test]
async fn headers_on_every_kind_of_response() {
    let server = start(MockConfig {
        credits: 0.0,
        ..MockConfig::default()
    })
    .await;
    let c = client();
    let base = server.url();
    let requests = [
        c.get(format!("{base}/v1/credits")).header("X-API-Key", KEY),
        c.get(format!("{base}/v1/credits")),
        c.post(format!("{base}{VALIDATE}"))
            .header("X-API-Key", KEY)
            .json(&json!({"email": "valid@a.io"})),
        c.get(format!("{base}/__mock/stats")),
        c.post(format!("{base}/__mock/reset")),
        c.get(format!("{base}/missing")),
        // A real oversized body: the 413 must arrive intact, not as a reset.
        c.post(format!("{base}{VALIDATE}"))
            .header("X-API-Key", KEY)
            .body(vec![b' '; 100 * 1024]),
    ];
    for req in requests {
        let resp = req.send().await.expect("answered");
        assert_metered(&resp);
    }
    // Protocol errors too, through raw sockets.
    let big_head = format!("GET / HTTP/1.1\r\nX-Big: {}\r\n\r\n", "a".repeat(20 * 1024));
    let big_body = format!(
        "POST {VALIDATE} HTTP/1.1\r\nContent-Length: {}\r\n\r\n",
        100 * 1024
    );
    let chunked = format!(
        "POST {VALIDATE} HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
    );
    let cases: [(&[u8], u16); 3] = [
        (big_head.as_bytes(), 431),
        (big_body.as_bytes(), 413),
        (chunked.as_bytes(), 411),
    ];
    for (request, want) in cases {
        let bytes = raw(&server, request).await.expect("answered before close");
        let (status, headers, _) = parse_raw(&bytes);
        assert_eq!(status, want);
        assert_eq!(raw_header(&headers, "connection"), Some("close"));
        for name in METER_HEADERS {
            assert!(raw_header(&headers, name).is_some(), "{want} lacks {name}");
        }
    }
    server.shutdown().await;
}

#[tokio::test]
async fn keep_alive_and_connection_close() {
    let server = start(MockConfig::default()).await;
    let mut stream = TcpStream::connect(server.addr()).await.expect("connects");
    let body = r#"{"email":"valid@a.io"}"#;
    let mut buf = Vec::new();
    for _ in 0..3 {
        stream
            .write_all(&post(VALIDATE, "X-API-Key: mock-key\r\n", body))
            .await
            .expect("writes");
        // Read exactly one response: the head, then Content-Length bytes.
        buf.clear();
        let mut chunk = [0u8; 4096];
        loop {
            let n = stream.read(&mut chunk).await.expect("reads");
            assert!(n > 0, "server closed a keep-alive connection");
            buf.extend_from_slice(&chunk[..n]);
            let mut headers = [httparse::EMPTY_HEADER; 64];
            let mut resp = httparse::Response::new(&mut headers);
            if let Ok(httparse::Status::Complete(head)) = resp.parse(&buf) {
                let len: usize = resp
                    .headers
                    .iter()
                    .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                    .and_then(|h| std::str::from_utf8(h.value).ok()?.parse().ok())
                    .expect("content-length");
                if buf.len() >= head + len {
                    assert_eq!(resp.code, Some(200));
                    break;
                }
            }
        }
    }
    // Connection: close is honoured: the server closes after answering.
    stream
        .write_all(&post(
            VALIDATE,
            "X-API-Key: mock-key\r\nConnection: close\r\n",
            body,
        ))
        .await
        .expect("writes");
    let mut rest = Vec::new();
    stream.read_to_end(&mut rest).await.expect("reads to close");
    let (status, headers, _) = parse_raw(&rest);
    assert_eq!(status, 200);
    assert_eq!(raw_header(&headers, "connection"), Some("close"));
    assert_eq!(
        server
            .stats()
            .per_address
            .unwrap_or_default()
            .get("valid@a.io"),
        Some(&4)
    );
    server.shutdown().await;
}

#[tokio::test]
async fn expect_100_continue_gets_a_go_ahead() {
    let server = start(MockConfig::default()).await;
    let mut stream = TcpStream::connect(server.addr()).await.expect("connects");
    let body = r#"{"email":"valid@a.io"}"#;
    let head = format!(
        "POST {VALIDATE} HTTP/1.1\r\nX-API-Key: mock-key\r\nExpect: 100-continue\r\n\
         Connection: close\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.expect("writes");
    let go_ahead = b"HTTP/1.1 100 Continue\r\n\r\n";
    let mut interim = vec![0u8; go_ahead.len()];
    stream
        .read_exact(&mut interim)
        .await
        .expect("interim response");
    assert_eq!(interim, go_ahead);
    stream
        .write_all(body.as_bytes())
        .await
        .expect("writes body");
    let mut rest = Vec::new();
    stream.read_to_end(&mut rest).await.expect("reads");
    assert_eq!(parse_raw(&rest).0, 200);
    server.shutdown().await;
}

#[tokio::test]
async fn fault_500_and_html_gateway_errors() {
    let server = start(MockConfig {
        p_500: 1.0,
        ..MockConfig::default()
    })
    .await;
    let resp = validate(&server, "valid@a.io").await;
    assert_eq!(resp.status(), 500);
    assert_metered(&resp);
    let body: Value = resp.json().await.expect("json");
    assert_eq!(body["error"]["status"], 500);
    server.shutdown().await;

    let server = start(MockConfig {
        p_503: 1.0,
        ..MockConfig::default()
    })
    .await;
    let mut statuses = Vec::new();
    for _ in 0..4 {
        let resp = validate(&server, "valid@a.io").await;
        statuses.push(resp.status().as_u16());
        assert!(header(&resp, "content-type").starts_with("text/html"));
        assert_eq!(header(&resp, "x-credits-cost"), "0");
        let text = resp.text().await.expect("body");
        assert!(text.contains("<html>"), "{text}");
    }
    assert_eq!(statuses, [502, 503, 502, 503], "alternating per attempt");
    assert_eq!(server.stats().credits_charged, 0.0);
    server.shutdown().await;
}

#[tokio::test]
async fn fault_reset_aborts_the_connection() {
    let server = start(MockConfig {
        p_reset: 1.0,
        ..MockConfig::default()
    })
    .await;
    let request = post(
        VALIDATE,
        "X-API-Key: mock-key\r\n",
        r#"{"email":"valid@a.io"}"#,
    );
    let err = raw(&server, &request)
        .await
        .expect_err("no response, a reset");
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionReset);
    let err = client()
        .post(format!("{}{VALIDATE}", server.url()))
        .header("X-API-Key", KEY)
        .json(&json!({"email": "valid@a.io"}))
        .send()
        .await
        .expect_err("reqwest sees an error");
    assert!(err.is_request() || err.is_connect(), "{err:?}");
    let stats = server.stats();
    assert_eq!((stats.resets, stats.credits_charged), (2, 0.0));
    assert!(stats.by_status.is_empty());
    server.shutdown().await;
}

#[tokio::test]
async fn fault_truncated_charges_and_cuts_the_body() {
    let server = start(MockConfig {
        p_truncated: 1.0,
        ..MockConfig::default()
    })
    .await;
    let request = post(
        VALIDATE,
        "X-API-Key: mock-key\r\n",
        r#"{"email":"valid@a.io"}"#,
    );
    let bytes = raw(&server, &request).await.expect("head and half a body");
    let (status, headers, body) = parse_raw(&bytes);
    assert_eq!(status, 200);
    let promised: usize = raw_header(&headers, "content-length")
        .and_then(|v| v.parse().ok())
        .expect("content-length");
    assert_eq!(body.len(), promised / 2);
    let resp = validate(&server, "valid@b.io").await;
    assert_eq!(resp.status(), 200);
    assert!(resp.bytes().await.is_err(), "the body is cut short");
    let stats = server.stats();
    assert_eq!(stats.truncated, 2);
    assert!(
        (stats.credits_charged - 0.10).abs() < 1e-9,
        "charged anyway"
    );
    server.shutdown().await;
}

// tokio's `test-util` feature (paused time) is not enabled in this crate, so these two tests
// use short real durations; they only assert lower bounds that a sleep guarantees.
#[tokio::test]
async fn fault_hang_times_the_client_out_then_closes() {
    let server = start(MockConfig {
        p_hang: 1.0,
        hang: Duration::from_millis(300),
        ..MockConfig::default()
    })
    .await;
    // A client timeout shorter than the hang: the client gives up.
    let short = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_millis(50))
        .build()
        .expect("client");
    let err = short
        .post(format!("{}{VALIDATE}", server.url()))
        .header("X-API-Key", KEY)
        .json(&json!({"email": "valid@a.io"}))
        .send()
        .await
        .expect_err("no answer");
    assert!(err.is_timeout(), "{err:?}");
    // Without a client timeout the server closes after `hang`, answering nothing.
    let started = tokio::time::Instant::now();
    let request = post(
        VALIDATE,
        "X-API-Key: mock-key\r\n",
        r#"{"email":"valid@b.io"}"#,
    );
    let bytes = raw(&server, &request).await.expect("closed, not reset");
    assert!(bytes.is_empty());
    assert!(started.elapsed() >= Duration::from_millis(300));
    let stats = server.stats();
    assert_eq!((stats.hangs, stats.credits_charged), (2, 0.0));
    server.shutdown().await;
}

#[tokio::test]
async fn latency_delays_the_answer() {
    let server = start(MockConfig {
        latency: Latency::Fixed(Duration::from_millis(50)),
        ..MockConfig::default()
    })
    .await;
    let started = tokio::time::Instant::now();
    let resp = validate(&server, "valid@a.io").await;
    assert_eq!(resp.status(), 200);
    assert!(started.elapsed() >= Duration::from_millis(50));
    server.shutdown().await;
}

#[tokio::test]
async fn stats_count_every_arrival_per_address() {
    let server = start(MockConfig::default()).await;
    for _ in 0..3 {
        validate(&server, "Valid@A.io").await;
    }
    validate(&server, "once@a.io").await;
    validate(&server, "fail@a.io").await;
    validate(&server, "fail@a.io").await;
    let stats = server.stats();
    assert_eq!(stats.validations, 6);
    assert_eq!(stats.unique_addresses, 3);
    assert_eq!(
        stats.repeated.into_iter().collect::<Vec<_>>(),
        [("fail@a.io".to_owned(), 2), ("valid@a.io".to_owned(), 3)]
    );
    assert_eq!(stats.by_status.get(&500), Some(&2));
    assert_eq!(stats.per_minute, [6]);
    assert_eq!(stats.max_in_window_60s, 6);
    assert!(stats.max_in_flight >= 1);

    // The endpoint serves the same data; per_address only with full=1.
    let c = client();
    let brief: Stats = c
        .get(format!("{}/__mock/stats", server.url()))
        .send()
        .await
        .expect("answered")
        .json()
        .await
        .expect("stats json");
    assert_eq!(brief.per_address, None);
    assert_eq!(brief.unique_addresses, 3);
    let full: Stats = c
        .get(format!("{}/__mock/stats?full=1", server.url()))
        .send()
        .await
        .expect("answered")
        .json()
        .await
        .expect("stats json");
    let per_address = full.per_address.expect("full stats");
    assert_eq!(per_address.get("once@a.io"), Some(&1));
    assert_eq!(full.requests, 8, "six validations and two stats requests");
    server.shutdown().await;
}

#[tokio::test]
async fn admin_endpoints() {
    let server = start(MockConfig::default()).await;
    let c = client();
    let base = server.url();
    let admin = |path: &str, body: Value| c.post(format!("{base}{path}")).json(&body).send();

    let resp = admin("/__mock/credits", json!({"credits": 10}))
        .await
        .expect("answered");
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.json::<Value>().await.expect("json")["credits"], 10.0);
    let resp = admin("/__mock/credits", json!({"add": 2.5}))
        .await
        .expect("answered");
    assert_eq!(resp.json::<Value>().await.expect("json")["credits"], 12.5);
    assert_eq!(server.stats().balance, 12.5);
    let resp = admin("/__mock/credits", json!({"credits": 1, "add": 1}))
        .await
        .expect("answered");
    assert_eq!(resp.status(), 400);

    let resp = admin("/__mock/api-key", json!({"api_key": "new-key"}))
        .await
        .expect("answered");
    assert_eq!(resp.status(), 200);
    assert_eq!(
        validate(&server, "valid@a.io").await.status(),
        401,
        "old key"
    );
    let resp = c
        .post(format!("{base}{VALIDATE}"))
        .header("X-API-Key", "new-key")
        .json(&json!({"email": "valid@a.io"}))
        .send()
        .await
        .expect("answered");
    assert_eq!(resp.status(), 200);
    server.set_api_key(KEY);
    assert_eq!(validate(&server, "valid@b.io").await.status(), 200);

    assert!(server.stats().validations > 0);
    let resp = admin("/__mock/reset", json!({})).await.expect("answered");
    assert_eq!(resp.status(), 200);
    let stats = server.stats();
    assert_eq!((stats.validations, stats.unique_addresses), (0, 0));
    assert_eq!(stats.credits_charged, 0.0);
    assert_eq!(stats.balance, 12.4, "the balance is not a statistic");
    server.shutdown().await;
}

#[tokio::test]
async fn many_concurrent_connections() {
    let server = start(MockConfig::default()).await;
    let url = format!("{}{VALIDATE}", server.url());
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..300 {
        let url = url.clone();
        tasks.spawn(async move {
            // One client each, so every task has its own connection.
            let c = client();
            let mut ok = 0;
            for j in 0..3 {
                let resp = c
                    .post(&url)
                    .header("X-API-Key", KEY)
                    .json(&json!({"email": format!("user{i}-{j}@load.test")}))
                    .send()
                    .await
                    .expect("answered");
                ok += u32::from(resp.status() == 200);
            }
            ok
        });
    }
    let mut answered = 0;
    while let Some(ok) = tasks.join_next().await {
        answered += ok.expect("task ran");
    }
    assert_eq!(answered, 900);
    let stats = server.stats();
    assert_eq!((stats.validations, stats.unique_addresses), (900, 900));
    assert!(
        stats.repeated.is_empty(),
        "sent twice: {:?}",
        stats.repeated
    );
    server.shutdown().await;
}

#[tokio::test]
async fn shutdown_drops_hung_connections() {
    let server = start(MockConfig {
        p_hang: 1.0,
        ..MockConfig::default()
    })
    .await;
    let addr = server.addr();
    let mut stream = TcpStream::connect(addr).await.expect("connects");
    stream
        .write_all(&post(
            VALIDATE,
            "X-API-Key: mock-key\r\n",
            r#"{"email":"a@b.c"}"#,
        ))
        .await
        .expect("writes");
    // Shutdown must not wait for the hour-long hang.
    server.shutdown().await;
    let mut rest = Vec::new();
    let _ = stream.read_to_end(&mut rest).await;
    assert!(rest.is_empty());
    assert!(
        TcpStream::connect(addr).await.is_err(),
        "no longer accepting"
    );
}
