//! "Which route would this request take, and what happens then?" — evaluated with
//! the real compiled router and the proxy's own rewrite and redirect functions, so
//! the answer is what the data path does. Used by `attache explain`, the admin
//! endpoint's `/explain` and `attache test-routes`.

use std::fmt::Write as _;
use std::time::Duration;

use http::{HeaderMap, HeaderName, HeaderValue, Method};

use crate::config::duration;
use crate::config::snapshot::HttpSettings;
use crate::config::words::percent;
use crate::config::Snapshot;
use crate::router::{self, Action, FilterOverride, RequestView, RouteAction, Target};
use crate::thrift::ListenerCtx;

/// A request to explain.
#[derive(Debug, Clone, Default)]
pub struct Request {
    /// Optional when the config has exactly one listener.
    pub listener: Option<String>,
    pub host: String,
    /// May carry a `?query`.
    pub path: String,
    /// HTTP method (default GET); on a Thrift listener, the Thrift method name.
    pub method: Option<String>,
    pub headers: Vec<(String, String)>,
    pub query: Vec<(String, String)>,
    /// Thrift: the multiplexed service name.
    pub service: Option<String>,
}

/// What the proxy does with a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Act {
    /// No virtual host or route matched: 404 (NR).
    NoRoute,
    /// The path is rejected before routing (400).
    Rejected(String),
    Cluster(String),
    Weighted(Vec<(String, u64)>),
    /// The cluster named by a request header (`resolved` from this request).
    ClusterHeader {
        header: String,
        resolved: Option<String>,
    },
    Redirect {
        status: u16,
        location: String,
    },
    Direct {
        status: u16,
    },
    /// A TCP listener's one cluster.
    Tcp(String),
}

/// Identifies a route for coverage: listener / virtual host / route (Thrift routes
/// have no virtual host).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RouteId {
    pub listener: usize,
    pub vhost: Option<usize>,
    pub route: usize,
}

#[derive(Debug, Clone)]
pub struct Outcome {
    pub listener: String,
    pub protocol: &'static str,
    pub virtual_host: Option<String>,
    pub route: Option<String>,
    pub route_id: Option<RouteId>,
    pub action: Act,
    /// The effective filter chain for this route, in order.
    pub filters: Vec<String>,
    /// Filters this route disables, and those it configures differently.
    pub disabled: Vec<String>,
    pub overridden: Vec<String>,
    pub timeout: Option<Duration>,
    pub retry: Option<String>,
    /// The path sent upstream (after `prefix_rewrite`).
    pub upstream_path: Option<String>,
    pub host_rewrite: Option<String>,
}

fn listener_index(snap: &Snapshot, name: Option<&str>) -> Result<usize, String> {
    match name {
        Some(n) => snap
            .listeners
            .iter()
            .position(|l| &*l.name == n)
            .ok_or_else(|| {
                let names: Vec<&str> = snap.listeners.iter().map(|l| &*l.name).collect();
                format!("no listener `{n}`; listeners: {}", names.join(", "))
            }),
        None if snap.listeners.len() == 1 => Ok(0),
        None => Err("several listeners: name one with `listener`".into()),
    }
}

impl Outcome {
    /// Nothing decided yet: an HTTP request no route took.
    fn new(listener: &str) -> Outcome {
        Outcome {
            listener: listener.to_string(),
            protocol: "http",
            virtual_host: None,
            route: None,
            route_id: None,
            action: Act::NoRoute,
            filters: Vec::new(),
            disabled: Vec::new(),
            overridden: Vec::new(),
            timeout: None,
            retry: None,
            upstream_path: None,
            host_rewrite: None,
        }
    }
}

/// Evaluate `rq` against a compiled snapshot, with the code the proxy runs.
pub fn evaluate(snap: &Snapshot, rq: &Request) -> Result<Outcome, String> {
    let li = listener_index(snap, rq.listener.as_deref())?;
    let Some(l) = snap.listeners.get(li) else {
        return Err("listener not compiled".into());
    };
    let mut out = Outcome::new(&l.name);
    if let Some(t) = &l.tcp {
        out.protocol = "tcp";
        out.action = Act::Tcp(t.cluster.name.to_string());
    } else if let Some(t) = &l.thrift {
        out.protocol = "thrift";
        thrift_route(&mut out, li, t, rq);
    } else if let Some(http) = &l.http {
        http_route(&mut out, li, l.tls.is_some(), http, rq)?;
    } else {
        return Err(format!("listener `{}` has no routes", l.name));
    }
    Ok(out)
}

/// A Thrift call: the route its (service-qualified) method name and headers take.
fn thrift_route(out: &mut Outcome, li: usize, t: &ListenerCtx, rq: &Request) {
    let method = rq.method.clone().unwrap_or_default();
    let name = match &rq.service {
        Some(s) => format!("{s}:{method}"),
        None => method,
    };
    let routes = t.routes();
    let headers = rq.headers.iter().map(|(k, v)| (k.as_bytes(), v.as_bytes()));
    let Some(r) = routes.route_name(&name, headers) else {
        return;
    };
    out.route = Some(r.name.clone());
    out.route_id = Some(RouteId {
        listener: li,
        vhost: None,
        route: index_of(routes.all(), r),
    });
    let targets = r.targets();
    out.action = match targets.as_slice() {
        [(c, None)] => Act::Cluster((*c).to_string()),
        _ => Act::Weighted(
            targets
                .iter()
                .map(|(c, w)| ((*c).to_string(), w.unwrap_or(0)))
                .collect(),
        ),
    };
    out.timeout = r.timeout();
}

/// Where `item` sits in `all` (compared by address: the item is one of them).
fn index_of<T>(all: &[T], item: &T) -> usize {
    all.iter().position(|x| std::ptr::eq(x, item)).unwrap_or(0)
}

/// The request target after the proxy's target phase: what routing sees.
struct Resolved {
    host: String,
    path: String,
    query: Option<String>,
    authority: String,
}

/// An HTTP request: the target phase, the router, the route's filters and action.
fn http_route(
    out: &mut Outcome,
    li: usize,
    tls: bool,
    http: &HttpSettings,
    rq: &Request,
) -> Result<(), String> {
    out.filters = http.filter_names.iter().map(|n| n.to_string()).collect();
    let (method, mut headers) = request_head(rq)?;
    let t = match resolve_target(rq, &method, &headers, tls, http) {
        Ok(t) => t,
        Err(why) => {
            out.action = Act::Rejected(why);
            return Ok(());
        }
    };
    headers.insert(
        http::header::HOST,
        HeaderValue::from_str(&t.authority).map_err(|_| "invalid host".to_string())?,
    );
    let view = RequestView {
        host: &t.host,
        path: &t.path,
        query: t.query.as_deref(),
        headers: &headers,
        method: &method,
        peer_sans: &[],
    };
    out.virtual_host = http.router.vhost(&t.host).map(|vh| vh.name.to_string());
    let Some((vh, route)) = http.router.route(&view) else {
        return Ok(());
    };
    out.route = Some(route.name.to_string());
    out.route_id = Some(RouteId {
        listener: li,
        vhost: Some(index_of(&http.router.vhosts, vh)),
        route: index_of(&vh.routes, route),
    });
    route_filters(out, route);
    route_action(out, http, route, tls, &t, &headers);
    Ok(())
}

/// The method and headers as given; `Host` from `host` (else `localhost`) when the
/// headers have none.
fn request_head(rq: &Request) -> Result<(Method, HeaderMap), String> {
    let method = Method::from_bytes(rq.method.as_deref().unwrap_or("GET").as_bytes())
        .map_err(|_| "invalid method".to_string())?;
    let mut headers = HeaderMap::new();
    for (k, v) in &rq.headers {
        let (Ok(k), Ok(v)) = (
            HeaderName::from_bytes(k.trim().as_bytes()),
            HeaderValue::from_str(v.trim()),
        ) else {
            return Err(format!("invalid header `{k}: {v}`"));
        };
        headers.append(k, v);
    }
    if !headers.contains_key(http::header::HOST) {
        let host = match rq.host.as_str() {
            "" => HeaderValue::from_static("localhost"),
            h => HeaderValue::from_str(h).map_err(|_| format!("invalid host `{h}`"))?,
        };
        headers.insert(http::header::HOST, host);
    }
    Ok((method, headers))
}

/// The request target as the proxy would receive it: `host` as the authority of
/// an absolute-form (or HTTP/2) request, then the path and any extra query.
fn target_text(rq: &Request) -> String {
    let mut target = String::new();
    if !rq.host.is_empty() {
        target.push_str("http://");
        target.push_str(&rq.host);
    }
    target.push_str(&rq.path);
    if !rq.query.is_empty() {
        target.push(if rq.path.contains('?') { '&' } else { '?' });
        let extra: Vec<String> = rq.query.iter().map(|(k, v)| format!("{k}={v}")).collect();
        target.push_str(&extra.join("&"));
    }
    target
}

/// The proxy's own target phase decides host, path and query, or why it answers
/// 400 before routing.
fn resolve_target(
    rq: &Request,
    method: &Method,
    headers: &HeaderMap,
    tls: bool,
    http: &HttpSettings,
) -> Result<Resolved, String> {
    let target = target_text(rq);
    if headers.get_all(http::header::HOST).iter().count() > 1 {
        return Err("more than one host header (400)".into());
    }
    if target.contains('#') {
        return Err("fragment in the request target (400)".into());
    }
    let Ok(uri) = target.parse::<http::Uri>() else {
        return Err("malformed request target (400)".into());
    };
    let head = crate::http::target::Head {
        version: http::Version::HTTP_11,
        options: method == Method::OPTIONS,
        uri: &uri,
        host: headers.get(http::header::HOST),
        tls,
    };
    let settings = crate::http::target::Settings {
        path: &http.path_rules,
        default_host_http10: http.default_host_http10.as_ref(),
    };
    let t = crate::http::target::resolve(&head, &settings)
        .map_err(|reason| format!("{} (400)", rejected_why(reason)))?;
    Ok(Resolved {
        host: t.host.into_owned(),
        path: t.path.into_owned(),
        query: t.query.map(str::to_string),
        authority: t.authority.to_string(),
    })
}

/// The listener's chain as this route runs it: its `filter_overrides` applied.
fn route_filters(out: &mut Outcome, route: &router::Route) {
    let chain = std::mem::take(&mut out.filters);
    for name in chain {
        let kind = route
            .overrides
            .iter()
            .find(|(n, _)| **n == *name)
            .map(|(_, k)| *k);
        match kind {
            Some(FilterOverride::Disabled) => out.disabled.push(name),
            Some(FilterOverride::Configured) => {
                out.overridden.push(name.clone());
                out.filters.push(name);
            }
            None => out.filters.push(name),
        }
    }
}

/// What the matched route does: a direct response, a redirect, or forwarding.
fn route_action(
    out: &mut Outcome,
    http: &HttpSettings,
    route: &router::Route,
    tls: bool,
    t: &Resolved,
    headers: &HeaderMap,
) {
    out.action = match &route.action {
        Action::Direct(d) => Act::Direct {
            status: d.status.as_u16(),
        },
        Action::Redirect(r) => Act::Redirect {
            status: r.status.as_u16(),
            location: router::redirect_location(
                r,
                &route.matcher.path,
                tls,
                &t.host,
                Some(&t.authority),
                &t.path,
                t.query.as_deref(),
            ),
        },
        Action::Route(ra) => {
            forward(out, route, ra, t);
            forward_target(http, ra, headers)
        }
    };
}

/// Where a forwarding route sends the request.
fn forward_target(http: &HttpSettings, ra: &RouteAction, headers: &HeaderMap) -> Act {
    match &ra.target {
        Target::Cluster(c) => Act::Cluster(c.name.to_string()),
        Target::Weighted { clusters, .. } => Act::Weighted(
            clusters
                .iter()
                .map(|(c, w)| (c.name.to_string(), u64::from(*w)))
                .collect(),
        ),
        Target::Header(h) => Act::ClusterHeader {
            header: h.to_string(),
            resolved: ra
                .cluster(&http.router, headers)
                .map(|c| c.name.to_string()),
        },
    }
}

/// A forwarding route's timeout, retries and rewrites.
fn forward(out: &mut Outcome, route: &router::Route, ra: &RouteAction, t: &Resolved) {
    out.timeout = ra.timeout;
    out.retry = ra.retry.as_ref().map(|r| {
        let on = r.conditions();
        let mut s = format!("{} attempts on {}", r.attempts, on.join(", "));
        if let Some(t) = r.per_try_timeout {
            let _ = write!(s, ", {} per try", duration::format(t));
        }
        s
    });
    out.upstream_path = Some(router::rewrite_path(
        &route.matcher.path,
        ra.prefix_rewrite.as_deref(),
        &t.path,
        None,
    ));
    out.host_rewrite = ra
        .host_rewrite
        .as_ref()
        .and_then(|h| h.to_str().ok())
        .map(str::to_string);
}

/// Why the proxy refuses a request before routing, in words.
fn rejected_why(reason: crate::error::Reject) -> &'static str {
    use crate::error::Reject;
    match reason {
        Reject::Host => "missing, malformed or disagreeing host",
        Reject::Target => "request target cannot be proxied",
        Reject::Scheme => "scheme other than http or https",
        Reject::Backslash => "path has a backslash",
        Reject::PathTraversal => "path has a dot segment with parameters",
        Reject::DoubleEncoding => "path is double-encoded",
        Reject::Path => "malformed path or escaped slash",
        other => other.as_str(),
    }
}

/// `api_v1 90 (90%), api_v2 10 (10%)`.
pub fn fmt_weights(ws: &[(String, u64)]) -> String {
    let total: u64 = ws.iter().map(|(_, w)| w).sum();
    ws.iter()
        .map(|(c, w)| format!("{c} {w} ({})", percent(*w, total)))
        .collect::<Vec<_>>()
        .join(", ")
}

impl Act {
    /// One line: what the proxy does.
    pub fn describe(&self) -> String {
        match self {
            Act::NoRoute => "no route: 404".into(),
            Act::Rejected(why) => format!("rejected: {why}"),
            Act::Cluster(c) => format!("route to cluster {c}"),
            Act::Weighted(ws) => format!("route to weighted clusters: {}", fmt_weights(ws)),
            Act::ClusterHeader { header, resolved } => match resolved {
                Some(c) => format!("route to the cluster named by header {header}: {c}"),
                None => format!("route to the cluster named by header {header} (absent: 503)"),
            },
            Act::Redirect { status, location } => format!("redirect {status} to {location}"),
            Act::Direct { status } => format!("direct response {status}"),
            Act::Tcp(c) => format!("tcp proxy to cluster {c}"),
        }
    }

    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::json;
        match self {
            Act::NoRoute => json!({"type": "no_route", "status": 404}),
            Act::Rejected(why) => json!({"type": "rejected", "status": 400, "reason": why}),
            Act::Cluster(c) => json!({"type": "cluster", "cluster": c}),
            Act::Weighted(ws) => {
                let total: u64 = ws.iter().map(|(_, w)| w).sum();
                json!({"type": "weighted_clusters", "clusters": ws.iter().map(|(c, w)| json!({
                    "cluster": c, "weight": w, "percent": if total == 0 { 0.0 } else { *w as f64 * 100.0 / total as f64 },
                })).collect::<Vec<_>>()})
            }
            Act::ClusterHeader { header, resolved } => {
                json!({"type": "cluster_header", "header": header, "cluster": resolved})
            }
            Act::Redirect { status, location } => {
                json!({"type": "redirect", "status": status, "location": location})
            }
            Act::Direct { status } => json!({"type": "direct_response", "status": status}),
            Act::Tcp(c) => json!({"type": "tcp", "cluster": c}),
        }
    }
}

impl Outcome {
    pub fn to_text(&self) -> String {
        let mut s = String::new();
        let mut line = |k: &str, v: &str| {
            let _ = writeln!(s, "{k:<13} {v}");
        };
        line(
            "listener",
            &format!("{} ({})", self.listener, self.protocol),
        );
        if let Some(v) = &self.virtual_host {
            line("virtual host", v);
        } else if self.protocol == "http" {
            line("virtual host", "(none)");
        }
        if self.protocol != "tcp" {
            line("route", self.route.as_deref().unwrap_or("(none)"));
        }
        line("action", &self.action.describe());
        if let Some(p) = &self.upstream_path {
            line("upstream path", p);
        }
        if let Some(h) = &self.host_rewrite {
            line("host rewrite", h);
        }
        if self.protocol == "http" {
            let f: Vec<String> = self
                .filters
                .iter()
                .map(|f| {
                    if self.overridden.contains(f) {
                        format!("{f} (route override)")
                    } else {
                        f.clone()
                    }
                })
                .collect();
            line(
                "filters",
                &if f.is_empty() {
                    "(none)".to_string()
                } else {
                    f.join(", ")
                },
            );
            if !self.disabled.is_empty() {
                line("disabled", &self.disabled.join(", "));
            }
        }
        if self.route.is_some() && self.protocol != "tcp" {
            if matches!(
                self.action,
                Act::Cluster(_) | Act::Weighted(_) | Act::ClusterHeader { .. }
            ) {
                line(
                    "timeout",
                    &self.timeout.map_or("none".to_string(), duration::format),
                );
            }
            if let Some(r) = &self.retry {
                line("retries", r);
            }
        }
        s
    }

    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "listener": self.listener,
            "protocol": self.protocol,
            "virtual_host": self.virtual_host,
            "route": self.route,
            "action": self.action.to_json(),
            "upstream_path": self.upstream_path,
            "host_rewrite": self.host_rewrite,
            "filters": self.filters,
            "overridden_filters": self.overridden,
            "disabled_filters": self.disabled,
            "timeout": self.timeout.map(duration::format),
            "retries": self.retry,
        })
    }
}

/// The admin endpoint's `/explain`: (ok, body). Query parameters: `listener`,
/// `host`, `path` (may be percent-encoded with its own query), `method`,
/// `service`, and `header=name:value` any number of times.
pub fn admin(snap: &Snapshot, query: Option<&str>, json: bool) -> (bool, String) {
    let mut rq = Request {
        path: "/".into(),
        ..Default::default()
    };
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let key = pair.split_once('=').map_or(pair, |(k, _)| k);
        let value = router::query_param(Some(pair), key).unwrap_or_default();
        match key {
            "listener" => rq.listener = Some(value),
            "host" => rq.host = value,
            "path" => rq.path = value,
            "method" => rq.method = Some(value),
            "service" => rq.service = Some(value),
            "header" => match value.split_once(':') {
                Some((k, v)) => rq.headers.push((k.to_string(), v.to_string())),
                None => return (false, format!("header=`{value}` is not name:value\n")),
            },
            _ => {}
        }
    }
    match evaluate(snap, &rq) {
        Ok(o) if json => (true, o.to_json().to_string()),
        Ok(o) => (true, o.to_text()),
        Err(e) if json => (false, serde_json::json!({ "error": e }).to_string()),
        Err(e) => (false, format!("{e}\n")),
    }
}
