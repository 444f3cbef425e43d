//! `cookie_audit` through the real binary to a real origin: every violation kind
//! counted, audit vs enforce vs fix as seen by the client and the origin, hostile
//! `Cookie` headers, and bounded metric labels.

mod support;

use std::collections::HashSet;
use std::time::Duration;

use bytes::Bytes;
use support::{send, Origin, Proxy, Resp, RESPOND_HEADER};

const POLICIES: &str = r#"
          cookies:
            - { name: session, same_site: Strict, max_lifetime: 1h, domain: app.example.com }
            - { name: prefs, http_only: false, same_site: any }
            - { name: cross, same_site: None }
          allowed: [theme]"#;

/// Three listeners on one proxy, one per mode, all to the echo origin.
fn config(origin: &Origin) -> String {
    let mut out = String::from("listeners:\n");
    for (name, extra) in [
        ("audit", "mode: audit"),
        ("enforce", "mode: enforce\n          unknown: strip"),
        ("fix", "mode: enforce\n          fix: true"),
    ] {
        out.push_str(&format!(
            r#"
  - name: {name}
    address: 127.0.0.1:0
    filters:
      - cookie_audit:
          {extra}{POLICIES}
    virtual_hosts:
      - name: all
        domains: ["*"]
        routes:
          - name: app
            match: {{ prefix: / }}
            route: {{ cluster: origin, timeout: 5s }}
"#
        ));
    }
    out.push_str(&format!(
        "clusters:\n  - name: origin\n    endpoints: [\"{}\"]\n",
        origin.addr
    ));
    out
}

fn violation(listener: &str, cookie: &str, kind: &str) -> String {
    format!(
        "attache_cookie_audit_violations_total{{cookie=\"{cookie}\",listener=\"{listener}\",violation=\"{kind}\"}}"
    )
}

fn action(listener: &str, cookie: &str, act: &str) -> String {
    format!(
        "attache_cookie_audit_actions_total{{action=\"{act}\",cookie=\"{cookie}\",listener=\"{listener}\"}}"
    )
}

/// GET `/` on `listener`, asking the origin to answer with these `Set-Cookie`s.
async fn with_set_cookies(p: &Proxy, listener: &str, cookies: &[&str]) -> Resp {
    let hdrs: Vec<String> = cookies.iter().map(|c| format!("set-cookie: {c}")).collect();
    let hdrs: Vec<(&str, &str)> = hdrs.iter().map(|h| (RESPOND_HEADER, h.as_str())).collect();
    let r = send("GET", &p.url(listener, "/"), &hdrs, Bytes::new()).await;
    assert_eq!(r.status, 200, "{}", r.text());
    r
}

fn set_cookies(r: &Resp) -> Vec<String> {
    r.headers
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().expect("ascii set-cookie").to_string())
        .collect()
}

/// Every value of `header` the origin received, joined with `; ` (None if absent).
fn origin_saw(r: &Resp, header: &str) -> Option<String> {
    let v: serde_json::Value =
        serde_json::from_slice(&r.body).unwrap_or_else(|e| panic!("not json ({e}): {}", r.text()));
    let seen: Vec<&str> = v["all_headers"]
        .as_array()
        .expect("all_headers")
        .iter()
        .filter(|h| h[0] == header)
        .filter_map(|h| h[1].as_str())
        .collect();
    (!seen.is_empty()).then(|| seen.join("; "))
}

#[tokio::test]
async fn counts_each_violation_kind_and_audit_changes_nothing() {
    let origin = Origin::start("o").await;
    let p = Proxy::start(&config(&origin));

    // (Set-Cookie sent by the origin, the policy row it counts under, the violations).
    let cases: &[(&str, &str, &[&str])] = &[
        (
            "tracker=t1; Secure; HttpOnly",
            "unknown",
            &["unknown_set_cookie"],
        ),
        ("no-equals-sign", "unknown", &["malformed"]),
        (
            "session=s1; HttpOnly; SameSite=Strict",
            "session",
            &["missing_secure"],
        ),
        (
            "session=s1; Secure; SameSite=Strict",
            "session",
            &["missing_http_only"],
        ),
        (
            "session=s1; Secure; HttpOnly",
            "session",
            &["missing_same_site"],
        ),
        (
            "session=s1; Secure; HttpOnly; SameSite=Lax",
            "session",
            &["wrong_same_site"],
        ),
        (
            "cross=c1; HttpOnly; SameSite=None",
            "cross",
            &["missing_secure", "same_site_none_insecure"],
        ),
        (
            "session=s1; Secure; HttpOnly; SameSite=Strict; Max-Age=7200",
            "session",
            &["lifetime_exceeded"],
        ),
        (
            "session=s1; Secure; HttpOnly; SameSite=Strict; Expires=Fri, 01 Jan 2100 00:00:00 GMT",
            "session",
            &["lifetime_exceeded"],
        ),
        (
            "session=s1; Secure; HttpOnly; SameSite=Strict; Domain=example.com",
            "session",
            &["domain_too_broad"],
        ),
    ];
    let kinds = [
        "unknown_set_cookie",
        "malformed",
        "missing_secure",
        "missing_http_only",
        "missing_same_site",
        "wrong_same_site",
        "same_site_none_insecure",
        "lifetime_exceeded",
        "domain_too_broad",
    ];
    for (set_cookie, row, expected) in cases {
        let before: Vec<f64> = {
            let mut v = Vec::new();
            for k in kinds {
                v.push(p.stat(&violation("audit", row, k)).await);
            }
            v
        };
        let r = with_set_cookies(&p, "audit", &[set_cookie]).await;
        // Audit mode: the client gets exactly what the origin sent.
        assert_eq!(set_cookies(&r), vec![set_cookie.to_string()]);
        for (i, k) in kinds.iter().enumerate() {
            let want = before[i] + if expected.contains(k) { 1.0 } else { 0.0 };
            assert_eq!(
                p.stat(&violation("audit", row, k)).await,
                want,
                "`{set_cookie}`: {row}/{k}"
            );
        }
    }

    // Compliant cookies and `allowed` names count nothing.
    let total_before = p
        .stats_with_prefix("attache_cookie_audit_violations_total")
        .await;
    let r = with_set_cookies(
        &p,
        "audit",
        &[
            "session=ok; Secure; HttpOnly; SameSite=strict; Max-Age=60; Domain=eu.app.example.com",
            "prefs=dark; Secure",
            "theme=x",
        ],
    )
    .await;
    assert_eq!(set_cookies(&r).len(), 3);
    assert_eq!(
        p.stats_with_prefix("attache_cookie_audit_violations_total")
            .await,
        total_before
    );

    // Request side: an unknown request cookie is counted, and audit forwards it.
    let before = p
        .stat(&violation("audit", "unknown", "unknown_cookie"))
        .await;
    let r = send(
        "GET",
        &p.url("audit", "/"),
        &[("cookie", "session=a; tracker=b"), ("cookie", "theme=c")],
        Bytes::new(),
    )
    .await;
    assert_eq!(r.status, 200);
    let seen = origin_saw(&r, "cookie").expect("origin got a cookie header");
    assert_eq!(
        seen, "session=a; tracker=b; theme=c",
        "audit must not strip"
    );
    assert_eq!(
        p.stat(&violation("audit", "unknown", "unknown_cookie"))
            .await,
        before + 1.0
    );
    // Nothing was acted on in audit mode.
    for (_, v) in p
        .stats_with_prefix("attache_cookie_audit_actions_total{")
        .await
    {
        assert_eq!(v, 0.0);
    }
}

#[tokio::test]
async fn enforce_drops_bad_set_cookies_and_strips_unknown_request_cookies() {
    let origin = Origin::start("o").await;
    let p = Proxy::start(&config(&origin));

    let good = "session=ok; Secure; HttpOnly; SameSite=Strict; Max-Age=60";
    let r = with_set_cookies(
        &p,
        "enforce",
        &[
            "a-first=1; Secure; HttpOnly", // unknown: dropped (unknown: strip)
            good,
            "session=bad; HttpOnly; SameSite=Strict", // missing Secure: dropped
            "garbage",                                // malformed: dropped
            "prefs=dark; Secure",
            "theme=light",
        ],
    )
    .await;
    assert_eq!(
        set_cookies(&r),
        vec![
            good.to_string(),
            "prefs=dark; Secure".to_string(),
            "theme=light".to_string()
        ],
        "the survivors keep their order"
    );
    assert_eq!(p.stat(&action("enforce", "session", "dropped")).await, 1.0);
    assert_eq!(p.stat(&action("enforce", "unknown", "dropped")).await, 2.0);
    assert_eq!(
        p.stat(&violation("enforce", "session", "missing_secure"))
            .await,
        1.0
    );

    // Request side: unknown cookies never reach the origin, known ones do.
    let r = send(
        "GET",
        &p.url("enforce", "/"),
        &[
            ("cookie", "session=a;  tracker=b ;theme=\"c\""),
            ("cookie", "novalue; prefs=d"),
        ],
        Bytes::new(),
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(
        origin_saw(&r, "cookie").as_deref(),
        Some("session=a; theme=\"c\"; prefs=d")
    );
    assert_eq!(p.stat(&action("enforce", "unknown", "stripped")).await, 2.0);

    // Only unknown cookies: the Cookie header disappears entirely.
    let r = send(
        "GET",
        &p.url("enforce", "/"),
        &[("cookie", "x=1; y=2")],
        Bytes::new(),
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(origin_saw(&r, "cookie"), None);
}

#[tokio::test]
async fn fix_mode_repairs_set_cookies_and_keeps_unknown_ones() {
    let origin = Origin::start("o").await;
    let p = Proxy::start(&config(&origin));

    let r = with_set_cookies(
        &p,
        "fix",
        &[
            "session=s1; Path=/; Domain=example.com; SameSite=Lax; Expires=Fri, 01 Jan 2100 00:00:00 GMT",
            "cross=c1; SameSite=None",
            "tracker=t1",
        ],
    )
    .await;
    let got = set_cookies(&r);
    assert_eq!(got.len(), 3, "{got:?}");
    let attrs = |c: &str| -> HashSet<String> {
        c.split(';')
            .map(|s| s.trim().to_ascii_lowercase())
            .collect()
    };
    assert_eq!(
        attrs(&got[0]),
        [
            "session=s1",
            "path=/",
            "secure",
            "httponly",
            "samesite=strict",
            "max-age=3600",
            "domain=app.example.com"
        ]
        .iter()
        .map(|s| s.to_string())
        .collect::<HashSet<_>>(),
        "{}",
        got[0]
    );
    assert_eq!(
        attrs(&got[1]),
        ["cross=c1", "samesite=none", "secure", "httponly"]
            .iter()
            .map(|s| s.to_string())
            .collect::<HashSet<_>>(),
        "{}",
        got[1]
    );
    // `unknown: allow` (the default): unknown cookies are counted, not dropped.
    assert_eq!(got[2], "tracker=t1");
    assert_eq!(p.stat(&action("fix", "session", "fixed")).await, 1.0);
    assert_eq!(p.stat(&action("fix", "cross", "fixed")).await, 1.0);
    assert_eq!(p.stat(&action("fix", "unknown", "dropped")).await, 0.0);
    assert_eq!(
        p.stat(&violation("fix", "unknown", "unknown_set_cookie"))
            .await,
        1.0
    );
    // The repaired cookie passes its own policy: sending it again counts nothing.
    let before = p
        .stats_with_prefix("attache_cookie_audit_violations_total")
        .await;
    let again = with_set_cookies(&p, "fix", &[got[0].as_str()]).await;
    assert_eq!(set_cookies(&again), vec![got[0].clone()]);
    assert_eq!(
        p.stats_with_prefix("attache_cookie_audit_violations_total")
            .await,
        before
    );
}

#[tokio::test]
async fn malformed_cookie_headers_never_crash_or_leak_values() {
    let origin = Origin::start("o").await;
    let p = Proxy::start(&config(&origin));
    let secret = "S3CRETVALUE";
    let hostile: Vec<Vec<u8>> = vec![
        secret.as_bytes().to_vec(),
        format!(";;;; ; =;=={secret};;").into_bytes(),
        format!("a=\"{secret}; b=\"\"\"; c").into_bytes(),
        format!("session={secret}; session={secret}; ===").into_bytes(),
        format!("\t tracker = {secret} \t;").into_bytes(),
        [
            b"x=".as_slice(),
            secret.as_bytes(),
            b"\xff\xfe\x80; \xc3(=\xa0\xa1",
        ]
        .concat(),
        format!("{}={secret}", "n".repeat(4000)).into_bytes(),
        b"=".to_vec(),
        b";".to_vec(),
        b"\"".to_vec(),
    ];
    for listener in ["audit", "enforce", "fix"] {
        let addr = p.addr(listener);
        for h in &hostile {
            let mut req = b"GET / HTTP/1.1\r\nHost: app.example.com\r\nCookie: ".to_vec();
            req.extend_from_slice(h);
            req.extend_from_slice(b"\r\nCookie: ");
            req.extend_from_slice(h);
            req.extend_from_slice(b"\r\nConnection: close\r\n\r\n");
            let out = support::raw_exchange(addr, &req, Duration::from_secs(10)).await;
            assert!(
                out.starts_with("HTTP/1.1 200"),
                "{listener}: {:?} -> {out}",
                String::from_utf8_lossy(h)
            );
        }
        // And a malformed Set-Cookie from the origin.
        let r = with_set_cookies(
            &p,
            listener,
            &[
                secret,
                &format!("=;{secret}"),
                &format!("tracker={secret}; Max-Age=99999999999999999999999; Expires=not-a-date"),
            ],
        )
        .await;
        assert_eq!(r.status, 200);
    }
    // The proxy is still serving, counted the violations and logged them...
    let r = send("GET", &p.url("audit", "/"), &[], Bytes::new()).await;
    assert_eq!(r.status, 200);
    assert!(
        p.stat(&violation("audit", "unknown", "unknown_cookie"))
            .await
            >= hostile.len() as f64
    );
    let log = p.log();
    assert!(
        log.contains("cookie policy violation"),
        "violations are logged:\n{log}"
    );
    // ...but no cookie value ever reached the log.
    assert!(
        !log.contains(secret),
        "a cookie value leaked into the log:\n{log}"
    );
    assert!(!log.contains("panicked"), "{log}");
}

#[tokio::test]
async fn ten_thousand_cookie_names_keep_labels_bounded() {
    let origin = Origin::start("o").await;
    let p = Proxy::start(&config(&origin));
    let labels_before: HashSet<String> = p
        .stats_with_prefix("attache_cookie_audit_")
        .await
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    // (3 policies + 1 allowed + `unknown`) x kinds, per listener, created up front.
    assert_eq!(
        labels_before
            .iter()
            .filter(|k| k.starts_with("attache_cookie_audit_violations_total{"))
            .count(),
        3 * 5 * 10
    );

    // 10,000 distinct names, 500 to a request, 20 requests in parallel.
    let url = p.url("audit", "/");
    let mut tasks = Vec::new();
    for batch in 0..20 {
        let url = url.clone();
        tasks.push(tokio::spawn(async move {
            let cookie: Vec<String> = (0..500).map(|i| format!("c{}_{}=v", batch, i)).collect();
            let cookie = cookie.join("; ");
            send("GET", &url, &[("cookie", cookie.as_str())], Bytes::new())
                .await
                .status
        }));
    }
    for t in tasks {
        let status = tokio::time::timeout(Duration::from_secs(60), t)
            .await
            .expect("batch timed out")
            .expect("batch task");
        assert_eq!(status, 200);
    }

    let after = p.stats_with_prefix("attache_cookie_audit_").await;
    let labels_after: HashSet<String> = after.iter().map(|(k, _)| k.clone()).collect();
    assert_eq!(labels_after, labels_before, "no new label sets");
    assert!(
        labels_after.iter().all(|k| !k.contains("c1_")),
        "raw cookie names never become labels"
    );
    assert_eq!(
        p.stat(&violation("audit", "unknown", "unknown_cookie"))
            .await,
        10_000.0
    );
    // The violation log is rate limited, not one line per cookie.
    let lines = p.log().matches("cookie policy violation").count();
    assert!(
        (1..1000).contains(&lines),
        "{lines} violation log lines for 10,000 violations"
    );
}
