//! What the mock answers: routing, authentication, the validation flow and every body.
//!
//! Owns the mapping from a parsed request to an [`Outcome`] (a response, or a fault that the
//! connection carries out), following leadmagic-api.md: both error body shapes, the 401 / 402 /
//! 429 rules, charging, latency and injected faults. It must not touch sockets (that is
//! `http`'s job) and must never hold the state lock across an await.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Deserialize;
use serde_json::json;

use crate::chance::{fault_for, latency_for, Fault};
use crate::state::{from_micros, to_micros, InFlight, Meter, Shared, State};
use crate::verdict::{fnv1a, normalize, validation_body, verdict_for_normalized, Verdict};

pub(crate) const VALIDATION_PATH: &str = "/v1/people/email-validation";
const CREDITS_PATH: &str = "/v1/credits";
const STATS_PATH: &str = "/__mock/stats";
const ADMIN_CREDITS_PATH: &str = "/__mock/credits";
const ADMIN_KEY_PATH: &str = "/__mock/api-key";
const ADMIN_RESET_PATH: &str = "/__mock/reset";

/// A request as the router sees it, borrowed from the one hyper parsed.
#[derive(Debug)]
pub(crate) struct Request<'a> {
    pub(crate) method: &'a str,
    /// Path and query, as sent.
    pub(crate) target: &'a str,
    /// Keys presented in `X-API-Key` and `Authorization: Bearer` (at most one each).
    pub(crate) keys: [Option<&'a str>; 2],
    pub(crate) body: &'a [u8],
}

/// One response, ready to be written.
#[derive(Debug)]
pub(crate) struct Response {
    pub(crate) status: u16,
    pub(crate) html: bool,
    pub(crate) body: Vec<u8>,
    pub(crate) meter: Meter,
    pub(crate) retry_after: Option<String>,
    pub(crate) allow: Option<&'static str>,
}

/// What the connection must do with a request.
#[derive(Debug)]
pub(crate) enum Outcome {
    /// Write the response.
    Respond(Response),
    /// Write the head and half of the body, then close.
    Truncate(Response),
    /// Abort the connection with a reset.
    Reset,
    /// Answer nothing for the configured hang time, then close.
    Hang,
}

/// Answers one request. The returned guard (validations only) must live until the outcome
/// has been carried out, so `max_in_flight` covers the whole exchange.
pub(crate) async fn handle(shared: &Arc<Shared>, req: &Request<'_>) -> (Outcome, Option<InFlight>) {
    let (path, query) = req.target.split_once('?').unwrap_or((req.target, ""));
    let route = match (req.method, path) {
        ("POST", VALIDATION_PATH) => {
            let guard = shared.enter();
            return (validate(shared, req).await, Some(guard));
        }
        ("GET", CREDITS_PATH) => credits(shared, req),
        ("GET", STATS_PATH) => {
            let full = query.split('&').any(|p| p == "full=1" || p == "full=true");
            // Counted before the snapshot, so the snapshot includes the request asking for it.
            shared.lock().count_request();
            let stats = shared.stats(full);
            Reply::ok(to_json(&stats))
        }
        ("POST", ADMIN_CREDITS_PATH) => admin_credits(shared, req.body),
        ("POST", ADMIN_KEY_PATH) => admin_api_key(shared, req.body),
        ("POST", ADMIN_RESET_PATH) => {
            shared.reset_stats();
            Reply::ok(br#"{"ok":true}"#.to_vec())
        }
        (_, VALIDATION_PATH | ADMIN_CREDITS_PATH | ADMIN_KEY_PATH | ADMIN_RESET_PATH) => {
            Reply::method_not_allowed("POST")
        }
        (_, CREDITS_PATH | STATS_PATH) => Reply::method_not_allowed("GET"),
        _ => Reply::error(404, "NOT_FOUND", "No such endpoint."),
    };
    // The stats request counted itself before taking its snapshot.
    let count = !matches!((req.method, path), ("GET", STATS_PATH));
    (Outcome::Respond(finish(shared, route, count)), None)
}

/// A response before its headers are metered.
struct Reply {
    status: u16,
    body: Vec<u8>,
    allow: Option<&'static str>,
}

impl Reply {
    fn ok(body: Vec<u8>) -> Self {
        Self {
            status: 200,
            body,
            allow: None,
        }
    }

    /// The `{"error": {"code", "message", "status"}}` shape.
    fn error(status: u16, code: &str, message: &str) -> Self {
        Self {
            status,
            body: error_body(status, code, message),
            allow: None,
        }
    }

    fn method_not_allowed(allow: &'static str) -> Self {
        Self {
            allow: Some(allow),
            ..Self::error(
                405,
                "METHOD_NOT_ALLOWED",
                &format!("Method not allowed; use {allow}."),
            )
        }
    }
}

/// Counts and meters a non-validation reply. `count_request` is false for the stats endpoint,
/// which counted itself so that its snapshot includes it. A reset is counted after zeroing.
fn finish(shared: &Shared, reply: Reply, count_request: bool) -> Response {
    let now = shared.now();
    let mut st = shared.lock();
    if count_request {
        st.count_request();
    }
    respond(shared, &mut st, now, reply, 0)
}

/// Counts the status and takes the header values; called with the lock held.
fn respond(shared: &Shared, st: &mut State, now: u64, reply: Reply, cost: i64) -> Response {
    st.count_status(reply.status);
    Response {
        status: reply.status,
        html: false,
        body: reply.body,
        meter: st.meter(&shared.config, now, cost),
        retry_after: None,
        allow: reply.allow,
    }
}

/// A response for a request the connection could not parse (431, 413, 411, 400).
pub(crate) fn protocol_error(shared: &Shared, status: u16, code: &str, message: &str) -> Response {
    finish(shared, Reply::error(status, code, message), true)
}

fn unauthorized() -> Reply {
    Reply::error(401, "UNAUTHORIZED", "Invalid or missing API key")
}

fn credits(shared: &Shared, req: &Request<'_>) -> Reply {
    let st = shared.lock();
    if !st.authorized(&req.keys) {
        return unauthorized();
    }
    let balance = from_micros(st.balance());
    drop(st);
    Reply::ok(to_json(&json!({
        "credits": balance,
        "is_frozen": false,
        "credits_frozen": 0,
        "credits_liquid": balance,
        "credit_freeze_message": null,
        "credit_freeze_plan_hint": null,
    })))
}

/// What a validation arrival turned into under the first lock.
enum Admitted {
    Done(Outcome),
    Go {
        email: String,
        norm: String,
        fault: Option<Fault>,
        latency: Duration,
    },
}

async fn validate(shared: &Arc<Shared>, req: &Request<'_>) -> Outcome {
    let cfg = &shared.config;
    // Parse outside the lock: the body is the only per-request work that grows with input.
    let parsed = parse_email(req.body).map(|email| {
        let norm = normalize(&email);
        (email, norm)
    });
    let now = shared.now();
    let admitted = {
        let mut st = shared.lock();
        st.count_request();
        st.count_validation(now);
        // Every arrival with an address counts, even one refused just below: the client
        // chose to send it.
        let parsed = parsed.map(|(email, norm)| {
            let attempt = st.count_address(&norm);
            (email, norm, attempt)
        });
        if !st.authorized(&req.keys) {
            let resp = respond(shared, &mut st, now, unauthorized(), 0);
            Admitted::Done(Outcome::Respond(resp))
        } else if let Err(limited) = st.admit(cfg, now) {
            st.count_rate_limited();
            let mut resp = respond(shared, &mut st, now, too_many_requests(), 0);
            let secs = limited.retry_after_secs;
            resp.retry_after = Some(retry_after_value(cfg.retry_after_date, secs));
            Admitted::Done(Outcome::Respond(resp))
        } else {
            match parsed {
                Err(detail) => {
                    let reply = validation_error(shared, &detail);
                    Admitted::Done(Outcome::Respond(respond(shared, &mut st, now, reply, 0)))
                }
                Ok((email, norm, attempt)) => {
                    match fault_for(cfg.seed, &cfg.fault_odds(), &norm, attempt) {
                        Some(Fault::Reset) => {
                            st.count_reset();
                            Admitted::Done(Outcome::Reset)
                        }
                        Some(Fault::Hang) => {
                            st.count_hang();
                            Admitted::Done(Outcome::Hang)
                        }
                        fault => Admitted::Go {
                            latency: latency_for(cfg.seed, &cfg.latency, &norm, attempt),
                            email,
                            norm,
                            fault,
                        },
                    }
                }
            }
        }
    };
    let (email, norm, fault, latency) = match admitted {
        Admitted::Done(outcome) => return outcome,
        Admitted::Go {
            email,
            norm,
            fault,
            latency,
        } => (email, norm, fault, latency),
    };
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }

    let (reply, html) = match fault {
        Some(Fault::Status500) => (
            Reply::error(500, "INTERNAL_SERVER_ERROR", "Internal server error"),
            false,
        ),
        Some(Fault::Html5xx { bad_gateway }) => (html_5xx(bad_gateway), true),
        _ => return answer(shared, &email, &norm, fault == Some(Fault::Truncated)),
    };
    let now = shared.now();
    let mut st = shared.lock();
    let mut resp = respond(shared, &mut st, now, reply, 0);
    resp.html = html;
    Outcome::Respond(resp)
}

/// The verdict part of a validation: 402 when short of credits, the reserved error verdicts,
/// or a charged / free 200.
fn answer(shared: &Shared, email: &str, norm: &str, truncate: bool) -> Outcome {
    let verdict = verdict_for_normalized(norm);
    let cost = if verdict.is_charged() { shared.cost } else { 0 };
    // Serialise before taking the lock; a 402 throws this away, which is rare and cheap.
    let ok_body = validation_body(email, norm, verdict, from_micros(cost)).map(|b| to_json(&b));
    let now = shared.now();
    let mut st = shared.lock();
    // The verdict is not known to the real server before it works, so the balance check
    // applies to every validation, free ones included.
    let (reply, charged) = if !st.can_pay(shared.cost) {
        (
            Reply::error(
                402,
                "INSUFFICIENT_CREDITS",
                "Insufficient credits. Top up to continue.",
            ),
            0,
        )
    } else {
        match (verdict, ok_body) {
            (Verdict::Reject, _) => (
                validation_error(
                    shared,
                    &format!(
                        "The email address '{email}' was rejected (reserved prefix 'reject')."
                    ),
                ),
                0,
            ),
            (Verdict::Fail, _) | (_, None) => (
                Reply::error(500, "INTERNAL_SERVER_ERROR", "Internal server error"),
                0,
            ),
            (_, Some(body)) => {
                if cost > 0 {
                    st.charge(cost);
                } else {
                    st.answered_free();
                }
                (Reply::ok(body), cost)
            }
        }
    };
    let resp = respond(shared, &mut st, now, reply, charged);
    if truncate {
        st.count_truncated();
        Outcome::Truncate(resp)
    } else {
        Outcome::Respond(resp)
    }
}

/// The address of a validation request, or why there is none.
fn parse_email(body: &[u8]) -> Result<String, String> {
    let value: serde_json::Value = serde_json::from_slice(body)
        .map_err(|e| format!("The request body is not valid JSON: {e}."))?;
    match value.get("email") {
        Some(serde_json::Value::String(s)) => Ok(s.clone()),
        Some(_) => Err("The field 'email' must be a string.".to_owned()),
        None => Err("The field 'email' is required.".to_owned()),
    }
}

#[derive(Deserialize)]
struct CreditsChange {
    credits: Option<f64>,
    add: Option<f64>,
}

fn admin_credits(shared: &Shared, body: &[u8]) -> Reply {
    let change: CreditsChange = match serde_json::from_slice(body) {
        Ok(c) => c,
        Err(e) => {
            return validation_error(
                shared,
                &format!("Expected {{\"credits\": X}} or {{\"add\": X}}: {e}."),
            )
        }
    };
    let mut st = shared.lock();
    let balance = match (change.credits, change.add) {
        (Some(set), None) => to_micros(set),
        (None, Some(add)) => st.balance().saturating_add(to_micros(add)),
        _ => {
            drop(st);
            return validation_error(shared, "Give exactly one of 'credits' or 'add'.");
        }
    };
    st.set_balance(balance);
    drop(st);
    Reply::ok(to_json(&json!({ "credits": from_micros(balance) })))
}

#[derive(Deserialize)]
struct KeyChange {
    api_key: String,
}

fn admin_api_key(shared: &Shared, body: &[u8]) -> Reply {
    match serde_json::from_slice::<KeyChange>(body) {
        Ok(change) if !change.api_key.is_empty() => {
            shared.lock().set_api_key(&change.api_key);
            Reply::ok(br#"{"ok":true}"#.to_vec())
        }
        // The message never echoes the body: it may hold a key.
        _ => validation_error(shared, "Expected {\"api_key\": \"<non-empty key>\"}."),
    }
}

fn too_many_requests() -> Reply {
    // The legacy shape, as the docs show it for 429.
    Reply {
        status: 429,
        body: br#"{"error":"Too Many Requests","message":"Rate limit exceeded. Retry after the time given in Retry-After."}"#.to_vec(),
        allow: None,
    }
}

fn retry_after_value(as_date: bool, secs: u64) -> String {
    if as_date {
        httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(secs))
    } else {
        secs.to_string()
    }
}

fn html_5xx(bad_gateway: bool) -> Reply {
    let (status, title) = if bad_gateway {
        (502, "502 Bad Gateway")
    } else {
        (503, "503 Service Temporarily Unavailable")
    };
    Reply {
        status,
        body: format!(
            "<html>\r\n<head><title>{title}</title></head>\r\n<body>\r\n<center><h1>{title}</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n"
        )
        .into_bytes(),
        allow: None,
    }
}

fn error_body(status: u16, code: &str, message: &str) -> Vec<u8> {
    to_json(&json!({ "error": { "code": code, "message": message, "status": status } }))
}

/// A 400 in the `errors`-array shape, with `detail` saying what exactly was wrong.
fn validation_error(shared: &Shared, detail: &str) -> Reply {
    let body = json!({
        "success": false,
        "errors": [{
            "type": "https://api.leadmagic.io/errors/validation_error",
            "title": "Request validation failed. Check your input parameters.",
            "detail": detail,
            "status": 400,
            "code": "validation_error",
            "docs": "https://leadmagic.io/docs/api-reference/errors",
        }],
        "meta": {
            "request_id": request_id(shared.next_request_id()),
            "timestamp": iso8601(SystemTime::now()),
        },
    });
    Reply {
        status: 400,
        body: to_json(&body),
        allow: None,
    }
}

fn to_json<T: serde::Serialize>(value: &T) -> Vec<u8> {
    // Serialising these plain structs cannot fail; an empty object is a safe fallback anyway.
    serde_json::to_vec(value).unwrap_or_else(|_| b"{}".to_vec())
}

/// A UUID-shaped id (version 4 layout) derived from a counter.
fn request_id(n: u64) -> String {
    let a = fnv1a(&n.to_le_bytes());
    let b = fnv1a(&a.to_le_bytes());
    format!(
        "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
        a >> 32,
        (a >> 16) & 0xffff,
        a & 0x0fff,
        0x8000 | (b >> 48) & 0x3fff,
        b & 0xffff_ffff_ffff
    )
}

/// `2024-02-01T12:00:00.000Z`, without a date crate.
fn iso8601(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (year, month, day) = civil_from_days(days as i64);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_millis()
    )
}

/// Howard Hinnant's days-to-civil algorithm (proleptic Gregorian calendar).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iso8601_dates() {
        let cases: &[(u64, &str)] = &[
            (0, "1970-01-01T00:00:00.000Z"),
            (951_782_400, "2000-02-29T00:00:00.000Z"),
            (1_706_788_800, "2024-02-01T12:00:00.000Z"),
            (4_102_444_799, "2099-12-31T23:59:59.000Z"),
        ];
        for (secs, want) in cases {
            let t = UNIX_EPOCH + Duration::from_secs(*secs);
            assert_eq!(iso8601(t), *want);
        }
    }

    #[test]
    fn request_ids_look_like_uuids() {
        for n in 0..50 {
            let id = request_id(n);
            let parts: Vec<usize> = id.split('-').map(str::len).collect();
            assert_eq!(parts, vec![8, 4, 4, 4, 12], "{id}");
            assert_eq!(&id[14..15], "4");
        }
        assert_ne!(request_id(1), request_id(2));
    }

    #[test]
    fn email_parsing() {
        let cases: &[(&[u8], Result<&str, &str>)] = &[
            (br#"{"email":"a@b.com"}"#, Ok("a@b.com")),
            (
                br#"{"email":"a@b.com","first_name":"A","last_name":"B","x":1}"#,
                Ok("a@b.com"),
            ),
            (br#"{"email":""}"#, Ok("")),
            (br#"{"email":5}"#, Err("must be a string")),
            (br#"{}"#, Err("is required")),
            (br#"["a@b.com"]"#, Err("is required")),
            (b"not json", Err("not valid JSON")),
            (b"", Err("not valid JSON")),
        ];
        for (body, want) in cases {
            match (parse_email(body), want) {
                (Ok(got), Ok(want)) => assert_eq!(got, *want),
                (Err(got), Err(want)) => assert!(got.contains(want), "{got}"),
                (got, want) => panic!(
                    "{:?}: got {got:?}, want {want:?}",
                    String::from_utf8_lossy(body)
                ),
            }
        }
    }

    #[test]
    fn retry_after_forms() {
        assert_eq!(retry_after_value(false, 7), "7");
        let date = retry_after_value(true, 7);
        assert!(httpdate::parse_http_date(&date).is_ok(), "{date}");
    }
}
