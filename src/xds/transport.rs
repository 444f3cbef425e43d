//! gRPC to the management server over the management cluster's own connector: an
//! endpoint picked by the cluster's load balancer (so active health checks and
//! ejections apply), TCP with its connect timeout, its TLS (CA, SAN checks, client
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

use crate::upstream::{Cluster, Outcome};

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

/// Connect to one endpoint of `cluster`: the service and its origin URI.
pub(super) async fn connect(cluster: &Arc<Cluster>) -> Result<(H2, http::Uri), String> {
    let Some(ep) = cluster.pick(None) else {
        return Err(format!(
            "cluster `{}` has no healthy endpoint",
            cluster.name
        ));
    };
    let stream = match cluster.connector.connect_addr(ep.addr).await {
        Ok(s) => s,
        Err(e) => {
            cluster.report(&ep, Outcome::ConnectFailure);
            return Err(format!("connect to {}: {e}", ep.addr));
        }
    };
    let (send, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
        .timer(TokioTimer::new())
        .keep_alive_interval(Duration::from_secs(30))
        .keep_alive_timeout(Duration::from_secs(10))
        .keep_alive_while_idle(true)
        .handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("http/2 handshake with {}: {e}", ep.addr))?;
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
    let origin = format!("{scheme}://{}", ep.addr)
        .parse::<http::Uri>()
        .map_err(|e| e.to_string())?;
    Ok((H2(send), origin))
}
