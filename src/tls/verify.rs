//! Certificate verifiers: the downstream SAN allowlist and the upstream `verify_sans`
//! check, each enforced inside the handshake by wrapping webpki verification.
//!
//! Choice: a client whose certificate chains to `client_ca` but whose SANs are not on
//! `allowed_client_sans` fails the TLS handshake (alert `access_denied`) rather than
//! getting an HTTP 403 later. That holds for every protocol (HTTP, TCP, Thrift) the
//! same way, no byte from such a client reaches a codec, and it is counted as
//! `attache_tls_handshake_total{result="san_denied"}`.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::ParsedCertificate;
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, Error, RootCertStore};

use crate::router::SanMatch;

use super::material::cert_facts;

/// Wraps webpki client verification (chain to `client_ca`, validity, EKU) and then
/// requires one URI or DNS SAN of the leaf to match the allowlist.
#[derive(Debug)]
pub struct AllowlistClientVerifier {
    inner: Arc<dyn ClientCertVerifier>,
    allow: Vec<SanMatch>,
}

impl AllowlistClientVerifier {
    pub fn new(inner: Arc<dyn ClientCertVerifier>, allow: Vec<SanMatch>) -> Self {
        AllowlistClientVerifier { inner, allow }
    }
}

/// The error a SAN-allowlist rejection produces (rustls sends `access_denied`).
pub const SAN_DENIED: CertificateError = CertificateError::ApplicationVerificationFailure;

impl ClientCertVerifier for AllowlistClientVerifier {
    fn offer_client_auth(&self) -> bool {
        self.inner.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.inner.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, Error> {
        let verified = self
            .inner
            .verify_client_cert(end_entity, intermediates, now)?;
        let facts = cert_facts(end_entity.as_ref())
            .map_err(|_| Error::InvalidCertificate(CertificateError::BadEncoding))?;
        let allowed = facts
            .uri_sans
            .iter()
            .chain(facts.dns_sans.iter())
            .any(|san| self.allow.iter().any(|m| m.matches(san)));
        if allowed {
            Ok(verified)
        } else {
            Err(Error::InvalidCertificate(SAN_DENIED))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// Upstream verification when `verify_sans` is set: the chain must verify against
/// the cluster's CA (validity, EKU serverAuth) and the leaf must carry one of the
/// listed names as a DNS, URI or IP SAN. The SNI/endpoint name is then not
/// required to appear in the certificate (Envoy's `match_subject_alt_names`).
#[derive(Debug)]
pub struct SanServerVerifier {
    roots: Arc<RootCertStore>,
    algs: WebPkiSupportedAlgorithms,
    sans: Vec<String>,
}

impl SanServerVerifier {
    pub fn new(
        roots: Arc<RootCertStore>,
        algs: WebPkiSupportedAlgorithms,
        sans: Vec<String>,
    ) -> Self {
        SanServerVerifier { roots, algs, sans }
    }
}

impl ServerCertVerifier for SanServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        let cert = ParsedCertificate::try_from(end_entity)?;
        rustls::client::verify_server_cert_signed_by_trust_anchor(
            &cert,
            &self.roots,
            intermediates,
            now,
            self.algs.all,
        )?;
        let facts = cert_facts(end_entity.as_ref())
            .map_err(|_| Error::InvalidCertificate(CertificateError::BadEncoding))?;
        let ok = self.sans.iter().any(|want| {
            facts.dns_sans.iter().any(|d| d.eq_ignore_ascii_case(want))
                || facts.uri_sans.iter().any(|u| u == want)
                || facts.ip_sans.iter().any(|ip| ip.to_string() == *want)
        });
        if ok {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(Error::InvalidCertificate(CertificateError::NotValidForName))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algs)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algs)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.algs.supported_schemes()
    }
}
