//! `request_head_timeout`, through the real binary: a head that does not complete in
//! time (a slowloris client dribbling bytes included) gets `408` and the connection
//! closes; a connection that sends nothing is closed without a reply; a kept-alive
//! connection idles for `idle_timeout`, not the head timeout.

mod support;

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use support::yaml::OneRoute;
use support::{Origin, Proxy};

/// Generous: the machine may be loaded.
const T: Duration = Duration::from_secs(20);

fn config(o: &Origin) -> String {
    OneRoute::to(&[o.addr])
        .listener_key("http: { request_head_timeout: 1s, idle_timeout: 1h }")
        .yaml()
}

async fn read_to_end(s: &mut TcpStream) -> String {
    let mut out = Vec::new();
    let _ = tokio::time::timeout(T, s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

/// Read one response with a `content-length` body from a kept-alive connection.
async fn read_response(s: &mut TcpStream) -> String {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + T;
    loop {
        let text = String::from_utf8_lossy(&out).into_owned();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let len = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length: "))
                .and_then(|v| v.trim().parse::<usize>().ok())
                .unwrap_or(0);
            if body.len() >= len {
                return text;
            }
        }
        let n = tokio::time::timeout_at(deadline, s.read(&mut buf))
            .await
            .expect("response in time")
            .expect("read");
        assert!(
            n > 0,
            "connection closed: {}",
            String::from_utf8_lossy(&out)
        );
        out.extend_from_slice(&buf[..n]);
    }
}

#[tokio::test]
async fn an_incomplete_head_gets_408_and_a_dribbling_client_is_not_kept() {
    let o = Origin::start("o").await;
    let p = Proxy::start(&config(&o));

    // Part of a head, then nothing.
    let mut s = TcpStream::connect(p.addr("main")).await.expect("connect");
    let start = Instant::now();
    s.write_all(b"GET /x HTTP/1.1\r\nHost: a\r\n")
        .await
        .expect("write");
    let out = read_to_end(&mut s).await;
    assert!(start.elapsed() >= Duration::from_millis(900), "too early");
    assert!(
        out.starts_with("HTTP/1.1 408 Request Timeout\r\n")
            && out.contains("\r\nconnection: close\r\n")
            && out.ends_with("\r\n\r\nrequest timeout\n"),
        "{out}"
    );

    // A slowloris client: a byte every 100ms keeps the connection busy, but the
    // head still has to end within the timeout.
    let mut s = TcpStream::connect(p.addr("main")).await.expect("connect");
    let start = Instant::now();
    let head = b"GET /x HTTP/1.1\r\nHost: a\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n";
    let mut wrote = 0;
    for b in head.iter() {
        if s.write_all(&[*b]).await.is_err() {
            break;
        }
        wrote += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
        if start.elapsed() > T {
            break;
        }
    }
    let out = read_to_end(&mut s).await;
    assert!(wrote < head.len(), "the whole head was accepted");
    assert!(out.starts_with("HTTP/1.1 408 "), "{out}");
    assert_eq!(o.hits(), 0);
    assert_eq!(p.rejected("main", "head_timeout").await, 2.0);
}

#[tokio::test]
async fn a_silent_connection_is_closed_without_a_reply() {
    let o = Origin::start("o").await;
    let p = Proxy::start(&config(&o));
    let mut s = TcpStream::connect(p.addr("main")).await.expect("connect");
    let start = Instant::now();
    let out = read_to_end(&mut s).await;
    assert!(start.elapsed() >= Duration::from_millis(900), "too early");
    assert!(start.elapsed() < T, "not closed");
    assert_eq!(out, "");
    assert_eq!(p.rejected("main", "head_timeout").await, 0.0);
}

#[tokio::test]
async fn a_kept_alive_connection_idles_past_the_head_timeout() {
    let o = Origin::start("o").await;
    let p = Proxy::start(&config(&o));
    let mut s = TcpStream::connect(p.addr("main")).await.expect("connect");
    s.write_all(b"GET /a HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .expect("write");
    let out = read_response(&mut s).await;
    assert!(out.starts_with("HTTP/1.1 200 OK\r\n"), "{out}");
    // Idle for longer than the head timeout (not a readiness wait: the time
    // passing is what is tested).
    tokio::time::sleep(Duration::from_millis(2500)).await;
    s.write_all(b"GET /b HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .expect("write");
    let out = read_response(&mut s).await;
    assert!(out.starts_with("HTTP/1.1 200 OK\r\n"), "{out}");
    assert_eq!(o.hits(), 2);
}

#[tokio::test]
async fn connections_hyper_serves_are_bounded_by_the_head_timeout_too() {
    let o = Origin::start("o").await;
    let p = Proxy::start(&config(&o));
    let mut s = TcpStream::connect(p.addr("main")).await.expect("connect");
    // An absolute-form request (hyper serves the connection from there), then part
    // of a second head.
    s.write_all(b"GET http://a/a HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .expect("write");
    let out = read_response(&mut s).await;
    assert!(out.starts_with("HTTP/1.1 200 OK\r\n"), "{out}");
    let start = Instant::now();
    s.write_all(b"GET /b HTTP/1.1\r\nHost: a\r\n")
        .await
        .expect("write");
    let out = read_to_end(&mut s).await;
    assert!(start.elapsed() < T, "not closed");
    // hyper closes without a reply; attache's own codec answers 408. Either way it
    // is counted.
    assert!(out.is_empty() || out.starts_with("HTTP/1.1 408 "), "{out}");
    assert_eq!(o.hits(), 1);
    support::eventually(T, "the head timeout counted", || async {
        (p.rejected("main", "head_timeout").await == 1.0).then_some(())
    })
    .await;
}
