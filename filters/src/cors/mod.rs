//! `cors`: cross-origin resource sharing. A filter of its own (not a section of
//! `web_security`) so that a route can override or disable just CORS with
//! `filter_overrides: { cors: {...} }` / `cors: disabled`.
//!
//! ```yaml
//! - cors:
//!     allowed_origins: ["https://app.example.com", { suffix: ".example.com" }]
//!     allowed_methods: [GET, POST, PUT]
//!     allowed_headers: [content-type, x-request-id]
//!     expose_headers: [x-request-id]
//!     allow_credentials: true
//!     max_age: 10m
//! ```

mod config;
mod filter;

pub use config::Config;
pub use filter::{Factory, Filter, Result, CORS_TOTAL};

#[cfg(test)]
mod tests;
