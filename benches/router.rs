//! Route matching on compiled tables of 100 and 1,000 routes.
//!
//! The tables are generated as YAML text and compiled through
//! `attache::config::load_str`, the same path `attache run` takes, so the matchers
//! are exactly the ones the proxy builds. Each table has one large virtual host
//! (`www.example.com`, N routes) next to a few small ones (exact, `*.suffix` and `*`
//! domains), and the large one mixes prefix and exact-path routes with a few header
//! and regex matchers. For each table we time a hit on route 1 (near the start), on
//! route N/2 (middle), on route N-1 (end), and a miss that walks every route.
//!
//! Run: `cargo bench --bench router` (about 3 s per case).

use std::fmt::Write as _;
use std::hint::black_box;
use std::time::Duration;

use anyhow::{anyhow, ensure, Context, Result};
use attache::config::{load_str, Snapshot};
use attache::router::{RequestView, Router};
use attache::stats::Stats;
use attache_filters::Services;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use http::{HeaderMap, HeaderName, HeaderValue, Method};

/// The host of the large virtual host.
const HOST: &str = "www.example.com";

/// What kind of matcher route `i` of the large virtual host gets.
enum Kind {
    Prefix,
    Exact,
    Header,
    Regex,
}

fn kind(i: usize) -> Kind {
    match i % 20 {
        19 => Kind::Regex,
        9 => Kind::Header,
        3 | 7 | 13 | 17 => Kind::Exact,
        _ => Kind::Prefix,
    }
}

/// A config with one listener whose large virtual host has `n` routes.
fn yaml(n: usize) -> String {
    let mut y = String::from(
        "admin: { address: 127.0.0.1:0 }\n\
         listeners:\n\
         \x20 - name: bench\n\
         \x20   address: 127.0.0.1:0\n\
         \x20   virtual_hosts:\n",
    );
    // Small virtual hosts before and after the large one, so the host lookup
    // sees exact, suffix and wildcard domains.
    small_vhost(&mut y, "internal", "[api.internal, api.internal.example]");
    small_vhost(&mut y, "mesh", "[\"*.svc.cluster.local\"]");
    let _ = writeln!(
        y,
        "      - name: www\n        domains: [\"{HOST}\", example.com]\n        routes:"
    );
    for i in 0..n {
        let m = match kind(i) {
            Kind::Prefix => format!("{{ prefix: /svc{i}/ }}"),
            Kind::Exact => format!("{{ path: /exact/{i} }}"),
            Kind::Header => {
                format!("{{ prefix: /hdr{i}/, headers: [{{ name: x-tenant, exact: t{i} }}] }}")
            }
            Kind::Regex => format!("{{ regex: \"^/re/{i}/[0-9]+/(view|edit)$\" }}"),
        };
        let _ = writeln!(
            y,
            "          - name: r{i}\n            match: {m}\n            route: {{ cluster: backend }}"
        );
    }
    small_vhost(&mut y, "fallback", "[\"*\"]");
    y.push_str(
        "clusters:\n\
         \x20 - name: backend\n\
         \x20   endpoints: [\"127.0.0.1:1\"]\n",
    );
    y
}

fn small_vhost(y: &mut String, name: &str, domains: &str) {
    let _ = writeln!(
        y,
        "      - name: {name}\n        domains: {domains}\n        routes:"
    );
    for i in 0..8 {
        let _ = writeln!(
            y,
            "          - match: {{ prefix: /{name}{i}/ }}\n            route: {{ cluster: backend }}"
        );
    }
}

/// A request (path, headers) that matches route `i` of the large virtual host and
/// no route before it.
fn request_for(i: usize) -> (String, HeaderMap) {
    let mut headers = HeaderMap::new();
    headers.insert(http::header::USER_AGENT, HeaderValue::from_static("bench"));
    headers.insert(http::header::ACCEPT, HeaderValue::from_static("*/*"));
    let path = match kind(i) {
        Kind::Prefix => format!("/svc{i}/items/42"),
        Kind::Exact => format!("/exact/{i}"),
        Kind::Header => {
            let v = HeaderValue::from_str(&format!("t{i}")).unwrap_or(HeaderValue::from_static(""));
            headers.insert(HeaderName::from_static("x-tenant"), v);
            format!("/hdr{i}/items/42")
        }
        Kind::Regex => format!("/re/{i}/12345/edit"),
    };
    (path, headers)
}

fn compile(n: usize) -> Result<Snapshot> {
    let text = yaml(n);
    let stats = Stats::new();
    let services = Services::default();
    let lookup = |_: &str| None;
    let (snap, _) =
        load_str("bench.yaml", &text, &lookup, &stats, &services, false).map_err(|diags| {
            let msgs: Vec<String> = diags.iter().map(|d| d.to_string()).collect();
            anyhow!("generated config is invalid:\n{}", msgs.join("\n"))
        })?;
    Ok(snap)
}

fn router(snap: &Snapshot) -> Result<&Router> {
    let l = snap.listeners.first().context("no listener")?;
    Ok(&l.http.as_ref().context("not an http listener")?.router)
}

/// Checks that the request for `expect` (None: a miss) routes where we think.
fn check(router: &Router, path: &str, headers: &HeaderMap, expect: Option<usize>) -> Result<()> {
    let got = router
        .route(&RequestView {
            host: HOST,
            path,
            query: None,
            headers,
            method: &Method::GET,
            peer_sans: &[],
        })
        .map(|(_, r)| r.name.to_string());
    ensure!(
        got == expect.map(|i| format!("r{i}")),
        "{path} routed to {got:?}, expected r{expect:?}"
    );
    Ok(())
}

fn bench_tables(c: &mut Criterion) {
    for n in [100usize, 1000] {
        let snap = match compile(n) {
            Ok(s) => s,
            Err(e) => panic!("{e:#}"),
        };
        let Ok(router) = router(&snap) else {
            panic!("the generated config has no http listener")
        };
        let cases: [(&str, Option<usize>); 4] = [
            ("hit_start", Some(1)),
            ("hit_middle", Some(n / 2)),
            ("hit_end", Some(n - 1)),
            ("miss", None),
        ];
        let mut group = c.benchmark_group(format!("route/{n}"));
        for (label, target) in cases {
            let (path, headers) = match target {
                Some(i) => request_for(i),
                None => ("/nothing/here/42".to_string(), request_for(0).1),
            };
            if let Err(e) = check(router, &path, &headers, target) {
                panic!("{e:#}");
            }
            let method = Method::GET;
            group.bench_function(BenchmarkId::from_parameter(label), |b| {
                b.iter(|| {
                    let rq = RequestView {
                        host: black_box(HOST),
                        path: black_box(path.as_str()),
                        query: None,
                        headers: &headers,
                        method: &method,
                        peer_sans: &[],
                    };
                    black_box(router.route(&rq).map(|(_, r)| r.name.len()))
                })
            });
        }
        group.finish();
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    targets = bench_tables
}
criterion_main!(benches);
