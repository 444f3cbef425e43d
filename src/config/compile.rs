//! Validation and compilation: raw config -> immutable [`Snapshot`], reporting every
//! semantic problem (unknown clusters, duplicates, shadowed routes, bad regexes, ...)
//! with its position. `validate` and `run` share this one code path.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use attache_filters::{registry, FactoryContext, HttpFilter, PathSeg};
use http::{HeaderName, HeaderValue, Method, StatusCode};
use regex::Regex;

use super::endpoints::{self, Spec};
use super::load::{did_you_mean, Diagnostic, SourceMap};
use super::raw;
use super::snapshot::{AccessLogCfg, Http2Settings, HttpSettings, Listener, Snapshot, TcpSettings};
use crate::http::grpc::RouteStats;
use crate::router::retry::RETRY_ON;
use crate::router::{
    self, Action, DirectResponse, HeaderMatch, Matcher, PathMatch, QueryMatch, Redirect,
    RetryPolicy, Route, RouteAction, Router, SanMatch, Target, ValueMatch, VirtualHost,
};
use crate::stats::{ClusterStats, FleetStats, ListenerStats, Stats};
use crate::upstream::Cluster;

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
    match Regex::new(&format!("^(?:{pattern})$")) {
        Ok(r) => Some(r),
        Err(e) => {
            let e = e.to_string();
            let detail = e.lines().last().unwrap_or("invalid").trim().to_string();
            cx.err(path, format!("invalid regex `{pattern}`: {detail}"));
            None
        }
    }
}

/// A listener's `access_log`: the destination checked (with file checks: it can be
/// opened for append) and the format compiled, every problem reported.
fn access_log(
    cx: &mut Cx<'_>,
    path: &str,
    a: &raw::AccessLog,
    check_files: bool,
) -> Option<AccessLogCfg> {
    use crate::accesslog::Format;
    let mut ok = true;
    if a.path.is_empty() {
        cx.err(
            &format!("{path}.path"),
            "access_log.path must be `stdout`, `stderr` or a file path",
        );
        ok = false;
    } else if check_files {
        if let Err(e) = crate::accesslog::check_path(&a.path) {
            cx.err(
                &format!("{path}.path"),
                format!("{e}; create the directory or fix its permissions (validate --skip-files skips this check)"),
            );
            ok = false;
        }
    }
    let format = match (a.format.as_deref(), &a.json_format) {
        (Some(_), Some(_)) => {
            cx.err_key(
                &format!("{path}.json_format"),
                "set either `format` or `json_format`, not both",
            );
            None
        }
        (None | Some("json"), None) => Some(Format::builtin_json()),
        (Some("text"), None) => Some(Format::builtin_text()),
        (Some(t), None) if t.contains('%') => match Format::text(t) {
            Ok(f) => Some(f),
            Err(e) => {
                cx.err(&format!("{path}.format"), e);
                None
            }
        },
        (Some(t), None) => {
            cx.err(
                &format!("{path}.format"),
                format!("unknown format `{t}`; use `json`, `text`, or a template such as \"%RESPONSE_CODE% %REQ(:PATH)%\""),
            );
            None
        }
        (None, Some(m)) => json_format(cx, &format!("{path}.json_format"), m),
    };
    let format = format.filter(|_| ok)?;
    Some(AccessLogCfg {
        path: a.path.clone(),
        format: Arc::new(format),
    })
}

/// `json_format`: string keys, each value a template string.
fn json_format(
    cx: &mut Cx<'_>,
    path: &str,
    m: &serde_yaml::Mapping,
) -> Option<crate::accesslog::Format> {
    let mut fields = Vec::new();
    let mut bad = false;
    for (k, v) in m {
        let Some(key) = k.as_str() else {
            cx.err(path, "json_format keys must be strings");
            bad = true;
            continue;
        };
        match v.as_str() {
            Some(t) => fields.push((key.to_string(), t.to_string())),
            None => {
                cx.err(
                    &format!("{path}.{key}"),
                    "a json_format value is a template string, e.g. \"%RESPONSE_CODE%\"",
                );
                bad = true;
            }
        }
    }
    if fields.is_empty() && !bad {
        cx.err(path, "json_format needs at least one field");
        return None;
    }
    match crate::accesslog::Format::json(&fields) {
        Ok(f) if !bad => Some(f),
        Ok(_) => None,
        Err(errors) => {
            for (k, e) in errors {
                cx.err(&format!("{path}.{k}"), e);
            }
            None
        }
    }
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

/// A `tls:` block: with file checks, build it (building validates every file and
/// setting first and returns all problems, so nothing is read twice); without, only
/// check the settings and that paths are well-formed. Problems are reported under
/// `<path>.tls`.
fn tls_material<T>(
    cx: &mut Cx<'_>,
    path: &str,
    check_files: bool,
    check_without_files: impl FnOnce() -> crate::tls::Problems,
    build: impl FnOnce() -> Result<T, crate::tls::Problems>,
) -> Option<T> {
    let problems = if check_files {
        match build() {
            Ok(x) => return Some(x),
            Err(problems) => problems,
        }
    } else {
        check_without_files()
    };
    for (k, m) in problems {
        cx.err(&format!("{path}.tls.{k}"), m);
    }
    None
}

fn join_seg(path: &str, segs: &[PathSeg]) -> String {
    let mut out = path.to_string();
    for s in segs {
        out.push('.');
        match s {
            PathSeg::Key(k) => out.push_str(k),
            PathSeg::Index(i) => out.push_str(&i.to_string()),
        }
    }
    out
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

/// `tracing:`: the collector address and the batching bounds, with their defaults.
fn compile_tracing(cx: &mut Cx<'_>, t: &raw::Tracing) -> Option<crate::trace::TraceCfg> {
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

/// The cluster's initial endpoints: `endpoints:`, `discovery.static`, the discovery
/// file's current contents, or none yet (DNS resolves when the cluster starts).
fn compile_endpoints(cx: &mut Cx<'_>, p: &str, c: &raw::Cluster, check_files: bool) -> Vec<Spec> {
    let d = c.discovery.as_ref();
    let sources = [
        !c.endpoints.is_empty(),
        d.is_some_and(|d| d.static_endpoints.is_some()),
        d.is_some_and(|d| d.dns.is_some()),
        d.is_some_and(|d| d.file.is_some()),
    ]
    .iter()
    .filter(|b| **b)
    .count();
    if sources == 0 {
        cx.err(
            p,
            format!(
                "cluster `{}` has no endpoints; add `endpoints: [\"127.0.0.1:8080\"]` or `discovery:`",
                c.name
            ),
        );
        return Vec::new();
    }
    if sources > 1 {
        let at = if c.discovery.is_some() {
            format!("{p}.discovery")
        } else {
            p.to_string()
        };
        cx.err_key(
            &at,
            "give exactly one endpoint source: `endpoints`, or one of `discovery.static`, `discovery.dns`, `discovery.file`",
        );
        return Vec::new();
    }
    let max = match c.max_endpoints {
        Some(0) => {
            cx.err(
                &format!("{p}.max_endpoints"),
                "max_endpoints must be at least 1",
            );
            endpoints::DEFAULT_MAX_ENDPOINTS
        }
        Some(m) => m as usize,
        None => endpoints::DEFAULT_MAX_ENDPOINTS,
    };
    let mut eps = Vec::new();
    if !c.endpoints.is_empty() {
        for (j, e) in c.endpoints.iter().enumerate() {
            if let Some(a) = parse_addr(cx, &format!("{p}.endpoints.{j}"), e) {
                if a.port() == 0 {
                    cx.err(
                        &format!("{p}.endpoints.{j}"),
                        format!("endpoint `{e}` needs a port other than 0"),
                    );
                }
                eps.push(Spec {
                    addr: a,
                    weight: 1,
                    zone: None,
                });
            }
        }
        return eps;
    }
    let Some(d) = d else {
        return eps;
    };
    if let Some(list) = &d.static_endpoints {
        match endpoints::check(list, max) {
            Ok(v) => eps = v,
            Err(errs) => {
                for (path, msg) in errs {
                    let at = if path.is_empty() {
                        format!("{p}.discovery.static")
                    } else {
                        format!("{p}.discovery.static.{path}")
                    };
                    cx.err(&at, msg);
                }
            }
        }
    }
    if let Some(dns) = &d.dns {
        let dp = format!("{p}.discovery.dns");
        let ok = match dns.name.rsplit_once(':') {
            Some((host, port)) => !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p != 0),
            None => false,
        };
        if !ok {
            cx.err(
                &format!("{dp}.name"),
                format!("`{}` must be HOST:PORT, e.g. `api.internal:8080`", dns.name),
            );
        }
        if dns
            .refresh
            .is_some_and(|r| r.0 < Duration::from_millis(100))
        {
            cx.err(&format!("{dp}.refresh"), "refresh must be at least 100ms");
        }
    }
    if let Some(f) = &d.file {
        let fp = format!("{p}.discovery.file.path");
        if f.path.is_empty() {
            cx.err(&fp, "path must name the endpoints file");
        } else if check_files {
            match std::fs::read_to_string(&f.path) {
                Ok(text) => match endpoints::parse_file(&f.path, &text, max) {
                    Ok(v) => eps = v,
                    Err(diags) => {
                        for dg in diags.into_iter().take(5) {
                            cx.err(&fp, format!("endpoints file: {dg}"));
                        }
                    }
                },
                Err(e) => cx.err(&fp, format!("cannot read endpoints file `{}`: {e}", f.path)),
            }
        }
    }
    eps
}

/// Health checks, outlier detection, circuit breakers and the hash policy.
fn compile_fleet(cx: &mut Cx<'_>, p: &str, c: &raw::Cluster) {
    if let Some(t) = c.panic_threshold {
        if !(0.0..=100.0).contains(&t) {
            cx.err(
                &format!("{p}.panic_threshold"),
                "panic_threshold is a percentage between 0 and 100",
            );
        }
    }
    if let Some(h) = &c.health_check {
        let hp = format!("{p}.health_check");
        let kinds = [
            h.http.is_some(),
            h.tcp.is_some(),
            h.thrift.is_some(),
            h.grpc.is_some(),
        ]
        .iter()
        .filter(|b| **b)
        .count();
        if kinds != 1 {
            cx.err(&hp, "give exactly one of `http`, `tcp`, `thrift` or `grpc`");
        }
        if let Some(g) = &h.grpc {
            if c.protocol != raw::UpstreamProtocol::Http2 {
                cx.err(
                    &format!("{hp}.grpc"),
                    "a gRPC health check needs `protocol: http2` on the cluster",
                );
            }
            if g.authority
                .as_deref()
                .is_some_and(|a| HeaderValue::from_str(a).is_err() || a.is_empty())
            {
                cx.err(
                    &format!("{hp}.grpc.authority"),
                    "authority is not a valid host",
                );
            }
        }
        if let Some(x) = &h.http {
            if !x.path.starts_with('/') {
                cx.err(&format!("{hp}.http.path"), "path must start with `/`");
            }
            for (i, s) in x.expected_statuses.iter().enumerate() {
                if !(100..=599).contains(s) {
                    cx.err(
                        &format!("{hp}.http.expected_statuses.{i}"),
                        format!("{s} is not an HTTP status"),
                    );
                }
            }
            if let Some(host) = &x.host {
                if HeaderValue::from_str(host).is_err() {
                    cx.err(
                        &format!("{hp}.http.host"),
                        "host is not a valid header value",
                    );
                }
            }
        }
        if let Some(t) = &h.thrift {
            if t.method.is_empty() {
                cx.err(&format!("{hp}.thrift.method"), "method must not be empty");
            }
        }
        if h.interval.is_some_and(|d| d.0 < Duration::from_millis(10)) {
            cx.err(&format!("{hp}.interval"), "interval must be at least 10ms");
        }
        if h.timeout.is_some_and(|d| d.0.is_zero()) {
            cx.err(&format!("{hp}.timeout"), "timeout must be greater than 0s");
        }
        for (k, v) in [
            ("unhealthy_threshold", h.unhealthy_threshold),
            ("healthy_threshold", h.healthy_threshold),
        ] {
            if v == Some(0) {
                cx.err(&format!("{hp}.{k}"), format!("{k} must be at least 1"));
            }
        }
    }
    if let Some(o) = &c.outlier_detection {
        let op = format!("{p}.outlier_detection");
        if o.max_ejection_percent.is_some_and(|m| m > 100) {
            cx.err(
                &format!("{op}.max_ejection_percent"),
                "max_ejection_percent is a percentage between 0 and 100",
            );
        }
        if o.base_ejection_time.is_some_and(|d| d.0.is_zero()) {
            cx.err(
                &format!("{op}.base_ejection_time"),
                "base_ejection_time must be greater than 0s",
            );
        }
    }
    let ring = c.lb_policy == raw::LbPolicy::RingHash;
    match (&c.hash_on, ring) {
        (None, true) => cx.err(
            &format!("{p}.lb_policy"),
            "lb_policy ring_hash needs `hash_on: { header: NAME }` (or cookie / source_ip)",
        ),
        (Some(_), false) => cx.err_key(
            &format!("{p}.hash_on"),
            "hash_on only applies to `lb_policy: ring_hash`",
        ),
        (Some(h), true) => {
            let n = [
                h.header.is_some(),
                h.cookie.is_some(),
                h.source_ip == Some(true),
            ]
            .iter()
            .filter(|b| **b)
            .count();
            if n != 1 {
                cx.err(
                    &format!("{p}.hash_on"),
                    "give exactly one of `header: NAME`, `cookie: NAME` or `source_ip: true`",
                );
            }
            if let Some(name) = &h.header {
                if HeaderName::from_bytes(name.as_bytes()).is_err() {
                    cx.err(
                        &format!("{p}.hash_on.header"),
                        format!("`{name}` is not a valid header name"),
                    );
                }
            }
            if h.cookie.as_deref() == Some("") {
                cx.err(
                    &format!("{p}.hash_on.cookie"),
                    "cookie name must not be empty",
                );
            }
        }
        (None, false) => {}
    }
}

fn compile_http(
    cx: &mut Cx<'_>,
    p: &str,
    l: &raw::Listener,
    clusters: &Arc<HashMap<String, Arc<Cluster>>>,
    fcx: &FactoryContext<'_>,
) -> HttpSettings {
    // The listener's filter chain.
    let mut chain: Vec<(String, Arc<dyn HttpFilter>)> = Vec::new();
    let mut chain_raw: Vec<(String, usize)> = Vec::new();
    for (j, item) in l.filters.iter().enumerate() {
        let fp = format!("{p}.filters.{j}");
        if item.len() != 1 {
            cx.err(&fp, "each filter item is one `name: config` mapping");
            continue;
        }
        let Some((name, value)) = item.iter().next() else {
            continue;
        };
        let np = format!("{fp}.{name}");
        let Some(factory) = registry::get(name) else {
            let hint = did_you_mean(name, registry::names())
                .map(|s| format!("; did you mean `{s}`?"))
                .unwrap_or_else(|| {
                    format!("; compiled-in filters: {}", registry::names().join(", "))
                });
            cx.err_key(&np, format!("unknown filter `{name}`{hint}"));
            continue;
        };
        if chain_raw.iter().any(|(n, _)| n == name) {
            cx.err_key(&np, format!("filter `{name}` appears twice on the chain"));
            continue;
        }
        chain_raw.push((name.clone(), j));
        match factory.build(value, fcx) {
            Ok(f) => chain.push((name.clone(), f)),
            Err(errs) => {
                for e in errs {
                    let path = join_seg(&np, &e.path);
                    cx.err(&path, format!("filter `{name}`: {}", e.message));
                }
            }
        }
    }
    let listener_chain: Arc<[Arc<dyn HttpFilter>]> = chain.iter().map(|(_, f)| f.clone()).collect();

    let opts = l.http.clone().unwrap_or_default();
    let grpc_vecs = crate::http::grpc::Vecs::new(fcx.stats);
    let mut vhosts = Vec::new();
    let mut vh_names: HashSet<&str> = HashSet::new();
    let mut domains_seen: HashMap<String, usize> = HashMap::new();
    for (v, vh) in l.virtual_hosts.iter().enumerate() {
        let vp = format!("{p}.virtual_hosts.{v}");
        if !vh_names.insert(&vh.name) {
            cx.err(
                &format!("{vp}.name"),
                format!("duplicate virtual host name `{}`", vh.name),
            );
        }
        if vh.domains.is_empty() {
            cx.err(
                &vp,
                format!(
                    "virtual host `{}` needs at least one domain (`\"*\"` matches all)",
                    vh.name
                ),
            );
        }
        for (d, dom) in vh.domains.iter().enumerate() {
            let dp = format!("{vp}.domains.{d}");
            let lower = dom.to_ascii_lowercase();
            let host_chars = |h: &str| {
                !h.is_empty()
                    && h.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
            };
            let valid = lower == "*"
                || match lower.strip_prefix("*.") {
                    Some(rest) => host_chars(rest),
                    None => !lower.contains('*') && host_chars(&lower),
                };
            if !valid {
                cx.err(
                    &dp,
                    format!("domain `{dom}` must be a host name, `*.suffix` or `*`"),
                );
            }
            if let Some(line) = domains_seen.get(&lower) {
                cx.err(
                    &dp,
                    format!("domain `{dom}` is already served by the virtual host at line {line}"),
                );
            } else {
                domains_seen.insert(lower, cx.line(&dp));
            }
        }
        let mut routes = Vec::new();
        let mut catch_alls: Vec<(String, String, usize)> = Vec::new(); // (prefix, name, line)
        let mut route_names: HashSet<String> = HashSet::new();
        for (r, route) in vh.routes.iter().enumerate() {
            let rp = format!("{vp}.routes.{r}");
            let name = route
                .name
                .clone()
                .unwrap_or_else(|| format!("{}/{}", vh.name, r));
            if !route_names.insert(name.clone()) {
                cx.err(
                    &format!("{rp}.name"),
                    format!(
                        "duplicate route name `{name}` in virtual host `{}`",
                        vh.name
                    ),
                );
            }
            let Some(matcher) = compile_match(cx, &format!("{rp}.match"), &route.matcher) else {
                continue;
            };
            // Shadowing: an earlier route with only a prefix matches everything this
            // route would.
            let key = match &matcher.path {
                PathMatch::Prefix(s) | PathMatch::Exact(s) => Some(s.clone()),
                PathMatch::Regex(_) => None,
            };
            if let Some(k) = &key {
                if let Some((pre, n, line)) = catch_alls
                    .iter()
                    .find(|(pre, _, _)| k.starts_with(pre.as_str()))
                {
                    let what = if pre == "/" {
                        String::from("a catch-all")
                    } else {
                        format!("prefix `{pre}`")
                    };
                    cx.err(
                        &format!("{rp}.match"),
                        format!("route `{name}` can never match: route `{n}` at line {line} ({what}) matches every request it would; move it above or narrow that route"),
                    );
                }
            }
            let simple = matcher.headers.is_empty()
                && matcher.query.is_empty()
                && matcher.methods.is_empty()
                && matcher.peer_san.is_none();
            if let (PathMatch::Prefix(pre), true) = (&matcher.path, simple) {
                catch_alls.push((pre.clone(), name.clone(), cx.line(&format!("{rp}.match"))));
            }
            let action = compile_action(cx, &rp, route, &matcher, clusters, fcx.stats);
            let filters =
                compile_overrides(cx, &rp, route, &chain, &chain_raw, fcx, &listener_chain);
            let rbac = route.rbac.as_ref().and_then(|r| {
                let path = format!("{rp}.rbac");
                compile_rbac(cx, &path, r, l.protocol, &l.name, fcx.stats)
            });
            if let Some(action) = action {
                routes.push(Route {
                    name: Arc::from(name.as_str()),
                    matcher,
                    action,
                    filters,
                    grpc: RouteStats::new(grpc_vecs.clone(), &l.name, &name),
                    rbac,
                });
            }
        }
        vhosts.push((
            VirtualHost {
                name: Arc::from(vh.name.as_str()),
                routes,
            },
            vh.domains.clone(),
        ));
    }

    let hp = format!("{p}.http");
    let max_kb = opts.max_request_headers_kb.unwrap_or(60);
    if max_kb == 0 || max_kb > 8192 {
        cx.err(
            &format!("{hp}.max_request_headers_kb"),
            "max_request_headers_kb must be between 1 and 8192",
        );
    }
    let max_headers = opts.max_headers.unwrap_or(100);
    if max_headers == 0 || max_headers > 10_000 {
        cx.err(
            &format!("{hp}.max_headers"),
            "max_headers must be between 1 and 10000",
        );
    }
    let max_uri = opts.max_uri_bytes.unwrap_or(16 * 1024);
    if !(256..=1024 * 1024).contains(&max_uri) {
        cx.err(
            &format!("{hp}.max_uri_bytes"),
            "max_uri_bytes must be between 256 and 1048576",
        );
    }
    let request_head_timeout = opts
        .request_head_timeout
        .map_or(Duration::from_secs(60), |d| d.0);
    if request_head_timeout.is_zero() {
        cx.err(
            &format!("{hp}.request_head_timeout"),
            "request_head_timeout must be more than 0s (try `60s`)",
        );
    }
    let default_host_http10 = opts.default_host_for_http_10.as_deref().and_then(|h| {
        let value = crate::http::target::parse_authority(h.as_bytes())
            .and_then(|_| http::HeaderValue::from_str(h).ok());
        if value.is_none() {
            cx.err(
                &format!("{hp}.default_host_for_http_10"),
                format!("`{h}` is not a host[:port] authority (e.g. `www.example.com` or `127.0.0.1:8080`)"),
            );
        }
        value
    });
    HttpSettings {
        router: Router::new(vhosts, clusters.clone()),
        filters: listener_chain,
        max_header_bytes: max_kb as usize * 1024,
        max_headers: max_headers as usize,
        max_uri_bytes: max_uri as usize,
        path_rules: crate::http::normalize::Rules {
            merge_slashes: opts.merge_slashes.unwrap_or(true),
            reject_escaped_slashes: opts.escaped_slashes != Some(raw::EscapedSlashes::Keep),
            backslash_to_slash: opts.path_with_backslash == Some(raw::PathWithBackslash::Normalize),
            reject_double_encoding: opts.path_with_double_encoding
                != Some(raw::DoubleEncoding::Keep),
        },
        idle_timeout: opts
            .idle_timeout
            .map(|d| d.0)
            .unwrap_or(Duration::from_secs(3600)),
        request_head_timeout,
        default_host_http10,
        headers_with_underscores: opts.headers_with_underscores.unwrap_or_default(),
        generate_request_id: opts.generate_request_id.unwrap_or(true),
        retry_buffer_bytes: opts.retry_buffer_bytes.unwrap_or(64 * 1024) as usize,
        http2: compile_http2(cx, &format!("{hp}.http2"), opts.http2.as_ref()),
        grpc_no_route: RouteStats::new(grpc_vecs, &l.name, crate::http::grpc::NO_ROUTE),
    }
}

/// `http.http2`, each value inside the range RFC 9113 section 6.5.2 allows.
fn compile_http2(cx: &mut Cx<'_>, p: &str, opts: Option<&raw::Http2Options>) -> Http2Settings {
    let d = Http2Settings::default();
    let Some(o) = opts else {
        return d;
    };
    const MAX_WINDOW: u32 = (1 << 31) - 1;
    let mut pick =
        |key: &str, v: Option<u32>, default: u32, range: std::ops::RangeInclusive<u32>| {
            let v = v.unwrap_or(default);
            if !range.contains(&v) {
                cx.err(
                    &format!("{p}.{key}"),
                    format!(
                        "{key} must be between {} and {}",
                        range.start(),
                        range.end()
                    ),
                );
            }
            v
        };
    Http2Settings {
        max_concurrent_streams: pick(
            "max_concurrent_streams",
            o.max_concurrent_streams,
            d.max_concurrent_streams,
            1..=MAX_WINDOW,
        ),
        initial_stream_window_size: pick(
            "initial_stream_window_size",
            o.initial_stream_window_size,
            d.initial_stream_window_size,
            65_535..=MAX_WINDOW,
        ),
        initial_connection_window_size: pick(
            "initial_connection_window_size",
            o.initial_connection_window_size,
            d.initial_connection_window_size,
            65_535..=MAX_WINDOW,
        ),
        max_frame_size: pick(
            "max_frame_size",
            o.max_frame_size,
            d.max_frame_size,
            16_384..=16_777_215,
        ),
    }
}

fn compile_overrides(
    cx: &mut Cx<'_>,
    rp: &str,
    route: &raw::Route,
    chain: &[(String, Arc<dyn HttpFilter>)],
    chain_raw: &[(String, usize)],
    fcx: &FactoryContext<'_>,
    listener_chain: &Arc<[Arc<dyn HttpFilter>]>,
) -> Arc<[Arc<dyn HttpFilter>]> {
    if route.filter_overrides.is_empty() {
        return listener_chain.clone();
    }
    let mut out: Vec<Arc<dyn HttpFilter>> = Vec::new();
    for (name, _) in route.filter_overrides.iter() {
        if !chain_raw.iter().any(|(n, _)| n == name) {
            let op = format!("{rp}.filter_overrides.{name}");
            let hint = did_you_mean(name, chain_raw.iter().map(|(n, _)| n.as_str()))
                .map(|s| format!("; did you mean `{s}`?"))
                .unwrap_or_default();
            cx.err_key(
                &op,
                format!("override of filter `{name}`, which is not on this listener's chain{hint}"),
            );
        }
    }
    // Walk the chain as written (not only the filters that built), so an override
    // is validated even when the listener's own config for that filter is broken.
    for (name, _) in chain_raw {
        let base = chain.iter().find(|(n, _)| n == name).map(|(_, f)| f);
        match route.filter_overrides.get(name) {
            None => {
                if let Some(f) = base {
                    out.push(f.clone());
                }
            }
            Some(serde_yaml::Value::String(s)) if s == "disabled" => {}
            Some(v) => {
                let op = format!("{rp}.filter_overrides.{name}");
                let Some(factory) = registry::get(name) else {
                    continue;
                };
                match factory.build(v, fcx) {
                    Ok(f) => out.push(f),
                    Err(errs) => {
                        for e in errs {
                            cx.err(
                                &join_seg(&op, &e.path),
                                format!("filter `{name}` override: {}", e.message),
                            );
                        }
                    }
                }
            }
        }
    }
    out.into()
}

fn value_match(
    cx: &mut Cx<'_>,
    path: &str,
    exact: &Option<String>,
    prefix: &Option<String>,
    suffix: &Option<String>,
    re: &Option<String>,
    present: Option<bool>,
) -> Option<ValueMatch> {
    let n = [
        exact.is_some(),
        prefix.is_some(),
        suffix.is_some(),
        re.is_some(),
        present.is_some(),
    ]
    .iter()
    .filter(|b| **b)
    .count();
    if n != 1 {
        cx.err(
            path,
            "give exactly one of `exact`, `prefix`, `suffix`, `regex` or `present`",
        );
        return None;
    }
    Some(if let Some(e) = exact {
        ValueMatch::Exact(e.clone())
    } else if let Some(p) = prefix {
        ValueMatch::Prefix(p.clone())
    } else if let Some(s) = suffix {
        ValueMatch::Suffix(s.clone())
    } else if let Some(r) = re {
        ValueMatch::Regex(regex(cx, &format!("{path}.regex"), r)?)
    } else {
        ValueMatch::Present(present.unwrap_or(true))
    })
}

fn compile_match(cx: &mut Cx<'_>, mp: &str, m: &raw::RouteMatch) -> Option<Matcher> {
    let n = [m.prefix.is_some(), m.path.is_some(), m.regex.is_some()]
        .iter()
        .filter(|b| **b)
        .count();
    let path = match (n, &m.prefix, &m.path, &m.regex) {
        (1, Some(p), _, _) => {
            if !p.starts_with('/') {
                cx.err(
                    &format!("{mp}.prefix"),
                    format!("prefix `{p}` must start with `/`"),
                );
            }
            PathMatch::Prefix(p.clone())
        }
        (1, _, Some(p), _) => {
            if !p.starts_with('/') {
                cx.err(
                    &format!("{mp}.path"),
                    format!("path `{p}` must start with `/`"),
                );
            }
            PathMatch::Exact(p.clone())
        }
        (1, _, _, Some(r)) => PathMatch::Regex(regex(cx, &format!("{mp}.regex"), r)?),
        _ => {
            cx.err(
                mp,
                "a route match needs exactly one of `prefix`, `path` or `regex`",
            );
            return None;
        }
    };
    let mut ok = true;
    let mut headers = Vec::new();
    for (i, h) in m.headers.iter().enumerate() {
        let hp = format!("{mp}.headers.{i}");
        let name = match HeaderName::from_bytes(h.name.as_bytes()) {
            Ok(n) => n,
            Err(_) => {
                cx.err(
                    &format!("{hp}.name"),
                    format!("`{}` is not a valid header name", h.name),
                );
                ok = false;
                continue;
            }
        };
        match value_match(cx, &hp, &h.exact, &h.prefix, &h.suffix, &h.regex, h.present) {
            Some(value) => headers.push(HeaderMatch {
                name,
                value,
                invert: h.invert,
            }),
            None => ok = false,
        }
    }
    let mut query = Vec::new();
    for (i, q) in m.query.iter().enumerate() {
        let qp = format!("{mp}.query.{i}");
        match value_match(cx, &qp, &q.exact, &None, &None, &q.regex, q.present) {
            Some(value) => query.push(QueryMatch {
                name: q.name.clone(),
                value,
            }),
            None => ok = false,
        }
    }
    let mut methods = Vec::new();
    for (i, meth) in m.methods.iter().enumerate() {
        match Method::from_bytes(meth.as_bytes()) {
            Ok(mm) if meth.bytes().all(|b| b.is_ascii_uppercase()) => methods.push(mm),
            _ => {
                cx.err(
                    &format!("{mp}.methods.{i}"),
                    format!("`{meth}` is not an HTTP method (use upper case, e.g. GET)"),
                );
                ok = false;
            }
        }
    }
    let peer_san = match &m.peer_san {
        None => None,
        Some(s) => {
            let san = san_match(cx, &format!("{mp}.peer_san"), s);
            ok &= san.is_some();
            san
        }
    };
    ok.then_some(Matcher {
        path,
        headers,
        query,
        methods,
        peer_san,
    })
}

/// Default `stream_idle_timeout` of a route (Envoy's default too).
pub const DEFAULT_STREAM_IDLE_TIMEOUT: Duration = Duration::from_secs(300);

/// A `{ exact | prefix | suffix }` SAN rule (exactly one key).
fn san_match(cx: &mut Cx<'_>, p: &str, s: &raw::SanRule) -> Option<SanMatch> {
    match (&s.exact, &s.prefix, &s.suffix) {
        (Some(e), None, None) => Some(SanMatch::Exact(e.clone())),
        (None, Some(x), None) => Some(SanMatch::Prefix(x.clone())),
        (None, None, Some(x)) => Some(SanMatch::Suffix(x.clone())),
        _ => {
            cx.err(p, "give exactly one of `exact`, `prefix` or `suffix`");
            None
        }
    }
}

fn compile_action(
    cx: &mut Cx<'_>,
    rp: &str,
    route: &raw::Route,
    matcher: &Matcher,
    clusters: &Arc<HashMap<String, Arc<Cluster>>>,
    stats: &Stats,
) -> Option<Action> {
    let n = [
        route.route.is_some(),
        route.redirect.is_some(),
        route.direct_response.is_some(),
    ]
    .iter()
    .filter(|b| **b)
    .count();
    if n != 1 {
        cx.err(
            rp,
            "a route needs exactly one of `route`, `redirect` or `direct_response`",
        );
        return None;
    }
    if let Some(d) = &route.direct_response {
        let dp = format!("{rp}.direct_response");
        let Ok(status) = StatusCode::from_u16(d.status) else {
            cx.err(
                &format!("{dp}.status"),
                format!("status {} is not between 100 and 599", d.status),
            );
            return None;
        };
        if !(200..=599).contains(&d.status) {
            cx.err(
                &format!("{dp}.status"),
                format!("status {} is not between 200 and 599", d.status),
            );
        }
        let ct = d.content_type.as_deref().unwrap_or("text/plain");
        let Ok(content_type) = HeaderValue::from_str(ct) else {
            cx.err(
                &format!("{dp}.content_type"),
                "content_type is not a valid header value",
            );
            return None;
        };
        return Some(Action::Direct(DirectResponse {
            status,
            body: bytes::Bytes::from(d.body.clone().unwrap_or_default()),
            content_type,
        }));
    }
    if let Some(r) = &route.redirect {
        let dp = format!("{rp}.redirect");
        let code = r.response_code.unwrap_or(301);
        let status = match StatusCode::from_u16(code) {
            Ok(s) if matches!(code, 301 | 302 | 303 | 307 | 308) => s,
            _ => {
                cx.err(
                    &format!("{dp}.response_code"),
                    format!("response_code {code} must be 301, 302, 303, 307 or 308"),
                );
                return None;
            }
        };
        if let Some(s) = &r.scheme_redirect {
            if s != "http" && s != "https" {
                cx.err(
                    &format!("{dp}.scheme_redirect"),
                    "scheme_redirect must be `http` or `https`",
                );
            }
        }
        if r.path_redirect.is_some() && r.prefix_rewrite.is_some() {
            cx.err(
                &dp,
                "give at most one of `path_redirect` and `prefix_rewrite`",
            );
        }
        if r.prefix_rewrite.is_some() && !matches!(matcher.path, PathMatch::Prefix(_)) {
            cx.err(
                &format!("{dp}.prefix_rewrite"),
                "prefix_rewrite needs a `prefix` match",
            );
        }
        return Some(Action::Redirect(Redirect {
            scheme: r.scheme_redirect.clone(),
            host: r.host_redirect.clone(),
            port: r.port_redirect,
            path: r.path_redirect.clone(),
            prefix_rewrite: r.prefix_rewrite.clone(),
            status,
            strip_query: r.strip_query,
        }));
    }
    let a = route.route.as_ref()?;
    let ap = format!("{rp}.route");
    let n = [
        a.cluster.is_some(),
        a.weighted_clusters.is_some(),
        a.cluster_header.is_some(),
    ]
    .iter()
    .filter(|b| **b)
    .count();
    if n != 1 {
        cx.err(&ap, "a route action needs exactly one of `cluster`, `weighted_clusters` or `cluster_header`");
        return None;
    }
    let target = if let Some(c) = &a.cluster {
        match clusters.get(c) {
            Some(cl) => Target::Cluster(cl.clone()),
            None => {
                unknown_cluster(cx, &format!("{ap}.cluster"), c, clusters);
                return None;
            }
        }
    } else if let Some(ws) = &a.weighted_clusters {
        let mut out = Vec::new();
        let mut total: u64 = 0;
        for (i, w) in ws.iter().enumerate() {
            match clusters.get(&w.cluster) {
                Some(cl) => out.push((cl.clone(), w.weight)),
                None => unknown_cluster(
                    cx,
                    &format!("{ap}.weighted_clusters.{i}.cluster"),
                    &w.cluster,
                    clusters,
                ),
            }
            total += u64::from(w.weight);
        }
        if ws.is_empty() {
            cx.err(
                &format!("{ap}.weighted_clusters"),
                "weighted_clusters needs at least one cluster",
            );
            return None;
        }
        if total == 0 {
            cx.err(
                &format!("{ap}.weighted_clusters"),
                "weights sum to zero; no request could be routed",
            );
            return None;
        }
        if total > u64::from(u32::MAX) {
            cx.err(
                &format!("{ap}.weighted_clusters"),
                "weights sum to more than 4294967295",
            );
            return None;
        }
        if out.len() != ws.len() {
            return None;
        }
        Target::Weighted {
            clusters: out,
            total: total as u32,
        }
    } else {
        let h = a.cluster_header.as_deref().unwrap_or_default();
        match HeaderName::from_bytes(h.as_bytes()) {
            Ok(n) => Target::Header(n),
            Err(_) => {
                cx.err(
                    &format!("{ap}.cluster_header"),
                    format!("`{h}` is not a valid header name"),
                );
                return None;
            }
        }
    };
    let retry = match &a.retries {
        None => None,
        Some(r) => {
            let rp2 = format!("{ap}.retries");
            let mut pol = RetryPolicy {
                attempts: r.attempts,
                statuses: r.retriable_status_codes.clone(),
                per_try_timeout: r.per_try_timeout.map(|d| d.0),
                ..RetryPolicy::default()
            };
            if r.attempts > 10 {
                cx.err(&format!("{rp2}.attempts"), "attempts must be at most 10");
            }
            for (i, on) in r.retry_on.iter().enumerate() {
                if !pol.enable(on) {
                    let hint = did_you_mean(on, RETRY_ON.iter().copied())
                        .map(|s| format!("; did you mean `{s}`?"))
                        .unwrap_or_else(|| format!("; expected one of {}", RETRY_ON.join(", ")));
                    cx.err(
                        &format!("{rp2}.retry_on.{i}"),
                        format!("unknown retry condition `{on}`{hint}"),
                    );
                }
            }
            for (i, s) in r.retriable_status_codes.iter().enumerate() {
                if !(100..=599).contains(s) {
                    cx.err(
                        &format!("{rp2}.retriable_status_codes.{i}"),
                        format!("{s} is not an HTTP status"),
                    );
                }
            }
            if !r.retriable_status_codes.is_empty()
                && !r.retry_on.iter().any(|s| s == "retriable-status-codes")
            {
                pol.statuses.clear();
                cx.err(
                    &format!("{rp2}.retriable_status_codes"),
                    "retriable_status_codes needs `retriable-status-codes` in retry_on",
                );
            }
            Some(pol)
        }
    };
    if a.prefix_rewrite.is_some() && matches!(matcher.path, PathMatch::Regex(_)) {
        cx.err(
            &format!("{ap}.prefix_rewrite"),
            "prefix_rewrite needs a `prefix` or `path` match",
        );
    }
    let host_rewrite = match &a.host_rewrite {
        None => None,
        Some(h) => match HeaderValue::from_str(h) {
            Ok(v) => Some(v),
            Err(_) => {
                cx.err(
                    &format!("{ap}.host_rewrite"),
                    "host_rewrite is not a valid host",
                );
                None
            }
        },
    };
    let timeout = match a.timeout {
        None => Some(Duration::from_secs(15)),
        Some(d) if d.0.is_zero() => None,
        Some(d) => Some(d.0),
    };
    let stream_idle_timeout = match a.stream_idle_timeout {
        None => Some(DEFAULT_STREAM_IDLE_TIMEOUT),
        Some(d) if d.0.is_zero() => None,
        Some(d) => Some(d.0),
    };
    let nonzero = |cx: &mut Cx<'_>, key: &str, d: Option<super::duration::Dur>| match d {
        Some(d) if d.0.is_zero() => {
            cx.err(
                &format!("{ap}.{key}"),
                format!("{key} must be greater than 0s (leave it out for no limit)"),
            );
            None
        }
        d => d.map(|d| d.0),
    };
    let max_grpc_timeout = nonzero(cx, "max_grpc_timeout", a.max_grpc_timeout);
    let max_stream_duration = nonzero(cx, "max_stream_duration", a.max_stream_duration);
    let mut upgrades = Vec::new();
    for (i, u) in a.upgrades.iter().enumerate() {
        let token = !u.is_empty()
            && u.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
        if !token {
            cx.err(
                &format!("{ap}.upgrades.{i}"),
                format!("`{u}` is not an upgrade protocol name (e.g. `websocket`)"),
            );
        } else {
            upgrades.push(Box::from(u.to_ascii_lowercase()));
        }
    }
    if !upgrades.is_empty() {
        let h2 = match &target {
            Target::Cluster(c) => vec![c.clone()],
            Target::Weighted { clusters, .. } => clusters.iter().map(|(c, _)| c.clone()).collect(),
            Target::Header(_) => Vec::new(),
        }
        .into_iter()
        .find(|c| c.protocol == crate::config::raw::UpstreamProtocol::Http2);
        if let Some(c) = h2 {
            cx.err(
                &format!("{ap}.upgrades"),
                format!(
                    "cluster `{}` speaks HTTP/2 upstream; upgrades are tunnelled over HTTP/1.1 only",
                    c.name
                ),
            );
        }
    }
    let mirrors = compile_mirrors(cx, &ap, &a.mirror, timeout, clusters, stats);
    Some(Action::Route(RouteAction {
        target,
        timeout,
        retry,
        max_grpc_timeout,
        stream_idle_timeout,
        max_stream_duration,
        prefix_rewrite: a.prefix_rewrite.clone(),
        host_rewrite,
        upgrades: upgrades.into_boxed_slice(),
        mirrors,
    }))
}

/// `route.mirror`: known clusters, a percent from 0 to 100, bounds above zero.
fn compile_mirrors(
    cx: &mut Cx<'_>,
    ap: &str,
    raw: &[raw::Mirror],
    route_timeout: Option<Duration>,
    clusters: &HashMap<String, Arc<Cluster>>,
    stats: &Stats,
) -> Box<[crate::http::mirror::Mirror]> {
    let mut out = Vec::with_capacity(raw.len());
    for (i, m) in raw.iter().enumerate() {
        let mp = format!("{ap}.mirror.{i}");
        let percent = m.percent.unwrap_or(100.0);
        if !(0.0..=100.0).contains(&percent) {
            cx.err(
                &format!("{mp}.percent"),
                format!("percent {percent} is not between 0 and 100 (fractions allowed, e.g. 0.5)"),
            );
        }
        let timeout = m
            .timeout
            .map(|d| d.0)
            .or(route_timeout)
            .unwrap_or(Duration::from_secs(15));
        if timeout.is_zero() {
            cx.err(
                &format!("{mp}.timeout"),
                "a mirror timeout must be greater than 0s",
            );
        }
        let Some(cluster) = clusters.get(&m.cluster) else {
            unknown_cluster(cx, &format!("{mp}.cluster"), &m.cluster, clusters);
            continue;
        };
        out.push(crate::http::mirror::Mirror {
            cluster: cluster.clone(),
            share: percent / 100.0,
            max_body_bytes: m.max_body_bytes.unwrap_or(64 * 1024),
            timeout,
            stats: crate::http::mirror::MirrorStats::new(stats, &m.cluster),
        });
    }
    out.into_boxed_slice()
}

// Re-exported for the router benchmark and tests.
pub use router::RequestView;

/// A listener's `proxy_protocol:` (`true`, `false` or options).
fn compile_proxy_protocol(
    cx: &mut Cx<'_>,
    p: &str,
    l: &raw::Listener,
    stats: &Stats,
) -> Option<crate::proxy_protocol::Settings> {
    let opts = match l.proxy_protocol.as_ref()? {
        raw::ProxyProtocol::Enabled(false) => return None,
        raw::ProxyProtocol::Enabled(true) => raw::ProxyProtocolOptions::default(),
        raw::ProxyProtocol::Options(o) => o.clone(),
    };
    let pp = format!("{p}.proxy_protocol");
    let mut sources = Vec::new();
    for (i, s) in opts.allowed_sources.iter().enumerate() {
        match crate::cidr::Cidr::parse(s) {
            Ok(c) => sources.push(c),
            Err(m) => cx.err(&format!("{pp}.allowed_sources.{i}"), m),
        }
    }
    let timeout = opts
        .timeout
        .map(|d| d.0)
        .unwrap_or(crate::proxy_protocol::DEFAULT_TIMEOUT);
    if timeout.is_zero() {
        cx.err(
            &format!("{pp}.timeout"),
            "timeout must be greater than 0s (the header is read before anything else)",
        );
    }
    let counters = crate::proxy_protocol::Counters::new(stats, &l.name);
    Some(crate::proxy_protocol::Settings::new(
        sources, timeout, counters,
    ))
}

/// An `rbac:` block at `p` (a listener's or a route's), checked against the
/// listener's protocol: each permission key belongs to one protocol.
fn compile_rbac(
    cx: &mut Cx<'_>,
    p: &str,
    r: &raw::Rbac,
    protocol: raw::ListenerProtocol,
    listener: &str,
    stats: &Stats,
) -> Option<Arc<crate::rbac::Rbac>> {
    let errors = cx.errors.len();
    if r.policies.is_empty() {
        cx.err(
            &format!("{p}.policies"),
            "rbac needs at least one policy (an allow list with none denies everything)",
        );
    }
    let mut names: HashMap<&str, usize> = HashMap::new();
    let mut policies = Vec::new();
    for (i, pol) in r.policies.iter().enumerate() {
        let pp = format!("{p}.policies.{i}");
        if !valid_name(&pol.name) || pol.name == crate::rbac::NO_POLICY {
            cx.err(
                &format!("{pp}.name"),
                format!(
                    "policy name `{}` must match [a-z0-9_]+ and not be `none`",
                    pol.name
                ),
            );
        }
        if let Some(line) = names.get(pol.name.as_str()) {
            cx.err(
                &format!("{pp}.name"),
                format!(
                    "duplicate policy name `{}` (first defined at line {line})",
                    pol.name
                ),
            );
        } else {
            names.insert(&pol.name, cx.line(&format!("{pp}.name")));
        }
        let principals = pol
            .principals
            .iter()
            .enumerate()
            .filter_map(|(j, pr)| compile_principal(cx, &format!("{pp}.principals.{j}"), pr))
            .collect();
        let permissions = pol
            .permissions
            .iter()
            .enumerate()
            .filter_map(|(j, pe)| {
                compile_permission(cx, &format!("{pp}.permissions.{j}"), pe, protocol)
            })
            .collect();
        policies.push((pol.name.clone(), principals, permissions));
    }
    (cx.errors.len() == errors).then(|| {
        Arc::new(crate::rbac::Rbac::new(
            stats, listener, r.mode, r.action, policies,
        ))
    })
}

fn compile_principal(
    cx: &mut Cx<'_>,
    p: &str,
    pr: &raw::RbacPrincipal,
) -> Option<crate::rbac::Principal> {
    if pr.peer_san.is_none() && pr.source_ip.is_none() && pr.authenticated.is_none() {
        cx.err(
            p,
            "a principal needs `peer_san`, `source_ip` or `authenticated` (leave `principals` out to match anyone)",
        );
        return None;
    }
    let peer_san = match &pr.peer_san {
        None => None,
        Some(raw::SanMatcher::Exact(e)) => Some(SanMatch::Exact(e.clone())),
        Some(raw::SanMatcher::Rule(s)) => Some(san_match(cx, &format!("{p}.peer_san"), s)?),
    };
    let source_ip = match &pr.source_ip {
        None => None,
        Some(s) => match crate::cidr::Cidr::parse(s) {
            Ok(c) => Some(c),
            Err(m) => {
                cx.err(&format!("{p}.source_ip"), m);
                return None;
            }
        },
    };
    Some(crate::rbac::Principal {
        peer_san,
        source_ip,
        authenticated: pr.authenticated,
    })
}

fn compile_permission(
    cx: &mut Cx<'_>,
    p: &str,
    pe: &raw::RbacPermission,
    protocol: raw::ListenerProtocol,
) -> Option<crate::rbac::Permission> {
    let http_keys = [
        ("prefix", pe.prefix.is_some()),
        ("path", pe.path.is_some()),
        ("methods", !pe.methods.is_empty()),
        ("headers", !pe.headers.is_empty()),
    ];
    let thrift_keys = [
        ("service", pe.service.is_some()),
        ("method", pe.method.is_some()),
    ];
    let tcp_keys = [("destination_port", pe.destination_port.is_some())];
    let (own, name): (&[(&str, bool)], &str) = match protocol {
        raw::ListenerProtocol::Http => (&http_keys, "http"),
        raw::ListenerProtocol::Thrift => (&thrift_keys, "thrift"),
        raw::ListenerProtocol::Tcp => (&tcp_keys, "tcp"),
    };
    let mut ok = true;
    for (key, set) in http_keys.iter().chain(&thrift_keys).chain(&tcp_keys) {
        if *set && !own.iter().any(|(k, _)| k == key) {
            let valid: Vec<&str> = own.iter().map(|(k, _)| *k).collect();
            cx.err_key(
                &format!("{p}.{key}"),
                format!(
                    "`{key}` does not apply to a {name} listener; its permissions take {}",
                    valid.join(", ")
                ),
            );
            ok = false;
        }
    }
    if !own.iter().any(|(_, set)| *set) && ok {
        cx.err(
            p,
            "an empty permission matches everything; leave `permissions` out instead",
        );
        return None;
    }
    if let Some(s) = pe
        .service
        .as_deref()
        .filter(|s| s.is_empty() || s.contains(':'))
    {
        cx.err(
            &format!("{p}.service"),
            format!("`{s}` is not a service name (non-empty, no `:`)"),
        );
        ok = false;
    }
    let http = match protocol {
        raw::ListenerProtocol::Http => {
            let m = raw::RouteMatch {
                prefix: pe.prefix.clone(),
                path: pe.path.clone(),
                methods: pe.methods.clone(),
                headers: pe.headers.clone(),
                ..Default::default()
            };
            if m.prefix.is_some() && m.path.is_some() {
                cx.err(p, "give `prefix` or `path`, not both");
                return None;
            }
            let any_path = m.prefix.is_none() && m.path.is_none();
            let m = raw::RouteMatch {
                prefix: m.prefix.clone().or(any_path.then(|| "/".to_string())),
                ..m
            };
            let mut matcher = compile_match(cx, p, &m)?;
            if any_path {
                // Any path, `*` of `OPTIONS *` included.
                matcher.path = PathMatch::Prefix(String::new());
            }
            Some(matcher)
        }
        _ => None,
    };
    ok.then(|| crate::rbac::Permission {
        http,
        thrift_service: pe.service.clone(),
        thrift_method: pe.method.clone(),
        destination_port: pe.destination_port,
    })
}
