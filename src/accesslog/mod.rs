//! Access logs: one line per finished stream, rendered on the worker that served it
//! by the listener's compiled [`Format`] and handed to a writer thread through a
//! bounded channel, so a slow disk or pipe never blocks the data path (lines are
//! dropped and counted instead).
//!
//! A destination (`stdout`, `stderr` or a file path) has one writer thread, shared by
//! every listener that names it and by successive configs; it closes its file when
//! the last config using it is gone. Files reopen on [`Sinks::reopen`] (SIGUSR1 and
//! `POST /reopen_logs`), for rotation by rename.

pub mod format;
mod writer;

use std::collections::HashMap;
use std::sync::mpsc::{sync_channel, Sender, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, SystemTime};

use prometheus::IntCounter;

pub use format::Format;
use writer::Msg;

use crate::config::snapshot::AccessLogCfg;
use crate::stats::{Stats, ACCESS_LOG_DROPPED, ACCESS_LOG_WRITE_ERRORS};

/// Everything an operator can read about one stream. Empty strings are absent.
#[derive(Debug, Default)]
pub struct Record<'a> {
    pub start_time: Option<SystemTime>,
    pub listener: &'a str,
    pub method: &'a str,
    /// Path and query as received.
    pub path: &'a str,
    pub authority: &'a str,
    pub protocol: &'a str,
    pub status: u16,
    pub bytes_received: u64,
    pub bytes_sent: u64,
    /// Request start to the end of the response (or the stream).
    pub duration: Option<Duration>,
    /// Request start to the upstream's response headers.
    pub response_duration: Option<Duration>,
    /// The upstream connect of the last try, when it dialed a new connection.
    pub upstream_connect: Option<Duration>,
    pub route: &'a str,
    pub cluster: &'a str,
    pub upstream: &'a str,
    /// Upstream tries (1 + retries); 0 when nothing was sent upstream.
    pub attempts: u32,
    pub response_flag: &'a str,
    pub request_id: &'a str,
    pub downstream: &'a str,
    pub peer_san: &'a str,
    /// The gRPC status name (`PERMISSION_DENIED`) of a gRPC call; empty otherwise.
    pub grpc_status: &'a str,
    /// The trace id, 32 hex digits, on listeners with `tracing:`; empty otherwise.
    pub trace_id: &'a str,
    pub peer_uri_san: &'a str,
    pub peer_dns_san: &'a str,
    pub peer_subject: &'a str,
    pub tls_version: &'a str,
    pub tls_cipher: &'a str,
    pub sni: &'a str,
    /// Values of [`Format::req_headers`], in that order.
    pub req_headers: &'a [Option<http::HeaderValue>],
    /// Values of [`Format::resp_headers`], in that order.
    pub resp_headers: &'a [Option<http::HeaderValue>],
}

/// One destination's writer thread.
pub struct Sink {
    path: String,
    tx: SyncSender<Msg>,
}

/// One listener's access log: its format, its destination and its counters.
pub struct AccessLog {
    pub format: Arc<Format>,
    sink: Arc<Sink>,
    dropped: IntCounter,
    errors: IntCounter,
}

impl std::fmt::Debug for AccessLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessLog")
            .field("path", &self.sink.path)
            .finish_non_exhaustive()
    }
}

impl AccessLog {
    pub fn write(&self, rec: &Record<'_>) {
        let mut line = String::with_capacity(384);
        self.format.render(rec, &mut line);
        match self.sink.tx.try_send(Msg::Line(line, self.errors.clone())) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => self.dropped.inc(),
        }
    }
}

/// Access-log destinations by path, shared across listeners and reloads so a file is
/// opened once; a destination no config uses any more closes.
#[derive(Default)]
pub struct Sinks {
    by_path: Mutex<HashMap<String, Weak<Sink>>>,
}

/// Lines a writer may have queued.
const QUEUE: usize = 16 * 1024;

impl Sinks {
    /// The access log of `listener` as configured by `cfg`.
    pub fn get(
        &self,
        cfg: &AccessLogCfg,
        listener: &str,
        stats: &Stats,
    ) -> std::io::Result<AccessLog> {
        let sink = self.sink(&cfg.path)?;
        let dropped = stats
            .counter_vec(
                ACCESS_LOG_DROPPED,
                "Access log lines dropped because the writer fell behind",
                &["listener"],
            )
            .with_label_values(&[listener]);
        let errors = stats
            .counter_vec(
                ACCESS_LOG_WRITE_ERRORS,
                "Access log lines that could not be written, or went to a file no longer at its path",
                &["listener"],
            )
            .with_label_values(&[listener]);
        Ok(AccessLog {
            format: cfg.format.clone(),
            sink,
            dropped,
            errors,
        })
    }

    fn sink(&self, path: &str) -> std::io::Result<Arc<Sink>> {
        let mut map = self.by_path.lock().unwrap_or_else(|p| p.into_inner());
        map.retain(|_, w| w.strong_count() > 0);
        if let Some(s) = map.get(path).and_then(Weak::upgrade) {
            return Ok(s);
        }
        let out = writer::Out::open(path)?;
        let (tx, rx) = sync_channel::<Msg>(QUEUE);
        std::thread::Builder::new()
            .name("access-log".into())
            .spawn(move || writer::run(rx, out))?;
        let sink = Arc::new(Sink {
            path: path.to_string(),
            tx,
        });
        map.insert(path.to_string(), Arc::downgrade(&sink));
        Ok(sink)
    }

    /// Reopen every file destination in use (after a rename by logrotate); each
    /// path with its result. Blocks until every writer has answered (or 5 s).
    pub fn reopen(&self) -> Vec<(String, Result<(), String>)> {
        self.ask(Msg::Reopen, false)
    }

    /// Wait until every line queued so far is written (before the process exits).
    pub fn flush(&self) {
        self.ask(Msg::Flush, true);
    }

    /// Send a control message to every writer (streams too, with `streams`) and
    /// collect the answers.
    fn ask(
        &self,
        msg: fn(Sender<Result<(), String>>) -> Msg,
        streams: bool,
    ) -> Vec<(String, Result<(), String>)> {
        let sinks: Vec<Arc<Sink>> = {
            let map = self.by_path.lock().unwrap_or_else(|p| p.into_inner());
            map.values().filter_map(Weak::upgrade).collect()
        };
        let mut out = Vec::new();
        for s in sinks {
            if !streams && writer::is_stream(&s.path) {
                continue;
            }
            let (ack, done) = std::sync::mpsc::channel();
            let r = match s.tx.send(msg(ack)) {
                Err(_) => Err("the writer has stopped".to_string()),
                Ok(()) => done
                    .recv_timeout(Duration::from_secs(5))
                    .unwrap_or_else(|_| Err("the writer did not answer within 5s".to_string())),
            };
            out.push((s.path.clone(), r));
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// Destinations with an open writer (for tests and `/listeners`).
    pub fn open_paths(&self) -> Vec<String> {
        let map = self.by_path.lock().unwrap_or_else(|p| p.into_inner());
        let mut v: Vec<String> = map
            .iter()
            .filter(|(_, w)| w.strong_count() > 0)
            .map(|(p, _)| p.clone())
            .collect();
        v.sort();
        v
    }
}

/// Check at validate time that `path` can be opened for append: an existing file
/// must be writable, a new one needs a writable directory. `stdout` and `stderr`
/// always can.
pub fn check_path(path: &str) -> Result<(), String> {
    writer::check(path)
}

#[cfg(test)]
mod tests;
