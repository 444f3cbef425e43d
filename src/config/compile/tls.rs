//! `tls:` blocks of listeners and clusters: every setting checked (all problems
//! at once, keyed by the dotted path relative to the block, reported under
//! `<path>.tls`), then compiled into the typed settings the TLS builders take,
//! every default applied. The checks here never touch the filesystem (that is
//! what `--skip-files` runs); the builders read and parse every PEM file.

use rustls::pki_types::ServerName;

use super::route::san_matcher;
use super::Cx;
use crate::config::raw;
use crate::config::{Problem, Problems};
use crate::router::SanMatch;
use crate::tls::{
    check_path, CertPair, ClusterSettings, ListenerSettings, MinVersion, SniCertificate,
    DEFAULT_HANDSHAKE_TIMEOUT,
};

/// A `tls:` block: check its settings (and, with file checks, build it, which
/// reads every file); problems are reported under `<path>.tls`.
pub(super) fn tls_material<S, T>(
    cx: &mut Cx<'_>,
    path: &str,
    check_files: bool,
    settings: Result<S, Problems>,
    build: impl FnOnce(S) -> Result<T, Problems>,
) -> Option<T> {
    let problems = match settings {
        Ok(s) if check_files => match build(s) {
            Ok(x) => return Some(x),
            Err(problems) => problems,
        },
        Ok(_) => return None,
        Err(problems) => problems,
    };
    cx.report(&format!("{path}.tls"), problems);
    None
}

/// A listener's `tls:` block; `alpn` when the block sets none.
pub(crate) fn listener_settings(
    tls: &raw::ListenerTls,
    default_alpn: &[&str],
) -> Result<ListenerSettings, Problems> {
    let problems = listener_static(tls);
    if !problems.is_empty() {
        return Err(problems);
    }
    let default_cert = tls.cert_chain.clone().zip(tls.private_key.clone());
    Ok(ListenerSettings {
        default_cert: default_cert.map(|(cert_chain, private_key)| CertPair {
            cert_chain,
            private_key,
        }),
        certificates: tls
            .certificates
            .iter()
            .map(|c| SniCertificate {
                server_names: c.server_names.clone(),
                pair: CertPair {
                    cert_chain: c.cert_chain.clone(),
                    private_key: c.private_key.clone(),
                },
            })
            .collect(),
        client_ca: tls.client_ca.clone(),
        require_client_cert: tls.require_client_cert != Some(false),
        allowed_client_sans: tls
            .allowed_client_sans
            .iter()
            .filter_map(san_matcher)
            .collect(),
        alpn: alpn(&tls.alpn, default_alpn),
        min_version: min_version(&tls.min_version).unwrap_or_default(),
        handshake_timeout: tls
            .handshake_timeout
            .map_or(DEFAULT_HANDSHAKE_TIMEOUT, |d| d.0),
        forward_client_cert: tls.forward_client_cert.unwrap_or_default(),
    })
}

/// A cluster's `tls:` block; `alpn` when the block sets none.
pub(crate) fn cluster_settings(
    tls: &raw::ClusterTls,
    default_alpn: &[&str],
) -> Result<ClusterSettings, Problems> {
    let problems = cluster_static(tls);
    let Some(ca) = tls.ca.clone().filter(|_| problems.is_empty()) else {
        return Err(problems);
    };
    let client_cert = tls.cert_chain.clone().zip(tls.private_key.clone());
    Ok(ClusterSettings {
        ca,
        sni: tls
            .sni
            .as_deref()
            .and_then(|s| ServerName::try_from(s.to_string()).ok()),
        verify_sans: tls.verify_sans.clone(),
        client_cert: client_cert.map(|(cert_chain, private_key)| CertPair {
            cert_chain,
            private_key,
        }),
        alpn: alpn(&tls.alpn, default_alpn),
    })
}

fn alpn(alpn: &Option<Vec<String>>, default: &[&str]) -> Vec<Vec<u8>> {
    match alpn {
        Some(list) => list.iter().map(|p| p.as_bytes().to_vec()).collect(),
        None => default.iter().map(|p| p.as_bytes().to_vec()).collect(),
    }
}

fn check_opt_path(problems: &mut Problems, key: &str, path: &Option<String>) {
    if let Some(p) = path {
        if let Err(e) = check_path(p) {
            problems.push(Problem::new(key.to_string(), e));
        }
    }
}

fn pair(problems: &mut Problems, prefix: &str, chain: &Option<String>, key: &Option<String>) {
    match (chain, key) {
        (Some(_), None) => problems.push(
            Problem::new(
                format!("{prefix}private_key"),
                "cert_chain is set but private_key is missing",
            )
            .hint("add `private_key: PATH`, the PEM key of that certificate"),
        ),
        (None, Some(_)) => problems.push(
            Problem::new(
                format!("{prefix}cert_chain"),
                "private_key is set but cert_chain is missing",
            )
            .hint("add `cert_chain: PATH`, the PEM certificate chain, leaf first"),
        ),
        _ => {}
    }
    check_opt_path(problems, &format!("{prefix}cert_chain"), chain);
    check_opt_path(problems, &format!("{prefix}private_key"), key);
}

/// A `min_version`; `None` for a bad value.
fn min_version(min_version: &Option<String>) -> Option<MinVersion> {
    match min_version.as_deref().map(str::trim) {
        None | Some("1.2") => Some(MinVersion::Tls12),
        Some("1.3") => Some(MinVersion::Tls13),
        Some(_) => None,
    }
}

fn check_min_version(problems: &mut Problems, min_version: &Option<String>) {
    if self::min_version(min_version).is_none() {
        let v = min_version.as_deref().unwrap_or_default();
        let msg = if matches!(v.trim(), "1.0" | "1.1") {
            format!("TLS {} is not supported; use \"1.2\" or \"1.3\"", v.trim())
        } else {
            format!("min_version `{v}` is not one of \"1.2\", \"1.3\"")
        };
        problems.push(Problem::new("min_version".to_string(), msg));
    }
}

fn check_alpn(problems: &mut Problems, alpn: &Option<Vec<String>>) {
    let Some(list) = alpn else { return };
    if list.is_empty() {
        problems.push(Problem::new(
            "alpn".to_string(),
            "alpn is empty; remove it or list protocols".to_string(),
        ));
    }
    for (i, p) in list.iter().enumerate() {
        let bad = if p.is_empty() {
            Some("protocol name is empty".to_string())
        } else if p.len() > 255 {
            Some("protocol name is longer than 255 bytes".to_string())
        } else if !p.bytes().all(|b| b.is_ascii_graphic()) {
            Some(format!(
                "protocol name `{p}` has spaces or non-ASCII characters"
            ))
        } else if list[..i].contains(p) {
            Some(format!("protocol `{p}` is listed twice"))
        } else {
            None
        };
        if let Some(msg) = bad {
            problems.push(Problem::new(format!("alpn.{i}"), msg));
        }
    }
}

fn check_server_name(name: &str) -> Result<(), String> {
    let host = name.strip_prefix("*.").unwrap_or(name);
    if host.contains('*') {
        return Err(format!(
            "server name `{name}`: only a leading `*.` wildcard is supported"
        ));
    }
    match ServerName::try_from(host) {
        Ok(ServerName::DnsName(_)) => Ok(()),
        _ => Err(format!("server name `{name}` is not a DNS name")),
    }
}

/// Every setting of a listener block, files untouched.
fn listener_static(tls: &raw::ListenerTls) -> Problems {
    let mut problems = Problems::new();
    check_certificates(&mut problems, tls);
    check_client_auth(&mut problems, tls);
    check_alpn(&mut problems, &tls.alpn);
    check_min_version(&mut problems, &tls.min_version);
    if let Some(d) = tls.handshake_timeout {
        if d.0.is_zero() {
            problems.push(Problem::new(
                "handshake_timeout".to_string(),
                "handshake_timeout must be above zero".to_string(),
            ));
        }
    }
    problems
}

/// The default certificate and the SNI ones: pairs complete, paths well-formed,
/// server names valid and each served once.
fn check_certificates(problems: &mut Problems, tls: &raw::ListenerTls) {
    if tls.cert_chain.is_none() && tls.private_key.is_none() && tls.certificates.is_empty() {
        problems.push(Problem::new(
            "cert_chain".to_string(),
            "a tls block needs cert_chain and private_key, or certificates".to_string(),
        ));
    }
    pair(problems, "", &tls.cert_chain, &tls.private_key);
    let mut seen_names = std::collections::HashSet::new();
    for (i, c) in tls.certificates.iter().enumerate() {
        let prefix = format!("certificates.{i}.");
        pair(
            problems,
            &prefix,
            &Some(c.cert_chain.clone()),
            &Some(c.private_key.clone()),
        );
        if c.server_names.is_empty() {
            problems.push(Problem::new(
                format!("{prefix}server_names"),
                "server_names is empty".to_string(),
            ));
        }
        for (j, name) in c.server_names.iter().enumerate() {
            if let Err(e) = check_server_name(name) {
                problems.push(Problem::new(format!("{prefix}server_names.{j}"), e));
            } else if !seen_names.insert(name.to_ascii_lowercase()) {
                problems.push(Problem::new(
                    format!("{prefix}server_names.{j}"),
                    format!("server name `{name}` is already served by an earlier certificate"),
                ));
            }
        }
    }
}

/// `client_ca` and the keys that need it.
fn check_client_auth(problems: &mut Problems, tls: &raw::ListenerTls) {
    check_opt_path(problems, "client_ca", &tls.client_ca);
    if tls.client_ca.is_none() {
        if !tls.allowed_client_sans.is_empty() {
            problems.push(Problem::new(
                "allowed_client_sans".to_string(),
                "allowed_client_sans needs client_ca (client certificates are not verified without it)"
                    .to_string(),
            ));
        }
        if tls.require_client_cert == Some(true) {
            problems.push(Problem::new(
                "require_client_cert".to_string(),
                "require_client_cert needs client_ca".to_string(),
            ));
        }
    }
    if tls.require_client_cert == Some(false) && !tls.allowed_client_sans.is_empty() {
        problems.push(Problem::new(
            "allowed_client_sans".to_string(),
            "allowed_client_sans with require_client_cert: false would let clients without a certificate through"
                .to_string(),
        ));
    }
    for (i, m) in tls.allowed_client_sans.iter().enumerate() {
        match san_matcher(m) {
            None => problems.push(Problem::new(
                format!("allowed_client_sans.{i}"),
                "set exactly one of exact, prefix, suffix".to_string(),
            )),
            Some(SanMatch::Exact(s) | SanMatch::Prefix(s) | SanMatch::Suffix(s))
                if s.is_empty() =>
            {
                problems.push(Problem::new(
                    format!("allowed_client_sans.{i}"),
                    "matcher value is empty".to_string(),
                ))
            }
            Some(_) => {}
        }
    }
}

fn cluster_static(tls: &raw::ClusterTls) -> Problems {
    let mut problems = Problems::new();
    match &tls.ca {
        None => problems.push(Problem::new(
            "ca".to_string(),
            "ca is required: upstream certificates are verified against it (there are no system roots)"
                .to_string(),
        )),
        Some(_) => check_opt_path(&mut problems, "ca", &tls.ca),
    }
    pair(&mut problems, "", &tls.cert_chain, &tls.private_key);
    if let Some(sni) = &tls.sni {
        if ServerName::try_from(sni.as_str()).is_err() {
            problems.push(Problem::new(
                "sni".to_string(),
                format!("sni `{sni}` is not a DNS name or IP address"),
            ));
        }
    }
    for (i, s) in tls.verify_sans.iter().enumerate() {
        if s.trim().is_empty() {
            problems.push(Problem::new(
                format!("verify_sans.{i}"),
                "name is empty".to_string(),
            ));
        }
    }
    check_alpn(&mut problems, &tls.alpn);
    problems
}

#[cfg(test)]
mod tests {
    //! Every problem of a `tls:` block at once, keyed relative to the block:
    //! the settings first, then (with file checks) every file the builder reads.

    use std::collections::HashSet;

    use anyhow::Result;
    use attache_filters::Stats;

    use super::*;
    use crate::config::raw::{self, SanMatcher, SanRule, SniCertificate};
    use crate::tls::testutil::{fixture, path_str, Fixture, Leaf, FRONTEND};
    use crate::tls::{ClientTls, ServerTls};

    fn mtls(f: &Fixture) -> raw::ListenerTls {
        raw::ListenerTls {
            cert_chain: Some(f.server.cert.clone()),
            private_key: Some(f.server.key.clone()),
            client_ca: Some(f.pki.ca_path.clone()),
            ..Default::default()
        }
    }

    fn keys(problems: &Problems) -> HashSet<&str> {
        problems.iter().map(|p| p.path.as_str()).collect()
    }

    /// What `validate` reports for a listener block (files unless `skip_files`).
    fn validate_listener_with(tls: &raw::ListenerTls, skip_files: bool) -> Problems {
        let settings = listener_settings(tls, &[]);
        match settings {
            Err(problems) => problems,
            Ok(_) if skip_files => Problems::new(),
            Ok(s) => ServerTls::build(&s, "l", &Stats::new())
                .err()
                .unwrap_or_default(),
        }
    }

    fn validate_listener(tls: &raw::ListenerTls) -> Problems {
        validate_listener_with(tls, false)
    }

    fn validate_cluster(tls: &raw::ClusterTls) -> Problems {
        match cluster_settings(tls, &[]) {
            Err(problems) => problems,
            Ok(s) => ClientTls::build(&s, "c", &Stats::new())
                .err()
                .unwrap_or_default(),
        }
    }

    #[test]
    fn validate_reports_every_problem_at_once() {
        let raw = raw::ListenerTls {
            private_key: Some("/nonexistent/key.pem".into()),
            allowed_client_sans: vec![SanMatcher::Exact(FRONTEND.into())],
            alpn: Some(vec!["h2".into(), "".into(), "h2".into()]),
            min_version: Some("1.1".into()),
            certificates: vec![
                SniCertificate {
                    server_names: vec!["bad name".into(), "api.example.com".into()],
                    cert_chain: "/nonexistent/a.pem".into(),
                    private_key: "".into(),
                },
                SniCertificate {
                    server_names: vec!["API.example.com".into()],
                    cert_chain: "/nonexistent/b.pem".into(),
                    private_key: "/nonexistent/b.key".into(),
                },
            ],
            ..Default::default()
        };
        // Every settings problem at once; files are read once the settings are right.
        let problems = validate_listener(&raw);
        let k = keys(&problems);
        for want in [
            "cert_chain",
            "allowed_client_sans",
            "alpn.1",
            "alpn.2",
            "min_version",
            "certificates.0.server_names.0",
            "certificates.0.private_key",
            "certificates.1.server_names.0",
        ] {
            assert!(k.contains(want), "missing {want} in {problems:?}");
        }
    }

    #[test]
    fn validate_reads_files_and_names_the_bad_one() -> Result<()> {
        let f = fixture()?;
        let dir = f.pki.dir.clone();
        let other_key = f.client.key.clone();
        let expired = f.pki.issue(
            "expired",
            &Leaf {
                expired: true,
                ..Leaf::new("old")
            },
        )?;
        let garbage = dir.join("garbage.pem");
        std::fs::write(&garbage, b"not pem at all")?;

        // Key of another certificate.
        let raw = raw::ListenerTls {
            private_key: Some(other_key),
            ..mtls(&f)
        };
        assert_eq!(
            keys(&validate_listener(&raw)),
            HashSet::from(["private_key"])
        );
        // Expired certificate.
        let raw = raw::ListenerTls {
            cert_chain: Some(expired.cert.clone()),
            private_key: Some(expired.key.clone()),
            ..Default::default()
        };
        assert_eq!(
            keys(&validate_listener(&raw)),
            HashSet::from(["cert_chain"])
        );
        // CA bundle that is not PEM, and a missing SNI key file.
        let raw = raw::ListenerTls {
            client_ca: Some(path_str(&garbage)),
            certificates: vec![SniCertificate {
                server_names: vec!["api.example.com".into()],
                cert_chain: f.server.cert.clone(),
                private_key: path_str(&dir.join("missing.key")),
            }],
            ..mtls(&f)
        };
        assert_eq!(
            keys(&validate_listener(&raw)),
            HashSet::from(["client_ca", "certificates.0.private_key"])
        );
        // A good block has no problems.
        assert!(validate_listener(&mtls(&f)).is_empty());
        Ok(())
    }

    #[test]
    fn skip_files_checks_only_the_shape_of_paths() {
        let raw = raw::ListenerTls {
            cert_chain: Some("/nonexistent/cert.pem".into()),
            private_key: Some("/nonexistent/key.pem".into()),
            client_ca: Some("/nonexistent/ca.pem".into()),
            ..Default::default()
        };
        assert!(validate_listener_with(&raw, true).is_empty());
        assert_eq!(
            keys(&validate_listener_with(&raw, false)),
            HashSet::from(["cert_chain", "private_key", "client_ca"])
        );
        let raw = raw::ListenerTls {
            client_ca: Some(" ".into()),
            ..raw
        };
        assert_eq!(
            keys(&validate_listener_with(&raw, true)),
            HashSet::from(["client_ca"])
        );
        let empty = raw::ListenerTls::default();
        assert_eq!(
            keys(&validate_listener_with(&empty, true)),
            HashSet::from(["cert_chain"])
        );
    }

    #[test]
    fn validate_cluster_block() -> Result<()> {
        let f = fixture()?;
        let raw = raw::ClusterTls {
            sni: Some("not a name".into()),
            cert_chain: Some(f.client.cert.clone()),
            verify_sans: vec!["".into()],
            ..Default::default()
        };
        assert_eq!(
            keys(&validate_cluster(&raw)),
            HashSet::from(["ca", "sni", "private_key", "verify_sans.0"])
        );
        let good = raw::ClusterTls {
            ca: Some(f.pki.ca_path.clone()),
            sni: Some("server.internal".into()),
            cert_chain: Some(f.client.cert.clone()),
            private_key: Some(f.client.key.clone()),
            ..Default::default()
        };
        assert!(validate_cluster(&good).is_empty());
        let bad_key = raw::ClusterTls {
            private_key: Some(f.server.key.clone()),
            ..good
        };
        assert_eq!(
            keys(&validate_cluster(&bad_key)),
            HashSet::from(["private_key"])
        );
        Ok(())
    }

    #[test]
    fn san_rules_need_exactly_one_field() {
        let raw = raw::ListenerTls {
            cert_chain: Some("a".into()),
            private_key: Some("b".into()),
            client_ca: Some("c".into()),
            allowed_client_sans: vec![
                SanMatcher::Rule(SanRule {
                    prefix: Some("spiffe://".into()),
                    ..Default::default()
                }),
                SanMatcher::Rule(SanRule::default()),
                SanMatcher::Rule(SanRule {
                    exact: Some("x".into()),
                    suffix: Some("y".into()),
                    ..Default::default()
                }),
            ],
            ..Default::default()
        };
        assert_eq!(
            keys(&validate_listener_with(&raw, true)),
            HashSet::from(["allowed_client_sans.1", "allowed_client_sans.2"])
        );
    }

    #[test]
    fn settings_get_every_default_once() {
        let f = fixture().expect("fixture");
        let s = listener_settings(&mtls(&f), &["h2", "http/1.1"]).expect("valid");
        assert_eq!(s.alpn, [b"h2".to_vec(), b"http/1.1".to_vec()]);
        assert!(
            s.require_client_cert,
            "a client_ca requires a certificate by default"
        );
        assert_eq!(s.min_version, MinVersion::Tls12);
        assert_eq!(s.handshake_timeout, DEFAULT_HANDSHAKE_TIMEOUT);
        assert_eq!(
            s.forward_client_cert,
            crate::config::types::ForwardClientCert::SanitizeSet
        );
        let set = raw::ListenerTls {
            alpn: Some(vec!["http/1.1".into()]),
            require_client_cert: Some(false),
            min_version: Some("1.3".into()),
            ..mtls(&f)
        };
        let s = listener_settings(&set, &["h2", "http/1.1"]).expect("valid");
        assert_eq!(s.alpn, [b"http/1.1".to_vec()]);
        assert!(!s.require_client_cert);
        assert_eq!(s.min_version, MinVersion::Tls13);
        let sans = raw::ListenerTls {
            allowed_client_sans: vec![SanMatcher::Exact(FRONTEND.into())],
            ..mtls(&f)
        };
        let s = listener_settings(&sans, &[]).expect("valid");
        assert_eq!(s.allowed_client_sans, [SanMatch::Exact(FRONTEND.into())]);
        assert!(s.alpn.is_empty());

        let c = raw::ClusterTls {
            ca: Some(f.pki.ca_path.clone()),
            sni: Some("server.internal".into()),
            ..Default::default()
        };
        let s = cluster_settings(&c, &["h2"]).expect("valid");
        assert_eq!(s.alpn, [b"h2".to_vec()]);
        assert_eq!(s.sni, ServerName::try_from("server.internal").ok());
        assert!(s.client_cert.is_none() && s.verify_sans.is_empty());
    }
}
