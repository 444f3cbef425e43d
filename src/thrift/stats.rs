//! Thrift metric names and the pre-resolved handles a listener uses per call.
//!
//! | name | type | labels |
//! |---|---|---|
//! | `attache_thrift_rq_total` | counter | `listener`, `method`, `outcome` (`success`, `error`, `exception`, `local_error`) |
//! | `attache_thrift_rq_duration_seconds` | histogram | `listener`, `method` |
//! | `attache_thrift_downstream_decode_error_total` | counter | `listener`, `reason` |
//! | `attache_thrift_downstream_message_timeout_total` | counter | `listener` |
//! | `attache_thrift_rq_retry_total` | counter | `listener`, `route` |
//!
//! `method` is a name from the listener's `match.method` config, else `other`;
//! `route` is the name of a route with `retries:`.

use std::collections::HashMap;

use attache_filters::Stats;
use prometheus::{Histogram, IntCounter};

use super::codec::{ErrorKind, Header};

pub const RQ_TOTAL: &str = "attache_thrift_rq_total";
pub const RQ_DURATION: &str = "attache_thrift_rq_duration_seconds";
pub const DECODE_ERROR_TOTAL: &str = "attache_thrift_downstream_decode_error_total";
pub const MESSAGE_TIMEOUT_TOTAL: &str = "attache_thrift_downstream_message_timeout_total";
pub const RETRY_TOTAL: &str = "attache_thrift_rq_retry_total";

/// How one call ended, as counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A reply whose result struct set field 0 or is empty; or a forwarded oneway.
    Success,
    /// A reply that set a declared IDL exception.
    Error,
    /// A `TApplicationException` from the upstream.
    Exception,
    /// The proxy answered (or, for oneway, dropped) the call itself.
    LocalError,
}

/// The handles for one `method` label value.
#[derive(Debug, Clone)]
pub struct MethodStats {
    success: IntCounter,
    error: IntCounter,
    exception: IntCounter,
    local_error: IntCounter,
    pub duration: Histogram,
}

impl MethodStats {
    pub fn count(&self, outcome: Outcome) {
        match outcome {
            Outcome::Success => self.success.inc(),
            Outcome::Error => self.error.inc(),
            Outcome::Exception => self.exception.inc(),
            Outcome::LocalError => self.local_error.inc(),
        }
    }
}

/// Every metric handle of one listener, resolved when the config is compiled.
#[derive(Debug, Clone)]
pub struct Metrics {
    by_method: HashMap<String, MethodStats>,
    other: MethodStats,
    decode_errors: HashMap<ErrorKind, IntCounter>,
    decode_other: IntCounter,
    /// Connections closed because a call did not arrive whole within `message_timeout`.
    pub message_timeout: IntCounter,
    /// Retries sent, by the name of a route with `retries:`.
    retries: HashMap<String, IntCounter>,
    /// Exceptions the proxy answered itself, by response flag.
    pub local_reply: crate::stats::LocalReplies,
}

const ALL_KINDS: [ErrorKind; 16] = [
    ErrorKind::FrameTooLarge,
    ErrorKind::NegativeLength,
    ErrorKind::EmptyFrame,
    ErrorKind::FrameTooSmall,
    ErrorKind::MessageTooLarge,
    ErrorKind::DepthExceeded,
    ErrorKind::UnknownType,
    ErrorKind::UnknownProtocol,
    ErrorKind::ProtocolMismatch,
    ErrorKind::InvalidName,
    ErrorKind::UnknownMessageType,
    ErrorKind::InvalidVarint,
    ErrorKind::Truncated,
    ErrorKind::TrailingBytes,
    ErrorKind::InvalidHeader,
    ErrorKind::UnsupportedTransform,
];

impl Metrics {
    /// `methods`: the `method` label values; `retry_routes`: names of the routes
    /// with `retries:`.
    pub fn new<'a>(
        stats: &Stats,
        listener: &str,
        methods: impl IntoIterator<Item = &'a str>,
        retry_routes: impl IntoIterator<Item = &'a str>,
    ) -> Metrics {
        let total = stats.counter_vec(
            RQ_TOTAL,
            "Thrift calls by listener, method and outcome",
            &["listener", "method", "outcome"],
        );
        let duration = stats.histogram_vec(
            RQ_DURATION,
            "Thrift call latency through the proxy, seconds",
            &["listener", "method"],
        );
        let decode = stats.counter_vec(
            DECODE_ERROR_TOTAL,
            "Downstream Thrift connections closed on undecodable input, by reason",
            &["listener", "reason"],
        );
        let method = |m: &str| MethodStats {
            success: total.with_label_values(&[listener, m, "success"]),
            error: total.with_label_values(&[listener, m, "error"]),
            exception: total.with_label_values(&[listener, m, "exception"]),
            local_error: total.with_label_values(&[listener, m, "local_error"]),
            duration: duration.with_label_values(&[listener, m]),
        };
        let by_method = methods
            .into_iter()
            .map(|m| (m.to_owned(), method(m)))
            .collect();
        let retry = stats.counter_vec(
            RETRY_TOTAL,
            "Thrift calls sent again after a failed try, by listener and route",
            &["listener", "route"],
        );
        let retries = retry_routes
            .into_iter()
            .map(|r| (r.to_owned(), retry.with_label_values(&[listener, r])))
            .collect();
        let decode_errors = ALL_KINDS
            .iter()
            .map(|k| (*k, decode.with_label_values(&[listener, reason(*k)])))
            .collect();
        Metrics {
            by_method,
            other: method("other"),
            decode_errors,
            decode_other: decode.with_label_values(&[listener, "unexpected_message"]),
            message_timeout: stats
                .counter_vec(
                    MESSAGE_TIMEOUT_TOTAL,
                    "Downstream Thrift connections closed because a call was not complete within message_timeout",
                    &["listener"],
                )
                .with_label_values(&[listener]),
            retries,
            local_reply: crate::stats::LocalReplies::new(stats, listener),
        }
    }

    /// Count one retry on `route` (a route with `retries:`).
    pub fn retry(&self, route: &str) {
        if let Some(c) = self.retries.get(route) {
            c.inc();
        }
    }

    /// The handles for a call: by its full name, then its method part, else `other`.
    pub fn for_call(&self, h: &Header) -> &MethodStats {
        self.by_method
            .get(h.name())
            .or_else(|| self.by_method.get(h.method()))
            .unwrap_or(&self.other)
    }

    pub fn decode_error(&self, kind: Option<ErrorKind>) {
        match kind.and_then(|k| self.decode_errors.get(&k)) {
            Some(c) => c.inc(),
            None => self.decode_other.inc(),
        }
    }
}

/// The `reason` label of a decode error.
pub fn reason(kind: ErrorKind) -> &'static str {
    match kind {
        ErrorKind::FrameTooLarge => "frame_too_large",
        ErrorKind::NegativeLength => "negative_length",
        ErrorKind::EmptyFrame => "empty_frame",
        ErrorKind::FrameTooSmall => "frame_too_small",
        ErrorKind::MessageTooLarge => "message_too_large",
        ErrorKind::DepthExceeded => "depth_exceeded",
        ErrorKind::UnknownType => "unknown_type",
        ErrorKind::UnknownProtocol => "unknown_protocol",
        ErrorKind::ProtocolMismatch => "protocol_mismatch",
        ErrorKind::InvalidName => "invalid_name",
        ErrorKind::UnknownMessageType => "unknown_message_type",
        ErrorKind::InvalidVarint => "invalid_varint",
        ErrorKind::Truncated => "truncated",
        ErrorKind::TrailingBytes => "trailing_bytes",
        ErrorKind::InvalidHeader => "invalid_header",
        ErrorKind::UnsupportedTransform => "unsupported_transform",
    }
}
