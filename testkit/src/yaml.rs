//! Config builders for the shape most proxy tests start from, so that a test spells
//! out only the keys it is about:
//!
//! ```
//! # use attache_testkit::yaml::OneRoute;
//! let origin: std::net::SocketAddr = "127.0.0.1:8080".parse().unwrap();
//! let yaml = OneRoute::to(&[origin])
//!     .route_key("timeout: 60s")
//!     .cluster_key("circuit_breakers: { max_requests: 2 }")
//!     .yaml();
//! assert!(yaml.contains("route: { cluster: o, timeout: 60s }"));
//! ```

use std::fmt::Write;
use std::net::SocketAddr;

/// One HTTP listener on 127.0.0.1:0 whose catch-all virtual host (`all`, domain
/// `*`) sends every request to one cluster with static endpoints (none: the cluster
/// keys say how it finds them, e.g. `discovery:`). The listener is `main` and the
/// cluster `o` unless [`names`](Self::names) says otherwise.
#[derive(Clone, Debug)]
pub struct OneRoute {
    listener: String,
    cluster: String,
    endpoints: Vec<SocketAddr>,
    listener_keys: String,
    route_keys: Vec<String>,
    cluster_keys: String,
}

impl OneRoute {
    pub fn to(endpoints: &[SocketAddr]) -> OneRoute {
        OneRoute {
            listener: "main".into(),
            cluster: "o".into(),
            endpoints: endpoints.to_vec(),
            listener_keys: String::new(),
            route_keys: Vec::new(),
            cluster_keys: String::new(),
        }
    }

    pub fn names(mut self, listener: &str, cluster: &str) -> OneRoute {
        self.listener = listener.into();
        self.cluster = cluster.into();
        self
    }

    /// Keys of the listener (YAML written from column 0, one or more lines).
    pub fn listener_key(mut self, yaml: &str) -> OneRoute {
        self.listener_keys.push_str(&indent(yaml, 4));
        self
    }

    /// A key of the route action, in flow style: `timeout: 60s`.
    pub fn route_key(mut self, flow: &str) -> OneRoute {
        self.route_keys.push(flow.into());
        self
    }

    /// Keys of the cluster (YAML written from column 0, one or more lines).
    pub fn cluster_key(mut self, yaml: &str) -> OneRoute {
        self.cluster_keys.push_str(&indent(yaml, 4));
        self
    }

    pub fn yaml(&self) -> String {
        let mut route = format!("cluster: {}", self.cluster);
        for k in &self.route_keys {
            let _ = write!(route, ", {k}");
        }
        let endpoints: Vec<String> = self.endpoints.iter().map(|a| format!("\"{a}\"")).collect();
        let endpoints = match endpoints.is_empty() {
            true => String::new(),
            false => format!("    endpoints: [{}]\n", endpoints.join(", ")),
        };
        format!(
            "listeners:\n  - name: {listener}\n    address: 127.0.0.1:0\n{listener_keys}    \
             virtual_hosts:\n      - name: all\n        domains: [\"*\"]\n        routes:\n          \
             - match: {{ prefix: / }}\n            route: {{ {route} }}\n\
             clusters:\n  - name: {cluster}\n{endpoints}{cluster_keys}",
            listener = self.listener,
            listener_keys = self.listener_keys,
            cluster = self.cluster,
            cluster_keys = self.cluster_keys,
        )
    }
}

/// One Thrift listener `t` on 127.0.0.1:0: `keys` are its keys after
/// `protocol: thrift` (`thrift:`, `rbac:`, `tls:` ... written at four spaces, as
/// they stand in the file), `clusters` the items of `clusters:` (at two).
pub fn thrift_listener(keys: &str, clusters: &str) -> String {
    format!(
        "
listeners:
  - name: t
    address: 127.0.0.1:0
    protocol: thrift
{keys}
clusters:
{clusters}
"
    )
}

/// `yaml` with each non-empty line indented by `n` spaces, each ending in a newline.
pub fn indent(yaml: &str, n: usize) -> String {
    let pad = " ".repeat(n);
    yaml.lines()
        .filter(|l| !l.trim().is_empty())
        .fold(String::new(), |mut out, l| {
            let _ = writeln!(out, "{pad}{l}");
            out
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_route_writes_the_whole_shape() {
        let a: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let b: SocketAddr = "127.0.0.1:2".parse().unwrap();
        let got = OneRoute::to(&[a, b])
            .names("web", "app")
            .listener_key("http: { request_head_timeout: 1s }")
            .route_key("timeout: 5s")
            .cluster_key("health_check:\n  tcp: {}\n  interval: 200ms")
            .yaml();
        let want = r#"listeners:
  - name: web
    address: 127.0.0.1:0
    http: { request_head_timeout: 1s }
    virtual_hosts:
      - name: all
        domains: ["*"]
        routes:
          - match: { prefix: / }
            route: { cluster: app, timeout: 5s }
clusters:
  - name: app
    endpoints: ["127.0.0.1:1", "127.0.0.1:2"]
    health_check:
      tcp: {}
      interval: 200ms
"#;
        assert_eq!(got, want);
    }

    #[test]
    fn one_route_without_endpoints_leaves_them_to_the_cluster_keys() {
        let got = OneRoute::to(&[])
            .cluster_key("discovery: { dns: { name: \"localhost:1\" } }")
            .yaml();
        assert!(
            got.ends_with("  - name: o\n    discovery: { dns: { name: \"localhost:1\" } }\n"),
            "{got}"
        );
    }
}
