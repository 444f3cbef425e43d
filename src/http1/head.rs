//! Message heads (RFC 9112 sections 2-5), for both roles: where a parsed head's
//! fields are, the field-value grammar both directions read (`Content-Length`,
//! comma-separated lists), and the field lines both encoders write.

use http::header::{HeaderMap, HeaderName};

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
