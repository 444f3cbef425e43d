//! Downstream HTTP/1.1 on the wire: the own codec's framing, pipelining,
//! keep-alive and idle timeout, and the hand-over to hyper in the middle of a
//! connection. Raw sockets, so every byte the client sees is checked.

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use support::yaml::Routes;
use support::{raw_exchange, Origin, Proxy};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How long a read waits for what the proxy must send: generous, the machine may
/// be loaded.
const T: Duration = Duration::from_secs(15);
/// An upper bound for "closed soon" (by the 400 ms `idle_timeout`, or at once):
/// generous for a loaded machine, and still far below anything else that would
/// close the connection (the 60 s head and 1 h idle defaults).
const BOUND: Duration = Duration::from_secs(5);

fn proxy(origin: SocketAddr, raw_origin: SocketAddr) -> Proxy {
    let routes = r#"
- match: { prefix: /deny }
  direct_response: { status: 403, body: "private\n" }
- match: { prefix: /hello }
  direct_response: { status: 200, body: "hello" }
- match: { prefix: /raw/ }
  route: { cluster: raw }
- match: { prefix: / }
  route: { cluster: origin }"#;
    Proxy::start(
        &Routes::new(routes)
            .listener_key("http: { idle_timeout: 400ms }")
            .cluster("origin", &[origin], "")
            .cluster("raw", &[raw_origin], "")
            .yaml(),
    )
}

/// An origin that answers every request on a connection with `answer`, then
/// (when `close`) closes: for response framings hyper's origin does not produce.
async fn raw_origin(answer: &'static [u8], close: bool) -> SocketAddr {
    support::serve_each(move |mut s| async move {
        let mut buf = vec![0u8; 8192];
        let mut seen = Vec::new();
        while let Ok(n) = s.read(&mut buf).await {
            if n == 0 {
                return;
            }
            seen.extend_from_slice(&buf[..n]);
            while let Some(end) = seen.windows(4).position(|w| w == b"\r\n\r\n") {
                seen.drain(..end + 4);
                if s.write_all(answer).await.is_err() {
                    return;
                }
                if close {
                    return;
                }
            }
        }
    })
    .await
}

/// Read until `n` complete responses (heads plus bodies framed by
/// Content-Length, chunked or nothing for HEAD) arrived; returns them raw.
async fn read_responses(s: &mut TcpStream, n: usize, head_requests: &[usize]) -> Vec<String> {
    let mut buf = Vec::new();
    let mut out = Vec::new();
    let deadline = Instant::now() + T;
    while out.len() < n {
        if let Some(len) = complete_response(&buf, head_requests.contains(&out.len())) {
            out.push(String::from_utf8_lossy(&buf[..len]).into_owned());
            buf.drain(..len);
            continue;
        }
        let mut chunk = [0u8; 8192];
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, s.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => {
                panic!(
                    "connection ended after {} responses; unread: {:?}",
                    out.len(),
                    String::from_utf8_lossy(&buf)
                )
            }
            Ok(Ok(k)) => buf.extend_from_slice(&chunk[..k]),
        }
    }
    assert!(
        buf.is_empty(),
        "extra bytes: {:?}",
        String::from_utf8_lossy(&buf)
    );
    out
}

fn complete_response(buf: &[u8], head_request: bool) -> Option<usize> {
    let end = buf.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
    let status: u16 = head.get(9..12)?.parse().ok()?;
    if head_request || status == 204 || status == 304 || status < 200 {
        return Some(end);
    }
    if let Some(cl) = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length: "))
    {
        let cl: usize = cl.trim().parse().ok()?;
        return (buf.len() >= end + cl).then_some(end + cl);
    }
    if head.contains("transfer-encoding: chunked") {
        let body = &buf[end..];
        let term = body.windows(5).position(|w| w == b"0\r\n\r\n")?;
        return Some(end + term + 5);
    }
    panic!("response without framing: {head}");
}

fn status(r: &str) -> &str {
    &r[9..12]
}

fn body(r: &str) -> &str {
    r.split_once("\r\n\r\n").map_or("", |(_, b)| b)
}

async fn assert_closed(s: &mut TcpStream) {
    let mut rest = Vec::new();
    let r = tokio::time::timeout(T, s.read_to_end(&mut rest)).await;
    assert!(
        matches!(r, Ok(Ok(0))),
        "connection still open or sent more: {r:?} {:?}",
        String::from_utf8_lossy(&rest)
    );
}

#[tokio::test]
async fn pipelined_requests_are_answered_in_order() {
    let origin = Origin::start("o").await;
    let p = proxy(origin.addr, support::dead_port());
    let mut s = TcpStream::connect(p.addr("main")).await.expect("connect");
    // Three requests in one write, one with a body; the last asks to close.
    s.write_all(
        b"GET /first HTTP/1.1\r\nHost: a\r\n\r\n\
          POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello\
          GET /hello HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    )
    .await
    .expect("write");
    let r = read_responses(&mut s, 3, &[]).await;
    assert_eq!(status(&r[0]), "200");
    assert!(body(&r[0]).contains("\"path\":\"/first\""), "{}", r[0]);
    assert_eq!((status(&r[1]), body(&r[1])), ("200", "5"));
    assert_eq!((status(&r[2]), body(&r[2])), ("200", "hello"));
    for rsp in &r {
        assert!(rsp.contains("\r\ndate: "), "{rsp}");
    }
    assert!(r[2].contains("\r\nconnection: close\r\n"), "{}", r[2]);
    assert_closed(&mut s).await;
}

#[tokio::test]
async fn a_body_in_pieces_then_the_next_request() {
    let origin = Origin::start("o").await;
    let p = proxy(origin.addr, support::dead_port());
    let mut s = TcpStream::connect(p.addr("main")).await.expect("connect");
    s.write_all(b"POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\n0123")
        .await
        .expect("write");
    tokio::time::sleep(Duration::from_millis(100)).await;
    s.write_all(b"45").await.expect("write");
    tokio::time::sleep(Duration::from_millis(100)).await;
    // The body's end and the next request in one segment.
    s.write_all(b"6789GET /hello HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .expect("write");
    let r = read_responses(&mut s, 2, &[]).await;
    assert_eq!((status(&r[0]), body(&r[0])), ("200", "10"));
    assert_eq!((status(&r[1]), body(&r[1])), ("200", "hello"));
    assert_eq!(origin.conns(), 1);
}

#[tokio::test]
async fn hyper_takes_over_at_a_request_the_codec_leaves_to_it() {
    let origin = Origin::start("o").await;
    let p = proxy(origin.addr, support::dead_port());
    let mut s = TcpStream::connect(p.addr("main")).await.expect("connect");
    // Plain, then an upgrade the route does not allow (hyper's from here on: the
    // `Upgrade` header is dropped and the request forwarded), then plain again.
    s.write_all(
        b"GET /hello HTTP/1.1\r\nHost: a\r\n\r\n\
          GET /up HTTP/1.1\r\nHost: a\r\nUpgrade: foo\r\nConnection: upgrade\r\n\r\n\
          GET /after HTTP/1.1\r\nHost: a\r\n\r\n",
    )
    .await
    .expect("write");
    let r = read_responses(&mut s, 3, &[]).await;
    assert_eq!((status(&r[0]), body(&r[0])), ("200", "hello"));
    assert_eq!(status(&r[1]), "200");
    assert!(body(&r[1]).contains("\"path\":\"/up\""), "{}", r[1]);
    assert!(!body(&r[1]).contains("upgrade"), "{}", r[1]);
    assert!(body(&r[2]).contains("\"path\":\"/after\""), "{}", r[2]);

    // Request smuggling is still refused after a hand-over mid-connection.
    let out = raw_exchange(
        p.addr("main"),
        b"GET /hello HTTP/1.1\r\nHost: a\r\n\r\n\
          POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        T,
    )
    .await;
    assert!(out.starts_with("HTTP/1.1 200 OK\r\n"), "{out}");
    assert_eq!(out.matches("HTTP/1.1 ").count(), 2, "{out}");
    assert!(out.contains("HTTP/1.1 400 Bad Request\r\n"), "{out}");
    // Malformed after a served request: hyper's 400, and nothing reaches the origin.
    let hits = origin.hits();
    let out = raw_exchange(
        p.addr("main"),
        b"GET /hello HTTP/1.1\r\nHost: a\r\n\r\nGET /x HTTP/1.1\r\nBad Header: 1\r\n\r\n",
        T,
    )
    .await;
    assert!(out.contains("HTTP/1.1 400 Bad Request\r\n"), "{out}");
    assert_eq!(origin.hits(), hits);
}

#[tokio::test]
async fn an_unread_body_is_skipped_when_here_and_closes_the_connection_when_not() {
    let origin = Origin::start("o").await;
    let p = proxy(origin.addr, support::dead_port());
    // All of it arrived: skipped, and the connection carries the next request.
    let mut s = TcpStream::connect(p.addr("main")).await.expect("connect");
    s.write_all(
        b"POST /deny HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello\
          GET /hello HTTP/1.1\r\nHost: a\r\n\r\n",
    )
    .await
    .expect("write");
    let r = read_responses(&mut s, 2, &[]).await;
    assert_eq!((status(&r[0]), body(&r[0])), ("403", "private\n"));
    assert_eq!((status(&r[1]), body(&r[1])), ("200", "hello"));

    // Most of it still to come: the answer, then the connection closes (the rest
    // is never read as a request).
    let mut s = TcpStream::connect(p.addr("main")).await.expect("connect");
    s.write_all(b"POST /deny HTTP/1.1\r\nHost: a\r\nContent-Length: 100000\r\n\r\nGET /hello HTTP/1.1\r\n\r\n")
        .await
        .expect("write");
    let r = read_responses(&mut s, 1, &[]).await;
    assert_eq!(status(&r[0]), "403");
    assert_closed(&mut s).await;
}

#[tokio::test]
async fn responses_are_framed_for_their_request_and_status() {
    let origin = Origin::start("o").await;
    let chunked = raw_origin(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
        false,
    )
    .await;
    let p = proxy(origin.addr, chunked);
    let mut s = TcpStream::connect(p.addr("main")).await.expect("connect");
    s.write_all(
        b"HEAD /hello HTTP/1.1\r\nHost: a\r\n\r\n\
          GET /status/204 HTTP/1.1\r\nHost: a\r\n\r\n\
          GET /status/304 HTTP/1.1\r\nHost: a\r\n\r\n\
          GET /raw/chunked HTTP/1.1\r\nHost: a\r\n\r\n\
          GET /hello HTTP/1.1\r\nHost: a\r\n\r\n",
    )
    .await
    .expect("write");
    let r = read_responses(&mut s, 5, &[0]).await;
    // HEAD: the length the body would have, no body (else the next response breaks).
    assert_eq!(status(&r[0]), "200");
    assert!(r[0].contains("\r\ncontent-length: 5\r\n"), "{}", r[0]);
    assert!(r[0].ends_with("\r\n\r\n"), "{}", r[0]);
    assert_eq!(status(&r[1]), "204");
    assert!(!r[1].contains("content-length"), "{}", r[1]);
    assert_eq!(status(&r[2]), "304");
    // Unknown length: chunked again on the way out, same bytes.
    assert_eq!(status(&r[3]), "200");
    assert!(
        r[3].contains("\r\ntransfer-encoding: chunked\r\n"),
        "{}",
        r[3]
    );
    assert!(
        body(&r[3]).starts_with("5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"),
        "{}",
        r[3]
    );
    assert_eq!(body(&r[4]), "hello");
}

#[tokio::test]
async fn a_close_delimited_upstream_body_is_sent_chunked() {
    let origin = Origin::start("o").await;
    let raw = raw_origin(b"HTTP/1.1 200 OK\r\n\r\nuntil the end", true).await;
    let p = proxy(origin.addr, raw);
    let mut s = TcpStream::connect(p.addr("main")).await.expect("connect");
    s.write_all(b"GET /raw/eof HTTP/1.1\r\nHost: a\r\n\r\nGET /hello HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .expect("write");
    let r = read_responses(&mut s, 2, &[]).await;
    assert!(
        r[0].contains("\r\ntransfer-encoding: chunked\r\n"),
        "{}",
        r[0]
    );
    assert_eq!(body(&r[0]), "d\r\nuntil the end\r\n0\r\n\r\n");
    assert_eq!(body(&r[1]), "hello");
}

#[tokio::test]
async fn idle_and_slow_connections_close_after_the_idle_timeout() {
    let origin = Origin::start("o").await;
    let p = proxy(origin.addr, support::dead_port());
    // Idle keep-alive connection after a request.
    let mut s = TcpStream::connect(p.addr("main")).await.expect("connect");
    s.write_all(b"GET /hello HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .expect("write");
    let _ = read_responses(&mut s, 1, &[]).await;
    let t = Instant::now();
    assert_closed(&mut s).await;
    let idle = t.elapsed();
    assert!(
        idle >= Duration::from_millis(300) && idle < BOUND,
        "{idle:?}"
    );
    // A head that never completes (slowloris) is not waited on forever either: a
    // new connection's first head is bounded by the smaller of `idle_timeout` and
    // `request_head_timeout`, and a partial head then gets a 408.
    let mut s = TcpStream::connect(p.addr("main")).await.expect("connect");
    s.write_all(b"GET /hello HTTP/1.1\r\nHost: a\r\n")
        .await
        .expect("write");
    let t = Instant::now();
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let _ = s.write_all(b"X-Slow: 1\r\n").await;
    }
    let mut rest = Vec::new();
    let r = tokio::time::timeout(T, s.read_to_end(&mut rest)).await;
    assert!(r.is_ok(), "still open after {:?}", t.elapsed());
    assert!(t.elapsed() < BOUND, "{:?}", t.elapsed());
    let rest = String::from_utf8_lossy(&rest);
    assert!(
        rest.starts_with("HTTP/1.1 408 Request Timeout\r\n"),
        "{rest}"
    );
}

#[tokio::test]
async fn a_client_leaving_mid_stream_releases_the_upstream_at_once() {
    // An event stream: one chunk, then silence until the client goes.
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let stream_addr = l.local_addr().expect("addr");
    let (closed_tx, closed_rx) = tokio::sync::oneshot::channel::<Instant>();
    tokio::spawn(async move {
        let Ok((mut s, _)) = l.accept().await else {
            return;
        };
        let mut buf = vec![0u8; 4096];
        let _ = s.read(&mut buf).await;
        let _ = s
            .write_all(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nfirst\r\n")
            .await;
        // Wait for the proxy to close its side.
        while let Ok(n) = s.read(&mut buf).await {
            if n == 0 {
                break;
            }
        }
        let _ = closed_tx.send(Instant::now());
    });
    let origin = Origin::start("o").await;
    let p = proxy(origin.addr, stream_addr);
    let mut s = TcpStream::connect(p.addr("main")).await.expect("connect");
    s.write_all(b"GET /raw/events HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .expect("write");
    let mut got = Vec::new();
    while !got.windows(5).any(|w| w == b"first") {
        let mut chunk = [0u8; 1024];
        let n = tokio::time::timeout(T, s.read(&mut chunk))
            .await
            .expect("first event in time")
            .expect("read");
        assert!(n > 0, "closed early");
        got.extend_from_slice(&chunk[..n]);
    }
    let left = Instant::now();
    drop(s);
    let closed = tokio::time::timeout(T, closed_rx)
        .await
        .expect("the upstream connection is closed soon after the client left")
        .expect("origin task");
    assert!(closed - left < BOUND, "{:?}", closed - left);
}

#[tokio::test]
async fn pipelined_requests_before_a_half_close_are_answered() {
    let origin = Origin::start("o").await;
    let p = proxy(origin.addr, support::dead_port());
    let mut s = TcpStream::connect(p.addr("main")).await.expect("connect");
    s.write_all(
        b"GET /one HTTP/1.1\r\nHost: a\r\n\r\n\
          GET /two HTTP/1.1\r\nHost: a\r\n\r\n\
          GET /three HTTP/1.1\r\nHost: a\r\n\r\n",
    )
    .await
    .expect("write");
    s.shutdown().await.expect("half-close");
    // As with hyper (and NGINX), the end of input only counts as the client
    // leaving once no request is left in the buffer: the requests before the last
    // are answered; the last one may be cancelled as the client's.
    let mut all = Vec::new();
    let _ = tokio::time::timeout(T, s.read_to_end(&mut all)).await;
    let mut r = Vec::new();
    let mut rest = &all[..];
    while let Some(n) = complete_response(rest, false) {
        r.push(String::from_utf8_lossy(&rest[..n]).into_owned());
        rest = &rest[n..];
    }
    assert!(r.len() >= 2, "{:?}", String::from_utf8_lossy(&all));
    assert!(body(&r[0]).contains("\"path\":\"/one\""), "{}", r[0]);
    assert!(body(&r[1]).contains("\"path\":\"/two\""), "{}", r[1]);
}

#[tokio::test]
async fn head_of_an_unknown_length_resource_has_no_length() {
    let origin = Origin::start("o").await;
    let raw = raw_origin(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
        false,
    )
    .await;
    let p = proxy(origin.addr, raw);
    let mut s = TcpStream::connect(p.addr("main")).await.expect("connect");
    s.write_all(b"HEAD /raw/x HTTP/1.1\r\nHost: a\r\n\r\nGET /hello HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .expect("write");
    let r = read_responses(&mut s, 2, &[0]).await;
    assert_eq!(status(&r[0]), "200");
    assert!(!r[0].contains("content-length"), "{}", r[0]);
    assert_eq!(body(&r[1]), "hello");
}

#[tokio::test]
async fn a_client_that_stops_reading_is_dropped_after_the_idle_timeout() {
    let origin = Origin::start("o").await;
    let p = proxy(origin.addr, support::dead_port());
    let mut s = TcpStream::connect(p.addr("main")).await.expect("connect");
    const TOTAL: usize = 100_000_000;
    s.write_all(format!("GET /download/{TOTAL} HTTP/1.1\r\nHost: a\r\n\r\n").as_bytes())
        .await
        .expect("write");
    // Not reading: the socket buffers fill and the proxy's writes stall for
    // longer than the listener's idle_timeout (400ms).
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mut total = 0usize;
    let mut chunk = vec![0u8; 256 * 1024];
    let ended = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match s.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => total += n,
            }
        }
    })
    .await;
    assert!(ended.is_ok(), "the proxy kept the stalled response open");
    assert!(total < TOTAL, "the whole response came through: {total}");
}
