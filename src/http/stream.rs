//! The one record of a downstream HTTP stream: what the filters read and write
//! ([`StreamCtx`]) and what the end of the stream reports (access log, span, gRPC
//! metrics, `on_complete`). The request phases fill it in; the response body carries
//! it and completes it exactly once, when the body ends, fails or is dropped.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use attache_filters::{HttpFilter, StreamCtx};

use super::grpc;
use super::{ConnCtx, Runtime};
use crate::accesslog::Record;
use crate::stats::ListenerStats;
use crate::upstream::Attempt;

/// A filter chain, in order.
pub type Chain = Arc<[Arc<dyn HttpFilter>]>;

/// Per-stream facts, from the request head to the end of the response body. Boxed:
/// the request future and the response body each hold only a pointer to it.
pub struct Stream {
    /// What filters see; its `route`, `cluster`, `status` and `method` are the
    /// stream's (the access log and span read them from here too).
    pub sc: StreamCtx,
    /// The chain whose `on_response` and `on_complete` run: the route's, or the
    /// listener's when no route matched (set when the response is made).
    pub chain: Option<Chain>,
    /// When the request started: only on listeners that use durations
    /// ([`Runtime::timed`]); the wall clock only with an access log.
    start: Option<Instant>,
    start_wall: Option<SystemTime>,
    rt: Arc<Runtime>,
    conn: Arc<ConnCtx>,
    version: http::Version,
    /// Original request path and query (access log only).
    path: String,
    authority: String,
    /// Request headers the access-log format names (only those), as received.
    req_headers: Vec<Option<http::HeaderValue>>,
    /// Response headers the access-log format names, as sent.
    resp_headers: Vec<Option<http::HeaderValue>>,
    /// Upstream tries (access log).
    pub attempts: u32,
    /// The last try's new upstream connection took this long (access log).
    pub upstream_connect: Option<Duration>,
    /// From the request start to the upstream's response headers (access log).
    pub response_head: Option<Duration>,
    pub request_id: Option<http::HeaderValue>,
    pub upstream: Option<Arc<str>>,
    pub flag: &'static str,
    /// Request body bytes read here (a buffered body).
    pub bytes_in: u64,
    /// Request body bytes the upstream call streamed, when the access log wants them.
    pub bytes_in_stream: Option<Arc<AtomicU64>>,
    pub bytes_out: u64,
    /// The endpoint's active-request count, held until the stream ends.
    pub active: Option<Attempt>,
    pub close_connection: bool,
    /// Set for gRPC calls: the status seen, and the route's call metrics.
    pub grpc: Option<grpc::Call>,
    /// The request's span, on listeners with `tracing:` (rare: boxed).
    pub trace: Option<Box<crate::trace::Active>>,
    finished: bool,
}

impl Stream {
    /// The record of a request whose head is `parts`, on `conn`, served by `rt`.
    pub(super) fn open(
        conn: &Arc<ConnCtx>,
        rt: Arc<Runtime>,
        parts: &http::request::Parts,
    ) -> Box<Stream> {
        let grpc_kind = grpc::classify(&parts.headers);
        // The clock is read only when something uses the stream's duration.
        let start = (rt.timed || grpc_kind.is_some()).then(Instant::now);
        let format = rt.log.as_ref().map(|l| &l.format);
        let logging = format.is_some();
        let grpc = match (grpc_kind, rt.listener.http.as_ref()) {
            (Some(k), Some(http)) => Some(grpc::Call::new(k, http.grpc_no_route.clone())),
            _ => None,
        };
        // Allocated first and written in place (`Box::new` would build the
        // record on the stack and copy it in).
        Box::write(
            Box::new_uninit(),
            Stream {
                sc: StreamCtx {
                    method: parts.method.clone(),
                    downstream_tls: conn.tls,
                    peer_sans: conn.peer_sans.clone(),
                    grpc: grpc_kind,
                    ..Default::default()
                },
                chain: None,
                start,
                start_wall: logging.then(SystemTime::now),
                conn: conn.clone(),
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
                    authority_of(parts)
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
                upstream: None,
                flag: "",
                bytes_in: 0,
                bytes_in_stream: None,
                bytes_out: 0,
                active: None,
                close_connection: false,
                grpc,
                trace: None,
                finished: false,
            },
        )
    }

    /// The request's authority as the target phase decided it, when it did not
    /// come from the URI or `Host` that `open` read (an HTTP/1.0 default).
    pub(super) fn set_authority(&mut self, authority: &str) {
        if self.rt.log.is_some() && self.authority != authority {
            self.authority.clear();
            self.authority.push_str(authority);
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

    /// The listener's HTTP settings the stream is served with.
    pub(super) fn http(&self) -> Option<&crate::config::snapshot::HttpSettings> {
        self.rt.listener.http.as_ref()
    }

    pub fn listener_stats(&self) -> &ListenerStats {
        &self.rt.listener.stats
    }

    /// The final status (0 before a response was made).
    pub fn status(&self) -> u16 {
        self.sc.status.map_or(0, |s| s.as_u16())
    }

    /// Request body bytes, read here or streamed upstream.
    fn bytes_in(&self) -> u64 {
        self.bytes_in
            + self
                .bytes_in_stream
                .as_ref()
                .map_or(0, |c| c.load(Ordering::Relaxed))
    }

    /// The end of the stream: `complete` when the response body went out whole.
    /// Idempotent.
    pub(super) fn finish(&mut self, complete: bool) {
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
        self.active = None;
        // `start` is set whenever a filter chain, the access log or gRPC metrics use it.
        let elapsed = self.start.map(|s| s.elapsed());
        let grpc_code = self.grpc.as_ref().map(|call| {
            let code = call.final_code(self.status(), self.flag);
            call.stats.record(code, elapsed);
            code
        });
        if let Some(chain) = self.chain.take() {
            let sc = &mut self.sc;
            sc.duration = elapsed;
            sc.grpc_status = grpc_code;
            if sc.response_flag.is_none() && !self.flag.is_empty() {
                sc.response_flag = Some(self.flag);
            }
            for f in chain.iter() {
                f.on_complete(sc);
            }
        }
        self.log(elapsed, grpc_code);
        self.end_span();
    }

    fn log(&self, elapsed: Option<Duration>, grpc_code: Option<attache_filters::grpc::Code>) {
        let Some(log) = &self.rt.log else {
            return;
        };
        let rec = Record {
            start_time: Some(self.start_wall.unwrap_or_else(SystemTime::now)),
            listener: &self.rt.listener.name,
            method: self.sc.method.as_str(),
            path: &self.path,
            authority: &self.authority,
            protocol: super::proxy::protocol_name(self.version),
            status: self.status(),
            bytes_received: self.bytes_in(),
            bytes_sent: self.bytes_out,
            duration: elapsed,
            response_duration: self.response_head,
            upstream_connect: self.upstream_connect,
            route: &self.sc.route,
            cluster: self.sc.cluster.as_deref().unwrap_or(""),
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

    /// The span of a traced request ends with its stream.
    fn end_span(&mut self) {
        let Some(span) = self.trace.take().map(|b| *b) else {
            return;
        };
        let route = Some(&self.sc.route).filter(|r| !r.is_empty());
        span.finish(crate::trace::End {
            listener: &self.rt.listener.name,
            method: &self.sc.method,
            route,
            cluster: self.sc.cluster.as_ref(),
            upstream: self.upstream.as_ref(),
            status: self.status(),
            flag: self.flag,
            bytes_in: self.bytes_in(),
            bytes_out: self.bytes_out,
        });
    }
}

/// The authority as the request carried it (absolute form, else `Host`), for the log.
fn authority_of(parts: &http::request::Parts) -> String {
    match parts.uri.authority() {
        Some(a) => a.to_string(),
        None => parts
            .headers
            .get(http::header::HOST)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string(),
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        // Dropped without a response body taking it over: the request future was
        // cancelled. `finish` is idempotent.
        self.finish(false);
    }
}
