//! Operations through the real binary: signals (USR1 reopens access logs, QUIT
//! drains and exits, USR2 is ignored), access-log destinations and formats, the
//! drain-deadline flag, log-level checking, and the operator admin endpoints
//! (`/reopen_logs`, `/drain_listeners`, `/listeners`, `/certs`, `/logging`,
//! `/reset_counters`, `/stats` parameter checks, the probe-only `health_listener`).

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use support::pki::{Leaf, Pki};
use support::yaml::{OneRoute, Routes};
use support::{eventually, Origin, Proxy};

const WAIT: Duration = Duration::from_secs(20);

/// One listener `main` routing everything to `origin`, with `access_log`.
fn config(origin: &Origin, access_log: &str, extra: &str) -> String {
    let routes = "- name: all\n  match: { prefix: / }\n  route: { cluster: o, timeout: 30s }";
    let listener = Routes::new(routes)
        .listener_key(&format!("access_log: {access_log}"))
        .cluster("o", &[origin.addr], "")
        .yaml();
    format!("drain_timeout: 10s\n{extra}\n{listener}")
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_default()
}

/// Wait until `path` holds exactly `n` lines; the lines.
async fn lines(path: &Path, n: usize) -> Vec<String> {
    let path = path.to_path_buf();
    eventually(WAIT, &format!("{n} lines in {}", path.display()), || {
        let path = path.clone();
        async move {
            let text = read(&path);
            let v: Vec<String> = text.lines().map(str::to_string).collect();
            (v.len() == n).then_some(v)
        }
    })
    .await
}

/// A request to `path` through `main`, once the origin has it.
async fn in_flight(o: &Origin, p: &Proxy, path: &str) -> tokio::task::JoinHandle<support::Resp> {
    let url = p.url("main", path);
    let inflight = tokio::spawn(async move { support::get(&url, &[]).await });
    eventually(WAIT, "request at origin", || {
        let o = o.clone();
        async move { (o.hits() >= 1).then_some(()) }
    })
    .await;
    inflight
}

fn log_path(p: &Proxy) -> PathBuf {
    p.dir.path().join("access.log")
}

/// A proxy whose access log is `<dir>/access.log` with `format`, draining for
/// `drain_timeout`.
async fn proxy_with_file_log(format: &str, drain_timeout: &str) -> (Origin, Proxy) {
    let o = Origin::start("o").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("access.log");
    let yaml = format!(
        "admin: {{ address: 127.0.0.1:0 }}\n{}",
        config(
            &o,
            &format!("{{ path: \"{}\", format: {format} }}", log.display()),
            ""
        )
        .replace(
            "drain_timeout: 10s",
            &format!("drain_timeout: {drain_timeout}")
        )
    );
    let cfg = dir.path().join("attache.yaml");
    std::fs::write(&cfg, yaml).expect("config");
    let p = Proxy::spawn(dir, cfg, &[], &[], support::READY_WITHIN);
    (o, p)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renamed_access_log_reopens_on_sigusr1_and_post_reopen_logs() {
    let (_o, p) = proxy_with_file_log("\"%REQ(:PATH)% %RESPONSE_CODE%\"", "10s").await;
    let log = log_path(&p);
    let rotated1 = p.dir.path().join("access.log.1");
    let rotated2 = p.dir.path().join("access.log.2");

    assert_eq!(support::get(&p.url("main", "/one"), &[]).await.status, 200);
    assert_eq!(lines(&log, 1).await, ["/one 200"]);

    // logrotate's default: rename, then signal.
    std::fs::rename(&log, &rotated1).expect("rename");
    p.signal(10);
    eventually(WAIT, "a new file at the path", || {
        let log = log.clone();
        async move { log.exists().then_some(()) }
    })
    .await;
    assert_eq!(support::get(&p.url("main", "/two"), &[]).await.status, 200);
    assert_eq!(lines(&log, 1).await, ["/two 200"]);
    assert_eq!(
        read(&rotated1),
        "/one 200\n",
        "the renamed file stops growing"
    );

    // Envoy's way: POST /reopen_logs.
    std::fs::rename(&log, &rotated2).expect("rename");
    let (status, body) = p.admin_post("/reopen_logs").await;
    assert_eq!(status, 200, "{body}");
    assert!(
        body.contains(&format!("reopened {}", log.display())),
        "{body}"
    );
    assert_eq!(
        support::get(&p.url("main", "/three"), &[]).await.status,
        200
    );
    assert_eq!(lines(&log, 1).await, ["/three 200"]);
    assert_eq!(read(&rotated2), "/two 200\n");
    assert_eq!(read(&rotated1), "/one 200\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleted_access_log_counts_lost_lines() {
    let (_o, p) = proxy_with_file_log("json", "10s").await;
    let log = log_path(&p);
    assert_eq!(support::get(&p.url("main", "/"), &[]).await.status, 200);
    lines(&log, 1).await;
    std::fs::remove_file(&log).expect("rm");
    // The writer notices within a second; keep logging until it counts.
    let url = p.url("main", "/");
    eventually(WAIT, "write errors counted", || {
        let url = url.clone();
        let p = &p;
        async move {
            support::get(&url, &[]).await;
            let n = p
                .stat_labels(
                    "attache_access_log_write_errors_total",
                    &[("listener", "main")],
                )
                .await;
            (n > 0.0).then_some(())
        }
    })
    .await;
    assert!(p.log().contains("no longer at its path"), "{}", p.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigquit_drains_an_in_flight_request_and_exits_zero() {
    let o = Origin::start("o").await;
    let mut p = Proxy::start(&config(&o, "{ path: stdout }", ""));
    let inflight = in_flight(&o, &p, "/slow/1500").await;
    p.signal(3);
    let r = tokio::time::timeout(WAIT, inflight)
        .await
        .expect("in time")
        .expect("task");
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "slow o");
    let code = tokio::task::block_in_place(|| p.wait_exit(WAIT));
    assert_eq!(code, Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigusr2_and_sighup_do_not_kill() {
    let o = Origin::start("o").await;
    let mut p = Proxy::start(&config(&o, "{ path: stdout }", ""));
    p.signal(12);
    p.signal(1);
    eventually(WAIT, "USR2 noted in the log", || {
        let log = p.log();
        async move { log.contains("SIGUSR2").then_some(()) }
    })
    .await;
    assert_eq!(p.admin_get("/ready").await.0, 200);
    assert_eq!(support::get(&p.url("main", "/"), &[]).await.status, 200);
    assert_eq!(
        tokio::task::block_in_place(|| p.wait_exit(Duration::from_millis(200))),
        None,
        "still running"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_deadline_cut_is_logged_dt() {
    let (o, mut p) = proxy_with_file_log("\"%RESPONSE_FLAGS% %REQ(:PATH)%\"", "1s").await;
    let log = log_path(&p);
    let inflight = in_flight(&o, &p, "/slow/20000").await;
    p.signal(15);
    let code = tokio::task::block_in_place(|| p.wait_exit(WAIT));
    assert_eq!(code, Some(0));
    assert_eq!(read(&log), "DT /slow/20000\n");
    inflight.abort();
}

/// `attache run` with stdout and stderr kept apart; (stdout, stderr) once `until`
/// shows up on stderr.
fn run_split(
    config: &str,
    args: &[&str],
    env: &[(&str, &str)],
) -> (tempfile::TempDir, std::process::Child) {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = dir.path().join("attache.yaml");
    std::fs::write(&cfg, config).expect("config");
    let mut cmd = Command::new(support::bin());
    cmd.arg("run")
        .arg("--config")
        .arg(&cfg)
        .arg("--ready-file")
        .arg(dir.path().join("ready.json"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(dir.path().join("stdout")).expect("stdout"))
        .stderr(std::fs::File::create(dir.path().join("stderr")).expect("stderr"));
    for (k, v) in env {
        cmd.env(k, v);
    }
    let child = cmd.spawn().expect("spawn");
    (dir, child)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stderr_access_log_goes_to_stderr() {
    let o = Origin::start("o").await;
    let yaml = format!(
        "admin: {{ address: 127.0.0.1:0 }}\n{}",
        config(&o, "{ path: stderr, format: \"ACCESS %REQ(:PATH)%\" }", "")
    );
    let (dir, mut child) = run_split(&yaml, &[], &[("ATTACHE_LOG", "error")]);
    let ready = dir.path().join("ready.json");
    let info: serde_json::Value = eventually(WAIT, "ready file", || {
        let ready = ready.clone();
        async move { serde_json::from_str(&read(&ready)).ok() }
    })
    .await;
    let addr = info["listeners"]["main"]
        .as_str()
        .expect("addr")
        .to_string();
    assert_eq!(
        support::get(&format!("http://{addr}/to-stderr"), &[])
            .await
            .status,
        200
    );
    let err = dir.path().join("stderr");
    eventually(WAIT, "line on stderr", || {
        let err = err.clone();
        async move { read(&err).contains("ACCESS /to-stderr").then_some(()) }
    })
    .await;
    assert!(!read(&dir.path().join("stdout")).contains("ACCESS"));
    assert!(!dir
        .path()
        .join("stderr")
        .with_file_name("stderr.log")
        .exists());
    let _ = child.kill();
    let _ = child.wait();
    // No file named `stderr` in the working directory of the test either.
    assert!(!Path::new("stderr").exists());
}

#[test]
fn invalid_log_level_exits_non_zero_naming_the_valid_values() {
    for (args, env) in [
        (vec!["--log-level", "verbose"], vec![]),
        (vec![], vec![("ATTACHE_LOG", "loud")]),
    ] {
        let yaml = "admin: { address: 127.0.0.1:0 }\nlisteners: []\n";
        let (dir, mut child) = run_split(yaml, &args, &env);
        let status = child.wait().expect("wait");
        assert_eq!(status.code(), Some(2));
        let err = read(&dir.path().join("stderr"));
        assert!(err.contains("invalid log level"), "{err}");
        assert!(
            err.contains("trace, debug, info, warn, error, off"),
            "{err}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_listeners_stops_new_connections_and_keeps_the_process() {
    let o = Origin::start("o").await;
    let mut p = Proxy::start(&config(&o, "{ path: stdout }", ""));
    assert_eq!(p.admin_get("/ready").await.0, 200);
    let (status, body) = p.admin_post("/drain_listeners").await;
    assert_eq!(status, 200, "{body}");
    eventually(WAIT, "listener closed", || {
        let addr = p.addr("main");
        async move {
            tokio::net::TcpStream::connect(addr)
                .await
                .is_err()
                .then_some(())
        }
    })
    .await;
    assert_eq!(p.admin_get("/ready").await, (503, "DRAINING\n".to_string()));
    assert_eq!(p.admin_get("/live").await.0, 200);
    let (_, listeners) = p.admin_get("/listeners").await;
    assert!(listeners.contains("\"accepting\": false"), "{listeners}");
    assert_eq!(
        tokio::task::block_in_place(|| p.wait_exit(Duration::from_millis(500))),
        None,
        "the process keeps running"
    );
    assert!(p.log().contains("admin mutation") && p.log().contains("/drain_listeners"));
    assert!(p.log().contains("peer=127.0.0.1:"), "{}", p.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_listener_serves_only_probes() {
    let o = Origin::start("o").await;
    let p = Proxy::start(&config(
        &o,
        "{ path: stdout }",
        "health_listener: { address: 127.0.0.1:0 }",
    ));
    let ready: serde_json::Value =
        serde_json::from_str(&read(&p.dir.path().join("ready.json"))).expect("ready json");
    let h = ready["health"]
        .as_str()
        .expect("health address")
        .to_string();
    let url = |path: &str| format!("http://{h}{path}");
    assert_eq!(support::get(&url("/ready"), &[]).await.status, 200);
    assert_eq!(support::get(&url("/live"), &[]).await.status, 200);
    for path in ["/stats", "/config_dump", "/", "/quitquitquit"] {
        assert_eq!(support::get(&url(path), &[]).await.status, 404, "{path}");
    }
    for path in ["/quitquitquit", "/healthcheck/fail", "/ready"] {
        let r = support::send("POST", &url(path), &[], bytes::Bytes::new()).await;
        assert_ne!(r.status, 200, "{path}");
    }
    assert_eq!(p.admin_post("/healthcheck/fail").await.0, 200);
    assert_eq!(support::get(&url("/ready"), &[]).await.status, 503);
    assert_eq!(support::get(&url("/live"), &[]).await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_rejects_unknown_parameters_naming_the_valid_ones() {
    let o = Origin::start("o").await;
    let p = Proxy::start(&config(&o, "{ path: stdout }", ""));
    let (status, body) = p.admin_get("/stats?fitler=cx").await;
    assert_eq!(status, 400);
    assert!(
        body.contains("`fitler`") && body.contains("filter=REGEX"),
        "{body}"
    );
    assert_eq!(p.admin_get("/stats?format=xml").await.0, 400);
    assert_eq!(
        p.admin_get("/stats?filter=cx_total&format=json").await.0,
        200
    );
    assert_eq!(p.admin_get("/stats?format=text").await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listeners_logging_and_reset_counters() {
    let o = Origin::start("o").await;
    let p = Proxy::start(&config(&o, "{ path: stdout }", ""));
    let (status, body) = p.admin_get("/listeners").await;
    assert_eq!(status, 200);
    let v: serde_json::Value = serde_json::from_str(&body).expect("json");
    let l = &v["listeners"][0];
    assert_eq!(l["name"], "main");
    assert_eq!(l["bound_address"], p.addr("main").to_string());
    assert_eq!(l["protocol"], "http");
    assert_eq!(l["tls"], false);
    assert_eq!(l["accepting"], true);

    assert_eq!(
        p.admin_get("/logging").await,
        (200, "log level: info\n".to_string())
    );
    assert_eq!(p.admin_post("/logging?level=debug").await.0, 200);
    assert_eq!(
        p.admin_get("/logging").await,
        (200, "log level: debug\n".to_string())
    );
    assert_eq!(p.admin_post("/logging?level=verbose").await.0, 400);

    assert_eq!(support::get(&p.url("main", "/"), &[]).await.status, 200);
    let rq = "attache_downstream_rq_total";
    let labels = [("listener", "main"), ("code_class", "2xx")];
    assert!(p.stat_labels(rq, &labels).await >= 1.0);
    assert_eq!(p.admin_post("/reset_counters").await.0, 200);
    assert_eq!(p.stat_labels(rq, &labels).await, 0.0);
    assert_eq!(support::get(&p.url("main", "/"), &[]).await.status, 200);
    assert_eq!(p.stat_labels(rq, &labels).await, 1.0, "counting goes on");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certs_lists_every_certificate_with_its_user() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = Pki::new(dir.path(), "ops");
    let server = pki.issue("server", &Leaf::new("edge").dns(&["edge.example.com"]));
    let client = pki.issue(
        "client",
        &Leaf::new("web").uri(&["spiffe://example.org/web"]),
    );
    let log = dir.path().join("tls.log");
    let o = Origin::start("o").await;
    let yaml = format!(
        r#"
listeners:
  - name: edge
    address: 127.0.0.1:0
    tls: {{ cert_chain: "{}", private_key: "{}", client_ca: "{}" }}
    access_log:
      path: "{}"
      format: "%DOWNSTREAM_TLS_VERSION% %DOWNSTREAM_TLS_CIPHER% sni=%REQUESTED_SERVER_NAME% uri=%DOWNSTREAM_PEER_URI_SAN% dns=%DOWNSTREAM_PEER_DNS_SAN% %DOWNSTREAM_PEER_SUBJECT%"
    virtual_hosts:
      - name: web
        domains: ["*"]
        routes:
          - match: {{ path: /local }}
            direct_response: {{ status: 200 }}
          - match: {{ prefix: / }}
            route: {{ cluster: up }}
clusters:
  - name: up
    endpoints: ["{}"]
    tls: {{ ca: "{}", cert_chain: "{}", private_key: "{}", sni: edge.example.com }}
"#,
        server.cert,
        server.key,
        pki.ca_path,
        log.display(),
        o.addr,
        pki.ca_path,
        client.cert,
        client.key
    );
    let p = Proxy::start(&yaml);

    // The TLS facts of a request, through a real client with a client certificate.
    let port = p.addr("edge").port();
    let resolve = format!("edge.example.com:{port}:127.0.0.1");
    let url = format!("https://edge.example.com:{port}/local");
    let (ok, _) = support::curl(&[
        "--tlsv1.3",
        "--resolve",
        &resolve,
        "--cacert",
        &pki.ca_path,
        "--cert",
        &client.cert,
        "--key",
        &client.key,
        &url,
    ])
    .await;
    assert!(ok, "curl over mTLS");
    let got = lines(&log, 1).await;
    assert!(
        got[0].starts_with("TLSv1.3 TLS13_")
            && got[0].contains(
                " sni=edge.example.com uri=spiffe://example.org/web dns=- O=attache tests,CN=web"
            ),
        "{}",
        got[0]
    );
    let (status, body) = p.admin_get("/certs").await;
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).expect("json");
    let certs = v["certificates"].as_array().expect("array");
    let find = |role: &str, user: &str| {
        certs
            .iter()
            .find(|c| {
                c["role"] == role
                    && (c["used_by"]["listener"] == user || c["used_by"]["cluster"] == user)
            })
            .unwrap_or_else(|| panic!("no {role} cert for {user}: {body}"))
    };
    let s = find("server", "edge");
    assert_eq!(s["sans"], serde_json::json!(["edge.example.com"]));
    assert_eq!(s["path"], server.cert);
    assert!(
        s["issuer"].as_str().unwrap_or("").contains("ops test ca"),
        "{s}"
    );
    assert!(
        s["subject"].as_str().unwrap_or("").contains("CN=edge"),
        "{s}"
    );
    assert!(s["serial"].as_str().is_some_and(|x| !x.is_empty()));
    assert!(
        s["days_until_expiration"].as_i64().is_some_and(|d| d > 30),
        "{s}"
    );
    assert!(s["not_after"].as_str().is_some_and(|t| t.ends_with('Z')));
    let c = find("client", "up");
    assert_eq!(c["sans"], serde_json::json!(["spiffe://example.org/web"]));
    find("ca", "edge");
    find("ca", "up");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_log_formats_render_headers_timings_and_retries() {
    let o = Origin::start("o").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let text = dir.path().join("text.log");
    let json = dir.path().join("json.log");
    let yaml = format!(
        r#"
admin: {{ address: 127.0.0.1:0 }}
listeners:
  - name: text
    address: 127.0.0.1:0
    access_log:
      path: "{}"
      format: "%REQ(:METHOD)% %REQ(:PATH)% %RESPONSE_CODE% ua=%REQ(USER-AGENT)% x=%REQ(X-MISSING?X-ALT)% rsp=%RESP(X-Back)% tries=%UPSTREAM_REQUEST_ATTEMPT_COUNT% host=%UPSTREAM_HOST% listener=%LISTENER_NAME% tls=%DOWNSTREAM_TLS_VERSION% at=%START_TIME(%s)%\n"
    virtual_hosts: &vh
      - name: web
        domains: ["*"]
        routes:
          - match: {{ prefix: /status/ }}
            route: {{ cluster: o, retries: {{ attempts: 1, retry_on: [5xx] }} }}
          - match: {{ prefix: / }}
            route: {{ cluster: o }}
  - name: json
    address: 127.0.0.1:0
    access_log:
      path: "{}"
      json_format:
        code: "%RESPONSE_CODE%"
        path: "%REQ(:PATH)%"
        ua: "%REQ(USER-AGENT)%"
        connect_us: "%UPSTREAM_CONNECT_DURATION(us)%"
        head_ms: "%RESPONSE_DURATION%"
        took: "%DURATION%"
        tries: "%UPSTREAM_REQUEST_ATTEMPT_COUNT%"
        flags: "%RESPONSE_FLAGS%"
        line: "%REQ(:METHOD)% %RESPONSE_CODE%"
    virtual_hosts: *vh
clusters:
  - name: o
    endpoints: ["{}"]
"#,
        text.display(),
        json.display(),
        o.addr
    );
    let p = Proxy::start(&yaml);
    let respond = [
        ("x-origin-respond-header", "x-back: b1"),
        ("user-agent", "ua/1"),
        ("x-alt", "alt"),
    ];
    assert_eq!(
        support::get(&p.url("text", "/a?q=1"), &respond)
            .await
            .status,
        200
    );
    assert_eq!(
        support::get(&p.url("text", "/status/503"), &[])
            .await
            .status,
        503
    );
    let got = lines(&text, 2).await;
    let (line, at) = got[0].rsplit_once(" at=").expect("at=");
    assert_eq!(
        line,
        format!(
            "GET /a?q=1 200 ua=ua/1 x=alt rsp=b1 tries=1 host={} listener=text tls=-",
            o.addr
        )
    );
    // %START_TIME(%s)%: Unix seconds of this run.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let at: u64 = at.parse().unwrap_or_else(|e| panic!("{at}: {e}"));
    assert!(at <= now && now - at < 120, "{at} vs {now}");
    assert!(
        got[1].starts_with("GET /status/503 503 ") && got[1].contains(" tries=2 "),
        "{}",
        got[1]
    );

    assert_eq!(
        support::get(&p.url("json", "/j"), &[("user-agent", "ua/2")])
            .await
            .status,
        200
    );
    let got = lines(&json, 1).await;
    let v: serde_json::Value = serde_json::from_str(&got[0]).expect("json line");
    let keys: Vec<&str> = v
        .as_object()
        .expect("object")
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(keys.len(), 9);
    assert_eq!(v["code"], 200);
    assert_eq!(v["path"], "/j");
    assert_eq!(v["ua"], "ua/2");
    assert_eq!(v["tries"], 1);
    assert_eq!(v["flags"], serde_json::Value::Null);
    assert_eq!(v["line"], "GET 200");
    assert!(v["head_ms"].is_u64() && v["took"].is_u64(), "{v}");
    // A fresh proxy dialed the origin for this request (the text listener's pooled
    // connection is the same endpoint's, so either dialed or reused).
    assert!(v["connect_us"].is_u64() || v["connect_us"].is_null(), "{v}");
    assert!(
        got[0].starts_with("{\"code\":200,\"path\":"),
        "fields keep their order: {}",
        got[0]
    );
}

#[test]
fn validate_reports_bad_formats_and_unopenable_paths_with_positions() {
    let yaml = r#"admin: { address: 127.0.0.1:0 }
listeners:
  - name: a
    address: 127.0.0.1:0
    access_log: { path: /nonexistent-dir/a.log, format: "%RESPONSE_COD% %REQ(:PATH)%" }
    virtual_hosts:
      - name: web
        domains: ["*"]
        routes:
          - match: { prefix: / }
            direct_response: { status: 200 }
  - name: b
    address: 127.0.0.1:0
    access_log:
      path: stdout
      json_format: { code: "%RESPONSE_CODE%", bad: "%DURATION(h)%" }
    virtual_hosts:
      - name: web
        domains: ["*"]
        routes:
          - match: { prefix: / }
            direct_response: { status: 200 }
"#;
    let (code, out, path) = support::validate("formats.yaml", yaml);
    let file = path.display().to_string();
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains(&format!("{file}:5:25: cannot create `/nonexistent-dir/a.log`: directory `/nonexistent-dir` does not exist")),
        "{out}"
    );
    assert!(
        out.contains(&format!(
            "{file}:5:57: unknown operator `%RESPONSE_COD%`; did you mean `%RESPONSE_CODE%`?"
        )),
        "{out}"
    );
    assert!(
        out.contains(&format!("{file}:16:52: `%DURATION(h)%`: unknown unit `h`")),
        "{out}"
    );

    // --skip-files skips the path check, not the format check.
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("formats.yaml");
    std::fs::write(&path, yaml).expect("config");
    let out = Command::new(support::bin())
        .args(["validate", "--skip-files", "--config"])
        .arg(&path)
        .output()
        .expect("validate");
    let text =
        String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    assert!(!text.contains("nonexistent-dir"), "{text}");
    assert!(text.contains("RESPONSE_COD"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_connect_failures_are_warned_at_most_once_a_second() {
    let yaml = OneRoute::to(&[support::dead_port()])
        .names("main", "dead")
        .yaml();
    let p = Proxy::start(&yaml);
    let started = std::time::Instant::now();
    for _ in 0..10 {
        assert_eq!(support::get(&p.url("main", "/"), &[]).await.status, 503);
    }
    // At most one line per second that passed (plus the first).
    let allowed = started.elapsed().as_secs() as usize + 1;
    let log = p.log();
    let warned = log
        .lines()
        .filter(|l| l.contains("WARN") && l.contains("upstream connect failed"))
        .count();
    assert!(
        warned >= 1 && warned <= allowed.min(9),
        "{warned} warnings:\n{log}"
    );
    assert!(log.contains("cluster=dead"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_after_drain_listeners_waits_for_the_drain_under_way() {
    let o = Origin::start("o").await;
    let mut p = Proxy::start(&config(&o, "{ path: stdout }", ""));
    let inflight = in_flight(&o, &p, "/slow/1500").await;
    assert_eq!(p.admin_post("/drain_listeners").await.0, 200);
    p.signal(15);
    let r = tokio::time::timeout(WAIT, inflight)
        .await
        .expect("in time")
        .expect("task");
    assert_eq!(r.status, 200, "the preStop drain's request finished");
    let code = tokio::task::block_in_place(|| p.wait_exit(WAIT));
    assert_eq!(code, Some(0));
}

/// Files the process has open (Linux `/proc`).
fn open_files(pid: i32) -> Vec<PathBuf> {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| {
            d.filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_to_another_log_path_closes_the_old_file() {
    let (o, p) = proxy_with_file_log("json", "10s").await;
    let old = log_path(&p);
    assert_eq!(support::get(&p.url("main", "/"), &[]).await.status, 200);
    lines(&old, 1).await;
    assert!(open_files(p.pid()).contains(&old), "the log is open");
    let new = p.dir.path().join("other.log");
    let cfg = std::fs::read_to_string(&p.config_path).expect("config");
    std::fs::write(
        &p.config_path,
        cfg.replace(&old.display().to_string(), &new.display().to_string()),
    )
    .expect("config");
    let (status, body) = p.admin_post("/reload").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(support::get(&p.url("main", "/"), &[]).await.status, 200);
    lines(&new, 1).await;
    let pid = p.pid();
    eventually(WAIT, "the old log file closed", || {
        let old = old.clone();
        async move { (!open_files(pid).contains(&old)).then_some(()) }
    })
    .await;
    drop(o);
}

#[test]
fn validate_checks_the_health_listener_address() {
    let yaml = r#"admin: { address: 127.0.0.1:19901 }
health_listener: { address: 127.0.0.1:19901 }
listeners:
  - name: a
    address: 127.0.0.1:19902
    virtual_hosts:
      - name: web
        domains: ["*"]
        routes:
          - match: { prefix: / }
            direct_response: { status: 200 }
"#;
    let (code, out, path) = support::validate("health.yaml", yaml);
    assert_eq!(code, 1, "{out}");
    let file = path.display().to_string();
    assert!(
        out.contains(&format!(
            "{file}:2:29: address 127.0.0.1:19901 is the admin address"
        )),
        "{out}"
    );
    for (name, from, to, error) in [
        (
            "health2.yaml",
            "address: 127.0.0.1:19901 }\nlisteners",
            "address: 127.0.0.1:19902 }\nlisteners",
            "is the health_listener address",
        ),
        (
            "health3.yaml",
            "health_listener: { address: 127.0.0.1:19901 }",
            "health_listener: { address: \"localhost:9902\" }",
            "`localhost:9902` is not an address",
        ),
    ] {
        let (code, out, _) = support::validate(name, &yaml.replace(from, to));
        assert_eq!(code, 1, "{out}");
        assert!(out.contains(error), "{out}");
    }
}

/// An old attache's admin endpoint as a hot restart sees it: answers every request
/// `200` and says when the first one came.
async fn fake_old_admin() -> (std::net::SocketAddr, tokio::sync::oneshot::Receiver<()>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = l.local_addr().expect("addr");
    let (tx, rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let mut tx = Some(tx);
        while let Ok((mut s, _)) = l.accept().await {
            let mut buf = [0u8; 1024];
            let _ = s.read(&mut buf).await;
            let _ = s
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                .await;
            if let Some(tx) = tx.take() {
                let _ = tx.send(());
            }
        }
    });
    (addr, rx)
}

/// A signal that arrives while attache is still starting (a logrotate run or a
/// `systemctl reload` right after start) must not end it by the signal's default
/// action: it is served once startup completes. The start is held open by a hot
/// restart waiting for the admin address, which the test keeps bound.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signals_during_startup_are_served_after_it_not_fatal() {
    let (old_admin, asked) = fake_old_admin().await;
    let held = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let admin = held.local_addr().expect("addr");
    let yaml = format!(
        "admin: {{ address: \"{admin}\" }}\n{}",
        Routes::new("- match: { prefix: / }\n  direct_response: { status: 200 }").yaml()
    );
    let old = old_admin.to_string();
    let (dir, mut child) = run_split(&yaml, &["--hot-restart-from", &old], &[]);
    tokio::time::timeout(WAIT, asked)
        .await
        .expect("the new process asked the old one to drain")
        .expect("asked");
    // Now waiting for the admin address: still starting.
    assert!(!dir.path().join("ready.json").exists());
    for sig in ["-USR1", "-HUP", "-USR2"] {
        let ok = Command::new("kill")
            .args([sig, &child.id().to_string()])
            .status()
            .expect("kill");
        assert!(ok.success());
    }
    drop(held);
    let ready = dir.path().join("ready.json");
    let started = eventually(WAIT, "ready file", || {
        let ready = ready.clone();
        let exited = child.try_wait().ok().flatten();
        async move {
            match exited {
                Some(status) => Some(Err(status)),
                None => serde_json::from_str::<serde_json::Value>(&read(&ready))
                    .ok()
                    .map(Ok),
            }
        }
    })
    .await;
    let stderr = dir.path().join("stderr");
    let info = started.unwrap_or_else(|status| {
        panic!("attache died during startup: {status}\n{}", read(&stderr))
    });
    let addr = info["listeners"]["main"]
        .as_str()
        .expect("addr")
        .to_string();
    assert_eq!(
        support::get(&format!("http://{addr}/"), &[]).await.status,
        200
    );
    eventually(WAIT, "the startup signals served", || {
        let log = read(&stderr);
        async move {
            ["SIGUSR1", "SIGHUP", "SIGUSR2"]
                .iter()
                .all(|s| log.contains(s))
                .then_some(())
        }
    })
    .await;
    assert!(child.try_wait().expect("wait").is_none(), "still running");
    let _ = child.kill();
    let _ = child.wait();
}

/// During a drain (up to `drain_timeout`), SIGUSR1 still reopens the access log, so
/// a logrotate run then does not leave the last requests' lines in the rotated
/// file; the other signals are logged as ignored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigusr1_reopens_logs_during_a_drain() {
    let (o, mut p) = proxy_with_file_log("\"%REQ(:PATH)% %RESPONSE_CODE%\"", "10s").await;
    let log = log_path(&p);
    let inflight = in_flight(&o, &p, "/slow/3000").await;
    p.signal(15);
    eventually(WAIT, "draining", || {
        let log = p.log();
        async move { log.contains("draining").then_some(()) }
    })
    .await;
    std::fs::rename(&log, p.dir.path().join("access.log.1")).expect("rename");
    p.signal(1);
    p.signal(10);
    eventually(WAIT, "a new file at the path", || {
        let log = log.clone();
        async move { log.exists().then_some(()) }
    })
    .await;
    let r = tokio::time::timeout(WAIT, inflight)
        .await
        .expect("in time")
        .expect("task");
    assert_eq!(r.status, 200);
    let code = tokio::task::block_in_place(|| p.wait_exit(WAIT));
    assert_eq!(code, Some(0));
    assert_eq!(read(&log), "/slow/3000 200\n", "the drained request's line");
    assert!(
        p.log().contains("ignored: already draining") && p.log().contains("SIGHUP"),
        "{}",
        p.log()
    );
}
