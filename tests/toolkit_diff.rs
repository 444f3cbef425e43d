//! `attache diff OLD NEW`: behaviour-level changes, exit 0 equal / 1 different.

mod support;

use support::toolkit::{self, Dir, WEB};

fn diff(old: &str, new: &str, json: bool) -> toolkit::Out {
    let d = Dir::new();
    d.write("old.yaml", old).write("new.yaml", new);
    let mut args = vec!["diff", "old.yaml", "new.yaml"];
    if json {
        args.extend(["--format", "json"]);
    }
    d.run(&args)
}

#[test]
fn equal_configs_exit_0_whatever_the_formatting() {
    let reformatted = format!(
        "# a comment\n{}",
        WEB.replace("weight: 90 }", "weight: 90    }")
    );
    let out = diff(WEB, &reformatted, false);
    assert_eq!(
        (out.code, out.stdout.as_str()),
        (0, "no behaviour changes\n")
    );
}

#[test]
fn weight_shift_is_shown_as_percentages() {
    let new = WEB
        .replace("weight: 90", "weight: 80")
        .replace("weight: 10", "weight: 20");
    let out = diff(WEB, &new, false);
    assert_eq!(out.code, 1);
    assert_eq!(
        out.stdout,
        "~ route web/main/api: weights api_v1 90%->80%, api_v2 10%->20%\n1 change\n"
    );
}

#[test]
fn reordered_route_is_reported() {
    let health = "          - name: health\n            match: { path: /healthz }\n            direct_response: { status: 200, body: \"ok\\n\" }\n";
    assert!(WEB.contains(health));
    let new = WEB.replace(health, "").replace(
        "          - name: canary\n",
        &format!("{health}          - name: canary\n"),
    );
    let out = diff(WEB, &new, false);
    assert_eq!(out.code, 1);
    assert_eq!(
        out.stdout,
        "~ route web/main: routes reordered: canary, api, health, old -> health, canary, api, old\n1 change\n"
    );
}

#[test]
fn removed_cluster_and_changed_action_with_json_locations() {
    let new = WEB
        .replace(
            "  - name: api_v2\n    endpoints: [\"127.0.0.1:9002\"]\n",
            "",
        )
        .replace(
            "route: { cluster: api_v2, timeout: 2s,",
            "route: { cluster: api_v1, timeout: 2s,",
        )
        .replace("                - { cluster: api_v2, weight: 10 }\n", "")
        .replace("weight: 90", "weight: 100");
    let out = diff(WEB, &new, false);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert_eq!(
        out.stdout,
        "~ route web/main/canary: action cluster api_v2, timeout 2s, retries 2 on 5xx|reset -> cluster api_v1, timeout 2s, retries 2 on 5xx|reset\n\
         ~ route web/main/api: weights api_v1 90%->100%, api_v2 10%->0%\n\
         ~ route web/main/api: action weighted_clusters api_v1, api_v2, timeout (default), prefix_rewrite / -> weighted_clusters api_v1, timeout (default), prefix_rewrite /\n\
         - cluster api_v2: removed\n\
         4 changes\n"
    );
    let out = diff(WEB, &new, true);
    let v: serde_json::Value = serde_json::from_str(&out.stdout).expect("json");
    assert_eq!(v["equal"], false);
    assert_eq!(
        v["changes"][3],
        serde_json::json!({"kind": "cluster", "change": "removed", "subject": "api_v2",
            "message": "removed", "file": "old.yaml", "line": 33, "column": 5,
            "severity": "info", "code": "diff-cluster"})
    );
}

#[test]
fn tls_and_filter_policy_changes() {
    let old = WEB.replace(
        "    address: 127.0.0.1:0\n",
        "    address: 127.0.0.1:0\n    tls: { cert_chain: s.pem, private_key: s.key, client_ca: ca.pem, require_client_cert: true }\n",
    );
    let new = WEB.replace(
        "      - cors: { allowed_origins: [\"https://app.example.com\"] }\n",
        "",
    );
    let out = diff(&old, &new, false);
    assert_eq!(out.code, 1);
    assert_eq!(
        out.stdout,
        "- tls web: TLS termination removed: the listener is now plaintext\n\
         ~ filter web: chain headers, cors -> headers\n\
         2 changes\n"
    );
}

#[test]
fn invalid_input_exits_2() {
    let out = diff(WEB, "listeners: [", false);
    assert_eq!(out.code, 2);
    assert!(out.stderr.starts_with("new.yaml:"), "{}", out.stderr);
}

#[test]
fn keys_without_a_readable_description_still_show_with_their_path() {
    let old = WEB.replace(
        "  - name: api_v2\n    endpoints: [\"127.0.0.1:9002\"]\n",
        "  - name: api_v2\n    endpoints: [\"127.0.0.1:9002\"]\n    circuit_breakers: { max_connections: 1000 }\n",
    );
    assert_ne!(old, WEB);
    let new = old.replace("max_connections: 1000", "max_connections: 1");
    let out = diff(&old, &new, false);
    assert_eq!(
        (out.code, out.stdout.as_str()),
        (
            1,
            "~ cluster api_v2: circuit_breakers.max_connections 1000 -> 1\n1 change\n"
        )
    );
}

#[test]
fn a_new_admin_token_is_reported_without_its_value() {
    let old = format!("admin: {{ token: first-secret }}\n{WEB}");
    let new = format!("admin: {{ token: second-secret }}\n{WEB}");
    let out = diff(&old, &new, false);
    assert_eq!(
        (out.code, out.stdout.as_str()),
        (1, "~ admin admin: token set -> set\n1 change\n")
    );
}
