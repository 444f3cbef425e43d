//! gRPC to the management server over the management cluster's own connector: an
//! attempt on the endpoint the cluster's load balancer picks (so active health
//! checks, ejections and breakers apply), TCP with its connect timeout, its TLS (CA, SAN checks, client
//! certificate, ALPN h2), then one HTTP/2 connection with keep-alive pings so a
//! silent server is noticed.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tonic_xds::body::Body;

use crate::upstream::breakers::Permit;
use crate::upstream::{pool, Attempt, Cluster, Outcome};

/// An HTTP/2 connection as the tower service tonic's generated client drives.
pub(super) struct H2(SendRequest<Body>);

type Pending = Pin<
    Box<dyn Future<Output = Result<http::Response<hyper::body::Incoming>, hyper::Error>> + Send>,
>;

impl tower_service::Service<http::Request<Body>> for H2 {
    type Response = http::Response<hyper::body::Incoming>;
    type Error = hyper::Error;
    type Future = Pending;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), hyper::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<Body>) -> Pending {
        Box::pin(self.0.send_request(req))
    }
}

/// The management cluster's hold on the endpoint the stream uses: an attempt (active
/// on the endpoint, a `max_requests` slot) and a `max_connections` slot, for the
/// stream's life.
pub(super) struct Hold {
    attempt: Attempt,
    _conn: Option<Permit>,
}

impl Hold {
    /// The stream ended: a failure before any answer counts against the endpoint.
    pub(super) fn end(mut self, answered: bool) {
        self.attempt.report(if answered {
            Outcome::Success
        } else {
            Outcome::Failure
        });
    }
}

/// Connect to one endpoint of `cluster` (the one way to use an endpoint): the
/// service, its origin URI and the hold to keep while the stream lives.
pub(super) async fn connect(cluster: &Arc<Cluster>) -> Result<(H2, http::Uri, Hold), String> {
    let mut attempt = cluster
        .attempt(None, None)
        .map_err(|e| format!("cluster `{}`: {e}", cluster.name))?;
    let addr = attempt.endpoint().addr;
    let (stream, permit) = match pool::dial(attempt.endpoint(), &cluster.pool).await {
        Ok(s) => s,
        Err(e) => {
            attempt.connect_failed(&e);
            return Err(format!("connect to {addr}: {e}"));
        }
    };
    let handshake = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
        .timer(TokioTimer::new())
        .keep_alive_interval(Duration::from_secs(30))
        .keep_alive_timeout(Duration::from_secs(10))
        .keep_alive_while_idle(true)
        .handshake(TokioIo::new(stream))
        .await;
    let (send, conn) = match handshake {
        Ok(h) => h,
        Err(e) => {
            attempt.connect_failed(&e);
            return Err(format!("http/2 handshake with {addr}: {e}"));
        }
    };
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "xds connection ended");
        }
    });
    let scheme = if cluster.connector.tls.is_some() {
        "https"
    } else {
        "http"
    };
    let origin = format!("{scheme}://{addr}")
        .parse::<http::Uri>()
        .map_err(|e| e.to_string())?;
    let hold = Hold {
        attempt,
        _conn: permit,
    };
    Ok((H2(send), origin, hold))
}
