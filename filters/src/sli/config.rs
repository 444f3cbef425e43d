//! Typed config for the `sli` filter.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::duration::ConfigDuration;

/// A status or status class that counts as an error: `5xx`, `429`, or `429` as a
/// number.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(untagged)]
pub enum StatusPattern {
    Code(u16),
    Text(String),
}

fn default_statuses() -> Vec<StatusPattern> {
    vec![StatusPattern::Text("5xx".into())]
}

fn yes() -> bool {
    true
}

/// Which outcomes are errors.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Errors {
    /// Statuses that are errors. Default: `[5xx]`; add `429` to count throttling.
    #[serde(default = "default_statuses")]
    pub statuses: Vec<StatusPattern>,
    /// Whether the proxy's own failure replies (no route, no healthy upstream,
    /// connect failure, timeout, reset: any local reply with a response flag other
    /// than `DC`) are errors whatever their status. Default: true.
    #[serde(default = "yes")]
    pub local_replies: bool,
}

impl Default for Errors {
    fn default() -> Self {
        Errors {
            statuses: default_statuses(),
            local_replies: true,
        }
    }
}

fn default_window() -> ConfigDuration {
    ConfigDuration(std::time::Duration::from_secs(30 * 86_400))
}

/// A service level objective shown on `/sli`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Objective {
    /// Unique across the process (the `/sli` board is shared by all listeners).
    pub name: String,
    /// Route names this objective covers. Exactly one of `routes` and `clusters`.
    #[serde(default)]
    pub routes: Vec<String>,
    /// Cluster names this objective covers.
    #[serde(default)]
    pub clusters: Vec<String>,
    /// Target success percentage, e.g. `99.9`.
    pub target: f64,
    /// Budget window. Default `30d`.
    #[serde(default = "default_window")]
    pub window: ConfigDuration,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The listener-wide error classification.
    #[serde(default)]
    pub errors: Errors,
    /// Per-route classification, replacing `errors` for the named routes.
    #[serde(default)]
    pub routes: BTreeMap<String, Errors>,
    #[serde(default)]
    pub objectives: Vec<Objective>,
}
