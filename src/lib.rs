//! attache: an Envoy-style proxy for HTTP/1.1, HTTP/2, TCP and Thrift.

pub mod config;
pub mod thrift;
