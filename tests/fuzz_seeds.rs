//! The fuzz targets' properties (`fuzz/checks.rs`) on every `cargo test`: over the committed
//! seeds, and over a few thousand seeded mutations of them, so CI exercises what the fuzzers
//! check without a nightly toolchain. Real fuzzing: see "Fuzzing" in the README.

use std::path::Path;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::fuzz_checks as checks;

fn seeds(target: &str) -> Vec<Vec<u8>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/seeds")
        .join(target);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert!(files.len() >= 10, "the seed corpus of {target} is there");
    files.iter().map(|p| std::fs::read(p).unwrap()).collect()
}

/// A libFuzzer-style mutation: flip, insert, delete or splice in a byte that matters to CSV
/// and addresses.
fn mutate(seed: &[u8], rng: &mut StdRng) -> Vec<u8> {
    const INTERESTING: &[u8] = b",;\t|\"\r\n@.<>\0\xff\xc3\xa9 ";
    let mut data = seed.to_vec();
    for _ in 0..rng.random_range(1..6) {
        let at = rng.random_range(0..=data.len());
        let byte = INTERESTING[rng.random_range(0..INTERESTING.len())];
        match rng.random_range(0..4) {
            0 if at < data.len() => data[at] ^= 1 << rng.random_range(0..8),
            1 => data.insert(at, byte),
            2 if at < data.len() => {
                data.remove(at);
            }
            _ if at < data.len() => data[at] = byte,
            _ => data.push(byte),
        }
    }
    data
}

fn replay(target: &str, check: fn(&[u8]), mutations: usize) {
    let mut rng = StdRng::seed_from_u64(4);
    for seed in seeds(target) {
        check(&seed);
        for _ in 0..mutations {
            check(&mutate(&seed, &mut rng));
        }
    }
}

#[test]
fn address_seeds_and_mutations_keep_the_fuzzed_properties() {
    replay("address", checks::address, 300);
}

#[test]
fn reader_planner_seeds_and_mutations_keep_the_fuzzed_properties() {
    replay("reader_planner", checks::reader_planner, 40);
}

#[test]
fn decoder_seeds_and_mutations_keep_the_fuzzed_properties() {
    replay("decoder", checks::decoder, 40);
}

#[test]
fn cells_seeds_and_mutations_keep_the_fuzzed_properties() {
    replay("cells", checks::cells, 300);
}
