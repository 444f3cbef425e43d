//! Rate-limited warnings for per-request events (an upstream connect failure can
//! happen thousands of times a second): at most one line per interval, carrying how
//! many were suppressed since the last one. Lock-free: one compare-and-swap on the
//! rare path, two relaxed atomics otherwise.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// One line per this interval.
pub const INTERVAL: Duration = Duration::from_secs(1);

#[derive(Debug, Default)]
pub struct Throttle {
    /// Milliseconds since [`epoch`] when the last line was allowed (0: never).
    last_ms: AtomicU64,
    suppressed: AtomicU64,
}

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

impl Throttle {
    /// `Some(suppressed since the last line)` when a line may be written now.
    pub fn allow(&self) -> Option<u64> {
        let now = u64::try_from(epoch().elapsed().as_millis()).unwrap_or(u64::MAX);
        self.allow_at(now.saturating_add(1))
    }

    fn allow_at(&self, now_ms: u64) -> Option<u64> {
        let last = self.last_ms.load(Ordering::Relaxed);
        let interval = u64::try_from(INTERVAL.as_millis()).unwrap_or(u64::MAX);
        let due = last == 0 || now_ms.saturating_sub(last) >= interval;
        if due
            && self
                .last_ms
                .compare_exchange(last, now_ms, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            return Some(self.suppressed.swap(0, Ordering::Relaxed));
        }
        self.suppressed.fetch_add(1, Ordering::Relaxed);
        None
    }
}

#[cfg(test)]
mod tests {
    use super::Throttle;

    #[test]
    fn one_line_per_interval_with_the_suppressed_count() {
        let t = Throttle::default();
        assert_eq!(t.allow_at(5), Some(0));
        assert_eq!(t.allow_at(6), None);
        assert_eq!(t.allow_at(900), None);
        assert_eq!(t.allow_at(1005), Some(2));
        assert_eq!(t.allow_at(1006), None);
        assert_eq!(t.allow_at(2500), Some(1));
    }
}
