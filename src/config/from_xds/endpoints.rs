//! EDS: a ClusterLoadAssignment → the endpoint specs of a cluster, checked like a
//! discovery file (`config::endpoints::check`); a problem is a [`Nack`] with the
//! assignment's field path. The registry that applies them is `xds::eds`.

use std::net::{IpAddr, SocketAddr};

use envoy_types::pb::envoy::config::core::v3::{address, socket_address, HealthStatus};
use envoy_types::pb::envoy::config::endpoint::v3::{
    lb_endpoint::HostIdentifier, ClusterLoadAssignment, LbEndpoint,
};

use super::{nack, Nack};
use crate::config::endpoints::{self, Spec};
use crate::config::raw::EndpointEntry;

/// Where an endpoint sits in the assignment, for error paths.
struct At {
    locality: usize,
    endpoint: usize,
}

/// The endpoints of `cla` that may take traffic, checked like a discovery file.
pub fn specs(cla: &ClusterLoadAssignment, max: usize) -> Result<Vec<Spec>, Nack> {
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
    let mut entries = Vec::new();
    let mut at = Vec::new();
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
        let zone = loc
            .locality
            .as_ref()
            .map(|x| x.zone.clone())
            .filter(|z| !z.is_empty());
        for (e, lb) in loc.lb_endpoints.iter().enumerate() {
            listed += 1;
            let path = format!("endpoints[{l}].lb_endpoints[{e}]");
            if !serves(name, &path, lb)? {
                continue;
            }
            entries.push(EndpointEntry {
                address: address_of(name, &path, lb)?,
                weight: lb.load_balancing_weight.map(|w| w.value),
                zone: zone.clone(),
            });
            at.push(At {
                locality: l,
                endpoint: e,
            });
        }
    }
    if entries.is_empty() && listed > 0 {
        return Err(nack(
            name,
            "endpoints",
            format!(
                "none of the {listed} endpoints is HEALTHY or UNKNOWN; keeping the last good set"
            ),
        ));
    }
    endpoints::check(&entries, max).map_err(|errs| {
        let p = errs
            .into_iter()
            .next()
            .unwrap_or_else(|| crate::config::Problem::new("", ""));
        nack(name, &field_of(&p.path, &at), p.to_string())
    })
}

/// HEALTHY, UNKNOWN and DEGRADED take traffic; UNHEALTHY, DRAINING and TIMEOUT do not.
fn serves(name: &str, path: &str, lb: &LbEndpoint) -> Result<bool, Nack> {
    match HealthStatus::try_from(lb.health_status) {
        Ok(HealthStatus::Unknown | HealthStatus::Healthy | HealthStatus::Degraded) => Ok(true),
        Ok(HealthStatus::Unhealthy | HealthStatus::Draining | HealthStatus::Timeout) => Ok(false),
        Err(_) => Err(nack(
            name,
            &format!("{path}.health_status"),
            format!("unknown health status {}", lb.health_status),
        )),
    }
}

/// `IP:PORT` of a socket address endpoint (no names: attache does not resolve EDS hosts).
fn address_of(name: &str, path: &str, lb: &LbEndpoint) -> Result<String, Nack> {
    let Some(HostIdentifier::Endpoint(ep)) = &lb.host_identifier else {
        return Err(nack(
            name,
            &format!("{path}.endpoint"),
            "each lb_endpoint needs an `endpoint` with an address",
        ));
    };
    let ap = format!("{path}.endpoint.address");
    let Some(address::Address::SocketAddress(sa)) =
        ep.address.as_ref().and_then(|a| a.address.as_ref())
    else {
        return Err(nack(
            name,
            &ap,
            "attache takes `socket_address` endpoints only (no pipes or internal addresses)",
        ));
    };
    let sp = format!("{ap}.socket_address");
    if sa.protocol != socket_address::Protocol::Tcp as i32 {
        return Err(nack(
            name,
            &format!("{sp}.protocol"),
            "attache proxies to TCP endpoints only",
        ));
    }
    if !sa.resolver_name.is_empty() {
        return Err(nack(
            name,
            &format!("{sp}.resolver_name"),
            "custom resolvers are not supported; send an IP address",
        ));
    }
    let port = match sa.port_specifier {
        Some(socket_address::PortSpecifier::PortValue(p)) => p,
        Some(socket_address::PortSpecifier::NamedPort(_)) => {
            return Err(nack(
                name,
                &format!("{sp}.named_port"),
                "named ports are not supported; send `port_value`",
            ))
        }
        None => 0,
    };
    let ip: IpAddr = sa.address.parse().map_err(|_| {
        nack(
            name,
            &format!("{sp}.address"),
            format!("`{}` is not an IP address; EDS endpoints are IP addresses (attache does not resolve names from EDS)", sa.address),
        )
    })?;
    let port = u16::try_from(port).map_err(|_| {
        nack(
            name,
            &format!("{sp}.port_value"),
            format!("port {port} is out of range"),
        )
    })?;
    Ok(SocketAddr::new(ip, port).to_string())
}

/// Map `endpoints::check`'s path (`3.address`, `3.weight`, `3.zone`, or empty) back
/// to the assignment's field path.
fn field_of(path: &str, at: &[At]) -> String {
    let Some((i, key)) = path.split_once('.') else {
        return "endpoints".to_string();
    };
    let Some(a) = i.parse::<usize>().ok().and_then(|i| at.get(i)) else {
        return "endpoints".to_string();
    };
    let ep = format!("endpoints[{}].lb_endpoints[{}]", a.locality, a.endpoint);
    match key {
        "address" => format!("{ep}.endpoint.address.socket_address"),
        "weight" => format!("{ep}.load_balancing_weight"),
        "zone" => format!("endpoints[{}].locality.zone", a.locality),
        _ => ep,
    }
}
