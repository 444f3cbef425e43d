//! Typed config for the `headers` filter.

use std::collections::BTreeMap;

use serde::Deserialize;

/// Edits applied to one direction.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Edits {
    /// Replace the header (or add it when absent).
    #[serde(default)]
    pub set: BTreeMap<String, String>,
    /// Append a value, keeping existing ones.
    #[serde(default)]
    pub add: BTreeMap<String, String>,
    /// Remove every value of these headers.
    #[serde(default)]
    pub remove: Vec<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub request: Edits,
    #[serde(default)]
    pub response: Edits,
}
