//! THeader (`THeaderTransport`/`THeaderProtocol` of Apache Thrift and fbthrift): a
//! framed transport whose frames carry a small header before the protocol message.
//!
//! ```text
//! LENGTH (i32) | 0x0FFF | FLAGS (u16) | SEQUENCE ID (u32) | HEADER SIZE (u16, 4-byte words)
//! header:  PROTOCOL ID (varint: 0 binary, 2 compact) | TRANSFORM COUNT (varint) | ids...
//!          INFO blocks: INFO_KEYVALUE (1) | COUNT (varint) | (varint-length key, value)*
//!          padding (zero bytes) up to HEADER SIZE * 4
//! payload: one binary or compact message
//! ```
//!
//! Transforms (zlib, snappy) are refused: the proxy must read the message name to
//! route. Info blocks of other types end the info section, as Apache's and fbthrift's
//! readers do (they skip to the payload). Everything is read through [`Input`], so a
//! length or count from the wire is checked against the header's end before use.

use std::ops::Range;

use bytes::{BufMut, BytesMut};

use super::compact::{self, put_varint};
use super::skip::{Input, Stop};
use super::{ErrorKind, Protocol};

/// The magic in the frame's first two bytes.
pub(crate) const MAGIC: [u8; 2] = [0x0f, 0xff];
/// Magic, flags, sequence id and header size.
const FIXED: usize = 10;
const PROTOCOL_BINARY: u64 = 0;
const PROTOCOL_COMPACT: u64 = 2;
const INFO_KEYVALUE: u64 = 1;
/// fbthrift's persistent key/values: the same encoding as `INFO_KEYVALUE`.
const INFO_PKEYVALUE: u64 = 2;
/// Varints in the header are 32-bit.
const VARINT32_MAX: usize = 5;

/// The frame fields a reply echoes: flags, and the transport-level sequence id
/// (fbthrift clients match replies by it, and it may differ from the message's).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct FrameInfo {
    pub flags: u16,
    pub seq_id: u32,
}

/// A parsed frame head; offsets are relative to the frame payload (after LENGTH).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Head {
    pub frame: FrameInfo,
    pub protocol: Protocol,
    /// The info blocks (key/values, then padding), copied as is when re-framed.
    pub info: Range<usize>,
    /// Where the protocol message starts.
    pub payload_start: usize,
    /// The payload is transformed (compressed): not readable here. The info
    /// section is then not parsed (empty).
    pub transformed: bool,
}

/// Parse and check the head of a frame whose payload (after LENGTH) is `input`
/// (`limit` = the frame length). `More` until the whole header has arrived; the
/// fixed part is checked as soon as it is there.
pub(crate) fn parse_head(input: &Input<'_>) -> Result<Head, Stop> {
    if input.take(0, MAGIC.len())? != MAGIC {
        return Err(ErrorKind::UnknownProtocol.into());
    }
    let fixed = input.take(0, FIXED)?;
    let flags = u16::from_be_bytes([fixed[2], fixed[3]]);
    let seq_id = u32::from_be_bytes([fixed[4], fixed[5], fixed[6], fixed[7]]);
    let size = usize::from(u16::from_be_bytes([fixed[8], fixed[9]])) * 4;
    if FIXED + size > input.limit {
        return Err(ErrorKind::InvalidHeader.into());
    }
    let header = input.take(FIXED, size)?;
    let (protocol, info, transformed) = parse_header(header).map_err(|s| match s {
        // The header is complete: anything missing runs past its end.
        Stop::More | Stop::Fail(ErrorKind::MessageTooLarge) => Stop::Fail(ErrorKind::InvalidHeader),
        Stop::Fail(k) => Stop::Fail(k),
    })?;
    Ok(Head {
        frame: FrameInfo { flags, seq_id },
        protocol,
        info: FIXED + info.start..FIXED + info.end,
        payload_start: FIXED + size,
        transformed,
    })
}

/// The variable header: (protocol, the info section's range in `header`, whether
/// the payload is transformed).
fn parse_header(header: &[u8]) -> Result<(Protocol, Range<usize>, bool), Stop> {
    let input = Input {
        buf: header,
        limit: header.len(),
    };
    let (id, n) = input.varint(0, VARINT32_MAX)?;
    let protocol = match id {
        PROTOCOL_BINARY => Protocol::Binary,
        PROTOCOL_COMPACT => Protocol::Compact,
        _ => return Err(ErrorKind::UnknownProtocol.into()),
    };
    let (transforms, m) = input.varint(n, VARINT32_MAX)?;
    if transforms != 0 {
        return Ok((protocol, 0..0, true));
    }
    let info = n + m..header.len();
    let mut kv = InfoHeaders {
        input: Input {
            buf: &header[info.clone()],
            limit: info.len(),
        },
        pos: 0,
        left: 0,
    };
    while kv.next_kv()?.is_some() {}
    Ok((protocol, info, false))
}

/// One info header: (key, value), as bytes.
pub type Pair<'a> = (&'a [u8], &'a [u8]);

/// The key/value info headers of a frame, in wire order, zero-copy. Built over an
/// info section the decoder checked, so iteration cannot fail; it stops at the end.
#[derive(Debug, Clone)]
pub struct InfoHeaders<'a> {
    input: Input<'a>,
    pos: usize,
    /// Pairs left in the current key/value block.
    left: u64,
}

impl<'a> InfoHeaders<'a> {
    pub(crate) fn new(info: &'a [u8]) -> InfoHeaders<'a> {
        InfoHeaders {
            input: Input {
                buf: info,
                limit: info.len(),
            },
            pos: 0,
            left: 0,
        }
    }

    fn string(&mut self) -> Result<&'a [u8], Stop> {
        let (len, n) = self.input.varint(self.pos, VARINT32_MAX)?;
        let len = usize::try_from(len).map_err(|_| ErrorKind::InvalidHeader)?;
        let s = self.input.take(self.pos + n, len)?;
        self.pos += n + len;
        Ok(s)
    }

    /// The next pair; `None` at padding, at an unknown block type, or at the end.
    fn next_kv(&mut self) -> Result<Option<Pair<'a>>, Stop> {
        while self.left == 0 {
            if self.pos >= self.input.buf.len() {
                return Ok(None);
            }
            let (ty, n) = self.input.varint(self.pos, VARINT32_MAX)?;
            match ty {
                INFO_KEYVALUE | INFO_PKEYVALUE => {
                    let (count, m) = self.input.varint(self.pos + n, VARINT32_MAX)?;
                    self.pos += n + m;
                    // Each pair takes at least two bytes: refuse a count that
                    // cannot fit before walking it.
                    let room = self.input.buf.len().saturating_sub(self.pos) as u64;
                    if count > room / 2 {
                        return Err(ErrorKind::InvalidHeader.into());
                    }
                    self.left = count;
                }
                // Padding (type 0), or a block type this reader does not know:
                // the rest is skipped, as Apache's and fbthrift's readers do.
                _ => return Ok(None),
            }
        }
        self.left -= 1;
        let key = self.string()?;
        let value = self.string()?;
        Ok(Some((key, value)))
    }
}

impl<'a> Iterator for InfoHeaders<'a> {
    type Item = Pair<'a>;

    fn next(&mut self) -> Option<Self::Item> {
        self.next_kv().ok().flatten()
    }
}

/// The THeader protocol id of `protocol`.
fn protocol_id(protocol: Protocol) -> u64 {
    match protocol {
        Protocol::Binary => PROTOCOL_BINARY,
        Protocol::Compact => PROTOCOL_COMPACT,
    }
}

/// A frame head without info headers, for a payload of `payload_len` bytes: the
/// 18 bytes written before a message re-framed as THeader (no copy of the message).
pub(crate) fn bare_head(frame: FrameInfo, protocol: Protocol, payload_len: usize) -> [u8; 18] {
    let mut h = [0u8; 18];
    // Header: protocol id and transform count (one byte each), two of padding.
    let len = u32::try_from(FIXED + 4 + payload_len).unwrap_or(u32::MAX);
    h[..4].copy_from_slice(&len.to_be_bytes());
    h[4..6].copy_from_slice(&MAGIC);
    h[6..8].copy_from_slice(&frame.flags.to_be_bytes());
    h[8..12].copy_from_slice(&frame.seq_id.to_be_bytes());
    h[12..14].copy_from_slice(&1u16.to_be_bytes());
    h[14] = protocol_id(protocol) as u8;
    h
}

/// Start a THeader frame in `out` carrying `info` (an info section copied from
/// another frame, or empty); returns where the frame starts, for [`finish`] once
/// the message is written after it.
pub(crate) fn start(
    out: &mut BytesMut,
    frame: FrameInfo,
    protocol: Protocol,
    info: &[u8],
) -> usize {
    let at = out.len();
    out.put_u32(0);
    out.put_slice(&MAGIC);
    out.put_u16(frame.flags);
    out.put_u32(frame.seq_id);
    let size_at = out.len();
    out.put_u16(0);
    let header = out.len();
    put_varint(out, protocol_id(protocol));
    put_varint(out, 0);
    out.put_slice(info);
    while !(out.len() - header).is_multiple_of(4) {
        out.put_u8(0);
    }
    // An info section comes from a frame whose header fit in a u16 count of words.
    let words = u16::try_from((out.len() - header) / 4).unwrap_or(u16::MAX);
    out[size_at..size_at + 2].copy_from_slice(&words.to_be_bytes());
    at
}

/// Write the frame length of the frame started at `at`.
pub(crate) fn finish(out: &mut BytesMut, at: usize) {
    let len = u32::try_from(out.len() - at - 4).unwrap_or(u32::MAX);
    out[at..at + 4].copy_from_slice(&len.to_be_bytes());
}

/// A whole THeader frame: `frame`, `protocol`, one `INFO_KEYVALUE` block with
/// `pairs` (none when empty), then `payload`, an encoded message (for tests, tools
/// and benchmarks building frames).
pub fn encode_frame(
    frame: FrameInfo,
    protocol: Protocol,
    pairs: &[Pair<'_>],
    payload: &[u8],
) -> BytesMut {
    let mut info = BytesMut::new();
    if !pairs.is_empty() {
        put_varint(&mut info, INFO_KEYVALUE);
        put_varint(&mut info, pairs.len() as u64);
        for (k, v) in pairs {
            compact::put_string(&mut info, k);
            compact::put_string(&mut info, v);
        }
    }
    let mut out = BytesMut::with_capacity(payload.len() + info.len() + 24);
    let at = start(&mut out, frame, protocol, &info);
    out.put_slice(payload);
    finish(&mut out, at);
    out
}
