//! `TCompactProtocol` (`0x82`, version 1): message headers, varints, field and
//! container headers, and the header encoder.

use bytes::{BufMut, BytesMut};

use super::binary::RawHeader;
use super::skip::{Field, Input, MapHeader, Stop, Ty};
use super::{ErrorKind, MessageType};

pub(crate) const PROTOCOL_ID: u8 = 0x82;
const VERSION: u8 = 1;
const VERSION_MASK: u8 = 0x1f;
const TYPE_SHIFT: u8 = 5;

/// A 32-bit varint is at most 5 bytes; a 64-bit one at most 10.
const VARINT32_MAX: usize = 5;
const VARINT64_MAX: usize = 10;

fn field_ty(b: u8) -> Option<Ty> {
    Some(match b {
        1 | 2 => Ty::BoolInline,
        3 => Ty::Byte,
        4 => Ty::I16,
        5 => Ty::I32,
        6 => Ty::I64,
        7 => Ty::Double,
        8 => Ty::Binary,
        9 => Ty::List,
        10 => Ty::Set,
        11 => Ty::Map,
        12 => Ty::Struct,
        13 => Ty::Uuid,
        _ => return None,
    })
}

/// Element types inside containers: a bool takes a byte there.
fn elem_ty(b: u8) -> Option<Ty> {
    match field_ty(b)? {
        Ty::BoolInline => Some(Ty::Bool),
        t => Some(t),
    }
}

fn varint32(input: &Input<'_>, pos: usize) -> Result<(u32, usize), Stop> {
    let (v, n) = input.varint(pos, VARINT32_MAX)?;
    let v = u32::try_from(v).map_err(|_| ErrorKind::InvalidVarint)?;
    Ok((v, n))
}

fn unzigzag32(n: u32) -> i32 {
    ((n >> 1) as i32) ^ -((n & 1) as i32)
}

fn zigzag32(n: i32) -> u32 {
    ((n << 1) ^ (n >> 31)) as u32
}

pub(crate) fn put_varint(out: &mut BytesMut, mut v: u64) {
    while v >= 0x80 {
        out.put_u8((v as u8 & 0x7f) | 0x80);
        v >>= 7;
    }
    out.put_u8(v as u8);
}

/// Parse a compact header at the start of `input`.
pub(crate) fn parse_header(input: &Input<'_>) -> Result<RawHeader, Stop> {
    if input.byte(0)? != PROTOCOL_ID {
        return Err(ErrorKind::UnknownProtocol.into());
    }
    let b = input.byte(1)?;
    if b & VERSION_MASK != VERSION {
        return Err(ErrorKind::UnknownProtocol.into());
    }
    let message_type =
        MessageType::from_wire(b >> TYPE_SHIFT).ok_or(ErrorKind::UnknownMessageType)?;
    let (seq, n) = varint32(input, 2)?;
    let seq_start = 2;
    let (len, m) = varint32(input, 2 + n)?;
    let at = 2 + n + m;
    input.check_fits(at, u64::from(len))?;
    let len = usize::try_from(len).map_err(|_| ErrorKind::MessageTooLarge)?;
    let name = input.take(at, len)?;
    std::str::from_utf8(name).map_err(|_| ErrorKind::InvalidName)?;
    Ok(RawHeader {
        name: at..at + len,
        message_type,
        // The sequence id is written as the varint of its unsigned bits.
        seq_id: seq as i32,
        seq_start,
        body_start: at + len,
        strict: true,
    })
}

pub(crate) fn write_header(out: &mut BytesMut, name: &str, mt: MessageType, seq_id: i32) {
    out.put_u8(PROTOCOL_ID);
    out.put_u8((mt.to_wire() << TYPE_SHIFT) | VERSION);
    put_varint(out, u64::from(seq_id as u32));
    put_string(out, name.as_bytes());
}

pub(crate) fn put_string(out: &mut BytesMut, s: &[u8]) {
    put_varint(out, s.len() as u64);
    out.put_slice(s);
}

/// A short-form field header (delta 1..=15 from the previous id) or the long form.
pub(crate) fn put_field_header(out: &mut BytesMut, wire_ty: u8, id: i16, last: i16) {
    let delta = i32::from(id) - i32::from(last);
    if (1..=15).contains(&delta) {
        out.put_u8(((delta as u8) << 4) | wire_ty);
    } else {
        out.put_u8(wire_ty);
        put_varint(out, u64::from(zigzag32(i32::from(id))));
    }
}

pub(crate) fn put_i32(out: &mut BytesMut, v: i32) {
    put_varint(out, u64::from(zigzag32(v)));
}

/// Wire type ids used by the encoders.
pub(crate) const T_I32: u8 = 5;
pub(crate) const T_BINARY: u8 = 8;

/// A field header, or `None` for the stop byte.
pub(crate) fn field_header(
    input: &Input<'_>,
    pos: usize,
    last_fid: i16,
) -> Result<Option<Field>, Stop> {
    let b = input.byte(pos)?;
    if b == 0 {
        return Ok(None);
    }
    let ty = field_ty(b & 0x0f).ok_or(ErrorKind::UnknownType)?;
    let delta = b >> 4;
    if delta != 0 {
        return Ok(Some(Field {
            ty,
            id: last_fid.wrapping_add(i16::from(delta)),
            len: 1,
        }));
    }
    let (z, n) = varint32(input, pos + 1)?;
    let id = i16::try_from(unzigzag32(z)).map_err(|_| ErrorKind::InvalidVarint)?;
    Ok(Some(Field { ty, id, len: 1 + n }))
}

/// List or set header: (element type, size, header length).
pub(crate) fn list_header(input: &Input<'_>, pos: usize) -> Result<(Ty, u32, usize), Stop> {
    let b = input.byte(pos)?;
    let (size, n) = match b >> 4 {
        15 => {
            let (s, n) = varint32(input, pos + 1)?;
            (s, 1 + n)
        }
        s => (u32::from(s), 1),
    };
    let elem = match elem_ty(b & 0x0f) {
        Some(t) => t,
        None if size == 0 => Ty::Byte,
        None => return Err(ErrorKind::UnknownType.into()),
    };
    Ok((elem, size, n))
}

/// Map header: (key and value types, size, header length). An empty map is one byte.
pub(crate) fn map_header(input: &Input<'_>, pos: usize) -> Result<MapHeader, Stop> {
    let (size, n) = varint32(input, pos)?;
    if size == 0 {
        return Ok((None, 0, n));
    }
    let kv = input.byte(pos + n)?;
    match (elem_ty(kv >> 4), elem_ty(kv & 0x0f)) {
        (Some(k), Some(v)) => Ok((Some((k, v)), size, n + 1)),
        _ => Err(ErrorKind::UnknownType.into()),
    }
}

/// String/binary length prefix: (length, prefix length).
pub(crate) fn binary_len(input: &Input<'_>, pos: usize) -> Result<(u64, usize), Stop> {
    let (len, n) = varint32(input, pos)?;
    Ok((u64::from(len), n))
}

/// The encoded length of a scalar at `pos` (varints are measured).
pub(crate) fn scalar_len(input: &Input<'_>, pos: usize, ty: Ty) -> Result<usize, Stop> {
    Ok(match ty {
        Ty::BoolInline => 0,
        Ty::Bool | Ty::Byte => 1,
        Ty::Double => 8,
        Ty::Uuid => 16,
        Ty::I16 | Ty::I32 => input.varint(pos, VARINT32_MAX)?.1,
        Ty::I64 => input.varint(pos, VARINT64_MAX)?.1,
        // Not scalars; never asked.
        Ty::Binary | Ty::Struct | Ty::Map | Ty::Set | Ty::List => 0,
    })
}

/// Read a zigzag i32 value at `pos`.
pub(crate) fn read_i32(input: &Input<'_>, pos: usize) -> Result<i32, Stop> {
    let (z, _) = varint32(input, pos)?;
    Ok(unzigzag32(z))
}
