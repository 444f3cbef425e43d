//! The docs run as written: every ```` ```sh ```` block in README.md, docs/ and
//! deploy/ is run with `bash -e -o pipefail` against a copy of the shipped files
//! (`config/`, `examples/`), with `attache` (and `cargo run [--release] --`) being
//! the binary under test. Blocks that need the quickstart running get one, started
//! on ephemeral ports that replace the documented 10000 and 9901 in the block.
//!
//! Not run, each with its reason in `SKIP`. Unlabelled blocks (```` ``` ````) are
//! output or transcripts (`$ cmd` followed by what it prints), not scripts; label a
//! block `sh` only if it runs as written. Transcripts of `cat FILE` and `attache`
//! commands are replayed and must print exactly what the page shows. The
//! `attache validate` lines in the header comments of `config/*.yaml` are run too.

mod support;

use std::path::Path;
use std::time::Duration;

use support::{bin, Proxy};

/// (file, a line the block contains, why it is not run).
const SKIP: &[(&str, &str, &str)] = &[
    (
        "docs/architecture.md",
        "cargo test --lib http::proxy::tests::handle_future_stays_small",
        "runs cargo (tests and a clippy pass) inside cargo test; the size tests run in \
         this suite and clippy runs in CI",
    ),
    (
        "docs/performance.md",
        "TESTS=idle IDLE_CONNECTIONS=10000 benches/load/run.sh",
        "the load harness: installs NGINX and HAProxy, builds with fat LTO and runs for \
         minutes; the lead runs it on a quiet machine (benches/README.md)",
    ),
    (
        "README.md",
        "cargo test --workspace --locked",
        "runs the proxy in the foreground and then the whole test suite; \
         quickstart_serves_direct_and_proxied_routes and this file cover it",
    ),
    (
        "docs/tls.md",
        "ATTACHE_CERT_DIR=$PWD/certs attache run --config config/mtls-sidecar.yaml",
        "serves in the foreground on the walkthrough's fixed ports (15443, 15001, 9901); \
         tests use port 0, and tests/tls_e2e.rs drives mTLS inbound with the same checks",
    ),
    (
        "docs/tls.md",
        "--resolve svc.internal:15443:127.0.0.1",
        "calls the sidecar of the previous (skipped) step on its fixed port",
    ),
    (
        "docs/fuzzing.md",
        "cargo test --lib fuzz                                        # what CI runs",
        "runs cargo inside cargo test; the same bounded fuzz tests run in this suite \
         (src/fuzz/tests.rs)",
    ),
    (
        "docs/fuzzing.md",
        "fuzz/run.sh http1_request 60",
        "coverage-guided runs of minutes to hours after an instrumented build of fuzz/ \
         (several minutes); src/fuzz/tests.rs runs every target bounded instead",
    ),
    (
        "docs/fuzzing.md",
        "fuzz/run.sh http1_request 0 fuzz/artifacts/http1_request/crash-*",
        "replays a crash file that exists only after a failing libFuzzer run",
    ),
    (
        "docs/fuzzing.md",
        "cp fuzz/artifacts/http1_request/minimized-from-*",
        "copies a minimized crash that exists only after a failing libFuzzer run",
    ),
    (
        "docs/fuzzing.md",
        "mkdir -p /tmp/cookie-merged",
        "merges the output of a long libFuzzer run (fuzz/out), which a test run has none of",
    ),
    (
        "deploy/kubernetes/README.md",
        "pip install kubernetes-validate",
        "installs from PyPI (.ci/run installs kubernetes-validate before the tests); \
         tests/deploy_check.rs runs deploy/check.py on the shipped files",
    ),
];

/// Blocks that continue an earlier one of the same file: (file, a line of the block,
/// a line of the block to run first, in a subshell, in the same workspace).
const AFTER: &[(&str, &str, &str)] = &[(
    "docs/tls.md",
    "attache validate --config config/mtls-sidecar.yaml",
    "mkdir -p certs && cd certs",
)];

/// Text that marks a block as needing the quickstart running: its listener, or
/// the admin endpoint.
const NEEDS_QUICKSTART: &[&str] = &["localhost:10000", "localhost:9901", "127.0.0.1:9901"];

struct Block {
    file: String,
    line: usize,
    text: String,
}

/// Every ```sh block of `file` (fences may be indented, e.g. inside a list).
fn sh_blocks(file: &str) -> Vec<Block> {
    let text = std::fs::read_to_string(file).unwrap_or_else(|e| panic!("{file}: {e}"));
    let mut out = Vec::new();
    let mut open: Option<(usize, usize, String)> = None;
    for (i, line) in text.lines().enumerate() {
        let trimmed = line.trim_start();
        let indent = line.len() - trimmed.len();
        match open.take() {
            None if trimmed == "```sh" => open = Some((i + 1, indent, String::new())),
            None => {}
            Some((start, _, body)) if trimmed == "```" => out.push(Block {
                file: file.to_string(),
                line: start,
                text: body,
            }),
            Some((start, ind, mut body)) => {
                body.push_str(line.get(ind..).unwrap_or(trimmed));
                body.push('\n');
                open = Some((start, ind, body));
            }
        }
    }
    out
}

fn doc_files() -> Vec<String> {
    let mut files = vec![
        "README.md".to_string(),
        "deploy/kubernetes/README.md".to_string(),
    ];
    let mut docs: Vec<String> = std::fs::read_dir("docs")
        .expect("docs dir")
        .filter_map(Result::ok)
        .map(|e| e.path().display().to_string())
        .filter(|p| p.ends_with(".md"))
        .collect();
    docs.sort();
    files.extend(docs);
    files
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for e in std::fs::read_dir(from)
        .expect("read dir")
        .filter_map(Result::ok)
    {
        let (src, dst) = (e.path(), to.join(e.file_name()));
        if e.file_type().expect("file type").is_dir() {
            if e.file_name() != "out" {
                copy_dir(&src, &dst);
            }
        } else {
            std::fs::copy(&src, &dst).expect("copy");
        }
    }
}

/// A fresh copy of the shipped files, and a PATH directory whose `attache` is the
/// binary under test.
struct Workspace {
    dir: tempfile::TempDir,
    path_env: String,
}

fn workspace() -> Workspace {
    let dir = tempfile::tempdir().expect("tempdir");
    for d in ["config", "examples"] {
        copy_dir(Path::new(d), &dir.path().join(d));
    }
    let shim = dir.path().join(".bin");
    std::fs::create_dir(&shim).expect("mkdir");
    std::os::unix::fs::symlink(bin(), shim.join("attache")).expect("symlink");
    let path_env = format!(
        "{}:{}",
        shim.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    Workspace { dir, path_env }
}

/// The quickstart on ephemeral ports: (proxy, listener `host:port`, admin `host:port`).
async fn quickstart() -> (Proxy, String, String) {
    let p = support::quickstart().await;
    let listener = p.addr("quickstart").to_string();
    let admin = p.admin.to_string();
    (p, listener, admin)
}

/// Run one script in a fresh workspace; Err(report) when it fails.
async fn run(name: &str, script: &str) -> Result<(), String> {
    let ws = workspace();
    let child = tokio::process::Command::new("bash")
        .args(["-e", "-o", "pipefail", "-c", script])
        .current_dir(ws.dir.path())
        .env("PATH", &ws.path_env)
        .env("HOME", ws.dir.path())
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(120), child)
        .await
        .map_err(|_| format!("{name}: did not finish within 120s"))?
        .map_err(|e| format!("{name}: cannot run bash: {e}"))?;
    if out.status.success() {
        return Ok(());
    }
    Err(format!(
        "{name}: exited with {}\n--- script\n{script}--- stdout\n{}--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    ))
}

/// `b`'s script, preceded by the block it continues (see `AFTER`).
fn with_prelude(b: &Block, all: &[Block]) -> String {
    let contains = |blk: &Block, line: &str| blk.text.lines().any(|l| l.contains(line));
    let prelude = AFTER
        .iter()
        .find(|(f, line, _)| *f == b.file && contains(b, line))
        .map(|(f, _, first)| {
            all.iter()
                .find(|p| p.file == *f && contains(p, first))
                .unwrap_or_else(|| panic!("{f}: no block contains `{first}`"))
        });
    match prelude {
        Some(p) => format!("(\n{})\n{}", p.text, b.text),
        None => b.text.clone(),
    }
}

fn skip_reason(b: &Block) -> Option<&'static str> {
    SKIP.iter()
        .find(|(f, line, _)| *f == b.file && b.text.lines().any(|l| l.contains(line)))
        .map(|(_, _, why)| *why)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_sh_block_in_the_docs_runs_as_written() {
    let blocks: Vec<Block> = doc_files().iter().flat_map(|f| sh_blocks(f)).collect();
    let mut failures = Vec::new();
    let (mut ran, mut skipped) = (0, 0);
    for b in &blocks {
        let name = format!("{}:{}", b.file, b.line);
        if let Some(why) = skip_reason(b) {
            eprintln!("skip {name}: {why}");
            skipped += 1;
            continue;
        }
        let script = with_prelude(b, &blocks)
            .replace("cargo run --release --", "attache")
            .replace("cargo run --", "attache");
        let result = if NEEDS_QUICKSTART.iter().any(|n| b.text.contains(n)) {
            let (_proxy, listener, admin) = quickstart().await;
            let script = script
                .replace("localhost:10000", &listener)
                .replace("localhost:9901", &admin)
                .replace("127.0.0.1:9901", &admin);
            run(&name, &script).await
        } else {
            run(&name, &script).await
        };
        eprintln!(
            "ran {name}: {}",
            if result.is_ok() { "ok" } else { "FAILED" }
        );
        ran += 1;
        if let Err(e) = result {
            failures.push(e);
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
    // Every skip still names a block, and the docs still have blocks to run.
    assert_eq!(
        skipped,
        SKIP.len(),
        "a SKIP entry no longer matches any block"
    );
    assert!(ran >= 6, "only {ran} sh blocks ran");
}

/// The `#   attache validate ...` lines at the top of each shipped config run as
/// written, from the repository root (the configs say how to check themselves).
#[tokio::test]
async fn config_header_commands_run_as_written() {
    let mut failures = Vec::new();
    let mut n = 0;
    for path in support::shipped_configs() {
        let text = std::fs::read_to_string(&path).expect("read");
        let header = text.lines().take_while(|l| l.starts_with('#'));
        for cmd in header.filter_map(|l| l.strip_prefix("#   attache validate ")) {
            let cmd = format!("attache validate {}", cmd.split(" #").next().unwrap_or(cmd));
            let name = format!("{}: {cmd}", path.display());
            n += 1;
            if let Err(e) = run(&name, &cmd).await {
                failures.push(e);
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
    assert!(
        n >= 3,
        "expected validate commands in the config headers, found {n}"
    );
}

/// One `$ command` of a transcript and the output shown under it.
struct Step {
    cmd: String,
    output: String,
}

/// Unlabelled blocks that open with `$ `: transcripts of commands and their output.
fn transcripts(file: &str) -> Vec<(usize, Vec<Step>)> {
    let text = std::fs::read_to_string(file).unwrap_or_else(|e| panic!("{file}: {e}"));
    let mut out = Vec::new();
    let mut lines = text.lines().enumerate();
    while let Some((i, line)) = lines.next() {
        let Some(label) = line.trim_start().strip_prefix("```") else {
            continue;
        };
        let body: Vec<&str> = lines
            .by_ref()
            .map(|(_, l)| l)
            .take_while(|l| l.trim_start() != "```")
            .collect();
        if !label.is_empty() || !body.first().is_some_and(|l| l.starts_with("$ ")) {
            continue;
        }
        let mut steps: Vec<Step> = Vec::new();
        for l in body {
            match (l.strip_prefix("$ "), steps.last_mut()) {
                (Some(cmd), _) => steps.push(Step {
                    cmd: cmd.to_string(),
                    output: String::new(),
                }),
                (None, Some(s)) => {
                    s.output.push_str(l);
                    s.output.push('\n');
                }
                (None, None) => {}
            }
        }
        out.push((i + 1, steps));
    }
    out
}

/// Transcripts made only of `cat FILE` (which writes FILE) and `attache ...` are
/// replayed, and each `attache` command must print exactly what the page shows.
/// The others (curl against a proxy running a section's config, `attache run`)
/// show outputs with times, hashes and ports; they are listed, not replayed.
#[test]
fn attache_transcripts_print_what_the_docs_show() {
    let mut failures = Vec::new();
    let mut replayed = 0;
    for file in doc_files() {
        for (line, steps) in transcripts(&file) {
            let offline = steps.iter().all(|s| {
                s.cmd.starts_with("cat ")
                    || (s.cmd.starts_with("attache ") && !s.cmd.starts_with("attache run"))
            });
            if !offline {
                eprintln!("not replayed {file}:{line}: needs a running proxy");
                continue;
            }
            let ws = workspace();
            let cwd = ws.dir.path();
            let mut names_missing_file = false;
            let mut mismatches = Vec::new();
            for s in &steps {
                let args: Vec<&str> = s.cmd.split_whitespace().collect();
                if args[0] == "cat" {
                    std::fs::write(cwd.join(args[1]), &s.output).expect("write");
                    continue;
                }
                if let Some(i) = args.iter().position(|a| *a == "--config") {
                    if !cwd.join(args.get(i + 1).unwrap_or(&"")).exists() {
                        names_missing_file = true;
                        break;
                    }
                }
                let out = std::process::Command::new(bin())
                    .args(&args[1..])
                    .current_dir(cwd)
                    .output()
                    .expect("run attache");
                let printed = format!(
                    "{}{}",
                    String::from_utf8_lossy(&out.stderr),
                    String::from_utf8_lossy(&out.stdout)
                );
                if printed != s.output {
                    mismatches.push(format!(
                        "{file}:{line}: `{}` prints\n{printed}the page shows\n{}",
                        s.cmd, s.output
                    ));
                }
            }
            if names_missing_file {
                eprintln!("not replayed {file}:{line}: its config is shown elsewhere on the page");
                continue;
            }
            replayed += 1;
            failures.extend(mismatches);
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(replayed >= 4, "only {replayed} transcripts replayed");
}
