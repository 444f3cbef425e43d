//! gRPC edge cases through the real binary, as a hostile or unusual client sends
//! them: raw `h2` and HTTP/1.1 bytes instead of a well-behaved gRPC library. The
//! `grpc-timeout` grammar, every local reply over h2c, TLS and gRPC-Web, gRPC-Web
//! text bodies split anywhere, upstream answers that are not gRPC, metric labels
//! that never take request data, and health checks that fail every way but one.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use support::grpc_peer::{self, frames, message_frame, post_web, Echo, GrpcServer};
use support::pki::{self, Leaf, Pki};
use support::yaml::Routes;
use support::{dead_port, eventually, Proxy};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

const WAIT: Duration = Duration::from_secs(20);
const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// What a client received for one call.
#[derive(Debug)]
struct Answer {
    status: u16,
    headers: http::HeaderMap,
    body: Vec<u8>,
    trailers: Option<http::HeaderMap>,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The call's status and message: from the trailers, else the head
    /// (trailers-only).
    fn grpc(&self) -> (Option<&str>, Option<&str>) {
        fn from<'a>(h: &'a http::HeaderMap, n: &str) -> Option<&'a str> {
            h.get(n).and_then(|v| v.to_str().ok())
        }
        match &self.trailers {
            Some(t) => (from(t, "grpc-status"), from(t, "grpc-message")),
            None => (self.header("grpc-status"), self.header("grpc-message")),
        }
    }
}

/// One gRPC call over a fresh HTTP/2 connection on `io` (h2c or TLS): `headers`
/// (content-type included), then `body` as one DATA frame.
async fn h2_call<S>(
    io: S,
    scheme: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> Answer
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut client, conn) = h2::client::handshake(io).await.expect("h2 handshake");
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let mut req = http::Request::builder()
        .method("POST")
        .uri(format!("{scheme}://localhost{path}"))
        .header("te", "trailers");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let (rsp, mut send) = client
        .send_request(req.body(()).expect("request"), false)
        .expect("send");
    send.send_data(body.into(), true).expect("body");
    let rsp = tokio::time::timeout(WAIT, rsp)
        .await
        .expect("head in time")
        .expect("response");
    let (parts, mut recv) = rsp.into_parts();
    let mut body = Vec::new();
    while let Some(chunk) = tokio::time::timeout(WAIT, recv.data())
        .await
        .expect("body in time")
    {
        let chunk = chunk.expect("data");
        let _ = recv.flow_control().release_capacity(chunk.len());
        body.extend_from_slice(&chunk);
    }
    let trailers = tokio::time::timeout(WAIT, recv.trailers())
        .await
        .expect("trailers in time")
        .expect("trailers");
    Answer {
        status: parts.status.as_u16(),
        headers: parts.headers,
        body,
        trailers,
    }
}

/// A unary call to `path` over h2c with the `Echo` message `m`.
async fn h2c_call(addr: SocketAddr, path: &str, headers: &[(&str, &str)], m: &Echo) -> Answer {
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let mut all = vec![("content-type", "application/grpc")];
    all.extend_from_slice(headers);
    h2_call(tcp, "http", path, &all, message_frame(m)).await
}

fn echo(text: &str) -> Echo {
    Echo::text(text)
}

/// What the test server saw of the calls to `path`: their `grpc-timeout` headers.
fn timeouts_seen(server: &GrpcServer, path: &str) -> Vec<Option<String>> {
    let seen = server.seen.lock().expect("seen");
    seen.iter()
        .filter(|(p, _, _)| p == path)
        .map(|(_, t, _)| t.clone())
        .collect()
}

#[tokio::test]
async fn grpc_timeout_follows_its_grammar_every_unit_and_the_cap() {
    let server = GrpcServer::start().await;
    let routes = "- name: open
  match: { prefix: /test.Echo/ }
  route: { cluster: backend, timeout: 0s }
- name: capped
  match: { prefix: /capped.Echo/ }
  route: { cluster: backend, timeout: 0s, prefix_rewrite: /test.Echo/, max_grpc_timeout: 2s }";
    let yaml = Routes::new(routes)
        .names("grpc", "all")
        .cluster("backend", &[server.addr], "protocol: http2")
        .yaml();
    let p = Proxy::start(&yaml);
    let addr = p.addr("grpc");

    // Well-formed values in every unit: forwarded as sent, or cut to the cap
    // (rewritten in milliseconds, so the server gives up when the proxy does).
    let forwarded = [
        ("/test.Echo/Unary", "1H", "1H"),
        ("/test.Echo/Unary", "99999999H", "99999999H"),
        ("/test.Echo/Unary", "30M", "30M"),
        ("/test.Echo/Unary", "00000009S", "00000009S"),
        ("/test.Echo/Unary", "99999999m", "99999999m"),
        ("/test.Echo/Unary", "5000000u", "5000000u"),
        ("/test.Echo/Unary", "99999999n", "99999999n"),
        ("/capped.Echo/Unary", "1H", "2000m"),
        ("/capped.Echo/Unary", "1M", "2000m"),
        ("/capped.Echo/Unary", "3S", "2000m"),
        ("/capped.Echo/Unary", "1S", "1S"),
        ("/capped.Echo/Unary", "1500m", "1500m"),
    ];
    // Malformed values are removed, not forwarded: the call goes on without one.
    let malformed = [
        "123456789S", // more than 8 digits
        "1s",         // units are case sensitive
        "1.5S",
        "-1S",
        "+1S",
        "S",
        "1SS",
        "1 S",
        "10",
        "0x10S",
    ];
    let mut want = Vec::new();
    for (path, sent, upstream) in forwarded {
        let a = h2c_call(addr, path, &[("grpc-timeout", sent)], &echo(sent)).await;
        assert_eq!(a.grpc(), (Some("0"), None), "{path} {sent}: {a:?}");
        want.push(Some(upstream.to_string()));
    }
    for sent in malformed {
        let a = h2c_call(
            addr,
            "/test.Echo/Unary",
            &[("grpc-timeout", sent)],
            &echo(sent),
        )
        .await;
        assert_eq!(a.grpc().0, Some("0"), "{sent}: {a:?}");
        want.push(None);
    }
    // Several fields: the first is the deadline, and the only one forwarded.
    let twice = [("grpc-timeout", "1S"), ("grpc-timeout", "1H")];
    let a = h2c_call(addr, "/test.Echo/Unary", &twice, &echo("twice")).await;
    assert_eq!(a.grpc().0, Some("0"), "{a:?}");
    want.push(Some("1S".to_string()));
    let a = h2c_call(addr, "/capped.Echo/Unary", &twice, &echo("twice")).await;
    assert_eq!(a.grpc().0, Some("0"), "{a:?}");
    want.push(Some("1S".to_string()));
    assert_eq!(timeouts_seen(&server, grpc_peer::UNARY), want);

    // Short deadlines in the small units expire at the proxy (the server would
    // answer OK after 3s); `0` is a deadline already passed.
    for sent in ["300m", "300000u", "30000000n", "0m", "0S", "00000000n"] {
        let slow = Echo {
            delay_ms: 3000,
            ..echo("late")
        };
        let a = h2c_call(addr, "/test.Echo/Unary", &[("grpc-timeout", sent)], &slow).await;
        assert_eq!(a.status, 200, "{sent}");
        assert_eq!(
            a.grpc(),
            (Some("4"), Some("upstream request timeout (UT)")),
            "{sent}: {a:?}"
        );
    }
}

/// One listener's routes for the local-reply tests: every cause the proxy answers
/// itself, on `backend` (the test server) and clusters that cannot answer.
const LOCAL_REPLY_ROUTES: &str = "
        routes:
          - name: echo
            match: { prefix: /test.Echo/ }
            route: { cluster: backend, timeout: 0s }
          - name: short
            match: { prefix: /short.Echo/ }
            route: { cluster: backend, prefix_rewrite: /test.Echo/, timeout: 300ms }
          - name: dead
            match: { prefix: /dead.Echo/ }
            route: { cluster: dead }
          - name: sick
            match: { prefix: /sick.Echo/ }
            route: { cluster: sick }
          - name: denied
            match: { prefix: /denied.Echo/ }
            route: { cluster: backend, prefix_rewrite: /test.Echo/ }
            rbac: { action: deny, policies: [{ name: everyone, permissions: [{ prefix: / }] }] }
          - name: limited
            match: { prefix: /limited.Echo/ }
            route: { cluster: backend, prefix_rewrite: /test.Echo/ }
            filter_overrides:
              local_rate_limit: { max_tokens: 1, tokens_per_fill: 1, fill_interval: 1h }
          - name: by_header
            match: { prefix: /header.Echo/ }
            route: { cluster_header: x-cluster }
          - name: maintenance
            match: { prefix: /maintenance.Echo/ }
            direct_response: { status: 503, body: \"down for maintenance\\n\" }";

fn local_reply_config(server: &GrpcServer, tls: &pki::Issued) -> String {
    let listener = |name: &str, extra: &str, filters: &str| {
        format!(
            "  - name: {name}
    address: 127.0.0.1:0
    access_log: {{ path: stdout, format: json }}
{extra}    filters:
{filters}
      - local_rate_limit: {{ max_tokens: 100000, tokens_per_fill: 100000, fill_interval: 1s }}
    virtual_hosts:
      - name: all
        domains: [\"*\"]{LOCAL_REPLY_ROUTES}
"
        )
    };
    let csrf = "      - web_security: { csrf: { mode: enforce } }";
    let web = "      - cors:
          allowed_origins: [\"https://app.example\"]
          allowed_headers: [content-type, x-grpc-web, x-user-agent, grpc-timeout]
          expose_headers: [grpc-status, grpc-message]
      - web_security: { csrf: { mode: enforce, allowed_origins: [\"https://app.example\"] } }
      - grpc_web: {}";
    let tls_keys = format!(
        "    tls: {{ cert_chain: {}, private_key: {} }}\n",
        tls.cert, tls.key
    );
    format!(
        "listeners:
{}{}{}clusters:
  - name: backend
    protocol: http2
    endpoints: [\"{backend}\"]
  - name: dead
    protocol: http2
    connect_timeout: 500ms
    endpoints: [\"{dead}\"]
  - name: sick
    protocol: http2
    panic_threshold: 0
    endpoints: [\"{sick}\"]
    health_check: {{ grpc: {{}}, interval: 100ms, timeout: 500ms, unhealthy_threshold: 1 }}
",
        listener("h2c", "", csrf),
        listener("tls", &tls_keys, csrf),
        listener("web", "", web),
        backend = server.addr,
        dead = dead_port(),
        sick = dead_port(),
    )
}

/// One local reply case: (path, extra request headers, message, grpc-status,
/// grpc-message).
type Case = (
    &'static str,
    Vec<(&'static str, &'static str)>,
    Echo,
    &'static str,
    &'static str,
);

/// The local replies a gRPC client must be able to read.
fn local_reply_cases() -> Vec<Case> {
    let cross_site = vec![
        ("origin", "https://evil.example"),
        ("sec-fetch-site", "cross-site"),
    ];
    vec![
        ("/nowhere.Echo/Unary", vec![], echo("x"), "12", "no route matched (NR)"),
        ("/dead.Echo/Unary", vec![], echo("x"), "14", "upstream connect error (UF)"),
        ("/sick.Echo/Unary", vec![], echo("x"), "14", "no healthy upstream (UH)"),
        (
            "/short.Echo/Unary",
            vec![],
            Echo {
                delay_ms: 2000,
                ..echo("slow")
            },
            "4",
            "upstream request timeout (UT)",
        ),
        ("/denied.Echo/Unary", vec![], echo("x"), "7", "rbac: access denied (RBAC)"),
        ("/limited.Echo/Unary", vec![], echo("x"), "0", ""),
        ("/limited.Echo/Unary", vec![], echo("x"), "8", "rate limited (RL)"),
        (
            "/test.Echo/Unary",
            cross_site,
            echo("x"),
            "7",
            "forbidden: cross-site request rejected by csrf protection (the request's Origin/Referer is neither this site nor an allowed origin)",
        ),
        ("/header.Echo/Unary", vec![("x-cluster", "nope")], echo("x"), "14", "cluster not found (NC)"),
        ("/maintenance.Echo/Unary", vec![], echo("x"), "14", "down for maintenance"),
    ]
}

/// The proxy of the local-reply tests, its test server, and the CA that signed
/// its TLS listener's certificate (kept in a temporary directory), once the
/// `sick` cluster's only endpoint is out (its health check fails).
struct LocalReplies {
    p: Proxy,
    ca: Pki,
    _server: GrpcServer,
    _dir: tempfile::TempDir,
}

async fn local_replies() -> LocalReplies {
    let server = GrpcServer::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = Pki::new(dir.path(), "grpc");
    let cert = ca.issue("server", &Leaf::new("localhost").dns(&["localhost"]));
    let p = Proxy::start(&local_reply_config(&server, &cert));
    eventually(WAIT, "sick endpoint ejected", || async {
        let (_, clusters) = p.admin_get("/clusters").await;
        clusters
            .lines()
            .any(|l| l.starts_with("sick::") && l.ends_with("::health_flags::unhealthy"))
            .then_some(())
    })
    .await;
    LocalReplies {
        p,
        ca,
        _server: server,
        _dir: dir,
    }
}

#[tokio::test]
async fn every_local_reply_is_trailers_only_grpc_over_h2c_and_tls() {
    let LocalReplies { p, ca, .. } = local_replies().await;
    let client_tls = pki::client_config(&ca, None, &["h2"]);
    for listener in ["h2c", "tls"] {
        let addr = p.addr(listener);
        for (path, headers, m, code, msg) in local_reply_cases() {
            let mut all = vec![("content-type", "application/grpc")];
            all.extend_from_slice(&headers);
            let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
            let a = if listener == "tls" {
                let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
                let tls = tokio_rustls::TlsConnector::from(client_tls.clone())
                    .connect(name, tcp)
                    .await
                    .expect("tls handshake");
                assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
                h2_call(tls, "https", path, &all, message_frame(&m)).await
            } else {
                h2_call(tcp, "http", path, &all, message_frame(&m)).await
            };
            let what = format!("{listener} {path}");
            assert_eq!(a.status, 200, "{what}: {a:?}");
            if code == "0" {
                assert_eq!(a.grpc().0, Some("0"), "{what}: {a:?}");
                continue;
            }
            // Trailers-only: the status in the head, no body, no trailers.
            assert_eq!(a.header("content-type"), Some("application/grpc"), "{what}");
            assert_eq!(a.header("grpc-status"), Some(code), "{what}: {a:?}");
            assert_eq!(a.header("grpc-message"), Some(msg), "{what}: {a:?}");
            assert!(a.body.is_empty() && a.trailers.is_none(), "{what}: {a:?}");
        }
    }
    // The rate limiter's `retry-after` is kept on its gRPC answer, and its flag is
    // logged and counted like the proxy's own.
    let a = h2c_call(p.addr("h2c"), "/limited.Echo/Unary", &[], &echo("again")).await;
    assert!(a.header("retry-after").is_some(), "{a:?}");
    let rl = p
        .stat_labels(
            "attache_local_reply_total",
            &[("listener", "h2c"), ("flag", "RL")],
        )
        .await;
    assert_eq!(rl, 2.0);
    let line = eventually(WAIT, "the rate-limited call logged", || async {
        p.log()
            .lines()
            .filter(|l| l.contains("\"path\":\"/limited.Echo/Unary\""))
            .find(|l| l.contains("\"response_flags\":\"RL\""))
            .map(str::to_string)
    })
    .await;
    assert!(
        line.contains("\"grpc_status\":\"RESOURCE_EXHAUSTED\""),
        "{line}"
    );
}

#[tokio::test]
async fn grpc_web_local_replies_are_grpc_web_and_readable_cross_origin() {
    let LocalReplies { p, .. } = local_replies().await;
    for (ct, want_ct) in [
        ("application/grpc-web+proto", "application/grpc-web+proto"),
        ("application/grpc-web", "application/grpc-web+proto"),
        (
            "application/grpc-web-text",
            "application/grpc-web-text+proto",
        ),
        (
            "application/grpc-web-text+proto",
            "application/grpc-web-text+proto",
        ),
    ] {
        let text = ct.starts_with("application/grpc-web-text");
        for (path, headers, m, code, msg) in local_reply_cases() {
            if !headers.is_empty() || code == "0" || path.starts_with("/limited") {
                // Cases with headers of their own (cross-site, cluster_header) and
                // the rate limit's one-token bucket are the gRPC test's; this
                // listener allows the app's origin through CSRF.
                continue;
            }
            let frame = message_frame(&m);
            let body = if text {
                B64.encode(frame).into_bytes()
            } else {
                frame
            };
            let r = post_web(&p.url("web", path), ct, body).await;
            let what = format!("{ct} {path}");
            assert_eq!(r.status, 200, "{what}: {r:?}");
            assert_eq!(r.header("content-type").as_deref(), Some(want_ct), "{what}");
            assert_eq!(r.header("grpc-status").as_deref(), Some(code), "{what}");
            assert_eq!(r.header("grpc-message").as_deref(), Some(msg), "{what}");
            assert!(r.body.is_empty(), "{what}: {r:?}");
            // A browser reads the status only when CORS lets it (an RBAC denial
            // included, decided before the route's filters run).
            assert_eq!(
                r.header("access-control-allow-origin").as_deref(),
                Some("https://app.example"),
                "{what}"
            );
            assert_eq!(
                r.header("access-control-expose-headers").as_deref(),
                Some("grpc-status, grpc-message"),
                "{what}"
            );
        }
    }
}

/// Send a gRPC-Web-text request over HTTP/1.1 with a chunked body cut into pieces
/// of `sizes` (repeated), and return the decoded response body and its head.
async fn web_text_chunked(
    addr: SocketAddr,
    path: &str,
    body: &[u8],
    sizes: &[usize],
) -> (String, Vec<u8>) {
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let head = format!(
        "POST {path} HTTP/1.1\r\nhost: x\r\ncontent-type: application/grpc-web-text\r\naccept: application/grpc-web-text\r\nx-grpc-web: 1\r\ntransfer-encoding: chunked\r\n\r\n"
    );
    s.write_all(head.as_bytes()).await.expect("head");
    let mut rest = body;
    for n in sizes.iter().cycle() {
        if rest.is_empty() {
            break;
        }
        let (piece, tail) = rest.split_at((*n).min(rest.len()));
        rest = tail;
        let mut chunk = format!("{:x}\r\n", piece.len()).into_bytes();
        chunk.extend_from_slice(piece);
        chunk.extend_from_slice(b"\r\n");
        s.write_all(&chunk).await.expect("chunk");
        s.flush().await.expect("flush");
    }
    s.write_all(b"0\r\n\r\n").await.expect("last chunk");
    // Read the response: a chunked body ends with a zero-size chunk.
    let mut raw = Vec::new();
    let read = async {
        let mut buf = [0u8; 4096];
        loop {
            let n = s.read(&mut buf).await.expect("read");
            raw.extend_from_slice(&buf[..n]);
            if n == 0
                || raw.ends_with(b"\r\n0\r\n\r\n")
                || raw.ends_with(b"content-length: 0\r\n\r\n")
            {
                break;
            }
        }
    };
    tokio::time::timeout(WAIT, read)
        .await
        .expect("response in time");
    let text = String::from_utf8(raw).expect("ascii response");
    let (head, chunked) = text.split_once("\r\n\r\n").expect("head");
    let mut encoded = String::new();
    let mut rest = chunked;
    while let Some((size, tail)) = rest.split_once("\r\n") {
        let n = usize::from_str_radix(size, 16).expect("chunk size");
        if n == 0 {
            break;
        }
        encoded.push_str(&tail[..n]);
        rest = &tail[n + 2..];
    }
    (
        head.to_string(),
        B64.decode(encoded).expect("base64 response"),
    )
}

#[tokio::test]
async fn grpc_web_text_bodies_split_anywhere_with_padding_mid_stream() {
    let server = GrpcServer::start().await;
    let yaml = Routes::new("- name: echo\n  match: { prefix: /test.Echo/ }\n  route: { cluster: backend, timeout: 0s }")
        .names("web", "all")
        .listener_key("filters:\n  - grpc_web: {}")
        .cluster("backend", &[server.addr], "protocol: http2")
        .yaml();
    let p = Proxy::start(&yaml);
    let addr = p.addr("web");
    // Three messages, each base64-encoded on its own (padding after the first two:
    // a browser client encodes message by message).
    let body: Vec<u8> = ["a", "bb", "cccc"]
        .iter()
        .flat_map(|t| B64.encode(message_frame(&echo(t))).into_bytes())
        .collect();
    assert!(
        body.windows(2).any(|w| w[0] == b'=' && w[1] != b'='),
        "padding mid-body"
    );
    for sizes in [&[1usize][..], &[2], &[3, 5, 1, 7], &[13], &[4], &[6, 1]] {
        let (head, decoded) = web_text_chunked(addr, grpc_peer::CLIENT_STREAM, &body, sizes).await;
        assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{sizes:?}: {head}");
        assert!(
            head.contains("content-type: application/grpc-web-text+proto\r\n"),
            "{head}"
        );
        let f = frames(&decoded);
        assert_eq!(f.len(), 2, "{sizes:?}: {f:?}");
        let reply: Echo = prost::Message::decode(&f[0].1[..]).expect("echo");
        assert_eq!(reply.text, "a,bb,cccc", "{sizes:?}");
        // The trailer frame: lower-case names, each line ending in CRLF.
        assert_eq!(f[1].0, 0x80);
        let block = String::from_utf8(f[1].1.clone()).expect("ascii trailers");
        assert!(block.starts_with("grpc-status: 0\r\n"), "{block:?}");
        assert!(block.ends_with("\r\n"), "{block:?}");
        assert_eq!(block, block.to_ascii_lowercase(), "{block:?}");
    }

    // Malformed base64 (padding inside a quad, a truncated quad, bytes outside
    // the alphabet) is a gRPC-Web error, not a mangled message upstream.
    let good = B64.encode(message_frame(&echo("x")));
    for bad in [
        format!("{good}===="),
        good[..good.len() - 1].to_string(),
        format!("AA=A{good}"),
        format!("{good}!!!!"),
    ] {
        let (head, _) = web_text_chunked(addr, grpc_peer::UNARY, bad.as_bytes(), &[3]).await;
        assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{bad}: {head}");
        assert!(head.contains("grpc-status: 13\r\n"), "{bad}: {head}");
        assert!(
            head.contains("grpc-message: bad request (DPE)\r\n"),
            "{bad}: {head}"
        );
    }
}

/// An HTTP/2 upstream scripted by method name: `NoTrailers` ends its stream after a
/// message without trailers, `Html` answers 503 `text/plain`, `Reset` resets the
/// stream before any answer, `Garbage` answers a
/// trailers-only `grpc-status: 999`, the health service answers `UNIMPLEMENTED`,
/// anything else a trailers-only OK. Each request body is read to its end first.
async fn scripted_upstream() -> SocketAddr {
    support::serve_each(|s| async move {
        let Ok(mut conn) = h2::server::handshake(s).await else {
            return;
        };
        while let Some(Ok((req, respond))) = conn.accept().await {
            tokio::spawn(answer_scripted(req, respond));
        }
    })
    .await
}

async fn answer_scripted(
    req: http::Request<h2::RecvStream>,
    mut respond: h2::server::SendResponse<Bytes>,
) {
    let method = req
        .uri()
        .path()
        .rsplit('/')
        .next()
        .unwrap_or("")
        .to_string();
    let mut body = req.into_body();
    while let Some(Ok(d)) = body.data().await {
        let _ = body.flow_control().release_capacity(d.len());
    }
    let grpc = |status: &str| {
        http::Response::builder()
            .header("content-type", "application/grpc")
            .header("grpc-status", status)
            .body(())
            .expect("response")
    };
    match method.as_str() {
        "NoTrailers" => {
            let rsp = http::Response::builder()
                .header("content-type", "application/grpc")
                .body(())
                .expect("response");
            if let Ok(mut send) = respond.send_response(rsp, false) {
                let _ = send.send_data(message_frame(&echo("only")).into(), true);
            }
        }
        "Html" => {
            let rsp = http::Response::builder()
                .status(503)
                .header("content-type", "text/plain")
                .body(())
                .expect("response");
            if let Ok(mut send) = respond.send_response(rsp, false) {
                let _ = send.send_data(Bytes::from_static(b"overloaded\n"), true);
            }
        }
        "Reset" => respond.send_reset(h2::Reason::INTERNAL_ERROR),
        "Garbage" => {
            let _ = respond.send_response(grpc("999"), true);
        }
        "Check" => {
            let _ = respond.send_response(grpc("12"), true);
        }
        _ => {
            let _ = respond.send_response(grpc("0"), true);
        }
    }
}

#[tokio::test]
async fn upstream_answers_without_a_grpc_status_are_errors_and_web_clients_get_one() {
    let up = scripted_upstream().await;
    let yaml = Routes::new(
        "- name: scripted\n  match: { prefix: / }\n  route: { cluster: scripted, timeout: 0s }",
    )
    .names("grpc", "all")
    .listener_key(
        "access_log: { path: stdout, format: json }\nfilters:\n  - sli: {}\n  - grpc_web: {}",
    )
    .cluster("scripted", &[up], "protocol: http2")
    .yaml();
    let p = Proxy::start(&yaml);
    let addr = p.addr("grpc");

    // A stream that ended without trailers: the client sees no status; every
    // signal counts it an error.
    let a = h2c_call(addr, "/s.S/NoTrailers", &[], &echo("x")).await;
    assert_eq!((a.status, a.trailers.is_none()), (200, true), "{a:?}");
    assert_eq!(a.grpc().0, None);
    // A reset before the head is the proxy's answer to give.
    let a = h2c_call(addr, "/s.S/Reset", &[], &echo("x")).await;
    assert_eq!(a.status, 200, "{a:?}");
    assert_eq!(a.grpc(), (Some("14"), Some("upstream reset (UR)")), "{a:?}");
    // A non-gRPC answer (an HTTP 503 page) reaches a gRPC client as it is: gRPC
    // clients map the HTTP status themselves (UNAVAILABLE).
    let a = h2c_call(addr, "/s.S/Html", &[], &echo("x")).await;
    assert_eq!(a.status, 503, "{a:?}");
    // A gRPC-Web client cannot parse a page as gRPC-Web frames: it gets a
    // trailers-only gRPC-Web answer with the status mapped.
    let r = post_web(
        &p.url("grpc", "/s.S/Html"),
        "application/grpc-web+proto",
        message_frame(&echo("x")),
    )
    .await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(
        r.header("content-type").as_deref(),
        Some("application/grpc-web+proto")
    );
    assert_eq!(r.header("grpc-status").as_deref(), Some("14"), "{r:?}");
    assert_eq!(
        r.header("grpc-message").as_deref(),
        Some("upstream answered HTTP 503 without a gRPC status")
    );
    assert!(r.body.is_empty(), "{r:?}");

    let count = |status: &'static str| {
        let p = &p;
        async move {
            p.stat_labels(
                "attache_grpc_requests_total",
                &[
                    ("listener", "grpc"),
                    ("route", "scripted"),
                    ("grpc_status", status),
                ],
            )
            .await
        }
    };
    eventually(WAIT, "INTERNAL and UNAVAILABLE counted", || async {
        (count("INTERNAL").await == 1.0 && count("UNAVAILABLE").await == 3.0).then_some(())
    })
    .await;
    let errors = p
        .stat_labels(
            "attache_sli_requests_total",
            &[
                ("listener", "grpc"),
                ("route", "scripted"),
                ("outcome", "error"),
            ],
        )
        .await;
    assert_eq!(errors, 4.0);
}

#[tokio::test]
async fn grpc_metric_labels_never_take_request_paths_or_status_values() {
    let up = scripted_upstream().await;
    let routes = "- name: svc
  match: { prefix: /pkg.Svc/, headers: [{ name: content-type, prefix: application/grpc }] }
  route: { cluster: scripted, timeout: 0s }";
    let yaml = Routes::new(routes)
        .names("grpc", "all")
        .cluster("scripted", &[up], "protocol: http2")
        .yaml();
    let p = Proxy::start(&yaml);
    let addr = p.addr("grpc");
    for i in 0..20 {
        let method = format!("/pkg.Svc/Method{i}zz");
        let unrouted = format!("/other{i}zz.Svc/Method");
        for path in [method, unrouted] {
            let _ = h2c_call(addr, &path, &[], &echo("x")).await;
        }
    }
    // A status outside the table is UNKNOWN, not a new label value.
    let a = h2c_call(addr, "/pkg.Svc/Garbage", &[], &echo("x")).await;
    assert_eq!(a.header("grpc-status"), Some("999"));
    eventually(WAIT, "the calls counted", || async {
        let n: f64 = p
            .stats_with_prefix("attache_grpc_requests_total")
            .await
            .iter()
            .map(|(_, v)| v)
            .sum();
        (n == 41.0).then_some(())
    })
    .await;
    let series = p.stats_with_prefix("attache_grpc_").await;
    let codes = [
        "OK",
        "CANCELLED",
        "UNKNOWN",
        "INVALID_ARGUMENT",
        "DEADLINE_EXCEEDED",
        "NOT_FOUND",
        "ALREADY_EXISTS",
        "PERMISSION_DENIED",
        "RESOURCE_EXHAUSTED",
        "FAILED_PRECONDITION",
        "ABORTED",
        "OUT_OF_RANGE",
        "UNIMPLEMENTED",
        "INTERNAL",
        "UNAVAILABLE",
        "DATA_LOSS",
        "UNAUTHENTICATED",
    ];
    let mut requests = 0;
    for (name, _) in &series {
        assert!(!name.contains("zz") && !name.contains("999"), "{name}");
        assert!(
            name.contains("route=\"svc\"") || name.contains("route=\"_none\""),
            "{name}"
        );
        if name.starts_with("attache_grpc_requests_total{") {
            requests += 1;
            assert!(
                codes
                    .iter()
                    .any(|c| name.contains(&format!("grpc_status=\"{c}\""))),
                "{name}"
            );
        }
    }
    // Two routes (the configured one and `_none`), 17 codes each.
    assert_eq!(requests, 2 * 17, "{series:?}");
    assert_eq!(
        p.stat_labels(
            "attache_grpc_requests_total",
            &[
                ("listener", "grpc"),
                ("route", "svc"),
                ("grpc_status", "UNKNOWN")
            ],
        )
        .await,
        1.0
    );
    let (_, stats) = p.admin_get("/stats").await;
    assert!(!stats.contains("zz"), "a request path leaked into /stats");
}

#[tokio::test]
async fn grpc_health_checks_pass_only_on_serving() {
    let server = GrpcServer::start().await;
    let unimplemented = scripted_upstream().await;
    // Accepts connections and never answers: every check times out.
    let silent = support::serve_each(|s| async move {
        let _held = s;
        std::future::pending::<()>().await;
    })
    .await;
    let dead = dead_port();
    let checked = grpc_peer::checked_cluster_keys("300ms");
    let yaml = Routes::new(
        "- name: checked\n  match: { prefix: / }\n  route: { cluster: checked, timeout: 0s }",
    )
    .names("grpc", "all")
    .cluster(
        "checked",
        &[server.addr, unimplemented, silent, dead],
        &checked,
    )
    .yaml();
    let p = Proxy::start(&yaml);
    let flags = |clusters: &str, ep: SocketAddr| {
        clusters
            .lines()
            .find_map(|l| l.strip_prefix(&format!("checked::{ep}::health_flags::")))
            .map(str::to_string)
    };
    eventually(WAIT, "only the SERVING endpoint healthy", || async {
        let (_, c) = p.admin_get("/clusters").await;
        let healthy = flags(&c, server.addr).as_deref() == Some("healthy");
        let others = [unimplemented, silent, dead]
            .iter()
            .all(|ep| flags(&c, *ep).as_deref() == Some("unhealthy"));
        (healthy && others).then_some(())
    })
    .await;
    // The check named the service: a NOT_SERVING service (the server as a whole
    // still SERVING) takes the endpoint out.
    server.set_serving(false).await;
    eventually(WAIT, "NOT_SERVING ejects", || async {
        let (_, c) = p.admin_get("/clusters").await;
        (flags(&c, server.addr).as_deref() == Some("unhealthy")).then_some(())
    })
    .await;
    let checks = server.calls(grpc_peer::HEALTH_CHECK);
    assert!(checks >= 2, "{checks}");
}

fn failing(code: tonic::Code, msg: &str) -> Echo {
    Echo {
        text: msg.into(),
        code: code as i32,
        ..Default::default()
    }
}

/// The routes of [`configured_signals_follow_the_config`]: SLI classes per
/// listener and per route, an objective, a template access log, a stream bound
/// by `max_stream_duration`, and one route per gRPC retry condition.
fn signals_config(server: &GrpcServer) -> String {
    let mut routes = String::from(
        "- name: lenient
  match: { prefix: /test.Echo/ }
  route: { cluster: backend, timeout: 0s }
- name: strict
  match: { prefix: /strict.Echo/ }
  route: { cluster: backend, timeout: 0s, prefix_rewrite: /test.Echo/ }
- name: bounded
  match: { prefix: /bounded.Echo/ }
  route: { cluster: backend, timeout: 0s, prefix_rewrite: /test.Echo/, max_stream_duration: 700ms }
",
    );
    for (i, cond) in RETRY_CONDITIONS.iter().enumerate() {
        routes.push_str(&format!(
            "- name: retry_{i}
  match: {{ prefix: /retry{i}.Echo/ }}
  route: {{ cluster: backend, timeout: 0s, prefix_rewrite: /test.Echo/, retries: {{ attempts: 1, retry_on: [{cond}] }} }}
"
        ));
    }
    let listener = r#"access_log: { path: stdout, format: "call %REQ(:PATH)% grpc=%GRPC_STATUS% http=%RESPONSE_CODE%" }
filters:
  - sli:
      errors: { grpc_codes: [UNAVAILABLE, RESOURCE_EXHAUSTED] }
      routes:
        strict: { grpc_codes: [PERMISSION_DENIED] }
      objectives:
        - { name: strict_grpc, routes: [strict], target: 99.9, window: 30d }"#;
    Routes::new(&routes)
        .names("grpc", "all")
        .listener_key(listener)
        .cluster("backend", &[server.addr], "protocol: http2")
        .yaml()
}

/// `retry_on` gRPC conditions and the code a server answers to trigger each.
const RETRY_CONDITIONS: [&str; 5] = [
    "cancelled",
    "deadline-exceeded",
    "resource-exhausted",
    "unavailable",
    "internal",
];
const RETRY_CODES: [tonic::Code; 5] = [
    tonic::Code::Cancelled,
    tonic::Code::DeadlineExceeded,
    tonic::Code::ResourceExhausted,
    tonic::Code::Unavailable,
    tonic::Code::Internal,
];

#[tokio::test]
async fn configured_signals_follow_the_config() {
    use support::grpc_peer::GrpcClient;
    use tonic::Code;
    let server = GrpcServer::start().await;
    let p = Proxy::start(&signals_config(&server));
    let mut c = GrpcClient::new(p.addr("grpc"));

    // SLI classes: the listener's list (UNKNOWN is not in it, RESOURCE_EXHAUSTED
    // is), and the `strict` route's own list replacing it.
    let calls = [
        ("/test.Echo/Unary", Code::Unknown),
        ("/test.Echo/Unary", Code::ResourceExhausted),
        ("/test.Echo/Unary", Code::PermissionDenied),
        ("/strict.Echo/Unary", Code::PermissionDenied),
        ("/strict.Echo/Unary", Code::Unavailable),
    ];
    for (path, code) in calls {
        let e = c.unary_at(path, failing(code, "x")).await.expect_err(path);
        assert_eq!(e.code(), code);
    }
    let sli = |route: &'static str, outcome: &'static str| {
        let p = &p;
        async move {
            p.stat_labels(
                "attache_sli_requests_total",
                &[("listener", "grpc"), ("route", route), ("outcome", outcome)],
            )
            .await
        }
    };
    eventually(WAIT, "SLI classes", || async {
        let got = [
            sli("lenient", "success").await,
            sli("lenient", "error").await,
            sli("strict", "success").await,
            sli("strict", "error").await,
        ];
        (got == [2.0, 1.0, 1.0, 1.0]).then_some(())
    })
    .await;
    let (_, board) = p.admin_get("/sli?format=json").await;
    let v: serde_json::Value = serde_json::from_str(&board).expect("json");
    let o = v["objectives"]
        .as_array()
        .expect("objectives")
        .iter()
        .find(|o| o["name"] == "strict_grpc")
        .unwrap_or_else(|| panic!("no objective in {board}"))
        .clone();
    assert_eq!(
        (
            o["window"]["requests"].as_u64(),
            o["window"]["errors"].as_u64()
        ),
        (Some(2), Some(1))
    );
    // The duration histogram counts every call of the route.
    let n = p
        .stat_labels(
            "attache_grpc_request_duration_seconds_count",
            &[("listener", "grpc"), ("route", "lenient")],
        )
        .await;
    assert_eq!(n, 3.0);
    // A template access log renders the status name.
    let line = eventually(WAIT, "template log line", || async {
        p.log()
            .lines()
            .find(|l| l.contains("call /strict.Echo/Unary grpc=UNAVAILABLE"))
            .map(str::to_string)
    })
    .await;
    assert!(line.ends_with("http=200"), "{line}");

    // max_stream_duration ends a stream after its head with DEADLINE_EXCEEDED
    // trailers, the server still sending.
    let (got, end) = c
        .server_stream_at(
            "/bounded.Echo/ServerStream",
            Echo {
                text: "tick".into(),
                count: 20,
                delay_ms: 200,
                ..Default::default()
            },
        )
        .await;
    assert!(!got.is_empty() && got.len() < 20, "{got:?}");
    let e = end.expect_err("bounded");
    assert_eq!(
        (e.code(), e.message()),
        (Code::DeadlineExceeded, "deadline exceeded (UT)")
    );

    // Each gRPC retry condition retries a trailers-only answer with its code.
    for (i, code) in RETRY_CODES.into_iter().enumerate() {
        let before = server.calls(grpc_peer::UNARY);
        let path: &'static str = [
            "/retry0.Echo/Unary",
            "/retry1.Echo/Unary",
            "/retry2.Echo/Unary",
            "/retry3.Echo/Unary",
            "/retry4.Echo/Unary",
        ][i];
        let e = c
            .unary_at(path, failing(code, "again"))
            .await
            .expect_err(path);
        assert_eq!(e.code(), code, "{path}");
        assert_eq!(
            server.calls(grpc_peer::UNARY) - before,
            2,
            "{}",
            RETRY_CONDITIONS[i]
        );
        // A code the route does not name is answered after one try.
        let other = if code == Code::Internal {
            Code::DataLoss
        } else {
            Code::Internal
        };
        let before = server.calls(grpc_peer::UNARY);
        let _ = c.unary_at(path, failing(other, "once")).await;
        assert_eq!(
            server.calls(grpc_peer::UNARY) - before,
            1,
            "{path} {other:?}"
        );
    }
}

#[tokio::test]
async fn a_client_that_cancels_mid_stream_is_cancelled_not_an_error() {
    use support::grpc_peer::GrpcClient;
    let server = GrpcServer::start().await;
    let yaml = Routes::new(
        "- name: echo\n  match: { prefix: /test.Echo/ }\n  route: { cluster: backend, timeout: 0s }",
    )
    .names("grpc", "all")
    .listener_key("access_log: { path: stdout, format: json }\nfilters:\n  - sli: {}")
    .cluster("backend", &[server.addr], "protocol: http2")
    .yaml();
    let p = Proxy::start(&yaml);
    let mut c = GrpcClient::new(p.addr("grpc"));
    let long = Echo {
        text: "tick".into(),
        count: 100,
        delay_ms: 100,
        ..Default::default()
    };
    let mut s = c
        .server_stream_open(grpc_peer::SERVER_STREAM, long)
        .await
        .expect("head");
    let first = s.message().await.expect("first message");
    assert_eq!(first.map(|m| m.text).as_deref(), Some("tick 0"));
    drop(s); // the client resets the stream (CANCEL)
    let line = eventually(WAIT, "the cancelled call logged", || async {
        p.log()
            .lines()
            .find(|l| l.contains(grpc_peer::SERVER_STREAM))
            .map(str::to_string)
    })
    .await;
    assert!(line.contains("\"grpc_status\":\"CANCELLED\""), "{line}");
    assert!(line.contains("\"response_flags\":\"DC\""), "{line}");
    let labels = |outcome| {
        [
            ("listener", "grpc"),
            ("route", "echo"),
            ("outcome", outcome),
        ]
    };
    assert_eq!(
        p.stat_labels("attache_sli_requests_total", &labels("success"))
            .await,
        1.0
    );
    assert_eq!(
        p.stat_labels("attache_sli_requests_total", &labels("error"))
            .await,
        0.0
    );
}
