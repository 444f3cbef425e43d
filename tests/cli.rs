//! The command line itself: help for every flag, `--version` with the build's
//! commit and date, `validate FILE`, shell completions.

mod support;

use std::process::{Command, Output};

fn attache(args: &[&str]) -> Output {
    Command::new(support::bin())
        .args(args)
        .output()
        .expect("run attache")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

const COMMANDS: &[&str] = &[
    "run",
    "validate",
    "test-routes",
    "explain",
    "diff",
    "render",
    "completions",
];

/// In `--help`, an option or argument line is its spec, two or more spaces, then
/// its help; a line that is only the spec has none.
#[test]
fn every_flag_and_argument_has_help_text() {
    for cmd in COMMANDS {
        let out = attache(&[cmd, "--help"]);
        assert!(out.status.success(), "{cmd} --help");
        let text = stdout(&out);
        let mut section = "";
        for line in text.lines() {
            if !line.starts_with(' ') {
                section = line;
                continue;
            }
            if section != "Options:" && section != "Arguments:" {
                continue;
            }
            let spec_and_help: Vec<&str> = line.trim().splitn(2, "  ").collect();
            assert!(
                spec_and_help.len() == 2 && !spec_and_help[1].trim().is_empty(),
                "`attache {cmd}`: no help for `{}`:\n{text}",
                line.trim()
            );
        }
    }
}

#[test]
fn version_shows_commit_and_build_date() {
    let out = attache(&["--version"]);
    assert!(out.status.success());
    let v = stdout(&out);
    // attache 0.1.0 (commit 0123456789ab, built 2026-12-03)
    let rest = v
        .trim()
        .strip_prefix(&format!("attache {} (commit ", env!("CARGO_PKG_VERSION")))
        .unwrap_or_else(|| panic!("{v}"));
    let (commit, date) = rest
        .strip_suffix(')')
        .and_then(|r| r.split_once(", built "))
        .unwrap_or_else(|| panic!("{v}"));
    assert!(
        commit == "unknown" || commit.bytes().all(|b| b.is_ascii_hexdigit()),
        "{v}"
    );
    let d: Vec<&str> = date.split('-').collect();
    assert!(
        d.len() == 3 && d.iter().all(|p| p.bytes().all(|b| b.is_ascii_digit())),
        "{v}"
    );
}

#[test]
fn validate_takes_the_file_as_an_argument_or_with_config() {
    for args in [
        &["validate", "config/quickstart.yaml"][..],
        &["validate", "--config", "config/quickstart.yaml"][..],
    ] {
        let out = attache(args);
        assert!(out.status.success(), "{args:?}");
        assert!(
            stdout(&out).starts_with("config/quickstart.yaml: ok ("),
            "{}",
            stdout(&out)
        );
    }
    // Neither, or both, is a usage error (exit 2), not a silent default.
    assert_eq!(attache(&["validate"]).status.code(), Some(2));
    let both = [
        "validate",
        "-c",
        "config/quickstart.yaml",
        "config/sidecar.yaml",
    ];
    assert_eq!(attache(&both).status.code(), Some(2));
}

#[test]
fn completions_for_bash_zsh_and_fish() {
    for (shell, marker) in [
        ("bash", "complete -F _attache"),
        ("zsh", "#compdef attache"),
        ("fish", "complete -c attache"),
    ] {
        let out = attache(&["completions", shell]);
        assert!(out.status.success(), "{shell}");
        let script = stdout(&out);
        assert!(script.contains(marker), "{shell}: {script}");
        assert!(script.contains("validate"), "{shell}: subcommands listed");
    }
    assert_eq!(attache(&["completions", "tcsh"]).status.code(), Some(2));
}

/// `attache completions fish | head -3`, `attache validate --format json F | head -c 10`:
/// the reader goes away before the output is written; attache keeps its exit code
/// instead of panicking on the closed pipe.
#[test]
fn output_into_a_closed_pipe_does_not_panic() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bad = dir.path().join("bad.yaml");
    std::fs::write(&bad, "listeners:\n  - name: a\n    adress: 1\n").expect("write");
    let bad = bad.display().to_string();
    let runs: &[(&[&str], i32)] = &[
        (&["completions", "bash"], 0),
        (&["completions", "zsh"], 0),
        (&["completions", "fish"], 0),
        (&["validate", "--format", "json", &bad], 1),
        (&["validate", "config/quickstart.yaml"], 0),
        (
            &["diff", "config/quickstart.yaml", "config/sidecar.yaml"],
            1,
        ),
    ];
    for (args, code) in runs {
        let (reader, writer) = std::io::pipe().expect("pipe");
        drop(reader);
        let out = Command::new(support::bin())
            .args(*args)
            .stdout(writer)
            .output()
            .expect("run attache");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!err.contains("panicked"), "{args:?}: {err}");
        assert_eq!(out.status.code(), Some(*code), "{args:?}: {err}");
    }
}
