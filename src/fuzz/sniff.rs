//! Target for the request-smuggling watcher on connections hyper serves.

use crate::http::flags_for_fuzzing;

pub(super) const DICT: &[&[u8]] = &[
    b"POST / HTTP/1.1\r\n",
    b"GET / HTTP/1.0\r\n",
    b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
    b"\r\n",
    b"\r\n\r\n",
    b"\n",
    b"Host: a\r\n",
    b"Content-Length: 5\r\n",
    b"content-length:0\r\n",
    b"Transfer-Encoding: chunked\r\n",
    b"transfer-encoding: gzip, chunked\r\n",
    b"Transfer-Encoding: identity\r\n",
    b"0\r\n\r\n",
    b"5\r\nhello\r\n",
    b"5;ext=1\r\n",
    b"trailer: x\r\n",
    b"                                                                ",
];

pub(super) fn watch(data: &[u8]) {
    let Some((&flags, data)) = data.split_first() else {
        return;
    };
    let whole = flags_for_fuzzing([data]);
    let split = flags_for_fuzzing(data.chunks(super::step_of(flags)));
    assert_eq!(whole, split, "the flag depends on how the bytes arrive");
    let (framing, fragment, _) = whole;
    if first_head_is_ambiguous(data) {
        assert!(framing, "Content-Length with Transfer-Encoding not flagged");
    }
    if first_target_has_fragment(data) {
        assert!(fragment, "a fragment in the request line not flagged");
    }
}

/// Whether the first request line, as httparse reads it, has a `#` in its target.
fn first_target_has_fragment(data: &[u8]) -> bool {
    let mut headers = [httparse::EMPTY_HEADER; 128];
    let mut req = httparse::Request::new(&mut headers);
    let _ = req.parse(data);
    req.path.is_some_and(|p| p.contains('#'))
}

/// Whether the first request head, as hyper's parser (httparse) reads it, carries
/// both a valid Content-Length (which hyper would accept) and a Transfer-Encoding.
fn first_head_is_ambiguous(data: &[u8]) -> bool {
    let mut headers = [httparse::EMPTY_HEADER; 128];
    let mut req = httparse::Request::new(&mut headers);
    if !matches!(req.parse(data), Ok(httparse::Status::Complete(_))) {
        return false;
    }
    let named = |n: &'static str| {
        req.headers
            .iter()
            .filter(move |h| h.name.eq_ignore_ascii_case(n))
            .map(|h| h.value.trim_ascii())
    };
    let valid = |v: &[u8]| !v.is_empty() && v.len() <= 19 && v.iter().all(u8::is_ascii_digit);
    named("content-length").next().is_some()
        && named("content-length").all(valid)
        && named("transfer-encoding").next().is_some()
}
