//! Envoy v3 `Cluster`, `RouteConfiguration` and `Listener` resources translated into
//! attache's own config types, so that what a control plane sends is compiled and
//! validated exactly as a YAML file is.
//!
//! The rule (docs/xds-subset.md): a field attache cannot honour is a [`Nack`] naming
//! the field, never silently ignored. Each translator takes the fields it supports
//! out of a copy of the resource; whatever is left that differs from the protobuf
//! default is found by [`leftover`] and refused. So a field added to the Envoy API
//! later, or one nobody thought of, is refused by default rather than dropped.
//!
//! Translators build a `serde_yaml::Value` shaped like attache's YAML and deserialize
//! it into the raw types: the same `deny_unknown_fields` schema a file goes through,
//! and a form tests can embed in a whole config to run the full validation.

// Control planes still send deprecated fields (header `exact_match`, a cluster's
// `http2_protocol_options` …); they must be read, or refused by name, not ignored.
#![allow(deprecated)]

mod cluster;
pub mod dynamic;
pub mod endpoints;
mod listener;
mod route;

use std::fmt::{self, Debug};

use envoy_types::pb::envoy::config::core::v3 as core;
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3 as tls;
use envoy_types::pb::google::protobuf::{Any, Duration};
use serde_yaml::{Mapping, Value};

pub use cluster::cluster;
pub use listener::listener;
pub use route::route_configuration;

/// Why a resource was refused: the resource, the field path inside it, and what
/// attache cannot do with it. Sent back as the NACK's `error_detail`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Nack {
    pub resource: String,
    pub field: String,
    pub message: String,
}

/// A [`Nack`] of `resource` at `field`.
pub fn nack(resource: &str, field: &str, message: impl Into<String>) -> Nack {
    Nack {
        resource: resource.to_string(),
        field: field.to_string(),
        message: message.into(),
    }
}

impl fmt::Display for Nack {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}: {}", self.resource, self.field, self.message)
    }
}

impl std::error::Error for Nack {}

/// Where a translator is inside one resource: its name and the field path so far.
#[derive(Clone)]
pub(crate) struct At<'a> {
    resource: &'a str,
    path: String,
}

impl<'a> At<'a> {
    pub(crate) fn root(resource: &'a str) -> Self {
        At {
            resource,
            path: String::new(),
        }
    }

    /// The path one field further in.
    pub(crate) fn at(&self, field: &str) -> At<'a> {
        At {
            resource: self.resource,
            path: join(&self.path, field),
        }
    }

    /// The path to element `i` of the list field `field`.
    pub(crate) fn item(&self, field: &str, i: usize) -> At<'a> {
        self.at(&format!("{field}[{i}]"))
    }

    /// A refusal at `field` (relative to here).
    pub(crate) fn nack(&self, field: &str, message: impl Into<String>) -> Nack {
        Nack {
            resource: self.resource.to_string(),
            field: join(&self.path, field),
            message: message.into(),
        }
    }

    /// Refuses whatever the translator left in `rest` (see the module doc).
    pub(crate) fn done<M: Default + PartialEq + Debug>(&self, rest: &M) -> Result<(), Nack> {
        match leftover(rest) {
            None => Ok(()),
            Some(field) => Err(self.nack(&field, "not supported by attache")),
        }
    }
}

fn join(path: &str, field: &str) -> String {
    match (path.is_empty(), field.is_empty()) {
        (true, _) => field.to_string(),
        (_, true) => path.to_string(),
        _ => format!("{path}.{field}"),
    }
}

/// The first top-level field of `rest` that is not at its protobuf default, by name;
/// `None` when `rest` is all defaults. prost messages carry no reflection, so the
/// names come from the pretty `Debug` form, where every top-level field starts a line
/// indented by exactly four spaces.
pub(crate) fn leftover<M: Default + PartialEq + Debug>(rest: &M) -> Option<String> {
    if *rest == M::default() {
        return None;
    }
    let got = top_fields(&format!("{rest:#?}"));
    let default = top_fields(&format!("{:#?}", M::default()));
    let differs = got
        .iter()
        .find(|(name, block)| default.iter().all(|(n, b)| n != name || b != block));
    Some(differs.map_or_else(|| "(unnamed field)".to_string(), |(n, _)| n.clone()))
}

/// `(field name, its whole pretty-printed block)` for each top-level field.
fn top_fields(pretty: &str) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for line in pretty.lines().skip(1) {
        let top = line.strip_prefix("    ").filter(|l| !l.starts_with(' '));
        match top.and_then(|l| l.split_once(':')) {
            Some((name, _)) if is_ident(name) => out.push((name.to_string(), line.to_string())),
            _ => {
                if let Some((_, block)) = out.last_mut() {
                    block.push('\n');
                    block.push_str(line);
                }
            }
        }
    }
    out
}

fn is_ident(s: &str) -> bool {
    !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// A YAML mapping from `(key, value)` pairs, leaving out `Null` values (unset keys).
pub(crate) fn map<const N: usize>(pairs: [(&str, Value); N]) -> Value {
    let mut m = Mapping::new();
    for (k, v) in pairs {
        if !v.is_null() {
            m.insert(Value::String(k.to_string()), v);
        }
    }
    Value::Mapping(m)
}

pub(crate) fn string(s: &str) -> Value {
    Value::String(s.to_string())
}

/// An optional string: empty (the protobuf default) is unset.
pub(crate) fn opt_string(s: &str) -> Value {
    if s.is_empty() {
        Value::Null
    } else {
        string(s)
    }
}

pub(crate) fn opt<T: Into<Value>>(v: Option<T>) -> Value {
    v.map_or(Value::Null, Into::into)
}

/// A protobuf duration as attache writes one (`1500ms`); negative is refused.
pub(crate) fn duration(d: &Option<Duration>, at: &At<'_>, field: &str) -> Result<Value, Nack> {
    let Some(d) = d else { return Ok(Value::Null) };
    if d.seconds < 0 || d.nanos < 0 {
        return Err(at.nack(field, "a negative duration"));
    }
    let ms = (d.seconds as u64)
        .saturating_mul(1000)
        .saturating_add(d.nanos as u64 / 1_000_000);
    if ms == 0 && d.nanos > 0 {
        return Err(at.nack(
            field,
            "durations finer than a millisecond are not supported",
        ));
    }
    Ok(Value::String(format!("{ms}ms")))
}

/// Decodes a typed `Any`, checking its type URL names `M`.
pub(crate) fn unpack<M: prost_otlp::Message + prost_otlp::Name + Default>(
    any: &Any,
    at: &At<'_>,
    field: &str,
) -> Result<M, Nack> {
    if any.type_url != M::type_url() {
        return Err(at.nack(
            field,
            format!("expected {}, got {}", M::type_url(), any.type_url),
        ));
    }
    M::decode(&*any.value).map_err(|e| at.nack(field, format!("undecodable: {e}")))
}

/// The TLS context inside an `envoy.transport_sockets.tls` transport socket (`None`
/// without a socket), and where its fields are.
pub(crate) fn tls_socket<'a, M: prost_otlp::Message + prost_otlp::Name + Default>(
    t: Option<core::TransportSocket>,
    at: &At<'a>,
) -> Result<Option<(M, At<'a>)>, Nack> {
    use core::transport_socket::ConfigType;
    const TLS_SOCKET: &str = "envoy.transport_sockets.tls";
    let Some(mut t) = t else { return Ok(None) };
    if t.name != TLS_SOCKET {
        return Err(at.nack("name", format!("only {TLS_SOCKET}")));
    }
    t.name.clear();
    let Some(ConfigType::TypedConfig(any)) = t.config_type.take() else {
        return Err(at.nack("typed_config", format!("a typed {} is required", M::NAME)));
    };
    at.done(&t)?;
    let at = at.at("typed_config");
    let ctx = unpack(&any, &at, "")?;
    Ok(Some((ctx, at)))
}

/// `host:port` from an Envoy socket address (named ports, pipes and internal
/// addresses are refused).
pub(crate) fn socket_address(a: &Option<core::Address>, at: &At<'_>) -> Result<String, Nack> {
    use core::address::Address as A;
    use core::socket_address::PortSpecifier;
    let Some(A::SocketAddress(sa)) = a.as_ref().and_then(|a| a.address.as_ref()) else {
        return Err(at.nack("", "a socket address is required"));
    };
    let mut rest = sa.clone();
    let host = std::mem::take(&mut rest.address);
    let port = match rest.port_specifier.take() {
        Some(PortSpecifier::PortValue(p)) if p <= 65535 => p,
        _ => return Err(at.nack("socket_address.port_value", "a port 0-65535 is required")),
    };
    at.at("socket_address").done(&rest)?;
    Ok(if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    })
}

/// A file path from a `DataSource`: attache reads certificates and keys from files
/// it watches, so inline bytes are refused.
pub(crate) fn filename(d: &Option<core::DataSource>, at: &At<'_>) -> Result<Value, Nack> {
    use core::data_source::Specifier;
    let Some(d) = d else { return Ok(Value::Null) };
    match (&d.specifier, &d.watched_directory) {
        (Some(Specifier::Filename(f)), None) => Ok(string(f)),
        (_, Some(_)) => Err(at.nack("watched_directory", "not supported by attache")),
        _ => Err(at.nack("", "only a filename is supported (inline data is not)")),
    }
}

/// The parts of a `CommonTlsContext` attache has: one certificate and key (files),
/// the trusted CA, SAN matchers, ALPN and the minimum TLS version.
pub(crate) struct CommonTls {
    pub cert_chain: Value,
    pub private_key: Value,
    pub ca: Value,
    pub sans: Vec<San>,
    pub alpn: Value,
    pub min_version: Value,
}

pub(crate) fn common_tls(
    c: &Option<tls::CommonTlsContext>,
    at: &At<'_>,
) -> Result<CommonTls, Nack> {
    let mut rest = c.clone().unwrap_or_default();
    let (cert_chain, private_key) = match rest.tls_certificates.len() {
        0 => (Value::Null, Value::Null),
        1 => {
            let mut cert = rest.tls_certificates.remove(0);
            let at = at.item("tls_certificates", 0);
            let chain = filename(&cert.certificate_chain.take(), &at.at("certificate_chain"))?;
            let key = filename(&cert.private_key.take(), &at.at("private_key"))?;
            at.done(&cert)?;
            (chain, key)
        }
        _ => {
            return Err(at.nack(
                "tls_certificates",
                "one certificate per filter chain (SNI certificates are not translated)",
            ))
        }
    };
    let (ca, sans) = validation(
        rest.validation_context_type.take(),
        &at.at("validation_context"),
    )?;
    let alpn = std::mem::take(&mut rest.alpn_protocols);
    let alpn = if alpn.is_empty() {
        Value::Null
    } else {
        Value::Sequence(alpn.iter().map(|p| string(p)).collect())
    };
    let min_version = tls_params(rest.tls_params.take(), &at.at("tls_params"))?;
    at.done(&rest)?;
    Ok(CommonTls {
        cert_chain,
        private_key,
        ca,
        sans,
        alpn,
        min_version,
    })
}

/// A SAN rule as `(exact|prefix|suffix, value)`.
type San = (&'static str, String);

fn validation(
    v: Option<tls::common_tls_context::ValidationContextType>,
    at: &At<'_>,
) -> Result<(Value, Vec<San>), Nack> {
    use tls::common_tls_context::ValidationContextType as V;
    let mut v = match v {
        None => return Ok((Value::Null, Vec::new())),
        Some(V::ValidationContext(v)) => v,
        Some(_) => return Err(at.nack("", "only an inline validation_context (no SDS)")),
    };
    let ca = filename(&v.trusted_ca.take(), &at.at("trusted_ca"))?;
    let mut sans = Vec::new();
    for (i, m) in std::mem::take(&mut v.match_typed_subject_alt_names)
        .into_iter()
        .enumerate()
    {
        sans.push(san(m, &at.item("match_typed_subject_alt_names", i))?);
    }
    at.done(&v)?;
    Ok((ca, sans))
}

/// One typed SAN matcher as `(exact|prefix|suffix, value)`: attache matches DNS and
/// URI SANs by string.
fn san(mut m: tls::SubjectAltNameMatcher, at: &At<'_>) -> Result<San, Nack> {
    use envoy_types::pb::envoy::r#type::matcher::v3::string_matcher::MatchPattern as P;
    use tls::subject_alt_name_matcher::SanType;
    let ty = std::mem::take(&mut m.san_type);
    if ty != SanType::Dns as i32 && ty != SanType::Uri as i32 {
        return Err(at.nack("san_type", "only DNS and URI SANs are matched"));
    }
    let Some(mut sm) = m.matcher.take() else {
        return Err(at.nack("matcher", "a matcher is required"));
    };
    let out = match sm.match_pattern.take() {
        Some(P::Exact(s)) => ("exact", s),
        Some(P::Prefix(s)) => ("prefix", s),
        Some(P::Suffix(s)) => ("suffix", s),
        _ => return Err(at.nack("matcher", "only exact, prefix and suffix SAN matchers")),
    };
    at.at("matcher").done(&sm)?;
    at.done(&m)?;
    Ok(out)
}

fn tls_params(p: Option<tls::TlsParameters>, at: &At<'_>) -> Result<Value, Nack> {
    use tls::tls_parameters::TlsProtocol;
    let Some(mut p) = p else {
        return Ok(Value::Null);
    };
    let min = match TlsProtocol::try_from(std::mem::take(&mut p.tls_minimum_protocol_version)) {
        Ok(TlsProtocol::TlsAuto) => Value::Null,
        Ok(TlsProtocol::TlSv12) => string("1.2"),
        Ok(TlsProtocol::TlSv13) => string("1.3"),
        _ => {
            return Err(at.nack(
                "tls_minimum_protocol_version",
                "attache speaks TLS 1.2 and 1.3 only",
            ))
        }
    };
    if matches!(
        TlsProtocol::try_from(std::mem::take(&mut p.tls_maximum_protocol_version)),
        Ok(TlsProtocol::TlSv10 | TlsProtocol::TlSv11)
    ) {
        return Err(at.nack(
            "tls_maximum_protocol_version",
            "attache speaks TLS 1.2 and 1.3 only",
        ));
    }
    at.done(&p)?;
    Ok(min)
}

/// Deserializes a translated value into a raw config type, through the same schema a
/// YAML file goes through.
pub(crate) fn into_raw<T: serde::de::DeserializeOwned>(v: Value, at: &At<'_>) -> Result<T, Nack> {
    serde_yaml::from_value(v).map_err(|e| at.nack("", format!("translation failed: {e}")))
}

/// Builders and a whole-config check shared by the translators' tests.
#[cfg(test)]
pub(crate) mod tests_util {
    use envoy_types::pb::envoy::config::core::v3 as core;
    use envoy_types::pb::google::protobuf::{Any, Duration, UInt32Value};
    use serde_yaml::Value;

    pub fn addr(host: &str, port: u32) -> core::Address {
        core::Address {
            address: Some(core::address::Address::SocketAddress(core::SocketAddress {
                address: host.into(),
                port_specifier: Some(core::socket_address::PortSpecifier::PortValue(port)),
                ..Default::default()
            })),
        }
    }

    pub fn dur(seconds: i64, nanos: i32) -> Duration {
        Duration { seconds, nanos }
    }

    pub fn u32v(value: u32) -> UInt32Value {
        UInt32Value { value }
    }

    pub fn any<M: prost_otlp::Message + prost_otlp::Name>(m: &M) -> Any {
        Any {
            type_url: M::type_url(),
            value: m.encode_to_vec(),
        }
    }

    /// Runs a whole config holding the translated `listeners` and `clusters` (and a
    /// static cluster for each name in `static_clusters`) through attache's loader:
    /// the validation a YAML file gets.
    pub fn compiles(listeners: &[Value], clusters: &[Value], static_clusters: &[&str]) {
        let mut all: Vec<Value> = clusters.to_vec();
        for name in static_clusters {
            let yaml = format!("{{ name: {name}, endpoints: [\"127.0.0.1:1\"] }}");
            all.push(serde_yaml::from_str(&yaml).expect("cluster yaml"));
        }
        let doc = super::map([
            (
                "admin",
                super::map([("address", super::string("127.0.0.1:0"))]),
            ),
            ("listeners", Value::Sequence(listeners.to_vec())),
            ("clusters", Value::Sequence(all)),
        ]);
        let text = serde_yaml::to_string(&doc).expect("yaml");
        let stats = crate::stats::Stats::new();
        let services = attache_filters::Services::default();
        if let Err(d) =
            crate::config::load_str("xds.yaml", &text, &|_| None, &stats, &services, false)
        {
            panic!("translated config does not compile: {d:?}\n{text}");
        }
    }

    /// [`compiles`] for virtual hosts, served by one listener.
    pub fn compiles_routes(hosts: &[Value], clusters: &[&str]) {
        let l = super::map([
            ("name", super::string("l")),
            ("address", super::string("127.0.0.1:0")),
            ("virtual_hosts", Value::Sequence(hosts.to_vec())),
        ]);
        compiles(&[l], &[], clusters);
    }

    pub fn compiles_listener(listener: &Value, clusters: &[&str]) {
        compiles(std::slice::from_ref(listener), &[], clusters);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::envoy::config::cluster::v3::Cluster;

    #[test]
    fn leftover_names_the_first_field_set() {
        assert_eq!(leftover(&Cluster::default()), None);
        let c = Cluster {
            alt_stat_name: "x".into(),
            ..Default::default()
        };
        assert_eq!(leftover(&c).as_deref(), Some("alt_stat_name"));
        let c = Cluster {
            respect_dns_ttl: true,
            ..Default::default()
        };
        assert_eq!(leftover(&c).as_deref(), Some("respect_dns_ttl"));
    }

    #[test]
    fn durations_are_written_in_milliseconds() {
        let at = At::root("r");
        let d = |seconds, nanos| Some(Duration { seconds, nanos });
        assert_eq!(duration(&d(1, 500_000_000), &at, "t"), Ok(string("1500ms")));
        assert_eq!(duration(&None, &at, "t"), Ok(Value::Null));
        assert!(duration(&d(-1, 0), &at, "t").is_err());
        assert!(duration(&d(0, 5), &at, "t").is_err());
    }
}
