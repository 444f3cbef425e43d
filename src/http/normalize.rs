//! Request path normalization before routing: percent-encoded unreserved characters
//! decoded (so `%2e%2e` is `..`), dot-segments resolved (RFC 3986 5.2.4), `//` merged,
//! and what common origins read differently from RFC 3986 rejected (or, where a
//! [`Rules`] key says so, normalized): backslashes, `%2F` / `%5C`, dot segments
//! carrying parameters or escapes (`..;x`, `.;`, `..%5C`), double encoding (`%252e`),
//! `%00` and overlong UTF-8. The result is what goes upstream, so a route on
//! `/public/` can never be used to reach `/admin`.

use std::borrow::Cow;

/// How paths are normalized: the listener's `http` keys, compiled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rules {
    /// `merge_slashes`: `//` becomes `/`.
    pub merge_slashes: bool,
    /// `escaped_slashes: reject`: `%2F` and `%5C` are refused (else kept encoded).
    pub reject_escaped_slashes: bool,
    /// `path_with_backslash: normalize`: a raw `\` becomes `/` (else refused).
    pub backslash_to_slash: bool,
    /// `path_with_double_encoding: reject`: `%25` followed by two hex digits is
    /// refused (else kept as it came).
    pub reject_double_encoding: bool,
}

impl Default for Rules {
    /// The safe defaults.
    fn default() -> Rules {
        Rules {
            merge_slashes: true,
            reject_escaped_slashes: true,
            backslash_to_slash: false,
            reject_double_encoding: true,
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
pub enum Rejected {
    /// `%2F` with `escaped_slashes: reject`.
    EscapedSlash,
    /// A raw `\` with `path_with_backslash: reject`, or `%5C` with
    /// `escaped_slashes: reject`.
    Backslash,
    /// `%25` followed by two hex digits with `path_with_double_encoding: reject`.
    DoubleEncoded,
    /// A segment of dots with something after them (`..;x`, `.;`, `..%5C`, `..%20`,
    /// `...`), or only a parameter (`;x`): origins (Tomcat, IIS, Windows file
    /// systems) read it as `.`, `..` or an empty segment.
    DotSegment,
    /// Not an origin-form path, a malformed percent escape, `%00`, or an overlong
    /// UTF-8 sequence.
    Malformed,
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

fn unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// The byte a `%XX` escape at `bytes[i]` stands for.
fn escape_at(bytes: &[u8], i: usize) -> Option<u8> {
    if bytes.get(i) != Some(&b'%') {
        return None;
    }
    let h = bytes.get(i + 1).and_then(|b| hex(*b))?;
    let l = bytes.get(i + 2).and_then(|b| hex(*b))?;
    Some(h * 16 + l)
}

/// An escaped byte that can only start an overlong (non-shortest) UTF-8 encoding,
/// which old decoders turn into `.` or `/` (`%C0%AE`): `C0`, `C1`, and `E0` / `F0`
/// followed by a continuation byte below the shortest form's range.
fn overlong(v: u8, next: Option<u8>) -> bool {
    match v {
        0xC0 | 0xC1 => true,
        0xE0 => next.is_some_and(|n| n < 0xA0),
        0xF0 => next.is_some_and(|n| n < 0x90),
        _ => false,
    }
}

/// A segment that is not `.`, `..` or a name, but that origins may read as `.`,
/// `..` or an empty segment: dots followed by a parameter (`..;x`) or by an escape
/// attache keeps (`..%5C`, `..%2F`, `..%3B`, `..%20`), three or more dots, or only
/// a parameter before another segment (`/;x/`, which Tomcat reads as `//`; as the
/// last segment, `/app/;jsessionid=1`, it is the directory, as routed).
fn dot_like(seg: &[u8], last: bool) -> bool {
    if seg == b"." || seg == b".." {
        return false;
    }
    let stem_len = seg
        .iter()
        .position(|b| matches!(b, b';' | b'%'))
        .unwrap_or(seg.len());
    let (stem, rest) = seg.split_at(stem_len);
    if !stem.iter().all(|b| *b == b'.') {
        return false;
    }
    !stem.is_empty() || (!last && rest.first() == Some(&b';'))
}

/// Nothing to decode, resolve, merge or refuse: no `%`, no `\`, and no segment
/// that starts with `.` or `;` (or is empty, when merging). One pass.
fn is_plain(bytes: &[u8], merge_slashes: bool) -> bool {
    let mut prev = 0u8;
    for &b in bytes {
        match b {
            b'%' | b'\\' => return false,
            b'.' | b';' if prev == b'/' => return false,
            b'/' if prev == b'/' && merge_slashes => return false,
            _ => {}
        }
        prev = b;
    }
    true
}

/// Normalize `path` (no query). Borrowed when nothing changes: the common case
/// allocates nothing.
pub fn normalize<'a>(path: &'a str, rules: &Rules) -> Result<Cow<'a, str>, Rejected> {
    let bytes = path.as_bytes();
    if bytes.first() != Some(&b'/') {
        return Err(Rejected::Malformed);
    }
    if is_plain(bytes, rules.merge_slashes) {
        return Ok(Cow::Borrowed(path));
    }

    // 1. Decode unreserved escapes; keep (upper-cased) reserved ones; check slashes,
    //    backslashes, double encoding, NUL and overlong UTF-8.
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'\\' {
            if !rules.backslash_to_slash {
                return Err(Rejected::Backslash);
            }
            decoded.push(b'/');
            i += 1;
            continue;
        }
        if b != b'%' {
            decoded.push(b);
            i += 1;
            continue;
        }
        let Some(v) = escape_at(bytes, i) else {
            return Err(Rejected::Malformed);
        };
        match v {
            0 => return Err(Rejected::Malformed),
            b'/' if rules.reject_escaped_slashes => return Err(Rejected::EscapedSlash),
            b'\\' if rules.reject_escaped_slashes => return Err(Rejected::Backslash),
            v if overlong(v, escape_at(bytes, i + 3)) => return Err(Rejected::Malformed),
            v if unreserved(v) => decoded.push(v),
            _ => {
                decoded.push(b'%');
                decoded.push(bytes[i + 1].to_ascii_uppercase());
                decoded.push(bytes[i + 2].to_ascii_uppercase());
            }
        }
        i += 3;
    }
    // `%25` then two hex digits, as sent (`%252e`) or once decoded (`%25%32%65`): an
    // origin that decodes twice reads another byte there.
    if rules.reject_double_encoding
        && decoded
            .windows(5)
            .any(|w| w.starts_with(b"%25") && hex(w[3]).is_some() && hex(w[4]).is_some())
    {
        return Err(Rejected::DoubleEncoded);
    }

    // 2. Segments: refuse dot-like ones, resolve `.` and `..`, merge empty segments
    //    when asked.
    let trailing = decoded.ends_with(b"/") || decoded.ends_with(b"/.") || decoded.ends_with(b"/..");
    let mut out: Vec<&[u8]> = Vec::new();
    let segs: Vec<&[u8]> = decoded.split(|b| *b == b'/').skip(1).collect();
    let last = segs.len().saturating_sub(1);
    for (n, seg) in segs.iter().enumerate() {
        match *seg {
            b"." => {}
            b".." => {
                out.pop();
            }
            b"" if rules.merge_slashes || n == last => {}
            s if dot_like(s, n == last) => return Err(Rejected::DotSegment),
            s => out.push(s),
        }
    }
    let mut result = Vec::with_capacity(decoded.len());
    for s in &out {
        result.push(b'/');
        result.extend_from_slice(s);
    }
    if trailing || result.is_empty() {
        result.push(b'/');
    }
    match String::from_utf8(result) {
        Ok(s) => Ok(Cow::Owned(s)),
        Err(_) => Err(Rejected::Malformed),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(p: &str, rules: Rules) -> Result<String, Rejected> {
        normalize(p, &rules).map(|c| c.into_owned())
    }

    fn n(p: &str) -> Result<String, Rejected> {
        with(p, Rules::default())
    }

    #[test]
    fn leaves_clean_paths_borrowed() {
        assert!(matches!(
            normalize("/api/v1/users;v=1", &Rules::default()),
            Ok(Cow::Borrowed(_))
        ));
    }

    #[test]
    fn resolves_dot_segments_so_prefixes_cannot_be_escaped() {
        assert_eq!(n("/public/../admin").as_deref(), Ok("/admin"));
        assert_eq!(n("/public/%2e%2e/admin").as_deref(), Ok("/admin"));
        assert_eq!(n("/public/%2E%2E/admin").as_deref(), Ok("/admin"));
        assert_eq!(n("/public/%2E./admin").as_deref(), Ok("/admin"));
        assert_eq!(n("/public/.%2e/admin").as_deref(), Ok("/admin"));
        assert_eq!(n("/a/./b/").as_deref(), Ok("/a/b/"));
        assert_eq!(n("/../../etc").as_deref(), Ok("/etc"));
        assert_eq!(n("/a/b/..").as_deref(), Ok("/a/"));
        // Dots inside a name are a name.
        assert_eq!(n("/.well-known/a..b").as_deref(), Ok("/.well-known/a..b"));
    }

    #[test]
    fn merges_slashes_when_asked() {
        assert_eq!(n("//a///b").as_deref(), Ok("/a/b"));
        let keep = Rules {
            merge_slashes: false,
            ..Rules::default()
        };
        assert_eq!(with("//a//b", keep).as_deref(), Ok("//a//b"));
    }

    #[test]
    fn escaped_slashes_rejected_or_kept() {
        let keep = Rules {
            reject_escaped_slashes: false,
            ..Rules::default()
        };
        assert_eq!(n("/a%2Fb"), Err(Rejected::EscapedSlash));
        assert_eq!(n("/a%5cb"), Err(Rejected::Backslash));
        assert_eq!(with("/a%2fb/../c", keep).as_deref(), Ok("/c"));
        assert_eq!(with("/a%2fb", keep).as_deref(), Ok("/a%2Fb"));
        assert_eq!(with("/a%5cb", keep).as_deref(), Ok("/a%5Cb"));
        // Kept encoded, an escaped separator still cannot follow dots.
        assert_eq!(with("/a/..%5cadmin", keep), Err(Rejected::DotSegment));
        assert_eq!(with("/a/..%2Fadmin", keep), Err(Rejected::DotSegment));
    }

    #[test]
    fn backslashes_rejected_or_turned_into_slashes() {
        let normalize_bs = Rules {
            backslash_to_slash: true,
            ..Rules::default()
        };
        for p in ["/a\\b", "/public/..\\admin", "/\\admin", "/a/b\\"] {
            assert_eq!(n(p), Err(Rejected::Backslash), "{p}");
        }
        assert_eq!(
            with("/public/..\\admin", normalize_bs).as_deref(),
            Ok("/admin")
        );
        assert_eq!(with("/a\\\\b", normalize_bs).as_deref(), Ok("/a/b"));
        assert_eq!(
            with("/public\\%2e%2e\\admin", normalize_bs).as_deref(),
            Ok("/admin")
        );
        // `%5C` is an escaped slash, whatever `path_with_backslash` says.
        assert_eq!(with("/a%5Cb", normalize_bs), Err(Rejected::Backslash));
    }

    #[test]
    fn dot_segments_with_parameters_or_escapes_are_rejected() {
        for p in [
            "/public/..;/admin",
            "/public/..;x=1/admin",
            "/public/.;/admin",
            "/public/%2e%2e;/admin",
            "/public/%2E.;jsessionid=1/admin",
            "/public/..%3b/admin",
            "/public/..%20/admin",
            "/public/.../admin",
            "/public/..../admin",
            "/public/..;",
            "/;/admin",
            "/;x=1/admin",
            "/public/;/../admin",
        ] {
            assert_eq!(n(p), Err(Rejected::DotSegment), "{p}");
        }
        // Parameters on other segments stay, and escapes may start a name.
        assert_eq!(n("/a;v=1/./b").as_deref(), Ok("/a;v=1/b"));
        assert_eq!(n("/%20a/b").as_deref(), Ok("/%20a/b"));
        assert_eq!(n("/app/;jsessionid=1").as_deref(), Ok("/app/;jsessionid=1"));
    }

    #[test]
    fn double_encoding_rejected_or_kept() {
        let keep = Rules {
            reject_double_encoding: false,
            ..Rules::default()
        };
        // `%25%32%65` decodes (unreserved escapes) to `%252e` too.
        for p in ["/a/%252e%252e/b", "/%252F", "/a%25%32%65", "/%2541"] {
            assert_eq!(n(p), Err(Rejected::DoubleEncoded), "{p}");
        }
        assert_eq!(
            with("/a/%252e%252e/b", keep).as_deref(),
            Ok("/a/%252e%252e/b")
        );
        // A percent sign that encodes nothing after it is fine.
        assert_eq!(n("/100%25").as_deref(), Ok("/100%25"));
        assert_eq!(n("/100%25off").as_deref(), Ok("/100%25off"));
    }

    #[test]
    fn decodes_unreserved_and_keeps_reserved_escapes() {
        assert_eq!(n("/%7Euser/%41").as_deref(), Ok("/~user/A"));
        assert_eq!(n("/a%20b").as_deref(), Ok("/a%20b"));
        assert_eq!(n("/a%3fb").as_deref(), Ok("/a%3Fb"));
        assert_eq!(n("/caf%C3%A9").as_deref(), Ok("/caf%C3%A9"));
    }

    #[test]
    fn malformed_escapes_nul_and_overlong_utf8_are_rejected() {
        for p in [
            "/a%zz",
            "/a%2",
            "a/b",
            "*",
            "/a%00b",
            "/%c0%ae%c0%ae/x",
            "/%C1%9C",
            "/%e0%80%ae",
            "/%f0%80%80%ae",
        ] {
            assert_eq!(n(p), Err(Rejected::Malformed), "{p}");
        }
    }
}
