//! `attache validate` on TLS configs: file problems point at the right key, and the
//! shipped mTLS sidecar example validates with generated certificates.

mod support;

use std::path::Path;
use std::process::Command;

use support::pki::{Leaf, Pki};

/// Run `attache validate --config <path>` with extra env; (success, stderr+stdout).
fn validate(path: &Path, env: &[(&str, &str)]) -> (bool, String) {
    let mut cmd = Command::new(support::bin());
    cmd.arg("validate").arg("--config").arg(path);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run attache validate");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        ),
    )
}

/// The 1-based line of the first line of `yaml` that contains `needle`.
fn line_of(yaml: &str, needle: &str) -> usize {
    yaml.lines()
        .position(|l| l.contains(needle))
        .unwrap_or_else(|| panic!("`{needle}` not in config"))
        + 1
}

#[test]
fn validate_points_at_missing_mismatched_and_expired_tls_files() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = Pki::new(dir.path(), "main");
    let a = pki.issue("a", &Leaf::new("a").dns(&["a.test"]));
    let b = pki.issue("b", &Leaf::new("b").dns(&["b.test"]));
    let old = pki.issue("old", &Leaf::new("old").dns(&["old.test"]).expired());
    let missing = dir.path().join("nope.key");
    let yaml = format!(
        r#"admin:
  address: 127.0.0.1:0
listeners:
  - name: missing_key
    address: 127.0.0.1:0
    tls:
      cert_chain: {a_cert}
      private_key: {missing}
    virtual_hosts:
      - name: all
        domains: ["*"]
        routes:
          - match: {{ prefix: / }}
            direct_response: {{ status: 200 }}
  - name: mismatched
    address: 127.0.0.1:0
    tls:
      cert_chain: {a_cert}
      private_key: {b_key}
    virtual_hosts:
      - name: all
        domains: ["*"]
        routes:
          - match: {{ prefix: / }}
            direct_response: {{ status: 200 }}
  - name: expired
    address: 127.0.0.1:0
    protocol: tcp
    tcp: {{ cluster: up }}
    tls:
      cert_chain: {old_cert}
      private_key: {old_key}
clusters:
  - name: up
    endpoints: ["127.0.0.1:1"]
    tls:
      ca: {missing_ca}
"#,
        old_cert = old.cert,
        old_key = old.key,
        a_cert = a.cert,
        missing = missing.display(),
        b_key = b.key,
        missing_ca = dir.path().join("nope-ca.pem").display(),
    );
    let path = dir.path().join("bad.yaml");
    std::fs::write(&path, &yaml).expect("write");
    let (ok, out) = validate(&path, &[]);
    assert!(!ok, "validate accepted a broken config:\n{out}");
    let file = path.display().to_string();
    let missing_line = line_of(&yaml, &format!("private_key: {}", missing.display()));
    let mismatch_line = line_of(&yaml, &format!("private_key: {}", b.key));
    let ca_line = line_of(&yaml, "ca: ");
    let expired_line = line_of(&yaml, &format!("cert_chain: {}", old.cert));
    for (line, what) in [
        (missing_line, "missing key file"),
        (mismatch_line, "mismatched key"),
        (ca_line, "missing CA file"),
        (expired_line, "expired certificate"),
    ] {
        let prefix = format!("{file}:{line}:");
        assert!(
            out.lines().any(|l| l.starts_with(&prefix)),
            "{what}: no diagnostic at {prefix}\n{out}"
        );
    }
    // The cert_chain lines are fine and must not be blamed.
    let cert_line = line_of(&yaml, "cert_chain: ");
    assert!(
        !out.lines()
            .any(|l| l.starts_with(&format!("{file}:{cert_line}:"))),
        "{out}"
    );
}

#[test]
fn validate_rejects_allowlist_without_client_ca() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = Pki::new(dir.path(), "main");
    let a = pki.issue("a", &Leaf::new("a").dns(&["a.test"]));
    let yaml = format!(
        r#"admin:
  address: 127.0.0.1:0
listeners:
  - name: l
    address: 127.0.0.1:0
    protocol: tcp
    tcp: {{ cluster: up }}
    tls:
      cert_chain: {}
      private_key: {}
      allowed_client_sans: ["spiffe://example.org/ns/web/sa/frontend"]
clusters:
  - name: up
    endpoints: ["127.0.0.1:1"]
"#,
        a.cert, a.key
    );
    let path = dir.path().join("bad.yaml");
    std::fs::write(&path, &yaml).expect("write");
    let (ok, out) = validate(&path, &[]);
    assert!(!ok, "{out}");
    let line = line_of(&yaml, "allowed_client_sans");
    assert!(
        out.contains(&format!("{}:{line}:", path.display())),
        "{out}"
    );
}

/// Write the files `config/mtls-sidecar.yaml` expects into `dir`.
fn sidecar_certs(dir: &Path) {
    let pki = Pki::new(dir, "mesh");
    std::fs::copy(&pki.ca_path, dir.join("ca.pem")).expect("copy ca");
    pki.issue(
        "server",
        &Leaf::new("svc").uri(&["spiffe://example.org/ns/svc/sa/svc"]),
    );
    pki.issue(
        "client",
        &Leaf::new("svc").uri(&["spiffe://example.org/ns/svc/sa/svc"]),
    );
}

fn sidecar_path() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("config/mtls-sidecar.yaml")
}

#[test]
fn mtls_sidecar_example_validates_with_generated_certs() {
    let dir = tempfile::tempdir().expect("tempdir");
    sidecar_certs(dir.path());
    let certs = dir.path().display().to_string();
    let (ok, out) = validate(&sidecar_path(), &[("ATTACHE_CERT_DIR", &certs)]);
    assert!(ok, "config/mtls-sidecar.yaml does not validate:\n{out}");
}

#[test]
fn mtls_sidecar_example_reports_missing_certs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let empty = dir.path().display().to_string();
    let (ok, out) = validate(&sidecar_path(), &[("ATTACHE_CERT_DIR", &empty)]);
    assert!(!ok, "{out}");
    let yaml = std::fs::read_to_string(sidecar_path()).expect("read example");
    let file = sidecar_path().display().to_string();
    for key in [
        "      private_key: ${",
        "      client_ca: ${",
        "      ca: ${",
    ] {
        let line = line_of(&yaml, key);
        assert!(
            out.contains(&format!("{file}:{line}:")),
            "no diagnostic for `{}` at line {line}:\n{out}",
            key.trim()
        );
    }
}
