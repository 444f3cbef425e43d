//! `deploy/check.py`, the offline check of the Kubernetes bases and the systemd unit
//! (it needs `python3` with the `kubernetes-validate` package, which `.ci/run`
//! installs; without it the tests skip, saying so): the shipped files pass, and each
//! rule the bases promise fails when a copy of them breaks it.

mod support;

use std::path::Path;
use std::process::Command;

/// A copy of `deploy/` and the `Dockerfile` in `dir`, with the first `from` in `file`
/// replaced by `to` (no edit when `file` is empty).
fn copy_with(dir: &Path, file: &str, from: &str, to: &str) {
    let copy = |src: &Path, dst: &Path| {
        let out = Command::new("cp")
            .arg("-r")
            .arg(src)
            .arg(dst)
            .status()
            .expect("cp");
        assert!(out.success());
    };
    copy(Path::new("deploy"), &dir.join("deploy"));
    copy(Path::new("Dockerfile"), &dir.join("Dockerfile"));
    if !file.is_empty() {
        let path = dir.join(file);
        let text = std::fs::read_to_string(&path).expect("read");
        assert!(text.contains(from), "{file} has no `{from}`");
        std::fs::write(&path, text.replacen(from, to, 1)).expect("write");
    }
}

/// Whether `python3` can import `kubernetes_validate`; says what to install when not.
fn kubernetes_validate() -> bool {
    support::python_module("kubernetes_validate", "kubernetes-validate==1.37.0")
}

/// `python3 deploy/check.py` on the copy in `dir`: (success, what it printed).
fn check(dir: &Path) -> (bool, String) {
    let out = Command::new("python3")
        .arg(dir.join("deploy/check.py"))
        .arg("--attache")
        .arg(support::bin())
        .output()
        .expect("python3 (apt-get install python3)");
    let text =
        String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    assert!(
        !text.contains("No module named"),
        "deploy/check.py needs `pip install kubernetes-validate` (.ci/run installs it):\n{text}"
    );
    (out.status.success(), text)
}

#[test]
fn the_shipped_deploy_files_pass() {
    if !kubernetes_validate() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    copy_with(dir.path(), "", "", "");
    let (ok, text) = check(dir.path());
    assert!(ok, "{text}");
    assert!(text.contains("2 attache configs: 0 problem(s)"), "{text}");
}

#[test]
fn each_promised_rule_fails_when_broken() {
    if !kubernetes_validate() {
        return;
    }
    let sidecar = "deploy/kubernetes/sidecar/deployment.yaml";
    let ingress = "deploy/kubernetes/ingress/deployment.yaml";
    let cases: &[(&str, &str, &str, &str)] = &[
        (
            sidecar,
            "runAsUser: 10001",
            "runAsUser: 0",
            "no numeric non-zero runAsUser",
        ),
        (
            ingress,
            "readOnlyRootFilesystem: true",
            "readOnlyRootFilesystem: false",
            "readOnlyRootFilesystem is not true",
        ),
        (
            ingress,
            "capabilities: { drop: [ALL] }",
            "capabilities: { drop: [NET_RAW] }",
            "capabilities: drop [ALL]",
        ),
        (
            sidecar,
            "httpGet: { path: /ready, port: health }",
            "httpGet: { path: /ready, port: inbound }",
            "readinessProbe is not GET /ready on the health_listener port 9902",
        ),
        (
            ingress,
            "httpGet: { path: /live, port: health }",
            "httpGet: { path: /stats, port: health }",
            "livenessProbe is not GET /live",
        ),
        (
            ingress,
            "curl -fsS -X POST http://127.0.0.1:9901/drain_listeners",
            "true",
            "preStop does not POST /healthcheck/fail, then /drain_listeners",
        ),
        (
            ingress,
            "terminationGracePeriodSeconds: 45",
            "terminationGracePeriodSeconds: 30",
            "terminationGracePeriodSeconds 30 < preStop sleep 10s + drain_timeout 30s",
        ),
        (
            "deploy/kubernetes/ingress/configmap.yaml",
            "address: 0.0.0.0:9902",
            "address: 127.0.0.1:9902",
            "is not reachable on the pod IP",
        ),
        (
            "deploy/kubernetes/ingress/kustomization.yaml",
            "  - pdb.yaml\n",
            "",
            "without a PodDisruptionBudget",
        ),
        (
            "Dockerfile",
            "USER 10001:10001",
            "USER attache:attache",
            "the final USER must be numeric",
        ),
        (
            "deploy/kubernetes/sidecar/configmap.yaml",
            "timeout: 15s",
            "timeout: 15",
            "a duration needs a unit",
        ),
    ];
    // Each case checks its own copy; they run side by side (each is a few seconds
    // of python, kubectl and systemd-analyze).
    let failures: Vec<String> = std::thread::scope(|s| {
        let runs: Vec<_> = cases
            .iter()
            .map(|(file, from, to, error)| {
                s.spawn(move || {
                    let dir = tempfile::tempdir().expect("tempdir");
                    copy_with(dir.path(), file, from, to);
                    let (ok, text) = check(dir.path());
                    match (ok, text.contains(error)) {
                        (false, true) => None,
                        (true, _) => Some(format!("{file}: `{to}` passed:\n{text}")),
                        (false, false) => {
                            Some(format!("{file}: `{to}`: expected `{error}`:\n{text}"))
                        }
                    }
                })
            })
            .collect();
        runs.into_iter()
            .filter_map(|r| r.join().expect("case thread"))
            .collect()
    });
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
