//! Every file in config/ validates, and the quickstart actually serves.

mod support;

use std::process::Command;

/// The certificates `config/mtls-sidecar.yaml` names under `${ATTACHE_CERT_DIR}`.
fn example_certs(dir: &std::path::Path) {
    let pki = support::pki::Pki::new(dir, "mesh");
    std::fs::copy(&pki.ca_path, dir.join("ca.pem")).expect("copy ca");
    let id = ["spiffe://example.org/ns/svc/sa/svc"];
    pki.issue("server", &support::pki::Leaf::new("svc").uri(&id));
    pki.issue("client", &support::pki::Leaf::new("svc").uri(&id));
}

/// `attache validate --config PATH` with the example certificates in `certs`.
fn validate_with_certs(path: &std::path::Path, certs: &std::path::Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_attache"))
        .args(["validate", "--config"])
        .arg(path)
        .env("ATTACHE_CERT_DIR", certs)
        .output()
        .expect("run attache")
}

#[test]
fn every_shipped_config_validates() {
    let certs = tempfile::tempdir().expect("tempdir");
    example_certs(certs.path());
    let mut n = 0;
    for path in support::shipped_configs() {
        let out = validate_with_certs(&path, certs.path());
        assert!(
            out.status.success(),
            "{} does not validate:\n{}",
            path.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        n += 1;
    }
    assert!(n >= 5, "expected the shipped configs, found {n}");
}

/// Every shipped example by name, so none can disappear unnoticed.
#[test]
fn each_named_example_validates() {
    let certs = tempfile::tempdir().expect("tempdir");
    example_certs(certs.path());
    for name in [
        "quickstart.yaml",
        "sidecar.yaml",
        "ingress.yaml",
        "mtls-sidecar.yaml",
        "thrift-sidecar.yaml",
        "internal-web.yaml",
        "fleet.yaml",
        "grpc-sidecar.yaml",
        "mesh-rbac.yaml",
        "tracing.yaml",
        "xds-eds.yaml",
        "thrift-theader.yaml",
    ] {
        let path = std::path::Path::new("config").join(name);
        assert!(path.exists(), "config/{name} is missing");
        let out = validate_with_certs(&path, certs.path());
        assert!(
            out.status.success(),
            "config/{name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let summary = String::from_utf8_lossy(&out.stdout);
        assert!(summary.contains(": ok ("), "config/{name}: {summary}");
    }
}

#[tokio::test]
async fn quickstart_serves_direct_and_proxied_routes() {
    let p = support::quickstart().await;
    let r = support::get(&p.url("quickstart", "/"), &[]).await;
    assert_eq!((r.status, r.text().as_str()), (200, "hello from attache\n"));
    assert_eq!(r.header("x-served-by").as_deref(), Some("attache"));
    let r = support::get(&p.url("quickstart", "/stats"), &[]).await;
    assert_eq!(r.status, 200);
    assert!(
        r.text().contains("attache_downstream_rq_total"),
        "{}",
        r.text()
    );
}

/// The discovery path in `config/fleet.yaml` is relative to the file, so it
/// validates from any working directory (it used to need the repository root).
#[test]
fn fleet_example_validates_from_another_directory() {
    let elsewhere = tempfile::tempdir().expect("tempdir");
    let config = std::fs::canonicalize("config/fleet.yaml").expect("fleet.yaml");
    let out = Command::new(env!("CARGO_BIN_EXE_attache"))
        .args(["validate", "--config"])
        .arg(&config)
        .current_dir(elsewhere.path())
        .output()
        .expect("run attache");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `config/fleet.yaml` starts (its fixed ports swapped for ephemeral ones) and loads
/// the discovery file it names, with weights and zones.
#[tokio::test]
async fn fleet_example_starts_with_its_discovery_file() {
    let text = std::fs::read_to_string("config/fleet.yaml").expect("read");
    // The copy runs from a temp dir: its relative discovery path must name the
    // shipped endpoints file.
    let eps_file = std::fs::canonicalize("config/endpoints/api.yaml").expect("endpoints file");
    let text = text
        .replace("127.0.0.1:9901", "127.0.0.1:0")
        .replace("127.0.0.1:8080", "127.0.0.1:0")
        .replace(
            "path: endpoints/api.yaml",
            &format!("path: {}", eps_file.display()),
        );
    let p = support::Proxy::start(&text);
    let (status, body) = p.admin_get("/clusters?format=json").await;
    assert_eq!(status, 200);
    let v: serde_json::Value = serde_json::from_str(&body).expect("json");
    let api = v["clusters"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["name"] == "api"))
        .expect("api cluster");
    let eps: Vec<(String, u64, String)> = api["endpoints"]
        .as_array()
        .expect("endpoints")
        .iter()
        .map(|e| {
            (
                e["address"].as_str().unwrap_or("").to_string(),
                e["weight"].as_u64().unwrap_or(0),
                e["zone"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    assert_eq!(
        eps,
        vec![
            ("127.0.0.1:9101".to_string(), 3, "us-east-1a".to_string()),
            ("127.0.0.1:9102".to_string(), 1, "us-east-1a".to_string()),
            ("127.0.0.1:9103".to_string(), 1, "us-east-1b".to_string()),
        ]
    );
}

/// `config/thrift-sidecar.yaml` routes real Thrift calls: by method and method
/// prefix to `users`, and a multiplexed `Billing` call to the unframed
/// `billing_legacy` (re-framed by the proxy).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thrift_sidecar_example_routes_real_calls() {
    use support::thrift_peer::{start_origin, Client, Protocol, Transport};
    let users = start_origin("users", Protocol::Binary, Transport::Framed);
    let billing = start_origin("billing", Protocol::Binary, Transport::Unframed);
    let text = std::fs::read_to_string("config/thrift-sidecar.yaml").expect("read");
    let text = text
        .replace("127.0.0.1:9901", "127.0.0.1:0")
        .replace("127.0.0.1:9090", "127.0.0.1:0")
        .replace(
            "\"127.0.0.1:9191\", \"127.0.0.1:9192\"",
            &format!("\"{}\"", users.addr),
        )
        .replace("127.0.0.1:9291", &billing.addr.to_string());
    let p = support::Proxy::start(&text);
    let addr = p.addr("thrift_out");
    let (user, found) = tokio::task::spawn_blocking(move || {
        let mut c = Client::connect(addr, Protocol::Binary, Transport::Framed, None);
        let user = c.get_user(7);
        let found = c.call_named("findUser", 9);
        let mut m = Client::connect(addr, Protocol::Binary, Transport::Framed, Some("Billing"));
        m.log("charged 8");
        (user, found)
    })
    .await
    .expect("client thread");
    assert_eq!(user.expect("getUser reply"), "users:7");
    assert_eq!(found.expect("findUser reply"), "users:9");
    let line = tokio::task::spawn_blocking(move || {
        billing.logs.recv_timeout(std::time::Duration::from_secs(5))
    })
    .await
    .expect("log thread");
    assert_eq!(
        line.as_deref(),
        Ok("charged 8"),
        "Billing:log reached billing_legacy"
    );
    let (_, stats) = p.admin_get("/stats?filter=attache_thrift_rq_total").await;
    assert!(
        stats.contains("attache_thrift_rq_total{listener=\"thrift_out\",method=\"getUser\",outcome=\"success\"}: 1"),
        "{stats}"
    );
    // user_reads has `retries:`; nothing failed, so nothing was retried.
    let (_, stats) = p
        .admin_get("/stats?filter=attache_thrift_rq_retry_total")
        .await;
    assert!(
        stats.contains(
            "attache_thrift_rq_retry_total{listener=\"thrift_out\",route=\"user_reads\"}: 0"
        ),
        "{stats}"
    );
}

/// `config/mesh-rbac.yaml` starts and enforces its policies: a PROXY header then
/// mTLS; a web identity reads /api/, a batch identity is refused.
#[tokio::test]
async fn mesh_rbac_example_enforces_its_policies() {
    use support::pki::{Leaf, Pki};
    let certs = tempfile::tempdir().expect("tempdir");
    let pki = Pki::new(certs.path(), "mesh");
    std::fs::copy(&pki.ca_path, certs.path().join("ca.pem")).expect("copy ca");
    pki.issue("server", &Leaf::new("svc").dns(&["api.test"]));
    let web = pki.issue(
        "web",
        &Leaf::new("web").uri(&["spiffe://example.org/ns/web/sa/fe"]),
    );
    let batch = pki.issue(
        "batch",
        &Leaf::new("b").uri(&["spiffe://example.org/ns/batch/sa/j"]),
    );
    let origin = support::Origin::start("api").await;
    let text = std::fs::read_to_string("config/mesh-rbac.yaml")
        .expect("read")
        .replace("127.0.0.1:9901", "127.0.0.1:0");
    let dir = certs.path().to_str().expect("utf-8").to_string();
    let api = origin.addr.to_string();
    let p = support::Proxy::start_with_env(
        &text,
        &[
            ("ATTACHE_CERT_DIR", dir.as_str()),
            ("ATTACHE_WEB_ADDRESS", "127.0.0.1:0"),
            ("ATTACHE_USERS_ADDRESS", "127.0.0.1:0"),
            ("ATTACHE_POSTGRES_ADDRESS", "127.0.0.1:0"),
            ("ATTACHE_API_ENDPOINT", api.as_str()),
        ],
    );
    let port = p.addr("web").port();
    let resolve = format!("api.test:{port}:127.0.0.1");
    let url = format!("https://api.test:{port}/api/users");
    let status = |who: &support::pki::Issued| {
        let (cert, key) = (who.cert.clone(), who.key.clone());
        let (ca, resolve, url) = (pki.ca_path.clone(), resolve.clone(), url.clone());
        async move {
            let (ok, out) = support::curl(&[
                "--haproxy-protocol",
                "--cacert",
                &ca,
                "--cert",
                &cert,
                "--key",
                &key,
                "--resolve",
                &resolve,
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                &url,
            ])
            .await;
            assert!(ok, "curl: {out}");
            out
        }
    };
    assert_eq!(status(&web).await, "200");
    assert_eq!(status(&batch).await, "403");
    assert_eq!(origin.hits(), 1);
}

/// `config/thrift-theader.yaml` starts and routes: a multiplexed framed call to the
/// framed billing cluster, and (with the Python `thrift` package) THeader calls by
/// their `x-tenant` info header to the canary or the main pool.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thrift_theader_example_routes_framed_and_theader_calls() {
    use support::theader_py::{py_client, python_thrift, PyServer};
    use support::thrift_peer::{start_origin, Client, Protocol, Transport};
    let text = std::fs::read_to_string("config/thrift-theader.yaml").expect("read");
    let text = text.replace("127.0.0.1:9901", "127.0.0.1:0");
    let billing = start_origin("billing", Protocol::Binary, Transport::Framed);
    let python = python_thrift();
    let users = python.then(|| PyServer::start("users", false));
    let canary = python.then(|| PyServer::start("canary", false));
    let dead = support::dead_port().to_string();
    let addr = |s: &Option<PyServer>| s.as_ref().map_or(dead.clone(), |s| s.addr.to_string());
    let env = [
        ("ATTACHE_THRIFT_ADDRESS", "127.0.0.1:0".to_string()),
        ("ATTACHE_USERS_ENDPOINT", addr(&users)),
        ("ATTACHE_CANARY_ENDPOINT", addr(&canary)),
        ("ATTACHE_BILLING_ENDPOINT", billing.addr.to_string()),
    ];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let p = support::Proxy::start_with_env(&text, &env);
    let listener = p.addr("thrift_header");
    let got = support::blocking(move || {
        Client::connect(
            listener,
            Protocol::Binary,
            Transport::Framed,
            Some("Billing"),
        )
        .get_user(7)
    })
    .await;
    assert_eq!(got.expect("reply"), "billing:7");
    if !python {
        return;
    }
    let canary_call = py_client(listener, &["--header", "x-tenant=canary-eu"]).await;
    assert_eq!(
        canary_call[0]["result"]["served_by"], "canary",
        "{canary_call:?}"
    );
    assert_eq!(canary_call[0]["reply_headers"]["x-served-by"], "canary");
    let main_call = py_client(listener, &["--header", "x-tenant=acme", "--compact"]).await;
    assert_eq!(
        main_call[0]["result"]["served_by"], "users",
        "{main_call:?}"
    );
    assert_eq!(main_call[0]["result"]["headers"]["x-tenant"], "acme");
}
