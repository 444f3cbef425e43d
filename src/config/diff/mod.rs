//! The comparison behind `attache diff OLD NEW`: what changes in behaviour between
//! two configs, for a reviewer. The readable half (this module and `routes`) says
//! it in words for listeners, routes (added, removed, reordered, match or action
//! changed, weights shifted), clusters, filters and TLS policy; the generic half
//! (`generic`) compares every other key. It works on the typed raw configs and
//! their source maps, so formatting, comments and key order never show up and
//! every change points at its line; `toolkit::diff` prints the result.

mod generic;
mod routes;

use std::collections::BTreeMap;

use crate::config::duration::{self, Dur};
use crate::config::load::{Diagnostic, SourceMap};
use crate::config::raw;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    Admin,
    Listener,
    Route,
    Cluster,
    Filter,
    Tls,
    /// Top-level keys outside listeners, clusters and admin.
    Config,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Admin => "admin",
            Kind::Listener => "listener",
            Kind::Route => "route",
            Kind::Cluster => "cluster",
            Kind::Filter => "filter",
            Kind::Tls => "tls",
            Kind::Config => "config",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Change {
    pub kind: Kind,
    /// `+` added, `-` removed, `~` changed.
    pub sign: char,
    pub subject: String,
    pub message: String,
    /// Where in NEW (or OLD, for removals).
    pub at: Diagnostic,
}

struct Cx<'a> {
    old: &'a SourceMap,
    new: &'a SourceMap,
    out: Vec<Change>,
}

impl Cx<'_> {
    fn push(&mut self, kind: Kind, sign: char, subject: &str, msg: String, path: &str, old: bool) {
        // A list item is located at its `name` key when it has one.
        let map = if old { self.old } else { self.new };
        let at = map.diag_key(&format!("{path}.name"), "");
        self.out.push(Change {
            kind,
            sign,
            subject: subject.to_string(),
            message: msg,
            at,
        });
    }

    /// An item only OLD has, located in OLD.
    fn removed(&mut self, kind: Kind, subject: &str, msg: String, path: &str) {
        self.push(kind, '-', subject, msg, path, true);
    }

    /// An item only NEW has.
    fn added(&mut self, kind: Kind, subject: &str, msg: String, path: &str) {
        self.push(kind, '+', subject, msg, path, false);
    }

    /// A `~` change in NEW at `path` when `a` and `b` differ: `what a -> b`.
    fn field(&mut self, kind: Kind, subject: &str, what: &str, a: &str, b: &str, path: &str) {
        if a != b {
            self.push(
                kind,
                '~',
                subject,
                format!("{what} {a} -> {b}"),
                path,
                false,
            );
        }
    }
}

/// One item of two lists matched by key: only in OLD, only in NEW, or in both
/// (each with its index).
enum Pair<'a, T> {
    Removed(usize, &'a T),
    Added(usize, &'a T),
    Both((usize, &'a T), (usize, &'a T)),
}

/// Match the items of `old` and `new` by `key`: the removed ones first, in OLD's
/// order, then NEW's items in order, added or paired with the first OLD item of
/// the same key.
fn pair_up<'a, T>(
    old: &'a [T],
    new: &'a [T],
    key: impl Fn(usize, &T) -> String,
    mut each: impl FnMut(Pair<'a, T>),
) {
    let okeys: Vec<String> = old.iter().enumerate().map(|(i, x)| key(i, x)).collect();
    let nkeys: Vec<String> = new.iter().enumerate().map(|(i, x)| key(i, x)).collect();
    for (i, k) in okeys.iter().enumerate() {
        if !nkeys.contains(k) {
            each(Pair::Removed(i, &old[i]));
        }
    }
    for (i, k) in nkeys.iter().enumerate() {
        match okeys.iter().position(|x| x == k) {
            Some(oi) => each(Pair::Both((oi, &old[oi]), (i, &new[i]))),
            None => each(Pair::Added(i, &new[i])),
        }
    }
}

fn opt<T: std::fmt::Display>(v: &Option<T>) -> String {
    v.as_ref().map_or("(unset)".to_string(), |x| x.to_string())
}

fn dur(d: &Option<Dur>) -> String {
    d.map_or("(default)".to_string(), |d| duration::format(d.0))
}

/// `a, b` or `(none)`.
fn list_or_none(v: &[String]) -> String {
    if v.is_empty() {
        "(none)".to_string()
    } else {
        v.join(", ")
    }
}

/// Compare two read configs: the readable comparison of routes, weights, clusters,
/// filters and TLS first, then every other key of the effective documents.
pub fn diff_sources(old: &crate::config::Source, new: &crate::config::Source) -> Vec<Change> {
    let mut changes = diff(&old.cfg, &old.map, &new.cfg, &new.map);
    let rest = generic::diff(&old.effective, &old.map, &new.effective, &new.map, &changes);
    changes.extend(rest);
    changes
}

/// Compare two configs: admin, listeners, clusters.
pub fn diff(old: &raw::Config, om: &SourceMap, new: &raw::Config, nm: &SourceMap) -> Vec<Change> {
    let mut cx = Cx {
        old: om,
        new: nm,
        out: Vec::new(),
    };
    admin(&mut cx, &old.admin, &new.admin);
    pair_up(
        &old.listeners,
        &new.listeners,
        |_, l| l.name.clone(),
        |p| listener(&mut cx, p),
    );
    pair_up(
        &old.clusters,
        &new.clusters,
        |_, c| c.name.clone(),
        |p| cluster(&mut cx, p),
    );
    cx.out
}

fn admin(cx: &mut Cx<'_>, o: &raw::Admin, n: &raw::Admin) {
    cx.field(
        Kind::Admin,
        "admin",
        "address",
        &opt(&o.address),
        &opt(&n.address),
        "admin.address",
    );
    // The token's value is never printed: a new token reads `set -> set`.
    if o.token != n.token {
        let state = |t: &Option<String>| if t.is_some() { "set" } else { "unset" };
        let msg = format!("token {} -> {}", state(&o.token), state(&n.token));
        cx.push(Kind::Admin, '~', "admin", msg, "admin", false);
    }
}

fn proto(p: raw::ListenerProtocol) -> &'static str {
    match p {
        raw::ListenerProtocol::Http => "http",
        raw::ListenerProtocol::Tcp => "tcp",
        raw::ListenerProtocol::Thrift => "thrift",
    }
}

/// `http on 127.0.0.1:8080`.
fn serves(l: &raw::Listener) -> String {
    format!("{} on {}", proto(l.protocol), l.address)
}

fn listener(cx: &mut Cx<'_>, p: Pair<'_, raw::Listener>) {
    let ((oi, o), (i, n)) = match p {
        Pair::Removed(i, l) => {
            let msg = format!("removed ({})", serves(l));
            return cx.removed(Kind::Listener, &l.name, msg, &format!("listeners.{i}"));
        }
        Pair::Added(i, l) => {
            let msg = format!("added ({})", serves(l));
            return cx.added(Kind::Listener, &l.name, msg, &format!("listeners.{i}"));
        }
        Pair::Both(o, n) => (o, n),
    };
    let lp = format!("listeners.{i}");
    let name = &n.name;
    let (l, at) = (Kind::Listener, |k: &str| format!("{lp}.{k}"));
    cx.field(l, name, "address", &o.address, &n.address, &at("address"));
    cx.field(
        l,
        name,
        "protocol",
        proto(o.protocol),
        proto(n.protocol),
        &at("protocol"),
    );
    if let (Some(a), Some(b)) = (&o.tcp, &n.tcp) {
        cx.field(
            l,
            name,
            "tcp cluster",
            &a.cluster,
            &b.cluster,
            &at("tcp.cluster"),
        );
    }
    let both = (o.tls.as_ref(), n.tls.as_ref());
    tls(cx, (name, &lp), LISTENER_TLS, listener_tls, both);
    filters(cx, name, &lp, o, n);
    routes::virtual_hosts(cx, name, (oi, o), (i, n));
    routes::thrift_routes(cx, name, (oi, o), (i, n));
}

fn cluster(cx: &mut Cx<'_>, p: Pair<'_, raw::Cluster>) {
    let (o, (i, n)) = match p {
        Pair::Removed(i, c) => {
            let at = format!("clusters.{i}");
            return cx.removed(Kind::Cluster, &c.name, "removed".into(), &at);
        }
        Pair::Added(i, c) => {
            let msg = format!("added ({})", c.endpoints.join(", "));
            return cx.added(Kind::Cluster, &c.name, msg, &format!("clusters.{i}"));
        }
        Pair::Both((_, o), n) => (o, n),
    };
    let cp = format!("clusters.{i}");
    endpoints(cx, &n.name, &cp, &o.endpoints, &n.endpoints);
    let name = &n.name;
    let lower = |v: &dyn std::fmt::Debug| format!("{v:?}").to_lowercase();
    let fields = [
        ("lb_policy", lower(&o.lb_policy), lower(&n.lb_policy)),
        ("protocol", lower(&o.protocol), lower(&n.protocol)),
        (
            "connect_timeout",
            dur(&o.connect_timeout),
            dur(&n.connect_timeout),
        ),
    ];
    for (k, a, b) in fields {
        cx.field(Kind::Cluster, name, k, &a, &b, &format!("{cp}.{k}"));
    }
    let both = (o.tls.as_ref(), n.tls.as_ref());
    tls(cx, (name, &cp), CLUSTER_TLS, cluster_tls, both);
}

/// `endpoints +a, +b, -c` when the endpoint set changed.
fn endpoints(cx: &mut Cx<'_>, name: &str, cp: &str, o: &[String], n: &[String]) {
    let added: Vec<&str> = n
        .iter()
        .filter(|e| !o.contains(e))
        .map(String::as_str)
        .collect();
    let removed: Vec<&str> = o
        .iter()
        .filter(|e| !n.contains(e))
        .map(String::as_str)
        .collect();
    let mut parts = Vec::new();
    if !added.is_empty() {
        parts.push(format!("+{}", added.join(", +")));
    }
    if !removed.is_empty() {
        parts.push(format!("-{}", removed.join(", -")));
    }
    if !parts.is_empty() {
        let msg = format!("endpoints {}", parts.join(", "));
        cx.push(
            Kind::Cluster,
            '~',
            name,
            msg,
            &format!("{cp}.endpoints"),
            false,
        );
    }
}

/// A TLS block as compared: (key, located at the key itself, value).
type TlsFields = Vec<(&'static str, bool, String)>;

/// What adding and removing a TLS block means, in words.
struct TlsWords {
    added: &'static str,
    removed: &'static str,
}

const LISTENER_TLS: TlsWords = TlsWords {
    added: "TLS termination added",
    removed: "TLS termination removed: the listener is now plaintext",
};

const CLUSTER_TLS: TlsWords = TlsWords {
    added: "upstream TLS added",
    removed: "upstream TLS removed: traffic to this cluster is now plaintext",
};

fn listener_tls(t: &raw::ListenerTls) -> TlsFields {
    vec![
        ("require_client_cert", true, opt(&t.require_client_cert)),
        ("client_ca", true, opt(&t.client_ca)),
        (
            "allowed_client_sans",
            true,
            format!("{:?}", t.allowed_client_sans),
        ),
        ("min_version", true, opt(&t.min_version)),
        ("alpn", true, format!("{:?}", t.alpn)),
        ("cert_chain", true, opt(&t.cert_chain)),
        (
            "forward_client_cert",
            true,
            format!("{:?}", t.forward_client_cert),
        ),
    ]
}

fn cluster_tls(t: &raw::ClusterTls) -> TlsFields {
    vec![
        ("ca", false, opt(&t.ca)),
        ("sni", false, opt(&t.sni)),
        ("verify_sans", false, format!("{:?}", t.verify_sans)),
        ("mtls", false, t.cert_chain.is_some().to_string()),
    ]
}

/// The `tls:` block of the listener or cluster at `owner`: added, removed, or the
/// keys that differ.
fn tls<T>(
    cx: &mut Cx<'_>,
    (name, owner): (&str, &str),
    words: TlsWords,
    fields: fn(&T) -> TlsFields,
    (o, n): (Option<&T>, Option<&T>),
) {
    let tp = format!("{owner}.tls");
    match (o.map(fields), n.map(fields)) {
        (None, None) => {}
        (None, Some(_)) => cx.added(Kind::Tls, name, words.added.into(), &tp),
        (Some(_), None) => cx.push(Kind::Tls, '-', name, words.removed.into(), owner, false),
        (Some(a), Some(b)) => {
            for ((k, keyed, x), (_, _, y)) in a.iter().zip(&b) {
                let at = if *keyed {
                    format!("{tp}.{k}")
                } else {
                    tp.clone()
                };
                cx.field(Kind::Tls, name, k, x, y, &at);
            }
        }
    }
}

/// The listener's filter names, in chain order.
fn chain_names(l: &raw::Listener) -> Vec<String> {
    l.filters.iter().flat_map(|m| m.keys().cloned()).collect()
}

/// The chain's order and each filter's config.
fn filters(cx: &mut Cx<'_>, name: &str, lp: &str, o: &raw::Listener, n: &raw::Listener) {
    let (a, b) = (list_or_none(&chain_names(o)), list_or_none(&chain_names(n)));
    cx.field(
        Kind::Filter,
        name,
        "chain",
        &a,
        &b,
        &format!("{lp}.filters"),
    );
    let old: BTreeMap<&String, &serde_yaml::Value> = o.filters.iter().flatten().collect();
    for (j, item) in n.filters.iter().enumerate() {
        for (f, v) in item {
            if old.get(f).is_some_and(|old| *old != v) {
                let msg = format!("filter `{f}` config changed");
                cx.push(
                    Kind::Filter,
                    '~',
                    name,
                    msg,
                    &format!("{lp}.filters.{j}.{f}"),
                    false,
                );
            }
        }
    }
}
