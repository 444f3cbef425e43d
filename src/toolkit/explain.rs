//! "Which route would this request take, and what happens then?" — evaluated with
//! the real compiled router and the proxy's own rewrite and redirect functions, so
//! the answer is what the data path does. Used by `attache explain`, the admin
//! endpoint's `/explain` and `attache test-routes`.

use std::fmt::Write as _;
use std::time::Duration;

use http::{HeaderMap, HeaderName, HeaderValue, Method};

use crate::config::raw;
use crate::config::Snapshot;
use crate::router::{self, Action, RequestView, Target};

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

/// Format a duration the way configs write them.
pub fn fmt_dur(d: Duration) -> String {
    let ms = d.as_millis();
    if ms == 0 {
        "0s".into()
    } else if ms % 3_600_000 == 0 {
        format!("{}h", ms / 3_600_000)
    } else if ms % 60_000 == 0 {
        format!("{}m", ms / 60_000)
    } else if ms % 1000 == 0 {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

fn listener_index(snap: &Snapshot, cfg: &raw::Config, name: Option<&str>) -> Result<usize, String> {
    match name {
        Some(n) => cfg
            .listeners
            .iter()
            .position(|l| l.name == n)
            .ok_or_else(|| {
                let names: Vec<&str> = cfg.listeners.iter().map(|l| l.name.as_str()).collect();
                format!("no listener `{n}`; listeners: {}", names.join(", "))
            }),
        None if snap.listeners.len() == 1 => Ok(0),
        None => Err("several listeners: name one with `listener`".into()),
    }
}

/// Evaluate `rq` against a compiled snapshot and the raw config it came from.
pub fn evaluate(snap: &Snapshot, cfg: &raw::Config, rq: &Request) -> Result<Outcome, String> {
    let li = listener_index(snap, cfg, rq.listener.as_deref())?;
    let (Some(rl), Some(sl)) = (cfg.listeners.get(li), snap.listeners.get(li)) else {
        return Err("listener not compiled".into());
    };
    let mut out = Outcome {
        listener: rl.name.clone(),
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
    };
    if let Some(t) = &sl.tcp {
        out.protocol = "tcp";
        out.action = Act::Tcp(t.cluster.name.to_string());
        return Ok(out);
    }
    if let Some(t) = &sl.thrift {
        out.protocol = "thrift";
        let method = rq.method.clone().unwrap_or_default();
        let name = match &rq.service {
            Some(s) => format!("{s}:{method}"),
            None => method,
        };
        let routes = t.routes();
        let headers = rq.headers.iter().map(|(k, v)| (k.as_bytes(), v.as_bytes()));
        if let Some(r) = routes.route_name(&name, headers) {
            let idx = routes
                .all()
                .iter()
                .position(|x| std::ptr::eq(x, r))
                .unwrap_or(0);
            out.route = Some(r.name.clone());
            out.route_id = Some(RouteId {
                listener: li,
                vhost: None,
                route: idx,
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
        return Ok(out);
    }
    let Some(http) = &sl.http else {
        return Err(format!("listener `{}` has no routes", rl.name));
    };
    out.filters = chain_names(rl);

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
    // The request as the proxy would receive it: `host` as the authority of an
    // absolute-form (or HTTP/2) request, a `host` header as `Host` (when absent,
    // `host` or else `localhost`). The proxy's own target phase then decides.
    if !headers.contains_key(http::header::HOST) {
        let host = match rq.host.as_str() {
            "" => HeaderValue::from_static("localhost"),
            h => HeaderValue::from_str(h).map_err(|_| format!("invalid host `{h}`"))?,
        };
        headers.insert(http::header::HOST, host);
    }
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
    if headers.get_all(http::header::HOST).iter().count() > 1 {
        out.action = Act::Rejected("more than one host header (400)".into());
        return Ok(out);
    }
    if target.contains('#') {
        out.action = Act::Rejected("fragment in the request target (400)".into());
        return Ok(out);
    }
    let Ok(uri) = target.parse::<http::Uri>() else {
        out.action = Act::Rejected("malformed request target (400)".into());
        return Ok(out);
    };
    let host_header = headers.get(http::header::HOST).cloned();
    let head = crate::http::target::Head {
        version: http::Version::HTTP_11,
        options: method == Method::OPTIONS,
        uri: &uri,
        host: host_header.as_ref(),
        tls: rl.tls.is_some(),
    };
    let settings = crate::http::target::Settings {
        path: &http.path_rules,
        default_host_http10: http.default_host_http10.as_ref(),
    };
    let t = match crate::http::target::resolve(&head, &settings) {
        Ok(t) => t,
        Err(reason) => {
            out.action = Act::Rejected(format!("{} (400)", rejected_why(reason)));
            return Ok(out);
        }
    };
    headers.insert(
        http::header::HOST,
        HeaderValue::from_str(t.authority).map_err(|_| "invalid host".to_string())?,
    );
    let (host, path, query) = (t.host.into_owned(), t.path.into_owned(), t.query);
    let authority = t.authority.to_string();
    let view = RequestView {
        host: &host,
        path: &path,
        query,
        headers: &headers,
        method: &method,
        peer_sans: &[],
    };
    if let Some(vh) = http.router.vhost(&host) {
        out.virtual_host = Some(vh.name.to_string());
    }
    let Some((vh, route)) = http.router.route(&view) else {
        return Ok(out);
    };
    let vi = http
        .router
        .vhosts
        .iter()
        .position(|v| std::ptr::eq(v, vh))
        .unwrap_or(0);
    let ri = vh
        .routes
        .iter()
        .position(|r| std::ptr::eq(r, route))
        .unwrap_or(0);
    out.route = Some(route.name.to_string());
    out.route_id = Some(RouteId {
        listener: li,
        vhost: Some(vi),
        route: ri,
    });
    if let Some(rr) = rl.virtual_hosts.get(vi).and_then(|v| v.routes.get(ri)) {
        let chain = std::mem::take(&mut out.filters);
        for name in chain {
            match rr.filter_overrides.get(&name) {
                Some(v) if v.as_str() == Some("disabled") => out.disabled.push(name),
                Some(_) => {
                    out.overridden.push(name.clone());
                    out.filters.push(name);
                }
                None => out.filters.push(name),
            }
        }
    }
    match &route.action {
        Action::Direct(d) => {
            out.action = Act::Direct {
                status: d.status.as_u16(),
            }
        }
        Action::Redirect(r) => {
            out.action = Act::Redirect {
                status: r.status.as_u16(),
                location: router::redirect_location(
                    r,
                    &route.matcher.path,
                    rl.tls.is_some(),
                    &host,
                    Some(&authority),
                    &path,
                    query,
                ),
            }
        }
        Action::Route(ra) => {
            out.action = match &ra.target {
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
                        .cluster(&http.router, &headers)
                        .map(|c| c.name.to_string()),
                },
            };
            out.timeout = ra.timeout;
            out.retry = ra.retry.as_ref().map(|r| {
                let mut on = Vec::new();
                for (b, n) in [
                    (r.on_5xx, "5xx"),
                    (r.on_gateway_error, "gateway-error"),
                    (r.on_connect_failure, "connect-failure"),
                    (r.on_reset, "reset"),
                ] {
                    if b {
                        on.push(n.to_string());
                    }
                }
                on.extend(r.statuses.iter().map(u16::to_string));
                on.extend(
                    attache_filters::grpc::Code::ALL
                        .iter()
                        .filter(|c| r.grpc_codes & (1 << (**c as u32)) != 0)
                        .map(|c| format!("grpc {}", c.name())),
                );
                let mut s = format!("{} attempts on {}", r.attempts, on.join(", "));
                if let Some(t) = r.per_try_timeout {
                    let _ = write!(s, ", {} per try", fmt_dur(t));
                }
                s
            });
            out.upstream_path = Some(router::rewrite_path(
                &route.matcher.path,
                ra.prefix_rewrite.as_deref(),
                &path,
                None,
            ));
            out.host_rewrite = ra
                .host_rewrite
                .as_ref()
                .and_then(|h| h.to_str().ok())
                .map(str::to_string);
        }
    }
    Ok(out)
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

/// The listener's filter names, in chain order.
pub fn chain_names(l: &raw::Listener) -> Vec<String> {
    l.filters.iter().flat_map(|m| m.keys().cloned()).collect()
}

fn percent(w: u64, total: u64) -> String {
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
                line("timeout", &self.timeout.map_or("none".to_string(), fmt_dur));
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
            "timeout": self.timeout.map(fmt_dur),
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
    let cfg = match serde_yaml::from_value::<raw::Config>(snap.effective.clone()) {
        Ok(c) => c,
        Err(e) => return (false, format!("cannot read the running config: {e}\n")),
    };
    match evaluate(snap, &cfg, &rq) {
        Ok(o) if json => (true, o.to_json().to_string()),
        Ok(o) => (true, o.to_text()),
        Err(e) if json => (false, serde_json::json!({ "error": e }).to_string()),
        Err(e) => (false, format!("{e}\n")),
    }
}
