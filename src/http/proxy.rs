//! One downstream request, as phases (the shape of Pingora's `process_request` and
//! Envoy's connection manager + router): head checks, request target, identity,
//! routing, request filters, the action (direct response, redirect, forward), the
//! upstream call with its retries, response filters, and completion.
//!
//! [`handle`] is the driver. Synchronous phases are plain functions that either go
//! on or answer the request ([`Reply`]); the awaits (reading a body to buffer it,
//! the upstream call) stay in the driver, so no phase future is nested in, and
//! moved into, another (see `handle_future_stays_small`). Forwarding headers live in
//! [`super::forwarding`], the per-stream record in [`super::stream`], the retry
//! vocabulary and decision in [`crate::router::retry`].

// A `Reply` carries a local response (144 bytes) by value: boxing it would allocate
// for every direct response and filter answer, and moving it is cheaper.
#![allow(clippy::result_large_err)]

use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use attache_filters::{Action as FilterAction, HttpFilter, StreamCtx};
use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::request::Parts;
use http::{Method, Request, Response, StatusCode, Uri, Version};
use http_body::Body as _;
use http_body_util::BodyExt;

use super::body::RespBody;
use super::forwarding::{self, X_REQUEST_ID};
use super::grpc;
use super::respond::local_reply;
use super::stream::{Chain, Stream};
use super::{target, ConnCtx, DownBody, Runtime};
use crate::config::snapshot::HttpSettings;
use crate::config::types::HeadersWithUnderscores;
use crate::error::{ErrorKind, Reject};
use crate::router::retry::{Failure, RetryState};
use crate::router::{Action, RequestView, Route, RouteAction};
use crate::upstream::pool::SendError;
use crate::upstream::Replay;
use crate::upstream::UpstreamProtocol;
use crate::upstream::{Attempt, Cluster, Endpoint, Outcome, Refused, UpBody, UpstreamBody};

/// The request is answered here, without an upstream: the phase that decided it
/// returns this (as `Err`, so phases chain with `?`).
enum Reply {
    /// The proxy's own answer to an error; `exhausted`: retries ran out.
    Error(ErrorKind, bool),
    /// A filter's or the route's answer (direct response, redirect).
    Local(Response<Bytes>),
}

impl From<ErrorKind> for Reply {
    fn from(kind: ErrorKind) -> Reply {
        Reply::Error(kind, false)
    }
}

/// Serve one request. Never fails: every problem becomes a local reply.
///
/// An HTTP/2 request body that was not forwarded (a local reply, a filter's answer,
/// a redirect) stays open until the response has been sent. Dropping it earlier
/// makes h2 reset the stream with `CANCEL` while the reply is still queued, which
/// strict clients (curl) report as a failed transfer; dropped after the response's
/// last frame, the reset carries `NO_ERROR` (RFC 9113 section 8.1) and the client
/// keeps the complete response.
pub async fn handle(req: Request<DownBody>, conn: Arc<ConnCtx>) -> Response<RespBody> {
    let h2 = req.version() == Version::HTTP_2;
    let (mut parts, body) = req.into_parts();
    // Taken out only to be forwarded.
    let mut body = Some(body);
    let rt = conn.slot.load_full();
    let mut st = Stream::open(&conn, rt.clone(), &parts);
    let mut rsp = 'reply: {
        let fwd = match request_phases(&rt, &conn, &mut parts, &mut body, &mut st) {
            Ok(fwd) => fwd,
            Err(reply) => break 'reply respond(reply, st),
        };
        let (buffer, limit) = fwd.buffering();
        let Some(req_body) = request_body(body.take(), h2, buffer, limit).await else {
            st.close_connection = true;
            break 'reply respond(ErrorKind::BadRequest(Reject::Body).into(), st);
        };
        let mut call = upstream_call(fwd, req_body, &conn, &mut parts, &mut st);
        let sent = forward(&mut call, parts, &mut st).await;
        // A streamed body the call did not take (no healthy endpoint, circuit
        // breaker) comes back, so an HTTP/2 one is held past the 503 too.
        if let Some(ReqBody::Stream(b)) = call.body.current.take() {
            body = Some(b);
        }
        match sent {
            Ok(up) => upstream_response(up, call, &conn, st),
            Err((kind, exhausted)) => respond(Reply::Error(kind, exhausted), st),
        }
    };
    if let Some(b) = body.filter(|b| h2 && !b.is_end_stream()) {
        rsp.body_mut().hold_request_body(b);
    }
    rsp
}

/// The request side, up to the action: head checks, request target, identity,
/// routing (with authorization and the request filters), then the route's action.
/// A request to forward comes back as a [`Forward`].
fn request_phases<'a>(
    rt: &'a Runtime,
    conn: &ConnCtx,
    parts: &mut Parts,
    body: &mut Option<DownBody>,
    st: &mut Stream,
) -> Result<Forward<'a>, Reply> {
    let Some(http) = rt.listener.http.as_ref() else {
        return Err(ErrorKind::Internal.into());
    };
    let facts = check_head(parts, http).inspect_err(|_| st.close_connection = true)?;
    if facts.underscored && http.headers_with_underscores == HeadersWithUnderscores::Drop {
        let dropped = forwarding::drop_underscored(&mut parts.headers);
        st.listener_stats().underscore_dropped.inc_by(dropped);
    }
    // The request target: one authority, the normalized path (what is routed and
    // sent upstream) and the query. They borrow from copies of the URI and Host
    // header (reference counted, not copied), so filters can still take the
    // request head mutably.
    let uri = parts.uri.clone();
    let host_header = parts.headers.get(header::HOST).cloned();
    let target = request_target(&uri, host_header.as_ref(), parts, conn, http, st)?;
    let pq = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let tracer = rt.listener.tracing.as_ref();
    let (present, generate) = (facts.request_id, http.generate_request_id);
    st.trace =
        forwarding::stamp_identity(&mut parts.headers, present, generate, tracer, pq).map(Box::new);
    if st.logging() {
        st.request_id = parts.headers.get(&X_REQUEST_ID).cloned();
    }
    let route = route_phase(rt, http, conn, &target, parts, st)?;
    grpc_web_request(parts, body, st);
    match &route.action {
        Action::Direct(d) => {
            let mut rsp = Response::new(d.body.clone());
            *rsp.status_mut() = d.status;
            rsp.headers_mut()
                .insert(header::CONTENT_TYPE, d.content_type.clone());
            Err(Reply::Local(rsp))
        }
        Action::Redirect(r) => Err(redirect(r, route, &target, conn.tls, parts)),
        Action::Route(ra) => prepare_forward(http, route, ra, &target, conn, parts, st),
    }
}

/// What the head scan learned that later phases use.
struct HeadFacts {
    /// The client sent an `x-request-id`.
    request_id: bool,
    /// Some header name has an `_`.
    underscored: bool,
}

/// Head checks, in one pass over the head: its size for the limits (the codecs'
/// read bounds are not exact header limits), and what attache will not forward
/// because an upstream could read it differently: both Content-Length and
/// Transfer-Encoding, several different Content-Lengths (request smuggling; the
/// HTTP/1 codec refuses those and `#fragment`s before a request exists), more
/// than one Host (RFC 9112 section 3.2: attache routes on the first, an upstream or
/// cache might read another), a bad `:scheme`, and names with `_` when the
/// listener rejects them. A failure closes the connection.
fn check_head(parts: &Parts, http: &HttpSettings) -> Result<HeadFacts, ErrorKind> {
    let pq_len = parts.uri.path_and_query().map_or(0, |p| p.as_str().len());
    let mut header_bytes = pq_len;
    let mut first_cl: Option<&HeaderValue> = None;
    let (mut cl_conflict, mut has_te, mut request_id) = (false, false, false);
    let (mut hosts, mut underscored) = (0usize, 0usize);
    for (k, v) in parts.headers.iter() {
        header_bytes += k.as_str().len() + v.len() + 4;
        request_id |= k == X_REQUEST_ID;
        hosts += usize::from(k == header::HOST);
        underscored += usize::from(k.as_str().as_bytes().contains(&b'_'));
        if k == header::CONTENT_LENGTH {
            match first_cl {
                Some(first) => cl_conflict |= first != v,
                None => first_cl = Some(v),
            }
        } else if k == header::TRANSFER_ENCODING {
            has_te = true;
        }
    }
    let reject = |r| Err(ErrorKind::BadRequest(r));
    if cl_conflict || (first_cl.is_some() && has_te) {
        return reject(Reject::Framing);
    }
    if hosts > 1 {
        return reject(Reject::DuplicateHost);
    }
    if parts.version == Version::HTTP_2 && !super::h2::scheme_ok(&parts.uri) {
        return reject(Reject::Scheme);
    }
    if underscored > 0 && http.headers_with_underscores == HeadersWithUnderscores::Reject {
        return reject(Reject::UnderscoreHeader);
    }
    if pq_len > http.max_uri_bytes {
        return Err(ErrorKind::UriTooLong);
    }
    if header_bytes > http.max_header_bytes || parts.headers.len() > http.max_headers {
        return Err(ErrorKind::HeadersTooLarge);
    }
    Ok(HeadFacts {
        request_id,
        underscored: underscored > 0,
    })
}

/// The request target ([`target::resolve`], shared with `/explain`). Upstream,
/// filters and the log see the one authority as `Host`: the client's own header
/// is that already; otherwise it is set from the absolute form, `:authority` or
/// the HTTP/1.0 default.
fn request_target<'a>(
    uri: &'a Uri,
    host_header: Option<&'a HeaderValue>,
    parts: &mut Parts,
    conn: &ConnCtx,
    http: &'a HttpSettings,
    st: &mut Stream,
) -> Result<target::Target<'a>, Reply> {
    let head = target::Head {
        version: parts.version,
        options: parts.method == Method::OPTIONS,
        uri,
        host: host_header,
        tls: conn.tls,
    };
    let settings = target::Settings {
        path: &http.path_rules,
        default_host_http10: http.default_host_http10.as_ref(),
    };
    let target = target::resolve(&head, &settings).map_err(|reason| {
        st.close_connection |= reason == Reject::Host;
        ErrorKind::BadRequest(reason)
    })?;
    if target.source != target::Source::Host {
        if let Ok(v) = HeaderValue::from_str(target.authority) {
            parts.headers.insert(header::HOST, v);
        }
        st.set_authority(target.authority);
    }
    st.sc.host = Some(attache_filters::Host::new(&target.host));
    Ok(target)
}

/// Routing: the route, its authorization (the route's policy, else the
/// listener's) and its request filters. An unrouted request still passes the
/// listener's filters (which may answer it) before its 404.
fn route_phase<'a>(
    rt: &'a Runtime,
    http: &'a HttpSettings,
    conn: &ConnCtx,
    target: &target::Target<'_>,
    parts: &mut Parts,
    st: &mut Stream,
) -> Result<&'a Route, Reply> {
    let view = RequestView {
        host: &target.host,
        path: &target.path,
        query: target.query,
        headers: &parts.headers,
        method: &parts.method,
        peer_sans: &conn.peer_sans,
    };
    let Some((_vh, route)) = http.router.route(&view) else {
        request_filters(&http.filters, parts, &mut st.sc)?;
        return Err(ErrorKind::NoRoute.into());
    };
    st.sc.route = route.name.clone();
    if let Some(call) = st.grpc.as_mut() {
        call.stats = route.grpc.clone();
    }
    st.chain = Some(route.filters.clone());
    if let Some(rbac) = route.rbac.as_ref().or(rt.listener.rbac.as_ref()) {
        let rq = crate::rbac::Request::Http(&view);
        if rbac.check(&conn.rbac_peer(), &rq, &rt.listener.name).deny() {
            // The filters never saw the request; they may still shape the 403
            // (`cors`: so a browser can read it).
            for f in route.filters.iter() {
                f.on_refused_request(parts, &mut st.sc);
            }
            return Err(ErrorKind::Forbidden.into());
        }
    }
    request_filters(&route.filters, parts, &mut st.sc)?;
    Ok(route)
}

/// Run `on_request` in order; the first local reply wins.
fn request_filters(
    chain: &[Arc<dyn HttpFilter>],
    parts: &mut Parts,
    sc: &mut StreamCtx,
) -> Result<(), Reply> {
    for f in chain.iter() {
        if let FilterAction::Respond(r) = f.on_request(parts, sc) {
            return Err(Reply::Local(r));
        }
    }
    Ok(())
}

/// A redirect route's answer: `Location` from the request's authority (as the
/// filters left `Host`), path and query.
fn redirect(
    r: &crate::router::Redirect,
    route: &Route,
    target: &target::Target<'_>,
    tls: bool,
    parts: &Parts,
) -> Reply {
    let authority = parts
        .headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_string)
        .or_else(|| parts.uri.authority().map(|a| a.to_string()));
    let location = crate::router::redirect_location(
        r,
        &route.matcher.path,
        tls,
        &target.host,
        authority.as_deref(),
        &target.path,
        target.query,
    );
    let Ok(location) = HeaderValue::from_str(&location) else {
        return ErrorKind::BadRequest(Reject::Target).into();
    };
    let mut rsp = Response::new(Bytes::new());
    *rsp.status_mut() = r.status;
    rsp.headers_mut().insert(header::LOCATION, location);
    Reply::Local(rsp)
}

/// A request the route forwards, before its body is read.
struct Forward<'a> {
    http: &'a HttpSettings,
    ra: &'a RouteAction,
    cluster: Arc<Cluster>,
    /// Upstream path and query.
    pq: String,
    /// An upgrade this route tunnels: its protocol and the downstream upgrade handle.
    upgrade: Option<(HeaderValue, super::h1::OnUpgrade)>,
}

impl Forward<'_> {
    /// Whether the body is buffered (retries and mirrors replay it), and up to what
    /// size.
    fn buffering(&self) -> (bool, usize) {
        let mirror = self.ra.mirrors.iter().map(|m| m.max_body_bytes).max();
        let limit = self.http.retry_buffer_bytes.max(mirror.unwrap_or(0));
        (self.ra.retry.is_some() || mirror.is_some(), limit)
    }
}

/// The forward action, up to the request body: the cluster, the upstream path,
/// an upgrade to tunnel, and the head rewritten for the upstream.
fn prepare_forward<'a>(
    http: &'a HttpSettings,
    route: &Route,
    ra: &'a RouteAction,
    target: &target::Target<'_>,
    conn: &ConnCtx,
    parts: &mut Parts,
    st: &mut Stream,
) -> Result<Forward<'a>, Reply> {
    let Some(cluster) = ra.cluster(&http.router, &parts.headers).cloned() else {
        return Err(ErrorKind::NoCluster.into());
    };
    st.sc.cluster = Some(cluster.name.clone());
    // Upstream path and query, in one allocation.
    let pq = crate::router::rewrite_path(
        &route.matcher.path,
        ra.prefix_rewrite.as_deref(),
        &target.path,
        target.query,
    );
    // An upgrade this route tunnels (HTTP/1.1 both sides): keep the handshake
    // headers and the downstream connection's upgrade handle.
    let upgrade =
        if parts.version == Version::HTTP_11 && cluster.protocol == UpstreamProtocol::Http1 {
            ra.upgrade_of(&parts.headers).and_then(|proto| {
                parts
                    .extensions
                    .remove::<super::h1::OnUpgrade>()
                    .map(|on| (proto, on))
            })
        } else {
            None
        };
    let up = forwarding::Upstream {
        authority: target.authority,
        host_rewrite: ra.host_rewrite.as_ref(),
        upgrade: upgrade.as_ref().map(|(proto, _)| proto),
    };
    forwarding::request_to_upstream(&mut parts.headers, &up, &downstream(conn));
    Ok(Forward {
        http,
        ra,
        cluster,
        pq,
        upgrade,
    })
}

fn downstream(conn: &ConnCtx) -> forwarding::Downstream<'_> {
    forwarding::Downstream {
        remote_ip: &conn.remote_ip,
        tls: conn.tls,
        peer: conn.peer.as_ref(),
        xfcc: conn.xfcc,
    }
}

/// What the request body is for the upstream call.
enum ReqBody {
    Empty,
    /// Buffered: can be replayed by retries.
    Buffered(Bytes),
    /// Streamed once.
    Stream(DownBody),
}

/// The upstream call of one request, across its tries.
struct UpstreamCall<'a> {
    fwd: Forward<'a>,
    body: BodySlot,
    hash: Option<u64>,
    limits: grpc::StreamLimits,
}

/// The request body between tries: a streamed one is lent to a try and comes back
/// when it never left; a buffered one (or a streamed one's complete copy) is resent.
struct BodySlot {
    current: Option<ReqBody>,
    /// Counts the streamed body's bytes as the call sends them.
    bytes_in: Arc<AtomicU64>,
    /// A streamed body's copy, so a gRPC call can be retried once it all went out.
    replay: Option<Arc<std::sync::Mutex<Replay>>>,
}

/// Set up the upstream call: byte counting, the replay copy, mirrors, the
/// load-balancing hash and the stream limits (gRPC deadline, idle).
fn upstream_call<'a>(
    fwd: Forward<'a>,
    body: ReqBody,
    conn: &ConnCtx,
    parts: &mut Parts,
    st: &mut Stream,
) -> UpstreamCall<'a> {
    let ra = fwd.ra;
    if let ReqBody::Buffered(b) = &body {
        st.bytes_in += b.len() as u64;
    }
    // The upstream call counts a streamed body's bytes as it sends them. A counter
    // of its own only when something reads it (the access log, the span, the idle
    // timer, which sees the client still sending); otherwise the connection's
    // write-only one (no allocation per request).
    let counted = st.logging() || st.trace.is_some();
    let own_counter =
        matches!(body, ReqBody::Stream(_)) && (counted || ra.stream_idle_timeout.is_some());
    let bytes_in = if own_counter {
        let c = Arc::new(AtomicU64::new(0));
        if counted {
            st.bytes_in_stream = Some(c.clone());
        }
        c
    } else {
        conn.unread_bytes_in.clone()
    };
    let grpc = st.sc.grpc.is_some();
    // A gRPC call's body is streamed (clients send no length) and kept, so an
    // answer retry_on names can be retried once it all went out.
    let replay = match (&body, &ra.retry) {
        (ReqBody::Stream(_), Some(_)) if grpc => Some(Replay::new(fwd.http.retry_buffer_bytes)),
        _ => None,
    };
    // An upgrade (WebSocket) handshake is not copied: a shadow tunnel would have
    // no client.
    if !ra.mirrors.is_empty() && fwd.upgrade.is_none() {
        mirror_copies(ra, parts, &fwd.pq, &body);
    }
    let hash = fwd
        .cluster
        .lb
        .request_hash(&parts.headers, conn.remote_ip.to_str().unwrap_or(""));
    let limit = grpc::call_limit(
        &mut parts.headers,
        grpc,
        ra.max_grpc_timeout,
        ra.max_stream_duration,
    );
    let limits = grpc::StreamLimits {
        deadline: limit.map(|d| tokio::time::Instant::now() + d),
        idle: ra.stream_idle_timeout,
        sent: own_counter.then(|| bytes_in.clone()),
    };
    UpstreamCall {
        fwd,
        body: BodySlot {
            current: Some(body),
            bytes_in,
            replay,
        },
        hash,
        limits,
    }
}

impl BodySlot {
    /// The body for the next try: a buffered one is shared, a streamed one lent.
    fn lend(&mut self) -> UpBody {
        match self.current.take() {
            Some(ReqBody::Buffered(b)) => {
                self.current = Some(ReqBody::Buffered(b.clone()));
                UpBody::Full(Some(b))
            }
            Some(ReqBody::Stream(s)) => UpBody::Stream {
                inner: s,
                counter: self.bytes_in.clone(),
                replay: self.replay.clone(),
            },
            Some(ReqBody::Empty) => {
                self.current = Some(ReqBody::Empty);
                UpBody::Empty
            }
            None => UpBody::Empty,
        }
    }

    /// After a try: a streamed body that never left comes back; one that went out
    /// whole can be sent again from its copy.
    fn take_back(&mut self, lent: &mut Option<UpBody>) {
        if let Some(UpBody::Stream { inner, .. }) = lent.take() {
            self.current = Some(ReqBody::Stream(inner));
        }
        if self.current.is_none() {
            let copy = self
                .replay
                .as_ref()
                .and_then(|r| r.lock().unwrap_or_else(|p| p.into_inner()).take_complete());
            self.current = copy.map(ReqBody::Buffered);
        }
    }
}

/// The request head of one try to `cluster`, for the upstream path and query `pq`.
/// HTTP/1.1 takes the origin form (Host is a header); HTTP/2 the absolute form,
/// whose authority becomes :authority. The last possible try takes the headers
/// (and, to HTTP/1.1, the path); earlier ones copy them.
fn try_request(
    cluster: &Cluster,
    pq: &mut String,
    parts: &mut Parts,
    ep: &Endpoint,
    last: bool,
) -> Result<Request<()>, ErrorKind> {
    let built = match cluster.protocol {
        UpstreamProtocol::Http1 => {
            // The URI shares the path's buffer (`Uri::try_from(&str)` copies
            // it into a new allocation).
            let pq = if last {
                Bytes::from(std::mem::take(pq))
            } else {
                Bytes::copy_from_slice(pq.as_bytes())
            };
            Uri::from_maybe_shared(pq).map_err(http::Error::from)
        }
        UpstreamProtocol::Http2 => {
            let pq = pq.as_str();
            let authority = parts
                .headers
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
                .unwrap_or(&ep.authority);
            Uri::builder()
                .scheme("http")
                .authority(authority)
                .path_and_query(pq)
                .build()
        }
    };
    let uri = built.map_err(|_| ErrorKind::BadRequest(Reject::Target))?;
    let mut req = Request::new(());
    *req.method_mut() = parts.method.clone();
    *req.uri_mut() = uri;
    *req.version_mut() = match cluster.protocol {
        UpstreamProtocol::Http1 => Version::HTTP_11,
        UpstreamProtocol::Http2 => Version::HTTP_2,
    };
    *req.headers_mut() = if last {
        std::mem::take(&mut parts.headers)
    } else {
        parts.headers.clone()
    };
    if cluster.protocol == UpstreamProtocol::Http2 {
        req.headers_mut().remove(header::HOST);
    }
    Ok(req)
}

/// Send the request upstream with the route's timeout and retry policy, within the
/// cluster's circuit breakers: one try after another until one answers or the
/// retry state says stop. Every try's outcome feeds outlier detection. The error
/// says whether retries ran out.
async fn forward(
    call: &mut UpstreamCall<'_>,
    mut parts: Parts,
    st: &mut Stream,
) -> Result<Response<UpstreamBody>, (ErrorKind, bool)> {
    // One clock read covers the first try; retries read it again.
    let first = tokio::time::Instant::now();
    let UpstreamCall {
        fwd,
        body,
        hash,
        limits,
    } = call;
    let (ra, cluster, pq) = (fwd.ra, &fwd.cluster, &mut fwd.pq);
    // The route timeout bounds the wait for the response head; a gRPC deadline or
    // `max_stream_duration` bounds the whole call, the head included.
    let deadline = match (ra.timeout.map(|t| first + t), limits.deadline) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    // A streamed body without a copy cannot be sent twice.
    let policy = match body.current {
        Some(ReqBody::Stream(_)) if body.replay.is_none() => None,
        _ => ra.retry.as_ref(),
    };
    let mut retry = RetryState::new(policy, deadline);
    let mut avoid: Option<Arc<Endpoint>> = None;
    // The downstream's version (each try's request is rewritten to the
    // upstream's): an HTTP/2 downstream keeps response header values in its HPACK
    // table, so an HTTP/1 upstream's response head is copied out for it.
    let headers_outlive = parts.version == Version::HTTP_2;
    loop {
        let n = retry.begin();
        let mut attempt = start_attempt(cluster, avoid.as_ref(), *hash)
            .map_err(|kind| (kind, kind == ErrorKind::Overflow && retry.retried()))?;
        st.upstream = Some(attempt.endpoint().authority.clone());
        st.attempts = n;
        let req = try_request(cluster, pq, &mut parts, attempt.endpoint(), retry.is_last())
            .map_err(|kind| (kind, false))?;
        // The body stays in a slot of ours until a connection takes it, so a stream
        // that never left (breaker, failed connect) goes back to the call.
        let mut lent = Some(body.lend());
        let Some(pending) = cluster.breakers.pending.try_acquire() else {
            body.take_back(&mut lent);
            return Err((ErrorKind::Overflow, retry.retried()));
        };
        let sent = if n == 1 {
            first
        } else {
            tokio::time::Instant::now()
        };
        let result = {
            // Pinned where it is made: the call's future is not moved again.
            let send = std::pin::pin!(crate::upstream::pool::send_with(
                attempt.endpoint(),
                &cluster.pool,
                req,
                &mut lent,
                headers_outlive,
            ));
            limits.wait_head(send, sent, retry.try_limit(sent)).await
        };
        drop(pending);
        body.take_back(&mut lent);
        let outcome = settle(result, cluster, &mut attempt, sent, st);
        let replayable = body.current.is_some();
        let failure = match &outcome {
            Ok(rsp) => Some(Failure::Status(rsp.status().as_u16(), rsp.headers())),
            Err(ErrorKind::ConnectFailure) => Some(Failure::ConnectFailure),
            Err(ErrorKind::UpstreamReset) => Some(Failure::Reset),
            Err(ErrorKind::Timeout) => Some(Failure::Timeout),
            Err(_) => None,
        };
        let again =
            failure.is_some_and(|f| retry.should_retry(&f, replayable, &cluster.breakers.retries));
        if again {
            if let Ok(rsp) = &outcome {
                cluster.stats.count_status(rsp.status().as_u16());
            }
            cluster.stats.retry.inc();
            avoid = Some(attempt.endpoint().clone());
            continue;
        }
        return match outcome {
            Ok(rsp) => {
                st.active = Some(attempt);
                Ok(rsp)
            }
            Err(_) if retry.expired() => Err((ErrorKind::Timeout, retry.retried())),
            Err(kind) => Err((kind, retry.retried())),
        };
    }
}

/// A try's endpoint ([`Cluster::attempt`]: the `max_requests` breaker, the pick,
/// never `avoid` (the one that just failed) when there is another, counted active
/// while the attempt lives).
fn start_attempt(
    cluster: &Arc<Cluster>,
    avoid: Option<&Arc<Endpoint>>,
    hash: Option<u64>,
) -> Result<Attempt, ErrorKind> {
    cluster
        .attempt(hash, avoid)
        .map_err(|refused| match refused {
            Refused::Overflow => ErrorKind::Overflow,
            Refused::NoHealthyUpstream => ErrorKind::NoHealthyUpstream,
        })
}

/// One try's result as the proxy reads it, with its stats, logs and the outcome
/// reported to the cluster (outlier detection).
fn settle(
    result: Option<Result<Response<UpstreamBody>, SendError>>,
    cluster: &Cluster,
    attempt: &mut Attempt,
    sent: tokio::time::Instant,
    st: &mut Stream,
) -> Result<Response<UpstreamBody>, ErrorKind> {
    let outcome = match result {
        None => {
            cluster.stats.timeout.inc();
            Err(ErrorKind::Timeout)
        }
        Some(Ok(rsp)) => {
            cluster.stats.duration.observe(sent.elapsed().as_secs_f64());
            if st.logging() {
                st.response_head = st.since_start();
                st.upstream_connect = rsp
                    .extensions()
                    .get::<crate::upstream::pool::Connected>()
                    .map(|c| c.0);
            }
            Ok(rsp)
        }
        Some(Err(SendError::Overflow)) => Err(ErrorKind::Overflow),
        Some(Err(SendError::Connect(e))) => {
            attempt.connect_failed(&e);
            Err(ErrorKind::ConnectFailure)
        }
        Some(Err(SendError::Protocol(e))) => {
            tracing::debug!(cluster = %cluster.name, upstream = %attempt.endpoint().authority, error = %e, "upstream request failed");
            Err(ErrorKind::UpstreamReset)
        }
        Some(Err(SendError::Body(e))) => {
            tracing::debug!(cluster = %cluster.name, upstream = %attempt.endpoint().authority, error = %e, "request body failed; upstream connection closed");
            st.close_connection = true;
            Err(ErrorKind::BadBody)
        }
    };
    let reported = match &outcome {
        Ok(r) if r.status().as_u16() < 500 => Some(Outcome::Success),
        Ok(_) | Err(ErrorKind::UpstreamReset) | Err(ErrorKind::Timeout) => Some(Outcome::Failure),
        // Reported by `connect_failed`. The client's fault (a bad body) and the
        // proxy's own limits (a `max_connections` overflow) say nothing about the
        // endpoint.
        Err(_) => None,
    };
    if let Some(o) = reported {
        attempt.report(o);
    }
    outcome
}

/// The upstream's response on its way to the client: a switched upgrade becomes a
/// tunnel; otherwise the body streams under the call's timers. Then the response
/// phases.
fn upstream_response(
    rsp: Response<UpstreamBody>,
    call: UpstreamCall<'_>,
    conn: &Arc<ConnCtx>,
    mut st: Box<Stream>,
) -> Response<RespBody> {
    let status = rsp.status().as_u16();
    call.fwd.cluster.stats.count_status(status);
    let (mut rp, incoming) = rsp.into_parts();
    let switched = match (status, call.fwd.upgrade, incoming) {
        (101, Some((_, on)), UpstreamBody::H1(b)) => {
            let proto = rp.headers.get(header::UPGRADE).cloned();
            match ((*b).into_upgraded(), proto) {
                (Some(up), Some(proto)) => {
                    // The tunnel keeps the attempt: it stays active on its endpoint.
                    let attempt = st.active.take();
                    tunnel(on, up, attempt, call.fwd.http.idle_timeout, conn.clone());
                    Ok(proto)
                }
                _ => Err(RespBody::full(Bytes::new())),
            }
        }
        (_, _, incoming) => Err(RespBody::upstream(incoming)),
    };
    let (proto, body) = match switched {
        Ok(proto) => (Some(proto), RespBody::full(Bytes::new())),
        Err(mut body) => {
            body.set_timers(call.limits.timers());
            (None, body)
        }
    };
    forwarding::response_to_downstream(&mut rp.headers, proto);
    response_phases(Response::from_parts(rp, body), st)
}

/// A reply made here: the proxy's answer to an error (flag counted), or a
/// filter's or route's; then the response phases.
fn respond(reply: Reply, mut st: Box<Stream>) -> Response<RespBody> {
    let rsp = match reply {
        Reply::Error(kind, exhausted) => {
            let (rsp, flag) = local_reply(kind, exhausted, st.sc.grpc);
            st.sc.response_flag = Some(flag.as_str());
            st.flag = flag.as_str();
            st.listener_stats().count_flag(flag);
            if let Some(reason) = kind.reject_reason() {
                st.listener_stats().count_reject(reason);
            }
            rsp
        }
        Reply::Local(rsp) => {
            // A filter that answered may name its flag (`RL`).
            if let Some(flag) = st.sc.response_flag.and_then(crate::flag::Flag::from_name) {
                st.flag = flag.as_str();
                st.listener_stats().count_flag(flag);
            }
            rsp
        }
    };
    st.sc.local_reply = true;
    response_phases(rsp.map(RespBody::full), st)
}

/// The response side: filters in reverse, the gRPC shape, connection handling,
/// stats; then the body takes the stream record and completes it at its end.
fn response_phases(rsp: Response<RespBody>, mut st: Box<Stream>) -> Response<RespBody> {
    let (mut parts, mut body) = rsp.into_parts();
    st.sc.status = Some(parts.status);
    if st.chain.is_none() {
        // No route: the listener's chain answers for the stream.
        st.chain = Some(listener_chain(&st));
    }
    if let Stream {
        chain: Some(chain),
        sc,
        ..
    } = &mut *st
    {
        for f in chain.iter().rev() {
            if let FilterAction::Respond(r) = f.on_response(&mut parts, sc) {
                let (p, b) = r.into_parts();
                parts = p;
                body = RespBody::full(b);
                sc.local_reply = true;
                sc.status = Some(parts.status);
            }
        }
    }
    if let Some(kind) = st.sc.grpc {
        grpc_head(&mut parts, &mut body, &mut st, kind);
    }
    if st.close_connection || st.closing_for_drain() {
        parts
            .headers
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    if parts.status == StatusCode::SWITCHING_PROTOCOLS
        && !parts.headers.contains_key(header::UPGRADE)
    {
        // Only a tunnelled upgrade (which sets `Upgrade`) may answer 101.
        parts.status = StatusCode::BAD_GATEWAY;
    }
    st.sc.status = Some(parts.status);
    st.listener_stats().count_status(parts.status.as_u16());
    st.capture_response_headers(&parts.headers);
    body.attach(st);
    Response::from_parts(parts, body)
}

/// The listener's filter chain (empty on a listener without HTTP settings).
fn listener_chain(st: &Stream) -> Chain {
    match st.http() {
        Some(http) => http.filters.clone(),
        None => Arc::from(Vec::new()),
    }
}

/// A gRPC call's response head: a local reply (the proxy's, a filter's, a direct
/// response) reshaped for a gRPC client, an upstream's answer translated for a
/// gRPC-Web client (one that is not gRPC becomes a status), and the status of a
/// trailers-only answer.
fn grpc_head(
    parts: &mut http::response::Parts,
    body: &mut RespBody,
    st: &mut Stream,
    kind: attache_filters::grpc::Kind,
) {
    if st.sc.local_reply {
        let text = body.full_bytes().cloned().unwrap_or_default();
        if super::respond::grpc_from_http(parts, &text, kind, st.flag) {
            *body = RespBody::full(Bytes::new());
        }
    }
    let local = st.sc.local_reply;
    if let Some(call) = st.grpc.as_mut() {
        if let (Some(web), false) = (call.web, local) {
            if super::respond::grpc_web_from_foreign(parts, kind) {
                *body = RespBody::full(Bytes::new());
            } else {
                super::grpc_web::response_head(&mut parts.headers, web.text);
                body.set_web(web.text);
            }
        }
        call.observe(&parts.headers);
    }
}

/// A call the `grpc_web` filter translates: remember it for the response, and
/// decode a `-text` request body on its way upstream.
fn grpc_web_request(parts: &mut Parts, body: &mut Option<DownBody>, st: &mut Stream) {
    let Some(web) = parts.extensions.remove::<attache_filters::grpc_web::Web>() else {
        return;
    };
    if let Some(call) = st.grpc.as_mut() {
        call.web = Some(web);
    }
    if web.text {
        *body = body
            .take()
            .map(|b| DownBody::WebText(Box::new(super::grpc_web::TextDecode::new(b))));
    }
}

pub(super) fn protocol_name(v: Version) -> &'static str {
    match v {
        Version::HTTP_09 => "HTTP/0.9",
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_11 => "HTTP/1.1",
        Version::HTTP_2 => "HTTP/2",
        Version::HTTP_3 => "HTTP/3",
        _ => "HTTP/?",
    }
}

/// Shadow copies of the request as forwarded (never waits for them).
fn mirror_copies(ra: &RouteAction, parts: &http::request::Parts, pq: &str, body: &ReqBody) {
    use super::mirror::{Copy, CopyBody};
    let body = match body {
        ReqBody::Empty => CopyBody::Empty,
        ReqBody::Buffered(b) => CopyBody::Buffered(b),
        ReqBody::Stream(_) => CopyBody::Streamed,
    };
    let copy = Copy {
        parts,
        path_and_query: pq,
        body,
    };
    super::mirror::spawn(&ra.mirrors, &copy);
}

/// The request body for the upstream call: buffered (replayable) when a retry policy
/// could use it and it is small enough, or when an HTTP/2 body is already all here
/// ([`super::h2::preread`]); streamed otherwise. None: the body is malformed and
/// nothing may be forwarded.
async fn request_body(
    body: Option<DownBody>,
    h2: bool,
    retry: bool,
    limit: usize,
) -> Option<ReqBody> {
    use super::h2::{preread, Preread};
    let body = match body {
        None => return Some(ReqBody::Empty),
        Some(b) if b.is_end_stream() => return Some(ReqBody::Empty),
        Some(b) => b,
    };
    let small = body
        .size_hint()
        .exact()
        .is_some_and(|n| n as usize <= limit);
    if retry && small {
        let c = http_body_util::Limited::new(body, limit)
            .collect()
            .await
            .ok()?;
        return Some(ReqBody::Buffered(c.to_bytes()));
    }
    if !h2 {
        return Some(ReqBody::Stream(body));
    }
    Some(match preread(body, limit) {
        Preread::Complete(b) => ReqBody::Buffered(b),
        Preread::Untouched(b) => ReqBody::Stream(b),
        Preread::Partial(r) => ReqBody::Stream(DownBody::Replay(Box::new(r))),
        Preread::Broken => return None,
    })
}

/// Splice an upgraded downstream connection and the upstream connection that
/// answered `101` with [`crate::tcp::splice`] (the TCP proxy's), until both sides
/// closed, either failed, or nothing moved either way for `idle` (the listener's
/// `idle_timeout`). Bytes the upstream sent right after its `101`
/// go to the client first; bytes the client sent past its request head go to the
/// upstream first (the own HTTP/1 codec hands them over with the connection).
///
/// The tunnel holds the downstream connection's context, so the connection stays
/// counted as open (`attache_downstream_cx_active`) and a drain waits for the
/// tunnel, up to `drain_timeout`, like for a request.
fn tunnel(
    on: super::h1::OnUpgrade,
    conn: crate::upstream::h1::Conn,
    attempt: Option<crate::upstream::Attempt>,
    idle: Duration,
    ctx: Arc<ConnCtx>,
) {
    tokio::spawn(async move {
        use tokio::io::AsyncWriteExt;
        // The permit keeps the tunnel inside the cluster's `max_connections`; the
        // attempt keeps it active on its endpoint (least_request, `max_requests`)
        // like a TCP proxy connection.
        let (up, pending, _permit) = conn.into_parts();
        let _attempt = attempt;
        let Some(mut down) = on.switched().await else {
            tracing::debug!("the downstream connection did not switch protocols");
            return;
        };
        let rt = ctx.slot.load_full();
        let stats = &rt.listener.stats;
        stats.upgrade_total.inc();
        stats.upgrade_active.inc();
        let _open = Gauged(&stats.upgrade_active);
        if !pending.is_empty() && down.write_all(&pending).await.is_err() {
            return;
        }
        let spliced = crate::tcp::splice(down, up, idle, [None, None]).await;
        tracing::debug!(end = ?spliced.end, "upgrade tunnel closed");
    });
}

/// Decrements a gauge when dropped.
struct Gauged<'a>(&'a prometheus::IntGauge);

impl Drop for Gauged<'_> {
    fn drop(&mut self) {
        self.0.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conn() -> Arc<ConnCtx> {
        let slot = Arc::new(arc_swap::ArcSwap::from_pointee(
            super::super::tests::runtime(""),
        ));
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], 1));
        Arc::new(ConnCtx::new(slot, addr))
    }

    fn head(pairs: &[(&str, &str)], uri: &str) -> Parts {
        let mut b = Request::builder().uri(uri);
        for (k, v) in pairs {
            b = b.header(*k, *v);
        }
        let req = b.body(()).unwrap_or_else(|e| panic!("{e}"));
        req.into_parts().0
    }

    #[test]
    fn head_checks_reject_what_an_upstream_could_read_differently() {
        let conn = conn();
        let rt = conn.slot.load_full();
        let Some(http) = rt.listener.http.as_ref() else {
            panic!("an http listener");
        };
        let check = |pairs: &[(&str, &str)]| check_head(&head(pairs, "/"), http);
        let bad = |r| Some(ErrorKind::BadRequest(r));
        let ok = check(&[("x-request-id", "a"), ("x_user", "u")]);
        assert!(ok.as_ref().is_ok_and(|f| f.request_id && f.underscored));
        let ok = check(&[("content-length", "1"), ("content-length", "1")]);
        assert!(ok.is_ok_and(|f| !f.request_id && !f.underscored));
        let two = [("content-length", "1"), ("content-length", "2")];
        assert_eq!(check(&two).err(), bad(Reject::Framing));
        let cl_te = [("content-length", "1"), ("transfer-encoding", "chunked")];
        assert_eq!(check(&cl_te).err(), bad(Reject::Framing));
        let hosts = [("host", "a"), ("host", "b")];
        assert_eq!(check(&hosts).err(), bad(Reject::DuplicateHost));
        let long = format!("/{}", "a".repeat(http.max_uri_bytes));
        let got = check_head(&head(&[], &long), http);
        assert_eq!(got.err(), Some(ErrorKind::UriTooLong));
        let many: Vec<(String, &str)> = (0..=http.max_headers)
            .map(|i| (format!("x-h{i}"), "v"))
            .collect();
        let many: Vec<(&str, &str)> = many.iter().map(|(k, v)| (k.as_str(), *v)).collect();
        assert_eq!(check(&many).err(), Some(ErrorKind::HeadersTooLarge));
    }

    /// The request future is made per request (an HTTP/2 stream runs it as its own
    /// task, HTTP/1 connections keep it in their state) and every future nested in
    /// it is moved into its state when awaited, so its size is a per-request cost
    /// that grows silently when a phase keeps more across an await.
    /// It was 6,888 bytes before the phases refactor (debug layout, which is what
    /// this test and clippy's `large_futures` see) and 5,840 after; the bound leaves
    /// room for a field or two, not for a nested phase future. Raising it needs a
    /// reason in the commit (and the h1 load benchmark, benches/README.md).
    #[test]
    fn handle_future_stays_small() {
        const BOUND: usize = 6_144;
        let fut = handle(Request::new(DownBody::Empty), conn());
        let size = std::mem::size_of_val(&fut);
        assert!(
            size <= BOUND,
            "the request future grew to {size} bytes (bound {BOUND})"
        );
    }

    /// The stream record is allocated once per request and carried by the
    /// response body: it was 784 bytes as `Completion` (plus a 216-byte
    /// `StreamCtx` kept beside it in the future).
    #[test]
    fn stream_record_stays_small() {
        const BOUND: usize = 600;
        let size = std::mem::size_of::<Stream>();
        assert!(
            size <= BOUND,
            "the stream record grew to {size} bytes (bound {BOUND})"
        );
    }
}
