//! CDS, LDS and RDS applied: each update is translated and staged by
//! `config::from_xds::dynamic`, then compiled with the running file config and
//! swapped in by `Server::apply_dynamic` (the path a file reload takes: the same
//! checks, replaced listeners draining). A compile failure is a NACK naming the
//! resource; the last good state serves.

use std::sync::Arc;

use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::listener::v3::Listener;
use envoy_types::pb::envoy::config::route::v3::RouteConfiguration;

use crate::config::from_xds::dynamic::{nack_of, Staged};
pub use crate::config::from_xds::dynamic::{Accepted, Dynamic};
use crate::config::from_xds::Nack;
use crate::server::Server;

/// Stage an update with `stage` and swap it in; the accepted state moves on only
/// when it applied.
async fn apply(
    server: &Arc<Server>,
    accepted: &tokio::sync::Mutex<Accepted>,
    stage: impl FnOnce(&Accepted, &Dynamic) -> Result<Staged, Nack>,
) -> Result<(), Nack> {
    let mut acc = accepted.lock().await;
    let staged = stage(&acc, &server.xds_dynamic())?;
    for name in &staged.waiting {
        tracing::info!(listener = %name, "xds listener waits for its route configuration");
    }
    server
        .apply_dynamic(staged.dynamic)
        .await
        .map_err(|d| nack_of(&d))?;
    *acc = staged.accepted;
    Ok(())
}

/// CDS (state of the world): the response is every xDS cluster.
pub async fn apply_clusters(
    server: &Arc<Server>,
    accepted: &tokio::sync::Mutex<Accepted>,
    clusters: &[Cluster],
) -> Result<(), Nack> {
    apply(server, accepted, |a, d| a.clusters(d, clusters)).await
}

/// LDS (state of the world): the response is every xDS listener.
pub async fn apply_listeners(
    server: &Arc<Server>,
    accepted: &tokio::sync::Mutex<Accepted>,
    listeners: Vec<Listener>,
) -> Result<(), Nack> {
    apply(server, accepted, |a, d| a.listeners(d, listeners)).await
}

/// RDS: the route configurations in the response replace those of the same name.
pub async fn apply_routes(
    server: &Arc<Server>,
    accepted: &tokio::sync::Mutex<Accepted>,
    configs: &[RouteConfiguration],
) -> Result<(), Nack> {
    apply(server, accepted, |a, d| a.routes(d, configs)).await
}
