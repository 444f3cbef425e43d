//! Downstream HTTP: one task per connection (HTTP/1.1 with keep-alive and pipelining,
//! or HTTP/2 by prior knowledge or ALPN, detected per connection), proxying each
//! request through the listener's current route table. HTTP/1 is attache's own
//! codec (`h1`); hyper serves HTTP/2.

mod body;
mod forwarding;
pub mod grpc;
mod grpc_web;
mod h1;
mod h2;
pub mod mirror;
pub use body::{civil_from_days, rfc3339};
pub mod normalize;
mod proxy;
pub mod respond;
mod stream;
pub mod target;

#[cfg(any(test, feature = "fuzzing"))]
pub(crate) use h1::{parse_for_fuzzing, FuzzParsed};

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::watch;

pub use body::RespBody;
pub use forwarding::strip_hop_by_hop;

use crate::accesslog::AccessLog;
use crate::config::snapshot::Listener;

/// `Box::pin(make())`, with the future made in its box. `Box::pin(fut)` builds the
/// future on the stack and then copies all of it (its largest state, mostly
/// uninitialized at the start) into the allocation: ~300 instructions per request
/// for the request future, and again for the response writer's, under callgrind.
/// Allocated first, the future is written straight into the box (only its
/// arguments are copied).
pub(crate) fn in_box<F>(make: impl FnOnce() -> F) -> std::pin::Pin<Box<F>> {
    let slot = Box::<F>::new_uninit();
    Box::into_pin(Box::write(slot, make()))
}

/// What a running listener serves right now; swapped on reload.
pub struct Runtime {
    pub listener: Arc<Listener>,
    pub log: Option<AccessLog>,
    /// Whether a stream's duration is used: by the access log or by a filter (any
    /// chain of the listener is non-empty; `on_complete` gets `StreamCtx.duration`).
    /// When not, no clock is read per request.
    pub timed: bool,
}

impl Runtime {
    pub fn new(listener: Arc<Listener>, log: Option<AccessLog>) -> Runtime {
        let filters = listener.http.as_ref().is_some_and(|h| {
            !h.filters.is_empty()
                || h.router
                    .vhosts
                    .iter()
                    .flat_map(|vh| vh.routes.iter())
                    .any(|r| !r.filters.is_empty())
        });
        Runtime {
            timed: log.is_some() || filters,
            listener,
            log,
        }
    }
}

/// Per-connection facts.
pub struct ConnCtx {
    pub slot: Arc<ArcSwap<Runtime>>,
    pub remote: SocketAddr,
    pub remote_ip: http::HeaderValue,
    /// `remote` as text, made on first use (only the access log needs it).
    remote_str: std::sync::OnceLock<String>,
    pub tls: bool,
    /// The negotiated TLS version and cipher suite (`TLSv1.3`,
    /// `TLS13_AES_128_GCM_SHA256`), and the SNI name the client sent.
    pub tls_version: &'static str,
    pub tls_cipher: &'static str,
    pub sni: Option<Box<str>>,
    /// Verified client certificate SANs (URI SANs, then DNS SANs).
    pub peer_sans: Vec<String>,
    /// The verified client certificate, on mTLS listeners.
    pub peer: Option<crate::tls::PeerInfo>,
    /// What to do with `x-forwarded-client-cert`.
    pub xfcc: crate::config::types::ForwardClientCert,
    /// Set when the proxy drains: HTTP/1 responses then carry `Connection: close`,
    /// so keep-alive clients close the connection themselves instead of racing a
    /// request against our close.
    pub draining: std::sync::atomic::AtomicBool,
    /// Handed to the upstream call as the request-byte counter when nothing will read
    /// the count (no access log, or no streamed body), instead of allocating one
    /// per request. Written, never read.
    pub unread_bytes_in: Arc<std::sync::atomic::AtomicU64>,
    /// Set (for the whole process) once the drain deadline cuts open streams.
    pub drain_cut: Arc<std::sync::atomic::AtomicBool>,
    /// Keeps the accepted connection counted as open while anything holds this
    /// context (the connection, or an upgrade tunnel that outlives it).
    pub open: Option<crate::server::OpenGuard>,
}

impl ConnCtx {
    /// A plain-TCP connection's facts; TLS fills in the peer afterwards.
    pub fn new(slot: Arc<ArcSwap<Runtime>>, remote: SocketAddr) -> ConnCtx {
        ConnCtx {
            slot,
            remote,
            remote_ip: ip_header(remote.ip()),
            remote_str: std::sync::OnceLock::new(),
            tls: false,
            tls_version: "",
            tls_cipher: "",
            sni: None,
            peer_sans: Vec::new(),
            peer: None,
            xfcc: crate::config::types::ForwardClientCert::SanitizeSet,
            draining: Default::default(),
            unread_bytes_in: Default::default(),
            drain_cut: Default::default(),
            open: None,
        }
    }

    /// Who the connection is, for RBAC.
    pub fn rbac_peer(&self) -> crate::rbac::Peer<'_> {
        crate::rbac::Peer {
            source: self.remote.ip(),
            sans: &self.peer_sans,
            authenticated: self.peer.is_some(),
        }
    }

    /// The peer's `ip:port`.
    pub fn remote_str(&self) -> &str {
        self.remote_str.get_or_init(|| self.remote.to_string())
    }
}

/// The peer address as a header value (`x-forwarded-for`), formatted on the stack.
fn ip_header(ip: std::net::IpAddr) -> http::HeaderValue {
    use std::io::Write;
    let unknown = http::HeaderValue::from_static("unknown");
    let mut buf = [0u8; 64];
    let mut w = &mut buf[..];
    if write!(w, "{ip}").is_err() {
        return unknown;
    }
    let len = 64 - w.len();
    http::HeaderValue::from_bytes(&buf[..len]).unwrap_or(unknown)
}

/// Serve one downstream connection until it closes, or until `drain` fires, then
/// shut it down gracefully (GOAWAY / `Connection: close` after the current request),
/// waiting at most `drain_timeout`.
pub async fn serve_connection<IO>(
    io: IO,
    conn: Arc<ConnCtx>,
    mut drain: watch::Receiver<bool>,
    drain_timeout: Duration,
) where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let opened = tokio::time::Instant::now();
    let limits = {
        let rt = conn.slot.load();
        let Some(h) = rt.listener.http.as_ref() else {
            return;
        };
        h1::Limits {
            idle: h.idle_timeout,
            head: h.request_head_timeout,
            max_head: h.max_header_bytes.max(8192),
            max_headers: h.max_headers,
        }
    };
    // attache's own HTTP/1 codec serves every HTTP/1 request; a connection that
    // opens with the HTTP/2 preface (prior knowledge, or TLS with ALPN `h2`) goes
    // to hyper, with the bytes the codec read.
    let Some(rest) = h1::serve(io, &conn, &limits, &mut drain, opened, drain_timeout).await else {
        return;
    };
    // Boxed: hyper's connection state is allocated only for connections it takes,
    // so the task of every connection is sized by the own codec's state.
    Box::pin(serve_h2(rest, conn, drain, drain_timeout, opened)).await
}

/// Serve an HTTP/2 connection with hyper.
async fn serve_h2<IO>(
    io: IO,
    conn: Arc<ConnCtx>,
    mut drain: watch::Receiver<bool>,
    drain_timeout: Duration,
    opened: tokio::time::Instant,
) where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let rt = conn.slot.load_full();
    let Some(h) = rt.listener.http.as_ref() else {
        return;
    };
    let mut b = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
    let h2 = &h.http2;
    b.timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(h.max_header_bytes).unwrap_or(u32::MAX))
        .max_concurrent_streams(h2.max_concurrent_streams)
        .initial_stream_window_size(h2.initial_stream_window_size)
        .initial_connection_window_size(h2.initial_connection_window_size)
        .max_frame_size(h2.max_frame_size)
        .keep_alive_interval(Some(Duration::from_secs(60)));
    drop(rt);
    let c2 = conn.clone();
    let svc = service_fn(move |req: http::Request<hyper::body::Incoming>| {
        stream_future(req.map(DownBody::Hyper), c2.clone())
    });
    let fut = b.serve_connection(TokioIo::new(io), svc);
    tokio::pin!(fut);
    if !*drain.borrow() {
        tokio::select! {
            r = fut.as_mut() => {
                if let Err(e) = r {
                    tracing::debug!(error = %e, "downstream connection ended with an error");
                }
                return;
            }
            _ = drain.changed() => {}
        }
    }
    // Draining. A connection opened moments ago most likely carries a request the
    // server has not read yet; shutting it down now would close it unanswered (or
    // reset it). Give it a short grace first; older idle ones close right away.
    conn.draining
        .store(true, std::sync::atomic::Ordering::Release);
    let now = tokio::time::Instant::now();
    let grace = (opened + YOUNG_CONNECTION_GRACE).max(now + KEEPALIVE_GRACE.min(drain_timeout / 2));
    let deadline = opened.max(tokio::time::Instant::now()) + drain_timeout;
    if tokio::time::timeout_at(grace, fut.as_mut()).await.is_ok() {
        return;
    }
    fut.as_mut().graceful_shutdown();
    if tokio::time::timeout_at(deadline, fut.as_mut())
        .await
        .is_err()
    {
        // Streams still open are cut by the drain deadline, not the client.
        conn.drain_cut
            .store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

/// The future hyper runs for one request: on HTTP/2, spawned as a task per stream.
/// It holds the request future boxed: tokio moves a task's future by value several
/// times (spawning, storing it in the task, completing), which for the ~6 KiB
/// request future itself cost ~4,000 instructions of copying per HTTP/2 request
/// (issue 15 §3).
fn stream_future(
    req: http::Request<DownBody>,
    conn: Arc<ConnCtx>,
) -> impl std::future::Future<Output = Result<http::Response<RespBody>, Infallible>> {
    let handle = in_box(|| proxy::handle(req, conn));
    async move { Ok(handle.await) }
}

/// A request body from the client: none, read by hyper (HTTP/2), or by the own
/// HTTP/1 codec.
pub enum DownBody {
    Empty,
    Hyper(hyper::body::Incoming),
    H1(h1::H1Body),
    /// An HTTP/2 body whose first frames were read before forwarding (`h2::preread`).
    Replay(Box<h2::Replay<DownBody>>),
    /// A gRPC-Web `-text` body, base64-decoded on its way upstream.
    WebText(Box<grpc_web::TextDecode>),
}

impl http_body::Body for DownBody {
    type Data = bytes::Bytes;
    type Error = crate::upstream::h1::BoxError;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<bytes::Bytes>, Self::Error>>> {
        match self.get_mut() {
            DownBody::Empty => std::task::Poll::Ready(None),
            DownBody::Hyper(b) => std::pin::Pin::new(b).poll_frame(cx).map_err(Into::into),
            DownBody::H1(b) => std::pin::Pin::new(b).poll_frame(cx).map_err(Into::into),
            DownBody::Replay(b) => std::pin::Pin::new(&mut **b).poll_frame(cx),
            DownBody::WebText(b) => std::pin::Pin::new(b.as_mut()).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            DownBody::Empty => true,
            DownBody::Hyper(b) => b.is_end_stream(),
            DownBody::H1(b) => b.is_end_stream(),
            DownBody::Replay(b) => b.is_end_stream(),
            DownBody::WebText(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> http_body::SizeHint {
        match self {
            DownBody::Empty => http_body::SizeHint::with_exact(0),
            DownBody::Hyper(b) => b.size_hint(),
            DownBody::H1(b) => b.size_hint(),
            DownBody::Replay(b) => b.size_hint(),
            DownBody::WebText(b) => b.size_hint(),
        }
    }
}

/// Count and log a reply sent before a request reached `proxy::handle` (flag
/// `DPE`): the HTTP/1 codec refusing a head or its framing, or a request-head
/// timeout. Its reason, its status, and an access-log line with an
/// empty method and path.
fn record_early_reply(
    conn: &ConnCtx,
    status: u16,
    reason: crate::error::Reject,
    opened: tokio::time::Instant,
) {
    let rt = conn.slot.load();
    let stats = &rt.listener.stats;
    stats.count_flag(crate::flag::Flag::DownstreamProtocolError);
    stats.count_reject(reason);
    stats.count_status(status);
    if let Some(log) = &rt.log {
        let rec = crate::accesslog::Record {
            start_time: Some(std::time::SystemTime::now()),
            listener: &rt.listener.name,
            protocol: "HTTP/1.1",
            status,
            duration: Some(opened.elapsed()),
            response_flag: crate::flag::Flag::DownstreamProtocolError.as_str(),
            downstream: conn.remote_str(),
            ..conn.tls_record()
        };
        log.write(&rec);
    }
}

impl ConnCtx {
    /// The connection's part of an access-log record: peer and TLS facts.
    pub fn tls_record(&self) -> crate::accesslog::Record<'_> {
        let peer = self.peer.as_ref();
        fn first(v: Option<&Vec<String>>) -> &str {
            v.and_then(|v| v.first()).map_or("", String::as_str)
        }
        crate::accesslog::Record {
            peer_san: first(Some(&self.peer_sans)),
            peer_uri_san: first(peer.map(|p| &p.uri_sans)),
            peer_dns_san: first(peer.map(|p| &p.dns_sans)),
            peer_subject: peer.map_or("", |p| p.subject.as_str()),
            tls_version: self.tls_version,
            tls_cipher: self.tls_cipher,
            sni: self.sni.as_deref().unwrap_or(""),
            ..Default::default()
        }
    }
}

/// How long a just-accepted connection may run before a drain shuts it down.
const YOUNG_CONNECTION_GRACE: Duration = Duration::from_millis(300);
/// How long a busy keep-alive connection may keep sending requests once draining
/// (each answered with `Connection: close`) before an idle close.
const KEEPALIVE_GRACE: Duration = Duration::from_secs(1);

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A runtime for a listener answering everything with a direct 200 (plus the
    /// given `filters:` YAML).
    pub(crate) fn runtime(filters: &str) -> Runtime {
        let yaml = format!(
            r#"
admin: {{ address: "127.0.0.1:0" }}
listeners:
  - name: l
    address: 127.0.0.1:0
    protocol: http{filters}
    virtual_hosts:
      - name: all
        domains: ["*"]
        routes:
          - match: {{ prefix: / }}
            direct_response: {{ status: 200 }}
"#
        );
        let stats = crate::stats::Stats::new();
        let services = attache_filters::Services::default();
        let (snap, _) =
            crate::config::load_str("t.yaml", &yaml, &|_| None, &stats, &services, false)
                .unwrap_or_else(|d| panic!("{d:?}"));
        Runtime::new(snap.listeners[0].clone(), None)
    }

    #[test]
    fn peer_address_texts() {
        for (addr, ip) in [
            ("192.0.2.7:4431", "192.0.2.7"),
            ("[2001:db8::1]:80", "2001:db8::1"),
            (
                "[ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255]:1",
                "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
            ),
        ] {
            let addr: SocketAddr = addr.parse().unwrap_or_else(|e| panic!("{addr}: {e}"));
            let slot = Arc::new(ArcSwap::from_pointee(runtime("")));
            let conn = ConnCtx::new(slot, addr);
            assert_eq!(conn.remote_ip, ip);
            assert_eq!(conn.remote_str(), addr.to_string());
        }
    }

    /// hyper spawns this future per HTTP/2 stream, and tokio copies a task's
    /// future several times: it must stay a pointer to the request future (it was
    /// the whole ~6 KiB request future before issue 15 §3).
    #[test]
    fn the_per_stream_task_future_stays_small() {
        let slot = Arc::new(ArcSwap::from_pointee(runtime("")));
        let conn = Arc::new(ConnCtx::new(slot, ([127, 0, 0, 1], 1).into()));
        let fut = stream_future(http::Request::new(DownBody::Empty), conn);
        let size = std::mem::size_of_val(&fut);
        assert!(size <= 64, "the per-stream future grew to {size} bytes");
    }

    #[test]
    fn streams_are_timed_only_when_a_filter_or_access_log_uses_it() {
        assert!(!runtime("").timed);
        assert!(runtime("\n    filters:\n      - sli: {}").timed);
    }
}
