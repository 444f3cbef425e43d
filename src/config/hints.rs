//! Hints for the mistakes people bring from Envoy and NGINX configs: Envoy key names
//! that attache spells differently, a port where an address goes, Envoy's
//! `socket_address` map, a string (or a comma-separated string) where a list goes.
//! Applied to shape errors in `load.rs`; each returns the message to show.

use serde_yaml::Value;

/// Envoy (and NGINX) key names and what attache calls them.
const FOREIGN_KEYS: &[(&str, &str)] = &[
    ("retry_policy", "attache calls it `retries`, in the route action: `retries: { attempts: 2, retry_on: [5xx, reset] }`"),
    ("num_retries", "attache calls it `attempts`, in `retries`"),
    ("retry_on_status_codes", "attache calls it `retriable_status_codes`, in `retries`"),
    ("safe_regex", "attache takes the pattern itself: `regex: \"^/api/v[0-9]+/\"` (RE2 syntax, whole-path match)"),
    ("socket_address", "attache takes `address: HOST:PORT`, e.g. `address: 0.0.0.0:10000`"),
    ("route_config", "attache puts `virtual_hosts` directly on the listener"),
    ("filter_chains", "attache puts `tls`, `filters` and `virtual_hosts` directly on the listener"),
    ("http_filters", "attache calls them `filters`, on the listener"),
    ("typed_per_filter_config", "attache calls it `filter_overrides`, on the route"),
    ("load_assignment", "attache takes `endpoints: [HOST:PORT, ...]` or `discovery` on the cluster"),
    ("transport_socket", "attache takes `tls:` on the listener or the cluster"),
    ("listen", "attache calls it `address`: `address: 0.0.0.0:10000`"),
    ("dynamic_resources", "attache takes a top-level `xds: { cluster: NAME, node: { id: ID } }` (docs/xds.md)"),
    ("ads_config", "attache takes a top-level `xds: { cluster: NAME, node: { id: ID } }` (docs/xds.md)"),
    ("eds_cluster_config", "attache takes `discovery: { eds: { service_name: NAME } }` on the cluster"),
    ("server_name", "attache calls it `domains`, a list on the virtual host: `domains: [example.com]`"),
];

/// Envoy's cluster `type` has no key in attache: the endpoint source says it.
const CLUSTER_TYPE: &str = "attache has no cluster `type`: write `endpoints: [HOST:PORT, ...]` (Envoy's STATIC), `discovery: { dns: { name: HOST:PORT } }` (STRICT_DNS, LOGICAL_DNS), `discovery: { file: { path: FILE } }` (EDS from a file) or `discovery: { eds: { service_name: NAME } }` (EDS from the `xds:` server)";

/// The message for an unknown key at `path` (dot-separated, ending in `key`).
pub fn unknown_key(path: &str, key: &str, message: String) -> String {
    let segs: Vec<&str> = path.split('.').collect();
    let hint = match segs.as_slice() {
        ["clusters", _, "type"] => Some(CLUSTER_TYPE),
        _ => FOREIGN_KEYS
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, h)| *h),
    };
    match hint {
        Some(h) => format!("unknown key `{key}`: {h}"),
        None => message,
    }
}

/// The message for a type error at `path`, whose value in the document is `value`.
pub fn wrong_type(path: &str, value: Option<&Value>, message: String) -> String {
    let field = path.rsplit('.').next().unwrap_or(path);
    match (field, value) {
        ("address", Some(Value::Number(n))) => format!(
            "a port alone is not an address; write `0.0.0.0:{n}` (every interface) or `127.0.0.1:{n}`"
        ),
        ("address", Some(Value::Mapping(m))) => socket_address(m).unwrap_or(message),
        (_, Some(Value::String(s))) if message.contains("expected a sequence") => {
            format!("{message}; write a list: `{field}: {}`", as_list(s))
        }
        _ => message,
    }
}

/// Envoy's `address: { socket_address: { address: A, port_value: P } }`.
fn socket_address(m: &serde_yaml::Mapping) -> Option<String> {
    let sa = m.get("socket_address")?.as_mapping()?;
    let host = sa
        .get("address")
        .and_then(Value::as_str)
        .unwrap_or("0.0.0.0");
    let port = sa.get("port_value").and_then(Value::as_u64)?;
    let host = if host.contains(':') {
        format!("[{host}]")
    } else {
        host.to_string()
    };
    Some(format!(
        "attache takes `address: HOST:PORT`, not Envoy's `socket_address`; write `address: {host}:{port}`"
    ))
}

/// `a, b` -> `[a, b]`; items YAML would misread (`*`, `:`) are quoted.
fn as_list(s: &str) -> String {
    let items: Vec<String> = s
        .split(',')
        .map(str::trim)
        .filter(|i| !i.is_empty())
        .map(|i| {
            if i.starts_with(['*', '&', '!', '[', '{', '"', '\'']) || i.contains(": ") {
                format!("\"{i}\"")
            } else {
                i.to_string()
            }
        })
        .collect();
    format!("[{}]", items.join(", "))
}

/// The value at a dot-separated path.
pub fn value_at<'a>(root: &'a Value, path: &str) -> Option<&'a Value> {
    let mut cur = root;
    for seg in path.split('.').filter(|s| !s.is_empty()) {
        cur = match cur {
            Value::Mapping(m) => m.get(seg)?,
            Value::Sequence(s) => s.get(seg.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    Some(cur)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_from_strings_and_csv() {
        assert_eq!(as_list("*"), "[\"*\"]");
        assert_eq!(
            as_list("5xx,reset, connect-failure"),
            "[5xx, reset, connect-failure]"
        );
        assert_eq!(as_list("example.com"), "[example.com]");
    }

    #[test]
    fn cluster_type_only_in_clusters() {
        let m = unknown_key("clusters.0.type", "type", "unknown key `type`".into());
        assert!(m.contains("discovery: { dns"), "{m}");
        let m = unknown_key("listeners.0.type", "type", "plain".into());
        assert_eq!(m, "plain");
    }
}
