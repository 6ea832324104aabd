//! A LeadMagic-compatible mock server, for tests, benches, the `--sandbox` demo and users who
//! rehearse a cron setup without spending credits.
//!
//! Owns the whole mock: configuration ([`MockConfig`]), the running server ([`MockServer`]),
//! its statistics ([`Stats`]) and the documented verdict function ([`verdict_for`]). It follows
//! `leadmagic-api.md`, rough edges included (two error body shapes, legacy 429 body, soft rate
//! limit, free statuses), and can inject faults at the byte level, which is why it speaks
//! HTTP/1.1 by hand over `tokio::net` instead of using a framework. It must not depend on the
//! rest of mailsift (the client is tested against it, not with it) and must never log an API
//! key.
//!
//! Module map: `verdict` (address → answer, pure), `chance` (seeded faults and latency, pure),
//! `window` (rate and peak counters, pure), `state` (everything behind the one lock),
//! `routes` (what to answer), `http` (sockets and bytes).

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
