//! Upstream connection pooling: keep-alive reuse, abandoned bodies, idle timeout,
//! and HTTP/2 multiplexing on one connection.

mod support;

use std::time::Duration;

use support::yaml::OneRoute;
use support::{get, Origin, Proxy};

fn yaml(o: &Origin, protocol: &str) -> String {
    OneRoute::to(&[o.addr])
        .cluster_key(&format!("protocol: {protocol}\nidle_timeout: 1s"))
        .yaml()
}

#[tokio::test]
async fn keep_alive_connections_are_reused_then_closed_when_idle() {
    let o = Origin::start("o").await;
    let p = Proxy::start(&yaml(&o, "http1"));
    for _ in 0..20 {
        assert_eq!(get(&p.url("main", "/x"), &[]).await.status, 200);
    }
    assert_eq!(
        o.conns(),
        1,
        "sequential requests share one upstream connection"
    );

    // A response the client abandons mid-body must not put its connection back.
    let url = p.url("main", "/download/50000000");
    let (ok, _) = support::curl(&["--max-filesize", "1", "-o", "/dev/null", &url]).await;
    assert!(!ok);
    assert_eq!(get(&p.url("main", "/y"), &[]).await.status, 200);
    assert!(o.conns() >= 2, "the abandoned connection was not reused");

    // Past idle_timeout (1s) pooled connections are closed: the next request dials.
    let before = o.conns();
    tokio::time::sleep(Duration::from_millis(2200)).await;
    assert_eq!(get(&p.url("main", "/z"), &[]).await.status, 200);
    assert_eq!(o.conns(), before + 1);
}

#[tokio::test]
async fn http2_upstream_multiplexes_on_one_connection() {
    let o = Origin::start_h2("h2").await;
    let p = Proxy::start(&yaml(&o, "http2"));
    let mut tasks = Vec::new();
    for i in 0..32 {
        let url = p.url("main", &format!("/slow/{}", 50 + i));
        tasks.push(tokio::spawn(async move { get(&url, &[]).await.status }));
    }
    for t in tasks {
        assert_eq!(
            tokio::time::timeout(Duration::from_secs(20), t)
                .await
                .expect("in time")
                .expect("task"),
            200
        );
    }
    assert_eq!(
        o.conns(),
        1,
        "32 concurrent requests on one HTTP/2 connection"
    );
}

/// Issue 15: with more requests in flight than a small idle cap, the pool closed
/// and re-dialed connections continuously. A second burst of the same concurrency
/// now finds every connection of the first one waiting in the pool.
#[tokio::test]
async fn a_burst_reuses_the_connections_of_the_last_burst() {
    const N: u64 = 200;
    let o = Origin::start("o").await;
    let p = Proxy::start(&yaml(&o, "http1").replace("idle_timeout: 1s", "idle_timeout: 60s"));
    let burst = |tag: &'static str| {
        let url = p.url("main", "/slow/300");
        async move {
            let all = (0..N).map(|_| get(&url, &[]));
            let statuses: Vec<u16> = futures_util::future::join_all(all)
                .await
                .into_iter()
                .map(|r| r.status)
                .collect();
            assert!(statuses.iter().all(|s| *s == 200), "{tag}: {statuses:?}");
        }
    };
    burst("first").await;
    let after_first = o.conns();
    assert!(
        after_first >= N / 2,
        "the first burst ran concurrently ({after_first} connections)"
    );
    burst("second").await;
    assert_eq!(
        o.conns(),
        after_first,
        "the second burst dialed no new upstream connection"
    );
}
