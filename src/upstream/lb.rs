//! Load balancing: weighted round robin (an earliest-deadline-first schedule built
//! when the endpoint set changes), weighted least request (power of two choices),
//! weighted random and ring hash. Picking is lock-free: the prebuilt [`Rotation`] is
//! read through the cluster's `ArcSwap`, plus one atomic cursor.

use std::cmp::Ordering as CmpOrdering;
use std::collections::BinaryHeap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use http::{header, HeaderMap, HeaderName};

use super::Endpoint;

/// `lb_policy:`: how an endpoint is picked.
#[derive(Debug, Clone, Copy, serde::Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum LbPolicy {
    #[default]
    RoundRobin,
    LeastRequest,
    Random,
    /// Consistent hashing on `hash_on` (header, cookie or source IP).
    RingHash,
}

/// What a request hashes on for `ring_hash`.
#[derive(Debug, Clone)]
pub enum HashKey {
    Header(HeaderName),
    Cookie(String),
    SourceIp,
}

#[derive(Debug)]
pub struct Lb {
    policy: LbPolicy,
    cursor: AtomicUsize,
    hash: Option<HashKey>,
}

/// Upper bound on a weighted round robin schedule (longer weight sums are scaled).
const MAX_SCHEDULE: u64 = 1 << 16;
/// Virtual nodes per unit of weight on the hash ring, while the ring stays small.
const VNODES_PER_WEIGHT: u64 = 100;
/// Upper bound on the ring's size.
const MAX_RING: u64 = 1 << 20;

/// The endpoints a pick chooses from, with the weighted structures the policy needs.
/// Built off the request path whenever membership, weight or health changes.
#[derive(Debug, Default)]
pub struct Rotation {
    pub eps: Vec<Arc<Endpoint>>,
    /// Weights as of the build.
    weights: Vec<u32>,
    uniform: bool,
    /// Prefix sums of weights (weighted random, P2C).
    cum: Vec<u64>,
    /// Indices in smooth weighted order (round robin with unequal weights).
    schedule: Vec<u32>,
    /// (point, endpoint index), sorted by point (ring hash).
    ring: Vec<(u64, u32)>,
}

/// FNV-1a, then a splitmix64 finalizer: stable across processes and builds.
pub fn hash_bytes(b: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for x in b {
        h ^= u64::from(*x);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    mix(h)
}

fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[derive(PartialEq)]
struct Deadline(f64, u32);
impl Eq for Deadline {}
impl PartialOrd for Deadline {
    fn partial_cmp(&self, other: &Self) -> Option<CmpOrdering> {
        Some(self.cmp(other))
    }
}
impl Ord for Deadline {
    // Reversed: BinaryHeap is a max-heap; the earliest deadline (then lowest index) wins.
    fn cmp(&self, other: &Self) -> CmpOrdering {
        other.0.total_cmp(&self.0).then(other.1.cmp(&self.1))
    }
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

impl Rotation {
    pub fn build(eps: Vec<Arc<Endpoint>>, policy: LbPolicy) -> Rotation {
        let weights: Vec<u32> = eps.iter().map(|e| e.weight().max(1)).collect();
        let uniform = weights.windows(2).all(|w| w[0] == w[1]);
        let mut r = Rotation {
            eps,
            weights,
            uniform,
            ..Default::default()
        };
        match policy {
            LbPolicy::RoundRobin if !uniform => r.build_schedule(),
            LbPolicy::Random | LbPolicy::LeastRequest if !uniform => r.build_cum(),
            LbPolicy::RingHash => {
                r.build_cum();
                r.build_ring();
            }
            _ => {}
        }
        r
    }

    pub fn len(&self) -> usize {
        self.eps.len()
    }

    pub fn is_empty(&self) -> bool {
        self.eps.is_empty()
    }

    fn build_cum(&mut self) {
        let mut acc = 0u64;
        self.cum = self
            .weights
            .iter()
            .map(|w| {
                acc += u64::from(*w);
                acc
            })
            .collect();
    }

    /// A schedule of one weight cycle that spreads heavy endpoints out instead of
    /// bunching them.
    fn build_schedule(&mut self) {
        let g = self
            .weights
            .iter()
            .fold(0u64, |g, w| gcd(g, u64::from(*w)))
            .max(1);
        let total: u64 = self.weights.iter().map(|w| u64::from(*w) / g).sum();
        let scale = if total > MAX_SCHEDULE {
            total as f64 / MAX_SCHEDULE as f64
        } else {
            1.0
        };
        let reduced: Vec<f64> = self
            .weights
            .iter()
            .map(|w| ((u64::from(*w) / g) as f64 / scale).max(1.0))
            .collect();
        let len: f64 = reduced.iter().sum();
        let len = len.round() as usize;
        let mut schedule = Vec::with_capacity(len);
        if len.saturating_mul(reduced.len()) <= 1 << 22 {
            // Smooth weighted round robin (nginx): the best spread, O(len x n).
            let total: f64 = reduced.iter().sum();
            let mut current = vec![0.0f64; reduced.len()];
            for _ in 0..len {
                let mut best = 0;
                for (i, w) in reduced.iter().enumerate() {
                    current[i] += w;
                    if current[i] > current[best] {
                        best = i;
                    }
                }
                current[best] -= total;
                schedule.push(best as u32);
            }
        } else {
            // Large sets: earliest deadline first, O(len log n).
            let mut heap: BinaryHeap<Deadline> = reduced
                .iter()
                .enumerate()
                .map(|(i, w)| Deadline(0.5 / w, i as u32))
                .collect();
            for _ in 0..len {
                let Some(Deadline(d, i)) = heap.pop() else {
                    break;
                };
                schedule.push(i);
                heap.push(Deadline(d + 1.0 / reduced[i as usize], i));
            }
        }
        self.schedule = schedule;
    }

    /// Each endpoint owns points derived from its address only, so adding or removing
    /// one endpoint moves only the keys on that endpoint's points.
    fn build_ring(&mut self) {
        let total: u64 = self.weights.iter().map(|w| u64::from(*w)).sum();
        let per = if total * VNODES_PER_WEIGHT <= MAX_RING {
            VNODES_PER_WEIGHT
        } else {
            (MAX_RING / total.max(1)).max(1)
        };
        let mut ring = Vec::with_capacity((total * per) as usize);
        for (i, (ep, w)) in self.eps.iter().zip(&self.weights).enumerate() {
            let base = hash_bytes(ep.authority.as_bytes());
            for v in 0..(u64::from(*w) * per) {
                ring.push((mix(base ^ mix(v.wrapping_add(1))), i as u32));
            }
        }
        ring.sort_unstable();
        self.ring = ring;
    }

    fn weighted_random(&self) -> usize {
        let n = self.eps.len();
        if self.uniform || self.cum.is_empty() {
            return fastrand::usize(..n);
        }
        let total = self.cum.last().copied().unwrap_or(1).max(1);
        let r = fastrand::u64(..total);
        self.cum.partition_point(|c| *c <= r).min(n - 1)
    }
}

impl Lb {
    pub fn new(policy: LbPolicy, hash: Option<HashKey>) -> Lb {
        // Start each cluster at a random offset so a fleet of proxies does not march
        // over the endpoints in lockstep.
        Lb {
            policy,
            cursor: AtomicUsize::new(fastrand::usize(..1024)),
            hash,
        }
    }

    pub fn policy(&self) -> LbPolicy {
        self.policy
    }

    /// The request's hash for `ring_hash` (None: no key in the request, or another
    /// policy). Reads headers in place; no allocation.
    pub fn request_hash(&self, headers: &HeaderMap, remote_ip: &str) -> Option<u64> {
        if self.policy != LbPolicy::RingHash {
            return None;
        }
        match self.hash.as_ref()? {
            HashKey::Header(name) => headers.get(name).map(|v| hash_bytes(v.as_bytes())),
            HashKey::SourceIp => Some(hash_bytes(remote_ip.as_bytes())),
            HashKey::Cookie(name) => headers.get_all(header::COOKIE).iter().find_map(|v| {
                v.as_bytes().split(|b| *b == b';').find_map(|pair| {
                    let pair = pair.trim_ascii();
                    let eq = pair.iter().position(|b| *b == b'=')?;
                    (&pair[..eq] == name.as_bytes()).then(|| hash_bytes(&pair[eq + 1..]))
                })
            }),
        }
    }

    pub fn pick<'a>(
        &self,
        r: &'a Rotation,
        avoid: Option<&Arc<Endpoint>>,
        hash: Option<u64>,
    ) -> Option<&'a Arc<Endpoint>> {
        let n = r.eps.len();
        if n == 0 {
            return None;
        }
        if n == 1 {
            return r.eps.first();
        }
        let chosen = match self.policy {
            LbPolicy::RoundRobin => {
                let c = self.cursor.fetch_add(1, Ordering::Relaxed);
                if r.schedule.is_empty() {
                    c % n
                } else {
                    r.schedule[c % r.schedule.len()] as usize
                }
            }
            LbPolicy::Random => r.weighted_random(),
            LbPolicy::LeastRequest => {
                // Two candidates drawn by weight; the one with fewer active
                // requests wins (ties: the first). With no load this follows the
                // weights; under load it steers away from busy endpoints.
                let a = r.weighted_random();
                let b = if r.uniform {
                    (a + 1 + fastrand::usize(..n - 1)) % n
                } else {
                    r.weighted_random()
                };
                if r.eps[b].active.load(Ordering::Relaxed) < r.eps[a].active.load(Ordering::Relaxed)
                {
                    b
                } else {
                    a
                }
            }
            LbPolicy::RingHash => match hash {
                Some(h) if !r.ring.is_empty() => {
                    let i = r.ring.partition_point(|(p, _)| *p < h);
                    let (_, idx) = r.ring[i % r.ring.len()];
                    let idx = idx as usize;
                    match avoid {
                        // A retry walks the ring to the next other endpoint.
                        Some(av) if Arc::ptr_eq(&r.eps[idx], av) => {
                            let mut j = i;
                            loop {
                                j += 1;
                                let (_, k) = r.ring[j % r.ring.len()];
                                if k as usize != idx || j > i + r.ring.len() {
                                    return r.eps.get(k as usize);
                                }
                            }
                        }
                        _ => idx,
                    }
                }
                _ => r.weighted_random(),
            },
        };
        match avoid {
            Some(av) if Arc::ptr_eq(&r.eps[chosen], av) => r.eps.get((chosen + 1) % n),
            _ => r.eps.get(chosen),
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

    fn weighted(ws: &[u32]) -> Vec<Arc<Endpoint>> {
        ws.iter()
            .enumerate()
            .map(|(i, w)| {
                let e = Endpoint::new(([127, 0, 0, 1], 1000 + i as u16).into());
                e.set_weight(*w);
                Arc::new(e)
            })
            .collect()
    }

    fn counts(lb: &Lb, r: &Rotation, n: usize) -> Vec<usize> {
        let mut c = vec![0; r.len()];
        for _ in 0..n {
            let p = lb.pick(r, None, None).expect("endpoint");
            c[usize::from(p.addr.port() - 1000)] += 1;
        }
        c
    }

    #[test]
    fn round_robin_visits_every_endpoint_evenly() {
        let r = Rotation::build(eps(3), LbPolicy::RoundRobin);
        let lb = Lb::new(LbPolicy::RoundRobin, None);
        assert_eq!(counts(&lb, &r, 300), [100, 100, 100]);
    }

    #[test]
    fn every_policy_honours_weights() {
        let r = Rotation::build(weighted(&[1, 3]), LbPolicy::RoundRobin);
        let lb = Lb::new(LbPolicy::RoundRobin, None);
        assert_eq!(counts(&lb, &r, 400), [100, 300]);
        for policy in [LbPolicy::Random, LbPolicy::LeastRequest, LbPolicy::RingHash] {
            let r = Rotation::build(weighted(&[1, 3]), policy);
            let lb = Lb::new(policy, None);
            let c = counts(&lb, &r, 8000);
            assert!(
                (1600..2400).contains(&c[0]) && (5600..6400).contains(&c[1]),
                "{policy:?}: {c:?}"
            );
        }
    }

    #[test]
    fn weighted_round_robin_interleaves() {
        let r = Rotation::build(weighted(&[1, 1, 4]), LbPolicy::RoundRobin);
        assert_eq!(r.schedule.len(), 6);
        // The heavy endpoint's four turns are spread, not bunched.
        let s: Vec<u32> = r
            .schedule
            .iter()
            .chain(r.schedule.iter())
            .copied()
            .collect();
        assert!(s.windows(4).all(|w| w.iter().any(|i| *i != 2)), "{s:?}");
    }

    #[test]
    fn least_request_prefers_idle_endpoints() {
        let e = eps(2);
        e[0].active.store(50, Ordering::Relaxed);
        let r = Rotation::build(e, LbPolicy::LeastRequest);
        let lb = Lb::new(LbPolicy::LeastRequest, None);
        for _ in 0..100 {
            assert_eq!(lb.pick(&r, None, None).expect("endpoint").addr.port(), 1001);
        }
    }

    #[test]
    fn retry_avoids_the_failed_endpoint() {
        let e = eps(2);
        let r = Rotation::build(e.clone(), LbPolicy::Random);
        let lb = Lb::new(LbPolicy::Random, None);
        for _ in 0..100 {
            assert_eq!(
                lb.pick(&r, Some(&e[0]), None)
                    .expect("endpoint")
                    .addr
                    .port(),
                1001
            );
        }
        assert!(lb.pick(&Rotation::default(), None, None).is_none());
    }

    #[test]
    fn ring_hash_is_sticky_and_remaps_little_when_one_of_ten_leaves() {
        let all = eps(10);
        let lb = Lb::new(LbPolicy::RingHash, Some(HashKey::SourceIp));
        let full = Rotation::build(all.clone(), LbPolicy::RingHash);
        let fewer = Rotation::build(
            all.iter()
                .filter(|e| e.addr.port() != 1004)
                .cloned()
                .collect(),
            LbPolicy::RingHash,
        );
        let keys: Vec<u64> = (0..10_000u32)
            .map(|k| hash_bytes(&k.to_be_bytes()))
            .collect();
        let mut moved = 0;
        let mut on_removed = 0;
        for k in &keys {
            let a = lb.pick(&full, None, Some(*k)).expect("ep").addr;
            assert_eq!(lb.pick(&full, None, Some(*k)).expect("ep").addr, a);
            let b = lb.pick(&fewer, None, Some(*k)).expect("ep").addr;
            if a.port() == 1004 {
                on_removed += 1;
            } else if a != b {
                moved += 1;
            }
        }
        // Only the keys of the endpoint that left move; it held about a tenth.
        assert_eq!(moved, 0);
        assert!((600..1400).contains(&on_removed), "{on_removed}");
    }

    #[test]
    fn cookie_and_header_keys_hash_the_value() {
        let lb = Lb::new(
            LbPolicy::RingHash,
            Some(HashKey::Cookie("session".to_string())),
        );
        let mut h = HeaderMap::new();
        h.insert(header::COOKIE, "a=1; session=xyz".parse().expect("value"));
        assert_eq!(lb.request_hash(&h, "1.2.3.4"), Some(hash_bytes(b"xyz")));
        h.insert(header::COOKIE, "a=1".parse().expect("value"));
        assert_eq!(lb.request_hash(&h, "1.2.3.4"), None);
        let lb = Lb::new(
            LbPolicy::RingHash,
            Some(HashKey::Header(HeaderName::from_static("x-user"))),
        );
        h.insert("x-user", "bob".parse().expect("value"));
        assert_eq!(lb.request_hash(&h, "1.2.3.4"), Some(hash_bytes(b"bob")));
    }
}
