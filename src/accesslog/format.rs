//! Access-log formats: Envoy-style command operators (`%RESPONSE_CODE%`,
//! `%REQ(USER-AGENT)%`, `%DURATION%`, ...) in a text template or as the values of a
//! JSON field set. A format is parsed once, when the config is compiled, into a list
//! of parts; per request the parts are rendered without parsing, and request or
//! response headers are captured only when the format names them.
//!
//! Adding an operator: a variant of [`Op`], its name in [`OPERATORS`], its value in
//! [`value`], and a row in docs/admin.md#access-log.

use std::borrow::Cow;
use std::fmt::Write;
use std::time::Duration;

use http::HeaderName;

use super::Record;

mod strftime;
use strftime::TimeFormat;

/// Every operator name, for did-you-mean hints and the docs. `(name, takes_arg)`.
pub const OPERATORS: &[(&str, bool)] = &[
    ("START_TIME", true),
    ("REQ", true),
    ("RESP", true),
    ("PROTOCOL", false),
    ("RESPONSE_CODE", false),
    ("RESPONSE_FLAGS", false),
    ("BYTES_RECEIVED", false),
    ("BYTES_SENT", false),
    ("DURATION", true),
    ("RESPONSE_DURATION", true),
    ("UPSTREAM_CONNECT_DURATION", true),
    ("UPSTREAM_HOST", false),
    ("UPSTREAM_CLUSTER", false),
    ("UPSTREAM_REQUEST_ATTEMPT_COUNT", false),
    ("ROUTE_NAME", false),
    ("REQUEST_ID", false),
    ("LISTENER_NAME", false),
    ("DOWNSTREAM_REMOTE_ADDRESS", false),
    ("DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT", false),
    ("DOWNSTREAM_PEER_URI_SAN", false),
    ("DOWNSTREAM_PEER_DNS_SAN", false),
    ("DOWNSTREAM_PEER_SAN", false),
    ("DOWNSTREAM_PEER_SUBJECT", false),
    ("DOWNSTREAM_TLS_VERSION", false),
    ("DOWNSTREAM_TLS_CIPHER", false),
    ("REQUESTED_SERVER_NAME", false),
    ("GRPC_STATUS", false),
    ("TRACE_ID", false),
];

/// Where a `%REQ(...)%` / `%RESP(...)%` value comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Src {
    Method,
    Path,
    Authority,
    /// Index into [`Format::req_headers`].
    Req(usize),
    /// Index into [`Format::resp_headers`].
    Resp(usize),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Unit {
    Ms,
    Us,
    /// Seconds with millisecond resolution (NGINX's `$request_time`).
    S,
    /// Milliseconds with three decimals (the built-in formats' `duration_ms`).
    MsFrac,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    StartTime,
    /// `%START_TIME(FORMAT)%`: index into [`Format::times`].
    StartTimeAs(usize),
    Protocol,
    ResponseCode,
    ResponseFlags,
    /// The gRPC status name of a gRPC call (`PERMISSION_DENIED`).
    GrpcStatus,
    /// The request's trace id (32 hex digits) on listeners with `tracing:`.
    TraceId,
    BytesReceived,
    BytesSent,
    Duration(Unit),
    ResponseDuration(Unit),
    UpstreamConnectDuration(Unit),
    UpstreamHost,
    UpstreamCluster,
    UpstreamAttempts,
    RouteName,
    RequestId,
    ListenerName,
    RemoteAddress,
    RemoteAddressWithoutPort,
    PeerUriSan,
    PeerDnsSan,
    /// The first verified SAN, URI then DNS.
    PeerSan,
    PeerSubject,
    TlsVersion,
    TlsCipher,
    Sni,
    Header {
        src: Src,
        alt: Option<Src>,
        max: Option<usize>,
    },
}

#[derive(Debug, Clone, PartialEq)]
enum Part {
    Lit(String),
    Op(Op),
}

/// How a JSON field renders a value that is absent or empty.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Absent {
    Null,
    Empty,
    Dash,
}

#[derive(Debug, Clone, PartialEq)]
struct Field {
    /// `"key":`, escaped once at compile time.
    key: String,
    parts: Vec<Part>,
    absent: Absent,
}

#[derive(Debug, Clone, PartialEq)]
enum Kind {
    Text(Vec<Part>),
    Json(Vec<Field>),
}

/// A compiled format.
#[derive(Debug, Clone, PartialEq)]
pub struct Format {
    kind: Kind,
    /// Request headers the format reads, captured per request in this order.
    pub req_headers: Vec<HeaderName>,
    /// Response headers the format reads, captured per response in this order.
    pub resp_headers: Vec<HeaderName>,
    /// The `%START_TIME(...)%` patterns, compiled.
    times: Vec<TimeFormat>,
}

/// The built-in `format: text` line.
const TEXT: &str = "[%START_TIME%] \"%REQ(:METHOD)% %REQ(:PATH)% %PROTOCOL%\" %RESPONSE_CODE% \
%RESPONSE_FLAGS% %BYTES_RECEIVED% %BYTES_SENT% %DURATION(ms.3)% \"%UPSTREAM_HOST%\" \
\"%ROUTE_NAME%\" \"%UPSTREAM_CLUSTER%\" \"%REQUEST_ID%\" \"%REQ(:AUTHORITY)%\" \
\"%DOWNSTREAM_REMOTE_ADDRESS%\" \"%REQ(USER-AGENT)%\"";

/// The built-in `format: json` fields (sorted by key, as before formats existed).
const JSON: &[(&str, &str)] = &[
    ("authority", "%REQ(:AUTHORITY)%"),
    ("bytes_received", "%BYTES_RECEIVED%"),
    ("bytes_sent", "%BYTES_SENT%"),
    ("cluster", "%UPSTREAM_CLUSTER%"),
    ("downstream_remote", "%DOWNSTREAM_REMOTE_ADDRESS%"),
    ("duration_ms", "%DURATION(ms.3)%"),
    ("grpc_status", "%GRPC_STATUS%"),
    ("method", "%REQ(:METHOD)%"),
    ("path", "%REQ(:PATH)%"),
    ("peer_san", "%DOWNSTREAM_PEER_SAN%"),
    ("protocol", "%PROTOCOL%"),
    ("request_id", "%REQUEST_ID%"),
    ("response_flags", "%RESPONSE_FLAGS%"),
    ("route", "%ROUTE_NAME%"),
    ("start_time", "%START_TIME%"),
    ("status", "%RESPONSE_CODE%"),
    ("trace_id", "%TRACE_ID%"),
    ("upstream", "%UPSTREAM_HOST%"),
    ("user_agent", "%REQ(USER-AGENT)%"),
];

#[derive(Default)]
struct Builder {
    req: Vec<HeaderName>,
    resp: Vec<HeaderName>,
    times: Vec<TimeFormat>,
    /// Allow the built-ins' private operators.
    builtin: bool,
}

impl Format {
    /// `format: text`: the built-in line.
    pub fn builtin_text() -> Format {
        let mut b = Builder {
            builtin: true,
            ..Builder::default()
        };
        let parts = b.parse(TEXT).unwrap_or_default();
        b.finish(Kind::Text(parts))
    }

    /// `format: json`: the built-in field set.
    pub fn builtin_json() -> Format {
        let mut b = Builder {
            builtin: true,
            ..Builder::default()
        };
        let fields = JSON
            .iter()
            .map(|(k, v)| Field {
                key: json_key(k),
                parts: b.parse(v).unwrap_or_default(),
                absent: if *k == "response_flags" {
                    Absent::Dash
                } else {
                    Absent::Empty
                },
            })
            .collect();
        b.finish(Kind::Json(fields))
    }

    /// A text template (`format: "..."`). A trailing newline is dropped (each line
    /// ends with one).
    pub fn text(template: &str) -> Result<Format, Vec<String>> {
        let mut b = Builder::default();
        let template = template.strip_suffix('\n').unwrap_or(template);
        let parts = b.parse(template)?;
        Ok(b.finish(Kind::Text(parts)))
    }

    /// A JSON field set (`json_format: { key: "%OP%" }`), in the given order. Errors
    /// are `(key, message)`, every one.
    pub fn json(fields: &[(String, String)]) -> Result<Format, Vec<(String, String)>> {
        let mut b = Builder::default();
        let mut out = Vec::new();
        let mut errors = Vec::new();
        for (k, v) in fields {
            match b.parse(v) {
                Ok(parts) => out.push(Field {
                    key: json_key(k),
                    parts,
                    absent: Absent::Null,
                }),
                Err(es) => errors.extend(es.into_iter().map(|e| (k.clone(), e))),
            }
        }
        if errors.is_empty() {
            Ok(b.finish(Kind::Json(out)))
        } else {
            Err(errors)
        }
    }

    /// Append one line (without its newline) for `rec` to `out`.
    pub fn render(&self, rec: &Record<'_>, out: &mut String) {
        match &self.kind {
            Kind::Text(parts) => {
                for p in parts {
                    match p {
                        Part::Lit(s) => out.push_str(s),
                        Part::Op(op) => text_value(value(*op, rec, &self.times), out),
                    }
                }
            }
            Kind::Json(fields) => {
                out.push('{');
                for (i, f) in fields.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    out.push_str(&f.key);
                    json_field(f, rec, &self.times, out);
                }
                out.push('}');
            }
        }
    }
}

impl Builder {
    fn finish(self, kind: Kind) -> Format {
        Format {
            kind,
            req_headers: self.req,
            resp_headers: self.resp,
            times: self.times,
        }
    }

    /// Split a template into literals and operators; `%%` is a literal `%`. On
    /// failure, every bad operator's problem.
    fn parse(&mut self, template: &str) -> Result<Vec<Part>, Vec<String>> {
        let mut parts = Vec::new();
        let mut errors = Vec::new();
        let mut lit = String::new();
        let mut rest = template;
        while let Some(i) = rest.find('%') {
            lit.push_str(&rest[..i]);
            let after = &rest[i + 1..];
            if let Some(r) = after.strip_prefix('%') {
                lit.push('%');
                rest = r;
                continue;
            }
            // A strftime pattern holds `%`s of its own: it ends at `)%`.
            let end = match after.strip_prefix("START_TIME(") {
                Some(arg) => arg.find(")%").map(|e| e + "START_TIME()".len()),
                None => after.find('%'),
            };
            let Some(end) = end else {
                let at = template.len() - rest.len() + i;
                errors.push(format!(
                    "unterminated operator at byte {at} of the format; write `%NAME%`, `%START_TIME(PATTERN)%`, or `%%` for a literal %"
                ));
                return Err(errors);
            };
            if !lit.is_empty() {
                parts.push(Part::Lit(std::mem::take(&mut lit)));
            }
            match self.operator(&after[..end]) {
                Ok(op) => parts.push(Part::Op(op)),
                Err(e) => errors.push(e),
            }
            rest = &after[end + 1..];
        }
        lit.push_str(rest);
        if !lit.is_empty() {
            parts.push(Part::Lit(lit));
        }
        if errors.is_empty() {
            Ok(parts)
        } else {
            Err(errors)
        }
    }

    /// One operator body: `NAME`, `NAME(ARG)` or `NAME(ARG):MAX`.
    fn operator(&mut self, body: &str) -> Result<Op, String> {
        let (head, max) = match body.rsplit_once("):") {
            Some((h, m)) => {
                let max: usize = m.parse().map_err(|_| {
                    format!("`%{body}%`: the length limit after `:` must be a number")
                })?;
                (format!("{h})"), Some(max))
            }
            None => (body.to_string(), None),
        };
        let (name, arg) = match head.split_once('(') {
            Some((n, a)) => match a.strip_suffix(')') {
                Some(a) => (n, Some(a)),
                None => return Err(format!("`%{body}%`: missing `)`")),
            },
            None => (head.as_str(), None),
        };
        let unit = |arg: Option<&str>| -> Result<Unit, String> {
            match arg {
                None | Some("ms") => Ok(Unit::Ms),
                Some("us") => Ok(Unit::Us),
                Some("s") => Ok(Unit::S),
                Some("ms.3") if self.builtin => Ok(Unit::MsFrac),
                Some(u) => Err(format!("`%{body}%`: unknown unit `{u}`; use ms, us or s")),
            }
        };
        let op = match name {
            "REQ" | "RESP" => {
                let arg = arg.ok_or_else(|| {
                    format!("`%{name}%` needs a header name: `%{name}(USER-AGENT)%`")
                })?;
                let (a, b) = match arg.split_once('?') {
                    Some((a, b)) => (a, Some(b)),
                    None => (arg, None),
                };
                let src = self.source(name == "REQ", a, body)?;
                let alt = b.map(|b| self.source(name == "REQ", b, body)).transpose()?;
                return Ok(Op::Header { src, alt, max });
            }
            "DURATION" => Op::Duration(unit(arg)?),
            "RESPONSE_DURATION" => Op::ResponseDuration(unit(arg)?),
            "UPSTREAM_CONNECT_DURATION" => Op::UpstreamConnectDuration(unit(arg)?),
            "START_TIME" => match arg {
                None => Op::StartTime,
                Some(pattern) => {
                    let f = TimeFormat::parse(pattern).map_err(|e| format!("`%{body}%`: {e}"))?;
                    self.times.push(f);
                    Op::StartTimeAs(self.times.len() - 1)
                }
            },
            _ => {
                let op = simple(name).ok_or_else(|| unknown(name))?;
                if arg.is_some() {
                    return Err(format!("`%{name}%` takes no argument"));
                }
                op
            }
        };
        if max.is_some() {
            return Err(format!(
                "`%{body}%`: a length limit is only allowed on %REQ(...)% and %RESP(...)%"
            ));
        }
        Ok(op)
    }

    fn source(&mut self, request: bool, name: &str, body: &str) -> Result<Src, String> {
        let lower = name.to_ascii_lowercase();
        if request {
            match lower.as_str() {
                ":method" => return Ok(Src::Method),
                ":path" => return Ok(Src::Path),
                ":authority" | "host" => return Ok(Src::Authority),
                _ => {}
            }
        }
        let h = HeaderName::from_bytes(lower.as_bytes())
            .map_err(|_| format!("`%{body}%`: `{name}` is not a header name"))?;
        let list = if request {
            &mut self.req
        } else {
            &mut self.resp
        };
        let i = list.iter().position(|x| *x == h).unwrap_or_else(|| {
            list.push(h);
            list.len() - 1
        });
        Ok(if request { Src::Req(i) } else { Src::Resp(i) })
    }
}

fn simple(name: &str) -> Option<Op> {
    Some(match name {
        "PROTOCOL" => Op::Protocol,
        "RESPONSE_CODE" => Op::ResponseCode,
        "RESPONSE_FLAGS" => Op::ResponseFlags,
        "GRPC_STATUS" => Op::GrpcStatus,
        "TRACE_ID" => Op::TraceId,
        "BYTES_RECEIVED" => Op::BytesReceived,
        "BYTES_SENT" => Op::BytesSent,
        "UPSTREAM_HOST" => Op::UpstreamHost,
        "UPSTREAM_CLUSTER" => Op::UpstreamCluster,
        "UPSTREAM_REQUEST_ATTEMPT_COUNT" => Op::UpstreamAttempts,
        "ROUTE_NAME" => Op::RouteName,
        "REQUEST_ID" => Op::RequestId,
        "LISTENER_NAME" => Op::ListenerName,
        "DOWNSTREAM_REMOTE_ADDRESS" => Op::RemoteAddress,
        "DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT" => Op::RemoteAddressWithoutPort,
        "DOWNSTREAM_PEER_URI_SAN" => Op::PeerUriSan,
        "DOWNSTREAM_PEER_DNS_SAN" => Op::PeerDnsSan,
        "DOWNSTREAM_PEER_SAN" => Op::PeerSan,
        "DOWNSTREAM_PEER_SUBJECT" => Op::PeerSubject,
        "DOWNSTREAM_TLS_VERSION" => Op::TlsVersion,
        "DOWNSTREAM_TLS_CIPHER" => Op::TlsCipher,
        "REQUESTED_SERVER_NAME" => Op::Sni,
        _ => return None,
    })
}

fn unknown(name: &str) -> String {
    let hint = crate::config::load::did_you_mean(name, OPERATORS.iter().map(|(n, _)| *n))
        .map(|s| format!("; did you mean `%{s}%`?"))
        .unwrap_or_else(|| "; the operators are listed in docs/admin.md#access-log".into());
    format!("unknown operator `%{name}%`{hint}")
}

fn json_key(k: &str) -> String {
    let mut s = String::with_capacity(k.len() + 3);
    json_str(k, &mut s);
    s.push(':');
    s
}

/// One value of one stream.
enum Val<'a> {
    None,
    Str(Cow<'a, str>),
    Int(u64),
    Float3(f64),
}

fn s(v: &str) -> Val<'_> {
    if v.is_empty() {
        Val::None
    } else {
        Val::Str(Cow::Borrowed(v))
    }
}

fn dur(d: Option<Duration>, unit: Unit) -> Val<'static> {
    let Some(d) = d else { return Val::None };
    match unit {
        Unit::Ms => Val::Int(u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
        Unit::Us => Val::Int(u64::try_from(d.as_micros()).unwrap_or(u64::MAX)),
        Unit::S => Val::Float3(d.as_secs_f64()),
        Unit::MsFrac => Val::Float3(d.as_secs_f64() * 1000.0),
    }
}

fn value<'a>(op: Op, r: &'a Record<'_>, times: &[TimeFormat]) -> Val<'a> {
    match op {
        Op::StartTime => r
            .start_time
            .map_or(Val::None, |t| Val::Str(Cow::Owned(crate::http::rfc3339(t)))),
        Op::StartTimeAs(i) => match (r.start_time, times.get(i)) {
            (Some(t), Some(f)) => {
                let mut out = String::new();
                f.render(t, &mut out);
                Val::Str(Cow::Owned(out))
            }
            _ => Val::None,
        },
        Op::Protocol => s(r.protocol),
        Op::ResponseCode => Val::Int(u64::from(r.status)),
        Op::ResponseFlags => s(r.response_flag),
        // `-` for a request that is not a gRPC call, as the gRPC docs show.
        Op::GrpcStatus if r.grpc_status.is_empty() => s("-"),
        Op::GrpcStatus => s(r.grpc_status),
        Op::TraceId => s(r.trace_id),
        Op::BytesReceived => Val::Int(r.bytes_received),
        Op::BytesSent => Val::Int(r.bytes_sent),
        Op::Duration(u) => dur(r.duration, u),
        Op::ResponseDuration(u) => dur(r.response_duration, u),
        Op::UpstreamConnectDuration(u) => dur(r.upstream_connect, u),
        Op::UpstreamHost => s(r.upstream),
        Op::UpstreamCluster => s(r.cluster),
        Op::UpstreamAttempts => match r.attempts {
            0 => Val::None,
            n => Val::Int(u64::from(n)),
        },
        Op::RouteName => s(r.route),
        Op::RequestId => s(r.request_id),
        Op::ListenerName => s(r.listener),
        Op::RemoteAddress => s(r.downstream),
        Op::RemoteAddressWithoutPort => match r.downstream.rsplit_once(':') {
            Some((ip, _)) => s(ip.trim_start_matches('[').trim_end_matches(']')),
            None => s(r.downstream),
        },
        Op::PeerUriSan => s(r.peer_uri_san),
        Op::PeerDnsSan => s(r.peer_dns_san),
        Op::PeerSan => s(r.peer_san),
        Op::PeerSubject => s(r.peer_subject),
        Op::TlsVersion => s(r.tls_version),
        Op::TlsCipher => s(r.tls_cipher),
        Op::Sni => s(r.sni),
        Op::Header { src, alt, max } => {
            let v = match header(src, r) {
                Val::None => alt.map_or(Val::None, |a| header(a, r)),
                v => v,
            };
            match (v, max) {
                (Val::Str(t), Some(max)) => Val::Str(truncate(t, max)),
                (v, _) => v,
            }
        }
    }
}

fn header<'a>(src: Src, r: &'a Record<'_>) -> Val<'a> {
    let hv = |v: Option<&'a Option<http::HeaderValue>>| match v {
        Some(Some(v)) if !v.is_empty() => Val::Str(String::from_utf8_lossy(v.as_bytes())),
        _ => Val::None,
    };
    match src {
        Src::Method => s(r.method),
        Src::Path => s(r.path),
        Src::Authority => s(r.authority),
        Src::Req(i) => hv(r.req_headers.get(i)),
        Src::Resp(i) => hv(r.resp_headers.get(i)),
    }
}

/// At most `max` characters.
fn truncate(t: Cow<'_, str>, max: usize) -> Cow<'_, str> {
    match t.char_indices().nth(max) {
        None => t,
        Some((i, _)) => match t {
            Cow::Borrowed(b) => Cow::Borrowed(&b[..i]),
            Cow::Owned(mut o) => {
                o.truncate(i);
                Cow::Owned(o)
            }
        },
    }
}

/// Text: absent as `-`; strings escaped (quotes, backslashes, control characters) so
/// request data cannot split or forge a line.
fn text_value(v: Val<'_>, out: &mut String) {
    match v {
        Val::None => out.push('-'),
        Val::Str(t) => {
            let _ = write!(out, "{}", t.escape_debug());
        }
        Val::Int(n) => {
            let _ = write!(out, "{n}");
        }
        Val::Float3(f) => {
            let _ = write!(out, "{f:.3}");
        }
    }
}

fn json_field(f: &Field, rec: &Record<'_>, times: &[TimeFormat], out: &mut String) {
    // One operator alone keeps its type (number, string, null).
    if let [Part::Op(op)] = f.parts.as_slice() {
        match value(*op, rec, times) {
            Val::None => out.push_str(match f.absent {
                Absent::Null => "null",
                Absent::Empty => "\"\"",
                Absent::Dash => "\"-\"",
            }),
            Val::Str(t) => json_str(&t, out),
            Val::Int(n) => {
                let _ = write!(out, "{n}");
            }
            Val::Float3(x) => {
                let _ = write!(out, "{}", (x * 1000.0).round() / 1000.0);
            }
        }
        return;
    }
    let mut line = String::new();
    for p in &f.parts {
        match p {
            Part::Lit(l) => line.push_str(l),
            Part::Op(op) => match value(*op, rec, times) {
                Val::None => line.push('-'),
                Val::Str(t) => line.push_str(&t),
                Val::Int(n) => {
                    let _ = write!(line, "{n}");
                }
                Val::Float3(x) => {
                    let _ = write!(line, "{x:.3}");
                }
            },
        }
    }
    json_str(&line, out);
}

/// A JSON string literal.
fn json_str(v: &str, out: &mut String) {
    out.push('"');
    for c in v.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests;
