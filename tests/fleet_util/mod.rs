//! Moved to the test kit (testkit/src/fleet.rs); use `support::fleet`. Only
//! tests/xds_eds.rs still includes this file (`mod fleet_util;`), for the re-export
//! and `free_port` below; the xds2 branch moves it off both. Delete this file then.
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
