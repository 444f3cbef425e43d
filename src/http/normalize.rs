//! Request path normalization before routing: percent-encoded unreserved characters
//! decoded (so `%2e%2e` is `..`), dot-segments resolved (RFC 3986 5.2.4), `//` merged,
//! and `%2F` / `%5C` rejected or kept encoded. The result is what goes upstream, so a
//! route on `/public/` can never be used to reach `/admin`.

use std::borrow::Cow;

#[derive(Debug, PartialEq, Eq)]
pub enum Rejected {
    /// `%2F` or `%5C` with `escaped_slashes: reject`.
    EscapedSlash,
    /// Not an origin-form path, or a malformed percent escape.
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

/// Normalize `path` (no query). Borrowed when nothing changes: the common case
/// allocates nothing.
pub fn normalize(
    path: &str,
    merge_slashes: bool,
    reject_escaped_slashes: bool,
) -> Result<Cow<'_, str>, Rejected> {
    let bytes = path.as_bytes();
    if bytes.first() != Some(&b'/') {
        return Err(Rejected::Malformed);
    }
    let needs_work = bytes.contains(&b'%')
        || path.contains("/.")
        || (merge_slashes && path.contains("//"))
        || bytes.contains(&b'\\');
    if !needs_work {
        return Ok(Cow::Borrowed(path));
    }

    // 1. Decode unreserved escapes; keep (upper-cased) reserved ones; check slashes.
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'%' {
            let (Some(h), Some(l)) = (
                bytes.get(i + 1).and_then(|b| hex(*b)),
                bytes.get(i + 2).and_then(|b| hex(*b)),
            ) else {
                return Err(Rejected::Malformed);
            };
            let v = h * 16 + l;
            if v == b'/' || v == b'\\' {
                if reject_escaped_slashes {
                    return Err(Rejected::EscapedSlash);
                }
                decoded.extend_from_slice(if v == b'/' { b"%2F" } else { b"%5C" });
            } else if unreserved(v) {
                decoded.push(v);
            } else {
                decoded.push(b'%');
                decoded.push(bytes[i + 1].to_ascii_uppercase());
                decoded.push(bytes[i + 2].to_ascii_uppercase());
            }
            i += 3;
        } else {
            decoded.push(b);
            i += 1;
        }
    }

    // 2. Segments: resolve `.` and `..`, merge empty segments when asked.
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
            b"" if merge_slashes || n == last => {}
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

    fn n(p: &str) -> Result<String, Rejected> {
        normalize(p, true, true).map(|c| c.into_owned())
    }

    #[test]
    fn leaves_clean_paths_borrowed() {
        assert!(matches!(
            normalize("/api/v1/users", true, true),
            Ok(Cow::Borrowed(_))
        ));
    }

    #[test]
    fn resolves_dot_segments_so_prefixes_cannot_be_escaped() {
        assert_eq!(n("/public/../admin").as_deref(), Ok("/admin"));
        assert_eq!(n("/public/%2e%2e/admin").as_deref(), Ok("/admin"));
        assert_eq!(n("/public/%2E%2E/admin").as_deref(), Ok("/admin"));
        assert_eq!(n("/a/./b/").as_deref(), Ok("/a/b/"));
        assert_eq!(n("/../../etc").as_deref(), Ok("/etc"));
        assert_eq!(n("/a/b/..").as_deref(), Ok("/a/"));
    }

    #[test]
    fn merges_slashes_when_asked() {
        assert_eq!(n("//a///b").as_deref(), Ok("/a/b"));
        assert_eq!(
            normalize("//a//b", false, true)
                .map(|c| c.into_owned())
                .as_deref(),
            Ok("//a//b")
        );
    }

    #[test]
    fn escaped_slashes_rejected_or_kept() {
        assert_eq!(n("/a%2Fb"), Err(Rejected::EscapedSlash));
        assert_eq!(n("/a%5cb"), Err(Rejected::EscapedSlash));
        assert_eq!(
            normalize("/a%2fb/../c", true, false)
                .map(|c| c.into_owned())
                .as_deref(),
            Ok("/c")
        );
        assert_eq!(
            normalize("/a%2fb", true, false)
                .map(|c| c.into_owned())
                .as_deref(),
            Ok("/a%2Fb")
        );
    }

    #[test]
    fn decodes_unreserved_and_keeps_reserved_escapes() {
        assert_eq!(n("/%7Euser/%41").as_deref(), Ok("/~user/A"));
        assert_eq!(n("/a%20b").as_deref(), Ok("/a%20b"));
        assert_eq!(n("/a%3fb").as_deref(), Ok("/a%3Fb"));
    }

    #[test]
    fn malformed_escapes_are_rejected() {
        assert_eq!(n("/a%zz"), Err(Rejected::Malformed));
        assert_eq!(n("/a%2"), Err(Rejected::Malformed));
        assert_eq!(n("a/b"), Err(Rejected::Malformed));
        assert_eq!(n("*"), Err(Rejected::Malformed));
    }
}
