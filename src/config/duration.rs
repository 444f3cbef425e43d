//! Durations as strings: `250ms`, `1.5s`, `2m`, `1h30m`, `30d`. One grammar for every
//! key: this is the filters crate's parser (`attache_filters::duration`), re-exported.

use std::time::Duration;

pub use attache_filters::duration::ConfigDuration as Dur;

/// Parse a duration string; the error is the message shown to the user.
pub fn parse(s: &str) -> Result<Duration, String> {
    attache_filters::duration::parse(s).map_err(|e| e.to_string())
}
