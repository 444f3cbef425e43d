//! A route's action: `route` (target, retries, timeouts, upgrades, mirrors),
//! `redirect` or `direct_response`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderName, HeaderValue, StatusCode};

use super::{unknown_cluster, Cx};
use crate::config::load::did_you_mean;
use crate::config::raw;
use crate::router::{
    Action, DirectResponse, Matcher, PathMatch, Redirect, RetryPolicy, RouteAction, Target,
};
use crate::stats::Stats;
use crate::upstream::Cluster;

/// Default `stream_idle_timeout` of a route (Envoy's default too).
pub const DEFAULT_STREAM_IDLE_TIMEOUT: Duration = Duration::from_secs(300);

pub(super) const RETRY_ON: &[&str] = &[
    "5xx",
    "gateway-error",
    "connect-failure",
    "reset",
    "retriable-status-codes",
    "cancelled",
    "deadline-exceeded",
    "resource-exhausted",
    "unavailable",
    "internal",
];

/// The gRPC `retry_on` conditions (Envoy's names) and the code each reads.
pub(super) const GRPC_RETRY_ON: &[(&str, attache_filters::grpc::Code)] = {
    use attache_filters::grpc::Code;
    &[
        ("cancelled", Code::Cancelled),
        ("deadline-exceeded", Code::DeadlineExceeded),
        ("resource-exhausted", Code::ResourceExhausted),
        ("unavailable", Code::Unavailable),
        ("internal", Code::Internal),
    ]
};

/// A route's action: exactly one of `direct_response`, `redirect` or `route`.
pub(super) fn compile_action(
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
        return direct_response(cx, &format!("{rp}.direct_response"), d);
    }
    if let Some(r) = &route.redirect {
        return redirect(cx, &format!("{rp}.redirect"), r, matcher);
    }
    let a = route.route.as_ref()?;
    route_action(cx, &format!("{rp}.route"), a, matcher, clusters, stats)
}

/// `direct_response`: a status from 200 to 599, a body and its content type.
fn direct_response(cx: &mut Cx<'_>, dp: &str, d: &raw::DirectResponse) -> Option<Action> {
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
    Some(Action::Direct(DirectResponse {
        status,
        body: bytes::Bytes::from(d.body.clone().unwrap_or_default()),
        content_type,
    }))
}

/// `redirect`: a 3xx code, and a path rewrite that fits the route's match.
fn redirect(cx: &mut Cx<'_>, dp: &str, r: &raw::Redirect, matcher: &Matcher) -> Option<Action> {
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
            dp,
            "give at most one of `path_redirect` and `prefix_rewrite`",
        );
    }
    if r.prefix_rewrite.is_some() && !matches!(matcher.path, PathMatch::Prefix(_)) {
        cx.err(
            &format!("{dp}.prefix_rewrite"),
            "prefix_rewrite needs a `prefix` match",
        );
    }
    Some(Action::Redirect(Redirect {
        scheme: r.scheme_redirect.clone(),
        host: r.host_redirect.clone(),
        port: r.port_redirect,
        path: r.path_redirect.clone(),
        prefix_rewrite: r.prefix_rewrite.clone(),
        status,
        strip_query: r.strip_query,
    }))
}

/// `route`: the target, retries, timeouts, rewrites, upgrades and mirrors.
fn route_action(
    cx: &mut Cx<'_>,
    ap: &str,
    a: &raw::RouteAction,
    matcher: &Matcher,
    clusters: &Arc<HashMap<String, Arc<Cluster>>>,
    stats: &Stats,
) -> Option<Action> {
    let n = [
        a.cluster.is_some(),
        a.weighted_clusters.is_some(),
        a.cluster_header.is_some(),
    ]
    .iter()
    .filter(|b| **b)
    .count();
    if n != 1 {
        cx.err(ap, "a route action needs exactly one of `cluster`, `weighted_clusters` or `cluster_header`");
        return None;
    }
    let target = target(cx, ap, a, clusters)?;
    let retry = a
        .retries
        .as_ref()
        .map(|r| retry_policy(cx, &format!("{ap}.retries"), r));
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
    let nonzero = |cx: &mut Cx<'_>, key: &str, d: Option<crate::config::duration::Dur>| match d {
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
    let upgrades = upgrades(cx, ap, a, &target);
    let mirrors = compile_mirrors(cx, ap, &a.mirror, timeout, clusters, stats);
    Some(Action::Route(RouteAction {
        target,
        timeout,
        retry,
        max_grpc_timeout,
        stream_idle_timeout,
        max_stream_duration,
        prefix_rewrite: a.prefix_rewrite.clone(),
        host_rewrite,
        upgrades,
        mirrors,
    }))
}

/// The upstream: one `cluster`, `weighted_clusters`, or a `cluster_header`.
fn target(
    cx: &mut Cx<'_>,
    ap: &str,
    a: &raw::RouteAction,
    clusters: &Arc<HashMap<String, Arc<Cluster>>>,
) -> Option<Target> {
    Some(if let Some(c) = &a.cluster {
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
    })
}

/// `retries`: the conditions by name (Envoy's), the statuses and the bounds.
fn retry_policy(cx: &mut Cx<'_>, rp: &str, r: &raw::Retries) -> RetryPolicy {
    let mut pol = RetryPolicy {
        attempts: r.attempts,
        on_5xx: false,
        on_gateway_error: false,
        on_connect_failure: false,
        on_reset: false,
        statuses: r.retriable_status_codes.clone(),
        per_try_timeout: r.per_try_timeout.map(|d| d.0),
        grpc_codes: 0,
    };
    if r.attempts > 10 {
        cx.err(&format!("{rp}.attempts"), "attempts must be at most 10");
    }
    for (i, on) in r.retry_on.iter().enumerate() {
        match on.as_str() {
            "5xx" => pol.on_5xx = true,
            "gateway-error" => pol.on_gateway_error = true,
            "connect-failure" => pol.on_connect_failure = true,
            "reset" => pol.on_reset = true,
            "retriable-status-codes" => {}
            other if GRPC_RETRY_ON.iter().any(|(n, _)| *n == other) => {
                for (n, code) in GRPC_RETRY_ON {
                    if *n == other {
                        pol.grpc_codes |= 1 << (*code as u32);
                    }
                }
            }
            other => {
                let hint = did_you_mean(other, RETRY_ON.iter().copied())
                    .map(|s| format!("; did you mean `{s}`?"))
                    .unwrap_or_else(|| format!("; expected one of {}", RETRY_ON.join(", ")));
                cx.err(
                    &format!("{rp}.retry_on.{i}"),
                    format!("unknown retry condition `{other}`{hint}"),
                );
            }
        }
    }
    for (i, s) in r.retriable_status_codes.iter().enumerate() {
        if !(100..=599).contains(s) {
            cx.err(
                &format!("{rp}.retriable_status_codes.{i}"),
                format!("{s} is not an HTTP status"),
            );
        }
    }
    if !r.retriable_status_codes.is_empty()
        && !r.retry_on.iter().any(|s| s == "retriable-status-codes")
    {
        pol.statuses.clear();
        cx.err(
            &format!("{rp}.retriable_status_codes"),
            "retriable_status_codes needs `retriable-status-codes` in retry_on",
        );
    }
    pol
}

/// `upgrades`: protocol tokens, lower-cased; tunnels need an HTTP/1.1 upstream.
fn upgrades(cx: &mut Cx<'_>, ap: &str, a: &raw::RouteAction, target: &Target) -> Box<[Box<str>]> {
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
    upgrades.into_boxed_slice()
}

/// `route.mirror`: known clusters, a percent from 0 to 100, bounds above zero.
pub(super) fn compile_mirrors(
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
