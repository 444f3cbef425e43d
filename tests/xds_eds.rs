//! EDS over ADS against a real management server (envoy-types' tonic service in the
//! test), with the real binary and continuous load: endpoints follow the server, an
//! invalid update is NACKed with attache's message while the old set serves, a
//! killed and restarted server costs no request, and the static parts serve when the
//! server is down at startup; CDS clashes are NACKed and an RDS update moves traffic
//! live.

mod support;
mod xds_util;

use std::net::SocketAddr;
use std::time::Duration;

use envoy_types::pb::envoy::config::core::v3::HealthStatus;
use support::fleet::{addresses_of, client, cluster_addresses, failures, request, Load, Node};
use support::{eventually, Proxy};
use xds_util::{cla, ep, Mgmt, EDS};

const WAIT: Duration = Duration::from_secs(10);

fn config(mgmt: SocketAddr, initial_fetch: &str) -> String {
    xds_util::proxy_config(mgmt, initial_fetch, "")
}

async fn addresses(p: &Proxy) -> Vec<String> {
    cluster_addresses(p.admin, "app").await
}

fn sorted(nodes: &[&Node]) -> Vec<String> {
    addresses_of(nodes)
}

fn eps(nodes: &[&Node]) -> Vec<envoy_types::pb::envoy::config::endpoint::v3::LbEndpoint> {
    nodes
        .iter()
        .map(|n| ep(n.addr, 1, HealthStatus::Healthy))
        .collect()
}

/// `/config_dump`'s `config_hash`: the file config the running snapshot came from.
async fn config_hash(p: &Proxy) -> String {
    let (_, body) = p.admin_get("/config_dump").await;
    let v: serde_json::Value = serde_json::from_str(&body).expect("json");
    v["config_hash"].as_str().expect("config_hash").to_string()
}

/// The requests of EDS type that carry `nonce`.
fn answers_to(
    m: &Mgmt,
    nonce: &str,
) -> Vec<envoy_types::pb::envoy::service::discovery::v3::DiscoveryRequest> {
    m.requests()
        .into_iter()
        .filter(|r| r.type_url == EDS && r.response_nonce == nonce)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoints_follow_the_server_and_bad_updates_and_outages_cost_no_request() {
    let (a, b, c) = (
        Node::start("a").await,
        Node::start("b").await,
        Node::start("c").await,
    );
    let mgmt = Mgmt::start().await;
    mgmt.push("1", vec![cla("app_svc", "z1", eps(&[&a, &b]))]);
    let p = Proxy::start(&config(mgmt.addr, "10s"));

    // The first snapshot is in place before the proxy reports ready.
    assert_eq!(addresses(&p).await, sorted(&[&a, &b]));
    let first = mgmt.requests();
    let sub = first
        .iter()
        .find(|r| r.type_url == EDS)
        .expect("eds request");
    assert_eq!(sub.resource_names, ["app_svc"]);
    let node = sub.node.as_ref().expect("node on the first request");
    assert_eq!(
        (node.id.as_str(), node.cluster.as_str()),
        ("attache-test", "edge")
    );
    assert_eq!(node.locality.as_ref().map(|l| l.zone.as_str()), Some("z1"));
    let ack = eventually(WAIT, "ack of version 1", || async {
        answers_to(&mgmt, "1").into_iter().next()
    })
    .await;
    assert_eq!(ack.version_info, "1");
    assert!(ack.error_detail.is_none());

    let load = Load::start(p.url("web", "/"), 3, true);
    eventually(WAIT, "a and b serve", || async {
        (a.hits() > 5 && b.hits() > 5).then_some(())
    })
    .await;

    // Version 2: a leaves, c joins; a gets nothing within a second.
    mgmt.push("2", vec![cla("app_svc", "z1", eps(&[&b, &c]))]);
    eventually(WAIT, "set is b, c", || async {
        (addresses(&p).await == sorted(&[&b, &c])).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let a_hits = a.hits();
    eventually(WAIT, "c serves", || async { (c.hits() > 5).then_some(()) }).await;
    tokio::time::sleep(Duration::from_millis(900)).await;
    assert_eq!(a.hits(), a_hits, "a still got traffic after its removal");

    // Version 3 lists c twice: NACKed with attache's message, the set stays.
    let dup = vec![
        ep(b.addr, 1, HealthStatus::Healthy),
        ep(c.addr, 1, HealthStatus::Healthy),
        ep(c.addr, 2, HealthStatus::Healthy),
    ];
    mgmt.push("3", vec![cla("app_svc", "z1", dup)]);
    let nack = eventually(WAIT, "nack of version 3", || async {
        answers_to(&mgmt, "3").into_iter().next()
    })
    .await;
    assert_eq!(
        nack.version_info, "2",
        "a NACK carries the last accepted version"
    );
    let detail = nack.error_detail.expect("error_detail");
    assert_eq!(
        detail.message,
        format!("app_svc: endpoints[0].lb_endpoints[2].endpoint.address.socket_address: endpoint {} is listed twice", c.addr)
    );
    assert_eq!(addresses(&p).await, sorted(&[&b, &c]));
    assert_eq!(
        p.stat_labels(
            "attache_xds_updates_total",
            &[("type", "eds"), ("result", "rejected")]
        )
        .await,
        1.0
    );
    assert_eq!(
        p.stat_labels(
            "attache_xds_updates_total",
            &[("type", "eds"), ("result", "accepted")]
        )
        .await,
        2.0
    );

    // /config_dump shows the resource with the version that serves and the NACK.
    let (_, dump) = p.admin_get("/config_dump").await;
    let dump: serde_json::Value = serde_json::from_str(&dump).expect("json");
    let x = &dump["xds"];
    assert_eq!(x["connected"], true);
    assert_eq!(x["types"]["eds"]["version"], "2");
    assert!(x["types"]["eds"]["last_nack"]["message"]
        .as_str()
        .is_some_and(|m| m.contains("listed twice")));
    assert_eq!(x["resources"][0]["name"], "app_svc");
    assert_eq!(x["resources"][0]["version"], "2");
    assert!(x["resources"][0]["accepted_at"].is_string());
    let (_, text) = p.admin_get("/clusters").await;
    assert!(text.contains("app::discovery::eds:app_svc"), "{text}");

    // The server dies: the proxy keeps serving b and c, reconnects when it is back
    // and asks with the version it holds; the restarted server's version 4 applies.
    let down = mgmt.kill();
    eventually(WAIT, "disconnected", || async {
        (p.stat("attache_xds_connected").await == 0.0).then_some(())
    })
    .await;
    let (hb, hc) = (b.hits(), c.hits());
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        b.hits() > hb && c.hits() > hc,
        "the last accepted set serves while the server is down"
    );
    let mgmt = Mgmt::restart(down);
    mgmt.push("4", vec![cla("app_svc", "z1", eps(&[&c]))]);
    eventually(WAIT, "set is c", || async {
        (addresses(&p).await == sorted(&[&c])).then_some(())
    })
    .await;
    assert_eq!(p.stat("attache_xds_connected").await, 1.0);
    let resub = mgmt
        .requests()
        .into_iter()
        .rev()
        .find(|r| r.type_url == EDS && r.response_nonce.is_empty())
        .expect("resubscription");
    assert_eq!(
        resub.version_info, "2",
        "a new stream asks with the last accepted version"
    );
    assert!(resub.node.is_some(), "a new stream sends the node again");

    let samples = load.stop().await;
    let (n, kinds) = failures(&samples);
    assert!(samples.len() > 200, "load ran: {}", samples.len());
    assert_eq!(
        n, 0,
        "failed requests during eds updates and outages: {kinds:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn static_parts_serve_while_the_server_is_down_and_eds_fills_in_when_it_comes_up() {
    let a = Node::start("a").await;
    // Held, not listening: the proxy starts with its management server refusing.
    let reserved = xds_util::Reserved::new();
    let addr = reserved.addr();
    let started = std::time::Instant::now();
    let p = Proxy::start(&config(addr, "1s"));
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "startup waits at most initial_fetch_timeout"
    );
    let c = client(true);
    let static_url = p.url("web", "/static");
    assert_eq!(
        request(&c, &static_url, &[]).await,
        Ok((200, "static\n".to_string()))
    );
    let (status, _) = request(&c, &p.url("web", "/"), &[]).await.expect("answer");
    assert_eq!(status, 503, "no endpoints yet");
    assert!(addresses(&p).await.is_empty());

    let mgmt = Mgmt::start_reserved(reserved);
    mgmt.push("1", vec![cla("app_svc", "z1", eps(&[&a]))]);
    eventually(
        WAIT,
        "endpoints arrive after the server comes up",
        || async { (addresses(&p).await == sorted(&[&a])).then_some(()) },
    )
    .await;
    let url = p.url("web", "/");
    let body = eventually(WAIT, "a serves", || async {
        request(&c, &url, &[]).await.ok().filter(|(s, _)| *s == 200)
    })
    .await;
    assert_eq!(body.1, "a");
}

/// A config file edited on disk and broken (not applied) does not hold EDS back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eds_updates_apply_while_the_file_on_disk_is_broken() {
    let (a, b) = (Node::start("a").await, Node::start("b").await);
    let mgmt = Mgmt::start().await;
    mgmt.push("1", vec![cla("app_svc", "z1", eps(&[&a]))]);
    let p = Proxy::start(&config(mgmt.addr, "10s"));
    assert_eq!(addresses(&p).await, sorted(&[&a]));
    let running = config_hash(&p).await;
    std::fs::write(&p.config_path, "clusters: [\n").expect("break the file");
    let (status, _) = p.admin_post("/reload").await;
    assert_ne!(status, 200, "the broken file is refused");

    mgmt.push("2", vec![cla("app_svc", "z1", eps(&[&b]))]);
    let ack = eventually(WAIT, "an answer to version 2", || async {
        answers_to(&mgmt, "2").into_iter().next()
    })
    .await;
    assert_eq!(ack.version_info, "2");
    assert!(ack.error_detail.is_none(), "NACKed: {:?}", ack.error_detail);
    let (c, url) = (client(true), p.url("web", "/"));
    eventually(WAIT, "traffic moves to b", || async {
        request(&c, &url, &[]).await.ok().filter(|r| r.1 == "b")
    })
    .await;
    let a_hits = a.hits();
    for _ in 0..10 {
        assert_eq!(request(&c, &url, &[]).await, Ok((200, "b".to_string())));
    }
    assert_eq!(a.hits(), a_hits);
    assert_eq!(config_hash(&p).await, running);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unhealthy_and_draining_endpoints_get_no_traffic() {
    let (a, b, c) = (
        Node::start("a").await,
        Node::start("b").await,
        Node::start("c").await,
    );
    let mgmt = Mgmt::start().await;
    mgmt.push(
        "1",
        vec![cla(
            "app_svc",
            "z1",
            vec![
                ep(a.addr, 1, HealthStatus::Healthy),
                ep(b.addr, 1, HealthStatus::Draining),
                ep(c.addr, 1, HealthStatus::Unhealthy),
            ],
        )],
    );
    let p = Proxy::start(&config(mgmt.addr, "10s"));
    assert_eq!(addresses(&p).await, sorted(&[&a]));
    let cl = client(true);
    let url = p.url("web", "/");
    for _ in 0..20 {
        assert_eq!(request(&cl, &url, &[]).await.map(|r| r.0), Ok(200));
    }
    assert_eq!((a.hits(), b.hits(), c.hits()), (20, 0, 0));
}

#[test]
fn validate_checks_the_xds_block_and_eds_clusters() {
    let (code, out, path) = support::validate(
        "eds.yaml",
        "clusters:\n  - name: app\n    discovery: { eds: {} }\n",
    );
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains(&format!("{}:3:18", path.display()))
            && out.contains("EDS needs a management server"),
        "{out}"
    );
    let (code, out, path) = support::validate(
        "xds.yaml",
        "clusters:\n  - name: xds_server\n    endpoints: [\"127.0.0.1:18000\"]\n  - name: app\n    discovery: { eds: { service_name: app } }\nxds:\n  cluster: xds_servr\n  node: { id: \"\" }\n  resources: [eds, rds]\n",
    );
    assert_eq!(code, 1, "{out}");
    for (at, msg) in [
        (
            "7:12",
            "unknown cluster `xds_servr`; did you mean `xds_server`?",
        ),
        ("8:15", "node id must not be empty"),
        ("9:14", "`rds` names come from xDS listeners; add `lds`"),
    ] {
        assert!(
            out.contains(&format!("{}:{at}", path.display())) && out.contains(msg),
            "{at} {msg}:\n{out}"
        );
    }
    let (code, out, _) = support::validate(
        "h1.yaml",
        "clusters:\n  - name: xds_server\n    endpoints: [\"127.0.0.1:18000\"]\nxds:\n  cluster: xds_server\n  node: { id: n1 }\n",
    );
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("set `protocol: http2` on cluster `xds_server`"),
        "{out}"
    );
    let (code, out, path) = support::validate(
        "no-eds.yaml",
        "clusters:\n  - name: xds_server\n    protocol: http2\n    endpoints: [\"127.0.0.1:18000\"]\n  - name: app\n    discovery: { eds: {} }\nxds:\n  cluster: xds_server\n  node: { id: n1 }\n  resources: [cds]\n",
    );
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains(&format!("{}:6:18", path.display()))
            && out.contains("`xds.resources` leaves out `eds`"),
        "{out}"
    );
    assert!(
        !out.contains("`xds_server` is not used"),
        "the xds cluster is used: {out}"
    );
}

/// CDS rides the same stream and goes through the config compile: a cluster whose
/// name the file already uses is NACKed (nothing was accepted, so the NACK carries
/// an empty version) and the file's cluster keeps serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cds_cluster_clashing_with_the_file_is_nacked_and_the_file_serves() {
    let (a, b) = (Node::start("a").await, Node::start("b").await);
    let mgmt = Mgmt::start().await;
    mgmt.push("1", vec![cla("app_svc", "z1", eps(&[&a]))]);
    mgmt.push_type(
        xds_util::CDS,
        "c1",
        vec![xds_util::static_cluster("app", &[b.addr])],
    );
    let yaml = config(mgmt.addr, "10s").replace(
        "  initial_fetch_timeout",
        "  resources: [eds, cds]\n  initial_fetch_timeout",
    );
    let p = Proxy::start(&yaml);
    let nack = eventually(WAIT, "cds nack", || async {
        mgmt.requests()
            .into_iter()
            .find(|r| r.type_url == xds_util::CDS && r.error_detail.is_some())
    })
    .await;
    let sub = mgmt
        .requests()
        .into_iter()
        .find(|r| r.type_url == xds_util::CDS)
        .expect("cds request");
    assert!(
        sub.resource_names.is_empty(),
        "CDS is a wildcard subscription"
    );
    assert_eq!(nack.version_info, "", "nothing accepted yet");
    let message = nack.error_detail.map(|d| d.message).unwrap_or_default();
    assert_eq!(
        message,
        "cds/app: config: cluster `app` is defined in the config file; xDS cannot replace it, rename one of them"
    );
    assert_eq!(
        p.stat_labels(
            "attache_xds_updates_total",
            &[("type", "cds"), ("result", "rejected")]
        )
        .await,
        1.0
    );
    let c = client(true);
    let url = p.url("web", "/");
    for _ in 0..10 {
        assert_eq!(request(&c, &url, &[]).await, Ok((200, "a".to_string())));
    }
    assert_eq!(b.hits(), 0);
}

/// LDS + RDS: a listener from the control plane binds once its route configuration
/// arrives, and a new route configuration moves traffic without a reload and
/// without a failed request, also while the config file on disk is broken (xDS
/// updates compile with the config the running snapshot came from).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_rds_update_moves_traffic_live_without_a_reload_even_with_the_file_broken() {
    use xds_util::{rds_listener, routes};

    let (a, b) = (Node::start("a").await, Node::start("b").await);
    let mgmt = Mgmt::start().await;
    mgmt.push_type(xds_util::LDS, "l1", vec![rds_listener("dyn", "main")]);
    mgmt.push_type(xds_util::RDS, "r1", vec![routes("main", "app_a")]);
    let yaml = format!(
        "clusters:\n  - name: xds_server\n    protocol: http2\n    endpoints: [\"{}\"]\n  - name: app_a\n    endpoints: [\"{}\"]\n  - name: app_b\n    endpoints: [\"{}\"]\nxds:\n  cluster: xds_server\n  node: {{ id: n1 }}\n  resources: [lds, rds]\n",
        mgmt.addr, a.addr, b.addr
    );
    let p = Proxy::start(&yaml);
    let bound = eventually(WAIT, "the xds listener is bound", || async {
        p.bound_address("dyn").await
    })
    .await;
    let url = format!("http://{bound}/");
    let c = client(true);
    eventually(WAIT, "the xds listener serves a", || async {
        request(&c, &url, &[]).await.ok().filter(|r| r.1 == "a")
    })
    .await;
    let reloads = p
        .stat_labels("attache_config_reload_total", &[("result", "ok")])
        .await;
    let load = Load::start(url.clone(), 3, true);
    eventually(WAIT, "load runs", || async {
        (load.count() > 50).then_some(())
    })
    .await;
    let running = config_hash(&p).await;
    // Edited on disk, not applied: the reload fails, xDS updates must not.
    std::fs::write(&p.config_path, "clusters: [\n").expect("break the file");
    let (status, _) = p.admin_post("/reload").await;
    assert_ne!(status, 200, "the broken file is refused");
    mgmt.push_type(xds_util::RDS, "r2", vec![routes("main", "app_b")]);
    eventually(WAIT, "b serves", || async { (b.hits() > 20).then_some(()) }).await;
    // /explain answers from the running snapshot, xDS listeners and routes included.
    let (status, body) = p.admin_get("/explain?listener=dyn&path=/").await;
    assert_eq!(status, 200, "{body}");
    assert!(
        body.contains("action        route to cluster app_b\n"),
        "{body}"
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    let a_hits = a.hits();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(a.hits(), a_hits, "the old route still took traffic");
    let samples = load.stop().await;
    let (n, kinds) = failures(&samples);
    assert_eq!(n, 0, "failed requests during the route update: {kinds:?}");
    assert_eq!(
        p.stat_labels("attache_config_reload_total", &[("result", "ok")])
            .await,
        reloads,
        "no file reload"
    );
    assert_eq!(
        p.stat_labels(
            "attache_xds_updates_total",
            &[("type", "rds"), ("result", "accepted")]
        )
        .await,
        2.0
    );
    assert_eq!(
        config_hash(&p).await,
        running,
        "the running file config is still the one loaded at startup"
    );
}
