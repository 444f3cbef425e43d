//! The `attache` command: parse the CLI, set up logging, load the config, run.

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use attache::config::{self, Diagnostic};
use attache::server::workers::Workers;
use attache::server::{Server, StartError};
use attache::stats::Stats;
use attache_filters::Services;
use clap::{Parser, Subcommand, ValueEnum};
use tracing_subscriber::prelude::*;
use tracing_subscriber::reload;

// mimalloc: glibc malloc/free was ~17% of per-request instructions (benches/RESULTS.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `attache --version`: the crate version, the commit and the build date (build.rs).
const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("ATTACHE_GIT_COMMIT"),
    ", built ",
    env!("ATTACHE_BUILD_DATE"),
    ")"
);

#[derive(Parser)]
#[command(
    name = "attache",
    version = VERSION,
    about = "An Envoy-style proxy: HTTP/1.1, HTTP/2, TCP and Thrift"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq)]
enum Format {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Cmd {
    /// Serve the config until SIGTERM/SIGINT (drain, then exit 0).
    Run {
        /// The config file (YAML; `attache validate` checks it first).
        #[arg(long, short, value_name = "FILE")]
        config: String,
        /// Worker threads (default: the number of cores).
        #[arg(long)]
        concurrency: Option<usize>,
        /// Write the bound addresses as JSON here once serving.
        #[arg(long)]
        ready_file: Option<String>,
        /// Log filter (tracing EnvFilter syntax), default `info` or $ATTACHE_LOG.
        #[arg(long)]
        log_level: Option<String>,
        /// Log format on stderr.
        #[arg(long, value_enum, default_value = "text")]
        log_format: Format,
        /// This proxy's zone, for zone-aware load balancing (default $ATTACHE_ZONE).
        #[arg(long)]
        zone: Option<String>,
        /// Poll the config file (every second) and reload when its content changes.
        #[arg(long)]
        watch_config: bool,
        /// Hot restart: take over the listeners of the attache whose admin endpoint
        /// is at this address (bind beside it with SO_REUSEPORT, then tell it to
        /// drain and exit).
        #[arg(long, value_name = "ADMIN_ADDR")]
        hot_restart_from: Option<String>,
    },
    /// Check a config file: every error at once as FILE:LINE:COL, plus lints; exit 1
    /// on any error (or warning, with --strict).
    Validate(attache::toolkit::cli::ValidateArgs),
    /// Check which route each request in a tests file takes; exit 1 on any failure.
    TestRoutes(attache::toolkit::cli::TestRoutesArgs),
    /// Show the route, action, filters, timeout and retries for one request.
    Explain(attache::toolkit::cli::ExplainArgs),
    /// Summarize behaviour changes between two configs; exit 1 when they differ.
    Diff(attache::toolkit::cli::DiffArgs),
    /// Render a config template with variables (optionally validating it).
    Render(attache::toolkit::cli::RenderArgs),
    /// Print a shell completion script: `attache completions bash > /etc/bash_completion.d/attache`.
    Completions {
        /// The shell to complete for.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

fn print_diags(diags: &[Diagnostic], format: Format) {
    match format {
        Format::Text => {
            for d in diags {
                eprintln!("{d}");
            }
            eprintln!(
                "{} error{}",
                diags.len(),
                if diags.len() == 1 { "" } else { "s" }
            );
        }
        Format::Json => {
            let v: Vec<_> = diags
                .iter()
                .map(|d| serde_json::json!({"file": d.file, "line": d.line, "column": d.col, "severity": "error", "message": d.message}))
                .collect();
            attache::toolkit::cli::out(format_args!(
                "{}\n",
                serde_json::json!({ "ok": false, "errors": v })
            ));
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Validate(a) => ExitCode::from(attache::toolkit::cli::validate(&a)),
        Cmd::TestRoutes(a) => ExitCode::from(attache::toolkit::cli::test_routes(&a)),
        Cmd::Explain(a) => ExitCode::from(attache::toolkit::cli::explain(&a)),
        Cmd::Diff(a) => ExitCode::from(attache::toolkit::cli::diff(&a)),
        Cmd::Render(a) => ExitCode::from(attache::toolkit::cli::render(&a)),
        Cmd::Completions { shell } => {
            let mut cmd = <Cli as clap::CommandFactory>::command();
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut cmd, "attache", &mut script);
            // Written by us: clap_complete's own writer panics on a closed pipe.
            let script = String::from_utf8_lossy(&script);
            attache::toolkit::cli::out(format_args!("{script}"));
            ExitCode::SUCCESS
        }
        Cmd::Run {
            config: path,
            concurrency,
            ready_file,
            log_level,
            log_format,
            zone,
            watch_config,
            hot_restart_from,
        } => {
            if let Some(z) = zone.or_else(|| std::env::var("ATTACHE_ZONE").ok()) {
                attache::upstream::set_local_zone(&z);
            }
            let level = log_level
                .or_else(|| std::env::var("ATTACHE_LOG").ok())
                .unwrap_or_else(|| "info".to_string());
            let filter = match attache::server::log_filter::parse(&level) {
                Ok(f) => f,
                Err(e) => {
                    eprintln!("attache: --log-level / ATTACHE_LOG: {e}");
                    return ExitCode::from(2);
                }
            };
            let (filter, handle) = reload::Layer::new(filter);
            let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
            let fmt = tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(ansi);
            let registry = tracing_subscriber::registry().with(filter);
            if log_format == Format::Json {
                registry.with(fmt.json()).init();
            } else {
                registry.with(fmt).init();
            }
            let setter: attache::server::LogLevelSetter = Box::new(move |l: &str| {
                let f = attache::server::log_filter::parse(l)?;
                handle.reload(f).map_err(|e| e.to_string())
            });

            let threads = concurrency
                .filter(|n| *n > 0)
                .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
            // Every worker is a current-thread runtime with its own listening
            // sockets and connections (no work stealing); this thread runs worker 0.
            let started = attache::server::workers::runtime().and_then(|rt| {
                // As soon as there is a runtime: from here on, a signal that comes
                // while the config loads and the listeners bind (a logrotate run,
                // `systemctl reload`) waits for startup instead of killing the
                // process by its default action.
                let signals = {
                    let _in = rt.enter();
                    Signals::install()?
                };
                let workers = Workers::start(threads, rt.handle().clone())?;
                Ok((rt, workers, signals))
            });
            let (rt, workers, signals) = match started {
                Ok(x) => x,
                Err(e) => {
                    eprintln!("attache: cannot start the runtime: {e}");
                    return ExitCode::from(70);
                }
            };
            let opts = RunOpts {
                watch_config,
                hot_restart_from,
                log_level: level,
            };
            let handles = workers.handles().to_vec();
            let result = rt.block_on(run(path, handles, ready_file, setter, opts, signals));
            // Dropping the runtimes cancels what the drain deadline left open: those
            // streams are logged (`DT`), then the access logs are flushed.
            workers.stop();
            rt.shutdown_timeout(std::time::Duration::from_secs(1));
            match result {
                Ok(server) => {
                    server.flush_logs();
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    if let Some(StartError::Config(diags)) = e.downcast_ref::<StartError>() {
                        print_diags(diags, Format::Text);
                        eprintln!("attache: refusing to start with an invalid config");
                        return ExitCode::from(64);
                    }
                    eprintln!("attache: {e:#}");
                    ExitCode::from(1)
                }
            }
        }
    }
}

struct RunOpts {
    watch_config: bool,
    hot_restart_from: Option<String>,
    log_level: String,
}

async fn run(
    path: String,
    workers: Vec<tokio::runtime::Handle>,
    ready_file: Option<String>,
    setter: attache::server::LogLevelSetter,
    opts: RunOpts,
    mut signals: Signals,
) -> anyhow::Result<Arc<Server>> {
    let stats = Arc::new(Stats::new());
    let services = Arc::new(Services::default());
    let (snap, source) =
        config::load_file_source(&path, &stats, &services, true, None, &|_, _| Vec::new())
            .map_err(StartError::Config)?;
    let admin_addr = snap.admin_address;
    let health_addr = snap.health_address;
    let admin_token = snap.admin_token.clone();
    let drain_timeout = snap.drain_timeout;
    let threads = workers.len();
    let server = Server::new(path, snap, source, stats, services, workers, setter);
    if let Ok(mut f) = server.log_filter.lock() {
        *f = opts.log_level.clone();
    }
    if opts.hot_restart_from.is_some() {
        server
            .takeover
            .store(true, std::sync::atomic::Ordering::SeqCst);
    }
    server.bind_all().await?;
    if let Some(old) = &opts.hot_restart_from {
        // Our listeners accept now; the old process may stop.
        attache::server::hot_restart::tell_old_to_drain(old, admin_token.as_deref())
            .await
            .with_context(|| format!("hot restart: asking {old} to drain"))?;
    }
    // The old process of a hot restart frees these addresses when it exits.
    let takeover = opts.hot_restart_from.is_some();
    let bind_control = |addr| async move {
        if takeover {
            let limit = drain_timeout + std::time::Duration::from_secs(10);
            attache::server::hot_restart::bind_admin_when_free(addr, limit).await
        } else {
            tokio::net::TcpListener::bind(addr).await
        }
    };
    let admin = bind_control(admin_addr)
        .await
        .map_err(|error| StartError::AdminBind {
            addr: admin_addr,
            error,
        })?;
    let admin_local = admin.local_addr().context("admin address")?;
    if let Ok(mut a) = server.admin_local.lock() {
        *a = Some(admin_local);
    }
    tracing::info!(address = %admin_local, "admin listening");
    tokio::spawn(attache::admin::serve(admin, server.clone()));
    let mut health_local = None;
    if let Some(addr) = health_addr {
        let health = bind_control(addr)
            .await
            .with_context(|| format!("health_listener: cannot bind {addr}"))?;
        let local = health.local_addr().context("health_listener address")?;
        tracing::info!(address = %local, "health listener serving /ready and /live");
        health_local = Some(local.to_string());
        tokio::spawn(attache::admin::ops::serve_health(health, server.clone()));
    }

    if let Some(rf) = ready_file {
        let listeners: serde_json::Map<String, serde_json::Value> = server
            .bound_addresses()
            .into_iter()
            .map(|(n, a)| (n, serde_json::Value::from(a.to_string())))
            .collect();
        let mut body = serde_json::json!({ "admin": admin_local.to_string(), "listeners": listeners, "pid": std::process::id() });
        if let Some(h) = health_local {
            body["health"] = serde_json::Value::from(h);
        }
        let tmp = format!("{rf}.tmp");
        std::fs::write(&tmp, body.to_string()).with_context(|| format!("writing {tmp}"))?;
        std::fs::rename(&tmp, &rf).with_context(|| format!("writing {rf}"))?;
    }
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        workers = threads,
        "attache serving"
    );
    tokio::spawn(attache::server::workers::timer_heartbeat());

    if opts.watch_config {
        tokio::spawn(attache::server::watch_config(server.clone()));
    }

    signals.serve(&server).await;
    tokio::select! {
        _ = server.drain() => {}
        _ = signals.while_draining(&server) => {}
    }
    Ok(server)
}

/// The signals `attache run` handles, installed before anything else so none of
/// them ends the process by its default action.
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    quit: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
    usr1: tokio::signal::unix::Signal,
    usr2: tokio::signal::unix::Signal,
}

impl Signals {
    /// Within a runtime (the signal driver is its).
    fn install() -> std::io::Result<Signals> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(Signals {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
            quit: signal(SignalKind::quit())?,
            hup: signal(SignalKind::hangup())?,
            usr1: signal(SignalKind::user_defined1())?,
            usr2: signal(SignalKind::user_defined2())?,
        })
    }

    /// Serve signals until one asks to stop (or `POST /quitquitquit` does):
    /// TERM, INT and QUIT drain and exit; HUP reloads; USR1 reopens the access
    /// logs; USR2 is ignored (logged), so no signal ends the process without a
    /// drain. Signals that arrived during startup are served now.
    async fn serve(&mut self, server: &Arc<Server>) {
        loop {
            tokio::select! {
                _ = self.term.recv() => tracing::info!(signal = "SIGTERM", "draining, then exiting"),
                _ = self.int.recv() => tracing::info!(signal = "SIGINT", "draining, then exiting"),
                _ = self.quit.recv() => tracing::info!(signal = "SIGQUIT", "draining, then exiting"),
                _ = server.exit.notified() => {}
                _ = self.hup.recv() => {
                    tracing::info!(signal = "SIGHUP", "reloading the config");
                    let _ = server.reload().await;
                    continue;
                }
                _ = self.usr1.recv() => {
                    reopen_logs(server).await;
                    continue;
                }
                _ = self.usr2.recv() => {
                    tracing::info!(signal = "SIGUSR2", "ignored; for a binary upgrade start the new attache with --hot-restart-from");
                    continue;
                }
            }
            return;
        }
    }

    /// While the drain runs (never returns): USR1 still reopens the access logs (a
    /// logrotate run during a long drain); the others are logged and ignored.
    async fn while_draining(&mut self, server: &Arc<Server>) {
        loop {
            let signal = tokio::select! {
                _ = self.usr1.recv() => {
                    reopen_logs(server).await;
                    continue;
                }
                _ = self.term.recv() => "SIGTERM",
                _ = self.int.recv() => "SIGINT",
                _ = self.quit.recv() => "SIGQUIT",
                _ = self.hup.recv() => "SIGHUP",
                _ = self.usr2.recv() => "SIGUSR2",
            };
            tracing::info!(signal, "ignored: already draining (until drain_timeout)");
        }
    }
}

async fn reopen_logs(server: &Arc<Server>) {
    tracing::info!(signal = "SIGUSR1", "reopening access logs");
    let s = server.clone();
    let _ = tokio::task::spawn_blocking(move || s.reopen_logs()).await;
}
