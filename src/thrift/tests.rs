//! Proxy tests with real Thrift peers: the test kit's origins and clients on the
//! Apache `thrift` crate (`attache_testkit::thrift_peer`, which documents the test
//! service), `serve_connection` on a tokio listener, everything on 127.0.0.1:0.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use attache_filters::Stats;
use attache_testkit::blocking;
use attache_testkit::thrift_peer::{start_origin, Client, Protocol, Transport, IO_TIMEOUT};
use thrift::protocol::{TBinaryInputProtocol, TInputProtocol, TMessageType, TType};
use thrift::transport::TFramedReadTransport;
use thrift::ApplicationErrorKind;

use super::codec;
use super::{serve_connection, ListenerCtx};

// ---- the proxy under test --------------------------------------------------------

/// The clusters a test proxy routes to: real [`crate::upstream::Cluster`]s (round
/// robin) over fixed addresses, with the cluster's `thrift.transport` when given.
struct TestUpstreams(Vec<(String, Vec<SocketAddr>, Option<Transport>)>);

impl TestUpstreams {
    fn new(clusters: &[(&str, Vec<SocketAddr>, Option<Transport>)]) -> TestUpstreams {
        TestUpstreams(
            clusters
                .iter()
                .map(|(n, a, t)| ((*n).to_owned(), a.clone(), *t))
                .collect(),
        )
    }

    fn build(&self, stats: &Stats) -> super::Clusters {
        let mut map = HashMap::new();
        for (name, addrs, transport) in &self.0 {
            let transport = match transport {
                None => "",
                Some(Transport::Framed) => ", thrift: { transport: framed }",
                Some(Transport::Unframed) => ", thrift: { transport: unframed }",
            };
            let yaml = format!("{{ name: {name}, endpoints: []{transport} }}");
            let specs = addrs
                .iter()
                .map(|a| crate::config::endpoints::Spec {
                    addr: *a,
                    weight: 1,
                    zone: None,
                })
                .collect();
            let c = crate::config::testing::cluster(&yaml, specs, stats);
            map.insert(name.clone(), c);
        }
        Arc::new(map)
    }
}

struct Proxy {
    addr: SocketAddr,
    stats: Arc<Stats>,
}

impl Proxy {
    /// `attache_thrift_rq_total{listener="t",method,outcome}`.
    fn count(&self, method: &str, outcome: &str) -> u64 {
        self.metric(
            "attache_thrift_rq_total",
            &[("method", method), ("outcome", outcome)],
        )
    }

    fn metric(&self, name: &str, labels: &[(&str, &str)]) -> u64 {
        let mut total = 0;
        for fam in self.stats.registry().gather() {
            if fam.name() != name {
                continue;
            }
            for m in fam.get_metric() {
                let has = |k: &str, v: &str| {
                    m.get_label()
                        .iter()
                        .any(|l| l.name() == k && l.value() == v)
                };
                if labels.iter().all(|(k, v)| has(k, v)) {
                    total += m.get_counter().get_value() as u64;
                    total += m.get_histogram().get_sample_count();
                }
            }
        }
        total
    }
}

async fn start_proxy(yaml: &str, upstreams: TestUpstreams) -> Proxy {
    let settings = crate::config::testing::thrift_listener(yaml).expect("config compiles");
    let stats = Arc::new(Stats::new());
    let clusters = upstreams.build(&stats);
    let ctx = ListenerCtx::new("t", settings, &stats, clusters);
    let ctx = Arc::new(ctx);
    let addr = attache_testkit::serve_each(move |s| {
        let peer = s
            .peer_addr()
            .unwrap_or_else(|e| panic!("peer address: {e}"));
        serve_connection(s, peer, ctx.clone())
    })
    .await;
    Proxy { addr, stats }
}

const BY_METHOD: &str = "
transport: auto
protocol: auto
routes:
  - match: { method: getUser }
    route: { cluster: a }
  - match: { method_prefix: find }
    route: { cluster: b }
  - match: { method: ping }
    route: { cluster: a }
  - match: { method: log }
    route: { cluster: a }
";

// ---- tests -----------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_by_method_in_every_protocol_and_framing_with_translation() {
    for protocol in [Protocol::Binary, Protocol::Compact] {
        for upstream in [Transport::Framed, Transport::Unframed] {
            let a = start_origin("a", protocol, upstream);
            let b = start_origin("b", protocol, upstream);
            let ups = TestUpstreams::new(&[
                ("a", vec![a.addr], Some(upstream)),
                ("b", vec![b.addr], Some(upstream)),
            ]);
            let proxy = start_proxy(BY_METHOD, ups).await;
            for downstream in [Transport::Framed, Transport::Unframed] {
                let addr = proxy.addr;
                let case = format!("{protocol:?} client {downstream:?} -> upstream {upstream:?}");
                let got = blocking(move || {
                    let mut c = Client::connect(addr, protocol, downstream, None);
                    let r = (c.get_user(7), c.call_named("findUser", 8), c.ping());
                    (format!("{:?}", r.0), format!("{:?}", r.1), r.2.is_ok())
                })
                .await;
                assert_eq!(
                    got,
                    ("Ok(\"a:7\")".into(), "Ok(\"b:8\")".into(), true),
                    "{case}"
                );
            }
            assert_eq!(proxy.count("getUser", "success"), 2);
            assert_eq!(
                proxy.count("other", "success"),
                2,
                "findUser is not a configured method"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multiplexed_clients_are_routed_by_service() {
    let a = start_origin("a", Protocol::Binary, Transport::Framed);
    let b = start_origin("b", Protocol::Binary, Transport::Framed);
    let ups = TestUpstreams::new(&[("a", vec![a.addr], None), ("b", vec![b.addr], None)]);
    let yaml = "
routes:
  - match: { service: Users }
    route: { cluster: a }
  - match: { service: Admin, method: getUser }
    route: { cluster: b }
";
    let proxy = start_proxy(yaml, ups).await;
    let addr = proxy.addr;
    let got = blocking(move || {
        let (bin, fr) = (Protocol::Binary, Transport::Framed);
        let users = Client::connect(addr, bin, fr, Some("Users")).get_user(1);
        let admin = Client::connect(addr, bin, fr, Some("Admin")).get_user(2);
        let plain = Client::connect(addr, bin, fr, None).get_user(3);
        format!("{users:?} {admin:?} {plain:?}")
    })
    .await;
    assert_eq!(got, "Ok(\"a:1\") Ok(\"b:2\") Err(App(UnknownMethod))");
    // `getUser` is a configured method name, so both services count under it.
    assert_eq!(proxy.count("getUser", "success"), 2);
    assert_eq!(proxy.count("getUser", "local_error"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_calls_are_answered_in_order() {
    for protocol in [Protocol::Binary, Protocol::Compact] {
        let a = start_origin("a", protocol, Transport::Unframed);
        let ups = TestUpstreams::new(&[("a", vec![a.addr], Some(Transport::Unframed))]);
        let proxy = start_proxy(BY_METHOD, ups).await;
        let addr = proxy.addr;
        let got = blocking(move || {
            // Write five calls back to back (the slow one first), then read.
            let mut c = Client::connect(addr, protocol, Transport::Framed, None);
            let ids = [950, 1, 2, 3, 4];
            for id in ids {
                c.send(
                    "getUser",
                    TMessageType::Call,
                    Some((TType::I64, &id.to_string())),
                );
            }
            let mut replies = Vec::new();
            for (n, _) in ids.iter().enumerate() {
                c.seq = n as i32 + 1;
                replies.push(format!("{:?}", c.receive()));
            }
            replies
        })
        .await;
        let want: Vec<String> = [950, 1, 2, 3, 4]
            .iter()
            .map(|id| format!("Ok(Some(\"a:{id}\"))"))
            .collect();
        assert_eq!(got, want, "{protocol:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oneway_calls_are_forwarded_and_get_no_reply() {
    let a = start_origin("a", Protocol::Compact, Transport::Framed);
    let ups = TestUpstreams::new(&[("a", vec![a.addr], None)]);
    let proxy = start_proxy(BY_METHOD, ups).await;
    let addr = proxy.addr;
    let pinged = blocking(move || {
        let mut c = Client::connect(addr, Protocol::Compact, Transport::Framed, None);
        c.log("hello");
        c.log("again");
        // The next reply read is ping's, so no reply was sent for the oneways.
        c.ping().is_ok()
    })
    .await;
    assert!(pinged);
    let logs = tokio::task::spawn_blocking(move || {
        let first = a.logs.recv_timeout(IO_TIMEOUT);
        let second = a.logs.recv_timeout(IO_TIMEOUT);
        (first, second)
    })
    .await
    .expect("join");
    assert_eq!(logs, (Ok("hello".to_owned()), Ok("again".to_owned())));
    assert_eq!(proxy.count("log", "success"), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outcomes_are_counted_success_error_exception_and_local_error() {
    let a = start_origin("a", Protocol::Binary, Transport::Unframed);
    let ups = TestUpstreams::new(&[("a", vec![a.addr], None)]);
    let proxy = start_proxy(BY_METHOD, ups).await;
    let addr = proxy.addr;
    let got = blocking(move || {
        let mut c = Client::connect(addr, Protocol::Binary, Transport::Unframed, None);
        let r = [
            format!("{:?}", c.get_user(5)),
            format!("{:?}", c.get_user(0)),
            format!("{:?}", c.get_user(-1)),
            format!("{:?}", c.call_named("deleteUser", 1)),
            format!("{:?}", c.ping()),
        ];
        r
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
    assert_eq!(proxy.count("getUser", "success"), 1);
    assert_eq!(proxy.count("getUser", "error"), 1);
    assert_eq!(proxy.count("getUser", "exception"), 1);
    assert_eq!(proxy.count("other", "local_error"), 1);
    assert_eq!(proxy.count("ping", "success"), 1);
    let durations = proxy.metric(
        "attache_thrift_rq_duration_seconds",
        &[("method", "getUser")],
    );
    assert_eq!(durations, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_down_answers_internal_error_without_hanging() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let dead = closed.local_addr().expect("addr");
    drop(closed);
    let ups = TestUpstreams::new(&[("a", vec![dead], None), ("b", vec![], None)]);
    let proxy = start_proxy(BY_METHOD, ups).await;
    let addr = proxy.addr;
    let started = Instant::now();
    let got = blocking(move || {
        let mut c = Client::connect(addr, Protocol::Binary, Transport::Framed, None);
        // Connect refused, then no endpoint at all.
        format!("{:?} {:?}", c.get_user(1), c.call_named("findUser", 1))
    })
    .await;
    assert_eq!(got, "Err(App(InternalError)) Err(App(InternalError))");
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(proxy.count("getUser", "local_error"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_timeout_answers_internal_error_and_the_connection_goes_on() {
    let a = start_origin("a", Protocol::Compact, Transport::Unframed);
    let ups = TestUpstreams::new(&[("a", vec![a.addr], Some(Transport::Unframed))]);
    let yaml = "
protocol: compact
routes:
  - match: {}
    route: { cluster: a, timeout: 300ms }
";
    let proxy = start_proxy(yaml, ups).await;
    let addr = proxy.addr;
    let (slow, elapsed, next) = blocking(move || {
        let mut c = Client::connect(addr, Protocol::Compact, Transport::Framed, None);
        let t = Instant::now();
        let slow = format!("{:?}", c.get_user(999));
        (slow, t.elapsed(), format!("{:?}", c.get_user(2)))
    })
    .await;
    assert_eq!(slow, "Err(App(InternalError))");
    assert!(
        elapsed < Duration::from_millis(1400),
        "answered after {elapsed:?}"
    );
    assert_eq!(next, "Ok(\"a:2\")");
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_closes_the_connection_and_the_proxy_keeps_serving() {
    let a = start_origin("a", Protocol::Binary, Transport::Framed);
    let ups = TestUpstreams::new(&[("a", vec![a.addr], None)]);
    let yaml = "
transport: framed
protocol: binary
max_message_size: 1024
routes:
  - match: {}
    route: { cluster: a }
";
    let proxy = start_proxy(yaml, ups).await;
    let addr = proxy.addr;
    let results = blocking(move || {
        let mut deep = vec![0x80, 1, 0, 1, 0, 0, 0, 7];
        deep.extend_from_slice(b"getUser");
        deep.extend_from_slice(&42i32.to_be_bytes());
        deep.extend_from_slice(&[15, 0, 1]);
        for _ in 0..70 {
            deep.extend_from_slice(&[15, 0, 0, 0, 1]);
        }
        deep.extend_from_slice(&[8, 0, 0, 0, 0, 0]);
        let mut framed_deep = (deep.len() as u32).to_be_bytes().to_vec();
        framed_deep.extend_from_slice(&deep);
        let frame = |payload: &[u8]| {
            let mut v = (payload.len() as u32).to_be_bytes().to_vec();
            v.extend_from_slice(payload);
            v
        };
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
            ("truncated then closed", vec![0, 0, 0, 20, 0x80, 1, 0, 1]),
        ];
        let mut out = Vec::new();
        for (case, bytes) in cases {
            let reply = if case == "truncated then closed" {
                let mut s = TcpStream::connect(addr).expect("connect");
                s.write_all(&bytes).expect("write");
                drop(s);
                Vec::new()
            } else {
                send_raw(addr, &bytes)
            };
            out.push((case, reply.is_empty()));
        }
        // The header decodes, the body does not: an exception with the caller's
        // seq id, then the connection is closed.
        let reply = send_raw(addr, &framed_deep);
        let mut p = TBinaryInputProtocol::new(TFramedReadTransport::new(&reply[..]), true);
        let m = p.read_message_begin().expect("an exception reply");
        let e = thrift::Error::read_application_error_from_in_protocol(&mut p).expect("app error");
        let deep_reply = (m.name, m.sequence_number, e.kind);
        // And a well-behaved client is still served.
        let mut c = Client::connect(addr, Protocol::Binary, Transport::Framed, None);
        (out, deep_reply, format!("{:?}", c.get_user(3)))
    })
    .await;
    let (closed, deep_reply, good) = results;
    for (case, empty) in closed {
        assert!(empty, "{case}: no reply expected");
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
        proxy.metric(
            "attache_thrift_downstream_decode_error_total",
            &[("reason", reason)],
        )
    };
    assert_eq!(
        errors("frame_too_large"),
        2,
        "garbage reads as a huge frame"
    );
    assert_eq!(errors("negative_length"), 1);
    assert_eq!(errors("unknown_protocol"), 1);
    assert_eq!(errors("invalid_name"), 1);
    assert_eq!(errors("depth_exceeded"), 1);
    // The truncated connection is counted once the proxy sees the close.
    let deadline = Instant::now() + IO_TIMEOUT;
    while errors("truncated") == 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(errors("truncated"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_concurrent_clients_each_get_their_own_replies() {
    let a = start_origin("a", Protocol::Binary, Transport::Framed);
    let b = start_origin("b", Protocol::Binary, Transport::Framed);
    let ups = TestUpstreams::new(&[("a", vec![a.addr, b.addr], Some(Transport::Framed))]);
    let yaml = "
transport: auto
routes:
  - match: {}
    route: { cluster: a }
";
    let proxy = start_proxy(yaml, ups).await;
    let addr = proxy.addr;
    let failures = blocking(move || {
        std::thread::scope(|scope| {
            let handles: Vec<_> = (0..200)
                .map(|client| {
                    scope.spawn(move || {
                        let (p, t) = if client % 2 == 0 {
                            (Protocol::Binary, Transport::Framed)
                        } else {
                            (Protocol::Binary, Transport::Unframed)
                        };
                        let mut c = Client::connect(addr, p, t, None);
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
    assert_eq!(proxy.count("other", "success"), 1000);
}

#[test]
fn config_errors_are_reported_with_paths() {
    let yaml = "
max_message_size: 0
routes:
  - match: { method: '' }
    route: { cluster: a }
  - match: {}
    route: {}
  - match: { service: 'A:b' }
    route: { weighted_clusters: [{ cluster: a, weight: 0 }] }
";
    let errors = crate::config::testing::thrift_listener(yaml).expect_err("invalid");
    let paths: Vec<&str> = errors.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "thrift.max_message_size",
            "thrift.routes.0.match.method",
            "thrift.routes.1.route",
            "thrift.routes.2.match.service",
            "thrift.routes.2.match",
            "thrift.routes.2.route.weighted_clusters",
        ]
    );
}

#[test]
fn header_matches_read_theader_info_headers() {
    use super::codec::{encode_frame, FrameInfo, MessageType, Pair};
    let yaml = "
transport: header
routes:
  - name: blue
    match: { headers: [{ name: X-Tenant, exact: blue }] }
    route: { cluster: blue }
  - name: blob
    match: { headers: [{ name: blob, present: true }, { name: x-skip, present: false }] }
    route: { cluster: blob }
  - name: not_g
    match: { headers: [{ name: x-tenant, prefix: g, invert: true }] }
    route: { cluster: not_g }
  - name: rest
    route: { cluster: rest }
";
    let routes = crate::config::testing::thrift_listener(yaml)
        .expect("valid")
        .routes;
    // An exception message is as good a payload as a call for routing.
    let mut payload = bytes::BytesMut::new();
    let unframed = super::codec::Framing {
        transport: super::codec::Transport::Unframed,
        protocol: super::codec::Protocol::Binary,
    };
    let kind = super::codec::AppExceptionKind::Unknown;
    super::codec::encode_app_exception(&mut payload, unframed, "m", 1, kind, "");
    let route = |pairs: &[Pair<'_>]| {
        let frame = FrameInfo::default();
        let mut buf = encode_frame(frame, super::codec::Protocol::Binary, pairs, &payload);
        let mut d = super::codec::Decoder::new(routes.decoder_config());
        let msg = d.decode(&mut buf).expect("ok").expect("msg");
        assert_eq!(msg.header().message_type, MessageType::Exception);
        routes.route(&msg).map(|r| r.name.clone())
    };
    let cases: [(&[Pair<'_>], &str); 5] = [
        // Names compare case-insensitively; the last of a repeated name counts.
        (&[(b"x-tenant", b"green"), (b"X-TENANT", b"blue")], "blue"),
        (&[(b"x-tenant", b"blue"), (b"x-tenant", b"green")], "rest"),
        // A value that is not UTF-8 is present, and matches nothing else.
        (&[(b"blob", b"\xff\xfe")], "blob"),
        (&[(b"blob", b"\xff"), (b"x-skip", b"1")], "not_g"),
        // No headers: `present: true` and value matches fail, inverted ones hold.
        (&[], "not_g"),
    ];
    for (pairs, want) in cases {
        assert_eq!(route(pairs).as_deref(), Some(want), "{pairs:?}");
    }
}

#[test]
fn weighted_clusters_follow_weights() {
    let yaml = "
routes:
  - route: { weighted_clusters: [{ cluster: a, weight: 90 }, { cluster: b, weight: 10 }] }
";
    let routes = crate::config::testing::thrift_listener(yaml)
        .expect("valid")
        .routes;
    assert_eq!(routes.clusters().len(), 2);
    let mut buf = bytes::BytesMut::new();
    let framing = super::codec::Framing {
        transport: codec::Transport::Framed,
        protocol: codec::Protocol::Binary,
    };
    super::codec::encode_app_exception(
        &mut buf,
        framing,
        "m",
        1,
        super::codec::AppExceptionKind::Unknown,
        "",
    );
    let mut d = super::codec::Decoder::new(routes.decoder_config());
    let msg = d.decode(&mut buf).expect("ok").expect("msg");
    let route = routes.route(&msg).expect("catch-all");
    let a = (0..10_000).filter(|_| route.cluster() == "a").count();
    assert!((8_500..9_500).contains(&a), "a chosen {a} times in 10000");
}
