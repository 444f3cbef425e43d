//! gRPC unary load for comparing attache with a direct connection: a tonic echo
//! server and a closed-loop tonic client (prost messages derived by hand, no
//! protoc). CPU per call is measured by the harness around the processes.
//!
//! ```text
//! cargo run --release --example grpc_loadgen -- server --listen 127.0.0.1:50051
//! cargo run --release --example grpc_loadgen -- client --target 127.0.0.1:50051 \
//!     --duration 10 --connections 4 --concurrency 64 --size 128
//! ```
//!
//! The client prints one line: `calls=N errors=N cps=R p50_us=.. p90_us=..
//! p99_us=.. max_us=..`.

use std::convert::Infallible;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use http::uri::PathAndQuery;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::time::Instant;
use tonic::codec::ProstCodec;

const PATH: &str = "/bench.Echo/Unary";

#[derive(Clone, PartialEq, prost::Message)]
struct Payload {
    #[prost(bytes = "vec", tag = "1")]
    data: Vec<u8>,
}

struct Echo;
impl tower_service::Service<tonic::Request<Payload>> for Echo {
    type Response = tonic::Response<Payload>;
    type Error = tonic::Status;
    type Future = std::future::Ready<Result<Self::Response, tonic::Status>>;
    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), tonic::Status>> {
        std::task::Poll::Ready(Ok(()))
    }
    fn call(&mut self, req: tonic::Request<Payload>) -> Self::Future {
        std::future::ready(Ok(tonic::Response::new(req.into_inner())))
    }
}

async fn serve(listen: &str) -> Result<()> {
    let l = tokio::net::TcpListener::bind(listen).await?;
    loop {
        let (s, _) = l.accept().await?;
        s.set_nodelay(true)?;
        tokio::spawn(async move {
            let svc =
                hyper::service::service_fn(|req: http::Request<hyper::body::Incoming>| async {
                    let mut g = tonic::server::Grpc::new(ProstCodec::<Payload, Payload>::default());
                    Ok::<_, Infallible>(g.unary(Echo, req).await)
                });
            let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(s), svc)
                .await;
        });
    }
}

type Client = tonic::client::Grpc<
    hyper_util::client::legacy::Client<
        hyper_util::client::legacy::connect::HttpConnector,
        tonic::body::Body,
    >,
>;

fn client(target: &str) -> Result<Client> {
    let mut http = hyper_util::client::legacy::connect::HttpConnector::new();
    http.set_nodelay(true);
    let c = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build(http);
    let origin: http::Uri = format!("http://{target}").parse()?;
    Ok(tonic::client::Grpc::with_origin(c, origin))
}

/// One caller: calls back to back until `end`; latencies in microseconds.
async fn caller(mut c: Client, size: usize, end: Instant) -> (Vec<u64>, u64) {
    let (mut lat, mut errors) = (Vec::new(), 0);
    let msg = Payload {
        data: vec![7; size],
    };
    while Instant::now() < end {
        let t = Instant::now();
        let ok = async {
            c.ready().await.ok()?;
            let path = PathAndQuery::from_static(PATH);
            let req = tonic::Request::new(msg.clone());
            c.unary(req, path, ProstCodec::<Payload, Payload>::default())
                .await
                .ok()
        };
        match tokio::time::timeout(Duration::from_secs(5), ok).await {
            Ok(Some(_)) => lat.push(t.elapsed().as_micros() as u64),
            _ => errors += 1,
        }
    }
    (lat, errors)
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    let idx = ((sorted.len() as f64) * p).ceil() as usize;
    sorted
        .get(idx.clamp(1, sorted.len().max(1)) - 1)
        .copied()
        .unwrap_or(0)
}

async fn load(args: &[String]) -> Result<()> {
    let (mut target, mut secs, mut conns, mut conc, mut size) =
        (None, 10.0, 4usize, 64usize, 128usize);
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let v = it.next().with_context(|| format!("{a} needs a value"))?;
        match a.as_str() {
            "--target" => target = Some(v.clone()),
            "--duration" => secs = v.parse().context("--duration (seconds)")?,
            "--connections" => conns = v.parse().context("--connections")?,
            "--concurrency" => conc = v.parse().context("--concurrency")?,
            "--size" => size = v.parse().context("--size (bytes)")?,
            other => bail!("unknown argument {other}"),
        }
    }
    let target = target.context("--target host:port is required")?;
    if conns == 0 || conc < conns {
        bail!("--connections must be at least 1 and at most --concurrency");
    }
    // One HTTP/2 connection per client; callers share them round-robin.
    let clients = (0..conns)
        .map(|_| client(&target))
        .collect::<Result<Vec<_>>>()?;
    let start = Instant::now();
    let end = start + Duration::from_secs_f64(secs);
    let tasks = (0..conc).map(|i| caller(clients[i % conns].clone(), size, end));
    let results = futures_util::future::join_all(tasks).await;
    let elapsed = start.elapsed().as_secs_f64();
    let (mut all, mut errors) = (Vec::new(), 0);
    for (l, e) in results {
        all.extend(l);
        errors += e;
    }
    all.sort_unstable();
    println!(
        "calls={} errors={} cps={:.1} p50_us={} p90_us={} p99_us={} max_us={}",
        all.len(),
        errors,
        all.len() as f64 / elapsed,
        percentile(&all, 0.50),
        percentile(&all, 0.90),
        percentile(&all, 0.99),
        all.last().copied().unwrap_or(0)
    );
    Ok(())
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    match args.first().map(String::as_str) {
        Some("server") => match args.get(1..3) {
            Some([flag, addr]) if flag == "--listen" => rt.block_on(serve(addr)),
            _ => bail!("usage: grpc_loadgen server --listen HOST:PORT"),
        },
        Some("client") => rt.block_on(load(&args[1..])),
        _ => {
            bail!("usage: grpc_loadgen server --listen HOST:PORT | client --target HOST:PORT [...]")
        }
    }
}
