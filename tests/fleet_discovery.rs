//! Living fleet: discovery files (add, remove, reweight, corrupt), DNS discovery,
//! ring hash stickiness, with the real binary and continuous load.

mod support;

use std::time::Duration;

use support::fleet::{client, cluster_json, failures, request, Load, Node};
use support::yaml::OneRoute;
use support::{eventually, Proxy};

/// How long a discovery file edit may take to apply: generous, because the
/// machine may be loaded and the largest file has 10,001 entries. A file that is
/// never applied still fails the wait.
const APPLY: Duration = Duration::from_secs(30);

fn write_eps(path: &std::path::Path, eps: &[(&Node, u32)]) {
    let text: String = eps
        .iter()
        .map(|(n, w)| format!("- {{ address: \"{}\", weight: {w}, zone: z1 }}\n", n.addr))
        .collect();
    // Atomic replace, as a discovery agent should.
    support::write_atomically(path, &text);
}

fn proxy_with_file(path: &std::path::Path, policy: &str) -> Proxy {
    let discovery = format!("discovery: {{ file: {{ path: \"{}\" }} }}", path.display());
    Proxy::start(
        &OneRoute::to(&[])
            .names("web", "app")
            .cluster_key(&discovery)
            .cluster_key(policy)
            .yaml(),
    )
}

async fn addresses(p: &Proxy) -> Vec<(String, u64)> {
    let c = cluster_json(p.admin, "app").await;
    let mut v: Vec<(String, u64)> = c["endpoints"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|e| {
                    (
                        e["address"].as_str().unwrap_or("").to_string(),
                        e["weight"].as_u64().unwrap_or(0),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

fn sorted(eps: &[(&Node, u64)]) -> Vec<(String, u64)> {
    let mut v: Vec<(String, u64)> = eps.iter().map(|(n, w)| (n.addr.to_string(), *w)).collect();
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_file_edits_apply_and_broken_files_keep_the_last_good_set() {
    let (a, b, c) = (
        Node::start("a").await,
        Node::start("b").await,
        Node::start("c").await,
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("app.yaml");
    write_eps(&path, &[(&a, 1), (&b, 1)]);
    let p = proxy_with_file(&path, "lb_policy: round_robin");
    let load = Load::start(p.url("web", "/"), 3, true);

    // Add c.
    write_eps(&path, &[(&a, 1), (&b, 1), (&c, 1)]);
    eventually(APPLY, "c added", || async {
        (addresses(&p).await == sorted(&[(&a, 1), (&b, 1), (&c, 1)])).then_some(())
    })
    .await;
    eventually(APPLY, "c serves", || async { (c.hits() > 5).then_some(()) }).await;

    // Remove a: no more traffic to it, no failed request.
    write_eps(&path, &[(&b, 1), (&c, 1)]);
    eventually(APPLY, "a removed", || async {
        (addresses(&p).await == sorted(&[(&b, 1), (&c, 1)])).then_some(())
    })
    .await;
    load.settle().await;
    let a_hits = a.hits();
    load.more(100).await;
    assert_eq!(a.hits(), a_hits);

    // Reweight: c gets about three times b's traffic.
    write_eps(&path, &[(&b, 1), (&c, 3)]);
    eventually(APPLY, "c reweighted", || async {
        (addresses(&p).await == sorted(&[(&b, 1), (&c, 3)])).then_some(())
    })
    .await;
    load.settle().await;
    let (hb, hc) = (b.hits(), c.hits());
    load.more(400).await;
    let (db, dc) = (b.hits() - hb, c.hits() - hc);
    assert!(db > 20, "b still served: {db}");
    let ratio = dc as f64 / db as f64;
    assert!((2.0..4.5).contains(&ratio), "weights 1:3, got {db}:{dc}");

    // Corrupt, empty and oversized files are rejected; the set stays.
    let good = sorted(&[(&b, 1), (&c, 3)]);
    for (i, bad) in [
        "- address: [not closed\n".to_string(),
        String::new(),
        "- { address: 127.0.0.1:1, wieght: 2 }\n".to_string(),
        (1..=10_001)
            .map(|i| format!("- address: 127.0.{}.{}:80\n", i / 250, i % 250 + 1))
            .collect(),
    ]
    .iter()
    .enumerate()
    {
        std::fs::write(&path, bad).expect("write");
        eventually(APPLY, "rejection counted", || async {
            let n = p
                .stat("attache_discovery_update_total{cluster=\"app\",result=\"rejected\"}")
                .await;
            (n >= (i + 1) as f64).then_some(())
        })
        .await;
        assert_eq!(addresses(&p).await, good, "bad file {i} changed the set");
    }
    let samples = load.stop().await;
    let (n, kinds) = failures(&samples);
    assert_eq!(n, 0, "{kinds:?}");
    assert!(p.log().contains("endpoints file rejected"), "logged");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dns_cluster_resolves_localhost_to_its_records() {
    let a = Node::start("a").await;
    let port = a.addr.port();
    let p = Proxy::start(
        &OneRoute::to(&[])
            .names("web", "app")
            .cluster_key(&format!(
                r#"discovery: {{ dns: {{ name: "localhost:{port}", refresh: 200ms }} }}
connect_timeout: 250ms
outlier_detection: {{ consecutive_connect_failure: 1, max_ejection_percent: 50 }}"#
            ))
            .yaml(),
    );
    let expected: Vec<String> = tokio::net::lookup_host(format!("localhost:{port}"))
        .await
        .expect("resolve")
        .map(|a| a.to_string())
        .collect();
    let got = addresses(&p).await;
    let got: Vec<String> = got.into_iter().map(|(a, _)| a).collect();
    for e in &expected {
        assert!(got.contains(e), "{e} missing from {got:?}");
    }
    assert!(got.contains(&a.addr.to_string()), "{got:?}");
    // The 127.0.0.1 record serves (a ::1 record, if any, is refused and retried).
    let c = client(false);
    let mut ok = 0;
    for _ in 0..10 {
        if let Ok((200, body)) = request(&c, &p.url("web", "/"), &[]).await {
            assert_eq!(body, "a");
            ok += 1;
        }
    }
    assert!(ok >= 5, "{ok}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ring_hash_keeps_a_key_on_one_endpoint_and_moves_only_the_departed_ones_keys() {
    let mut nodes = Vec::new();
    for i in 0..10 {
        nodes.push(Node::start(&format!("n{i}")).await);
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("app.yaml");
    let all: Vec<(&Node, u32)> = nodes.iter().map(|n| (n, 1)).collect();
    write_eps(&path, &all);
    let p = proxy_with_file(&path, "lb_policy: ring_hash\nhash_on: { header: x-user }");
    let c = client(true);
    let url = p.url("web", "/");
    let mut owner = std::collections::HashMap::new();
    for u in 0..200 {
        let user = format!("user-{u}");
        let (st, first) = request(&c, &url, &[("x-user", &user)])
            .await
            .expect("request");
        assert_eq!(st, 200);
        for _ in 0..3 {
            let (_, again) = request(&c, &url, &[("x-user", &user)])
                .await
                .expect("request");
            assert_eq!(again, first, "{user} moved");
        }
        owner.insert(user, first);
    }
    // n3 leaves.
    let fewer: Vec<(&Node, u32)> = nodes
        .iter()
        .filter(|n| n.name != "n3")
        .map(|n| (n, 1))
        .collect();
    write_eps(&path, &fewer);
    eventually(APPLY, "n3 removed", || async {
        (addresses(&p).await.len() == 9).then_some(())
    })
    .await;
    let mut moved = 0;
    for (user, before) in &owner {
        let (_, now) = request(&c, &url, &[("x-user", user)])
            .await
            .expect("request");
        if before == "n3" {
            assert_ne!(now, "n3");
        } else if &now != before {
            moved += 1;
        }
    }
    assert_eq!(moved, 0, "keys of remaining endpoints must not move");
}
