//! Routing through the real binary to real origins: every match kind and action.

mod support;

use std::time::Duration;

use support::yaml::Routes;
use support::{get, Origin, Proxy};

fn json(r: &support::Resp) -> serde_json::Value {
    serde_json::from_slice(&r.body).unwrap_or_else(|e| panic!("not json ({e}): {}", r.text()))
}

async fn two_origins() -> (Origin, Origin) {
    (Origin::start("a").await, Origin::start("b").await)
}

fn config(a: &Origin, b: &Origin) -> String {
    format!(
        r#"
listeners:
  - name: main
    address: 127.0.0.1:0
    virtual_hosts:
      - name: api
        domains: ["api.example.com", "*.api.example.com"]
        routes:
          - name: api_all
            match: {{ prefix: / }}
            route: {{ cluster: b }}
      - name: web
        domains: ["*"]
        routes:
          - name: canary
            match: {{ prefix: /app/, headers: [{{ name: x-canary, exact: "1" }}] }}
            route: {{ cluster: b }}
          - name: app
            match: {{ prefix: /app/ }}
            route: {{ cluster: a, prefix_rewrite: /v1/ }}
          - name: exact
            match: {{ path: /exact }}
            route: {{ cluster: b }}
          - name: rx
            match: {{ regex: "/items/[0-9]+" }}
            route: {{ cluster: b, host_rewrite: items.internal }}
          - name: q
            match: {{ prefix: /search, query: [{{ name: debug, exact: "on" }}] }}
            route: {{ cluster: b }}
          - name: post_only
            match: {{ prefix: /submit, methods: [POST] }}
            direct_response: {{ status: 201, body: "created\n" }}
          - name: by_header
            match: {{ prefix: /pick }}
            route: {{ cluster_header: x-cluster }}
          - name: old
            match: {{ prefix: /old/ }}
            redirect: {{ prefix_rewrite: /new/, response_code: 308 }}
          - name: elsewhere
            match: {{ path: /moved }}
            redirect: {{ host_redirect: example.org, path_redirect: /landing, scheme_redirect: https }}
          - name: healthz
            match: {{ path: /healthz }}
            direct_response: {{ status: 200, body: "ok\n" }}
          - name: fallback
            match: {{ prefix: / }}
            route: {{ cluster: a }}
clusters:
  - name: a
    endpoints: ["{a}"]
  - name: b
    endpoints: ["{b}"]
"#,
        a = a.addr,
        b = b.addr
    )
}

#[tokio::test]
async fn routes_each_match_kind_and_action() {
    let (a, b) = two_origins().await;
    let p = Proxy::start(&config(&a, &b));

    // Prefix + prefix_rewrite.
    let r = get(&p.url("main", "/app/users?id=7"), &[]).await;
    assert_eq!(r.status, 200);
    let j = json(&r);
    assert_eq!(j["name"], "a");
    assert_eq!(j["path"], "/v1/users?id=7");

    // Header canary.
    let r = get(&p.url("main", "/app/users"), &[("x-canary", "1")]).await;
    assert_eq!(json(&r)["name"], "b");
    assert_eq!(json(&r)["path"], "/app/users");

    // Exact path: /exact matches, /exact/x falls through to the fallback.
    assert_eq!(json(&get(&p.url("main", "/exact"), &[]).await)["name"], "b");
    assert_eq!(
        json(&get(&p.url("main", "/exact/x"), &[]).await)["name"],
        "a"
    );

    // Regex (anchored) + host_rewrite.
    let r = get(&p.url("main", "/items/42"), &[]).await;
    assert_eq!(json(&r)["name"], "b");
    assert_eq!(json(&r)["headers"]["host"], "items.internal");
    assert_eq!(
        json(&get(&p.url("main", "/items/42x"), &[]).await)["name"],
        "a"
    );

    // Query matcher.
    assert_eq!(
        json(&get(&p.url("main", "/search?debug=on"), &[]).await)["name"],
        "b"
    );
    assert_eq!(
        json(&get(&p.url("main", "/search?debug=off"), &[]).await)["name"],
        "a"
    );

    // Method matcher + direct response.
    let r = support::send(
        "POST",
        &p.url("main", "/submit"),
        &[],
        bytes::Bytes::from_static(b"x"),
    )
    .await;
    assert_eq!((r.status, r.text().as_str()), (201, "created\n"));
    assert_eq!(
        json(&get(&p.url("main", "/submit"), &[]).await)["name"],
        "a"
    );

    // Virtual hosts: exact and wildcard suffix domains, port ignored.
    assert_eq!(
        json(&get(&p.url("main", "/x"), &[("host", "api.example.com:8080")]).await)["name"],
        "b"
    );
    assert_eq!(
        json(&get(&p.url("main", "/x"), &[("host", "eu.api.example.com")]).await)["name"],
        "b"
    );
    assert_eq!(
        json(&get(&p.url("main", "/x"), &[("host", "www.example.com")]).await)["name"],
        "a"
    );

    // Redirects.
    let r = get(
        &p.url("main", "/old/page?x=1"),
        &[("host", "www.example.com")],
    )
    .await;
    assert_eq!(r.status, 308);
    assert_eq!(
        r.header("location").as_deref(),
        Some("http://www.example.com/new/page?x=1")
    );
    let r = get(&p.url("main", "/moved"), &[]).await;
    assert_eq!(r.status, 301);
    assert_eq!(
        r.header("location").as_deref(),
        Some("https://example.org/landing")
    );

    // Direct response.
    let r = get(&p.url("main", "/healthz"), &[]).await;
    assert_eq!((r.status, r.text().as_str()), (200, "ok\n"));
    assert_eq!(r.header("content-type").as_deref(), Some("text/plain"));
}

#[tokio::test]
async fn cluster_header_picks_configured_clusters_only() {
    let (a, b) = two_origins().await;
    let p = Proxy::start(&config(&a, &b));
    assert_eq!(
        json(&get(&p.url("main", "/pick"), &[("x-cluster", "b")]).await)["name"],
        "b"
    );
    assert_eq!(
        json(&get(&p.url("main", "/pick"), &[("x-cluster", "a")]).await)["name"],
        "a"
    );
    // An unknown name is a 503, never a lookup of an arbitrary host.
    let r = get(
        &p.url("main", "/pick"),
        &[("x-cluster", "169.254.169.254:80")],
    )
    .await;
    assert_eq!(r.status, 503);
    let r = get(&p.url("main", "/pick"), &[]).await;
    assert_eq!(r.status, 503);
    assert_eq!(
        p.stat("attache_local_reply_total{flag=\"NC\",listener=\"main\"}")
            .await,
        2.0
    );
}

#[tokio::test]
async fn forwards_proxy_headers_and_strips_hop_by_hop() {
    let (a, b) = two_origins().await;
    let p = Proxy::start(&config(&a, &b));
    let r = get(
        &p.url("main", "/anything"),
        &[
            ("x-forwarded-for", "203.0.113.9"),
            ("connection", "keep-alive, x-secret-hop"),
            ("x-secret-hop", "1"),
            ("keep-alive", "timeout=5"),
            ("x-request-id", "req-123"),
        ],
    )
    .await;
    let j = json(&r);
    let h = &j["headers"];
    assert_eq!(h["x-forwarded-for"], "203.0.113.9, 127.0.0.1");
    assert_eq!(h["x-forwarded-proto"], "http");
    assert_eq!(h["x-request-id"], "req-123");
    assert!(h.get("x-secret-hop").is_none(), "{h}");
    assert!(h.get("keep-alive").is_none(), "{h}");
    // A request id is generated when absent.
    let j = json(&get(&p.url("main", "/anything"), &[]).await);
    let id = j["headers"]["x-request-id"].as_str().expect("generated id");
    assert_eq!(id.len(), 36);
    // A `Connection` header naming `Host` cannot strip the Host upstream sees.
    let j = json(
        &get(
            &p.url("main", "/anything"),
            &[("connection", "host, te"), ("te", "gzip")],
        )
        .await,
    );
    let host = j["headers"]["host"].as_str().expect("host upstream");
    assert!(host.starts_with("127.0.0.1:"), "{j}");
    assert!(j["headers"].get("te").is_none(), "{j}");
}

#[tokio::test]
async fn weighted_split_follows_weights() {
    let (a, b) = two_origins().await;
    let routes = "- match: { prefix: / }
  route:
    weighted_clusters:
      - { cluster: a, weight: 90 }
      - { cluster: b, weight: 10 }";
    let yaml = Routes::new(routes)
        .cluster("a", &[a.addr], "")
        .cluster("b", &[b.addr], "")
        .yaml();
    let p = Proxy::start(&yaml);
    let client: hyper_util::client::legacy::Client<_, http_body_util::Empty<bytes::Bytes>> =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build(hyper_util::client::legacy::connect::HttpConnector::new());
    let url: http::Uri = p.url("main", "/w").parse().expect("uri");
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let client = client.clone();
        let url = url.clone();
        tasks.push(tokio::spawn(async move {
            for _ in 0..250 {
                let r = client.get(url.clone()).await.expect("request");
                assert_eq!(r.status(), 200);
                let _ = http_body_util::BodyExt::collect(r.into_body()).await;
            }
        }));
    }
    for t in tasks {
        tokio::time::timeout(Duration::from_secs(60), t)
            .await
            .expect("load finished")
            .expect("task");
    }
    let (ha, hb) = (a.hits(), b.hits());
    assert_eq!(ha + hb, 2000);
    let share = ha as f64 / 2000.0;
    assert!((0.87..=0.93).contains(&share), "a got {ha}, b got {hb}");
    assert_eq!(
        p.stat("attache_upstream_rq_total{cluster=\"a\",code_class=\"2xx\"}")
            .await,
        ha as f64
    );
    assert_eq!(
        p.stat("attache_downstream_rq_total{code_class=\"2xx\",listener=\"main\"}")
            .await,
        2000.0
    );
}

#[tokio::test]
async fn http2_prior_knowledge_via_curl_and_h2_upstream() {
    let a = Origin::start("a").await;
    let h2 = Origin::start_h2("h2").await;
    let routes = "- match: { prefix: /h2/ }
  route: { cluster: h2 }
- match: { prefix: / }
  route: { cluster: a }";
    let yaml = Routes::new(routes)
        .cluster("a", &[a.addr], "")
        .cluster("h2", &[h2.addr], "protocol: http2")
        .yaml();
    let p = Proxy::start(&yaml);
    let (ok, out) = support::curl(&[
        "--http2-prior-knowledge",
        "-w",
        "\n%{http_version}",
        &p.url("main", "/hello"),
    ])
    .await;
    assert!(ok);
    let (body, version) = out.rsplit_once('\n').expect("version line");
    assert_eq!(version, "2");
    let j: serde_json::Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert_eq!(j["name"], "a");
    assert_eq!(j["version"], "HTTP/1.1");
    // Downstream HTTP/1.1 to an HTTP/2 upstream.
    let r = get(&p.url("main", "/h2/x"), &[]).await;
    assert_eq!(r.status, 200);
    assert_eq!(json(&r)["version"], "HTTP/2.0");
    // Many concurrent h2 streams on one downstream connection.
    let (ok, out) = support::curl(&[
        "--http2-prior-knowledge",
        "--parallel",
        "--parallel-immediate",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}\n",
        &p.url("main", "/h2/[1-20]"),
    ])
    .await;
    assert!(ok);
    assert_eq!(out.lines().filter(|l| *l == "200").count(), 20, "{out}");
}

/// A local reply to an HTTP/2 request whose body is still arriving (a direct
/// response, no route, an open circuit breaker, a refused upstream connect)
/// reaches curl complete: the unread body is read and dropped
/// after the response instead of the stream being cancelled under the reply.
/// Before the fix, curl failed (exit 92) on most of these uploads.
#[tokio::test]
async fn http2_local_reply_during_upload_completes() {
    let routes = r#"
- match: { prefix: /deny }
  direct_response: { status: 403, body: "denied" }
- match: { prefix: /full }
  route: { cluster: full }
- match: { prefix: /dead }
  route: { cluster: dead }"#;
    let discard: std::net::SocketAddr = "127.0.0.1:9".parse().expect("addr");
    let p = Proxy::start(
        &Routes::new(routes)
            .cluster("full", &[discard], "circuit_breakers: { max_requests: 0 }")
            .cluster("dead", &[discard], "")
            .yaml(),
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let upload = dir.path().join("upload.bin");
    std::fs::write(&upload, vec![7u8; 300_000]).expect("write upload");
    let data = format!("@{}", upload.display());
    // A 503 from the circuit breaker or a refused connect: the body was handed to
    // the upstream call, which never sent it, and comes back to be discarded the
    // same way.
    for (path, want) in [
        ("/deny", "denied\n403"),
        ("/nowhere", "\n404"),
        ("/full", "\n503"),
        ("/dead", "\n503"),
    ] {
        for i in 0..8 {
            let (ok, out) = support::curl(&[
                "--http2-prior-knowledge",
                "--data-binary",
                &data,
                "-w",
                "\n%{http_code}",
                &p.url("main", path),
            ])
            .await;
            assert!(ok, "{path} upload {i}: curl failed: {out}");
            assert!(out.ends_with(want), "{path} upload {i}: {out:?}");
        }
    }
    // The proxy still serves on the same listener.
    let r = get(&p.url("main", "/deny"), &[]).await;
    assert_eq!(r.status, 403);
}
