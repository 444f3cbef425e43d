//! The request-target phase: the one authority a request is for, decided once, and
//! its normalized path and query. `proxy::handle` and `/explain` (through
//! `toolkit::explain`, which `test-routes` uses too) both decide with [`resolve`], so
//! routing, the upstream `Host` / `:authority`, filters (`StreamCtx.host`), the access
//! log and explain agree on it.
//!
//! Rules (RFC 9112 section 3.2, RFC 9113 section 8.3.1):
//! - the absolute-form URI's or HTTP/2 `:authority`'s authority wins; a `Host` header
//!   that names another host or port (compared ignoring case, default ports filled
//!   in) is a `400`, never forwarded;
//! - otherwise the `Host` header; an HTTP/1.1 request without `Host` is a `400`
//!   (even in absolute form); an HTTP/1.0 one gets `default_host_for_http_10` when
//!   set, else a `400`;
//! - every authority is `host[:port]` with a DNS-style name, an IPv4 address or a
//!   bracketed IPv6 address, and a port 1-65535: empty values, lists (`a, b`),
//!   userinfo (`u@x`), spaces, controls and bad ports are refused.

use std::borrow::Cow;

use http::{HeaderValue, Uri, Version};

use super::normalize::{normalize, Rejected, Rules};
use crate::error::Reject;

/// What the target is decided from.
pub struct Head<'a> {
    pub version: Version,
    /// The method is `OPTIONS`: the target may be `*`.
    pub options: bool,
    pub uri: &'a Uri,
    /// The request's `Host` header (a request with several is refused before).
    pub host: Option<&'a HeaderValue>,
    /// The connection is TLS: the scheme of an origin-form request.
    pub tls: bool,
}

/// The listener's settings the phase reads.
pub struct Settings<'a> {
    pub path: &'a Rules,
    /// `default_host_for_http_10`.
    pub default_host_http10: Option<&'a HeaderValue>,
}

/// Where the authority came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The absolute-form URI or HTTP/2 `:authority`.
    Uri,
    /// The `Host` header.
    Host,
    /// `default_host_for_http_10`.
    Default,
}

/// A request's target, borrowed from its head.
#[derive(Debug)]
pub struct Target<'a> {
    /// The authority as received: what goes upstream as `Host` (HTTP/1.1) or
    /// `:authority` (HTTP/2) and what the access log shows.
    pub authority: &'a str,
    pub source: Source,
    /// Lower case, without port or trailing dot: matched against virtual host
    /// `domains` and handed to filters. Borrowed unless the authority had upper case.
    pub host: Cow<'a, str>,
    /// The normalized path (see `normalize`).
    pub path: Cow<'a, str>,
    pub query: Option<&'a str>,
}

/// A checked authority: `host` as written (brackets kept for IPv6) and the port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Authority<'a> {
    pub host: &'a str,
    pub port: Option<u16>,
}

impl Authority<'_> {
    /// The same origin as `other`: host ignoring case and one trailing dot, ports
    /// with the scheme's default filled in.
    fn same_as(&self, other: &Authority<'_>, default_port: u16) -> bool {
        let (a, b) = (trim_dot(self.host), trim_dot(other.host));
        a.eq_ignore_ascii_case(b)
            && self.port.unwrap_or(default_port) == other.port.unwrap_or(default_port)
    }
}

fn trim_dot(host: &str) -> &str {
    host.strip_suffix('.').unwrap_or(host)
}

/// Check `raw` as `host[:port]` (RFC 9110 section 7.2, stricter than RFC 3986's
/// reg-name: letters, digits, `-`, `_` and `.` between non-empty labels, one
/// trailing dot allowed; or `[IPv6]`).
pub fn parse_authority(raw: &[u8]) -> Option<Authority<'_>> {
    authority(std::str::from_utf8(raw).ok()?).map(|(a, _)| a)
}

/// [`parse_authority`] on text, in one pass over it (this runs for every
/// request), and whether the host has upper-case letters.
fn authority(s: &str) -> Option<(Authority<'_>, bool)> {
    let b = s.as_bytes();
    let (end, upper) = if b.first() == Some(&b'[') {
        let end = 1 + b.iter().position(|&c| c == b']')?;
        s[1..end - 1].parse::<std::net::Ipv6Addr>().ok()?;
        (end, false)
    } else {
        name_end(b)?
    };
    let port = match &b[end..] {
        [] => None,
        [b':', digits @ ..] => Some(parse_port(digits)?),
        _ => return None,
    };
    let host = &s[..end];
    Some((Authority { host, port }, upper))
}

/// Where a DNS-style name at the front of `b` ends (at the end or a `:`), and
/// whether it has upper-case letters. None when it is not one: an empty label,
/// a byte outside letters, digits, `-`, `_` and `.`, or nothing but a dot.
fn name_end(b: &[u8]) -> Option<(usize, bool)> {
    let (mut label, mut upper) = (0usize, false);
    let mut end = b.len();
    for (i, &c) in b.iter().enumerate() {
        match c {
            b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' => label += 1,
            b'A'..=b'Z' => {
                label += 1;
                upper = true;
            }
            b'.' if label > 0 => label = 0,
            b':' => {
                end = i;
                break;
            }
            _ => return None,
        }
    }
    // The last label may be empty only after one trailing dot.
    let trailing_dot = end > 0 && b[end - 1] == b'.';
    (label > 0 || (trailing_dot && end > 1)).then_some((end, upper))
}

fn parse_port(p: &[u8]) -> Option<u16> {
    if p.is_empty() || p.len() > 5 {
        return None;
    }
    let n = p.iter().try_fold(0u32, |n, &d| {
        d.is_ascii_digit().then(|| n * 10 + u32::from(d - b'0'))
    })?;
    u16::try_from(n).ok().filter(|&n| n > 0)
}

/// Decide the request's target: its authority, then its path.
pub fn resolve<'a>(head: &Head<'a>, settings: &Settings<'a>) -> Result<Target<'a>, Reject> {
    let (authority, source, parsed, upper) = authority_of(head, settings)?;
    let host = trim_dot(parsed.host);
    let host = if upper {
        Cow::Owned(host.to_ascii_lowercase())
    } else {
        Cow::Borrowed(host)
    };
    let (path, query) = path_of(head, settings.path)?;
    Ok(Target {
        authority,
        source,
        host,
        path,
        query,
    })
}

/// The authority, where it came from, its parts, and whether its host has upper
/// case.
type Decided<'a> = (&'a str, Source, Authority<'a>, bool);

fn authority_of<'a>(head: &Head<'a>, settings: &Settings<'a>) -> Result<Decided<'a>, Reject> {
    // A Host header is checked even where the URI's authority wins.
    let host_header = match head.host {
        Some(h) => {
            let s = h.to_str().map_err(|_| Reject::Host)?;
            Some((s, authority(s).ok_or(Reject::Host)?))
        }
        None => None,
    };
    if let Some(a) = head.uri.authority() {
        let default_port = match head.uri.scheme_str() {
            Some(s) if s.eq_ignore_ascii_case("https") => 443,
            Some(s) if s.eq_ignore_ascii_case("http") => 80,
            Some(_) => return Err(Reject::Scheme),
            None if head.tls => 443,
            None => 80,
        };
        let (parsed, upper) = authority(a.as_str()).ok_or(Reject::Host)?;
        match host_header {
            Some((_, (h, _))) if !h.same_as(&parsed, default_port) => return Err(Reject::Host),
            None if head.version == Version::HTTP_11 => return Err(Reject::Host),
            _ => {}
        }
        return Ok((a.as_str(), Source::Uri, parsed, upper));
    }
    if let Some((s, (parsed, upper))) = host_header {
        return Ok((s, Source::Host, parsed, upper));
    }
    // No authority at all: only HTTP/1.0 (and 0.9) may leave it out.
    let default = match head.version {
        Version::HTTP_09 | Version::HTTP_10 => settings.default_host_http10,
        _ => None,
    };
    let s = default.and_then(|d| d.to_str().ok()).ok_or(Reject::Host)?;
    let (parsed, upper) = authority(s).ok_or(Reject::Host)?;
    Ok((s, Source::Default, parsed, upper))
}

fn path_of<'a>(head: &Head<'a>, rules: &Rules) -> Result<(Cow<'a, str>, Option<&'a str>), Reject> {
    // `http::Uri` has found the query already.
    let (raw_path, query) = match head.uri.path_and_query() {
        Some(pq) => (pq.path(), pq.query()),
        None => ("/", None),
    };
    match normalize(raw_path, rules) {
        Ok(p) => Ok((p, query)),
        Err(_) if head.options && raw_path == "*" => Ok((Cow::Borrowed(raw_path), query)),
        Err(e) => Err(reason(e)),
    }
}

/// The counted reason for a path the normalizer refuses.
pub fn reason(e: Rejected) -> Reject {
    match e {
        Rejected::EscapedSlash | Rejected::Malformed => Reject::Path,
        Rejected::Backslash => Reject::Backslash,
        Rejected::DoubleEncoded => Reject::DoubleEncoding,
        Rejected::DotSegment => Reject::PathTraversal,
    }
}

#[cfg(test)]
mod tests;
