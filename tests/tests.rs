//! Behaviour tests: the real binary and the library against the mock server.

mod addresses;
mod badinput;
mod cells;
mod cli;
mod color;
mod crash;
mod excel;
mod faults;
#[path = "../fuzz/checks.rs"]
mod fuzz_checks;
mod fuzz_seeds;
mod hostile;
mod inbox;
mod inspect;
mod install;
mod layering;
mod logs;
mod machine;
mod mock;
mod outbox;
mod ownership;
mod report_html;
mod scenario;
mod secrets;
mod spend;
mod util;
mod validate;
