//! An HTTP listener: filter chain, virtual hosts and routes, `http:` settings.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use attache_filters::FactoryContext;

use super::action::compile_action;
use super::filters::{compile_chain, compile_overrides, override_kinds, Chain};
use super::rbac::compile_rbac;
use super::route::compile_match;
use super::Cx;
use crate::config::raw;
use crate::config::snapshot::{Http2Settings, HttpSettings};
use crate::http::grpc::{RouteStats, Vecs};
use crate::router::{Matcher, PathMatch, Route, Router, VirtualHost};
use crate::upstream::Cluster;

/// What every route of one HTTP listener is compiled against.
struct Scope<'a, 'f> {
    listener: &'a raw::Listener,
    chain: &'a Chain,
    clusters: &'a Arc<HashMap<String, Arc<Cluster>>>,
    fcx: &'a FactoryContext<'f>,
    grpc: &'a Vecs,
}

/// A route with only a prefix match, which shadows every later route under it:
/// (prefix, route name, line).
type CatchAll = (String, String, usize);

/// `protocol: http` listener at `p`: the chain, the virtual hosts and `http:`.
pub(super) fn compile_http(
    cx: &mut Cx<'_>,
    p: &str,
    l: &raw::Listener,
    clusters: &Arc<HashMap<String, Arc<Cluster>>>,
    fcx: &FactoryContext<'_>,
) -> HttpSettings {
    let chain = compile_chain(cx, p, &l.filters, fcx);
    let grpc_vecs = Vecs::new(fcx.stats);
    let scope = Scope {
        listener: l,
        chain: &chain,
        clusters,
        fcx,
        grpc: &grpc_vecs,
    };
    let vhosts = compile_vhosts(cx, p, &scope);
    let routing = Routing {
        router: Router::new(vhosts, clusters.clone()),
        filters: chain.listener.clone(),
        filter_names: chain.names(),
        grpc_no_route: RouteStats::new(grpc_vecs, &l.name, crate::http::grpc::NO_ROUTE),
    };
    let opts = l.http.clone().unwrap_or_default();
    http_settings(cx, &format!("{p}.http"), &opts, routing)
}

/// `virtual_hosts:`: unique names, and each domain served by one virtual host.
fn compile_vhosts(
    cx: &mut Cx<'_>,
    p: &str,
    scope: &Scope<'_, '_>,
) -> Vec<(VirtualHost, Vec<String>)> {
    let mut vhosts = Vec::new();
    let mut vh_names: HashSet<&str> = HashSet::new();
    let mut domains_seen: HashMap<String, usize> = HashMap::new();
    for (v, vh) in scope.listener.virtual_hosts.iter().enumerate() {
        let vp = format!("{p}.virtual_hosts.{v}");
        if !vh_names.insert(&vh.name) {
            cx.err(
                &format!("{vp}.name"),
                format!("duplicate virtual host name `{}`", vh.name),
            );
        }
        check_domains(cx, &vp, vh, &mut domains_seen);
        let routes = compile_routes(cx, &vp, vh, scope);
        vhosts.push((
            VirtualHost {
                name: Arc::from(vh.name.as_str()),
                routes,
            },
            vh.domains.clone(),
        ));
    }
    vhosts
}

/// A virtual host's `domains:`: at least one, each a host name, `*.suffix` or `*`,
/// none already served by another virtual host (`seen`: domain -> line).
fn check_domains(
    cx: &mut Cx<'_>,
    vp: &str,
    vh: &raw::VirtualHost,
    seen: &mut HashMap<String, usize>,
) {
    if vh.domains.is_empty() {
        cx.err(
            vp,
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
        if let Some(line) = seen.get(&lower) {
            cx.err(
                &dp,
                format!("domain `{dom}` is already served by the virtual host at line {line}"),
            );
        } else {
            seen.insert(lower, cx.line(&dp));
        }
    }
}

/// A virtual host's `routes:`, in order: unique names, none shadowed by an
/// earlier catch-all.
fn compile_routes(
    cx: &mut Cx<'_>,
    vp: &str,
    vh: &raw::VirtualHost,
    scope: &Scope<'_, '_>,
) -> Vec<Route> {
    let mut routes = Vec::new();
    let mut catch_alls: Vec<CatchAll> = Vec::new();
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
        check_shadowing(cx, &rp, &name, &matcher, &mut catch_alls);
        routes.extend(compile_route(cx, &rp, name, route, matcher, scope));
    }
    routes
}

/// Shadowing: an earlier route with only a prefix matches everything this route
/// would. A route with only a prefix joins `catch_alls`.
fn check_shadowing(
    cx: &mut Cx<'_>,
    rp: &str,
    name: &str,
    matcher: &Matcher,
    catch_alls: &mut Vec<CatchAll>,
) {
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
        catch_alls.push((
            pre.clone(),
            name.to_string(),
            cx.line(&format!("{rp}.match")),
        ));
    }
}

/// One route at `rp`: its action, its filter chain and its `rbac:`.
fn compile_route(
    cx: &mut Cx<'_>,
    rp: &str,
    name: String,
    route: &raw::Route,
    matcher: Matcher,
    scope: &Scope<'_, '_>,
) -> Option<Route> {
    let l = scope.listener;
    let stats = scope.fcx.stats;
    let action = compile_action(cx, rp, route, &matcher, scope.clusters, stats);
    let filters = compile_overrides(cx, rp, route, scope.chain, scope.fcx);
    let rbac = route.rbac.as_ref().and_then(|r| {
        let path = format!("{rp}.rbac");
        compile_rbac(cx, &path, r, l.protocol, &l.name, stats)
    });
    Some(Route {
        action: action?,
        grpc: RouteStats::new(scope.grpc.clone(), &l.name, &name),
        name: Arc::from(name.as_str()),
        matcher,
        filters,
        overrides: override_kinds(route),
        rbac,
    })
}

/// What `http_settings` puts into the listener besides the `http:` options.
struct Routing {
    router: Router,
    filters: Arc<[Arc<dyn attache_filters::HttpFilter>]>,
    filter_names: Box<[Arc<str>]>,
    grpc_no_route: Arc<RouteStats>,
}

/// `http:` at `hp`: header and URI limits, path normalization, timeouts, HTTP/2.
fn http_settings(
    cx: &mut Cx<'_>,
    hp: &str,
    opts: &raw::HttpOptions,
    routing: Routing,
) -> HttpSettings {
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
        router: routing.router,
        filters: routing.filters,
        filter_names: routing.filter_names,
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
        grpc_no_route: routing.grpc_no_route,
    }
}

/// `http.http2`, each value inside the range RFC 9113 section 6.5.2 allows.
pub(super) fn compile_http2(
    cx: &mut Cx<'_>,
    p: &str,
    opts: Option<&raw::Http2Options>,
) -> Http2Settings {
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
