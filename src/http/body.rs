//! The response body handed to the client: streamed from the upstream or a local
//! reply, carrying the stream's [`Completion`], which runs exactly once when the body
//! ends, fails or is dropped (client gone): filters' `on_complete`, the access log.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime};

use attache_filters::{HttpFilter, StreamCtx};
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};

use super::grpc::{self, Expired, Timers};
use super::{ConnCtx, Runtime};
use crate::accesslog::Record;
use crate::stats::ListenerStats;
use crate::upstream::h1::{BoxError, ExchangeError};
use crate::upstream::{Attempt, UpstreamBody};

enum Inner {
    Full(Option<Bytes>),
    Upstream(UpstreamBody),
}

pub struct RespBody {
    inner: Inner,
    done: Option<Box<Completion>>,
    /// An unread HTTP/2 request body, dropped with this body: after the response's
    /// last frame went out (see `proxy::handle`).
    held: Option<super::DownBody>,
    /// The call deadline and idle limit of a streamed upstream response.
    timers: Timers,
    /// gRPC-Web: trailers into the body (and base64), for the client.
    web: Option<Box<super::grpc_web::Encode>>,
}

impl RespBody {
    pub fn full(b: Bytes) -> RespBody {
        let inner = if b.is_empty() {
            Inner::Full(None)
        } else {
            Inner::Full(Some(b))
        };
        RespBody {
            inner,
            done: None,
            held: None,
            timers: Timers::default(),
            web: None,
        }
    }

    pub fn upstream(b: UpstreamBody) -> RespBody {
        RespBody {
            inner: Inner::Upstream(b),
            done: None,
            held: None,
            timers: Timers::default(),
            web: None,
        }
    }

    /// Translate this response body for a gRPC-Web client.
    pub(super) fn set_web(&mut self, text: bool) {
        self.web = Some(Box::new(super::grpc_web::Encode::new(text)));
    }

    /// Bound the rest of the stream by a call deadline and an idle limit.
    pub(super) fn set_timers(&mut self, t: Timers) {
        self.timers = t;
    }

    /// A stream timer fired: stop reading the upstream (dropping its body resets that
    /// stream) and end the response. A gRPC call ends with trailers carrying the
    /// timer's status, which every gRPC client reads as the call's outcome; any
    /// other response is reset (HTTP/2) or cut (HTTP/1), as it cannot be completed.
    fn expire(&mut self, why: Expired) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.inner = Inner::Full(None);
        let grpc = match self.done.as_mut() {
            Some(d) => {
                d.flag = why.flag();
                d.grpc.as_mut().map(|c| c.status = Some(why.code()))
            }
            None => None,
        };
        if grpc.is_none() {
            self.finish(false);
            return Poll::Ready(Some(Err(why.message().into())));
        }
        let mut trailers = http::HeaderMap::new();
        trailers.insert(
            grpc::GRPC_STATUS.clone(),
            http::HeaderValue::from_static(why.code().as_str()),
        );
        trailers.insert(
            grpc::GRPC_MESSAGE.clone(),
            http::HeaderValue::from_static(why.message()),
        );
        self.finish(true);
        Poll::Ready(Some(Ok(Frame::trailers(trailers))))
    }

    /// The bytes of a local reply's body (None for a streamed one).
    pub(super) fn full_bytes(&self) -> Option<&Bytes> {
        match &self.inner {
            Inner::Full(b) => b.as_ref(),
            Inner::Upstream(_) => None,
        }
    }

    /// Keep an unread request body open until this body is dropped.
    pub(super) fn hold_request_body(&mut self, b: super::DownBody) {
        self.held = Some(b);
    }

    pub(super) fn attach(&mut self, done: Box<Completion>) {
        self.done = Some(done);
    }

    fn finish(&mut self, complete: bool) {
        if let Some(mut d) = self.done.take() {
            d.finish(complete);
        }
    }
}

impl Body for RespBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        let r = this.poll_inner(cx);
        let Some(web) = this.web.as_mut() else {
            return r;
        };
        match r {
            Poll::Ready(Some(Ok(f))) => Poll::Ready(Some(Ok(web.frame(f)))),
            Poll::Ready(None) => Poll::Ready(web.flush().map(|b| Ok(Frame::data(b)))),
            other => other,
        }
    }

    fn is_end_stream(&self) -> bool {
        let inner = match &self.inner {
            Inner::Full(b) => b.is_none(),
            Inner::Upstream(b) => b.is_end_stream(),
        };
        inner && !self.web.as_ref().is_some_and(|w| w.holding())
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Inner::Full(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
            Inner::Upstream(b) => b.size_hint(),
        }
    }
}

impl RespBody {
    /// The body's own frames, before a gRPC-Web translation: the completion's
    /// accounting, trailers observed, stream timers.
    fn poll_inner(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self;
        let r = match &mut this.inner {
            Inner::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            Inner::Upstream(b) => Pin::new(b).poll_frame(cx),
        };
        match &r {
            Poll::Ready(Some(Ok(f))) => {
                this.timers.activity();
                if let Some(d) = this.done.as_mut() {
                    if let Some(data) = f.data_ref() {
                        d.bytes_out += data.len() as u64;
                    } else if let (Some(call), Some(t)) = (d.grpc.as_mut(), f.trailers_ref()) {
                        call.observe(t);
                    }
                }
                if this.is_end_stream() {
                    this.finish(true);
                }
            }
            Poll::Ready(Some(Err(e))) => {
                if let Some(d) = this.done.as_mut() {
                    if d.flag.is_empty() {
                        // Headers already went out: not a local reply, but the log and
                        // filters learn the stream broke, upstream or (a malformed
                        // request body sent alongside) downstream.
                        let downstream = ExchangeError::is_request_body(&**e);
                        d.flag = if downstream { "DPE" } else { "UR" };
                    }
                }
                this.finish(false);
            }
            Poll::Ready(None) => this.finish(true),
            Poll::Pending => {
                if let Poll::Ready(why) = this.timers.poll_expired(cx) {
                    return this.expire(why);
                }
            }
        }
        r
    }
}

impl Drop for Completion {
    fn drop(&mut self) {
        // Dropped without a response body taking it over: the request future was
        // cancelled. `finish` is idempotent.
        self.finish(false);
    }
}

impl Drop for RespBody {
    fn drop(&mut self) {
        let complete = self.is_end_stream();
        self.finish(complete);
        if let Some(b) = self.held.take() {
            discard(b);
        }
    }
}

/// How much of an unforwarded HTTP/2 request body is read and thrown away after the
/// response, and for how long, before the stream is reset.
const DISCARD_BYTES: usize = 8 << 20;
const DISCARD_TIME: std::time::Duration = std::time::Duration::from_secs(5);

/// Read and drop what is left of an HTTP/2 request body the response did not need
/// (like NGINX's discarded request body), so a client still uploading receives the
/// response and finishes cleanly. Past [`DISCARD_BYTES`] or [`DISCARD_TIME`] the
/// body is dropped, which resets the stream with `NO_ERROR` (the response has been
/// sent by then).
fn discard(mut b: super::DownBody) {
    use http_body_util::BodyExt;
    if b.is_end_stream() {
        return;
    }
    let Ok(rt) = tokio::runtime::Handle::try_current() else {
        return;
    };
    rt.spawn(async move {
        let mut left = DISCARD_BYTES;
        let drain = async {
            while let Some(Ok(f)) = b.frame().await {
                let n = f.data_ref().map_or(0, Bytes::len);
                left = left.saturating_sub(n);
                if left == 0 {
                    break;
                }
            }
        };
        let _ = tokio::time::timeout(DISCARD_TIME, drain).await;
    });
}

/// Per-stream facts for the end of the stream.
pub struct Completion {
    /// When the request started: only on listeners that use durations
    /// ([`Runtime::timed`]); the wall clock only with an access log.
    start: Option<Instant>,
    start_wall: Option<SystemTime>,
    rt: Arc<Runtime>,
    conn: Arc<ConnCtx>,
    method: http::Method,
    version: http::Version,
    /// Original request path and query (access log only).
    path: String,
    authority: String,
    /// Request headers the access-log format names (only those), as received.
    req_headers: Vec<Option<http::HeaderValue>>,
    /// Response headers the access-log format names, as sent.
    pub resp_headers: Vec<Option<http::HeaderValue>>,
    /// Upstream tries (access log).
    pub attempts: u32,
    /// The last try's new upstream connection took this long (access log).
    pub upstream_connect: Option<Duration>,
    /// From the request start to the upstream's response headers (access log).
    pub response_head: Option<Duration>,
    pub request_id: Option<http::HeaderValue>,
    pub route: Option<Arc<str>>,
    pub cluster: Option<Arc<str>>,
    pub upstream: Option<Arc<str>>,
    pub flag: &'static str,
    pub status: u16,
    /// Request body bytes read here (a buffered body).
    pub bytes_in: u64,
    /// Request body bytes the upstream call streamed, when the access log wants them.
    pub bytes_in_stream: Option<Arc<AtomicU64>>,
    pub bytes_out: u64,
    pub active: Option<Attempt>,
    pub chain: Option<Arc<[Arc<dyn HttpFilter>]>>,
    pub sc: Option<StreamCtx>,
    pub close_connection: bool,
    /// Set for gRPC calls: the status seen, and the route's call metrics.
    pub grpc: Option<grpc::Call>,
    /// The request's span, on listeners with `tracing:`.
    pub trace: Option<crate::trace::Active>,
    finished: bool,
}

impl Completion {
    /// The request's authority as the target phase decided it, when it did not
    /// come from the URI or `Host` that `new` read (an HTTP/1.0 default).
    pub(super) fn set_authority(&mut self, authority: &str) {
        if self.rt.log.is_some() && self.authority != authority {
            self.authority.clear();
            self.authority.push_str(authority);
        }
    }

    pub(super) fn new(
        start: Option<Instant>,
        conn: &Arc<ConnCtx>,
        rt: Arc<Runtime>,
        parts: &http::request::Parts,
    ) -> Completion {
        let format = rt.log.as_ref().map(|l| &l.format);
        let logging = format.is_some();
        let s = |h: http::header::HeaderName| {
            parts
                .headers
                .get(h)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string()
        };
        Completion {
            start,
            start_wall: logging.then(SystemTime::now),
            conn: conn.clone(),
            method: parts.method.clone(),
            version: parts.version,
            path: if logging {
                parts
                    .uri
                    .path_and_query()
                    .map_or("/", |p| p.as_str())
                    .to_string()
            } else {
                String::new()
            },
            authority: if logging {
                parts
                    .uri
                    .authority()
                    .map(|a| a.to_string())
                    .unwrap_or_else(|| s(http::header::HOST))
            } else {
                String::new()
            },
            req_headers: format.map_or_else(Vec::new, |f| {
                f.req_headers
                    .iter()
                    .map(|n| parts.headers.get(n).cloned())
                    .collect()
            }),
            resp_headers: Vec::new(),
            attempts: 0,
            upstream_connect: None,
            response_head: None,
            rt,
            request_id: None,
            route: None,
            cluster: None,
            upstream: None,
            flag: "",
            status: 0,
            bytes_in: 0,
            bytes_in_stream: None,
            bytes_out: 0,
            active: None,
            chain: None,
            sc: None,
            close_connection: false,
            grpc: None,
            trace: None,
            finished: false,
        }
    }

    /// HTTP/1 while the proxy drains: tell the client to close after this response.
    pub fn closing_for_drain(&self) -> bool {
        self.version < http::Version::HTTP_2 && self.conn.draining.load(Ordering::Acquire)
    }

    /// Whether this stream will write an access log line.
    pub fn logging(&self) -> bool {
        self.rt.log.is_some()
    }

    /// The response headers the access-log format names.
    pub fn capture_response_headers(&mut self, headers: &http::HeaderMap) {
        if let Some(log) = &self.rt.log {
            self.resp_headers = log
                .format
                .resp_headers
                .iter()
                .map(|n| headers.get(n).cloned())
                .collect();
        }
    }

    /// Since the request started (when the stream is timed).
    pub fn since_start(&self) -> Option<Duration> {
        self.start.map(|s| s.elapsed())
    }

    pub fn listener_stats(&self) -> &ListenerStats {
        &self.rt.listener.stats
    }

    fn finish(&mut self, complete: bool) {
        if std::mem::replace(&mut self.finished, true) {
            return;
        }
        if !complete && self.flag.is_empty() {
            self.flag = if self.conn.drain_cut.load(Ordering::Relaxed) {
                "DT"
            } else {
                "DC"
            };
        }
        if self.chain.is_some() && self.sc.is_none() {
            // The stream ended before a response (client reset or disconnect while
            // waiting on the upstream): filters still learn about it.
            self.sc = Some(StreamCtx {
                route: self.route.clone().unwrap_or_else(|| Arc::from("")),
                cluster: self.cluster.clone(),
                method: self.method.clone(),
                downstream_tls: self.conn.tls,
                peer_sans: self.conn.peer_sans.clone(),
                grpc: self.grpc.as_ref().map(|c| c.kind),
                ..Default::default()
            });
        }
        self.active = None;
        // `start` is set whenever a filter chain, the access log or gRPC metrics use it.
        let elapsed = self.start.map(|s| s.elapsed());
        let grpc_code = self.grpc.as_ref().map(|call| {
            let code = call.final_code(self.status, self.flag);
            call.stats.record(code, elapsed);
            code
        });
        if let (Some(chain), Some(sc)) = (self.chain.take(), self.sc.as_mut()) {
            sc.duration = elapsed;
            sc.grpc_status = grpc_code;
            if sc.response_flag.is_none() && !self.flag.is_empty() {
                sc.response_flag = Some(self.flag);
            }
            for f in chain.iter() {
                f.on_complete(sc);
            }
        }
        if let Some(log) = &self.rt.log {
            let rec = Record {
                start_time: Some(self.start_wall.unwrap_or_else(SystemTime::now)),
                listener: &self.rt.listener.name,
                method: self.method.as_str(),
                path: &self.path,
                authority: &self.authority,
                protocol: super::proxy::protocol_name(self.version),
                status: self.status,
                bytes_received: self.bytes_in
                    + self
                        .bytes_in_stream
                        .as_ref()
                        .map_or(0, |c| c.load(Ordering::Relaxed)),
                bytes_sent: self.bytes_out,
                duration: elapsed,
                response_duration: self.response_head,
                upstream_connect: self.upstream_connect,
                route: self.route.as_deref().unwrap_or(""),
                cluster: self.cluster.as_deref().unwrap_or(""),
                upstream: self.upstream.as_deref().unwrap_or(""),
                attempts: self.attempts,
                response_flag: self.flag,
                request_id: self
                    .request_id
                    .as_ref()
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or(""),
                downstream: self.conn.remote_str(),
                req_headers: &self.req_headers,
                resp_headers: &self.resp_headers,
                grpc_status: grpc_code.map_or("", |c| c.name()),
                trace_id: self.trace.as_ref().map_or("", |t| t.trace_id_str()),
                ..self.conn.tls_record()
            };
            log.write(&rec);
        }
        self.end_span();
    }

    /// The span of a traced request ends with its stream.
    fn end_span(&mut self) {
        let Some(span) = self.trace.take() else {
            return;
        };
        span.finish(crate::trace::End {
            listener: &self.rt.listener.name,
            method: &self.method,
            route: self.route.as_ref(),
            cluster: self.cluster.as_ref(),
            upstream: self.upstream.as_ref(),
            status: self.status,
            flag: self.flag,
            bytes_in: self.bytes_in
                + self
                    .bytes_in_stream
                    .as_ref()
                    .map_or(0, |c| c.load(Ordering::Relaxed)),
            bytes_out: self.bytes_out,
        });
    }
}

/// `2026-11-25T23:59:59.123Z`.
pub fn rfc3339(t: SystemTime) -> String {
    let d = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs() as i64;
    let ms = d.subsec_millis();
    let days = secs.div_euclid(86400);
    let rem = secs.rem_euclid(86400);
    // Civil from days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = if month <= 2 { y + 1 } else { y };
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{ms:03}Z",
        rem / 3600,
        (rem / 60) % 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_rfc3339() {
        let t = SystemTime::UNIX_EPOCH + std::time::Duration::from_millis(1_764_115_199_123);
        assert_eq!(rfc3339(t), "2025-11-25T23:59:59.123Z");
        assert_eq!(rfc3339(SystemTime::UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
    }
}
