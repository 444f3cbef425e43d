//! The PROXY protocol (HAProxy, versions 1 and 2) on the downstream side: a listener
//! behind an L4 load balancer learns the client's address from a header sent before
//! any other byte (and before TLS).
//!
//! ```yaml
//! listeners:
//!   - name: ingress
//!     address: 0.0.0.0:8443
//!     proxy_protocol: { allowed_sources: [10.0.0.0/8], timeout: 3s }   # or `true`
//! ```
//!
//! Exactly the header's bytes are read (v1 ends at CRLF within 107 bytes, v2 carries
//! its length), so nothing of the payload is consumed. A v2 `LOCAL` command (the load
//! balancer's own health check) and address families other than TCP over IPv4/IPv6
//! (`UNSPEC`, `AF_UNIX`, v1 `UNKNOWN`) keep the connection's own address; TLVs are
//! checked for shape and skipped.
//!
//! | metric | labels | what |
//! | --- | --- | --- |
//! | `attache_downstream_proxy_protocol_total` | `listener`, `result` | one per connection on an opted-in listener; `result` is one of [`Outcome::ALL`] |

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use prometheus::IntCounter;
use tokio::io::{AsyncRead, AsyncReadExt};

use crate::cidr::Cidr;
use crate::stats::Stats;

pub const PROXY_PROTOCOL_TOTAL: &str = "attache_downstream_proxy_protocol_total";

/// Default bound on reading the header.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(3);

/// The v2 signature (12 bytes).
pub const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
/// The longest v1 line, CRLF included (the spec's 107 bytes).
pub const V1_MAX: usize = 107;

/// What the header said about the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Header {
    /// A proxied TCP connection: the client's and the original destination's address.
    Proxied {
        source: SocketAddr,
        destination: SocketAddr,
    },
    /// v2 `LOCAL`, v1 `UNKNOWN`, or an address family that is not TCP/IP: use the
    /// connection's own addresses.
    Local,
}

/// How reading a header ended; one label value each of
/// `attache_downstream_proxy_protocol_total{result}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    V1,
    V2,
    /// v2 `LOCAL` or v1 `UNKNOWN`.
    Local,
    /// The first bytes are not a PROXY header.
    Missing,
    Malformed,
    Timeout,
    /// The connection came from outside `allowed_sources`.
    NotAllowed,
    /// A PROXY header sent to a listener that did not opt in (HTTP only; 400).
    Unexpected,
}

impl Outcome {
    pub const ALL: [Outcome; 8] = [
        Outcome::V1,
        Outcome::V2,
        Outcome::Local,
        Outcome::Missing,
        Outcome::Malformed,
        Outcome::Timeout,
        Outcome::NotAllowed,
        Outcome::Unexpected,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::V1 => "v1",
            Outcome::V2 => "v2",
            Outcome::Local => "local",
            Outcome::Missing => "missing",
            Outcome::Malformed => "malformed",
            Outcome::Timeout => "timeout",
            Outcome::NotAllowed => "not_allowed",
            Outcome::Unexpected => "unexpected",
        }
    }
}

/// A listener's compiled `proxy_protocol:` setting and its counters.
#[derive(Debug)]
pub struct Settings {
    /// Empty: any source may send a header.
    pub allowed_sources: Vec<Cidr>,
    pub timeout: Duration,
    counters: Counters,
}

/// `attache_downstream_proxy_protocol_total` for one listener, by [`Outcome`].
#[derive(Debug, Clone)]
pub struct Counters([IntCounter; 8]);

fn counter_vec(stats: &Stats) -> prometheus::IntCounterVec {
    stats.counter_vec(
        PROXY_PROTOCOL_TOTAL,
        "Downstream connections by PROXY protocol header result",
        &["listener", "result"],
    )
}

/// The one counter a listener that did not opt in has: PROXY headers it received
/// (`result="unexpected"`; HTTP answers them 400).
pub fn unexpected_counter(stats: &Stats, listener: &str) -> IntCounter {
    counter_vec(stats).with_label_values(&[listener, Outcome::Unexpected.as_str()])
}

impl Counters {
    pub fn new(stats: &Stats, listener: &str) -> Counters {
        let vec = counter_vec(stats);
        Counters(Outcome::ALL.map(|o| vec.with_label_values(&[listener, o.as_str()])))
    }

    pub fn count(&self, o: Outcome) {
        self.0[o as usize].inc();
    }
}

impl Settings {
    pub fn new(allowed_sources: Vec<Cidr>, timeout: Duration, counters: Counters) -> Settings {
        Settings {
            allowed_sources,
            timeout,
            counters,
        }
    }

    /// Admit a connection from `peer` and read its header; `None` closes it. The
    /// outcome is counted and logged here.
    pub async fn accept<IO: AsyncRead + Unpin>(
        &self,
        io: &mut IO,
        peer: SocketAddr,
        listener: &str,
    ) -> Option<Header> {
        let result = if !self.allowed(peer.ip()) {
            Err(Outcome::NotAllowed)
        } else {
            match tokio::time::timeout(self.timeout, read_header(io)).await {
                Ok(r) => r,
                Err(_) => Err(Outcome::Timeout),
            }
        };
        match result {
            Ok((header, outcome)) => {
                self.counters.count(outcome);
                Some(header)
            }
            Err(outcome) => {
                self.counters.count(outcome);
                tracing::debug!(%listener, remote = %peer, result = outcome.as_str(), "closing connection: no valid PROXY header");
                None
            }
        }
    }

    fn allowed(&self, ip: IpAddr) -> bool {
        self.allowed_sources.is_empty() || self.allowed_sources.iter().any(|c| c.contains(ip))
    }
}

/// Whether the start of a request is a PROXY header (either version); for counting
/// headers sent to listeners that did not opt in.
pub fn looks_like_header(b: &[u8]) -> bool {
    b.starts_with(b"PROXY ") || b.starts_with(&V2_SIGNATURE[..8])
}

/// Read one header, exactly its bytes. `Err` is the outcome to count.
pub async fn read_header<IO: AsyncRead + Unpin>(io: &mut IO) -> Result<(Header, Outcome), Outcome> {
    // 8 bytes tell the versions apart ("PROXY " + 2, or the v2 signature's first 8);
    // the shortest v1 line ("PROXY UNKNOWN\r\n") is 15.
    let mut start = [0u8; 16];
    read_exact(io, &mut start[..8]).await?;
    if start.starts_with(b"PROXY ") {
        let mut line = [0u8; V1_MAX];
        line[..8].copy_from_slice(&start[..8]);
        let len = read_v1_line(io, &mut line).await?;
        let header = parse_v1(&line[..len]).ok_or(Outcome::Malformed)?;
        let outcome = match header {
            Header::Local => Outcome::Local,
            Header::Proxied { .. } => Outcome::V1,
        };
        return Ok((header, outcome));
    }
    if start[..8] != V2_SIGNATURE[..8] {
        return Err(Outcome::Missing);
    }
    read_exact(io, &mut start[8..]).await?;
    if start[..12] != V2_SIGNATURE {
        return Err(Outcome::Malformed);
    }
    let len = usize::from(u16::from_be_bytes([start[14], start[15]]));
    let mut body = vec![0u8; len];
    read_exact(io, &mut body).await?;
    let header = parse_v2(start[12], start[13], &body).ok_or(Outcome::Malformed)?;
    let outcome = match header {
        Header::Local => Outcome::Local,
        Header::Proxied { .. } => Outcome::V2,
    };
    Ok((header, outcome))
}

async fn read_exact<IO: AsyncRead + Unpin>(io: &mut IO, buf: &mut [u8]) -> Result<(), Outcome> {
    match io.read_exact(buf).await {
        Ok(_) => Ok(()),
        // A connection that closed before a whole header is a truncated header.
        Err(_) => Err(Outcome::Malformed),
    }
}

/// Read the rest of a v1 line (8 bytes are in `line`) one byte at a time, so nothing
/// after the CRLF is consumed. Returns the line's length, CRLF included.
async fn read_v1_line<IO: AsyncRead + Unpin>(
    io: &mut IO,
    line: &mut [u8; V1_MAX],
) -> Result<usize, Outcome> {
    let mut n = 8;
    while n < V1_MAX {
        read_exact(io, &mut line[n..n + 1]).await?;
        n += 1;
        if line[n - 1] == b'\n' {
            return if line[n - 2] == b'\r' {
                Ok(n)
            } else {
                Err(Outcome::Malformed)
            };
        }
    }
    Err(Outcome::Malformed)
}

/// A whole v1 line, CRLF included: `PROXY TCP4 src dst sport dport\r\n` or
/// `PROXY UNKNOWN...\r\n`. Single spaces, no leading zeros or signs in ports.
pub fn parse_v1(line: &[u8]) -> Option<Header> {
    let line = line.strip_suffix(b"\r\n")?;
    let line = std::str::from_utf8(line).ok()?;
    let rest = line.strip_prefix("PROXY ")?;
    if rest == "UNKNOWN" || rest.starts_with("UNKNOWN ") {
        return Some(Header::Local);
    }
    let mut f = rest.split(' ');
    let (fam, src, dst, sport, dport) = (f.next()?, f.next()?, f.next()?, f.next()?, f.next()?);
    if f.next().is_some() {
        return None;
    }
    let (src, dst): (IpAddr, IpAddr) = match fam {
        "TCP4" => (
            src.parse::<Ipv4Addr>().ok()?.into(),
            dst.parse::<Ipv4Addr>().ok()?.into(),
        ),
        "TCP6" => (
            src.parse::<Ipv6Addr>().ok()?.into(),
            dst.parse::<Ipv6Addr>().ok()?.into(),
        ),
        _ => return None,
    };
    Some(Header::Proxied {
        source: SocketAddr::new(src, port(sport)?),
        destination: SocketAddr::new(dst, port(dport)?),
    })
}

fn port(s: &str) -> Option<u16> {
    let digits = !s.is_empty() && s.len() <= 5 && s.bytes().all(|b| b.is_ascii_digit());
    if !digits || (s.len() > 1 && s.starts_with('0')) {
        return None;
    }
    s.parse().ok()
}

/// A v2 header after the signature: version/command byte, family/protocol byte and
/// the `len` bytes of addresses and TLVs.
pub fn parse_v2(ver_cmd: u8, fam: u8, body: &[u8]) -> Option<Header> {
    if ver_cmd >> 4 != 2 {
        return None;
    }
    let local = match ver_cmd & 0x0f {
        0 => true,
        1 => false,
        _ => return None,
    };
    // Transport: UNSPEC or STREAM; a datagram address on a stream is not ours.
    if !matches!(fam & 0x0f, 0 | 1) {
        return None;
    }
    let (addr_len, header) = match fam >> 4 {
        1 => {
            let b = body.get(..12)?;
            let ip = |o: usize| IpAddr::from([b[o], b[o + 1], b[o + 2], b[o + 3]]);
            (12, proxied(ip(0), ip(4), &b[8..12]))
        }
        2 => {
            let b = body.get(..36)?;
            let ip = |o: usize| {
                let mut a = [0u8; 16];
                a.copy_from_slice(&b[o..o + 16]);
                IpAddr::from(a)
            };
            (36, proxied(ip(0), ip(16), &b[32..36]))
        }
        // AF_UNIX (two 108-byte paths) and UNSPEC: no TCP/IP address to use.
        3 if body.len() >= 216 => (216, Header::Local),
        0 => (0, Header::Local),
        _ => return None,
    };
    if fam >> 4 != 0 && !tlvs_well_formed(&body[addr_len..]) {
        return None;
    }
    Some(if local { Header::Local } else { header })
}

fn proxied(src: IpAddr, dst: IpAddr, ports: &[u8]) -> Header {
    Header::Proxied {
        source: SocketAddr::new(src, u16::from_be_bytes([ports[0], ports[1]])),
        destination: SocketAddr::new(dst, u16::from_be_bytes([ports[2], ports[3]])),
    }
}

/// TLVs (type, 2-byte length, value) must exactly fill what follows the addresses.
fn tlvs_well_formed(mut b: &[u8]) -> bool {
    while !b.is_empty() {
        let Some(&[_, hi, lo]) = b.get(..3) else {
            return false;
        };
        let len = 3 + usize::from(u16::from_be_bytes([hi, lo]));
        let Some(rest) = b.get(len..) else {
            return false;
        };
        b = rest;
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v2(cmd: u8, fam: u8, body: &[u8]) -> Vec<u8> {
        let mut v = V2_SIGNATURE.to_vec();
        v.push(cmd);
        v.push(fam);
        v.extend_from_slice(&(body.len() as u16).to_be_bytes());
        v.extend_from_slice(body);
        v
    }

    async fn read(bytes: &[u8]) -> (Result<(Header, Outcome), Outcome>, Vec<u8>) {
        let mut r = bytes;
        let res = read_header(&mut r).await;
        (res, r.to_vec())
    }

    fn v4(a: [u8; 4], p: u16, b: [u8; 4], q: u16) -> Header {
        Header::Proxied {
            source: SocketAddr::from((a, p)),
            destination: SocketAddr::from((b, q)),
        }
    }

    #[tokio::test]
    async fn v1_reads_exactly_the_line() {
        let (r, rest) = read(b"PROXY TCP4 192.0.2.1 198.51.100.2 5555 443\r\nGET /").await;
        assert_eq!(
            r,
            Ok((
                v4([192, 0, 2, 1], 5555, [198, 51, 100, 2], 443),
                Outcome::V1
            ))
        );
        assert_eq!(rest, b"GET /");
        let (r, _) = read(b"PROXY TCP6 2001:db8::1 ::1 1 2\r\n").await;
        assert!(matches!(r, Ok((Header::Proxied { .. }, Outcome::V1))));
        let (r, rest) = read(b"PROXY UNKNOWN ffff::1 x\r\nX").await;
        assert_eq!(r, Ok((Header::Local, Outcome::Local)));
        assert_eq!(rest, b"X");
    }

    #[tokio::test]
    async fn v1_malformed_lines_are_rejected() {
        let long = format!("PROXY TCP4 1.1.1.1 1.1.1.1 1 1{}\r\n", " ".repeat(80));
        for bad in [
            &b"PROXY TCP4 1.1.1.1 1.1.1.1 1 1\n"[..],
            b"PROXY TCP4 1.1.1.1  1.1.1.1 1 1\r\n",
            b"PROXY TCP4 1.1.1.1 1.1.1.1 01 1\r\n",
            b"PROXY TCP4 1.1.1.1 1.1.1.1 +1 1\r\n",
            b"PROXY TCP4 1.1.1.1 1.1.1.1 65536 1\r\n",
            b"PROXY TCP4 ::1 1.1.1.1 1 1\r\n",
            b"PROXY TCP5 1.1.1.1 1.1.1.1 1 1\r\n",
            b"PROXY TCP4 1.1.1.1 1.1.1.1 1 1 x\r\n",
            b"PROXY TCP4 1.1.1.1 1.1",
            long.as_bytes(),
        ] {
            assert_eq!(
                read(bad).await.0,
                Err(Outcome::Malformed),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        assert_eq!(
            read(b"GET / HTTP/1.1\r\n\r\n").await.0,
            Err(Outcome::Missing)
        );
    }

    #[tokio::test]
    async fn v1_line_of_107_bytes_is_the_limit() {
        // "PROXY UNKNOWN" + padding + CRLF = exactly 107 bytes: accepted; 108: not.
        let ok = format!("PROXY UNKNOWN {}\r\n", "x".repeat(V1_MAX - 16));
        assert_eq!(ok.len(), V1_MAX);
        assert_eq!(
            read(ok.as_bytes()).await.0,
            Ok((Header::Local, Outcome::Local))
        );
        let over = format!("PROXY UNKNOWN {}\r\n", "x".repeat(V1_MAX - 15));
        assert_eq!(read(over.as_bytes()).await.0, Err(Outcome::Malformed));
    }

    #[tokio::test]
    async fn v2_ipv4_ipv6_local_and_tlvs() {
        let mut b = vec![10, 0, 0, 1, 10, 0, 0, 2, 0x1f, 0x90, 0x01, 0xbb];
        b.extend_from_slice(&[0x04, 0x00, 0x02, 0xaa, 0xbb]); // a NOOP TLV
        let mut wire = v2(0x21, 0x11, &b);
        wire.extend_from_slice(b"payload");
        let (r, rest) = read(&wire).await;
        assert_eq!(
            r,
            Ok((v4([10, 0, 0, 1], 8080, [10, 0, 0, 2], 443), Outcome::V2))
        );
        assert_eq!(rest, b"payload");

        let mut b6 = [0u8; 36];
        b6[15] = 1;
        b6[31] = 2;
        b6[32..].copy_from_slice(&[0, 1, 0, 2]);
        let (r, _) = read(&v2(0x21, 0x21, &b6)).await;
        let source = SocketAddr::new("::1".parse().expect("ip"), 1);
        assert!(matches!(r, Ok((Header::Proxied { source: s, .. }, Outcome::V2)) if s == source));

        assert_eq!(
            read(&v2(0x20, 0x00, &[])).await.0,
            Ok((Header::Local, Outcome::Local))
        );
        // LOCAL with addresses: still the connection's own.
        assert_eq!(
            read(&v2(0x20, 0x11, &b)).await.0,
            Ok((Header::Local, Outcome::Local))
        );
        // AF_UNIX: no TCP/IP address; treated as unknown.
        assert_eq!(
            read(&v2(0x21, 0x31, &[0u8; 216])).await.0,
            Ok((Header::Local, Outcome::Local))
        );
    }

    #[tokio::test]
    async fn v2_malformed_headers_are_rejected() {
        let addrs = [10, 0, 0, 1, 10, 0, 0, 2, 0, 1, 0, 2];
        let mut bad_sig = v2(0x21, 0x11, &addrs);
        bad_sig[10] = b'X';
        let mut truncated = v2(0x21, 0x11, &addrs);
        truncated.truncate(20);
        let mut bad_tlv = addrs.to_vec();
        bad_tlv.extend_from_slice(&[0x04, 0x00, 0x09, 0x00]);
        for (what, wire) in [
            ("signature", bad_sig),
            ("truncated", truncated),
            ("short for its family", v2(0x21, 0x11, &addrs[..8])),
            ("version 1", v2(0x11, 0x11, &addrs)),
            ("command 2", v2(0x22, 0x11, &addrs)),
            ("datagram", v2(0x21, 0x12, &addrs)),
            ("family 4", v2(0x21, 0x41, &addrs)),
            ("tlv overrun", v2(0x21, 0x11, &bad_tlv)),
            ("unix short", v2(0x21, 0x31, &[0u8; 12])),
        ] {
            assert_eq!(read(&wire).await.0, Err(Outcome::Malformed), "{what}");
        }
    }

    #[test]
    fn outcome_labels_index_their_array() {
        for (i, o) in Outcome::ALL.iter().enumerate() {
            assert_eq!(*o as usize, i, "{}", o.as_str());
        }
    }
}
