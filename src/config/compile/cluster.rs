//! A cluster's endpoints and fleet settings (health checks, outlier detection,
//! breakers, hash policy).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderName, HeaderValue};

use super::cluster_settings::cluster_settings;
use super::tls::{cluster_settings as tls_settings, tls_material};
use super::{parse_addr, valid_cluster_name, Cx, Options};
use crate::config::endpoints::{self, Spec};
use crate::config::raw;
use crate::stats::{ClusterStats, FleetStats};
use crate::upstream::{Cluster, UpstreamProtocol};

/// `clusters:`, by name. An identical cluster in the running config
/// (`opts.previous`) is reused as is: its pools, health state, ejections and
/// counters survive the reload.
pub(super) fn compile_clusters(
    cx: &mut Cx<'_>,
    raw: &[raw::Cluster],
    opts: &Options<'_>,
) -> HashMap<String, Arc<Cluster>> {
    let mut clusters: HashMap<String, Arc<Cluster>> = HashMap::new();
    let mut cluster_lines: HashMap<String, usize> = HashMap::new();
    for (i, c) in raw.iter().enumerate() {
        let p = format!("clusters.{i}");
        if !valid_cluster_name(&c.name) {
            cx.err(
                &format!("{p}.name"),
                format!(
                    "cluster name `{}` must be letters, digits, `_`, `-` or `.`",
                    c.name
                ),
            );
        }
        if let Some(line) = cluster_lines.get(&c.name) {
            cx.err(
                &format!("{p}.name"),
                format!(
                    "duplicate cluster name `{}` (first defined at line {line})",
                    c.name
                ),
            );
            continue;
        }
        cluster_lines.insert(c.name.clone(), cx.line(&format!("{p}.name")));
        if let Some(prev) = opts.previous.and_then(|m| m.get(&c.name)) {
            if prev.settings.entry.0 == *c {
                clusters.insert(c.name.clone(), prev.clone());
                continue;
            }
        }
        clusters.insert(c.name.clone(), compile_cluster(cx, &p, c, opts));
    }
    clusters
}

/// One cluster at `p`, every setting checked.
fn compile_cluster(cx: &mut Cx<'_>, p: &str, c: &raw::Cluster, opts: &Options<'_>) -> Arc<Cluster> {
    let eps = compile_endpoints(cx, p, c, opts.check_files);
    compile_fleet(cx, p, c);
    if let Some(t) = c.connect_timeout {
        if t.0.is_zero() {
            cx.err(
                &format!("{p}.connect_timeout"),
                "connect_timeout must be greater than 0s",
            );
        }
    }
    let tls = c.tls.as_ref().and_then(|t| {
        let alpn: &[&str] = match c.protocol {
            UpstreamProtocol::Http2 => &["h2"],
            UpstreamProtocol::Http1 => &[],
        };
        tls_material(cx, p, opts.check_files, tls_settings(t, alpn), |s| {
            crate::tls::ClientTls::build(&s, &c.name, opts.stats)
        })
    });
    let stats = ClusterStats::new(opts.stats, &c.name);
    let fleet = FleetStats::new(opts.stats, &c.name);
    Cluster::new(&c.name, cluster_settings(c), eps, stats, fleet, tls)
}

/// The `clusters:` entry a running cluster was built from, opaque outside
/// `config`: a reload with an identical entry reuses the running cluster.
#[derive(Debug, Clone, PartialEq)]
pub struct ClusterEntry(raw::Cluster);

impl ClusterEntry {
    pub(super) fn new(c: &raw::Cluster) -> ClusterEntry {
        ClusterEntry(c.clone())
    }
}

/// The cluster's initial endpoints: `endpoints:`, `discovery.static`, the discovery
/// file's current contents, or none yet (DNS resolves when the cluster starts).
fn compile_endpoints(cx: &mut Cx<'_>, p: &str, c: &raw::Cluster, check_files: bool) -> Vec<Spec> {
    let d = c.discovery.as_ref();
    let sources = [
        !c.endpoints.is_empty(),
        d.is_some_and(|d| d.static_endpoints.is_some()),
        d.is_some_and(|d| d.dns.is_some()),
        d.is_some_and(|d| d.file.is_some()),
        d.is_some_and(|d| d.eds.is_some()),
    ]
    .iter()
    .filter(|b| **b)
    .count();
    if sources == 0 {
        cx.err(
            p,
            format!(
                "cluster `{}` has no endpoints; add `endpoints: [\"127.0.0.1:8080\"]` or `discovery:`",
                c.name
            ),
        );
        return Vec::new();
    }
    if sources > 1 {
        let at = if c.discovery.is_some() {
            format!("{p}.discovery")
        } else {
            p.to_string()
        };
        cx.err_key(
            &at,
            "give exactly one endpoint source: `endpoints`, or one of `discovery.static`, `discovery.dns`, `discovery.file`, `discovery.eds`",
        );
        return Vec::new();
    }
    let max = match c.max_endpoints {
        Some(0) => {
            cx.err(
                &format!("{p}.max_endpoints"),
                "max_endpoints must be at least 1",
            );
            endpoints::DEFAULT_MAX_ENDPOINTS
        }
        Some(m) => m as usize,
        None => endpoints::DEFAULT_MAX_ENDPOINTS,
    };
    let mut eps = Vec::new();
    if !c.endpoints.is_empty() {
        for (j, e) in c.endpoints.iter().enumerate() {
            if let Some(a) = parse_addr(cx, &format!("{p}.endpoints.{j}"), e) {
                if a.port() == 0 {
                    cx.err(
                        &format!("{p}.endpoints.{j}"),
                        format!("endpoint `{e}` needs a port other than 0"),
                    );
                }
                eps.push(Spec {
                    addr: a,
                    weight: 1,
                    zone: None,
                });
            }
        }
        return eps;
    }
    let Some(d) = d else {
        return eps;
    };
    if let Some(list) = &d.static_endpoints {
        match endpoints::check(list, max) {
            Ok(v) => eps = v,
            Err(problems) => cx.report(&format!("{p}.discovery.static"), problems),
        }
    }
    if let Some(dns) = &d.dns {
        check_dns(cx, &format!("{p}.discovery.dns"), dns);
    }
    if let Some(f) = &d.file {
        eps = file_endpoints(cx, &format!("{p}.discovery.file.path"), f, max, check_files);
    }
    eps
}

/// `discovery.dns` at `dp`: HOST:PORT and a refresh of at least 100ms.
fn check_dns(cx: &mut Cx<'_>, dp: &str, dns: &raw::DnsDiscovery) {
    let ok = match dns.name.rsplit_once(':') {
        Some((host, port)) => !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p != 0),
        None => false,
    };
    if !ok {
        cx.err(
            &format!("{dp}.name"),
            format!("`{}` must be HOST:PORT, e.g. `api.internal:8080`", dns.name),
        );
    }
    if dns
        .refresh
        .is_some_and(|r| r.0 < Duration::from_millis(100))
    {
        cx.err(&format!("{dp}.refresh"), "refresh must be at least 100ms");
    }
}

/// `discovery.file` (its `path` at `fp`): with file checks, the file's current
/// endpoints; without, none yet.
fn file_endpoints(
    cx: &mut Cx<'_>,
    fp: &str,
    f: &raw::FileDiscovery,
    max: usize,
    check_files: bool,
) -> Vec<Spec> {
    if f.path.is_empty() {
        cx.err(fp, "path must name the endpoints file");
    } else if check_files {
        match std::fs::read_to_string(&f.path) {
            Ok(text) => match endpoints::parse_file(&f.path, &text, max) {
                Ok(v) => return v,
                Err(diags) => {
                    for dg in diags.into_iter().take(5) {
                        cx.err(fp, format!("endpoints file: {dg}"));
                    }
                }
            },
            Err(e) => cx.err(fp, format!("cannot read endpoints file `{}`: {e}", f.path)),
        }
    }
    Vec::new()
}

/// Health checks, outlier detection, circuit breakers and the hash policy.
fn compile_fleet(cx: &mut Cx<'_>, p: &str, c: &raw::Cluster) {
    if let Some(t) = c.panic_threshold {
        if !(0.0..=100.0).contains(&t) {
            cx.err(
                &format!("{p}.panic_threshold"),
                "panic_threshold is a percentage between 0 and 100",
            );
        }
    }
    if let Some(h) = &c.health_check {
        check_health(cx, &format!("{p}.health_check"), c, h);
    }
    if let Some(o) = &c.outlier_detection {
        check_outlier(cx, &format!("{p}.outlier_detection"), o);
    }
    check_hash_policy(cx, p, c);
}

/// `health_check:` at `hp`: exactly one kind, its fields, and the bounds.
fn check_health(cx: &mut Cx<'_>, hp: &str, c: &raw::Cluster, h: &raw::HealthCheck) {
    let kinds = [
        h.http.is_some(),
        h.tcp.is_some(),
        h.thrift.is_some(),
        h.grpc.is_some(),
    ]
    .iter()
    .filter(|b| **b)
    .count();
    if kinds != 1 {
        cx.err(hp, "give exactly one of `http`, `tcp`, `thrift` or `grpc`");
    }
    if let Some(g) = &h.grpc {
        if c.protocol != raw::UpstreamProtocol::Http2 {
            cx.err(
                &format!("{hp}.grpc"),
                "a gRPC health check needs `protocol: http2` on the cluster",
            );
        }
        if g.authority
            .as_deref()
            .is_some_and(|a| HeaderValue::from_str(a).is_err() || a.is_empty())
        {
            cx.err(
                &format!("{hp}.grpc.authority"),
                "authority is not a valid host",
            );
        }
    }
    if let Some(x) = &h.http {
        if !x.path.starts_with('/') {
            cx.err(&format!("{hp}.http.path"), "path must start with `/`");
        }
        for (i, s) in x.expected_statuses.iter().enumerate() {
            if !(100..=599).contains(s) {
                cx.err(
                    &format!("{hp}.http.expected_statuses.{i}"),
                    format!("{s} is not an HTTP status"),
                );
            }
        }
        if let Some(host) = &x.host {
            if HeaderValue::from_str(host).is_err() {
                cx.err(
                    &format!("{hp}.http.host"),
                    "host is not a valid header value",
                );
            }
        }
    }
    if let Some(t) = &h.thrift {
        if t.method.is_empty() {
            cx.err(&format!("{hp}.thrift.method"), "method must not be empty");
        }
    }
    if h.interval.is_some_and(|d| d.0 < Duration::from_millis(10)) {
        cx.err(&format!("{hp}.interval"), "interval must be at least 10ms");
    }
    if h.timeout.is_some_and(|d| d.0.is_zero()) {
        cx.err(&format!("{hp}.timeout"), "timeout must be greater than 0s");
    }
    for (k, v) in [
        ("unhealthy_threshold", h.unhealthy_threshold),
        ("healthy_threshold", h.healthy_threshold),
    ] {
        if v == Some(0) {
            cx.err(&format!("{hp}.{k}"), format!("{k} must be at least 1"));
        }
    }
}

/// `outlier_detection:` at `op`: a percentage and a positive ejection time.
fn check_outlier(cx: &mut Cx<'_>, op: &str, o: &raw::OutlierDetection) {
    if o.max_ejection_percent.is_some_and(|m| m > 100) {
        cx.err(
            &format!("{op}.max_ejection_percent"),
            "max_ejection_percent is a percentage between 0 and 100",
        );
    }
    if o.base_ejection_time.is_some_and(|d| d.0.is_zero()) {
        cx.err(
            &format!("{op}.base_ejection_time"),
            "base_ejection_time must be greater than 0s",
        );
    }
}

/// `lb_policy: ring_hash` and `hash_on:` come together; one hash key.
fn check_hash_policy(cx: &mut Cx<'_>, p: &str, c: &raw::Cluster) {
    let ring = c.lb_policy == raw::LbPolicy::RingHash;
    match (&c.hash_on, ring) {
        (None, true) => cx.err(
            &format!("{p}.lb_policy"),
            "lb_policy ring_hash needs `hash_on: { header: NAME }` (or cookie / source_ip)",
        ),
        (Some(_), false) => cx.err_key(
            &format!("{p}.hash_on"),
            "hash_on only applies to `lb_policy: ring_hash`",
        ),
        (Some(h), true) => {
            let n = [
                h.header.is_some(),
                h.cookie.is_some(),
                h.source_ip == Some(true),
            ]
            .iter()
            .filter(|b| **b)
            .count();
            if n != 1 {
                cx.err(
                    &format!("{p}.hash_on"),
                    "give exactly one of `header: NAME`, `cookie: NAME` or `source_ip: true`",
                );
            }
            if let Some(name) = &h.header {
                if HeaderName::from_bytes(name.as_bytes()).is_err() {
                    cx.err(
                        &format!("{p}.hash_on.header"),
                        format!("`{name}` is not a valid header name"),
                    );
                }
            }
            if h.cookie.as_deref() == Some("") {
                cx.err(
                    &format!("{p}.hash_on.cookie"),
                    "cookie name must not be empty",
                );
            }
        }
        (None, false) => {}
    }
}
