//! Config loader target: YAML text to a snapshot or diagnostics located in it.

use crate::config::{load_str, Diagnostic};
use crate::stats::Stats;

pub(super) const DICT: &[&[u8]] = &[
    b"listeners:\n",
    b"clusters:\n",
    b"  - name: a\n",
    b"    address: 127.0.0.1:0\n",
    b"    protocol: http\n",
    b"    protocol: thrift\n",
    b"    protocol: tcp\n",
    b"virtual_hosts:\n",
    b"routes:\n",
    b"match: { prefix: / }\n",
    b"route: { cluster: c }\n",
    b"weighted_clusters:\n",
    b"endpoints: [\"127.0.0.1:1\"]\n",
    b"filters:\n",
    b"- cookie_audit: {}\n",
    b"- local_rate_limit: { tokens: 1 }\n",
    b"regex: \"(\"\n",
    b"timeout: 1s\n",
    b"${FUZZ}",
    b"${UNSET}",
    b"${X:-d}",
    b"&a ",
    b"*a",
    b"<<: *a\n",
    b"!!binary ",
    b"- ",
    b": ",
    b"{",
    b"}",
    b"[",
    b"]",
    b"\"",
    b"'",
    b"\t",
    b"#",
    b"---\n",
    b"\xc3\xa9",
];

const FILE: &str = "fuzz.yaml";

pub(super) fn load(data: &[u8]) {
    // Config files are read as UTF-8 text.
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let lookup = |k: &str| (k == "FUZZ").then(|| "127.0.0.1:0".to_string());
    let stats = Stats::new();
    let services = attache_filters::Services::default();
    match load_str(FILE, text, &lookup, &stats, &services, false) {
        Ok(_) => {}
        Err(diags) => {
            assert!(!diags.is_empty(), "failed without a diagnostic");
            for d in &diags {
                located(d, text);
            }
        }
    }
}

/// A diagnostic names the file and a line and column inside the text (one past
/// the end of a line, or the line after the last, for what is missing there).
/// Lines end as YAML ends them: CR LF, LF or a lone CR.
fn located(d: &Diagnostic, text: &str) {
    assert_eq!(d.file, FILE, "{d}");
    assert!(!d.message.is_empty(), "{d}");
    let lines: Vec<&str> = text
        .split("\r\n")
        .flat_map(|l| l.split(['\r', '\n']))
        .collect();
    assert!(
        d.line >= 1 && d.line <= lines.len() + 1,
        "{d}: line outside the text"
    );
    let width = lines.get(d.line - 1).map_or(0, |l| l.chars().count());
    assert!(
        d.col >= 1 && d.col <= width + 1,
        "{d}: column outside line {}",
        d.line
    );
}
