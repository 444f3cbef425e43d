//! Local replies, retries and bad input, through the real binary.

mod support;

use std::time::Duration;

use bytes::Bytes;
use support::{dead_port, get, raw_exchange, resetting_origin, Origin, Proxy};

async fn proxy_with(clusters: &[(&str, Vec<String>)], extra_routes: &str) -> Proxy {
    let mut c = String::from("clusters:\n");
    for (name, eps) in clusters {
        let eps: Vec<String> = eps.iter().map(|e| format!("\"{e}\"")).collect();
        c.push_str(&format!(
            "  - name: {name}\n    connect_timeout: 500ms\n    endpoints: [{}]\n",
            eps.join(", ")
        ));
    }
    let yaml = format!(
        r#"
listeners:
  - name: main
    address: 127.0.0.1:0
    access_log: {{ path: stdout, format: json }}
    virtual_hosts:
      - name: web
        domains: ["*"]
        routes:
{extra_routes}
{c}"#
    );
    Proxy::start(&yaml)
}

#[tokio::test]
async fn local_replies_have_envoy_statuses_and_are_counted() {
    let slow = Origin::start("slow").await;
    let reset = resetting_origin().await;
    let dead = dead_port();
    let routes = r#"
          - match: { prefix: /dead }
            route: { cluster: dead }
          - match: { prefix: /slow/ }
            route: { cluster: slow, timeout: 300ms }
          - match: { prefix: /reset }
            route: { cluster: reset }
          - match: { prefix: /ok }
            route: { cluster: slow }
"#;
    let p = proxy_with(
        &[
            ("dead", vec![dead.to_string()]),
            ("slow", vec![slow.addr.to_string()]),
            ("reset", vec![reset.to_string()]),
        ],
        routes,
    )
    .await;

    let r = get(&p.url("main", "/nothing-here"), &[]).await;
    assert_eq!(r.status, 404);
    let r = get(&p.url("main", "/dead"), &[]).await;
    assert_eq!(r.status, 503);
    assert_eq!(r.text(), "upstream connect error\n");
    let r = get(&p.url("main", "/slow/2000"), &[]).await;
    assert_eq!(r.status, 504);
    let r = get(&p.url("main", "/reset"), &[]).await;
    assert_eq!(r.status, 502);
    // The proxy keeps serving everyone else.
    let r = get(&p.url("main", "/ok"), &[]).await;
    assert_eq!(r.status, 200);

    for (flag, n) in [("NR", 1.0), ("UF", 1.0), ("UT", 1.0), ("UR", 1.0)] {
        let key = format!("attache_local_reply_total{{flag=\"{flag}\",listener=\"main\"}}");
        assert_eq!(p.stat(&key).await, n, "{key}");
    }
    assert_eq!(
        p.stat("attache_upstream_cx_connect_fail_total{cluster=\"dead\"}")
            .await,
        1.0
    );
    assert_eq!(
        p.stat("attache_upstream_rq_timeout_total{cluster=\"slow\"}")
            .await,
        1.0
    );
    assert_eq!(
        p.stat("attache_downstream_rq_total{code_class=\"5xx\",listener=\"main\"}")
            .await,
        3.0
    );
    assert_eq!(
        p.stat("attache_downstream_rq_total{code_class=\"4xx\",listener=\"main\"}")
            .await,
        1.0
    );
}

#[tokio::test]
async fn retry_turns_a_failing_endpoint_into_a_200() {
    let good = Origin::start("good").await;
    let dead = dead_port();
    let reset = resetting_origin().await;
    let routes = r#"
          - match: { prefix: /connect }
            route: { cluster: flaky_connect, retries: { attempts: 2, retry_on: [connect-failure] } }
          - match: { prefix: /reset }
            route: { cluster: flaky_reset, retries: { attempts: 2, retry_on: [reset] } }
          - match: { prefix: /status/ }
            route: { cluster: good, retries: { attempts: 2, retry_on: [retriable-status-codes], retriable_status_codes: [503] } }
          - match: { prefix: /noretry }
            route: { cluster: flaky_connect }
"#;
    let p = proxy_with(
        &[
            (
                "flaky_connect",
                vec![dead.to_string(), good.addr.to_string()],
            ),
            (
                "flaky_reset",
                vec![reset.to_string(), good.addr.to_string()],
            ),
            ("good", vec![good.addr.to_string()]),
        ],
        routes,
    )
    .await;
    for _ in 0..10 {
        let r = get(&p.url("main", "/connect"), &[]).await;
        assert_eq!(r.status, 200, "{}", r.text());
        let r = support::send(
            "POST",
            &p.url("main", "/reset"),
            &[],
            Bytes::from_static(b"replayed body"),
        )
        .await;
        assert_eq!(r.status, 200, "{}", r.text());
    }
    assert!(
        p.stat("attache_upstream_rq_retry_total{cluster=\"flaky_connect\"}")
            .await
            >= 1.0
    );
    assert!(
        p.stat("attache_upstream_rq_retry_total{cluster=\"flaky_reset\"}")
            .await
            >= 1.0
    );

    // A retriable status is retried, then returned as the upstream said it.
    let before = good.hits();
    let r = get(&p.url("main", "/status/503"), &[]).await;
    assert_eq!(r.status, 503);
    assert_eq!(good.hits() - before, 3);

    // Without a policy, the dead endpoint shows through as 503 UF.
    let mut saw_503 = false;
    for _ in 0..4 {
        saw_503 |= get(&p.url("main", "/noretry"), &[]).await.status == 503;
    }
    assert!(saw_503);
}

#[tokio::test]
async fn malformed_and_smuggling_requests_get_400_and_are_not_forwarded() {
    let o = Origin::start("o").await;
    let routes = r#"
          - match: { prefix: /public/ }
            route: { cluster: o }
          - match: { prefix: / }
            direct_response: { status: 403, body: "private\n" }
"#;
    let p = proxy_with(&[("o", vec![o.addr.to_string()])], routes).await;
    let addr = p.addr("main");
    let t = Duration::from_secs(5);

    let out = raw_exchange(addr, b"GET /public/x HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", t).await;
    assert!(out.starts_with("HTTP/1.1 400"), "{out}");
    let out = raw_exchange(addr, b"POST /public/x HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!", t).await;
    assert!(out.starts_with("HTTP/1.1 400"), "{out}");
    let out = raw_exchange(
        addr,
        b"GET /public/x HTTP/1.1\r\nHost: a\r\nBad Header\r\n\r\n",
        t,
    )
    .await;
    assert!(out.starts_with("HTTP/1.1 400"), "{out}");
    // Two Host lines: routed on one, an upstream might read the other.
    let out = raw_exchange(
        addr,
        b"GET /public/x HTTP/1.1\r\nHost: public.example\r\nHost: admin.internal\r\n\r\n",
        t,
    )
    .await;
    assert!(out.starts_with("HTTP/1.1 400"), "{out}");
    let out = raw_exchange(addr, b"\x16\x03\x01garbage\r\n\r\n", t).await;
    assert!(out.is_empty() || out.starts_with("HTTP/1.1 400"), "{out}");
    // Escaped slashes are rejected by default.
    let out = raw_exchange(
        addr,
        b"GET /public/..%2Fadmin HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
        t,
    )
    .await;
    assert!(out.starts_with("HTTP/1.1 400"), "{out}");
    assert_eq!(o.hits(), 0, "nothing malformed reached the origin");

    // Dot segments are resolved before routing: /public/../admin is /admin.
    let out = raw_exchange(
        addr,
        b"GET /public/../admin HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
        t,
    )
    .await;
    assert!(out.starts_with("HTTP/1.1 403"), "{out}");
    let out = raw_exchange(
        addr,
        b"GET /public/%2e%2e/admin HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
        t,
    )
    .await;
    assert!(out.starts_with("HTTP/1.1 403"), "{out}");
    assert_eq!(o.hits(), 0);
    // And the normalized path is what goes upstream.
    let r = get(&p.url("main", "/public/a/./b//c/../d"), &[]).await;
    let j: serde_json::Value = serde_json::from_slice(&r.body).expect("json");
    assert_eq!(j["path"], "/public/a/b/d");

    // Oversized headers: 431, connection closed cleanly.
    let big = format!(
        "GET /public/x HTTP/1.1\r\nHost: a\r\nX-Big: {}\r\n\r\n",
        "a".repeat(70 * 1024)
    );
    let out = raw_exchange(addr, big.as_bytes(), t).await;
    assert!(out.starts_with("HTTP/1.1 431"), "{out}");
    let long = format!(
        "GET /public/{} HTTP/1.1\r\nHost: a\r\n\r\n",
        "p".repeat(20 * 1024)
    );
    let out = raw_exchange(addr, long.as_bytes(), t).await;
    assert!(out.starts_with("HTTP/1.1 414"), "{out}");
    let many: String = (0..150).map(|i| format!("X-H{i}: v\r\n")).collect();
    let out = raw_exchange(
        addr,
        format!("GET /public/x HTTP/1.1\r\nHost: a\r\n{many}\r\n").as_bytes(),
        t,
    )
    .await;
    assert!(out.starts_with("HTTP/1.1 431"), "{out}");
    assert_eq!(o.hits(), 1);
    // Still serving.
    assert_eq!(get(&p.url("main", "/public/ok"), &[]).await.status, 200);
}

#[tokio::test]
async fn upstream_reset_mid_response_leaves_others_served() {
    // An origin that sends headers and part of the body, then drops the connection.
    let addr = support::serve_each(move |mut s| async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut buf = [0u8; 4096];
        let _ = s.read(&mut buf).await;
        let _ = s
            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\npartial")
            .await;
        let _ = s.shutdown().await;
    })
    .await;
    let good = Origin::start("good").await;
    let routes = r#"
          - match: { prefix: /broken }
            route: { cluster: broken }
          - match: { prefix: / }
            route: { cluster: good }
"#;
    let p = proxy_with(
        &[
            ("broken", vec![addr.to_string()]),
            ("good", vec![good.addr.to_string()]),
        ],
        routes,
    )
    .await;
    let (ok, out) = support::curl(&[
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        &p.url("main", "/broken"),
    ])
    .await;
    assert!(!ok, "curl must see a truncated body");
    assert_eq!(out, "200");
    assert_eq!(get(&p.url("main", "/fine"), &[]).await.status, 200);
    // Headers had gone out, so this is not a local reply; the access log says UR.
    assert_eq!(
        p.stat("attache_local_reply_total{flag=\"UR\",listener=\"main\"}")
            .await,
        0.0
    );
    let line = support::eventually(Duration::from_secs(30), "access log line", || {
        let log = p.log();
        async move {
            log.lines()
                .find(|l| l.contains("\"path\":\"/broken\""))
                .map(str::to_string)
        }
    })
    .await;
    let v: serde_json::Value = serde_json::from_str(&line).expect("json log line");
    assert_eq!(v["response_flags"], "UR");
    assert_eq!(v["status"], 200);
    assert_eq!(v["bytes_sent"], 7);
}

#[tokio::test]
async fn client_gone_before_the_response_is_logged_as_dc() {
    let slow = Origin::start("slow").await;
    let routes = r#"
          - name: slow_route
            match: { prefix: /slow/ }
            route: { cluster: slow }
"#;
    let p = proxy_with(&[("slow", vec![slow.addr.to_string()])], routes).await;
    {
        use tokio::io::AsyncWriteExt;
        let mut s = tokio::net::TcpStream::connect(p.addr("main"))
            .await
            .expect("connect");
        s.write_all(b"GET /slow/1500 HTTP/1.1\r\nHost: a\r\n\r\n")
            .await
            .expect("write");
        support::eventually(Duration::from_secs(30), "request at origin", || {
            let o = slow.clone();
            async move { (o.hits() >= 1).then_some(()) }
        })
        .await;
        // Drop the connection while the proxy waits for the upstream.
    }
    let line = support::eventually(Duration::from_secs(30), "access log line", || {
        let log = p.log();
        async move {
            log.lines()
                .find(|l| l.contains("\"path\":\"/slow/1500\""))
                .map(str::to_string)
        }
    })
    .await;
    let v: serde_json::Value = serde_json::from_str(&line).expect("json log line");
    assert_eq!(v["response_flags"], "DC");
    assert_eq!(v["route"], "slow_route");
    assert_eq!(v["status"], 0);
    // Not a local reply: nothing was sent.
    assert_eq!(
        p.stat("attache_downstream_rq_total{code_class=\"5xx\",listener=\"main\"}")
            .await,
        0.0
    );
}

#[tokio::test]
async fn access_log_counts_request_bytes_and_times_streams() {
    let o = Origin::start("o").await;
    let routes = r#"
          - match: { prefix: /streamed }
            route: { cluster: o }
          - match: { prefix: /buffered }
            route: { cluster: o, retries: { attempts: 2, retry_on: [reset] } }
"#;
    let p = proxy_with(&[("o", vec![o.addr.to_string()])], routes).await;
    let body = Bytes::from(vec![b'x'; 3000]);
    for path in ["/streamed", "/buffered"] {
        let r = support::send("POST", &p.url("main", path), &[], body.clone()).await;
        assert_eq!(r.status, 200, "{path}");
    }
    assert_eq!(get(&p.url("main", "/streamed/get"), &[]).await.status, 200);
    for (path, bytes) in [
        ("/streamed", 3000),
        ("/buffered", 3000),
        ("/streamed/get", 0),
    ] {
        let needle = format!("\"path\":\"{path}\"");
        let line = support::eventually(Duration::from_secs(30), "access log line", || {
            let log = p.log();
            let needle = needle.clone();
            async move {
                log.lines()
                    .find(|l| l.contains(&needle))
                    .map(str::to_string)
            }
        })
        .await;
        let v: serde_json::Value = serde_json::from_str(&line).expect("json log line");
        assert_eq!(v["bytes_received"], bytes, "{line}");
        assert!(v["duration_ms"].as_f64().is_some_and(|d| d > 0.0), "{line}");
        let start = v["start_time"].as_str().unwrap_or_default();
        assert!(start.len() == 24 && start.ends_with('Z'), "{line}");
    }
}

#[tokio::test]
async fn parser_rejections_are_counted_and_logged() {
    // The codec answers these before a request exists; they still show up as DPE
    // replies in the stats and the access log.
    let o = Origin::start("o").await;
    let routes = r#"
          - match: { prefix: / }
            route: { cluster: o }
"#;
    let p = proxy_with(&[("o", vec![o.addr.to_string()])], routes).await;
    let addr = p.addr("main");
    let out = support::raw_exchange(
        addr,
        b"GET / HTTP/1.1\r\nHost: x\r\nthis is not a header\r\n\r\n",
        Duration::from_secs(15),
    )
    .await;
    assert!(out.starts_with("HTTP/1.1 400"), "{out}");
    let huge = format!(
        "GET / HTTP/1.1\r\nHost: x\r\nx-big: {}\r\n\r\n",
        "a".repeat(200 * 1024)
    );
    let out = support::raw_exchange(addr, huge.as_bytes(), Duration::from_secs(15)).await;
    assert!(out.starts_with("HTTP/1.1 431"), "{out}");
    assert_eq!(o.hits(), 0, "nothing was forwarded");
    // Counted once the reply is out, which the client may see first.
    let dpe = "attache_local_reply_total{flag=\"DPE\",listener=\"main\"}";
    support::eventually(
        Duration::from_secs(30),
        "two DPE replies counted",
        || async { (p.stat(dpe).await == 2.0).then_some(()) },
    )
    .await;
    let lines = p.log_lines("\"response_flags\":\"DPE\"", 2).await;
    assert!(
        lines.iter().any(|l| l.contains("\"status\":400")),
        "{lines:?}"
    );
    assert!(
        lines.iter().any(|l| l.contains("\"status\":431")),
        "{lines:?}"
    );
}
