//! Fuzz target: encoding detection, the streaming decoder, and resuming a decoded file.

#![no_main]

#[path = "../checks.rs"]
#[allow(dead_code)] // each target uses its own check
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::decoder(data));
