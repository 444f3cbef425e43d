//! The `headers` filter: pre-parsed header names and values, applied per request.

use std::sync::Arc;

use http::{HeaderMap, HeaderName, HeaderValue};

use super::config::{Config, Edits};
use crate::api::{Action, ConfigError, FactoryContext, HttpFilter, HttpFilterFactory, StreamCtx};

#[derive(Debug, Default)]
struct Compiled {
    set: Vec<(HeaderName, HeaderValue)>,
    add: Vec<(HeaderName, HeaderValue)>,
    remove: Vec<HeaderName>,
}

impl Compiled {
    fn apply(&self, headers: &mut HeaderMap) {
        for name in &self.remove {
            headers.remove(name);
        }
        for (name, value) in &self.set {
            headers.insert(name.clone(), value.clone());
        }
        for (name, value) in &self.add {
            headers.append(name.clone(), value.clone());
        }
    }
}

fn compile(edits: &Edits, side: &str, errors: &mut Vec<ConfigError>) -> Compiled {
    let mut out = Compiled::default();
    let mut pairs = |map: &std::collections::BTreeMap<String, String>, op: &str| {
        let mut v = Vec::new();
        for (n, val) in map {
            let key = format!("{side}.{op}.{n}");
            let Ok(h) = HeaderName::from_bytes(n.as_bytes()) else {
                errors.push(ConfigError::at(
                    &key,
                    format!("`{n}` is not a valid header name"),
                ));
                continue;
            };
            match HeaderValue::from_str(val) {
                Ok(hv) => v.push((h, hv)),
                Err(_) => errors.push(ConfigError::at(
                    &key,
                    format!("value of `{n}` is not a valid header value"),
                )),
            }
        }
        v
    };
    out.set = pairs(&edits.set, "set");
    out.add = pairs(&edits.add, "add");
    for (i, n) in edits.remove.iter().enumerate() {
        match HeaderName::from_bytes(n.as_bytes()) {
            Ok(h) => out.remove.push(h),
            Err(_) => errors.push(ConfigError::at(
                &format!("{side}.remove.{i}"),
                format!("`{n}` is not a valid header name"),
            )),
        }
    }
    out
}

/// Builds [`Filter`] from [`Config`].
pub struct Factory;

impl HttpFilterFactory for Factory {
    const NAME: &'static str = "headers";
    type Config = Config;

    fn validate(cfg: &Config) -> Vec<ConfigError> {
        let mut errors = Vec::new();
        compile(&cfg.request, "request", &mut errors);
        compile(&cfg.response, "response", &mut errors);
        errors
    }

    fn build(cfg: Config, _cx: &FactoryContext<'_>) -> Result<Arc<dyn HttpFilter>, ConfigError> {
        let mut errors = Vec::new();
        let request = compile(&cfg.request, "request", &mut errors);
        let response = compile(&cfg.response, "response", &mut errors);
        match errors.into_iter().next() {
            Some(e) => Err(e),
            None => Ok(Arc::new(Filter { request, response })),
        }
    }
}

/// Applies pre-compiled header edits.
#[derive(Debug)]
pub struct Filter {
    request: Compiled,
    response: Compiled,
}

impl HttpFilter for Filter {
    fn on_request(&self, req: &mut http::request::Parts, _cx: &mut StreamCtx) -> Action {
        self.request.apply(&mut req.headers);
        Action::Continue
    }

    fn on_response(&self, rsp: &mut http::response::Parts, _cx: &mut StreamCtx) -> Action {
        self.response.apply(&mut rsp.headers);
        Action::Continue
    }
}
