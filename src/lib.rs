//! mailsift: clean email lists in bulk through the LeadMagic email-validation API.
pub mod cli;
pub mod client;
pub mod exit;
pub mod limiter;
pub mod retry;
pub mod store;
