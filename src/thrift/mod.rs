//! Apache Thrift: the wire codec and the per-connection proxy.

pub mod codec;
