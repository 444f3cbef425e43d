//! Test support: spawn the real binary on loopback ports, real origins, real clients.
#![allow(dead_code)]

pub mod pki;
pub mod theader_py;
pub mod thrift_peer;

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};

pub type Body = http_body_util::combinators::BoxBody<Bytes, std::io::Error>;

/// Poll `f` until it returns Some, or panic after `timeout`.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        if Instant::now() > deadline {
            panic!("timed out waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Run blocking client code (the synchronous `thrift` crate) off the runtime,
/// under a generous deadline.
pub async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::time::timeout(Duration::from_secs(60), tokio::task::spawn_blocking(f))
        .await
        .expect("client finished in time")
        .expect("client did not panic")
}

/// A running `attache run`. Dropping it kills and reaps the process, and prints its
/// log when the test is failing.
pub struct Proxy {
    pub child: Option<Child>,
    pub dir: tempfile::TempDir,
    pub admin: SocketAddr,
    pub listeners: HashMap<String, SocketAddr>,
    pub config_path: PathBuf,
    pub log_path: PathBuf,
}

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_attache")
}

impl Proxy {
    /// Start with `yaml` (admin on 127.0.0.1:0 is added when absent).
    pub fn start(yaml: &str) -> Proxy {
        Self::start_with_env(yaml, &[])
    }

    pub fn start_with_env(yaml: &str, env: &[(&str, &str)]) -> Proxy {
        let dir = tempfile::tempdir().expect("tempdir");
        let yaml = if yaml.contains("admin:") {
            yaml.to_string()
        } else {
            format!("admin:\n  address: 127.0.0.1:0\n{yaml}")
        };
        let config_path = dir.path().join("attache.yaml");
        std::fs::write(&config_path, yaml).expect("write config");
        Self::spawn(dir, config_path, &[], env, Duration::from_secs(20))
    }

    /// `attache run` on `config_path` with extra CLI `args` and environment; `dir`
    /// holds the ready file and the log. Waits for the ready file up to `ready_within`.
    pub fn spawn(
        dir: tempfile::TempDir,
        config_path: PathBuf,
        args: &[&str],
        env: &[(&str, &str)],
        ready_within: Duration,
    ) -> Proxy {
        let ready = dir.path().join("ready.json");
        let log_path = dir.path().join("attache.log");
        let log = std::fs::File::create(&log_path).expect("log file");
        let log2 = log.try_clone().expect("log file");
        let mut cmd = Command::new(bin());
        cmd.arg("run")
            .arg("--config")
            .arg(&config_path)
            .arg("--ready-file")
            .arg(&ready)
            .arg("--concurrency")
            .arg("2")
            .args(args)
            .env("ATTACHE_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn attache");
        let deadline = Instant::now() + ready_within;
        let info = loop {
            if let Ok(text) = std::fs::read_to_string(&ready) {
                if let Ok(v) = serde_json::from_str::<serde_json::Value>(&text) {
                    break v;
                }
            }
            if let Ok(Some(status)) = child.try_wait() {
                let log = std::fs::read_to_string(&log_path).unwrap_or_default();
                panic!("attache exited early with {status}:\n{log}");
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let log = std::fs::read_to_string(&log_path).unwrap_or_default();
                panic!("attache did not become ready:\n{log}");
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        let admin = info["admin"]
            .as_str()
            .expect("admin")
            .parse()
            .expect("admin addr");
        let listeners = info["listeners"]
            .as_object()
            .expect("listeners")
            .iter()
            .map(|(k, v)| (k.clone(), v.as_str().expect("addr").parse().expect("addr")))
            .collect();
        Proxy {
            child: Some(child),
            dir,
            admin,
            listeners,
            config_path,
            log_path,
        }
    }

    pub fn addr(&self, listener: &str) -> SocketAddr {
        *self
            .listeners
            .get(listener)
            .unwrap_or_else(|| panic!("no listener {listener}"))
    }

    pub fn url(&self, listener: &str, path: &str) -> String {
        format!("http://{}{}", self.addr(listener), path)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().map(|c| c.id() as i32).unwrap_or(0)
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY-free: libc::kill via std is unavailable; use the `kill` command.
        let name = match sig {
            15 => "TERM",
            2 => "INT",
            1 => "HUP",
            3 => "QUIT",
            10 => "USR1",
            12 => "USR2",
            _ => "KILL",
        };
        let _ = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.pid().to_string())
            .status();
    }

    /// Wait for the process to exit; its exit code.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        let deadline = Instant::now() + timeout;
        let child = self.child.as_mut()?;
        loop {
            if let Ok(Some(st)) = child.try_wait() {
                self.child = None;
                return st.code();
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `GET` an admin path; (status, body).
    pub async fn admin_get(&self, path: &str) -> (u16, String) {
        let r = get(&format!("http://{}{}", self.admin, path), &[]).await;
        (r.status, r.text())
    }

    pub async fn admin_post(&self, path: &str) -> (u16, String) {
        let r = send(
            "POST",
            &format!("http://{}{}", self.admin, path),
            &[],
            Bytes::new(),
        )
        .await;
        (r.status, r.text())
    }

    /// The value of one stat line `name{labels}` from `/stats`, 0 when absent.
    pub async fn stat(&self, name_with_labels: &str) -> f64 {
        let (_, body) = self.admin_get("/stats").await;
        for line in body.lines() {
            if let Some((k, v)) = line.split_once(": ") {
                if k == name_with_labels {
                    return v.trim().parse().unwrap_or(0.0);
                }
            }
        }
        0.0
    }

    /// Every `/stats` line whose name starts with `prefix`: (`name{labels}`, value).
    pub async fn stats_with_prefix(&self, prefix: &str) -> Vec<(String, f64)> {
        let (_, body) = self.admin_get("/stats").await;
        body.lines()
            .filter(|l| l.starts_with(prefix))
            .filter_map(|l| {
                let (k, v) = l.split_once(": ")?;
                Some((k.to_string(), v.trim().parse().unwrap_or(0.0)))
            })
            .collect()
    }

    /// The value of `name` with exactly these labels (any order), 0 when absent.
    pub async fn stat_labels(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let (_, body) = self.admin_get("/stats").await;
        let mut want: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
        want.sort();
        for line in body.lines() {
            let Some((k, v)) = line.split_once(": ") else {
                continue;
            };
            let Some((n, rest)) = k.split_once('{') else {
                continue;
            };
            if n != name {
                continue;
            }
            let mut have: Vec<String> = rest
                .trim_end_matches('}')
                .split(',')
                .map(str::to_string)
                .collect();
            have.sort();
            if have == want {
                return v.trim().parse().unwrap_or(0.0);
            }
        }
        0.0
    }
}

/// The shipped example configs, `config/*.yaml`, sorted.
pub fn shipped_configs() -> Vec<PathBuf> {
    let mut entries: Vec<PathBuf> = std::fs::read_dir("config")
        .expect("config dir")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    entries.sort();
    entries
}

/// `attache validate --config FILE` on `yaml` written to a temp file named
/// `name`; (exit code, stdout + stderr, the file's path).
pub fn validate(name: &str, yaml: &str) -> (i32, String, PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join(name);
    std::fs::write(&path, yaml).expect("write config");
    let (code, out) = validate_file(&path);
    // Keep the file's path meaningful in messages; the directory goes away here.
    (code, out, path)
}

/// `attache validate --config PATH`; (exit code, stdout + stderr).
pub fn validate_file(path: &std::path::Path) -> (i32, String) {
    validate_file_env(path, &[])
}

/// `attache validate --config PATH` with extra environment for the child only.
pub fn validate_file_env(path: &std::path::Path, env: &[(&str, &str)]) -> (i32, String) {
    let out = Command::new(bin())
        .arg("validate")
        .arg("--config")
        .arg(path)
        .envs(env.iter().copied())
        .output()
        .expect("run attache validate");
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    (out.status.code().unwrap_or(-1), text)
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if std::thread::panicking() {
            eprintln!(
                "----- attache log -----\n{}\n-----------------------",
                self.log()
            );
        }
    }
}

/// A response as the tests see it.
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

impl Resp {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    }
}

pub async fn get(url: &str, headers: &[(&str, &str)]) -> Resp {
    send("GET", url, headers, Bytes::new()).await
}

/// One request on a fresh HTTP/1.1 connection (hyper client).
pub async fn send(method: &str, url: &str, headers: &[(&str, &str)], body: Bytes) -> Resp {
    let client: hyper_util::client::legacy::Client<_, Full<Bytes>> =
        hyper_util::client::legacy::Client::builder(TokioExecutor::new())
            .build(hyper_util::client::legacy::connect::HttpConnector::new());
    let mut b = Request::builder().method(method).uri(url);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    let req = b.body(Full::new(body)).expect("request");
    let rsp = tokio::time::timeout(Duration::from_secs(30), client.request(req))
        .await
        .expect("request timed out")
        .expect("request failed");
    let (parts, body) = rsp.into_parts();
    let body = tokio::time::timeout(Duration::from_secs(60), body.collect())
        .await
        .expect("body timed out")
        .expect("body")
        .to_bytes();
    Resp {
        status: parts.status.as_u16(),
        headers: parts.headers,
        body,
    }
}

/// Run `curl` with args off the async runtime; (exit ok, stdout).
pub async fn curl(args: &[&str]) -> (bool, String) {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        let out = Command::new("curl")
            .args(["-s", "--max-time", "20"])
            .args(&args)
            .output()
            .expect("curl must be installed (.ci/run installs it)");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    })
    .await
    .expect("curl task")
}

/// Behaviour of a test origin, chosen per request by path.
///
/// - `/slow/<ms>`: answer after a delay
/// - `/status/<code>`: answer with that status
/// - `/download/<bytes>`: stream that many bytes
/// - `/upload`: count the request body, answer with the count
/// - anything else: echo JSON `{name, method, path, headers, all_headers}`
///
/// On every path, [`RESPOND_HEADER`] request headers become response headers.
#[derive(Clone)]
pub struct Origin {
    pub addr: SocketAddr,
    pub hits: Arc<AtomicU64>,
    /// TCP connections accepted.
    pub conns: Arc<AtomicU64>,
    pub name: String,
}

impl Origin {
    pub async fn start(name: &str) -> Origin {
        Self::start_with(name, false).await
    }

    pub async fn start_h2(name: &str) -> Origin {
        Self::start_with(name, true).await
    }

    async fn start_with(name: &str, h2: bool) -> Origin {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind origin");
        let addr = l.local_addr().expect("addr");
        let hits = Arc::new(AtomicU64::new(0));
        let conns = Arc::new(AtomicU64::new(0));
        let origin = Origin {
            addr,
            hits: hits.clone(),
            conns: conns.clone(),
            name: name.to_string(),
        };
        let name = name.to_string();
        tokio::spawn(async move {
            loop {
                let Ok((s, _)) = l.accept().await else {
                    continue;
                };
                conns.fetch_add(1, Ordering::SeqCst);
                let hits = hits.clone();
                let name = name.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req| {
                        hits.fetch_add(1, Ordering::SeqCst);
                        origin_handle(req, name.clone())
                    });
                    if h2 {
                        let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                            .serve_connection(TokioIo::new(s), svc)
                            .await;
                    } else {
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(TokioIo::new(s), svc)
                            .await;
                    }
                });
            }
        });
        origin
    }

    pub fn hits(&self) -> u64 {
        self.hits.load(Ordering::SeqCst)
    }

    pub fn conns(&self) -> u64 {
        self.conns.load(Ordering::SeqCst)
    }
}

/// The request header with which a test asks the origin to add a response header:
/// each `x-origin-respond-header: name: value` becomes `name: value` on the response
/// (repeat it for several, e.g. several `Set-Cookie`).
pub const RESPOND_HEADER: &str = "x-origin-respond-header";

async fn origin_handle(req: Request<Incoming>, name: String) -> Result<Response<Body>, Infallible> {
    let extra: Vec<(http::HeaderName, http::HeaderValue)> = req
        .headers()
        .get_all(RESPOND_HEADER)
        .iter()
        .filter_map(|v| {
            let (k, v) = v.to_str().ok()?.split_once(':')?;
            Some((
                http::HeaderName::from_bytes(k.trim().as_bytes()).ok()?,
                http::HeaderValue::from_str(v.trim()).ok()?,
            ))
        })
        .collect();
    let mut rsp = origin_route(req, name).await?;
    for (k, v) in extra {
        rsp.headers_mut().append(k, v);
    }
    Ok(rsp)
}

async fn origin_route(req: Request<Incoming>, name: String) -> Result<Response<Body>, Infallible> {
    let path = req.uri().path().to_string();
    let full = |status: u16, s: String| {
        let mut r = Response::new(Full::new(Bytes::from(s)).map_err(|e| match e {}).boxed());
        *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
        Ok(r)
    };
    if let Some(ms) = path.strip_prefix("/slow/") {
        let ms: u64 = ms.parse().unwrap_or(1000);
        tokio::time::sleep(Duration::from_millis(ms)).await;
        return full(200, format!("slow {name}"));
    }
    if let Some(code) = path.strip_prefix("/status/") {
        return full(code.parse().unwrap_or(500), format!("{name} {code}"));
    }
    if let Some(n) = path.strip_prefix("/download/") {
        let total: u64 = n.parse().unwrap_or(0);
        let chunk = Bytes::from(vec![b'x'; 64 * 1024]);
        let stream = futures_util::stream::unfold(total, move |left| {
            let chunk = chunk.clone();
            async move {
                if left == 0 {
                    return None;
                }
                let n = left.min(chunk.len() as u64);
                Some((
                    Ok::<_, std::io::Error>(hyper::body::Frame::data(chunk.slice(..n as usize))),
                    left - n,
                ))
            }
        });
        let body = http_body_util::StreamBody::new(stream).boxed();
        let mut r = Response::new(body);
        r.headers_mut().insert("content-length", total.into());
        return Ok(r);
    }
    if path == "/upload" {
        let mut body = req.into_body();
        let mut n: u64 = 0;
        while let Some(f) = body.frame().await {
            match f {
                Ok(f) => n += f.data_ref().map_or(0, |d| d.len() as u64),
                Err(_) => return full(400, "body error".into()),
            }
        }
        return full(200, n.to_string());
    }
    let headers: serde_json::Map<String, serde_json::Value> = req
        .headers()
        .iter()
        .map(|(k, v)| {
            (
                k.to_string(),
                serde_json::Value::from(v.to_str().unwrap_or("")),
            )
        })
        .collect();
    // Every header line in order, repeats included (`headers` keeps the last one).
    let all_headers: Vec<serde_json::Value> = req
        .headers()
        .iter()
        .map(|(k, v)| serde_json::json!([k.as_str(), String::from_utf8_lossy(v.as_bytes())]))
        .collect();
    let body = serde_json::json!({
        "name": name,
        "all_headers": all_headers,
        "method": req.method().as_str(),
        "path": req.uri().path_and_query().map(|p| p.as_str()).unwrap_or("/"),
        "version": format!("{:?}", req.version()),
        "headers": headers,
    });
    full(200, body.to_string())
}

/// An origin that accepts TCP connections and closes them immediately after reading
/// the request: the proxy sees a reset / closed connection before a response.
pub async fn resetting_origin() -> SocketAddr {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = l.local_addr().expect("addr");
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = l.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                use tokio::io::AsyncReadExt;
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf).await;
                drop(s);
            });
        }
    });
    addr
}

/// A loopback port with nothing listening.
pub fn dead_port() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let a = l.local_addr().expect("addr");
    drop(l);
    a
}

/// Write raw bytes to `addr`, read until EOF or `timeout`; returns what was read.
pub async fn raw_exchange(addr: SocketAddr, bytes: &[u8], timeout: Duration) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    s.write_all(bytes).await.expect("write");
    let mut out = Vec::new();
    let _ = tokio::time::timeout(timeout, s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

/// An HTTP/1.1 server on 127.0.0.1:0 that hands `handle` each request's head and
/// whole body and sends what it returns (a collector, a recording shadow, ...).
pub async fn serve_collected<F, Fut>(handle: F) -> SocketAddr
where
    F: Fn(http::request::Parts, Bytes) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = Response<Full<Bytes>>> + Send + 'static,
{
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = l.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            let handle = handle.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req: Request<Incoming>| {
                    let handle = handle.clone();
                    async move {
                        let (parts, body) = req.into_parts();
                        let body = body.collect().await.map(|c| c.to_bytes());
                        Ok::<_, Infallible>(handle(parts, body.unwrap_or_default()).await)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    addr
}
