//! `cookie_audit`: every cookie that passes must be one we expect, with the
//! attributes we expect.
//!
//! ```yaml
//! - cookie_audit:
//!     mode: enforce          # audit (default) | enforce
//!     unknown: strip         # allow (default) | strip
//!     fix: true              # enforce: repair instead of dropping
//!     cookies:
//!       - { name: session, same_site: Strict, max_lifetime: 30d, domain: app.example.com }
//!     allowed: [_ga]         # expected, attributes not checked
//! ```

mod config;
mod filter;
pub mod parse;
pub mod stats;

pub use config::{Config, Mode, Policy, SameSite, Unknown};
pub use filter::{Factory, Filter};

#[cfg(test)]
mod tests;
