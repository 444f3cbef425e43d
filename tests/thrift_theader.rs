//! THeader through the real binary, against the reference implementation: the
//! Apache `thrift` Python package's THeaderTransport/THeaderProtocol as client and
//! server (tests/support/theader_peer.py), and the Rust `thrift` crate for framed
//! peers. Routing on info headers, headers passed through both ways, translation to
//! and from framed clusters, RBAC, transforms refused, hostile frames counted.
//!
//! Needs `python3` with the `thrift` package (`pip install thrift==0.22.0`); the
//! tests skip, saying so, when it is missing.

mod support;

use std::time::Duration;

use serde_json::Value;
use support::theader_py::{py_client, python_thrift, PyServer};
use support::thrift_peer::{Client, Protocol, Transport};
use support::yaml::thrift_listener;
use support::{blocking, Proxy};

const DEADLINE: Duration = Duration::from_secs(30);

fn rq_total(method: &str, outcome: &str) -> String {
    format!("attache_thrift_rq_total{{listener=\"t\",method=\"{method}\",outcome=\"{outcome}\"}}")
}

fn decode_errors(reason: &str) -> String {
    format!("attache_thrift_downstream_decode_error_total{{listener=\"t\",reason=\"{reason}\"}}")
}

async fn stat_eventually(proxy: &Proxy, name: &str, want: f64) {
    support::eventually(DEADLINE, name, || async {
        (proxy.stat(name).await == want).then_some(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn theader_calls_route_on_info_headers_which_pass_through_both_ways() {
    if !python_thrift() {
        return;
    }
    let blue = PyServer::start("blue", false);
    let green = PyServer::start("green", false);
    let yaml = thrift_listener(
        "    thrift:
      transport: auto
      protocol: auto
      routes:
        - name: blue_tenant
          match: { method: getUser, headers: [{ name: x-tenant, exact: blue }] }
          route: { cluster: blue }
        - name: rest
          route: { cluster: green }",
        &format!(
            "  - {{ name: blue, endpoints: [\"{}\"], thrift: {{ transport: header }} }}
  - {{ name: green, endpoints: [\"{}\"], thrift: {{ transport: header }} }}",
            blue.addr, green.addr
        ),
    );
    let proxy = Proxy::start(&yaml);
    let addr = proxy.addr("t");
    for compact in [false, true] {
        let mut args = vec![
            "--header",
            "x-tenant=blue",
            "--header",
            "X-Other=1",
            "--calls",
            "2",
        ];
        if compact {
            args.push("--compact");
        }
        let replies = py_client(addr, &args).await;
        assert_eq!(replies.len(), 2, "{replies:?}");
        for (i, r) in replies.iter().enumerate() {
            let res = &r["result"];
            assert_eq!(res["served_by"], "blue", "{r}");
            assert_eq!(res["client_type"], "headers", "{r}");
            // The server saw the client's headers unchanged (name case included).
            assert_eq!(
                res["headers"],
                serde_json::json!({"x-tenant": "blue", "X-Other": "1"}),
                "{r}"
            );
            // The server's reply headers came back; sequence ids are the client's.
            assert_eq!(r["reply_headers"]["x-served-by"], "blue", "{r}");
            assert_eq!(r["reply_headers"]["x-echo-tenant"], "blue", "{r}");
            assert_eq!(r["seqid"], 100 + i, "{r}");
            assert_eq!(r["frame_seqid"], 100 + i, "{r}");
        }
        // Header names match whatever their case; another tenant goes elsewhere.
        let other = py_client(addr, &["--header", "X-TENANT=green"]).await;
        assert_eq!(other[0]["result"]["served_by"], "green", "{other:?}");
        let none = py_client(addr, &[]).await;
        assert_eq!(none[0]["result"]["served_by"], "green", "{none:?}");
        assert_eq!(none[0]["result"]["headers"], serde_json::json!({}));
    }
    stat_eventually(&proxy, &rq_total("getUser", "success"), 8.0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn theader_and_framed_peers_translate_both_ways_and_headers_are_dropped() {
    if !python_thrift() {
        return;
    }
    // THeader client -> framed server; framed client -> THeader server.
    let framed = PyServer::start("framed", true);
    let header = PyServer::start("header", false);
    let yaml = format!(
        "
listeners:
  - name: t
    address: 127.0.0.1:0
    protocol: thrift
    thrift:
      transport: header
      protocol: auto
      routes:
        - route: {{ cluster: framed }}
  - name: f
    address: 127.0.0.1:0
    protocol: thrift
    thrift:
      transport: framed
      routes:
        - route: {{ cluster: header }}
clusters:
  - {{ name: framed, endpoints: [\"{}\"], thrift: {{ transport: framed, protocol: binary }} }}
  - {{ name: header, endpoints: [\"{}\"], thrift: {{ transport: header }} }}
",
        framed.addr, header.addr
    );
    let proxy = Proxy::start(&yaml);
    let replies = py_client(
        proxy.addr("t"),
        &["--header", "x-tenant=blue", "--calls", "2"],
    )
    .await;
    for (i, r) in replies.iter().enumerate() {
        assert_eq!(r["result"]["served_by"], "framed", "{r}");
        assert_eq!(r["result"]["seqid"], 100 + i, "{r}");
        // The reply is a THeader frame echoing the call's sequence id, no headers.
        assert_eq!(r["seqid"], 100 + i, "{r}");
        assert_eq!(r["frame_seqid"], 100 + i, "{r}");
        assert_eq!(r["reply_headers"], serde_json::json!({}), "{r}");
    }
    // A compact THeader client to the binary-only framed server: translated.
    let compact = py_client(proxy.addr("t"), &["--compact"]).await;
    assert_eq!(compact[0]["result"]["served_by"], "framed", "{compact:?}");

    let f = proxy.addr("f");
    let got = blocking(move || {
        let mut c = Client::connect(f, Protocol::Binary, Transport::Framed, None);
        (c.get_user(7), c.get_user(8))
    })
    .await;
    for (res, id) in [(got.0, 7), (got.1, 8)] {
        let v: Value = serde_json::from_str(&res.expect("reply")).expect("json");
        assert_eq!(v["served_by"], "header");
        assert_eq!(v["client_type"], "headers", "the server got THeader frames");
        assert_eq!(v["headers"], serde_json::json!({}));
        assert_eq!(v["id"], id);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rbac_denies_theader_calls_with_an_exception_in_their_frame() {
    if !python_thrift() {
        return;
    }
    let up = PyServer::start("up", false);
    let yaml = thrift_listener(
        "    rbac:
      action: deny
      policies:
        - name: no_deletes
          permissions: [{ method: deleteUser }]
    thrift:
      transport: header
      routes:
        - match: { method: getUser }
          route: { cluster: up }",
        &format!(
            "  - {{ name: up, endpoints: [\"{}\"], thrift: {{ transport: header }} }}",
            up.addr
        ),
    );
    let proxy = Proxy::start(&yaml);
    let addr = proxy.addr("t");
    let ok = py_client(addr, &["--header", "x-tenant=blue"]).await;
    assert_eq!(ok[0]["result"]["served_by"], "up", "{ok:?}");
    // Denied: answered by the proxy (UNKNOWN, saying why) in a THeader frame that
    // echoes the call's; the connection stays open for the next call.
    let denied = py_client(addr, &["--method", "deleteUser", "--calls", "2"]).await;
    assert_eq!(denied.len(), 2, "{denied:?}");
    for (i, r) in denied.iter().enumerate() {
        assert_eq!(r["exception"]["type"], 0, "{r}");
        assert!(
            r["exception"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("rbac")),
            "{r}"
        );
        assert_eq!(r["frame_seqid"], 100 + i, "{r}");
        assert_eq!(r["reply_headers"], serde_json::json!({}), "{r}");
    }
    stat_eventually(&proxy, &rq_total("getUser", "success"), 1.0).await;
    stat_eventually(&proxy, &rq_total("other", "local_error"), 2.0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compressed_theader_frames_are_refused_with_invalid_transform_and_counted() {
    if !python_thrift() {
        return;
    }
    let up = PyServer::start("up", false);
    let yaml = thrift_listener(
        "    thrift:
      transport: auto
      routes:
        - route: { cluster: up }",
        &format!(
            "  - {{ name: up, endpoints: [\"{}\"], thrift: {{ transport: header }} }}",
            up.addr
        ),
    );
    let proxy = Proxy::start(&yaml);
    let replies = py_client(proxy.addr("t"), &["--zlib", "--calls", "2"]).await;
    // INVALID_TRANSFORM (8), echoing the frame's sequence id; then closed.
    assert_eq!(replies[0]["exception"]["type"], 8, "{replies:?}");
    assert_eq!(replies[0]["frame_seqid"], 100, "{replies:?}");
    assert!(replies[1].get("closed").is_some(), "{replies:?}");
    stat_eventually(&proxy, &decode_errors("unsupported_transform"), 1.0).await;
}

/// A frame with `size` header words around `header` and a one-call payload.
fn raw_frame(size: u16, header: &[u8]) -> Vec<u8> {
    // getUser, call, seq 1, empty args: strict binary.
    let mut payload = 0x8001_0001u32.to_be_bytes().to_vec();
    payload.extend_from_slice(&7u32.to_be_bytes());
    payload.extend_from_slice(b"getUser");
    payload.extend_from_slice(&1u32.to_be_bytes());
    payload.push(0);
    let mut f = vec![0x0f, 0xff, 0, 0, 0, 0, 0, 1];
    f.extend_from_slice(&size.to_be_bytes());
    f.extend_from_slice(header);
    f.extend_from_slice(&payload);
    let mut out = (f.len() as u32).to_be_bytes().to_vec();
    out.extend_from_slice(&f);
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_theader_frames_close_the_connection_and_are_counted_by_reason() {
    // An origin that only counts connections: nothing may reach it.
    let reached = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let seen = reached.clone();
    let origin_addr = support::serve_each_blocking("127.0.0.1:0", move |_| {
        seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    });
    let yaml = thrift_listener(
        "    thrift:
      transport: auto
      routes:
        - route: { cluster: a }",
        &format!(
            "  - {{ name: a, endpoints: [\"{}\"], thrift: {{ transport: framed }} }}",
            origin_addr
        ),
    );
    let proxy = Proxy::start(&yaml);
    let addr = proxy.addr("t");
    let cases: [(&str, Vec<u8>); 5] = [
        ("invalid_header", raw_frame(300, &[0, 0, 0, 0])),
        (
            "invalid_varint",
            raw_frame(2, &[0x80, 0x80, 0x80, 0x80, 0x80, 1, 0, 0]),
        ),
        ("unknown_protocol", raw_frame(1, &[1, 0, 0, 0])),
        (
            "invalid_header",
            raw_frame(2, &[0, 0, 1, 1, 90, b'k', 0, 0]),
        ),
        (
            "invalid_header",
            raw_frame(2, &[0, 0, 1, 0xff, 0xff, 0xff, 0xff, 0x0f]),
        ),
    ];
    for (reason, bytes) in &cases {
        // Closed without a reply: the message could not be read.
        let got = support::raw_exchange(addr, bytes, DEADLINE).await;
        assert_eq!(got, "", "{reason}");
    }
    stat_eventually(&proxy, &decode_errors("invalid_header"), 3.0).await;
    stat_eventually(&proxy, &decode_errors("invalid_varint"), 1.0).await;
    stat_eventually(&proxy, &decode_errors("unknown_protocol"), 1.0).await;
    assert_eq!(
        reached.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "nothing reached the origin"
    );
}

#[test]
fn header_matches_need_a_listener_that_can_receive_theader() {
    let yaml = "
listeners:
  - name: t
    address: 127.0.0.1:0
    protocol: thrift
    thrift:
      transport: framed
      routes:
        - match: { headers: [{ name: x-tenant, exact: blue, prefix: b }] }
          route: { cluster: a }
        - match: { headers: [{ name: x-tenant, regex: \"(\" }] }
          route: { cluster: a }
clusters:
  - { name: a, endpoints: [\"127.0.0.1:1\"], thrift: { transport: header } }
";
    let (code, out, path) = support::validate("theader", yaml);
    assert_eq!(code, 1, "{out}");
    let file = path.display().to_string();
    assert!(
        out.contains(&format!("{file}:9:")) && out.contains("only THeader calls carry headers"),
        "{out}"
    );
    assert!(out.contains("give exactly one of"), "{out}");
    assert!(out.contains("invalid regex"), "{out}");
}
