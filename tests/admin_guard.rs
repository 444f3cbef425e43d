//! The admin endpoint refuses what a web page could send (DNS rebinding, cross-origin
//! simple requests), through the real binary with raw bytes.

mod support;

use std::time::Duration;

use support::{raw_exchange, Proxy};

const TIMEOUT: Duration = Duration::from_secs(10);

fn proxy(admin_extra: &str, env: &[(&str, &str)]) -> Proxy {
    let yaml = format!("admin:\n  address: 127.0.0.1:0\n{admin_extra}listeners: []\n");
    Proxy::start_with_env(&yaml, env)
}

/// Send one raw request to the admin endpoint; the status code of the answer.
async fn admin_raw(p: &Proxy, request: &str) -> (u16, String) {
    let out = raw_exchange(p.admin, request.as_bytes(), TIMEOUT).await;
    let status = out
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, out)
}

fn post(path: &str, host: &str, extra: &str) -> String {
    format!("POST {path} HTTP/1.1\r\nHost: {host}\r\n{extra}Content-Length: 0\r\nConnection: close\r\n\r\n")
}

async fn refused(p: &Proxy, reason: &str) -> f64 {
    p.stat_labels("attache_admin_rq_refused_total", &[("reason", reason)])
        .await
}

async fn assert_ready(p: &Proxy) {
    let (s, body) = p.admin_get("/ready").await;
    assert_eq!((s, body.as_str()), (200, "LIVE\n"), "proxy still serving");
}

#[tokio::test]
async fn rebinding_host_is_refused_and_proxy_keeps_serving() {
    let p = proxy("", &[]);
    let host = p.admin.to_string();
    for (h, want) in [
        ("evil.example", 403),
        ("evil.example:9901", 403),
        ("localhost.evil.example", 403),
        ("127.0.0.1.nip.io", 403),
        ("localhost", 200),
        ("LOCALHOST:9901", 200),
        ("127.0.0.1", 200),
        ("[::1]:9901", 200),
        (host.as_str(), 200),
    ] {
        let req = format!("GET /ready HTTP/1.1\r\nHost: {h}\r\nConnection: close\r\n\r\n");
        let (s, out) = admin_raw(&p, &req).await;
        assert_eq!(s, want, "Host: {h}\n{out}");
    }
    // A mutation with a foreign Host is refused before it runs.
    let (s, _) = admin_raw(&p, &post("/healthcheck/fail", "evil.example", "")).await;
    assert_eq!(s, 403);
    // Absolute-form target naming a foreign host, with a loopback Host.
    let req =
        "GET http://evil.example/ready HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";
    assert_eq!(admin_raw(&p, req).await.0, 403);
    assert_ready(&p).await;
    assert_eq!(refused(&p, "host").await, 6.0);
    assert!(p.log().contains("admin request refused"), "{}", p.log());
}

#[tokio::test]
async fn cross_origin_quitquitquit_is_refused_and_process_lives() {
    let mut p = proxy("", &[]);
    let (s, out) = admin_raw(
        &p,
        &post(
            "/quitquitquit",
            "127.0.0.1",
            "Origin: https://evil.example\r\n",
        ),
    )
    .await;
    assert_eq!(s, 403, "{out}");
    assert!(out.contains("admin request refused (origin)"), "{out}");
    assert_eq!(
        p.wait_exit(Duration::from_millis(500)),
        None,
        "still running"
    );
    assert_ready(&p).await;
    assert_eq!(refused(&p, "origin").await, 1.0);
}

#[tokio::test]
async fn browser_simple_posts_are_refused() {
    let p = proxy("", &[]);
    for (extra, reason) in [
        ("Content-Type: text/plain\r\n", "content_type"),
        (
            "Content-Type: application/x-www-form-urlencoded\r\n",
            "content_type",
        ),
        (
            "Content-Type: multipart/form-data; boundary=x\r\n",
            "content_type",
        ),
        ("Sec-Fetch-Site: cross-site\r\n", "fetch_site"),
        ("Sec-Fetch-Site: same-site\r\n", "fetch_site"),
        ("Origin: null\r\n", "origin"),
    ] {
        let (s, out) = admin_raw(&p, &post("/healthcheck/fail", "localhost:9901", extra)).await;
        assert_eq!(s, 403, "{extra}{out}");
        assert!(out.contains(reason), "{extra}{out}");
    }
    assert_ready(&p).await;
    assert_eq!(refused(&p, "content_type").await, 3.0);
    assert_eq!(refused(&p, "fetch_site").await, 2.0);
    // GETs may carry them: a browser can only read them same-origin anyway.
    let req = "GET /ready HTTP/1.1\r\nHost: localhost\r\nOrigin: https://evil.example\r\nSec-Fetch-Site: cross-site\r\nConnection: close\r\n\r\n";
    assert_eq!(admin_raw(&p, req).await.0, 200);
}

#[tokio::test]
async fn plain_curl_post_and_json_post_are_allowed() {
    let p = proxy("", &[]);
    let url = format!("http://{}/healthcheck/fail", p.admin);
    let (ok, out) = support::curl(&["-sS", "-X", "POST", &url]).await;
    assert!(ok, "{out}");
    assert_eq!(out, "OK\n");
    assert_eq!(p.admin_get("/ready").await, (503, "FAILED\n".into()));
    let (s, _) = admin_raw(
        &p,
        &post(
            "/healthcheck/ok",
            "127.0.0.1",
            "Content-Type: application/json\r\nSec-Fetch-Site: same-origin\r\n",
        ),
    )
    .await;
    assert_eq!(s, 200);
    assert_ready(&p).await;
    // HTTP/1.0 without Host from loopback (curl -0 with the header removed).
    let (ok, out) = support::curl(&["-sS", "-0", "-X", "POST", "-H", "Host:", &url]).await;
    assert!(ok, "{out}");
    assert_eq!(out, "OK\n");
    assert_eq!(refused(&p, "missing_host").await, 0.0);
}

#[tokio::test]
async fn token_authorises_browser_signals_and_other_hosts() {
    let p = proxy(
        "  token: ${T}\n  allowed_hosts: [attache-admin.internal]\n",
        &[("T", "s3cret")],
    );
    let auth = "Authorization: Bearer s3cret\r\n";
    let (s, out) = admin_raw(
        &p,
        &post(
            "/healthcheck/fail",
            "evil.example",
            &format!("{auth}Origin: https://ops.example\r\nContent-Type: text/plain\r\n"),
        ),
    )
    .await;
    assert_eq!(s, 200, "{out}");
    // Wrong token: the browser signals are judged (and a foreign Host refused).
    let (s, _) = admin_raw(
        &p,
        &post(
            "/healthcheck/ok",
            "127.0.0.1",
            "Authorization: Bearer nope\r\nOrigin: https://ops.example\r\n",
        ),
    )
    .await;
    assert_eq!(s, 403);
    let (s, _) = admin_raw(&p, &post("/healthcheck/ok", "127.0.0.1", "")).await;
    assert_eq!(s, 401);
    // A configured name is served without the token on GET.
    let req =
        "GET /ready HTTP/1.1\r\nHost: Attache-Admin.internal:9901\r\nConnection: close\r\n\r\n";
    assert_eq!(admin_raw(&p, req).await.0, 503);
    assert_eq!(refused(&p, "origin").await, 1.0);
}

#[test]
fn allowed_hosts_entries_are_validated() {
    let (code, out, _) = support::validate(
        "a.yaml",
        "admin:\n  address: 127.0.0.1:0\n  allowed_hosts: [ok.internal, \"http://x:1/\"]\n",
    );
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("a.yaml:3:"), "{out}");
    assert!(
        out.contains("admin.allowed_hosts") || out.contains("not a host name"),
        "{out}"
    );
}
