//! Moved to the test kit (testkit/src/fleet.rs); use `support::fleet`. This file
//! only keeps `mod fleet_util;` in branches that predate the kit compiling; delete
//! it once none does.
#![allow(unused_imports)]

pub use attache_testkit::fleet::*;

/// A loopback port that was free a moment ago. Racy (another test may take it
/// before it is bound), which is why the kit has none; kept here only for
/// tests/xds_eds.rs, whose management server must come up later on an address the
/// proxy was configured with. Replace it there, then delete this file.
pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}
