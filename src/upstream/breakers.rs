//! Circuit breakers: per-cluster limits on connections, requests waiting for
//! response headers, outstanding requests and concurrent retries. Each is one atomic
//! counter; going over answers 503 UO (or skips the retry) and is counted in
//! `attache_upstream_rq_overflow_total{cluster,breaker}`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use prometheus::IntCounter;

use crate::stats::FleetStats;

/// A held slot; released on drop.
#[derive(Debug)]
pub struct Permit(Arc<AtomicU64>);

impl Drop for Permit {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// One limit and its counter.
#[derive(Debug)]
pub struct Gate {
    pub max: u64,
    pub current: Arc<AtomicU64>,
    overflow: IntCounter,
}

impl Gate {
    fn new(max: Option<u32>, overflow: IntCounter) -> Gate {
        Gate {
            max: max.map_or(u64::MAX, u64::from),
            current: Arc::new(AtomicU64::new(0)),
            overflow,
        }
    }

    /// A slot, or None (counted) when the limit is reached. Unlimited gates still
    /// count, for `/clusters`.
    pub fn try_acquire(&self) -> Option<Permit> {
        let prev = self.current.fetch_add(1, Ordering::Relaxed);
        if prev >= self.max {
            self.current.fetch_sub(1, Ordering::Relaxed);
            self.overflow.inc();
            return None;
        }
        Some(Permit(self.current.clone()))
    }

    pub fn load(&self) -> u64 {
        self.current.load(Ordering::Relaxed)
    }
}

/// `circuit_breakers:`; `None` is no limit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Limits {
    pub max_connections: Option<u32>,
    pub max_pending_requests: Option<u32>,
    pub max_requests: Option<u32>,
    pub max_retries: Option<u32>,
}

#[derive(Debug)]
pub struct Breakers {
    pub connections: Arc<Gate>,
    pub pending: Gate,
    pub requests: Gate,
    pub retries: Gate,
}

impl Breakers {
    pub fn new(c: Limits, fleet: &FleetStats) -> Breakers {
        Breakers {
            connections: Arc::new(Gate::new(c.max_connections, fleet.overflow[0].clone())),
            pending: Gate::new(c.max_pending_requests, fleet.overflow[1].clone()),
            requests: Gate::new(c.max_requests, fleet.overflow[2].clone()),
            retries: Gate::new(c.max_retries, fleet.overflow[3].clone()),
        }
    }

    /// The connection gate for the connector (None: unlimited, nothing to count).
    pub fn connection_limit(&self) -> Option<Arc<Gate>> {
        (self.connections.max != u64::MAX).then(|| self.connections.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gate_admits_up_to_max_and_releases_on_drop() {
        let g = Gate::new(Some(2), IntCounter::new("t", "t").expect("counter"));
        let a = g.try_acquire().expect("first");
        let _b = g.try_acquire().expect("second");
        assert!(g.try_acquire().is_none());
        assert_eq!(g.overflow.get(), 1);
        drop(a);
        assert!(g.try_acquire().is_some());
    }
}
