//! Walking a struct without materialising it: a resumable, explicitly stacked
//! skipper shared by both protocols, used to validate bodies and to find where an
//! unframed message ends.

use super::{binary, compact, ErrorKind, Protocol, MAX_DEPTH};

/// A value type, normalised across protocols.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ty {
    /// A bool with its own byte (binary, or compact inside a container).
    Bool,
    /// A compact struct field bool: the value lives in the field header.
    BoolInline,
    Byte,
    Double,
    I16,
    I32,
    I64,
    Binary,
    Struct,
    Map,
    Set,
    List,
    Uuid,
}

/// Why a read stopped short.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stop {
    /// The bytes are not there yet (but may arrive within the limit).
    More,
    Fail(ErrorKind),
}

impl From<ErrorKind> for Stop {
    fn from(k: ErrorKind) -> Stop {
        Stop::Fail(k)
    }
}

/// Bytes received so far for one message, and how far the message may extend.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Input<'a> {
    pub buf: &'a [u8],
    pub limit: usize,
}

impl<'a> Input<'a> {
    /// `n` bytes at `pos`: an error past the limit, `More` past the received bytes.
    pub fn take(&self, pos: usize, n: usize) -> Result<&'a [u8], Stop> {
        let end = pos
            .checked_add(n)
            .ok_or(Stop::Fail(ErrorKind::MessageTooLarge))?;
        if end > self.limit {
            return Err(Stop::Fail(ErrorKind::MessageTooLarge));
        }
        self.buf.get(pos..end).ok_or(Stop::More)
    }

    /// Fail early when `n` more bytes after `pos` cannot fit in the limit.
    pub fn check_fits(&self, pos: usize, n: u64) -> Result<(), Stop> {
        let room = self.limit.saturating_sub(pos) as u64;
        if n > room {
            return Err(Stop::Fail(ErrorKind::MessageTooLarge));
        }
        Ok(())
    }

    pub fn byte(&self, pos: usize) -> Result<u8, Stop> {
        Ok(self.take(pos, 1)?[0])
    }

    pub fn i16(&self, pos: usize) -> Result<i16, Stop> {
        let b = self.take(pos, 2)?;
        Ok(i16::from_be_bytes([b[0], b[1]]))
    }

    pub fn i32(&self, pos: usize) -> Result<i32, Stop> {
        let b = self.take(pos, 4)?;
        Ok(i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// An unsigned LEB128 varint of at most `max_bytes`: (value, length).
    pub fn varint(&self, pos: usize, max_bytes: usize) -> Result<(u64, usize), Stop> {
        let mut v: u64 = 0;
        for i in 0..max_bytes {
            let b = self.byte(pos + i)?;
            v |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Ok((v, i + 1));
            }
        }
        Err(Stop::Fail(ErrorKind::InvalidVarint))
    }
}

/// The outcome of a walk that did not fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Progress {
    /// The walk finished; the value ends at this offset.
    Done(usize),
    NeedMore,
}

#[derive(Debug, Clone, Copy)]
enum Frame {
    Struct {
        last_fid: i16,
    },
    Seq {
        elem: Ty,
        remaining: u32,
    },
    /// `remaining` counts keys and values (2 per entry); even means a key is next.
    Map {
        key: Ty,
        val: Ty,
        remaining: u64,
    },
}

/// A resumable walk. Each token (field header, scalar, string, container header) is
/// consumed whole or not at all, so a walk that ran out of bytes resumes where it
/// stopped when called again with a longer buffer starting at the same place.
#[derive(Debug)]
pub(crate) struct Walker {
    proto: Protocol,
    pos: usize,
    pending: Option<Ty>,
    stack: Vec<Frame>,
}

impl Walker {
    pub fn new(proto: Protocol) -> Walker {
        Walker {
            proto,
            pos: 0,
            pending: None,
            stack: Vec::with_capacity(8),
        }
    }

    /// Walk a struct starting at `pos`, reusing this walker's allocation.
    pub fn reset_struct(&mut self, proto: Protocol, pos: usize) {
        self.proto = proto;
        self.pos = pos;
        self.pending = None;
        self.stack.clear();
        self.stack.push(Frame::Struct { last_fid: 0 });
    }

    /// Walk one value of type `ty` starting at `pos`.
    pub fn reset_value(&mut self, proto: Protocol, pos: usize, ty: Ty) {
        self.proto = proto;
        self.pos = pos;
        self.pending = Some(ty);
        self.stack.clear();
    }

    pub fn run(&mut self, input: &Input<'_>) -> Result<Progress, ErrorKind> {
        match self.run_inner(input) {
            Ok(end) => Ok(Progress::Done(end)),
            Err(Stop::More) => Ok(Progress::NeedMore),
            Err(Stop::Fail(k)) => Err(k),
        }
    }

    fn run_inner(&mut self, input: &Input<'_>) -> Result<usize, Stop> {
        loop {
            let ty = match self.pending {
                Some(ty) => ty,
                None => match self.stack.last_mut() {
                    None => return Ok(self.pos),
                    Some(Frame::Struct { last_fid }) => {
                        let field = match self.proto {
                            Protocol::Binary => binary::field_header(input, self.pos)?,
                            Protocol::Compact => compact::field_header(input, self.pos, *last_fid)?,
                        };
                        match field {
                            None => {
                                self.pos += 1;
                                self.stack.pop();
                                continue;
                            }
                            Some(f) => {
                                self.pos += f.len;
                                *last_fid = f.id;
                                f.ty
                            }
                        }
                    }
                    Some(Frame::Seq { elem, remaining }) => {
                        if *remaining == 0 {
                            self.stack.pop();
                            continue;
                        }
                        *remaining -= 1;
                        *elem
                    }
                    Some(Frame::Map {
                        key,
                        val,
                        remaining,
                    }) => {
                        if *remaining == 0 {
                            self.stack.pop();
                            continue;
                        }
                        let ty = if *remaining % 2 == 0 { *key } else { *val };
                        *remaining -= 1;
                        ty
                    }
                },
            };
            self.pending = Some(ty);
            self.begin(input, ty)?;
            self.pending = None;
        }
    }

    fn push(&mut self, frame: Frame) -> Result<(), Stop> {
        if self.stack.len() >= MAX_DEPTH {
            return Err(Stop::Fail(ErrorKind::DepthExceeded));
        }
        self.stack.push(frame);
        Ok(())
    }

    /// Consume a scalar or string whole, or the header of a struct or container
    /// (pushing a frame for its contents).
    fn begin(&mut self, input: &Input<'_>, ty: Ty) -> Result<(), Stop> {
        let p = self.proto;
        match ty {
            Ty::Struct => self.push(Frame::Struct { last_fid: 0 }),
            Ty::List | Ty::Set => {
                let (elem, size, n) = match p {
                    Protocol::Binary => binary::list_header(input, self.pos)?,
                    Protocol::Compact => compact::list_header(input, self.pos)?,
                };
                if size > 0 {
                    input.check_fits(self.pos + n, u64::from(size) * min_size(p, elem))?;
                    self.push(Frame::Seq {
                        elem,
                        remaining: size,
                    })?;
                }
                self.pos += n;
                Ok(())
            }
            Ty::Map => {
                let (kv, size, n) = match p {
                    Protocol::Binary => binary::map_header(input, self.pos)?,
                    Protocol::Compact => compact::map_header(input, self.pos)?,
                };
                if let (Some((key, val)), true) = (kv, size > 0) {
                    let per = min_size(p, key) + min_size(p, val);
                    input.check_fits(self.pos + n, u64::from(size) * per)?;
                    self.push(Frame::Map {
                        key,
                        val,
                        remaining: u64::from(size) * 2,
                    })?;
                }
                self.pos += n;
                Ok(())
            }
            Ty::Binary => {
                let (len, n) = match p {
                    Protocol::Binary => binary::binary_len(input, self.pos)?,
                    Protocol::Compact => compact::binary_len(input, self.pos)?,
                };
                input.check_fits(self.pos + n, len)?;
                // len <= limit, which is a usize.
                let len = usize::try_from(len).map_err(|_| ErrorKind::MessageTooLarge)?;
                input.take(self.pos, n + len)?;
                self.pos += n + len;
                Ok(())
            }
            scalar => {
                let n = match p {
                    Protocol::Binary => binary::scalar_len(scalar),
                    Protocol::Compact => compact::scalar_len(input, self.pos, scalar)?,
                };
                input.take(self.pos, n)?;
                self.pos += n;
                Ok(())
            }
        }
    }
}

/// The fewest bytes one value of `ty` takes, to reject impossible container sizes
/// before waiting for (or walking) their elements.
fn min_size(p: Protocol, ty: Ty) -> u64 {
    match (p, ty) {
        (_, Ty::BoolInline) => 0,
        (_, Ty::Bool | Ty::Byte | Ty::Struct) => 1,
        (_, Ty::Double) => 8,
        (_, Ty::Uuid) => 16,
        (Protocol::Binary, Ty::I16) => 2,
        (Protocol::Binary, Ty::I32 | Ty::Binary) => 4,
        (Protocol::Binary, Ty::I64) => 8,
        (Protocol::Binary, Ty::List | Ty::Set) => 5,
        (Protocol::Binary, Ty::Map) => 6,
        (Protocol::Compact, _) => 1,
    }
}

/// One decoded field header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Field {
    pub ty: Ty,
    pub id: i16,
    pub len: usize,
}

/// A map header: key and value types (absent for an empty compact map), entry
/// count, header length.
pub(crate) type MapHeader = (Option<(Ty, Ty)>, u32, usize);
