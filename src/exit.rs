//! Exit codes (DESIGN.md) and the mapping from an error to its code.
//!
//! Commands return `Ok(Exit)` for the outcomes they decide themselves (a resumable stop) and
//! errors for everything else; [`Exit::for_error`] walks the error chain to find the code, so
//! code deep down only has to return the right typed error.
//!
//! Must not: import the modules whose errors it maps. Every layer raises [`usage`] errors, so
//! this module sits at the bottom of the graph; `Exit::for_error`, which has to know the typed
//! errors of `client` and `input`, is implemented at the crate root (lib.rs) for that reason.

/// The process exit codes, as documented in `--help` and the README.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Finished: every row written.
    Ok = 0,
    /// Failed (I/O, internal error).
    Failed = 1,
    /// Usage or input error (bad flags, unreadable file, no email column).
    Usage = 2,
    /// The API key was rejected (401).
    KeyRejected = 3,
    /// Out of credits (402) or credit budget reached: resumable.
    OutOfCredits = 4,
    /// Interrupted by a signal: resumable.
    Interrupted = 5,
    /// Too many failed requests, or the base URL never answered: resumable.
    TooManyFailures = 6,
}

/// The text of `--help`'s exit-code table.
pub const EXIT_CODES_HELP: &str = "\
Exit codes:
  0  finished: every row written
  1  failed (I/O or internal error)
  2  usage or input error (bad flags, unreadable file, no email column, no API key,
     state directory in use or damaged)
  3  API key rejected (HTTP 401)
  4  out of credits (HTTP 402) or credit budget reached: run the same command again to resume
  5  interrupted by a signal: run the same command again to resume
  6  too many failed requests, or nothing answered at the base URL: run the same command
     again to resume";

/// `estimate --help`'s table: it spends nothing, and only reads the balance.
pub const ESTIMATE_EXIT_CODES_HELP: &str = "\
Exit codes:
  0  the estimate is printed (with the balance when a key is set)
  1  failed (I/O or internal error)
  2  usage or input error (bad flags, unreadable file, no email column, state directory in use
     or damaged)
  3  API key rejected (HTTP 401) when reading the balance; the estimate is printed first
  6  nothing answered at the base URL when reading the balance; the estimate is printed first";

/// An error that is the user's to fix: bad flags or input (exit 2).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// Shorthand for returning a usage error.
pub fn usage(message: impl Into<String>) -> anyhow::Error {
    UsageError(message.into()).into()
}

impl Exit {
    /// The number the process exits with.
    pub fn code(self) -> u8 {
        self as u8
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::ApiError;
    use anyhow::Context;

    #[test]
    fn codes_come_from_the_cause() {
        let key: anyhow::Error = ApiError::KeyRejected {
            message: "x".into(),
        }
        .into();
        assert_eq!(
            Exit::for_error(&key.context("checking the balance")),
            Exit::KeyRejected
        );
        let credits: anyhow::Error = ApiError::OutOfCredits {
            message: "x".into(),
        }
        .into();
        assert_eq!(Exit::for_error(&credits), Exit::OutOfCredits);
        let bad = Err::<(), _>(usage("bad flag"))
            .context("parsing")
            .unwrap_err();
        assert_eq!(Exit::for_error(&bad), Exit::Usage);
        let io = anyhow::Error::from(std::io::Error::other("disk"));
        assert_eq!(Exit::for_error(&io), Exit::Failed);
        assert_eq!(Exit::TooManyFailures.code(), 6);
        let dead: anyhow::Error = ApiError::Unreachable {
            url: "http://x".into(),
            message: "refused".into(),
        }
        .into();
        assert_eq!(Exit::for_error(&dead), Exit::TooManyFailures);
        let redirect: anyhow::Error = ApiError::Refused {
            message: "x".into(),
        }
        .into();
        assert_eq!(Exit::for_error(&redirect), Exit::Failed);
    }
}
