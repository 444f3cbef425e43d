//! `attache diff` cannot miss a change: every key of every shipped config (and the
//! toolkit's reference config) is changed, one at a time, and removed, one at a
//! time; each variant that still reads as a config must make `diff` report at
//! least one change (exit 1).

mod support;

use support::toolkit;

use attache::config;
use attache::toolkit::diff::diff_sources;
use serde_yaml::Value;

fn lookup(_: &str) -> Option<String> {
    None
}

fn read(dir: &toolkit::Dir, name: &str, doc: &Value) -> Option<config::Source> {
    let text = serde_yaml::to_string(doc).expect("yaml");
    dir.write(name, &text);
    let path = dir.path().join(name);
    config::read(path.to_str().expect("utf-8 path"), None, &lookup).ok()
}

/// Other valid values for a scalar, most likely to still read first.
fn variants(v: &Value) -> Vec<Value> {
    match v {
        Value::Bool(b) => vec![Value::Bool(!b)],
        Value::Number(n) => match (n.as_u64(), n.as_f64()) {
            (Some(0), _) => vec![Value::from(1)],
            (Some(u), _) => vec![Value::from(u - 1), Value::from(u + 1)],
            (None, Some(f)) => vec![Value::from(f / 2.0)],
            _ => vec![],
        },
        Value::String(s) => {
            let mut out = Vec::new();
            // Durations: another number of the same unit.
            let digits = s.trim_end_matches(|c: char| c.is_ascii_alphabetic());
            if !digits.is_empty() && digits.len() < s.len() && digits.parse::<u64>().is_ok() {
                let n: u64 = digits.parse().unwrap_or(1);
                out.push(Value::from(format!("{}{}", n + 1, &s[digits.len()..])));
            }
            // Enumerations: a sibling value.
            for group in ENUMS {
                if let Some(i) = group.iter().position(|x| x == s) {
                    out.push(Value::from(group[(i + 1) % group.len()]));
                }
            }
            if let Some((host, port)) = s.rsplit_once(':') {
                if let Ok(p) = port.parse::<u16>() {
                    out.push(Value::from(format!("{host}:{}", p.wrapping_add(1).max(1))));
                }
            }
            out.push(Value::from(format!("{s}x")));
            out.push(Value::from(format!("/{s}")));
            out
        }
        _ => vec![],
    }
}

const ENUMS: &[&[&str]] = &[
    &["round_robin", "least_request", "random"],
    &["http1", "http2"],
    &["json", "text"],
    &["framed", "unframed", "auto"],
    &["binary", "compact", "auto"],
    &["reject", "keep"],
    &["audit", "enforce"],
    &["1.2", "1.3"],
    &["DENY", "SAMEORIGIN"],
    &["GET", "POST"],
];

/// Every path to a scalar, and every path to a mapping key (for removal).
fn paths(v: &Value, at: &mut Vec<PathSeg>, out: &mut Vec<Vec<PathSeg>>) {
    match v {
        Value::Mapping(m) => {
            for (k, val) in m {
                at.push(PathSeg::Key(k.clone()));
                out.push(at.clone());
                paths(val, at, out);
                at.pop();
            }
        }
        Value::Sequence(s) => {
            for (i, val) in s.iter().enumerate() {
                at.push(PathSeg::Index(i));
                out.push(at.clone());
                paths(val, at, out);
                at.pop();
            }
        }
        _ => {}
    }
}

#[derive(Clone, Debug)]
enum PathSeg {
    Key(Value),
    Index(usize),
}

fn get_mut<'a>(v: &'a mut Value, path: &[PathSeg]) -> Option<&'a mut Value> {
    path.iter().try_fold(v, |v, seg| match seg {
        PathSeg::Key(k) => v.as_mapping_mut()?.get_mut(k),
        PathSeg::Index(i) => v.as_sequence_mut()?.get_mut(*i),
    })
}

fn remove(v: &mut Value, path: &[PathSeg]) -> bool {
    let Some((last, parent)) = path.split_last() else {
        return false;
    };
    match (get_mut(v, parent), last) {
        (Some(Value::Mapping(m)), PathSeg::Key(k)) => m.remove(k).is_some(),
        (Some(Value::Sequence(s)), PathSeg::Index(i)) if *i < s.len() => {
            s.remove(*i);
            true
        }
        _ => false,
    }
}

struct Tally {
    changed: usize,
    unreadable: usize,
    missed: Vec<String>,
}

fn check(doc_name: &str, base_doc: &Value, tally: &mut Tally) {
    let dir = toolkit::Dir::new();
    let Some(base) = read(&dir, "old.yaml", base_doc) else {
        panic!("{doc_name} does not read as a config");
    };
    let mut all = Vec::new();
    paths(base_doc, &mut Vec::new(), &mut all);
    for path in &all {
        let mut edits: Vec<Value> = Vec::new();
        let mut removed = base_doc.clone();
        if remove(&mut removed, path) {
            edits.push(removed);
        }
        let mut probe = base_doc.clone();
        if let Some(leaf) = get_mut(&mut probe, path) {
            for v in variants(leaf) {
                let mut d = base_doc.clone();
                if let Some(slot) = get_mut(&mut d, path) {
                    *slot = v;
                }
                edits.push(d);
            }
        }
        let mut any_read = false;
        for (i, edit) in edits.iter().enumerate() {
            let Some(new) = read(&dir, "new.yaml", edit) else {
                continue;
            };
            any_read = true;
            if diff_sources(&base, &new).is_empty() {
                tally.missed.push(format!(
                    "{doc_name}: {path:?} (edit {i}) reported no change"
                ));
            } else {
                tally.changed += 1;
            }
        }
        if !any_read {
            tally.unreadable += 1;
        }
    }
}

#[test]
fn every_key_changed_or_removed_is_a_change() {
    let mut docs: Vec<(String, Value)> = vec![(
        "toolkit WEB".into(),
        serde_yaml::from_str(toolkit::WEB).expect("WEB parses"),
    )];
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
    let mut files: Vec<_> = std::fs::read_dir(&root)
        .expect("config/")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    for f in files {
        let Ok(src) = config::read(f.to_str().expect("utf-8"), None, &lookup) else {
            continue;
        };
        docs.push((f.display().to_string(), src.effective));
    }
    assert!(docs.len() >= 6, "too few configs read: {}", docs.len());
    let mut tally = Tally {
        changed: 0,
        unreadable: 0,
        missed: Vec::new(),
    };
    for (name, doc) in &docs {
        check(name, doc, &mut tally);
    }
    assert!(tally.missed.is_empty(), "{}", tally.missed.join("\n"));
    // Most edits still read as configs, so the check above has teeth.
    assert!(
        tally.changed > 10 * tally.unreadable.max(20),
        "changed {} unreadable {}",
        tally.changed,
        tally.unreadable
    );
}
