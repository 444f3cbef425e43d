//! One problem with a config value, whoever found it: the core compiler, a `tls:`
//! block, Thrift routes, an endpoint list, a filter. A checker knows only the
//! block it was handed, so it says where by a dotted path relative to that block
//! (`cert_chain`, `routes.0.match.method`); `compile` places the problem in the
//! source (FILE:LINE:COL) by prefixing the block's own path. The fix hint is kept
//! apart from the message so every checker offers one the same way.

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Dotted path relative to the checked block; empty for the block itself.
    pub path: String,
    /// What is wrong.
    pub message: String,
    /// How to fix it, when the checker can say.
    pub hint: Option<String>,
}

/// Every problem one checker found.
pub type Problems = Vec<Problem>;

impl Problem {
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Problem {
        Problem {
            path: path.into(),
            message: message.into(),
            hint: None,
        }
    }

    pub fn hint(mut self, hint: impl Into<String>) -> Problem {
        self.hint = Some(hint.into());
        self
    }

    /// The path under `base`, the block's own path.
    pub fn path_under(&self, base: &str) -> String {
        match (base.is_empty(), self.path.is_empty()) {
            (_, true) => base.to_string(),
            (true, false) => self.path.clone(),
            (false, false) => format!("{base}.{}", self.path),
        }
    }
}

/// A filter's problem (the filter API has its own type, as the filters crate
/// cannot depend on this one): its path segments joined with dots.
impl From<attache_filters::ConfigError> for Problem {
    fn from(e: attache_filters::ConfigError) -> Problem {
        let mut path = String::new();
        for s in &e.path {
            if !path.is_empty() {
                path.push('.');
            }
            match s {
                attache_filters::PathSeg::Key(k) => path.push_str(k),
                attache_filters::PathSeg::Index(i) => path.push_str(&i.to_string()),
            }
        }
        Problem::new(path, e.message)
    }
}

/// The message, then the hint: `message; hint`.
impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.hint {
            Some(h) => write!(f, "{}; {h}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Problem;

    #[test]
    fn a_problem_is_placed_under_its_block_and_shows_its_hint() {
        let p = Problem::new("cert_chain", "cannot read `a.pem`").hint("check the path");
        assert_eq!(
            p.path_under("listeners.0.tls"),
            "listeners.0.tls.cert_chain"
        );
        assert_eq!(p.to_string(), "cannot read `a.pem`; check the path");
        let whole = Problem::new("", "needs a route");
        assert_eq!(whole.path_under("listeners.0.thrift"), "listeners.0.thrift");
        assert_eq!(whole.path_under(""), "");
        assert_eq!(whole.to_string(), "needs a route");
    }
}
