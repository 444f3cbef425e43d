//! One way to use an endpoint, whatever the listener speaks: TCP connections and
//! Thrift calls go through the same cluster attempt as HTTP requests, so outlier
//! detection, least_request and the `max_connections` breaker hold for them too,
//! and Thrift connections live on the endpoint's pool (they survive reloads and
//! expire when idle). The real binary, real peers, 127.0.0.1:0.

mod support;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use support::thrift_peer::{start_origin, CallErr, Client, Protocol, Transport};
use support::{blocking, dead_port, eventually, Proxy};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const WAIT: Duration = Duration::from_secs(20);

/// A TCP echo server that counts the connections it accepted.
struct Echo {
    addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
}

async fn echo() -> Echo {
    counting(|mut s| async move {
        let (mut r, mut w) = s.split();
        let _ = tokio::io::copy(&mut r, &mut w).await;
    })
    .await
}

/// A relay in front of `to` that counts the connections it accepted (how many
/// upstream connections the proxy opened).
async fn counting_relay(to: SocketAddr) -> Echo {
    counting(move |mut s| async move {
        if let Ok(mut up) = TcpStream::connect(to).await {
            let _ = tokio::io::copy_bidirectional(&mut s, &mut up).await;
        }
    })
    .await
}

/// A server running `handle` on each connection, counting the connections.
async fn counting<F, Fut>(handle: F) -> Echo
where
    F: Fn(TcpStream) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let accepted = Arc::new(AtomicUsize::new(0));
    let seen = accepted.clone();
    let addr = support::serve_each(move |s| {
        seen.fetch_add(1, Ordering::SeqCst);
        handle(s)
    })
    .await;
    Echo { addr, accepted }
}

fn tcp_proxy(endpoints: &[SocketAddr], cluster_keys: &str) -> Proxy {
    let eps: Vec<String> = endpoints.iter().map(|a| format!("\"{a}\"")).collect();
    Proxy::start(&format!(
        "
listeners:
  - name: db
    address: 127.0.0.1:0
    protocol: tcp
    tcp: {{ cluster: c, connect_attempts: 3 }}
clusters:
  - {{ name: c, endpoints: [{}], connect_timeout: 2s{cluster_keys} }}
",
        eps.join(", ")
    ))
}

/// A connection through the proxy that has reached the upstream (one echoed line).
async fn open(p: &Proxy) -> TcpStream {
    let mut s = TcpStream::connect(p.addr("db")).await.expect("connect");
    s.write_all(b"ping\n").await.expect("write");
    let mut got = [0u8; 5];
    tokio::time::timeout(WAIT, s.read_exact(&mut got))
        .await
        .expect("echo in time")
        .expect("echo");
    assert_eq!(&got, b"ping\n");
    s
}

async fn endpoints(p: &Proxy) -> Vec<serde_json::Value> {
    let (_, body) = p.admin_get("/clusters?format=json").await;
    let v: serde_json::Value = serde_json::from_str(&body).expect("clusters json");
    v["clusters"][0]["endpoints"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

async fn endpoint(p: &Proxy, addr: SocketAddr) -> serde_json::Value {
    endpoints(p)
        .await
        .into_iter()
        .find(|e| e["address"] == addr.to_string())
        .expect("endpoint listed")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_dead_endpoint_is_ejected_by_outlier_detection() {
    let live = echo().await;
    let dead = dead_port();
    let p = tcp_proxy(
        &[dead, live.addr],
        ", outlier_detection: { consecutive_connect_failure: 2, consecutive_5xx: 0, \
         max_ejection_percent: 50, base_ejection_time: 60s }",
    );
    // Round robin sends every other connection's first attempt to the dead one;
    // each retries onto the live one.
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(open(&p).await);
    }
    let e = endpoint(&p, dead).await;
    assert_eq!(e["ejected"], true, "{e}");
    assert_eq!(e["cx_connect_fail"], 2, "{e}");
    assert_eq!(
        p.stat("attache_outlier_ejections_total{cluster=\"c\"}")
            .await,
        1.0
    );
    // Ejected: no new connection tries it.
    let fails = p
        .stat("attache_tcp_connect_fail_total{listener=\"db\"}")
        .await;
    for _ in 0..4 {
        held.push(open(&p).await);
    }
    assert_eq!(
        p.stat("attache_tcp_connect_fail_total{listener=\"db\"}")
            .await,
        fails
    );
    assert_eq!(live.accepted.load(Ordering::SeqCst), 8);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_connections_are_capped_by_max_connections() {
    let up = echo().await;
    let p = tcp_proxy(&[up.addr], ", circuit_breakers: { max_connections: 2 }");
    let first = open(&p).await;
    let _second = open(&p).await;
    // The third is closed without reaching the upstream.
    let mut third = TcpStream::connect(p.addr("db")).await.expect("connect");
    let _ = third.write_all(b"ping\n").await;
    let mut buf = Vec::new();
    let read = tokio::time::timeout(WAIT, third.read_to_end(&mut buf)).await;
    assert!(matches!(read, Ok(Ok(0)) | Ok(Err(_))), "{read:?} {buf:?}");
    assert_eq!(up.accepted.load(Ordering::SeqCst), 2);
    let overflow = "attache_upstream_rq_overflow_total{breaker=\"max_connections\",cluster=\"c\"}";
    assert!(p.stat(overflow).await >= 1.0);
    // A closed connection frees its slot.
    drop(first);
    eventually(WAIT, "slot released", || async {
        let (_, body) = p.admin_get("/clusters?format=json").await;
        let v: serde_json::Value = serde_json::from_str(&body).ok()?;
        (v["clusters"][0]["circuit_breakers"]["connections"]["open"] == 1).then_some(())
    })
    .await;
    let _again = open(&p).await;
    assert_eq!(up.accepted.load(Ordering::SeqCst), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn least_request_sees_tcp_connections() {
    let (a, b) = (echo().await, echo().await);
    let p = tcp_proxy(&[a.addr, b.addr], ", lb_policy: least_request");
    // Each held connection is active on its endpoint, so least_request (two
    // distinct candidates of two) always sends the next one to the less busy
    // endpoint: an exact split. Blind to TCP, it would be a coin toss each time.
    let mut held = Vec::new();
    for _ in 0..10 {
        held.push(open(&p).await);
    }
    assert_eq!(a.accepted.load(Ordering::SeqCst), 5);
    assert_eq!(b.accepted.load(Ordering::SeqCst), 5);
    for e in endpoints(&p).await {
        assert_eq!(e["rq_active"], 5, "{e}");
    }
    drop(held);
    eventually(WAIT, "connections end their attempts", || async {
        let eps = endpoints(&p).await;
        eps.iter().all(|e| e["rq_active"] == 0).then_some(())
    })
    .await;
}

// ---- Thrift ------------------------------------------------------------------

fn thrift_config(endpoint: SocketAddr, cluster_keys: &str, route_name: &str) -> String {
    support::yaml::thrift_listener(
        &format!(
            "    thrift:
      max_concurrent_calls: 4
      routes:
        - name: {route_name}
          route: {{ cluster: users }}"
        ),
        &format!(
            "  - {{ name: users, endpoints: [\"{endpoint}\"], connect_timeout: 2s{cluster_keys} }}"
        ),
    )
}

async fn call(p: &Proxy, id: i64) -> Result<String, CallErr> {
    let addr = p.addr("t");
    blocking(move || Client::connect(addr, Protocol::Binary, Transport::Framed, None).get_user(id))
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thrift_connections_are_capped_by_max_connections() {
    let origin = start_origin("u", Protocol::Binary, Transport::Framed);
    let p = Proxy::start(&thrift_config(
        origin.addr,
        ", circuit_breakers: { max_connections: 1 }",
        "users",
    ));
    // Two slow calls at once (getUser(950) answers after 200ms): one holds the
    // only connection, the other overflows and is answered by the proxy.
    let (x, y) = tokio::join!(call(&p, 950), call(&p, 950));
    let mut got = [format!("{x:?}"), format!("{y:?}")];
    got.sort();
    assert_eq!(
        got,
        [
            "Err(App(InternalError))".to_owned(),
            "Ok(\"u:950\")".to_owned()
        ]
    );
    let overflow =
        "attache_upstream_rq_overflow_total{breaker=\"max_connections\",cluster=\"users\"}";
    assert_eq!(p.stat(overflow).await, 1.0);
    // The connection went back to the endpoint's pool and serves the next call.
    assert_eq!(format!("{:?}", call(&p, 1).await), "Ok(\"u:1\")");
    assert_eq!(p.stat(overflow).await, 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thrift_connections_survive_reloads_and_expire_when_idle() {
    let origin = start_origin("u", Protocol::Binary, Transport::Framed);
    let relay = counting_relay(origin.addr).await;
    // `max_connections` set so /clusters counts open connections.
    let keys = ", idle_timeout: 2s, circuit_breakers: { max_connections: 10 }";
    let p = Proxy::start(&thrift_config(relay.addr, keys, "users"));
    assert_eq!(format!("{:?}", call(&p, 1).await), "Ok(\"u:1\")");
    // A reload that changes the listener and keeps the cluster.
    std::fs::write(&p.config_path, thrift_config(relay.addr, keys, "users_v2"))
        .expect("write config");
    let (status, body) = p.admin_post("/reload").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(format!("{:?}", call(&p, 2).await), "Ok(\"u:2\")");
    assert_eq!(
        relay.accepted.load(Ordering::SeqCst),
        1,
        "the pooled connection outlived the reload"
    );
    // Idle past `idle_timeout`: the sweep closes it.
    eventually(WAIT, "idle connection closed", || async {
        let (_, body) = p.admin_get("/clusters?format=json").await;
        let v: serde_json::Value = serde_json::from_str(&body).ok()?;
        (v["clusters"][0]["circuit_breakers"]["connections"]["open"] == 0).then_some(())
    })
    .await;
    assert_eq!(format!("{:?}", call(&p, 3).await), "Ok(\"u:3\")");
    assert_eq!(relay.accepted.load(Ordering::SeqCst), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thrift_exceptions_eject_the_endpoint() {
    let origin = start_origin("u", Protocol::Binary, Transport::Framed);
    let p = Proxy::start(&thrift_config(
        origin.addr,
        ", panic_threshold: 0, outlier_detection: { consecutive_exceptions: 2, \
         max_ejection_percent: 100, base_ejection_time: 60s }",
        "users",
    ));
    // getUser(-1) raises a TApplicationException.
    for _ in 0..2 {
        let r = call(&p, -1).await;
        assert!(matches!(r, Err(CallErr::App(_))), "{r:?}");
    }
    assert_eq!(endpoint_json(&p).await["ejected"], true);
    // Out of rotation: the proxy answers itself (no healthy upstream).
    assert_eq!(
        format!("{:?}", call(&p, 1).await),
        "Err(App(InternalError))"
    );
}

async fn endpoint_json(p: &Proxy) -> serde_json::Value {
    endpoints(p).await.into_iter().next().expect("one endpoint")
}
