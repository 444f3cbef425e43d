use std::collections::HashMap;
use std::sync::Arc;

use http::{HeaderMap, Method};

use super::*;

fn route(name: &str, path: PathMatch) -> Route {
    Route {
        name: Arc::from(name),
        matcher: Matcher {
            path,
            headers: vec![],
            query: vec![],
            methods: vec![],
            peer_san: None,
        },
        action: Action::Direct(DirectResponse {
            status: http::StatusCode::OK,
            body: bytes::Bytes::new(),
            content_type: http::HeaderValue::from_static("text/plain"),
        }),
        filters: Arc::from(Vec::new()),
        overrides: Box::default(),
        grpc: crate::http::grpc::RouteStats::new(
            crate::http::grpc::Vecs::new(&crate::stats::Stats::new()),
            "l",
            name,
        ),
        rbac: None,
    }
}

fn router(vhosts: Vec<(&str, Vec<&str>, Vec<Route>)>) -> Router {
    Router::new(
        vhosts
            .into_iter()
            .map(|(n, d, r)| {
                (
                    VirtualHost {
                        name: Arc::from(n),
                        routes: r,
                    },
                    d.into_iter().map(String::from).collect(),
                )
            })
            .collect(),
        Arc::new(HashMap::new()),
    )
}

fn view<'a>(
    host: &'a str,
    path: &'a str,
    query: Option<&'a str>,
    headers: &'a HeaderMap,
) -> RequestView<'a> {
    RequestView {
        host,
        path,
        query,
        headers,
        method: &Method::GET,
        peer_sans: &[],
    }
}

#[test]
fn virtual_hosts_first_match_in_config_order() {
    let r = router(vec![
        (
            "suffix",
            vec!["*.example.com"],
            vec![route("s", PathMatch::Prefix("/".into()))],
        ),
        (
            "exact",
            vec!["www.example.com"],
            vec![route("e", PathMatch::Prefix("/".into()))],
        ),
        (
            "any",
            vec!["*"],
            vec![route("a", PathMatch::Prefix("/".into()))],
        ),
    ]);
    assert_eq!(&*r.vhost("www.example.com").expect("vh").name, "suffix");
    assert_eq!(&*r.vhost("api.example.com").expect("vh").name, "suffix");
    assert_eq!(&*r.vhost("example.com").expect("vh").name, "any");
    assert_eq!(&*r.vhost("other.org").expect("vh").name, "any");
    let r = router(vec![("exact", vec!["a.com"], vec![])]);
    assert!(r.vhost("b.com").is_none());
}

#[test]
fn routes_match_prefix_exact_regex_first_wins() {
    let h = HeaderMap::new();
    let r = router(vec![(
        "v",
        vec!["*"],
        vec![
            route("exact", PathMatch::Exact("/a".into())),
            route(
                "rx",
                PathMatch::Regex(regex::Regex::new("^(?:/items/[0-9]+)$").expect("re")),
            ),
            route("prefix", PathMatch::Prefix("/a".into())),
        ],
    )]);
    let name = |p: &str| {
        r.route(&view("x", p, None, &h))
            .map(|(_, r)| r.name.to_string())
    };
    assert_eq!(name("/a").as_deref(), Some("exact"));
    assert_eq!(name("/ab").as_deref(), Some("prefix"));
    assert_eq!(name("/items/12").as_deref(), Some("rx"));
    assert_eq!(name("/items/12/x"), None);
}

#[test]
fn header_query_and_invert_matchers() {
    let mut m = route("m", PathMatch::Prefix("/".into()));
    m.matcher.headers.push(HeaderMatch {
        name: http::HeaderName::from_static("x-canary"),
        value: ValueMatch::Exact("1".into()),
        invert: false,
    });
    m.matcher.headers.push(HeaderMatch {
        name: http::HeaderName::from_static("x-block"),
        value: ValueMatch::Present(true),
        invert: true,
    });
    m.matcher.query.push(QueryMatch {
        name: "debug".into(),
        value: ValueMatch::Exact("on air".into()),
    });
    let r = router(vec![("v", vec!["*"], vec![m])]);
    let mut h = HeaderMap::new();
    h.insert("x-canary", "1".parse().expect("hv"));
    assert!(r
        .route(&view("x", "/", Some("a=1&debug=on%20air"), &h))
        .is_some());
    assert!(r.route(&view("x", "/", Some("debug=on+air"), &h)).is_some());
    assert!(r.route(&view("x", "/", Some("debug=off"), &h)).is_none());
    h.insert("x-block", "yes".parse().expect("hv"));
    assert!(r
        .route(&view("x", "/", Some("debug=on%20air"), &h))
        .is_none());
}

#[test]
fn query_param_decodes_and_tolerates_garbage() {
    assert_eq!(
        query_param(Some("a=1&b=%41%zz&c"), "b").as_deref(),
        Some("A%zz")
    );
    assert_eq!(query_param(Some("a=1&c"), "c").as_deref(), Some(""));
    assert_eq!(query_param(Some("a=%"), "a").as_deref(), Some("%"));
    assert_eq!(query_param(None, "a"), None);
}

#[test]
fn retry_policy_statuses() {
    let p = RetryPolicy {
        attempts: 1,
        on_5xx: false,
        on_gateway_error: true,
        on_connect_failure: false,
        on_reset: false,
        statuses: vec![409],
        per_try_timeout: None,
        grpc_codes: 1 << 14,
    };
    assert!(p.retry_status(503));
    assert!(p.retry_status(409));
    assert!(!p.retry_status(500));
    let head = |code: &'static str| {
        let mut h = HeaderMap::new();
        h.insert("grpc-status", http::HeaderValue::from_static(code));
        h
    };
    assert!(p.retry_grpc(&head("14")));
    assert!(!p.retry_grpc(&head("13")));
    assert!(!p.retry_grpc(&HeaderMap::new()));
}
