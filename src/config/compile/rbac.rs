//! `rbac:` blocks of listeners and routes.

use std::collections::HashMap;
use std::sync::Arc;

use super::route::{compile_match, san_match};
use super::{valid_name, Cx};
use crate::config::raw;
use crate::router::{PathMatch, SanMatch};
use crate::stats::Stats;

/// An `rbac:` block at `p` (a listener's or a route's), checked against the
/// listener's protocol: each permission key belongs to one protocol.
pub(super) fn compile_rbac(
    cx: &mut Cx<'_>,
    p: &str,
    r: &raw::Rbac,
    protocol: raw::ListenerProtocol,
    listener: &str,
    stats: &Stats,
) -> Option<Arc<crate::rbac::Rbac>> {
    let errors = cx.errors.len();
    if r.policies.is_empty() {
        cx.err(
            &format!("{p}.policies"),
            "rbac needs at least one policy (an allow list with none denies everything)",
        );
    }
    let mut names: HashMap<&str, usize> = HashMap::new();
    let mut policies = Vec::new();
    for (i, pol) in r.policies.iter().enumerate() {
        let pp = format!("{p}.policies.{i}");
        if !valid_name(&pol.name) || pol.name == crate::rbac::NO_POLICY {
            cx.err(
                &format!("{pp}.name"),
                format!(
                    "policy name `{}` must match [a-z0-9_]+ and not be `none`",
                    pol.name
                ),
            );
        }
        if let Some(line) = names.get(pol.name.as_str()) {
            cx.err(
                &format!("{pp}.name"),
                format!(
                    "duplicate policy name `{}` (first defined at line {line})",
                    pol.name
                ),
            );
        } else {
            names.insert(&pol.name, cx.line(&format!("{pp}.name")));
        }
        let principals = pol
            .principals
            .iter()
            .enumerate()
            .filter_map(|(j, pr)| compile_principal(cx, &format!("{pp}.principals.{j}"), pr))
            .collect();
        let permissions = pol
            .permissions
            .iter()
            .enumerate()
            .filter_map(|(j, pe)| {
                compile_permission(cx, &format!("{pp}.permissions.{j}"), pe, protocol)
            })
            .collect();
        policies.push((pol.name.clone(), principals, permissions));
    }
    (cx.errors.len() == errors).then(|| {
        Arc::new(crate::rbac::Rbac::new(
            stats, listener, r.mode, r.action, policies,
        ))
    })
}

pub(super) fn compile_principal(
    cx: &mut Cx<'_>,
    p: &str,
    pr: &raw::RbacPrincipal,
) -> Option<crate::rbac::Principal> {
    if pr.peer_san.is_none() && pr.source_ip.is_none() && pr.authenticated.is_none() {
        cx.err(
            p,
            "a principal needs `peer_san`, `source_ip` or `authenticated` (leave `principals` out to match anyone)",
        );
        return None;
    }
    let peer_san = match &pr.peer_san {
        None => None,
        Some(raw::SanMatcher::Exact(e)) => Some(SanMatch::Exact(e.clone())),
        Some(raw::SanMatcher::Rule(s)) => Some(san_match(cx, &format!("{p}.peer_san"), s)?),
    };
    let source_ip = match &pr.source_ip {
        None => None,
        Some(s) => match crate::cidr::Cidr::parse(s) {
            Ok(c) => Some(c),
            Err(m) => {
                cx.err(&format!("{p}.source_ip"), m);
                return None;
            }
        },
    };
    Some(crate::rbac::Principal {
        peer_san,
        source_ip,
        authenticated: pr.authenticated,
    })
}

pub(super) fn compile_permission(
    cx: &mut Cx<'_>,
    p: &str,
    pe: &raw::RbacPermission,
    protocol: raw::ListenerProtocol,
) -> Option<crate::rbac::Permission> {
    let http_keys = [
        ("prefix", pe.prefix.is_some()),
        ("path", pe.path.is_some()),
        ("methods", !pe.methods.is_empty()),
        ("headers", !pe.headers.is_empty()),
    ];
    let thrift_keys = [
        ("service", pe.service.is_some()),
        ("method", pe.method.is_some()),
    ];
    let tcp_keys = [("destination_port", pe.destination_port.is_some())];
    let (own, name): (&[(&str, bool)], &str) = match protocol {
        raw::ListenerProtocol::Http => (&http_keys, "http"),
        raw::ListenerProtocol::Thrift => (&thrift_keys, "thrift"),
        raw::ListenerProtocol::Tcp => (&tcp_keys, "tcp"),
    };
    let mut ok = true;
    for (key, set) in http_keys.iter().chain(&thrift_keys).chain(&tcp_keys) {
        if *set && !own.iter().any(|(k, _)| k == key) {
            let valid: Vec<&str> = own.iter().map(|(k, _)| *k).collect();
            cx.err_key(
                &format!("{p}.{key}"),
                format!(
                    "`{key}` does not apply to a {name} listener; its permissions take {}",
                    valid.join(", ")
                ),
            );
            ok = false;
        }
    }
    if !own.iter().any(|(_, set)| *set) && ok {
        cx.err(
            p,
            "an empty permission matches everything; leave `permissions` out instead",
        );
        return None;
    }
    if let Some(s) = pe
        .service
        .as_deref()
        .filter(|s| s.is_empty() || s.contains(':'))
    {
        cx.err(
            &format!("{p}.service"),
            format!("`{s}` is not a service name (non-empty, no `:`)"),
        );
        ok = false;
    }
    let http = match protocol {
        raw::ListenerProtocol::Http => {
            let m = raw::RouteMatch {
                prefix: pe.prefix.clone(),
                path: pe.path.clone(),
                methods: pe.methods.clone(),
                headers: pe.headers.clone(),
                ..Default::default()
            };
            if m.prefix.is_some() && m.path.is_some() {
                cx.err(p, "give `prefix` or `path`, not both");
                return None;
            }
            let any_path = m.prefix.is_none() && m.path.is_none();
            let m = raw::RouteMatch {
                prefix: m.prefix.clone().or(any_path.then(|| "/".to_string())),
                ..m
            };
            let mut matcher = compile_match(cx, p, &m)?;
            if any_path {
                // Any path, `*` of `OPTIONS *` included.
                matcher.path = PathMatch::Prefix(String::new());
            }
            Some(matcher)
        }
        _ => None,
    };
    ok.then(|| crate::rbac::Permission {
        http,
        thrift_service: pe.service.clone(),
        thrift_method: pe.method.clone(),
        destination_port: pe.destination_port,
    })
}
