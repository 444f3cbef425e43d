//! TCP proxy tests on 127.0.0.1:0: round trip with half-close, retry on connect
//! failure, idle timeout, and the same through TLS on both sides.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use attache_filters::Stats;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

use super::*;
use rustls::pki_types::ServerName;

use crate::tls::testutil::{Issued, Leaf, Pki};
use crate::tls::{CertPair, ClientTls, ClusterSettings, ListenerSettings, ServerTls};

fn pair(issued: &Issued) -> CertPair {
    CertPair {
        cert_chain: issued.cert.clone(),
        private_key: issued.key.clone(),
    }
}

/// An origin that reads until the client half-closes, then replies with the byte
/// count and what it read, and closes.
async fn half_close_origin() -> Result<SocketAddr> {
    let l = TcpListener::bind("127.0.0.1:0").await?;
    let addr = l.local_addr()?;
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let mut got = Vec::new();
                if s.read_to_end(&mut got).await.is_ok() {
                    let reply =
                        format!("got {} bytes: {}", got.len(), String::from_utf8_lossy(&got));
                    let _ = s.write_all(reply.as_bytes()).await;
                    let _ = s.shutdown().await;
                }
            });
        }
    });
    Ok(addr)
}

/// A free port with nothing listening (bound, then dropped).
async fn dead_addr() -> Result<SocketAddr> {
    let l = TcpListener::bind("127.0.0.1:0").await?;
    Ok(l.local_addr()?)
}

/// The proxy: accepts on 127.0.0.1:0, tries `endpoints[attempt % len]`.
async fn proxy(
    endpoints: Vec<SocketAddr>,
    settings: Settings,
    counters: TcpCounters,
) -> Result<(SocketAddr, mpsc::UnboundedReceiver<Outcome>)> {
    let l = TcpListener::bind("127.0.0.1:0").await?;
    let addr = l.local_addr()?;
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((down, _)) = l.accept().await {
            let endpoints = endpoints.clone();
            let counters = counters.clone();
            let tx = tx.clone();
            tokio::spawn(async move {
                let connect = |attempt: u32| {
                    let ep = endpoints[attempt as usize % endpoints.len()];
                    async move { Ok((TcpStream::connect(ep).await?, ())) }
                };
                let outcome = proxy_connection(down, connect, settings, &counters).await;
                let _ = tx.send(outcome);
            });
        }
    });
    Ok((addr, rx))
}

async fn next(rx: &mut mpsc::UnboundedReceiver<Outcome>) -> Result<Outcome> {
    tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await?
        .context("proxy stopped")
}

/// Write `msg`, shut down our write side, and read the reply until EOF.
async fn half_close_round_trip<S: AsyncRead + AsyncWrite + Unpin>(
    mut s: S,
    msg: &[u8],
) -> Result<String> {
    s.write_all(msg).await?;
    s.shutdown().await?;
    let mut reply = String::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_string(&mut reply)).await??;
    Ok(reply)
}

fn counter(stats: &Stats, name: &'static str, labels: &[&str]) -> u64 {
    let names: &[&str] = if labels.len() == 2 {
        &["listener", "direction"]
    } else {
        &["listener"]
    };
    stats
        .counter_vec(name, "", names)
        .with_label_values(labels)
        .get()
}

#[tokio::test]
async fn round_trip_with_half_close_and_retry() -> Result<()> {
    let stats = Stats::new();
    let origin = half_close_origin().await?;
    let settings = Settings {
        connect_attempts: 3,
        ..Settings::default()
    };
    // The first endpoint refuses connections: the proxy retries the next one.
    let (addr, mut outcomes) = proxy(
        vec![dead_addr().await?, origin],
        settings,
        TcpCounters::new(&stats, "db"),
    )
    .await?;

    let big = vec![b'x'; 100_000];
    let reply = half_close_round_trip(TcpStream::connect(addr).await?, &big).await?;
    assert!(
        reply.starts_with("got 100000 bytes: xxx"),
        "{}",
        &reply[..40.min(reply.len())]
    );
    let o = next(&mut outcomes).await?;
    assert_eq!(o.end, End::Closed);
    assert_eq!(o.attempts, 2);
    assert_eq!(o.rx_bytes, 100_000);
    assert_eq!(o.tx_bytes, reply.len() as u64);
    assert_eq!(counter(&stats, CX_TOTAL, &["db"]), 1);
    assert_eq!(counter(&stats, CONNECT_FAIL, &["db"]), 1);
    assert_eq!(counter(&stats, DOWNSTREAM_BYTES, &["db", "rx"]), 100_000);
    assert_eq!(
        counter(&stats, DOWNSTREAM_BYTES, &["db", "tx"]),
        reply.len() as u64
    );
    assert_eq!(
        stats
            .gauge_vec(CX_ACTIVE, "", &["listener"])
            .with_label_values(&["db"])
            .get(),
        0
    );
    Ok(())
}

#[tokio::test]
async fn all_attempts_failing_closes_the_client() -> Result<()> {
    let stats = Stats::new();
    let settings = Settings {
        connect_attempts: 2,
        ..Settings::default()
    };
    let (addr, mut outcomes) = proxy(
        vec![dead_addr().await?],
        settings,
        TcpCounters::new(&stats, "db"),
    )
    .await?;
    let mut s = TcpStream::connect(addr).await?;
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf)).await?;
    let o = next(&mut outcomes).await?;
    assert_eq!((o.end, o.attempts), (End::ConnectFailed, 2));
    assert_eq!(counter(&stats, NO_UPSTREAM, &["db"]), 1);
    assert_eq!(counter(&stats, CONNECT_FAIL, &["db"]), 2);
    Ok(())
}

#[tokio::test]
async fn idle_connections_are_closed() -> Result<()> {
    let stats = Stats::new();
    let origin = half_close_origin().await?;
    let settings = Settings {
        idle_timeout: Duration::from_millis(300),
        ..Settings::default()
    };
    let (addr, mut outcomes) =
        proxy(vec![origin], settings, TcpCounters::new(&stats, "db")).await?;
    let mut s = TcpStream::connect(addr).await?;
    s.write_all(b"a").await?;
    let mut buf = Vec::new();
    // The proxy closes on us well before this deadline.
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf)).await??;
    let o = next(&mut outcomes).await?;
    assert_eq!(o.end, End::IdleTimeout);
    assert_eq!(counter(&stats, IDLE_TIMEOUT, &["db"]), 1);
    Ok(())
}

#[tokio::test]
async fn tls_on_both_sides_with_half_close() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let pki = Pki::new(dir.path(), "main")?;
    let proxy_cert = pki.issue(
        "proxy",
        &Leaf {
            dns: &["proxy.internal"],
            ..Leaf::new("proxy")
        },
    )?;
    let origin_cert = pki.issue(
        "origin",
        &Leaf {
            dns: &["origin.internal"],
            ..Leaf::new("origin")
        },
    )?;
    let client_cert = pki.issue(
        "client",
        &Leaf {
            uri: &["spiffe://t/client"],
            ..Leaf::new("client")
        },
    )?;
    let stats = Stats::new();

    // A TLS origin (requiring a client cert) in front of the half-close logic.
    let origin_tls = ServerTls::build(
        &ListenerSettings {
            default_cert: Some(pair(&origin_cert)),
            client_ca: Some(pki.ca_path.clone()),
            ..Default::default()
        },
        "origin",
        &stats,
    )
    .map_err(|p| anyhow::anyhow!("{p:?}"))?;
    let ol = TcpListener::bind("127.0.0.1:0").await?;
    let origin = ol.local_addr()?;
    tokio::spawn(async move {
        while let Ok((tcp, _)) = ol.accept().await {
            let origin_tls = origin_tls.clone();
            tokio::spawn(async move {
                if let Ok((mut s, _)) = origin_tls.accept(tcp).await {
                    let mut got = Vec::new();
                    if s.read_to_end(&mut got).await.is_ok() {
                        let _ = s
                            .write_all(format!("tls got {} bytes", got.len()).as_bytes())
                            .await;
                        let _ = s.shutdown().await;
                    }
                }
            });
        }
    });

    let down_tls = ServerTls::build(
        &ListenerSettings {
            default_cert: Some(pair(&proxy_cert)),
            ..Default::default()
        },
        "db",
        &stats,
    )
    .map_err(|p| anyhow::anyhow!("{p:?}"))?;
    let up_tls = ClientTls::build(
        &ClusterSettings {
            ca: pki.ca_path.clone(),
            sni: ServerName::try_from("origin.internal").ok(),
            verify_sans: Vec::new(),
            client_cert: Some(pair(&client_cert)),
            alpn: Vec::new(),
        },
        "pg",
        &stats,
    )
    .map_err(|p| anyhow::anyhow!("{p:?}"))?;

    let pl = TcpListener::bind("127.0.0.1:0").await?;
    let proxy_addr = pl.local_addr()?;
    let counters = TcpCounters::new(&stats, "db");
    let (tx, mut outcomes) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = pl.accept().await {
            let (down_tls, up_tls, counters, tx) = (
                down_tls.clone(),
                up_tls.clone(),
                counters.clone(),
                tx.clone(),
            );
            tokio::spawn(async move {
                let Ok((down, _peer)) = down_tls.accept(tcp).await else {
                    return;
                };
                let connect = |_attempt: u32| {
                    let up_tls = up_tls.clone();
                    async move { Ok((up_tls.connect(TcpStream::connect(origin).await?).await?, ())) }
                };
                let o = proxy_connection(down, connect, Settings::default(), &counters).await;
                let _ = tx.send(o);
            });
        }
    });

    let roots = pki.roots()?;
    let cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots)
    .with_no_client_auth();
    let tcp = TcpStream::connect(proxy_addr).await?;
    let s = tokio_rustls::TlsConnector::from(Arc::new(cfg))
        .connect("proxy.internal".try_into()?, tcp)
        .await?;
    let reply = half_close_round_trip(s, &[7u8; 50_000]).await?;
    assert_eq!(reply, "tls got 50000 bytes");
    let o = next(&mut outcomes).await?;
    assert_eq!(
        (o.end, o.rx_bytes, o.tx_bytes),
        (End::Closed, 50_000, reply.len() as u64)
    );
    Ok(())
}

/// The one idle rule, on a paused clock: bytes either way re-arm it, and after
/// `idle` with none the splice ends with both directions' byte counts.
#[tokio::test(start_paused = true)]
async fn splice_ends_only_after_idle_without_bytes_either_way() {
    let (a, mut a_peer) = tokio::io::duplex(1024);
    let (b, mut b_peer) = tokio::io::duplex(1024);
    let idle = Duration::from_secs(10);
    let spliced = tokio::spawn(splice(a, b, idle, [None, None]));
    let mut buf = [0u8; 2];
    for _ in 0..3 {
        // 8s of quiet, then a byte one way or the other: never idle for 10s.
        tokio::time::sleep(Duration::from_secs(8)).await;
        a_peer.write_all(b"x").await.expect("write a");
        b_peer.read_exact(&mut buf[..1]).await.expect("read b");
        tokio::time::sleep(Duration::from_secs(8)).await;
        b_peer.write_all(b"yz").await.expect("write b");
        a_peer.read_exact(&mut buf).await.expect("read a");
    }
    assert!(!spliced.is_finished());
    let t = tokio::time::Instant::now();
    let out = spliced.await.expect("splice task");
    assert_eq!(out.end, End::IdleTimeout);
    assert_eq!(out.bytes, [3, 6]);
    let waited = t.elapsed();
    assert!(
        waited >= idle && waited < idle + Duration::from_secs(1),
        "{waited:?}"
    );
}
