//! Clients as the tests use them: one request on a fresh hyper connection, `curl`,
//! raw bytes, polling with a deadline, and blocking client code off the runtime.

use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::rt::TokioExecutor;

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

/// One HTTP/2 request (prior knowledge, the `h2` crate) on a fresh connection to
/// `addr`, with these header values; (status, body).
pub async fn h2_request(addr: SocketAddr, uri: &str, headers: &[(&str, &str)]) -> (u16, String) {
    const T: Duration = Duration::from_secs(30);
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let (mut client, conn) = h2::client::handshake(tcp).await.expect("h2 handshake");
    tokio::spawn(conn);
    let mut req = Request::builder().uri(uri);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req.body(()).expect("request");
    let (rsp, _) = client.send_request(req, true).expect("send");
    let rsp = tokio::time::timeout(T, rsp)
        .await
        .expect("in time")
        .expect("response");
    let status = rsp.status().as_u16();
    let mut body = rsp.into_body();
    let mut out = Vec::new();
    while let Some(chunk) = tokio::time::timeout(T, body.data()).await.expect("in time") {
        let chunk = chunk.expect("data");
        let _ = body.flow_control().release_capacity(chunk.len());
        out.extend_from_slice(&chunk);
    }
    (status, String::from_utf8_lossy(&out).into_owned())
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

/// Write raw bytes to `addr`, read until EOF or `timeout`; returns what was read.
pub async fn raw_exchange(addr: SocketAddr, bytes: &[u8], timeout: Duration) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    s.write_all(bytes).await.expect("write");
    let mut out = Vec::new();
    let _ = tokio::time::timeout(timeout, s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

/// The JSON the echoing [`Origin`](crate::Origin) answered with, from a raw
/// HTTP/1.1 response that must be a `200 OK`.
pub fn echoed(out: &str) -> serde_json::Value {
    assert!(out.starts_with("HTTP/1.1 200 OK\r\n"), "{out}");
    let body = out.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {out}"))
}
