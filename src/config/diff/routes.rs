//! The readable diff of a listener's routes: virtual hosts, HTTP routes (matched by
//! name, else by their match) and Thrift routes.

use std::collections::BTreeSet;
use std::fmt::Write as _;

use super::{dur, list_or_none, pair_up, Cx, Kind, Pair};
use crate::config::duration;
use crate::config::raw;
use crate::config::words::{percent, plural};

/// A listener at its index in its config.
type At<'a> = (usize, &'a raw::Listener);

/// A compact, canonical description of a route match.
pub fn describe_match(m: &raw::RouteMatch) -> String {
    let mut s = String::new();
    for (what, p) in [
        ("prefix", &m.prefix),
        ("path", &m.path),
        ("regex", &m.regex),
    ] {
        if let Some(p) = p {
            let _ = write!(s, "{what} {p}");
        }
    }
    for h in &m.headers {
        let inv = if h.invert { "not " } else { "" };
        let _ = write!(s, ", header {inv}{}{}", h.name, header_test(h));
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

/// What a header match tests: `=v`, ` prefix v`, ` ~ re`, ` present=true`...
fn header_test(h: &raw::HeaderMatcher) -> String {
    if let Some(x) = &h.exact {
        format!("={x}")
    } else if let Some(x) = &h.prefix {
        format!(" prefix {x}")
    } else if let Some(x) = &h.suffix {
        format!(" suffix {x}")
    } else if let Some(x) = &h.regex {
        format!(" ~ {x}")
    } else {
        format!(" present={}", h.present.unwrap_or(true))
    }
}

/// A compact description of what a route does (without weights, compared apart).
fn describe_action(r: &raw::Route) -> String {
    if let Some(d) = &r.direct_response {
        return format!("direct_response {}", d.status);
    }
    if let Some(x) = &r.redirect {
        return describe_redirect(x);
    }
    match &r.route {
        Some(a) => describe_forward(a),
        None => "(none)".into(),
    }
}

fn describe_redirect(x: &raw::Redirect) -> String {
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
    s
}

fn describe_forward(a: &raw::RouteAction) -> String {
    let mut s = if let Some(c) = &a.cluster {
        format!("cluster {c}")
    } else if let Some(ws) = &a.weighted_clusters {
        format!("weighted_clusters {}", cluster_names(ws))
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
            let _ = write!(s, " per try {}", duration::format(t.0));
        }
    }
    for (key, v) in [
        ("prefix_rewrite", &a.prefix_rewrite),
        ("host_rewrite", &a.host_rewrite),
    ] {
        if let Some(v) = v {
            let _ = write!(s, ", {key} {v}");
        }
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
            let _ = write!(s, ", {key} {}", duration::format(d.0));
        }
    }
    s
}

/// `a, b`: the clusters of a weighted split, in order.
fn cluster_names(ws: &[raw::WeightedCluster]) -> String {
    let names: Vec<&str> = ws.iter().map(|w| w.cluster.as_str()).collect();
    names.join(", ")
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
    let shares = |n: &&str| (percent(get(old, n), ot), percent(get(new, n), nt));
    let changed = names.iter().map(shares).any(|(a, b)| a != b);
    let parts: Vec<String> = names
        .iter()
        .map(|n| {
            let (a, b) = shares(n);
            format!("{n} {a}->{b}")
        })
        .collect();
    changed.then(|| parts.join(", "))
}

/// `weights ...` when only the shares of a weighted split moved.
fn weights(
    cx: &mut Cx<'_>,
    subject: &str,
    rp: &str,
    o: Option<&Vec<raw::WeightedCluster>>,
    n: Option<&Vec<raw::WeightedCluster>>,
) {
    let (Some(a), Some(b)) = (o, n) else {
        return;
    };
    if let Some(s) = weight_shift(a, b) {
        let at = format!("{rp}.route.weighted_clusters");
        cx.push(
            Kind::Route,
            '~',
            subject,
            format!("weights {s}"),
            &at,
            false,
        );
    }
}

fn route_key(r: &raw::Route) -> String {
    match &r.name {
        Some(n) => n.clone(),
        None => format!("[{}]", describe_match(&r.matcher)),
    }
}

/// The virtual hosts of a listener on both sides, matched by name.
pub(super) fn virtual_hosts(cx: &mut Cx<'_>, lname: &str, (oi, o): At<'_>, (li, n): At<'_>) {
    pair_up(
        &o.virtual_hosts,
        &n.virtual_hosts,
        |_, v| v.name.clone(),
        |p| match p {
            Pair::Removed(v, ov) => cx.removed(
                Kind::Route,
                &format!("{lname}/{}", ov.name),
                "virtual host removed".into(),
                &format!("listeners.{oi}.virtual_hosts.{v}"),
            ),
            Pair::Added(v, nv) => cx.added(
                Kind::Route,
                &format!("{lname}/{}", nv.name),
                format!(
                    "virtual host added ({}; {})",
                    nv.domains.join(", "),
                    plural(nv.routes.len(), "route")
                ),
                &format!("listeners.{li}.virtual_hosts.{v}"),
            ),
            Pair::Both((ov_i, ov), (v, nv)) => {
                let subject = format!("{lname}/{}", nv.name);
                let old = format!("listeners.{oi}.virtual_hosts.{ov_i}");
                let new = format!("listeners.{li}.virtual_hosts.{v}");
                virtual_host(cx, &subject, (&old, ov), (&new, nv));
            }
        },
    );
}

/// One virtual host on both sides (each with its path): domains, routes, order.
fn virtual_host(
    cx: &mut Cx<'_>,
    subject: &str,
    (op, ov): (&str, &raw::VirtualHost),
    (vp, nv): (&str, &raw::VirtualHost),
) {
    let (a, b) = (ov.domains.join(", "), nv.domains.join(", "));
    cx.field(
        Kind::Route,
        subject,
        "domains",
        &a,
        &b,
        &format!("{vp}.domains"),
    );
    pair_up(
        &ov.routes,
        &nv.routes,
        |_, r| route_key(r),
        |p| match p {
            Pair::Removed(r, or) => cx.removed(
                Kind::Route,
                &format!("{subject}/{}", route_key(or)),
                format!("removed ({})", describe_match(&or.matcher)),
                &format!("{op}.routes.{r}"),
            ),
            Pair::Added(r, nr) => cx.added(
                Kind::Route,
                &format!("{subject}/{}", route_key(nr)),
                format!(
                    "added ({} -> {})",
                    describe_match(&nr.matcher),
                    describe_action(nr)
                ),
                &format!("{vp}.routes.{r}"),
            ),
            Pair::Both((_, or), (r, nr)) => {
                let rs = format!("{subject}/{}", route_key(nr));
                route_changes(cx, &rs, &format!("{vp}.routes.{r}"), or, nr);
            }
        },
    );
    route_order(cx, subject, vp, &ov.routes, &nv.routes);
}

/// Order among the routes both sides have: first-match-wins makes it behaviour.
fn route_order(cx: &mut Cx<'_>, subject: &str, vp: &str, o: &[raw::Route], n: &[raw::Route]) {
    let okeys: Vec<String> = o.iter().map(route_key).collect();
    let nkeys: Vec<String> = n.iter().map(route_key).collect();
    let oset: BTreeSet<&String> = okeys.iter().collect();
    let nset: BTreeSet<&String> = nkeys.iter().collect();
    let common_old: Vec<String> = okeys.iter().filter(|k| nset.contains(k)).cloned().collect();
    let common_new: Vec<String> = nkeys.iter().filter(|k| oset.contains(k)).cloned().collect();
    if common_old != common_new {
        let msg = format!(
            "routes reordered: {} -> {}",
            common_old.join(", "),
            common_new.join(", ")
        );
        cx.push(
            Kind::Route,
            '~',
            subject,
            msg,
            &format!("{vp}.routes"),
            false,
        );
    }
}

fn route_changes(cx: &mut Cx<'_>, subject: &str, rp: &str, o: &raw::Route, n: &raw::Route) {
    let (ma, mb) = (describe_match(&o.matcher), describe_match(&n.matcher));
    cx.field(
        Kind::Route,
        subject,
        "match",
        &ma,
        &mb,
        &format!("{rp}.match"),
    );
    let ws = |r: &raw::Route| r.route.as_ref().and_then(|a| a.weighted_clusters.clone());
    weights(cx, subject, rp, ws(o).as_ref(), ws(n).as_ref());
    let (aa, ab) = (describe_action(o), describe_action(n));
    cx.field(Kind::Route, subject, "action", &aa, &ab, rp);
    if o.filter_overrides != n.filter_overrides {
        let (a, b) = (list_or_none(&overrides(o)), list_or_none(&overrides(n)));
        let msg = format!("filter overrides {a} -> {b}");
        let at = format!("{rp}.filter_overrides");
        cx.push(Kind::Filter, '~', subject, msg, &at, false);
    }
}

/// `name: disabled` / `name: override` for each of a route's `filter_overrides`.
fn overrides(r: &raw::Route) -> Vec<String> {
    r.filter_overrides
        .iter()
        .map(|(k, v)| match v.as_str() {
            Some("disabled") => format!("{k}: disabled"),
            _ => format!("{k}: override"),
        })
        .collect()
}

fn thrift_key(i: usize, r: &raw::ThriftRoute) -> String {
    r.name.clone().unwrap_or_else(|| format!("routes.{i}"))
}

/// What a Thrift route matches: `method m, service s, header h` or `every call`.
fn thrift_match(r: &raw::ThriftRoute) -> String {
    let m = &r.matcher;
    let mut parts = Vec::new();
    for (what, v) in [
        ("method", &m.method),
        ("method_prefix", &m.method_prefix),
        ("service", &m.service),
    ] {
        if let Some(v) = v {
            parts.push(format!("{what} {v}"));
        }
    }
    parts.extend(m.headers.iter().map(|h| format!("header {}", h.name)));
    if parts.is_empty() {
        "every call".to_string()
    } else {
        parts.join(", ")
    }
}

fn thrift_target(r: &raw::ThriftRoute) -> String {
    match (&r.route.cluster, &r.route.weighted_clusters) {
        (Some(c), _) => format!("cluster {c}"),
        (_, Some(ws)) => format!("weighted_clusters {}", cluster_names(ws)),
        _ => "(none)".into(),
    }
}

/// The Thrift routes of a listener on both sides, matched by name (else index).
pub(super) fn thrift_routes(cx: &mut Cx<'_>, lname: &str, (oi, o): At<'_>, (li, n): At<'_>) {
    let (Some(ot), Some(nt)) = (&o.thrift, &n.thrift) else {
        return;
    };
    pair_up(&ot.routes, &nt.routes, thrift_key, |p| match p {
        Pair::Removed(i, or) => cx.removed(
            Kind::Route,
            &format!("{lname}/{}", thrift_key(i, or)),
            format!("removed ({})", thrift_match(or)),
            &format!("listeners.{oi}.thrift.routes.{i}"),
        ),
        Pair::Added(i, nr) => cx.added(
            Kind::Route,
            &format!("{lname}/{}", thrift_key(i, nr)),
            format!("added ({} -> {})", thrift_match(nr), thrift_target(nr)),
            &format!("listeners.{li}.thrift.routes.{i}"),
        ),
        Pair::Both((_, or), (i, nr)) => {
            let subject = format!("{lname}/{}", thrift_key(i, nr));
            let rp = format!("listeners.{li}.thrift.routes.{i}");
            thrift_route(cx, &subject, &rp, or, nr);
        }
    });
}

/// One Thrift route on both sides: its match, weights, target and timeout.
fn thrift_route(
    cx: &mut Cx<'_>,
    subject: &str,
    rp: &str,
    or: &raw::ThriftRoute,
    nr: &raw::ThriftRoute,
) {
    let (a, b) = (thrift_match(or), thrift_match(nr));
    cx.field(
        Kind::Route,
        subject,
        "match",
        &a,
        &b,
        &format!("{rp}.match"),
    );
    let (ow, nw) = (&or.route.weighted_clusters, &nr.route.weighted_clusters);
    weights(cx, subject, rp, ow.as_ref(), nw.as_ref());
    if thrift_target(or) != thrift_target(nr) || or.route.timeout != nr.route.timeout {
        let msg = format!(
            "action {}, timeout {} -> {}, timeout {}",
            thrift_target(or),
            dur(&or.route.timeout),
            thrift_target(nr),
            dur(&nr.route.timeout)
        );
        cx.push(
            Kind::Route,
            '~',
            subject,
            msg,
            &format!("{rp}.route"),
            false,
        );
    }
}
