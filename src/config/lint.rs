//! Semantic lints: configs that validate but are probably wrong. Each lint has a
//! stable code and a severity; the table in docs/validation.md is the reference.
//! Lints read the raw (typed, expanded) config and its source map, so they run even
//! when compilation found errors elsewhere and point at the line; `attache
//! validate` (toolkit::cli) prints them with the core errors as [`Finding`]s.

use std::collections::HashSet;
use std::fmt;
use std::net::SocketAddr;

use attache_filters::origin::Pattern;
use attache_filters::{cookie_audit, cors, web_security};

use crate::config::load::{Diagnostic, SourceMap};
use crate::config::raw;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    Error,
    Warning,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Error => "error",
            Severity::Warning => "warning",
        }
    }
}

/// A located problem: a core validation error (no code) or a lint (with a code).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub file: String,
    pub line: usize,
    pub col: usize,
    pub severity: Severity,
    pub code: Option<&'static str>,
    pub message: String,
}

impl Finding {
    pub fn error(d: Diagnostic) -> Finding {
        Finding::new(d, Severity::Error, None)
    }

    pub fn new(d: Diagnostic, severity: Severity, code: Option<&'static str>) -> Finding {
        Finding {
            file: d.file,
            line: d.line,
            col: d.col,
            severity,
            code,
            message: d.message,
        }
    }

    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "file": self.file,
            "line": self.line,
            "column": self.col,
            "severity": self.severity.as_str(),
            "code": self.code,
            "message": self.message,
        })
    }
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}: ", self.file, self.line, self.col)?;
        // Core errors keep the plain `FILE:LINE:COL: message` form `run` prints too.
        match (self.severity, self.code) {
            (Severity::Error, None) => {}
            (s, None) => write!(f, "{}: ", s.as_str())?,
            (s, Some(c)) => write!(f, "{}[{c}]: ", s.as_str())?,
        }
        f.write_str(&self.message)
    }
}

/// Every lint: (code, severity, one-line summary). docs/validation.md explains each.
pub const LINTS: &[(&str, Severity, &str)] = &[
    (
        "A101",
        Severity::Warning,
        "HSTS configured on a plaintext listener",
    ),
    (
        "A102",
        Severity::Warning,
        "cookie policy requires `Secure` on a plaintext listener",
    ),
    (
        "A103",
        Severity::Warning,
        "require_client_cert without allowed_client_sans",
    ),
    (
        "A104",
        Severity::Error,
        "CORS allows any origin (`*`) with credentials",
    ),
    ("A105", Severity::Warning, "cluster no route uses"),
    (
        "A106",
        Severity::Warning,
        "weighted clusters whose weights do not sum to 100",
    ),
    (
        "A107",
        Severity::Warning,
        "retries on a route that matches non-idempotent methods, without a body limit",
    ),
    (
        "A108",
        Severity::Error,
        "admin on a non-loopback address without a token",
    ),
    (
        "A109",
        Severity::Warning,
        "gRPC route with a finite timeout or max_stream_duration",
    ),
    (
        "A110",
        Severity::Warning,
        "gRPC-only route to an HTTP/1.1 cluster",
    ),
    (
        "A111",
        Severity::Warning,
        "proxy_protocol on a non-loopback address without allowed_sources",
    ),
];

fn severity(code: &str) -> Severity {
    LINTS
        .iter()
        .find(|(c, _, _)| *c == code)
        .map_or(Severity::Warning, |(_, s, _)| *s)
}

struct Out<'a> {
    map: &'a SourceMap,
    findings: Vec<Finding>,
}

impl Out<'_> {
    fn push(&mut self, code: &'static str, path: &str, key: bool, msg: String) {
        let d = if key {
            self.map.diag_key(path, msg)
        } else {
            self.map.diag(path, msg)
        };
        self.findings
            .push(Finding::new(d, severity(code), Some(code)));
    }
}

/// A filter config in effect somewhere: the listener chain or a route override.
struct FilterUse<'a> {
    /// Dotted path of the filter's config value.
    path: String,
    name: &'a str,
    value: &'a serde_yaml::Value,
}

fn filter_uses<'a>(lp: &str, l: &'a raw::Listener) -> Vec<FilterUse<'a>> {
    let mut out = Vec::new();
    for (j, item) in l.filters.iter().enumerate() {
        for (name, value) in item {
            out.push(FilterUse {
                path: format!("{lp}.filters.{j}.{name}"),
                name,
                value,
            });
        }
    }
    for (v, vh) in l.virtual_hosts.iter().enumerate() {
        for (r, route) in vh.routes.iter().enumerate() {
            for (name, value) in &route.filter_overrides {
                if value.as_str() == Some("disabled") {
                    continue;
                }
                out.push(FilterUse {
                    path: format!("{lp}.virtual_hosts.{v}.routes.{r}.filter_overrides.{name}"),
                    name,
                    value,
                });
            }
        }
    }
    out
}

fn typed<T: serde::de::DeserializeOwned>(v: &serde_yaml::Value) -> Option<T> {
    let empty = serde_yaml::Value::Mapping(Default::default());
    serde_yaml::from_value(if v.is_null() { empty } else { v.clone() }).ok()
}

const NON_IDEMPOTENT: &[&str] = &["POST", "PATCH", "CONNECT"];

/// Run every lint.
pub fn lint(cfg: &raw::Config, map: &SourceMap) -> Vec<Finding> {
    let mut out = Out {
        map,
        findings: Vec::new(),
    };
    admin_exposed(&mut out, &cfg.admin);
    let mut usage = Usage::default();
    for (i, l) in cfg.listeners.iter().enumerate() {
        let lp = format!("listeners.{i}");
        client_cert(&mut out, &lp, l);
        proxy_protocol(&mut out, &lp, l);
        for f in filter_uses(&lp, l) {
            filter(&mut out, l, &f);
        }
        http_routes(&mut out, &mut usage, cfg, &lp, l);
        if let Some(t) = &l.tcp {
            usage.used.insert(&t.cluster);
        }
        thrift_routes(&mut out, &mut usage, &lp, l);
    }
    // The management server's cluster serves the xDS stream.
    if let Some(x) = &cfg.xds {
        usage.used.insert(&x.cluster);
    }
    unused_clusters(&mut out, &usage, &cfg.clusters);
    out.findings
        .sort_by(|a, b| (&a.file, a.line, a.col).cmp(&(&b.file, b.line, b.col)));
    out.findings
}

/// Which clusters routes and listeners name, and whether a route picks its
/// cluster at run time (`cluster_header`).
#[derive(Default)]
struct Usage<'a> {
    used: HashSet<&'a str>,
    dynamic: bool,
}

/// A108: admin reachable from the network with no token.
fn admin_exposed(out: &mut Out<'_>, admin: &raw::Admin) {
    let Some(addr) = admin
        .address
        .as_deref()
        .and_then(|a| a.parse::<SocketAddr>().ok())
    else {
        return;
    };
    let token = admin.token.as_deref().is_some_and(|t| !t.is_empty());
    if !addr.ip().is_loopback() && !token {
        out.push(
            "A108",
            "admin.address",
            false,
            format!("admin address {addr} is not loopback and no admin.token is set; anyone who reaches it can drain or reload this proxy"),
        );
    }
}

/// A103: a client certificate is required but any the CA signed is accepted.
fn client_cert(out: &mut Out<'_>, lp: &str, l: &raw::Listener) {
    let Some(t) = &l.tls else {
        return;
    };
    // With `rbac`, the policies decide who may do what.
    let unchecked = t.allowed_client_sans.is_empty() && l.rbac.is_none();
    if t.require_client_cert == Some(true) && unchecked {
        out.push(
            "A103",
            &format!("{lp}.tls.require_client_cert"),
            false,
            format!("listener `{}` requires a client certificate but allowed_client_sans is empty: any certificate the CA signed is accepted; list the allowed SANs in `allowed_client_sans`", l.name),
        );
    }
}

/// A111: any client that reaches the port can claim any source address.
fn proxy_protocol(out: &mut Out<'_>, lp: &str, l: &raw::Listener) {
    let open = match &l.proxy_protocol {
        Some(raw::ProxyProtocol::Options(o)) => o.allowed_sources.is_empty(),
        Some(raw::ProxyProtocol::Enabled(on)) => *on,
        None => false,
    };
    let public = l
        .address
        .parse::<SocketAddr>()
        .is_ok_and(|a| !a.ip().is_loopback());
    if open && public {
        out.push(
            "A111",
            &format!("{lp}.proxy_protocol"),
            false,
            format!("listener `{}` trusts a PROXY header from any peer: a client that reaches it directly can claim any source address (x-forwarded-for, rbac source_ip); list the load balancers in `proxy_protocol: {{ allowed_sources: [...] }}`", l.name),
        );
    }
}

/// A101, A102, A104: filter settings that cannot work where they are used.
fn filter(out: &mut Out<'_>, l: &raw::Listener, f: &FilterUse<'_>) {
    let plaintext = l.tls.is_none();
    match f.name {
        "web_security" if plaintext => hsts_on_plaintext(out, l, f),
        "cookie_audit" if plaintext => secure_cookie_on_plaintext(out, l, f),
        "cors" => cors_any_origin_with_credentials(out, f),
        _ => {}
    }
}

/// A101.
fn hsts_on_plaintext(out: &mut Out<'_>, l: &raw::Listener, f: &FilterUse<'_>) {
    let Some(c) = typed::<web_security::Config>(f.value) else {
        return;
    };
    let on = match &c.hsts {
        Some(web_security::Setting::On(b)) => *b,
        Some(web_security::Setting::Value(_)) => true,
        None => false,
    };
    if on {
        out.push(
            "A101",
            &format!("{}.hsts", f.path),
            false,
            format!("HSTS on plaintext listener `{}` is never sent (browsers ignore it over http); terminate TLS here or remove `hsts`", l.name),
        );
    }
}

/// A102.
fn secure_cookie_on_plaintext(out: &mut Out<'_>, l: &raw::Listener, f: &FilterUse<'_>) {
    let Some(c) = typed::<cookie_audit::Config>(f.value) else {
        return;
    };
    for (k, p) in c.cookies.iter().enumerate().filter(|(_, p)| p.secure) {
        out.push(
            "A102",
            &format!("{}.cookies.{k}", f.path),
            false,
            format!("cookie `{}` must be `Secure`, but listener `{}` is plaintext: browsers will not send it back over http; set `secure: false` or terminate TLS", p.name, l.name),
        );
    }
}

/// A104.
fn cors_any_origin_with_credentials(out: &mut Out<'_>, f: &FilterUse<'_>) {
    let Some(c) = typed::<cors::Config>(f.value) else {
        return;
    };
    if !c.allow_credentials {
        return;
    }
    for (k, p) in c.allowed_origins.iter().enumerate() {
        if matches!(p, Pattern::Exact(s) if s == "*") {
            out.push(
                "A104",
                &format!("{}.allowed_origins.{k}", f.path),
                false,
                "CORS allows any origin (`*`) with allow_credentials: true; any site could read authenticated responses; list the origins".to_string(),
            );
        }
    }
}

/// The lints of each HTTP route (A106, A107, A109, A110), and the clusters they use.
fn http_routes<'a>(
    out: &mut Out<'_>,
    usage: &mut Usage<'a>,
    cfg: &raw::Config,
    lp: &str,
    l: &'a raw::Listener,
) {
    let retry_limit = l
        .http
        .as_ref()
        .is_some_and(|h| h.retry_buffer_bytes.is_some());
    for (v, vh) in l.virtual_hosts.iter().enumerate() {
        for (r, route) in vh.routes.iter().enumerate() {
            let rp = format!("{lp}.virtual_hosts.{v}.routes.{r}");
            let name = route
                .name
                .clone()
                .unwrap_or_else(|| format!("{}/{}", vh.name, r));
            let Some(a) = &route.route else { continue };
            grpc_route(out, cfg, &rp, &name, route, a);
            usage.used.extend(a.cluster.as_deref());
            usage
                .used
                .extend(a.mirror.iter().map(|m| m.cluster.as_str()));
            usage.dynamic |= a.cluster_header.is_some();
            if let Some(ws) = &a.weighted_clusters {
                split(out, usage, &rp, &name, ws);
            }
            if !retry_limit {
                unbounded_retries(out, &rp, &name, route, a);
            }
        }
    }
}

/// A107: a route that retries after the request was sent, can match a
/// non-idempotent method, and has no body limit (no `http.retry_buffer_bytes`).
fn unbounded_retries(
    out: &mut Out<'_>,
    rp: &str,
    name: &str,
    route: &raw::Route,
    a: &raw::RouteAction,
) {
    // Connect failures are retried before any byte reached the upstream.
    let after_send = a.retries.as_ref().is_some_and(|r| {
        r.retry_on.iter().any(|x| x != "connect-failure") || !r.retriable_status_codes.is_empty()
    });
    if !after_send {
        return;
    }
    let m = &route.matcher.methods;
    let risky: Vec<&str> = if m.is_empty() {
        NON_IDEMPOTENT.to_vec()
    } else {
        m.iter()
            .map(String::as_str)
            .filter(|x| NON_IDEMPOTENT.contains(x))
            .collect()
    };
    if !risky.is_empty() {
        out.push(
            "A107",
            &format!("{rp}.route.retries"),
            true,
            format!("route `{name}` retries and can match {} without a body limit; restrict `match.methods` to idempotent ones or set the listener's `http.retry_buffer_bytes`", risky.join(", ")),
        );
    }
}

/// The lints of each Thrift route (A106), and the clusters they use.
fn thrift_routes<'a>(out: &mut Out<'_>, usage: &mut Usage<'a>, lp: &str, l: &'a raw::Listener) {
    let Some(t) = &l.thrift else {
        return;
    };
    for (r, route) in t.routes.iter().enumerate() {
        let rp = format!("{lp}.thrift.routes.{r}");
        let name = route.name.clone().unwrap_or_else(|| format!("routes.{r}"));
        usage.used.extend(route.route.cluster.as_deref());
        if let Some(ws) = &route.route.weighted_clusters {
            split(out, usage, &rp, &name, ws);
        }
    }
}

/// A weighted split of the route at `rp`: its weights linted, its clusters used.
fn split<'a>(
    out: &mut Out<'_>,
    usage: &mut Usage<'a>,
    rp: &str,
    name: &str,
    ws: &'a [raw::WeightedCluster],
) {
    weights(out, &format!("{rp}.route.weighted_clusters"), name, ws);
    usage.used.extend(ws.iter().map(|w| w.cluster.as_str()));
}

/// A105: a cluster nothing uses; with a `cluster_header` route any cluster may be
/// chosen at run time, so none is reported.
fn unused_clusters(out: &mut Out<'_>, usage: &Usage<'_>, clusters: &[raw::Cluster]) {
    if usage.dynamic {
        return;
    }
    for (i, c) in clusters.iter().enumerate() {
        if !usage.used.contains(c.name.as_str()) {
            out.push(
                "A105",
                &format!("clusters.{i}.name"),
                false,
                format!("cluster `{}` is not used by any route or listener", c.name),
            );
        }
    }
}

/// Whether a route's match only takes gRPC: a `content-type` header match on
/// `application/grpc`.
fn grpc_only_match(m: &raw::RouteMatch) -> bool {
    m.headers.iter().any(|h| {
        let grpc = |v: &Option<String>| {
            v.as_deref()
                .is_some_and(|v| v.to_ascii_lowercase().starts_with("application/grpc"))
        };
        h.name.eq_ignore_ascii_case("content-type")
            && !h.invert
            && (grpc(&h.exact) || grpc(&h.prefix))
    })
}

/// A109 and A110: a route that carries gRPC (by its match, or because its cluster
/// speaks HTTP/2 and is health checked with gRPC).
fn grpc_route(
    out: &mut Out<'_>,
    cfg: &raw::Config,
    rp: &str,
    name: &str,
    route: &raw::Route,
    a: &raw::RouteAction,
) {
    let mut names: Vec<&str> = a.cluster.iter().map(String::as_str).collect();
    if let Some(ws) = &a.weighted_clusters {
        names.extend(ws.iter().map(|w| w.cluster.as_str()));
    }
    let clusters: Vec<&raw::Cluster> = names
        .iter()
        .filter_map(|n| cfg.clusters.iter().find(|c| c.name == *n))
        .collect();
    let by_match = grpc_only_match(&route.matcher);
    let by_cluster = !clusters.is_empty()
        && clusters.iter().all(|c| {
            c.protocol == raw::UpstreamProtocol::Http2
                && c.health_check.as_ref().is_some_and(|h| h.grpc.is_some())
        });
    if !by_match && !by_cluster {
        return;
    }
    if by_match {
        for c in clusters
            .iter()
            .filter(|c| c.protocol == raw::UpstreamProtocol::Http1)
        {
            out.push(
                "A110",
                &format!("{rp}.match"),
                false,
                format!("route `{name}` only matches gRPC but cluster `{}` speaks HTTP/1.1 upstream, where gRPC fails (502); set `protocol: http2` on the cluster", c.name),
            );
        }
    }
    let finite_head = a.timeout.is_none_or(|t| !t.0.is_zero());
    if finite_head {
        let what = match a.timeout {
            None => "the default `timeout` (15s)".to_string(),
            Some(_) => "`timeout`".to_string(),
        };
        out.push(
            "A109",
            &format!("{rp}.route"),
            false,
            format!("route `{name}` carries gRPC and {what} bounds the wait for the response head: a streaming call whose server sends headers with its first message (grpc-go, grpcio) is cut if that takes longer; set `timeout: 0s` and bound calls with client deadlines (`max_grpc_timeout`) and `stream_idle_timeout`"),
        );
    }
    if a.max_stream_duration.is_some() {
        out.push(
            "A109",
            &format!("{rp}.route.max_stream_duration"),
            true,
            format!("route `{name}` carries gRPC and max_stream_duration ends every call, long-lived streams included, after that long; prefer client deadlines with `max_grpc_timeout`"),
        );
    }
}

fn weights(out: &mut Out<'_>, path: &str, route: &str, ws: &[raw::WeightedCluster]) {
    let total: u64 = ws.iter().map(|w| u64::from(w.weight)).sum();
    if total != 100 && total != 0 {
        out.push(
            "A106",
            path,
            false,
            format!("weights of route `{route}` sum to {total}, not 100; shares are weight/{total}, which reviewers easily misread as percent"),
        );
    }
}
