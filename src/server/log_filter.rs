//! The diagnostic log filter: `--log-level`, `$ATTACHE_LOG` and `POST /logging`.

use tracing_subscriber::EnvFilter;

/// The bare levels a filter directive may be.
pub const LEVELS: &[&str] = &["trace", "debug", "info", "warn", "error", "off"];

/// Parse a filter: comma-separated directives, each a level (`info`) or
/// `target=level` (`attache=debug`). A bare word that is not a level is refused:
/// `tracing` would read it as a target name and silence every other log.
pub fn parse(filter: &str) -> Result<EnvFilter, String> {
    let hint = "use trace, debug, info, warn, error, off, or target=level directives such as `info,attache=debug`";
    if filter.trim().is_empty() {
        return Err(format!("empty log level; {hint}"));
    }
    for d in filter.split(',').map(str::trim) {
        if !d.contains('=') && !LEVELS.contains(&d.to_ascii_lowercase().as_str()) {
            return Err(format!("invalid log level `{d}`; {hint}"));
        }
    }
    EnvFilter::try_new(filter).map_err(|e| format!("invalid log level `{filter}`: {e}; {hint}"))
}

#[cfg(test)]
mod tests {
    use super::parse;

    #[test]
    fn levels_and_directives_parse_bare_words_do_not() {
        for ok in [
            "info",
            "DEBUG",
            "off",
            "info,attache=debug",
            "attache::admin=trace",
        ] {
            assert!(parse(ok).is_ok(), "{ok}");
        }
        for bad in ["verbose", "", "info,verbose", "attache=loud"] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }
}
