//! Hand-written `Cookie` and `Set-Cookie` parsers over raw header bytes. They never
//! allocate, never fail and never panic: whatever a client or origin sends yields
//! some (possibly empty) sequence of pairs.

/// Space and horizontal tab, the optional whitespace around cookie pairs.
fn trim(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

fn unquote(s: &[u8]) -> &[u8] {
    match s {
        [b'"', inner @ .., b'"'] => inner,
        _ => s,
    }
}

fn split_eq(seg: &[u8]) -> Option<(&[u8], &[u8])> {
    let i = seg.iter().position(|b| *b == b'=')?;
    Some((trim(&seg[..i]), trim(&seg[i + 1..])))
}

/// One `name=value` from a `Cookie` header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pair<'a> {
    /// Empty for a segment without `=` (browsers treat the whole segment as the
    /// value of a nameless cookie, so it must never be logged as a name).
    pub name: &'a [u8],
    /// Unquoted value. Never log it.
    pub value: &'a [u8],
    /// The trimmed segment as sent, for rebuilding the header.
    pub raw: &'a [u8],
}

/// The pairs of one `Cookie` header value, skipping empty segments.
pub fn pairs(header: &[u8]) -> impl Iterator<Item = Pair<'_>> {
    header.split(|b| *b == b';').filter_map(|seg| {
        let raw = trim(seg);
        if raw.is_empty() {
            return None;
        }
        Some(match split_eq(raw) {
            Some((name, value)) => Pair {
                name,
                value: unquote(value),
                raw,
            },
            None => Pair {
                name: b"",
                value: raw,
                raw,
            },
        })
    })
}

/// The attributes of one `Set-Cookie` that policies look at. Where an attribute
/// repeats, the last one wins (as in browsers).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SetCookie<'a> {
    pub name: &'a [u8],
    pub secure: bool,
    pub http_only: bool,
    pub same_site: Option<&'a [u8]>,
    /// Parsed `Max-Age` in seconds (saturating); `None` if absent or not a number.
    pub max_age: Option<i64>,
    pub expires: Option<&'a [u8]>,
    /// `Domain` without a leading dot.
    pub domain: Option<&'a [u8]>,
}

/// Parse a `Set-Cookie` value. `None` when it has no `name=` (malformed for our
/// purposes: no policy can apply to it).
pub fn set_cookie(header: &[u8]) -> Option<SetCookie<'_>> {
    let mut segs = header.split(|b| *b == b';');
    let (name, _value) = split_eq(trim(segs.next()?))?;
    if name.is_empty() {
        return None;
    }
    let mut sc = SetCookie {
        name,
        ..SetCookie::default()
    };
    for seg in segs {
        let seg = trim(seg);
        let (key, val) = split_eq(seg).unwrap_or((seg, b""));
        if key.eq_ignore_ascii_case(b"secure") {
            sc.secure = true;
        } else if key.eq_ignore_ascii_case(b"httponly") {
            sc.http_only = true;
        } else if key.eq_ignore_ascii_case(b"samesite") {
            sc.same_site = Some(val);
        } else if key.eq_ignore_ascii_case(b"max-age") {
            sc.max_age = parse_max_age(val);
        } else if key.eq_ignore_ascii_case(b"expires") {
            sc.expires = Some(val);
        } else if key.eq_ignore_ascii_case(b"domain") {
            let d = val.strip_prefix(b".").unwrap_or(val);
            sc.domain = (!d.is_empty()).then_some(d);
        }
    }
    Some(sc)
}

fn parse_max_age(v: &[u8]) -> Option<i64> {
    let (neg, digits) = match v {
        [b'-', rest @ ..] => (true, rest),
        _ => (false, v),
    };
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let mut n: i64 = 0;
    for d in digits {
        n = n.saturating_mul(10).saturating_add(i64::from(d - b'0'));
    }
    Some(if neg { -n } else { n })
}

/// Whether `attr` is the attribute `name` (`Domain=...` vs `domain`).
pub fn is_attr(seg: &[u8], name: &[u8]) -> bool {
    let seg = trim(seg);
    let key = match seg.iter().position(|b| *b == b'=') {
        Some(i) => trim(&seg[..i]),
        None => seg,
    };
    key.eq_ignore_ascii_case(name)
}

/// Parse an `Expires` date: IMF-fixdate, RFC 850 and asctime via `httpdate`, plus
/// the common Netscape form with dashes (`Wed, 21-Oct-2026 07:28:00 GMT`).
pub fn expires(v: &[u8]) -> Option<std::time::SystemTime> {
    let s = std::str::from_utf8(v).ok()?;
    if let Ok(t) = httpdate::parse_http_date(s) {
        return Some(t);
    }
    if s.len() > 64 {
        return None;
    }
    let dashed = s.replacen('-', " ", 2);
    httpdate::parse_http_date(&dashed).ok()
}

/// Split a whole `Set-Cookie` value into trimmed segments (first is `name=value`).
pub fn segments(header: &[u8]) -> impl Iterator<Item = &[u8]> {
    header
        .split(|b| *b == b';')
        .map(trim)
        .filter(|s| !s.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(h: &[u8]) -> Vec<&[u8]> {
        pairs(h).map(|p| p.name).collect()
    }

    #[test]
    fn cookie_pairs_survive_odd_spacing_quotes_and_missing_equals() {
        assert_eq!(names(b"a=1; b=2"), [b"a".as_slice(), b"b"]);
        assert_eq!(names(b"  a = 1 ;;\tb=2;  ;"), [b"a".as_slice(), b"b"]);
        let p: Vec<_> = pairs(b"q=\"quoted; no\"").collect();
        // Quotes do not protect `;` in cookies: the pair ends at the semicolon.
        assert_eq!(p[0].value, b"\"quoted");
        let p: Vec<_> = pairs(b"q=\"v\"").collect();
        assert_eq!(p[0].value, b"v");
        let p: Vec<_> = pairs(b"flag; =x; a==b").collect();
        assert_eq!(p[0].name, b"");
        assert_eq!(p[0].value, b"flag");
        assert_eq!(p[1].name, b"");
        assert_eq!(p[2].name, b"a");
        assert_eq!(p[2].value, b"=b");
        assert_eq!(pairs(b"").count(), 0);
        assert_eq!(pairs(b";;; ").count(), 0);
        assert_eq!(pairs(b"\"").count(), 1);
        assert_eq!(pairs(b"\xff\x00=\x80").count(), 1);
    }

    #[test]
    fn set_cookie_attributes_are_case_insensitive_and_last_wins() {
        let sc = set_cookie(b"sid=abc; secure; HTTPONLY; SameSite=Lax; samesite=Strict; Max-Age=60; Domain=.Example.com; Path=/")
            .expect("parses");
        assert_eq!(sc.name, b"sid");
        assert!(sc.secure && sc.http_only);
        assert_eq!(sc.same_site, Some(b"Strict".as_slice()));
        assert_eq!(sc.max_age, Some(60));
        assert_eq!(sc.domain, Some(b"Example.com".as_slice()));
        assert!(set_cookie(b"novalue").is_none());
        assert!(set_cookie(b"=v; Secure").is_none());
        assert!(set_cookie(b"").is_none());
        assert_eq!(
            set_cookie(b"a=b; Max-Age=abc").and_then(|s| s.max_age),
            None
        );
        assert_eq!(
            set_cookie(b"a=b; Max-Age=-5").and_then(|s| s.max_age),
            Some(-5)
        );
        assert_eq!(
            set_cookie(b"a=b; Max-Age=99999999999999999999999").and_then(|s| s.max_age),
            Some(i64::MAX)
        );
    }

    #[test]
    fn expires_accepts_standard_and_netscape_dates() {
        assert!(expires(b"Wed, 21 Oct 2026 07:28:00 GMT").is_some());
        assert!(expires(b"Wed, 21-Oct-2026 07:28:00 GMT").is_some());
        assert!(expires(b"tomorrow").is_none());
        assert!(expires(b"\xff").is_none());
    }
}
