//! Upstream TLS origination for a cluster: CA bundle, SNI, `verify_sans`, an optional
//! client certificate (mTLS to the upstream) and ALPN.

use std::io;
use std::net::IpAddr;
use std::sync::{Arc, Weak};

use arc_swap::ArcSwap;
use attache_filters::Stats;
use prometheus::{IntCounter, IntGauge};
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::ServerName;
use rustls::ClientConfig;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use crate::config::raw;

use super::material::{self, load_pair, load_roots, Problem, Problems};
use super::reload::{self, Reload, Watch};
use super::validate::{usable, validate_cluster_with};
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
    raw: raw::ClusterTls,
    sni: Option<ServerName<'static>>,
    current: ArcSwap<Loaded>,
    handshake_ok: IntCounter,
    handshake_failed: IntCounter,
    reload_ok: IntCounter,
    reload_failed: IntCounter,
    expiry: IntGauge,
    me: Weak<ClientTls>,
    watch: Watch,
}

impl std::fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientTls")
            .field("cluster", &self.cluster)
            .finish_non_exhaustive()
    }
}

impl ClientTls {
    /// Validate and load everything, register metrics, and (inside a tokio runtime)
    /// start the file watcher. ALPN is `tls.alpn` as given: for a `protocol: http2`
    /// cluster pass `alpn: ["h2"]` when the config left it unset.
    pub fn build(
        tls: &raw::ClusterTls,
        cluster: &str,
        stats: &Stats,
    ) -> Result<Arc<ClientTls>, Problems> {
        let problems = validate_cluster_with(tls, true);
        if !problems.is_empty() {
            return Err(problems);
        }
        let paths = watched_paths(tls);
        let initial = reload::fingerprint(&paths);
        let loaded = load(tls)?;
        let sni = tls
            .sni
            .as_deref()
            .and_then(|s| ServerName::try_from(s.to_string()).ok());

        let hs = stats.counter_vec(
            CLUSTER_HANDSHAKE_TOTAL,
            "Upstream TLS handshakes by result",
            &["cluster", "result"],
        );
        let reloads = stats.counter_vec(
            CLUSTER_RELOAD_TOTAL,
            "Cluster certificate reloads by result",
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
            watch: Watch::new(paths, initial),
            cluster: cluster.to_string(),
            raw: tls.clone(),
            sni,
            current: ArcSwap::from_pointee(loaded),
            handshake_ok: hs.with_label_values(&[cluster, "ok"]),
            handshake_failed: hs.with_label_values(&[cluster, "failed"]),
            reload_ok: reloads.with_label_values(&[cluster, "ok"]),
            reload_failed: reloads.with_label_values(&[cluster, "failed"]),
            expiry,
        });
        client.publish_expiry();
        client.watch.ensure_started(&client.me);
        Ok(client)
    }

    fn publish_expiry(&self) {
        if let Some(t) = self.current.load().client_cert_not_after {
            self.expiry.set(t);
        }
    }

    /// The cluster this belongs to.
    pub fn cluster(&self) -> &str {
        &self.cluster
    }

    /// Every certificate in use now (the client certificate, then the CAs).
    pub fn certs(&self) -> Vec<material::CertInfo> {
        self.current.load().certs.clone()
    }

    /// The rustls config new connections use now.
    pub fn config(&self) -> Arc<ClientConfig> {
        self.current.load().config.clone()
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
        self.watch.ensure_started(&self.me);
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
        let loaded = load(&self.raw)?;
        self.current.store(Arc::new(loaded));
        self.publish_expiry();
        Ok(())
    }

    fn counters(&self) -> (&IntCounter, &IntCounter) {
        (&self.reload_ok, &self.reload_failed)
    }
}

fn watched_paths(tls: &raw::ClusterTls) -> Vec<String> {
    [&tls.ca, &tls.cert_chain, &tls.private_key]
        .into_iter()
        .flatten()
        .cloned()
        .collect()
}

/// Read every file of a cluster `tls:` block and build its rustls config.
pub(crate) fn load(tls: &raw::ClusterTls) -> Result<Loaded, Problems> {
    let provider = material::provider();
    let now = material::now_unix();
    let mut problems = Problems::new();
    let roots = usable(&tls.ca).and_then(|p| load_roots(p, "ca", &mut problems));
    let identity = load_pair(
        usable(&tls.cert_chain),
        usable(&tls.private_key),
        "cert_chain",
        "private_key",
        &provider,
        now,
        &mut problems,
    );
    if !problems.is_empty() {
        return Err(problems);
    }
    let Some(roots) = roots else {
        return Err(problems);
    };
    if tls.cert_chain.is_some() && identity.is_none() {
        return Err(problems);
    }
    let roots = Arc::new(roots);
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| vec![Problem::new("ca".to_string(), format!("unsupported: {e}"))])?;
    let builder = if tls.verify_sans.is_empty() {
        let verifier = WebPkiServerVerifier::builder_with_provider(roots, provider.clone())
            .build()
            .map_err(|e| {
                vec![Problem::new(
                    "ca".to_string(),
                    format!("cannot verify servers with it: {e}"),
                )]
            })?;
        builder.with_webpki_verifier(verifier)
    } else {
        let algs = provider.signature_verification_algorithms;
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(SanServerVerifier::new(
                roots,
                algs,
                tls.verify_sans.clone(),
            )))
    };
    let client_cert_not_after = identity.as_ref().map(|id| id.leaf.not_after);
    let mut certs: Vec<material::CertInfo> = identity
        .iter()
        .map(|id| material::CertInfo {
            role: "client",
            name: "client".into(),
            path: tls.cert_chain.clone().unwrap_or_default(),
            facts: id.leaf.clone(),
        })
        .collect();
    if let Some(ca) = &tls.ca {
        certs.extend(
            material::bundle_facts(ca)
                .into_iter()
                .map(|facts| material::CertInfo {
                    role: "ca",
                    name: "ca".into(),
                    path: ca.clone(),
                    facts,
                }),
        );
    }
    let mut config = match identity {
        Some(id) => builder
            .with_client_cert_resolver(Arc::new(rustls::sign::SingleCertAndKey::from(id.key))),
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = tls
        .alpn
        .iter()
        .flatten()
        .map(|p| p.as_bytes().to_vec())
        .collect();
    Ok(Loaded {
        config: Arc::new(config),
        client_cert_not_after,
        certs,
    })
}
