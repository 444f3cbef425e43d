//! The upstream side: the trait the core implements with its clusters and load
//! balancer, and a small per-endpoint pool of idle connections (one call in flight
//! per connection, so sequence ids pass through unchanged).

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Mutex;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncWrite};

use super::codec::{Decoder, Protocol, Transport};

/// A byte stream to an upstream (plain TCP, or TLS when the core wraps it).
pub trait UpstreamIo: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> UpstreamIo for T {}

pub type BoxIo = Box<dyn UpstreamIo>;
/// A held retry slot, released on drop (see [`Upstreams::retry_permit`]).
pub type RetryPermit = Box<dyn Send + Sync>;
pub type ConnectFuture<'a> = Pin<Box<dyn Future<Output = io::Result<BoxIo>> + Send + 'a>>;

/// How the proxy reaches clusters. The core implements this with its real clusters,
/// load balancer and health state; tests implement it with fixed addresses.
pub trait Upstreams: Send + Sync {
    /// A healthy endpoint of `cluster`, or `None` (no such cluster or none healthy).
    fn pick(&self, cluster: &str) -> Option<SocketAddr>;

    /// As [`Upstreams::pick`], for a retry: another endpoint than `avoid` when the
    /// cluster has a healthy one. Default: [`Upstreams::pick`].
    fn pick_avoiding(&self, cluster: &str, _avoid: SocketAddr) -> Option<SocketAddr> {
        self.pick(cluster)
    }

    /// Admission for one retry to `cluster`: `None` when its `max_retries` breaker
    /// is full (the failed try's outcome stands). The permit is held while the
    /// retry runs. Default: always admitted.
    fn retry_permit(&self, _cluster: &str) -> Option<RetryPermit> {
        Some(Box::new(()))
    }

    /// Time allowed to establish a connection to an endpoint of `cluster`.
    fn connect_timeout(&self, cluster: &str) -> Duration;

    /// The cluster's `thrift: { transport, protocol }`; `None` parts follow the
    /// downstream message. See [`super::routes::upstream_framing`].
    fn framing(&self, cluster: &str) -> (Option<Transport>, Option<Protocol>);

    /// Open a connection (override for upstream TLS). Default: TCP, no Nagle.
    fn connect<'a>(&'a self, _cluster: &'a str, addr: SocketAddr) -> ConnectFuture<'a> {
        Box::pin(async move {
            let s = tokio::net::TcpStream::connect(addr).await?;
            s.set_nodelay(true)?;
            Ok(Box::new(s) as BoxIo)
        })
    }

    /// The end of one call to `addr` (for least-request accounting or passive
    /// health): every `Some` from [`Upstreams::pick`] is followed by exactly one
    /// `complete`, also when the call is cancelled by its timeout. `ok` is false for
    /// connect failures, resets, timeouts and protocol errors. Default: nothing.
    fn complete(&self, _cluster: &str, _addr: SocketAddr, _ok: bool) {}

    /// The upstream answered a call with a `TApplicationException` (after
    /// `complete(.., true)`); feeds outlier detection. Default: nothing.
    fn exception(&self, _cluster: &str, _addr: SocketAddr) {}
}

/// One upstream connection with its read buffer and decoder.
pub(crate) struct Conn {
    pub io: BoxIo,
    pub buf: BytesMut,
    pub decoder: Decoder,
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conn")
            .field("buffered", &self.buf.len())
            .finish()
    }
}

/// Idle connections per cluster, then per (endpoint, transport, protocol). The lock
/// guards a push or a pop and is never held across an await; the request path does
/// not allocate for a lookup.
#[derive(Debug, Default)]
pub(crate) struct Pool {
    idle: Mutex<HashMap<String, HashMap<Key, Vec<Conn>>>>,
    max_idle_per_endpoint: usize,
}

type Key = (SocketAddr, Transport, Protocol);
type Idle = HashMap<String, HashMap<Key, Vec<Conn>>>;

impl Pool {
    pub fn new(max_idle_per_endpoint: usize) -> Pool {
        Pool {
            idle: Mutex::new(HashMap::new()),
            max_idle_per_endpoint,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Idle> {
        match self.idle.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    pub fn take(&self, cluster: &str, key: Key) -> Option<Conn> {
        self.lock().get_mut(cluster)?.get_mut(&key)?.pop()
    }

    /// Keep `conn` for reuse, unless the endpoint already has enough idle ones.
    pub fn put(&self, cluster: &str, key: Key, conn: Conn) {
        let surplus = {
            let mut idle = self.lock();
            if !idle.contains_key(cluster) {
                idle.insert(cluster.to_owned(), HashMap::new());
            }
            match idle.get_mut(cluster) {
                Some(by_key) => {
                    let list = by_key.entry(key).or_default();
                    if list.len() < self.max_idle_per_endpoint {
                        list.push(conn);
                        None
                    } else {
                        Some(conn)
                    }
                }
                None => Some(conn),
            }
        };
        // Closed outside the lock.
        drop(surplus);
    }
}
