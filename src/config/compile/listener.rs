//! A listener: name and address checks, TLS, `access_log:`, `proxy_protocol:`,
//! `rbac:`, and the protocol's own block (HTTP in `http_listener`, TCP, Thrift).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use attache_filters::FactoryContext;

use super::access_log::access_log;
use super::global::Admin;
use super::http_listener::compile_http;
use super::rbac::compile_rbac;
use super::tls::{listener_settings, tls_material};
use super::{parse_addr, unknown_cluster, valid_name, Cx, Options};
use crate::config::raw;
use crate::config::snapshot::{HttpSettings, Listener, TcpSettings};
use crate::stats::{ListenerStats, Stats};
use crate::trace::Tracer;
use crate::upstream::Cluster;

type Clusters = Arc<HashMap<String, Arc<Cluster>>>;

/// `listeners:`; a listener whose address does not parse is checked, not built.
pub(super) fn compile_listeners(
    cx: &mut Cx<'_>,
    raw: &[raw::Listener],
    admin: &Admin,
    clusters: &Clusters,
    tracer: Option<&Arc<Tracer>>,
    opts: &Options<'_>,
) -> Vec<Arc<Listener>> {
    let mut listeners = Vec::new();
    let mut names: HashMap<&str, usize> = HashMap::new();
    let mut addrs: HashMap<SocketAddr, usize> = HashMap::new();
    for (i, l) in raw.iter().enumerate() {
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
        let address = parse_addr(cx, &format!("{p}.address"), &l.address);
        if let Some(a) = address {
            check_address(cx, &p, a, admin, &mut addrs);
        }
        listeners.extend(compile_listener(cx, &p, l, address, clusters, tracer, opts));
    }
    listeners
}

/// A fixed port is used once, and never by the admin or health listener.
fn check_address(
    cx: &mut Cx<'_>,
    p: &str,
    a: SocketAddr,
    admin: &Admin,
    addrs: &mut HashMap<SocketAddr, usize>,
) {
    if a.port() == 0 {
        return;
    }
    if let Some(line) = addrs.get(&a) {
        cx.err(
            &format!("{p}.address"),
            format!("address {a} is already used by the listener at line {line}"),
        );
    } else {
        addrs.insert(a, cx.line(&format!("{p}.address")));
    }
    if admin.health == Some(a) {
        cx.err(
            &format!("{p}.address"),
            format!("address {a} is the health_listener address"),
        );
    }
    if admin.address == Some(a) {
        cx.err(
            &format!("{p}.address"),
            format!("address {a} is the admin address"),
        );
    }
}

/// One listener at `p`, checked in full; built when its address parsed.
fn compile_listener(
    cx: &mut Cx<'_>,
    p: &str,
    l: &raw::Listener,
    address: Option<SocketAddr>,
    clusters: &Clusters,
    tracer: Option<&Arc<Tracer>>,
    opts: &Options<'_>,
) -> Option<Arc<Listener>> {
    let stats = ListenerStats::new(opts.stats, &l.name);
    let access_log = l
        .access_log
        .as_ref()
        .and_then(|a| access_log(cx, &format!("{p}.access_log"), a, opts.check_files));
    let tls = listener_tls(cx, p, l, opts);
    let proxy_protocol = compile_proxy_protocol(cx, p, l, opts.stats);
    let rbac = l
        .rbac
        .as_ref()
        .and_then(|r| compile_rbac(cx, &format!("{p}.rbac"), r, l.protocol, &l.name, opts.stats));
    let mut http = None;
    let mut tcp = None;
    let mut thrift = None;
    match l.protocol {
        raw::ListenerProtocol::Http => http = Some(http_protocol(cx, p, l, clusters, opts)),
        raw::ListenerProtocol::Tcp => tcp = tcp_protocol(cx, p, l, clusters, opts),
        raw::ListenerProtocol::Thrift => {
            thrift = thrift_protocol(cx, p, l, clusters, rbac.clone(), opts)
        }
    }
    Some(Arc::new(Listener {
        name: Arc::from(l.name.as_str()),
        address: address?,
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
            .cloned()
            .filter(|_| l.protocol == raw::ListenerProtocol::Http),
    }))
}

/// The listener's `tls:`; an HTTP listener offers h2 and http/1.1 by default.
fn listener_tls(
    cx: &mut Cx<'_>,
    p: &str,
    l: &raw::Listener,
    opts: &Options<'_>,
) -> Option<Arc<crate::tls::ServerTls>> {
    let t = l.tls.as_ref()?;
    let alpn: &[&str] = match l.protocol {
        raw::ListenerProtocol::Http => &["h2", "http/1.1"],
        _ => &[],
    };
    tls_material(cx, p, opts.check_files, listener_settings(t, alpn), |s| {
        crate::tls::ServerTls::build(&s, &l.name, opts.stats)
    })
}

/// `protocol: http`: virtual hosts and filters, and no `tcp` or `thrift` block.
fn http_protocol(
    cx: &mut Cx<'_>,
    p: &str,
    l: &raw::Listener,
    clusters: &Clusters,
    opts: &Options<'_>,
) -> HttpSettings {
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
            p,
            format!("http listener `{}` needs at least one virtual host", l.name),
        );
    }
    let fcx = FactoryContext {
        stats: opts.stats,
        listener: &l.name,
        tls: l.tls.is_some(),
        services: opts.services,
    };
    compile_http(cx, p, l, clusters, &fcx)
}

/// `protocol: tcp`: `tcp: { cluster }` naming a known cluster.
fn tcp_protocol(
    cx: &mut Cx<'_>,
    p: &str,
    l: &raw::Listener,
    clusters: &Clusters,
    opts: &Options<'_>,
) -> Option<TcpSettings> {
    if !l.virtual_hosts.is_empty() || !l.filters.is_empty() {
        cx.err_key(
            &format!("{p}.protocol"),
            "a tcp listener takes `tcp: { cluster }`, not virtual_hosts or filters",
        );
    }
    let Some(t) = &l.tcp else {
        cx.err(p, "a tcp listener needs `tcp: { cluster: NAME }`");
        return None;
    };
    let Some(c) = clusters.get(&t.cluster) else {
        unknown_cluster(cx, &format!("{p}.tcp.cluster"), &t.cluster, clusters);
        return None;
    };
    Some(TcpSettings {
        cluster: c.clone(),
        settings: tcp_settings(t, c.connect_timeout),
        counters: crate::tcp::TcpCounters::new(opts.stats, &l.name),
    })
}

/// A listener's `tcp:` block (and its cluster's `connect_timeout`), defaults applied.
fn tcp_settings(tcp: &raw::TcpListener, connect_timeout: Duration) -> crate::tcp::Settings {
    crate::tcp::Settings {
        connect_attempts: tcp
            .connect_attempts
            .unwrap_or(crate::tcp::DEFAULT_CONNECT_ATTEMPTS)
            .max(1),
        connect_timeout,
        idle_timeout: tcp
            .idle_timeout
            .map(|d| d.0)
            .unwrap_or(crate::tcp::DEFAULT_IDLE_TIMEOUT),
    }
}

/// `protocol: thrift`: the `thrift:` routes, each naming a known cluster.
fn thrift_protocol(
    cx: &mut Cx<'_>,
    p: &str,
    l: &raw::Listener,
    clusters: &Clusters,
    rbac: Option<Arc<crate::rbac::Rbac>>,
    opts: &Options<'_>,
) -> Option<Arc<crate::thrift::ListenerCtx>> {
    if !l.virtual_hosts.is_empty() || !l.filters.is_empty() {
        cx.err_key(
            &format!("{p}.protocol"),
            "a thrift listener takes `thrift: {...}`, not virtual_hosts or filters",
        );
    }
    let Some(t) = &l.thrift else {
        cx.err(p, "a thrift listener needs `thrift: { routes: [...] }`");
        return None;
    };
    match super::thrift::thrift_listener(t) {
        Ok(settings) => {
            let ctx =
                crate::thrift::ListenerCtx::new(&l.name, settings, opts.stats, clusters.clone())
                    .with_sli(opts.services.sli.clone())
                    .with_rbac(rbac);
            for (path, name) in ctx.routes().clusters() {
                if !clusters.contains_key(name) {
                    unknown_cluster(cx, &format!("{p}.{path}"), name, clusters);
                }
            }
            Some(Arc::new(ctx))
        }
        Err(problems) => {
            cx.report(p, problems);
            None
        }
    }
}

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
