//! The compiled `tls:` blocks the builders take: checked, every default applied
//! (in `config::compile::tls`). Paths are well-formed; their files are read by
//! the builders, and again on rotation.

use std::time::Duration;

use rustls::pki_types::ServerName;
use rustls::SupportedProtocolVersion;

use crate::config::types::ForwardClientCert;
use crate::router::SanMatch;

/// A certificate chain (leaf first) and its private key, as PEM file paths.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertPair {
    pub cert_chain: String,
    pub private_key: String,
}

/// A certificate served to clients asking for one of `server_names` (SNI); a
/// name may be `*.parent`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SniCertificate {
    pub server_names: Vec<String>,
    pub pair: CertPair,
}

/// The oldest TLS version a listener accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MinVersion {
    #[default]
    Tls12,
    Tls13,
}

impl MinVersion {
    /// The rustls versions this allows.
    pub fn versions(self) -> &'static [&'static SupportedProtocolVersion] {
        static BOTH: &[&SupportedProtocolVersion] =
            &[&rustls::version::TLS13, &rustls::version::TLS12];
        static ONLY13: &[&SupportedProtocolVersion] = &[&rustls::version::TLS13];
        match self {
            MinVersion::Tls12 => BOTH,
            MinVersion::Tls13 => ONLY13,
        }
    }
}

/// A listener's `tls:` block.
#[derive(Debug, Clone)]
pub struct ListenerSettings {
    /// Served when no SNI certificate matches (or the client sent no SNI).
    pub default_cert: Option<CertPair>,
    pub certificates: Vec<SniCertificate>,
    /// Client certificates are asked for and verified against this bundle.
    pub client_ca: Option<String>,
    /// With `client_ca`: a client without a certificate fails the handshake.
    pub require_client_cert: bool,
    /// With `client_ca`: a verified certificate must carry one of these SANs.
    pub allowed_client_sans: Vec<SanMatch>,
    /// Protocols offered by ALPN, in preference order.
    pub alpn: Vec<Vec<u8>>,
    pub min_version: MinVersion,
    pub handshake_timeout: Duration,
    pub forward_client_cert: ForwardClientCert,
}

impl Default for ListenerSettings {
    /// No certificates yet; every other key at its default.
    fn default() -> ListenerSettings {
        ListenerSettings {
            default_cert: None,
            certificates: Vec::new(),
            client_ca: None,
            require_client_cert: true,
            allowed_client_sans: Vec::new(),
            alpn: Vec::new(),
            min_version: MinVersion::Tls12,
            handshake_timeout: super::DEFAULT_HANDSHAKE_TIMEOUT,
            forward_client_cert: ForwardClientCert::SanitizeSet,
        }
    }
}

impl ListenerSettings {
    /// Every file this reads (watched for rotation).
    pub fn files(&self) -> Vec<String> {
        let pairs = self
            .default_cert
            .iter()
            .chain(self.certificates.iter().map(|c| &c.pair));
        let mut paths: Vec<String> = pairs
            .flat_map(|p| [p.cert_chain.clone(), p.private_key.clone()])
            .collect();
        paths.extend(self.client_ca.iter().cloned());
        paths
    }
}

/// A cluster's `tls:` block.
#[derive(Debug, Clone)]
pub struct ClusterSettings {
    /// Upstream certificates are verified against this bundle (no system roots).
    pub ca: String,
    /// The server name sent and verified; `None`: the endpoint's IP address.
    pub sni: Option<ServerName<'static>>,
    /// When not empty, the upstream certificate must carry one of these SANs.
    pub verify_sans: Vec<String>,
    /// The client certificate presented to the upstream (mTLS).
    pub client_cert: Option<CertPair>,
    /// Protocols offered by ALPN, in preference order.
    pub alpn: Vec<Vec<u8>>,
}

impl ClusterSettings {
    /// Every file this reads (watched for rotation).
    pub fn files(&self) -> Vec<String> {
        let mut paths = vec![self.ca.clone()];
        if let Some(p) = &self.client_cert {
            paths.extend([p.cert_chain.clone(), p.private_key.clone()]);
        }
        paths
    }
}
