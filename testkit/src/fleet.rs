//! Helpers for the living-fleet tests: origins that can be killed and made
//! unhealthy, and a continuous load that records every outcome.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::sync::watch;

use crate::client::eventually;

/// An origin that answers `name` on every path, `/healthz` with a settable status,
/// and can be killed (listener closed, open connections dropped).
pub struct Node {
    pub addr: SocketAddr,
    pub name: String,
    pub hits: Arc<AtomicU64>,
    pub health: Arc<AtomicU16>,
    pub status: Arc<AtomicU16>,
    kill: watch::Sender<bool>,
}

impl Node {
    pub async fn start(name: &str) -> Node {
        Self::start_on(name, "127.0.0.1:0".parse().expect("addr")).await
    }

    pub async fn start_on(name: &str, at: SocketAddr) -> Node {
        let l = tokio::net::TcpListener::bind(at).await.expect("bind node");
        let addr = l.local_addr().expect("addr");
        let hits = Arc::new(AtomicU64::new(0));
        let health = Arc::new(AtomicU16::new(200));
        let status = Arc::new(AtomicU16::new(200));
        let (kill, mut killed) = watch::channel(false);
        let (h, hh, st, n) = (
            hits.clone(),
            health.clone(),
            status.clone(),
            name.to_string(),
        );
        tokio::spawn(async move {
            loop {
                let s = tokio::select! {
                    r = l.accept() => match r { Ok((s, _)) => s, Err(_) => continue },
                    _ = killed.changed() => return,
                };
                let (h, hh, st, n) = (h.clone(), hh.clone(), st.clone(), n.clone());
                let mut k = killed.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req: Request<hyper::body::Incoming>| {
                        let (h, hh, st, n) = (h.clone(), hh.clone(), st.clone(), n.clone());
                        async move {
                            let code = if req.uri().path() == "/healthz" {
                                hh.load(Ordering::SeqCst)
                            } else {
                                h.fetch_add(1, Ordering::SeqCst);
                                st.load(Ordering::SeqCst)
                            };
                            let mut r = Response::new(Full::new(Bytes::from(n)));
                            *r.status_mut() = hyper::StatusCode::from_u16(code).unwrap_or_default();
                            Ok::<_, Infallible>(r)
                        }
                    });
                    let conn = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(s), svc);
                    tokio::select! {
                        _ = conn => {}
                        _ = k.changed() => {}
                    }
                });
            }
        });
        Node {
            addr,
            name: name.to_string(),
            hits,
            health,
            status,
            kill,
        }
    }

    /// Close the listener and every open connection.
    pub fn kill(&self) {
        let _ = self.kill.send(true);
    }

    pub fn hits(&self) -> u64 {
        self.hits.load(Ordering::SeqCst)
    }

    pub fn set_health(&self, code: u16) {
        self.health.store(code, Ordering::SeqCst);
    }
}

/// One request's outcome: status, or the client error.
#[derive(Debug, Clone)]
pub struct Sample {
    /// When the request was sent and when its outcome was known.
    pub sent: Instant,
    pub at: Instant,
    /// Which of the load's workers sent it (0-based).
    pub worker: usize,
    pub result: Result<(u16, String), String>,
}

/// How long [`Load::settle`] and [`Load::more`] wait: generous, the machine may
/// be loaded (each request has its own 10 s deadline).
const LOAD_WAIT: Duration = Duration::from_secs(60);

/// Continuous load from `workers` tasks until stopped.
pub struct Load {
    stop: Arc<AtomicBool>,
    samples: Arc<Mutex<Vec<Sample>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

type Client = hyper_util::client::legacy::Client<
    hyper_util::client::legacy::connect::HttpConnector,
    Full<Bytes>,
>;

pub fn client(keep_alive: bool) -> Client {
    let mut b = hyper_util::client::legacy::Client::builder(TokioExecutor::new());
    if !keep_alive {
        b.pool_max_idle_per_host(0);
    }
    b.build(hyper_util::client::legacy::connect::HttpConnector::new())
}

pub async fn request(
    c: &Client,
    url: &str,
    headers: &[(&str, &str)],
) -> Result<(u16, String), String> {
    let mut b = Request::builder().uri(url);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    let req = b.body(Full::new(Bytes::new())).map_err(|e| e.to_string())?;
    let rsp = tokio::time::timeout(Duration::from_secs(10), c.request(req))
        .await
        .map_err(|_| "timeout".to_string())?
        .map_err(|e| format!("{e:?}"))?;
    let status = rsp.status().as_u16();
    let body = tokio::time::timeout(Duration::from_secs(10), rsp.into_body().collect())
        .await
        .map_err(|_| "body timeout".to_string())?
        .map_err(|e| format!("{e:?}"))?
        .to_bytes();
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

impl Load {
    /// `keep_alive: false` opens a new connection per request (exercises accept).
    pub fn start(url: String, workers: usize, keep_alive: bool) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let samples = Arc::new(Mutex::new(Vec::new()));
        let tasks = (0..workers)
            .map(|worker| {
                let (stop, samples, url) = (stop.clone(), samples.clone(), url.clone());
                tokio::spawn(async move {
                    let c = client(keep_alive);
                    while !stop.load(Ordering::SeqCst) {
                        let sent = Instant::now();
                        let result = request(&c, &url, &[]).await;
                        samples.lock().expect("samples").push(Sample {
                            sent,
                            at: Instant::now(),
                            worker,
                            result,
                        });
                        tokio::time::sleep(Duration::from_millis(2)).await;
                    }
                })
            })
            .collect();
        Load {
            stop,
            samples,
            tasks,
        }
    }

    pub fn count(&self) -> usize {
        self.samples.lock().expect("samples").len()
    }

    /// Wait until every worker has finished a request it sent after this call, so
    /// that no request routed before it is still in flight (an endpoint just
    /// removed, ejected or reweighted sees no more traffic from then on). The
    /// instant of the call, for filtering samples by [`Sample::sent`].
    pub async fn settle(&self) -> Instant {
        let from = Instant::now();
        let workers = self.tasks.len();
        eventually(
            LOAD_WAIT,
            "every load worker to send a new request",
            || async {
                let samples = self.samples.lock().expect("samples");
                let mut seen = vec![false; workers];
                for s in samples.iter().filter(|s| s.sent >= from) {
                    seen[s.worker] = true;
                }
                seen.iter().all(|s| *s).then_some(())
            },
        )
        .await;
        from
    }

    /// Wait until `n` more requests have completed: an observation window counted
    /// in requests, not in time, so that a loaded machine does not shrink it.
    pub async fn more(&self, n: usize) {
        let target = self.count() + n;
        eventually(LOAD_WAIT, "more requests of the load", || async {
            (self.count() >= target).then_some(())
        })
        .await;
    }

    /// Samples so far (the load keeps running).
    pub fn snapshot(&self) -> Vec<Sample> {
        self.samples.lock().expect("samples").clone()
    }

    pub async fn stop(self) -> Vec<Sample> {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.tasks {
            let _ = tokio::time::timeout(Duration::from_secs(15), t).await;
        }
        let v = self.samples.lock().expect("samples").clone();
        v
    }
}

/// Failures (client errors or non-2xx) among samples, with a summary.
pub fn failures(samples: &[Sample]) -> (usize, BTreeMap<String, usize>) {
    let mut kinds = BTreeMap::new();
    let mut n = 0;
    for s in samples {
        let k = match &s.result {
            Ok((st, _)) if (200..300).contains(st) => continue,
            Ok((st, body)) => format!("{st} {}", body.trim()),
            Err(e) => e.chars().take(80).collect(),
        };
        n += 1;
        *kinds.entry(k).or_insert(0) += 1;
    }
    (n, kinds)
}

/// Poll `/clusters?format=json` until `pred` holds for cluster `name`.
pub async fn cluster_json(admin: SocketAddr, name: &str) -> serde_json::Value {
    let c = client(true);
    let (_, body) = request(&c, &format!("http://{admin}/clusters?format=json"), &[])
        .await
        .expect("admin /clusters");
    let v: serde_json::Value = serde_json::from_str(&body).expect("json");
    v["clusters"]
        .as_array()
        .and_then(|a| a.iter().find(|c| c["name"] == name).cloned())
        .unwrap_or(serde_json::Value::Null)
}

/// The endpoint addresses of cluster `name` as `/clusters` shows them, sorted.
pub async fn cluster_addresses(admin: SocketAddr, name: &str) -> Vec<String> {
    let c = cluster_json(admin, name).await;
    let mut v: Vec<String> = c["endpoints"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|e| e["address"].as_str().unwrap_or("").to_string())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// The addresses of `nodes`, sorted (to compare with [`cluster_addresses`]).
pub fn addresses_of(nodes: &[&Node]) -> Vec<String> {
    let mut v: Vec<String> = nodes.iter().map(|n| n.addr.to_string()).collect();
    v.sort();
    v
}

/// Start `attache run` like `support::Proxy::start`, with extra CLI args.
pub fn start_with_args(yaml: &str, args: &[&str]) -> crate::proxy::Proxy {
    crate::proxy::Proxy::start_with(yaml, args, &[])
}

/// Start another `attache run` on an existing config file (hot restart).
pub fn start_on_config(config_path: &std::path::Path, args: &[&str]) -> crate::proxy::Proxy {
    let dir = tempfile::tempdir().expect("tempdir");
    let (path, ready_within) = (config_path.to_path_buf(), crate::proxy::READY_WITHIN);
    crate::proxy::Proxy::spawn(dir, path, args, &[], ready_within)
}
