use std::sync::Arc;
use std::time::Duration;

use http::StatusCode;

use super::*;
use crate::api::StreamCtx;
use crate::testing::{error_paths, path, Harness};

fn done(route: &str, status: Option<u16>) -> StreamCtx {
    StreamCtx {
        route: Arc::from(route),
        status: status.and_then(|s| StatusCode::from_u16(s).ok()),
        duration: Some(Duration::from_millis(12)),
        ..Default::default()
    }
}

fn outcome(h: &Harness, route: &str, outcome: &str) -> u64 {
    h.counter(
        REQUESTS_TOTAL,
        &[("listener", "web"), ("route", route), ("outcome", outcome)],
    )
}

#[test]
fn counts_5xx_as_errors_and_the_rest_as_success_by_default() {
    let h = Harness::default();
    let f = h.build("sli", "{}");
    for s in [200, 204, 404, 429, 500, 503] {
        f.on_complete(&done("api", Some(s)));
    }
    assert_eq!(outcome(&h, "api", "success"), 4);
    assert_eq!(outcome(&h, "api", "error"), 2);
    assert_eq!(
        h.histogram_count(REQUEST_DURATION, &[("listener", "web"), ("route", "api")]),
        6
    );
}

#[test]
fn proxy_failures_are_errors_but_client_disconnects_are_not() {
    let h = Harness::default();
    let f = h.build("sli", "{}");
    let mut timeout = done("api", Some(504));
    timeout.local_reply = true;
    timeout.response_flag = Some("UT");
    f.on_complete(&timeout);
    let mut no_route = done("", Some(404));
    no_route.local_reply = true;
    no_route.response_flag = Some("NR");
    f.on_complete(&no_route);
    let mut left = done("api", None);
    left.response_flag = Some("DC");
    f.on_complete(&left);
    // A filter's own reply (e.g. a CORS preflight 204) carries no flag.
    let mut preflight = done("api", Some(204));
    preflight.local_reply = true;
    f.on_complete(&preflight);
    // A rate limit (`RL`) is classified by its status (429: success by default).
    let mut limited = done("api", Some(429));
    limited.local_reply = true;
    limited.response_flag = Some("RL");
    f.on_complete(&limited);
    assert_eq!(outcome(&h, "api", "error"), 1);
    assert_eq!(outcome(&h, "api", "success"), 3);
    assert_eq!(outcome(&h, NO_ROUTE, "error"), 1);
}

#[test]
fn local_replies_can_be_classified_by_status_only() {
    let h = Harness::default();
    let f = h.build("sli", "errors: { local_replies: false }");
    let mut no_route = done("", Some(404));
    no_route.local_reply = true;
    no_route.response_flag = Some("NR");
    f.on_complete(&no_route);
    assert_eq!(outcome(&h, NO_ROUTE, "success"), 1);
}

#[test]
fn per_route_override_counts_429_for_that_route_only() {
    let h = Harness::default();
    let f = h.build("sli", "routes: { checkout: { statuses: [5xx, 429] } }");
    f.on_complete(&done("checkout", Some(429)));
    f.on_complete(&done("search", Some(429)));
    assert_eq!(outcome(&h, "checkout", "error"), 1);
    assert_eq!(outcome(&h, "search", "success"), 1);
}

#[test]
fn route_labels_stay_bounded() {
    let h = Harness::default();
    let f = h.build("sli", "{}");
    for i in 0..(MAX_ROUTES + 50) {
        f.on_complete(&done(&format!("r{i}"), Some(200)));
    }
    // success + error per route, plus the `_other` pair.
    assert_eq!(h.cardinality(REQUESTS_TOTAL), 2 * MAX_ROUTES + 2);
    assert_eq!(outcome(&h, OTHER_ROUTE, "success"), 50);
}

#[test]
fn board_shows_ratios_budget_and_burn_for_a_scripted_mix() {
    let h = Harness::default();
    let f = h.build(
        "sli",
        "objectives: [{ name: api_avail, routes: [api], target: 90, window: 1h }, \
                      { name: users_avail, clusters: [users], target: 99.9 }]",
    );
    // 8 x 200, 1 x 500, 1 x upstream timeout: 80% success.
    for _ in 0..8 {
        f.on_complete(&done("api", Some(200)));
    }
    f.on_complete(&done("api", Some(500)));
    let mut t = done("api", Some(504));
    t.local_reply = true;
    t.response_flag = Some("UT");
    f.on_complete(&t);
    let mut by_cluster = done("other", Some(200));
    by_cluster.cluster = Some(Arc::from("users"));
    f.on_complete(&by_cluster);

    let json: serde_json::Value =
        serde_json::from_str(&h.services.sli.render_json()).expect("json");
    let route = json["routes"]
        .as_array()
        .expect("routes")
        .iter()
        .find(|r| r["route"] == "api")
        .expect("api route");
    assert_eq!(route["requests"], 10);
    assert_eq!(route["errors"], 2);
    assert_eq!(route["last_1m"]["success_ratio"], 0.8);
    assert_eq!(route["last_1h"]["requests"], 10);
    let obj = &json["objectives"][0];
    assert_eq!(obj["name"], "api_avail");
    assert_eq!(obj["window"]["requests"], 10);
    // 20% errors against a 10% allowance: budget -100%, burning at 2x.
    let budget = obj["error_budget_remaining"].as_f64().expect("budget");
    assert!((budget + 1.0).abs() < 1e-9, "{budget}");
    let burn = obj["burn_rate_1h"].as_f64().expect("burn");
    assert!((burn - 2.0).abs() < 1e-9, "{burn}");
    assert_eq!(json["objectives"][1]["name"], "users_avail");
    assert_eq!(json["objectives"][1]["requests"], 1);

    let text = h.services.sli.render_text();
    assert!(text.contains("api_avail"), "{text}");
    assert!(text.contains("80.000%"), "{text}");
}

#[test]
fn board_keeps_state_across_rebuilds_and_thrift_records_feed_it() {
    let h = Harness::default();
    let yaml = "objectives: [{ name: get_user, routes: [getUser], target: 99, window: 1d }]";
    h.build("sli", yaml)
        .on_complete(&done("getUser", Some(200)));
    // A reload builds a new filter against the same Services.
    h.build("sli", yaml)
        .on_complete(&done("getUser", Some(200)));
    h.services
        .sli
        .record("thrift_in", "getUser", false, Duration::from_millis(3));
    let json: serde_json::Value =
        serde_json::from_str(&h.services.sli.render_json()).expect("json");
    assert_eq!(json["objectives"][0]["requests"], 3);
    assert_eq!(json["objectives"][0]["errors"], 1);
    assert_eq!(json["routes"].as_array().map(Vec::len), Some(2));
}

#[test]
fn reports_every_config_problem_with_its_path() {
    let h = Harness::default();
    let errs = h
        .try_build(
            "sli",
            "errors: { statuses: [5xx, 7xx, 42] }\n\
             routes: { a: { statuses: [abc] } }\n\
             objectives:\n\
             - { name: x, routes: [a], target: 100 }\n\
             - { name: x, target: 99, window: 10s }\n",
            false,
        )
        .expect_err("invalid");
    assert_eq!(
        error_paths(&errs),
        vec![
            path("errors.statuses.1"),
            path("errors.statuses.2"),
            path("routes.a.statuses.0"),
            path("objectives.0.target"),
            path("objectives.1.name"),
            path("objectives.1"),
            path("objectives.1.window"),
        ]
    );
    let errs = h
        .try_build(
            "sli",
            "objectives: [{ name: x, routes: [a], target: 99, windw: 1d }]",
            false,
        )
        .expect_err("unknown key");
    assert_eq!(errs.len(), 1);
    assert!(errs[0].message.contains("unknown field"));
}

#[test]
fn ring_forgets_old_buckets_and_windows_differ() {
    let board = Board::default();
    let s = board.series("l", "r");
    s.record_at(0, false);
    s.record_at(30, true);
    s.record_at(100, true); // the 1m window now only holds this one
    let text = board.render_text_at_for_tests(100);
    assert!(text.contains("100.000%"), "{text}");
    let json: serde_json::Value =
        serde_json::from_str(&board.render_json_at_for_tests(100)).expect("json");
    let r = &json["routes"][0];
    assert_eq!(r["last_1m"]["requests"], 1);
    assert_eq!(r["last_5m"]["requests"], 3);
    assert_eq!(r["last_1h"]["requests"], 3);
    let json: serde_json::Value =
        serde_json::from_str(&board.render_json_at_for_tests(4000)).expect("json");
    assert_eq!(json["routes"][0]["last_1h"]["requests"], 0);
    assert_eq!(json["routes"][0]["requests"], 3);
}

fn grpc_done(route: &str, code: crate::grpc::Code) -> StreamCtx {
    let mut cx = done(route, Some(200));
    cx.grpc = Some(crate::grpc::Kind::Grpc);
    cx.grpc_status = Some(code);
    cx
}

#[test]
fn grpc_calls_are_classified_by_grpc_status_not_http_200() {
    use crate::grpc::Code;
    let h = Harness::default();
    let f = h.build("sli", "{}");
    let errors = [
        Code::Unknown,
        Code::DeadlineExceeded,
        Code::Unimplemented,
        Code::Internal,
        Code::Unavailable,
        Code::DataLoss,
    ];
    for c in Code::ALL {
        f.on_complete(&grpc_done("rpc", c));
    }
    assert_eq!(outcome(&h, "rpc", "error"), errors.len() as u64);
    assert_eq!(outcome(&h, "rpc", "success"), (17 - errors.len()) as u64);
}

#[test]
fn grpc_error_codes_are_configurable_per_route() {
    use crate::grpc::Code;
    let h = Harness::default();
    let f = h.build(
        "sli",
        "{ errors: { grpc_codes: [UNAVAILABLE] }, routes: { strict: { grpc_codes: [PERMISSION_DENIED, 13] } } }",
    );
    for c in [Code::PermissionDenied, Code::Internal, Code::Unavailable] {
        f.on_complete(&grpc_done("rpc", c));
        f.on_complete(&grpc_done("strict", c));
    }
    assert_eq!(outcome(&h, "rpc", "error"), 1);
    assert_eq!(outcome(&h, "strict", "error"), 2);
    let errs = Harness::default()
        .try_build("sli", "{ errors: { grpc_codes: [UNAVAILBLE, 17] } }", false)
        .expect_err("invalid");
    assert_eq!(
        error_paths(&errs),
        vec![path("errors.grpc_codes.0"), path("errors.grpc_codes.1")]
    );
}
