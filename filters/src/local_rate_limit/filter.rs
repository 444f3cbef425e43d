//! The token bucket and the filter.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::{request, HeaderValue, Response, StatusCode};
use prometheus::IntCounter;

use super::config::Config;
use super::stats;
use crate::api::{Action, ConfigError, FactoryContext, HttpFilter, HttpFilterFactory, StreamCtx};

/// The response flag of a refused request (Envoy's `RL`).
pub const RATE_LIMITED_FLAG: &str = "RL";

/// A token bucket in one atomic word: high 32 bits tokens, low 32 bits the fill
/// period (number of `fill_interval`s since creation) they were counted at.
#[derive(Debug)]
pub struct Bucket {
    start: Instant,
    interval_ns: u64,
    max: u32,
    per_fill: u32,
    state: AtomicU64,
}

impl Bucket {
    pub fn new(max: u32, per_fill: u32, interval: Duration) -> Bucket {
        Bucket {
            start: Instant::now(),
            interval_ns: (interval.as_nanos() as u64).max(1),
            max,
            per_fill,
            state: AtomicU64::new(u64::from(max) << 32),
        }
    }

    fn period(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.start).as_nanos() as u64 / self.interval_ns
    }

    /// Take one token at `now`; Err(time until the next fill) when empty.
    pub fn try_take_at(&self, now: Instant) -> Result<(), Duration> {
        let period = self.period(now);
        let mut cur = self.state.load(Ordering::Relaxed);
        loop {
            let tokens = (cur >> 32) as u32;
            let at = cur & 0xffff_ffff;
            // Periods wrap at 2^32 fills; compare modulo that.
            let elapsed = (period & 0xffff_ffff).wrapping_sub(at) & 0xffff_ffff;
            let refilled = (u64::from(tokens) + elapsed.saturating_mul(u64::from(self.per_fill)))
                .min(u64::from(self.max)) as u32;
            if refilled == 0 {
                let next = (period + 1) * self.interval_ns;
                let now_ns = now.saturating_duration_since(self.start).as_nanos() as u64;
                return Err(Duration::from_nanos(next.saturating_sub(now_ns)));
            }
            let new = (u64::from(refilled - 1) << 32) | (period & 0xffff_ffff);
            match self
                .state
                .compare_exchange_weak(cur, new, Ordering::AcqRel, Ordering::Relaxed)
            {
                Ok(_) => return Ok(()),
                Err(actual) => cur = actual,
            }
        }
    }
}

#[derive(Debug)]
pub struct Filter {
    bucket: Bucket,
    allowed: IntCounter,
    limited: IntCounter,
}

pub struct Factory;

impl HttpFilterFactory for Factory {
    const NAME: &'static str = "local_rate_limit";
    type Config = Config;

    fn validate(cfg: &Config) -> Vec<ConfigError> {
        cfg.validate()
    }

    fn build(cfg: Config, cx: &FactoryContext<'_>) -> Result<Arc<dyn HttpFilter>, ConfigError> {
        let c = cx.stats.counter_vec(
            stats::TOTAL,
            "Requests checked by local_rate_limit, by result (allowed, limited)",
            &["listener", "result"],
        );
        Ok(Arc::new(Filter {
            bucket: Bucket::new(
                cfg.max_tokens,
                cfg.tokens_per_fill.unwrap_or(cfg.max_tokens),
                cfg.fill_interval
                    .map_or(Duration::from_secs(1), |d| d.get()),
            ),
            allowed: c.with_label_values(&[cx.listener, "allowed"]),
            limited: c.with_label_values(&[cx.listener, "limited"]),
        }))
    }
}

impl HttpFilter for Filter {
    fn on_request(&self, _req: &mut request::Parts, cx: &mut StreamCtx) -> Action {
        match self.bucket.try_take_at(Instant::now()) {
            Ok(()) => {
                self.allowed.inc();
                Action::Continue
            }
            Err(wait) => {
                self.limited.inc();
                // Whole seconds, rounded up (RFC 9110 `delay-seconds`).
                let secs = wait.as_millis().div_ceil(1000).max(1) as u64;
                let mut rsp = Response::new(bytes::Bytes::from_static(b"rate limited\n"));
                *rsp.status_mut() = StatusCode::TOO_MANY_REQUESTS;
                rsp.headers_mut().insert(
                    http::header::CONTENT_TYPE,
                    HeaderValue::from_static("text/plain"),
                );
                rsp.headers_mut()
                    .insert(http::header::RETRY_AFTER, HeaderValue::from(secs));
                // Envoy's flag for a local rate limit: logged, counted, and named in
                // a gRPC client's `grpc-message`.
                cx.response_flag = Some(RATE_LIMITED_FLAG);
                Action::Respond(rsp)
            }
        }
    }
}
