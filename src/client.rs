//! The LeadMagic API client: the only module that speaks HTTP (and the only user of `reqwest`).
//!
//! It owns one pooled `reqwest::Client`, sends the key in the `X-API-Key` header, and turns every
//! outcome into either a parsed reply or a typed [`ApiError`] that the worker pool can branch on
//! (stop, pause, retry, or record on the row). It parses tolerantly: every field of a 200 body is
//! optional, unknown fields are ignored, a value of an unexpected type is dropped rather than
//! failing the answer, and an unknown `email_status` is kept as text.
//!
//! It does not retry, pace or cache: that is the pool's job, which sees the
//! [`ApiError::is_retryable`] verdict and the rate-limit headers in [`Meta`].

use std::fmt;
use std::time::{Duration, SystemTime};

use reqwest::header::{HeaderMap, HeaderValue, RETRY_AFTER};
use reqwest::StatusCode;
use serde_json::Value;

/// The documented production endpoint.
pub const DEFAULT_BASE_URL: &str = "https://api.leadmagic.io";
/// Path of the validation endpoint.
pub const VALIDATE_PATH: &str = "/v1/people/email-validation";
/// Path of the balance endpoint.
pub const CREDITS_PATH: &str = "/v1/credits";

/// An API key. It can be sent, but never shown: `Debug` prints a redaction and there is no
/// `Display`, so a key cannot end up in a log line, an error or a report by accident.
#[derive(Clone)]
pub struct ApiKey(String);

impl ApiKey {
    /// Wraps a key, trimming the whitespace a key file usually ends with.
    pub fn new(key: &str) -> Option<ApiKey> {
        let key = key.trim();
        (!key.is_empty()).then(|| ApiKey(key.to_owned()))
    }

    /// The key itself: only for the header, and for tests that look for leaks.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiKey(<redacted>)")
    }
}

/// What the client needs to reach the API.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    pub base_url: String,
    pub api_key: ApiKey,
    /// Whole-request timeout (connect, send, wait for and read the answer).
    pub timeout: Duration,
    /// How many idle connections to keep: the pool's concurrency, so no request waits for a
    /// handshake in steady state.
    pub max_idle: usize,
}

/// The client. Cheap to clone: clones share one connection pool.
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    validate_url: String,
    credits_url: String,
    key: HeaderValue,
}

/// A parsed answer with the headers that came with it.
#[derive(Debug, Clone)]
pub struct Reply<T> {
    pub body: T,
    pub meta: Meta,
}

/// Rate-limit and credit headers of one response. Every field is optional: the API documents
/// both the IETF `RateLimit-*` and the legacy `X-RateLimit-*` names, and either may be missing.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Meta {
    /// Requests per minute the server allows (`RateLimit-Limit`, else `X-RateLimit-Limit`).
    pub rate_limit: Option<u32>,
    /// Requests left in the current window.
    pub rate_remaining: Option<u32>,
    /// Time until the window resets.
    pub rate_reset: Option<Duration>,
    /// `X-RateLimit-Remaining-Daily`.
    pub daily_remaining: Option<u64>,
    /// `X-RateLimit-Daily-Usage-Percent`.
    pub daily_usage_percent: Option<f64>,
    /// `X-RateLimit-Soft-Mode`: violations are only logged by the server.
    pub soft_mode: Option<bool>,
    /// `X-Credits-Remaining`: the balance after this request.
    pub credits_remaining: Option<f64>,
    /// `X-Credits-Cost`: what this request cost.
    pub credits_cost: Option<f64>,
    /// `Retry-After`, as a duration from now (seconds or HTTP-date).
    pub retry_after: Option<Duration>,
}

impl Meta {
    /// Reads the headers of a response; unparseable values count as absent.
    pub fn from_headers(headers: &HeaderMap) -> Meta {
        fn text<'h>(headers: &'h HeaderMap, names: &[&str]) -> Option<&'h str> {
            names
                .iter()
                .find_map(|name| headers.get(*name)?.to_str().ok())
                .map(str::trim)
        }
        fn num<T: std::str::FromStr>(headers: &HeaderMap, names: &[&str]) -> Option<T> {
            text(headers, names)?.parse().ok()
        }
        Meta {
            rate_limit: num(headers, &["ratelimit-limit", "x-ratelimit-limit"]),
            rate_remaining: num(headers, &["ratelimit-remaining", "x-ratelimit-remaining"]),
            rate_reset: num::<f64>(headers, &["ratelimit-reset", "x-ratelimit-reset"])
                .and_then(seconds),
            daily_remaining: num(headers, &["x-ratelimit-remaining-daily"]),
            daily_usage_percent: num(headers, &["x-ratelimit-daily-usage-percent"]),
            soft_mode: text(headers, &["x-ratelimit-soft-mode"])
                .and_then(|v| v.to_ascii_lowercase().parse().ok()),
            credits_remaining: num(headers, &["x-credits-remaining"]),
            credits_cost: num(headers, &["x-credits-cost"]),
            retry_after: headers
                .get(RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| parse_retry_after(v, SystemTime::now())),
        }
    }
}

/// `Retry-After` is either delay-seconds or an HTTP-date (RFC 9110 §10.2.3). A date in the past
/// means "now".
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<f64>() {
        return seconds(secs);
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

fn seconds(secs: f64) -> Option<Duration> {
    (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs.min(86_400.0 * 7.0)))
}

/// The verdict of one validation (a 200 answer).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Verdict {
    pub email: Option<String>,
    /// `None` when the answer had no `email_status` at all.
    pub status: Option<Status>,
    pub message: Option<String>,
    pub credits_consumed: Option<f64>,
    pub is_domain_catch_all: Option<bool>,
    pub mx_record: Option<String>,
    pub mx_provider: Option<String>,
    pub mx_security_gateway: Option<bool>,
    pub company: Company,
}

/// The free company enrichment that comes with a verdict. Field names vary between doc
/// versions; both spellings are read.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Company {
    pub name: Option<String>,
    pub industry: Option<String>,
    pub size: Option<String>,
    pub founded: Option<String>,
    /// The location object flattened to "locality, region, country" (or its `name`).
    pub location: Option<String>,
    pub linkedin_url: Option<String>,
}

/// `email_status` as documented, plus anything new the API may start sending.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Status {
    Valid,
    ValidCatchAll,
    CatchAll,
    Unknown,
    Invalid,
    /// A value this version does not know, kept as sent (lower-cased, trimmed).
    Other(String),
}

impl Status {
    pub fn parse(s: &str) -> Status {
        match s.trim().to_ascii_lowercase().as_str() {
            "valid" => Status::Valid,
            "valid_catch_all" => Status::ValidCatchAll,
            "catch_all" => Status::CatchAll,
            "unknown" => Status::Unknown,
            "invalid" => Status::Invalid,
            other => Status::Other(other.to_owned()),
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            Status::Valid => "valid",
            Status::ValidCatchAll => "valid_catch_all",
            Status::CatchAll => "catch_all",
            Status::Unknown => "unknown",
            Status::Invalid => "invalid",
            Status::Other(s) => s,
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The balance (`GET /v1/credits`).
#[derive(Debug, Clone, PartialEq)]
pub struct Credits {
    pub credits: f64,
    /// The whole answer, for `--json`.
    pub raw: Value,
}

/// Why a call did not produce an answer. The pool branches on the variant.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ApiError {
    /// 401: the key is missing, wrong or was regenerated. Every further call would fail too.
    #[error(
        "the API key was rejected (HTTP 401: {message}). mailsift sends it in the X-API-Key \
         header: check the key in LEADMAGIC_API_KEY (or the file given to --api-key-file); \
         a regenerated key makes the old one fail at once"
    )]
    KeyRejected { message: String },
    /// 402: the balance cannot pay for another validation.
    #[error("out of credits (HTTP 402: {message})")]
    OutOfCredits { message: String },
    /// 429: slow down; `retry_after` says for how long when the server said so.
    #[error("rate limited (HTTP 429: {message})")]
    RateLimited {
        retry_after: Option<Duration>,
        message: String,
        meta: Box<Meta>,
    },
    /// Worth retrying: 5xx, timeouts, resets, truncated or garbage answers.
    #[error("{message}")]
    Transient {
        message: String,
        /// The request reached the server and its outcome is unknown (a timeout or reset after
        /// sending, or a broken 200 body), so it may have been charged.
        maybe_charged: bool,
        retry_after: Option<Duration>,
    },
    /// 400 and other 4xx: this request will not succeed as sent.
    #[error("rejected by the API (HTTP {status}: {message})")]
    Rejected { status: u16, message: String },
}

impl ApiError {
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            ApiError::RateLimited { .. } | ApiError::Transient { .. }
        )
    }

    /// The server's own hint of when to try again.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            ApiError::RateLimited { retry_after, .. } | ApiError::Transient { retry_after, .. } => {
                *retry_after
            }
            _ => None,
        }
    }

    pub fn maybe_charged(&self) -> bool {
        matches!(
            self,
            ApiError::Transient {
                maybe_charged: true,
                ..
            }
        )
    }
}

impl Client {
    pub fn new(config: &ClientConfig) -> anyhow::Result<Client> {
        let base = config.base_url.trim_end_matches('/');
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            anyhow::bail!(
                "the base URL {base:?} must start with http:// or https:// \
                 (set it with --base-url or LEADMAGIC_BASE_URL)"
            );
        }
        let mut key = HeaderValue::from_str(config.api_key.expose()).map_err(|_| {
            anyhow::anyhow!(
                "the API key contains characters that cannot be sent in an HTTP header; \
                 check LEADMAGIC_API_KEY or the --api-key-file"
            )
        })?;
        key.set_sensitive(true);
        let http = reqwest::Client::builder()
            .user_agent(concat!("mailsift/", env!("CARGO_PKG_VERSION")))
            .timeout(config.timeout)
            .connect_timeout(config.timeout.min(Duration::from_secs(10)))
            .pool_max_idle_per_host(config.max_idle)
            .tcp_nodelay(true)
            .build()
            .map_err(|e| anyhow::anyhow!("cannot set up the HTTP client: {e}"))?;
        Ok(Client {
            http,
            validate_url: format!("{base}{VALIDATE_PATH}"),
            credits_url: format!("{base}{CREDITS_PATH}"),
            key,
        })
    }

    /// `GET /v1/credits` (free).
    pub async fn credits(&self) -> Result<Reply<Credits>, ApiError> {
        let request = self
            .http
            .get(&self.credits_url)
            .header("X-API-Key", self.key.clone());
        let (body, meta) = self.send(request).await?;
        let credits = body
            .get("credits")
            .and_then(number)
            .ok_or_else(|| ApiError::Transient {
                message: "the credits answer has no numeric \"credits\" field".into(),
                maybe_charged: false,
                retry_after: None,
            })?;
        Ok(Reply {
            body: Credits { credits, raw: body },
            meta,
        })
    }

    /// `POST /v1/people/email-validation` for one address (charged for some verdicts).
    pub async fn validate(&self, email: &str) -> Result<Reply<Verdict>, ApiError> {
        let request = self
            .http
            .post(&self.validate_url)
            .header("X-API-Key", self.key.clone())
            .json(&serde_json::json!({ "email": email }));
        let (body, meta) = self.send(request).await?;
        Ok(Reply {
            body: parse_verdict(&body),
            meta,
        })
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> Result<(Value, Meta), ApiError> {
        let response = request.send().await.map_err(transport_error)?;
        let status = response.status();
        let meta = Meta::from_headers(response.headers());
        // A 200 whose body breaks off was processed by the server: it may have been charged.
        let bytes = response.bytes().await.map_err(|e| ApiError::Transient {
            message: format!(
                "the answer (HTTP {}) broke off: {}",
                status.as_u16(),
                chain(&e)
            ),
            maybe_charged: status.is_success(),
            retry_after: None,
        })?;
        classify(status, &bytes, meta)
    }
}

/// Maps a status and body to an answer or an error. Pure, so every documented shape is tested
/// without a server.
fn classify(status: StatusCode, body: &[u8], meta: Meta) -> Result<(Value, Meta), ApiError> {
    if status.is_success() {
        return match serde_json::from_slice::<Value>(body) {
            Ok(value @ Value::Object(_)) => Ok((value, meta)),
            _ => Err(ApiError::Transient {
                message: format!(
                    "the API answered HTTP {} with a body that is not a JSON object: {}",
                    status.as_u16(),
                    snippet(body)
                ),
                maybe_charged: true,
                retry_after: None,
            }),
        };
    }
    let message = error_message(body);
    match status.as_u16() {
        401 => Err(ApiError::KeyRejected { message }),
        402 => Err(ApiError::OutOfCredits { message }),
        429 => Err(ApiError::RateLimited {
            retry_after: meta.retry_after,
            message,
            meta: Box::new(meta),
        }),
        // 408 Request Timeout is the server giving up on us: as transient as a 5xx.
        code @ (408 | 500..=599) => Err(ApiError::Transient {
            message: format!("the API had a problem (HTTP {code}: {message})"),
            maybe_charged: false,
            retry_after: meta.retry_after,
        }),
        code => Err(ApiError::Rejected {
            status: code,
            message,
        }),
    }
}

fn transport_error(e: reqwest::Error) -> ApiError {
    // A failure to connect means nothing was sent. Anything later (a timeout while waiting, a
    // reset after the request went out) leaves the outcome unknown.
    let maybe_charged = !e.is_connect() && !e.is_builder();
    let what = if e.is_timeout() {
        "the request timed out"
    } else if e.is_connect() {
        "cannot connect to the API"
    } else {
        "the connection failed"
    };
    ApiError::Transient {
        message: format!("{what}: {}", chain(&e)),
        maybe_charged,
        retry_after: None,
    }
}

/// reqwest's `Display` stops at the top error; the cause ("connection reset by peer") is what a
/// person needs. URLs hold no secrets here: the key travels in a header.
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let line = cause.to_string();
        if !text.contains(&line) {
            text.push_str(": ");
            text.push_str(&line);
        }
        source = cause.source();
    }
    text
}

/// The server's explanation, from any of the documented error shapes, or a short excerpt of a
/// body that is not JSON (a proxy's HTML page).
pub fn error_message(body: &[u8]) -> String {
    let Ok(value) = serde_json::from_slice::<Value>(body) else {
        return if body.iter().all(u8::is_ascii_whitespace) {
            "empty body".into()
        } else {
            format!("non-JSON body: {}", snippet(body))
        };
    };
    let text = |v: Option<&Value>| v.and_then(Value::as_str).map(str::to_owned);
    // {"error": {"code", "message", "status"}}
    if let Some(error) = value.get("error").filter(|e| e.is_object()) {
        if let Some(m) = text(error.get("message")).or_else(|| text(error.get("code"))) {
            return m;
        }
    }
    // {"success": false, "errors": [{"title", "detail", "code"}]}
    if let Some(errors) = value.get("errors").and_then(Value::as_array) {
        let all: Vec<String> = errors
            .iter()
            .filter_map(|e| {
                text(e.get("detail"))
                    .or_else(|| text(e.get("title")))
                    .or_else(|| text(e.get("message")))
                    .or_else(|| text(e.get("code")))
                    .or_else(|| e.as_str().map(str::to_owned))
            })
            .collect();
        if !all.is_empty() {
            return all.join("; ");
        }
    }
    // {"error": "Bad Request", "message": "..."} and {"message": "..."}
    match (text(value.get("error")), text(value.get("message"))) {
        (Some(e), Some(m)) => format!("{e}: {m}"),
        (Some(one), None) | (None, Some(one)) => one,
        (None, None) => format!("unrecognised error body: {}", snippet(body)),
    }
}

fn snippet(body: &[u8]) -> String {
    const MAX: usize = 200;
    let text = String::from_utf8_lossy(&body[..body.len().min(MAX * 4)]);
    let flat: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    match flat.char_indices().nth(MAX) {
        Some((cut, _)) => format!("{}…", &flat[..cut]),
        None if flat.is_empty() => "(empty)".into(),
        None => flat,
    }
}

/// A number, or a string holding one (some gateways stringify numbers).
fn number(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
    .filter(|n: &f64| n.is_finite())
}

fn boolean(v: &Value) -> Option<bool> {
    match v {
        Value::Bool(b) => Some(*b),
        Value::String(s) => s.trim().to_ascii_lowercase().parse().ok(),
        Value::Number(n) => n.as_i64().map(|n| n != 0),
        _ => None,
    }
}

fn string(v: &Value) -> Option<String> {
    match v {
        Value::String(s) if !s.trim().is_empty() => Some(s.trim().to_owned()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// Reads a 200 validation body. Never fails: whatever is missing or oddly typed is `None`.
pub fn parse_verdict(body: &Value) -> Verdict {
    let field = |name: &str| body.get(name).filter(|v| !v.is_null());
    let first = |names: &[&str], f: fn(&Value) -> Option<String>| {
        names.iter().find_map(|n| field(n).and_then(f))
    };
    Verdict {
        email: field("email").and_then(string),
        status: field("email_status")
            .and_then(Value::as_str)
            .map(Status::parse),
        message: field("message").and_then(string),
        credits_consumed: field("credits_consumed").and_then(number),
        is_domain_catch_all: field("is_domain_catch_all").and_then(boolean),
        mx_record: field("mx_record").and_then(string),
        mx_provider: field("mx_provider").and_then(string),
        mx_security_gateway: field("mx_security_gateway").and_then(boolean),
        company: Company {
            name: first(&["company_name"], string),
            industry: first(&["company_industry"], string),
            size: first(&["company_size"], string),
            founded: first(&["company_founded"], string),
            location: field("company_location").and_then(location),
            linkedin_url: first(&["company_linkedin_url", "company_profile_url"], string),
        },
    }
}

fn location(v: &Value) -> Option<String> {
    match v {
        Value::Object(map) => {
            let parts: Vec<&str> = ["locality", "region", "country"]
                .iter()
                .filter_map(|k| {
                    map.get(*k)?
                        .as_str()
                        .map(str::trim)
                        .filter(|s| !s.is_empty())
                })
                .collect();
            if parts.is_empty() {
                map.get("name").and_then(string)
            } else {
                Some(parts.join(", "))
            }
        }
        other => string(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, HeaderValue::from_str(value).unwrap());
        }
        map
    }

    #[test]
    fn key_is_redacted_in_debug() {
        let key = ApiKey::new(" sk_live_secret\n").unwrap();
        assert_eq!(key.expose(), "sk_live_secret");
        let config = ClientConfig {
            base_url: "http://127.0.0.1:1".into(),
            api_key: key,
            timeout: Duration::from_secs(1),
            max_idle: 1,
        };
        let client = Client::new(&config).unwrap();
        for text in [format!("{config:?}"), format!("{client:?}")] {
            assert!(!text.contains("sk_live_secret"), "{text}");
        }
        assert!(ApiKey::new("  \n").is_none());
    }

    #[test]
    fn verdict_parsing_is_tolerant() {
        let cases: Vec<(Value, Verdict)> = vec![
            (
                json!({"email": "a@b.co", "email_status": "valid", "credits_consumed": 0.05,
                       "message": "Email is valid.", "is_domain_catch_all": false,
                       "mx_record": "aspmx.l.google.com", "mx_provider": "Google Workspace",
                       "mx_security_gateway": false, "company_name": "B", "company_founded": 1999,
                       "company_location": {"locality": "Austin", "region": "Texas", "country": "US"},
                       "company_profile_url": "https://linkedin.example/b", "brand_new_field": [1]}),
                Verdict {
                    email: Some("a@b.co".into()),
                    status: Some(Status::Valid),
                    message: Some("Email is valid.".into()),
                    credits_consumed: Some(0.05),
                    is_domain_catch_all: Some(false),
                    mx_record: Some("aspmx.l.google.com".into()),
                    mx_provider: Some("Google Workspace".into()),
                    mx_security_gateway: Some(false),
                    company: Company {
                        name: Some("B".into()),
                        founded: Some("1999".into()),
                        location: Some("Austin, Texas, US".into()),
                        linkedin_url: Some("https://linkedin.example/b".into()),
                        ..Company::default()
                    },
                },
            ),
            // Everything missing or null.
            (json!({}), Verdict::default()),
            (
                json!({"email_status": null, "credits_consumed": null, "company_location": null}),
                Verdict::default(),
            ),
            // Odd types: stringified numbers and booleans are read, nonsense is dropped.
            (
                json!({"email_status": "Catch_All ", "credits_consumed": "0.25",
                       "is_domain_catch_all": "true", "mx_record": 7, "mx_provider": {"x": 1},
                       "company_location": "Berlin"}),
                Verdict {
                    status: Some(Status::CatchAll),
                    credits_consumed: Some(0.25),
                    is_domain_catch_all: Some(true),
                    mx_record: Some("7".into()),
                    company: Company {
                        location: Some("Berlin".into()),
                        ..Company::default()
                    },
                    ..Verdict::default()
                },
            ),
            // A status this version does not know is kept as text.
            (
                json!({"email_status": "disposable"}),
                Verdict {
                    status: Some(Status::Other("disposable".into())),
                    ..Verdict::default()
                },
            ),
            (
                json!({"company_location": {"name": "Paris, France"}}),
                Verdict {
                    company: Company {
                        location: Some("Paris, France".into()),
                        ..Company::default()
                    },
                    ..Verdict::default()
                },
            ),
        ];
        for (body, want) in cases {
            assert_eq!(parse_verdict(&body), want, "{body}");
        }
    }

    #[test]
    fn every_status_round_trips() {
        for s in [
            "valid",
            "valid_catch_all",
            "catch_all",
            "unknown",
            "invalid",
            "spamtrap",
        ] {
            assert_eq!(Status::parse(s).as_str(), s);
        }
    }

    #[test]
    fn error_bodies_of_every_documented_shape() {
        let cases: &[(&str, &str)] = &[
            (
                r#"{"error": {"code": "UNAUTHORIZED", "message": "Invalid or missing API key", "status": 401}}"#,
                "Invalid or missing API key",
            ),
            (r#"{"error": {"code": "INSUFFICIENT_CREDITS", "status": 402}}"#, "INSUFFICIENT_CREDITS"),
            (
                r#"{"success": false, "errors": [{"type": "https://api.leadmagic.io/errors/validation_error",
                    "title": "Request validation failed. Check your input parameters.", "status": 400,
                    "code": "validation_error"}], "meta": {"request_id": "uuid"}}"#,
                "Request validation failed. Check your input parameters.",
            ),
            (
                r#"{"success": false, "errors": [{"title": "a"}, {"detail": "b"}, "c"]}"#,
                "a; b; c",
            ),
            (r#"{"error": "Bad Request", "message": "email is required"}"#, "Bad Request: email is required"),
            (r#"{"error": "Too Many Requests"}"#, "Too Many Requests"),
            (r#"{"message": "Forbidden"}"#, "Forbidden"),
            (r#"{"weird": true}"#, r#"unrecognised error body: {"weird": true}"#),
            ("", "empty body"),
            ("  \r\n", "empty body"),
            (
                "<html><body><h1>503 Service Temporarily Unavailable</h1></body></html>",
                "non-JSON body: <html><body><h1>503 Service Temporarily Unavailable</h1></body></html>",
            ),
            ("[1,2]", "unrecognised error body: [1,2]"),
        ];
        for (body, want) in cases {
            assert_eq!(error_message(body.as_bytes()), *want, "{body}");
        }
        let long = "x".repeat(5000);
        assert!(error_message(long.as_bytes()).chars().count() < 230);
        assert!(error_message(&[0xff, 0xfe, 0x00]).starts_with("non-JSON body"));
    }

    #[test]
    fn statuses_map_to_typed_errors() {
        let meta = || Meta {
            retry_after: Some(Duration::from_secs(7)),
            ..Meta::default()
        };
        let err = |code: u16, body: &str| {
            classify(StatusCode::from_u16(code).unwrap(), body.as_bytes(), meta()).unwrap_err()
        };
        assert!(matches!(err(401, "{}"), ApiError::KeyRejected { .. }));
        assert!(matches!(err(402, "{}"), ApiError::OutOfCredits { .. }));
        match err(429, r#"{"error":"Too Many Requests"}"#) {
            ApiError::RateLimited {
                retry_after,
                message,
                ..
            } => {
                assert_eq!(retry_after, Some(Duration::from_secs(7)));
                assert_eq!(message, "Too Many Requests");
            }
            other => panic!("{other:?}"),
        }
        for code in [500, 502, 503, 504, 408] {
            let e = err(code, "<html>down</html>");
            assert!(e.is_retryable() && !e.maybe_charged(), "{code}: {e:?}");
            assert!(e.to_string().contains(&code.to_string()));
        }
        for code in [400, 403, 404, 405, 422] {
            let e = err(code, r#"{"error":{"message":"nope"}}"#);
            assert!(
                matches!(&e, ApiError::Rejected { status, message } if *status == code && message == "nope")
            );
            assert!(!e.is_retryable());
        }
        // A 200 that is not a JSON object may have been charged and is worth a retry.
        for body in ["", "{\"email_status\": \"val", "<html>", "[]", "null"] {
            let e = classify(StatusCode::OK, body.as_bytes(), Meta::default()).unwrap_err();
            assert!(e.is_retryable() && e.maybe_charged(), "{body:?}");
        }
        assert!(classify(StatusCode::OK, b"{}", Meta::default()).is_ok());
    }

    #[test]
    fn the_401_message_says_where_to_look_without_the_key() {
        let text = ApiError::KeyRejected {
            message: "Invalid or missing API key".into(),
        }
        .to_string();
        assert!(
            text.contains("X-API-Key") && text.contains("LEADMAGIC_API_KEY"),
            "{text}"
        );
    }

    #[test]
    fn headers_in_both_spellings() {
        let ietf = headers(&[
            ("ratelimit-limit", "3000"),
            ("ratelimit-remaining", "2999"),
            ("ratelimit-reset", "42"),
            ("x-ratelimit-remaining-daily", "99000"),
            ("x-ratelimit-daily-usage-percent", "1.5"),
            ("x-ratelimit-soft-mode", "True"),
            ("x-credits-remaining", "15432.50"),
            ("x-credits-cost", "0.05"),
            ("retry-after", "3"),
        ]);
        assert_eq!(
            Meta::from_headers(&ietf),
            Meta {
                rate_limit: Some(3000),
                rate_remaining: Some(2999),
                rate_reset: Some(Duration::from_secs(42)),
                daily_remaining: Some(99_000),
                daily_usage_percent: Some(1.5),
                soft_mode: Some(true),
                credits_remaining: Some(15432.5),
                credits_cost: Some(0.05),
                retry_after: Some(Duration::from_secs(3)),
            }
        );
        let legacy = headers(&[
            ("x-ratelimit-limit", "1000"),
            ("x-ratelimit-remaining", "0"),
            ("x-ratelimit-reset", "12"),
        ]);
        let meta = Meta::from_headers(&legacy);
        assert_eq!(
            (meta.rate_limit, meta.rate_remaining, meta.rate_reset),
            (Some(1000), Some(0), Some(Duration::from_secs(12)))
        );
        // The IETF name wins when both are present; garbage counts as absent.
        let both = headers(&[("ratelimit-limit", "300"), ("x-ratelimit-limit", "1000")]);
        assert_eq!(Meta::from_headers(&both).rate_limit, Some(300));
        let junk = headers(&[
            ("ratelimit-limit", "lots"),
            ("x-credits-remaining", "n/a"),
            ("retry-after", "soon"),
        ]);
        assert_eq!(Meta::from_headers(&junk), Meta::default());
    }

    #[test]
    fn retry_after_in_both_forms() {
        let now = httpdate::parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT").unwrap();
        let cases: &[(&str, Option<Duration>)] = &[
            ("120", Some(Duration::from_secs(120))),
            (" 0 ", Some(Duration::ZERO)),
            ("1.5", Some(Duration::from_millis(1500))),
            ("-3", None),
            (
                "Sun, 06 Nov 1994 08:50:07 GMT",
                Some(Duration::from_secs(30)),
            ),
            ("Sun, 06 Nov 1994 08:00:00 GMT", Some(Duration::ZERO)),
            (
                "Sunday, 06-Nov-94 08:49:47 GMT",
                Some(Duration::from_secs(10)),
            ),
            ("tomorrow", None),
            ("", None),
        ];
        for (value, want) in cases {
            assert_eq!(parse_retry_after(value, now), *want, "{value:?}");
        }
    }

    #[test]
    fn base_url_must_be_http() {
        let config = |base: &str| ClientConfig {
            base_url: base.into(),
            api_key: ApiKey::new("k").unwrap(),
            timeout: Duration::from_secs(1),
            max_idle: 1,
        };
        assert!(Client::new(&config("ftp://x")).is_err());
        let client = Client::new(&config("http://127.0.0.1:9/")).unwrap();
        assert_eq!(
            client.validate_url,
            "http://127.0.0.1:9/v1/people/email-validation"
        );
        assert!(Client::new(&ClientConfig {
            api_key: ApiKey("bad\nkey".into()),
            ..config("http://x")
        })
        .is_err());
    }
}
