//! Access logs: one line per finished stream, formatted on the worker that served it
//! and handed to a writer thread through a bounded channel, so a slow disk or pipe
//! never blocks the data path (lines are dropped and counted instead).

use std::collections::HashMap;
use std::io::Write;
use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};

use prometheus::IntCounter;

use crate::config::raw::AccessLogFormat;
use crate::config::snapshot::AccessLogCfg;
use crate::stats::{Stats, ACCESS_LOG_DROPPED};

/// Everything one line says.
#[derive(Debug, Default)]
pub struct Record<'a> {
    pub start_time: String,
    pub method: &'a str,
    pub path: &'a str,
    pub protocol: &'a str,
    pub status: u16,
    pub bytes_received: u64,
    pub bytes_sent: u64,
    pub duration_ms: f64,
    pub route: &'a str,
    pub cluster: &'a str,
    pub upstream: &'a str,
    pub response_flag: &'a str,
    pub request_id: &'a str,
    pub authority: &'a str,
    pub downstream: &'a str,
    pub user_agent: &'a str,
    pub peer_san: &'a str,
    /// 32 hex digits on listeners with `tracing:`, else empty.
    pub trace_id: &'a str,
}

impl Record<'_> {
    pub fn json(&self) -> String {
        let v = serde_json::json!({
            "start_time": self.start_time,
            "method": self.method,
            "path": self.path,
            "protocol": self.protocol,
            "status": self.status,
            "bytes_received": self.bytes_received,
            "bytes_sent": self.bytes_sent,
            "duration_ms": (self.duration_ms * 1000.0).round() / 1000.0,
            "route": self.route,
            "cluster": self.cluster,
            "upstream": self.upstream,
            "response_flags": if self.response_flag.is_empty() { "-" } else { self.response_flag },
            "request_id": self.request_id,
            "authority": self.authority,
            "downstream_remote": self.downstream,
            "user_agent": self.user_agent,
            "peer_san": self.peer_san,
            "trace_id": self.trace_id,
        });
        v.to_string()
    }

    pub fn text(&self) -> String {
        fn d(s: &str) -> &str {
            if s.is_empty() {
                "-"
            } else {
                s
            }
        }
        format!(
            "[{}] \"{} {} {}\" {} {} {} {} {:.3} \"{}\" \"{}\" \"{}\" \"{}\" \"{}\" \"{}\" \"{}\"",
            self.start_time,
            self.method,
            self.path.escape_debug(),
            self.protocol,
            self.status,
            d(self.response_flag),
            self.bytes_received,
            self.bytes_sent,
            self.duration_ms,
            d(self.upstream),
            d(self.route),
            d(self.cluster),
            d(self.request_id),
            d(self.authority).escape_debug(),
            d(self.downstream),
            d(self.user_agent).escape_debug(),
        )
    }
}

/// A log destination with its writer thread.
pub struct Sink {
    pub format: AccessLogFormat,
    tx: SyncSender<String>,
    dropped: IntCounter,
}

impl std::fmt::Debug for Sink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sink")
    }
}

impl Sink {
    pub fn write(&self, rec: &Record<'_>) {
        let line = match self.format {
            AccessLogFormat::Json => rec.json(),
            AccessLogFormat::Text => rec.text(),
        };
        match self.tx.try_send(line) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => self.dropped.inc(),
        }
    }
}

/// Sinks by destination, shared across reloads so a file is opened once.
#[derive(Default)]
pub struct Sinks {
    by_path: Mutex<HashMap<(String, bool), Arc<Sink>>>,
}

impl Sinks {
    pub fn get(
        &self,
        cfg: &AccessLogCfg,
        listener: &str,
        stats: &Stats,
    ) -> std::io::Result<Arc<Sink>> {
        let key = (cfg.path.clone(), cfg.format == AccessLogFormat::Json);
        let mut map = self.by_path.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(s) = map.get(&key) {
            return Ok(s.clone());
        }
        let mut out: Box<dyn Write + Send> = if cfg.path == "stdout" {
            Box::new(std::io::stdout())
        } else {
            Box::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&cfg.path)?,
            )
        };
        let (tx, rx) = sync_channel::<String>(16 * 1024);
        std::thread::Builder::new()
            .name("access-log".into())
            .spawn(move || {
                while let Ok(line) = rx.recv() {
                    let mut buf = line.into_bytes();
                    buf.push(b'\n');
                    // Batch whatever else is queued into one write.
                    while let Ok(more) = rx.try_recv() {
                        buf.extend_from_slice(more.as_bytes());
                        buf.push(b'\n');
                        if buf.len() > 64 * 1024 {
                            break;
                        }
                    }
                    if out.write_all(&buf).and_then(|()| out.flush()).is_err() {
                        // Nothing sensible to do but keep draining.
                    }
                }
            })?;
        let dropped = stats
            .counter_vec(
                ACCESS_LOG_DROPPED,
                "Access log lines dropped because the writer fell behind",
                &["listener"],
            )
            .with_label_values(&[listener]);
        let sink = Arc::new(Sink {
            format: cfg.format,
            tx,
            dropped,
        });
        map.insert(key, sink.clone());
        Ok(sink)
    }
}
