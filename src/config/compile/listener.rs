//! Listener-level blocks besides TLS and protocol settings: `proxy_protocol:`.

use super::Cx;
use crate::config::raw;
use crate::stats::Stats;

/// A listener's `proxy_protocol:` (`true`, `false` or options).
pub(super) fn compile_proxy_protocol(
    cx: &mut Cx<'_>,
    p: &str,
    l: &raw::Listener,
    stats: &Stats,
) -> Option<crate::proxy_protocol::Settings> {
    let opts = match l.proxy_protocol.as_ref()? {
        raw::ProxyProtocol::Enabled(false) => return None,
        raw::ProxyProtocol::Enabled(true) => raw::ProxyProtocolOptions::default(),
        raw::ProxyProtocol::Options(o) => o.clone(),
    };
    let pp = format!("{p}.proxy_protocol");
    let mut sources = Vec::new();
    for (i, s) in opts.allowed_sources.iter().enumerate() {
        match crate::cidr::Cidr::parse(s) {
            Ok(c) => sources.push(c),
            Err(m) => cx.err(&format!("{pp}.allowed_sources.{i}"), m),
        }
    }
    let timeout = opts
        .timeout
        .map(|d| d.0)
        .unwrap_or(crate::proxy_protocol::DEFAULT_TIMEOUT);
    if timeout.is_zero() {
        cx.err(
            &format!("{pp}.timeout"),
            "timeout must be greater than 0s (the header is read before anything else)",
        );
    }
    let counters = crate::proxy_protocol::Counters::new(stats, &l.name);
    Some(crate::proxy_protocol::Settings::new(
        sources, timeout, counters,
    ))
}
