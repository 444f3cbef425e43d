//! Per-endpoint upstream connection pools.
//!
//! HTTP/1.1 (the in-task client in `h1.rs`): a LIFO stack of idle connections (the
//! most recently used is the warmest); a connection goes back when its response body
//! has been read to the end, and is closed instead when the body is abandoned. An idle
//! connection is checked without blocking before it is reused; one the upstream closed
//! a moment ago (nothing of a response came back) is replaced and a replayable request
//! sent again, so keep-alive races never surface as 502s. HTTP/2: hyper's
//! connection-level client, one multiplexed connection per endpoint, replaced when it
//! closes.
//!
//! Compared with hyper-util's pooled `Client` this does no per-request key hashing,
//! boxing or task spawning, and for HTTP/1.1 no channel hop to a connection task
//! (benches/RESULTS.md has the profiles).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::{Request, Response};
use hyper::client::conn::http2;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};

use super::breakers::Gate;
use super::connector::Connector;
use super::h1::{self, Conn};
use super::{UpBody, UpstreamBody};

/// A cluster's `protocol:`: HTTP/1.1 or HTTP/2 (prior knowledge or ALPN) upstream.
#[derive(Debug, Clone, Copy, serde::Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum UpstreamProtocol {
    #[default]
    Http1,
    Http2,
}

/// Why a request could not be exchanged.
#[derive(Debug)]
pub enum SendError {
    /// TCP/TLS connect or the HTTP handshake failed.
    Connect(std::io::Error),
    /// The cluster's `max_connections` breaker is full.
    Overflow,
    /// The upstream reset the stream or broke the protocol.
    Protocol(h1::BoxError),
    /// The client's request body failed while it was being sent (malformed
    /// chunked framing, the client gone): the upstream connection is closed, and
    /// the upstream is not to blame.
    Body(h1::BoxError),
}

impl std::fmt::Display for SendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SendError::Connect(e) => write!(f, "connect: {e}"),
            SendError::Overflow => f.write_str("connection limit reached"),
            SendError::Protocol(e) => write!(f, "{e}"),
            SendError::Body(e) => write!(f, "request body: {e}"),
        }
    }
}

/// In a response's extensions when its request dialed a new connection: how long
/// the connect (TCP, TLS, HTTP/2 handshake) took. For the access log.
#[derive(Debug, Clone, Copy)]
pub struct Connected(pub Duration);

/// A connection that can wait idle in a pool.
pub trait Pooled {
    /// Whether it can carry another request: nothing unread, and the upstream has
    /// not closed it. Never blocks.
    fn is_reusable(&mut self) -> bool;
}

impl Pooled for Conn {
    fn is_reusable(&mut self) -> bool {
        Conn::is_reusable(self)
    }
}

struct Idle<T> {
    conn: T,
    since: Instant,
}

/// Idle connections of one kind, most recently used last (the warmest is reused
/// first). The lock guards a push or a pop, never an await or a socket call on
/// the request path; no allocation once the stack has grown to its working size.
pub struct IdleStack<T> {
    idle: Mutex<Vec<Idle<T>>>,
}

impl<T> Default for IdleStack<T> {
    fn default() -> Self {
        IdleStack {
            idle: Mutex::new(Vec::new()),
        }
    }
}

impl<T: Pooled> IdleStack<T> {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Idle<T>>> {
        self.idle.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The most recently used connection that `fits` and is still reusable. Older
    /// than `idle_timeout` ones are dropped on the way (and everything older than
    /// them, the stack being in time order), as are closed ones.
    pub fn pop(&self, idle_timeout: Duration, fits: impl Fn(&T) -> bool) -> Option<T> {
        loop {
            let mut conn = self.take(idle_timeout, &fits)?;
            // Probed outside the lock; a dead one is closed and the next tried.
            if conn.is_reusable() {
                return Some(conn);
            }
        }
    }

    fn take(&self, idle_timeout: Duration, fits: &impl Fn(&T) -> bool) -> Option<T> {
        let now = Instant::now();
        let mut idle = self.lock();
        let mut i = idle.len();
        while i > 0 {
            i -= 1;
            if now.duration_since(idle[i].since) >= idle_timeout {
                idle.drain(..=i);
                return None;
            }
            if fits(&idle[i].conn) {
                return Some(idle.remove(i).conn);
            }
        }
        None
    }

    /// Keep `conn` for reuse (most recent last) unless `max_idle` are already
    /// waiting; expired ones are dropped while we are here. Surplus connections
    /// are closed outside the lock.
    pub fn put(&self, conn: T, idle_timeout: Duration, max_idle: usize) {
        let now = Instant::now();
        let surplus = {
            let mut idle = self.lock();
            let expired = idle
                .iter()
                .take_while(|i| now.duration_since(i.since) >= idle_timeout)
                .count();
            idle.drain(..expired);
            if idle.len() < max_idle {
                idle.push(Idle { conn, since: now });
                None
            } else {
                Some(conn)
            }
        };
        drop(surplus);
    }

    /// Close connections idle for `idle_timeout` or longer, or closed upstream.
    pub fn sweep(&self, idle_timeout: Duration) {
        let now = Instant::now();
        self.lock()
            .retain_mut(|i| now.duration_since(i.since) < idle_timeout && i.conn.is_reusable());
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The pool of one endpoint (owned by the endpoint, so it survives reloads and
/// discovery updates that keep the endpoint), for every protocol.
#[derive(Default)]
pub struct Pool {
    h1: IdleStack<Conn>,
    /// Thrift connections, one call at a time each (see `thrift::upstream`).
    pub thrift: IdleStack<crate::thrift::upstream::Conn>,
    h2: Mutex<Option<(http2::SendRequest<UpBody>, Instant)>>,
    /// One HTTP/2 dial at a time, so a burst of first requests shares a connection.
    h2_dial: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Pool")
    }
}

/// Pool settings, from the cluster.
#[derive(Clone)]
pub struct Settings {
    pub protocol: UpstreamProtocol,
    pub idle_timeout: Duration,
    pub max_idle: usize,
    pub connector: Connector,
    pub limit: Option<Arc<Gate>>,
}

impl Pool {
    /// A connection whose exchange completed cleanly goes back (most recent last).
    pub(super) fn put_h1(&self, conn: Conn, idle_timeout: Duration, max_idle: usize) {
        self.h1.put(conn, idle_timeout, max_idle);
    }

    /// Close connections idle for `idle_timeout` or longer: pooled HTTP/1.1 and
    /// Thrift ones, and the HTTP/2 connection when no request used it for that
    /// long (its in-flight streams, if any, finish first).
    pub fn sweep(&self, idle_timeout: Duration) {
        let now = Instant::now();
        self.h1.sweep(idle_timeout);
        self.thrift.sweep(idle_timeout);
        let mut h2 = self.h2.lock().unwrap_or_else(|p| p.into_inner());
        if h2
            .as_ref()
            .is_some_and(|(tx, used)| tx.is_closed() || now.duration_since(*used) >= idle_timeout)
        {
            *h2 = None;
        }
    }

    /// Number of idle HTTP/1.1 and Thrift connections (for /clusters).
    pub fn idle(&self) -> usize {
        self.h1.len() + self.thrift.len()
    }
}

/// Open a new connection to `ep` for any protocol: a slot in the cluster's
/// `max_connections` breaker (held with the connection, released when it closes),
/// then TCP (+ TLS) within the connect timeout.
pub async fn dial(
    ep: &super::Endpoint,
    s: &Settings,
) -> Result<(super::connector::Stream, Option<super::breakers::Permit>), SendError> {
    let permit = match &s.limit {
        None => None,
        Some(g) => Some(g.try_acquire().ok_or(SendError::Overflow)?),
    };
    let io = s
        .connector
        .connect_addr(ep.addr)
        .await
        .map_err(SendError::Connect)?;
    Ok((io, permit))
}

fn handshake_error(e: hyper::Error) -> SendError {
    SendError::Connect(std::io::Error::other(e))
}

/// How many pooled connections a request may find closed before it fails.
const MAX_REPLAYS: u32 = 3;

/// Exchange `req` with endpoint `ep`: a pooled connection when one is idle, a new
/// one otherwise. `req`'s URI must be origin-form for HTTP/1.1 and absolute for
/// HTTP/2. HTTP/1.1 responses bring their connection back to the pool themselves
/// once their body has been read to the end.
pub async fn send(
    ep: &super::Endpoint,
    s: &Settings,
    req: Request<UpBody>,
) -> Result<Response<UpstreamBody>, SendError> {
    let (parts, body) = req.into_parts();
    let mut body = Some(body);
    send_with(ep, s, Request::from_parts(parts, ()), &mut body, false).await
}

/// [`send`], with the body in a slot the caller keeps: the body is taken out only
/// when a connection is there to carry it, so after a failed connect (or a
/// circuit breaker refusing one) the caller still has an unsent stream.
/// `headers_outlive`: the response's header values may be kept past the response
/// (an HTTP/2 downstream's HPACK table; see [`h1::encode_head`]).
pub async fn send_with(
    ep: &super::Endpoint,
    s: &Settings,
    req: Request<()>,
    body: &mut Option<UpBody>,
    headers_outlive: bool,
) -> Result<Response<UpstreamBody>, SendError> {
    match s.protocol {
        UpstreamProtocol::Http1 => {
            let (mut parts, ()) = req.into_parts();
            // A copy to send again when a pooled connection turns out to be closed.
            let replay = body.as_ref().and_then(UpBody::try_clone);
            let idempotent = parts.method.is_idempotent();
            let mut replays = 0;
            loop {
                let mut dialed = None;
                let (mut conn, reused) = match ep.pool.h1.pop(s.idle_timeout, |_| true) {
                    Some(c) => (c, true),
                    None => {
                        // Boxed: dialing (TCP, maybe TLS) is the rare path and
                        // its future is large; inline it would be copied with
                        // every request's future.
                        let t = Instant::now();
                        let (io, permit) = Box::pin(dial(ep, s)).await?;
                        dialed = Some(Connected(t.elapsed()));
                        (h1::Conn::new(io, permit), false)
                    }
                };
                let Some(b) = body
                    .take()
                    .or_else(|| replay.as_ref().and_then(UpBody::try_clone))
                else {
                    return Err(SendError::Protocol("request body already sent".into()));
                };
                // Encoded per attempt: a replay (rare) re-encodes instead of every
                // request keeping a shared copy.
                let head = h1::encode_head(&parts, &b, headers_outlive);
                match h1::exchange(&mut conn, head, b).await {
                    Ok((parsed, writer)) => {
                        // Sent: the request's map goes back to the worker's spares.
                        crate::http1::head::recycle(std::mem::take(&mut parts.headers));
                        let home = h1::Home {
                            pool: ep.pool.clone(),
                            idle_timeout: s.idle_timeout,
                            max_idle: s.max_idle,
                        };
                        // Allocated first, written in place.
                        let body = Box::write(
                            Box::new_uninit(),
                            h1::H1Body::new(conn, &parsed, writer, home),
                        );
                        let mut rsp = Response::new(UpstreamBody::H1(body));
                        *rsp.status_mut() = parsed.status;
                        *rsp.version_mut() = parsed.version;
                        *rsp.headers_mut() = parsed.headers;
                        if let Some(c) = dialed {
                            rsp.extensions_mut().insert(c);
                        }
                        return Ok(rsp);
                    }
                    // The keep-alive race: the upstream closed the idle connection
                    // as we picked it and nothing was answered. Send it again if
                    // the upstream cannot have acted on it (not a byte written) or
                    // acting twice is harmless (an idempotent method), like NGINX.
                    Err(h1::ExchangeError::Closed { unwritten, .. })
                        if reused
                            && replay.is_some()
                            && replays < MAX_REPLAYS
                            && (unwritten || idempotent) =>
                    {
                        replays += 1;
                        continue;
                    }
                    // The connection is dropped (closed) with the half-sent request.
                    Err(h1::ExchangeError::Body(e)) => return Err(SendError::Body(e)),
                    Err(e) => return Err(SendError::Protocol(Box::new(e))),
                }
            }
        }
        UpstreamProtocol::Http2 => {
            let current = || {
                let mut g = ep.pool.h2.lock().unwrap_or_else(|p| p.into_inner());
                match g.as_mut() {
                    Some((tx, used)) if !tx.is_closed() => {
                        *used = Instant::now();
                        Some(tx.clone())
                    }
                    _ => None,
                }
            };
            let mut dial_guard = None;
            let mut existing = current();
            if existing.is_none() {
                dial_guard = Some(ep.pool.h2_dial.lock().await);
                existing = current();
            }
            let mut dialed = None;
            let mut tx = match existing {
                Some(tx) => tx,
                None => {
                    let t = Instant::now();
                    let tx = Box::pin(dial_h2(ep, s)).await?;
                    dialed = Some(Connected(t.elapsed()));
                    tx
                }
            };
            drop(dial_guard);
            tx.ready()
                .await
                .map_err(|e| SendError::Protocol(Box::new(e)))?;
            let req = req.map(|()| body.take().unwrap_or(UpBody::Empty));
            let rsp = tx.send_request(req).await.map_err(h2_send_error)?;
            let mut rsp = rsp.map(UpstreamBody::H2);
            if let Some(c) = dialed {
                rsp.extensions_mut().insert(c);
            }
            Ok(rsp)
        }
    }
}

/// Why an HTTP/2 exchange failed. When the request body fails (a malformed
/// chunked upload), hyper resets the stream itself: a reset initiated by us (not
/// received from the upstream, nor made by h2 over a protocol error), so the
/// upstream is not to blame.
fn h2_send_error(e: hyper::Error) -> SendError {
    let ours = std::error::Error::source(&e)
        .and_then(|s| s.downcast_ref::<h2::Error>())
        .is_some_and(|h| h.is_reset() && !h.is_remote() && !h.is_library());
    if ours {
        SendError::Body(Box::new(e))
    } else {
        SendError::Protocol(Box::new(e))
    }
}

/// A new HTTP/2 connection to `ep`, installed as the endpoint's shared one.
async fn dial_h2(
    ep: &super::Endpoint,
    s: &Settings,
) -> Result<http2::SendRequest<UpBody>, SendError> {
    let (io, permit) = dial(ep, s).await?;
    let (tx, conn) = http2::Builder::new(TokioExecutor::new())
        .timer(TokioTimer::new())
        .keep_alive_interval(Some(Duration::from_secs(30)))
        .handshake::<_, UpBody>(TokioIo::new(io))
        .await
        .map_err(handshake_error)?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "upstream h2 connection closed with an error");
        }
        drop(permit);
    });
    *ep.pool.h2.lock().unwrap_or_else(|p| p.into_inner()) = Some((tx.clone(), Instant::now()));
    Ok(tx)
}
