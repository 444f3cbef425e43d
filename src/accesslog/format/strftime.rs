//! `%START_TIME(FORMAT)%`: the request's start time in UTC through a strftime
//! pattern, the subset Envoy users write (`%Y-%m-%dT%H:%M:%S%z`, `%s.%3f`, NGINX's
//! `$time_local` as `%d/%b/%Y:%H:%M:%S %z`). Parsed once when the config is
//! compiled; rendering is arithmetic and formatting only.

use std::fmt::Write;
use std::time::SystemTime;

/// The specifiers [`TimeFormat::parse`] accepts, for its error message and the docs.
pub const SPECIFIERS: &str = "%Y %y %m %d %e %H %M %S %j %s %f %1f..%9f %b %a %z %Z %F %T %%";

#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Lit(String),
    /// `%Y`: four-digit year.
    Year,
    /// `%y`: two-digit year.
    Year2,
    Month,
    Day,
    /// `%e`: day of the month, space-padded.
    DaySpace,
    Hour,
    Minute,
    Second,
    /// `%j`: day of the year, 001-366.
    DayOfYear,
    /// `%s`: seconds since the Unix epoch.
    Epoch,
    /// `%Nf` (N digits of the fraction of the second; `%f` is 9).
    Frac(u8),
    /// `%b`: `Jan`..`Dec`.
    MonthName,
    /// `%a`: `Sun`..`Sat`.
    Weekday,
    /// `%z`: `+0000` (times are UTC).
    Offset,
    /// `%Z`: `UTC`.
    Zone,
}

/// A compiled strftime pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimeFormat(Vec<Piece>);

impl TimeFormat {
    pub fn parse(spec: &str) -> Result<TimeFormat, String> {
        let mut pieces = Vec::new();
        let mut lit = String::new();
        let mut chars = spec.chars();
        while let Some(c) = chars.next() {
            if c != '%' {
                lit.push(c);
                continue;
            }
            let next = chars.next();
            let piece = match next {
                Some('%') => {
                    lit.push('%');
                    continue;
                }
                Some(short @ ('F' | 'T')) => {
                    let long = if short == 'F' { "%Y-%m-%d" } else { "%H:%M:%S" };
                    push_all(&mut pieces, &mut lit, TimeFormat::parse(long)?.0);
                    continue;
                }
                Some(d @ '1'..='9') => match chars.next() {
                    Some('f') => Piece::Frac(d as u8 - b'0'),
                    _ => return Err(unknown(&format!("%{d}"))),
                },
                Some(c) => simple(c).ok_or_else(|| unknown(&format!("%{c}")))?,
                None => return Err("a lone `%` at the end; write `%%` for a literal %".into()),
            };
            push_all(&mut pieces, &mut lit, [piece]);
        }
        if !lit.is_empty() {
            pieces.push(Piece::Lit(lit));
        }
        Ok(TimeFormat(pieces))
    }

    /// Append `t` (UTC) in this pattern to `out`.
    pub fn render(&self, t: SystemTime, out: &mut String) {
        let d = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
        let secs = i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
        let days = secs.div_euclid(86_400);
        let rem = secs.rem_euclid(86_400);
        let (year, month, day) = crate::http::civil_from_days(days);
        for p in &self.0 {
            let _ = match p {
                Piece::Lit(s) => {
                    out.push_str(s);
                    Ok(())
                }
                Piece::Year => write!(out, "{year:04}"),
                Piece::Year2 => write!(out, "{:02}", year.rem_euclid(100)),
                Piece::Month => write!(out, "{month:02}"),
                Piece::Day => write!(out, "{day:02}"),
                Piece::DaySpace => write!(out, "{day:2}"),
                Piece::Hour => write!(out, "{:02}", rem / 3600),
                Piece::Minute => write!(out, "{:02}", rem / 60 % 60),
                Piece::Second => write!(out, "{:02}", rem % 60),
                Piece::DayOfYear => write!(out, "{:03}", days - days_before_year(year) + 1),
                Piece::Epoch => write!(out, "{secs}"),
                Piece::Frac(n) => {
                    let nanos = format!("{:09}", d.subsec_nanos());
                    out.push_str(&nanos[..usize::from(*n)]);
                    Ok(())
                }
                Piece::MonthName => {
                    out.push_str(MONTHS[usize::try_from(month - 1).unwrap_or(0) % 12]);
                    Ok(())
                }
                // 1970-01-01 was a Thursday.
                Piece::Weekday => {
                    out.push_str(DAYS[usize::try_from((days + 4).rem_euclid(7)).unwrap_or(0)]);
                    Ok(())
                }
                Piece::Offset => {
                    out.push_str("+0000");
                    Ok(())
                }
                Piece::Zone => {
                    out.push_str("UTC");
                    Ok(())
                }
            };
        }
    }
}

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];
const DAYS: [&str; 7] = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];

fn simple(c: char) -> Option<Piece> {
    Some(match c {
        'Y' => Piece::Year,
        'y' => Piece::Year2,
        'm' => Piece::Month,
        'd' => Piece::Day,
        'e' => Piece::DaySpace,
        'H' => Piece::Hour,
        'M' => Piece::Minute,
        'S' => Piece::Second,
        'j' => Piece::DayOfYear,
        's' => Piece::Epoch,
        'f' => Piece::Frac(9),
        'b' => Piece::MonthName,
        'a' => Piece::Weekday,
        'z' => Piece::Offset,
        'Z' => Piece::Zone,
        _ => return None,
    })
}

/// Flush the pending literal, then push `new`.
fn push_all(pieces: &mut Vec<Piece>, lit: &mut String, new: impl IntoIterator<Item = Piece>) {
    if !lit.is_empty() {
        pieces.push(Piece::Lit(std::mem::take(lit)));
    }
    pieces.extend(new);
}

fn unknown(spec: &str) -> String {
    format!("unsupported time specifier `{spec}`; use {SPECIFIERS}")
}

/// Days from 1970-01-01 to January 1st of `year`.
fn days_before_year(year: i64) -> i64 {
    let y = year - 1;
    365 * (year - 1970) + (y / 4 - y / 100 + y / 400) - (1969 / 4 - 1969 / 100 + 1969 / 400)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn at(ms: u64, spec: &str) -> String {
        let f = TimeFormat::parse(spec).unwrap_or_else(|e| panic!("{spec}: {e}"));
        let mut s = String::new();
        f.render(SystemTime::UNIX_EPOCH + Duration::from_millis(ms), &mut s);
        s
    }

    #[test]
    fn renders_envoy_and_nginx_patterns_in_utc() {
        // 2025-11-25T23:59:59.123Z, a Tuesday, day 329 of the year.
        let t = 1_764_115_199_123;
        assert_eq!(at(t, "%Y-%m-%dT%H:%M:%S%z"), "2025-11-25T23:59:59+0000");
        assert_eq!(at(t, "%F %T %Z"), "2025-11-25 23:59:59 UTC");
        assert_eq!(at(t, "%s.%3f"), "1764115199.123");
        assert_eq!(at(t, "%s.%6f|%f"), "1764115199.123000|123000000");
        assert_eq!(at(t, "%d/%b/%Y:%H:%M:%S %z"), "25/Nov/2025:23:59:59 +0000");
        assert_eq!(at(t, "%a %e %j %y 100%%"), "Tue 25 329 25 100%");
        assert_eq!(at(0, "%a %j %F"), "Thu 001 1970-01-01");
        // A leap year's last day.
        assert_eq!(at(1_735_603_200_000, "%F %j"), "2024-12-31 366");
    }

    #[test]
    fn unsupported_specifiers_name_the_supported_ones() {
        for spec in ["%Q", "%0f", "%E3S", "abc%"] {
            let e = TimeFormat::parse(spec).expect_err(spec);
            assert!(
                e.contains("%Y %y %m") || e.contains("lone `%`"),
                "{spec}: {e}"
            );
        }
    }
}
