//! attache's compiled-in HTTP filters and the API they implement.
//!
//! Each filter lives in its own module with its typed config, its metrics and its
//! tests; [`registry`] maps YAML names to factories.

pub mod api;
pub mod cookie_audit;
pub mod cors;
pub mod duration;
pub mod grpc;
pub mod grpc_web;
pub mod headers;
pub mod local_rate_limit;
pub mod origin;
pub mod ratelimit;
pub mod registry;
pub mod services;
pub mod sli;
pub mod stats;
pub mod web_security;

pub use api::{
    Action, ConfigError, FactoryContext, Host, HttpFilter, HttpFilterFactory, PathSeg, StreamCtx,
};
pub use services::Services;
pub use stats::Stats;

#[cfg(test)]
mod testing;
