//! The test kit of attache: everything the integration tests (and the unit tests
//! that need real peers) share, compiled once instead of once per test binary.
//!
//! - [`proxy`]: the real binary: `attache run` on `127.0.0.1:0` with a ready file
//!   ([`Proxy`]), `attache validate`, the shipped configs
//! - [`client`]: one-shot hyper requests, `curl`, raw bytes, [`eventually`]
//! - [`origin`]: the echoing [`Origin`], a resetting origin, a collector,
//!   [`dead_port`]
//! - [`fleet`]: origins that can be killed and made unhealthy, continuous load
//! - [`pki`]: a per-run CA (rcgen), a rustls client, `openssl s_client`
//! - [`thrift_peer`]: a Thrift origin and client on the Apache `thrift` crate
//! - [`grpc_peer`]: a tonic server and client
//! - [`toolkit`]: toolkit subcommands run in a scratch directory
//! - [`yaml`]: config builders for the shape most proxy tests start from
//!
//! Nothing here binds a fixed port or hands out a port it does not hold: origins
//! bind `127.0.0.1:0` and report their address, the proxy reports what it bound.
//! Integration tests reach the kit through `tests/support/mod.rs`
//! (`mod support; use support::{Proxy, eventually};`).
// A test helper panics with a message when its environment is broken; that is the
// report the test wants.
#![allow(clippy::unwrap_used)]

pub mod client;
pub mod fleet;
pub mod grpc_peer;
pub mod origin;
pub mod pki;
pub mod proxy;
pub mod thrift_peer;
pub mod toolkit;
pub mod yaml;

pub use client::*;
pub use origin::*;
pub use proxy::*;
