//! `sli` through the real binary: a scripted mix of successes, errors and upstream
//! timeouts, checked in `/stats` and in the admin `/sli` view.

mod support;

use std::time::Duration;

use support::yaml::Routes;
use support::{eventually, get, Origin, Proxy};

fn config(origin: &Origin) -> String {
    let filters = "filters:
  - sli:
      routes:
        throttled: { statuses: [5xx, 429] }
      objectives:
        - { name: app_availability, routes: [app], target: 99.0, window: 1h }
        - { name: origin_cluster, clusters: [origin], target: 90, window: 1h }";
    let routes = "- name: throttled
  match: { prefix: /t/ }
  route: { cluster: origin, prefix_rewrite: /status/, timeout: 5s }
- name: app
  match: { prefix: / }
  route: { cluster: origin, timeout: 300ms }";
    Routes::new(routes)
        .names("web", "all")
        .listener_key(filters)
        .cluster("origin", &[origin.addr], "")
        .yaml()
}

fn sli_stat(route: &str, outcome: &str) -> String {
    format!(
        "attache_sli_requests_total{{listener=\"web\",outcome=\"{outcome}\",route=\"{route}\"}}"
    )
}

#[tokio::test]
async fn sli_counts_and_ratios_match_a_scripted_mix() {
    let origin = Origin::start("o").await;
    let p = Proxy::start(&config(&origin));

    // app: 40 x 200, 3 x 404 and 2 x 429 (successes by default), 6 x 500, 4 timeouts.
    // throttled (429 is an error there): 3 x 429, 2 x 200.
    let mut script: Vec<(&str, u16)> = Vec::new();
    script.extend(std::iter::repeat_n(("/status/200", 200), 40));
    script.extend(std::iter::repeat_n(("/status/404", 404), 3));
    script.extend(std::iter::repeat_n(("/status/429", 429), 2));
    script.extend(std::iter::repeat_n(("/status/500", 500), 6));
    script.extend(std::iter::repeat_n(("/slow/3000", 504), 4));
    script.extend(std::iter::repeat_n(("/t/429", 429), 3));
    script.extend(std::iter::repeat_n(("/t/200", 200), 2));
    let mut tasks = Vec::new();
    for (path, want) in script {
        let url = p.url("web", path);
        tasks.push(tokio::spawn(async move {
            let r = get(&url, &[]).await;
            assert_eq!(r.status, want, "{url}");
        }));
    }
    for t in tasks {
        tokio::time::timeout(Duration::from_secs(30), t)
            .await
            .expect("request timed out")
            .expect("request task");
    }

    eventually(Duration::from_secs(30), "sli counters", || async {
        let done = p.stat(&sli_stat("app", "success")).await == 45.0
            && p.stat(&sli_stat("app", "error")).await == 10.0
            && p.stat(&sli_stat("throttled", "error")).await == 3.0
            && p.stat(&sli_stat("throttled", "success")).await == 2.0;
        done.then_some(())
    })
    .await;
    assert_eq!(
        p.stat("attache_sli_request_duration_seconds_count{listener=\"web\",route=\"app\"}")
            .await,
        55.0
    );
    // The four timeouts are the proxy's own 504s, counted as such.
    assert_eq!(
        p.stat("attache_upstream_rq_timeout_total{cluster=\"origin\"}")
            .await,
        4.0
    );

    // /sli?format=json: per route and per objective.
    let (status, body) = p.admin_get("/sli?format=json").await;
    assert_eq!(status, 200);
    let v: serde_json::Value =
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("not json ({e}): {body}"));
    let route = |name: &str| -> serde_json::Value {
        v["routes"]
            .as_array()
            .expect("routes")
            .iter()
            .find(|r| r["listener"] == "web" && r["route"] == name)
            .unwrap_or_else(|| panic!("no route {name} in {body}"))
            .clone()
    };
    let close = |a: &serde_json::Value, b: f64| {
        let a = a.as_f64().unwrap_or_else(|| panic!("not a number: {a}"));
        assert!((a - b).abs() < 1e-9, "{a} != {b}");
    };
    let app = route("app");
    assert_eq!(app["requests"], 55);
    assert_eq!(app["errors"], 10);
    for w in ["last_1m", "last_5m", "last_1h"] {
        assert_eq!(app[w]["requests"], 55, "{w}");
        close(&app[w]["success_ratio"], 45.0 / 55.0);
    }
    let throttled = route("throttled");
    assert_eq!(throttled["requests"], 5);
    close(&throttled["last_1m"]["success_ratio"], 2.0 / 5.0);

    let objective = |name: &str| -> serde_json::Value {
        v["objectives"]
            .as_array()
            .expect("objectives")
            .iter()
            .find(|o| o["name"] == name)
            .unwrap_or_else(|| panic!("no objective {name} in {body}"))
            .clone()
    };
    let o = objective("app_availability");
    assert_eq!(o["window"]["requests"], 55);
    assert_eq!(o["window"]["errors"], 10);
    // Allowed error ratio 1%; observed 10/55.
    let err = 10.0 / 55.0;
    close(&o["error_budget_remaining"], 1.0 - err / 0.01);
    close(&o["burn_rate_5m"], err / 0.01);
    close(&o["burn_rate_1h"], err / 0.01);
    // By cluster: both routes go to `origin`.
    let o = objective("origin_cluster");
    assert_eq!(o["window"]["requests"], 60);
    assert_eq!(o["window"]["errors"], 13);

    // The text view names the same rows.
    let (status, text) = p.admin_get("/sli").await;
    assert_eq!(status, 200);
    let app_line = text
        .lines()
        .find(|l| l.starts_with("web ") && l.split_whitespace().nth(1) == Some("app"))
        .unwrap_or_else(|| panic!("no app row:\n{text}"));
    let cols: Vec<&str> = app_line.split_whitespace().collect();
    assert_eq!(&cols[2..4], &["55", "10"], "{app_line}");
    assert!(text.contains("app_availability"), "{text}");
}
