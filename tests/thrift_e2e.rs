//! The Thrift proxy through the real binary: `attache run` with `protocol: thrift`
//! listeners on 127.0.0.1:0, real Thrift origins and clients (the Apache `thrift`
//! crate), outcomes read back from the admin `/stats` and `/sli` endpoints.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use support::thrift_peer::{
    start_origin, ApplicationErrorKind, Client, Protocol, Transport, IO_TIMEOUT,
};
use support::{blocking, dead_port, eventually, Proxy};
use thrift::protocol::{TBinaryInputProtocol, TInputProtocol, TMessageType, TType};
use thrift::transport::TFramedReadTransport;

fn rq_total(listener: &str, method: &str, outcome: &str) -> String {
    format!(
        "attache_thrift_rq_total{{listener=\"{listener}\",method=\"{method}\",outcome=\"{outcome}\"}}"
    )
}

/// Wait until a stat reaches `want` (counters are bumped after the reply is sent).
async fn stat_eventually(proxy: &Proxy, name: &str, want: f64) {
    let what = format!("{name} to be {want}");
    eventually(Duration::from_secs(30), &what, || async {
        (proxy.stat(name).await == want).then_some(())
    })
    .await;
}

/// One thrift listener `t` with `thrift_block` (indented under `thrift:`), and
/// `clusters` verbatim.
fn one_listener(thrift_block: &str, clusters: &str) -> String {
    support::yaml::thrift_listener(&format!("    thrift:\n{thrift_block}"), clusters)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_and_compact_over_framed_and_unframed_route_by_method_to_two_clusters() {
    // Upstream framing differs per cluster, so framed <-> unframed translation is
    // exercised in both directions.
    let a_bin = start_origin("a", Protocol::Binary, Transport::Unframed);
    let b_bin = start_origin("b", Protocol::Binary, Transport::Framed);
    let a_cmp = start_origin("a", Protocol::Compact, Transport::Framed);
    let b_cmp = start_origin("b", Protocol::Compact, Transport::Unframed);
    let listener = |name: &str, protocol: &str, sfx: &str| {
        format!(
            "
  - name: {name}
    address: 127.0.0.1:0
    protocol: thrift
    thrift:
      transport: auto
      protocol: {protocol}
      routes:
        - name: get_user
          match: {{ method: getUser }}
          route: {{ cluster: a_{sfx} }}
        - name: find
          match: {{ method_prefix: find }}
          route: {{ cluster: b_{sfx} }}
        - match: {{ method: ping }}
          route: {{ cluster: a_{sfx} }}
"
        )
    };
    let cluster = |name: &str, addr: SocketAddr, t: &str| {
        format!(
            "
  - name: {name}
    endpoints: [\"{addr}\"]
    thrift: {{ transport: {t} }}
"
        )
    };
    let yaml = format!(
        "listeners:{}{}clusters:{}{}{}{}",
        listener("bin", "binary", "bin"),
        listener("cmp", "compact", "cmp"),
        cluster("a_bin", a_bin.addr, "unframed"),
        cluster("b_bin", b_bin.addr, "framed"),
        cluster("a_cmp", a_cmp.addr, "framed"),
        cluster("b_cmp", b_cmp.addr, "unframed"),
    );
    let proxy = Proxy::start(&yaml);
    for (listener, protocol) in [("bin", Protocol::Binary), ("cmp", Protocol::Compact)] {
        for transport in [Transport::Framed, Transport::Unframed] {
            let addr = proxy.addr(listener);
            let got = blocking(move || {
                let mut c = Client::connect(addr, protocol, transport, None);
                let r = (c.get_user(7), c.call_named("findUser", 8), c.ping());
                format!("{:?} {:?} {:?}", r.0, r.1, r.2)
            })
            .await;
            assert_eq!(
                got, "Ok(\"a:7\") Ok(\"b:8\") Ok(())",
                "{protocol:?} over {transport:?}"
            );
        }
        stat_eventually(&proxy, &rq_total(listener, "getUser", "success"), 2.0).await;
        // findUser is not a `match.method` name: it counts as `other`.
        stat_eventually(&proxy, &rq_total(listener, "other", "success"), 2.0).await;
        stat_eventually(&proxy, &rq_total(listener, "ping", "success"), 2.0).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multiplexed_clients_are_routed_by_service() {
    let users = start_origin("users", Protocol::Binary, Transport::Framed);
    let admin = start_origin("admin", Protocol::Binary, Transport::Framed);
    let proxy = Proxy::start(&one_listener(
        "
      routes:
        - match: { service: Users }
          route: { cluster: users }
        - match: { service: Admin }
          route: { cluster: admin }
",
        &format!(
            "  - {{ name: users, endpoints: [\"{}\"] }}\n  - {{ name: admin, endpoints: [\"{}\"] }}\n",
            users.addr, admin.addr
        ),
    ));
    let addr = proxy.addr("t");
    let got = blocking(move || {
        let (bin, fr) = (Protocol::Binary, Transport::Framed);
        let u = Client::connect(addr, bin, fr, Some("Users")).get_user(1);
        let a = Client::connect(addr, bin, fr, Some("Admin")).get_user(2);
        let plain = Client::connect(addr, bin, fr, None).get_user(3);
        format!("{u:?} {a:?} {plain:?}")
    })
    .await;
    assert_eq!(
        got,
        "Ok(\"users:1\") Ok(\"admin:2\") Err(App(UnknownMethod))"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_calls_are_answered_in_order_and_oneway_gets_no_reply() {
    let a = start_origin("a", Protocol::Compact, Transport::Framed);
    let proxy = Proxy::start(&one_listener(
        "
      protocol: compact
      routes:
        - match: {}
          route: { cluster: a }
",
        &format!("  - {{ name: a, endpoints: [\"{}\"] }}\n", a.addr),
    ));
    let addr = proxy.addr("t");
    let got = blocking(move || {
        // Five calls written back to back, the slow one first, then a oneway `log`
        // and a `ping`; then every reply read. The oneway must not produce one.
        let mut c = Client::connect(addr, Protocol::Compact, Transport::Framed, None);
        let ids = [950, 1, 2, 3, 4];
        for id in ids {
            c.send(
                "getUser",
                TMessageType::Call,
                Some((TType::I64, &id.to_string())),
            );
        }
        c.log("hello");
        c.send("ping", TMessageType::Call, None);
        let mut replies = Vec::new();
        for n in 1..=ids.len() {
            c.seq = n as i32;
            replies.push(format!("{:?}", c.receive()));
        }
        c.seq = ids.len() as i32 + 2; // after the oneway's seq
        replies.push(format!("{:?}", c.receive()));
        replies
    })
    .await;
    let mut want: Vec<String> = [950, 1, 2, 3, 4]
        .iter()
        .map(|id| format!("Ok(Some(\"a:{id}\"))"))
        .collect();
    want.push("Ok(None)".to_owned());
    assert_eq!(got, want);
    let line = tokio::task::spawn_blocking(move || a.logs.recv_timeout(IO_TIMEOUT))
        .await
        .expect("join");
    assert_eq!(line.as_deref(), Ok("hello"));
    stat_eventually(&proxy, &rq_total("t", "other", "success"), 7.0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outcomes_are_counted_and_feed_the_sli_board() {
    let a = start_origin("a", Protocol::Binary, Transport::Unframed);
    let proxy = Proxy::start(&one_listener(
        "
      transport: unframed
      routes:
        - name: users
          match: { method: getUser }
          route: { cluster: a }
        - match: { method: ping }
          route: { cluster: a }
",
        &format!(
            "  - {{ name: a, endpoints: [\"{}\"], thrift: {{ transport: unframed }} }}\n",
            a.addr
        ),
    ));
    let addr = proxy.addr("t");
    let got = blocking(move || {
        let mut c = Client::connect(addr, Protocol::Binary, Transport::Unframed, None);
        [
            format!("{:?}", c.get_user(5)),
            format!("{:?}", c.get_user(0)),
            format!("{:?}", c.get_user(-1)),
            format!("{:?}", c.call_named("deleteUser", 1)),
            format!("{:?}", c.ping()),
        ]
    })
    .await;
    assert_eq!(
        got,
        [
            "Ok(\"a:5\")",
            "Err(NotFound)",
            "Err(App(InternalError))",
            "Err(App(UnknownMethod))",
            "Ok(())"
        ]
    );
    stat_eventually(&proxy, &rq_total("t", "getUser", "success"), 1.0).await;
    stat_eventually(&proxy, &rq_total("t", "getUser", "error"), 1.0).await;
    stat_eventually(&proxy, &rq_total("t", "getUser", "exception"), 1.0).await;
    stat_eventually(&proxy, &rq_total("t", "other", "local_error"), 1.0).await;
    stat_eventually(&proxy, &rq_total("t", "ping", "success"), 1.0).await;
    stat_eventually(
        &proxy,
        "attache_thrift_rq_duration_seconds_count{listener=\"t\",method=\"getUser\"}",
        3.0,
    )
    .await;

    // The same calls on /sli: per route name (`routes.1` for the unnamed one, `_none`
    // for no route). The TApplicationException and the local reply are errors; the
    // declared NotFound is the service's answer.
    let (status, body) = proxy.admin_get("/sli?format=json").await;
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).expect("json");
    let routes = v["routes"].as_array().expect("routes");
    let entry = |route: &str| {
        routes
            .iter()
            .find(|r| r["listener"] == "t" && r["route"] == route)
            .map(|r| (r["requests"].as_u64(), r["errors"].as_u64()))
    };
    assert_eq!(entry("users"), Some((Some(3), Some(1))), "{body}");
    assert_eq!(entry("routes.1"), Some((Some(1), Some(0))), "{body}");
    assert_eq!(entry("_none"), Some((Some(1), Some(1))), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_down_answers_an_exception_not_a_hang() {
    let proxy = Proxy::start(&one_listener(
        "
      routes:
        - match: {}
          route: { cluster: down }
",
        &format!(
            "  - {{ name: down, endpoints: [\"{}\"], connect_timeout: 500ms }}\n",
            dead_port()
        ),
    ));
    let addr = proxy.addr("t");
    let started = Instant::now();
    let got = blocking(move || {
        let mut c = Client::connect(addr, Protocol::Binary, Transport::Framed, None);
        // Twice on one connection: the first failure does not end it.
        format!("{:?} {:?}", c.get_user(1), c.get_user(2))
    })
    .await;
    assert_eq!(got, "Err(App(InternalError)) Err(App(InternalError))");
    assert!(started.elapsed() < Duration::from_secs(5));
    stat_eventually(&proxy, &rq_total("t", "other", "local_error"), 2.0).await;
    stat_eventually(&proxy, &local_replies("t", "UF"), 2.0).await;
    assert!(
        proxy
            .stat("attache_upstream_cx_connect_fail_total{cluster=\"down\"}")
            .await
            >= 2.0
    );
}

fn local_replies(listener: &str, flag: &str) -> String {
    format!("attache_local_reply_total{{flag=\"{flag}\",listener=\"{listener}\"}}")
}

/// A framed binary origin that answers every call with a reply for another
/// sequence id (a reply that does not answer the call).
fn start_wrong_seqid_origin() -> SocketAddr {
    support::serve_each_blocking("127.0.0.1:0", |mut s| loop {
        let mut len = [0u8; 4];
        if s.read_exact(&mut len).is_err() {
            return;
        }
        let mut call = vec![0u8; u32::from_be_bytes(len) as usize];
        if s.read_exact(&mut call).is_err() {
            return;
        }
        // Strict binary: version+type (4), name length (4), name, seq id (4).
        let n = u32::from_be_bytes([call[4], call[5], call[6], call[7]]) as usize;
        let seq = i32::from_be_bytes([call[8 + n], call[9 + n], call[10 + n], call[11 + n]]);
        let mut reply = vec![0x80, 0x01, 0x00, 0x02];
        reply.extend_from_slice(&call[4..8 + n]);
        reply.extend_from_slice(&(seq.wrapping_add(1)).to_be_bytes());
        reply.push(0); // the result struct's STOP
        if s.write_all(&frame(&reply)).is_err() {
            return;
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reply_that_does_not_answer_the_call_is_an_upe_local_reply_and_counted() {
    let origin = start_wrong_seqid_origin();
    let proxy = Proxy::start(&one_listener(
        "
      routes:
        - match: {}
          route: { cluster: wrong }
",
        &format!("  - {{ name: wrong, endpoints: [\"{origin}\"] }}\n"),
    ));
    let addr = proxy.addr("t");
    let got = blocking(move || {
        let mut c = Client::connect(addr, Protocol::Binary, Transport::Framed, None);
        format!("{:?}", c.get_user(1))
    })
    .await;
    assert_eq!(got, "Err(App(InternalError))");
    stat_eventually(&proxy, &local_replies("t", "UPE"), 1.0).await;
    stat_eventually(&proxy, &rq_total("t", "other", "local_error"), 1.0).await;
}

/// Send raw bytes and collect everything until the proxy closes the connection.
fn send_raw(addr: SocketAddr, bytes: &[u8]) -> Vec<u8> {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(IO_TIMEOUT)).expect("timeout");
    s.write_all(bytes).expect("write");
    let mut got = Vec::new();
    match s.read_to_end(&mut got) {
        Ok(_) => {}
        // A reset also closes; a timeout means the proxy kept waiting.
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        Err(e) => panic!("connection was not closed: {e}"),
    }
    got
}

fn frame(payload: &[u8]) -> Vec<u8> {
    let mut v = (payload.len() as u32).to_be_bytes().to_vec();
    v.extend_from_slice(payload);
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_closes_the_connection_is_counted_and_the_proxy_keeps_serving() {
    let a = start_origin("a", Protocol::Binary, Transport::Framed);
    let proxy = Proxy::start(&one_listener(
        "
      transport: framed
      protocol: binary
      max_message_size: 1024
      routes:
        - match: {}
          route: { cluster: a }
",
        &format!("  - {{ name: a, endpoints: [\"{}\"] }}\n", a.addr),
    ));
    let addr = proxy.addr("t");
    let results = blocking(move || {
        // A call whose header decodes and whose body nests lists too deep.
        let mut deep = vec![0x80, 1, 0, 1, 0, 0, 0, 7];
        deep.extend_from_slice(b"getUser");
        deep.extend_from_slice(&42i32.to_be_bytes());
        deep.extend_from_slice(&[15, 0, 1]);
        for _ in 0..70 {
            deep.extend_from_slice(&[15, 0, 0, 0, 1]);
        }
        deep.extend_from_slice(&[8, 0, 0, 0, 0, 0]);
        let cases: Vec<(&str, Vec<u8>)> = vec![
            ("garbage", b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec()),
            ("frame over the limit", vec![0, 0, 4, 1, 0x80, 1, 0, 1]),
            (
                "negative length",
                vec![0xff, 0xff, 0xff, 0xfe, 0x80, 1, 0, 1],
            ),
            (
                "unknown version",
                frame(&[0x80, 9, 0, 1, 0, 0, 0, 1, b'm', 0, 0, 0, 1, 0]),
            ),
            (
                "invalid utf-8 name",
                frame(&[0x80, 1, 0, 1, 0, 0, 0, 2, 0xc3, 0x28, 0, 0, 0, 1, 0]),
            ),
        ];
        let mut closed = Vec::new();
        for (case, bytes) in cases {
            closed.push((case, send_raw(addr, &bytes).is_empty()));
        }
        // Truncated: part of a frame, then the client hangs up.
        let mut s = TcpStream::connect(addr).expect("connect");
        s.write_all(&[0, 0, 0, 20, 0x80, 1, 0, 1]).expect("write");
        drop(s);
        // The header decodes, the body does not: PROTOCOL_ERROR with the caller's
        // name and seq id, then the connection is closed.
        let reply = send_raw(addr, &frame(&deep));
        let mut p = TBinaryInputProtocol::new(TFramedReadTransport::new(&reply[..]), true);
        let m = p.read_message_begin().expect("an exception reply");
        let e = thrift::Error::read_application_error_from_in_protocol(&mut p).expect("app error");
        let deep_reply = (m.name, m.sequence_number, e.kind);
        // A well-behaved client is still served.
        let mut c = Client::connect(addr, Protocol::Binary, Transport::Framed, None);
        (closed, deep_reply, format!("{:?}", c.get_user(3)))
    })
    .await;
    let (closed, deep_reply, good) = results;
    for (case, empty) in closed {
        assert!(empty, "{case}: the connection closes without a reply");
    }
    assert_eq!(
        deep_reply,
        (
            "getUser".to_owned(),
            42,
            ApplicationErrorKind::ProtocolError
        )
    );
    assert_eq!(good, "Ok(\"a:3\")");
    let errors = |reason: &str| {
        format!(
            "attache_thrift_downstream_decode_error_total{{listener=\"t\",reason=\"{reason}\"}}"
        )
    };
    // HTTP bytes read as a frame length far over the limit.
    stat_eventually(&proxy, &errors("frame_too_large"), 2.0).await;
    stat_eventually(&proxy, &errors("negative_length"), 1.0).await;
    stat_eventually(&proxy, &errors("unknown_protocol"), 1.0).await;
    stat_eventually(&proxy, &errors("invalid_name"), 1.0).await;
    stat_eventually(&proxy, &errors("depth_exceeded"), 1.0).await;
    stat_eventually(&proxy, &errors("truncated"), 1.0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_concurrent_clients_each_get_their_own_replies() {
    let a = start_origin("a", Protocol::Binary, Transport::Framed);
    let b = start_origin("b", Protocol::Binary, Transport::Framed);
    let proxy = Proxy::start(&one_listener(
        "
      transport: auto
      routes:
        - match: {}
          route: { cluster: ab }
",
        &format!(
            "  - {{ name: ab, endpoints: [\"{}\", \"{}\"], thrift: {{ transport: framed }} }}\n",
            a.addr, b.addr
        ),
    ));
    let addr = proxy.addr("t");
    let failures = blocking(move || {
        std::thread::scope(|scope| {
            let handles: Vec<_> = (0..200i64)
                .map(|client| {
                    scope.spawn(move || {
                        let t = if client % 2 == 0 {
                            Transport::Framed
                        } else {
                            Transport::Unframed
                        };
                        let mut c = Client::connect(addr, Protocol::Binary, t, None);
                        let mut bad = Vec::new();
                        for k in 1..=5 {
                            let id = client * 100 + k;
                            match c.get_user(id) {
                                Ok(s) if s == format!("a:{id}") || s == format!("b:{id}") => {}
                                other => bad.push(format!("client {client} id {id}: {other:?}")),
                            }
                        }
                        bad
                    })
                })
                .collect();
            handles
                .into_iter()
                .flat_map(|h| {
                    h.join()
                        .unwrap_or_else(|_| vec!["client panicked".to_owned()])
                })
                .collect::<Vec<_>>()
        })
    })
    .await;
    assert!(failures.is_empty(), "{failures:?}");
    stat_eventually(&proxy, &rq_total("t", "other", "success"), 1000.0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_are_closed_after_the_idle_timeout() {
    let a = start_origin("a", Protocol::Binary, Transport::Framed);
    let proxy = Proxy::start(&one_listener(
        "
      idle_timeout: 300ms
      routes:
        - match: {}
          route: { cluster: a }
",
        &format!("  - {{ name: a, endpoints: [\"{}\"] }}\n", a.addr),
    ));
    let addr = proxy.addr("t");
    let (first, waited) = blocking(move || {
        let s = TcpStream::connect(addr).expect("connect");
        s.set_read_timeout(Some(IO_TIMEOUT)).expect("timeout");
        let (i, o) = support::thrift_peer::protocols(&s, Protocol::Binary, Transport::Framed);
        let mut c = Client::over(i, o, None);
        let first = format!("{:?}", c.get_user(1));
        let t = Instant::now();
        let mut rest = Vec::new();
        let n = (&s).read_to_end(&mut rest);
        (first, n.map(|n| (n, t.elapsed())))
    })
    .await;
    assert_eq!(first, "Ok(\"a:1\")");
    let (n, waited) = waited.expect("closed, not timed out");
    assert_eq!(n, 0);
    assert!(
        waited >= Duration::from_millis(200) && waited < Duration::from_secs(5),
        "closed after {waited:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_drains_idle_thrift_connections_promptly() {
    let a = start_origin("a", Protocol::Binary, Transport::Framed);
    let mut proxy = Proxy::start(&format!(
        "drain_timeout: 20s\n{}",
        one_listener(
            "
      routes:
        - match: {}
          route: { cluster: a }
",
            &format!("  - {{ name: a, endpoints: [\"{}\"] }}\n", a.addr),
        )
    ));
    let addr = proxy.addr("t");
    // An open client connection, idle after one call.
    let (tx, rx) = std::sync::mpsc::channel();
    let client = tokio::task::spawn_blocking(move || {
        let s = TcpStream::connect(addr).expect("connect");
        s.set_read_timeout(Some(IO_TIMEOUT)).expect("timeout");
        let (i, o) = support::thrift_peer::protocols(&s, Protocol::Binary, Transport::Framed);
        let mut c = Client::over(i, o, None);
        let first = format!("{:?}", c.get_user(1));
        let _ = tx.send(());
        let mut rest = Vec::new();
        (first, (&s).read_to_end(&mut rest))
    });
    let _ = tokio::task::spawn_blocking(move || rx.recv_timeout(IO_TIMEOUT))
        .await
        .expect("join");
    let started = Instant::now();
    proxy.signal(15);
    let code = tokio::task::spawn_blocking(move || {
        let code = proxy.wait_exit(Duration::from_secs(15));
        (code, proxy)
    })
    .await
    .expect("join");
    assert_eq!(code.0, Some(0));
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "drain waited {:?} for an idle connection",
        started.elapsed()
    );
    let (first, rest) = tokio::time::timeout(Duration::from_secs(20), client)
        .await
        .expect("client done")
        .expect("join");
    assert_eq!(first, "Ok(\"a:1\")");
    assert_eq!(rest.ok(), Some(0), "closed cleanly by the proxy");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_to_unknown_clusters_fail_validation() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("bad.yaml");
    std::fs::write(
        &path,
        one_listener(
            "
      routes:
        - match: { method: getUser }
          route: { cluster: nowhere }
",
            "  - { name: a, endpoints: [\"127.0.0.1:1\"] }\n",
        ),
    )
    .expect("write");
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(support::bin())
            .args(["validate", "--config"])
            .arg(&path)
            .output()
            .expect("run validate")
    })
    .await
    .expect("join");
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    // The diagnostic points at the route's cluster key (FILE:LINE:COL).
    assert!(
        format!("{stdout}{stderr}")
            .contains("bad.yaml:10:29: route references unknown cluster `nowhere`"),
        "{stdout}{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thrift_over_listener_tls_with_a_rustls_client() {
    use std::sync::Arc;

    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).expect("cert");
    let dir = tempfile::tempdir().expect("tempdir");
    let cert_path = dir.path().join("server.pem");
    let key_path = dir.path().join("server.key");
    std::fs::write(&cert_path, cert.cert.pem()).expect("write cert");
    std::fs::write(&key_path, cert.key_pair.serialize_pem()).expect("write key");
    let a = start_origin("a", Protocol::Binary, Transport::Framed);
    let yaml = format!(
        "
listeners:
  - name: t
    address: 127.0.0.1:0
    protocol: thrift
    tls: {{ cert_chain: {}, private_key: {} }}
    thrift:
      routes:
        - match: {{}}
          route: {{ cluster: a }}
clusters:
  - {{ name: a, endpoints: [\"{}\"] }}
",
        cert_path.display(),
        key_path.display(),
        a.addr
    );
    let proxy = Proxy::start(&yaml);
    let addr = proxy.addr("t");
    let der = cert.cert.der().clone();
    let got = blocking(move || {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(der).expect("trust the test cert");
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
        let (p, t) = (Protocol::Binary, Transport::Framed);
        let mut c =
            Client::connect_tls(addr, Arc::new(config), "localhost", p, t).expect("tls client");
        format!("{:?} {:?}", c.get_user(11), c.get_user(0))
    })
    .await;
    assert_eq!(got, "Ok(\"a:11\") Err(NotFound)");
    stat_eventually(&proxy, &rq_total("t", "other", "success"), 1.0).await;
    stat_eventually(&proxy, &rq_total("t", "other", "error"), 1.0).await;
    // A plaintext Thrift client on the TLS port is refused, and nothing is counted.
    let plain = blocking(move || {
        let mut c = Client::connect(addr, Protocol::Binary, Transport::Framed, None);
        format!("{:?}", c.get_user(1).is_err())
    })
    .await;
    assert_eq!(plain, "true");
}

/// Sums of (rq_active, rq_total, rq_error) over a cluster's endpoints, from `/clusters`.
async fn endpoint_counters(proxy: &Proxy, cluster: &str) -> (u64, u64, u64) {
    let (_, body) = proxy.admin_get("/clusters?format=json").await;
    let v: serde_json::Value = serde_json::from_str(&body).expect("json");
    let mut sums = (0, 0, 0);
    for c in v["clusters"].as_array().expect("clusters") {
        if c["name"] != cluster {
            continue;
        }
        for e in c["endpoints"].as_array().expect("endpoints") {
            sums.0 += e["rq_active"].as_u64().unwrap_or(0);
            sums.1 += e["rq_total"].as_u64().unwrap_or(0);
            sums.2 += e["rq_error"].as_u64().unwrap_or(0);
        }
    }
    sums
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_in_flight_are_visible_to_least_request_and_timeouts_release_them() {
    let a = start_origin("a", Protocol::Binary, Transport::Framed);
    let b = start_origin("b", Protocol::Binary, Transport::Framed);
    let proxy = Proxy::start(&one_listener(
        "
      routes:
        - match: { method: getUser }
          route: { cluster: lr, timeout: 5s }
        - match: { method: findUser }
          route: { cluster: lr, timeout: 300ms }
",
        &format!(
            "  - {{ name: lr, lb_policy: least_request, endpoints: [\"{}\", \"{}\"] }}\n",
            a.addr, b.addr
        ),
    ));
    let addr = proxy.addr("t");
    // A 1.5s call is in flight: its endpoint shows one active request.
    let slow = tokio::task::spawn_blocking(move || {
        let mut c = Client::connect(addr, Protocol::Binary, Transport::Framed, None);
        format!("{:?}", c.get_user(999).map(|s| s.len() > 2))
    });
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut seen = (0, 0, 0);
    while Instant::now() < deadline {
        seen = endpoint_counters(&proxy, "lr").await;
        if seen.0 == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(seen.0, 1, "one call in flight: {seen:?}");
    let slow = tokio::time::timeout(Duration::from_secs(10), slow)
        .await
        .expect("slow call done")
        .expect("join");
    assert_eq!(slow, "Ok(true)");
    // A call cut off by its route timeout is released and counted as an error.
    let timed_out = blocking(move || {
        let mut c = Client::connect(addr, Protocol::Binary, Transport::Framed, None);
        format!("{:?}", c.call_named("findUser", 999))
    })
    .await;
    assert_eq!(timed_out, "Err(App(InternalError))");
    assert_eq!(endpoint_counters(&proxy, "lr").await, (0, 2, 1));
}

/// A cluster whose protocol differs from the client's: calls and replies are
/// re-encoded (binary <-> compact), results, declared exceptions, application
/// exceptions and void replies alike, across framings.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_and_compact_clients_reach_servers_of_the_other_protocol() {
    let compact = start_origin("c", Protocol::Compact, Transport::Framed);
    let binary = start_origin("b", Protocol::Binary, Transport::Unframed);
    let proxy = Proxy::start(&one_listener(
        "
      transport: auto
      protocol: auto
      routes:
        - match: { service: ToCompact }
          route: { cluster: compact }
        - route: { cluster: binary }
",
        &format!(
            "  - {{ name: compact, endpoints: [\"{}\"], thrift: {{ protocol: compact, transport: framed }} }}
  - {{ name: binary, endpoints: [\"{}\"], thrift: {{ protocol: binary, transport: unframed }} }}
",
            compact.addr, binary.addr
        ),
    ));
    let addr = proxy.addr("t");
    let got = blocking(move || {
        let mut out = Vec::new();
        for (p, t, svc) in [
            (Protocol::Binary, Transport::Framed, Some("ToCompact")),
            (Protocol::Binary, Transport::Unframed, Some("ToCompact")),
            (Protocol::Compact, Transport::Framed, None),
            (Protocol::Compact, Transport::Unframed, None),
        ] {
            let mut c = Client::connect(addr, p, t, svc);
            out.push(format!(
                "{:?} {:?} {:?} {:?}",
                c.get_user(7),
                c.get_user(0),
                c.get_user(-1),
                c.ping()
            ));
        }
        out
    })
    .await;
    let want =
        |origin: &str| format!("Ok(\"{origin}:7\") Err(NotFound) Err(App(InternalError)) Ok(())");
    assert_eq!(got, [want("c"), want("c"), want("b"), want("b")]);
    stat_eventually(&proxy, &rq_total("t", "other", "exception"), 4.0).await;
    assert_eq!(
        proxy.stat(&rq_total("t", "other", "local_error")).await,
        0.0
    );
}

/// An origin that holds each reply until it has received `n` calls (or `wait`
/// passes), then answers the later arrivals first; a reply to `getUser(id)` is
/// `"<id>:<calls received when the gate opened>"`. The gate opens once, for every
/// call waiting at it, so a slow machine cannot let a later call's arrival leak into
/// an earlier call's answer; a call arriving after it opened sees its own count.
fn start_gate_origin(n: usize, wait: Duration) -> SocketAddr {
    use std::sync::{Arc, Condvar, Mutex};
    use support::thrift_peer::protocols;
    use thrift::protocol::{TFieldIdentifier, TMessageIdentifier, TStructIdentifier};
    // (calls received, the count when the gate opened)
    let gate = Arc::new((Mutex::new((0usize, None::<usize>)), Condvar::new()));
    support::serve_each_blocking("127.0.0.1:0", move |s| {
        let (mut i, mut o) = protocols(&s, Protocol::Binary, Transport::Framed);
        loop {
            let Ok(m) = i.read_message_begin() else {
                return;
            };
            let mut id = 0;
            i.read_struct_begin().expect("args");
            loop {
                let f = i.read_field_begin().expect("field");
                match (f.field_type, f.id) {
                    (TType::Stop, _) => break,
                    (TType::I64, Some(1)) => id = i.read_i64().expect("id"),
                    (t, _) => i.skip(t).expect("skip"),
                }
            }
            i.read_message_end().expect("end");
            let (lock, cv) = &*gate;
            let mut state = lock.lock().expect("lock");
            state.0 += 1;
            let arrival = state.0;
            cv.notify_all();
            let (mut state, _) = cv
                .wait_timeout_while(state, wait, |(seen, opened)| *seen < n && opened.is_none())
                .expect("wait");
            let seen = match state.1 {
                Some(opened) if arrival <= opened => opened,
                Some(_) => arrival,
                None => {
                    state.1 = Some(state.0);
                    state.0
                }
            };
            cv.notify_all();
            drop(state);
            // The first arrival answers last.
            std::thread::sleep(Duration::from_millis(50 * (n - arrival.min(n)) as u64));
            let reply = TMessageIdentifier::new(&m.name, TMessageType::Reply, m.sequence_number);
            o.write_message_begin(&reply).expect("reply");
            o.write_struct_begin(&TStructIdentifier::new("r"))
                .expect("r");
            o.write_field_begin(&TFieldIdentifier::new("success", TType::String, 0))
                .expect("f");
            o.write_string(&format!("{id}:{seen}")).expect("s");
            o.write_field_end().expect("f");
            o.write_field_stop().expect("stop");
            o.write_struct_end().expect("r");
            o.write_message_end().expect("end");
            o.flush().expect("flush");
        }
    })
}

/// Pipelines `ids` as getUser calls on one connection, then reads every reply in
/// order.
fn pipeline(addr: SocketAddr, ids: &[i64]) -> Vec<String> {
    let mut c = Client::connect(addr, Protocol::Binary, Transport::Framed, None);
    for id in ids {
        c.send(
            "getUser",
            TMessageType::Call,
            Some((TType::I64, &id.to_string())),
        );
    }
    (1..=ids.len())
        .map(|n| {
            c.seq = n as i32;
            format!("{:?}", c.receive())
        })
        .collect()
}

/// A listener `t` with `max_concurrent_calls: max` routing every call to `origin`.
fn gate_proxy(max: usize, origin: SocketAddr) -> Proxy {
    Proxy::start(&one_listener(
        &format!(
            "
      max_concurrent_calls: {max}
      routes:
        - route: {{ cluster: gate }}
"
        ),
        &format!("  - {{ name: gate, endpoints: [\"{origin}\"] }}\n"),
    ))
}

/// With `max_concurrent_calls: 4` three pipelined calls reach the origin before it
/// answers the first (which it answers last); the client still gets the replies
/// in request order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_calls_are_forwarded_concurrently_and_answered_in_order() {
    // Forwarded one at a time, the first call would wait out the gate: "1:1".
    let proxy = gate_proxy(4, start_gate_origin(3, Duration::from_secs(8)));
    let addr = proxy.addr("t");
    let got = blocking(move || pipeline(addr, &[1, 2, 3])).await;
    assert_eq!(
        got,
        [
            "Ok(Some(\"1:3\"))",
            "Ok(Some(\"2:3\"))",
            "Ok(Some(\"3:3\"))"
        ]
    );
    stat_eventually(&proxy, &rq_total("t", "other", "success"), 3.0).await;
}

/// The bound holds: with `max_concurrent_calls: 2` the third call is not read
/// (so not forwarded) until one of the first two is answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_concurrent_calls_bounds_the_calls_in_flight() {
    let proxy = gate_proxy(2, start_gate_origin(3, Duration::from_secs(5)));
    let addr = proxy.addr("t");
    let got = blocking(move || pipeline(addr, &[1, 2, 3])).await;
    // The gate gives up after 5s with two calls: both saw only 2. (Long enough
    // for the second call to reach it on a loaded machine.)
    assert_eq!(
        got,
        [
            "Ok(Some(\"1:2\"))",
            "Ok(Some(\"2:2\"))",
            "Ok(Some(\"3:3\"))"
        ]
    );
}

/// With calls forwarded concurrently, bad bytes after a good call still get the
/// good call answered first, then the connection closed and counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_mode_answers_good_calls_before_closing_on_bad_bytes() {
    let a = start_origin("a", Protocol::Binary, Transport::Framed);
    let proxy = Proxy::start(&one_listener(
        "
      max_concurrent_calls: 8
      routes:
        - route: { cluster: a }
",
        &format!("  - {{ name: a, endpoints: [\"{}\"] }}\n", a.addr),
    ));
    let addr = proxy.addr("t");
    // ping(), seq 7, strict binary; then a frame that is no known protocol.
    let message = |message_type: u8| {
        let mut m = vec![0x80, 0x01, 0x00, message_type, 0, 0, 0, 4];
        m.extend_from_slice(b"ping");
        m.extend_from_slice(&[0, 0, 0, 7, 0]);
        frame(&m)
    };
    let mut bytes = message(1);
    bytes.extend_from_slice(&frame(&[0xde, 0xad, 0xbe, 0xef, 0]));
    let got = blocking(move || send_raw(addr, &bytes)).await;
    assert_eq!(got, message(2), "the ping's reply, then the close");
    stat_eventually(
        &proxy,
        "attache_thrift_downstream_decode_error_total{listener=\"t\",reason=\"unknown_protocol\"}",
        1.0,
    )
    .await;
}
