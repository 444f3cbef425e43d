//! Validation and compilation: raw config -> immutable [`Snapshot`], reporting every
//! semantic problem (unknown clusters, duplicates, shadowed routes, bad regexes, ...)
//! with its position. `validate` and `run` share this one code path.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use attache_filters::FactoryContext;
use regex::Regex;

use super::load::{did_you_mean, Diagnostic, SourceMap};
use super::raw;
use super::snapshot::{Listener, Snapshot, TcpSettings};
use crate::router;
use crate::stats::{ClusterStats, FleetStats, ListenerStats, Stats};
use crate::upstream::Cluster;

mod access_log;
mod action;
mod cluster;
mod filters;
mod global;
mod http_listener;
mod listener;
mod rbac;
mod route;
mod tls;

use access_log::access_log;
use cluster::{compile_endpoints, compile_fleet};
use global::{compile_admin_hosts, compile_tracing};
use http_listener::compile_http;
use listener::compile_proxy_protocol;
use rbac::compile_rbac;
use tls::tls_material;

/// What compilation needs besides the config.
pub struct Options<'a> {
    pub stats: &'a Stats,
    pub services: &'a attache_filters::Services,
    /// Check TLS and discovery file contents (off for `validate --skip-files`).
    pub check_files: bool,
    /// The running config's clusters (on reload): identical ones are reused.
    pub previous: Option<&'a HashMap<String, Arc<Cluster>>>,
}

struct Cx<'a> {
    map: &'a SourceMap,
    errors: Vec<Diagnostic>,
}

impl Cx<'_> {
    fn err(&mut self, path: &str, msg: impl Into<String>) {
        self.errors.push(self.map.diag(path, msg));
    }
    fn err_key(&mut self, path: &str, msg: impl Into<String>) {
        self.errors.push(self.map.diag_key(path, msg));
    }
    fn line(&self, path: &str) -> usize {
        self.map.locate(path, false).0
    }
}

fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

fn valid_cluster_name(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.')
}

fn is_loopback(addr: &SocketAddr) -> bool {
    addr.ip().is_loopback()
}

fn parse_addr(cx: &mut Cx<'_>, path: &str, s: &str) -> Option<SocketAddr> {
    match s.parse::<SocketAddr>() {
        Ok(a) => Some(a),
        Err(_) if s.parse::<u16>().is_ok() => {
            cx.err(
                path,
                format!("a port alone is not an address; write `0.0.0.0:{s}` (every interface) or `127.0.0.1:{s}`"),
            );
            None
        }
        Err(_) => {
            cx.err(
                path,
                format!(
                    "`{s}` is not an address; write IP:PORT, e.g. `127.0.0.1:8080` or `[::1]:8080`"
                ),
            );
            None
        }
    }
}

fn regex(cx: &mut Cx<'_>, path: &str, pattern: &str) -> Option<Regex> {
    // Anchored like Envoy's safe_regex: the whole value must match.
    crate::router::anchored_regex(pattern)
        .map_err(|msg| cx.err(path, msg))
        .ok()
}

fn unknown_cluster(
    cx: &mut Cx<'_>,
    path: &str,
    name: &str,
    clusters: &HashMap<String, Arc<Cluster>>,
) {
    let hint = match did_you_mean(name, clusters.keys().map(String::as_str)) {
        Some(s) => format!("; did you mean `{s}`?"),
        None if clusters.is_empty() => String::from("; no clusters are defined"),
        None => String::new(),
    };
    cx.err(
        path,
        format!("route references unknown cluster `{name}`{hint}"),
    );
}

/// Validate and compile. On any error, every error.
pub fn compile(
    cfg: &raw::Config,
    map: &SourceMap,
    effective: serde_yaml::Value,
    opts: &Options<'_>,
) -> Result<Snapshot, Vec<Diagnostic>> {
    let mut cx = Cx {
        map,
        errors: Vec::new(),
    };

    // Admin.
    let admin_addr = match &cfg.admin.address {
        Some(a) => parse_addr(&mut cx, "admin.address", a),
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

    let admin_allowed_hosts = compile_admin_hosts(&mut cx, &cfg.admin.allowed_hosts);
    let health_addr = cfg
        .health_listener
        .as_ref()
        .and_then(|h| parse_addr(&mut cx, "health_listener.address", &h.address));
    if let (Some(h), Some(a)) = (health_addr, admin_addr) {
        if h == a && h.port() != 0 {
            cx.err(
                "health_listener.address",
                format!("address {h} is the admin address; the health listener needs its own port"),
            );
        }
    }
    let tracer = cfg
        .tracing
        .as_ref()
        .and_then(|t| compile_tracing(&mut cx, t))
        .map(|t| crate::trace::Tracer::new(t, opts.stats));

    // Clusters first: routes refer to them.
    let mut clusters: HashMap<String, Arc<Cluster>> = HashMap::new();
    let mut cluster_lines: HashMap<String, usize> = HashMap::new();
    for (i, c) in cfg.clusters.iter().enumerate() {
        let p = format!("clusters.{i}");
        if !valid_cluster_name(&c.name) {
            cx.err(
                &format!("{p}.name"),
                format!(
                    "cluster name `{}` must be letters, digits, `_`, `-` or `.`",
                    c.name
                ),
            );
        }
        if let Some(line) = cluster_lines.get(&c.name) {
            cx.err(
                &format!("{p}.name"),
                format!(
                    "duplicate cluster name `{}` (first defined at line {line})",
                    c.name
                ),
            );
            continue;
        }
        cluster_lines.insert(c.name.clone(), cx.line(&format!("{p}.name")));
        // An identical cluster in the running config is reused as is: its pools,
        // health state, ejections and counters survive the reload.
        if let Some(prev) = opts.previous.and_then(|m| m.get(&c.name)) {
            if prev.raw == *c {
                clusters.insert(c.name.clone(), prev.clone());
                continue;
            }
        }
        let eps = compile_endpoints(&mut cx, &p, c, opts.check_files);
        compile_fleet(&mut cx, &p, c);
        if let Some(t) = c.connect_timeout {
            if t.0.is_zero() {
                cx.err(
                    &format!("{p}.connect_timeout"),
                    "connect_timeout must be greater than 0s",
                );
            }
        }
        let tls = match &c.tls {
            None => None,
            Some(t) => {
                let mut t = t.clone();
                if c.protocol == raw::UpstreamProtocol::Http2 && t.alpn.is_none() {
                    t.alpn = Some(vec!["h2".to_string()]);
                }
                tls_material(
                    &mut cx,
                    &p,
                    opts.check_files,
                    || crate::tls::validate_cluster_with(&t, true),
                    || crate::tls::ClientTls::build(&t, &c.name, opts.stats),
                )
            }
        };
        let stats = ClusterStats::new(opts.stats, &c.name);
        let fleet = FleetStats::new(opts.stats, &c.name);
        clusters.insert(c.name.clone(), Cluster::new(c, eps, stats, fleet, tls));
    }
    let clusters = Arc::new(clusters);

    // Listeners.
    let mut listeners = Vec::new();
    let mut names: HashMap<&str, usize> = HashMap::new();
    let mut addrs: HashMap<SocketAddr, usize> = HashMap::new();
    for (i, l) in cfg.listeners.iter().enumerate() {
        let p = format!("listeners.{i}");
        if !valid_name(&l.name) {
            cx.err(
                &format!("{p}.name"),
                format!("listener name `{}` must match [a-z0-9_]+", l.name),
            );
        }
        if let Some(line) = names.get(l.name.as_str()) {
            cx.err(
                &format!("{p}.name"),
                format!(
                    "duplicate listener name `{}` (first defined at line {line})",
                    l.name
                ),
            );
        } else {
            names.insert(&l.name, cx.line(&format!("{p}.name")));
        }
        let address = parse_addr(&mut cx, &format!("{p}.address"), &l.address);
        if let Some(a) = address {
            if a.port() != 0 {
                if let Some(line) = addrs.get(&a) {
                    cx.err(
                        &format!("{p}.address"),
                        format!("address {a} is already used by the listener at line {line}"),
                    );
                } else {
                    addrs.insert(a, cx.line(&format!("{p}.address")));
                }
                if health_addr == Some(a) {
                    cx.err(
                        &format!("{p}.address"),
                        format!("address {a} is the health_listener address"),
                    );
                }
                if admin_addr == Some(a) {
                    cx.err(
                        &format!("{p}.address"),
                        format!("address {a} is the admin address"),
                    );
                }
            }
        }
        let stats = ListenerStats::new(opts.stats, &l.name);
        let access_log = l
            .access_log
            .as_ref()
            .and_then(|a| access_log(&mut cx, &format!("{p}.access_log"), a, opts.check_files));
        let tls = match &l.tls {
            None => None,
            Some(t) => {
                let mut t = t.clone();
                if l.protocol == raw::ListenerProtocol::Http && t.alpn.is_none() {
                    t.alpn = Some(vec!["h2".to_string(), "http/1.1".to_string()]);
                }
                tls_material(
                    &mut cx,
                    &p,
                    opts.check_files,
                    || crate::tls::validate_listener_with(&t, true),
                    || crate::tls::ServerTls::build(&t, &l.name, opts.stats),
                )
            }
        };

        let proxy_protocol = compile_proxy_protocol(&mut cx, &p, l, opts.stats);
        let rbac = l.rbac.as_ref().and_then(|r| {
            compile_rbac(
                &mut cx,
                &format!("{p}.rbac"),
                r,
                l.protocol,
                &l.name,
                opts.stats,
            )
        });
        let mut http = None;
        let mut tcp = None;
        let mut thrift = None;
        match l.protocol {
            raw::ListenerProtocol::Http => {
                if l.tcp.is_some() {
                    cx.err_key(
                        &format!("{p}.tcp"),
                        "`tcp` is only valid on a `protocol: tcp` listener",
                    );
                }
                if l.thrift.is_some() {
                    cx.err_key(
                        &format!("{p}.thrift"),
                        "`thrift` is only valid on a `protocol: thrift` listener",
                    );
                }
                if l.virtual_hosts.is_empty() {
                    cx.err(
                        &p,
                        format!("http listener `{}` needs at least one virtual host", l.name),
                    );
                }
                let fcx = FactoryContext {
                    stats: opts.stats,
                    listener: &l.name,
                    tls: l.tls.is_some(),
                    services: opts.services,
                };
                http = Some(compile_http(&mut cx, &p, l, &clusters, &fcx));
            }
            raw::ListenerProtocol::Tcp => {
                if !l.virtual_hosts.is_empty() || !l.filters.is_empty() {
                    cx.err_key(
                        &format!("{p}.protocol"),
                        "a tcp listener takes `tcp: { cluster }`, not virtual_hosts or filters",
                    );
                }
                match &l.tcp {
                    None => cx.err(&p, "a tcp listener needs `tcp: { cluster: NAME }`"),
                    Some(t) => match clusters.get(&t.cluster) {
                        None => unknown_cluster(
                            &mut cx,
                            &format!("{p}.tcp.cluster"),
                            &t.cluster,
                            &clusters,
                        ),
                        Some(c) => {
                            tcp = Some(TcpSettings {
                                cluster: c.clone(),
                                settings: crate::tcp::Settings::from_config(t, c.connect_timeout),
                                counters: crate::tcp::TcpCounters::new(opts.stats, &l.name),
                            })
                        }
                    },
                }
            }
            raw::ListenerProtocol::Thrift => {
                if !l.virtual_hosts.is_empty() || !l.filters.is_empty() {
                    cx.err_key(
                        &format!("{p}.protocol"),
                        "a thrift listener takes `thrift: {...}`, not virtual_hosts or filters",
                    );
                }
                match &l.thrift {
                    None => cx.err(&p, "a thrift listener needs `thrift: { routes: [...] }`"),
                    Some(t) => {
                        let ups = Arc::new(crate::upstream::ThriftUpstreams {
                            clusters: clusters.clone(),
                        });
                        match crate::thrift::ListenerCtx::new(&l.name, t, opts.stats, ups) {
                            Ok(ctx) => {
                                let ctx = ctx
                                    .with_sli(opts.services.sli.clone())
                                    .with_rbac(rbac.clone());
                                for (path, name) in ctx.routes().clusters() {
                                    if !clusters.contains_key(name) {
                                        unknown_cluster(
                                            &mut cx,
                                            &format!("{p}.{path}"),
                                            name,
                                            &clusters,
                                        );
                                    }
                                }
                                thrift = Some(Arc::new(ctx));
                            }
                            Err(errs) => {
                                for (path, msg) in errs {
                                    cx.err(&format!("{p}.{path}"), msg);
                                }
                            }
                        }
                    }
                }
            }
        }

        if let Some(address) = address {
            listeners.push(Arc::new(Listener {
                name: Arc::from(l.name.as_str()),
                address,
                protocol: l.protocol,
                stats,
                access_log,
                http,
                tcp,
                thrift,
                tls,
                unexpected_proxy_header: (proxy_protocol.is_none()
                    && l.protocol == raw::ListenerProtocol::Http)
                    .then(|| crate::proxy_protocol::unexpected_counter(opts.stats, &l.name)),
                proxy_protocol,
                rbac,
                tracing: tracer
                    .clone()
                    .filter(|_| l.protocol == raw::ListenerProtocol::Http),
            }));
        }
    }

    if !cx.errors.is_empty() {
        cx.errors.sort_by_key(|d| (d.line, d.col));
        cx.errors.dedup();
        return Err(cx.errors);
    }
    Ok(Snapshot {
        admin_address: admin_addr.unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 9901))),
        admin_token: token,
        admin_allowed_hosts,
        health_address: health_addr,
        drain_timeout: cfg
            .drain_timeout
            .map(|d| d.0)
            .unwrap_or(Duration::from_secs(10)),
        listeners,
        clusters,
        effective,
    })
}

// Re-exported for the router benchmark and tests.
pub use router::RequestView;
