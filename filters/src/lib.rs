//! attache's compiled-in HTTP filters and the API they implement.
//!
//! Each filter lives in its own module with its typed config, its metrics and its
//! tests; [`registry`] maps YAML names to factories.

pub mod api;
pub mod headers;
pub mod registry;
pub mod stats;

pub use api::{
    Action, ConfigError, FactoryContext, HttpFilter, HttpFilterFactory, PathSeg, StreamCtx,
};
pub use stats::Stats;
