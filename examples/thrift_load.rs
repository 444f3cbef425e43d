//! A small Thrift load generator: N connections, each a thread calling
//! `getUser(id)` back to back with the Apache `thrift` crate, for a fixed time or a
//! number of calls per connection, whichever ends first. Every reply is checked
//! against its request. Prints one JSON line: calls/s, latency percentiles, errors.
//!
//! ```text
//! cargo run --release --example thrift_load -- --addr 127.0.0.1:9090 \
//!     --connections 32 --seconds 10 [--calls 1000000] [--protocol binary] [--transport framed]
//! ```

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::Context;
use attache_testkit::thrift_peer::{Client, Protocol, Transport};

struct Args {
    addr: SocketAddr,
    connections: usize,
    seconds: f64,
    calls: u64,
    protocol: Protocol,
    transport: Transport,
}

fn parse() -> anyhow::Result<Args> {
    let mut a = Args {
        addr: "127.0.0.1:9090".parse()?,
        connections: 16,
        seconds: 10.0,
        calls: u64::MAX,
        protocol: Protocol::Binary,
        transport: Transport::Framed,
    };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let v = it.next().with_context(|| format!("{k} needs a value"))?;
        match k.as_str() {
            "--addr" => a.addr = v.parse().context("--addr")?,
            "--connections" => a.connections = v.parse().context("--connections")?,
            "--seconds" => a.seconds = v.parse().context("--seconds")?,
            "--calls" => a.calls = v.parse().context("--calls")?,
            "--protocol" => {
                a.protocol = match v.as_str() {
                    "binary" => Protocol::Binary,
                    "compact" => Protocol::Compact,
                    _ => anyhow::bail!("--protocol binary|compact"),
                }
            }
            "--transport" => {
                a.transport = match v.as_str() {
                    "framed" => Transport::Framed,
                    "unframed" => Transport::Unframed,
                    _ => anyhow::bail!("--transport framed|unframed"),
                }
            }
            _ => anyhow::bail!("unknown flag {k}"),
        }
    }
    Ok(a)
}

fn main() -> anyhow::Result<()> {
    let args = parse()?;
    let deadline = Instant::now() + Duration::from_secs_f64(args.seconds);
    let started = Instant::now();
    let results: Vec<(Vec<u32>, u64)> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..args.connections)
            .map(|conn| {
                let a = &args;
                scope.spawn(move || {
                    let mut lat_us = Vec::with_capacity(64 * 1024);
                    let mut errors = 0u64;
                    let mut c = Client::connect(a.addr, a.protocol, a.transport, None);
                    let mut n = 0u64;
                    while n < a.calls && Instant::now() < deadline {
                        // Ids from 1e9 up: the test service stalls on 950 and 999 on purpose.
                        let id = (conn as i64 + 1) * 1_000_000_000 + n as i64;
                        let t = Instant::now();
                        match c.get_user(id) {
                            Ok(s) if s == format!("origin:{id}") => {
                                lat_us.push(t.elapsed().as_micros().min(u32::MAX as u128) as u32)
                            }
                            Ok(_) => errors += 1,
                            Err(_) => {
                                errors += 1;
                                c = Client::connect(a.addr, a.protocol, a.transport, None);
                            }
                        }
                        n += 1;
                    }
                    (lat_us, errors)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| (Vec::new(), 1)))
            .collect()
    });
    let elapsed = started.elapsed().as_secs_f64();
    let errors: u64 = results.iter().map(|r| r.1).sum();
    let mut lat: Vec<u32> = results.into_iter().flat_map(|r| r.0).collect();
    lat.sort_unstable();
    let pct = |p: f64| -> u32 {
        if lat.is_empty() {
            return 0;
        }
        let i = ((lat.len() as f64 - 1.0) * p).round() as usize;
        lat[i.min(lat.len() - 1)]
    };
    println!(
        "{{\"addr\":\"{}\",\"connections\":{},\"calls\":{},\"errors\":{},\"seconds\":{:.2},\"calls_per_sec\":{:.0},\"p50_us\":{},\"p99_us\":{},\"p999_us\":{},\"max_us\":{}}}",
        args.addr,
        args.connections,
        lat.len(),
        errors,
        elapsed,
        lat.len() as f64 / elapsed,
        pct(0.50),
        pct(0.99),
        pct(0.999),
        lat.last().copied().unwrap_or(0)
    );
    Ok(())
}
