//! EDS: a ClusterLoadAssignment → the endpoint specs of a cluster, checked like a
//! discovery file (`config::endpoints::Admit`); a problem is a [`Nack`] with the
//! assignment's field path. The registry that applies them is `xds::eds`.

use std::net::{IpAddr, SocketAddr};

use envoy_types::pb::envoy::config::core::v3::{address, socket_address, HealthStatus};
use envoy_types::pb::envoy::config::endpoint::v3::{
    lb_endpoint::HostIdentifier, ClusterLoadAssignment, LbEndpoint,
};

use super::{nack, Nack};
use crate::config::endpoints::{self, Key, Spec};

/// Where an endpoint sits in the assignment, for error paths.
#[derive(Clone, Copy)]
struct At {
    locality: usize,
    endpoint: usize,
}

impl At {
    fn path(self) -> String {
        format!(
            "endpoints[{}].lb_endpoints[{}]",
            self.locality, self.endpoint
        )
    }
}

/// An endpoint that may take traffic, before the checks every endpoint set passes.
struct Candidate<'a> {
    addr: SocketAddr,
    weight: Option<u32>,
    zone: Option<&'a str>,
    at: At,
}

/// The endpoints of `cla` that may take traffic, in the order listed, checked like a
/// discovery file (`config::endpoints::Admit`). Field paths are only formatted for a
/// refusal: a large assignment costs one pass and no per-endpoint strings.
pub fn specs(cla: &ClusterLoadAssignment, max: usize) -> Result<Vec<Spec>, Nack> {
    let name = cla.cluster_name.as_str();
    let candidates = candidates(cla)?;
    if let Some(m) = endpoints::count_problem(candidates.len(), max) {
        return Err(nack(name, "endpoints", m));
    }
    let mut admit = endpoints::Admit::with_capacity(candidates.len());
    candidates
        .into_iter()
        .map(|c| {
            admit.spec(c.addr, c.weight, c.zone).map_err(|errs| {
                let (key, m) = errs
                    .into_iter()
                    .next()
                    .unwrap_or((Key::Address, String::new()));
                nack(name, &field_of(key, c.at), m)
            })
        })
        .collect()
}

/// The endpoints that may take traffic, with their addresses read; what the
/// assignment asks for that attache cannot do is refused here.
fn candidates(cla: &ClusterLoadAssignment) -> Result<Vec<Candidate<'_>>, Nack> {
    let name = cla.cluster_name.as_str();
    if !cla.named_endpoints.is_empty() {
        return Err(nack(
            name,
            "named_endpoints",
            "attache does not resolve named endpoints; list them in `endpoints`",
        ));
    }
    if cla
        .policy
        .as_ref()
        .is_some_and(|p| !p.drop_overloads.is_empty())
    {
        return Err(nack(
            name,
            "policy.drop_overloads",
            "attache does not drop requests by overload category",
        ));
    }
    let mut out = Vec::new();
    let mut listed = 0usize;
    for (l, loc) in cla.endpoints.iter().enumerate() {
        if loc.priority != 0 {
            return Err(nack(
                name,
                &format!("endpoints[{l}].priority"),
                format!("priority {} is not supported: attache balances one priority level; send every endpoint at priority 0", loc.priority),
            ));
        }
        if loc.lb_config.is_some() {
            return Err(nack(
                name,
                &format!("endpoints[{l}].lb_config"),
                "attache takes endpoints in `lb_endpoints` only",
            ));
        }
        let zone = loc.locality.as_ref().map(|x| x.zone.as_str());
        out.reserve(loc.lb_endpoints.len());
        for (e, lb) in loc.lb_endpoints.iter().enumerate() {
            listed += 1;
            let at = At {
                locality: l,
                endpoint: e,
            };
            if !serves(name, at, lb)? {
                continue;
            }
            out.push(Candidate {
                addr: address_of(name, at, lb)?,
                weight: lb.load_balancing_weight.map(|w| w.value),
                zone,
                at,
            });
        }
    }
    if out.is_empty() && listed > 0 {
        return Err(nack(
            name,
            "endpoints",
            format!(
                "none of the {listed} endpoints is HEALTHY or UNKNOWN; keeping the last good set"
            ),
        ));
    }
    Ok(out)
}

/// HEALTHY, UNKNOWN and DEGRADED take traffic; UNHEALTHY, DRAINING and TIMEOUT do not.
fn serves(name: &str, at: At, lb: &LbEndpoint) -> Result<bool, Nack> {
    match HealthStatus::try_from(lb.health_status) {
        Ok(HealthStatus::Unknown | HealthStatus::Healthy | HealthStatus::Degraded) => Ok(true),
        Ok(HealthStatus::Unhealthy | HealthStatus::Draining | HealthStatus::Timeout) => Ok(false),
        Err(_) => Err(nack(
            name,
            &format!("{}.health_status", at.path()),
            format!("unknown health status {}", lb.health_status),
        )),
    }
}

/// The IP address and port of a socket address endpoint (no names: attache does not
/// resolve EDS hosts).
fn address_of(name: &str, at: At, lb: &LbEndpoint) -> Result<SocketAddr, Nack> {
    let ap = || format!("{}.endpoint.address", at.path());
    let sp = || format!("{}.socket_address", ap());
    let Some(HostIdentifier::Endpoint(ep)) = &lb.host_identifier else {
        return Err(nack(
            name,
            &format!("{}.endpoint", at.path()),
            "each lb_endpoint needs an `endpoint` with an address",
        ));
    };
    let Some(address::Address::SocketAddress(sa)) =
        ep.address.as_ref().and_then(|a| a.address.as_ref())
    else {
        return Err(nack(
            name,
            &ap(),
            "attache takes `socket_address` endpoints only (no pipes or internal addresses)",
        ));
    };
    if sa.protocol != socket_address::Protocol::Tcp as i32 {
        return Err(nack(
            name,
            &format!("{}.protocol", sp()),
            "attache proxies to TCP endpoints only",
        ));
    }
    if !sa.resolver_name.is_empty() {
        return Err(nack(
            name,
            &format!("{}.resolver_name", sp()),
            "custom resolvers are not supported; send an IP address",
        ));
    }
    let port = match sa.port_specifier {
        Some(socket_address::PortSpecifier::PortValue(p)) => p,
        Some(socket_address::PortSpecifier::NamedPort(_)) => {
            return Err(nack(
                name,
                &format!("{}.named_port", sp()),
                "named ports are not supported; send `port_value`",
            ))
        }
        None => 0,
    };
    let ip: IpAddr = sa.address.parse().map_err(|_| {
        nack(
            name,
            &format!("{}.address", sp()),
            format!("`{}` is not an IP address; EDS endpoints are IP addresses (attache does not resolve names from EDS)", sa.address),
        )
    })?;
    let port = u16::try_from(port).map_err(|_| {
        nack(
            name,
            &format!("{}.port_value", sp()),
            format!("port {port} is out of range"),
        )
    })?;
    Ok(SocketAddr::new(ip, port))
}

/// The assignment's field path of a problem with an endpoint's `key`.
fn field_of(key: Key, at: At) -> String {
    match key {
        Key::Address => format!("{}.endpoint.address.socket_address", at.path()),
        Key::Weight => format!("{}.load_balancing_weight", at.path()),
        Key::Zone => format!("endpoints[{}].locality.zone", at.locality),
    }
}
