//! TLS tests with real components on 127.0.0.1:0 and certificates generated per run:
//! a TLS echo server on `ServerTls::accept`, driven by a rustls client, raw bytes
//! and `openssl s_client`.

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use attache_filters::Stats;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::testutil::*;
use super::*;
use crate::config::duration::Dur;
use crate::config::raw::{self, SanMatcher, SanRule, SniCertificate};

const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
const FRONTEND: &str = "spiffe://example.org/ns/web/sa/frontend";

struct Fixture {
    _dir: tempfile::TempDir,
    pki: Pki,
    other: Pki,
    server: Issued,
    client: Issued,
}

fn fixture() -> Result<Fixture> {
    let dir = tempfile::tempdir()?;
    let pki = Pki::new(dir.path(), "main")?;
    let other = Pki::new(dir.path(), "other")?;
    let server = pki.issue(
        "server",
        &Leaf {
            dns: &["localhost", "server.internal"],
            uri: &["spiffe://example.org/ns/edge/sa/proxy"],
            ip: &[LOCALHOST],
            ..Leaf::new("server")
        },
    )?;
    let client = pki.issue(
        "client",
        &Leaf {
            uri: &[FRONTEND],
            dns: &["web.internal"],
            ..Leaf::new("frontend")
        },
    )?;
    Ok(Fixture {
        _dir: dir,
        pki,
        other,
        server,
        client,
    })
}

fn mtls_raw(f: &Fixture) -> raw::ListenerTls {
    raw::ListenerTls {
        cert_chain: Some(f.server.cert.clone()),
        private_key: Some(f.server.key.clone()),
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

fn keys(problems: &Problems) -> HashSet<&str> {
    problems.iter().map(|p| p.path.as_str()).collect()
}

async fn start(
    raw: &raw::ListenerTls,
    stats: &Stats,
) -> Result<(SocketAddr, tokio::sync::mpsc::UnboundedReceiver<Seen>)> {
    let tls =
        ServerTls::build(raw, "l", stats).map_err(|p| anyhow::anyhow!("build failed: {p:?}"))?;
    echo_server(tls).await
}

// ---- validation ----

#[test]
fn validate_reports_every_problem_at_once() {
    let raw = raw::ListenerTls {
        private_key: Some("/nonexistent/key.pem".into()),
        allowed_client_sans: vec![SanMatcher::Exact(FRONTEND.into())],
        alpn: Some(vec!["h2".into(), "".into(), "h2".into()]),
        min_version: Some("1.1".into()),
        certificates: vec![
            SniCertificate {
                server_names: vec!["bad name".into(), "api.example.com".into()],
                cert_chain: "/nonexistent/a.pem".into(),
                private_key: "".into(),
            },
            SniCertificate {
                server_names: vec!["API.example.com".into()],
                cert_chain: "/nonexistent/b.pem".into(),
                private_key: "/nonexistent/b.key".into(),
            },
        ],
        ..Default::default()
    };
    let problems = validate_listener(&raw);
    let k = keys(&problems);
    for want in [
        "cert_chain",
        "private_key",
        "allowed_client_sans",
        "alpn.1",
        "alpn.2",
        "min_version",
        "certificates.0.server_names.0",
        "certificates.0.private_key",
        "certificates.0.cert_chain",
        "certificates.1.server_names.0",
        "certificates.1.cert_chain",
        "certificates.1.private_key",
    ] {
        assert!(k.contains(want), "missing {want} in {problems:?}");
    }
}

#[test]
fn validate_reads_files_and_names_the_bad_one() -> Result<()> {
    let f = fixture()?;
    let dir = f.pki.dir.clone();
    let other_key = f.client.key.clone();
    let expired = f.pki.issue(
        "expired",
        &Leaf {
            expired: true,
            ..Leaf::new("old")
        },
    )?;
    let garbage = dir.join("garbage.pem");
    std::fs::write(&garbage, b"not pem at all")?;

    // Key of another certificate.
    let raw = raw::ListenerTls {
        private_key: Some(other_key),
        ..mtls_raw(&f)
    };
    assert_eq!(
        keys(&validate_listener(&raw)),
        HashSet::from(["private_key"])
    );
    // Expired certificate.
    let raw = raw::ListenerTls {
        cert_chain: Some(expired.cert.clone()),
        private_key: Some(expired.key.clone()),
        ..Default::default()
    };
    assert_eq!(
        keys(&validate_listener(&raw)),
        HashSet::from(["cert_chain"])
    );
    // CA bundle that is not PEM, and a missing SNI key file.
    let raw = raw::ListenerTls {
        client_ca: Some(path_str(&garbage)),
        certificates: vec![SniCertificate {
            server_names: vec!["api.example.com".into()],
            cert_chain: f.server.cert.clone(),
            private_key: path_str(&dir.join("missing.key")),
        }],
        ..mtls_raw(&f)
    };
    assert_eq!(
        keys(&validate_listener(&raw)),
        HashSet::from(["client_ca", "certificates.0.private_key"])
    );
    // A good block has no problems.
    assert!(validate_listener(&mtls_raw(&f)).is_empty());
    Ok(())
}

#[test]
fn skip_files_checks_only_the_shape_of_paths() {
    let raw = raw::ListenerTls {
        cert_chain: Some("/nonexistent/cert.pem".into()),
        private_key: Some("/nonexistent/key.pem".into()),
        client_ca: Some("/nonexistent/ca.pem".into()),
        ..Default::default()
    };
    assert!(validate_listener_with(&raw, true).is_empty());
    assert_eq!(
        keys(&validate_listener_with(&raw, false)),
        HashSet::from(["cert_chain", "private_key", "client_ca"])
    );
    let raw = raw::ListenerTls {
        client_ca: Some(" ".into()),
        ..raw
    };
    assert_eq!(
        keys(&validate_listener_with(&raw, true)),
        HashSet::from(["client_ca"])
    );
    let empty = raw::ListenerTls::default();
    assert_eq!(
        keys(&validate_listener_with(&empty, true)),
        HashSet::from(["cert_chain"])
    );
}

#[test]
fn validate_cluster_block() -> Result<()> {
    let f = fixture()?;
    let raw = raw::ClusterTls {
        sni: Some("not a name".into()),
        cert_chain: Some(f.client.cert.clone()),
        verify_sans: vec!["".into()],
        ..Default::default()
    };
    assert_eq!(
        keys(&validate_cluster(&raw)),
        HashSet::from(["ca", "sni", "private_key", "verify_sans.0"])
    );
    let good = raw::ClusterTls {
        ca: Some(f.pki.ca_path.clone()),
        sni: Some("server.internal".into()),
        cert_chain: Some(f.client.cert.clone()),
        private_key: Some(f.client.key.clone()),
        ..Default::default()
    };
    assert!(validate_cluster(&good).is_empty());
    let bad_key = raw::ClusterTls {
        private_key: Some(f.server.key.clone()),
        ..good
    };
    assert_eq!(
        keys(&validate_cluster(&bad_key)),
        HashSet::from(["private_key"])
    );
    Ok(())
}

#[test]
fn san_rules_need_exactly_one_field() {
    let raw = raw::ListenerTls {
        cert_chain: Some("a".into()),
        private_key: Some("b".into()),
        client_ca: Some("c".into()),
        allowed_client_sans: vec![
            SanMatcher::Rule(SanRule {
                prefix: Some("spiffe://".into()),
                ..Default::default()
            }),
            SanMatcher::Rule(SanRule::default()),
            SanMatcher::Rule(SanRule {
                exact: Some("x".into()),
                suffix: Some("y".into()),
                ..Default::default()
            }),
        ],
        ..Default::default()
    };
    assert_eq!(
        keys(&validate_listener_with(&raw, true)),
        HashSet::from(["allowed_client_sans.1", "allowed_client_sans.2"])
    );
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
        let raw = raw::ListenerTls {
            cert_chain: Some(cert.cert.clone()),
            private_key: Some(cert.key.clone()),
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
    let raw = raw::ListenerTls {
        allowed_client_sans: vec![SanMatcher::Exact(FRONTEND.into())],
        ..mtls_raw(&f)
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
    let raw = raw::ListenerTls {
        allowed_client_sans: vec![
            SanMatcher::Rule(SanRule {
                prefix: Some("spiffe://example.org/ns/web/".into()),
                ..Default::default()
            }),
            SanMatcher::Rule(SanRule {
                suffix: Some(".trusted.internal".into()),
                ..Default::default()
            }),
        ],
        ..mtls_raw(&f)
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
    let raw = raw::ListenerTls {
        require_client_cert: Some(false),
        ..mtls_raw(&f)
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
    let raw = raw::ListenerTls {
        alpn: Some(vec!["h2".into(), "http/1.1".into()]),
        ..mtls_raw(&f)
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
    let raw = raw::ListenerTls {
        cert_chain: Some(f.server.cert.clone()),
        private_key: Some(f.server.key.clone()),
        certificates: vec![
            SniCertificate {
                server_names: vec!["api.example.com".into()],
                cert_chain: api.cert.clone(),
                private_key: api.key.clone(),
            },
            SniCertificate {
                server_names: vec!["*.apps.example.com".into()],
                cert_chain: wild.cert.clone(),
                private_key: wild.key.clone(),
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
    let raw = raw::ListenerTls {
        min_version: Some("1.3".into()),
        ..mtls_raw(&f)
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
    let (addr, mut seen) = start(&mtls_raw(&f), &stats).await?;

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
    let raw = raw::ListenerTls {
        handshake_timeout: Some(Dur(Duration::from_millis(300))),
        ..mtls_raw(&f)
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
    let (addr, _seen) = start(&mtls_raw(&f), &stats).await?;
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
    let tls = ServerTls::build(&mtls_raw(&f), "l", &stats).map_err(|p| anyhow::anyhow!("{p:?}"))?;
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
    start(&mtls_raw(f), stats).await
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
    let raw = raw::ClusterTls {
        ca: Some(f.pki.ca_path.clone()),
        sni: Some("server.internal".into()),
        verify_sans: vec!["spiffe://example.org/ns/edge/sa/proxy".into()],
        cert_chain: Some(f.client.cert.clone()),
        private_key: Some(f.client.key.clone()),
        alpn: Some(vec!["h2".into()]),
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
    let anon = raw::ClusterTls {
        cert_chain: None,
        private_key: None,
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
    let base = raw::ClusterTls {
        ca: Some(f.pki.ca_path.clone()),
        cert_chain: Some(f.client.cert.clone()),
        private_key: Some(f.client.key.clone()),
        ..Default::default()
    };
    let wrong = raw::ClusterTls {
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
        let raw = raw::ListenerTls {
            cert_chain: Some(other.cert),
            private_key: Some(other.key),
            ..Default::default()
        };
        start(&raw, &Stats::new()).await?
    };
    let right_name = raw::ClusterTls {
        sni: Some("server.internal".into()),
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
    let raw = raw::ListenerTls {
        alpn: Some(vec!["h2".into(), "http/1.1".into()]),
        allowed_client_sans: vec![SanMatcher::Exact(FRONTEND.into())],
        certificates: vec![SniCertificate {
            server_names: vec!["api.example.com".into()],
            cert_chain: api.cert.clone(),
            private_key: api.key.clone(),
        }],
        ..mtls_raw(&f)
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
    let raw = raw::ListenerTls {
        allowed_client_sans: vec![SanMatcher::Exact(FRONTEND.into())],
        ..mtls_raw(&f)
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
