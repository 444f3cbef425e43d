//! The response body handed to the client: streamed from the upstream or a local
//! reply, carrying the stream's record ([`Stream`]), which completes exactly once when the
//! body ends, fails or is dropped (client gone): filters' `on_complete`, the access log.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::SystemTime;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};

use super::grpc::{self, Expired, Timers};
use super::stream::Stream;
use crate::upstream::h1::{BoxError, ExchangeError};
use crate::upstream::UpstreamBody;

enum Inner {
    Full(Option<Bytes>),
    Upstream(UpstreamBody),
}

pub struct RespBody {
    inner: Inner,
    done: Option<Box<Stream>>,
    /// What only some streams need, out of line: the body is moved several times
    /// per request, and most responses have none of it.
    extra: Option<Box<Extra>>,
}

#[derive(Default)]
struct Extra {
    /// An unread HTTP/2 request body, dropped with this body: after the response's
    /// last frame went out (see `proxy::handle`).
    held: Option<super::DownBody>,
    /// The call deadline and idle limit of a streamed upstream response.
    timers: Timers,
    /// gRPC-Web: trailers into the body (and base64), for the client.
    web: Option<super::grpc_web::Encode>,
}

impl RespBody {
    pub fn full(b: Bytes) -> RespBody {
        let inner = if b.is_empty() {
            Inner::Full(None)
        } else {
            Inner::Full(Some(b))
        };
        RespBody {
            inner,
            done: None,
            extra: None,
        }
    }

    pub fn upstream(b: UpstreamBody) -> RespBody {
        RespBody {
            inner: Inner::Upstream(b),
            done: None,
            extra: None,
        }
    }

    fn extra(&mut self) -> &mut Extra {
        self.extra.get_or_insert_with(Box::default)
    }

    /// Translate this response body for a gRPC-Web client.
    pub(super) fn set_web(&mut self, text: bool) {
        self.extra().web = Some(super::grpc_web::Encode::new(text));
    }

    /// Bound the rest of the stream by a call deadline and an idle limit.
    pub(super) fn set_timers(&mut self, t: Timers) {
        if t.is_set() {
            self.extra().timers = t;
        }
    }

    /// A stream timer fired: stop reading the upstream (dropping its body resets that
    /// stream) and end the response. A gRPC call ends with trailers carrying the
    /// timer's status, which every gRPC client reads as the call's outcome; any
    /// other response is reset (HTTP/2) or cut (HTTP/1), as it cannot be completed.
    fn expire(&mut self, why: Expired) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.inner = Inner::Full(None);
        let grpc = match self.done.as_mut() {
            Some(d) => {
                d.flag = why.flag();
                d.grpc.as_mut().map(|c| c.status = Some(why.code()))
            }
            None => None,
        };
        if grpc.is_none() {
            self.finish(false);
            return Poll::Ready(Some(Err(why.message().into())));
        }
        let mut trailers = http::HeaderMap::new();
        trailers.insert(
            grpc::GRPC_STATUS.clone(),
            http::HeaderValue::from_static(why.code().as_str()),
        );
        trailers.insert(
            grpc::GRPC_MESSAGE.clone(),
            http::HeaderValue::from_static(why.message()),
        );
        self.finish(true);
        Poll::Ready(Some(Ok(Frame::trailers(trailers))))
    }

    /// The bytes of a local reply's body (None for a streamed one).
    pub(super) fn full_bytes(&self) -> Option<&Bytes> {
        match &self.inner {
            Inner::Full(b) => b.as_ref(),
            Inner::Upstream(_) => None,
        }
    }

    /// Keep an unread request body open until this body is dropped.
    pub(super) fn hold_request_body(&mut self, b: super::DownBody) {
        self.extra().held = Some(b);
    }

    pub(super) fn attach(&mut self, done: Box<Stream>) {
        self.done = Some(done);
    }

    fn finish(&mut self, complete: bool) {
        if let Some(mut d) = self.done.take() {
            d.finish(complete);
        }
    }
}

impl Body for RespBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        let r = this.poll_inner(cx);
        let Some(web) = this.extra.as_mut().and_then(|x| x.web.as_mut()) else {
            return r;
        };
        match r {
            Poll::Ready(Some(Ok(f))) => Poll::Ready(Some(Ok(web.frame(f)))),
            Poll::Ready(None) => Poll::Ready(web.flush().map(|b| Ok(Frame::data(b)))),
            other => other,
        }
    }

    fn is_end_stream(&self) -> bool {
        let inner = match &self.inner {
            Inner::Full(b) => b.is_none(),
            Inner::Upstream(b) => b.is_end_stream(),
        };
        inner
            && !self
                .extra
                .as_ref()
                .is_some_and(|x| x.web.as_ref().is_some_and(|w| w.holding()))
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Inner::Full(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
            Inner::Upstream(b) => b.size_hint(),
        }
    }
}

impl RespBody {
    /// The body's own frames, before a gRPC-Web translation: the completion's
    /// accounting, trailers observed, stream timers.
    fn poll_inner(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self;
        let r = match &mut this.inner {
            Inner::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            Inner::Upstream(b) => Pin::new(b).poll_frame(cx),
        };
        match &r {
            Poll::Ready(Some(Ok(f))) => {
                if let Some(x) = this.extra.as_mut() {
                    x.timers.activity();
                }
                if let Some(d) = this.done.as_mut() {
                    if let Some(data) = f.data_ref() {
                        d.bytes_out += data.len() as u64;
                    } else if let (Some(call), Some(t)) = (d.grpc.as_mut(), f.trailers_ref()) {
                        call.observe(t);
                    }
                }
                if this.is_end_stream() {
                    this.finish(true);
                }
            }
            Poll::Ready(Some(Err(e))) => {
                if let Some(d) = this.done.as_mut() {
                    if d.flag.is_empty() {
                        // Headers already went out: not a local reply, but the log and
                        // filters learn the stream broke, upstream or (a malformed
                        // request body sent alongside) downstream.
                        let downstream = ExchangeError::is_request_body(&**e);
                        d.flag = if downstream { "DPE" } else { "UR" };
                    }
                }
                this.finish(false);
            }
            Poll::Ready(None) => this.finish(true),
            Poll::Pending => {
                let timers = this.extra.as_mut().map(|x| &mut x.timers);
                if let Some(Poll::Ready(why)) = timers.map(|t| t.poll_expired(cx)) {
                    return this.expire(why);
                }
            }
        }
        r
    }
}

impl Drop for RespBody {
    fn drop(&mut self) {
        let complete = self.is_end_stream();
        self.finish(complete);
        if let Some(b) = self.extra.as_mut().and_then(|x| x.held.take()) {
            discard(b);
        }
    }
}

/// How much of an unforwarded HTTP/2 request body is read and thrown away after the
/// response, and for how long, before the stream is reset.
const DISCARD_BYTES: usize = 8 << 20;
const DISCARD_TIME: std::time::Duration = std::time::Duration::from_secs(5);

/// Read and drop what is left of an HTTP/2 request body the response did not need
/// (like NGINX's discarded request body), so a client still uploading receives the
/// response and finishes cleanly. Past [`DISCARD_BYTES`] or [`DISCARD_TIME`] the
/// body is dropped, which resets the stream with `NO_ERROR` (the response has been
/// sent by then).
fn discard(mut b: super::DownBody) {
    use http_body_util::BodyExt;
    if b.is_end_stream() {
        return;
    }
    let Ok(rt) = tokio::runtime::Handle::try_current() else {
        return;
    };
    rt.spawn(async move {
        let mut left = DISCARD_BYTES;
        let drain = async {
            while let Some(Ok(f)) = b.frame().await {
                let n = f.data_ref().map_or(0, Bytes::len);
                left = left.saturating_sub(n);
                if left == 0 {
                    break;
                }
            }
        };
        let _ = tokio::time::timeout(DISCARD_TIME, drain).await;
    });
}

/// `2026-11-25T23:59:59.123Z`.
pub fn rfc3339(t: SystemTime) -> String {
    let d = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs() as i64;
    let ms = d.subsec_millis();
    let days = secs.div_euclid(86400);
    let rem = secs.rem_euclid(86400);
    // Civil from days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = if month <= 2 { y + 1 } else { y };
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{ms:03}Z",
        rem / 3600,
        (rem / 60) % 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_rfc3339() {
        let t = SystemTime::UNIX_EPOCH + std::time::Duration::from_millis(1_764_115_199_123);
        assert_eq!(rfc3339(t), "2025-11-25T23:59:59.123Z");
        assert_eq!(rfc3339(SystemTime::UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
    }

    /// The response body is moved several times per request (handler, codec,
    /// writer); what most responses do not use stays out of line (`Extra`). It was
    /// 376 bytes with the gRPC timers inline, a copy's worth of ~1% of a request,
    /// then 200 with an HTTP/1 upstream body inline (boxed now: 56).
    #[test]
    fn response_body_stays_small() {
        assert!(
            std::mem::size_of::<RespBody>() <= 64,
            "RespBody is {} bytes",
            std::mem::size_of::<RespBody>()
        );
    }
}
