//! `attache test-routes` and `attache explain` (offline and the admin `/explain`),
//! on weighted, header-matched and filter-overridden routes.

mod support;

use support::toolkit::{Dir, WEB};

const PASSING: &str = r#"tests:
  - name: canary header goes to v2
    request: { host: www.example.com, path: /api/users, headers: { x-canary: "1" } }
    expect: { route: canary, cluster: api_v2, filters: [headers], timeout: 2s }
  - name: api is split and rewritten
    request: { listener: web, host: www.example.com, path: /api/users, method: POST }
    expect:
      route: api
      weighted_clusters: { api_v1: 90, api_v2: 10 }
      rewritten_path: /users
      filters: [headers, cors]
  - name: old paths redirect
    request: { host: www.example.com, path: /old/x, query: { a: "1" } }
    expect: { route: old, redirect: "http://www.example.com/new/?a=1", status: 301 }
  - name: unknown host
    request: { host: other.example.com, path: / }
    expect: { no_route: true, status: 404 }
"#;

#[test]
fn passing_tests_exit_0_and_report_coverage() {
    let d = Dir::new();
    d.write("web.yaml", WEB).write("t.yaml", PASSING);
    let out = d.run(&[
        "test-routes",
        "--config",
        "web.yaml",
        "--tests",
        "t.yaml",
        "--coverage",
    ]);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    assert_eq!(
        out.stdout,
        "PASS canary header goes to v2\n\
         PASS api is split and rewritten\n\
         PASS old paths redirect\n\
         PASS unknown host\n\
         4 tests: 4 passed, 0 failed\n\
         coverage: 3 of 4 routes reached (75.0%)\n  \
         not reached: web/main/health (web.yaml:24:13)\n"
    );
    // Coverage floor.
    let out = d.run(&[
        "test-routes",
        "-c",
        "web.yaml",
        "-t",
        "t.yaml",
        "--fail-under",
        "80",
    ]);
    assert_eq!(out.code, 1);
    assert!(
        out.stdout
            .ends_with("coverage 75.0% is below --fail-under 80\n"),
        "{}",
        out.stdout
    );
    let out = d.run(&[
        "test-routes",
        "-c",
        "web.yaml",
        "-t",
        "t.yaml",
        "--fail-under",
        "75",
    ]);
    assert_eq!(out.code, 0, "{}", out.stdout);
}

#[test]
fn failing_tests_show_expected_and_actual_and_exit_1() {
    let d = Dir::new();
    d.write("web.yaml", WEB).write(
        "t.yaml",
        r#"tests:
  - name: split moved
    request: { host: www.example.com, path: /api/users }
    expect:
      weighted_clusters: { api_v1: 80, api_v2: 20 }
      rewritten_path: /api/users
  - name: health
    request: { host: www.example.com, path: /healthz }
    expect: { route: health, direct_response: 204, filters: [headers] }
  - name: canary without the header
    request: { host: www.example.com, path: /api/x }
    expect: { cluster: api_v2 }
"#,
    );
    let out = d.run(&["test-routes", "--config", "web.yaml", "--tests", "t.yaml"]);
    assert_eq!(out.code, 1);
    assert_eq!(
        out.stdout,
        "FAIL split moved (t.yaml:2:5)
  weighted_clusters:
    expected: api_v1: 80, api_v2: 20
    actual:   api_v1: 90, api_v2: 10
  rewritten_path:
    expected: /api/users
    actual:   /users
FAIL health (t.yaml:7:5)
  direct_response:
    expected: 204
    actual:   200
  filters:
    expected: headers
    actual:   headers, cors
FAIL canary without the header (t.yaml:10:5)
  cluster:
    expected: api_v2
    actual:   route to weighted clusters: api_v1 90 (90%), api_v2 10 (10%)
3 tests: 0 passed, 3 failed
"
    );
    let out = d.run(&[
        "test-routes",
        "-c",
        "web.yaml",
        "-t",
        "t.yaml",
        "--format",
        "json",
    ]);
    assert_eq!(out.code, 1);
    let v: serde_json::Value = serde_json::from_str(&out.stdout).expect("json");
    assert_eq!(v["failed"], 3);
    assert_eq!(v["coverage"]["reached"], 2);
    assert_eq!(
        v["diagnostics"][2],
        serde_json::json!({"file": "t.yaml", "line": 9, "column": 47, "severity": "error",
            "code": "route-test", "message": "test `health`: direct_response: expected 204, actual 200"})
    );
}

#[test]
fn tests_file_with_unknown_keys_is_located_and_exits_2() {
    let tests =
        "tests:\n  - name: x\n    request: { host: a, pth: /api/ }\n    expect: { rout: api }\n";
    let out = Dir::new()
        .write("web.yaml", WEB)
        .write("t.yaml", tests)
        .run(&["test-routes", "-c", "web.yaml", "-t", "t.yaml"]);
    assert_eq!(out.code, 2);
    assert_eq!(
        out.stderr,
        "t.yaml:3:25: unknown key `pth`; did you mean `path`?\n\
         t.yaml:4:15: unknown key `rout`; did you mean `route`?\n\
         2 errors, 0 warnings\n"
    );
}

#[test]
fn thrift_routes_are_tested_by_method_and_service() {
    let rpc = r#"listeners:
  - name: rpc
    address: 127.0.0.1:0
    protocol: thrift
    thrift:
      routes:
        - name: users
          match: { service: UserService }
          route: { cluster: users }
        - name: rest
          route: { weighted_clusters: [{ cluster: users, weight: 50 }, { cluster: other, weight: 50 }] }
clusters:
  - name: users
    endpoints: ["127.0.0.1:9001"]
  - name: other
    endpoints: ["127.0.0.1:9002"]
"#;
    let tests = r#"tests:
  - name: multiplexed user service
    request: { method: getUser, service: UserService }
    expect: { route: users, cluster: users }
  - name: anything else is split
    request: { method: ping }
    expect: { route: rest, weighted_clusters: { users: 50, other: 50 } }
"#;
    let out = Dir::new()
        .write("rpc.yaml", rpc)
        .write("t.yaml", tests)
        .run(&[
            "test-routes",
            "-c",
            "rpc.yaml",
            "-t",
            "t.yaml",
            "--coverage",
        ]);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    assert!(
        out.stdout
            .ends_with("2 tests: 2 passed, 0 failed\ncoverage: 2 of 2 routes reached (100.0%)\n"),
        "{}",
        out.stdout
    );
}

#[test]
fn explain_weighted_route_with_overridden_filter() {
    let out = Dir::new().write("web.yaml", WEB).run(&[
        "explain",
        "--config",
        "web.yaml",
        "--host",
        "www.example.com",
        "--path",
        "/api/users",
    ]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(
        out.stdout,
        "listener      web (http)
virtual host  main
route         api
action        route to weighted clusters: api_v1 90 (90%), api_v2 10 (10%)
upstream path /users
filters       headers, cors (route override)
timeout       15s
"
    );
}

#[test]
fn explain_header_matched_route_with_disabled_filter_and_retries() {
    let d = Dir::new();
    d.write("web.yaml", WEB);
    let out = d.run(&[
        "explain",
        "-c",
        "web.yaml",
        "--listener",
        "web",
        "--host",
        "www.example.com:8080",
        "--path",
        "/api/users",
        "--header",
        "x-canary:1",
        "--format",
        "json",
    ]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let v: serde_json::Value = serde_json::from_str(&out.stdout).expect("json");
    assert_eq!(
        v,
        serde_json::json!({
            "listener": "web", "protocol": "http", "virtual_host": "main", "route": "canary",
            "action": {"type": "cluster", "cluster": "api_v2"},
            "upstream_path": "/api/users", "host_rewrite": null,
            "filters": ["headers"], "overridden_filters": [], "disabled_filters": ["cors"],
            "timeout": "2s", "retries": "2 attempts on 5xx, reset",
        })
    );
    // Unknown listener: a clear error, exit 2.
    let out = d.run(&["explain", "-c", "web.yaml", "--listener", "nope"]);
    assert_eq!(
        (out.code, out.stderr.as_str()),
        (2, "attache: no listener `nope`; listeners: web\n")
    );
}

#[tokio::test]
async fn admin_explain_answers_for_the_running_config() {
    let proxy = support::Proxy::start(WEB);
    let (status, body) = proxy
        .admin_get("/explain?listener=web&host=www.example.com&path=/api/users&header=x-canary:1")
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        "listener      web (http)
virtual host  main
route         canary
action        route to cluster api_v2
upstream path /api/users
filters       headers
disabled      cors
timeout       2s
retries       2 attempts on 5xx, reset
"
    );
    let (status, body) = proxy
        .admin_get("/explain?host=www.example.com&path=/api/users&method=POST&format=json")
        .await;
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(v["route"], "api");
    assert_eq!(
        v["action"],
        serde_json::json!({"type": "weighted_clusters", "clusters": [
            {"cluster": "api_v1", "weight": 90, "percent": 90.0},
            {"cluster": "api_v2", "weight": 10, "percent": 10.0}]})
    );
    assert_eq!(v["overridden_filters"], serde_json::json!(["cors"]));
    let (status, _) = proxy.admin_get("/explain?listener=nope").await;
    assert_eq!(status, 400);
}
