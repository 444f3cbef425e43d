//! CDS, LDS and RDS: accepted resources, translated to attache's raw config, are
//! added to the config file's clusters and listeners ([`Dynamic::merge`]) and the
//! whole compiles through the path a file reload takes (`Server::apply_dynamic`):
//! the same checks. [`Accepted`] stages each update ([`Staged`]): what to compile,
//! and the accepted state to keep once it applied. A resource that does not
//! translate or does not compile is a NACK; the last good state serves.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};

use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::listener::v3::Listener;
use envoy_types::pb::envoy::config::route::v3::RouteConfiguration;

use super::Nack;
use crate::config::load::SourceMap;
use crate::config::{raw, Diagnostic};

/// The xDS additions to the file config.
#[derive(Debug, Default, Clone)]
pub struct Dynamic {
    pub clusters: BTreeMap<String, raw::Cluster>,
    pub listeners: BTreeMap<String, raw::Listener>,
}

/// The source name diagnostics of a resource carry (`xds:cds/NAME`).
fn source(kind: &str, name: &str) -> String {
    format!("xds:{kind}/{name}")
}

impl Dynamic {
    /// Add the resources to `cfg`; a name the file already uses is a problem (a static
    /// cluster or listener is never replaced over xDS).
    pub fn merge(&self, cfg: &mut raw::Config, map: &mut SourceMap) -> Vec<Diagnostic> {
        let mut errs = Vec::new();
        let clash = |kind: &str, what: &str, name: &str| {
            Diagnostic {
            file: source(kind, name),
            line: 0,
            col: 0,
            message: format!("{what} `{name}` is defined in the config file; xDS cannot replace it, rename one of them"),
        }
        };
        for (name, c) in &self.clusters {
            if cfg.clusters.iter().any(|s| s.name == *name) {
                errs.push(clash("cds", "cluster", name));
                continue;
            }
            map.mark(
                &format!("clusters.{}", cfg.clusters.len()),
                &source("cds", name),
            );
            cfg.clusters.push(c.clone());
        }
        for (name, l) in &self.listeners {
            if cfg.listeners.iter().any(|s| s.name == *name) {
                errs.push(clash("lds", "listener", name));
                continue;
            }
            map.mark(
                &format!("listeners.{}", cfg.listeners.len()),
                &source("lds", name),
            );
            cfg.listeners.push(l.clone());
        }
        errs
    }
}

/// A compile failure as a NACK naming the first xDS resource at fault; each problem
/// of another resource is prefixed with its name (`lds/web: …`), the config file's
/// own with FILE:LINE:COL.
pub fn nack_of(diags: &[Diagnostic]) -> Nack {
    let resource = diags
        .iter()
        .find_map(|d| d.file.strip_prefix("xds:"))
        .unwrap_or("config");
    let text: Vec<String> = diags
        .iter()
        .take(10)
        .map(|d| match d.file.strip_prefix("xds:") {
            Some(r) if r == resource => d.message.clone(),
            Some(r) => format!("{r}: {}", d.message),
            None => d.to_string(),
        })
        .collect();
    Nack {
        resource: resource.to_string(),
        field: "config".to_string(),
        message: text.join("; "),
    }
}

/// What LDS and RDS sent that is accepted (listeners are re-translated when their
/// routes change).
#[derive(Default, Clone)]
pub struct Accepted {
    listeners: BTreeMap<String, Listener>,
    routes: BTreeMap<String, Vec<raw::VirtualHost>>,
}

impl Accepted {
    /// The route configuration names the accepted listeners ask for.
    pub fn rds_names(&self) -> BTreeSet<String> {
        translate_listeners(&self.listeners, &self.routes).1
    }
}

/// Translate `listeners` with `routes`; (the ones ready, every RDS name asked for).
/// A listener whose route configuration has not arrived yet waits (Envoy's
/// warming) instead of being rejected.
fn translate_listeners(
    listeners: &BTreeMap<String, Listener>,
    routes: &BTreeMap<String, Vec<raw::VirtualHost>>,
) -> (
    Result<BTreeMap<String, raw::Listener>, Nack>,
    BTreeSet<String>,
) {
    let asked = RefCell::new(BTreeSet::new());
    let missing = RefCell::new(false);
    let rds = |name: &str| {
        asked.borrow_mut().insert(name.to_string());
        let found = routes.get(name).cloned();
        if found.is_none() {
            *missing.borrow_mut() = true;
        }
        found
    };
    let mut out = BTreeMap::new();
    for (name, l) in listeners {
        *missing.borrow_mut() = false;
        match super::listener(l, &rds) {
            Ok(raw) => {
                out.insert(name.clone(), raw);
            }
            // Waits for its route configuration (logged by `apply_listeners`).
            Err(_) if *missing.borrow() => {}
            Err(n) => return (Err(n), asked.into_inner()),
        }
    }
    (Ok(out), asked.into_inner())
}

fn unique_names<T>(items: &[T], name: impl Fn(&T) -> &str) -> Result<(), Nack> {
    let mut seen = BTreeSet::new();
    for i in items {
        if !seen.insert(name(i)) {
            return Err(Nack {
                resource: name(i).to_string(),
                field: "name".to_string(),
                message: "the response carries this resource twice".to_string(),
            });
        }
    }
    Ok(())
}

/// An update translated: the xDS additions to compile, the accepted state to keep
/// once they applied, and the listeners still waiting for their routes.
pub struct Staged {
    pub dynamic: Dynamic,
    pub accepted: Accepted,
    pub waiting: Vec<String>,
}

impl Accepted {
    /// CDS (state of the world): the response is every xDS cluster.
    pub fn clusters(&self, current: &Dynamic, clusters: &[Cluster]) -> Result<Staged, Nack> {
        unique_names(clusters, |c| c.name.as_str())?;
        let mut dynamic = current.clone();
        dynamic.clusters = clusters
            .iter()
            .map(|c| super::cluster(c).map(|r| (c.name.clone(), r)))
            .collect::<Result<_, _>>()?;
        Ok(Staged {
            dynamic,
            accepted: self.clone(),
            waiting: Vec::new(),
        })
    }

    /// LDS (state of the world): the response is every xDS listener.
    pub fn listeners(&self, current: &Dynamic, listeners: Vec<Listener>) -> Result<Staged, Nack> {
        unique_names(&listeners, |l| l.name.as_str())?;
        let listeners: BTreeMap<String, Listener> =
            listeners.into_iter().map(|l| (l.name.clone(), l)).collect();
        let accepted = Accepted {
            listeners,
            routes: self.routes.clone(),
        };
        accepted.stage(current)
    }

    /// RDS: the route configurations in the response replace those of the same name;
    /// the listeners that use them are rebuilt (route updates swap atomically).
    pub fn routes(
        &self,
        current: &Dynamic,
        configs: &[RouteConfiguration],
    ) -> Result<Staged, Nack> {
        unique_names(configs, |r| r.name.as_str())?;
        let mut accepted = self.clone();
        for rc in configs {
            accepted
                .routes
                .insert(rc.name.clone(), super::route_configuration(rc)?);
        }
        accepted.stage(current)
    }

    /// `current` with the listeners of `self` that are ready.
    fn stage(self, current: &Dynamic) -> Result<Staged, Nack> {
        let ready = translate_listeners(&self.listeners, &self.routes).0?;
        let waiting = self
            .listeners
            .keys()
            .filter(|n| !ready.contains_key(*n))
            .cloned()
            .collect();
        let mut dynamic = current.clone();
        dynamic.listeners = ready;
        Ok(Staged {
            dynamic,
            accepted: self,
            waiting,
        })
    }
}

#[cfg(test)]
mod tests;
