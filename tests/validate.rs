//! `attache validate` on the shipped configs and on a table of broken ones: every
//! error at once, FILE:LINE:COL, exit codes; `run` refuses the same files.

use std::process::Command;

fn validate(yaml: &str) -> (i32, String, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("bad.yaml");
    std::fs::write(&path, yaml).expect("write");
    let out = Command::new(env!("CARGO_BIN_EXE_attache"))
        .args(["validate", "--config"])
        .arg(&path)
        .env_remove("UNSET_FOR_TEST")
        .output()
        .expect("run attache");
    let stderr = String::from_utf8_lossy(&out.stderr).replace(&path.display().to_string(), "F");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr,
    )
}

const BASE_CLUSTERS: &str = "clusters:\n  - name: api\n    endpoints: [\"127.0.0.1:9000\"]\n";

fn listener(routes: &str) -> String {
    format!(
        "listeners:\n  - name: web\n    address: 127.0.0.1:0\n    virtual_hosts:\n      - name: all\n        domains: [\"*\"]\n        routes:\n{routes}{BASE_CLUSTERS}"
    )
}

#[test]
fn shipped_configs_validate() {
    for f in [
        "config/quickstart.yaml",
        "config/sidecar.yaml",
        "config/ingress.yaml",
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_attache"))
            .args(["validate", "--config", f])
            .output()
            .expect("run");
        assert!(
            out.status.success(),
            "{f}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            String::from_utf8_lossy(&out.stdout).contains(": ok ("),
            "{f}"
        );
    }
}

#[test]
fn broken_configs_report_line_column_and_what_to_fix() {
    // (config, expected "LINE:COL: message fragment" lines)
    let table: Vec<(String, Vec<&str>)> = vec![
        (
            "listeners: [\n  - name: a\n".to_string(),
            vec!["invalid YAML"],
        ),
        (
            listener("          - match: { prefix: / }\n            route: { clustr: api }\n"),
            vec!["F:9:22: unknown key `clustr`; did you mean `cluster`?"],
        ),
        (
            listener("          - match: { prefix: / }\n            route: { cluster: apii }\n"),
            vec!["F:9:31: route references unknown cluster `apii`; did you mean `api`?"],
        ),
        (
            listener("          - name: all\n            match: { prefix: / }\n            route: { cluster: api }\n          - name: late\n            match: { prefix: /api }\n            route: { cluster: api }\n"),
            vec!["F:12:20: route `late` can never match: route `all` at line 9 (a catch-all)"],
        ),
        (
            listener("          - match: { regex: \"/(a\" }\n            route: { cluster: api }\n"),
            vec!["F:8:29: invalid regex `/(a`: error: unclosed group"],
        ),
        (
            listener("          - match: { prefix: / }\n            route: { weighted_clusters: [{ cluster: api, weight: 0 }] }\n"),
            vec!["F:9:41: weights sum to zero"],
        ),
        (
            format!("listeners:\n  - name: a\n    address: 127.0.0.1:8000\n    virtual_hosts: [{{ name: v, domains: [\"*\"] }}]\n  - name: a\n    address: 127.0.0.1:8000\n    virtual_hosts: [{{ name: v, domains: [\"*\"] }}]\n{BASE_CLUSTERS}"),
            vec!["F:5:11: duplicate listener name `a`", "F:6:14: address 127.0.0.1:8000 is already used"],
        ),
        (
            format!("admin:\n  address: 0.0.0.0:9901\n{BASE_CLUSTERS}"),
            vec!["F:2:12: error[A108]: admin address 0.0.0.0:9901 is not loopback and no admin.token is set"],
        ),
        (
            format!("admin:\n  token: ${{UNSET_FOR_TEST}}\n{BASE_CLUSTERS}"),
            vec!["F:2:10: environment variable `UNSET_FOR_TEST` is not set"],
        ),
        (
            format!("listeners:\n  - name: Bad-Name\n    address: nowhere\n    protocol: htp\n{BASE_CLUSTERS}"),
            vec!["F:4:15: unknown value `htp`; did you mean `http`?"],
        ),
        (
            format!("listeners:\n  - name: Bad-Name\n    address: nowhere\n    virtual_hosts: [{{ name: v, domains: [\"*\"] }}]\n{BASE_CLUSTERS}  - name: api\n    endpoints: [\"localhost\"]\n    connect_timeout: 5 seconds\n"),
            vec![
                "F:2:11: listener name `Bad-Name` must match [a-z0-9_]+",
                "F:3:14: `nowhere` is not an address",
                "F:8:11: duplicate cluster name `api` (first defined at line 6)",
                "F:10:22: unknown duration unit ` seconds` in `5 seconds`",
            ],
        ),
        (
            format!("listeners:\n  - name: w\n    address: 127.0.0.1:0\n    filters:\n      - cookie_audt: {{}}\n    virtual_hosts: [{{ name: v, domains: [\"*\"], routes: [{{ match: {{ prefix: / }}, route: {{ cluster: api, retries: {{ attempts: 1, retry_on: [5xxx] }} }} }}] }}]\n{BASE_CLUSTERS}"),
            vec!["F:5:9: unknown filter `cookie_audt`; did you mean `cookie_audit`?", "unknown retry condition `5xxx`; did you mean `5xx`?"],
        ),
    ];
    assert_each_fails_with(table);
}

/// Each config fails `validate` with every expected fragment, and every error
/// line is located.
fn assert_each_fails_with(table: Vec<(String, Vec<&str>)>) {
    for (yaml, expected) in table {
        let (code, _, stderr) = validate(&yaml);
        assert_eq!(code, 1, "must fail:\n{yaml}\n{stderr}");
        for e in &expected {
            assert!(
                stderr.contains(e),
                "expected `{e}` in:\n{stderr}\nfor:\n{yaml}"
            );
        }
        for line in stderr.lines().filter(|l| l.starts_with("F:")) {
            let mut parts = line.splitn(4, ':');
            parts.next();
            let l: usize = parts.next().and_then(|s| s.parse().ok()).unwrap_or(0);
            let c: usize = parts.next().and_then(|s| s.parse().ok()).unwrap_or(0);
            assert!(l >= 1 && c >= 1, "{line}");
        }
    }
}

/// `attache ARGS PATH`, PATH a config whose only route names an unknown cluster
/// (`nope`, at line 9).
fn attache_on_unknown_cluster(args: &[&str]) -> std::process::Output {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("bad.yaml");
    std::fs::write(
        &path,
        listener("          - match: { prefix: / }\n            route: { cluster: nope }\n"),
    )
    .expect("write");
    Command::new(env!("CARGO_BIN_EXE_attache"))
        .args(args)
        .arg(&path)
        .output()
        .expect("run")
}

#[test]
fn run_refuses_an_invalid_config_before_binding() {
    let out = attache_on_unknown_cluster(&["run", "--config"]);
    assert_eq!(out.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("unknown cluster `nope`"), "{stderr}");
    assert!(stderr.contains("refusing to start"), "{stderr}");
}

#[test]
fn json_output_for_ci() {
    let out = attache_on_unknown_cluster(&["validate", "--format", "json", "--config"]);
    assert_eq!(out.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v["ok"], false);
    assert_eq!(v["errors"][0]["line"], 9);
    assert_eq!(v["errors"][0]["severity"], "error");
}

/// The habits of Envoy and NGINX users, each located and answered with the attache
/// spelling. (yaml, every expected `F:LINE:COL: message` fragment.)
#[test]
fn envoy_and_nginx_habits_get_a_located_hint() {
    let route = |action: &str| {
        listener(&format!(
            "          - match: {{ prefix: / }}\n            route: {{ cluster: api{action} }}\n"
        ))
    };
    let table: Vec<(String, Vec<&str>)> = vec![
        (
            route(", timeout: 2"),
            vec!["F:9:45: a duration needs a unit: add one, e.g. `2s` or `2ms`"],
        ),
        (
            format!("drain_timeout: 1.5\n{BASE_CLUSTERS}"),
            vec!["F:1:16: a duration needs a unit: add one, e.g. `1.5s`"],
        ),
        (
            format!("listeners:\n  - name: web\n    address: 10000\n    virtual_hosts: []\n{BASE_CLUSTERS}"),
            vec!["F:3:14: a port alone is not an address; write `0.0.0.0:10000` (every interface) or `127.0.0.1:10000`"],
        ),
        (
            format!("listeners:\n  - name: web\n    address: \"10000\"\n    virtual_hosts: []\n{BASE_CLUSTERS}"),
            vec!["F:3:14: a port alone is not an address; write `0.0.0.0:10000`"],
        ),
        (
            format!("listeners:\n  - name: web\n    address:\n      socket_address: {{ address: 0.0.0.0, port_value: 10000 }}\n    virtual_hosts: []\n{BASE_CLUSTERS}"),
            vec!["F:4:21: attache takes `address: HOST:PORT`, not Envoy's `socket_address`; write `address: 0.0.0.0:10000`"],
        ),
        (
            format!("listeners:\n  - name: web\n    address: 127.0.0.1:0\n    virtual_hosts:\n      - name: all\n        domains: \"*\"\n        routes: []\n{BASE_CLUSTERS}"),
            vec!["F:6:18: invalid type: string \"*\", expected a sequence; write a list: `domains: [\"*\"]`"],
        ),
        (
            route(", retries: { attempts: 2, retry_on: \"5xx,reset\" }"),
            vec!["F:9:70: invalid type: string \"5xx,reset\", expected a sequence; write a list: `retry_on: [5xx, reset]`"],
        ),
        (
            route(", retry_policy: { num_retries: 2 }"),
            vec!["F:9:36: unknown key `retry_policy`: attache calls it `retries`, in the route action"],
        ),
        (
            listener("          - match: { safe_regex: { regex: \"^/api/.*\" } }\n            route: { cluster: api }\n"),
            vec!["F:8:22: unknown key `safe_regex`: attache takes the pattern itself: `regex:"],
        ),
        (
            "clusters:\n  - name: api\n    type: STRICT_DNS\n    endpoints: [\"127.0.0.1:9000\"]\n    lb_policy: ROUND_ROBIN\n".to_string(),
            vec![
                "F:3:5: unknown key `type`: attache has no cluster `type`: write `endpoints: [HOST:PORT, ...]` (Envoy's STATIC), `discovery: { dns: { name: HOST:PORT } }` (STRICT_DNS",
                "F:5:16: unknown value `ROUND_ROBIN`; did you mean `round_robin`?",
            ],
        ),
    ];
    assert_each_fails_with(table);
}

/// A config with several Envoy habits at once (the way a migration starts): every
/// one is reported in the same run, also those after a listener whose required
/// `address` was wrong, located where they are written.
#[test]
fn every_habit_in_one_file_is_reported_at_once() {
    let yaml = "listeners:
  - name: web
    address: 10000
    virtual_hosts:
      - name: v
        domains: \"*\"
        routes:
          - match: { prefix: / }
            route: { cluster: api, timeout: 2 }
  - name: web2
    address:
      socket_address: { address: 0.0.0.0, port_value: 10001 }
    virtual_hosts: []
  - name: web3
    address: 127.0.0.1:0
    virtual_hosts: []
clusters:
  - name: api
    type: STRICT_DNS
    endpoints: [\"127.0.0.1:9000\"]
    lb_policy: ROUND_ROBIN
";
    let (code, _, err) = validate(yaml);
    assert_eq!(code, 1, "{err}");
    for want in [
        "F:3:14: a port alone is not an address",
        "F:6:18: invalid type: string \"*\", expected a sequence",
        "F:9:45: a duration needs a unit",
        "F:12:21: attache takes `address: HOST:PORT`, not Envoy's `socket_address`",
        "F:19:5: unknown key `type`: attache has no cluster `type`",
        "F:21:16: unknown value `ROUND_ROBIN`; did you mean `round_robin`?",
    ] {
        assert!(err.contains(want), "missing `{want}` in:\n{err}");
    }
}
