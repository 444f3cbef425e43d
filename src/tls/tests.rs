//! TLS tests with real components on 127.0.0.1:0 and certificates generated per run:
//! a TLS echo server on `ServerTls::accept`, driven by a rustls client, raw bytes
//! and `openssl s_client`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use attache_filters::Stats;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::testutil::*;
use super::*;
use crate::router::SanMatch;

fn pair(cert_chain: String, private_key: String) -> CertPair {
    CertPair {
        cert_chain,
        private_key,
    }
}

fn alpn(protocols: &[&str]) -> Vec<Vec<u8>> {
    protocols.iter().map(|p| p.as_bytes().to_vec()).collect()
}

fn sni(name: &str) -> rustls::pki_types::ServerName<'static> {
    rustls::pki_types::ServerName::try_from(name.to_string()).expect("a DNS name")
}

/// A cluster's TLS that verifies against `ca`, every other key at its default.
fn cluster_tls(ca: &str) -> ClusterSettings {
    ClusterSettings {
        ca: ca.to_string(),
        sni: None,
        verify_sans: Vec::new(),
        client_cert: None,
        alpn: Vec::new(),
    }
}

fn mtls(f: &Fixture) -> ListenerSettings {
    ListenerSettings {
        default_cert: Some(pair(f.server.cert.clone(), f.server.key.clone())),
        client_ca: Some(f.pki.ca_path.clone()),
        ..Default::default()
    }
}

fn counter(stats: &Stats, name: &'static str, labels: &[&str]) -> u64 {
    let names: &[&str] = if name.starts_with("attache_tls_cluster") {
        &["cluster", "result"]
    } else {
        &["listener", "result"]
    };
    stats
        .counter_vec(name, "", names)
        .with_label_values(labels)
        .get()
}

async fn start(
    tls: &ListenerSettings,
    stats: &Stats,
) -> Result<(SocketAddr, tokio::sync::mpsc::UnboundedReceiver<Seen>)> {
    let tls =
        ServerTls::build(tls, "l", stats).map_err(|p| anyhow::anyhow!("build failed: {p:?}"))?;
    echo_server(tls).await
}

// ---- handshakes with a rustls client ----

#[tokio::test]
async fn every_key_type_serves() -> Result<()> {
    let f = fixture()?;
    for (i, alg) in [Alg::Rsa, Alg::P256, Alg::P384, Alg::Ed25519]
        .into_iter()
        .enumerate()
    {
        let cert = f.pki.issue(
            &format!("kt{i}"),
            &Leaf {
                dns: &["localhost"],
                alg,
                ..Leaf::new("kt")
            },
        )?;
        let raw = ListenerSettings {
            default_cert: Some(pair(cert.cert.clone(), cert.key.clone())),
            ..Default::default()
        };
        let stats = Stats::new();
        let (addr, mut seen) = start(&raw, &stats).await?;
        let got = rustls_ping(addr, client_config(f.pki.roots()?, None, &[])?, "localhost").await?;
        ensure!(got.reply == "echo:ping\n", "{alg:?}: {}", got.reply);
        ensure!(got.server_cert == cert.der, "{alg:?}: wrong cert");
        let peer = next_seen(&mut seen)
            .await?
            .map_err(|k| anyhow::anyhow!("{k:?}"))?;
        ensure!(!peer.has_client_cert);
    }
    Ok(())
}

#[tokio::test]
async fn valid_client_cert_is_accepted_with_its_identity() -> Result<()> {
    let f = fixture()?;
    let stats = Stats::new();
    let raw = ListenerSettings {
        allowed_client_sans: vec![SanMatch::Exact(FRONTEND.into())],
        ..mtls(&f)
    };
    let (addr, mut seen) = start(&raw, &stats).await?;
    let got = rustls_ping(
        addr,
        client_config(f.pki.roots()?, Some(&f.client), &[])?,
        "localhost",
    )
    .await?;
    assert_eq!(got.reply, "echo:ping\n");
    let peer = next_seen(&mut seen)
        .await?
        .map_err(|k| anyhow::anyhow!("{k:?}"))?;
    assert!(peer.has_client_cert);
    assert_eq!(peer.uri_sans, vec![FRONTEND.to_string()]);
    assert_eq!(peer.dns_sans, vec!["web.internal".to_string()]);
    assert_eq!(peer.subject, "O=attache tests,CN=frontend");
    assert_eq!(
        peer.cert_sha256_hex,
        super::material::sha256_hex(&f.client.der)
    );
    assert_eq!(
        peer.local_uri.as_deref(),
        Some("spiffe://example.org/ns/edge/sa/proxy")
    );
    assert_eq!(peer.sni.as_deref(), Some("localhost"));
    let xfcc = xfcc_value(&peer, peer.local_uri.as_deref());
    assert!(xfcc.contains(&format!("URI={FRONTEND}")), "{xfcc}");
    assert!(
        xfcc.starts_with("By=spiffe://example.org/ns/edge/sa/proxy;Hash="),
        "{xfcc}"
    );
    assert_eq!(counter(&stats, HANDSHAKE_TOTAL, &["l", "ok"]), 1);
    Ok(())
}

#[tokio::test]
async fn bad_client_certs_fail_the_handshake_and_are_counted() -> Result<()> {
    let f = fixture()?;
    let stats = Stats::new();
    let raw = ListenerSettings {
        allowed_client_sans: vec![
            SanMatch::Prefix("spiffe://example.org/ns/web/".into()),
            SanMatch::Suffix(".trusted.internal".into()),
        ],
        ..mtls(&f)
    };
    let (addr, mut seen) = start(&raw, &stats).await?;
    let other_ca = f.other.issue(
        "stranger",
        &Leaf {
            uri: &[FRONTEND],
            ..Leaf::new("stranger")
        },
    )?;
    let expired = f.pki.issue(
        "expired",
        &Leaf {
            uri: &[FRONTEND],
            expired: true,
            ..Leaf::new("old")
        },
    )?;
    let denied = f.pki.issue(
        "denied",
        &Leaf {
            uri: &["spiffe://example.org/ns/db/sa/x"],
            ..Leaf::new("db")
        },
    )?;
    let by_suffix = f.pki.issue(
        "suffix",
        &Leaf {
            dns: &["a.trusted.internal"],
            ..Leaf::new("s")
        },
    )?;

    let cases: [(Option<&Issued>, Option<HandshakeFailure>); 6] = [
        (None, Some(HandshakeFailure::NoClientCert)),
        (Some(&other_ca), Some(HandshakeFailure::BadClientCert)),
        (Some(&expired), Some(HandshakeFailure::BadClientCert)),
        (Some(&denied), Some(HandshakeFailure::SanDenied)),
        (Some(&by_suffix), None),
        (Some(&f.client), None),
    ];
    for (cert, want) in cases {
        let got = rustls_ping(addr, client_config(f.pki.roots()?, cert, &[])?, "localhost").await;
        let seen = next_seen(&mut seen).await?;
        match want {
            Some(kind) => {
                ensure!(
                    got.map(|r| r.reply).unwrap_or_default().is_empty(),
                    "{kind:?}: data got through"
                );
                ensure!(
                    seen.as_ref().err() == Some(&kind),
                    "want {kind:?}, server saw {seen:?}"
                );
            }
            None => {
                ensure!(got?.reply == "echo:ping\n");
                ensure!(seen.is_ok(), "{seen:?}");
            }
        }
    }
    assert_eq!(
        counter(&stats, HANDSHAKE_TOTAL, &["l", "no_client_cert"]),
        1
    );
    assert_eq!(
        counter(&stats, HANDSHAKE_TOTAL, &["l", "bad_client_cert"]),
        2
    );
    assert_eq!(counter(&stats, HANDSHAKE_TOTAL, &["l", "san_denied"]), 1);
    assert_eq!(counter(&stats, HANDSHAKE_TOTAL, &["l", "ok"]), 2);
    Ok(())
}

#[tokio::test]
async fn optional_client_cert_lets_anonymous_clients_in() -> Result<()> {
    let f = fixture()?;
    let stats = Stats::new();
    let raw = ListenerSettings {
        require_client_cert: false,
        ..mtls(&f)
    };
    let (addr, mut seen) = start(&raw, &stats).await?;
    let got = rustls_ping(addr, client_config(f.pki.roots()?, None, &[])?, "localhost").await?;
    assert_eq!(got.reply, "echo:ping\n");
    let peer = next_seen(&mut seen)
        .await?
        .map_err(|k| anyhow::anyhow!("{k:?}"))?;
    assert!(!peer.has_client_cert);
    // A presented certificate is still verified.
    let stranger = f.other.issue("stranger", &Leaf::new("stranger"))?;
    let _ = rustls_ping(
        addr,
        client_config(f.pki.roots()?, Some(&stranger), &[])?,
        "localhost",
    )
    .await;
    assert_eq!(
        next_seen(&mut seen).await?.err(),
        Some(HandshakeFailure::BadClientCert)
    );
    Ok(())
}

#[tokio::test]
async fn alpn_h2_is_negotiated() -> Result<()> {
    let f = fixture()?;
    let stats = Stats::new();
    let raw = ListenerSettings {
        alpn: alpn(&["h2", "http/1.1"]),
        ..mtls(&f)
    };
    let (addr, mut seen) = start(&raw, &stats).await?;
    let cfg = client_config(f.pki.roots()?, Some(&f.client), &["h2", "http/1.1"])?;
    let got = rustls_ping(addr, cfg, "localhost").await?;
    assert_eq!(got.alpn.as_deref(), Some(&b"h2"[..]));
    assert!(
        next_seen(&mut seen)
            .await?
            .map_err(|k| anyhow::anyhow!("{k:?}"))?
            .alpn_h2
    );
    let cfg = client_config(f.pki.roots()?, Some(&f.client), &["http/1.1"])?;
    let got = rustls_ping(addr, cfg, "localhost").await?;
    assert_eq!(got.alpn.as_deref(), Some(&b"http/1.1"[..]));
    assert!(
        !next_seen(&mut seen)
            .await?
            .map_err(|k| anyhow::anyhow!("{k:?}"))?
            .alpn_h2
    );
    Ok(())
}

#[tokio::test]
async fn sni_picks_the_certificate() -> Result<()> {
    let f = fixture()?;
    let api = f.pki.issue(
        "api",
        &Leaf {
            dns: &["api.example.com"],
            ..Leaf::new("api")
        },
    )?;
    let wild = f.pki.issue(
        "wild",
        &Leaf {
            dns: &["*.apps.example.com"],
            alg: Alg::Ed25519,
            ..Leaf::new("w")
        },
    )?;
    let stats = Stats::new();
    let raw = ListenerSettings {
        default_cert: Some(pair(f.server.cert.clone(), f.server.key.clone())),
        certificates: vec![
            SniCertificate {
                server_names: vec!["api.example.com".into()],
                pair: pair(api.cert.clone(), api.key.clone()),
            },
            SniCertificate {
                server_names: vec!["*.apps.example.com".into()],
                pair: pair(wild.cert.clone(), wild.key.clone()),
            },
        ],
        ..Default::default()
    };
    let (addr, _seen) = start(&raw, &stats).await?;
    let roots = || f.pki.roots();
    let got = rustls_ping(addr, client_config(roots()?, None, &[])?, "api.example.com").await?;
    assert!(
        got.server_cert == api.der,
        "api.example.com got the wrong cert"
    );
    let got = rustls_ping(
        addr,
        client_config(roots()?, None, &[])?,
        "shop.apps.example.com",
    )
    .await?;
    assert!(got.server_cert == wild.der, "wildcard got the wrong cert");
    let got = rustls_ping(addr, client_config(roots()?, None, &[])?, "localhost").await?;
    assert!(
        got.server_cert == f.server.der,
        "default got the wrong cert"
    );
    // Expiry gauges: one per certificate.
    let g = stats.gauge_vec(CERT_EXPIRY, "", &["listener", "cert"]);
    for label in ["default", "api.example.com", "*.apps.example.com"] {
        assert!(
            g.with_label_values(&["l", label]).get() > super::material::now_unix(),
            "{label}"
        );
    }
    Ok(())
}

#[tokio::test]
async fn tls13_only_refuses_tls12() -> Result<()> {
    let f = fixture()?;
    let stats = Stats::new();
    let raw = ListenerSettings {
        min_version: MinVersion::Tls13,
        ..mtls(&f)
    };
    let (addr, mut seen) = start(&raw, &stats).await?;
    let cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS12])?
    .with_root_certificates(f.pki.roots()?)
    .with_no_client_auth();
    assert!(rustls_ping(addr, Arc::new(cfg), "localhost").await.is_err());
    assert_eq!(
        next_seen(&mut seen).await?.err(),
        Some(HandshakeFailure::Protocol)
    );
    Ok(())
}

/// Send raw bytes, then expect the server to close the connection by itself.
async fn send_raw_and_expect_close(addr: SocketAddr, bytes: &[u8], half_close: bool) -> Result<()> {
    let mut tcp = TcpStream::connect(addr).await?;
    tcp.write_all(bytes).await?;
    if half_close {
        tcp.shutdown().await?;
    }
    let mut sink = Vec::new();
    // EOF or a reset: either way the server closed it, within the deadline.
    let _ = tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut sink))
        .await
        .context("server did not close the connection")?;
    Ok(())
}

#[tokio::test]
async fn bad_input_closes_the_connection_and_is_counted() -> Result<()> {
    let f = fixture()?;
    let stats = Stats::new();
    let (addr, mut seen) = start(&mtls(&f), &stats).await?;

    // A real ClientHello, cut short.
    let cfg = client_config(f.pki.roots()?, None, &[])?;
    let mut conn = rustls::ClientConnection::new(cfg, "localhost".try_into()?)?;
    let mut hello = Vec::new();
    conn.write_tls(&mut hello)?;
    ensure!(hello.len() > 40);

    send_raw_and_expect_close(addr, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", false).await?;
    send_raw_and_expect_close(
        addr,
        &[0xde, 0xad, 0xbe, 0xef, 0x00, 0xff, 0x13, 0x37, 0x42, 0x99],
        false,
    )
    .await?;
    send_raw_and_expect_close(addr, &hello[..hello.len() / 2], true).await?;
    for _ in 0..3 {
        assert_eq!(
            next_seen(&mut seen).await?.err(),
            Some(HandshakeFailure::Protocol)
        );
    }
    assert_eq!(
        counter(&stats, HANDSHAKE_TOTAL, &["l", "protocol_error"]),
        3
    );
    // The listener still serves everyone else.
    let got = rustls_ping(
        addr,
        client_config(f.pki.roots()?, Some(&f.client), &[])?,
        "localhost",
    )
    .await?;
    assert_eq!(got.reply, "echo:ping\n");
    Ok(())
}

#[tokio::test]
async fn a_silent_client_hits_the_handshake_timeout() -> Result<()> {
    let f = fixture()?;
    let stats = Stats::new();
    let raw = ListenerSettings {
        handshake_timeout: Duration::from_millis(300),
        ..mtls(&f)
    };
    let (addr, mut seen) = start(&raw, &stats).await?;
    let started = Instant::now();
    send_raw_and_expect_close(addr, b"", false).await?;
    assert!(started.elapsed() >= Duration::from_millis(250));
    assert_eq!(
        next_seen(&mut seen).await?.err(),
        Some(HandshakeFailure::Timeout)
    );
    assert_eq!(counter(&stats, HANDSHAKE_TOTAL, &["l", "timeout"]), 1);
    Ok(())
}

// ---- rotation ----

/// Poll `check` until it holds or `deadline` passes.
async fn eventually<F, Fut>(deadline: Duration, mut check: F) -> Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let until = Instant::now() + deadline;
    loop {
        if check().await {
            return Ok(());
        }
        ensure!(
            Instant::now() < until,
            "condition not met within {deadline:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn rotation_picks_up_new_files_and_keeps_old_on_a_broken_one() -> Result<()> {
    let f = fixture()?;
    let stats = Stats::new();
    let (addr, _seen) = start(&mtls(&f), &stats).await?;
    let cfg = client_config(f.pki.roots()?, Some(&f.client), &[])?;
    let first = rustls_ping(addr, cfg.clone(), "localhost").await?;
    assert!(first.server_cert == f.server.der);

    // A long-lived connection opened before the rotation.
    let tcp = TcpStream::connect(addr).await?;
    let mut old_conn = tokio_rustls::TlsConnector::from(cfg.clone())
        .connect("localhost".try_into()?, tcp)
        .await?;

    // Rotate: new cert and key written over the same paths.
    let staged = f.pki.issue(
        "server-next",
        &Leaf {
            dns: &["localhost"],
            ..Leaf::new("server2")
        },
    )?;
    std::fs::copy(&staged.cert, &f.server.cert)?;
    std::fs::copy(&staged.key, &f.server.key)?;
    let started = Instant::now();
    eventually(Duration::from_secs(5), || {
        let cfg = cfg.clone();
        let want = staged.der.clone();
        async move {
            rustls_ping(addr, cfg, "localhost")
                .await
                .map(|r| r.server_cert == want)
                .unwrap_or(false)
        }
    })
    .await?;
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(counter(&stats, RELOAD_TOTAL, &["l", "ok"]), 1);

    // The connection from before still works.
    old_conn.write_all(b"still here\n").await?;
    let mut reply = String::new();
    tokio::time::timeout(Duration::from_secs(5), old_conn.read_to_string(&mut reply)).await??;
    assert_eq!(reply, "echo:still here\n");

    // A broken replacement: a key that does not match the cert.
    std::fs::copy(&f.client.key, &f.server.key)?;
    eventually(Duration::from_secs(5), || async {
        counter(&stats, RELOAD_TOTAL, &["l", "failed"]) == 1
    })
    .await?;
    let got = rustls_ping(addr, cfg.clone(), "localhost").await?;
    assert!(
        got.server_cert == staged.der,
        "a broken replacement must keep the previous cert"
    );
    // An unreadable file is also a failed reload.
    std::fs::remove_file(&f.server.cert)?;
    eventually(Duration::from_secs(5), || async {
        counter(&stats, RELOAD_TOTAL, &["l", "failed"]) == 2
    })
    .await?;
    let got = rustls_ping(addr, cfg, "localhost").await?;
    assert!(got.server_cert == staged.der);
    Ok(())
}

#[test]
fn material_built_before_the_runtime_is_watched_once_traffic_flows() -> Result<()> {
    let f = fixture()?;
    let stats = Stats::new();
    // Built with no runtime (as `main` may do while validating).
    let tls = ServerTls::build(&mtls(&f), "l", &stats).map_err(|p| anyhow::anyhow!("{p:?}"))?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    rt.block_on(async {
        let (addr, _seen) = echo_server(tls).await?;
        let cfg = client_config(f.pki.roots()?, Some(&f.client), &[])?;
        rustls_ping(addr, cfg.clone(), "localhost").await?;
        let staged = f.pki.issue(
            "server-next",
            &Leaf {
                dns: &["localhost"],
                ..Leaf::new("next")
            },
        )?;
        std::fs::copy(&staged.cert, &f.server.cert)?;
        std::fs::copy(&staged.key, &f.server.key)?;
        eventually(Duration::from_secs(5), || {
            let (cfg, want) = (cfg.clone(), staged.der.clone());
            async move {
                rustls_ping(addr, cfg, "localhost")
                    .await
                    .map(|r| r.server_cert == want)
                    .unwrap_or(false)
            }
        })
        .await
    })
}

// ---- upstream (ClientTls) ----

/// An origin that requires client certificates from the main CA.
async fn origin(
    f: &Fixture,
    stats: &Stats,
) -> Result<(SocketAddr, tokio::sync::mpsc::UnboundedReceiver<Seen>)> {
    start(&mtls(f), stats).await
}

async fn client_ping(tls: &ClientTls, addr: SocketAddr) -> Result<String> {
    let tcp = TcpStream::connect(addr).await?;
    let mut s = tokio::time::timeout(Duration::from_secs(5), tls.connect(tcp)).await??;
    s.write_all(b"ping\n").await?;
    let mut reply = String::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_string(&mut reply)).await??;
    Ok(reply)
}

#[tokio::test]
async fn client_tls_does_mtls_to_an_origin_that_requires_it() -> Result<()> {
    let f = fixture()?;
    let stats = Stats::new();
    let (addr, mut seen) = origin(&f, &stats).await?;
    let raw = ClusterSettings {
        ca: f.pki.ca_path.clone(),
        sni: Some(sni("server.internal")),
        verify_sans: vec!["spiffe://example.org/ns/edge/sa/proxy".into()],
        client_cert: Some(pair(f.client.cert.clone(), f.client.key.clone())),
        alpn: alpn(&["h2"]),
    };
    let tls = ClientTls::build(&raw, "c", &stats).map_err(|p| anyhow::anyhow!("{p:?}"))?;
    assert_eq!(client_ping(&tls, addr).await?, "echo:ping\n");
    let peer = next_seen(&mut seen)
        .await?
        .map_err(|k| anyhow::anyhow!("{k:?}"))?;
    assert_eq!(peer.uri_sans, vec![FRONTEND.to_string()]);
    assert_eq!(peer.sni.as_deref(), Some("server.internal"));
    assert_eq!(counter(&stats, CLUSTER_HANDSHAKE_TOTAL, &["c", "ok"]), 1);
    let g = stats.gauge_vec(CLUSTER_CERT_EXPIRY, "", &["cluster", "cert"]);
    assert!(g.with_label_values(&["c", "client"]).get() > super::material::now_unix());

    // Without a client certificate the origin refuses.
    let anon = ClusterSettings {
        client_cert: None,
        ..raw
    };
    let tls = ClientTls::build(&anon, "c", &stats).map_err(|p| anyhow::anyhow!("{p:?}"))?;
    let reply = client_ping(&tls, addr).await.unwrap_or_default();
    assert!(reply.is_empty());
    assert_eq!(
        next_seen(&mut seen).await?.err(),
        Some(HandshakeFailure::NoClientCert)
    );
    Ok(())
}

#[tokio::test]
async fn client_tls_rejects_an_origin_with_the_wrong_san() -> Result<()> {
    let f = fixture()?;
    let stats = Stats::new();
    let (addr, _seen) = origin(&f, &stats).await?;
    let base = ClusterSettings {
        client_cert: Some(pair(f.client.cert.clone(), f.client.key.clone())),
        ..cluster_tls(&f.pki.ca_path)
    };
    let wrong = ClusterSettings {
        verify_sans: vec!["payments.internal".into()],
        ..base.clone()
    };
    let tls = ClientTls::build(&wrong, "c", &stats).map_err(|p| anyhow::anyhow!("{p:?}"))?;
    let tcp = TcpStream::connect(addr).await?;
    let err = match tls.connect(tcp).await {
        Ok(_) => anyhow::bail!("wrong SAN accepted"),
        Err(e) => e,
    };
    let inner = err
        .get_ref()
        .and_then(|e| e.downcast_ref::<rustls::Error>());
    assert!(
        matches!(inner, Some(rustls::Error::InvalidCertificate(_))),
        "{err:?}"
    );
    assert_eq!(
        counter(&stats, CLUSTER_HANDSHAKE_TOTAL, &["c", "failed"]),
        1
    );

    // An origin whose certificate comes from another CA is refused too.
    let (other_addr, _s) = {
        let other = f.other.issue(
            "other-origin",
            &Leaf {
                dns: &["server.internal"],
                ..Leaf::new("o")
            },
        )?;
        let raw = ListenerSettings {
            default_cert: Some(pair(other.cert, other.key)),
            ..Default::default()
        };
        start(&raw, &Stats::new()).await?
    };
    let right_name = ClusterSettings {
        sni: Some(sni("server.internal")),
        ..base.clone()
    };
    let tls = ClientTls::build(&right_name, "c", &stats).map_err(|p| anyhow::anyhow!("{p:?}"))?;
    assert!(client_ping(&tls, other_addr).await.is_err());

    // With no sni, the endpoint IP is the name; the origin cert has 127.0.0.1.
    let tls = ClientTls::build(&base, "c", &stats).map_err(|p| anyhow::anyhow!("{p:?}"))?;
    assert_eq!(client_ping(&tls, addr).await?, "echo:ping\n");
    Ok(())
}

// ---- openssl s_client ----

struct SClient {
    stdout: String,
}

/// Run `openssl s_client` against `addr` with `args`, send `ping\n`, and wait (bounded)
/// for it to exit after the server closes.
async fn s_client(addr: SocketAddr, args: Vec<String>) -> Result<SClient> {
    let connect = addr.to_string();
    tokio::task::spawn_blocking(move || -> Result<SClient> {
        use std::io::Write;
        let mut child = std::process::Command::new("timeout")
            .arg("15")
            .arg("openssl")
            .args(["s_client", "-connect", &connect, "-ign_eof"])
            .args(&args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .context("openssl s_client must be installed (apt-get install openssl)")?;
        if let Some(mut stdin) = child.stdin.take() {
            let _ = stdin.write_all(b"ping\n");
        }
        let out = child.wait_with_output()?;
        Ok(SClient {
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        })
    })
    .await?
}

fn cert_args(ca: &str, cert: Option<&Issued>) -> Vec<String> {
    let mut a = vec![
        "-CAfile".to_string(),
        ca.to_string(),
        "-verify_return_error".to_string(),
    ];
    if let Some(c) = cert {
        a.extend([
            "-cert".to_string(),
            c.cert.clone(),
            "-key".to_string(),
            c.key.clone(),
        ]);
    }
    a
}

#[tokio::test]
async fn openssl_s_client_valid_cert_alpn_and_sni() -> Result<()> {
    let f = fixture()?;
    let api = f.pki.issue(
        "api",
        &Leaf {
            dns: &["api.example.com"],
            ..Leaf::new("api-cert")
        },
    )?;
    let stats = Stats::new();
    let raw = ListenerSettings {
        alpn: alpn(&["h2", "http/1.1"]),
        allowed_client_sans: vec![SanMatch::Exact(FRONTEND.into())],
        certificates: vec![SniCertificate {
            server_names: vec!["api.example.com".into()],
            pair: pair(api.cert.clone(), api.key.clone()),
        }],
        ..mtls(&f)
    };
    let (addr, mut seen) = start(&raw, &stats).await?;
    let mut args = cert_args(&f.pki.ca_path, Some(&f.client));
    args.extend(["-alpn", "h2", "-servername", "api.example.com"].map(String::from));
    let out = s_client(addr, args).await?;
    assert!(out.stdout.contains("echo:ping"), "{}", out.stdout);
    assert!(out.stdout.contains("ALPN protocol: h2"), "{}", out.stdout);
    assert!(out.stdout.contains("CN = api-cert"), "{}", out.stdout);
    let peer = next_seen(&mut seen)
        .await?
        .map_err(|k| anyhow::anyhow!("{k:?}"))?;
    assert!(peer.alpn_h2 && peer.uri_sans == vec![FRONTEND.to_string()]);
    // TLS 1.2 works too.
    let mut args = cert_args(&f.pki.ca_path, Some(&f.client));
    args.push("-tls1_2".into());
    let out = s_client(addr, args).await?;
    assert!(
        out.stdout.contains("echo:ping") && out.stdout.contains("TLSv1.2"),
        "{}",
        out.stdout
    );
    assert!(next_seen(&mut seen).await?.is_ok());
    Ok(())
}

#[tokio::test]
async fn openssl_s_client_bad_clients_are_rejected() -> Result<()> {
    let f = fixture()?;
    let stats = Stats::new();
    let raw = ListenerSettings {
        allowed_client_sans: vec![SanMatch::Exact(FRONTEND.into())],
        ..mtls(&f)
    };
    let (addr, mut seen) = start(&raw, &stats).await?;
    let stranger = f.other.issue(
        "stranger",
        &Leaf {
            uri: &[FRONTEND],
            ..Leaf::new("stranger")
        },
    )?;
    let expired = f.pki.issue(
        "expired",
        &Leaf {
            uri: &[FRONTEND],
            expired: true,
            ..Leaf::new("old")
        },
    )?;
    let denied = f.pki.issue(
        "denied",
        &Leaf {
            uri: &["spiffe://example.org/ns/db/sa/x"],
            ..Leaf::new("db")
        },
    )?;
    let cases = [
        (
            cert_args(&f.pki.ca_path, None),
            HandshakeFailure::NoClientCert,
        ),
        (
            cert_args(&f.pki.ca_path, Some(&stranger)),
            HandshakeFailure::BadClientCert,
        ),
        (
            cert_args(&f.pki.ca_path, Some(&expired)),
            HandshakeFailure::BadClientCert,
        ),
        (
            cert_args(&f.pki.ca_path, Some(&denied)),
            HandshakeFailure::SanDenied,
        ),
    ];
    for (args, want) in cases {
        let out = s_client(addr, args).await?;
        assert!(
            !out.stdout.contains("echo:ping"),
            "{want:?}: {}",
            out.stdout
        );
        assert_eq!(next_seen(&mut seen).await?.err(), Some(want));
    }
    // TLS 1.1 (openssl needs security level 0 to even offer it).
    let mut args = cert_args(&f.pki.ca_path, Some(&f.client));
    args.extend(["-tls1_1", "-cipher", "DEFAULT:@SECLEVEL=0"].map(String::from));
    let out = s_client(addr, args).await?;
    assert!(!out.stdout.contains("echo:ping"), "{}", out.stdout);
    assert_eq!(
        next_seen(&mut seen).await?.err(),
        Some(HandshakeFailure::Protocol)
    );
    Ok(())
}
