//! A route's `match:` block (path, headers, query, methods, peer SAN).

use http::{HeaderName, Method};

use super::{regex, Cx};
use crate::config::raw;
use crate::router::{HeaderMatch, Matcher, PathMatch, QueryMatch, SanMatch, ValueMatch};

/// A header or query matcher's value condition (see [`ValueMatch::from_keys`]),
/// its problem reported at `path`.
pub(super) fn value_match(
    cx: &mut Cx<'_>,
    path: &str,
    exact: &Option<String>,
    prefix: &Option<String>,
    suffix: &Option<String>,
    re: &Option<String>,
    present: Option<bool>,
) -> Option<ValueMatch> {
    match ValueMatch::from_keys(exact, prefix, suffix, re, present) {
        Ok(v) => Some(v),
        Err((key, msg)) => {
            let at = key.map_or_else(|| path.to_owned(), |k| format!("{path}.{k}"));
            cx.err(&at, msg);
            None
        }
    }
}

pub(super) fn compile_match(cx: &mut Cx<'_>, mp: &str, m: &raw::RouteMatch) -> Option<Matcher> {
    let n = [m.prefix.is_some(), m.path.is_some(), m.regex.is_some()]
        .iter()
        .filter(|b| **b)
        .count();
    let path = match (n, &m.prefix, &m.path, &m.regex) {
        (1, Some(p), _, _) => {
            if !p.starts_with('/') {
                cx.err(
                    &format!("{mp}.prefix"),
                    format!("prefix `{p}` must start with `/`"),
                );
            }
            PathMatch::Prefix(p.clone())
        }
        (1, _, Some(p), _) => {
            if !p.starts_with('/') {
                cx.err(
                    &format!("{mp}.path"),
                    format!("path `{p}` must start with `/`"),
                );
            }
            PathMatch::Exact(p.clone())
        }
        (1, _, _, Some(r)) => PathMatch::Regex(regex(cx, &format!("{mp}.regex"), r)?),
        _ => {
            cx.err(
                mp,
                "a route match needs exactly one of `prefix`, `path` or `regex`",
            );
            return None;
        }
    };
    let mut ok = true;
    let mut headers = Vec::new();
    for (i, h) in m.headers.iter().enumerate() {
        let hp = format!("{mp}.headers.{i}");
        let name = match HeaderName::from_bytes(h.name.as_bytes()) {
            Ok(n) => n,
            Err(_) => {
                cx.err(
                    &format!("{hp}.name"),
                    format!("`{}` is not a valid header name", h.name),
                );
                ok = false;
                continue;
            }
        };
        match value_match(cx, &hp, &h.exact, &h.prefix, &h.suffix, &h.regex, h.present) {
            Some(value) => headers.push(HeaderMatch {
                name,
                value,
                invert: h.invert,
            }),
            None => ok = false,
        }
    }
    let mut query = Vec::new();
    for (i, q) in m.query.iter().enumerate() {
        let qp = format!("{mp}.query.{i}");
        match value_match(cx, &qp, &q.exact, &None, &None, &q.regex, q.present) {
            Some(value) => query.push(QueryMatch {
                name: q.name.clone(),
                value,
            }),
            None => ok = false,
        }
    }
    let mut methods = Vec::new();
    for (i, meth) in m.methods.iter().enumerate() {
        match Method::from_bytes(meth.as_bytes()) {
            Ok(mm) if meth.bytes().all(|b| b.is_ascii_uppercase()) => methods.push(mm),
            _ => {
                cx.err(
                    &format!("{mp}.methods.{i}"),
                    format!("`{meth}` is not an HTTP method (use upper case, e.g. GET)"),
                );
                ok = false;
            }
        }
    }
    let peer_san = match &m.peer_san {
        None => None,
        Some(s) => {
            let san = san_match(cx, &format!("{mp}.peer_san"), s);
            ok &= san.is_some();
            san
        }
    };
    ok.then_some(Matcher {
        path,
        headers,
        query,
        methods,
        peer_san,
    })
}

/// A `{ exact | prefix | suffix }` SAN rule (exactly one key).
pub(super) fn san_match(cx: &mut Cx<'_>, p: &str, s: &raw::SanRule) -> Option<SanMatch> {
    let m = san_rule(s);
    if m.is_none() {
        cx.err(p, "give exactly one of `exact`, `prefix` or `suffix`");
    }
    m
}

/// A SAN matcher: a bare string is exact; a rule sets exactly one key (`None`
/// when it sets zero or several).
pub(super) fn san_matcher(m: &raw::SanMatcher) -> Option<SanMatch> {
    match m {
        raw::SanMatcher::Exact(s) => Some(SanMatch::Exact(s.clone())),
        raw::SanMatcher::Rule(r) => san_rule(r),
    }
}

fn san_rule(s: &raw::SanRule) -> Option<SanMatch> {
    match (&s.exact, &s.prefix, &s.suffix) {
        (Some(e), None, None) => Some(SanMatch::Exact(e.clone())),
        (None, Some(x), None) => Some(SanMatch::Prefix(x.clone())),
        (None, None, Some(x)) => Some(SanMatch::Suffix(x.clone())),
        _ => None,
    }
}
