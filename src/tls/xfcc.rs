//! `x-forwarded-client-cert` in Envoy's format, and the per-listener policy for an
//! incoming one: a client-sent value is only ever kept under `append_forward` on a
//! connection whose client certificate verified; in every other case it is removed.

use http::header::{HeaderMap, HeaderName, HeaderValue};

use crate::config::types::ForwardClientCert;

use super::server::PeerInfo;

/// The header name.
pub static XFCC: HeaderName = HeaderName::from_static("x-forwarded-client-cert");

/// One XFCC element for a verified peer:
/// `By=<local>;Hash=<sha256>;Subject="<dn>";URI=<uri>;DNS=<dns>` (keys without a value
/// are left out, several SANs repeat their key).
pub fn xfcc_value(peer: &PeerInfo, local_identity: Option<&str>) -> String {
    let mut out = String::new();
    let mut push = |key: &str, value: &str, force_quote: bool| {
        if !out.is_empty() {
            out.push(';');
        }
        out.push_str(key);
        out.push('=');
        push_value(&mut out, value, force_quote);
    };
    if let Some(by) = local_identity.filter(|s| !s.is_empty()) {
        push("By", by, false);
    }
    if !peer.cert_sha256_hex.is_empty() {
        push("Hash", &peer.cert_sha256_hex, false);
    }
    if !peer.subject.is_empty() {
        push("Subject", &peer.subject, true);
    }
    for uri in &peer.uri_sans {
        push("URI", uri, false);
    }
    for dns in &peer.dns_sans {
        push("DNS", dns, false);
    }
    out
}

/// Quote a value that holds `,` `;` `=` or `"` (always for Subject), escaping `"` and
/// `\`; control characters become `?` so the result is always a valid header value.
fn push_value(out: &mut String, value: &str, force_quote: bool) {
    let quote = force_quote || value.contains([',', ';', '=', '"']);
    if quote {
        out.push('"');
    }
    for c in value.chars() {
        match c {
            '"' | '\\' if quote => {
                out.push('\\');
                out.push(c);
            }
            c if c.is_control() => out.push('?'),
            c => out.push(c),
        }
    }
    if quote {
        out.push('"');
    }
}

/// Apply the listener's `forward_client_cert` policy to a request's headers.
/// `peer` is the connection's [`PeerInfo`] (`None` for plain-text listeners).
///
/// - `sanitize`: remove any incoming header, add nothing.
/// - `sanitize_set` (default): remove any incoming header; on mTLS set ours.
/// - `append_forward`: on mTLS keep the incoming value and append ours after a `,`;
///   without a verified client certificate the incoming header is removed.
pub fn apply_xfcc(headers: &mut HeaderMap, policy: ForwardClientCert, peer: Option<&PeerInfo>) {
    let mtls = peer.filter(|p| p.has_client_cert);
    let Some(peer) = mtls.filter(|_| policy != ForwardClientCert::Sanitize) else {
        headers.remove(&XFCC);
        return;
    };
    let ours = xfcc_value(peer, peer.local_uri.as_deref());
    let value = if policy == ForwardClientCert::AppendForward {
        let previous: Vec<&str> = headers
            .get_all(&XFCC)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .collect();
        if previous.is_empty() {
            ours
        } else {
            format!("{},{ours}", previous.join(","))
        }
    } else {
        ours
    };
    headers.remove(&XFCC);
    if let Ok(v) = HeaderValue::from_str(&value) {
        headers.insert(XFCC.clone(), v);
    } else if let Ok(v) = HeaderValue::from_bytes(value.as_bytes()) {
        headers.insert(XFCC.clone(), v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer() -> PeerInfo {
        PeerInfo {
            has_client_cert: true,
            uri_sans: vec!["spiffe://example.org/ns/web/sa/frontend".into()],
            dns_sans: vec!["web.internal".into(), "web2.internal".into()],
            subject: "CN=web,O=Example, Inc.".into(),
            cert_sha256_hex: "ab".repeat(32),
            local_uri: Some("spiffe://example.org/ns/edge/sa/proxy".into()),
            ..PeerInfo::default()
        }
    }

    #[test]
    fn value_is_in_envoy_format() {
        let p = peer();
        let v = xfcc_value(&p, p.local_uri.as_deref());
        assert_eq!(
            v,
            format!(
                "By=spiffe://example.org/ns/edge/sa/proxy;Hash={};Subject=\"CN=web,O=Example, Inc.\";\
                 URI=spiffe://example.org/ns/web/sa/frontend;DNS=web.internal;DNS=web2.internal",
                "ab".repeat(32)
            )
        );
    }

    #[test]
    fn quotes_values_with_separators() {
        let p = PeerInfo {
            has_client_cert: true,
            uri_sans: vec!["spiffe://x/a;b=\"c\"".into()],
            ..PeerInfo::default()
        };
        assert_eq!(xfcc_value(&p, None), r#"URI="spiffe://x/a;b=\"c\"""#);
    }

    fn forged() -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            XFCC.clone(),
            HeaderValue::from_static("URI=spiffe://evil/admin"),
        );
        h
    }

    #[test]
    fn sanitize_set_replaces_a_forged_header() {
        let mut h = forged();
        apply_xfcc(&mut h, ForwardClientCert::SanitizeSet, Some(&peer()));
        let v = h
            .get(&XFCC)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        assert!(!v.contains("evil"), "{v}");
        assert!(
            v.contains("URI=spiffe://example.org/ns/web/sa/frontend"),
            "{v}"
        );
        assert_eq!(h.get_all(&XFCC).iter().count(), 1);
    }

    #[test]
    fn sanitize_removes_always() {
        let mut h = forged();
        apply_xfcc(&mut h, ForwardClientCert::Sanitize, Some(&peer()));
        assert!(h.get(&XFCC).is_none());
    }

    #[test]
    fn forged_header_without_client_cert_is_removed_under_every_policy() {
        for policy in [
            ForwardClientCert::Sanitize,
            ForwardClientCert::SanitizeSet,
            ForwardClientCert::AppendForward,
        ] {
            let mut h = forged();
            apply_xfcc(&mut h, policy, None);
            assert!(h.get(&XFCC).is_none(), "{policy:?}");
            let mut h = forged();
            let no_cert = PeerInfo {
                alpn_h2: true,
                ..PeerInfo::default()
            };
            apply_xfcc(&mut h, policy, Some(&no_cert));
            assert!(h.get(&XFCC).is_none(), "{policy:?}");
        }
    }

    #[test]
    fn append_forward_keeps_the_chain_on_mtls() {
        let mut h = forged();
        h.append(XFCC.clone(), HeaderValue::from_static("URI=spiffe://hop2"));
        apply_xfcc(&mut h, ForwardClientCert::AppendForward, Some(&peer()));
        let v = h
            .get(&XFCC)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        assert!(
            v.starts_with("URI=spiffe://evil/admin,URI=spiffe://hop2,By="),
            "{v}"
        );
        assert_eq!(h.get_all(&XFCC).iter().count(), 1);
    }
}
