//! Target for request smuggling against the downstream HTTP/1 codec: what it does
//! with the first head of a connection.

use bytes::BytesMut;

use super::RequestBody;
use crate::http::{parse_for_fuzzing, FuzzParsed};

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

/// What the codec did with the first head.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    /// Taken; `false` when its framing is refused before dispatch.
    Served(bool),
    Refused(u16),
    Http2,
    /// Never complete.
    Partial,
}

pub(super) fn check(data: &[u8]) {
    let Some((&flags, data)) = data.split_first() else {
        return;
    };
    let whole = outcome(data, data.len());
    let split = outcome(data, super::step_of(flags));
    assert_eq!(whole, split, "the outcome depends on how the bytes arrive");
    if whole == Outcome::Served(true) {
        assert!(
            !first_head_is_ambiguous(data),
            "Content-Length with Transfer-Encoding served"
        );
        assert!(
            !first_target_has_fragment(data),
            "a fragment in the request line served"
        );
    }
}

/// What the codec does with the first head when the bytes arrive `step` at a time
/// (it parses after every read, as on a connection).
fn outcome(data: &[u8], step: usize) -> Outcome {
    let mut buf = BytesMut::new();
    for chunk in data.chunks(step.max(1)) {
        buf.extend_from_slice(chunk);
        match parse_for_fuzzing(&mut buf, 100) {
            FuzzParsed::Partial => {}
            FuzzParsed::Request(_, body, _) => {
                return Outcome::Served(body != RequestBody::Refused)
            }
            FuzzParsed::Refused(status) => return Outcome::Refused(status),
            FuzzParsed::Http2 => return Outcome::Http2,
        }
    }
    Outcome::Partial
}

/// Whether the first request line, as httparse reads it, has a `#` in its target.
fn first_target_has_fragment(data: &[u8]) -> bool {
    let mut headers = [httparse::EMPTY_HEADER; 128];
    let mut req = httparse::Request::new(&mut headers);
    let _ = req.parse(data);
    req.path.is_some_and(|p| p.contains('#'))
}

/// Whether the first request head, as hyper's parser (httparse) reads it, carries
/// both a valid Content-Length and a Transfer-Encoding (the signature of request
/// smuggling: hyper, for one, would have used chunked framing).
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
