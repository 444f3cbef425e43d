//! Typed config for the `sli` filter.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::duration::ConfigDuration;

/// A status or status class that counts as an error: `5xx`, `429`, or `429` as a
/// number; for `grpc_codes`, a gRPC code name or number.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(untagged)]
pub enum StatusPattern {
    Code(u16),
    Text(String),
}

fn default_statuses() -> Vec<StatusPattern> {
    vec![StatusPattern::Text("5xx".into())]
}

/// The gRPC codes that are errors by default: the server's failures. Client errors
/// (`INVALID_ARGUMENT`, `NOT_FOUND`, `PERMISSION_DENIED`, ...) count as success, as
/// 4xx do, and so does `CANCELLED` (the client gave up).
pub fn default_grpc_codes() -> Vec<StatusPattern> {
    [
        "UNKNOWN",
        "DEADLINE_EXCEEDED",
        "UNIMPLEMENTED",
        "INTERNAL",
        "UNAVAILABLE",
        "DATA_LOSS",
    ]
    .map(|n| StatusPattern::Text(n.into()))
    .to_vec()
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
    /// For gRPC calls, which final `grpc-status` codes are errors (names such as
    /// `UNAVAILABLE`, or numbers); the HTTP status is not used for them.
    #[serde(default = "default_grpc_codes")]
    pub grpc_codes: Vec<StatusPattern>,
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
            grpc_codes: default_grpc_codes(),
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
