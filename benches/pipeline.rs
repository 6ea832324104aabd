//! End-to-end benches of `mailsift validate`: the real binary against the `leadmagic-mock`
//! binary, two processes on loopback, inputs generated here (deterministic, nothing
//! committed). Every scenario prints its figures, its goal and the command that reproduces it.
//!
//! ```text
//! cargo bench --bench pipeline                     # every scenario but the 10M one (~20 min)
//! cargo bench --bench pipeline -- overhead         # 1M unique rows, then the cache path
//! cargo bench --bench pipeline -- http             # CPU per request by HTTP client
//! cargo bench --bench pipeline -- utilisation adaptive side-by-side
//! MAILSIFT_BENCH_10M=1 cargo bench --bench pipeline -- big   # 10M rows against 1M either side; resume
//! cargo bench --bench pipeline -- xlsx             # a 1M-row .xlsx in, then .xlsx out
//! ```
//!
//! Rate-limited scenarios (utilisation, adaptive, side-by-side) mostly wait, so they run side by
//! side; the CPU-bound ones (overhead, big) run alone. Peak RSS is the child's `VmHWM`, read
//! from `/proc` every 10 ms while it runs (Linux only). Scratch files go to
//! `$MAILSIFT_BENCH_DIR` (default: the system temp dir) and are removed at the end.
//! `$MAILSIFT_BENCH_MAILSIFT` runs another build of mailsift (a copy of an older binary, say)
//! through the same scenarios.
//!
//! Beside the CPU model, the bench times a fixed piece of work at its start and end (and the
//! overhead scenario before its runs), and every run of mailsift gives the share of CPU time
//! the hypervisor stole while it ran: on a shared virtual machine the same code's figures move
//! by more than most changes to it, and these say how fast the machine was at the time.

use std::io::{BufRead, BufReader, BufWriter, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use leadmagic_mock::Stats;

/// As the mailsift binary: the http scenario's clients run in this process.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const MAILSIFT: &str = env!("CARGO_BIN_EXE_mailsift");
/// Set to another build of mailsift to measure it with this bench (an A/B across commits).
const MAILSIFT_VAR: &str = "MAILSIFT_BENCH_MAILSIFT";
const MOCK: &str = env!("CARGO_BIN_EXE_leadmagic-mock");
const SCENARIOS: [&str; 8] = [
    "utilisation",
    "adaptive",
    "side-by-side",
    "overhead",
    "http",
    "xlsx",
    "big",
    "store",
];

fn main() {
    // cargo passes `--bench`; everything else not starting with '-' names a scenario.
    let mut chosen: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    if chosen.is_empty() {
        chosen = SCENARIOS[..6].iter().map(|s| s.to_string()).collect();
        if std::env::var_os("MAILSIFT_BENCH_10M").is_some() {
            chosen.push("big".into());
        }
    }
    if let Some(bad) = chosen.iter().find(|c| !SCENARIOS.contains(&c.as_str())) {
        eprintln!("unknown scenario {bad:?}; choose from {SCENARIOS:?}");
        std::process::exit(2);
    }
    let has = |name: &str| chosen.iter().any(|c| c == name);
    let scratch = Scratch::new();
    println!("# mailsift pipeline benches");
    println!("machine: {}", machine());
    println!("load before: {}", load());
    println!("{}", reference());

    // The waiting scenarios, side by side.
    std::thread::scope(|s| {
        if has("utilisation") {
            for rate in [3000, 300] {
                let dir = scratch.sub(&format!("utilisation-{rate}"));
                s.spawn(move || print_block(utilisation(&dir, rate)));
            }
        }
        if has("adaptive") {
            let dir = scratch.sub("adaptive");
            s.spawn(move || print_block(adaptive(&dir)));
        }
        if has("side-by-side") {
            let dir = scratch.sub("side-by-side");
            s.spawn(move || print_block(side_by_side(&dir)));
        }
    });
    if has("overhead") {
        print_block(overhead(&scratch.sub("overhead")));
    }
    if has("http") {
        print_block(http_clients());
    }
    if has("xlsx") {
        print_block(xlsx(&scratch.sub("xlsx")));
    }
    if has("store") {
        print_block(store_puts(&scratch.sub("store")));
    }
    if has("big") {
        if std::env::var_os("MAILSIFT_BENCH_10M").is_none() {
            println!("\n## big: skipped (set MAILSIFT_BENCH_10M=1: it takes 15 minutes or more)");
        } else {
            print_block(big(&scratch.sub("big")));
        }
    }
    println!("\nload after: {}", load());
    println!("{}", reference());
}

fn print_block(text: String) {
    // One write per scenario, so parallel scenarios do not interleave.
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "\n{text}");
    let _ = out.flush();
}

// ---------------------------------------------------------------------------------------------
// Scenarios

/// 1. Rate-limit utilisation under slow answers: log-normal latency, median 2 s, p99 25 s;
///    the mock's hard limit equals the configured rate; default concurrency.
fn utilisation(dir: &Path, rate: u64) -> String {
    // 4.5 minutes of work: windows 2 to 4 are whole and must be full.
    let rows = rate * 9 / 2;
    let input = dir.join("in.csv");
    write_input(&input, rows, "");
    let mock = Mock::start(&[
        "--rate-per-min",
        &rate.to_string(),
        "--hard-limit",
        "--latency-median-ms",
        "2000",
        "--latency-p99-ms",
        "25000",
        "--daily-quota",
        "1000000000",
    ]);
    let rate_arg = format!("{rate}/min");
    let run = run_mailsift(
        &mock,
        dir,
        &validate_args(&input, &dir.join("out.csv"), &["--rate", &rate_arg]),
    );
    let stats = mock.stats();
    let whole: Vec<u64> = stats.per_minute.iter().copied().skip(1).take(3).collect();
    let floor = rate * 98 / 100;
    let per_second_cap = rate / 60 + 5;
    let ok = run.status.success()
        && whole.len() == 3
        && whole.iter().all(|&n| n >= floor && n <= rate)
        && stats.rate_limited == 0
        && stats.max_in_window_60s <= rate
        && stats.max_in_window_1s <= per_second_cap;
    format!(
        "## 1. utilisation at {rate}/min (mock: hard limit {rate}/min, latency log-normal median 2 s, p99 25 s)\n\
         command: mock `leadmagic-mock --rate-per-min {rate} --hard-limit --latency-median-ms 2000 --latency-p99-ms 25000`, \
         then `mailsift validate in.csv -o out.csv --rate {rate}/min` ({rows} unique rows, default concurrency)\n\
         exit {} in {:.1} s\n\
         requests per 60 s window from the first arrival: {:?}\n\
         windows 2-4: {:?} (goal: each >= {floor} (98%) and <= {rate}) -> {:.1}% .. {:.1}%\n\
         429s: {} (goal 0); most in any sliding 60 s: {} (goal <= {rate}); most in any sliding 1 s: {} (goal <= {per_second_cap})\n\
         mock max in flight: {}\n\
         verdict: {}",
        code(run.status),
        run.wall.as_secs_f64(),
        stats.per_minute,
        whole,
        whole.iter().min().copied().unwrap_or(0) as f64 * 100.0 / rate as f64,
        whole.iter().max().copied().unwrap_or(0) as f64 * 100.0 / rate as f64,
        stats.rate_limited,
        stats.max_in_window_60s,
        stats.max_in_window_1s,
        stats.max_in_flight,
        if ok { "goal met" } else { "GOAL NOT MET" },
    )
}

/// 2. Adaptive rate: the client is told --rate 3000/min, the mock advertises 300/min and
///    answers in exactly 1 s, so second 0 holds what was sent before the first answer.
fn adaptive(dir: &Path) -> String {
    let rows = 420;
    let input = dir.join("in.csv");
    write_input(&input, rows, "");
    let mock = Mock::start(&[
        "--rate-per-min",
        "3000",
        "--advertise-limit",
        "300",
        "--latency-ms",
        "1000",
    ]);
    let run = run_mailsift(
        &mock,
        dir,
        &validate_args(&input, &dir.join("out.csv"), &["--rate", "3000/min"]),
    );
    let stats = mock.stats();
    let per_second = &stats.per_second;
    // The first answers arrive at 1 s: from second 1 on the client must pace at 300/min
    // (5/s, plus at most one cell of jitter per second).
    let after: u64 = per_second.iter().skip(1).take(60).sum();
    let worst_second = per_second.iter().skip(1).copied().max().unwrap_or(0);
    let ok = run.status.success() && after <= 300 && worst_second <= 6;
    format!(
        "## 2. adaptive rate (mock advertises RateLimit-Limit: 300, answers in 1 s; client --rate 3000/min)\n\
         command: mock `leadmagic-mock --rate-per-min 3000 --advertise-limit 300 --latency-ms 1000`, \
         then `mailsift validate in.csv -o out.csv --rate 3000/min` ({rows} rows)\n\
         exit {} in {:.1} s\n\
         requests in second 0 (sent before any answer): {}\n\
         requests per second from second 1 (first answers at 1.0 s): {:?}\n\
         requests in seconds 1-60: {after} (goal <= 300); most in one second after the first answer: {worst_second} (goal <= 6)\n\
         verdict: {}",
        code(run.status),
        run.wall.as_secs_f64(),
        per_second.first().copied().unwrap_or(0),
        per_second.iter().skip(1).take(15).collect::<Vec<_>>(),
        if ok { "goal met" } else { "GOAL NOT MET" },
    )
}

/// 8. The same 2,000 rows at 3,000/min with a 500 ms latency: mailsift's defaults against a
///    strictly sequential client (one request in flight), each with its own mock.
fn side_by_side(dir: &Path) -> String {
    let rows = 2000;
    let input = dir.join("in.csv");
    write_input(&input, rows, "");
    let mock_args = [
        "--rate-per-min",
        "3000",
        "--hard-limit",
        "--latency-ms",
        "500",
    ];
    let mock = Mock::start(&mock_args);
    let sequential_mock = Mock::start(&mock_args);
    let addresses: Vec<String> = (0..rows).map(|i| address(i, "")).collect();
    let sequential = std::thread::spawn(move || {
        let start = Instant::now();
        let answered = sequential_client(&sequential_mock, &addresses);
        (start.elapsed(), answered)
    });
    let run = run_mailsift(
        &mock,
        dir,
        &validate_args(&input, &dir.join("out.csv"), &[]),
    );
    let stats = mock.stats();
    let (seq_wall, seq_answered) = sequential.join().expect("the sequential client panicked");
    format!(
        "## 8. side by side: {rows} rows, mock at 3000/min (hard) with 500 ms latency\n\
         command: `cargo bench --bench pipeline -- side-by-side` (two mocks: \
         `leadmagic-mock --rate-per-min 3000 --hard-limit --latency-ms 500`)\n\
         mailsift (defaults: `mailsift validate in.csv -o out.csv`): exit {}, {:.1} s, {} requests, {} 429s\n\
         sequential client (one request in flight, keep-alive): {:.1} s, {seq_answered} answered\n\
         ratio: mailsift is {:.1}x faster",
        code(run.status),
        run.wall.as_secs_f64(),
        stats.validations,
        stats.rate_limited,
        seq_wall.as_secs_f64(),
        seq_wall.as_secs_f64() / run.wall.as_secs_f64(),
    )
}

/// 3, 4 and 6 (1M): 1,000,000 unique rows against a zero-latency mock without a limit, then
/// the same rows again, all from the store (`--force`).
fn overhead(dir: &Path) -> String {
    let rows = 1_000_000;
    let input = dir.join("in.csv");
    let input_bytes = write_input(&input, rows, "");
    let reference = reference();
    let mock = Mock::start(&unlimited_mock(1e12));
    let args = validate_args(&input, &dir.join("out.csv"), &["--rate", "unlimited"]);
    let mock_before = mock.usage();
    let first = run_mailsift(&mock, dir, &args);
    let mock_cpu = mock.usage().since(&mock_before).cpu();
    let calls = mock.stats().validations;
    let out_rows = count_lines(&dir.join("out.csv")).saturating_sub(1);
    let state = dir_size(&dir.join("state"));
    let mut forced = args.to_vec();
    forced.push("--force".into());
    // The cache path takes about two seconds, so one run of it says as much about the
    // machine's other work as about mailsift: it runs five times, and the median is shown.
    let mut again: Vec<Run> = (0..5).map(|_| run_mailsift(&mock, dir, &forced)).collect();
    again.sort_by_key(|run| run.wall);
    let rates: Vec<String> = again
        .iter()
        .map(|run| format!("{:.0}", rows as f64 / run.wall.as_secs_f64()))
        .collect();
    let second = &again[again.len() / 2];
    let calls_again = mock.stats().validations - calls;
    format!(
        "## 3/4/6. overhead, cache path and memory: {rows} unique rows ({:.1} MB), zero-latency mock, no rate limit\n\
         command: mock `leadmagic-mock --rate-per-min 4000000000 --daily-quota 1000000000000 --credits 1e12`, \
         then `mailsift validate in.csv -o out.csv --rate unlimited` and the same with `--force`\n\
         cpu: {}; {reference}\n\
         3. first run (goal >= 25,000 rows/s, <= 50 us CPU per row): {}; {calls} requests, {out_rows} rows written; \
         the mock's CPU per request {:.1} us (mailsift's and the mock's together allow at most {:.0} rows/s on {} cores)\n\
         4. cache path, --force (goal >= 500,000 rows/s), the median of 5 runs: {}; {calls_again} requests; \
         rows/s of the five: {}\n\
         6. peak RSS goal <= 128 MB at 1M; state directory after the first run: {:.1} MB",
        input_bytes as f64 / 1e6,
        cpu_model(),
        first.figures(rows),
        mock_cpu * 1e6 / calls.max(1) as f64,
        cores() as f64 * rows as f64 / (first.usage.cpu() + mock_cpu),
        cores(),
        second.figures(rows),
        rates.join(", "),
        state as f64 / 1e6,
    )
}

/// Issue 15: what one validation request costs the client's process, by HTTP client, against
/// the same zero-latency mock: mailsift's own client (reqwest, then its checks of the answer),
/// reqwest alone, hyper-util's pooled client (the pool reqwest uses, without reqwest's layers)
/// and hyper on one connection per task (the floor of HTTP/1.1 on loopback). This process is
/// the client: its CPU time is read from /proc before and after each client's requests, two
/// rounds in turn so a change in the machine's speed shows as a difference between them.
fn http_clients() -> String {
    const TASKS: usize = 256;
    let requests: u64 = std::env::var("MAILSIFT_BENCH_HTTP_REQUESTS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(200_000);
    let mock = Mock::start(&unlimited_mock(1e12));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    let clients = ["mailsift", "reqwest", "hyper-util", "hyper"];
    let mut lines = Vec::new();
    for round in 1..=2 {
        for name in clients {
            let before = Usage::of("self");
            let started = Instant::now();
            runtime.block_on(http_requests(name, &mock, requests, TASKS));
            let wall = started.elapsed();
            let used = Usage::of("self").since(&before);
            let per = |x: f64| x * 1e6 / requests as f64;
            lines.push(format!(
                "{name} (round {round}): {:.0} requests/s; CPU per request {:.1} us user + {:.1} us \
                 system = {:.1} us; load {}",
                requests as f64 / wall.as_secs_f64(),
                per(used.user),
                per(used.sys),
                per(used.cpu()),
                load(),
            ));
        }
    }
    let asked = mock.stats().validations;
    format!(
        "## 15. HTTP clients: {requests} validation requests each, {TASKS} at a time, zero-latency mock\n\
         command: `cargo bench --bench pipeline -- http` (MAILSIFT_BENCH_HTTP_REQUESTS to change the count); \
         CPU of this process, which sends the requests; the mock runs beside it\n\
         cpu: {}\n{}\n{asked} requests answered",
        cpu_model(),
        lines.join("\n"),
    )
}

/// Sends `requests` validations to `mock` through the client named `name`, `tasks` at a time;
/// panics on any failure (the mock answers every one).
async fn http_requests(name: &str, mock: &Mock, requests: u64, tasks: usize) {
    use http_body_util::BodyExt;
    use mailsift::internals::client::{ApiKey, Client, ClientConfig};
    use std::sync::atomic::{AtomicU64, Ordering};

    const PATH: &str = "/v1/people/email-validation";
    let next = Arc::new(AtomicU64::new(0));
    let url = format!("{}{PATH}", mock.url);
    let timeout = Duration::from_secs(30);
    let mailsift = Client::new(&ClientConfig {
        base_url: mock.url.clone(),
        api_key: ApiKey::new("mock-key").expect("a key"),
        timeout,
        max_idle: tasks,
    })
    .expect("mailsift's client");
    let reqwest = reqwest::Client::builder()
        .timeout(timeout)
        .pool_max_idle_per_host(tasks)
        .tcp_nodelay(true)
        .build()
        .expect("a reqwest client");
    let pooled = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .pool_max_idle_per_host(tasks)
        .build_http::<http_body_util::Full<bytes::Bytes>>();
    let uri: hyper::Uri = url.parse().expect("the mock's URL");
    let mut running = tokio::task::JoinSet::new();
    for _ in 0..tasks {
        let next = next.clone();
        let turn = move || Some(next.fetch_add(1, Ordering::Relaxed)).filter(|&i| i < requests);
        match name {
            "mailsift" => {
                let client = mailsift.clone();
                running.spawn(async move {
                    while let Some(i) = turn() {
                        client
                            .validate(&address(i, ""), 0)
                            .await
                            .expect("an answer");
                    }
                });
            }
            "reqwest" => {
                let (client, url) = (reqwest.clone(), url.clone());
                running.spawn(async move {
                    while let Some(i) = turn() {
                        let response = client
                            .post(&url)
                            .header("x-api-key", "mock-key")
                            .header("content-type", "application/json")
                            .body(body(i))
                            .send()
                            .await
                            .expect("an answer");
                        assert!(response.status().is_success());
                        response.bytes().await.expect("a body");
                    }
                });
            }
            "hyper-util" => {
                let (client, uri) = (pooled.clone(), uri.clone());
                running.spawn(async move {
                    while let Some(i) = turn() {
                        let response = tokio::time::timeout(timeout, client.request(post(&uri, i)))
                            .await
                            .expect("in time")
                            .expect("an answer");
                        assert!(response.status().is_success());
                        response.into_body().collect().await.expect("a body");
                    }
                });
            }
            _ => {
                let (addr, uri) = (mock.addr.clone(), uri.clone());
                running.spawn(async move {
                    let stream = tokio::net::TcpStream::connect(&addr)
                        .await
                        .expect("connecting");
                    stream.set_nodelay(true).expect("nodelay");
                    let (mut send, connection) =
                        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                            .await
                            .expect("a handshake");
                    tokio::spawn(connection);
                    let host: hyper::header::HeaderValue = addr.parse().expect("a host header");
                    while let Some(i) = turn() {
                        // Origin form on a connection of its own: the path and a Host header.
                        let mut request = post(&uri, i);
                        *request.uri_mut() = hyper::Uri::from_static(PATH);
                        request.headers_mut().insert("host", host.clone());
                        let response = tokio::time::timeout(timeout, send.send_request(request))
                            .await
                            .expect("in time")
                            .expect("an answer");
                        assert!(response.status().is_success());
                        response.into_body().collect().await.expect("a body");
                    }
                });
            }
        }
    }
    while let Some(done) = running.join_next().await {
        done.expect("a client task");
    }
}

/// Row `i`'s validation request body.
fn body(i: u64) -> String {
    format!("{{\"email\":\"{}\"}}", address(i, ""))
}

/// Row `i`'s validation request for hyper.
fn post(uri: &hyper::Uri, i: u64) -> hyper::Request<http_body_util::Full<bytes::Bytes>> {
    hyper::Request::post(uri.clone())
        .header("x-api-key", "mock-key")
        .header("content-type", "application/json")
        .body(http_body_util::Full::new(bytes::Bytes::from(body(i))))
        .expect("a request")
}

/// Issue 12: a workbook of 1,000,000 unique rows (`MAILSIFT_BENCH_XLSX_ROWS` to change), written
/// as Excel writes one (shared strings), validated to CSV against a zero-latency mock; then the
/// same workbook to an .xlsx output (answers from the store).
fn xlsx(dir: &Path) -> String {
    let rows: u64 = std::env::var("MAILSIFT_BENCH_XLSX_ROWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let input = dir.join("in.xlsx");
    let made = Instant::now();
    let input_bytes = write_xlsx(&input, rows);
    let made = made.elapsed();
    let mock = Mock::start(&unlimited_mock(1e12));
    let run = |output: &str| {
        let args = validate_args(&input, &dir.join(output), &["--rate", "unlimited"]);
        run_mailsift(&mock, dir, &args)
    };
    let first = run("out.csv");
    let calls = mock.stats().validations;
    let out_rows = count_lines(&dir.join("out.csv")).saturating_sub(1);
    let second = run("out.xlsx");
    let calls_again = mock.stats().validations - calls;
    let out_xlsx = std::fs::metadata(dir.join("out.xlsx")).map_or(0, |m| m.len());
    format!(
        "## xlsx: a workbook of {rows} unique rows ({:.1} MB, shared strings, made in {:.1} s), zero-latency mock, no rate limit\n\
         command: `cargo bench --bench pipeline -- xlsx`: `mailsift validate in.xlsx -o out.csv --rate unlimited`, then `-o out.xlsx`\n\
         cpu: {}\n\
         .xlsx -> .csv: {}; {calls} requests, {out_rows} rows written\n\
         .xlsx -> .xlsx (answers from the store): {}; {calls_again} requests, output {:.1} MB",
        input_bytes as f64 / 1e6,
        made.as_secs_f64(),
        cpu_model(),
        first.figures(rows),
        second.figures(rows),
        out_xlsx as f64 / 1e6,
    )
}

/// The bench's contacts as a workbook: the same columns as [`write_input`], numbers as numbers,
/// strings shared (Excel's own layout). Returns its size.
fn write_xlsx(path: &Path, rows: u64) -> u64 {
    let mut book = rust_xlsxwriter::Workbook::new();
    let sheet = book.add_worksheet_with_low_memory();
    for (c, name) in ["id", "first_name", "company", "email"].iter().enumerate() {
        sheet
            .write_string(0, c as u16, *name)
            .expect("writing the bench input");
    }
    for i in 0..rows {
        let r = i as u32 + 1;
        let write =
            |sheet: &mut rust_xlsxwriter::Worksheet| -> Result<(), rust_xlsxwriter::XlsxError> {
                sheet.write_number(r, 0, i as f64)?;
                sheet.write_string(r, 1, format!("Name{}", i % 977))?;
                sheet.write_string(r, 2, format!("Company {}", i % 5003))?;
                sheet.write_string(r, 3, address(i, ""))?;
                Ok(())
            };
        write(sheet).expect("writing the bench input");
    }
    book.save(path).expect("saving the bench input");
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

/// 6 (10M) and 7: 10,000,000 unique rows, every one charged; the mock's credits run out after
/// 9,000,000 answers (exit 4, checkpoint near row 9M). Then a new mock with credits, the same
/// command: the time from start to the first new request, and the rest of the job.
fn big(dir: &Path) -> String {
    let rows = 10_000_000;
    let answered_first = 9_000_000u64;
    let input = dir.join("in.csv");
    // "valid" local parts: every answer is charged, so the credits decide where it stops.
    let input_bytes = write_input(&input, rows, "valid.");
    let report = dir.join("report.json").display().to_string();
    let args = validate_args(
        &input,
        &dir.join("out.csv"),
        &["--rate", "unlimited", "--report", &report],
    );
    let before = bracket(&dir.join("1m-before"));
    let mock = Mock::start(&unlimited_mock(answered_first as f64 * 0.05));
    let first = run_mailsift(&mock, dir, &args);
    drop(mock);
    let report = std::fs::read_to_string(&report).unwrap_or_default();
    let rows_first = json_number(&report, "/rows/total").unwrap_or(0.0) as u64;
    let state = dir_size(&dir.join("state"));

    // The resume: the mock logs one line per request; the first one marks the first request.
    let mock = Mock::start_logging(&unlimited_mock(1e12));
    let second = run_mailsift(&mock, dir, &args);
    let first_request = mock
        .first_request()
        .map(|t| t.saturating_duration_since(second.started));
    let total_rows = count_lines(&dir.join("out.csv")).saturating_sub(1);
    let after = bracket(&dir.join("1m-after"));
    // The machine's speed moves within minutes (see the module's doc), so the 10M run is
    // compared with 1M runs on either side of it, not with one taken at another time.
    let cpu = |run: &Run, rows: u64| run.usage.cpu() / rows as f64;
    let sys = |run: &Run, rows: u64| run.usage.sys / rows as f64;
    let rate = |run: &Run, rows: u64| rows as f64 / run.wall.as_secs_f64();
    let change = |big: f64, one: [f64; 2]| 100.0 * (2.0 * big / (one[0] + one[1]) - 1.0);
    let m = BRACKET_ROWS;
    format!(
        "## 6/7. 10,000,000 unique rows ({:.0} MB), every answer charged; credits for {answered_first}\n\
         command: `MAILSIFT_BENCH_10M=1 cargo bench --bench pipeline -- big` (mock as in the overhead bench, \
         `--credits 450000` for the first run)\n\
         cpu: {}\n\
         first run, to exit 4 (out of credits), per row of the {answered_first} answered: {}\n\
         {rows_first} rows written before the checkpoint; state directory then: {:.1} MB\n\
         7. resume (same command, new credits): first new request {} after start (goal <= 2 s)\n\
         resumed run, per row of the {} left: {}; output rows in the end: {total_rows}\n\
         1M first run of the same kind just before the 10M run: {}\n\
         1M first run just after the resume: {}\n\
         15. the 10M first run against the mean of the two 1M runs: CPU per row {:+.1}%, system CPU per row {:+.1}% \
         (goal: within 20% each); rate {:.1}% (goal >= 90%)",
        input_bytes as f64 / 1e6,
        cpu_model(),
        first.figures(answered_first),
        state as f64 / 1e6,
        first_request.map_or("never".to_owned(), |d| format!("{:.3} s", d.as_secs_f64())),
        rows - answered_first,
        second.figures(rows - answered_first),
        before.figures(m),
        after.figures(m),
        change(
            cpu(&first, answered_first),
            [cpu(&before, m), cpu(&after, m)]
        ),
        change(
            sys(&first, answered_first),
            [sys(&before, m), sys(&after, m)]
        ),
        100.0 * rate(&first, answered_first) / ((rate(&before, m) + rate(&after, m)) / 2.0),
    )
}

/// Rows of the first runs on either side of the 10M one.
const BRACKET_ROWS: u64 = 1_000_000;

/// A first run of [`BRACKET_ROWS`] unique rows, every answer charged (as in the 10M run), in
/// `dir` with its own state, removed afterwards.
fn bracket(dir: &Path) -> Run {
    std::fs::create_dir_all(dir).expect("creating a bench directory");
    let input = dir.join("in.csv");
    write_input(&input, BRACKET_ROWS, "valid.");
    let mock = Mock::start(&unlimited_mock(1e12));
    let run = run_mailsift(
        &mock,
        dir,
        &validate_args(&input, &dir.join("out.csv"), &["--rate", "unlimited"]),
    );
    let _ = std::fs::remove_dir_all(dir);
    run
}

/// The answer tables' put path alone, in this process: new answers stored one after another,
/// with a checkpoint (`Store::flush`, which syncs the tables in the background) every 50,000
/// (the pipeline's 2 s at 25,000 rows/s). For each stretch: user and system CPU per answer,
/// and bytes per answer the kernel counted as written to storage (`write_bytes`: a page
/// dirtied counts 4 KiB) and through write calls (`wchar`), and the longest single `put` (a
/// table that doubles, inline here; the pipeline does it on a blocking thread). Up to 3M
/// answers, 10M with `MAILSIFT_BENCH_10M=1`. Then the state as a `kill -9` would leave it
/// (copied while nothing is stored) is opened: the time to replay its journal.
fn store_puts(dir: &Path) -> String {
    use mailsift::store::{Answer, Domain, Store};
    let ends: &[u64] = if std::env::var_os("MAILSIFT_BENCH_10M").is_some() {
        &[1_000_000, 3_000_000, 10_000_000]
    } else {
        &[1_000_000, 3_000_000]
    };
    let store = Store::open(&dir.join("state")).expect("opening the bench store");
    let mut lines = vec![
        "## store: new answers put one after another, a checkpoint every 50,000".to_owned(),
        "command: `cargo bench --bench pipeline -- store` (`MAILSIFT_BENCH_10M=1` for 10M)".into(),
        format!("cpu: {}", cpu_model()),
        "answers | wall s | user us/answer | sys us/answer | write_bytes/answer | wchar/answer | longest put ms | load".into(),
    ];
    let mut from = 0;
    let killed = dir.join("killed");
    for &end in ends {
        let before = Usage::of("self");
        let started = Instant::now();
        let mut longest = Duration::ZERO;
        for i in from..end {
            let answer = Answer {
                status: Some(mailsift::internals::client::Status::Valid),
                message: Some("Email is valid.".into()),
                domain: Arc::new(Domain {
                    mx_provider: Some(
                        ["Google Workspace", "Microsoft 365", "Mimecast"][i as usize % 3].into(),
                    ),
                    mx_record: Some(format!("mx.d{}.example.com", i % 20_011)),
                    ..Domain::default()
                }),
                is_catch_all: Some(false),
                credits: 0.05,
                checked_at: 1_800_000_000,
                run: 7,
                first_row: i,
            };
            let put = Instant::now();
            store
                .put(&store.key(&address(i, "")), &answer)
                .expect("storing an answer");
            longest = longest.max(put.elapsed());
            if (i + 1) % 50_000 == 0 {
                store.flush().expect("a checkpoint");
            }
        }
        if end == *ends.last().expect("a stretch") {
            copy_dir(&dir.join("state"), &killed);
        }
        store.sync().expect("the last sync");
        let wall = started.elapsed();
        let used = Usage::of("self").since(&before);
        let n = (end - from) as f64;
        let line = format!(
            "{from}..{end} | {:.1} | {:.2} | {:.2} | {:.0} | {:.0} | {:.1} | {}",
            wall.as_secs_f64(),
            used.user * 1e6 / n,
            used.sys * 1e6 / n,
            used.write_bytes as f64 / n,
            used.wchar as f64 / n,
            longest.as_secs_f64() * 1e3,
            load(),
        );
        eprintln!("store: {line}");
        lines.push(line);
        from = end;
    }
    lines.push(format!(
        "state directory: {:.1} MB",
        dir_size(&dir.join("state")) as f64 / 1e6
    ));
    drop(store);
    let journal: u64 = std::fs::read_dir(killed.join("answers"))
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with("journal."))
        .filter_map(|e| e.metadata().ok())
        .map(|m| m.len())
        .sum();
    let started = Instant::now();
    let opened = Store::open(&killed).map(drop);
    lines.push(format!(
        "opened after a kill at {} answers (journal files {:.1} MB): {:.3} s{}",
        ends.last().expect("a stretch"),
        journal as f64 / 1e6,
        started.elapsed().as_secs_f64(),
        opened
            .err()
            .map_or(String::new(), |e| format!(" (failed: {e:#})")),
    ));
    lines.join("\n")
}

/// Copies a directory tree (the state as a `kill -9` leaves it: what the page cache holds).
fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("creating a copy");
    for entry in std::fs::read_dir(from)
        .expect("reading the state")
        .flatten()
    {
        let target = to.join(entry.file_name());
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copying the state");
        }
    }
}

fn unlimited_mock(credits: f64) -> Vec<String> {
    [
        "--rate-per-min",
        "4000000000",
        "--daily-quota",
        "1000000000000",
        "--credits",
        &credits.to_string(),
    ]
    .map(str::to_owned)
    .to_vec()
}

// ---------------------------------------------------------------------------------------------
// The pieces

/// Row `i`'s address: unique, spread over 20,011 domains, no reserved local-part prefix unless
/// `prefix` asks for one.
fn address(i: u64, prefix: &str) -> String {
    format!("{prefix}p{i:08}.smith@d{}.acme-corp.com", i % 20_011)
}

/// A contacts CSV with a header and `rows` unique addresses; returns its size.
fn write_input(path: &Path, rows: u64, prefix: &str) -> u64 {
    let file = std::fs::File::create(path).expect("creating the bench input");
    let mut out = BufWriter::with_capacity(1 << 20, file);
    writeln!(out, "id,first_name,company,email").expect("writing the bench input");
    for i in 0..rows {
        writeln!(
            out,
            "{i},Name{},Company {},{}",
            i % 977,
            i % 5003,
            address(i, prefix)
        )
        .expect("writing the bench input");
    }
    out.flush().expect("writing the bench input");
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

struct Run {
    status: ExitStatus,
    started: Instant,
    wall: Duration,
    /// The most resident memory, and the most of it anonymous (the rest maps files: the
    /// answer tables, whose pages are the page cache's).
    peak_rss_kb: u64,
    peak_anon_kb: u64,
    /// As last seen in /proc while it ran (the machine may be shared: this is what the run
    /// cost, whatever else was running).
    usage: Usage,
    /// The load average when it ended.
    load: String,
    /// The share of the machine's CPU time the hypervisor gave to others while it ran (a
    /// virtual machine's neighbours: a slow hour shows here, not in the load).
    steal: f64,
}

impl Run {
    /// Its figures per row: speed, CPU (user and system apart), bytes written, memory, and
    /// the load beside them.
    fn figures(&self, rows: u64) -> String {
        let per_row = |x: f64| x * 1e6 / rows as f64;
        format!(
            "exit {}, {:.2} s, {:.0} rows/s; CPU per row {:.1} us user + {:.1} us system = {:.1} us; \
             written per row {:.0} B (write_bytes), {:.0} B (wchar); peak RSS {:.1} MB ({:.1} MB anonymous); load {}; \
             steal {:.1}%",
            code(self.status),
            self.wall.as_secs_f64(),
            rows as f64 / self.wall.as_secs_f64(),
            per_row(self.usage.user),
            per_row(self.usage.sys),
            per_row(self.usage.cpu()),
            self.usage.write_bytes as f64 / rows as f64,
            self.usage.wchar as f64 / rows as f64,
            self.peak_rss_kb as f64 / 1024.0,
            self.peak_anon_kb as f64 / 1024.0,
            self.load,
            self.steal * 100.0,
        )
    }
}

/// `mailsift validate INPUT -o OUTPUT` and more arguments.
fn validate_args(input: &Path, output: &Path, more: &[&str]) -> Vec<String> {
    let mut args = vec![
        "validate".to_owned(),
        input.display().to_string(),
        "-o".into(),
        output.display().to_string(),
    ];
    args.extend(more.iter().map(|a| a.to_string()));
    args
}

/// Runs the mailsift binary against `mock` with its state in `dir/state`; waits for it while
/// sampling its memory and usage every 10 ms.
fn run_mailsift(mock: &Mock, dir: &Path, args: &[String]) -> Run {
    let mut cmd = Command::new(std::env::var_os(MAILSIFT_VAR).unwrap_or(MAILSIFT.into()));
    cmd.arg("-q")
        .args(args)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("LEADMAGIC_BASE_URL", &mock.url)
        .env("LEADMAGIC_API_KEY", "mock-key")
        .env("MAILSIFT_STATE_DIR", dir.join("state"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    let ticks = CpuTicks::now();
    let started = Instant::now();
    let mut child = cmd.spawn().expect("starting mailsift");
    let pid = child.id().to_string();
    let status_path = format!("/proc/{pid}/status");
    let (mut peak_rss_kb, mut peak_anon_kb) = (0, 0);
    let mut usage = Usage::default();
    let status = loop {
        if let Ok(text) = std::fs::read_to_string(&status_path) {
            peak_rss_kb = peak_rss_kb.max(status_kb(&text, "VmHWM:").unwrap_or(0));
            peak_anon_kb = peak_anon_kb.max(status_kb(&text, "RssAnon:").unwrap_or(0));
        }
        if let Some(now) = Usage::read(&pid) {
            usage = now;
        }
        match child.try_wait().expect("waiting for mailsift") {
            Some(status) => break status,
            None => std::thread::sleep(Duration::from_millis(10)),
        }
    };
    Run {
        status,
        started,
        wall: started.elapsed(),
        peak_rss_kb,
        peak_anon_kb,
        usage,
        load: load(),
        steal: CpuTicks::now().steal_since(&ticks),
    }
}

/// What a process used so far, from /proc: CPU seconds (at the usual 100 ticks per second)
/// and its I/O accounting.
#[derive(Default, Clone, Copy)]
struct Usage {
    user: f64,
    sys: f64,
    /// Bytes the process caused to be sent to storage: each page it dirtied counts 4 KiB.
    write_bytes: u64,
    /// Bytes passed to write calls.
    wchar: u64,
}

impl Usage {
    /// `pid` is a process id or `self`; `None` once the process is gone.
    fn read(pid: &str) -> Option<Usage> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        let fields: Vec<&str> = stat[stat.rfind(')')? + 2..].split_whitespace().collect();
        let ticks = |i: usize| Some(fields.get(i)?.parse::<u64>().ok()? as f64 / 100.0);
        let io = std::fs::read_to_string(format!("/proc/{pid}/io")).ok()?;
        let field = |name: &str| {
            io.lines()
                .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
                .unwrap_or(0)
        };
        Some(Usage {
            // utime and stime: fields 14 and 15, after the command name in parentheses.
            user: ticks(11)?,
            sys: ticks(12)?,
            write_bytes: field("write_bytes:"),
            wchar: field("wchar:"),
        })
    }

    fn of(pid: &str) -> Usage {
        Usage::read(pid).unwrap_or_default()
    }

    fn since(&self, before: &Usage) -> Usage {
        Usage {
            user: self.user - before.user,
            sys: self.sys - before.sys,
            write_bytes: self.write_bytes - before.write_bytes,
            wchar: self.wchar - before.wchar,
        }
    }

    fn cpu(&self) -> f64 {
        self.user + self.sys
    }
}

/// A figure in kB from /proc/PID/status.
fn status_kb(text: &str, name: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with(name))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// The mock as a child process on a free loopback port.
struct Mock {
    child: Child,
    url: String,
    addr: String,
    first_request: Arc<Mutex<Option<Instant>>>,
}

impl Mock {
    fn start<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> Mock {
        Mock::spawn(args, false)
    }

    /// With `-v`: one log line per request, watched for the first validation.
    fn start_logging<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> Mock {
        Mock::spawn(args, true)
    }

    fn spawn<S: AsRef<std::ffi::OsStr>>(args: &[S], logging: bool) -> Mock {
        let mut child = Command::new(MOCK)
            .args(["--port", "0", if logging { "-v" } else { "-q" }])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(if logging {
                Stdio::piped()
            } else {
                Stdio::inherit()
            })
            .spawn()
            .expect("starting leadmagic-mock");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("piped"))
            .read_line(&mut line)
            .expect("reading the mock's address");
        let url = line
            .split_whitespace()
            .last()
            .unwrap_or_default()
            .to_owned();
        let addr = url.trim_start_matches("http://").to_owned();
        assert!(!addr.is_empty(), "the mock said {line:?}");
        let first_request = Arc::new(Mutex::new(None));
        if let Some(stderr) = child.stderr.take() {
            let first = first_request.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines() {
                    let Ok(line) = line else { break };
                    if line.contains("email-validation") {
                        let mut slot = first.lock().unwrap_or_else(|e| e.into_inner());
                        slot.get_or_insert_with(Instant::now);
                    }
                }
            });
        }
        Mock {
            child,
            url,
            addr,
            first_request,
        }
    }

    fn first_request(&self) -> Option<Instant> {
        *self.first_request.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The mock's CPU time and I/O so far.
    fn usage(&self) -> Usage {
        Usage::of(&self.child.id().to_string())
    }

    fn stats(&self) -> Stats {
        let body = http_close(&self.addr, "GET /__mock/stats");
        serde_json::from_slice(&body).expect("the mock's stats")
    }
}

impl Drop for Mock {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One request on its own connection; returns the body.
fn http_close(addr: &str, request_line: &str) -> Vec<u8> {
    let mut stream = TcpStream::connect(addr).expect("connecting to the mock");
    write!(
        stream,
        "{request_line} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .expect("asking the mock");
    let mut response = Vec::new();
    stream.read_to_end(&mut response).expect("reading the mock");
    let at = find(&response, b"\r\n\r\n").map_or(response.len(), |i| i + 4);
    response.split_off(at)
}

/// A typical per-row fetch loop: one keep-alive connection, one request at a time, the next
/// only once the answer is in. Returns how many were answered 200.
fn sequential_client(mock: &Mock, addresses: &[String]) -> u64 {
    let mut stream = TcpStream::connect(&mock.addr).expect("connecting to the mock");
    stream.set_nodelay(true).ok();
    let mut reader = BufReader::new(stream.try_clone().expect("cloning the socket"));
    let mut answered = 0;
    for address in addresses {
        let body = format!("{{\"email\":\"{address}\"}}");
        write!(
            stream,
            "POST /v1/people/email-validation HTTP/1.1\r\nHost: {}\r\nX-API-Key: mock-key\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            mock.addr,
            body.len()
        )
        .expect("sending");
        let mut status = String::new();
        reader.read_line(&mut status).expect("reading the status");
        let mut length = 0;
        loop {
            let mut header = String::new();
            reader.read_line(&mut header).expect("reading a header");
            let header = header.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':') {
                if name.eq_ignore_ascii_case("content-length") {
                    length = value.trim().parse().unwrap_or(0);
                }
            }
        }
        let mut body = vec![0; length];
        reader.read_exact(&mut body).expect("reading the body");
        if status.split_whitespace().nth(1) == Some("200") {
            answered += 1;
        }
    }
    answered
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn count_lines(path: &Path) -> u64 {
    let Ok(file) = std::fs::File::open(path) else {
        return 0;
    };
    let mut reader = BufReader::with_capacity(1 << 20, file);
    let mut lines = 0;
    loop {
        let buf = match reader.fill_buf() {
            Ok([]) | Err(_) => break,
            Ok(buf) => buf,
        };
        lines += buf.iter().filter(|&&b| b == b'\n').count() as u64;
        let n = buf.len();
        reader.consume(n);
    }
    lines
}

fn dir_size(path: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(path) else {
        return 0;
    };
    entries
        .filter_map(Result::ok)
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_size(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

/// A number in a JSON text, by JSON pointer (`/rows/total`).
fn json_number(text: &str, pointer: &str) -> Option<f64> {
    let value: serde_json::Value = serde_json::from_str(text).ok()?;
    value.pointer(pointer)?.as_f64()
}

fn code(status: ExitStatus) -> String {
    status
        .code()
        .map_or_else(|| "by signal".to_owned(), |c| c.to_string())
}

fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

/// The machine's CPU time so far, from the first line of /proc/stat.
struct CpuTicks {
    total: u64,
    steal: u64,
}

impl CpuTicks {
    fn now() -> CpuTicks {
        let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
        // cpu  user nice system idle iowait irq softirq steal guest guest_nice
        let fields: Vec<u64> = stat
            .lines()
            .next()
            .unwrap_or_default()
            .split_whitespace()
            .skip(1)
            .take(8)
            .filter_map(|f| f.parse().ok())
            .collect();
        CpuTicks {
            total: fields.iter().sum(),
            steal: fields.get(7).copied().unwrap_or(0),
        }
    }

    /// The share of the time since `before` that was stolen.
    fn steal_since(&self, before: &CpuTicks) -> f64 {
        let total = self.total.saturating_sub(before.total);
        if total == 0 {
            return 0.0;
        }
        self.steal.saturating_sub(before.steal) as f64 / total as f64
    }
}

/// How fast this machine is right now, by a fixed piece of work that does not depend on
/// mailsift's code: 2^20 random numbers counted into a hash map, sorted, and formatted as
/// addresses, on one thread. Its time moves with the machine's speed (this virtual machine's
/// varied by 1.7x within an hour), so figures measured at different times or on different CPUs
/// can be set side by side by it. The best of five after one untimed run (the first run's
/// page faults are the kernel's work, not the CPU's), and the slowest.
fn reference() -> String {
    std::hint::black_box(reference_work());
    let mut times: Vec<Duration> = (0..5)
        .map(|_| {
            let started = Instant::now();
            std::hint::black_box(reference_work());
            started.elapsed()
        })
        .collect();
    times.sort();
    format!(
        "machine reference (fixed work, one thread, smaller is faster): {:.1} ms best, {:.1} ms slowest of 5",
        times[0].as_secs_f64() * 1e3,
        times[4].as_secs_f64() * 1e3,
    )
}

fn reference_work() -> usize {
    use std::fmt::Write as _;
    let mut x = 0x9E37_79B9_7F4A_7C15_u64;
    let mut numbers: Vec<u64> = (0..1 << 20)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        })
        .collect();
    let mut counts = std::collections::HashMap::with_capacity(1 << 16);
    for n in &numbers {
        *counts.entry(n % 50_021).or_insert(0_u32) += 1;
    }
    numbers.sort_unstable();
    let mut text = String::new();
    let mut length = counts.len();
    for n in numbers.iter().step_by(4) {
        text.clear();
        let _ = write!(
            text,
            "p{:08}.smith@d{}.acme-corp.com",
            n % 100_000_000,
            n % 20_011
        );
        length += text.len();
    }
    length
}

fn cores() -> usize {
    std::thread::available_parallelism().map_or(0, |n| n.get())
}

fn machine() -> String {
    let cores = cores();
    let memory = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            let line = m.lines().find(|l| l.starts_with("MemTotal:"))?.to_owned();
            line.split_whitespace().nth(1)?.parse::<u64>().ok()
        })
        .map_or("?".to_owned(), |kb| {
            format!("{:.1} GiB", kb as f64 / 1048576.0)
        });
    format!("{cores} cores ({}), {memory} memory", cpu_model())
}

/// The CPU's model name, from /proc/cpuinfo.
fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            let line = c.lines().find(|l| l.starts_with("model name"))?.to_owned();
            Some(line.split_once(':')?.1.trim().to_owned())
        })
        .unwrap_or_else(|| "?".into())
}

/// The bench's scratch directory, removed at the end.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> Scratch {
        let base = std::env::var_os("MAILSIFT_BENCH_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(std::env::temp_dir);
        let dir = base.join(format!("mailsift-bench-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("creating the scratch directory");
        Scratch(dir)
    }

    fn sub(&self, name: &str) -> PathBuf {
        let dir = self.0.join(name);
        std::fs::create_dir_all(&dir).expect("creating a scratch directory");
        dir
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
