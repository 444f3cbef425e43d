//! Role-based access control on the downstream's identity: who (verified peer SAN,
//! source address) may do what (HTTP method/path/headers, Thrift service/method, TCP
//! destination port). Envoy's RBAC semantics, kept small:
//!
//! ```yaml
//! rbac:
//!   mode: enforce                 # enforce | shadow (count and log, forward anyway)
//!   action: allow                 # allow: only what a policy matches; deny: not that
//!   policies:
//!     - name: frontend_reads
//!       principals: [{ peer_san: { prefix: "spiffe://example.org/ns/web/" } }]
//!       permissions: [{ methods: [GET, HEAD], prefix: /api/ }]
//! ```
//!
//! A policy matches when any of its principals and any of its permissions match (an
//! empty list matches everything); within one principal or permission every key must
//! hold. Policies are tried in order; the first match decides. Everything is compiled
//! once per config load; a check allocates nothing.
//!
//! | metric | labels | what |
//! | --- | --- | --- |
//! | `attache_rbac_total` | `listener`, `policy`, `result` | decisions; `policy` is the deciding policy's name or `none`; `result` is `allowed`, `denied` or `shadow_denied` |

use std::net::IpAddr;

use prometheus::IntCounter;

use crate::cidr::Cidr;
use crate::config::types::{RbacAction, RbacMode};
use crate::router::{Matcher, RequestView, SanMatch};
use crate::stats::Stats;

pub const RBAC_TOTAL: &str = "attache_rbac_total";

/// The `policy` label when no policy matched.
pub const NO_POLICY: &str = "none";

/// One compiled `rbac:` block.
#[derive(Debug)]
pub struct Rbac {
    pub mode: RbacMode,
    pub action: RbacAction,
    pub policies: Vec<Policy>,
    /// Counters for decisions no policy matched.
    none: Counters,
}

#[derive(Debug)]
pub struct Policy {
    pub name: String,
    pub principals: Vec<Principal>,
    pub permissions: Vec<Permission>,
    counters: Counters,
}

/// Who: every field that is set must hold.
#[derive(Debug, Default)]
pub struct Principal {
    pub peer_san: Option<SanMatch>,
    pub source_ip: Option<Cidr>,
    pub authenticated: Option<bool>,
}

/// What: every field that is set must hold; the fields of one protocol only.
#[derive(Debug, Default)]
pub struct Permission {
    pub http: Option<Matcher>,
    pub thrift_service: Option<String>,
    pub thrift_method: Option<String>,
    pub destination_port: Option<u16>,
}

/// The connection's identity, as RBAC sees it.
#[derive(Debug, Clone, Copy)]
pub struct Peer<'a> {
    /// The source address (PROXY protocol's when the listener reads one).
    pub source: IpAddr,
    /// Verified client certificate SANs (`URI=`/`DNS=` prefixes allowed).
    pub sans: &'a [String],
    /// A client certificate was verified.
    pub authenticated: bool,
}

/// What is being asked for.
pub enum Request<'a, 'v> {
    Http(&'a RequestView<'v>),
    Thrift {
        service: Option<&'a str>,
        method: &'a str,
    },
    Tcp {
        destination_port: u16,
    },
}

/// The decision, already counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Allowed,
    Denied,
    /// Denied in shadow mode: logged and counted, then let through.
    ShadowDenied,
}

impl Verdict {
    /// Whether the request must be refused.
    pub fn deny(self) -> bool {
        self == Verdict::Denied
    }
}

#[derive(Debug, Clone)]
struct Counters {
    allowed: IntCounter,
    denied: IntCounter,
    shadow_denied: IntCounter,
}

impl Counters {
    fn new(stats: &Stats, listener: &str, policy: &str) -> Counters {
        let vec = stats.counter_vec(
            RBAC_TOTAL,
            "RBAC decisions by deciding policy and result",
            &["listener", "policy", "result"],
        );
        Counters {
            allowed: vec.with_label_values(&[listener, policy, "allowed"]),
            denied: vec.with_label_values(&[listener, policy, "denied"]),
            shadow_denied: vec.with_label_values(&[listener, policy, "shadow_denied"]),
        }
    }

    fn count(&self, v: Verdict) {
        match v {
            Verdict::Allowed => self.allowed.inc(),
            Verdict::Denied => self.denied.inc(),
            Verdict::ShadowDenied => self.shadow_denied.inc(),
        }
    }
}

impl Rbac {
    pub fn new(
        stats: &Stats,
        listener: &str,
        mode: RbacMode,
        action: RbacAction,
        policies: Vec<(String, Vec<Principal>, Vec<Permission>)>,
    ) -> Rbac {
        let policies = policies
            .into_iter()
            .map(|(name, principals, permissions)| Policy {
                counters: Counters::new(stats, listener, &name),
                name,
                principals,
                permissions,
            })
            .collect();
        Rbac {
            mode,
            action,
            policies,
            none: Counters::new(stats, listener, NO_POLICY),
        }
    }

    /// Decide, count, and log a denial (`listener` is for the log line).
    pub fn check(&self, peer: &Peer<'_>, rq: &Request<'_, '_>, listener: &str) -> Verdict {
        let matched = self.policies.iter().find(|p| p.matches(peer, rq));
        let allowed = match self.action {
            RbacAction::Allow => matched.is_some(),
            RbacAction::Deny => matched.is_none(),
        };
        let verdict = match (allowed, self.mode) {
            (true, _) => Verdict::Allowed,
            (false, RbacMode::Enforce) => Verdict::Denied,
            (false, RbacMode::Shadow) => Verdict::ShadowDenied,
        };
        let (counters, policy) = match matched {
            Some(p) => (&p.counters, p.name.as_str()),
            None => (&self.none, NO_POLICY),
        };
        counters.count(verdict);
        // Shadow denials are what an operator rolling out a policy wants to read;
        // enforced ones are counted and in the access log (debug only, so a
        // denied client cannot flood the log).
        match verdict {
            Verdict::Allowed => {}
            Verdict::ShadowDenied => {
                tracing::info!(%listener, policy, source = %peer.source, "rbac would deny (shadow)")
            }
            Verdict::Denied => {
                tracing::debug!(%listener, policy, source = %peer.source, "rbac denied")
            }
        }
        verdict
    }
}

impl Policy {
    fn matches(&self, peer: &Peer<'_>, rq: &Request<'_, '_>) -> bool {
        (self.principals.is_empty() || self.principals.iter().any(|p| p.matches(peer)))
            && (self.permissions.is_empty() || self.permissions.iter().any(|p| p.matches(rq)))
    }
}

impl Principal {
    fn matches(&self, peer: &Peer<'_>) -> bool {
        if let Some(a) = self.authenticated {
            if a != peer.authenticated {
                return false;
            }
        }
        if let Some(c) = &self.source_ip {
            if !c.contains(peer.source) {
                return false;
            }
        }
        match &self.peer_san {
            None => true,
            Some(m) => peer
                .sans
                .iter()
                .any(|s| m.matches(crate::router::strip_san_kind(s))),
        }
    }
}

impl Permission {
    fn matches(&self, rq: &Request<'_, '_>) -> bool {
        match rq {
            Request::Http(view) => self.http.as_ref().is_none_or(|m| m.matches(view)),
            Request::Thrift { service, method } => {
                self.thrift_service
                    .as_deref()
                    .is_none_or(|s| Some(s) == *service)
                    && self.thrift_method.as_deref().is_none_or(|m| m == *method)
            }
            Request::Tcp { destination_port } => {
                self.destination_port.is_none_or(|p| p == *destination_port)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn principal_san(prefix: &str) -> Principal {
        Principal {
            peer_san: Some(SanMatch::Prefix(prefix.to_string())),
            ..Default::default()
        }
    }

    fn rbac(mode: RbacMode, action: RbacAction) -> (Stats, Rbac) {
        let stats = Stats::default();
        let r = Rbac::new(
            &stats,
            "l",
            mode,
            action,
            vec![(
                "web".to_string(),
                vec![principal_san("spiffe://example.org/ns/web/")],
                vec![Permission {
                    thrift_method: Some("getUser".to_string()),
                    ..Default::default()
                }],
            )],
        );
        (stats, r)
    }

    fn peer(sans: &[String]) -> Peer<'_> {
        Peer {
            source: IpAddr::from([127, 0, 0, 1]),
            sans,
            authenticated: !sans.is_empty(),
        }
    }

    const GET_USER: Request<'static, 'static> = Request::Thrift {
        service: None,
        method: "getUser",
    };

    #[test]
    fn allow_action_admits_only_matching_policies() {
        let (_s, r) = rbac(RbacMode::Enforce, RbacAction::Allow);
        let web = ["URI=spiffe://example.org/ns/web/sa/fe".to_string()];
        let other = ["URI=spiffe://example.org/ns/batch/sa/x".to_string()];
        assert_eq!(r.check(&peer(&web), &GET_USER, "l"), Verdict::Allowed);
        assert_eq!(r.check(&peer(&other), &GET_USER, "l"), Verdict::Denied);
        assert_eq!(r.check(&peer(&[]), &GET_USER, "l"), Verdict::Denied);
        let put = Request::Thrift {
            service: None,
            method: "putUser",
        };
        assert_eq!(r.check(&peer(&web), &put, "l"), Verdict::Denied);
    }

    #[test]
    fn deny_action_and_shadow_mode() {
        let (_s, r) = rbac(RbacMode::Enforce, RbacAction::Deny);
        let web = ["spiffe://example.org/ns/web/sa/fe".to_string()];
        assert_eq!(r.check(&peer(&web), &GET_USER, "l"), Verdict::Denied);
        assert_eq!(r.check(&peer(&[]), &GET_USER, "l"), Verdict::Allowed);
        let (_s, r) = rbac(RbacMode::Shadow, RbacAction::Deny);
        let v = r.check(&peer(&web), &GET_USER, "l");
        assert_eq!(v, Verdict::ShadowDenied);
        assert!(!v.deny());
    }

    #[test]
    fn principals_and_all_their_keys_must_hold() {
        let p = Principal {
            source_ip: Some(Cidr::parse("10.0.0.0/8").expect("cidr")),
            authenticated: Some(true),
            ..Default::default()
        };
        let sans = ["DNS=a".to_string()];
        let mut who = peer(&sans);
        assert!(!p.matches(&who));
        who.source = IpAddr::from([10, 1, 2, 3]);
        assert!(p.matches(&who));
        who.authenticated = false;
        assert!(!p.matches(&who));
    }

    #[test]
    fn tcp_permissions_match_the_destination_port() {
        let p = Permission {
            destination_port: Some(5432),
            ..Default::default()
        };
        assert!(p.matches(&Request::Tcp {
            destination_port: 5432
        }));
        assert!(!p.matches(&Request::Tcp {
            destination_port: 5433
        }));
    }
}
