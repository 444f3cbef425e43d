//! The operator endpoints beside the Envoy basics: `/listeners`, `/certs`, `/live`,
//! `GET /logging`, `POST /drain_listeners`, `/reset_counters`, `/reopen_logs`, and
//! the probe-only `health_listener`.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use http::{Method, Request, StatusCode};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use serde_json::{json, Value};
use tokio::net::TcpListener;

use super::{json as json_rsp, text, Rsp};
use crate::server::Server;

/// The peer of an admin connection, put in each request's extensions (logged with
/// every mutation).
#[derive(Debug, Clone, Copy)]
pub struct Peer(pub SocketAddr);

/// Who asked, for the log line of a mutation.
pub fn peer(req: &Request<Incoming>) -> String {
    req.extensions()
        .get::<Peer>()
        .map_or_else(|| "unknown".to_string(), |p| p.0.to_string())
}

/// `GET /ready`: 200 while serving; 503 while draining or after `/healthcheck/fail`.
pub fn ready(server: &Server) -> Rsp {
    if server.draining.load(Ordering::SeqCst) {
        text(StatusCode::SERVICE_UNAVAILABLE, "DRAINING\n")
    } else if server.health_failed.load(Ordering::SeqCst) {
        text(StatusCode::SERVICE_UNAVAILABLE, "FAILED\n")
    } else {
        text(StatusCode::OK, "LIVE\n")
    }
}

/// `GET /live`: 200 while the process can answer at all (also while draining: a
/// draining proxy must not be restarted by its liveness probe).
pub fn live() -> Rsp {
    text(StatusCode::OK, "ALIVE\n")
}

/// `GET /listeners`.
pub fn listeners(server: &Server) -> Rsp {
    let draining = server.draining.load(Ordering::SeqCst);
    let v: Vec<Value> = server
        .running_listeners()
        .into_iter()
        .map(|(l, bound)| {
            json!({
                "name": &*l.name,
                "address": l.address.to_string(),
                "bound_address": bound.to_string(),
                "protocol": format!("{:?}", l.protocol).to_lowercase(),
                "tls": l.tls.is_some(),
                "accepting": !draining,
                "active_connections": l.stats.cx_active.get(),
                "access_log": l.access_log.as_ref().map(|a| a.path.as_str()),
            })
        })
        .collect();
    pretty(json!({ "listeners": v }))
}

/// `GET /certs`: every certificate in use, with who uses it.
pub fn certs(server: &Server) -> Rsp {
    let snap = server.snapshot.load_full();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
    let mut out = Vec::new();
    for l in &snap.listeners {
        if let Some(tls) = &l.tls {
            for c in tls.certs() {
                out.push(cert_json(&c, json!({ "listener": &*l.name }), now));
            }
        }
    }
    let mut names: Vec<&String> = snap.clusters.keys().collect();
    names.sort();
    for n in names {
        if let Some(tls) = snap.clusters.get(n).and_then(|c| c.connector.tls.as_ref()) {
            for c in tls.certs() {
                out.push(cert_json(&c, json!({ "cluster": n }), now));
            }
        }
    }
    pretty(json!({ "certificates": out }))
}

fn cert_json(c: &crate::tls::CertInfo, used_by: Value, now: i64) -> Value {
    let f = &c.facts;
    let at = |t: i64| {
        let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(t.max(0).unsigned_abs());
        crate::http::rfc3339(t)
    };
    let sans: Vec<String> = f
        .uri_sans
        .iter()
        .chain(f.dns_sans.iter())
        .cloned()
        .chain(f.ip_sans.iter().map(|ip| ip.to_string()))
        .collect();
    json!({
        "used_by": used_by,
        "role": c.role,
        "name": c.name,
        "path": c.path,
        "subject": f.subject,
        "issuer": f.issuer,
        "serial": f.serial,
        "sans": sans,
        "not_before": at(f.not_before),
        "not_after": at(f.not_after),
        "days_until_expiration": (f.not_after - now).div_euclid(86_400),
    })
}

/// `GET /logging`.
pub fn logging(server: &Server) -> Rsp {
    let f = server
        .log_filter
        .lock()
        .map(|f| f.clone())
        .unwrap_or_default();
    text(StatusCode::OK, format!("log level: {f}\n"))
}

/// `POST /drain_listeners`: stop accepting and drain, without exiting.
pub fn drain_listeners(server: &Arc<Server>) -> Rsp {
    if server.draining.load(Ordering::SeqCst) {
        return text(StatusCode::OK, "OK, already draining\n");
    }
    let s = server.clone();
    tokio::spawn(async move { s.drain().await });
    text(
        StatusCode::OK,
        "OK, draining; listeners stopped accepting, the process keeps running\n",
    )
}

/// `POST /reset_counters`.
pub fn reset_counters(server: &Server) -> Rsp {
    server.stats.reset_counters();
    text(StatusCode::OK, "OK, counters reset\n")
}

/// `POST /reopen_logs`.
pub async fn reopen_logs(server: &Arc<Server>) -> Rsp {
    let s = server.clone();
    let results = tokio::task::spawn_blocking(move || s.reopen_logs())
        .await
        .unwrap_or_default();
    let mut body = String::new();
    let mut failed = false;
    for (path, r) in &results {
        match r {
            Ok(()) => body.push_str(&format!("reopened {path}\n")),
            Err(e) => {
                failed = true;
                body.push_str(&format!("cannot reopen {path}: {e}\n"));
            }
        }
    }
    if results.is_empty() {
        body.push_str("OK, no access-log files are open\n");
    }
    let status = if failed {
        StatusCode::INTERNAL_SERVER_ERROR
    } else {
        StatusCode::OK
    };
    text(status, body)
}

fn pretty(v: Value) -> Rsp {
    json_rsp(
        StatusCode::OK,
        serde_json::to_string_pretty(&v).unwrap_or_default(),
    )
}

/// Serve the probe-only `health_listener`: `GET /ready` and `GET /live`, nothing
/// else, so kubelet can reach them on the pod IP while the admin API stays on
/// loopback.
pub async fn serve_health(listener: TcpListener, server: Arc<Server>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            continue;
        };
        let server = server.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req: Request<Incoming>| {
                let s = server.clone();
                async move { Ok::<_, Infallible>(health(&req, &s)) }
            });
            let mut b = hyper::server::conn::http1::Builder::new();
            b.timer(TokioTimer::new())
                .header_read_timeout(std::time::Duration::from_secs(10));
            let _ = b.serve_connection(TokioIo::new(stream), svc).await;
        });
    }
}

fn health(req: &Request<Incoming>, server: &Server) -> Rsp {
    let get = matches!(*req.method(), Method::GET | Method::HEAD);
    match (req.uri().path(), get) {
        ("/ready", true) => ready(server),
        ("/live", true) => live(),
        ("/ready" | "/live", false) => super::not_allowed("only GET\n".into(), "GET, HEAD"),
        _ => text(
            StatusCode::NOT_FOUND,
            "this is the health listener: GET /ready or /live\n",
        ),
    }
}
