//! The generic half of `attache diff`: every key of the effective document (after
//! includes and `${VAR}` expansion) is compared, so a key nobody taught the readable
//! half about (a breaker limit, a health-check path, a key added next month) still
//! shows up and still makes `diff` exit 1.
//!
//! List items are matched by their `name` when every item on both sides has one
//! (listeners, clusters, virtual hosts, named routes), else by position. A leaf that
//! differs, or a key present on one side only, is one change, unless the readable
//! half already said the same thing about the same subject.

use serde_yaml::Value;

use super::{Change, Kind};
use crate::config::load::SourceMap;

/// Keys whose values are never printed (as in `/config_dump`).
const SECRET_KEYS: &[&str] = &["token", "private_key"];

struct Walk<'a> {
    old: &'a SourceMap,
    new: &'a SourceMap,
    out: Vec<Change>,
}

/// Where a node is: the dotted index path the source map understands, and the
/// readable segments (names instead of indices where items have names).
#[derive(Clone, Default)]
struct At {
    index: String,
    old_index: String,
    names: Vec<String>,
}

impl At {
    fn child(&self, index: &str, old_index: &str, name: &str) -> At {
        let join = |base: &str, seg: &str| {
            if base.is_empty() {
                seg.to_string()
            } else {
                format!("{base}.{seg}")
            }
        };
        let mut names = self.names.clone();
        names.push(name.to_string());
        At {
            index: join(&self.index, index),
            old_index: join(&self.old_index, old_index),
            names,
        }
    }
}

/// Every difference between two effective documents that `covered` (the readable
/// half's changes) does not already describe.
pub fn diff(
    old: &Value,
    om: &SourceMap,
    new: &Value,
    nm: &SourceMap,
    covered: &[Change],
) -> Vec<Change> {
    let mut w = Walk {
        old: om,
        new: nm,
        out: Vec::new(),
    };
    w.node(Some(old), Some(new), &At::default());
    w.out.retain(|c| !already_said(c, covered));
    w.out
}

fn name_of(v: &Value) -> Option<&str> {
    v.as_mapping()?.get("name")?.as_str()
}

fn key_str(k: &Value) -> String {
    match k {
        Value::String(s) => s.clone(),
        other => short(other),
    }
}

/// A one-line rendering of a value for the change message.
fn short(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::String(s) => s.clone(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        other => {
            let text = serde_json::to_string(other).unwrap_or_else(|_| "(value)".into());
            match text.char_indices().nth(117) {
                Some((cut, _)) if text.len() > 120 => format!("{}...", &text[..cut]),
                _ => text,
            }
        }
    }
}

impl Walk<'_> {
    fn node(&mut self, o: Option<&Value>, n: Option<&Value>, at: &At) {
        match (o, n) {
            (Some(Value::Tagged(a)), _) => self.node(Some(&a.value), n, at),
            (_, Some(Value::Tagged(b))) => self.node(o, Some(&b.value), at),
            (Some(Value::Mapping(a)), Some(Value::Mapping(b))) => {
                for (k, va) in a {
                    let ks = key_str(k);
                    let c = at.child(&ks, &ks, &ks);
                    self.node(Some(va), b.get(k), &c);
                }
                for (k, vb) in b {
                    if !a.contains_key(k) {
                        let ks = key_str(k);
                        let c = at.child(&ks, &ks, &ks);
                        self.node(None, Some(vb), &c);
                    }
                }
            }
            (Some(Value::Sequence(a)), Some(Value::Sequence(b))) => self.sequence(a, b, at),
            (Some(a), Some(b)) if a == b => {}
            _ => self.leaf(o, n, at),
        }
    }

    fn sequence(&mut self, a: &[Value], b: &[Value], at: &At) {
        let named = |s: &[Value]| s.iter().all(|v| name_of(v).is_some());
        if named(a) && named(b) && !(a.is_empty() && b.is_empty()) {
            for (i, va) in a.iter().enumerate() {
                let name = name_of(va).unwrap_or_default();
                match b.iter().position(|vb| name_of(vb) == Some(name)) {
                    Some(j) => {
                        let c = at.child(&j.to_string(), &i.to_string(), name);
                        self.node(Some(va), Some(&b[j]), &c);
                    }
                    None => {
                        let c = at.child(&i.to_string(), &i.to_string(), name);
                        self.leaf(Some(va), None, &c);
                    }
                }
            }
            for (j, vb) in b.iter().enumerate() {
                let name = name_of(vb).unwrap_or_default();
                if !a.iter().any(|va| name_of(va) == Some(name)) {
                    let c = at.child(&j.to_string(), &j.to_string(), name);
                    self.leaf(None, Some(vb), &c);
                }
            }
            // Named items that moved: order matters for routes (first match wins).
            let order = |s: &[Value]| -> Vec<String> {
                s.iter()
                    .filter_map(name_of)
                    .filter(|n| {
                        a.iter().any(|v| name_of(v) == Some(n))
                            && b.iter().any(|v| name_of(v) == Some(n))
                    })
                    .map(str::to_string)
                    .collect()
            };
            if order(a) != order(b) {
                self.push(at, "reordered", order(a).join(", "), order(b).join(", "));
            }
        } else if a.len() == b.len() {
            for (i, (va, vb)) in a.iter().zip(b).enumerate() {
                let c = at.child(&i.to_string(), &i.to_string(), &format!("[{i}]"));
                self.node(Some(va), Some(vb), &c);
            }
        } else {
            self.push(
                at,
                "",
                short(&Value::Sequence(a.to_vec())),
                short(&Value::Sequence(b.to_vec())),
            );
        }
    }

    fn leaf(&mut self, o: Option<&Value>, n: Option<&Value>, at: &At) {
        let secret = at
            .names
            .last()
            .is_some_and(|k| SECRET_KEYS.contains(&k.as_str()));
        let show = |v: Option<&Value>| match v {
            None => "(default)".to_string(),
            Some(_) if secret => "[redacted]".to_string(),
            Some(v) => short(v),
        };
        self.push(at, "", show(o), show(n));
    }

    fn push(&mut self, at: &At, what: &str, old: String, new: String) {
        let (kind, subject, rest) = subject_of(&at.names);
        let mut key = rest.join(".");
        if !what.is_empty() {
            key = if key.is_empty() {
                what.to_string()
            } else {
                format!("{key} {what}")
            };
        }
        let (sign, message) = match (old.as_str(), new.as_str()) {
            ("(default)", _) if key.is_empty() => ('+', "added".to_string()),
            (_, "(default)") if key.is_empty() => ('-', "removed".to_string()),
            _ if key.is_empty() => ('~', format!("{old} -> {new}")),
            _ => ('~', format!("{key} {old} -> {new}")),
        };
        let removed = new == "(default)";
        let (map, path) = if removed {
            (self.old, &at.old_index)
        } else {
            (self.new, &at.index)
        };
        let at = map.diag_key(path, "");
        self.out.push(Change {
            kind,
            sign,
            subject,
            message,
            at,
        });
    }
}

/// The change's kind and subject from its readable path, and the key path left
/// inside that subject. Routes read `listener/virtual host/route` as in the
/// readable half.
fn subject_of(names: &[String]) -> (Kind, String, &[String]) {
    let at = |i: usize| names.get(i).map_or("", String::as_str);
    match at(0) {
        "listeners" if names.len() > 1 => {
            let listener = at(1);
            match at(2) {
                "virtual_hosts" if names.len() > 5 && at(4) == "routes" => (
                    Kind::Route,
                    format!("{listener}/{}/{}", at(3), at(5)),
                    &names[6..],
                ),
                "virtual_hosts" if names.len() > 3 => {
                    (Kind::Route, format!("{listener}/{}", at(3)), &names[4..])
                }
                "filters" => (Kind::Filter, listener.to_string(), &names[3..]),
                "tls" => (Kind::Tls, listener.to_string(), &names[2..]),
                _ => (Kind::Listener, listener.to_string(), &names[2..]),
            }
        }
        "clusters" if names.len() > 1 => {
            let kind = if at(2) == "tls" {
                Kind::Tls
            } else {
                Kind::Cluster
            };
            (kind, at(1).to_string(), &names[2..])
        }
        "admin" => (Kind::Admin, "admin".into(), &names[1..]),
        _ => (Kind::Config, "(top level)".into(), names),
    }
}

/// True when the readable half reported a change to the same subject whose message
/// names this key (as a whole word), or added or removed the subject itself.
fn already_said(c: &Change, covered: &[Change]) -> bool {
    // The last named segment of the key path (`route.weighted_clusters.[0].weight`
    // -> `weight`); the readable half may say it in the plural (`weights`).
    let key = c
        .message
        .split(' ')
        .next()
        .and_then(|k| k.rsplit('.').find(|s| !s.starts_with('[')))
        .unwrap_or("");
    covered.iter().any(|d| {
        d.subject == c.subject
            && (d.sign != '~' || c.sign != '~' || (!key.is_empty() && names_word(&d.message, key)))
    }) || covered
        .iter()
        .any(|d| d.sign != '~' && c.subject.starts_with(&format!("{}/", d.subject)))
}

fn names_word(text: &str, word: &str) -> bool {
    let is_word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    text.match_indices(word).any(|(i, _)| {
        let before = i.checked_sub(1).map(|j| text.as_bytes()[j]);
        let mut end = i + word.len();
        if text.as_bytes().get(end) == Some(&b's') {
            end += 1;
        }
        let after = text.as_bytes().get(end).copied();
        !before.is_some_and(is_word) && !after.is_some_and(is_word)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whole_words_only() {
        assert!(names_word("timeout 1s -> 2s", "timeout"));
        assert!(!names_word("per_try_timeout 1s -> 2s", "timeout"));
        assert!(names_word("weights a 90%->80%", "weight"));
        assert!(!names_word("timeoutss", "timeout"));
    }

    #[test]
    fn subjects_follow_the_readable_half() {
        let p = |s: &str| s.split('.').map(str::to_string).collect::<Vec<_>>();
        let names = p("listeners.web.virtual_hosts.main.routes.api.route.timeout");
        let (k, s, rest) = subject_of(&names);
        assert_eq!(
            (k, s.as_str(), rest.join(".")),
            (Kind::Route, "web/main/api", "route.timeout".into())
        );
        let names = p("clusters.api.circuit_breakers.max_connections");
        let (k, s, rest) = subject_of(&names);
        assert_eq!(
            (k, s.as_str(), rest.join(".")),
            (
                Kind::Cluster,
                "api",
                "circuit_breakers.max_connections".into()
            )
        );
        let names = p("drain_timeout");
        assert_eq!(subject_of(&names).0, Kind::Config);
    }
}
