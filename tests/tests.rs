//! Behaviour tests: the real binary and the library against the mock server.

mod cli;
mod inbox;
mod mock;
mod spend;
mod util;
mod validate;
