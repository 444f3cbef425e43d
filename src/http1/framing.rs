//! Message body framing (RFC 9112 section 6), for both roles: one vocabulary
//! ([`Framing`]), one collector of the header fields that decide it ([`Fields`]:
//! `Content-Length`, `Transfer-Encoding`, the `Connection` options), and the two
//! role rules of section 6.3 beside each other:
//!
//! - [`Fields::request`] (server role): no body unless framed; a transfer coding
//!   beside a length, any coding on HTTP/1.0, `chunked` missing from the end or
//!   repeated, an invalid, listed or disagreeing length are refused (request
//!   smuggling's raw material); a coding before `chunked` is not decoded.
//! - [`Fields::response`] (client role): no body for HEAD, 1xx, 204 and 304;
//!   chunked when it is the final coding (a `Content-Length` beside it is
//!   ignored); another final coding or no length reads until the upstream
//!   closes; a length must be one number (a list of equal ones is that number).
//!
//! Where a role accepts a message, both read its body the same way
//! ([`super::body::Decoder`]).

use http::{StatusCode, Version};

use super::head::{is_plain_connection_option, parse_length, tokens};

/// How a message body is delimited on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body (a request without framing headers, a response to HEAD, a 204...).
    None,
    /// `Content-Length` bytes.
    Length(u64),
    /// The chunked transfer coding.
    Chunked,
    /// Until the connection closes (responses only).
    Close,
}

/// Why a message's framing cannot be trusted: each is a way two readers could
/// disagree on where the message ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Faulty {
    /// A `Content-Length` that is not 1 to 19 digits (or a list, in a request).
    InvalidLength,
    /// Two `Content-Length` values that differ.
    ConflictingLength,
    /// Both `Content-Length` and `Transfer-Encoding` (request).
    LengthWithCoding,
    /// A transfer coding on HTTP/1.0 (request).
    CodingOnHttp10,
    /// `chunked` not the final coding (request), or applied twice.
    MisplacedChunked,
    /// A coding before `chunked`, which the proxy would have to decode (request).
    UnknownCoding,
}

impl Faulty {
    pub fn as_str(self) -> &'static str {
        match self {
            Faulty::InvalidLength => "invalid content-length",
            Faulty::ConflictingLength => "conflicting content-length",
            Faulty::LengthWithCoding => "content-length with transfer-encoding",
            Faulty::CodingOnHttp10 => "transfer-encoding on HTTP/1.0",
            Faulty::MisplacedChunked => "chunked not the final transfer coding once",
            Faulty::UnknownCoding => "unsupported transfer coding",
        }
    }
}

impl std::fmt::Display for Faulty {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The framing header fields of one head, collected while it is turned into a
/// header map (each role hands the fields it meets to the matching method).
#[derive(Debug, Default)]
pub struct Fields {
    length: Option<u64>,
    /// A `Content-Length` that is not plain digits (or a list element that is not).
    bad_length: bool,
    /// Two `Content-Length` values that differ.
    conflicting_length: bool,
    /// A `Content-Length` written as a list (`5, 5`).
    listed_length: bool,
    /// Some `Transfer-Encoding` line was seen.
    coded: bool,
    /// The last coding is `chunked`.
    chunked_last: bool,
    /// `chunked` followed by another coding, or by itself.
    misplaced_chunked: bool,
    /// A coding other than `chunked` (which the proxy does not decode).
    other_coding: bool,
    /// `Connection: close`.
    close: bool,
    /// `Connection: keep-alive`.
    keep_alive: bool,
}

impl Fields {
    /// One `Content-Length` line; `false` for a repeat (RFC 9112 section 6.3
    /// item 5: equal values are one length).
    pub fn content_length(&mut self, value: &[u8]) -> bool {
        let first = self.length.is_none() && !self.bad_length;
        match parse_length(value) {
            Some(n) => self.one_length(n),
            None => {
                self.listed_length = true;
                for part in tokens(value) {
                    match parse_length(part) {
                        Some(n) => self.one_length(n),
                        None => self.bad_length = true,
                    }
                }
            }
        }
        first
    }

    fn one_length(&mut self, n: u64) {
        self.conflicting_length |= self.length.is_some_and(|l| l != n);
        self.length.get_or_insert(n);
    }

    /// One `Transfer-Encoding` line, a list of codings (empty elements ignored,
    /// RFC 9110 section 5.6.1).
    pub fn transfer_encoding(&mut self, value: &[u8]) {
        // The fast case: exactly `chunked`, once.
        if !self.coded && value.eq_ignore_ascii_case(b"chunked") {
            self.coded = true;
            self.chunked_last = true;
            return;
        }
        self.coded = true;
        for t in tokens(value).filter(|t| !t.is_empty()) {
            if self.chunked_last {
                self.misplaced_chunked = true;
            }
            self.chunked_last = t.eq_ignore_ascii_case(b"chunked");
            self.other_coding |= !self.chunked_last;
        }
    }

    /// One `Connection` line; `true` when it names more than `close`,
    /// `keep-alive` or `upgrade` (other headers the hop-by-hop pass removes).
    pub fn connection(&mut self, value: &[u8]) -> bool {
        // The common values, one option each: no list to split.
        if value.eq_ignore_ascii_case(b"keep-alive") {
            self.keep_alive = true;
            return false;
        }
        if value.eq_ignore_ascii_case(b"close") {
            self.close = true;
            return false;
        }
        let mut others = false;
        for t in tokens(value) {
            self.close |= t.eq_ignore_ascii_case(b"close");
            self.keep_alive |= t.eq_ignore_ascii_case(b"keep-alive");
            others |= !is_plain_connection_option(t);
        }
        others
    }

    /// Whether a transfer coding was declared (a `Content-Length` beside it is
    /// not the length).
    pub fn is_coded(&self) -> bool {
        self.coded
    }

    /// Whether the connection may carry another message after this one (RFC 9112
    /// section 9.3): HTTP/1.1 unless `close`, HTTP/1.0 only with `keep-alive`.
    pub fn persistent(&self, version: Version) -> bool {
        !self.close && (version != Version::HTTP_10 || self.keep_alive)
    }

    /// A request body's framing (RFC 9112 section 6.3, items 3 to 7 for a
    /// server): anything two readers could take differently is refused.
    pub fn request(&self, version: Version) -> Result<Framing, Faulty> {
        if self.bad_length || self.listed_length {
            return Err(Faulty::InvalidLength);
        }
        if self.conflicting_length {
            return Err(Faulty::ConflictingLength);
        }
        if !self.coded {
            return Ok(self.length.map_or(Framing::None, Framing::Length));
        }
        if self.length.is_some() {
            return Err(Faulty::LengthWithCoding);
        }
        if version == Version::HTTP_10 {
            return Err(Faulty::CodingOnHttp10);
        }
        if self.misplaced_chunked || !self.chunked_last {
            return Err(Faulty::MisplacedChunked);
        }
        if self.other_coding {
            return Err(Faulty::UnknownCoding);
        }
        Ok(Framing::Chunked)
    }

    /// A response body's framing (RFC 9112 section 6.3, items 1 to 7 for a
    /// client), for a response to a HEAD request when `is_head`. A `101`'s
    /// connection is no longer HTTP: no body either.
    pub fn response(&self, status: StatusCode, is_head: bool) -> Result<Framing, Faulty> {
        let code = status.as_u16();
        if is_head || code < 200 || code == 204 || code == 304 {
            return Ok(Framing::None);
        }
        if self.coded {
            return match (self.chunked_last, self.misplaced_chunked) {
                (true, false) => Ok(Framing::Chunked),
                // Decoded once, the body would still be chunked.
                (true, true) => Err(Faulty::MisplacedChunked),
                (false, _) => Ok(Framing::Close),
            };
        }
        if self.bad_length {
            return Err(Faulty::InvalidLength);
        }
        if self.conflicting_length {
            return Err(Faulty::ConflictingLength);
        }
        Ok(self.length.map_or(Framing::Close, Framing::Length))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(lines: &[(&str, &str)]) -> Fields {
        let mut f = Fields::default();
        for (name, value) in lines {
            match *name {
                "cl" => {
                    f.content_length(value.as_bytes());
                }
                "te" => f.transfer_encoding(value.as_bytes()),
                _ => {
                    f.connection(value.as_bytes());
                }
            }
        }
        f
    }

    #[test]
    fn both_roles_read_plain_framing_alike() {
        for (lines, framing) in [
            (&[("cl", "5")][..], Framing::Length(5)),
            (&[("cl", "5"), ("cl", "5")], Framing::Length(5)),
            (&[("te", "chunked")], Framing::Chunked),
            (&[("te", "Chunked,")], Framing::Chunked),
        ] {
            let f = fields(lines);
            assert_eq!(f.request(Version::HTTP_11), Ok(framing), "{lines:?}");
            let ok = StatusCode::OK;
            assert_eq!(f.response(ok, false), Ok(framing), "{lines:?}");
        }
    }

    #[test]
    fn the_roles_differ_where_rfc9112_says_so() {
        let ok = StatusCode::OK;
        // No framing: no request body, a response read until close.
        let f = Fields::default();
        assert_eq!(f.request(Version::HTTP_11), Ok(Framing::None));
        assert_eq!(f.response(ok, false), Ok(Framing::Close));
        // A length beside chunked: refused in a request, ignored in a response.
        let f = fields(&[("cl", "5"), ("te", "chunked")]);
        assert_eq!(f.request(Version::HTTP_11), Err(Faulty::LengthWithCoding));
        assert_eq!(f.response(ok, false), Ok(Framing::Chunked));
        // A final coding that is not chunked.
        let f = fields(&[("te", "gzip")]);
        assert_eq!(f.request(Version::HTTP_11), Err(Faulty::MisplacedChunked));
        assert_eq!(f.response(ok, false), Ok(Framing::Close));
        let f = fields(&[("te", "gzip, chunked")]);
        assert_eq!(f.request(Version::HTTP_11), Err(Faulty::UnknownCoding));
        assert_eq!(f.response(ok, false), Ok(Framing::Chunked));
        // A list of equal lengths.
        let f = fields(&[("cl", "5, 5")]);
        assert_eq!(f.request(Version::HTTP_11), Err(Faulty::InvalidLength));
        assert_eq!(f.response(ok, false), Ok(Framing::Length(5)));
        let f = fields(&[("te", "chunked")]);
        assert_eq!(f.request(Version::HTTP_10), Err(Faulty::CodingOnHttp10));
    }

    #[test]
    fn ambiguous_framing_is_faulty_for_both_roles() {
        let ok = StatusCode::OK;
        for (lines, faulty) in [
            (&[("cl", "5"), ("cl", "6")][..], Faulty::ConflictingLength),
            (&[("cl", "5, 6")], Faulty::ConflictingLength),
            (&[("cl", "+5")], Faulty::InvalidLength),
            (&[("cl", "")], Faulty::InvalidLength),
            (&[("te", "chunked, chunked")], Faulty::MisplacedChunked),
            (
                &[("te", "chunked"), ("te", "chunked")],
                Faulty::MisplacedChunked,
            ),
        ] {
            let f = fields(lines);
            assert!(f.request(Version::HTTP_11).is_err(), "{lines:?}");
            assert_eq!(f.response(ok, false), Err(faulty), "{lines:?}");
        }
    }

    #[test]
    fn bodiless_responses_ignore_their_framing_fields() {
        let f = fields(&[("cl", "zz")]);
        for status in [204, 304, 100, 101] {
            let status = StatusCode::from_u16(status).expect("status");
            assert_eq!(f.response(status, false), Ok(Framing::None));
        }
        assert_eq!(f.response(StatusCode::OK, true), Ok(Framing::None));
    }

    #[test]
    fn persistence_follows_the_version_and_connection_options() {
        let f = Fields::default();
        assert!(f.persistent(Version::HTTP_11));
        assert!(!f.persistent(Version::HTTP_10));
        let f = fields(&[("connection", "Keep-Alive")]);
        assert!(f.persistent(Version::HTTP_10));
        let f = fields(&[("connection", "keep-alive, close")]);
        assert!(!f.persistent(Version::HTTP_11));
        let mut f = Fields::default();
        assert!(!f.connection(b"close, upgrade"));
        assert!(f.connection(b"close, x-hop"));
        assert!(!f.connection(b"Keep-Alive") && !f.connection(b"CLOSE"));
        assert!(f.keep_alive && f.close);
    }
}
