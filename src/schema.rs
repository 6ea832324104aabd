//! The names and formats of what mailsift writes: the annotation columns, the status words,
//! the split files, how credits and times are printed.
//!
//! Owns: the vocabulary that the reader (to recognise a file mailsift already annotated), the
//! writer, the report and the progress display must agree on.
//!
//! Must not: depend on any other module of the crate. It is the bottom of the graph, so that
//! input and output can both use it without one importing the other.

use std::time::Duration;

/// The annotation columns, in order (the input reader recognises them, to replace them when an
/// annotated file is validated again). New columns only ever go at the end, so that a file
/// annotated by an earlier version (the first [`FIRST_RELEASE_COLUMNS`] or more) is recognised.
pub const ANNOTATION_COLUMNS: [&str; 11] = [
    "email_status",
    "email_message",
    "email_normalized",
    "mx_provider",
    "mx_record",
    "is_catch_all",
    "credits_consumed",
    "checked_at",
    "source",
    "email_suggestion",
    "email_others",
];

/// How many annotation columns the first release wrote (up to `source`).
pub const FIRST_RELEASE_COLUMNS: usize = 9;

/// Added by `--columns all`: the free company enrichment.
pub const COMPANY_COLUMNS: [&str; 6] = [
    "company_name",
    "company_industry",
    "company_size",
    "company_founded",
    "company_location",
    "company_linkedin_url",
];

/// The statuses a row can end with, in display order (an unknown API status counts as
/// `other`).
pub const STATUSES: [&str; 8] = [
    "valid",
    "valid_catch_all",
    "catch_all",
    "unknown",
    "invalid",
    "missing",
    "error",
    "other",
];

/// `--split`: which file a row also goes to.
pub const SPLITS: [&str; 3] = ["deliverable", "risky", "undeliverable"];

/// A credit amount as mailsift writes it (the `credits_consumed` column, reports): no float
/// noise, no trailing zeros, `0` for nothing.
pub fn format_credits(credits: f64) -> String {
    if credits == 0.0 {
        return "0".to_owned();
    }
    // Round away float noise (0.1 + 0.2) without losing real precision.
    let rounded = (credits * 1e6).round() / 1e6;
    format!("{rounded}")
}

/// A time as mailsift writes it (`checked_at`, reports): RFC 3339, UTC, whole seconds.
pub fn rfc3339(unix_seconds: i64) -> String {
    let time = std::time::UNIX_EPOCH + Duration::from_secs(unix_seconds.max(0) as u64);
    humantime::format_rfc3339_seconds(time).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credits_and_times_print_plainly() {
        assert_eq!(format_credits(0.0), "0");
        assert_eq!(format_credits(0.05), "0.05");
        assert_eq!(format_credits(0.1 + 0.2), "0.3");
        assert_eq!(format_credits(1.0), "1");
        assert_eq!(rfc3339(1_790_000_000), "2026-09-21T14:13:20Z");
    }
}
