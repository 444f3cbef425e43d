//! Reading a config file: YAML with positions, `${VAR}` expansion, and typed
//! deserialization that reports every shape error (not just the first) as
//! FILE:LINE:COL with a did-you-mean for typos.

use std::collections::HashMap;
use std::fmt;

use serde_yaml::Value;
use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::Marker;

use super::raw;

/// One problem in a config file, located.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub file: String,
    pub line: usize,
    pub col: usize,
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.file, self.line, self.col, self.message
        )
    }
}

/// Positions of every node in the document, by dotted path (`listeners.0.name`).
/// `path` maps to the value's position; `path#key` to the position of its key.
/// With `include:` (see `include.rs`) a document is assembled from several files:
/// `origin` says which of `files` a node came from (absent = `file`).
#[derive(Debug, Default, Clone)]
pub struct SourceMap {
    file: String,
    pos: HashMap<String, (usize, usize)>,
    files: Vec<String>,
    origin: HashMap<String, usize>,
}

impl SourceMap {
    pub fn file(&self) -> &str {
        &self.file
    }

    /// An empty map for a document assembled from `file` and its includes.
    pub(crate) fn assembled(file: &str) -> SourceMap {
        SourceMap {
            file: file.to_string(),
            ..Default::default()
        }
    }

    /// Record that `path` (or `path#key`) is at `pos` of `file`.
    pub(crate) fn insert(&mut self, path: String, file: &str, pos: (usize, usize)) {
        if file != self.file {
            let idx = match self.files.iter().position(|f| f == file) {
                Some(i) => i,
                None => {
                    self.files.push(file.to_string());
                    self.files.len() - 1
                }
            };
            self.origin.insert(path.clone(), idx);
        }
        self.pos.insert(path, pos);
    }

    /// The recorded position of exactly `path` (no ancestor fallback).
    pub(crate) fn get(&self, path: &str) -> Option<(usize, usize)> {
        self.pos.get(path).copied()
    }

    /// The position of `path`, or of its nearest ancestor that has one.
    pub fn locate(&self, path: &str, key: bool) -> (usize, usize) {
        let (_, line, col) = self.locate_in(path, key);
        (line, col)
    }

    /// As [`SourceMap::locate`], with the file the position is in.
    pub fn locate_in(&self, path: &str, key: bool) -> (&str, usize, usize) {
        let found = |p: &str| {
            self.pos.get(p).map(|(l, c)| {
                let f = self
                    .origin
                    .get(p)
                    .and_then(|i| self.files.get(*i))
                    .unwrap_or(&self.file);
                (f.as_str(), *l, *c)
            })
        };
        if key {
            if let Some(x) = found(&format!("{path}#key")) {
                return x;
            }
        }
        let mut p = path;
        loop {
            if let Some(x) = found(p) {
                return x;
            }
            match p.rfind('.') {
                Some(i) => p = &p[..i],
                None => return found("").unwrap_or((self.file.as_str(), 1, 1)),
            }
        }
    }

    /// Diagnostics under `path` name `source` instead of a file position (line and
    /// column 0): config that came from elsewhere, e.g. an xDS resource.
    pub fn mark(&mut self, path: &str, source: &str) {
        self.origin.insert(path.to_string(), self.files.len());
        self.files.push(source.to_string());
        self.pos.insert(path.to_string(), (0, 0));
    }

    pub fn diag(&self, path: &str, message: impl Into<String>) -> Diagnostic {
        let (file, line, col) = self.locate_in(path, false);
        Diagnostic {
            file: file.to_string(),
            line,
            col,
            message: message.into(),
        }
    }

    pub fn diag_key(&self, path: &str, message: impl Into<String>) -> Diagnostic {
        let (file, line, col) = self.locate_in(path, true);
        Diagnostic {
            file: file.to_string(),
            line,
            col,
            message: message.into(),
        }
    }
}

enum Frame {
    Map {
        path: String,
        pending_key: Option<String>,
    },
    Seq {
        path: String,
        next: usize,
    },
}

struct Indexer {
    stack: Vec<Frame>,
    map: HashMap<String, (usize, usize)>,
}

fn join(parent: &str, seg: &str) -> String {
    if parent.is_empty() {
        seg.to_string()
    } else {
        format!("{parent}.{seg}")
    }
}

impl Indexer {
    /// The path the next value event belongs to (None = it is a mapping key).
    fn next_value_path(&mut self) -> Option<String> {
        match self.stack.last_mut() {
            None => Some(String::new()),
            Some(Frame::Seq { path, next }) => {
                let p = join(path, &next.to_string());
                *next += 1;
                Some(p)
            }
            Some(Frame::Map { path, pending_key }) => pending_key.take().map(|k| join(path, &k)),
        }
    }
}

impl MarkedEventReceiver for Indexer {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        // yaml-rust2 lines are 1-based and columns 0-based.
        let pos = (mark.line(), mark.col() + 1);
        match ev {
            Event::Scalar(s, ..) => match self.next_value_path() {
                Some(p) => {
                    self.map.entry(p).or_insert(pos);
                }
                None => {
                    if let Some(Frame::Map { path, pending_key }) = self.stack.last_mut() {
                        self.map
                            .entry(format!("{}#key", join(path, &s)))
                            .or_insert(pos);
                        *pending_key = Some(s);
                    }
                }
            },
            Event::Alias(_) => {
                if let Some(p) = self.next_value_path() {
                    self.map.entry(p).or_insert(pos);
                }
            }
            Event::MappingStart(..) => {
                let p = self.next_value_path().unwrap_or_default();
                self.map.entry(p.clone()).or_insert(pos);
                self.stack.push(Frame::Map {
                    path: p,
                    pending_key: None,
                });
            }
            Event::SequenceStart(..) => {
                let p = self.next_value_path().unwrap_or_default();
                self.map.entry(p.clone()).or_insert(pos);
                self.stack.push(Frame::Seq { path: p, next: 0 });
            }
            Event::MappingEnd | Event::SequenceEnd => {
                self.stack.pop();
            }
            _ => {}
        }
    }
}

/// Index positions; complex (non-scalar) keys are ignored.
pub fn index(file: &str, text: &str) -> SourceMap {
    let mut ix = Indexer {
        stack: Vec::new(),
        map: HashMap::new(),
    };
    let mut parser = Parser::new_from_str(text);
    // A syntax error is reported by serde_yaml with its own position.
    let _ = parser.load(&mut ix, false);
    SourceMap {
        file: file.to_string(),
        pos: ix.map,
        ..Default::default()
    }
}

/// Expand `${VAR}` and `${VAR:-default}` in every string scalar. `lookup` is the
/// environment (a parameter so tests never touch the process environment).
pub fn expand_env(
    value: &mut Value,
    path: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
    errors: &mut Vec<(String, String)>,
) {
    match value {
        Value::String(s) if s.contains("${") => match expand_str(s, lookup) {
            Ok(out) => *s = out,
            Err(msg) => errors.push((path.to_string(), msg)),
        },
        Value::Sequence(seq) => {
            for (i, v) in seq.iter_mut().enumerate() {
                expand_env(v, &join(path, &i.to_string()), lookup, errors);
            }
        }
        Value::Mapping(map) => {
            for (k, v) in map.iter_mut() {
                let key = match k {
                    Value::String(s) => s.clone(),
                    _ => continue,
                };
                expand_env(v, &join(path, &key), lookup, errors);
            }
        }
        Value::Tagged(t) => expand_env(&mut t.value, path, lookup, errors),
        _ => {}
    }
}

fn expand_str(s: &str, lookup: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find('}') else {
            return Err(format!("unterminated `${{` in `{s}`"));
        };
        let expr = &after[..end];
        let (name, default) = match expr.find(":-") {
            Some(i) => (&expr[..i], Some(&expr[i + 2..])),
            None => (expr, None),
        };
        let valid = !name.is_empty()
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            && !name.starts_with(|c: char| c.is_ascii_digit());
        if !valid {
            return Err(format!("`${{{expr}}}` is not a valid variable reference"));
        }
        match (lookup(name), default) {
            (Some(v), _) => out.push_str(&v),
            (None, Some(d)) => out.push_str(d),
            (None, None) => {
                return Err(format!(
                    "environment variable `{name}` is not set and has no default; set it or write `${{{name}:-default}}`"
                ))
            }
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Edit distance, for did-you-mean.
pub fn levenshtein(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

/// The closest candidate within a small edit distance, ignoring ASCII case (Envoy
/// spells enum values `ROUND_ROBIN`, attache `round_robin`).
pub fn did_you_mean<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    let word = word.to_ascii_lowercase();
    candidates
        .into_iter()
        .map(|c| (levenshtein(&word, &c.to_ascii_lowercase()), c))
        .filter(|(d, c)| *d <= 2.max(c.len() / 3))
        // Ties go to the alphabetically first name, so output is stable run to run
        // (candidates often come from a HashMap).
        .min_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.cmp(b.1)))
        .map(|(_, c)| c)
}

/// Backquoted names in a serde message (`expected one of `a`, `b``).
fn backquoted(msg: &str) -> Vec<&str> {
    msg.split('`').skip(1).step_by(2).collect()
}

enum Shape {
    UnknownKey(String),
    Other,
}

/// Turn a serde error into our wording. serde's messages for unknown fields and
/// variants have a fixed, documented format (`serde::de::Error::unknown_field`), which
/// is the only way to recover the expected names from a derived Deserialize.
fn reword(msg: &str) -> (Shape, String) {
    let msg = msg.split(" at line ").next().unwrap_or(msg);
    if let Some(rest) = msg.strip_prefix("unknown field ") {
        let names = backquoted(rest);
        let Some((bad, expected)) = names.split_first() else {
            return (Shape::Other, msg.to_string());
        };
        let hint = match did_you_mean(bad, expected.iter().copied()) {
            Some(s) => format!("; did you mean `{s}`?"),
            None if expected.is_empty() => String::from("; this mapping takes no keys"),
            None => format!(
                "; expected one of {}",
                expected
                    .iter()
                    .map(|e| format!("`{e}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        };
        return (
            Shape::UnknownKey((*bad).to_string()),
            format!("unknown key `{bad}`{hint}"),
        );
    }
    if let Some(rest) = msg.strip_prefix("unknown variant ") {
        let names = backquoted(rest);
        if let Some((bad, expected)) = names.split_first() {
            let hint = match did_you_mean(bad, expected.iter().copied()) {
                Some(s) => format!("; did you mean `{s}`?"),
                None => format!(
                    "; expected one of {}",
                    expected
                        .iter()
                        .map(|e| format!("`{e}`"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            };
            return (Shape::Other, format!("unknown value `{bad}`{hint}"));
        }
    }
    if let Some(rest) = msg.strip_prefix("missing field ") {
        return (Shape::Other, format!("missing required key {rest}"));
    }
    (Shape::Other, msg.to_string())
}

fn path_string(p: &serde_path_to_error::Path) -> String {
    let mut segs = Vec::new();
    for seg in p.iter() {
        match seg {
            serde_path_to_error::Segment::Seq { index } => segs.push(index.to_string()),
            serde_path_to_error::Segment::Map { key } => segs.push(key.clone()),
            serde_path_to_error::Segment::Enum { variant } => segs.push(variant.clone()),
            serde_path_to_error::Segment::Unknown => {}
        }
    }
    segs.join(".")
}

fn remove_at(value: &mut Value, path: &[&str]) -> bool {
    let Some((last, parents)) = path.split_last() else {
        return false;
    };
    let Some(cur) = value_at_mut(value, parents) else {
        return false;
    };
    match cur {
        Value::Mapping(m) => m.remove(*last).is_some(),
        Value::Sequence(s) => match last.parse::<usize>() {
            // Keep indices stable for later errors: replace with an empty mapping
            // only once; a second failure at the same place stops the loop.
            Ok(i) if i < s.len() => {
                if s[i] == Value::Mapping(Default::default()) {
                    false
                } else {
                    s[i] = Value::Mapping(Default::default());
                    true
                }
            }
            _ => false,
        },
        _ => false,
    }
}

/// Parse, expand and deserialize. On failure, every problem found.
pub fn parse(
    file: &str,
    text: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<(raw::Config, SourceMap, Value), Vec<Diagnostic>> {
    let p = parse_partial(file, text, lookup);
    match (p.diags.is_empty(), p.partial) {
        (true, Some(ok)) => Ok(ok),
        _ => Err(p.diags),
    }
}

/// The result of reading a file that may have shape errors: the errors, and the
/// config with the offending nodes removed (when what is left still deserializes), so
/// semantic checks can report their problems in the same run.
pub struct Partial {
    pub diags: Vec<Diagnostic>,
    pub partial: Option<(raw::Config, SourceMap, Value)>,
    /// Lines of removed or unexpanded nodes: semantic errors there are echoes.
    /// Positions (file, line, column) of removed or unexpanded nodes and of their
    /// parents: semantic errors exactly there are echoes of a shape error.
    pub noisy: Vec<(String, usize, usize)>,
}

pub fn parse_partial(file: &str, text: &str, lookup: &dyn Fn(&str) -> Option<String>) -> Partial {
    let map = index(file, text);
    match parse_yaml(file, text) {
        Ok(value) => parse_value_partial(value, map, lookup),
        Err(d) => Partial {
            diags: vec![d],
            partial: None,
            noisy: Vec::new(),
        },
    }
}

/// YAML text to a value; an empty document is an empty mapping.
pub fn parse_yaml(file: &str, text: &str) -> Result<Value, Diagnostic> {
    match serde_yaml::from_str(text) {
        Ok(Value::Null) => Ok(Value::Mapping(Default::default())),
        Ok(v) => Ok(v),
        Err(e) => {
            let (line, col) = e
                .location()
                .map(|l| (l.line(), l.column()))
                .unwrap_or((1, 1));
            let msg = e.to_string();
            let msg = msg.split(" at line ").next().unwrap_or(&msg).to_string();
            Err(Diagnostic {
                file: file.to_string(),
                line,
                col,
                message: format!("invalid YAML: {msg}"),
            })
        }
    }
}

/// Expand and deserialize a document already read (and assembled from includes).
pub fn parse_value(
    value: Value,
    map: SourceMap,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<(raw::Config, SourceMap, Value), Vec<Diagnostic>> {
    let p = parse_value_partial(value, map, lookup);
    match (p.diags.is_empty(), p.partial) {
        (true, Some(ok)) => Ok(ok),
        _ => Err(p.diags),
    }
}

/// As [`parse_partial`], for a document already read (and assembled from includes).
pub fn parse_value_partial(
    mut value: Value,
    map: SourceMap,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Partial {
    let mut diags = Vec::new();
    let mut env_errors = Vec::new();
    expand_env(&mut value, "", lookup, &mut env_errors);
    let mut noisy = Vec::new();
    let pos = |path: &str| {
        let d = map.diag(path, "");
        (d.file, d.line, d.col)
    };
    for (path, msg) in env_errors {
        noisy.push(pos(&path));
        diags.push(map.diag(&path, msg));
    }
    let (more, ok, removed) = deserialize_partial::<raw::Config>(value, &map);
    diags.extend(more);
    for r in &removed {
        noisy.push(pos(r));
        noisy.push(pos(r.rsplit_once('.').map_or("", |(p, _)| p)));
    }
    Partial {
        diags,
        partial: ok.map(|(mut cfg, value)| {
            anchor_relative_paths(&mut cfg, &map);
            (cfg, map, value)
        }),
        noisy,
    }
}

/// A relative `discovery.file.path` names a file beside the config file that
/// declares it (as `include:` does), not one in the working directory, so a config
/// means the same from wherever `attache` is started.
fn anchor_relative_paths(cfg: &mut raw::Config, map: &SourceMap) {
    for (i, c) in cfg.clusters.iter_mut().enumerate() {
        let Some(f) = c.discovery.as_mut().and_then(|d| d.file.as_mut()) else {
            continue;
        };
        let rel = std::path::Path::new(&f.path);
        if f.path.is_empty() || rel.is_absolute() {
            continue;
        }
        let (file, _, _) = map.locate_in(&format!("clusters.{i}.discovery.file.path"), false);
        if let Some(dir) = std::path::Path::new(file).parent() {
            f.path = dir.join(rel).to_string_lossy().into_owned();
        }
    }
}

/// Deserialize `value` as `T`, reporting every shape error (unknown keys with a
/// did-you-mean, wrong types, missing keys) located through `map`.
pub fn deserialize_all<T: serde::de::DeserializeOwned>(
    value: Value,
    map: &SourceMap,
) -> Result<T, Vec<Diagnostic>> {
    match deserialize_partial::<T>(value, map) {
        (d, Some((t, _)), _) if d.is_empty() => Ok(t),
        (d, _, _) => Err(d),
    }
}

/// Every shape error, and the value as deserialized once the offending nodes are
/// removed (with the value and the removed paths), if it then deserializes.
///
/// A node is removed after its error is reported, and deserializing starts again,
/// so each error is reported once. When a required key is missing (or was removed),
/// the list item that needs it is dropped as a whole, so the items after it are
/// still checked; the document is then incomplete and no value is returned
/// (semantic checks would see a listener or cluster missing).
#[allow(clippy::type_complexity)]
pub fn deserialize_partial<T: serde::de::DeserializeOwned>(
    mut value: Value,
    map: &SourceMap,
) -> (Vec<Diagnostic>, Option<(T, Value)>, Vec<String>) {
    let mut diags = Vec::new();
    // Paths in the document as written (list items dropped since do not shift them).
    let mut removed: Vec<String> = Vec::new();
    let mut dropped = Dropped::default();
    for _ in 0..200 {
        match serde_path_to_error::deserialize::<_, T>(value.clone()) {
            Ok(cfg) if dropped.is_empty() => return (diags, Some((cfg, value)), removed),
            Ok(_) => return (diags, None, removed),
            Err(e) => {
                let path = path_string(e.path());
                let (shape, msg) = reword(&e.inner().to_string());
                let is_missing = msg.starts_with("missing required key");
                let orig = dropped.original(&path);
                // A key we removed ourselves is "missing" now: already reported.
                let echo = is_missing
                    && removed
                        .iter()
                        .any(|r| r.rsplit_once('.').map_or("", |(p, _)| p) == orig || r == &orig);
                let segs: Vec<&str> = if path.is_empty() {
                    Vec::new()
                } else {
                    path.split('.').collect()
                };
                match shape {
                    Shape::UnknownKey(key) => {
                        let full = if segs.last() == Some(&key.as_str()) {
                            path.clone()
                        } else if path.is_empty() {
                            key.clone()
                        } else {
                            format!("{path}.{key}")
                        };
                        let orig_full = dropped.original(&full);
                        let msg = super::hints::unknown_key(&orig_full, &key, msg);
                        diags.push(map.diag_key(&orig_full, msg));
                        let fsegs: Vec<&str> = full.split('.').collect();
                        if !remove_at(&mut value, &fsegs) {
                            break;
                        }
                        removed.push(orig_full);
                    }
                    Shape::Other if echo => {
                        if !dropped.drop_item(&mut value, &path) {
                            break;
                        }
                    }
                    Shape::Other => {
                        let at = super::hints::value_at(&value, &path);
                        let msg = super::hints::wrong_type(&orig, at, msg);
                        diags.push(map.diag(&orig, msg));
                        let gone = if is_missing {
                            dropped.drop_item(&mut value, &path)
                        } else {
                            remove_at(&mut value, &segs)
                        };
                        if !gone {
                            break;
                        }
                        removed.push(orig);
                    }
                }
            }
        }
    }
    if diags.is_empty() {
        diags.push(map.diag("", "config could not be read"));
    }
    (diags, None, removed)
}

/// List items removed from the document while collecting shape errors, by the
/// list's path as written: so a later error's path names the item in the file.
#[derive(Default)]
struct Dropped(HashMap<String, Vec<usize>>);

impl Dropped {
    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// `path` in the value as it is now, as a path in the document as written.
    fn original(&self, path: &str) -> String {
        let mut out = String::new();
        for seg in path.split('.').filter(|s| !s.is_empty()) {
            let seg = match (seg.parse::<usize>(), self.0.get(&out)) {
                (Ok(mut i), Some(gone)) => {
                    // `gone` is ascending: each dropped item at or before this
                    // one moved it down by one.
                    for g in gone {
                        if *g <= i {
                            i += 1;
                        }
                    }
                    i.to_string()
                }
                _ => seg.to_string(),
            };
            out = join(&out, &seg);
        }
        out
    }

    /// Remove the list item that `path` (as it is now) is or is inside of; false
    /// when there is none.
    fn drop_item(&mut self, value: &mut Value, path: &str) -> bool {
        let segs: Vec<&str> = path.split('.').collect();
        let Some((k, index)) = segs
            .iter()
            .enumerate()
            .rev()
            .find_map(|(k, s)| Some((k, s.parse::<usize>().ok()?)))
        else {
            return false;
        };
        let Some(Value::Sequence(items)) = value_at_mut(value, &segs[..k]) else {
            return false;
        };
        if index >= items.len() {
            return false;
        }
        items.remove(index);
        let orig = self.original(&segs[..=k].join("."));
        let Some((orig_list, orig_index)) = orig.rsplit_once('.') else {
            return false;
        };
        let gone = self.0.entry(orig_list.to_string()).or_default();
        gone.extend(orig_index.parse::<usize>().ok());
        gone.sort_unstable();
        true
    }
}

fn value_at_mut<'a>(value: &'a mut Value, path: &[&str]) -> Option<&'a mut Value> {
    let mut cur = value;
    for seg in path {
        cur = match cur {
            Value::Mapping(m) => m.get_mut(*seg)?,
            Value::Sequence(s) => s.get_mut(seg.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    Some(cur)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn reports_every_unknown_key_with_position_and_hint() {
        let text = "admin:\n  adress: 127.0.0.1:1\nlisteners:\n  - name: a\n    address: 127.0.0.1:0\n    protocl: http\n";
        let errs = parse("f.yaml", text, &no_env).expect_err("must fail");
        assert_eq!(errs.len(), 2, "{errs:?}");
        assert_eq!((errs[0].line, errs[0].col), (2, 3));
        assert!(
            errs[0].message.contains("did you mean `address`"),
            "{}",
            errs[0].message
        );
        assert_eq!((errs[1].line, errs[1].col), (6, 5));
        assert!(
            errs[1].message.contains("did you mean `protocol`"),
            "{}",
            errs[1].message
        );
    }

    /// A bad required key drops its list item, and the items after it are still
    /// checked, located where they are written.
    #[test]
    fn errors_after_a_bad_required_key_are_still_reported() {
        let text = "listeners:\n  - name: a\n    address: 10000\n  - address: 127.0.0.1:1\n  - name: c\n    address: 127.0.0.1:2\n    protocl: http\nclusters:\n  - name: x\n    lb_policy: ROUND_ROBIN\n";
        let errs = parse("f.yaml", text, &no_env).expect_err("must fail");
        let at: Vec<(usize, usize)> = errs.iter().map(|e| (e.line, e.col)).collect();
        // listeners.0.address; listeners.1 has no name (its own error, not an echo);
        // listeners.2.protocl; clusters.0.lb_policy.
        assert_eq!(at, [(3, 14), (4, 12), (7, 5), (10, 16)], "{errs:?}");
        assert!(
            errs[1].message.contains("missing required key `name`"),
            "{errs:?}"
        );
        assert!(
            errs[2].message.contains("did you mean `protocol`"),
            "{errs:?}"
        );

        // Missing deeper inside an item (a DNS discovery without `name`): the
        // enclosing item goes, the next one is still checked.
        let text = "clusters:\n  - name: a\n    discovery: { dns: { refresh: 5s } }\n  - name: b\n    lb_polcy: random\n";
        let errs = parse("f.yaml", text, &no_env).expect_err("must fail");
        assert_eq!(errs.len(), 2, "{errs:?}");
        assert!(
            errs[1].message.contains("did you mean `lb_policy`"),
            "{errs:?}"
        );
        assert_eq!((errs[1].line, errs[1].col), (5, 5), "{errs:?}");
    }

    #[test]
    fn wrong_types_and_values_are_located() {
        let text = "listeners:\n  - name: a\n    address: 127.0.0.1:0\n    protocol: htp\n";
        let errs = parse("f.yaml", text, &no_env).expect_err("must fail");
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert_eq!((errs[0].line, errs[0].col), (4, 15));
        assert!(
            errs[0].message.contains("did you mean `http`"),
            "{}",
            errs[0].message
        );
    }

    #[test]
    fn syntax_errors_have_positions() {
        let errs = parse("f.yaml", "listeners: [\n  - a\n", &no_env).expect_err("must fail");
        assert_eq!(errs.len(), 1);
        assert!(errs[0].message.starts_with("invalid YAML"));
        assert!(errs[0].line >= 2);
    }

    #[test]
    fn expands_env_with_defaults_and_reports_undefined() {
        let env = |k: &str| (k == "PORT").then(|| "8080".to_string());
        let text = "admin:\n  address: 127.0.0.1:${PORT}\n  token: ${TOKEN:-dev}\n";
        let (cfg, _, _) = parse("f.yaml", text, &env).expect("parses");
        assert_eq!(cfg.admin.address.as_deref(), Some("127.0.0.1:8080"));
        assert_eq!(cfg.admin.token.as_deref(), Some("dev"));
        let errs = parse("f.yaml", "admin:\n  token: ${NOPE}\n", &env).expect_err("must fail");
        assert_eq!((errs[0].line, errs[0].col), (2, 10));
        assert!(errs[0].message.contains("`NOPE` is not set"));
    }

    #[test]
    fn did_you_mean_picks_close_names() {
        assert_eq!(
            did_you_mean("clustr", ["cluster", "timeout"]),
            Some("cluster")
        );
        assert_eq!(did_you_mean("zzzzzz", ["cluster", "timeout"]), None);
        assert_eq!(did_you_mean("api_v", ["api_v2", "api_v1"]), Some("api_v1"));
        // Envoy spells enum values in upper case.
        assert_eq!(
            did_you_mean("ROUND_ROBIN", ["least_request", "round_robin"]),
            Some("round_robin")
        );
    }
}
