//! Delta (incremental) xDS over ADS against a real delta management server
//! (envoy-types' tonic service in the test), with the real binary and continuous
//! load: the first snapshot serves, a removed endpoint stops getting traffic within
//! a second, an invalid update is NACKed with attache's message while the old set
//! serves, a reconnect sends `initial_resource_versions` so the server resends only
//! what changed, and `removed_resources` is ACKed; no request fails throughout.

mod support;
mod xds_util;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use envoy_types::pb::envoy::config::core::v3::HealthStatus;
use envoy_types::pb::envoy::service::discovery::v3::DeltaDiscoveryRequest;
use support::fleet::{addresses_of, client, cluster_addresses, failures, request, Load, Node};
use support::{eventually, Proxy};
use xds_util::{cla, ep, rds_listener, routes, static_cluster, Mgmt, CDS, EDS, LDS, RDS};

const WAIT: Duration = Duration::from_secs(10);

fn config(mgmt: SocketAddr) -> String {
    xds_util::proxy_config(mgmt, "10s", "  api_type: AGGREGATED_DELTA_GRPC\n")
}

async fn addresses(p: &Proxy) -> Vec<String> {
    cluster_addresses(p.admin, "app").await
}

fn sorted(nodes: &[&Node]) -> Vec<String> {
    addresses_of(nodes)
}

/// Serve `app_svc` at `version` with `nodes` (and `extra` raw endpoints).
fn put(m: &Mgmt, version: &str, nodes: &[&Node]) {
    let eps = nodes
        .iter()
        .map(|n| ep(n.addr, 1, HealthStatus::Healthy))
        .collect();
    m.delta_set(EDS, "app_svc", Some((version, cla("app_svc", "z1", eps))));
}

/// The answer (ACK or NACK) to the EDS delta response with `nonce`.
async fn answer(m: &Mgmt, nonce: &str) -> DeltaDiscoveryRequest {
    answer_of(m, EDS, nonce).await
}

/// The nonce of the last delta response sent.
fn last_nonce(m: &Mgmt) -> String {
    m.delta_responses()
        .last()
        .map(|r| r.nonce.clone())
        .unwrap_or_default()
}

async fn dump(p: &Proxy) -> serde_json::Value {
    let (_, body) = p.admin_get("/config_dump").await;
    serde_json::from_str::<serde_json::Value>(&body).expect("json")["xds"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delta_updates_nacks_reconnects_and_removals_cost_no_request() {
    let (a, b, c) = (
        Node::start("a").await,
        Node::start("b").await,
        Node::start("c").await,
    );
    let mgmt = Mgmt::start().await;
    put(&mgmt, "1", &[&a, &b]);
    let p = Proxy::start(&config(mgmt.addr));

    // The first snapshot is in place before the proxy reports ready; the first
    // request subscribes by name, carries the node and holds no versions yet.
    assert_eq!(addresses(&p).await, sorted(&[&a, &b]));
    let sub = mgmt
        .delta_requests()
        .into_iter()
        .find(|r| r.type_url == EDS)
        .expect("eds subscription");
    assert_eq!(sub.resource_names_subscribe, ["app_svc"]);
    assert!(sub.initial_resource_versions.is_empty());
    assert!(sub.response_nonce.is_empty());
    assert_eq!(
        sub.node.as_ref().map(|n| n.id.as_str()),
        Some("attache-test")
    );
    let ack = answer(&mgmt, &last_nonce(&mgmt)).await;
    assert!(ack.error_detail.is_none(), "{ack:?}");
    assert!(ack.resource_names_subscribe.is_empty());
    assert_eq!(p.stat("attache_xds_connected").await, 1.0);

    let load = Load::start(p.url("web", "/"), 3, true);
    eventually(WAIT, "a and b serve", || async {
        (a.hits() > 5 && b.hits() > 5).then_some(())
    })
    .await;

    // Version 2: a leaves, c joins; a gets nothing within a second.
    put(&mgmt, "2", &[&b, &c]);
    eventually(WAIT, "set is b, c", || async {
        (addresses(&p).await == sorted(&[&b, &c])).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let a_hits = a.hits();
    eventually(WAIT, "c serves", || async { (c.hits() > 5).then_some(()) }).await;
    tokio::time::sleep(Duration::from_millis(900)).await;
    assert_eq!(a.hits(), a_hits, "a still got traffic after its removal");
    let x = dump(&p).await;
    assert_eq!(x["resources"][0]["name"], "app_svc");
    assert_eq!(x["resources"][0]["version"], "2");

    // Version 3 lists c twice: NACKed with attache's message, the set stays.
    let dup = vec![
        ep(b.addr, 1, HealthStatus::Healthy),
        ep(c.addr, 1, HealthStatus::Healthy),
        ep(c.addr, 2, HealthStatus::Healthy),
    ];
    mgmt.delta_set(EDS, "app_svc", Some(("3", cla("app_svc", "z1", dup))));
    let nonce = eventually(WAIT, "version 3 sent", || async {
        mgmt.delta_responses()
            .into_iter()
            .find(|r| r.resources.iter().any(|x| x.version == "3"))
            .map(|r| r.nonce)
    })
    .await;
    let nack = answer(&mgmt, &nonce).await;
    let detail = nack.error_detail.expect("error_detail");
    assert_eq!(
        detail.message,
        format!("app_svc: endpoints[0].lb_endpoints[2].endpoint.address.socket_address: endpoint {} is listed twice", c.addr)
    );
    assert_eq!(detail.code, 3);
    assert_eq!(addresses(&p).await, sorted(&[&b, &c]));
    let x = dump(&p).await;
    assert_eq!(
        x["resources"][0]["version"], "2",
        "a NACKed version is not held"
    );
    assert!(x["types"]["eds"]["last_nack"]["message"]
        .as_str()
        .is_some_and(|m| m.contains("listed twice")));
    assert_eq!(
        p.stat_labels(
            "attache_xds_updates_total",
            &[("type", "eds"), ("result", "rejected")]
        )
        .await,
        1.0
    );

    // The server dies and comes back with version 4: the new stream tells it the
    // version held (2, not the NACKed 3), and it sends only version 4.
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
    let before = down_requests(&down);
    let mgmt = Mgmt::restart(down);
    put(&mgmt, "4", &[&c]);
    eventually(WAIT, "set is c", || async {
        (addresses(&p).await == sorted(&[&c])).then_some(())
    })
    .await;
    let resub = mgmt.delta_requests()[before..]
        .iter()
        .find(|r| r.type_url == EDS)
        .cloned()
        .expect("resubscription");
    assert_eq!(
        resub.initial_resource_versions,
        HashMap::from([("app_svc".to_string(), "2".to_string())])
    );
    assert_eq!(resub.resource_names_subscribe, ["app_svc"]);
    assert!(resub.node.is_some(), "a new stream sends the node again");
    let ack = answer(&mgmt, &last_nonce(&mgmt)).await;
    assert!(ack.error_detail.is_none());

    // The server removes the assignment: ACKed, it leaves /config_dump and the
    // cluster keeps its last endpoints (as Envoy: CDS removes clusters, not EDS).
    mgmt.delta_set(EDS, "app_svc", None);
    let removal = eventually(WAIT, "removal sent", || async {
        mgmt.delta_responses()
            .into_iter()
            .find(|r| r.removed_resources == ["app_svc"])
    })
    .await;
    let ack = answer(&mgmt, &removal.nonce).await;
    assert!(ack.error_detail.is_none(), "{ack:?}");
    eventually(WAIT, "removed from config_dump", || async {
        let x = dump(&p).await;
        x["resources"]
            .as_array()
            .is_some_and(|r| r.is_empty())
            .then_some(())
    })
    .await;
    let hc = c.hits();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        c.hits() > hc,
        "the cluster keeps serving its last endpoints"
    );

    let samples = load.stop().await;
    let (n, kinds) = failures(&samples);
    assert!(samples.len() > 200, "load ran: {}", samples.len());
    assert_eq!(
        n, 0,
        "failed requests during delta updates and outages: {kinds:?}"
    );
}

/// CDS over delta: a wildcard subscription; a cluster added, one clashing with the
/// file NACKed with the same message as state of the world, the removal of a
/// resource never accepted ACKed, and `removed_resources` removing a cluster.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delta_cds_adds_nacks_and_removes_clusters() {
    let (a, b) = (Node::start("a").await, Node::start("b").await);
    let mgmt = Mgmt::start().await;
    put(&mgmt, "1", &[&a]);
    mgmt.delta_set(
        CDS,
        "extra",
        Some(("e1", static_cluster("extra", &[b.addr]))),
    );
    let yaml = config(mgmt.addr).replace(
        "  initial_fetch_timeout",
        "  resources: [eds, cds]\n  initial_fetch_timeout",
    );
    let p = Proxy::start(&yaml);
    let endpoints_of = |name: &'static str| {
        let admin = p.admin;
        async move { cluster_addresses(admin, name).await }
    };
    eventually(WAIT, "cluster extra from cds", || async {
        (endpoints_of("extra").await == addresses_of(&[&b])).then_some(())
    })
    .await;
    let sub = mgmt
        .delta_requests()
        .into_iter()
        .find(|r| r.type_url == CDS)
        .expect("cds subscription");
    assert!(
        sub.resource_names_subscribe.is_empty(),
        "CDS is a wildcard subscription"
    );
    let x = dump(&p).await;
    let cds: Vec<&serde_json::Value> = x["resources"]
        .as_array()
        .map(|r| r.iter().filter(|r| r["type"] == "cds").collect())
        .unwrap_or_default();
    assert_eq!(cds.len(), 1, "{x}");
    assert_eq!(
        (&cds[0]["name"], &cds[0]["version"]),
        (&"extra".into(), &"e1".into())
    );

    // A cluster named like the file's: NACKed, `extra` stays.
    mgmt.delta_set(CDS, "app", Some(("c1", static_cluster("app", &[b.addr]))));
    let nonce = eventually(WAIT, "clash sent", || async {
        mgmt.delta_responses()
            .into_iter()
            .find(|r| r.resources.iter().any(|x| x.name == "app"))
            .map(|r| r.nonce)
    })
    .await;
    let nack = answer_of(&mgmt, CDS, &nonce).await;
    assert_eq!(
        nack.error_detail.map(|d| d.message).unwrap_or_default(),
        "cds/app: config: cluster `app` is defined in the config file; xDS cannot replace it, rename one of them"
    );
    assert_eq!(endpoints_of("extra").await, addresses_of(&[&b]));

    // The server drops the clashing cluster (never accepted: nothing to undo), then
    // removes `extra`: both ACKed, and `extra` is gone.
    mgmt.delta_set(CDS, "app", None);
    mgmt.delta_set(CDS, "extra", None);
    let removals = eventually(WAIT, "removals sent", || async {
        let r: Vec<String> = mgmt
            .delta_responses()
            .into_iter()
            .filter(|r| r.type_url == CDS && !r.removed_resources.is_empty())
            .map(|r| r.nonce)
            .collect();
        (!r.is_empty()).then_some(r)
    })
    .await;
    for nonce in removals {
        let ack = answer_of(&mgmt, CDS, &nonce).await;
        assert!(ack.error_detail.is_none(), "{ack:?}");
    }
    eventually(WAIT, "cluster extra removed", || async {
        endpoints_of("extra").await.is_empty().then_some(())
    })
    .await;
    assert_eq!(endpoints_of("app").await, addresses_of(&[&a]));
}

/// LDS + RDS over delta: RDS subscribes by name once the listener naming it is
/// accepted, a changed route configuration moves traffic live without a failed
/// request, and removing the listener unsubscribes its route configuration.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delta_lds_and_rds_follow_the_listener_names() {
    let (a, b) = (Node::start("a").await, Node::start("b").await);
    let mgmt = Mgmt::start().await;
    mgmt.delta_set(LDS, "dyn", Some(("l1", rds_listener("dyn", "main"))));
    mgmt.delta_set(RDS, "main", Some(("r1", routes("main", "app_a"))));
    let yaml = format!(
        "clusters:\n  - name: xds_server\n    protocol: http2\n    endpoints: [\"{}\"]\n  - name: app_a\n    endpoints: [\"{}\"]\n  - name: app_b\n    endpoints: [\"{}\"]\nxds:\n  cluster: xds_server\n  api_type: aggregated_delta_grpc\n  node: {{ id: n1 }}\n  resources: [lds, rds]\n",
        mgmt.addr, a.addr, b.addr
    );
    let p = Proxy::start(&yaml);
    let bound = || p.bound_address("dyn");
    let url = format!("http://{}/", eventually(WAIT, "dyn is bound", bound).await);
    let c = client(true);
    eventually(WAIT, "dyn serves a", || async {
        request(&c, &url, &[]).await.ok().filter(|r| r.1 == "a")
    })
    .await;
    let subs: Vec<DeltaDiscoveryRequest> = mgmt
        .delta_requests()
        .into_iter()
        .filter(|r| r.type_url == RDS && !r.resource_names_subscribe.is_empty())
        .collect();
    assert_eq!(subs.len(), 1, "{subs:?}");
    assert_eq!(subs[0].resource_names_subscribe, ["main"]);

    let load = Load::start(url.clone(), 3, true);
    eventually(WAIT, "load runs", || async {
        (load.count() > 50).then_some(())
    })
    .await;
    mgmt.delta_set(RDS, "main", Some(("r2", routes("main", "app_b"))));
    eventually(WAIT, "b serves", || async { (b.hits() > 20).then_some(()) }).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let a_hits = a.hits();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(a.hits(), a_hits, "the old route still took traffic");
    let samples = load.stop().await;
    let (n, kinds) = failures(&samples);
    assert_eq!(n, 0, "failed requests during the route update: {kinds:?}");

    // The listener goes: it stops serving and its route configuration is
    // unsubscribed.
    mgmt.delta_set(LDS, "dyn", None);
    eventually(WAIT, "dyn removed", || async {
        bound().await.is_none().then_some(())
    })
    .await;
    let unsub = eventually(WAIT, "rds unsubscribed", || async {
        mgmt.delta_requests()
            .into_iter()
            .find(|r| r.type_url == RDS && !r.resource_names_unsubscribe.is_empty())
    })
    .await;
    assert_eq!(unsub.resource_names_unsubscribe, ["main"]);
    assert!(unsub.resource_names_subscribe.is_empty());
}

/// The answer to the delta response of `type_url` with `nonce`.
async fn answer_of(m: &Mgmt, type_url: &str, nonce: &str) -> DeltaDiscoveryRequest {
    eventually(WAIT, &format!("answer to {nonce}"), || async {
        m.delta_requests()
            .into_iter()
            .find(|r| r.type_url == type_url && r.response_nonce == nonce)
    })
    .await
}

/// Requests the killed server had received (a restart keeps counting from there).
fn down_requests(down: &xds_util::Down) -> usize {
    down.delta_requests().len()
}

#[test]
fn validate_checks_the_api_type() {
    let (code, out, path) = support::validate(
        "delta.yaml",
        "clusters:\n  - name: xds_server\n    protocol: http2\n    endpoints: [\"127.0.0.1:18000\"]\nxds:\n  cluster: xds_server\n  node: { id: n1 }\n  api_type: DELTA_GRPC\n",
    );
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains(&format!("{}:8:13", path.display())) && out.contains("aggregated_delta_grpc"),
        "{out}"
    );
    for spelling in ["aggregated_delta_grpc", "AGGREGATED_GRPC"] {
        let (code, out, _) = support::validate(
            "ok.yaml",
            &format!("clusters:\n  - name: xds_server\n    protocol: http2\n    endpoints: [\"127.0.0.1:18000\"]\nxds:\n  cluster: xds_server\n  node: {{ id: n1 }}\n  api_type: {spelling}\n"),
        );
        assert_eq!(code, 0, "{spelling}: {out}");
    }
}
