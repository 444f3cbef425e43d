//! The upstream connector behind each cluster's pooled client: TCP with the cluster's
//! connect timeout and TCP_NODELAY, then (for `tls:` clusters) a rustls handshake with
//! the cluster's CA, SNI, SAN checks and client certificate. A handshake failure is a
//! connect failure (503 UF), like Envoy.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::Uri;
use hyper::rt::{Read, ReadBufCursor, Write};
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use crate::tls::ClientTls;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[derive(Clone)]
pub struct Connector {
    pub connect_timeout: Duration,
    pub tls: Option<Arc<ClientTls>>,
    /// The cluster's `max_connections` breaker (HTTP pool connections).
    pub limit: Option<Arc<super::breakers::Gate>>,
}

/// The connection was not opened: the cluster is at `max_connections`.
#[derive(Debug, thiserror::Error)]
#[error("upstream connection limit reached")]
pub struct Overflow;

/// True when `e` (or its cause chain) is a connection-limit overflow.
pub fn is_overflow(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if err.is::<Overflow>() {
            return true;
        }
        cur = err.source();
    }
    false
}

/// A connected upstream byte stream (tokio traits), plain or TLS.
pub enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl tokio::io::AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl tokio::io::AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }
    fn is_write_vectored(&self) -> bool {
        match self {
            Stream::Plain(s) => s.is_write_vectored(),
            Stream::Tls(s) => s.is_write_vectored(),
        }
    }
}

/// [`Stream`] for hyper's client, reporting ALPN h2 to the pool; holds its slot in
/// the connection breaker while open.
pub struct UpstreamIo {
    io: TokioIo<Stream>,
    _slot: Option<super::breakers::Permit>,
}

impl Connection for UpstreamIo {
    fn connected(&self) -> Connected {
        match self.io.inner() {
            Stream::Tls(s) if s.get_ref().1.alpn_protocol() == Some(b"h2") => {
                Connected::new().negotiated_h2()
            }
            _ => Connected::new(),
        }
    }
}

impl Read for UpstreamIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
    }
}

impl Write for UpstreamIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

impl Connector {
    /// TCP connect (+ TLS) to `addr` within the connect timeout.
    pub async fn connect_addr(&self, addr: std::net::SocketAddr) -> io::Result<Stream> {
        let fut = async {
            let tcp = TcpStream::connect(addr).await?;
            let _ = tcp.set_nodelay(true);
            match &self.tls {
                None => Ok(Stream::Plain(tcp)),
                Some(tls) => Ok(Stream::Tls(Box::new(tls.connect(tcp).await?))),
            }
        };
        match tokio::time::timeout(self.connect_timeout, fut).await {
            Ok(r) => r,
            Err(_) => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "upstream connect timeout",
            )),
        }
    }
}

impl tower_service::Service<Uri> for Connector {
    type Response = UpstreamIo;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<UpstreamIo, BoxError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let me = self.clone();
        let permit = match &self.limit {
            None => None,
            Some(g) => match g.try_acquire() {
                Some(p) => Some(p),
                None => return Box::pin(async { Err(Box::new(Overflow) as BoxError) }),
            },
        };
        Box::pin(async move {
            // URIs are built from endpoint socket addresses, so this always parses.
            let addr: std::net::SocketAddr = uri
                .authority()
                .map(|a| a.as_str())
                .unwrap_or("")
                .parse()
                .map_err(|_| -> BoxError { format!("bad upstream authority in {uri}").into() })?;
            me.connect_addr(addr)
                .await
                .map(|s| UpstreamIo {
                    io: TokioIo::new(s),
                    _slot: permit,
                })
                .map_err(|e| -> BoxError { Box::new(e) })
        })
    }
}
