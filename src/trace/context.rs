//! Trace context on the wire: W3C `traceparent`/`tracestate` and B3 (single `b3` and
//! multi `X-B3-*`), read strictly and written for the next hop.
//!
//! Precedence: a valid `traceparent`, else `b3`, else `X-B3-TraceId`/`X-B3-SpanId`.
//! A header that does not parse exactly is not trusted: the proxy starts a new trace
//! and removes the malformed headers, so junk is never forwarded as is.

use http::header::{HeaderMap, HeaderName, HeaderValue};

pub static TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
pub static TRACESTATE: HeaderName = HeaderName::from_static("tracestate");
pub static B3: HeaderName = HeaderName::from_static("b3");
pub static X_B3_TRACEID: HeaderName = HeaderName::from_static("x-b3-traceid");
pub static X_B3_SPANID: HeaderName = HeaderName::from_static("x-b3-spanid");
pub static X_B3_PARENTSPANID: HeaderName = HeaderName::from_static("x-b3-parentspanid");
pub static X_B3_SAMPLED: HeaderName = HeaderName::from_static("x-b3-sampled");
pub static X_B3_FLAGS: HeaderName = HeaderName::from_static("x-b3-flags");

/// Which propagation format the trace arrived in; the same one goes on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    W3c,
    /// `b3: trace-span-sampled[-parent]`.
    B3Single {
        wide: bool,
    },
    /// `X-B3-*` headers.
    B3Multi {
        wide: bool,
    },
}

/// The caller's context: the trace to join and the span that becomes our parent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Incoming {
    pub trace_id: u128,
    pub parent: u64,
    /// `None`: the caller left the decision to us (B3 without a sampling state).
    pub sampled: Option<bool>,
    /// The B3 form to send on, or W3C only.
    pub format: Format,
    /// Joined through a valid `traceparent`, so its `tracestate` goes on.
    pub w3c: bool,
}

fn hex_u128(s: &[u8]) -> Option<u128> {
    if s.is_empty() || s.len() > 32 || !s.iter().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return None;
    }
    let v = u128::from_str_radix(std::str::from_utf8(s).ok()?, 16).ok()?;
    (v != 0).then_some(v)
}

fn hex_u64(s: &[u8]) -> Option<u64> {
    if s.len() != 16 {
        return None;
    }
    hex_u128(s).and_then(|v| u64::try_from(v).ok())
}

/// 16 or 32 lower-case hex digits (B3 allows a 64-bit trace id).
fn b3_trace_id(s: &[u8]) -> Option<(u128, bool)> {
    match s.len() {
        16 | 32 => hex_u128(s).map(|v| (v, s.len() == 32)),
        _ => None,
    }
}

/// The single value of a header; several copies are as bad as a malformed one.
fn only<'a>(headers: &'a HeaderMap, name: &HeaderName) -> Result<Option<&'a [u8]>, ()> {
    let mut all = headers.get_all(name).iter();
    match (all.next(), all.next()) {
        (None, _) => Ok(None),
        (Some(v), None) => Ok(Some(v.as_bytes())),
        (Some(_), Some(_)) => Err(()),
    }
}

/// W3C Trace Context level 1, section 3.2: `version-traceid-parentid-flags`, lower-case
/// hex, no all-zero ids, version `ff` invalid; a future version may append `-...`.
pub fn parse_traceparent(v: &[u8]) -> Option<Incoming> {
    if v.len() < 55 || v[2] != b'-' || v[35] != b'-' || v[52] != b'-' {
        return None;
    }
    let version = hex_u128(&v[..2]).unwrap_or(0);
    if &v[..2] != b"00" && (version == 0 || version == 0xff) {
        return None;
    }
    if (version == 0 && v.len() != 55) || (v.len() > 55 && v[55] != b'-') {
        return None;
    }
    let trace_id = hex_u128(&v[3..35])?;
    let parent = hex_u64(&v[36..52])?;
    let flags = &v[53..55];
    if !flags.iter().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return None;
    }
    let flags = u8::from_str_radix(std::str::from_utf8(flags).ok()?, 16).ok()?;
    Some(Incoming {
        trace_id,
        parent,
        sampled: Some(flags & 1 == 1),
        format: Format::W3c,
        w3c: true,
    })
}

/// `b3: {traceid}-{spanid}[-{sampled}[-{parentspanid}]]`; a lone sampling state
/// (`0`, `1`, `d`) carries no ids, so it only decides sampling of a new trace.
pub fn parse_b3(v: &[u8]) -> Option<Result<Incoming, Option<bool>>> {
    let mut parts = v.split(|b| *b == b'-');
    let first = parts.next()?;
    if v.len() == 1 {
        return b3_sampled(first).map(|s| Err(Some(s)));
    }
    let (trace_id, wide) = b3_trace_id(first)?;
    let parent = hex_u64(parts.next()?)?;
    let sampled = match parts.next() {
        None => None,
        Some(s) => Some(b3_sampled(s)?),
    };
    if let Some(p) = parts.next() {
        hex_u64(p)?;
    }
    if parts.next().is_some() {
        return None;
    }
    Some(Ok(Incoming {
        trace_id,
        parent,
        sampled,
        format: Format::B3Single { wide },
        w3c: false,
    }))
}

/// A B3 sampling state; `d` (debug) samples. `None`: malformed.
fn b3_sampled(s: &[u8]) -> Option<bool> {
    match s {
        b"1" | b"d" | b"true" => Some(true),
        b"0" | b"false" => Some(false),
        _ => None,
    }
}

fn parse_b3_multi(headers: &HeaderMap) -> Option<Incoming> {
    let (trace_id, wide) = b3_trace_id(only(headers, &X_B3_TRACEID).ok()??)?;
    let parent = hex_u64(only(headers, &X_B3_SPANID).ok()??)?;
    let debug = matches!(only(headers, &X_B3_FLAGS), Ok(Some(b"1")));
    let sampled = match only(headers, &X_B3_SAMPLED).ok()? {
        _ if debug => Some(true),
        None => None,
        Some(s) => Some(b3_sampled(s)?),
    };
    Some(Incoming {
        trace_id,
        parent,
        sampled,
        format: Format::B3Multi { wide },
        w3c: false,
    })
}

/// What the request carried: a context to join, or (when none is valid) the
/// sampling decision a lone `b3: 0|1|d` asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Extracted {
    Join(Incoming),
    New { sampled: Option<bool> },
}

/// A previous hop (attache or Envoy) may send both W3C and B3 for the same trace:
/// `traceparent` is read, and the B3 form goes on too when it names the same trace.
pub fn extract(headers: &HeaderMap) -> Extracted {
    let w3c = match only(headers, &TRACEPARENT) {
        Ok(Some(tp)) => parse_traceparent(tp),
        _ => None,
    };
    let mut sampled = None;
    let mut b3 = None;
    if let Ok(Some(v)) = only(headers, &B3) {
        match parse_b3(v) {
            Some(Ok(inc)) => b3 = Some(inc),
            Some(Err(s)) => sampled = s,
            None => {}
        }
    }
    if b3.is_none() && headers.contains_key(&X_B3_TRACEID) {
        b3 = parse_b3_multi(headers);
    }
    match (w3c, b3) {
        (Some(mut w), Some(b)) => {
            if b.trace_id == w.trace_id {
                w.format = b.format;
            }
            Extracted::Join(w)
        }
        (Some(inc), None) | (None, Some(inc)) => Extracted::Join(inc),
        (None, None) => Extracted::New { sampled },
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

fn put_hex(out: &mut Vec<u8>, v: u128, digits: usize) {
    for i in (0..digits).rev() {
        out.push(HEX[((v >> (i * 4)) & 0xf) as usize]);
    }
}

/// The trace id as 32 lower-case hex digits (the access log's `trace_id`).
pub fn trace_id_hex(id: u128) -> [u8; 32] {
    let mut out = [0u8; 32];
    for (i, b) in out.iter_mut().enumerate() {
        *b = HEX[((id >> ((31 - i) * 4)) & 0xf) as usize];
    }
    out
}

fn value(bytes: Vec<u8>) -> Option<HeaderValue> {
    HeaderValue::from_bytes(&bytes).ok()
}

/// The context for the next hop: our span becomes the parent. `traceparent` always,
/// plus the B3 form in use; other trace headers are removed, so the next hop cannot
/// read a stale or malformed parent from them. `tracestate` stays only with a
/// joined `traceparent` (`keep_state`).
pub fn inject(
    headers: &mut HeaderMap,
    format: Format,
    trace_id: u128,
    span_id: u64,
    parent: Option<u64>,
    sampled: bool,
    keep_state: bool,
) {
    let mut tp = Vec::with_capacity(55);
    tp.extend_from_slice(b"00-");
    put_hex(&mut tp, trace_id, 32);
    tp.push(b'-');
    put_hex(&mut tp, u128::from(span_id), 16);
    tp.extend_from_slice(if sampled { b"-01" } else { b"-00" });
    if let Some(v) = value(tp) {
        headers.insert(TRACEPARENT.clone(), v);
    }
    if !keep_state {
        headers.remove(&TRACESTATE);
    }
    let sampled_digit: &[u8] = if sampled { b"1" } else { b"0" };
    match format {
        Format::B3Single { wide } => {
            let mut b = Vec::with_capacity(68);
            put_hex(&mut b, trace_id, if wide { 32 } else { 16 });
            b.push(b'-');
            put_hex(&mut b, u128::from(span_id), 16);
            b.push(b'-');
            b.extend_from_slice(sampled_digit);
            if let Some(p) = parent {
                b.push(b'-');
                put_hex(&mut b, u128::from(p), 16);
            }
            if let Some(v) = value(b) {
                headers.insert(B3.clone(), v);
            }
            remove_b3_multi(headers);
        }
        Format::B3Multi { wide } => {
            let mut t = Vec::with_capacity(32);
            put_hex(&mut t, trace_id, if wide { 32 } else { 16 });
            let mut s = Vec::with_capacity(16);
            put_hex(&mut s, u128::from(span_id), 16);
            let pairs = [(&X_B3_TRACEID, value(t)), (&X_B3_SPANID, value(s))];
            for (name, v) in pairs {
                if let Some(v) = v {
                    headers.insert(name.clone(), v);
                }
            }
            match parent {
                Some(p) => {
                    let mut pv = Vec::with_capacity(16);
                    put_hex(&mut pv, u128::from(p), 16);
                    if let Some(v) = value(pv) {
                        headers.insert(X_B3_PARENTSPANID.clone(), v);
                    }
                }
                None => {
                    headers.remove(&X_B3_PARENTSPANID);
                }
            }
            headers.remove(&X_B3_FLAGS);
            let s = HeaderValue::from_static(if sampled { "1" } else { "0" });
            headers.insert(X_B3_SAMPLED.clone(), s);
            headers.remove(&B3);
        }
        Format::W3c => {
            headers.remove(&B3);
            remove_b3_multi(headers);
        }
    }
}

fn remove_b3_multi(headers: &mut HeaderMap) {
    for name in [
        &X_B3_TRACEID,
        &X_B3_SPANID,
        &X_B3_PARENTSPANID,
        &X_B3_SAMPLED,
        &X_B3_FLAGS,
    ] {
        headers.remove(name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TP: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    fn map(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for (k, v) in pairs {
            m.append(*k, HeaderValue::from_static(v));
        }
        m
    }

    #[test]
    fn traceparent_is_read_strictly() {
        let inc = parse_traceparent(TP.as_bytes()).expect("valid");
        assert_eq!(inc.trace_id, 0x4bf92f3577b34da6a3ce929d0e0e4736);
        assert_eq!(inc.parent, 0x00f067aa0ba902b7);
        assert_eq!(inc.sampled, Some(true));
        for bad in [
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01", // upper case
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01", // zero trace
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01", // zero span
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", // version ff
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x", // v00 extra
            "00-4bf92f3577b34da6a3ce929d0e0e473-600f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0g",
            "garbage",
            "",
        ] {
            assert_eq!(parse_traceparent(bad.as_bytes()), None, "{bad}");
        }
        // A later version may append fields after a dash.
        let v1 = "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00-extra";
        assert_eq!(
            parse_traceparent(v1.as_bytes()).map(|i| i.sampled),
            Some(Some(false))
        );
    }

    #[test]
    fn b3_single_and_multi() {
        let b = "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1-05e3ac9a4f6e3b90";
        let Some(Ok(inc)) = parse_b3(b.as_bytes()) else {
            panic!("valid b3")
        };
        assert_eq!(inc.parent, 0xe457b5a2e4d86bd1);
        assert_eq!(inc.sampled, Some(true));
        assert_eq!(inc.format, Format::B3Single { wide: true });
        assert_eq!(parse_b3(b"0"), Some(Err(Some(false))));
        assert_eq!(parse_b3(b"x"), None);
        assert_eq!(parse_b3(b"80f198ee56343ba8-e457b5a2e4d86bd1-2"), None);
        let m = map(&[
            ("x-b3-traceid", "80f198ee56343ba8"),
            ("x-b3-spanid", "e457b5a2e4d86bd1"),
            ("x-b3-sampled", "0"),
        ]);
        let Extracted::Join(inc) = extract(&m) else {
            panic!("multi")
        };
        assert_eq!(inc.trace_id, 0x80f198ee56343ba8);
        assert_eq!(inc.sampled, Some(false));
        assert_eq!(inc.format, Format::B3Multi { wide: false });
    }

    #[test]
    fn malformed_or_repeated_headers_start_a_new_trace() {
        let m = map(&[("traceparent", TP), ("traceparent", TP)]);
        assert_eq!(extract(&m), Extracted::New { sampled: None });
        let m = map(&[("traceparent", "00-zz"), ("b3", "d")]);
        assert_eq!(
            extract(&m),
            Extracted::New {
                sampled: Some(true)
            }
        );
    }

    #[test]
    fn inject_makes_our_span_the_parent_in_the_incoming_format() {
        let mut m = map(&[("traceparent", TP), ("tracestate", "a=b"), ("b3", "junk")]);
        inject(&mut m, Format::W3c, 0xabc, 0x1234, Some(7), true, true);
        assert_eq!(
            m.get("traceparent").map(|v| v.as_bytes()),
            Some(&b"00-00000000000000000000000000000abc-0000000000001234-01"[..])
        );
        assert_eq!(m.get("tracestate").map(|v| v.as_bytes()), Some(&b"a=b"[..]));
        assert!(m.get("b3").is_none());

        let mut m = map(&[("x-b3-traceid", "80f198ee56343ba8"), ("x-b3-flags", "1")]);
        inject(
            &mut m,
            Format::B3Multi { wide: false },
            0x80f198ee56343ba8,
            0x22,
            Some(0x11),
            false,
            false,
        );
        assert_eq!(
            m.get("x-b3-traceid").map(|v| v.as_bytes()),
            Some(&b"80f198ee56343ba8"[..])
        );
        assert_eq!(
            m.get("x-b3-spanid").map(|v| v.as_bytes()),
            Some(&b"0000000000000022"[..])
        );
        assert_eq!(
            m.get("x-b3-parentspanid").map(|v| v.as_bytes()),
            Some(&b"0000000000000011"[..])
        );
        assert_eq!(m.get("x-b3-sampled").map(|v| v.as_bytes()), Some(&b"0"[..]));
        assert!(m.get("x-b3-flags").is_none());

        let mut m = HeaderMap::new();
        inject(
            &mut m,
            Format::B3Single { wide: true },
            1,
            2,
            Some(3),
            true,
            false,
        );
        assert_eq!(
            m.get("b3").map(|v| v.as_bytes()),
            Some(&b"00000000000000000000000000000001-0000000000000002-1-0000000000000003"[..])
        );
        assert_eq!(&trace_id_hex(0xabc)[29..], b"abc");
    }
}
