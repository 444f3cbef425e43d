//! gRPC-Web bodies for streams the `grpc_web` filter marked (the filter API sees
//! heads only, so the body work is here): a base64 `-text` request body decoded on
//! its way upstream, and the response's trailers written into the body as a
//! gRPC-Web trailer frame (flag `0x80`), the whole body base64 for `-text`.
//! gRPC-Web wire format: grpc/grpc `doc/PROTOCOL-WEB.md`.

use std::pin::Pin;
use std::task::{Context, Poll};

use base64::Engine as _;
use bytes::{BufMut, Bytes, BytesMut};
use http::header::{HeaderMap, HeaderValue, CONTENT_LENGTH, CONTENT_TYPE};
use http_body::{Body, Frame, SizeHint};

use super::DownBody;
use crate::upstream::h1::BoxError;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// A `-text` request body, base64-decoded as it streams. Clients may send several
/// padded segments back to back (one per message), so padding may appear mid-body.
pub struct TextDecode {
    inner: DownBody,
    /// Base64 characters not yet decoded (less than a quad).
    pending: Vec<u8>,
}

impl TextDecode {
    pub fn new(inner: DownBody) -> TextDecode {
        TextDecode {
            inner,
            pending: Vec::new(),
        }
    }
}

/// Decode whole quads of `input` into `out`; padding ends a segment.
fn decode_quads(input: &[u8], out: &mut Vec<u8>) -> Result<(), base64::DecodeError> {
    let mut start = 0;
    for (i, q) in input.chunks_exact(4).enumerate() {
        if q[3] == b'=' {
            B64.decode_vec(&input[start..(i + 1) * 4], out)?;
            start = (i + 1) * 4;
        }
    }
    B64.decode_vec(&input[start..], out)
}

impl Body for TextDecode {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        loop {
            match Pin::new(&mut this.inner).poll_frame(cx) {
                Poll::Ready(Some(Ok(f))) => {
                    let Some(d) = f.data_ref() else {
                        return Poll::Ready(Some(Ok(f)));
                    };
                    this.pending
                        .extend(d.iter().filter(|b| !b.is_ascii_whitespace()));
                    let whole = this.pending.len() / 4 * 4;
                    if whole == 0 {
                        continue;
                    }
                    let mut out = Vec::with_capacity(whole / 4 * 3);
                    if decode_quads(&this.pending[..whole], &mut out).is_err() {
                        return Poll::Ready(Some(Err("malformed grpc-web-text body".into())));
                    }
                    this.pending.drain(..whole);
                    return Poll::Ready(Some(Ok(Frame::data(out.into()))));
                }
                Poll::Ready(None) if !this.pending.is_empty() => {
                    this.pending.clear();
                    return Poll::Ready(Some(Err("truncated grpc-web-text body".into())));
                }
                other => return other,
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream() && self.pending.is_empty()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

/// The response head for a gRPC-Web client: its content type (the upstream's
/// `+format` suffix kept), and no length (the body grows by the trailer frame).
pub fn response_head(headers: &mut HeaderMap, text: bool) {
    let base: &[u8] = if text {
        b"application/grpc-web-text"
    } else {
        b"application/grpc-web"
    };
    let suffix = headers
        .get(CONTENT_TYPE)
        .and_then(|v| {
            let v = v.as_bytes();
            v.iter().position(|&b| b == b'+').map(|i| v[i..].to_vec())
        })
        .unwrap_or_else(|| b"+proto".to_vec());
    let mut ct = base.to_vec();
    ct.extend_from_slice(&suffix);
    if let Ok(v) = HeaderValue::from_bytes(&ct) {
        headers.insert(CONTENT_TYPE, v);
    }
    headers.remove(CONTENT_LENGTH);
}

/// The response body side: trailers become a trailer frame in the body; for
/// `-text` everything is base64, in groups of 3 bytes so no padding appears before
/// the end.
#[derive(Debug, Default)]
pub struct Encode {
    text: bool,
    /// `-text`: bytes not yet encoded (fewer than 3).
    carry: Vec<u8>,
}

impl Encode {
    pub fn new(text: bool) -> Encode {
        Encode {
            text,
            carry: Vec::new(),
        }
    }

    /// Whether bytes are still held back (the body is not over until they go).
    pub fn holding(&self) -> bool {
        !self.carry.is_empty()
    }

    /// Rewrite one frame of the upstream gRPC response.
    pub fn frame(&mut self, f: Frame<Bytes>) -> Frame<Bytes> {
        match f.into_data() {
            Ok(d) if self.text => Frame::data(self.encode(&d, false)),
            Ok(d) => Frame::data(d),
            Err(f) => match f.into_trailers() {
                Ok(t) => {
                    let frame = trailer_frame(&t);
                    if self.text {
                        Frame::data(self.encode(&frame, true))
                    } else {
                        Frame::data(frame)
                    }
                }
                Err(_) => Frame::data(Bytes::new()),
            },
        }
    }

    /// What is held back, at the end of a body that had no trailers.
    pub fn flush(&mut self) -> Option<Bytes> {
        self.holding().then(|| self.encode(&[], true))
    }

    fn encode(&mut self, d: &[u8], last: bool) -> Bytes {
        self.carry.extend_from_slice(d);
        let n = if last {
            self.carry.len()
        } else {
            self.carry.len() / 3 * 3
        };
        let out = B64.encode(&self.carry[..n]);
        self.carry.drain(..n);
        Bytes::from(out)
    }
}

/// A gRPC-Web trailer frame: flag `0x80`, big-endian length, then the trailers as
/// an HTTP/1 header block (`name: value\r\n`, names lower case).
pub fn trailer_frame(trailers: &HeaderMap) -> Bytes {
    let len: usize = trailers
        .iter()
        .map(|(k, v)| k.as_str().len() + v.len() + 4)
        .sum();
    let mut b = BytesMut::with_capacity(5 + len);
    b.put_u8(0x80);
    b.put_u32(len as u32);
    for (k, v) in trailers {
        b.put_slice(k.as_str().as_bytes());
        b.put_slice(b": ");
        b.put_slice(v.as_bytes());
        b.put_slice(b"\r\n");
    }
    b.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trailer_frames_carry_the_trailers_as_a_header_block() {
        let mut t = HeaderMap::new();
        t.insert("grpc-status", HeaderValue::from_static("0"));
        t.insert("grpc-message", HeaderValue::from_static("ok"));
        let f = trailer_frame(&t);
        let block = b"grpc-status: 0\r\ngrpc-message: ok\r\n";
        assert_eq!(f[0], 0x80);
        assert_eq!(&f[1..5], &(block.len() as u32).to_be_bytes());
        assert_eq!(&f[5..], block);
    }

    #[test]
    fn text_encoding_pads_only_at_the_end() {
        let mut e = Encode::new(true);
        let mut out = Vec::new();
        for chunk in [&b"ab"[..], b"cde", b"f"] {
            let f = e.frame(Frame::data(Bytes::copy_from_slice(chunk)));
            out.extend_from_slice(f.data_ref().expect("data"));
        }
        let mut t = HeaderMap::new();
        t.insert("grpc-status", HeaderValue::from_static("0"));
        let f = e.frame(Frame::trailers(t.clone()));
        out.extend_from_slice(f.data_ref().expect("data"));
        assert!(!e.holding());
        let mut want = b"abcdef".to_vec();
        want.extend_from_slice(&trailer_frame(&t));
        assert_eq!(String::from_utf8(out).expect("ascii"), B64.encode(want));
    }

    #[test]
    fn decodes_padded_segments_back_to_back() {
        let mut out = Vec::new();
        let input = format!("{}{}", B64.encode(b"a"), B64.encode(b"bcd"));
        decode_quads(input.as_bytes(), &mut out).expect("decodes");
        assert_eq!(out, b"abcd");
        assert!(decode_quads(b"a=bc", &mut Vec::new()).is_err());
    }
}
