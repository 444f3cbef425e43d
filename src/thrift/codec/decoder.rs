//! The incremental decoder: transport and protocol detection, frames, and splitting
//! complete messages off the read buffer.

use bytes::{Bytes, BytesMut};

use super::binary::{self, RawHeader};
use super::compact;
use super::skip::{Input, Progress, Stop, Walker};
use super::theader::{self, MAGIC};
use super::{
    Error, ErrorKind, Header, Message, MessageType, Protocol, Transport, DEFAULT_MAX_MESSAGE_SIZE,
};

/// What a connection is expected to speak. `None` means detect it from the first
/// message and then hold the connection to what was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecoderConfig {
    pub transport: Option<Transport>,
    pub protocol: Option<Protocol>,
    /// Largest message (frame payload, or unframed message) accepted.
    pub max_message_size: usize,
}

impl Default for DecoderConfig {
    fn default() -> Self {
        DecoderConfig {
            transport: None,
            protocol: None,
            max_message_size: DEFAULT_MAX_MESSAGE_SIZE,
        }
    }
}

/// An unframed message whose header is parsed and whose body walk is under way.
#[derive(Debug)]
struct Partial {
    raw: RawHeader,
    protocol: Protocol,
}

/// Decodes the messages of one connection, in order.
///
/// Call [`Decoder::decode`] after each read with the same buffer, appending new bytes
/// at its end and never consuming from it in between: the decoder resumes partial
/// work (an unframed body walk) from where it stopped.
#[derive(Debug)]
pub struct Decoder {
    max: usize,
    transport: Option<Transport>,
    protocol: Option<Protocol>,
    partial: Option<Partial>,
    /// The header of the incomplete frame at the front of the buffer parsed: it is
    /// not parsed again on each read while the rest of the frame arrives.
    head_checked: bool,
    walker: Walker,
}

impl Decoder {
    pub fn new(config: DecoderConfig) -> Decoder {
        Decoder {
            max: config.max_message_size,
            transport: config.transport,
            protocol: config.protocol,
            partial: None,
            head_checked: false,
            walker: Walker::new(Protocol::Binary),
        }
    }

    /// The transport, once configured or detected.
    pub fn transport(&self) -> Option<Transport> {
        self.transport
    }

    /// The protocol, once configured or detected.
    pub fn protocol(&self) -> Option<Protocol> {
        self.protocol
    }

    /// The next complete message, split off the front of `buf`; `Ok(None)` when more
    /// bytes are needed. After an error the connection's byte stream cannot be
    /// trusted: answer (when the error carries a header) and close.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Message>, Error> {
        let transport = match self.transport {
            Some(t) => t,
            None => match detect_transport(buf)? {
                Some(t) => {
                    self.transport = Some(t);
                    t
                }
                None => return Ok(None),
            },
        };
        match transport {
            Transport::Framed | Transport::Header => self.decode_framed(buf, transport),
            Transport::Unframed => self.decode_unframed(buf),
        }
    }

    /// Check (or, when auto, fix) the protocol from a payload's first byte.
    fn protocol_for(&mut self, first: u8) -> Result<Protocol, ErrorKind> {
        let seen = match first {
            compact::PROTOCOL_ID => Protocol::Compact,
            // 0x80 is the strict binary version; below it, an old-style name length.
            b if b <= 0x80 => Protocol::Binary,
            _ => return Err(ErrorKind::UnknownProtocol),
        };
        match self.protocol {
            None => {
                self.protocol = Some(seen);
                Ok(seen)
            }
            Some(p) if p == seen => Ok(p),
            Some(Protocol::Compact) if first < 0x80 => Err(ErrorKind::UnknownProtocol),
            Some(_) => Err(ErrorKind::ProtocolMismatch),
        }
    }

    /// A framed or THeader frame. Both start with a 4-byte length; a THeader frame
    /// then has its head (checked, info headers included) before the message.
    fn decode_framed(
        &mut self,
        buf: &mut BytesMut,
        transport: Transport,
    ) -> Result<Option<Message>, Error> {
        let Some(&[a, b, c, d]) = buf.get(..4) else {
            return Ok(None);
        };
        let len = i32::from_be_bytes([a, b, c, d]);
        let len = usize::try_from(len).map_err(|_| ErrorKind::NegativeLength)?;
        if len > self.max {
            return Err(ErrorKind::FrameTooLarge.into());
        }
        if len == 0 {
            return Err(ErrorKind::EmptyFrame.into());
        }
        if len < MIN_MESSAGE {
            return Err(ErrorKind::FrameTooSmall.into());
        }
        let Some(frame) = buf.get(4..4 + len) else {
            self.check_frame_head(buf.get(4..).unwrap_or(&[]), len, transport)?;
            return Ok(None);
        };
        self.head_checked = false;
        // The frame is complete, so anything missing means it is too short.
        let complete = |s: Stop| match s {
            Stop::More | Stop::Fail(ErrorKind::MessageTooLarge) => ErrorKind::Truncated,
            Stop::Fail(k) => k,
        };
        let head = match transport {
            Transport::Header => {
                Some(theader::parse_head(&frame_input(frame, len)).map_err(complete)?)
            }
            _ => None,
        };
        if let Some(h) = head.as_ref().filter(|h| h.transformed) {
            return Err(refuse_transformed(h));
        }
        let inner = head.as_ref().map_or(0, |h| h.payload_start);
        let payload = frame.get(inner..).unwrap_or(&[]);
        let protocol = self.payload_protocol(payload, head.as_ref())?;
        let input = Input {
            buf: payload,
            limit: len - inner,
        };
        let raw = parse_header(protocol, &input).map_err(complete)?;
        self.walker.reset_struct(protocol, raw.body_start);
        let walked = self.walker.run(&input);
        let fail = match walked {
            Ok(Progress::Done(end)) if end == input.limit => None,
            Ok(Progress::Done(_)) => Some(ErrorKind::TrailingBytes),
            Ok(Progress::NeedMore) | Err(ErrorKind::MessageTooLarge) => Some(ErrorKind::Truncated),
            Err(k) => Some(k),
        };
        let at = Located {
            protocol,
            transport,
            payload_start: 4 + inner,
            head,
        };
        if let Some(kind) = fail {
            let name = Bytes::copy_from_slice(payload.get(raw.name.clone()).unwrap_or(&[]));
            let mut header = header(name, &raw, protocol, transport);
            header.frame = at.head.as_ref().map(|h| h.frame);
            return Err(Error::with_header(kind, header));
        }
        let wire = buf.split_to(4 + len).freeze();
        Ok(Some(message(wire, &raw, &at)))
    }

    /// The protocol of a frame's message, from its first byte; in a THeader frame it
    /// must be the one the head names.
    fn payload_protocol(
        &mut self,
        payload: &[u8],
        head: Option<&theader::Head>,
    ) -> Result<Protocol, ErrorKind> {
        let first = *payload.first().ok_or(ErrorKind::Truncated)?;
        let protocol = self.protocol_for(first)?;
        match head {
            Some(h) if h.protocol != protocol => Err(ErrorKind::ProtocolMismatch),
            _ => Ok(protocol),
        }
    }

    /// Refuse an incomplete frame as soon as its first bytes cannot start a message
    /// (a bad THeader head, unknown protocol or version, message type, a name
    /// longer than the frame), rather than after waiting for the length it
    /// declared. Only the head is looked at, once per frame.
    fn check_frame_head(
        &mut self,
        head: &[u8],
        len: usize,
        transport: Transport,
    ) -> Result<(), Error> {
        if head.is_empty() || self.head_checked {
            return Ok(());
        }
        let (inner, theader) = match transport {
            Transport::Header => match theader::parse_head(&frame_input(head, len)) {
                Ok(h) if h.transformed => return Err(refuse_transformed(&h)),
                Ok(h) => (h.payload_start, Some(h)),
                Err(Stop::More) => return Ok(()),
                Err(Stop::Fail(ErrorKind::MessageTooLarge)) => {
                    return Err(ErrorKind::Truncated.into())
                }
                Err(Stop::Fail(k)) => return Err(k.into()),
            },
            _ => (0, None),
        };
        let Some(payload) = head.get(inner..).filter(|p| !p.is_empty()) else {
            return Ok(());
        };
        let protocol = self.payload_protocol(payload, theader.as_ref())?;
        let input = Input {
            buf: payload,
            limit: len - inner,
        };
        match parse_header(protocol, &input) {
            Ok(_) => {
                self.head_checked = true;
                Ok(())
            }
            Err(Stop::More) => Ok(()),
            // As for a complete frame: a name that does not fit in it.
            Err(Stop::Fail(ErrorKind::MessageTooLarge)) => Err(ErrorKind::Truncated.into()),
            Err(Stop::Fail(k)) => Err(k.into()),
        }
    }

    fn decode_unframed(&mut self, buf: &mut BytesMut) -> Result<Option<Message>, Error> {
        let input = Input {
            buf,
            limit: self.max,
        };
        if self.partial.is_none() {
            let Some(&first) = buf.first() else {
                return Ok(None);
            };
            let protocol = self.protocol_for(first)?;
            let raw = match parse_header(protocol, &input) {
                Ok(raw) => raw,
                Err(Stop::More) => return Ok(None),
                Err(Stop::Fail(k)) => return Err(k.into()),
            };
            self.walker.reset_struct(protocol, raw.body_start);
            self.partial = Some(Partial { raw, protocol });
        }
        let Some(partial) = &self.partial else {
            return Ok(None);
        };
        match self.walker.run(&input) {
            Ok(Progress::NeedMore) => Ok(None),
            Ok(Progress::Done(end)) => {
                let Partial { raw, protocol } = &partial;
                let wire = buf.split_to(end).freeze();
                let at = Located {
                    protocol: *protocol,
                    transport: Transport::Unframed,
                    payload_start: 0,
                    head: None,
                };
                let msg = message(wire, raw, &at);
                self.partial = None;
                Ok(Some(msg))
            }
            Err(kind) => {
                let name = Bytes::copy_from_slice(buf.get(partial.raw.name.clone()).unwrap_or(&[]));
                let header = header(name, &partial.raw, partial.protocol, Transport::Unframed);
                self.partial = None;
                Err(Error::with_header(kind, header))
            }
        }
    }
}

/// The smallest message any protocol can encode: compact's protocol id, version and
/// type, a one-byte seq id, an empty name and an empty struct.
const MIN_MESSAGE: usize = 5;

fn parse_header(protocol: Protocol, input: &Input<'_>) -> Result<RawHeader, Stop> {
    match protocol {
        Protocol::Binary => binary::parse_header(input),
        Protocol::Compact => compact::parse_header(input),
    }
}

fn header(name: Bytes, raw: &RawHeader, protocol: Protocol, transport: Transport) -> Header {
    Header {
        name,
        message_type: raw.message_type,
        seq_id: raw.seq_id,
        protocol,
        transport,
        strict: raw.strict,
        frame: None,
    }
}

/// A THeader frame whose payload is compressed cannot be routed: refused with a
/// header naming the frame (no method; the message is not readable), so the
/// client can be told why before the connection closes.
fn refuse_transformed(h: &theader::Head) -> Error {
    let header = Header {
        name: Bytes::new(),
        message_type: MessageType::Call,
        seq_id: h.frame.seq_id as i32,
        protocol: h.protocol,
        transport: Transport::Header,
        strict: true,
        frame: Some(h.frame),
    };
    Error::with_header(ErrorKind::UnsupportedTransform, header)
}

/// The frame payload (after the length) received so far, and its declared length.
fn frame_input(buf: &[u8], len: usize) -> Input<'_> {
    Input { buf, limit: len }
}

/// Where a decoded message sits in its wire bytes, and how it arrived.
struct Located {
    protocol: Protocol,
    transport: Transport,
    /// Where the protocol message starts in the wire bytes.
    payload_start: usize,
    /// THeader only: the frame head (offsets from the frame payload, after LENGTH).
    head: Option<theader::Head>,
}

fn message(wire: Bytes, raw: &RawHeader, at: &Located) -> Message {
    let p = at.payload_start;
    let name = wire.slice(p + raw.name.start..p + raw.name.end);
    let mut header = header(name, raw, at.protocol, at.transport);
    header.frame = at.head.as_ref().map(|h| h.frame);
    let info = at
        .head
        .as_ref()
        .map_or(0..0, |h| 4 + h.info.start..4 + h.info.end);
    Message {
        header,
        wire,
        payload_start: p,
        seq_start: raw.seq_start,
        body_start: raw.body_start,
        info,
    }
}

/// Decide framed, THeader or unframed from a connection's first bytes (`None`:
/// need more).
///
/// A frame length followed by the THeader magic `0x0FFF` is THeader. A protocol
/// magic first (`0x80` strict binary, `0x82` compact) means unframed: a
/// frame length that large would be negative. Otherwise the first four bytes are a
/// frame length if a magic follows them. Failing both, this is old-style binary,
/// framed when bytes 4..8 read as a name length that fits inside the frame the first
/// four bytes would describe, unframed when those four bytes are the name length.
pub(crate) fn detect_transport(buf: &[u8]) -> Result<Option<Transport>, ErrorKind> {
    let Some(&b0) = buf.first() else {
        return Ok(None);
    };
    if b0 == 0x80 || b0 == compact::PROTOCOL_ID {
        return Ok(Some(Transport::Unframed));
    }
    if b0 > 0x7f {
        return Err(ErrorKind::UnknownProtocol);
    }
    let Some(&b4) = buf.get(4) else {
        return Ok(None);
    };
    if b4 == MAGIC[0] {
        // The THeader magic; not an old-style name (0xff is never UTF-8).
        match buf.get(5) {
            None => return Ok(None),
            Some(&b5) if b5 == MAGIC[1] => return Ok(Some(Transport::Header)),
            Some(_) => {}
        }
    }
    if b4 == 0x80 || b4 == compact::PROTOCOL_ID {
        return Ok(Some(Transport::Framed));
    }
    let Some(&[a0, a1, a2, a3, n0, n1, n2, n3]) = buf.get(..8) else {
        return Ok(None);
    };
    let frame = i64::from(i32::from_be_bytes([a0, a1, a2, a3]));
    let name = i64::from(i32::from_be_bytes([n0, n1, n2, n3]));
    // Old-style framed: length, then name length, name, type byte, seq id.
    if name >= 0 && name + 9 <= frame {
        Ok(Some(Transport::Framed))
    } else {
        Ok(Some(Transport::Unframed))
    }
}
