//! One downstream request: checks, normalization, routing, filters, the upstream
//! call with timeout and retries, and the response back with its completion hook.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use attache_filters::{Action as FilterAction, HttpFilter, StreamCtx};
use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri, Version};
use http_body::Body as _;
use http_body_util::BodyExt;

use super::body::{Completion, RespBody};
use super::grpc;
use super::respond::local_reply;
use super::{target, ConnCtx, DownBody};
use crate::config::raw::HeadersWithUnderscores;
use crate::error::{ErrorKind, Reject};
use crate::router::{Action, RequestView, RetryPolicy, RouteAction};
use crate::upstream::pool::SendError;
use crate::upstream::Replay;
use crate::upstream::{Cluster, Endpoint, Outcome, Refused, UpBody, UpstreamBody};

static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// The hop-by-hop names (RFC 9110 7.6.1) removed from every forwarded message.
static HOP_BY_HOP: [&HeaderName; 9] = [
    &header::CONNECTION,
    &KEEP_ALIVE,
    &PROXY_CONNECTION,
    &header::TRANSFER_ENCODING,
    &header::UPGRADE,
    &header::TRAILER,
    &header::PROXY_AUTHENTICATE,
    &header::PROXY_AUTHORIZATION,
    &header::TE,
];
const TE_BIT: u16 = 1 << 8;

/// Which of [`HOP_BY_HOP`] a map holds, as a bit set, from one scan of its names
/// (no hashing: standard names compare as small integers).
fn hop_by_hop_present(headers: &HeaderMap) -> u16 {
    let mut mask = 0;
    for name in headers.keys() {
        if let Some(i) = HOP_BY_HOP.iter().position(|h| *h == name) {
            mask |= 1 << i;
        }
    }
    mask
}

/// Remove hop-by-hop headers (RFC 9110 7.6.1), including those `Connection` names.
/// One scan of the names first: most messages have one (`Connection`) or none, and
/// only the names present are looked up and removed. True when a `Connection`
/// header was there, so names it listed may have been removed.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) -> bool {
    let mask = hop_by_hop_present(headers);
    if mask == 0 {
        return false;
    }
    // The names a `Connection` header lists go too. The value is cloned (a reference
    // count, no copy) so the map can be edited while its tokens are read; names
    // are looked up as `&str`, so nothing is allocated for them.
    if mask & 1 != 0 {
        let mut values = headers.get_all(header::CONNECTION).iter();
        match (values.next().cloned(), values.next().is_some()) {
            (Some(only), false) => remove_listed(headers, &only),
            (Some(_), true) => {
                let all: Vec<HeaderValue> = headers
                    .get_all(header::CONNECTION)
                    .iter()
                    .cloned()
                    .collect();
                for v in &all {
                    remove_listed(headers, v);
                }
            }
            (None, _) => {}
        }
    }
    // All but `TE` (the last), which is checked below.
    for (i, h) in HOP_BY_HOP[..8].iter().enumerate() {
        if mask & (1 << i) != 0 {
            headers.remove(*h);
        }
    }
    // `te: trailers` is the one TE value that may go on (gRPC needs it).
    if mask & TE_BIT != 0 {
        if let Some(te) = headers.get(header::TE) {
            if te.as_bytes() != b"trailers" {
                headers.remove(header::TE);
            }
        }
    }
    mask & 1 != 0
}

fn remove_listed(headers: &mut HeaderMap, connection: &HeaderValue) {
    use crate::upstream::h1::{is_plain_connection_option, tokens};
    if let Ok(list) = connection.to_str() {
        // The usual options name nothing else to remove, so skip their lookup.
        for name in tokens(list.as_bytes()).filter(|t| !is_plain_connection_option(t)) {
            if let Ok(name) = std::str::from_utf8(name) {
                headers.remove(name);
            }
        }
    }
}

/// Remove every header whose name has `_` (`headers_with_underscores: drop`):
/// CGI/WSGI origins map `_` to `-`, so `Transfer_Encoding` or `X_User` would become
/// a framing or identity header there. Returns how many values went.
fn drop_underscored(headers: &mut HeaderMap) -> u64 {
    let names: Vec<HeaderName> = headers
        .keys()
        .filter(|k| k.as_str().as_bytes().contains(&b'_'))
        .cloned()
        .collect();
    let mut dropped = 0;
    for name in names {
        if let http::header::Entry::Occupied(e) = headers.entry(name) {
            dropped += e.remove_entry_mult().1.count() as u64;
        }
    }
    dropped
}

/// A random v4 UUID for `x-request-id`, hex written by hand (no `fmt`).
fn request_id() -> HeaderValue {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let a = (fastrand::u64(..) & 0xffff_ffff_ffff_0fff) | 0x0000_0000_0000_4000;
    let b = (fastrand::u64(..) & 0x3fff_ffff_ffff_ffff) | 0x8000_0000_0000_0000;
    let bytes = ((u128::from(a)) << 64 | u128::from(b)).to_be_bytes();
    let mut out = [0u8; 36];
    let mut i = 0;
    for (n, byte) in bytes.iter().enumerate() {
        if matches!(n, 4 | 6 | 8 | 10) {
            out[i] = b'-';
            i += 1;
        }
        out[i] = HEX[usize::from(byte >> 4)];
        out[i + 1] = HEX[usize::from(byte & 0xf)];
        i += 2;
    }
    HeaderValue::from_bytes(&out).unwrap_or_else(|_| HeaderValue::from_static("0"))
}

fn version_str(v: Version) -> &'static str {
    match v {
        Version::HTTP_09 => "HTTP/0.9",
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_11 => "HTTP/1.1",
        Version::HTTP_2 => "HTTP/2",
        Version::HTTP_3 => "HTTP/3",
        _ => "HTTP/?",
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
    // Taken out only to be forwarded. (One function with a labelled block rather
    // than a wrapper around an inner future: moving a future of several KiB into
    // its parent's state is a memcpy per request.)
    let mut body = Some(body);
    let mut rsp = 'reply: {
        let rt = conn.slot.load_full();
        let grpc_kind = grpc::classify(&parts.headers);
        // The clock is read only when something uses the stream's duration.
        let start = (rt.timed || grpc_kind.is_some()).then(Instant::now);

        let mut sc = StreamCtx {
            method: parts.method.clone(),
            downstream_tls: conn.tls,
            peer_sans: conn.peer_sans.clone(),
            grpc: grpc_kind,
            ..Default::default()
        };
        let mut done = Box::new(Completion::new(start, &conn, rt.clone(), &parts));
        let Some(http) = rt.listener.http.as_ref() else {
            let empty: Arc<[Arc<dyn HttpFilter>]> = Arc::from(Vec::new());
            break 'reply finish_local(ErrorKind::Internal, false, &mut sc, done, &empty);
        };
        done.grpc = grpc_kind.map(|k| grpc::Call::new(k, http.grpc_no_route.clone()));

        // One pass over the head: its size for the limits below (hyper's read buffer
        // bound is not an exact header limit), and framing the parser let through but we
        // will not forward: both Content-Length and Transfer-Encoding, or several
        // different Content-Lengths (request smuggling).
        let pq_len = parts.uri.path_and_query().map_or(0, |p| p.as_str().len());
        let mut header_bytes = pq_len;
        let mut first_cl: Option<&HeaderValue> = None;
        let (mut cl_conflict, mut has_te) = (false, false);
        let mut has_request_id = false;
        let (mut hosts, mut underscored) = (0usize, 0usize);
        for (k, v) in parts.headers.iter() {
            header_bytes += k.as_str().len() + v.len() + 4;
            has_request_id |= k == X_REQUEST_ID;
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
        // More than one Host is a 400 too (RFC 9112 section 3.2): attache routes on
        // the first, an upstream or cache might read another.
        let conflicting = cl_conflict
            || (first_cl.is_some() && has_te)
            || conn.framing_conflict.load(Ordering::Acquire);
        let reject = if conflicting {
            Some(Reject::Framing)
        } else if hosts > 1 {
            Some(Reject::DuplicateHost)
        } else if h2 && !super::h2::scheme_ok(&parts.uri) {
            Some(Reject::Scheme)
        } else if conn.target_fragment.load(Ordering::Acquire) {
            Some(Reject::Fragment)
        } else if underscored > 0 && http.headers_with_underscores == HeadersWithUnderscores::Reject
        {
            Some(Reject::UnderscoreHeader)
        } else {
            None
        };
        if let Some(reason) = reject {
            done.close_connection = true;
            let kind = ErrorKind::BadRequest(reason);
            break 'reply finish_local(kind, false, &mut sc, done, &http.filters);
        }

        if pq_len > http.max_uri_bytes {
            done.close_connection = true;
            break 'reply finish_local(ErrorKind::UriTooLong, false, &mut sc, done, &http.filters);
        }
        if header_bytes > http.max_header_bytes || parts.headers.len() > http.max_headers {
            done.close_connection = true;
            break 'reply finish_local(
                ErrorKind::HeadersTooLarge,
                false,
                &mut sc,
                done,
                &http.filters,
            );
        }

        if underscored > 0 && http.headers_with_underscores == HeadersWithUnderscores::Drop {
            let dropped = drop_underscored(&mut parts.headers);
            done.listener_stats().underscore_dropped.inc_by(dropped);
        }

        // The request target: one authority, the normalized path (what is routed and
        // sent upstream) and the query. They borrow from copies of the URI and Host
        // header (reference counted, not copied), so filters can still take the
        // request head mutably.
        let uri = parts.uri.clone();
        let host_header = parts.headers.get(header::HOST).cloned();
        let head = target::Head {
            version: parts.version,
            options: parts.method == Method::OPTIONS,
            uri: &uri,
            host: host_header.as_ref(),
            tls: conn.tls,
        };
        let settings = target::Settings {
            path: &http.path_rules,
            default_host_http10: http.default_host_http10.as_ref(),
        };
        let target = match target::resolve(&head, &settings) {
            Ok(t) => t,
            Err(reason) => {
                done.close_connection |= reason == Reject::Host;
                let kind = ErrorKind::BadRequest(reason);
                break 'reply finish_local(kind, false, &mut sc, done, &http.filters);
            }
        };
        let (host, path, query) = (&target.host, &target.path, target.query);
        // Upstream, filters and the log see the one authority as `Host`: the client's
        // own header is that already; otherwise it is set from the absolute form,
        // `:authority` or the HTTP/1.0 default.
        if target.source != target::Source::Host {
            if let Ok(v) = HeaderValue::from_str(target.authority) {
                parts.headers.insert(header::HOST, v);
            }
            done.set_authority(target.authority);
        }
        sc.host = Some(attache_filters::Host::new(host));

        // Request id.
        if !has_request_id && http.generate_request_id {
            parts.headers.append(X_REQUEST_ID.clone(), request_id());
        }
        if done.logging() {
            done.request_id = parts.headers.get(&X_REQUEST_ID).cloned();
        }
        // Trace context: join or start, our span id goes upstream as the parent.
        if let Some(tracer) = &rt.listener.tracing {
            let pq = parts.uri.path_and_query().map_or("/", |p| p.as_str());
            done.trace = Some(tracer.start(&mut parts.headers, pq));
        }

        // Route.
        let view = RequestView {
            host,
            path,
            query,
            headers: &parts.headers,
            method: &parts.method,
            peer_sans: &conn.peer_sans,
        };
        let Some((_vh, route)) = http.router.route(&view) else {
            let chain = http.filters.clone();
            if let Some(r) = run_request_filters(&chain, &mut parts, &mut sc) {
                break 'reply finish_filter_reply(r, &mut sc, done, chain);
            }
            break 'reply finish_local(ErrorKind::NoRoute, false, &mut sc, done, &chain);
        };
        sc.route = route.name.clone();
        done.route = Some(route.name.clone());
        if let Some(call) = done.grpc.as_mut() {
            call.stats = route.grpc.clone();
        }
        let chain = route.filters.clone();
        done.chain = Some(chain.clone());

        // Authorization: the route's policy, else the listener's.
        if let Some(rbac) = route.rbac.as_ref().or(rt.listener.rbac.as_ref()) {
            let rq = crate::rbac::Request::Http(&view);
            if rbac.check(&conn.rbac_peer(), &rq, &rt.listener.name).deny() {
                break 'reply finish_local(ErrorKind::Forbidden, false, &mut sc, done, &chain);
            }
        }

        // Filters, request side.
        if let Some(r) = run_request_filters(&chain, &mut parts, &mut sc) {
            break 'reply finish_filter_reply(r, &mut sc, done, chain);
        }
        grpc_web_request(&mut parts, &mut body, &mut done);

        match &route.action {
            Action::Direct(d) => {
                let mut rsp = Response::new(d.body.clone());
                *rsp.status_mut() = d.status;
                rsp.headers_mut()
                    .insert(header::CONTENT_TYPE, d.content_type.clone());
                sc.local_reply = true;
                finish_response(rsp.map(RespBody::full), &mut sc, done, chain)
            }
            Action::Redirect(r) => {
                let authority = parts
                    .headers
                    .get(header::HOST)
                    .and_then(|h| h.to_str().ok())
                    .map(str::to_string)
                    .or_else(|| parts.uri.authority().map(|a| a.to_string()));
                let location = crate::router::redirect_location(
                    r,
                    &route.matcher.path,
                    conn.tls,
                    host,
                    authority.as_deref(),
                    path,
                    query,
                );
                let mut rsp = Response::new(Bytes::new());
                *rsp.status_mut() = r.status;
                match HeaderValue::from_str(&location) {
                    Ok(v) => {
                        rsp.headers_mut().insert(header::LOCATION, v);
                    }
                    Err(_) => {
                        break 'reply finish_local(
                            ErrorKind::BadRequest(Reject::Target),
                            false,
                            &mut sc,
                            done,
                            &chain,
                        )
                    }
                }
                sc.local_reply = true;
                finish_response(rsp.map(RespBody::full), &mut sc, done, chain)
            }
            Action::Route(ra) => {
                let Some(cluster) = ra.cluster(&http.router, &parts.headers).cloned() else {
                    break 'reply finish_local(ErrorKind::NoCluster, false, &mut sc, done, &chain);
                };
                sc.cluster = Some(cluster.name.clone());
                done.cluster = Some(cluster.name.clone());

                // Upstream path and query, in one allocation.
                let pq = crate::router::rewrite_path(
                    &route.matcher.path,
                    ra.prefix_rewrite.as_deref(),
                    path,
                    query,
                );

                // Headers for the upstream. `Host` is the request's authority (set
                // by the target phase), unless a filter or `host_rewrite` changed it.
                let host_in_map = parts.headers.get(header::HOST).cloned();
                // An upgrade this route tunnels (HTTP/1.1 both sides): keep the
                // handshake headers and the downstream connection's upgrade handle.
                let upgrade = if parts.version == Version::HTTP_11
                    && cluster.protocol == crate::config::raw::UpstreamProtocol::Http1
                {
                    ra.upgrade_of(&parts.headers).and_then(|proto| {
                        parts
                            .extensions
                            .remove::<hyper::upgrade::OnUpgrade>()
                            .map(|on| (proto, on))
                    })
                } else {
                    None
                };
                let listed_removed = strip_hop_by_hop(&mut parts.headers);
                if let Some((proto, _)) = &upgrade {
                    parts.headers.insert(header::UPGRADE, proto.clone());
                    parts
                        .headers
                        .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
                }
                match (&ra.host_rewrite, host_in_map) {
                    (Some(h), _) => {
                        parts.headers.insert(header::HOST, h.clone());
                    }
                    // Put back only if `Connection` named it (and so removed it).
                    (None, Some(h)) if listed_removed => {
                        parts.headers.insert(header::HOST, h);
                    }
                    (None, Some(_)) => {}
                    // A filter removed it: an HTTP/1.1 request never goes without one.
                    (None, None) => {
                        if let Ok(v) = HeaderValue::from_str(target.authority) {
                            parts.headers.insert(header::HOST, v);
                        }
                    }
                }
                // Which forwarding headers the request (after filters) already has, in
                // one scan instead of a lookup each.
                let (mut has_xff, mut has_xfcc) = (false, false);
                for k in parts.headers.keys() {
                    has_xff |= k == X_FORWARDED_FOR;
                    has_xfcc |= k == crate::tls::XFCC;
                }
                if has_xff {
                    append_xff(&mut parts.headers, &conn.remote_ip);
                } else {
                    parts
                        .headers
                        .append(X_FORWARDED_FOR.clone(), conn.remote_ip.clone());
                }
                // Without a client certificate the policy only removes a client's header.
                if has_xfcc || conn.peer.is_some() {
                    crate::tls::apply_xfcc(&mut parts.headers, conn.xfcc, conn.peer.as_ref());
                }
                parts.headers.insert(
                    X_FORWARDED_PROTO.clone(),
                    HeaderValue::from_static(if conn.tls { "https" } else { "http" }),
                );

                // Mirrors copy bodies that are buffered: buffer for them as for retries.
                let mirror_body = ra.mirrors.iter().map(|m| m.max_body_bytes).max();
                let req_body = match request_body(
                    body.take(),
                    h2,
                    ra.retry.is_some() || mirror_body.is_some(),
                    http.retry_buffer_bytes.max(mirror_body.unwrap_or(0)),
                )
                .await
                {
                    Some(b) => b,
                    None => {
                        done.close_connection = true;
                        break 'reply finish_local(
                            ErrorKind::BadRequest(Reject::Body),
                            false,
                            &mut sc,
                            done,
                            &chain,
                        );
                    }
                };
                if let ReqBody::Buffered(b) = &req_body {
                    done.bytes_in += b.len() as u64;
                }
                // The upstream call counts a streamed body's bytes as it sends them. A
                // counter of its own only when the access log will read it; otherwise
                // the connection's write-only one (no allocation per request).
                // The idle timer reads it too, to see the client still sending; the
                // span reports it.
                let counted = done.logging() || done.trace.is_some();
                let own_counter = matches!(req_body, ReqBody::Stream(_))
                    && (counted || ra.stream_idle_timeout.is_some());
                let bytes_in = if own_counter {
                    let c = Arc::new(AtomicU64::new(0));
                    if counted {
                        done.bytes_in_stream = Some(c.clone());
                    }
                    c
                } else {
                    conn.unread_bytes_in.clone()
                };
                let sent_counter = own_counter.then(|| bytes_in.clone());
                // A gRPC call's body is streamed (clients send no length) and kept,
                // so an answer retry_on names can be retried once it all went out.
                let replay = match (&req_body, &ra.retry) {
                    (ReqBody::Stream(_), Some(_)) if grpc_kind.is_some() => {
                        Some(Replay::new(http.retry_buffer_bytes))
                    }
                    _ => None,
                };

                // An upgrade (WebSocket) handshake is not copied: a shadow tunnel
                // would have no client.
                if !ra.mirrors.is_empty() && upgrade.is_none() {
                    mirror_copies(ra, &parts, &pq, &req_body);
                }
                let hash = cluster
                    .lb
                    .request_hash(&parts.headers, conn.remote_ip.to_str().unwrap_or(""));
                let limits = grpc::call_limit(
                    &mut parts.headers,
                    grpc_kind.is_some(),
                    ra.max_grpc_timeout,
                    ra.max_stream_duration,
                );
                let limits = grpc::StreamLimits {
                    deadline: limits.map(|d| tokio::time::Instant::now() + d),
                    idle: ra.stream_idle_timeout,
                    sent: sent_counter,
                };
                // A streamed body forward did not take (no healthy endpoint, circuit
                // breaker) comes back, so an HTTP/2 one is held past the 503 too.
                let mut req_body = Some(req_body);
                let sent = forward(
                    ra,
                    &cluster,
                    parts,
                    pq,
                    &mut req_body,
                    bytes_in,
                    hash,
                    &limits,
                    replay,
                    &mut done,
                )
                .await;
                if let Some(ReqBody::Stream(b)) = req_body {
                    body = Some(b);
                }
                match sent {
                    Ok(rsp) => {
                        let status = rsp.status().as_u16();
                        cluster.stats.count_status(status);
                        let (mut rp, incoming) = rsp.into_parts();
                        let switched = match (status, upgrade, incoming) {
                            (101, Some((_, on)), UpstreamBody::H1(b)) => {
                                let proto = rp.headers.get(header::UPGRADE).cloned();
                                match (b.into_upgraded(), proto) {
                                    (Some(up), Some(proto)) => {
                                        let attempt = done.active.take();
                                        tunnel(on, up, attempt, http.idle_timeout, conn.clone());
                                        Ok(proto)
                                    }
                                    _ => Err(RespBody::full(Bytes::new())),
                                }
                            }
                            (_, _, incoming) => Err(RespBody::upstream(incoming)),
                        };
                        strip_hop_by_hop(&mut rp.headers);
                        let body = match switched {
                            Ok(proto) => {
                                rp.headers.insert(header::UPGRADE, proto);
                                rp.headers.insert(
                                    header::CONNECTION,
                                    HeaderValue::from_static("upgrade"),
                                );
                                RespBody::full(Bytes::new())
                            }
                            Err(mut body) => {
                                body.set_timers(limits.timers());
                                body
                            }
                        };
                        let rsp = Response::from_parts(rp, body);
                        finish_response(rsp, &mut sc, done, chain)
                    }
                    Err((kind, exhausted)) => finish_local(kind, exhausted, &mut sc, done, &chain),
                }
            }
        }
    };
    if let Some(b) = body.filter(|b| h2 && !b.is_end_stream()) {
        rsp.body_mut().hold_request_body(b);
    }
    rsp
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
/// go to the client first.
///
/// The tunnel holds the downstream connection's context, so the connection stays
/// counted as open (`attache_downstream_cx_active`) and a drain waits for the
/// tunnel, up to `drain_timeout`, like for a request.
fn tunnel(
    on: hyper::upgrade::OnUpgrade,
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
        let down = match on.await {
            Ok(u) => u,
            Err(e) => {
                tracing::debug!(error = %e, "downstream upgrade failed");
                return;
            }
        };
        let rt = ctx.slot.load_full();
        let stats = &rt.listener.stats;
        stats.upgrade_total.inc();
        stats.upgrade_active.inc();
        let _open = Gauged(&stats.upgrade_active);
        let mut down = hyper_util::rt::TokioIo::new(down);
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

fn append_xff(headers: &mut HeaderMap, ip: &HeaderValue) {
    match headers.get(&X_FORWARDED_FOR).and_then(|v| v.to_str().ok()) {
        Some(prev) if !prev.is_empty() => {
            let mut v = Vec::with_capacity(prev.len() + 2 + ip.len());
            v.extend_from_slice(prev.as_bytes());
            v.extend_from_slice(b", ");
            v.extend_from_slice(ip.as_bytes());
            if let Ok(v) = HeaderValue::from_bytes(&v) {
                headers.insert(X_FORWARDED_FOR.clone(), v);
            }
        }
        _ => {
            headers.insert(X_FORWARDED_FOR.clone(), ip.clone());
        }
    }
}

/// Send the request upstream with the route's timeout and retry policy, within the
/// cluster's circuit breakers; every attempt's outcome feeds outlier detection.
#[allow(clippy::too_many_arguments)]
async fn forward(
    ra: &RouteAction,
    cluster: &Arc<Cluster>,
    mut parts: http::request::Parts,
    pq: String,
    body: &mut Option<ReqBody>,
    bytes_in: Arc<AtomicU64>,
    hash: Option<u64>,
    limits: &grpc::StreamLimits,
    replay: Option<Arc<std::sync::Mutex<Replay>>>,
    done: &mut Completion,
) -> Result<Response<UpstreamBody>, (ErrorKind, bool)> {
    // One clock read covers the first attempt; retries read it again.
    let first = tokio::time::Instant::now();
    // The route timeout bounds the wait for the response head; a gRPC deadline or
    // `max_stream_duration` bounds the whole call, the head included.
    let deadline = match (ra.timeout.map(|t| first + t), limits.deadline) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    let retry: Option<&RetryPolicy> = match body {
        Some(ReqBody::Stream(_)) if replay.is_none() => None,
        _ => ra.retry.as_ref(),
    };
    let max_attempts = 1 + retry.map_or(0, |r| r.attempts);
    let mut last_ep: Option<Arc<Endpoint>> = None;
    let mut attempt = 0;
    // Held while a retry is in flight (`max_retries`).
    let mut _retry_permit: Option<crate::upstream::breakers::Permit> = None;
    loop {
        attempt += 1;
        let last = attempt >= max_attempts;
        let mut try_ = match cluster.attempt(hash, last_ep.as_ref()) {
            Ok(a) => a,
            Err(Refused::Overflow) => return Err((ErrorKind::Overflow, attempt > 1)),
            Err(Refused::NoHealthyUpstream) => return Err((ErrorKind::NoHealthyUpstream, false)),
        };
        let ep = try_.endpoint();
        done.upstream = Some(ep.authority.clone());
        done.attempts = attempt;
        let up_body = match body.as_ref() {
            Some(ReqBody::Empty) => UpBody::Empty,
            Some(ReqBody::Buffered(b)) => UpBody::Full(Some(b.clone())),
            Some(ReqBody::Stream(_)) => match body.take() {
                Some(ReqBody::Stream(s)) => UpBody::Stream {
                    inner: s,
                    counter: bytes_in.clone(),
                    replay: replay.clone(),
                },
                _ => UpBody::Empty,
            },
            None => UpBody::Empty,
        };
        // HTTP/1.1 takes the origin form (Host is a header); HTTP/2 the absolute
        // form, whose authority becomes :authority.
        let built = match cluster.protocol {
            crate::config::raw::UpstreamProtocol::Http1 => {
                Uri::try_from(pq.as_str()).map_err(http::Error::from)
            }
            crate::config::raw::UpstreamProtocol::Http2 => {
                let authority = parts
                    .headers
                    .get(header::HOST)
                    .and_then(|h| h.to_str().ok())
                    .unwrap_or(&ep.authority);
                Uri::builder()
                    .scheme("http")
                    .authority(authority)
                    .path_and_query(pq.as_str())
                    .build()
            }
        };
        let uri = match built {
            Ok(u) => u,
            Err(_) => return Err((ErrorKind::BadRequest(Reject::Target), false)),
        };
        // The body stays in a slot of ours until a connection takes it, so a stream
        // that never left (breaker, failed connect) goes back to the caller.
        let mut up_body = Some(up_body);
        let restore = |up_body: &mut Option<UpBody>, body: &mut Option<ReqBody>| {
            if let Some(UpBody::Stream { inner, .. }) = up_body.take() {
                *body = Some(ReqBody::Stream(inner));
            }
        };
        let mut req = Request::new(());
        *req.method_mut() = parts.method.clone();
        *req.uri_mut() = uri;
        *req.version_mut() = match cluster.protocol {
            crate::config::raw::UpstreamProtocol::Http1 => Version::HTTP_11,
            crate::config::raw::UpstreamProtocol::Http2 => Version::HTTP_2,
        };
        // The last possible attempt takes the headers; earlier ones copy them.
        *req.headers_mut() = if last {
            std::mem::take(&mut parts.headers)
        } else {
            parts.headers.clone()
        };
        if cluster.protocol == crate::config::raw::UpstreamProtocol::Http2 {
            req.headers_mut().remove(header::HOST);
        }

        let Some(pending) = cluster.breakers.pending.try_acquire() else {
            restore(&mut up_body, body);
            return Err((ErrorKind::Overflow, attempt > 1));
        };
        let sent = if attempt == 1 {
            first
        } else {
            tokio::time::Instant::now()
        };
        let call = crate::upstream::pool::send_with(ep, &cluster.pool, req, &mut up_body);
        let per_try = retry.and_then(|r| r.per_try_timeout);
        let limit = match (deadline, per_try) {
            (Some(d), Some(p)) => Some(d.min(sent + p)),
            (Some(d), None) => Some(d),
            (None, Some(p)) => Some(sent + p),
            (None, None) => None,
        };
        let result = limits.wait_head(call, sent, limit).await;
        drop(pending);
        restore(&mut up_body, body);
        let overall_expired = || deadline.is_some_and(|d| tokio::time::Instant::now() >= d);
        let outcome: Result<Response<UpstreamBody>, ErrorKind> = match result {
            None => {
                cluster.stats.timeout.inc();
                Err(ErrorKind::Timeout)
            }
            Some(Ok(rsp)) => {
                cluster.stats.duration.observe(sent.elapsed().as_secs_f64());
                if done.logging() {
                    done.response_head = done.since_start();
                    done.upstream_connect = rsp
                        .extensions()
                        .get::<crate::upstream::pool::Connected>()
                        .map(|c| c.0);
                }
                Ok(rsp)
            }
            Some(Err(SendError::Overflow)) => Err(ErrorKind::Overflow),
            Some(Err(SendError::Connect(e))) => {
                try_.connect_failed(&e);
                Err(ErrorKind::ConnectFailure)
            }
            Some(Err(SendError::Protocol(e))) => {
                tracing::debug!(cluster = %cluster.name, upstream = %try_.endpoint().authority, error = %e, "upstream request failed");
                Err(ErrorKind::UpstreamReset)
            }
            Some(Err(SendError::Body(e))) => {
                tracing::debug!(cluster = %cluster.name, upstream = %try_.endpoint().authority, error = %e, "request body failed; upstream connection closed");
                done.close_connection = true;
                Err(ErrorKind::BadBody)
            }
        };
        let reported = match &outcome {
            Ok(r) if r.status().as_u16() < 500 => Some(Outcome::Success),
            Ok(_) | Err(ErrorKind::UpstreamReset) | Err(ErrorKind::Timeout) => {
                Some(Outcome::Failure)
            }
            // Reported by `connect_failed`. The client's fault (a bad body) and the
            // proxy's own limits (a `max_connections` overflow) say nothing about
            // the endpoint.
            Err(_) => None,
        };
        if let Some(o) = reported {
            try_.report(o);
        }
        if body.is_none() {
            // A streamed body that went out whole can be sent again from its copy.
            let copy = replay
                .as_ref()
                .and_then(|r| r.lock().unwrap_or_else(|p| p.into_inner()).take_complete());
            *body = copy.map(ReqBody::Buffered);
        }
        let mut can_retry = !last && body.is_some() && !overall_expired();
        match outcome {
            Ok(rsp) => {
                let status = rsp.status().as_u16();
                let wants_retry = can_retry
                    && retry.is_some_and(|r| r.retry_status(status) || r.retry_grpc(rsp.headers()));
                if wants_retry {
                    _retry_permit = cluster.breakers.retries.try_acquire();
                    can_retry = _retry_permit.is_some();
                }
                if wants_retry && can_retry {
                    cluster.stats.count_status(status);
                    cluster.stats.retry.inc();
                    last_ep = Some(try_.endpoint().clone());
                    drop(try_);
                    continue;
                }
                done.active = Some(try_);
                return Ok(rsp);
            }
            Err(kind) => {
                let retriable = match kind {
                    ErrorKind::ConnectFailure => retry
                        .is_some_and(|r| r.on_connect_failure || r.on_5xx || r.on_gateway_error),
                    ErrorKind::UpstreamReset => {
                        retry.is_some_and(|r| r.on_reset || r.on_5xx || r.on_gateway_error)
                    }
                    ErrorKind::Timeout => {
                        per_try.is_some()
                            && retry.is_some_and(|r| r.on_5xx || r.on_gateway_error || r.on_reset)
                    }
                    _ => false,
                };
                if can_retry && retriable {
                    _retry_permit = cluster.breakers.retries.try_acquire();
                    can_retry = _retry_permit.is_some();
                }
                if can_retry && retriable {
                    cluster.stats.retry.inc();
                    last_ep = Some(try_.endpoint().clone());
                    continue;
                }
                let kind = if overall_expired() {
                    ErrorKind::Timeout
                } else {
                    kind
                };
                return Err((kind, attempt > 1));
            }
        }
    }
}

/// Run `on_request` in order; the first local reply wins.
fn run_request_filters(
    chain: &[Arc<dyn HttpFilter>],
    parts: &mut http::request::Parts,
    sc: &mut StreamCtx,
) -> Option<Response<Bytes>> {
    for f in chain.iter() {
        if let FilterAction::Respond(r) = f.on_request(parts, sc) {
            return Some(r);
        }
    }
    None
}

fn finish_filter_reply(
    rsp: Response<Bytes>,
    sc: &mut StreamCtx,
    done: Box<Completion>,
    chain: Arc<[Arc<dyn HttpFilter>]>,
) -> Response<RespBody> {
    sc.local_reply = true;
    finish_response(rsp.map(RespBody::full), sc, done, chain)
}

fn finish_local(
    kind: ErrorKind,
    exhausted: bool,
    sc: &mut StreamCtx,
    mut done: Box<Completion>,
    chain: &Arc<[Arc<dyn HttpFilter>]>,
) -> Response<RespBody> {
    let (rsp, flag) = local_reply(kind, exhausted, sc.grpc);
    sc.local_reply = true;
    sc.response_flag = Some(flag.as_str());
    done.flag = flag.as_str();
    done.listener_stats().count_flag(flag);
    if let Some(reason) = kind.reject_reason() {
        done.listener_stats().count_reject(reason);
    }
    finish_response(rsp.map(RespBody::full), sc, done, chain.clone())
}

/// Response side: filters in reverse, stats, and hand the completion to the body.
fn finish_response(
    rsp: Response<RespBody>,
    sc: &mut StreamCtx,
    mut done: Box<Completion>,
    chain: Arc<[Arc<dyn HttpFilter>]>,
) -> Response<RespBody> {
    let (mut parts, mut body) = rsp.into_parts();
    sc.status = Some(parts.status);
    for f in chain.iter().rev() {
        if let FilterAction::Respond(r) = f.on_response(&mut parts, sc) {
            let (p, b) = r.into_parts();
            parts = p;
            body = RespBody::full(b);
            sc.local_reply = true;
            sc.status = Some(parts.status);
        }
    }
    if let Some(kind) = sc.grpc {
        grpc_head(&mut parts, &mut body, sc, &mut done, kind);
    }
    if done.close_connection || done.closing_for_drain() {
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
    done.status = parts.status.as_u16();
    done.listener_stats().count_status(done.status);
    done.capture_response_headers(&parts.headers);
    done.chain = Some(chain);
    done.sc = Some(std::mem::take(sc));
    body.attach(done);
    Response::from_parts(parts, body)
}

/// A gRPC call's response head: a local reply (the proxy's, a filter's, a direct
/// response) reshaped for a gRPC client, and the status of a trailers-only answer.
fn grpc_head(
    parts: &mut http::response::Parts,
    body: &mut RespBody,
    sc: &mut StreamCtx,
    done: &mut Completion,
    kind: attache_filters::grpc::Kind,
) {
    if sc.local_reply {
        let text = body.full_bytes().cloned().unwrap_or_default();
        if super::respond::grpc_from_http(parts, &text, kind) {
            *body = RespBody::full(Bytes::new());
            sc.status = Some(parts.status);
        }
    }
    if let Some(call) = done.grpc.as_mut() {
        call.observe(&parts.headers);
        if let (Some(web), false) = (call.web, sc.local_reply) {
            super::grpc_web::response_head(&mut parts.headers, web.text);
            body.set_web(web.text);
        }
    }
}

/// A call the `grpc_web` filter translates: remember it for the response, and
/// decode a `-text` request body on its way upstream.
fn grpc_web_request(
    parts: &mut http::request::Parts,
    body: &mut Option<DownBody>,
    done: &mut Completion,
) {
    let Some(web) = parts.extensions.remove::<attache_filters::grpc_web::Web>() else {
        return;
    };
    if let Some(call) = done.grpc.as_mut() {
        call.web = Some(web);
    }
    if web.text {
        *body = body
            .take()
            .map(|b| DownBody::WebText(Box::new(super::grpc_web::TextDecode::new(b))));
    }
}

pub(super) fn protocol_name(v: Version) -> &'static str {
    version_str(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for (k, v) in pairs {
            m.append(*k, HeaderValue::from_static(v));
        }
        m
    }

    #[test]
    fn strip_hop_by_hop_removes_only_hop_headers() {
        let mut m = map(&[("host", "a"), ("accept", "*/*")]);
        assert!(!strip_hop_by_hop(&mut m));
        assert_eq!(m.len(), 2);
        let mut m = map(&[
            ("connection", "keep-alive, X-Listed"),
            ("connection", "close"),
            ("x-listed", "1"),
            ("keep-alive", "timeout=5"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "websocket"),
            ("proxy-authorization", "Basic x"),
            ("te", "trailers"),
            ("content-type", "text/plain"),
        ]);
        assert!(strip_hop_by_hop(&mut m));
        let mut left: Vec<&str> = m.keys().map(HeaderName::as_str).collect();
        left.sort_unstable();
        assert_eq!(left, ["content-type", "te"]);
        let mut m = map(&[("te", "gzip"), ("trailer", "x"), ("date", "d")]);
        assert!(!strip_hop_by_hop(&mut m));
        let left: Vec<&str> = m.keys().map(HeaderName::as_str).collect();
        assert_eq!(left, ["date"]);
    }
}
