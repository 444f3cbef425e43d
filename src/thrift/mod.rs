//! Apache Thrift: the wire codec, compiled routes, and the per-connection proxy.
//!
//! Integration: build a [`ListenerCtx`] per listener at config compile time (from
//! the compiled [`Settings`], the metrics registry and the snapshot's clusters),
//! then run [`serve_connection`] for each accepted (and,
//! when configured, TLS-terminated) connection.

pub mod codec;
pub mod proxy;
pub mod routes;
pub mod stats;
pub mod upstream;

#[cfg(test)]
mod tests;

pub use proxy::{serve_connection, serve_connection_until, ListenerCtx, Settings};
pub use routes::{Routes, UpstreamFraming};
pub use upstream::Clusters;
