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
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use envoy_types::pb::google::protobuf::Any;

use super::ResourceType;
use crate::config::endpoints::{self, Spec};
pub use crate::config::from_xds::endpoints::specs;
use crate::config::from_xds::{nack, Nack};
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
    sets: HashMap<String, Last>,
}

/// The last accepted assignment of a service: its endpoints, and the encoded
/// resource with the `max_endpoints` it was checked against, so that the same
/// resource sent again is recognized without decoding or checking it.
struct Last {
    specs: Arc<[Spec]>,
    encoded: Vec<u8>,
    max: usize,
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

    /// Check every assignment of one response (encoded, as received); all or
    /// nothing. An assignment identical to the last accepted one of its service is
    /// not decoded or checked again.
    pub fn check(&self, resources: Vec<Any>) -> Result<Vec<Checked>, Nack> {
        let mut seen = BTreeSet::new();
        let mut out = Vec::with_capacity(resources.len());
        let twice = |name: &str| {
            nack(
                name,
                "cluster_name",
                "the response carries this ClusterLoadAssignment twice",
            )
        };
        for (i, any) in resources.into_iter().enumerate() {
            let c = match self.repeated(&any.value) {
                Some(c) => c,
                None => {
                    let cla: ClusterLoadAssignment = super::decode(ResourceType::Eds, i, &any)?;
                    if seen.contains(&cla.cluster_name) {
                        return Err(twice(&cla.cluster_name));
                    }
                    self.check_one(cla, any.value)?
                }
            };
            if !seen.insert(c.service.clone()) {
                return Err(twice(&c.service));
            }
            out.push(c);
        }
        Ok(out)
    }

    /// The accepted assignment whose encoding is `encoded`, if its service's
    /// `max_endpoints` has not changed since.
    fn repeated(&self, encoded: &[u8]) -> Option<Checked> {
        let (service, last) = {
            let g = self.lock();
            let (service, last) = g
                .sets
                .iter()
                .find(|(_, l)| l.encoded.len() == encoded.len() && l.encoded == encoded)?;
            (service.clone(), (last.specs.clone(), last.max))
        };
        (self.max_for(&service) == last.1).then(|| Checked {
            service,
            specs: last.0,
            encoded: Vec::new(),
            max: last.1,
            repeated: true,
        })
    }

    /// Check one decoded assignment; its endpoints sorted by address.
    fn check_one(&self, cla: ClusterLoadAssignment, encoded: Vec<u8>) -> Result<Checked, Nack> {
        let max = self.max_for(&cla.cluster_name);
        let mut specs = specs(&cla, max)?;
        specs.sort_unstable_by_key(|s| s.addr);
        Ok(Checked {
            service: cla.cluster_name,
            specs: specs.into(),
            encoded,
            max,
            repeated: false,
        })
    }

    /// Apply checked assignments to their clusters and remember them. A repeated
    /// assignment changes nothing.
    pub fn apply(&self, checked: Vec<Checked>) {
        let mut targets = Vec::new();
        {
            let mut g = self.lock();
            for c in checked {
                if c.repeated {
                    continue;
                }
                for (s, w) in &g.clusters {
                    if *s == c.service {
                        if let Some(cl) = w.upgrade() {
                            targets.push((cl, c.specs.clone()));
                        }
                    }
                }
                let last = Last {
                    specs: c.specs,
                    encoded: c.encoded,
                    max: c.max,
                };
                g.sets.insert(c.service, last);
            }
        }
        for (cl, specs) in targets {
            set(&cl, &specs);
        }
        self.accepted.send_modify(|n| *n += 1);
    }

    /// The last accepted endpoints for `service`.
    pub fn accepted(&self, service: &str) -> Option<Arc<[Spec]>> {
        self.lock().sets.get(service).map(|l| l.specs.clone())
    }
}

/// One assignment that passed the checks.
pub struct Checked {
    pub service: String,
    /// Sorted by address.
    pub specs: Arc<[Spec]>,
    encoded: Vec<u8>,
    max: usize,
    /// The same resource as the last accepted one of `service`.
    repeated: bool,
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
        g.sets.get(service).map(|l| l.specs.clone())
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

#[cfg(test)]
mod tests;
