//! The xDS client (docs/xds.md): one Envoy v3 aggregated discovery (ADS) stream,
//! state-of-the-world or incremental (delta) protocol, to the management server
//! named by `xds.cluster`.
//! What it accepts goes through the same checks as the file config; what fails them
//! is NACKed with attache's message and the last accepted state keeps serving, also
//! while the server is unreachable.
//!
//! - [`eds`]: ClusterLoadAssignment → the endpoints of `discovery: { eds: … }` clusters.
//! - `ads`: the stream, ACK/NACK, reconnect with jittered backoff.
//! - `delta`: the same over `DeltaAggregatedResources` (`api_type:
//!   aggregated_delta_grpc`).
//! - `transport`: gRPC over the management cluster's own connector (TLS, mTLS,
//!   connect timeout) and HTTP/2.
//! - `dynamic`: CDS / LDS / RDS updates swapped in like a file reload.
//!
//! Translating resources into attache's config is `config::from_xds`: the client
//! hands it resources and applies what it compiles to.

mod ads;
mod delta;
pub mod dynamic;
pub mod eds;
mod transport;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime};

use prometheus::{IntCounter, IntGauge};

use crate::stats::Stats;

/// An xDS resource type (the compiled `xds.resources`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ResourceType {
    Eds,
    Cds,
    Lds,
    Rds,
}

pub const XDS_UPDATES_TOTAL: &str = "attache_xds_updates_total";
pub const XDS_CONNECTED: &str = "attache_xds_connected";

/// The type URL of each resource type.
pub fn type_url(t: ResourceType) -> &'static str {
    match t {
        ResourceType::Eds => "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment",
        ResourceType::Cds => "type.googleapis.com/envoy.config.cluster.v3.Cluster",
        ResourceType::Lds => "type.googleapis.com/envoy.config.listener.v3.Listener",
        ResourceType::Rds => "type.googleapis.com/envoy.config.route.v3.RouteConfiguration",
    }
}

/// The metric label and `/config_dump` key of a type.
pub fn short_name(t: ResourceType) -> &'static str {
    match t {
        ResourceType::Eds => "eds",
        ResourceType::Cds => "cds",
        ResourceType::Lds => "lds",
        ResourceType::Rds => "rds",
    }
}

const ALL_TYPES: [ResourceType; 4] = [
    ResourceType::Eds,
    ResourceType::Cds,
    ResourceType::Lds,
    ResourceType::Rds,
];

fn type_of(url: &str) -> Option<ResourceType> {
    ALL_TYPES.into_iter().find(|t| type_url(*t) == url)
}

/// Decode resource `i` of a response as the message of `t`.
fn decode<M: prost_otlp::Message + Default>(
    t: ResourceType,
    i: usize,
    any: &envoy_types::pb::google::protobuf::Any,
) -> Result<M, crate::config::from_xds::Nack> {
    let bad = |message: String| crate::config::from_xds::Nack {
        resource: format!("resources[{i}]"),
        field: "type_url".to_string(),
        message,
    };
    if any.type_url != type_url(t) {
        return Err(bad(format!(
            "`{}` in a {} response",
            any.type_url,
            short_name(t)
        )));
    }
    M::decode(&*any.value).map_err(|e| bad(format!("cannot decode: {e}")))
}

/// The compiled `xds:` block.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// The static cluster of the management server.
    pub cluster: String,
    pub node_id: String,
    pub node_cluster: String,
    pub region: String,
    pub zone: String,
    pub sub_zone: String,
    pub types: BTreeSet<ResourceType>,
    pub initial_fetch_timeout: Duration,
    pub backoff: Duration,
    pub max_backoff: Duration,
    /// The incremental protocol (`api_type: aggregated_delta_grpc`).
    pub delta: bool,
}

/// One accepted resource, for `/config_dump`.
struct Accepted {
    version: String,
    at: SystemTime,
}

/// What each type last did, for `/config_dump`.
#[derive(Default)]
struct TypeStatus {
    version: Option<String>,
    accepted_at: Option<SystemTime>,
    last_nack: Option<(String, SystemTime)>,
}

#[derive(Default)]
struct Status {
    connected: bool,
    types: BTreeMap<ResourceType, TypeStatus>,
    resources: BTreeMap<(ResourceType, String), Accepted>,
}

/// The running client: settings, counters and what `/config_dump` shows.
pub struct Client {
    pub settings: Settings,
    status: Mutex<Status>,
    updates: prometheus::IntCounterVec,
    connected: IntGauge,
    /// LDS listeners and RDS routes accepted (kept across streams).
    dynamic: tokio::sync::Mutex<dynamic::Accepted>,
    /// Delta protocol: every accepted resource and its version (kept across streams).
    held: Mutex<delta::Held>,
}

static CLIENT: OnceLock<Arc<Client>> = OnceLock::new();

impl Client {
    fn new(settings: Settings, stats: &Stats) -> Client {
        let updates = stats.counter_vec(
            XDS_UPDATES_TOTAL,
            "xDS responses by resource type and result (accepted, rejected)",
            &["type", "result"],
        );
        for t in ALL_TYPES {
            for r in ["accepted", "rejected"] {
                updates.with_label_values(&[short_name(t), r]);
            }
        }
        let connected = stats
            .gauge_vec(XDS_CONNECTED, "1 while the ADS stream is up", &[])
            .with_label_values(&[] as &[&str]);
        Client {
            settings,
            status: Mutex::new(Status::default()),
            updates,
            connected,
            dynamic: tokio::sync::Mutex::new(dynamic::Accepted::default()),
            held: Mutex::new(delta::Held::default()),
        }
    }

    fn status(&self) -> std::sync::MutexGuard<'_, Status> {
        self.status.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn counter(&self, t: ResourceType, result: &str) -> IntCounter {
        self.updates.with_label_values(&[short_name(t), result])
    }

    fn set_connected(&self, up: bool) {
        self.connected.set(i64::from(up));
        self.status().connected = up;
    }

    /// Record an accepted response of `t` at `version` carrying `names`.
    fn accepted(&self, t: ResourceType, version: &str, names: impl IntoIterator<Item = String>) {
        let each = names.into_iter().map(|n| (n, version.to_string()));
        self.accepted_each(t, version, each, &[]);
    }

    /// Record an accepted response of `t` (`version` for the type): each resource
    /// with its own version, and the resources it removed.
    fn accepted_each(
        &self,
        t: ResourceType,
        version: &str,
        resources: impl IntoIterator<Item = (String, String)>,
        removed: &[String],
    ) {
        self.counter(t, "accepted").inc();
        let now = SystemTime::now();
        let mut s = self.status();
        let ts = s.types.entry(t).or_default();
        ts.version = Some(version.to_string());
        ts.accepted_at = Some(now);
        for (n, version) in resources {
            s.resources.insert((t, n), Accepted { version, at: now });
        }
        for n in removed {
            s.resources.remove(&(t, n.clone()));
        }
    }

    /// Resources of `t` no longer subscribed to leave `/config_dump`.
    fn forget(&self, t: ResourceType, names: &BTreeSet<String>) {
        self.status()
            .resources
            .retain(|(rt, n), _| *rt != t || !names.contains(n));
    }

    fn rejected(&self, t: ResourceType, message: &str) {
        self.counter(t, "rejected").inc();
        self.status().types.entry(t).or_default().last_nack =
            Some((message.to_string(), SystemTime::now()));
    }

    /// The last accepted version of `t` (sent again on reconnect).
    fn version(&self, t: ResourceType) -> String {
        self.status()
            .types
            .get(&t)
            .and_then(|s| s.version.clone())
            .unwrap_or_default()
    }

    fn dump(&self) -> serde_json::Value {
        let s = self.status();
        let rfc = |t: &SystemTime| crate::http::rfc3339(*t);
        let types: serde_json::Map<String, serde_json::Value> = s
            .types
            .iter()
            .map(|(t, ts)| {
                (
                    short_name(*t).to_string(),
                    serde_json::json!({
                        "version": ts.version,
                        "accepted_at": ts.accepted_at.as_ref().map(rfc),
                        "last_nack": ts.last_nack.as_ref().map(|(m, at)| serde_json::json!({
                            "message": m, "at": rfc(at),
                        })),
                    }),
                )
            })
            .collect();
        let resources: Vec<serde_json::Value> = s
            .resources
            .iter()
            .map(|((t, name), a)| {
                serde_json::json!({
                    "type": short_name(*t),
                    "name": name,
                    "version": a.version,
                    "accepted_at": rfc(&a.at),
                })
            })
            .collect();
        serde_json::json!({
            "server_cluster": self.settings.cluster,
            "node_id": self.settings.node_id,
            "connected": s.connected,
            "types": types,
            "resources": resources,
        })
    }
}

/// Start the xDS client of `server` (once, at startup; an `xds:` block that a reload
/// adds or changes applies on restart). Starting EDS clusters then wait for their
/// first endpoints up to `initial_fetch_timeout`.
pub fn start(server: &Arc<crate::server::Server>) {
    let Some(settings) = server.snapshot.load().xds.clone() else {
        return;
    };
    let client = Arc::new(Client::new((*settings).clone(), &server.stats));
    if CLIENT.set(client.clone()).is_err() {
        return;
    }
    eds::registry().activate(settings.initial_fetch_timeout);
    tokio::spawn(ads::run(client, server.clone()));
}

/// `/config_dump`'s `xds` section: each type's last accepted version and NACK, and
/// each accepted resource with its version and when it was accepted.
pub fn dump() -> serde_json::Value {
    CLIENT.get().map_or(serde_json::Value::Null, |c| c.dump())
}
