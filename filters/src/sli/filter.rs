//! The `sli` filter: classify each finished stream as success or error, count it
//! per (listener, route) in Prometheus and on the `/sli` board.
//!
//! Route names come from `StreamCtx::route` per request, so metric handles cannot all
//! be resolved at build time. They are resolved on a route's first request and kept
//! in a copy-on-write map read through `ArcSwap` (lock-free; one hash lookup per
//! request). The map is bounded ([`MAX_ROUTES`]); routes past the bound share the
//! `_other` label. Route names are bounded by config, so the bound is a backstop.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use arc_swap::ArcSwap;
use prometheus::{Histogram, IntCounter};

use super::board::{Board, Objective, ObjectiveSpec, Selector, Series};
use super::config::{Config, Errors, StatusPattern};
use crate::api::{ConfigError, FactoryContext, HttpFilter, HttpFilterFactory, StreamCtx};
use crate::grpc::Code;
use crate::stats::Stats;

/// `attache_sli_requests_total{listener,route,outcome}`.
pub const REQUESTS_TOTAL: &str = "attache_sli_requests_total";
/// `attache_sli_request_duration_seconds{listener,route}`.
pub const REQUEST_DURATION: &str = "attache_sli_request_duration_seconds";

/// Distinct route labels per filter instance before `_other` is used.
pub const MAX_ROUTES: usize = 1024;
/// Label for streams with no matched route.
pub const NO_ROUTE: &str = "_none";
/// Label once [`MAX_ROUTES`] is reached.
pub const OTHER_ROUTE: &str = "_other";

/// Statuses 0..640 as a bitset, gRPC codes as another, plus the local-reply rule.
#[derive(Debug, Clone)]
struct Classifier {
    bits: [u64; 10],
    grpc: u32,
    local_replies: bool,
}

impl Classifier {
    fn compile(e: &Errors, at: &str, errors: &mut Vec<ConfigError>) -> Classifier {
        let mut c = Classifier {
            bits: [0; 10],
            grpc: 0,
            local_replies: e.local_replies,
        };
        for (i, p) in e.grpc_codes.iter().enumerate() {
            let code = match p {
                StatusPattern::Code(n) => Code::ALL.get(usize::from(*n)).copied(),
                StatusPattern::Text(t) => Code::from_name(t),
            };
            match code {
                Some(code) => c.grpc |= 1 << (code as u32),
                None => errors.push(ConfigError::at(
                    &format!("{at}.grpc_codes.{i}"),
                    "expected a gRPC status code: a name such as `UNAVAILABLE`, or 0-16",
                )),
            }
        }
        for (i, p) in e.statuses.iter().enumerate() {
            let range = match p {
                StatusPattern::Code(n) => Some((*n, *n)),
                StatusPattern::Text(t) => parse_status(t),
            };
            match range {
                Some((lo, hi)) if (100..=599).contains(&lo) && (100..=599).contains(&hi) => {
                    for s in lo..=hi {
                        c.bits[usize::from(s / 64)] |= 1 << (s % 64);
                    }
                }
                _ => errors.push(ConfigError::at(
                    &format!("{at}.statuses.{i}"),
                    "expected a status (100-599) or a class such as `5xx`",
                )),
            }
        }
        c
    }

    fn is_error(&self, cx: &StreamCtx) -> bool {
        // A rate limit (`RL`) is a refusal, classified by its status like a
        // filter's other replies; the client leaving (`DC`) is not the service's.
        let proxy_failure = cx.local_reply
            && matches!(cx.response_flag, Some(flag) if flag != "DC" && flag != "RL");
        if self.local_replies && proxy_failure {
            return true;
        }
        if let Some(code) = cx.grpc_status {
            return self.grpc & (1 << (code as u32)) != 0;
        }
        match cx.status {
            Some(s) => {
                let s = s.as_u16();
                s < 640 && self.bits[usize::from(s / 64)] & (1 << (s % 64)) != 0
            }
            // No response at all: the client leaving (DC) is not the service's fault.
            None => cx.response_flag != Some("DC"),
        }
    }
}

fn parse_status(t: &str) -> Option<(u16, u16)> {
    let t = t.trim();
    if let Some(d) = t.strip_suffix("xx").or_else(|| t.strip_suffix("XX")) {
        let d: u16 = d.parse().ok()?;
        return (d < 10).then_some((d * 100, d * 100 + 99));
    }
    let n: u16 = t.parse().ok()?;
    Some((n, n))
}

fn objective_spec(o: &super::config::Objective) -> ObjectiveSpec {
    ObjectiveSpec {
        name: o.name.clone(),
        target: o.target,
        window: o.window.get(),
        selector: Selector {
            routes: o.routes.clone(),
            clusters: o.clusters.clone(),
        },
    }
}

/// Builds [`Filter`] from [`Config`].
pub struct Factory;

impl HttpFilterFactory for Factory {
    const NAME: &'static str = "sli";
    type Config = Config;

    fn validate(cfg: &Config) -> Vec<ConfigError> {
        let mut errors = Vec::new();
        Classifier::compile(&cfg.errors, "errors", &mut errors);
        for (name, e) in &cfg.routes {
            Classifier::compile(e, &format!("routes.{name}"), &mut errors);
        }
        let mut seen = std::collections::HashSet::new();
        for (i, o) in cfg.objectives.iter().enumerate() {
            let at = |k: &str| format!("objectives.{i}.{k}");
            if o.name.trim().is_empty() {
                errors.push(ConfigError::at(
                    &at("name"),
                    "objective name must not be empty",
                ));
            } else if !seen.insert(o.name.as_str()) {
                errors.push(ConfigError::at(
                    &at("name"),
                    format!("duplicate objective name `{}`", o.name),
                ));
            }
            if !(o.target > 0.0 && o.target < 100.0) {
                errors.push(ConfigError::at(
                    &at("target"),
                    "target is a success percentage strictly between 0 and 100, e.g. 99.9",
                ));
            }
            if o.routes.is_empty() == o.clusters.is_empty() {
                errors.push(ConfigError::at(
                    &format!("objectives.{i}"),
                    "an objective selects exactly one of `routes` or `clusters` (non-empty)",
                ));
            }
            let w = o.window.get().as_secs();
            if !(60..=400 * 86_400).contains(&w) {
                errors.push(ConfigError::at(
                    &at("window"),
                    "window must be between 1m and 400d",
                ));
            }
        }
        errors
    }

    fn build(cfg: Config, cx: &FactoryContext<'_>) -> Result<Arc<dyn HttpFilter>, ConfigError> {
        let mut errors = Vec::new();
        let default = Arc::new(Classifier::compile(&cfg.errors, "errors", &mut errors));
        let per_route: HashMap<String, Arc<Classifier>> = cfg
            .routes
            .iter()
            .map(|(name, e)| {
                let c = Classifier::compile(e, &format!("routes.{name}"), &mut errors);
                (name.clone(), Arc::new(c))
            })
            .collect();
        if let Some(e) = errors.into_iter().next() {
            return Err(e);
        }
        let board = cx.services.sli.clone();
        let mut by_route = Vec::new();
        let mut by_cluster = Vec::new();
        for o in &cfg.objectives {
            let Some(handle) = board.objective(&objective_spec(o)) else {
                continue;
            };
            if o.routes.is_empty() {
                by_cluster.push((
                    handle,
                    o.clusters.iter().map(|c| Box::from(c.as_str())).collect(),
                ));
            } else {
                by_route.push((handle, o.routes.clone()));
            }
        }
        let metrics = Metrics::new(cx.stats);
        let listener: Arc<str> = cx.listener.into();
        Ok(Arc::new(Filter {
            listener,
            board,
            metrics,
            default,
            per_route,
            by_route,
            by_cluster,
            routes: ArcSwap::from_pointee(HashMap::new()),
            other: OnceLock::new(),
        }))
    }
}

#[derive(Debug)]
struct Metrics {
    requests: prometheus::IntCounterVec,
    duration: prometheus::HistogramVec,
}

impl Metrics {
    fn new(stats: &Stats) -> Metrics {
        Metrics {
            requests: stats.counter_vec(
                REQUESTS_TOTAL,
                "Requests by SLI outcome (success | error)",
                &["listener", "route", "outcome"],
            ),
            duration: stats.histogram_vec(
                REQUEST_DURATION,
                "Request duration as seen by the SLI filter",
                &["listener", "route"],
            ),
        }
    }
}

/// Everything one route's stream touches, resolved once.
#[derive(Debug)]
struct RouteHandles {
    success: IntCounter,
    error: IntCounter,
    duration: Histogram,
    series: Arc<Series>,
    classifier: Arc<Classifier>,
    objectives: Vec<Arc<Objective>>,
}

impl RouteHandles {
    fn new(
        m: &Metrics,
        board: &Board,
        listener: &str,
        route: &str,
        classifier: Arc<Classifier>,
        objectives: Vec<Arc<Objective>>,
    ) -> RouteHandles {
        RouteHandles {
            success: m.requests.with_label_values(&[listener, route, "success"]),
            error: m.requests.with_label_values(&[listener, route, "error"]),
            duration: m.duration.with_label_values(&[listener, route]),
            series: board.series(listener, route),
            classifier,
            objectives,
        }
    }
}

type ClusterObjective = (Arc<Objective>, Vec<Box<str>>);

/// Counts outcomes in `on_complete`.
#[derive(Debug)]
pub struct Filter {
    listener: Arc<str>,
    board: Board,
    metrics: Metrics,
    default: Arc<Classifier>,
    per_route: HashMap<String, Arc<Classifier>>,
    by_route: Vec<(Arc<Objective>, Vec<String>)>,
    by_cluster: Vec<ClusterObjective>,
    routes: ArcSwap<HashMap<Arc<str>, Arc<RouteHandles>>>,
    /// Created on first overflow, so `_other` only shows up when used.
    other: OnceLock<Arc<RouteHandles>>,
}

impl Filter {
    fn handles(&self, route: &Arc<str>) -> Arc<RouteHandles> {
        if let Some(h) = self.routes.load().get(route.as_ref()) {
            return h.clone();
        }
        if self.routes.load().len() >= MAX_ROUTES {
            return self
                .other
                .get_or_init(|| {
                    Arc::new(RouteHandles::new(
                        &self.metrics,
                        &self.board,
                        &self.listener,
                        OTHER_ROUTE,
                        self.default.clone(),
                        Vec::new(),
                    ))
                })
                .clone();
        }
        let label: &str = if route.is_empty() { NO_ROUTE } else { route };
        let classifier = self.per_route.get(label).unwrap_or(&self.default).clone();
        let objectives = self
            .by_route
            .iter()
            .filter(|(_, routes)| routes.iter().any(|r| r == label))
            .map(|(o, _)| o.clone())
            .collect();
        let h = Arc::new(RouteHandles::new(
            &self.metrics,
            &self.board,
            &self.listener,
            label,
            classifier,
            objectives,
        ));
        self.routes.rcu(|map| {
            let mut map = HashMap::clone(map);
            if map.len() < MAX_ROUTES {
                map.entry(route.clone()).or_insert_with(|| h.clone());
            }
            map
        });
        h
    }
}

impl HttpFilter for Filter {
    fn on_complete(&self, cx: &StreamCtx) {
        let h = self.handles(&cx.route);
        let success = !h.classifier.is_error(cx);
        if success { &h.success } else { &h.error }.inc();
        if let Some(d) = cx.duration {
            h.duration.observe(d.as_secs_f64());
        }
        let now = self.board.now();
        h.series.record_at(now, success);
        for o in &h.objectives {
            o.record_at(now, success);
        }
        if let Some(cluster) = cx.cluster.as_deref() {
            for (o, clusters) in &self.by_cluster {
                if clusters.iter().any(|c| c.as_ref() == cluster) {
                    o.record_at(now, success);
                }
            }
        }
    }
}
