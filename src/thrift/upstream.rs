//! The upstream side of the Thrift proxy: the clusters a listener routes to, and
//! Thrift connections that wait idle on their endpoint's pool between calls, like
//! HTTP/1.1 ones (`upstream::pool`): they survive reloads that keep the endpoint,
//! expire after the cluster's `idle_timeout`, count against its `max_connections`
//! and are capped by `max_idle_per_endpoint`. One call is in flight per connection,
//! so sequence ids pass through unchanged.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::BytesMut;
use futures_util::FutureExt;
use tokio::io::AsyncReadExt;

use super::codec::{Decoder, DecoderConfig, Protocol, Transport};
use crate::upstream::breakers::Permit;
use crate::upstream::connector::Stream;
use crate::upstream::pool::{self, Pooled, SendError};
use crate::upstream::{Attempt, Cluster};

/// Read buffer of a new connection.
const READ_CHUNK: usize = 16 * 1024;

/// The config snapshot's clusters by name.
pub type Clusters = Arc<HashMap<String, Arc<Cluster>>>;

/// The framing a connection speaks: a cluster without a fixed `thrift:` framing
/// follows each client's, so one endpoint may hold connections of several kinds.
pub(crate) type Framing = (Transport, Protocol);

/// One upstream connection with its read buffer and decoder.
pub struct Conn {
    pub(crate) io: Stream,
    pub(crate) buf: BytesMut,
    pub(crate) decoder: Decoder,
    framing: Framing,
    /// The connection's slot in the cluster's `max_connections` breaker.
    _slot: Option<Permit>,
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conn")
            .field("buffered", &self.buf.len())
            .finish()
    }
}

impl Pooled for Conn {
    /// Reading would block: not closed by the upstream, and no unsolicited bytes.
    fn is_reusable(&mut self) -> bool {
        self.buf.is_empty() && self.io.read_buf(&mut self.buf).now_or_never().is_none()
    }
}

/// Why no connection could be had.
pub(crate) enum DialError {
    /// The cluster's `max_connections` breaker is full.
    Overflow,
    Failed(std::io::Error),
}

/// An idle connection of `framing` to the attempt's endpoint, or a new one (within
/// the cluster's connect timeout and `max_connections`). A connect failure is
/// reported on the attempt.
pub(crate) async fn connection(
    attempt: &mut Attempt,
    framing: Framing,
    max_message_size: usize,
) -> Result<Conn, DialError> {
    let cluster = attempt.cluster();
    let ep = attempt.endpoint();
    let idle_timeout = cluster.pool.idle_timeout;
    if let Some(c) = ep.pool.thrift.pop(idle_timeout, |c| c.framing == framing) {
        return Ok(c);
    }
    let dialed = pool::dial(ep, &cluster.pool).await;
    let (io, slot) = match dialed {
        Ok(d) => d,
        Err(SendError::Overflow) => return Err(DialError::Overflow),
        Err(SendError::Connect(e)) => {
            attempt.connect_failed(&e);
            return Err(DialError::Failed(e));
        }
        Err(e) => {
            let e = std::io::Error::other(e.to_string());
            attempt.connect_failed(&e);
            return Err(DialError::Failed(e));
        }
    };
    let decoder = Decoder::new(DecoderConfig {
        transport: Some(framing.0),
        protocol: Some(framing.1),
        max_message_size,
    });
    Ok(Conn {
        io,
        buf: BytesMut::with_capacity(READ_CHUNK),
        decoder,
        framing,
        _slot: slot,
    })
}

/// A connection whose call completed cleanly goes back to its endpoint's pool,
/// unless bytes followed the reply (the upstream is out of step with us).
pub(crate) fn release(attempt: &Attempt, conn: Conn) {
    if conn.buf.is_empty() {
        let s = &attempt.cluster().pool;
        attempt
            .endpoint()
            .pool
            .thrift
            .put(conn, s.idle_timeout, s.max_idle);
    }
}
