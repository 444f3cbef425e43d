//! A Thrift listener's `thrift:` block: routes (match, cluster or weighted
//! clusters, timeout, retries) and connection settings, every default applied;
//! and a cluster's upstream framing. Problems carry paths relative to the
//! listener (`thrift.routes.2.route`).

use crate::config::raw;
use crate::config::Problem;
use crate::router::ValueMatch;
use crate::thrift::codec::{DecoderConfig, Protocol, Transport, DEFAULT_MAX_MESSAGE_SIZE};
use crate::thrift::proxy::{
    DEFAULT_IDLE_TIMEOUT, DEFAULT_MAX_CONCURRENT_CALLS, DEFAULT_MESSAGE_TIMEOUT,
    MAX_CONCURRENT_CALLS,
};
use crate::thrift::routes::{
    Action, InfoMatch, Match, RetryPolicy, Route, DEFAULT_TIMEOUT, MAX_RETRIES, RETRY_ON,
};
use crate::thrift::{Routes, Settings, UpstreamFraming};

/// Compile and check a listener's `thrift:` block, reporting every problem.
pub(crate) fn thrift_listener(t: &raw::ThriftListener) -> Result<Settings, Vec<Problem>> {
    let mut errors = Vec::new();
    let max_message_size = max_message_size(t.max_message_size, &mut errors);
    let max_concurrent_calls = t
        .max_concurrent_calls
        .unwrap_or(DEFAULT_MAX_CONCURRENT_CALLS);
    let routes = compile_routes(t, &mut errors);
    if !(1..=MAX_CONCURRENT_CALLS).contains(&max_concurrent_calls) {
        errors.push(Problem::new(
            "thrift.max_concurrent_calls".to_owned(),
            format!(
                "max_concurrent_calls must be 1..={MAX_CONCURRENT_CALLS} (1 = one call at a time)"
            ),
        ));
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    let decoder = DecoderConfig {
        transport: transport(t.transport),
        protocol: protocol(t.protocol),
        max_message_size,
    };
    Ok(Settings {
        routes: Routes::new(routes, decoder),
        idle_timeout: timeout(t.idle_timeout, DEFAULT_IDLE_TIMEOUT),
        message_timeout: timeout(t.message_timeout, DEFAULT_MESSAGE_TIMEOUT),
        max_concurrent_calls: max_concurrent_calls as usize,
    })
}

/// A cluster's `thrift:` block: `None` parts follow the downstream message
/// (`auto` has no meaning upstream and means the same).
pub(crate) fn upstream_framing(u: Option<&raw::ThriftUpstream>) -> UpstreamFraming {
    UpstreamFraming {
        transport: u.and_then(|u| u.transport).and_then(transport),
        protocol: u.and_then(|u| u.protocol).and_then(protocol),
    }
}

/// A timeout key: absent is `default`, `0s` is none.
fn timeout(
    d: Option<crate::config::duration::Dur>,
    default: std::time::Duration,
) -> Option<std::time::Duration> {
    match d {
        None => Some(default),
        Some(d) if d.0.is_zero() => None,
        Some(d) => Some(d.0),
    }
}

fn max_message_size(n: Option<u32>, errors: &mut Vec<Problem>) -> usize {
    let bad = |msg: String| Problem::new("thrift.max_message_size".to_owned(), msg);
    match n {
        None => DEFAULT_MAX_MESSAGE_SIZE,
        Some(0) => {
            errors.push(bad("must be greater than 0".to_owned()));
            DEFAULT_MAX_MESSAGE_SIZE
        }
        Some(n) if n > i32::MAX as u32 => {
            errors.push(bad(format!(
                "must be at most {} (a frame length is an i32)",
                i32::MAX
            )));
            DEFAULT_MAX_MESSAGE_SIZE
        }
        Some(n) => n as usize,
    }
}

/// Every route in order; a route after a catch-all is unreachable.
fn compile_routes(t: &raw::ThriftListener, errors: &mut Vec<Problem>) -> Vec<Route> {
    let mut routes = Vec::with_capacity(t.routes.len());
    let mut catch_all: Option<usize> = None;
    for (i, r) in t.routes.iter().enumerate() {
        let at = format!("thrift.routes.{i}");
        let matcher = compile_match(&at, t.transport, &r.matcher, errors);
        if let Some(first) = catch_all {
            errors.push(Problem::new(
                format!("{at}.match"),
                format!("unreachable: thrift.routes.{first} before it matches every call"),
            ));
        } else if is_catch_all(&r.matcher) {
            catch_all = Some(i);
        }
        let action = compile_action(&at, &r.route, errors);
        let retry = r
            .route
            .retries
            .as_ref()
            .and_then(|rr| compile_retries(&at, rr, errors));
        if let Some(action) = action {
            routes.push(Route {
                name: r.name.clone().unwrap_or_else(|| format!("routes.{i}")),
                matcher,
                action,
                timeout: timeout(r.route.timeout, DEFAULT_TIMEOUT),
                retry,
            });
        }
    }
    routes
}

fn is_catch_all(m: &raw::ThriftMatch) -> bool {
    m.method.is_none() && m.method_prefix.is_none() && m.service.is_none() && m.headers.is_empty()
}

/// `match:` at `{at}.match`.
fn compile_match(
    at: &str,
    transport: raw::ThriftTransport,
    m: &raw::ThriftMatch,
    errors: &mut Vec<Problem>,
) -> Match {
    let mut matcher = Match::default();
    for (key, value, slot) in [
        ("method", &m.method, &mut matcher.method),
        (
            "method_prefix",
            &m.method_prefix,
            &mut matcher.method_prefix,
        ),
        ("service", &m.service, &mut matcher.service),
    ] {
        match value {
            Some(v) if v.is_empty() => errors.push(Problem::new(
                format!("{at}.match.{key}"),
                "must not be empty; omit `match` to match every call".to_owned(),
            )),
            Some(v) if key == "service" && v.contains(':') => errors.push(Problem::new(
                format!("{at}.match.{key}"),
                "a service name cannot contain `:`".to_owned(),
            )),
            _ => *slot = value.clone(),
        }
    }
    matcher.headers = compile_headers(at, transport, &m.headers, errors);
    matcher
}

/// `route:` at `{at}.route`: one cluster or weighted clusters.
fn compile_action(
    at: &str,
    r: &raw::ThriftRouteAction,
    errors: &mut Vec<Problem>,
) -> Option<Action> {
    match (&r.cluster, &r.weighted_clusters) {
        (Some(c), None) if c.is_empty() => {
            errors.push(Problem::new(
                format!("{at}.route.cluster"),
                "must not be empty".to_owned(),
            ));
            None
        }
        (Some(c), None) => Some(Action::Cluster(c.clone())),
        (None, Some(ws)) => Some(weighted(at, ws, errors)),
        _ => {
            errors.push(Problem::new(
                format!("{at}.route"),
                "set exactly one of `cluster` or `weighted_clusters`".to_owned(),
            ));
            None
        }
    }
}

/// `weighted_clusters:` as cumulative upper bounds.
fn weighted(at: &str, ws: &[raw::WeightedCluster], errors: &mut Vec<Problem>) -> Action {
    let mut upper = 0u64;
    let mut compiled = Vec::with_capacity(ws.len());
    for (j, w) in ws.iter().enumerate() {
        if w.cluster.is_empty() {
            errors.push(Problem::new(
                format!("{at}.route.weighted_clusters.{j}.cluster"),
                "must not be empty".to_owned(),
            ));
        }
        upper += u64::from(w.weight);
        compiled.push((w.cluster.clone(), upper));
    }
    if upper == 0 {
        errors.push(Problem::new(
            format!("{at}.route.weighted_clusters"),
            "weights sum to zero".to_owned(),
        ));
    }
    Action::Weighted(compiled)
}

/// Compile `retries:` at `{at}.route.retries`, reporting every problem.
fn compile_retries(
    at: &str,
    r: &raw::ThriftRetries,
    errors: &mut Vec<Problem>,
) -> Option<RetryPolicy> {
    let at = format!("{at}.route.retries");
    let mut pol = RetryPolicy {
        attempts: r.attempts,
        per_try_timeout: r.per_try_timeout.map(|d| d.0),
        ..RetryPolicy::default()
    };
    let before = errors.len();
    if r.attempts > MAX_RETRIES {
        errors.push(Problem::new(
            format!("{at}.attempts"),
            format!("attempts must be at most {MAX_RETRIES}"),
        ));
    }
    if r.retry_on.is_empty() {
        errors.push(Problem::new(
            format!("{at}.retry_on"),
            format!("name at least one of {}", RETRY_ON.join(", ")),
        ));
    }
    for (i, on) in r.retry_on.iter().enumerate() {
        let flag = match on.as_str() {
            "connect-failure" => &mut pol.on_connect_failure,
            "timeout" => &mut pol.on_timeout,
            "reset" => &mut pol.on_reset,
            "exception" => &mut pol.on_exception,
            other => {
                let hint = crate::config::load::did_you_mean(other, RETRY_ON.iter().copied())
                    .map(|s| format!("did you mean `{s}`?"))
                    .unwrap_or_else(|| format!("expected one of {}", RETRY_ON.join(", ")));
                errors.push(Problem::new(
                    format!("{at}.retry_on.{i}"),
                    format!("unknown retry condition `{other}`; {hint}"),
                ));
                continue;
            }
        };
        *flag = true;
    }
    if r.methods.is_empty() {
        errors.push(Problem::new(
            format!("{at}.methods"),
            "list the idempotent methods to retry; other calls are never retried".to_owned(),
        ));
    }
    for (i, m) in r.methods.iter().enumerate() {
        if m.is_empty() || m.contains(':') {
            errors.push(Problem::new(
                format!("{at}.methods.{i}"),
                "a bare method name, without `Service:`".to_owned(),
            ));
        }
    }
    pol.methods = r.methods.clone();
    if r.per_try_timeout.is_some_and(|d| d.0.is_zero()) {
        errors.push(Problem::new(
            format!("{at}.per_try_timeout"),
            "must be greater than 0; omit it to bound tries only by the route timeout".to_owned(),
        ));
    }
    if pol.on_timeout && r.per_try_timeout.is_none() {
        errors.push(Problem::new(
            format!("{at}.retry_on"),
            "`timeout` needs `per_try_timeout` (the route timeout ends the whole call)".to_owned(),
        ));
    }
    (errors.len() == before).then_some(pol)
}

/// Compile `match.headers` at `{at}.match.headers`, reporting every problem. Only
/// THeader calls carry headers, so a listener that cannot receive them is told.
fn compile_headers(
    at: &str,
    transport: raw::ThriftTransport,
    raw: &[raw::HeaderMatcher],
    errors: &mut Vec<Problem>,
) -> Vec<InfoMatch> {
    let at = format!("{at}.match.headers");
    if !raw.is_empty()
        && matches!(
            transport,
            raw::ThriftTransport::Framed | raw::ThriftTransport::Unframed
        )
    {
        errors.push(Problem::new(
            at.clone(),
            "only THeader calls carry headers; set `thrift.transport: header` (or `auto`)"
                .to_owned(),
        ));
    }
    let mut out = Vec::with_capacity(raw.len());
    for (i, h) in raw.iter().enumerate() {
        let hp = format!("{at}.{i}");
        if h.name.is_empty() {
            errors.push(Problem::new(
                format!("{hp}.name"),
                "must not be empty".to_owned(),
            ));
        }
        match ValueMatch::from_keys(&h.exact, &h.prefix, &h.suffix, &h.regex, h.present) {
            Ok(value) => out.push(InfoMatch {
                name: h.name.clone(),
                value,
                invert: h.invert,
            }),
            Err((key, msg)) => {
                let path = key.map_or(hp.clone(), |k| format!("{hp}.{k}"));
                errors.push(Problem::new(path, msg));
            }
        }
    }
    out
}

fn transport(t: raw::ThriftTransport) -> Option<Transport> {
    match t {
        raw::ThriftTransport::Framed => Some(Transport::Framed),
        raw::ThriftTransport::Unframed => Some(Transport::Unframed),
        raw::ThriftTransport::Header => Some(Transport::Header),
        raw::ThriftTransport::Auto => None,
    }
}

fn protocol(p: raw::ThriftProtocol) -> Option<Protocol> {
    match p {
        raw::ThriftProtocol::Binary => Some(Protocol::Binary),
        raw::ThriftProtocol::Compact => Some(Protocol::Compact),
        raw::ThriftProtocol::Auto => None,
    }
}
