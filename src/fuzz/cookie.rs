//! `Cookie` / `Set-Cookie` parser target.

use std::sync::{Arc, OnceLock};

use attache_filters::api::{FactoryContext, HttpFilter, HttpFilterFactory, StreamCtx};
use attache_filters::cookie_audit::parse::{expires, is_attr, pairs, segments, set_cookie};
use attache_filters::cookie_audit::{Config, Factory};
use http::header::{HeaderValue, COOKIE, SET_COOKIE};

pub(super) const DICT: &[&[u8]] = &[
    b"; ",
    b";",
    b"=",
    b"\"",
    b" ",
    b"\t",
    b"Secure",
    b"HttpOnly",
    b"SameSite=Lax",
    b"Max-Age=",
    b"-9999999999999999999999",
    b"Expires=",
    b"Wed, 21-Oct-2026 07:28:00 GMT",
    b"Domain=.",
    b"Path=/",
    b"session=",
];

/// Whether `part` lies inside `whole` (the parsers return sub-slices, never copies).
fn within(part: &[u8], whole: &[u8]) -> bool {
    let (p, w) = (part.as_ptr() as usize, whole.as_ptr() as usize);
    part.is_empty() || (p >= w && p + part.len() <= w + whole.len())
}

fn trimmed(s: &[u8]) -> bool {
    !matches!(s.first(), Some(b' ' | b'\t')) && !matches!(s.last(), Some(b' ' | b'\t'))
}

pub(super) fn parse(data: &[u8]) {
    cookie_pairs(data);
    set_cookie_attributes(data);
    for seg in segments(data) {
        assert!(!seg.is_empty() && trimmed(seg) && !seg.contains(&b';'));
        assert!(within(seg, data));
        let _ = is_attr(seg, b"domain");
    }
    let _ = expires(data);
    enforced(data);
}

/// Pairs are trimmed, non-empty pieces between `;`; rebuilt with `; ` (as the
/// filter rebuilds a header it strips cookies from) they parse the same again.
fn cookie_pairs(data: &[u8]) {
    let all: Vec<_> = pairs(data).collect();
    assert!(all.len() <= data.iter().filter(|&&b| b == b';').count() + 1);
    for p in &all {
        assert!(!p.raw.is_empty() && trimmed(p.raw) && !p.raw.contains(&b';'));
        assert!(within(p.raw, data) && within(p.name, p.raw) && within(p.value, p.raw));
        assert!(trimmed(p.name) && !p.name.contains(&b'='));
    }
    let rebuilt = all
        .iter()
        .map(|p| p.raw)
        .collect::<Vec<_>>()
        .join(&b"; "[..]);
    let again: Vec<_> = pairs(&rebuilt).map(|p| (p.name, p.value, p.raw)).collect();
    let first: Vec<_> = all.iter().map(|p| (p.name, p.value, p.raw)).collect();
    assert_eq!(first, again, "a rebuilt Cookie header reads differently");
}

fn set_cookie_attributes(data: &[u8]) {
    let Some(sc) = set_cookie(data) else {
        return;
    };
    assert!(!sc.name.is_empty() && trimmed(sc.name) && !sc.name.contains(&b'='));
    assert!(!sc.name.contains(&b';') && within(sc.name, data));
    if let Some(d) = sc.domain {
        assert!(!d.is_empty() && within(d, data));
    }
    for v in [sc.same_site, sc.expires].into_iter().flatten() {
        assert!(within(v, data) && !v.contains(&b';'));
    }
}

/// An enforcing, repairing `cookie_audit` with a strict policy, a relaxed one and an
/// allowed name; built once.
fn filter() -> &'static Arc<dyn HttpFilter> {
    static FILTER: OnceLock<Arc<dyn HttpFilter>> = OnceLock::new();
    FILTER.get_or_init(|| {
        let cfg: Config = serde_json::from_str(
            r#"{"mode": "enforce", "unknown": "strip", "fix": true, "allowed": ["theme"],
                "cookies": [
                  {"name": "session", "same_site": "Strict", "max_lifetime": "1d",
                   "domain": "app.example.com"},
                  {"name": "pref", "secure": false, "http_only": false, "same_site": "any"}]}"#,
        )
        .unwrap_or_else(|e| panic!("fuzz policy: {e}"));
        let stats = Box::leak(Box::default());
        let services = Box::leak(Box::default());
        let cx = FactoryContext {
            stats,
            listener: "fuzz",
            tls: true,
            services,
        };
        Factory::build(cfg, &cx).unwrap_or_else(|e| panic!("fuzz policy: {e}"))
    })
}

const KNOWN: [&[u8]; 3] = [b"session", b"pref", b"theme"];

/// Enforcing: a `Cookie` header keeps only known cookies, in order; every
/// `Set-Cookie` left (one per line of the input) is one the policy accepts as it
/// is, so a second pass changes nothing.
fn enforced(data: &[u8]) {
    let f = filter();
    let mut cx = StreamCtx::default();
    if let Ok(v) = HeaderValue::from_bytes(data) {
        let (mut req, ()) = http::Request::new(()).into_parts();
        req.headers.insert(COOKIE, v);
        f.on_request(&mut req, &mut cx);
        if let Some(kept) = req.headers.get(COOKIE) {
            let names: Vec<_> = pairs(kept.as_bytes()).map(|p| p.name).collect();
            assert!(
                names.iter().all(|n| KNOWN.contains(n)),
                "unknown cookie kept"
            );
            let known: Vec<_> = pairs(data)
                .map(|p| p.name)
                .filter(|n| KNOWN.contains(n))
                .collect();
            assert_eq!(names, known, "known cookies lost or reordered");
        }
    }
    let (mut rsp, ()) = http::Response::new(()).into_parts();
    for line in data.split(|&b| b == b'\n') {
        if let Ok(v) = HeaderValue::from_bytes(line) {
            rsp.headers.append(SET_COOKIE, v);
        }
    }
    f.on_response(&mut rsp, &mut cx);
    let once = rsp.headers.clone();
    f.on_response(&mut rsp, &mut cx);
    assert_eq!(
        rsp.headers, once,
        "a repaired Set-Cookie still breaks the policy"
    );
}
