//! `Cookie` / `Set-Cookie` parser target.

use attache_filters::cookie_audit::parse::{expires, is_attr, pairs, segments, set_cookie};

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
