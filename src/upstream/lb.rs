//! Load balancing policies: round robin, least request (power of two choices) and
//! random. Lock-free: one atomic cursor, per-endpoint atomic counters.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use super::Endpoint;
use crate::config::raw::LbPolicy;

#[derive(Debug)]
pub struct Lb {
    policy: LbPolicy,
    cursor: AtomicUsize,
}

impl Lb {
    pub fn new(policy: LbPolicy) -> Lb {
        // Start each cluster at a random offset so a fleet of proxies does not march
        // over the endpoints in lockstep.
        Lb {
            policy,
            cursor: AtomicUsize::new(fastrand::usize(..1024)),
        }
    }

    pub fn policy(&self) -> LbPolicy {
        self.policy
    }

    pub fn pick<'a>(
        &self,
        eps: &'a [Arc<Endpoint>],
        avoid: Option<&Arc<Endpoint>>,
    ) -> Option<&'a Arc<Endpoint>> {
        let n = eps.len();
        if n == 0 {
            return None;
        }
        if n == 1 {
            return eps.first();
        }
        let chosen = match self.policy {
            LbPolicy::RoundRobin => self.cursor.fetch_add(1, Ordering::Relaxed) % n,
            LbPolicy::Random => fastrand::usize(..n),
            LbPolicy::LeastRequest => {
                let a = fastrand::usize(..n);
                let mut b = fastrand::usize(..n - 1);
                if b >= a {
                    b += 1;
                }
                if eps[b].active.load(Ordering::Relaxed) < eps[a].active.load(Ordering::Relaxed) {
                    b
                } else {
                    a
                }
            }
        };
        match avoid {
            Some(av) if Arc::ptr_eq(&eps[chosen], av) => eps.get((chosen + 1) % n),
            _ => eps.get(chosen),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eps(n: u16) -> Vec<Arc<Endpoint>> {
        (0..n)
            .map(|i| Arc::new(Endpoint::new(([127, 0, 0, 1], 1000 + i).into())))
            .collect()
    }

    #[test]
    fn round_robin_visits_every_endpoint_evenly() {
        let e = eps(3);
        let lb = Lb::new(LbPolicy::RoundRobin);
        let mut counts = [0; 3];
        for _ in 0..300 {
            let p = lb.pick(&e, None).expect("endpoint");
            counts[usize::from(p.addr.port() - 1000)] += 1;
        }
        assert_eq!(counts, [100, 100, 100]);
    }

    #[test]
    fn least_request_prefers_idle_endpoints() {
        let e = eps(2);
        e[0].active.store(50, Ordering::Relaxed);
        let lb = Lb::new(LbPolicy::LeastRequest);
        for _ in 0..100 {
            assert_eq!(lb.pick(&e, None).expect("endpoint").addr.port(), 1001);
        }
    }

    #[test]
    fn retry_avoids_the_failed_endpoint() {
        let e = eps(2);
        let lb = Lb::new(LbPolicy::Random);
        for _ in 0..100 {
            assert_eq!(
                lb.pick(&e, Some(&e[0])).expect("endpoint").addr.port(),
                1001
            );
        }
        assert!(lb.pick(&[], None).is_none());
    }
}
