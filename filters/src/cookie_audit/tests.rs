use std::sync::{Arc, Mutex};

use http::header::{COOKIE, SET_COOKIE};

use super::stats::{ACTIONS_TOTAL, VIOLATIONS_TOTAL};
use crate::api::{HttpFilter, StreamCtx};
use crate::testing::{error_paths, path, Harness};

const POLICY: &str =
    "cookies: [{ name: session, same_site: Strict, max_lifetime: 1d, domain: app.example.com }]\n\
                      allowed: [theme]\n";

fn violations(h: &Harness, cookie: &str, violation: &str) -> u64 {
    h.counter(
        VIOLATIONS_TOTAL,
        &[
            ("listener", "web"),
            ("cookie", cookie),
            ("violation", violation),
        ],
    )
}

fn actions(h: &Harness, cookie: &str, action: &str) -> u64 {
    h.counter(
        ACTIONS_TOTAL,
        &[("listener", "web"), ("cookie", cookie), ("action", action)],
    )
}

fn request(f: &dyn HttpFilter, cookies: &[&str]) -> http::request::Parts {
    let mut b = http::Request::builder();
    for c in cookies {
        b = b.header(COOKIE, *c);
    }
    let (mut parts, ()) = b.body(()).expect("request").into_parts();
    let mut cx = StreamCtx {
        route: Arc::from("home"),
        ..Default::default()
    };
    f.on_request(&mut parts, &mut cx);
    parts
}

fn response(f: &dyn HttpFilter, set_cookies: &[&str]) -> Vec<String> {
    let mut b = http::Response::builder().header("date", "Wed, 21 Oct 2026 07:28:00 GMT");
    for c in set_cookies {
        b = b.header(SET_COOKIE, *c);
    }
    let (mut parts, ()) = b.body(()).expect("response").into_parts();
    let mut cx = StreamCtx {
        route: Arc::from("home"),
        ..Default::default()
    };
    f.on_response(&mut parts, &mut cx);
    parts
        .headers
        .get_all(SET_COOKIE)
        .iter()
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .collect()
}

const GOOD: &str =
    "session=abc; Secure; HttpOnly; SameSite=Strict; Max-Age=3600; Domain=app.example.com";

#[test]
fn compliant_cookies_pass_untouched_and_uncounted() {
    let h = Harness::default();
    let f = h.build(
        "cookie_audit",
        &format!("{POLICY}mode: enforce\nunknown: strip"),
    );
    let parts = request(&*f, &["session=abc; theme=dark"]);
    assert_eq!(parts.headers[COOKIE], "session=abc; theme=dark");
    assert_eq!(response(&*f, &[GOOD, "theme=dark"]), [GOOD, "theme=dark"]);
    assert_eq!(h.counter_sum(VIOLATIONS_TOTAL), 0);
    assert_eq!(h.counter_sum(ACTIONS_TOTAL), 0);
}

#[test]
fn audit_mode_counts_every_violation_kind_and_changes_nothing() {
    let h = Harness::default();
    let f = h.build("cookie_audit", POLICY);
    let sent = [
        "session=a",                                 // secure, httponly, samesite
        "session=b; Secure; HttpOnly; SameSite=Lax", // wrong samesite
        "session=c; HttpOnly; SameSite=None",        // none without secure
        "session=d; Secure; HttpOnly; SameSite=Strict; Max-Age=90000", // > 1d
        "session=e; Secure; HttpOnly; SameSite=Strict; Expires=Fri, 23 Oct 2026 07:28:00 GMT",
        "session=f; Secure; HttpOnly; SameSite=Strict; Domain=.example.com",
        "tracker=x; Secure",
        "garbage-without-equals",
    ];
    assert_eq!(response(&*f, &sent), sent);
    assert_eq!(violations(&h, "session", "missing_secure"), 2);
    assert_eq!(violations(&h, "session", "missing_http_only"), 1);
    assert_eq!(violations(&h, "session", "missing_same_site"), 1);
    assert_eq!(violations(&h, "session", "wrong_same_site"), 2);
    assert_eq!(violations(&h, "session", "same_site_none_insecure"), 1);
    assert_eq!(violations(&h, "session", "lifetime_exceeded"), 2);
    assert_eq!(violations(&h, "session", "domain_too_broad"), 1);
    assert_eq!(violations(&h, "unknown", "unknown_set_cookie"), 1);
    assert_eq!(violations(&h, "unknown", "malformed"), 1);
    assert_eq!(actions(&h, "session", "dropped"), 0);
}

#[test]
fn expires_is_measured_from_the_response_date() {
    let h = Harness::default();
    let f = h.build("cookie_audit", POLICY);
    // 12h after the response's Date: within 1d, although far in the past for "now".
    response(
        &*f,
        &["session=a; Secure; HttpOnly; SameSite=Strict; Expires=Wed, 21-Oct-2026 19:28:00 GMT"],
    );
    assert_eq!(violations(&h, "session", "lifetime_exceeded"), 0);
}

#[test]
fn enforce_drops_offending_set_cookies_and_keeps_the_rest_in_order() {
    let h = Harness::default();
    let f = h.build(
        "cookie_audit",
        &format!("{POLICY}mode: enforce\nunknown: strip"),
    );
    let out = response(
        &*f,
        &[
            "theme=1",
            "session=a",
            GOOD,
            "tracker=x",
            "noequals",
            "theme=2",
        ],
    );
    assert_eq!(out, ["theme=1", GOOD, "theme=2"]);
    assert_eq!(actions(&h, "session", "dropped"), 1);
    assert_eq!(actions(&h, "unknown", "dropped"), 2);
}

#[test]
fn enforce_with_unknown_allow_keeps_unknown_cookies_but_counts_them() {
    let h = Harness::default();
    let f = h.build("cookie_audit", &format!("{POLICY}mode: enforce"));
    assert_eq!(response(&*f, &["tracker=x"]), ["tracker=x"]);
    let parts = request(&*f, &["tracker=1; session=2"]);
    assert_eq!(parts.headers[COOKIE], "tracker=1; session=2");
    assert_eq!(violations(&h, "unknown", "unknown_set_cookie"), 1);
    assert_eq!(violations(&h, "unknown", "unknown_cookie"), 1);
}

#[test]
fn fix_adds_missing_attributes_and_caps_lifetime_and_domain() {
    let h = Harness::default();
    let f = h.build("cookie_audit", &format!("{POLICY}mode: enforce\nfix: true"));
    let out = response(
        &*f,
        &["session=a; Path=/; SameSite=Lax; Max-Age=999999; Expires=Fri, 01 Jan 2100 00:00:00 GMT; Domain=example.com"],
    );
    assert_eq!(
        out,
        ["session=a; Path=/; Secure; HttpOnly; SameSite=Strict; Max-Age=86400; Domain=app.example.com"]
    );
    assert_eq!(actions(&h, "session", "fixed"), 1);
    assert_eq!(violations(&h, "session", "wrong_same_site"), 1);
    // A fixed cookie passes a second audit.
    let h2 = Harness::default();
    let audit = h2.build("cookie_audit", POLICY);
    response(&*audit, &[out[0].as_str()]);
    assert_eq!(h2.counter(VIOLATIONS_TOTAL, &[]), 0);
    for v in [
        "missing_secure",
        "wrong_same_site",
        "lifetime_exceeded",
        "domain_too_broad",
    ] {
        assert_eq!(violations(&h2, "session", v), 0, "{v}");
    }
}

#[test]
fn enforce_strips_unknown_request_cookies_across_several_headers() {
    let h = Harness::default();
    let f = h.build(
        "cookie_audit",
        &format!("{POLICY}mode: enforce\nunknown: strip"),
    );
    let parts = request(&*f, &["a=1;session=s", "  theme=\"dark\" ;; flag; b=2"]);
    let got: Vec<_> = parts.headers.get_all(COOKIE).iter().collect();
    assert_eq!(got, ["session=s; theme=\"dark\""]);
    assert_eq!(violations(&h, "unknown", "unknown_cookie"), 3);
    assert_eq!(actions(&h, "unknown", "stripped"), 3);
    // Only unknown cookies: the header goes away entirely.
    let parts = request(&*f, &["x=1; y=2"]);
    assert!(parts.headers.get(COOKIE).is_none());
}

#[test]
fn audit_mode_does_not_strip_request_cookies() {
    let h = Harness::default();
    let f = h.build("cookie_audit", &format!("{POLICY}unknown: strip"));
    let parts = request(&*f, &["x=1; session=2"]);
    assert_eq!(parts.headers[COOKIE], "x=1; session=2");
    assert_eq!(actions(&h, "unknown", "stripped"), 0);
}

#[test]
fn ten_thousand_distinct_names_keep_labels_bounded() {
    let h = Harness::default();
    let f = h.build("cookie_audit", POLICY);
    let header: String = (0..10_000).map(|i| format!("c{i}=v; ")).collect();
    request(&*f, &[header.as_str()]);
    assert_eq!(violations(&h, "unknown", "unknown_cookie"), 10_000);
    // (session, theme, unknown) x 10 violation kinds, registered at build.
    assert_eq!(h.cardinality(VIOLATIONS_TOTAL), 3 * 10);
}

#[test]
fn garbage_headers_never_panic() {
    let h = Harness::default();
    let f = h.build(
        "cookie_audit",
        &format!("{POLICY}mode: enforce\nunknown: strip\nfix: true"),
    );
    let nasty: [&[u8]; 9] = [
        b"",
        b";",
        b"=",
        b"==;==",
        b"\"",
        b"a=\"",
        b"\x80\xff=\xfe",
        b"session",
        b"session=; Max-Age=; Expires=; Domain=; SameSite",
    ];
    for n in nasty {
        let mut b = http::Request::builder();
        let mut r = http::Response::builder();
        if let Ok(v) = http::HeaderValue::from_bytes(n) {
            b = b.header(COOKIE, v.clone());
            r = r.header(SET_COOKIE, v);
        }
        let (mut req, ()) = b.body(()).expect("request").into_parts();
        let (mut rsp, ()) = r.body(()).expect("response").into_parts();
        let mut cx = StreamCtx::default();
        f.on_request(&mut req, &mut cx);
        f.on_response(&mut rsp, &mut cx);
    }
}

/// Collects formatted log output.
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .map_err(|_| std::io::Error::other("poisoned"))?
            .extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn logs_name_the_cookie_and_route_never_the_value_and_are_rate_limited() {
    let h = Harness::default();
    let f = h.build("cookie_audit", &format!("{POLICY}log_lines_per_second: 3"));
    let cap = Capture::default();
    let writer = cap.clone();
    let sub = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    tracing::subscriber::with_default(sub, || {
        request(
            &*f,
            &["tracker=SECRET1; SECRETFLAG; x=SECRET2; y=SECRET3; z=SECRET4"],
        );
    });
    let out = String::from_utf8(cap.0.lock().expect("lock").clone()).expect("utf8");
    assert!(!out.contains("SECRET"), "{out}");
    assert_eq!(out.lines().count(), 3, "{out}");
    assert!(out.contains("cookie=\"tracker\""), "{out}");
    assert!(out.contains("route=home"), "{out}");
    assert_eq!(violations(&h, "unknown", "unknown_cookie"), 5);
}

#[test]
fn reports_every_config_problem_with_its_path() {
    let h = Harness::default();
    let errs = h
        .try_build(
            "cookie_audit",
            "cookies:\n\
             - { name: 'bad name', max_lifetime: 0s }\n\
             - { name: ok, domain: 'https://x', same_site: None, secure: false }\n\
             allowed: [ok, unknown]\n",
            false,
        )
        .expect_err("invalid");
    assert_eq!(
        error_paths(&errs),
        vec![
            path("cookies.0.name"),
            path("allowed.0"),
            path("allowed.1"),
            path("cookies.0.max_lifetime"),
            path("cookies.1.domain"),
            path("cookies.1.same_site"),
        ]
    );
    let errs = h
        .try_build(
            "cookie_audit",
            "cookies: [{ name: a, httponly: true }]",
            false,
        )
        .expect_err("unknown attribute");
    assert_eq!(errs[0].path, path("cookies.0.httponly"));
    assert!(
        errs[0].message.contains("unknown field"),
        "{}",
        errs[0].message
    );
}
