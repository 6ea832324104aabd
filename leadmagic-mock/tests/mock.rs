//! The LeadMagic mock server, driven in-process over real sockets with `reqwest` (and raw TCP
//! where the bytes matter).

use std::time::Duration;

use leadmagic_mock::{verdict_for, Latency, MockConfig, MockServer, Stats, Verdict};
use reqwest::Method;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const KEY: &str = "mock-key";
const VALIDATE: &str = "/v1/people/email-validation";
const CREDITS: &str = "/v1/credits";

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

/// How long a test waits for the server to close a connection before it fails.
const DEADLINE: Duration = Duration::from_secs(10);

/// A running mock and a client for it.
struct Api {
    server: MockServer,
    client: reqwest::Client,
}

impl Api {
    async fn start(config: MockConfig) -> Api {
        Api {
            server: MockServer::start(config).await.expect("mock starts"),
            client: client(),
        }
    }

    async fn with_defaults() -> Api {
        Api::start(MockConfig::default()).await
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.server.url())
    }

    /// A request to `path`, without a key.
    fn request(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        self.client.request(method, self.url(path))
    }

    /// A request to `path` with the accepted key.
    fn keyed(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        self.request(method, path).header("X-API-Key", KEY)
    }

    /// A validation of `email` with `key`.
    fn validation(&self, key: &str, email: &str) -> reqwest::RequestBuilder {
        self.request(Method::POST, VALIDATE)
            .header("X-API-Key", key)
            .json(&json!({ "email": email }))
    }

    async fn validate(&self, email: &str) -> reqwest::Response {
        send(self.validation(KEY, email)).await
    }

    /// `GET /__mock/stats` with this query.
    async fn stats_endpoint(&self, query: &str) -> Stats {
        let path = format!("/__mock/stats{query}");
        let resp = send(self.request(Method::GET, &path)).await;
        resp.json().await.expect("stats json")
    }

    /// `POST` of `body` to an admin endpoint: the status and the JSON answer.
    async fn admin(&self, path: &str, body: Value) -> (u16, Value) {
        let resp = send(self.request(Method::POST, path).json(&body)).await;
        let status = resp.status().as_u16();
        (status, resp.json().await.expect("json"))
    }

    /// Sends raw bytes on a fresh connection and reads until the server closes it.
    async fn raw(&self, request: &[u8]) -> std::io::Result<Vec<u8>> {
        let mut stream = TcpStream::connect(self.server.addr()).await?;
        stream.write_all(request).await?;
        read_to_close(&mut stream).await
    }

    async fn shutdown(self) {
        self.server.shutdown().await;
    }
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client builds")
}

async fn send(request: reqwest::RequestBuilder) -> reqwest::Response {
    request.send().await.expect("request is answered")
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

/// Reads until the server closes the connection, within [`DEADLINE`].
async fn read_to_close(stream: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::new();
    tokio::time::timeout(DEADLINE, stream.read_to_end(&mut out))
        .await
        .expect("the server closes the connection")?;
    Ok(out)
}

/// A response read off the wire: status, lower-cased headers, body.
struct Raw {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Raw {
    /// The response at the start of `bytes`, if its head is complete.
    fn parse(bytes: &[u8]) -> Option<Raw> {
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut resp = httparse::Response::new(&mut headers);
        let head_len = match resp.parse(bytes) {
            Ok(httparse::Status::Complete(n)) => n,
            Ok(httparse::Status::Partial) => return None,
            Err(e) => panic!("not a response head: {e}"),
        };
        let headers = resp
            .headers
            .iter()
            .map(|h| {
                let value = String::from_utf8_lossy(h.value).into_owned();
                (h.name.to_ascii_lowercase(), value)
            })
            .collect();
        Some(Raw {
            status: resp.code.unwrap_or(0),
            headers,
            body: bytes[head_len..].to_vec(),
        })
    }

    fn of(bytes: &[u8]) -> Raw {
        Raw::parse(bytes).expect("a whole response head")
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    fn content_length(&self) -> usize {
        self.header("content-length")
            .and_then(|v| v.parse().ok())
            .expect("content-length")
    }

    fn assert_metered(&self) {
        for name in METER_HEADERS {
            assert!(self.header(name).is_some(), "{} lacks {name}", self.status);
        }
    }
}

fn post(path: &str, headers: &str, body: &str) -> Vec<u8> {
    format!(
        "POST {path} HTTP/1.1\r\nHost: x\r\n{headers}Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// A raw validation of `email` with the accepted key and these extra header lines.
fn raw_validation(email: &str, headers: &str) -> Vec<u8> {
    let body = json!({ "email": email }).to_string();
    post(VALIDATE, &format!("X-API-Key: {KEY}\r\n{headers}"), &body)
}

#[tokio::test]
async fn auth_accepts_both_header_forms_and_rejects_the_rest() {
    let api = Api::with_defaults().await;
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
        let mut req = api.request(Method::GET, CREDITS);
        if let Some((name, value)) = hdr {
            req = req.header(*name, *value);
        }
        let resp = send(req).await;
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
    let resp = send(
        api.request(Method::POST, VALIDATE)
            .json(&json!({"email": "valid@x.com"})),
    )
    .await;
    assert_eq!(resp.status(), 401);
    assert_eq!(api.server.stats().credits_charged, 0.0);
    api.shutdown().await;
}

#[tokio::test]
async fn unknown_paths_404_and_wrong_methods_405() {
    let api = Api::with_defaults().await;
    let cases: &[(Method, &str, u16, Option<&str>)] = &[
        (Method::GET, "/nope", 404, None),
        (Method::POST, "/v1/credit", 404, None),
        (Method::GET, VALIDATE, 405, Some("POST")),
        (Method::PUT, VALIDATE, 405, Some("POST")),
        (Method::POST, CREDITS, 405, Some("GET")),
        (Method::GET, "/__mock/reset", 405, Some("POST")),
    ];
    for (method, path, want, allow) in cases {
        let resp = send(api.keyed(method.clone(), path)).await;
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
    api.shutdown().await;
}

#[tokio::test]
async fn credits_endpoint_reports_the_balance_for_free() {
    let api = Api::start(MockConfig {
        credits: 15432.5,
        ..MockConfig::default()
    })
    .await;
    for _ in 0..2 {
        let resp = send(api.keyed(Method::GET, CREDITS)).await;
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
    assert_eq!(api.server.stats().balance, 15432.5);
    api.shutdown().await;
}

#[tokio::test]
async fn every_verdict_pattern() {
    let api = Api::with_defaults().await;
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
        let resp = api.validate(address).await;
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
    let stats = api.server.stats();
    assert!((stats.credits_charged - charged).abs() < 1e-9);
    assert_eq!(stats.answered, 9);
    assert_eq!(verdict_for("fail@acme.io"), Verdict::Fail);
    api.shutdown().await;
}

#[tokio::test]
async fn malformed_requests_get_the_errors_array_shape() {
    let api = Api::with_defaults().await;
    let bodies = ["not json", r#"{"email": 5}"#, r#"{"first_name": "A"}"#, ""];
    for body in bodies {
        let req = api
            .keyed(Method::POST, VALIDATE)
            .header("Content-Type", "application/json")
            .body(body);
        let resp = send(req).await;
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
    let stats = api.server.stats();
    assert_eq!(stats.validations, 4);
    assert_eq!(stats.unique_addresses, 0);
    api.shutdown().await;
}

#[tokio::test]
async fn charging_free_statuses_and_running_out() {
    let api = Api::start(MockConfig {
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
        let resp = api.validate(address).await;
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
    api.server.set_credits(1.0);
    let resp = api.validate("valid3@a.io").await;
    assert_eq!(resp.status(), 200);
    assert_eq!(header(&resp, "x-credits-remaining"), "0.95");
    let stats = api.server.stats();
    assert!((stats.credits_charged - 0.15).abs() < 1e-9);
    assert_eq!(stats.by_status.get(&402), Some(&2));
    api.shutdown().await;
}

/// Three validations against a hard limit of two a minute: the statuses, and the third's
/// `Retry-After` checked by `retry_after`.
async fn third_over_a_hard_limit(retry_after_date: bool, retry_after: fn(&str)) -> Api {
    let api = Api::start(MockConfig {
        rate_per_min: 2,
        hard_limit: true,
        retry_after_date,
        ..MockConfig::default()
    })
    .await;
    for (i, want) in [200, 200, 429].into_iter().enumerate() {
        let resp = api.validate(&format!("valid{i}@a.io")).await;
        assert_eq!(resp.status().as_u16(), want);
        assert_eq!(header(&resp, "x-ratelimit-soft-mode"), "false");
        if want == 429 {
            assert_metered(&resp);
            assert_eq!(header(&resp, "ratelimit-remaining"), "0");
            assert_eq!(header(&resp, "x-credits-cost"), "0");
            retry_after(header(&resp, "retry-after"));
            let body: Value = resp.json().await.expect("json");
            assert_eq!(body["error"], "Too Many Requests");
            assert!(body["message"].is_string());
        }
    }
    api
}

#[tokio::test]
async fn hard_limit_answers_429_with_retry_after_seconds() {
    let api = third_over_a_hard_limit(false, |value| {
        let secs: u64 = value.parse().expect("delta-seconds");
        assert!((1..=60).contains(&secs), "{secs}");
    })
    .await;
    let stats = api.server.stats();
    assert_eq!(stats.rate_limited, 1);
    assert_eq!(stats.per_address.as_ref().map(|m| m.len()), Some(3));
    assert!((stats.credits_charged - 0.10).abs() < 1e-9, "429 is free");
    api.shutdown().await;
}

#[tokio::test]
async fn hard_limit_retry_after_as_http_date() {
    let api = third_over_a_hard_limit(true, |date| {
        assert!(httpdate::parse_http_date(date).is_ok(), "{date}");
    })
    .await;
    api.shutdown().await;
}

#[tokio::test]
async fn soft_mode_counts_but_never_refuses() {
    let api = Api::start(MockConfig {
        rate_per_min: 2,
        advertise_limit: Some(1),
        ..MockConfig::default()
    })
    .await;
    for i in 0..4 {
        let resp = api.validate(&format!("valid{i}@a.io")).await;
        assert_eq!(resp.status(), 200);
        assert_eq!(header(&resp, "x-ratelimit-soft-mode"), "true");
        assert_eq!(header(&resp, "ratelimit-limit"), "1", "advertised limit");
        assert_eq!(header(&resp, "ratelimit-remaining"), "0");
    }
    let stats = api.server.stats();
    assert_eq!((stats.rate_limited, stats.max_in_window_60s), (0, 4));
    api.shutdown().await;
}

#[tokio::test]
async fn headers_on_every_kind_of_response() {
    let api = Api::start(MockConfig {
        credits: 0.0,
        ..MockConfig::default()
    })
    .await;
    let requests = [
        api.keyed(Method::GET, CREDITS),
        api.request(Method::GET, CREDITS),
        api.validation(KEY, "valid@a.io"),
        api.request(Method::GET, "/__mock/stats"),
        api.request(Method::POST, "/__mock/reset"),
        api.request(Method::GET, "/missing"),
        // A real oversized body: the 413 must arrive intact, not as a reset.
        api.keyed(Method::POST, VALIDATE)
            .body(vec![b' '; 100 * 1024]),
    ];
    for req in requests {
        assert_metered(&send(req).await);
    }
    // Protocol errors too, through raw sockets.
    let big_head = format!("GET / HTTP/1.1\r\nX-Big: {}\r\n\r\n", "a".repeat(20 * 1024));
    let many: String = (0..70).map(|i| format!("X-{i}: y\r\n")).collect();
    let many_headers = format!("GET / HTTP/1.1\r\n{many}\r\n");
    let big_body = format!(
        "POST {VALIDATE} HTTP/1.1\r\nContent-Length: {}\r\n\r\n",
        100 * 1024
    );
    let chunked = format!(
        "POST {VALIDATE} HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
    );
    let cases: [(&[u8], u16); 4] = [
        (big_head.as_bytes(), 431),
        (many_headers.as_bytes(), 431),
        (big_body.as_bytes(), 413),
        (chunked.as_bytes(), 411),
    ];
    for (request, want) in cases {
        let bytes = api.raw(request).await.expect("answered before close");
        let raw = Raw::of(&bytes);
        assert_eq!(raw.status, want);
        assert_eq!(raw.header("connection"), Some("close"));
        raw.assert_metered();
    }
    api.shutdown().await;
}

/// What hyper refuses itself (without the API's headers) still arrives whole, not as a reset.
#[tokio::test]
async fn requests_hyper_cannot_parse_are_refused_and_closed() {
    let api = Api::with_defaults().await;
    let huge_head = format!("GET / HTTP/1.1\r\nX-Big: {}\r\n\r\n", "a".repeat(1 << 20));
    let cases: [(&[u8], u16); 4] = [
        (b"NOT HTTP AT ALL\r\n\r\n", 400),
        (b"POST / HTTP/1.1\r\nContent-Length: abc\r\n\r\n", 400),
        (
            b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
            400,
        ),
        (huge_head.as_bytes(), 431),
    ];
    for (request, want) in cases {
        let bytes = api.raw(request).await.expect("answered before close");
        let what = String::from_utf8_lossy(&request[..request.len().min(40)]);
        assert_eq!(Raw::of(&bytes).status, want, "{what:?}");
    }
    api.shutdown().await;
}

/// Reads exactly one response (its head, then `Content-Length` bytes) off a kept-alive
/// connection.
async fn read_one(stream: &mut TcpStream) -> Raw {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = tokio::time::timeout(DEADLINE, stream.read(&mut chunk))
            .await
            .expect("a response within the deadline")
            .expect("reads");
        assert!(n > 0, "server closed a keep-alive connection");
        buf.extend_from_slice(&chunk[..n]);
        if let Some(raw) = Raw::parse(&buf) {
            if raw.body.len() >= raw.content_length() {
                return raw;
            }
        }
    }
}

#[tokio::test]
async fn keep_alive_and_connection_close() {
    let api = Api::with_defaults().await;
    let mut stream = TcpStream::connect(api.server.addr())
        .await
        .expect("connects");
    for _ in 0..3 {
        let request = raw_validation("valid@a.io", "");
        stream.write_all(&request).await.expect("writes");
        assert_eq!(read_one(&mut stream).await.status, 200);
    }
    // Connection: close is honoured: the server closes after answering.
    let request = raw_validation("valid@a.io", "Connection: close\r\n");
    stream.write_all(&request).await.expect("writes");
    let raw = Raw::of(&read_to_close(&mut stream).await.expect("reads to close"));
    assert_eq!(raw.status, 200);
    assert_eq!(raw.header("connection"), Some("close"));
    // HTTP/1.0 closes after one answer, unless it asks for keep-alive.
    let old = b"GET /v1/credits HTTP/1.0\r\nX-API-Key: mock-key\r\n\r\n";
    let raw = Raw::of(&api.raw(old).await.expect("answered, then closed"));
    assert_eq!(raw.status, 200);
    let mut stream = TcpStream::connect(api.server.addr())
        .await
        .expect("connects");
    for _ in 0..2 {
        let request =
            b"GET /v1/credits HTTP/1.0\r\nX-API-Key: mock-key\r\nConnection: keep-alive\r\n\r\n";
        stream.write_all(request).await.expect("writes");
        let raw = read_one(&mut stream).await;
        assert_eq!(raw.status, 200);
        assert_eq!(raw.header("connection"), Some("keep-alive"));
    }
    let per_address = api.server.stats().per_address.unwrap_or_default();
    assert_eq!(per_address.get("valid@a.io"), Some(&4));
    api.shutdown().await;
}

#[tokio::test]
async fn expect_100_continue_gets_a_go_ahead() {
    let api = Api::with_defaults().await;
    let mut stream = TcpStream::connect(api.server.addr())
        .await
        .expect("connects");
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
    let rest = read_to_close(&mut stream).await.expect("reads");
    assert_eq!(Raw::of(&rest).status, 200);
    api.shutdown().await;
}

/// A mock that injects one fault into every validation.
async fn faulty(fault: fn(&mut MockConfig)) -> Api {
    let mut config = MockConfig::default();
    fault(&mut config);
    Api::start(config).await
}

#[tokio::test]
async fn fault_500_and_html_gateway_errors() {
    let api = faulty(|c| c.p_500 = 1.0).await;
    let resp = api.validate("valid@a.io").await;
    assert_eq!(resp.status(), 500);
    assert_metered(&resp);
    let body: Value = resp.json().await.expect("json");
    assert_eq!(body["error"]["status"], 500);
    api.shutdown().await;

    let api = faulty(|c| c.p_503 = 1.0).await;
    let mut statuses = Vec::new();
    for _ in 0..4 {
        let resp = api.validate("valid@a.io").await;
        statuses.push(resp.status().as_u16());
        assert!(header(&resp, "content-type").starts_with("text/html"));
        assert_eq!(header(&resp, "x-credits-cost"), "0");
        let text = resp.text().await.expect("body");
        assert!(text.contains("<html>"), "{text}");
    }
    assert_eq!(statuses, [502, 503, 502, 503], "alternating per attempt");
    assert_eq!(api.server.stats().credits_charged, 0.0);
    api.shutdown().await;
}

#[tokio::test]
async fn fault_reset_aborts_the_connection() {
    let api = faulty(|c| c.p_reset = 1.0).await;
    let err = api
        .raw(&raw_validation("valid@a.io", ""))
        .await
        .expect_err("no response, a reset");
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionReset);
    let err = api
        .validation(KEY, "valid@a.io")
        .send()
        .await
        .expect_err("reqwest sees an error");
    assert!(err.is_request() || err.is_connect(), "{err:?}");
    let stats = api.server.stats();
    assert_eq!((stats.resets, stats.credits_charged), (2, 0.0));
    assert!(stats.by_status.is_empty());
    api.shutdown().await;
}

#[tokio::test]
async fn fault_truncated_charges_and_cuts_the_body() {
    let api = faulty(|c| c.p_truncated = 1.0).await;
    let bytes = api
        .raw(&raw_validation("valid@a.io", ""))
        .await
        .expect("head and half a body");
    let raw = Raw::of(&bytes);
    assert_eq!(raw.status, 200);
    assert_eq!(raw.body.len(), raw.content_length() / 2);
    let resp = api.validate("valid@b.io").await;
    assert_eq!(resp.status(), 200);
    assert!(resp.bytes().await.is_err(), "the body is cut short");
    let stats = api.server.stats();
    assert_eq!(stats.truncated, 2);
    assert!(
        (stats.credits_charged - 0.10).abs() < 1e-9,
        "charged anyway"
    );
    api.shutdown().await;
}

// The hang and the latency are real sleeps of the server's: paused time would let the
// client's timeout fire before the request has even crossed the socket. Both tests only
// assert lower bounds that a sleep guarantees.
#[tokio::test]
async fn fault_hang_times_the_client_out_then_closes() {
    let api = faulty(|c| {
        c.p_hang = 1.0;
        c.hang = Duration::from_millis(300);
    })
    .await;
    // A client timeout shorter than the hang: the client gives up.
    let err = api
        .validation(KEY, "valid@a.io")
        .timeout(Duration::from_millis(50))
        .send()
        .await
        .expect_err("no answer");
    assert!(err.is_timeout(), "{err:?}");
    // Without a client timeout the server closes after `hang`, answering nothing.
    let started = tokio::time::Instant::now();
    let bytes = api
        .raw(&raw_validation("valid@b.io", ""))
        .await
        .expect("closed, not reset");
    assert!(bytes.is_empty());
    assert!(started.elapsed() >= Duration::from_millis(300));
    let stats = api.server.stats();
    assert_eq!((stats.hangs, stats.credits_charged), (2, 0.0));
    api.shutdown().await;
}

#[tokio::test]
async fn latency_delays_the_answer() {
    let api = faulty(|c| c.latency = Latency::Fixed(Duration::from_millis(50))).await;
    let started = tokio::time::Instant::now();
    let resp = api.validate("valid@a.io").await;
    assert_eq!(resp.status(), 200);
    assert!(started.elapsed() >= Duration::from_millis(50));
    api.shutdown().await;
}

#[tokio::test]
async fn stats_count_every_arrival_per_address() {
    let api = Api::with_defaults().await;
    let addresses = [
        "Valid@A.io",
        "Valid@A.io",
        "Valid@A.io",
        "once@a.io",
        "fail@a.io",
        "fail@a.io",
    ];
    for address in addresses {
        api.validate(address).await;
    }
    let stats = api.server.stats();
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
    let brief = api.stats_endpoint("").await;
    assert_eq!(brief.per_address, None);
    assert_eq!(brief.unique_addresses, 3);
    let full = api.stats_endpoint("?full=1").await;
    let per_address = full.per_address.expect("full stats");
    assert_eq!(per_address.get("once@a.io"), Some(&1));
    assert_eq!(full.requests, 8, "six validations and two stats requests");
    api.shutdown().await;
}

#[tokio::test]
async fn admin_endpoints() {
    let api = Api::with_defaults().await;
    // (body, expected status, expected "credits" in the answer)
    let credits: &[(Value, u16, Option<f64>)] = &[
        (json!({"credits": 10}), 200, Some(10.0)),
        (json!({"add": 2.5}), 200, Some(12.5)),
        (json!({"credits": 1, "add": 1}), 400, None),
    ];
    for (body, status, balance) in credits {
        let (got, answer) = api.admin("/__mock/credits", body.clone()).await;
        assert_eq!(got, *status, "{body}");
        if let Some(balance) = balance {
            assert_eq!(answer["credits"], *balance, "{body}");
        }
    }
    assert_eq!(api.server.stats().balance, 12.5);

    let (status, _) = api
        .admin("/__mock/api-key", json!({"api_key": "new-key"}))
        .await;
    assert_eq!(status, 200);
    assert_eq!(api.validate("valid@a.io").await.status(), 401, "old key");
    let resp = send(api.validation("new-key", "valid@a.io")).await;
    assert_eq!(resp.status(), 200);
    api.server.set_api_key(KEY);
    assert_eq!(api.validate("valid@b.io").await.status(), 200);

    assert!(api.server.stats().validations > 0);
    let (status, _) = api.admin("/__mock/reset", json!({})).await;
    assert_eq!(status, 200);
    let stats = api.server.stats();
    assert_eq!((stats.validations, stats.unique_addresses), (0, 0));
    assert_eq!(stats.credits_charged, 0.0);
    assert_eq!(stats.balance, 12.4, "the balance is not a statistic");
    api.shutdown().await;
}

#[tokio::test]
async fn many_concurrent_connections() {
    let api = Api::with_defaults().await;
    let url = api.url(VALIDATE);
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..300 {
        let url = url.clone();
        tasks.spawn(async move {
            // One client each, so every task has its own connection.
            let c = client();
            let mut ok = 0;
            for j in 0..3 {
                let email = format!("user{i}-{j}@load.test");
                let req = c.post(&url).header("X-API-Key", KEY);
                let resp = send(req.json(&json!({ "email": email }))).await;
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
    let stats = api.server.stats();
    assert_eq!((stats.validations, stats.unique_addresses), (900, 900));
    assert!(
        stats.repeated.is_empty(),
        "sent twice: {:?}",
        stats.repeated
    );
    api.shutdown().await;
}

#[tokio::test]
async fn shutdown_drops_hung_connections() {
    let api = faulty(|c| c.p_hang = 1.0).await;
    let addr = api.server.addr();
    let mut stream = TcpStream::connect(addr).await.expect("connects");
    let request = raw_validation("a@b.c", "");
    stream.write_all(&request).await.expect("writes");
    // Shutdown must not wait for the hour-long hang.
    api.shutdown().await;
    let mut rest = Vec::new();
    let _ = stream.read_to_end(&mut rest).await;
    assert!(rest.is_empty());
    assert!(
        TcpStream::connect(addr).await.is_err(),
        "no longer accepting"
    );
}
