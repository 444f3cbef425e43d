//! The upstream HTTP/1.1 client: a hand-written codec driven inside the request's own
//! task.
//!
//! hyper's connection-level client runs every upstream connection as its own task and
//! hands each request to it through a channel and the response back through a
//! oneshot: two extra task wake-ups, a channel round trip and several moves of the
//! request per exchange. Here the request's task writes the head (and body) straight
//! into the socket and parses the response head with `httparse`; the response body
//! owns the connection while it streams and puts it back into the endpoint's pool the
//! moment the last byte is read. A body dropped early closes the connection instead.
//!
//! This is the client role of the one HTTP/1 codec (`crate::http1`): the response
//! head becomes a header map with `http1::head`, its framing is read by the
//! response rule of `http1::framing` (no body for HEAD, 1xx, 204 and 304; chunked
//! when it is the final transfer coding, Content-Length then dropped; another
//! transfer coding or no length reads until the upstream closes; a Content-Length
//! must be one valid number), and the body by `http1::body::Decoder`. What is left
//! here is the client's own: encoding the request, skipping interim 1xx
//! responses, the exchange's I/O, and the pool. The request body is written while
//! the response head is read, so an upstream that answers early (413, a redirect)
//! is heard without waiting for the whole upload.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName};
use http::{Method, StatusCode, Version};
use http_body::{Body, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::breakers::Permit;
use super::connector::Stream;
use super::UpBody;
use crate::http1::body::Decoder;
use crate::http1::chunked;
use crate::http1::framing::{Faulty, Fields, Framing};
use crate::http1::head::{self, header_spans, put_field};

/// Largest response head accepted (status line and headers).
const MAX_HEAD_BYTES: usize = 64 * 1024;
/// Most response headers accepted.
const MAX_HEADERS: usize = 128;
/// Read granularity: a response head fits; bodies are read up to this much at a time.
const READ_CHUNK: usize = 16 * 1024;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// One upstream HTTP/1.1 connection with its unread input.
pub struct Conn {
    io: Stream,
    rbuf: BytesMut,
    /// Header offsets while a response head is parsed; kept so its capacity is reused.
    spans: Vec<[u32; 4]>,
    /// The cluster's `max_connections` slot, held while the connection lives.
    _permit: Option<Permit>,
}

impl Conn {
    pub fn new(io: Stream, permit: Option<Permit>) -> Conn {
        Conn {
            io,
            rbuf: BytesMut::new(),
            spans: Vec::new(),
            _permit: permit,
        }
    }

    /// Whether an idle connection can carry another request: nothing unread, and the
    /// upstream has not closed it (a read would block). Never blocks.
    pub fn is_reusable(&mut self) -> bool {
        if !self.rbuf.is_empty() {
            return false;
        }
        let mut probe = [0u8; 1];
        // A plain socket is asked without registering a waker: `try_read` reads
        // only when the runtime saw it readable (a close or stray bytes), and
        // otherwise answers `WouldBlock` from the readiness it already has.
        if let Stream::Plain(tcp) = &self.io {
            return matches!(tcp.try_read(&mut probe), Err(e) if e.kind() == io::ErrorKind::WouldBlock);
        }
        // TLS: the stream may hold records of its own, so it is polled.
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let mut buf = ReadBuf::new(&mut probe);
        matches!(
            Pin::new(&mut self.io).poll_read(&mut cx, &mut buf),
            Poll::Pending
        )
    }

    /// The byte stream and what was read past the response head: an upgraded
    /// connection's first tunnelled bytes.
    pub fn into_parts(self) -> (Stream, BytesMut, Option<Permit>) {
        (self.io, self.rbuf, self._permit)
    }

    fn poll_fill(&mut self, cx: &mut Context<'_>, want: usize) -> Poll<io::Result<usize>> {
        if self.rbuf.capacity() - self.rbuf.len() < want.min(READ_CHUNK) {
            self.rbuf.reserve(want.clamp(1024, READ_CHUNK));
        }
        tokio_util::io::poll_read_buf(Pin::new(&mut self.io), cx, &mut self.rbuf)
    }
}

/// Why an exchange failed.
#[derive(Debug)]
pub enum ExchangeError {
    /// The connection closed or reset before any byte of a response arrived. On a
    /// reused connection this is the keep-alive race (the upstream closed it while it
    /// sat in the pool). `unwritten`: not a byte of the request went out, so any
    /// request may go again; otherwise the upstream may have acted on it.
    Closed { error: io::Error, unwritten: bool },
    /// A transport error after part of the response arrived.
    Io(io::Error),
    /// The upstream broke HTTP/1.1.
    Protocol(&'static str),
    /// The downstream request body failed (client gone or malformed upload).
    Body(BoxError),
}

impl std::fmt::Display for ExchangeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ExchangeError::Closed { error, .. } => {
                write!(f, "connection closed before the response: {error}")
            }
            ExchangeError::Io(e) => write!(f, "{e}"),
            ExchangeError::Protocol(m) => f.write_str(m),
            ExchangeError::Body(e) => write!(f, "request body: {e}"),
        }
    }
}

impl std::error::Error for ExchangeError {}

impl ExchangeError {
    /// Whether `e` says the client's request body failed (not the upstream).
    pub fn is_request_body(e: &(dyn std::error::Error + 'static)) -> bool {
        matches!(e.downcast_ref(), Some(ExchangeError::Body(_)))
    }
}

/// The serialized request head, how its body is framed on the wire, and what the
/// response head is read for.
pub struct RequestHead {
    bytes: Bytes,
    chunked: bool,
    is_head: bool,
    headers_outlive: bool,
}

/// Serialize the request head. Hop-by-hop headers are the caller's business (the
/// proxy strips them); `Expect` is dropped because the downstream side already
/// answered `100-continue`. The body framing comes from `Content-Length` when the
/// request has one, else a buffered body gets one and a streamed body is chunked.
///
/// `headers_outlive`: the response's header values may outlive the exchange (an
/// HTTP/2 downstream's HPACK table keeps the ones it indexes for the downstream
/// connection's life), so the response head is copied out of the connection's
/// read buffer instead of shared with it: a view would pin the buffer's 16 KiB
/// allocation as long as the table holds the value. Otherwise (an HTTP/1
/// downstream, a health check, a mirror) the values are slices of the buffer,
/// dropped with the response.
pub fn encode_head(
    parts: &http::request::Parts,
    body: &UpBody,
    headers_outlive: bool,
) -> RequestHead {
    let pq = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    // The exact size, so the buffer becomes `Bytes` without another allocation.
    // One pass for the size and whether the request has a `Content-Length`.
    let mut len = parts.method.as_str().len() + 1 + pq.len() + 11 + 2;
    let mut has_length = false;
    for (k, v) in parts.headers.iter() {
        if k != header::EXPECT {
            len += k.as_str().len() + v.len() + 4;
            has_length |= k == header::CONTENT_LENGTH;
        }
    }
    let mut digits = itoa::Buffer::new();
    let framing: &[&[u8]] = if has_length {
        &[]
    } else {
        match body {
            UpBody::Empty | UpBody::Full(None) => &[],
            UpBody::Full(Some(b)) => &[
                b"content-length: ",
                digits.format(b.len()).as_bytes(),
                b"\r\n",
            ],
            UpBody::Stream { .. } => &[b"transfer-encoding: chunked\r\n"],
        }
    };
    len += framing.iter().map(|f| f.len()).sum::<usize>();
    let chunked = matches!(body, UpBody::Stream { .. }) && !framing.is_empty();
    let mut buf = Vec::with_capacity(len);
    buf.put_slice(parts.method.as_str().as_bytes());
    buf.put_u8(b' ');
    buf.put_slice(pq.as_bytes());
    buf.put_slice(b" HTTP/1.1\r\n");
    for (k, v) in parts.headers.iter() {
        if k == header::EXPECT {
            continue;
        }
        put_field(&mut buf, k.as_str().as_bytes(), v.as_bytes());
    }
    for f in framing {
        buf.put_slice(f);
    }
    buf.put_slice(b"\r\n");
    debug_assert_eq!(buf.len(), len);
    RequestHead {
        bytes: Bytes::from(buf),
        chunked,
        is_head: parts.method == Method::HEAD,
        headers_outlive,
    }
}

/// A parsed response head and how its body is framed.
pub struct ResponseHead {
    pub status: StatusCode,
    pub version: Version,
    pub headers: HeaderMap,
    framing: Framing,
    keep_alive: bool,
}

#[cfg(any(test, feature = "fuzzing"))]
impl ResponseHead {
    /// Whether the connection could carry another exchange after this response.
    pub(crate) fn keep_alive(&self) -> bool {
        self.keep_alive
    }
}

/// Up to three buffers still to be written, in order.
struct Out {
    bufs: [Bytes; 3],
}

impl Out {
    fn is_empty(&self) -> bool {
        self.bufs.iter().all(Bytes::is_empty)
    }

    fn advance(&mut self, mut n: usize) {
        for b in self.bufs.iter_mut() {
            let k = n.min(b.len());
            b.advance(k);
            n -= k;
            if n == 0 {
                break;
            }
        }
    }
}

fn chunk_prefix(len: usize) -> Bytes {
    Bytes::copy_from_slice(chunked::size_line_for(len).as_bytes())
}

/// The request still being written: buffers in flight and the body they come from.
/// The response body keeps driving it after the head arrived, so an upstream that
/// answers while it reads the upload (full duplex) gets the whole request.
pub struct Writer {
    out: Out,
    body: UpBody,
    chunked: bool,
    body_done: bool,
    /// Bytes of this request written so far.
    written: u64,
}

/// How far the write side got.
enum WriteState {
    /// Everything written and flushed.
    Sent,
    /// The socket refused more (the upstream closed or reset); stop writing.
    Failed,
    /// Waiting on the socket or the client's body (wakers registered).
    Pending,
}

impl Writer {
    fn new(head: RequestHead, mut body: UpBody) -> Writer {
        let chunked = head.chunked;
        let mut out = Out {
            bufs: [head.bytes, Bytes::new(), Bytes::new()],
        };
        let body_done = match &mut body {
            UpBody::Empty => true,
            UpBody::Full(b) => {
                if let Some(b) = b.take() {
                    out.bufs[1] = b;
                }
                true
            }
            UpBody::Stream { .. } => false,
        };
        Writer {
            out,
            body,
            chunked,
            body_done,
            written: 0,
        }
    }

    /// Write as much of the request as the socket and the client's body allow.
    /// `Err`: the client's body failed.
    fn poll_write(
        &mut self,
        io: &mut Stream,
        cx: &mut Context<'_>,
    ) -> Result<WriteState, BoxError> {
        loop {
            if !self.out.is_empty() {
                let slices = [
                    io::IoSlice::new(&self.out.bufs[0]),
                    io::IoSlice::new(&self.out.bufs[1]),
                    io::IoSlice::new(&self.out.bufs[2]),
                ];
                match Pin::new(&mut *io).poll_write_vectored(cx, &slices) {
                    Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => return Ok(WriteState::Failed),
                    Poll::Ready(Ok(n)) => {
                        self.out.advance(n);
                        self.written += n as u64;
                    }
                    Poll::Pending => return Ok(WriteState::Pending),
                }
                continue;
            }
            if self.body_done {
                return Ok(match Pin::new(&mut *io).poll_flush(cx) {
                    Poll::Ready(Ok(())) => WriteState::Sent,
                    Poll::Ready(Err(_)) => WriteState::Failed,
                    Poll::Pending => WriteState::Pending,
                });
            }
            match Pin::new(&mut self.body).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => {
                    // Request trailers are not forwarded over HTTP/1.1.
                    if let Ok(data) = frame.into_data() {
                        if data.is_empty() {
                            continue;
                        }
                        if self.chunked {
                            self.out.bufs =
                                [chunk_prefix(data.len()), data, Bytes::from_static(b"\r\n")];
                        } else {
                            self.out.bufs[0] = data;
                        }
                    }
                }
                Poll::Ready(None) => {
                    self.body_done = true;
                    if self.chunked {
                        self.out.bufs[0] = Bytes::from_static(b"0\r\n\r\n");
                    }
                }
                Poll::Ready(Some(Err(e))) => return Err(e),
                Poll::Pending => {
                    // A TLS stream may hold records it accepted but could not send
                    // yet; push them out while the client's body is quiet.
                    let _ = Pin::new(&mut *io).poll_flush(cx);
                    return Ok(WriteState::Pending);
                }
            }
        }
    }
}

/// Write the request and read the response head. Returns the head and, when the
/// upstream answered before the whole request went out, the writer to keep
/// driving while the response body streams.
pub async fn exchange(
    conn: &mut Conn,
    head: RequestHead,
    body: UpBody,
) -> Result<(ResponseHead, Option<Writer>), ExchangeError> {
    let (is_head, outlive) = (head.is_head, head.headers_outlive);
    let mut writer = Some(Writer::new(head, body));
    let mut written: u64 = 0;
    let mut received = false;
    std::future::poll_fn(|cx| {
        // Write side: as much of the request as the socket and the body allow.
        if let Some(w) = writer.as_mut() {
            let state = w.poll_write(&mut conn.io, cx);
            written = w.written;
            match state {
                Ok(WriteState::Sent) => writer = None,
                // Keep reading: the upstream may still have answered.
                Ok(WriteState::Failed) => writer = None,
                Ok(WriteState::Pending) => {}
                Err(e) => return Poll::Ready(Err(ExchangeError::Body(e))),
            }
        }
        let unsent = || ExchangeError::Closed {
            error: io::Error::from(io::ErrorKind::UnexpectedEof),
            unwritten: written == 0,
        };
        // Read side: the response head, possibly before the request is all out.
        loop {
            match parse_head(&mut conn.rbuf, &mut conn.spans, is_head, outlive) {
                Ok(Some(parsed)) => {
                    let w = writer.take();
                    return Poll::Ready(Ok((parsed, w)));
                }
                Ok(None) => {}
                Err(e) => return Poll::Ready(Err(e)),
            }
            if conn.rbuf.len() >= MAX_HEAD_BYTES {
                return Poll::Ready(Err(ExchangeError::Protocol("response head too large")));
            }
            match conn.poll_fill(cx, READ_CHUNK) {
                Poll::Ready(Ok(0)) => {
                    return Poll::Ready(Err(if received {
                        ExchangeError::Protocol("upstream closed inside the response head")
                    } else {
                        unsent()
                    }));
                }
                Poll::Ready(Ok(_)) => received = true,
                Poll::Ready(Err(e)) => {
                    return Poll::Ready(Err(if received {
                        ExchangeError::Io(e)
                    } else {
                        ExchangeError::Closed {
                            error: e,
                            unwritten: written == 0,
                        }
                    }));
                }
                Poll::Pending => return Poll::Pending,
            }
        }
    })
    .await
}

/// Parse one final response head from the front of `rbuf` (skipping interim 1xx
/// responses), for a HEAD request when `is_head`; `outlive`: see [`encode_head`].
/// `Ok(None)`: incomplete.
fn parse_head(
    rbuf: &mut BytesMut,
    spans: &mut Vec<[u32; 4]>,
    is_head: bool,
    outlive: bool,
) -> Result<Option<ResponseHead>, ExchangeError> {
    let parser = httparse::ParserConfig::default();
    loop {
        if rbuf.is_empty() {
            return Ok(None);
        }
        // Uninitialised slots: nothing is written to the stack for headers that
        // are not there (a [Header; 128] costs a 4 KiB fill per response).
        let mut slots =
            [const { std::mem::MaybeUninit::<httparse::Header>::uninit() }; MAX_HEADERS];
        let mut rsp = httparse::Response::new(&mut []);
        let n = match parser.parse_response_with_uninit_headers(&mut rsp, rbuf, &mut slots) {
            Ok(httparse::Status::Complete(n)) => n,
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(httparse::Error::TooManyHeaders) => {
                return Err(ExchangeError::Protocol("too many response headers"))
            }
            Err(_) => return Err(ExchangeError::Protocol("malformed response head")),
        };
        let code = rsp.code.unwrap_or(0);
        let status = StatusCode::from_u16(code)
            .map_err(|_| ExchangeError::Protocol("invalid response status"))?;
        if status.is_informational() && status != StatusCode::SWITCHING_PROTOCOLS {
            rbuf.advance(n);
            continue;
        }
        let version = if rsp.version == Some(0) {
            Version::HTTP_10
        } else {
            Version::HTTP_11
        };
        // The head is under MAX_HEAD_BYTES, so offsets fit in u32.
        header_spans(rbuf, rsp.headers, spans);
        let raw = if outlive {
            // A copy (see `encode_head`), which also leaves `rbuf` unshared.
            let raw = Bytes::copy_from_slice(&rbuf[..n]);
            rbuf.advance(n);
            raw
        } else {
            rbuf.split_to(n).freeze()
        };
        let mut headers = head::new_map(spans.len());
        let mut fields = Fields::default();
        head::into_map(&raw, spans, &mut headers, |name, value| {
            Ok::<_, ExchangeError>(note(&mut fields, name, value))
        })?;
        if fields.is_coded() {
            // Content-Length is ignored (and must not be forwarded) with a transfer coding.
            headers.remove(header::CONTENT_LENGTH);
        }
        let framing = fields.response(status, is_head)?;
        // After a `101` the connection is not HTTP any more.
        let keep_alive = status != StatusCode::SWITCHING_PROTOCOLS
            && framing != Framing::Close
            && fields.persistent(version);
        return Ok(Some(ResponseHead {
            status,
            version,
            headers,
            framing,
            keep_alive,
        }));
    }
}

/// Record one response header's framing and connection facts; false when it is
/// consumed and stays out of the map. `Connection` (when it lists only `close`,
/// `keep-alive` or `upgrade`), `Keep-Alive`, `Proxy-Connection` and
/// `Transfer-Encoding` are hop-by-hop and consumed here (the proxy would strip
/// them anyway); `Connection` naming other headers stays for the proxy's
/// hop-by-hop pass to act on.
fn note(fields: &mut Fields, name: &HeaderName, value: &[u8]) -> bool {
    if name == header::CONNECTION {
        return fields.connection(value);
    }
    if name == header::TRANSFER_ENCODING {
        fields.transfer_encoding(value);
        return false;
    }
    if name == header::CONTENT_LENGTH {
        fields.content_length(value);
        return true;
    }
    let n = name.as_str();
    n != "keep-alive" && n != "proxy-connection"
}

impl From<Faulty> for ExchangeError {
    fn from(f: Faulty) -> ExchangeError {
        ExchangeError::Protocol(f.as_str())
    }
}

impl From<head::Invalid> for ExchangeError {
    fn from(i: head::Invalid) -> ExchangeError {
        ExchangeError::Protocol(match i {
            head::Invalid::Name => "invalid response header name",
            head::Invalid::Value => "invalid response header value",
        })
    }
}

/// Where a finished connection goes back to.
pub struct Home {
    pub pool: Arc<super::pool::Pool>,
    pub idle_timeout: Duration,
    pub max_idle: usize,
}

/// A response body read from an upstream HTTP/1.1 connection.
pub struct H1Body {
    conn: Option<Conn>,
    state: Decoder,
    /// The upstream broke the body (`state` is `Failed`); the error goes out on
    /// the next poll.
    error: Option<BoxError>,
    keep_alive: bool,
    home: Option<Home>,
    /// The rest of the request, when the upstream answered before it was sent
    /// (rare: boxed to keep the body small).
    writer: Option<Box<Writer>>,
}

impl H1Body {
    /// After a `101 Switching Protocols`: the connection, now a tunnel. `None` for
    /// any other response.
    pub fn into_upgraded(mut self) -> Option<Conn> {
        if self.home.is_some() {
            return None;
        }
        self.conn.take()
    }

    pub fn new(conn: Conn, parsed: &ResponseHead, writer: Option<Writer>, home: Home) -> H1Body {
        if parsed.status == StatusCode::SWITCHING_PROTOCOLS {
            // The connection is not HTTP any more: the caller tunnels it or drops it.
            return H1Body {
                conn: Some(conn),
                state: Decoder::Done,
                error: None,
                keep_alive: false,
                home: None,
                writer: None,
            };
        }
        let mut body = H1Body {
            conn: Some(conn),
            state: Decoder::new(parsed.framing),
            error: None,
            keep_alive: parsed.keep_alive,
            home: Some(home),
            writer: writer.map(Box::new),
        };
        if body.state.is_done() {
            body.release();
        }
        body
    }

    /// The body is complete: the connection goes back to its pool when it can carry
    /// another exchange, and is closed otherwise.
    fn release(&mut self) {
        self.state = Decoder::Done;
        let (Some(conn), Some(home)) = (self.conn.take(), self.home.take()) else {
            return;
        };
        // Reusable only when the whole request went out too.
        if self.keep_alive && self.writer.is_none() && conn.rbuf.is_empty() {
            home.pool.put_h1(conn, home.idle_timeout, home.max_idle);
        }
        self.writer = None;
    }

    /// Decode what is buffered. `Ok(Some)`: a data frame; `Ok(None)`: need more
    /// input (or done, see `state`).
    fn decode(&mut self) -> Result<Option<Bytes>, chunked::Error> {
        let Some(conn) = self.conn.as_mut() else {
            return Ok(None);
        };
        self.state.decode(&mut conn.rbuf)
    }

    /// The upstream broke the body. The connection is closed now; the error is
    /// handed out on the next poll, so the server first flushes the head and data it
    /// already has (the client sees a truncated response, not an empty reset).
    fn fail(
        &mut self,
        e: BoxError,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.conn = None;
        self.writer = None;
        self.state = Decoder::Failed;
        self.error = Some(e);
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

impl Body for H1Body {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        if let Decoder::Failed = this.state {
            let e = this
                .error
                .take()
                .unwrap_or_else(|| "upstream body failed".into());
            this.state = Decoder::Done;
            return Poll::Ready(Some(Err(e)));
        }
        // Keep sending the request while its response streams (full duplex).
        if let (Some(w), Some(conn)) = (this.writer.as_mut(), this.conn.as_mut()) {
            match w.poll_write(&mut conn.io, cx) {
                Ok(WriteState::Sent) => this.writer = None,
                Ok(WriteState::Failed) => {
                    // The upstream stopped reading the request: read what it
                    // says, then close the connection.
                    this.writer = None;
                    this.keep_alive = false;
                }
                Err(e) => {
                    // The client's body broke (malformed chunk, client gone): the
                    // upstream has a half request, so its connection is aborted
                    // and the response ends here.
                    return this.fail(Box::new(ExchangeError::Body(e)), cx);
                }
                Ok(WriteState::Pending) => {}
            }
        }
        loop {
            match this.decode() {
                Ok(Some(data)) => {
                    if this.state.is_done() {
                        this.release();
                    }
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Ok(None) => {}
                Err(e) => return this.fail(Box::new(e), cx),
            }
            if this.state.is_done() {
                this.release();
                return Poll::Ready(None);
            }
            let want = this
                .state
                .expected()
                .map_or(READ_CHUNK, |n| usize::try_from(n).unwrap_or(usize::MAX));
            let Some(conn) = this.conn.as_mut() else {
                return Poll::Ready(None);
            };
            match conn.poll_fill(cx, want) {
                Poll::Ready(Ok(0)) => {
                    if matches!(this.state, Decoder::Close) {
                        this.keep_alive = false;
                        this.release();
                        return Poll::Ready(None);
                    }
                    return this.fail("upstream closed before the end of the body".into(), cx);
                }
                Poll::Ready(Ok(_)) => {}
                Poll::Ready(Err(e)) => return this.fail(Box::new(e), cx),
                Poll::Pending => return Poll::Pending,
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.state.is_done()
    }

    fn size_hint(&self) -> SizeHint {
        self.state.size_hint()
    }
}

/// The fuzz harness's entry (see `crate::fuzz`): the response head at the front of
/// `rbuf` as [`exchange`] parses it, and its body's decoder.
#[cfg(any(test, feature = "fuzzing"))]
pub(crate) fn parse_head_for_fuzzing(
    rbuf: &mut BytesMut,
    is_head: bool,
    outlive: bool,
) -> Result<Option<(ResponseHead, Decoder)>, ExchangeError> {
    let parsed = parse_head(rbuf, &mut Vec::new(), is_head, outlive)?;
    Ok(parsed.map(|p| {
        let body = Decoder::new(p.framing);
        (p, body)
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(raw: &[u8], is_head: bool) -> Result<Option<ResponseHead>, ExchangeError> {
        let mut b = BytesMut::from(raw);
        parse_head(&mut b, &mut Vec::new(), is_head, false)
    }

    fn head(raw: &[u8], is_head: bool) -> ResponseHead {
        parse(raw, is_head)
            .expect("valid head")
            .expect("complete head")
    }

    /// Response header values outlive the exchange (an HTTP/2 downstream's HPACK
    /// table keeps the ones it indexes for the connection's life): they must not
    /// hold on to the connection's read buffer, which stays the connection's own.
    #[test]
    fn header_values_do_not_keep_the_read_buffer() {
        let mut rbuf = BytesMut::with_capacity(READ_CHUNK);
        rbuf.extend_from_slice(b"HTTP/1.1 200 OK\r\nserver: origin\r\ncontent-length: 2\r\n\r\nok");
        let p = parse_head(&mut rbuf, &mut Vec::new(), false, true)
            .expect("valid head")
            .expect("complete head");
        assert_eq!(p.headers["server"], "origin");
        assert_eq!(&rbuf[..], b"ok");
        rbuf.clear();
        assert!(
            rbuf.try_reclaim(READ_CHUNK),
            "the read buffer is shared with the header values"
        );
        assert_eq!(p.headers["server"], "origin");
    }

    /// For a downstream that drops the headers with the response (HTTP/1), the
    /// values are slices of the read buffer: no copy of the head per response.
    /// The buffer is reused once they are gone.
    #[test]
    fn header_values_share_the_read_buffer_when_they_do_not_outlive_the_response() {
        let mut rbuf = BytesMut::with_capacity(READ_CHUNK);
        rbuf.extend_from_slice(b"HTTP/1.1 200 OK\r\nserver: origin\r\ncontent-length: 2\r\n\r\nok");
        let start = rbuf.as_ptr() as usize;
        let p = parse_head(&mut rbuf, &mut Vec::new(), false, false)
            .expect("valid head")
            .expect("complete head");
        let value = p.headers["server"].as_bytes().as_ptr() as usize;
        assert!(
            (start..start + READ_CHUNK).contains(&value),
            "the header value was copied"
        );
        rbuf.clear();
        assert!(!rbuf.try_reclaim(READ_CHUNK), "shared while the head lives");
        drop(p);
        assert!(rbuf.try_reclaim(READ_CHUNK), "reused once the head is gone");
    }

    #[test]
    fn framing_follows_rfc9112() {
        let p = head(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n", false);
        assert_eq!(p.framing, Framing::Length(5));
        assert!(p.keep_alive);
        let p = head(
            b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\ntransfer-encoding: gzip, chunked\r\n\r\n",
            false,
        );
        assert_eq!(p.framing, Framing::Chunked);
        assert!(!p.headers.contains_key(header::CONTENT_LENGTH));
        let p = head(b"HTTP/1.1 200 OK\r\ntransfer-encoding: gzip\r\n\r\n", false);
        assert_eq!(p.framing, Framing::Close);
        assert!(!p.keep_alive);
        let p = head(b"HTTP/1.1 200 OK\r\n\r\n", false);
        assert_eq!(p.framing, Framing::Close);
        let p = head(b"HTTP/1.1 204 No Content\r\n\r\n", false);
        assert_eq!(p.framing, Framing::None);
        let p = head(b"HTTP/1.1 200 OK\r\ncontent-length: 9\r\n\r\n", true);
        assert_eq!(p.framing, Framing::None);
        let p = head(b"HTTP/1.0 200 OK\r\ncontent-length: 1\r\n\r\n", false);
        assert!(!p.keep_alive);
        let p = head(
            b"HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\ncontent-length: 1\r\n\r\n",
            false,
        );
        assert!(p.keep_alive);
        let p = head(
            b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 1\r\n\r\n",
            false,
        );
        assert!(!p.keep_alive);
    }

    #[test]
    fn framing_headers_are_consumed_not_mapped() {
        let p = head(
            b"HTTP/1.1 200 OK\r\nConnection: keep-alive\r\nKeep-Alive: timeout=5\r\nServer: o\r\ncontent-length: 1\r\n\r\n",
            false,
        );
        assert!(p.keep_alive);
        let names: Vec<&str> = p.headers.keys().map(HeaderName::as_str).collect();
        assert_eq!(names.len(), 2, "{names:?}");
        assert!(p.headers.contains_key("server") && p.headers.contains_key("content-length"));
        // A Connection header naming other headers stays for the proxy's hop-by-hop pass.
        let p = head(
            b"HTTP/1.1 200 OK\r\nconnection: close, x-hop\r\nx-hop: 1\r\ncontent-length: 0\r\n\r\n",
            false,
        );
        assert!(!p.keep_alive);
        assert!(p.headers.contains_key(header::CONNECTION) && p.headers.contains_key("x-hop"));
        let p = head(
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ncontent-length: zz\r\n\r\n",
            false,
        );
        assert_eq!(p.framing, Framing::Chunked);
        assert!(p.headers.is_empty());
        // A bad length does not matter where no body follows.
        let p = head(b"HTTP/1.1 200 OK\r\ncontent-length: zz\r\n\r\n", true);
        assert_eq!(p.framing, Framing::None);
    }

    #[test]
    fn interim_responses_are_skipped_and_partial_heads_wait() {
        let p = head(
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nlink: </a>\r\n\r\nHTTP/1.1 201 Created\r\ncontent-length: 0\r\n\r\n",
            false,
        );
        assert_eq!(p.status, StatusCode::CREATED);
        assert!(matches!(
            parse(b"HTTP/1.1 200 OK\r\ncontent-le", false),
            Ok(None)
        ));
    }

    #[test]
    fn bad_heads_are_protocol_errors() {
        for raw in [
            &b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\ncontent-length: 6\r\n\r\n"[..],
            b"HTTP/1.1 200 OK\r\ncontent-length: -1\r\n\r\n",
            b"HTTP/1.1 200 OK\r\ncontent-length: 1x\r\n\r\n",
            b"HTTP/1.1 999x OK\r\n\r\n",
            b"SMTP ready\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nbad header\r\n\r\n",
        ] {
            assert!(
                matches!(parse(raw, false), Err(ExchangeError::Protocol(_))),
                "{}",
                String::from_utf8_lossy(raw)
            );
        }
        let same = head(
            b"HTTP/1.1 200 OK\r\ncontent-length: 5, 5\r\ncontent-length: 5\r\n\r\n",
            false,
        );
        assert_eq!(same.framing, Framing::Length(5));
    }

    #[test]
    fn chunk_prefix_is_hex() {
        assert_eq!(&chunk_prefix(1)[..], b"1\r\n");
        assert_eq!(&chunk_prefix(255)[..], b"ff\r\n");
        assert_eq!(&chunk_prefix(65536)[..], b"10000\r\n");
    }
}
