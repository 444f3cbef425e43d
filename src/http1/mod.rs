//! HTTP/1.1 wire pieces shared by the server role (`http::h1`, request bodies) and
//! the client role (`upstream::h1`, response bodies): one implementation of each
//! framing rule, so both directions read a message the same way.
//!
//! - [`head`]: where a parsed head's fields are, how they become a `HeaderMap`
//!   (values sharing the head's bytes), the `Content-Length` and list grammar,
//!   and the field lines both encoders write;
//! - [`framing`]: one [`framing::Framing`] vocabulary, the collector of the
//!   framing and connection fields that detects conflicts, and the request and
//!   response rules of RFC 9112 section 6.3 side by side;
//! - [`body`]: the one body decoder (length, chunked, until close) both roles'
//!   `H1Body` read with;
//! - [`chunked`]: the one strict chunked decoder and the chunk-size line.
//!
//! The roles keep only their own I/O and what is theirs alone: `http::h1`
//! (server) parses request lines and targets, answers `Expect`, drives a
//! downstream connection (`serve`) and encodes responses; `upstream::h1`
//! (client) encodes requests, drives one upstream exchange (`exchange`), skips
//! interim responses and returns connections to their pool.
//! The server role serves every HTTP/1 request; hyper keeps only HTTP/2 (see
//! `http::h1`'s module doc).

pub mod body;
pub mod chunked;
pub mod framing;
pub mod head;
