//! The mock's hand-rolled HTTP/1.1 server: accept loop, keep-alive connections, request
//! framing and response bytes.
//!
//! Owns the sockets: reading request heads (`httparse`) and `Content-Length` bodies, the size
//! limits (431 / 413) and the 411 for chunked bodies, writing responses, and carrying out the
//! byte-level faults (reset with `SO_LINGER 0`, hang, truncated body) that a framework would
//! not allow. It must not decide what to answer (that is `routes`) and must not hold the state
//! lock.

use std::io::Write as _;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::routes::{self, Outcome, Request, Response};
use crate::state::{from_micros, Shared};

/// Headers parsed per request; more than this is answered 431 like an oversized head.
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
                        result = connection(stream, &shared) => {
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

/// What the first look at a request head found.
#[derive(Debug, PartialEq)]
enum Scan {
    /// The head is not complete yet.
    Partial,
    Complete(Framing),
    /// Answer this status and close.
    Refuse(u16, &'static str, &'static str),
}

/// How a request is framed on the wire.
#[derive(Debug, PartialEq)]
struct Framing {
    head_len: usize,
    content_length: usize,
    has_transfer_encoding: bool,
    close: bool,
    /// HTTP/1.0 with `Connection: keep-alive`: the response must say so too.
    keep_alive_1_0: bool,
    /// `Expect: 100-continue`: the client (curl, for bodies over 1 KiB) waits for a go-ahead.
    expect_continue: bool,
}

fn scan_head(buf: &[u8], max_head: usize) -> Scan {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let head_len = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => {
            return if buf.len() > max_head {
                too_large_head()
            } else {
                Scan::Partial
            };
        }
        Err(httparse::Error::TooManyHeaders) => return too_large_head(),
        Err(_) => return Scan::Refuse(400, "BAD_REQUEST", "Malformed HTTP request."),
    };
    if head_len > max_head {
        return too_large_head();
    }
    let http_1_0 = req.version == Some(0);
    let mut framing = Framing {
        head_len,
        content_length: 0,
        has_transfer_encoding: false,
        close: http_1_0,
        keep_alive_1_0: false,
        expect_continue: false,
    };
    let mut seen_length: Option<usize> = None;
    for h in req.headers.iter() {
        if h.name.eq_ignore_ascii_case("content-length") {
            let parsed = std::str::from_utf8(h.value)
                .ok()
                .and_then(|v| v.trim().parse::<usize>().ok());
            match (parsed, seen_length) {
                (Some(n), None) => seen_length = Some(n),
                (Some(n), Some(prev)) if n == prev => {}
                _ => return Scan::Refuse(400, "BAD_REQUEST", "Invalid Content-Length."),
            }
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            framing.has_transfer_encoding = true;
        } else if h.name.eq_ignore_ascii_case("expect") {
            framing.expect_continue = h.value.trim_ascii().eq_ignore_ascii_case(b"100-continue");
        } else if h.name.eq_ignore_ascii_case("connection") {
            for token in h.value.split(|&b| b == b',') {
                let token = token.trim_ascii();
                if token.eq_ignore_ascii_case(b"close") {
                    framing.close = true;
                } else if token.eq_ignore_ascii_case(b"keep-alive") && http_1_0 {
                    framing.close = false;
                    framing.keep_alive_1_0 = true;
                }
            }
        }
    }
    framing.content_length = seen_length.unwrap_or(0);
    Scan::Complete(framing)
}

fn too_large_head() -> Scan {
    Scan::Refuse(
        431,
        "REQUEST_HEADER_FIELDS_TOO_LARGE",
        "Request head too large.",
    )
}

/// The method, target and keys of a complete head (parsed a second time, after the body has
/// been read, so the borrow of the buffer does not span the reads).
fn request_from<'a>(head: &'a [u8], body: &'a [u8]) -> Option<Request<'a>> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    req.parse(head).ok()?;
    let mut keys = [None, None];
    for h in req.headers.iter() {
        if h.name.eq_ignore_ascii_case("x-api-key") {
            keys[0] = std::str::from_utf8(h.value).ok().map(str::trim);
        } else if h.name.eq_ignore_ascii_case("authorization") {
            keys[1] = std::str::from_utf8(h.value).ok().and_then(|v| {
                let (scheme, key) = v.trim().split_once(' ')?;
                scheme.eq_ignore_ascii_case("bearer").then(|| key.trim())
            });
        }
    }
    Some(Request {
        method: req.method?,
        target: req.path?,
        keys,
        body,
    })
}

/// Reads more bytes into `buf`; 0 means the peer closed.
async fn read_more(stream: &mut TcpStream, buf: &mut Vec<u8>) -> std::io::Result<usize> {
    buf.reserve(4096);
    stream.read_buf(buf).await
}

/// Serves one connection: requests one after the other until the peer closes, asks to close,
/// or a fault ends it.
async fn connection(mut stream: TcpStream, shared: &Arc<Shared>) -> std::io::Result<()> {
    // Each response goes out in one write; waiting for more data (Nagle) would only add delay.
    stream.set_nodelay(true)?;
    let cfg = &shared.config;
    let mut buf: Vec<u8> = Vec::with_capacity(4096);
    let mut out: Vec<u8> = Vec::with_capacity(2048);
    loop {
        let framing = loop {
            if !buf.is_empty() {
                match scan_head(&buf, cfg.max_head_bytes) {
                    Scan::Complete(f) => break f,
                    Scan::Partial => {}
                    Scan::Refuse(status, code, message) => {
                        let resp = routes::protocol_error(shared, status, code, message);
                        return refuse(&mut stream, &mut out, &resp).await;
                    }
                }
            }
            if read_more(&mut stream, &mut buf).await? == 0 {
                return Ok(());
            }
        };
        if framing.has_transfer_encoding {
            let resp = routes::protocol_error(
                shared,
                411,
                "LENGTH_REQUIRED",
                "Chunked request bodies are not supported; send Content-Length.",
            );
            return refuse(&mut stream, &mut out, &resp).await;
        }
        if framing.content_length > cfg.max_body_bytes {
            let resp =
                routes::protocol_error(shared, 413, "PAYLOAD_TOO_LARGE", "Request body too large.");
            return refuse(&mut stream, &mut out, &resp).await;
        }
        let total = framing.head_len + framing.content_length;
        if framing.expect_continue && buf.len() < total {
            stream.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").await?;
        }
        while buf.len() < total {
            if read_more(&mut stream, &mut buf).await? == 0 {
                return Ok(());
            }
        }

        let handled = match request_from(&buf[..framing.head_len], &buf[framing.head_len..total]) {
            Some(req) => Some(routes::handle(shared, &req).await),
            None => None,
        };
        let Some((outcome, _in_flight)) = handled else {
            let resp =
                routes::protocol_error(shared, 400, "BAD_REQUEST", "Malformed HTTP request.");
            return refuse(&mut stream, &mut out, &resp).await;
        };
        log_outcome(&buf[..framing.head_len], &outcome);
        match outcome {
            Outcome::Respond(resp) => {
                write_response(&mut out, &resp, &framing);
                stream.write_all(&out).await?;
                if framing.close {
                    return stream.shutdown().await;
                }
            }
            Outcome::Truncate(resp) => {
                let head_len = write_response(&mut out, &resp, &framing);
                let cut = head_len + resp.body.len() / 2;
                stream.write_all(out.get(..cut).unwrap_or(&out)).await?;
                return stream.shutdown().await;
            }
            Outcome::Reset => {
                // SO_LINGER 0: closing sends RST instead of FIN, the client sees a reset.
                stream.set_zero_linger()?;
                return Ok(());
            }
            Outcome::Hang => {
                tokio::time::sleep(cfg.hang).await;
                return Ok(());
            }
        }
        buf.drain(..total);
    }
}

/// One debug line per request: method, path (never the query or a header: no key can leak)
/// and what was done.
fn log_outcome(head: &[u8], outcome: &Outcome) {
    if !tracing::enabled!(tracing::Level::DEBUG) {
        return;
    }
    let line = head.split(|&b| b == b'\r').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let mut parts = line.split(' ');
    let method = parts.next().unwrap_or("");
    let path = parts.next().unwrap_or("").split('?').next().unwrap_or("");
    match outcome {
        Outcome::Respond(r) => tracing::debug!("{method} {path} -> {}", r.status),
        Outcome::Truncate(r) => tracing::debug!("{method} {path} -> {} (truncated)", r.status),
        Outcome::Reset => tracing::debug!("{method} {path} -> reset"),
        Outcome::Hang => tracing::debug!("{method} {path} -> hang"),
    }
}

/// Sends a refusal, then closes gracefully: the request may still be arriving (an oversized
/// body), and closing with unread data would turn our answer into a reset.
async fn refuse(stream: &mut TcpStream, out: &mut Vec<u8>, resp: &Response) -> std::io::Result<()> {
    let framing = Framing {
        head_len: 0,
        content_length: 0,
        has_transfer_encoding: false,
        close: true,
        keep_alive_1_0: false,
        expect_continue: false,
    };
    write_response(out, resp, &framing);
    stream.write_all(out).await?;
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

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        402 => "Payment Required",
        404 => "Not Found",
        405 => "Method Not Allowed",
        411 => "Length Required",
        413 => "Payload Too Large",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        _ => "Unknown",
    }
}

/// Writes the whole response into `out` (cleared first); returns the length of the head.
fn write_response(out: &mut Vec<u8>, resp: &Response, framing: &Framing) -> usize {
    out.clear();
    let m = &resp.meter;
    let content_type = if resp.html {
        "text/html; charset=utf-8"
    } else {
        "application/json"
    };
    // Writing into a Vec cannot fail.
    let _ = write!(
        out,
        "HTTP/1.1 {} {}\r\n\
         Content-Type: {content_type}\r\n\
         Content-Length: {}\r\n\
         RateLimit-Limit: {}\r\n\
         RateLimit-Remaining: {}\r\n\
         RateLimit-Reset: {}\r\n\
         X-RateLimit-Limit: {}\r\n\
         X-RateLimit-Remaining: {}\r\n\
         X-RateLimit-Reset: {}\r\n\
         X-RateLimit-Remaining-Daily: {}\r\n\
         X-RateLimit-Daily-Usage-Percent: {:.2}\r\n\
         X-RateLimit-Soft-Mode: {}\r\n\
         X-Credits-Remaining: {:.2}\r\n\
         X-Credits-Cost: {}\r\n",
        resp.status,
        reason(resp.status),
        resp.body.len(),
        m.limit,
        m.remaining,
        m.reset_secs,
        m.limit,
        m.remaining,
        m.reset_secs,
        m.daily_remaining,
        m.daily_percent,
        m.soft,
        from_micros(m.credits),
        from_micros(m.cost),
    );
    if let Some(retry_after) = &resp.retry_after {
        let _ = write!(out, "Retry-After: {retry_after}\r\n");
    }
    if let Some(allow) = resp.allow {
        let _ = write!(out, "Allow: {allow}\r\n");
    }
    if framing.close {
        out.extend_from_slice(b"Connection: close\r\n");
    } else if framing.keep_alive_1_0 {
        out.extend_from_slice(b"Connection: keep-alive\r\n");
    }
    out.extend_from_slice(b"\r\n");
    let head_len = out.len();
    out.extend_from_slice(&resp.body);
    head_len
}

#[cfg(test)]
mod tests {
    use super::*;

    fn complete(head_len: usize, content_length: usize, close: bool) -> Scan {
        Scan::Complete(Framing {
            head_len,
            content_length,
            has_transfer_encoding: false,
            close,
            keep_alive_1_0: false,
            expect_continue: false,
        })
    }

    #[test]
    fn scanning_heads() {
        let get = "GET / HTTP/1.1\r\nHost: x\r\n\r\n";
        let post = "POST /v HTTP/1.1\r\ncontent-length: 12\r\n\r\n";
        let close = "GET / HTTP/1.1\r\nConnection: Close\r\n\r\n";
        let old = "GET / HTTP/1.0\r\n\r\n";
        let many: String = (0..70).map(|i| format!("X-{i}: y\r\n")).collect();
        let many = format!("GET / HTTP/1.1\r\n{many}\r\n");
        let cases: Vec<(&str, usize, Scan)> = vec![
            (get, 1024, complete(get.len(), 0, false)),
            (post, 1024, complete(post.len(), 12, false)),
            (close, 1024, complete(close.len(), 0, true)),
            (old, 1024, complete(old.len(), 0, true)),
            ("GET / HTTP/1.1\r\nHost: x\r\n", 1024, Scan::Partial),
            ("GET / HTTP/1.1\r\nHost: x\r\n", 10, too_large_head()),
            (get, 10, too_large_head()),
            (&many, 1 << 20, too_large_head()),
            (
                "POST / HTTP/1.1\r\nContent-Length: abc\r\n\r\n",
                1024,
                Scan::Refuse(400, "BAD_REQUEST", "Invalid Content-Length."),
            ),
            (
                "NOT HTTP AT ALL\r\n\r\n",
                1024,
                Scan::Refuse(400, "BAD_REQUEST", "Malformed HTTP request."),
            ),
        ];
        for (head, max, want) in cases {
            assert_eq!(scan_head(head.as_bytes(), max), want, "{head:?}");
        }
        let chunked = "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n";
        match scan_head(chunked.as_bytes(), 1024) {
            Scan::Complete(f) => assert!(f.has_transfer_encoding),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn keys_from_both_headers() {
        let cases: &[(&str, [Option<&str>; 2])] = &[
            ("x-api-key: k1\r\n", [Some("k1"), None]),
            ("X-API-KEY:  k2 \r\n", [Some("k2"), None]),
            ("Authorization: Bearer k3\r\n", [None, Some("k3")]),
            ("authorization: bearer k4\r\n", [None, Some("k4")]),
            ("Authorization: Basic k5\r\n", [None, None]),
            ("", [None, None]),
        ];
        for (header, want) in cases {
            let head = format!("GET /v1/credits HTTP/1.1\r\n{header}\r\n");
            let req = request_from(head.as_bytes(), b"").expect("parses");
            assert_eq!(req.keys, *want, "{header:?}");
            assert_eq!((req.method, req.target), ("GET", "/v1/credits"));
        }
    }
}
