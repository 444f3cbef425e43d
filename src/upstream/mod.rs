//! Clusters: a living endpoint set (static, DNS, file or EDS discovery), active health
//! checks, outlier ejection, circuit breakers, load balancing and the upstream HTTP
//! client (a keep-alive pool per endpoint, HTTP/1.1 or multiplexed HTTP/2; Thrift
//! connections wait on the same pool). Every protocol uses an endpoint the same
//! way: a [`Cluster::attempt`] (breakers, pick, active count) whose outcome is
//! reported back (`attempt.rs`).
//!
//! The data path reads the current [`HostSet`] through an `ArcSwap` (no lock); every
//! change (membership, weight, health, ejection) builds a new one off the request
//! path. Endpoints are identified by address: one that stays across a change keeps
//! its `Arc<Endpoint>` (counters, health) and its pooled connections (the pool is
//! keyed by authority).

mod attempt;
mod body;
pub mod breakers;
pub mod connector;
mod discovery;
pub mod h1;
pub mod health;
mod lb;
pub mod outlier;
pub mod pool;
pub mod throttle;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use arc_swap::ArcSwap;

pub use attempt::{Attempt, Refused};
pub use body::{Replay, UpBody, UpstreamBody};
pub use breakers::Breakers;
pub use lb::{hash_bytes, HashKey, Lb, LbPolicy, Rotation};
pub use outlier::Outcome;
pub use pool::UpstreamProtocol;

use crate::config::endpoints::Spec;
use crate::stats::{ClusterStats, FleetStats};

static LOCAL_ZONE: OnceLock<Arc<str>> = OnceLock::new();

/// Set the proxy's own zone once at startup (`--zone` / `ATTACHE_ZONE`).
/// Idle HTTP/1.1 connections kept per endpoint by default: as many as Envoy's default
/// `max_connections` (1024), so a pool keeps what its peak concurrency needs and
/// `idle_timeout` trims it, instead of closing and re-dialing connections whenever
/// more than a small cap are in flight (TIME_WAIT build-up, connect failures).
pub const DEFAULT_MAX_IDLE_PER_ENDPOINT: u32 = 1024;

pub fn set_local_zone(zone: &str) {
    if !zone.is_empty() {
        let _ = LOCAL_ZONE.set(Arc::from(zone));
    }
}

pub fn local_zone() -> Option<&'static Arc<str>> {
    LOCAL_ZONE.get()
}

/// Active health check state of an endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    Healthy,
    Unhealthy,
    /// Added after the cluster started; out of rotation until its first check passes.
    Pending,
}

const HEALTHY: u8 = 0;
const UNHEALTHY: u8 = 1;
const PENDING: u8 = 2;

/// One upstream address with its live counters and health.
#[derive(Debug)]
pub struct Endpoint {
    pub addr: SocketAddr,
    /// `addr` as a string, for building URIs and logs without formatting per request.
    pub authority: Arc<str>,
    weight: AtomicU32,
    zone: Mutex<Option<Arc<str>>>,
    pub active: AtomicUsize,
    pub rq_total: AtomicU64,
    pub rq_error: AtomicU64,
    pub connect_fail: AtomicU64,
    health: AtomicU8,
    /// Consecutive check results (checker task only).
    hc_ok_run: AtomicU32,
    hc_fail_run: AtomicU32,
    pub hc_fail_total: AtomicU64,
    pub outlier: outlier::EndpointState,
    /// Idle upstream connections to this endpoint.
    pub pool: Arc<pool::Pool>,
}

impl Endpoint {
    pub fn new(addr: SocketAddr) -> Endpoint {
        Endpoint {
            addr,
            authority: Arc::from(addr.to_string()),
            pool: Arc::new(pool::Pool::default()),
            weight: AtomicU32::new(1),
            zone: Mutex::new(None),
            active: AtomicUsize::new(0),
            rq_total: AtomicU64::new(0),
            rq_error: AtomicU64::new(0),
            connect_fail: AtomicU64::new(0),
            health: AtomicU8::new(HEALTHY),
            hc_ok_run: AtomicU32::new(0),
            hc_fail_run: AtomicU32::new(0),
            hc_fail_total: AtomicU64::new(0),
            outlier: outlier::EndpointState::default(),
        }
    }

    pub fn weight(&self) -> u32 {
        self.weight.load(Ordering::Relaxed)
    }

    pub fn set_weight(&self, w: u32) {
        self.weight.store(w.max(1), Ordering::Relaxed);
    }

    pub fn zone(&self) -> Option<Arc<str>> {
        self.zone.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Whether the endpoint's zone is `z` (the same allocation, or equal text).
    fn has_zone(&self, z: &Option<Arc<str>>) -> bool {
        let mine = self.zone.lock().unwrap_or_else(|p| p.into_inner());
        match (&*mine, z) {
            (Some(a), Some(b)) => Arc::ptr_eq(a, b) || **a == **b,
            (None, None) => true,
            _ => false,
        }
    }

    fn set_zone(&self, z: Option<Arc<str>>) {
        *self.zone.lock().unwrap_or_else(|p| p.into_inner()) = z;
    }

    pub fn health(&self) -> Health {
        match self.health.load(Ordering::Relaxed) {
            HEALTHY => Health::Healthy,
            UNHEALTHY => Health::Unhealthy,
            _ => Health::Pending,
        }
    }

    /// In rotation: passing health checks and not ejected.
    pub fn is_healthy(&self) -> bool {
        self.health.load(Ordering::Relaxed) == HEALTHY && !self.outlier.is_ejected()
    }

    /// Record one active check; true when the health state changed.
    fn record_check(&self, ok: bool, healthy_threshold: u32, unhealthy_threshold: u32) -> bool {
        let state = self.health.load(Ordering::Relaxed);
        if ok {
            self.hc_fail_run.store(0, Ordering::Relaxed);
            let run = self.hc_ok_run.fetch_add(1, Ordering::Relaxed) + 1;
            let flip = match state {
                PENDING => true,
                UNHEALTHY => run >= healthy_threshold,
                _ => false,
            };
            if flip {
                self.health.store(HEALTHY, Ordering::Relaxed);
            }
            flip
        } else {
            self.hc_fail_total.fetch_add(1, Ordering::Relaxed);
            self.hc_ok_run.store(0, Ordering::Relaxed);
            let run = self.hc_fail_run.fetch_add(1, Ordering::Relaxed) + 1;
            let flip = state == HEALTHY && run >= unhealthy_threshold;
            if flip {
                self.health.store(UNHEALTHY, Ordering::Relaxed);
            }
            flip
        }
    }
}

/// The endpoint set as the data path sees it: every endpoint, and the rotation the
/// load balancer picks from (healthy ones, the local zone's healthy ones, or all of
/// them in panic mode).
#[derive(Debug, Default)]
pub struct HostSet {
    /// Every endpoint, sorted by address.
    pub all: Vec<Arc<Endpoint>>,
    pub healthy: usize,
    /// Fewer than `panic_threshold` percent are healthy: balancing over all.
    pub panic: bool,
    /// The rotation is the local zone's healthy endpoints.
    pub zone_local: bool,
    rotation: Rotation,
}

impl HostSet {
    pub fn get(&self, addr: SocketAddr) -> Option<&Arc<Endpoint>> {
        let i = self.all.binary_search_by_key(&addr, |e| e.addr).ok()?;
        self.all.get(i)
    }

    pub fn rotation_len(&self) -> usize {
        self.rotation.len()
    }
}

/// Where a cluster's endpoints come from.
#[derive(Debug, Clone)]
pub enum Source {
    Static,
    Dns {
        name: String,
        refresh: Duration,
    },
    File {
        path: String,
    },
    /// ClusterLoadAssignment `service` from the `xds:` server.
    Eds {
        service: String,
    },
}

/// Cluster settings derived from config (validated, defaults applied, in
/// `config::compile`).
#[derive(Debug, Clone)]
pub struct Settings {
    pub lb_policy: LbPolicy,
    /// The request key for `ring_hash`.
    pub hash: Option<HashKey>,
    pub connect_timeout: Duration,
    pub protocol: UpstreamProtocol,
    /// Idle pooled connections are closed after this.
    pub idle_timeout: Duration,
    /// Idle connections kept per endpoint.
    pub max_idle_per_endpoint: usize,
    /// Thrift upstream framing (`None` parts follow the downstream call).
    pub thrift: crate::thrift::UpstreamFraming,
    /// The config entry this cluster was built from: a reload with an identical
    /// entry reuses the running cluster (pools, health, counters).
    pub entry: crate::config::ClusterEntry,
    pub source: Source,
    pub breakers: breakers::Limits,
    pub max_endpoints: usize,
    pub panic_threshold: f64,
    pub zone_aware: bool,
    pub health: Option<health::Config>,
    pub outlier: Option<outlier::Config>,
}

/// A named group of endpoints with a load balancer and a client.
pub struct Cluster {
    pub name: Arc<str>,
    pub lb: Lb,
    pub connect_timeout: Duration,
    pub protocol: UpstreamProtocol,
    /// How requests reach endpoints (each endpoint owns its idle connections).
    pub pool: pool::Settings,
    pub stats: ClusterStats,
    pub fleet: FleetStats,
    pub thrift: crate::thrift::UpstreamFraming,
    pub connector: connector::Connector,
    pub breakers: Breakers,
    pub settings: Settings,
    /// Upstream connect failures are logged at warn at most once a second.
    pub connect_fail_log: throttle::Throttle,
    hosts: ArcSwap<HostSet>,
    /// Serializes endpoint-set rebuilds (control path only; never held across await).
    update: Mutex<()>,
    started: AtomicBool,
    /// Wakes the health checker early (new endpoints to check).
    hc_now: Arc<tokio::sync::Notify>,
    me: Weak<Cluster>,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster").field("name", &self.name).finish()
    }
}

impl Cluster {
    pub fn new(
        name: &str,
        settings: Settings,
        endpoints: Vec<Spec>,
        stats: ClusterStats,
        fleet: FleetStats,
        tls: Option<Arc<crate::tls::ClientTls>>,
    ) -> Arc<Cluster> {
        let breakers = Breakers::new(settings.breakers, &fleet);
        let connector = connector::Connector {
            connect_timeout: settings.connect_timeout,
            tls,
        };
        let pool = pool::Settings {
            protocol: settings.protocol,
            idle_timeout: settings.idle_timeout,
            max_idle: settings.max_idle_per_endpoint,
            connector: connector.clone(),
            limit: breakers.connection_limit(),
        };
        let c = Arc::new_cyclic(|me| Cluster {
            name: Arc::from(name),
            lb: Lb::new(settings.lb_policy, settings.hash.clone()),
            connect_timeout: settings.connect_timeout,
            protocol: settings.protocol,
            pool,
            connector,
            stats,
            fleet,
            thrift: settings.thrift,
            breakers,
            settings,
            connect_fail_log: throttle::Throttle::default(),
            hosts: ArcSwap::from_pointee(HostSet::default()),
            update: Mutex::new(()),
            started: AtomicBool::new(false),
            hc_now: Arc::new(tokio::sync::Notify::new()),
            me: me.clone(),
        });
        c.set_endpoints(&endpoints, false);
        c
    }

    /// The current endpoint set (lock-free).
    pub fn hosts(&self) -> arc_swap::Guard<Arc<HostSet>> {
        self.hosts.load()
    }

    /// The next endpoint by the cluster's policy, skipping `avoid` when possible
    /// (a retry prefers another endpoint).
    pub fn pick(&self, avoid: Option<&Arc<Endpoint>>) -> Option<Arc<Endpoint>> {
        self.pick_hashed(avoid, None)
    }

    /// As [`Cluster::pick`], with the request's hash for `ring_hash`.
    pub fn pick_hashed(
        &self,
        avoid: Option<&Arc<Endpoint>>,
        hash: Option<u64>,
    ) -> Option<Arc<Endpoint>> {
        let hosts = self.hosts.load();
        self.lb.pick(&hosts.rotation, avoid, hash).cloned()
    }

    /// Replace the endpoint set. Endpoints that stay keep their `Arc` (counters,
    /// health, pooled connections, zone allocation); new ones start `Pending` when
    /// `pending` and health checking is on. Incremental: the new set is one merge of
    /// the (sorted) old set with the specs, a set that changes nothing is found by a
    /// comparison alone and builds nothing, and the data path sees the change as one
    /// pointer store. Specs sorted by address (EDS sends them so) are not sorted again.
    /// Returns whether membership, weights or zones changed.
    pub fn set_endpoints(&self, specs: &[Spec], pending: bool) -> bool {
        let mut order: Vec<&Spec> = specs.iter().collect();
        if !order.is_sorted_by_key(|s| s.addr) {
            order.sort_unstable_by_key(|s| s.addr);
        }
        let _g = self.update.lock().unwrap_or_else(|p| p.into_inner());
        let old = self.hosts.load_full();
        if unchanged(&old.all, &order) {
            return false;
        }
        let pending = pending && self.settings.health.is_some();
        let (all, added) = merge(&old.all, &order, pending);
        self.store(all);
        if added {
            self.hc_now.notify_one();
        }
        true
    }

    /// Rebuild the rotation after a health or ejection change.
    pub fn rebuild(&self) {
        let _g = self.update.lock().unwrap_or_else(|p| p.into_inner());
        let all = self.hosts.load().all.clone();
        self.store(all);
    }

    /// Build and publish a host set; the caller holds `update`.
    fn store(&self, all: Vec<Arc<Endpoint>>) {
        let set = build_hostset(
            all,
            self.lb.policy(),
            self.settings.panic_threshold,
            if self.settings.zone_aware {
                local_zone().map(|z| &**z)
            } else {
                None
            },
        );
        self.fleet.endpoints.set(set.all.len() as i64);
        self.fleet.healthy.set(set.healthy as i64);
        self.hosts.store(Arc::new(set));
    }

    /// Start discovery and health checking (idempotent; needs a tokio runtime). For
    /// a DNS cluster, waits (bounded) for the first answer.
    pub async fn start(self: &Arc<Self>) {
        if self.started.swap(true, Ordering::SeqCst) {
            return;
        }
        match &self.settings.source {
            Source::Static => {}
            Source::File { path } => {
                tokio::spawn(discovery::watch_file(Arc::downgrade(self), path.clone()));
            }
            Source::Dns { name, refresh } => {
                let first = discovery::resolve_once(self, name);
                let _ = tokio::time::timeout(Duration::from_secs(5), first).await;
                tokio::spawn(discovery::refresh_dns(
                    Arc::downgrade(self),
                    name.clone(),
                    *refresh,
                ));
            }
            Source::Eds { service } => crate::xds::eds::attach(self, service).await,
        }
        if self.settings.health.is_some() {
            tokio::spawn(health::run(Arc::downgrade(self), self.hc_now.clone()));
        }
        tokio::spawn(sweep_pools(Arc::downgrade(self), self.pool.idle_timeout));
    }

    /// Feed one call's outcome to outlier detection (through [`Attempt::report`]).
    fn report(&self, ep: &Arc<Endpoint>, outcome: Outcome) {
        if let Some(cfg) = &self.settings.outlier {
            if ep.outlier.record(cfg, outcome) {
                self.eject(ep, cfg);
            }
        }
    }

    fn eject(&self, ep: &Arc<Endpoint>, cfg: &outlier::Config) {
        let duration = {
            let _g = self.update.lock().unwrap_or_else(|p| p.into_inner());
            let hosts = self.hosts.load();
            let ejected = hosts.all.iter().filter(|e| e.outlier.is_ejected()).count();
            let Some(d) = ep.outlier.eject(cfg, hosts.all.len(), ejected) else {
                return;
            };
            let all = hosts.all.clone();
            drop(hosts);
            self.store(all);
            d
        };
        self.fleet.ejections.inc();
        tracing::warn!(cluster = %self.name, upstream = %ep.authority, ejection_time = ?duration, "endpoint ejected");
        let me = self.me.clone();
        let ep = ep.clone();
        if let Ok(h) = tokio::runtime::Handle::try_current() {
            h.spawn(async move {
                tokio::time::sleep(duration).await;
                ep.outlier.uneject();
                if let Some(c) = me.upgrade() {
                    tracing::info!(cluster = %c.name, upstream = %ep.authority, "endpoint returned from ejection");
                    c.rebuild();
                }
            });
        }
    }
}

/// Whether `specs` (sorted) describe `all` exactly: the same addresses, weights and
/// zones. Reads only; no allocation.
fn unchanged(all: &[Arc<Endpoint>], specs: &[&Spec]) -> bool {
    all.len() == specs.len()
        && all
            .iter()
            .zip(specs)
            .all(|(e, s)| e.addr == s.addr && e.weight() == s.weight && e.has_zone(&s.zone))
}

/// The endpoint list for `specs` (sorted): one walk along the old list (sorted too),
/// reusing each endpoint that stays (weight and zone updated in place when they
/// changed) and creating the new ones. Also whether any endpoint is new.
fn merge(old: &[Arc<Endpoint>], specs: &[&Spec], pending: bool) -> (Vec<Arc<Endpoint>>, bool) {
    let mut all = Vec::with_capacity(specs.len());
    let mut added = false;
    let mut rest = old.iter().peekable();
    for s in specs {
        while rest.next_if(|e| e.addr < s.addr).is_some() {}
        let ep = match rest.next_if(|e| e.addr == s.addr) {
            Some(e) => {
                if e.weight() != s.weight {
                    e.set_weight(s.weight);
                }
                if !e.has_zone(&s.zone) {
                    e.set_zone(s.zone.clone());
                }
                e.clone()
            }
            None => {
                added = true;
                let e = Endpoint::new(s.addr);
                e.set_weight(s.weight);
                e.set_zone(s.zone.clone());
                if pending {
                    e.health.store(PENDING, Ordering::Relaxed);
                }
                Arc::new(e)
            }
        };
        all.push(ep);
    }
    (all, added)
}

/// Decide the rotation: local zone's healthy endpoints when enough of them are
/// healthy; else all healthy ones; all of them in panic mode.
fn build_hostset(
    all: Vec<Arc<Endpoint>>,
    policy: LbPolicy,
    panic_threshold: f64,
    zone: Option<&str>,
) -> HostSet {
    let healthy: Vec<Arc<Endpoint>> = all.iter().filter(|e| e.is_healthy()).cloned().collect();
    let n_healthy = healthy.len();
    let panic = !all.is_empty() && (n_healthy as f64) * 100.0 < panic_threshold * all.len() as f64;
    let mut zone_local = false;
    let members = if panic {
        all.clone()
    } else {
        match zone {
            Some(z) => {
                let local_total = all
                    .iter()
                    .filter(|e| e.zone().as_deref() == Some(z))
                    .count();
                let local: Vec<Arc<Endpoint>> = healthy
                    .iter()
                    .filter(|e| e.zone().as_deref() == Some(z))
                    .cloned()
                    .collect();
                // Enough: at least one, and at least half the zone's endpoints.
                if !local.is_empty() && local.len() * 2 >= local_total {
                    zone_local = true;
                    local
                } else {
                    healthy
                }
            }
            None => healthy,
        }
    };
    HostSet {
        rotation: Rotation::build(members, policy),
        all,
        healthy: n_healthy,
        panic,
        zone_local,
    }
}

/// Close idle upstream connections past the cluster's `idle_timeout`, for as long as
/// the cluster is in use.
async fn sweep_pools(cluster: Weak<Cluster>, idle_timeout: Duration) {
    let every = (idle_timeout / 2).clamp(Duration::from_millis(500), Duration::from_secs(30));
    loop {
        tokio::time::sleep(every).await;
        let Some(c) = cluster.upgrade() else { return };
        for ep in c.hosts().all.iter() {
            ep.pool.sweep(idle_timeout);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn specs(ports: &[u16]) -> Vec<Arc<Endpoint>> {
        ports
            .iter()
            .map(|p| Arc::new(Endpoint::new(([127, 0, 0, 1], *p).into())))
            .collect()
    }

    #[test]
    fn unhealthy_endpoints_leave_rotation_and_panic_spreads_over_all() {
        let all = specs(&[1, 2, 3, 4]);
        all[0].health.store(UNHEALTHY, Ordering::Relaxed);
        let s = build_hostset(all.clone(), LbPolicy::RoundRobin, 50.0, None);
        assert_eq!((s.healthy, s.panic, s.rotation_len()), (3, false, 3));
        all[1].health.store(UNHEALTHY, Ordering::Relaxed);
        all[2].health.store(UNHEALTHY, Ordering::Relaxed);
        let s = build_hostset(all.clone(), LbPolicy::RoundRobin, 50.0, None);
        assert_eq!((s.healthy, s.panic, s.rotation_len()), (1, true, 4));
        let s = build_hostset(all, LbPolicy::RoundRobin, 0.0, None);
        assert_eq!((s.panic, s.rotation_len()), (false, 1));
    }

    #[test]
    fn zone_aware_prefers_local_endpoints_while_enough_are_healthy() {
        let all = specs(&[1, 2, 3, 4]);
        all[0].set_zone(Some(Arc::from("a")));
        all[1].set_zone(Some(Arc::from("a")));
        let s = build_hostset(all.clone(), LbPolicy::Random, 50.0, Some("a"));
        assert!(s.zone_local);
        assert_eq!(s.rotation_len(), 2);
        all[0].health.store(UNHEALTHY, Ordering::Relaxed);
        all[1].health.store(UNHEALTHY, Ordering::Relaxed);
        let s = build_hostset(all, LbPolicy::Random, 50.0, Some("a"));
        assert!(!s.zone_local);
        assert_eq!(s.rotation_len(), 2);
    }

    #[test]
    fn health_transitions_follow_thresholds() {
        let e = Endpoint::new(([127, 0, 0, 1], 1).into());
        assert!(!e.record_check(false, 2, 2));
        assert!(e.record_check(false, 2, 2));
        assert_eq!(e.health(), Health::Unhealthy);
        assert!(!e.record_check(true, 2, 2));
        assert!(e.record_check(true, 2, 2));
        assert_eq!(e.health(), Health::Healthy);
        e.health.store(PENDING, Ordering::Relaxed);
        assert!(e.record_check(true, 2, 2));
    }
}
