//! `headers`: add, set and remove request and response headers.
//!
//! ```yaml
//! - headers:
//!     request:  { set: { x-env: prod }, add: { via: attache }, remove: [x-debug] }
//!     response: { set: { cache-control: no-store }, remove: [server] }
//! ```

mod config;
mod filter;

pub use config::Config;
pub use filter::{Factory, Filter};

#[cfg(test)]
mod tests;
