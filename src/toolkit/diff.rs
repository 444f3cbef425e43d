//! `attache diff OLD NEW` output: the changes `config::diff` finds, as text for
//! reviewers or JSON for CI annotations.

use std::fmt::Write as _;

pub use crate::config::diff::{diff_sources, Change, Kind};
use crate::config::words::plural;

/// Text for reviewers: one change a line, grouped by kind.
pub fn to_text(changes: &[Change]) -> String {
    if changes.is_empty() {
        return "no behaviour changes\n".into();
    }
    let mut s = String::new();
    for c in changes {
        let _ = writeln!(
            s,
            "{} {} {}: {}",
            c.sign,
            c.kind.as_str(),
            c.subject,
            c.message
        );
    }
    let _ = writeln!(s, "{}", plural(changes.len(), "change"));
    s
}

pub fn to_json(changes: &[Change]) -> serde_json::Value {
    serde_json::json!({
        "equal": changes.is_empty(),
        "changes": changes.iter().map(|c| serde_json::json!({
            "kind": c.kind.as_str(),
            "change": match c.sign { '+' => "added", '-' => "removed", _ => "changed" },
            "subject": c.subject,
            "message": c.message,
            "file": c.at.file, "line": c.at.line, "column": c.at.col,
            "severity": "info", "code": format!("diff-{}", c.kind.as_str()),
        })).collect::<Vec<_>>(),
    })
}
