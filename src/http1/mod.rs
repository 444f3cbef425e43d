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
//! The server role serves every HTTP/1 request; hyper keeps only HTTP/2 (see
//! `http::h1`'s module doc).

pub mod chunked;
pub mod head;
