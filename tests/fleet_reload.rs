//! Living fleet: local rate limit, hot reload (valid under load, invalid, watched
//! file, cluster state kept) and hot restart under load.

mod support;

use std::time::{Duration, Instant};

use support::fleet::{client, cluster_json, failures, request, Load, Node};
use support::{eventually, Proxy};

/// How long a reload or the load may take to show: generous, the machine may be
/// loaded (each wait still fails if it never happens).
const WAIT: Duration = Duration::from_secs(30);

fn config(port: u16, extra_route: &str, a: &Node, b: &Node) -> String {
    format!(
        r#"admin:
  address: 127.0.0.1:0
drain_timeout: 5s
listeners:
  - name: web
    address: 127.0.0.1:{port}
    virtual_hosts:
      - name: all
        domains: ["*"]
        routes:
{extra_route}
          - match: {{ prefix: / }}
            route: {{ cluster: app }}
clusters:
  - name: app
    endpoints: ["{}"]
    health_check: {{ tcp: {{}}, interval: 200ms }}
  - name: other
    endpoints: ["{}"]
"#,
        a.addr, b.addr
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limit_answers_429_at_the_configured_rate() {
    let a = Node::start("a").await;
    let p = Proxy::start(&format!(
        r#"
listeners:
  - name: web
    address: 127.0.0.1:0
    filters:
      - local_rate_limit: {{ max_tokens: 10, tokens_per_fill: 10, fill_interval: 1s }}
    virtual_hosts:
      - name: all
        domains: ["*"]
        routes:
          - match: {{ prefix: /unlimited }}
            route: {{ cluster: app }}
            filter_overrides: {{ local_rate_limit: {{ max_tokens: 100000 }} }}
          - match: {{ prefix: / }}
            route: {{ cluster: app }}
clusters:
  - name: app
    endpoints: ["{}"]
"#,
        a.addr
    ));
    let start = Instant::now();
    let load = Load::start(p.url("web", "/"), 4, true);
    let free = Load::start(p.url("web", "/unlimited"), 1, true);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let samples = load.stop().await;
    let elapsed = start.elapsed().as_secs_f64();
    let ok = samples
        .iter()
        .filter(|s| matches!(s.result, Ok((200, _))))
        .count();
    let limited = samples
        .iter()
        .filter(|s| matches!(s.result, Ok((429, _))))
        .count();
    // 10 to start, then 10 per second.
    let expected = 10.0 + 10.0 * elapsed.floor();
    assert!(
        (ok as f64) <= expected + 10.0 && (ok as f64) >= expected - 10.0,
        "{ok} allowed in {elapsed:.1}s"
    );
    assert!(limited > 100, "{limited}");
    assert_eq!(ok + limited, samples.len());
    let (n, kinds) = failures(&free.stop().await);
    assert_eq!(n, 0, "per-route override: {kinds:?}");
    let c = client(false);
    let mut saw_retry_after = false;
    for _ in 0..50 {
        let req = http::Request::builder()
            .uri(p.url("web", "/"))
            .body(http_body_util::Full::new(bytes::Bytes::new()))
            .expect("request");
        let rsp = c.request(req).await.expect("response");
        if rsp.status() == 429 {
            let ra = rsp.headers()["retry-after"].to_str().expect("ascii");
            assert!(ra.parse::<u64>().is_ok_and(|s| s >= 1), "{ra}");
            saw_retry_after = true;
            break;
        }
    }
    assert!(saw_retry_after);
    let limited_stat = p
        .stat("attache_local_rate_limit_total{listener=\"web\",result=\"limited\"}")
        .await;
    assert!(limited_stat >= limited as f64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_under_load_loses_nothing_and_keeps_unchanged_clusters() {
    let (a, b) = (Node::start("a").await, Node::start("b").await);
    // Port 0 in every version: a listener whose configured address is unchanged
    // keeps its socket across reloads.
    let port = 0;
    let p = Proxy::start(&config(port, "", &a, &b));
    let ka = Load::start(p.url("web", "/"), 3, true);
    let fresh = Load::start(p.url("web", "/"), 2, false);
    eventually(WAIT, "load", || async { (ka.count() > 50).then_some(()) }).await;
    let before = cluster_json(p.admin, "app").await["endpoints"][0]["rq_total"]
        .as_u64()
        .expect("rq_total");
    for i in 0..5 {
        let route = format!(
            "          - match: {{ prefix: /v{i} }}\n            route: {{ cluster: other }}\n"
        );
        support::write_atomically(&p.config_path, &config(port, &route, &a, &b));
        let (st, body) = p.admin_post("/reload").await;
        assert_eq!(st, 200, "{body}");
        ka.more(40).await;
    }
    let c = client(true);
    let (st, body) = request(&c, &p.url("web", "/v4"), &[])
        .await
        .expect("new route");
    assert_eq!((st, body.as_str()), (200, "b"));
    // The app cluster was reused: its counters kept counting.
    let after = cluster_json(p.admin, "app").await["endpoints"][0]["rq_total"]
        .as_u64()
        .expect("rq_total");
    assert!(after > before, "{before} -> {after}");
    let mut samples = ka.stop().await;
    samples.extend(fresh.stop().await);
    let (n, kinds) = failures(&samples);
    assert_eq!(n, 0, "{kinds:?}");
    assert!(samples.len() > 200);
    assert_eq!(
        p.stat("attache_config_reload_total{result=\"ok\"}").await,
        5.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_reload_keeps_serving_the_old_config_and_reports_where() {
    let (a, b) = (Node::start("a").await, Node::start("b").await);
    let port = 0;
    let p = support::fleet::start_with_args(&config(port, "", &a, &b), &["--watch-config"]);
    let load = Load::start(p.url("web", "/"), 2, true);
    let (_, info) = p.admin_get("/server_info").await;
    let hash0 =
        serde_json::from_str::<serde_json::Value>(&info).expect("json")["config_hash"].clone();
    let bad_route = "          - match: { prefix: /x }\n            route: { cluster: nope }\n";
    support::write_atomically(&p.config_path, &config(port, bad_route, &a, &b));
    let (st, body) = p.admin_post("/reload").await;
    assert_eq!(st, 400);
    assert!(body.contains("attache.yaml:12:31:"), "{body}");
    assert!(body.contains("unknown cluster `nope`"), "{body}");
    // The watcher sees the same bad content too, and reports it.
    eventually(WAIT, "watched failure", || async {
        (p.stat("attache_config_reload_total{result=\"failed\"}")
            .await
            >= 2.0)
            .then_some(())
    })
    .await;
    assert!(p.log().contains("config reload rejected"));
    let (_, info) = p.admin_get("/server_info").await;
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&info).expect("json")["config_hash"],
        hash0
    );
    // A valid edit is picked up by the watcher without a signal.
    let good_route = "          - match: { prefix: /x }\n            route: { cluster: other }\n";
    support::write_atomically(&p.config_path, &config(port, good_route, &a, &b));
    let c = client(true);
    eventually(WAIT, "watched reload", || async {
        matches!(request(&c, &p.url("web", "/x"), &[]).await, Ok((200, ref s)) if s == "b")
            .then_some(())
    })
    .await;
    let (_, dump) = p.admin_get("/config_dump").await;
    let dump: serde_json::Value = serde_json::from_str(&dump).expect("json");
    assert_ne!(dump["config_hash"], hash0);
    assert!(dump["loaded_at"].is_string());
    let (n, kinds) = failures(&load.stop().await);
    assert_eq!(n, 0, "{kinds:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hot_restart_under_load_refuses_and_fails_nothing() {
    let (a, b) = (Node::start("a").await, Node::start("b").await);
    let mut old = Proxy::start(&config(0, "", &a, &b));
    // The new process binds the port the old one reported, beside it (SO_REUSEPORT).
    let port = old.addr("web").port();
    std::fs::write(&old.config_path, config(port, "", &a, &b)).expect("write");
    let url = old.url("web", "/");
    let fresh = Load::start(url.clone(), 4, false);
    let ka = Load::start(url, 2, true);
    eventually(WAIT, "load on the old process", || async {
        (fresh.count() > 20 && ka.count() > 20).then_some(())
    })
    .await;
    let old_admin = old.admin.to_string();
    let mut new =
        support::fleet::start_on_config(&old.config_path, &["--hot-restart-from", &old_admin]);
    assert_eq!(new.addr("web").port(), port);
    assert_eq!(
        old.wait_exit(Duration::from_secs(30)),
        Some(0),
        "old process drains and exits"
    );
    // The new process alone serves new and kept-alive connections for a while.
    fresh.more(150).await;
    ka.more(60).await;
    let mut samples = fresh.stop().await;
    eprintln!("hot restart, new connections: {:?}", failures(&samples));
    let kept = ka.stop().await;
    eprintln!("hot restart, keep-alive: {:?}", failures(&kept));
    samples.extend(kept);
    let (n, kinds) = failures(&samples);
    eprintln!(
        "hot restart: {} requests, {n} failed: {kinds:?}",
        samples.len()
    );
    assert!(samples.len() > 200);
    // The one kernel-level gap (docs/operations.md, "Hot restart"): with
    // SO_REUSEPORT, a new connection still half-open in the old socket's queue at
    // the instant it closes is reset, which the client sees as a connect error. It
    // is rare (0 in most runs, 1 of ~1,100 in a CI run) and needs
    // net.ipv4.tcp_migrate_req=1 to vanish; everything else must be zero.
    let connect_resets: usize = kinds
        .iter()
        .filter(|(k, _)| k.contains("Connect"))
        .map(|(_, c)| *c)
        .sum();
    assert_eq!(n - connect_resets, 0, "{kinds:?}");
    assert!(
        connect_resets * 200 <= samples.len(),
        "connect resets above 0.5% of {} requests: {kinds:?}",
        samples.len()
    );
    assert!(new.log().contains("listening"));
    assert!(
        new.wait_exit(Duration::from_millis(10)).is_none(),
        "new process serves"
    );
}
