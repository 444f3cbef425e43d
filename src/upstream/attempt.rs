//! One way to use an endpoint, for every protocol: [`Cluster::attempt`] applies the
//! `max_requests` breaker, picks an endpoint by the cluster's policy and counts the
//! attempt as active on it (least_request reads that); [`Attempt::report`] feeds the
//! outcome to outlier detection and the endpoint's counters; dropping the attempt
//! ends it. HTTP (each try and each mirror copy), Thrift (each call) and TCP (each
//! proxied connection) all go through here, so breakers, balancing and ejection
//! mean the same thing whatever the listener speaks.
//!
//! Connections are opened with [`super::pool::dial`] (the `max_connections`
//! breaker, the connector), whose slot stays with the connection.
//!
//! Cost: one `Arc` clone of the cluster and of the endpoint and a few relaxed
//! atomics per attempt; no allocation, no lock (ejecting, which is rare, takes the
//! cluster's update lock).

use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::{breakers, Cluster, Endpoint, Outcome};

/// Why a cluster handed out no attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// The cluster's `max_requests` breaker is full (503 `UO`).
    Overflow,
    /// No endpoint in rotation (503 `UH`).
    NoHealthyUpstream,
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Refused::Overflow => "cluster max_requests reached",
            Refused::NoHealthyUpstream => "no healthy upstream",
        })
    }
}

impl std::error::Error for Refused {}

/// One use of one endpoint: a slot in the cluster's `max_requests` breaker and one
/// active request on the endpoint, both released when dropped.
#[derive(Debug)]
pub struct Attempt {
    cluster: Arc<Cluster>,
    ep: Arc<Endpoint>,
    _rq: breakers::Permit,
    /// Reported when the attempt is dropped without a [`Attempt::report`] (a call
    /// cut short by its timeout).
    on_drop: Option<Outcome>,
}

impl Cluster {
    /// An attempt on the next endpoint by the cluster's policy, with the request's
    /// hash for `ring_hash`, skipping `avoid` when another endpoint is in rotation
    /// (a retry prefers another endpoint).
    pub fn attempt(
        self: &Arc<Self>,
        hash: Option<u64>,
        avoid: Option<&Arc<Endpoint>>,
    ) -> Result<Attempt, Refused> {
        let rq = self
            .breakers
            .requests
            .try_acquire()
            .ok_or(Refused::Overflow)?;
        let ep = self
            .pick_hashed(avoid, hash)
            .ok_or(Refused::NoHealthyUpstream)?;
        ep.active.fetch_add(1, Ordering::Relaxed);
        ep.rq_total.fetch_add(1, Ordering::Relaxed);
        Ok(Attempt {
            cluster: self.clone(),
            ep,
            _rq: rq,
            on_drop: None,
        })
    }

    /// Count one outcome on `ep` and feed it to outlier detection.
    fn record(&self, ep: &Arc<Endpoint>, outcome: Outcome) {
        match outcome {
            Outcome::Success => {}
            Outcome::Failure | Outcome::ThriftFailure => {
                ep.rq_error.fetch_add(1, Ordering::Relaxed);
            }
            Outcome::ConnectFailure => {
                self.stats.connect_fail.inc();
                ep.connect_fail.fetch_add(1, Ordering::Relaxed);
                ep.rq_error.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.report(ep, outcome);
    }
}

impl Attempt {
    pub fn endpoint(&self) -> &Arc<Endpoint> {
        &self.ep
    }

    pub fn cluster(&self) -> &Arc<Cluster> {
        &self.cluster
    }

    /// The attempt's outcome, once: counted on the endpoint and fed to outlier
    /// detection. The attempt stays active until dropped (an HTTP response body
    /// still streaming, a TCP connection still open). Not reporting at all (a
    /// breaker overflow, a client's own fault) leaves the endpoint's record alone.
    pub fn report(&mut self, outcome: Outcome) {
        self.on_drop = None;
        self.cluster.record(&self.ep, outcome);
    }

    /// The connect failed: logged (at most once a second per cluster) and reported
    /// as [`Outcome::ConnectFailure`].
    pub fn connect_failed(&mut self, error: &dyn std::fmt::Display) {
        if let Some(suppressed) = self.cluster.connect_fail_log.allow() {
            tracing::warn!(cluster = %self.cluster.name, upstream = %self.ep.authority, %error, suppressed, "upstream connect failed");
        }
        self.report(Outcome::ConnectFailure);
    }

    /// If the attempt is dropped before [`Attempt::report`], it counts as `outcome`
    /// (for a caller whose timeout drops the future that holds the attempt); `None`
    /// takes that back.
    pub fn report_on_drop(&mut self, outcome: Option<Outcome>) {
        self.on_drop = outcome;
    }
}

impl Drop for Attempt {
    fn drop(&mut self) {
        if let Some(o) = self.on_drop.take() {
            self.cluster.record(&self.ep, o);
        }
        self.ep.active.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cluster(yaml: &str, ports: &[u16]) -> Arc<Cluster> {
        let specs = ports
            .iter()
            .map(|p| crate::config::endpoints::Spec {
                addr: ([127, 0, 0, 1], *p).into(),
                weight: 1,
                zone: None,
            })
            .collect();
        crate::config::testing::cluster(yaml, specs, &attache_filters::Stats::new())
    }

    #[test]
    fn attempts_count_active_and_respect_max_requests() {
        let c = cluster(
            "{ name: c, endpoints: [], circuit_breakers: { max_requests: 2 } }",
            &[1],
        );
        let a = c.attempt(None, None).expect("first");
        let b = c.attempt(None, None).expect("second");
        assert_eq!(a.endpoint().active.load(Ordering::Relaxed), 2);
        assert_eq!(c.attempt(None, None).err(), Some(Refused::Overflow));
        drop(b);
        assert_eq!(a.endpoint().active.load(Ordering::Relaxed), 1);
        assert!(c.attempt(None, None).is_ok());
    }

    #[test]
    fn reported_failures_eject_and_cancelled_attempts_count() {
        let c = cluster(
            "{ name: c, endpoints: [], panic_threshold: 0, outlier_detection: { consecutive_connect_failure: 2, consecutive_5xx: 0, max_ejection_percent: 100 } }",
            &[1],
        );
        let mut a = c.attempt(None, None).expect("attempt");
        let ep = a.endpoint().clone();
        a.connect_failed(&"refused");
        drop(a);
        // The second failure arrives as an attempt dropped before it reported.
        let mut b = c.attempt(None, None).expect("attempt");
        b.report_on_drop(Some(Outcome::ConnectFailure));
        drop(b);
        assert!(ep.outlier.is_ejected());
        assert_eq!(ep.connect_fail.load(Ordering::Relaxed), 2);
        assert_eq!(ep.active.load(Ordering::Relaxed), 0);
        assert_eq!(c.stats.connect_fail.get(), 2);
        assert_eq!(c.hosts().rotation_len(), 0);
    }

    #[test]
    fn no_endpoint_in_rotation_is_refused() {
        let c = cluster("{ name: c, endpoints: [] }", &[]);
        assert_eq!(
            c.attempt(None, None).err(),
            Some(Refused::NoHealthyUpstream)
        );
    }
}
