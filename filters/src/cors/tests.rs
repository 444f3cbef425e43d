use http::{Method, StatusCode};

use super::CORS_TOTAL;
use crate::api::{Action, HttpFilter, StreamCtx};
use crate::testing::{error_paths, path, Harness};

const CFG: &str = "{ allowed_origins: ['https://app.example.com', { suffix: '.partner.example' }], \
                     allowed_methods: [GET, POST, PUT], allowed_headers: [content-type, x-request-id], \
                     expose_headers: [x-request-id], allow_credentials: true, max_age: 10m }";

fn preflight(f: &dyn HttpFilter, origin: &str, method: &str, headers: Option<&str>) -> Action {
    let mut b = http::Request::builder()
        .method(Method::OPTIONS)
        .uri("/api")
        .header("host", "api.example.com")
        .header("origin", origin)
        .header("access-control-request-method", method);
    if let Some(h) = headers {
        b = b.header("access-control-request-headers", h);
    }
    let (mut parts, ()) = b.body(()).expect("request").into_parts();
    f.on_request(&mut parts, &mut StreamCtx::default())
}

/// An actual request and its response; returns the response headers.
fn exchange(
    f: &dyn HttpFilter,
    origin: Option<&str>,
    upstream: &[(&str, &str)],
) -> http::HeaderMap {
    let mut b = http::Request::builder()
        .uri("/api")
        .header("host", "api.example.com");
    if let Some(o) = origin {
        b = b.header("origin", o);
    }
    let (mut req, ()) = b.body(()).expect("request").into_parts();
    let mut cx = StreamCtx::default();
    assert!(matches!(f.on_request(&mut req, &mut cx), Action::Continue));
    let mut r = http::Response::builder();
    for (k, v) in upstream {
        r = r.header(*k, *v);
    }
    let (mut rsp, ()) = r.body(()).expect("response").into_parts();
    f.on_response(&mut rsp, &mut cx);
    rsp.headers
}

fn cors(h: &Harness, result: &str) -> u64 {
    h.counter(CORS_TOTAL, &[("listener", "web"), ("result", result)])
}

#[test]
fn answers_allowed_preflight_locally_with_cors_headers() {
    let h = Harness::default();
    let f = h.build("cors", CFG);
    let Action::Respond(rsp) = preflight(
        &*f,
        "https://app.example.com",
        "PUT",
        Some("Content-Type, X-Request-Id"),
    ) else {
        panic!("preflight must be answered locally");
    };
    assert_eq!(rsp.status(), StatusCode::NO_CONTENT);
    let hd = rsp.headers();
    assert_eq!(hd["access-control-allow-origin"], "https://app.example.com");
    assert_eq!(hd["access-control-allow-methods"], "GET, POST, PUT");
    assert_eq!(
        hd["access-control-allow-headers"],
        "content-type, x-request-id"
    );
    assert_eq!(hd["access-control-allow-credentials"], "true");
    assert_eq!(hd["access-control-max-age"], "600");
    assert!(hd["vary"].to_str().expect("ascii").contains("Origin"));
    assert_eq!(cors(&h, "preflight_allowed"), 1);
}

#[test]
fn denied_preflight_gets_no_cors_headers() {
    let h = Harness::default();
    let f = h.build("cors", CFG);
    for (origin, method, headers) in [
        ("https://evil.test", "GET", None),
        ("https://app.example.com", "DELETE", None),
        ("https://app.example.com", "GET", Some("x-secret")),
    ] {
        let Action::Respond(rsp) = preflight(&*f, origin, method, headers) else {
            panic!("preflight must be answered locally");
        };
        assert_eq!(rsp.status(), StatusCode::NO_CONTENT);
        assert!(
            rsp.headers()
                .keys()
                .all(|k| !k.as_str().starts_with("access-control-")),
            "{origin} {method}"
        );
    }
    assert_eq!(cors(&h, "preflight_denied"), 3);
}

#[test]
fn allowed_actual_response_gets_origin_credentials_expose_and_vary() {
    let h = Harness::default();
    let f = h.build("cors", CFG);
    let out = exchange(
        &*f,
        Some("https://a.partner.example"),
        &[("vary", "Accept-Encoding")],
    );
    assert_eq!(
        out["access-control-allow-origin"],
        "https://a.partner.example"
    );
    assert_eq!(out["access-control-allow-credentials"], "true");
    assert_eq!(out["access-control-expose-headers"], "x-request-id");
    assert_eq!(
        out.get_all("vary").iter().collect::<Vec<_>>(),
        ["Accept-Encoding", "Origin"]
    );
    // Vary is not duplicated when the upstream already varies on Origin.
    let out = exchange(&*f, Some("https://app.example.com"), &[("vary", "origin")]);
    assert_eq!(out.get_all("vary").iter().count(), 1);
    assert_eq!(cors(&h, "allowed"), 2);
}

#[test]
fn disallowed_or_same_origin_or_originless_requests_get_no_cors_headers() {
    let h = Harness::default();
    let f = h.build("cors", CFG);
    let out = exchange(&*f, Some("https://evil.test"), &[]);
    assert!(out.get("access-control-allow-origin").is_none());
    assert_eq!(out["vary"], "Origin");
    assert!(exchange(&*f, None, &[]).is_empty());
    assert!(exchange(&*f, Some("https://api.example.com"), &[]).is_empty());
    assert_eq!(cors(&h, "denied"), 1);
}

#[test]
fn wildcard_without_credentials_answers_star() {
    let h = Harness::default();
    let f = h.build("cors", "allowed_origins: ['*']");
    let out = exchange(&*f, Some("https://anyone.test"), &[]);
    assert_eq!(out["access-control-allow-origin"], "*");
    assert!(out.get("vary").is_none());
}

#[test]
fn shadow_mode_forwards_preflights_and_adds_nothing() {
    let h = Harness::default();
    let f = h.build(
        "cors",
        "{ allowed_origins: ['https://app.example.com'], mode: shadow }",
    );
    assert!(matches!(
        preflight(&*f, "https://evil.test", "GET", None),
        Action::Continue
    ));
    assert!(exchange(&*f, Some("https://app.example.com"), &[]).is_empty());
    assert_eq!(cors(&h, "shadow_preflight_denied"), 1);
    assert_eq!(cors(&h, "shadow_allowed"), 1);
}

#[test]
fn star_with_credentials_and_other_mistakes_are_reported_together() {
    let h = Harness::default();
    let errs = h
        .try_build(
            "cors",
            "{ allowed_origins: ['https://a.test', '*'], allow_credentials: true, \
               allowed_methods: ['GET', 'BAD METHOD'], allowed_headers: ['*', 'bad header'] }",
            false,
        )
        .expect_err("invalid");
    assert_eq!(
        error_paths(&errs),
        vec![
            path("allowed_origins.1"),
            path("allowed_methods.1"),
            path("allowed_headers.0"),
            path("allowed_headers.1"),
        ]
    );
}

#[test]
fn a_refused_request_still_gets_the_headers_of_an_allowed_origin() {
    let h = Harness::default();
    let f = h.build("cors", CFG);
    let refuse = |origin: &str| {
        let (req, ()) = http::Request::builder()
            .method(Method::POST)
            .uri("/api")
            .header("host", "api.example.com")
            .header("origin", origin)
            .body(())
            .expect("request")
            .into_parts();
        let mut cx = StreamCtx::default();
        f.on_refused_request(&req, &mut cx);
        let (mut rsp, ()) = http::Response::builder()
            .status(StatusCode::FORBIDDEN)
            .body(())
            .expect("response")
            .into_parts();
        f.on_response(&mut rsp, &mut cx);
        rsp.headers
    };
    let allowed = refuse("https://app.example.com");
    assert_eq!(
        allowed["access-control-allow-origin"],
        "https://app.example.com"
    );
    assert_eq!(allowed["access-control-expose-headers"], "x-request-id");
    let other = refuse("https://evil.example");
    assert!(other.get("access-control-allow-origin").is_none());
    // Looked at, not counted: the request was not served.
    assert_eq!(cors(&h, "allowed") + cors(&h, "denied"), 0);
}
