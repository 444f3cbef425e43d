//! Config durations, the one grammar for every key of every crate: a string of one or
//! more `<number><unit>` parts, unit one of `ms`, `s`, `m`, `h`, `d`, the number
//! with an optional fraction: `250ms`, `1.5s`, `2m`, `1h30m`, `30d`. Surrounding
//! whitespace is ignored; at most 10⁹ seconds. Parsed once at config load; never on
//! the request path. The core crate re-exports this module (`config::duration`).

use std::time::Duration;

use serde::de::{Deserialize, Deserializer, Visitor};

/// A duration from config. Deserializes from a string like `30d`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct ConfigDuration(pub Duration);

impl ConfigDuration {
    pub fn get(self) -> Duration {
        self.0
    }
}

/// The largest accepted duration, in seconds.
const MAX_SECS: u64 = 1_000_000_000;

/// Why a duration string did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("empty duration; write e.g. `250ms`, `5s`, `1h30m`")]
    Empty,
    #[error("duration `{0}` needs a unit: ms, s, m, h or d (e.g. `{0}s`)")]
    MissingUnit(String),
    #[error("unknown duration unit `{unit}` in `{input}`; use ms, s, m, h or d")]
    UnknownUnit { unit: String, input: String },
    #[error("`{0}` is not a duration; write e.g. `250ms`, `5s`, `1h30m`")]
    Malformed(String),
    #[error("duration `{0}` is too large")]
    Overflow(String),
}

/// Nanoseconds per unit.
fn unit_nanos(unit: &str) -> Option<u128> {
    Some(match unit {
        "ms" => 1_000_000,
        "s" => 1_000_000_000,
        "m" => 60_000_000_000,
        "h" => 3_600_000_000_000,
        "d" => 86_400_000_000_000,
        _ => return None,
    })
}

/// `digits[.digits]` times `unit` nanoseconds, exactly (fractions below 1 ns drop).
fn part_nanos(number: &str, unit: u128) -> Option<u128> {
    let (int, frac) = number.split_once('.').unwrap_or((number, ""));
    let mut n = int.parse::<u128>().ok()?.checked_mul(unit)?;
    let mut scale = unit;
    for d in frac.bytes().take(30) {
        scale /= 10;
        n = n.checked_add(u128::from(d - b'0') * scale)?;
    }
    Some(n)
}

/// Parse a duration string (see the module docs for the grammar).
pub fn parse(s: &str) -> Result<Duration, ParseError> {
    let t = s.trim();
    if t.is_empty() {
        return Err(ParseError::Empty);
    }
    let mut total: u128 = 0;
    let mut rest = t;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !c.is_ascii_digit() && c != '.')
            .unwrap_or(rest.len());
        let (number, after) = rest.split_at(num_len);
        let unit_len = after
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(after.len());
        let (unit, next) = after.split_at(unit_len);
        let well_formed = !number.starts_with('.')
            && !number.ends_with('.')
            && number.bytes().filter(|b| *b == b'.').count() <= 1;
        if number.is_empty() || !well_formed {
            return Err(ParseError::Malformed(t.to_string()));
        }
        if unit.is_empty() {
            return Err(ParseError::MissingUnit(t.to_string()));
        }
        let Some(per) = unit_nanos(unit) else {
            return Err(ParseError::UnknownUnit {
                unit: unit.to_string(),
                input: t.to_string(),
            });
        };
        total = part_nanos(number, per)
            .and_then(|n| total.checked_add(n))
            .filter(|n| *n <= u128::from(MAX_SECS) * 1_000_000_000)
            .ok_or_else(|| ParseError::Overflow(t.to_string()))?;
        rest = next;
    }
    let secs = (total / 1_000_000_000) as u64;
    Ok(Duration::new(secs, (total % 1_000_000_000) as u32))
}

impl<'de> Deserialize<'de> for ConfigDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(DurationVisitor)
    }
}

/// Strings parse; a bare number (`timeout: 2`, the Envoy/NGINX habit of implied
/// seconds) is refused with the unit it needs.
struct DurationVisitor;

impl DurationVisitor {
    fn bare_number<E: serde::de::Error>(n: impl std::fmt::Display) -> E {
        E::custom(format!(
            "a duration needs a unit: add one, e.g. `{n}s` or `{n}ms` (a quoted string)"
        ))
    }
}

impl Visitor<'_> for DurationVisitor {
    type Value = ConfigDuration;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a duration such as `250ms`, `5s` or `1h30m`")
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
        parse(v).map(ConfigDuration).map_err(E::custom)
    }

    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Self::Value, E> {
        Err(Self::bare_number(v))
    }

    fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Self::Value, E> {
        Err(Self::bare_number(v))
    }

    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Self::Value, E> {
        Err(Self::bare_number(v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_each_unit_fractions_and_sums() {
        let table = [
            ("250ms", Duration::from_millis(250)),
            ("5s", Duration::from_secs(5)),
            ("2m", Duration::from_secs(120)),
            ("1h", Duration::from_secs(3600)),
            ("30d", Duration::from_secs(30 * 86_400)),
            ("1h30m", Duration::from_secs(5400)),
            ("1.5s", Duration::from_millis(1500)),
            ("0.25ms", Duration::from_micros(250)),
            ("1m0.5s", Duration::from_millis(60_500)),
            (" 10s ", Duration::from_secs(10)),
            ("1000000000s", Duration::from_secs(1_000_000_000)),
        ];
        for (s, want) in table {
            assert_eq!(parse(s), Ok(want), "{s}");
        }
    }

    #[test]
    fn rejects_missing_or_unknown_units_and_garbage() {
        assert_eq!(parse("5"), Err(ParseError::MissingUnit("5".into())));
        assert_eq!(parse("1h30"), Err(ParseError::MissingUnit("1h30".into())));
        assert_eq!(
            parse("5 seconds"),
            Err(ParseError::UnknownUnit {
                unit: " seconds".into(),
                input: "5 seconds".into()
            })
        );
        assert!(matches!(parse("5y"), Err(ParseError::UnknownUnit { .. })));
        assert_eq!(parse(""), Err(ParseError::Empty));
        for bad in ["s5", "-5s", "s", ".5s", "5.s", "1.2.3s"] {
            assert!(matches!(parse(bad), Err(ParseError::Malformed(_))), "{bad}");
        }
        for big in ["99999999999999999999d", "1000000000.001s", "31710d"] {
            assert!(matches!(parse(big), Err(ParseError::Overflow(_))), "{big}");
        }
    }

    #[test]
    fn the_missing_unit_message_is_true() {
        // `1.5s` used to be reported as needing a unit.
        assert!(parse("1.5s").is_ok());
        assert!(parse("5")
            .expect_err("no unit")
            .to_string()
            .contains("needs a unit"));
        assert!(!parse("5x")
            .expect_err("unknown unit")
            .to_string()
            .contains("needs a unit"));
    }

    #[test]
    fn deserializes_from_yaml_and_refuses_bare_numbers_with_a_hint() {
        let d: ConfigDuration = serde_yaml::from_str("\"30d\"").expect("yaml");
        assert_eq!(d.get(), Duration::from_secs(30 * 86_400));
        let d: ConfigDuration = serde_yaml::from_str("1h30m").expect("plain scalar");
        assert_eq!(d.get(), Duration::from_secs(5400));
        assert!(serde_yaml::from_str::<ConfigDuration>("\"30 days\"").is_err());
        for bare in ["2", "2.5", "-1"] {
            let e = serde_yaml::from_str::<ConfigDuration>(bare).expect_err("bare number");
            assert!(e.to_string().contains(&format!("`{bare}s`")), "{e}");
        }
    }
}
