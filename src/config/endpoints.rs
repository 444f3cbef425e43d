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
    if let Some(m) = count_problem(entries.len(), max) {
        let over = !entries.is_empty();
        errs.push(Problem::new(String::new(), m));
        if over {
            return Err(errs);
        }
    }
    let mut out = Vec::with_capacity(entries.len());
    let mut admit = Admit::with_capacity(entries.len());
    for (i, e) in entries.iter().enumerate() {
        let Ok(addr) = e.address.parse::<SocketAddr>() else {
            errs.push(Problem::new(
                format!("{i}.address"),
                format!(
                    "`{}` is not an address; write IP:PORT, e.g. `10.0.0.7:8080`",
                    e.address
                ),
            ));
            continue;
        };
        match admit.spec(addr, e.weight, e.zone.as_deref()) {
            Ok(spec) => out.push(spec),
            Err(bad) => errs.extend(
                bad.into_iter()
                    .map(|(key, m)| Problem::new(format!("{i}.{}", key.as_str()), m)),
            ),
        }
    }
    if errs.is_empty() {
        Ok(out)
    } else {
        Err(errs)
    }
}

/// What is wrong with a set of `n` endpoints under `max`, if anything (empty, or
/// over the limit).
pub fn count_problem(n: usize, max: usize) -> Option<String> {
    if n == 0 {
        Some("the endpoint list is empty".to_string())
    } else if n > max {
        Some(format!(
            "{n} endpoints is over the limit of {max} (max_endpoints)"
        ))
    } else {
        None
    }
}

/// The field of an endpoint a problem is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Key {
    Address,
    Weight,
    Zone,
}

impl Key {
    pub fn as_str(self) -> &'static str {
        match self {
            Key::Address => "address",
            Key::Weight => "weight",
            Key::Zone => "zone",
        }
    }
}

/// The checks every endpoint of a set passes, whatever its source (a config list,
/// a discovery file, an EDS assignment): a port, no duplicate address, a weight in
/// range, a printable zone. Zones are interned: the endpoints of one zone share one
/// allocation.
pub struct Admit {
    seen: HashSet<SocketAddr>,
    zones: Vec<Arc<str>>,
}

impl Admit {
    pub fn with_capacity(n: usize) -> Admit {
        Admit {
            seen: HashSet::with_capacity(n),
            zones: Vec::new(),
        }
    }

    /// Check one endpoint; every problem with it, by field.
    pub fn spec(
        &mut self,
        addr: SocketAddr,
        weight: Option<u32>,
        zone: Option<&str>,
    ) -> Result<Spec, Vec<(Key, String)>> {
        let mut errs = Vec::new();
        if addr.port() == 0 {
            errs.push((
                Key::Address,
                format!("endpoint `{addr}` needs a port other than 0"),
            ));
        } else if !self.seen.insert(addr) {
            errs.push((Key::Address, format!("endpoint {addr} is listed twice")));
        }
        let weight = weight.unwrap_or(1);
        if weight == 0 || weight > MAX_WEIGHT {
            errs.push((
                Key::Weight,
                format!("weight {weight} must be between 1 and {MAX_WEIGHT}"),
            ));
        }
        let zone = match zone {
            None | Some("") => None,
            Some(z) => match self.zone(z) {
                Some(z) => Some(z),
                None => {
                    errs.push((
                        Key::Zone,
                        "zone must be at most 64 printable ASCII characters".to_string(),
                    ));
                    None
                }
            },
        };
        if errs.is_empty() {
            Ok(Spec { addr, weight, zone })
        } else {
            Err(errs)
        }
    }

    /// The shared allocation of zone `z`, if it is a valid zone.
    fn zone(&mut self, z: &str) -> Option<Arc<str>> {
        if let Some(known) = self.zones.iter().find(|k| ***k == *z) {
            return Some(known.clone());
        }
        if z.len() > 64 || !z.bytes().all(|b| b.is_ascii_graphic()) {
            return None;
        }
        let a: Arc<str> = Arc::from(z);
        self.zones.push(a.clone());
        Some(a)
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
