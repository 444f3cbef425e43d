//! Why the proxy answered a request itself. A kind, not a message: `http::respond`
//! is the one place that turns a kind into a status code and a response flag.

/// Which side failed, and how.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The request could not be accepted as it is (400).
    BadRequest,
    /// Request target over the listener's limit (414).
    UriTooLong,
    /// Request headers over the listener's limits (431).
    HeadersTooLarge,
    /// No route matched (404).
    NoRoute,
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
            ErrorKind::BadRequest => "bad request",
            ErrorKind::HeadersTooLarge => "request header fields too large",
            ErrorKind::UriTooLong => "request uri too long",
            ErrorKind::NoRoute => "no route matched",
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
