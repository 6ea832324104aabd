//! Behaviour tests: the real binary and the library against the mock server.

mod badinput;
mod cli;
mod crash;
mod faults;
#[path = "../fuzz/checks.rs"]
mod fuzz_checks;
mod fuzz_seeds;
mod inbox;
mod machine;
mod mock;
mod report_html;
mod secrets;
mod spend;
mod util;
mod validate;
