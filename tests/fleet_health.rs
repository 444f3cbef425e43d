//! Living fleet: outlier ejection, active health checks, panic mode and circuit
//! breakers, with the real binary, real origins and continuous load.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use support::fleet::{cluster_json, failures, Load, Node};
use support::yaml::OneRoute;
use support::{eventually, Proxy};

/// How long health checks, ejections and traffic shifts may take: generous, the
/// machine may be loaded (each still fails if it never happens).
const WAIT: Duration = Duration::from_secs(30);

fn config(cluster_extra: &str, eps: &[&Node]) -> String {
    let eps: Vec<SocketAddr> = eps.iter().map(|n| n.addr).collect();
    OneRoute::to(&eps)
        .names("web", "app")
        .cluster_key(cluster_extra)
        .yaml()
}

async fn stat_containing(p: &Proxy, name: &str, labels: &[&str]) -> f64 {
    let (_, body) = p.admin_get("/stats").await;
    body.lines()
        .filter(|l| l.starts_with(name) && labels.iter().all(|x| l.contains(x)))
        .filter_map(|l| {
            l.rsplit_once(": ")
                .and_then(|(_, v)| v.trim().parse::<f64>().ok())
        })
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoint_killed_mid_load_is_ejected_then_no_more_errors() {
    let (a, b, c) = (
        Node::start("a").await,
        Node::start("b").await,
        Node::start("c").await,
    );
    let p = Proxy::start(&config(
        "outlier_detection: { consecutive_5xx: 3, consecutive_connect_failure: 2, base_ejection_time: 30s, max_ejection_percent: 50 }",
        &[&a, &b, &c],
    ));
    let load = Load::start(p.url("web", "/"), 4, true);
    eventually(WAIT, "load running", || async {
        (load.count() > 50).then_some(())
    })
    .await;
    b.kill();
    eventually(WAIT, "b ejected", || async {
        let c = cluster_json(p.admin, "app").await;
        let ep = c["endpoints"]
            .as_array()?
            .iter()
            .find(|e| e["address"] == b.addr.to_string())?
            .clone();
        (ep["ejected"] == true).then_some(())
    })
    .await;
    let ejected_at = load.settle().await;
    load.more(150).await;
    let samples = load.stop().await;
    let after: Vec<_> = samples
        .iter()
        .filter(|s| s.sent >= ejected_at)
        .cloned()
        .collect();
    assert!(after.len() > 100, "load kept running: {}", after.len());
    let (n, kinds) = failures(&after);
    assert_eq!(n, 0, "failures after ejection: {kinds:?}");
    let (before, kinds) = failures(&samples);
    eprintln!("failures before ejection: {before} {kinds:?}");
    assert!(
        p.stat("attache_outlier_ejections_total{cluster=\"app\"}")
            .await
            >= 1.0,
        "ejection counted"
    );
}

const HC: &str = "health_check: { http: { path: /healthz }, interval: 100ms, timeout: 500ms, unhealthy_threshold: 2, healthy_threshold: 2 }";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_health_checks_remove_an_endpoint_and_recovery_returns_it() {
    let (a, b) = (Node::start("a").await, Node::start("b").await);
    let p = Proxy::start(&config(HC, &[&a, &b]));
    let load = Load::start(p.url("web", "/"), 2, true);
    a.set_health(503);
    eventually(WAIT, "a unhealthy", || async {
        let c = cluster_json(p.admin, "app").await;
        let eps = c["endpoints"].as_array()?.clone();
        eps.iter()
            .any(|e| e["address"] == a.addr.to_string() && e["health"] == "unhealthy")
            .then_some(())
    })
    .await;
    // Out of rotation: no new traffic to a.
    load.settle().await;
    let a_hits = a.hits();
    load.more(100).await;
    assert_eq!(a.hits(), a_hits, "unhealthy endpoint still gets traffic");
    let (_, text) = p.admin_get("/clusters").await;
    assert!(
        text.contains(&format!("app::{}::health_flags::unhealthy", a.addr)),
        "{text}"
    );

    a.set_health(200);
    eventually(WAIT, "a healthy again", || async {
        let c = cluster_json(p.admin, "app").await;
        let eps = c["endpoints"].as_array()?.clone();
        eps.iter()
            .any(|e| e["address"] == a.addr.to_string() && e["health"] == "healthy")
            .then_some(())
    })
    .await;
    let a_hits = a.hits();
    eventually(WAIT, "a gets traffic again", || async {
        (a.hits() > a_hits + 10).then_some(())
    })
    .await;
    let samples = load.stop().await;
    let (n, kinds) = failures(&samples);
    assert_eq!(n, 0, "{kinds:?}");
    assert!(
        p.stat("attache_health_check_total{cluster=\"app\",result=\"failure\"}")
            .await
            >= 2.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_endpoints_unhealthy_enters_panic_mode_and_keeps_serving() {
    let (a, b) = (Node::start("a").await, Node::start("b").await);
    let p = Proxy::start(&config(HC, &[&a, &b]));
    let load = Load::start(p.url("web", "/"), 2, true);
    a.set_health(500);
    b.set_health(500);
    eventually(WAIT, "panic mode", || async {
        let c = cluster_json(p.admin, "app").await;
        (c["panic"] == true && c["healthy"] == 0).then_some(())
    })
    .await;
    load.settle().await;
    let (ha, hb) = (a.hits(), b.hits());
    load.more(100).await;
    assert!(
        a.hits() > ha && b.hits() > hb,
        "panic mode balances over all"
    );
    let samples = load.stop().await;
    let (n, kinds) = failures(&samples);
    assert_eq!(n, 0, "{kinds:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn circuit_breaker_overflow_answers_503_uo_and_counts() {
    let slow = support::Origin::start("slow").await;
    let p = Proxy::start(
        &OneRoute::to(&[slow.addr])
            .names("web", "app")
            .cluster_key("circuit_breakers: { max_requests: 2 }")
            .yaml(),
    );
    let url = p.url("web", "/slow/2000");
    let calls: Vec<_> = (0..8)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move { support::get(&url, &[]).await })
        })
        .collect();
    let mut ok = 0;
    let mut uo = 0;
    for c in calls {
        let r = c.await.expect("task");
        match r.status {
            200 => ok += 1,
            503 => {
                assert_eq!(r.text(), "upstream overflow\n");
                uo += 1;
            }
            s => panic!("unexpected status {s}"),
        }
    }
    assert_eq!(ok, 2, "max_requests admits two");
    assert_eq!(uo, 6);
    assert_eq!(
        stat_containing(
            &p,
            "attache_upstream_rq_overflow_total",
            &["max_requests", "cluster=\"app\""]
        )
        .await,
        6.0
    );
    assert_eq!(
        stat_containing(&p, "attache_local_reply_total", &["flag=\"UO\""]).await,
        6.0
    );
    // Slots are released: the next request goes through.
    assert_eq!(support::get(&url, &[]).await.status, 200);
}
