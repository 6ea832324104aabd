//! `leadmagic-mock`: a stand-in for the LeadMagic email-validation API, for mailsift's tests
//! and benches, its `--sandbox` demo, and users who rehearse a cron setup without spending
//! credits.
//!
//! It follows the API contract mailsift is written against (`shared/leadmagic-api.md`), rough
//! edges included: both endpoints (`POST /v1/people/email-validation`, `GET /v1/credits`), both
//! error body shapes (`{"error": {...}}` and the `errors` array of a 400), the legacy 429 body,
//! the rate-limit and credit headers on every response, soft rate limiting (counted, never
//! refused) unless asked to be hard, free statuses (`catch_all`, `unknown`) and the 402 that
//! refuses free verdicts too once the balance is short. Verdicts come from [`verdict_for`]:
//! deterministic, with reserved prefixes (`valid…`, `invalid…`, `catchall…`, `reject…`,
//! `fail…`, ...). The manual, with every rule, is `docs/mock.md` in the mailsift repository.
//!
//! # Faults it can inject
//!
//! Each is a field of [`MockConfig`] (and a flag of the `leadmagic-mock` program, see
//! [`cli`]); the probabilistic ones are drawn per validation arrival from the seed, the
//! normalised address and its attempt number, so a run is reproducible whatever the client's
//! timing:
//!
//! | fault | how to ask for it | what the client sees |
//! |---|---|---|
//! | JSON 500 | `p_500` | `500 {"error": {...}}`, not charged |
//! | HTML 502 / 503 | `p_503` | an nginx-style HTML page, 502 and 503 alternating per attempt |
//! | connection reset | `p_reset` | the request is read, then an RST (`SO_LINGER 0`), no answer |
//! | hang | `p_hang`, `hang` | the request is read, nothing is answered for `hang`, then FIN |
//! | truncated body | `p_truncated` | charged, the head promises the whole body, half arrives, FIN |
//! | latency | [`Latency`] | fixed or log-normal wait before each validation answer |
//! | hard rate limit | `rate_per_min`, `limit_window`, `hard_limit` | 429 with `Retry-After` (seconds, or an HTTP-date with `retry_after_date`) |
//! | misleading headers | `advertise_limit` | a rate limit in the headers other than the real one |
//! | running out of credits | `credits`, [`MockServer::set_credits`] | 402 |
//! | key rotation | [`MockServer::set_api_key`] | 401 for the old key from now on |
//! | the reserved verdicts | addresses `reject…`, `fail…` | a 400 naming the address; a 500 on every attempt |
//!
//! Requests the API would refuse are refused the same way, with the usual headers: a head over
//! `max_head_bytes` or with more than 64 headers (431), a chunked body (411), a body over
//! `max_body_bytes` (413). [`Stats`] (also `GET /__mock/stats`) counts every arrival, per
//! address too, so a test can prove that nothing was sent, or paid for, twice.
//!
//! # How it is built
//!
//! HTTP/1.1 is hyper's (keep-alive, `Expect: 100-continue`, HTTP/1.0); the faults hyper will
//! not produce (reset, hang, truncation) are carried out on the raw socket, which the
//! connection takes back from hyper for that request. The server must not depend on mailsift
//! (the client is tested against it, not with it) and must never log an API key.
//!
//! Module map: `verdict` (address → answer, pure), `chance` (seeded faults and latency, pure),
//! `window` (rate and peak counters, pure), `state` (everything behind the one lock),
//! `routes` (what to answer), `http` (sockets, hyper and the byte-level faults), [`cli`] (the
//! program's command line).
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use leadmagic_mock::{MockConfig, MockServer};
//!
//! let server = MockServer::start(MockConfig { p_reset: 0.1, ..MockConfig::default() }).await?;
//! // ... point the client at server.url() with the key "mock-key" ...
//! assert!(server.stats().repeated.is_empty(), "nothing was sent twice");
//! server.shutdown().await;
//! # Ok(())
//! # }
//! ```

mod chance;
pub mod cli;
mod http;
mod routes;
mod state;
mod verdict;
mod window;

use std::fmt;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpSocket;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use chance::Latency;
pub use state::Stats;
pub use verdict::{verdict_for, Verdict};

use chance::FaultOdds;
use state::{to_micros, Shared};

/// Every knob of the mock. Each field is also a flag of the `leadmagic-mock` binary.
#[derive(Clone)]
pub struct MockConfig {
    /// Address to listen on (default `127.0.0.1:0`: any free port).
    pub bind: SocketAddr,
    /// The accepted API key (default `mock-key`), from `X-API-Key` or `Authorization: Bearer`.
    pub api_key: String,
    /// Starting credit balance (default 1,000,000).
    pub credits: f64,
    /// Credits charged per `valid`, `valid_catch_all` or `invalid` answer (default 0.05).
    pub cost: f64,
    /// The rate limit, validations per sliding 60 s window (default 3000).
    pub rate_per_min: u32,
    /// The sliding window `rate_per_min` applies to: 60 s, as the API documents. Tests shorten
    /// it to see a hard limit bite and recover within a second instead of a minute.
    pub limit_window: Duration,
    /// Refuse with 429 beyond the limit (default false: soft mode, count but let through).
    pub hard_limit: bool,
    /// Send `Retry-After` as an HTTP-date instead of delta-seconds.
    pub retry_after_date: bool,
    /// Advertise this limit in the rate-limit headers instead of the real one.
    pub advertise_limit: Option<u32>,
    /// The daily quota behind `X-RateLimit-Remaining-Daily` (default 1,000,000).
    pub daily_quota: u64,
    /// Wait before answering a validation (default none).
    pub latency: Latency,
    /// Seed of the fault and latency draws (default 1).
    pub seed: u64,
    /// Probability of a 500 with a JSON body.
    pub p_500: f64,
    /// Probability of a 502 or 503 (alternating) with an HTML body.
    pub p_503: f64,
    /// Probability of reading the request and then resetting the connection.
    pub p_reset: f64,
    /// Probability of reading the request and answering nothing for `hang`.
    pub p_hang: f64,
    /// Probability of charging, then sending only half of the body and closing.
    pub p_truncated: f64,
    /// How long a hung request stays unanswered before the connection closes (default 1 h).
    pub hang: Duration,
    /// Largest accepted request head; larger gets 431 (default 16 KiB).
    pub max_head_bytes: usize,
    /// Largest accepted request body; larger gets 413 (default 64 KiB).
    pub max_body_bytes: usize,
}

impl Default for MockConfig {
    fn default() -> Self {
        Self {
            bind: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            api_key: "mock-key".to_owned(),
            credits: 1_000_000.0,
            cost: 0.05,
            rate_per_min: 3000,
            limit_window: Duration::from_secs(60),
            hard_limit: false,
            retry_after_date: false,
            advertise_limit: None,
            daily_quota: 1_000_000,
            latency: Latency::None,
            seed: 1,
            p_500: 0.0,
            p_503: 0.0,
            p_reset: 0.0,
            p_hang: 0.0,
            p_truncated: 0.0,
            hang: Duration::from_secs(3600),
            max_head_bytes: 16 * 1024,
            max_body_bytes: 64 * 1024,
        }
    }
}

impl fmt::Debug for MockConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Written out by hand so the key can never reach a log through `{:?}`.
        f.debug_struct("MockConfig")
            .field("bind", &self.bind)
            .field("api_key", &"<redacted>")
            .field("credits", &self.credits)
            .field("cost", &self.cost)
            .field("rate_per_min", &self.rate_per_min)
            .field("limit_window", &self.limit_window)
            .field("hard_limit", &self.hard_limit)
            .field("retry_after_date", &self.retry_after_date)
            .field("advertise_limit", &self.advertise_limit)
            .field("daily_quota", &self.daily_quota)
            .field("latency", &self.latency)
            .field("seed", &self.seed)
            .field("p_500", &self.p_500)
            .field("p_503", &self.p_503)
            .field("p_reset", &self.p_reset)
            .field("p_hang", &self.p_hang)
            .field("p_truncated", &self.p_truncated)
            .field("hang", &self.hang)
            .field("max_head_bytes", &self.max_head_bytes)
            .field("max_body_bytes", &self.max_body_bytes)
            .finish()
    }
}

impl MockConfig {
    pub(crate) fn fault_odds(&self) -> FaultOdds {
        FaultOdds {
            p_500: self.p_500,
            p_503: self.p_503,
            p_reset: self.p_reset,
            p_hang: self.p_hang,
            p_truncated: self.p_truncated,
        }
    }
}

/// A running mock. Dropping it stops it too (without waiting); [`MockServer::shutdown`] also
/// waits until every connection is gone.
pub struct MockServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    /// Fired by `shutdown` or drop; the accept loop and every connection task select on it.
    cancel: CancellationToken,
    accept: Option<JoinHandle<()>>,
    /// Every task holds a sender; `recv` returns `None` once they have all ended.
    tasks_done: mpsc::Receiver<()>,
}

impl fmt::Debug for MockServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MockServer")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl MockServer {
    /// Binds `config.bind` and starts serving on the current tokio runtime.
    pub async fn start(config: MockConfig) -> std::io::Result<MockServer> {
        let socket = if config.bind.is_ipv4() {
            TcpSocket::new_v4()?
        } else {
            TcpSocket::new_v6()?
        };
        // A restarted mock on a fixed port must not fail on sockets still in TIME_WAIT.
        socket.set_reuseaddr(true)?;
        socket.bind(config.bind)?;
        // Room for a client's whole pool (hundreds of connections) opening at once.
        let listener = socket.listen(1024)?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared::new(config));
        let cancel = CancellationToken::new();
        let (done_tx, tasks_done) = mpsc::channel(1);
        let accept = tokio::spawn(http::serve(
            listener,
            Arc::clone(&shared),
            cancel.clone(),
            done_tx,
        ));
        Ok(MockServer {
            addr,
            shared,
            cancel,
            accept: Some(accept),
            tasks_done,
        })
    }

    /// The bound address (with the real port when the configured one was 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The base URL, e.g. `http://127.0.0.1:40123`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A snapshot of the statistics, with `per_address`.
    pub fn stats(&self) -> Stats {
        self.shared.stats(true)
    }

    /// Validation arrivals so far (as in [`Stats::validations`]), without copying the
    /// per-address map: cheap enough for a test to poll while it waits for the k-th request.
    pub fn validations(&self) -> u64 {
        self.shared.validations()
    }

    /// Sets the credit balance.
    pub fn set_credits(&self, credits: f64) {
        self.shared.lock().set_balance(to_micros(credits));
    }

    /// Rotates the accepted key: the old one gets 401 from now on.
    pub fn set_api_key(&self, key: &str) {
        self.shared.lock().set_api_key(key);
    }

    /// Stops accepting, drops every connection (hung ones included) and waits for them.
    pub async fn shutdown(mut self) {
        self.cancel.cancel();
        if let Some(accept) = self.accept.take() {
            // A panicked accept loop has nothing left to stop.
            let _ = accept.await;
        }
        while self.tasks_done.recv().await.is_some() {}
    }
}

impl Drop for MockServer {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}
