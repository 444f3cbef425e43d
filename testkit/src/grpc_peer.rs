//! Real gRPC peers for tests: a tonic server (unary, server/client/bidi streaming and
//! the standard health service) on hyper's HTTP/2 server, and a tonic client over
//! hyper's HTTP/2 client (no client-side deadline enforcement: what the client sees
//! is what the proxy sent). Messages are prost structs derived by hand, no protoc.
// tonic's service traits fix the error type (`Status`, large) for every handler.
#![allow(clippy::result_large_err)]

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::uri::PathAndQuery;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::{Stream, StreamExt};
use tonic::codec::{ProstCodec, Streaming};
use tonic::{Request, Response, Status};

/// The one message of the test service.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Echo {
    #[prost(string, tag = "1")]
    pub text: String,
    /// Server streaming: how many replies.
    #[prost(uint32, tag = "2")]
    pub count: u32,
    /// Wait this long before answering (before each streamed reply).
    #[prost(uint64, tag = "3")]
    pub delay_ms: u64,
    /// Non-zero: fail the call with this gRPC code and `text` as the message.
    #[prost(int32, tag = "4")]
    pub code: i32,
}

impl Echo {
    pub fn text(t: &str) -> Echo {
        Echo {
            text: t.into(),
            ..Default::default()
        }
    }
}

pub const UNARY: &str = "/test.Echo/Unary";
pub const SERVER_STREAM: &str = "/test.Echo/ServerStream";
pub const CLIENT_STREAM: &str = "/test.Echo/ClientStream";
pub const BIDI: &str = "/test.Echo/Bidi";
/// The standard health check method.
pub const HEALTH_CHECK: &str = "/grpc.health.v1.Health/Check";
/// The service name the health service reports on.
pub const SERVICE: &str = "test.Echo";

type BoxFut<T> = Pin<Box<dyn Future<Output = Result<T, Status>> + Send>>;
type EchoStream = Pin<Box<dyn Stream<Item = Result<Echo, Status>> + Send>>;

fn answer(m: Echo) -> Result<Echo, Status> {
    if m.code != 0 {
        Err(Status::new(tonic::Code::from(m.code), m.text))
    } else {
        Ok(m)
    }
}

/// One method of the echo service. tonic's server codec takes a tower `Service`
/// per method; this one calls a plain function, so each method below is only
/// what it answers.
struct Method<F>(F);

impl<Req, Rsp, F> tower_service::Service<Request<Req>> for Method<F>
where
    F: FnMut(Request<Req>) -> BoxFut<Response<Rsp>>,
{
    type Response = Response<Rsp>;
    type Error = Status;
    type Future = BoxFut<Response<Rsp>>;
    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Status>> {
        std::task::Poll::Ready(Ok(()))
    }
    fn call(&mut self, req: Request<Req>) -> Self::Future {
        (self.0)(req)
    }
}

fn unary(req: Request<Echo>) -> BoxFut<Response<Echo>> {
    Box::pin(async move {
        let m = req.into_inner();
        tokio::time::sleep(Duration::from_millis(m.delay_ms)).await;
        answer(m).map(Response::new)
    })
}

fn server_stream(req: Request<Echo>) -> BoxFut<Response<EchoStream>> {
    let m = req.into_inner();
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tokio::spawn(async move {
        for i in 0..m.count {
            tokio::time::sleep(Duration::from_millis(m.delay_ms)).await;
            let reply = Echo::text(&format!("{} {i}", m.text));
            if tx.send(Ok(reply)).await.is_err() {
                return;
            }
        }
        if m.code != 0 {
            let _ = tx.send(answer(m)).await;
        }
    });
    Box::pin(async move {
        Ok(Response::new(
            Box::pin(ReceiverStream::new(rx)) as EchoStream
        ))
    })
}

fn client_stream(req: Request<Streaming<Echo>>) -> BoxFut<Response<Echo>> {
    Box::pin(async move {
        let mut s = req.into_inner();
        let mut all = Vec::new();
        while let Some(m) = s.message().await? {
            all.push(m.text);
        }
        Ok(Response::new(Echo::text(&all.join(","))))
    })
}

fn bidi(req: Request<Streaming<Echo>>) -> BoxFut<Response<EchoStream>> {
    let s = req.into_inner();
    let out = s.map(|m| m.and_then(answer));
    Box::pin(async move { Ok(Response::new(Box::pin(out) as EchoStream)) })
}

/// What the server records of a request: (path, grpc-timeout, content-type), each
/// header's fields joined with `, `.
pub type Head = (String, Option<String>, Option<String>);

/// A running test gRPC server.
pub struct GrpcServer {
    pub addr: SocketAddr,
    pub health: tonic_health::server::HealthReporter,
    /// Request heads the server received, in order.
    pub seen: Arc<Mutex<Vec<Head>>>,
}

impl GrpcServer {
    /// Serve on 127.0.0.1:0 (HTTP/2 cleartext), reporting `test.Echo` as SERVING.
    pub async fn start() -> GrpcServer {
        let (health, health_svc) = tonic_health::server::health_reporter();
        health
            .set_service_status(SERVICE, tonic_health::ServingStatus::Serving)
            .await;
        let seen = Arc::new(Mutex::new(Vec::new()));
        let recorded = seen.clone();
        let addr = crate::origin::serve_each(move |stream| {
            let (health_svc, recorded) = (health_svc.clone(), recorded.clone());
            let svc = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                record(&recorded, &req);
                route(req, health_svc.clone())
            });
            async move {
                let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            }
        })
        .await;
        GrpcServer { addr, health, seen }
    }

    /// How many requests to `path` the server received.
    pub fn calls(&self, path: &str) -> usize {
        let seen = self.seen.lock().expect("seen");
        seen.iter().filter(|(p, _, _)| p == path).count()
    }

    pub async fn set_serving(&self, serving: bool) {
        let status = if serving {
            tonic_health::ServingStatus::Serving
        } else {
            tonic_health::ServingStatus::NotServing
        };
        self.health.set_service_status(SERVICE, status).await;
    }
}

fn record(seen: &Mutex<Vec<Head>>, req: &http::Request<hyper::body::Incoming>) {
    // Every field of the name, joined: a test sees a duplicate the proxy let through.
    let h = |n: &str| {
        let all: Vec<&str> = req
            .headers()
            .get_all(n)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect();
        (!all.is_empty()).then(|| all.join(", "))
    };
    let head = (
        req.uri().path().to_string(),
        h("grpc-timeout"),
        h("content-type"),
    );
    seen.lock().expect("seen").push(head);
}

/// The echo service's methods by path; anything else goes to the health service.
async fn route<H>(
    req: http::Request<hyper::body::Incoming>,
    mut health: H,
) -> Result<http::Response<tonic::body::Body>, Infallible>
where
    H: tower_service::Service<
        http::Request<hyper::body::Incoming>,
        Response = http::Response<tonic::body::Body>,
        Error = Infallible,
    >,
{
    Ok(match req.uri().path() {
        UNARY => grpc().unary(Method(unary), req).await,
        SERVER_STREAM => grpc().server_streaming(Method(server_stream), req).await,
        CLIENT_STREAM => grpc().client_streaming(Method(client_stream), req).await,
        BIDI => grpc().streaming(Method(bidi), req).await,
        _ => match health.call(req).await {
            Ok(r) => r,
            Err(e) => match e {},
        },
    })
}

fn grpc() -> tonic::server::Grpc<ProstCodec<Echo, Echo>> {
    tonic::server::Grpc::new(ProstCodec::default())
}

type HyperClient = hyper_util::client::legacy::Client<
    hyper_util::client::legacy::connect::HttpConnector,
    tonic::body::Body,
>;

/// A tonic client speaking HTTP/2 cleartext to `addr` (the proxy).
pub struct GrpcClient {
    inner: tonic::client::Grpc<HyperClient>,
}

impl GrpcClient {
    pub fn new(addr: SocketAddr) -> GrpcClient {
        let client = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
            .http2_only(true)
            .build_http();
        let origin: http::Uri = format!("http://{addr}").parse().expect("origin");
        GrpcClient {
            inner: tonic::client::Grpc::with_origin(client, origin),
        }
    }

    async fn ready(&mut self) {
        self.inner.ready().await.expect("client ready");
    }

    pub async fn unary(&mut self, req: impl tonic::IntoRequest<Echo>) -> Result<Echo, Status> {
        self.unary_at(UNARY, req).await
    }

    /// Call `path` as a unary method.
    pub async fn unary_at(
        &mut self,
        path: &'static str,
        req: impl tonic::IntoRequest<Echo>,
    ) -> Result<Echo, Status> {
        self.ready().await;
        let path = PathAndQuery::from_static(path);
        let r = self
            .inner
            .unary(req.into_request(), path, ProstCodec::default())
            .await;
        r.map(Response::into_inner)
    }

    pub async fn server_stream(
        &mut self,
        req: impl tonic::IntoRequest<Echo>,
    ) -> (Vec<String>, Result<(), Status>) {
        self.server_stream_at(SERVER_STREAM, req).await
    }

    /// A server stream, opened: its messages are read by the caller.
    pub async fn server_stream_open(
        &mut self,
        path: &'static str,
        req: impl tonic::IntoRequest<Echo>,
    ) -> Result<Streaming<Echo>, Status> {
        self.ready().await;
        let path = PathAndQuery::from_static(path);
        let call = self.inner.server_streaming(
            req.into_request(),
            path,
            ProstCodec::<Echo, Echo>::default(),
        );
        call.await.map(Response::into_inner)
    }

    /// A server stream collected: the messages, then the final status.
    pub async fn server_stream_at(
        &mut self,
        path: &'static str,
        req: impl tonic::IntoRequest<Echo>,
    ) -> (Vec<String>, Result<(), Status>) {
        let mut s = match self.server_stream_open(path, req).await {
            Ok(s) => s,
            Err(e) => return (Vec::new(), Err(e)),
        };
        let mut got = Vec::new();
        loop {
            match s.message().await {
                Ok(Some(m)) => got.push(m.text),
                Ok(None) => return (got, Ok(())),
                Err(e) => return (got, Err(e)),
            }
        }
    }

    pub async fn client_stream(&mut self, msgs: Vec<Echo>) -> Result<Echo, Status> {
        self.ready().await;
        let path = PathAndQuery::from_static(CLIENT_STREAM);
        let req = Request::new(tokio_stream::iter(msgs));
        let r = self
            .inner
            .client_streaming(req, path, ProstCodec::default())
            .await;
        r.map(Response::into_inner)
    }

    /// Bidi: send each message and read its echo before sending the next.
    pub async fn bidi(&mut self, msgs: Vec<Echo>) -> Result<Vec<String>, Status> {
        self.ready().await;
        let path = PathAndQuery::from_static(BIDI);
        let (tx, rx) = tokio::sync::mpsc::channel::<Echo>(1);
        let req = Request::new(ReceiverStream::new(rx));
        let mut s = self
            .inner
            .streaming(req, path, ProstCodec::<Echo, Echo>::default())
            .await?
            .into_inner();
        let mut got = Vec::new();
        for m in msgs {
            tx.send(m).await.expect("send");
            match s.message().await? {
                Some(m) => got.push(m.text),
                None => break,
            }
        }
        drop(tx);
        while let Some(m) = s.message().await? {
            got.push(m.text);
        }
        Ok(got)
    }
}

/// A gRPC message frame: flag 0, big-endian length, the protobuf bytes.
pub fn message_frame(m: &Echo) -> Vec<u8> {
    let msg = prost::Message::encode_to_vec(m);
    let mut f = vec![0u8];
    f.extend_from_slice(&(msg.len() as u32).to_be_bytes());
    f.extend_from_slice(&msg);
    f
}

/// Split a gRPC or gRPC-Web body into (flag, payload) frames; panics on a
/// truncated frame or trailing bytes.
pub fn frames(mut b: &[u8]) -> Vec<(u8, Vec<u8>)> {
    let mut out = Vec::new();
    while b.len() >= 5 {
        let len = u32::from_be_bytes([b[1], b[2], b[3], b[4]]) as usize;
        assert!(b.len() >= 5 + len, "truncated frame in {b:?}");
        out.push((b[0], b[5..5 + len].to_vec()));
        b = &b[5 + len..];
    }
    assert!(b.is_empty(), "trailing bytes {b:?}");
    out
}

/// A browser's gRPC-Web POST from `https://app.example` over HTTP/1.1, with this
/// `content-type`.
pub async fn post_web(url: &str, content_type: &str, body: Vec<u8>) -> crate::client::Resp {
    let headers = [
        ("content-type", content_type),
        ("x-grpc-web", "1"),
        ("origin", "https://app.example"),
    ];
    crate::client::send("POST", url, &headers, body.into()).await
}

/// Keys of an HTTP/2 cluster health checked with `grpc.health.v1.Health/Check` on
/// [`SERVICE`] every 100ms, each check giving up after `timeout`; one result flips
/// an endpoint, and there is no panic mode (unhealthy endpoints get no calls).
pub fn checked_cluster_keys(timeout: &str) -> String {
    format!(
        "protocol: http2
panic_threshold: 0
health_check:
  grpc: {{ service: {SERVICE} }}
  interval: 100ms
  timeout: {timeout}
  unhealthy_threshold: 1
  healthy_threshold: 1"
    )
}
