//! Why the proxy answered a request itself. A kind, not a message: `http::respond`
//! is the one place that turns a kind into a status code and a response flag.

/// Which side failed, and how.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The request could not be accepted as it is (400); the reason is counted in
    /// `attache_downstream_rq_rejected_total{listener,reason}`.
    BadRequest(Reject),
    /// The request body broke after the request went upstream (400, or the
    /// connection closes when the response already started). Not counted as a
    /// rejection here: the codec that read the body counts why (`Reject::Chunked`).
    /// Never the upstream's fault: no outlier penalty.
    BadBody,
    /// Request target over the listener's limit (414).
    UriTooLong,
    /// Request headers over the listener's limits (431).
    HeadersTooLarge,
    /// An `Expect` other than `100-continue` (417, RFC 9110 section 10.1.1).
    ExpectationFailed,
    /// A transfer coding other than `chunked` before the final `chunked` (501,
    /// RFC 9112 section 6.1): the proxy does not decode it.
    UnknownCoding,
    /// No route matched (404).
    NoRoute,
    /// RBAC denied the request (403).
    Forbidden,
    /// `cluster_header` named no configured cluster (503).
    NoCluster,
    /// The cluster has no endpoint to send to (503).
    NoHealthyUpstream,
    /// Connecting to the upstream failed (503).
    ConnectFailure,
    /// A circuit breaker or queue overflowed (503).
    Overflow,
    /// The upstream did not answer in time (504).
    Timeout,
    /// The upstream reset the stream or broke the protocol (502).
    UpstreamReset,
    /// Internal error in the proxy (500).
    Internal,
}

impl ErrorKind {
    /// The reason counted in `attache_downstream_rq_rejected_total` when the request
    /// was refused before anything was forwarded.
    pub fn reject_reason(self) -> Option<Reject> {
        match self {
            ErrorKind::BadRequest(r) => Some(r),
            ErrorKind::UriTooLong => Some(Reject::UriTooLong),
            ErrorKind::HeadersTooLarge => Some(Reject::HeadersTooLarge),
            ErrorKind::ExpectationFailed => Some(Reject::Expect),
            ErrorKind::UnknownCoding => Some(Reject::TransferCoding),
            _ => None,
        }
    }
    pub fn is_timeout(self) -> bool {
        self == ErrorKind::Timeout
    }
    pub fn is_upstream(self) -> bool {
        matches!(
            self,
            ErrorKind::NoHealthyUpstream
                | ErrorKind::ConnectFailure
                | ErrorKind::Overflow
                | ErrorKind::Timeout
                | ErrorKind::UpstreamReset
        )
    }
}

impl std::fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = match self {
            ErrorKind::BadRequest(_) | ErrorKind::BadBody => "bad request",
            ErrorKind::HeadersTooLarge => "request header fields too large",
            ErrorKind::UriTooLong => "request uri too long",
            ErrorKind::ExpectationFailed => "expectation failed",
            ErrorKind::UnknownCoding => "transfer coding not implemented",
            ErrorKind::NoRoute => "no route matched",
            ErrorKind::Forbidden => "rbac: access denied",
            ErrorKind::NoCluster => "cluster not found",
            ErrorKind::NoHealthyUpstream => "no healthy upstream",
            ErrorKind::ConnectFailure => "upstream connect error",
            ErrorKind::Overflow => "upstream overflow",
            ErrorKind::Timeout => "upstream request timeout",
            ErrorKind::UpstreamReset => "upstream reset",
            ErrorKind::Internal => "internal error",
        };
        f.write_str(s)
    }
}

/// Why a request was rejected before anything was forwarded. Each reason is one
/// label value of `attache_downstream_rq_rejected_total` (bounded: these names, never
/// request data), and one row of the request-hygiene table in docs/configuration.md.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Reject {
    /// Conflicting framing: Content-Length with Transfer-Encoding, or several
    /// different Content-Lengths (request smuggling).
    Framing,
    /// More than one Host header.
    DuplicateHost,
    /// A path the normalizer refuses (bad escapes, escaped slashes).
    Path,
    /// A body that did not arrive as its framing said.
    Body,
    /// A malformed chunked request body (RFC 9112 section 7.1): bad chunk size,
    /// extension, line end, missing CRLF after data, bad trailer.
    Chunked,
    /// A request the proxy cannot re-express upstream (bad URI parts).
    Target,
    /// A head the HTTP/1 parser refused (bad syntax).
    Malformed,
    /// Request target over `max_uri_bytes` (414).
    UriTooLong,
    /// Request headers over the listener's limits (431).
    HeadersTooLarge,
    /// An HTTP/2 `:scheme` other than `http` or `https`.
    Scheme,
    /// No authority, or a malformed one (empty, several values, userinfo, bad
    /// port), or a `Host` that disagrees with the absolute-form / `:authority`.
    Host,
    /// A `#fragment` in the request target.
    Fragment,
    /// A dot segment with a parameter or escape (`..;x`, `.;`, `..%5C`).
    PathTraversal,
    /// A backslash in the path, raw or as `%5C`.
    Backslash,
    /// A double-encoded path (`%252e`).
    DoubleEncoding,
    /// A header name with `_` and `headers_with_underscores: reject`.
    UnderscoreHeader,
    /// The request head did not arrive within `request_head_timeout` (408).
    HeadTimeout,
    /// An `Expect` other than `100-continue` (417).
    Expect,
    /// A transfer coding other than `chunked` (501).
    TransferCoding,
}

impl Reject {
    /// Every reason, in label order (`Reject as usize` indexes this).
    pub const ALL: &'static [Reject] = &[
        Reject::Framing,
        Reject::DuplicateHost,
        Reject::Path,
        Reject::Body,
        Reject::Chunked,
        Reject::Target,
        Reject::Malformed,
        Reject::UriTooLong,
        Reject::HeadersTooLarge,
        Reject::Scheme,
        Reject::Host,
        Reject::Fragment,
        Reject::PathTraversal,
        Reject::Backslash,
        Reject::DoubleEncoding,
        Reject::UnderscoreHeader,
        Reject::HeadTimeout,
        Reject::Expect,
        Reject::TransferCoding,
    ];

    /// The metric label and log name.
    pub fn as_str(self) -> &'static str {
        match self {
            Reject::Framing => "framing",
            Reject::DuplicateHost => "duplicate_host",
            Reject::Path => "path",
            Reject::Body => "body",
            Reject::Chunked => "chunked",
            Reject::Target => "target",
            Reject::Malformed => "malformed",
            Reject::UriTooLong => "uri_too_long",
            Reject::HeadersTooLarge => "headers_too_large",
            Reject::Scheme => "scheme",
            Reject::Host => "host",
            Reject::Fragment => "fragment",
            Reject::PathTraversal => "path_traversal",
            Reject::Backslash => "backslash",
            Reject::DoubleEncoding => "double_encoding",
            Reject::UnderscoreHeader => "underscore_header",
            Reject::HeadTimeout => "head_timeout",
            Reject::Expect => "expect",
            Reject::TransferCoding => "transfer_coding",
        }
    }
}
