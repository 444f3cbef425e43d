//! The one place where an error kind becomes a status, a response flag and a body.

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode};

use crate::error::ErrorKind;

/// Status and short response flag (Envoy's meanings) for a local reply.
pub fn status_and_flag(kind: ErrorKind, retries_exhausted: bool) -> (StatusCode, &'static str) {
    let (status, flag) = match kind {
        ErrorKind::BadRequest(_) | ErrorKind::BadBody => (StatusCode::BAD_REQUEST, "DPE"),
        ErrorKind::HeadersTooLarge => (StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE, "DPE"),
        ErrorKind::UriTooLong => (StatusCode::URI_TOO_LONG, "DPE"),
        ErrorKind::NoRoute => (StatusCode::NOT_FOUND, "NR"),
        ErrorKind::Forbidden => (StatusCode::FORBIDDEN, "RBAC"),
        ErrorKind::NoCluster => (StatusCode::SERVICE_UNAVAILABLE, "NC"),
        ErrorKind::NoHealthyUpstream => (StatusCode::SERVICE_UNAVAILABLE, "UH"),
        ErrorKind::ConnectFailure => (StatusCode::SERVICE_UNAVAILABLE, "UF"),
        ErrorKind::Overflow => (StatusCode::SERVICE_UNAVAILABLE, "UO"),
        ErrorKind::Timeout => (StatusCode::GATEWAY_TIMEOUT, "UT"),
        ErrorKind::UpstreamReset => (StatusCode::BAD_GATEWAY, "UR"),
        ErrorKind::Internal => (StatusCode::INTERNAL_SERVER_ERROR, "DPE"),
    };
    if retries_exhausted && kind.is_upstream() {
        (status, "URX")
    } else {
        (status, flag)
    }
}

/// The local reply for `kind`: a short plain-text body naming the problem.
pub fn local_reply(kind: ErrorKind, retries_exhausted: bool) -> (Response<Bytes>, &'static str) {
    let (status, flag) = status_and_flag(kind, retries_exhausted);
    let mut body = kind.to_string();
    body.push('\n');
    let mut rsp = Response::new(Bytes::from(body));
    *rsp.status_mut() = status;
    rsp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain"),
    );
    (rsp, flag)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_map_to_envoy_statuses_and_flags() {
        let cases = [
            (ErrorKind::NoRoute, 404, "NR"),
            (ErrorKind::Forbidden, 403, "RBAC"),
            (ErrorKind::NoHealthyUpstream, 503, "UH"),
            (ErrorKind::ConnectFailure, 503, "UF"),
            (ErrorKind::Overflow, 503, "UO"),
            (ErrorKind::Timeout, 504, "UT"),
            (ErrorKind::UpstreamReset, 502, "UR"),
            (
                ErrorKind::BadRequest(crate::error::Reject::Path),
                400,
                "DPE",
            ),
            (ErrorKind::BadBody, 400, "DPE"),
        ];
        for (k, s, f) in cases {
            assert_eq!(
                status_and_flag(k, false),
                (StatusCode::from_u16(s).expect("status"), f)
            );
        }
        assert_eq!(status_and_flag(ErrorKind::ConnectFailure, true).1, "URX");
        assert_eq!(status_and_flag(ErrorKind::NoRoute, true).1, "NR");
    }

    #[test]
    fn reject_reasons_index_their_label_list() {
        for (i, r) in crate::error::Reject::ALL.iter().enumerate() {
            assert_eq!(*r as usize, i, "{}", r.as_str());
        }
    }
}
