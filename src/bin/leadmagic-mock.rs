//! `leadmagic-mock`: the LeadMagic mock server as a program (`leadmagic-mock --help`).
//!
//! Everything, the command line included, lives in the `leadmagic-mock` crate; this target only
//! makes `cargo install --path .` install the mock beside mailsift.

fn main() -> std::process::ExitCode {
    leadmagic_mock::cli::main()
}
