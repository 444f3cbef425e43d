//! Config: raw serde types -> validation with FILE:LINE:COL -> compiled snapshot.

pub mod compile;
pub mod diff;
pub mod duration;
pub mod endpoints;
pub mod from_xds;
pub mod hints;
pub mod include;
pub mod lint;
pub mod load;
pub mod problem;
pub mod raw;
pub mod snapshot;
#[cfg(test)]
pub(crate) mod testing;
pub mod types;
pub mod words;

pub use compile::ClusterEntry;
pub use load::Diagnostic;
pub use problem::{Problem, Problems};
pub use snapshot::Snapshot;

use std::collections::HashMap;
use std::sync::Arc;

use attache_filters::Services;

use crate::upstream::Cluster;

use crate::stats::Stats;

/// Read, validate and compile a config file (and its includes); every problem at
/// once on failure.
pub fn load_file(
    path: &str,
    stats: &Stats,
    services: &Services,
    check_files: bool,
) -> Result<(Snapshot, u64), Vec<Diagnostic>> {
    load_file_with(path, stats, services, check_files, None)
}

/// As [`load_file`]; clusters identical to one in `previous` (the running config)
/// are reused rather than rebuilt, so pools, health and counters survive a reload.
pub fn load_file_with(
    path: &str,
    stats: &Stats,
    services: &Services,
    check_files: bool,
    previous: Option<&HashMap<String, Arc<Cluster>>>,
) -> Result<(Snapshot, u64), Vec<Diagnostic>> {
    load_file_source(path, stats, services, check_files, previous, &|_, _| {
        Vec::new()
    })
    .map(|(snap, src)| (snap, src.hash))
}

/// Adds to a config before it compiles (the xDS clusters and listeners); marks in the
/// source map where the additions came from; problems as diagnostics.
pub type Extend<'a> = &'a dyn Fn(&mut raw::Config, &mut load::SourceMap) -> Vec<Diagnostic>;

/// As [`load_file_with`], with `extend` adding resources to the file's config (they
/// compile with it, through the same checks), also returning the file's own config as
/// read (before `extend`): what the running snapshot came from, so that later additions (xDS
/// updates) compile against it with [`compile_source`] instead of re-reading a file
/// that may have been edited (and broken) since.
pub fn load_file_source(
    path: &str,
    stats: &Stats,
    services: &Services,
    check_files: bool,
    previous: Option<&HashMap<String, Arc<Cluster>>>,
    extend: Extend<'_>,
) -> Result<(Snapshot, Source), Vec<Diagnostic>> {
    let lookup = |k: &str| std::env::var(k).ok();
    let (mut parsed, h) = read_partial(path, None, &lookup)?;
    let Some((cfg, map, effective)) = parsed.partial.as_mut() else {
        return Err(parsed.diags);
    };
    let source = Source {
        cfg: cfg.clone(),
        map: map.clone(),
        effective: effective.clone(),
        hash: h,
    };
    let diags = extend(cfg, map);
    if !diags.is_empty() {
        return Err(diags);
    }
    finish(parsed, h, stats, services, check_files, previous).map(|(snap, _)| (snap, source))
}

/// Compile a config already read (the running one's [`Source`]) with `extend`'s
/// additions; nothing is read from the config file.
pub fn compile_source(
    src: &Source,
    stats: &Stats,
    services: &Services,
    check_files: bool,
    previous: Option<&HashMap<String, Arc<Cluster>>>,
    extend: Extend<'_>,
) -> Result<Snapshot, Vec<Diagnostic>> {
    let (mut cfg, mut map) = (src.cfg.clone(), src.map.clone());
    let diags = extend(&mut cfg, &mut map);
    if !diags.is_empty() {
        return Err(diags);
    }
    let opts = compile::Options {
        stats,
        services,
        check_files,
        previous,
    };
    compile::compile(&cfg, &map, src.effective.clone(), &opts)
}

/// As [`load_file`], for text already in memory (no includes); `lookup` resolves
/// `${VAR}`.
pub fn load_str(
    path: &str,
    text: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
    stats: &Stats,
    services: &Services,
    check_files: bool,
) -> Result<(Snapshot, u64), Vec<Diagnostic>> {
    let parsed = load::parse_partial(path, text, lookup);
    finish(parsed, hash(text), stats, services, check_files, None)
}

fn finish(
    parsed: load::Partial,
    h: u64,
    stats: &Stats,
    services: &Services,
    check_files: bool,
    previous: Option<&HashMap<String, Arc<Cluster>>>,
) -> Result<(Snapshot, u64), Vec<Diagnostic>> {
    let Some((cfg, map, effective)) = parsed.partial else {
        return Err(parsed.diags);
    };
    let opts = compile::Options {
        stats,
        services,
        check_files,
        previous,
    };
    match compile::compile(&cfg, &map, effective, &opts) {
        Ok(snap) if parsed.diags.is_empty() => Ok((snap, h)),
        Ok(_) => Err(parsed.diags),
        Err(semantic) => Err(merge_semantic(parsed.diags, semantic, &parsed.noisy)),
    }
}

/// Shape errors first, then semantic ones not caused by a removed node.
pub fn merge_semantic(
    shape: Vec<Diagnostic>,
    semantic: Vec<Diagnostic>,
    noisy: &[(String, usize, usize)],
) -> Vec<Diagnostic> {
    let mut all = shape;
    all.extend(semantic.into_iter().filter(|d| {
        !noisy
            .iter()
            .any(|(f, l, c)| *f == d.file && *l == d.line && *c == d.col)
    }));
    all.sort_by(|a, b| (&a.file, a.line, a.col).cmp(&(&b.file, b.line, b.col)));
    all.dedup();
    all
}

/// A config file read, assembled from its includes, expanded and deserialized, but
/// not yet compiled.
#[derive(Debug, Clone)]
pub struct Source {
    pub cfg: raw::Config,
    pub map: load::SourceMap,
    /// The document after includes and `${VAR}` expansion.
    pub effective: serde_yaml::Value,
    /// [`hash`] of every file's text, top-level first.
    pub hash: u64,
}

/// Read `path` with its includes (bounded by `root`, default the file's directory);
/// any shape error fails.
pub fn read(
    path: &str,
    root: Option<&std::path::Path>,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<Source, Vec<Diagnostic>> {
    let (p, h) = read_partial(path, root, lookup)?;
    match (p.diags.is_empty(), p.partial) {
        (true, Some((cfg, map, effective))) => Ok(Source {
            cfg,
            map,
            effective,
            hash: h,
        }),
        _ => Err(p.diags),
    }
}

/// Read `path` with its includes, keeping what deserializes despite shape errors
/// (see [`load::Partial`]). Err only when the files cannot be read or assembled.
pub fn read_partial(
    path: &str,
    root: Option<&std::path::Path>,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<(load::Partial, u64), Vec<Diagnostic>> {
    let doc = include::assemble(path, root)?;
    let all: String = doc.files.iter().map(|(_, t)| t.as_str()).collect();
    Ok((
        load::parse_value_partial(doc.value, doc.map, lookup),
        hash(&all),
    ))
}

/// The hash [`load_file`] records for `path`: the file and everything it includes
/// (falls back to the top-level file alone when the includes cannot be assembled,
/// so a broken include still triggers a reload that reports it).
pub fn source_hash(path: &str) -> Option<u64> {
    match include::assemble(path, None) {
        Ok(doc) => {
            let all: String = doc.files.iter().map(|(_, t)| t.as_str()).collect();
            Some(hash(&all))
        }
        Err(_) => std::fs::read_to_string(path).ok().map(|t| hash(&t) ^ 1),
    }
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
