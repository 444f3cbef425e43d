//! Workers: `--concurrency N` runs N single-threaded tokio runtimes, each on its own
//! thread with its own listening socket per listener (SO_REUSEPORT, like NGINX's
//! `reuseport` and Envoy's per-worker listeners) and its own connections. The kernel
//! spreads new connections over the sockets; a connection then stays on the worker
//! that accepted it (no work stealing, no cross-thread wake-ups for its I/O).
//!
//! Worker 0 is the runtime of the main thread, which also serves the admin
//! endpoint, signals, config reloads and health checks. See docs/performance.md,
//! "Workers".

use std::time::Duration;

use tokio::runtime::{Handle, Runtime};
use tokio::sync::watch;

/// The worker runtimes: handles to spawn on (index 0 is the main thread's) and the
/// threads of the others.
pub struct Workers {
    handles: Vec<Handle>,
    threads: Vec<std::thread::JoinHandle<()>>,
    stop: watch::Sender<bool>,
}

/// A single-threaded runtime, as every worker runs.
pub fn runtime() -> std::io::Result<Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .thread_name("attache-worker")
        .enable_all()
        .build()
}

impl Workers {
    /// Start `n - 1` worker threads beside `main` (worker 0).
    pub fn start(n: usize, main: Handle) -> std::io::Result<Workers> {
        let (stop, _) = watch::channel(false);
        let mut workers = Workers {
            handles: vec![main],
            threads: Vec::new(),
            stop,
        };
        for i in 1..n.max(1) {
            let rt = runtime()?;
            workers.handles.push(rt.handle().clone());
            let mut stop = workers.stop.subscribe();
            let thread = std::thread::Builder::new()
                .name(format!("attache-worker-{i}"))
                .spawn(move || {
                    rt.block_on(async move {
                        tokio::spawn(timer_heartbeat());
                        let _ = stop.wait_for(|s| *s).await;
                    });
                    // Dropping the runtime cancels what the drain deadline left open
                    // on this worker (those streams are logged `DT`).
                    rt.shutdown_timeout(Duration::from_secs(1));
                })?;
            workers.threads.push(thread);
        }
        Ok(workers)
    }

    /// Every worker's runtime; index 0 is the main thread's.
    pub fn handles(&self) -> &[Handle] {
        &self.handles
    }

    /// Stop the worker threads and wait for them (each shuts its runtime down).
    pub fn stop(self) {
        let _ = self.stop.send(true);
        for t in self.threads {
            let _ = t.join();
        }
    }
}

/// Keep the timer wheel's next deadline near. tokio wakes its driver (an eventfd
/// write, then an extra `epoll_wait` round) whenever a newly registered timer expires
/// before the driver's planned wake-up. On an otherwise empty wheel that is every
/// request's route timeout: two syscalls per request at moderate load (seen with
/// strace at a fixed 5k req/s). With this tick pending, timers of 250 ms or more
/// never become the earliest deadline; it costs four wake-ups a second when idle.
/// Every worker runs one (each has its own timer wheel).
pub async fn timer_heartbeat() {
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tick.tick().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_worker_runs_on_its_own_thread() {
        let main = runtime().expect("runtime");
        let workers = Workers::start(3, main.handle().clone()).expect("workers");
        assert_eq!(workers.handles().len(), 3);
        let names: Vec<String> = workers.handles()[1..]
            .iter()
            .map(|h| {
                let (tx, rx) = std::sync::mpsc::channel();
                h.spawn(async move {
                    let name = std::thread::current().name().map(str::to_string);
                    let _ = tx.send(name.unwrap_or_default());
                });
                rx.recv_timeout(Duration::from_secs(30)).expect("task ran")
            })
            .collect();
        assert_eq!(names, ["attache-worker-1", "attache-worker-2"]);
        workers.stop();
    }
}
