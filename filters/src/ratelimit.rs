//! A lock-free "at most N per second" gate for log lines on the request path.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Instant;

/// Allows at most `per_second` events in each one-second window. Two atomics, no
/// lock; at a window boundary racing threads may let a line or two extra through,
/// which is fine for logging.
#[derive(Debug)]
pub struct LogLimiter {
    base: Instant,
    per_second: u32,
    window: AtomicU64,
    count: AtomicU32,
    suppressed: AtomicU64,
}

impl LogLimiter {
    pub fn new(per_second: u32) -> LogLimiter {
        LogLimiter {
            base: Instant::now(),
            per_second,
            window: AtomicU64::new(0),
            count: AtomicU32::new(0),
            suppressed: AtomicU64::new(0),
        }
    }

    /// True when the caller may log now.
    pub fn allow(&self) -> bool {
        self.allow_at(self.base.elapsed().as_secs())
    }

    fn allow_at(&self, now: u64) -> bool {
        if self.per_second == 0 {
            return false;
        }
        let window = self.window.load(Ordering::Relaxed);
        if window != now
            && self
                .window
                .compare_exchange(window, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            self.count.store(0, Ordering::Relaxed);
        }
        if self.count.fetch_add(1, Ordering::Relaxed) < self.per_second {
            true
        } else {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            false
        }
    }

    /// Lines suppressed since the start (exposed for tests and debugging).
    pub fn suppressed(&self) -> u64 {
        self.suppressed.load(Ordering::Relaxed)
    }
}

/// Request data made safe for a log field: at most 64 bytes, lossy UTF-8. Log it
/// with `?` so control characters are escaped.
pub fn loggable(raw: &[u8]) -> String {
    let cut = raw.len().min(64);
    String::from_utf8_lossy(&raw[..cut]).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allows_n_per_second_then_resets() {
        let l = LogLimiter::new(3);
        let allowed = (0..10).filter(|_| l.allow_at(5)).count();
        assert_eq!(allowed, 3);
        assert_eq!(l.suppressed(), 7);
        assert!(l.allow_at(6));
    }

    #[test]
    fn zero_disables_logging() {
        assert!(!LogLimiter::new(0).allow_at(1));
    }
}
