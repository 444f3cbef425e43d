//! Binary <-> compact translation: re-encode a whole message (header and body) in
//! the other protocol, value by value. Used only when a cluster's protocol differs
//! from the client's; the same-protocol path never comes here.
//!
//! The message was already walked by the decoder (so it is complete and nested at
//! most [`MAX_DEPTH`] deep); the walk here is recursive with that bound and still
//! fails cleanly, never panics, on bytes that do not decode.

use bytes::{BufMut, Bytes, BytesMut};

use super::skip::{Input, Stop, Ty};
use super::theader::{self, FrameInfo};
#[cfg(doc)]
use super::Header;
use super::{binary, compact, Error, ErrorKind, Message, Protocol, Transport, MAX_DEPTH};

/// `msg` re-encoded in protocol `to`, framed for `transport` (frame length
/// included). Name, message type and sequence id are kept. For THeader the frame
/// head carries `frame` (default: the message's own, see [`Header::default_frame`])
/// and the message's info headers when it came in a THeader frame.
pub fn transcode(
    msg: &Message,
    to: Protocol,
    transport: Transport,
    frame: Option<FrameInfo>,
) -> Result<Bytes, Error> {
    let h = msg.header();
    let body = msg.body();
    let info = msg.info_section();
    // Binary spends more bytes than compact on most values.
    let mut out = BytesMut::with_capacity(body.len() * 2 + h.name().len() + info.len() + 32);
    let start = match transport {
        Transport::Framed => {
            out.put_u32(0);
            Some(0)
        }
        Transport::Header => {
            let frame = frame.unwrap_or_else(|| h.default_frame());
            Some(theader::start(&mut out, frame, to, info))
        }
        Transport::Unframed => None,
    };
    match to {
        Protocol::Binary => binary::write_header(&mut out, h.name(), h.message_type, h.seq_id),
        Protocol::Compact => compact::write_header(&mut out, h.name(), h.message_type, h.seq_id),
    }
    let mut r = Reader {
        input: Input {
            buf: body,
            limit: body.len(),
        },
        pos: 0,
        proto: h.protocol,
    };
    let mut w = Writer { out, proto: to };
    copy_struct(&mut r, &mut w, 0).map_err(|s| match s {
        Stop::More => Error::with_header(ErrorKind::Truncated, h.clone()),
        Stop::Fail(k) => Error::with_header(k, h.clone()),
    })?;
    let mut out = w.out;
    if let Some(at) = start {
        u32::try_from(out.len() - at - 4).map_err(|_| ErrorKind::MessageTooLarge)?;
        theader::finish(&mut out, at);
    }
    Ok(out.freeze())
}

/// A scalar value, normalised across protocols.
#[derive(Debug, Clone, Copy)]
enum Scalar {
    Bool(bool),
    Byte(u8),
    I16(i16),
    I32(i32),
    I64(i64),
    Double(u64),
    Uuid([u8; 16]),
}

struct Reader<'a> {
    input: Input<'a>,
    pos: usize,
    proto: Protocol,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], Stop> {
        let b = self.input.take(self.pos, n)?;
        self.pos += n;
        Ok(b)
    }

    fn varint(&mut self, max: usize) -> Result<u64, Stop> {
        let (v, n) = self.input.varint(self.pos, max)?;
        self.pos += n;
        Ok(v)
    }

    fn zigzag(&mut self, max: usize) -> Result<i64, Stop> {
        let z = self.varint(max)?;
        Ok(((z >> 1) as i64) ^ -((z & 1) as i64))
    }

    fn fixed<const N: usize>(&mut self) -> Result<[u8; N], Stop> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }

    /// A scalar of type `ty` (not an inline compact bool).
    fn scalar(&mut self, ty: Ty) -> Result<Scalar, Stop> {
        let compact = self.proto == Protocol::Compact;
        Ok(match ty {
            // Compact writes 1 (true) / 2 (false) inside containers; binary 1 / 0.
            Ty::Bool | Ty::BoolInline if compact => Scalar::Bool(self.take(1)?[0] == 1),
            Ty::Bool | Ty::BoolInline => Scalar::Bool(self.take(1)?[0] != 0),
            Ty::Byte => Scalar::Byte(self.take(1)?[0]),
            Ty::I16 if compact => Scalar::I16(narrow(self.zigzag(5)?)?),
            Ty::I16 => Scalar::I16(i16::from_be_bytes(self.fixed()?)),
            Ty::I32 if compact => Scalar::I32(narrow(self.zigzag(5)?)?),
            Ty::I32 => Scalar::I32(i32::from_be_bytes(self.fixed()?)),
            Ty::I64 if compact => Scalar::I64(self.zigzag(10)?),
            Ty::I64 => Scalar::I64(i64::from_be_bytes(self.fixed()?)),
            // Compact doubles are little-endian, binary ones big-endian.
            Ty::Double if compact => Scalar::Double(u64::from_le_bytes(self.fixed()?)),
            Ty::Double => Scalar::Double(u64::from_be_bytes(self.fixed()?)),
            Ty::Uuid => Scalar::Uuid(self.fixed()?),
            Ty::Binary | Ty::Struct | Ty::Map | Ty::Set | Ty::List => {
                return Err(ErrorKind::UnknownType.into())
            }
        })
    }

    fn binary(&mut self) -> Result<&'a [u8], Stop> {
        let (len, n) = match self.proto {
            Protocol::Binary => binary::binary_len(&self.input, self.pos)?,
            Protocol::Compact => compact::binary_len(&self.input, self.pos)?,
        };
        self.pos += n;
        let len = usize::try_from(len).map_err(|_| ErrorKind::MessageTooLarge)?;
        self.take(len)
    }
}

fn narrow<T: TryFrom<i64>>(v: i64) -> Result<T, Stop> {
    T::try_from(v).map_err(|_| Stop::Fail(ErrorKind::InvalidVarint))
}

struct Writer {
    out: BytesMut,
    proto: Protocol,
}

/// The wire type id of `ty` in `proto` (a compact bool element is 1, "true").
fn wire_ty(proto: Protocol, ty: Ty) -> u8 {
    match proto {
        Protocol::Binary => match ty {
            Ty::Bool | Ty::BoolInline => 2,
            Ty::Byte => 3,
            Ty::Double => 4,
            Ty::I16 => 6,
            Ty::I32 => 8,
            Ty::I64 => 10,
            Ty::Binary => 11,
            Ty::Struct => 12,
            Ty::Map => 13,
            Ty::Set => 14,
            Ty::List => 15,
            Ty::Uuid => 16,
        },
        Protocol::Compact => match ty {
            Ty::Bool | Ty::BoolInline => 1,
            Ty::Byte => 3,
            Ty::I16 => 4,
            Ty::I32 => 5,
            Ty::I64 => 6,
            Ty::Double => 7,
            Ty::Binary => 8,
            Ty::List => 9,
            Ty::Set => 10,
            Ty::Map => 11,
            Ty::Struct => 12,
            Ty::Uuid => 13,
        },
    }
}

/// Containers hold bools as a byte in both protocols.
fn elem(ty: Ty) -> Ty {
    match ty {
        Ty::BoolInline => Ty::Bool,
        t => t,
    }
}

impl Writer {
    fn scalar(&mut self, v: Scalar) {
        let compact = self.proto == Protocol::Compact;
        let out = &mut self.out;
        match v {
            Scalar::Bool(b) if compact => out.put_u8(if b { 1 } else { 2 }),
            Scalar::Bool(b) => out.put_u8(u8::from(b)),
            Scalar::Byte(b) => out.put_u8(b),
            Scalar::I16(n) if compact => compact::put_i32(out, i32::from(n)),
            Scalar::I16(n) => out.put_i16(n),
            Scalar::I32(n) if compact => compact::put_i32(out, n),
            Scalar::I32(n) => out.put_i32(n),
            Scalar::I64(n) if compact => compact::put_varint(out, ((n << 1) ^ (n >> 63)) as u64),
            Scalar::I64(n) => out.put_i64(n),
            Scalar::Double(bits) if compact => out.put_u64_le(bits),
            Scalar::Double(bits) => out.put_u64(bits),
            Scalar::Uuid(u) => out.put_slice(&u),
        }
    }

    fn binary(&mut self, b: &[u8]) {
        match self.proto {
            Protocol::Binary => binary::put_string(&mut self.out, b),
            Protocol::Compact => compact::put_string(&mut self.out, b),
        }
    }

    fn list_header(&mut self, ty: Ty, size: u32) {
        let t = wire_ty(self.proto, elem(ty));
        match self.proto {
            Protocol::Binary => {
                self.out.put_u8(t);
                self.out.put_u32(size);
            }
            Protocol::Compact if size < 15 => self.out.put_u8(((size as u8) << 4) | t),
            Protocol::Compact => {
                self.out.put_u8(0xf0 | t);
                compact::put_varint(&mut self.out, u64::from(size));
            }
        }
    }

    /// `kv` is absent only for an empty compact map (no types on the wire).
    fn map_header(&mut self, kv: Option<(Ty, Ty)>, size: u32) {
        let (k, v) = kv.map_or((0, 0), |(k, v)| {
            (wire_ty(self.proto, elem(k)), wire_ty(self.proto, elem(v)))
        });
        match self.proto {
            Protocol::Binary => {
                self.out.put_u8(k);
                self.out.put_u8(v);
                self.out.put_u32(size);
            }
            Protocol::Compact if size == 0 => self.out.put_u8(0),
            Protocol::Compact => {
                compact::put_varint(&mut self.out, u64::from(size));
                self.out.put_u8((k << 4) | v);
            }
        }
    }

    /// A field header; a compact bool field carries its value in the type.
    fn field(&mut self, ty: Ty, id: i16, last: i16, inline_bool: Option<bool>) {
        match self.proto {
            Protocol::Binary => {
                self.out.put_u8(wire_ty(Protocol::Binary, ty));
                self.out.put_i16(id);
            }
            Protocol::Compact => {
                let t = match (ty, inline_bool) {
                    (Ty::Bool | Ty::BoolInline, Some(false)) => 2,
                    _ => wire_ty(Protocol::Compact, ty),
                };
                compact::put_field_header(&mut self.out, t, id, last);
            }
        }
    }
}

fn copy_struct(r: &mut Reader<'_>, w: &mut Writer, depth: usize) -> Result<(), Stop> {
    nest(depth)?;
    let (mut last_in, mut last_out) = (0i16, 0i16);
    loop {
        let at = r.pos;
        let field = match r.proto {
            Protocol::Binary => binary::field_header(&r.input, at)?,
            Protocol::Compact => compact::field_header(&r.input, at, last_in)?,
        };
        let Some(f) = field else {
            r.pos += 1;
            w.out.put_u8(0);
            return Ok(());
        };
        r.pos += f.len;
        last_in = f.id;
        if f.ty == Ty::BoolInline {
            // Compact: the value is the type nibble, 1 true / 2 false.
            let v = r.input.byte(at)? & 0x0f == 1;
            w.field(Ty::Bool, f.id, last_out, Some(v));
            if w.proto == Protocol::Binary {
                w.scalar(Scalar::Bool(v));
            }
        } else if f.ty == Ty::Bool && w.proto == Protocol::Compact {
            let v = r.take(1)?[0] != 0;
            w.field(Ty::Bool, f.id, last_out, Some(v));
        } else {
            w.field(f.ty, f.id, last_out, None);
            copy_value(r, w, f.ty, depth + 1)?;
        }
        last_out = f.id;
    }
}

/// Fail when a struct or container at `depth` would nest deeper than the decoder
/// allows (the top-level struct is depth 0).
fn nest(depth: usize) -> Result<(), Stop> {
    if depth >= MAX_DEPTH {
        return Err(ErrorKind::DepthExceeded.into());
    }
    Ok(())
}

fn copy_value(r: &mut Reader<'_>, w: &mut Writer, ty: Ty, depth: usize) -> Result<(), Stop> {
    if matches!(ty, Ty::List | Ty::Set | Ty::Map) {
        nest(depth)?;
    }
    match ty {
        Ty::Struct => copy_struct(r, w, depth),
        Ty::Binary => {
            let b = r.binary()?;
            w.binary(b);
            Ok(())
        }
        Ty::List | Ty::Set => {
            let (elem_ty, size, n) = match r.proto {
                Protocol::Binary => binary::list_header(&r.input, r.pos)?,
                Protocol::Compact => compact::list_header(&r.input, r.pos)?,
            };
            r.pos += n;
            w.list_header(elem_ty, size);
            for _ in 0..size {
                copy_value(r, w, elem(elem_ty), depth + 1)?;
            }
            Ok(())
        }
        Ty::Map => {
            let (kv, size, n) = match r.proto {
                Protocol::Binary => binary::map_header(&r.input, r.pos)?,
                Protocol::Compact => compact::map_header(&r.input, r.pos)?,
            };
            r.pos += n;
            w.map_header(kv, size);
            if let Some((k, v)) = kv {
                for _ in 0..size {
                    copy_value(r, w, elem(k), depth + 1)?;
                    copy_value(r, w, elem(v), depth + 1)?;
                }
            }
            Ok(())
        }
        scalar => {
            let v = r.scalar(scalar)?;
            w.scalar(v);
            Ok(())
        }
    }
}
