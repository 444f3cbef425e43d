use envoy_types::pb::envoy::config::core::v3::{
    address, socket_address, Address, HealthStatus, Locality, SocketAddress,
};
use envoy_types::pb::envoy::config::endpoint::v3::{
    lb_endpoint::HostIdentifier, ClusterLoadAssignment, Endpoint, LbEndpoint, LocalityLbEndpoints,
};
use envoy_types::pb::google::protobuf::UInt32Value;

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
    assert!(reg.check(&[good.clone(), bad]).is_err());
    let mut twice = good.clone();
    twice.endpoints.clear();
    let e = reg
        .check(&[good.clone(), twice])
        .err()
        .map(|n| n.to_string());
    assert_eq!(
        e.as_deref(),
        Some("api: cluster_name: the response carries this ClusterLoadAssignment twice")
    );
    assert_eq!(reg.check(&[good]).map(|v| v.len()).ok(), Some(1));
}
