//! A hand-written, incremental Thrift codec: framed/unframed transports, binary
//! (strict and old-style) and compact protocols, per-connection auto detection.
//!
//! The decoder never copies a message body: a complete message is split off the
//! read buffer as one `Bytes`, with its header parsed and its struct walked (but not
//! materialised) to validate it and, for unframed transports, to find where it ends.
//! Every length read from the wire is checked against `max_message_size` before it
//! is used, and nothing here panics on any input.

mod binary;
mod compact;
mod decoder;
mod reply;
mod skip;
mod theader;
mod transcode;

#[cfg(test)]
mod tests;

use bytes::Bytes;

pub use decoder::{Decoder, DecoderConfig};
pub use reply::{
    answer_with_exception, encode_app_exception, inspect_reply, AppExceptionKind, ReplyOutcome,
};
pub use theader::{encode_frame, FrameInfo, InfoHeaders, Pair};
pub use transcode::transcode;

/// Default `max_message_size`: 16 MiB.
pub const DEFAULT_MAX_MESSAGE_SIZE: usize = 16 * 1024 * 1024;

/// Deepest struct/container nesting accepted in a message body.
pub const MAX_DEPTH: usize = 64;

/// How messages are delimited on a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    /// Each message is preceded by its 4-byte big-endian length.
    Framed,
    /// Messages follow one another; the end is found by walking the struct.
    Unframed,
    /// THeader frames (`THeaderTransport`): a frame length, a header with flags, a
    /// sequence id and info key/values, then the message.
    Header,
}

/// How a message is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Protocol {
    /// `TBinaryProtocol`, strict (`0x8001` versioned) or old-style (non-strict).
    Binary,
    /// `TCompactProtocol` (`0x82`, version 1).
    Compact,
}

/// The transport and protocol of one side of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Framing {
    pub transport: Transport,
    pub protocol: Protocol,
}

/// The message type from the header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MessageType {
    Call,
    Reply,
    Exception,
    Oneway,
}

impl MessageType {
    fn from_wire(b: u8) -> Option<MessageType> {
        match b {
            1 => Some(MessageType::Call),
            2 => Some(MessageType::Reply),
            3 => Some(MessageType::Exception),
            4 => Some(MessageType::Oneway),
            _ => None,
        }
    }

    fn to_wire(self) -> u8 {
        match self {
            MessageType::Call => 1,
            MessageType::Reply => 2,
            MessageType::Exception => 3,
            MessageType::Oneway => 4,
        }
    }
}

/// A decoded message header. The name is a zero-copy slice of the message and is
/// valid UTF-8 (checked when decoded).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    name: Bytes,
    pub message_type: MessageType,
    pub seq_id: i32,
    pub protocol: Protocol,
    pub transport: Transport,
    /// Binary only: the header carried the `0x8001` version (always true for compact).
    pub strict: bool,
    /// THeader only: the frame's flags and sequence id, echoed in the reply.
    pub frame: Option<FrameInfo>,
}

impl Header {
    /// The full message name, e.g. `getUser` or `UserService:getUser`.
    pub fn name(&self) -> &str {
        // Validated when the header was decoded; the fallback is unreachable.
        std::str::from_utf8(&self.name).unwrap_or("")
    }

    /// The method: the part after the first `:` of a multiplexed name, else the name.
    pub fn method(&self) -> &str {
        let name = self.name();
        match name.split_once(':') {
            Some((_, m)) => m,
            None => name,
        }
    }

    /// The service of a multiplexed name (`Service:method`), if any.
    pub fn service(&self) -> Option<&str> {
        self.name().split_once(':').map(|(s, _)| s)
    }

    /// The THeader frame a message of this header gets when re-framed as THeader:
    /// its own, or no flags and the message's sequence id.
    pub fn default_frame(&self) -> FrameInfo {
        self.frame.unwrap_or(FrameInfo {
            flags: 0,
            seq_id: self.seq_id as u32,
        })
    }

    /// The transport and protocol this message arrived in.
    pub fn framing(&self) -> Framing {
        Framing {
            transport: self.transport,
            protocol: self.protocol,
        }
    }
}

/// One complete message, split off the read buffer without copying.
#[derive(Debug, Clone)]
pub struct Message {
    header: Header,
    /// The bytes exactly as received (frame length included when framed).
    wire: Bytes,
    /// Where the protocol message starts in `wire`: 4 when framed, else 0.
    payload_start: usize,
    /// Where the seq id starts, relative to the payload.
    seq_start: usize,
    /// Where the body struct starts, relative to the payload.
    body_start: usize,
    /// THeader only: the info section (key/values, padding) in `wire`.
    info: std::ops::Range<usize>,
}

/// What is written before a message's payload: a frame length, or a THeader frame
/// head without info headers. Built on the stack; the payload is never copied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Prefix {
    bytes: [u8; 18],
    len: u8,
}

impl Prefix {
    fn length(len: usize) -> Prefix {
        // The decoder bounds a message by max_message_size (a u32 in config), so the
        // length fits; saturate rather than panic regardless.
        let len = u32::try_from(len).unwrap_or(u32::MAX);
        let mut bytes = [0; 18];
        bytes[..4].copy_from_slice(&len.to_be_bytes());
        Prefix { bytes, len: 4 }
    }

    fn theader(frame: FrameInfo, protocol: Protocol, payload_len: usize) -> Prefix {
        Prefix {
            bytes: theader::bare_head(frame, protocol, payload_len),
            len: 18,
        }
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }
}

impl Message {
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// The message as received, frame length included when framed.
    pub fn wire(&self) -> &Bytes {
        &self.wire
    }

    /// The protocol message without any frame length.
    pub fn payload(&self) -> Bytes {
        self.wire.slice(self.payload_start..)
    }

    /// The encoded body struct (the arguments or the result), after the header.
    pub fn body(&self) -> &[u8] {
        self.wire
            .get(self.payload_start + self.body_start..)
            .unwrap_or(&[])
    }

    /// The THeader info key/values (none unless the message came in a THeader
    /// frame), in wire order.
    pub fn info_headers(&self) -> InfoHeaders<'_> {
        InfoHeaders::new(self.info_section())
    }

    /// The info section as received (empty unless THeader).
    pub(crate) fn info_section(&self) -> &[u8] {
        self.wire.get(self.info.clone()).unwrap_or(&[])
    }

    /// The message for a peer using `transport`: an optional [`Prefix`] to write
    /// first, then the payload. Zero-copy in every direction: framed <-> unframed
    /// drops or prepends the length; THeader to another transport drops the frame
    /// head (info headers included); another transport to THeader prepends a head
    /// with `frame` (default: no flags, the message's sequence id) and no info
    /// headers; THeader to THeader is the frame as received.
    pub fn wire_for(
        &self,
        transport: Transport,
        frame: Option<FrameInfo>,
    ) -> (Option<Prefix>, Bytes) {
        match (self.header.transport, transport) {
            (Transport::Framed, Transport::Framed)
            | (Transport::Unframed, Transport::Unframed)
            | (Transport::Header, Transport::Header) => (None, self.wire.clone()),
            (Transport::Framed | Transport::Header, Transport::Unframed) => (None, self.payload()),
            (Transport::Unframed, Transport::Framed) => {
                (Some(Prefix::length(self.wire.len())), self.wire.clone())
            }
            (Transport::Header, Transport::Framed) => {
                let payload = self.payload();
                (Some(Prefix::length(payload.len())), payload)
            }
            (Transport::Framed | Transport::Unframed, Transport::Header) => {
                let payload = self.payload();
                let frame = frame.unwrap_or_else(|| self.header.default_frame());
                let head = Prefix::theader(frame, self.header.protocol, payload.len());
                (Some(head), payload)
            }
        }
    }

    /// The same message with another sequence id, for `transport`. Binary patches the
    /// fixed-width id in a copy; compact re-encodes the header (the id is a varint).
    ///
    /// The proxy does not need this: it keeps one call in flight per upstream
    /// connection, so client sequence ids pass through unchanged. It exists for an
    /// upstream multiplexing mode.
    pub fn with_seq_id(&self, seq_id: i32, transport: Transport) -> Bytes {
        let payload = &self.wire[self.payload_start..];
        let mut out = bytes::BytesMut::with_capacity(payload.len() + 8);
        let frame = FrameInfo {
            seq_id: seq_id as u32,
            ..self.header.frame.unwrap_or_default()
        };
        let start = match transport {
            Transport::Framed => {
                out.extend_from_slice(&[0; 4]);
                Some(0)
            }
            Transport::Header => Some(theader::start(
                &mut out,
                frame,
                self.header.protocol,
                self.info_section(),
            )),
            Transport::Unframed => None,
        };
        let before = out.len();
        match self.header.protocol {
            Protocol::Binary => {
                out.extend_from_slice(payload);
                let at = before + self.seq_start;
                if let Some(slot) = out.get_mut(at..at + 4) {
                    slot.copy_from_slice(&seq_id.to_be_bytes());
                }
            }
            Protocol::Compact => {
                compact::write_header(
                    &mut out,
                    self.header.name(),
                    self.header.message_type,
                    seq_id,
                );
                out.extend_from_slice(payload.get(self.body_start..).unwrap_or(&[]));
            }
        }
        if let Some(at) = start {
            theader::finish(&mut out, at);
        }
        out.freeze()
    }
}

/// What was wrong with the input. Callers branch on this, never on message text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum ErrorKind {
    #[error("frame length exceeds max_message_size")]
    FrameTooLarge,
    #[error("negative length")]
    NegativeLength,
    #[error("empty frame")]
    EmptyFrame,
    #[error("frame length below the smallest message")]
    FrameTooSmall,
    #[error("message exceeds max_message_size")]
    MessageTooLarge,
    #[error("nesting deeper than {MAX_DEPTH}")]
    DepthExceeded,
    #[error("unknown field type id")]
    UnknownType,
    #[error("unknown protocol or version")]
    UnknownProtocol,
    #[error("protocol differs from the one configured or detected on this connection")]
    ProtocolMismatch,
    #[error("message name is not valid utf-8")]
    InvalidName,
    #[error("unknown message type")]
    UnknownMessageType,
    #[error("varint too long")]
    InvalidVarint,
    #[error("frame ends inside the message")]
    Truncated,
    #[error("frame has bytes after the message")]
    TrailingBytes,
    #[error("malformed THeader header")]
    InvalidHeader,
    #[error("THeader transform (compression) not supported")]
    UnsupportedTransform,
}

/// A decode error: its kind, and the header when it decoded before the body failed
/// (so a proxy can answer with an exception carrying the caller's seq id before
/// closing, rather than only closing).
#[derive(Debug, Clone, thiserror::Error)]
#[error("thrift decode: {kind}")]
pub struct Error {
    kind: ErrorKind,
    header: Option<Box<Header>>,
}

impl Error {
    pub(crate) fn new(kind: ErrorKind) -> Error {
        Error { kind, header: None }
    }

    pub(crate) fn with_header(kind: ErrorKind, header: Header) -> Error {
        Error {
            kind,
            header: Some(Box::new(header)),
        }
    }

    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The header, when it decoded before the error.
    pub fn header(&self) -> Option<&Header> {
        self.header.as_deref()
    }

    /// A size limit was hit (frame, string, container or message).
    pub fn is_too_large(&self) -> bool {
        matches!(
            self.kind,
            ErrorKind::FrameTooLarge | ErrorKind::MessageTooLarge
        )
    }
}

impl From<ErrorKind> for Error {
    fn from(kind: ErrorKind) -> Error {
        Error::new(kind)
    }
}
