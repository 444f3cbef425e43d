//! Upstream TLS origination for a cluster: CA bundle, SNI, `verify_sans`, an optional
//! client certificate (mTLS to the upstream) and ALPN.

use std::io;
use std::net::IpAddr;
use std::sync::{Arc, Weak};

use attache_filters::Stats;
use prometheus::{IntCounter, IntGauge};
use rustls::client::danger::ServerCertVerifier;
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::ServerName;
use rustls::ClientConfig;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use super::material::{self, load_identity, load_roots, Identity, Problem, Problems};
use super::reload::{self, Material, Reload};
use super::settings::ClusterSettings;
use super::verify::SanServerVerifier;
use super::{CLUSTER_CERT_EXPIRY, CLUSTER_HANDSHAKE_TOTAL, CLUSTER_RELOAD_TOTAL};

pub(crate) struct Loaded {
    config: Arc<ClientConfig>,
    client_cert_not_after: Option<i64>,
    /// Every certificate in use, for `GET /certs`.
    certs: Vec<material::CertInfo>,
}

/// A cluster's upstream TLS. `connect` runs the client handshake; wrap it in the
/// cluster's connect timeout (it has none of its own).
pub struct ClientTls {
    cluster: String,
    sni: Option<ServerName<'static>>,
    material: Material<ClusterSettings, Loaded>,
    handshake_ok: IntCounter,
    handshake_failed: IntCounter,
    expiry: IntGauge,
    me: Weak<ClientTls>,
}

impl std::fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientTls")
            .field("cluster", &self.cluster)
            .field("sni", &self.sni)
            .finish_non_exhaustive()
    }
}

impl ClientTls {
    /// Load every file, register metrics, and (inside a tokio runtime) start the
    /// file watcher. Errors are every file problem, keyed as in the `tls:` block.
    pub fn build(
        tls: &ClusterSettings,
        cluster: &str,
        stats: &Stats,
    ) -> Result<Arc<ClientTls>, Problems> {
        let reloads = || {
            let metric = (
                CLUSTER_RELOAD_TOTAL,
                "Cluster certificate reloads by result",
            );
            reload::counters(stats, metric, ("cluster", cluster))
        };
        let material = Material::load(tls.clone(), tls.files(), load, reloads)?;
        let hs = stats.counter_vec(
            CLUSTER_HANDSHAKE_TOTAL,
            "Upstream TLS handshakes by result",
            &["cluster", "result"],
        );
        let expiry = stats
            .gauge_vec(
                CLUSTER_CERT_EXPIRY,
                "Unix time at which a cluster's client certificate expires",
                &["cluster", "cert"],
            )
            .with_label_values(&[cluster, "client"]);
        let client = Arc::new_cyclic(|me| ClientTls {
            me: me.clone(),
            cluster: cluster.to_string(),
            sni: tls.sni.clone(),
            material,
            handshake_ok: hs.with_label_values(&[cluster, "ok"]),
            handshake_failed: hs.with_label_values(&[cluster, "failed"]),
            expiry,
        });
        client.publish_expiry();
        client.material.watch.ensure_started(&client.me);
        Ok(client)
    }

    fn publish_expiry(&self) {
        if let Some(t) = self.material.current().client_cert_not_after {
            self.expiry.set(t);
        }
    }

    /// The cluster this belongs to.
    pub fn cluster(&self) -> &str {
        &self.cluster
    }

    /// Every certificate in use now (the client certificate, then the CAs).
    pub fn certs(&self) -> Vec<material::CertInfo> {
        self.material.current().certs.clone()
    }

    /// The rustls config new connections use now.
    pub fn config(&self) -> Arc<ClientConfig> {
        self.material.current().config.clone()
    }

    /// TLS over a connected socket; the server name is `sni`, else the peer's IP.
    pub async fn connect(&self, tcp: TcpStream) -> io::Result<TlsStream<TcpStream>> {
        let ip = tcp.peer_addr()?.ip();
        self.connect_io(tcp, ip).await
    }

    /// TLS over any stream; `endpoint_ip` names the server when `sni` is unset.
    /// A verification failure is an `io::Error` of kind `InvalidData` whose inner
    /// error is a `rustls::Error` (count it as an upstream connect failure, `UF`).
    pub async fn connect_io<IO>(&self, io: IO, endpoint_ip: IpAddr) -> io::Result<TlsStream<IO>>
    where
        IO: AsyncRead + AsyncWrite + Unpin,
    {
        let name = self
            .sni
            .clone()
            .unwrap_or(ServerName::IpAddress(endpoint_ip.into()));
        self.material.watch.ensure_started(&self.me);
        let connector = TlsConnector::from(self.config());
        match connector.connect(name, io).await {
            Ok(s) => {
                self.handshake_ok.inc();
                Ok(s)
            }
            Err(e) => {
                self.handshake_failed.inc();
                tracing::debug!(cluster = %self.cluster, error = %e, "upstream tls handshake failed");
                Err(e)
            }
        }
    }
}

impl Reload for ClientTls {
    fn scope(&self) -> (&'static str, &str) {
        ("cluster", &self.cluster)
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

/// Read every file of a cluster's TLS and build its rustls config.
fn load(tls: &ClusterSettings) -> Result<Loaded, Problems> {
    let provider = material::provider();
    let mut problems = Problems::new();
    let roots = load_roots(&tls.ca, "ca", &mut problems);
    let identity = tls.client_cert.as_ref().and_then(|p| {
        let (c, k) = (&p.cert_chain, &p.private_key);
        let now = material::now_unix();
        load_identity(
            c,
            k,
            "cert_chain",
            "private_key",
            &provider,
            now,
            &mut problems,
        )
    });
    let Some(roots) = roots.filter(|_| problems.is_empty()) else {
        return Err(problems);
    };
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| vec![Problem::new("ca".to_string(), format!("unsupported: {e}"))])?;
    let builder = builder
        .dangerous()
        .with_custom_certificate_verifier(server_verifier(tls, roots, &provider)?);
    let client_cert_not_after = identity.as_ref().map(|id| id.leaf.not_after);
    let certs = cert_infos(tls, identity.as_ref());
    let mut config = match identity {
        Some(id) => builder
            .with_client_cert_resolver(Arc::new(rustls::sign::SingleCertAndKey::from(id.key))),
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = tls.alpn.clone();
    Ok(Loaded {
        config: Arc::new(config),
        client_cert_not_after,
        certs,
    })
}

/// Upstream certificates verified against `roots` by webpki, then (with
/// `verify_sans`) for one of the names.
fn server_verifier(
    tls: &ClusterSettings,
    roots: rustls::RootCertStore,
    provider: &Arc<rustls::crypto::CryptoProvider>,
) -> Result<Arc<dyn ServerCertVerifier>, Problems> {
    let roots = Arc::new(roots);
    if !tls.verify_sans.is_empty() {
        let algs = provider.signature_verification_algorithms;
        let names = tls.verify_sans.clone();
        return Ok(Arc::new(SanServerVerifier::new(roots, algs, names)));
    }
    let verifier = WebPkiServerVerifier::builder_with_provider(roots, provider.clone())
        .build()
        .map_err(|e| {
            vec![Problem::new(
                "ca".to_string(),
                format!("cannot verify servers with it: {e}"),
            )]
        })?;
    Ok(verifier)
}

/// Every certificate in use: the client certificate, then the CAs.
fn cert_infos(tls: &ClusterSettings, identity: Option<&Identity>) -> Vec<material::CertInfo> {
    let info = |role, name: &str, path: &str, facts| material::CertInfo {
        role,
        name: name.into(),
        path: path.to_string(),
        facts,
    };
    let client = identity.zip(tls.client_cert.as_ref());
    let client = client.map(|(id, p)| info("client", "client", &p.cert_chain, id.leaf.clone()));
    let cas = material::bundle_facts(&tls.ca).into_iter();
    client
        .into_iter()
        .chain(cas.map(|facts| info("ca", "ca", &tls.ca, facts)))
        .collect()
}
