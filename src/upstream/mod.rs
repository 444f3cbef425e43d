//! Clusters: endpoints, load balancing and the upstream HTTP client (a keep-alive
//! pool per endpoint, HTTP/1.1 or multiplexed HTTP/2).

mod body;
pub mod connector;
mod lb;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};

pub use body::UpBody;
pub use lb::Lb;

use crate::config::raw;
use crate::stats::ClusterStats;

/// One upstream address with its live counters.
#[derive(Debug)]
pub struct Endpoint {
    pub addr: SocketAddr,
    /// `addr` as a string, for building URIs and logs without formatting per request.
    pub authority: Arc<str>,
    pub active: AtomicUsize,
    pub rq_total: AtomicU64,
    pub rq_error: AtomicU64,
    pub connect_fail: AtomicU64,
}

impl Endpoint {
    pub fn new(addr: SocketAddr) -> Endpoint {
        Endpoint {
            addr,
            authority: Arc::from(addr.to_string()),
            active: AtomicUsize::new(0),
            rq_total: AtomicU64::new(0),
            rq_error: AtomicU64::new(0),
            connect_fail: AtomicU64::new(0),
        }
    }
}

/// Decrements an endpoint's active-request count when dropped.
#[derive(Debug)]
pub struct ActiveGuard(pub Arc<Endpoint>);

impl ActiveGuard {
    pub fn new(ep: Arc<Endpoint>) -> ActiveGuard {
        ep.active.fetch_add(1, Ordering::Relaxed);
        ep.rq_total.fetch_add(1, Ordering::Relaxed);
        ActiveGuard(ep)
    }
}

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::Relaxed);
    }
}

pub type HttpClient = Client<connector::Connector, UpBody>;

/// A named group of endpoints with a load balancer and a client.
pub struct Cluster {
    pub name: Arc<str>,
    pub endpoints: Vec<Arc<Endpoint>>,
    pub lb: Lb,
    pub connect_timeout: Duration,
    pub protocol: raw::UpstreamProtocol,
    pub client: HttpClient,
    pub stats: ClusterStats,
    pub thrift: Option<raw::ThriftUpstream>,
    pub connector: connector::Connector,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster").field("name", &self.name).finish()
    }
}

impl Cluster {
    pub fn new(
        cfg: &raw::Cluster,
        endpoints: Vec<SocketAddr>,
        stats: ClusterStats,
        tls: Option<std::sync::Arc<crate::tls::ClientTls>>,
    ) -> Cluster {
        let connect_timeout = cfg
            .connect_timeout
            .map(|d| d.0)
            .unwrap_or(Duration::from_secs(1));
        let connector = connector::Connector {
            connect_timeout,
            tls,
        };
        let mut builder = Client::builder(TokioExecutor::new());
        builder
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .pool_idle_timeout(
                cfg.idle_timeout
                    .map(|d| d.0)
                    .unwrap_or(Duration::from_secs(60)),
            )
            .pool_max_idle_per_host(cfg.max_idle_per_endpoint.unwrap_or(128) as usize)
            .retry_canceled_requests(false)
            .set_host(false);
        if cfg.protocol == raw::UpstreamProtocol::Http2 {
            builder.http2_only(true);
        }
        Cluster {
            name: Arc::from(cfg.name.as_str()),
            endpoints: endpoints
                .into_iter()
                .map(|a| Arc::new(Endpoint::new(a)))
                .collect(),
            lb: Lb::new(cfg.lb_policy),
            connect_timeout,
            protocol: cfg.protocol,
            client: builder.build(connector.clone()),
            connector,
            stats,
            thrift: cfg.thrift.clone(),
        }
    }

    /// The next endpoint by the cluster's policy, skipping `avoid` when possible
    /// (a retry prefers another endpoint).
    pub fn pick(&self, avoid: Option<&Arc<Endpoint>>) -> Option<Arc<Endpoint>> {
        self.lb.pick(&self.endpoints, avoid).cloned()
    }
}

/// The Thrift proxy's view of the clusters: the same load balancers, connectors
/// (including upstream TLS) and counters as HTTP.
pub struct ThriftUpstreams {
    pub clusters: Arc<std::collections::HashMap<String, Arc<Cluster>>>,
}

impl crate::thrift::Upstreams for ThriftUpstreams {
    /// Picks by the cluster's policy and counts the call as active on the endpoint
    /// (least_request reads that) until [`complete`](Self::complete).
    fn pick(&self, cluster: &str) -> Option<SocketAddr> {
        let ep = self.clusters.get(cluster)?.pick(None)?;
        ep.active.fetch_add(1, Ordering::Relaxed);
        ep.rq_total.fetch_add(1, Ordering::Relaxed);
        Some(ep.addr)
    }

    fn connect_timeout(&self, cluster: &str) -> Duration {
        self.clusters
            .get(cluster)
            .map_or(Duration::from_secs(1), |c| c.connect_timeout)
    }

    fn framing(
        &self,
        cluster: &str,
    ) -> (
        Option<crate::thrift::codec::Transport>,
        Option<crate::thrift::codec::Protocol>,
    ) {
        crate::thrift::upstream_framing(self.clusters.get(cluster).and_then(|c| c.thrift.as_ref()))
    }

    fn connect<'a>(
        &'a self,
        cluster: &'a str,
        addr: SocketAddr,
    ) -> crate::thrift::ConnectFuture<'a> {
        Box::pin(async move {
            let c = self.clusters.get(cluster).ok_or_else(|| {
                std::io::Error::new(std::io::ErrorKind::NotFound, "unknown cluster")
            })?;
            match c.connector.connect_addr(addr).await {
                Ok(s) => Ok(Box::new(s) as crate::thrift::BoxIo),
                Err(e) => {
                    c.stats.connect_fail.inc();
                    if let Some(ep) = c.endpoints.iter().find(|e| e.addr == addr) {
                        ep.connect_fail.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e)
                }
            }
        })
    }

    fn complete(&self, cluster: &str, addr: SocketAddr, ok: bool) {
        if let Some(ep) = self
            .clusters
            .get(cluster)
            .and_then(|c| c.endpoints.iter().find(|e| e.addr == addr))
        {
            ep.active.fetch_sub(1, Ordering::Relaxed);
            if !ok {
                ep.rq_error.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}
