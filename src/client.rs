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

use std::borrow::Cow;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use reqwest::header::{HeaderMap, HeaderName, HeaderValue, CONTENT_TYPE};
use reqwest::{StatusCode, Url};
use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
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
    validate_url: Target,
    credits_url: Target,
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
        // Each name's first value, found in one pass over the dozen headers of an answer: a
        // lookup per name hashed every name on every answer.
        const NAMES: [&str; 12] = [
            "ratelimit-limit",
            "x-ratelimit-limit",
            "ratelimit-remaining",
            "x-ratelimit-remaining",
            "ratelimit-reset",
            "x-ratelimit-reset",
            "x-ratelimit-remaining-daily",
            "x-ratelimit-daily-usage-percent",
            "x-ratelimit-soft-mode",
            "x-credits-remaining",
            "x-credits-cost",
            "retry-after",
        ];
        let mut first: [Option<&HeaderValue>; NAMES.len()] = [None; NAMES.len()];
        for (name, value) in headers {
            if let Some(i) = NAMES.iter().position(|n| *n == name.as_str()) {
                first[i].get_or_insert(value);
            }
        }
        let text = |i: usize| -> Option<&str> { Some(first[i]?.to_str().ok()?.trim()) };
        // The IETF name, else the legacy one (a garbled IETF value does not fall back).
        let either = |i: usize| text(i).or_else(|| text(i + 1));
        fn num<T: std::str::FromStr>(text: Option<&str>) -> Option<T> {
            text?.parse().ok()
        }
        Meta {
            rate_limit: num(either(0)),
            rate_remaining: num(either(2)),
            rate_reset: num::<f64>(either(4)).and_then(seconds),
            daily_remaining: num(text(6)),
            daily_usage_percent: num(text(7)),
            soft_mode: text(8).and_then(|v| v.to_ascii_lowercase().parse().ok()),
            credits_remaining: num(text(9)),
            credits_cost: num(text(10)),
            retry_after: text(11).and_then(|v| parse_retry_after(v, SystemTime::now())),
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
    Some(
        at.duration_since(now)
            .unwrap_or(Duration::ZERO)
            .min(MAX_RETRY_AFTER),
    )
}

/// The longest wait a `Retry-After` can impose, in either form: a week.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(86_400 * 7);

fn seconds(secs: f64) -> Option<Duration> {
    (secs.is_finite() && secs >= 0.0)
        .then(|| Duration::from_secs_f64(secs.min(MAX_RETRY_AFTER.as_secs_f64())))
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
            validate_url: Target::new(format!("{base}{VALIDATE_PATH}")),
            credits_url: Target::new(format!("{base}{CREDITS_PATH}")),
            key,
            scrub: Arc::new(Scrubber::new(config.api_key.expose(), &[USER_AGENT])),
            answered: Arc::new(AtomicBool::new(false)),
        })
    }

    /// `GET /v1/credits` (free).
    pub async fn credits(&self) -> Result<Reply<Balance>, ApiError> {
        let request = self
            .credits_url
            .request(&self.http, reqwest::Method::GET)
            .header(X_API_KEY, self.key.clone());
        let path = self.credits_url.path();
        let (JsonObject(body), meta) = self
            .send(request, path, 0, None, |status, bytes, meta| {
                classify(status, bytes, meta, &self.scrub)
            })
            .await?;
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
        #[derive(serde::Serialize)]
        struct Body<'a> {
            email: &'a str,
        }
        let body = serde_json::to_vec(&Body { email }).expect("a string serializes");
        let request = self
            .validate_url
            .request(&self.http, reqwest::Method::POST)
            .header(X_API_KEY, self.key.clone())
            .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
            .body(body);
        self.send(
            request,
            self.validate_url.path(),
            retry,
            Some(email),
            |status, bytes, meta| {
                let (body, meta) = classify::<VerdictBody>(status, bytes, meta, &self.scrub)?;
                Ok(Reply {
                    body: body.verdict().scrubbed(&self.scrub),
                    meta,
                })
            },
        )
        .await
    }

    /// Sends a request to `path` and logs it (see [`log_request`]); `address` is the one
    /// asked about. `read` turns the answer's status, body and headers into the result
    /// (through [`classify`]).
    async fn send<T>(
        &self,
        request: reqwest::RequestBuilder,
        path: &str,
        retry: u32,
        address: Option<&str>,
        read: impl FnOnce(StatusCode, &[u8], Meta) -> Result<T, ApiError>,
    ) -> Result<T, ApiError> {
        let request = request
            .build()
            .map_err(|e| transport_error(e, &self.scrub))?;
        let request_line = (request.method().clone(), path);
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
        read(status, &bytes, meta)
    }
}

/// One line per request at `-vv` (debug): method, path, HTTP status or the transport error's
/// kind, latency and retry number, as fields a log reader can parse. The address is added
/// only at `-vvv` (trace): it is personal data. The key is in a header, never logged.
fn log_request(
    (method, path): &(reqwest::Method, &str),
    status: Option<StatusCode>,
    error: Option<&str>,
    latency: Duration,
    retry: u32,
    address: Option<&str>,
) {
    use tracing::field::display;
    let (method, path) = (method.as_str(), display(*path));
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

/// A request's URL, parsed once, so a request takes a clone and not a parse of the text. A
/// text that does not parse is kept, for reqwest to refuse each request as it always did.
#[derive(Debug, Clone)]
enum Target {
    Parsed(Url),
    Text(String),
}

impl Target {
    fn new(text: String) -> Target {
        Url::parse(&text).map_or(Target::Text(text), Target::Parsed)
    }

    fn request(&self, http: &reqwest::Client, method: reqwest::Method) -> reqwest::RequestBuilder {
        match self {
            Target::Parsed(url) => http.request(method, url.clone()),
            Target::Text(text) => http.request(method, text.as_str()),
        }
    }

    /// The path, for the request log (a request to a text that does not parse is never sent).
    fn path(&self) -> &str {
        match self {
            Target::Parsed(url) => url.path(),
            Target::Text(_) => "",
        }
    }
}

/// The header the key travels in.
const X_API_KEY: HeaderName = HeaderName::from_static("x-api-key");

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

/// Maps a status and body to an answer (a JSON object read as `T`) or an error. Pure, so
/// every documented shape is tested without a server.
fn classify<'a, T: Deserialize<'a>>(
    status: StatusCode,
    body: &'a [u8],
    meta: Meta,
    scrub: &Scrubber,
) -> Result<(T, Meta), ApiError> {
    if status.is_success() {
        return match serde_json::from_slice::<T>(body) {
            Ok(value) => Ok((value, meta)),
            Err(_) => Err(ApiError::Transient {
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
    /// The key's bytes.
    key: Vec<u8>,
    /// Every window of `MIN_RUN` bytes of the key, as a number, sorted.
    windows: Vec<u64>,
    /// Which byte values occur in the key: a window can only match where its last byte does.
    in_key: [bool; 256],
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
        let mut windows: Vec<u64> = key.windows(Self::MIN_RUN).map(window).collect();
        windows.sort_unstable();
        windows.dedup();
        let mut in_key = [false; 256];
        for &b in key {
            in_key[usize::from(b)] = true;
        }
        Scrubber {
            key: key.to_vec(),
            windows,
            in_key,
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

    /// [`Scrubber::text`] of an owned text: kept as it is when it holds no secret.
    fn owned(&self, text: String) -> String {
        let clean = self.key_at(text.as_bytes(), 0).is_none()
            && !self.others.iter().any(|o| text.contains(o.as_str()));
        if clean {
            text
        } else {
            self.text(&text)
        }
    }

    /// The first place at or after `at` where a piece of the key (a window of `MIN_RUN`
    /// bytes, or the whole key if shorter) starts, and the window's length.
    fn key_at(&self, bytes: &[u8], mut at: usize) -> Option<(usize, usize)> {
        if self.key.is_empty() {
            return None;
        }
        let min = Self::MIN_RUN.min(self.key.len());
        while at + min <= bytes.len() {
            // Every window that starts in at..at + min holds the byte at + min - 1.
            if !self.in_key[usize::from(bytes[at + min - 1])] {
                at += min;
                continue;
            }
            let piece = &bytes[at..at + min];
            let hit = if min == self.key.len() {
                piece == self.key.as_slice()
            } else {
                self.windows.binary_search(&window(piece)).is_ok()
            };
            if hit {
                return Some((at, min));
            }
            at += 1;
        }
        None
    }

    fn without_key(&self, text: &str) -> String {
        let bytes = text.as_bytes();
        let mut out = String::with_capacity(text.len());
        let (mut from, mut copied) = (0, 0);
        while let Some((at, min)) = self.key_at(bytes, from) {
            let window = &bytes[at..at + min];
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
            (from, copied) = (end, end);
        }
        out.push_str(&text[copied..]);
        out
    }

    fn option(&self, text: Option<String>) -> Option<String> {
        text.map(|t| self.owned(t))
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

/// Eight bytes of the key as a number (a window of [`Scrubber::MIN_RUN`] bytes).
fn window(piece: &[u8]) -> u64 {
    let mut bytes = [0; 8];
    bytes.copy_from_slice(piece);
    u64::from_le_bytes(bytes)
}

/// A 200 body that must be a JSON object, kept whole (the balance, for `--json`).
#[derive(Debug)]
struct JsonObject(Value);

impl<'de> Deserialize<'de> for JsonObject {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match Value::deserialize(d)? {
            value @ Value::Object(_) => Ok(JsonObject(value)),
            _ => Err(de::Error::custom("not a JSON object")),
        }
    }
}

/// A JSON value as a verdict's fields need it: strings borrowed from the body where they hold
/// no escape, numbers as `serde_json` reads them, objects only as the parts a location may
/// have, arrays checked and dropped. Every value is read in full, so a body is accepted or
/// refused exactly as a `serde_json::Value` would be, without building one.
#[derive(Debug, PartialEq)]
enum Json<'a> {
    Null,
    Bool(bool),
    Number(serde_json::Number),
    Str(Cow<'a, str>),
    Object(Box<Place<'a>>),
    Array,
}

/// The parts of a `company_location` object (any other object: none of them).
#[derive(Debug, Default, PartialEq)]
struct Place<'a> {
    locality: Option<Json<'a>>,
    region: Option<Json<'a>>,
    country: Option<Json<'a>>,
    name: Option<Json<'a>>,
}

impl<'de> Deserialize<'de> for Json<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(JsonVisitor)
    }
}

struct JsonVisitor;

impl<'de> Visitor<'de> for JsonVisitor {
    type Value = Json<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Json<'de>, E> {
        Ok(Json::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Json<'de>, E> {
        Ok(Json::Number(v.into()))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Json<'de>, E> {
        Ok(Json::Number(v.into()))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Json<'de>, E> {
        // As `serde_json::Value` does: a number it cannot hold reads as null.
        Ok(serde_json::Number::from_f64(v).map_or(Json::Null, Json::Number))
    }
    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Json<'de>, E> {
        Ok(Json::Str(Cow::Borrowed(v)))
    }
    fn visit_str<E>(self, v: &str) -> Result<Json<'de>, E> {
        Ok(Json::Str(Cow::Owned(v.to_owned())))
    }
    fn visit_string<E>(self, v: String) -> Result<Json<'de>, E> {
        Ok(Json::Str(Cow::Owned(v)))
    }
    fn visit_unit<E>(self) -> Result<Json<'de>, E> {
        Ok(Json::Null)
    }
    fn visit_none<E>(self) -> Result<Json<'de>, E> {
        Ok(Json::Null)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Json<'de>, D::Error> {
        Json::deserialize(d)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Json<'de>, A::Error> {
        while seq.next_element::<Json>()?.is_some() {}
        Ok(Json::Array)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Json<'de>, A::Error> {
        let mut place = Place::default();
        while let Some(key) = map.next_key::<Json>()? {
            let value = map.next_value::<Json>()?;
            // A repeated key: the last one counts, as in a `serde_json::Value`.
            match key.as_str().unwrap_or_default() {
                "locality" => place.locality = Some(value),
                "region" => place.region = Some(value),
                "country" => place.country = Some(value),
                "name" => place.name = Some(value),
                _ => {}
            }
        }
        Ok(Json::Object(Box::new(place)))
    }
}

impl Json<'_> {
    fn as_str(&self) -> Option<&str> {
        match self {
            Json::Str(s) => Some(s),
            _ => None,
        }
    }

    /// A number, or a string holding one (some gateways stringify numbers).
    fn number(&self) -> Option<f64> {
        match self {
            Json::Number(n) => n.as_f64(),
            Json::Str(s) => s.trim().parse().ok(),
            _ => None,
        }
        .filter(|n: &f64| n.is_finite())
    }

    fn boolean(&self) -> Option<bool> {
        match self {
            Json::Bool(b) => Some(*b),
            Json::Str(s) => s.trim().to_ascii_lowercase().parse().ok(),
            Json::Number(n) => n.as_i64().map(|n| n != 0),
            _ => None,
        }
    }

    fn string(&self) -> Option<String> {
        match self {
            Json::Str(s) if !s.trim().is_empty() => Some(s.trim().to_owned()),
            Json::Number(n) => Some(n.to_string()),
            _ => None,
        }
    }

    /// The location object flattened to "locality, region, country" (or its `name`).
    fn location(&self) -> Option<String> {
        let Json::Object(place) = self else {
            return self.string();
        };
        let parts: Vec<&str> = [&place.locality, &place.region, &place.country]
            .into_iter()
            .filter_map(|part| {
                part.as_ref()?
                    .as_str()
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
            })
            .collect();
        if parts.is_empty() {
            place.name.as_ref().and_then(Json::string)
        } else {
            Some(parts.join(", "))
        }
    }
}

/// The fields of a 200 validation body that a [`Verdict`] is made of, read straight from the
/// body; any other field is read (so a broken body is refused) and dropped.
#[derive(Debug, Default)]
struct VerdictBody<'a> {
    email: Option<Json<'a>>,
    email_status: Option<Json<'a>>,
    message: Option<Json<'a>>,
    credits_consumed: Option<Json<'a>>,
    is_domain_catch_all: Option<Json<'a>>,
    mx_record: Option<Json<'a>>,
    mx_provider: Option<Json<'a>>,
    mx_security_gateway: Option<Json<'a>>,
    company_name: Option<Json<'a>>,
    company_industry: Option<Json<'a>>,
    company_size: Option<Json<'a>>,
    company_founded: Option<Json<'a>>,
    company_location: Option<Json<'a>>,
    company_linkedin_url: Option<Json<'a>>,
    company_profile_url: Option<Json<'a>>,
}

impl<'de> Deserialize<'de> for VerdictBody<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Fields;
        impl<'de> Visitor<'de> for Fields {
            type Value = VerdictBody<'de>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut body = VerdictBody::default();
                while let Some(key) = map.next_key::<Json>()? {
                    let value = map.next_value::<Json>()?;
                    // A repeated key: the last one counts, as in a `serde_json::Value`.
                    let slot = match key.as_str().unwrap_or_default() {
                        "email" => &mut body.email,
                        "email_status" => &mut body.email_status,
                        "message" => &mut body.message,
                        "credits_consumed" => &mut body.credits_consumed,
                        "is_domain_catch_all" => &mut body.is_domain_catch_all,
                        "mx_record" => &mut body.mx_record,
                        "mx_provider" => &mut body.mx_provider,
                        "mx_security_gateway" => &mut body.mx_security_gateway,
                        "company_name" => &mut body.company_name,
                        "company_industry" => &mut body.company_industry,
                        "company_size" => &mut body.company_size,
                        "company_founded" => &mut body.company_founded,
                        "company_location" => &mut body.company_location,
                        "company_linkedin_url" => &mut body.company_linkedin_url,
                        "company_profile_url" => &mut body.company_profile_url,
                        _ => continue,
                    };
                    *slot = Some(value);
                }
                Ok(body)
            }
        }
        d.deserialize_map(Fields)
    }
}

impl VerdictBody<'_> {
    /// The verdict. Never fails: whatever is missing, null or oddly typed is `None`.
    fn verdict(&self) -> Verdict {
        fn field<'f, 'a>(v: &'f Option<Json<'a>>) -> Option<&'f Json<'a>> {
            v.as_ref().filter(|v| **v != Json::Null)
        }
        let string = |v: &Option<Json>| field(v).and_then(Json::string);
        Verdict {
            email: string(&self.email),
            status: field(&self.email_status)
                .and_then(Json::as_str)
                .map(Status::parse),
            message: string(&self.message),
            credits_consumed: field(&self.credits_consumed).and_then(Json::number),
            is_domain_catch_all: field(&self.is_domain_catch_all).and_then(Json::boolean),
            mx_record: string(&self.mx_record),
            mx_provider: string(&self.mx_provider),
            mx_security_gateway: field(&self.mx_security_gateway).and_then(Json::boolean),
            company: Company {
                name: string(&self.company_name),
                industry: string(&self.company_industry),
                size: string(&self.company_size),
                founded: string(&self.company_founded),
                location: field(&self.company_location).and_then(Json::location),
                linkedin_url: string(&self.company_linkedin_url)
                    .or_else(|| string(&self.company_profile_url)),
            },
        }
    }
}

/// Reads a 200 validation body (a JSON object) into a verdict, as [`Client::validate`] does.
#[cfg(test)]
fn parse_verdict(body: &[u8]) -> Result<Verdict, serde_json::Error> {
    serde_json::from_slice::<VerdictBody>(body).map(|body| body.verdict())
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
            let bytes = serde_json::to_vec(&body).unwrap();
            assert_eq!(parse_verdict(&bytes).unwrap(), want, "{body}");
        }
    }

    #[test]
    fn the_typed_reader_takes_every_shape_a_value_would() {
        // Escapes (an owned string), a repeated key (the last one counts), unknown fields of
        // every type and depth, numbers too big for an integer, nulls.
        let body = r#"{"email": "a\u0040b.co", "email_status": "invalid", "email_status": "valid",
            "extra": {"deep": [1, {"x": null}, "s", true, 1e300]}, "n": 18446744073709551616,
            "credits_consumed": 0, "is_domain_catch_all": 1, "mx_security_gateway": "FALSE",
            "company_size": 12.5, "company_linkedin_url": null,
            "company_profile_url": " https://l.example/c ",
            "company_location": {"country": "DE", "locality": "  ", "locality": "Köln",
                                 "name": "ignored", "region": 5}}"#;
        let verdict = parse_verdict(body.as_bytes()).unwrap();
        assert_eq!(
            verdict,
            Verdict {
                email: Some("a@b.co".into()),
                status: Some(Status::Valid),
                credits_consumed: Some(0.0),
                is_domain_catch_all: Some(true),
                mx_security_gateway: Some(false),
                company: Company {
                    size: Some("12.5".into()),
                    location: Some("Köln, DE".into()),
                    linkedin_url: Some("https://l.example/c".into()),
                    ..Company::default()
                },
                ..Verdict::default()
            }
        );
        // A location with no usable part falls back to its name; an empty one to nothing.
        let named = br#"{"company_location": {"locality": "", "country": 3, "name": "Oslo"}}"#;
        assert_eq!(
            parse_verdict(named).unwrap().company.location.as_deref(),
            Some("Oslo")
        );
        assert_eq!(
            parse_verdict(br#"{"company_location": {}}"#).unwrap(),
            Verdict::default()
        );
        // Wrong types everywhere are dropped, not refused.
        let odd = br#"{"email": [], "email_status": 3, "message": {}, "credits_consumed": "x",
            "is_domain_catch_all": "maybe", "mx_record": true, "company_name": "  "}"#;
        assert_eq!(parse_verdict(odd).unwrap(), Verdict::default());
        // Refused as a `serde_json::Value` refuses them: not an object, broken JSON anywhere
        // (unknown fields included), bytes that are not UTF-8, trailing garbage.
        for bad in [
            &b"[]"[..],
            b"null",
            b"\"valid\"",
            b"",
            b"<html><body>502 Bad Gateway</body></html>",
            b"{\"email_status\": \"valid\", \"x\": [1, }",
            b"{\"email_status\": \"valid\", \"x\": \"\xff\"}",
            b"{\"email_status\": \"valid\"} {}",
            b"{\"email_status\": \"valid\", \"x\": tru}",
            b"{\"email_status\": \"val",
            b"{\"email_status\": \"valid\", \"x\": 1e400}",
        ] {
            assert!(
                parse_verdict(bad).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
            assert!(serde_json::from_slice::<Value>(bad).map_or(true, |v| !v.is_object()));
        }
    }

    #[test]
    fn the_mocks_answers_read_as_before() {
        // What the mock sends for every documented status (leadmagic-mock's verdict table),
        // read by the typed reader and by the `serde_json::Value` the client read before.
        let bodies = [
            json!({"email": "a@b.co", "email_status": "valid", "credits_consumed": 0.05,
                   "message": "Email is valid.", "is_domain_catch_all": false,
                   "mx_record": "aspmx.l.google.com", "mx_provider": "Google Workspace",
                   "mx_security_gateway": false, "company_name": "B Inc",
                   "company_industry": "Software", "company_size": "11-50",
                   "company_founded": 2001, "company_linkedin_url": "https://l.example/b",
                   "company_location": {"locality": "Austin", "region": "Texas",
                                        "country": "United States"}}),
            json!({"email": "x@y.co", "email_status": "catch_all", "credits_consumed": 0,
                   "message": "Catch-all domain.", "is_domain_catch_all": true,
                   "mx_record": null, "mx_provider": null, "mx_security_gateway": null}),
            json!({"email": "x@y.co", "email_status": "unknown", "credits_consumed": 0,
                   "message": "Unable to verify."}),
        ];
        for body in bodies {
            let verdict = parse_verdict(&serde_json::to_vec(&body).unwrap()).unwrap();
            let field = |name: &str| body.get(name).and_then(Value::as_str).map(String::from);
            assert_eq!(verdict.email, field("email"));
            assert_eq!(verdict.message, field("message"));
            assert_eq!(verdict.mx_record, field("mx_record"));
            assert_eq!(
                verdict.status.as_ref().map(Status::as_str),
                field("email_status").as_deref()
            );
            assert_eq!(
                verdict.credits_consumed,
                body.get("credits_consumed").and_then(number)
            );
            assert_eq!(
                verdict.is_domain_catch_all,
                body.get("is_domain_catch_all").and_then(Value::as_bool)
            );
        }
    }

    #[test]
    fn the_request_urls_are_built_once_toward_the_base_urls_origin() {
        let config = |base: &str| ClientConfig {
            base_url: base.into(),
            api_key: ApiKey::new("k").unwrap(),
            timeout: Duration::from_secs(1),
            max_idle: 1,
        };
        for base in [
            "https://api.x.io",
            "https://api.x.io/",
            "http://127.0.0.1:8080",
            "https://api.x.io/prefix/",
        ] {
            let client = Client::new(&config(base)).unwrap();
            let origin = reqwest::Url::parse(base).unwrap().origin();
            for (target, path) in [
                (&client.validate_url, VALIDATE_PATH),
                (&client.credits_url, CREDITS_PATH),
            ] {
                let Target::Parsed(url) = target else {
                    panic!("{base}: {target:?}")
                };
                assert_eq!(url.origin(), origin, "{base} {url}");
                assert!(url.path().ends_with(path), "{url}");
                assert!(url.query().is_none() && url.fragment().is_none(), "{url}");
            }
        }
        // A base URL that does not parse is refused by each request, as before: nothing sent,
        // nothing charged, worth the first contact's retries.
        let client = Client::new(&config("http://[::1")).unwrap();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        for e in [
            runtime.block_on(client.credits()).unwrap_err(),
            runtime.block_on(client.validate("a@b.co", 0)).unwrap_err(),
        ] {
            assert!(
                matches!(
                    e,
                    ApiError::Transient {
                        maybe_charged: false,
                        ..
                    }
                ),
                "{e:?}"
            );
        }
    }

    #[test]
    fn the_scrubber_leaves_clean_text_as_it_is_and_finds_every_window() {
        const KEY: &str = "lmk-7Q2x9SECRETw4Zr8pV1nB6tY3hJ5";
        let scrub = Scrubber::new(KEY, &["mailsift/0.1.0"]);
        let clean = String::from("Email is valid. aspmx.l.google.com");
        let ptr = clean.as_ptr();
        let kept = scrub.owned(clean);
        assert_eq!(kept.as_ptr(), ptr, "no copy when nothing is secret");
        // Every window of the key, at every offset in a text, is found.
        for start in 0..=KEY.len() - Scrubber::MIN_RUN {
            let piece = &KEY[start..start + Scrubber::MIN_RUN];
            for pad in 0..10 {
                // '#' is not in the key: the match is the piece, no more.
                let text = format!("{}{piece}!", "#".repeat(pad));
                let want = format!("{}{}!", "#".repeat(pad), Scrubber::REDACTED);
                assert_eq!(scrub.owned(text.clone()), want, "{text}");
            }
        }
        // A key shorter than a window is found whole only.
        let short = Scrubber::new("abcdef", &[]);
        assert_eq!(short.text("xxabcdefyy abcde"), "xx[redacted]yy abcde");
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
            classify::<JsonObject>(
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
        let scrub = Scrubber::new("", &[]);
        for body in [
            "",
            "{\"email_status\": \"val",
            "<html>",
            "[]",
            "null",
            "\"valid\"",
        ] {
            let body = body.as_bytes();
            let e =
                classify::<JsonObject>(StatusCode::OK, body, Meta::default(), &scrub).unwrap_err();
            assert!(e.is_retryable() && e.maybe_charged(), "{body:?}");
            let e =
                classify::<VerdictBody>(StatusCode::OK, body, Meta::default(), &scrub).unwrap_err();
            assert!(e.is_retryable() && e.maybe_charged(), "{body:?}");
        }
        assert!(classify::<JsonObject>(StatusCode::OK, b"{}", Meta::default(), &scrub).is_ok());
        assert!(classify::<VerdictBody>(StatusCode::OK, b"{}", Meta::default(), &scrub).is_ok());
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
    fn a_header_sent_twice_counts_by_its_first_value_as_a_lookup_would() {
        let mut map = headers(&[("date", "Sun, 06 Nov 1994 08:49:37 GMT")]);
        for (name, value) in [
            ("x-credits-remaining", "10"),
            ("X-Credits-Remaining", "20"),
            ("ratelimit-limit", "300"),
            ("x-ratelimit-limit", "1000"),
            ("ratelimit-limit", "600"),
        ] {
            map.append(name, HeaderValue::from_static(value));
        }
        // A value that is not visible ASCII is no value: the legacy spelling is read instead.
        map.append(
            "ratelimit-remaining",
            HeaderValue::from_bytes(b"\xff2").unwrap(),
        );
        map.append("x-ratelimit-remaining", HeaderValue::from_static("7"));
        let meta = Meta::from_headers(&map);
        assert_eq!(meta.credits_remaining, Some(10.0));
        assert_eq!(meta.rate_limit, Some(300));
        assert_eq!(meta.rate_remaining, Some(7));
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
            // A server's "never" is a week in either form, not a wait past the run's life.
            ("1e12", Some(MAX_RETRY_AFTER)),
            ("Fri, 31 Dec 9999 23:59:59 GMT", Some(MAX_RETRY_AFTER)),
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
            let e = classify::<JsonObject>(
                StatusCode::from_u16(code).unwrap(),
                echo.as_bytes(),
                Meta::default(),
                &scrub,
            )
            .unwrap_err();
            assert!(!e.to_string().contains("0123456789"), "{code}: {e}");
        }
        let html = b"<pre>X-API-Key: sk_live_0123456789abcdef</pre>";
        let e = classify::<VerdictBody>(StatusCode::OK, html, Meta::default(), &scrub).unwrap_err();
        assert!(!e.to_string().contains("0123456789"), "{e}");
        let verdict = parse_verdict(
            br#"{"email_status": "sk_live_0123456789abcdef",
                 "message": "sk_live_0123456789abcdef", "mx_provider": "sk_live_0123456789abcdef",
                 "company_name": "sk_live_0123456789abcdef"}"#,
        )
        .unwrap()
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
        assert!(matches!(&client.validate_url,
            Target::Parsed(url) if url.as_str() == "http://127.0.0.1:9/v1/people/email-validation"));
        assert!(Client::new(&ClientConfig {
            api_key: ApiKey("bad\nkey".into()),
            ..config("http://x")
        })
        .is_err());
    }
}
