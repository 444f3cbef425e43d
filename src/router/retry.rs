//! The HTTP retry vocabulary in one place: the `retry_on` names (parsed by the
//! config compiler, printed by `/explain` and `test-routes`), and the retry state
//! of one request, which owns the decision whether a failed try goes again (Envoy's
//! `RetryStateImpl` plays this part).

use std::time::Duration;

use http::HeaderMap;
use tokio::time::Instant;

use crate::upstream::breakers::{Gate, Permit};

/// Every name `retries.retry_on` accepts (Envoy's names).
pub const RETRY_ON: &[&str] = &[
    "5xx",
    "gateway-error",
    "connect-failure",
    "reset",
    "retriable-status-codes",
    "cancelled",
    "deadline-exceeded",
    "resource-exhausted",
    "unavailable",
    "internal",
];

/// The gRPC `retry_on` conditions and the code each reads.
const GRPC_RETRY_ON: &[(&str, attache_filters::grpc::Code)] = {
    use attache_filters::grpc::Code;
    &[
        ("cancelled", Code::Cancelled),
        ("deadline-exceeded", Code::DeadlineExceeded),
        ("resource-exhausted", Code::ResourceExhausted),
        ("unavailable", Code::Unavailable),
        ("internal", Code::Internal),
    ]
};

#[derive(Debug, Clone, Default)]
pub struct RetryPolicy {
    pub attempts: u32,
    pub on_5xx: bool,
    pub on_gateway_error: bool,
    pub on_connect_failure: bool,
    pub on_reset: bool,
    pub statuses: Vec<u16>,
    pub per_try_timeout: Option<Duration>,
    /// gRPC codes retried when a trailers-only answer carries them, as a bit set
    /// indexed by code (`retry_on: [unavailable, ...]`).
    pub grpc_codes: u32,
}

/// How a try failed, as the retry decision reads it.
pub enum Failure<'a> {
    /// The upstream answered with this status and head.
    Status(u16, &'a HeaderMap),
    ConnectFailure,
    /// Reset or a protocol error before a response head.
    Reset,
    /// No response head in time.
    Timeout,
}

impl RetryPolicy {
    /// Turn on the condition `retry_on` names; false for an unknown name.
    /// (`retriable-status-codes` only enables `statuses`, which the caller fills.)
    pub fn enable(&mut self, name: &str) -> bool {
        match name {
            "5xx" => self.on_5xx = true,
            "gateway-error" => self.on_gateway_error = true,
            "connect-failure" => self.on_connect_failure = true,
            "reset" => self.on_reset = true,
            "retriable-status-codes" => {}
            other => match GRPC_RETRY_ON.iter().find(|(n, _)| *n == other) {
                Some((_, code)) => self.grpc_codes |= 1 << (*code as u32),
                None => return false,
            },
        }
        true
    }

    /// The conditions, as `/explain` prints them: names, then retried statuses,
    /// then gRPC codes.
    pub fn conditions(&self) -> Vec<String> {
        let mut on = Vec::new();
        for (b, n) in [
            (self.on_5xx, "5xx"),
            (self.on_gateway_error, "gateway-error"),
            (self.on_connect_failure, "connect-failure"),
            (self.on_reset, "reset"),
        ] {
            if b {
                on.push(n.to_string());
            }
        }
        on.extend(self.statuses.iter().map(u16::to_string));
        on.extend(
            attache_filters::grpc::Code::ALL
                .iter()
                .filter(|c| self.grpc_codes & (1 << (**c as u32)) != 0)
                .map(|c| format!("grpc {}", c.name())),
        );
        on
    }

    pub fn retry_status(&self, status: u16) -> bool {
        (self.on_5xx && status >= 500)
            || (self.on_gateway_error && matches!(status, 502..=504))
            || self.statuses.contains(&status)
    }

    /// Whether a response head's `grpc-status` (a trailers-only answer: the call
    /// failed before any message) is one of the retried gRPC codes.
    pub fn retry_grpc(&self, head: &HeaderMap) -> bool {
        self.grpc_codes != 0
            && crate::http::grpc::status_of(head)
                .is_some_and(|c| self.grpc_codes & (1 << (c as u32)) != 0)
    }

    /// Whether the policy names this failure. A timeout is retried only with a
    /// `per_try_timeout` (otherwise it is the route's, and nothing is left).
    pub fn covers(&self, failure: &Failure<'_>) -> bool {
        match *failure {
            Failure::Status(status, head) => self.retry_status(status) || self.retry_grpc(head),
            Failure::ConnectFailure => {
                self.on_connect_failure || self.on_5xx || self.on_gateway_error
            }
            Failure::Reset => self.on_reset || self.on_5xx || self.on_gateway_error,
            Failure::Timeout => {
                self.per_try_timeout.is_some()
                    && (self.on_5xx || self.on_gateway_error || self.on_reset)
            }
        }
    }
}

/// One request's retries: which try this is, the overall deadline, and the
/// cluster's retry-budget permit while a retry is in flight (`max_retries`).
pub struct RetryState<'a> {
    policy: Option<&'a RetryPolicy>,
    attempt: u32,
    max_attempts: u32,
    deadline: Option<Instant>,
    _permit: Option<Permit>,
}

impl<'a> RetryState<'a> {
    /// `policy` is None when the request cannot be retried (a streamed body with no
    /// copy) or the route has none; `deadline` bounds every try together.
    pub fn new(policy: Option<&'a RetryPolicy>, deadline: Option<Instant>) -> RetryState<'a> {
        RetryState {
            policy,
            attempt: 0,
            max_attempts: 1 + policy.map_or(0, |r| r.attempts),
            deadline,
            _permit: None,
        }
    }

    /// Start the next try; its number (1 for the first).
    pub fn begin(&mut self) -> u32 {
        self.attempt += 1;
        self.attempt
    }

    /// Whether this try is the last the policy allows.
    pub fn is_last(&self) -> bool {
        self.attempt >= self.max_attempts
    }

    /// Whether this try is a retry.
    pub fn retried(&self) -> bool {
        self.attempt > 1
    }

    /// When a try sent at `sent` stops waiting for its response head: the overall
    /// deadline or the per-try timeout, whichever comes first.
    pub fn try_limit(&self, sent: Instant) -> Option<Instant> {
        let per_try = self
            .policy
            .and_then(|r| r.per_try_timeout)
            .map(|p| sent + p);
        match (self.deadline, per_try) {
            (Some(d), Some(p)) => Some(d.min(p)),
            (d, p) => d.or(p),
        }
    }

    /// Whether the overall deadline has passed.
    pub fn expired(&self) -> bool {
        self.deadline.is_some_and(|d| Instant::now() >= d)
    }

    /// Whether the try that just failed goes again: tries are left, the body can
    /// be sent again (`replayable`), time is left, the policy names the failure,
    /// and the cluster's retry budget (`retries` gate) grants a permit, held until
    /// the next decision.
    pub fn should_retry(&mut self, failure: &Failure<'_>, replayable: bool, budget: &Gate) -> bool {
        let wanted = !self.is_last()
            && replayable
            && !self.expired()
            && self.policy.is_some_and(|p| p.covers(failure));
        if !wanted {
            return false;
        }
        self._permit = budget.try_acquire();
        self._permit.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(on: &[&str]) -> RetryPolicy {
        let mut p = RetryPolicy {
            attempts: 2,
            ..Default::default()
        };
        for n in on {
            assert!(p.enable(n), "{n}");
        }
        p
    }

    #[test]
    fn every_documented_name_parses_and_prints() {
        let mut p = RetryPolicy::default();
        for n in RETRY_ON {
            assert!(p.enable(n), "{n}");
        }
        assert!(!p.enable("5xxx"));
        p.statuses = vec![409];
        assert_eq!(
            p.conditions(),
            [
                "5xx",
                "gateway-error",
                "connect-failure",
                "reset",
                "409",
                "grpc CANCELLED",
                "grpc DEADLINE_EXCEEDED",
                "grpc RESOURCE_EXHAUSTED",
                "grpc INTERNAL",
                "grpc UNAVAILABLE",
            ]
        );
    }

    #[test]
    fn policy_covers_the_failures_it_names() {
        let head = HeaderMap::new();
        let p = policy(&["gateway-error"]);
        assert!(p.covers(&Failure::Status(503, &head)));
        assert!(!p.covers(&Failure::Status(500, &head)));
        assert!(p.covers(&Failure::ConnectFailure));
        assert!(p.covers(&Failure::Reset));
        // A timeout is the route's unless a try has its own.
        assert!(!p.covers(&Failure::Timeout));
        let p = RetryPolicy {
            per_try_timeout: Some(Duration::from_millis(50)),
            ..p
        };
        assert!(p.covers(&Failure::Timeout));
        let p = policy(&["connect-failure"]);
        assert!(!p.covers(&Failure::Reset));
        assert!(!p.covers(&Failure::Status(502, &head)));
        let mut grpc = HeaderMap::new();
        grpc.insert("grpc-status", http::HeaderValue::from_static("14"));
        assert!(policy(&["unavailable"]).covers(&Failure::Status(200, &grpc)));
        assert!(!policy(&["internal"]).covers(&Failure::Status(200, &grpc)));
    }

    fn gate(max: u32) -> Gate {
        let limits = crate::upstream::breakers::Limits {
            max_connections: None,
            max_pending_requests: None,
            max_requests: None,
            max_retries: Some(max),
        };
        let stats = crate::stats::FleetStats::new(&crate::stats::Stats::new(), "c");
        crate::upstream::breakers::Breakers::new(limits, &stats).retries
    }

    #[tokio::test(start_paused = true)]
    async fn state_retries_until_tries_budget_or_time_run_out() {
        let p = policy(&["5xx"]);
        let head = HeaderMap::new();
        let budget = gate(10);
        let mut s = RetryState::new(Some(&p), None);
        assert_eq!(s.begin(), 1);
        assert!(!s.should_retry(&Failure::Status(404, &head), true, &budget));
        assert!(!s.should_retry(&Failure::Status(500, &head), false, &budget));
        assert!(s.should_retry(&Failure::Status(500, &head), true, &budget));
        assert_eq!(s.begin(), 2);
        assert!(s.retried() && !s.is_last());
        assert!(s.should_retry(&Failure::Status(500, &head), true, &budget));
        assert_eq!(s.begin(), 3);
        assert!(s.is_last());
        assert!(!s.should_retry(&Failure::Status(500, &head), true, &budget));

        // The cluster's retry budget is spent: no retry.
        let mut s = RetryState::new(Some(&p), None);
        s.begin();
        assert!(!s.should_retry(&Failure::Reset, true, &gate(0)));

        // Past the overall deadline nothing is retried.
        let deadline = Instant::now() + Duration::from_millis(100);
        let mut s = RetryState::new(Some(&p), Some(deadline));
        s.begin();
        assert_eq!(s.try_limit(Instant::now()), Some(deadline));
        tokio::time::advance(Duration::from_millis(150)).await;
        assert!(s.expired());
        assert!(!s.should_retry(&Failure::Reset, true, &budget));

        // Without a policy a request is tried once.
        let mut s = RetryState::new(None, None);
        s.begin();
        assert!(s.is_last());
    }

    #[test]
    fn try_limit_is_the_earlier_of_deadline_and_per_try() {
        let now = Instant::now();
        let p = RetryPolicy {
            per_try_timeout: Some(Duration::from_secs(1)),
            ..policy(&["reset"])
        };
        let s = RetryState::new(Some(&p), Some(now + Duration::from_secs(5)));
        assert_eq!(s.try_limit(now), Some(now + Duration::from_secs(1)));
        let s = RetryState::new(Some(&p), Some(now + Duration::from_millis(10)));
        assert_eq!(s.try_limit(now), Some(now + Duration::from_millis(10)));
        assert_eq!(RetryState::new(None, None).try_limit(now), None);
    }
}
