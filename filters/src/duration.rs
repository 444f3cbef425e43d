//! Config durations: strings such as `250ms`, `5s`, `2m`, `1h`, `30d`, or a sum of
//! them (`1h30m`). Parsed once at config load; never on the request path.

use std::time::Duration;

use serde::de::{Deserialize, Deserializer, Error as _};

/// A duration from config. Deserializes from a string like `30d`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct ConfigDuration(pub Duration);

impl ConfigDuration {
    pub fn get(self) -> Duration {
        self.0
    }
}

/// Why a duration string did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("empty duration")]
    Empty,
    #[error("duration `{0}` needs a unit: ms, s, m, h or d (e.g. `5s`)")]
    MissingUnit(String),
    #[error("duration `{0}` has an unknown unit; use ms, s, m, h or d")]
    UnknownUnit(String),
    #[error("duration `{0}` is malformed; write e.g. `250ms`, `5s`, `30d`")]
    Malformed(String),
    #[error("duration `{0}` is too large")]
    Overflow(String),
}

/// Parse `250ms`, `5s`, `2m`, `1h`, `30d` or a concatenation such as `1h30m`.
pub fn parse(s: &str) -> Result<Duration, ParseError> {
    let t = s.trim();
    if t.is_empty() {
        return Err(ParseError::Empty);
    }
    let bytes = t.as_bytes();
    let mut total: u64 = 0; // milliseconds
    let mut i = 0;
    while i < bytes.len() {
        let start = i;
        while i < bytes.len() && bytes[i].is_ascii_digit() {
            i += 1;
        }
        if start == i {
            return Err(ParseError::Malformed(s.to_string()));
        }
        let n: u64 = t[start..i]
            .parse()
            .map_err(|_| ParseError::Overflow(s.to_string()))?;
        let ustart = i;
        while i < bytes.len() && bytes[i].is_ascii_alphabetic() {
            i += 1;
        }
        let factor: u64 = match &t[ustart..i] {
            "" => return Err(ParseError::MissingUnit(s.to_string())),
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            _ => return Err(ParseError::UnknownUnit(s.to_string())),
        };
        let part = n
            .checked_mul(factor)
            .ok_or_else(|| ParseError::Overflow(s.to_string()))?;
        total = total
            .checked_add(part)
            .ok_or_else(|| ParseError::Overflow(s.to_string()))?;
    }
    Ok(Duration::from_millis(total))
}

impl<'de> Deserialize<'de> for ConfigDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        parse(&s).map(ConfigDuration).map_err(D::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_each_unit_and_sums() {
        assert_eq!(parse("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse("30d"), Ok(Duration::from_secs(30 * 86_400)));
        assert_eq!(parse("1h30m"), Ok(Duration::from_secs(5400)));
    }

    #[test]
    fn rejects_missing_or_unknown_units_and_garbage() {
        assert_eq!(parse("5"), Err(ParseError::MissingUnit("5".into())));
        assert_eq!(parse("5y"), Err(ParseError::UnknownUnit("5y".into())));
        assert_eq!(parse(""), Err(ParseError::Empty));
        assert!(matches!(parse("s5"), Err(ParseError::Malformed(_))));
        assert!(matches!(parse("-5s"), Err(ParseError::Malformed(_))));
        assert!(matches!(
            parse("99999999999999999999d"),
            Err(ParseError::Overflow(_))
        ));
        assert!(matches!(
            parse("999999999999999d"),
            Err(ParseError::Overflow(_))
        ));
    }

    #[test]
    fn deserializes_from_yaml_string() {
        let d: ConfigDuration = serde_yaml::from_str("\"30d\"").expect("yaml");
        assert_eq!(d.get(), Duration::from_secs(30 * 86_400));
        assert!(serde_yaml::from_str::<ConfigDuration>("\"30 days\"").is_err());
    }
}
