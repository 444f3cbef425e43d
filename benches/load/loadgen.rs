//! A small open-loop, fixed-rate HTTP/1.1 load generator for the latency run of
//! `benches/load/run.sh` (wrk2 is not packaged in Debian, and h2load's `--rate`
//! paces connections, not requests).
//!
//! `--connections` keep-alive connections each own every C-th slot of one global
//! schedule (`t0 + i / rate`), so the offered load is `--rate` requests per second
//! whatever the server does. Latency is corrected for coordinated omission the way
//! wrk2 does it: when a request could not be sent on time because the previous one
//! on its connection was still in flight, it is timed from its scheduled start;
//! when it was late only because the timer woke late, from when it was sent.
//!
//! Prints one line: `requests=N errors=N rps=R p50_us=.. p90_us=.. p99_us=..
//! p999_us=.. max_us=..`.
//!
//! Run: `cargo run --release --example loadgen -- --url http://127.0.0.1:8080/
//! --rate 5000 --duration 10 --connections 32`.

use std::time::Duration;

use anyhow::{bail, Context, Result};
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::time::Instant;

struct Args {
    addr: String,
    host: String,
    path: String,
    rate: f64,
    duration: Duration,
    connections: usize,
}

fn parse_args() -> Result<Args> {
    let mut url = None;
    let mut rate = 1000.0;
    let mut duration = 10.0;
    let mut connections = 32;
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut val = || it.next().with_context(|| format!("{a} needs a value"));
        match a.as_str() {
            "--url" => url = Some(val()?),
            "--rate" => rate = val()?.parse().context("--rate")?,
            "--duration" => duration = val()?.parse().context("--duration (seconds)")?,
            "--connections" => connections = val()?.parse().context("--connections")?,
            other => bail!("unknown argument {other}"),
        }
    }
    let url = url.context("--url is required")?;
    let rest = url
        .strip_prefix("http://")
        .context("only http:// URLs are supported")?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    if rate <= 0.0 || duration <= 0.0 || connections == 0 {
        bail!("--rate, --duration and --connections must be positive");
    }
    Ok(Args {
        addr: authority.to_string(),
        host: authority.to_string(),
        path: path.to_string(),
        rate,
        duration: Duration::from_secs_f64(duration),
        connections,
    })
}

#[derive(Default)]
struct Tally {
    latencies_us: Vec<u64>,
    errors: u64,
}

type Sender = hyper::client::conn::http1::SendRequest<Empty<Bytes>>;

async fn connect(addr: &str) -> Result<Sender> {
    let stream = TcpStream::connect(addr)
        .await
        .with_context(|| format!("connecting to {addr}"))?;
    stream.set_nodelay(true)?;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

/// One connection's share of the schedule: slots `k, k + C, k + 2C, ...`.
async fn worker(k: usize, args: &Args, t0: Instant) -> Tally {
    let mut tally = Tally::default();
    let interval = Duration::from_secs_f64(1.0 / args.rate);
    let end = t0 + args.duration;
    let mut sender = tokio::time::timeout(Duration::from_secs(2), connect(&args.addr))
        .await
        .ok()
        .and_then(Result::ok);
    let mut prev_done = t0;
    let mut slot = k as u32;
    loop {
        let scheduled = t0 + interval * slot;
        if scheduled >= end {
            break;
        }
        tokio::time::sleep_until(scheduled).await;
        let sent = Instant::now();
        // Late because the previous response was slow: the server's fault, so time
        // from the schedule. Late because the timer is coarse: time from the send.
        let start = if prev_done > scheduled {
            scheduled
        } else {
            sent
        };
        let ok = one_request(&mut sender, args).await;
        let done = Instant::now();
        prev_done = done;
        if ok {
            tally
                .latencies_us
                .push(done.duration_since(start).as_micros() as u64);
        } else {
            tally.errors += 1;
            sender = None;
        }
        slot += args.connections as u32;
    }
    tally
}

async fn one_request(sender: &mut Option<Sender>, args: &Args) -> bool {
    if sender.is_none() {
        match tokio::time::timeout(Duration::from_secs(2), connect(&args.addr)).await {
            Ok(Ok(s)) => *sender = Some(s),
            _ => return false,
        }
    }
    let Some(s) = sender.as_mut() else {
        return false;
    };
    let req = match hyper::Request::get(args.path.as_str())
        .header(hyper::header::HOST, args.host.as_str())
        .body(Empty::<Bytes>::new())
    {
        Ok(r) => r,
        Err(_) => return false,
    };
    let fut = async {
        if s.ready().await.is_err() {
            return false;
        }
        let Ok(rsp) = s.send_request(req).await else {
            return false;
        };
        let ok = rsp.status().is_success();
        rsp.into_body().collect().await.is_ok() && ok
    };
    tokio::time::timeout(Duration::from_secs(5), fut)
        .await
        .unwrap_or(false)
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let idx = ((sorted.len() as f64) * p).ceil() as usize;
    sorted[idx.clamp(1, sorted.len()) - 1]
}

fn main() -> Result<()> {
    let args = parse_args()?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (tallies, elapsed) = rt.block_on(async {
        // Workers connect before their first slot, so setup is not in the figures.
        let t0 = Instant::now() + Duration::from_millis(200);
        let args = &args;
        let tasks = (0..args.connections).map(|k| worker(k, args, t0));
        let tallies = futures_util::future::join_all(tasks).await;
        (tallies, t0.elapsed())
    });
    let mut all: Vec<u64> = Vec::new();
    let mut errors = 0;
    for t in tallies {
        all.extend(t.latencies_us);
        errors += t.errors;
    }
    all.sort_unstable();
    println!(
        "requests={} errors={} rps={:.1} p50_us={} p90_us={} p99_us={} p999_us={} max_us={}",
        all.len(),
        errors,
        all.len() as f64 / elapsed.as_secs_f64(),
        percentile(&all, 0.50),
        percentile(&all, 0.90),
        percentile(&all, 0.99),
        percentile(&all, 0.999),
        all.last().copied().unwrap_or(0),
    );
    Ok(())
}
