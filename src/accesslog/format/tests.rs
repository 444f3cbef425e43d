use std::time::{Duration, SystemTime};

use http::HeaderValue;

use super::*;

fn rec<'a>(req: &'a [Option<HeaderValue>], resp: &'a [Option<HeaderValue>]) -> Record<'a> {
    Record {
        start_time: Some(SystemTime::UNIX_EPOCH + Duration::from_millis(1_764_115_199_123)),
        listener: "ingress",
        method: "GET",
        path: "/a?b=1",
        authority: "example.com",
        protocol: "HTTP/1.1",
        status: 200,
        bytes_received: 3,
        bytes_sent: 19,
        duration: Some(Duration::from_micros(1_873)),
        response_duration: Some(Duration::from_micros(1_200)),
        upstream_connect: Some(Duration::from_micros(250)),
        route: "api",
        cluster: "origin",
        upstream: "127.0.0.1:8081",
        attempts: 2,
        request_id: "rid",
        downstream: "[::1]:5000",
        peer_san: "spiffe://x/web",
        tls_version: "TLSv1.3",
        sni: "example.com",
        req_headers: req,
        resp_headers: resp,
        ..Record::default()
    }
}

fn render(f: &Format, r: &Record<'_>) -> String {
    let mut s = String::new();
    f.render(r, &mut s);
    s
}

#[test]
fn text_template_renders_operators_and_literals() {
    let f = Format::text(
        "%REQ(:METHOD)% %REQ(:PATH)% %RESPONSE_CODE% %DURATION% %DURATION(us)% %RESPONSE_DURATION(us)% \
%UPSTREAM_CONNECT_DURATION(us)% %UPSTREAM_REQUEST_ATTEMPT_COUNT% %DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT% \
%DOWNSTREAM_TLS_VERSION% %DOWNSTREAM_TLS_CIPHER% %REQUESTED_SERVER_NAME% %LISTENER_NAME% 100%% %START_TIME%\n",
    )
    .unwrap_or_else(|e| panic!("{e:?}"));
    assert_eq!(
        render(&f, &rec(&[], &[])),
        "GET /a?b=1 200 1 1873 1200 250 2 ::1 TLSv1.3 - example.com ingress 100% 2025-11-25T23:59:59.123Z"
    );
}

#[test]
fn headers_are_captured_only_when_named_and_fall_back() {
    let f = Format::text("%REQ(X-A?X-B)% %REQ(x-a)% %RESP(Content-Type)% %REQ(USER-AGENT):3%")
        .unwrap_or_else(|e| panic!("{e:?}"));
    assert_eq!(f.req_headers, ["x-a", "x-b", "user-agent"]);
    assert_eq!(f.resp_headers, ["content-type"]);
    let req = [
        None,
        Some(HeaderValue::from_static("b")),
        Some(HeaderValue::from_static("curl/8")),
    ];
    let resp = [Some(HeaderValue::from_static("text/plain"))];
    assert_eq!(render(&f, &rec(&req, &resp)), "b - text/plain cur");
}

#[test]
fn text_values_are_escaped() {
    let f = Format::text("\"%REQ(X-A)%\"").unwrap_or_else(|e| panic!("{e:?}"));
    let req = [Some(HeaderValue::from_static("a\" b\\c"))];
    assert_eq!(render(&f, &rec(&req, &[])), r#""a\" b\\c""#);
}

#[test]
fn json_fields_keep_order_and_types() {
    let fields: Vec<(String, String)> = [
        ("code", "%RESPONSE_CODE%"),
        ("ua", "%REQ(USER-AGENT)%"),
        ("flags", "%RESPONSE_FLAGS%"),
        ("mixed", "%REQ(:METHOD)% %RESPONSE_FLAGS%"),
        ("s", "%DURATION(s)%"),
    ]
    .iter()
    .map(|(a, b)| (a.to_string(), b.to_string()))
    .collect();
    let f = Format::json(&fields).unwrap_or_else(|e| panic!("{e:?}"));
    let req = [Some(HeaderValue::from_static("a\"\tb"))];
    let line = render(&f, &rec(&req, &[]));
    assert_eq!(
        line,
        r#"{"code":200,"ua":"a\"\tb","flags":null,"mixed":"GET -","s":0.002}"#
    );
    let v: serde_json::Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(v["code"], 200);
}

#[test]
fn builtin_json_has_the_documented_fields() {
    let line = render(&Format::builtin_json(), &rec(&[], &[]));
    let v: serde_json::Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(v["duration_ms"], 1.873);
    assert_eq!(v["response_flags"], "-");
    assert_eq!(v["user_agent"], "");
    assert_eq!(v["peer_san"], "spiffe://x/web");
    assert_eq!(v["start_time"], "2025-11-25T23:59:59.123Z");
    assert_eq!(v["grpc_status"], "-");
    // Without tracing the trace id is empty.
    assert_eq!(v["trace_id"], "");
    assert_eq!(v.as_object().map(|o| o.len()), Some(19));
}

#[test]
fn builtin_text_matches_the_documented_layout() {
    let line = render(&Format::builtin_text(), &rec(&[], &[]));
    assert_eq!(
        line,
        r#"[2025-11-25T23:59:59.123Z] "GET /a?b=1 HTTP/1.1" 200 - 3 19 1.873 "127.0.0.1:8081" "api" "origin" "rid" "example.com" "[::1]:5000" "-""#
    );
}

#[test]
fn bad_templates_say_what_is_wrong() {
    for (t, want) in [
        ("%RESPONSE_COD%", "did you mean `%RESPONSE_CODE%`"),
        ("%NOPE_AT_ALL_X%", "unknown operator `%NOPE_AT_ALL_X%`"),
        ("%REQ%", "needs a header name"),
        ("%REQ(bad header)%", "not a header name"),
        ("%DURATION(h)%", "unknown unit `h`"),
        ("%DURATION(ms.3)%", "unknown unit"),
        ("%PROTOCOL(x)%", "takes no argument"),
        ("%PROTOCOL%:3", ""),
        ("%BYTES_SENT", "unterminated operator at byte 0"),
        ("%REQ(X-A):x%", "must be a number"),
        ("%RESPONSE_CODE:3%", "unknown operator"),
    ] {
        match Format::text(t) {
            Ok(_) if want.is_empty() => {}
            Ok(_) => panic!("{t} accepted"),
            Err(e) => assert!(
                !want.is_empty() && e.join("; ").contains(want),
                "{t}: {e:?}"
            ),
        }
    }
}

#[test]
fn start_time_takes_an_envoy_strftime_pattern() {
    let f = Format::text("[%START_TIME(%Y-%m-%dT%H:%M:%S%z)%] %START_TIME(%s.%3f)% %START_TIME%")
        .unwrap_or_else(|e| panic!("{e:?}"));
    assert_eq!(
        render(&f, &rec(&[], &[])),
        "[2025-11-25T23:59:59+0000] 1764115199.123 2025-11-25T23:59:59.123Z"
    );
    let fields = vec![(
        "t".to_string(),
        "%START_TIME(%d/%b/%Y:%H:%M:%S %z)%".to_string(),
    )];
    let f = Format::json(&fields).unwrap_or_else(|e| panic!("{e:?}"));
    assert_eq!(
        render(&f, &rec(&[], &[])),
        r#"{"t":"25/Nov/2025:23:59:59 +0000"}"#
    );
    for (t, want) in [
        ("%START_TIME(%Q)%", "unsupported time specifier `%Q`"),
        ("%START_TIME(%Y", "unterminated operator"),
    ] {
        let e = Format::text(t).expect_err(t).join("; ");
        assert!(e.contains(want), "{t}: {e}");
    }
}

#[test]
fn every_bad_operator_of_a_template_is_reported() {
    let e = Format::text("%RESPONSE_COD% %REQ(:PATH)% %DURATION(h)% %PROTOCOL(x)%")
        .expect_err("three bad operators");
    assert_eq!(e.len(), 3, "{e:?}");
    assert!(e[0].contains("did you mean `%RESPONSE_CODE%`"), "{e:?}");
    assert!(e[1].contains("unknown unit `h`"), "{e:?}");
    assert!(e[2].contains("takes no argument"), "{e:?}");
}
