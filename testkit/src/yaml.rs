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

/// One HTTP listener on 127.0.0.1:0 with one virtual host for every domain
/// (`domains: ["*"]`), the routes a test writes out, and clusters with static
/// endpoints. The listener is `main` and the virtual host `web` unless
/// [`names`](Self::names) says otherwise:
///
/// ```
/// # use attache_testkit::yaml::Routes;
/// let origin: std::net::SocketAddr = "127.0.0.1:8080".parse().unwrap();
/// let yaml = Routes::new(
///     "- match: { prefix: /deny }
///   direct_response: { status: 403 }
/// - match: { prefix: / }
///   route: { cluster: origin }",
/// )
/// .listener_key("http: { idle_timeout: 400ms }")
/// .cluster("origin", &[origin], "")
/// .yaml();
/// assert!(yaml.contains("        routes:\n          - match: { prefix: /deny }\n"));
/// ```
#[derive(Clone, Debug)]
pub struct Routes {
    listener: String,
    address: String,
    vhost: String,
    listener_keys: String,
    routes: String,
    clusters: String,
}

impl Routes {
    /// `routes`: the items of the virtual host's `routes:` list, written from
    /// column 0 (`- match: ...`).
    pub fn new(routes: &str) -> Routes {
        Routes {
            listener: "main".into(),
            address: "127.0.0.1:0".into(),
            vhost: "web".into(),
            listener_keys: String::new(),
            routes: indent(routes, 10),
            clusters: String::new(),
        }
    }

    pub fn names(mut self, listener: &str, vhost: &str) -> Routes {
        self.listener = listener.into();
        self.vhost = vhost.into();
        self
    }

    /// The listener's address (`127.0.0.1:0` unless set: a test that needs another
    /// one holds it).
    pub fn address(mut self, address: &str) -> Routes {
        self.address = address.into();
        self
    }

    /// Keys of the listener (YAML written from column 0, one or more lines).
    pub fn listener_key(mut self, yaml: &str) -> Routes {
        self.listener_keys.push_str(&indent(yaml, 4));
        self
    }

    /// A cluster with these static endpoints (none: its `keys` say how it finds
    /// them) and `keys` (YAML written from column 0, may be empty).
    pub fn cluster(mut self, name: &str, endpoints: &[SocketAddr], keys: &str) -> Routes {
        let _ = writeln!(self.clusters, "  - name: {name}");
        if !endpoints.is_empty() {
            let quoted: Vec<String> = endpoints.iter().map(|a| format!("\"{a}\"")).collect();
            let _ = writeln!(self.clusters, "    endpoints: [{}]", quoted.join(", "));
        }
        self.clusters.push_str(&indent(keys, 4));
        self
    }

    pub fn yaml(&self) -> String {
        let clusters = match self.clusters.is_empty() {
            true => String::new(),
            false => format!("clusters:\n{}", self.clusters),
        };
        format!(
            "listeners:\n  - name: {listener}\n    address: {address}\n{listener_keys}    \
             virtual_hosts:\n      - name: {vhost}\n        domains: [\"*\"]\n        routes:\n\
             {routes}{clusters}",
            listener = self.listener,
            address = self.address,
            listener_keys = self.listener_keys,
            vhost = self.vhost,
            routes = self.routes,
        )
    }
}

/// [`Routes`] with one catch-all route to one cluster, the shape most proxy tests
/// start from: the virtual host is `all`, the listener `main` and the cluster `o`
/// unless [`names`](Self::names) says otherwise.
#[derive(Clone, Debug)]
pub struct OneRoute {
    listener: String,
    cluster: String,
    endpoints: Vec<SocketAddr>,
    listener_keys: Vec<String>,
    route_keys: Vec<String>,
    cluster_keys: String,
}

impl OneRoute {
    pub fn to(endpoints: &[SocketAddr]) -> OneRoute {
        OneRoute {
            listener: "main".into(),
            cluster: "o".into(),
            endpoints: endpoints.to_vec(),
            listener_keys: Vec::new(),
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
        self.listener_keys.push(yaml.into());
        self
    }

    /// A key of the route action, in flow style: `timeout: 60s`.
    pub fn route_key(mut self, flow: &str) -> OneRoute {
        self.route_keys.push(flow.into());
        self
    }

    /// Keys of the cluster (YAML written from column 0, one or more lines).
    pub fn cluster_key(mut self, yaml: &str) -> OneRoute {
        self.cluster_keys.push_str(yaml);
        self.cluster_keys.push('\n');
        self
    }

    pub fn yaml(&self) -> String {
        let mut route = format!("cluster: {}", self.cluster);
        for k in &self.route_keys {
            let _ = write!(route, ", {k}");
        }
        let routes = format!("- match: {{ prefix: / }}\n  route: {{ {route} }}");
        let with_keys = self
            .listener_keys
            .iter()
            .fold(Routes::new(&routes), |r, k| r.listener_key(k));
        with_keys
            .names(&self.listener, "all")
            .cluster(&self.cluster, &self.endpoints, &self.cluster_keys)
            .yaml()
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
    fn routes_writes_the_routes_and_clusters_given() {
        let a: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let got = Routes::new("- match: { prefix: /x }\n  direct_response: { status: 403 }")
            .names("edge", "any")
            .listener_key("access_log: { path: stdout }")
            .cluster("a", &[a], "")
            .cluster("b", &[], "discovery: { file: { path: eps.yaml } }")
            .yaml();
        let want = r#"listeners:
  - name: edge
    address: 127.0.0.1:0
    access_log: { path: stdout }
    virtual_hosts:
      - name: any
        domains: ["*"]
        routes:
          - match: { prefix: /x }
            direct_response: { status: 403 }
clusters:
  - name: a
    endpoints: ["127.0.0.1:1"]
  - name: b
    discovery: { file: { path: eps.yaml } }
"#;
        assert_eq!(got, want);
        let direct_only = Routes::new("- match: { prefix: / }\n  direct_response: { status: 200 }");
        assert!(
            direct_only.yaml().ends_with("{ status: 200 }\n"),
            "no clusters: section"
        );
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
