//! Endpoint lists from discovery: the `static` list in the config and the YAML files a
//! local discovery agent writes (`[{ address, weight, zone }]`). Checked completely;
//! a file is all-or-nothing (the caller keeps the last good set on any problem).

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;

use super::load::{index, Diagnostic};
use super::problem::{Problem, Problems};
use super::raw::EndpointEntry;

/// The default bound on a discovered endpoint set.
pub const DEFAULT_MAX_ENDPOINTS: usize = 10_000;
/// The largest endpoint weight.
pub const MAX_WEIGHT: u32 = 10_000;

/// A checked endpoint: identity is the address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spec {
    pub addr: SocketAddr,
    pub weight: u32,
    pub zone: Option<Arc<str>>,
}

/// Check entries; every problem at once, with its path relative to the list.
pub fn check(entries: &[EndpointEntry], max: usize) -> Result<Vec<Spec>, Problems> {
    let mut errs = Vec::new();
    if entries.is_empty() {
        errs.push(Problem::new(
            String::new(),
            "the endpoint list is empty".to_string(),
        ));
    }
    if entries.len() > max {
        errs.push(Problem::new(
            String::new(),
            format!(
                "{} endpoints is over the limit of {max} (max_endpoints)",
                entries.len()
            ),
        ));
        return Err(errs);
    }
    let mut out = Vec::with_capacity(entries.len());
    let mut seen = HashSet::new();
    for (i, e) in entries.iter().enumerate() {
        let addr = match e.address.parse::<SocketAddr>() {
            Ok(a) if a.port() != 0 => a,
            Ok(_) => {
                errs.push(Problem::new(
                    format!("{i}.address"),
                    format!("endpoint `{}` needs a port other than 0", e.address),
                ));
                continue;
            }
            Err(_) => {
                errs.push(Problem::new(
                    format!("{i}.address"),
                    format!(
                        "`{}` is not an address; write IP:PORT, e.g. `10.0.0.7:8080`",
                        e.address
                    ),
                ));
                continue;
            }
        };
        if !seen.insert(addr) {
            errs.push(Problem::new(
                format!("{i}.address"),
                format!("endpoint {addr} is listed twice"),
            ));
        }
        let weight = e.weight.unwrap_or(1);
        if weight == 0 || weight > MAX_WEIGHT {
            errs.push(Problem::new(
                format!("{i}.weight"),
                format!("weight {weight} must be between 1 and {MAX_WEIGHT}"),
            ));
        }
        let zone = match e.zone.as_deref() {
            None | Some("") => None,
            Some(z) if z.len() <= 64 && z.bytes().all(|b| b.is_ascii_graphic()) => {
                Some(Arc::from(z))
            }
            Some(_) => {
                errs.push(Problem::new(
                    format!("{i}.zone"),
                    "zone must be at most 64 printable ASCII characters".to_string(),
                ));
                None
            }
        };
        out.push(Spec { addr, weight, zone });
    }
    if errs.is_empty() {
        Ok(out)
    } else {
        Err(errs)
    }
}

/// Parse and check a discovery file's text; every problem as FILE:LINE:COL.
pub fn parse_file(file: &str, text: &str, max: usize) -> Result<Vec<Spec>, Vec<Diagnostic>> {
    let at = |line: usize, col: usize, message: String| Diagnostic {
        file: file.to_string(),
        line,
        col,
        message,
    };
    // Cheap bound before building a document for a runaway file.
    if text.len() > max.saturating_mul(512).max(1 << 20) {
        return Err(vec![at(
            1,
            1,
            format!(
                "file is {} bytes, too large for {max} endpoints (max_endpoints)",
                text.len()
            ),
        )]);
    }
    let entries: Vec<EndpointEntry> = match serde_yaml::from_str::<serde_yaml::Value>(text) {
        Ok(serde_yaml::Value::Null) => Vec::new(),
        Ok(v) => match serde_path_to_error::deserialize::<_, Vec<EndpointEntry>>(v) {
            Ok(e) => e,
            Err(e) => {
                let path = e.path().to_string();
                let map = index(file, text);
                let path = if path == "." { String::new() } else { path };
                let d = map.diag(&path, format!("invalid endpoint list: {}", e.inner()));
                return Err(vec![d]);
            }
        },
        Err(e) => {
            let (line, col) = e
                .location()
                .map(|l| (l.line(), l.column()))
                .unwrap_or((1, 1));
            let msg = e.to_string();
            let msg = msg.split(" at line ").next().unwrap_or(&msg).to_string();
            return Err(vec![at(line, col, format!("invalid YAML: {msg}"))]);
        }
    };
    check(&entries, max).map_err(|errs| {
        let map = index(file, text);
        errs.into_iter()
            .map(|p| map.diag(&p.path, p.to_string()))
            .collect()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_weights_and_zones() {
        let text = "- address: 127.0.0.1:1\n- { address: 127.0.0.1:2, weight: 3, zone: a }\n";
        let eps = parse_file("e.yaml", text, 10).expect("valid");
        assert_eq!(eps.len(), 2);
        assert_eq!(eps[1].weight, 3);
        assert_eq!(eps[1].zone.as_deref(), Some("a"));
    }

    #[test]
    fn rejects_broken_empty_and_oversized_files_with_positions() {
        let errs = parse_file("e.yaml", "- address: 127.0.0.1:1\n- address: nope\n", 10)
            .expect_err("bad address");
        assert_eq!((errs[0].line, errs[0].col), (2, 12), "{errs:?}");
        assert!(parse_file("e.yaml", "", 10).is_err());
        assert!(parse_file("e.yaml", "[", 10).is_err());
        assert!(parse_file("e.yaml", "- adress: 127.0.0.1:1\n", 10).is_err());
        let many: String = (1..=11)
            .map(|i| format!("- address: 127.0.0.1:{i}\n"))
            .collect();
        assert!(parse_file("e.yaml", &many, 10).is_err());
        assert!(parse_file(
            "e.yaml",
            "- address: 127.0.0.1:1\n- address: 127.0.0.1:1\n",
            10
        )
        .is_err());
        assert!(parse_file("e.yaml", "- { address: 127.0.0.1:1, weight: 0 }\n", 10).is_err());
    }
}
