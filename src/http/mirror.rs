//! Request mirroring (shadow traffic): a share of a route's requests is copied to
//! another cluster, fire-and-forget. The copy runs in its own task; its response is
//! read and discarded, and neither its latency nor its failure reaches the client.
//! The copy's `Host`/`:authority` gets `-shadow` appended to the host (Envoy's
//! marking), bodies are copied only when already buffered and within
//! `max_body_bytes`, and the mirror cluster's circuit breakers bound the extra load.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Request, Uri, Version};
use http_body_util::BodyExt;
use prometheus::IntCounter;

use crate::stats::Stats;
use crate::upstream::UpstreamProtocol;
use crate::upstream::{Cluster, Outcome, Refused, UpBody};

pub const MIRROR_REQUESTS_TOTAL: &str = "attache_mirror_requests_total";

/// `attache_mirror_requests_total{cluster,result}`.
#[derive(Debug, Clone)]
pub struct MirrorStats {
    /// The copy was sent and a response came back (any status).
    pub sent: IntCounter,
    /// Not sent: a body too large or streamed, or a full circuit breaker.
    pub skipped: IntCounter,
    /// Sent (or tried) and failed: no endpoint, connect failure, reset, timeout.
    pub failed: IntCounter,
}

impl MirrorStats {
    pub fn new(stats: &Stats, cluster: &str) -> MirrorStats {
        let v = stats.counter_vec(
            MIRROR_REQUESTS_TOTAL,
            "Mirrored (shadow) requests by mirror cluster and result",
            &["cluster", "result"],
        );
        MirrorStats {
            sent: v.with_label_values(&[cluster, "sent"]),
            skipped: v.with_label_values(&[cluster, "skipped"]),
            failed: v.with_label_values(&[cluster, "failed"]),
        }
    }
}

/// One `mirror:` entry of a route, compiled.
#[derive(Debug)]
pub struct Mirror {
    pub cluster: Arc<Cluster>,
    /// 0.0..=1.0 (the configured percent / 100).
    pub share: f64,
    pub max_body_bytes: usize,
    /// Bound on the copy, from sending to the end of its response.
    pub timeout: Duration,
    pub stats: MirrorStats,
}

/// Whether a request with a uniform `roll` in [0, 1) is in the mirrored `share`.
fn in_share(share: f64, roll: f64) -> bool {
    share >= 1.0 || roll < share
}

/// The request as forwarded, for the copies.
pub struct Copy<'a> {
    pub parts: &'a http::request::Parts,
    pub path_and_query: &'a str,
    pub body: CopyBody<'a>,
}

/// What a copy can send of the request body.
pub enum CopyBody<'a> {
    Empty,
    Buffered(&'a Bytes),
    /// Streamed to the primary: cannot be copied.
    Streamed,
}

/// Start the copies of this request for every mirror whose share it falls in.
/// Returns at once.
pub fn spawn(mirrors: &[Mirror], req: &Copy<'_>) {
    for m in mirrors {
        if !in_share(m.share, fastrand::f64()) {
            continue;
        }
        let body = match req.body {
            CopyBody::Empty => UpBody::Empty,
            CopyBody::Buffered(b) if b.len() <= m.max_body_bytes => UpBody::Full(Some(b.clone())),
            _ => {
                m.stats.skipped.inc();
                continue;
            }
        };
        let mut attempt = match m.cluster.attempt(None, None) {
            Ok(a) => a,
            Err(Refused::Overflow) => {
                m.stats.skipped.inc();
                continue;
            }
            Err(Refused::NoHealthyUpstream) => {
                m.stats.failed.inc();
                continue;
            }
        };
        let Some(up) = build(&m.cluster, req) else {
            m.stats.failed.inc();
            continue;
        };
        let (stats, timeout) = (m.stats.clone(), m.timeout);
        tokio::spawn(async move {
            let mut body = Some(body);
            let cluster = attempt.cluster().clone();
            let call = async {
                let ep = attempt.endpoint();
                let rsp = crate::upstream::pool::send_with(ep, &cluster.pool, up, &mut body, false)
                    .await
                    .ok()?;
                let status = rsp.status().as_u16();
                // Read the body to its end so the connection can be reused.
                rsp.into_body().collect().await.ok()?;
                Some(status)
            };
            match tokio::time::timeout(timeout, call).await {
                Ok(Some(status)) => {
                    cluster.stats.count_status(status);
                    attempt.report(if status < 500 {
                        Outcome::Success
                    } else {
                        Outcome::Failure
                    });
                    stats.sent.inc();
                }
                _ => {
                    attempt.report(Outcome::Failure);
                    stats.failed.inc();
                }
            }
        });
    }
}

/// The copy's head: the forwarded method, path and headers; the authority with
/// `-shadow` appended to its host.
fn build(cluster: &Cluster, req: &Copy<'_>) -> Option<Request<()>> {
    let host = req
        .parts
        .headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| req.parts.uri.authority().map(|a| a.as_str()))
        .unwrap_or("");
    let shadow = shadow_host(host);
    let mut headers = req.parts.headers.clone();
    let (uri, version) = match cluster.protocol {
        UpstreamProtocol::Http1 => {
            headers.insert(header::HOST, HeaderValue::from_str(&shadow).ok()?);
            (Uri::try_from(req.path_and_query).ok()?, Version::HTTP_11)
        }
        UpstreamProtocol::Http2 => {
            headers.remove(header::HOST);
            let uri = Uri::builder()
                .scheme("http")
                .authority(shadow.as_str())
                .path_and_query(req.path_and_query)
                .build()
                .ok()?;
            (uri, Version::HTTP_2)
        }
    };
    let mut up = Request::new(());
    *up.method_mut() = req.parts.method.clone();
    *up.uri_mut() = uri;
    *up.version_mut() = version;
    *up.headers_mut() = headers;
    Some(up)
}

/// `api.example.com:8080` -> `api.example.com-shadow:8080`; `[::1]:80` ->
/// `[::1]-shadow:80` is not a host, so a literal address keeps its form and only
/// names get the suffix.
pub fn shadow_host(host: &str) -> String {
    let (name, port) = match host.rfind(':') {
        Some(i) if !host.starts_with('[') && host[i + 1..].bytes().all(|b| b.is_ascii_digit()) => {
            (&host[..i], &host[i..])
        }
        _ if host.starts_with('[') => return host.to_string(),
        _ => (host, ""),
    };
    if name.is_empty() {
        return host.to_string();
    }
    format!("{name}-shadow{port}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shadow_suffix_goes_on_the_host_before_the_port() {
        assert_eq!(shadow_host("api.example.com"), "api.example.com-shadow");
        assert_eq!(
            shadow_host("api.example.com:8080"),
            "api.example.com-shadow:8080"
        );
        assert_eq!(shadow_host("127.0.0.1:80"), "127.0.0.1-shadow:80");
        assert_eq!(shadow_host("[::1]:80"), "[::1]:80");
        assert_eq!(shadow_host(""), "");
    }

    #[test]
    fn the_mirrored_share_follows_percent() {
        let share = |s: f64| {
            let mut rng = fastrand::Rng::with_seed(7);
            (0..10_000).filter(|_| in_share(s, rng.f64())).count()
        };
        assert_eq!(share(0.0), 0);
        assert_eq!(share(1.0), 10_000);
        let half = share(0.5);
        assert!((4_700..=5_300).contains(&half), "{half}");
        let small = share(0.001);
        assert!((1..=30).contains(&small), "{small}");
    }
}
