//! Message heads (RFC 9112 sections 2-5), for both roles: where a parsed head's
//! fields are, how they become a `HeaderMap` ([`into_map`]), the field-value
//! grammar both directions read (`Content-Length`, comma-separated lists), and
//! the field lines both encoders write.

use bytes::Bytes;
use http::header::{HeaderMap, HeaderName, HeaderValue};

/// Offsets in `buf` of each parsed header's name and value (`[name start, name
/// end, value start, value end]`), so the head can be frozen and its pieces
/// shared instead of copied. `buf` must be under 4 GiB (heads are bounded far
/// below) and hold the headers.
pub fn header_spans(buf: &[u8], headers: &[httparse::Header<'_>], spans: &mut Vec<[u32; 4]>) {
    let base = buf.as_ptr() as usize;
    let off = |p: *const u8| (p as usize).wrapping_sub(base) as u32;
    spans.clear();
    spans.extend(headers.iter().map(|h| {
        let (name, value) = (off(h.name.as_ptr()), off(h.value.as_ptr()));
        [
            name,
            name + h.name.len() as u32,
            value,
            value + h.value.len() as u32,
        ]
    }));
}

/// A header field `http` refuses to carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Invalid {
    Name,
    Value,
}

/// The header fields of a head (`spans` into `raw`, from [`header_spans`]) into
/// `headers`: names parsed, values slices of `raw` (no copy). `each` sees every
/// field first (the role's framing and connection rules: see
/// [`super::framing::Fields`]) and says whether it goes into the map.
///
/// The values share `raw`'s allocation for as long as they live: a role whose
/// header values may outlive the exchange passes a `raw` of its own rather than
/// a view into its connection's read buffer (see `upstream::h1`).
#[inline]
pub fn into_map<E: From<Invalid>>(
    raw: &Bytes,
    spans: &[[u32; 4]],
    headers: &mut HeaderMap,
    mut each: impl FnMut(&HeaderName, &[u8]) -> Result<bool, E>,
) -> Result<(), E> {
    for &[ns, ne, vs, ve] in spans {
        let (ns, ne, vs, ve) = (ns as usize, ne as usize, vs as usize, ve as usize);
        let name = field_name(&raw[ns..ne])?;
        if !each(&name, &raw[vs..ve])? {
            continue;
        }
        let value =
            HeaderValue::from_maybe_shared(raw.slice(vs..ve)).map_err(|_| Invalid::Value)?;
        headers.append(name, value);
    }
    Ok(())
}

/// A field name as a `HeaderName`. The names most heads carry are told apart by
/// their length and first letter and checked with a word-wise case-insensitive
/// compare ([`eq_folded`]); `HeaderName::from_bytes` (lower-casing byte by byte
/// into a buffer, then a search of every standard name) takes the rest. Same
/// result either way: a name equal to a standard one in any case is that name.
#[inline]
pub fn field_name(raw: &[u8]) -> Result<HeaderName, Invalid> {
    use http::header as h;
    let Some(&first) = raw.first() else {
        return Err(Invalid::Name);
    };
    let (lower, name): (&[u8], HeaderName) = match (raw.len(), first | 0x20) {
        (4, b'h') => (b"host", h::HOST),
        (4, b'd') => (b"date", h::DATE),
        (4, b'e') => (b"etag", h::ETAG),
        (6, b'a') => (b"accept", h::ACCEPT),
        (6, b'c') => (b"cookie", h::COOKIE),
        (6, b's') => (b"server", h::SERVER),
        (10, b'c') => (b"connection", h::CONNECTION),
        (10, b'u') => (b"user-agent", h::USER_AGENT),
        (10, b's') => (b"set-cookie", h::SET_COOKIE),
        (12, b'c') => (b"content-type", h::CONTENT_TYPE),
        (13, b'c') => (b"cache-control", h::CACHE_CONTROL),
        (13, b'a') => (b"authorization", h::AUTHORIZATION),
        (13, b'l') => (b"last-modified", h::LAST_MODIFIED),
        (14, b'c') => (b"content-length", h::CONTENT_LENGTH),
        (15, b'a') => (b"accept-encoding", h::ACCEPT_ENCODING),
        (16, b'c') => (b"content-encoding", h::CONTENT_ENCODING),
        (17, b't') => (b"transfer-encoding", h::TRANSFER_ENCODING),
        _ => return HeaderName::from_bytes(raw).map_err(|_| Invalid::Name),
    };
    if eq_folded(raw, lower) {
        Ok(name)
    } else {
        HeaderName::from_bytes(raw).map_err(|_| Invalid::Name)
    }
}

/// `raw.eq_ignore_ascii_case(lower)` for a `lower` of lower-case letters, digits
/// and `-`, at least 4 bytes and as long as `raw`: eight (or four) bytes at a
/// time, the last word overlapping the one before. Where `lower` has a letter
/// (bit 0x40 set: 0x61-0x7a; `-` and digits have it clear) the case bit 0x20 of
/// `raw` is set before comparing, so only that letter in either case matches;
/// elsewhere the bytes must be equal.
fn eq_folded(raw: &[u8], lower: &[u8]) -> bool {
    fn word(s: &[u8], at: usize) -> u64 {
        let mut w = [0u8; 8];
        w.copy_from_slice(&s[at..at + 8]);
        u64::from_le_bytes(w)
    }
    fn half(s: &[u8], at: usize) -> u32 {
        let mut w = [0u8; 4];
        w.copy_from_slice(&s[at..at + 4]);
        u32::from_le_bytes(w)
    }
    let n = raw.len();
    if n != lower.len() || n < 4 {
        return raw.eq_ignore_ascii_case(lower);
    }
    if n < 8 {
        let same = |at| {
            let l = half(lower, at);
            half(raw, at) | ((l & 0x4040_4040) >> 1) == l
        };
        return same(0) && same(n - 4);
    }
    let same = |at| {
        let l = word(lower, at);
        word(raw, at) | ((l & 0x4040_4040_4040_4040) >> 1) == l
    };
    let mut at = 0;
    while at + 8 < n {
        if !same(at) {
            return false;
        }
        at += 8;
    }
    same(n - 8)
}

/// Header maps of finished heads, per worker, emptied: a new head's map is
/// taken from here, so a connection whose requests follow each other does not
/// allocate (and free) a map's two tables per request and per response. Maps
/// that grew past [`MAP_KEEP`] fields go back to the allocator.
mod maps {
    use http::HeaderMap;

    use crate::spare::{keep, take, List};

    thread_local! {
        static MAPS: List<HeaderMap> = const { List::new(Vec::new()) };
    }

    /// The most fields a kept map has room for.
    pub(super) const MAP_KEEP: usize = 48;

    pub(super) fn take_map() -> Option<HeaderMap> {
        take(&MAPS)
    }

    pub(super) fn keep_map(map: HeaderMap) {
        keep(&MAPS, map);
    }

    #[cfg(test)]
    pub(super) fn kept() -> usize {
        crate::spare::kept(&MAPS)
    }
}

/// An empty header map with room for `fields`, a spare one when this worker has
/// one (see [`recycle`]).
pub fn new_map(fields: usize) -> HeaderMap {
    let mut map = maps::take_map().unwrap_or_default();
    map.reserve(fields);
    map
}

/// A head's map once its request or response is done with it (written out):
/// emptied (no field of it stays) and kept for the next head on this worker.
pub fn recycle(mut map: HeaderMap) {
    if map.capacity() <= maps::MAP_KEEP {
        map.clear();
        maps::keep_map(map);
    }
}

/// A `Content-Length` value (or one element of a list of them): digits only, no
/// sign or spaces, at most 19 of them so it fits in a u64.
pub fn parse_length(v: &[u8]) -> Option<u64> {
    if v.is_empty() || v.len() > 19 {
        return None;
    }
    v.iter().try_fold(0u64, |n, &b| {
        b.is_ascii_digit().then(|| n * 10 + u64::from(b - b'0'))
    })
}

/// Whether a comma-separated header (`Connection`, ...) lists `token`, in any case.
pub fn has_token(headers: &HeaderMap, name: HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .any(|v| tokens(v.as_bytes()).any(|t| t.eq_ignore_ascii_case(token.as_bytes())))
}

/// The elements of a comma-separated header value, trimmed (empty ones included).
pub fn tokens(value: &[u8]) -> impl DoubleEndedIterator<Item = &[u8]> {
    value.split(|&b| b == b',').map(<[u8]>::trim_ascii)
}

/// A `Connection` option that names no other header to remove: empty, `close`, or
/// `keep-alive` / `upgrade` (those headers are hop-by-hop anyway).
pub fn is_plain_connection_option(token: &[u8]) -> bool {
    token.is_empty()
        || [&b"close"[..], b"keep-alive", b"upgrade"]
            .iter()
            .any(|o| token.eq_ignore_ascii_case(o))
}

/// Append one field line, `name: value\r\n`.
pub fn put_field(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_name_agrees_with_header_name() {
        let names: &[&[u8]] = &[
            b"host",
            b"Host",
            b"HOST",
            b"date",
            b"Date",
            b"etag",
            b"ETag",
            b"accept",
            b"Cookie",
            b"server",
            b"Server",
            b"connection",
            b"Connection",
            b"User-Agent",
            b"set-cookie",
            b"Content-Type",
            b"cache-control",
            b"Authorization",
            b"Last-Modified",
            b"Content-Length",
            b"CONTENT-LENGTH",
            b"accept-encoding",
            b"Content-Encoding",
            b"Transfer-Encoding",
            b"x-request-id",
            b"X-Custom",
            b"vary",
            b"Upgrade",
            b"te",
            b"hosT",
            b"hozt",
            b"dat_",
            b"hos\x80",
            b"h st",
            b"content_length",
            b"Content-Lengtz",
            b"transfer-encodin_",
            b"\xc8ost",
            b"h\x00st",
            b"content-length ",
            b":authority",
            b"",
        ];
        for raw in names {
            let ours = field_name(raw).ok();
            let theirs = HeaderName::from_bytes(raw).ok();
            assert_eq!(ours, theirs, "{:?}", String::from_utf8_lossy(raw));
        }
        // Every byte value in every position of a fast-path name: only the
        // letter itself in either case matches.
        for lower in [
            &b"content-length"[..],
            b"transfer-encoding",
            b"host",
            b"accept",
        ] {
            for at in 0..lower.len() {
                for b in 0..=255u8 {
                    let mut raw = lower.to_vec();
                    raw[at] = b;
                    assert_eq!(
                        eq_folded(&raw, lower),
                        raw.eq_ignore_ascii_case(lower),
                        "{raw:?}"
                    );
                }
            }
        }
        // The fast path hands back the standard name itself.
        assert_eq!(
            field_name(b"Content-Length"),
            Ok(http::header::CONTENT_LENGTH)
        );
    }

    #[test]
    fn recycled_maps_come_back_empty_and_large_ones_are_not_kept() {
        while maps::take_map().is_some() {}
        let mut m = new_map(4);
        m.insert(http::header::HOST, HeaderValue::from_static("a"));
        m.append(http::header::ACCEPT, HeaderValue::from_static("b"));
        m.append(http::header::ACCEPT, HeaderValue::from_static("c"));
        recycle(m);
        assert_eq!(maps::kept(), 1);
        let again = new_map(2);
        assert!(again.is_empty());
        assert!(again.get(http::header::ACCEPT).is_none());
        assert!(again.capacity() >= 4);
        assert_eq!(maps::kept(), 0);
        recycle(HeaderMap::with_capacity(1000));
        assert_eq!(maps::kept(), 0);
    }
}
