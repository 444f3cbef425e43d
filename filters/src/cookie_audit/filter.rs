//! The `cookie_audit` filter: policies compiled once; per request, a scan of the
//! `Cookie` headers and each `Set-Cookie` with no allocation unless something is
//! stripped, dropped or fixed.

use std::sync::Arc;
use std::time::SystemTime;

use http::header::{COOKIE, DATE, SET_COOKIE};
use http::{HeaderMap, HeaderValue};
use prometheus::IntCounter;

use super::config::{Config, Mode, SameSite, Unknown};
use super::parse;
use super::stats::{Act, Violation, ACTIONS_TOTAL, UNKNOWN_COOKIE, VIOLATIONS_TOTAL};
use crate::api::{Action, ConfigError, FactoryContext, HttpFilter, HttpFilterFactory, StreamCtx};
use crate::ratelimit::{loggable, LogLimiter};

/// A cookie name that is valid as a config value: an RFC 6265 token.
fn valid_name(n: &str) -> bool {
    !n.is_empty()
        && n.bytes().all(|b| {
            b.is_ascii_graphic()
                && !matches!(
                    b,
                    b'(' | b')'
                        | b'<'
                        | b'>'
                        | b'@'
                        | b','
                        | b';'
                        | b':'
                        | b'\\'
                        | b'"'
                        | b'/'
                        | b'['
                        | b']'
                        | b'?'
                        | b'='
                        | b'{'
                        | b'}'
                )
        })
}

#[derive(Debug)]
struct Checks {
    secure: bool,
    http_only: bool,
    same_site: SameSite,
    max_lifetime: Option<i64>,
    /// Lowercase, no leading dot.
    domain: Option<Box<[u8]>>,
}

#[derive(Debug)]
struct Rule {
    name: Box<[u8]>,
    /// `None` for names listed under `allowed`.
    checks: Option<Checks>,
}

/// Builds [`Filter`] from [`Config`].
pub struct Factory;

impl HttpFilterFactory for Factory {
    const NAME: &'static str = "cookie_audit";
    type Config = Config;

    fn validate(cfg: &Config) -> Vec<ConfigError> {
        let mut errors = Vec::new();
        let mut seen = std::collections::HashSet::new();
        let names = cfg
            .cookies
            .iter()
            .enumerate()
            .map(|(i, p)| (format!("cookies.{i}.name"), p.name.as_str()))
            .chain(
                cfg.allowed
                    .iter()
                    .enumerate()
                    .map(|(i, n)| (format!("allowed.{i}"), n.as_str())),
            );
        for (at, name) in names {
            if !valid_name(name) {
                errors.push(ConfigError::at(
                    &at,
                    format!("`{name}` is not a valid cookie name"),
                ));
            } else if name == UNKNOWN_COOKIE {
                errors.push(ConfigError::at(
                    &at,
                    "`unknown` is reserved as the metric label for unlisted cookies",
                ));
            } else if !seen.insert(name) {
                errors.push(ConfigError::at(
                    &at,
                    format!("cookie `{name}` is listed twice"),
                ));
            }
        }
        for (i, p) in cfg.cookies.iter().enumerate() {
            if let Some(d) = p.max_lifetime {
                if d.get().as_secs() == 0 {
                    errors.push(ConfigError::at(
                        &format!("cookies.{i}.max_lifetime"),
                        "max_lifetime must be at least 1s",
                    ));
                }
            }
            if let Some(d) = &p.domain {
                let d = d.strip_prefix('.').unwrap_or(d);
                if d.is_empty() || d.contains(['/', ':', ' ', ';', '*']) {
                    errors.push(ConfigError::at(
                        &format!("cookies.{i}.domain"),
                        format!("`{d}` is not a domain such as `app.example.com`"),
                    ));
                }
            }
            if p.same_site == SameSite::None && !p.secure {
                errors.push(ConfigError::at(
                    &format!("cookies.{i}.same_site"),
                    "same_site: None requires secure: true (browsers reject it otherwise)",
                ));
            }
        }
        errors
    }

    fn build(cfg: Config, cx: &FactoryContext<'_>) -> Result<Arc<dyn HttpFilter>, ConfigError> {
        let mut rules: Vec<Rule> = cfg
            .cookies
            .iter()
            .map(|p| Rule {
                name: p.name.as_bytes().into(),
                checks: Some(Checks {
                    secure: p.secure,
                    http_only: p.http_only,
                    same_site: p.same_site,
                    max_lifetime: p
                        .max_lifetime
                        .map(|d| i64::try_from(d.get().as_secs()).unwrap_or(i64::MAX)),
                    domain: p.domain.as_ref().map(|d| {
                        d.strip_prefix('.')
                            .unwrap_or(d)
                            .to_ascii_lowercase()
                            .into_bytes()
                            .into()
                    }),
                }),
            })
            .collect();
        rules.extend(cfg.allowed.iter().map(|n| Rule {
            name: n.as_bytes().into(),
            checks: None,
        }));

        let vvec = cx.stats.counter_vec(
            VIOLATIONS_TOTAL,
            "Cookie policy violations by configured cookie name (or `unknown`)",
            &["listener", "cookie", "violation"],
        );
        let avec = cx.stats.counter_vec(
            ACTIONS_TOTAL,
            "Cookies stripped, dropped or fixed by cookie_audit in enforce mode",
            &["listener", "cookie", "action"],
        );
        let labels: Vec<&str> = cfg
            .cookies
            .iter()
            .map(|p| p.name.as_str())
            .chain(cfg.allowed.iter().map(String::as_str))
            .chain([UNKNOWN_COOKIE])
            .collect();
        let violations = labels
            .iter()
            .map(|c| Violation::ALL.map(|v| vvec.with_label_values(&[cx.listener, c, v.label()])))
            .collect();
        let actions = labels
            .iter()
            .map(|c| Act::ALL.map(|a| avec.with_label_values(&[cx.listener, c, a.label()])))
            .collect();
        Ok(Arc::new(Filter {
            listener: cx.listener.into(),
            rules,
            enforce: cfg.mode == Mode::Enforce,
            strip_unknown: cfg.unknown == Unknown::Strip,
            fix: cfg.fix,
            violations,
            actions,
            log: LogLimiter::new(cfg.log_lines_per_second),
        }))
    }
}

enum Outcome {
    Keep,
    Drop,
    Replace(HeaderValue),
}

/// Audits (and in enforce mode repairs) cookies in both directions.
#[derive(Debug)]
pub struct Filter {
    listener: Arc<str>,
    rules: Vec<Rule>,
    enforce: bool,
    strip_unknown: bool,
    fix: bool,
    /// Indexed by rule, then [`Violation`]; the last row is `unknown`.
    violations: Vec<[IntCounter; Violation::ALL.len()]>,
    actions: Vec<[IntCounter; Act::ALL.len()]>,
    log: LogLimiter,
}

impl Filter {
    fn lookup(&self, name: &[u8]) -> Option<usize> {
        self.rules.iter().position(|r| *r.name == *name)
    }

    fn violation(&self, rule: Option<usize>, v: Violation, name: &[u8], route: &str, action: &str) {
        let row = rule.unwrap_or(self.rules.len());
        if let Some(c) = self.violations.get(row) {
            c[v as usize].inc();
        }
        if self.log.allow() {
            tracing::warn!(
                listener = %self.listener,
                route = %route,
                cookie = ?loggable(name),
                violation = v.label(),
                action,
                "cookie policy violation"
            );
        }
    }

    fn act(&self, rule: Option<usize>, a: Act) {
        if let Some(c) = self.actions.get(rule.unwrap_or(self.rules.len())) {
            c[a as usize].inc();
        }
    }

    fn check_set_cookie(
        &self,
        raw: &[u8],
        reference: &mut impl FnMut() -> SystemTime,
        route: &str,
    ) -> Outcome {
        let Some(sc) = parse::set_cookie(raw) else {
            let action = if self.enforce { "dropped" } else { "logged" };
            self.violation(None, Violation::Malformed, b"", route, action);
            if self.enforce {
                self.act(None, Act::Dropped);
                return Outcome::Drop;
            }
            return Outcome::Keep;
        };
        let Some(i) = self.lookup(sc.name) else {
            let drop = self.enforce && self.strip_unknown;
            let action = if drop { "dropped" } else { "logged" };
            self.violation(None, Violation::UnknownSetCookie, sc.name, route, action);
            if drop {
                self.act(None, Act::Dropped);
                return Outcome::Drop;
            }
            return Outcome::Keep;
        };
        let Some(checks) = &self.rules[i].checks else {
            return Outcome::Keep;
        };
        let found = violations(&sc, checks, reference);
        if found == 0 {
            return Outcome::Keep;
        }
        let outcome = if !self.enforce {
            Outcome::Keep
        } else if self.fix {
            match HeaderValue::from_bytes(&fixed(raw, &sc, checks, found)) {
                Ok(v) => Outcome::Replace(v),
                Err(_) => Outcome::Drop,
            }
        } else {
            Outcome::Drop
        };
        let action = match outcome {
            Outcome::Keep => "logged",
            Outcome::Drop => "dropped",
            Outcome::Replace(_) => "fixed",
        };
        for v in Violation::ALL {
            if found & v.bit() != 0 {
                self.violation(Some(i), v, sc.name, route, action);
            }
        }
        match outcome {
            Outcome::Drop => self.act(Some(i), Act::Dropped),
            Outcome::Replace(_) => self.act(Some(i), Act::Fixed),
            Outcome::Keep => {}
        }
        outcome
    }
}

fn ends_with_label(d: &[u8], allowed: &[u8]) -> bool {
    d.eq_ignore_ascii_case(allowed)
        || (d.len() > allowed.len()
            && d[d.len() - allowed.len()..].eq_ignore_ascii_case(allowed)
            && d[d.len() - allowed.len() - 1] == b'.')
}

/// The violations of one parsed `Set-Cookie`, as a bitmask of [`Violation::bit`].
fn violations(
    sc: &parse::SetCookie<'_>,
    c: &Checks,
    reference: &mut impl FnMut() -> SystemTime,
) -> u16 {
    let mut v = 0;
    if c.secure && !sc.secure {
        v |= Violation::MissingSecure.bit();
    }
    if c.http_only && !sc.http_only {
        v |= Violation::MissingHttpOnly.bit();
    }
    match (c.same_site, sc.same_site) {
        (SameSite::Any, _) => {}
        (_, None) => v |= Violation::MissingSameSite.bit(),
        (want, Some(got)) if !got.eq_ignore_ascii_case(want.as_str().as_bytes()) => {
            v |= Violation::WrongSameSite.bit()
        }
        _ => {}
    }
    if matches!(sc.same_site, Some(s) if s.eq_ignore_ascii_case(b"none")) && !sc.secure {
        v |= Violation::SameSiteNoneInsecure.bit();
    }
    if let Some(max) = c.max_lifetime {
        let too_long = match (sc.max_age, sc.expires) {
            // Max-Age wins over Expires in browsers.
            (Some(age), _) => age > max,
            (None, Some(e)) => parse::expires(e)
                .and_then(|t| t.duration_since(reference()).ok())
                .is_some_and(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX) > max),
            (None, None) => false,
        };
        if too_long {
            v |= Violation::LifetimeExceeded.bit();
        }
    }
    if let (Some(allowed), Some(d)) = (&c.domain, sc.domain) {
        if !ends_with_label(d, allowed) {
            v |= Violation::DomainTooBroad.bit();
        }
    }
    v
}

/// `raw` rewritten so that it satisfies its policy.
fn fixed(raw: &[u8], sc: &parse::SetCookie<'_>, c: &Checks, found: u16) -> Vec<u8> {
    let same_site =
        found & (Violation::MissingSameSite.bit() | Violation::WrongSameSite.bit()) != 0;
    let lifetime = found & Violation::LifetimeExceeded.bit() != 0;
    let domain = found & Violation::DomainTooBroad.bit() != 0;
    let mut out = Vec::with_capacity(raw.len() + 64);
    for (k, seg) in parse::segments(raw).enumerate() {
        if k > 0 {
            let replaced = (same_site && parse::is_attr(seg, b"samesite"))
                || (lifetime
                    && (parse::is_attr(seg, b"max-age") || parse::is_attr(seg, b"expires")))
                || (domain && parse::is_attr(seg, b"domain"));
            if replaced {
                continue;
            }
            out.extend_from_slice(b"; ");
        }
        out.extend_from_slice(seg);
    }
    let needs_secure =
        found & (Violation::MissingSecure.bit() | Violation::SameSiteNoneInsecure.bit()) != 0;
    if needs_secure && !sc.secure {
        out.extend_from_slice(b"; Secure");
    }
    if found & Violation::MissingHttpOnly.bit() != 0 {
        out.extend_from_slice(b"; HttpOnly");
    }
    if same_site {
        out.extend_from_slice(b"; SameSite=");
        out.extend_from_slice(c.same_site.as_str().as_bytes());
    }
    if let (true, Some(max)) = (lifetime, c.max_lifetime) {
        out.extend_from_slice(format!("; Max-Age={max}").as_bytes());
    }
    if let (true, Some(d)) = (domain, &c.domain) {
        out.extend_from_slice(b"; Domain=");
        out.extend_from_slice(d);
    }
    out
}

fn response_date(headers: &HeaderMap) -> SystemTime {
    headers
        .get(DATE)
        .and_then(|v| v.to_str().ok())
        .and_then(|s| httpdate::parse_http_date(s).ok())
        .unwrap_or_else(SystemTime::now)
}

impl HttpFilter for Filter {
    fn on_request(&self, req: &mut http::request::Parts, cx: &mut StreamCtx) -> Action {
        let strip = self.enforce && self.strip_unknown;
        let mut stripped = false;
        for v in req.headers.get_all(COOKIE) {
            for p in parse::pairs(v.as_bytes()) {
                if self.lookup(p.name).is_none() {
                    let action = if strip { "stripped" } else { "logged" };
                    self.violation(None, Violation::UnknownCookie, p.name, &cx.route, action);
                    if strip {
                        self.act(None, Act::Stripped);
                        stripped = true;
                    }
                }
            }
        }
        if stripped {
            let mut kept = Vec::new();
            for v in req.headers.get_all(COOKIE) {
                for p in parse::pairs(v.as_bytes()) {
                    if self.lookup(p.name).is_some() {
                        if !kept.is_empty() {
                            kept.extend_from_slice(b"; ");
                        }
                        kept.extend_from_slice(p.raw);
                    }
                }
            }
            req.headers.remove(COOKIE);
            if !kept.is_empty() {
                if let Ok(v) = HeaderValue::from_bytes(&kept) {
                    req.headers.insert(COOKIE, v);
                }
            }
        }
        Action::Continue
    }

    fn on_response(&self, rsp: &mut http::response::Parts, cx: &mut StreamCtx) -> Action {
        let mut date: Option<SystemTime> = None;
        let headers = &rsp.headers;
        let mut reference = || *date.get_or_insert_with(|| response_date(headers));
        let mut rebuilt: Option<Vec<HeaderValue>> = None;
        for (i, v) in headers.get_all(SET_COOKIE).iter().enumerate() {
            let outcome = self.check_set_cookie(v.as_bytes(), &mut reference, &cx.route);
            if rebuilt.is_none() && !matches!(outcome, Outcome::Keep) {
                rebuilt = Some(
                    headers
                        .get_all(SET_COOKIE)
                        .iter()
                        .take(i)
                        .cloned()
                        .collect(),
                );
            }
            if let Some(out) = rebuilt.as_mut() {
                match outcome {
                    Outcome::Keep => out.push(v.clone()),
                    Outcome::Replace(nv) => out.push(nv),
                    Outcome::Drop => {}
                }
            }
        }
        if let Some(out) = rebuilt {
            rsp.headers.remove(SET_COOKIE);
            for v in out {
                rsp.headers.append(SET_COOKIE, v);
            }
        }
        Action::Continue
    }
}
