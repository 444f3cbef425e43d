//! Thrift route `retries:` through the real binary: an upstream that drops calls,
//! one that is down, and one that raises `TApplicationException`s; the client is
//! the Apache `thrift` crate.

mod support;

use std::io::Read;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use support::thrift_peer::{start_origin, Client, Protocol, Transport};
use support::{blocking, dead_port, eventually, Proxy};

/// An upstream that reads the first bytes of a call and closes the connection
/// without replying. Counts the calls it dropped.
struct Dropper {
    addr: SocketAddr,
    dropped: Arc<AtomicUsize>,
}

fn start_dropper() -> Dropper {
    let dropped = Arc::new(AtomicUsize::new(0));
    let seen = dropped.clone();
    let addr = support::serve_each_blocking("127.0.0.1:0", move |mut s| {
        let mut buf = [0u8; 64 * 1024];
        if matches!(s.read(&mut buf), Ok(n) if n > 0) {
            seen.fetch_add(1, Ordering::SeqCst);
        }
    });
    Dropper { addr, dropped }
}

fn proxy(retries: &str, endpoints: &[SocketAddr]) -> Proxy {
    proxy_with(retries, endpoints, "")
}

/// As [`proxy`], with `cluster_keys` added to the cluster (`, key: value`).
fn proxy_with(retries: &str, endpoints: &[SocketAddr], cluster_keys: &str) -> Proxy {
    let eps: Vec<String> = endpoints.iter().map(|a| format!("\"{a}\"")).collect();
    Proxy::start(&support::yaml::thrift_listener(
        &format!(
            "    thrift:
      routes:
        - name: users
          route:
            cluster: users
            retries: {retries}"
        ),
        &format!(
            "  - {{ name: users, endpoints: [{}], connect_timeout: 500ms{cluster_keys} }}",
            eps.join(", ")
        ),
    ))
}

/// Run `f` with a framed binary client of listener `t`, off the runtime.
async fn with_client<T: Send + 'static>(
    proxy: &Proxy,
    f: impl FnOnce(&mut Client) -> T + Send + 'static,
) -> T {
    let addr = proxy.addr("t");
    blocking(move || {
        f(&mut Client::connect(
            addr,
            Protocol::Binary,
            Transport::Framed,
            None,
        ))
    })
    .await
}

fn retry_total(route: &str) -> String {
    format!("attache_thrift_rq_retry_total{{listener=\"t\",route=\"{route}\"}}")
}

fn connect_fail() -> &'static str {
    "attache_upstream_cx_connect_fail_total{cluster=\"users\"}"
}

/// Wait until a stat reaches `want` (counters are bumped after the reply is sent).
async fn stat_eventually(proxy: &Proxy, name: &str, want: f64) {
    eventually(Duration::from_secs(20), name, || async {
        (proxy.stat(name).await == want).then_some(())
    })
    .await
}

/// Two calls, round robin over [dropper, origin]: the one whose first try lands on
/// the dropper is retried on the origin, so both succeed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_call_is_retried_on_the_other_endpoint_and_succeeds() {
    let dropper = start_dropper();
    let origin = start_origin("ok", Protocol::Binary, Transport::Framed);
    let proxy = proxy(
        "{ attempts: 1, retry_on: [reset], methods: [getUser] }",
        &[dropper.addr, origin.addr],
    );
    let got = with_client(&proxy, |c| {
        format!("{:?} {:?}", c.get_user(1), c.get_user(2))
    })
    .await;
    assert_eq!(got, "Ok(\"ok:1\") Ok(\"ok:2\")");
    // Round robin sends at least one first try to the dropper; every call it
    // dropped was retried once, on the origin.
    let dropped = dropper.dropped.load(Ordering::SeqCst);
    assert!(dropped >= 1, "the dropper saw no call");
    stat_eventually(&proxy, &retry_total("users"), dropped as f64).await;
    // The cluster's retry counter, shared with HTTP routes.
    assert_eq!(
        proxy
            .stat("attache_upstream_rq_retry_total{cluster=\"users\"}")
            .await,
        dropped as f64
    );
}

/// A method not in `methods` is not retried: the client sees the failure and the
/// upstream saw the call once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_method_not_listed_is_not_retried() {
    let dropper = start_dropper();
    let proxy = proxy(
        "{ attempts: 3, retry_on: [reset], methods: [getUser] }",
        &[dropper.addr],
    );
    let got = with_client(&proxy, |c| format!("{:?}", c.call_named("findUser", 1))).await;
    assert_eq!(got, "Err(App(InternalError))");
    assert_eq!(dropper.dropped.load(Ordering::SeqCst), 1);
    assert_eq!(proxy.stat(&retry_total("users")).await, 0.0);
}

/// Retries are bounded by `attempts`: 1 try + 2 retries, then the failure.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attempts_bound_the_retries() {
    let dropper = start_dropper();
    let proxy = proxy(
        "{ attempts: 2, retry_on: [reset], methods: [getUser] }",
        &[dropper.addr],
    );
    let got = with_client(&proxy, |c| format!("{:?}", c.get_user(1))).await;
    assert_eq!(got, "Err(App(InternalError))");
    assert_eq!(dropper.dropped.load(Ordering::SeqCst), 3);
    stat_eventually(&proxy, &retry_total("users"), 2.0).await;
}

/// The cluster's `max_retries` breaker bounds Thrift retries as it does HTTP's: a
/// retry over it is not attempted, and counted as an overflow.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_max_retries_breaker_bounds_retries() {
    let dropper = start_dropper();
    let proxy = proxy_with(
        "{ attempts: 2, retry_on: [reset], methods: [getUser] }",
        &[dropper.addr],
        ", circuit_breakers: { max_retries: 0 }",
    );
    let got = with_client(&proxy, |c| format!("{:?}", c.get_user(1))).await;
    assert_eq!(got, "Err(App(InternalError))");
    assert_eq!(dropper.dropped.load(Ordering::SeqCst), 1);
    stat_eventually(
        &proxy,
        "attache_upstream_rq_overflow_total{breaker=\"max_retries\",cluster=\"users\"}",
        1.0,
    )
    .await;
    assert_eq!(proxy.stat(&retry_total("users")).await, 0.0);
}

/// A oneway call is never retried, even when its method is listed; a two-way call
/// of the same route is (connect failures against a down endpoint).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oneway_calls_are_never_retried() {
    let proxy = proxy(
        "{ attempts: 2, retry_on: [connect-failure], methods: [log, getUser] }",
        &[dead_port()],
    );
    with_client(&proxy, |c| {
        c.log("hello");
        // A call on the same connection runs after the oneway one is done.
        assert_eq!(format!("{:?}", c.get_user(1)), "Err(App(InternalError))");
    })
    .await;
    // 1 connect for the oneway call, 3 for getUser.
    stat_eventually(&proxy, connect_fail(), 4.0).await;
    assert_eq!(proxy.stat(&retry_total("users")).await, 2.0);
}

/// `exception` retries a `TApplicationException` reply; a declared IDL exception
/// is the method's result and goes back to the client at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exception_retries_application_exceptions_not_idl_exceptions() {
    let origin = start_origin("ok", Protocol::Binary, Transport::Framed);
    let proxy = proxy(
        "{ attempts: 2, retry_on: [exception], methods: [getUser] }",
        &[origin.addr],
    );
    let got = with_client(&proxy, |c| {
        format!("{:?} {:?}", c.get_user(0), c.get_user(-1))
    })
    .await;
    // The upstream's own exception reaches the client after the last try.
    assert_eq!(got, "Err(NotFound) Err(App(InternalError))");
    stat_eventually(&proxy, &retry_total("users"), 2.0).await;
    assert_eq!(
        proxy
            .stat("attache_thrift_rq_total{listener=\"t\",method=\"other\",outcome=\"exception\"}")
            .await,
        1.0
    );
}

/// `timeout` with `per_try_timeout`: a slow try is abandoned and retried; the
/// route timeout still bounds the whole call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_try_timeout_retries_a_slow_try() {
    let origin = start_origin("ok", Protocol::Binary, Transport::Framed);
    let proxy = proxy(
        "{ attempts: 1, retry_on: [timeout], methods: [getUser], per_try_timeout: 300ms }",
        &[origin.addr],
    );
    let got = with_client(&proxy, |c| {
        // 999 answers after 1.5s: both tries time out.
        format!("{:?} {:?}", c.get_user(999), c.get_user(5))
    })
    .await;
    assert_eq!(got, "Err(App(InternalError)) Ok(\"ok:5\")");
    stat_eventually(&proxy, &retry_total("users"), 1.0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_retry_and_concurrency_config_is_reported_with_positions() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("bad.yaml");
    std::fs::write(
        &path,
        "listeners:
  - name: t
    address: 127.0.0.1:0
    protocol: thrift
    thrift:
      max_concurrent_calls: 0
      routes:
        - route:
            cluster: users
            retries: { attempts: 11, retry_on: [reste, timeout], methods: [] }
clusters:
  - { name: users, endpoints: [\"127.0.0.1:1\"] }
",
    )
    .expect("write");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_attache"))
        .args(["validate", "--config"])
        .arg(&path)
        .output()
        .expect("run validate");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("attempts must be at most 10"), "{err}");
    assert!(err.contains("did you mean `reset`?"), "{err}");
    assert!(err.contains("list the idempotent methods"), "{err}");
    assert!(err.contains("`timeout` needs `per_try_timeout`"), "{err}");
    assert!(err.contains("bad.yaml:10:"), "{err}");
    assert!(err.contains("max_concurrent_calls"), "{err}");
    assert!(err.contains("bad.yaml:6:"), "{err}");
}
