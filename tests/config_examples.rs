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

#[test]
fn every_shipped_config_validates() {
    let certs = tempfile::tempdir().expect("tempdir");
    example_certs(certs.path());
    let mut n = 0;
    let mut entries: Vec<_> = std::fs::read_dir("config")
        .expect("config dir")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    entries.sort();
    for path in entries {
        let out = Command::new(env!("CARGO_BIN_EXE_attache"))
            .args(["validate", "--config"])
            .arg(&path)
            .env("ATTACHE_CERT_DIR", certs.path())
            .output()
            .expect("run attache");
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

#[tokio::test]
async fn quickstart_serves_direct_and_proxied_routes() {
    // The quickstart's fixed ports are rewritten to ephemeral ones; the proxied route
    // points at the admin endpoint, so it is rewritten to the admin's real port after
    // start via a second config that names it.
    let text = std::fs::read_to_string("config/quickstart.yaml").expect("read");
    let admin_port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let text = text
        .replace("127.0.0.1:10000", "127.0.0.1:0")
        .replace("127.0.0.1:9901", &format!("127.0.0.1:{admin_port}"));
    let p = support::Proxy::start(&text);
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
