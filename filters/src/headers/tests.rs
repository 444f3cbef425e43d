use super::*;
use crate::api::{HttpFilterFactory, StreamCtx};
use crate::registry;
use crate::stats::Stats;
use crate::FactoryContext;

fn build(yaml: &str) -> std::sync::Arc<dyn crate::HttpFilter> {
    let raw: serde_yaml::Value = serde_yaml::from_str(yaml).expect("yaml");
    let stats = Stats::new();
    let services = crate::Services::default();
    let cx = FactoryContext {
        stats: &stats,
        listener: "l",
        tls: false,
        services: &services,
    };
    registry::get("headers")
        .expect("registered")
        .build(&raw, &cx)
        .expect("builds")
}

#[test]
fn sets_adds_and_removes_request_headers() {
    let f = build("request: { set: { x-env: prod }, add: { via: attache }, remove: [x-debug] }");
    let (mut parts, ()) = http::Request::builder()
        .header("x-env", "dev")
        .header("via", "1.1 lb")
        .header("x-debug", "1")
        .body(())
        .expect("request")
        .into_parts();
    let mut cx = StreamCtx::default();
    assert!(matches!(
        f.on_request(&mut parts, &mut cx),
        crate::Action::Continue
    ));
    assert_eq!(parts.headers["x-env"], "prod");
    let via: Vec<_> = parts.headers.get_all("via").iter().collect();
    assert_eq!(via, ["1.1 lb", "attache"]);
    assert!(parts.headers.get("x-debug").is_none());
}

#[test]
fn edits_response_headers() {
    let f = build("response: { set: { cache-control: no-store }, remove: [server] }");
    let (mut parts, ()) = http::Response::builder()
        .header("server", "origin")
        .body(())
        .expect("response")
        .into_parts();
    let mut cx = StreamCtx::default();
    f.on_response(&mut parts, &mut cx);
    assert_eq!(parts.headers["cache-control"], "no-store");
    assert!(parts.headers.get("server").is_none());
}

#[test]
fn rejects_invalid_names_and_unknown_keys() {
    let cfg: Config = serde_yaml::from_str("request: { set: { 'bad name': x } }").expect("yaml");
    let errs = Factory::validate(&cfg);
    assert_eq!(errs.len(), 1);
    assert_eq!(
        errs[0].path,
        vec![
            crate::PathSeg::Key("request".into()),
            crate::PathSeg::Key("set".into()),
            crate::PathSeg::Key("bad name".into())
        ]
    );
    let raw: serde_yaml::Value = serde_yaml::from_str("requets: {}").expect("yaml");
    let errs = registry::get("headers").expect("registered").validate(&raw);
    assert_eq!(errs.len(), 1);
    assert!(errs[0].message.contains("unknown field"));
}
