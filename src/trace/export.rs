//! The OTLP/HTTP exporter: batches of spans as one protobuf
//! `ExportTraceServiceRequest` each, `POST`ed to the collector's `/v1/traces`.

use std::time::SystemTime;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{
    span, status, ResourceSpans, ScopeSpans, Span, Status,
};
use prost_otlp::Message;
use tokio::sync::mpsc;

use super::{SpanData, TraceCfg, TraceStats};

/// Drain the queue in batches of `batch_size`, or whatever is there every
/// `flush_interval`; after the queue closes, flush what is left and stop.
pub(super) async fn run(cfg: TraceCfg, mut rx: mpsc::Receiver<SpanData>, stats: TraceStats) {
    let mut batch = Vec::with_capacity(cfg.batch_size);
    loop {
        let open = fill(&cfg, &mut rx, &mut batch).await;
        if !batch.is_empty() {
            let n = batch.len() as u64;
            let body = encode(&cfg, std::mem::take(&mut batch));
            match tokio::time::timeout(cfg.export_timeout, post(&cfg, body)).await {
                Ok(Ok(())) => stats.exported.inc_by(n),
                Ok(Err(e)) => {
                    tracing::debug!(collector = %cfg.collector, error = %e, "span export failed");
                    stats.failed.inc_by(n);
                }
                Err(_) => {
                    tracing::debug!(collector = %cfg.collector, "span export timed out");
                    stats.failed.inc_by(n);
                }
            }
        }
        if !open {
            return;
        }
    }
}

/// Wait for a first span, then take more until the batch is full or the interval
/// has passed. False once the queue is closed.
async fn fill(
    cfg: &TraceCfg,
    rx: &mut mpsc::Receiver<SpanData>,
    batch: &mut Vec<SpanData>,
) -> bool {
    match rx.recv().await {
        Some(s) => batch.push(s),
        None => return false,
    }
    let deadline = tokio::time::Instant::now() + cfg.flush_interval;
    while batch.len() < cfg.batch_size {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(s)) => batch.push(s),
            Ok(None) => return false,
            Err(_) => break,
        }
    }
    true
}

async fn post(cfg: &TraceCfg, body: Vec<u8>) -> Result<(), String> {
    let stream = tokio::net::TcpStream::connect(cfg.collector)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let (mut send, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .map_err(|e| e.to_string())?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let req = http::Request::post(cfg.path.as_str())
        .header(http::header::HOST, cfg.collector.to_string())
        .header(http::header::CONTENT_TYPE, "application/x-protobuf")
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| e.to_string())?;
    let rsp = send.send_request(req).await.map_err(|e| e.to_string())?;
    let status = rsp.status();
    // Read the (small) reply so the collector sees a clean exchange.
    let _ = rsp.into_body().collect().await;
    if status.is_success() {
        Ok(())
    } else {
        Err(format!("collector answered {status}"))
    }
}

fn kv(key: &str, v: any_value::Value) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        value: Some(AnyValue { value: Some(v) }),
        ..Default::default()
    }
}

fn s(v: &str) -> any_value::Value {
    any_value::Value::StringValue(v.to_string())
}

fn i(v: u64) -> any_value::Value {
    any_value::Value::IntValue(i64::try_from(v).unwrap_or(i64::MAX))
}

fn nanos(t: SystemTime) -> u64 {
    let d = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// One span: kind SERVER (the hop as seen by its caller), OpenTelemetry HTTP
/// semantic-convention attributes plus attache's own (`attache.*`).
fn span(d: SpanData) -> Span {
    let start = nanos(d.start);
    let end = start.saturating_add(u64::try_from(d.duration.as_nanos()).unwrap_or(u64::MAX));
    let mut attrs = vec![
        kv("http.request.method", s(d.method.as_str())),
        kv("url.path", s(&d.path)),
        kv("http.response.status_code", i(u64::from(d.status))),
        kv("attache.listener", s(&d.listener)),
        kv("attache.request.body.size", i(d.bytes_in)),
        kv("attache.response.body.size", i(d.bytes_out)),
        kv(
            "attache.duration_ms",
            any_value::Value::DoubleValue(d.duration.as_secs_f64() * 1000.0),
        ),
    ];
    let opt = [
        ("attache.route", d.route.as_deref()),
        ("attache.cluster", d.cluster.as_deref()),
        ("attache.upstream", d.upstream.as_deref()),
        (
            "attache.response_flags",
            (!d.flag.is_empty()).then_some(d.flag),
        ),
    ];
    for (k, v) in opt {
        if let Some(v) = v {
            attrs.push(kv(k, s(v)));
        }
    }
    let error = d.status >= 500 || d.status == 0;
    Span {
        trace_id: d.trace_id.to_be_bytes().to_vec(),
        span_id: d.span_id.to_be_bytes().to_vec(),
        parent_span_id: d
            .parent
            .map(|p| p.to_be_bytes().to_vec())
            .unwrap_or_default(),
        trace_state: d.tracestate.unwrap_or_default(),
        // W3C trace flags: sampled (only sampled spans are exported).
        flags: 1,
        name: d.name.to_string(),
        kind: span::SpanKind::Server as i32,
        start_time_unix_nano: start,
        end_time_unix_nano: end,
        attributes: attrs,
        status: Some(Status {
            code: if error {
                status::StatusCode::Error as i32
            } else {
                status::StatusCode::Unset as i32
            },
            message: if d.flag.is_empty() {
                String::new()
            } else {
                d.flag.to_string()
            },
        }),
        ..Default::default()
    }
}

pub(super) fn encode(cfg: &TraceCfg, spans: Vec<SpanData>) -> Vec<u8> {
    let req = ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![kv("service.name", s(&cfg.service_name))],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                scope: Some(InstrumentationScope {
                    name: "attache".to_string(),
                    version: env!("CARGO_PKG_VERSION").to_string(),
                    ..Default::default()
                }),
                spans: spans.into_iter().map(span).collect(),
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    req.encode_to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;

    #[test]
    fn encodes_a_decodable_request() {
        let cfg = TraceCfg {
            collector: "127.0.0.1:4318".parse().expect("addr"),
            path: "/v1/traces".into(),
            sampling: 1.0,
            service_name: "edge".into(),
            batch_size: 10,
            flush_interval: Duration::from_secs(1),
            max_queue: 10,
            export_timeout: Duration::from_secs(1),
        };
        let d = SpanData {
            trace_id: 0xabc,
            span_id: 0x12,
            parent: Some(0x34),
            tracestate: None,
            name: Arc::from("api"),
            start: SystemTime::UNIX_EPOCH + Duration::from_secs(1),
            duration: Duration::from_millis(2),
            listener: Arc::from("edge"),
            method: http::Method::GET,
            path: "/x".into(),
            route: Some(Arc::from("api")),
            cluster: Some(Arc::from("backend")),
            upstream: None,
            status: 503,
            flag: "UF",
            bytes_in: 0,
            bytes_out: 19,
        };
        let bytes = encode(&cfg, vec![d]);
        let back = ExportTraceServiceRequest::decode(bytes.as_slice()).expect("decode");
        let sp = &back.resource_spans[0].scope_spans[0].spans[0];
        assert_eq!(sp.trace_id.len(), 16);
        assert_eq!(sp.span_id, 0x12u64.to_be_bytes());
        assert_eq!(sp.parent_span_id, 0x34u64.to_be_bytes());
        assert_eq!(sp.end_time_unix_nano - sp.start_time_unix_nano, 2_000_000);
        assert_eq!(
            sp.status.as_ref().map(|s| s.code),
            Some(status::StatusCode::Error as i32)
        );
        assert!(sp.attributes.iter().any(|a| a.key == "attache.cluster"));
    }
}
