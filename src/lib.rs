//! attache: an Envoy-style proxy for HTTP/1.1, HTTP/2, TCP and Thrift.

pub mod accesslog;
pub mod admin;
pub mod cidr;
pub mod config;
pub mod error;
pub mod flag;
#[cfg(any(test, feature = "fuzzing"))]
#[doc(hidden)]
pub mod fuzz;
pub mod http;
pub mod http1;
pub mod proxy_protocol;
pub mod rbac;
pub mod router;
pub mod server;
pub mod spare;
pub mod stats;
pub mod tcp;
pub mod thrift;
pub mod tls;
pub mod toolkit;
pub mod trace;
pub mod upstream;
pub mod xds;
