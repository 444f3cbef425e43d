//! A Thrift origin for the load harness: the test service (`getUser`, `ping`,
//! `log`) on the Apache `thrift` crate, a thread per connection.
//!
//! `cargo run --release --example thrift_origin -- 127.0.0.1:9191 [binary|compact] [framed|unframed]`

use attache_testkit::thrift_peer::{Protocol, Transport};

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:9191".to_owned());
    let protocol = match args.next().as_deref() {
        None | Some("binary") => Protocol::Binary,
        Some("compact") => Protocol::Compact,
        Some(other) => anyhow::bail!("unknown protocol {other}"),
    };
    let transport = match args.next().as_deref() {
        None | Some("framed") => Transport::Framed,
        Some("unframed") => Transport::Unframed,
        Some(other) => anyhow::bail!("unknown transport {other}"),
    };
    let origin =
        attache_testkit::thrift_peer::start_origin_on(&addr, "origin", protocol, transport);
    println!("listening {}", origin.addr);
    // Drain oneway logs so the channel does not grow; exits when killed.
    for _ in origin.logs.iter() {}
    Ok(())
}
