//! The process-wide sections: `admin:`, `health_listener:` and `tracing:`.

use std::net::SocketAddr;
use std::time::Duration;

use super::{is_loopback, parse_addr, Cx};
use crate::config::raw;

/// The admin and health listeners' addresses and the admin access settings.
pub(super) struct Admin {
    /// `None` when the address did not parse (an error is reported).
    pub address: Option<SocketAddr>,
    pub token: Option<String>,
    pub allowed_hosts: Vec<String>,
    pub health: Option<SocketAddr>,
}

/// `admin:` and `health_listener:`: a non-loopback admin needs a token, and the
/// health listener needs its own port.
pub(super) fn compile_admin(cx: &mut Cx<'_>, cfg: &raw::Config) -> Admin {
    let admin_addr = match &cfg.admin.address {
        Some(a) => parse_addr(cx, "admin.address", a),
        None => Some(SocketAddr::from(([127, 0, 0, 1], 9901))),
    };
    let token = cfg.admin.token.clone().filter(|t| !t.is_empty());
    if let Some(a) = admin_addr {
        if !is_loopback(&a) && token.is_none() {
            cx.err(
                "admin.address",
                format!("admin address {a} is not loopback and no admin.token is set; set `token: ${{ATTACHE_ADMIN_TOKEN}}` or bind 127.0.0.1"),
            );
        }
    }

    let admin_allowed_hosts = compile_admin_hosts(cx, &cfg.admin.allowed_hosts);
    let health_addr = cfg
        .health_listener
        .as_ref()
        .and_then(|h| parse_addr(cx, "health_listener.address", &h.address));
    if let (Some(h), Some(a)) = (health_addr, admin_addr) {
        if h == a && h.port() != 0 {
            cx.err(
                "health_listener.address",
                format!("address {h} is the admin address; the health listener needs its own port"),
            );
        }
    }
    Admin {
        address: admin_addr,
        token,
        allowed_hosts: admin_allowed_hosts,
        health: health_addr,
    }
}

/// `tracing:`: the collector address and the batching bounds, with their defaults.
pub(super) fn compile_tracing(cx: &mut Cx<'_>, t: &raw::Tracing) -> Option<crate::trace::TraceCfg> {
    let collector = parse_addr(cx, "tracing.collector", &t.collector);
    let sampling = t.sampling.unwrap_or(1.0);
    if !(0.0..=1.0).contains(&sampling) {
        cx.err(
            "tracing.sampling",
            format!("sampling {sampling} is not a share; write a number from 0.0 (none) to 1.0 (every new trace)"),
        );
    }
    let path = t.path.clone().unwrap_or_else(|| "/v1/traces".to_string());
    if !path.starts_with('/') || http::uri::PathAndQuery::try_from(path.as_str()).is_err() {
        cx.err(
            "tracing.path",
            format!("`{path}` is not a request path; write e.g. `/v1/traces`"),
        );
    }
    let positive = |cx: &mut Cx<'_>, key: &str, v: Option<usize>, default: usize| match v {
        Some(0) => {
            cx.err(
                &format!("tracing.{key}"),
                format!("{key} must be at least 1"),
            );
            default
        }
        v => v.unwrap_or(default),
    };
    let batch_size = positive(cx, "batch_size", t.batch_size, 512);
    let max_queue = positive(cx, "max_queue", t.max_queue, 4096);
    let flush_interval = t.flush_interval.map_or(Duration::from_secs(1), |d| d.0);
    let export_timeout = t.export_timeout.map_or(Duration::from_secs(5), |d| d.0);
    for (key, d) in [
        ("flush_interval", flush_interval),
        ("export_timeout", export_timeout),
    ] {
        if d.is_zero() {
            cx.err(
                &format!("tracing.{key}"),
                format!("{key} must be greater than 0s"),
            );
        }
    }
    Some(crate::trace::TraceCfg {
        collector: collector?,
        path,
        sampling,
        service_name: t
            .service_name
            .clone()
            .unwrap_or_else(|| "attache".to_string()),
        batch_size,
        flush_interval,
        max_queue,
        export_timeout,
    })
}

/// `admin.allowed_hosts`: plain host names or IP literals, compared without a port.
fn compile_admin_hosts(cx: &mut Cx<'_>, hosts: &[String]) -> Vec<String> {
    let mut out = Vec::with_capacity(hosts.len());
    for (i, h) in hosts.iter().enumerate() {
        if crate::admin::guard::is_plain_host(h) {
            out.push(h.to_ascii_lowercase());
        } else {
            cx.err(
                &format!("admin.allowed_hosts.{i}"),
                format!("`{h}` is not a host name; list names like `attache-admin.internal` (no scheme, port or path)"),
            );
        }
    }
    out
}
