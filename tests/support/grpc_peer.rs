//! Moved to the test kit (testkit/src/grpc_peer.rs); use `support::grpc_peer`. This
//! file only keeps `#[path = "support/grpc_peer.rs"] mod grpc_peer;` in branches
//! that predate the kit compiling; delete it once none does.
#![allow(unused_imports)]

pub use attache_testkit::grpc_peer::*;
