//! Criterion benchmarks: Cookie header parsing, and the cookie_audit + sli +
//! web_security chain on a typical request/response.

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use attache_filters::cookie_audit::parse;
use attache_filters::{registry, Action, FactoryContext, HttpFilter, Services, Stats, StreamCtx};
use criterion::{criterion_group, criterion_main, Criterion};

const COOKIE: &str = "session=9f86d081884c7d659a2feaa0c55ad015; csrftoken=a3f9b2c1d4e5; \
                      theme=dark; _ga=GA1.2.1234567890.1600000000; lang=en-GB";

fn build(stats: &Stats, services: &Services, name: &str, yaml: &str) -> Arc<dyn HttpFilter> {
    let raw: serde_yaml::Value = serde_yaml::from_str(yaml).expect("bench yaml");
    let cx = FactoryContext {
        stats,
        listener: "web",
        tls: true,
        services,
    };
    registry::get(name)
        .expect("registered")
        .build(&raw, &cx)
        .expect("builds")
}

fn cookie_parsing(c: &mut Criterion) {
    c.bench_function("cookie_parse_typical_header", |b| {
        b.iter(|| parse::pairs(black_box(COOKIE.as_bytes())).count())
    });
    c.bench_function("set_cookie_parse", |b| {
        b.iter(|| {
            parse::set_cookie(black_box(
                b"session=abc; Path=/; Secure; HttpOnly; SameSite=Lax; Max-Age=3600".as_slice(),
            ))
        })
    });
}

fn chain(c: &mut Criterion) {
    let stats = Stats::new();
    let services = Services::default();
    let filters = [
        build(
            &stats,
            &services,
            "web_security",
            "csrf: { allowed_origins: [{ suffix: .example.com }] }",
        ),
        build(
            &stats,
            &services,
            "cookie_audit",
            "{ cookies: [{ name: session, max_lifetime: 30d }, { name: csrftoken }], \
               allowed: [theme, _ga, lang], mode: enforce, unknown: strip }",
        ),
        build(
            &stats,
            &services,
            "sli",
            "objectives: [{ name: web, routes: [web], target: 99.9, window: 30d }]",
        ),
    ];
    let route: Arc<str> = Arc::from("web");
    c.bench_function("chain_three_filters_post", |b| {
        b.iter(|| {
            let (mut req, ()) = http::Request::builder()
                .method("POST")
                .uri("/api/orders")
                .header("host", "www.example.com")
                .header("origin", "https://www.example.com")
                .header("sec-fetch-site", "same-origin")
                .header("cookie", COOKIE)
                .body(())
                .expect("request")
                .into_parts();
            let mut cx = StreamCtx {
                route: route.clone(),
                downstream_tls: true,
                method: req.method.clone(),
                ..Default::default()
            };
            for f in &filters {
                if let Action::Respond(r) = f.on_request(&mut req, &mut cx) {
                    black_box(r);
                }
            }
            let (mut rsp, ()) = http::Response::builder()
                .status(200)
                .header("content-type", "application/json")
                .header(
                    "set-cookie",
                    "session=abc; Path=/; Secure; HttpOnly; SameSite=Lax; Max-Age=3600",
                )
                .body(())
                .expect("response")
                .into_parts();
            cx.status = Some(rsp.status);
            for f in filters.iter().rev() {
                if let Action::Respond(r) = f.on_response(&mut rsp, &mut cx) {
                    black_box(r);
                }
            }
            cx.duration = Some(Duration::from_micros(850));
            for f in &filters {
                f.on_complete(&cx);
            }
            black_box(rsp)
        })
    });
    // The same request/response with no filters: what the chain adds is the
    // difference.
    c.bench_function("chain_baseline_no_filters", |b| {
        b.iter(|| {
            let (req, ()) = http::Request::builder()
                .method("POST")
                .uri("/api/orders")
                .header("host", "www.example.com")
                .header("origin", "https://www.example.com")
                .header("sec-fetch-site", "same-origin")
                .header("cookie", COOKIE)
                .body(())
                .expect("request")
                .into_parts();
            let cx = StreamCtx {
                route: route.clone(),
                method: req.method.clone(),
                ..Default::default()
            };
            let (rsp, ()) = http::Response::builder()
                .status(200)
                .header("content-type", "application/json")
                .header(
                    "set-cookie",
                    "session=abc; Path=/; Secure; HttpOnly; SameSite=Lax; Max-Age=3600",
                )
                .body(())
                .expect("response")
                .into_parts();
            black_box((req, cx, rsp))
        })
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(3));
    targets = cookie_parsing, chain
}
criterion_main!(benches);
