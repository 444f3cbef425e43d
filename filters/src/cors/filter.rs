//! The `cors` filter: preflights answered locally, `Access-Control-Allow-Origin`
//! (with `Vary: Origin`) on allowed actual responses. All header values are built
//! once at config load.

use std::sync::Arc;

use http::header::{self, HeaderName, HeaderValue};
use http::{Method, Response, StatusCode};
use prometheus::IntCounter;

use super::config::Config;
use crate::api::{Action, ConfigError, FactoryContext, HttpFilter, HttpFilterFactory, StreamCtx};
use crate::origin::{Matcher, Origin, Pattern};
use crate::web_security::Mode;

/// `attache_cors_total{listener,result}`.
pub const CORS_TOTAL: &str = "attache_cors_total";

/// CORS results (with a `shadow_` prefix in shadow mode).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Result {
    PreflightAllowed,
    PreflightDenied,
    Allowed,
    Denied,
}

impl Result {
    pub const ALL: [Result; 4] = [
        Result::PreflightAllowed,
        Result::PreflightDenied,
        Result::Allowed,
        Result::Denied,
    ];

    pub fn label(self, shadow: bool) -> &'static str {
        match (self, shadow) {
            (Result::PreflightAllowed, false) => "preflight_allowed",
            (Result::PreflightDenied, false) => "preflight_denied",
            (Result::Allowed, false) => "allowed",
            (Result::Denied, false) => "denied",
            (Result::PreflightAllowed, true) => "shadow_preflight_allowed",
            (Result::PreflightDenied, true) => "shadow_preflight_denied",
            (Result::Allowed, true) => "shadow_allowed",
            (Result::Denied, true) => "shadow_denied",
        }
    }
}

fn joined(items: &[String], key: &str, errors: &mut Vec<ConfigError>) -> Option<HeaderValue> {
    if items.is_empty() {
        return None;
    }
    match HeaderValue::from_str(&items.join(", ")) {
        Ok(v) => Some(v),
        Err(_) => {
            errors.push(ConfigError::at(key, "not valid in a header value"));
            None
        }
    }
}

#[derive(Debug)]
struct Compiled {
    origins: Matcher,
    wildcard: bool,
    methods: Vec<Method>,
    methods_value: Option<HeaderValue>,
    any_header: bool,
    headers: Vec<HeaderName>,
    headers_value: Option<HeaderValue>,
    expose_value: Option<HeaderValue>,
    credentials: bool,
    max_age: Option<HeaderValue>,
}

fn compile(cfg: &Config, errors: &mut Vec<ConfigError>) -> Compiled {
    let origins = Matcher::compile(&cfg.allowed_origins, "allowed_origins", errors);
    if cfg.allowed_origins.is_empty() {
        errors.push(ConfigError::at(
            "allowed_origins",
            "list at least one origin",
        ));
    }
    if cfg.allow_credentials {
        for (i, p) in cfg.allowed_origins.iter().enumerate() {
            if matches!(p, Pattern::Exact(s) if s == "*") {
                errors.push(ConfigError::at(
                    &format!("allowed_origins.{i}"),
                    "`*` cannot be combined with allow_credentials: true; list the origins",
                ));
            }
        }
    }
    let mut methods = Vec::new();
    for (i, m) in cfg.allowed_methods.iter().enumerate() {
        match Method::from_bytes(m.as_bytes()) {
            Ok(m) => methods.push(m),
            Err(_) => errors.push(ConfigError::at(
                &format!("allowed_methods.{i}"),
                format!("`{m}` is not an HTTP method"),
            )),
        }
    }
    let mut headers = Vec::new();
    let mut any_header = false;
    for (i, h) in cfg.allowed_headers.iter().enumerate() {
        if h == "*" {
            if cfg.allow_credentials {
                errors.push(ConfigError::at(
                    &format!("allowed_headers.{i}"),
                    "`*` cannot be combined with allow_credentials: true; list the headers",
                ));
            }
            any_header = true;
            continue;
        }
        match HeaderName::from_bytes(h.as_bytes()) {
            Ok(n) => headers.push(n),
            Err(_) => errors.push(ConfigError::at(
                &format!("allowed_headers.{i}"),
                format!("`{h}` is not a header name"),
            )),
        }
    }
    for (i, h) in cfg.expose_headers.iter().enumerate() {
        if h != "*" && HeaderName::from_bytes(h.as_bytes()).is_err() {
            errors.push(ConfigError::at(
                &format!("expose_headers.{i}"),
                format!("`{h}` is not a header name"),
            ));
        }
    }
    let named: Vec<String> = headers.iter().map(|h| h.as_str().to_string()).collect();
    Compiled {
        wildcard: origins.allows_any(),
        origins,
        methods_value: joined(&cfg.allowed_methods, "allowed_methods", errors),
        methods,
        any_header,
        headers_value: joined(&named, "allowed_headers", errors),
        headers,
        expose_value: joined(&cfg.expose_headers, "expose_headers", errors),
        credentials: cfg.allow_credentials,
        max_age: cfg.max_age.map(|d| HeaderValue::from(d.get().as_secs())),
    }
}

/// Builds [`Filter`] from [`Config`].
pub struct Factory;

impl HttpFilterFactory for Factory {
    const NAME: &'static str = "cors";
    type Config = Config;

    fn validate(cfg: &Config) -> Vec<ConfigError> {
        let mut errors = Vec::new();
        compile(cfg, &mut errors);
        errors
    }

    fn build(
        cfg: Config,
        cx: &FactoryContext<'_>,
    ) -> std::result::Result<Arc<dyn HttpFilter>, ConfigError> {
        let mut errors = Vec::new();
        let c = compile(&cfg, &mut errors);
        if let Some(e) = errors.into_iter().next() {
            return Err(e);
        }
        let shadow = cfg.mode == Mode::Shadow;
        let vec = cx.stats.counter_vec(
            CORS_TOTAL,
            "Cross-origin requests by CORS result",
            &["listener", "result"],
        );
        Ok(Arc::new(Filter {
            c,
            shadow,
            counters: Result::ALL.map(|r| vec.with_label_values(&[cx.listener, r.label(shadow)])),
        }))
    }
}

/// Carried from `on_request` to `on_response` in `StreamCtx::extensions`.
#[derive(Debug, Clone)]
struct Decision {
    origin: HeaderValue,
    allowed: bool,
}

/// Answers preflights and decorates allowed cross-origin responses.
#[derive(Debug)]
pub struct Filter {
    c: Compiled,
    shadow: bool,
    counters: [IntCounter; Result::ALL.len()],
}

fn has_vary_origin(h: &http::HeaderMap) -> bool {
    h.get_all(header::VARY).iter().any(|v| {
        v.as_bytes()
            .split(|b| *b == b',')
            .map(|t| t.trim_ascii())
            .any(|t| t == b"*" || t.eq_ignore_ascii_case(b"origin"))
    })
}

fn add_vary_origin(h: &mut http::HeaderMap) {
    if !has_vary_origin(h) {
        h.append(header::VARY, HeaderValue::from_static("Origin"));
    }
}

impl Filter {
    fn count(&self, r: Result) {
        self.counters[r as usize].inc();
    }

    fn allow_origin_value(&self, origin: &HeaderValue) -> HeaderValue {
        if self.c.wildcard && !self.c.credentials {
            HeaderValue::from_static("*")
        } else {
            origin.clone()
        }
    }

    fn preflight_ok(&self, req: &http::request::Parts) -> bool {
        let method_ok = req
            .headers
            .get(header::ACCESS_CONTROL_REQUEST_METHOD)
            .and_then(|m| Method::from_bytes(m.as_bytes()).ok())
            .is_some_and(|m| self.c.methods.contains(&m));
        let headers_ok = self.c.any_header
            || req
                .headers
                .get_all(header::ACCESS_CONTROL_REQUEST_HEADERS)
                .iter()
                .all(|v| {
                    v.as_bytes()
                        .split(|b| *b == b',')
                        .map(|t| t.trim_ascii())
                        .filter(|t| !t.is_empty())
                        .all(|t| {
                            self.c
                                .headers
                                .iter()
                                .any(|h| h.as_str().as_bytes().eq_ignore_ascii_case(t))
                        })
                });
        method_ok && headers_ok
    }

    fn preflight_response(
        &self,
        req: &http::request::Parts,
        origin: &HeaderValue,
        ok: bool,
    ) -> Response<bytes::Bytes> {
        let mut rsp = Response::new(bytes::Bytes::new());
        *rsp.status_mut() = StatusCode::NO_CONTENT;
        let h = rsp.headers_mut();
        if ok {
            h.insert(
                header::ACCESS_CONTROL_ALLOW_ORIGIN,
                self.allow_origin_value(origin),
            );
            if let Some(v) = &self.c.methods_value {
                h.insert(header::ACCESS_CONTROL_ALLOW_METHODS, v.clone());
            }
            if self.c.any_header {
                if let Some(v) = req.headers.get(header::ACCESS_CONTROL_REQUEST_HEADERS) {
                    h.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, v.clone());
                }
            } else if let Some(v) = &self.c.headers_value {
                h.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, v.clone());
            }
            if self.c.credentials {
                h.insert(
                    header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
                    HeaderValue::from_static("true"),
                );
            }
            if let Some(v) = &self.c.max_age {
                h.insert(header::ACCESS_CONTROL_MAX_AGE, v.clone());
            }
        }
        h.insert(
            header::VARY,
            HeaderValue::from_static(
                "Origin, Access-Control-Request-Method, Access-Control-Request-Headers",
            ),
        );
        rsp
    }
}

impl Filter {
    /// The request's `Origin`, whether that origin is allowed, whether the request
    /// is cross-origin (a same-origin request the list does not name is not), and
    /// whether it is a preflight. None without an `Origin`.
    fn classify(&self, req: &http::request::Parts) -> Option<Seen> {
        let origin = req.headers.get(header::ORIGIN)?;
        let host = req
            .headers
            .get(header::HOST)
            .map(HeaderValue::as_bytes)
            .or_else(|| req.uri.authority().map(|a| a.as_str().as_bytes()));
        let same_origin = match (Origin::parse(origin.as_bytes()), host) {
            (Some(o), Some(host)) => o.same_host(host),
            _ => false,
        };
        let allowed = self.c.origins.matches(origin.as_bytes());
        let preflight = req.method == Method::OPTIONS
            && req
                .headers
                .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
        Some(Seen {
            origin: origin.clone(),
            allowed,
            cross_origin: allowed || !same_origin,
            preflight,
        })
    }
}

/// What [`Filter::classify`] saw of a request.
struct Seen {
    origin: HeaderValue,
    allowed: bool,
    cross_origin: bool,
    preflight: bool,
}

impl HttpFilter for Filter {
    fn on_request(&self, req: &mut http::request::Parts, cx: &mut StreamCtx) -> Action {
        let Some(seen) = self.classify(req) else {
            return Action::Continue;
        };
        if seen.preflight {
            let ok = seen.allowed && self.preflight_ok(req);
            self.count(if ok {
                Result::PreflightAllowed
            } else {
                Result::PreflightDenied
            });
            if self.shadow {
                return Action::Continue;
            }
            return Action::Respond(self.preflight_response(req, &seen.origin, ok));
        }
        if !seen.cross_origin {
            return Action::Continue; // not a cross-origin request
        }
        self.count(if seen.allowed {
            Result::Allowed
        } else {
            Result::Denied
        });
        if !self.shadow {
            cx.extensions.insert(Decision {
                origin: seen.origin,
                allowed: seen.allowed,
            });
        }
        Action::Continue
    }

    /// A refused request (an `rbac` denial) gets the CORS headers of an allowed
    /// origin too, so the browser can read the refusal (a gRPC-Web client its
    /// `grpc-status`) instead of reporting a network error. Not counted: the
    /// request was not served.
    fn on_refused_request(&self, req: &http::request::Parts, cx: &mut StreamCtx) {
        match self.classify(req) {
            Some(seen) if seen.cross_origin && !seen.preflight && !self.shadow => {
                cx.extensions.insert(Decision {
                    origin: seen.origin,
                    allowed: seen.allowed,
                });
            }
            _ => {}
        }
    }

    fn on_response(&self, rsp: &mut http::response::Parts, cx: &mut StreamCtx) -> Action {
        let Some(d) = cx.extensions.remove::<Decision>() else {
            return Action::Continue;
        };
        let h = &mut rsp.headers;
        if d.allowed {
            let acao = self.allow_origin_value(&d.origin);
            let reflected = acao != "*";
            h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, acao);
            if self.c.credentials {
                h.insert(
                    header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
                    HeaderValue::from_static("true"),
                );
            }
            if let Some(v) = &self.c.expose_value {
                h.insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, v.clone());
            }
            if reflected {
                add_vary_origin(h);
            }
        } else if !self.c.wildcard {
            // The answer depends on Origin even when it carries no CORS headers.
            add_vary_origin(h);
        }
        Action::Continue
    }
}
