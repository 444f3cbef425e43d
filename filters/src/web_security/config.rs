//! Typed config for the `web_security` filter.

use serde::Deserialize;

use crate::origin::Pattern;

/// Whether a part acts or only reports.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    #[default]
    Enforce,
    /// Report-only: count and log what would happen, change nothing.
    Shadow,
}

/// One response header: absent = the default value, `false` = off, `true` = the
/// default value, a string = that value.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum Setting {
    On(bool),
    Value(String),
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MissingOrigin {
    /// Unsafe requests with neither `Origin` nor `Referer` (nor Fetch Metadata)
    /// pass: non-browser clients rarely send them.
    #[default]
    Allow,
    Deny,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Csrf {
    /// Default true.
    #[serde(default = "yes")]
    pub enabled: bool,
    #[serde(default)]
    pub mode: Mode,
    /// Origins other than the request's own host that may send unsafe requests.
    #[serde(default)]
    pub allowed_origins: Vec<Pattern>,
    #[serde(default)]
    pub missing_origin: MissingOrigin,
}

impl Default for Csrf {
    fn default() -> Self {
        Csrf {
            enabled: true,
            mode: Mode::Enforce,
            allowed_origins: Vec::new(),
            missing_origin: MissingOrigin::Allow,
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// `Strict-Transport-Security`, TLS listeners only.
    /// Default `max-age=31536000; includeSubDomains`.
    #[serde(default)]
    pub hsts: Option<Setting>,
    /// `X-Frame-Options`. Default `DENY`.
    #[serde(default)]
    pub frame_options: Option<Setting>,
    /// The `frame-ancestors` CSP directive. Default `'none'`.
    #[serde(default)]
    pub frame_ancestors: Option<Setting>,
    /// `X-Content-Type-Options`. Default `nosniff`.
    #[serde(default)]
    pub content_type_options: Option<Setting>,
    /// `Referrer-Policy`. Default `strict-origin-when-cross-origin`.
    #[serde(default)]
    pub referrer_policy: Option<Setting>,
    /// `Cross-Origin-Opener-Policy`. Default `same-origin`.
    #[serde(default)]
    pub cross_origin_opener_policy: Option<Setting>,
    /// A full `Content-Security-Policy`; `frame_ancestors` is appended unless it
    /// already names `frame-ancestors`. Default: none (only `frame-ancestors`).
    #[serde(default)]
    pub content_security_policy: Option<String>,
    /// Replace headers the upstream already set. Default false (keep them).
    #[serde(default, rename = "override")]
    pub override_upstream: bool,
    /// `shadow` counts missing headers without adding them.
    #[serde(default)]
    pub headers_mode: Mode,
    #[serde(default)]
    pub csrf: Csrf,
    /// Not a `web_security` key: CORS is the separate `cors` filter. Accepted here
    /// only to say so precisely.
    #[serde(default)]
    pub cors: Option<serde_yaml::Value>,
}
