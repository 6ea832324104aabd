//! `leadmagic-mock`: the LeadMagic mock server as a program (`leadmagic-mock --help`).
//!
//! Everything, the command line included, lives in the `leadmagic-mock` crate; this target only
//! makes `cargo install --path .` install the mock beside mailsift.

// The allocator mailsift uses: the mock shares the machine's cores with the mailsift it
// serves in benches, and glibc's malloc cost it about a tenth of its CPU per request.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    leadmagic_mock::cli::main()
}
