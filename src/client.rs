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

use std::collections::HashSet;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
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

/// The longest a command's first contact with the API may take before the base URL is called
/// unreachable (exit 6): a typo or a closed port is reported in seconds, not after minutes of
/// every worker retrying.
pub const FIRST_CONTACT_LIMIT: Duration = Duration::from_secs(12);
/// Attempts of the first contact while nothing answers: at 0, 0.5, 1.5, 3.5 and 7.5 s.
pub const FIRST_CONTACT_ATTEMPTS: u32 = 5;
/// Redirects followed within the base URL's origin before giving up.
const MAX_REDIRECTS: usize = 5;

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
    /// The base URL as given (no trailing `/`), for messages.
    base: String,
    validate_url: String,
    credits_url: String,
    key: HeaderValue,
    /// Every text that comes from the server passes through it before it goes anywhere.
    scrub: Arc<Scrubber>,
    /// Some HTTP answer (any status but a gateway's 502-504) has come back: the API exists.
    /// Shared by clones.
    answered: Arc<AtomicBool>,
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
pub struct Balance {
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
    /// A redirect out of the base URL's origin (another host or port, or https to http): not
    /// followed, since the request carries the key. Every request would meet it: stop.
    #[error("{message}")]
    Refused { message: String },
    /// Nothing at the base URL ever answered the first contact (see [`Client::first_contact`]).
    #[error(
        "cannot reach the API at {url}: {message}. Check --base-url (or LEADMAGIC_BASE_URL) \
         for a typo and that the server is up and reachable from here, then run the same \
         command again"
    )]
    Unreachable { url: String, message: String },
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
            .user_agent(USER_AGENT)
            .timeout(config.timeout)
            .connect_timeout(config.timeout.min(Duration::from_secs(10)))
            .pool_max_idle_per_host(config.max_idle)
            .tcp_nodelay(true)
            // reqwest strips only Authorization and cookies across origins, not X-API-Key.
            .redirect(redirect_policy())
            .build()
            .map_err(|e| anyhow::anyhow!("cannot set up the HTTP client: {e}"))?;
        Ok(Client {
            http,
            base: base.to_owned(),
            validate_url: format!("{base}{VALIDATE_PATH}"),
            credits_url: format!("{base}{CREDITS_PATH}"),
            key,
            scrub: Arc::new(Scrubber::new(config.api_key.expose(), &[USER_AGENT])),
            answered: Arc::new(AtomicBool::new(false)),
        })
    }

    /// `GET /v1/credits` (free).
    pub async fn credits(&self) -> Result<Reply<Balance>, ApiError> {
        let request = self
            .http
            .get(&self.credits_url)
            .header("X-API-Key", self.key.clone());
        let (body, meta) = self.send(request, 0, None).await?;
        let credits = body
            .get("credits")
            .and_then(number)
            .ok_or_else(|| ApiError::Transient {
                message: "the credits answer has no numeric \"credits\" field".into(),
                maybe_charged: false,
                retry_after: None,
            })?;
        Ok(Reply {
            body: Balance {
                credits,
                raw: self.scrub.json(body),
            },
            meta,
        })
    }

    /// `GET /v1/credits` as a command's first call. Until the API has answered once (any HTTP
    /// status but a gateway's 502-504), a call that got no answer from it (refused, reset, no
    /// such host, TLS, a gateway error) is tried again, up to [`FIRST_CONTACT_ATTEMPTS`] times within [`FIRST_CONTACT_LIMIT`];
    /// then the base URL is [`ApiError::Unreachable`]. Once anything has answered, an error is
    /// returned as it is: an API that goes away mid-run gets the pool's bounded retries.
    pub async fn first_contact(&self) -> Result<Reply<Balance>, ApiError> {
        let limit = tokio::time::Instant::now() + FIRST_CONTACT_LIMIT;
        until_answered(
            || self.credits(),
            || self.answered.load(Ordering::Acquire),
            limit,
            &self.base,
        )
        .await
    }

    /// `POST /v1/people/email-validation` for one address (charged for some verdicts).
    /// `retry` is 0 for the first attempt, 1 for the first retry, ...: it is logged.
    pub async fn validate(&self, email: &str, retry: u32) -> Result<Reply<Verdict>, ApiError> {
        let request = self
            .http
            .post(&self.validate_url)
            .header("X-API-Key", self.key.clone())
            .json(&serde_json::json!({ "email": email }));
        let (body, meta) = self.send(request, retry, Some(email)).await?;
        Ok(Reply {
            body: parse_verdict(&body).scrubbed(&self.scrub),
            meta,
        })
    }

    /// Sends a request and logs it (see [`log_request`]); `address` is the one asked about.
    async fn send(
        &self,
        request: reqwest::RequestBuilder,
        retry: u32,
        address: Option<&str>,
    ) -> Result<(Value, Meta), ApiError> {
        let request = request
            .build()
            .map_err(|e| transport_error(e, &self.scrub))?;
        let request_line = (request.method().clone(), request.url().path().to_owned());
        let started = std::time::Instant::now();
        let log = |status: Option<StatusCode>, error: Option<&str>| {
            log_request(
                &request_line,
                status,
                error,
                started.elapsed(),
                retry,
                address,
            )
        };
        let response = match self.http.execute(request).await {
            Ok(response) => response,
            Err(e) => {
                log(None, Some(transport_kind(&e)));
                return Err(transport_error(e, &self.scrub));
            }
        };
        let status = response.status();
        // A gateway's 502-504 says the API behind it did not answer either.
        if !matches!(status.as_u16(), 502..=504) {
            self.answered.store(true, Ordering::Release);
        }
        let meta = Meta::from_headers(response.headers());
        // A 200 whose body breaks off was processed by the server: it may have been charged.
        let bytes = response.bytes().await.map_err(|e| {
            log(Some(status), Some("body_broke_off"));
            ApiError::Transient {
                message: format!(
                    "the answer (HTTP {}) broke off: {}",
                    status.as_u16(),
                    self.scrub.text(&chain(&e))
                ),
                maybe_charged: status.is_success(),
                retry_after: None,
            }
        })?;
        log(Some(status), None);
        classify(status, &bytes, meta, &self.scrub)
    }
}

/// One line per request at `-vv` (debug): method, path, HTTP status or the transport error's
/// kind, latency and retry number, as fields a log reader can parse. The address is added
/// only at `-vvv` (trace): it is personal data. The key is in a header, never logged.
fn log_request(
    (method, path): &(reqwest::Method, String),
    status: Option<StatusCode>,
    error: Option<&str>,
    latency: Duration,
    retry: u32,
    address: Option<&str>,
) {
    use tracing::field::display;
    let (method, path) = (method.as_str(), display(path));
    let status = status.map(|s| s.as_u16());
    let error = error.map(display);
    let latency_ms = u64::try_from(latency.as_millis()).unwrap_or(u64::MAX);
    if let Some(address) = address.filter(|_| tracing::enabled!(tracing::Level::TRACE)) {
        let address = display(address);
        tracing::debug!(%method, path, status, error, latency_ms, retry, address);
    } else {
        tracing::debug!(%method, path, status, error, latency_ms, retry);
    }
}

/// A word for what went wrong below HTTP, for the request log.
fn transport_kind(e: &reqwest::Error) -> &'static str {
    if e.is_timeout() {
        "timeout"
    } else if e.is_connect() {
        "connect"
    } else if e.is_redirect() {
        "redirect"
    } else {
        "connection"
    }
}

/// What mailsift calls itself in the `User-Agent` header.
const USER_AGENT: &str = concat!("mailsift/", env!("CARGO_PKG_VERSION"));

/// Calls `call` until the endpoint has given any answer; see [`Client::first_contact`].
/// `answered` says whether any HTTP answer has come back so far.
async fn until_answered<T, F, Fut>(
    mut call: F,
    answered: impl Fn() -> bool,
    limit: tokio::time::Instant,
    url: &str,
) -> Result<T, ApiError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, ApiError>>,
{
    let unreachable = |message: String| ApiError::Unreachable {
        url: url.to_owned(),
        message,
    };
    let mut delay = Duration::from_millis(500);
    for attempt in 1.. {
        let error = match tokio::time::timeout_at(limit, call()).await {
            Ok(Ok(reply)) => return Ok(reply),
            Ok(Err(e)) if answered() || matches!(e, ApiError::Refused { .. }) => return Err(e),
            Ok(Err(e)) => e,
            Err(_) => {
                return Err(unreachable(format!(
                    "no answer within {}s",
                    FIRST_CONTACT_LIMIT.as_secs()
                )))
            }
        };
        let now = tokio::time::Instant::now();
        if attempt >= FIRST_CONTACT_ATTEMPTS || now + delay >= limit {
            return Err(unreachable(format!("{error} ({attempt} attempts)")));
        }
        tracing::debug!("no answer from {url} yet ({error}); trying again in {delay:?}");
        tokio::time::sleep(delay).await;
        delay *= 2;
    }
    unreachable!("the attempts loop returns")
}

/// Follows a redirect only within the origin (scheme, host and port) the request was sent to:
/// anything else would carry the key where the user never pointed it.
fn redirect_policy() -> reqwest::redirect::Policy {
    reqwest::redirect::Policy::custom(|attempt| {
        let Some(first) = attempt.previous().first().cloned() else {
            return attempt.stop();
        };
        let origin = first.origin().ascii_serialization();
        if same_origin(first, attempt.url()) {
            return if attempt.previous().len() > MAX_REDIRECTS {
                attempt.error(RedirectRefused(format!(
                    "the API at {origin} redirected more than {MAX_REDIRECTS} times"
                )))
            } else {
                attempt.follow()
            };
        }
        let message = format!(
            "the API at {origin} answered HTTP {} with a redirect to {}: mailsift follows \
             redirects only within the base URL's origin, so the request (and the API key it \
             carries) was not sent there. If that address really is the API, use --base-url {}",
            attempt.status().as_u16(),
            attempt.url(),
            attempt.url().origin().ascii_serialization(),
        );
        attempt.error(RedirectRefused(message))
    })
}

/// Scheme, host and port (the scheme's default when not written) all equal.
fn same_origin(from: reqwest::Url, to: &reqwest::Url) -> bool {
    from.origin() == to.origin()
}

/// The redirect policy's refusal, found again in reqwest's error by [`transport_error`].
#[derive(Debug)]
struct RedirectRefused(String);

impl fmt::Display for RedirectRefused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for RedirectRefused {}

/// Maps a status and body to an answer or an error. Pure, so every documented shape is tested
/// without a server.
fn classify(
    status: StatusCode,
    body: &[u8],
    meta: Meta,
    scrub: &Scrubber,
) -> Result<(Value, Meta), ApiError> {
    if status.is_success() {
        return match serde_json::from_slice::<Value>(body) {
            Ok(value @ Value::Object(_)) => Ok((value, meta)),
            _ => Err(ApiError::Transient {
                message: format!(
                    "the API answered HTTP {} with a body that is not a JSON object: {}",
                    status.as_u16(),
                    scrub.text(&snippet(body))
                ),
                maybe_charged: true,
                retry_after: None,
            }),
        };
    }
    let message = scrub.text(&error_message(body));
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

fn transport_error(e: reqwest::Error, scrub: &Scrubber) -> ApiError {
    let refused =
        std::error::Error::source(&e).and_then(|source| source.downcast_ref::<RedirectRefused>());
    if let Some(refused) = refused {
        return ApiError::Refused {
            message: scrub.text(&refused.0),
        };
    }
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
        message: format!("{what}: {}", scrub.text(&chain(&e))),
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

/// Makes server text safe to print, log or write: removes the key (and any piece of it of
/// [`Scrubber::MIN_RUN`] characters or more, so a key cut short by a debug page goes too) and
/// the other values mailsift sends in its headers. A server that echoes the request (some
/// proxies and debug pages do) must not turn an error message into a leak.
pub(crate) struct Scrubber {
    /// The key's bytes and every window of `MIN_RUN` bytes of it.
    key: Vec<u8>,
    windows: HashSet<Vec<u8>>,
    /// Other header values, removed where they appear whole.
    others: Vec<String>,
}

impl fmt::Debug for Scrubber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Scrubber(<redacted>)")
    }
}

impl Scrubber {
    /// What replaces a secret.
    pub const REDACTED: &'static str = "[redacted]";
    /// The shortest piece of the key that is removed on its own.
    pub const MIN_RUN: usize = 8;

    /// Keys shorter than 4 bytes are not real keys (and would shred every text): not scrubbed.
    pub fn new(key: &str, others: &[&str]) -> Scrubber {
        let key = if key.len() >= 4 { key.as_bytes() } else { b"" };
        let windows = key.windows(Self::MIN_RUN).map(<[u8]>::to_vec).collect();
        Scrubber {
            key: key.to_vec(),
            windows,
            others: others
                .iter()
                .filter(|o| o.len() >= 4)
                .map(|o| (*o).to_owned())
                .collect(),
        }
    }

    /// `text` without the secrets.
    pub fn text(&self, text: &str) -> String {
        let mut out = self.without_key(text);
        for other in &self.others {
            if out.contains(other.as_str()) {
                out = out.replace(other.as_str(), Self::REDACTED);
            }
        }
        out
    }

    fn without_key(&self, text: &str) -> String {
        if self.key.is_empty() {
            return text.to_owned();
        }
        let (bytes, min) = (text.as_bytes(), Self::MIN_RUN.min(self.key.len()));
        let mut out = String::with_capacity(text.len());
        let (mut at, mut copied) = (0, 0);
        while at + min <= bytes.len() {
            let window = &bytes[at..at + min];
            let hit = if min == self.key.len() {
                window == self.key.as_slice()
            } else {
                self.windows.contains(window)
            };
            if !hit {
                at += 1;
                continue;
            }
            // The longest piece of the key that starts here.
            let len = (0..=self.key.len() - min)
                .filter(|&j| &self.key[j..j + min] == window)
                .map(|j| {
                    let rest = bytes[at + min..].iter().zip(&self.key[j + min..]);
                    min + rest.take_while(|(a, b)| a == b).count()
                })
                .max()
                .unwrap_or(min);
            let mut start = at;
            while !text.is_char_boundary(start) {
                start -= 1;
            }
            let mut end = at + len;
            while !text.is_char_boundary(end) {
                end += 1;
            }
            out.push_str(&text[copied..start]);
            out.push_str(Self::REDACTED);
            (at, copied) = (end, end);
        }
        out.push_str(&text[copied..]);
        out
    }

    fn option(&self, text: Option<String>) -> Option<String> {
        text.map(|t| self.text(&t))
    }

    /// A JSON value with every string (and object key) scrubbed.
    pub fn json(&self, value: Value) -> Value {
        match value {
            Value::String(s) => Value::String(self.text(&s)),
            Value::Array(items) => Value::Array(items.into_iter().map(|v| self.json(v)).collect()),
            Value::Object(map) => Value::Object(
                map.into_iter()
                    .map(|(k, v)| (self.text(&k), self.json(v)))
                    .collect(),
            ),
            other => other,
        }
    }
}

impl Verdict {
    /// The verdict with every text field scrubbed (see [`Scrubber`]).
    pub(crate) fn scrubbed(self, scrub: &Scrubber) -> Verdict {
        let status = self.status.map(|s| match s {
            Status::Other(text) => Status::Other(scrub.text(&text)),
            known => known,
        });
        let c = self.company;
        Verdict {
            email: scrub.option(self.email),
            status,
            message: scrub.option(self.message),
            mx_record: scrub.option(self.mx_record),
            mx_provider: scrub.option(self.mx_provider),
            company: Company {
                name: scrub.option(c.name),
                industry: scrub.option(c.industry),
                size: scrub.option(c.size),
                founded: scrub.option(c.founded),
                location: scrub.option(c.location),
                linkedin_url: scrub.option(c.linkedin_url),
            },
            ..self
        }
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
            classify(
                StatusCode::from_u16(code).unwrap(),
                body.as_bytes(),
                meta(),
                &Scrubber::new("", &[]),
            )
            .unwrap_err()
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
            let e = classify(
                StatusCode::OK,
                body.as_bytes(),
                Meta::default(),
                &Scrubber::new("", &[]),
            )
            .unwrap_err();
            assert!(e.is_retryable() && e.maybe_charged(), "{body:?}");
        }
        assert!(classify(
            StatusCode::OK,
            b"{}",
            Meta::default(),
            &Scrubber::new("", &[])
        )
        .is_ok());
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
    fn the_scrubber_removes_the_key_its_pieces_and_the_header_values() {
        const KEY: &str = "lmk-7Q2x9SECRETw4Zr8pV1nB6tY3hJ5";
        let scrub = Scrubber::new(KEY, &["mailsift/0.1.0"]);
        let r = Scrubber::REDACTED;
        let cases: Vec<(String, String)> = vec![
            (format!("x-api-key: {KEY}"), format!("x-api-key: {r}")),
            (format!("{KEY}{KEY}"), format!("{r}{r}")),
            // A debug page that cut the key short, or showed only its end.
            (format!("key={}...", &KEY[..12]), format!("key={r}...")),
            (format!("…{}", &KEY[20..]), format!("…{r}")),
            // Under 8 characters of the key is not the key.
            (format!("{} ok", &KEY[..7]), format!("{} ok", &KEY[..7])),
            (
                "user-agent: mailsift/0.1.0".into(),
                format!("user-agent: {r}"),
            ),
            ("Email is valid.".into(), "Email is valid.".into()),
            // Multi-byte text around a hit stays valid UTF-8.
            (format!("é{KEY}é"), format!("é{r}é")),
        ];
        for (text, want) in cases {
            assert_eq!(scrub.text(&text), want, "{text}");
        }
        let json = serde_json::json!({"headers": {KEY: [KEY, 1]}, "credits": 5});
        assert!(!scrub.json(json).to_string().contains(&KEY[4..16]));
        // A key too short to be real is not scrubbed: it would shred every message.
        assert_eq!(Scrubber::new("k", &[]).text("keep"), "keep");
        assert!(!format!("{scrub:?}").contains("SECRET"));
    }

    #[test]
    fn server_text_in_errors_and_verdicts_is_scrubbed() {
        let scrub = Scrubber::new("sk_live_0123456789abcdef", &[]);
        let echo = r#"{"error": {"message": "bad key sk_live_0123456789abcdef"}}"#;
        for code in [400, 401, 402, 429, 500] {
            let e = classify(
                StatusCode::from_u16(code).unwrap(),
                echo.as_bytes(),
                Meta::default(),
                &scrub,
            )
            .unwrap_err();
            assert!(!e.to_string().contains("0123456789"), "{code}: {e}");
        }
        let html = b"<pre>X-API-Key: sk_live_0123456789abcdef</pre>";
        let e = classify(StatusCode::OK, html, Meta::default(), &scrub).unwrap_err();
        assert!(!e.to_string().contains("0123456789"), "{e}");
        let verdict = parse_verdict(&serde_json::json!({
            "email_status": "sk_live_0123456789abcdef",
            "message": "sk_live_0123456789abcdef", "mx_provider": "sk_live_0123456789abcdef",
            "company_name": "sk_live_0123456789abcdef"}))
        .scrubbed(&scrub);
        assert!(
            !format!("{verdict:?}").contains("0123456789"),
            "{verdict:?}"
        );
    }

    fn no_answer() -> ApiError {
        ApiError::Transient {
            message: "cannot connect to the API: connection refused".into(),
            maybe_charged: false,
            retry_after: None,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_url_that_never_answers_is_given_up_on_within_15_seconds() {
        use std::cell::Cell;
        let start = tokio::time::Instant::now();
        let limit = start + FIRST_CONTACT_LIMIT;
        // Refused at once, every time.
        let attempts = Cell::new(0);
        let call = || {
            attempts.set(attempts.get() + 1);
            async { Err::<(), _>(no_answer()) }
        };
        let e = until_answered(call, || false, limit, "http://typo.example")
            .await
            .unwrap_err();
        assert!(
            matches!(&e, ApiError::Unreachable { url, .. } if url == "http://typo.example"),
            "{e:?}"
        );
        assert!(e.to_string().contains("connection refused"), "{e}");
        assert_eq!(attempts.get(), FIRST_CONTACT_ATTEMPTS);
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "{:?}",
            start.elapsed()
        );

        // Each attempt hangs (a black hole): the limit cuts it.
        let start = tokio::time::Instant::now();
        let hang = || std::future::pending::<Result<(), ApiError>>();
        let e = until_answered(hang, || false, start + FIRST_CONTACT_LIMIT, "http://x")
            .await
            .unwrap_err();
        assert!(matches!(e, ApiError::Unreachable { .. }), "{e:?}");
        assert_eq!(start.elapsed(), FIRST_CONTACT_LIMIT);
    }

    #[tokio::test(start_paused = true)]
    async fn once_anything_answered_errors_are_returned_as_they_are() {
        use std::cell::Cell;
        let limit = tokio::time::Instant::now() + FIRST_CONTACT_LIMIT;
        // Down twice, then up: the first contact succeeds.
        let attempts = Cell::new(0);
        let flaky = || {
            attempts.set(attempts.get() + 1);
            let n = attempts.get();
            async move {
                if n < 3 {
                    Err(no_answer())
                } else {
                    Ok(n)
                }
            }
        };
        assert_eq!(
            until_answered(flaky, || false, limit, "u").await.unwrap(),
            3
        );
        // The endpoint answered before (a 5xx, say): no retry here, the pool's policy applies.
        attempts.set(0);
        let down = || {
            attempts.set(attempts.get() + 1);
            async { Err::<(), _>(no_answer()) }
        };
        let e = until_answered(down, || true, limit, "u").await.unwrap_err();
        assert!(matches!(e, ApiError::Transient { .. }) && attempts.get() == 1);
        // A refused redirect is an answer: no retry.
        attempts.set(0);
        let redirect = || {
            attempts.set(attempts.get() + 1);
            async {
                Err::<(), _>(ApiError::Refused {
                    message: "r".into(),
                })
            }
        };
        let e = until_answered(redirect, || false, limit, "u")
            .await
            .unwrap_err();
        assert!(matches!(e, ApiError::Refused { .. }) && attempts.get() == 1);
    }

    #[test]
    fn only_redirects_within_the_origin_may_be_followed() {
        let url = |u: &str| reqwest::Url::parse(u).unwrap();
        let cases = [
            (
                "https://api.x.io/v1/credits",
                "https://api.x.io/v2/credits",
                true,
            ),
            (
                "https://api.x.io/v1/credits",
                "https://api.x.io:443/v1",
                true,
            ),
            ("http://127.0.0.1:80/a", "http://127.0.0.1/b", true),
            (
                "https://api.x.io/v1/credits",
                "http://api.x.io/v1/credits",
                false,
            ),
            (
                "http://api.x.io/v1/credits",
                "https://api.x.io/v1/credits",
                false,
            ),
            ("http://127.0.0.1:8080/a", "http://127.0.0.1:8081/a", false),
            ("https://api.x.io/a", "https://evil.x.io/a", false),
            ("https://api.x.io/a", "https://api.x.io.evil.com/a", false),
        ];
        for (from, to, want) in cases {
            assert_eq!(same_origin(url(from), &url(to)), want, "{from} -> {to}");
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
