//! Request bodies on the own HTTP/1.1 codec. Chunked: every malformed class is
//! refused with an exact `400` before anything reaches the origin when it is
//! buffered with the head; arriving later, the upstream connection is aborted;
//! valid uploads (pipelined, with trailers, large, byte by byte) still work.
//! `Expect: 100-continue` and HTTP/1.0 requests are served by the codec too.

mod support;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use support::yaml::{OneRoute, Routes};
use support::{eventually, raw_exchange, Origin, Proxy};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn proxy(origin: SocketAddr, raw: SocketAddr) -> Proxy {
    let routes = r#"
- match: { prefix: /deny }
  direct_response: { status: 403, body: "private\n" }
- match: { prefix: /raw/ }
  route: { cluster: raw, timeout: 20s }
- match: { prefix: / }
  route: { cluster: origin }"#;
    Proxy::start(
        &Routes::new(routes)
            .cluster("origin", &[origin], "")
            .cluster("raw", &[raw], "")
            .yaml(),
    )
}

const HEAD: &str = "POST /upload HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n";

/// The proxy's `400` for a malformed body, byte for byte (the `date` value aside).
const BAD_REQUEST: &str = "HTTP/1.1 400 Bad Request\r\ncontent-type: text/plain\r\n\
connection: close\r\ncontent-length: 12\r\ndate: DATE\r\n\r\nbad request\n";

/// What the proxy sends until it closes the connection (within a deadline).
async fn until_closed(s: &mut TcpStream) -> String {
    let mut out = Vec::new();
    let r = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out)).await;
    assert!(
        matches!(r, Ok(Ok(_))),
        "connection still open: {r:?} {:?}",
        String::from_utf8_lossy(&out)
    );
    String::from_utf8_lossy(&out).into_owned()
}

/// `raw` with the value of its `date` header replaced by `DATE`.
fn without_date(raw: &str) -> String {
    let Some(start) = raw.find("\r\ndate: ") else {
        return raw.to_string();
    };
    let value = start + "\r\ndate: ".len();
    let end = raw[value..].find("\r\n").map_or(raw.len(), |e| value + e);
    format!("{}DATE{}", &raw[..value], &raw[end..])
}

#[tokio::test]
async fn malformed_chunks_in_the_buffer_get_400_and_nothing_is_forwarded() {
    let origin = Origin::start("o").await;
    let p = proxy(origin.addr, support::dead_port());
    let cases: &[(&str, &[u8])] = &[
        ("hex prefix", b"0x5\r\nhello\r\n0\r\n\r\n"),
        ("plus sign", b"+5\r\nhello\r\n0\r\n\r\n"),
        ("minus sign", b"-5\r\nhello\r\n0\r\n\r\n"),
        ("leading space", b" 5\r\nhello\r\n0\r\n\r\n"),
        ("trailing space", b"5 \r\nhello\r\n0\r\n\r\n"),
        ("underscore", b"5_0\r\nhello\r\n0\r\n\r\n"),
        ("empty size", b"\r\nhello\r\n0\r\n\r\n"),
        ("17 hex digits", b"00000000000000005\r\nhello\r\n0\r\n\r\n"),
        ("bare LF after size", b"5\nhello\r\n0\r\n\r\n"),
        ("bare LF after data", b"5\r\nhello\n0\r\n\r\n"),
        ("missing CRLF after data", b"5\r\nhello0\r\n\r\n"),
        ("data longer than its size", b"3\r\nhello\r\n0\r\n\r\n"),
        ("CR inside an extension", b"5;a\rb\r\nhello\r\n0\r\n\r\n"),
        ("NUL in the size line", b"5\x00\r\nhello\r\n0\r\n\r\n"),
        ("NUL in an extension", b"5;a\x00\r\nhello\r\n0\r\n\r\n"),
        ("bad trailer", b"5\r\nhello\r\n0\r\nbad trailer\r\n\r\n"),
        // The rest of a body that was fine so far: still refused before dispatch.
        ("second chunk", b"5\r\nhello\r\n5x\r\nworld\r\n0\r\n\r\n"),
    ];
    for (what, body) in cases {
        let mut req = HEAD.as_bytes().to_vec();
        req.extend_from_slice(body);
        // A request after it must not be read either.
        req.extend_from_slice(b"GET /next HTTP/1.1\r\nHost: a\r\n\r\n");
        let out = raw_exchange(p.addr("main"), &req, Duration::from_secs(10)).await;
        assert_eq!(without_date(&out), BAD_REQUEST, "{what}");
    }
    assert_eq!(origin.hits(), 0, "nothing reached the origin");
    assert_eq!(origin.conns(), 0, "not even a connection");
    assert_eq!(p.rejected("main", "chunked").await, cases.len() as f64);
    let dpe = p
        .stat("attache_local_reply_total{flag=\"DPE\",listener=\"main\"}")
        .await;
    assert_eq!(dpe, cases.len() as f64);
}

#[tokio::test]
async fn conflicting_framing_is_refused_by_the_codec() {
    let origin = Origin::start("o").await;
    let p = proxy(origin.addr, support::dead_port());
    for req in [
        &b"POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"[..],
        b"POST /upload HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n0\r\n\r\n",
    ] {
        let out = raw_exchange(p.addr("main"), req, Duration::from_secs(10)).await;
        assert_eq!(without_date(&out), BAD_REQUEST);
    }
    assert_eq!(origin.conns(), 0);
    assert_eq!(p.rejected("main", "framing").await, 2.0);
}

/// What a [`Silent`] origin received on one connection, and whether it ended.
#[derive(Clone, Default)]
struct Seen {
    bytes: Vec<u8>,
    ended: bool,
}

/// An origin that reads requests and never completes an answer: it sends
/// `answer` (when set) once a request head arrived, and nothing more.
#[derive(Clone, Default)]
struct Silent {
    conns: Arc<Mutex<Vec<Seen>>>,
    answer: &'static [u8],
}

impl Silent {
    async fn start(&self) -> SocketAddr {
        let conns = self.conns.clone();
        let answer = self.answer;
        support::serve_each(move |mut s| {
            let i = {
                let mut c = conns.lock().expect("lock");
                c.push(Seen::default());
                c.len() - 1
            };
            let conns = conns.clone();
            async move {
                let mut buf = [0u8; 4096];
                let mut answered = answer.is_empty();
                loop {
                    let n = s.read(&mut buf).await.unwrap_or(0);
                    let head_seen = {
                        let mut c = conns.lock().expect("lock");
                        if n == 0 {
                            c[i].ended = true;
                            return;
                        }
                        c[i].bytes.extend_from_slice(&buf[..n]);
                        c[i].bytes.windows(4).any(|w| w == b"\r\n\r\n")
                    };
                    if head_seen && !answered {
                        answered = true;
                        let _ = s.write_all(answer).await;
                    }
                }
            }
        })
        .await
    }

    fn snapshot(&self) -> Vec<Seen> {
        self.conns.lock().expect("lock").clone()
    }
}

#[tokio::test]
async fn a_bad_chunk_after_dispatch_aborts_the_upstream_request() {
    let silent = Silent::default();
    let raw = silent.start().await;
    let p = proxy(support::dead_port(), raw);
    let mut s = TcpStream::connect(p.addr("main")).await.expect("connect");
    s.write_all(
        b"POST /raw/up HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n",
    )
    .await
    .expect("write");
    // The head and the first chunk went upstream.
    eventually(Duration::from_secs(10), "the first chunk upstream", || {
        let got = silent.snapshot();
        async move {
            let seen = got.first()?;
            seen.bytes.ends_with(b"5\r\nhello\r\n").then_some(())
        }
    })
    .await;
    s.write_all(b"zz\r\ngarbage\r\n0\r\n\r\n")
        .await
        .expect("write");
    assert_eq!(without_date(&until_closed(&mut s).await), BAD_REQUEST);
    // The origin saw its connection end without the rest of the body.
    let got = eventually(
        Duration::from_secs(10),
        "the upstream connection closed",
        || {
            let got = silent.snapshot();
            async move { got.first().is_some_and(|c| c.ended).then_some(got) }
        },
    )
    .await;
    assert_eq!(got.len(), 1);
    let seen = String::from_utf8_lossy(&got[0].bytes).into_owned();
    assert!(seen.ends_with("5\r\nhello\r\n"), "{seen:?}");
    assert!(
        !seen.contains("garbage") && !seen.contains("0\r\n\r\n"),
        "{seen:?}"
    );
    assert_eq!(p.rejected("main", "chunked").await, 1.0);
    // Not the upstream's fault: no 5xx, no reset counted against it.
    let upstream_5xx = p
        .stat_labels(
            "attache_upstream_rq_total",
            &[("cluster", "raw"), ("code_class", "5xx")],
        )
        .await;
    assert_eq!(upstream_5xx, 0.0);
    let ur = p
        .stat("attache_local_reply_total{flag=\"UR\",listener=\"main\"}")
        .await;
    assert_eq!(ur, 0.0);
}

/// Read `n` responses whose bodies are framed by `content-length`.
async fn read_counted(s: &mut TcpStream, n: usize) -> Vec<(String, String)> {
    let mut buf = Vec::new();
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while out.len() < n {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length: "))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or_else(|| panic!("no length: {head}"));
            if buf.len() >= end + 4 + len {
                let body = String::from_utf8_lossy(&buf[end + 4..end + 4 + len]).into_owned();
                out.push((head[9..12].to_string(), body));
                buf.drain(..end + 4 + len);
                continue;
            }
        }
        let mut chunk = [0u8; 8192];
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, s.read(&mut chunk)).await {
            Ok(Ok(k)) if k > 0 => buf.extend_from_slice(&chunk[..k]),
            other => panic!("ended after {} responses: {other:?}", out.len()),
        }
    }
    out
}

#[tokio::test]
async fn valid_chunked_uploads_are_forwarded() {
    let origin = Origin::start("o").await;
    let p = proxy(origin.addr, support::dead_port());
    let mut s = TcpStream::connect(p.addr("main")).await.expect("connect");
    // Pipelined: two chunked uploads (one with extensions and trailers) and a GET,
    // in one write.
    let mut req = HEAD.as_bytes().to_vec();
    req.extend_from_slice(b"3\r\nabc\r\n4\r\ndefg\r\n0\r\n\r\n");
    req.extend_from_slice(HEAD.as_bytes());
    req.extend_from_slice(
        b"5;name=value\r\nhello\r\nA ; q=\"x\"\r\n0123456789\r\n0\r\nx-checksum: 1\r\n\r\n",
    );
    req.extend_from_slice(b"GET /after HTTP/1.1\r\nHost: a\r\n\r\n");
    s.write_all(&req).await.expect("write");
    let r = read_counted(&mut s, 3).await;
    assert_eq!(r[0], ("200".into(), "7".into()));
    assert_eq!(r[1], ("200".into(), "15".into()));
    assert_eq!(r[2].0, "200");
    assert!(r[2].1.contains("\"path\":\"/after\""), "{}", r[2].1);

    // Large: 1 MiB in 64 KiB chunks, written as it is encoded.
    let chunk = vec![b'x'; 64 * 1024];
    s.write_all(HEAD.as_bytes()).await.expect("write");
    for _ in 0..16 {
        s.write_all(format!("{:x}\r\n", chunk.len()).as_bytes())
            .await
            .expect("write");
        s.write_all(&chunk).await.expect("write");
        s.write_all(b"\r\n").await.expect("write");
    }
    s.write_all(b"0\r\n\r\n").await.expect("write");
    let r = read_counted(&mut s, 1).await;
    assert_eq!(r[0], ("200".into(), (16 * 64 * 1024).to_string()));

    // Byte by byte, head included.
    let mut req = HEAD.as_bytes().to_vec();
    req.extend_from_slice(b"5\r\nhello\r\n1;e\r\n!\r\n0\r\nx-t: v\r\n\r\n");
    for b in &req {
        s.write_all(&[*b]).await.expect("write");
        s.flush().await.expect("flush");
    }
    let r = read_counted(&mut s, 1).await;
    assert_eq!(r[0], ("200".into(), "6".into()));
    // All on one client connection and one upstream connection.
    assert_eq!(origin.conns(), 1);
    assert_eq!(origin.hits(), 5);
    assert_eq!(p.rejected("main", "chunked").await, 0.0);
}

/// Read exactly `n` bytes.
async fn read_exact_within(s: &mut TcpStream, n: usize) -> String {
    let mut buf = vec![0u8; n];
    tokio::time::timeout(Duration::from_secs(10), s.read_exact(&mut buf))
        .await
        .expect("in time")
        .expect("read");
    String::from_utf8_lossy(&buf).into_owned()
}

#[tokio::test]
async fn expect_100_continue_is_answered_before_the_body() {
    const CONTINUE: &str = "HTTP/1.1 100 Continue\r\n\r\n";
    let origin = Origin::start("o").await;
    let p = proxy(origin.addr, support::dead_port());
    let mut s = TcpStream::connect(p.addr("main")).await.expect("connect");
    // Counted body: the `100`, then the body, then the answer.
    s.write_all(
        b"POST /upload HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n",
    )
    .await
    .expect("write");
    assert_eq!(read_exact_within(&mut s, CONTINUE.len()).await, CONTINUE);
    s.write_all(b"hello").await.expect("write");
    assert_eq!(read_counted(&mut s, 1).await[0], ("200".into(), "5".into()));
    // Chunked, on the same connection.
    s.write_all(b"PUT /upload HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nTransfer-Encoding: chunked\r\n\r\n")
        .await
        .expect("write");
    assert_eq!(read_exact_within(&mut s, CONTINUE.len()).await, CONTINUE);
    s.write_all(b"3\r\nabc\r\n0\r\n\r\n").await.expect("write");
    assert_eq!(read_counted(&mut s, 1).await[0], ("200".into(), "3".into()));
    // A body sent without waiting: no `100`; and the origin does not see the
    // expectation.
    s.write_all(
        b"PUT /echo HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\nabc",
    )
    .await
    .expect("write");
    let r = read_counted(&mut s, 1).await;
    assert_eq!(r[0].0, "200");
    assert!(r[0].1.contains("\"path\":\"/echo\""), "{}", r[0].1);
    assert!(!r[0].1.contains("expect"), "{}", r[0].1);
    assert_eq!(origin.conns(), 1);

    // A local reply goes out without a `100`, and the body is never asked for.
    let mut s = TcpStream::connect(p.addr("main")).await.expect("connect");
    s.write_all(
        b"POST /deny HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 100000\r\n\r\n",
    )
    .await
    .expect("write");
    assert_eq!(
        read_counted(&mut s, 1).await[0],
        ("403".into(), "private\n".into())
    );
    assert_eq!(until_closed(&mut s).await, "");
}

#[tokio::test]
async fn a_bad_chunk_after_the_response_started_closes_both_connections() {
    let silent = Silent {
        answer: b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nfirst\r\n",
        ..Default::default()
    };
    let raw = silent.start().await;
    let p = proxy(support::dead_port(), raw);
    let mut s = TcpStream::connect(p.addr("main")).await.expect("connect");
    s.write_all(
        b"POST /raw/up HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n",
    )
    .await
    .expect("write");
    // The response head and its first chunk reach the client.
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !got.ends_with(b"5\r\nfirst\r\n") {
        let mut chunk = [0u8; 4096];
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, s.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => got.extend_from_slice(&chunk[..n]),
            other => panic!("{other:?} after {:?}", String::from_utf8_lossy(&got)),
        }
    }
    assert!(got.starts_with(b"HTTP/1.1 200 OK\r\n"));
    s.write_all(b"5\r\nworld\r\nzz\r\n").await.expect("write");
    // The response ends there, unterminated, and the connection closes.
    let rest = until_closed(&mut s).await;
    assert!(!rest.contains("0\r\n\r\n"), "{rest:?}");
    // The upstream connection was aborted after the good chunks only.
    let got = eventually(
        Duration::from_secs(10),
        "the upstream connection closed",
        || {
            let got = silent.snapshot();
            async move { got.first().is_some_and(|c| c.ended).then_some(got) }
        },
    )
    .await;
    let seen = String::from_utf8_lossy(&got[0].bytes).into_owned();
    assert!(seen.ends_with("5\r\nworld\r\n"), "{seen:?}");
    assert_eq!(p.rejected("main", "chunked").await, 1.0);
}

#[tokio::test]
async fn http10_requests_are_served_with_their_framing() {
    let origin = Origin::start("o").await;
    let silent = Silent {
        answer: b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
        ..Default::default()
    };
    let p = proxy(origin.addr, silent.start().await);
    // Without keep-alive: answered, then closed.
    let out = raw_exchange(
        p.addr("main"),
        b"GET /echo HTTP/1.0\r\nHost: a\r\n\r\n",
        Duration::from_secs(10),
    )
    .await;
    assert!(out.starts_with("HTTP/1.1 200 OK\r\n"), "{out}");
    assert!(out.contains("\r\nconnection: close\r\n"), "{out}");
    assert!(out.contains("\"path\":\"/echo\""), "{out}");
    // Keep-alive, pipelined: both answered, and the connection stays open.
    let mut s = TcpStream::connect(p.addr("main")).await.expect("connect");
    let ka = "GET /echo HTTP/1.0\r\nHost: a\r\nConnection: keep-alive\r\n\r\n";
    s.write_all(format!("{ka}{ka}").as_bytes())
        .await
        .expect("write");
    let r = read_counted(&mut s, 2).await;
    assert!(r.iter().all(|(status, _)| status == "200"), "{r:?}");
    // A body of unknown length ends with the connection, never chunked.
    s.write_all(b"GET /raw/x HTTP/1.0\r\nHost: a\r\nConnection: keep-alive\r\n\r\n")
        .await
        .expect("write");
    let out = until_closed(&mut s).await;
    assert!(out.starts_with("HTTP/1.1 200 OK\r\n"), "{out}");
    assert!(out.ends_with("\r\n\r\nabc"), "{out}");
    let head = out.to_ascii_lowercase();
    assert!(
        !head.contains("transfer-encoding") && !head.contains("content-length"),
        "{out}"
    );
    assert!(head.contains("connection: close\r\n"), "{out}");
    // No transfer codings in HTTP/1.0.
    let hits = origin.hits();
    let out = raw_exchange(
        p.addr("main"),
        b"POST /upload HTTP/1.0\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(without_date(&out), BAD_REQUEST);
    assert_eq!(origin.hits(), hits);
}

#[tokio::test]
async fn a_bad_chunk_for_an_http2_upstream_is_the_client_s_fault() {
    let origin = Origin::start_h2("o2").await;
    let p = Proxy::start(
        &OneRoute::to(&[origin.addr])
            .names("main", "h2")
            .cluster_key("protocol: http2")
            .yaml(),
    );
    let mut s = TcpStream::connect(p.addr("main")).await.expect("connect");
    s.write_all(
        b"POST /upload HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n",
    )
    .await
    .expect("write");
    eventually(Duration::from_secs(10), "the request upstream", || {
        let hits = origin.hits();
        async move { (hits == 1).then_some(()) }
    })
    .await;
    s.write_all(b"zz\r\n").await.expect("write");
    assert_eq!(without_date(&until_closed(&mut s).await), BAD_REQUEST);
    assert_eq!(p.rejected("main", "chunked").await, 1.0);
}
