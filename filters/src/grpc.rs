//! gRPC status codes: the fixed table of 17 (grpc/grpc `doc/statuscodes.md`), their
//! names as metric labels and SLI config, and the HTTP status mapping of
//! `doc/http-grpc-status-mapping.md` used for replies the proxy makes itself.

/// A gRPC status code. Values outside the table are read as [`Code::Unknown`], as
/// gRPC clients do, so a label or a log field is always one of these 17 names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Code {
    Ok = 0,
    Cancelled = 1,
    Unknown = 2,
    InvalidArgument = 3,
    DeadlineExceeded = 4,
    NotFound = 5,
    AlreadyExists = 6,
    PermissionDenied = 7,
    ResourceExhausted = 8,
    FailedPrecondition = 9,
    Aborted = 10,
    OutOfRange = 11,
    Unimplemented = 12,
    Internal = 13,
    Unavailable = 14,
    DataLoss = 15,
    Unauthenticated = 16,
}

impl Code {
    /// Every code, indexed by its value.
    pub const ALL: [Code; 17] = [
        Code::Ok,
        Code::Cancelled,
        Code::Unknown,
        Code::InvalidArgument,
        Code::DeadlineExceeded,
        Code::NotFound,
        Code::AlreadyExists,
        Code::PermissionDenied,
        Code::ResourceExhausted,
        Code::FailedPrecondition,
        Code::Aborted,
        Code::OutOfRange,
        Code::Unimplemented,
        Code::Internal,
        Code::Unavailable,
        Code::DataLoss,
        Code::Unauthenticated,
    ];

    /// The canonical name (`PERMISSION_DENIED`): metric label, log field, config.
    pub fn name(self) -> &'static str {
        match self {
            Code::Ok => "OK",
            Code::Cancelled => "CANCELLED",
            Code::Unknown => "UNKNOWN",
            Code::InvalidArgument => "INVALID_ARGUMENT",
            Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
            Code::NotFound => "NOT_FOUND",
            Code::AlreadyExists => "ALREADY_EXISTS",
            Code::PermissionDenied => "PERMISSION_DENIED",
            Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
            Code::FailedPrecondition => "FAILED_PRECONDITION",
            Code::Aborted => "ABORTED",
            Code::OutOfRange => "OUT_OF_RANGE",
            Code::Unimplemented => "UNIMPLEMENTED",
            Code::Internal => "INTERNAL",
            Code::Unavailable => "UNAVAILABLE",
            Code::DataLoss => "DATA_LOSS",
            Code::Unauthenticated => "UNAUTHENTICATED",
        }
    }

    /// The numeric value as the `grpc-status` header carries it.
    pub fn as_str(self) -> &'static str {
        const NUM: [&str; 17] = [
            "0", "1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "11", "12", "13", "14", "15",
            "16",
        ];
        NUM[self as usize]
    }

    /// A code by its name (config: `UNAVAILABLE`), or its number (`14`).
    pub fn from_name(s: &str) -> Option<Code> {
        let s = s.trim();
        if let Ok(n) = s.parse::<u8>() {
            return Code::ALL.get(usize::from(n)).copied();
        }
        Code::ALL
            .iter()
            .copied()
            .find(|c| c.name().eq_ignore_ascii_case(s))
    }

    /// A `grpc-status` value: 1-3 ASCII digits. Out-of-table or malformed values are
    /// [`Code::Unknown`].
    pub fn from_header(v: &[u8]) -> Code {
        if v.is_empty() || v.len() > 3 || !v.iter().all(u8::is_ascii_digit) {
            return Code::Unknown;
        }
        let n = v.iter().fold(0usize, |n, d| n * 10 + usize::from(d - b'0'));
        Code::ALL.get(n).copied().unwrap_or(Code::Unknown)
    }

    /// The code for an HTTP status a gRPC client received instead of a gRPC answer
    /// (grpc/grpc `doc/http-grpc-status-mapping.md`), with one change Envoy makes
    /// too: 429 is `RESOURCE_EXHAUSTED` (the spec's `UNAVAILABLE` would make clients
    /// retry into the limit).
    pub fn from_http(status: u16) -> Code {
        match status {
            200..=299 => Code::Ok,
            400 => Code::Internal,
            401 => Code::Unauthenticated,
            403 => Code::PermissionDenied,
            404 => Code::Unimplemented,
            429 => Code::ResourceExhausted,
            502..=504 => Code::Unavailable,
            _ => Code::Unknown,
        }
    }
}

/// How a request speaks gRPC, from its `content-type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `application/grpc`, `application/grpc+proto`, ...
    Grpc,
    /// `application/grpc-web`, `application/grpc-web+proto`.
    Web,
    /// `application/grpc-web-text` (base64 bodies).
    WebText,
}

impl Kind {
    /// The gRPC flavour of a `content-type` value, if any. The type must be exactly
    /// `application/grpc`, `-web` or `-web-text`, optionally followed by a `+format`
    /// suffix or parameters (`application/grpcfoo` is not gRPC).
    pub fn of_content_type(v: &[u8]) -> Option<Kind> {
        const BASE: &[u8] = b"application/grpc";
        if v.len() < BASE.len() || !v[..BASE.len()].eq_ignore_ascii_case(BASE) {
            return None;
        }
        let rest = &v[BASE.len()..];
        let (kind, rest) = if let Some(r) = strip_prefix_ci(rest, b"-web-text") {
            (Kind::WebText, r)
        } else if let Some(r) = strip_prefix_ci(rest, b"-web") {
            (Kind::Web, r)
        } else {
            (Kind::Grpc, rest)
        };
        match rest.first() {
            None | Some(b'+') | Some(b';') | Some(b' ') => Some(kind),
            _ => None,
        }
    }

    pub fn is_web(self) -> bool {
        self != Kind::Grpc
    }
}

fn strip_prefix_ci<'a>(v: &'a [u8], p: &[u8]) -> Option<&'a [u8]> {
    (v.len() >= p.len() && v[..p.len()].eq_ignore_ascii_case(p)).then(|| &v[p.len()..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_index_their_table() {
        for (i, c) in Code::ALL.iter().enumerate() {
            assert_eq!(*c as usize, i);
            assert_eq!(Code::from_name(c.name()), Some(*c));
            assert_eq!(Code::from_header(c.as_str().as_bytes()), *c);
        }
    }

    #[test]
    fn unknown_or_malformed_status_values_read_as_unknown() {
        for v in [&b"17"[..], b"999", b"", b"-1", b" 0", b"1000", b"0x1"] {
            assert_eq!(Code::from_header(v), Code::Unknown, "{v:?}");
        }
        assert_eq!(Code::from_name("unavailable"), Some(Code::Unavailable));
        assert_eq!(Code::from_name("17"), None);
        assert_eq!(Code::from_name("NOPE"), None);
    }

    #[test]
    fn http_statuses_map_as_the_grpc_spec_says() {
        let cases = [
            (200, Code::Ok),
            (400, Code::Internal),
            (401, Code::Unauthenticated),
            (403, Code::PermissionDenied),
            (404, Code::Unimplemented),
            (429, Code::ResourceExhausted),
            (502, Code::Unavailable),
            (503, Code::Unavailable),
            (504, Code::Unavailable),
            (500, Code::Unknown),
            (418, Code::Unknown),
        ];
        for (s, c) in cases {
            assert_eq!(Code::from_http(s), c, "{s}");
        }
    }

    #[test]
    fn content_types_classify_exactly() {
        let cases: [(&[u8], Option<Kind>); 9] = [
            (b"application/grpc", Some(Kind::Grpc)),
            (b"application/grpc+proto", Some(Kind::Grpc)),
            (b"Application/GRPC; charset=x", Some(Kind::Grpc)),
            (b"application/grpc-web", Some(Kind::Web)),
            (b"application/grpc-web+proto", Some(Kind::Web)),
            (b"application/grpc-web-text", Some(Kind::WebText)),
            (b"application/grpc-web-text+proto", Some(Kind::WebText)),
            (b"application/grpcx", None),
            (b"application/json", None),
        ];
        for (v, k) in cases {
            assert_eq!(
                Kind::of_content_type(v),
                k,
                "{}",
                String::from_utf8_lossy(v)
            );
        }
    }
}
