//! The filter API: factories turn typed config into shared filter state once per
//! config load; filters run per request in three phases.
//!
//! Phases, in the order the proxy calls them for one stream:
//!
//! 1. [`HttpFilter::on_request`] after the request head is decoded, normalised and
//!    routed, before anything is sent upstream. A filter may edit the head or answer
//!    locally with [`Action::Respond`]; later filters' `on_request` then do not run.
//! 2. [`HttpFilter::on_response`] when the response head is known: from the upstream,
//!    or a local reply (the proxy's own, or another filter's). Runs in reverse chain
//!    order, like Envoy's encoder filters. `Respond` replaces the response.
//! 3. [`HttpFilter::on_complete`] once the stream has ended (body finished, failed or
//!    the client went away). Always runs, for every filter on the chain; metrics and
//!    logs go here.

use std::sync::Arc;

use bytes::Bytes;
use http::{request, response, Response, StatusCode};
use serde::de::DeserializeOwned;

use crate::services::Services;
use crate::stats::Stats;

/// What a filter wants the proxy to do next.
#[derive(Debug)]
pub enum Action {
    /// Carry on with the next filter, then the upstream.
    Continue,
    /// Answer the client with this response; the upstream is never contacted.
    Respond(Response<Bytes>),
}

impl Action {
    /// A small local reply with a plain-text body.
    pub fn respond(status: StatusCode, body: &'static str) -> Action {
        let mut rsp = Response::new(Bytes::from_static(body.as_bytes()));
        *rsp.status_mut() = status;
        rsp.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("text/plain"),
        );
        Action::Respond(rsp)
    }
}

/// One segment of a path into the YAML document, relative to the filter's config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathSeg {
    Key(String),
    Index(usize),
}

/// A problem with a filter's config. `path` is relative to the filter's own config
/// mapping (empty = the whole config); the config loader turns it into FILE:LINE:COL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub path: Vec<PathSeg>,
    pub message: String,
}

impl ConfigError {
    pub fn new(message: impl Into<String>) -> ConfigError {
        ConfigError {
            path: Vec::new(),
            message: message.into(),
        }
    }

    /// An error located at `key` (a dotted path such as `csrf.allowed_origins`).
    pub fn at(key: &str, message: impl Into<String>) -> ConfigError {
        let path = key
            .split('.')
            .filter(|s| !s.is_empty())
            .map(|s| match s.parse::<usize>() {
                Ok(i) => PathSeg::Index(i),
                Err(_) => PathSeg::Key(s.to_string()),
            })
            .collect();
        ConfigError {
            path,
            message: message.into(),
        }
    }

    /// Prefix this error's path with `seg`.
    pub fn under(mut self, seg: PathSeg) -> ConfigError {
        self.path.insert(0, seg);
        self
    }
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// What a factory gets when it builds a filter: where to register metrics and which
/// listener (and, for per-route overrides, which route) the filter serves.
pub struct FactoryContext<'a> {
    /// The proxy's stats; register metrics here, never in a global registry.
    pub stats: &'a Stats,
    /// The listener's configured name (a bounded metric label).
    pub listener: &'a str,
    /// Whether the listener terminates TLS (e.g. HSTS only makes sense then).
    pub tls: bool,
    /// Process-lifetime state that survives config reloads (e.g. the `/sli` board).
    /// The proxy creates one [`Services`] per process and hands it to every factory.
    pub services: &'a Services,
}

/// Turns typed config into a filter. One implementation per filter; registered in
/// [`crate::registry`].
pub trait HttpFilterFactory: Send + Sync + 'static {
    /// The YAML key: `- headers: {...}`.
    const NAME: &'static str;
    /// The filter's config, `#[serde(deny_unknown_fields)]`.
    type Config: DeserializeOwned;
    /// Every semantic problem with the config, all at once.
    fn validate(_cfg: &Self::Config) -> Vec<ConfigError> {
        Vec::new()
    }
    /// Build shared state once per config load (compiled regexes, metric handles).
    fn build(
        cfg: Self::Config,
        cx: &FactoryContext<'_>,
    ) -> Result<Arc<dyn HttpFilter>, ConfigError>;
}

/// Per-stream facts and scratch space shared by the filters of one chain.
#[derive(Debug, Default)]
pub struct StreamCtx {
    /// The matched route's name ("" when no route matched).
    pub route: Arc<str>,
    /// The cluster the request went to, when known.
    pub cluster: Option<Arc<str>>,
    /// Final response status, set before `on_response` and `on_complete`.
    pub status: Option<StatusCode>,
    /// The response was produced by the proxy (no route, upstream failure, a filter).
    pub local_reply: bool,
    /// Short response flag (NR, UH, UF, UO, UT, UR, URX, DC) when the proxy answered.
    /// A filter that answers a request may name its own (`local_rate_limit`: `RL`);
    /// the core logs and counts it when it is one of attache's flags.
    pub response_flag: Option<&'static str>,
    /// Host (or :authority) of the request, lower case, without port.
    pub host: Option<Host>,
    /// True when the downstream connection is TLS.
    pub downstream_tls: bool,
    /// The verified peer certificate's SANs (mTLS listeners).
    pub peer_sans: Vec<String>,
    /// Request method, kept for the response side.
    pub method: http::Method,
    /// How the request speaks gRPC (`content-type: application/grpc*`), if it does.
    pub grpc: Option<crate::grpc::Kind>,
    /// The call's gRPC status, set before `on_complete` for gRPC requests: from the
    /// response trailers, or the headers of a trailers-only response. A stream that
    /// ended without one is `INTERNAL` (upstream reset, or no trailers), `CANCELLED`
    /// when the client went away, or mapped from the HTTP status of a non-gRPC answer.
    pub grpc_status: Option<crate::grpc::Code>,
    /// Seconds from request start to `on_complete`.
    pub duration: Option<std::time::Duration>,
    /// Per-filter scratch state, indexed by the filter's position in the chain.
    pub scratch: Vec<Option<Box<dyn std::any::Any + Send + Sync>>>,
    /// Typed per-stream state a filter carries from `on_request` to `on_response`
    /// (filters do not know their chain position, so `scratch` is hard for them to
    /// use). Keyed by type; each filter uses a private type. The core leaves it empty.
    pub extensions: http::Extensions,
}

/// A request's host as [`StreamCtx::host`] carries it (lower case, no port). Reads as a
/// `&str` (`Deref`). Hosts up to [`Host::INLINE`] bytes, nearly all of them, are kept
/// inline: setting the host of a stream does not allocate.
#[derive(Clone)]
pub struct Host(HostRepr);

#[derive(Clone)]
enum HostRepr {
    Inline { len: u8, buf: [u8; Host::INLINE] },
    Heap(Box<str>),
}

impl Host {
    /// The longest host kept without a heap allocation.
    pub const INLINE: usize = 62;

    pub fn new(host: &str) -> Host {
        let b = host.as_bytes();
        if b.len() <= Host::INLINE {
            let mut buf = [0u8; Host::INLINE];
            buf[..b.len()].copy_from_slice(b);
            Host(HostRepr::Inline {
                len: b.len() as u8,
                buf,
            })
        } else {
            Host(HostRepr::Heap(host.into()))
        }
    }

    pub fn as_str(&self) -> &str {
        match &self.0 {
            // Always whole UTF-8: `new` copies a complete `&str`.
            HostRepr::Inline { len, buf } => {
                std::str::from_utf8(&buf[..usize::from(*len)]).unwrap_or_default()
            }
            HostRepr::Heap(s) => s,
        }
    }
}

impl Default for Host {
    fn default() -> Host {
        Host::new("")
    }
}

impl std::ops::Deref for Host {
    type Target = str;
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl AsRef<str> for Host {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl From<&str> for Host {
    fn from(s: &str) -> Host {
        Host::new(s)
    }
}

impl PartialEq for Host {
    fn eq(&self, other: &Host) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for Host {}

impl PartialEq<str> for Host {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for Host {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl std::fmt::Debug for Host {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self.as_str(), f)
    }
}

impl std::fmt::Display for Host {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A filter instance: shared by every stream on the listener (or route).
pub trait HttpFilter: Send + Sync + std::fmt::Debug {
    /// Request head phase. See the module docs for ordering.
    fn on_request(&self, _req: &mut request::Parts, _cx: &mut StreamCtx) -> Action {
        Action::Continue
    }
    /// A request the proxy refuses before the chain's `on_request` ran (an `rbac`
    /// denial), in chain order: look, do not act or count, so that `on_response`
    /// can still shape the refusal (`cors`: the headers that let a browser read
    /// it).
    fn on_refused_request(&self, _req: &request::Parts, _cx: &mut StreamCtx) {}
    /// Response head phase, reverse chain order.
    fn on_response(&self, _rsp: &mut response::Parts, _cx: &mut StreamCtx) -> Action {
        Action::Continue
    }
    /// After the stream ended. Always runs.
    fn on_complete(&self, _cx: &StreamCtx) {}
}

#[cfg(test)]
mod tests {
    use super::Host;

    #[test]
    fn host_reads_back_inline_and_heap() {
        for s in [
            "",
            "a",
            "api.example.com",
            &"h".repeat(Host::INLINE),
            &"l".repeat(300),
        ] {
            let h = Host::new(s);
            assert_eq!(h.as_str(), s);
            assert_eq!(&*h, s);
            assert_eq!(h.clone(), Host::from(s));
            assert_eq!(format!("{h}"), s);
            assert_eq!(format!("{h:?}"), format!("{s:?}"));
        }
        assert_eq!(Host::new("é.example"), "é.example");
        assert_eq!(Host::default(), "");
    }
}
