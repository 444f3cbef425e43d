use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::*;
use crate::server::Server;
use crate::stats::Stats;

const FILE: &str = "
admin: { address: 127.0.0.1:0 }
listeners:
  - name: web
    address: 127.0.0.1:0
    virtual_hosts:
      - name: all
        domains: ['*']
        routes:
          - match: { prefix: / }
            direct_response: { status: 200, body: static }
clusters:
  - name: app
    endpoints: ['127.0.0.1:9']
";

fn cluster(yaml: &str) -> raw::Cluster {
    serde_yaml::from_str(yaml).expect("raw cluster")
}

fn listener(yaml: &str) -> raw::Listener {
    serde_yaml::from_str(yaml).expect("raw listener")
}

fn config_file() -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("attache.yaml");
    std::fs::write(&path, FILE).expect("write");
    let p = path.to_string_lossy().into_owned();
    (dir, p)
}

fn load(path: &str, d: &Dynamic) -> Result<crate::config::Snapshot, Vec<Diagnostic>> {
    crate::config::load_file_source(
        path,
        &Stats::new(),
        &attache_filters::Services::default(),
        true,
        None,
        &|cfg, map| d.merge(cfg, map),
    )
    .map(|(s, _)| s)
}

fn err_text(r: Result<crate::config::Snapshot, Vec<Diagnostic>>) -> String {
    match r {
        Ok(_) => panic!("compiled"),
        Err(d) => nack_of(&d).to_string(),
    }
}

#[test]
fn xds_resources_compile_with_the_file() {
    let (_dir, path) = config_file();
    let mut d = Dynamic::default();
    d.clusters.insert(
        "api".into(),
        cluster("{ name: api, endpoints: ['127.0.0.1:10'] }"),
    );
    d.listeners.insert(
        "api_in".into(),
        listener("{ name: api_in, address: '127.0.0.1:0', virtual_hosts: [{ name: a, domains: ['*'], routes: [{ match: { prefix: / }, route: { cluster: api } }] }] }"),
    );
    let snap = load(&path, &d).expect("compiles");
    assert!(snap.clusters.contains_key("api") && snap.clusters.contains_key("app"));
    let names: Vec<&str> = snap.listeners.iter().map(|l| &*l.name).collect();
    assert_eq!(names, ["web", "api_in"]);
}

#[test]
fn a_name_the_file_uses_is_refused() {
    let (_dir, path) = config_file();
    let mut d = Dynamic::default();
    d.clusters.insert(
        "app".into(),
        cluster("{ name: app, endpoints: ['127.0.0.1:10'] }"),
    );
    assert_eq!(
        err_text(load(&path, &d)),
        "cds/app: config: cluster `app` is defined in the config file; xDS cannot replace it, rename one of them"
    );
}

#[test]
fn compile_errors_name_the_resource() {
    let (_dir, path) = config_file();
    let mut d = Dynamic::default();
    d.listeners.insert(
        "api_in".into(),
        listener("{ name: api_in, address: '127.0.0.1:0', virtual_hosts: [{ name: a, domains: ['*'], routes: [{ match: { prefix: / }, route: { cluster: nope } }] }] }"),
    );
    let text = err_text(load(&path, &d));
    assert!(
        text.starts_with("lds/api_in: config: route references unknown cluster `nope`"),
        "{text}"
    );
}

async fn get(addr: std::net::SocketAddr) -> String {
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    s.write_all(b"GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        .await
        .expect("write");
    let mut out = String::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_string(&mut out)).await;
    out
}

/// The swap a file reload does: an xDS listener binds and serves, a later set
/// without it stops it, a set that does not compile changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_dynamic_binds_swaps_and_keeps_the_last_good_state() {
    let (_dir, path) = config_file();
    let stats = Arc::new(Stats::new());
    let services = Arc::new(attache_filters::Services::default());
    let (snap, source) =
        crate::config::load_file_source(&path, &stats, &services, true, None, &|_, _| Vec::new())
            .expect("file compiles");
    let workers = vec![tokio::runtime::Handle::current()];
    let server = Server::new(
        path.clone(),
        snap,
        source,
        stats,
        services,
        workers,
        Box::new(|_| Ok(())),
    );
    server.bind_all().await.expect("bind");

    let mut d = Dynamic::default();
    d.listeners.insert(
        "dyn_in".into(),
        listener("{ name: dyn_in, address: '127.0.0.1:0', virtual_hosts: [{ name: a, domains: ['*'], routes: [{ match: { prefix: / }, direct_response: { status: 200, body: from-xds } }] }] }"),
    );
    server.apply_dynamic(d.clone()).await.expect("applies");
    let addr = |name: &str| {
        server
            .bound_addresses()
            .into_iter()
            .find(|(n, _)| n == name)
            .map(|(_, a)| a)
    };
    let dyn_addr = addr("dyn_in").expect("xds listener bound");
    assert!(get(dyn_addr).await.ends_with("from-xds"));

    // A set that does not compile: nothing changes.
    let mut bad = d.clone();
    bad.clusters.insert(
        "app".into(),
        cluster("{ name: app, endpoints: ['127.0.0.1:10'] }"),
    );
    assert!(server.apply_dynamic(bad).await.is_err());
    assert!(get(dyn_addr).await.ends_with("from-xds"));
    assert_eq!(server.xds_dynamic().listeners.len(), 1);

    // A file reload keeps the xDS listener.
    server.reload().await.expect("reload");
    assert_eq!(addr("dyn_in"), Some(dyn_addr));

    // A file broken on disk (edited, not applied) fails its reload but does not hold
    // xDS updates back: they compile with the config the running snapshot came from.
    std::fs::write(&path, "listeners: [").expect("break the file");
    assert!(server.reload().await.is_err());
    let mut more = d.clone();
    more.listeners.insert(
        "dyn_two".into(),
        listener("{ name: dyn_two, address: '127.0.0.1:0', virtual_hosts: [{ name: a, domains: ['*'], routes: [{ match: { prefix: / }, direct_response: { status: 200, body: two } }] }] }"),
    );
    server
        .apply_dynamic(more)
        .await
        .expect("applies with the file broken");
    let two = addr("dyn_two").expect("second xds listener bound");
    assert!(get(two).await.ends_with("two"));
    assert!(addr("web").is_some(), "the file's listener still serves");
    std::fs::write(&path, FILE).expect("fix the file");
    server.reload().await.expect("reload");
    assert_eq!(addr("dyn_two"), Some(two));

    // The listener leaves the xDS set: it stops.
    server
        .apply_dynamic(Dynamic::default())
        .await
        .expect("applies");
    assert_eq!(addr("dyn_in"), None);
    assert!(addr("web").is_some());
}
