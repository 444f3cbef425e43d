//! TLS: downstream termination with mTLS, upstream origination, certificate
//! rotation and `x-forwarded-client-cert`, built from the typed settings that
//! `config::compile::tls` checks and compiles.
//!
//! Every rustls config is built with the ring provider explicitly
//! (`builder_with_provider`); nothing depends on a process-wide default provider.
//!
//! | metric | labels | what |
//! | --- | --- | --- |
//! | `attache_tls_handshake_total` | `listener`, `result` | downstream handshakes: `ok`, `no_client_cert`, `bad_client_cert`, `san_denied`, `protocol_error`, `timeout` |
//! | `attache_tls_cert_expiry_timestamp_seconds` | `listener`, `cert` | unix expiry of each serving certificate (`default` or the first server name) |
//! | `attache_tls_reload_total` | `listener`, `result` | listener certificate reloads: `ok`, `failed` |
//! | `attache_tls_cluster_handshake_total` | `cluster`, `result` | upstream handshakes: `ok`, `failed` |
//! | `attache_tls_cluster_cert_expiry_timestamp_seconds` | `cluster`, `cert` | unix expiry of a cluster's client certificate (`cert="client"`) |
//! | `attache_tls_cluster_reload_total` | `cluster`, `result` | cluster certificate reloads: `ok`, `failed` |

mod client;
mod material;
mod reload;
mod server;
mod settings;
mod stream;
mod verify;
mod xfcc;

#[cfg(test)]
mod tests;
#[cfg(test)]
pub(crate) mod testutil;

pub use client::ClientTls;
pub use material::{check_path, CertFacts, CertInfo, Problems};
pub use reload::POLL_INTERVAL;
pub use server::{
    HandshakeError, HandshakeFailure, PeerInfo, ServerTls, DEFAULT_HANDSHAKE_TIMEOUT,
};
pub use settings::{CertPair, ClusterSettings, ListenerSettings, MinVersion, SniCertificate};
pub use stream::ServerStream;
pub use xfcc::{apply_xfcc, xfcc_value, XFCC};

pub const HANDSHAKE_TOTAL: &str = "attache_tls_handshake_total";
pub const CERT_EXPIRY: &str = "attache_tls_cert_expiry_timestamp_seconds";
pub const RELOAD_TOTAL: &str = "attache_tls_reload_total";
pub const CLUSTER_HANDSHAKE_TOTAL: &str = "attache_tls_cluster_handshake_total";
pub const CLUSTER_CERT_EXPIRY: &str = "attache_tls_cluster_cert_expiry_timestamp_seconds";
pub const CLUSTER_RELOAD_TOTAL: &str = "attache_tls_cluster_reload_total";
