//! Per-endpoint upstream connection pools on hyper's connection-level client.
//!
//! HTTP/1.1: a LIFO stack of idle connections (the most recently used is the warmest);
//! a connection goes back when its response body has been read to the end, and is
//! closed instead when the body is abandoned. HTTP/2: one multiplexed connection per
//! endpoint, replaced when it closes. A request that hyper hands back unsent (the
//! pooled connection had just been closed by the upstream) is retried on the next
//! connection, so keep-alive races never surface as 502s.
//!
//! Compared with hyper-util's pooled `Client` this does no per-request key hashing,
//! boxing or task spawning: the profile in benches/RESULTS.md put that at ~15% of the
//! proxy's per-request instructions.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};

use super::breakers::Gate;
use super::connector::Connector;
use super::UpBody;
use crate::config::raw::UpstreamProtocol;

/// Why a request could not be exchanged.
#[derive(Debug)]
pub enum SendError {
    /// TCP/TLS connect or the HTTP handshake failed.
    Connect(std::io::Error),
    /// The cluster's `max_connections` breaker is full.
    Overflow,
    /// The upstream reset the stream or broke the protocol.
    Protocol(hyper::Error),
}

impl std::fmt::Display for SendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SendError::Connect(e) => write!(f, "connect: {e}"),
            SendError::Overflow => f.write_str("connection limit reached"),
            SendError::Protocol(e) => write!(f, "{e}"),
        }
    }
}

struct Idle {
    tx: http1::SendRequest<UpBody>,
    since: Instant,
}

/// The pool of one endpoint (owned by the endpoint, so it survives reloads and
/// discovery updates that keep the endpoint).
#[derive(Default)]
pub struct Pool {
    h1: Mutex<Vec<Idle>>,
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

/// An HTTP/1.1 connection lent to one exchange; goes back to the pool with
/// [`Lease::release`] once the response body has been fully read.
pub struct Lease {
    pool: Arc<Pool>,
    tx: http1::SendRequest<UpBody>,
    idle_timeout: Duration,
    max_idle: usize,
}

impl Lease {
    pub fn release(self) {
        if self.tx.is_closed() {
            return;
        }
        let now = Instant::now();
        let mut idle = self.pool.h1.lock().unwrap_or_else(|p| p.into_inner());
        // Oldest first: expire them while we are here.
        let expired = idle
            .iter()
            .take_while(|i| now.duration_since(i.since) >= self.idle_timeout)
            .count();
        idle.drain(..expired);
        if idle.len() < self.max_idle {
            idle.push(Idle {
                tx: self.tx,
                since: now,
            });
        }
    }
}

impl Pool {
    fn pop_h1(&self, idle_timeout: Duration) -> Option<http1::SendRequest<UpBody>> {
        let now = Instant::now();
        let mut idle = self.h1.lock().unwrap_or_else(|p| p.into_inner());
        while let Some(i) = idle.pop() {
            if i.tx.is_closed() || now.duration_since(i.since) >= idle_timeout {
                continue;
            }
            return Some(i.tx);
        }
        None
    }

    /// Close connections idle for `idle_timeout` or longer: pooled HTTP/1.1 ones,
    /// and the HTTP/2 connection when no request used it for that long (its
    /// in-flight streams, if any, finish first).
    pub fn sweep(&self, idle_timeout: Duration) {
        let now = Instant::now();
        {
            let mut idle = self.h1.lock().unwrap_or_else(|p| p.into_inner());
            idle.retain(|i| !i.tx.is_closed() && now.duration_since(i.since) < idle_timeout);
        }
        let mut h2 = self.h2.lock().unwrap_or_else(|p| p.into_inner());
        if h2
            .as_ref()
            .is_some_and(|(tx, used)| tx.is_closed() || now.duration_since(*used) >= idle_timeout)
        {
            *h2 = None;
        }
    }

    /// Number of idle HTTP/1.1 connections (for /clusters).
    pub fn idle(&self) -> usize {
        self.h1.lock().map(|v| v.len()).unwrap_or(0)
    }
}

async fn connect(
    ep: &super::Endpoint,
    s: &Settings,
) -> Result<
    (
        TokioIo<super::connector::Stream>,
        Option<super::breakers::Permit>,
    ),
    SendError,
> {
    let permit = match &s.limit {
        None => None,
        Some(g) => Some(g.try_acquire().ok_or(SendError::Overflow)?),
    };
    let io = s
        .connector
        .connect_addr(ep.addr)
        .await
        .map_err(SendError::Connect)?;
    Ok((TokioIo::new(io), permit))
}

fn handshake_error(e: hyper::Error) -> SendError {
    SendError::Connect(std::io::Error::other(e))
}

/// Exchange `req` with endpoint `ep`: a pooled connection when one is idle, a new
/// one otherwise. `req`'s URI must be origin-form for HTTP/1.1 and absolute for
/// HTTP/2.
pub async fn send(
    ep: &super::Endpoint,
    s: &Settings,
    mut req: Request<UpBody>,
) -> Result<(Response<Incoming>, Option<Lease>), SendError> {
    match s.protocol {
        UpstreamProtocol::Http1 => {
            while let Some(mut tx) = ep.pool.pop_h1(s.idle_timeout) {
                if !tx.is_ready() {
                    // Just released: the connection task may not have noticed yet.
                    match tokio::time::timeout(Duration::from_millis(100), tx.ready()).await {
                        Ok(Ok(())) => {}
                        _ => continue,
                    }
                }
                match tx.try_send_request(req).await {
                    Ok(rsp) => {
                        let lease = Lease {
                            pool: ep.pool.clone(),
                            tx,
                            idle_timeout: s.idle_timeout,
                            max_idle: s.max_idle,
                        };
                        return Ok((rsp, Some(lease)));
                    }
                    Err(mut e) => match e.take_message() {
                        // Never written: the connection was already gone. Next one.
                        Some(r) => req = r,
                        None => return Err(SendError::Protocol(e.into_error())),
                    },
                }
            }
            let (io, permit) = connect(ep, s).await?;
            let (mut tx, conn) = http1::Builder::new()
                .handshake::<_, UpBody>(io)
                .await
                .map_err(handshake_error)?;
            tokio::spawn(async move {
                if let Err(e) = conn.await {
                    tracing::debug!(error = %e, "upstream connection closed with an error");
                }
                drop(permit);
            });
            let rsp = tx.send_request(req).await.map_err(SendError::Protocol)?;
            let lease = Lease {
                pool: ep.pool.clone(),
                tx,
                idle_timeout: s.idle_timeout,
                max_idle: s.max_idle,
            };
            Ok((rsp, Some(lease)))
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
            let mut tx = match existing {
                Some(tx) => tx,
                None => {
                    let (io, permit) = connect(ep, s).await?;
                    let (tx, conn) = http2::Builder::new(TokioExecutor::new())
                        .timer(TokioTimer::new())
                        .keep_alive_interval(Some(Duration::from_secs(30)))
                        .handshake::<_, UpBody>(io)
                        .await
                        .map_err(handshake_error)?;
                    tokio::spawn(async move {
                        if let Err(e) = conn.await {
                            tracing::debug!(error = %e, "upstream h2 connection closed with an error");
                        }
                        drop(permit);
                    });
                    *ep.pool.h2.lock().unwrap_or_else(|p| p.into_inner()) =
                        Some((tx.clone(), Instant::now()));
                    tx
                }
            };
            drop(dial_guard);
            tx.ready().await.map_err(SendError::Protocol)?;
            let rsp = tx.send_request(req).await.map_err(SendError::Protocol)?;
            Ok((rsp, None))
        }
    }
}
