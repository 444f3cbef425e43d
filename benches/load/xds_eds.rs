//! EDS under traffic: a scripted ADS server (the tests' one, tests/xds_util) pushes
//! ClusterLoadAssignments of `--endpoints` endpoints to a running attache while
//! `--clients` closed-loop HTTP/1.1 clients send requests through it to that cluster.
//! Every endpoint is a distinct loopback address (127.64.0.0/10) on one origin port,
//! served by one origin listening on the wildcard address, so each endpoint really
//! takes traffic and the origin knows which endpoint a request came in on.
//!
//! Phases, with the clients running throughout:
//! 1. warm-up: until every endpoint has been used once (its pooled connection exists);
//! 2. before: `--before` seconds without updates (the baseline);
//! 3. during: `--updates` versions pushed one at a time, each moving `--churn` percent
//!    of the endpoints to new addresses: updates per second attache checks, applies
//!    and ACKs (push → ACK), and the traffic's failures and latency while they stream;
//! 4. moves: `--moves` times, a version in which every endpoint is `UNHEALTHY` except
//!    one new address: the time from the push to the first request arriving there
//!    (push → traffic moved).
//!
//! Resident memory per endpoint: RSS with the set loaded (before any traffic) minus
//! RSS with one endpoint, over the endpoint count; and the same after the updates,
//! when every endpoint also holds a pooled keep-alive upstream connection.
//!
//! ```text
//! CARGO_TARGET_DIR=$PWD/target-perf cargo build --release --bin attache --example xds_eds ...
//! target-perf/release/examples/xds_eds --attache target-perf/release/attache \
//!     --endpoints 10000 --updates 200 --churn 1 --clients 8
//! ```
//! (the full build command is in benches/README.md.)
//!
//! Prints four lines: `absorb` (updates/s, push → ACK percentiles, RSS per endpoint),
//! `traffic before` and `traffic during` (requests, failures, rps, latency
//! p50/p99/max), `push_to_traffic` (percentiles over the moves).

#[path = "../../tests/xds_util/mod.rs"]
mod xds_util;

use std::convert::Infallible;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use envoy_types::pb::envoy::config::core::v3::HealthStatus;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::{TokioExecutor, TokioIo};
use xds_util::{cla, ep, Mgmt, EDS};

struct Args {
    attache: String,
    endpoints: usize,
    updates: usize,
    churn: usize,
    clients: usize,
    before: Duration,
    moves: usize,
}

fn args() -> Result<Args> {
    let mut a = Args {
        attache: "target/release/attache".into(),
        endpoints: 10_000,
        updates: 200,
        churn: 1,
        clients: 8,
        before: Duration::from_secs(3),
        moves: 20,
    };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let v = it.next().with_context(|| format!("{k} needs a value"))?;
        match k.as_str() {
            "--attache" => a.attache = v,
            "--endpoints" => a.endpoints = v.parse()?,
            "--updates" => a.updates = v.parse()?,
            "--churn" => a.churn = v.parse()?,
            "--clients" => a.clients = v.parse()?,
            "--before" => a.before = Duration::from_secs_f64(v.parse()?),
            "--moves" => a.moves = v.parse()?,
            _ => bail!("unknown argument {k}"),
        }
    }
    if a.endpoints == 0 || a.endpoints >= 1 << 22 {
        bail!("--endpoints must be 1..4194303");
    }
    Ok(a)
}

/// Endpoint `i` of generation `g`: a loopback address in 127.64.0.0/10, distinct per
/// (i, g) within a run, on the origin's port.
fn addr(i: usize, g: usize, port: u16) -> SocketAddr {
    let n = (i + g * 1_000_003) as u32 % ((1 << 22) - 1) + 1;
    SocketAddr::from((Ipv4Addr::from(0x7f40_0000 | n), port))
}

/// The new endpoint of move `k` (127.16.0.0/16, outside the churned range).
fn marker(k: usize, port: u16) -> SocketAddr {
    SocketAddr::from((Ipv4Addr::from(0x7f10_0000 | (k as u32 + 1)), port))
}

fn rss_kib(pid: u32) -> Result<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("VmRSS")
}

/// The address a move waits for, and when the first request arrived on it.
type Watch = Arc<Mutex<(Option<IpAddr>, Option<Instant>)>>;

/// The origin of every endpoint: the wildcard address (so any 127.x.y.z reaches it);
/// answers each request with the endpoint address it arrived on. (port, connections
/// accepted so far)
async fn origin(watch: Watch) -> Result<(u16, Arc<AtomicUsize>)> {
    let l = tokio::net::TcpListener::bind("0.0.0.0:0").await?;
    let port = l.local_addr()?.port();
    let conns = Arc::new(AtomicUsize::new(0));
    let accepted = conns.clone();
    tokio::spawn(async move {
        loop {
            let Ok((s, _)) = l.accept().await else {
                continue;
            };
            accepted.fetch_add(1, Ordering::Relaxed);
            let Ok(local) = s.local_addr() else { continue };
            let watch = watch.clone();
            let svc = hyper::service::service_fn(move |_req| {
                let mut w = watch.lock().unwrap_or_else(|p| p.into_inner());
                if w.0 == Some(local.ip()) && w.1.is_none() {
                    w.1 = Some(Instant::now());
                }
                let body = Full::new(Bytes::from(local.ip().to_string()));
                async move { Ok::<_, Infallible>(hyper::Response::new(body)) }
            });
            tokio::spawn(
                hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(s), svc),
            );
        }
    });
    Ok((port, conns))
}

const WARMUP: u8 = 0;
const BEFORE: u8 = 1;
const DURING: u8 = 2;
const MOVES: u8 = 3;

/// One request's outcome: the phase it started in, its latency, success.
type Sample = (u8, Duration, bool);

/// Closed-loop clients until `stop`; each keeps its own keep-alive connection.
fn traffic(
    url: String,
    clients: usize,
    phase: Arc<AtomicU8>,
    stop: Arc<AtomicBool>,
) -> Vec<tokio::task::JoinHandle<Vec<Sample>>> {
    (0..clients)
        .map(|_| {
            let (url, phase, stop) = (url.clone(), phase.clone(), stop.clone());
            tokio::spawn(async move {
                let c: Client<HttpConnector, Full<Bytes>> =
                    Client::builder(TokioExecutor::new()).build_http();
                let uri: hyper::Uri = url.parse().expect("url");
                let mut out = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let p = phase.load(Ordering::Relaxed);
                    let t0 = Instant::now();
                    let ok = match c.get(uri.clone()).await {
                        Ok(r) => {
                            let status = r.status();
                            r.into_body().collect().await.is_ok() && status == 200
                        }
                        Err(_) => false,
                    };
                    out.push((p, t0.elapsed(), ok));
                }
                out
            })
        })
        .collect()
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// `p` (0..=1) of sorted `v`.
fn pct(v: &[Duration], p: f64) -> f64 {
    v.get(((v.len() as f64 * p) as usize).min(v.len().saturating_sub(1)))
        .map_or(f64::NAN, |d| ms(*d))
}

fn report_traffic(name: &str, samples: &[Sample], phase: u8, wall: Duration) {
    let mut lat: Vec<Duration> = samples
        .iter()
        .filter(|s| s.0 == phase)
        .map(|s| s.1)
        .collect();
    let failed = samples.iter().filter(|s| s.0 == phase && !s.2).count();
    lat.sort();
    println!(
        "traffic {name}: requests={} failed={failed} rps={:.0} p50_ms={:.2} p99_ms={:.2} max_ms={:.2}",
        lat.len(),
        lat.len() as f64 / wall.as_secs_f64(),
        pct(&lat, 0.5),
        pct(&lat, 0.99),
        pct(&lat, 1.0),
    );
}

/// Push `version` and wait for attache's ACK of it.
async fn push_and_wait(m: &Mgmt, version: &str, lbs: Vec<LbEndpoint>) -> Result<Duration> {
    let t0 = Instant::now();
    m.push(version, vec![cla("bench", "z1", lbs)]);
    loop {
        let acked = m
            .requests()
            .iter()
            .rev()
            .find(|r| r.type_url == EDS && !r.response_nonce.is_empty())
            .map(|r| (r.version_info.clone(), r.error_detail.clone()));
        match acked {
            Some((v, None)) if v == version => return Ok(t0.elapsed()),
            Some((_, Some(e))) => bail!("NACK: {}", e.message),
            _ => {}
        }
        if t0.elapsed() > Duration::from_secs(60) {
            bail!("no ACK of {version} within 60s");
        }
        tokio::time::sleep(Duration::from_micros(200)).await;
    }
}

use envoy_types::pb::envoy::config::endpoint::v3::LbEndpoint;

fn healthy(eps: impl IntoIterator<Item = SocketAddr>) -> Vec<LbEndpoint> {
    eps.into_iter()
        .map(|a| ep(a, 1, HealthStatus::Healthy))
        .collect()
}

/// Start attache on `cfg`; (child, its `web` listener) once it is ready.
async fn start_attache(bin: &str, dir: &std::path::Path) -> Result<(std::process::Child, String)> {
    let ready = dir.join("ready.json");
    let mut child = std::process::Command::new(bin)
        .args(["run", "--config"])
        .arg(dir.join("attache.yaml"))
        .arg("--ready-file")
        .arg(&ready)
        .env("ATTACHE_LOG", "warn")
        .spawn()
        .with_context(|| format!("starting {bin}"))?;
    let t0 = Instant::now();
    loop {
        if let Some(web) = std::fs::read_to_string(&ready)
            .ok()
            .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
            .and_then(|v| v["listeners"]["web"].as_str().map(str::to_string))
        {
            return Ok((child, web));
        }
        if let Some(status) = child.try_wait()? {
            bail!("attache exited with {status}");
        }
        if t0.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            bail!("attache not ready within 60s");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    let a = args()?;
    let watch: Watch = Arc::default();
    let (port, conns) = origin(watch.clone()).await?;
    let m = Mgmt::start().await;
    m.push("0", vec![cla("bench", "z1", healthy([addr(0, 0, port)]))]);
    let dir = tempfile::tempdir()?;
    std::fs::write(
        dir.path().join("attache.yaml"),
        format!(
            "admin: {{ address: 127.0.0.1:0 }}\nlisteners:\n  - name: web\n    address: 127.0.0.1:0\n    virtual_hosts:\n      - name: all\n        domains: [\"*\"]\n        routes:\n          - match: {{ prefix: / }}\n            route: {{ cluster: bench }}\nclusters:\n  - name: xds\n    protocol: http2\n    endpoints: [\"{}\"]\n  - name: bench\n    max_endpoints: {}\n    discovery: {{ eds: {{}} }}\nxds: {{ cluster: xds, node: {{ id: bench }} }}\n",
            m.addr, a.endpoints,
        ),
    )?;
    let (mut child, web) = start_attache(&a.attache, dir.path()).await?;
    let pid = child.id();
    push_and_wait(&m, "0", healthy([addr(0, 0, port)])).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let base = rss_kib(pid)?;

    let mut gen = vec![0usize; a.endpoints];
    let all = |gen: &[usize]| {
        gen.iter()
            .enumerate()
            .map(|(i, g)| addr(i, *g, port))
            .collect::<Vec<_>>()
    };
    push_and_wait(&m, "1", healthy(all(&gen))).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let set = rss_kib(pid)?;

    // 1. Warm-up: every endpoint used once (round robin), so "before" is steady state.
    let phase = Arc::new(AtomicU8::new(WARMUP));
    let stop = Arc::new(AtomicBool::new(false));
    let clients = traffic(
        format!("http://{web}/"),
        a.clients,
        phase.clone(),
        stop.clone(),
    );
    let t0 = Instant::now();
    while conns.load(Ordering::Relaxed) < a.endpoints && t0.elapsed() < Duration::from_secs(120) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // 2. Before.
    phase.store(BEFORE, Ordering::Relaxed);
    tokio::time::sleep(a.before).await;

    // 3. During: updates streamed one at a time.
    phase.store(DURING, Ordering::Relaxed);
    let moved = (a.endpoints * a.churn / 100).max(1);
    let mut lat = Vec::with_capacity(a.updates);
    let t0 = Instant::now();
    for u in 0..a.updates {
        for k in 0..moved {
            gen[(u * moved + k) % a.endpoints] += 1;
        }
        lat.push(push_and_wait(&m, &(u + 2).to_string(), healthy(all(&gen))).await?);
    }
    let during = t0.elapsed();
    phase.store(MOVES, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let loaded = rss_kib(pid)?;

    // 4. Moves: push → the first request on the one new healthy endpoint.
    let mut moves = Vec::with_capacity(a.moves);
    for k in 0..a.moves {
        let target = marker(k, port);
        *watch.lock().unwrap_or_else(|p| p.into_inner()) = (Some(target.ip()), None);
        let mut lbs: Vec<LbEndpoint> = all(&gen)
            .into_iter()
            .map(|e| ep(e, 1, HealthStatus::Unhealthy))
            .collect();
        lbs.push(ep(target, 1, HealthStatus::Healthy));
        let version = format!("move-{k}");
        let pushed = Instant::now();
        push_and_wait(&m, &version, lbs).await?;
        let arrived = loop {
            if let Some(at) = watch.lock().unwrap_or_else(|p| p.into_inner()).1 {
                break at;
            }
            if pushed.elapsed() > Duration::from_secs(30) {
                bail!("no request reached {target} within 30s of the push");
            }
            tokio::time::sleep(Duration::from_micros(200)).await;
        };
        moves.push(arrived.saturating_duration_since(pushed));
    }

    stop.store(true, Ordering::Relaxed);
    let mut samples = Vec::new();
    for c in clients {
        samples.extend(c.await?);
    }
    let _ = child.kill();
    let _ = child.wait();

    lat.sort();
    moves.sort();
    println!(
        "absorb: endpoints={} updates={} ups={:.1} p50_ms={:.2} p99_ms={:.2} max_ms={:.2} rss_base_kib={base} rss_set_kib={set} rss_pooled_kib={loaded} bytes_per_endpoint={} with_pooled_connection={}",
        a.endpoints,
        a.updates,
        a.updates as f64 / during.as_secs_f64(),
        pct(&lat, 0.5),
        pct(&lat, 0.99),
        pct(&lat, 1.0),
        (set.saturating_sub(base) * 1024) / a.endpoints as u64,
        (loaded.saturating_sub(base) * 1024) / a.endpoints as u64,
    );
    report_traffic("before", &samples, BEFORE, a.before);
    report_traffic("during", &samples, DURING, during);
    println!(
        "push_to_traffic: moves={} p50_ms={:.2} max_ms={:.2}",
        moves.len(),
        pct(&moves, 0.5),
        pct(&moves, 1.0),
    );
    Ok(())
}
