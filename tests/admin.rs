//! Every admin path against the real binary.

mod support;

use std::time::Duration;

use bytes::Bytes;
use support::{get, send, Origin, Proxy};

fn yaml(origin: &Origin, token: bool) -> String {
    let admin = if token {
        "admin:\n  address: 127.0.0.1:0\n  token: ${TEST_ADMIN_TOKEN}\n"
    } else {
        ""
    };
    format!(
        r#"{admin}
listeners:
  - name: main
    address: 127.0.0.1:0
    filters:
      - sli: {{}}
    virtual_hosts:
      - name: web
        domains: ["*"]
        routes:
          - name: all
            match: {{ prefix: / }}
            route: {{ cluster: origin }}
clusters:
  - name: origin
    endpoints: ["{}"]
"#,
        origin.addr
    )
}

#[tokio::test]
async fn get_endpoints_answer() {
    let o = Origin::start("o").await;
    let p = Proxy::start(&yaml(&o, false));
    for _ in 0..3 {
        assert_eq!(get(&p.url("main", "/x"), &[]).await.status, 200);
    }

    let (s, body) = p.admin_get("/").await;
    assert_eq!(s, 200);
    for path in [
        "/stats",
        "/stats/prometheus",
        "/clusters",
        "/config_dump",
        "/ready",
        "/server_info",
        "/quitquitquit",
        "/reload",
    ] {
        assert!(body.contains(path), "index lists {path}");
    }

    let (s, body) = p.admin_get("/stats").await;
    assert_eq!(s, 200);
    assert!(
        body.contains("attache_downstream_rq_total{code_class=\"2xx\",listener=\"main\"}: 3"),
        "{body}"
    );
    assert!(
        body.contains("attache_upstream_rq_total{cluster=\"origin\",code_class=\"2xx\"}: 3"),
        "{body}"
    );
    assert!(
        body.contains("attache_upstream_rq_duration_seconds_count{cluster=\"origin\"}: 3"),
        "{body}"
    );
    let lines: Vec<&str> = body.lines().collect();
    let mut sorted = lines.clone();
    sorted.sort();
    assert_eq!(lines, sorted, "one metric a line, sorted");

    let (_, body) = p.admin_get("/stats?filter=upstream_rq_total").await;
    assert!(
        body.lines()
            .all(|l| l.starts_with("attache_upstream_rq_total")),
        "{body}"
    );
    assert!(!body.is_empty());
    let (s, _) = p.admin_get("/stats?filter=(").await;
    assert_eq!(s, 400);

    let (_, body) = p.admin_get("/stats?format=json").await;
    let v: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert!(v["stats"]
        .as_array()
        .expect("array")
        .iter()
        .any(|m| m["name"] == "attache_downstream_cx_total"));

    let (s, body) = p.admin_get("/stats/prometheus").await;
    assert_eq!(s, 200);
    assert!(body.contains("# TYPE attache_downstream_rq_total counter"));
    assert!(body.contains("attache_downstream_rq_total{code_class=\"2xx\",listener=\"main\"} 3"));

    let (_, body) = p.admin_get("/clusters").await;
    assert!(
        body.contains(&format!("origin::{}::rq_total::3", o.addr)),
        "{body}"
    );
    let (_, body) = p.admin_get("/clusters?format=json").await;
    let v: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(v["clusters"][0]["endpoints"][0]["rq_total"], 3);

    let (_, body) = p.admin_get("/server_info").await;
    let v: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(v["state"], "LIVE");
    assert_eq!(v["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(v["config_hash"].as_str().map(str::len), Some(16));

    let (_, body) = p.admin_get("/sli?format=json").await;
    assert!(
        serde_json::from_str::<serde_json::Value>(&body).is_ok(),
        "{body}"
    );

    let (s, body) = p.admin_get("/ready").await;
    assert_eq!((s, body.as_str()), (200, "LIVE\n"));

    let (s, _) = p.admin_get("/nope").await;
    assert_eq!(s, 404);
}

#[tokio::test]
async fn post_only_paths_reject_get_and_healthcheck_toggles_ready() {
    let o = Origin::start("o").await;
    let p = Proxy::start(&yaml(&o, false));
    for path in [
        "/healthcheck/fail",
        "/healthcheck/ok",
        "/quitquitquit",
        "/reload",
        "/drain_listeners",
        "/reset_counters",
        "/reopen_logs",
    ] {
        let r = get(&format!("http://{}{path}", p.admin), &[]).await;
        assert_eq!(r.status, 405, "{path}");
        assert_eq!(r.header("allow").as_deref(), Some("POST"));
    }
    // `/logging` reads with GET and changes with POST.
    assert_eq!(p.admin_get("/logging").await.0, 200);
    let r = send(
        "PUT",
        &format!("http://{}/logging", p.admin),
        &[],
        Bytes::new(),
    )
    .await;
    assert_eq!(r.status, 405);
    assert_eq!(r.header("allow").as_deref(), Some("GET, HEAD, POST"));
    let r = send(
        "POST",
        &format!("http://{}/stats", p.admin),
        &[],
        Bytes::new(),
    )
    .await;
    assert_eq!(r.status, 405);

    assert_eq!(p.admin_post("/healthcheck/fail").await.0, 200);
    assert_eq!(p.admin_get("/ready").await, (503, "FAILED\n".to_string()));
    // Failing health checks does not stop traffic: it only takes the proxy out of rotation.
    assert_eq!(get(&p.url("main", "/x"), &[]).await.status, 200);
    assert_eq!(p.admin_post("/healthcheck/ok").await.0, 200);
    assert_eq!(p.admin_get("/ready").await.0, 200);

    assert_eq!(p.admin_post("/logging?level=debug").await.0, 200);
    assert_eq!(p.admin_post("/logging?level=[[bad").await.0, 400);
    assert_eq!(p.admin_post("/logging").await.0, 400);
}

#[tokio::test]
async fn config_dump_redacts_secrets_and_reload_applies_or_rejects() {
    let o = Origin::start("o").await;
    let p = Proxy::start_with_env(&yaml(&o, true), &[("TEST_ADMIN_TOKEN", "s3cret-token")]);
    let auth = [("authorization", "Bearer s3cret-token")];

    let (s, body) = p.admin_get("/config_dump").await;
    assert_eq!(s, 200);
    assert!(!body.contains("s3cret-token"), "{body}");
    assert!(body.contains("[redacted]"));
    let v: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(v["config"]["clusters"][0]["name"], "origin");

    // POSTs need the token.
    let r = send(
        "POST",
        &format!("http://{}/healthcheck/fail", p.admin),
        &[],
        Bytes::new(),
    )
    .await;
    assert_eq!(r.status, 401);
    let r = send(
        "POST",
        &format!("http://{}/healthcheck/fail", p.admin),
        &[("authorization", "Bearer wrong")],
        Bytes::new(),
    )
    .await;
    assert_eq!(r.status, 401);
    assert_eq!(p.admin_get("/ready").await.0, 200);

    // An invalid file is rejected with its position; the old config keeps serving.
    let good = std::fs::read_to_string(&p.config_path).expect("read");
    let reload_with = |text: String| {
        std::fs::write(&p.config_path, text).expect("write");
        let url = format!("http://{}/reload", p.admin);
        async move { send("POST", &url, &auth, Bytes::new()).await }
    };
    let r = reload_with(good.replace("cluster: origin }", "cluster: orign }")).await;
    assert_eq!(r.status, 400);
    assert!(
        r.text()
            .contains("unknown cluster `orign`; did you mean `origin`?"),
        "{}",
        r.text()
    );
    assert!(r.text().contains("attache.yaml:16:31: "), "{}", r.text());
    assert_eq!(get(&p.url("main", "/x"), &[]).await.status, 200);
    assert_eq!(
        p.stat("attache_config_reload_total{result=\"failed\"}")
            .await,
        1.0
    );

    // A valid change applies to new requests.
    let r = reload_with(good.replace("match: { prefix: / }", "match: { prefix: /only/ }")).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(get(&p.url("main", "/x"), &[]).await.status, 404);
    assert_eq!(get(&p.url("main", "/only/x"), &[]).await.status, 200);
    assert_eq!(
        p.stat("attache_config_reload_total{result=\"ok\"}").await,
        1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quitquitquit_drains_and_exits_zero() {
    let o = Origin::start("o").await;
    let mut p = Proxy::start(&yaml(&o, false));
    assert_eq!(p.admin_post("/quitquitquit").await.0, 200);
    let code = tokio::task::block_in_place(|| p.wait_exit(Duration::from_secs(15)));
    assert_eq!(code, Some(0));
}
