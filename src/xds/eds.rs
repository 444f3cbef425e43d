//! EDS: Envoy's ClusterLoadAssignment becomes the endpoint set of every cluster with
//! `discovery: { eds: { service_name } }`, under the rules of the other discovery
//! sources (src/upstream/discovery.rs): endpoint identity is the address, so an
//! endpoint that stays keeps its counters, health, ejections and pooled connections;
//! an invalid assignment (bad address, duplicate, over `max_endpoints`, nothing that
//! may take traffic, a priority above 0) is rejected whole and the last good set keeps
//! serving.
//!
//! The registry is process-wide (one xDS client per process): clusters register when
//! they start and drop out when a reload replaces them (it holds `Weak`s); the last
//! accepted set per service name is kept, so a cluster that a reload rebuilds starts
//! with it at once.

use std::collections::{BTreeSet, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use envoy_types::pb::envoy::config::core::v3::{address, socket_address, HealthStatus};
use envoy_types::pb::envoy::config::endpoint::v3::{
    lb_endpoint::HostIdentifier, ClusterLoadAssignment, LbEndpoint,
};

use super::translate::Nack;
use crate::config::endpoints::{self, Spec};
use crate::config::raw::EndpointEntry;
use crate::upstream::Cluster;

/// The EDS clusters of this process and the last accepted endpoints per service.
pub struct Registry {
    inner: Mutex<Inner>,
    /// Wakes the ADS client when the set of wanted service names changes.
    pub(super) wanted_changed: tokio::sync::Notify,
    /// Bumped on every accepted assignment (starting clusters wait on it).
    accepted: tokio::sync::watch::Sender<u64>,
    /// An xDS client runs (without one, nothing will ever answer).
    active: AtomicBool,
    initial_fetch_ms: AtomicU64,
}

#[derive(Default)]
struct Inner {
    clusters: Vec<(String, Weak<Cluster>)>,
    sets: HashMap<String, Arc<[Spec]>>,
}

/// The process-wide registry.
pub fn registry() -> &'static Registry {
    static REG: OnceLock<Registry> = OnceLock::new();
    REG.get_or_init(|| Registry {
        inner: Mutex::new(Inner::default()),
        wanted_changed: tokio::sync::Notify::new(),
        accepted: tokio::sync::watch::channel(0).0,
        active: AtomicBool::new(false),
        initial_fetch_ms: AtomicU64::new(15_000),
    })
}

impl Registry {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// An xDS client is about to run; starting EDS clusters wait up to `timeout`.
    pub(super) fn activate(&self, initial_fetch_timeout: Duration) {
        self.initial_fetch_ms.store(
            u64::try_from(initial_fetch_timeout.as_millis()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
        self.active.store(true, Ordering::SeqCst);
    }

    /// The service names running clusters ask for (drops replaced clusters).
    pub fn wanted(&self) -> BTreeSet<String> {
        let mut g = self.lock();
        g.clusters.retain(|(_, w)| w.strong_count() > 0);
        g.clusters.iter().map(|(s, _)| s.clone()).collect()
    }

    /// The smallest `max_endpoints` of the clusters that take `service`.
    fn max_for(&self, service: &str) -> usize {
        self.lock()
            .clusters
            .iter()
            .filter(|(s, _)| s == service)
            .filter_map(|(_, w)| w.upgrade())
            .map(|c| c.settings.max_endpoints)
            .min()
            .unwrap_or(endpoints::DEFAULT_MAX_ENDPOINTS)
    }

    /// Check every assignment of one response; all or nothing.
    pub fn check(&self, assignments: &[ClusterLoadAssignment]) -> Result<Vec<Checked>, Nack> {
        let mut seen = BTreeSet::new();
        let mut out = Vec::with_capacity(assignments.len());
        for cla in assignments {
            if !seen.insert(cla.cluster_name.as_str()) {
                return Err(nack(
                    &cla.cluster_name,
                    "cluster_name",
                    "the response carries this ClusterLoadAssignment twice",
                ));
            }
            let max = self.max_for(&cla.cluster_name);
            out.push(Checked {
                service: cla.cluster_name.clone(),
                specs: specs(cla, max)?.into(),
            });
        }
        Ok(out)
    }

    /// Apply checked assignments to their clusters and remember them.
    pub fn apply(&self, checked: Vec<Checked>) {
        let mut targets = Vec::new();
        {
            let mut g = self.lock();
            for c in checked {
                for (s, w) in &g.clusters {
                    if *s == c.service {
                        if let Some(cl) = w.upgrade() {
                            targets.push((cl, c.specs.clone()));
                        }
                    }
                }
                g.sets.insert(c.service, c.specs);
            }
        }
        for (cl, specs) in targets {
            set(&cl, &specs);
        }
        self.accepted.send_modify(|n| *n += 1);
    }

    /// The last accepted endpoints for `service`.
    pub fn accepted(&self, service: &str) -> Option<Arc<[Spec]>> {
        self.lock().sets.get(service).cloned()
    }
}

/// One assignment that passed the checks.
pub struct Checked {
    pub service: String,
    pub specs: Arc<[Spec]>,
}

fn set(c: &Cluster, specs: &[Spec]) {
    // The first set is the initial one, not an addition (no `pending` health state).
    let first = c.hosts().all.is_empty();
    if c.set_endpoints(specs, !first) {
        tracing::info!(cluster = %c.name, endpoints = specs.len(), "endpoints updated from eds");
    }
}

/// Register a starting EDS cluster: it takes the last accepted set at once, or waits
/// (bounded by `initial_fetch_timeout`) for the server's first answer; without an
/// answer it starts empty and fills when one arrives.
pub async fn attach(c: &Arc<Cluster>, service: &str) {
    let reg = registry();
    let cached = {
        let mut g = reg.lock();
        g.clusters.retain(|(_, w)| w.strong_count() > 0);
        g.clusters.push((service.to_string(), Arc::downgrade(c)));
        g.sets.get(service).cloned()
    };
    reg.wanted_changed.notify_one();
    if let Some(specs) = cached {
        set(c, &specs);
        return;
    }
    if !reg.active.load(Ordering::SeqCst) {
        return;
    }
    let wait = Duration::from_millis(reg.initial_fetch_ms.load(Ordering::Relaxed));
    let mut rx = reg.accepted.subscribe();
    let first = async {
        while reg.accepted(service).is_none() {
            if rx.changed().await.is_err() {
                return;
            }
        }
    };
    if tokio::time::timeout(wait, first).await.is_err() {
        tracing::warn!(cluster = %c.name, service, timeout = ?wait, "no endpoints from eds within initial_fetch_timeout; starting without them");
    }
}

fn nack(resource: &str, field: &str, message: impl Into<String>) -> Nack {
    Nack {
        resource: resource.to_string(),
        field: field.to_string(),
        message: message.into(),
    }
}

/// Where an endpoint sits in the assignment, for error paths.
struct At {
    locality: usize,
    endpoint: usize,
}

/// The endpoints of `cla` that may take traffic, checked like a discovery file.
pub fn specs(cla: &ClusterLoadAssignment, max: usize) -> Result<Vec<Spec>, Nack> {
    let name = cla.cluster_name.as_str();
    if !cla.named_endpoints.is_empty() {
        return Err(nack(
            name,
            "named_endpoints",
            "attache does not resolve named endpoints; list them in `endpoints`",
        ));
    }
    if cla
        .policy
        .as_ref()
        .is_some_and(|p| !p.drop_overloads.is_empty())
    {
        return Err(nack(
            name,
            "policy.drop_overloads",
            "attache does not drop requests by overload category",
        ));
    }
    let mut entries = Vec::new();
    let mut at = Vec::new();
    let mut listed = 0usize;
    for (l, loc) in cla.endpoints.iter().enumerate() {
        if loc.priority != 0 {
            return Err(nack(
                name,
                &format!("endpoints[{l}].priority"),
                format!("priority {} is not supported: attache balances one priority level; send every endpoint at priority 0", loc.priority),
            ));
        }
        if loc.lb_config.is_some() {
            return Err(nack(
                name,
                &format!("endpoints[{l}].lb_config"),
                "attache takes endpoints in `lb_endpoints` only",
            ));
        }
        let zone = loc
            .locality
            .as_ref()
            .map(|x| x.zone.clone())
            .filter(|z| !z.is_empty());
        for (e, lb) in loc.lb_endpoints.iter().enumerate() {
            listed += 1;
            let path = format!("endpoints[{l}].lb_endpoints[{e}]");
            if !serves(name, &path, lb)? {
                continue;
            }
            entries.push(EndpointEntry {
                address: address_of(name, &path, lb)?,
                weight: lb.load_balancing_weight.map(|w| w.value),
                zone: zone.clone(),
            });
            at.push(At {
                locality: l,
                endpoint: e,
            });
        }
    }
    if entries.is_empty() && listed > 0 {
        return Err(nack(
            name,
            "endpoints",
            format!(
                "none of the {listed} endpoints is HEALTHY or UNKNOWN; keeping the last good set"
            ),
        ));
    }
    endpoints::check(&entries, max).map_err(|errs| {
        let p = errs
            .into_iter()
            .next()
            .unwrap_or_else(|| crate::config::Problem::new("", ""));
        nack(name, &field_of(&p.path, &at), p.to_string())
    })
}

/// HEALTHY, UNKNOWN and DEGRADED take traffic; UNHEALTHY, DRAINING and TIMEOUT do not.
fn serves(name: &str, path: &str, lb: &LbEndpoint) -> Result<bool, Nack> {
    match HealthStatus::try_from(lb.health_status) {
        Ok(HealthStatus::Unknown | HealthStatus::Healthy | HealthStatus::Degraded) => Ok(true),
        Ok(HealthStatus::Unhealthy | HealthStatus::Draining | HealthStatus::Timeout) => Ok(false),
        Err(_) => Err(nack(
            name,
            &format!("{path}.health_status"),
            format!("unknown health status {}", lb.health_status),
        )),
    }
}

/// `IP:PORT` of a socket address endpoint (no names: attache does not resolve EDS hosts).
fn address_of(name: &str, path: &str, lb: &LbEndpoint) -> Result<String, Nack> {
    let Some(HostIdentifier::Endpoint(ep)) = &lb.host_identifier else {
        return Err(nack(
            name,
            &format!("{path}.endpoint"),
            "each lb_endpoint needs an `endpoint` with an address",
        ));
    };
    let ap = format!("{path}.endpoint.address");
    let Some(address::Address::SocketAddress(sa)) =
        ep.address.as_ref().and_then(|a| a.address.as_ref())
    else {
        return Err(nack(
            name,
            &ap,
            "attache takes `socket_address` endpoints only (no pipes or internal addresses)",
        ));
    };
    let sp = format!("{ap}.socket_address");
    if sa.protocol != socket_address::Protocol::Tcp as i32 {
        return Err(nack(
            name,
            &format!("{sp}.protocol"),
            "attache proxies to TCP endpoints only",
        ));
    }
    if !sa.resolver_name.is_empty() {
        return Err(nack(
            name,
            &format!("{sp}.resolver_name"),
            "custom resolvers are not supported; send an IP address",
        ));
    }
    let port = match sa.port_specifier {
        Some(socket_address::PortSpecifier::PortValue(p)) => p,
        Some(socket_address::PortSpecifier::NamedPort(_)) => {
            return Err(nack(
                name,
                &format!("{sp}.named_port"),
                "named ports are not supported; send `port_value`",
            ))
        }
        None => 0,
    };
    let ip: IpAddr = sa.address.parse().map_err(|_| {
        nack(
            name,
            &format!("{sp}.address"),
            format!("`{}` is not an IP address; EDS endpoints are IP addresses (attache does not resolve names from EDS)", sa.address),
        )
    })?;
    let port = u16::try_from(port).map_err(|_| {
        nack(
            name,
            &format!("{sp}.port_value"),
            format!("port {port} is out of range"),
        )
    })?;
    Ok(SocketAddr::new(ip, port).to_string())
}

/// Map `endpoints::check`'s path (`3.address`, `3.weight`, `3.zone`, or empty) back
/// to the assignment's field path.
fn field_of(path: &str, at: &[At]) -> String {
    let Some((i, key)) = path.split_once('.') else {
        return "endpoints".to_string();
    };
    let Some(a) = i.parse::<usize>().ok().and_then(|i| at.get(i)) else {
        return "endpoints".to_string();
    };
    let ep = format!("endpoints[{}].lb_endpoints[{}]", a.locality, a.endpoint);
    match key {
        "address" => format!("{ep}.endpoint.address.socket_address"),
        "weight" => format!("{ep}.load_balancing_weight"),
        "zone" => format!("endpoints[{}].locality.zone", a.locality),
        _ => ep,
    }
}

#[cfg(test)]
mod tests;
