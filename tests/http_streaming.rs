//! Bodies stream through the proxy both ways with backpressure: 100 MB up and down
//! with the proxy's resident memory growing by less than 32 MB.

mod support;

use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use support::yaml::OneRoute;
use support::{Origin, Proxy};

fn rss_kb(pid: i32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .expect("rss field")
}

const TOTAL: u64 = 100 * 1024 * 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_megabytes_each_way_stream_in_bounded_memory() {
    let o = Origin::start("o").await;
    let p = Proxy::start(&OneRoute::to(&[o.addr]).route_key("timeout: 60s").yaml());
    // Warm up one request so allocator arenas exist before the baseline.
    support::get(&p.url("main", "/warm"), &[]).await;
    let before = rss_kb(p.pid(), "VmRSS:");

    // Upload: a streamed request body of 100 MB, never fully in memory here either.
    let client: hyper_util::client::legacy::Client<_, http_body_util::StreamBody<_>> =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build(hyper_util::client::legacy::connect::HttpConnector::new());
    let stream = support::frames_of(TOTAL, Bytes::from(vec![b'u'; 256 * 1024]));
    let req = http::Request::post(p.url("main", "/upload"))
        .header("content-length", TOTAL)
        .body(http_body_util::StreamBody::new(stream))
        .expect("request");
    let rsp = tokio::time::timeout(Duration::from_secs(120), client.request(req))
        .await
        .expect("in time")
        .expect("upload");
    assert_eq!(rsp.status(), 200);
    let body = rsp.into_body().collect().await.expect("body").to_bytes();
    assert_eq!(String::from_utf8_lossy(&body), TOTAL.to_string());

    // Download: count bytes as they arrive.
    let client: hyper_util::client::legacy::Client<_, http_body_util::Empty<Bytes>> =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build(hyper_util::client::legacy::connect::HttpConnector::new());
    let rsp = client
        .get(
            p.url("main", &format!("/download/{TOTAL}"))
                .parse()
                .expect("uri"),
        )
        .await
        .expect("download");
    assert_eq!(rsp.status(), 200);
    let mut body = rsp.into_body();
    let mut got: u64 = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    while let Some(frame) = tokio::time::timeout_at(deadline, body.frame())
        .await
        .expect("in time")
    {
        got += frame
            .expect("frame")
            .data_ref()
            .map_or(0, |d| d.len() as u64);
    }
    assert_eq!(got, TOTAL);

    let peak = rss_kb(p.pid(), "VmHWM:");
    let grew_mb = peak.saturating_sub(before) as f64 / 1024.0;
    assert!(
        grew_mb < 32.0,
        "proxy RSS grew by {grew_mb:.1} MB (before {before} kB, peak {peak} kB)"
    );
    assert_eq!(
        p.stat("attache_downstream_rq_total{code_class=\"2xx\",listener=\"main\"}")
            .await,
        3.0
    );
}
