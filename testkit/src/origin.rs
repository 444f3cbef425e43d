//! Origins on 127.0.0.1:0: the echoing [`Origin`] with per-path behaviours, a
//! connection-resetting origin, a collector, and a port that refuses connections.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};

pub type Body = http_body_util::combinators::BoxBody<Bytes, std::io::Error>;

/// A TCP server on 127.0.0.1:0 that runs `handle` on every accepted connection, each
/// on its own task, for as long as the test runs. The base of every origin here; a
/// test with a one-off origin (raw bytes, a scripted reply, an h2 peer) writes only
/// the per-connection part.
pub async fn serve_each<F, Fut>(handle: F) -> SocketAddr
where
    F: Fn(tokio::net::TcpStream) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind origin");
    let addr = l.local_addr().expect("origin addr");
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            tokio::spawn(handle(s));
        }
    });
    addr
}

/// [`serve_each`] for blocking peers (the synchronous `thrift` crate): a std
/// listener on `bind` and a thread per connection.
pub fn serve_each_blocking<F>(bind: &str, handle: F) -> SocketAddr
where
    F: Fn(std::net::TcpStream) + Clone + Send + 'static,
{
    let l = std::net::TcpListener::bind(bind).expect("bind origin");
    let addr = l.local_addr().expect("origin addr");
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(s) = s else { return };
            let handle = handle.clone();
            std::thread::spawn(move || handle(s));
        }
    });
    addr
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
        let hits = Arc::new(AtomicU64::new(0));
        let conns = Arc::new(AtomicU64::new(0));
        let (h, c, n) = (hits.clone(), conns.clone(), name.to_string());
        let addr = serve_each(move |s| {
            c.fetch_add(1, Ordering::SeqCst);
            let (hits, name) = (h.clone(), n.clone());
            let svc = service_fn(move |req| {
                hits.fetch_add(1, Ordering::SeqCst);
                origin_handle(req, name.clone())
            });
            async move {
                if h2 {
                    let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(s), svc)
                        .await;
                } else {
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(s), svc)
                        .await;
                }
            }
        })
        .await;
        Origin {
            addr,
            hits,
            conns,
            name: name.to_string(),
        }
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
        let stream = frames_of(total, Bytes::from(vec![b'x'; 64 * 1024]));
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
    serve_each(|mut s| async move {
        use tokio::io::AsyncReadExt;
        let mut buf = [0u8; 4096];
        let _ = s.read(&mut buf).await;
    })
    .await
}

/// A body of `total` bytes streamed as frames of `chunk` (the last one cut short),
/// never whole in memory: large uploads and downloads in tests.
pub fn frames_of(
    total: u64,
    chunk: Bytes,
) -> impl futures_util::Stream<Item = Result<hyper::body::Frame<Bytes>, std::io::Error>> + Send + Unpin
{
    Box::pin(futures_util::stream::unfold(total, move |left| {
        let chunk = chunk.clone();
        async move {
            if left == 0 {
                return None;
            }
            let n = left.min(chunk.len() as u64);
            Some((
                Ok(hyper::body::Frame::data(chunk.slice(..n as usize))),
                left - n,
            ))
        }
    }))
}

/// A loopback port that refuses connections for as long as the test process runs.
///
/// The port is held by a bound socket that never listens: a connect gets a reset
/// (ECONNREFUSED), and no other listener (another test's origin or proxy) can take
/// the port meanwhile, which a bind-then-close "free port" cannot promise.
pub fn dead_port() -> SocketAddr {
    static HELD: Mutex<Vec<socket2::Socket>> = Mutex::new(Vec::new());
    let sock =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    let any: SocketAddr = "127.0.0.1:0".parse().expect("addr");
    sock.bind(&any.into()).expect("bind");
    let addr = sock
        .local_addr()
        .expect("addr")
        .as_socket()
        .expect("inet addr");
    HELD.lock().unwrap_or_else(|p| p.into_inner()).push(sock);
    addr
}

/// An HTTP/1.1 server on 127.0.0.1:0 that hands `handle` each request's head and
/// whole body and sends what it returns (a collector, a recording shadow, ...).
pub async fn serve_collected<F, Fut>(handle: F) -> SocketAddr
where
    F: Fn(http::request::Parts, Bytes) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = Response<Full<Bytes>>> + Send + 'static,
{
    serve_each(move |s| {
        let handle = handle.clone();
        let svc = service_fn(move |req: Request<Incoming>| {
            let handle = handle.clone();
            async move {
                let (parts, body) = req.into_parts();
                let body = body.collect().await.map(|c| c.to_bytes());
                Ok::<_, Infallible>(handle(parts, body.unwrap_or_default()).await)
            }
        });
        async move {
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(s), svc)
                .await;
        }
    })
    .await
}
