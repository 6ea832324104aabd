//! End-to-end benches of `mailsift validate`: the real binary against the `leadmagic-mock`
//! binary, two processes on loopback, inputs generated here (deterministic, nothing
//! committed). Every scenario prints its figures, its goal and the command that reproduces it.
//!
//! ```text
//! cargo bench --bench pipeline                     # every scenario but the 10M one (~20 min)
//! cargo bench --bench pipeline -- overhead         # 1M unique rows, then the cache path
//! cargo bench --bench pipeline -- utilisation adaptive side-by-side
//! MAILSIFT_BENCH_10M=1 cargo bench --bench pipeline -- big   # 10M rows: memory, resume start
//! cargo bench --bench pipeline -- xlsx             # a 1M-row .xlsx in, then .xlsx out
//! ```
//!
//! Rate-limited scenarios (utilisation, adaptive, side-by-side) mostly wait, so they run side by
//! side; the CPU-bound ones (overhead, big) run alone. Peak RSS is the child's `VmHWM`, read
//! from `/proc` every 10 ms while it runs (Linux only). Scratch files go to
//! `$MAILSIFT_BENCH_DIR` (default: the system temp dir) and are removed at the end.

use std::io::{BufRead, BufReader, BufWriter, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use leadmagic_mock::Stats;

const MAILSIFT: &str = env!("CARGO_BIN_EXE_mailsift");
const MOCK: &str = env!("CARGO_BIN_EXE_leadmagic-mock");
const SCENARIOS: [&str; 6] = [
    "utilisation",
    "adaptive",
    "side-by-side",
    "overhead",
    "xlsx",
    "big",
];

fn main() {
    // cargo passes `--bench`; everything else not starting with '-' names a scenario.
    let mut chosen: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    if chosen.is_empty() {
        chosen = SCENARIOS[..5].iter().map(|s| s.to_string()).collect();
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
    if has("xlsx") {
        print_block(xlsx(&scratch.sub("xlsx")));
    }
    if has("big") {
        if std::env::var_os("MAILSIFT_BENCH_10M").is_none() {
            println!("\n## big: skipped (set MAILSIFT_BENCH_10M=1: it takes 15 minutes or more)");
        } else {
            print_block(big(&scratch.sub("big")));
        }
    }
    println!("\nload after: {}", load());
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
    let args = [
        "validate".to_owned(),
        input.display().to_string(),
        "-o".into(),
        dir.join("out.csv").display().to_string(),
        "--rate".into(),
        format!("{rate}/min"),
    ];
    let run = run_mailsift(&mock, dir, &args);
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
    let args = [
        "validate".to_owned(),
        input.display().to_string(),
        "-o".into(),
        dir.join("out.csv").display().to_string(),
        "--rate".into(),
        "3000/min".into(),
    ];
    let run = run_mailsift(&mock, dir, &args);
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
    let args = [
        "validate".to_owned(),
        input.display().to_string(),
        "-o".into(),
        dir.join("out.csv").display().to_string(),
    ];
    let run = run_mailsift(&mock, dir, &args);
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
    let mock = Mock::start(&unlimited_mock(1e12));
    let args = [
        "validate".to_owned(),
        input.display().to_string(),
        "-o".into(),
        dir.join("out.csv").display().to_string(),
        "--rate".into(),
        "unlimited".into(),
    ];
    let load_before = load();
    let first = run_mailsift(&mock, dir, &args);
    let calls = mock.stats().validations;
    let out_rows = count_lines(&dir.join("out.csv")).saturating_sub(1);
    let state = dir_size(&dir.join("state"));
    let mut again = args.to_vec();
    again.push("--force".into());
    let second = run_mailsift(&mock, dir, &again);
    let calls_again = mock.stats().validations - calls;
    let load_after = load();
    let rate1 = rows as f64 / first.wall.as_secs_f64();
    let rate2 = rows as f64 / second.wall.as_secs_f64();
    format!(
        "## 3/4/6. overhead, cache path and memory: {rows} unique rows ({:.1} MB), zero-latency mock, no rate limit\n\
         command: mock `leadmagic-mock --rate-per-min 4000000000 --daily-quota 1000000000000 --credits 1e12`, \
         then `mailsift validate in.csv -o out.csv --rate unlimited` and the same with `--force`\n\
         load average before / after: {load_before} / {load_after}\n\
         3. first run: exit {}, {:.1} s, {:.0} rows/s (goal >= 20,000), {calls} requests, {out_rows} rows written; mailsift CPU {:.1} s ({:.0} us/row)\n\
         4. cache path (--force): exit {}, {:.2} s, {:.0} rows/s (goal >= 300,000), {calls_again} requests; mailsift CPU {:.1} s ({:.1} us/row)\n\
         6. peak RSS: first run {:.1} MB, cache path {:.1} MB (goal <= 128 MB at 1M)\n\
         state directory after the first run: {:.1} MB",
        input_bytes as f64 / 1e6,
        code(first.status),
        first.wall.as_secs_f64(),
        rate1,
        first.cpu_secs,
        first.cpu_secs * 1e6 / rows as f64,
        code(second.status),
        second.wall.as_secs_f64(),
        rate2,
        second.cpu_secs,
        second.cpu_secs * 1e6 / rows as f64,
        first.peak_rss_kb as f64 / 1024.0,
        second.peak_rss_kb as f64 / 1024.0,
        state as f64 / 1e6,
    )
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
        let args = [
            "validate".to_owned(),
            input.display().to_string(),
            "-o".into(),
            dir.join(output).display().to_string(),
            "--rate".into(),
            "unlimited".into(),
        ];
        run_mailsift(&mock, dir, &args)
    };
    let load_before = load();
    let first = run("out.csv");
    let calls = mock.stats().validations;
    let out_rows = count_lines(&dir.join("out.csv")).saturating_sub(1);
    let second = run("out.xlsx");
    let calls_again = mock.stats().validations - calls;
    let load_after = load();
    let out_xlsx = std::fs::metadata(dir.join("out.xlsx")).map_or(0, |m| m.len());
    format!(
        "## xlsx: a workbook of {rows} unique rows ({:.1} MB, shared strings, made in {:.1} s), zero-latency mock, no rate limit\n\
         command: `cargo bench --bench pipeline -- xlsx`: `mailsift validate in.xlsx -o out.csv --rate unlimited`, then `-o out.xlsx`\n\
         load average before / after: {load_before} / {load_after}\n\
         .xlsx -> .csv: exit {}, {:.1} s, {:.0} rows/s, {calls} requests, {out_rows} rows written; mailsift CPU {:.1} s; peak RSS {:.1} MB\n\
         .xlsx -> .xlsx (answers from the store): exit {}, {:.1} s, {calls_again} requests, output {:.1} MB; mailsift CPU {:.1} s; peak RSS {:.1} MB",
        input_bytes as f64 / 1e6,
        made.as_secs_f64(),
        code(first.status),
        first.wall.as_secs_f64(),
        rows as f64 / first.wall.as_secs_f64(),
        first.cpu_secs,
        first.peak_rss_kb as f64 / 1024.0,
        code(second.status),
        second.wall.as_secs_f64(),
        out_xlsx as f64 / 1e6,
        second.cpu_secs,
        second.peak_rss_kb as f64 / 1024.0,
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
    let args = [
        "validate".to_owned(),
        input.display().to_string(),
        "-o".into(),
        dir.join("out.csv").display().to_string(),
        "--rate".into(),
        "unlimited".into(),
        "--report".into(),
        dir.join("report.json").display().to_string(),
    ];
    let load_before = load();
    let mock = Mock::start(&unlimited_mock(answered_first as f64 * 0.05));
    let first = run_mailsift(&mock, dir, &args);
    drop(mock);
    let report = std::fs::read_to_string(dir.join("report.json")).unwrap_or_default();
    let rows_first = json_number(&report, "/rows/total").unwrap_or(0.0) as u64;
    let state = dir_size(&dir.join("state"));

    // The resume: the mock logs one line per request; the first one marks the first request.
    let mock = Mock::start_logging(&unlimited_mock(1e12));
    let second = run_mailsift(&mock, dir, &args);
    let first_request = mock
        .first_request()
        .map(|t| t.saturating_duration_since(second.started));
    let load_after = load();
    let total_rows = count_lines(&dir.join("out.csv")).saturating_sub(1);
    format!(
        "## 6/7. 10,000,000 unique rows ({:.0} MB), every answer charged; credits for {answered_first}\n\
         command: `MAILSIFT_BENCH_10M=1 cargo bench --bench pipeline -- big` (mock as in the overhead bench, \
         `--credits 450000` for the first run)\n\
         load average before / after: {load_before} / {load_after}\n\
         first run: exit {} (4: out of credits) after {:.1} s ({:.0} rows/s), {rows_first} rows written before the checkpoint, peak RSS {:.1} MB\n\
         state directory then: {:.1} MB\n\
         7. resume (same command, new credits): first new request {} after start (goal <= 2 s)\n\
         resumed run: exit {}, {:.1} s, peak RSS {:.1} MB; output rows in the end: {total_rows}",
        input_bytes as f64 / 1e6,
        code(first.status),
        first.wall.as_secs_f64(),
        rows_first as f64 / first.wall.as_secs_f64(),
        first.peak_rss_kb as f64 / 1024.0,
        state as f64 / 1e6,
        first_request.map_or("never".to_owned(), |d| format!("{:.3} s", d.as_secs_f64())),
        code(second.status),
        second.wall.as_secs_f64(),
        second.peak_rss_kb as f64 / 1024.0,
    )
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
    peak_rss_kb: u64,
    /// User + system CPU seconds, as last seen in /proc (the machine may be shared: this is
    /// what the run cost, whatever else was running).
    cpu_secs: f64,
}

/// Runs the mailsift binary against `mock` with its state in `dir/state`; waits for it while
/// sampling its peak RSS.
fn run_mailsift(mock: &Mock, dir: &Path, args: &[String]) -> Run {
    let mut cmd = Command::new(MAILSIFT);
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
    let started = Instant::now();
    let mut child = cmd.spawn().expect("starting mailsift");
    let status_path = format!("/proc/{}/status", child.id());
    let stat_path = format!("/proc/{}/stat", child.id());
    let mut peak = 0;
    let mut cpu_secs = 0.0;
    let status = loop {
        if let Some(hwm) = vm_hwm(&status_path) {
            peak = peak.max(hwm);
        }
        if let Some(cpu) = cpu_seconds(&stat_path) {
            cpu_secs = cpu;
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
        peak_rss_kb: peak,
        cpu_secs,
    }
}

/// utime + stime of a process, from /proc/PID/stat (fields 14 and 15, after the command name
/// in parentheses), in seconds at the usual 100 ticks per second.
fn cpu_seconds(stat_path: &str) -> Option<f64> {
    let text = std::fs::read_to_string(stat_path).ok()?;
    let rest = &text[text.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(ticks as f64 / 100.0)
}

fn vm_hwm(status_path: &str) -> Option<u64> {
    let text = std::fs::read_to_string(status_path).ok()?;
    let line = text.lines().find(|l| l.starts_with("VmHWM:"))?;
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

fn machine() -> String {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let memory = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            let line = m.lines().find(|l| l.starts_with("MemTotal:"))?.to_owned();
            line.split_whitespace().nth(1)?.parse::<u64>().ok()
        })
        .map_or("?".to_owned(), |kb| {
            format!("{:.1} GiB", kb as f64 / 1048576.0)
        });
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            let line = c.lines().find(|l| l.starts_with("model name"))?.to_owned();
            Some(line.split_once(':')?.1.trim().to_owned())
        })
        .unwrap_or_else(|| "?".into());
    format!("{cores} cores ({cpu}), {memory} memory")
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
