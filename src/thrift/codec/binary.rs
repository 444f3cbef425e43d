//! `TBinaryProtocol`: message headers (strict `0x8001` and old-style), field and
//! container headers, and the header encoder.

use std::ops::Range;

use bytes::{BufMut, BytesMut};

use super::skip::{Field, Input, MapHeader, Stop, Ty};
use super::{ErrorKind, MessageType};

const VERSION_MASK: u32 = 0xffff_0000;
const VERSION_1: u32 = 0x8001_0000;

/// A message header located in a payload (offsets relative to the payload start).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RawHeader {
    pub name: Range<usize>,
    pub message_type: MessageType,
    pub seq_id: i32,
    pub seq_start: usize,
    pub body_start: usize,
    pub strict: bool,
}

fn ty(b: u8) -> Option<Ty> {
    Some(match b {
        2 => Ty::Bool,
        3 => Ty::Byte,
        4 => Ty::Double,
        6 => Ty::I16,
        8 => Ty::I32,
        10 => Ty::I64,
        11 => Ty::Binary,
        12 => Ty::Struct,
        13 => Ty::Map,
        14 => Ty::Set,
        15 => Ty::List,
        16 => Ty::Uuid,
        _ => return None,
    })
}

fn name_range(input: &Input<'_>, len: i32, at: usize) -> Result<Range<usize>, Stop> {
    let len = usize::try_from(len).map_err(|_| ErrorKind::NegativeLength)?;
    let name = input.take(at, len)?;
    std::str::from_utf8(name).map_err(|_| ErrorKind::InvalidName)?;
    Ok(at..at + len)
}

/// Parse a strict or old-style header at the start of `input`.
pub(crate) fn parse_header(input: &Input<'_>) -> Result<RawHeader, Stop> {
    let first = input.i32(0)?;
    if first < 0 {
        let word = first as u32;
        if word & VERSION_MASK != VERSION_1 {
            return Err(ErrorKind::UnknownProtocol.into());
        }
        let message_type =
            MessageType::from_wire((word & 0xff) as u8).ok_or(ErrorKind::UnknownMessageType)?;
        let len = input.i32(4)?;
        if len < 0 {
            return Err(ErrorKind::NegativeLength.into());
        }
        input.check_fits(8, len as u64)?;
        let name = name_range(input, len, 8)?;
        let seq_start = name.end;
        let seq_id = input.i32(seq_start)?;
        Ok(RawHeader {
            name,
            message_type,
            seq_id,
            seq_start,
            body_start: seq_start + 4,
            strict: true,
        })
    } else {
        input.check_fits(4, first as u64)?;
        let name = name_range(input, first, 4)?;
        let message_type =
            MessageType::from_wire(input.byte(name.end)?).ok_or(ErrorKind::UnknownMessageType)?;
        let seq_start = name.end + 1;
        let seq_id = input.i32(seq_start)?;
        Ok(RawHeader {
            name,
            message_type,
            seq_id,
            seq_start,
            body_start: seq_start + 4,
            strict: false,
        })
    }
}

/// A strict (versioned) message header.
pub(crate) fn write_header(out: &mut BytesMut, name: &str, mt: MessageType, seq_id: i32) {
    out.put_u32(VERSION_1 | u32::from(mt.to_wire()));
    put_string(out, name.as_bytes());
    out.put_i32(seq_id);
}

pub(crate) fn put_string(out: &mut BytesMut, s: &[u8]) {
    out.put_i32(i32::try_from(s.len()).unwrap_or(i32::MAX));
    out.put_slice(s);
}

/// A field header, or `None` for the stop byte.
pub(crate) fn field_header(input: &Input<'_>, pos: usize) -> Result<Option<Field>, Stop> {
    let b = input.byte(pos)?;
    if b == 0 {
        return Ok(None);
    }
    let ty = ty(b).ok_or(ErrorKind::UnknownType)?;
    let id = input.i16(pos + 1)?;
    Ok(Some(Field { ty, id, len: 3 }))
}

fn size(n: i32) -> Result<u32, Stop> {
    u32::try_from(n).map_err(|_| Stop::Fail(ErrorKind::NegativeLength))
}

/// List or set header: (element type, size, header length).
pub(crate) fn list_header(input: &Input<'_>, pos: usize) -> Result<(Ty, u32, usize), Stop> {
    let b = input.byte(pos)?;
    let n = size(input.i32(pos + 1)?)?;
    let elem = match ty(b) {
        Some(t) => t,
        None if n == 0 => Ty::Byte,
        None => return Err(ErrorKind::UnknownType.into()),
    };
    Ok((elem, n, 5))
}

/// Map header: (key and value types, size, header length).
pub(crate) fn map_header(input: &Input<'_>, pos: usize) -> Result<MapHeader, Stop> {
    let k = input.byte(pos)?;
    let v = input.byte(pos + 1)?;
    let n = size(input.i32(pos + 2)?)?;
    let kv = match (ty(k), ty(v)) {
        (Some(k), Some(v)) => Some((k, v)),
        _ if n == 0 => None,
        _ => return Err(ErrorKind::UnknownType.into()),
    };
    Ok((kv, n, 6))
}

/// String/binary length prefix: (length, prefix length).
pub(crate) fn binary_len(input: &Input<'_>, pos: usize) -> Result<(u64, usize), Stop> {
    Ok((u64::from(size(input.i32(pos)?)?), 4))
}

pub(crate) fn scalar_len(ty: Ty) -> usize {
    match ty {
        Ty::BoolInline => 0,
        Ty::Bool | Ty::Byte => 1,
        Ty::I16 => 2,
        Ty::I32 => 4,
        Ty::Double | Ty::I64 => 8,
        Ty::Uuid => 16,
        // Not scalars; never asked.
        Ty::Binary | Ty::Struct | Ty::Map | Ty::Set | Ty::List => 0,
    }
}

/// Read an i32 value at `pos`.
pub(crate) fn read_i32(input: &Input<'_>, pos: usize) -> Result<i32, Stop> {
    input.i32(pos)
}
