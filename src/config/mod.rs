//! Config: raw serde types -> validation with FILE:LINE:COL -> compiled snapshot.

pub mod compile;
pub mod duration;
pub mod include;
pub mod load;
pub mod raw;
pub mod snapshot;

pub use load::Diagnostic;
pub use snapshot::Snapshot;

use attache_filters::Services;

use crate::stats::Stats;

/// Read, validate and compile a config file (and its includes); every problem at
/// once on failure.
pub fn load_file(
    path: &str,
    stats: &Stats,
    services: &Services,
    check_files: bool,
) -> Result<(Snapshot, u64), Vec<Diagnostic>> {
    let lookup = |k: &str| std::env::var(k).ok();
    let src = read(path, None, &lookup)?;
    let opts = compile::Options {
        stats,
        services,
        check_files,
    };
    let snap = compile::compile(&src.cfg, &src.map, src.effective, &opts)?;
    Ok((snap, src.hash))
}

/// A config file read, assembled from its includes, expanded and deserialized, but
/// not yet compiled.
pub struct Source {
    pub cfg: raw::Config,
    pub map: load::SourceMap,
    /// The document after includes and `${VAR}` expansion.
    pub effective: serde_yaml::Value,
    /// [`hash`] of every file's text, top-level first.
    pub hash: u64,
}

/// Read `path` with its includes (bounded by `root`, default the file's directory).
pub fn read(
    path: &str,
    root: Option<&std::path::Path>,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<Source, Vec<Diagnostic>> {
    let doc = include::assemble(path, root)?;
    let all: String = doc.files.iter().map(|(_, t)| t.as_str()).collect();
    let (cfg, map, effective) = load::parse_value(doc.value, doc.map, lookup)?;
    Ok(Source {
        cfg,
        map,
        effective,
        hash: hash(&all),
    })
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
