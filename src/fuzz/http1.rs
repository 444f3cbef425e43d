//! HTTP/1.1 targets: the downstream request head and the upstream response.

use bytes::BytesMut;
use http::{header, HeaderMap, Method, StatusCode, Version};

use super::{feed, Decoded};
use crate::http::{parse_for_fuzzing, FuzzParsed};
use crate::http1::body::Decoder;
use crate::http1::framing::{Fields, Framing};
use crate::http1::head::{parse_length, tokens};
use crate::upstream::h1::parse_head_for_fuzzing;

pub(super) const REQUEST_DICT: &[&[u8]] = &[
    b"GET ",
    b"POST ",
    b"CONNECT ",
    b" HTTP/1.1\r\n",
    b" HTTP/1.0\r\n",
    b"\r\n",
    b"\r\n\r\n",
    b"\n",
    b"Host: a\r\n",
    b"Content-Length: 5\r\n",
    b"content-length: 0, 0\r\n",
    b"Transfer-Encoding: chunked\r\n",
    b"Connection: close\r\n",
    b"Expect: 100-continue\r\n",
    b"Upgrade: websocket\r\n",
    b"Expect: x\r\n",
    b"Transfer-Encoding: gzip, chunked\r\n",
    b"OPTIONS * ",
    b"a:443",
    b" \t",
    b"%2e%2e/",
    b"/../",
    b"http://a/",
    b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
];

pub(super) const RESPONSE_DICT: &[&[u8]] = &[
    b"HTTP/1.1 200 OK\r\n",
    b"HTTP/1.0 200 OK\r\n",
    b"HTTP/1.1 100 Continue\r\n\r\n",
    b"HTTP/1.1 101 Switching Protocols\r\n",
    b"HTTP/1.1 204 No Content\r\n",
    b"\r\n",
    b"\r\n\r\n",
    b"\n",
    b"Content-Length: 5\r\n",
    b"content-length: 1, 2\r\n",
    b"Transfer-Encoding: chunked\r\n",
    b"Transfer-Encoding: gzip\r\n",
    b"Connection: keep-alive\r\n",
    b"Connection: close, x-hop\r\n",
    b"0\r\n\r\n",
    b"5\r\nhello\r\n",
    b"ffffffffffffffff\r\n",
    b";ext=1",
    b"trailer: x\r\n",
];

/// How the downstream codec frames a request body it takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RequestBody {
    /// `Content-Length` (0 without one).
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
    /// Taken, but answered with an error instead of being dispatched.
    Refused,
}

/// Headers a listener allows by default, and a low bound that forces the slot limit.
const MAX_HEADERS: [usize; 2] = [100, 3];

pub(super) fn request(data: &[u8]) {
    for max in MAX_HEADERS {
        let mut buf = BytesMut::from(data);
        match parse_for_fuzzing(&mut buf, max) {
            FuzzParsed::Partial | FuzzParsed::Http2 => {
                // More is awaited, or hyper takes over from the same bytes.
                assert_eq!(&buf[..], data, "a partial head or hand-over consumed bytes");
            }
            FuzzParsed::Refused(status) => {
                assert!([400, 417, 431, 501].contains(&status), "{status}");
            }
            FuzzParsed::Request(parts, body, close) => {
                let consumed = data.len() - buf.len();
                assert_eq!(&buf[..], &data[consumed..], "bytes after the head changed");
                served_request(&parts, body, close);
                head_ends_where_parsed(&data[..consumed], max, &parts, body, close);
            }
        }
    }
}

/// What the codec serves is an HTTP/1.1 or HTTP/1.0 request whose target form fits
/// its method and whose framing no one can read differently (HTTP/1.0 has no
/// chunked framing).
fn served_request(parts: &http::request::Parts, body: RequestBody, close: bool) {
    assert!(
        parts.version == Version::HTTP_11 || parts.version == Version::HTTP_10,
        "{:?} served",
        parts.version
    );
    if parts.version == Version::HTTP_10 {
        assert!(body != RequestBody::Chunked, "chunked framing on HTTP/1.0");
    }
    let uri = &parts.uri;
    let authority_form = uri.scheme().is_none() && uri.authority().is_some();
    assert_eq!(authority_form, parts.method == Method::CONNECT, "{uri:?}");
    if uri.scheme().is_some() {
        assert!(uri.authority().is_some(), "{uri:?}");
    } else if !authority_form {
        assert!(uri.path().starts_with('/') || uri.path() == "*", "{uri:?}");
    }
    let h = &parts.headers;
    let lengths: Vec<_> = h.get_all(header::CONTENT_LENGTH).iter().collect();
    let codings: Vec<_> = h.get_all(header::TRANSFER_ENCODING).iter().collect();
    match body {
        RequestBody::Length(n) => {
            assert!(codings.is_empty(), "a transfer coding framed by length");
            assert!(lengths.len() <= 1, "several Content-Length served");
            match lengths.first() {
                // 1*DIGIT: leading zeros are valid and forwarded as sent.
                Some(v) => assert_eq!(parse_length(v.as_bytes()), Some(n)),
                None => assert_eq!(n, 0),
            }
        }
        RequestBody::Chunked => {
            assert!(lengths.is_empty(), "Content-Length beside chunked framing");
            // Exactly one `chunked` (empty list elements are allowed, RFC 9110
            // section 5.6.1).
            let named: Vec<&[u8]> = codings
                .iter()
                .flat_map(|v| tokens(v.as_bytes()))
                .filter(|t| !t.is_empty())
                .collect();
            assert!(matches!(&named[..], [t] if t.eq_ignore_ascii_case(b"chunked")));
        }
        RequestBody::Refused => {}
    }
    same_framing_as_a_response(h, body);
    // HTTP/1.0 closes unless the client asked for keep-alive (RFC 9112 9.3).
    let close_asked = lists(h, header::CONNECTION, b"close")
        || (parts.version == Version::HTTP_10 && !lists(h, header::CONNECTION, b"keep-alive"));
    assert_eq!(close, close_asked);
}

/// Both roles share one framing vocabulary: the fields of a request the server
/// role frames by length or chunked, read by the client role's response rule (a
/// `200` to a GET), frame the body the same way.
fn same_framing_as_a_response(h: &HeaderMap, body: RequestBody) {
    let mut fields = Fields::default();
    for (name, value) in h {
        if name == header::CONTENT_LENGTH {
            fields.content_length(value.as_bytes());
        } else if name == header::TRANSFER_ENCODING {
            fields.transfer_encoding(value.as_bytes());
        }
    }
    let expected = match body {
        RequestBody::Length(0) | RequestBody::Refused => return,
        RequestBody::Length(n) => Framing::Length(n),
        RequestBody::Chunked => Framing::Chunked,
    };
    assert_eq!(fields.response(StatusCode::OK, false), Ok(expected));
}

/// The head ends exactly where it was parsed: the same bytes alone give the same
/// request, and one byte fewer is no request at all.
fn head_ends_where_parsed(
    head: &[u8],
    max: usize,
    parts: &http::request::Parts,
    body: RequestBody,
    close: bool,
) {
    let mut alone = BytesMut::from(head);
    let FuzzParsed::Request(again, l, c) = parse_for_fuzzing(&mut alone, max) else {
        panic!("the head alone is not the same request");
    };
    assert!(alone.is_empty());
    assert_eq!(
        (&again.method, &again.uri, &again.headers, l, c),
        (&parts.method, &parts.uri, &parts.headers, body, close)
    );
    let mut short = BytesMut::from(&head[..head.len() - 1]);
    assert!(
        !matches!(parse_for_fuzzing(&mut short, max), FuzzParsed::Request(..)),
        "a head one byte short is a request"
    );
}

fn lists(h: &HeaderMap, name: header::HeaderName, token: &[u8]) -> bool {
    h.get_all(name)
        .iter()
        .any(|v| tokens(v.as_bytes()).any(|t| t.eq_ignore_ascii_case(token)))
}

pub(super) fn response(data: &[u8]) {
    let Some((&flags, data)) = data.split_first() else {
        return;
    };
    let is_head = flags & 0x80 != 0;
    let outlive = flags & 0x40 != 0;
    // A fresh decoder for the body each time (the parse is deterministic).
    let parse = || {
        let mut rbuf = BytesMut::from(data);
        let parsed = parse_head_for_fuzzing(&mut rbuf, is_head, outlive);
        (parsed, rbuf)
    };
    let (Ok(parsed), rbuf) = parse() else {
        return;
    };
    assert!(data.ends_with(&rbuf), "the parser changed unread bytes");
    let Some((head, body)) = parsed else {
        return;
    };
    response_head(&head, &body, is_head);
    let whole = feed(body, &rbuf, rbuf.len().max(1));
    let (Ok(Some((_, body))), _) = parse() else {
        panic!("the same head parsed differently");
    };
    let split = feed(body, &rbuf, super::step_of(flags));
    assert_eq!(whole, split, "decoding depends on how the bytes arrive");
    let (Ok(Some((_, body))), _) = parse() else {
        panic!("the same head parsed differently");
    };
    decoded_body(&body, &rbuf, &whole);
}

/// A response head as the proxy gets it: final, hop-by-hop framing consumed, no
/// length beside a transfer coding, no body where none may be.
fn response_head(p: &crate::upstream::h1::ResponseHead, body: &Decoder, is_head: bool) {
    assert!(
        !p.status.is_informational() || p.status == StatusCode::SWITCHING_PROTOCOLS,
        "interim response returned"
    );
    for name in ["transfer-encoding", "keep-alive", "proxy-connection"] {
        assert!(!p.headers.contains_key(name), "{name} left in the map");
    }
    if let Decoder::Chunked(_) = body {
        assert!(!p.headers.contains_key(header::CONTENT_LENGTH));
    }
    let bodiless = [StatusCode::NO_CONTENT, StatusCode::NOT_MODIFIED];
    if is_head || bodiless.contains(&p.status) || p.status == StatusCode::SWITCHING_PROTOCOLS {
        assert!(body.is_done(), "a body where none may be");
    }
    if let Decoder::Close = body {
        assert!(
            !p.keep_alive(),
            "a body read until close keeps the connection"
        );
    }
}

/// A body never yields more than it was given, and a length or read-until-close
/// body is the bytes themselves.
fn decoded_body(body: &Decoder, rest: &[u8], d: &Decoded) {
    assert!(d.data.len() <= rest.len(), "more body than input");
    let remaining = match body {
        Decoder::Length(n) => Some(*n),
        Decoder::Done => Some(0),
        _ => None,
    };
    if let Some(n) = remaining {
        let n = usize::try_from(n).unwrap_or(usize::MAX).min(rest.len());
        assert_eq!(d.data, rest[..n]);
    }
    if let Decoder::Close = body {
        assert_eq!(d.data, rest);
    }
    if let Some(left) = &d.left {
        assert!(rest.ends_with(left), "bytes after the body changed");
        assert!(d.data.len() + left.len() <= rest.len());
    }
}
