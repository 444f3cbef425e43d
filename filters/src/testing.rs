//! Test helpers: build filters through the registry and read metrics back.

use std::sync::Arc;

use crate::api::{ConfigError, FactoryContext, HttpFilter};
use crate::{registry, Services, Stats};

/// A process-like environment: one Stats and one Services.
#[derive(Default)]
pub struct Harness {
    pub stats: Stats,
    pub services: Services,
}

impl Harness {
    pub fn try_build(
        &self,
        name: &str,
        yaml: &str,
        tls: bool,
    ) -> Result<Arc<dyn HttpFilter>, Vec<ConfigError>> {
        let raw: serde_yaml::Value = serde_yaml::from_str(yaml).expect("test yaml");
        let cx = FactoryContext {
            stats: &self.stats,
            listener: "web",
            tls,
            services: &self.services,
        };
        registry::get(name).expect("registered").build(&raw, &cx)
    }

    pub fn build(&self, name: &str, yaml: &str) -> Arc<dyn HttpFilter> {
        self.try_build(name, yaml, false).expect("builds")
    }

    /// The value of counter `name` with exactly these label values (0 if absent).
    pub fn counter(&self, name: &str, labels: &[(&str, &str)]) -> u64 {
        self.series(name, labels)
            .map(|m| m.get_counter().get_value() as u64)
            .unwrap_or(0)
    }

    /// The sum of every series of counter `name`.
    pub fn counter_sum(&self, name: &str) -> u64 {
        self.stats
            .registry()
            .gather()
            .iter()
            .filter(|f| f.name() == name)
            .flat_map(|f| {
                f.get_metric()
                    .iter()
                    .map(|m| m.get_counter().get_value() as u64)
            })
            .sum()
    }

    /// Sample count of histogram `name` with these labels.
    pub fn histogram_count(&self, name: &str, labels: &[(&str, &str)]) -> u64 {
        self.series(name, labels)
            .map(|m| m.get_histogram().get_sample_count())
            .unwrap_or(0)
    }

    /// Number of label sets of metric `name`.
    pub fn cardinality(&self, name: &str) -> usize {
        self.stats
            .registry()
            .gather()
            .iter()
            .find(|f| f.name() == name)
            .map(|f| f.get_metric().len())
            .unwrap_or(0)
    }

    fn series(&self, name: &str, labels: &[(&str, &str)]) -> Option<prometheus::proto::Metric> {
        let fams = self.stats.registry().gather();
        let fam = fams.into_iter().find(|f| f.name() == name)?;
        fam.get_metric()
            .iter()
            .find(|m| {
                let got = m.get_label();
                got.len() == labels.len()
                    && labels
                        .iter()
                        .all(|(k, v)| got.iter().any(|l| l.name() == *k && l.value() == *v))
            })
            .cloned()
    }
}

pub fn error_paths(errs: &[ConfigError]) -> Vec<Vec<crate::PathSeg>> {
    errs.iter().map(|e| e.path.clone()).collect()
}

pub fn path(p: &str) -> Vec<crate::PathSeg> {
    ConfigError::at(p, "").path
}
