//! Active health checking: one task per cluster checks every endpoint each interval
//! (plus jitter), at most 64 at a time, with an HTTP GET, a TCP connect (with the
//! cluster's TLS) or a Thrift call. Thresholds move endpoints in and out of
//! rotation; the host set is rebuilt only when some endpoint's state changed.

use std::sync::{Arc, Weak};
use std::time::Duration;

use bytes::BytesMut;
use futures_util::StreamExt;
use http::{HeaderValue, Request, Uri};
use http_body_util::BodyExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{Cluster, Endpoint, UpBody};
use crate::thrift::codec::{Decoder, DecoderConfig, Protocol, Transport};

#[derive(Debug, Clone)]
pub enum Kind {
    Http {
        path: String,
        statuses: Vec<u16>,
        host: HeaderValue,
    },
    Tcp,
    Thrift {
        method: String,
        transport: Transport,
        protocol: Protocol,
    },
    /// `grpc.health.v1.Health/Check`: the request message, ready to send.
    Grpc {
        request: bytes::Bytes,
        authority: String,
    },
}

#[derive(Debug, Clone)]
pub struct Config {
    pub kind: Kind,
    pub interval: Duration,
    pub timeout: Duration,
    pub unhealthy_threshold: u32,
    pub healthy_threshold: u32,
    pub jitter: Duration,
}

pub(super) async fn run(cluster: Weak<Cluster>, wake: Arc<tokio::sync::Notify>) {
    loop {
        let (interval, jitter) = {
            let Some(c) = cluster.upgrade() else {
                return;
            };
            let Some(cfg) = c.settings.health.clone() else {
                return;
            };
            let eps = c.hosts().all.clone();
            let results: Vec<(Arc<Endpoint>, bool)> = futures_util::stream::iter(eps)
                .map(|ep| {
                    let c = c.clone();
                    let cfg = &cfg;
                    async move {
                        let ok = matches!(
                            tokio::time::timeout(cfg.timeout, check(&c, cfg, &ep)).await,
                            Ok(true)
                        );
                        (ep, ok)
                    }
                })
                .buffer_unordered(64)
                .collect()
                .await;
            let mut changed = false;
            for (ep, ok) in results {
                if ok {
                    c.fleet.hc_success.inc();
                } else {
                    c.fleet.hc_failure.inc();
                }
                if ep.record_check(ok, cfg.healthy_threshold, cfg.unhealthy_threshold) {
                    changed = true;
                    tracing::warn!(cluster = %c.name, upstream = %ep.authority, health = ?ep.health(), "endpoint health changed");
                }
            }
            if changed {
                c.rebuild();
            }
            (cfg.interval, cfg.jitter)
        };
        let extra = if jitter.is_zero() {
            Duration::ZERO
        } else {
            Duration::from_millis(fastrand::u64(..=jitter.as_millis() as u64))
        };
        tokio::select! {
            _ = tokio::time::sleep(interval + extra) => {}
            _ = wake.notified() => {}
        }
    }
}

async fn check(c: &Cluster, cfg: &Config, ep: &Endpoint) -> bool {
    match &cfg.kind {
        Kind::Tcp => c.connector.connect_addr(ep.addr).await.is_ok(),
        Kind::Http {
            path,
            statuses,
            host,
        } => {
            let built = if c.protocol == super::UpstreamProtocol::Http2 {
                Uri::builder()
                    .scheme("http")
                    .authority(host.to_str().unwrap_or(&ep.authority))
                    .path_and_query(path.as_str())
                    .build()
            } else {
                Uri::try_from(path.as_str()).map_err(http::Error::from)
            };
            let Ok(uri) = built else {
                return false;
            };
            let mut req = Request::new(UpBody::Empty);
            *req.uri_mut() = uri;
            if c.protocol == super::UpstreamProtocol::Http2 {
                *req.version_mut() = http::Version::HTTP_2;
            }
            if c.protocol == super::UpstreamProtocol::Http1 {
                req.headers_mut().insert(http::header::HOST, host.clone());
            }
            req.headers_mut().insert(
                http::header::USER_AGENT,
                HeaderValue::from_static("attache-health-check"),
            );
            match super::pool::send(ep, &c.pool, req).await {
                Ok(rsp) => {
                    let status = rsp.status().as_u16();
                    // Read the (bounded) body: a complete one returns the connection
                    // to the pool.
                    let _ = http_body_util::Limited::new(rsp.into_body(), 64 * 1024)
                        .collect()
                        .await;
                    if statuses.is_empty() {
                        (200..300).contains(&status)
                    } else {
                        statuses.contains(&status)
                    }
                }
                Err(_) => false,
            }
        }
        Kind::Thrift {
            method,
            transport,
            protocol,
        } => thrift_check(c, ep, method, *transport, *protocol)
            .await
            .is_ok(),
        Kind::Grpc { request, authority } => grpc_check(c, ep, request, authority).await,
    }
}

const GRPC_HEALTH_PATH: &str = "/grpc.health.v1.Health/Check";
/// `HealthCheckResponse.ServingStatus.SERVING`.
const SERVING: u64 = 1;

/// A gRPC message frame holding `HealthCheckRequest { service }` (field 1, string).
pub fn grpc_health_request(service: &str) -> bytes::Bytes {
    let mut msg = Vec::with_capacity(service.len() + 8);
    if !service.is_empty() {
        msg.push(0x0a);
        put_varint(&mut msg, service.len() as u64);
        msg.extend_from_slice(service.as_bytes());
    }
    let mut out = Vec::with_capacity(msg.len() + 5);
    out.push(0); // not compressed
    out.extend_from_slice(&(msg.len() as u32).to_be_bytes());
    out.extend_from_slice(&msg);
    out.into()
}

fn put_varint(out: &mut Vec<u8>, mut n: u64) {
    while n >= 0x80 {
        out.push((n as u8) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

fn get_varint(b: &[u8], i: &mut usize) -> Option<u64> {
    let mut n = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = *b.get(*i)?;
        *i += 1;
        n |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Some(n);
        }
    }
    None
}

/// `HealthCheckResponse.status` (field 1, enum) from one gRPC message frame; None
/// when the frame or the message is malformed. Unknown fields are skipped.
pub fn grpc_serving_status(frame: &[u8]) -> Option<u64> {
    let (&flag, rest) = frame.split_first()?;
    let len = u32::from_be_bytes(rest.get(..4)?.try_into().ok()?) as usize;
    let msg = rest.get(4..4 + len)?;
    if flag != 0 || rest.len() != 4 + len {
        return None;
    }
    let (mut i, mut status) = (0, 0);
    while i < msg.len() {
        let key = get_varint(msg, &mut i)?;
        match key & 7 {
            0 => {
                let v = get_varint(msg, &mut i)?;
                if key >> 3 == 1 {
                    status = v;
                }
            }
            1 => i += 8,
            2 => {
                let n = usize::try_from(get_varint(msg, &mut i)?).ok()?;
                i = i.checked_add(n)?;
            }
            5 => i += 4,
            _ => return None,
        }
    }
    (i == msg.len()).then_some(status)
}

/// SERVING with `grpc-status: 0` is healthy; any other status, a non-200 answer,
/// a malformed reply or a transport failure is not.
async fn grpc_check(c: &Cluster, ep: &Endpoint, request: &bytes::Bytes, authority: &str) -> bool {
    let Ok(uri) = Uri::builder()
        .scheme("http")
        .authority(authority)
        .path_and_query(GRPC_HEALTH_PATH)
        .build()
    else {
        return false;
    };
    let mut req = Request::new(UpBody::Full(Some(request.clone())));
    *req.method_mut() = http::Method::POST;
    *req.uri_mut() = uri;
    *req.version_mut() = http::Version::HTTP_2;
    let h = req.headers_mut();
    h.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    h.insert(http::header::TE, HeaderValue::from_static("trailers"));
    h.insert(
        http::header::USER_AGENT,
        HeaderValue::from_static("attache-health-check"),
    );
    let Ok(rsp) = super::pool::send(ep, &c.pool, req).await else {
        return false;
    };
    if rsp.status() != http::StatusCode::OK {
        return false;
    }
    let (parts, body) = rsp.into_parts();
    let Ok(all) = http_body_util::Limited::new(body, 64 * 1024)
        .collect()
        .await
    else {
        return false;
    };
    let status = all
        .trailers()
        .and_then(crate::http::grpc::status_of)
        .or_else(|| crate::http::grpc::status_of(&parts.headers));
    status == Some(attache_filters::grpc::Code::Ok)
        && grpc_serving_status(&all.to_bytes()) == Some(SERVING)
}

/// A call with no arguments, in any transport and protocol.
pub fn encode_call(method: &str, transport: Transport, protocol: Protocol) -> Vec<u8> {
    let mut body = Vec::with_capacity(method.len() + 16);
    match protocol {
        Protocol::Binary => {
            body.extend_from_slice(&0x8001_0001u32.to_be_bytes());
            body.extend_from_slice(&(method.len() as u32).to_be_bytes());
            body.extend_from_slice(method.as_bytes());
            body.extend_from_slice(&1i32.to_be_bytes());
        }
        Protocol::Compact => {
            body.push(0x82);
            body.push(0x21); // call (1) << 5 | version 1
            body.push(1); // seq id varint
            let mut n = method.len();
            loop {
                let b = (n & 0x7f) as u8;
                n >>= 7;
                if n == 0 {
                    body.push(b);
                    break;
                }
                body.push(b | 0x80);
            }
            body.extend_from_slice(method.as_bytes());
        }
    }
    body.push(0); // empty args struct: field stop
    if transport == Transport::Unframed {
        return body;
    }
    // Framed or THeader: re-framed as the proxy re-frames calls.
    let mut buf = BytesMut::from(&body[..]);
    let mut dec = Decoder::new(DecoderConfig {
        transport: Some(Transport::Unframed),
        protocol: Some(protocol),
        max_message_size: body.len(),
    });
    match dec.decode(&mut buf) {
        Ok(Some(msg)) => {
            let (prefix, payload) = msg.wire_for(transport, None);
            let prefix = prefix.as_ref().map_or(&[][..], |p| p.as_bytes());
            [prefix, &payload[..]].concat()
        }
        // The call above always decodes; send it unframed rather than panic.
        _ => body,
    }
}

/// Any decodable reply (result, declared exception or TApplicationException) is
/// healthy; a transport failure or garbage is not.
async fn thrift_check(
    c: &Cluster,
    ep: &Endpoint,
    method: &str,
    transport: Transport,
    protocol: Protocol,
) -> std::io::Result<()> {
    let mut s = c.connector.connect_addr(ep.addr).await?;
    s.write_all(&encode_call(method, transport, protocol))
        .await?;
    let mut dec = Decoder::new(DecoderConfig {
        transport: Some(transport),
        protocol: Some(protocol),
        max_message_size: 1 << 20,
    });
    let mut buf = BytesMut::with_capacity(4096);
    loop {
        if s.read_buf(&mut buf).await? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        match dec.decode(&mut buf) {
            Ok(Some(_)) => return Ok(()),
            Ok(None) => {}
            Err(e) => return Err(std::io::Error::other(e.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_health_messages_encode_and_decode() {
        assert_eq!(&grpc_health_request("")[..], &[0, 0, 0, 0, 0]);
        assert_eq!(
            &grpc_health_request("a.B")[..],
            &[0, 0, 0, 0, 5, 0x0a, 3, b'a', b'.', b'B']
        );
        let serving = [0, 0, 0, 0, 2, 0x08, 1];
        assert_eq!(grpc_serving_status(&serving), Some(1));
        // NOT_SERVING, an unknown field skipped, and the default (UNKNOWN, empty).
        assert_eq!(
            grpc_serving_status(&[0, 0, 0, 0, 5, 0x12, 1, b'x', 0x08, 2]),
            Some(2)
        );
        assert_eq!(grpc_serving_status(&[0, 0, 0, 0, 0]), Some(0));
        // Truncated, trailing bytes, compressed, bad wire type: malformed.
        for bad in [
            &[0, 0, 0, 0, 2, 0x08][..],
            &[0, 0, 0, 0, 2, 0x08, 1, 0],
            &[1, 0, 0, 0, 2, 0x08, 1],
            &[0, 0, 0, 0, 1, 0x0f],
            &[],
        ] {
            assert_eq!(grpc_serving_status(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn encoded_health_check_calls_decode_as_calls() {
        for (t, p) in [
            (Transport::Framed, Protocol::Binary),
            (Transport::Unframed, Protocol::Binary),
            (Transport::Framed, Protocol::Compact),
            (Transport::Unframed, Protocol::Compact),
            (Transport::Header, Protocol::Binary),
            (Transport::Header, Protocol::Compact),
        ] {
            let mut buf = BytesMut::from(&encode_call("ping", t, p)[..]);
            let mut dec = Decoder::new(DecoderConfig::default());
            let m = dec.decode(&mut buf).expect("decodes").expect("a message");
            assert_eq!(m.header().name(), "ping");
            assert_eq!(m.header().transport, t);
            assert_eq!(m.header().protocol, p);
        }
    }
}
