//! `xds:` (docs/xds.md): the management server and the clusters that take their
//! endpoints from it.

use std::sync::Arc;
use std::time::Duration;

use super::{did_you_mean, Cx};
use crate::config::raw;
use crate::xds::ResourceType;

fn resource_type(t: raw::XdsType) -> ResourceType {
    match t {
        raw::XdsType::Eds => ResourceType::Eds,
        raw::XdsType::Cds => ResourceType::Cds,
        raw::XdsType::Lds => ResourceType::Lds,
        raw::XdsType::Rds => ResourceType::Rds,
    }
}

/// `xds:` and the clusters that take endpoints from it.
pub(super) fn compile_xds(cx: &mut Cx<'_>, cfg: &raw::Config) -> Option<Arc<crate::xds::Settings>> {
    for (i, c) in cfg.clusters.iter().enumerate() {
        let Some(e) = c.discovery.as_ref().and_then(|d| d.eds.as_ref()) else {
            continue;
        };
        let p = format!("clusters.{i}.discovery.eds");
        if cfg.xds.is_none() {
            cx.err_key(
                &p,
                "EDS needs a management server: add a top-level `xds: { cluster: NAME, node: { id: ID } }` (docs/xds.md)",
            );
        }
        if e.service_name.as_deref().is_some_and(str::is_empty) {
            cx.err(
                &format!("{p}.service_name"),
                "service_name must not be empty; leave it out to use the cluster name",
            );
        }
    }
    let x = cfg.xds.as_ref()?;
    match cfg.clusters.iter().find(|c| c.name == x.cluster) {
        None => {
            let names = cfg.clusters.iter().map(|c| c.name.as_str());
            let hint = match did_you_mean(&x.cluster, names) {
                Some(s) => format!("; did you mean `{s}`?"),
                None => "; define the management server as a static cluster".to_string(),
            };
            cx.err("xds.cluster", format!("unknown cluster `{}`{hint}", x.cluster));
        }
        Some(c) if c.protocol != raw::UpstreamProtocol::Http2 => cx.err(
            "xds.cluster",
            format!("xDS is gRPC: set `protocol: http2` on cluster `{}`", c.name),
        ),
        Some(c) if c.discovery.as_ref().is_some_and(|d| d.eds.is_some()) => cx.err(
            "xds.cluster",
            format!("cluster `{}` cannot take its own endpoints from xDS; give it `endpoints:`, `discovery.dns` or `discovery.file`", c.name),
        ),
        Some(_) => {}
    }
    if x.node.id.is_empty() {
        cx.err(
            "xds.node.id",
            "node id must not be empty (the server keys its answers on it)",
        );
    }
    let types: std::collections::BTreeSet<ResourceType> = x
        .resources
        .clone()
        .unwrap_or_else(|| vec![raw::XdsType::Eds])
        .into_iter()
        .map(resource_type)
        .collect();
    let eds_cluster = cfg
        .clusters
        .iter()
        .position(|c| c.discovery.as_ref().is_some_and(|d| d.eds.is_some()));
    if let (Some(i), false) = (eds_cluster, types.contains(&ResourceType::Eds)) {
        cx.err_key(
            &format!("clusters.{i}.discovery.eds"),
            "this cluster takes endpoints over EDS but `xds.resources` leaves out `eds`; add it",
        );
    }
    if types.contains(&ResourceType::Rds) && !types.contains(&ResourceType::Lds) {
        cx.err(
            "xds.resources",
            "`rds` names come from xDS listeners; add `lds` (`resources: [eds, cds, lds, rds]`)",
        );
    }
    if types.is_empty() {
        cx.err("xds.resources", "list at least one of eds, cds, lds, rds");
    }
    let dur = |cx: &mut Cx<'_>,
               key: &str,
               v: Option<crate::config::duration::Dur>,
               default: Duration| match v {
        Some(d) if d.0.is_zero() => {
            cx.err(
                &format!("xds.{key}"),
                format!("{key} must be greater than 0s"),
            );
            default
        }
        v => v.map_or(default, |d| d.0),
    };
    let initial_fetch_timeout = dur(
        cx,
        "initial_fetch_timeout",
        x.initial_fetch_timeout,
        Duration::from_secs(15),
    );
    let backoff = dur(cx, "backoff", x.backoff, Duration::from_millis(500));
    let max_backoff = dur(cx, "max_backoff", x.max_backoff, Duration::from_secs(30));
    if max_backoff < backoff {
        cx.err("xds.max_backoff", "max_backoff must be at least backoff");
    }
    let loc = x.node.locality.clone().unwrap_or_default();
    Some(Arc::new(crate::xds::Settings {
        cluster: x.cluster.clone(),
        node_id: x.node.id.clone(),
        node_cluster: x.node.cluster.clone().unwrap_or_default(),
        region: loc.region.unwrap_or_default(),
        zone: loc.zone.unwrap_or_default(),
        sub_zone: loc.sub_zone.unwrap_or_default(),
        types,
        initial_fetch_timeout,
        backoff,
        max_backoff,
        delta: x.api_type == Some(raw::XdsApiType::AggregatedDeltaGrpc),
    }))
}
