//! The metrics registry handed to every component: one Prometheus registry, with
//! get-or-register helpers so a config reload re-uses the metric families it already
//! has instead of failing on duplicate registration.

use std::collections::HashMap;
use std::sync::Mutex;

use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry};

/// Latency buckets in seconds, shared by every duration histogram.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

#[derive(Clone)]
enum Family {
    Counter(IntCounterVec),
    Gauge(IntGaugeVec),
    Histogram(HistogramVec),
}

/// One registry for the whole process. Families are created at config-compile time;
/// the request path only touches pre-resolved handles (no lookups, no locks).
pub struct Stats {
    registry: Registry,
    families: Mutex<HashMap<&'static str, Family>>,
}

impl Default for Stats {
    fn default() -> Self {
        Stats::new()
    }
}

impl std::fmt::Debug for Stats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Stats")
    }
}

impl Stats {
    pub fn new() -> Stats {
        Stats {
            registry: Registry::new(),
            families: Mutex::new(HashMap::new()),
        }
    }

    /// The underlying registry, for rendering.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    fn family(&self, name: &'static str, make: impl FnOnce() -> Family) -> Family {
        let mut map = match self.families.lock() {
            Ok(m) => m,
            Err(poisoned) => poisoned.into_inner(),
        };
        if let Some(f) = map.get(name) {
            return f.clone();
        }
        let fam = make();
        let collector: Box<dyn prometheus::core::Collector> = match &fam {
            Family::Counter(c) => Box::new(c.clone()),
            Family::Gauge(g) => Box::new(g.clone()),
            Family::Histogram(h) => Box::new(h.clone()),
        };
        // Registration only fails for a name clash with a different shape, which the
        // map above rules out; a failure would merely leave the family unexported.
        if let Err(e) = self.registry.register(collector) {
            tracing::error!(metric = name, error = %e, "metric registration failed");
        }
        map.insert(name, fam.clone());
        fam
    }

    /// Set every counter of every family to zero (`POST /reset_counters`). Gauges
    /// and histograms are left alone: a gauge is a current value, and a histogram
    /// cannot be reset in place. Handles held elsewhere stay attached.
    pub fn reset_counters(&self) {
        use prometheus::core::Collector;
        let families: Vec<IntCounterVec> = {
            let map = match self.families.lock() {
                Ok(m) => m,
                Err(poisoned) => poisoned.into_inner(),
            };
            map.values()
                .filter_map(|f| match f {
                    Family::Counter(c) => Some(c.clone()),
                    _ => None,
                })
                .collect()
        };
        for vec in families {
            for mf in vec.collect() {
                for m in mf.get_metric() {
                    let labels: HashMap<&str, &str> = m
                        .get_label()
                        .iter()
                        .map(|l| (l.name(), l.value()))
                        .collect();
                    if let Ok(c) = vec.get_metric_with(&labels) {
                        c.reset();
                    }
                }
            }
        }
    }

    /// A counter family (names end in `_total`).
    pub fn counter_vec(&self, name: &'static str, help: &str, labels: &[&str]) -> IntCounterVec {
        let fam = self.family(name, || {
            Family::Counter(
                IntCounterVec::new(Opts::new(name, help), labels)
                    .unwrap_or_else(|e| panic!("metric {name} is malformed in code: {e}")),
            )
        });
        match fam {
            Family::Counter(c) => c,
            _ => panic!("metric {name} registered twice with different types"),
        }
    }

    /// A gauge family.
    pub fn gauge_vec(&self, name: &'static str, help: &str, labels: &[&str]) -> IntGaugeVec {
        let fam = self.family(name, || {
            Family::Gauge(
                IntGaugeVec::new(Opts::new(name, help), labels)
                    .unwrap_or_else(|e| panic!("metric {name} is malformed in code: {e}")),
            )
        });
        match fam {
            Family::Gauge(g) => g,
            _ => panic!("metric {name} registered twice with different types"),
        }
    }

    /// A histogram family with [`LATENCY_BUCKETS`].
    pub fn histogram_vec(&self, name: &'static str, help: &str, labels: &[&str]) -> HistogramVec {
        let fam = self.family(name, || {
            Family::Histogram(
                HistogramVec::new(
                    HistogramOpts::new(name, help).buckets(LATENCY_BUCKETS.to_vec()),
                    labels,
                )
                .unwrap_or_else(|e| panic!("metric {name} is malformed in code: {e}")),
            )
        });
        match fam {
            Family::Histogram(h) => h,
            _ => panic!("metric {name} registered twice with different types"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reset_counters_zeroes_counters_through_held_handles_only() {
        let stats = Stats::new();
        let c = stats
            .counter_vec("t_total", "t", &["a", "b"])
            .with_label_values(&["x", "y"]);
        let g = stats
            .gauge_vec("t_gauge", "t", &["a"])
            .with_label_values(&["x"]);
        c.inc_by(5);
        g.set(3);
        stats.reset_counters();
        assert_eq!(c.get(), 0);
        assert_eq!(g.get(), 3);
        // The held handle is still the exported series.
        c.inc();
        let exported: u64 = stats
            .registry()
            .gather()
            .iter()
            .filter(|f| f.name() == "t_total")
            .flat_map(|f| {
                f.get_metric()
                    .iter()
                    .map(|m| m.get_counter().get_value() as u64)
            })
            .sum();
        assert_eq!(exported, 1);
    }
}
