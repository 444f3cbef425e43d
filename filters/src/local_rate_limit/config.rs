//! `local_rate_limit` config.

use serde::Deserialize;

use crate::api::ConfigError;
use crate::duration::ConfigDuration;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Bucket size: the largest burst (and the starting fill).
    pub max_tokens: u32,
    /// Tokens added every `fill_interval` (default: `max_tokens`).
    #[serde(default)]
    pub tokens_per_fill: Option<u32>,
    /// Default 1s.
    #[serde(default)]
    pub fill_interval: Option<ConfigDuration>,
}

impl Config {
    pub fn validate(&self) -> Vec<ConfigError> {
        let mut errs = Vec::new();
        if self.max_tokens == 0 {
            errs.push(ConfigError::at(
                "max_tokens",
                "max_tokens must be at least 1",
            ));
        }
        if self.tokens_per_fill == Some(0) {
            errs.push(ConfigError::at(
                "tokens_per_fill",
                "tokens_per_fill must be at least 1",
            ));
        }
        if let Some(d) = self.fill_interval {
            if d.get() < std::time::Duration::from_millis(1) {
                errs.push(ConfigError::at(
                    "fill_interval",
                    "fill_interval must be at least 1ms",
                ));
            }
        }
        errs
    }
}
