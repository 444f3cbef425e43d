//! `local_rate_limit`: a token bucket per listener (or per route, through
//! `filter_overrides`), answering 429 with `retry-after` when empty. Lock-free: the
//! bucket is one atomic word updated with compare-and-swap.
//!
//! ```yaml
//! - local_rate_limit: { max_tokens: 100, tokens_per_fill: 100, fill_interval: 1s }
//! ```
//! Each listener (and each route override) has its own bucket, rebuilt (full) when
//! the config is reloaded.

mod config;
mod filter;
pub mod stats;

pub use config::Config;
pub use filter::{Bucket, Factory, Filter};

#[cfg(test)]
mod tests;
