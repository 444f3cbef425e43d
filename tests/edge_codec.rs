//! What attache's own HTTP/1 codec answers itself, through the real binary, now that
//! it serves every HTTP/1 request (hyper keeps HTTP/2): malformed and oversized
//! heads, framing it will not guess at, other expectations, and target forms that
//! do not fit their method are refused with their exact status, counted with their
//! reason, logged as `DPE`, and never reach the origin; absolute-form, `OPTIONS *`
//! and `CONNECT` are routed like any request.

mod support;

use std::time::Duration;

use support::{raw_exchange, Origin, Proxy};

const T: Duration = Duration::from_secs(10);

fn config(o: &Origin) -> String {
    format!(
        r#"
listeners:
  - name: main
    address: 127.0.0.1:0
    access_log: {{ path: stdout, format: json }}
    virtual_hosts:
      - name: direct
        domains: ["direct.example"]
        routes:
          - match: {{ prefix: / }}
            direct_response: {{ status: 200, body: "direct\n" }}
      - name: all
        domains: ["*"]
        routes:
          - match: {{ prefix: / }}
            route: {{ cluster: o }}
clusters:
  - name: o
    endpoints: ["{}"]
"#,
        o.addr
    )
}

async fn rejected(p: &Proxy, reason: &str) -> f64 {
    p.stat_labels(
        "attache_downstream_rq_rejected_total",
        &[("listener", "main"), ("reason", reason)],
    )
    .await
}

#[tokio::test]
async fn heads_the_codec_refuses_get_their_status_and_reach_nothing() {
    let o = Origin::start("o").await;
    let p = Proxy::start(&config(&o));
    let addr = p.addr("main");
    let big = format!(
        "GET / HTTP/1.1\r\nHost: a\r\nx-big: {}\r\n\r\n",
        "a".repeat(100 * 1024)
    );
    let many: String = (0..150).map(|i| format!("x-h{i}: v\r\n")).collect();
    let many = format!("GET / HTTP/1.1\r\nHost: a\r\n{many}\r\n");
    let cases: Vec<(&str, &[u8], &str)> =
        vec![
        ("400 Bad Request", b"GET / HTTP/1.1\r\nHost: a\r\nnot a header\r\n\r\n", "malformed"),
        ("400 Bad Request", b"GET / HTTP/2.0\r\nHost: a\r\n\r\n", "malformed"),
        ("400 Bad Request", b"GET /\x01 HTTP/1.1\r\nHost: a\r\n\r\n", "malformed"),
        ("431 Request Header Fields Too Large", big.as_bytes(), "headers_too_large"),
        ("431 Request Header Fields Too Large", many.as_bytes(), "headers_too_large"),
        // Framing that a second parser could read differently, or not at all.
        (
            "400 Bad Request",
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: identity\r\n\r\nx",
            "framing",
        ),
        (
            "400 Bad Request",
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n",
            "framing",
        ),
        (
            "400 Bad Request",
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1, 1\r\n\r\nx",
            "framing",
        ),
        (
            "400 Bad Request",
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +1\r\n\r\nx",
            "framing",
        ),
        // A coding before `chunked` the proxy would have to decode.
        (
            "501 Not Implemented",
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
            "transfer_coding",
        ),
        (
            "417 Expectation Failed",
            b"POST / HTTP/1.1\r\nHost: a\r\nExpect: 200-ok\r\nContent-Length: 1\r\n\r\nx",
            "expect",
        ),
        // Authority-form is CONNECT's only.
        ("400 Bad Request", b"GET a:80 HTTP/1.1\r\nHost: a\r\n\r\n", "target"),
        ("400 Bad Request", b"CONNECT / HTTP/1.1\r\nHost: a\r\n\r\n", "target"),
    ];
    for (i, (status, req, reason)) in cases.iter().enumerate() {
        // A request that would be served follows on the same connection: it must
        // not be answered either.
        let mut wire = req.to_vec();
        wire.extend_from_slice(b"GET /after HTTP/1.1\r\nHost: a\r\n\r\n");
        let out = raw_exchange(addr, &wire, T).await;
        let what = String::from_utf8_lossy(&req[..req.len().min(80)]).into_owned();
        assert!(
            out.starts_with(&format!("HTTP/1.1 {status}\r\n")),
            "{what}: {out}"
        );
        assert!(out.contains("\r\nconnection: close\r\n"), "{what}: {out}");
        assert_eq!(out.matches("HTTP/1.1 ").count(), 1, "{what}: {out}");
        assert_eq!(o.hits(), 0, "{what}: nothing reaches the origin");
        let want = cases[..=i].iter().filter(|c| c.2 == *reason).count();
        assert_eq!(rejected(&p, reason).await, want as f64, "{what}");
    }
    assert_eq!(
        p.stat("attache_local_reply_total{flag=\"DPE\",listener=\"main\"}")
            .await,
        cases.len() as f64
    );
    let lines = p.log_lines("\"response_flags\":\"DPE\"", cases.len()).await;
    for status in ["400", "417", "431", "501"] {
        let needle = format!("\"status\":{status}");
        assert!(
            lines.iter().any(|l| l.contains(&needle)),
            "{status}: {lines:?}"
        );
    }
}

#[tokio::test]
async fn absolute_form_options_star_and_connect_are_routed() {
    let o = Origin::start("o").await;
    let p = Proxy::start(&config(&o));
    let addr = p.addr("main");
    // Absolute-form: the URI's authority routes, and the origin gets origin-form
    // with that authority (as written) as Host.
    let out = raw_exchange(
        addr,
        b"GET http://Origin.Example/a/./b?q=1 HTTP/1.1\r\nHost: origin.example\r\nConnection: close\r\n\r\n",
        T,
    )
    .await;
    assert!(out.starts_with("HTTP/1.1 200 OK\r\n"), "{out}");
    let body = out.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    let j: serde_json::Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert_eq!(j["path"], "/a/b?q=1");
    assert_eq!(j["headers"]["host"], "Origin.Example");
    assert_eq!(o.hits(), 1);
    // `OPTIONS *` reaches the routing phase: no prefix route matches `*`.
    let out = raw_exchange(
        addr,
        b"OPTIONS * HTTP/1.1\r\nHost: origin.example\r\nConnection: close\r\n\r\n",
        T,
    )
    .await;
    assert!(out.starts_with("HTTP/1.1 404 Not Found\r\n"), "{out}");
    assert!(out.ends_with("\r\n\r\nno route matched\n"), "{out}");
    assert_eq!(o.hits(), 1);
    // CONNECT: routed on its authority; attache opens no tunnel, so a 2xx goes out
    // without a body or length and the connection closes (as under hyper before).
    let out = raw_exchange(
        addr,
        b"CONNECT direct.example:443 HTTP/1.1\r\nHost: direct.example:443\r\n\r\nGET /x HTTP/1.1\r\n\r\n",
        T,
    )
    .await;
    assert!(out.starts_with("HTTP/1.1 200 OK\r\n"), "{out}");
    assert!(!out.contains("content-length"), "{out}");
    assert!(out.ends_with("\r\nconnection: close\r\n\r\n"), "{out}");
    assert_eq!(
        out.matches("HTTP/1.1 ").count(),
        1,
        "what followed is no request"
    );
    assert_eq!(o.hits(), 1);
}
