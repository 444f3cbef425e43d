//! gRPC through the real binary, with tonic on both sides: every call kind, the
//! grpc-status in the access log, metrics and SLI, deadlines and long streams, and
//! every local reply as a gRPC client sees it.

mod support;

use std::sync::Arc;
use std::time::Duration;

use support::grpc_peer::{self, frames, message_frame, post_web, Echo, GrpcClient, GrpcServer};
use support::yaml::Routes;
use support::{dead_port, eventually, Proxy};
use tonic::{Code, Request};

const WAIT: Duration = Duration::from_secs(20);

fn config(server: &GrpcServer) -> String {
    format!(
        r#"
listeners:
  - name: grpc
    address: 127.0.0.1:0
    access_log: {{ path: stdout, format: json }}
    filters:
      - sli: {{}}
      - local_rate_limit: {{ max_tokens: 100000, tokens_per_fill: 100000, fill_interval: 1s }}
    virtual_hosts:
      - name: all
        domains: ["*"]
        routes:
          - name: echo
            match: {{ prefix: /test.Echo/, headers: [{{ name: content-type, prefix: application/grpc }}] }}
            route: {{ cluster: backend, timeout: 1s }}
          - name: capped
            match: {{ prefix: /capped.Echo/ }}
            route: {{ cluster: backend, prefix_rewrite: /test.Echo/, max_grpc_timeout: 300ms }}
          - name: idle
            match: {{ prefix: /idle.Echo/ }}
            route: {{ cluster: backend, prefix_rewrite: /test.Echo/, stream_idle_timeout: 400ms }}
          - name: short
            match: {{ prefix: /short.Echo/ }}
            route: {{ cluster: backend, prefix_rewrite: /test.Echo/, timeout: 300ms }}
          - name: dead
            match: {{ prefix: /dead.Echo/ }}
            route: {{ cluster: dead }}
          - name: narrow
            match: {{ prefix: /narrow.Echo/ }}
            route: {{ cluster: narrow, prefix_rewrite: /test.Echo/ }}
          - name: limited
            match: {{ prefix: /limited.Echo/ }}
            route: {{ cluster: backend, prefix_rewrite: /test.Echo/ }}
            filter_overrides:
              local_rate_limit: {{ max_tokens: 1, tokens_per_fill: 1, fill_interval: 1h }}
clusters:
  - name: backend
    protocol: http2
    endpoints: ["{addr}"]
  - name: narrow
    protocol: http2
    endpoints: ["{addr}"]
    circuit_breakers: {{ max_requests: 1 }}
  - name: dead
    protocol: http2
    connect_timeout: 500ms
    endpoints: ["{dead}"]
"#,
        addr = server.addr,
        dead = dead_port(),
    )
}

fn echo(text: &str) -> Echo {
    Echo::text(text)
}

fn failing(code: Code, msg: &str) -> Echo {
    Echo {
        text: msg.into(),
        code: code as i32,
        ..Default::default()
    }
}

async fn grpc_count(p: &Proxy, route: &str, status: &str) -> f64 {
    p.stat_labels(
        "attache_grpc_requests_total",
        &[
            ("listener", "grpc"),
            ("route", route),
            ("grpc_status", status),
        ],
    )
    .await
}

async fn sli(p: &Proxy, route: &str, outcome: &str) -> f64 {
    p.stat_labels(
        "attache_sli_requests_total",
        &[("listener", "grpc"), ("route", route), ("outcome", outcome)],
    )
    .await
}

/// Wait until each `(route, grpc_status, n)` is counted `n` times, and each
/// `(route, outcome, n)` of the SLI counter.
async fn wait_counts(
    p: &Proxy,
    what: &str,
    grpc: &[(&str, &str, f64)],
    slis: &[(&str, &str, f64)],
) {
    eventually(WAIT, what, || async {
        for (route, status, n) in grpc {
            if grpc_count(p, route, status).await != *n {
                return None;
            }
        }
        for (route, outcome, n) in slis {
            if sli(p, route, outcome).await != *n {
                return None;
            }
        }
        Some(())
    })
    .await;
}

/// The access log lines (JSON) of calls to `path`.
fn log_lines(p: &Proxy, path: &str) -> Vec<serde_json::Value> {
    p.log()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["path"] == path)
        .collect()
}

#[tokio::test]
async fn unary_ok_and_errors_reach_the_log_metrics_and_sli() {
    let server = GrpcServer::start().await;
    let p = Proxy::start(&config(&server));
    let mut c = GrpcClient::new(p.addr("grpc"));

    let ok = c.unary(Request::new(echo("hi"))).await.expect("ok call");
    assert_eq!(ok.text, "hi");
    // tonic answers an error before any message trailers-only: grpc-status in the head.
    let denied = c
        .unary(Request::new(failing(Code::PermissionDenied, "nope")))
        .await
        .expect_err("denied");
    assert_eq!(denied.code(), Code::PermissionDenied);
    assert_eq!(denied.message(), "nope");
    let down = c
        .unary(Request::new(failing(Code::Unavailable, "db down")))
        .await
        .expect_err("unavailable");
    assert_eq!(down.code(), Code::Unavailable);

    wait_counts(
        &p,
        "grpc metrics",
        &[
            ("echo", "OK", 1.0),
            ("echo", "PERMISSION_DENIED", 1.0),
            ("echo", "UNAVAILABLE", 1.0),
        ],
        &[],
    )
    .await;
    // PERMISSION_DENIED is the client's problem (success, like a 4xx); UNAVAILABLE
    // is the service's, although both travelled as HTTP 200.
    assert_eq!(sli(&p, "echo", "success").await, 2.0);
    assert_eq!(sli(&p, "echo", "error").await, 1.0);
    assert_eq!(
        p.stat("attache_downstream_rq_total{code_class=\"2xx\",listener=\"grpc\"}")
            .await,
        3.0
    );
    let lines = eventually(WAIT, "access log", || async {
        let l = log_lines(&p, grpc_peer::UNARY);
        (l.len() == 3).then_some(l)
    })
    .await;
    let statuses: Vec<&str> = lines
        .iter()
        .map(|l| l["grpc_status"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(statuses, ["OK", "PERMISSION_DENIED", "UNAVAILABLE"]);
    assert!(lines.iter().all(|l| l["status"] == 200));
}

#[tokio::test]
async fn server_client_and_bidi_streams_pass_with_their_trailers() {
    let server = GrpcServer::start().await;
    let p = Proxy::start(&config(&server));
    let mut c = GrpcClient::new(p.addr("grpc"));

    let (got, end) = c
        .server_stream(Request::new(Echo {
            text: "s".into(),
            count: 3,
            ..Default::default()
        }))
        .await;
    assert_eq!(got, ["s 0", "s 1", "s 2"]);
    end.expect("server stream ends OK");

    // An error after messages: the status comes in real trailers.
    let (got, end) = c
        .server_stream(Request::new(Echo {
            text: "late".into(),
            count: 2,
            code: Code::DataLoss as i32,
            ..Default::default()
        }))
        .await;
    assert_eq!(got, ["late 0", "late 1"]);
    let e = end.expect_err("data loss");
    assert_eq!((e.code(), e.message()), (Code::DataLoss, "late"));

    let joined = c
        .client_stream(vec![echo("a"), echo("b"), echo("c")])
        .await
        .expect("client stream");
    assert_eq!(joined.text, "a,b,c");

    let echoed = c.bidi(vec![echo("x"), echo("y")]).await.expect("bidi");
    assert_eq!(echoed, ["x", "y"]);

    wait_counts(
        &p,
        "stream metrics",
        &[("echo", "OK", 3.0), ("echo", "DATA_LOSS", 1.0)],
        &[("echo", "error", 1.0)],
    )
    .await;
}

#[tokio::test]
async fn a_stream_quiet_for_longer_than_the_route_timeout_keeps_going() {
    let server = GrpcServer::start().await;
    let p = Proxy::start(&config(&server));
    let mut c = GrpcClient::new(p.addr("grpc"));
    // Route `echo` has a 1s timeout: it bounds the wait for the response head, not
    // the gaps between messages.
    let (got, end) = c
        .server_stream(Request::new(Echo {
            text: "slow".into(),
            count: 2,
            delay_ms: 1500,
            ..Default::default()
        }))
        .await;
    assert_eq!(got, ["slow 0", "slow 1"]);
    end.expect("quiet stream ends OK");
}

#[tokio::test]
async fn grpc_timeout_shorter_than_the_route_timeout_ends_the_call() {
    let server = GrpcServer::start().await;
    let p = Proxy::start(&config(&server));
    let mut c = GrpcClient::new(p.addr("grpc"));

    // Before the response head: a trailers-only DEADLINE_EXCEEDED from the proxy.
    let mut req = Request::new(Echo {
        text: "late".into(),
        delay_ms: 3000,
        ..Default::default()
    });
    req.set_timeout(Duration::from_millis(300));
    // The server would answer OK after 3s: DEADLINE_EXCEEDED can only be the proxy's.
    let e = c.unary(req).await.expect_err("deadline");
    assert_eq!(e.code(), Code::DeadlineExceeded, "{e:?}");
    assert_eq!(e.message(), "upstream request timeout (UT)");

    // After the head, between messages: trailers with DEADLINE_EXCEEDED.
    let mut req = Request::new(Echo {
        text: "tick".into(),
        count: 10,
        delay_ms: 400,
        ..Default::default()
    });
    req.set_timeout(Duration::from_millis(1500));
    let (got, end) = c.server_stream(req).await;
    assert!(!got.is_empty() && got.len() < 10, "{got:?}");
    let e = end.expect_err("deadline mid-stream");
    assert_eq!(e.code(), Code::DeadlineExceeded, "{e:?}");
    assert_eq!(e.message(), "deadline exceeded (UT)");

    // A deadline longer than the route's max_grpc_timeout is cut to it, and the
    // upstream is told the deadline the proxy enforces.
    let mut req = Request::new(Echo {
        text: "capped".into(),
        delay_ms: 3000,
        ..Default::default()
    });
    req.set_timeout(Duration::from_secs(10));
    let e = c
        .unary_at("/capped.Echo/Unary", req)
        .await
        .expect_err("capped");
    assert_eq!(e.code(), Code::DeadlineExceeded, "{e:?}");
    let seen = server.seen.lock().expect("seen").clone();
    let sent: Vec<Option<String>> = seen.into_iter().map(|(_, t, _)| t).collect();
    assert_eq!(
        sent,
        [
            Some("300000u".into()),
            Some("1500000u".into()),
            Some("300m".into())
        ]
    );

    wait_counts(
        &p,
        "deadline metrics",
        &[
            ("echo", "DEADLINE_EXCEEDED", 2.0),
            ("capped", "DEADLINE_EXCEEDED", 1.0),
        ],
        &[],
    )
    .await;
}

#[tokio::test]
async fn every_local_reply_is_a_grpc_status() {
    let server = GrpcServer::start().await;
    let p = Proxy::start(&config(&server));
    let mut c = GrpcClient::new(p.addr("grpc"));

    let cases: [(&str, Echo, Code, &str); 4] = [
        (
            "/nowhere.Echo/Unary",
            echo("x"),
            Code::Unimplemented,
            "no route matched (NR)",
        ),
        (
            "/dead.Echo/Unary",
            echo("x"),
            Code::Unavailable,
            "upstream connect error (UF)",
        ),
        (
            "/short.Echo/Unary",
            Echo {
                delay_ms: 2000,
                ..echo("x")
            },
            Code::DeadlineExceeded,
            "upstream request timeout (UT)",
        ),
        ("/limited.Echo/Unary", echo("x"), Code::Ok, ""),
    ];
    for (path, m, code, msg) in cases {
        let r = c.unary_at(path, m).await;
        match code {
            Code::Ok => assert!(r.is_ok(), "{path}: {r:?}"),
            _ => {
                let e = r.expect_err(path);
                assert_eq!((e.code(), e.message()), (code, msg), "{path}");
            }
        }
    }
    // The route's bucket had one token: a filter's 429 becomes RESOURCE_EXHAUSTED.
    let e = c
        .unary_at("/limited.Echo/Unary", echo("again"))
        .await
        .expect_err("rate limited");
    assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");

    // Overflow: one call in flight (the server has it) fills `narrow`'s max_requests.
    let addr = p.addr("grpc");
    let before = server.seen.lock().expect("seen").len();
    let slow = tokio::spawn(async move {
        GrpcClient::new(addr)
            .unary_at(
                "/narrow.Echo/Unary",
                Echo {
                    delay_ms: 3000,
                    ..echo("slow")
                },
            )
            .await
    });
    eventually(WAIT, "the slow call at the server", || async {
        (server.seen.lock().expect("seen").len() > before).then_some(())
    })
    .await;
    let e = GrpcClient::new(addr)
        .unary_at("/narrow.Echo/Unary", echo("second"))
        .await
        .expect_err("overflow");
    assert_eq!(
        (e.code(), e.message()),
        (Code::Unavailable, "upstream overflow (UO)")
    );
    slow.await.expect("join").expect("the first call completes");

    wait_counts(
        &p,
        "local reply metrics",
        &[
            ("_none", "UNIMPLEMENTED", 1.0),
            ("dead", "UNAVAILABLE", 1.0),
            ("short", "DEADLINE_EXCEEDED", 1.0),
            ("limited", "RESOURCE_EXHAUSTED", 1.0),
        ],
        &[],
    )
    .await;
}

#[tokio::test]
async fn stream_idle_timeout_ends_a_silent_stream() {
    let server = GrpcServer::start().await;
    let p = Proxy::start(&config(&server));
    let mut c = GrpcClient::new(p.addr("grpc"));
    let (got, end) = c
        .server_stream_at(
            "/idle.Echo/ServerStream",
            Echo {
                text: "quiet".into(),
                count: 2,
                delay_ms: 2000,
                ..Default::default()
            },
        )
        .await;
    assert!(got.is_empty(), "{got:?}");
    let e = end.expect_err("idle");
    assert_eq!(
        (e.code(), e.message()),
        (Code::Unavailable, "stream idle timeout (SI)")
    );
    // A silent wait for the response head (tonic sends a unary head with its
    // answer) is ended by it too, before the route's 15s timeout.
    let slow = Echo {
        delay_ms: 3000,
        ..echo("late")
    };
    let e = c
        .unary_at("/idle.Echo/Unary", slow)
        .await
        .expect_err("idle head");
    assert_eq!(
        (e.code(), e.message()),
        (Code::DeadlineExceeded, "upstream request timeout (UT)")
    );
}

fn fleet_config(server: &GrpcServer) -> String {
    let routes = "- name: retried
  match: { prefix: /retry.Echo/ }
  route:
    cluster: backend
    prefix_rewrite: /test.Echo/
    retries: { attempts: 2, retry_on: [unavailable] }
- name: checked
  match: { prefix: /test.Echo/ }
  route: { cluster: checked, timeout: 0s }";
    let checked = grpc_peer::checked_cluster_keys("1s");
    Routes::new(routes)
        .names("grpc", "all")
        .cluster("backend", &[server.addr], "protocol: http2")
        .cluster("checked", &[server.addr], &checked)
        .yaml()
}

#[tokio::test]
async fn grpc_health_checks_eject_a_not_serving_endpoint_and_bring_it_back() {
    let server = GrpcServer::start().await;
    let p = Proxy::start(&fleet_config(&server));
    let addr = p.addr("grpc");
    eventually(WAIT, "healthy at start", || async {
        GrpcClient::new(addr).unary(echo("hi")).await.ok()
    })
    .await;

    server.set_serving(false).await;
    let e = eventually(WAIT, "ejected", || async {
        GrpcClient::new(addr).unary(echo("hi")).await.err()
    })
    .await;
    assert_eq!(
        (e.code(), e.message()),
        (Code::Unavailable, "no healthy upstream (UH)")
    );

    server.set_serving(true).await;
    eventually(WAIT, "back in rotation", || async {
        GrpcClient::new(addr).unary(echo("hi")).await.ok()
    })
    .await;
    let checks = server.calls(grpc_peer::HEALTH_CHECK);
    assert!(checks >= 3, "{checks} health checks");
}

#[tokio::test]
async fn trailers_only_unavailable_is_retried_when_retry_on_names_it() {
    let server = GrpcServer::start().await;
    let p = Proxy::start(&fleet_config(&server));
    let mut c = GrpcClient::new(p.addr("grpc"));
    let e = c
        .unary_at("/retry.Echo/Unary", failing(Code::Unavailable, "busy"))
        .await
        .expect_err("still unavailable");
    assert_eq!((e.code(), e.message()), (Code::Unavailable, "busy"));
    // Not named in retry_on: one attempt.
    let e = c
        .unary_at("/retry.Echo/Unary", failing(Code::Internal, "bug"))
        .await
        .expect_err("internal");
    assert_eq!(e.code(), Code::Internal);
    let calls = server.calls(grpc_peer::UNARY);
    assert_eq!(calls, 3 + 1);
    assert_eq!(
        p.stat("attache_upstream_rq_retry_total{cluster=\"backend\"}")
            .await,
        2.0
    );
}

/// `config/grpc-sidecar.yaml` (its fixed addresses swapped for ephemeral ones and
/// the test server) serves calls, answers non-gRPC requests itself, and health
/// checks the service.
#[tokio::test]
async fn shipped_grpc_sidecar_config_serves_calls() {
    let server = GrpcServer::start().await;
    let text = std::fs::read_to_string("config/grpc-sidecar.yaml").expect("read");
    let text = text
        .replace("127.0.0.1:9901", "127.0.0.1:0")
        .replace("127.0.0.1:15006", "127.0.0.1:0")
        .replace("127.0.0.1:50051", &server.addr.to_string());
    let p = Proxy::start(&text);
    let addr = p.addr("grpc_inbound");
    let ok = eventually(WAIT, "a call through the sidecar", || async {
        GrpcClient::new(addr).unary(echo("hi")).await.ok()
    })
    .await;
    assert_eq!(ok.text, "hi");
    let r = support::get(&p.url("grpc_inbound", "/"), &[]).await;
    assert_eq!(r.status, 415);
    eventually(WAIT, "health checks", || async {
        let n = p
            .stat_labels(
                "attache_health_check_total",
                &[("cluster", "grpc_service"), ("result", "success")],
            )
            .await;
        (n >= 1.0).then_some(())
    })
    .await;
}

fn web_config(server: &GrpcServer) -> String {
    let filters = r#"filters:
  - cors:
      allowed_origins: ["https://app.example"]
      allowed_headers: [content-type, x-grpc-web, x-user-agent, grpc-timeout]
      expose_headers: [grpc-status, grpc-message]
  - grpc_web: {}"#;
    Routes::new("- name: echo\n  match: { prefix: /test.Echo/ }\n  route: { cluster: backend, timeout: 0s }")
        .names("web", "all")
        .listener_key(filters)
        .cluster("backend", &[server.addr], "protocol: http2")
        .yaml()
}

#[tokio::test]
async fn grpc_web_calls_reach_a_grpc_server_with_trailers_in_the_body() {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD;
    let server = GrpcServer::start().await;
    let p = Proxy::start(&web_config(&server));
    let url = p.url("web", grpc_peer::UNARY);
    let origin = ("origin", "https://app.example");

    // Binary: the message frame as is; the answer's trailers come as a 0x80 frame.
    let body = message_frame(&echo("web"));
    let r = post_web(&url, "application/grpc-web+proto", body).await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("content-type").as_deref(),
        Some("application/grpc-web+proto")
    );
    assert_eq!(
        r.header("access-control-expose-headers").as_deref(),
        Some("grpc-status, grpc-message")
    );
    let got = frames(&r.body);
    assert_eq!(got.len(), 2, "{got:?}");
    assert_eq!(got[0].0, 0);
    let reply: Echo = prost::Message::decode(&got[0].1[..]).expect("echo");
    assert_eq!(reply.text, "web");
    assert_eq!(got[1].0, 0x80);
    let trailers = String::from_utf8(got[1].1.clone()).expect("ascii");
    assert!(trailers.contains("grpc-status: 0\r\n"), "{trailers:?}");
    // The server saw plain gRPC.
    let seen = server.seen.lock().expect("seen").clone();
    assert_eq!(seen[0].2.as_deref(), Some("application/grpc+proto"));

    // Text: base64 both ways, one padded body.
    let body = b64.encode(message_frame(&echo("text")));
    let r = post_web(&url, "application/grpc-web-text", body.into_bytes()).await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("content-type").as_deref(),
        Some("application/grpc-web-text+proto")
    );
    let raw = b64.decode(&r.body).expect("base64 body");
    let got = frames(&raw);
    let reply: Echo = prost::Message::decode(&got[0].1[..]).expect("echo");
    assert_eq!(reply.text, "text");
    assert_eq!(got[1].0, 0x80);

    // An error before any message: trailers-only, the status in the head (exposed).
    let body = message_frame(&failing(Code::PermissionDenied, "no"));
    let r = post_web(&url, "application/grpc-web+proto", body).await;
    assert_eq!(
        (r.status, r.header("grpc-status").as_deref()),
        (200, Some("7"))
    );
    assert!(r.body.is_empty());

    // The browser's preflight is answered by `cors`, never reaching the server.
    let before = server.seen.lock().expect("seen").len();
    let r = support::send(
        "OPTIONS",
        &url,
        &[
            origin,
            ("access-control-request-method", "POST"),
            ("access-control-request-headers", "content-type,x-grpc-web"),
        ],
        bytes::Bytes::new(),
    )
    .await;
    assert!(r.status == 200 || r.status == 204, "{}", r.status);
    assert_eq!(
        r.header("access-control-allow-origin").as_deref(),
        Some("https://app.example")
    );
    assert_eq!(server.seen.lock().expect("seen").len(), before);
}

/// An HTTP/2 upstream that answers a call with a gRPC head and one message, then,
/// once `go` is notified, resets the stream: no trailers, no status.
async fn resetting_grpc_upstream(go: Arc<tokio::sync::Notify>) -> std::net::SocketAddr {
    support::serve_each(move |s| {
        let go = go.clone();
        async move {
            let Ok(mut conn) = h2::server::handshake(s).await else {
                return;
            };
            let Some(Ok((_req, mut respond))) = conn.accept().await else {
                return;
            };
            // Keep driving the connection while the stream is answered.
            let driver = tokio::spawn(async move { while conn.accept().await.is_some() {} });
            let rsp = http::Response::builder()
                .header("content-type", "application/grpc")
                .body(())
                .expect("response");
            let Ok(mut send) = respond.send_response(rsp, false) else {
                return;
            };
            let _ = send.send_data(message_frame(&echo("partial")).into(), false);
            go.notified().await;
            send.send_reset(h2::Reason::INTERNAL_ERROR);
            let _ = driver.await;
        }
    })
    .await
}

#[tokio::test]
async fn a_stream_reset_without_trailers_is_an_internal_error_for_every_signal() {
    let go = Arc::new(tokio::sync::Notify::new());
    let reset = resetting_grpc_upstream(go.clone()).await;
    let yaml = Routes::new(
        "- name: dead\n  match: { prefix: / }\n  route: { cluster: resetting, timeout: 0s }",
    )
    .names("grpc", "all")
    .listener_key("access_log: { path: stdout, format: json }\nfilters:\n  - sli: {}")
    .cluster("resetting", &[reset], "protocol: http2")
    .yaml();
    let p = Proxy::start(&yaml);
    let mut c = GrpcClient::new(p.addr("grpc"));
    let mut s = c
        .server_stream_open("/dead.Echo/ServerStream", echo("x"))
        .await
        .expect("head");
    let first = s.message().await.expect("first message");
    assert_eq!(first.map(|m| m.text).as_deref(), Some("partial"));
    go.notify_one();
    s.message().await.expect_err("reset mid-stream");
    wait_counts(
        &p,
        "INTERNAL counted as an SLI error",
        &[("dead", "INTERNAL", 1.0)],
        &[("dead", "error", 1.0)],
    )
    .await;
    let line = eventually(WAIT, "access log", || async {
        log_lines(&p, "/dead.Echo/ServerStream").pop()
    })
    .await;
    assert_eq!(line["grpc_status"], "INTERNAL");
    assert_eq!(line["response_flags"], "UR");
    let (status, board) = p.admin_get("/sli").await;
    assert_eq!(status, 200);
    assert!(board.contains("dead"), "{board}");
}

#[test]
fn grpc_config_mistakes_are_errors_with_their_place() {
    let yaml = r#"listeners:
  - name: grpc
    address: 127.0.0.1:0
    virtual_hosts:
      - name: all
        domains: ["*"]
        routes:
          - match: { prefix: / }
            route: { cluster: app, timeout: 0s, max_grpc_timeout: 0s, retries: { attempts: 1, retry_on: [unavailble] } }
clusters:
  - name: app
    endpoints: ["127.0.0.1:9000"]
    health_check: { grpc: { service: a.B } }
"#;
    let (code, out, path) = support::validate("grpc.yaml", yaml);
    assert_eq!(code, 1, "{out}");
    let file = path.display().to_string();
    for (place, what) in [
        (":9:", "max_grpc_timeout must be greater than 0s"),
        (
            ":9:",
            "unknown retry condition `unavailble`; did you mean `unavailable`?",
        ),
        (
            ":13:",
            "a gRPC health check needs `protocol: http2` on the cluster",
        ),
    ] {
        assert!(
            out.lines()
                .any(|l| l.contains(&format!("{file}{place}")) && l.contains(what)),
            "{what}:\n{out}"
        );
    }
}
