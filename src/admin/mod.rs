//! The admin endpoint: stats, clusters, config dump, readiness, server info, and the
//! POST-only operations (health check toggles, drain and exit, log level, reload).
//! Plain HTTP/1.1 on `admin.address`; runs beside the data path, never blocks it.

use std::convert::Infallible;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;

use crate::server::Server;

pub mod guard;
pub mod ops;

type Rsp = Response<Full<Bytes>>;

const GET_PATHS: &[(&str, &str)] = &[
    ("/", "this index"),
    (
        "/stats",
        "all metrics, `name{labels}: value`; ?filter=REGEX, ?format=json",
    ),
    (
        "/stats/prometheus",
        "all metrics in Prometheus text exposition format",
    ),
    (
        "/clusters",
        "every cluster endpoint with its counters; ?format=json",
    ),
    (
        "/config_dump",
        "the effective config as JSON, secrets redacted",
    ),
    (
        "/ready",
        "200 while serving, 503 while draining or failing health checks",
    ),
    ("/server_info", "version, uptime, state, config hash"),
    (
        "/explain",
        "the route for ?listener=&host=&path=&method=&header=name:value; ?format=json",
    ),
    (
        "/sli",
        "request SLIs per route and objective (sli filter); ?format=json",
    ),
    (
        "/live",
        "200 while the process runs, also while draining (liveness)",
    ),
    (
        "/listeners",
        "every listener: address bound, protocol, TLS, active connections (JSON)",
    ),
    (
        "/certs",
        "every certificate in use: SANs, issuer, serial, expiry, user (JSON)",
    ),
    ("/logging", "the current log level"),
];

const POST_PATHS: &[(&str, &str)] = &[
    (
        "/healthcheck/fail",
        "make /ready answer 503 (take this proxy out of rotation)",
    ),
    ("/healthcheck/ok", "undo /healthcheck/fail"),
    ("/quitquitquit", "drain, then exit 0"),
    (
        "/logging",
        "set the log level: ?level=trace|debug|info|warn|error",
    ),
    (
        "/reload",
        "re-read and validate the config file, then apply it",
    ),
    (
        "/drain_listeners",
        "stop accepting and drain without exiting (preStop); /ready answers 503",
    ),
    (
        "/reset_counters",
        "set every counter to zero (gauges and histograms stay)",
    ),
    (
        "/reopen_logs",
        "reopen access-log files (after logrotate renamed them)",
    ),
];

fn text(status: StatusCode, body: impl Into<Bytes>) -> Rsp {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

fn json(status: StatusCode, body: impl Into<Bytes>) -> Rsp {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

/// JSON or plain text, as the request's `?format=` asked.
fn reply(want_json: bool, status: StatusCode, body: impl Into<Bytes>) -> Rsp {
    if want_json {
        json(status, body)
    } else {
        text(status, body)
    }
}

fn query(req: &Request<Incoming>, name: &str) -> Option<String> {
    crate::router::query_param(req.uri().query(), name)
}

/// Accept admin connections until shutdown (the admin endpoint keeps answering while
/// the data path drains, so `/ready` can say 503).
pub async fn serve(listener: TcpListener, server: Arc<Server>) {
    let guard = Arc::new(guard::Guard::new(&server.stats));
    loop {
        let (stream, remote) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(error = %e, "admin accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let server = server.clone();
        let conn = guard::Conn {
            peers: guard::Peers {
                remote,
                local: stream.local_addr().unwrap_or(remote),
            },
            guard: guard.clone(),
        };
        tokio::spawn(async move {
            let svc = service_fn(move |mut req: Request<Incoming>| {
                req.extensions_mut().insert(ops::Peer(remote));
                let s = server.clone();
                req.extensions_mut().insert(conn.clone());
                async move { Ok::<_, Infallible>(handle(req, s).await) }
            });
            let mut b = hyper::server::conn::http1::Builder::new();
            b.timer(TokioTimer::new())
                .header_read_timeout(std::time::Duration::from_secs(30));
            let _ = b.serve_connection(TokioIo::new(stream), svc).await;
        });
    }
}

fn redact(v: &mut serde_yaml::Value) {
    match v {
        serde_yaml::Value::Mapping(m) => {
            for (k, val) in m.iter_mut() {
                let secret = matches!(k.as_str(), Some("private_key" | "token"));
                if secret && !val.is_null() {
                    *val = serde_yaml::Value::String("[redacted]".into());
                } else {
                    redact(val);
                }
            }
        }
        serde_yaml::Value::Sequence(s) => s.iter_mut().for_each(redact),
        serde_yaml::Value::Tagged(t) => redact(&mut t.value),
        _ => {}
    }
}

async fn handle(req: Request<Incoming>, server: Arc<Server>) -> Rsp {
    if let Some(why) = guard::refuse(&req, &server.snapshot.load()) {
        return text(
            StatusCode::FORBIDDEN,
            format!(
                "admin request refused ({}): see the admin guard in docs/admin.md\n",
                why.as_str()
            ),
        );
    }
    let path = req.uri().path().to_string();
    let is_get_path = GET_PATHS.iter().any(|(p, _)| *p == path);
    let is_post_path = POST_PATHS.iter().any(|(p, _)| *p == path);
    match (req.method(), is_get_path, is_post_path) {
        (&Method::GET | &Method::HEAD, true, _) => get(&req, &path, server).await,
        (&Method::POST, _, true) => {
            let refused = {
                let snap = server.snapshot.load();
                snap.admin_token.is_some()
                    && !guard::token_authorised(req.headers(), snap.admin_token.as_deref())
            };
            if refused {
                let mut r = text(
                    StatusCode::UNAUTHORIZED,
                    "admin token required: Authorization: Bearer <token>\n",
                );
                r.headers_mut()
                    .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
                return r;
            }
            post(&req, &path, server).await
        }
        (_, true, true) => not_allowed(format!("{path} answers GET and POST\n"), "GET, HEAD, POST"),
        (_, true, _) => not_allowed(format!("{path} only answers GET\n"), "GET, HEAD"),
        (_, _, true) => not_allowed(format!("{path} only answers POST\n"), "POST"),
        _ => text(
            StatusCode::NOT_FOUND,
            format!("no admin endpoint {path}; GET / lists them\n"),
        ),
    }
}

/// `405` with the methods the path answers.
fn not_allowed(body: String, allow: &'static str) -> Rsp {
    let mut r = text(StatusCode::METHOD_NOT_ALLOWED, body);
    r.headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static(allow));
    r
}

/// The GET router: one small handler per path in [`GET_PATHS`].
async fn get(req: &Request<Incoming>, path: &str, server: Arc<Server>) -> Rsp {
    let want_json = query(req, "format").as_deref() == Some("json");
    match path {
        "/" => index(),
        "/stats" => stats(req, &server, want_json).await,
        "/stats/prometheus" => prometheus(&server).await,
        "/clusters" => clusters(&server, want_json),
        "/config_dump" => config_dump(&server),
        "/ready" => ops::ready(&server),
        "/live" => ops::live(),
        "/listeners" => ops::listeners(&server),
        "/certs" => ops::certs(&server),
        "/logging" => ops::logging(&server),
        "/server_info" => server_info(&server),
        "/sli" => sli(&server, want_json),
        "/explain" => explain(req, &server, want_json),
        _ => text(StatusCode::NOT_FOUND, "not found\n"),
    }
}

/// `/`: every path with one line saying what it answers.
fn index() -> Rsp {
    let mut s = String::from("attache admin\n\nGET\n");
    for (p, d) in GET_PATHS {
        s.push_str(&format!("  {p:<20} {d}\n"));
    }
    s.push_str("POST\n");
    for (p, d) in POST_PATHS {
        s.push_str(&format!("  {p:<20} {d}\n"));
    }
    text(StatusCode::OK, s)
}

/// `/stats`: every metric, optionally filtered by a regex; rendered off the
/// runtime's worker threads.
async fn stats(req: &Request<Incoming>, server: &Server, want_json: bool) -> Rsp {
    if let Some(bad) = stats_query_problem(req.uri().query()) {
        return text(StatusCode::BAD_REQUEST, bad);
    }
    let filter = match query(req, "filter").map(|f| regex::Regex::new(&f)) {
        Some(Ok(r)) => Some(r),
        Some(Err(e)) => {
            return text(
                StatusCode::BAD_REQUEST,
                format!("invalid filter regex: {e}\n"),
            )
        }
        None => None,
    };
    let stats = server.stats.clone();
    let out = tokio::task::spawn_blocking(move || {
        if want_json {
            crate::stats::render_json(&stats, filter.as_ref())
        } else {
            crate::stats::render_text(&stats, filter.as_ref())
        }
    })
    .await
    .unwrap_or_default();
    reply(want_json, StatusCode::OK, out)
}

/// `/stats/prometheus`: the text exposition format.
async fn prometheus(server: &Server) -> Rsp {
    let stats = server.stats.clone();
    let out = tokio::task::spawn_blocking(move || crate::stats::render_prometheus(&stats))
        .await
        .unwrap_or_default();
    let mut r = text(StatusCode::OK, out);
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4"),
    );
    r
}

/// `/clusters`: every cluster by name, with its endpoints.
fn clusters(server: &Server, want_json: bool) -> Rsp {
    let snap = server.snapshot.load_full();
    let mut names: Vec<&String> = snap.clusters.keys().collect();
    names.sort();
    let clusters: Vec<&Arc<crate::upstream::Cluster>> =
        names.iter().filter_map(|n| snap.clusters.get(*n)).collect();
    if want_json {
        let v: Vec<serde_json::Value> = clusters.iter().map(|c| cluster_json(c)).collect();
        return json(
            StatusCode::OK,
            serde_json::json!({ "clusters": v }).to_string(),
        );
    }
    let mut s = String::new();
    for c in clusters {
        cluster_text(&mut s, c);
    }
    text(StatusCode::OK, s)
}

/// `/config_dump`: the effective config, secrets redacted, with its hash.
fn config_dump(server: &Server) -> Rsp {
    let mut v = server.snapshot.load().effective.clone();
    redact(&mut v);
    let load = server.load.load();
    let body = serde_json::json!({
        "config_path": server.config_path,
        "config_hash": format!("{:016x}", load.hash),
        "loaded_at": crate::http::rfc3339(load.at),
        "config": v,
        "xds": crate::xds::dump(),
    });
    json(
        StatusCode::OK,
        serde_json::to_string_pretty(&body).unwrap_or_default(),
    )
}

/// `/server_info`: version, state, uptime, config and bound listeners.
fn server_info(server: &Server) -> Rsp {
    let load = server.load.load();
    let state = if server.draining.load(Ordering::SeqCst) {
        "DRAINING"
    } else if server.health_failed.load(Ordering::SeqCst) {
        "FAILED"
    } else {
        "LIVE"
    };
    let listeners: serde_json::Map<String, serde_json::Value> = server
        .bound_addresses()
        .into_iter()
        .map(|(n, a)| (n, serde_json::Value::from(a.to_string())))
        .collect();
    let body = serde_json::json!({
        "version": env!("CARGO_PKG_VERSION"),
        "state": state,
        "uptime_seconds": server.started.elapsed().as_secs(),
        "concurrency": server.concurrency,
        "config_path": server.config_path,
        "config_hash": format!("{:016x}", load.hash),
        "config_loaded_at": crate::http::rfc3339(load.at),
        "listeners": listeners,
    });
    json(
        StatusCode::OK,
        serde_json::to_string_pretty(&body).unwrap_or_default(),
    )
}

/// `/explain`: the route a described request takes in the running config.
fn explain(req: &Request<Incoming>, server: &Server, want_json: bool) -> Rsp {
    let snap = server.snapshot.load_full();
    let (ok, body) = crate::toolkit::explain::admin(&snap, req.uri().query(), want_json);
    let status = if ok {
        StatusCode::OK
    } else {
        StatusCode::BAD_REQUEST
    };
    reply(want_json, status, body)
}

fn health_name(h: crate::upstream::Health) -> &'static str {
    match h {
        crate::upstream::Health::Healthy => "healthy",
        crate::upstream::Health::Unhealthy => "unhealthy",
        crate::upstream::Health::Pending => "pending",
    }
}

fn source_name(c: &crate::upstream::Cluster) -> String {
    match &c.settings.source {
        crate::upstream::Source::Static => "static".to_string(),
        crate::upstream::Source::Dns { name, .. } => format!("dns:{name}"),
        crate::upstream::Source::File { path } => format!("file:{path}"),
        crate::upstream::Source::Eds { service } => format!("eds:{service}"),
    }
}

fn cluster_json(c: &crate::upstream::Cluster) -> serde_json::Value {
    let hosts = c.hosts();
    let b = &c.breakers;
    let limit = |m: u64| (m != u64::MAX).then_some(m);
    serde_json::json!({
        "name": &*c.name,
        "lb_policy": format!("{:?}", c.lb.policy()).to_lowercase(),
        "discovery": source_name(c),
        "healthy": hosts.healthy,
        "panic": hosts.panic,
        "zone_local": hosts.zone_local,
        "circuit_breakers": {
            "connections": { "open": b.connections.load(), "max": limit(b.connections.max) },
            "pending_requests": { "open": b.pending.load(), "max": limit(b.pending.max) },
            "requests": { "open": b.requests.load(), "max": limit(b.requests.max) },
            "retries": { "open": b.retries.load(), "max": limit(b.retries.max) },
        },
        "endpoints": hosts.all.iter().map(|e| {
            let until = e.outlier.ejected_until_ms.load(Ordering::Relaxed);
            serde_json::json!({
                "address": &*e.authority,
                "health": health_name(e.health()),
                "ejected": e.outlier.is_ejected(),
                "ejected_until_ms": (until > 0).then_some(until),
                "ejections": e.outlier.ejections.load(Ordering::Relaxed),
                "weight": e.weight(),
                "zone": e.zone().as_deref(),
                "rq_active": e.active.load(Ordering::Relaxed),
                "rq_total": e.rq_total.load(Ordering::Relaxed),
                "rq_error": e.rq_error.load(Ordering::Relaxed),
                "cx_connect_fail": e.connect_fail.load(Ordering::Relaxed),
                "hc_fail_total": e.hc_fail_total.load(Ordering::Relaxed),
            })
        }).collect::<Vec<_>>(),
    })
}

/// Envoy's `/clusters` text shape: `cluster::address::key::value`.
fn cluster_text(s: &mut String, c: &crate::upstream::Cluster) {
    use std::fmt::Write;
    let hosts = c.hosts();
    let n = &c.name;
    let _ = writeln!(s, "{n}::discovery::{}", source_name(c));
    let _ = writeln!(s, "{n}::healthy::{}/{}", hosts.healthy, hosts.all.len());
    let _ = writeln!(s, "{n}::panic::{}", hosts.panic);
    let _ = writeln!(s, "{n}::zone_local::{}", hosts.zone_local);
    for (k, g) in [
        ("connections", &*c.breakers.connections),
        ("pending_requests", &c.breakers.pending),
        ("requests", &c.breakers.requests),
        ("retries", &c.breakers.retries),
    ] {
        let max = if g.max == u64::MAX {
            "unlimited".to_string()
        } else {
            g.max.to_string()
        };
        let _ = writeln!(s, "{n}::circuit_breakers::{k}::{}/{max}", g.load());
    }
    for e in &hosts.all {
        let p = format!("{n}::{}", e.authority);
        let mut flags = health_name(e.health()).to_string();
        if e.outlier.is_ejected() {
            flags.push_str("|ejected");
        }
        let _ = writeln!(s, "{p}::health_flags::{flags}");
        let _ = writeln!(s, "{p}::weight::{}", e.weight());
        let _ = writeln!(s, "{p}::zone::{}", e.zone().as_deref().unwrap_or(""));
        let _ = writeln!(
            s,
            "{p}::ejections::{}",
            e.outlier.ejections.load(Ordering::Relaxed)
        );
        let _ = writeln!(s, "{p}::rq_active::{}", e.active.load(Ordering::Relaxed));
        let _ = writeln!(s, "{p}::rq_total::{}", e.rq_total.load(Ordering::Relaxed));
        let _ = writeln!(s, "{p}::rq_error::{}", e.rq_error.load(Ordering::Relaxed));
        let _ = writeln!(
            s,
            "{p}::cx_connect_fail::{}",
            e.connect_fail.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            s,
            "{p}::hc_fail_total::{}",
            e.hc_fail_total.load(Ordering::Relaxed)
        );
    }
}

fn sli(server: &Server, want_json: bool) -> Rsp {
    let sli = &server.services.sli;
    let body = if want_json {
        sli.render_json()
    } else {
        sli.render_text()
    };
    reply(want_json, StatusCode::OK, body)
}

/// `/stats` takes `filter` and `format=json|text`; anything else is a 400 naming
/// the valid parameters (a typo like `?fitler=` must not silently show everything).
fn stats_query_problem(q: Option<&str>) -> Option<String> {
    for pair in q.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        match k {
            "filter" => {}
            "format" if matches!(v, "json" | "text") => {}
            "format" => {
                return Some(format!(
                    "invalid format `{v}`; use format=json or format=text (Prometheus: GET /stats/prometheus)\n"
                ))
            }
            _ => {
                return Some(format!(
                    "unknown parameter `{k}`; /stats takes filter=REGEX and format=json|text\n"
                ))
            }
        }
    }
    None
}

async fn post(req: &Request<Incoming>, path: &str, server: Arc<Server>) -> Rsp {
    tracing::info!(
        path,
        query = req.uri().query().unwrap_or(""),
        peer = %ops::peer(req),
        "admin mutation"
    );
    match path {
        "/healthcheck/fail" => {
            server.health_failed.store(true, Ordering::SeqCst);
            text(StatusCode::OK, "OK\n")
        }
        "/healthcheck/ok" => {
            server.health_failed.store(false, Ordering::SeqCst);
            text(StatusCode::OK, "OK\n")
        }
        "/quitquitquit" => {
            server.request_exit();
            text(StatusCode::OK, "OK, draining\n")
        }
        "/logging" => match query(req, "level") {
            None => text(
                StatusCode::BAD_REQUEST,
                "give ?level=trace|debug|info|warn|error\n",
            ),
            Some(l) => match (server.log_level)(&l) {
                Ok(()) => {
                    if let Ok(mut f) = server.log_filter.lock() {
                        *f = l.clone();
                    }
                    text(StatusCode::OK, format!("log level: {l}\n"))
                }
                Err(e) => text(StatusCode::BAD_REQUEST, format!("{e}\n")),
            },
        },
        "/reload" => match server.reload().await {
            Ok(()) => text(
                StatusCode::OK,
                format!("reloaded; config hash {:016x}\n", server.config_hash()),
            ),
            Err(crate::server::StartError::Config(diags)) => {
                let mut s = String::from("config rejected; still serving the previous config\n");
                for d in diags {
                    s.push_str(&format!("{d}\n"));
                }
                text(StatusCode::BAD_REQUEST, s)
            }
            Err(e) => text(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("{e}; still serving the previous config\n"),
            ),
        },
        "/drain_listeners" => ops::drain_listeners(&server),
        "/reset_counters" => ops::reset_counters(&server),
        "/reopen_logs" => ops::reopen_logs(&server).await,
        _ => text(StatusCode::NOT_FOUND, "not found\n"),
    }
}
