//! A Thrift listener behind mTLS through the real binary: a framed-binary client over
//! rustls (the `thrift` crate on a `rustls::StreamOwned`) to a plain Thrift origin.

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use support::pki::{self, Leaf, Pki};
use support::thrift_peer::{start_origin, CallErr, Client, Protocol, Transport};
use support::Proxy;

/// Call `getUser(id)` over TLS (SNI `server.test`).
fn get_user_over_tls(
    addr: SocketAddr,
    cfg: Arc<rustls::ClientConfig>,
    id: i64,
) -> Result<String, CallErr> {
    let (p, t) = (Protocol::Binary, Transport::Framed);
    Client::connect_tls(addr, cfg, "server.test", p, t)
        .map_err(|e| CallErr::Other(e.to_string()))?
        .get_user(id)
}

#[tokio::test]
async fn thrift_listener_terminates_mtls() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = Pki::new(dir.path(), "main");
    let server = pki.issue("server", &Leaf::new("server").dns(&["server.test"]));
    let client = pki.issue(
        "client",
        &Leaf::new("client").uri(&["spiffe://example.org/ns/web/sa/frontend"]),
    );
    let origin = start_origin("user", Protocol::Binary, Transport::Framed).addr;
    let proxy = Proxy::start(&format!(
        r#"
listeners:
  - name: thrift_tls
    address: 127.0.0.1:0
    protocol: thrift
    tls:
      cert_chain: {}
      private_key: {}
      client_ca: {}
      allowed_client_sans: [{{ prefix: "spiffe://example.org/ns/web/" }}]
    thrift:
      transport: framed
      protocol: binary
      routes:
        - match: {{ method: getUser }}
          route: {{ cluster: users }}
clusters:
  - name: users
    endpoints: ["{origin}"]
"#,
        server.cert, server.key, pki.ca_path
    ));
    let addr = proxy.addr("thrift_tls");

    let call = |cfg: Arc<rustls::ClientConfig>| async move {
        let task = tokio::task::spawn_blocking(move || get_user_over_tls(addr, cfg, 42));
        tokio::time::timeout(Duration::from_secs(30), task)
            .await
            .expect("thrift call timed out")
            .expect("client task")
    };
    let reply = call(pki::client_config(&pki, Some(&client), &[]))
        .await
        .expect("thrift call over mTLS");
    assert_eq!(reply, "user:42");
    let refused = call(pki::client_config(&pki, None, &[])).await;
    assert!(
        refused.is_err(),
        "a client without a certificate got {refused:?}"
    );
    assert_eq!(proxy.tls_handshakes("thrift_tls", "ok").await, 1.0);
    assert_eq!(
        proxy.tls_handshakes("thrift_tls", "no_client_cert").await,
        1.0
    );
}
