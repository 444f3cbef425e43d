//! The config safety toolkit: semantic lints, route tests, explain, diff and
//! template rendering — the offline tools CI runs before a config ships, and the
//! `/explain` admin endpoint. Docs: docs/validation.md.

pub mod cli;
pub mod diff;
mod diff_generic;
pub mod explain;
pub mod lint;
pub mod render;
pub mod routetest;

use std::fmt;

use crate::config::Diagnostic;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    Error,
    Warning,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Error => "error",
            Severity::Warning => "warning",
        }
    }
}

/// A located problem: a core validation error (no code) or a lint (with a code).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub file: String,
    pub line: usize,
    pub col: usize,
    pub severity: Severity,
    pub code: Option<&'static str>,
    pub message: String,
}

impl Finding {
    pub fn error(d: Diagnostic) -> Finding {
        Finding::new(d, Severity::Error, None)
    }

    pub fn new(d: Diagnostic, severity: Severity, code: Option<&'static str>) -> Finding {
        Finding {
            file: d.file,
            line: d.line,
            col: d.col,
            severity,
            code,
            message: d.message,
        }
    }

    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "file": self.file,
            "line": self.line,
            "column": self.col,
            "severity": self.severity.as_str(),
            "code": self.code,
            "message": self.message,
        })
    }
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}: ", self.file, self.line, self.col)?;
        // Core errors keep the plain `FILE:LINE:COL: message` form `run` prints too.
        match (self.severity, self.code) {
            (Severity::Error, None) => {}
            (s, None) => write!(f, "{}: ", s.as_str())?,
            (s, Some(c)) => write!(f, "{}[{c}]: ", s.as_str())?,
        }
        f.write_str(&self.message)
    }
}

/// `n thing` / `n things`.
pub(crate) fn plural(n: usize, word: &str) -> String {
    if n == 1 {
        format!("{n} {word}")
    } else {
        format!("{n} {word}s")
    }
}
