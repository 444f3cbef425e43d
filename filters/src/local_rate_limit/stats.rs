//! Metric names of `local_rate_limit`.

/// `attache_local_rate_limit_total{listener,result}`; result is `allowed` or `limited`.
pub const TOTAL: &str = "attache_local_rate_limit_total";
