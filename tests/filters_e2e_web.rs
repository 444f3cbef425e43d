//! `web_security` and `cors` through the real binary: security headers, CSRF in
//! enforce and shadow mode, CORS preflights and actual responses, per-route
//! overrides.

mod support;

use bytes::Bytes;
use support::{send, Origin, Proxy, Resp, RESPOND_HEADER};

const HOST: &str = "app.example.com";
const SELF_ORIGIN: &str = "http://app.example.com";
const DASH: &str = "https://dash.example.com";
const EVIL: &str = "https://evil.example.net";

fn config(origin: &Origin) -> String {
    format!(
        r#"
listeners:
  - name: site
    address: 127.0.0.1:0
    filters:
      - cors:
          allowed_origins: ["{DASH}"]
          allowed_methods: [GET, POST, PUT]
          allowed_headers: [content-type, x-request-id]
          expose_headers: [x-trace]
          allow_credentials: true
          max_age: 10m
      - web_security:
          csrf:
            allowed_origins: ["{DASH}", {{ suffix: .tools.example.com }}]
      - cookie_audit: {{ mode: enforce, unknown: strip, cookies: [{{ name: session }}] }}
    virtual_hosts:
      - name: site
        domains: ["*"]
        routes:
          - name: public_api
            match: {{ prefix: /public/ }}
            route: {{ cluster: origin, timeout: 5s }}
            filter_overrides:
              cors: {{ allowed_origins: ["*"], allowed_methods: [GET] }}
              cookie_audit: disabled
          - name: healthz
            match: {{ path: /healthz }}
            direct_response: {{ status: 200, body: "ok\n" }}
          - name: app
            match: {{ prefix: / }}
            route: {{ cluster: origin, timeout: 5s }}
  - name: shadow
    address: 127.0.0.1:0
    filters:
      - web_security: {{ csrf: {{ mode: shadow }}, frame_options: SAMEORIGIN, referrer_policy: false }}
    virtual_hosts:
      - name: site
        domains: ["*"]
        routes:
          - name: shadow_app
            match: {{ prefix: / }}
            route: {{ cluster: origin, timeout: 5s }}
clusters:
  - name: origin
    endpoints: ["{addr}"]
"#,
        addr = origin.addr
    )
}

fn values(r: &Resp, name: &str) -> Vec<String> {
    r.headers
        .get_all(name)
        .iter()
        .map(|v| v.to_str().unwrap_or("<binary>").to_string())
        .collect()
}

fn one(r: &Resp, name: &str) -> String {
    let v = values(r, name);
    assert_eq!(v.len(), 1, "exactly one `{name}`: {v:?} in {:?}", r.headers);
    v[0].clone()
}

fn stat_name(metric: &str, listener: &str, result: &str) -> String {
    format!("{metric}{{listener=\"{listener}\",result=\"{result}\"}}")
}

async fn req(p: &Proxy, listener: &str, method: &str, path: &str, extra: &[(&str, &str)]) -> Resp {
    let mut h = vec![("host", HOST)];
    h.extend_from_slice(extra);
    send(
        method,
        &p.url(listener, path),
        &h,
        Bytes::from_static(b"x=1"),
    )
    .await
}

#[tokio::test]
async fn security_headers_are_added_once_and_upstream_values_kept() {
    let origin = Origin::start("o").await;
    let p = Proxy::start(&config(&origin));

    let r = req(&p, "site", "GET", "/", &[]).await;
    assert_eq!(r.status, 200);
    assert_eq!(one(&r, "x-frame-options"), "DENY");
    assert_eq!(one(&r, "content-security-policy"), "frame-ancestors 'none'");
    assert_eq!(one(&r, "x-content-type-options"), "nosniff");
    assert_eq!(
        one(&r, "referrer-policy"),
        "strict-origin-when-cross-origin"
    );
    assert_eq!(one(&r, "cross-origin-opener-policy"), "same-origin");
    assert!(
        values(&r, "strict-transport-security").is_empty(),
        "no HSTS on plain HTTP"
    );

    // The upstream's own values win and are not duplicated.
    let r = req(
        &p,
        "site",
        "GET",
        "/",
        &[
            (RESPOND_HEADER, "x-frame-options: SAMEORIGIN"),
            (
                RESPOND_HEADER,
                "content-security-policy: default-src 'self'",
            ),
        ],
    )
    .await;
    assert_eq!(one(&r, "x-frame-options"), "SAMEORIGIN");
    assert_eq!(one(&r, "content-security-policy"), "default-src 'self'");
    assert_eq!(one(&r, "x-content-type-options"), "nosniff");
    assert_eq!(
        p.stat(&stat_name(
            "attache_web_security_headers_total",
            "site",
            "kept"
        ))
        .await,
        2.0
    );

    // Local replies (a direct response) get them too.
    let r = req(&p, "site", "GET", "/healthz", &[]).await;
    assert_eq!(r.status, 200);
    assert_eq!(one(&r, "x-frame-options"), "DENY");

    // Per-listener settings: a value and an `off`.
    let r = req(&p, "shadow", "GET", "/", &[]).await;
    assert_eq!(one(&r, "x-frame-options"), "SAMEORIGIN");
    assert!(values(&r, "referrer-policy").is_empty());
}

#[tokio::test]
async fn csrf_passes_same_origin_rejects_cross_origin_and_shadow_forwards() {
    let origin = Origin::start("o").await;
    let p = Proxy::start(&config(&origin));
    let csrf = |result: &str| stat_name("attache_csrf_total", "site", result);

    // Passes: same origin by Origin, by Referer, by Fetch Metadata; allowed origins;
    // no origin information at all (missing_origin: allow).
    let passing: &[&[(&str, &str)]] = &[
        &[("origin", SELF_ORIGIN)],
        &[("referer", "http://app.example.com/form?x=1")],
        &[("sec-fetch-site", "same-origin"), ("origin", EVIL)],
        &[("sec-fetch-site", "cross-site"), ("origin", DASH)],
        &[("origin", "https://ci.tools.example.com:8443")],
        &[],
    ];
    for (i, h) in passing.iter().enumerate() {
        let before = origin.hits();
        let r = req(&p, "site", "POST", "/submit", h).await;
        assert_eq!(r.status, 200, "case {i} {h:?}: {}", r.text());
        assert_eq!(origin.hits(), before + 1, "case {i} forwarded");
    }
    assert_eq!(p.stat(&csrf("same_origin")).await, 3.0);
    assert_eq!(p.stat(&csrf("allowed_origin")).await, 2.0);
    assert_eq!(p.stat(&csrf("missing_origin_allowed")).await, 1.0);

    // Rejected with 403 and never forwarded.
    let failing: &[&[(&str, &str)]] = &[
        &[("origin", EVIL)],
        &[("origin", "http://app.example.com:8080")], // another port is another origin
        &[("referer", "https://evil.example.net/attack.html")],
        &[("sec-fetch-site", "cross-site"), ("origin", EVIL)],
        &[("sec-fetch-site", "same-site")],
        &[("origin", "null")],
    ];
    for (i, h) in failing.iter().enumerate() {
        for method in ["POST", "PUT", "PATCH", "DELETE"] {
            let before = origin.hits();
            let r = req(&p, "site", method, "/submit", h).await;
            assert_eq!(r.status, 403, "case {i} {method} {h:?}");
            // A clear plain-text body, not an empty 403.
            assert_eq!(one(&r, "content-type"), "text/plain");
            assert!(!r.body.is_empty());
            assert_eq!(origin.hits(), before, "case {i} {method} was forwarded");
            // The 403 still carries the security headers.
            assert_eq!(one(&r, "x-frame-options"), "DENY");
        }
    }
    assert_eq!(p.stat(&csrf("denied")).await, (failing.len() * 4) as f64);

    // Safe methods are never checked.
    let r = req(&p, "site", "GET", "/", &[("origin", EVIL)]).await;
    assert_eq!(r.status, 200);

    // Shadow: forwarded, counted, logged.
    let before = origin.hits();
    let r = req(&p, "shadow", "POST", "/submit", &[("origin", EVIL)]).await;
    assert_eq!(r.status, 200);
    assert_eq!(origin.hits(), before + 1);
    assert_eq!(
        p.stat(&stat_name("attache_csrf_total", "shadow", "shadow_denied"))
            .await,
        1.0
    );
    assert_eq!(
        p.stat(&stat_name("attache_csrf_total", "shadow", "denied"))
            .await,
        0.0
    );
    assert!(p.log().contains("csrf check failed"));
}

#[tokio::test]
async fn cors_preflights_credentials_and_vary_origin() {
    let origin = Origin::start("o").await;
    let p = Proxy::start(&config(&origin));
    let cors = |result: &str| stat_name("attache_cors_total", "site", result);
    let before = origin.hits();

    // Allowed preflight: answered by the proxy.
    let r = req(
        &p,
        "site",
        "OPTIONS",
        "/api/items",
        &[
            ("origin", DASH),
            ("access-control-request-method", "PUT"),
            (
                "access-control-request-headers",
                "Content-Type, X-Request-Id",
            ),
        ],
    )
    .await;
    assert_eq!(r.status, 204);
    assert_eq!(one(&r, "access-control-allow-origin"), DASH);
    assert_eq!(one(&r, "access-control-allow-credentials"), "true");
    assert_eq!(one(&r, "access-control-allow-methods"), "GET, POST, PUT");
    assert_eq!(
        one(&r, "access-control-allow-headers"),
        "content-type, x-request-id"
    );
    assert_eq!(one(&r, "access-control-max-age"), "600");
    assert!(one(&r, "vary").contains("Origin"));

    // Denied preflights: a foreign origin, a method or a header not on the list.
    for h in [
        [
            ("origin", EVIL),
            ("access-control-request-method", "GET"),
            ("access-control-request-headers", "content-type"),
        ],
        [
            ("origin", DASH),
            ("access-control-request-method", "DELETE"),
            ("access-control-request-headers", "content-type"),
        ],
        [
            ("origin", DASH),
            ("access-control-request-method", "POST"),
            ("access-control-request-headers", "x-secret"),
        ],
    ] {
        let r = req(&p, "site", "OPTIONS", "/api/items", &h).await;
        assert_eq!(r.status, 204, "{h:?}");
        let acx: Vec<_> = r
            .headers
            .keys()
            .filter(|k| k.as_str().starts_with("access-control-"))
            .collect();
        assert!(acx.is_empty(), "{h:?}: {acx:?}");
    }
    assert_eq!(origin.hits(), before, "preflights are never forwarded");
    assert_eq!(p.stat(&cors("preflight_allowed")).await, 1.0);
    assert_eq!(p.stat(&cors("preflight_denied")).await, 3.0);

    // Actual request from an allowed origin.
    let r = req(&p, "site", "GET", "/api/items", &[("origin", DASH)]).await;
    assert_eq!(r.status, 200);
    assert_eq!(one(&r, "access-control-allow-origin"), DASH);
    assert_eq!(one(&r, "access-control-allow-credentials"), "true");
    assert_eq!(one(&r, "access-control-expose-headers"), "x-trace");
    assert_eq!(one(&r, "vary"), "Origin");

    // The upstream already varies on Origin: not duplicated; other Vary kept.
    let r = req(
        &p,
        "site",
        "GET",
        "/api/items",
        &[
            ("origin", DASH),
            (RESPOND_HEADER, "vary: Accept-Encoding, origin"),
        ],
    )
    .await;
    assert_eq!(values(&r, "vary"), vec!["Accept-Encoding, origin"]);
    let r = req(
        &p,
        "site",
        "GET",
        "/api/items",
        &[("origin", DASH), (RESPOND_HEADER, "vary: Accept-Encoding")],
    )
    .await;
    assert_eq!(values(&r, "vary"), vec!["Accept-Encoding", "Origin"]);

    // Disallowed origin: no CORS headers, but the response varies on Origin.
    let r = req(&p, "site", "GET", "/api/items", &[("origin", EVIL)]).await;
    assert_eq!(r.status, 200);
    assert!(values(&r, "access-control-allow-origin").is_empty());
    assert!(values(&r, "access-control-allow-credentials").is_empty());
    assert_eq!(one(&r, "vary"), "Origin");

    // Same-origin requests are not cross-origin: left alone.
    let r = req(&p, "site", "GET", "/api/items", &[("origin", SELF_ORIGIN)]).await;
    assert!(values(&r, "access-control-allow-origin").is_empty());
    assert!(values(&r, "vary").is_empty());
    assert_eq!(p.stat(&cors("allowed")).await, 3.0);
    assert_eq!(p.stat(&cors("denied")).await, 1.0);
}

#[tokio::test]
async fn per_route_overrides_replace_cors_and_disable_cookie_audit() {
    let origin = Origin::start("o").await;
    let p = Proxy::start(&config(&origin));
    let json = |r: &Resp| -> serde_json::Value {
        serde_json::from_slice(&r.body).unwrap_or_else(|e| panic!("not json ({e}): {}", r.text()))
    };

    // /public/: the override's CORS (any origin, no credentials, GET only).
    let r = req(
        &p,
        "site",
        "GET",
        "/public/feed",
        &[("origin", "https://anyone.example.org")],
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(one(&r, "access-control-allow-origin"), "*");
    assert!(values(&r, "access-control-allow-credentials").is_empty());
    let r = req(
        &p,
        "site",
        "OPTIONS",
        "/public/feed",
        &[
            ("origin", "https://anyone.example.org"),
            ("access-control-request-method", "GET"),
        ],
    )
    .await;
    assert_eq!(r.status, 204);
    assert_eq!(one(&r, "access-control-allow-origin"), "*");
    assert_eq!(one(&r, "access-control-allow-methods"), "GET");
    let r = req(
        &p,
        "site",
        "OPTIONS",
        "/public/feed",
        &[("origin", DASH), ("access-control-request-method", "PUT")],
    )
    .await;
    assert!(values(&r, "access-control-allow-origin").is_empty());
    // The listener's CORS still applies elsewhere.
    let r = req(
        &p,
        "site",
        "GET",
        "/app",
        &[("origin", "https://anyone.example.org")],
    )
    .await;
    assert!(values(&r, "access-control-allow-origin").is_empty());

    // cookie_audit disabled on /public/: unknown cookies reach the origin there,
    // and are stripped on other routes.
    let cookie = [("cookie", "session=s; tracker=t")];
    let r = req(&p, "site", "GET", "/public/feed", &cookie).await;
    assert_eq!(json(&r)["headers"]["cookie"], "session=s; tracker=t");
    let r = req(&p, "site", "GET", "/app", &cookie).await;
    assert_eq!(json(&r)["headers"]["cookie"], "session=s");

    // Filters not overridden still run on the route (web_security).
    let r = req(&p, "site", "GET", "/public/feed", &[]).await;
    assert_eq!(one(&r, "x-frame-options"), "DENY");
    let r = req(&p, "site", "POST", "/public/feed", &[("origin", EVIL)]).await;
    assert_eq!(r.status, 403);
}
