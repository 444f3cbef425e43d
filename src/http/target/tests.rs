use super::*;

fn settings(default: Option<&'static str>) -> (Rules, Option<HeaderValue>) {
    (Rules::default(), default.map(HeaderValue::from_static))
}

/// `(authority, host, path)` or the reason.
fn run(
    version: Version,
    uri: &str,
    host: Option<&str>,
    default: Option<&'static str>,
) -> Result<(String, String, String, Source), Reject> {
    let uri: Uri = uri.parse().expect("uri");
    let host = host.map(|h| HeaderValue::from_bytes(h.as_bytes()).expect("value"));
    let (rules, default) = settings(default);
    let head = Head {
        version,
        options: false,
        uri: &uri,
        host: host.as_ref(),
        tls: false,
    };
    let s = Settings {
        path: &rules,
        default_host_http10: default.as_ref(),
    };
    resolve(&head, &s).map(|t| {
        (
            t.authority.to_string(),
            t.host.into_owned(),
            t.path.into_owned(),
            t.source,
        )
    })
}

const V11: Version = Version::HTTP_11;

#[test]
fn origin_form_takes_host_and_lower_cases_it_for_routing() {
    let t = run(V11, "/a/../b?q=1", Some("API.Example.com:8080"), None).expect("ok");
    assert_eq!(
        t,
        (
            "API.Example.com:8080".into(),
            "api.example.com".into(),
            "/b".into(),
            Source::Host
        )
    );
    let t = run(V11, "/", Some("[::1]:80"), None).expect("ok");
    assert_eq!((t.1.as_str(), t.3), ("[::1]", Source::Host));
    // One trailing dot is the same name.
    assert_eq!(
        run(V11, "/", Some("a.example."), None).expect("ok").1,
        "a.example"
    );
}

#[test]
fn absolute_form_and_authority_win_and_a_different_host_is_refused() {
    let t = run(V11, "http://A.example/x", Some("a.EXAMPLE:80"), None).expect("ok");
    assert_eq!(
        (t.0.as_str(), t.1.as_str(), t.3),
        ("A.example", "a.example", Source::Uri)
    );
    for (uri, host) in [
        ("http://allowed.example/x", "denied.example"),
        ("http://a.example/x", "a.example:8080"),
        ("http://a.example:8080/x", "a.example"),
        ("https://a.example/x", "a.example:80"),
        ("http://a.example/x", "a.example.evil"),
    ] {
        assert_eq!(
            run(V11, uri, Some(host), None),
            Err(Reject::Host),
            "{uri} {host}"
        );
    }
    assert!(run(V11, "https://a.example/x", Some("a.example:443"), None).is_ok());
    // HTTP/1.1 must carry Host even in absolute form; HTTP/1.0 and HTTP/2 need not.
    assert_eq!(run(V11, "http://a.example/", None, None), Err(Reject::Host));
    assert!(run(Version::HTTP_10, "http://a.example/", None, None).is_ok());
    assert!(run(Version::HTTP_2, "http://a.example/", None, None).is_ok());
    // Only http and https are proxied.
    assert_eq!(
        run(V11, "ftp://a.example/", Some("a.example"), None),
        Err(Reject::Scheme)
    );
}

#[test]
fn missing_host_is_refused_except_http10_with_a_default() {
    assert_eq!(run(V11, "/", None, Some("d.example")), Err(Reject::Host));
    assert_eq!(run(Version::HTTP_2, "/", None, None), Err(Reject::Host));
    assert_eq!(run(Version::HTTP_10, "/", None, None), Err(Reject::Host));
    let t = run(Version::HTTP_10, "/", None, Some("D.example:81")).expect("ok");
    assert_eq!(
        (t.0.as_str(), t.1.as_str(), t.3),
        ("D.example:81", "d.example", Source::Default)
    );
    // A Host sent over HTTP/1.0 is used.
    let t = run(Version::HTTP_10, "/", Some("h.example"), Some("d.example")).expect("ok");
    assert_eq!(t.1, "h.example");
}

#[test]
fn malformed_authorities_are_refused() {
    for bad in [
        "",
        " ",
        "a, b",
        "a,b",
        "u@a.example",
        "u:p@a.example",
        "a example",
        "a.example ",
        "a\tb",
        "a.example:",
        "a.example:0",
        "a.example:65536",
        "a.example:99999999",
        "a.example:+80",
        "a.example:80:80",
        "a.example:8o",
        "::1",
        "[::1",
        "[::1]x",
        "[::1]:",
        "[zz::1]",
        "[fe80::1%25eth0]",
        "[]",
        ".a.example",
        "a..example",
        "a.example..",
        "a/b",
        "a\\b",
        "a%2eb",
        "é.example",
        "a.example;x",
    ] {
        assert_eq!(
            parse_authority(bad.as_bytes()),
            None,
            "{bad:?} should be refused"
        );
    }
    for good in [
        "a",
        "a.example",
        "a-b.example:8080",
        "under_score.internal",
        "10.0.0.1:65535",
        "[2001:db8::1]",
        "[::ffff:10.0.0.1]:443",
        "example.com.",
    ] {
        assert!(parse_authority(good.as_bytes()).is_some(), "{good:?}");
    }
    // A malformed Host is refused even when the absolute form names the authority.
    assert_eq!(
        run(V11, "http://a.example/", Some("a.example, b.example"), None),
        Err(Reject::Host)
    );
    assert_eq!(
        run(V11, "http://u@a.example/", Some("a.example"), None),
        Err(Reject::Host)
    );
}

#[test]
fn path_rejections_carry_their_reason() {
    for (path, reason) in [
        ("/a/..;/b", Reject::PathTraversal),
        ("/a\\b", Reject::Backslash),
        ("/a%5cb", Reject::Backslash),
        ("/a%252e", Reject::DoubleEncoding),
        ("/a%2fb", Reject::Path),
        ("/a%zz", Reject::Path),
    ] {
        assert_eq!(run(V11, path, Some("a"), None), Err(reason), "{path}");
    }
}
