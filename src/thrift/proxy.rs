//! The per-connection Thrift proxy: decode calls, route them, forward each over a
//! pooled upstream connection, write replies back in order, count outcomes.
//!
//! Calls on one downstream connection are handled one after another by default;
//! with `max_concurrent_calls` > 1 pipelined calls are forwarded at once. Either
//! way they are answered in the order they arrived. Each upstream connection
//! carries one call at a time, so sequence ids pass through unchanged in both
//! directions.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use attache_filters::{sli, Stats};
use bytes::{Bytes, BytesMut};
use futures_util::stream::FuturesOrdered;
use futures_util::StreamExt;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::watch;

use crate::flag::Flag;

use super::codec::{
    self, answer_with_exception, inspect_reply, transcode, AppExceptionKind, Decoder, ErrorKind,
    Header, Message, MessageType, Prefix, Protocol, ReplyOutcome, Transport,
};
use super::routes::{RetryPolicy, Route, Routes};
use super::stats::{Metrics, Outcome};
use super::upstream::{self, Clusters, Conn, DialError, Framing};
use crate::upstream::{Attempt, Cluster, Endpoint, Outcome as Reported, Refused};

/// Read buffer growth step.
const READ_CHUNK: usize = 16 * 1024;
/// Below this much spare room the read buffer grows before the next read.
const MIN_READ_ROOM: usize = 4 * 1024;
/// A frame length and a payload up to this size go out in one write.
const COALESCE_LIMIT: usize = 16 * 1024;
/// Default downstream idle timeout (no bytes from the client, no call in flight).
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(3600);
/// Default time to receive one whole call once its first byte arrived.
pub const DEFAULT_MESSAGE_TIMEOUT: Duration = Duration::from_secs(30);

/// Everything a Thrift listener's connections share: compiled routes, metric
/// handles and the clusters (whose endpoints keep the idle upstream connections).
/// Built once per config load.
pub struct ListenerCtx {
    name: String,
    routes: Routes,
    metrics: Metrics,
    clusters: Clusters,
    /// `None`: connections may stay idle forever.
    idle_timeout: Option<Duration>,
    /// `None`: a started call may take forever to arrive.
    message_timeout: Option<Duration>,
    /// The process's `/sli` board, when the caller wires one in.
    sli: Option<sli::Board>,
    /// Pipelined calls of one connection forwarded at once; 1 = one at a time.
    max_concurrent_calls: usize,
    /// The listener's `rbac:`, checked on every call before routing.
    rbac: Option<Arc<crate::rbac::Rbac>>,
}

/// Default `max_concurrent_calls`: one call at a time, the order a plain Thrift
/// server processes one connection's calls in.
pub const DEFAULT_MAX_CONCURRENT_CALLS: u32 = 1;
/// Upper bound of `max_concurrent_calls`.
pub const MAX_CONCURRENT_CALLS: u32 = 1024;

/// A Thrift listener's `thrift:` block, compiled with every default applied
/// (`config::compile::thrift`).
#[derive(Debug, Clone)]
pub struct Settings {
    pub routes: Routes,
    /// `None`: connections may stay idle forever.
    pub idle_timeout: Option<Duration>,
    /// `None`: a started call may take forever to arrive.
    pub message_timeout: Option<Duration>,
    /// Pipelined calls of one connection forwarded at once; 1 = one at a time.
    pub max_concurrent_calls: usize,
}

impl std::fmt::Debug for ListenerCtx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ListenerCtx")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl ListenerCtx {
    /// A listener's context over its compiled settings; resolves its metrics.
    pub fn new(
        listener: &str,
        settings: Settings,
        stats: &Stats,
        clusters: Clusters,
    ) -> ListenerCtx {
        let routes = settings.routes;
        let metrics = Metrics::new(
            stats,
            listener,
            routes.method_labels(),
            routes.retry_route_names(),
        );
        ListenerCtx {
            name: listener.to_owned(),
            routes,
            metrics,
            clusters,
            idle_timeout: settings.idle_timeout,
            message_timeout: settings.message_timeout,
            sli: None,
            max_concurrent_calls: settings.max_concurrent_calls,
            rbac: None,
        }
    }

    /// Record every call's outcome on the `/sli` board too, under (listener, route
    /// name); calls with no route under [`sli::NO_ROUTE`]. A call is an SLI error
    /// when the upstream raised a `TApplicationException` or the proxy answered
    /// itself; a declared IDL exception is the service's answer, not an error.
    pub fn with_sli(mut self, board: sli::Board) -> ListenerCtx {
        self.sli = Some(board);
        self
    }

    /// Authorize every call with `rbac` (denied: an `UNKNOWN` application exception
    /// saying so; never forwarded).
    pub fn with_rbac(mut self, rbac: Option<Arc<crate::rbac::Rbac>>) -> ListenerCtx {
        self.rbac = rbac;
        self
    }

    pub fn routes(&self) -> &Routes {
        &self.routes
    }
}

/// Why a call could not be forwarded; each becomes an `INTERNAL_ERROR` reply.
#[derive(Debug, thiserror::Error)]
enum CallError {
    #[error("no healthy upstream")]
    NoHealthyUpstream,
    #[error("upstream overflow: a circuit breaker is full")]
    Overflow,
    #[error("upstream connect failed: {0}")]
    ConnectFailed(io::Error),
    #[error("upstream connect timeout")]
    ConnectTimeout,
    #[error("upstream request timeout")]
    Timeout,
    #[error("upstream connection reset: {0}")]
    Reset(io::Error),
    #[error("upstream closed the connection before replying")]
    Closed,
    #[error("upstream protocol error: {0}")]
    Protocol(codec::Error),
    #[error("upstream reply does not answer the call")]
    Mismatch,
    #[error("binary/compact translation failed: {0}")]
    Translation(codec::Error),
}

impl CallError {
    /// The response flag (Envoy's meanings).
    fn flag(&self) -> Flag {
        match self {
            CallError::NoHealthyUpstream => Flag::NoHealthyUpstream,
            CallError::Overflow => Flag::Overflow,
            CallError::ConnectFailed(_) | CallError::ConnectTimeout => Flag::ConnectFailure,
            CallError::Timeout => Flag::UpstreamTimeout,
            CallError::Reset(_) | CallError::Closed => Flag::UpstreamReset,
            CallError::Protocol(_) | CallError::Mismatch => Flag::UpstreamProtocolError,
            CallError::Translation(_) => Flag::UpstreamProtocolError,
        }
    }
}

/// What to write back for one call.
enum Answer {
    Nothing,
    /// A local reply, already encoded into the connection's scratch buffer.
    Local,
    Forward(Option<Prefix>, Bytes),
}

/// Serve one downstream connection until the peer closes it, stays idle past the
/// listener's `idle_timeout`, or sends something undecodable (answered with an
/// exception when its header decoded, then closed).
pub async fn serve_connection<IO>(io: IO, peer: SocketAddr, ctx: Arc<ListenerCtx>)
where
    IO: AsyncRead + AsyncWrite + Unpin + Send,
{
    let who = crate::rbac::Peer {
        source: peer.ip(),
        sans: &[],
        authenticated: false,
    };
    serve_connection_until(io, peer, who, ctx, None).await
}

/// [`serve_connection`], and once `drain` turns true: finish the call in flight and
/// any complete calls already received, then close between calls (a client that
/// has sent part of a call gets to finish it, bounded by the idle timeout).
pub async fn serve_connection_until<IO>(
    mut io: IO,
    peer: SocketAddr,
    who: crate::rbac::Peer<'_>,
    ctx: Arc<ListenerCtx>,
    mut drain: Option<watch::Receiver<bool>>,
) where
    IO: AsyncRead + AsyncWrite + Unpin + Send,
{
    if ctx.max_concurrent_calls > 1 {
        let max = ctx.max_concurrent_calls;
        return serve_concurrent(io, peer, &who, ctx, drain, max).await;
    }
    let mut decoder = Decoder::new(ctx.routes.decoder_config());
    let mut buf = BytesMut::with_capacity(READ_CHUNK);
    let mut out = BytesMut::new();
    let mut draining = drain.as_ref().is_some_and(|d| *d.borrow());
    // When the call at the front of `buf` must be complete (set at its first byte).
    let mut call_deadline: Option<tokio::time::Instant> = None;
    loop {
        match decoder.decode(&mut buf) {
            Ok(Some(msg)) => {
                call_deadline = None;
                let answer = match ctx.handle(msg, peer, &who, &mut out).await {
                    Ok(a) => a,
                    Err(()) => return,
                };
                if write_answer(&mut io, answer, &mut out).await.is_err() {
                    return;
                }
                continue;
            }
            Ok(None) => {
                if draining && buf.is_empty() {
                    let _ = io.shutdown().await;
                    return;
                }
            }
            Err(e) => return bad_input(&ctx, peer, &e, &mut io, &mut out).await,
        }
        if buf.capacity() - buf.len() < MIN_READ_ROOM {
            buf.reserve(READ_CHUNK);
        }
        if !buf.is_empty() && call_deadline.is_none() {
            call_deadline = ctx.message_timeout.map(|t| tokio::time::Instant::now() + t);
        }
        let read = tokio::select! {
            r = read_bounded(&mut io, &mut buf, ctx.idle_timeout, call_deadline) => r,
            () = drained(&mut drain), if !draining => {
                draining = true;
                continue;
            }
        };
        match read {
            Ok(0) => {
                if !buf.is_empty() {
                    ctx.metrics.decode_error(Some(ErrorKind::Truncated));
                }
                return;
            }
            Ok(_) => {}
            Err(stop) => return read_stopped(&ctx, peer, stop, &mut io).await,
        }
    }
}

/// Close the connection on undecodable input: counted, and answered with a
/// `PROTOCOL_ERROR` exception first when the call's header decoded.
async fn bad_input<IO: AsyncWrite + Unpin>(
    ctx: &ListenerCtx,
    peer: SocketAddr,
    e: &codec::Error,
    io: &mut IO,
    out: &mut BytesMut,
) {
    ctx.metrics.decode_error(Some(e.kind()));
    tracing::debug!(listener = %ctx.name, %peer, error = %e, "closing thrift connection");
    if let Some(h) = e.header() {
        if h.message_type == MessageType::Call {
            ctx.metrics.local_reply.count(Flag::DownstreamProtocolError);
            out.clear();
            let kind = match e.kind() {
                ErrorKind::UnsupportedTransform => AppExceptionKind::InvalidTransform,
                _ => AppExceptionKind::ProtocolError,
            };
            local_reply(out, h, kind, &e.to_string());
            let _ = write_all_flush(io, out).await;
        }
    }
    let _ = io.shutdown().await;
}

/// Close the connection after a read that ended without bytes.
async fn read_stopped<IO: AsyncWrite + Unpin>(
    ctx: &ListenerCtx,
    peer: SocketAddr,
    stop: ReadStop,
    io: &mut IO,
) {
    match stop {
        ReadStop::Io => return,
        ReadStop::Idle => {
            tracing::debug!(listener = %ctx.name, %peer, "thrift connection idle; closing");
        }
        ReadStop::MessageTimeout => {
            ctx.metrics.message_timeout.inc();
            tracing::debug!(listener = %ctx.name, %peer, "thrift call incomplete past message_timeout; closing");
        }
    }
    let _ = io.shutdown().await;
}

/// Write one call's answer; `out` holds a local reply, or is scratch space.
async fn write_answer<IO: AsyncWrite + Unpin>(
    io: &mut IO,
    answer: Answer,
    out: &mut BytesMut,
) -> io::Result<()> {
    let written = match answer {
        Answer::Nothing => Ok(()),
        Answer::Local => write_all_flush(io, out).await,
        Answer::Forward(prefix, payload) => write_parts(io, prefix, &payload, out).await,
    };
    out.clear();
    written
}

/// [`serve_connection_until`] with `max_concurrent_calls` > 1: every complete call
/// is forwarded as soon as it is read, up to `max` at once (then reading pauses),
/// and the answers are written in request order as the oldest one completes.
async fn serve_concurrent<IO>(
    mut io: IO,
    peer: SocketAddr,
    who: &crate::rbac::Peer<'_>,
    ctx: Arc<ListenerCtx>,
    mut drain: Option<watch::Receiver<bool>>,
    max: usize,
) where
    IO: AsyncRead + AsyncWrite + Unpin + Send,
{
    let mut decoder = Decoder::new(ctx.routes.decoder_config());
    let mut buf = BytesMut::with_capacity(READ_CHUNK);
    let mut out = BytesMut::new();
    let mut inflight = FuturesOrdered::new();
    let mut draining = drain.as_ref().is_some_and(|d| *d.borrow());
    let mut call_deadline: Option<tokio::time::Instant> = None;
    // The client closed its side: answer what arrived, then close.
    let mut eof = false;
    let ctx = &*ctx;
    loop {
        while inflight.len() < max {
            match decoder.decode(&mut buf) {
                Ok(Some(msg)) => {
                    call_deadline = None;
                    inflight.push_back(async move {
                        let mut out = BytesMut::new();
                        ctx.handle(msg, peer, who, &mut out).await.map(|a| (a, out))
                    });
                }
                Ok(None) => break,
                Err(e) => {
                    // Calls before the bad bytes are answered first, in order.
                    while let Some(done) = inflight.next().await {
                        let Ok((answer, mut local)) = done else {
                            return;
                        };
                        if write_answer(&mut io, answer, &mut local).await.is_err() {
                            return;
                        }
                    }
                    return bad_input(ctx, peer, &e, &mut io, &mut out).await;
                }
            }
        }
        if inflight.is_empty() {
            if eof {
                if !buf.is_empty() {
                    ctx.metrics.decode_error(Some(ErrorKind::Truncated));
                }
                return;
            }
            if draining && buf.is_empty() {
                let _ = io.shutdown().await;
                return;
            }
        }
        if buf.capacity() - buf.len() < MIN_READ_ROOM {
            buf.reserve(READ_CHUNK);
        }
        if !buf.is_empty() && call_deadline.is_none() {
            call_deadline = ctx.message_timeout.map(|t| tokio::time::Instant::now() + t);
        }
        // A call in flight keeps the connection from being idle.
        let idle = if inflight.is_empty() {
            ctx.idle_timeout
        } else {
            None
        };
        let room = inflight.len() < max && !eof;
        tokio::select! {
            Some(done) = inflight.next(), if !inflight.is_empty() => {
                let Ok((answer, mut local)) = done else { return };
                if write_answer(&mut io, answer, &mut local).await.is_err() {
                    return;
                }
            }
            r = read_bounded(&mut io, &mut buf, idle, call_deadline), if room => match r {
                Ok(0) => eof = true,
                Ok(_) => {}
                Err(stop) => return read_stopped(ctx, peer, stop, &mut io).await,
            },
            () = drained(&mut drain), if !draining => draining = true,
        }
    }
}

/// Why a downstream read ended without bytes.
#[derive(Debug, PartialEq, Eq)]
enum ReadStop {
    /// No bytes for the idle timeout.
    Idle,
    /// The call under way was not complete by its deadline.
    MessageTimeout,
    /// The socket failed.
    Io,
}

/// One read, bounded by the idle timeout and, while a call is under way, by its
/// deadline.
async fn read_bounded<R: AsyncRead + Unpin>(
    io: &mut R,
    buf: &mut BytesMut,
    idle: Option<Duration>,
    deadline: Option<tokio::time::Instant>,
) -> Result<usize, ReadStop> {
    let read = async {
        match idle {
            None => io.read_buf(buf).await.map_err(|_| ReadStop::Io),
            Some(t) => match tokio::time::timeout(t, io.read_buf(buf)).await {
                Ok(r) => r.map_err(|_| ReadStop::Io),
                Err(_) => Err(ReadStop::Idle),
            },
        }
    };
    match deadline {
        None => read.await,
        Some(d) => tokio::time::timeout_at(d, read)
            .await
            .unwrap_or(Err(ReadStop::MessageTimeout)),
    }
}

/// Resolves when the drain signal turns true; never without a signal (or once its
/// sender is gone).
async fn drained(drain: &mut Option<watch::Receiver<bool>>) {
    match drain {
        Some(rx) => {
            if rx.wait_for(|d| *d).await.is_err() {
                std::future::pending::<()>().await
            }
        }
        None => std::future::pending::<()>().await,
    }
}

/// Encode a `TApplicationException` answering `h` in the client's own framing. The
/// name is the bare method, as a multiplexing server replies.
fn local_reply(out: &mut BytesMut, h: &Header, kind: AppExceptionKind, message: &str) {
    answer_with_exception(out, h, kind, message);
}

async fn write_all_flush<W: AsyncWrite + Unpin + ?Sized>(w: &mut W, b: &[u8]) -> io::Result<()> {
    w.write_all(b).await?;
    w.flush().await
}

/// Write an optional prefix (frame length or THeader head) and a payload,
/// coalesced into `scratch` when small.
async fn write_parts<W: AsyncWrite + Unpin + ?Sized>(
    w: &mut W,
    prefix: Option<Prefix>,
    payload: &[u8],
    scratch: &mut BytesMut,
) -> io::Result<()> {
    match prefix {
        None => w.write_all(payload).await?,
        Some(p) if payload.len() <= COALESCE_LIMIT => {
            scratch.clear();
            scratch.extend_from_slice(p.as_bytes());
            scratch.extend_from_slice(payload);
            w.write_all(scratch).await?;
            scratch.clear();
        }
        Some(p) => {
            w.write_all(p.as_bytes()).await?;
            w.write_all(payload).await?;
        }
    }
    w.flush().await
}

impl ListenerCtx {
    /// Route and forward one message; `Err` closes the connection.
    async fn handle(
        &self,
        msg: Message,
        peer: SocketAddr,
        who: &crate::rbac::Peer<'_>,
        out: &mut BytesMut,
    ) -> Result<Answer, ()> {
        let start = Instant::now();
        let h = msg.header().clone();
        if matches!(h.message_type, MessageType::Reply | MessageType::Exception) {
            // A client does not send replies: the stream is not what we think it is.
            self.metrics.decode_error(None);
            tracing::debug!(listener = %self.name, %peer, "reply received from a client; closing");
            return Err(());
        }
        let oneway = h.message_type == MessageType::Oneway;
        let stats = self.metrics.for_call(&h);
        if self.denied(who, &h) {
            stats.count(Outcome::LocalError);
            self.metrics.local_reply.count(Flag::Rbac);
            stats.duration.observe(start.elapsed().as_secs_f64());
            if oneway {
                return Ok(Answer::Nothing);
            }
            let message = format!("rbac: access denied to {}", h.name());
            local_reply(out, &h, AppExceptionKind::Unknown, &message);
            return Ok(Answer::Local);
        }
        let Some(route) = self.routes.route(&msg) else {
            stats.count(Outcome::LocalError);
            self.metrics.local_reply.count(Flag::NoRoute);
            let elapsed = start.elapsed();
            stats.duration.observe(elapsed.as_secs_f64());
            self.record_sli(sli::NO_ROUTE, Outcome::LocalError, elapsed);
            tracing::debug!(listener = %self.name, %peer, method = h.name(), flag = %Flag::NoRoute, "no thrift route");
            if oneway {
                return Ok(Answer::Nothing);
            }
            let message = format!("no route for method {}", h.name());
            local_reply(out, &h, AppExceptionKind::UnknownMethod, &message);
            return Ok(Answer::Local);
        };
        let cluster = route.cluster();
        let forwarded = match route.timeout() {
            Some(t) => tokio::time::timeout(t, self.dispatch(route, cluster, &msg))
                .await
                .unwrap_or(Err(CallError::Timeout)),
            None => self.dispatch(route, cluster, &msg).await,
        };
        let answered = forwarded.and_then(|reply| match reply {
            None => Ok(None),
            Some(reply) => {
                let (prefix, payload) = wire_back(&reply, &h)?;
                Ok(Some((reply_outcome(&reply), prefix, payload)))
            }
        });
        let (outcome, answer) = match answered {
            Ok(None) => (Outcome::Success, Answer::Nothing),
            Ok(Some((outcome, prefix, payload))) => (outcome, Answer::Forward(prefix, payload)),
            Err(e) => {
                tracing::debug!(
                    listener = %self.name, %peer, route = %route.name, cluster,
                    method = h.name(), flag = %e.flag(), error = %e, "thrift local reply"
                );
                self.metrics.local_reply.count(e.flag());
                if oneway {
                    (Outcome::LocalError, Answer::Nothing)
                } else {
                    local_reply(out, &h, AppExceptionKind::InternalError, &e.to_string());
                    (Outcome::LocalError, Answer::Local)
                }
            }
        };
        stats.count(outcome);
        let elapsed = start.elapsed();
        stats.duration.observe(elapsed.as_secs_f64());
        self.record_sli(&route.name, outcome, elapsed);
        Ok(answer)
    }

    /// Whether the listener's RBAC refuses this call (shadow denials are counted and
    /// let through).
    fn denied(&self, who: &crate::rbac::Peer<'_>, h: &Header) -> bool {
        let Some(rbac) = &self.rbac else {
            return false;
        };
        let rq = crate::rbac::Request::Thrift {
            service: h.service(),
            method: h.method(),
        };
        rbac.check(who, &rq, &self.name).deny()
    }

    fn record_sli(&self, route: &str, outcome: Outcome, elapsed: Duration) {
        if let Some(board) = &self.sli {
            let ok = matches!(outcome, Outcome::Success | Outcome::Error);
            board.record(&self.name, route, ok, elapsed);
        }
    }

    /// Forward one call: once, or under the route's retry policy when it covers
    /// the call. A call without a policy takes the plain path unchanged.
    async fn dispatch(
        &self,
        route: &Route,
        cluster: &str,
        msg: &Message,
    ) -> Result<Option<Message>, CallError> {
        // Route clusters were checked against the snapshot's when it was compiled.
        let Some(cluster) = self.clusters.get(cluster) else {
            return Err(CallError::NoHealthyUpstream);
        };
        match route.retry_for(msg.header()) {
            None => self.forward(cluster, msg, None, None).await,
            Some(policy) => self.forward_retrying(route, policy, cluster, msg).await,
        }
    }

    /// Try, then retry what the policy names, each time on another endpoint when the
    /// cluster has one. The request frame is the buffered `msg`, replayed as is.
    async fn forward_retrying(
        &self,
        route: &Route,
        policy: &RetryPolicy,
        cluster: &Arc<Cluster>,
        msg: &Message,
    ) -> Result<Option<Message>, CallError> {
        let mut avoid: Option<Arc<Endpoint>> = None;
        let mut left = policy.attempts;
        // Held while a retry runs (the cluster's `max_retries` breaker).
        let mut _permit = None;
        loop {
            let mut used = None;
            let attempt = self.forward(cluster, msg, avoid.as_ref(), Some(&mut used));
            let result = match policy.per_try_timeout {
                Some(t) => tokio::time::timeout(t, attempt)
                    .await
                    .unwrap_or(Err(CallError::Timeout)),
                None => attempt.await,
            };
            if left == 0 || !retriable(policy, &result) {
                return result;
            }
            _permit = cluster.breakers.retries.try_acquire();
            if _permit.is_none() {
                return result;
            }
            cluster.stats.retry.inc();
            left -= 1;
            self.metrics.retry(&route.name);
            avoid = used.or(avoid);
        }
    }

    /// Send `msg` to an endpoint of `cluster` (other than `avoid` when there is
    /// one) as one [`Attempt`], recording the endpoint in `used` (also when the
    /// call is cancelled, which counts against the endpoint).
    async fn forward(
        &self,
        cluster: &Arc<Cluster>,
        msg: &Message,
        avoid: Option<&Arc<Endpoint>>,
        used: Option<&mut Option<Arc<Endpoint>>>,
    ) -> Result<Option<Message>, CallError> {
        let h = msg.header();
        let up = cluster.thrift;
        let framing = (
            up.transport.unwrap_or(h.transport),
            up.protocol.unwrap_or(h.protocol),
        );
        let (prefix, payload) = wire_out(msg, framing.0, framing.1)?;
        let mut attempt = cluster.attempt(None, avoid).map_err(|r| match r {
            Refused::Overflow => CallError::Overflow,
            Refused::NoHealthyUpstream => CallError::NoHealthyUpstream,
        })?;
        if let Some(used) = used {
            *used = Some(attempt.endpoint().clone());
        }
        let result = self
            .exchange(&mut attempt, framing, prefix, &payload, h)
            .await;
        match &result {
            Ok(Some(reply)) if reply.header().message_type == MessageType::Exception => {
                attempt.report(Reported::ThriftFailure)
            }
            Ok(_) => attempt.report(Reported::Success),
            // Reported by the connect, or not the endpoint's doing.
            Err(CallError::ConnectFailed(_) | CallError::ConnectTimeout | CallError::Overflow) => {}
            Err(_) => attempt.report(Reported::ThriftFailure),
        }
        result
    }

    /// Send the encoded call (`prefix`, `payload`) over a pooled or new connection
    /// to the attempt's endpoint and read the reply to `call`. A call is never
    /// re-sent once written (it may have been processed), unless a retry policy
    /// names its method: see `forward_retrying`.
    async fn exchange(
        &self,
        attempt: &mut Attempt,
        framing: Framing,
        prefix: Option<Prefix>,
        payload: &[u8],
        call: &Header,
    ) -> Result<Option<Message>, CallError> {
        let max = self.routes.decoder_config().max_message_size;
        let mut conn = match upstream::connection(attempt, framing, max).await {
            Ok(c) => c,
            Err(DialError::Overflow) => return Err(CallError::Overflow),
            Err(DialError::Failed(e)) if e.kind() == io::ErrorKind::TimedOut => {
                return Err(CallError::ConnectTimeout)
            }
            Err(DialError::Failed(e)) => return Err(CallError::ConnectFailed(e)),
        };
        // From here a cancelled call (the route's timeout) is the endpoint's failure.
        attempt.report_on_drop(Some(Reported::ThriftFailure));
        let mut scratch = BytesMut::new();
        let reply = round_trip(&mut conn, prefix, payload, call, &mut scratch).await?;
        upstream::release(attempt, conn);
        Ok(reply)
    }
}

/// The call as the upstream reads it: framed for `transport` and, when the
/// cluster's protocol differs from the client's, re-encoded in `protocol`. The same
/// protocol costs no copy. A THeader call keeps its frame (info headers included)
/// towards a THeader cluster; towards another transport its head is dropped.
fn wire_out(
    msg: &Message,
    transport: Transport,
    protocol: Protocol,
) -> Result<(Option<Prefix>, Bytes), CallError> {
    if protocol == msg.header().protocol {
        return Ok(msg.wire_for(transport, None));
    }
    transcode(msg, protocol, transport, None)
        .map(|b| (None, b))
        .map_err(CallError::Translation)
}

/// The reply as the client reads it: in the call's own transport and protocol. A
/// THeader client gets the upstream's THeader reply as it came (its info headers
/// too), or a reply from another transport in a frame echoing the call's flags and
/// frame sequence id.
fn wire_back(reply: &Message, call: &Header) -> Result<(Option<Prefix>, Bytes), CallError> {
    if reply.header().protocol == call.protocol {
        return Ok(reply.wire_for(call.transport, call.frame));
    }
    transcode(reply, call.protocol, call.transport, call.frame)
        .map(|b| (None, b))
        .map_err(CallError::Translation)
}

/// How a reply is counted.
fn reply_outcome(reply: &Message) -> Outcome {
    match inspect_reply(reply) {
        Ok(ReplyOutcome::Success) => Outcome::Success,
        Ok(ReplyOutcome::IdlException { .. }) => Outcome::Error,
        Ok(ReplyOutcome::AppException { .. }) | Err(_) => Outcome::Exception,
    }
}

/// Whether a try's result is one the policy retries. Nothing else is: a call whose
/// reply did not decode or did not answer it, or with no healthy endpoint.
fn retriable(policy: &RetryPolicy, result: &Result<Option<Message>, CallError>) -> bool {
    match result {
        Ok(Some(reply)) => {
            policy.on_exception && reply.header().message_type == MessageType::Exception
        }
        Ok(None) => false,
        Err(CallError::ConnectFailed(_) | CallError::ConnectTimeout) => policy.on_connect_failure,
        Err(CallError::Timeout) => policy.on_timeout,
        Err(CallError::Reset(_) | CallError::Closed) => policy.on_reset,
        Err(_) => false,
    }
}

/// Send one call and, unless it is oneway, read its reply.
async fn round_trip(
    conn: &mut Conn,
    prefix: Option<Prefix>,
    payload: &[u8],
    call: &Header,
    scratch: &mut BytesMut,
) -> Result<Option<Message>, CallError> {
    if let Err(e) = write_parts(&mut conn.io, prefix, payload, scratch).await {
        return Err(CallError::Reset(e));
    }
    if call.message_type == MessageType::Oneway {
        return Ok(None);
    }
    loop {
        match conn.decoder.decode(&mut conn.buf) {
            Ok(Some(reply)) => {
                let r = reply.header();
                let answers = r.seq_id == call.seq_id
                    && matches!(r.message_type, MessageType::Reply | MessageType::Exception);
                if !answers {
                    return Err(CallError::Mismatch);
                }
                return Ok(Some(reply));
            }
            Ok(None) => {}
            Err(e) => return Err(CallError::Protocol(e)),
        }
        if conn.buf.capacity() - conn.buf.len() < MIN_READ_ROOM {
            conn.buf.reserve(READ_CHUNK);
        }
        match conn.io.read_buf(&mut conn.buf).await {
            Ok(0) => return Err(CallError::Closed),
            Ok(_) => {}
            Err(e) => return Err(CallError::Reset(e)),
        }
    }
}
