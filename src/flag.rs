//! Response flags (Envoy's short names): why a stream or a call ended the way it
//! did, written to the access log and counted. This is the one list; counters are
//! indexed by it, so no flag can be set and then dropped by a lookup.

/// A response flag. `as_str` is the name logs and metric labels carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Flag {
    /// `NR`: no virtual host or route matched (a Thrift call: no route).
    NoRoute,
    /// `NC`: `cluster_header` named no configured cluster.
    NoCluster,
    /// `UH`: the cluster had no endpoint to pick.
    NoHealthyUpstream,
    /// `UF`: connecting to the upstream failed.
    ConnectFailure,
    /// `UO`: a circuit breaker was full.
    Overflow,
    /// `UT`: the upstream did not answer in time.
    UpstreamTimeout,
    /// `UR`: the upstream reset or broke the stream.
    UpstreamReset,
    /// `URX`: an upstream error on the last try, after a retry.
    RetriesExhausted,
    /// `DPE`: the downstream request was malformed or refused by a check.
    DownstreamProtocolError,
    /// `RBAC`: an `rbac` policy denied the request.
    Rbac,
    /// `RL`: the `local_rate_limit` filter refused the request (429).
    RateLimited,
    /// `UPE`: the upstream's answer broke the protocol (a Thrift reply that does
    /// not decode, does not answer the call, or cannot be translated).
    UpstreamProtocolError,
    /// `DC`: the downstream went away before the response finished.
    DownstreamDisconnect,
    /// `DT`: the drain deadline cut the stream.
    DrainTimeout,
    /// `SI`: `stream_idle_timeout` ended the stream.
    StreamIdle,
}

impl Flag {
    /// Every flag, in label order.
    pub const ALL: [Flag; 15] = [
        Flag::NoRoute,
        Flag::NoCluster,
        Flag::NoHealthyUpstream,
        Flag::ConnectFailure,
        Flag::Overflow,
        Flag::UpstreamTimeout,
        Flag::UpstreamReset,
        Flag::RetriesExhausted,
        Flag::DownstreamProtocolError,
        Flag::Rbac,
        Flag::RateLimited,
        Flag::UpstreamProtocolError,
        Flag::DownstreamDisconnect,
        Flag::DrainTimeout,
        Flag::StreamIdle,
    ];

    /// The flag named `s` (what a filter that answered sets in
    /// `StreamCtx::response_flag`).
    pub fn from_name(s: &str) -> Option<Flag> {
        Flag::ALL.into_iter().find(|f| f.as_str() == s)
    }

    pub const fn as_str(self) -> &'static str {
        match self {
            Flag::NoRoute => "NR",
            Flag::NoCluster => "NC",
            Flag::NoHealthyUpstream => "UH",
            Flag::ConnectFailure => "UF",
            Flag::Overflow => "UO",
            Flag::UpstreamTimeout => "UT",
            Flag::UpstreamReset => "UR",
            Flag::RetriesExhausted => "URX",
            Flag::DownstreamProtocolError => "DPE",
            Flag::Rbac => "RBAC",
            Flag::RateLimited => "RL",
            Flag::UpstreamProtocolError => "UPE",
            Flag::DownstreamDisconnect => "DC",
            Flag::DrainTimeout => "DT",
            Flag::StreamIdle => "SI",
        }
    }
}

impl std::fmt::Display for Flag {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::Flag;

    #[test]
    fn all_lists_each_flag_once_at_its_own_index() {
        for (i, f) in Flag::ALL.iter().enumerate() {
            assert_eq!(*f as usize, i, "{f} is out of place in Flag::ALL");
        }
        let mut names: Vec<&str> = Flag::ALL.iter().map(|f| f.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), Flag::ALL.len());
        for f in Flag::ALL {
            assert_eq!(Flag::from_name(f.as_str()), Some(f));
        }
        assert_eq!(Flag::from_name("nope"), None);
    }
}
