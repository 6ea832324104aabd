//! The mock's HTTP/1.1 server: hyper for the protocol, the raw socket for the faults.
//!
//! Owns the sockets: the accept loop, one hyper connection per socket (keep-alive, HTTP/1.0,
//! `Expect: 100-continue`, pipelining), the request limits (431 / 413 / 411) answered with the
//! same headers as every other response, response headers and bodies, and the faults hyper
//! will not produce: a reset (`SO_LINGER 0`), a hang and a truncated body. For those the
//! service returns an [`Abort`] instead of a response; hyper hands it back with nothing
//! written, and the connection takes its socket back from hyper to carry the fault out. It
//! must not decide what to answer (that is `routes`) and must not hold the state lock.

use std::convert::Infallible;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http_body_util::BodyExt as _;
use hyper::body::{Bytes, Frame, Incoming, SizeHint};
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::routes::{self, Outcome, Request, Response};
use crate::state::{from_micros, InFlight, Shared};

/// Headers accepted per request; more is answered 431 like an oversized head.
const MAX_HEADERS: usize = 64;

/// Accepts connections until `cancel` fires. Every connection task holds a clone of `done`, so
/// the receiver sees the channel close once the last connection has gone.
pub(crate) async fn serve(
    listener: TcpListener,
    shared: Arc<Shared>,
    cancel: CancellationToken,
    done: mpsc::Sender<()>,
) {
    loop {
        let accepted = tokio::select! {
            _ = cancel.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, _peer)) => {
                let shared = Arc::clone(&shared);
                let cancel = cancel.clone();
                let done = done.clone();
                tokio::spawn(async move {
                    let _done = done;
                    tokio::select! {
                        _ = cancel.cancelled() => {}
                        result = connection(stream, shared) => {
                            if let Err(e) = result {
                                tracing::debug!("connection ended: {e}");
                            }
                        }
                    }
                });
            }
            Err(e) => {
                // Out of file descriptors and the like: back off briefly instead of spinning,
                // and keep serving the connections already open.
                tracing::warn!("accept failed: {e}");
                tokio::select! {
                    _ = cancel.cancelled() => break,
                    _ = tokio::time::sleep(Duration::from_millis(50)) => {}
                }
            }
        }
    }
}

/// What the service returns instead of a response: a fault for the connection to carry out on
/// the raw socket, with the validation's in-flight guard, which lives until it is done.
#[derive(Debug)]
pub(crate) struct Abort {
    fault: SocketFault,
    _in_flight: Option<InFlight>,
}

#[derive(Debug)]
enum SocketFault {
    /// Abort the connection with a reset.
    Reset,
    /// Answer nothing for the configured hang time, then close.
    Hang,
    /// Write these bytes (a head and half a body), then close.
    Truncate(Vec<u8>),
    /// The request body never arrived whole: close without an answer.
    Close,
}

impl fmt::Display for Abort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "injected fault: {:?}", self.fault)
    }
}

impl std::error::Error for Abort {}

/// The service's future; boxed, because hyper polls it by `&mut` and an `async fn` is not
/// `Unpin`.
type Answer = Pin<Box<dyn Future<Output = Result<hyper::Response<Body>, Abort>> + Send>>;

/// Serves one connection until the peer closes, asks to close, or a fault ends it.
async fn connection(stream: TcpStream, shared: Arc<Shared>) -> std::io::Result<()> {
    // Each response goes out in one write; waiting for more data (Nagle) would only add delay.
    stream.set_nodelay(true)?;
    let cfg = &shared.config;
    let service = {
        let shared = Arc::clone(&shared);
        hyper::service::service_fn(move |req| -> Answer {
            Box::pin(answer(Arc::clone(&shared), req))
        })
    };
    let mut conn = http1::Builder::new()
        // Answer a request whose sender has finished writing, as the API does.
        .half_close(true)
        // hyper's own 431 carries none of the API's headers: let heads a little over our
        // limits through to `refusal`, which answers 431 like every other response.
        .max_headers(MAX_HEADERS * 4)
        .max_buf_size(cfg.max_head_bytes.saturating_mul(4).max(64 * 1024))
        .serve_connection(TokioIo::new(stream), service);
    let ended = std::future::poll_fn(|cx| conn.poll_without_shutdown(cx)).await;
    let mut stream = conn.into_parts().io.into_inner();
    // The fault, if the service returned one; it lives (with its in-flight guard) until done.
    let abort = ended.as_ref().err().and_then(|e| {
        let cause = std::error::Error::source(e)?;
        cause.downcast_ref::<Abort>()
    });
    let Some(abort) = abort else {
        // Done, or a request hyper could not parse (it answered 400 or 431 itself, and the
        // rest of the request may still be arriving), or a broken socket.
        if let Err(e) = &ended {
            tracing::debug!("connection: {e}");
        }
        return close_gracefully(&mut stream).await;
    };
    match &abort.fault {
        SocketFault::Reset => {
            // SO_LINGER 0: closing sends RST instead of FIN, the client sees a reset.
            stream.set_zero_linger()
        }
        SocketFault::Hang => {
            tokio::time::sleep(cfg.hang).await;
            Ok(())
        }
        SocketFault::Truncate(bytes) => {
            stream.write_all(bytes).await?;
            stream.shutdown().await
        }
        SocketFault::Close => Ok(()),
    }
}

/// Closes after the last answer: the request may still be arriving (an oversized body), and
/// closing with unread data would turn that answer into a reset. So: FIN first, then read
/// (at most 1 MiB, for at most 2 s) until the peer closes too.
async fn close_gracefully(stream: &mut TcpStream) -> std::io::Result<()> {
    stream.shutdown().await?;
    let mut sink = [0u8; 8192];
    let mut drained = 0usize;
    let drain = async {
        while drained < (1 << 20) {
            match stream.read(&mut sink).await {
                Ok(0) | Err(_) => break,
                Ok(n) => drained += n,
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(2), drain).await;
    Ok(())
}

/// Answers one request: a refusal, a response, or an [`Abort`].
async fn answer(
    shared: Arc<Shared>,
    req: hyper::Request<Incoming>,
) -> Result<hyper::Response<Body>, Abort> {
    if let Some((status, code, message)) = refusal(&req, &shared.config) {
        let resp = routes::protocol_error(&shared, status, code, message);
        return Ok(to_hyper(resp, Some("close"), None));
    }
    let (head, body) = req.into_parts();
    // hyper closes an HTTP/1.0 connection unless the response itself says keep-alive.
    let connection = keeps_1_0_alive(&head).then_some("keep-alive");
    // Reading the body is what makes hyper send `100 Continue` to a client that asked.
    let Ok(body) = body.collect().await.map(|b| b.to_bytes()) else {
        return Err(Abort {
            fault: SocketFault::Close,
            _in_flight: None,
        });
    };
    let request = Request {
        method: head.method.as_str(),
        target: head.uri.path_and_query().map_or("/", |p| p.as_str()),
        keys: keys(&head.headers),
        body: &body,
    };
    let (outcome, in_flight) = routes::handle(&shared, &request).await;
    log_outcome(&request, &outcome);
    let fault = match outcome {
        Outcome::Respond(resp) => return Ok(to_hyper(resp, connection, in_flight)),
        Outcome::Truncate(resp) => SocketFault::Truncate(truncated(&resp)),
        Outcome::Reset => SocketFault::Reset,
        Outcome::Hang => SocketFault::Hang,
    };
    Err(Abort {
        fault,
        _in_flight: in_flight,
    })
}

/// Why a request is refused before it is read, as (status, code, message): a head over
/// `max_head_bytes` or with more than [`MAX_HEADERS`] headers (431), a chunked body (411), a
/// body over `max_body_bytes` (413).
fn refusal<B>(
    req: &hyper::Request<B>,
    cfg: &crate::MockConfig,
) -> Option<(u16, &'static str, &'static str)> {
    let headers = req.headers();
    if headers.len() > MAX_HEADERS || head_len(req) > cfg.max_head_bytes {
        return Some((
            431,
            "REQUEST_HEADER_FIELDS_TOO_LARGE",
            "Request head too large.",
        ));
    }
    if headers.contains_key(header::TRANSFER_ENCODING) {
        return Some((
            411,
            "LENGTH_REQUIRED",
            "Chunked request bodies are not supported; send Content-Length.",
        ));
    }
    // hyper has checked that a Content-Length is a number, and the same in every copy.
    let length = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
        .unwrap_or(0);
    if length > cfg.max_body_bytes as u64 {
        return Some((413, "PAYLOAD_TOO_LARGE", "Request body too large."));
    }
    None
}

/// The length of a request head as the client wrote it (`METHOD TARGET HTTP/1.1`, then
/// `name: value` lines, then a blank line), up to the whitespace hyper trims.
fn head_len<B>(req: &hyper::Request<B>) -> usize {
    let target = req.uri().path_and_query().map_or(1, |p| p.as_str().len());
    let request_line = req.method().as_str().len() + 1 + target + " HTTP/1.1\r\n".len();
    let fields: usize = req
        .headers()
        .iter()
        .map(|(name, value)| name.as_str().len() + 2 + value.len() + 2)
        .sum();
    request_line + fields + 2
}

/// Whether an HTTP/1.0 request asks for keep-alive (HTTP/1.1 keeps alive unless it says close,
/// which hyper handles).
fn keeps_1_0_alive(head: &hyper::http::request::Parts) -> bool {
    head.version == hyper::Version::HTTP_10
        && head
            .headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|token| token.trim().eq_ignore_ascii_case("keep-alive"))
}

/// The keys presented in `X-API-Key` and `Authorization: Bearer` (the last of each, trimmed).
fn keys(headers: &HeaderMap) -> [Option<&str>; 2] {
    let last = |name: &str| {
        let value = headers.get_all(name).iter().next_back()?;
        std::str::from_utf8(value.as_bytes()).ok().map(str::trim)
    };
    let bearer = last("authorization").and_then(|v| {
        let (scheme, key) = v.split_once(' ')?;
        scheme.eq_ignore_ascii_case("bearer").then(|| key.trim())
    });
    [last("x-api-key"), bearer]
}

/// One debug line per request: method, path (never the query or a header: no key can leak)
/// and what was done.
fn log_outcome(req: &Request<'_>, outcome: &Outcome) {
    if !tracing::enabled!(tracing::Level::DEBUG) {
        return;
    }
    let method = req.method;
    let path = req.target.split('?').next().unwrap_or("");
    match outcome {
        Outcome::Respond(r) => tracing::debug!("{method} {path} -> {}", r.status),
        Outcome::Truncate(r) => tracing::debug!("{method} {path} -> {} (truncated)", r.status),
        Outcome::Reset => tracing::debug!("{method} {path} -> reset"),
        Outcome::Hang => tracing::debug!("{method} {path} -> hang"),
    }
}

/// The headers of a response: type, length, the rate-limit and credit headers every response
/// carries, and `Retry-After`, `Allow` and `Connection` where they apply.
fn headers(resp: &Response, connection: Option<&str>) -> HeaderMap {
    use std::fmt::Write as _;
    let m = &resp.meter;
    let content_type = if resp.html {
        "text/html; charset=utf-8"
    } else {
        "application/json"
    };
    // The numbers are written into one buffer and each header value is a slice of it: two
    // allocations per response rather than one per header. The mock shares the cores with
    // the mailsift it serves in the benches, so its CPU per request bounds their rows/s.
    let mut text = String::with_capacity(192);
    let mut spans = [(0, 0); NUMBER_HEADERS.len()];
    let mut put = |i: usize, value: fmt::Arguments| {
        let start = text.len();
        let _ = text.write_fmt(value);
        spans[i] = (start, text.len());
    };
    put(0, format_args!("{}", resp.body.len()));
    put(1, format_args!("{}", m.limit));
    put(2, format_args!("{}", m.remaining));
    put(3, format_args!("{}", m.reset_secs));
    put(4, format_args!("{}", m.limit));
    put(5, format_args!("{}", m.remaining));
    put(6, format_args!("{}", m.reset_secs));
    put(7, format_args!("{}", m.daily_remaining));
    put(8, format_args!("{:.2}", m.daily_percent));
    put(9, format_args!("{}", m.soft));
    put(10, format_args!("{:.2}", from_micros(m.credits)));
    put(11, format_args!("{}", from_micros(m.cost)));
    let text = Bytes::from(text);
    let mut map = HeaderMap::with_capacity(NUMBER_HEADERS.len() + 4);
    map.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    for (name, (start, end)) in NUMBER_HEADERS.iter().zip(spans) {
        // Every value above is ASCII digits, a point or a fixed word.
        if let Ok(value) = HeaderValue::from_maybe_shared(text.slice(start..end)) {
            map.insert(name.clone(), value);
        }
    }
    let rare = [
        (header::RETRY_AFTER, resp.retry_after.as_deref()),
        (header::ALLOW, resp.allow),
        (header::CONNECTION, connection),
    ];
    for (name, value) in rare {
        // An HTTP-date, a method list or a fixed word; an empty one is not sent.
        if let Some(Ok(value)) = value.filter(|v| !v.is_empty()).map(HeaderValue::from_str) {
            map.insert(name, value);
        }
    }
    map
}

/// The headers of every response after `Content-Type`, in the order they are sent; their
/// values are written by [`headers`] in this order.
static NUMBER_HEADERS: [HeaderName; 12] = [
    header::CONTENT_LENGTH,
    HeaderName::from_static("ratelimit-limit"),
    HeaderName::from_static("ratelimit-remaining"),
    HeaderName::from_static("ratelimit-reset"),
    HeaderName::from_static("x-ratelimit-limit"),
    HeaderName::from_static("x-ratelimit-remaining"),
    HeaderName::from_static("x-ratelimit-reset"),
    HeaderName::from_static("x-ratelimit-remaining-daily"),
    HeaderName::from_static("x-ratelimit-daily-usage-percent"),
    HeaderName::from_static("x-ratelimit-soft-mode"),
    HeaderName::from_static("x-credits-remaining"),
    HeaderName::from_static("x-credits-cost"),
];

fn to_hyper(
    resp: Response,
    connection: Option<&str>,
    in_flight: Option<InFlight>,
) -> hyper::Response<Body> {
    let headers = headers(&resp, connection);
    let mut out = hyper::Response::new(Body {
        data: Some(Bytes::from(resp.body)),
        _in_flight: in_flight,
    });
    *out.status_mut() = hyper::StatusCode::from_u16(resp.status)
        .unwrap_or(hyper::StatusCode::INTERNAL_SERVER_ERROR);
    *out.headers_mut() = headers;
    out
}

/// The bytes of a truncated response: the whole head, promising the whole body, and only the
/// first half of that body.
fn truncated(resp: &Response) -> Vec<u8> {
    let status = hyper::StatusCode::from_u16(resp.status).unwrap_or_default();
    let reason = status.canonical_reason().unwrap_or("Unknown");
    let mut out = format!("HTTP/1.1 {} {reason}\r\n", status.as_u16()).into_bytes();
    for (name, value) in &headers(resp, Some("close")) {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(&resp.body[..resp.body.len() / 2]);
    out
}

/// A response body in one piece. It holds the validation's in-flight guard until hyper has
/// taken the bytes, so `max_in_flight` covers the whole exchange.
pub(crate) struct Body {
    data: Option<Bytes>,
    _in_flight: Option<InFlight>,
}

impl hyper::body::Body for Body {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        Poll::Ready(self.data.take().map(|data| Ok(Frame::data(data))))
    }

    fn is_end_stream(&self) -> bool {
        self.data.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.data.as_ref().map_or(0, |d| d.len() as u64))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Header lines of a request.
    type Head<'a> = Vec<(&'a str, String)>;

    fn request(head: &[(&str, String)]) -> hyper::Request<()> {
        let mut req = hyper::Request::builder()
            .method("POST")
            .uri("/v1/people/email-validation");
        for (name, value) in head {
            req = req.header(*name, value);
        }
        req.body(()).expect("a request")
    }

    #[test]
    fn refusals_before_the_body_is_read() {
        let cfg = crate::MockConfig {
            max_head_bytes: 1024,
            max_body_bytes: 100,
            ..crate::MockConfig::default()
        };
        let many: Head = (0..=MAX_HEADERS).map(|i| ("x-n", i.to_string())).collect();
        let cases: Vec<(Head, Option<u16>)> = vec![
            (vec![], None),
            (vec![("content-length", "12".into())], None),
            (vec![("content-length", "100".into())], None),
            (vec![("content-length", "101".into())], Some(413)),
            (vec![("transfer-encoding", "chunked".into())], Some(411)),
            (vec![("x-big", "a".repeat(1000))], Some(431)),
            (many[..MAX_HEADERS].to_vec(), None),
            (many, Some(431)),
        ];
        for (head, want) in cases {
            let got = refusal(&request(&head), &cfg).map(|r| r.0);
            assert_eq!(got, want, "{head:?}");
        }
    }

    #[test]
    fn head_length_counts_the_request_as_written() {
        let req = request(&[("host", "x".into()), ("content-length", "12".into())]);
        let written =
            "POST /v1/people/email-validation HTTP/1.1\r\nhost: x\r\ncontent-length: 12\r\n\r\n";
        assert_eq!(head_len(&req), written.len());
    }

    #[test]
    fn keys_from_both_headers() {
        type Keys<'a> = [Option<&'a str>; 2];
        let cases: &[(&[(&str, &str)], Keys)] = &[
            (&[("x-api-key", "k1")], [Some("k1"), None]),
            (&[("X-API-KEY", " k2 ")], [Some("k2"), None]),
            (&[("Authorization", "Bearer k3")], [None, Some("k3")]),
            (&[("authorization", "bearer k4")], [None, Some("k4")]),
            (&[("Authorization", "Basic k5")], [None, None]),
            (
                &[("x-api-key", "old"), ("x-api-key", "new")],
                [Some("new"), None],
            ),
            (&[], [None, None]),
        ];
        for (head, want) in cases {
            let mut map = HeaderMap::new();
            for (name, value) in *head {
                map.append(
                    HeaderName::try_from(*name).expect("a name"),
                    HeaderValue::from_static(value),
                );
            }
            assert_eq!(keys(&map), *want, "{head:?}");
        }
    }

    #[test]
    fn a_truncated_response_promises_the_whole_body_and_sends_half() {
        let resp = Response {
            status: 200,
            html: false,
            body: b"0123456789".to_vec(),
            meter: crate::state::Meter {
                limit: 3000,
                remaining: 2999,
                reset_secs: 60,
                daily_remaining: 10,
                daily_percent: 0.0,
                soft: true,
                credits: 0,
                cost: 50_000,
            },
            retry_after: None,
            allow: None,
        };
        let bytes = truncated(&resp);
        let text = String::from_utf8(bytes).expect("ASCII");
        assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
        assert!(text.contains("\r\ncontent-length: 10\r\n"), "{text}");
        assert!(text.contains("\r\nx-credits-cost: 0.05\r\n"), "{text}");
        assert!(text.ends_with("\r\n\r\n01234"), "{text}");
    }
}
