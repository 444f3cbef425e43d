//! Downstream HTTP/1.x: attache's own codec, for every HTTP/1 request. hyper keeps
//! HTTP/2 only: a connection that opens with the HTTP/2 preface (prior knowledge,
//! or TLS with ALPN `h2`) is handed to it with the bytes read so far.
//!
//! hyper's server dispatch (its connection state machine, the auto-detection
//! wrapper, a boxed header-read timer per request, a channel per request body)
//! was the largest share of attache's user-space cost per proxied request, and it
//! resolved `Content-Length` with `Transfer-Encoding` in favour of chunked instead
//! of refusing it, which took a shadow parser to catch. This codec serves HTTP/1.1
//! and HTTP/1.0 requests in every target form (origin, absolute, `*`, and
//! authority-form for `CONNECT`: attache opens no tunnels for it, so a `2xx` goes
//! out bare and the connection closes), framed by no body, one `Content-Length`,
//! or `Transfer-Encoding: chunked` (HTTP/1.1 only; decoded by the strict
//! [`chunked`] decoder), with or without `Expect: 100-continue` (answered here).
//! HTTP/1.0 clients get no chunked responses (a body of unknown length ends with
//! the connection) and keep-alive only when they ask.
//!
//! Refused before anything is forwarded, answered here (counted with a reason,
//! logged `DPE`) and followed by a close: a malformed head (`400`), one over
//! `max_head` or with more than `max_headers` lines (`431`), framing that could be
//! read two ways (both `Content-Length` and `Transfer-Encoding`, differing or
//! invalid lengths, `chunked` not last or repeated, any coding on HTTP/1.0:
//! `400`), a coding before `chunked` (`501`), another expectation (`417`), a
//! `#fragment` or a target form that does not fit the method (`400`), and a
//! malformed chunk among the bytes that arrived with the head (`400`). A malformed
//! chunk that arrives later fails the body, which aborts the upstream request
//! (see `upstream::h1`); the connection closes after the answer.
//!
//! This is the server role of the one HTTP/1 codec (`crate::http1`): header
//! fields become the request's `HeaderMap` through `http1::head`, the framing
//! refusals above are the request rule of `http1::framing`, and request bodies
//! are read by `http1::body::Decoder`, all shared with the client role
//! (`upstream::h1`). What is here is the server's own: the request line and
//! target forms, `Expect`, driving the connection, and encoding responses.
//!
//! Upgrades: a request with `Upgrade` and no body carries an [`OnUpgrade`]; a route
//! that tunnels the protocol takes it, and when the upstream answers `101` this
//! codec writes the `101` and hands the connection (with the bytes the client sent
//! past its head) to the tunnel (`proxy::tunnel`, one `tcp::splice`).

use std::future::{poll_fn, Future};
use std::io;
use std::mem::MaybeUninit;
use std::pin::{pin, Pin};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use http::{header, HeaderValue, Method, Request, Response, StatusCode, Uri, Version};
use http_body::{Body, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf, WriteHalf};
use tokio::sync::{oneshot, watch};
use tokio::time::Instant;

use super::{ConnCtx, RespBody};
use crate::error::{ErrorKind, Reject};
use crate::http1::body::Decoder;
use crate::http1::chunked;
use crate::http1::framing::{Faulty, Fields, Framing};
use crate::http1::head::{self, header_spans, parse_length, put_field, tokens};

/// Header slots on the stack; a request with more than the listener's
/// `max_headers` is a `431` (more than this, under a higher `max_headers`, are
/// parsed again with slots on the heap).
const MAX_SLOTS: usize = 128;
/// Read granularity for heads and bodies.
const READ_CHUNK: usize = 16 * 1024;
/// The first read on a connection without a read buffer (an idle one) goes onto
/// the stack, this much at most.
const IDLE_READ: usize = 4096;
/// A new response buffer has this much room (it grows for larger heads and
/// the body data copied next to the head).
const OUT_START: usize = 1024;
/// A response buffer larger than this (grown by a large response) is not kept.
const OUT_KEEP: usize = 16 * 1024;
/// Response data up to this size is copied next to the head (one write); larger
/// frames are written from their own buffer.
const COPY_MAX: usize = 16 * 1024;

pub(super) struct Limits {
    /// `idle_timeout`: waiting for the next request on a kept-alive connection.
    pub idle: Duration,
    /// `request_head_timeout`: from a new connection, or the first byte of a
    /// request head, to the end of that head.
    pub head: Duration,
    /// The read buffer's bound for a head: one that does not fit is a `431`.
    pub max_head: usize,
    pub max_headers: usize,
}

type DynRead = Box<dyn AsyncRead + Send + Unpin>;

/// The connection's read side and the bytes read but not consumed.
pub struct Input {
    io: DynRead,
    buf: BytesMut,
    /// For the body to count what it refuses.
    conn: Arc<ConnCtx>,
}

impl Input {
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        if self.buf.capacity() == 0 {
            return self.poll_fill_released(cx);
        }
        if self.buf.capacity() - self.buf.len() < 1024 {
            self.buf.reserve(READ_CHUNK);
        }
        tokio_util::io::poll_read_buf(Pin::new(&mut self.io), cx, &mut self.buf)
    }

    /// Without a read buffer (a new or idle connection, see `release`) the wait
    /// for bytes holds no memory: they are read onto the stack, and a buffer is
    /// allocated only once some arrived (as NGINX and HAProxy do).
    fn poll_fill_released(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        let mut stack = [std::mem::MaybeUninit::<u8>::uninit(); IDLE_READ];
        let mut rb = ReadBuf::uninit(&mut stack);
        std::task::ready!(Pin::new(&mut self.io).poll_read(cx, &mut rb))?;
        let got = rb.filled();
        if !got.is_empty() {
            self.buf = spare::read_buf();
            self.buf.extend_from_slice(got);
        }
        Poll::Ready(Ok(got.len()))
    }

    /// Between requests: give the read buffer back (to the worker's spares)
    /// unless it holds the start of the next request (pipelining).
    fn release(&mut self) {
        if self.buf.is_empty() {
            spare::put_read_buf(std::mem::take(&mut self.buf));
        }
    }

    /// The connection for hyper or a tunnel, with the bytes read and not
    /// consumed.
    fn hand_over<W>(self, wr: W) -> Handover<W> {
        Handover {
            pre: self.buf.freeze(),
            rd: self.io,
            wr,
        }
    }
}

/// Buffers a connection needs only while it has a request to work on, kept per
/// worker thread between uses: an idle connection holds none, and one whose
/// requests follow each other reuses the same few instead of allocating and
/// freeing 16 KiB of read buffer and a response buffer per request. At most
/// [`crate::spare::KEEP`] of each kind are kept (≤ 1 MiB per worker).
mod spare {
    use bytes::BytesMut;

    use super::{OUT_KEEP, OUT_START, READ_CHUNK};
    use crate::spare::{keep, take, List};

    thread_local! {
        static READ: List<BytesMut> = const { List::new(Vec::new()) };
        static OUT: List<Vec<u8>> = const { List::new(Vec::new()) };
    }

    /// An empty read buffer with room for [`READ_CHUNK`] bytes.
    pub(super) fn read_buf() -> BytesMut {
        take(&READ).unwrap_or_else(|| BytesMut::with_capacity(READ_CHUNK))
    }

    /// Keep `buf` (emptied) for the next connection that reads, when nothing
    /// else shares its memory (a request's head may still) and it did not grow.
    pub(super) fn put_read_buf(mut buf: BytesMut) {
        buf.clear();
        if buf.try_reclaim(READ_CHUNK) && buf.capacity() <= 2 * READ_CHUNK {
            keep(&READ, buf);
        }
    }

    /// An empty response buffer; it goes back to the spares when dropped.
    pub(super) fn out_buf() -> OutBuf {
        OutBuf(take(&OUT).unwrap_or_else(|| Vec::with_capacity(OUT_START)))
    }

    pub(super) struct OutBuf(Vec<u8>);

    impl std::ops::Deref for OutBuf {
        type Target = Vec<u8>;
        fn deref(&self) -> &Vec<u8> {
            &self.0
        }
    }

    impl std::ops::DerefMut for OutBuf {
        fn deref_mut(&mut self) -> &mut Vec<u8> {
            &mut self.0
        }
    }

    impl Drop for OutBuf {
        fn drop(&mut self) {
            // One that a large response grew is given back to the allocator.
            if self.0.capacity() <= OUT_KEEP {
                self.0.clear();
                keep(&OUT, std::mem::take(&mut self.0));
            }
        }
    }

    /// How many read and response buffers are kept.
    #[cfg(test)]
    pub(super) fn kept() -> (usize, usize) {
        (crate::spare::kept(&READ), crate::spare::kept(&OUT))
    }
}

/// A connection this codec hands on, to hyper (HTTP/2) or to an upgrade tunnel:
/// the bytes it read and did not consume (the HTTP/2 preface, or what the client
/// sent past an upgrade request's head) come first.
pub struct Handover<W> {
    pre: Bytes,
    rd: DynRead,
    wr: W,
}

/// The client connection an upgrade switched, as the tunnel gets it.
pub type Upgraded = Handover<Box<dyn AsyncWrite + Send + Unpin>>;

/// The downstream side of an upgrade request (in its extensions, for a route that
/// tunnels the protocol): resolves to the client connection once the upstream's
/// `101` has been written to it. (Shared and taken once, as request extensions
/// must be `Clone`; made only for upgrade requests.)
#[derive(Clone)]
pub struct OnUpgrade(Arc<std::sync::Mutex<Option<oneshot::Receiver<Upgraded>>>>);

impl OnUpgrade {
    /// The switched connection; `None` when it did not switch (the `101` could not
    /// be written, or the client went away).
    pub async fn switched(self) -> Option<Upgraded> {
        let rx = self.0.lock().ok()?.take()?;
        rx.await.ok()
    }
}

/// Put an [`OnUpgrade`] into an upgrade request's extensions; the sender hands
/// over the connection after a `101`.
fn offer_upgrade(ext: &mut http::Extensions) -> oneshot::Sender<Upgraded> {
    let (tx, rx) = oneshot::channel();
    ext.insert(OnUpgrade(Arc::new(std::sync::Mutex::new(Some(rx)))));
    tx
}

impl<W: AsyncWrite + Unpin> AsyncRead for Handover<W> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.pre.is_empty() {
            let n = this.pre.len().min(buf.remaining());
            buf.put_slice(&this.pre[..n]);
            this.pre.advance(n);
            if this.pre.is_empty() {
                // Frees the read buffer the rest came in (it outlives an emptied
                // `Bytes` view: 16 KiB for the connection's life).
                this.pre = Bytes::new();
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.rd).poll_read(cx, buf)
    }
}

impl<W: AsyncWrite + Unpin> AsyncWrite for Handover<W> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, b: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().wr).poll_write(cx, b)
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        b: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().wr).poll_write_vectored(cx, b)
    }
    fn is_write_vectored(&self) -> bool {
        self.wr.is_write_vectored()
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().wr).poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().wr).poll_shutdown(cx)
    }
}

/// A request body framed by `Content-Length` or chunked, read from the
/// connection. It owns the connection's read side while it lives and gives it
/// back (with what it did not read) when it ends or is dropped.
pub struct H1Body {
    input: Option<Input>,
    rest: Decoder,
    back: Option<oneshot::Sender<(Input, Decoder)>>,
}

impl H1Body {
    fn give_back(&mut self) {
        if let (Some(input), Some(tx)) = (self.input.take(), self.back.take()) {
            let _ = tx.send((input, self.rest));
        }
    }

    fn fail(&mut self, e: io::Error) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        self.give_back();
        Poll::Ready(Some(Err(e)))
    }
}

impl Drop for H1Body {
    fn drop(&mut self) {
        self.give_back();
    }
}

impl Body for H1Body {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        let this = self.get_mut();
        loop {
            if this.rest.is_done() {
                this.give_back();
                return Poll::Ready(None);
            }
            let Some(input) = this.input.as_mut() else {
                return Poll::Ready(Some(Err(io::ErrorKind::UnexpectedEof.into())));
            };
            match this.rest.decode(&mut input.buf) {
                Ok(Some(data)) => {
                    if this.rest.is_done() {
                        this.give_back();
                    }
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Ok(None) if this.rest.is_done() => continue,
                Ok(None) => {}
                Err(e) => {
                    // Arrived after the head went upstream: the upstream
                    // connection is aborted, the client gets a 400 or a close.
                    count_refused(&input.conn, Reject::Chunked);
                    tracing::debug!(error = %e, "malformed chunked request body");
                    return this.fail(io::Error::new(io::ErrorKind::InvalidData, e));
                }
            }
            match input.poll_fill(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Ok(0)) => {
                    return this.fail(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "client closed the connection before the end of the request body",
                    ));
                }
                Poll::Ready(Err(e)) => return this.fail(e),
                Poll::Ready(Ok(_)) => {}
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.rest.is_done()
    }

    fn size_hint(&self) -> SizeHint {
        self.rest.size_hint()
    }
}

/// Count a request refused for `reason` by this codec.
fn count_refused(conn: &ConnCtx, reason: Reject) {
    conn.slot.load().listener.stats.count_reject(reason);
}

/// Where the connection's read side is while a request is served.
enum Side {
    Home(Input),
    /// Lent to the request body, which sends it back (with how much of the body it
    /// left unread) when it ends or is dropped.
    Lent(oneshot::Receiver<(Input, Decoder)>),
    /// Back, but part of the body it did not read has not arrived: the connection
    /// closes after the response (as with hyper), lingering on the read side when
    /// it is here (see [`linger`]).
    Spent(Option<Input>),
}

impl Side {
    /// The read side as the body gave it back: what the body left unread is
    /// skipped when it is buffered already (and well-formed); otherwise the
    /// connection is spent.
    fn returned(back: Result<(Input, Decoder), oneshot::error::RecvError>) -> Side {
        match back {
            Ok((mut input, rest)) => match rest.end_in(&input.buf) {
                Some(n) => {
                    input.buf.advance(n);
                    Side::Home(input)
                }
                None => Side::Spent(Some(input)),
            },
            Err(_) => Side::Spent(None),
        }
    }

    /// Whether the client closed the connection. Watched only while nothing of a
    /// next request is buffered (like hyper), so pipelined requests followed by a
    /// half-close are still answered, and at most one read is buffered meanwhile.
    fn poll_closed(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        loop {
            match self {
                Side::Lent(rx) => match Pin::new(rx).poll(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(back) => *self = Side::returned(back),
                },
                Side::Home(input) if input.buf.is_empty() => {
                    return match input.poll_fill(cx) {
                        Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => Poll::Ready(()),
                        Poll::Ready(Ok(_)) | Poll::Pending => Poll::Pending,
                    };
                }
                Side::Home(_) | Side::Spent(_) => return Poll::Pending,
            }
        }
    }

    /// The read side for the next request, once the body gave it back; `Err`
    /// when the connection cannot carry another request, with the read side if
    /// there is one to linger on.
    async fn settle(mut self) -> Result<Input, Option<Input>> {
        if let Side::Lent(rx) = &mut self {
            self = Side::returned(rx.await);
        }
        match self {
            Side::Home(input) => Ok(input),
            Side::Spent(input) => Err(input),
            Side::Lent(_) => Err(None),
        }
    }

    /// On closing: the read side when the client may still be sending (an unread
    /// body, or bytes of a next request), without waiting for a body to give it back.
    fn unread(self) -> Option<Input> {
        match self {
            Side::Home(input) => (!input.buf.is_empty()).then_some(input),
            Side::Spent(input) => input,
            Side::Lent(mut rx) => match rx.try_recv() {
                Ok((input, rest)) if !rest.is_done() || !input.buf.is_empty() => Some(input),
                _ => None,
            },
        }
    }
}

/// Closing a connection the client is still sending on (the rest of a body the
/// response did not need) would reset it, and the client could lose the response
/// it has not read yet. Like NGINX's lingering close: after the write side is shut
/// down, what arrives is read and thrown away until the client closes, nothing
/// comes for [`LINGER_IDLE`], or [`LINGER_TIME`] has passed.
async fn linger(mut input: Input) {
    let end = Instant::now() + LINGER_TIME;
    loop {
        input.buf.clear();
        let until = end.min(Instant::now() + LINGER_IDLE);
        match tokio::time::timeout_at(until, poll_fn(|cx| input.poll_fill(cx))).await {
            Ok(Ok(n)) if n > 0 => {}
            _ => return,
        }
    }
}

const LINGER_TIME: Duration = Duration::from_secs(30);
const LINGER_IDLE: Duration = Duration::from_secs(5);

/// A parsed request head this codec serves.
struct Head {
    parts: http::request::Parts,
    /// How the body is framed, or why the framing is refused.
    body: Result<Decoder, ErrorKind>,
    /// The client asked to close after the response (`Connection: close`, or
    /// HTTP/1.0 without `keep-alive`).
    close: bool,
    /// `Expect: 100-continue`.
    expect_continue: bool,
    /// The request carries `Upgrade`: a route that tunnels the protocol may
    /// switch the connection (see [`OnUpgrade`]).
    upgrade: bool,
}

// Returned once per request and matched at once: boxing the head would cost an
// allocation per request for nothing.
#[allow(clippy::large_enum_variant)]
enum Parsed {
    Request(Head),
    Partial,
    /// Refused before anything is forwarded: answered here, then the connection
    /// closes (the bytes that follow cannot be trusted to start a request).
    Refused(ErrorKind),
    /// The HTTP/2 connection preface: hyper serves HTTP/2. The bytes stay in `buf`.
    Http2,
}

/// What [`parse`] answers when there is no request head to build.
enum NoHead {
    Partial,
    Refused(ErrorKind),
    Http2,
}

impl From<NoHead> for Parsed {
    fn from(n: NoHead) -> Parsed {
        match n {
            NoHead::Partial => Parsed::Partial,
            NoHead::Refused(kind) => Parsed::Refused(kind),
            NoHead::Http2 => Parsed::Http2,
        }
    }
}

/// The HTTP/2 connection preface (RFC 9113 section 3.4).
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Parse one request head from the front of `buf`.
fn parse(buf: &mut BytesMut, spans: &mut Vec<[u32; 4]>, max_headers: usize) -> Parsed {
    let mut slots = [const { MaybeUninit::<httparse::Header>::uninit() }; MAX_SLOTS];
    let line = match scan(buf, spans, &mut slots[..max_headers.min(MAX_SLOTS)]) {
        Err(NoHead::Refused(ErrorKind::HeadersTooLarge)) if max_headers > MAX_SLOTS => {
            // More lines than the stack holds, under a `max_headers` above it (rare).
            let mut slots = Vec::new();
            slots.resize_with(max_headers, MaybeUninit::uninit);
            scan(buf, spans, &mut slots)
        }
        line => line,
    };
    let (n, method, path, version) = match line {
        Ok(line) => line,
        Err(no) => return no.into(),
    };
    let raw = buf.split_to(n).freeze();
    match build(&raw, method, version, path, spans) {
        Ok(head) => Parsed::Request(head),
        Err(kind) => Parsed::Refused(kind),
    }
}

/// The request line and header spans of the head at the front of `buf`, with room
/// for `slots.len()` header lines: the head's length, method, target (offset and
/// length) and version; or what [`parse`] answers without a request.
fn scan<'b>(
    buf: &'b [u8],
    spans: &mut Vec<[u32; 4]>,
    slots: &mut [MaybeUninit<httparse::Header<'b>>],
) -> Result<(usize, Method, (u32, u32), Version), NoHead> {
    let mut req = httparse::Request::new(&mut []);
    let n = match httparse::ParserConfig::default()
        .parse_request_with_uninit_headers(&mut req, buf, slots)
    {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Err(NoHead::Partial),
        Err(e) => return Err(unparsed(buf, e)),
    };
    let malformed = NoHead::Refused(ErrorKind::BadRequest(Reject::Malformed));
    let (Some(method), Some(path), Some(minor)) = (req.method, req.path, req.version) else {
        return Err(malformed);
    };
    // `http::Uri` would drop a `#fragment` silently: refused (RFC 9112 section
    // 3.2 has no fragment in a request target).
    if path.contains('#') {
        return Err(NoHead::Refused(ErrorKind::BadRequest(Reject::Fragment)));
    }
    let Ok(method) = Method::from_bytes(method.as_bytes()) else {
        return Err(malformed);
    };
    // Offsets (the head is bounded by `max_head`), so the head can be frozen and
    // its pieces shared instead of copied.
    let path = (
        (path.as_ptr() as usize).wrapping_sub(buf.as_ptr() as usize) as u32,
        path.len() as u32,
    );
    header_spans(buf, req.headers, spans);
    let version = if minor == 0 {
        Version::HTTP_10
    } else {
        Version::HTTP_11
    };
    Ok((n, method, path, version))
}

/// A head `httparse` refused: the start (or all) of the HTTP/2 preface, or a
/// `400` (`431` for more header lines than `max_headers`), as hyper answered them.
fn unparsed(buf: &[u8], e: httparse::Error) -> NoHead {
    let n = buf.len().min(H2_PREFACE.len());
    if buf[..n] == H2_PREFACE[..n] {
        return if n < H2_PREFACE.len() {
            NoHead::Partial
        } else {
            NoHead::Http2
        };
    }
    match e {
        httparse::Error::TooManyHeaders => NoHead::Refused(ErrorKind::HeadersTooLarge),
        _ => NoHead::Refused(ErrorKind::BadRequest(Reject::Malformed)),
    }
}

/// The request target's form fits the method (RFC 9112 section 3.2):
/// authority-form (`host:port`) only, and always, for `CONNECT`. Origin-form
/// (`/path`), absolute-form (`http://host/path`) and `*` (for `OPTIONS`, checked
/// by the target phase) are left to `target::resolve`, like the authority rules.
fn form_fits(method: &Method, uri: &Uri) -> bool {
    let authority_form = uri.scheme().is_none() && uri.authority().is_some();
    authority_form == (method == Method::CONNECT)
}

/// A request whose framing two readers could take differently is refused (RFC
/// 9112 sections 6.1 and 6.3; NGINX refuses them too): `400` for request
/// smuggling's signature (both headers), an invalid length, `chunked` missing
/// from the end or repeated, or any transfer coding on HTTP/1.0; `501` for a
/// coding before `chunked` that the proxy would have to decode.
impl From<Faulty> for ErrorKind {
    fn from(f: Faulty) -> ErrorKind {
        match f {
            Faulty::UnknownCoding => ErrorKind::UnknownCoding,
            _ => ErrorKind::BadRequest(Reject::Framing),
        }
    }
}

impl From<head::Invalid> for ErrorKind {
    fn from(_: head::Invalid) -> ErrorKind {
        ErrorKind::BadRequest(Reject::Malformed)
    }
}

fn build(
    raw: &Bytes,
    method: Method,
    version: Version,
    path: (u32, u32),
    spans: &[[u32; 4]],
) -> Result<Head, ErrorKind> {
    let malformed = ErrorKind::BadRequest(Reject::Malformed);
    let http10 = version == Version::HTTP_10;
    let (ps, pl) = (path.0 as usize, path.1 as usize);
    let uri = Uri::from_maybe_shared(raw.slice(ps..ps + pl)).map_err(|_| {
        // `http::Uri` holds at most 65,534 bytes (hyper's `414` too).
        if pl >= usize::from(u16::MAX) {
            ErrorKind::UriTooLong
        } else {
            malformed
        }
    })?;
    if (raw[ps] != b'/' || method == Method::CONNECT) && !form_fits(&method, &uri) {
        return Err(ErrorKind::BadRequest(Reject::Target));
    }
    // The map (a spare one of this worker's, see `head::recycle`) has room for
    // the headers the proxy adds (x-request-id, x-forwarded-*): growing the map
    // rehashes it.
    let (mut parts, ()) = Request::new(()).into_parts();
    parts.headers = head::new_map(spans.len() + 4);
    let mut framing = Fields::default();
    let (mut expect_continue, mut upgrade) = (false, false);
    head::into_map(raw, spans, &mut parts.headers, |name, value| {
        if name == header::CONTENT_LENGTH {
            // A repeat with the same value is kept once.
            return Ok(framing.content_length(value));
        } else if name == header::TRANSFER_ENCODING {
            framing.transfer_encoding(value);
        } else if name == header::EXPECT {
            // Answered here (hop-by-hop in effect: not forwarded, like NGINX and
            // Envoy); another expectation is a `417` (RFC 9110 section 10.1.1).
            // HTTP/1.0 clients' expectations are ignored (same section).
            if !http10 && !value.eq_ignore_ascii_case(b"100-continue") {
                return Err(ErrorKind::ExpectationFailed);
            }
            expect_continue = !http10;
            return Ok(false);
        } else if name == header::UPGRADE {
            upgrade = true;
        } else if name == header::CONNECTION {
            framing.connection(value);
        }
        Ok(true)
    })?;
    parts.method = method;
    parts.uri = uri;
    parts.version = version;
    Ok(Head {
        parts,
        body: framing
            .request(version)
            .map(Decoder::new)
            .map_err(ErrorKind::from),
        // HTTP/1.0 closes unless asked not to.
        close: !framing.persistent(version),
        expect_continue,
        upgrade,
    })
}

enum Wake {
    Read(io::Result<usize>),
    Drain,
    Timer,
}

/// Serve the connection until it closes or switches to an upgrade tunnel (`None`),
/// or until it turns out to be HTTP/2 (`Some`: hand it to hyper).
///
/// One function on purpose (issue 14 asks for phases or a reason): it is the
/// keep-alive fast path, and each phase split out as its own future (the wait
/// for a head, dispatch, the exchange) moved the request head, the request and
/// the response between futures and made the request's and the writer's state
/// one box with no overlap between them: +160 instructions per request under
/// callgrind (benches/load/callgrind.sh, direct shape) for the same work. The
/// phases are marked by the comments below: a complete head; [`dispatch`] (a
/// plain function: its framing checked, the read side lent to the body, the
/// request's future made in its box); the request through the proxy; the
/// response (boxed, see `write_response`); keep-alive or close.
pub(super) async fn serve<IO>(
    io: IO,
    conn: &Arc<ConnCtx>,
    lim: &Limits,
    drain: &mut watch::Receiver<bool>,
    opened: Instant,
    drain_timeout: Duration,
) -> Option<Handover<WriteHalf<IO>>>
where
    IO: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let (rd, mut wr) = tokio::io::split(io);
    let mut input = Some(Input {
        io: Box::new(rd),
        buf: BytesMut::new(),
        conn: conn.clone(),
    });
    let mut spans = Vec::new();
    let mut served = 0u64;
    let grace = |now: Instant| {
        (opened + super::YOUNG_CONNECTION_GRACE)
            .max(now + super::KEEPALIVE_GRACE.min(drain_timeout / 2))
    };
    let mut draining = *drain.borrow();
    // One timer for the connection: moved forward lazily (when it fires early)
    // rather than re-armed per request. A new connection has `request_head_timeout`
    // for its first head (NGINX's `client_header_timeout`).
    let mut deadline = opened + lim.head.min(lim.idle);
    // Set while a partial head is waiting for its end: then the deadline is a
    // request-head deadline, answered with a 408.
    let mut head_deadline = Some(deadline);
    if draining {
        conn.draining.store(true, Ordering::Release);
        deadline = deadline.min(grace(Instant::now()));
    }
    let mut timer = pin!(tokio::time::sleep_until(deadline));
    // The drain signal: `drained` registers this task once; after that only the
    // probe's version check (an atomic load, no lock) runs per request.
    let probe = drain.clone();
    let drain_changed = move || probe.has_changed().unwrap_or(true);
    let mut registered = false;
    let mut drained = pin!(drain.changed());
    loop {
        let inp = input.as_mut()?;
        // A complete head, from what was read already (pipelining) or the socket.
        let head = loop {
            if !inp.buf.is_empty() {
                // The match ends before any await: the parse result (a whole
                // head) is not kept in the connection's future.
                let refused = match parse(&mut inp.buf, &mut spans, lim.max_headers) {
                    Parsed::Request(h) => break h,
                    Parsed::Partial if inp.buf.len() < lim.max_head => {
                        // The head started and must end within `request_head_timeout`
                        // (the clock is read only for heads split across reads).
                        if head_deadline.is_none() {
                            let d = Instant::now() + lim.head;
                            head_deadline = Some(d);
                            if d < deadline {
                                deadline = d;
                                timer.as_mut().reset(deadline);
                            }
                        }
                        None
                    }
                    parsed => Some(refusal(parsed, served == 0)),
                };
                if let Some(kind) = refused {
                    let (inp, first) = (input.take()?, served == 0);
                    let Some(kind) = kind else {
                        return Some(inp.hand_over(wr));
                    };
                    Box::pin(refuse_head(&mut wr, inp, kind, first, lim.idle)).await;
                    return None;
                }
            }
            let wake = poll_fn(|cx| {
                if let Poll::Ready(r) = inp.poll_fill(cx) {
                    return Poll::Ready(Wake::Read(r));
                }
                if !draining && (!registered || drain_changed()) {
                    registered = true;
                    if drained.as_mut().poll(cx).is_ready() {
                        return Poll::Ready(Wake::Drain);
                    }
                }
                if timer.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Wake::Timer);
                }
                Poll::Pending
            })
            .await;
            match wake {
                Wake::Read(Ok(0)) | Wake::Read(Err(_)) => return None,
                Wake::Read(Ok(_)) => {}
                Wake::Drain => {
                    draining = true;
                    conn.draining.store(true, Ordering::Release);
                    deadline = deadline.min(grace(Instant::now()));
                    timer.as_mut().reset(deadline);
                }
                Wake::Timer => {
                    let now = Instant::now();
                    if now >= deadline {
                        if !inp.buf.is_empty() && head_deadline.is_some_and(|d| now >= d) {
                            Box::pin(head_timed_out(&mut wr, conn, lim, opened)).await;
                            return None;
                        }
                        tracing::debug!("closing an idle downstream connection");
                        return None;
                    }
                    timer.as_mut().reset(deadline);
                }
            }
        };

        // The request to the proxy, its read side lent to its body or kept here.
        let Dispatched {
            mut call,
            mut side,
            switch,
            connect,
            mut asked,
            mut continue_due,
        } = match dispatch(head, &mut input, conn) {
            Ok(d) => d,
            Err(kind) => {
                let inp = input.take()?;
                Box::pin(refuse(&mut wr, inp, kind, lim.idle)).await;
                return None;
            }
        };
        // While the request is served, the client closing cancels it (logged `DC`),
        // as with hyper. The response and its status come out of the match (so no
        // borrowed response stays in the connection's future).
        let (status, rsp) = loop {
            let due = continue_due;
            match poll_fn(|cx| {
                if let Poll::Ready(r) = call.as_mut().poll(cx) {
                    return Poll::Ready(Some(Some(r)));
                }
                if due {
                    return Poll::Ready(Some(None));
                }
                side.poll_closed(cx).map(|()| None)
            })
            .await?
            {
                Some(rsp) => break (rsp.status(), rsp),
                None => continue_due = false,
            }
            Box::pin(send_continue(&mut wr, lim.idle)).await.ok()?;
        };
        drop(call);
        served += 1;
        if !draining && drain_changed() {
            // Began while the request was in flight: this response closes.
            draining = true;
            conn.draining.store(true, Ordering::Release);
        }
        if (switch.is_some() && status == StatusCode::SWITCHING_PROTOCOLS)
            || (connect && status.is_success())
        {
            Box::pin(switch_protocols(wr, rsp, side, switch, lim.idle)).await;
            return None;
        }
        asked.close |= draining;
        // Boxed like the request's future: allocated only while a response is written.
        let written =
            super::in_box(|| write_response(&mut wr, rsp, asked, &mut side, lim.idle)).await;
        let keep = matches!(written, Ok(true));
        let unread = if keep && !draining {
            match side.settle().await {
                Ok(mut inp) => {
                    // Idle keep-alive connections hold no buffers.
                    inp.release();
                    input = Some(inp);
                    deadline = Instant::now() + lim.idle;
                    head_deadline = None;
                    continue;
                }
                Err(unread) => unread,
            }
        } else {
            side.unread()
        };
        // After a failed or stalled write the client gets no orderly close (on TLS
        // that would wait on it again).
        if written.is_ok() {
            Box::pin(close_after(&mut wr, unread, lim.idle)).await;
        }
        return None;
    }
}

/// The orderly close after a connection's last response: the write side shut
/// down, then a linger on the read side when the client may still be sending.
/// (Boxed by `serve`: once per connection, and its state is not part of every
/// connection's future.)
async fn close_after<W: AsyncWrite + Unpin>(wr: &mut W, unread: Option<Input>, stall: Duration) {
    let _ = bounded(stall, |cx| Pin::new(&mut *wr).poll_shutdown(cx)).await;
    if let Some(inp) = unread {
        linger(inp).await;
    }
}

/// A request handed to the proxy by [`dispatch`].
struct Dispatched<F> {
    /// The proxy's future for it. Boxed: the connection's own future stays small
    /// while it waits idle; the request's (large) state is allocated only while it
    /// is served.
    call: Pin<Box<F>>,
    /// Where the connection's read side is meanwhile.
    side: Side,
    /// An upgrade request's hand-off of the connection, after a `101`.
    switch: Option<oneshot::Sender<Upgraded>>,
    /// A `CONNECT`: a `2xx` answer ends the connection after its head.
    connect: bool,
    asked: Asked,
    /// The client waits for `100 Continue` before it sends the body.
    continue_due: bool,
}

/// A complete head to the proxy: its body's framing checked as far as it is
/// buffered (nothing of a malformed request is forwarded: `Err` is the refusal),
/// the read side lent to the body or kept, the request's future made.
///
/// A function of its own so that the head is never borrowed in `serve`: a local
/// that was ever borrowed keeps its slot in the connection's future across every
/// later await (the request head there cost 224 bytes per connection).
fn dispatch(
    head: Head,
    input: &mut Option<Input>,
    conn: &Arc<ConnCtx>,
) -> Result<Dispatched<impl Future<Output = Response<RespBody>> + Send + use<>>, ErrorKind> {
    let Head {
        mut parts,
        body: framing,
        close,
        expect_continue,
        upgrade,
    } = head;
    let rest = framing.and_then(|r| checked(r, inp_buf(input)))?;
    let connect = parts.method == Method::CONNECT;
    let asked = Asked {
        is_head: parts.method == Method::HEAD,
        close: close || connect,
        http10: parts.version == Version::HTTP_10,
    };
    // An upgrade without a body may switch the connection: a route that tunnels
    // the protocol takes `OnUpgrade`, and the client connection follows the 101.
    let switch = (upgrade && rest.is_done()).then(|| offer_upgrade(&mut parts.extensions));
    // A client that waits for `100 Continue` before its body gets it once the
    // request goes on past the proxy's own checks and replies (the handler no
    // longer answers at once), like Envoy; a local reply (a 403) goes out
    // without it. A client that sent body bytes anyway waits for nothing.
    let continue_due = expect_continue && !rest.is_done() && inp_buf(input).is_empty();
    let Some(inp) = input.take() else {
        return Err(ErrorKind::Internal);
    };
    let (body, side) = if !rest.is_done() {
        let (tx, rx) = oneshot::channel();
        let body = H1Body {
            input: Some(inp),
            rest,
            back: Some(tx),
        };
        (super::DownBody::H1(body), Side::Lent(rx))
    } else {
        (super::DownBody::Empty, Side::Home(inp))
    };
    let conn = conn.clone();
    let call = super::in_box(|| super::proxy::handle(Request::from_parts(parts, body), conn));
    Ok(Dispatched {
        call,
        side,
        switch,
        connect,
        asked,
        continue_due,
    })
}

/// `100 Continue`, for a client that waits for it before sending its body (rare:
/// boxed, so its write state is not part of every connection's future).
async fn send_continue<W: AsyncWrite + Unpin>(wr: &mut W, stall: Duration) -> io::Result<()> {
    send_all(wr, b"HTTP/1.1 100 Continue\r\n\r\n", stall).await?;
    send_flush(wr, stall).await
}

/// `rest` when what of the body is buffered is well-formed.
fn checked(rest: Decoder, buf: &[u8]) -> Result<Decoder, ErrorKind> {
    match rest.check(buf) {
        Err(_) => Err(ErrorKind::BadRequest(Reject::Chunked)),
        Ok(()) => Ok(rest),
    }
}

fn inp_buf(input: &Option<Input>) -> &[u8] {
    input.as_ref().map_or(&[], |i| &i.buf[..])
}

/// What a head that is no request gets: `None` for the HTTP/2 preface opening
/// the connection (hyper's), else the refusal. (Taking `parsed` by value keeps it
/// out of the connection's future across the refusal's awaits.)
fn refusal(parsed: Parsed, first: bool) -> Option<ErrorKind> {
    match parsed {
        Parsed::Http2 if first => None,
        Parsed::Refused(kind) => Some(kind),
        Parsed::Partial => Some(ErrorKind::HeadersTooLarge),
        Parsed::Request(_) | Parsed::Http2 => Some(ErrorKind::BadRequest(Reject::Malformed)),
    }
}

/// A head refused before it became a request (see [`unparsed`]): the bytes read
/// are dropped, and a PROXY protocol header that opened the connection is counted
/// (`attache_proxy_protocol_total{outcome="unexpected"}`) before the `400`.
async fn refuse_head<W: AsyncWrite + Unpin>(
    wr: &mut W,
    mut input: Input,
    kind: ErrorKind,
    first: bool,
    stall: Duration,
) {
    if first && crate::proxy_protocol::looks_like_header(&input.buf) {
        if let Some(c) = &input.conn.slot.load().listener.unexpected_proxy_header {
            c.inc();
        }
    }
    input.buf.clear();
    refuse(wr, input, kind, stall).await;
}

/// Answer a request this codec refuses before it is dispatched (`400`, `417`,
/// `431`, `501`: see [`Parsed::Refused`]), counted and logged as a `DPE` reply
/// with its reason, then close the connection (lingering, as the client may
/// still be sending the body). Nothing of it goes upstream.
async fn refuse<W: AsyncWrite + Unpin>(wr: &mut W, input: Input, kind: ErrorKind, stall: Duration) {
    let (rsp, _) = super::respond::local_reply(kind, false, None);
    let reason = kind.reject_reason().unwrap_or(Reject::Malformed);
    super::record_early_reply(&input.conn, rsp.status().as_u16(), reason, Instant::now());
    tracing::debug!(reason = reason.as_str(), "request refused before dispatch");
    let mut rsp = rsp.map(RespBody::full);
    rsp.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    let mut side = Side::Spent(None);
    let asked = Asked {
        is_head: false,
        close: true,
        http10: false,
    };
    if write_response(wr, rsp, asked, &mut side, stall)
        .await
        .is_ok()
    {
        let _ = bounded(stall, |cx| Pin::new(&mut *wr).poll_shutdown(cx)).await;
        linger(input).await;
    }
}

/// A response after which the connection is no longer HTTP/1: the upstream's
/// `101` to an upgrade a route tunnels (`switch`: the connection then goes to the
/// tunnel, with what the client sent past its request head), or a `2xx` to a
/// `CONNECT`. attache opens no `CONNECT` tunnels: that answer goes out without a
/// body or length (RFC 9110 section 9.3.6) and the connection closes, as under
/// hyper before. Only the head is written; the body is dropped (which completes
/// the stream's log line).
async fn switch_protocols<IO: AsyncWrite + Unpin + Send + 'static>(
    mut wr: WriteHalf<IO>,
    rsp: Response<RespBody>,
    side: Side,
    switch: Option<oneshot::Sender<Upgraded>>,
    stall: Duration,
) {
    let (parts, body) = rsp.into_parts();
    drop(body);
    let mut out = Vec::with_capacity(OUT_START);
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(parts.status.as_str().as_bytes());
    out.push(b' ');
    let reason = parts.status.canonical_reason().unwrap_or("");
    out.extend_from_slice(reason.as_bytes());
    out.extend_from_slice(b"\r\n");
    let framing = [header::CONTENT_LENGTH, header::TRANSFER_ENCODING];
    for (k, v) in parts.headers.iter().filter(|(k, _)| !framing.contains(k)) {
        put_field(&mut out, k.as_str().as_bytes(), v.as_bytes());
    }
    if !parts.headers.contains_key(header::DATE) {
        put_date(&mut out);
    }
    if switch.is_none() && !parts.headers.contains_key(header::CONNECTION) {
        out.extend_from_slice(b"connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    if send_all(&mut wr, &out, stall).await.is_err() || send_flush(&mut wr, stall).await.is_err() {
        return;
    }
    match (switch, side) {
        (Some(tx), Side::Home(input)) => {
            let wr: Box<dyn AsyncWrite + Send + Unpin> = Box::new(wr);
            // The tunnel dropped its end: the connection closes with `wr`.
            let _ = tx.send(input.hand_over(wr));
        }
        _ => {
            let _ = bounded(stall, |cx| Pin::new(&mut wr).poll_shutdown(cx)).await;
        }
    }
}

/// `request_head_timeout` passed with part of a head read: answer `408` and close
/// (HAProxy's `timeout http-request` does the same; NGINX closes without a reply),
/// counted as a rejection (`head_timeout`). A connection that sent nothing is
/// closed without a reply (an idle or speculative connection is not a request).
async fn head_timed_out<W: AsyncWrite + Unpin>(
    wr: &mut W,
    conn: &ConnCtx,
    lim: &Limits,
    opened: Instant,
) {
    tracing::debug!("request head not received in time; answering 408");
    const BODY: &[u8] = b"request timeout\n";
    let mut out = Vec::with_capacity(OUT_START);
    out.extend_from_slice(b"HTTP/1.1 408 Request Timeout\r\ncontent-type: text/plain\r\n");
    put_length(&mut out, BODY.len() as u64);
    put_date(&mut out);
    out.extend_from_slice(b"connection: close\r\n\r\n");
    out.extend_from_slice(BODY);
    super::record_early_reply(conn, 408, crate::error::Reject::HeadTimeout, opened);
    if send_all(wr, &out, lim.idle).await.is_ok() && send_flush(wr, lim.idle).await.is_ok() {
        let _ = bounded(lim.idle, |cx| Pin::new(&mut *wr).poll_shutdown(cx)).await;
    }
}

enum Next<F> {
    Frame(F),
    /// The body has to wait: write what is buffered first.
    Flush,
    /// The client closed the connection.
    Gone,
}

/// What of the request shapes its response on the wire.
#[derive(Clone, Copy)]
struct Asked {
    is_head: bool,
    /// The connection closes after this response.
    close: bool,
    /// An HTTP/1.0 client: no chunked framing (a body of unknown length is
    /// delimited by closing), and keep-alive is said explicitly.
    http10: bool,
}

/// Write a response: its head, then its body. `Ok(true)`: the connection can
/// carry another request.
async fn write_response<W: AsyncWrite + Unpin>(
    wr: &mut W,
    rsp: Response<RespBody>,
    asked: Asked,
    side: &mut Side,
    stall: Duration,
) -> io::Result<bool> {
    let (mut parts, mut body) = rsp.into_parts();
    let mut out = spare::out_buf();
    let (framing, close) = put_head(&mut out, &mut parts, &mut body, asked);
    let http::response::Parts {
        headers,
        extensions,
        ..
    } = parts;
    drop(extensions);
    // Written out: the map goes back to the worker's spares.
    head::recycle(headers);
    if let Framing::None = framing {
        drop(body);
        send_all(wr, &out, stall).await?;
        send_flush(wr, stall).await?;
        return Ok(!close);
    }
    let whole = pin!(write_body(wr, &mut out, body, framing, side, stall));
    Ok(whole.await? && !close)
}

/// The response head into `out`, and how its body is framed: by the status, the
/// request method, the body's exact length (or the declared one) and what the
/// client speaks. The second value: the connection closes after this response.
fn put_head(
    out: &mut Vec<u8>,
    parts: &mut http::response::Parts,
    body: &mut RespBody,
    asked: Asked,
) -> (Framing, bool) {
    let is_head = asked.is_head;
    let mut close = asked.close;
    if parts.status.is_informational() {
        // A final response cannot be informational (only a filter could produce
        // one; a tunnelled `101` never comes here). Like hyper: an empty 500, and
        // the connection closes.
        parts.status = http::StatusCode::INTERNAL_SERVER_ERROR;
        parts.headers.clear();
        *body = RespBody::full(Bytes::new());
        close = true;
    }
    let status = parts.status;
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    let (mut has_date, mut says_close) = (false, false);
    let mut declared = None;
    for (k, v) in parts.headers.iter() {
        if k == header::CONTENT_LENGTH {
            // Written below, from the framing.
            declared = parse_length(v.as_bytes());
            continue;
        }
        if k == header::TRANSFER_ENCODING {
            continue;
        }
        if k == header::CONNECTION {
            if tokens(v.as_bytes()).any(|t| t.eq_ignore_ascii_case(b"close")) {
                close = true;
                says_close = true;
            }
        } else if k == header::DATE {
            has_date = true;
        }
        put_field(out, k.as_str().as_bytes(), v.as_bytes());
    }
    let code = status.as_u16();
    let exact = body.size_hint().exact();
    let framing = if code < 200 || code == 204 {
        Framing::None
    } else if code == 304 || is_head {
        // No body, but the length the representation would have.
        // (A HEAD response's empty upstream body says nothing about the length.)
        if let Some(n) = declared.or(exact.filter(|&n| is_head && n > 0)) {
            put_length(out, n);
        }
        Framing::None
    } else if let Some(n) = exact.or(declared) {
        put_length(out, n);
        Framing::Length(n)
    } else if asked.http10 {
        close = true;
        Framing::Close
    } else {
        out.extend_from_slice(b"transfer-encoding: chunked\r\n");
        Framing::Chunked
    };
    if !has_date {
        put_date(out);
    }
    if close && !says_close {
        out.extend_from_slice(b"connection: close\r\n");
    } else if !close && asked.http10 {
        out.extend_from_slice(b"connection: keep-alive\r\n");
    }
    out.extend_from_slice(b"\r\n");
    (framing, close)
}

/// The body after the head in `out`: frames that are ready join what is
/// buffered, which goes out when the body has to wait. `Ok(false)`: the body
/// was cut (the upstream broke, the client left, or it did not match its
/// length), so the connection must close.
async fn write_body<W: AsyncWrite + Unpin>(
    wr: &mut W,
    out: &mut Vec<u8>,
    mut body: RespBody,
    framing: Framing,
    side: &mut Side,
    stall: Duration,
) -> io::Result<bool> {
    let chunked = matches!(framing, Framing::Chunked);
    let mut left = match framing {
        Framing::Length(n) => n,
        _ => u64::MAX,
    };
    loop {
        // While the body waits, the client closing ends the response (and drops
        // the upstream's side of it) at once, not at the next failed write.
        let waiting = !out.is_empty();
        let next = poll_fn(|cx| match Pin::new(&mut body).poll_frame(cx) {
            Poll::Pending if waiting => Poll::Ready(Next::Flush),
            Poll::Pending => side.poll_closed(cx).map(|()| Next::Gone),
            Poll::Ready(f) => Poll::Ready(Next::Frame(f)),
        })
        .await;
        let next = match next {
            Next::Frame(f) => f,
            Next::Flush => {
                send_all(wr, out, stall).await?;
                // A TLS stream may hold the records until flushed.
                send_flush(wr, stall).await?;
                out.clear();
                continue;
            }
            Next::Gone => return Ok(false),
        };
        match next {
            None => break,
            Some(Err(_)) => {
                // The upstream broke mid-body: send what came, then close so the
                // client sees a truncated message, not a complete one.
                send_all(wr, out, stall).await?;
                send_flush(wr, stall).await?;
                return Ok(false);
            }
            Some(Ok(frame)) => {
                // Trailers are not sent over HTTP/1.1.
                let Ok(mut data) = frame.into_data() else {
                    continue;
                };
                if data.is_empty() {
                    continue;
                }
                let mut overlong = false;
                if chunked {
                    put_chunk_size(out, data.len());
                } else {
                    if data.len() as u64 > left {
                        data.truncate(left as usize);
                        overlong = true;
                    }
                    left -= data.len() as u64;
                }
                if data.len() <= COPY_MAX {
                    out.extend_from_slice(&data);
                } else {
                    write_both(wr, out, &data, stall).await?;
                    // A TLS stream may hold what it accepted until flushed; the
                    // body may wait next with nothing left in `out` to flush.
                    send_flush(wr, stall).await?;
                    out.clear();
                }
                if chunked {
                    out.extend_from_slice(b"\r\n");
                }
                if overlong {
                    // More than its length: send what fits, then close instead of
                    // reading the rest.
                    send_all(wr, out, stall).await?;
                    send_flush(wr, stall).await?;
                    return Ok(false);
                }
                if out.len() >= 4 * COPY_MAX {
                    send_all(wr, out, stall).await?;
                    send_flush(wr, stall).await?;
                    out.clear();
                }
            }
        }
    }
    // Shorter than its length: the client must not wait for the rest.
    let complete = !matches!(framing, Framing::Length(_)) || left == 0;
    if chunked {
        out.extend_from_slice(b"0\r\n\r\n");
    }
    drop(body);
    send_all(wr, out, stall).await?;
    send_flush(wr, stall).await?;
    Ok(complete)
}

/// Run one write-side operation on the client connection, allowing the client to
/// hold it up (by not reading) for at most `stall`. The common case, where the
/// socket takes the bytes at once, sets no timer.
async fn bounded<T>(
    stall: Duration,
    mut op: impl FnMut(&mut Context<'_>) -> Poll<io::Result<T>>,
) -> io::Result<T> {
    if let Poll::Ready(r) = poll_fn(|cx| Poll::Ready(op(cx))).await {
        return r;
    }
    match tokio::time::timeout(stall, poll_fn(|cx| op(cx))).await {
        Ok(r) => r,
        Err(_) => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "the client stopped reading the response",
        )),
    }
}

async fn send_all<W: AsyncWrite + Unpin>(
    wr: &mut W,
    buf: &[u8],
    stall: Duration,
) -> io::Result<()> {
    let mut buf = buf;
    while !buf.is_empty() {
        let n = bounded(stall, |cx| Pin::new(&mut *wr).poll_write(cx, buf)).await?;
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        buf = &buf[n..];
    }
    Ok(())
}

async fn send_flush<W: AsyncWrite + Unpin>(wr: &mut W, stall: Duration) -> io::Result<()> {
    bounded(stall, |cx| Pin::new(&mut *wr).poll_flush(cx)).await
}

/// Write `a` then `b`, vectored.
async fn write_both<W: AsyncWrite + Unpin>(
    wr: &mut W,
    a: &[u8],
    b: &[u8],
    stall: Duration,
) -> io::Result<()> {
    let (mut a, mut b) = (a, b);
    while !a.is_empty() {
        let n = bounded(stall, |cx| {
            Pin::new(&mut *wr).poll_write_vectored(cx, &[io::IoSlice::new(a), io::IoSlice::new(b)])
        })
        .await?;
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        let from_a = n.min(a.len());
        a = &a[from_a..];
        b = &b[n - from_a..];
    }
    send_all(wr, b, stall).await
}

fn put_length(out: &mut Vec<u8>, n: u64) {
    let mut b = itoa::Buffer::new();
    put_field(out, b"content-length", b.format(n).as_bytes());
}

fn put_chunk_size(out: &mut Vec<u8>, n: usize) {
    out.extend_from_slice(chunked::size_line_for(n).as_bytes());
}

/// `date: <IMF-fixdate>`, formatted once a second per thread.
fn put_date(out: &mut Vec<u8>) {
    use std::cell::RefCell;
    use std::time::{SystemTime, UNIX_EPOCH};
    thread_local! {
        static DATE: RefCell<(u64, String)> = const { RefCell::new((u64::MAX, String::new())) };
    }
    let now = SystemTime::now();
    let secs = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    DATE.with(|d| {
        let mut d = d.borrow_mut();
        if d.0 != secs {
            *d = (secs, httpdate::fmt_http_date(now));
        }
        put_field(out, b"date", d.1.as_bytes());
    });
}

/// What [`parse`] made of a buffer, for the fuzz harness (see `crate::fuzz`).
#[cfg(any(test, feature = "fuzzing"))]
pub(crate) enum FuzzParsed {
    /// Taken: the head, how its body is framed, and `Connection: close`.
    Request(Box<http::request::Parts>, crate::fuzz::RequestBody, bool),
    /// More bytes are needed.
    Partial,
    /// Answered here with this status, and the connection closed.
    Refused(u16),
    /// The HTTP/2 preface: hyper's.
    Http2,
}

/// The fuzz harness's entry: [`parse`] on `buf`, which keeps what [`parse`]
/// leaves in it.
#[cfg(any(test, feature = "fuzzing"))]
pub(crate) fn parse_for_fuzzing(buf: &mut BytesMut, max_headers: usize) -> FuzzParsed {
    use crate::fuzz::RequestBody;
    match parse(buf, &mut Vec::new(), max_headers) {
        Parsed::Request(h) => {
            let body = match h.body {
                Ok(Decoder::Done) => RequestBody::Length(0),
                Ok(Decoder::Length(n)) => RequestBody::Length(n),
                Ok(Decoder::Chunked(_)) => RequestBody::Chunked,
                Ok(Decoder::Close | Decoder::Failed) | Err(_) => RequestBody::Refused,
            };
            FuzzParsed::Request(Box::new(h.parts), body, h.close)
        }
        Parsed::Partial => FuzzParsed::Partial,
        Parsed::Refused(kind) => {
            FuzzParsed::Refused(super::respond::status_and_flag(kind, false).0.as_u16())
        }
        Parsed::Http2 => FuzzParsed::Http2,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_str(s: &str) -> Parsed {
        let mut buf = BytesMut::from(s);
        parse(&mut buf, &mut Vec::new(), 100)
    }

    #[test]
    fn plain_requests_are_taken() {
        let Parsed::Request(h) = parse_str(
            "POST /a/b?c=d HTTP/1.1\r\nHost: x\r\nContent-Length: 12\r\nConnection: keep-alive, Close\r\n\r\n",
        ) else {
            panic!("not taken");
        };
        assert_eq!(h.parts.method, Method::POST);
        assert_eq!(h.parts.uri.path(), "/a/b");
        assert_eq!(h.parts.uri.query(), Some("c=d"));
        assert_eq!(h.parts.headers["host"], "x");
        assert!(matches!(h.body, Ok(Decoder::Length(12))));
        assert!(!h.expect_continue);
        assert!(h.close);
        let Parsed::Request(h) = parse_str(
            "PUT / HTTP/1.1\r\nHost: x\r\nExpect: 100-Continue\r\nContent-Length: 1\r\n\r\n",
        ) else {
            panic!("not taken");
        };
        assert!(h.expect_continue);
        assert!(
            !h.parts.headers.contains_key(header::EXPECT),
            "not forwarded"
        );
        assert!(matches!(
            parse_str("GET / HTTP/1.1\r\nHost: x\r\n"),
            Parsed::Partial
        ));
    }

    /// The status a head is refused with, or 0 when it is taken.
    fn refused(head: &str) -> u16 {
        let mut buf = BytesMut::from(format!("{head}GET /next HTTP/1.1\r\n\r\n").as_str());
        match parse(&mut buf, &mut Vec::new(), 100) {
            Parsed::Refused(kind) => super::super::respond::status_and_flag(kind, false)
                .0
                .as_u16(),
            Parsed::Request(h) => match h.body {
                Err(kind) => super::super::respond::status_and_flag(kind, false)
                    .0
                    .as_u16(),
                Ok(_) => 0,
            },
            Parsed::Partial | Parsed::Http2 => panic!("{head:?}: not parsed"),
        }
    }

    #[test]
    fn what_hyper_took_before_is_answered_here() {
        for (head, status) in [
            ("GET / HTTP/2.0\r\n\r\n", 400),
            ("GET / HTTP/1.1\r\nBad Header: x\r\n\r\n", 400),
            ("GET /\x01 HTTP/1.1\r\n\r\n", 400),
            ("GET /a#b HTTP/1.1\r\nHost: x\r\n\r\n", 400),
            ("PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n", 400),
            // Framing: a coding not ending in `chunked`, `chunked` twice, a bad
            // or disagreeing length; a coding before `chunked` is not decoded.
            ("POST / HTTP/1.1\r\nTransfer-Encoding: identity\r\n\r\n", 400),
            ("POST / HTTP/1.1\r\nTransfer-Encoding: chunked, gzip\r\n\r\n", 400),
            ("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
            ("POST / HTTP/1.1\r\nTransfer-Encoding: chunked, chunked\r\n\r\n", 400),
            ("POST / HTTP/1.1\r\nContent-Length: +1\r\n\r\n", 400),
            ("POST / HTTP/1.1\r\nContent-Length: 1, 1\r\n\r\n", 400),
            ("POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", 400),
            ("POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", 501),
            ("POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n", 501),
            ("POST / HTTP/1.1\r\nExpect: something-else\r\nContent-Length: 1\r\n\r\n", 417),
            // Target forms: authority-form is for CONNECT only, and CONNECT has it.
            ("GET x:443 HTTP/1.1\r\nHost: x\r\n\r\n", 400),
            ("CONNECT / HTTP/1.1\r\nHost: x\r\n\r\n", 400),
            // Taken: the target phase decides these.
            ("GET http://x/ HTTP/1.1\r\nHost: x\r\n\r\n", 0),
            ("OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n", 0),
            ("CONNECT x:443 HTTP/1.1\r\nHost: x\r\n\r\n", 0),
            ("GET / HTTP/1.1\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n", 0),
            ("POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n", 0),
            ("POST / HTTP/1.1\r\nTransfer-Encoding: chunked,\r\n\r\n", 0),
        ] {
            assert_eq!(refused(head), status, "{head:?}");
        }
    }

    #[test]
    fn the_http2_preface_is_left_for_hyper() {
        for n in 1..H2_PREFACE.len() {
            let mut buf = BytesMut::from(&H2_PREFACE[..n]);
            assert!(
                matches!(parse(&mut buf, &mut Vec::new(), 100), Parsed::Partial),
                "{n}"
            );
        }
        let mut buf = BytesMut::from(&b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0"[..]);
        let before = buf.clone();
        assert!(matches!(
            parse(&mut buf, &mut Vec::new(), 100),
            Parsed::Http2
        ));
        assert_eq!(buf, before, "bytes kept for hyper");
    }

    #[test]
    fn a_repeated_length_is_kept_once() {
        let Parsed::Request(h) =
            parse_str("POST / HTTP/1.1\r\nContent-Length: 2\r\ncontent-length: 2\r\n\r\n")
        else {
            panic!("not taken");
        };
        assert!(matches!(h.body, Ok(Decoder::Length(2))));
        assert_eq!(
            h.parts
                .headers
                .get_all(header::CONTENT_LENGTH)
                .iter()
                .count(),
            1
        );
    }

    #[test]
    fn chunked_uploads_are_taken_and_conflicting_framing_refused() {
        let Parsed::Request(h) =
            parse_str("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: Chunked\r\n\r\n")
        else {
            panic!("not taken");
        };
        assert!(matches!(h.body, Ok(Decoder::Chunked(_))));
        for head in [
            "POST / HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
            "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n",
        ] {
            let Parsed::Request(h) = parse_str(head) else {
                panic!("not taken: {head:?}");
            };
            assert!(
                matches!(h.body, Err(ErrorKind::BadRequest(Reject::Framing))),
                "{head:?}"
            );
        }
    }

    #[test]
    fn http10_closes_unless_asked_and_has_no_transfer_codings() {
        let taken = |head: &str| match parse_str(head) {
            Parsed::Request(h) => h,
            _ => panic!("not taken: {head:?}"),
        };
        let h = taken("GET / HTTP/1.0\r\n\r\n");
        assert_eq!(h.parts.version, Version::HTTP_10);
        assert!(h.close);
        let h = taken("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n");
        assert!(!h.close);
        let h = taken("POST / HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n");
        assert!(!h.expect_continue && !h.parts.headers.contains_key(header::EXPECT));
        let h = taken("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n");
        assert!(matches!(
            h.body,
            Err(ErrorKind::BadRequest(Reject::Framing))
        ));
    }

    #[test]
    fn buffered_chunks_are_checked_before_dispatch() {
        let chunked = || Decoder::Chunked(chunked::Decoder::new());
        assert!(checked(chunked(), b"5\r\nhel").is_ok());
        assert!(checked(chunked(), b"").is_ok());
        assert!(matches!(
            checked(chunked(), b"5\r\nhello\r\n0x"),
            Err(ErrorKind::BadRequest(Reject::Chunked))
        ));
        // A counted body's bytes are the body's business.
        assert!(checked(Decoder::Length(3), b"\x00\x01").is_ok());
    }

    #[test]
    fn an_unread_body_is_skipped_only_when_all_there() {
        let chunked = Decoder::Chunked(chunked::Decoder::new());
        assert_eq!(chunked.end_in(b"3\r\nabc\r\n0\r\n\r\nGET"), Some(13));
        assert_eq!(chunked.end_in(b"3\r\nabc\r\n"), None);
        assert_eq!(chunked.end_in(b"3\r\nabcd\r\n0\r\n\r\n"), None);
        assert_eq!(Decoder::Length(2).end_in(b"abc"), Some(2));
        assert_eq!(Decoder::Failed.end_in(b"0\r\n\r\n"), None);
    }

    #[test]
    fn more_headers_than_the_stack_holds_are_taken_under_a_higher_limit() {
        let many: String = (0..MAX_SLOTS + 10)
            .map(|i| format!("x-{i}: v\r\n"))
            .collect();
        let head = format!("GET / HTTP/1.1\r\n{many}\r\n");
        let mut buf = BytesMut::from(head.as_str());
        let Parsed::Request(h) = parse(&mut buf, &mut Vec::new(), 1000) else {
            panic!("not taken");
        };
        assert_eq!(h.parts.headers.len(), MAX_SLOTS + 10);
        let mut buf = BytesMut::from(head.as_str());
        assert!(matches!(
            parse(&mut buf, &mut Vec::new(), MAX_SLOTS + 9),
            Parsed::Refused(ErrorKind::HeadersTooLarge)
        ));
    }

    #[test]
    fn read_buffers_are_kept_for_reuse_only_when_unshared() {
        let mut buf = spare::read_buf();
        let at = buf.as_ptr();
        assert!(buf.capacity() >= READ_CHUNK);
        buf.extend_from_slice(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
        let head = buf.split_to(buf.len()).freeze();
        // A request's head still shares the memory: it is not kept.
        spare::put_read_buf(buf);
        let other = spare::read_buf();
        assert_ne!(other.as_ptr(), at);
        drop(head);
        // Released once nothing shares it: the next connection that reads gets it
        // back, whole.
        let mut buf = spare::read_buf();
        buf.extend_from_slice(b"GET / HTTP/1.1\r\n\r\n");
        let at = buf.as_ptr();
        drop(buf.split_to(buf.len()).freeze());
        spare::put_read_buf(buf);
        let again = spare::read_buf();
        assert_eq!(again.as_ptr(), at);
        assert!(again.is_empty() && again.capacity() >= READ_CHUNK);
    }

    #[test]
    fn response_buffers_come_back_unless_grown_and_spares_are_bounded() {
        let mut out = spare::out_buf();
        out.extend_from_slice(b"HTTP/1.1 200 OK\r\n");
        let at = out.as_ptr();
        drop(out);
        let out = spare::out_buf();
        assert_eq!(out.as_ptr(), at);
        assert!(out.is_empty());
        let mut big = spare::out_buf();
        big.resize(OUT_KEEP + 1, 0);
        // Counted, not compared by address: the allocator may hand the freed
        // memory straight back to the next allocation.
        let kept = spare::kept().1;
        drop(big);
        assert_eq!(spare::kept().1, kept, "a grown buffer is not kept");
        drop(out);
        let many: Vec<_> = (0..2 * crate::spare::KEEP)
            .map(|_| spare::out_buf())
            .collect();
        drop(many);
        let bufs: Vec<_> = (0..2 * crate::spare::KEEP)
            .map(|_| spare::read_buf())
            .collect();
        bufs.into_iter().for_each(spare::put_read_buf);
        assert_eq!(spare::kept(), (crate::spare::KEEP, crate::spare::KEEP));
    }

    #[test]
    fn too_many_headers_are_a_431() {
        let mut s = String::from("GET / HTTP/1.1\r\n");
        for i in 0..5 {
            s.push_str(&format!("x-{i}: v\r\n"));
        }
        s.push_str("\r\n");
        let mut buf = BytesMut::from(s.as_str());
        assert!(matches!(
            parse(&mut buf, &mut Vec::new(), 4),
            Parsed::Refused(ErrorKind::HeadersTooLarge)
        ));
        let mut buf = BytesMut::from(s.as_str());
        assert!(matches!(
            parse(&mut buf, &mut Vec::new(), 5),
            Parsed::Request(_)
        ));
    }

    #[tokio::test]
    async fn http10_keep_alive_is_said_and_close_is_the_default() {
        for (close, says) in [
            (false, "connection: keep-alive\r\n"),
            (true, "connection: close\r\n"),
        ] {
            let rsp = Response::new(RespBody::full(Bytes::from_static(b"hi")));
            let asked = Asked {
                is_head: false,
                close,
                http10: true,
            };
            let (w, keep) = write(rsp, asked).await;
            assert!(
                w.contains(says) && w.contains("content-length: 2\r\n"),
                "{w}"
            );
            assert_eq!(keep, !close);
        }
    }

    /// What `write_response` puts on the wire for `rsp`, and whether it keeps the
    /// connection.
    async fn write(rsp: Response<RespBody>, asked: Asked) -> (String, bool) {
        let mut wire = Vec::new();
        let keep = write_response(
            &mut wire,
            rsp,
            asked,
            &mut Side::Spent(None),
            Duration::from_secs(1),
        )
        .await
        .expect("write");
        (String::from_utf8(wire).expect("utf-8"), keep)
    }

    async fn written(status: u16, body: &'static str, is_head: bool) -> (String, bool) {
        let mut rsp = Response::new(RespBody::full(Bytes::from_static(body.as_bytes())));
        *rsp.status_mut() = http::StatusCode::from_u16(status).expect("status");
        rsp.headers_mut()
            .insert(header::UPGRADE, HeaderValue::from_static("x"));
        let asked = Asked {
            is_head,
            close: false,
            http10: false,
        };
        write(rsp, asked).await
    }

    #[tokio::test]
    async fn responses_are_framed_by_status_and_method() {
        let (w, keep) = written(200, "hello", false).await;
        assert!(w.starts_with("HTTP/1.1 200 OK\r\n"), "{w}");
        assert!(
            w.contains("\r\ncontent-length: 5\r\n") && w.ends_with("\r\n\r\nhello"),
            "{w}"
        );
        assert!(keep);
        let (w, _) = written(200, "hello", true).await;
        assert!(
            w.contains("\r\ncontent-length: 5\r\n") && w.ends_with("\r\n\r\n"),
            "{w}"
        );
        let (w, _) = written(204, "", false).await;
        assert!(
            !w.contains("content-length") && w.ends_with("\r\n\r\n"),
            "{w}"
        );
        // An informational final status (only a filter could make one): an empty
        // 500 without its headers, and the connection closes.
        let (w, keep) = written(103, "x", false).await;
        assert!(
            w.starts_with("HTTP/1.1 500 Internal Server Error\r\n"),
            "{w}"
        );
        assert!(
            !w.contains("upgrade") && w.contains("content-length: 0\r\n"),
            "{w}"
        );
        assert!(
            w.contains("connection: close\r\n") && w.ends_with("\r\n\r\n"),
            "{w}"
        );
        assert!(!keep);
    }

    #[test]
    fn lengths_are_plain_digits() {
        assert_eq!(parse_length(b"0"), Some(0));
        assert_eq!(parse_length(b"18446744073709551"), Some(18446744073709551));
        for bad in [
            &b""[..],
            b"-1",
            b" 1",
            b"1 ",
            b"0x1",
            b"99999999999999999999",
        ] {
            assert_eq!(parse_length(bad), None, "{bad:?}");
        }
    }
}
