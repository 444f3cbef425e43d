//! Reading PEM certificate chains, private keys and CA bundles, and the few
//! certificate facts the proxy needs (validity, SANs, subject, fingerprint).

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;
use rustls::RootCertStore;
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

/// Every problem found, as (dotted key relative to the `tls:` block, message).
pub use crate::config::{Problem, Problems};

/// The facts about one certificate that metrics, verification and XFCC use.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CertFacts {
    pub not_before: i64,
    pub not_after: i64,
    pub uri_sans: Vec<String>,
    pub dns_sans: Vec<String>,
    pub ip_sans: Vec<IpAddr>,
    /// RFC 2253 order and escaping, as Envoy prints it.
    pub subject: String,
    pub issuer: String,
    /// Colon-separated hex, as `openssl x509 -serial` groups it.
    pub serial: String,
}

/// A certificate in use, for `GET /certs`.
#[derive(Debug, Clone)]
pub struct CertInfo {
    /// `server` (a listener's serving certificate), `client` (a cluster's client
    /// certificate) or `ca` (a trust anchor).
    pub role: &'static str,
    /// `default`, the first `server_names` entry, `client`, `client_ca` or `ca`.
    pub name: String,
    pub path: String,
    pub facts: CertFacts,
}

/// The facts of every certificate in a PEM bundle (a CA file); unreadable ones are
/// left out (loading the bundle reports them).
pub fn bundle_facts(path: &str) -> Vec<CertFacts> {
    read_file(path)
        .and_then(|pem| parse_certs(&pem, path))
        .map(|certs| {
            certs
                .iter()
                .filter_map(|c| cert_facts(c.as_ref()).ok())
                .collect()
        })
        .unwrap_or_default()
}

/// A loaded server or client certificate: the signing material plus its leaf facts.
#[derive(Debug, Clone)]
pub struct Identity {
    pub key: Arc<CertifiedKey>,
    pub leaf: CertFacts,
}

/// The ring provider, the only one this build carries.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Seconds since the Unix epoch (0 if the clock is before it).
pub fn now_unix() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Read a whole file; the error names the path and the OS reason.
pub fn read_file(path: &str) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("cannot read `{path}`: {e}"))
}

/// Parse every `CERTIFICATE` block of a PEM file.
pub fn parse_certs(pem: &[u8], path: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let mut certs = Vec::new();
    let mut other = 0usize;
    for item in rustls_pemfile::read_all(&mut &pem[..]) {
        match item {
            Ok(rustls_pemfile::Item::X509Certificate(c)) => certs.push(c),
            Ok(_) => other += 1,
            Err(e) => return Err(format!("`{path}` is not valid PEM: {e}")),
        }
    }
    if certs.is_empty() {
        return Err(if other == 0 {
            format!("`{path}` is not a PEM file (no `-----BEGIN CERTIFICATE-----` block)")
        } else {
            format!("`{path}` holds no certificate (only other PEM blocks)")
        });
    }
    for (i, c) in certs.iter().enumerate() {
        if X509Certificate::from_der(c.as_ref()).is_err() {
            return Err(format!(
                "certificate {} in `{path}` does not parse as X.509",
                i + 1
            ));
        }
    }
    Ok(certs)
}

/// Parse the first private key (PKCS#8, PKCS#1 RSA or SEC1 EC) of a PEM file.
pub fn parse_key(pem: &[u8], path: &str) -> Result<PrivateKeyDer<'static>, String> {
    let mut saw_any = false;
    for item in rustls_pemfile::read_all(&mut &pem[..]) {
        match item {
            Ok(rustls_pemfile::Item::Pkcs8Key(k)) => return Ok(PrivateKeyDer::Pkcs8(k)),
            Ok(rustls_pemfile::Item::Pkcs1Key(k)) => return Ok(PrivateKeyDer::Pkcs1(k)),
            Ok(rustls_pemfile::Item::Sec1Key(k)) => return Ok(PrivateKeyDer::Sec1(k)),
            Ok(_) => saw_any = true,
            Err(e) => return Err(format!("`{path}` is not valid PEM: {e}")),
        }
    }
    Err(if saw_any {
        format!("`{path}` holds no private key")
    } else {
        format!("`{path}` is not a PEM file (no `-----BEGIN PRIVATE KEY-----` block)")
    })
}

/// Extract the facts of one DER certificate.
pub fn cert_facts(der: &[u8]) -> Result<CertFacts, String> {
    let (_, cert) =
        X509Certificate::from_der(der).map_err(|e| format!("certificate does not parse: {e}"))?;
    let mut facts = CertFacts {
        not_before: cert.validity().not_before.timestamp(),
        not_after: cert.validity().not_after.timestamp(),
        subject: rfc2253(cert.subject()),
        issuer: rfc2253(cert.issuer()),
        serial: cert.raw_serial_as_string(),
        ..CertFacts::default()
    };
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            match name {
                GeneralName::URI(u) => facts.uri_sans.push((*u).to_string()),
                GeneralName::DNSName(d) => facts.dns_sans.push((*d).to_string()),
                GeneralName::IPAddress(b) => {
                    if let Ok(v4) = <[u8; 4]>::try_from(*b) {
                        facts.ip_sans.push(IpAddr::from(v4));
                    } else if let Ok(v6) = <[u8; 16]>::try_from(*b) {
                        facts.ip_sans.push(IpAddr::from(v6));
                    }
                }
                _ => {}
            }
        }
    }
    Ok(facts)
}

/// A distinguished name in RFC 2253 form: last RDN first, `,` between RDNs.
fn rfc2253(name: &x509_parser::x509::X509Name<'_>) -> String {
    let mut out = String::new();
    let rdns: Vec<_> = name.iter().collect();
    for rdn in rdns.iter().rev() {
        for (j, attr) in rdn.iter().enumerate() {
            if !out.is_empty() {
                out.push(if j == 0 { ',' } else { '+' });
            }
            let oid = attr.attr_type();
            let key = match oid.to_id_string().as_str() {
                "2.5.4.3" => "CN".to_string(),
                "2.5.4.6" => "C".to_string(),
                "2.5.4.7" => "L".to_string(),
                "2.5.4.8" => "ST".to_string(),
                "2.5.4.9" => "STREET".to_string(),
                "2.5.4.10" => "O".to_string(),
                "2.5.4.11" => "OU".to_string(),
                "2.5.4.5" => "SERIALNUMBER".to_string(),
                "0.9.2342.19200300.100.1.25" => "DC".to_string(),
                "0.9.2342.19200300.100.1.1" => "UID".to_string(),
                "1.2.840.113549.1.9.1" => "emailAddress".to_string(),
                other => other.to_string(),
            };
            out.push_str(&key);
            out.push('=');
            match attr.as_str() {
                Ok(v) => escape_dn_value(v, &mut out),
                Err(_) => {
                    out.push('#');
                    for b in attr.attr_value().data.iter() {
                        out.push_str(&format!("{b:02x}"));
                    }
                }
            }
        }
    }
    out
}

fn escape_dn_value(v: &str, out: &mut String) {
    let last = v.chars().count().saturating_sub(1);
    for (i, c) in v.chars().enumerate() {
        let special = matches!(c, ',' | '+' | '"' | '\\' | '<' | '>' | ';' | '=')
            || (i == 0 && (c == '#' || c == ' '))
            || (i == last && c == ' ');
        if special {
            out.push('\\');
        }
        out.push(c);
    }
}

/// Hex SHA-256 of a DER certificate.
pub fn sha256_hex(der: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, der);
    let mut s = String::with_capacity(64);
    for b in digest.as_ref() {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

fn describe_time(ts: i64) -> String {
    match x509_parser::time::ASN1Time::from_timestamp(ts) {
        Ok(t) => t.to_string(),
        Err(_) => format!("{ts} (unix)"),
    }
}

/// Check a certificate is inside its validity period at `now`.
pub fn check_validity(facts: &CertFacts, now: i64, what: &str) -> Result<(), String> {
    if now > facts.not_after {
        return Err(format!(
            "{what} expired on {}",
            describe_time(facts.not_after)
        ));
    }
    if now < facts.not_before {
        return Err(format!(
            "{what} is not valid before {}",
            describe_time(facts.not_before)
        ));
    }
    Ok(())
}

/// Load a cert chain and its key, checking PEM, key type, key/cert match and validity.
/// Problems are pushed under `chain_key` / `key_key`.
pub fn load_identity(
    chain_path: &str,
    key_path: &str,
    chain_key: &str,
    key_key: &str,
    provider: &CryptoProvider,
    now: i64,
    problems: &mut Problems,
) -> Option<Identity> {
    let before = problems.len();
    let chain = match read_file(chain_path).and_then(|b| parse_certs(&b, chain_path)) {
        Ok(c) => Some(c),
        Err(e) => {
            problems.push(Problem::new(chain_key.to_string(), e));
            None
        }
    };
    let key = match read_file(key_path).and_then(|b| parse_key(&b, key_path)) {
        Ok(k) => match provider.key_provider.load_private_key(k) {
            Ok(k) => Some(k),
            Err(e) => {
                problems.push(Problem::new(
                    key_key.to_string(),
                    format!("`{key_path}` is not a supported private key (RSA, ECDSA P-256/P-384 or Ed25519): {e}"),
                ));
                None
            }
        },
        Err(e) => {
            problems.push(Problem::new(key_key.to_string(), e));
            None
        }
    };
    let chain = chain?;
    let mut leaf = None;
    for (i, der) in chain.iter().enumerate() {
        match cert_facts(der.as_ref()) {
            Ok(f) => {
                let what = if i == 0 {
                    format!("the certificate in `{chain_path}`")
                } else {
                    format!("chain certificate {} in `{chain_path}`", i + 1)
                };
                if let Err(e) = check_validity(&f, now, &what) {
                    problems.push(Problem::new(chain_key.to_string(), e));
                }
                if i == 0 {
                    leaf = Some(f);
                }
            }
            Err(e) => problems.push(Problem::new(
                chain_key.to_string(),
                format!("`{chain_path}`: {e}"),
            )),
        }
    }
    let key = key?;
    let certified = CertifiedKey::new(chain, key);
    match certified.keys_match() {
        Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {}
        Err(_) => problems.push(Problem::new(
            key_key.to_string(),
            format!("private key `{key_path}` does not match the certificate in `{chain_path}`"),
        )),
    }
    if problems.len() != before {
        return None;
    }
    Some(Identity {
        key: Arc::new(certified),
        leaf: leaf?,
    })
}

/// Load a CA bundle into a root store; every certificate must parse.
pub fn load_roots(path: &str, key: &str, problems: &mut Problems) -> Option<RootCertStore> {
    let certs = match read_file(path).and_then(|b| parse_certs(&b, path)) {
        Ok(c) => c,
        Err(e) => {
            problems.push(Problem::new(key.to_string(), e));
            return None;
        }
    };
    let mut roots = RootCertStore::empty();
    let mut ok = true;
    for (i, c) in certs.into_iter().enumerate() {
        if let Err(e) = roots.add(c) {
            problems.push(Problem::new(
                key.to_string(),
                format!(
                    "certificate {} in CA bundle `{path}` is not a usable trust anchor: {e}",
                    i + 1
                ),
            ));
            ok = false;
        }
    }
    ok.then_some(roots)
}

/// Static shape check of a configured path (for `--skip-files` and before reading).
pub fn check_path(path: &str) -> Result<(), String> {
    if path.trim().is_empty() {
        return Err("path is empty".to_string());
    }
    if path.contains('\0') {
        return Err("path contains a NUL byte".to_string());
    }
    if path.trim() != path {
        return Err(format!("path `{path}` has leading or trailing whitespace"));
    }
    Ok(())
}
