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
    /// `admin.allowed_hosts`, lower case.
    pub admin_allowed_hosts: Vec<String>,
    /// The probe-only `health_listener` address.
    pub health_address: Option<SocketAddr>,
    pub drain_timeout: Duration,
    pub listeners: Vec<Arc<Listener>>,
    pub clusters: Arc<HashMap<String, Arc<Cluster>>>,
    /// The config after `${VAR}` expansion, for `/config_dump` (redacted there).
    pub effective: serde_yaml::Value,
    /// The `xds:` management server.
    pub xds: Option<Arc<crate::xds::Settings>>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct AccessLogCfg {
    /// `stdout`, `stderr` or a file path.
    pub path: String,
    pub format: Arc<crate::accesslog::Format>,
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
    /// Read a PROXY protocol header first.
    pub proxy_protocol: Option<crate::proxy_protocol::Settings>,
    /// PROXY headers received without opting in (HTTP listeners count them).
    pub unexpected_proxy_header: Option<prometheus::IntCounter>,
    /// The listener's authorization (HTTP routes may replace it).
    pub rbac: Option<Arc<crate::rbac::Rbac>>,
    /// Trace propagation and span export (`tracing:`), HTTP listeners only.
    pub tracing: Option<Arc<crate::trace::Tracer>>,
}

pub struct HttpSettings {
    pub router: Router,
    /// The listener's chain, used when no route matched.
    pub filters: Arc<[Arc<dyn HttpFilter>]>,
    /// The names of `filters`, in chain order (for `/explain`).
    pub filter_names: Box<[Arc<str>]>,
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
    pub http2: Http2Settings,
    /// gRPC call metrics of calls no route matched (route label `_none`).
    pub grpc_no_route: Arc<crate::http::grpc::RouteStats>,
}

/// The HTTP/2 SETTINGS a listener advertises; `http.http2` in the config.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Http2Settings {
    pub max_concurrent_streams: u32,
    pub initial_stream_window_size: u32,
    pub initial_connection_window_size: u32,
    pub max_frame_size: u32,
}

impl Default for Http2Settings {
    fn default() -> Self {
        Http2Settings {
            max_concurrent_streams: 100,
            initial_stream_window_size: 1024 * 1024,
            initial_connection_window_size: 1024 * 1024,
            max_frame_size: 16 * 1024,
        }
    }
}

pub struct TcpSettings {
    pub cluster: Arc<Cluster>,
    pub settings: crate::tcp::Settings,
    pub counters: crate::tcp::TcpCounters,
}
