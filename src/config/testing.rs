//! Unit-test helpers that build runtime pieces from YAML text through the same
//! compile steps as a config file, so tests outside `src/config/` never name a
//! raw type.

use std::sync::Arc;

use attache_filters::Stats;

use super::compile::{cluster_settings, thrift_listener as compile_thrift};
use super::endpoints::Spec;
use super::raw;
use super::Problem;
use crate::stats::{ClusterStats, FleetStats};
use crate::upstream::Cluster;

/// A cluster from one `clusters:` entry, with `endpoints` as its endpoint set.
pub(crate) fn cluster(yaml: &str, endpoints: Vec<Spec>, stats: &Stats) -> Arc<Cluster> {
    let cfg: raw::Cluster = serde_yaml::from_str(yaml).expect("cluster yaml");
    Cluster::new(
        &cfg.name,
        cluster_settings(&cfg),
        endpoints,
        ClusterStats::new(stats, &cfg.name),
        FleetStats::new(stats, &cfg.name),
        None,
    )
}

/// A listener's `thrift:` block, compiled; problems as `compile` reports them.
pub(crate) fn thrift_listener(yaml: &str) -> Result<crate::thrift::Settings, Vec<Problem>> {
    let t: raw::ThriftListener = serde_yaml::from_str(yaml).expect("thrift yaml");
    compile_thrift(&t)
}
