//! Moved to the test kit (testkit/src/toolkit.rs); use `support::toolkit`. This
//! file only keeps `#[path = "support/toolkit.rs"] mod toolkit;` in branches that
//! predate the kit compiling; delete it once none does.
#![allow(unused_imports)]

pub use attache_testkit::toolkit::*;
