//! Malformed HTTP/2 requests (RFC 9113 sections 8.1.1, 8.2.2, 8.3) are refused
//! before anything is forwarded, and the SETTINGS that bound a connection's memory
//! are the documented ones. Raw frames over a TcpStream for what the `h2` crate
//! refuses to send; the `h2` client for the rest.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use support::yaml::OneRoute;
use support::{eventually, Origin, Proxy};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const TIMEOUT: Duration = Duration::from_secs(10);
const PROTOCOL_ERROR: u32 = 1;

const FRAME_DATA: u8 = 0;
const FRAME_HEADERS: u8 = 1;
const FRAME_RST_STREAM: u8 = 3;
const FRAME_SETTINGS: u8 = 4;
const FRAME_GOAWAY: u8 = 7;
const END_STREAM: u8 = 1;
const END_HEADERS: u8 = 4;

fn yaml(origin: &Origin) -> String {
    format!(
        r#"
listeners:
  - name: main
    address: 127.0.0.1:0
    virtual_hosts:
      - name: all
        domains: ["*"]
        routes:
          - match: {{ prefix: /buffered }}
            route: {{ cluster: origin, retries: {{ attempts: 2, retry_on: [reset] }} }}
          - match: {{ prefix: / }}
            route: {{ cluster: origin }}
  - name: tuned
    address: 127.0.0.1:0
    http:
      http2:
        max_concurrent_streams: 7
        initial_stream_window_size: 131072
        initial_connection_window_size: 262144
        max_frame_size: 32768
    virtual_hosts:
      - name: all
        domains: ["*"]
        routes:
          - match: {{ prefix: / }}
            direct_response: {{ status: 200 }}
clusters:
  - name: origin
    endpoints: ["{}"]
"#,
        origin.addr
    )
}

/// HPACK integer with an N-bit prefix (RFC 7541 section 5.1), `first` holding the
/// pattern bits above the prefix.
fn hpack_int(out: &mut Vec<u8>, first: u8, prefix_bits: u32, mut v: usize) {
    let max = (1usize << prefix_bits) - 1;
    if v < max {
        out.push(first | v as u8);
        return;
    }
    out.push(first | max as u8);
    v -= max;
    while v >= 128 {
        out.push((v % 128) as u8 | 0x80);
        v /= 128;
    }
    out.push(v as u8);
}

/// A header block of literal fields without indexing, new names, no Huffman: any
/// bytes at all, which is what lets a test send what encoders refuse.
fn hpack(fields: &[(&str, &str)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, value) in fields {
        out.push(0x00);
        hpack_int(&mut out, 0, 7, name.len());
        out.extend_from_slice(name.as_bytes());
        hpack_int(&mut out, 0, 7, value.len());
        out.extend_from_slice(value.as_bytes());
    }
    out
}

fn frame(ty: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let mut f = (payload.len() as u32).to_be_bytes()[1..].to_vec();
    f.push(ty);
    f.push(flags);
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

fn request_head(path: &str, extra: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut h: Vec<(String, String)> = [
        (":method", "POST"),
        (":scheme", "http"),
        (":authority", "example.test"),
        (":path", path),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    h.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    h
}

fn headers_frame(stream: u32, fields: &[(String, String)], end_stream: bool) -> Vec<u8> {
    let refs: Vec<(&str, &str)> = fields
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let flags = END_HEADERS | if end_stream { END_STREAM } else { 0 };
    frame(FRAME_HEADERS, flags, stream, &hpack(&refs))
}

/// What the server did with a stream.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    Reset(u32),
    /// A response HEADERS frame arrived.
    Answered,
    GoAway(u32),
    Nothing,
}

struct RawH2 {
    s: TcpStream,
    /// The server's SETTINGS: (id, value).
    settings: Vec<(u16, u32)>,
}

impl RawH2 {
    async fn connect(addr: SocketAddr) -> RawH2 {
        let mut s = TcpStream::connect(addr).await.expect("connect");
        s.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
            .await
            .expect("preface");
        s.write_all(&frame(FRAME_SETTINGS, 0, 0, &[]))
            .await
            .expect("settings");
        let mut c = RawH2 {
            s,
            settings: Vec::new(),
        };
        loop {
            let (ty, flags, _, payload) = c.read_frame().await.expect("server settings");
            if ty == FRAME_SETTINGS && flags & 1 == 0 {
                c.settings = payload
                    .chunks_exact(6)
                    .map(|p| {
                        (
                            u16::from_be_bytes([p[0], p[1]]),
                            u32::from_be_bytes([p[2], p[3], p[4], p[5]]),
                        )
                    })
                    .collect();
                break;
            }
        }
        c.s.write_all(&frame(FRAME_SETTINGS, 1, 0, &[]))
            .await
            .expect("ack");
        c
    }

    fn setting(&self, id: u16) -> Option<u32> {
        self.settings
            .iter()
            .find(|(i, _)| *i == id)
            .map(|(_, v)| *v)
    }

    async fn read_frame(&mut self) -> Option<(u8, u8, u32, Vec<u8>)> {
        let mut head = [0u8; 9];
        tokio::time::timeout(TIMEOUT, self.s.read_exact(&mut head))
            .await
            .ok()?
            .ok()?;
        let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
        let stream = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
        let mut payload = vec![0u8; len];
        tokio::time::timeout(TIMEOUT, self.s.read_exact(&mut payload))
            .await
            .ok()?
            .ok()?;
        Some((head[3], head[4], stream, payload))
    }

    async fn send(&mut self, bytes: &[u8]) {
        self.s.write_all(bytes).await.expect("write");
    }

    /// The header block of the response on `stream` (its first byte is `0x88` for
    /// `:status: 200`, indexed from the static table); empty when there is none.
    async fn status_block(&mut self, stream: u32) -> Vec<u8> {
        while let Some((ty, _, id, payload)) = self.read_frame().await {
            match ty {
                FRAME_HEADERS if id == stream => return payload,
                FRAME_RST_STREAM if id == stream => break,
                FRAME_GOAWAY => break,
                _ => {}
            }
        }
        Vec::new()
    }

    /// Frames until `stream` is reset or answered, or the connection goes away.
    async fn outcome(&mut self, stream: u32) -> Outcome {
        while let Some((ty, _, id, payload)) = self.read_frame().await {
            let code = |p: &[u8], at: usize| {
                p.get(at..at + 4)
                    .map_or(0, |c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]))
            };
            match ty {
                FRAME_RST_STREAM if id == stream => return Outcome::Reset(code(&payload, 0)),
                FRAME_HEADERS if id == stream => return Outcome::Answered,
                FRAME_GOAWAY => return Outcome::GoAway(code(&payload, 4)),
                _ => {}
            }
        }
        Outcome::Nothing
    }
}

/// Send one malformed request (head and body in one write, as a client sending it
/// all at once does) on a fresh connection; what the proxy did with it.
async fn malformed(addr: SocketAddr, head: &[(String, String)], body: Option<&[u8]>) -> Outcome {
    let mut c = RawH2::connect(addr).await;
    let mut bytes = headers_frame(1, head, body.is_none());
    if let Some(b) = body {
        bytes.extend(frame(FRAME_DATA, END_STREAM, 1, b));
    }
    c.send(&bytes).await;
    c.outcome(1).await
}

#[tokio::test]
async fn content_length_that_disagrees_with_data_is_a_stream_error_and_nothing_is_forwarded() {
    let o = Origin::start("o").await;
    let p = Proxy::start(&yaml(&o));
    let addr = p.addr("main");
    for path in ["/buffered/x", "/streamed/x"] {
        for (cl, body) in [
            ("5", Some(&b"0123456789"[..])),
            ("10", Some(&b"01234"[..])),
            ("3", None),
            (" 5", Some(&b"01234"[..])),
            ("5 ", Some(&b"01234"[..])),
            ("+5", Some(&b"01234"[..])),
            ("0x5", Some(&b"01234"[..])),
            ("5, 5", Some(&b"01234"[..])),
            ("", Some(&b"01234"[..])),
        ] {
            let head = request_head(path, &[("content-length", cl)]);
            let got = malformed(addr, &head, body).await;
            assert_eq!(
                got,
                Outcome::Reset(PROTOCOL_ERROR),
                "{path} content-length {cl:?}"
            );
        }
        // Two content-length fields that differ.
        let head = request_head(path, &[("content-length", "5"), ("content-length", "6")]);
        let got = malformed(addr, &head, Some(b"01234")).await;
        assert_eq!(got, Outcome::Reset(PROTOCOL_ERROR), "{path} two lengths");
    }
    assert_eq!(o.hits(), 0, "the origin received nothing");
    // A request whose length agrees is forwarded.
    let head = request_head("/streamed/ok", &[("content-length", "5")]);
    assert_eq!(
        malformed(addr, &head, Some(b"01234")).await,
        Outcome::Answered
    );
    assert_eq!(o.hits(), 1);
}

#[tokio::test]
async fn connection_specific_fields_are_a_stream_error() {
    let o = Origin::start("o").await;
    let p = Proxy::start(&yaml(&o));
    let addr = p.addr("main");
    for (name, value) in [
        ("connection", "close"),
        ("connection", "keep-alive"),
        ("keep-alive", "timeout=5"),
        ("proxy-connection", "keep-alive"),
        ("transfer-encoding", "chunked"),
        ("transfer-encoding", "identity"),
        ("upgrade", "websocket"),
        ("te", "gzip"),
        ("te", "trailers, gzip"),
    ] {
        let head = request_head("/streamed/x", &[(name, value)]);
        let got = malformed(addr, &head, None).await;
        assert_eq!(got, Outcome::Reset(PROTOCOL_ERROR), "{name}: {value}");
    }
    // Pseudo-header fields that are unknown, repeated, or after a regular field.
    for extra in [
        vec![(":foo", "bar")],
        vec![(":path", "/again")],
        vec![("x-a", "1"), (":authority", "late.test")],
    ] {
        let mut head = request_head("/streamed/x", &[]);
        head.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        let got = malformed(addr, &head, None).await;
        assert!(
            matches!(got, Outcome::Reset(PROTOCOL_ERROR) | Outcome::GoAway(_)),
            "{extra:?}: {got:?}"
        );
    }
    // `te: trailers` is the one TE value allowed.
    let head = request_head("/streamed/x", &[("te", "trailers")]);
    assert_eq!(malformed(addr, &head, None).await, Outcome::Answered);
    assert_eq!(
        o.hits(),
        1,
        "only the well-formed request reached the origin"
    );
}

#[tokio::test]
async fn a_scheme_other_than_http_or_https_is_refused() {
    let o = Origin::start("o").await;
    let p = Proxy::start(&yaml(&o));
    let addr = p.addr("main");
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let (mut client, conn) = h2::client::handshake(tcp).await.expect("handshake");
    tokio::spawn(conn);
    for (uri, want) in [
        ("ftp://example.test/x", 400),
        ("gopher://example.test/x", 400),
        ("https://example.test/x", 200),
        ("http://example.test/x", 200),
    ] {
        let req = http::Request::get(uri).body(()).expect("request");
        let (rsp, _) = client.send_request(req, true).expect("send");
        let rsp = tokio::time::timeout(TIMEOUT, rsp)
            .await
            .expect("in time")
            .expect("response");
        assert_eq!(rsp.status().as_u16(), want, "{uri}");
    }
    assert_eq!(o.hits(), 2, "only http and https were forwarded");
    assert_eq!(p.rejected("main", "scheme").await, 2.0);
}

#[tokio::test]
async fn a_body_that_breaks_after_forwarding_aborts_the_upstream_request() {
    let o = Origin::start("o").await;
    let p = Proxy::start(&yaml(&o));
    let addr = p.addr("main");
    let mut c = RawH2::connect(addr).await;
    let head = request_head("/upload", &[("content-length", "10")]);
    c.send(&headers_frame(1, &head, false)).await;
    c.send(&frame(FRAME_DATA, 0, 1, b"0123")).await;
    // The head went upstream (the body streams): wait for the origin to have it.
    eventually(TIMEOUT, "origin got the head", || async {
        (o.hits() == 1).then_some(())
    })
    .await;
    // Then more DATA than the content-length allowed.
    c.send(&frame(FRAME_DATA, END_STREAM, 1, b"0123456789"))
        .await;
    assert_eq!(c.outcome(1).await, Outcome::Reset(PROTOCOL_ERROR));
    // The upstream connection carrying the broken request is not reused.
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .http2_only(true)
        .build_http::<http_body_util::Full<Bytes>>();
    let rsp = client
        .request(
            http::Request::post(format!("http://{addr}/upload"))
                .body(http_body_util::Full::new(Bytes::from_static(b"abc")))
                .expect("request"),
        )
        .await
        .expect("response");
    assert_eq!(rsp.status(), 200);
    assert_eq!(o.hits(), 2);
    assert_eq!(
        o.conns(),
        2,
        "a new upstream connection for the next request"
    );
}

#[tokio::test]
async fn a_body_that_arrived_with_its_head_is_buffered_and_retried() {
    // Two endpoints, one closing every connection after reading the request: a
    // request that lands there is answered only if it is retried on the other.
    let good = Origin::start("good").await;
    let bad = support::resetting_origin().await;
    let p = Proxy::start(
        &OneRoute::to(&[good.addr, bad])
            .names("main", "two")
            .route_key("retries: { attempts: 2, retry_on: [reset, 5xx] }")
            .yaml(),
    );
    for i in 0..4 {
        // No content-length (as most HTTP/2 clients send uploads): before, such a
        // body always streamed and was never retried.
        let mut c = RawH2::connect(p.addr("main")).await;
        let mut bytes = headers_frame(1, &request_head("/upload", &[]), false);
        bytes.extend(frame(FRAME_DATA, END_STREAM, 1, b"hello"));
        c.send(&bytes).await;
        assert_eq!(
            c.status_block(1).await.first(),
            Some(&0x88),
            "request {i}: 200"
        );
    }
    assert_eq!(good.hits(), 4);
}

#[tokio::test]
async fn settings_advertise_the_configured_limits() {
    let o = Origin::start("o").await;
    let p = Proxy::start(&yaml(&o));
    const MAX_CONCURRENT_STREAMS: u16 = 3;
    const INITIAL_WINDOW_SIZE: u16 = 4;
    const MAX_FRAME_SIZE: u16 = 5;
    const MAX_HEADER_LIST_SIZE: u16 = 6;

    let c = RawH2::connect(p.addr("main")).await;
    assert_eq!(
        c.setting(MAX_CONCURRENT_STREAMS),
        Some(100),
        "{:?}",
        c.settings
    );
    assert_eq!(
        c.setting(MAX_HEADER_LIST_SIZE),
        Some(60 * 1024),
        "{:?}",
        c.settings
    );
    assert!(
        matches!(c.setting(INITIAL_WINDOW_SIZE), Some(1_048_576)),
        "{:?}",
        c.settings
    );

    let c = RawH2::connect(p.addr("tuned")).await;
    assert_eq!(
        c.setting(MAX_CONCURRENT_STREAMS),
        Some(7),
        "{:?}",
        c.settings
    );
    assert_eq!(
        c.setting(INITIAL_WINDOW_SIZE),
        Some(131_072),
        "{:?}",
        c.settings
    );
    assert_eq!(c.setting(MAX_FRAME_SIZE), Some(32_768), "{:?}", c.settings);

    // The h2 client sees the same limit.
    let tcp = TcpStream::connect(p.addr("tuned")).await.expect("connect");
    let (client, conn) = h2::client::handshake(tcp).await.expect("handshake");
    tokio::spawn(conn);
    let mut client = client.ready().await.expect("ready");
    let req = http::Request::get("http://example.test/")
        .body(())
        .expect("request");
    let (rsp, _) = client.send_request(req, true).expect("send");
    assert_eq!(rsp.await.expect("response").status(), 200);
    assert_eq!(client.current_max_send_streams(), 7);
}

#[test]
fn http2_settings_out_of_range_fail_validation() {
    let (code, out, _) = support::validate(
        "h2.yaml",
        r#"
listeners:
  - name: l
    address: 127.0.0.1:0
    http:
      http2:
        max_concurrent_streams: 0
        initial_stream_window_size: 100
        max_frame_size: 1000
    virtual_hosts:
      - name: all
        domains: ["*"]
        routes:
          - match: { prefix: / }
            direct_response: { status: 200 }
"#,
    );
    assert_eq!(code, 1, "{out}");
    for (line, key) in [
        (7, "max_concurrent_streams"),
        (8, "initial_stream_window_size"),
        (9, "max_frame_size"),
    ] {
        assert!(out.contains(&format!("h2.yaml:{line}:")), "{key}: {out}");
        assert!(out.contains(key), "{out}");
    }
}

/// The proxy's resident memory in KiB (`VmRSS`).
fn rss_kib(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

/// An h2c connection that has had one GET answered in full, as a client that then
/// keeps it open: `:authority` sent as a literal with incremental indexing (what
/// clients do), so the server's HPACK table holds it.
async fn idle_h2c(addr: SocketAddr) -> RawH2 {
    let mut c = RawH2::connect(addr).await;
    let authority = b"example.test";
    // :method GET, :scheme http, :path / (static 2, 6, 4), then :authority.
    let mut block = vec![0x82, 0x86, 0x84, 0x41, authority.len() as u8];
    block.extend_from_slice(authority);
    c.send(&frame(FRAME_HEADERS, END_HEADERS | END_STREAM, 1, &block))
        .await;
    loop {
        let (ty, flags, id, _) = c.read_frame().await.expect("the response");
        if id == 1 && (ty == FRAME_HEADERS || ty == FRAME_DATA) && flags & END_STREAM != 0 {
            return c;
        }
        assert!(ty != FRAME_RST_STREAM && ty != FRAME_GOAWAY, "frame {ty}");
    }
}

/// Issue 15 §1: an idle HTTP/2 connection holds no read, write or HPACK buffer and
/// no stream state (the patched h2, vendor/h2/PATCHES.md), so it costs a few KiB
/// where h2 0.4.20 as published kept ~30 KiB allocated (~20 KiB resident) for the
/// connection's life. Measured as the proxy's RSS growth over many connections
/// (this debug build: about 8 KiB each with the patch, over 20 without it).
#[tokio::test]
async fn an_idle_connection_holds_no_buffers() {
    const WARM: usize = 50;
    const N: usize = 300;
    const MAX_KIB_EACH: u64 = 14;
    let o = Origin::start("o").await;
    let p = Proxy::start(&yaml(&o));
    let addr = p.addr("main");
    // The first connections grow what all later ones share (the upstream
    // connection, the allocator's pages of each size class).
    let mut held = Vec::new();
    for _ in 0..WARM {
        held.push(idle_h2c(addr).await);
    }
    let before = rss_kib(p.pid());
    for _ in 0..N {
        held.push(idle_h2c(addr).await);
    }
    // Each response was read in full, so the proxy is done with every connection
    // (or about to be: poll briefly before judging).
    let deadline = std::time::Instant::now() + TIMEOUT;
    let each = loop {
        let each = rss_kib(p.pid()).saturating_sub(before) / N as u64;
        if each <= MAX_KIB_EACH || std::time::Instant::now() > deadline {
            break each;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    eprintln!("{each} KiB per idle HTTP/2 connection");
    assert!(
        each <= MAX_KIB_EACH,
        "{each} KiB per idle HTTP/2 connection (limit {MAX_KIB_EACH})"
    );
    assert_eq!(o.hits(), (WARM + N) as u64);
    drop(held);
}
