use envoy_types::pb::envoy::config::core::v3::{
    address, socket_address, Address, HealthStatus, Locality, SocketAddress,
};
use envoy_types::pb::envoy::config::endpoint::v3::{
    lb_endpoint::HostIdentifier, ClusterLoadAssignment, Endpoint, LbEndpoint, LocalityLbEndpoints,
};
use envoy_types::pb::google::protobuf::{Any, UInt32Value};

use super::*;

fn lb(ip: &str, port: u32, weight: Option<u32>, health: HealthStatus) -> LbEndpoint {
    LbEndpoint {
        health_status: health as i32,
        load_balancing_weight: weight.map(|value| UInt32Value { value }),
        host_identifier: Some(HostIdentifier::Endpoint(Endpoint {
            address: Some(Address {
                address: Some(address::Address::SocketAddress(SocketAddress {
                    address: ip.to_string(),
                    port_specifier: Some(socket_address::PortSpecifier::PortValue(port)),
                    ..Default::default()
                })),
            }),
            ..Default::default()
        })),
        ..Default::default()
    }
}

fn locality(zone: &str, eps: Vec<LbEndpoint>) -> LocalityLbEndpoints {
    LocalityLbEndpoints {
        locality: Some(Locality {
            zone: zone.to_string(),
            ..Default::default()
        }),
        lb_endpoints: eps,
        ..Default::default()
    }
}

fn cla(localities: Vec<LocalityLbEndpoints>) -> ClusterLoadAssignment {
    ClusterLoadAssignment {
        cluster_name: "api".to_string(),
        endpoints: localities,
        ..Default::default()
    }
}

fn err(c: &ClusterLoadAssignment, max: usize) -> String {
    match specs(c, max) {
        Ok(v) => panic!("accepted {v:?}"),
        Err(n) => n.to_string(),
    }
}

#[test]
fn addresses_weights_and_zones_become_specs() {
    let c = cla(vec![
        locality(
            "us-east-1a",
            vec![lb("10.0.0.1", 80, Some(3), HealthStatus::Healthy)],
        ),
        locality("", vec![lb("::1", 8080, None, HealthStatus::Unknown)]),
    ]);
    let s = specs(&c, 10).expect("valid");
    assert_eq!(s.len(), 2);
    assert_eq!(s[0].addr.to_string(), "10.0.0.1:80");
    assert_eq!((s[0].weight, s[0].zone.as_deref()), (3, Some("us-east-1a")));
    assert_eq!(s[1].addr.to_string(), "[::1]:8080");
    assert_eq!((s[1].weight, s[1].zone.as_deref()), (1, None));
}

#[test]
fn only_healthy_unknown_and_degraded_endpoints_take_traffic() {
    let c = cla(vec![locality(
        "z",
        vec![
            lb("10.0.0.1", 80, None, HealthStatus::Healthy),
            lb("10.0.0.2", 80, None, HealthStatus::Unhealthy),
            lb("10.0.0.3", 80, None, HealthStatus::Draining),
            lb("10.0.0.4", 80, None, HealthStatus::Timeout),
            lb("10.0.0.5", 80, None, HealthStatus::Unknown),
            lb("10.0.0.6", 80, None, HealthStatus::Degraded),
        ],
    )]);
    let got: Vec<String> = specs(&c, 10)
        .expect("valid")
        .iter()
        .map(|s| s.addr.to_string())
        .collect();
    assert_eq!(got, ["10.0.0.1:80", "10.0.0.5:80", "10.0.0.6:80"]);
}

#[test]
fn nothing_serving_is_rejected() {
    let c = cla(vec![locality(
        "z",
        vec![lb("10.0.0.1", 80, None, HealthStatus::Draining)],
    )]);
    assert_eq!(
        err(&c, 10),
        "api: endpoints: none of the 1 endpoints is HEALTHY or UNKNOWN; keeping the last good set"
    );
    assert!(err(&cla(vec![]), 10).contains("the endpoint list is empty"));
}

#[test]
fn priorities_above_zero_are_rejected_naming_the_field() {
    let mut l = locality("z", vec![lb("10.0.0.1", 80, None, HealthStatus::Healthy)]);
    l.priority = 1;
    let c = cla(vec![
        locality("z", vec![lb("10.0.0.2", 80, None, HealthStatus::Healthy)]),
        l,
    ]);
    assert!(err(&c, 10).starts_with("api: endpoints[1].priority: priority 1 is not supported"));
}

#[test]
fn bad_entries_name_their_field_path() {
    let dup = cla(vec![
        locality("a", vec![lb("10.0.0.1", 80, None, HealthStatus::Healthy)]),
        locality(
            "b",
            vec![
                lb("10.0.0.9", 80, None, HealthStatus::Healthy),
                lb("10.0.0.1", 80, None, HealthStatus::Healthy),
            ],
        ),
    ]);
    assert_eq!(
        err(&dup, 10),
        "api: endpoints[1].lb_endpoints[1].endpoint.address.socket_address: endpoint 10.0.0.1:80 is listed twice"
    );
    let name = cla(vec![locality(
        "a",
        vec![lb("api.internal", 80, None, HealthStatus::Healthy)],
    )]);
    assert!(err(&name, 10).starts_with(
        "api: endpoints[0].lb_endpoints[0].endpoint.address.socket_address.address: `api.internal` is not an IP address"
    ));
    let zero = cla(vec![locality(
        "a",
        vec![lb("10.0.0.1", 80, Some(0), HealthStatus::Healthy)],
    )]);
    assert_eq!(
        err(&zero, 10),
        "api: endpoints[0].lb_endpoints[0].load_balancing_weight: weight 0 must be between 1 and 10000"
    );
    let port = cla(vec![locality(
        "a",
        vec![lb("10.0.0.1", 0, None, HealthStatus::Healthy)],
    )]);
    assert!(err(&port, 10).contains("needs a port other than 0"));
    let big = cla(vec![locality(
        "a",
        vec![lb("10.0.0.1", 70000, None, HealthStatus::Healthy)],
    )]);
    assert!(err(&big, 10).contains("port 70000 is out of range"));
}

#[test]
fn over_max_endpoints_is_rejected() {
    let eps = (1..=3)
        .map(|i| lb(&format!("10.0.0.{i}"), 80, None, HealthStatus::Healthy))
        .collect();
    let c = cla(vec![locality("a", eps)]);
    assert_eq!(
        err(&c, 2),
        "api: endpoints: 3 endpoints is over the limit of 2 (max_endpoints)"
    );
}

fn encoded(c: &ClusterLoadAssignment) -> Any {
    Any {
        type_url: crate::xds::type_url(ResourceType::Eds).to_string(),
        value: prost_otlp::Message::encode_to_vec(c),
    }
}

#[test]
fn a_response_with_one_bad_assignment_is_rejected_whole() {
    let reg = registry();
    let good = cla(vec![locality(
        "a",
        vec![lb("10.0.0.1", 80, None, HealthStatus::Healthy)],
    )]);
    let mut bad = cla(vec![locality(
        "a",
        vec![lb("nope", 80, None, HealthStatus::Healthy)],
    )]);
    bad.cluster_name = "other_unit_test_service".to_string();
    assert!(reg.check(vec![encoded(&good), encoded(&bad)]).is_err());
    let mut twice = good.clone();
    twice.endpoints.clear();
    let e = reg
        .check(vec![encoded(&good), encoded(&twice)])
        .err()
        .map(|n| n.to_string());
    assert_eq!(
        e.as_deref(),
        Some("api: cluster_name: the response carries this ClusterLoadAssignment twice")
    );
    let wrong = Any {
        type_url: "type.googleapis.com/envoy.config.cluster.v3.Cluster".to_string(),
        value: Vec::new(),
    };
    assert_eq!(
        reg.check(vec![encoded(&good), wrong]).err().map(|n| n.to_string()).as_deref(),
        Some("resources[1]: type_url: `type.googleapis.com/envoy.config.cluster.v3.Cluster` in a eds response")
    );
    assert_eq!(
        reg.check(vec![encoded(&good)]).map(|v| v.len()).ok(),
        Some(1)
    );
}

/// An assignment of `service` with `n` endpoints over four zones; `moved` of them
/// (every hundredth from the first) on other addresses.
fn big(service: &str, n: u32, moved: u32) -> ClusterLoadAssignment {
    let zones = ["z1", "z2", "z3", "z4"];
    let mut locs: Vec<LocalityLbEndpoints> =
        zones.iter().map(|z| locality(z, Vec::new())).collect();
    for i in 0..n {
        let host = if i % 100 == 0 && i / 100 < moved {
            200
        } else {
            10
        };
        let ip = format!("{host}.{}.{}.{}", (i >> 16) & 255, (i >> 8) & 255, i & 255);
        locs[(i % 4) as usize]
            .lb_endpoints
            .push(lb(&ip, 8080, None, HealthStatus::Healthy));
    }
    ClusterLoadAssignment {
        cluster_name: service.to_string(),
        endpoints: locs,
        ..Default::default()
    }
}

/// A cluster taking `service` from the registry.
fn eds_cluster(service: &str) -> Arc<Cluster> {
    let yaml =
        format!("{{ name: {service}, discovery: {{ eds: {{ service_name: {service} }} }} }}");
    let c = crate::config::testing::cluster(&yaml, Vec::new(), &attache_filters::Stats::new());
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    rt.block_on(attach(&c, service));
    c
}

fn push(service: &str, c: &ClusterLoadAssignment) -> bool {
    let checked = registry().check(vec![encoded(c)]).expect("valid");
    assert_eq!(checked[0].service, service);
    let repeated = checked[0].repeated;
    registry().apply(checked);
    repeated
}

#[test]
fn endpoints_that_stay_keep_their_state_and_allocations() {
    let c = eds_cluster("unit_stay");
    push("unit_stay", &big("unit_stay", 10_000, 0));
    let before = c.hosts().all.clone();
    assert_eq!(before.len(), 10_000);
    let z = before[0].zone().expect("zone");
    let same_zone = before
        .iter()
        .filter_map(|e| e.zone())
        .filter(|x| Arc::ptr_eq(x, &z));
    assert_eq!(same_zone.count(), 2_500, "a zone is one allocation");

    push("unit_stay", &big("unit_stay", 10_000, 100));
    let after = c.hosts().all.clone();
    assert_eq!(after.len(), 10_000);
    let kept = after
        .iter()
        .filter(|e| before.iter().any(|b| Arc::ptr_eq(b, e)))
        .count();
    assert_eq!(
        kept, 9_900,
        "every endpoint that stays is the same endpoint"
    );
    let zone_kept = after
        .iter()
        .filter(|e| e.addr.ip().to_string().starts_with("10."))
        .all(|e| {
            e.zone().is_some_and(|x| {
                before
                    .iter()
                    .any(|b| b.zone().is_some_and(|y| Arc::ptr_eq(&x, &y)))
            })
        });
    assert!(
        zone_kept,
        "an endpoint that stays keeps its zone allocation"
    );
    assert!(after.windows(2).all(|w| w[0].addr < w[1].addr));
}

#[test]
fn an_update_that_changes_nothing_builds_nothing() {
    let c = eds_cluster("unit_same");
    let v1 = big("unit_same", 10_000, 0);
    assert!(!push("unit_same", &v1));
    let set = Arc::as_ptr(&c.hosts());

    // The same resource again: recognized by its encoding, not decoded or checked.
    assert!(push("unit_same", &v1), "the same resource is recognized");
    assert_eq!(Arc::as_ptr(&c.hosts()), set);

    // The same endpoints in another order and encoding: checked, found unchanged by
    // comparison, and the set the data path reads is not replaced.
    let mut v2 = v1.clone();
    v2.endpoints.reverse();
    for l in &mut v2.endpoints {
        l.lb_endpoints.reverse();
    }
    assert!(!push("unit_same", &v2));
    assert_eq!(Arc::as_ptr(&c.hosts()), set);

    // A weight change is a change.
    v2.endpoints[0].lb_endpoints[0].load_balancing_weight = Some(UInt32Value { value: 5 });
    assert!(!push("unit_same", &v2));
    assert_ne!(Arc::as_ptr(&c.hosts()), set);
}

/// Where the time of a 10,000-endpoint update goes (run with `--ignored
/// --nocapture`; a measurement, not a check).
#[test]
#[ignore]
fn profile_a_10k_endpoint_update() {
    use std::time::Instant;
    let c = eds_cluster("unit_profile");
    let v1 = encoded(&big("unit_profile", 10_000, 0));
    let v2 = encoded(&big("unit_profile", 10_000, 100));
    registry().apply(registry().check(vec![v1.clone()]).expect("valid"));
    for (name, any) in [("moves 1%", &v2), ("moves back", &v1), ("repeated", &v1)] {
        let t = Instant::now();
        let cla: ClusterLoadAssignment =
            crate::xds::decode(ResourceType::Eds, 0, any).expect("decode");
        let decode = t.elapsed();
        let t = Instant::now();
        let s = specs(&cla, 10_000).expect("valid");
        let check = t.elapsed();
        drop(s);
        let t = Instant::now();
        let checked = registry().check(vec![any.clone()]).expect("valid");
        let all = t.elapsed();
        let t = Instant::now();
        registry().apply(checked);
        let apply = t.elapsed();
        println!("{name}: decode {decode:?}, specs {check:?}, registry check {all:?}, apply {apply:?}, {} endpoints", c.hosts().all.len());
    }
}
