//! Test support: a per-run PKI (rcgen), a TLS echo server on `ServerTls::accept`, and
//! a rustls client.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result};
use rcgen::{
    BasicConstraints, Certificate, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, SanType, SignatureAlgorithm,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

use super::{HandshakeFailure, PeerInfo, ServerTls};

/// Key algorithm of a generated certificate.
#[derive(Clone, Copy, Debug)]
pub enum Alg {
    P256,
    P384,
    Ed25519,
    /// RSA 2048, generated with the `openssl` CLI (rcgen on ring cannot generate RSA).
    Rsa,
}

/// What to put in a leaf certificate.
#[derive(Clone, Debug)]
pub struct Leaf<'a> {
    pub cn: &'a str,
    pub dns: &'a [&'a str],
    pub uri: &'a [&'a str],
    pub ip: &'a [IpAddr],
    pub alg: Alg,
    pub expired: bool,
}

impl<'a> Leaf<'a> {
    pub fn new(cn: &'a str) -> Self {
        Leaf {
            cn,
            dns: &[],
            uri: &[],
            ip: &[],
            alg: Alg::P256,
            expired: false,
        }
    }
}

/// Paths of an issued certificate and its key.
#[derive(Clone, Debug)]
pub struct Issued {
    pub cert: String,
    pub key: String,
    pub der: Vec<u8>,
}

/// A CA in a temp dir that issues server and client certificates.
pub struct Pki {
    pub dir: PathBuf,
    pub ca_path: String,
    ca: Certificate,
    ca_key: KeyPair,
}

fn alg(a: Alg) -> &'static SignatureAlgorithm {
    match a {
        Alg::P256 | Alg::Rsa => &rcgen::PKCS_ECDSA_P256_SHA256,
        Alg::P384 => &rcgen::PKCS_ECDSA_P384_SHA384,
        Alg::Ed25519 => &rcgen::PKCS_ED25519,
    }
}

fn rsa_key() -> Result<KeyPair> {
    let out = std::process::Command::new("openssl")
        .args([
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
        ])
        .output()
        .context("running openssl genpkey (install openssl)")?;
    anyhow::ensure!(out.status.success(), "openssl genpkey failed");
    Ok(KeyPair::from_pem_and_sign_algo(
        &String::from_utf8(out.stdout)?,
        &rcgen::PKCS_RSA_SHA256,
    )?)
}

impl Pki {
    pub fn new(dir: &Path, name: &str) -> Result<Pki> {
        let ca_key = KeyPair::generate()?;
        let mut p = CertificateParams::new(Vec::<String>::new())?;
        p.distinguished_name
            .push(DnType::CommonName, format!("{name} test ca"));
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca = p.self_signed(&ca_key)?;
        let ca_path = dir.join(format!("{name}-ca.pem"));
        std::fs::write(&ca_path, ca.pem())?;
        Ok(Pki {
            dir: dir.to_path_buf(),
            ca_path: path_str(&ca_path),
            ca,
            ca_key,
        })
    }

    /// Issue a leaf valid for both server and client auth, written to `<file>.pem/.key`.
    pub fn issue(&self, file: &str, leaf: &Leaf<'_>) -> Result<Issued> {
        let key = match leaf.alg {
            Alg::Rsa => rsa_key()?,
            a => KeyPair::generate_for(alg(a))?,
        };
        let mut p = CertificateParams::new(Vec::<String>::new())?;
        p.distinguished_name.push(DnType::CommonName, leaf.cn);
        p.distinguished_name
            .push(DnType::OrganizationName, "attache tests");
        for d in leaf.dns {
            p.subject_alt_names.push(SanType::DnsName((*d).try_into()?));
        }
        for u in leaf.uri {
            p.subject_alt_names.push(SanType::URI((*u).try_into()?));
        }
        for ip in leaf.ip {
            p.subject_alt_names.push(SanType::IpAddress(*ip));
        }
        p.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        p.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        if leaf.expired {
            p.not_before = rcgen::date_time_ymd(2020, 1, 1);
            p.not_after = rcgen::date_time_ymd(2021, 1, 1);
        }
        let cert = p.signed_by(&key, &self.ca, &self.ca_key)?;
        let cert_path = self.dir.join(format!("{file}.pem"));
        let key_path = self.dir.join(format!("{file}.key"));
        std::fs::write(&cert_path, cert.pem())?;
        std::fs::write(&key_path, key.serialize_pem())?;
        Ok(Issued {
            cert: path_str(&cert_path),
            key: path_str(&key_path),
            der: cert.der().to_vec(),
        })
    }

    pub fn roots(&self) -> Result<rustls::RootCertStore> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.ca.der().clone())?;
        Ok(roots)
    }
}

pub fn path_str(p: &Path) -> String {
    p.to_string_lossy().into_owned()
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
