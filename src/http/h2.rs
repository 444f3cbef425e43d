//! HTTP/2 request checks attache adds to those of the `h2` crate, so that a
//! malformed request (RFC 9113 section 8.1.1) is refused before anything goes
//! upstream.
//!
//! `h2` itself resets a stream with `PROTOCOL_ERROR` when: `content-length` is not
//! digits only (whitespace, sign, several differing values), DATA frames add up to
//! more or less than it, HEADERS with END_STREAM carry a non-zero one, a
//! connection-specific field (`connection`, `keep-alive`, `proxy-connection`,
//! `transfer-encoding`, `upgrade`, `te` other than `trailers`) is present, a
//! pseudo-header is unknown, repeated, after a regular field or missing, or
//! `:authority`/`:path` do not parse. Two things are left to attache:
//!
//! - a `:scheme` other than `http`/`https` (RFC 9113 section 8.3.1 lets a gateway
//!   refuse it; attache only speaks those two upstream): [`scheme_ok`];
//! - the timing of the body checks: `h2` finds a wrong `content-length` only when
//!   the DATA arrives, after the request was handed to the proxy. [`preread`] takes
//!   the body frames that are already here before anything is forwarded, so a
//!   request whose whole body came with its head (the common case) is refused
//!   without an upstream byte; a body that breaks later aborts the upstream
//!   request mid-body (its connection is closed, never reused).

use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use futures_util::FutureExt;
use http::uri::Scheme;
use http::Uri;
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;

/// The request's scheme, when it has one, is one attache forwards.
pub fn scheme_ok(uri: &Uri) -> bool {
    uri.scheme()
        .is_none_or(|s| *s == Scheme::HTTP || *s == Scheme::HTTPS)
}

/// What [`preread`] found.
pub enum Preread<B> {
    /// The whole body was here: no more than `limit` bytes, no trailers.
    Complete(Bytes),
    /// Nothing was here yet: the body untouched.
    Untouched(B),
    /// Part of it, to stream: the frames read first, then the rest.
    Partial(Replay<B>),
    /// The body is malformed (`h2` has reset the stream): forward nothing.
    Broken,
}

/// Take the body frames already received, without waiting, up to `limit` bytes.
pub fn preread<B>(mut body: B, limit: usize) -> Preread<B>
where
    B: Body<Data = Bytes> + Unpin,
{
    let mut frames: VecDeque<Frame<Bytes>> = VecDeque::new();
    let mut len = 0usize;
    let ended = loop {
        if len >= limit {
            break false;
        }
        match body.frame().now_or_never() {
            None => break false,
            Some(None) => break true,
            Some(Some(Err(_))) => return Preread::Broken,
            Some(Some(Ok(f))) => {
                let trailers = f.is_trailers();
                len += f.data_ref().map_or(0, Bytes::len);
                frames.push_back(f);
                if trailers {
                    break true;
                }
            }
        }
    };
    if ended && frames.iter().all(Frame::is_data) {
        return Preread::Complete(concat(frames, len));
    }
    if frames.is_empty() {
        return Preread::Untouched(body);
    }
    let rest = (!ended).then_some(body);
    Preread::Partial(Replay { frames, rest })
}

/// Data frames as one buffer (no copy for one frame).
fn concat(mut frames: VecDeque<Frame<Bytes>>, len: usize) -> Bytes {
    if frames.len() == 1 {
        if let Some(Ok(b)) = frames.pop_front().map(Frame::into_data) {
            return b;
        }
        return Bytes::new();
    }
    let mut out = BytesMut::with_capacity(len);
    for f in frames {
        if let Ok(b) = f.into_data() {
            out.extend_from_slice(&b);
        }
    }
    out.freeze()
}

/// A body whose first frames were read ahead: those, then the rest of the stream.
pub struct Replay<B> {
    frames: VecDeque<Frame<Bytes>>,
    rest: Option<B>,
}

impl<B> Body for Replay<B>
where
    B: Body<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        if let Some(f) = this.frames.pop_front() {
            return Poll::Ready(Some(Ok(f)));
        }
        match this.rest.as_mut() {
            Some(rest) => Pin::new(rest).poll_frame(cx),
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.frames.is_empty() && self.rest.as_ref().is_none_or(B::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        let here: u64 = self
            .frames
            .iter()
            .map(|f| f.data_ref().map_or(0, |d| d.len() as u64))
            .sum();
        let rest = self
            .rest
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), B::size_hint);
        let mut hint = SizeHint::new();
        hint.set_lower(rest.lower().saturating_add(here));
        if let Some(upper) = rest.upper() {
            hint.set_upper(upper.saturating_add(here));
        }
        hint
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schemes() {
        for (uri, ok) in [
            ("/", true),
            ("http://a/", true),
            ("https://a/", true),
            ("ftp://a/", false),
            ("gopher://a/", false),
            ("HTTP://a/", true),
        ] {
            let u: Uri = uri.parse().unwrap_or_default();
            assert_eq!(scheme_ok(&u), ok, "{uri}");
        }
    }

    type Frames = futures_util::stream::BoxStream<'static, Result<Frame<Bytes>, &'static str>>;

    fn stream(
        frames: Vec<Result<Frame<Bytes>, &'static str>>,
        pending_after: bool,
    ) -> http_body_util::StreamBody<Frames> {
        let s = futures_util::stream::iter(frames);
        let s: Frames = if pending_after {
            Box::pin(futures_util::StreamExt::chain(
                s,
                futures_util::stream::pending(),
            ))
        } else {
            Box::pin(s)
        };
        http_body_util::StreamBody::new(s)
    }

    #[tokio::test]
    async fn a_body_already_here_is_complete() {
        let b = stream(
            vec![
                Ok(Frame::data(Bytes::from_static(b"ab"))),
                Ok(Frame::data(Bytes::from_static(b"cd"))),
            ],
            false,
        );
        match preread(b, 1024) {
            Preread::Complete(b) => assert_eq!(b, "abcd"),
            _ => panic!("complete"),
        }
    }

    #[tokio::test]
    async fn a_broken_body_forwards_nothing() {
        let b = stream(
            vec![Ok(Frame::data(Bytes::from_static(b"ab"))), Err("reset")],
            false,
        );
        assert!(matches!(preread(b, 1024), Preread::Broken));
    }

    #[tokio::test]
    async fn a_partial_body_replays_what_was_read() {
        let b = stream(vec![Ok(Frame::data(Bytes::from_static(b"ab")))], true);
        let Preread::Partial(mut b) = preread(b, 1024) else {
            panic!("partial");
        };
        assert_eq!(b.size_hint().lower(), 2);
        let f = b
            .frame()
            .await
            .and_then(Result::ok)
            .and_then(|f| f.into_data().ok());
        assert_eq!(f.as_deref(), Some(&b"ab"[..]));
        assert!(b.frame().now_or_never().is_none(), "then the live stream");
    }

    #[tokio::test]
    async fn trailers_and_large_bodies_stream() {
        let mut t = http::HeaderMap::new();
        t.insert("x-t", http::HeaderValue::from_static("1"));
        let b = stream(
            vec![
                Ok(Frame::data(Bytes::from_static(b"ab"))),
                Ok(Frame::trailers(t)),
            ],
            false,
        );
        let Preread::Partial(mut b) = preread(b, 1024) else {
            panic!("trailers keep the stream");
        };
        let mut n = 0;
        while let Some(Ok(_)) = b.frame().await {
            n += 1;
        }
        assert_eq!(n, 2);
        assert!(b.is_end_stream());

        let b = stream(
            vec![
                Ok(Frame::data(Bytes::from_static(b"abcd"))),
                Ok(Frame::data(Bytes::from_static(b"ef"))),
            ],
            false,
        );
        assert!(
            matches!(preread(b, 3), Preread::Partial(_)),
            "over the limit"
        );
    }
}
