//! Endpoint discovery tasks: a polled endpoints file and periodic DNS resolution.
//! Each task holds only a `Weak<Cluster>` and ends when its cluster is dropped (a
//! reload removed or replaced it). A bad update (unreadable, malformed, empty, over
//! `max_endpoints`, failed resolution) keeps the last good set, is logged and is
//! counted in `attache_discovery_update_total{cluster,result="rejected"}`.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime};

use super::Cluster;
use crate::config::endpoints::{parse_file, Spec};

/// How often the endpoints file is checked (a change applies within a second).
pub const FILE_POLL: Duration = Duration::from_millis(500);

#[derive(PartialEq, Eq, Clone, Copy)]
struct Stamp {
    modified: Option<SystemTime>,
    len: u64,
    #[cfg(unix)]
    ino: u64,
}

fn stamp(path: &str) -> std::io::Result<Stamp> {
    let m = std::fs::metadata(path)?;
    Ok(Stamp {
        modified: m.modified().ok(),
        len: m.len(),
        #[cfg(unix)]
        ino: std::os::unix::fs::MetadataExt::ino(&m),
    })
}

/// Read, parse and apply the file once; true when it was good.
fn apply_file(c: &Cluster, path: &str) -> bool {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) => {
            c.fleet.discovery_rejected.inc();
            tracing::error!(cluster = %c.name, path, error = %e, "cannot read endpoints file; keeping the last good endpoints");
            return false;
        }
    };
    match parse_file(path, &text, c.settings.max_endpoints) {
        Ok(specs) => {
            c.fleet.discovery_ok.inc();
            if c.set_endpoints(&specs, true) {
                tracing::info!(cluster = %c.name, path, endpoints = specs.len(), "endpoints updated from file");
            }
            true
        }
        Err(diags) => {
            c.fleet.discovery_rejected.inc();
            for d in diags.iter().take(10) {
                tracing::error!(cluster = %c.name, error = %d, "endpoints file rejected; keeping the last good endpoints");
            }
            false
        }
    }
}

pub(super) async fn watch_file(cluster: Weak<Cluster>, path: String) {
    watch_file_every(cluster, path, FILE_POLL).await
}

/// [`watch_file`], polling every `every` instead of [`FILE_POLL`].
pub(super) async fn watch_file_every(cluster: Weak<Cluster>, path: String, every: Duration) {
    // The first pass re-applies what the config load read (a no-op unless the file
    // changed in between).
    let mut last: Option<Stamp> = None;
    let mut first = true;
    loop {
        if !first {
            tokio::time::sleep(every).await;
        }
        first = false;
        let Some(c) = cluster.upgrade() else {
            return;
        };
        let path2 = path.clone();
        let now = tokio::task::spawn_blocking(move || stamp(&path2))
            .await
            .unwrap_or_else(|e| Err(std::io::Error::other(e)));
        match now {
            Ok(s) if Some(s) == last => {}
            Ok(s) => {
                last = Some(s);
                let c2 = c.clone();
                let p = path.clone();
                let _ = tokio::task::spawn_blocking(move || apply_file(&c2, &p)).await;
            }
            Err(e) => {
                if last.is_some() {
                    // Count once per disappearance, not every poll.
                    last = None;
                    c.fleet.discovery_rejected.inc();
                    tracing::error!(cluster = %c.name, path = %path, error = %e, "endpoints file unavailable; keeping the last good endpoints");
                }
            }
        }
    }
}

/// Resolve `name` once and apply the answer; false on failure (last set kept).
pub(super) async fn resolve_once(c: &Arc<Cluster>, name: &str) -> bool {
    let answer = tokio::time::timeout(Duration::from_secs(5), tokio::net::lookup_host(name)).await;
    let addrs: BTreeSet<SocketAddr> = match answer {
        Ok(Ok(it)) => it.collect(),
        Ok(Err(e)) => {
            c.fleet.discovery_rejected.inc();
            tracing::warn!(cluster = %c.name, name, error = %e, "dns resolution failed; keeping the last answer");
            return false;
        }
        Err(_) => {
            c.fleet.discovery_rejected.inc();
            tracing::warn!(cluster = %c.name, name, "dns resolution timed out; keeping the last answer");
            return false;
        }
    };
    if addrs.is_empty() || addrs.len() > c.settings.max_endpoints {
        c.fleet.discovery_rejected.inc();
        tracing::warn!(cluster = %c.name, name, records = addrs.len(), max = c.settings.max_endpoints, "dns answer empty or over max_endpoints; keeping the last answer");
        return false;
    }
    c.fleet.discovery_ok.inc();
    let specs: Vec<Spec> = addrs
        .into_iter()
        .map(|addr| Spec {
            addr,
            weight: 1,
            zone: None,
        })
        .collect();
    // The first answer is the initial set, not an addition.
    let first = c.hosts().all.is_empty();
    if c.set_endpoints(&specs, !first) {
        tracing::info!(cluster = %c.name, name, endpoints = specs.len(), "endpoints updated from dns");
    }
    true
}

pub(super) async fn refresh_dns(cluster: Weak<Cluster>, name: String, refresh: Duration) {
    loop {
        tokio::time::sleep(refresh).await;
        let Some(c) = cluster.upgrade() else {
            return;
        };
        resolve_once(&c, &name).await;
    }
}
