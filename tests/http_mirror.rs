//! Request mirroring through the real binary: a primary origin and a shadow origin
//! that records what it receives (and can be slow or absent).

mod support;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use support::{dead_port, eventually, send, Origin, Proxy};

/// One request as the shadow saw it.
#[derive(Clone, Debug)]
struct Seen {
    method: String,
    path: String,
    host: String,
    body: Bytes,
}

#[derive(Clone, Default)]
struct Shadow {
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Shadow {
    /// A shadow origin that answers after `delay`.
    async fn start(delay: Duration) -> (Shadow, SocketAddr) {
        let sh = Shadow::default();
        let seen = sh.seen.clone();
        let addr = support::serve_collected(move |parts: http::request::Parts, body: Bytes| {
            let host = parts.headers.get("host").and_then(|v| v.to_str().ok());
            seen.lock().expect("lock").push(Seen {
                method: parts.method.to_string(),
                path: parts.uri.to_string(),
                host: host.unwrap_or("").to_string(),
                body,
            });
            async move {
                tokio::time::sleep(delay).await;
                http::Response::new(Full::new(Bytes::from_static(b"shadow answer")))
            }
        })
        .await;
        (sh, addr)
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().expect("lock").clone()
    }
}

fn config(primary: SocketAddr, shadow: SocketAddr, mirror: &str, shadow_extra: &str) -> String {
    format!(
        r#"
listeners:
  - name: web
    address: 127.0.0.1:0
    virtual_hosts:
      - name: all
        domains: ["*"]
        routes:
          - name: api
            match: {{ prefix: / }}
            route:
              cluster: primary
              mirror: [{mirror}]
clusters:
  - name: primary
    endpoints: ["{primary}"]
  - name: shadow
    endpoints: ["{shadow}"]{shadow_extra}
"#
    )
}

/// A primary origin, a shadow answering after `delay`, and the proxy between.
async fn setup(delay: Duration, mirror: &str, shadow_extra: &str) -> (Origin, Shadow, Proxy) {
    let primary = Origin::start("primary").await;
    let (shadow, saddr) = Shadow::start(delay).await;
    let p = Proxy::start(&config(primary.addr, saddr, mirror, shadow_extra));
    (primary, shadow, p)
}

/// `n` GETs answered 200 by the primary.
async fn get_n(p: &Proxy, prefix: &str, n: usize) {
    for i in 0..n {
        let r = send(
            "GET",
            &p.url("web", &format!("/{prefix}{i}")),
            &[],
            Bytes::new(),
        )
        .await;
        assert_eq!(r.status, 200, "{}", r.text());
    }
}

async fn mirror_stat(p: &Proxy, result: &str) -> f64 {
    p.stat_labels(
        "attache_mirror_requests_total",
        &[("cluster", "shadow"), ("result", result)],
    )
    .await
}

async fn wait_stat(p: &Proxy, result: &str, at_least: f64) {
    eventually(
        Duration::from_secs(30),
        &format!("mirror {result} >= {at_least}"),
        || async move { (mirror_stat(p, result).await >= at_least).then_some(()) },
    )
    .await;
}

#[tokio::test]
async fn a_full_mirror_copies_method_path_body_with_a_shadow_host() {
    let (_primary, shadow, p) = setup(Duration::ZERO, "{ cluster: shadow }", "").await;
    let r = send(
        "POST",
        &p.url("web", "/api/orders?id=7"),
        &[
            ("host", "shop.example:8080"),
            ("content-type", "text/plain"),
        ],
        Bytes::from_static(b"order body"),
    )
    .await;
    assert_eq!(r.status, 200);
    let v: serde_json::Value = serde_json::from_slice(&r.body).expect("json");
    assert_eq!(v["name"], "primary");
    // The primary's Host is untouched.
    assert_eq!(v["headers"]["host"], "shop.example:8080");
    wait_stat(&p, "sent", 1.0).await;
    let seen = shadow.seen();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(seen[0].method, "POST");
    assert_eq!(seen[0].path, "/api/orders?id=7");
    assert_eq!(seen[0].host, "shop.example-shadow:8080");
    assert_eq!(&seen[0].body[..], b"order body");
    // A GET without a body is copied too.
    let r = send(
        "GET",
        &p.url("web", "/g"),
        &[("host", "shop.example")],
        Bytes::new(),
    )
    .await;
    assert_eq!(r.status, 200);
    wait_stat(&p, "sent", 2.0).await;
    let seen = shadow.seen();
    assert_eq!(
        (seen[1].method.as_str(), seen[1].host.as_str()),
        ("GET", "shop.example-shadow")
    );
    assert_eq!(
        mirror_stat(&p, "failed").await + mirror_stat(&p, "skipped").await,
        0.0
    );
}

#[tokio::test]
async fn a_slow_shadow_does_not_delay_the_client() {
    let (_primary, shadow, p) = setup(Duration::from_secs(20), "{ cluster: shadow }", "").await;
    let started = Instant::now();
    get_n(&p, "s", 3).await;
    // Three requests against a 20 s shadow: far below one shadow answer (and
    // generous for a loaded machine).
    let took = started.elapsed();
    assert!(took < Duration::from_secs(10), "client waited {took:?}");
    eventually(Duration::from_secs(20), "the shadow got the copies", || {
        let n = shadow.seen().len();
        async move { (n == 3).then_some(()) }
    })
    .await;
}

#[tokio::test]
async fn a_dead_shadow_leaves_the_client_alone_and_counts_failures() {
    let primary = Origin::start("primary").await;
    let p = Proxy::start(&config(
        primary.addr,
        dead_port(),
        "{ cluster: shadow }",
        "",
    ));
    get_n(&p, "d", 4).await;
    wait_stat(&p, "failed", 4.0).await;
    assert_eq!(mirror_stat(&p, "sent").await, 0.0);
    assert_eq!(primary.hits(), 4);
}

#[tokio::test]
async fn percent_decides_the_share_copied() {
    let (primary, none, p) = setup(Duration::ZERO, "{ cluster: shadow, percent: 0 }", "").await;
    get_n(&p, "z", 50).await;
    assert!(none.seen().is_empty());
    assert_eq!(
        mirror_stat(&p, "sent").await + mirror_stat(&p, "skipped").await,
        0.0
    );

    drop(primary);
    let (_primary, half, p) = setup(Duration::ZERO, "{ cluster: shadow, percent: 50 }", "").await;
    let n = 200;
    get_n(&p, "h", n).await;
    // Binomial(200, 0.5): 60..140 is over 5 standard deviations either way.
    eventually(Duration::from_secs(30), "copies settled", || {
        let p = &p;
        let seen = half.seen().len() as f64;
        async move {
            let done = mirror_stat(p, "sent").await + mirror_stat(p, "failed").await;
            (seen >= 60.0 && done == seen).then_some(())
        }
    })
    .await;
    let seen = half.seen().len();
    assert!((60..=140).contains(&seen), "{seen} of {n} mirrored at 50%");
}

#[tokio::test]
async fn bodies_over_the_limit_or_streamed_are_skipped() {
    let (_primary, shadow, p) = setup(
        Duration::ZERO,
        "{ cluster: shadow, max_body_bytes: 16 }",
        "",
    )
    .await;
    let big = Bytes::from(vec![b'x'; 100]);
    let r = send("POST", &p.url("web", "/upload"), &[], big).await;
    assert_eq!((r.status, r.text().as_str()), (200, "100"));
    wait_stat(&p, "skipped", 1.0).await;
    // A chunked body (no length) is streamed to the primary, so not copied.
    let chunked = support::raw_exchange(
        p.addr("web"),
        b"POST /upload HTTP/1.1\r\nhost: a\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
        Duration::from_secs(10),
    )
    .await;
    assert!(chunked.starts_with("HTTP/1.1 200"), "{chunked}");
    wait_stat(&p, "skipped", 2.0).await;
    // Within the limit: copied.
    let r = send(
        "POST",
        &p.url("web", "/upload"),
        &[],
        Bytes::from_static(b"small"),
    )
    .await;
    assert_eq!(r.status, 200);
    wait_stat(&p, "sent", 1.0).await;
    let seen = shadow.seen();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(&seen[0].body[..], b"small");
}

#[tokio::test]
async fn the_shadow_clusters_breakers_bound_the_extra_load() {
    let (_primary, shadow, p) = setup(
        Duration::from_secs(10),
        "{ cluster: shadow }",
        "\n    circuit_breakers: { max_requests: 1 }",
    )
    .await;
    get_n(&p, "b", 3).await;
    // The first copy holds the only slot for 10 s (under the 15 s mirror timeout,
    // and long enough for a loaded machine); the next two are skipped.
    assert_eq!(mirror_stat(&p, "skipped").await, 2.0);
    wait_stat(&p, "sent", 1.0).await;
    assert_eq!(shadow.seen().len(), 1);
}

#[test]
fn an_unknown_mirror_cluster_or_bad_percent_is_reported_with_its_position() {
    let yaml = config(
        "127.0.0.1:1".parse().expect("addr"),
        "127.0.0.1:2".parse().expect("addr"),
        "{ cluster: shadwo }, { cluster: shadow, percent: 150 }",
        "",
    );
    let (code, out, path) = support::validate("mirror.yaml", &yaml);
    assert_eq!(code, 1, "{out}");
    let file = path.display().to_string();
    assert!(out.contains(&format!("{file}:13:35")), "{out}");
    assert!(
        out.contains("unknown cluster `shadwo`; did you mean `shadow`?"),
        "{out}"
    );
    assert!(out.contains(&format!("{file}:13:73")), "{out}");
    assert!(
        out.contains("percent 150 is not between 0 and 100"),
        "{out}"
    );
}
