//! Thrift route tables (compiled in `config::compile::thrift`): match by method,
//! method prefix, multiplexed service, or everything; pick a cluster or a weighted
//! one.

use std::time::Duration;

use crate::router::ValueMatch;

use super::codec::{DecoderConfig, Message, Protocol};
use super::codec::{Header, MessageType, Transport};

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
    pub(crate) matcher: Match,
    pub(crate) action: Action,
    /// `None`: no timeout.
    pub(crate) timeout: Option<Duration>,
    pub(crate) retry: Option<RetryPolicy>,
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
    pub methods: Vec<String>,
    /// Bound on one try; `None`: only the route timeout.
    pub per_try_timeout: Option<Duration>,
}

impl RetryPolicy {
    /// Whether calls of this (bare) method may be retried.
    pub fn covers(&self, method: &str) -> bool {
        self.methods.iter().any(|m| m == method)
    }
}

/// All present conditions must hold; none present matches every call.
#[derive(Debug, Clone, Default)]
pub(crate) struct Match {
    /// Equal to the method part of the name, or to the whole name.
    pub method: Option<String>,
    /// Prefix of the method part.
    pub method_prefix: Option<String>,
    /// The multiplexed service (`Service:` prefix).
    pub service: Option<String>,
    /// THeader info headers.
    pub headers: Vec<InfoMatch>,
}

/// One `match.headers` entry: a THeader info header's value. Names compare
/// ASCII-case-insensitively (as Envoy's THeader matching); when a name appears
/// twice the last value counts, the one Apache and fbthrift servers read.
#[derive(Debug, Clone)]
pub(crate) struct InfoMatch {
    pub name: String,
    pub value: ValueMatch,
    pub invert: bool,
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
pub(crate) enum Action {
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

/// A cluster's upstream framing (its `thrift:` block): `None` parts follow the
/// downstream call.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UpstreamFraming {
    pub transport: Option<Transport>,
    pub protocol: Option<Protocol>,
}

impl Routes {
    /// A route table over compiled routes (built by `config::compile`).
    pub(crate) fn new(routes: Vec<Route>, decoder: DecoderConfig) -> Routes {
        Routes { routes, decoder }
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
