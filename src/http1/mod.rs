//! HTTP/1.1 wire pieces shared by the server role (`http::h1`, request bodies) and
//! the client role (`upstream::h1`, response bodies): one implementation of each
//! framing rule, so both directions read a message the same way.
//!
//! - [`head`]: where a parsed head's fields are, the `Content-Length` and list
//!   grammar, and the field lines both encoders write;
//! - [`chunked`]: the one strict chunked decoder and the chunk-size line.
//!
//! The roles keep their own state machines (`http::h1::serve` drives a downstream
//! connection, `upstream::h1::exchange` one upstream exchange) over these pieces.
//! What the server role still leaves to hyper, and why, is in `http::h1`'s module
//! doc: HTTP/2, upgrades (hyper's upgrade hand-off feeds the tunnel), and heads
//! the codec does not take (absolute-form, `OPTIONS *`, fragments, other
//! expectations and transfer codings, malformed or oversized heads, which hyper
//! answers). On those connections `http::sniff` still follows the framing.

pub mod chunked;
pub mod head;
