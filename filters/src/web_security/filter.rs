//! The `web_security` filter: default security response headers and CSRF checks,
//! all compiled at build time (header values, origin matchers, regexes).

use std::sync::Arc;

use http::header::{self, HeaderName, HeaderValue};
use http::{Method, StatusCode};
use prometheus::IntCounter;

use super::config::{Config, MissingOrigin, Mode, Setting};
use super::stats::{Csrf, Header, CSRF_TOTAL, HEADERS_TOTAL};
use crate::api::{Action, ConfigError, FactoryContext, HttpFilter, HttpFilterFactory, StreamCtx};
use crate::origin::{self, Matcher, Origin};
use crate::ratelimit::{loggable, LogLimiter};

/// The body of the CSRF rejection.
pub const CSRF_BODY: &str = "forbidden: cross-site request rejected by csrf protection \
(the request's Origin/Referer is neither this site nor an allowed origin)\n";

const SEC_FETCH_SITE: HeaderName = HeaderName::from_static("sec-fetch-site");
const COOP: HeaderName = HeaderName::from_static("cross-origin-opener-policy");

#[derive(Debug)]
struct SecurityHeader {
    name: HeaderName,
    value: HeaderValue,
    tls_only: bool,
}

fn setting(
    s: &Option<Setting>,
    default: &str,
    key: &str,
    errors: &mut Vec<ConfigError>,
) -> Option<String> {
    match s {
        None | Some(Setting::On(true)) => Some(default.to_string()),
        Some(Setting::On(false)) => None,
        Some(Setting::Value(v)) if v.trim().is_empty() => {
            errors.push(ConfigError::at(
                key,
                "empty value; use `false` to turn the header off",
            ));
            None
        }
        Some(Setting::Value(v)) => Some(v.clone()),
    }
}

fn compile_headers(cfg: &Config, errors: &mut Vec<ConfigError>) -> Vec<SecurityHeader> {
    let mut out = Vec::new();
    let mut push = |name: HeaderName, value: Option<String>, key: &str, tls_only: bool| {
        if let Some(v) = value {
            match HeaderValue::from_str(&v) {
                Ok(value) => out.push(SecurityHeader {
                    name,
                    value,
                    tls_only,
                }),
                Err(_) => errors.push(ConfigError::at(key, "not a valid header value")),
            }
        }
    };
    let mut errs = Vec::new();
    let hsts = setting(
        &cfg.hsts,
        "max-age=31536000; includeSubDomains",
        "hsts",
        &mut errs,
    );
    let xfo = setting(&cfg.frame_options, "DENY", "frame_options", &mut errs);
    let fa = setting(&cfg.frame_ancestors, "'none'", "frame_ancestors", &mut errs);
    let nosniff = setting(
        &cfg.content_type_options,
        "nosniff",
        "content_type_options",
        &mut errs,
    );
    let referrer = setting(
        &cfg.referrer_policy,
        "strict-origin-when-cross-origin",
        "referrer_policy",
        &mut errs,
    );
    let coop = setting(
        &cfg.cross_origin_opener_policy,
        "same-origin",
        "cross_origin_opener_policy",
        &mut errs,
    );
    let csp = match (&cfg.content_security_policy, fa) {
        (Some(c), Some(fa)) if !c.contains("frame-ancestors") => Some(format!(
            "{}; frame-ancestors {fa}",
            c.trim().trim_end_matches(';')
        )),
        (Some(c), _) => Some(c.clone()),
        (None, Some(fa)) => Some(format!("frame-ancestors {fa}")),
        (None, None) => None,
    };
    let csp_key = if cfg.content_security_policy.is_some() {
        "content_security_policy"
    } else {
        "frame_ancestors"
    };
    push(header::STRICT_TRANSPORT_SECURITY, hsts, "hsts", true);
    push(header::X_FRAME_OPTIONS, xfo, "frame_options", false);
    push(header::CONTENT_SECURITY_POLICY, csp, csp_key, false);
    push(
        header::X_CONTENT_TYPE_OPTIONS,
        nosniff,
        "content_type_options",
        false,
    );
    push(header::REFERRER_POLICY, referrer, "referrer_policy", false);
    push(COOP, coop, "cross_origin_opener_policy", false);
    errors.extend(errs);
    out
}

fn compile_csrf(cfg: &Config, errors: &mut Vec<ConfigError>) -> Matcher {
    let m = Matcher::compile(&cfg.csrf.allowed_origins, "csrf.allowed_origins", errors);
    if m.allows_any() {
        let i = cfg
            .csrf
            .allowed_origins
            .iter()
            .position(|p| matches!(p, origin::Pattern::Exact(s) if s == "*"))
            .unwrap_or(0);
        errors.push(ConfigError::at(
            &format!("csrf.allowed_origins.{i}"),
            "`*` would turn CSRF protection off; set `csrf: { enabled: false }` instead",
        ));
    }
    m
}

/// Builds [`Filter`] from [`Config`].
pub struct Factory;

impl HttpFilterFactory for Factory {
    const NAME: &'static str = "web_security";
    type Config = Config;

    fn validate(cfg: &Config) -> Vec<ConfigError> {
        let mut errors = Vec::new();
        compile_headers(cfg, &mut errors);
        compile_csrf(cfg, &mut errors);
        if cfg.cors.is_some() {
            errors.push(ConfigError::at(
                "cors",
                "cors is its own filter: add `- cors: {...}` to the chain (per-route: \
                 `filter_overrides: { cors: {...} }`)",
            ));
        }
        errors
    }

    fn build(cfg: Config, cx: &FactoryContext<'_>) -> Result<Arc<dyn HttpFilter>, ConfigError> {
        let mut errors = Vec::new();
        let headers = compile_headers(&cfg, &mut errors);
        let allowed = compile_csrf(&cfg, &mut errors);
        if let Some(e) = errors.into_iter().next() {
            return Err(e);
        }
        let csrf = cx.stats.counter_vec(
            CSRF_TOTAL,
            "Unsafe requests by CSRF check result",
            &["listener", "result"],
        );
        let hdrs = cx.stats.counter_vec(
            HEADERS_TOTAL,
            "Security response headers by what web_security did",
            &["listener", "result"],
        );
        Ok(Arc::new(Filter {
            listener: cx.listener.into(),
            listener_tls: cx.tls,
            headers,
            override_upstream: cfg.override_upstream,
            headers_shadow: cfg.headers_mode == Mode::Shadow,
            csrf_enabled: cfg.csrf.enabled,
            csrf_shadow: cfg.csrf.mode == Mode::Shadow,
            deny_missing: cfg.csrf.missing_origin == MissingOrigin::Deny,
            allowed,
            csrf_counters: Csrf::ALL.map(|r| csrf.with_label_values(&[cx.listener, r.label()])),
            header_counters: Header::ALL.map(|r| hdrs.with_label_values(&[cx.listener, r.label()])),
            log: LogLimiter::new(10),
        }))
    }
}

/// Adds security headers to every response and checks unsafe requests for CSRF.
#[derive(Debug)]
pub struct Filter {
    listener: Arc<str>,
    listener_tls: bool,
    headers: Vec<SecurityHeader>,
    override_upstream: bool,
    headers_shadow: bool,
    csrf_enabled: bool,
    csrf_shadow: bool,
    deny_missing: bool,
    allowed: Matcher,
    csrf_counters: [IntCounter; Csrf::ALL.len()],
    header_counters: [IntCounter; Header::ALL.len()],
    log: LogLimiter,
}

fn is_unsafe(m: &Method) -> bool {
    matches!(
        *m,
        Method::POST | Method::PUT | Method::PATCH | Method::DELETE
    )
}

/// `scheme://authority` of a URL (a `Referer`), or `None`.
fn origin_of(url: &[u8]) -> Option<&[u8]> {
    let start = url.windows(3).position(|w| w == b"://")? + 3;
    let end = url[start..]
        .iter()
        .position(|b| matches!(b, b'/' | b'?' | b'#'))
        .map_or(url.len(), |i| start + i);
    Some(&url[..end])
}

impl Filter {
    fn csrf(&self, req: &http::request::Parts) -> Csrf {
        let h = &req.headers;
        let origin = match h.get(header::ORIGIN) {
            Some(o) => Some(o.as_bytes()),
            None => h.get(header::REFERER).and_then(|r| origin_of(r.as_bytes())),
        };
        let allowed = |o: Option<&[u8]>| match o {
            Some(o) if self.allowed.matches(o) => Csrf::AllowedOrigin,
            _ => Csrf::Denied,
        };
        match h.get(SEC_FETCH_SITE).map(HeaderValue::as_bytes) {
            Some(b"same-origin" | b"none") => return Csrf::SameOrigin,
            Some(b"same-site" | b"cross-site") => return allowed(origin),
            _ => {}
        }
        let Some(o) = origin else {
            return if self.deny_missing {
                Csrf::Denied
            } else {
                Csrf::MissingOriginAllowed
            };
        };
        let host = h
            .get(header::HOST)
            .map(HeaderValue::as_bytes)
            .or_else(|| req.uri.authority().map(|a| a.as_str().as_bytes()));
        match (Origin::parse(o), host) {
            (Some(parsed), Some(host)) if parsed.same_host(host) => Csrf::SameOrigin,
            _ => allowed(Some(o)),
        }
    }
}

impl HttpFilter for Filter {
    fn on_request(&self, req: &mut http::request::Parts, cx: &mut StreamCtx) -> Action {
        if !self.csrf_enabled || !is_unsafe(&req.method) {
            return Action::Continue;
        }
        let mut result = self.csrf(req);
        if result == Csrf::Denied && self.csrf_shadow {
            result = Csrf::ShadowDenied;
        }
        self.csrf_counters[result as usize].inc();
        if matches!(result, Csrf::Denied | Csrf::ShadowDenied) {
            if self.log.allow() {
                let origin = req
                    .headers
                    .get(header::ORIGIN)
                    .or_else(|| req.headers.get(header::REFERER))
                    .map(|v| loggable(origin_of(v.as_bytes()).unwrap_or(v.as_bytes())));
                tracing::warn!(
                    listener = %self.listener,
                    route = %cx.route,
                    method = %req.method,
                    origin = ?origin,
                    result = result.label(),
                    "csrf check failed"
                );
            }
            if result == Csrf::Denied {
                return Action::respond(StatusCode::FORBIDDEN, CSRF_BODY);
            }
        }
        Action::Continue
    }

    fn on_response(&self, rsp: &mut http::response::Parts, cx: &mut StreamCtx) -> Action {
        let tls = cx.downstream_tls || self.listener_tls;
        let mut counts = [0u64; Header::ALL.len()];
        for h in &self.headers {
            if h.tls_only && !tls {
                continue;
            }
            let present = rsp.headers.contains_key(&h.name);
            let what = match (present, self.headers_shadow, self.override_upstream) {
                (false, true, _) => Header::ShadowMissing,
                (false, false, _) => Header::Added,
                (true, false, true) if rsp.headers.get(&h.name) != Some(&h.value) => {
                    Header::Replaced
                }
                (true, _, _) => Header::Kept,
            };
            if matches!(what, Header::Added | Header::Replaced) {
                rsp.headers.insert(h.name.clone(), h.value.clone());
            }
            counts[what as usize] += 1;
        }
        for (c, n) in self.header_counters.iter().zip(counts) {
            if n > 0 {
                c.inc_by(n);
            }
        }
        Action::Continue
    }
}
