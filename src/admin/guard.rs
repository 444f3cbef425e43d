//! The admin endpoint is not a web API: the guard that runs before every admin
//! request and refuses what a web page could have sent.
//!
//! Two browser attacks reach a loopback admin without a token:
//! - **DNS rebinding**: a page on `evil.example` makes its own name resolve to
//!   127.0.0.1 and then reads or drives the admin as a same-origin site. Its
//!   requests carry `Host: evil.example`, so only loopback, `localhost`, the
//!   address the client connected to and `admin.allowed_hosts` names are served.
//! - **Cross-origin simple requests**: any page can `POST` to
//!   `http://127.0.0.1:9901/quitquitquit` with a form or `fetch(..., {mode:
//!   "no-cors"})` without a CORS preflight. Such requests carry `Origin`, a
//!   `Sec-Fetch-Site` of `cross-site`/`same-site`, or a form / `text/plain`
//!   content type, so a mutation carrying any of them is refused.
//!
//! A request with a valid `Authorization: Bearer <admin.token>` skips both checks:
//! a page can neither know the token nor attach it without a preflight.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use http::{header, HeaderMap, HeaderName, Method, Request};
use prometheus::IntCounter;

use crate::config::snapshot::Snapshot;

pub const ADMIN_RQ_REFUSED: &str = "attache_admin_rq_refused_total";

static SEC_FETCH_SITE: HeaderName = HeaderName::from_static("sec-fetch-site");

/// Why an admin request was refused (the `reason` label: fixed names, never
/// request data).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Refusal {
    /// `Host` (or the absolute-form authority) is not loopback, `localhost`, the
    /// admin's own address or an `admin.allowed_hosts` name.
    Host,
    /// No `Host` at all (HTTP/1.0) from a peer that is not loopback.
    MissingHost,
    /// A mutation carrying `Origin`.
    Origin,
    /// A mutation carrying `Sec-Fetch-Site: cross-site` or `same-site`.
    FetchSite,
    /// A mutation whose `Content-Type` a browser sends without a preflight.
    ContentType,
}

impl Refusal {
    pub const ALL: &'static [Refusal] = &[
        Refusal::Host,
        Refusal::MissingHost,
        Refusal::Origin,
        Refusal::FetchSite,
        Refusal::ContentType,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::Host => "host",
            Refusal::MissingHost => "missing_host",
            Refusal::Origin => "origin",
            Refusal::FetchSite => "fetch_site",
            Refusal::ContentType => "content_type",
        }
    }
}

/// The connection's two ends, put into each admin request's extensions by the
/// accept loop.
#[derive(Debug, Clone, Copy)]
pub struct Peers {
    pub remote: SocketAddr,
    pub local: SocketAddr,
}

/// Counters per reason and the warn-log rate limit; one per admin endpoint.
pub struct Guard {
    refused: Vec<IntCounter>,
    epoch: Instant,
    /// Milliseconds since `epoch` of the last warn line, and refusals since.
    last_warn_ms: AtomicU64,
    suppressed: AtomicU64,
}

/// At most one warn line per this interval; the next one says how many were not logged.
const WARN_EVERY: Duration = Duration::from_secs(10);

impl Guard {
    pub fn new(stats: &crate::stats::Stats) -> Guard {
        let c = stats.counter_vec(
            ADMIN_RQ_REFUSED,
            "Admin requests refused because a web page could have sent them, by reason",
            &["reason"],
        );
        Guard {
            refused: Refusal::ALL
                .iter()
                .map(|r| c.with_label_values(&[r.as_str()]))
                .collect(),
            epoch: Instant::now(),
            last_warn_ms: AtomicU64::new(0),
            suppressed: AtomicU64::new(0),
        }
    }

    /// Count and log (rate-limited) one refusal.
    pub fn record(&self, why: Refusal, peers: Option<Peers>, path: &str) {
        if let Some(c) = self.refused.get(why as usize) {
            c.inc();
        }
        let now = self.epoch.elapsed().as_millis() as u64 + WARN_EVERY.as_millis() as u64;
        let last = self.last_warn_ms.load(Ordering::Relaxed);
        let due = now.saturating_sub(last) >= WARN_EVERY.as_millis() as u64;
        if !due
            || self
                .last_warn_ms
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_err()
        {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let suppressed = self.suppressed.swap(0, Ordering::Relaxed);
        tracing::warn!(
            reason = why.as_str(),
            peer = %peers.map_or_else(|| "unknown".to_string(), |p| p.remote.to_string()),
            path,
            suppressed,
            "admin request refused: a web page could have sent it (see docs/admin.md)"
        );
    }
}

/// What the admin accept loop knows about a connection, in each request's extensions.
#[derive(Clone)]
pub struct Conn {
    pub peers: Peers,
    pub guard: std::sync::Arc<Guard>,
}

/// The guard at the top of every admin request: the rule it broke (counted and
/// logged), or None to serve it.
pub fn refuse<B>(req: &Request<B>, snap: &Snapshot) -> Option<Refusal> {
    let conn = req.extensions().get::<Conn>();
    let why = check(req, snap, conn.map(|c| c.peers)).err()?;
    if let Some(c) = conn {
        c.guard.record(why, Some(c.peers), req.uri().path());
    }
    Some(why)
}

/// Whether the request may be served: `Err` names the rule it broke.
pub fn check<B>(req: &Request<B>, snap: &Snapshot, peers: Option<Peers>) -> Result<(), Refusal> {
    if token_authorised(req.headers(), snap.admin_token.as_deref()) {
        return Ok(());
    }
    check_host(req, &snap.admin_allowed_hosts, peers)?;
    if req.method() == Method::POST {
        check_browser_signals(req.headers())?;
    }
    Ok(())
}

/// The request carries the configured admin token.
pub fn token_authorised(headers: &HeaderMap, token: Option<&str>) -> bool {
    let Some(t) = token else {
        return false;
    };
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|given| constant_time_eq(given.as_bytes(), t.as_bytes()))
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Every authority the request names (absolute-form target and `Host`) must be one
/// the admin answers to. Without any (HTTP/1.0), only a loopback peer is served:
/// browsers always send `Host`, so this is a script on the same host.
fn check_host<B>(
    req: &Request<B>,
    allowed: &[String],
    peers: Option<Peers>,
) -> Result<(), Refusal> {
    let local = peers.map(|p| p.local.ip());
    let mut seen = false;
    if let Some(a) = req.uri().authority() {
        seen = true;
        if !host_allowed(a.as_str(), allowed, local) {
            return Err(Refusal::Host);
        }
    }
    for v in req.headers().get_all(header::HOST) {
        seen = true;
        let ok = v.to_str().is_ok_and(|h| host_allowed(h, allowed, local));
        if !ok {
            return Err(Refusal::Host);
        }
    }
    if !seen && !peers.is_some_and(|p| p.remote.ip().is_loopback()) {
        return Err(Refusal::MissingHost);
    }
    Ok(())
}

/// `authority` (`host`, `host:port`, `[v6]:port`) names loopback, `localhost`, the
/// address the client connected to, or an allowed name (case-insensitive; the port
/// is not compared).
pub fn host_allowed(authority: &str, allowed: &[String], local: Option<IpAddr>) -> bool {
    let Some(host) = host_part(authority) else {
        return false;
    };
    if host.eq_ignore_ascii_case("localhost")
        || allowed.iter().any(|a| a.eq_ignore_ascii_case(host))
    {
        return true;
    }
    let literal = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    match literal.parse::<IpAddr>() {
        Ok(ip) => ip.is_loopback() || Some(ip) == local,
        Err(_) => false,
    }
}

/// A host name or bracketed IP literal without port (an `admin.allowed_hosts` entry).
pub fn is_plain_host(h: &str) -> bool {
    let chars = h
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b'[' | b']' | b':'));
    chars && host_part(h) == Some(h)
}

/// The host of `host[:port]` / `[v6][:port]`; None when the port is not digits or the
/// host is empty.
fn host_part(authority: &str) -> Option<&str> {
    let (host, port) = if authority.starts_with('[') {
        let end = authority.find(']')?;
        let rest = &authority[end + 1..];
        if !rest.is_empty() && !rest.starts_with(':') {
            return None;
        }
        (&authority[..=end], rest.strip_prefix(':'))
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        }
    };
    let port_ok = port.is_none_or(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
    (port_ok && !host.is_empty()).then_some(host)
}

/// A mutation must not carry what only a browser adds to a cross-origin request.
fn check_browser_signals(headers: &HeaderMap) -> Result<(), Refusal> {
    if headers.contains_key(header::ORIGIN) {
        return Err(Refusal::Origin);
    }
    for v in headers.get_all(&SEC_FETCH_SITE) {
        let site = v.as_bytes();
        if !(site.eq_ignore_ascii_case(b"same-origin") || site.eq_ignore_ascii_case(b"none")) {
            return Err(Refusal::FetchSite);
        }
    }
    for v in headers.get_all(header::CONTENT_TYPE) {
        if is_simple_content_type(v.as_bytes()) {
            return Err(Refusal::ContentType);
        }
    }
    Ok(())
}

/// The CORS-safelisted request content types (Fetch standard): a page may send them
/// cross-origin without a preflight. Compared on the media type only; a value that
/// is not text is treated as one (refused).
fn is_simple_content_type(v: &[u8]) -> bool {
    let Ok(s) = std::str::from_utf8(v) else {
        return true;
    };
    let essence = s.split(';').next().unwrap_or("").trim();
    [
        "application/x-www-form-urlencoded",
        "multipart/form-data",
        "text/plain",
    ]
    .iter()
    .any(|t| essence.eq_ignore_ascii_case(t))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_the_admin_answers_to() {
        let local: Option<IpAddr> = "10.1.2.3".parse().ok();
        let allowed = vec!["admin.internal".to_string()];
        for (host, ok) in [
            ("127.0.0.1", true),
            ("127.0.0.1:9901", true),
            ("127.8.9.10:1", true),
            ("[::1]:9901", true),
            ("[::1]", true),
            ("localhost", true),
            ("LocalHost:9901", true),
            ("10.1.2.3:9901", true),
            ("admin.internal", true),
            ("Admin.Internal:9901", true),
            ("evil.example", false),
            ("evil.example:9901", false),
            ("localhost.evil.example", false),
            ("127.0.0.1.evil.example", false),
            ("10.1.2.4", false),
            ("", false),
            (":9901", false),
            ("localhost:", false),
            ("localhost:x", false),
            ("[::1", false),
            ("[::1]x", false),
            ("[::1]evil.example", false),
            ("[::2]:1", false),
            ("0.0.0.0", false),
            ("user@localhost", false),
        ] {
            assert_eq!(host_allowed(host, &allowed, local), ok, "{host:?}");
        }
    }

    #[test]
    fn allowed_host_entries_are_plain_hosts() {
        for (h, ok) in [
            ("admin.internal", true),
            ("10.0.0.5", true),
            ("[fd00::5]", true),
            ("admin.internal:9901", false),
            ("fd00::5", false),
            ("http://admin", false),
            ("a b", false),
            ("", false),
        ] {
            assert_eq!(is_plain_host(h), ok, "{h:?}");
        }
    }

    #[test]
    fn simple_content_types_are_the_safelisted_ones() {
        for (ct, simple) in [
            ("text/plain", true),
            ("Text/Plain; charset=utf-8", true),
            ("application/x-www-form-urlencoded", true),
            ("multipart/form-data; boundary=x", true),
            ("  text/plain  ", true),
            ("application/json", false),
            ("text/html", false),
            ("application/octet-stream", false),
        ] {
            assert_eq!(is_simple_content_type(ct.as_bytes()), simple, "{ct}");
        }
        assert!(is_simple_content_type(b"text/plain\xff"));
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap_or(header::ACCEPT),
                http::HeaderValue::from_str(v).unwrap_or(http::HeaderValue::from_static("")),
            );
        }
        h
    }

    #[test]
    fn browser_signals_on_mutations() {
        for (pairs, want) in [
            (vec![], Ok(())),
            (vec![("content-type", "application/json")], Ok(())),
            (vec![("sec-fetch-site", "same-origin")], Ok(())),
            (vec![("sec-fetch-site", "none")], Ok(())),
            (vec![("origin", "null")], Err(Refusal::Origin)),
            (
                vec![("origin", "http://127.0.0.1:9901")],
                Err(Refusal::Origin),
            ),
            (
                vec![("sec-fetch-site", "cross-site")],
                Err(Refusal::FetchSite),
            ),
            (
                vec![("sec-fetch-site", "same-site")],
                Err(Refusal::FetchSite),
            ),
            (
                vec![("content-type", "text/plain")],
                Err(Refusal::ContentType),
            ),
        ] {
            assert_eq!(check_browser_signals(&headers(&pairs)), want, "{pairs:?}");
        }
    }
}
