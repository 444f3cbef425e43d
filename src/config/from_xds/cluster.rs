//! Envoy `Cluster` → attache `clusters:` entry.

use envoy_types::pb::envoy::config::cluster::v3 as cds;
use envoy_types::pb::envoy::config::core::v3 as core;
use envoy_types::pb::envoy::config::endpoint::v3 as eds;
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3 as tls;
use envoy_types::pb::envoy::extensions::upstreams::http::v3 as http_opts;
use serde_yaml::Value;

use super::{common_tls, duration, into_raw, map, opt, opt_string, socket_address, string};
use super::{tls_socket, unpack};
use super::{At, Nack};
use crate::config::raw;

const HTTP_OPTIONS: &str = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions";

/// Translates one CDS resource. STATIC and STRICT/LOGICAL_DNS clusters carry their
/// endpoints; EDS clusters take them from the xDS server (`discovery: { eds }`).
pub fn cluster(c: &cds::Cluster) -> Result<raw::Cluster, Nack> {
    into_raw(cluster_value(c)?, &At::root(&c.name))
}

/// [`cluster`] as the YAML value a file would hold.
pub(crate) fn cluster_value(c: &cds::Cluster) -> Result<Value, Nack> {
    let at = At::root(&c.name);
    let mut rest = c.clone();
    let name = std::mem::take(&mut rest.name);
    if name.is_empty() {
        return Err(at.nack("name", "a cluster needs a name"));
    }
    let discovery = discovery(&mut rest, &at)?;
    let protocol = protocol(&mut rest, &at)?;
    let value = map([
        ("name", string(&name)),
        ("discovery", discovery),
        (
            "connect_timeout",
            duration(&rest.connect_timeout.take(), &at, "connect_timeout")?,
        ),
        (
            "lb_policy",
            lb_policy(std::mem::take(&mut rest.lb_policy), &at)?,
        ),
        (
            "health_check",
            health_check(std::mem::take(&mut rest.health_checks), &at)?,
        ),
        (
            "circuit_breakers",
            breakers(rest.circuit_breakers.take(), &at.at("circuit_breakers"))?,
        ),
        (
            "outlier_detection",
            outlier(rest.outlier_detection.take(), &at.at("outlier_detection"))?,
        ),
        (
            "tls",
            upstream_tls(rest.transport_socket.take(), &at.at("transport_socket"))?,
        ),
        ("protocol", protocol.0),
        ("idle_timeout", protocol.1),
        ("panic_threshold", panic_threshold(&mut rest, &at)?),
    ]);
    at.done(&rest)?;
    Ok(value)
}

/// `cluster_discovery_type` with `load_assignment` / `eds_cluster_config`.
fn discovery(rest: &mut cds::Cluster, at: &At<'_>) -> Result<Value, Nack> {
    use cds::cluster::{ClusterDiscoveryType as T, DiscoveryType as D};
    let ty = match rest.cluster_discovery_type.take() {
        None => D::Static,
        Some(T::Type(t)) => D::try_from(t).map_err(|_| at.nack("type", "unknown type"))?,
        Some(T::ClusterType(_)) => {
            return Err(at.nack("cluster_type", "custom clusters are not supported"))
        }
    };
    let assignment = rest.load_assignment.take();
    match ty {
        D::Static => {
            let entries = endpoints(assignment.as_ref(), &at.at("load_assignment"))?;
            Ok(map([("static", Value::Sequence(entries))]))
        }
        D::StrictDns | D::LogicalDns => dns(rest, assignment.as_ref(), at),
        D::Eds => {
            if assignment.is_some() {
                return Err(at.nack(
                    "load_assignment",
                    "an EDS cluster takes its endpoints from EDS",
                ));
            }
            let mut eds = rest.eds_cluster_config.take().unwrap_or_default();
            let at = at.at("eds_cluster_config");
            ads_source(eds.eds_config.take(), &at.at("eds_config"))?;
            let service = opt_string(&std::mem::take(&mut eds.service_name));
            at.done(&eds)?;
            Ok(map([("eds", map([("service_name", service)]))]))
        }
        D::OriginalDst => Err(at.nack("type", "ORIGINAL_DST clusters are not supported")),
    }
}

/// EDS may only come from the same ADS stream (or be left to default to it).
fn ads_source(source: Option<core::ConfigSource>, at: &At<'_>) -> Result<(), Nack> {
    use core::config_source::ConfigSourceSpecifier as S;
    let Some(mut s) = source else { return Ok(()) };
    match s.config_source_specifier.take() {
        None | Some(S::Ads(_)) | Some(S::Self_(_)) => {}
        Some(_) => {
            return Err(at.nack(
                "",
                "attache reads EDS over the ADS stream only (use ads: {})",
            ))
        }
    }
    s.resource_api_version = 0;
    s.initial_fetch_timeout = None;
    at.done(&s)
}

/// `lb_endpoints` as attache's `{ address, weight, zone }` entries.
pub(crate) fn endpoints(
    a: Option<&eds::ClusterLoadAssignment>,
    at: &At<'_>,
) -> Result<Vec<Value>, Nack> {
    let Some(a) = a else { return Ok(Vec::new()) };
    let mut rest = a.clone();
    rest.cluster_name.clear();
    let mut out = Vec::new();
    for (i, mut group) in std::mem::take(&mut rest.endpoints).into_iter().enumerate() {
        let at = at.item("endpoints", i);
        if group.priority != 0 {
            return Err(at.nack(
                "priority",
                "priorities are not supported (all endpoints must be priority 0)",
            ));
        }
        let zone = group
            .locality
            .take()
            .map(|l| l.zone)
            .filter(|z| !z.is_empty());
        group.load_balancing_weight = None;
        for (j, lb) in std::mem::take(&mut group.lb_endpoints)
            .into_iter()
            .enumerate()
        {
            if let Some(e) = lb_endpoint(lb, zone.as_deref(), &at.item("lb_endpoints", j))? {
                out.push(e);
            }
        }
        at.done(&group)?;
    }
    at.done(&rest)?;
    Ok(out)
}

/// One endpoint, or `None` when its health status says it takes no traffic
/// (UNHEALTHY, DRAINING, TIMEOUT); DEGRADED serves, as for EDS (attache has no degraded tier).
fn lb_endpoint(
    mut lb: eds::LbEndpoint,
    zone: Option<&str>,
    at: &At<'_>,
) -> Result<Option<Value>, Nack> {
    use core::HealthStatus as H;
    use eds::lb_endpoint::HostIdentifier;
    let status = H::try_from(std::mem::take(&mut lb.health_status)).unwrap_or(H::Unknown);
    let weight = lb.load_balancing_weight.take().map(|w| w.value);
    let mut endpoint = match lb.host_identifier.take() {
        Some(HostIdentifier::Endpoint(e)) => e,
        _ => {
            return Err(at.nack(
                "endpoint",
                "an endpoint address is required (named endpoints are not supported)",
            ))
        }
    };
    let address = socket_address(&endpoint.address.take(), &at.at("endpoint.address"))?;
    endpoint.hostname.clear();
    at.at("endpoint").done(&endpoint)?;
    at.done(&lb)?;
    if !matches!(status, H::Unknown | H::Healthy | H::Degraded) {
        return Ok(None);
    }
    Ok(Some(map([
        ("address", string(&address)),
        ("weight", opt(weight.map(u64::from))),
        ("zone", opt(zone.map(str::to_string))),
    ])))
}

/// A DNS cluster: one hostname and port, re-resolved at `dns_refresh_rate`.
fn dns(
    rest: &mut cds::Cluster,
    a: Option<&eds::ClusterLoadAssignment>,
    at: &At<'_>,
) -> Result<Value, Nack> {
    let entries = endpoints(a, &at.at("load_assignment"))?;
    let [only] = entries.as_slice() else {
        return Err(at.nack(
            "load_assignment",
            "a DNS cluster names exactly one host:port",
        ));
    };
    let refresh = duration(&rest.dns_refresh_rate.take(), at, "dns_refresh_rate")?;
    rest.dns_lookup_family = 0;
    Ok(map([(
        "dns",
        map([("name", only["address"].clone()), ("refresh", refresh)]),
    )]))
}

fn lb_policy(p: i32, at: &At<'_>) -> Result<Value, Nack> {
    use cds::cluster::LbPolicy as P;
    match P::try_from(p) {
        Ok(P::RoundRobin) => Ok(Value::Null),
        Ok(P::LeastRequest) => Ok(string("least_request")),
        Ok(P::Random) => Ok(string("random")),
        _ => Err(at.nack(
            "lb_policy",
            "only ROUND_ROBIN, LEAST_REQUEST and RANDOM (attache's ring_hash keys on the cluster, not the route's hash_policy)",
        )),
    }
}

/// The first health check (attache runs one per cluster).
fn health_check(checks: Vec<core::HealthCheck>, at: &At<'_>) -> Result<Value, Nack> {
    use core::health_check::HealthChecker as K;
    let mut checks = checks.into_iter();
    let Some(mut hc) = checks.next() else {
        return Ok(Value::Null);
    };
    if checks.next().is_some() {
        return Err(at.nack("health_checks[1]", "one health check per cluster"));
    }
    let at = at.item("health_checks", 0);
    let kind = match hc.health_checker.take() {
        Some(K::HttpHealthCheck(mut h)) => {
            let path = std::mem::take(&mut h.path);
            let host = opt_string(&std::mem::take(&mut h.host));
            h.codec_client_type = 0;
            at.at("http_health_check").done(&h)?;
            ("http", map([("path", string(&path)), ("host", host)]))
        }
        Some(K::TcpHealthCheck(t)) => {
            at.at("tcp_health_check").done(&t)?;
            ("tcp", Value::Mapping(Default::default()))
        }
        Some(K::GrpcHealthCheck(mut g)) => {
            let service = string(&std::mem::take(&mut g.service_name));
            let authority = opt_string(&std::mem::take(&mut g.authority));
            at.at("grpc_health_check").done(&g)?;
            (
                "grpc",
                map([("service", service), ("authority", authority)]),
            )
        }
        _ => return Err(at.nack("health_checker", "http, tcp or grpc health checks only")),
    };
    let u32v = |v: Option<envoy_types::pb::google::protobuf::UInt32Value>| {
        opt(v.map(|v| u64::from(v.value)))
    };
    let value = map([
        (kind.0, kind.1),
        ("interval", duration(&hc.interval.take(), &at, "interval")?),
        ("timeout", duration(&hc.timeout.take(), &at, "timeout")?),
        ("unhealthy_threshold", u32v(hc.unhealthy_threshold.take())),
        ("healthy_threshold", u32v(hc.healthy_threshold.take())),
        (
            "jitter",
            duration(&hc.interval_jitter.take(), &at, "interval_jitter")?,
        ),
    ]);
    at.done(&hc)?;
    Ok(value)
}

/// The DEFAULT-priority thresholds; HIGH priority has no meaning in attache.
fn breakers(b: Option<cds::CircuitBreakers>, at: &At<'_>) -> Result<Value, Nack> {
    let Some(mut b) = b else {
        return Ok(Value::Null);
    };
    let mut thresholds = std::mem::take(&mut b.thresholds).into_iter();
    at.done(&b)?;
    let Some(mut t) = thresholds.next() else {
        return Ok(Value::Null);
    };
    if thresholds.next().is_some() || t.priority != 0 {
        return Err(at.nack(
            "thresholds",
            "only DEFAULT-priority thresholds are supported",
        ));
    }
    let v = |x: Option<envoy_types::pb::google::protobuf::UInt32Value>| {
        opt(x.map(|v| u64::from(v.value)))
    };
    let value = map([
        ("max_connections", v(t.max_connections.take())),
        ("max_pending_requests", v(t.max_pending_requests.take())),
        ("max_requests", v(t.max_requests.take())),
        ("max_retries", v(t.max_retries.take())),
    ]);
    at.at("thresholds[0]").done(&t)?;
    Ok(value)
}

fn outlier(o: Option<cds::OutlierDetection>, at: &At<'_>) -> Result<Value, Nack> {
    let Some(mut o) = o else {
        return Ok(Value::Null);
    };
    let v = |x: Option<envoy_types::pb::google::protobuf::UInt32Value>| {
        opt(x.map(|v| u64::from(v.value)))
    };
    let value = map([
        ("consecutive_5xx", v(o.consecutive_5xx.take())),
        (
            "consecutive_connect_failure",
            v(o.consecutive_local_origin_failure.take()),
        ),
        (
            "base_ejection_time",
            duration(&o.base_ejection_time.take(), at, "base_ejection_time")?,
        ),
        (
            "max_ejection_time",
            duration(&o.max_ejection_time.take(), at, "max_ejection_time")?,
        ),
        ("max_ejection_percent", v(o.max_ejection_percent.take())),
    ]);
    // Envoy's success-rate ejection is on by default (enforcing 100%); attache has
    // none, so only an explicit 0 is accepted as "the same".
    let off = |x: &Option<envoy_types::pb::google::protobuf::UInt32Value>| {
        x.as_ref().is_some_and(|v| v.value == 0)
    };
    if !off(&o.enforcing_success_rate) {
        return Err(at.nack(
            "enforcing_success_rate",
            "attache has no success-rate ejection; set enforcing_success_rate: 0",
        ));
    }
    o.enforcing_success_rate = None;
    o.interval = None; // attache evaluates on every outcome, not on an interval
    at.done(&o)?;
    Ok(value)
}

fn upstream_tls(t: Option<core::TransportSocket>, at: &At<'_>) -> Result<Value, Nack> {
    let Some((mut ctx, at)) = tls_socket::<tls::UpstreamTlsContext>(t, at)? else {
        return Ok(Value::Null);
    };
    let common = common_tls(&ctx.common_tls_context.take(), &at.at("common_tls_context"))?;
    if common.sans.iter().any(|(kind, _)| *kind != "exact") {
        return Err(at.nack(
            "common_tls_context.validation_context.match_typed_subject_alt_names",
            "upstream SANs are verified by exact match only",
        ));
    }
    if !common.min_version.is_null() {
        return Err(at.nack("common_tls_context.tls_params", "not supported on clusters"));
    }
    let sni = opt_string(&std::mem::take(&mut ctx.sni));
    at.done(&ctx)?;
    let sans = common
        .sans
        .into_iter()
        .map(|(_, s)| Value::String(s))
        .collect::<Vec<_>>();
    Ok(map([
        ("ca", common.ca),
        ("sni", sni),
        (
            "verify_sans",
            if sans.is_empty() {
                Value::Null
            } else {
                Value::Sequence(sans)
            },
        ),
        ("cert_chain", common.cert_chain),
        ("private_key", common.private_key),
        ("alpn", common.alpn),
    ]))
}

/// `(protocol, idle_timeout)` from the HTTP protocol options (typed or the
/// deprecated cluster fields).
fn protocol(rest: &mut cds::Cluster, at: &At<'_>) -> Result<(Value, Value), Nack> {
    use http_opts::http_protocol_options::explicit_http_config::ProtocolConfig as P;
    use http_opts::http_protocol_options::UpstreamProtocolOptions as U;
    let mut h2 = rest.http2_protocol_options.take().is_some();
    let mut idle = rest.common_http_protocol_options.take();
    if let Some(any) = rest.typed_extension_protocol_options.remove(HTTP_OPTIONS) {
        let at = at.at(&format!("typed_extension_protocol_options[{HTTP_OPTIONS}]"));
        let mut o: http_opts::HttpProtocolOptions = unpack(&any, &at, "")?;
        match o.upstream_protocol_options.take() {
            None => {}
            Some(U::ExplicitHttpConfig(mut e)) => {
                h2 = matches!(e.protocol_config.take(), Some(P::Http2ProtocolOptions(_)));
                at.at("explicit_http_config").done(&e)?;
            }
            Some(_) => {
                return Err(at.nack("upstream_protocol_options", "only explicit_http_config"))
            }
        }
        idle = o.common_http_protocol_options.take().or(idle);
        at.done(&o)?;
    }
    let idle = match idle {
        None => Value::Null,
        Some(mut c) => {
            let at = at.at("common_http_protocol_options");
            let v = duration(&c.idle_timeout.take(), &at, "idle_timeout")?;
            at.done(&c)?;
            v
        }
    };
    Ok((if h2 { string("http2") } else { Value::Null }, idle))
}

fn panic_threshold(rest: &mut cds::Cluster, at: &At<'_>) -> Result<Value, Nack> {
    let Some(mut c) = rest.common_lb_config.take() else {
        return Ok(Value::Null);
    };
    let at = at.at("common_lb_config");
    let v = c.healthy_panic_threshold.take().map(|p| p.value);
    at.done(&c)?;
    Ok(opt(v))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::from_xds::tests_util::{addr, compiles, dur, u32v};

    fn eds_cluster(name: &str) -> cds::Cluster {
        cds::Cluster {
            name: name.into(),
            cluster_discovery_type: Some(cds::cluster::ClusterDiscoveryType::Type(
                cds::cluster::DiscoveryType::Eds as i32,
            )),
            eds_cluster_config: Some(cds::cluster::EdsClusterConfig {
                eds_config: Some(core::ConfigSource {
                    config_source_specifier: Some(core::config_source::ConfigSourceSpecifier::Ads(
                        Default::default(),
                    )),
                    ..Default::default()
                }),
                service_name: "users-v1".into(),
            }),
            connect_timeout: Some(dur(0, 250_000_000)),
            lb_policy: cds::cluster::LbPolicy::LeastRequest as i32,
            ..Default::default()
        }
    }

    #[test]
    fn an_eds_cluster_takes_its_endpoints_from_eds() {
        let c = cluster(&eds_cluster("users")).expect("translates");
        assert_eq!(c.name, "users");
        let eds = c.discovery.and_then(|d| d.eds).expect("eds discovery");
        assert_eq!(eds.service_name.as_deref(), Some("users-v1"));
        assert_eq!(c.lb_policy, raw::LbPolicy::LeastRequest);
        assert_eq!(
            c.connect_timeout.map(|d| d.0),
            Some(std::time::Duration::from_millis(250))
        );
    }

    #[test]
    fn a_static_cluster_with_breakers_health_and_tls_compiles() {
        let la = eds::ClusterLoadAssignment {
            cluster_name: "pay".into(),
            endpoints: vec![eds::LocalityLbEndpoints {
                locality: Some(core::Locality {
                    zone: "z1".into(),
                    ..Default::default()
                }),
                lb_endpoints: vec![
                    eds::LbEndpoint {
                        host_identifier: Some(eds::lb_endpoint::HostIdentifier::Endpoint(
                            eds::Endpoint {
                                address: Some(addr("10.0.0.1", 8080)),
                                ..Default::default()
                            },
                        )),
                        load_balancing_weight: Some(u32v(3)),
                        ..Default::default()
                    },
                    eds::LbEndpoint {
                        health_status: core::HealthStatus::Draining as i32,
                        host_identifier: Some(eds::lb_endpoint::HostIdentifier::Endpoint(
                            eds::Endpoint {
                                address: Some(addr("10.0.0.2", 8080)),
                                ..Default::default()
                            },
                        )),
                        ..Default::default()
                    },
                ],
                ..Default::default()
            }],
            ..Default::default()
        };
        let c = cds::Cluster {
            name: "pay".into(),
            load_assignment: Some(la),
            circuit_breakers: Some(cds::CircuitBreakers {
                thresholds: vec![cds::circuit_breakers::Thresholds {
                    max_connections: Some(u32v(7)),
                    max_requests: Some(u32v(9)),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            health_checks: vec![core::HealthCheck {
                timeout: Some(dur(1, 0)),
                interval: Some(dur(2, 0)),
                health_checker: Some(core::health_check::HealthChecker::HttpHealthCheck(
                    core::health_check::HttpHealthCheck {
                        path: "/healthz".into(),
                        ..Default::default()
                    },
                )),
                ..Default::default()
            }],
            ..Default::default()
        };
        let raw = cluster(&c).expect("translates");
        let d = raw
            .discovery
            .as_ref()
            .and_then(|d| d.static_endpoints.clone())
            .expect("static");
        assert_eq!(d.len(), 1, "the DRAINING endpoint takes no traffic");
        assert_eq!(
            (d[0].address.as_str(), d[0].weight, d[0].zone.as_deref()),
            ("10.0.0.1:8080", Some(3), Some("z1"))
        );
        assert_eq!(
            raw.circuit_breakers
                .as_ref()
                .and_then(|b| b.max_connections),
            Some(7)
        );
        assert_eq!(
            raw.health_check
                .as_ref()
                .and_then(|h| h.http.as_ref())
                .map(|h| h.path.as_str()),
            Some("/healthz")
        );
        compiles(&[], &[cluster_value(&c).expect("translates")], &[]);
    }

    #[test]
    fn what_attache_cannot_honour_is_refused_by_field() {
        let nack = |c: cds::Cluster| cluster(&c).expect_err("refused");
        let mut c = eds_cluster("a");
        c.lb_policy = cds::cluster::LbPolicy::Maglev as i32;
        assert_eq!(nack(c).field, "lb_policy");
        let mut c = eds_cluster("a");
        c.per_connection_buffer_limit_bytes = Some(u32v(1024));
        let n = nack(c);
        assert_eq!(
            (n.resource.as_str(), n.field.as_str()),
            ("a", "per_connection_buffer_limit_bytes")
        );
        assert_eq!(
            n.to_string(),
            "a: per_connection_buffer_limit_bytes: not supported by attache"
        );
        let mut c = eds_cluster("a");
        c.outlier_detection = Some(cds::OutlierDetection {
            consecutive_5xx: Some(u32v(3)),
            ..Default::default()
        });
        assert_eq!(nack(c).field, "outlier_detection.enforcing_success_rate");
        let mut c = eds_cluster("a");
        if let Some(e) = c.eds_cluster_config.as_mut() {
            e.eds_config = Some(core::ConfigSource {
                config_source_specifier: Some(core::config_source::ConfigSourceSpecifier::Path(
                    "/x".into(),
                )),
                ..Default::default()
            });
        }
        assert_eq!(nack(c).field, "eds_cluster_config.eds_config");
        let mut c = eds_cluster("a");
        c.health_checks = vec![core::HealthCheck {
            health_checker: Some(core::health_check::HealthChecker::HttpHealthCheck(
                core::health_check::HttpHealthCheck {
                    path: "/h".into(),
                    expected_statuses: vec![Default::default()],
                    ..Default::default()
                },
            )),
            ..Default::default()
        }];
        assert_eq!(
            nack(c).field,
            "health_checks[0].http_health_check.expected_statuses"
        );
    }
}
