//! Test support: the shared test kit (testkit/, crate `attache_testkit`), compiled
//! once for every test binary. `mod support; use support::{Proxy, eventually};`,
//! `support::pki`, `support::thrift_peer`, `support::fleet` ... all come from there.
#![allow(unused_imports)]

pub use attache_testkit::*;

pub mod theader_py;
