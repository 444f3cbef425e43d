//! The upstream connector behind each endpoint's pool and the TCP/Thrift proxies: TCP with the cluster's
//! connect timeout and TCP_NODELAY, then (for `tls:` clusters) a rustls handshake with
//! the cluster's CA, SNI, SAN checks and client certificate. A handshake failure is a
//! connect failure (503 UF), like Envoy.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use crate::tls::ClientTls;

#[derive(Clone)]
pub struct Connector {
    pub connect_timeout: Duration,
    pub tls: Option<Arc<ClientTls>>,
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

impl Connector {
    /// TCP connect (+ TLS) to `addr` within the connect timeout.
    pub async fn connect_addr(&self, addr: std::net::SocketAddr) -> io::Result<Stream> {
        let fut = async {
            let tcp = connect_tcp(addr).await?;
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

/// Attempts at a TCP connect that fails for a local reason.
const LOCAL_ATTEMPTS: u32 = 3;

/// A connect that failed on this host rather than at the upstream: no local
/// address or port free (`EADDRNOTAVAIL`, ports still in TIME_WAIT after a burst),
/// or the kernel out of buffers for a moment. Worth a retry to the same endpoint;
/// the upstream never saw it, so it is not the endpoint's failure either.
fn is_local_failure(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::AddrNotAvailable
        || matches!(e.raw_os_error(), Some(libc::ENOBUFS | libc::EAGAIN))
}

/// `TcpStream::connect`, tried again (within the caller's connect timeout) after a
/// local failure, with a short pause for ports or buffers to free up.
async fn connect_tcp(addr: std::net::SocketAddr) -> io::Result<TcpStream> {
    let mut attempt = 1;
    loop {
        match TcpStream::connect(addr).await {
            Err(e) if attempt < LOCAL_ATTEMPTS && is_local_failure(&e) => {
                tracing::debug!(%addr, error = %e, attempt, "local connect failure; retrying");
                tokio::time::sleep(std::time::Duration::from_millis(5 * u64::from(attempt))).await;
                attempt += 1;
            }
            r => return r,
        }
    }
}

#[cfg(test)]
mod local_failure_tests {
    use super::*;

    #[test]
    fn only_local_errors_are_retried() {
        let e = |code| io::Error::from_raw_os_error(code);
        assert!(is_local_failure(&e(libc::EADDRNOTAVAIL)));
        assert!(is_local_failure(&e(libc::ENOBUFS)));
        assert!(!is_local_failure(&e(libc::ECONNREFUSED)));
        assert!(!is_local_failure(&e(libc::ETIMEDOUT)));
    }
}
