//! The chunked transfer coding (RFC 9112 section 7.1): one strict decoder for
//! request bodies (server role) and response bodies (client role), and the
//! chunk-size line the encoders write.
//!
//! The grammar is taken literally, because a proxy that reads a chunked body more
//! leniently than the server behind it can be made to see a different message
//! boundary (request smuggling):
//!
//! - `chunk-size` is 1 to 16 hex digits. No `0x`, sign, leading or trailing
//!   whitespace, underscore, or more digits than a u64 holds.
//! - Extensions (`;name=value`, optionally after whitespace) are skipped; a line
//!   is at most [`MAX_LINE`] bytes, all extensions of a body together at most
//!   [`MAX_EXTENSIONS`], and no control character other than HTAB may appear.
//! - Every line ends with CRLF. A bare LF is an error (NGINX accepts one, HAProxy
//!   and Envoy do not; rejecting is the reading no server can disagree with).
//! - Chunk data is followed by exactly CRLF, so data longer than its size is an
//!   error at the first extra byte.
//! - Trailer fields are checked as header fields (a token name, `:`, a value
//!   without control characters, no obs-fold), at most [`MAX_TRAILERS`] bytes in
//!   all, and dropped: neither direction forwards trailers over HTTP/1.1.
//!
//! Errors are found as early as the bytes allow: a line is checked as far as it
//! has arrived, so `0x5` is refused at the `x`, not when its line ends.

use bytes::{Buf, Bytes, BytesMut};

/// Longest chunk-size line (size, extensions, CRLF).
pub const MAX_LINE: usize = 4 * 1024;
/// Most extension bytes in one body (hyper's bound too): many tiny chunks with
/// long extensions cost the reader without moving any data.
pub const MAX_EXTENSIONS: usize = 16 * 1024;
/// Most bytes of trailer fields after the last chunk.
pub const MAX_TRAILERS: usize = 16 * 1024;

/// What is wrong with a chunked body. Each names one class of the request-hygiene
/// table in docs/configuration.md.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Error {
    /// The chunk size is not 1 to 16 hex digits directly followed by `;`, optional
    /// whitespace then `;`, or CRLF.
    Size,
    /// A control character (other than HTAB) inside a chunk extension.
    Extension,
    /// A line that does not end with CRLF (a bare LF, or CR followed by another byte).
    LineEnd,
    /// Chunk data not followed by CRLF: longer than its size, or a missing CRLF.
    DataEnd,
    /// A trailer line that is not a header field.
    Trailer,
    /// A chunk-size line, the body's extensions or its trailers over their bounds.
    TooLong,
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Error::Size => "invalid chunk size",
            Error::Extension => "invalid chunk extension",
            Error::LineEnd => "chunked line not ended by CRLF",
            Error::DataEnd => "chunk data not followed by CRLF",
            Error::Trailer => "invalid trailer field",
            Error::TooLong => "chunk line, extensions or trailers too long",
        })
    }
}

impl std::error::Error for Error {}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// At the start of a chunk-size line.
    Size,
    /// Chunk data bytes still to come (`Decoder::left` of them).
    Data,
    /// The CRLF after chunk data.
    DataEnd,
    /// At the start of a trailer field line, or the empty line ending the body.
    Trailer,
    Done,
}

/// How far one step got through the bytes it was given.
#[derive(Debug, PartialEq, Eq)]
enum Step {
    /// This many framing bytes were read.
    Skip(usize),
    /// This many bytes are chunk data.
    Data(usize),
    /// More input is needed (what is there is valid so far).
    More,
}

/// Decoder state for one chunked body. Small (16 bytes: it lives in every
/// HTTP/1 body, request and response) and `Copy`: [`Decoder::scan`] checks bytes
/// ahead on a copy without consuming them.
#[derive(Debug, Clone, Copy)]
pub struct Decoder {
    state: State,
    /// Chunk data bytes still to come in `State::Data`.
    left: u64,
    /// Extension bytes so far (at most [`MAX_EXTENSIONS`]).
    extensions: u16,
    /// Trailer bytes so far (at most [`MAX_TRAILERS`]).
    trailers: u16,
}

// The bounds the counters are checked against fit them.
const _: () = assert!(MAX_EXTENSIONS <= u16::MAX as usize && MAX_TRAILERS <= u16::MAX as usize);

impl Default for Decoder {
    fn default() -> Self {
        Decoder::new()
    }
}

impl Decoder {
    pub const fn new() -> Decoder {
        Decoder {
            state: State::Size,
            left: 0,
            extensions: 0,
            trailers: 0,
        }
    }

    /// Whether the whole body (last chunk and trailers) has been read.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Chunk data bytes still expected in the current chunk (0 between chunks): a
    /// read-size hint.
    pub fn data_left(&self) -> u64 {
        match self.state {
            State::Data => self.left,
            _ => 0,
        }
    }

    /// Decode from the front of `buf`: the next piece of chunk data, or `None` when
    /// more input is needed or the body is done ([`Decoder::is_done`]). Framing
    /// that is already buffered after the data is consumed too, so the last data
    /// frame already reports the end. An error is final; data buffered before it
    /// is handed out first.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Bytes>, Error> {
        let mut out = None;
        while !self.is_done() {
            if out.is_some() && self.data_left() > 0 {
                // The next chunk's data: for the next call.
                break;
            }
            let step = match self.step(buf) {
                Ok(s) => s,
                Err(_) if out.is_some() => break,
                Err(e) => return Err(e),
            };
            match step {
                Step::Skip(n) => buf.advance(n),
                Step::Data(n) => out = Some(buf.split_to(n).freeze()),
                Step::More => break,
            }
        }
        Ok(out)
    }

    /// Check `buf` (the bytes after what was decoded so far) without consuming it:
    /// `Ok(Some(n))` when the body ends within it after `n` bytes, `Ok(None)` when
    /// all of it is valid and more is to come.
    pub fn scan(&self, buf: &[u8]) -> Result<Option<usize>, Error> {
        let mut d = *self;
        let mut at = 0;
        while !d.is_done() {
            match d.step(&buf[at..])? {
                Step::Skip(n) | Step::Data(n) => at += n,
                Step::More => return Ok(None),
            }
        }
        Ok(Some(at))
    }

    /// One element from the front of `buf`. The state changes only on success.
    fn step(&mut self, buf: &[u8]) -> Result<Step, Error> {
        match self.state {
            State::Done => Ok(Step::More),
            State::Size => {
                let Some(line) = size_line(buf)? else {
                    return Ok(Step::More);
                };
                let extensions = usize::from(self.extensions) + line.extensions;
                if extensions > MAX_EXTENSIONS {
                    return Err(Error::TooLong);
                }
                self.extensions = extensions as u16;
                self.left = line.size;
                self.state = match line.size {
                    0 => State::Trailer,
                    _ => State::Data,
                };
                Ok(Step::Skip(line.len))
            }
            State::Data => {
                if buf.is_empty() {
                    return Ok(Step::More);
                }
                let n = self.left.min(buf.len() as u64);
                self.left -= n;
                if self.left == 0 {
                    self.state = State::DataEnd;
                }
                Ok(Step::Data(n as usize))
            }
            State::DataEnd => match buf {
                [b'\r', b'\n', ..] => {
                    self.state = State::Size;
                    Ok(Step::Skip(2))
                }
                [] | [b'\r'] => Ok(Step::More),
                _ => Err(Error::DataEnd),
            },
            State::Trailer => {
                let Some(len) = trailer_line(buf)? else {
                    if usize::from(self.trailers) + buf.len() > MAX_TRAILERS {
                        return Err(Error::TooLong);
                    }
                    return Ok(Step::More);
                };
                if len == 2 {
                    self.state = State::Done;
                } else {
                    let trailers = usize::from(self.trailers) + len;
                    if trailers > MAX_TRAILERS {
                        return Err(Error::TooLong);
                    }
                    self.trailers = trailers as u16;
                }
                Ok(Step::Skip(len))
            }
        }
    }
}

struct SizeLine {
    size: u64,
    /// Bytes of the line, CRLF included.
    len: usize,
    /// Bytes of extensions (from the first `;` to the CR).
    extensions: usize,
}

/// A complete chunk-size line at the front of `buf` (`None`: valid so far, but
/// its end has not arrived).
fn size_line(buf: &[u8]) -> Result<Option<SizeLine>, Error> {
    let digits = buf.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    if digits > 16 {
        return Err(Error::Size);
    }
    if digits == buf.len() {
        return Ok(None);
    }
    if digits == 0 {
        return Err(Error::Size);
    }
    let size = buf[..digits]
        .iter()
        .fold(0u64, |n, &b| (n << 4) | u64::from(hex_value(b)));
    // Whitespace is allowed before an extension only (RFC 9112's BWS).
    let ws = buf[digits..]
        .iter()
        .take_while(|&&b| b == b' ' || b == b'\t')
        .count();
    let at = digits + ws;
    let ext_start = at;
    let end = match buf.get(at) {
        None => return Ok(None),
        Some(b';') => match extension_end(&buf[at..])? {
            Some(n) => at + n,
            None => return bounded(buf),
        },
        Some(b'\r') if ws == 0 => at,
        Some(b'\n') if ws == 0 => return Err(Error::LineEnd),
        Some(_) => return Err(Error::Size),
    };
    match buf.get(end + 1) {
        None => bounded(buf),
        Some(b'\n') if end + 2 <= MAX_LINE => Ok(Some(SizeLine {
            size,
            len: end + 2,
            extensions: end - ext_start,
        })),
        Some(b'\n') => Err(Error::TooLong),
        Some(_) => Err(Error::LineEnd),
    }
}

/// `None` while an incomplete line is within [`MAX_LINE`].
fn bounded<T>(buf: &[u8]) -> Result<Option<T>, Error> {
    if buf.len() >= MAX_LINE {
        return Err(Error::TooLong);
    }
    Ok(None)
}

/// The offset of the CR ending the extensions at the front of `ext` (which starts
/// with `;`), or `None` when it has not arrived.
fn extension_end(ext: &[u8]) -> Result<Option<usize>, Error> {
    for (i, &b) in ext.iter().enumerate() {
        match b {
            b'\r' => return Ok(Some(i)),
            b'\n' => return Err(Error::LineEnd),
            b'\t' => {}
            0..=0x1f | 0x7f => return Err(Error::Extension),
            _ => {}
        }
    }
    Ok(None)
}

fn hex_value(b: u8) -> u8 {
    match b {
        b'0'..=b'9' => b - b'0',
        b'a'..=b'f' => b - b'a' + 10,
        _ => b - b'A' + 10,
    }
}

/// A complete trailer line at the front of `buf`, CRLF included (2 for the empty
/// line ending the body); `None` while it is valid so far.
fn trailer_line(buf: &[u8]) -> Result<Option<usize>, Error> {
    let name = buf.iter().take_while(|&&b| is_tchar(b)).count();
    let value_start = match buf.get(name) {
        None => return Ok(None),
        Some(b':') if name > 0 => name + 1,
        Some(b'\r') if name == 0 => name,
        Some(b'\n') if name == 0 => return Err(Error::LineEnd),
        Some(_) => return Err(Error::Trailer),
    };
    let mut i = value_start;
    while let Some(&b) = buf.get(i) {
        match b {
            b'\r' => {
                return match buf.get(i + 1) {
                    None => Ok(None),
                    Some(b'\n') => Ok(Some(i + 2)),
                    Some(_) => Err(Error::LineEnd),
                }
            }
            b'\n' => return Err(Error::LineEnd),
            b'\t' => {}
            0..=0x1f | 0x7f => return Err(Error::Trailer),
            _ => {}
        }
        i += 1;
    }
    Ok(None)
}

/// RFC 9110 `tchar`.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// A chunk-size line (`<hex>\r\n`), on the stack.
pub struct SizeLineOut {
    digits: [u8; 18],
    start: usize,
}

impl SizeLineOut {
    pub fn as_bytes(&self) -> &[u8] {
        &self.digits[self.start..]
    }
}

/// The chunk-size line that starts a chunk of `len` bytes.
pub fn size_line_for(len: usize) -> SizeLineOut {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut digits = [0u8; 18];
    let mut i = 16;
    let mut n = len;
    loop {
        i -= 1;
        digits[i] = HEX[n & 0xf];
        n >>= 4;
        if n == 0 {
            break;
        }
    }
    digits[16] = b'\r';
    digits[17] = b'\n';
    SizeLineOut { digits, start: i }
}

#[cfg(test)]
mod tests;
