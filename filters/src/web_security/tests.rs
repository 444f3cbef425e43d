use http::{Method, StatusCode};

use super::stats::{CSRF_TOTAL, HEADERS_TOTAL};
use super::CSRF_BODY;
use crate::api::{Action, HttpFilter, StreamCtx};
use crate::testing::{error_paths, path, Harness};

fn respond(f: &dyn HttpFilter, tls: bool, upstream: &[(&str, &str)]) -> http::HeaderMap {
    let mut b = http::Response::builder();
    for (k, v) in upstream {
        b = b.header(*k, *v);
    }
    let (mut parts, ()) = b.body(()).expect("response").into_parts();
    let mut cx = StreamCtx {
        downstream_tls: tls,
        ..Default::default()
    };
    f.on_response(&mut parts, &mut cx);
    parts.headers
}

fn post(f: &dyn HttpFilter, method: Method, headers: &[(&str, &str)]) -> Action {
    let mut b = http::Request::builder()
        .method(method)
        .uri("/submit")
        .header("host", "app.example.com");
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    let (mut parts, ()) = b.body(()).expect("request").into_parts();
    f.on_request(&mut parts, &mut StreamCtx::default())
}

fn csrf(h: &Harness, result: &str) -> u64 {
    h.counter(CSRF_TOTAL, &[("listener", "web"), ("result", result)])
}

fn denied(a: &Action) -> bool {
    match a {
        Action::Respond(r) => {
            r.status() == StatusCode::FORBIDDEN && r.body() == CSRF_BODY.as_bytes()
        }
        Action::Continue => false,
    }
}

#[test]
fn adds_default_headers_and_hsts_only_over_tls() {
    let h = Harness::default();
    let f = h.build("web_security", "{}");
    let plain = respond(&*f, false, &[]);
    assert_eq!(plain["x-frame-options"], "DENY");
    assert_eq!(plain["content-security-policy"], "frame-ancestors 'none'");
    assert_eq!(plain["x-content-type-options"], "nosniff");
    assert_eq!(plain["referrer-policy"], "strict-origin-when-cross-origin");
    assert_eq!(plain["cross-origin-opener-policy"], "same-origin");
    assert!(plain.get("strict-transport-security").is_none());
    let tls = respond(&*f, true, &[]);
    assert_eq!(
        tls["strict-transport-security"],
        "max-age=31536000; includeSubDomains"
    );
    assert_eq!(
        h.counter(HEADERS_TOTAL, &[("listener", "web"), ("result", "added")]),
        5 + 6
    );
}

#[test]
fn keeps_upstream_headers_without_duplicating_unless_override() {
    let h = Harness::default();
    let keep = h.build("web_security", "{}");
    let out = respond(&*keep, false, &[("x-frame-options", "SAMEORIGIN")]);
    assert_eq!(
        out.get_all("x-frame-options").iter().collect::<Vec<_>>(),
        ["SAMEORIGIN"]
    );
    let over = h.build("web_security", "override: true");
    let out = respond(&*over, false, &[("x-frame-options", "SAMEORIGIN")]);
    assert_eq!(
        out.get_all("x-frame-options").iter().collect::<Vec<_>>(),
        ["DENY"]
    );
    assert_eq!(
        h.counter(HEADERS_TOTAL, &[("listener", "web"), ("result", "kept")]),
        1
    );
    assert_eq!(
        h.counter(
            HEADERS_TOTAL,
            &[("listener", "web"), ("result", "replaced")]
        ),
        1
    );
}

#[test]
fn headers_can_be_changed_disabled_or_shadowed() {
    let h = Harness::default();
    let f = h.build(
        "web_security",
        "{ frame_options: SAMEORIGIN, referrer_policy: false, cross_origin_opener_policy: false, \
           content_security_policy: \"default-src 'self';\", frame_ancestors: \"'self'\", hsts: 'max-age=60' }",
    );
    let out = respond(&*f, true, &[]);
    assert_eq!(out["x-frame-options"], "SAMEORIGIN");
    assert_eq!(
        out["content-security-policy"],
        "default-src 'self'; frame-ancestors 'self'"
    );
    assert_eq!(out["strict-transport-security"], "max-age=60");
    assert!(out.get("referrer-policy").is_none());
    assert!(out.get("cross-origin-opener-policy").is_none());

    let shadow = h.build("web_security", "headers_mode: shadow");
    let out = respond(&*shadow, false, &[]);
    assert!(out.is_empty());
    assert_eq!(
        h.counter(
            HEADERS_TOTAL,
            &[("listener", "web"), ("result", "shadow_missing")]
        ),
        5
    );
}

#[test]
fn same_origin_post_passes_by_fetch_metadata_or_origin_or_referer() {
    let h = Harness::default();
    let f = h.build("web_security", "{}");
    assert!(matches!(
        post(&*f, Method::POST, &[("sec-fetch-site", "same-origin")]),
        Action::Continue
    ));
    assert!(matches!(
        post(&*f, Method::PUT, &[("sec-fetch-site", "none")]),
        Action::Continue
    ));
    assert!(matches!(
        post(&*f, Method::POST, &[("origin", "https://app.example.com")]),
        Action::Continue
    ));
    assert!(matches!(
        post(
            &*f,
            Method::DELETE,
            &[("referer", "https://app.example.com:443/form?x=1")]
        ),
        Action::Continue
    ));
    assert_eq!(csrf(&h, "same_origin"), 4);
}

#[test]
fn rejects_cross_origin_post_with_403_and_a_clear_body() {
    let h = Harness::default();
    let f = h.build("web_security", "{}");
    assert!(denied(&post(
        &*f,
        Method::POST,
        &[
            ("sec-fetch-site", "cross-site"),
            ("origin", "https://evil.test")
        ]
    )));
    assert!(denied(&post(
        &*f,
        Method::PATCH,
        &[("origin", "https://evil.test")]
    )));
    assert!(denied(&post(&*f, Method::POST, &[("origin", "null")])));
    assert!(denied(&post(
        &*f,
        Method::POST,
        &[("referer", "http://app.example.com.evil.test/")]
    )));
    // Same host but another port is another origin.
    assert!(denied(&post(
        &*f,
        Method::POST,
        &[("origin", "https://app.example.com:8443")]
    )));
    assert_eq!(csrf(&h, "denied"), 5);
    // Safe methods are never checked.
    assert!(matches!(
        post(&*f, Method::GET, &[("origin", "https://evil.test")]),
        Action::Continue
    ));
}

#[test]
fn allowed_origins_exact_suffix_and_regex_pass_cross_site() {
    let h = Harness::default();
    let f = h.build(
        "web_security",
        r#"csrf: { allowed_origins: ["https://admin.example.com", { suffix: ".corp.example" }, { regex: '^https://[a-z]+\.tools\.example$' }] }"#,
    );
    for o in [
        "https://admin.example.com",
        "https://x.corp.example",
        "https://ci.tools.example",
    ] {
        assert!(
            matches!(
                post(
                    &*f,
                    Method::POST,
                    &[("sec-fetch-site", "same-site"), ("origin", o)]
                ),
                Action::Continue
            ),
            "{o}"
        );
    }
    assert!(matches!(
        post(
            &*f,
            Method::POST,
            &[("origin", "https://admin.example.com")]
        ),
        Action::Continue
    ));
    assert!(denied(&post(
        &*f,
        Method::POST,
        &[("origin", "https://ci.tools.example.evil")]
    )));
    assert_eq!(csrf(&h, "allowed_origin"), 4);
}

#[test]
fn shadow_mode_forwards_and_counts() {
    let h = Harness::default();
    let f = h.build("web_security", "csrf: { mode: shadow }");
    assert!(matches!(
        post(&*f, Method::POST, &[("origin", "https://evil.test")]),
        Action::Continue
    ));
    assert_eq!(csrf(&h, "shadow_denied"), 1);
    assert_eq!(csrf(&h, "denied"), 0);
}

#[test]
fn missing_origin_follows_config() {
    let h = Harness::default();
    let allow = h.build("web_security", "{}");
    assert!(matches!(post(&*allow, Method::POST, &[]), Action::Continue));
    assert_eq!(csrf(&h, "missing_origin_allowed"), 1);
    let deny = h.build("web_security", "csrf: { missing_origin: deny }");
    assert!(denied(&post(&*deny, Method::POST, &[])));
}

#[test]
fn reports_every_config_problem_with_its_path() {
    let h = Harness::default();
    let errs = h
        .try_build(
            "web_security",
            "{ frame_options: \"a\\nb\", referrer_policy: '', csrf: { allowed_origins: [example.com, '*', { regex: '[' }] }, cors: {} }",
            false,
        )
        .expect_err("invalid");
    assert_eq!(
        error_paths(&errs),
        vec![
            path("frame_options"),
            path("referrer_policy"),
            path("csrf.allowed_origins.0"),
            path("csrf.allowed_origins.2.regex"),
            path("csrf.allowed_origins.1"),
            path("cors"),
        ]
    );
    let errs = h
        .try_build("web_security", "csrf: { mod: shadow }", false)
        .expect_err("typo");
    assert_eq!(errs[0].path, path("csrf.mod"));
}
