//! EDS absorption: a scripted ADS server (the tests' one, tests/xds_util) pushes
//! ClusterLoadAssignments of `--endpoints` endpoints to a running attache; each
//! version moves `--churn` percent of the endpoints to new addresses. Measures how
//! many updates per second attache checks, applies and ACKs (push → ACK, one at a
//! time), and its resident memory per endpoint (RSS with the set loaded minus RSS
//! with one endpoint, over the endpoint count).
//!
//! ```text
//! cargo build --release && cargo run --release --example xds_eds -- \
//!     --attache target/release/attache --endpoints 10000 --updates 200 --churn 1
//! ```
//!
//! Prints one line: `endpoints=N updates=N ups=R p50_ms=.. p99_ms=.. max_ms=..
//! rss_base_kib=.. rss_loaded_kib=.. bytes_per_endpoint=..`.

#[path = "../../tests/xds_util/mod.rs"]
mod xds_util;

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use envoy_types::pb::envoy::config::core::v3::HealthStatus;
use xds_util::{cla, ep, Mgmt, EDS};

struct Args {
    attache: String,
    endpoints: usize,
    updates: usize,
    churn: usize,
}

fn args() -> Result<Args> {
    let mut a = Args {
        attache: "target/release/attache".into(),
        endpoints: 10_000,
        updates: 200,
        churn: 1,
    };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let v = it.next().with_context(|| format!("{k} needs a value"))?;
        match k.as_str() {
            "--attache" => a.attache = v,
            "--endpoints" => a.endpoints = v.parse()?,
            "--updates" => a.updates = v.parse()?,
            "--churn" => a.churn = v.parse()?,
            _ => bail!("unknown argument {k}"),
        }
    }
    Ok(a)
}

/// Endpoint `i` of generation `g`: 10.x.y.z:8080, distinct per (i, g).
fn addr(i: usize, g: usize) -> SocketAddr {
    let n = (i + g * 1_000_003) as u32 % (1 << 24);
    SocketAddr::from((Ipv4Addr::from(0x0a00_0000 | n), 8080))
}

fn rss_kib(pid: u32) -> Result<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("VmRSS")
}

/// Push `version` and wait for attache's ACK of it.
async fn push_and_wait(m: &Mgmt, version: &str, eps: Vec<SocketAddr>) -> Result<Duration> {
    let lbs = eps
        .into_iter()
        .map(|a| ep(a, 1, HealthStatus::Healthy))
        .collect();
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

#[tokio::main]
async fn main() -> Result<()> {
    let a = args()?;
    let m = Mgmt::start().await;
    m.push(
        "0",
        vec![cla(
            "bench",
            "z1",
            vec![ep(addr(0, 0), 1, HealthStatus::Healthy)],
        )],
    );
    let dir = tempfile::tempdir()?;
    let cfg = dir.path().join("attache.yaml");
    std::fs::write(
        &cfg,
        format!(
            "admin: {{ address: 127.0.0.1:0 }}\nclusters:\n  - name: xds\n    protocol: http2\n    endpoints: [\"{}\"]\n  - name: bench\n    max_endpoints: {}\n    discovery: {{ eds: {{}} }}\nxds: {{ cluster: xds, node: {{ id: bench }} }}\n",
            m.addr,
            a.endpoints.max(1),
        ),
    )?;
    let mut child = std::process::Command::new(&a.attache)
        .args(["run", "--config"])
        .arg(&cfg)
        .env("ATTACHE_LOG", "warn")
        .spawn()
        .with_context(|| format!("starting {}", a.attache))?;
    let pid = child.id();
    push_and_wait(&m, "0", vec![addr(0, 0)]).await.ok();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let base = rss_kib(pid)?;
    let mut gen = vec![0usize; a.endpoints];
    let all = |gen: &[usize]| {
        gen.iter()
            .enumerate()
            .map(|(i, g)| addr(i, *g))
            .collect::<Vec<_>>()
    };
    push_and_wait(&m, "1", all(&gen)).await?;
    let moved = (a.endpoints * a.churn / 100).max(1);
    let mut lat = Vec::with_capacity(a.updates);
    let t0 = Instant::now();
    for u in 0..a.updates {
        for k in 0..moved {
            let i = (u * moved + k) % a.endpoints;
            gen[i] += 1;
        }
        lat.push(push_and_wait(&m, &(u + 2).to_string(), all(&gen)).await?);
    }
    let wall = t0.elapsed();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let loaded = rss_kib(pid)?;
    let _ = child.kill();
    let _ = child.wait();
    lat.sort();
    let pct =
        |p: f64| lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)].as_secs_f64() * 1e3;
    println!(
        "endpoints={} updates={} ups={:.1} p50_ms={:.2} p99_ms={:.2} max_ms={:.2} rss_base_kib={base} rss_loaded_kib={loaded} bytes_per_endpoint={}",
        a.endpoints,
        a.updates,
        a.updates as f64 / wall.as_secs_f64(),
        pct(0.5),
        pct(0.99),
        pct(1.0),
        (loaded.saturating_sub(base) * 1024) / a.endpoints as u64,
    );
    Ok(())
}
