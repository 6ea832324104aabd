//! Micro-benches (criterion) of the per-row stages, without a server: the syntax check, the
//! reader + planner, the ordered writer with its reorder buffer, and the store.
//!
//! ```text
//! cargo bench --bench micro                 # all of them
//! cargo bench --bench micro -- syntax       # one group
//! ```

use std::hint::black_box;
use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use mailsift::internals::client::Status;
use mailsift::internals::input::{self, InputOptions, Location};
use mailsift::internals::output::{self, CheckpointEvery, RowFormat, Sink, Writer};
use mailsift::internals::plan::{Freshness, Pending, Planned, Planner, Resolved, Settled, Slot};
use mailsift::internals::report::Counters;
use mailsift::store::{Answer, Domain, Store, Watermark};
use tokio::sync::mpsc;

const ROWS: u64 = 100_000;

fn address(i: u64) -> String {
    format!("p{i:08}.smith@d{}.acme-corp.com", i % 20_011)
}

/// Addresses as they come in real files: mostly plain, some wrapped, some broken.
fn cells() -> Vec<Vec<u8>> {
    (0..10_000u64)
        .map(|i| {
            match i % 20 {
                0 | 10 => format!("Jane Doe <{}>", address(i).to_uppercase()),
                1 | 11 => format!(" mailto:{} ", address(i)),
                2 | 12 => format!("p{i}@"),
                3 | 13 => format!("p{i}.smith@mañana-{}.es", i % 50),
                4 => format!("Jane Doe ({})", address(i)),
                5 => format!("\u{200e}\"{}\u{201d}。", address(i)),
                6 => format!("jose\u{301}.{i}@acme-corp.com"),
                7 => format!("p{i}@gmial.con"),
                _ => address(i),
            }
            .into_bytes()
        })
        .collect()
}

fn syntax(c: &mut Criterion) {
    let cells = cells();
    let mut group = c.benchmark_group("syntax");
    group.throughput(Throughput::Elements(cells.len() as u64));
    group.bench_function("check 10k addresses (goal >= 2M/s)", |b| {
        b.iter(|| {
            for cell in &cells {
                black_box(mailsift::address::check(black_box(cell)));
            }
        })
    });
    // The common cell alone: a bare, valid address.
    let plain: Vec<Vec<u8>> = (0..10_000).map(|i| address(i).into_bytes()).collect();
    group.bench_function("check 10k plain addresses", |b| {
        b.iter(|| {
            for cell in &plain {
                black_box(mailsift::address::check(black_box(cell)));
            }
        })
    });
    group.finish();
}

fn input_file(dir: &std::path::Path) -> (std::path::PathBuf, u64) {
    let path = dir.join("in.csv");
    let mut out = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
    writeln!(out, "id,first_name,company,email").unwrap();
    for i in 0..ROWS {
        writeln!(
            out,
            "{i},Name{},Company {},{}",
            i % 977,
            i % 5003,
            address(i)
        )
        .unwrap();
    }
    out.flush().unwrap();
    let len = std::fs::metadata(&path).unwrap().len();
    (path, len)
}

fn freshness() -> Freshness {
    Freshness {
        max_age: Duration::from_secs(30 * 86_400),
        max_age_unknown: Duration::from_secs(86_400),
        max_age_catch_all: Duration::from_secs(7 * 86_400),
        refresh: false,
    }
}

fn reader_and_planner(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let (path, bytes) = input_file(dir.path());
    let source = Location::Path(path);
    let read_all = || {
        let (_, reader) = input::open(&source, &InputOptions::default(), None).unwrap();
        let mut rows = 0u64;
        for row in reader {
            black_box(row.unwrap());
            rows += 1;
        }
        assert_eq!(rows, ROWS);
    };
    let mut group = c.benchmark_group("input");
    group.sample_size(10);
    group.throughput(Throughput::Bytes(bytes));
    group.bench_function("reader, 100k rows (bytes)", |b| b.iter(read_all));
    group.throughput(Throughput::Elements(ROWS));
    group.bench_function("reader, 100k rows (rows)", |b| b.iter(read_all));

    // The planner on unique addresses: a store miss and a new job per row.
    let store = Arc::new(Store::open(&dir.path().join("state")).unwrap());
    let plan_all = |store: &Arc<Store>| {
        let (_, reader) = input::open(&source, &InputOptions::default(), None).unwrap();
        let mut planner = Planner::new(store.clone(), 1, freshness(), 0, 4096);
        let lookup = planner.lookup();
        let mut jobs = Vec::new();
        for (seq, row) in reader.enumerate() {
            let looked = lookup.row(row.unwrap());
            black_box(planner.plan(seq as u64, looked, &mut jobs).unwrap());
            jobs.clear();
        }
    };
    group.throughput(Throughput::Bytes(bytes));
    group.bench_function("reader + planner, new addresses (bytes)", |b| {
        b.iter(|| plan_all(&store))
    });
    group.throughput(Throughput::Elements(ROWS));
    group.bench_function("reader + planner, new addresses (rows)", |b| {
        b.iter(|| plan_all(&store))
    });
    // The same with every address answered by an earlier run: the cache path's planning.
    for i in 0..ROWS {
        let key = store.key(&address(i).to_lowercase());
        store.put(&key, &answer(i)).unwrap();
    }
    group.bench_function("reader + planner, cached addresses (rows)", |b| {
        b.iter(|| plan_all(&store))
    });
    group.finish();
}

fn answer(i: u64) -> Answer {
    Answer {
        status: Some(Status::Valid),
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
    }
}

/// The writer with its reorder buffer: blocks of 1,024 rows whose answers land in reverse
/// order (the worst case for the buffer: nothing can be written until the block's last answer).
fn reorder(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (path, _) = input_file(dir.path());
    let (layout, reader) =
        input::open(&Location::Path(path), &InputOptions::default(), None).unwrap();
    let rows: Vec<input::Row> = reader.map(Result::unwrap).collect();
    let format = RowFormat::new(&layout, false, None);
    let answers: Vec<Arc<Answer>> = (0..ROWS).map(|i| Arc::new(answer(i))).collect();
    let mut group = c.benchmark_group("reorder");
    group.sample_size(10);
    group.throughput(Throughput::Elements(ROWS));
    group.bench_function(
        "writer, 100k rows answered in reverse blocks of 1024",
        |b| {
            b.iter_batched(
                || rows.clone(),
                |rows| {
                    runtime.block_on(write_reordered(
                        rows,
                        &answers,
                        format.clone(),
                        &dir.path().join("out.csv"),
                    ))
                },
                BatchSize::PerIteration,
            )
        },
    );
    group.finish();
}

async fn write_reordered(
    rows: Vec<input::Row>,
    answers: &[Arc<Answer>],
    format: RowFormat,
    out: &std::path::Path,
) {
    const BLOCK: usize = 1024;
    let writer = Writer {
        sink: Sink::files(out, false, None).unwrap(),
        format,
        watermark: Watermark::default(),
        journal: None,
        every: CheckpointEvery {
            rows: u64::MAX,
            interval: Duration::from_secs(3600),
        },
        counters: Arc::new(Counters::new()),
    };
    let (tx, rx) = mpsc::channel(4096);
    let (settled_tx, settled_rx) = mpsc::channel(4096);
    let task = tokio::spawn(output::run(writer, rx, settled_rx, 4096));
    let mut rows = rows.into_iter().enumerate();
    loop {
        let mut block = Vec::with_capacity(BLOCK);
        for (seq, row) in rows.by_ref().take(BLOCK) {
            let pending = Arc::new(Pending::new(seq as u64));
            block.push((seq, pending.clone()));
            let planned = Planned {
                seq: seq as u64,
                normalized: address(seq as u64),
                row,
                slot: Slot::Wait(pending),
                others: Vec::new(),
            };
            tx.send(vec![planned]).await.unwrap();
        }
        if block.is_empty() {
            break;
        }
        for (seq, pending) in block.iter().rev() {
            let resolved = Resolved::Answered(answers[*seq].clone());
            let pending = pending.clone();
            settled_tx
                .send(Settled { pending, resolved })
                .await
                .unwrap();
        }
    }
    drop(tx);
    let (end, _) = task.await.unwrap().unwrap();
    assert_eq!(end, output::WriteEnd::Complete);
}

fn store(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let keys: Vec<_> = (0..ROWS).map(|i| store.key(&address(i))).collect();
    let answers: Vec<Answer> = (0..ROWS).map(answer).collect();
    let mut group = c.benchmark_group("store");
    group.sample_size(10);
    group.throughput(Throughput::Elements(ROWS));
    group.bench_function("put 100k answers", |b| {
        b.iter(|| {
            for (key, answer) in keys.iter().zip(&answers) {
                store.put(key, answer).unwrap();
            }
        })
    });
    group.bench_function("get 100k answers", |b| {
        b.iter(|| {
            for key in &keys {
                black_box(store.get(key).unwrap().unwrap());
            }
        })
    });
    group.bench_function("key (salted hash) of 100k addresses", |b| {
        b.iter(|| {
            for i in 0..ROWS {
                black_box(store.key(black_box("p00001234.smith@d1234.example.com")));
                black_box(i);
            }
        })
    });
    group.finish();
}

criterion_group!(benches, syntax, reader_and_planner, reorder, store);
criterion_main!(benches);
