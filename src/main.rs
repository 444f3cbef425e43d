//! The `attache` command: parse the CLI, set up logging, load the config, run.

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use attache::config::{self, Diagnostic};
use attache::server::{Server, StartError};
use attache::stats::Stats;
use attache_filters::Services;
use clap::{Parser, Subcommand, ValueEnum};
use tracing_subscriber::prelude::*;
use tracing_subscriber::{reload, EnvFilter};

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
            println!("{}", serde_json::json!({ "ok": false, "errors": v }));
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
            clap_complete::generate(shell, &mut cmd, "attache", &mut std::io::stdout());
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
            let filter = EnvFilter::try_new(&level).unwrap_or_else(|_| EnvFilter::new("info"));
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
                // A bare word would be read as a target name and silence everything.
                const LEVELS: &[&str] = &["trace", "debug", "info", "warn", "error", "off"];
                if !l.contains('=') && !LEVELS.contains(&l) {
                    return Err(format!("invalid level `{l}`; use trace, debug, info, warn, error, off or target=level directives"));
                }
                let f = EnvFilter::try_new(l).map_err(|e| format!("invalid level `{l}`: {e}"))?;
                handle.reload(f).map_err(|e| e.to_string())
            });

            let threads = concurrency
                .filter(|n| *n > 0)
                .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
            // One worker: a current-thread runtime, no work-stealing or cross-thread
            // wake-ups. More: the multi-threaded scheduler.
            let mut builder = if threads == 1 {
                tokio::runtime::Builder::new_current_thread()
            } else {
                let mut b = tokio::runtime::Builder::new_multi_thread();
                b.worker_threads(threads);
                b
            };
            let rt = match builder.thread_name("attache-worker").enable_all().build() {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("attache: cannot start the runtime: {e}");
                    return ExitCode::from(70);
                }
            };
            let opts = RunOpts {
                watch_config,
                hot_restart_from,
            };
            match rt.block_on(run(path, threads, ready_file, setter, opts)) {
                Ok(()) => ExitCode::SUCCESS,
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

/// Keep the timer wheel's next deadline near. tokio wakes its driver (an eventfd
/// write, then an extra `epoll_wait` round) whenever a newly registered timer expires
/// before the driver's planned wake-up. On an otherwise empty wheel that is every
/// request's route timeout: two syscalls per request at moderate load (seen with
/// strace at a fixed 5k req/s). With this tick pending, timers of 250 ms or more
/// never become the earliest deadline; it costs four wake-ups a second when idle.
async fn timer_heartbeat() {
    let mut tick = tokio::time::interval(std::time::Duration::from_millis(250));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tick.tick().await;
    }
}

struct RunOpts {
    watch_config: bool,
    hot_restart_from: Option<String>,
}

async fn run(
    path: String,
    threads: usize,
    ready_file: Option<String>,
    setter: attache::server::LogLevelSetter,
    opts: RunOpts,
) -> anyhow::Result<()> {
    let stats = Arc::new(Stats::new());
    let services = Arc::new(Services::default());
    let (snap, hash) =
        config::load_file(&path, &stats, &services, true).map_err(StartError::Config)?;
    let admin_addr = snap.admin_address;
    let admin_token = snap.admin_token.clone();
    let drain_timeout = snap.drain_timeout;
    let server = Server::new(path, snap, hash, stats, services, threads, setter);
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
    let admin = match opts.hot_restart_from {
        // The old process frees the admin address when it exits.
        Some(_) => {
            attache::server::hot_restart::bind_admin_when_free(
                admin_addr,
                drain_timeout + std::time::Duration::from_secs(10),
            )
            .await
        }
        None => tokio::net::TcpListener::bind(admin_addr).await,
    }
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

    if let Some(rf) = ready_file {
        let listeners: serde_json::Map<String, serde_json::Value> = server
            .bound_addresses()
            .into_iter()
            .map(|(n, a)| (n, serde_json::Value::from(a.to_string())))
            .collect();
        let body = serde_json::json!({ "admin": admin_local.to_string(), "listeners": listeners, "pid": std::process::id() });
        let tmp = format!("{rf}.tmp");
        std::fs::write(&tmp, body.to_string()).with_context(|| format!("writing {tmp}"))?;
        std::fs::rename(&tmp, &rf).with_context(|| format!("writing {rf}"))?;
    }
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        workers = threads,
        "attache serving"
    );
    tokio::spawn(timer_heartbeat());

    if opts.watch_config {
        tokio::spawn(attache::server::watch_config(server.clone()));
    }

    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).context("SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("SIGINT handler")?;
    let mut hup = signal(SignalKind::hangup()).context("SIGHUP handler")?;
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = hup.recv() => {
                let _ = server.reload().await;
            }
        }
    }
    server.drain().await;
    Ok(())
}
