//! `attache test-routes`: a YAML file of requests and what must happen to each,
//! checked against the compiled config with [`super::explain::evaluate`]. Every
//! test runs; each mismatch shows expected and actual. Coverage lists the routes no
//! test reached.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use serde::Deserialize;

use super::explain::{self, Act, Outcome, RouteId};
use crate::config::load::{self, Diagnostic, SourceMap};
use crate::config::words::plural;
use crate::config::{duration, Snapshot};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct File {
    pub tests: Vec<Test>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Test {
    pub name: String,
    pub request: Req,
    pub expect: Expect,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Req {
    #[serde(default)]
    pub listener: Option<String>,
    #[serde(default)]
    pub host: Option<String>,
    #[serde(default)]
    pub path: Option<String>,
    /// HTTP method (default GET), or the Thrift method on a Thrift listener.
    #[serde(default)]
    pub method: Option<String>,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    #[serde(default)]
    pub query: BTreeMap<String, String>,
    /// Thrift: the multiplexed service.
    #[serde(default)]
    pub service: Option<String>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Expect {
    #[serde(default)]
    pub virtual_host: Option<String>,
    #[serde(default)]
    pub route: Option<String>,
    /// `true`: no route matches (404).
    #[serde(default)]
    pub no_route: Option<bool>,
    #[serde(default)]
    pub cluster: Option<String>,
    #[serde(default)]
    pub weighted_clusters: Option<BTreeMap<String, u64>>,
    /// The redirect's `Location`.
    #[serde(default)]
    pub redirect: Option<String>,
    /// The direct response's status.
    #[serde(default)]
    pub direct_response: Option<u16>,
    /// The status of a local reply (redirect, direct response, 404, 400).
    #[serde(default)]
    pub status: Option<u16>,
    /// The path sent upstream, after `prefix_rewrite`.
    #[serde(default)]
    pub rewritten_path: Option<String>,
    /// The filters that run for the request, in order.
    #[serde(default)]
    pub filters: Option<Vec<String>>,
    #[serde(default)]
    pub timeout: Option<String>,
}

/// One expectation that did not hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mismatch {
    pub field: &'static str,
    pub expected: String,
    pub actual: String,
    pub at: Diagnostic,
}

pub struct TestResult {
    pub name: String,
    pub at: Diagnostic,
    pub mismatches: Vec<Mismatch>,
}

pub struct Coverage {
    pub total: usize,
    pub reached: usize,
    /// (`listener/vhost/route`, position) of every route no test reached.
    pub unreached: Vec<(String, Diagnostic)>,
}

impl Coverage {
    pub fn percent(&self) -> f64 {
        if self.total == 0 {
            100.0
        } else {
            self.reached as f64 * 100.0 / self.total as f64
        }
    }
}

pub struct Report {
    pub results: Vec<TestResult>,
    pub coverage: Coverage,
}

/// Read and check a tests file: YAML with positions, unknown keys rejected.
pub fn read(path: &str) -> Result<(File, SourceMap), Vec<Diagnostic>> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        vec![Diagnostic {
            file: path.to_string(),
            line: 1,
            col: 1,
            message: format!("cannot read tests: {e}"),
        }]
    })?;
    let map = load::index(path, &text);
    let value = load::parse_yaml(path, &text).map_err(|d| vec![d])?;
    let file = load::deserialize_all::<File>(value, &map)?;
    Ok((file, map))
}

fn status_of(a: &Act) -> Option<u16> {
    match a {
        Act::NoRoute => Some(404),
        Act::Rejected(_) => Some(400),
        Act::Redirect { status, .. } | Act::Direct { status } => Some(*status),
        _ => None,
    }
}

fn weights_str(ws: &[(String, u64)]) -> String {
    let mut v: Vec<&(String, u64)> = ws.iter().collect();
    v.sort();
    v.iter()
        .map(|(c, w)| format!("{c}: {w}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Each expectation the test states, compared with what happened.
fn check(e: &Expect, o: &Outcome, map: &SourceMap, tp: &str, out: &mut Vec<Mismatch>) {
    let stated = [
        (
            "virtual_host",
            e.virtual_host
                .clone()
                .map(|v| (v, or_none(&o.virtual_host))),
        ),
        ("route", e.route.clone().map(|r| (r, or_none(&o.route)))),
        ("no_route", e.no_route.map(|n| (n.to_string(), no_route(o)))),
        (
            "cluster",
            e.cluster.clone().map(|c| (c, cluster(&o.action))),
        ),
        (
            "weighted_clusters",
            e.weighted_clusters
                .as_ref()
                .map(|ws| weighted(ws, &o.action)),
        ),
        (
            "redirect",
            e.redirect.clone().map(|r| (r, redirect(&o.action))),
        ),
        (
            "direct_response",
            e.direct_response
                .map(|s| (s.to_string(), direct(&o.action))),
        ),
        (
            "status",
            e.status.map(|s| (s.to_string(), status(&o.action))),
        ),
        (
            "rewritten_path",
            e.rewritten_path.clone().map(|p| (p, rewritten(o))),
        ),
        (
            "filters",
            e.filters
                .as_ref()
                .map(|f| (f.join(", "), o.filters.join(", "))),
        ),
        ("timeout", e.timeout.as_deref().map(|t| timeout(t, o))),
    ];
    for (field, pair) in stated {
        let Some((expected, actual)) = pair else {
            continue;
        };
        if expected != actual {
            out.push(Mismatch {
                field,
                expected,
                actual,
                at: map.diag(&format!("{tp}.expect.{field}"), ""),
            });
        }
    }
}

fn or_none(v: &Option<String>) -> String {
    v.clone().unwrap_or_else(|| "(none)".to_string())
}

fn no_route(o: &Outcome) -> String {
    if o.route.is_none() && matches!(o.action, Act::NoRoute) {
        "true".into()
    } else {
        format!("false (route {})", or_none(&o.route))
    }
}

/// The cluster the request goes to, else what happens instead.
fn cluster(a: &Act) -> String {
    match a {
        Act::Cluster(c) | Act::Tcp(c) => c.clone(),
        Act::ClusterHeader {
            resolved: Some(c), ..
        } => c.clone(),
        other => other.describe(),
    }
}

/// (expected, actual) weights, each sorted by cluster.
fn weighted(expected: &BTreeMap<String, u64>, a: &Act) -> (String, String) {
    let expected: Vec<(String, u64)> = expected.iter().map(|(c, w)| (c.clone(), *w)).collect();
    let actual = match a {
        Act::Weighted(ws) => weights_str(ws),
        other => other.describe(),
    };
    (weights_str(&expected), actual)
}

fn redirect(a: &Act) -> String {
    match a {
        Act::Redirect { location, .. } => location.clone(),
        other => other.describe(),
    }
}

fn direct(a: &Act) -> String {
    match a {
        Act::Direct { status } => status.to_string(),
        other => other.describe(),
    }
}

fn status(a: &Act) -> String {
    status_of(a).map_or_else(|| format!("proxied ({})", a.describe()), |s| s.to_string())
}

fn rewritten(o: &Outcome) -> String {
    o.upstream_path
        .clone()
        .unwrap_or_else(|| "(not proxied)".into())
}

/// (expected, actual) timeouts, both written the way configs write them.
fn timeout(t: &str, o: &Outcome) -> (String, String) {
    let expected = duration::parse(t)
        .map(duration::format)
        .unwrap_or_else(|_| t.to_string());
    (expected, o.timeout.map_or("none".into(), duration::format))
}

/// Every route of the compiled config, for coverage: (id, `listener/vhost/route`,
/// the route's path in the source).
pub fn all_routes(snap: &Snapshot) -> Vec<(RouteId, String, String)> {
    let mut out = Vec::new();
    for (li, l) in snap.listeners.iter().enumerate() {
        let vhosts = l.http.iter().flat_map(|h| h.router.vhosts.iter());
        for (vi, vh) in vhosts.enumerate() {
            for (ri, r) in vh.routes.iter().enumerate() {
                out.push((
                    RouteId {
                        listener: li,
                        vhost: Some(vi),
                        route: ri,
                    },
                    format!("{}/{}/{}", l.name, vh.name, r.name),
                    format!("listeners.{li}.virtual_hosts.{vi}.routes.{ri}"),
                ));
            }
        }
        let thrift = l.thrift.iter().flat_map(|t| t.routes().all().iter());
        for (ri, r) in thrift.enumerate() {
            out.push((
                RouteId {
                    listener: li,
                    vhost: None,
                    route: ri,
                },
                format!("{}/{}", l.name, r.name),
                format!("listeners.{li}.thrift.routes.{ri}"),
            ));
        }
    }
    out
}

/// Run every test.
pub fn run(snap: &Snapshot, cfg_map: &SourceMap, tests: &File, tests_map: &SourceMap) -> Report {
    let mut reached: BTreeSet<RouteId> = BTreeSet::new();
    let mut results = Vec::new();
    for (i, t) in tests.tests.iter().enumerate() {
        let tp = format!("tests.{i}");
        let mut path = t.request.path.clone().unwrap_or_else(|| "/".into());
        if path.is_empty() {
            path.push('/');
        }
        let rq = explain::Request {
            listener: t.request.listener.clone(),
            host: t.request.host.clone().unwrap_or_default(),
            path,
            method: t.request.method.clone(),
            headers: t
                .request
                .headers
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            query: t
                .request
                .query
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            service: t.request.service.clone(),
        };
        let mut mismatches = Vec::new();
        match explain::evaluate(snap, &rq) {
            Ok(o) => {
                if let Some(id) = &o.route_id {
                    reached.insert(id.clone());
                }
                check(&t.expect, &o, tests_map, &tp, &mut mismatches);
            }
            Err(e) => mismatches.push(Mismatch {
                field: "request",
                expected: "a valid request".into(),
                actual: e,
                at: tests_map.diag(&format!("{tp}.request"), ""),
            }),
        }
        results.push(TestResult {
            name: t.name.clone(),
            at: tests_map.diag_key(&format!("{tp}.name"), ""),
            mismatches,
        });
    }
    let all = all_routes(snap);
    let unreached = all
        .iter()
        .filter(|(id, _, _)| !reached.contains(id))
        .map(|(_, name, p)| (name.clone(), cfg_map.diag_key(&format!("{p}.name"), "")))
        .collect();
    Report {
        coverage: Coverage {
            total: all.len(),
            reached: all.iter().filter(|(id, _, _)| reached.contains(id)).count(),
            unreached,
        },
        results,
    }
}

fn loc(d: &Diagnostic) -> String {
    format!("{}:{}:{}", d.file, d.line, d.col)
}

impl Report {
    pub fn failed(&self) -> usize {
        self.results
            .iter()
            .filter(|r| !r.mismatches.is_empty())
            .count()
    }

    pub fn to_text(&self, coverage: bool) -> String {
        let mut s = String::new();
        for r in &self.results {
            if r.mismatches.is_empty() {
                let _ = writeln!(s, "PASS {}", r.name);
            } else {
                let _ = writeln!(s, "FAIL {} ({})", r.name, loc(&r.at));
                for m in &r.mismatches {
                    let _ = writeln!(s, "  {}:", m.field);
                    let _ = writeln!(s, "    expected: {}", m.expected);
                    let _ = writeln!(s, "    actual:   {}", m.actual);
                }
            }
        }
        let failed = self.failed();
        let _ = writeln!(
            s,
            "{}: {} passed, {} failed",
            plural(self.results.len(), "test"),
            self.results.len() - failed,
            failed
        );
        if coverage {
            let c = &self.coverage;
            let _ = writeln!(
                s,
                "coverage: {} of {} routes reached ({:.1}%)",
                c.reached,
                c.total,
                c.percent()
            );
            for (name, d) in &c.unreached {
                let _ = writeln!(s, "  not reached: {name} ({})", loc(d));
            }
        }
        s
    }

    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::json;
        let failed = self.failed();
        let mut diags = Vec::new();
        let tests: Vec<_> = self
            .results
            .iter()
            .map(|r| {
                for m in &r.mismatches {
                    diags.push(json!({
                        "file": m.at.file, "line": m.at.line, "column": m.at.col,
                        "severity": "error", "code": "route-test",
                        "message": format!("test `{}`: {}: expected {}, actual {}", r.name, m.field, m.expected, m.actual),
                    }));
                }
                json!({
                    "name": r.name,
                    "file": r.at.file, "line": r.at.line, "column": r.at.col,
                    "passed": r.mismatches.is_empty(),
                    "mismatches": r.mismatches.iter().map(|m| json!({
                        "field": m.field, "expected": m.expected, "actual": m.actual,
                        "line": m.at.line, "column": m.at.col,
                    })).collect::<Vec<_>>(),
                })
            })
            .collect();
        let c = &self.coverage;
        json!({
            "ok": failed == 0,
            "passed": self.results.len() - failed,
            "failed": failed,
            "tests": tests,
            "diagnostics": diags,
            "coverage": {
                "routes": c.total,
                "reached": c.reached,
                "percent": (c.percent() * 10.0).round() / 10.0,
                "unreached": c.unreached.iter().map(|(n, d)| json!({
                    "route": n, "file": d.file, "line": d.line, "column": d.col,
                })).collect::<Vec<_>>(),
            },
        })
    }
}
