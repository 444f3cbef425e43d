//! Envoy `Listener` → attache `listeners:` entry: one filter chain whose network
//! filter is the HTTP connection manager (→ an `http` listener) or `tcp_proxy`
//! (→ a `tcp` listener), with an optional DownstreamTlsContext.

use envoy_types::pb::envoy::config::core::v3 as core;
use envoy_types::pb::envoy::config::listener::v3 as lds;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3 as hcm;
use envoy_types::pb::envoy::extensions::filters::network::tcp_proxy::v3 as tcp;
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3 as tls;
use envoy_types::pb::google::protobuf::Any;
use serde_yaml::{Mapping, Value};

use super::route::route_configuration_value;
use super::{common_tls, duration, into_raw, map, opt, socket_address, string, tls_socket, unpack};
use super::{At, Nack};
use crate::config::raw;

const HCM: &str = "envoy.filters.network.http_connection_manager";
const TCP_PROXY: &str = "envoy.filters.network.tcp_proxy";
const ROUTER: &str = "envoy.filters.http.router";
/// Listener filters attache does on its own (protocol and TLS detection) and so
/// accepts as no-ops; `proxy_protocol` maps to `proxy_protocol: true`.
const INSPECTORS: [&str; 2] = [
    "envoy.filters.listener.tls_inspector",
    "envoy.filters.listener.http_inspector",
];
const PROXY_PROTOCOL: &str = "envoy.filters.listener.proxy_protocol";

/// Routes named by an HCM's `rds.route_config_name`, as RDS delivered them.
pub type Rds<'a> = &'a dyn Fn(&str) -> Option<Vec<raw::VirtualHost>>;

/// Translates one LDS resource. A listener whose `rds` route configuration has not
/// arrived yet is refused (the xDS client retries it when the routes come).
pub fn listener(l: &lds::Listener, rds: Rds<'_>) -> Result<raw::Listener, Nack> {
    let at = At::root(&l.name);
    let (value, routes) = listener_value(l)?;
    let mut out: raw::Listener = into_raw(value, &at)?;
    if let Some(name) = routes {
        out.virtual_hosts = rds(&name).ok_or_else(|| {
            at.nack(
                "rds.route_config_name",
                format!("route configuration {name:?} has not been received"),
            )
        })?;
    }
    Ok(out)
}

/// [`listener`] as the YAML value a file would hold, and the RDS name its virtual
/// hosts come from (when they are not inline).
pub(crate) fn listener_value(l: &lds::Listener) -> Result<(Value, Option<String>), Nack> {
    let at = At::root(&l.name);
    let mut rest = l.clone();
    let name = std::mem::take(&mut rest.name);
    let address = socket_address(&rest.address.take(), &at.at("address"))?;
    rest.stat_prefix.clear(); // attache labels metrics with the listener name
    rest.traffic_direction = 0;
    let proxy_protocol = listener_filters(std::mem::take(&mut rest.listener_filters), &at)?;
    let mut chains = std::mem::take(&mut rest.filter_chains).into_iter();
    let (Some(chain), None) = (chains.next(), chains.next()) else {
        return Err(at.nack(
            "filter_chains",
            "exactly one filter chain (no filter_chain_match)",
        ));
    };
    at.done(&rest)?;
    let (mut m, routes) = filter_chain(chain, &at.item("filter_chains", 0))?;
    m.insert(string("name"), string(&name));
    m.insert(string("address"), string(&address));
    if proxy_protocol {
        m.insert(string("proxy_protocol"), Value::Bool(true));
    }
    Ok((Value::Mapping(m), routes))
}

/// True when the PROXY protocol listener filter is present.
fn listener_filters(filters: Vec<lds::ListenerFilter>, at: &At<'_>) -> Result<bool, Nack> {
    let mut proxy_protocol = false;
    for (i, mut f) in filters.into_iter().enumerate() {
        let at = at.item("listener_filters", i);
        let name = std::mem::take(&mut f.name);
        if name == PROXY_PROTOCOL {
            proxy_protocol = true;
        } else if !INSPECTORS.contains(&name.as_str()) {
            return Err(at.nack("name", format!("listener filter {name:?} is not supported")));
        }
        f.config_type = None; // the inspectors' and PROXY filter's defaults are attache's behaviour
        at.done(&f)?;
    }
    Ok(proxy_protocol)
}

fn filter_chain(mut c: lds::FilterChain, at: &At<'_>) -> Result<(Mapping, Option<String>), Nack> {
    use lds::filter::ConfigType;
    c.name.clear();
    let tls = downstream_tls(c.transport_socket.take(), &at.at("transport_socket"))?;
    let mut filters = std::mem::take(&mut c.filters).into_iter();
    let (Some(mut f), None) = (filters.next(), filters.next()) else {
        return Err(at.nack(
            "filters",
            "exactly one network filter: http_connection_manager or tcp_proxy",
        ));
    };
    at.done(&c)?;
    let at = at.item("filters", 0);
    let Some(ConfigType::TypedConfig(any)) = f.config_type.take() else {
        return Err(at.nack("typed_config", "a typed config is required"));
    };
    let name = std::mem::take(&mut f.name);
    at.done(&f)?;
    let at = at.at("typed_config");
    let (mut m, routes, fcc) = match name.as_str() {
        HCM => http(&any, &at)?,
        TCP_PROXY => (tcp_proxy(&any, &at)?, None, Value::Null),
        _ => return Err(at.nack("name", format!("network filter {name:?} is not supported"))),
    };
    if let Value::Mapping(mut t) = tls {
        if !fcc.is_null() {
            t.insert(string("forward_client_cert"), fcc);
        }
        m.insert(string("tls"), Value::Mapping(t));
    } else if !fcc.is_null() {
        return Err(at.nack("forward_client_cert_details", "needs a TLS listener"));
    }
    Ok((m, routes))
}

/// An `http` listener: `(listener keys, rds name, forward_client_cert)`.
fn http(any: &Any, at: &At<'_>) -> Result<(Mapping, Option<String>, Value), Nack> {
    use hcm::http_connection_manager::{CodecType, RouteSpecifier};
    let mut h: hcm::HttpConnectionManager = unpack(any, at, "")?;
    h.stat_prefix.clear();
    if matches!(CodecType::try_from(h.codec_type), Ok(CodecType::Http3)) {
        return Err(at.nack("codec_type", "HTTP/3 is not supported"));
    }
    h.codec_type = 0; // AUTO, HTTP1 and HTTP2: attache's http listeners serve both
    http_filters(std::mem::take(&mut h.http_filters), at)?;
    let (hosts, rds) = match h.route_specifier.take() {
        Some(RouteSpecifier::RouteConfig(rc)) => (route_configuration_value(&rc)?, None),
        Some(RouteSpecifier::Rds(mut r)) => {
            let at = at.at("rds");
            let name = std::mem::take(&mut r.route_config_name);
            ads_only(r.config_source.take(), &at.at("config_source"))?;
            at.done(&r)?;
            (Vec::new(), Some(name))
        }
        _ => return Err(at.nack("route_specifier", "route_config or rds")),
    };
    let options = http_options(&mut h, at)?;
    let fcc = forward_client_cert(&mut h, at)?;
    at.done(&h)?;
    let mut m = Mapping::new();
    m.insert(string("protocol"), string("http"));
    if !options.as_mapping().is_some_and(Mapping::is_empty) {
        m.insert(string("http"), options);
    }
    m.insert(string("virtual_hosts"), Value::Sequence(hosts));
    Ok((m, rds, fcc))
}

/// The filter chain must be just the router: attache's own filters are configured
/// by attache's names, and an Envoy filter it does not have cannot be honoured.
fn http_filters(filters: Vec<hcm::HttpFilter>, at: &At<'_>) -> Result<(), Nack> {
    let last = filters.len().checked_sub(1);
    for (i, mut f) in filters.into_iter().enumerate() {
        let at = at.item("http_filters", i);
        let name = std::mem::take(&mut f.name);
        if name != ROUTER || Some(i) != last {
            return Err(at.nack(
                "name",
                format!("HTTP filter {name:?} is not supported (only {ROUTER}, last)"),
            ));
        }
        f.config_type = None;
        at.done(&f)?;
    }
    if last.is_none() {
        return Err(at.nack("http_filters", format!("{ROUTER} is required")));
    }
    Ok(())
}

fn ads_only(source: Option<core::ConfigSource>, at: &At<'_>) -> Result<(), Nack> {
    use core::config_source::ConfigSourceSpecifier as S;
    let Some(mut s) = source else { return Ok(()) };
    if !matches!(
        s.config_source_specifier.take(),
        None | Some(S::Ads(_)) | Some(S::Self_(_))
    ) {
        return Err(at.nack(
            "",
            "attache reads RDS over the ADS stream only (use ads: {})",
        ));
    }
    s.resource_api_version = 0;
    s.initial_fetch_timeout = None;
    at.done(&s)
}

/// The HCM settings that map onto `http:` options. Where proto3 cannot tell "unset"
/// from Envoy's permissive default (`merge_slashes: false`, underscores ALLOW, escaped
/// slashes by default), attache keeps its safer default (docs/xds-subset.md).
fn http_options(h: &mut hcm::HttpConnectionManager, at: &At<'_>) -> Result<Value, Nack> {
    use core::http_protocol_options::HeadersWithUnderscoresAction as U;
    use hcm::http_connection_manager::PathWithEscapedSlashesAction as E;
    let mut idle = Value::Null;
    let mut underscores = Value::Null;
    if let Some(mut c) = h.common_http_protocol_options.take() {
        let at = at.at("common_http_protocol_options");
        idle = duration(&c.idle_timeout.take(), &at, "idle_timeout")?;
        underscores = match U::try_from(std::mem::take(&mut c.headers_with_underscores_action)) {
            Ok(U::Allow) => Value::Null,
            Ok(U::RejectRequest) => string("reject"),
            Ok(U::DropHeader) => string("drop"),
            Err(_) => return Err(at.nack("headers_with_underscores_action", "unknown action")),
        };
        at.done(&c)?;
    }
    let escaped = match E::try_from(std::mem::take(&mut h.path_with_escaped_slashes_action)) {
        Ok(E::ImplementationSpecificDefault | E::RejectRequest) => Value::Null,
        Ok(E::KeepUnchanged) => string("keep"),
        _ => {
            return Err(at.nack(
                "path_with_escaped_slashes_action",
                "KEEP_UNCHANGED or REJECT_REQUEST",
            ))
        }
    };
    // attache always normalizes paths and appends the peer to x-forwarded-for.
    h.normalize_path = None;
    h.use_remote_address = None;
    let merge = std::mem::take(&mut h.merge_slashes);
    Ok(map([
        (
            "max_request_headers_kb",
            opt(h.max_request_headers_kb.take().map(|v| u64::from(v.value))),
        ),
        ("idle_timeout", idle),
        (
            "request_head_timeout",
            duration(
                &h.request_headers_timeout.take(),
                at,
                "request_headers_timeout",
            )?,
        ),
        ("headers_with_underscores", underscores),
        ("escaped_slashes", escaped),
        (
            "merge_slashes",
            if merge {
                Value::Bool(true)
            } else {
                Value::Null
            },
        ),
        (
            "generate_request_id",
            opt(h.generate_request_id.take().map(|b| b.value)),
        ),
    ]))
}

fn forward_client_cert(h: &mut hcm::HttpConnectionManager, at: &At<'_>) -> Result<Value, Nack> {
    use hcm::http_connection_manager::ForwardClientCertDetails as F;
    match F::try_from(std::mem::take(&mut h.forward_client_cert_details)) {
        Ok(F::Sanitize) => Ok(Value::Null),
        Ok(F::AppendForward) => Ok(string("append_forward")),
        Ok(F::SanitizeSet) => Ok(string("sanitize_set")),
        _ => Err(at.nack(
            "forward_client_cert_details",
            "SANITIZE, APPEND_FORWARD or SANITIZE_SET",
        )),
    }
}

fn tcp_proxy(any: &Any, at: &At<'_>) -> Result<Mapping, Nack> {
    use tcp::tcp_proxy::ClusterSpecifier;
    let mut t: tcp::TcpProxy = unpack(any, at, "")?;
    t.stat_prefix.clear();
    let Some(ClusterSpecifier::Cluster(cluster)) = t.cluster_specifier.take() else {
        return Err(at.nack(
            "cluster_specifier",
            "one cluster (weighted clusters are not supported)",
        ));
    };
    let options = map([
        ("cluster", string(&cluster)),
        (
            "idle_timeout",
            duration(&t.idle_timeout.take(), at, "idle_timeout")?,
        ),
        (
            "connect_attempts",
            opt(t.max_connect_attempts.take().map(|v| u64::from(v.value))),
        ),
    ]);
    at.done(&t)?;
    let mut m = Mapping::new();
    m.insert(string("protocol"), string("tcp"));
    m.insert(string("tcp"), options);
    Ok(m)
}

fn downstream_tls(t: Option<core::TransportSocket>, at: &At<'_>) -> Result<Value, Nack> {
    let Some((mut ctx, at)) = tls_socket::<tls::DownstreamTlsContext>(t, at)? else {
        return Ok(Value::Null);
    };
    let common = common_tls(&ctx.common_tls_context.take(), &at.at("common_tls_context"))?;
    let require = ctx.require_client_certificate.take().map(|b| b.value);
    at.done(&ctx)?;
    let sans: Vec<Value> = common
        .sans
        .into_iter()
        .map(|(kind, v)| map([(kind, string(&v))]))
        .collect();
    Ok(map([
        ("cert_chain", common.cert_chain),
        ("private_key", common.private_key),
        ("client_ca", common.ca),
        ("require_client_cert", opt(require)),
        (
            "allowed_client_sans",
            if sans.is_empty() {
                Value::Null
            } else {
                Value::Sequence(sans)
            },
        ),
        ("alpn", common.alpn),
        ("min_version", common.min_version),
    ]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::from_xds::tests_util::{addr, any, compiles_listener};
    use envoy_types::pb::envoy::config::route::v3 as rds;

    fn hcm_listener(h: hcm::HttpConnectionManager) -> lds::Listener {
        lds::Listener {
            name: "ingress".into(),
            address: Some(addr("127.0.0.1", 0)),
            filter_chains: vec![lds::FilterChain {
                filters: vec![lds::Filter {
                    name: HCM.into(),
                    config_type: Some(lds::filter::ConfigType::TypedConfig(any(&h))),
                }],
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    fn router() -> Vec<hcm::HttpFilter> {
        vec![hcm::HttpFilter {
            name: ROUTER.into(),
            ..Default::default()
        }]
    }

    fn inline_routes() -> hcm::HttpConnectionManager {
        let route = rds::Route {
            r#match: Some(rds::RouteMatch {
                path_specifier: Some(rds::route_match::PathSpecifier::Prefix("/".into())),
                ..Default::default()
            }),
            action: Some(rds::route::Action::Route(rds::RouteAction {
                cluster_specifier: Some(rds::route_action::ClusterSpecifier::Cluster("web".into())),
                ..Default::default()
            })),
            ..Default::default()
        };
        hcm::HttpConnectionManager {
            stat_prefix: "ingress_http".into(),
            http_filters: router(),
            route_specifier: Some(hcm::http_connection_manager::RouteSpecifier::RouteConfig(
                rds::RouteConfiguration {
                    name: "local".into(),
                    virtual_hosts: vec![rds::VirtualHost {
                        name: "all".into(),
                        domains: vec!["*".into()],
                        routes: vec![route],
                        ..Default::default()
                    }],
                    ..Default::default()
                },
            )),
            ..Default::default()
        }
    }

    #[test]
    fn an_http_listener_with_inline_routes_translates_and_compiles() {
        let l = hcm_listener(inline_routes());
        let raw = listener(&l, &|_| None).expect("translates");
        assert_eq!(
            (raw.name.as_str(), raw.address.as_str()),
            ("ingress", "127.0.0.1:0")
        );
        assert_eq!(raw.protocol, raw::ListenerProtocol::Http);
        assert_eq!(raw.virtual_hosts[0].routes.len(), 1);
        compiles_listener(&listener_value(&l).expect("translates").0, &["web"]);
    }

    #[test]
    fn rds_routes_come_from_the_callback_or_the_listener_waits() {
        let mut h = inline_routes();
        h.route_specifier = Some(hcm::http_connection_manager::RouteSpecifier::Rds(
            hcm::Rds {
                route_config_name: "main".into(),
                ..Default::default()
            },
        ));
        let l = hcm_listener(h);
        let n = listener(&l, &|_| None).expect_err("routes not there yet");
        assert_eq!(n.field, "rds.route_config_name");
        let hosts = crate::config::from_xds::route_configuration(&rds::RouteConfiguration {
            name: "main".into(),
            virtual_hosts: vec![rds::VirtualHost {
                name: "v".into(),
                domains: vec!["*".into()],
                ..Default::default()
            }],
            ..Default::default()
        })
        .expect("routes");
        let raw =
            listener(&l, &|name| (name == "main").then(|| hosts.clone())).expect("translates");
        assert_eq!(raw.virtual_hosts[0].name, "v");
    }

    #[test]
    fn a_tcp_proxy_listener_translates() {
        let t = tcp::TcpProxy {
            stat_prefix: "pg".into(),
            cluster_specifier: Some(tcp::tcp_proxy::ClusterSpecifier::Cluster("postgres".into())),
            ..Default::default()
        };
        let l = lds::Listener {
            name: "pg".into(),
            address: Some(addr("127.0.0.1", 5432)),
            filter_chains: vec![lds::FilterChain {
                filters: vec![lds::Filter {
                    name: TCP_PROXY.into(),
                    config_type: Some(lds::filter::ConfigType::TypedConfig(any(&t))),
                }],
                ..Default::default()
            }],
            ..Default::default()
        };
        let raw = listener(&l, &|_| None).expect("translates");
        assert_eq!(raw.protocol, raw::ListenerProtocol::Tcp);
        assert_eq!(raw.tcp.map(|t| t.cluster).as_deref(), Some("postgres"));
    }

    fn tls_socket(ctx: &tls::DownstreamTlsContext) -> core::TransportSocket {
        core::TransportSocket {
            name: "envoy.transport_sockets.tls".into(),
            config_type: Some(core::transport_socket::ConfigType::TypedConfig(any(ctx))),
        }
    }

    fn file(path: &str) -> Option<core::DataSource> {
        Some(core::DataSource {
            specifier: Some(core::data_source::Specifier::Filename(path.into())),
            ..Default::default()
        })
    }

    #[test]
    fn mtls_with_spiffe_sans_translates_and_inline_keys_are_refused() {
        use envoy_types::pb::envoy::r#type::matcher::v3::{
            string_matcher::MatchPattern, StringMatcher,
        };
        let ctx = tls::DownstreamTlsContext {
            require_client_certificate: Some(envoy_types::pb::google::protobuf::BoolValue {
                value: true,
            }),
            common_tls_context: Some(tls::CommonTlsContext {
                tls_certificates: vec![tls::TlsCertificate {
                    certificate_chain: file("/etc/attache/tls/cert.pem"),
                    private_key: file("/etc/attache/tls/key.pem"),
                    ..Default::default()
                }],
                validation_context_type: Some(
                    tls::common_tls_context::ValidationContextType::ValidationContext(
                        tls::CertificateValidationContext {
                            trusted_ca: file("/etc/attache/tls/ca.pem"),
                            match_typed_subject_alt_names: vec![tls::SubjectAltNameMatcher {
                                san_type: tls::subject_alt_name_matcher::SanType::Uri as i32,
                                matcher: Some(StringMatcher {
                                    match_pattern: Some(MatchPattern::Prefix(
                                        "spiffe://corp/".into(),
                                    )),
                                    ..Default::default()
                                }),
                                ..Default::default()
                            }],
                            ..Default::default()
                        },
                    ),
                ),
                ..Default::default()
            }),
            ..Default::default()
        };
        let mut l = hcm_listener(inline_routes());
        l.filter_chains[0].transport_socket = Some(tls_socket(&ctx));
        let raw = listener(&l, &|_| None).expect("translates");
        let t = raw.tls.expect("tls");
        assert_eq!(t.client_ca.as_deref(), Some("/etc/attache/tls/ca.pem"));
        assert_eq!(t.require_client_cert, Some(true));
        assert!(
            matches!(&t.allowed_client_sans[..], [raw::SanMatcher::Rule(r)] if r.prefix.as_deref() == Some("spiffe://corp/"))
        );
        compiles_listener(&listener_value(&l).expect("translates").0, &["web"]);

        let mut inline = ctx.clone();
        if let Some(c) = inline.common_tls_context.as_mut() {
            c.tls_certificates[0].private_key = Some(core::DataSource {
                specifier: Some(core::data_source::Specifier::InlineString("KEY".into())),
                ..Default::default()
            });
        }
        l.filter_chains[0].transport_socket = Some(tls_socket(&inline));
        let n = listener(&l, &|_| None).expect_err("refused");
        assert_eq!(
            n.field,
            "filter_chains[0].transport_socket.typed_config.common_tls_context.tls_certificates[0].private_key"
        );
    }

    #[test]
    fn what_attache_cannot_honour_is_refused_by_field() {
        let mut h = inline_routes();
        h.http_filters.insert(
            0,
            hcm::HttpFilter {
                name: "envoy.filters.http.lua".into(),
                ..Default::default()
            },
        );
        let n = listener(&hcm_listener(h), &|_| None).expect_err("refused");
        assert_eq!(
            n.field,
            "filter_chains[0].filters[0].typed_config.http_filters[0].name"
        );
        let mut h = inline_routes();
        h.xff_num_trusted_hops = 2;
        let n = listener(&hcm_listener(h), &|_| None).expect_err("refused");
        assert_eq!(
            n.field,
            "filter_chains[0].filters[0].typed_config.xff_num_trusted_hops"
        );
        let mut l = hcm_listener(inline_routes());
        l.filter_chains.push(Default::default());
        assert_eq!(
            listener(&l, &|_| None).expect_err("refused").field,
            "filter_chains"
        );
        let mut l = hcm_listener(inline_routes());
        l.per_connection_buffer_limit_bytes = Some(Default::default());
        assert_eq!(
            listener(&l, &|_| None).expect_err("refused").field,
            "per_connection_buffer_limit_bytes"
        );
    }
}
