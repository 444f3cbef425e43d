//! `attache validate`: --skip-files, lints with codes (each triggered by a minimal
//! config, none on the shipped configs), --strict and --format json.

mod support;

use support::toolkit::{Dir, WEB};

/// A minimal valid config plus `extra_listener_yaml` spliced into the listener.
fn one_route(filters: &str, tls: &str) -> String {
    format!(
        r#"listeners:
  - name: web
    address: 127.0.0.1:0
{tls}{filters}    virtual_hosts:
      - name: main
        domains: ["*"]
        routes:
          - match: {{ prefix: / }}
            route: {{ cluster: app }}
clusters:
  - name: app
    endpoints: ["127.0.0.1:9000"]
"#
    )
}

fn lint_codes(yaml: &str) -> (i32, Vec<String>) {
    let out = Dir::new().write("c.yaml", yaml).run(&[
        "validate",
        "--config",
        "c.yaml",
        "--skip-files",
        "--format",
        "json",
    ]);
    let v: serde_json::Value = serde_json::from_str(&out.stdout)
        .unwrap_or_else(|e| panic!("json ({e}): {} {}", out.stdout, out.stderr));
    let mut codes = Vec::new();
    for key in ["errors", "warnings"] {
        for f in v[key].as_array().expect("array") {
            codes.push(format!(
                "{}:{} {} {} {}",
                f["line"],
                f["column"],
                f["severity"].as_str().unwrap_or(""),
                f["code"].as_str().unwrap_or("-"),
                f["file"].as_str().unwrap_or("")
            ));
        }
    }
    codes.sort();
    (out.code, codes)
}

#[test]
fn minimal_config_has_no_findings() {
    assert_eq!(lint_codes(&one_route("", "")), (0, vec![]));
}

#[test]
fn a101_hsts_on_plaintext_listener() {
    let y = one_route("    filters:\n      - web_security: { hsts: true }\n", "");
    assert_eq!(lint_codes(&y), (0, vec!["5:31 warning A101 c.yaml".into()]));
}

#[test]
fn a102_secure_cookie_policy_on_plaintext_listener() {
    let y = one_route(
        "    filters:\n      - cookie_audit: { cookies: [{ name: session }] }\n",
        "",
    );
    assert_eq!(lint_codes(&y), (0, vec!["5:35 warning A102 c.yaml".into()]));
    // Saying `secure: false` deliberately is clean.
    let y = one_route(
        "    filters:\n      - cookie_audit: { cookies: [{ name: session, secure: false }] }\n",
        "",
    );
    assert_eq!(lint_codes(&y), (0, vec![]));
}

#[test]
fn a103_client_cert_required_without_allowed_sans() {
    let tls = "    tls: { cert_chain: s.pem, private_key: s.key, client_ca: ca.pem, require_client_cert: true }\n";
    assert_eq!(
        lint_codes(&one_route("", tls)),
        (0, vec!["4:91 warning A103 c.yaml".into()])
    );
    let tls = "    tls: { cert_chain: s.pem, private_key: s.key, client_ca: ca.pem, require_client_cert: true, allowed_client_sans: [spiffe://x/y] }\n";
    assert_eq!(lint_codes(&one_route("", tls)), (0, vec![]));
}

#[test]
fn a104_cors_any_origin_with_credentials_is_an_error_with_its_code() {
    let y = one_route(
        "    filters:\n      - cors: { allowed_origins: [\"*\"], allow_credentials: true }\n",
        "",
    );
    // The core check at the same place is folded into the coded lint.
    assert_eq!(lint_codes(&y), (1, vec!["5:35 error A104 c.yaml".into()]));
}

#[test]
fn a105_unused_cluster() {
    let y = format!(
        "{}  - name: legacy\n    endpoints: [\"127.0.0.1:9009\"]\n",
        one_route("", "")
    );
    assert_eq!(
        lint_codes(&y),
        (0, vec!["13:11 warning A105 c.yaml".into()])
    );
}

#[test]
fn a106_weights_not_summing_to_100() {
    let y = one_route("", "").replace(
        "route: { cluster: app }",
        "route: { weighted_clusters: [{ cluster: app, weight: 3 }, { cluster: app, weight: 1 }] }",
    );
    assert_eq!(lint_codes(&y), (0, vec!["9:41 warning A106 c.yaml".into()]));
}

#[test]
fn a107_retries_on_non_idempotent_methods_without_body_limit() {
    let y = one_route("", "").replace(
        "route: { cluster: app }",
        "route: { cluster: app, retries: { attempts: 2, retry_on: [5xx] } }",
    );
    assert_eq!(lint_codes(&y), (0, vec!["9:36 warning A107 c.yaml".into()]));
    // Idempotent methods only: clean.
    let y = y.replace("{ prefix: / }", "{ prefix: /, methods: [GET, HEAD] }");
    assert_eq!(lint_codes(&y), (0, vec![]));
}

#[test]
fn a108_admin_off_loopback_without_token() {
    let y = format!("admin:\n  address: 0.0.0.0:9901\n{}", one_route("", ""));
    assert_eq!(lint_codes(&y), (1, vec!["2:12 error A108 c.yaml".into()]));
    let y = format!(
        "admin:\n  address: 0.0.0.0:9901\n  token: s3cret\n{}",
        one_route("", "")
    );
    assert_eq!(lint_codes(&y), (0, vec![]));
}

#[test]
fn warnings_fail_only_with_strict_and_print_their_code() {
    let d = Dir::new();
    d.write(
        "c.yaml",
        &format!(
            "{}  - name: legacy\n    endpoints: [\"127.0.0.1:9009\"]\n",
            one_route("", "")
        ),
    );
    let out = d.run(&["validate", "--config", "c.yaml"]);
    assert_eq!(out.code, 0);
    assert_eq!(
        out.stderr,
        "c.yaml:13:11: warning[A105]: cluster `legacy` is not used by any route or listener\n0 errors, 1 warning\n"
    );
    assert_eq!(
        out.stdout,
        "c.yaml: ok (1 listeners, 2 clusters, 1 routes)\n"
    );
    let out = d.run(&["validate", "--config", "c.yaml", "--strict"]);
    assert_eq!(out.code, 1);
    assert_eq!(out.stdout, "");
}

#[test]
fn skip_files_accepts_missing_cert_paths_that_plain_validate_rejects() {
    let d = Dir::new();
    let tls =
        "    tls: { cert_chain: /nonexistent/server.pem, private_key: /nonexistent/server.key }\n";
    d.write("c.yaml", &one_route("", tls));
    let plain = d.run(&["validate", "--config", "c.yaml"]);
    assert_eq!(plain.code, 1, "{}", plain.stderr);
    assert!(
        plain
            .stderr
            .starts_with("c.yaml:4:24: cannot read `/nonexistent/server.pem`"),
        "{}",
        plain.stderr
    );
    let skip = d.run(&["validate", "--config", "c.yaml", "--skip-files"]);
    assert_eq!((skip.code, skip.stderr.as_str()), (0, ""));
    assert_eq!(
        skip.stdout,
        "c.yaml: ok (1 listeners, 1 clusters, 1 routes)\n"
    );
    // A malformed path is still an error without reading anything.
    d.write(
        "c.yaml",
        &one_route("", "    tls: { cert_chain: \"\", private_key: k.pem }\n"),
    );
    let bad = d.run(&["validate", "--config", "c.yaml", "--skip-files"]);
    assert_eq!(bad.code, 1, "{}", bad.stderr);
}

#[test]
fn json_output_locates_core_errors_and_lints() {
    let out = Dir::new()
        .write(
            "c.yaml",
            &one_route("", "").replace("cluster: app }", "cluster: apq }"),
        )
        .run(&["validate", "--config", "c.yaml", "--format", "json"]);
    assert_eq!(out.code, 1);
    let v: serde_json::Value = serde_json::from_str(&out.stdout).expect("json");
    assert_eq!(
        v,
        serde_json::json!({
            "ok": false,
            "errors": [{"file": "c.yaml", "line": 9, "column": 31, "severity": "error", "code": null,
                        "message": "route references unknown cluster `apq`; did you mean `app`?"}],
            "warnings": [{"file": "c.yaml", "line": 11, "column": 11, "severity": "warning", "code": "A105",
                          "message": "cluster `app` is not used by any route or listener"}],
        })
    );
}

#[test]
fn shipped_configs_are_lint_clean() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
    let mut n = 0;
    for e in std::fs::read_dir(&dir).expect("config/") {
        let p = e.expect("entry").path();
        if p.extension().and_then(|x| x.to_str()) != Some("yaml") {
            continue;
        }
        n += 1;
        let d = Dir::new();
        let out = d.run(&[
            "validate",
            "--config",
            p.to_str().expect("utf-8 path"),
            "--skip-files",
            "--strict",
        ]);
        assert_eq!(out.code, 0, "{}: {}", p.display(), out.stderr);
        assert_eq!(out.stderr, "", "{}", p.display());
    }
    assert!(n > 0, "no configs in config/");
    // The toolkit's own example config is clean too (besides A107, which it shows).
    let out = Dir::new()
        .write("web.yaml", WEB)
        .run(&["validate", "--config", "web.yaml"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
}

#[test]
fn grpc_routes_warn_about_head_timeouts_and_http1_clusters() {
    // A gRPC-only match to an HTTP/1.1 cluster (A110) with the default timeout (A109).
    let y = r#"listeners:
  - name: web
    address: 127.0.0.1:0
    virtual_hosts:
      - name: main
        domains: ["*"]
        routes:
          - match: { prefix: /, headers: [{ name: content-type, prefix: application/grpc }] }
            route: { cluster: app }
clusters:
  - name: app
    endpoints: ["127.0.0.1:9000"]
"#;
    assert_eq!(
        lint_codes(y),
        (
            0,
            vec![
                "8:20 warning A110 c.yaml".into(),
                "9:20 warning A109 c.yaml".into()
            ]
        )
    );
    // A cluster health checked with gRPC marks its routes as gRPC: `timeout: 0s` and
    // client deadlines are clean, max_stream_duration is not.
    let y = r#"listeners:
  - name: web
    address: 127.0.0.1:0
    virtual_hosts:
      - name: main
        domains: ["*"]
        routes:
          - match: { prefix: /a. }
            route: { cluster: app, timeout: 0s, max_grpc_timeout: 30s }
          - match: { prefix: /b. }
            route: { cluster: app, timeout: 0s, max_stream_duration: 1h }
clusters:
  - name: app
    protocol: http2
    endpoints: ["127.0.0.1:9000"]
    health_check: { grpc: { service: a.B } }
"#;
    assert_eq!(lint_codes(y), (0, vec!["11:49 warning A109 c.yaml".into()]));
}

#[test]
fn a103_is_quiet_when_rbac_decides() {
    let tls = "    tls: { cert_chain: s.pem, private_key: s.key, client_ca: ca.pem, require_client_cert: true }\n    rbac: { policies: [{ name: ops, principals: [{ peer_san: spiffe://x/ops }] }] }\n";
    assert_eq!(lint_codes(&one_route("", tls)), (0, vec![]));
}

#[test]
fn a111_proxy_protocol_off_loopback_without_allowed_sources() {
    let y = one_route("", "    proxy_protocol: true\n").replace("127.0.0.1:0", "0.0.0.0:0");
    assert_eq!(lint_codes(&y), (0, vec!["4:21 warning A111 c.yaml".into()]));
    let y = y.replace("true", "{ allowed_sources: [10.0.0.0/8] }");
    assert_eq!(lint_codes(&y), (0, vec![]));
    // Loopback: only local peers can send a header.
    let y = one_route("", "    proxy_protocol: true\n");
    assert_eq!(lint_codes(&y), (0, vec![]));
}
