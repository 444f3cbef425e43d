//! Plain config enums shared by the raw YAML types and the runtime: raw
//! deserializes into them, runtime code imports them from here (never from
//! `config::raw`, which stays inside `src/config/`).

use serde::Deserialize;

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum ListenerProtocol {
    #[default]
    Http,
    Tcp,
    Thrift,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum RbacMode {
    #[default]
    Enforce,
    /// Count and log what would be denied; forward anyway.
    Shadow,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum RbacAction {
    /// Allow only what some policy matches.
    #[default]
    Allow,
    /// Deny what some policy matches.
    Deny,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum HeadersWithUnderscores {
    Allow,
    #[default]
    Drop,
    Reject,
}

/// `tls.forward_client_cert`: what happens to `x-forwarded-client-cert`.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum ForwardClientCert {
    Sanitize,
    AppendForward,
    #[default]
    SanitizeSet,
}
