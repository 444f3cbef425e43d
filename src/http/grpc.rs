//! gRPC on the HTTP path: recognising a call, reading its status from trailers or a
//! trailers-only head, the `grpc-timeout` deadline, per-route call metrics, and the
//! stream timers (call deadline, idle) that end a long-lived response.
//!
//! Hooks only: `proxy.rs` classifies the request and computes deadlines here, the
//! response body ([`super::body::RespBody`]) observes trailers and runs the timers,
//! and `respond.rs` shapes local replies for gRPC clients.

use std::future::Future as _;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use attache_filters::grpc::{Code, Kind};
use http::header::{HeaderMap, HeaderName, HeaderValue, CONTENT_TYPE};
use prometheus::{Histogram, HistogramVec, IntCounter, IntCounterVec};
use tokio::time::{Instant, Sleep};

use crate::stats::Stats;

pub static GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");
pub static GRPC_MESSAGE: HeaderName = HeaderName::from_static("grpc-message");
pub static GRPC_TIMEOUT: HeaderName = HeaderName::from_static("grpc-timeout");

/// `attache_grpc_requests_total{listener,route,grpc_status}`.
pub const REQUESTS_TOTAL: &str = "attache_grpc_requests_total";
/// `attache_grpc_request_duration_seconds{listener,route}`.
pub const REQUEST_DURATION: &str = "attache_grpc_request_duration_seconds";
/// The route label of gRPC calls no route matched.
pub const NO_ROUTE: &str = "_none";

/// Whether (and how) a request is a gRPC call: one header lookup.
pub fn classify(headers: &HeaderMap) -> Option<Kind> {
    Kind::of_content_type(headers.get(CONTENT_TYPE)?.as_bytes())
}

/// The `grpc-status` of a head or trailers, if it has one.
pub fn status_of(headers: &HeaderMap) -> Option<Code> {
    headers
        .get(&GRPC_STATUS)
        .map(|v| Code::from_header(v.as_bytes()))
}

/// A `grpc-timeout` value (gRPC over HTTP/2: `1*8DIGIT unit`, unit one of
/// `H M S m u n`). None when malformed.
pub fn parse_timeout(v: &[u8]) -> Option<Duration> {
    let (&unit, digits) = v.split_last()?;
    if digits.is_empty() || digits.len() > 8 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n = digits
        .iter()
        .fold(0u64, |n, d| n * 10 + u64::from(d - b'0'));
    Some(match unit {
        b'H' => Duration::from_secs(n * 3600),
        b'M' => Duration::from_secs(n * 60),
        b'S' => Duration::from_secs(n),
        b'm' => Duration::from_millis(n),
        b'u' => Duration::from_micros(n),
        b'n' => Duration::from_nanos(n),
        _ => return None,
    })
}

/// The whole-call limit of a gRPC request: its `grpc-timeout`, capped by the route's
/// `max_grpc_timeout`, and the route's `max_stream_duration`, whichever is shorter.
///
/// The header is normalized on the way, so the upstream's deadline is the one the
/// proxy enforces: a malformed one is removed (an upstream could read it
/// differently), one longer than the cap is rewritten to the cap, and of several
/// `grpc-timeout` fields only the first (the one read here) is kept.
pub fn call_limit(
    headers: &mut HeaderMap,
    grpc: bool,
    max_grpc_timeout: Option<Duration>,
    max_stream_duration: Option<Duration>,
) -> Option<Duration> {
    let asked = if grpc {
        deadline_asked(headers, max_grpc_timeout)
    } else {
        None
    };
    match (asked, max_stream_duration) {
        (Some(a), Some(m)) => Some(a.min(m)),
        (a, m) => a.or(m),
    }
}

/// The call's `grpc-timeout`, capped, with the header normalized (see
/// [`call_limit`]).
fn deadline_asked(headers: &mut HeaderMap, cap: Option<Duration>) -> Option<Duration> {
    let mut fields = headers.get_all(&GRPC_TIMEOUT).iter();
    let first = fields.next()?;
    let several = fields.next().is_some();
    let Some(t) = parse_timeout(first.as_bytes()) else {
        headers.remove(&GRPC_TIMEOUT);
        return None;
    };
    match cap {
        Some(cap) if t > cap => {
            headers.insert(GRPC_TIMEOUT.clone(), timeout_value(cap));
            Some(cap)
        }
        _ => {
            if several {
                let first = first.clone();
                headers.insert(GRPC_TIMEOUT.clone(), first);
            }
            Some(t)
        }
    }
}

/// `grpc-timeout` for `d`, in milliseconds (at most 8 digits: ~27 hours).
fn timeout_value(d: Duration) -> HeaderValue {
    let ms = d.as_millis().clamp(1, 99_999_999) as u64;
    let mut b = itoa::Buffer::new();
    let mut s = String::with_capacity(10);
    s.push_str(b.format(ms));
    s.push('m');
    HeaderValue::from_str(&s).unwrap_or_else(|_| HeaderValue::from_static("1m"))
}

/// `grpc-message` text, percent-encoded as the gRPC spec asks (bytes outside
/// printable ASCII, and `%`).
pub fn message_value(msg: &str) -> HeaderValue {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut out = Vec::with_capacity(msg.len());
    for &b in msg.as_bytes() {
        if (0x20..0x7f).contains(&b) && b != b'%' {
            out.push(b);
        } else {
            out.extend_from_slice(&[b'%', HEX[usize::from(b >> 4)], HEX[usize::from(b & 0xf)]]);
        }
    }
    HeaderValue::from_bytes(&out).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// The `content-type` of a reply to a request of this kind.
pub fn content_type(kind: Kind) -> HeaderValue {
    HeaderValue::from_static(match kind {
        Kind::Grpc => "application/grpc",
        Kind::Web => "application/grpc-web+proto",
        Kind::WebText => "application/grpc-web-text+proto",
    })
}

/// One gRPC call's state for the end of its stream.
pub struct Call {
    pub kind: Kind,
    /// Set when the `grpc_web` filter translates this call (gRPC-Web to gRPC).
    pub web: Option<attache_filters::grpc_web::Web>,
    /// From the trailers, or the head of a trailers-only response.
    pub status: Option<Code>,
    pub stats: Arc<RouteStats>,
}

impl Call {
    pub fn new(kind: Kind, stats: Arc<RouteStats>) -> Call {
        Call {
            kind,
            web: None,
            status: None,
            stats,
        }
    }

    /// Read `grpc-status` from a head or trailers; the first one seen wins.
    pub fn observe(&mut self, headers: &HeaderMap) {
        if self.status.is_none() {
            self.status = status_of(headers);
        }
    }

    /// The call's final code. Without a `grpc-status`: `CANCELLED` when the client
    /// went away (`DC`), the HTTP status's mapping for a non-200 answer, else
    /// `INTERNAL` (a stream that ended without trailers, or was reset mid-stream).
    pub fn final_code(&self, http_status: u16, flag: &str) -> Code {
        match self.status {
            Some(c) => c,
            None if flag == "DC" => Code::Cancelled,
            None if http_status != 200 && http_status != 0 => Code::from_http(http_status),
            None => Code::Internal,
        }
    }
}

/// The metric families, fetched once per listener per config load.
#[derive(Clone)]
pub struct Vecs {
    requests: IntCounterVec,
    duration: HistogramVec,
}

impl Vecs {
    pub fn new(stats: &Stats) -> Vecs {
        Vecs {
            requests: stats.counter_vec(
                REQUESTS_TOTAL,
                "gRPC calls by final grpc-status",
                &["listener", "route", "grpc_status"],
            ),
            duration: stats.histogram_vec(
                REQUEST_DURATION,
                "gRPC call duration, request start to the end of the response stream",
                &["listener", "route"],
            ),
        }
    }
}

/// One route's gRPC metric handles, resolved on its first gRPC call (so routes that
/// never carry gRPC export no series).
pub struct RouteStats {
    vecs: Vecs,
    listener: Arc<str>,
    route: Arc<str>,
    handles: OnceLock<Handles>,
}

struct Handles {
    calls: Vec<IntCounter>,
    duration: Histogram,
}

impl RouteStats {
    pub fn new(vecs: Vecs, listener: &str, route: &str) -> Arc<RouteStats> {
        Arc::new(RouteStats {
            vecs,
            listener: listener.into(),
            route: route.into(),
            handles: OnceLock::new(),
        })
    }

    fn handles(&self) -> &Handles {
        self.handles.get_or_init(|| {
            let (l, r) = (&*self.listener, &*self.route);
            Handles {
                calls: Code::ALL
                    .iter()
                    .map(|c| self.vecs.requests.with_label_values(&[l, r, c.name()]))
                    .collect(),
                duration: self.vecs.duration.with_label_values(&[l, r]),
            }
        })
    }

    pub fn record(&self, code: Code, elapsed: Option<Duration>) {
        let h = self.handles();
        if let Some(c) = h.calls.get(code as usize) {
            c.inc();
        }
        if let Some(d) = elapsed {
            h.duration.observe(d.as_secs_f64());
        }
    }
}

/// A stream's limits beyond the route timeout: the call deadline, the idle limit,
/// and the request-body counter that shows the client still sending.
pub struct StreamLimits {
    pub deadline: Option<Instant>,
    pub idle: Option<Duration>,
    pub sent: Option<Arc<AtomicU64>>,
}

impl StreamLimits {
    /// The timers for the response body, once the head arrived.
    pub fn timers(&self) -> Timers {
        Timers::new(self.deadline, self.idle, self.sent.clone())
    }

    /// Wait for the response head of a try sent at `from`: until `limit`, and with
    /// an idle limit, until nothing moved for that long (request bytes still going
    /// upstream restart it). None when a limit ended the wait.
    ///
    /// The call is pinned by the caller and borrowed: the upstream call's future is
    /// large, and moving it in (and into a timeout) was a copy per request.
    pub async fn wait_head<F: std::future::Future>(
        &self,
        mut call: Pin<&mut F>,
        from: Instant,
        limit: Option<Instant>,
    ) -> Option<F::Output> {
        let Some(idle) = self.idle else {
            return match limit {
                Some(l) => tokio::time::timeout_at(l, call).await.ok(),
                None => Some(call.await),
            };
        };
        let load = |s: &Arc<AtomicU64>| s.load(Ordering::Relaxed);
        let mut seen = self.sent.as_ref().map_or(0, load);
        let mut idle_at = from + idle;
        loop {
            let at = limit.map_or(idle_at, |l| l.min(idle_at));
            if let Ok(r) = tokio::time::timeout_at(at, call.as_mut()).await {
                return Some(r);
            }
            let now = Instant::now();
            let moved = self.sent.as_ref().map_or(seen, load);
            if limit.is_some_and(|l| now >= l) || moved == seen {
                return None;
            }
            seen = moved;
            idle_at = now + idle;
        }
    }
}

/// Why a stream timer ended a response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expired {
    /// The call deadline (`grpc-timeout`) or `max_stream_duration` passed.
    Deadline,
    /// No bytes either way for `stream_idle_timeout`.
    Idle,
}

impl Expired {
    /// The response flag logged for it.
    pub fn flag(self) -> &'static str {
        match self {
            Expired::Deadline => "UT",
            Expired::Idle => "SI",
        }
    }

    /// The gRPC code sent in the trailers that end a gRPC call.
    pub fn code(self) -> Code {
        match self {
            Expired::Deadline => Code::DeadlineExceeded,
            Expired::Idle => Code::Unavailable,
        }
    }

    pub fn message(self) -> &'static str {
        match self {
            Expired::Deadline => "deadline exceeded (UT)",
            Expired::Idle => "stream idle timeout (SI)",
        }
    }
}

/// The timers of a response stream: a fixed deadline and an idle limit. The timer
/// is only created when the stream first waits (a response that is ready in one
/// poll never touches the timer wheel); activity is recorded as a clock read per
/// frame while a timer exists.
#[derive(Default)]
pub struct Timers {
    deadline: Option<Instant>,
    idle: Option<Duration>,
    /// Request-body bytes sent upstream so far (client-to-server activity).
    sent: Option<Arc<AtomicU64>>,
    seen_sent: u64,
    last: Option<Instant>,
    sleep: Option<Pin<Box<Sleep>>>,
}

impl Timers {
    pub fn new(
        deadline: Option<Instant>,
        idle: Option<Duration>,
        sent: Option<Arc<AtomicU64>>,
    ) -> Timers {
        Timers {
            deadline,
            idle,
            sent,
            ..Timers::default()
        }
    }

    pub fn is_set(&self) -> bool {
        self.deadline.is_some() || self.idle.is_some()
    }

    /// A frame went out: the stream is not idle.
    pub fn activity(&mut self) {
        if self.sleep.is_some() {
            self.last = Some(Instant::now());
        }
    }

    /// Poll while the body is pending: `Ready` when a limit has passed.
    pub fn poll_expired(&mut self, cx: &mut Context<'_>) -> Poll<Expired> {
        if !self.is_set() {
            return Poll::Pending;
        }
        loop {
            let now = Instant::now();
            let idle_at = self.idle.map(|i| self.last.unwrap_or(now) + i);
            if self.last.is_none() {
                self.last = Some(now);
            }
            let (at, why) = match (self.deadline, idle_at) {
                (Some(d), Some(i)) if i < d => (i, Expired::Idle),
                (Some(d), _) => (d, Expired::Deadline),
                (None, Some(i)) => (i, Expired::Idle),
                (None, None) => return Poll::Pending,
            };
            if at <= now {
                if why == Expired::Idle && self.request_moved() {
                    self.last = Some(now);
                    continue;
                }
                return Poll::Ready(why);
            }
            let sleep = self
                .sleep
                .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(at)));
            if sleep.deadline() != at {
                sleep.as_mut().reset(at);
            }
            if sleep.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
        }
    }

    /// Whether request bytes went upstream since the last check.
    fn request_moved(&mut self) -> bool {
        let Some(sent) = &self.sent else {
            return false;
        };
        let n = sent.load(Ordering::Relaxed);
        std::mem::replace(&mut self.seen_sent, n) != n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeout_grammar() {
        let ok: [(&[u8], Duration); 7] = [
            (b"1H", Duration::from_secs(3600)),
            (b"2M", Duration::from_secs(120)),
            (b"3S", Duration::from_secs(3)),
            (b"250m", Duration::from_millis(250)),
            (b"99999999u", Duration::from_micros(99_999_999)),
            (b"7n", Duration::from_nanos(7)),
            (b"0m", Duration::ZERO),
        ];
        for (v, d) in ok {
            assert_eq!(parse_timeout(v), Some(d), "{v:?}");
        }
        for v in [
            &b"100000000m"[..],
            b"m",
            b"10",
            b"10s",
            b"-1S",
            b"1.5S",
            b"",
            b" 1S",
        ] {
            assert_eq!(parse_timeout(v), None, "{v:?}");
        }
    }

    #[test]
    fn call_limit_caps_and_normalizes_the_header() {
        let cap = Some(Duration::from_secs(2));
        let mut h = HeaderMap::new();
        h.insert(&GRPC_TIMEOUT, HeaderValue::from_static("5S"));
        assert_eq!(call_limit(&mut h, true, cap, None), cap);
        assert_eq!(h[&GRPC_TIMEOUT], "2000m");
        h.insert(&GRPC_TIMEOUT, HeaderValue::from_static("100m"));
        assert_eq!(
            call_limit(&mut h, true, cap, Some(Duration::from_millis(50))),
            Some(Duration::from_millis(50))
        );
        assert_eq!(h[&GRPC_TIMEOUT], "100m");
        h.insert(&GRPC_TIMEOUT, HeaderValue::from_static("soon"));
        assert_eq!(call_limit(&mut h, true, cap, None), None);
        assert!(h.get(&GRPC_TIMEOUT).is_none());
        // Several fields: the first is the call's deadline, and the only one sent.
        h.insert(&GRPC_TIMEOUT, HeaderValue::from_static("1S"));
        h.append(&GRPC_TIMEOUT, HeaderValue::from_static("1H"));
        assert_eq!(
            call_limit(&mut h, true, None, None),
            Some(Duration::from_secs(1))
        );
        assert_eq!(h.get_all(&GRPC_TIMEOUT).iter().count(), 1);
        assert_eq!(h[&GRPC_TIMEOUT], "1S");
        h.append(&GRPC_TIMEOUT, HeaderValue::from_static("1H"));
        assert_eq!(
            call_limit(&mut h, true, cap, None),
            Some(Duration::from_secs(1))
        );
        assert_eq!(h.get_all(&GRPC_TIMEOUT).iter().count(), 1);
        h.insert(&GRPC_TIMEOUT, HeaderValue::from_static("soon"));
        h.append(&GRPC_TIMEOUT, HeaderValue::from_static("1S"));
        assert_eq!(call_limit(&mut h, true, cap, None), None);
        assert!(h.get(&GRPC_TIMEOUT).is_none());
        // Not a gRPC call: the header is not ours to read.
        h.insert(&GRPC_TIMEOUT, HeaderValue::from_static("1S"));
        assert_eq!(call_limit(&mut h, false, cap, None), None);
    }

    #[test]
    fn final_code_without_a_status() {
        let vecs = Vecs::new(&Stats::new());
        let mut call = Call::new(Kind::Grpc, RouteStats::new(vecs, "l", "r"));
        assert_eq!(call.final_code(200, ""), Code::Internal);
        assert_eq!(call.final_code(200, "DC"), Code::Cancelled);
        assert_eq!(call.final_code(503, ""), Code::Unavailable);
        let mut t = HeaderMap::new();
        t.insert(&GRPC_STATUS, HeaderValue::from_static("7"));
        call.observe(&t);
        assert_eq!(call.final_code(200, "UR"), Code::PermissionDenied);
    }

    #[test]
    fn messages_are_percent_encoded() {
        assert_eq!(message_value("no route (NR)"), "no route (NR)");
        assert_eq!(message_value("100% é"), "100%25 %C3%A9");
    }

    async fn poll(t: &mut Timers) -> Poll<Expired> {
        std::future::poll_fn(|cx| Poll::Ready(t.poll_expired(cx))).await
    }

    #[tokio::test(start_paused = true)]
    async fn idle_timer_restarts_on_activity_and_request_bytes() {
        let sent = Arc::new(AtomicU64::new(0));
        let mut t = Timers::new(None, Some(Duration::from_secs(10)), Some(sent.clone()));
        assert!(poll(&mut t).await.is_pending());
        tokio::time::advance(Duration::from_secs(6)).await;
        t.activity();
        tokio::time::advance(Duration::from_secs(6)).await;
        assert!(poll(&mut t).await.is_pending(), "a frame 6s ago");
        tokio::time::advance(Duration::from_secs(5)).await;
        sent.fetch_add(5, Ordering::Relaxed);
        assert!(poll(&mut t).await.is_pending(), "request bytes moved");
        tokio::time::advance(Duration::from_secs(11)).await;
        assert_eq!(poll(&mut t).await, Poll::Ready(Expired::Idle));
    }

    #[tokio::test(start_paused = true)]
    async fn head_wait_ends_when_nothing_moves_for_the_idle_limit() {
        let sent = Arc::new(AtomicU64::new(0));
        let limits = StreamLimits {
            deadline: None,
            idle: Some(Duration::from_secs(10)),
            sent: Some(sent.clone()),
        };
        let t0 = Instant::now();
        let never = std::pin::pin!(std::future::pending::<()>());
        let bump = async {
            tokio::time::sleep(Duration::from_secs(8)).await;
            sent.fetch_add(1, Ordering::Relaxed);
        };
        let (r, ()) = tokio::join!(limits.wait_head(never, t0, None), bump);
        assert!(r.is_none());
        // The request bytes at 8s restarted the wait: it ended at 10s + 10s.
        assert_eq!(t0.elapsed(), Duration::from_secs(20));

        let t0 = Instant::now();
        let limit = Some(t0 + Duration::from_secs(3));
        let never = std::future::pending::<()>();
        assert!(limits
            .wait_head(std::pin::pin!(never), t0, limit)
            .await
            .is_none());
        assert_eq!(t0.elapsed(), Duration::from_secs(3));
        let quick = async { 7 };
        assert_eq!(
            limits
                .wait_head(std::pin::pin!(quick), Instant::now(), limit)
                .await,
            Some(7)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn deadline_wins_when_earlier() {
        let at = Instant::now() + Duration::from_secs(3);
        let mut t = Timers::new(Some(at), Some(Duration::from_secs(10)), None);
        assert!(poll(&mut t).await.is_pending());
        tokio::time::advance(Duration::from_secs(3)).await;
        assert_eq!(poll(&mut t).await, Poll::Ready(Expired::Deadline));
    }
}
