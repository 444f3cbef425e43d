//! Filter chains and a route's `filter_overrides`.

use std::sync::Arc;

use attache_filters::{registry, FactoryContext, HttpFilter, PathSeg};

use super::Cx;
use crate::config::load::did_you_mean;
use crate::config::raw;

pub(super) fn join_seg(path: &str, segs: &[PathSeg]) -> String {
    let mut out = path.to_string();
    for s in segs {
        out.push('.');
        match s {
            PathSeg::Key(k) => out.push_str(k),
            PathSeg::Index(i) => out.push_str(&i.to_string()),
        }
    }
    out
}

pub(super) fn compile_overrides(
    cx: &mut Cx<'_>,
    rp: &str,
    route: &raw::Route,
    chain: &[(String, Arc<dyn HttpFilter>)],
    chain_raw: &[(String, usize)],
    fcx: &FactoryContext<'_>,
    listener_chain: &Arc<[Arc<dyn HttpFilter>]>,
) -> Arc<[Arc<dyn HttpFilter>]> {
    if route.filter_overrides.is_empty() {
        return listener_chain.clone();
    }
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
        let base = chain.iter().find(|(n, _)| n == name).map(|(_, f)| f);
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
                    Err(errs) => {
                        for e in errs {
                            cx.err(
                                &join_seg(&op, &e.path),
                                format!("filter `{name}` override: {}", e.message),
                            );
                        }
                    }
                }
            }
        }
    }
    out.into()
}
