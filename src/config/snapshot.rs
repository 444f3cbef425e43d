//! The compiled, immutable config: what the data path reads through one atomic
//! pointer. A reload builds a new one and swaps it in.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use attache_filters::HttpFilter;

use super::raw;
use crate::router::Router;
use crate::stats::ListenerStats;
use crate::upstream::Cluster;

pub struct Snapshot {
    pub admin_address: SocketAddr,
    pub admin_token: Option<String>,
    pub drain_timeout: Duration,
    pub listeners: Vec<Arc<Listener>>,
    pub clusters: Arc<HashMap<String, Arc<Cluster>>>,
    /// The config after `${VAR}` expansion, for `/config_dump` (redacted there).
    pub effective: serde_yaml::Value,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessLogCfg {
    pub path: String,
    pub format: raw::AccessLogFormat,
}

pub struct Listener {
    pub name: Arc<str>,
    pub address: SocketAddr,
    pub protocol: raw::ListenerProtocol,
    pub stats: ListenerStats,
    pub access_log: Option<AccessLogCfg>,
    pub http: Option<HttpSettings>,
    pub tcp: Option<TcpSettings>,
    pub thrift: Option<Arc<crate::thrift::ListenerCtx>>,
    /// TLS termination (certificates rotate underneath without a reload).
    pub tls: Option<Arc<crate::tls::ServerTls>>,
}

pub struct HttpSettings {
    pub router: Router,
    /// The listener's chain, used when no route matched.
    pub filters: Arc<[Arc<dyn HttpFilter>]>,
    pub max_header_bytes: usize,
    pub max_headers: usize,
    pub max_uri_bytes: usize,
    /// `merge_slashes`, `escaped_slashes`, `path_with_backslash`,
    /// `path_with_double_encoding`.
    pub path_rules: crate::http::normalize::Rules,
    pub idle_timeout: Duration,
    pub request_head_timeout: Duration,
    /// `default_host_for_http_10`, checked as an authority.
    pub default_host_http10: Option<http::HeaderValue>,
    pub headers_with_underscores: raw::HeadersWithUnderscores,
    pub generate_request_id: bool,
    pub retry_buffer_bytes: usize,
}

pub struct TcpSettings {
    pub cluster: Arc<Cluster>,
    pub settings: crate::tcp::Settings,
    pub counters: crate::tcp::TcpCounters,
}
