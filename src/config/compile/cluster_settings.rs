//! A cluster's runtime settings with every default applied: balancing, timeouts,
//! pooling, Thrift framing, the endpoint source, health checking, outlier
//! detection and circuit breakers. The values were
//! checked in `cluster.rs`; this is the one place their defaults live.

use std::time::Duration;

use http::HeaderValue;

use super::cluster::ClusterEntry;
use super::thrift::upstream_framing;
use crate::config::raw;
use crate::thrift::codec::{Protocol, Transport};
use crate::upstream::DEFAULT_MAX_IDLE_PER_ENDPOINT;
use crate::upstream::{breakers, health, outlier, HashKey, Settings, Source};

/// `connect_timeout` when the cluster sets none.
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// `idle_timeout` (pooled connections) when the cluster sets none.
const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// Also used by unit tests that build a cluster from YAML.
pub(crate) fn cluster_settings(cfg: &raw::Cluster) -> Settings {
    let d = cfg.discovery.clone().unwrap_or_default();
    let source = if let Some(dns) = d.dns {
        Source::Dns {
            name: dns.name,
            refresh: dns.refresh.map_or(Duration::from_secs(5), |r| r.0),
        }
    } else if let Some(f) = d.file {
        Source::File { path: f.path }
    } else if let Some(e) = d.eds {
        Source::Eds {
            service: e.service_name.unwrap_or_else(|| cfg.name.clone()),
        }
    } else {
        Source::Static
    };
    Settings {
        lb_policy: cfg.lb_policy,
        hash: cfg.hash_on.as_ref().and_then(hash_key),
        connect_timeout: cfg.connect_timeout.map_or(DEFAULT_CONNECT_TIMEOUT, |d| d.0),
        protocol: cfg.protocol,
        idle_timeout: cfg.idle_timeout.map_or(DEFAULT_IDLE_TIMEOUT, |d| d.0),
        max_idle_per_endpoint: cfg
            .max_idle_per_endpoint
            .unwrap_or(DEFAULT_MAX_IDLE_PER_ENDPOINT) as usize,
        thrift: upstream_framing(cfg.thrift.as_ref()),
        entry: ClusterEntry::new(cfg),
        source,
        breakers: breaker_limits(cfg.circuit_breakers.as_ref()),
        max_endpoints: cfg
            .max_endpoints
            .map_or(crate::config::endpoints::DEFAULT_MAX_ENDPOINTS, |m| {
                m as usize
            }),
        panic_threshold: cfg.panic_threshold.unwrap_or(50.0),
        zone_aware: cfg.zone_aware.unwrap_or(true),
        health: cfg.health_check.as_ref().map(|h| health_config(h, cfg)),
        outlier: cfg.outlier_detection.as_ref().map(outlier_config),
    }
}

/// `hash_on:`: a header, a cookie or the source address (the first one given).
fn hash_key(h: &raw::HashOn) -> Option<HashKey> {
    if let Some(n) = &h.header {
        http::HeaderName::from_bytes(n.as_bytes())
            .ok()
            .map(HashKey::Header)
    } else if let Some(c) = &h.cookie {
        Some(HashKey::Cookie(c.clone()))
    } else if h.source_ip == Some(true) {
        Some(HashKey::SourceIp)
    } else {
        None
    }
}

/// `circuit_breakers:`; each limit left out is no limit.
fn breaker_limits(c: Option<&raw::CircuitBreakers>) -> breakers::Limits {
    let Some(c) = c else {
        return breakers::Limits::default();
    };
    breakers::Limits {
        max_connections: c.max_connections,
        max_pending_requests: c.max_pending_requests,
        max_requests: c.max_requests,
        max_retries: c.max_retries,
    }
}

/// `health_check:`: the probe (an HTTP request's Host and a gRPC authority
/// default to the cluster's name) and its timing.
fn health_config(h: &raw::HealthCheck, cluster: &raw::Cluster) -> health::Config {
    let kind = if let Some(x) = &h.http {
        health::Kind::Http {
            path: x.path.clone(),
            statuses: x.expected_statuses.clone(),
            host: HeaderValue::from_str(x.host.as_deref().unwrap_or(&cluster.name))
                .unwrap_or(HeaderValue::from_static("localhost")),
        }
    } else if let Some(g) = &h.grpc {
        health::Kind::Grpc {
            request: health::grpc_health_request(&g.service),
            authority: g.authority.clone().unwrap_or_else(|| cluster.name.clone()),
        }
    } else if let Some(t) = &h.thrift {
        let up = upstream_framing(cluster.thrift.as_ref());
        health::Kind::Thrift {
            method: t.method.clone(),
            transport: up.transport.unwrap_or(Transport::Framed),
            protocol: up.protocol.unwrap_or(Protocol::Binary),
        }
    } else {
        health::Kind::Tcp
    };
    health::Config {
        kind,
        interval: h.interval.map_or(Duration::from_secs(5), |d| d.0),
        timeout: h.timeout.map_or(Duration::from_secs(1), |d| d.0),
        unhealthy_threshold: h.unhealthy_threshold.unwrap_or(3).max(1),
        healthy_threshold: h.healthy_threshold.unwrap_or(2).max(1),
        jitter: h.jitter.map_or(Duration::ZERO, |d| d.0),
    }
}

/// `outlier_detection:` with Envoy's defaults.
fn outlier_config(o: &raw::OutlierDetection) -> outlier::Config {
    outlier::Config {
        consecutive_5xx: o.consecutive_5xx.unwrap_or(5),
        consecutive_connect_failure: o.consecutive_connect_failure.unwrap_or(5),
        consecutive_exceptions: o.consecutive_exceptions.unwrap_or(5),
        base_ejection_time: o
            .base_ejection_time
            .map_or(Duration::from_secs(30), |d| d.0),
        max_ejection_time: o
            .max_ejection_time
            .map_or(Duration::from_secs(300), |d| d.0),
        max_ejection_percent: o.max_ejection_percent.unwrap_or(10),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::upstream::{LbPolicy, UpstreamProtocol};

    fn settings(yaml: &str) -> Settings {
        let cfg: raw::Cluster = serde_yaml::from_str(yaml).expect("cluster yaml");
        cluster_settings(&cfg)
    }

    #[test]
    fn a_bare_cluster_gets_every_default() {
        let s = settings("{ name: c, endpoints: [] }");
        assert_eq!(s.lb_policy, LbPolicy::default());
        assert!(s.hash.is_none());
        assert_eq!(s.connect_timeout, Duration::from_secs(1));
        assert_eq!(s.protocol, UpstreamProtocol::Http1);
        assert_eq!(s.idle_timeout, Duration::from_secs(60));
        assert_eq!(
            s.max_idle_per_endpoint,
            DEFAULT_MAX_IDLE_PER_ENDPOINT as usize
        );
        assert_eq!(s.thrift, crate::thrift::UpstreamFraming::default());
        assert_eq!(s.panic_threshold, 50.0);
        assert!(s.zone_aware);
        assert!(s.health.is_none() && s.outlier.is_none());
    }

    #[test]
    fn set_keys_win_over_defaults() {
        let s = settings(
            "{ name: c, endpoints: [], lb_policy: ring_hash, hash_on: { header: x-user },
               connect_timeout: 3s, protocol: http2, idle_timeout: 5s,
               max_idle_per_endpoint: 7, thrift: { transport: header, protocol: auto } }",
        );
        assert_eq!(s.lb_policy, LbPolicy::RingHash);
        assert!(matches!(s.hash, Some(HashKey::Header(ref h)) if h == "x-user"));
        assert_eq!(s.connect_timeout, Duration::from_secs(3));
        assert_eq!(s.protocol, UpstreamProtocol::Http2);
        assert_eq!(s.idle_timeout, Duration::from_secs(5));
        assert_eq!(s.max_idle_per_endpoint, 7);
        assert_eq!(s.thrift.transport, Some(Transport::Header));
        assert_eq!(
            s.thrift.protocol, None,
            "`auto` follows the downstream call"
        );
    }

    #[test]
    fn an_identical_entry_is_equal_and_a_changed_one_is_not() {
        let a = settings("{ name: c, endpoints: [\"127.0.0.1:1\"] }").entry;
        let b = settings("{ name: c, endpoints: [\"127.0.0.1:1\"] }").entry;
        let c = settings("{ name: c, endpoints: [\"127.0.0.1:1\"], connect_timeout: 2s }").entry;
        assert_eq!(a, b);
        assert_ne!(a, c);
    }
}
