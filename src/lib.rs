//! mailsift: clean email lists in bulk through the LeadMagic email-validation API.

pub mod mock;
