//! `web_security`: safe defaults for internal websites: security response headers
//! and CSRF protection for unsafe methods. CORS is the separate [`crate::cors`]
//! filter so routes can override it on its own (`filter_overrides: { cors: ... }`).
//!
//! ```yaml
//! - web_security:
//!     frame_options: SAMEORIGIN
//!     content_security_policy: "default-src 'self'"
//!     csrf: { mode: shadow, allowed_origins: ["https://admin.example.com", { suffix: ".corp.example.com" }] }
//! ```

mod config;
mod filter;
pub mod stats;

pub use config::{Config, Csrf, MissingOrigin, Mode, Setting};
pub use filter::{Factory, Filter, CSRF_BODY};

#[cfg(test)]
mod tests;
