//! Durations as strings: `250ms`, `1.5s`, `2m`, `1h30m`, `30d`. One grammar for every
//! key: this is the filters crate's parser (`attache_filters::duration`), re-exported.

use std::time::Duration;

pub use attache_filters::duration::ConfigDuration as Dur;

/// Parse a duration string; the error is the message shown to the user.
pub fn parse(s: &str) -> Result<Duration, String> {
    attache_filters::duration::parse(s).map_err(|e| e.to_string())
}

/// Format a duration the way configs write them: `0s`, `250ms`, `15s`, `2m`, `1h`.
pub fn format(d: Duration) -> String {
    let ms = d.as_millis();
    if ms == 0 {
        "0s".into()
    } else if ms.is_multiple_of(3_600_000) {
        format!("{}h", ms / 3_600_000)
    } else if ms.is_multiple_of(60_000) {
        format!("{}m", ms / 60_000)
    } else if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}
