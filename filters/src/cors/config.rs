//! Typed config for the `cors` filter.

use serde::Deserialize;

use crate::duration::ConfigDuration;
use crate::origin::Pattern;
use crate::web_security::Mode;

fn default_methods() -> Vec<String> {
    vec!["GET".into(), "HEAD".into(), "POST".into()]
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Origins allowed to read responses: exact, `*`, `{ suffix }`, `{ regex }`.
    pub allowed_origins: Vec<Pattern>,
    /// Default `[GET, HEAD, POST]`.
    #[serde(default = "default_methods")]
    pub allowed_methods: Vec<String>,
    /// Request headers a preflight may ask for; `*` allows any. Default none.
    #[serde(default)]
    pub allowed_headers: Vec<String>,
    /// Response headers scripts may read. Default none.
    #[serde(default)]
    pub expose_headers: Vec<String>,
    /// Send `Access-Control-Allow-Credentials: true`. Never with `*`.
    #[serde(default)]
    pub allow_credentials: bool,
    /// `Access-Control-Max-Age` for preflights. Default: not sent.
    #[serde(default)]
    pub max_age: Option<ConfigDuration>,
    /// `shadow`: forward preflights, add no headers; count what would happen.
    #[serde(default)]
    pub mode: Mode,
}
