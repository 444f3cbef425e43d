//! TLS, mTLS and the TCP proxy through the real binary: curl, `openssl s_client` and a
//! rustls client against listeners whose certificates are generated per run.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use support::pki::{self, Issued, Leaf, Pki};
use support::yaml::{OneRoute, Routes};
use support::{eventually, Origin, Proxy};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const FRONTEND: &str = "spiffe://example.org/ns/web/sa/frontend";
const BATCH: &str = "spiffe://example.org/ns/batch/sa/job";
const EDGE: &str = "spiffe://example.org/ns/edge/sa/proxy";
const T: Duration = Duration::from_secs(15);

/// One CA and the certificates most tests use.
struct Certs {
    dir: tempfile::TempDir,
    pki: Pki,
    server: Issued,
    frontend: Issued,
}

impl Certs {
    fn new() -> Certs {
        let dir = tempfile::tempdir().expect("tempdir");
        let pki = Pki::new(dir.path(), "main");
        let server = pki.issue(
            "server",
            &Leaf::new("attache-server").dns(&["server.test", "localhost"]),
        );
        let frontend = pki.issue("frontend", &Leaf::new("frontend").uri(&[FRONTEND]));
        Certs {
            dir,
            pki,
            server,
            frontend,
        }
    }

    /// Replace `@CA@`, `@CERT@`, `@KEY@` (the server pair) in a config.
    fn fill(&self, yaml: &str) -> String {
        yaml.replace("@CA@", &self.pki.ca_path)
            .replace("@CERT@", &self.server.cert)
            .replace("@KEY@", &self.server.key)
    }
}

/// The result of one curl: (exit ok, status, http version, body).
struct Curl {
    ok: bool,
    status: u16,
    version: String,
    body: String,
}

impl Curl {
    fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not json ({e}): {}", self.body))
    }
    fn origin_header(&self, name: &str) -> Option<String> {
        self.json()["headers"][name].as_str().map(str::to_string)
    }
}

/// `curl https://server.test:PORT<path>` pinned to `addr`, trusting `ca`.
async fn curl_https(addr: SocketAddr, path: &str, ca: &str, extra: &[&str]) -> Curl {
    let resolve = format!("server.test:{}:127.0.0.1", addr.port());
    let url = format!("https://server.test:{}{}", addr.port(), path);
    let mut args = vec![
        "--resolve",
        &resolve,
        "--cacert",
        ca,
        "-w",
        "\n%{http_code} %{http_version}",
    ];
    args.extend_from_slice(extra);
    args.push(&url);
    let (ok, out) = support::curl(&args).await;
    let (body, tail) = out.rsplit_once('\n').unwrap_or(("", &out));
    let mut it = tail.split_whitespace();
    let status = it.next().and_then(|s| s.parse().ok()).unwrap_or(0);
    let version = it.next().unwrap_or("").to_string();
    Curl {
        ok,
        status,
        version,
        body: body.to_string(),
    }
}

fn client_args(c: &Issued) -> [&str; 4] {
    ["--cert", &c.cert, "--key", &c.key]
}

fn mtls_config(certs: &Certs, origin: &Origin) -> String {
    let yaml = OneRoute::to(&[origin.addr])
        .names("mtls", "origin")
        .listener_key(
            r#"tls:
  cert_chain: @CERT@
  private_key: @KEY@
  client_ca: @CA@
  allowed_client_sans: [{ prefix: "spiffe://example.org/ns/web/" }]"#,
        )
        .yaml();
    certs.fill(&yaml)
}

/// Listener `name` with `tls` (flow style; `@CERT@`-style names that
/// `Certs::fill` replaces) answering every request itself: 200 and `body`.
fn answering(name: &str, tls: &str, body: &str) -> String {
    let route =
        format!("- match: {{ prefix: / }}\n  direct_response: {{ status: 200, body: {body:?} }}");
    Routes::new(&route)
        .names(name, "all")
        .listener_key(&format!("tls: {tls}"))
        .yaml()
}

#[tokio::test]
async fn mtls_client_cert_reaches_origin_with_xfcc() {
    let certs = Certs::new();
    let origin = Origin::start("svc").await;
    let proxy = Proxy::start(&mtls_config(&certs, &origin));
    let addr = proxy.addr("mtls");

    let forged = "x-forwarded-client-cert: By=spiffe://evil;URI=spiffe://example.org/ns/admin";
    let mut extra = client_args(&certs.frontend).to_vec();
    extra.extend(["-H", forged]);
    let r = curl_https(addr, "/hello", &certs.pki.ca_path, &extra).await;
    assert!(r.ok, "curl failed: {}", r.body);
    assert_eq!(r.status, 200, "{}", r.body);
    let xfcc = r
        .origin_header("x-forwarded-client-cert")
        .expect("origin sees xfcc");
    assert!(xfcc.contains(&format!("URI={FRONTEND}")), "{xfcc}");
    assert!(xfcc.contains("Hash="), "{xfcc}");
    // RFC 2253 order: the last RDN (O, after CN in the certificate) first.
    assert!(
        xfcc.contains("Subject=\"O=attache tests,CN=frontend\""),
        "{xfcc}"
    );
    assert!(!xfcc.contains("evil"), "forged value forwarded: {xfcc}");
    assert_eq!(
        r.origin_header("x-forwarded-proto").as_deref(),
        Some("https")
    );

    assert_eq!(proxy.tls_handshakes("mtls", "ok").await, 1.0);
    let expiry = proxy
        .stat_labels(
            "attache_tls_cert_expiry_timestamp_seconds",
            &[("listener", "mtls"), ("cert", "default")],
        )
        .await;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs() as f64;
    assert!(expiry > now, "expiry gauge {expiry} not in the future");
}

#[tokio::test]
async fn mtls_rejects_bad_clients_in_the_handshake() {
    let certs = Certs::new();
    let other = Pki::new(certs.dir.path(), "other");
    let foreign = other.issue("foreign", &Leaf::new("foreign").uri(&[FRONTEND]));
    let expired = certs
        .pki
        .issue("expired", &Leaf::new("expired").uri(&[FRONTEND]).expired());
    let batch = certs.pki.issue("batch", &Leaf::new("batch").uri(&[BATCH]));
    let origin = Origin::start("svc").await;
    let proxy = Proxy::start(&mtls_config(&certs, &origin));
    let addr = proxy.addr("mtls");
    let ca = certs.pki.ca_path.clone();

    let cases: [(&str, Vec<&str>, &str); 4] = [
        ("no client cert", vec![], "no_client_cert"),
        (
            "other ca",
            client_args(&foreign).to_vec(),
            "bad_client_cert",
        ),
        ("expired", client_args(&expired).to_vec(), "bad_client_cert"),
        (
            "san not allowed",
            client_args(&batch).to_vec(),
            "san_denied",
        ),
    ];
    for (what, args, _) in &cases {
        let r = curl_https(addr, "/", &ca, args).await;
        assert!(
            !r.ok && r.status == 0,
            "{what}: expected a failed handshake, got {} {}",
            r.status,
            r.body
        );
    }
    // The rustls client sees the same for a missing client certificate.
    let cfg = pki::client_config(&certs.pki, None, &["http/1.1"]);
    let rejected = async {
        let tcp = tokio::net::TcpStream::connect(addr).await?;
        let name = rustls::pki_types::ServerName::try_from("server.test").expect("name");
        let mut s = tokio_rustls::TlsConnector::from(cfg)
            .connect(name, tcp)
            .await?;
        // TLS 1.3: the server's verdict arrives after the client's Finished.
        s.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n").await?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await?;
        std::io::Result::Ok(buf)
    };
    if let Ok(buf) = tokio::time::timeout(T, rejected)
        .await
        .expect("rustls client")
    {
        assert!(
            !String::from_utf8_lossy(&buf).starts_with("HTTP/"),
            "served without a client cert"
        );
    }
    assert_eq!(origin.hits(), 0, "a rejected client reached the upstream");

    for (result, want) in [
        ("no_client_cert", 2.0),
        ("bad_client_cert", 2.0),
        ("san_denied", 1.0),
    ] {
        let got = eventually(T, result, || async {
            let v = proxy.tls_handshakes("mtls", result).await;
            (v >= want).then_some(v)
        })
        .await;
        assert_eq!(got, want, "{result}");
    }

    // A good client is still served.
    let r = curl_https(addr, "/", &ca, &client_args(&certs.frontend)).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(origin.hits(), 1);
}

#[tokio::test]
async fn plaintext_listener_strips_forged_xfcc() {
    let origin = Origin::start("svc").await;
    let proxy = Proxy::start(&OneRoute::to(&[origin.addr]).names("plain", "origin").yaml());
    let r = support::get(
        &proxy.url("plain", "/"),
        &[(
            "x-forwarded-client-cert",
            "URI=spiffe://example.org/ns/admin",
        )],
    )
    .await;
    assert_eq!(r.status, 200);
    let v: serde_json::Value = serde_json::from_slice(&r.body).expect("json");
    assert!(
        v["headers"].get("x-forwarded-client-cert").is_none(),
        "forged xfcc reached the origin: {v}"
    );
}

#[tokio::test]
async fn forward_client_cert_policies() {
    let certs = Certs::new();
    let origin = Origin::start("svc").await;
    let listener = |name: &str, policy: &str, require: bool| {
        format!(
            r#"
  - name: {name}
    address: 127.0.0.1:0
    tls:
      cert_chain: @CERT@
      private_key: @KEY@
      client_ca: @CA@
      require_client_cert: {require}
      forward_client_cert: {policy}
    virtual_hosts:
      - name: all
        domains: ["*"]
        routes:
          - match: {{ prefix: / }}
            route: {{ cluster: origin }}"#
        )
    };
    let yaml = format!(
        "listeners:{}{}{}{}\nclusters:\n  - name: origin\n    endpoints: [\"{}\"]\n",
        listener("sanitize", "sanitize", true),
        listener("sanitize_set", "sanitize_set", true),
        listener("append", "append_forward", true),
        listener("append_optional", "append_forward", false),
        origin.addr
    );
    let proxy = Proxy::start(&certs.fill(&yaml));
    let ca = certs.pki.ca_path.clone();
    let forged =
        "x-forwarded-client-cert: By=spiffe://upstream-hop;URI=spiffe://example.org/ns/hop";
    let with_cert = {
        let mut v = client_args(&certs.frontend).to_vec();
        v.extend(["-H", forged]);
        v
    };

    let r = curl_https(proxy.addr("sanitize"), "/", &ca, &with_cert).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.origin_header("x-forwarded-client-cert"), None);

    let r = curl_https(proxy.addr("sanitize_set"), "/", &ca, &with_cert).await;
    let xfcc = r.origin_header("x-forwarded-client-cert").expect("xfcc");
    assert!(
        xfcc.starts_with("Hash=") && xfcc.contains(&format!("URI={FRONTEND}")),
        "{xfcc}"
    );
    assert!(!xfcc.contains("hop"), "{xfcc}");

    let r = curl_https(proxy.addr("append"), "/", &ca, &with_cert).await;
    let xfcc = r.origin_header("x-forwarded-client-cert").expect("xfcc");
    let (first, ours) = xfcc.split_once(",Hash=").expect("appended element");
    assert_eq!(
        first,
        "By=spiffe://upstream-hop;URI=spiffe://example.org/ns/hop"
    );
    assert!(ours.contains(&format!("URI={FRONTEND}")), "{xfcc}");

    // append_forward trusts the incoming header only from a verified client.
    let r = curl_https(proxy.addr("append_optional"), "/", &ca, &["-H", forged]).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.origin_header("x-forwarded-client-cert"), None);
}

#[tokio::test]
async fn alpn_h2_negotiated_and_served() {
    let certs = Certs::new();
    let origin = Origin::start("svc").await;
    let yaml = OneRoute::to(&[origin.addr])
        .names("tls", "origin")
        .listener_key("tls: { cert_chain: @CERT@, private_key: @KEY@ }")
        .yaml();
    let proxy = Proxy::start(&certs.fill(&yaml));
    let addr = proxy.addr("tls");
    let ca = certs.pki.ca_path.clone();

    let r = curl_https(addr, "/h2", &ca, &["--http2"]).await;
    assert_eq!((r.status, r.version.as_str()), (200, "2"), "{}", r.body);
    assert_eq!(r.json()["path"], "/h2");

    let r = curl_https(addr, "/h1", &ca, &["--http1.1"]).await;
    assert_eq!((r.status, r.version.as_str()), (200, "1.1"), "{}", r.body);

    let (_, out) = pki::s_client(
        addr,
        &["-servername", "server.test", "-alpn", "h2,http/1.1"],
    )
    .await;
    assert!(out.contains("ALPN protocol: h2"), "{out}");
    // No XFCC on a TLS listener without client certs.
    assert_eq!(r.origin_header("x-forwarded-client-cert"), None);
}

#[tokio::test]
async fn sni_picks_the_certificate() {
    let certs = Certs::new();
    let api = certs
        .pki
        .issue("api", &Leaf::new("api-cert").dns(&["api.test"]));
    let wild = certs
        .pki
        .issue("wild", &Leaf::new("wild-cert").dns(&["*.wild.test"]));
    let yaml = certs
        .fill(
            r#"
listeners:
  - name: sni
    address: 127.0.0.1:0
    protocol: tcp
    tcp: { cluster: nowhere }
    tls:
      cert_chain: @CERT@
      private_key: @KEY@
      certificates:
        - { server_names: [api.test], cert_chain: @API@, private_key: @APIKEY@ }
        - { server_names: ["*.wild.test"], cert_chain: @WILD@, private_key: @WILDKEY@ }
clusters:
  - name: nowhere
    endpoints: ["127.0.0.1:9"]
"#,
        )
        .replace("@APIKEY@", &api.key)
        .replace("@API@", &api.cert)
        .replace("@WILDKEY@", &wild.key)
        .replace("@WILD@", &wild.cert);
    let proxy = Proxy::start(&yaml);
    let addr = proxy.addr("sni");
    let ca = certs.pki.ca_path.clone();

    for (sni, cn) in [
        ("api.test", "api-cert"),
        ("a.wild.test", "wild-cert"),
        ("server.test", "attache-server"),
        ("unknown.test", "attache-server"),
    ] {
        let (_, out) = pki::s_client(addr, &["-servername", sni, "-CAfile", &ca]).await;
        assert!(
            out.contains(&format!("CN = {cn},")) || out.contains(&format!("CN={cn},")),
            "sni {sni}: expected {cn}:\n{out}"
        );
    }
    // A rustls client agrees.
    let cfg = pki::client_config(&certs.pki, None, &[]);
    let der = pki::server_cert(addr, cfg, "api.test")
        .await
        .expect("handshake");
    assert_eq!(der, api.der);
}

/// A TLS origin that requires client certificates: a second attache with an mTLS
/// listener in front of a plain origin.
fn tls_origin_config(certs: &Certs, origin: &Origin) -> String {
    let tls = "tls:
  cert_chain: @CERT@
  private_key: @KEY@
  client_ca: @CA@
  alpn: [http/1.1]";
    certs.fill(
        &OneRoute::to(&[origin.addr])
            .names("origin_tls", "svc")
            .listener_key(tls)
            .yaml(),
    )
}

#[tokio::test]
async fn upstream_mtls_to_origin_that_requires_client_certs() {
    let certs = Certs::new();
    let edge = certs.pki.issue("edge", &Leaf::new("edge").uri(&[EDGE]));
    let svc = Origin::start("svc").await;
    let origin = Proxy::start(&tls_origin_config(&certs, &svc));
    let target = origin.addr("origin_tls");
    let yaml = certs
        .fill(&format!(
            r#"
listeners:
  - name: out
    address: 127.0.0.1:0
    virtual_hosts:
      - name: all
        domains: ["*"]
        routes:
          - match: {{ prefix: /mtls/ }}
            route: {{ cluster: mtls }}
          - match: {{ prefix: /nocert/ }}
            route: {{ cluster: nocert }}
          - match: {{ prefix: /wrongsan/ }}
            route: {{ cluster: wrongsan }}
clusters:
  - name: mtls
    endpoints: ["{target}"]
    tls:
      ca: @CA@
      sni: server.test
      verify_sans: [server.test]
      cert_chain: @EDGE@
      private_key: @EDGEKEY@
  - name: nocert
    endpoints: ["{target}"]
    tls: {{ ca: @CA@, sni: server.test }}
  - name: wrongsan
    endpoints: ["{target}"]
    tls:
      ca: @CA@
      sni: server.test
      verify_sans: [billing.test]
      cert_chain: @EDGE@
      private_key: @EDGEKEY@
"#
        ))
        .replace("@EDGEKEY@", &edge.key)
        .replace("@EDGE@", &edge.cert);
    let proxy = Proxy::start(&yaml);

    let r = support::get(&proxy.url("out", "/mtls/x"), &[]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let v: serde_json::Value = serde_json::from_slice(&r.body).expect("json");
    let xfcc = v["headers"]["x-forwarded-client-cert"]
        .as_str()
        .expect("the origin sees the edge identity");
    assert!(xfcc.contains(&format!("URI={EDGE}")), "{xfcc}");
    assert_eq!(
        proxy
            .stat_labels(
                "attache_tls_cluster_handshake_total",
                &[("cluster", "mtls"), ("result", "ok")]
            )
            .await,
        1.0
    );

    // Without a client certificate the origin refuses the handshake. Under TLS 1.3
    // the refusal arrives after the client's Finished, so it surfaces as a reset.
    let r = support::get(&proxy.url("out", "/nocert/x"), &[]).await;
    assert!(matches!(r.status, 502 | 503), "{} {}", r.status, r.text());

    // The origin's certificate does not carry the SAN the cluster wants: 503 UF.
    let before = svc.hits();
    let r = support::get(&proxy.url("out", "/wrongsan/x"), &[]).await;
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(svc.hits(), before, "nothing may reach the origin");
    assert_eq!(
        proxy
            .stat_labels(
                "attache_local_reply_total",
                &[("listener", "out"), ("flag", "UF")]
            )
            .await,
        1.0
    );
    assert!(
        proxy
            .stat_labels(
                "attache_upstream_cx_connect_fail_total",
                &[("cluster", "wrongsan")]
            )
            .await
            >= 1.0
    );
    assert!(
        proxy
            .stat_labels(
                "attache_tls_cluster_handshake_total",
                &[("cluster", "wrongsan"), ("result", "failed")]
            )
            .await
            >= 1.0
    );
}

/// Write `contents` to `path` atomically (temp file + rename).
fn replace_file(path: &str, contents: &str) {
    support::write_atomically(std::path::Path::new(path), contents);
}

#[tokio::test]
async fn server_cert_rotation_without_restart() {
    let certs = Certs::new();
    let proxy = Proxy::start(&certs.fill(&answering(
        "tls",
        "{ cert_chain: @CERT@, private_key: @KEY@ }",
        "ok\n",
    )));
    let addr = proxy.addr("tls");
    let cfg = pki::client_config(&certs.pki, None, &["http/1.1"]);
    let seen = pki::server_cert(addr, cfg.clone(), "server.test")
        .await
        .expect("handshake");
    assert_eq!(seen, certs.server.der);

    // A keep-alive connection opened before the rotation keeps working after it.
    let mut kept = {
        let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let name = rustls::pki_types::ServerName::try_from("server.test").expect("name");
        tokio::time::timeout(
            T,
            tokio_rustls::TlsConnector::from(cfg.clone()).connect(name, tcp),
        )
        .await
        .expect("handshake timed out")
        .expect("handshake")
    };
    assert!(keepalive_get(&mut kept).await.starts_with("HTTP/1.1 200"));

    let (v2_cert, v2_key, v2_der) = certs
        .pki
        .make(&Leaf::new("attache-server-v2").dns(&["server.test"]));
    replace_file(&certs.server.key, &v2_key);
    replace_file(&certs.server.cert, &v2_cert);
    eventually(Duration::from_secs(10), "the rotated certificate", || {
        let cfg = cfg.clone();
        let v2 = v2_der.clone();
        async move {
            let der = pki::server_cert(addr, cfg, "server.test").await.ok()?;
            (der == v2).then_some(())
        }
    })
    .await;
    let ok = proxy
        .stat_labels(
            "attache_tls_reload_total",
            &[("listener", "tls"), ("result", "ok")],
        )
        .await;
    assert!(ok >= 1.0, "reload ok = {ok}");

    // A broken replacement (a certificate that does not match the key) is refused
    // and counted; handshakes keep the v2 certificate.
    let failed_before = proxy
        .stat_labels(
            "attache_tls_reload_total",
            &[("listener", "tls"), ("result", "failed")],
        )
        .await;
    let (v3_cert, _, _) = certs
        .pki
        .make(&Leaf::new("attache-server-v3").dns(&["server.test"]));
    replace_file(&certs.server.cert, &v3_cert);
    eventually(Duration::from_secs(10), "a failed reload", || async {
        let v = proxy
            .stat_labels(
                "attache_tls_reload_total",
                &[("listener", "tls"), ("result", "failed")],
            )
            .await;
        (v > failed_before).then_some(())
    })
    .await;
    let der = pki::server_cert(addr, cfg.clone(), "server.test")
        .await
        .expect("still serving");
    assert_eq!(der, v2_der, "a broken replacement must not be used");
    let r = curl_https(addr, "/", &certs.pki.ca_path, &[]).await;
    assert_eq!(r.status, 200);
    assert!(proxy.log().contains("tls reload failed"));
    // The connection from before both changes is still served.
    assert!(keepalive_get(&mut kept).await.starts_with("HTTP/1.1 200"));
}

/// One `GET /` on an open HTTP/1.1 connection whose answer is `ok\n`; the raw reply.
async fn keepalive_get<S>(s: &mut S) -> String
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let fut = async {
        s.write_all(b"GET / HTTP/1.1\r\nhost: server.test\r\n\r\n")
            .await?;
        let mut out = Vec::new();
        let mut buf = [0u8; 1024];
        while !out.ends_with(b"\r\n\r\nok\n") {
            let n = s.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            out.extend_from_slice(&buf[..n]);
        }
        std::io::Result::Ok(String::from_utf8_lossy(&out).into_owned())
    };
    tokio::time::timeout(T, fut)
        .await
        .expect("keep-alive request timed out")
        .expect("keep-alive request")
}

#[tokio::test]
async fn peer_san_selects_the_route() {
    let certs = Certs::new();
    let admin = certs.pki.issue(
        "admin",
        &Leaf::new("admin").uri(&["spiffe://example.org/ns/admin/sa/ops"]),
    );
    let routes = r#"
- name: admins
  match: { prefix: /, peer_san: { prefix: "spiffe://example.org/ns/admin/" } }
  direct_response: { status: 200, body: "admin" }
- name: others
  match: { prefix: / }
  direct_response: { status: 403, body: "not admin" }"#;
    let proxy = Proxy::start(
        &certs.fill(
            &Routes::new(routes)
                .names("mtls", "all")
                .listener_key("tls: { cert_chain: @CERT@, private_key: @KEY@, client_ca: @CA@ }")
                .yaml(),
        ),
    );
    let addr = proxy.addr("mtls");
    let ca = certs.pki.ca_path.clone();
    let r = curl_https(addr, "/x", &ca, &client_args(&admin)).await;
    assert_eq!((r.status, r.body.as_str()), (200, "admin"));
    let r = curl_https(addr, "/x", &ca, &client_args(&certs.frontend)).await;
    assert_eq!((r.status, r.body.as_str()), (403, "not admin"));
}

/// A TCP origin that reads until EOF, then answers `echo:<all>` and closes: the
/// reply only comes after the client's half-close made it through.
async fn half_close_echo() -> SocketAddr {
    support::serve_each(move |mut s| async move {
        let mut buf = Vec::new();
        if s.read_to_end(&mut buf).await.is_ok() {
            let mut out = b"echo:".to_vec();
            out.extend_from_slice(&buf);
            let _ = s.write_all(&out).await;
            let _ = s.shutdown().await;
        }
    })
    .await
}

/// Write `msg`, half-close, read the reply to EOF.
async fn tcp_round_trip(addr: SocketAddr, msg: &[u8]) -> Vec<u8> {
    let fut = async {
        let mut s = tokio::net::TcpStream::connect(addr).await?;
        s.write_all(msg).await?;
        s.shutdown().await?;
        let mut out = Vec::new();
        s.read_to_end(&mut out).await?;
        std::io::Result::Ok(out)
    };
    tokio::time::timeout(T, fut)
        .await
        .expect("tcp round trip timed out")
        .expect("tcp round trip")
}

#[tokio::test]
async fn tcp_proxy_round_trip_with_half_close() {
    let echo = half_close_echo().await;
    let proxy = Proxy::start(&format!(
        r#"
listeners:
  - name: db
    address: 127.0.0.1:0
    protocol: tcp
    tcp: {{ cluster: echo }}
clusters:
  - name: echo
    endpoints: ["{echo}"]
"#
    ));
    let msg = vec![b'x'; 256 * 1024];
    let out = tcp_round_trip(proxy.addr("db"), &msg).await;
    assert_eq!(out.len(), msg.len() + 5);
    assert!(out.starts_with(b"echo:xxx"));
}

#[tokio::test]
async fn tcp_proxy_over_mtls_both_sides_with_half_close() {
    let certs = Certs::new();
    let edge = certs.pki.issue("edge", &Leaf::new("edge").uri(&[EDGE]));
    let echo = half_close_echo().await;
    // Terminates mTLS in front of the echo service.
    let inner = Proxy::start(&certs.fill(&format!(
        r#"
listeners:
  - name: db_tls
    address: 127.0.0.1:0
    protocol: tcp
    tcp: {{ cluster: echo }}
    tls:
      cert_chain: @CERT@
      private_key: @KEY@
      client_ca: @CA@
      allowed_client_sans: ["{EDGE}"]
clusters:
  - name: echo
    endpoints: ["{echo}"]
"#
    )));
    // Originates mTLS for plain-text local clients.
    let outer = Proxy::start(
        &certs
            .fill(&format!(
                r#"
listeners:
  - name: db
    address: 127.0.0.1:0
    protocol: tcp
    tcp: {{ cluster: db_tls }}
clusters:
  - name: db_tls
    endpoints: ["{}"]
    tls:
      ca: @CA@
      sni: server.test
      verify_sans: [server.test]
      cert_chain: @EDGE@
      private_key: @EDGEKEY@
"#,
                inner.addr("db_tls")
            ))
            .replace("@EDGEKEY@", &edge.key)
            .replace("@EDGE@", &edge.cert),
    );
    let msg = b"select 1;\n".repeat(10_000);
    let out = tcp_round_trip(outer.addr("db"), &msg).await;
    assert_eq!(out.len(), msg.len() + 5);
    assert!(out.starts_with(b"echo:select 1;"));
    assert_eq!(inner.tls_handshakes("db_tls", "ok").await, 1.0);

    // A client without a certificate is refused by the inner TLS listener.
    let cfg = pki::client_config(&certs.pki, None, &[]);
    let refused = async {
        let tcp = tokio::net::TcpStream::connect(inner.addr("db_tls")).await?;
        let name = rustls::pki_types::ServerName::try_from("server.test").expect("name");
        let mut s = tokio_rustls::TlsConnector::from(cfg)
            .connect(name, tcp)
            .await?;
        s.write_all(b"hello").await?;
        s.shutdown().await?;
        let mut out = Vec::new();
        s.read_to_end(&mut out).await?;
        std::io::Result::Ok(out)
    };
    let got = tokio::time::timeout(T, refused)
        .await
        .expect("refusal timed out");
    assert!(
        got.map(|o| o.is_empty()).unwrap_or(true),
        "a client without a certificate got an echo"
    );
}

#[tokio::test]
async fn bad_clients_on_a_tls_port_are_closed_and_counted() {
    let certs = Certs::new();
    let proxy = Proxy::start(&certs.fill(&answering(
        "tls",
        "{ cert_chain: @CERT@, private_key: @KEY@, handshake_timeout: 1s }",
        "ok\n",
    )));
    let addr = proxy.addr("tls");

    // A client that connects and never speaks holds only its own connection.
    let stalled = tokio::net::TcpStream::connect(addr).await.expect("connect");

    let plain = support::raw_exchange(addr, b"GET / HTTP/1.1\r\nhost: x\r\n\r\n", T).await;
    assert!(
        !plain.starts_with("HTTP/"),
        "plain http was served: {plain}"
    );
    let garbage = support::raw_exchange(addr, &[0xff; 64], T).await;
    assert!(!garbage.contains("HTTP/"));
    // A ClientHello record header promising 512 bytes, then EOF.
    let truncated = async {
        let mut s = tokio::net::TcpStream::connect(addr).await?;
        s.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01]).await?;
        s.shutdown().await?;
        let mut out = Vec::new();
        s.read_to_end(&mut out).await?;
        std::io::Result::Ok(out)
    };
    let truncated = tokio::time::timeout(T, truncated)
        .await
        .expect("truncated hello");
    assert!(truncated.map(|o| !o.starts_with(b"HTTP/")).unwrap_or(true));
    let (ok, out) = pki::s_client(
        addr,
        &[
            "-tls1_1",
            "-cipher",
            "DEFAULT:@SECLEVEL=0",
            "-servername",
            "server.test",
        ],
    )
    .await;
    assert!(!ok, "TLS 1.1 handshake succeeded:\n{out}");

    // Everyone else is served meanwhile.
    let r = curl_https(addr, "/", &certs.pki.ca_path, &["--http2"]).await;
    assert_eq!((r.status, r.body.as_str()), (200, "ok\n"));

    let n = eventually(T, "protocol errors counted", || async {
        let v = proxy.tls_handshakes("tls", "protocol_error").await;
        (v >= 4.0).then_some(v)
    })
    .await;
    assert_eq!(n, 4.0, "{}", proxy.admin_get("/stats?filter=tls").await.1);
    let timeouts = eventually(T, "the stalled handshake timing out", || async {
        let v = proxy.tls_handshakes("tls", "timeout").await;
        (v >= 1.0).then_some(v)
    })
    .await;
    assert_eq!(timeouts, 1.0);
    // The stalled connection was closed by the proxy.
    let mut stalled = stalled;
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(T, stalled.read(&mut buf))
        .await
        .expect("closed after the handshake timeout");
    assert!(matches!(n, Ok(0) | Err(_)));
    assert_eq!(proxy.tls_handshakes("tls", "ok").await, 1.0);
}

#[tokio::test]
async fn http2_cluster_over_tls_negotiates_h2_upstream() {
    let certs = Certs::new();
    let svc = Origin::start("svc").await;
    let log_dir = tempfile::tempdir().expect("tempdir");
    let access = log_dir.path().join("inner-access.log");
    let inner = OneRoute::to(&[svc.addr])
        .names("inner", "svc")
        .listener_key("tls: { cert_chain: @CERT@, private_key: @KEY@ }")
        .listener_key(&format!(
            "access_log: {{ path: \"{}\", format: json }}",
            access.display()
        ))
        .yaml();
    let inner = Proxy::start(&certs.fill(&inner));
    let outer = OneRoute::to(&[inner.addr("inner")])
        .names("out", "inner")
        .cluster_key("protocol: http2\ntls: { ca: @CA@, sni: server.test }")
        .yaml();
    let outer = Proxy::start(&certs.fill(&outer));
    for i in 0..3 {
        let r = support::get(&outer.url("out", &format!("/h2/{i}")), &[]).await;
        assert_eq!(r.status, 200, "{}", r.text());
    }
    let lines = eventually(T, "three access log lines", || {
        let access = access.clone();
        async move {
            let text = std::fs::read_to_string(&access).ok()?;
            let lines: Vec<serde_json::Value> = text
                .lines()
                .filter_map(|l| serde_json::from_str(l).ok())
                .collect();
            (lines.len() >= 3).then_some(lines)
        }
    })
    .await;
    for l in &lines {
        assert_eq!(l["protocol"], "HTTP/2", "{l}");
    }
    // One TLS connection carries every request (h2 multiplexing / reuse).
    assert_eq!(inner.tls_handshakes("inner", "ok").await, 1.0);
}

#[tokio::test]
async fn config_reload_keeps_serving_tls() {
    let certs = Certs::new();
    let yaml = |body: &str| {
        certs.fill(&answering(
            "tls",
            "{ cert_chain: @CERT@, private_key: @KEY@ }",
            body,
        ))
    };
    let proxy = Proxy::start(&yaml("one"));
    let addr = proxy.addr("tls");
    let ca = certs.pki.ca_path.clone();
    let r = curl_https(addr, "/", &ca, &[]).await;
    assert_eq!((r.status, r.body.as_str()), (200, "one"));

    let with_admin = std::fs::read_to_string(&proxy.config_path).expect("config");
    let admin_line = with_admin.lines().take(2).collect::<Vec<_>>().join("\n");
    std::fs::write(&proxy.config_path, format!("{admin_line}\n{}", yaml("two"))).expect("write");
    let (status, body) = proxy.admin_post("/reload").await;
    assert_eq!(status, 200, "{body}");
    let r = curl_https(addr, "/", &ca, &[]).await;
    assert_eq!((r.status, r.body.as_str()), (200, "two"));
    // The handshake counter carries on across the reload.
    assert_eq!(proxy.tls_handshakes("tls", "ok").await, 2.0);
}

#[tokio::test]
async fn client_ca_rotation_admits_the_new_ca() {
    let certs = Certs::new();
    let next = Pki::new(certs.dir.path(), "next");
    let newcomer = next.issue("newcomer", &Leaf::new("newcomer").uri(&[FRONTEND]));
    // The listener trusts its own copy of the CA bundle, which the test rotates.
    let bundle = certs.dir.path().join("client-ca-bundle.pem");
    std::fs::copy(&certs.pki.ca_path, &bundle).expect("copy ca");
    let yaml = certs
        .fill(&answering(
            "mtls",
            "{ cert_chain: @CERT@, private_key: @KEY@, client_ca: @BUNDLE@ }",
            "in",
        ))
        .replace("@BUNDLE@", &bundle.display().to_string());
    let proxy = Proxy::start(&yaml);
    let addr = proxy.addr("mtls");
    let ca = certs.pki.ca_path.clone();

    let r = curl_https(addr, "/", &ca, &client_args(&newcomer)).await;
    assert!(
        !r.ok && r.status == 0,
        "a client of the new CA got in early"
    );
    let r = curl_https(addr, "/", &ca, &client_args(&certs.frontend)).await;
    assert_eq!((r.status, r.body.as_str()), (200, "in"));

    // Trust both CAs during the changeover.
    let both = format!(
        "{}{}",
        std::fs::read_to_string(&certs.pki.ca_path).expect("ca"),
        std::fs::read_to_string(&next.ca_path).expect("next ca")
    );
    replace_file(&bundle.display().to_string(), &both);
    eventually(Duration::from_secs(10), "the new CA trusted", || {
        let (ca, newcomer) = (ca.clone(), newcomer.clone());
        async move {
            let r = curl_https(addr, "/", &ca, &client_args(&newcomer)).await;
            (r.status == 200).then_some(())
        }
    })
    .await;
    let r = curl_https(addr, "/", &ca, &client_args(&certs.frontend)).await;
    assert_eq!(r.status, 200, "the old CA must still be trusted");
}
