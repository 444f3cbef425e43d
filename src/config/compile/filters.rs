//! Filter chains and a route's `filter_overrides`.

use std::collections::BTreeMap;
use std::sync::Arc;

use attache_filters::{registry, ConfigError, FactoryContext, HttpFilter};

use super::Cx;
use crate::config::load::did_you_mean;
use crate::config::raw;
use crate::config::Problem;
use crate::router::FilterOverride;

/// A listener's filter chain: the filters as written (name, index) and the ones
/// that built, with the chain used when no override applies.
pub(super) struct Chain {
    built: Vec<(String, Arc<dyn HttpFilter>)>,
    written: Vec<(String, usize)>,
    pub listener: Arc<[Arc<dyn HttpFilter>]>,
}

/// `filters:` at `p`: known filter names, each once, each config built.
pub(super) fn compile_chain(
    cx: &mut Cx<'_>,
    p: &str,
    filters: &[BTreeMap<String, serde_yaml::Value>],
    fcx: &FactoryContext<'_>,
) -> Chain {
    let mut chain: Vec<(String, Arc<dyn HttpFilter>)> = Vec::new();
    let mut chain_raw: Vec<(String, usize)> = Vec::new();
    for (j, item) in filters.iter().enumerate() {
        let fp = format!("{p}.filters.{j}");
        if item.len() != 1 {
            cx.err(&fp, "each filter item is one `name: config` mapping");
            continue;
        }
        let Some((name, value)) = item.iter().next() else {
            continue;
        };
        let np = format!("{fp}.{name}");
        let Some(factory) = registry::get(name) else {
            let hint = did_you_mean(name, registry::names())
                .map(|s| format!("; did you mean `{s}`?"))
                .unwrap_or_else(|| {
                    format!("; compiled-in filters: {}", registry::names().join(", "))
                });
            cx.err_key(&np, format!("unknown filter `{name}`{hint}"));
            continue;
        };
        if chain_raw.iter().any(|(n, _)| n == name) {
            cx.err_key(&np, format!("filter `{name}` appears twice on the chain"));
            continue;
        }
        chain_raw.push((name.clone(), j));
        match factory.build(value, fcx) {
            Ok(f) => chain.push((name.clone(), f)),
            Err(errs) => cx.report(&np, named(name, "", errs)),
        }
    }
    let listener: Arc<[Arc<dyn HttpFilter>]> = chain.iter().map(|(_, f)| f.clone()).collect();
    Chain {
        built: chain,
        written: chain_raw,
        listener,
    }
}

impl Chain {
    /// The names of the filters that built, in chain order.
    pub fn names(&self) -> Box<[Arc<str>]> {
        self.built
            .iter()
            .map(|(n, _)| Arc::from(n.as_str()))
            .collect()
    }
}

/// A route's `filter_overrides` as the snapshot records them: which filters it
/// disables and which it configures again.
pub(super) fn override_kinds(route: &raw::Route) -> Box<[(Arc<str>, FilterOverride)]> {
    let kind = |v: &serde_yaml::Value| match v.as_str() {
        Some("disabled") => FilterOverride::Disabled,
        _ => FilterOverride::Configured,
    };
    route
        .filter_overrides
        .iter()
        .map(|(name, v)| (Arc::from(name.as_str()), kind(v)))
        .collect()
}

/// A filter's problems, each message saying which filter (`what`: "" or
/// " override").
fn named(name: &str, what: &str, errs: Vec<ConfigError>) -> Vec<Problem> {
    errs.into_iter()
        .map(|e| {
            let mut p = Problem::from(e);
            p.message = format!("filter `{name}`{what}: {}", p.message);
            p
        })
        .collect()
}

/// A route's chain: the listener's, with `filter_overrides` applied (a filter
/// disabled, or built again from the route's config).
pub(super) fn compile_overrides(
    cx: &mut Cx<'_>,
    rp: &str,
    route: &raw::Route,
    chain: &Chain,
    fcx: &FactoryContext<'_>,
) -> Arc<[Arc<dyn HttpFilter>]> {
    if route.filter_overrides.is_empty() {
        return chain.listener.clone();
    }
    let chain_raw = &chain.written;
    let mut out: Vec<Arc<dyn HttpFilter>> = Vec::new();
    for (name, _) in route.filter_overrides.iter() {
        if !chain_raw.iter().any(|(n, _)| n == name) {
            let op = format!("{rp}.filter_overrides.{name}");
            let hint = did_you_mean(name, chain_raw.iter().map(|(n, _)| n.as_str()))
                .map(|s| format!("; did you mean `{s}`?"))
                .unwrap_or_default();
            cx.err_key(
                &op,
                format!("override of filter `{name}`, which is not on this listener's chain{hint}"),
            );
        }
    }
    // Walk the chain as written (not only the filters that built), so an override
    // is validated even when the listener's own config for that filter is broken.
    for (name, _) in chain_raw {
        let base = chain.built.iter().find(|(n, _)| n == name).map(|(_, f)| f);
        match route.filter_overrides.get(name) {
            None => {
                if let Some(f) = base {
                    out.push(f.clone());
                }
            }
            Some(serde_yaml::Value::String(s)) if s == "disabled" => {}
            Some(v) => {
                let op = format!("{rp}.filter_overrides.{name}");
                let Some(factory) = registry::get(name) else {
                    continue;
                };
                match factory.build(v, fcx) {
                    Ok(f) => out.push(f),
                    Err(errs) => cx.report(&op, named(name, " override", errs)),
                }
            }
        }
    }
    out.into()
}
