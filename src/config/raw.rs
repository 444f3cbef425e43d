//! Raw config types: exactly the YAML schema (v1), `deny_unknown_fields` everywhere.
//! Values are checked and compiled in `compile/`; this file only describes shape.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::duration::Dur;

// Plain enums runtime code uses as they are: defined in `config::types`, read here.
pub use super::types::{
    ForwardClientCert, HeadersWithUnderscores, ListenerProtocol, RbacAction, RbacMode,
};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub admin: Admin,
    /// A second, probe-only endpoint: `GET /ready` and `GET /live`.
    #[serde(default)]
    pub health_listener: Option<HealthListener>,
    /// How long SIGTERM / `quitquitquit` wait for in-flight requests (default 10s).
    #[serde(default)]
    pub drain_timeout: Option<Dur>,
    #[serde(default)]
    pub listeners: Vec<Listener>,
    #[serde(default)]
    pub clusters: Vec<Cluster>,
    /// Trace propagation and OTLP span export for every HTTP listener.
    #[serde(default)]
    pub tracing: Option<Tracing>,
    /// An Envoy v3 xDS management server (docs/xds.md).
    #[serde(default)]
    pub xds: Option<Xds>,
}

/// `xds:` (docs/xds.md): where dynamic resources come from.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Xds {
    /// A static cluster (`protocol: http2`) whose endpoints serve the ADS stream; its
    /// TLS, connect timeout and health checks apply.
    pub cluster: String,
    pub node: XdsNode,
    /// Resource types taken from the server (default `[eds]`).
    #[serde(default)]
    pub resources: Option<Vec<XdsType>>,
    /// How long startup waits for the first answer per resource (default 15s).
    #[serde(default)]
    pub initial_fetch_timeout: Option<Dur>,
    /// First reconnect delay, doubled up to `max_backoff`, with jitter (default 500ms).
    #[serde(default)]
    pub backoff: Option<Dur>,
    /// Longest reconnect delay (default 30s).
    #[serde(default)]
    pub max_backoff: Option<Dur>,
    /// The ADS protocol: state of the world (default) or incremental (delta).
    #[serde(default)]
    pub api_type: Option<XdsApiType>,
}

/// `xds.api_type`, as Envoy's `api_type` of an `ads_config`.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum XdsApiType {
    /// `StreamAggregatedResources`, state of the world.
    #[serde(alias = "AGGREGATED_GRPC")]
    AggregatedGrpc,
    /// `DeltaAggregatedResources`, incremental.
    #[serde(alias = "AGGREGATED_DELTA_GRPC")]
    AggregatedDeltaGrpc,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct XdsNode {
    pub id: String,
    /// Envoy's `--service-cluster`.
    #[serde(default)]
    pub cluster: Option<String>,
    #[serde(default)]
    pub locality: Option<XdsLocality>,
}

#[derive(Debug, Clone, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields)]
pub struct XdsLocality {
    #[serde(default)]
    pub region: Option<String>,
    #[serde(default)]
    pub zone: Option<String>,
    #[serde(default)]
    pub sub_zone: Option<String>,
}

/// An xDS resource type, by its Envoy short name.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum XdsType {
    Eds,
    Cds,
    Lds,
    Rds,
}

/// `tracing:` (docs/tracing.md).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Tracing {
    /// The OTLP/HTTP collector, `IP:PORT` (plain HTTP).
    pub collector: String,
    /// Default `/v1/traces`.
    #[serde(default)]
    pub path: Option<String>,
    /// Share of new traces sampled, 0.0 to 1.0 (default 1.0); an incoming decision wins.
    #[serde(default)]
    pub sampling: Option<f64>,
    /// `service.name` of the exported resource (default `attache`).
    #[serde(default)]
    pub service_name: Option<String>,
    /// Spans per export request (default 512).
    #[serde(default)]
    pub batch_size: Option<usize>,
    /// Longest wait before a partial batch is sent (default 1s).
    #[serde(default)]
    pub flush_interval: Option<Dur>,
    /// Spans held waiting for export; more are dropped (default 4096).
    #[serde(default)]
    pub max_queue: Option<usize>,
    /// Bound on one export request, connect included (default 5s).
    #[serde(default)]
    pub export_timeout: Option<Dur>,
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Admin {
    /// Default `127.0.0.1:9901`.
    #[serde(default)]
    pub address: Option<String>,
    /// Bearer token required on every POST when set.
    #[serde(default)]
    pub token: Option<String>,
    /// Host names (besides loopback, `localhost` and the admin's own address) that
    /// admin requests may carry in `Host`.
    #[serde(default)]
    pub allowed_hosts: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthListener {
    pub address: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Listener {
    pub name: String,
    pub address: String,
    #[serde(default)]
    pub protocol: ListenerProtocol,
    #[serde(default)]
    pub tls: Option<ListenerTls>,
    #[serde(default)]
    pub access_log: Option<AccessLog>,
    /// Ordered filter chain; each item is a one-key mapping `name: config`.
    #[serde(default)]
    pub filters: Vec<BTreeMap<String, serde_yaml::Value>>,
    #[serde(default)]
    pub http: Option<HttpOptions>,
    #[serde(default)]
    pub virtual_hosts: Vec<VirtualHost>,
    #[serde(default)]
    pub thrift: Option<ThriftListener>,
    #[serde(default)]
    pub tcp: Option<TcpListener>,
    /// Read a PROXY protocol header (v1 or v2) before anything else, TLS included.
    #[serde(default)]
    pub proxy_protocol: Option<ProxyProtocol>,
    /// Authorization of every request (HTTP), call (Thrift) or connection (TCP).
    #[serde(default)]
    pub rbac: Option<Rbac>,
}

/// `proxy_protocol: true`, or a mapping of options (which implies true).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum ProxyProtocol {
    Enabled(bool),
    Options(ProxyProtocolOptions),
}

#[derive(Debug, Clone, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields)]
pub struct ProxyProtocolOptions {
    /// Peers (the load balancers) allowed to connect, as CIDRs; others are closed.
    #[serde(default)]
    pub allowed_sources: Vec<String>,
    /// Bound on receiving the header (default 3s).
    #[serde(default)]
    pub timeout: Option<Dur>,
}

/// Envoy's RBAC shape: a policy matches when one of its principals (who) and one
/// of its permissions (what) match; the first matching policy decides.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rbac {
    #[serde(default)]
    pub mode: RbacMode,
    #[serde(default)]
    pub action: RbacAction,
    pub policies: Vec<RbacPolicy>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RbacPolicy {
    pub name: String,
    /// Any one matches; none listed = anyone.
    #[serde(default)]
    pub principals: Vec<RbacPrincipal>,
    /// Any one matches; none listed = anything.
    #[serde(default)]
    pub permissions: Vec<RbacPermission>,
}

/// Who: every key given must hold.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RbacPrincipal {
    /// A verified client certificate SAN (URI, e.g. a SPIFFE ID, or DNS).
    #[serde(default)]
    pub peer_san: Option<SanMatcher>,
    /// The source address (the PROXY protocol's when the listener reads one).
    #[serde(default)]
    pub source_ip: Option<String>,
    /// `true`: any verified client certificate; `false`: none.
    #[serde(default)]
    pub authenticated: Option<bool>,
}

/// What: every key given must hold; keys belong to the listener's protocol.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RbacPermission {
    // HTTP
    #[serde(default)]
    pub prefix: Option<String>,
    #[serde(default)]
    pub path: Option<String>,
    #[serde(default)]
    pub methods: Vec<String>,
    #[serde(default)]
    pub headers: Vec<HeaderMatcher>,
    // Thrift
    #[serde(default)]
    pub service: Option<String>,
    #[serde(default)]
    pub method: Option<String>,
    // TCP
    #[serde(default)]
    pub destination_port: Option<u16>,
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct HttpOptions {
    /// Total request header bytes (default 60 KiB, as Envoy).
    #[serde(default)]
    pub max_request_headers_kb: Option<u32>,
    /// Request target (path + query) bytes (default 16384); longer gets 414.
    #[serde(default)]
    pub max_uri_bytes: Option<u32>,
    /// Number of request headers (default 100).
    #[serde(default)]
    pub max_headers: Option<u32>,
    /// Merge `//` in paths before routing (default true).
    #[serde(default)]
    pub merge_slashes: Option<bool>,
    /// `%2F` / `%5C` in paths: `reject` (400, default) or `keep` (left encoded).
    #[serde(default)]
    pub escaped_slashes: Option<EscapedSlashes>,
    /// Close idle downstream keep-alive connections after this (default 1h).
    #[serde(default)]
    pub idle_timeout: Option<Dur>,
    /// Time allowed to receive a whole request head (default 60s).
    #[serde(default)]
    pub request_head_timeout: Option<Dur>,
    /// The authority given to HTTP/1.0 requests without `Host` (default: none, 400).
    #[serde(default)]
    pub default_host_for_http_10: Option<String>,
    /// A raw `\` in the path: `reject` (400, default) or `normalize` (read as `/`).
    #[serde(default)]
    pub path_with_backslash: Option<PathWithBackslash>,
    /// `%25XX` in the path: `reject` (400, default) or `keep` (forwarded as sent).
    #[serde(default)]
    pub path_with_double_encoding: Option<DoubleEncoding>,
    /// Request header names with `_`: `allow`, `drop` (default) or `reject`.
    #[serde(default)]
    pub headers_with_underscores: Option<HeadersWithUnderscores>,
    /// Generate `x-request-id` when absent (default true).
    #[serde(default)]
    pub generate_request_id: Option<bool>,
    /// Request bodies up to this size are buffered so retries can replay them
    /// (default 64 KiB); larger or unknown-length bodies stream and are not retried.
    #[serde(default)]
    pub retry_buffer_bytes: Option<u32>,
    /// HTTP/2 settings advertised to clients (bounds on a connection's memory).
    #[serde(default)]
    pub http2: Option<Http2Options>,
}

/// `http.http2`: the SETTINGS a listener advertises (RFC 9113 section 6.5.2).
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Http2Options {
    /// SETTINGS_MAX_CONCURRENT_STREAMS (default 100).
    #[serde(default)]
    pub max_concurrent_streams: Option<u32>,
    /// SETTINGS_INITIAL_WINDOW_SIZE: bytes a client may send on one stream before
    /// the proxy reads them (default 1 MiB).
    #[serde(default)]
    pub initial_stream_window_size: Option<u32>,
    /// Connection-level flow-control window (default 1 MiB).
    #[serde(default)]
    pub initial_connection_window_size: Option<u32>,
    /// SETTINGS_MAX_FRAME_SIZE (default 16384).
    #[serde(default)]
    pub max_frame_size: Option<u32>,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum EscapedSlashes {
    Reject,
    Keep,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum PathWithBackslash {
    Reject,
    Normalize,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum DoubleEncoding {
    Reject,
    Keep,
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct ListenerTls {
    #[serde(default)]
    pub cert_chain: Option<String>,
    #[serde(default)]
    pub private_key: Option<String>,
    /// Extra certificates chosen by SNI.
    #[serde(default)]
    pub certificates: Vec<SniCertificate>,
    #[serde(default)]
    pub client_ca: Option<String>,
    #[serde(default)]
    pub require_client_cert: Option<bool>,
    #[serde(default)]
    pub allowed_client_sans: Vec<SanMatcher>,
    #[serde(default)]
    pub alpn: Option<Vec<String>>,
    /// `"1.2"` (default) or `"1.3"`.
    #[serde(default)]
    pub min_version: Option<String>,
    #[serde(default)]
    pub handshake_timeout: Option<Dur>,
    #[serde(default)]
    pub forward_client_cert: Option<ForwardClientCert>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SniCertificate {
    pub server_names: Vec<String>,
    pub cert_chain: String,
    pub private_key: String,
}

/// A SAN matcher: a bare string is exact.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum SanMatcher {
    Exact(String),
    Rule(SanRule),
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct SanRule {
    #[serde(default)]
    pub exact: Option<String>,
    #[serde(default)]
    pub prefix: Option<String>,
    #[serde(default)]
    pub suffix: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccessLog {
    /// `stdout`, `stderr` or a file path.
    pub path: String,
    /// `json` (default), `text`, or a text template with `%OPERATOR%`s.
    #[serde(default)]
    pub format: Option<String>,
    /// A JSON object with these keys, each value a template.
    #[serde(default)]
    pub json_format: Option<serde_yaml::Mapping>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VirtualHost {
    pub name: String,
    pub domains: Vec<String>,
    #[serde(default)]
    pub routes: Vec<Route>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Route {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(rename = "match")]
    pub matcher: RouteMatch,
    #[serde(default)]
    pub route: Option<RouteAction>,
    #[serde(default)]
    pub redirect: Option<Redirect>,
    #[serde(default)]
    pub direct_response: Option<DirectResponse>,
    /// Per-route filter config: `name: disabled` or `name: {config}`.
    #[serde(default)]
    pub filter_overrides: BTreeMap<String, serde_yaml::Value>,
    /// Replaces the listener's `rbac` for requests on this route.
    #[serde(default)]
    pub rbac: Option<Rbac>,
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RouteMatch {
    #[serde(default)]
    pub prefix: Option<String>,
    #[serde(default)]
    pub path: Option<String>,
    #[serde(default)]
    pub regex: Option<String>,
    #[serde(default)]
    pub headers: Vec<HeaderMatcher>,
    #[serde(default)]
    pub query: Vec<QueryMatcher>,
    #[serde(default)]
    pub methods: Vec<String>,
    /// Matches when any verified peer SAN matches (mTLS listeners).
    #[serde(default)]
    pub peer_san: Option<SanRule>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeaderMatcher {
    pub name: String,
    #[serde(default)]
    pub exact: Option<String>,
    #[serde(default)]
    pub prefix: Option<String>,
    #[serde(default)]
    pub suffix: Option<String>,
    #[serde(default)]
    pub regex: Option<String>,
    #[serde(default)]
    pub present: Option<bool>,
    #[serde(default)]
    pub invert: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueryMatcher {
    pub name: String,
    #[serde(default)]
    pub exact: Option<String>,
    #[serde(default)]
    pub regex: Option<String>,
    #[serde(default)]
    pub present: Option<bool>,
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RouteAction {
    #[serde(default)]
    pub cluster: Option<String>,
    #[serde(default)]
    pub weighted_clusters: Option<Vec<WeightedCluster>>,
    #[serde(default)]
    pub cluster_header: Option<String>,
    /// Time to the upstream's response headers, retries included (default 15s; `0s` = none).
    #[serde(default)]
    pub timeout: Option<Dur>,
    #[serde(default)]
    pub retries: Option<Retries>,
    #[serde(default)]
    pub prefix_rewrite: Option<String>,
    #[serde(default)]
    pub host_rewrite: Option<String>,
    /// Cap on a gRPC call's `grpc-timeout` (longer ones are cut to this and the
    /// header rewritten); unset = the client's deadline as sent.
    #[serde(default)]
    pub max_grpc_timeout: Option<Dur>,
    /// End a response stream after this long with no bytes either way (default 5m;
    /// `0s` = never).
    #[serde(default)]
    pub stream_idle_timeout: Option<Dur>,
    /// End a stream this long after the request started, whatever it is doing
    /// (default none).
    #[serde(default)]
    pub max_stream_duration: Option<Dur>,
    /// Upgrade protocols (the `Upgrade` header's token, e.g. `websocket`) tunnelled
    /// to the upstream for HTTP/1.1 requests; others have `Upgrade` stripped.
    #[serde(default)]
    pub upgrades: Vec<String>,
    /// Shadow copies of a share of the route's requests to other clusters.
    #[serde(default)]
    pub mirror: Vec<Mirror>,
}

/// One `route.mirror` entry (docs/configuration.md#mirror).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Mirror {
    pub cluster: String,
    /// Share of requests copied, 0 to 100 (fractions allowed; default 100).
    #[serde(default)]
    pub percent: Option<f64>,
    /// Largest request body copied (default 64 KiB); larger or streamed ones are skipped.
    #[serde(default)]
    pub max_body_bytes: Option<usize>,
    /// Bound on the copy (default: the route's timeout, else 15s).
    #[serde(default)]
    pub timeout: Option<Dur>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WeightedCluster {
    pub cluster: String,
    pub weight: u32,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Retries {
    pub attempts: u32,
    #[serde(default)]
    pub retry_on: Vec<String>,
    #[serde(default)]
    pub retriable_status_codes: Vec<u16>,
    #[serde(default)]
    pub per_try_timeout: Option<Dur>,
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Redirect {
    #[serde(default)]
    pub scheme_redirect: Option<String>,
    #[serde(default)]
    pub host_redirect: Option<String>,
    #[serde(default)]
    pub port_redirect: Option<u16>,
    #[serde(default)]
    pub path_redirect: Option<String>,
    #[serde(default)]
    pub prefix_rewrite: Option<String>,
    #[serde(default)]
    pub response_code: Option<u16>,
    #[serde(default)]
    pub strip_query: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DirectResponse {
    pub status: u16,
    #[serde(default)]
    pub body: Option<String>,
    #[serde(default)]
    pub content_type: Option<String>,
}

// Plain enums the runtime uses as they are: defined there, read from YAML here.
pub use crate::upstream::{LbPolicy, UpstreamProtocol};

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Cluster {
    pub name: String,
    /// Static endpoints (weight 1, no zone); or use `discovery:`.
    #[serde(default)]
    pub endpoints: Vec<String>,
    /// Where endpoints come from: `static`, `dns` or `file` (exactly one).
    #[serde(default)]
    pub discovery: Option<Discovery>,
    /// Upper bound on the endpoint set from discovery (default 10,000).
    #[serde(default)]
    pub max_endpoints: Option<u32>,
    /// Active health checking.
    #[serde(default)]
    pub health_check: Option<HealthCheck>,
    /// Below this share (percent) of healthy endpoints, balance over all (default 50).
    #[serde(default)]
    pub panic_threshold: Option<f64>,
    /// Passive health: eject endpoints after consecutive failures.
    #[serde(default)]
    pub outlier_detection: Option<OutlierDetection>,
    #[serde(default)]
    pub circuit_breakers: Option<CircuitBreakers>,
    /// The request key for `lb_policy: ring_hash`.
    #[serde(default)]
    pub hash_on: Option<HashOn>,
    /// Prefer endpoints in the proxy's own zone (`--zone`) when enough are healthy
    /// (default true; no effect without a zone).
    #[serde(default)]
    pub zone_aware: Option<bool>,
    #[serde(default)]
    pub lb_policy: LbPolicy,
    #[serde(default)]
    pub connect_timeout: Option<Dur>,
    #[serde(default)]
    pub protocol: UpstreamProtocol,
    /// Idle pooled connections are closed after this (default 60s).
    #[serde(default)]
    pub idle_timeout: Option<Dur>,
    /// Idle connections kept per endpoint (default 128).
    #[serde(default)]
    pub max_idle_per_endpoint: Option<u32>,
    #[serde(default)]
    pub tls: Option<ClusterTls>,
    /// Thrift upstream framing, when the cluster serves a thrift listener.
    #[serde(default)]
    pub thrift: Option<ThriftUpstream>,
}

/// One endpoint as discovery describes it (the `static` list and discovery files).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct EndpointEntry {
    pub address: String,
    /// Relative share of traffic, 1..=10000 (default 1).
    #[serde(default)]
    pub weight: Option<u32>,
    #[serde(default)]
    pub zone: Option<String>,
}

#[derive(Debug, Clone, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields)]
pub struct Discovery {
    #[serde(rename = "static", default)]
    pub static_endpoints: Option<Vec<EndpointEntry>>,
    #[serde(default)]
    pub dns: Option<DnsDiscovery>,
    #[serde(default)]
    pub file: Option<FileDiscovery>,
    /// Endpoints from the `xds:` management server (ClusterLoadAssignment).
    #[serde(default)]
    pub eds: Option<EdsDiscovery>,
}

#[derive(Debug, Clone, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields)]
pub struct EdsDiscovery {
    /// The ClusterLoadAssignment name (default: the cluster name).
    #[serde(default)]
    pub service_name: Option<String>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DnsDiscovery {
    /// `host:port`; every A/AAAA record becomes an endpoint.
    pub name: String,
    /// Re-resolve this often (default 5s).
    #[serde(default)]
    pub refresh: Option<Dur>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FileDiscovery {
    /// A YAML list of `{ address, weight, zone }`, polled for changes.
    pub path: String,
}

#[derive(Debug, Clone, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields)]
pub struct HealthCheck {
    #[serde(default)]
    pub http: Option<HttpHealthCheck>,
    #[serde(default)]
    pub tcp: Option<TcpHealthCheck>,
    #[serde(default)]
    pub thrift: Option<ThriftHealthCheck>,
    /// `grpc.health.v1.Health/Check` over the cluster's HTTP/2 connections.
    #[serde(default)]
    pub grpc: Option<GrpcHealthCheck>,
    /// Default 5s.
    #[serde(default)]
    pub interval: Option<Dur>,
    /// Default 1s.
    #[serde(default)]
    pub timeout: Option<Dur>,
    /// Consecutive failures that make a healthy endpoint unhealthy (default 3).
    #[serde(default)]
    pub unhealthy_threshold: Option<u32>,
    /// Consecutive successes that make an unhealthy endpoint healthy (default 2).
    #[serde(default)]
    pub healthy_threshold: Option<u32>,
    /// Up to this much random extra delay per interval (default 0s).
    #[serde(default)]
    pub jitter: Option<Dur>,
}

#[derive(Debug, Clone, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields)]
pub struct HttpHealthCheck {
    pub path: String,
    /// Statuses that count as healthy (default: any 2xx).
    #[serde(default)]
    pub expected_statuses: Vec<u16>,
    /// Host header (default: the cluster name).
    #[serde(default)]
    pub host: Option<String>,
}

#[derive(Debug, Clone, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields)]
pub struct TcpHealthCheck {}

#[derive(Debug, Clone, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields)]
pub struct ThriftHealthCheck {
    /// The method to call (no arguments); any reply is healthy.
    pub method: String,
}

#[derive(Debug, Clone, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields)]
pub struct GrpcHealthCheck {
    /// The `service` asked about (default "": the server as a whole).
    #[serde(default)]
    pub service: String,
    /// `:authority` of the check (default: the cluster name).
    #[serde(default)]
    pub authority: Option<String>,
}

#[derive(Debug, Clone, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields)]
pub struct OutlierDetection {
    /// Consecutive 5xx (and resets, timeouts, connect failures) to eject; 0 = off (default 5).
    #[serde(default)]
    pub consecutive_5xx: Option<u32>,
    /// Consecutive connect failures to eject; 0 = off (default 5).
    #[serde(default)]
    pub consecutive_connect_failure: Option<u32>,
    /// Consecutive Thrift exceptions / transport failures to eject; 0 = off (default 5).
    #[serde(default)]
    pub consecutive_exceptions: Option<u32>,
    /// Ejection time = this x the endpoint's number of ejections (default 30s).
    #[serde(default)]
    pub base_ejection_time: Option<Dur>,
    /// Cap on one ejection (default 300s).
    #[serde(default)]
    pub max_ejection_time: Option<Dur>,
    /// At most this share of the cluster is ejected at once (default 10; at least one
    /// endpoint may always be ejected unless 0).
    #[serde(default)]
    pub max_ejection_percent: Option<u32>,
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq, Default)]
#[serde(deny_unknown_fields)]
pub struct CircuitBreakers {
    #[serde(default)]
    pub max_connections: Option<u32>,
    #[serde(default)]
    pub max_pending_requests: Option<u32>,
    #[serde(default)]
    pub max_requests: Option<u32>,
    #[serde(default)]
    pub max_retries: Option<u32>,
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq, Default)]
#[serde(deny_unknown_fields)]
pub struct HashOn {
    #[serde(default)]
    pub header: Option<String>,
    #[serde(default)]
    pub cookie: Option<String>,
    #[serde(default)]
    pub source_ip: Option<bool>,
}

#[derive(Debug, Clone, Deserialize, Default, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ClusterTls {
    #[serde(default)]
    pub ca: Option<String>,
    #[serde(default)]
    pub sni: Option<String>,
    #[serde(default)]
    pub verify_sans: Vec<String>,
    #[serde(default)]
    pub cert_chain: Option<String>,
    #[serde(default)]
    pub private_key: Option<String>,
    #[serde(default)]
    pub alpn: Option<Vec<String>>,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum ThriftTransport {
    #[default]
    Framed,
    Unframed,
    /// THeader (`THeaderTransport`).
    Header,
    Auto,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum ThriftProtocol {
    #[default]
    Binary,
    Compact,
    Auto,
}

#[derive(Debug, Clone, Deserialize, Default, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ThriftUpstream {
    #[serde(default)]
    pub transport: Option<ThriftTransport>,
    #[serde(default)]
    pub protocol: Option<ThriftProtocol>,
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct ThriftListener {
    #[serde(default)]
    pub transport: ThriftTransport,
    #[serde(default)]
    pub protocol: ThriftProtocol,
    /// Default 16 MiB.
    #[serde(default)]
    pub max_message_size: Option<u32>,
    /// Close a downstream connection after this long with no bytes from the client
    /// while no call is in flight (default 1h; `0s` = never).
    #[serde(default)]
    pub idle_timeout: Option<Dur>,
    /// Close a downstream connection when one call (frame or unframed message) is
    /// not complete this long after its first byte arrived (default 30s; `0s` =
    /// never).
    #[serde(default)]
    pub message_timeout: Option<Dur>,
    /// Pipelined calls of one connection forwarded at once (default 1: one after
    /// another); replies still go back in request order.
    #[serde(default)]
    pub max_concurrent_calls: Option<u32>,
    #[serde(default)]
    pub routes: Vec<ThriftRoute>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ThriftRoute {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(rename = "match", default)]
    pub matcher: ThriftMatch,
    pub route: ThriftRouteAction,
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct ThriftMatch {
    #[serde(default)]
    pub method: Option<String>,
    #[serde(default)]
    pub method_prefix: Option<String>,
    #[serde(default)]
    pub service: Option<String>,
    /// THeader info headers, with the HTTP route header matchers' keys.
    #[serde(default)]
    pub headers: Vec<HeaderMatcher>,
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct ThriftRouteAction {
    #[serde(default)]
    pub cluster: Option<String>,
    #[serde(default)]
    pub weighted_clusters: Option<Vec<WeightedCluster>>,
    #[serde(default)]
    pub timeout: Option<Dur>,
    #[serde(default)]
    pub retries: Option<ThriftRetries>,
}

/// Re-send a failed call of an idempotent method (see docs/thrift.md#retries).
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct ThriftRetries {
    /// Retries after the first try; at most 10.
    pub attempts: u32,
    /// `connect-failure`, `timeout`, `reset`, `exception`.
    #[serde(default)]
    pub retry_on: Vec<String>,
    /// The only methods retried (bare names, compared with the method part).
    #[serde(default)]
    pub methods: Vec<String>,
    /// Bound on each try; the route `timeout` bounds all of them together.
    #[serde(default)]
    pub per_try_timeout: Option<Dur>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TcpListener {
    pub cluster: String,
    /// Close the pair after this long with no bytes either way (default 1h).
    #[serde(default)]
    pub idle_timeout: Option<Dur>,
    /// Endpoints tried on connect failure (default 3).
    #[serde(default)]
    pub connect_attempts: Option<u32>,
}
