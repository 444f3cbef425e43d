//! Origin allow-lists shared by `web_security` (CSRF) and `cors`: exact origins,
//! host suffixes and regexes, compiled once at config load.

use regex::bytes::RegexSet;
use serde::Deserialize;

use crate::api::ConfigError;

/// One `allowed_origins` entry. A bare string is an exact origin
/// (`https://app.example.com`), or `*` for any origin.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Pattern {
    Exact(String),
    Rule(Rule),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub enum Rule {
    /// The whole origin, compared case-insensitively.
    Exact(String),
    /// The origin's host ends with this (`.example.com`), any scheme and port.
    Suffix(String),
    /// A regex over the whole origin string (`^https://[a-z]+\.corp\.example$`).
    Regex(String),
}

/// The compiled allow-list.
#[derive(Debug, Default)]
pub struct Matcher {
    any: bool,
    exact: Vec<Box<[u8]>>,
    suffix: Vec<Box<[u8]>>,
    regex: Option<RegexSet>,
}

impl Matcher {
    /// Compile `patterns`; problems are reported relative to `at` (e.g.
    /// `csrf.allowed_origins`), one per bad entry.
    pub fn compile(patterns: &[Pattern], at: &str, errors: &mut Vec<ConfigError>) -> Matcher {
        let mut m = Matcher::default();
        let mut regexes = Vec::new();
        for (i, p) in patterns.iter().enumerate() {
            let here = format!("{at}.{i}");
            match p {
                Pattern::Exact(s) if s == "*" => m.any = true,
                Pattern::Exact(s) | Pattern::Rule(Rule::Exact(s)) => {
                    if !s.contains("://") && s != "null" {
                        errors.push(ConfigError::at(
                            &here,
                            format!("`{s}` is not an origin; write scheme://host[:port]"),
                        ));
                    } else if s.ends_with('/') {
                        errors.push(ConfigError::at(
                            &here,
                            format!("origin `{s}` must not end with `/`"),
                        ));
                    }
                    m.exact.push(s.to_ascii_lowercase().into_bytes().into());
                }
                Pattern::Rule(Rule::Suffix(s)) => {
                    if s.is_empty() || s.contains('/') || s.contains(':') {
                        errors.push(ConfigError::at(
                            &here,
                            format!("suffix `{s}` must be a host suffix such as `.example.com`"),
                        ));
                    }
                    m.suffix.push(s.to_ascii_lowercase().into_bytes().into());
                }
                Pattern::Rule(Rule::Regex(r)) => match regex::bytes::Regex::new(r) {
                    Ok(_) => regexes.push(r.clone()),
                    Err(e) => errors.push(ConfigError::at(
                        &format!("{here}.regex"),
                        format!("invalid regex: {e}"),
                    )),
                },
            }
        }
        if !regexes.is_empty() {
            match RegexSet::new(&regexes) {
                Ok(set) => m.regex = Some(set),
                Err(e) => errors.push(ConfigError::at(at, format!("invalid regex set: {e}"))),
            }
        }
        m
    }

    /// Whether `*` is on the list.
    pub fn allows_any(&self) -> bool {
        self.any
    }

    /// Whether the list is empty (nothing but the request's own origin is allowed).
    pub fn is_empty(&self) -> bool {
        !self.any && self.exact.is_empty() && self.suffix.is_empty() && self.regex.is_none()
    }

    /// Whether `origin` (a serialized origin, e.g. `https://a.example.com:8443`) is
    /// allowed. Never allocates.
    pub fn matches(&self, origin: &[u8]) -> bool {
        if self.any {
            return true;
        }
        if self.exact.iter().any(|e| e.eq_ignore_ascii_case(origin)) {
            return true;
        }
        if !self.suffix.is_empty() {
            if let Some(host) = Origin::parse(origin).map(|o| o.host) {
                if self.suffix.iter().any(|s| ends_with_ignore_case(host, s)) {
                    return true;
                }
            }
        }
        match &self.regex {
            Some(set) => set.is_match(origin),
            None => false,
        }
    }
}

fn ends_with_ignore_case(s: &[u8], suffix: &[u8]) -> bool {
    s.len() >= suffix.len() && s[s.len() - suffix.len()..].eq_ignore_ascii_case(suffix)
}

/// A borrowed view of `scheme://host[:port]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Origin<'a> {
    pub scheme: &'a [u8],
    pub host: &'a [u8],
    /// The explicit port, or the scheme's default (443 for https, 80 for http).
    pub port: Option<u16>,
}

impl<'a> Origin<'a> {
    /// Parse an origin, or the origin part of a URL (for `Referer`). `None` for
    /// `null`, relative references and garbage.
    pub fn parse(s: &'a [u8]) -> Option<Origin<'a>> {
        let sep = find(s, b"://")?;
        let scheme = &s[..sep];
        if scheme.is_empty()
            || !scheme
                .iter()
                .all(|b| b.is_ascii_alphanumeric() || *b == b'+')
        {
            return None;
        }
        let rest = &s[sep + 3..];
        let end = rest
            .iter()
            .position(|b| matches!(b, b'/' | b'?' | b'#'))
            .unwrap_or(rest.len());
        let mut authority = &rest[..end];
        if let Some(at) = authority.iter().rposition(|b| *b == b'@') {
            authority = &authority[at + 1..];
        }
        let (host, port) = split_host_port(authority)?;
        let port = port.or_else(|| default_port(scheme));
        Some(Origin { scheme, host, port })
    }

    /// Whether this origin names `authority` (a Host header value), the port
    /// defaulting from this origin's scheme.
    pub fn same_host(&self, authority: &[u8]) -> bool {
        match split_host_port(authority) {
            Some((host, port)) => {
                host.eq_ignore_ascii_case(self.host)
                    && port.or_else(|| default_port(self.scheme)) == self.port
            }
            None => false,
        }
    }
}

fn default_port(scheme: &[u8]) -> Option<u16> {
    if scheme.eq_ignore_ascii_case(b"https") || scheme.eq_ignore_ascii_case(b"wss") {
        Some(443)
    } else if scheme.eq_ignore_ascii_case(b"http") || scheme.eq_ignore_ascii_case(b"ws") {
        Some(80)
    } else {
        None
    }
}

/// `host[:port]`, with `[v6]` literals. `None` when empty or the port is not a number.
fn split_host_port(a: &[u8]) -> Option<(&[u8], Option<u16>)> {
    if a.is_empty() {
        return None;
    }
    let (host, rest) = if a[0] == b'[' {
        let close = a.iter().position(|b| *b == b']')?;
        (&a[..=close], &a[close + 1..])
    } else {
        match a.iter().rposition(|b| *b == b':') {
            Some(i) => (&a[..i], &a[i..]),
            None => (a, &a[a.len()..]),
        }
    };
    if host.is_empty() {
        return None;
    }
    let port = match rest {
        [] => None,
        [b':', digits @ ..] => {
            let s = std::str::from_utf8(digits).ok()?;
            Some(s.parse::<u16>().ok()?)
        }
        _ => return None,
    };
    Some((host, port))
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matcher(yaml: &str) -> (Matcher, Vec<ConfigError>) {
        let pats: Vec<Pattern> = serde_yaml::from_str(yaml).expect("yaml");
        let mut errs = Vec::new();
        let m = Matcher::compile(&pats, "allowed_origins", &mut errs);
        (m, errs)
    }

    #[test]
    fn matches_exact_suffix_and_regex() {
        let (m, errs) = matcher(
            r#"["https://app.example.com", {suffix: ".corp.example"}, {regex: '^https://[a-z]+\.test$'}]"#,
        );
        assert!(errs.is_empty(), "{errs:?}");
        assert!(m.matches(b"https://APP.example.com"));
        assert!(m.matches(b"https://a.corp.example:8443"));
        assert!(m.matches(b"https://abc.test"));
        assert!(!m.matches(b"https://evil.example.com"));
        assert!(!m.matches(b"https://corp.example.evil"));
        assert!(!m.matches(b"null"));
        assert!(!m.matches(b"\xff\xfe"));
    }

    #[test]
    fn reports_each_bad_entry_with_its_index() {
        let (_, errs) = matcher(r#"["app.example.com", {regex: "("}, {suffix: "https://x"}]"#);
        let paths: Vec<_> = errs.iter().map(|e| e.path.clone()).collect();
        assert_eq!(paths.len(), 3);
        assert_eq!(paths[0], ConfigError::at("allowed_origins.0", "").path);
        assert_eq!(
            paths[1],
            ConfigError::at("allowed_origins.1.regex", "").path
        );
        assert_eq!(paths[2], ConfigError::at("allowed_origins.2", "").path);
    }

    #[test]
    fn parses_origins_and_referers() {
        let o = Origin::parse(b"https://a.example.com/path?q#f").expect("origin");
        assert_eq!(o.host, b"a.example.com");
        assert_eq!(o.port, Some(443));
        assert!(o.same_host(b"a.example.com"));
        assert!(o.same_host(b"A.example.com:443"));
        assert!(!o.same_host(b"a.example.com:8443"));
        let v6 = Origin::parse(b"http://[::1]:8080").expect("v6");
        assert!(v6.same_host(b"[::1]:8080"));
        assert!(Origin::parse(b"null").is_none());
        assert!(Origin::parse(b"/relative").is_none());
        assert!(Origin::parse(b"https://").is_none());
        assert!(Origin::parse(b"https://h:99999").is_none());
    }
}
