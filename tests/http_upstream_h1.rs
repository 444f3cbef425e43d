//! The upstream HTTP/1.1 client against origins that write raw bytes: every body
//! framing (chunked with extensions and trailers split across writes, close-delimited,
//! HEAD, 204/304), interim 1xx responses, keep-alive reuse, the keep-alive race (the
//! origin closes an idle pooled connection), broken responses (502 UR) and an origin
//! that answers before it has read the whole upload.

mod support;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use support::yaml::OneRoute;
use support::{eventually, get, send, Proxy};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// One step of a scripted answer.
#[derive(Clone)]
enum Step {
    Write(&'static [u8]),
    Pause(u64),
    /// Close the connection after this answer.
    Close,
    /// Keep reading (and dropping) whatever the client sends, then close.
    Drain,
    /// Read (and drop) the request body up to and including this marker.
    ReadUntil(&'static [u8]),
}

/// An origin whose answer to every request head is `script(path)`. Counts accepted
/// connections. Request bodies are not read (except by `Drain`).
struct RawOrigin {
    addr: SocketAddr,
    conns: Arc<AtomicU64>,
    /// Connections the origin has closed (its script ended or the peer left).
    closed: Arc<AtomicU64>,
}

impl RawOrigin {
    async fn start(script: fn(&str) -> Vec<Step>) -> RawOrigin {
        let conns = Arc::new(AtomicU64::new(0));
        let closed = Arc::new(AtomicU64::new(0));
        let (c, d) = (conns.clone(), closed.clone());
        let addr = support::serve_each(move |s| {
            c.fetch_add(1, Ordering::SeqCst);
            let d = d.clone();
            async move {
                Box::pin(serve(s, script)).await;
                d.fetch_add(1, Ordering::SeqCst);
            }
        })
        .await;
        RawOrigin {
            addr,
            conns,
            closed,
        }
    }

    fn conns(&self) -> u64 {
        self.conns.load(Ordering::SeqCst)
    }

    fn closed(&self) -> u64 {
        self.closed.load(Ordering::SeqCst)
    }
}

async fn serve(mut s: TcpStream, script: fn(&str) -> Vec<Step>) {
    let mut buf = Vec::new();
    loop {
        let head_end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            let mut chunk = [0u8; 4096];
            match s.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
        buf.drain(..head_end);
        let path = head.split(' ').nth(1).unwrap_or("/").to_string();
        for step in script(&path) {
            match step {
                Step::Write(b) => {
                    if s.write_all(b).await.is_err() {
                        return;
                    }
                    let _ = s.flush().await;
                }
                Step::Pause(ms) => tokio::time::sleep(Duration::from_millis(ms)).await,
                Step::Close => return,
                Step::ReadUntil(marker) => loop {
                    if let Some(i) = buf.windows(marker.len()).position(|w| w == marker) {
                        buf.drain(..i + marker.len());
                        break;
                    }
                    // Keep only a marker's length of tail while scanning.
                    let keep = buf.len().saturating_sub(marker.len());
                    buf.drain(..keep);
                    let mut chunk = [0u8; 65536];
                    match s.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                },
                Step::Drain => {
                    let mut sink = [0u8; 65536];
                    while let Ok(n) = s.read(&mut sink).await {
                        if n == 0 {
                            break;
                        }
                    }
                    return;
                }
            }
        }
    }
}

fn yaml(addr: SocketAddr) -> String {
    OneRoute::to(&[addr])
        .names("main", "raw")
        .route_key("timeout: 5s")
        .yaml()
}

/// Requests the origin saw on `/crash` (it closes without answering).
static CRASHES: AtomicU64 = AtomicU64::new(0);

fn script(path: &str) -> Vec<Step> {
    use Step::*;
    match path {
        "/chunked" => vec![
            Write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ncontent-length: 99\r\n\r\n"),
            Write(b"5;name=value\r\nhel"),
            Pause(30),
            Write(b"lo\r\n6\r\n world\r"),
            Pause(30),
            Write(b"\n0\r\nx-checksum: 1\r\n\r\n"),
        ],
        "/close-delimited" => vec![
            Write(b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n\r\nuntil "),
            Pause(20),
            Write(b"the end"),
            Close,
        ],
        "/head" => vec![Write(
            b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\nx-kind: head\r\n\r\n",
        )],
        "/no-content" => vec![Write(b"HTTP/1.1 204 No Content\r\nx-kind: empty\r\n\r\n")],
        "/not-modified" => vec![Write(b"HTTP/1.1 304 Not Modified\r\netag: \"v1\"\r\n\r\n")],
        "/interim" => vec![
            Write(b"HTTP/1.1 100 Continue\r\n\r\n"),
            Write(b"HTTP/1.1 103 Early Hints\r\nlink: </style.css>; rel=preload\r\n\r\n"),
            Write(b"HTTP/1.1 201 Created\r\ncontent-length: 2\r\n\r\nok"),
        ],
        "/idle-close" => vec![
            Write(b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\nidle"),
            Pause(100),
            Close,
        ],
        "/conflicting-length" => vec![Write(
            b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\ncontent-length: 4\r\n\r\nabcd",
        )],
        "/garbage" => vec![Write(b"SSH-2.0-OpenSSH_9.6\r\n\r\n"), Close],
        "/chunked-twice" => vec![Write(
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked, chunked\r\n\r\n3\r\n3\r\nabc\r\n0\r\n\r\n",
        )],
        "/chunked-listed" => vec![Write(
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: ,chunked,\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
        )],
        "/truncated" => vec![
            Write(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nonly part"),
            Close,
        ],
        "/duplex" => vec![
            // Answer at once, then read the whole upload before the body ends.
            Write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"),
            ReadUntil(b"END"),
            Write(b"8\r\nreceived\r\n0\r\n\r\n"),
        ],
        "/crash" => {
            CRASHES.fetch_add(1, Ordering::SeqCst);
            vec![Close]
        }
        "/upload" => vec![
            Write(b"HTTP/1.1 413 Payload Too Large\r\ncontent-length: 8\r\nconnection: close\r\n\r\ntoo big\n"),
            Drain,
        ],
        _ => vec![Write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nhi")],
    }
}

#[tokio::test]
async fn every_body_framing_is_relayed_and_keep_alive_connections_are_reused() {
    let o = RawOrigin::start(script).await;
    let p = Proxy::start(&yaml(o.addr));

    // Chunked with an extension, a trailer and a Content-Length to ignore, split
    // across writes in the middle of data and of a CRLF.
    let r = get(&p.url("main", "/chunked"), &[]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "hello world");
    assert_eq!(r.header("content-length"), None, "CL ignored under chunked");
    // The same connection serves the next requests (the body was read to the end).
    let r = get(&p.url("main", "/"), &[]).await;
    assert_eq!((r.status, r.text().as_str()), (200, "hi"));
    let r = send("HEAD", &p.url("main", "/head"), &[], Bytes::new()).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-kind").as_deref(), Some("head"));
    assert_eq!(r.header("content-length").as_deref(), Some("100"));
    assert!(r.body.is_empty());
    let r = get(&p.url("main", "/no-content"), &[]).await;
    assert_eq!(r.status, 204);
    assert_eq!(r.header("x-kind").as_deref(), Some("empty"));
    let r = get(&p.url("main", "/not-modified"), &[]).await;
    assert_eq!(r.status, 304);
    let r = get(&p.url("main", "/interim"), &[]).await;
    assert_eq!((r.status, r.text().as_str()), (201, "ok"));
    assert_eq!(
        o.conns(),
        1,
        "one keep-alive connection served all of these"
    );

    // Close-delimited: the body ends when the origin closes; that connection is gone.
    let r = get(&p.url("main", "/close-delimited"), &[]).await;
    assert_eq!((r.status, r.text().as_str()), (200, "until the end"));
    let r = get(&p.url("main", "/"), &[]).await;
    assert_eq!(r.status, 200);
    assert_eq!(o.conns(), 2);
}

#[tokio::test]
async fn a_pooled_connection_the_origin_closed_is_replaced_without_an_error() {
    let o = RawOrigin::start(script).await;
    let p = Proxy::start(&yaml(o.addr));
    for round in 0..5u64 {
        let r = get(&p.url("main", "/idle-close"), &[]).await;
        assert_eq!(
            (r.status, r.text().as_str()),
            (200, "idle"),
            "round {round}"
        );
        // The origin closes its side 100 ms after answering; the pooled connection
        // is dead by the next request.
        eventually(Duration::from_secs(30), "the origin to close", || async {
            (o.closed() > round).then_some(())
        })
        .await;
    }
    assert_eq!(o.conns(), 5);
    assert_eq!(
        p.stat("attache_local_reply_total{flag=\"UR\",listener=\"main\"}")
            .await,
        0.0
    );
}

#[tokio::test]
async fn broken_responses_are_502_and_counted() {
    let o = RawOrigin::start(script).await;
    let p = Proxy::start(&yaml(o.addr));
    for path in ["/conflicting-length", "/garbage"] {
        let r = get(&p.url("main", path), &[]).await;
        assert_eq!(r.status, 502, "{path}");
    }
    assert_eq!(
        p.stat("attache_local_reply_total{flag=\"UR\",listener=\"main\"}")
            .await,
        2.0
    );
    // A body cut short after the head went out cannot become a 502; the client sees
    // a short read and the connection is not reused.
    let (ok, _) = support::curl(&["-sS", "-o", "/dev/null", &p.url("main", "/truncated")]).await;
    assert!(!ok, "curl reports the truncated body");
    let r = get(&p.url("main", "/"), &[]).await;
    assert_eq!(r.status, 200);
}

/// The response framing rule is the shared one (`http1::framing`): `chunked`
/// applied twice cannot be decoded into the body the origin meant (502, the
/// connection dropped), while empty list elements around `chunked` are nothing
/// (RFC 9110 section 5.6.1) and the body is relayed on a reused connection.
#[tokio::test]
async fn transfer_codings_are_read_by_the_shared_framing_rule() {
    let o = RawOrigin::start(script).await;
    let p = Proxy::start(&yaml(o.addr));
    let r = get(&p.url("main", "/chunked-twice"), &[]).await;
    assert_eq!(r.status, 502);
    assert_eq!(
        p.stat("attache_local_reply_total{flag=\"UR\",listener=\"main\"}")
            .await,
        1.0
    );
    let r = get(&p.url("main", "/chunked-listed"), &[]).await;
    assert_eq!((r.status, r.text().as_str()), (200, "abc"));
    let r = get(&p.url("main", "/"), &[]).await;
    assert_eq!((r.status, r.text().as_str()), (200, "hi"));
    assert_eq!(o.conns(), 2, "the chunked-twice connection is not reused");
}

#[tokio::test]
async fn an_origin_answering_before_the_upload_ends_is_heard() {
    let o = RawOrigin::start(script).await;
    let p = Proxy::start(&yaml(o.addr));
    // 8 MB: far more than socket buffers hold, so the upload is still going when the
    // 413 arrives.
    let body = Bytes::from(vec![b'x'; 8 * 1024 * 1024]);
    let r = tokio::time::timeout(
        Duration::from_secs(10),
        send("POST", &p.url("main", "/upload"), &[], body),
    )
    .await
    .expect("answered before the route timeout");
    assert_eq!(r.status, 413);
    assert_eq!(r.text(), "too big\n");
}

#[tokio::test]
async fn an_upstream_streaming_its_answer_during_the_upload_gets_the_whole_upload() {
    let o = RawOrigin::start(script).await;
    let p = Proxy::start(&yaml(o.addr));
    // 8 MB ending in a marker the origin waits for after it sent its head.
    let mut body = vec![b'x'; 8 * 1024 * 1024];
    body.extend_from_slice(b"END");
    let r = tokio::time::timeout(
        Duration::from_secs(15),
        send("POST", &p.url("main", "/duplex"), &[], Bytes::from(body)),
    )
    .await
    .expect("the upload reached the origin and the response ended");
    assert_eq!((r.status, r.text().as_str()), (200, "received"));
    // The connection carried the whole exchange, so it is reused.
    let r = get(&p.url("main", "/"), &[]).await;
    assert_eq!(r.status, 200);
    assert_eq!(o.conns(), 1);
}

#[tokio::test]
async fn a_post_the_upstream_read_then_dropped_is_not_sent_twice() {
    let o = RawOrigin::start(script).await;
    let p = Proxy::start(&yaml(o.addr));
    // A pooled keep-alive connection first.
    assert_eq!(get(&p.url("main", "/"), &[]).await.status, 200);
    let before = CRASHES.load(Ordering::SeqCst);
    let r = send(
        "POST",
        &p.url("main", "/crash"),
        &[],
        Bytes::from_static(b"pay=10"),
    )
    .await;
    assert_eq!(r.status, 502);
    assert_eq!(
        CRASHES.load(Ordering::SeqCst) - before,
        1,
        "a non-idempotent request that reached the upstream is not replayed"
    );
}
