//! A served TLS connection over rustls's unbuffered API
//! (`UnbufferedServerConnection`), where this stream owns the ciphertext
//! buffers instead of rustls.
//!
//! Why not `tokio_rustls::server::TlsStream`: rustls's buffered connection keeps
//! a 4 KiB deframer buffer for the connection's life (it shrinks back to 4 KiB,
//! never to 0; rustls#794), so an idle TLS connection held it. Here an idle
//! connection holds no buffer:
//!
//! - received ciphertext is read into a buffer taken from the worker's spares,
//!   which goes back when a read finds nothing more to read and no partial record
//!   is pending (the wait for the next bytes holds no memory);
//! - ciphertext to send is encrypted into a buffer taken from the spares, given
//!   back once the socket took all of it;
//! - plaintext that a reader had no room for (a record larger than its buffer) is
//!   kept in a third buffer, freed with the receive buffer.
//!
//! rustls decides what happens (`process_tls_records` and its
//! `ConnectionState`s); this type moves bytes. Its semantics are tokio-rustls's:
//! writes are sent eagerly (what the socket does not take now goes out with the
//! next write, flush or shutdown), a peer's `close_notify` reads as EOF, a TCP EOF
//! without it as `UnexpectedEof`, `shutdown` sends `close_notify` then shuts the
//! socket's write side, and rustls errors are `InvalidData` I/O errors carrying
//! the `rustls::Error` (what [`HandshakeFailure::classify`] looks at). A fatal
//! error's alert is sent (once, best effort) before the error is returned.
//!
//! The SNI name is not readable from an unbuffered connection; the listener's
//! certificate resolver notes it while the handshake step that runs it is on
//! this thread ([`note_sni`]).
//!
//! [`HandshakeFailure::classify`]: super::HandshakeFailure::classify

use std::cell::RefCell;
use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use rustls::server::{ServerConnectionData, UnbufferedServerConnection};
use rustls::unbuffered::{ConnectionState, EncodeError, EncryptError, WriteTraffic};
use rustls::ServerConfig;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The largest TLS record rustls accepts (header, 16 KiB of plaintext and the
/// largest expansion TLS 1.2 allows): a buffer of this size always holds one.
const RECORD_MAX: usize = 5 + 16_384 + 2_048;
/// Plaintext encrypted per record (TLS's maximum fragment).
const PLAIN_MAX: usize = 16_384;
/// Room kept for a record's header, content type, padding and tag.
const OVERHEAD: usize = 128;
/// A handshake message may span records; rustls needs it whole in the buffer.
/// The received-ciphertext buffer grows up to this (a ClientHello or a client
/// certificate chain is at most 64 KiB), beyond it the peer is refused.
const IN_MAX: usize = 4 * RECORD_MAX;
/// The first read of a connection without a receive buffer (an idle one) goes
/// onto the stack; a buffer is taken only once bytes arrived.
const IDLE_READ: usize = 4096;

/// A served TLS connection: the socket, rustls's state, and the buffers it has
/// while it has something to read or send (none when idle).
pub struct ServerStream<IO> {
    io: IO,
    conn: UnbufferedServerConnection,
    /// Ciphertext received and not yet taken by rustls.
    incoming: Buf,
    /// Ciphertext rustls produced and the socket has not taken yet.
    outgoing: Buf,
    /// Decrypted plaintext a reader had no room for.
    plain: Buf,
    /// The peer sent `close_notify`: reads return EOF.
    peer_closed: bool,
    /// The socket reached EOF without `close_notify`.
    eof: bool,
    /// `close_notify` is queued: nothing more may be written.
    closing: bool,
}

/// What a pass of rustls over the received ciphertext came to.
enum Next {
    /// A record's plaintext went into the reader's buffer (or `plain`).
    Plaintext,
    /// rustls needs more ciphertext.
    Input,
    /// The handshake is done and nothing was asked to be written.
    Traffic,
    /// `n` bytes of plaintext were encrypted (or `close_notify`, as 0).
    Written(usize),
    /// The peer sent `close_notify` (reported once).
    PeerClosed,
}

/// What a pass should encrypt once rustls allows application data.
#[derive(Clone, Copy)]
enum Write<'a> {
    Nothing,
    Data(&'a [u8]),
    CloseNotify,
}

impl<IO: AsyncRead + AsyncWrite + Unpin> ServerStream<IO> {
    /// The server handshake over `io`. Untimed: the caller bounds it.
    pub async fn accept(io: IO, config: Arc<ServerConfig>) -> io::Result<(Self, Option<String>)> {
        let conn = UnbufferedServerConnection::new(config).map_err(invalid_data)?;
        let mut stream = ServerStream {
            io,
            conn,
            incoming: Buf::default(),
            outgoing: Buf::default(),
            plain: Buf::default(),
            peer_closed: false,
            eof: false,
            closing: false,
        };
        let mut sni = None;
        std::future::poll_fn(|cx| stream.poll_handshake(cx, &mut sni)).await?;
        Ok((stream, sni))
    }

    /// rustls's view of the connection (version, cipher, ALPN, peer certificates).
    pub fn common(&self) -> &rustls::CommonState {
        &self.conn
    }

    /// Drive the handshake until rustls may send application data. The SNI name
    /// rustls chose the certificate by goes to `sni` (see [`note_sni`]).
    fn poll_handshake(
        &mut self,
        cx: &mut Context<'_>,
        sni: &mut Option<String>,
    ) -> Poll<io::Result<()>> {
        while self.conn.is_handshaking() {
            let next = sni_seen_during(sni, || self.process(None, Write::Nothing));
            match next {
                Err(e) => return Poll::Ready(Err(self.failed(cx, e))),
                // (rustls may send before the handshake is done: TLS 1.3's 0.5-RTT.)
                Ok(Next::Input | Next::Traffic) if self.conn.is_handshaking() => {
                    if let Poll::Ready(Err(e)) = self.poll_send(cx) {
                        return Poll::Ready(Err(e));
                    }
                    if ready!(self.poll_fill(cx))? == 0 {
                        return Poll::Ready(Err(io::ErrorKind::UnexpectedEof.into()));
                    }
                }
                Ok(Next::PeerClosed) => {
                    return Poll::Ready(Err(io::ErrorKind::UnexpectedEof.into()));
                }
                Ok(_) => {}
            }
        }
        // The last flight (the session tickets) is sent now if the socket takes
        // it, else before the next read waits or with the next write: a client
        // that does not read yet does not hold the handshake up.
        match self.poll_send(cx) {
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            _ => Poll::Ready(Ok(())),
        }
    }

    /// Run rustls over the received ciphertext until it needs input, delivered
    /// a record's plaintext (into `dst`, the rest into `plain`), or (with
    /// something to `write`) encrypted it. Handshake and alert records it
    /// produces go into `outgoing` first (so nothing stays queued in rustls once
    /// this returns); sending them is the caller's.
    fn process(&mut self, mut dst: Option<&mut ReadBuf<'_>>, write: Write<'_>) -> io::Result<Next> {
        loop {
            let status = self.conn.process_tls_records(self.incoming.pending_mut());
            let mut discard = status.discard;
            let next = match status.state {
                Err(e) => {
                    self.incoming.consume(discard);
                    self.queue_alert();
                    return Err(invalid_data(e));
                }
                Ok(ConnectionState::ReadTraffic(mut records)) => {
                    while let Some(record) = records.next_record() {
                        let record = record.map_err(invalid_data)?;
                        discard += record.discard;
                        deliver(record.payload, dst.as_deref_mut(), &mut self.plain);
                    }
                    Some(Next::Plaintext)
                }
                Ok(ConnectionState::EncodeTlsData(mut encode)) => {
                    encode_into(&mut encode, &mut self.outgoing)?;
                    None
                }
                Ok(ConnectionState::TransmitTlsData(transmit)) => {
                    // Queued in `outgoing`, which is sent before any wait.
                    transmit.done();
                    None
                }
                Ok(ConnectionState::WriteTraffic(mut traffic)) => Some(match write {
                    Write::Nothing => Next::Traffic,
                    Write::Data(data) => {
                        Next::Written(encrypt(&mut traffic, data, &mut self.outgoing)?)
                    }
                    Write::CloseNotify => {
                        close_notify(&mut traffic, &mut self.outgoing)?;
                        Next::Written(0)
                    }
                }),
                Ok(ConnectionState::BlockedHandshake) => Some(Next::Input),
                Ok(ConnectionState::PeerClosed) => {
                    self.peer_closed = true;
                    Some(Next::PeerClosed)
                }
                Ok(ConnectionState::Closed) if matches!(write, Write::Nothing) => {
                    self.peer_closed = true;
                    Some(Next::PeerClosed)
                }
                Ok(ConnectionState::Closed) => {
                    self.incoming.consume(discard);
                    return Err(io::ErrorKind::BrokenPipe.into());
                }
                // Early data is never enabled (`max_early_data_size` is 0).
                Ok(_) => {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "tls: unexpected connection state",
                    ))
                }
            };
            self.incoming.consume(discard);
            match next {
                None => {}
                // A writer goes on to its write (plaintext went to `plain`); a
                // reader returns to take it.
                Some(Next::Plaintext | Next::PeerClosed) if !matches!(write, Write::Nothing) => {}
                Some(next) => return Ok(next),
            }
        }
    }

    /// After a fatal error: move the alert rustls queued into `outgoing`. Only
    /// while rustls holds output: a pass that found none would go on to parse
    /// the received bytes again (which failed). The received ciphertext is passed
    /// as always, since rustls may hold views into it.
    fn queue_alert(&mut self) {
        while self.conn.wants_write() {
            let status = self.conn.process_tls_records(self.incoming.pending_mut());
            let discard = status.discard;
            let queued = match status.state {
                Ok(ConnectionState::EncodeTlsData(mut encode)) => {
                    encode_into(&mut encode, &mut self.outgoing).is_ok()
                }
                _ => false,
            };
            self.incoming.consume(discard);
            if !queued {
                return;
            }
        }
    }

    /// A fatal error: the alert rustls queued goes out if the socket takes it
    /// now (best effort, as the connection is done), then the error.
    fn failed(&mut self, cx: &mut Context<'_>, e: io::Error) -> io::Error {
        let _ = self.poll_send(cx);
        e
    }

    /// Read more ciphertext into `incoming`: Ready(0) at EOF. Without a buffer
    /// (idle) the bytes go onto the stack first; a read that finds nothing with
    /// nothing pending gives the buffer back.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        if !self.incoming.has_buffer() {
            let mut stack = [MaybeUninit::<u8>::uninit(); IDLE_READ];
            let mut rb = ReadBuf::uninit(&mut stack);
            ready!(Pin::new(&mut self.io).poll_read(cx, &mut rb))?;
            let got = rb.filled();
            if !got.is_empty() {
                self.incoming.room(got.len(), RECORD_MAX)?;
                self.incoming.append(got);
            }
            return Poll::Ready(Ok(got.len()));
        }
        // Full with a partial message (a handshake message over several records):
        // more room, up to `IN_MAX`.
        let free = self.incoming.room(1, IN_MAX)?;
        let mut rb = ReadBuf::new(free);
        match Pin::new(&mut self.io).poll_read(cx, &mut rb) {
            Poll::Ready(Ok(())) => {
                let n = rb.filled().len();
                self.incoming.filled(n);
                Poll::Ready(Ok(n))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => {
                // Nothing more to read now: idle, unless a record is incomplete.
                self.incoming.release_if_empty();
                if self.plain.is_empty() {
                    self.plain = Buf::default();
                }
                Poll::Pending
            }
        }
    }

    /// Send what `outgoing` holds; Ready once the socket took all of it.
    fn poll_send(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while !self.outgoing.is_empty() {
            let n = ready!(Pin::new(&mut self.io).poll_write(cx, self.outgoing.pending_mut()))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.outgoing.consume(n);
        }
        self.outgoing.release_if_empty();
        Poll::Ready(Ok(()))
    }
}

impl<IO: AsyncRead + AsyncWrite + Unpin> AsyncRead for ServerStream<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if buf.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        loop {
            if !this.plain.is_empty() {
                let n = this.plain.len().min(buf.remaining());
                buf.put_slice(&this.plain.pending_mut()[..n]);
                this.plain.consume(n);
                return Poll::Ready(Ok(()));
            }
            if this.peer_closed {
                return Poll::Ready(Ok(()));
            }
            if this.eof {
                return Poll::Ready(Err(io::ErrorKind::UnexpectedEof.into()));
            }
            if !this.incoming.is_empty() {
                let before = buf.filled().len();
                match this
                    .process(Some(buf), Write::Nothing)
                    .map_err(|e| this.failed(cx, e))?
                {
                    Next::Plaintext if buf.filled().len() > before => return Poll::Ready(Ok(())),
                    Next::Plaintext | Next::PeerClosed => continue,
                    Next::Input | Next::Traffic | Next::Written(_) => {}
                }
            }
            // What rustls answered (a key update, an alert) goes out before the wait.
            if let Poll::Ready(Err(e)) = this.poll_send(cx) {
                return Poll::Ready(Err(e));
            }
            if ready!(this.poll_fill(cx))? == 0 {
                this.eof = true;
            }
        }
    }
}

impl<IO: AsyncRead + AsyncWrite + Unpin> AsyncWrite for ServerStream<IO> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if data.is_empty() {
            return Poll::Ready(Ok(0));
        }
        if this.closing {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        }
        // Earlier records first: what was accepted is sent in order, and a
        // socket that takes nothing pushes back here.
        ready!(this.poll_send(cx))?;
        let chunk = &data[..data.len().min(PLAIN_MAX)];
        let n = match this
            .process(None, Write::Data(chunk))
            .map_err(|e| this.failed(cx, e))?
        {
            Next::Written(n) => n,
            _ => return Poll::Ready(Err(io::ErrorKind::NotConnected.into())),
        };
        // Eagerly, as tokio-rustls does: callers (the TCP proxy) may not flush.
        if let Poll::Ready(Err(e)) = this.poll_send(cx) {
            return Poll::Ready(Err(e));
        }
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_send(cx))?;
        Pin::new(&mut this.io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.closing {
            this.closing = true;
            // A connection rustls failed has nothing to close cleanly.
            let _ = this.process(None, Write::CloseNotify);
        }
        ready!(this.poll_send(cx))?;
        match ready!(Pin::new(&mut this.io).poll_shutdown(cx)) {
            Err(e) if e.kind() != io::ErrorKind::NotConnected => Poll::Ready(Err(e)),
            _ => Poll::Ready(Ok(())),
        }
    }
}

/// A record's plaintext: what fits into the reader's buffer, the rest into `plain`.
fn deliver(payload: &[u8], dst: Option<&mut ReadBuf<'_>>, plain: &mut Buf) {
    let n = dst.map_or(0, |dst| {
        let n = payload.len().min(dst.remaining());
        dst.put_slice(&payload[..n]);
        n
    });
    if n < payload.len() {
        plain.stash(&payload[n..]);
    }
}

/// A handshake or alert record into `out`.
fn encode_into(
    encode: &mut rustls::unbuffered::EncodeTlsData<'_, ServerConnectionData>,
    out: &mut Buf,
) -> io::Result<()> {
    let mut want = 1;
    loop {
        match encode.encode(out.room(want, usize::MAX)?) {
            Ok(n) => {
                out.filled(n);
                return Ok(());
            }
            Err(EncodeError::InsufficientSize(s)) if s.required_size > want => {
                want = s.required_size;
            }
            Err(e) => return Err(io::Error::other(e.to_string())),
        }
    }
}

/// `data` (at most one record's worth) encrypted into `out`.
fn encrypt(
    traffic: &mut WriteTraffic<'_, ServerConnectionData>,
    data: &[u8],
    out: &mut Buf,
) -> io::Result<usize> {
    let mut want = data.len() + OVERHEAD;
    loop {
        match traffic.encrypt(data, out.room(want, usize::MAX)?) {
            Ok(n) => {
                out.filled(n);
                return Ok(data.len());
            }
            Err(EncryptError::InsufficientSize(s)) if s.required_size > want => {
                want = s.required_size;
            }
            Err(e) => return Err(io::Error::other(e.to_string())),
        }
    }
}

fn close_notify(
    traffic: &mut WriteTraffic<'_, ServerConnectionData>,
    out: &mut Buf,
) -> io::Result<()> {
    let n = traffic
        .queue_close_notify(out.room(OVERHEAD, usize::MAX)?)
        .map_err(|e| io::Error::other(e.to_string()))?;
    out.filled(n);
    Ok(())
}

fn invalid_data(e: rustls::Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

/// Bytes in `data[start..end]`; `data` is empty (no memory) when the buffer is
/// released, and otherwise zero-filled once, when first allocated.
#[derive(Default)]
struct Buf {
    data: Vec<u8>,
    start: usize,
    end: usize,
}

impl Buf {
    fn has_buffer(&self) -> bool {
        !self.data.is_empty()
    }

    fn is_empty(&self) -> bool {
        self.start == self.end
    }

    fn len(&self) -> usize {
        self.end - self.start
    }

    fn pending_mut(&mut self) -> &mut [u8] {
        &mut self.data[self.start..self.end]
    }

    fn consume(&mut self, n: usize) {
        self.start += n;
        if self.start >= self.end {
            (self.start, self.end) = (0, 0);
        }
    }

    fn filled(&mut self, n: usize) {
        self.end += n;
    }

    fn append(&mut self, bytes: &[u8]) {
        let end = self.end + bytes.len();
        self.data[self.end..end].copy_from_slice(bytes);
        self.end = end;
    }

    /// At least `want` free bytes after the pending ones (taking a spare buffer,
    /// moving the pending bytes to the front, or growing, never beyond `max`).
    fn room(&mut self, want: usize, max: usize) -> io::Result<&mut [u8]> {
        if !self.has_buffer() {
            self.data = spare::take();
        }
        if self.data.len() - self.end < want && self.start > 0 {
            self.data.copy_within(self.start..self.end, 0);
            (self.start, self.end) = (0, self.end - self.start);
        }
        if self.data.len() - self.end < want {
            let size = (self.end + want).max(self.data.len() + RECORD_MAX);
            if size > max {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "tls: message too large",
                ));
            }
            self.data.resize(size, 0);
        }
        Ok(&mut self.data[self.end..])
    }

    /// Keep `bytes` for a later read (plaintext nobody had room for).
    fn stash(&mut self, bytes: &[u8]) {
        if self.is_empty() {
            self.data.clear();
            (self.start, self.end) = (0, 0);
        }
        self.data.truncate(self.end);
        self.data.extend_from_slice(bytes);
        self.end = self.data.len();
    }

    /// Give the memory back when nothing is pending: to the spares when it is a
    /// standard buffer, to the allocator otherwise.
    fn release_if_empty(&mut self) {
        if self.is_empty() && self.has_buffer() {
            spare::put(std::mem::take(&mut self.data));
        }
    }
}

/// Ciphertext buffers kept per worker thread between uses, so connections whose
/// requests follow each other reuse a few instead of allocating and zero-filling
/// 18 KiB per read or response. At most [`crate::spare::KEEP`] (≤ 0.6 MiB per worker).
mod spare {
    use super::RECORD_MAX;
    use crate::spare::List;

    thread_local! {
        static SPARE: List<Vec<u8>> = const { List::new(Vec::new()) };
    }

    /// A zero-filled buffer of `RECORD_MAX` bytes.
    pub(super) fn take() -> Vec<u8> {
        crate::spare::take(&SPARE).unwrap_or_else(|| vec![0; RECORD_MAX])
    }

    /// Keep `buf` when it has the standard size (one grown for a long handshake
    /// message, or a plaintext stash, goes back to the allocator).
    pub(super) fn put(buf: Vec<u8>) {
        if buf.len() == RECORD_MAX {
            crate::spare::keep(&SPARE, buf);
        }
    }

    #[cfg(test)]
    pub(super) fn kept() -> usize {
        crate::spare::kept(&SPARE)
    }
}

thread_local! {
    /// While a handshake step runs: the SNI name the certificate resolver saw.
    static SNI: RefCell<Option<Option<String>>> = const { RefCell::new(None) };
}

/// Called by the listener's certificate resolver with the (lowercased) SNI name
/// rustls chose by. The unbuffered connection does not expose it afterwards, and
/// the resolver runs on this thread inside `process_tls_records`, so the
/// handshake step that runs it collects it (see `sni_seen_during`). Resumed
/// handshakes resolve too (rustls resolves before it looks at resumption).
pub(super) fn note_sni(name: Option<&str>) {
    let _ = SNI.try_with(|s| {
        if let Some(slot) = s.borrow_mut().as_mut() {
            *slot = name.map(str::to_string);
        }
    });
}

/// Run `step` with SNI collection armed; what the resolver noted goes to `sni`.
fn sni_seen_during<R>(sni: &mut Option<String>, step: impl FnOnce() -> R) -> R {
    let _ = SNI.try_with(|s| *s.borrow_mut() = Some(None));
    let r = step();
    if let Ok(Some(Some(name))) = SNI.try_with(|s| s.borrow_mut().take()) {
        *sni = Some(name);
    }
    r
}

#[cfg(test)]
impl<IO> ServerStream<IO> {
    /// Which buffers the stream holds: (received, to send, plaintext).
    fn buffers(&self) -> (bool, bool, bool) {
        (
            self.incoming.has_buffer(),
            self.outgoing.has_buffer(),
            self.plain.has_buffer() || self.plain.data.capacity() > 0,
        )
    }
}

/// The stream against tokio-rustls's client over an in-memory pipe (whose
/// capacity sets how many bytes each read and write moves).
#[cfg(test)]
mod tests {
    use std::time::Duration;

    use anyhow::{ensure, Context as _, Result};
    use attache_filters::Stats;
    use rustls::pki_types::ServerName;
    use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
    use tokio_rustls::client::TlsStream as ClientStream;

    use super::super::testutil::{client_config, fixture, Fixture};
    use super::super::{CertPair, ListenerSettings, PeerInfo, ServerTls};
    use super::*;

    const BOUND: Duration = Duration::from_secs(10);

    fn server(f: &Fixture) -> Result<Arc<ServerTls>> {
        let settings = ListenerSettings {
            default_cert: Some(CertPair {
                cert_chain: f.server.cert.clone(),
                private_key: f.server.key.clone(),
            }),
            ..Default::default()
        };
        ServerTls::build(&settings, "l", &Stats::new()).map_err(|p| anyhow::anyhow!("{p:?}"))
    }

    /// A handshake over a pipe of `pipe` bytes: the server's stream and peer, and
    /// the client's stream.
    async fn connect(
        tls: &ServerTls,
        cfg: Arc<rustls::ClientConfig>,
        pipe: usize,
    ) -> Result<(
        ServerStream<DuplexStream>,
        PeerInfo,
        ClientStream<DuplexStream>,
    )> {
        let (c, s) = tokio::io::duplex(pipe);
        let name = ServerName::try_from("localhost")?;
        let client = tokio_rustls::TlsConnector::from(cfg).connect(name, c);
        let (client, server) =
            tokio::time::timeout(BOUND, async { tokio::join!(client, tls.accept(s)) })
                .await
                .context("handshake timed out")?;
        let (stream, peer) = server.map_err(|e| anyhow::anyhow!("{e}"))?;
        Ok((stream, peer, client?))
    }

    /// Whether a read would wait (polled once).
    async fn read_waits(s: &mut ServerStream<DuplexStream>) -> bool {
        let mut byte = [0u8; 1];
        let mut rb = ReadBuf::new(&mut byte);
        std::future::poll_fn(|cx| {
            Poll::Ready(Pin::new(&mut *s).poll_read(cx, &mut rb).is_pending())
        })
        .await
    }

    #[tokio::test]
    async fn an_idle_connection_holds_no_buffer() -> Result<()> {
        let f = fixture()?;
        let tls = server(&f)?;
        let (mut s, _, mut c) =
            connect(&tls, client_config(f.pki.roots()?, None, &[])?, 64 * 1024).await?;
        for _ in 0..3 {
            c.write_all(b"GET / HTTP/1.1\r\n\r\n").await?;
            c.flush().await?;
            let mut req = [0u8; 18];
            s.read_exact(&mut req).await?;
            assert_eq!(&req, b"GET / HTTP/1.1\r\n\r\n");
            s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
                .await?;
            s.flush().await?;
            let mut rsp = [0u8; 38];
            c.read_exact(&mut rsp).await?;
            ensure!(rsp.starts_with(b"HTTP/1.1 200 OK"));
            assert!(read_waits(&mut s).await, "nothing more was sent");
            assert_eq!(
                s.buffers(),
                (false, false, false),
                "idle, it holds no buffer"
            );
        }
        ensure!(
            spare::kept() >= 1,
            "the buffers went back to the worker's spares"
        );
        Ok(())
    }

    /// Records larger than the reader's buffer, writes larger than a record, and
    /// a pipe that moves 7 bytes at a time (every record and handshake message
    /// arrives in pieces).
    #[tokio::test]
    async fn data_crosses_record_and_read_boundaries_both_ways() -> Result<()> {
        let f = fixture()?;
        let tls = server(&f)?;
        for pipe in [7, 64 * 1024] {
            let (mut s, _, mut c) =
                connect(&tls, client_config(f.pki.roots()?, None, &[])?, pipe).await?;
            let up: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
            let down: Vec<u8> = (0..200_000u32).map(|i| (i % 241) as u8).collect();
            let send_up = async {
                c.write_all(&up).await?;
                c.flush().await?;
                let mut got = vec![0u8; down.len()];
                c.read_exact(&mut got).await?;
                anyhow::Ok(got)
            };
            let serve = async {
                let mut got = Vec::new();
                let mut chunk = [0u8; 1000];
                while got.len() < up.len() {
                    let n = s.read(&mut chunk).await?;
                    ensure!(n > 0, "early EOF");
                    got.extend_from_slice(&chunk[..n]);
                }
                s.write_all(&down).await?;
                s.flush().await?;
                anyhow::Ok(got)
            };
            let (c_got, s_got) = tokio::time::timeout(Duration::from_secs(60), async {
                tokio::join!(send_up, serve)
            })
            .await
            .context("transfer timed out")?;
            assert!(
                s_got? == up,
                "the server read what the client sent (pipe {pipe})"
            );
            assert!(
                c_got? == down,
                "the client read what the server sent (pipe {pipe})"
            );
        }
        Ok(())
    }

    #[tokio::test]
    async fn close_notify_reads_as_eof_and_shutdown_sends_it() -> Result<()> {
        let f = fixture()?;
        let tls = server(&f)?;
        let (mut s, _, mut c) =
            connect(&tls, client_config(f.pki.roots()?, None, &[])?, 4096).await?;
        c.write_all(b"last words").await?;
        c.shutdown().await?;
        let mut got = Vec::new();
        tokio::time::timeout(BOUND, s.read_to_end(&mut got)).await??;
        assert_eq!(got, b"last words");
        // Half-closed: the server still answers, then closes cleanly.
        s.write_all(b"bye").await?;
        s.shutdown().await?;
        let mut back = Vec::new();
        tokio::time::timeout(BOUND, c.read_to_end(&mut back))
            .await?
            .context("the client saw no close_notify")?;
        assert_eq!(back, b"bye");
        Ok(())
    }

    #[tokio::test]
    async fn eof_without_close_notify_is_unexpected_eof() -> Result<()> {
        let f = fixture()?;
        let tls = server(&f)?;
        let (mut s, _, c) = connect(&tls, client_config(f.pki.roots()?, None, &[])?, 4096).await?;
        drop(c.into_inner().0);
        let mut got = Vec::new();
        let err = tokio::time::timeout(BOUND, s.read_to_end(&mut got))
            .await?
            .expect_err("a truncated stream is an error");
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
        Ok(())
    }

    /// A record that does not decrypt is an `InvalidData` error carrying rustls's
    /// error, and the peer is told with an alert before the connection closes.
    #[tokio::test]
    async fn a_forged_record_fails_the_read_and_is_answered_with_an_alert() -> Result<()> {
        let f = fixture()?;
        let tls = server(&f)?;
        let (mut s, _, mut c) =
            connect(&tls, client_config(f.pki.roots()?, None, &[])?, 64 * 1024).await?;
        let mut forged = vec![0x17, 0x03, 0x03, 0x00, 0x20];
        forged.extend_from_slice(&[0xab; 0x20]);
        c.get_mut().0.write_all(&forged).await?;
        let mut buf = [0u8; 64];
        let err = tokio::time::timeout(BOUND, s.read(&mut buf))
            .await?
            .expect_err("a forged record is refused");
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        let inner = err
            .get_ref()
            .and_then(|e| e.downcast_ref::<rustls::Error>());
        assert_eq!(inner, Some(&rustls::Error::DecryptError), "{err:?}");
        drop(s);
        let seen = tokio::time::timeout(BOUND, c.read(&mut buf))
            .await?
            .expect_err("the client is told");
        let alert = seen
            .get_ref()
            .and_then(|e| e.downcast_ref::<rustls::Error>());
        assert_eq!(
            alert,
            Some(&rustls::Error::AlertReceived(
                rustls::AlertDescription::BadRecordMac
            )),
            "{seen:?}"
        );
        Ok(())
    }

    /// TLS 1.2 (explicit nonces, the server's Finished after the client's, a
    /// session ID cache for resumption) through the same stream.
    #[tokio::test]
    async fn tls12_serves_and_resumes() -> Result<()> {
        let f = fixture()?;
        let tls = server(&f)?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let cfg = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS12])?
            .with_root_certificates(f.pki.roots()?)
            .with_no_client_auth();
        let cfg = Arc::new(cfg);
        for round in 0..2 {
            let (mut s, peer, mut c) = connect(&tls, cfg.clone(), 4096).await?;
            assert_eq!(peer.version, "TLSv1.2");
            assert_eq!(peer.sni.as_deref(), Some("localhost"), "round {round}");
            let big = vec![7u8; 40_000];
            let (sent, got) = tokio::join!(
                async {
                    c.write_all(&big).await?;
                    c.flush().await?;
                    let mut back = vec![0u8; big.len()];
                    c.read_exact(&mut back).await?;
                    anyhow::Ok(back)
                },
                async {
                    let mut got = vec![0u8; big.len()];
                    s.read_exact(&mut got).await?;
                    s.write_all(&got).await?;
                    s.flush().await?;
                    anyhow::Ok(got)
                }
            );
            assert!(sent? == big && got? == big, "round {round}");
            let kind = c.get_ref().1.handshake_kind();
            let want = if round == 0 {
                rustls::HandshakeKind::Full
            } else {
                rustls::HandshakeKind::Resumed
            };
            assert_eq!(kind, Some(want), "round {round}");
        }
        Ok(())
    }

    /// The SNI name comes from the certificate resolver, which rustls also runs
    /// for resumed handshakes.
    #[tokio::test]
    async fn sni_is_reported_for_full_and_resumed_handshakes() -> Result<()> {
        let f = fixture()?;
        let tls = server(&f)?;
        let cfg = client_config(f.pki.roots()?, None, &[])?;
        for round in 0..2 {
            let (mut s, peer, mut c) = connect(&tls, cfg.clone(), 64 * 1024).await?;
            assert_eq!(peer.sni.as_deref(), Some("localhost"), "round {round}");
            assert_eq!(peer.version, "TLSv1.3");
            // An exchange, so that the client reads the session tickets.
            c.write_all(b"x").await?;
            c.flush().await?;
            let mut b = [0u8; 1];
            s.read_exact(&mut b).await?;
            s.write_all(b"y").await?;
            s.flush().await?;
            c.read_exact(&mut b).await?;
            let kind = c.get_ref().1.handshake_kind();
            let want = if round == 0 {
                rustls::HandshakeKind::Full
            } else {
                rustls::HandshakeKind::Resumed
            };
            assert_eq!(kind, Some(want), "round {round}");
        }
        Ok(())
    }
}
