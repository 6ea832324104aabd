//! Behaviour tests: the real binary and the library against the mock server.

mod badinput;
mod cli;
mod crash;
mod faults;
mod machine;
mod mock;
mod secrets;
mod util;
mod validate;
