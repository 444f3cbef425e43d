//! Trace propagation and OTLP export through two real attache hops
//! (client -> A -> B -> origin), with an OTLP/HTTP receiver in the test that decodes
//! `ExportTraceServiceRequest` with the `opentelemetry-proto` types.

mod support;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::{span::SpanKind, Span};
use prost_otlp::Message;
use support::{dead_port, eventually, get, Origin, Proxy};

/// A span as received, with the `service.name` of its resource.
#[derive(Clone, Debug)]
struct Got {
    service: String,
    span: Span,
}

#[derive(Clone, Default)]
struct Receiver {
    spans: Arc<Mutex<Vec<Got>>>,
    content_types: Arc<Mutex<Vec<String>>>,
}

impl Receiver {
    async fn start() -> (Receiver, SocketAddr) {
        let r = Receiver::default();
        let rr = r.clone();
        let addr = support::serve_collected(move |parts: http::request::Parts, body: Bytes| {
            let ok = parts.method == http::Method::POST && parts.uri.path() == "/v1/traces";
            let ct = parts
                .headers
                .get("content-type")
                .and_then(|v| v.to_str().ok());
            rr.content_types
                .lock()
                .expect("lock")
                .push(ct.unwrap_or("").to_string());
            let status = match ExportTraceServiceRequest::decode(body) {
                Ok(d) if ok => {
                    rr.take(d);
                    http::StatusCode::OK
                }
                _ => http::StatusCode::BAD_REQUEST,
            };
            async move {
                let mut rsp = http::Response::new(Full::new(Bytes::new()));
                *rsp.status_mut() = status;
                rsp
            }
        })
        .await;
        (r, addr)
    }

    fn take(&self, req: ExportTraceServiceRequest) {
        let mut spans = self.spans.lock().expect("lock");
        for rs in req.resource_spans {
            let service = rs
                .resource
                .iter()
                .flat_map(|r| r.attributes.iter())
                .find(|kv| kv.key == "service.name")
                .and_then(|kv| kv.value.as_ref()?.value.as_ref())
                .map(|v| match v {
                    Value::StringValue(s) => s.clone(),
                    _ => String::new(),
                })
                .unwrap_or_default();
            for ss in rs.scope_spans {
                for span in ss.spans {
                    spans.push(Got {
                        service: service.clone(),
                        span,
                    });
                }
            }
        }
    }

    /// The spans of `trace_id` once there are at least `n`.
    async fn wait(&self, trace_id: &[u8], n: usize) -> Vec<Got> {
        eventually(Duration::from_secs(20), "spans exported", || {
            let spans = self.of_trace(trace_id);
            async move { (spans.len() >= n).then_some(spans) }
        })
        .await
    }

    fn of_trace(&self, trace_id: &[u8]) -> Vec<Got> {
        self.spans
            .lock()
            .expect("lock")
            .iter()
            .filter(|g| g.span.trace_id == trace_id)
            .cloned()
            .collect()
    }
}

fn attr(span: &Span, key: &str) -> Option<String> {
    span.attributes.iter().find(|a| a.key == key).and_then(|a| {
        match a.value.as_ref()?.value.as_ref()? {
            Value::StringValue(s) => Some(s.clone()),
            Value::IntValue(i) => Some(i.to_string()),
            _ => None,
        }
    })
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect()
}

fn hop(name: &str, upstream: SocketAddr, collector: SocketAddr, sampling: &str) -> String {
    format!(
        r#"
tracing:
  collector: "{collector}"
  service_name: {name}
  sampling: {sampling}
  flush_interval: 50ms
listeners:
  - name: {name}
    address: 127.0.0.1:0
    access_log: {{ path: stdout, format: json }}
    virtual_hosts:
      - name: all
        domains: ["*"]
        routes:
          - name: {name}_route
            match: {{ prefix: / }}
            route: {{ cluster: next }}
clusters:
  - name: next
    endpoints: ["{upstream}"]
"#
    )
}

/// client -> A -> B -> origin, both hops exporting to `collector`.
async fn two_hops(collector: SocketAddr, sampling: &str) -> (Proxy, Proxy, Origin) {
    let origin = Origin::start("origin").await;
    let b = Proxy::start(&hop("b", origin.addr, collector, sampling));
    let a = Proxy::start(&hop("a", b.addr("b"), collector, sampling));
    (a, b, origin)
}

/// The headers the origin received, from its JSON echo.
async fn origin_headers(a: &Proxy, path: &str, headers: &[(&str, &str)]) -> serde_json::Value {
    let r = get(&a.url("a", path), headers).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let v: serde_json::Value = serde_json::from_slice(&r.body).expect("json");
    v["headers"].clone()
}

fn header<'a>(h: &'a serde_json::Value, name: &str) -> &'a str {
    h[name].as_str().unwrap_or("")
}

const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN: &str = "00f067aa0ba902b7";

#[tokio::test]
async fn w3c_parent_child_ids_across_two_hops() {
    let (rx, collector) = Receiver::start().await;
    let (a, _b, _origin) = two_hops(collector, "1.0").await;
    let tp = format!("00-{TRACE}-{CALLER_SPAN}-01");
    let h = origin_headers(
        &a,
        "/w3c",
        &[("traceparent", &tp), ("tracestate", "vendor=1")],
    )
    .await;

    // The origin sees the same trace, B's span as parent, sampled, the state kept.
    let got = header(&h, "traceparent");
    assert_eq!(got.len(), 55, "{got}");
    assert_eq!(&got[..36], &format!("00-{TRACE}-"));
    assert!(got.ends_with("-01"), "{got}");
    let b_span_hex = &got[36..52];
    assert_eq!(header(&h, "tracestate"), "vendor=1");

    let trace_id = unhex(TRACE);
    let spans = rx.wait(&trace_id, 2).await;
    assert_eq!(spans.len(), 2, "{spans:?}");
    let find = |svc: &str| {
        spans
            .iter()
            .find(|g| g.service == svc)
            .map(|g| g.span.clone())
            .expect(svc)
    };
    let (sa, sb) = (find("a"), find("b"));
    // A's parent is the caller; B's parent is A; the origin's parent is B.
    assert_eq!(sa.parent_span_id, unhex(CALLER_SPAN));
    assert_eq!(sb.parent_span_id, sa.span_id);
    assert_eq!(sb.span_id, unhex(b_span_hex));
    assert_ne!(sa.span_id, sb.span_id);
    for (s, route) in [(&sa, "a_route"), (&sb, "b_route")] {
        assert_eq!(s.name, route);
        assert_eq!(s.kind, SpanKind::Server as i32);
        assert_eq!(s.trace_state, "vendor=1");
        assert_eq!(attr(s, "attache.route").as_deref(), Some(route));
        assert_eq!(attr(s, "attache.cluster").as_deref(), Some("next"));
        assert_eq!(attr(s, "http.response.status_code").as_deref(), Some("200"));
        assert_eq!(attr(s, "url.path").as_deref(), Some("/w3c"));
        assert!(attr(s, "attache.upstream").is_some());
        assert!(s.end_time_unix_nano >= s.start_time_unix_nano);
    }
    // A's span encloses B's.
    assert!(sa.start_time_unix_nano <= sb.start_time_unix_nano);
    assert!(rx
        .content_types
        .lock()
        .expect("lock")
        .iter()
        .all(|c| c == "application/x-protobuf"));
    // The access log carries the trace id.
    eventually(
        Duration::from_secs(10),
        "trace id in the access log",
        || {
            let log = a.log();
            async move {
                log.contains(&format!("\"trace_id\":\"{TRACE}\""))
                    .then_some(())
            }
        },
    )
    .await;
}

#[tokio::test]
async fn a_new_trace_starts_when_none_or_a_malformed_one_arrives() {
    let (rx, collector) = Receiver::start().await;
    let (a, _b, _origin) = two_hops(collector, "1.0").await;
    for bad in [
        None,
        Some("00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01"),
        Some("00-00000000000000000000000000000000-00f067aa0ba902b7-01"),
        Some("junk"),
    ] {
        let mut headers = vec![("tracestate", "vendor=1")];
        if let Some(b) = bad {
            headers.push(("traceparent", b));
        }
        let h = origin_headers(&a, "/new", &headers).await;
        let got = header(&h, "traceparent").to_string();
        assert_eq!(got.len(), 55, "{bad:?}: {got}");
        assert!(got.starts_with("00-") && got.ends_with("-01"), "{got}");
        assert_ne!(&got[3..35], TRACE.to_ascii_uppercase());
        assert_ne!(&got[3..35], "00000000000000000000000000000000");
        // The state of a trace that was not joined is not forwarded.
        assert_eq!(header(&h, "tracestate"), "", "{bad:?}");
        // A's span is the root of the new trace.
        let trace_id = unhex(&got[3..35]);
        let spans = rx.wait(&trace_id, 2).await;
        let root = spans.iter().find(|g| g.service == "a").expect("a's span");
        assert!(root.span.parent_span_id.is_empty(), "{bad:?}");
    }
}

#[tokio::test]
async fn an_unsampled_trace_is_propagated_but_not_exported() {
    let (rx, collector) = Receiver::start().await;
    let (a, _b, _origin) = two_hops(collector, "1.0").await;
    let unsampled = "11111111111111111111111111111111";
    let h = origin_headers(
        &a,
        "/off",
        &[("traceparent", &format!("00-{unsampled}-{CALLER_SPAN}-00"))],
    )
    .await;
    let got = header(&h, "traceparent");
    assert!(
        got.starts_with(&format!("00-{unsampled}-")) && got.ends_with("-00"),
        "{got}"
    );
    // A sampled request after it: once its spans are in, the earlier ones would be.
    let sampled = "22222222222222222222222222222222";
    origin_headers(
        &a,
        "/on",
        &[("traceparent", &format!("00-{sampled}-{CALLER_SPAN}-01"))],
    )
    .await;
    let id = unhex(sampled);
    rx.wait(&id, 2).await;
    assert!(rx.of_trace(&unhex(unsampled)).is_empty());
}

#[tokio::test]
async fn sampling_zero_exports_nothing_for_new_traces() {
    let (rx, collector) = Receiver::start().await;
    let (a, _b, _origin) = two_hops(collector, "0.0").await;
    let h = origin_headers(&a, "/zero", &[]).await;
    let got = header(&h, "traceparent");
    assert!(got.ends_with("-00"), "{got}");
    // An incoming sampled decision is honoured even so.
    let joined = "33333333333333333333333333333333";
    origin_headers(
        &a,
        "/joined",
        &[("traceparent", &format!("00-{joined}-{CALLER_SPAN}-01"))],
    )
    .await;
    let id = unhex(joined);
    rx.wait(&id, 2).await;
    assert_eq!(rx.spans.lock().expect("lock").len(), 2);
}

#[tokio::test]
async fn b3_in_is_b3_out_with_our_span_as_parent() {
    let (rx, collector) = Receiver::start().await;
    let (a, _b, _origin) = two_hops(collector, "1.0").await;
    let trace = "80f198ee56343ba864fe8b2a57d3eff7";
    let caller = "e457b5a2e4d86bd1";
    let h = origin_headers(&a, "/b3", &[("b3", &format!("{trace}-{caller}-1"))]).await;
    let b3 = header(&h, "b3").to_string();
    let parts: Vec<&str> = b3.split('-').collect();
    assert_eq!(parts.len(), 4, "{b3}");
    assert_eq!(parts[0], trace);
    assert_eq!(parts[2], "1");
    // W3C goes along with the same ids.
    let tp = header(&h, "traceparent");
    assert_eq!(tp, format!("00-{trace}-{}-01", parts[1]));
    let spans = rx.wait(&unhex(trace), 2).await;
    let sa = spans
        .iter()
        .find(|g| g.service == "a")
        .expect("a")
        .span
        .clone();
    let sb = spans
        .iter()
        .find(|g| g.service == "b")
        .expect("b")
        .span
        .clone();
    assert_eq!(sa.parent_span_id, unhex(caller));
    assert_eq!(sb.parent_span_id, sa.span_id);
    assert_eq!(unhex(parts[1]), sb.span_id);
    assert_eq!(unhex(parts[3]), sa.span_id);

    // Multi-header B3 (64-bit trace id) stays multi-header.
    let h = origin_headers(
        &a,
        "/b3multi",
        &[
            ("x-b3-traceid", "463ac35c9f6413ad"),
            ("x-b3-spanid", "a2fb4a1d1a96d312"),
            ("x-b3-sampled", "1"),
        ],
    )
    .await;
    assert_eq!(header(&h, "x-b3-traceid"), "463ac35c9f6413ad");
    assert_eq!(header(&h, "x-b3-sampled"), "1");
    assert_eq!(header(&h, "x-b3-spanid").len(), 16);
    assert_eq!(header(&h, "x-b3-parentspanid").len(), 16);
    assert_eq!(header(&h, "b3"), "");
}

#[tokio::test]
async fn a_dead_collector_leaves_requests_alone_and_counts_failures() {
    let (a, _b, _origin) = two_hops(dead_port(), "1.0").await;
    for i in 0..5 {
        let r = get(&a.url("a", &format!("/n{i}")), &[]).await;
        assert_eq!(r.status, 200);
    }
    eventually(Duration::from_secs(30), "export failures counted", || {
        let a = &a;
        async move {
            let failed = a
                .stat_labels("attache_tracing_spans_total", &[("result", "failed")])
                .await;
            (failed >= 5.0).then_some(())
        }
    })
    .await;
    assert_eq!(
        a.stat_labels("attache_tracing_spans_total", &[("result", "exported")])
            .await,
        0.0
    );
}

#[test]
fn bad_tracing_keys_are_reported_with_their_position() {
    let yaml = "tracing:\n  collector: localhost\n  sampling: 1.5\n  batch_size: 0\n  flush_interval: 0s\n  colector_path: /x\n";
    let (code, out, path) = support::validate("trace.yaml", yaml);
    assert_eq!(code, 1, "{out}");
    let file = path.display().to_string();
    // Unknown keys are reported before semantic checks run.
    assert!(out.contains(&format!("{file}:6:3")), "{out}");
    let yaml = "tracing:\n  collector: localhost\n  sampling: 1.5\n  batch_size: 0\n  flush_interval: 0s\n";
    let (code, out, path) = support::validate("trace.yaml", yaml);
    assert_eq!(code, 1, "{out}");
    let file = path.display().to_string();
    for (pos, what) in [
        ("2:14", "is not an address"),
        ("3:13", "sampling 1.5"),
        ("4:15", "batch_size must be at least 1"),
        ("5:19", "flush_interval must be greater than 0s"),
    ] {
        assert!(
            out.contains(&format!("{file}:{pos}")),
            "{pos} missing:\n{out}"
        );
        assert!(out.contains(what), "{what} missing:\n{out}");
    }
}

/// `config/tracing.yaml` (ports swapped for ephemeral ones) serves and exports.
#[tokio::test]
async fn shipped_tracing_example_starts_and_exports() {
    let (rx, collector) = Receiver::start().await;
    let origin = Origin::start("app").await;
    let text = std::fs::read_to_string("config/tracing.yaml").expect("read");
    let text = text
        .replace("127.0.0.1:9901", "127.0.0.1:0")
        .replace("127.0.0.1:10010", "127.0.0.1:0")
        .replace("127.0.0.1:4318", &collector.to_string())
        .replace("127.0.0.1:9000", &origin.addr.to_string())
        .replace("flush_interval: 1s", "flush_interval: 50ms");
    let p = Proxy::start(&text);
    let trace = "44444444444444444444444444444444";
    let r = get(
        &p.url("edge", "/x"),
        &[("traceparent", &format!("00-{trace}-{CALLER_SPAN}-01"))],
    )
    .await;
    assert_eq!(r.status, 200);
    let spans = rx.wait(&unhex(trace), 1).await;
    assert_eq!(spans[0].service, "edge");
    assert_eq!(spans[0].span.name, "api");
}

/// Without `tracing:` the proxy neither adds nor rewrites trace headers.
#[tokio::test]
async fn without_tracing_trace_headers_pass_through_untouched() {
    let origin = Origin::start("origin").await;
    let yaml = hop("a", origin.addr, dead_port(), "1.0");
    let yaml = &yaml[yaml.find("listeners:").expect("listeners")..];
    let a = Proxy::start(yaml);
    let h = origin_headers(&a, "/plain", &[]).await;
    assert_eq!(header(&h, "traceparent"), "");
    let tp = format!("00-{TRACE}-{CALLER_SPAN}-01");
    let h = origin_headers(&a, "/plain", &[("traceparent", &tp), ("b3", "junk")]).await;
    assert_eq!(header(&h, "traceparent"), tp);
    assert_eq!(header(&h, "b3"), "junk");
    let (_, stats) = a.admin_get("/stats").await;
    assert!(!stats.contains("attache_tracing_spans_total"), "{stats}");
}
