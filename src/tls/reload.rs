//! Certificate rotation: a task per `ServerTls`/`ClientTls` polls its files once a
//! second and rebuilds the rustls config when their content changed and has been
//! stable for one more poll (so a cert and key written one after the other are
//! picked up together). Polling content is portable and cheap for a few small PEM
//! files; no inotify. The task holds only a `Weak` and ends once its owner is gone.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use prometheus::IntCounter;

use super::material::Problems;

/// How often files are polled.
pub const POLL_INTERVAL: Duration = Duration::from_secs(1);

/// Something whose material can be rebuilt from its files.
pub(crate) trait Reload: Send + Sync + 'static {
    /// `listener` or `cluster` (for logs).
    fn scope(&self) -> (&'static str, &str);
    /// Re-read every file and swap in a new config; on error the old one stays.
    fn reload(&self) -> Result<(), Problems>;
    fn counters(&self) -> (&IntCounter, &IntCounter);
}

/// A hash of the content of every watched file; unreadable files hash their error kind.
pub(crate) fn fingerprint(paths: &[String]) -> u64 {
    let mut h = DefaultHasher::new();
    for p in paths {
        p.hash(&mut h);
        match std::fs::read(p) {
            Ok(bytes) => {
                0u8.hash(&mut h);
                bytes.hash(&mut h);
            }
            Err(e) => {
                1u8.hash(&mut h);
                format!("{:?}", e.kind()).hash(&mut h);
            }
        }
    }
    h.finish()
}

/// The watched files of one owner and whether its poller runs yet.
pub(crate) struct Watch {
    paths: Vec<String>,
    initial: u64,
    started: AtomicBool,
}

impl Watch {
    /// `initial` is the fingerprint taken just before the material was loaded.
    pub(crate) fn new(paths: Vec<String>, initial: u64) -> Watch {
        Watch {
            paths,
            initial,
            started: AtomicBool::new(false),
        }
    }

    /// Start the poller once, on the current tokio runtime. Called at build and on
    /// every handshake, so material built before the runtime started (e.g. while
    /// `main` validates the config) is still watched once traffic flows. Without a
    /// runtime this does nothing.
    pub(crate) fn ensure_started<T: Reload>(&self, owner: &Weak<T>) {
        if self.started.load(Ordering::Relaxed) {
            return;
        }
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            return;
        };
        if self.started.swap(true, Ordering::AcqRel) {
            return;
        }
        handle.spawn(watch(owner.clone(), self.paths.clone(), self.initial));
    }
}

async fn watch<T: Reload>(weak: Weak<T>, paths: Vec<String>, mut applied: u64) {
    let paths: Arc<[String]> = paths.into();
    let mut pending: Option<u64> = None;
    loop {
        tokio::time::sleep(POLL_INTERVAL).await;
        if weak.strong_count() == 0 {
            return;
        }
        let p = paths.clone();
        let Ok(now) = tokio::task::spawn_blocking(move || fingerprint(&p)).await else {
            continue;
        };
        if now == applied {
            pending = None;
            continue;
        }
        if pending != Some(now) {
            // Changed since the last poll: wait one more for writers to finish.
            pending = Some(now);
            continue;
        }
        pending = None;
        applied = now;
        let Some(target) = weak.upgrade() else { return };
        let t = target.clone();
        let result = tokio::task::spawn_blocking(move || t.reload()).await;
        let (scope, name) = target.scope();
        let (ok, failed) = target.counters();
        match result {
            Ok(Ok(())) => {
                ok.inc();
                tracing::info!(scope, name, "tls material reloaded");
            }
            Ok(Err(problems)) => {
                failed.inc();
                for p in problems {
                    tracing::error!(scope, name, key = %p.path, error = %p, "tls reload failed; keeping the previous certificates");
                }
            }
            Err(e) => {
                failed.inc();
                tracing::error!(scope, name, error = %e, "tls reload task failed; keeping the previous certificates");
            }
        }
    }
}
