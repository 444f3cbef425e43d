//! Hostile Thrift input through the real binary: a frame whose first bytes can never
//! start a message is refused at once (not after the length it declared arrives),
//! and a call that stalls part-way is closed after `message_timeout`.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use support::thrift_peer::{start_origin, Client, Protocol, Transport};
use support::{blocking, Proxy};

/// Longer than any of these cases may take; the old behaviour waited for the
/// declared frame (an hour of idle timeout).
const WAIT: Duration = Duration::from_secs(15);

fn proxy(thrift_block: &str, origin: SocketAddr) -> Proxy {
    Proxy::start(&support::yaml::thrift_listener(
        &format!(
            "    thrift:
{thrift_block}
      routes:
        - match: {{}}
          route: {{ cluster: a }}"
        ),
        &format!("  - {{ name: a, endpoints: [\"{origin}\"] }}"),
    ))
}

/// Write `bytes`, then read until the proxy closes: (bytes read, time to close).
fn until_closed(addr: SocketAddr, bytes: &[u8]) -> (Vec<u8>, Duration) {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(WAIT)).expect("timeout");
    s.write_all(bytes).expect("write");
    let t = Instant::now();
    let mut got = Vec::new();
    match s.read_to_end(&mut got) {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        Err(e) => panic!("not closed within {WAIT:?}: {e}"),
    }
    (got, t.elapsed())
}

fn decode_errors(reason: &str) -> String {
    format!("attache_thrift_downstream_decode_error_total{{listener=\"t\",reason=\"{reason}\"}}")
}

/// A 1 MiB frame length followed by `head` (and nothing more).
fn big_frame(head: &[u8]) -> Vec<u8> {
    let mut v = (1u32 << 20).to_be_bytes().to_vec();
    v.extend_from_slice(head);
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_that_cannot_start_a_message_are_refused_at_once() {
    let a = start_origin("a", Protocol::Binary, Transport::Framed);
    for transport in ["framed", "auto"] {
        let p = proxy(
            &format!("      transport: {transport}\n      protocol: auto\n"),
            a.addr,
        );
        let addr = p.addr("t");
        let mut cases: Vec<(&str, Vec<u8>, &str)> = vec![
            (
                "binary version 2",
                big_frame(&[0x80, 2, 0, 1]),
                "unknown_protocol",
            ),
            (
                "message type 7",
                big_frame(&[0x80, 1, 0, 7]),
                "unknown_message_type",
            ),
            (
                "message type 0",
                big_frame(&[0x80, 1, 0, 0]),
                "unknown_message_type",
            ),
            (
                "name longer than the frame",
                big_frame(&[0x80, 1, 0, 1, 0x7f, 0xff, 0xff, 0xff]),
                "truncated",
            ),
            (
                "negative name length",
                big_frame(&[0x80, 1, 0, 1, 0xff, 0xff, 0xff, 0xf0]),
                "negative_length",
            ),
            (
                "compact version 2",
                big_frame(&[0x82, 0x22]),
                "unknown_protocol",
            ),
        ];
        // With `transport: auto` these read as the start of an unframed old-style
        // message (no magic after the length), bounded by `message_timeout` instead.
        if transport == "framed" {
            cases.push((
                "unknown protocol byte",
                big_frame(&[0xff, 0xff, 0, 1]),
                "unknown_protocol",
            ));
            cases.push((
                "old-style name longer than the frame",
                big_frame(&[0x10, 0, 0, 0, b'g', b'e', b't']),
                "truncated",
            ));
        }
        let results = blocking(move || {
            cases
                .into_iter()
                .map(|(case, bytes, reason)| (case, until_closed(addr, &bytes), reason))
                .collect::<Vec<_>>()
        })
        .await;
        for (case, (got, took), _) in &results {
            assert!(got.is_empty(), "{transport} {case}: closed without a reply");
            assert!(
                *took < Duration::from_secs(10),
                "{transport} {case}: took {took:?}"
            );
        }
        for reason in ["unknown_protocol", "unknown_message_type", "truncated"] {
            let want = results.iter().filter(|r| r.2 == reason).count() as f64;
            assert_eq!(
                p.stat(&decode_errors(reason)).await,
                want,
                "{transport} {reason}"
            );
        }
        // Frame lengths no message fits in.
        let (got, _) = blocking(move || until_closed(addr, &[0, 0, 0, 3, 0x80, 1, 0])).await;
        assert!(got.is_empty());
        assert_eq!(p.stat(&decode_errors("frame_too_small")).await, 1.0);
        // A good client is still served.
        let good = blocking(move || {
            let mut c = Client::connect(addr, Protocol::Binary, Transport::Framed, None);
            format!("{:?}", c.get_user(7))
        })
        .await;
        assert_eq!(good, "Ok(\"a:7\")");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_partial_call_is_closed_after_message_timeout() {
    let a = start_origin("a", Protocol::Binary, Transport::Framed);
    let p = proxy(
        "      transport: auto\n      message_timeout: 300ms\n      idle_timeout: 1h\n",
        a.addr,
    );
    let addr = p.addr("t");
    // A framed call: valid header, 100 bytes declared, 11 sent.
    let framed = [0, 0, 0, 100, 0x80, 1, 0, 1, 0, 0, 0, 3, b'g', b'e', b't'];
    // An unframed call: valid header, the body never ends.
    let unframed = [
        0x80, 1, 0, 1, 0, 0, 0, 3, b'g', b'e', b't', 0, 0, 0, 1, 8, 0, 1,
    ];
    let (f, u) =
        blocking(move || (until_closed(addr, &framed), until_closed(addr, &unframed))).await;
    for (what, (got, took)) in [("framed", f), ("unframed", u)] {
        assert!(got.is_empty(), "{what}");
        assert!(
            took >= Duration::from_millis(250) && took < Duration::from_secs(10),
            "{what}: closed after {took:?}"
        );
    }
    let name = "attache_thrift_downstream_message_timeout_total{listener=\"t\"}";
    assert_eq!(p.stat(name).await, 2.0);
    // A call sent in pieces that completes in time is served, and the timer starts
    // again for the next call on the same connection.
    let answers = blocking(move || {
        let s = TcpStream::connect(addr).expect("connect");
        s.set_read_timeout(Some(WAIT)).expect("timeout");
        let (i, o) = support::thrift_peer::protocols(&s, Protocol::Binary, Transport::Framed);
        let mut c = Client::over(i, o, None);
        let first = format!("{:?}", c.get_user(1));
        std::thread::sleep(Duration::from_millis(400));
        let second = format!("{:?}", c.get_user(2));
        (first, second)
    })
    .await;
    assert_eq!(answers, ("Ok(\"a:1\")".into(), "Ok(\"a:2\")".into()));
}
