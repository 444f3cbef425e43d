//! The config safety toolkit: semantic lints, route tests, explain, diff and
//! template rendering — the offline tools CI runs before a config ships, and the
//! `/explain` admin endpoint. Docs: docs/validation.md.
//!
//! The CLI side lives here; `explain` and `test-routes` evaluate the compiled
//! snapshot, while the source-level lints and diff (which read the raw config and
//! its source map) live beside the raw types in `config::lint` and `config::diff`.

pub mod cli;
pub mod diff;
pub mod explain;
pub mod render;
pub mod routetest;

pub use crate::config::lint::{Finding, Severity};
