//! Bodies on the upstream side: the request body sent upstream (streamed from the
//! client, or a buffered copy that retries can replay) and the response body read
//! back (HTTP/1.1 from our own codec, HTTP/2 from hyper). Enums rather than boxed
//! trait objects: no allocation.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

pub enum UpBody {
    Empty,
    Full(Option<Bytes>),
    Stream {
        inner: crate::http::DownBody,
        counter: Arc<AtomicU64>,
        /// A copy kept so a retry can send the body again (gRPC calls).
        replay: Option<Arc<Mutex<Replay>>>,
    },
}

/// A copy of a streamed request body, kept while it is sent, up to a limit, so a
/// call whose answer asks for a retry can be sent again once the whole body went
/// out. Past the limit, or with trailers, the copy is given up.
#[derive(Debug)]
pub struct Replay {
    chunks: Vec<Bytes>,
    len: usize,
    limit: usize,
    complete: bool,
    spoiled: bool,
}

impl Replay {
    pub fn new(limit: usize) -> Arc<Mutex<Replay>> {
        Arc::new(Mutex::new(Replay {
            chunks: Vec::new(),
            len: 0,
            limit,
            complete: false,
            spoiled: false,
        }))
    }

    fn record(&mut self, frame: &Frame<Bytes>, ended: bool) {
        if self.spoiled {
            return;
        }
        match frame.data_ref() {
            Some(d) if self.len + d.len() <= self.limit => {
                self.len += d.len();
                self.chunks.push(d.clone());
            }
            _ => self.spoil(),
        }
        self.complete |= ended;
    }

    fn spoil(&mut self) {
        self.spoiled = true;
        self.chunks = Vec::new();
    }

    /// The whole body, when all of it was sent and kept.
    pub fn take_complete(&mut self) -> Option<Bytes> {
        if !self.complete || self.spoiled {
            return None;
        }
        let mut all = bytes::BytesMut::with_capacity(self.len);
        for c in &self.chunks {
            all.extend_from_slice(c);
        }
        Some(all.freeze())
    }
}

impl UpBody {
    /// A copy to send again, when the body can be replayed (not a stream).
    pub fn try_clone(&self) -> Option<UpBody> {
        match self {
            UpBody::Empty => Some(UpBody::Empty),
            UpBody::Full(b) => Some(UpBody::Full(b.clone())),
            UpBody::Stream { .. } => None,
        }
    }
}

impl Body for UpBody {
    type Data = Bytes;
    type Error = super::h1::BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        match self.get_mut() {
            UpBody::Empty => Poll::Ready(None),
            UpBody::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            UpBody::Stream {
                inner,
                counter,
                replay,
            } => {
                let r = Pin::new(&mut *inner).poll_frame(cx);
                if let Poll::Ready(Some(Ok(f))) = &r {
                    if let Some(d) = f.data_ref() {
                        counter.fetch_add(d.len() as u64, Ordering::Relaxed);
                    }
                }
                if let Some(replay) = replay {
                    let mut rp = replay.lock().unwrap_or_else(|p| p.into_inner());
                    match &r {
                        Poll::Ready(Some(Ok(f))) => rp.record(f, inner.is_end_stream()),
                        Poll::Ready(None) => rp.complete = true,
                        Poll::Ready(Some(Err(_))) => rp.spoil(),
                        Poll::Pending => {}
                    }
                }
                r
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            UpBody::Empty => true,
            UpBody::Full(b) => b.is_none(),
            UpBody::Stream { inner, .. } => inner.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            UpBody::Empty => SizeHint::with_exact(0),
            UpBody::Full(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
            UpBody::Stream { inner, .. } => inner.size_hint(),
        }
    }
}

/// A response body from an upstream.
pub enum UpstreamBody {
    /// Boxed: the response (and the client's response body, which wraps this) is
    /// moved a dozen times between the exchange and the client's codec, and an
    /// HTTP/1 body inline made each move a 300-byte copy.
    H1(Box<super::h1::H1Body>),
    H2(Incoming),
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = super::h1::BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        match self.get_mut() {
            UpstreamBody::H1(b) => Pin::new(b).poll_frame(cx),
            UpstreamBody::H2(b) => Pin::new(b)
                .poll_frame(cx)
                .map(|r| r.map(|r| r.map_err(Into::into))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            UpstreamBody::H1(b) => b.is_end_stream(),
            UpstreamBody::H2(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            UpstreamBody::H1(b) => b.size_hint(),
            UpstreamBody::H2(b) => b.size_hint(),
        }
    }
}
