//! The listener manager: binds listeners, runs accept loops, swaps snapshots on
//! reload, and drains on shutdown.

pub mod hot_restart;
pub mod log_filter;
pub mod workers;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use arc_swap::ArcSwap;
use attache_filters::Services;
use prometheus::IntCounter;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::either::Either;

use crate::accesslog::Sinks;
use crate::config::snapshot::Listener;
use crate::config::types::ListenerProtocol;
use crate::config::{Diagnostic, Snapshot};
use crate::http::{ConnCtx, Runtime};
use crate::stats::{Stats, CONFIG_RELOAD_TOTAL};

/// Sets the log filter at runtime (`POST /logging?level=debug`).
pub type LogLevelSetter = Box<dyn Fn(&str) -> Result<(), String> + Send + Sync>;

/// Why the server could not start or reload.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("invalid config")]
    Config(Vec<Diagnostic>),
    #[error("listener `{name}`: cannot bind {addr}: {error}")]
    Bind {
        name: String,
        addr: SocketAddr,
        error: std::io::Error,
    },
    #[error("admin: cannot bind {addr}: {error}")]
    AdminBind {
        addr: SocketAddr,
        error: std::io::Error,
    },
}

struct RunningListener {
    slot: Arc<ArcSwap<Runtime>>,
    address: SocketAddr,
    protocol: ListenerProtocol,
    local: SocketAddr,
    stop: watch::Sender<bool>,
}

pub struct LoadInfo {
    pub hash: u64,
    pub at: SystemTime,
}

/// Process-wide state shared by the accept loops and the admin endpoint.
pub struct Server {
    pub stats: Arc<Stats>,
    pub services: Arc<Services>,
    pub config_path: String,
    pub snapshot: ArcSwap<Snapshot>,
    pub load: ArcSwap<LoadInfo>,
    pub started: Instant,
    pub concurrency: usize,
    /// Where each worker's accept loops run (`workers`): one socket per listener each.
    workers: Vec<tokio::runtime::Handle>,
    pub health_failed: AtomicBool,
    pub draining: AtomicBool,
    /// Fires once: stop accepting and drain.
    pub shutdown: watch::Sender<bool>,
    active_connections: Arc<AtomicUsize>,
    sinks: Sinks,
    running: Mutex<HashMap<String, RunningListener>>,
    reload_lock: tokio::sync::Mutex<()>,
    reload_ok: IntCounter,
    reload_failed: IntCounter,
    pub log_level: LogLevelSetter,
    /// The log filter in effect (`GET /logging`).
    pub log_filter: Mutex<String>,
    /// Asks `attache run` to drain and exit (`POST /quitquitquit`).
    pub exit: tokio::sync::Notify,
    /// Set when the drain deadline cuts what is still open: streams ending then
    /// are logged `DT`, not `DC`.
    pub drain_cut: Arc<AtomicBool>,
    /// When the drain under way ends (set by the first `drain`).
    drain_deadline: Mutex<Option<Instant>>,
    drained: AtomicBool,
    pub admin_local: Mutex<Option<SocketAddr>>,
    /// Hot restart: bind listeners that the previous process still holds.
    pub takeover: AtomicBool,
    /// Clusters and listeners accepted over xDS, compiled in with the file's.
    xds_dynamic: ArcSwap<crate::xds::dynamic::Dynamic>,
    /// The config file as read by the last load that succeeded (the running
    /// snapshot's): xDS updates compile against it, never against the file on disk.
    source: ArcSwap<crate::config::Source>,
}

/// Bind a listener's sockets, one per worker, all with SO_REUSEPORT on one address
/// (the kernel spreads new connections over them); the first decides the port when
/// `addr` asks for any.
fn bind_workers(
    addr: SocketAddr,
    takeover: bool,
    workers: usize,
) -> std::io::Result<Vec<std::net::TcpListener>> {
    let first = bind(addr, takeover)?;
    let bound = first.local_addr()?;
    let mut socks = vec![first];
    for _ in 1..workers {
        socks.push(bind(bound, true)?);
    }
    Ok(socks)
}

/// Bind a listening socket with SO_REUSEPORT, so a hot restart's new process (and
/// every worker) can bind the same address while this one still serves. Unless
/// `takeover`, first check that no other socket holds the address (SO_REUSEPORT
/// would otherwise silently share a port with an unrelated process of the same user).
fn bind(addr: SocketAddr, takeover: bool) -> std::io::Result<std::net::TcpListener> {
    let domain = socket2::Domain::for_address(addr);
    if !takeover && addr.port() != 0 {
        let probe =
            socket2::Socket::new(domain, socket2::Type::STREAM, Some(socket2::Protocol::TCP))?;
        probe.set_reuse_address(true)?;
        probe.bind(&addr.into())?;
    }
    let sock = socket2::Socket::new(domain, socket2::Type::STREAM, Some(socket2::Protocol::TCP))?;
    sock.set_reuse_address(true)?;
    sock.set_reuse_port(true)?;
    sock.set_nonblocking(true)?;
    sock.bind(&addr.into())?;
    sock.listen(4096)?;
    Ok(sock.into())
}

/// How often `--watch-config` reads the config file and its includes.
pub const CONFIG_POLL_INTERVAL: Duration = Duration::from_secs(1);

/// `--watch-config`: poll the config file every [`CONFIG_POLL_INTERVAL`]; reload when
/// its content (hash) differs from the running config's. A rejected file is
/// reported once per content change.
pub async fn watch_config(server: Arc<Server>) {
    watch_config_every(server, CONFIG_POLL_INTERVAL).await
}

/// [`watch_config`], polling every `every`.
pub async fn watch_config_every(server: Arc<Server>, every: Duration) {
    let mut watch = Settle::new(server.config_hash());
    loop {
        tokio::time::sleep(every).await;
        let path = server.config_path.clone();
        // The same hash the loader records: the file and its includes.
        let h = tokio::task::spawn_blocking(move || crate::config::source_hash(&path)).await;
        let Ok(Some(h)) = h else {
            continue;
        };
        if watch.observe(h, server.config_hash()) {
            tracing::info!(config = %server.config_path, "config file changed; reloading");
            let _ = server.reload().await;
        }
    }
}

/// When a polled file's content is applied: only once two polls in a row saw the
/// same new content, so a file an editor is still writing in place (read half
/// written, which may even be valid YAML) is never applied; content already tried
/// is not retried until it changes again.
struct Settle {
    tried: u64,
    seen: Option<u64>,
}

impl Settle {
    fn new(running: u64) -> Settle {
        Settle {
            tried: running,
            seen: None,
        }
    }

    /// One poll saw `h` while `running` is the running config's hash: true when
    /// `h` should be applied now.
    fn observe(&mut self, h: u64, running: u64) -> bool {
        if h == running || h == self.tried {
            // Applied (here or by SIGHUP / POST /reload), or tried and refused.
            if h == running {
                self.tried = running;
            }
            self.seen = None;
            return false;
        }
        if self.seen.replace(h) != Some(h) {
            return false; // new content: wait for one more poll to see it settled
        }
        self.tried = h;
        self.seen = None;
        true
    }
}

/// Start discovery and health checking for every cluster of `snap` (clusters reused
/// from the running config are already started).
pub async fn start_clusters(snap: &Snapshot) {
    // Together: DNS and EDS clusters wait (bounded) for their first answer.
    futures_util::future::join_all(snap.clusters.values().map(|c| c.start())).await;
}

impl Server {
    pub fn new(
        config_path: String,
        snapshot: Snapshot,
        source: crate::config::Source,
        stats: Arc<Stats>,
        services: Arc<Services>,
        workers: Vec<tokio::runtime::Handle>,
        log_level: LogLevelSetter,
    ) -> Arc<Server> {
        let reload =
            stats.counter_vec(CONFIG_RELOAD_TOTAL, "Config reloads by result", &["result"]);
        let (shutdown, _) = watch::channel(false);
        Arc::new(Server {
            config_path,
            snapshot: ArcSwap::from_pointee(snapshot),
            load: ArcSwap::from_pointee(LoadInfo {
                hash: source.hash,
                at: SystemTime::now(),
            }),
            started: Instant::now(),
            concurrency: workers.len(),
            workers,
            health_failed: AtomicBool::new(false),
            draining: AtomicBool::new(false),
            shutdown,
            active_connections: Arc::new(AtomicUsize::new(0)),
            sinks: Sinks::default(),
            running: Mutex::new(HashMap::new()),
            reload_lock: tokio::sync::Mutex::new(()),
            reload_ok: reload.with_label_values(&["ok"]),
            reload_failed: reload.with_label_values(&["failed"]),
            stats,
            services,
            log_level,
            log_filter: Mutex::new(String::new()),
            exit: tokio::sync::Notify::new(),
            drain_cut: Arc::new(AtomicBool::new(false)),
            drain_deadline: Mutex::new(None),
            drained: AtomicBool::new(false),
            admin_local: Mutex::new(None),
            takeover: AtomicBool::new(false),
            xds_dynamic: ArcSwap::from_pointee(Default::default()),
            source: ArcSwap::from_pointee(source),
        })
    }

    fn runtime_for(&self, l: &Arc<Listener>) -> Runtime {
        let log = l.access_log.as_ref().and_then(|cfg| match self.sinks.get(cfg, &l.name, &self.stats) {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::error!(listener = %l.name, path = %cfg.path, error = %e, "cannot open access log");
                None
            }
        });
        Runtime::new(l.clone(), log)
    }

    /// Bind every listener of the current snapshot; nothing is served until all bind.
    pub async fn bind_all(self: &Arc<Self>) -> Result<(), StartError> {
        let snap = self.snapshot.load_full();
        crate::xds::start(self);
        start_clusters(&snap).await;
        let takeover = self.takeover.load(Ordering::SeqCst);
        let mut bound = Vec::new();
        for l in &snap.listeners {
            let socks = self.bind_listener(l, takeover)?;
            bound.push((l.clone(), socks));
        }
        for (l, socks) in bound {
            self.start_listener(&l, socks);
        }
        Ok(())
    }

    /// A listener's sockets, one per worker.
    fn bind_listener(
        &self,
        l: &Listener,
        takeover: bool,
    ) -> Result<Vec<std::net::TcpListener>, StartError> {
        bind_workers(l.address, takeover, self.workers.len()).map_err(|error| StartError::Bind {
            name: l.name.to_string(),
            addr: l.address,
            error,
        })
    }

    /// Run a listener: each worker accepts on its own socket.
    fn start_listener(self: &Arc<Self>, l: &Arc<Listener>, socks: Vec<std::net::TcpListener>) {
        let local = socks
            .first()
            .and_then(|s| s.local_addr().ok())
            .unwrap_or(l.address);
        let slot = Arc::new(ArcSwap::from_pointee(self.runtime_for(l)));
        let (stop, stop_rx) = watch::channel(false);
        tracing::info!(listener = %l.name, address = %local, protocol = ?l.protocol, workers = socks.len(), "listening");
        for (sock, worker) in socks.into_iter().zip(&self.workers) {
            let me = self.clone();
            let (slot, stop_rx) = (slot.clone(), stop_rx.clone());
            worker.spawn(async move {
                // Registered with this worker's I/O driver: created on it.
                match TcpListener::from_std(sock) {
                    Ok(sock) => me.accept_loop(sock, slot, stop_rx).await,
                    Err(e) => tracing::error!(address = %local, error = %e, "cannot accept"),
                }
            });
        }
        let mut running = self.running.lock().unwrap_or_else(|p| p.into_inner());
        running.insert(
            l.name.to_string(),
            RunningListener {
                slot,
                address: l.address,
                protocol: l.protocol,
                local,
                stop,
            },
        );
    }

    /// Every running listener: (config, address actually bound), by name.
    pub fn running_listeners(&self) -> Vec<(Arc<Listener>, SocketAddr)> {
        let running = self.running.lock().unwrap_or_else(|p| p.into_inner());
        let mut v: Vec<_> = running
            .values()
            .map(|r| (r.slot.load().listener.clone(), r.local))
            .collect();
        v.sort_by(|a, b| a.0.name.cmp(&b.0.name));
        v
    }

    /// Addresses actually bound, by listener name.
    pub fn bound_addresses(&self) -> Vec<(String, SocketAddr)> {
        let running = self.running.lock().unwrap_or_else(|p| p.into_inner());
        let mut v: Vec<_> = running.iter().map(|(n, r)| (n.clone(), r.local)).collect();
        v.sort();
        v
    }

    async fn accept_loop(
        self: Arc<Self>,
        sock: TcpListener,
        slot: Arc<ArcSwap<Runtime>>,
        mut stop: watch::Receiver<bool>,
    ) {
        let mut shutdown = self.shutdown.subscribe();
        loop {
            let accepted = tokio::select! {
                r = sock.accept() => r,
                _ = shutdown.changed() => {
                    self.accept_backlog(sock, &slot);
                    break;
                }
                _ = stop.changed() => {
                    self.accept_backlog(sock, &slot);
                    break;
                }
            };
            let (stream, remote) = match accepted {
                Ok(x) => x,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            let guard = self.open_guard(&slot);
            let drain = self.shutdown.subscribe();
            let drain_timeout = self.snapshot.load().drain_timeout;
            let slot = slot.clone();
            tokio::spawn(serve_accepted(
                stream,
                remote,
                slot,
                drain,
                drain_timeout,
                guard,
                self.drain_cut.clone(),
            ));
        }
        tracing::info!("listener stopped accepting");
    }

    /// Before a listening socket closes: accept what the kernel already queued on it
    /// (closing would reset those connections; with SO_REUSEPORT during a hot
    /// restart, new connections go to the new process's socket once this one is
    /// closed). Synchronous from the last accept to the close, so the window in
    /// which a connection can still land here is as short as possible.
    fn accept_backlog(&self, sock: TcpListener, slot: &Arc<ArcSwap<Runtime>>) {
        let Ok(std_sock) = sock.into_std() else {
            return;
        };
        let mut n = 0usize;
        while let Ok((s, remote)) = std_sock.accept() {
            if s.set_nonblocking(true).is_err() {
                continue;
            }
            let Ok(stream) = tokio::net::TcpStream::from_std(s) else {
                continue;
            };
            n += 1;
            let _ = stream.set_nodelay(true);
            let guard = self.open_guard(slot);
            let drain_timeout = self.snapshot.load().drain_timeout;
            let slot = slot.clone();
            // Drained like any connection (a young one gets a short grace first).
            let rx = self.shutdown.subscribe();
            tokio::spawn(serve_accepted(
                stream,
                remote,
                slot,
                rx,
                drain_timeout,
                guard,
                self.drain_cut.clone(),
            ));
        }
        drop(std_sock);
        if n > 0 {
            tracing::info!(
                connections = n,
                "accepted queued connections before closing the listener"
            );
        }
    }

    /// Re-read the config file; on success swap it in (new listeners bind, removed
    /// ones stop accepting and drain, changed ones serve new requests from the new
    /// snapshot). On failure the running config stays.
    pub async fn reload(self: &Arc<Self>) -> Result<(), StartError> {
        let _guard = self.reload_lock.lock().await;
        let result = match self.load_new() {
            Ok((snap, source)) => {
                start_clusters(&snap).await;
                let load = LoadInfo {
                    hash: source.hash,
                    at: SystemTime::now(),
                };
                self.apply(snap, Some(load))
                    .map(|()| self.source.store(Arc::new(source)))
            }
            Err(e) => Err(e),
        };
        match &result {
            Ok(()) => {
                self.reload_ok.inc();
                tracing::info!(config = %self.config_path, "config reloaded");
            }
            Err(StartError::Config(diags)) => {
                self.reload_failed.inc();
                for d in diags {
                    tracing::error!(error = %d, "config reload rejected");
                }
            }
            Err(e) => {
                self.reload_failed.inc();
                tracing::error!(error = %e, "config reload failed");
            }
        }
        result
    }

    /// Read, validate and compile the config file with the accepted xDS resources;
    /// unchanged clusters are reused.
    fn load_new(&self) -> Result<(Snapshot, crate::config::Source), StartError> {
        let dynamic = self.xds_dynamic.load_full();
        let old = self.snapshot.load_full();
        crate::config::load_file_source(
            &self.config_path,
            &self.stats,
            &self.services,
            true,
            Some(&old.clusters),
            &|cfg, map| dynamic.merge(cfg, map),
        )
        .map_err(StartError::Config)
    }

    /// Compile xDS resources with the config the running snapshot came from (not the
    /// file on disk, which may have been edited and not applied); unchanged clusters
    /// are reused.
    fn compile_dynamic(
        &self,
        dynamic: &crate::xds::dynamic::Dynamic,
    ) -> Result<Snapshot, Vec<Diagnostic>> {
        let old = self.snapshot.load_full();
        crate::config::compile_source(
            &self.source.load(),
            &self.stats,
            &self.services,
            true,
            Some(&old.clusters),
            &|cfg, map| dynamic.merge(cfg, map),
        )
    }

    /// The clusters and listeners accepted over xDS.
    pub fn xds_dynamic(&self) -> Arc<crate::xds::dynamic::Dynamic> {
        self.xds_dynamic.load_full()
    }

    /// Swap in a new set of xDS clusters and listeners the way a reload swaps a file:
    /// compiled with the running file config (`source`), then new listeners bind,
    /// replaced ones drain. On any problem nothing changes.
    pub async fn apply_dynamic(
        self: &Arc<Self>,
        dynamic: crate::xds::dynamic::Dynamic,
    ) -> Result<(), Vec<Diagnostic>> {
        let _guard = self.reload_lock.lock().await;
        let snap = self.compile_dynamic(&dynamic)?;
        start_clusters(&snap).await;
        self.apply(snap, None).map_err(|e| {
            vec![Diagnostic {
                file: self.config_path.clone(),
                line: 0,
                col: 0,
                message: e.to_string(),
            }]
        })?;
        self.xds_dynamic.store(Arc::new(dynamic));
        Ok(())
    }

    /// Swap in a loaded snapshot: bind new listeners (all or nothing), stop removed
    /// ones, point running ones at the new config. `load`: a new file config was
    /// read (None: an xDS update on the running one).
    fn apply(self: &Arc<Self>, snap: Snapshot, load: Option<LoadInfo>) -> Result<(), StartError> {
        let old = self.snapshot.load_full();
        if snap.admin_address != old.admin_address {
            tracing::warn!("admin.address changes apply on restart only");
        }
        if snap.health_address != old.health_address {
            tracing::warn!("health_listener changes apply on restart only");
        }
        // Bind new listeners first: if one fails, nothing changes.
        let mut to_bind = Vec::new();
        let own: std::collections::HashSet<SocketAddr>;
        {
            let running = self.running.lock().unwrap_or_else(|p| p.into_inner());
            own = running.values().map(|r| r.address).collect();
            for l in &snap.listeners {
                match running.get(&*l.name) {
                    Some(r) if r.address == l.address && r.protocol == l.protocol => {}
                    _ => to_bind.push(l.clone()),
                }
            }
        }
        let mut bound = Vec::new();
        for l in to_bind {
            // A listener whose address changed keeps its old socket until the new
            // one is bound; same address + different protocol binds beside the old
            // socket (SO_REUSEPORT), which then stops.
            let socks = self.bind_listener(&l, own.contains(&l.address))?;
            bound.push((l, socks));
        }
        let new_names: std::collections::HashSet<&str> =
            snap.listeners.iter().map(|l| &*l.name).collect();
        {
            let mut running = self.running.lock().unwrap_or_else(|p| p.into_inner());
            // Removed or replaced listeners stop accepting; their connections drain.
            let replaced: Vec<String> = bound.iter().map(|(l, _)| l.name.to_string()).collect();
            running.retain(|name, r| {
                let keep = new_names.contains(name.as_str()) && !replaced.contains(name);
                if !keep {
                    let _ = r.stop.send(true);
                }
                keep
            });
            for l in &snap.listeners {
                if let Some(r) = running.get(&*l.name) {
                    r.slot.store(Arc::new(self.runtime_for(l)));
                }
            }
        }
        for (l, socks) in bound {
            self.start_listener(&l, socks);
        }
        self.snapshot.store(Arc::new(snap));
        if let Some(load) = load {
            self.load.store(Arc::new(load));
        }
        Ok(())
    }

    /// Count a just-accepted connection as open (stats and drain) until the
    /// returned guard is dropped.
    fn open_guard(&self, slot: &Arc<ArcSwap<Runtime>>) -> OpenGuard {
        let stats = &slot.load().listener.stats;
        stats.cx_total.inc();
        stats.cx_active.inc();
        let active = self.active_connections.clone();
        active.fetch_add(1, Ordering::SeqCst);
        OpenGuard {
            cx_active: stats.cx_active.clone(),
            active,
        }
    }

    /// Stop accepting, let in-flight requests finish (up to the drain timeout).
    /// A second call (SIGTERM after `POST /drain_listeners`) waits for the drain
    /// already under way, to the same deadline.
    pub async fn drain(&self) {
        let deadline = {
            let mut d = self
                .drain_deadline
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            *d.get_or_insert_with(|| {
                let timeout = self.snapshot.load().drain_timeout;
                tracing::info!(timeout = ?timeout, "draining");
                self.draining.store(true, Ordering::SeqCst);
                let _ = self.shutdown.send(true);
                Instant::now() + timeout
            })
        };
        while self.active_connections.load(Ordering::SeqCst) > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let left = self.active_connections.load(Ordering::SeqCst);
        if left > 0 {
            if !self.drain_cut.swap(true, Ordering::SeqCst) {
                tracing::warn!(
                    connections = left,
                    "drain timeout; closing remaining connections"
                );
            }
        } else if !self.drained.swap(true, Ordering::SeqCst) {
            tracing::info!("drained");
        }
    }

    /// Ask `attache run` to drain and exit 0 (`POST /quitquitquit`).
    pub fn request_exit(&self) {
        self.exit.notify_one();
    }

    /// Reopen every access-log file (SIGUSR1, `POST /reopen_logs`); blocking.
    pub fn reopen_logs(&self) -> Vec<(String, Result<(), String>)> {
        let r = self.sinks.reopen();
        for (path, result) in &r {
            if let Err(e) = result {
                tracing::error!(path = %path, error = %e, "access log reopen failed; still writing to the old file");
            }
        }
        r
    }

    /// Wait until every queued access-log line is written; blocking (at exit).
    pub fn flush_logs(&self) {
        self.sinks.flush();
    }

    pub fn ready(&self) -> bool {
        !self.draining.load(Ordering::SeqCst) && !self.health_failed.load(Ordering::SeqCst)
    }

    pub fn config_hash(&self) -> u64 {
        self.load.load().hash
    }
}

/// An accepted connection counted as open: in `attache_downstream_cx_active` and for
/// the drain, which waits for these. Dropped with the connection's context, so an
/// upgrade tunnel that outlives the HTTP exchange keeps its connection counted.
pub struct OpenGuard {
    cx_active: prometheus::IntGauge,
    active: Arc<AtomicUsize>,
}

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.cx_active.dec();
        self.active.fetch_sub(1, Ordering::SeqCst);
    }
}

/// One accepted connection: the PROXY protocol header when the listener reads one,
/// the TLS handshake when it terminates TLS, then the listener's protocol.
async fn serve_accepted(
    mut stream: tokio::net::TcpStream,
    mut remote: SocketAddr,
    slot: Arc<ArcSwap<Runtime>>,
    drain: watch::Receiver<bool>,
    drain_timeout: Duration,
    guard: OpenGuard,
    drain_cut: Arc<AtomicBool>,
) {
    let listener = slot.load().listener.clone();
    let mut local = stream.local_addr().unwrap_or(listener.address);
    if let Some(pp) = &listener.proxy_protocol {
        match pp.accept(&mut stream, remote, &listener.name).await {
            None => return,
            Some(crate::proxy_protocol::Header::Proxied {
                source,
                destination,
            }) => {
                remote = source;
                local = destination;
            }
            Some(crate::proxy_protocol::Header::Local) => {}
        }
    }
    // Boxed: passed down by value, the facts would take their size in every
    // layer of the connection's future.
    let mut conn = Box::new(ConnCtx::new(slot, remote));
    conn.open = Some(guard);
    conn.drain_cut = drain_cut;
    // One `serve_io` for plaintext and TLS (the stream is either): a TLS
    // connection's task holds one copy of the serving state, not a second, boxed
    // one beside the unused plaintext one. The handshake is boxed: its state
    // (rustls's connection, the timeout) and result are freed once it is done.
    let io = match &listener.tls {
        None => Either::Left(stream),
        Some(tls) => match Box::pin(handshake(stream, &mut conn, tls, &listener.name)).await {
            Some(s) => Either::Right(s),
            None => return,
        },
    };
    serve_io(io, conn, &listener, local, drain, drain_timeout).await
}

/// The TLS handshake; the peer's facts go onto `conn`.
async fn handshake(
    stream: tokio::net::TcpStream,
    conn: &mut ConnCtx,
    tls: &crate::tls::ServerTls,
    listener: &str,
) -> Option<Box<crate::tls::ServerStream<tokio::net::TcpStream>>> {
    match tls.accept(stream).await {
        Ok((s, peer)) => {
            adopt_peer(conn, peer, tls);
            // Boxed: the stream (rustls's state is inline in it) is passed by value
            // down the layers of the connection's future; each would keep its size.
            Some(Box::new(s))
        }
        Err(e) => {
            tracing::debug!(listener, remote = %conn.remote, error = %e, "tls handshake failed");
            None
        }
    }
}

/// What the handshake told about the peer, onto the connection's facts.
fn adopt_peer(conn: &mut ConnCtx, peer: crate::tls::PeerInfo, tls: &crate::tls::ServerTls) {
    conn.tls = true;
    conn.tls_version = peer.version;
    conn.tls_cipher = peer.cipher;
    conn.sni = peer.sni.as_deref().map(Box::from);
    conn.peer_sans = peer.sans().map(str::to_string).collect();
    conn.xfcc = tls.forward_client_cert();
    if peer.has_client_cert {
        conn.peer = Some(peer);
    }
}

async fn serve_io<IO>(
    io: IO,
    conn: Box<ConnCtx>,
    listener: &Arc<Listener>,
    local: SocketAddr,
    drain: watch::Receiver<bool>,
    drain_timeout: Duration,
) where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    match listener.protocol {
        ListenerProtocol::Http => {
            crate::http::serve_connection(io, Arc::from(conn), drain, drain_timeout).await
        }
        ListenerProtocol::Tcp => {
            let Some(tcp) = listener.tcp.as_ref() else {
                return;
            };
            if let Some(rbac) = &listener.rbac {
                let rq = crate::rbac::Request::Tcp {
                    destination_port: local.port(),
                };
                if rbac.check(&conn.rbac_peer(), &rq, &listener.name).deny() {
                    // Never connected upstream; dropping `io` closes the connection.
                    return;
                }
            }
            let cluster = tcp.cluster.clone();
            // `hash_on: source_ip` (the PROXY protocol's address when there is one).
            let hash = cluster.lb.request_hash(
                &http::HeaderMap::new(),
                conn.remote_ip.to_str().unwrap_or(""),
            );
            let mut last = None;
            let outcome = Box::pin(crate::tcp::proxy_connection(
                io,
                |_attempt| crate::tcp::connect(&cluster, hash, &mut last),
                tcp.settings,
                &tcp.counters,
            ))
            .await;
            tracing::debug!(listener = %listener.name, remote = %conn.remote, ?outcome, "tcp connection closed");
        }
        ListenerProtocol::Thrift => {
            if let Some(ctx) = listener.thrift.clone() {
                let who = conn.rbac_peer();
                let serve =
                    crate::thrift::serve_connection_until(io, conn.remote, who, ctx, Some(drain));
                Box::pin(serve).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `--watch-config` applies content only once two polls in a row saw it: a
    /// file caught half written (the next poll sees more) is never applied.
    #[test]
    fn watched_config_applies_only_settled_content() {
        let mut w = Settle::new(1);
        assert!(!w.observe(1, 1), "unchanged");
        assert!(!w.observe(2, 1), "first sighting of a change waits");
        assert!(!w.observe(3, 1), "still being written: waits again");
        assert!(w.observe(3, 1), "the same content twice is applied");
        // The reload failed (running stays 1): not retried until the file changes.
        assert!(!w.observe(3, 1));
        assert!(!w.observe(3, 1));
        assert!(!w.observe(4, 1));
        assert!(w.observe(4, 1), "new settled content is tried");
        // Reloaded by SIGHUP to what the file holds: nothing to do.
        assert!(!w.observe(5, 5));
        assert!(!w.observe(5, 5));
    }

    /// An idle connection's memory is mostly its task, the future of
    /// `serve_accepted`. What a request in flight, hyper, a TLS handshake, TCP
    /// proxying or Thrift need is boxed when used, so the task stays small. A TLS
    /// connection has the same task: it serves its boxed TLS stream through the
    /// same `serve_io` future.
    #[tokio::test]
    async fn the_connection_task_is_small() {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = l.local_addr().expect("local address");
        let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let slot = Arc::new(ArcSwap::from_pointee(crate::http::tests::runtime("")));
        let guard = OpenGuard {
            cx_active: slot.load().listener.stats.cx_active.clone(),
            active: Default::default(),
        };
        let (_tx, drain) = watch::channel(false);
        let task = serve_accepted(
            stream,
            addr,
            slot,
            drain,
            Duration::from_secs(1),
            guard,
            Default::default(),
        );
        let size = std::mem::size_of_val(&task);
        // Debug-build sizes (release ones are smaller); it was 11.7 KiB with the
        // request, the response writer and the TLS branch inline.
        // 2,304 while the response buffer lived in the task, 2,280 since it comes
        // from the worker's spares while a response is written, 2,624 after the
        // codec took every HTTP/1 request: in `h1::serve` the request head and the
        // response were borrowed (a local that was ever borrowed keeps its slot
        // across every later await, moved out or not), and the `100 Continue`
        // write sat inline beside them. Now the head is dispatched in a function
        // of its own, the response is only moved, and the rare writes (`100
        // Continue`, the closing shutdown and linger) are boxed: 1,536.
        assert!(size <= 1536, "a connection's task is {size} bytes");
    }
}
