//! HTTP/1.1 upgrades (WebSocket and the like): tunnelled for routes that list the
//! protocol under `upgrades`, stripped everywhere else; a `101` never passes without
//! a tunnel.

mod support;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use support::yaml::Routes;
use support::{eventually, get, Proxy};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// An origin that accepts `Upgrade: websocket`: answers 101, says `hi!` on the
/// tunnel, then echoes what it reads in upper case. Other requests get a 200 naming
/// the `Upgrade` header they carried. With `always_101` it answers every request 101.
async fn upgrade_origin(always_101: bool) -> SocketAddr {
    support::serve_each(move |s| async move {
        let svc = service_fn(move |mut req: Request<hyper::body::Incoming>| async move {
            let up = req
                .headers()
                .get("upgrade")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("none")
                .to_string();
            if up != "websocket" && !always_101 {
                return Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(format!(
                    "plain upgrade={up}"
                )))));
            }
            let on = hyper::upgrade::on(&mut req);
            tokio::spawn(async move {
                let Ok(u) = on.await else {
                    return;
                };
                let mut io = TokioIo::new(u);
                let _ = io.write_all(b"hi!").await;
                let mut buf = [0u8; 1024];
                while let Ok(n) = io.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                    let upper = buf[..n].to_ascii_uppercase();
                    if io.write_all(&upper).await.is_err() {
                        break;
                    }
                }
            });
            let mut rsp = Response::new(Full::new(Bytes::new()));
            *rsp.status_mut() = http::StatusCode::SWITCHING_PROTOCOLS;
            rsp.headers_mut()
                .insert("upgrade", http::HeaderValue::from_static("websocket"));
            rsp.headers_mut()
                .insert("connection", http::HeaderValue::from_static("upgrade"));
            Ok(rsp)
        });
        let _ = hyper::server::conn::http1::Builder::new()
            .serve_connection(TokioIo::new(s), svc)
            .with_upgrades()
            .await;
    })
    .await
}

fn yaml(ws: SocketAddr, plain101: SocketAddr) -> String {
    let routes = r#"
- match: { prefix: /ws }
  route: { cluster: ws, upgrades: [WebSocket] }
- match: { prefix: /always101 }
  route: { cluster: always101 }
- match: { prefix: / }
  route: { cluster: ws }"#;
    Routes::new(routes)
        .cluster("ws", &[ws], "")
        .cluster("always101", &[plain101], "")
        .yaml()
}

/// Send a raw upgrade request; returns the response head and the stream.
async fn handshake(addr: SocketAddr, path: &str) -> (String, Vec<u8>, TcpStream) {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: chat.example\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await.expect("write");
    let mut buf = Vec::new();
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let mut chunk = [0u8; 1024];
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut chunk))
            .await
            .expect("response in time")
            .expect("read");
        assert!(n > 0, "closed before a response head: {buf:?}");
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    (head, buf[head_end..].to_vec(), s)
}

async fn read_exactly(s: &mut TcpStream, mut have: Vec<u8>, n: usize) -> Vec<u8> {
    while have.len() < n {
        let mut chunk = [0u8; 1024];
        let k = tokio::time::timeout(Duration::from_secs(5), s.read(&mut chunk))
            .await
            .expect("tunnel data in time")
            .expect("read");
        assert!(k > 0, "tunnel closed early");
        have.extend_from_slice(&chunk[..k]);
    }
    have
}

#[tokio::test]
async fn websocket_upgrades_are_tunnelled_on_routes_that_allow_them() {
    let ws = upgrade_origin(false).await;
    let always = upgrade_origin(true).await;
    let p = Proxy::start(&yaml(ws, always));

    let (head, rest, mut s) = handshake(p.addr("main"), "/ws/chat").await;
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(head.contains("upgrade: websocket"), "{head}");
    assert!(head.contains("connection: upgrade"), "{head}");
    // The origin's first bytes, then an echo through the tunnel, both ways.
    let got = read_exactly(&mut s, rest, 3).await;
    assert_eq!(&got[..], b"hi!");
    s.write_all(b"ping over the tunnel").await.expect("write");
    let got = read_exactly(&mut s, Vec::new(), 20).await;
    assert_eq!(&got[..], b"PING OVER THE TUNNEL");

    // Several tunnels at once stay independent.
    let mut tunnels = Vec::new();
    for i in 0..5 {
        let (head, rest, s) = handshake(p.addr("main"), &format!("/ws/{i}")).await;
        assert!(head.starts_with("http/1.1 101"), "{head}");
        tunnels.push((i, read_exactly_owned(s, rest).await));
    }
    for (i, mut s) in tunnels {
        let msg = format!("tunnel {i}");
        s.write_all(msg.as_bytes()).await.expect("write");
        let got = read_exactly(&mut s, Vec::new(), msg.len()).await;
        assert_eq!(String::from_utf8_lossy(&got), msg.to_uppercase());
    }
}

#[tokio::test]
async fn bytes_sent_right_after_the_upgrade_request_go_through_the_tunnel() {
    let ws = upgrade_origin(false).await;
    let always = upgrade_origin(true).await;
    let p = Proxy::start(&yaml(ws, always));
    // The client does not wait for the 101: its first frame comes in the same
    // write as the request head, so the codec has read it already.
    let mut s = TcpStream::connect(p.addr("main")).await.expect("connect");
    s.write_all(
        b"GET /ws/early HTTP/1.1\r\nHost: chat.example\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\nearly frame",
    )
    .await
    .expect("write");
    let mut got = Vec::new();
    let head_end = loop {
        if let Some(i) = got.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        got = read_exactly(&mut s, got.clone(), got.len() + 1).await;
    };
    let head = String::from_utf8_lossy(&got[..head_end]).to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 101"), "{head}");
    let tunnel = read_exactly(&mut s, got[head_end..].to_vec(), 3 + 11).await;
    assert_eq!(&tunnel[..], b"hi!EARLY FRAME");
    assert_eq!(upgrades(&p, "total").await, 1.0);
}

async fn read_exactly_owned(mut s: TcpStream, rest: Vec<u8>) -> TcpStream {
    let got = read_exactly(&mut s, rest, 3).await;
    assert_eq!(&got[..], b"hi!");
    s
}

#[tokio::test]
async fn upgrades_elsewhere_are_stripped_and_a_stray_101_is_a_502() {
    let ws = upgrade_origin(false).await;
    let always = upgrade_origin(true).await;
    let p = Proxy::start(&yaml(ws, always));

    // A route without `upgrades`: the origin sees a plain request.
    let (head, _, _) = handshake(p.addr("main"), "/chat").await;
    assert!(head.starts_with("http/1.1 200"), "{head}");
    let r = get(&p.url("main", "/chat"), &[("upgrade", "websocket")]).await;
    assert_eq!(r.text(), "plain upgrade=none");

    // An origin answering 101 to a request that asked for no upgrade.
    let (head, _, _) = handshake(p.addr("main"), "/always101").await;
    assert!(head.starts_with("http/1.1 502"), "{head}");
}

#[tokio::test]
async fn validate_rejects_bad_upgrade_names_and_http2_clusters() {
    let (code, out, _) = support::validate(
        "upgrades.yaml",
        r#"
listeners:
  - name: main
    address: 127.0.0.1:0
    virtual_hosts:
      - name: web
        domains: ["*"]
        routes:
          - match: { prefix: /a }
            route: { cluster: h2, upgrades: [websocket] }
          - match: { prefix: /b }
            route: { cluster: h1, upgrades: ["web socket"] }
clusters:
  - name: h2
    protocol: http2
    endpoints: ["127.0.0.1:1"]
  - name: h1
    endpoints: ["127.0.0.1:1"]
"#,
    );
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("upgrades.yaml:10:")
            && out.contains("upgrades are tunnelled over HTTP/1.1 only"),
        "{out}"
    );
    assert!(
        out.contains("upgrades.yaml:12:")
            && out.contains("`web socket` is not an upgrade protocol name"),
        "{out}"
    );
}

#[tokio::test]
async fn a_quiet_tunnel_closes_after_the_listener_idle_timeout() {
    let ws = upgrade_origin(false).await;
    let p = Proxy::start(
        &Routes::new("- match: { prefix: /ws }\n  route: { cluster: ws, upgrades: [websocket] }")
            .listener_key("http: { idle_timeout: 400ms }")
            .cluster("ws", &[ws], "")
            .yaml(),
    );
    let (head, rest, mut s) = handshake(p.addr("main"), "/ws").await;
    assert!(head.starts_with("http/1.1 101"), "{head}");
    let got = read_exactly(&mut s, rest, 3).await;
    assert_eq!(&got[..], b"hi!");
    // Traffic more often than the idle timeout keeps the tunnel open...
    for _ in 0..8 {
        tokio::time::sleep(Duration::from_millis(150)).await;
        s.write_all(b"k").await.expect("tunnel still open");
        let got = read_exactly(&mut s, Vec::new(), 1).await;
        assert_eq!(&got[..], b"K");
    }
    // ...and a quiet one is closed after it.
    let quiet = std::time::Instant::now();
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(Duration::from_secs(15), s.read(&mut buf))
        .await
        .expect("closed within the idle timeout")
        .unwrap_or(0);
    assert_eq!(n, 0, "the tunnel was closed");
    assert!(
        quiet.elapsed() >= Duration::from_millis(300),
        "not before it went quiet"
    );
}

/// An open tunnel is counted (`attache_downstream_upgrade_*`, and its connection in
/// `attache_downstream_cx_active`), and a drain waits for it: after SIGTERM the
/// tunnel still carries bytes and the process stays up until the client closes it,
/// then exits 0 well before `drain_timeout`.
#[tokio::test]
async fn tunnels_are_counted_and_held_by_the_drain() {
    let ws = upgrade_origin(false).await;
    let always = upgrade_origin(true).await;
    let mut p = Proxy::start(&format!("drain_timeout: 60s\n{}", yaml(ws, always)));
    assert_eq!(upgrades(&p, "total").await, 0.0);

    let (head, rest, mut s) = handshake(p.addr("main"), "/ws/drain").await;
    assert!(head.starts_with("http/1.1 101"), "{head}");
    let got = read_exactly(&mut s, rest, 3).await;
    assert_eq!(&got[..], b"hi!");
    assert_eq!(upgrades(&p, "total").await, 1.0);
    assert_eq!(upgrades(&p, "active").await, 1.0);
    let cx = p
        .stat_labels("attache_downstream_cx_active", &[("listener", "main")])
        .await;
    assert_eq!(cx, 1.0, "the tunnel's connection is still open");
    // An open tunnel is active on its endpoint, like a TCP proxy connection.
    let (_, clusters) = p.admin_get("/clusters").await;
    assert!(
        clusters.contains(&format!("ws::{ws}::rq_active::1")),
        "{clusters}"
    );

    p.signal(15);
    eventually(Duration::from_secs(30), "the drain to start", || async {
        (p.admin_get("/ready").await == (503, "DRAINING\n".to_string())).then_some(())
    })
    .await;
    s.write_all(b"still here")
        .await
        .expect("write during drain");
    let got = read_exactly(&mut s, Vec::new(), 10).await;
    assert_eq!(&got[..], b"STILL HERE");
    assert_eq!(
        p.wait_exit(Duration::from_millis(200)),
        None,
        "exited under a tunnel"
    );

    drop(s);
    let code = tokio::task::spawn_blocking(move || p.wait_exit(Duration::from_secs(30)))
        .await
        .expect("wait task");
    assert_eq!(code, Some(0), "exit once the tunnel closed");
}

async fn upgrades(p: &Proxy, which: &str) -> f64 {
    let name = format!("attache_downstream_upgrade_{which}");
    p.stat_labels(&name, &[("listener", "main")]).await
}
