//! `include:` — assembling one config document from several YAML files.
//!
//! A mapping whose only key is `include` is replaced by the named file's content:
//!
//! ```yaml
//! clusters: { include: clusters.yaml }       # the whole value comes from the file
//! routes:
//!   - include: common/routes.yaml            # a list item: the file's list is spliced in
//!   - name: local
//!     match: { prefix: / }
//!     route: { cluster: app }
//! ```
//!
//! Paths are relative to the including file. Every included file must stay inside
//! the include root (by default the directory of the top-level file); cycles and
//! nesting deeper than [`MAX_DEPTH`] are errors. Positions of included nodes point
//! into the included file, so diagnostics name the right file and line.

use std::path::{Path, PathBuf};

use serde_yaml::Value;

use super::load::{self, Diagnostic, SourceMap};

/// Includes nested deeper than this are rejected (a cycle is caught earlier).
pub const MAX_DEPTH: usize = 16;

/// A document assembled from a top-level file and its includes.
pub struct Assembled {
    pub value: Value,
    pub map: SourceMap,
    /// Every file read, top-level first, with its text (for the config hash).
    pub files: Vec<(String, String)>,
}

struct File {
    /// As shown in diagnostics: the path as written, joined to the includer's dir.
    name: String,
    canonical: PathBuf,
    map: SourceMap,
}

struct Cx {
    root: PathBuf,
    stack: Vec<File>,
    out: SourceMap,
    files: Vec<(String, String)>,
    errors: Vec<Diagnostic>,
}

fn join(parent: &str, seg: &str) -> String {
    if parent.is_empty() {
        seg.to_string()
    } else {
        format!("{parent}.{seg}")
    }
}

fn diag(file: &str, pos: (usize, usize), message: String) -> Diagnostic {
    Diagnostic {
        file: file.to_string(),
        line: pos.0,
        col: pos.1,
        message,
    }
}

/// The include target if `v` is `{ include: PATH }`.
fn include_target(v: &Value) -> Option<&Value> {
    match v {
        Value::Mapping(m) if m.len() == 1 => m.get("include"),
        _ => None,
    }
}

/// Read `path` and everything it includes. `root` bounds includes (default: the
/// directory of `path`).
pub fn assemble(path: &str, root: Option<&Path>) -> Result<Assembled, Vec<Diagnostic>> {
    let read_err = |e: std::io::Error| {
        vec![Diagnostic {
            file: path.to_string(),
            line: 1,
            col: 1,
            message: format!("cannot read config: {e}"),
        }]
    };
    // Resolve symlinks first and read the resolved file: a Kubernetes ConfigMap
    // volume swaps its `..data` link atomically, and the file and its includes must
    // come from the same side of that swap.
    let canonical = std::fs::canonicalize(path).map_err(read_err)?;
    let text = std::fs::read_to_string(&canonical).map_err(read_err)?;
    let root = match root {
        Some(r) => std::fs::canonicalize(r).map_err(|e| {
            vec![Diagnostic {
                file: path.to_string(),
                line: 1,
                col: 1,
                message: format!("include root `{}`: {e}", r.display()),
            }]
        })?,
        None => canonical
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("/")),
    };
    let value = load::parse_yaml(path, &text).map_err(|d| vec![d])?;
    let mut cx = Cx {
        root,
        stack: vec![File {
            name: path.to_string(),
            canonical,
            map: load::index(path, &text),
        }],
        out: SourceMap::assembled(path),
        files: vec![(path.to_string(), text)],
        errors: Vec::new(),
    };
    let value = walk(&mut cx, value, "", "");
    if !cx.errors.is_empty() {
        return Err(cx.errors);
    }
    Ok(Assembled {
        value,
        map: cx.out,
        files: cx.files,
    })
}

/// Copy the position of `orig` (in the current file) to `fin` (in the document).
fn record(cx: &mut Cx, orig: &str, fin: &str) {
    let Some(f) = cx.stack.last() else { return };
    if let Some(pos) = f.map.get(orig) {
        let name = f.name.clone();
        cx.out.insert(fin.to_string(), &name, pos);
    }
}

fn walk(cx: &mut Cx, value: Value, orig: &str, fin: &str) -> Value {
    if let Some(target) = include_target(&value) {
        return match open(cx, target, orig) {
            Some(v) => {
                let v = walk(cx, v, "", fin);
                cx.stack.pop();
                v
            }
            None => Value::Null,
        };
    }
    record(cx, orig, fin);
    match value {
        Value::Mapping(m) => {
            let mut out = serde_yaml::Mapping::new();
            for (k, v) in m {
                if let Value::String(ks) = &k {
                    let (ko, kf) = (join(orig, ks), join(fin, ks));
                    record(cx, &format!("{ko}#key"), &format!("{kf}#key"));
                    let v = walk(cx, v, &ko, &kf);
                    out.insert(k, v);
                } else {
                    out.insert(k, v);
                }
            }
            Value::Mapping(out)
        }
        Value::Sequence(items) => {
            let mut out = Vec::with_capacity(items.len());
            for (i, item) in items.into_iter().enumerate() {
                let io = join(orig, &i.to_string());
                match include_target(&item) {
                    Some(target) => {
                        let Some(v) = open(cx, target, &io) else {
                            continue;
                        };
                        match v {
                            Value::Sequence(inner) => {
                                for (j, x) in inner.into_iter().enumerate() {
                                    let kf = join(fin, &out.len().to_string());
                                    out.push(walk(cx, x, &j.to_string(), &kf));
                                }
                            }
                            Value::Null => {}
                            _ => {
                                let (name, pos) = cx
                                    .stack
                                    .last()
                                    .map(|f| (f.name.clone(), f.map.locate("", false)))
                                    .unwrap_or_default();
                                cx.errors.push(diag(
                                    &name,
                                    pos,
                                    "a file included as a list item must contain a list".into(),
                                ));
                            }
                        }
                        cx.stack.pop();
                    }
                    None => {
                        let kf = join(fin, &out.len().to_string());
                        out.push(walk(cx, item, &io, &kf));
                    }
                }
            }
            Value::Sequence(out)
        }
        other => other,
    }
}

/// `a/b/../c` -> `a/c`, lexically, for display.
fn tidy(p: &Path) -> String {
    use std::path::Component;
    let mut out: Vec<Component<'_>> = Vec::new();
    for c in p.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir if matches!(out.last(), Some(Component::Normal(_))) => {
                out.pop();
            }
            c => out.push(c),
        }
    }
    let pb: PathBuf = out.iter().collect();
    pb.to_string_lossy().into_owned()
}

/// Resolve and read an include; on success the file is pushed on the stack (the
/// caller pops it) and its parsed value returned.
fn open(cx: &mut Cx, target: &Value, at: &str) -> Option<Value> {
    let (from_name, from_canonical, pos) = {
        let f = cx.stack.last()?;
        let p = join(at, "include");
        (f.name.clone(), f.canonical.clone(), f.map.locate(&p, false))
    };
    let err = |m: String| diag(&from_name, pos, m);
    macro_rules! fail {
        ($m:expr) => {{
            cx.errors.push(err($m));
            return None;
        }};
    }
    let Some(rel) = target.as_str().filter(|s| !s.is_empty()) else {
        fail!("`include` takes a file path".into())
    };
    if cx.stack.len() > MAX_DEPTH {
        fail!(format!("includes nested deeper than {MAX_DEPTH} files"))
    }
    let dir = from_canonical.parent().unwrap_or(Path::new("/"));
    let shown_dir = Path::new(&from_name).parent().unwrap_or(Path::new(""));
    let name = tidy(&shown_dir.join(rel));
    let canonical = match std::fs::canonicalize(dir.join(rel)) {
        Ok(c) => c,
        Err(e) => fail!(format!("cannot read include `{rel}`: {e}")),
    };
    if !canonical.starts_with(&cx.root) {
        fail!(format!(
            "include `{rel}` escapes the include root `{}`",
            cx.root.display()
        ))
    }
    if let Some(i) = cx.stack.iter().position(|f| f.canonical == canonical) {
        let mut chain: Vec<&str> = cx.stack[i..].iter().map(|f| f.name.as_str()).collect();
        chain.push(&name);
        let chain = chain.join(" -> ");
        fail!(format!("include cycle: {chain}"))
    }
    let text = match std::fs::read_to_string(&canonical) {
        Ok(t) => t,
        Err(e) => fail!(format!("cannot read include `{rel}`: {e}")),
    };
    let value = match load::parse_yaml(&name, &text) {
        Ok(Value::Mapping(m)) if m.is_empty() && text.trim().is_empty() => Value::Null,
        Ok(v) => v,
        Err(d) => {
            cx.errors.push(d);
            return None;
        }
    };
    cx.stack.push(File {
        map: load::index(&name, &text),
        name: name.clone(),
        canonical,
    });
    cx.files.push((name, text));
    Some(value)
}
