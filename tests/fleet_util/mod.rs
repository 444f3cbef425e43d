//! Moved to the test kit (testkit/src/fleet.rs); use `support::fleet`. This file
//! only keeps `mod fleet_util;` in branches that predate the kit compiling; delete
//! it once none does.
#![allow(unused_imports)]

pub use attache_testkit::fleet::*;
