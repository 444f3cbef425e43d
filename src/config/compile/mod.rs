//! Validation and compilation: raw config -> immutable [`Snapshot`], reporting every
//! semantic problem (unknown clusters, duplicates, shadowed routes, bad regexes, ...)
//! with its position. `validate` and `run` share this one code path.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use regex::Regex;

use super::load::{did_you_mean, Diagnostic, SourceMap};
use super::problem::Problem;
use super::raw;
use super::snapshot::Snapshot;
use crate::router;
use crate::stats::Stats;
use crate::upstream::Cluster;

mod access_log;
mod action;
mod cluster;
mod cluster_settings;
mod filters;
mod global;
mod http_listener;
mod listener;
mod rbac;
mod route;
mod thrift;
mod tls;
mod xds;

use cluster::compile_clusters;
pub use cluster::ClusterEntry;
#[cfg(test)]
pub(crate) use cluster_settings::cluster_settings;
use global::{compile_admin, compile_tracing};
use listener::compile_listeners;
#[cfg(test)]
pub(crate) use thrift::thrift_listener;

/// What compilation needs besides the config.
pub struct Options<'a> {
    pub stats: &'a Stats,
    pub services: &'a attache_filters::Services,
    /// Check TLS and discovery file contents (off for `validate --skip-files`).
    pub check_files: bool,
    /// The running config's clusters (on reload): identical ones are reused.
    pub previous: Option<&'a HashMap<String, Arc<Cluster>>>,
}

struct Cx<'a> {
    map: &'a SourceMap,
    errors: Vec<Diagnostic>,
}

impl Cx<'_> {
    fn err(&mut self, path: &str, msg: impl Into<String>) {
        self.errors.push(self.map.diag(path, msg));
    }
    fn err_key(&mut self, path: &str, msg: impl Into<String>) {
        self.errors.push(self.map.diag_key(path, msg));
    }
    /// What a checker found in the block at `base`, each problem placed in the
    /// source by its path under `base`.
    fn report(&mut self, base: &str, problems: impl IntoIterator<Item = Problem>) {
        for p in problems {
            self.err(&p.path_under(base), p.to_string());
        }
    }
    fn line(&self, path: &str) -> usize {
        self.map.locate(path, false).0
    }
}

fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

fn valid_cluster_name(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.')
}

fn is_loopback(addr: &SocketAddr) -> bool {
    addr.ip().is_loopback()
}

fn parse_addr(cx: &mut Cx<'_>, path: &str, s: &str) -> Option<SocketAddr> {
    match s.parse::<SocketAddr>() {
        Ok(a) => Some(a),
        Err(_) if s.parse::<u16>().is_ok() => {
            cx.err(
                path,
                format!("a port alone is not an address; write `0.0.0.0:{s}` (every interface) or `127.0.0.1:{s}`"),
            );
            None
        }
        Err(_) => {
            cx.err(
                path,
                format!(
                    "`{s}` is not an address; write IP:PORT, e.g. `127.0.0.1:8080` or `[::1]:8080`"
                ),
            );
            None
        }
    }
}

fn regex(cx: &mut Cx<'_>, path: &str, pattern: &str) -> Option<Regex> {
    // Anchored like Envoy's safe_regex: the whole value must match.
    crate::router::anchored_regex(pattern)
        .map_err(|msg| cx.err(path, msg))
        .ok()
}

fn unknown_cluster(
    cx: &mut Cx<'_>,
    path: &str,
    name: &str,
    clusters: &HashMap<String, Arc<Cluster>>,
) {
    let hint = match did_you_mean(name, clusters.keys().map(String::as_str)) {
        Some(s) => format!("; did you mean `{s}`?"),
        None if clusters.is_empty() => String::from("; no clusters are defined"),
        None => String::new(),
    };
    cx.err(
        path,
        format!("route references unknown cluster `{name}`{hint}"),
    );
}

/// Validate and compile. On any error, every error.
pub fn compile(
    cfg: &raw::Config,
    map: &SourceMap,
    effective: serde_yaml::Value,
    opts: &Options<'_>,
) -> Result<Snapshot, Vec<Diagnostic>> {
    let mut cx = Cx {
        map,
        errors: Vec::new(),
    };
    let admin = compile_admin(&mut cx, cfg);
    let tracer = cfg
        .tracing
        .as_ref()
        .and_then(|t| compile_tracing(&mut cx, t))
        .map(|t| crate::trace::Tracer::new(t, opts.stats));
    // Clusters first: routes refer to them.
    let clusters = Arc::new(compile_clusters(&mut cx, &cfg.clusters, opts));
    let xds = xds::compile_xds(&mut cx, cfg);
    let listeners = compile_listeners(
        &mut cx,
        &cfg.listeners,
        &admin,
        &clusters,
        tracer.as_ref(),
        opts,
    );
    if !cx.errors.is_empty() {
        cx.errors.sort_by_key(|d| (d.line, d.col));
        cx.errors.dedup();
        return Err(cx.errors);
    }
    Ok(Snapshot {
        admin_address: admin
            .address
            .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 9901))),
        admin_token: admin.token,
        admin_allowed_hosts: admin.allowed_hosts,
        health_address: admin.health,
        drain_timeout: cfg
            .drain_timeout
            .map(|d| d.0)
            .unwrap_or(Duration::from_secs(10)),
        listeners,
        clusters,
        effective,
        xds,
    })
}

// Re-exported for the router benchmark and tests.
pub use router::RequestView;
