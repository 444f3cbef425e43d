//! Filter configs through `attache validate` (every error at once, each at its own
//! FILE:LINE) and the shipped `config/internal-web.yaml` (validates, starts, protects).

mod support;

use std::path::Path;

use support::{validate, validate_file_env, Origin, Proxy};

/// The 1-based line of the first line of `yaml` containing `marker`.
fn line_of(yaml: &str, marker: &str) -> usize {
    yaml.lines()
        .position(|l| l.contains(marker))
        .unwrap_or_else(|| panic!("marker `{marker}` not in yaml"))
        + 1
}

/// `FILE:LINE:COL: message` lines from `attache validate`'s text output.
fn diagnostic_lines(out: &str, file: &Path) -> Vec<usize> {
    let prefix = format!("{}:", file.display());
    out.lines()
        .filter_map(|l| l.strip_prefix(&prefix))
        .filter_map(|rest| rest.split(':').next()?.parse().ok())
        .collect()
}

const BAD: &str = r#"admin:
  address: 127.0.0.1:0
listeners:
  - name: web
    address: 127.0.0.1:0
    filters:
      - cookie_audit:
          cookies:
            - name: session
              same_sites: Lax                      # unknown cookie attribute
      - web_security:
          csrf:
            allowed_origins:
              - { regex: '^https://(unclosed$' }   # bad regex
      - cors:
          allowed_origins: ["*"]                   # star with credentials
          allow_credentials: true
    virtual_hosts:
      - name: all
        domains: ["*"]
        routes:
          - name: api
            match: { prefix: /api/ }
            route: { cluster: origin }
            filter_overrides:
              sli: disabled                        # not on this chain
          - name: app
            match: { prefix: / }
            route: { cluster: origin }
            filter_overrides:
              cors: { allowed_origins: ["https://a.example.com"], max_age: soon }   # bad override
clusters:
  - name: origin
    endpoints: ["127.0.0.1:9"]
"#;

#[test]
fn validate_reports_every_filter_error_at_its_line() {
    let (code, out, path) = validate("bad-filters.yaml", BAD);
    assert_eq!(code, 1, "{out}");
    let mut got = diagnostic_lines(&out, &path);
    got.sort_unstable();
    let mut want = vec![
        line_of(BAD, "same_sites"),
        line_of(BAD, "unclosed"),
        line_of(BAD, "star with credentials"),
        line_of(BAD, "sli: disabled"),
        line_of(BAD, "bad override"),
    ];
    want.sort_unstable();
    assert_eq!(got, want, "validate output:\n{out}");
    // `run` refuses the same file before binding anything.
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("bad.yaml");
    std::fs::write(&file, BAD).expect("write");
    let st = std::process::Command::new(support::bin())
        .args(["run", "--config"])
        .arg(&file)
        .output()
        .expect("run attache");
    assert_eq!(st.status.code(), Some(64));
}

#[test]
fn validate_accepts_a_good_filter_config() {
    let good = BAD
        .replace("same_sites: Lax", "same_site: Lax")
        .replace("(unclosed$", "[a-z]+\\.example\\.com$")
        .replace(
            "[\"*\"]                   # star",
            "[\"https://b.example.com\"] # star",
        )
        .replace("sli: disabled", "cookie_audit: disabled")
        .replace("max_age: soon", "max_age: 10m");
    let (code, out, _) = validate("good-filters.yaml", &good);
    assert_eq!(code, 0, "{out}\n{good}");
}

fn internal_web() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("config/internal-web.yaml")
}

/// A server certificate for intranet.example.com in `dir` (server.pem, server.key),
/// as the example expects under `${ATTACHE_CERT_DIR}`; returns the CA path.
fn web_certs(dir: &Path) -> String {
    let pki = support::pki::Pki::new(dir, "web");
    pki.issue(
        "server",
        &support::pki::Leaf::new("intranet").dns(&["intranet.example.com"]),
    );
    pki.ca_path.clone()
}

#[test]
fn internal_web_example_validates() {
    let dir = tempfile::tempdir().expect("tempdir");
    web_certs(dir.path());
    let certs = dir.path().display().to_string();
    let (code, out) = validate_file_env(&internal_web(), &[("ATTACHE_CERT_DIR", &certs)]);
    assert_eq!(code, 0, "{out}");
}

/// One HTTPS request with curl against the TLS listener: (status, headers, body).
async fn https(
    port: u16,
    ca: &str,
    method: &str,
    path: &str,
    headers: &[&str],
    body: &str,
) -> (u16, String, String) {
    let resolve = format!("intranet.example.com:{port}:127.0.0.1");
    let url = format!("https://intranet.example.com:{port}{path}");
    let mut args: Vec<&str> = vec!["-i", "--cacert", ca, "--resolve", &resolve, "-X", method];
    for h in headers {
        args.push("-H");
        args.push(h);
    }
    if !body.is_empty() {
        args.push("--data-binary");
        args.push(body);
    }
    args.push(&url);
    let (ok, out) = support::curl(&args).await;
    assert!(ok, "curl failed: {out}");
    let (head, body) = out.split_once("\r\n\r\n").unwrap_or((&out, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, head.to_ascii_lowercase(), body.to_string())
}

/// Start the shipped example with its addresses and origin swapped for loopback test
/// ones, and check that all three filters protect the site.
#[tokio::test]
async fn internal_web_example_starts_and_protects() {
    let origin = Origin::start("web").await;
    let yaml = std::fs::read_to_string(internal_web()).expect("read example");
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = web_certs(dir.path());
    let certs = dir.path().display().to_string();
    let (code, out) = validate_file_env(&internal_web(), &[("ATTACHE_CERT_DIR", &certs)]);
    assert_eq!(code, 0, "{out}");
    let p = Proxy::start_with_env(
        &yaml,
        &[
            ("ATTACHE_ADMIN_ADDRESS", "127.0.0.1:0"),
            ("ATTACHE_WEB_ADDRESS", "127.0.0.1:0"),
            ("ATTACHE_WEB_ORIGIN", &origin.addr.to_string()),
            ("ATTACHE_CERT_DIR", &certs),
        ],
    );
    let port = p.addr("internal_web").port();

    // web_security: headers on every response, HSTS because the listener is TLS.
    let (status, head, body) = https(port, &ca, "GET", "/", &[], "").await;
    assert_eq!(status, 200, "{head}{body}");
    assert!(head.contains("x-frame-options: deny"), "{head}");
    assert!(head.contains("content-security-policy:"), "{head}");
    assert!(head.contains("x-content-type-options: nosniff"), "{head}");
    assert!(head.contains("strict-transport-security:"), "{head}");

    // web_security: CSRF (cross-site POST rejected and not forwarded). The 403 goes
    // out while the upload may still be unread; over HTTP/2 the rest of the body is
    // discarded after the reply, so curl sees a clean stream.
    let before = origin.hits();
    let (status, _, _) = https(
        port,
        &ca,
        "POST",
        "/app/save",
        &["origin: https://evil.example.net"],
        "x",
    )
    .await;
    assert_eq!(status, 403);
    assert_eq!(origin.hits(), before);

    // cookie_audit: unknown request cookies never reach the site.
    let (status, _, body) = https(
        port,
        &ca,
        "GET",
        "/app/",
        &["cookie: session=s; tracker=t"],
        "",
    )
    .await;
    assert_eq!(status, 200);
    let v: serde_json::Value = serde_json::from_str(&body).expect("echo json");
    assert_eq!(v["headers"]["cookie"], "session=s");

    // sli: counted per route.
    let (status, sli) = p.admin_get("/sli?format=json").await;
    assert_eq!(status, 200);
    let v: serde_json::Value = serde_json::from_str(&sli).expect("sli json");
    assert!(
        v["routes"]
            .as_array()
            .is_some_and(|r| r.iter().any(|r| r["route"] == "app")),
        "{sli}"
    );
}
