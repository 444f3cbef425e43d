//! `grpc_web`: lets browsers speak gRPC-Web (`application/grpc-web`,
//! `application/grpc-web+proto`, and the base64 `application/grpc-web-text`
//! variants) to a plain gRPC backend.
//!
//! ```yaml
//! - grpc_web: {}
//! ```
//!
//! The filter translates the request head (content type to `application/grpc`,
//! `te: trailers`, no `content-length`) and marks the stream with [`Web`]. The body
//! work — base64 decoding a `-text` request, and writing the response's trailers
//! into the body as a gRPC-Web trailer frame (flag `0x80`, base64 for `-text`) — is
//! done by the proxy core, because the filter API sees heads only (it has no body
//! hooks); the core does it for streams this filter marked. Requests that are not
//! gRPC-Web pass untouched. Together with the `cors` filter (placed before it),
//! preflights are answered and `grpc-status`/`grpc-message` can be exposed.

use std::sync::Arc;

use http::header::{HeaderValue, CONTENT_LENGTH, CONTENT_TYPE, TE};
use http::request;
use serde::Deserialize;

use crate::api::{Action, ConfigError, FactoryContext, HttpFilter, HttpFilterFactory, StreamCtx};
use crate::grpc::Kind;

/// No settings yet; `{}`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {}

/// The mark the core reads from the request's extensions: translate this stream's
/// bodies between gRPC-Web and gRPC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Web {
    /// `application/grpc-web-text`: bodies are base64 both ways.
    pub text: bool,
}

pub struct Factory;

impl HttpFilterFactory for Factory {
    const NAME: &'static str = "grpc_web";
    type Config = Config;

    fn build(_: Config, _: &FactoryContext<'_>) -> Result<Arc<dyn HttpFilter>, ConfigError> {
        Ok(Arc::new(Filter))
    }
}

#[derive(Debug)]
pub struct Filter;

impl HttpFilter for Filter {
    fn on_request(&self, req: &mut request::Parts, cx: &mut StreamCtx) -> Action {
        let text = match cx.grpc {
            Some(Kind::Web) => false,
            Some(Kind::WebText) => true,
            _ => return Action::Continue,
        };
        let grpc_type = req
            .headers
            .get(CONTENT_TYPE)
            .map(|v| grpc_content_type(v.as_bytes()))
            .unwrap_or_else(|| HeaderValue::from_static("application/grpc"));
        req.headers.insert(CONTENT_TYPE, grpc_type);
        // A -text body shrinks when decoded; a gRPC body carries no length anyway.
        req.headers.remove(CONTENT_LENGTH);
        req.headers.insert(TE, HeaderValue::from_static("trailers"));
        req.extensions.insert(Web { text });
        Action::Continue
    }
}

/// `application/grpc-web-text+proto` -> `application/grpc+proto`: the gRPC type
/// with the same `+format` suffix (parameters dropped).
fn grpc_content_type(v: &[u8]) -> HeaderValue {
    let suffix = v
        .iter()
        .position(|&b| b == b'+')
        .map(|i| &v[i..])
        .map(|s| s.split(|&b| b == b';').next().unwrap_or(s))
        .filter(|s| s.len() > 1 && s[1..].iter().all(u8::is_ascii_alphanumeric));
    match suffix {
        Some(s) => {
            let mut out = b"application/grpc".to_vec();
            out.extend_from_slice(s);
            HeaderValue::from_bytes(&out)
                .unwrap_or_else(|_| HeaderValue::from_static("application/grpc"))
        }
        None => HeaderValue::from_static("application/grpc"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(ct: &str) -> (request::Parts, StreamCtx) {
        let (mut parts, ()) = http::Request::builder()
            .header(CONTENT_TYPE, ct)
            .header(CONTENT_LENGTH, "12")
            .body(())
            .expect("request")
            .into_parts();
        let mut cx = StreamCtx {
            grpc: Kind::of_content_type(ct.as_bytes()),
            ..Default::default()
        };
        assert!(matches!(
            Filter.on_request(&mut parts, &mut cx),
            Action::Continue
        ));
        (parts, cx)
    }

    #[test]
    fn translates_grpc_web_heads_and_marks_the_stream() {
        let cases = [
            ("application/grpc-web", "application/grpc", false),
            (
                "application/grpc-web+proto",
                "application/grpc+proto",
                false,
            ),
            ("application/grpc-web-text", "application/grpc", true),
            (
                "application/grpc-web-text+proto; x=1",
                "application/grpc+proto",
                true,
            ),
        ];
        for (from, to, text) in cases {
            let (parts, _) = run(from);
            assert_eq!(parts.headers[CONTENT_TYPE], to, "{from}");
            assert_eq!(parts.headers[TE], "trailers");
            assert!(parts.headers.get(CONTENT_LENGTH).is_none());
            assert_eq!(parts.extensions.get::<Web>(), Some(&Web { text }));
        }
    }

    #[test]
    fn leaves_other_requests_alone() {
        for ct in ["application/grpc", "application/json"] {
            let (parts, _) = run(ct);
            assert_eq!(parts.headers[CONTENT_TYPE], ct);
            assert_eq!(parts.headers[CONTENT_LENGTH], "12");
            assert!(parts.extensions.get::<Web>().is_none());
        }
    }
}
