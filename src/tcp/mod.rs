//! The TCP proxy: connect upstream (retrying another endpoint on failure), then copy
//! bytes both ways with half-close and an idle timeout.
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
//! | `attache_tcp_connect_fail_total` | `listener` | failed upstream connect attempts (incl. timeouts) |
//! | `attache_tcp_no_upstream_total` | `listener` | connections closed because every attempt failed |
//! | `attache_tcp_idle_timeout_total` | `listener` | connections closed by the idle timeout |

use std::future::Future;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use attache_filters::Stats;
use prometheus::{IntCounter, IntGauge};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadHalf, WriteHalf};

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
/// time, and may run a TLS handshake via `ClientTls`). Never panics on I/O; both
/// streams are closed when this returns.
pub async fn proxy_connection<D, U, C, F>(
    downstream: D,
    mut connect: C,
    settings: Settings,
    counters: &TcpCounters,
) -> Outcome
where
    D: AsyncRead + AsyncWrite + Unpin,
    U: AsyncRead + AsyncWrite + Unpin,
    C: FnMut(u32) -> F,
    F: Future<Output = io::Result<U>>,
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
    let Some(upstream) = upstream else {
        counters.no_upstream.inc();
        return Outcome {
            end: End::ConnectFailed,
            rx_bytes: 0,
            tx_bytes: 0,
            attempts: made,
        };
    };

    let start = Instant::now();
    let last = AtomicU64::new(0);
    let (down_r, down_w) = tokio::io::split(downstream);
    let (up_r, up_w) = tokio::io::split(upstream);
    let rx = AtomicU64::new(0);
    let tx = AtomicU64::new(0);
    let client_to_up = pump(down_r, up_w, &counters.rx_bytes, &rx, &last, start);
    let up_to_client = pump(up_r, down_w, &counters.tx_bytes, &tx, &last, start);
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
    let idle = idle_watch(settings.idle_timeout, &last, start);
    let end = tokio::select! {
        end = copy => end,
        () = idle => {
            counters.idle_timeout.inc();
            End::IdleTimeout
        }
    };
    Outcome {
        end,
        rx_bytes: rx.load(Ordering::Relaxed),
        tx_bytes: tx.load(Ordering::Relaxed),
        attempts: made,
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
    counter: &IntCounter,
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
        counter.inc_by(n as u64);
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
