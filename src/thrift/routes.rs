//! Thrift route tables compiled from `raw::ThriftListener`: match by method, method
//! prefix, multiplexed service, or everything; pick a cluster or a weighted one.

use std::time::Duration;

use crate::config::raw;
use crate::config::Problem;
use crate::router::ValueMatch;

use super::codec::{DecoderConfig, Message, Protocol};
use super::codec::{Header, MessageType, Transport, DEFAULT_MAX_MESSAGE_SIZE};

/// Default per-call timeout (connect, send and reply), as HTTP routes; `0s` = none.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(15);

/// The compiled route table of one Thrift listener.
#[derive(Debug, Clone)]
pub struct Routes {
    routes: Vec<Route>,
    decoder: DecoderConfig,
}

#[derive(Debug, Clone)]
pub struct Route {
    /// The route's `name`, or `routes.<index>`.
    pub name: String,
    matcher: Match,
    action: Action,
    timeout: Option<Duration>,
    retry: Option<RetryPolicy>,
}

/// The conditions `retries.retry_on` may name.
pub const RETRY_ON: &[&str] = &["connect-failure", "timeout", "reset", "exception"];

/// Most retries a route may ask for, as for HTTP routes.
pub const MAX_RETRIES: u32 = 10;

/// A route's compiled `retries:`: which failures of which methods are tried again.
#[derive(Debug, Clone, Default)]
pub struct RetryPolicy {
    /// Retries after the first try.
    pub attempts: u32,
    pub on_connect_failure: bool,
    pub on_timeout: bool,
    pub on_reset: bool,
    /// The upstream replied with a `TApplicationException` (message type
    /// EXCEPTION). A declared IDL exception is a result, never retried.
    pub on_exception: bool,
    /// Bare method names; the only calls retried.
    methods: Vec<String>,
    /// Bound on one try; `None`: only the route timeout.
    pub per_try_timeout: Option<Duration>,
}

impl RetryPolicy {
    /// Whether calls of this (bare) method may be retried.
    pub fn covers(&self, method: &str) -> bool {
        self.methods.iter().any(|m| m == method)
    }
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

/// All present conditions must hold; none present matches every call.
#[derive(Debug, Clone, Default)]
struct Match {
    /// Equal to the method part of the name, or to the whole name.
    method: Option<String>,
    /// Prefix of the method part.
    method_prefix: Option<String>,
    /// The multiplexed service (`Service:` prefix).
    service: Option<String>,
    /// THeader info headers.
    headers: Vec<InfoMatch>,
}

/// One `match.headers` entry: a THeader info header's value. Names compare
/// ASCII-case-insensitively (as Envoy's THeader matching); when a name appears
/// twice the last value counts, the one Apache and fbthrift servers read.
#[derive(Debug, Clone)]
struct InfoMatch {
    name: String,
    value: ValueMatch,
    invert: bool,
}

impl InfoMatch {
    fn matches<'a>(&self, headers: impl Iterator<Item = (&'a [u8], &'a [u8])>) -> bool {
        let value = headers
            .filter(|(k, _)| k.eq_ignore_ascii_case(self.name.as_bytes()))
            .last()
            .map(|(_, v)| v);
        let ok = match value.map(std::str::from_utf8) {
            None => self.value.matches(None),
            Some(Ok(v)) => self.value.matches(Some(v)),
            // Not text: only `present` can say anything about it.
            Some(Err(_)) => matches!(self.value, ValueMatch::Present(true)),
        };
        ok != self.invert
    }
}

#[derive(Debug, Clone)]
enum Action {
    Cluster(String),
    /// (cluster, cumulative weight upper bound); total is the last bound.
    Weighted(Vec<(String, u64)>),
}

impl Match {
    /// `headers`: the call's THeader info headers (none for other transports).
    fn matches<'a, I>(&self, name: &str, headers: I) -> bool
    where
        I: Iterator<Item = (&'a [u8], &'a [u8])> + Clone,
    {
        self.matches_name(name) && self.headers.iter().all(|m| m.matches(headers.clone()))
    }

    /// As [`Header::method`] and [`Header::service`] split a message name.
    fn matches_name(&self, name: &str) -> bool {
        let (service, method) = match name.split_once(':') {
            Some((s, m)) => (Some(s), m),
            None => (None, name),
        };
        if let Some(m) = &self.method {
            if method != m && name != m {
                return false;
            }
        }
        if let Some(p) = &self.method_prefix {
            if !method.starts_with(p.as_str()) {
                return false;
            }
        }
        if let Some(s) = &self.service {
            if service != Some(s.as_str()) {
                return false;
            }
        }
        true
    }
}

impl Route {
    /// The cluster for one call (weighted clusters draw a random number).
    pub fn cluster(&self) -> &str {
        match &self.action {
            Action::Cluster(c) => c,
            Action::Weighted(ws) => {
                let total = ws.last().map_or(0, |(_, w)| *w);
                let draw = fastrand::u64(0..total.max(1));
                ws.iter()
                    .find(|(_, upper)| draw < *upper)
                    .or(ws.last())
                    .map_or("", |(c, _)| c)
            }
        }
    }

    /// The configured targets: one cluster with weight `None`, or each weighted
    /// cluster with its weight.
    pub fn targets(&self) -> Vec<(&str, Option<u64>)> {
        match &self.action {
            Action::Cluster(c) => vec![(c.as_str(), None)],
            Action::Weighted(ws) => {
                let mut prev = 0;
                ws.iter()
                    .map(|(c, upper)| {
                        let w = upper - prev;
                        prev = *upper;
                        (c.as_str(), Some(w))
                    })
                    .collect()
            }
        }
    }

    /// The per-call timeout; `None` means no timeout.
    pub fn timeout(&self) -> Option<Duration> {
        self.timeout
    }

    /// The retry policy when one is configured and covers this call: a two-way
    /// call of a listed method. Oneway calls are never retried (no reply tells
    /// whether the first try was processed).
    pub fn retry_for(&self, h: &Header) -> Option<&RetryPolicy> {
        let policy = self.retry.as_ref()?;
        let two_way = h.message_type == MessageType::Call;
        (two_way && policy.covers(h.method())).then_some(policy)
    }
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

/// A cluster's upstream framing from its `thrift:` block: `None` parts follow the
/// downstream message (`auto` has no meaning upstream and means the same).
pub fn upstream_framing(
    raw: Option<&raw::ThriftUpstream>,
) -> (Option<Transport>, Option<Protocol>) {
    match raw {
        None => (None, None),
        Some(u) => (
            u.transport.and_then(transport),
            u.protocol.and_then(protocol),
        ),
    }
}

impl Routes {
    /// Compile and check a listener's `thrift:` block, reporting every problem.
    /// Paths are relative to the listener, e.g. `thrift.routes.2.match`.
    pub fn compile(raw: &raw::ThriftListener) -> Result<Routes, Vec<Problem>> {
        let mut errors = Vec::new();
        let max = match raw.max_message_size {
            None => DEFAULT_MAX_MESSAGE_SIZE,
            Some(0) => {
                errors.push(Problem::new(
                    "thrift.max_message_size".to_owned(),
                    "must be greater than 0".to_owned(),
                ));
                DEFAULT_MAX_MESSAGE_SIZE
            }
            Some(n) if n > i32::MAX as u32 => {
                errors.push(Problem::new(
                    "thrift.max_message_size".to_owned(),
                    format!("must be at most {} (a frame length is an i32)", i32::MAX),
                ));
                DEFAULT_MAX_MESSAGE_SIZE
            }
            Some(n) => n as usize,
        };
        let mut routes = Vec::with_capacity(raw.routes.len());
        let mut catch_all: Option<usize> = None;
        for (i, r) in raw.routes.iter().enumerate() {
            let at = format!("thrift.routes.{i}");
            let mut matcher = Match::default();
            for (key, value, slot) in [
                ("method", &r.matcher.method, &mut matcher.method),
                (
                    "method_prefix",
                    &r.matcher.method_prefix,
                    &mut matcher.method_prefix,
                ),
                ("service", &r.matcher.service, &mut matcher.service),
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
            matcher.headers = compile_headers(&at, raw.transport, &r.matcher.headers, &mut errors);
            let is_catch_all = r.matcher.method.is_none()
                && r.matcher.method_prefix.is_none()
                && r.matcher.service.is_none()
                && r.matcher.headers.is_empty();
            if let Some(first) = catch_all {
                errors.push(Problem::new(
                    format!("{at}.match"),
                    format!("unreachable: thrift.routes.{first} before it matches every call"),
                ));
            } else if is_catch_all {
                catch_all = Some(i);
            }
            let action = match (&r.route.cluster, &r.route.weighted_clusters) {
                (Some(c), None) if c.is_empty() => {
                    errors.push(Problem::new(
                        format!("{at}.route.cluster"),
                        "must not be empty".to_owned(),
                    ));
                    None
                }
                (Some(c), None) => Some(Action::Cluster(c.clone())),
                (None, Some(ws)) => {
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
                    Some(Action::Weighted(compiled))
                }
                _ => {
                    errors.push(Problem::new(
                        format!("{at}.route"),
                        "set exactly one of `cluster` or `weighted_clusters`".to_owned(),
                    ));
                    None
                }
            };
            let timeout = match r.route.timeout {
                None => Some(DEFAULT_TIMEOUT),
                Some(d) if d.0.is_zero() => None,
                Some(d) => Some(d.0),
            };
            let retry = r
                .route
                .retries
                .as_ref()
                .and_then(|rr| compile_retries(&at, rr, &mut errors));
            if let Some(action) = action {
                let name = r.name.clone().unwrap_or_else(|| format!("routes.{i}"));
                routes.push(Route {
                    name,
                    matcher,
                    action,
                    timeout,
                    retry,
                });
            }
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(Routes {
            routes,
            decoder: DecoderConfig {
                transport: transport(raw.transport),
                protocol: protocol(raw.protocol),
                max_message_size: max,
            },
        })
    }

    /// The first route matching the call, if any.
    pub fn route(&self, msg: &Message) -> Option<&Route> {
        let name = msg.header().name();
        let headers = msg.info_headers();
        self.routes
            .iter()
            .find(|r| r.matcher.matches(name, headers.clone()))
    }

    /// The first route matching a message name (`method` or `Service:method`) and
    /// THeader info headers.
    pub fn route_name<'a, I>(&self, name: &str, headers: I) -> Option<&Route>
    where
        I: Iterator<Item = (&'a [u8], &'a [u8])> + Clone,
    {
        self.routes
            .iter()
            .find(|r| r.matcher.matches(name, headers.clone()))
    }

    /// Every route, in order.
    pub fn all(&self) -> &[Route] {
        &self.routes
    }

    /// The downstream decoder settings (transport, protocol, max_message_size).
    pub fn decoder_config(&self) -> DecoderConfig {
        self.decoder
    }

    /// Every cluster a route may send to, with its config path, so the caller can
    /// report unknown clusters: (`thrift.routes.N.route...`, cluster).
    pub fn clusters(&self) -> Vec<(String, &str)> {
        let mut out = Vec::new();
        for (i, r) in self.routes.iter().enumerate() {
            match &r.action {
                Action::Cluster(c) => {
                    out.push((format!("thrift.routes.{i}.route.cluster"), c.as_str()))
                }
                Action::Weighted(ws) => {
                    for (j, (c, _)) in ws.iter().enumerate() {
                        out.push((
                            format!("thrift.routes.{i}.route.weighted_clusters.{j}.cluster"),
                            c.as_str(),
                        ));
                    }
                }
            }
        }
        out
    }

    /// Names of the routes with `retries:`: the `route` label of the retry counter.
    pub fn retry_route_names(&self) -> impl Iterator<Item = &str> {
        self.routes
            .iter()
            .filter(|r| r.retry.is_some())
            .map(|r| r.name.as_str())
    }

    /// Method names that appear in `match.method`: the only values of the `method`
    /// metric label besides `other`.
    pub fn method_labels(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self
            .routes
            .iter()
            .filter_map(|r| r.matcher.method.as_deref())
            .collect();
        names.sort_unstable();
        names.dedup();
        names
    }
}
