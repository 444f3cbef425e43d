//! Durations as strings: `250ms`, `5s`, `2m`, `1h`, `30d`.

use std::time::Duration;

use serde::{Deserialize, Deserializer};

/// A duration written as a string in YAML.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dur(pub Duration);

/// Parse `<number><unit>` with unit one of `ms`, `s`, `m`, `h`, `d`.
pub fn parse(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    if num.is_empty() {
        return Err(format!(
            "`{s}` is not a duration; write e.g. `250ms`, `5s`, `2m`"
        ));
    }
    let n: f64 = num
        .parse()
        .map_err(|_| format!("`{s}` is not a duration; write e.g. `250ms`, `5s`, `2m`"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        "d" => n * 86400.0,
        "" => return Err(format!("duration `{s}` needs a unit: ms, s, m, h or d")),
        other => {
            return Err(format!(
                "unknown duration unit `{other}` in `{s}`; use ms, s, m, h or d"
            ))
        }
    };
    if !secs.is_finite() || secs > 1e9 {
        return Err(format!("duration `{s}` is too large"));
    }
    Ok(Duration::from_secs_f64(secs))
}

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        parse(&s).map(Dur).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_units() {
        assert_eq!(parse("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse("30d"), Ok(Duration::from_secs(30 * 86400)));
    }

    #[test]
    fn rejects_garbage() {
        assert!(parse("5").is_err());
        assert!(parse("s").is_err());
        assert!(parse("5 parsecs").is_err());
        assert!(parse("").is_err());
    }
}
