//! Config: raw serde types -> validation with FILE:LINE:COL -> compiled snapshot.

pub mod compile;
pub mod duration;
pub mod endpoints;
pub mod load;
pub mod raw;
pub mod snapshot;

pub use load::Diagnostic;
pub use snapshot::Snapshot;

use std::collections::HashMap;
use std::sync::Arc;

use attache_filters::Services;

use crate::upstream::Cluster;

use crate::stats::Stats;

/// Read, validate and compile a config file; every problem at once on failure.
pub fn load_file(
    path: &str,
    stats: &Stats,
    services: &Services,
    check_files: bool,
) -> Result<(Snapshot, u64), Vec<Diagnostic>> {
    load_file_with(path, stats, services, check_files, None)
}

/// As [`load_file`]; clusters identical to one in `previous` (the running config)
/// are reused rather than rebuilt.
pub fn load_file_with(
    path: &str,
    stats: &Stats,
    services: &Services,
    check_files: bool,
    previous: Option<&HashMap<String, Arc<Cluster>>>,
) -> Result<(Snapshot, u64), Vec<Diagnostic>> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        vec![Diagnostic {
            file: path.to_string(),
            line: 1,
            col: 1,
            message: format!("cannot read config: {e}"),
        }]
    })?;
    let lookup = |k: &str| std::env::var(k).ok();
    let (cfg, map, effective) = load::parse(path, &text, &lookup)?;
    let opts = compile::Options {
        stats,
        services,
        check_files,
        previous,
    };
    let snap = compile::compile(&cfg, &map, effective, &opts)?;
    Ok((snap, hash(&text)))
}

/// As [`load_file`], for text already in memory; `lookup` resolves `${VAR}`.
pub fn load_str(
    path: &str,
    text: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
    stats: &Stats,
    services: &Services,
    check_files: bool,
) -> Result<(Snapshot, u64), Vec<Diagnostic>> {
    let (cfg, map, effective) = load::parse(path, text, lookup)?;
    let opts = compile::Options {
        stats,
        services,
        check_files,
        previous: None,
    };
    let snap = compile::compile(&cfg, &map, effective, &opts)?;
    Ok((snap, hash(text)))
}

/// FNV-1a of the config text: stable across runs and builds, shown by /server_info.
pub fn hash(text: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in text.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}
