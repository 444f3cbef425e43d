//! Config: raw serde types -> validation with FILE:LINE:COL -> compiled snapshot.

pub mod compile;
pub mod duration;
pub mod load;
pub mod raw;
pub mod snapshot;

pub use load::Diagnostic;
pub use snapshot::Snapshot;

use attache_filters::Services;

use crate::stats::Stats;

/// Read, validate and compile a config file; every problem at once on failure.
pub fn load_file(
    path: &str,
    stats: &Stats,
    services: &Services,
    check_files: bool,
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
    load_str(path, &text, &lookup, stats, services, check_files)
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
    let parsed = load::parse_partial(path, text, lookup);
    let Some((cfg, map, effective)) = parsed.partial else {
        return Err(parsed.diags);
    };
    let opts = compile::Options {
        stats,
        services,
        check_files,
    };
    match compile::compile(&cfg, &map, effective, &opts) {
        Ok(snap) if parsed.diags.is_empty() => Ok((snap, hash(text))),
        Ok(_) => Err(parsed.diags),
        Err(semantic) => {
            // Shape errors first, then semantic ones not caused by a removed node.
            let mut all = parsed.diags;
            all.extend(
                semantic
                    .into_iter()
                    .filter(|d| !parsed.noisy_lines.contains(&d.line)),
            );
            all.sort_by_key(|d| (d.line, d.col));
            all.dedup();
            Err(all)
        }
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
