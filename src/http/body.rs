//! The response body handed to the client: streamed from the upstream or a local
//! reply, carrying the stream's [`Completion`], which runs exactly once when the body
//! ends, fails or is dropped (client gone): filters' `on_complete`, the access log.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Instant, SystemTime};

use attache_filters::{HttpFilter, StreamCtx};
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};

use super::{ConnCtx, Runtime};
use crate::accesslog::Record;
use crate::stats::ListenerStats;
use crate::upstream::h1::BoxError;
use crate::upstream::{ActiveGuard, UpstreamBody};

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
        }
    }

    pub fn upstream(b: UpstreamBody) -> RespBody {
        RespBody {
            inner: Inner::Upstream(b),
            done: None,
            held: None,
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
        let r = match &mut this.inner {
            Inner::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            Inner::Upstream(b) => Pin::new(b).poll_frame(cx),
        };
        match &r {
            Poll::Ready(Some(Ok(f))) => {
                if let (Some(d), Some(data)) = (this.done.as_mut(), f.data_ref()) {
                    d.bytes_out += data.len() as u64;
                }
                if this.is_end_stream() {
                    this.finish(true);
                }
            }
            Poll::Ready(Some(Err(_))) => {
                if let Some(d) = this.done.as_mut() {
                    if d.flag.is_empty() {
                        // Headers already went out: not a local reply, but the log and
                        // filters learn the stream broke upstream.
                        d.flag = "UR";
                    }
                }
                this.finish(false);
            }
            Poll::Ready(None) => this.finish(true),
            Poll::Pending => {}
        }
        r
    }

    fn is_end_stream(&self) -> bool {
        match &self.inner {
            Inner::Full(b) => b.is_none(),
            Inner::Upstream(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Inner::Full(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
            Inner::Upstream(b) => b.size_hint(),
        }
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
    user_agent: String,
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
    pub active: Option<ActiveGuard>,
    pub chain: Option<Arc<[Arc<dyn HttpFilter>]>>,
    pub sc: Option<StreamCtx>,
    pub close_connection: bool,
    /// The request's span, on listeners with `tracing:`.
    pub trace: Option<crate::trace::Active>,
    finished: bool,
}

impl Completion {
    pub(super) fn new(
        start: Option<Instant>,
        conn: &Arc<ConnCtx>,
        rt: Arc<Runtime>,
        parts: &http::request::Parts,
    ) -> Completion {
        let logging = rt.sink.is_some();
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
            user_agent: if logging {
                s(http::header::USER_AGENT)
            } else {
                String::new()
            },
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
        self.rt.sink.is_some()
    }

    pub fn listener_stats(&self) -> &ListenerStats {
        &self.rt.listener.stats
    }

    fn finish(&mut self, complete: bool) {
        if std::mem::replace(&mut self.finished, true) {
            return;
        }
        if !complete && self.flag.is_empty() {
            self.flag = "DC";
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
                ..Default::default()
            });
        }
        self.active = None;
        // `start` is set whenever a filter chain or the access log is configured.
        let elapsed = self.start.map(|s| s.elapsed());
        if let (Some(chain), Some(sc)) = (self.chain.take(), self.sc.as_mut()) {
            sc.duration = elapsed;
            if sc.response_flag.is_none() && !self.flag.is_empty() {
                sc.response_flag = Some(self.flag);
            }
            for f in chain.iter() {
                f.on_complete(sc);
            }
        }
        if let Some(sink) = &self.rt.sink {
            let trace_id = self.trace.as_ref().map_or("", |t| t.trace_id_str());
            let peer = self
                .conn
                .peer_sans
                .first()
                .map(String::as_str)
                .unwrap_or("");
            let rec = Record {
                start_time: rfc3339(self.start_wall.unwrap_or_else(SystemTime::now)),
                method: self.method.as_str(),
                path: &self.path,
                protocol: super::proxy::protocol_name(self.version),
                status: self.status,
                bytes_received: self.bytes_in
                    + self
                        .bytes_in_stream
                        .as_ref()
                        .map_or(0, |c| c.load(Ordering::Relaxed)),
                bytes_sent: self.bytes_out,
                duration_ms: elapsed.unwrap_or_default().as_secs_f64() * 1000.0,
                route: self.route.as_deref().unwrap_or(""),
                cluster: self.cluster.as_deref().unwrap_or(""),
                upstream: self.upstream.as_deref().unwrap_or(""),
                response_flag: self.flag,
                request_id: self
                    .request_id
                    .as_ref()
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or(""),
                authority: &self.authority,
                downstream: self.conn.remote_str(),
                user_agent: &self.user_agent,
                peer_san: peer,
                trace_id,
            };
            sink.write(&rec);
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
