//! The bounded fuzz run that `cargo test` does: every target over its seed corpus,
//! then over inputs mutated from it by a seeded PRNG until an iteration cap or a
//! time budget runs out. `ATTACHE_FUZZ_SECS` (default 10 per target) and
//! `ATTACHE_FUZZ_ITERS` (default 200000) lengthen it, `ATTACHE_FUZZ_SEED` changes
//! the inputs. A failing input is saved under `target/fuzz-failures/<target>/`.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::{mutate, Target, TARGETS};

fn env_or<T: std::str::FromStr>(key: &str, default: T) -> T {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn corpus_dir(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(name)
}

/// The seed inputs of a target, in file-name order.
fn seeds(name: &str) -> Vec<Vec<u8>> {
    let dir = corpus_dir(name);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
        .iter()
        .map(|p| std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display())))
        .collect()
}

/// Run `target` on `input`; on a panic, save the input and fail with where it is.
fn check(target: &Target, input: &[u8], origin: &str) {
    if catch_unwind(AssertUnwindSafe(|| (target.run)(input))).is_ok() {
        return;
    }
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("target/fuzz-failures")
        .join(target.name);
    let file = dir.join(format!("crash-{:016x}", crate::config::hash(&hex(input))));
    let saved = std::fs::create_dir_all(&dir)
        .and_then(|()| std::fs::write(&file, input))
        .map_or_else(
            |e| format!("not saved: {e}"),
            |()| file.display().to_string(),
        );
    panic!(
        "fuzz target {} failed on {origin} ({saved}): {:?}",
        target.name,
        String::from_utf8_lossy(input)
    );
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn fuzz(name: &str) {
    let Some(target) = TARGETS.iter().find(|t| t.name == name) else {
        panic!("no target {name}");
    };
    let mut pool = seeds(name);
    assert!(!pool.is_empty(), "{name}: empty seed corpus");
    for (i, s) in pool.iter().enumerate() {
        check(target, s, &format!("seed {i}"));
    }
    let budget = Duration::from_secs_f64(env_or("ATTACHE_FUZZ_SECS", 10.0));
    let iters: u64 = env_or("ATTACHE_FUZZ_ITERS", 200_000);
    let seed: u64 = env_or("ATTACHE_FUZZ_SEED", 0x0061_7474_6163_6865);
    let mut rng = fastrand::Rng::with_seed(seed ^ crate::config::hash(name));
    let start = Instant::now();
    let mut done = 0;
    while done < iters && start.elapsed() < budget {
        let mut input = pool[rng.usize(..pool.len())].clone();
        mutate(&mut rng, &mut input, &pool, target.dict);
        check(
            target,
            &input,
            &format!("mutation {done} of seed {seed:#x}"),
        );
        // Keep some mutants so that mutations stack.
        if done % 8 == 0 && pool.len() < 2048 {
            pool.push(input);
        }
        done += 1;
    }
    eprintln!(
        "{name}: {} seeds, {done} mutations in {:?}",
        seeds(name).len(),
        start.elapsed()
    );
}

#[test]
fn every_target_has_a_test_and_a_corpus() {
    let names: Vec<_> = TARGETS.iter().map(|t| t.name).collect();
    assert_eq!(
        names,
        [
            "http1_request",
            "http1_response",
            "http1_chunked",
            "http1_framing",
            "path_normalize",
            "thrift_decode",
            "cookie",
            "config_load"
        ]
    );
    for n in names {
        assert!(!seeds(n).is_empty(), "{n}");
        let bin = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fuzz/fuzz_targets")
            .join(format!("{n}.rs"));
        assert!(bin.is_file(), "{} missing", bin.display());
    }
}

#[test]
fn fuzz_http1_request() {
    fuzz("http1_request");
}

#[test]
fn fuzz_http1_response() {
    fuzz("http1_response");
}

#[test]
fn fuzz_http1_chunked() {
    fuzz("http1_chunked");
}

#[test]
fn fuzz_http1_framing() {
    fuzz("http1_framing");
}

#[test]
fn fuzz_path_normalize() {
    fuzz("path_normalize");
}

#[test]
fn fuzz_thrift_decode() {
    fuzz("thrift_decode");
}

#[test]
fn fuzz_cookie() {
    fuzz("cookie");
}

#[test]
fn fuzz_config_load() {
    fuzz("config_load");
}
