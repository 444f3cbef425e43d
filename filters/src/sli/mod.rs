//! `sli`: success/error counts and latency per route, and the `/sli` board with
//! success ratios over 1m / 5m / 1h and error budgets for declared objectives.
//!
//! ```yaml
//! - sli:
//!     errors: { statuses: [5xx, 429], local_replies: true }
//!     routes: { public_api: { statuses: [5xx] } }
//!     objectives:
//!       - { name: checkout_availability, routes: [checkout], target: 99.9, window: 30d }
//! ```

mod board;
mod config;
mod filter;

pub use board::{Board, Objective, ObjectiveSpec, Selector, Series, MAX_OBJECTIVES, MAX_SERIES};
pub use config::{Config, Errors, Objective as ObjectiveConfig, StatusPattern};
pub use filter::{
    Factory, Filter, MAX_ROUTES, NO_ROUTE, OTHER_ROUTE, REQUESTS_TOTAL, REQUEST_DURATION,
};

#[cfg(test)]
mod tests;
