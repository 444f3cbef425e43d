//! Downstream TLS termination: the listener's rustls `ServerConfig` (SNI certificate
//! choice, client certificate verification, ALPN), the timed handshake with its
//! metric, and the verified peer's identity.

use std::collections::HashMap;
use std::sync::{Arc, Weak};
use std::time::Duration;

use attache_filters::Stats;
use prometheus::{IntCounter, IntGauge};
use rustls::crypto::CryptoProvider;
use rustls::server::danger::ClientCertVerifier;
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{CommonState, ServerConfig};
use tokio::io::{AsyncRead, AsyncWrite};

use crate::config::types::ForwardClientCert;

use super::material::{
    self, cert_facts, load_identity, load_roots, sha256_hex, Identity, Problem, Problems,
};
use super::reload::{self, Material, Reload};
use super::settings::{ListenerSettings, SniCertificate};
use super::stream::{self, ServerStream};
use super::verify::{AllowlistClientVerifier, SAN_DENIED};
use super::{CERT_EXPIRY, HANDSHAKE_TOTAL, RELOAD_TOTAL};

/// Handshake timeout when the config sets none.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The identity of a downstream peer after a successful handshake.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PeerInfo {
    /// The client presented a certificate and it verified (chain, validity, allowlist).
    pub has_client_cert: bool,
    /// URI SANs of the client certificate (SPIFFE IDs), in certificate order.
    pub uri_sans: Vec<String>,
    /// DNS SANs of the client certificate, in certificate order.
    pub dns_sans: Vec<String>,
    /// Client certificate subject in RFC 2253 form (`CN=web,O=Example`); empty without one.
    pub subject: String,
    /// Lowercase hex SHA-256 of the client certificate's DER; empty without one.
    pub cert_sha256_hex: String,
    /// ALPN settled on `h2`: serve HTTP/2.
    pub alpn_h2: bool,
    /// The SNI name the client asked for, if any.
    pub sni: Option<String>,
    /// Negotiated protocol version, Envoy's spelling (`TLSv1.3`).
    pub version: &'static str,
    /// Negotiated cipher suite (`TLS13_AES_128_GCM_SHA256`).
    pub cipher: &'static str,
    /// Our own identity: the first URI SAN of the listener's default certificate
    /// (XFCC `By=`).
    pub local_uri: Option<String>,
}

impl PeerInfo {
    /// All SANs, URI first then DNS (what a route's `peer_san` match looks at).
    pub fn sans(&self) -> impl Iterator<Item = &str> {
        self.uri_sans
            .iter()
            .chain(self.dns_sans.iter())
            .map(String::as_str)
    }
}

/// Why a handshake failed; also the `result` label of `attache_tls_handshake_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HandshakeFailure {
    /// Client certificate required and none sent.
    NoClientCert,
    /// Client certificate did not verify: unknown CA, expired, not yet valid, bad EKU,
    /// bad signature or encoding.
    BadClientCert,
    /// Verified client certificate, but no SAN on `allowed_client_sans`.
    SanDenied,
    /// Not TLS, an unsupported version, no shared cipher/ALPN, a truncated hello, a
    /// reset or EOF mid-handshake.
    Protocol,
    /// The handshake did not finish within `handshake_timeout`.
    Timeout,
}

impl HandshakeFailure {
    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            HandshakeFailure::NoClientCert => "no_client_cert",
            HandshakeFailure::BadClientCert => "bad_client_cert",
            HandshakeFailure::SanDenied => "san_denied",
            HandshakeFailure::Protocol => "protocol_error",
            HandshakeFailure::Timeout => "timeout",
        }
    }

    /// Classify what a server handshake returned (a rustls error inside an
    /// `InvalidData` I/O error, or the socket's).
    pub fn classify(err: &std::io::Error) -> HandshakeFailure {
        let rustls_err = err
            .get_ref()
            .and_then(|e| e.downcast_ref::<rustls::Error>());
        match rustls_err {
            Some(rustls::Error::NoCertificatesPresented) => HandshakeFailure::NoClientCert,
            Some(rustls::Error::InvalidCertificate(c)) if *c == SAN_DENIED => {
                HandshakeFailure::SanDenied
            }
            Some(rustls::Error::InvalidCertificate(_)) => HandshakeFailure::BadClientCert,
            _ => HandshakeFailure::Protocol,
        }
    }
}

/// A failed downstream handshake. Branch on [`HandshakeError::kind`], not the text.
#[derive(Debug, thiserror::Error)]
#[error("tls handshake failed: {}", kind.as_str())]
pub struct HandshakeError {
    kind: HandshakeFailure,
    #[source]
    source: Option<std::io::Error>,
}

impl HandshakeError {
    pub fn kind(&self) -> HandshakeFailure {
        self.kind
    }

    pub fn is_timeout(&self) -> bool {
        self.kind == HandshakeFailure::Timeout
    }
}

struct HandshakeCounters {
    ok: IntCounter,
    no_client_cert: IntCounter,
    bad_client_cert: IntCounter,
    san_denied: IntCounter,
    protocol_error: IntCounter,
    timeout: IntCounter,
}

impl HandshakeCounters {
    fn new(stats: &Stats, listener: &str) -> Self {
        let vec = stats.counter_vec(
            HANDSHAKE_TOTAL,
            "Downstream TLS handshakes by outcome",
            &["listener", "result"],
        );
        let h = |r: &str| vec.with_label_values(&[listener, r]);
        HandshakeCounters {
            ok: h("ok"),
            no_client_cert: h(HandshakeFailure::NoClientCert.as_str()),
            bad_client_cert: h(HandshakeFailure::BadClientCert.as_str()),
            san_denied: h(HandshakeFailure::SanDenied.as_str()),
            protocol_error: h(HandshakeFailure::Protocol.as_str()),
            timeout: h(HandshakeFailure::Timeout.as_str()),
        }
    }

    fn failed(&self, kind: HandshakeFailure) -> &IntCounter {
        match kind {
            HandshakeFailure::NoClientCert => &self.no_client_cert,
            HandshakeFailure::BadClientCert => &self.bad_client_cert,
            HandshakeFailure::SanDenied => &self.san_denied,
            HandshakeFailure::Protocol => &self.protocol_error,
            HandshakeFailure::Timeout => &self.timeout,
        }
    }
}

/// What one load of the files produced.
pub(crate) struct Loaded {
    config: Arc<ServerConfig>,
    local_uri: Option<String>,
    /// (cert label, not_after) in `cert_labels` order.
    expiries: Vec<(String, i64)>,
    /// Every certificate in use, for `GET /certs`.
    certs: Vec<material::CertInfo>,
}

/// A listener's TLS: the current rustls config (swapped on rotation) and its metrics.
pub struct ServerTls {
    listener: String,
    material: Material<ListenerSettings, Loaded>,
    handshake_timeout: Duration,
    forward_client_cert: ForwardClientCert,
    handshakes: HandshakeCounters,
    expiry: HashMap<String, IntGauge>,
    me: Weak<ServerTls>,
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTls")
            .field("listener", &self.listener)
            .field("handshake_timeout", &self.handshake_timeout)
            .field("forward_client_cert", &self.forward_client_cert)
            .finish_non_exhaustive()
    }
}

impl ServerTls {
    /// Load every file, register metrics, and (inside a tokio runtime) start the
    /// file watcher. Errors are every file problem, keyed as in the `tls:` block.
    pub fn build(
        tls: &ListenerSettings,
        listener: &str,
        stats: &Stats,
    ) -> Result<Arc<ServerTls>, Problems> {
        let reloads = || {
            let metric = (RELOAD_TOTAL, "Listener certificate reloads by result");
            reload::counters(stats, metric, ("listener", listener))
        };
        let material = Material::load(tls.clone(), tls.files(), load, reloads)?;
        let expiry_vec = stats.gauge_vec(
            CERT_EXPIRY,
            "Unix time at which a serving certificate expires",
            &["listener", "cert"],
        );
        let expiry: HashMap<String, IntGauge> = material
            .current()
            .expiries
            .iter()
            .map(|(label, _)| {
                (
                    label.clone(),
                    expiry_vec.with_label_values(&[listener, label]),
                )
            })
            .collect();
        let server = Arc::new_cyclic(|me| ServerTls {
            me: me.clone(),
            listener: listener.to_string(),
            material,
            handshake_timeout: tls.handshake_timeout,
            forward_client_cert: tls.forward_client_cert,
            handshakes: HandshakeCounters::new(stats, listener),
            expiry,
        });
        server.publish_expiry();
        server.material.watch.ensure_started(&server.me);
        Ok(server)
    }

    fn publish_expiry(&self) {
        for (label, not_after) in &self.material.current().expiries {
            if let Some(g) = self.expiry.get(label) {
                g.set(*not_after);
            }
        }
    }

    /// The listener this belongs to.
    pub fn listener(&self) -> &str {
        &self.listener
    }

    /// The `forward_client_cert` policy, for [`apply_xfcc`](super::apply_xfcc).
    pub fn forward_client_cert(&self) -> ForwardClientCert {
        self.forward_client_cert
    }

    /// Every certificate in use now (serving certificates, then client CAs).
    pub fn certs(&self) -> Vec<material::CertInfo> {
        self.material.current().certs.clone()
    }

    /// The rustls config new handshakes use now.
    pub fn config(&self) -> Arc<ServerConfig> {
        self.material.current().config.clone()
    }

    /// Run the server handshake under the handshake timeout and count its outcome.
    /// On failure the connection is dropped (closed); nothing else is affected.
    pub async fn accept<IO>(&self, io: IO) -> Result<(ServerStream<IO>, PeerInfo), HandshakeError>
    where
        IO: AsyncRead + AsyncWrite + Unpin,
    {
        self.material.watch.ensure_started(&self.me);
        let current = self.material.current();
        let handshake = ServerStream::accept(io, current.config.clone());
        match tokio::time::timeout(self.handshake_timeout, handshake).await {
            Err(_) => {
                self.handshakes.timeout.inc();
                Err(HandshakeError {
                    kind: HandshakeFailure::Timeout,
                    source: None,
                })
            }
            Ok(Err(e)) => {
                let kind = HandshakeFailure::classify(&e);
                self.handshakes.failed(kind).inc();
                tracing::debug!(listener = %self.listener, result = kind.as_str(), error = %e, "tls handshake failed");
                Err(HandshakeError {
                    kind,
                    source: Some(e),
                })
            }
            Ok(Ok((stream, sni))) => {
                let peer = peer_info(stream.common(), sni, current.local_uri.clone());
                self.handshakes.ok.inc();
                Ok((stream, peer))
            }
        }
    }
}

impl Reload for ServerTls {
    fn scope(&self) -> (&'static str, &str) {
        ("listener", &self.listener)
    }

    fn reload(&self) -> Result<(), Problems> {
        self.material.reload()?;
        self.publish_expiry();
        Ok(())
    }

    fn counters(&self) -> (&IntCounter, &IntCounter) {
        self.material.counters()
    }
}

fn peer_info(conn: &CommonState, sni: Option<String>, local_uri: Option<String>) -> PeerInfo {
    let mut peer = PeerInfo {
        alpn_h2: conn.alpn_protocol() == Some(b"h2"),
        sni,
        version: match conn.protocol_version() {
            Some(rustls::ProtocolVersion::TLSv1_3) => "TLSv1.3",
            Some(rustls::ProtocolVersion::TLSv1_2) => "TLSv1.2",
            _ => "",
        },
        cipher: conn
            .negotiated_cipher_suite()
            .and_then(|c| c.suite().as_str())
            .unwrap_or(""),
        local_uri,
        ..PeerInfo::default()
    };
    if let Some(leaf) = conn.peer_certificates().and_then(|c| c.first()) {
        peer.has_client_cert = true;
        peer.cert_sha256_hex = sha256_hex(leaf.as_ref());
        if let Ok(facts) = cert_facts(leaf.as_ref()) {
            peer.uri_sans = facts.uri_sans;
            peer.dns_sans = facts.dns_sans;
            peer.subject = facts.subject;
        }
    }
    peer
}

/// Chooses the certificate by SNI: exact name, then `*.parent`, then the default.
#[derive(Debug)]
struct SniResolver {
    exact: HashMap<String, Arc<CertifiedKey>>,
    wildcard: HashMap<String, Arc<CertifiedKey>>,
    default: Arc<CertifiedKey>,
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        stream::note_sni(hello.server_name());
        let Some(name) = hello.server_name() else {
            return Some(self.default.clone());
        };
        let name = name.to_ascii_lowercase();
        if let Some(k) = self.exact.get(&name) {
            return Some(k.clone());
        }
        if let Some((_, parent)) = name.split_once('.') {
            if let Some(k) = self.wildcard.get(parent) {
                return Some(k.clone());
            }
        }
        Some(self.default.clone())
    }
}

/// Read every file of a listener's TLS and build its rustls config: the serving
/// identities, the client CA, then the config over them.
fn load(tls: &ListenerSettings) -> Result<Loaded, Problems> {
    let provider = material::provider();
    let mut problems = Problems::new();
    let ids = load_identities(tls, &provider, &mut problems);
    let roots = tls
        .client_ca
        .as_deref()
        .and_then(|ca| load_roots(ca, "client_ca", &mut problems));
    if !problems.is_empty() {
        return Err(problems);
    }
    let Some(default_id) = ids
        .default
        .as_ref()
        .or(ids.by_name.first().map(|(_, id)| id))
    else {
        return Err(problems);
    };
    let local_uri = default_id.leaf.uri_sans.first().cloned();
    let resolver = ids.resolver(default_id);
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(tls.min_version.versions())
        .map_err(|e| {
            vec![Problem::new(
                "min_version".to_string(),
                format!("unsupported: {e}"),
            )]
        })?;
    let builder = match roots {
        Some(roots) => builder.with_client_cert_verifier(client_verifier(tls, roots, provider)?),
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_cert_resolver(Arc::new(resolver));
    config.alpn_protocols = tls.alpn.clone();
    Ok(Loaded {
        config: Arc::new(config),
        local_uri,
        expiries: ids.expiries(),
        certs: ids.certs(tls),
    })
}

/// A listener's serving identities: the default certificate and the SNI ones.
struct Identities<'a> {
    default: Option<Identity>,
    by_name: Vec<(&'a SniCertificate, Identity)>,
}

/// Read every serving certificate and key; problems under their keys.
fn load_identities<'a>(
    tls: &'a ListenerSettings,
    provider: &CryptoProvider,
    problems: &mut Problems,
) -> Identities<'a> {
    let now = material::now_unix();
    let default = tls.default_cert.as_ref().and_then(|p| {
        let (c, k) = (&p.cert_chain, &p.private_key);
        load_identity(c, k, "cert_chain", "private_key", provider, now, problems)
    });
    let mut by_name = Vec::with_capacity(tls.certificates.len());
    for (i, c) in tls.certificates.iter().enumerate() {
        let (ck, kk) = (
            format!("certificates.{i}.cert_chain"),
            format!("certificates.{i}.private_key"),
        );
        let (chain, key) = (&c.pair.cert_chain, &c.pair.private_key);
        if let Some(id) = load_identity(chain, key, &ck, &kk, provider, now, problems) {
            by_name.push((c, id));
        }
    }
    Identities { default, by_name }
}

impl Identities<'_> {
    /// Exact names, then `*.parent` wildcards, then `default`; the first
    /// certificate to claim a name keeps it.
    fn resolver(&self, default: &Identity) -> SniResolver {
        let mut exact = HashMap::new();
        let mut wildcard = HashMap::new();
        for (c, id) in &self.by_name {
            for name in &c.server_names {
                let name = name.to_ascii_lowercase();
                match name.strip_prefix("*.") {
                    Some(parent) => wildcard
                        .entry(parent.to_string())
                        .or_insert_with(|| id.key.clone()),
                    None => exact.entry(name).or_insert_with(|| id.key.clone()),
                };
            }
        }
        SniResolver {
            exact,
            wildcard,
            default: default.key.clone(),
        }
    }

    /// (cert label, not_after): `default`, then each SNI certificate's first name.
    fn expiries(&self) -> Vec<(String, i64)> {
        let default = self
            .default
            .iter()
            .map(|d| ("default".to_string(), d.leaf.not_after));
        let named = self
            .by_name
            .iter()
            .map(|(c, id)| (label(c), id.leaf.not_after));
        default.chain(named).collect()
    }

    /// Every certificate in use: serving certificates, then the client CAs.
    fn certs(&self, tls: &ListenerSettings) -> Vec<material::CertInfo> {
        let info =
            |role, name: String, path: &str, facts: &material::CertFacts| material::CertInfo {
                role,
                name,
                path: path.to_string(),
                facts: facts.clone(),
            };
        let mut certs = Vec::new();
        if let (Some(d), Some(p)) = (&self.default, &tls.default_cert) {
            certs.push(info("server", "default".into(), &p.cert_chain, &d.leaf));
        }
        for (c, id) in &self.by_name {
            certs.push(info("server", label(c), &c.pair.cert_chain, &id.leaf));
        }
        if let Some(ca) = &tls.client_ca {
            for f in material::bundle_facts(ca) {
                certs.push(info("ca", "client_ca".into(), ca, &f));
            }
        }
        certs
    }
}

/// An SNI certificate's label in metrics and `/certs`: its first server name.
fn label(c: &SniCertificate) -> String {
    c.server_names.first().cloned().unwrap_or_default()
}

/// Client certificates verified against `roots`, then (when set) the SAN allowlist.
fn client_verifier(
    tls: &ListenerSettings,
    roots: rustls::RootCertStore,
    provider: Arc<CryptoProvider>,
) -> Result<Arc<dyn ClientCertVerifier>, Problems> {
    let mut vb = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
    if !tls.require_client_cert {
        vb = vb.allow_unauthenticated();
    }
    let webpki = vb.build().map_err(|e| {
        vec![Problem::new(
            "client_ca".to_string(),
            format!("cannot verify client certificates with it: {e}"),
        )]
    })?;
    Ok(if tls.allowed_client_sans.is_empty() {
        webpki
    } else {
        Arc::new(AllowlistClientVerifier::new(
            webpki,
            tls.allowed_client_sans.clone(),
        ))
    })
}
