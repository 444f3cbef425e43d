//! Placeholder until the `xds-translate` branch lands (the lead replaces this file):
//! Envoy Cluster / RouteConfiguration / Listener → attache's raw config.

use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::listener::v3::Listener;
use envoy_types::pb::envoy::config::route::v3::RouteConfiguration;

use crate::config::raw;

/// Why a resource was rejected: its name, the field path and attache's message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Nack {
    pub resource: String,
    pub field: String,
    pub message: String,
}

impl std::fmt::Display for Nack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}: {}", self.resource, self.field, self.message)
    }
}

fn unsupported(resource: &str) -> Nack {
    Nack {
        resource: resource.to_string(),
        field: String::new(),
        message: "not supported yet".to_string(),
    }
}

pub fn cluster(c: &Cluster) -> Result<raw::Cluster, Nack> {
    Err(unsupported(&c.name))
}

pub fn route_configuration(rc: &RouteConfiguration) -> Result<Vec<raw::VirtualHost>, Nack> {
    Err(unsupported(&rc.name))
}

pub fn listener(
    l: &Listener,
    _rds: &dyn Fn(&str) -> Option<Vec<raw::VirtualHost>>,
) -> Result<raw::Listener, Nack> {
    Err(unsupported(&l.name))
}
