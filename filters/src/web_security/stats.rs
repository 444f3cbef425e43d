//! Metric names and label values of `web_security`.

/// `attache_csrf_total{listener,result}`.
pub const CSRF_TOTAL: &str = "attache_csrf_total";
/// `attache_web_security_headers_total{listener,result}`: per response header.
pub const HEADERS_TOTAL: &str = "attache_web_security_headers_total";

/// CSRF results.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Csrf {
    /// Fetch Metadata `same-origin`/`none`, or Origin/Referer equal to the host.
    SameOrigin,
    /// Cross-origin, from an `allowed_origins` entry.
    AllowedOrigin,
    /// Neither header; `missing_origin: allow`.
    MissingOriginAllowed,
    /// Rejected with 403.
    Denied,
    /// Would have been rejected (shadow mode); forwarded.
    ShadowDenied,
}

impl Csrf {
    pub const ALL: [Csrf; 5] = [
        Csrf::SameOrigin,
        Csrf::AllowedOrigin,
        Csrf::MissingOriginAllowed,
        Csrf::Denied,
        Csrf::ShadowDenied,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Csrf::SameOrigin => "same_origin",
            Csrf::AllowedOrigin => "allowed_origin",
            Csrf::MissingOriginAllowed => "missing_origin_allowed",
            Csrf::Denied => "denied",
            Csrf::ShadowDenied => "shadow_denied",
        }
    }
}

/// What happened to one configured response header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Header {
    Added,
    /// The upstream's value was kept.
    Kept,
    /// The upstream's value was replaced (`override: true`).
    Replaced,
    /// Missing, not added (`headers_mode: shadow`).
    ShadowMissing,
}

impl Header {
    pub const ALL: [Header; 4] = [
        Header::Added,
        Header::Kept,
        Header::Replaced,
        Header::ShadowMissing,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Header::Added => "added",
            Header::Kept => "kept",
            Header::Replaced => "replaced",
            Header::ShadowMissing => "shadow_missing",
        }
    }
}
