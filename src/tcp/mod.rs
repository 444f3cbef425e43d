//! The TCP proxy: connect upstream (retrying another endpoint on failure), then copy
//! bytes both ways with half-close and an idle timeout ([`splice`], which HTTP
//! upgrade tunnels use too). Each connection is one [`Attempt`] on its cluster, like
//! an HTTP request or a Thrift call: breakers, balancing and outlier detection
//! apply to it the same way.
//!
//! Half-close: when one side finishes sending (EOF, or a TLS peer that closes without
//! `close_notify`), the proxy shuts down the write side towards the other peer and
//! keeps copying the opposite direction until it ends too.
//!
//! | metric | labels | what |
//! | --- | --- | --- |
//! | `attache_tcp_cx_total` | `listener` | downstream connections proxied |
//! | `attache_tcp_cx_active` | `listener` | connections open now |
//! | `attache_tcp_downstream_bytes_total` | `listener`, `direction` | `rx` from the client, `tx` to it |
//! | `attache_tcp_connect_fail_total` | `listener` | failed upstream connect attempts (incl. timeouts, and attempts refused by a full breaker or with no healthy endpoint) |
//! | `attache_tcp_no_upstream_total` | `listener` | connections closed because every attempt failed |
//! | `attache_tcp_idle_timeout_total` | `listener` | connections closed by the idle timeout |

use std::future::Future;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

// tokio's clock, so the idle rule runs on a paused clock in tests.
use tokio::time::Instant;

use attache_filters::Stats;
use prometheus::{IntCounter, IntGauge};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadHalf, WriteHalf};

use crate::upstream::breakers::Permit;
use crate::upstream::connector::Stream;
use crate::upstream::pool::{self, SendError};
use crate::upstream::{Attempt, Cluster, Endpoint, Outcome as Reported};

pub const CX_TOTAL: &str = "attache_tcp_cx_total";
pub const CX_ACTIVE: &str = "attache_tcp_cx_active";
pub const DOWNSTREAM_BYTES: &str = "attache_tcp_downstream_bytes_total";
pub const CONNECT_FAIL: &str = "attache_tcp_connect_fail_total";
pub const NO_UPSTREAM: &str = "attache_tcp_no_upstream_total";
pub const IDLE_TIMEOUT: &str = "attache_tcp_idle_timeout_total";

/// Default `idle_timeout` (1h) and `connect_attempts` (3) from the config schema.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(3600);
pub const DEFAULT_CONNECT_ATTEMPTS: u32 = 3;

const BUF: usize = 16 * 1024;

/// Per-listener counters, resolved once at build time.
#[derive(Debug, Clone)]
pub struct TcpCounters {
    cx_total: IntCounter,
    cx_active: IntGauge,
    rx_bytes: IntCounter,
    tx_bytes: IntCounter,
    connect_fail: IntCounter,
    no_upstream: IntCounter,
    idle_timeout: IntCounter,
}

impl TcpCounters {
    pub fn new(stats: &Stats, listener: &str) -> TcpCounters {
        let l = &[listener];
        let bytes = stats.counter_vec(
            DOWNSTREAM_BYTES,
            "Bytes through TCP proxy connections, from (rx) and to (tx) the client",
            &["listener", "direction"],
        );
        TcpCounters {
            cx_total: stats
                .counter_vec(CX_TOTAL, "TCP proxy connections", &["listener"])
                .with_label_values(l),
            cx_active: stats
                .gauge_vec(CX_ACTIVE, "Open TCP proxy connections", &["listener"])
                .with_label_values(l),
            rx_bytes: bytes.with_label_values(&[listener, "rx"]),
            tx_bytes: bytes.with_label_values(&[listener, "tx"]),
            connect_fail: stats
                .counter_vec(
                    CONNECT_FAIL,
                    "Failed TCP proxy upstream connect attempts",
                    &["listener"],
                )
                .with_label_values(l),
            no_upstream: stats
                .counter_vec(
                    NO_UPSTREAM,
                    "TCP proxy connections closed because no upstream connect succeeded",
                    &["listener"],
                )
                .with_label_values(l),
            idle_timeout: stats
                .counter_vec(
                    IDLE_TIMEOUT,
                    "TCP proxy connections closed idle",
                    &["listener"],
                )
                .with_label_values(l),
        }
    }
}

/// Proxy settings (from the listener's `tcp:` block and the cluster).
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// Upstream connect attempts, each to the endpoint the connector picks (min 1).
    pub connect_attempts: u32,
    /// Per attempt, including an upstream TLS handshake done by the connector.
    pub connect_timeout: Duration,
    /// Close both sides after this long with no bytes in either direction.
    pub idle_timeout: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            connect_attempts: DEFAULT_CONNECT_ATTEMPTS,
            connect_timeout: Duration::from_secs(5),
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
        }
    }
}

/// How a proxied connection ended (for the access log).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// Both directions finished normally.
    Closed,
    /// No upstream connect attempt succeeded (`UF`).
    ConnectFailed,
    /// No bytes either way for `idle_timeout`.
    IdleTimeout,
    /// A read or write error (reset) on either side.
    Error,
}

/// Summary of one proxied connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    pub end: End,
    /// Bytes read from the client (and written upstream).
    pub rx_bytes: u64,
    /// Bytes read from the upstream (and written to the client).
    pub tx_bytes: u64,
    /// Connect attempts made.
    pub attempts: u32,
}

/// Proxy one downstream connection. `connect(attempt)` opens a new upstream stream
/// (attempt counts from 0; the load balancer should pick another endpoint each
/// time, and may run a TLS handshake via `ClientTls`), with what must live as long
/// as the connection (see [`connect`]). Never panics on I/O; both streams are
/// closed when this returns.
pub async fn proxy_connection<D, U, H, C, F>(
    downstream: D,
    mut connect: C,
    settings: Settings,
    counters: &TcpCounters,
) -> Outcome
where
    D: AsyncRead + AsyncWrite + Unpin,
    U: AsyncRead + AsyncWrite + Unpin,
    C: FnMut(u32) -> F,
    F: Future<Output = io::Result<(U, H)>>,
{
    counters.cx_total.inc();
    counters.cx_active.inc();
    let _active = ActiveGuard(&counters.cx_active);

    let attempts = settings.connect_attempts.max(1);
    let mut upstream = None;
    let mut made = 0;
    while made < attempts && upstream.is_none() {
        let attempt = made;
        made += 1;
        match tokio::time::timeout(settings.connect_timeout, connect(attempt)).await {
            Ok(Ok(u)) => upstream = Some(u),
            Ok(Err(e)) => {
                counters.connect_fail.inc();
                tracing::debug!(attempt, error = %e, "tcp upstream connect failed");
            }
            Err(_) => {
                counters.connect_fail.inc();
                tracing::debug!(attempt, "tcp upstream connect timed out");
            }
        }
    }
    let Some((upstream, _held)) = upstream else {
        counters.no_upstream.inc();
        return Outcome {
            end: End::ConnectFailed,
            rx_bytes: 0,
            tx_bytes: 0,
            attempts: made,
        };
    };

    let spliced = splice(
        downstream,
        upstream,
        settings.idle_timeout,
        [Some(&counters.rx_bytes), Some(&counters.tx_bytes)],
    )
    .await;
    if spliced.end == End::IdleTimeout {
        counters.idle_timeout.inc();
    }
    Outcome {
        end: spliced.end,
        rx_bytes: spliced.bytes[0],
        tx_bytes: spliced.bytes[1],
        attempts: made,
    }
}

/// What [`splice`] moved, and how it ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Spliced {
    /// `Closed`, `IdleTimeout` or `Error`.
    pub end: End,
    /// Bytes copied from `a` to `b`, and from `b` to `a`.
    pub bytes: [u64; 2],
}

/// Copy bytes both ways between `a` and `b` until both directions ended (each
/// EOF half-closes the other side), either side fails (a reset is not a
/// half-close: both end), or no byte moved either way for `idle`. The one splice
/// for TCP proxy connections and HTTP upgrade tunnels. `meters` count the bytes
/// of each direction (a to b, b to a) as they move.
pub async fn splice<A, B>(a: A, b: B, idle: Duration, meters: [Option<&IntCounter>; 2]) -> Spliced
where
    A: AsyncRead + AsyncWrite,
    B: AsyncRead + AsyncWrite,
{
    let start = Instant::now();
    let last = AtomicU64::new(0);
    let (down_r, down_w) = tokio::io::split(a);
    let (up_r, up_w) = tokio::io::split(b);
    let rx = AtomicU64::new(0);
    let tx = AtomicU64::new(0);
    let client_to_up = pump(down_r, up_w, meters[0], &rx, &last, start);
    let up_to_client = pump(up_r, down_w, meters[1], &tx, &last, start);
    let copy = async {
        tokio::pin!(client_to_up, up_to_client);
        let (mut a_done, mut b_done) = (false, false);
        while !(a_done && b_done) {
            // An error in either direction ends both (a reset is not a half-close).
            let result = tokio::select! {
                r = &mut client_to_up, if !a_done => { a_done = true; r }
                r = &mut up_to_client, if !b_done => { b_done = true; r }
            };
            if result.is_err() {
                return End::Error;
            }
        }
        End::Closed
    };
    let idle = idle_watch(idle, &last, start);
    let end = tokio::select! {
        end = copy => end,
        () = idle => End::IdleTimeout,
    };
    Spliced {
        end,
        bytes: [rx.load(Ordering::Relaxed), tx.load(Ordering::Relaxed)],
    }
}

/// What a proxied connection holds on its upstream side besides the stream: its
/// slot in the cluster's `max_connections` breaker, and the [`Attempt`] that keeps
/// it counted as active on its endpoint (least_request sees TCP connections) and in
/// `max_requests`.
pub type Held = (Option<Permit>, Attempt);

/// One connect attempt to `cluster` for [`proxy_connection`], the way HTTP and
/// Thrift use an endpoint: [`Cluster::attempt`] (the `max_requests` breaker, the
/// load balancer with the connection's `hash`, another endpoint than `last` when
/// there is one; the pick is recorded in `last`), then [`pool::dial`]
/// (`max_connections`, the connect timeout, upstream TLS). Success and failure
/// feed outlier detection; a connect cut by the caller's timeout is a failure.
pub fn connect(
    cluster: &Arc<Cluster>,
    hash: Option<u64>,
    last: &mut Option<Arc<Endpoint>>,
) -> impl Future<Output = io::Result<(Stream, Held)>> + Send + 'static {
    let attempt = cluster.attempt(hash, last.as_ref());
    if let Ok(a) = &attempt {
        *last = Some(a.endpoint().clone());
    }
    async move {
        let mut attempt = attempt.map_err(io::Error::other)?;
        attempt.report_on_drop(Some(Reported::ConnectFailure));
        let dialed = pool::dial(attempt.endpoint(), &attempt.cluster().pool).await;
        match dialed {
            Ok((io, slot)) => {
                attempt.report(Reported::Success);
                Ok((io, (slot, attempt)))
            }
            Err(SendError::Connect(e)) => {
                attempt.connect_failed(&e);
                Err(e)
            }
            Err(e) => {
                // The proxy's own limit (`max_connections`): not the endpoint's fault.
                attempt.report_on_drop(None);
                Err(io::Error::other(e.to_string()))
            }
        }
    }
}

struct ActiveGuard<'a>(&'a IntGauge);

impl Drop for ActiveGuard<'_> {
    fn drop(&mut self) {
        self.0.dec();
    }
}

fn millis_since(start: Instant) -> u64 {
    u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// Copy one direction until EOF, then shut down the write side (half-close).
/// A TLS peer closing without `close_notify` (`UnexpectedEof`) counts as EOF.
/// On an error, the other direction is cut too (the caller stops on `Err`).
async fn pump<R, W>(
    mut r: ReadHalf<R>,
    mut w: WriteHalf<W>,
    counter: Option<&IntCounter>,
    total: &AtomicU64,
    last: &AtomicU64,
    start: Instant,
) -> io::Result<()>
where
    R: AsyncRead,
    W: AsyncWrite,
{
    let mut buf = vec![0u8; BUF];
    loop {
        let n = match r.read(&mut buf).await {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => break,
            Err(e) => return Err(e),
        };
        last.store(millis_since(start), Ordering::Relaxed);
        w.write_all(&buf[..n]).await?;
        if let Some(c) = counter {
            c.inc_by(n as u64);
        }
        total.fetch_add(n as u64, Ordering::Relaxed);
        last.store(millis_since(start), Ordering::Relaxed);
    }
    // The peer may already be gone; a failed shutdown only means nothing to flush.
    let _ = w.shutdown().await;
    Ok(())
}

/// Resolves once no byte moved for `idle` (checked at the deadline, re-armed on activity).
async fn idle_watch(idle: Duration, last: &AtomicU64, start: Instant) {
    let idle_ms = u64::try_from(idle.as_millis()).unwrap_or(u64::MAX);
    loop {
        let since = millis_since(start).saturating_sub(last.load(Ordering::Relaxed));
        if since >= idle_ms {
            return;
        }
        tokio::time::sleep(Duration::from_millis(idle_ms - since)).await;
    }
}

#[cfg(test)]
mod tests;
