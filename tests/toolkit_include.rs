//! `include:` and `attache render`: errors in included and rendered files point at
//! the right file and line; cycles, escapes, undefined variables and runaway loops
//! are clear errors, never a hang.

mod support;

use std::time::{Duration, Instant};

use support::toolkit::Dir;

const MAIN: &str = r#"listeners:
  - name: web
    address: 127.0.0.1:0
    virtual_hosts:
      - name: main
        domains: ["*"]
        routes:
          - include: routes/common.yaml
          - name: app
            match: { prefix: / }
            route: { cluster: app }
clusters: { include: clusters.yaml }
"#;

const ROUTES: &str = r#"- name: health
  match: { path: /healthz }
  direct_response: { status: 200 }
- name: api
  match: { prefix: /api/ }
  route: { cluster: api }
"#;

const CLUSTERS: &str = r#"- name: app
  endpoints: ["127.0.0.1:9001"]
- name: api
  endpoints: ["127.0.0.1:9002"]
"#;

fn tree() -> Dir {
    let d = Dir::new();
    d.write("cfg/main.yaml", MAIN)
        .write("cfg/routes/common.yaml", ROUTES)
        .write("cfg/clusters.yaml", CLUSTERS);
    d
}

#[test]
fn included_routes_and_clusters_assemble_into_one_config() {
    let d = tree();
    let out = d.run(&["validate", "--config", "cfg/main.yaml"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(
        out.stdout,
        "cfg/main.yaml: ok (1 listeners, 2 clusters, 3 routes)\n"
    );
    // Spliced in order: health and api come before app.
    let out = d.run(&["explain", "-c", "cfg/main.yaml", "--path", "/api/x"]);
    assert!(out.stdout.contains("route         api\n"), "{}", out.stdout);
}

#[test]
fn errors_in_included_files_name_that_file_and_line() {
    let d = tree();
    d.write(
        "cfg/routes/common.yaml",
        &ROUTES.replace("cluster: api }", "cluster: apis }"),
    )
    .write(
        "cfg/clusters.yaml",
        &CLUSTERS.replace(
            "  endpoints: [\"127.0.0.1:9002\"]\n",
            "  endpoints: [\"127.0.0.1:9002\"]\n  lb_polcy: random\n",
        ),
    );
    let out = d.run(&["validate", "--config", "cfg/main.yaml"]);
    assert_eq!(out.code, 1);
    // Shape and semantic errors and lints in one run, each in its own file.
    assert_eq!(
        out.stderr,
        "cfg/clusters.yaml:3:9: warning[A105]: cluster `api` is not used by any route or listener\n\
         cfg/clusters.yaml:5:3: unknown key `lb_polcy`; did you mean `lb_policy`?\n\
         cfg/routes/common.yaml:6:21: route references unknown cluster `apis`; did you mean `api`?\n\
         2 errors, 1 warning\n"
    );
    d.write("cfg/clusters.yaml", CLUSTERS);
    let out = d.run(&["validate", "--config", "cfg/main.yaml", "--format", "json"]);
    let v: serde_json::Value = serde_json::from_str(&out.stdout).expect("json");
    assert_eq!(
        v["errors"][0],
        serde_json::json!({"file": "cfg/routes/common.yaml", "line": 6, "column": 21, "severity": "error",
            "code": null, "message": "route references unknown cluster `apis`; did you mean `api`?"})
    );
    assert_eq!(v["warnings"][0]["file"], "cfg/clusters.yaml");
    assert_eq!(v["warnings"][0]["code"], "A105");
}

#[test]
fn include_cycles_are_errors_naming_the_chain() {
    let d = tree();
    d.write("cfg/routes/common.yaml", "- include: ../main.yaml\n");
    let out = d.run(&["validate", "--config", "cfg/main.yaml"]);
    assert_eq!(out.code, 1);
    assert_eq!(
        out.stderr,
        "cfg/routes/common.yaml:1:12: include cycle: cfg/main.yaml -> cfg/routes/common.yaml -> cfg/main.yaml\n1 error, 0 warnings\n"
    );
}

#[test]
fn includes_may_not_escape_the_root() {
    let d = tree();
    d.write("secret.yaml", "- name: x\n");
    d.write(
        "cfg/main.yaml",
        &MAIN.replace("routes/common.yaml", "../secret.yaml"),
    );
    let out = d.run(&["validate", "--config", "cfg/main.yaml"]);
    assert_eq!(out.code, 1);
    let root = std::fs::canonicalize(d.path().join("cfg")).expect("canonical");
    assert_eq!(
        out.stderr,
        format!(
            "cfg/main.yaml:8:22: include `../secret.yaml` escapes the include root `{}`\n1 error, 0 warnings\n",
            root.display()
        )
    );
    // A wider root allows it (and then the content is checked as usual).
    let out = d.run(&[
        "validate",
        "--config",
        "cfg/main.yaml",
        "--include-root",
        ".",
    ]);
    assert_eq!(out.code, 1);
    assert!(
        out.stderr
            .starts_with("secret.yaml:1:7: missing required key `match`"),
        "{}",
        out.stderr
    );
}

const TEMPLATE: &str = r#"listeners:
  - name: {{ name }}
    address: 127.0.0.1:{{ port }}
    virtual_hosts:
      - name: main
        domains: ["*"]
        routes:
{% for r in routes %}
          - name: {{ r.name }}
            match: { prefix: {{ r.prefix }} }
            direct_response: { status: {{ r.status }} }
{% endfor %}
"#;

#[test]
fn render_then_validate() {
    let d = Dir::new();
    d.write("t.yaml.j2", TEMPLATE).write(
        "vars.yaml",
        "name: web\nport: 0\nroutes:\n  - { name: a, prefix: /a/, status: 200 }\n",
    );
    let out = d.run(&[
        "render",
        "--template",
        "t.yaml.j2",
        "--vars",
        "vars.yaml",
        "-o",
        "out.yaml",
        "--validate",
    ]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(
        out.stdout,
        "out.yaml: ok (1 listeners, 0 clusters, 1 routes)\n"
    );
    // Invalid output is reported against the rendered file.
    d.write(
        "vars.yaml",
        "name: Web\nport: 0\nroutes:\n  - { name: a, prefix: /a/, status: 200 }\n",
    );
    let out = d.run(&[
        "render",
        "--template",
        "t.yaml.j2",
        "--vars",
        "vars.yaml",
        "--validate",
    ]);
    assert_eq!(out.code, 1);
    assert_eq!(out.stdout, "");
    assert_eq!(
        out.stderr,
        "t.yaml.j2 (rendered):2:11: listener name `Web` must match [a-z0-9_]+\n1 error, 0 warnings\n"
    );
}

#[test]
fn render_output_creates_missing_directories() {
    let d = Dir::new();
    d.write("t.yaml.j2", TEMPLATE).write(
        "vars.yaml",
        "name: web\nport: 0\nroutes:\n  - { name: a, prefix: /a/, status: 200 }\n",
    );
    let args = ["render", "--template", "t.yaml.j2", "--vars", "vars.yaml"];
    let out = d.run(&[&args[..], &["-o", "out/hosts/web-17.yaml", "--validate"]].concat());
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(
        out.stdout,
        "out/hosts/web-17.yaml: ok (1 listeners, 0 clusters, 1 routes)\n"
    );
}

#[test]
fn undefined_template_variables_point_at_the_template_line() {
    let out = Dir::new()
        .write("t.yaml.j2", TEMPLATE)
        .write("vars.yaml", "name: web\nroutes: []\n")
        .run(&["render", "--template", "t.yaml.j2", "--vars", "vars.yaml"]);
    assert_eq!(out.code, 1);
    assert_eq!(
        out.stderr,
        "t.yaml.j2:3:27: template error: undefined variable in `port`\n1 error, 0 warnings\n"
    );
}

#[test]
fn runaway_template_loops_and_recursion_fail_fast() {
    let d = Dir::new();
    d.write(
        "loop.j2",
        "a: 1\n{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}\n",
    )
    .write(
        "rec.j2",
        "a: 1\n{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}\nb: {{ f(0) }}\n",
    );
    let start = Instant::now();
    let out = d.run(&["render", "--template", "loop.j2"]);
    assert_eq!(out.code, 1);
    assert!(
        out.stderr.starts_with("loop.j2:2:") && out.stderr.contains("ran out of fuel"),
        "{}",
        out.stderr
    );
    let out = d.run(&["render", "--template", "rec.j2"]);
    assert_eq!(out.code, 1);
    assert!(out.stderr.starts_with("rec.j2:2:"), "{}", out.stderr);
    assert!(start.elapsed() < Duration::from_secs(20));
}
