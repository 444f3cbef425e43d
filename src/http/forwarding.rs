//! The headers a proxy adds, removes and rewrites on a forwarded message, in one
//! place (Envoy keeps these in `conn_manager_utility` for the same reason: they are
//! a policy, testable without a connection): hop-by-hop removal (RFC 9110 7.6.1),
//! `Host`, `x-forwarded-for`, `x-forwarded-proto`, `x-forwarded-client-cert`,
//! `x-request-id` and the trace context.

use std::sync::Arc;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

use crate::config::types::ForwardClientCert;
use crate::tls::PeerInfo;

pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// The hop-by-hop names (RFC 9110 7.6.1) removed from every forwarded message.
static HOP_BY_HOP: [&HeaderName; 9] = [
    &header::CONNECTION,
    &KEEP_ALIVE,
    &PROXY_CONNECTION,
    &header::TRANSFER_ENCODING,
    &header::UPGRADE,
    &header::TRAILER,
    &header::PROXY_AUTHENTICATE,
    &header::PROXY_AUTHORIZATION,
    &header::TE,
];
const TE_BIT: u16 = 1 << 8;

/// Which of [`HOP_BY_HOP`] a map holds, as a bit set, and whether it has `Host`,
/// from one scan of its names (no hashing: standard names compare as small
/// integers).
fn hop_by_hop_present(headers: &HeaderMap) -> (u16, bool) {
    let (mut mask, mut host) = (0, false);
    for name in headers.keys() {
        if let Some(i) = HOP_BY_HOP.iter().position(|h| *h == name) {
            mask |= 1 << i;
        }
        host |= name == header::HOST;
    }
    (mask, host)
}

/// Remove hop-by-hop headers (RFC 9110 7.6.1), including those `Connection` names.
/// One scan of the names first: most messages have one (`Connection`) or none, and
/// only the names present are looked up and removed. True when a `Connection`
/// header was there, so names it listed may have been removed.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) -> bool {
    let (mask, _) = hop_by_hop_present(headers);
    strip_present(headers, mask)
}

/// [`strip_hop_by_hop`] of the names in `mask`.
fn strip_present(headers: &mut HeaderMap, mask: u16) -> bool {
    if mask == 0 {
        return false;
    }
    // The names a `Connection` header lists go too. The value is cloned (a reference
    // count, no copy) so the map can be edited while its tokens are read; names
    // are looked up as `&str`, so nothing is allocated for them.
    if mask & 1 != 0 {
        let mut values = headers.get_all(header::CONNECTION).iter();
        match (values.next().cloned(), values.next().is_some()) {
            (Some(only), false) => remove_listed(headers, &only),
            (Some(_), true) => {
                let all: Vec<HeaderValue> = headers
                    .get_all(header::CONNECTION)
                    .iter()
                    .cloned()
                    .collect();
                for v in &all {
                    remove_listed(headers, v);
                }
            }
            (None, _) => {}
        }
    }
    // All but `TE` (the last), which is checked below.
    for (i, h) in HOP_BY_HOP[..8].iter().enumerate() {
        if mask & (1 << i) != 0 {
            headers.remove(*h);
        }
    }
    // `te: trailers` is the one TE value that may go on (gRPC needs it).
    if mask & TE_BIT != 0 {
        if let Some(te) = headers.get(header::TE) {
            if te.as_bytes() != b"trailers" {
                headers.remove(header::TE);
            }
        }
    }
    mask & 1 != 0
}

fn remove_listed(headers: &mut HeaderMap, connection: &HeaderValue) {
    use crate::http1::head::{is_plain_connection_option, tokens};
    if let Ok(list) = connection.to_str() {
        // The usual options name nothing else to remove, so skip their lookup.
        for name in tokens(list.as_bytes()).filter(|t| !is_plain_connection_option(t)) {
            if let Ok(name) = std::str::from_utf8(name) {
                headers.remove(name);
            }
        }
    }
}

/// Remove every header whose name has `_` (`headers_with_underscores: drop`):
/// CGI/WSGI origins map `_` to `-`, so `Transfer_Encoding` or `X_User` would become
/// a framing or identity header there. Returns how many values went.
pub fn drop_underscored(headers: &mut HeaderMap) -> u64 {
    let names: Vec<HeaderName> = headers
        .keys()
        .filter(|k| k.as_str().as_bytes().contains(&b'_'))
        .cloned()
        .collect();
    let mut dropped = 0;
    for name in names {
        if let http::header::Entry::Occupied(e) = headers.entry(name) {
            dropped += e.remove_entry_mult().1.count() as u64;
        }
    }
    dropped
}

/// The request's identity, stamped before routing so route matchers, filters, the
/// upstream and the log all see it: an `x-request-id` when the client sent none
/// and the listener generates them (`present` comes from the head scan), and the
/// trace context (joined or started; our span id goes upstream as the parent).
pub fn stamp_identity(
    headers: &mut HeaderMap,
    present: bool,
    generate: bool,
    tracer: Option<&Arc<crate::trace::Tracer>>,
    path_and_query: &str,
) -> Option<crate::trace::Active> {
    if !present && generate {
        headers.append(X_REQUEST_ID.clone(), request_id());
    }
    tracer.map(|t| t.start(headers, path_and_query))
}

/// Each byte value as its two lower-case hex digits.
static HEX_PAIRS: [[u8; 2]; 256] = {
    let digits = b"0123456789abcdef";
    let mut pairs = [[0u8; 2]; 256];
    let mut i = 0;
    while i < 256 {
        pairs[i] = [digits[i >> 4], digits[i & 0xf]];
        i += 1;
    }
    pairs
};

/// Where each of a UUID's 16 bytes goes in its text form (the dashes are at 8,
/// 13, 18 and 23).
const UUID_AT: [usize; 16] = [0, 2, 4, 6, 9, 11, 14, 16, 19, 21, 24, 26, 28, 30, 32, 34];

/// A random v4 UUID for `x-request-id`: two random words, each byte written as a
/// hex pair from a table into the text's fixed layout (no `fmt`, no per-digit
/// branches; the loop unrolls).
fn request_id() -> HeaderValue {
    let text = uuid_v4(fastrand::u64(..), fastrand::u64(..));
    HeaderValue::from_bytes(&text).unwrap_or_else(|_| HeaderValue::from_static("0"))
}

/// The v4 UUID made of the random words `a` and `b` (version and variant bits set).
fn uuid_v4(a: u64, b: u64) -> [u8; 36] {
    let a = (a & 0xffff_ffff_ffff_0fff) | 0x0000_0000_0000_4000;
    let b = (b & 0x3fff_ffff_ffff_ffff) | 0x8000_0000_0000_0000;
    let bytes = ((u128::from(a)) << 64 | u128::from(b)).to_be_bytes();
    let mut out = *b"00000000-0000-0000-0000-000000000000";
    for (byte, at) in bytes.iter().zip(UUID_AT) {
        out[at..at + 2].copy_from_slice(&HEX_PAIRS[usize::from(*byte)]);
    }
    out
}

/// Who sent the request, as the forwarding headers describe it.
pub struct Downstream<'a> {
    /// The peer's address as a header value (`x-forwarded-for`).
    pub remote_ip: &'a HeaderValue,
    pub tls: bool,
    /// The verified client certificate, on mTLS listeners.
    pub peer: Option<&'a PeerInfo>,
    pub xfcc: ForwardClientCert,
}

/// What the route decided about the upstream request's head.
pub struct Upstream<'a> {
    /// The request's one authority (the target phase), for a `Host` a filter removed.
    pub authority: &'a str,
    /// The route's `host_rewrite`.
    pub host_rewrite: Option<&'a HeaderValue>,
    /// The protocol of an upgrade this route tunnels (its handshake headers stay).
    pub upgrade: Option<&'a HeaderValue>,
}

/// Rewrite a request head (after the request filters) for the upstream: drop the
/// hop-by-hop headers, keep an upgrade's handshake, settle `Host`, and add
/// `x-forwarded-for`, `x-forwarded-proto` and the `x-forwarded-client-cert` policy.
pub fn request_to_upstream(headers: &mut HeaderMap, up: &Upstream<'_>, down: &Downstream<'_>) {
    // `Host` is the request's authority (set by the target phase), unless a filter
    // or `host_rewrite` changed it. Looked up only when a `Connection` header may
    // list it (and so remove it): most requests need no lookup at all.
    let (mask, has_host) = hop_by_hop_present(headers);
    let host_in_map = if mask & 1 != 0 && has_host {
        headers.get(header::HOST).cloned()
    } else {
        None
    };
    strip_present(headers, mask);
    if let Some(proto) = up.upgrade {
        headers.insert(header::UPGRADE, proto.clone());
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    }
    match (up.host_rewrite, host_in_map) {
        (Some(h), _) => {
            headers.insert(header::HOST, h.clone());
        }
        // Put back: `Connection` may have named it (and so removed it).
        (None, Some(h)) => {
            headers.insert(header::HOST, h);
        }
        (None, None) if has_host => {}
        // A filter removed it: an HTTP/1.1 request never goes without one.
        (None, None) => {
            if let Ok(v) = HeaderValue::from_str(up.authority) {
                headers.insert(header::HOST, v);
            }
        }
    }
    forwarded_for(headers, down);
}

/// `x-forwarded-for`, `x-forwarded-client-cert` and `x-forwarded-proto`.
fn forwarded_for(headers: &mut HeaderMap, down: &Downstream<'_>) {
    // Which forwarding headers the request already has, in one scan instead of a
    // lookup each.
    let (mut has_xff, mut has_xfcc) = (false, false);
    for k in headers.keys() {
        has_xff |= k == X_FORWARDED_FOR;
        has_xfcc |= k == crate::tls::XFCC;
    }
    if has_xff {
        append_xff(headers, down.remote_ip);
    } else {
        headers.append(X_FORWARDED_FOR.clone(), down.remote_ip.clone());
    }
    // Without a client certificate the policy only removes a client's header.
    if has_xfcc || down.peer.is_some() {
        crate::tls::apply_xfcc(headers, down.xfcc, down.peer);
    }
    headers.insert(
        X_FORWARDED_PROTO.clone(),
        HeaderValue::from_static(if down.tls { "https" } else { "http" }),
    );
}

fn append_xff(headers: &mut HeaderMap, ip: &HeaderValue) {
    match headers.get(&X_FORWARDED_FOR).and_then(|v| v.to_str().ok()) {
        Some(prev) if !prev.is_empty() => {
            let mut v = Vec::with_capacity(prev.len() + 2 + ip.len());
            v.extend_from_slice(prev.as_bytes());
            v.extend_from_slice(b", ");
            v.extend_from_slice(ip.as_bytes());
            if let Ok(v) = HeaderValue::from_bytes(&v) {
                headers.insert(X_FORWARDED_FOR.clone(), v);
            }
        }
        _ => {
            headers.insert(X_FORWARDED_FOR.clone(), ip.clone());
        }
    }
}

/// Rewrite an upstream response head for the client: drop the hop-by-hop headers;
/// a switched (`101`) tunnel keeps its `Upgrade: proto` handshake.
pub fn response_to_downstream(headers: &mut HeaderMap, switched: Option<HeaderValue>) {
    strip_hop_by_hop(headers);
    if let Some(proto) = switched {
        headers.insert(header::UPGRADE, proto);
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for (k, v) in pairs {
            m.append(*k, HeaderValue::from_static(v));
        }
        m
    }

    fn sorted(m: &HeaderMap) -> Vec<(String, String)> {
        let mut v: Vec<(String, String)> = m
            .iter()
            .map(|(k, v)| (k.to_string(), String::from_utf8_lossy(v.as_bytes()).into()))
            .collect();
        v.sort();
        v
    }

    fn plain(ip: &HeaderValue) -> Downstream<'_> {
        Downstream {
            remote_ip: ip,
            tls: false,
            peer: None,
            xfcc: ForwardClientCert::SanitizeSet,
        }
    }

    const NO_REWRITE: Upstream<'static> = Upstream {
        authority: "a.example",
        host_rewrite: None,
        upgrade: None,
    };

    #[test]
    fn strip_hop_by_hop_removes_only_hop_headers() {
        let mut m = map(&[("host", "a"), ("accept", "*/*")]);
        assert!(!strip_hop_by_hop(&mut m));
        assert_eq!(m.len(), 2);
        let mut m = map(&[
            ("connection", "keep-alive, X-Listed"),
            ("connection", "close"),
            ("x-listed", "1"),
            ("keep-alive", "timeout=5"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "websocket"),
            ("proxy-authorization", "Basic x"),
            ("te", "trailers"),
            ("content-type", "text/plain"),
        ]);
        assert!(strip_hop_by_hop(&mut m));
        let mut left: Vec<&str> = m.keys().map(HeaderName::as_str).collect();
        left.sort_unstable();
        assert_eq!(left, ["content-type", "te"]);
        let mut m = map(&[("te", "gzip"), ("trailer", "x"), ("date", "d")]);
        assert!(!strip_hop_by_hop(&mut m));
        let left: Vec<&str> = m.keys().map(HeaderName::as_str).collect();
        assert_eq!(left, ["date"]);
    }

    #[test]
    fn upstream_request_gets_forwarding_headers() {
        let ip = HeaderValue::from_static("192.0.2.7");
        let mut m = map(&[("host", "a.example"), ("x-forwarded-proto", "https")]);
        request_to_upstream(&mut m, &NO_REWRITE, &plain(&ip));
        assert_eq!(
            sorted(&m),
            [
                ("host".into(), "a.example".into()),
                ("x-forwarded-for".into(), "192.0.2.7".into()),
                ("x-forwarded-proto".into(), "http".into()),
            ]
        );
        // An incoming chain is extended; a client's XFCC is removed without mTLS.
        let mut m = map(&[
            ("host", "a.example"),
            ("x-forwarded-for", "198.51.100.1"),
            ("x-forwarded-client-cert", "By=spiffe://forged"),
        ]);
        let tls = Downstream {
            tls: true,
            ..plain(&ip)
        };
        request_to_upstream(&mut m, &NO_REWRITE, &tls);
        assert_eq!(m["x-forwarded-for"], "198.51.100.1, 192.0.2.7");
        assert_eq!(m["x-forwarded-proto"], "https");
        assert!(!m.contains_key("x-forwarded-client-cert"));
    }

    #[test]
    fn host_is_rewritten_restored_or_set() {
        let ip = HeaderValue::from_static("192.0.2.7");
        let rewrite = HeaderValue::from_static("api.internal");
        let up = Upstream {
            host_rewrite: Some(&rewrite),
            ..NO_REWRITE
        };
        let mut m = map(&[("host", "a.example")]);
        request_to_upstream(&mut m, &up, &plain(&ip));
        assert_eq!(m["host"], "api.internal");
        // `Connection: host` cannot take away the Host a filter set.
        let mut m = map(&[("host", "b.example"), ("connection", "host")]);
        request_to_upstream(&mut m, &NO_REWRITE, &plain(&ip));
        assert_eq!(m["host"], "b.example");
        // A filter removed it: the request's authority goes instead.
        let mut m = HeaderMap::new();
        request_to_upstream(&mut m, &NO_REWRITE, &plain(&ip));
        assert_eq!(m["host"], "a.example");
    }

    #[test]
    fn upgrade_handshake_survives_hop_by_hop_removal() {
        let ip = HeaderValue::from_static("192.0.2.7");
        let ws = HeaderValue::from_static("websocket");
        let up = Upstream {
            upgrade: Some(&ws),
            ..NO_REWRITE
        };
        let mut m = map(&[
            ("host", "a.example"),
            ("connection", "Upgrade, keep-alive"),
            ("upgrade", "websocket"),
            ("keep-alive", "5"),
        ]);
        request_to_upstream(&mut m, &up, &plain(&ip));
        assert_eq!(m["upgrade"], "websocket");
        assert_eq!(m["connection"], "upgrade");
        assert!(!m.contains_key("keep-alive"));
        let mut r = map(&[("connection", "upgrade"), ("upgrade", "h2c")]);
        response_to_downstream(&mut r, Some(ws.clone()));
        assert_eq!(r["upgrade"], "websocket");
        let mut r = map(&[("connection", "close"), ("content-length", "0")]);
        response_to_downstream(&mut r, None);
        assert_eq!(sorted(&r), [("content-length".into(), "0".into())]);
    }

    #[test]
    fn request_id_is_added_only_when_missing_and_enabled() {
        let mut m = HeaderMap::new();
        assert!(stamp_identity(&mut m, false, true, None, "/").is_none());
        let id = m[&X_REQUEST_ID].to_str().unwrap_or_default().to_string();
        assert_eq!(id.len(), 36);
        assert_eq!(&id[14..15], "4", "a version-4 UUID: {id}");
        assert!(
            matches!(&id[19..20], "8" | "9" | "a" | "b"),
            "RFC 4122 variant: {id}"
        );
        for (i, c) in id.char_indices() {
            let dash = matches!(i, 8 | 13 | 18 | 23);
            assert_eq!(c == '-', dash, "{id}");
            assert!(dash || matches!(c, '0'..='9' | 'a'..='f'), "{id}");
        }
        let mut m = map(&[("x-request-id", "mine")]);
        stamp_identity(&mut m, true, true, None, "/");
        assert_eq!(m.get_all(&X_REQUEST_ID).iter().count(), 1);
        let mut m = HeaderMap::new();
        stamp_identity(&mut m, false, false, None, "/");
        assert!(m.is_empty());
    }

    #[test]
    fn request_ids_are_v4_uuids_in_lower_case_hex() {
        let id = uuid_v4(0x0123_4567_89ab_cdef, 0xfedc_ba98_7654_3210);
        assert_eq!(&id, b"01234567-89ab-4def-bedc-ba9876543210");
        let id = uuid_v4(u64::MAX, 0);
        assert_eq!(&id, b"ffffffff-ffff-4fff-8000-000000000000");
    }

    #[test]
    fn underscored_names_are_dropped_and_counted() {
        let mut m = map(&[("x_user", "a"), ("x_user", "b"), ("x-ok", "1")]);
        assert_eq!(drop_underscored(&mut m), 2);
        assert_eq!(sorted(&m), [("x-ok".into(), "1".into())]);
    }
}
