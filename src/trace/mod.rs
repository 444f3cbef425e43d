//! Distributed tracing: trace context propagation (W3C and B3) and one span per
//! request per hop, exported over OTLP/HTTP in the background.
//!
//! The proxy is a hop: it joins the caller's trace (or starts one), creates its own
//! span id, and sends that id upstream as the parent. Spans go into a bounded queue
//! that a background task drains in batches; a full queue drops (and counts) spans,
//! so the data path never waits on the collector.

pub mod context;
mod export;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use http::HeaderMap;
use prometheus::IntCounter;
use tokio::sync::mpsc;

use crate::stats::Stats;
use context::{Extracted, Format};

pub const TRACING_SPANS_TOTAL: &str = "attache_tracing_spans_total";

/// `tracing:` compiled.
#[derive(Debug, Clone, PartialEq)]
pub struct TraceCfg {
    pub collector: std::net::SocketAddr,
    pub path: String,
    /// Probability that a request without a sampling decision starts a sampled trace.
    pub sampling: f64,
    pub service_name: String,
    pub batch_size: usize,
    pub flush_interval: Duration,
    pub max_queue: usize,
    pub export_timeout: Duration,
}

/// `attache_tracing_spans_total{result}`.
#[derive(Clone)]
pub struct TraceStats {
    pub exported: IntCounter,
    pub dropped: IntCounter,
    pub failed: IntCounter,
}

impl TraceStats {
    fn new(stats: &Stats) -> TraceStats {
        let v = stats.counter_vec(
            TRACING_SPANS_TOTAL,
            "Spans by what became of them: exported, dropped (queue full), failed (export error)",
            &["result"],
        );
        TraceStats {
            exported: v.with_label_values(&["exported"]),
            dropped: v.with_label_values(&["dropped"]),
            failed: v.with_label_values(&["failed"]),
        }
    }
}

/// One finished span, as queued for export.
#[derive(Debug)]
pub struct SpanData {
    pub trace_id: u128,
    pub span_id: u64,
    pub parent: Option<u64>,
    pub tracestate: Option<String>,
    pub name: Arc<str>,
    pub start: SystemTime,
    pub duration: Duration,
    pub listener: Arc<str>,
    pub method: http::Method,
    pub path: String,
    pub route: Option<Arc<str>>,
    pub cluster: Option<Arc<str>>,
    pub upstream: Option<Arc<str>>,
    pub status: u16,
    pub flag: &'static str,
    pub bytes_in: u64,
    pub bytes_out: u64,
}

/// The tracer of one config snapshot. The export task starts with the first span
/// and ends (after a last flush) when the snapshot is gone and the queue closes.
pub struct Tracer {
    cfg: TraceCfg,
    tx: mpsc::Sender<SpanData>,
    rx: Mutex<Option<mpsc::Receiver<SpanData>>>,
    started: AtomicBool,
    stats: TraceStats,
}

impl std::fmt::Debug for Tracer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tracer").field("cfg", &self.cfg).finish()
    }
}

/// A request's span while it runs (only what the end of the stream needs).
#[derive(Debug)]
pub struct Active {
    tracer: Arc<Tracer>,
    pub trace_id: u128,
    span_id: u64,
    parent: Option<u64>,
    /// Recorded and exported; otherwise only propagated.
    sampled: bool,
    tracestate: Option<String>,
    start: SystemTime,
    clock: Instant,
    path: String,
    trace_hex: [u8; 32],
}

/// What the end of a stream knows about it.
pub struct End<'a> {
    pub listener: &'a Arc<str>,
    pub method: &'a http::Method,
    pub route: Option<&'a Arc<str>>,
    pub cluster: Option<&'a Arc<str>>,
    pub upstream: Option<&'a Arc<str>>,
    pub status: u16,
    pub flag: &'static str,
    pub bytes_in: u64,
    pub bytes_out: u64,
}

impl Tracer {
    pub fn new(cfg: TraceCfg, stats: &Stats) -> Arc<Tracer> {
        let (tx, rx) = mpsc::channel(cfg.max_queue.max(1));
        Arc::new(Tracer {
            cfg,
            tx,
            rx: Mutex::new(Some(rx)),
            started: AtomicBool::new(false),
            stats: TraceStats::new(stats),
        })
    }

    pub fn cfg(&self) -> &TraceCfg {
        &self.cfg
    }

    /// Join or start the request's trace and rewrite its context headers for the
    /// upstream, with a new span id of ours as the parent.
    pub fn start(self: &Arc<Tracer>, headers: &mut HeaderMap, path: &str) -> Active {
        let (trace_id, parent, sampled, format, w3c) = match context::extract(headers) {
            Extracted::Join(inc) => {
                let sampled = inc.sampled.unwrap_or_else(|| self.roll());
                (inc.trace_id, Some(inc.parent), sampled, inc.format, inc.w3c)
            }
            Extracted::New { sampled } => {
                let sampled = sampled.unwrap_or_else(|| self.roll());
                (new_trace_id(), None, sampled, Format::W3c, false)
            }
        };
        let tracestate = (w3c && sampled)
            .then(|| headers.get(&context::TRACESTATE))
            .flatten()
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let span_id = new_span_id();
        context::inject(headers, format, trace_id, span_id, parent, sampled, w3c);
        Active {
            tracer: self.clone(),
            trace_id,
            span_id,
            parent,
            sampled,
            tracestate,
            start: SystemTime::now(),
            clock: Instant::now(),
            path: if sampled {
                path.to_string()
            } else {
                String::new()
            },
            trace_hex: context::trace_id_hex(trace_id),
        }
    }

    fn roll(&self) -> bool {
        self.cfg.sampling >= 1.0 || fastrand::f64() < self.cfg.sampling
    }

    /// Queue a finished span; never waits. A full queue drops it (counted).
    fn submit(&self, span: SpanData) {
        if !self.started.load(Ordering::Acquire) {
            self.start_export();
        }
        if self.tx.try_send(span).is_err() {
            self.stats.dropped.inc();
        }
    }

    fn start_export(&self) {
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let rx = match self.rx.lock() {
            Ok(mut g) => g.take(),
            Err(_) => None,
        };
        if let Some(rx) = rx {
            self.started.store(true, Ordering::Release);
            rt.spawn(export::run(self.cfg.clone(), rx, self.stats.clone()));
        }
    }
}

impl Active {
    /// The trace id as 32 hex digits, for the access log.
    pub fn trace_id_str(&self) -> &str {
        std::str::from_utf8(&self.trace_hex).unwrap_or("")
    }

    /// End the span: queue it for export when sampled.
    pub fn finish(self, end: End<'_>) {
        if !self.sampled {
            return;
        }
        let name = end
            .route
            .filter(|r| !r.is_empty())
            .unwrap_or(end.listener)
            .clone();
        self.tracer.submit(SpanData {
            trace_id: self.trace_id,
            span_id: self.span_id,
            parent: self.parent,
            tracestate: self.tracestate,
            name,
            start: self.start,
            duration: self.clock.elapsed(),
            listener: end.listener.clone(),
            method: end.method.clone(),
            path: self.path,
            route: end.route.cloned(),
            cluster: end.cluster.cloned(),
            upstream: end.upstream.cloned(),
            status: end.status,
            flag: end.flag,
            bytes_in: end.bytes_in,
            bytes_out: end.bytes_out,
        });
    }
}

fn new_trace_id() -> u128 {
    loop {
        let id = fastrand::u128(..);
        if id != 0 {
            return id;
        }
    }
}

fn new_span_id() -> u64 {
    loop {
        let id = fastrand::u64(..);
        if id != 0 {
            return id;
        }
    }
}
