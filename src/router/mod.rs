//! Compiled route tables: virtual hosts by domain, routes by path/header/query/method
//! matchers, first match wins. Everything here is built once per config load; matching
//! does no allocation for the common cases.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use attache_filters::HttpFilter;
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use regex::Regex;

use crate::upstream::Cluster;

pub mod retry;
pub use retry::RetryPolicy;

#[cfg(test)]
mod tests;

/// What a route match sees of a request.
pub struct RequestView<'a> {
    /// Lower-case host without port.
    pub host: &'a str,
    /// The normalized path, without query.
    pub path: &'a str,
    pub query: Option<&'a str>,
    pub headers: &'a HeaderMap,
    pub method: &'a Method,
    pub peer_sans: &'a [String],
}

#[derive(Debug)]
pub enum PathMatch {
    Prefix(String),
    Exact(String),
    Regex(Regex),
}

#[derive(Debug, Clone)]
pub enum ValueMatch {
    Exact(String),
    Prefix(String),
    Suffix(String),
    Regex(Regex),
    Present(bool),
}

impl ValueMatch {
    /// From the `{ exact | prefix | suffix | regex | present }` keys of a header (or
    /// query) matcher, exactly one of them; a regex is anchored like Envoy's
    /// `safe_regex` (the whole value must match). `Err((key, message))`: `key` is
    /// the offending key (`regex`), or `None` for the matcher itself.
    pub fn from_keys(
        exact: &Option<String>,
        prefix: &Option<String>,
        suffix: &Option<String>,
        re: &Option<String>,
        present: Option<bool>,
    ) -> Result<ValueMatch, (Option<&'static str>, String)> {
        let given = [
            exact.is_some(),
            prefix.is_some(),
            suffix.is_some(),
            re.is_some(),
            present.is_some(),
        ];
        if given.iter().filter(|b| **b).count() != 1 {
            let msg = "give exactly one of `exact`, `prefix`, `suffix`, `regex` or `present`";
            return Err((None, msg.to_owned()));
        }
        Ok(if let Some(e) = exact {
            ValueMatch::Exact(e.clone())
        } else if let Some(p) = prefix {
            ValueMatch::Prefix(p.clone())
        } else if let Some(s) = suffix {
            ValueMatch::Suffix(s.clone())
        } else if let Some(r) = re {
            ValueMatch::Regex(anchored_regex(r).map_err(|e| (Some("regex"), e))?)
        } else {
            ValueMatch::Present(present.unwrap_or(true))
        })
    }

    pub(crate) fn matches(&self, v: Option<&str>) -> bool {
        match (self, v) {
            (ValueMatch::Present(p), v) => *p == v.is_some(),
            (_, None) => false,
            (ValueMatch::Exact(e), Some(v)) => e == v,
            (ValueMatch::Prefix(p), Some(v)) => v.starts_with(p.as_str()),
            (ValueMatch::Suffix(s), Some(v)) => v.ends_with(s.as_str()),
            (ValueMatch::Regex(r), Some(v)) => r.is_match(v),
        }
    }
}

/// `pattern` compiled to match whole values only (`^(?:pattern)$`); the error is
/// the message to show, naming the pattern.
pub fn anchored_regex(pattern: &str) -> Result<Regex, String> {
    Regex::new(&format!("^(?:{pattern})$")).map_err(|e| {
        let e = e.to_string();
        let detail = e.lines().last().unwrap_or("invalid").trim().to_string();
        format!("invalid regex `{pattern}`: {detail}")
    })
}

#[derive(Debug)]
pub struct HeaderMatch {
    pub name: HeaderName,
    pub value: ValueMatch,
    pub invert: bool,
}

#[derive(Debug)]
pub struct QueryMatch {
    pub name: String,
    pub value: ValueMatch,
}

/// A certificate SAN condition (route `peer_san`, RBAC principals, a listener's
/// `allowed_client_sans`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SanMatch {
    Exact(String),
    Prefix(String),
    Suffix(String),
}

impl SanMatch {
    pub fn matches(&self, san: &str) -> bool {
        match self {
            SanMatch::Exact(e) => san == e,
            SanMatch::Prefix(p) => san.starts_with(p.as_str()),
            SanMatch::Suffix(s) => san.ends_with(s.as_str()),
        }
    }
}

#[derive(Debug)]
pub struct Matcher {
    pub path: PathMatch,
    pub headers: Vec<HeaderMatch>,
    pub query: Vec<QueryMatch>,
    pub methods: Vec<Method>,
    pub peer_san: Option<SanMatch>,
}

impl Matcher {
    pub fn matches(&self, rq: &RequestView<'_>) -> bool {
        let path_ok = match &self.path {
            PathMatch::Prefix(p) => rq.path.starts_with(p.as_str()),
            PathMatch::Exact(p) => rq.path == p,
            PathMatch::Regex(r) => r.is_match(rq.path),
        };
        if !path_ok {
            return false;
        }
        if !self.methods.is_empty() && !self.methods.iter().any(|m| m == rq.method) {
            return false;
        }
        for h in &self.headers {
            // Several values of one header are matched joined by `,` as Envoy does.
            let mut values = rq.headers.get_all(&h.name).iter();
            let ok = match (values.next(), values.next()) {
                (None, _) => h.value.matches(None),
                (Some(v), None) => h.value.matches(v.to_str().ok()),
                (Some(_), Some(_)) => {
                    let joined: Vec<&str> = rq
                        .headers
                        .get_all(&h.name)
                        .iter()
                        .filter_map(|v| v.to_str().ok())
                        .collect();
                    h.value.matches(Some(&joined.join(",")))
                }
            };
            if ok == h.invert {
                return false;
            }
        }
        for q in &self.query {
            if !q.value.matches(query_param(rq.query, &q.name).as_deref()) {
                return false;
            }
        }
        if let Some(san) = &self.peer_san {
            if !rq.peer_sans.iter().any(|s| san.matches(strip_san_kind(s))) {
                return false;
            }
        }
        true
    }
}

pub fn strip_san_kind(s: &str) -> &str {
    s.strip_prefix("URI=")
        .or_else(|| s.strip_prefix("DNS="))
        .unwrap_or(s)
}

/// The first value of `name` in a query string, percent-decoded.
pub fn query_param(query: Option<&str>, name: &str) -> Option<String> {
    for pair in query?.split('&') {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        if k == name {
            return Some(percent_decode(v));
        }
    }
    None
}

fn percent_decode(s: &str) -> String {
    if !s.contains('%') && !s.contains('+') {
        return s.to_string();
    }
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if i + 2 < b.len() => {
                let hex = std::str::from_utf8(&b[i + 1..i + 3])
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                match hex {
                    Some(v) => {
                        out.push(v);
                        i += 3;
                    }
                    None => {
                        out.push(b'%');
                        i += 1;
                    }
                }
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

pub enum Target {
    Cluster(Arc<Cluster>),
    Weighted {
        clusters: Vec<(Arc<Cluster>, u32)>,
        total: u32,
    },
    /// The header names a configured cluster; an unknown name is a 503.
    Header(HeaderName),
}

pub struct RouteAction {
    pub target: Target,
    /// Time to response headers, retries included; None = no limit.
    pub timeout: Option<Duration>,
    pub retry: Option<RetryPolicy>,
    /// Cap on a gRPC call's `grpc-timeout`.
    pub max_grpc_timeout: Option<Duration>,
    /// No bytes either way for this long ends a response stream.
    pub stream_idle_timeout: Option<Duration>,
    /// Bound on a whole stream, from the request's start.
    pub max_stream_duration: Option<Duration>,
    pub prefix_rewrite: Option<String>,
    pub host_rewrite: Option<HeaderValue>,
    /// Upgrade protocols tunnelled for this route, lowercase (`websocket`).
    pub upgrades: Box<[Box<str>]>,
    /// Shadow copies (`mirror:`), usually none.
    pub mirrors: Box<[crate::http::mirror::Mirror]>,
}

impl RouteAction {
    /// The protocol of an HTTP/1.1 upgrade request this route tunnels: the request
    /// says `Connection: upgrade` and its `Upgrade` names one of `upgrades`.
    pub fn upgrade_of(&self, headers: &HeaderMap) -> Option<HeaderValue> {
        if self.upgrades.is_empty() {
            return None;
        }
        if !crate::http1::head::has_token(headers, http::header::CONNECTION, "upgrade") {
            return None;
        }
        let up = headers.get(http::header::UPGRADE)?;
        // `websocket`, or `h2c, websocket/13`: the first offer's name is checked.
        let first = up.as_bytes().split(|&b| b == b',').next()?.trim_ascii();
        let name = first.split(|&b| b == b'/').next()?.trim_ascii();
        self.upgrades
            .iter()
            .any(|u| u.as_bytes().eq_ignore_ascii_case(name))
            .then(|| up.clone())
    }

    /// The cluster for this request (weighted choice, or the header's cluster).
    pub fn cluster<'a>(
        &'a self,
        router: &'a Router,
        headers: &HeaderMap,
    ) -> Option<&'a Arc<Cluster>> {
        match &self.target {
            Target::Cluster(c) => Some(c),
            Target::Weighted { clusters, total } => {
                let mut n = fastrand::u32(..(*total).max(1));
                for (c, w) in clusters {
                    if n < *w {
                        return Some(c);
                    }
                    n -= w;
                }
                clusters.last().map(|(c, _)| c)
            }
            Target::Header(h) => {
                let name = headers.get(h)?.to_str().ok()?;
                router.clusters.get(name)
            }
        }
    }
}

pub struct Redirect {
    pub scheme: Option<String>,
    pub host: Option<String>,
    pub port: Option<u16>,
    pub path: Option<String>,
    pub prefix_rewrite: Option<String>,
    pub status: StatusCode,
    pub strip_query: bool,
}

pub struct DirectResponse {
    pub status: StatusCode,
    pub body: bytes::Bytes,
    pub content_type: HeaderValue,
}

pub enum Action {
    Route(RouteAction),
    Redirect(Redirect),
    Direct(DirectResponse),
}

/// What a route's `filter_overrides` entry does to a filter of the listener's chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FilterOverride {
    /// `name: disabled`: the filter does not run for this route.
    Disabled,
    /// The filter runs with the route's own config.
    Configured,
}

pub struct Route {
    /// Configured name, or `<vhost>/<index>`.
    pub name: Arc<str>,
    pub matcher: Matcher,
    pub action: Action,
    /// The listener's chain with this route's overrides applied.
    pub filters: Arc<[Arc<dyn HttpFilter>]>,
    /// The route's `filter_overrides` by filter name, as written (for `/explain`;
    /// `filters` already has them applied).
    pub overrides: Box<[(Arc<str>, FilterOverride)]>,
    /// gRPC call metrics for this route (resolved on its first call).
    pub grpc: Arc<crate::http::grpc::RouteStats>,
    /// Replaces the listener's RBAC for this route.
    pub rbac: Option<Arc<crate::rbac::Rbac>>,
}

pub struct VirtualHost {
    pub name: Arc<str>,
    pub routes: Vec<Route>,
}

/// A listener's route table.
pub struct Router {
    pub vhosts: Vec<VirtualHost>,
    exact: HashMap<String, usize>,
    suffixes: Vec<(String, usize)>,
    wildcard: Option<usize>,
    pub clusters: Arc<HashMap<String, Arc<Cluster>>>,
}

impl Router {
    pub fn new(
        vhosts: Vec<(VirtualHost, Vec<String>)>,
        clusters: Arc<HashMap<String, Arc<Cluster>>>,
    ) -> Router {
        let mut exact = HashMap::new();
        let mut suffixes = Vec::new();
        let mut wildcard = None;
        let mut out = Vec::new();
        for (i, (vh, domains)) in vhosts.into_iter().enumerate() {
            for d in domains {
                let d = d.to_ascii_lowercase();
                if d == "*" {
                    wildcard.get_or_insert(i);
                } else if let Some(s) = d.strip_prefix('*') {
                    suffixes.push((s.to_string(), i));
                } else {
                    exact.entry(d).or_insert(i);
                }
            }
            out.push(vh);
        }
        Router {
            vhosts: out,
            exact,
            suffixes,
            wildcard,
            clusters,
        }
    }

    /// The virtual host for `host` (lower-case, no port): the first in config order
    /// whose domains match.
    pub fn vhost(&self, host: &str) -> Option<&VirtualHost> {
        let mut best = self.exact.get(host).copied();
        for (s, i) in &self.suffixes {
            if best.is_some_and(|b| b < *i) {
                continue;
            }
            if host.len() > s.len() && host.ends_with(s.as_str()) {
                best = Some(best.map_or(*i, |b| b.min(*i)));
            }
        }
        if let Some(w) = self.wildcard {
            best = Some(best.map_or(w, |b| b.min(w)));
        }
        best.and_then(|i| self.vhosts.get(i))
    }

    /// The first matching route.
    pub fn route(&self, rq: &RequestView<'_>) -> Option<(&VirtualHost, &Route)> {
        let vh = self.vhost(rq.host)?;
        vh.routes
            .iter()
            .find(|r| r.matcher.matches(rq))
            .map(|r| (vh, r))
    }
}

/// The path sent upstream after a route's `prefix_rewrite` (the path itself when
/// there is none), with `?query` appended when given. Shared by the proxy and the
/// route test tool.
pub fn rewrite_path(
    matcher: &PathMatch,
    prefix_rewrite: Option<&str>,
    path: &str,
    query: Option<&str>,
) -> String {
    // Sized once for the whole target: this runs per proxied request.
    let extra = query.map_or(0, |q| q.len() + 1);
    let mut s = match (prefix_rewrite, matcher) {
        (None, _) => {
            let mut s = String::with_capacity(path.len() + extra);
            s.push_str(path);
            s
        }
        (Some(rw), PathMatch::Prefix(pre)) => {
            let rest = path.get(pre.len().min(path.len())..).unwrap_or("");
            let mut s = String::with_capacity(rw.len() + rest.len() + 1 + extra);
            s.push_str(rw);
            if s.ends_with('/') && rest.starts_with('/') {
                s.pop();
            }
            s.push_str(rest);
            if s.is_empty() {
                s.push('/');
            }
            s
        }
        (Some(rw), _) => {
            let mut s = String::with_capacity(rw.len() + extra);
            s.push_str(rw);
            s
        }
    };
    if let Some(q) = query {
        s.push('?');
        s.push_str(q);
    }
    s
}

/// The `Location` of a redirect. `host` is the routed host (lower case, no port);
/// `authority` the request's Host / :authority as sent, if any.
pub fn redirect_location(
    r: &Redirect,
    matcher: &PathMatch,
    tls: bool,
    host: &str,
    authority: Option<&str>,
    path: &str,
    query: Option<&str>,
) -> String {
    let scheme = r
        .scheme
        .as_deref()
        .unwrap_or(if tls { "https" } else { "http" });
    let authority = match (&r.host, r.port) {
        (Some(h), Some(p)) => format!("{h}:{p}"),
        (Some(h), None) => h.clone(),
        (None, Some(p)) => format!("{host}:{p}"),
        (None, None) => authority.unwrap_or(host).to_string(),
    };
    let new_path = if let Some(p) = &r.path {
        p.clone()
    } else if let (Some(rw), PathMatch::Prefix(pre)) = (&r.prefix_rewrite, matcher) {
        format!(
            "{rw}{}",
            path.get(pre.len().min(path.len())..).unwrap_or("")
        )
    } else {
        path.to_string()
    };
    let mut location = format!("{scheme}://{authority}{new_path}");
    if let (Some(q), false) = (query, r.strip_query) {
        location.push('?');
        location.push_str(q);
    }
    location
}
