//! Passive health: consecutive 5xx, connect failures and Thrift exceptions eject an
//! endpoint for `base_ejection_time` x its number of ejections (capped), never more
//! than `max_ejection_percent` of the cluster at once. Counting is a few relaxed
//! atomics per call; ejecting (rare) rebuilds the host set.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// One call's result as outlier detection sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Success,
    /// A 5xx response, a reset or a timeout.
    Failure,
    ConnectFailure,
    /// A Thrift `TApplicationException` or transport failure.
    ThriftFailure,
}

#[derive(Debug, Clone)]
pub struct Config {
    pub consecutive_5xx: u32,
    pub consecutive_connect_failure: u32,
    pub consecutive_exceptions: u32,
    pub base_ejection_time: Duration,
    pub max_ejection_time: Duration,
    pub max_ejection_percent: u32,
}

#[derive(Debug, Default)]
pub struct EndpointState {
    cons_5xx: AtomicU32,
    cons_connect: AtomicU32,
    cons_exceptions: AtomicU32,
    ejected: AtomicBool,
    pub ejections: AtomicU32,
    /// Milliseconds since the Unix epoch when the current ejection ends (0: none).
    pub ejected_until_ms: AtomicU64,
}

fn bump(c: &AtomicU32, threshold: u32) -> bool {
    threshold > 0 && c.fetch_add(1, Ordering::Relaxed) + 1 >= threshold
}

fn clear(c: &AtomicU32) {
    // Read first: the common case (already 0) does not dirty the cache line.
    if c.load(Ordering::Relaxed) != 0 {
        c.store(0, Ordering::Relaxed);
    }
}

impl EndpointState {
    pub fn is_ejected(&self) -> bool {
        self.ejected.load(Ordering::Relaxed)
    }

    /// Count one outcome; true when a detector tripped.
    pub fn record(&self, cfg: &Config, outcome: Outcome) -> bool {
        match outcome {
            Outcome::Success => {
                clear(&self.cons_5xx);
                clear(&self.cons_connect);
                clear(&self.cons_exceptions);
                false
            }
            Outcome::Failure => bump(&self.cons_5xx, cfg.consecutive_5xx),
            Outcome::ConnectFailure => {
                let a = bump(&self.cons_connect, cfg.consecutive_connect_failure);
                let b = bump(&self.cons_5xx, cfg.consecutive_5xx);
                a || b
            }
            Outcome::ThriftFailure => bump(&self.cons_exceptions, cfg.consecutive_exceptions),
        }
    }

    /// Eject unless already ejected or the cluster is at its ejection limit; the
    /// ejection's duration when it happened. Caller serializes.
    pub fn eject(&self, cfg: &Config, total: usize, ejected_now: usize) -> Option<Duration> {
        clear(&self.cons_5xx);
        clear(&self.cons_connect);
        clear(&self.cons_exceptions);
        if self.is_ejected() {
            return None;
        }
        let allowed = if cfg.max_ejection_percent == 0 {
            0
        } else {
            (total * cfg.max_ejection_percent as usize / 100).max(1)
        };
        if ejected_now >= allowed {
            return None;
        }
        let n = self.ejections.fetch_add(1, Ordering::Relaxed) + 1;
        let d = cfg
            .base_ejection_time
            .saturating_mul(n)
            .min(cfg.max_ejection_time);
        let until = SystemTime::now()
            .checked_add(d)
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map_or(0, |x| x.as_millis() as u64);
        self.ejected_until_ms.store(until, Ordering::Relaxed);
        self.ejected.store(true, Ordering::Relaxed);
        Some(d)
    }

    pub fn uneject(&self) {
        self.ejected.store(false, Ordering::Relaxed);
        self.ejected_until_ms.store(0, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> Config {
        Config {
            consecutive_5xx: 3,
            consecutive_connect_failure: 5,
            consecutive_exceptions: 5,
            base_ejection_time: Duration::from_secs(10),
            max_ejection_time: Duration::from_secs(300),
            max_ejection_percent: 50,
        }
    }

    #[test]
    fn consecutive_failures_trip_and_success_resets() {
        let s = EndpointState::default();
        let c = cfg();
        assert!(!s.record(&c, Outcome::Failure));
        assert!(!s.record(&c, Outcome::Failure));
        assert!(!s.record(&c, Outcome::Success));
        assert!(!s.record(&c, Outcome::Failure));
        assert!(!s.record(&c, Outcome::Failure));
        assert!(s.record(&c, Outcome::Failure));
    }

    #[test]
    fn ejection_time_grows_and_percent_is_capped() {
        let s = EndpointState::default();
        let c = cfg();
        assert_eq!(s.eject(&c, 4, 0), Some(Duration::from_secs(10)));
        assert_eq!(s.eject(&c, 4, 1), None, "already ejected");
        s.uneject();
        assert_eq!(s.eject(&c, 4, 1), Some(Duration::from_secs(20)));
        s.uneject();
        assert_eq!(s.eject(&c, 4, 2), None, "50% of 4 already out");
    }
}
