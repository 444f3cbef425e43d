//! Path normalization target.

use std::str::FromStr;

use http::uri::PathAndQuery;

use crate::http::normalize::{normalize as normalize_path, Rejected, Rules};

pub(super) const DICT: &[&[u8]] = &[
    b"/", b"//", b"/.", b"/..", b"/./", b"/../", b"%2e", b"%2E", b"%2f", b"%2F", b"%5c", b"%5C",
    b"%25", b"%", b"\\", b";", b"..;", b"?", b"#", b"%41", b"%7e", b"%00",
];

/// The rules one flags byte selects.
fn options(flags: u8) -> Rules {
    Rules {
        merge_slashes: flags & 1 != 0,
        reject_escaped_slashes: flags & 2 != 0,
        backslash_to_slash: flags & 4 != 0,
        reject_double_encoding: flags & 8 != 0,
    }
}

fn run(path: &str, rules: Rules) -> Result<String, Rejected> {
    normalize_path(path, &rules).map(|p| p.into_owned())
}

pub(super) fn normalize(data: &[u8]) {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    let opts = options(flags);
    // What the proxy normalizes: the path of a request target `http` accepted
    // (no query, no fragment). Other text only has to be handled without a panic.
    let Ok(target) = PathAndQuery::from_str(text) else {
        let _ = run(text, opts);
        return;
    };
    let path = target.path();
    let Ok(out) = run(path, opts) else {
        return;
    };
    normalized(&out, opts);
    assert_eq!(
        run(&out, opts).as_ref(),
        Ok(&out),
        "not idempotent: {path:?}"
    );
    let forwarded = PathAndQuery::from_str(&out)
        .unwrap_or_else(|e| panic!("{path:?} became an invalid target {out:?}: {e}"));
    assert_eq!(forwarded.path(), out, "{path:?} became a query or fragment");
}

/// What a normalized path never contains.
fn normalized(out: &str, rules: Rules) {
    let (merge, reject) = (rules.merge_slashes, rules.reject_escaped_slashes);
    assert!(!out.contains('\\'), "raw backslash left in {out:?}");

    assert!(out.starts_with('/'), "{out:?}");
    for seg in out.split('/').skip(1) {
        assert!(seg != "." && seg != "..", "dot segment left in {out:?}");
    }
    if merge {
        assert!(!out.contains("//"), "slashes not merged in {out:?}");
    }
    let b = out.as_bytes();
    for (i, _) in out.match_indices('%') {
        let (Some(&h), Some(&l)) = (b.get(i + 1), b.get(i + 2)) else {
            panic!("truncated escape in {out:?}");
        };
        assert!(h.is_ascii_hexdigit() && l.is_ascii_hexdigit(), "{out:?}");
        let v = u8::from_str_radix(&out[i + 1..i + 3], 16).unwrap_or(0);
        let unreserved = v.is_ascii_alphanumeric() || b"-._~".contains(&v);
        assert!(!unreserved, "unreserved byte left escaped in {out:?}");
        if reject {
            assert!(v != b'/' && v != b'\\', "escaped slash kept in {out:?}");
        }
        if rules.reject_double_encoding && v == b'%' {
            let next = (b.get(i + 3), b.get(i + 4));
            assert!(
                !matches!(next, (Some(h), Some(l)) if h.is_ascii_hexdigit() && l.is_ascii_hexdigit()),
                "double encoding kept in {out:?}"
            );
        }
    }
}
