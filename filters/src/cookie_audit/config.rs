//! Typed config for the `cookie_audit` filter.

use serde::Deserialize;

use crate::duration::ConfigDuration;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Count and log; change nothing.
    #[default]
    Audit,
    /// Strip / drop / fix as configured, and count what was done.
    Enforce,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Unknown {
    /// Count cookies without a policy, let them through.
    #[default]
    Allow,
    /// In enforce mode: remove them from `Cookie` and drop their `Set-Cookie`.
    Strip,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub enum SameSite {
    #[default]
    #[serde(alias = "lax")]
    Lax,
    #[serde(alias = "strict")]
    Strict,
    #[serde(alias = "none")]
    None,
    /// Any value, or none at all (still: `SameSite=None` requires `Secure`).
    #[serde(rename = "any")]
    Any,
}

impl SameSite {
    pub fn as_str(self) -> &'static str {
        match self {
            SameSite::Lax => "Lax",
            SameSite::Strict => "Strict",
            SameSite::None => "None",
            SameSite::Any => "any",
        }
    }
}

fn yes() -> bool {
    true
}

/// What a cookie must look like.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    /// The cookie name, exact and case-sensitive.
    pub name: String,
    /// Require `Secure`. Default true.
    #[serde(default = "yes")]
    pub secure: bool,
    /// Require `HttpOnly`. Default true.
    #[serde(default = "yes")]
    pub http_only: bool,
    /// Required `SameSite`. Default `Lax`; `any` turns the check off.
    #[serde(default)]
    pub same_site: SameSite,
    /// Longest allowed `Max-Age` / `Expires`. Default: unlimited.
    #[serde(default)]
    pub max_lifetime: Option<ConfigDuration>,
    /// Broadest allowed `Domain` (`app.example.com` allows `app.example.com` and
    /// its subdomains, rejects `example.com`). Default: not checked.
    #[serde(default)]
    pub domain: Option<String>,
}

fn default_log_rate() -> u32 {
    10
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Cookies with a policy.
    #[serde(default)]
    pub cookies: Vec<Policy>,
    /// Cookie names that are expected but whose attributes are not checked.
    #[serde(default)]
    pub allowed: Vec<String>,
    #[serde(default)]
    pub unknown: Unknown,
    #[serde(default)]
    pub mode: Mode,
    /// In enforce mode, repair a policy violation (add `Secure`, `HttpOnly`,
    /// `SameSite`, cap `Max-Age`, narrow `Domain`) instead of dropping the cookie.
    #[serde(default)]
    pub fix: bool,
    /// Most violation log lines per second for this filter instance. Default 10.
    #[serde(default = "default_log_rate")]
    pub log_lines_per_second: u32,
}
