//! Paths and header names an origin may read differently from attache, through the
//! real binary: dot segments with parameters, backslashes, double encoding, NUL and
//! overlong UTF-8 are refused (or normalized where a key says so), and header names
//! with `_` are dropped, refused or allowed per `headers_with_underscores`.

mod support;

use std::time::Duration;

use support::{echoed, h2_request, raw_exchange, Origin, Proxy};

const T: Duration = Duration::from_secs(10);

/// `/public/` is proxied, everything else answers 403 itself. `strict` has the
/// defaults; `lenient` normalizes backslashes, keeps double encoding and allows
/// underscores; `refusing` rejects underscore headers.
fn config(o: &Origin) -> String {
    let vhosts = r#"
    virtual_hosts:
      - name: all
        domains: ["*"]
        routes:
          - match: { prefix: /public/ }
            route: { cluster: o }
          - match: { prefix: / }
            direct_response: { status: 403, body: "private\n" }"#;
    format!(
        r#"
listeners:
  - name: strict
    address: 127.0.0.1:0{vhosts}
  - name: lenient
    address: 127.0.0.1:0
    http:
      path_with_backslash: normalize
      path_with_double_encoding: keep
      headers_with_underscores: allow{vhosts}
  - name: refusing
    address: 127.0.0.1:0
    http: {{ headers_with_underscores: reject }}{vhosts}
clusters:
  - name: o
    endpoints: ["{}"]
"#,
        o.addr
    )
}

async fn get_raw(p: &Proxy, listener: &str, target: &str, headers: &str) -> String {
    let req =
        format!("GET {target} HTTP/1.1\r\nHost: a.example\r\n{headers}Connection: close\r\n\r\n");
    raw_exchange(p.addr(listener), req.as_bytes(), T).await
}

#[tokio::test]
async fn paths_origins_read_as_dot_segments_are_refused() {
    let o = Origin::start("o").await;
    let p = Proxy::start(&config(&o));
    let cases = [
        ("/public/..;/admin", "path_traversal"),
        ("/public/..;x=1/admin", "path_traversal"),
        ("/public/.;/admin", "path_traversal"),
        ("/public/%2e%2e;/admin", "path_traversal"),
        ("/public/%2E.;jsessionid=1/admin", "path_traversal"),
        ("/public/.%2E%3B/admin", "path_traversal"),
        ("/public/..%20/admin", "path_traversal"),
        ("/public/.../admin", "path_traversal"),
        ("/public/;/../admin", "path_traversal"),
        ("/public/;jsessionid=1/x", "path_traversal"),
        ("/public/..\\admin", "backslash"),
        ("/public\\..\\admin", "backslash"),
        ("/public/%5c..%5cadmin", "backslash"),
        ("/public/..%5Cadmin", "backslash"),
        ("/public/%252e%252e/admin", "double_encoding"),
        ("/public/%25%32%65%25%32%65/admin", "double_encoding"),
        ("/public/%252F", "double_encoding"),
        ("/public/..%00/admin", "path"),
        ("/public/%c0%ae%c0%ae/admin", "path"),
        ("/public/%2e%2e%2fadmin", "path"),
    ];
    for (target, _) in cases {
        let out = get_raw(&p, "strict", target, "").await;
        assert!(
            out.starts_with("HTTP/1.1 400 Bad Request\r\n")
                && out.ends_with("\r\n\r\nbad request\n"),
            "{target}: {out}"
        );
    }
    assert_eq!(o.hits(), 0, "nothing reached the origin");
    for reason in ["path_traversal", "backslash", "double_encoding", "path"] {
        let want = cases.iter().filter(|(_, r)| *r == reason).count() as f64;
        assert_eq!(p.rejected("strict", reason).await, want, "{reason}");
    }
    // Plain dot segments are still resolved, parameters elsewhere kept.
    let j = echoed(&get_raw(&p, "strict", "/public/a/%2e%2e/b;v=1/./c", "").await);
    assert_eq!(j["path"], "/public/b;v=1/c");
    // A session id as the last segment is the directory, as routed.
    let j = echoed(&get_raw(&p, "strict", "/public/app/;jsessionid=1", "").await);
    assert_eq!(j["path"], "/public/app/;jsessionid=1");
}

#[tokio::test]
async fn keys_normalize_backslashes_and_keep_double_encoding() {
    let o = Origin::start("o").await;
    let p = Proxy::start(&config(&o));
    // A backslash is a slash before dot segments are resolved: `/public/..\admin`
    // is `/admin`, which is not proxied.
    let out = get_raw(&p, "lenient", "/public/..\\admin", "").await;
    assert!(out.starts_with("HTTP/1.1 403 Forbidden\r\n"), "{out}");
    let j = echoed(&get_raw(&p, "lenient", "/public\\a\\\\b", "").await);
    assert_eq!(j["path"], "/public/a/b");
    // `%5C` is still an escaped slash (`escaped_slashes`).
    let out = get_raw(&p, "lenient", "/public/a%5Cb", "").await;
    assert!(out.starts_with("HTTP/1.1 400 "), "{out}");
    // Double encoding is forwarded as sent.
    let j = echoed(&get_raw(&p, "lenient", "/public/%252e%252e/x", "").await);
    assert_eq!(j["path"], "/public/%252e%252e/x");
    // Dot segments with parameters have no key.
    let out = get_raw(&p, "lenient", "/public/..;/admin", "").await;
    assert!(out.starts_with("HTTP/1.1 400 "), "{out}");
    assert_eq!(o.hits(), 2);
}

#[tokio::test]
async fn underscore_headers_are_dropped_by_default_and_counted() {
    let o = Origin::start("o").await;
    let p = Proxy::start(&config(&o));
    let headers = "X_User: admin\r\nTransfer_Encoding: chunked\r\nx_user: root\r\nX-Ok: 1\r\n";
    let j = echoed(&get_raw(&p, "strict", "/public/x", headers).await);
    let names: Vec<&str> = j["all_headers"]
        .as_array()
        .expect("array")
        .iter()
        .filter_map(|h| h[0].as_str())
        .collect();
    assert!(names.contains(&"x-ok"), "{names:?}");
    assert!(!names.iter().any(|n| n.contains('_')), "{names:?}");
    assert_eq!(
        p.stat_labels(
            "attache_downstream_rq_underscore_headers_dropped_total",
            &[("listener", "strict")]
        )
        .await,
        3.0
    );

    // allow: forwarded as sent.
    let j = echoed(&get_raw(&p, "lenient", "/public/x", headers).await);
    assert_eq!(j["headers"]["x_user"], "root");
    assert_eq!(j["headers"]["transfer_encoding"], "chunked");

    // reject: 400, nothing forwarded.
    let out = get_raw(&p, "refusing", "/public/x", headers).await;
    assert!(out.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{out}");
    assert_eq!(p.rejected("refusing", "underscore_header").await, 1.0);
    assert_eq!(o.hits(), 2);
}

#[tokio::test]
async fn http2_requests_get_the_same_path_and_header_rules() {
    let o = Origin::start("o").await;
    let p = Proxy::start(&config(&o));
    let send = |listener: &'static str,
                path: &'static str,
                header: Option<(&'static str, &'static str)>| {
        let (addr, uri) = (p.addr(listener), format!("http://a.example{path}"));
        async move { h2_request(addr, &uri, header.as_slice()).await }
    };
    for path in ["/public/..;/admin", "/public/..\\admin", "/public/%252e"] {
        assert_eq!(send("strict", path, None).await.0, 400, "{path}");
    }
    assert_eq!(
        send("refusing", "/public/x", Some(("x_user", "a"))).await.0,
        400
    );
    assert_eq!(o.hits(), 0);
    let (status, body) = send("strict", "/public/x", Some(("x_user", "a"))).await;
    assert_eq!(status, 200, "{body}");
    let j: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert!(j["headers"].get("x_user").is_none(), "{j}");
}
