//! Fuzz target: the splitter of cells holding several addresses, and the row planned from one.

#![no_main]

#[path = "../checks.rs"]
#[allow(dead_code)] // each target uses its own check
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::cells(data));
