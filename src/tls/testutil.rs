//! Test support: the test kit's per-run PKI, a TLS echo server on
//! `ServerTls::accept`, and a rustls client.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

use super::{HandshakeFailure, PeerInfo, ServerTls};

pub use attache_testkit::pki::{path_str, Alg, Issued, Leaf};

/// The test kit's per-run CA (`attache_testkit::pki`, shared with the integration
/// tests). The kit panics on a broken environment; this wrapper keeps the `Result`
/// signatures these tests chain with `?`.
pub struct Pki(attache_testkit::pki::Pki);

impl std::ops::Deref for Pki {
    type Target = attache_testkit::pki::Pki;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl Pki {
    pub fn new(dir: &Path, name: &str) -> Result<Pki> {
        Ok(Pki(attache_testkit::pki::Pki::new(dir, name)))
    }

    /// Issue a leaf valid for both server and client auth, written to `<file>.pem/.key`.
    pub fn issue(&self, file: &str, leaf: &Leaf<'_>) -> Result<Issued> {
        Ok(self.0.issue(file, leaf))
    }

    pub fn roots(&self) -> Result<rustls::RootCertStore> {
        Ok(self.0.roots())
    }
}

pub const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
pub const FRONTEND: &str = "spiffe://example.org/ns/web/sa/frontend";

/// A per-run PKI with a second, unrelated one, and a server and a client leaf.
pub struct Fixture {
    _dir: tempfile::TempDir,
    pub pki: Pki,
    pub other: Pki,
    pub server: Issued,
    pub client: Issued,
}

pub fn fixture() -> Result<Fixture> {
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

/// What the echo server saw for one connection.
pub type Seen = std::result::Result<PeerInfo, HandshakeFailure>;

/// A TLS server on 127.0.0.1:0: per connection it reports the handshake result, then
/// reads one line and answers `echo:<line>` and closes.
pub async fn echo_server(
    tls: Arc<ServerTls>,
) -> Result<(SocketAddr, mpsc::UnboundedReceiver<Seen>)> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let tls = tls.clone();
            let tx = tx.clone();
            tokio::spawn(async move {
                match tls.accept(tcp).await {
                    Err(e) => {
                        let _ = tx.send(Err(e.kind()));
                    }
                    Ok((stream, peer)) => {
                        let _ = tx.send(Ok(peer));
                        let mut reader = BufReader::new(stream);
                        let mut line = String::new();
                        if reader.read_line(&mut line).await.is_ok() {
                            let mut stream = reader.into_inner();
                            let _ = stream.write_all(format!("echo:{line}").as_bytes()).await;
                            let _ = stream.shutdown().await;
                        }
                    }
                }
            });
        }
    });
    Ok((addr, rx))
}

/// Wait (bounded) for the next handshake result from the echo server.
pub async fn next_seen(rx: &mut mpsc::UnboundedReceiver<Seen>) -> Result<Seen> {
    tokio::time::timeout(std::time::Duration::from_secs(10), rx.recv())
        .await
        .context("no handshake result within 10s")?
        .context("echo server stopped")
}

/// A rustls client config trusting `roots`, with an optional client cert and ALPN.
pub fn client_config(
    roots: rustls::RootCertStore,
    client: Option<&Issued>,
    alpn: &[&str],
) -> Result<Arc<rustls::ClientConfig>> {
    let b = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots);
    let mut cfg = match client {
        Some(c) => {
            let chain: Vec<CertificateDer<'static>> = vec![CertificateDer::from(c.der.clone())];
            let pem = std::fs::read(&c.key)?;
            let key: PrivateKeyDer<'static> =
                rustls_pemfile::private_key(&mut &pem[..])?.context("no key in test pem")?;
            b.with_client_auth_cert(chain, key)?
        }
        None => b.with_no_client_auth(),
    };
    cfg.alpn_protocols = alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
    Ok(Arc::new(cfg))
}

/// What a rustls client got: the server's leaf DER, the ALPN, and the echo reply.
pub struct ClientResult {
    pub server_cert: Vec<u8>,
    pub alpn: Option<Vec<u8>>,
    pub reply: String,
}

/// Connect, handshake, send `ping\n`, read the reply until EOF.
pub async fn rustls_ping(
    addr: SocketAddr,
    cfg: Arc<rustls::ClientConfig>,
    sni: &str,
) -> Result<ClientResult> {
    let tcp = TcpStream::connect(addr).await?;
    let connector = tokio_rustls::TlsConnector::from(cfg);
    let name = ServerName::try_from(sni.to_string())?;
    let fut = async {
        let mut s = connector.connect(name, tcp).await?;
        let (_, conn) = s.get_ref();
        let server_cert = conn
            .peer_certificates()
            .and_then(|c| c.first())
            .map(|c| c.to_vec())
            .unwrap_or_default();
        let alpn = conn.alpn_protocol().map(<[u8]>::to_vec);
        s.write_all(b"ping\n").await?;
        let mut reply = String::new();
        s.read_to_string(&mut reply).await?;
        anyhow::Ok(ClientResult {
            server_cert,
            alpn,
            reply,
        })
    };
    tokio::time::timeout(std::time::Duration::from_secs(10), fut)
        .await
        .context("client timed out")?
}
