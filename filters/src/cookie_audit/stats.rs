//! Metric names and label values of `cookie_audit`.

/// `attache_cookie_audit_violations_total{listener,cookie,violation}`.
pub const VIOLATIONS_TOTAL: &str = "attache_cookie_audit_violations_total";
/// `attache_cookie_audit_actions_total{listener,cookie,action}`: what enforce did.
pub const ACTIONS_TOTAL: &str = "attache_cookie_audit_actions_total";
/// The `cookie` label for names without a policy.
pub const UNKNOWN_COOKIE: &str = "unknown";

/// A violation kind; its label is [`Violation::label`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Violation {
    /// A request `Cookie` whose name has no policy.
    UnknownCookie,
    /// A `Set-Cookie` whose name has no policy.
    UnknownSetCookie,
    /// A `Set-Cookie` without `name=`.
    Malformed,
    MissingSecure,
    MissingHttpOnly,
    MissingSameSite,
    WrongSameSite,
    SameSiteNoneInsecure,
    LifetimeExceeded,
    DomainTooBroad,
}

impl Violation {
    pub const ALL: [Violation; 10] = [
        Violation::UnknownCookie,
        Violation::UnknownSetCookie,
        Violation::Malformed,
        Violation::MissingSecure,
        Violation::MissingHttpOnly,
        Violation::MissingSameSite,
        Violation::WrongSameSite,
        Violation::SameSiteNoneInsecure,
        Violation::LifetimeExceeded,
        Violation::DomainTooBroad,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Violation::UnknownCookie => "unknown_cookie",
            Violation::UnknownSetCookie => "unknown_set_cookie",
            Violation::Malformed => "malformed",
            Violation::MissingSecure => "missing_secure",
            Violation::MissingHttpOnly => "missing_http_only",
            Violation::MissingSameSite => "missing_same_site",
            Violation::WrongSameSite => "wrong_same_site",
            Violation::SameSiteNoneInsecure => "same_site_none_insecure",
            Violation::LifetimeExceeded => "lifetime_exceeded",
            Violation::DomainTooBroad => "domain_too_broad",
        }
    }

    pub fn bit(self) -> u16 {
        1 << (self as u16)
    }
}

/// What enforce mode did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Act {
    /// A request cookie removed before going upstream.
    Stripped,
    /// A `Set-Cookie` removed from the response.
    Dropped,
    /// A `Set-Cookie` rewritten to satisfy its policy.
    Fixed,
}

impl Act {
    pub const ALL: [Act; 3] = [Act::Stripped, Act::Dropped, Act::Fixed];

    pub fn label(self) -> &'static str {
        match self {
            Act::Stripped => "stripped",
            Act::Dropped => "dropped",
            Act::Fixed => "fixed",
        }
    }
}
