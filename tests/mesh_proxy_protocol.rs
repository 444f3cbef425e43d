//! PROXY protocol through the real binary: curl's v1 header, raw v1/v2 bytes (IPv4,
//! IPv6, then TLS), malformed and missing headers closed and counted, sources outside
//! `allowed_sources` closed, a header on a listener that did not opt in answered 400,
//! and a TCP listener hashing on the carried address.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use support::pki::{self, Leaf, Pki};
use support::yaml::OneRoute;
use support::{curl, raw_exchange, Origin, Proxy};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const WAIT: Duration = Duration::from_secs(10);

fn v2(fam: u8, addrs: &[u8]) -> Vec<u8> {
    let mut v = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    v.push(0x21);
    v.push(fam);
    v.extend_from_slice(&(addrs.len() as u16).to_be_bytes());
    v.extend_from_slice(addrs);
    v
}

fn v2_ipv4(src: [u8; 4], sport: u16) -> Vec<u8> {
    let mut a = src.to_vec();
    a.extend_from_slice(&[127, 0, 0, 1]);
    a.extend_from_slice(&sport.to_be_bytes());
    a.extend_from_slice(&80u16.to_be_bytes());
    v2(0x11, &a)
}

const GET: &[u8] = b"GET /echo HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n";

/// The `x-forwarded-for` the origin received, from its JSON echo.
fn xff_of(rsp: &str) -> String {
    let body = rsp.split("\r\n\r\n").nth(1).unwrap_or("");
    let v: serde_json::Value = serde_json::from_str(body).unwrap_or_default();
    v["headers"]["x-forwarded-for"]
        .as_str()
        .unwrap_or("")
        .to_string()
}

fn http_config(origin: &Origin, extra: &str) -> String {
    format!(
        r#"
listeners:
  - name: pp
    address: 127.0.0.1:0
    proxy_protocol: true
    virtual_hosts:
      - name: all
        domains: ["*"]
        routes:
          - match: {{ prefix: / }}
            route: {{ cluster: web }}
  - name: plain
    address: 127.0.0.1:0
    virtual_hosts:
      - name: all
        domains: ["*"]
        routes:
          - match: {{ prefix: / }}
            route: {{ cluster: web }}
{extra}
clusters:
  - name: web
    endpoints: ["{}"]
"#,
        origin.addr
    )
}

async fn pp_stat(proxy: &Proxy, listener: &str, result: &str) -> f64 {
    proxy
        .stat_labels(
            "attache_downstream_proxy_protocol_total",
            &[("listener", listener), ("result", result)],
        )
        .await
}

#[tokio::test]
async fn curl_haproxy_protocol_v1_is_accepted() {
    let origin = Origin::start("web").await;
    let proxy = Proxy::start(&http_config(&origin, ""));
    let (ok, out) = curl(&["-sS", "--haproxy-protocol", &proxy.url("pp", "/echo")]).await;
    assert!(ok, "curl failed: {out}");
    assert!(out.contains("\"x-forwarded-for\":\"127.0.0.1\""), "{out}");
    assert_eq!(pp_stat(&proxy, "pp", "v1").await, 1.0);
}

#[tokio::test]
async fn carried_addresses_become_x_forwarded_for() {
    let origin = Origin::start("web").await;
    let proxy = Proxy::start(&http_config(&origin, ""));
    let addr = proxy.addr("pp");

    let mut v1 = b"PROXY TCP4 192.0.2.7 127.0.0.1 4000 80\r\n".to_vec();
    v1.extend_from_slice(GET);
    let rsp = raw_exchange(addr, &v1, WAIT).await;
    assert!(rsp.starts_with("HTTP/1.1 200"), "{rsp}");
    assert_eq!(xff_of(&rsp), "192.0.2.7");

    let mut wire = v2_ipv4([198, 51, 100, 9], 5000);
    wire.extend_from_slice(GET);
    let rsp = raw_exchange(addr, &wire, WAIT).await;
    assert_eq!(xff_of(&rsp), "198.51.100.9", "{rsp}");

    // IPv6, with a TLV after the addresses (skipped).
    let mut a = "2001:db8::5"
        .parse::<std::net::Ipv6Addr>()
        .expect("v6")
        .octets()
        .to_vec();
    a.extend_from_slice(&std::net::Ipv6Addr::LOCALHOST.octets());
    a.extend_from_slice(&[0x13, 0x88, 0x00, 0x50, 0x04, 0x00, 0x01, 0x00]);
    let mut wire = v2(0x21, &a);
    wire.extend_from_slice(GET);
    let rsp = raw_exchange(addr, &wire, WAIT).await;
    assert_eq!(xff_of(&rsp), "2001:db8::5", "{rsp}");

    // LOCAL (a load balancer's health check): the connection's own address.
    let mut local = b"\r\n\r\n\0\r\nQUIT\n\x20\x00\x00\x00".to_vec();
    local.extend_from_slice(GET);
    let rsp = raw_exchange(addr, &local, WAIT).await;
    assert_eq!(xff_of(&rsp), "127.0.0.1", "{rsp}");

    assert_eq!(pp_stat(&proxy, "pp", "v1").await, 1.0);
    assert_eq!(pp_stat(&proxy, "pp", "v2").await, 2.0);
    assert_eq!(pp_stat(&proxy, "pp", "local").await, 1.0);
    assert_eq!(origin.hits(), 4);
}

#[tokio::test]
async fn malformed_or_missing_headers_close_the_connection() {
    let origin = Origin::start("web").await;
    let proxy = Proxy::start(&http_config(&origin, ""));
    let addr = proxy.addr("pp");
    let mut bad_sig = v2_ipv4([10, 0, 0, 1], 1);
    bad_sig[9] = b'X';
    // Length says 8: too short for two IPv4 addresses and ports.
    let short = v2(0x11, &[10, 0, 0, 1, 127, 0, 0, 1]);
    let long_v1 = format!("PROXY TCP4 1.1.1.1 1.1.1.1 1 1{}\r\n", " ".repeat(80));
    let malformed: Vec<Vec<u8>> = vec![
        bad_sig,
        short,
        long_v1.into_bytes(),
        b"PROXY TCP4 1.1.1.1 1.1.1.1 01 2\r\n".to_vec(),
    ];
    for m in &malformed {
        let mut wire = m.clone();
        wire.extend_from_slice(GET);
        let rsp = raw_exchange(addr, &wire, WAIT).await;
        assert_eq!(rsp, "", "answered a malformed header {m:?}");
    }
    // A header cut short by the client's close.
    let mut truncated = v2_ipv4([10, 0, 0, 1], 1);
    truncated.truncate(20);
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    s.write_all(&truncated).await.expect("write");
    s.shutdown().await.expect("half-close");
    let mut out = Vec::new();
    let _ = tokio::time::timeout(WAIT, s.read_to_end(&mut out)).await;
    assert!(out.is_empty());
    let rsp = raw_exchange(addr, GET, WAIT).await;
    assert_eq!(rsp, "", "answered a request without a header");
    assert_eq!(
        pp_stat(&proxy, "pp", "malformed").await,
        malformed.len() as f64 + 1.0
    );
    assert_eq!(pp_stat(&proxy, "pp", "missing").await, 1.0);
    assert_eq!(origin.hits(), 0);
}

#[tokio::test]
async fn a_silent_client_is_closed_after_the_header_timeout() {
    let origin = Origin::start("web").await;
    let extra = r#"
  - name: slow
    address: 127.0.0.1:0
    proxy_protocol: { timeout: 200ms }
    virtual_hosts:
      - name: all
        domains: ["*"]
        routes:
          - match: { prefix: / }
            direct_response: { status: 200 }
"#;
    let proxy = Proxy::start(&http_config(&origin, extra));
    let mut s = tokio::net::TcpStream::connect(proxy.addr("slow"))
        .await
        .expect("connect");
    s.write_all(b"PROXY TCP4").await.expect("write");
    let mut buf = Vec::new();
    let n = tokio::time::timeout(WAIT, s.read_to_end(&mut buf))
        .await
        .expect("closed within the timeout");
    assert_eq!(n.unwrap_or(0), 0);
    assert_eq!(pp_stat(&proxy, "slow", "timeout").await, 1.0);
}

#[tokio::test]
async fn sources_outside_allowed_sources_are_closed() {
    let origin = Origin::start("web").await;
    let extra = r#"
  - name: lb_only
    address: 127.0.0.1:0
    proxy_protocol: { allowed_sources: [10.0.0.0/8] }
    virtual_hosts:
      - name: all
        domains: ["*"]
        routes:
          - match: { prefix: / }
            route: { cluster: web }
"#;
    let proxy = Proxy::start(&http_config(&origin, extra));
    let mut wire = v2_ipv4([10, 1, 1, 1], 1);
    wire.extend_from_slice(GET);
    let rsp = raw_exchange(proxy.addr("lb_only"), &wire, WAIT).await;
    assert_eq!(rsp, "");
    assert_eq!(pp_stat(&proxy, "lb_only", "not_allowed").await, 1.0);
    assert_eq!(origin.hits(), 0);
}

#[tokio::test]
async fn a_header_on_a_listener_that_did_not_opt_in_is_a_bad_request() {
    let origin = Origin::start("web").await;
    let proxy = Proxy::start(&http_config(&origin, ""));
    let mut wire = b"PROXY TCP4 192.0.2.7 127.0.0.1 4000 80\r\n".to_vec();
    wire.extend_from_slice(GET);
    let rsp = raw_exchange(proxy.addr("plain"), &wire, WAIT).await;
    assert!(rsp.starts_with("HTTP/1.1 400"), "{rsp}");
    let mut wire = v2_ipv4([192, 0, 2, 7], 4000);
    wire.extend_from_slice(GET);
    let rsp = raw_exchange(proxy.addr("plain"), &wire, WAIT).await;
    assert!(rsp.is_empty() || rsp.starts_with("HTTP/1.1 400"), "{rsp}");
    assert_eq!(pp_stat(&proxy, "plain", "unexpected").await, 2.0);
    assert_eq!(origin.hits(), 0);
}

#[tokio::test]
async fn v2_header_then_tls() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = Pki::new(dir.path(), "main");
    let server = pki.issue("server", &Leaf::new("server").dns(&["server.test"]));
    let origin = Origin::start("web").await;
    let tls = format!(
        "tls: {{ cert_chain: {}, private_key: {}, alpn: [http/1.1] }}",
        server.cert, server.key
    );
    let proxy = Proxy::start(
        &OneRoute::to(&[origin.addr])
            .names("pp_tls", "web")
            .listener_key("proxy_protocol: true")
            .listener_key(&tls)
            .yaml(),
    );
    let mut tcp = tokio::net::TcpStream::connect(proxy.addr("pp_tls"))
        .await
        .expect("connect");
    tcp.write_all(&v2_ipv4([203, 0, 113, 4], 6000))
        .await
        .expect("header");
    let cfg = pki::client_config(&pki, None, &["http/1.1"]);
    let name = rustls::pki_types::ServerName::try_from("server.test").expect("name");
    let rsp = tokio::time::timeout(WAIT, async {
        let mut tls = tokio_rustls::TlsConnector::from(cfg)
            .connect(name, tcp)
            .await
            .expect("tls after the PROXY header");
        tls.write_all(GET).await.expect("request");
        let mut out = Vec::new();
        let _ = tls.read_to_end(&mut out).await;
        String::from_utf8_lossy(&out).into_owned()
    })
    .await
    .expect("tls exchange timed out");
    assert_eq!(xff_of(&rsp), "203.0.113.4", "{rsp}");
}

/// A TCP origin that writes its name and closes.
async fn named_tcp_origin(name: &'static str) -> SocketAddr {
    support::serve_each(move |mut s| async move {
        let _ = s.write_all(name.as_bytes()).await;
    })
    .await
}

#[tokio::test]
async fn tcp_listener_hashes_on_the_carried_source() {
    let a = named_tcp_origin("a").await;
    let b = named_tcp_origin("b").await;
    let proxy = Proxy::start(&format!(
        r#"
listeners:
  - name: db
    address: 127.0.0.1:0
    protocol: tcp
    proxy_protocol: true
    tcp: {{ cluster: db }}
clusters:
  - name: db
    endpoints: ["{a}", "{b}"]
    lb_policy: ring_hash
    hash_on: {{ source_ip: true }}
"#
    ));
    let addr = proxy.addr("db");
    let mut seen = std::collections::BTreeSet::new();
    for last in 1..=16u8 {
        let header = format!("PROXY TCP4 192.0.2.{last} 127.0.0.1 4000 5432\r\n");
        let first = raw_exchange(addr, header.as_bytes(), WAIT).await;
        for _ in 0..3 {
            let again = raw_exchange(addr, header.as_bytes(), WAIT).await;
            assert_eq!(again, first, "source 192.0.2.{last} moved endpoints");
        }
        seen.insert(first);
    }
    // Different sources spread over both endpoints.
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert_eq!(pp_stat(&proxy, "db", "v1").await, 64.0);
}
