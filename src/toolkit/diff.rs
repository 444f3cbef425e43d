//! `attache diff OLD NEW`: what changes in behaviour between two configs, for a
//! reviewer: listeners, routes (added, removed, reordered, match or action changed,
//! weights shifted), clusters, filters and TLS policy. Works on the typed raw
//! configs, so formatting, comments and key order never show up.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use super::explain::{chain_names, fmt_dur};
use crate::config::load::{Diagnostic, SourceMap};
use crate::config::raw;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    Admin,
    Listener,
    Route,
    Cluster,
    Filter,
    Tls,
    /// Top-level keys outside listeners, clusters and admin.
    Config,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Admin => "admin",
            Kind::Listener => "listener",
            Kind::Route => "route",
            Kind::Cluster => "cluster",
            Kind::Filter => "filter",
            Kind::Tls => "tls",
            Kind::Config => "config",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Change {
    pub kind: Kind,
    /// `+` added, `-` removed, `~` changed.
    pub sign: char,
    pub subject: String,
    pub message: String,
    /// Where in NEW (or OLD, for removals).
    pub at: Diagnostic,
}

struct Cx<'a> {
    old: &'a SourceMap,
    new: &'a SourceMap,
    out: Vec<Change>,
}

impl Cx<'_> {
    fn push(&mut self, kind: Kind, sign: char, subject: &str, msg: String, path: &str, old: bool) {
        // A list item is located at its `name` key when it has one.
        let map = if old { self.old } else { self.new };
        let at = map.diag_key(&format!("{path}.name"), "");
        self.out.push(Change {
            kind,
            sign,
            subject: subject.to_string(),
            message: msg,
            at,
        });
    }
}

fn opt<T: std::fmt::Display>(v: &Option<T>) -> String {
    v.as_ref().map_or("(unset)".to_string(), |x| x.to_string())
}

fn dur(d: &Option<crate::config::duration::Dur>) -> String {
    d.map_or("(default)".to_string(), |d| fmt_dur(d.0))
}

/// A compact, canonical description of a route match.
pub fn describe_match(m: &raw::RouteMatch) -> String {
    let mut s = String::new();
    if let Some(p) = &m.prefix {
        let _ = write!(s, "prefix {p}");
    }
    if let Some(p) = &m.path {
        let _ = write!(s, "path {p}");
    }
    if let Some(p) = &m.regex {
        let _ = write!(s, "regex {p}");
    }
    for h in &m.headers {
        let v = if let Some(x) = &h.exact {
            format!("={x}")
        } else if let Some(x) = &h.prefix {
            format!(" prefix {x}")
        } else if let Some(x) = &h.suffix {
            format!(" suffix {x}")
        } else if let Some(x) = &h.regex {
            format!(" ~ {x}")
        } else {
            format!(" present={}", h.present.unwrap_or(true))
        };
        let inv = if h.invert { "not " } else { "" };
        let _ = write!(s, ", header {inv}{}{v}", h.name);
    }
    for q in &m.query {
        let v = if let Some(x) = &q.exact {
            format!("={x}")
        } else if let Some(x) = &q.regex {
            format!(" ~ {x}")
        } else {
            format!(" present={}", q.present.unwrap_or(true))
        };
        let _ = write!(s, ", query {}{v}", q.name);
    }
    if !m.methods.is_empty() {
        let _ = write!(s, ", methods {}", m.methods.join("|"));
    }
    if let Some(p) = &m.peer_san {
        let _ = write!(s, ", peer_san {p:?}");
    }
    s
}

/// A compact description of what a route does (without weights, compared apart).
fn describe_action(r: &raw::Route) -> String {
    if let Some(d) = &r.direct_response {
        return format!("direct_response {}", d.status);
    }
    if let Some(x) = &r.redirect {
        let mut s = format!("redirect {}", x.response_code.unwrap_or(301));
        for (k, v) in [
            ("scheme", &x.scheme_redirect),
            ("host", &x.host_redirect),
            ("path", &x.path_redirect),
            ("prefix_rewrite", &x.prefix_rewrite),
        ] {
            if let Some(v) = v {
                let _ = write!(s, " {k} {v}");
            }
        }
        if let Some(p) = x.port_redirect {
            let _ = write!(s, " port {p}");
        }
        if x.strip_query {
            s.push_str(" strip_query");
        }
        return s;
    }
    let Some(a) = &r.route else {
        return "(none)".into();
    };
    let mut s = if let Some(c) = &a.cluster {
        format!("cluster {c}")
    } else if let Some(ws) = &a.weighted_clusters {
        let names: Vec<&str> = ws.iter().map(|w| w.cluster.as_str()).collect();
        format!("weighted_clusters {}", names.join(", "))
    } else if let Some(h) = &a.cluster_header {
        format!("cluster_header {h}")
    } else {
        "(none)".into()
    };
    let _ = write!(s, ", timeout {}", dur(&a.timeout));
    if let Some(r) = &a.retries {
        let _ = write!(s, ", retries {} on {}", r.attempts, r.retry_on.join("|"));
        if !r.retriable_status_codes.is_empty() {
            let codes: Vec<String> = r
                .retriable_status_codes
                .iter()
                .map(u16::to_string)
                .collect();
            let _ = write!(s, " {}", codes.join("|"));
        }
        if let Some(t) = r.per_try_timeout {
            let _ = write!(s, " per try {}", fmt_dur(t.0));
        }
    }
    if let Some(p) = &a.prefix_rewrite {
        let _ = write!(s, ", prefix_rewrite {p}");
    }
    if let Some(h) = &a.host_rewrite {
        let _ = write!(s, ", host_rewrite {h}");
    }
    if !a.upgrades.is_empty() {
        let _ = write!(s, ", upgrades {}", a.upgrades.join("|"));
    }
    for (key, d) in [
        ("stream_idle_timeout", &a.stream_idle_timeout),
        ("max_stream_duration", &a.max_stream_duration),
        ("max_grpc_timeout", &a.max_grpc_timeout),
    ] {
        if let Some(d) = d {
            let _ = write!(s, ", {key} {}", fmt_dur(d.0));
        }
    }
    s
}

fn pct(w: u64, total: u64) -> String {
    if total == 0 {
        return "0%".into();
    }
    let p = w as f64 * 100.0 / total as f64;
    if (p - p.round()).abs() < 1e-9 {
        format!("{}%", p.round() as u64)
    } else {
        format!("{p:.1}%")
    }
}

/// `api_v1 90%->80%, api_v2 10%->20%` when only weights moved; None otherwise.
fn weight_shift(old: &[raw::WeightedCluster], new: &[raw::WeightedCluster]) -> Option<String> {
    let ot: u64 = old.iter().map(|w| u64::from(w.weight)).sum();
    let nt: u64 = new.iter().map(|w| u64::from(w.weight)).sum();
    let mut names: Vec<&str> = old.iter().map(|w| w.cluster.as_str()).collect();
    for w in new {
        if !names.contains(&w.cluster.as_str()) {
            names.push(&w.cluster);
        }
    }
    let get = |ws: &[raw::WeightedCluster], n: &str| {
        ws.iter()
            .filter(|w| w.cluster == n)
            .map(|w| u64::from(w.weight))
            .sum::<u64>()
    };
    let parts: Vec<String> = names
        .iter()
        .map(|n| format!("{n} {}->{}", pct(get(old, n), ot), pct(get(new, n), nt)))
        .collect();
    let changed = names
        .iter()
        .any(|n| pct(get(old, n), ot) != pct(get(new, n), nt));
    changed.then(|| parts.join(", "))
}

fn route_key(r: &raw::Route) -> String {
    match &r.name {
        Some(n) => n.clone(),
        None => format!("[{}]", describe_match(&r.matcher)),
    }
}

/// Compare two read configs: the readable comparison of routes, weights, clusters,
/// filters and TLS first, then every other key of the effective documents.
pub fn diff_sources(old: &crate::config::Source, new: &crate::config::Source) -> Vec<Change> {
    let mut changes = diff(&old.cfg, &old.map, &new.cfg, &new.map);
    let rest =
        super::diff_generic::diff(&old.effective, &old.map, &new.effective, &new.map, &changes);
    changes.extend(rest);
    changes
}

/// Compare two configs.
pub fn diff(old: &raw::Config, om: &SourceMap, new: &raw::Config, nm: &SourceMap) -> Vec<Change> {
    let mut cx = Cx {
        old: om,
        new: nm,
        out: Vec::new(),
    };

    // Admin.
    if old.admin.address != new.admin.address {
        cx.push(
            Kind::Admin,
            '~',
            "admin",
            format!(
                "address {} -> {}",
                opt(&old.admin.address),
                opt(&new.admin.address)
            ),
            "admin.address",
            false,
        );
    }
    if old.admin.token != new.admin.token {
        let state = |t: &Option<String>| if t.is_some() { "set" } else { "unset" };
        cx.push(
            Kind::Admin,
            '~',
            "admin",
            format!(
                "token {} -> {}",
                state(&old.admin.token),
                state(&new.admin.token)
            ),
            "admin",
            false,
        );
    }

    // Listeners.
    for (i, l) in old.listeners.iter().enumerate() {
        if !new.listeners.iter().any(|n| n.name == l.name) {
            cx.push(
                Kind::Listener,
                '-',
                &l.name,
                format!("removed ({} on {})", proto(l.protocol), l.address),
                &format!("listeners.{i}"),
                true,
            );
        }
    }
    for (i, n) in new.listeners.iter().enumerate() {
        let lp = format!("listeners.{i}");
        let Some((oi, o)) = old
            .listeners
            .iter()
            .enumerate()
            .find(|(_, o)| o.name == n.name)
        else {
            cx.push(
                Kind::Listener,
                '+',
                &n.name,
                format!("added ({} on {})", proto(n.protocol), n.address),
                &lp,
                false,
            );
            continue;
        };
        if o.address != n.address {
            cx.push(
                Kind::Listener,
                '~',
                &n.name,
                format!("address {} -> {}", o.address, n.address),
                &format!("{lp}.address"),
                false,
            );
        }
        if o.protocol != n.protocol {
            cx.push(
                Kind::Listener,
                '~',
                &n.name,
                format!("protocol {} -> {}", proto(o.protocol), proto(n.protocol)),
                &format!("{lp}.protocol"),
                false,
            );
        }
        if let (Some(a), Some(b)) = (&o.tcp, &n.tcp) {
            if a.cluster != b.cluster {
                cx.push(
                    Kind::Listener,
                    '~',
                    &n.name,
                    format!("tcp cluster {} -> {}", a.cluster, b.cluster),
                    &format!("{lp}.tcp.cluster"),
                    false,
                );
            }
        }
        listener_tls(&mut cx, &n.name, &lp, o.tls.as_ref(), n.tls.as_ref());
        filters(&mut cx, &n.name, &lp, o, n);
        virtual_hosts(&mut cx, &n.name, &lp, oi, o, n);
        thrift_routes(&mut cx, &n.name, &lp, oi, o, n);
    }

    // Clusters.
    for (i, c) in old.clusters.iter().enumerate() {
        if !new.clusters.iter().any(|n| n.name == c.name) {
            cx.push(
                Kind::Cluster,
                '-',
                &c.name,
                "removed".into(),
                &format!("clusters.{i}"),
                true,
            );
        }
    }
    for (i, n) in new.clusters.iter().enumerate() {
        let cp = format!("clusters.{i}");
        let Some(o) = old.clusters.iter().find(|o| o.name == n.name) else {
            cx.push(
                Kind::Cluster,
                '+',
                &n.name,
                format!("added ({})", n.endpoints.join(", ")),
                &cp,
                false,
            );
            continue;
        };
        let added: Vec<&String> = n
            .endpoints
            .iter()
            .filter(|e| !o.endpoints.contains(e))
            .collect();
        let removed: Vec<&String> = o
            .endpoints
            .iter()
            .filter(|e| !n.endpoints.contains(e))
            .collect();
        if !added.is_empty() || !removed.is_empty() {
            let mut parts = Vec::new();
            if !added.is_empty() {
                parts.push(format!(
                    "+{}",
                    added
                        .iter()
                        .map(|s| s.as_str())
                        .collect::<Vec<_>>()
                        .join(", +")
                ));
            }
            if !removed.is_empty() {
                parts.push(format!(
                    "-{}",
                    removed
                        .iter()
                        .map(|s| s.as_str())
                        .collect::<Vec<_>>()
                        .join(", -")
                ));
            }
            cx.push(
                Kind::Cluster,
                '~',
                &n.name,
                format!("endpoints {}", parts.join(", ")),
                &format!("{cp}.endpoints"),
                false,
            );
        }
        let mut field = |what: &str, a: String, b: String, key: &str| {
            if a != b {
                cx.push(
                    Kind::Cluster,
                    '~',
                    &n.name,
                    format!("{what} {a} -> {b}"),
                    &format!("{cp}.{key}"),
                    false,
                );
            }
        };
        field(
            "lb_policy",
            format!("{:?}", o.lb_policy).to_lowercase(),
            format!("{:?}", n.lb_policy).to_lowercase(),
            "lb_policy",
        );
        field(
            "protocol",
            format!("{:?}", o.protocol).to_lowercase(),
            format!("{:?}", n.protocol).to_lowercase(),
            "protocol",
        );
        field(
            "connect_timeout",
            dur(&o.connect_timeout),
            dur(&n.connect_timeout),
            "connect_timeout",
        );
        cluster_tls(&mut cx, &n.name, &cp, o.tls.as_ref(), n.tls.as_ref());
    }
    cx.out
}

fn proto(p: raw::ListenerProtocol) -> &'static str {
    match p {
        raw::ListenerProtocol::Http => "http",
        raw::ListenerProtocol::Tcp => "tcp",
        raw::ListenerProtocol::Thrift => "thrift",
    }
}

fn listener_tls(
    cx: &mut Cx<'_>,
    name: &str,
    lp: &str,
    o: Option<&raw::ListenerTls>,
    n: Option<&raw::ListenerTls>,
) {
    let tp = format!("{lp}.tls");
    match (o, n) {
        (None, None) => {}
        (None, Some(_)) => cx.push(
            Kind::Tls,
            '+',
            name,
            "TLS termination added".into(),
            &tp,
            false,
        ),
        (Some(_), None) => cx.push(
            Kind::Tls,
            '-',
            name,
            "TLS termination removed: the listener is now plaintext".into(),
            lp,
            false,
        ),
        (Some(a), Some(b)) => {
            let sans = |t: &raw::ListenerTls| format!("{:?}", t.allowed_client_sans);
            let pairs = [
                (
                    "require_client_cert",
                    opt(&a.require_client_cert),
                    opt(&b.require_client_cert),
                ),
                ("client_ca", opt(&a.client_ca), opt(&b.client_ca)),
                ("allowed_client_sans", sans(a), sans(b)),
                ("min_version", opt(&a.min_version), opt(&b.min_version)),
                ("alpn", format!("{:?}", a.alpn), format!("{:?}", b.alpn)),
                ("cert_chain", opt(&a.cert_chain), opt(&b.cert_chain)),
                (
                    "forward_client_cert",
                    format!("{:?}", a.forward_client_cert),
                    format!("{:?}", b.forward_client_cert),
                ),
            ];
            for (k, x, y) in pairs {
                if x != y {
                    cx.push(
                        Kind::Tls,
                        '~',
                        name,
                        format!("{k} {x} -> {y}"),
                        &format!("{tp}.{k}"),
                        false,
                    );
                }
            }
        }
    }
}

fn cluster_tls(
    cx: &mut Cx<'_>,
    name: &str,
    cp: &str,
    o: Option<&raw::ClusterTls>,
    n: Option<&raw::ClusterTls>,
) {
    let tp = format!("{cp}.tls");
    match (o, n) {
        (None, None) => {}
        (None, Some(_)) => cx.push(
            Kind::Tls,
            '+',
            name,
            "upstream TLS added".into(),
            &tp,
            false,
        ),
        (Some(_), None) => cx.push(
            Kind::Tls,
            '-',
            name,
            "upstream TLS removed: traffic to this cluster is now plaintext".into(),
            cp,
            false,
        ),
        (Some(a), Some(b)) => {
            let mtls = |t: &raw::ClusterTls| t.cert_chain.is_some().to_string();
            let pairs = [
                ("ca", opt(&a.ca), opt(&b.ca)),
                ("sni", opt(&a.sni), opt(&b.sni)),
                (
                    "verify_sans",
                    format!("{:?}", a.verify_sans),
                    format!("{:?}", b.verify_sans),
                ),
                ("mtls", mtls(a), mtls(b)),
            ];
            for (k, x, y) in pairs {
                if x != y {
                    cx.push(Kind::Tls, '~', name, format!("{k} {x} -> {y}"), &tp, false);
                }
            }
        }
    }
}

fn filters(cx: &mut Cx<'_>, name: &str, lp: &str, o: &raw::Listener, n: &raw::Listener) {
    let (a, b) = (chain_names(o), chain_names(n));
    if a != b {
        let show = |v: &[String]| {
            if v.is_empty() {
                "(none)".to_string()
            } else {
                v.join(", ")
            }
        };
        cx.push(
            Kind::Filter,
            '~',
            name,
            format!("chain {} -> {}", show(&a), show(&b)),
            &format!("{lp}.filters"),
            false,
        );
    }
    let cfg = |l: &raw::Listener| -> BTreeMap<String, serde_yaml::Value> {
        l.filters
            .iter()
            .flat_map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())))
            .collect()
    };
    let (ca, cb) = (cfg(o), cfg(n));
    for (j, item) in n.filters.iter().enumerate() {
        for (f, v) in item {
            if let Some(old) = ca.get(f) {
                if old != v {
                    cx.push(
                        Kind::Filter,
                        '~',
                        name,
                        format!("filter `{f}` config changed"),
                        &format!("{lp}.filters.{j}.{f}"),
                        false,
                    );
                }
            }
        }
    }
    let _ = cb;
}

fn virtual_hosts(
    cx: &mut Cx<'_>,
    lname: &str,
    lp: &str,
    oi: usize,
    o: &raw::Listener,
    n: &raw::Listener,
) {
    for (v, ov) in o.virtual_hosts.iter().enumerate() {
        if !n.virtual_hosts.iter().any(|x| x.name == ov.name) {
            cx.push(
                Kind::Route,
                '-',
                &format!("{lname}/{}", ov.name),
                "virtual host removed".into(),
                &format!("listeners.{oi}.virtual_hosts.{v}"),
                true,
            );
        }
    }
    for (v, nv) in n.virtual_hosts.iter().enumerate() {
        let vp = format!("{lp}.virtual_hosts.{v}");
        let subject = format!("{lname}/{}", nv.name);
        let Some((ovi, ov)) = o
            .virtual_hosts
            .iter()
            .enumerate()
            .find(|(_, x)| x.name == nv.name)
        else {
            cx.push(
                Kind::Route,
                '+',
                &subject,
                format!(
                    "virtual host added ({}; {})",
                    nv.domains.join(", "),
                    super::plural(nv.routes.len(), "route")
                ),
                &vp,
                false,
            );
            continue;
        };
        if ov.domains != nv.domains {
            cx.push(
                Kind::Route,
                '~',
                &subject,
                format!(
                    "domains {} -> {}",
                    ov.domains.join(", "),
                    nv.domains.join(", ")
                ),
                &format!("{vp}.domains"),
                false,
            );
        }
        let okeys: Vec<String> = ov.routes.iter().map(route_key).collect();
        let nkeys: Vec<String> = nv.routes.iter().map(route_key).collect();
        let oset: BTreeSet<&String> = okeys.iter().collect();
        let nset: BTreeSet<&String> = nkeys.iter().collect();
        for (r, k) in okeys.iter().enumerate() {
            if !nset.contains(k) {
                cx.push(
                    Kind::Route,
                    '-',
                    &format!("{subject}/{k}"),
                    format!("removed ({})", describe_match(&ov.routes[r].matcher)),
                    &format!("listeners.{oi}.virtual_hosts.{ovi}.routes.{r}"),
                    true,
                );
            }
        }
        for (r, k) in nkeys.iter().enumerate() {
            let rp = format!("{vp}.routes.{r}");
            let nr = &nv.routes[r];
            let Some(or) = okeys.iter().position(|x| x == k).map(|i| &ov.routes[i]) else {
                cx.push(
                    Kind::Route,
                    '+',
                    &format!("{subject}/{k}"),
                    format!(
                        "added ({} -> {})",
                        describe_match(&nr.matcher),
                        describe_action(nr)
                    ),
                    &rp,
                    false,
                );
                continue;
            };
            route_changes(cx, &format!("{subject}/{k}"), &rp, or, nr);
        }
        // Order among the routes both sides have: first-match-wins makes it behaviour.
        let common_old: Vec<&String> = okeys.iter().filter(|k| nset.contains(k)).collect();
        let common_new: Vec<&String> = nkeys.iter().filter(|k| oset.contains(k)).collect();
        if common_old != common_new {
            let show = |v: &[&String]| v.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ");
            cx.push(
                Kind::Route,
                '~',
                &subject,
                format!(
                    "routes reordered: {} -> {}",
                    show(&common_old),
                    show(&common_new)
                ),
                &format!("{vp}.routes"),
                false,
            );
        }
    }
}

fn route_changes(cx: &mut Cx<'_>, subject: &str, rp: &str, o: &raw::Route, n: &raw::Route) {
    let (ma, mb) = (describe_match(&o.matcher), describe_match(&n.matcher));
    if ma != mb {
        cx.push(
            Kind::Route,
            '~',
            subject,
            format!("match {ma} -> {mb}"),
            &format!("{rp}.match"),
            false,
        );
    }
    let ws = |r: &raw::Route| r.route.as_ref().and_then(|a| a.weighted_clusters.clone());
    if let (Some(a), Some(b)) = (ws(o), ws(n)) {
        if let Some(s) = weight_shift(&a, &b) {
            cx.push(
                Kind::Route,
                '~',
                subject,
                format!("weights {s}"),
                &format!("{rp}.route.weighted_clusters"),
                false,
            );
        }
    }
    let (aa, ab) = (describe_action(o), describe_action(n));
    if aa != ab {
        cx.push(
            Kind::Route,
            '~',
            subject,
            format!("action {aa} -> {ab}"),
            rp,
            false,
        );
    }
    if o.filter_overrides != n.filter_overrides {
        let keys = |r: &raw::Route| {
            r.filter_overrides
                .iter()
                .map(|(k, v)| {
                    if v.as_str() == Some("disabled") {
                        format!("{k}: disabled")
                    } else {
                        format!("{k}: override")
                    }
                })
                .collect::<Vec<_>>()
        };
        let show = |v: Vec<String>| {
            if v.is_empty() {
                "(none)".to_string()
            } else {
                v.join(", ")
            }
        };
        cx.push(
            Kind::Filter,
            '~',
            subject,
            format!("filter overrides {} -> {}", show(keys(o)), show(keys(n))),
            &format!("{rp}.filter_overrides"),
            false,
        );
    }
}

fn thrift_routes(
    cx: &mut Cx<'_>,
    lname: &str,
    lp: &str,
    oi: usize,
    o: &raw::Listener,
    n: &raw::Listener,
) {
    let (Some(ot), Some(nt)) = (&o.thrift, &n.thrift) else {
        return;
    };
    let key =
        |i: usize, r: &raw::ThriftRoute| r.name.clone().unwrap_or_else(|| format!("routes.{i}"));
    let desc = |r: &raw::ThriftRoute| {
        let mut parts = Vec::new();
        if let Some(m) = &r.matcher.method {
            parts.push(format!("method {m}"));
        }
        if let Some(m) = &r.matcher.method_prefix {
            parts.push(format!("method_prefix {m}"));
        }
        if let Some(m) = &r.matcher.service {
            parts.push(format!("service {m}"));
        }
        for h in &r.matcher.headers {
            parts.push(format!("header {}", h.name));
        }
        if parts.is_empty() {
            "every call".to_string()
        } else {
            parts.join(", ")
        }
    };
    let target = |r: &raw::ThriftRoute| match (&r.route.cluster, &r.route.weighted_clusters) {
        (Some(c), _) => format!("cluster {c}"),
        (_, Some(ws)) => format!(
            "weighted_clusters {}",
            ws.iter()
                .map(|w| w.cluster.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ),
        _ => "(none)".into(),
    };
    let okeys: Vec<String> = ot
        .routes
        .iter()
        .enumerate()
        .map(|(i, r)| key(i, r))
        .collect();
    let nkeys: Vec<String> = nt
        .routes
        .iter()
        .enumerate()
        .map(|(i, r)| key(i, r))
        .collect();
    for (i, k) in okeys.iter().enumerate() {
        if !nkeys.contains(k) {
            cx.push(
                Kind::Route,
                '-',
                &format!("{lname}/{k}"),
                format!("removed ({})", desc(&ot.routes[i])),
                &format!("listeners.{oi}.thrift.routes.{i}"),
                true,
            );
        }
    }
    for (i, k) in nkeys.iter().enumerate() {
        let rp = format!("{lp}.thrift.routes.{i}");
        let nr = &nt.routes[i];
        let subject = format!("{lname}/{k}");
        let Some(or) = okeys.iter().position(|x| x == k).map(|j| &ot.routes[j]) else {
            cx.push(
                Kind::Route,
                '+',
                &subject,
                format!("added ({} -> {})", desc(nr), target(nr)),
                &rp,
                false,
            );
            continue;
        };
        if desc(or) != desc(nr) {
            cx.push(
                Kind::Route,
                '~',
                &subject,
                format!("match {} -> {}", desc(or), desc(nr)),
                &format!("{rp}.match"),
                false,
            );
        }
        if let (Some(a), Some(b)) = (&or.route.weighted_clusters, &nr.route.weighted_clusters) {
            if let Some(s) = weight_shift(a, b) {
                cx.push(
                    Kind::Route,
                    '~',
                    &subject,
                    format!("weights {s}"),
                    &format!("{rp}.route.weighted_clusters"),
                    false,
                );
            }
        }
        if target(or) != target(nr) || or.route.timeout != nr.route.timeout {
            cx.push(
                Kind::Route,
                '~',
                &subject,
                format!(
                    "action {}, timeout {} -> {}, timeout {}",
                    target(or),
                    dur(&or.route.timeout),
                    target(nr),
                    dur(&nr.route.timeout)
                ),
                &format!("{rp}.route"),
                false,
            );
        }
    }
}

/// Text for reviewers: one change a line, grouped by kind.
pub fn to_text(changes: &[Change]) -> String {
    if changes.is_empty() {
        return "no behaviour changes\n".into();
    }
    let mut s = String::new();
    for c in changes {
        let _ = writeln!(
            s,
            "{} {} {}: {}",
            c.sign,
            c.kind.as_str(),
            c.subject,
            c.message
        );
    }
    let _ = writeln!(s, "{}", super::plural(changes.len(), "change"));
    s
}

pub fn to_json(changes: &[Change]) -> serde_json::Value {
    serde_json::json!({
        "equal": changes.is_empty(),
        "changes": changes.iter().map(|c| serde_json::json!({
            "kind": c.kind.as_str(),
            "change": match c.sign { '+' => "added", '-' => "removed", _ => "changed" },
            "subject": c.subject,
            "message": c.message,
            "file": c.at.file, "line": c.at.line, "column": c.at.col,
            "severity": "info", "code": format!("diff-{}", c.kind.as_str()),
        })).collect::<Vec<_>>(),
    })
}
