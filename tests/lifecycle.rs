//! Process lifecycle: SIGTERM drains in-flight requests then exits 0; a port in use
//! fails startup clearly; every worker listens on its own socket.

mod support;

use std::time::Duration;

use support::yaml::Routes;
use support::{Origin, Proxy};

fn yaml(origin: &Origin, address: &str) -> String {
    let routes = Routes::new("- match: { prefix: / }\n  route: { cluster: o, timeout: 30s }")
        .address(address)
        .cluster("o", &[origin.addr], "")
        .yaml();
    format!("drain_timeout: 10s\n{routes}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_finishes_an_in_flight_slow_request_then_exits_zero() {
    let o = Origin::start("o").await;
    let mut p = Proxy::start(&yaml(&o, "127.0.0.1:0"));
    let url = p.url("main", "/slow/1500");
    let inflight = tokio::spawn(async move { support::get(&url, &[]).await });
    // Wait until the origin has the request, then signal.
    support::eventually(Duration::from_secs(10), "request at origin", || {
        let o = o.clone();
        async move { (o.hits() >= 1).then_some(()) }
    })
    .await;
    p.signal(15);
    // While draining, /ready says so and new connections are refused.
    support::eventually(Duration::from_secs(30), "ready 503", || {
        let admin = p.admin;
        async move {
            let r = support::get(&format!("http://{admin}/ready"), &[]).await;
            (r.status == 503).then_some(())
        }
    })
    .await;
    // /ready turns 503 when the drain starts; the listener closes right after, so
    // wait for the refusal rather than race it, but see it while the slow request
    // is still in flight (after that, an exiting proxy refuses anyway).
    let main = p.addr("main");
    support::eventually(
        Duration::from_secs(5),
        "listener closed while draining",
        || async move {
            tokio::net::TcpStream::connect(main)
                .await
                .is_err()
                .then_some(())
        },
    )
    .await;
    assert!(
        !inflight.is_finished(),
        "the listener closed only after the in-flight request ended"
    );
    let r = tokio::time::timeout(Duration::from_secs(10), inflight)
        .await
        .expect("in time")
        .expect("task");
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "slow o");
    let code = tokio::task::block_in_place(|| p.wait_exit(Duration::from_secs(10)));
    assert_eq!(code, Some(0));
}

#[tokio::test]
async fn port_in_use_fails_startup_clearly() {
    let o = Origin::start("o").await;
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr");
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("c.yaml");
    std::fs::write(
        &path,
        format!(
            "admin: {{ address: 127.0.0.1:0 }}\n{}",
            yaml(&o, &addr.to_string())
        ),
    )
    .expect("write");
    let out = tokio::process::Command::new(support::bin())
        .args(["run", "--config"])
        .arg(&path)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(20), out)
        .await
        .expect("exits")
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("listener `main`: cannot bind {addr}")),
        "{stderr}"
    );
    assert!(stderr.contains("in use"), "{stderr}");
}

/// Listening TCP sockets on 127.0.0.1:`port`, from /proc/net/tcp (state 0A).
fn listening_sockets(port: u16) -> usize {
    let table = std::fs::read_to_string("/proc/net/tcp").expect("/proc/net/tcp");
    let local = format!("0100007F:{port:04X}");
    table
        .lines()
        .skip(1)
        .filter(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.get(1) == Some(&local.as_str()) && f.get(3) == Some(&"0A")
        })
        .count()
}

/// `--concurrency 2` (the harness's): each worker accepts on its own listening
/// socket (SO_REUSEPORT); connections the kernel spreads over them are all served.
#[tokio::test]
async fn each_worker_listens_on_its_own_socket_and_all_serve() {
    let o = Origin::start("o").await;
    let p = Proxy::start(&yaml(&o, "127.0.0.1:0"));
    let port = p.addr("main").port();
    assert_eq!(
        listening_sockets(port),
        2,
        "one listening socket per worker"
    );
    // Each request on its own connection, hashed onto one of the sockets.
    for i in 0..32 {
        let r = support::get(&p.url("main", &format!("/w/{i}")), &[]).await;
        assert_eq!(r.status, 200, "request {i}");
    }
    assert_eq!(o.hits(), 32);
}
