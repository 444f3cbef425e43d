//! RBAC through the real binary: HTTP over mTLS with real client certificates
//! (allowed SAN passes, other SANs get 403 and the origin sees nothing; a route's
//! policy replaces the listener's; shadow mode forwards and counts), a Thrift method
//! denied with a TApplicationException, and TCP connections closed, including one
//! judged on its PROXY-protocol source.

mod support;

use std::time::Duration;

use support::pki::{Issued, Leaf, Pki};
use support::thrift_peer::{
    start_origin, ApplicationErrorKind, CallErr, Client, Protocol, Transport,
};
use support::{blocking, curl, raw_exchange, Origin, Proxy};

const WAIT: Duration = Duration::from_secs(10);

struct Mtls {
    _dir: tempfile::TempDir,
    pki: Pki,
    server: Issued,
    web: Issued,
    batch: Issued,
}

fn mtls() -> Mtls {
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = Pki::new(dir.path(), "main");
    let server = pki.issue("server", &Leaf::new("server").dns(&["server.test"]));
    let web = pki.issue(
        "web",
        &Leaf::new("web").uri(&["spiffe://example.org/ns/web/sa/frontend"]),
    );
    let batch = pki.issue(
        "batch",
        &Leaf::new("batch").uri(&["spiffe://example.org/ns/batch/sa/jobs"]),
    );
    Mtls {
        _dir: dir,
        pki,
        server,
        web,
        batch,
    }
}

/// `curl` over mTLS as `client`; (status, body).
async fn call(proxy: &Proxy, m: &Mtls, client: &Issued, method: &str, path: &str) -> (u16, String) {
    let port = proxy.addr("mesh").port();
    let url = format!("https://server.test:{port}{path}");
    let resolve = format!("server.test:{port}:127.0.0.1");
    let (ok, out) = curl(&[
        "-S",
        "-X",
        method,
        "--cacert",
        &m.pki.ca_path,
        "--cert",
        &client.cert,
        "--key",
        &client.key,
        "--resolve",
        &resolve,
        "-w",
        "\n%{http_code}",
        &url,
    ])
    .await;
    assert!(ok, "curl failed: {out}");
    let (body, code) = out.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

fn mesh_config(m: &Mtls, origin: &Origin, mode: &str) -> String {
    format!(
        r#"
listeners:
  - name: mesh
    address: 127.0.0.1:0
    tls:
      cert_chain: {cert}
      private_key: {key}
      client_ca: {ca}
      require_client_cert: true
    rbac:
      mode: {mode}
      policies:
        - name: web_reads
          principals: [{{ peer_san: {{ prefix: "spiffe://example.org/ns/web/" }} }}]
          permissions: [{{ methods: [GET, HEAD], prefix: /api/ }}]
    virtual_hosts:
      - name: all
        domains: ["*"]
        routes:
          - match: {{ prefix: /admin/ }}
            route: {{ cluster: web }}
            rbac:
              action: deny
              policies:
                - name: no_batch
                  principals: [{{ peer_san: "spiffe://example.org/ns/batch/sa/jobs" }}]
          - match: {{ prefix: / }}
            route: {{ cluster: web }}
clusters:
  - name: web
    endpoints: ["{origin}"]
"#,
        cert = m.server.cert,
        key = m.server.key,
        ca = m.pki.ca_path,
        origin = origin.addr,
    )
}

async fn rbac_stat(proxy: &Proxy, listener: &str, policy: &str, result: &str) -> f64 {
    proxy
        .stat_labels(
            "attache_rbac_total",
            &[
                ("listener", listener),
                ("policy", policy),
                ("result", result),
            ],
        )
        .await
}

#[tokio::test]
async fn peer_san_decides_over_mtls() {
    let m = mtls();
    let origin = Origin::start("web").await;
    let proxy = Proxy::start(&mesh_config(&m, &origin, "enforce"));

    let (status, body) = call(&proxy, &m, &m.web, "GET", "/api/users").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(origin.hits(), 1);

    let (status, body) = call(&proxy, &m, &m.batch, "GET", "/api/users").await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body, "rbac: access denied\n");
    let (status, _) = call(&proxy, &m, &m.web, "POST", "/api/users").await;
    assert_eq!(status, 403, "POST is not in the web policy");
    assert_eq!(origin.hits(), 1, "a denied request reached the origin");

    assert_eq!(rbac_stat(&proxy, "mesh", "web_reads", "allowed").await, 1.0);
    assert_eq!(rbac_stat(&proxy, "mesh", "none", "denied").await, 2.0);
    let flagged = proxy
        .stat_labels(
            "attache_local_reply_total",
            &[("listener", "mesh"), ("flag", "RBAC")],
        )
        .await;
    assert_eq!(flagged, 2.0);
}

#[tokio::test]
async fn a_route_policy_replaces_the_listeners() {
    let m = mtls();
    let origin = Origin::start("web").await;
    let proxy = Proxy::start(&mesh_config(&m, &origin, "enforce"));
    // The listener would refuse a POST; the route's deny list only names batch.
    let (status, _) = call(&proxy, &m, &m.web, "POST", "/admin/flush").await;
    assert_eq!(status, 200);
    let (status, _) = call(&proxy, &m, &m.batch, "GET", "/admin/flush").await;
    assert_eq!(status, 403);
    assert_eq!(origin.hits(), 1);
    assert_eq!(rbac_stat(&proxy, "mesh", "no_batch", "denied").await, 1.0);
    assert_eq!(rbac_stat(&proxy, "mesh", "none", "allowed").await, 1.0);
}

#[tokio::test]
async fn shadow_mode_forwards_and_counts() {
    let m = mtls();
    let origin = Origin::start("web").await;
    let proxy = Proxy::start(&mesh_config(&m, &origin, "shadow"));
    let (status, _) = call(&proxy, &m, &m.batch, "GET", "/api/users").await;
    assert_eq!(status, 200);
    assert_eq!(origin.hits(), 1);
    assert_eq!(
        rbac_stat(&proxy, "mesh", "none", "shadow_denied").await,
        1.0
    );
    assert_eq!(rbac_stat(&proxy, "mesh", "none", "denied").await, 0.0);
}

#[tokio::test]
async fn thrift_method_denied_is_an_application_exception() {
    let origin = start_origin("users", Protocol::Binary, Transport::Framed);
    let proxy = Proxy::start(&format!(
        r#"
listeners:
  - name: users_in
    address: 127.0.0.1:0
    protocol: thrift
    rbac:
      policies:
        - name: reads
          permissions: [{{ method: getUser }}]
    thrift:
      routes:
        - match: {{}}
          route: {{ cluster: users }}
clusters:
  - name: users
    endpoints: ["{}"]
"#,
        origin.addr
    ));
    let addr = proxy.addr("users_in");
    let (denied, after) = blocking(move || {
        let mut c = Client::connect(addr, Protocol::Binary, Transport::Framed, None);
        let denied = c.ping();
        let after = c.get_user(7);
        (denied, after)
    })
    .await;
    assert!(
        matches!(denied, Err(CallErr::App(ApplicationErrorKind::Unknown))),
        "{denied:?}"
    );
    assert_eq!(
        after.ok().as_deref(),
        Some("users:7"),
        "the connection stays usable"
    );
    assert_eq!(rbac_stat(&proxy, "users_in", "none", "denied").await, 1.0);
    assert_eq!(rbac_stat(&proxy, "users_in", "reads", "allowed").await, 1.0);
}

#[tokio::test]
async fn tcp_denied_connections_are_closed_unforwarded() {
    let origin = Origin::start("db").await;
    let proxy = Proxy::start(&format!(
        r#"
listeners:
  - name: db_direct
    address: 127.0.0.1:0
    protocol: tcp
    tcp: {{ cluster: db }}
    rbac:
      policies:
        - name: app_subnet
          principals: [{{ source_ip: 10.0.0.0/8 }}]
  - name: db_behind_lb
    address: 127.0.0.1:0
    protocol: tcp
    proxy_protocol: true
    tcp: {{ cluster: db }}
    rbac:
      policies:
        - name: app_subnet
          principals: [{{ source_ip: 10.0.0.0/8 }}]
clusters:
  - name: db
    endpoints: ["{}"]
"#,
        origin.addr
    ));
    let get = b"GET / HTTP/1.1\r\nHost: db\r\nConnection: close\r\n\r\n";
    // 127.0.0.1 is not in 10.0.0.0/8: closed before any upstream connect.
    let rsp = raw_exchange(proxy.addr("db_direct"), get, WAIT).await;
    assert_eq!(rsp, "");
    let mut wire = b"PROXY TCP4 192.0.2.1 127.0.0.1 1 5432\r\n".to_vec();
    wire.extend_from_slice(get);
    assert_eq!(
        raw_exchange(proxy.addr("db_behind_lb"), &wire, WAIT).await,
        ""
    );
    assert_eq!(origin.conns(), 0);

    // The load balancer says the client is 10.1.2.3: allowed.
    let mut wire = b"PROXY TCP4 10.1.2.3 127.0.0.1 1 5432\r\n".to_vec();
    wire.extend_from_slice(get);
    let rsp = raw_exchange(proxy.addr("db_behind_lb"), &wire, WAIT).await;
    assert!(rsp.starts_with("HTTP/1.1 200"), "{rsp}");
    assert_eq!(rbac_stat(&proxy, "db_direct", "none", "denied").await, 1.0);
    assert_eq!(
        rbac_stat(&proxy, "db_behind_lb", "none", "denied").await,
        1.0
    );
    assert_eq!(
        rbac_stat(&proxy, "db_behind_lb", "app_subnet", "allowed").await,
        1.0
    );
}

#[test]
fn bad_rbac_and_proxy_protocol_keys_are_located() {
    let yaml = r#"
listeners:
  - name: users_in
    address: 127.0.0.1:0
    protocol: thrift
    proxy_protocol: { allowed_sources: [10.1.0.0/8], timeout: 0s }
    rbac:
      policies:
        - name: reads
          principals: [{}, { source_ip: 300.0.0.1 }]
          permissions: [{ methods: [GET] }]
        - name: reads
    thrift:
      routes:
        - route: { cluster: users }
clusters:
  - name: users
    endpoints: ["127.0.0.1:9"]
"#;
    let (code, out, _) = support::validate("rbac.yaml", yaml);
    assert_eq!(code, 1, "{out}");
    for (line, col, what) in [
        (6, 41, "has host bits set; write `10.0.0.0/8`"),
        (6, 63, "timeout must be greater than 0s"),
        (
            10,
            24,
            "a principal needs `peer_san`, `source_ip` or `authenticated`",
        ),
        (10, 41, "`300.0.0.1` is not an IP address or CIDR"),
        (
            11,
            27,
            "`methods` does not apply to a thrift listener; its permissions take service, method",
        ),
        (12, 17, "duplicate policy name `reads`"),
    ] {
        let want = format!("rbac.yaml:{line}:{col}: error: {what}");
        assert!(
            out.lines()
                .any(|l| l.contains(&format!(":{line}:{col}:")) && l.contains(what)),
            "missing {want} in:\n{out}"
        );
    }
}
