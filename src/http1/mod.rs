//! HTTP/1.1 wire pieces shared by the server role (`http::h1`, request bodies) and
//! the client role (`upstream::h1`, response bodies): one implementation of each
//! framing rule, so both directions read a message the same way.

pub mod chunked;
pub mod head;
