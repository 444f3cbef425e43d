//! A cluster's endpoints and fleet settings (health checks, outlier detection,
//! breakers, hash policy).

use std::time::Duration;

use http::{HeaderName, HeaderValue};

use super::{parse_addr, Cx};
use crate::config::endpoints::{self, Spec};
use crate::config::raw;

/// The cluster's initial endpoints: `endpoints:`, `discovery.static`, the discovery
/// file's current contents, or none yet (DNS resolves when the cluster starts).
pub(super) fn compile_endpoints(
    cx: &mut Cx<'_>,
    p: &str,
    c: &raw::Cluster,
    check_files: bool,
) -> Vec<Spec> {
    let d = c.discovery.as_ref();
    let sources = [
        !c.endpoints.is_empty(),
        d.is_some_and(|d| d.static_endpoints.is_some()),
        d.is_some_and(|d| d.dns.is_some()),
        d.is_some_and(|d| d.file.is_some()),
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
            "give exactly one endpoint source: `endpoints`, or one of `discovery.static`, `discovery.dns`, `discovery.file`",
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
            Err(errs) => {
                for (path, msg) in errs {
                    let at = if path.is_empty() {
                        format!("{p}.discovery.static")
                    } else {
                        format!("{p}.discovery.static.{path}")
                    };
                    cx.err(&at, msg);
                }
            }
        }
    }
    if let Some(dns) = &d.dns {
        let dp = format!("{p}.discovery.dns");
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
    if let Some(f) = &d.file {
        let fp = format!("{p}.discovery.file.path");
        if f.path.is_empty() {
            cx.err(&fp, "path must name the endpoints file");
        } else if check_files {
            match std::fs::read_to_string(&f.path) {
                Ok(text) => match endpoints::parse_file(&f.path, &text, max) {
                    Ok(v) => eps = v,
                    Err(diags) => {
                        for dg in diags.into_iter().take(5) {
                            cx.err(&fp, format!("endpoints file: {dg}"));
                        }
                    }
                },
                Err(e) => cx.err(&fp, format!("cannot read endpoints file `{}`: {e}", f.path)),
            }
        }
    }
    eps
}

/// Health checks, outlier detection, circuit breakers and the hash policy.
pub(super) fn compile_fleet(cx: &mut Cx<'_>, p: &str, c: &raw::Cluster) {
    if let Some(t) = c.panic_threshold {
        if !(0.0..=100.0).contains(&t) {
            cx.err(
                &format!("{p}.panic_threshold"),
                "panic_threshold is a percentage between 0 and 100",
            );
        }
    }
    if let Some(h) = &c.health_check {
        let hp = format!("{p}.health_check");
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
            cx.err(&hp, "give exactly one of `http`, `tcp`, `thrift` or `grpc`");
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
    if let Some(o) = &c.outlier_detection {
        let op = format!("{p}.outlier_detection");
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
