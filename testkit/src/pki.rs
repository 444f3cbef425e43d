//! A per-run PKI (rcgen): a CA in a temp dir that issues server and client
//! certificates, plus a rustls client and an `openssl s_client` wrapper.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use rcgen::{
    BasicConstraints, Certificate, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, SanType,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

/// Key algorithm of a generated certificate.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Alg {
    #[default]
    P256,
    P384,
    Ed25519,
    /// RSA 2048, generated with the `openssl` CLI (rcgen on ring cannot generate RSA).
    Rsa,
}

impl Alg {
    fn key(self) -> KeyPair {
        match self {
            Alg::P256 => KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256),
            Alg::P384 => KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384),
            Alg::Ed25519 => KeyPair::generate_for(&rcgen::PKCS_ED25519),
            Alg::Rsa => return rsa_key(),
        }
        .expect("leaf key")
    }
}

fn rsa_key() -> KeyPair {
    let out = Command::new("openssl")
        .args([
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
        ])
        .output()
        .expect("openssl must be installed (.ci/run installs it)");
    assert!(out.status.success(), "openssl genpkey failed");
    let pem = String::from_utf8(out.stdout).expect("pem is text");
    KeyPair::from_pem_and_sign_algo(&pem, &rcgen::PKCS_RSA_SHA256).expect("rsa key")
}

/// What to put in a leaf certificate.
#[derive(Clone, Debug, Default)]
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
            ..Leaf::default()
        }
    }
    pub fn dns(mut self, dns: &'a [&'a str]) -> Self {
        self.dns = dns;
        self
    }
    pub fn uri(mut self, uri: &'a [&'a str]) -> Self {
        self.uri = uri;
        self
    }
    pub fn expired(mut self) -> Self {
        self.expired = true;
        self
    }
}

/// Paths of an issued certificate and its key, plus the DER of the certificate.
#[derive(Clone, Debug)]
pub struct Issued {
    pub cert: String,
    pub key: String,
    pub der: Vec<u8>,
    pub cert_pem: String,
    pub key_pem: String,
}

/// A CA whose certificate is `<dir>/<name>-ca.pem`.
pub struct Pki {
    pub dir: PathBuf,
    pub ca_path: String,
    ca: Certificate,
    ca_key: KeyPair,
}

pub fn path_str(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

impl Pki {
    pub fn new(dir: &Path, name: &str) -> Pki {
        let ca_key = KeyPair::generate().expect("ca key");
        let mut p = CertificateParams::new(Vec::<String>::new()).expect("params");
        p.distinguished_name
            .push(DnType::CommonName, format!("{name} test ca"));
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca = p.self_signed(&ca_key).expect("self-signed ca");
        let ca_path = dir.join(format!("{name}-ca.pem"));
        std::fs::write(&ca_path, ca.pem()).expect("write ca");
        Pki {
            dir: dir.to_path_buf(),
            ca_path: path_str(&ca_path),
            ca,
            ca_key,
        }
    }

    /// Issue a leaf (server and client auth) without writing it.
    pub fn make(&self, leaf: &Leaf<'_>) -> (String, String, Vec<u8>) {
        let key = leaf.alg.key();
        let mut p = CertificateParams::new(Vec::<String>::new()).expect("params");
        p.distinguished_name.push(DnType::CommonName, leaf.cn);
        p.distinguished_name
            .push(DnType::OrganizationName, "attache tests");
        for d in leaf.dns {
            p.subject_alt_names
                .push(SanType::DnsName((*d).try_into().expect("dns san")));
        }
        for u in leaf.uri {
            p.subject_alt_names
                .push(SanType::URI((*u).try_into().expect("uri san")));
        }
        for ip in leaf.ip {
            p.subject_alt_names.push(SanType::IpAddress(*ip));
        }
        p.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        if leaf.alg == Alg::Rsa {
            // TLS 1.2 RSA key exchange encrypts to the certificate's key.
            p.key_usages.push(KeyUsagePurpose::KeyEncipherment);
        }
        if leaf.expired {
            p.not_before = rcgen::date_time_ymd(2020, 1, 1);
            p.not_after = rcgen::date_time_ymd(2021, 1, 1);
        }
        let cert = p
            .signed_by(&key, &self.ca, &self.ca_key)
            .expect("sign leaf");
        (cert.pem(), key.serialize_pem(), cert.der().to_vec())
    }

    /// Issue a leaf written to `<dir>/<file>.pem` and `<dir>/<file>.key`.
    pub fn issue(&self, file: &str, leaf: &Leaf<'_>) -> Issued {
        let (cert_pem, key_pem, der) = self.make(leaf);
        let cert = self.dir.join(format!("{file}.pem"));
        let key = self.dir.join(format!("{file}.key"));
        std::fs::write(&cert, &cert_pem).expect("write cert");
        std::fs::write(&key, &key_pem).expect("write key");
        Issued {
            cert: path_str(&cert),
            key: path_str(&key),
            der,
            cert_pem,
            key_pem,
        }
    }

    pub fn roots(&self) -> rustls::RootCertStore {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.ca.der().clone()).expect("add ca");
        roots
    }
}

/// A rustls client config trusting `pki`'s CA, with an optional client cert and ALPN.
pub fn client_config(
    pki: &Pki,
    client: Option<&Issued>,
    alpn: &[&str],
) -> Arc<rustls::ClientConfig> {
    let b = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_root_certificates(pki.roots());
    let mut cfg = match client {
        Some(c) => {
            let chain = vec![CertificateDer::from(c.der.clone())];
            let key: PrivateKeyDer<'static> =
                rustls_pemfile::private_key(&mut c.key_pem.as_bytes())
                    .expect("key pem")
                    .expect("a key");
            b.with_client_auth_cert(chain, key).expect("client cert")
        }
        None => b.with_no_client_auth(),
    };
    cfg.alpn_protocols = alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
    Arc::new(cfg)
}

/// Handshake with `addr` (SNI `sni`) and return the server's leaf certificate DER.
pub async fn server_cert(
    addr: SocketAddr,
    cfg: Arc<rustls::ClientConfig>,
    sni: &str,
) -> std::io::Result<Vec<u8>> {
    let fut = async {
        let tcp = tokio::net::TcpStream::connect(addr).await?;
        let name = ServerName::try_from(sni.to_string())
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
        let s = tokio_rustls::TlsConnector::from(cfg)
            .connect(name, tcp)
            .await?;
        Ok(s.get_ref()
            .1
            .peer_certificates()
            .and_then(|c| c.first())
            .map(|c| c.to_vec())
            .unwrap_or_default())
    };
    tokio::time::timeout(Duration::from_secs(10), fut)
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "tls client timed out"))?
}

/// Run `openssl s_client` against `addr` with extra args; (exit ok, stdout+stderr).
pub async fn s_client(addr: SocketAddr, args: &[&str]) -> (bool, String) {
    let mut all: Vec<String> = vec!["s_client".into(), "-connect".into(), addr.to_string()];
    all.extend(args.iter().map(|s| s.to_string()));
    let run = tokio::task::spawn_blocking(move || {
        let out = Command::new("timeout")
            .arg("15")
            .arg("openssl")
            .args(&all)
            .stdin(std::process::Stdio::null())
            .output()
            .expect("openssl must be installed (.ci/run installs it)");
        (
            out.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    });
    tokio::time::timeout(Duration::from_secs(30), run)
        .await
        .expect("openssl timed out")
        .expect("openssl task")
}
