//! Certificate rotation: a task per `ServerTls`/`ClientTls` polls its files once a
//! second and rebuilds the rustls config when their content changed and has been
//! stable for one more poll (so a cert and key written one after the other are
//! picked up together). Polling content is portable and cheap for a few small PEM
//! files; no inotify. The task holds only a `Weak` and ends once its owner is gone.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use arc_swap::ArcSwap;
use prometheus::IntCounter;

use super::material::Problems;

/// How often files are polled (the product's only interval; tests inject their own
/// with [`Watch::polling_every`]).
pub const POLL_INTERVAL: Duration = Duration::from_secs(1);

/// Something whose material can be rebuilt from its files.
pub(crate) trait Reload: Send + Sync + 'static {
    /// `listener` or `cluster` (for logs).
    fn scope(&self) -> (&'static str, &str);
    /// Re-read every file and swap in a new config; on error the old one stays.
    fn reload(&self) -> Result<(), Problems>;
    fn counters(&self) -> (&IntCounter, &IntCounter);
}

/// Reads a side's files and builds its material (`Err`: every problem).
pub(crate) type Load<S, L> = fn(&S) -> Result<L, Problems>;

/// The material in use (swapped whole on rotation), the settings and function
/// it is rebuilt with, the watch on its files and the reload counters.
pub(crate) struct Material<S, L> {
    settings: S,
    load: Load<S, L>,
    current: ArcSwap<L>,
    pub(crate) watch: Watch,
    ok: IntCounter,
    failed: IntCounter,
}

impl<S, L> Material<S, L> {
    /// Load the settings' `files`; the watch starts from their content just
    /// before. The reload counters (`ok`, `failed`) are made only on success.
    pub(crate) fn load(
        settings: S,
        files: Vec<String>,
        load: Load<S, L>,
        counters: impl FnOnce() -> (IntCounter, IntCounter),
    ) -> Result<Material<S, L>, Problems> {
        let initial = fingerprint(&files);
        let loaded = load(&settings)?;
        let (ok, failed) = counters();
        Ok(Material {
            settings,
            load,
            current: ArcSwap::from_pointee(loaded),
            watch: Watch::new(files, initial),
            ok,
            failed,
        })
    }

    /// The material new connections use now.
    pub(crate) fn current(&self) -> Arc<L> {
        self.current.load_full()
    }

    /// Re-read every file and swap in the result; on error the old one stays.
    pub(crate) fn reload(&self) -> Result<(), Problems> {
        let loaded = (self.load)(&self.settings)?;
        self.current.store(Arc::new(loaded));
        Ok(())
    }

    /// The reload counters: (`ok`, `failed`).
    pub(crate) fn counters(&self) -> (&IntCounter, &IntCounter) {
        (&self.ok, &self.failed)
    }
}

/// The reload counters (`ok`, `failed`) of one owner: `metric{<scope>=name, result}`.
pub(crate) fn counters(
    stats: &attache_filters::Stats,
    (metric, help): (&'static str, &str),
    (scope, name): (&str, &str),
) -> (IntCounter, IntCounter) {
    let vec = stats.counter_vec(metric, help, &[scope, "result"]);
    let counter = |result| vec.with_label_values(&[name, result]);
    (counter("ok"), counter("failed"))
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
    every: Duration,
    started: AtomicBool,
}

impl Watch {
    /// `initial` is the fingerprint taken just before the material was loaded.
    pub(crate) fn new(paths: Vec<String>, initial: u64) -> Watch {
        Self::polling_every(paths, initial, POLL_INTERVAL)
    }

    /// A watch that polls every `every` instead of [`POLL_INTERVAL`].
    pub(crate) fn polling_every(paths: Vec<String>, initial: u64, every: Duration) -> Watch {
        Watch {
            paths,
            initial,
            every,
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
        let paths = self.paths.clone();
        handle.spawn(watch(owner.clone(), paths, self.initial, self.every));
    }
}

async fn watch<T: Reload>(weak: Weak<T>, paths: Vec<String>, mut applied: u64, every: Duration) {
    let paths: Arc<[String]> = paths.into();
    let mut pending: Option<u64> = None;
    loop {
        tokio::time::sleep(every).await;
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

#[cfg(test)]
mod tests {
    //! The poll loop on tokio's paused clock: each `sleep` below moves time to the
    //! next poll at once (the blocking file reads hold the clock while they run).
    use std::sync::atomic::AtomicUsize;

    use super::*;

    const EVERY: Duration = Duration::from_secs(1);

    struct Fake {
        reloads: AtomicUsize,
        fail: AtomicBool,
        ok: IntCounter,
        failed: IntCounter,
    }

    impl Reload for Fake {
        fn scope(&self) -> (&'static str, &str) {
            ("listener", "t")
        }
        fn reload(&self) -> Result<(), Problems> {
            self.reloads.fetch_add(1, Ordering::SeqCst);
            if self.fail.load(Ordering::SeqCst) {
                return Err(vec![crate::config::Problem::new("tls.cert", "broken")]);
            }
            Ok(())
        }
        fn counters(&self) -> (&IntCounter, &IntCounter) {
            (&self.ok, &self.failed)
        }
    }

    struct Setup {
        _dir: tempfile::TempDir,
        file: std::path::PathBuf,
        fake: Arc<Fake>,
    }

    impl Setup {
        /// A watched file with content `v1`, its watch started half a poll ago.
        fn start() -> Setup {
            let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
            let file = dir.path().join("cert.pem");
            std::fs::write(&file, "v1").unwrap_or_else(|e| panic!("{e}"));
            let paths = vec![file.to_string_lossy().into_owned()];
            let counter = |n: &str| IntCounter::new(n, n).unwrap_or_else(|e| panic!("{e}"));
            let fake = Arc::new(Fake {
                reloads: AtomicUsize::new(0),
                fail: AtomicBool::new(false),
                ok: counter("ok"),
                failed: counter("failed"),
            });
            let watch = Watch::polling_every(paths.clone(), fingerprint(&paths), EVERY);
            watch.ensure_started(&Arc::downgrade(&fake));
            Setup {
                _dir: dir,
                file,
                fake,
            }
        }

        fn write(&self, content: &str) {
            std::fs::write(&self.file, content).unwrap_or_else(|e| panic!("{e}"));
        }

        fn reloads(&self) -> usize {
            self.fake.reloads.load(Ordering::SeqCst)
        }
    }

    /// Sleep to half a poll past the next `n` polls.
    async fn polls(n: u32) {
        tokio::time::sleep(EVERY * n).await;
    }

    #[tokio::test(start_paused = true)]
    async fn unchanged_files_are_never_reloaded() {
        let s = Setup::start();
        tokio::time::sleep(EVERY / 2).await;
        polls(10).await;
        assert_eq!(s.reloads(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_change_is_applied_after_one_more_poll_sees_it_stable() {
        let s = Setup::start();
        tokio::time::sleep(EVERY / 2).await;
        s.write("v2");
        polls(1).await;
        assert_eq!(s.reloads(), 0, "seen once: a writer may still be busy");
        polls(1).await;
        assert_eq!(s.reloads(), 1);
        assert_eq!(s.fake.ok.get(), 1);
        polls(3).await;
        assert_eq!(s.reloads(), 1, "applied content is not reloaded again");
    }

    #[tokio::test(start_paused = true)]
    async fn content_that_keeps_changing_waits_until_it_settles() {
        let s = Setup::start();
        tokio::time::sleep(EVERY / 2).await;
        for v in ["v2", "v3", "v4"] {
            s.write(v);
            polls(1).await;
            assert_eq!(s.reloads(), 0, "{v} changed again before a second poll");
        }
        polls(1).await;
        assert_eq!(s.reloads(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_reload_is_counted_and_not_retried_until_the_files_change() {
        let s = Setup::start();
        s.fake.fail.store(true, Ordering::SeqCst);
        tokio::time::sleep(EVERY / 2).await;
        s.write("broken");
        polls(2).await;
        assert_eq!((s.reloads(), s.fake.failed.get()), (1, 1));
        polls(3).await;
        assert_eq!(s.reloads(), 1);
        s.fake.fail.store(false, Ordering::SeqCst);
        s.write("fixed");
        polls(2).await;
        assert_eq!((s.reloads(), s.fake.ok.get()), (2, 1));
    }
}
