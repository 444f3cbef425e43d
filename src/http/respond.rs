//! The one place where an error kind becomes a status, a response flag and a body.

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode};

use attache_filters::grpc::{Code, Kind};

use super::grpc;
use crate::error::ErrorKind;
use crate::flag::Flag;

/// Status and short response flag (Envoy's meanings) for a local reply.
pub fn status_and_flag(kind: ErrorKind, retries_exhausted: bool) -> (StatusCode, Flag) {
    let (status, flag) = match kind {
        ErrorKind::BadRequest(_) | ErrorKind::BadBody => {
            (StatusCode::BAD_REQUEST, Flag::DownstreamProtocolError)
        }
        ErrorKind::HeadersTooLarge => (
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            Flag::DownstreamProtocolError,
        ),
        ErrorKind::UriTooLong => (StatusCode::URI_TOO_LONG, Flag::DownstreamProtocolError),
        ErrorKind::ExpectationFailed => (
            StatusCode::EXPECTATION_FAILED,
            Flag::DownstreamProtocolError,
        ),
        ErrorKind::UnknownCoding => (StatusCode::NOT_IMPLEMENTED, Flag::DownstreamProtocolError),
        ErrorKind::NoRoute => (StatusCode::NOT_FOUND, Flag::NoRoute),
        ErrorKind::Forbidden => (StatusCode::FORBIDDEN, Flag::Rbac),
        ErrorKind::NoCluster => (StatusCode::SERVICE_UNAVAILABLE, Flag::NoCluster),
        ErrorKind::NoHealthyUpstream => (StatusCode::SERVICE_UNAVAILABLE, Flag::NoHealthyUpstream),
        ErrorKind::ConnectFailure => (StatusCode::SERVICE_UNAVAILABLE, Flag::ConnectFailure),
        ErrorKind::Overflow => (StatusCode::SERVICE_UNAVAILABLE, Flag::Overflow),
        ErrorKind::Timeout => (StatusCode::GATEWAY_TIMEOUT, Flag::UpstreamTimeout),
        ErrorKind::UpstreamReset => (StatusCode::BAD_GATEWAY, Flag::UpstreamReset),
        ErrorKind::Internal => (
            StatusCode::INTERNAL_SERVER_ERROR,
            Flag::DownstreamProtocolError,
        ),
    };
    if retries_exhausted && kind.is_upstream() {
        (status, Flag::RetriesExhausted)
    } else {
        (status, flag)
    }
}

/// The local reply for `kind`: a short plain-text body naming the problem, or for a
/// gRPC request ([`Kind`]) the trailers-only answer gRPC clients read (see
/// [`grpc_reply`]), with the code for the cause and the flag in `grpc-message`.
pub fn local_reply(
    kind: ErrorKind,
    retries_exhausted: bool,
    grpc: Option<Kind>,
) -> (Response<Bytes>, Flag) {
    let (status, flag) = status_and_flag(kind, retries_exhausted);
    if let Some(g) = grpc {
        let msg = format!("{kind} ({flag})");
        return (grpc_reply(g, grpc_code(kind, status), &msg), flag);
    }
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

/// The gRPC code of a local reply: the cause where it says more than the status
/// (a timeout is `DEADLINE_EXCEEDED`, not the spec's `UNAVAILABLE` for 504), else
/// the status mapped as the gRPC spec says.
fn grpc_code(kind: ErrorKind, status: StatusCode) -> Code {
    match kind {
        ErrorKind::Timeout => Code::DeadlineExceeded,
        ErrorKind::Forbidden => Code::PermissionDenied,
        ErrorKind::NoRoute => Code::Unimplemented,
        ErrorKind::NoCluster
        | ErrorKind::NoHealthyUpstream
        | ErrorKind::ConnectFailure
        | ErrorKind::Overflow
        | ErrorKind::UpstreamReset => Code::Unavailable,
        ErrorKind::BadRequest(_)
        | ErrorKind::BadBody
        | ErrorKind::UriTooLong
        | ErrorKind::HeadersTooLarge
        | ErrorKind::ExpectationFailed
        | ErrorKind::UnknownCoding => Code::Internal,
        ErrorKind::Internal => Code::from_http(status.as_u16()),
    }
}

/// A trailers-only gRPC answer: HTTP 200, `content-type` of the request's kind,
/// `grpc-status` and `grpc-message` in the head, no body (the head ends the stream).
pub fn grpc_reply(kind: Kind, code: Code, message: &str) -> Response<Bytes> {
    let mut rsp = Response::new(Bytes::new());
    let h = rsp.headers_mut();
    h.insert(http::header::CONTENT_TYPE, grpc::content_type(kind));
    h.insert(
        grpc::GRPC_STATUS.clone(),
        HeaderValue::from_static(code.as_str()),
    );
    h.insert(grpc::GRPC_MESSAGE.clone(), grpc::message_value(message));
    rsp
}

/// Reshape another local reply (a filter's 403 or 429, a `direct_response`) for a
/// gRPC client: the status mapped to a code, the plain-text body as `grpc-message`
/// (with the reply's response flag, when a filter named one: `rate limited (RL)`),
/// and the reply's other headers (`retry-after`, CORS) kept. A 2xx reply, or one
/// that already carries `grpc-status`, is left as it is.
pub fn grpc_from_http(
    parts: &mut http::response::Parts,
    body: &Bytes,
    kind: Kind,
    flag: &str,
) -> bool {
    if parts.status.is_success() || parts.headers.contains_key(&grpc::GRPC_STATUS) {
        return false;
    }
    let code = Code::from_http(parts.status.as_u16());
    let text = std::str::from_utf8(body).unwrap_or("").trim();
    let text = if text.is_empty() {
        parts.status.canonical_reason().unwrap_or("local reply")
    } else {
        text
    };
    if flag.is_empty() {
        trailers_only(parts, kind, code, text);
    } else {
        trailers_only(parts, kind, code, &format!("{text} ({flag})"));
    }
    true
}

/// An upstream's answer to a gRPC-Web call that is not gRPC (an HTTP error page, a
/// 200 of another content type, no `grpc-status`): a gRPC-Web client cannot read
/// its body as frames, so it becomes a trailers-only answer with the HTTP status
/// mapped as the gRPC spec says (`UNKNOWN` for a 2xx), as Envoy's `grpc_web` filter
/// does. The caller drops the body.
pub fn grpc_web_from_foreign(parts: &mut http::response::Parts, kind: Kind) -> bool {
    let grpc_head =
        parts.status == StatusCode::OK && grpc::classify(&parts.headers) == Some(Kind::Grpc);
    if grpc_head || parts.headers.contains_key(&grpc::GRPC_STATUS) {
        return false;
    }
    let status = parts.status.as_u16();
    let code = if parts.status.is_success() {
        Code::Unknown
    } else {
        Code::from_http(status)
    };
    let msg = format!("upstream answered HTTP {status} without a gRPC status");
    parts.headers.remove(http::header::CONTENT_ENCODING);
    trailers_only(parts, kind, code, &msg);
    true
}

/// Make `parts` a trailers-only gRPC answer of `kind`: HTTP 200, the code and
/// message in the head, no length (the body is empty); other headers kept.
fn trailers_only(parts: &mut http::response::Parts, kind: Kind, code: Code, msg: &str) {
    let h = &mut parts.headers;
    h.remove(http::header::CONTENT_LENGTH);
    h.insert(http::header::CONTENT_TYPE, grpc::content_type(kind));
    h.insert(
        grpc::GRPC_STATUS.clone(),
        HeaderValue::from_static(code.as_str()),
    );
    h.insert(grpc::GRPC_MESSAGE.clone(), grpc::message_value(msg));
    parts.status = StatusCode::OK;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_map_to_envoy_statuses_and_flags() {
        let cases = [
            (ErrorKind::NoRoute, 404, Flag::NoRoute),
            (ErrorKind::Forbidden, 403, Flag::Rbac),
            (ErrorKind::NoHealthyUpstream, 503, Flag::NoHealthyUpstream),
            (ErrorKind::ConnectFailure, 503, Flag::ConnectFailure),
            (ErrorKind::Overflow, 503, Flag::Overflow),
            (ErrorKind::Timeout, 504, Flag::UpstreamTimeout),
            (ErrorKind::UpstreamReset, 502, Flag::UpstreamReset),
            (
                ErrorKind::BadRequest(crate::error::Reject::Path),
                400,
                Flag::DownstreamProtocolError,
            ),
            (ErrorKind::BadBody, 400, Flag::DownstreamProtocolError),
        ];
        for (k, s, f) in cases {
            assert_eq!(
                status_and_flag(k, false),
                (StatusCode::from_u16(s).expect("status"), f)
            );
        }
        assert_eq!(
            status_and_flag(ErrorKind::ConnectFailure, true).1,
            Flag::RetriesExhausted
        );
        assert_eq!(status_and_flag(ErrorKind::NoRoute, true).1, Flag::NoRoute);
    }

    #[test]
    fn grpc_local_replies_are_trailers_only_with_the_cause() {
        let cases = [
            (ErrorKind::NoRoute, "12", "no route matched (NR)"),
            (
                ErrorKind::NoHealthyUpstream,
                "14",
                "no healthy upstream (UH)",
            ),
            (
                ErrorKind::ConnectFailure,
                "14",
                "upstream connect error (UF)",
            ),
            (ErrorKind::Overflow, "14", "upstream overflow (UO)"),
            (ErrorKind::Timeout, "4", "upstream request timeout (UT)"),
            (ErrorKind::UpstreamReset, "14", "upstream reset (UR)"),
            (
                ErrorKind::BadRequest(crate::error::Reject::Path),
                "13",
                "bad request (DPE)",
            ),
        ];
        for (k, code, msg) in cases {
            let (rsp, _) = local_reply(k, false, Some(Kind::Grpc));
            assert_eq!(rsp.status(), StatusCode::OK);
            assert!(rsp.body().is_empty());
            let h = rsp.headers();
            assert_eq!(h["content-type"], "application/grpc");
            assert_eq!(h["grpc-status"], code, "{k:?}");
            assert_eq!(h["grpc-message"], msg);
        }
    }

    #[test]
    fn filter_replies_are_reshaped_for_grpc_clients() {
        let mut rsp = Response::new(());
        *rsp.status_mut() = StatusCode::TOO_MANY_REQUESTS;
        rsp.headers_mut()
            .insert("retry-after", HeaderValue::from_static("1"));
        let (mut parts, ()) = rsp.into_parts();
        let body = Bytes::from_static(b"rate limited\n");
        assert!(grpc_from_http(&mut parts, &body, Kind::Grpc, "RL"));
        assert_eq!(parts.status, StatusCode::OK);
        assert_eq!(parts.headers["grpc-status"], "8");
        assert_eq!(parts.headers["grpc-message"], "rate limited (RL)");
        assert_eq!(parts.headers["retry-after"], "1");
        // Done once: a reply that is gRPC already stays as it is.
        assert!(!grpc_from_http(&mut parts, &body, Kind::Grpc, ""));
    }

    #[test]
    fn foreign_answers_to_grpc_web_calls_become_statuses() {
        let cases: [(u16, &str, Option<&str>, Option<&str>); 5] = [
            (200, "application/grpc", None, None),
            (200, "application/grpc+proto", Some("7"), None),
            (404, "text/html", Some("5"), None),
            (503, "text/plain", None, Some("14")),
            (200, "text/html", None, Some("2")),
        ];
        for (status, ct, grpc_status, want) in cases {
            let mut b = Response::builder()
                .status(status)
                .header("content-type", ct);
            if let Some(g) = grpc_status {
                b = b.header("grpc-status", g);
            }
            let (mut parts, ()) = b.body(()).expect("response").into_parts();
            let changed = grpc_web_from_foreign(&mut parts, Kind::WebText);
            assert_eq!(changed, want.is_some(), "{status} {ct}");
            if let Some(code) = want {
                assert_eq!(parts.status, StatusCode::OK);
                assert_eq!(parts.headers["grpc-status"], code);
                assert_eq!(
                    parts.headers["content-type"],
                    "application/grpc-web-text+proto"
                );
            }
        }
    }

    #[test]
    fn reject_reasons_index_their_label_list() {
        for (i, r) in crate::error::Reject::ALL.iter().enumerate() {
            assert_eq!(*r as usize, i, "{}", r.as_str());
        }
    }
}
