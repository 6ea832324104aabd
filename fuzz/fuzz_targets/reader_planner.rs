//! Fuzz target: the CSV reader, the planner and the row writer on arbitrary bytes.

#![no_main]

#[path = "../checks.rs"]
#[allow(dead_code)] // each target uses its own check
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::reader_planner(data));
