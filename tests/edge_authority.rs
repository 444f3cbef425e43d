//! One authority per request, through the real binary: absolute-form and HTTP/2
//! `:authority` win, a disagreeing or malformed `Host` is a 400 that never reaches
//! the origin, HTTP/1.1 needs `Host`, HTTP/1.0 gets `default_host_for_http_10`, a
//! `#fragment` is a 400, and the forwarded `Host` is the routed authority.

mod support;

use std::time::Duration;

use support::{echoed, h2_request, raw_exchange, Origin, Proxy};

const T: Duration = Duration::from_secs(10);

/// `allowed.example` is proxied to the origin, `denied.example` answers 403 itself,
/// anything else 404. Listener `legacy` routes HTTP/1.0 without Host as
/// `allowed.example`.
fn config(o: &Origin) -> String {
    let vhosts = r#"
    virtual_hosts:
      - name: allowed
        domains: ["allowed.example"]
        routes:
          - match: { prefix: / }
            route: { cluster: o }
      - name: denied
        domains: ["denied.example"]
        routes:
          - match: { prefix: / }
            direct_response: { status: 403, body: "denied\n" }
      - name: other
        domains: ["*"]
        routes:
          - match: { prefix: / }
            direct_response: { status: 404, body: "other\n" }"#;
    format!(
        r#"
listeners:
  - name: main
    address: 127.0.0.1:0
    access_log: {{ path: stdout, format: json }}{vhosts}
  - name: legacy
    address: 127.0.0.1:0
    access_log: {{ path: stdout, format: json }}
    http: {{ default_host_for_http_10: "allowed.example" }}{vhosts}
clusters:
  - name: o
    endpoints: ["{}"]
"#,
        o.addr
    )
}

fn assert_bad_request(out: &str, what: &str) {
    assert!(
        out.starts_with("HTTP/1.1 400 Bad Request\r\n")
            && out.contains("\r\ncontent-length: 12\r\n")
            && out.ends_with("\r\n\r\nbad request\n"),
        "{what}: {out}"
    );
}

#[tokio::test]
async fn a_host_that_disagrees_with_the_absolute_form_is_refused() {
    let o = Origin::start("o").await;
    let p = Proxy::start(&config(&o));
    let addr = p.addr("main");
    for req in [
        "GET http://allowed.example/x HTTP/1.1\r\nHost: denied.example\r\n\r\n",
        "GET http://allowed.example/x HTTP/1.1\r\nHost: allowed.example:8080\r\n\r\n",
        "GET http://allowed.example:8080/x HTTP/1.1\r\nHost: allowed.example\r\n\r\n",
        "GET https://allowed.example/x HTTP/1.1\r\nHost: allowed.example:80\r\n\r\n",
        "GET http://denied.example/x HTTP/1.1\r\nHost: allowed.example\r\n\r\n",
        // HTTP/1.1 needs Host even in absolute form (RFC 9112 section 3.2).
        "GET http://allowed.example/x HTTP/1.1\r\n\r\n",
    ] {
        let out = raw_exchange(addr, req.as_bytes(), T).await;
        assert_bad_request(&out, req);
        assert!(out.contains("\r\nconnection: close\r\n"), "{req}: {out}");
    }
    assert_eq!(o.hits(), 0, "nothing reached the origin");
    assert_eq!(p.rejected("main", "host").await, 6.0);

    // The same host in another spelling is the same authority, and the forwarded
    // Host is the absolute form's, not the client's header.
    let out = raw_exchange(
        addr,
        b"GET http://allowed.example/x HTTP/1.1\r\nHost: ALLOWED.example:80\r\nConnection: close\r\n\r\n",
        T,
    )
    .await;
    let j = echoed(&out);
    assert_eq!(j["headers"]["host"], "allowed.example");
    assert_eq!(j["path"], "/x");
    assert_eq!(o.hits(), 1);
}

#[tokio::test]
async fn malformed_hosts_are_refused_and_never_forwarded() {
    let o = Origin::start("o").await;
    let p = Proxy::start(&config(&o));
    let addr = p.addr("main");
    let bad: &[&[u8]] = &[
        b"",
        b"allowed.example, denied.example",
        b"allowed.example,denied.example",
        b"user@allowed.example",
        b"denied.example@allowed.example",
        b"allowed.example denied.example",
        b"allowed.example:",
        b"allowed.example:0",
        b"allowed.example:65536",
        b"allowed.example:80x",
        b"allowed.example:-1",
        b"allowed.example:80:80",
        b"[::1",
        b"[::1]x",
        b"[zz::1]",
        b"::1",
        b"allowed..example",
        b".allowed.example",
        b"allowed.example/x",
        b"allowed.example\\x",
        b"allowed%2eexample",
        b"allowed.example\x7f",
        b"allowed\texample",
    ];
    for host in bad {
        let mut req = b"GET /x HTTP/1.1\r\nHost: ".to_vec();
        req.extend_from_slice(host);
        req.extend_from_slice(b"\r\n\r\n");
        let out = raw_exchange(addr, &req, T).await;
        let what = String::from_utf8_lossy(host);
        // Control bytes in a value may be refused by the HTTP/1 parser itself.
        assert!(
            out.starts_with("HTTP/1.1 400 Bad Request\r\n"),
            "{what:?}: {out}"
        );
    }
    // Several Host headers keep their own reason.
    let out = raw_exchange(
        addr,
        b"GET /x HTTP/1.1\r\nHost: allowed.example\r\nHost: denied.example\r\n\r\n",
        T,
    )
    .await;
    assert_bad_request(&out, "two hosts");
    assert_eq!(o.hits(), 0, "nothing reached the origin");
    let counted = p.rejected("main", "host").await + p.rejected("main", "malformed").await;
    assert_eq!(counted, bad.len() as f64);
    assert_eq!(p.rejected("main", "duplicate_host").await, 1.0);

    // Good spellings route: upper case, a port, a trailing dot, an IP literal.
    for (host, status) in [
        ("ALLOWED.EXAMPLE", "200"),
        ("allowed.example:8080", "200"),
        ("allowed.example.", "200"),
        ("denied.example.", "403"),
        ("[::1]:8080", "404"),
        ("127.0.0.1", "404"),
    ] {
        let req = format!("GET /x HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
        let out = raw_exchange(addr, req.as_bytes(), T).await;
        assert!(
            out.starts_with(&format!("HTTP/1.1 {status} ")),
            "{host}: {out}"
        );
    }
    assert_eq!(o.hits(), 3);
}

#[tokio::test]
async fn requests_without_host_need_http10_and_a_default() {
    let o = Origin::start("o").await;
    let p = Proxy::start(&config(&o));
    for listener in ["main", "legacy"] {
        let out = raw_exchange(p.addr(listener), b"GET /x HTTP/1.1\r\n\r\n", T).await;
        assert_bad_request(&out, listener);
    }
    // HTTP/1.0 is served by attache's own codec, which answers in its own version
    // (RFC 9110 section 2.5: the highest minor version it conforms to).
    let out = raw_exchange(p.addr("main"), b"GET /x HTTP/1.0\r\n\r\n", T).await;
    assert!(out.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{out}");
    assert_eq!(o.hits(), 0);
    assert_eq!(p.rejected("main", "host").await, 2.0);
    assert_eq!(p.rejected("legacy", "host").await, 1.0);

    // The default authority is routed, sent upstream as Host (never an HTTP/1.1
    // request without one) and logged.
    let out = raw_exchange(p.addr("legacy"), b"GET /old HTTP/1.0\r\n\r\n", T).await;
    let j = echoed(&out);
    assert_eq!(j["headers"]["host"], "allowed.example");
    assert_eq!(j["version"], "HTTP/1.1");
    // A Host sent over HTTP/1.0 is used as sent.
    let out = raw_exchange(
        p.addr("legacy"),
        b"GET /x HTTP/1.0\r\nHost: denied.example\r\n\r\n",
        T,
    )
    .await;
    assert!(out.starts_with("HTTP/1.1 403 Forbidden\r\n"), "{out}");
    support::eventually(T, "the access log line", || async {
        p.log()
            .lines()
            .any(|l| {
                l.contains("\"path\":\"/old\"") && l.contains("\"authority\":\"allowed.example\"")
            })
            .then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_fragment_in_the_request_target_is_refused() {
    let o = Origin::start("o").await;
    let p = Proxy::start(&config(&o));
    let addr = p.addr("main");
    for req in [
        // Origin and absolute form, with and without a body, alike.
        "GET /x#frag HTTP/1.1\r\nHost: allowed.example\r\n\r\n",
        "GET /x?q=1#/../admin HTTP/1.1\r\nHost: allowed.example\r\n\r\n",
        "GET /#x HTTP/1.1\r\nHost: allowed.example\r\n\r\n",
        "GET http://allowed.example/x#f HTTP/1.1\r\nHost: allowed.example\r\n\r\n",
        "POST /x# HTTP/1.1\r\nHost: allowed.example\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    ] {
        let out = raw_exchange(addr, req.as_bytes(), T).await;
        assert_bad_request(&out, req);
    }
    let out = raw_exchange(
        addr,
        b"GET /x#f HTTP/1.0\r\nHost: allowed.example\r\n\r\n",
        T,
    )
    .await;
    // HTTP/1.1 to an HTTP/1.0 client, as for every answer of the codec (RFC 9110
    // section 2.5: the server's own version, with the request's major number).
    assert!(out.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{out}");
    assert!(out.contains("\r\nconnection: close\r\n"), "{out}");
    assert_eq!(o.hits(), 0, "nothing reached the origin");
    assert_eq!(p.rejected("main", "fragment").await, 6.0);
}

#[tokio::test]
async fn http2_authority_wins_and_a_different_host_is_refused() {
    let o = Origin::start("o").await;
    let p = Proxy::start(&config(&o));
    let addr = p.addr("main");
    for host in [
        "denied.example",
        "allowed.example:8080",
        "a, b",
        "u@allowed.example",
    ] {
        let (status, body) = h2_request(addr, "http://allowed.example/x", &[("host", host)]).await;
        assert_eq!((status, body.as_str()), (400, "bad request\n"), "{host}");
    }
    let (status, _) = h2_request(addr, "http://u@allowed.example/x", &[]).await;
    assert_eq!(status, 400);
    assert_eq!(o.hits(), 0, "nothing reached the origin");
    assert_eq!(p.rejected("main", "host").await, 5.0);

    let (status, body) = h2_request(
        addr,
        "http://allowed.example/x",
        &[("host", "Allowed.Example:80")],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let j: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(j["headers"]["host"], "allowed.example");
    let (status, body) = h2_request(addr, "http://allowed.example/y", &[]).await;
    assert_eq!(status, 200, "{body}");
    let j: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(j["headers"]["host"], "allowed.example");
}

#[tokio::test]
async fn explain_decides_the_authority_like_the_proxy() {
    let o = Origin::start("o").await;
    let p = Proxy::start(&config(&o));
    let (status, body) = p
        .admin_get("/explain?listener=main&host=allowed.example&path=/x&header=host:denied.example")
        .await;
    assert_eq!(status, 200, "{body}");
    assert!(
        body.contains("action        rejected: missing, malformed or disagreeing host (400)\n"),
        "{body}"
    );
    let (_, body) = p
        .admin_get("/explain?listener=main&path=/x&header=host:denied.example")
        .await;
    assert!(body.contains("virtual host  denied\n"), "{body}");
    let (_, body) = p
        .admin_get("/explain?listener=main&path=/x&header=host:a%2C%20b")
        .await;
    assert!(body.contains("rejected: missing, malformed"), "{body}");
    let (_, body) = p
        .admin_get("/explain?listener=main&host=allowed.example&path=/a/..;/x")
        .await;
    assert!(
        body.contains("rejected: path has a dot segment with parameters (400)"),
        "{body}"
    );
}

#[test]
fn bad_hygiene_keys_are_config_errors_with_their_position() {
    let (code, out, path) = support::validate(
        "edge.yaml",
        r#"listeners:
  - name: main
    address: 127.0.0.1:0
    http:
      default_host_for_http_10: "a.example, b.example"
      request_head_timeout: 0s
      headers_with_underscores: strip
    virtual_hosts:
      - name: all
        domains: ["*"]
        routes:
          - match: { prefix: / }
            direct_response: { status: 200 }
"#,
    );
    assert_eq!(code, 1, "{out}");
    let file = path.display().to_string();
    assert!(out.contains(&format!("{file}:7:")), "{out}");
    assert!(out.contains("strip"), "{out}");
    // The value errors are reported once the shape is right.
    let (code, out, path) = support::validate(
        "edge.yaml",
        r#"listeners:
  - name: main
    address: 127.0.0.1:0
    http:
      default_host_for_http_10: "a.example, b.example"
      request_head_timeout: 0s
    virtual_hosts:
      - name: all
        domains: ["*"]
        routes:
          - match: { prefix: / }
            direct_response: { status: 200 }
"#,
    );
    assert_eq!(code, 1, "{out}");
    let file = path.display().to_string();
    assert!(
        out.contains(&format!("{file}:5:")) && out.contains("is not a host[:port] authority"),
        "{out}"
    );
    assert!(
        out.contains(&format!("{file}:6:"))
            && out.contains("request_head_timeout must be more than 0s"),
        "{out}"
    );
}
