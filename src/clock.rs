//! Wall-clock time for verdict timestamps and freshness.
//!
//! `MAILSIFT_NOW` (Unix seconds) pins the clock, like `SOURCE_DATE_EPOCH` does for builds: it
//! makes two runs of the same input comparable byte for byte, which is how the tests prove that
//! an interrupted and resumed job writes exactly what an uninterrupted one does.

use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

/// Now, in Unix seconds.
pub fn now() -> i64 {
    static PINNED: OnceLock<Option<i64>> = OnceLock::new();
    let pinned = PINNED.get_or_init(|| std::env::var("MAILSIFT_NOW").ok()?.trim().parse().ok());
    pinned.unwrap_or_else(|| {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64)
    })
}
