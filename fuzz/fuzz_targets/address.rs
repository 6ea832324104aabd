//! Fuzz target: the address normaliser and syntax check on arbitrary bytes.

#![no_main]

#[path = "../checks.rs"]
#[allow(dead_code)] // each target uses its own check
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::address(data));
