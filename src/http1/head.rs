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
        let name = HeaderName::from_bytes(&raw[ns..ne]).map_err(|_| Invalid::Name)?;
        if !each(&name, &raw[vs..ve])? {
            continue;
        }
        let value =
            HeaderValue::from_maybe_shared(raw.slice(vs..ve)).map_err(|_| Invalid::Value)?;
        headers.append(name, value);
    }
    Ok(())
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
