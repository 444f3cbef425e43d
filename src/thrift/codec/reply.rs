//! Classifying replies (success, declared IDL exception, `TApplicationException`)
//! and encoding the proxy's own `TApplicationException` replies.

use bytes::{BufMut, BytesMut};

use super::skip::{Input, Progress, Stop, Ty, Walker};
use super::theader::{self, FrameInfo};
use super::{
    binary, compact, ErrorKind, Framing, Header, Message, MessageType, Protocol, Transport,
};

/// `TApplicationException` types (the subset the proxy uses or reports).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AppExceptionKind {
    Unknown,
    UnknownMethod,
    InternalError,
    ProtocolError,
    /// A THeader transform (compression) the receiver does not support.
    InvalidTransform,
    /// Any other type id.
    Other(i32),
}

impl AppExceptionKind {
    pub fn to_wire(self) -> i32 {
        match self {
            AppExceptionKind::Unknown => 0,
            AppExceptionKind::UnknownMethod => 1,
            AppExceptionKind::InternalError => 6,
            AppExceptionKind::ProtocolError => 7,
            AppExceptionKind::InvalidTransform => 8,
            AppExceptionKind::Other(n) => n,
        }
    }

    pub fn from_wire(n: i32) -> AppExceptionKind {
        match n {
            0 => AppExceptionKind::Unknown,
            1 => AppExceptionKind::UnknownMethod,
            6 => AppExceptionKind::InternalError,
            7 => AppExceptionKind::ProtocolError,
            8 => AppExceptionKind::InvalidTransform,
            n => AppExceptionKind::Other(n),
        }
    }
}

/// What a reply says about the call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReplyOutcome {
    /// The result struct set field 0, or is empty (a void method).
    Success,
    /// The result struct set a declared exception (field id != 0).
    IdlException { field_id: i16 },
    /// A `TApplicationException` (message type Exception); its type when present.
    AppException { kind: Option<AppExceptionKind> },
}

/// Classify a Reply or Exception message. Calls and oneways are not replies
/// (`UnknownMessageType`).
pub fn inspect_reply(msg: &Message) -> Result<ReplyOutcome, ErrorKind> {
    let h = msg.header();
    let input = Input {
        buf: msg.body(),
        limit: msg.body().len(),
    };
    let fail = |s: Stop| match s {
        Stop::More | Stop::Fail(ErrorKind::MessageTooLarge) => ErrorKind::Truncated,
        Stop::Fail(k) => k,
    };
    match h.message_type {
        MessageType::Reply => {
            let field = match h.protocol {
                Protocol::Binary => binary::field_header(&input, 0),
                Protocol::Compact => compact::field_header(&input, 0, 0),
            }
            .map_err(fail)?;
            Ok(match field {
                None => ReplyOutcome::Success,
                Some(f) if f.id == 0 => ReplyOutcome::Success,
                Some(f) => ReplyOutcome::IdlException { field_id: f.id },
            })
        }
        MessageType::Exception => {
            // Find field 2 (type: i32), skipping whatever else is there.
            let mut pos = 0;
            let mut last = 0;
            let mut walker = Walker::new(h.protocol);
            loop {
                let field = match h.protocol {
                    Protocol::Binary => binary::field_header(&input, pos),
                    Protocol::Compact => compact::field_header(&input, pos, last),
                }
                .map_err(fail)?;
                let Some(f) = field else {
                    return Ok(ReplyOutcome::AppException { kind: None });
                };
                pos += f.len;
                last = f.id;
                if f.id == 2 && f.ty == Ty::I32 {
                    let n = match h.protocol {
                        Protocol::Binary => binary::read_i32(&input, pos),
                        Protocol::Compact => compact::read_i32(&input, pos),
                    }
                    .map_err(fail)?;
                    return Ok(ReplyOutcome::AppException {
                        kind: Some(AppExceptionKind::from_wire(n)),
                    });
                }
                walker.reset_value(h.protocol, pos, f.ty);
                match walker.run(&input)? {
                    Progress::Done(end) => pos = end,
                    Progress::NeedMore => return Err(ErrorKind::Truncated),
                }
            }
        }
        MessageType::Call | MessageType::Oneway => Err(ErrorKind::UnknownMessageType),
    }
}

/// Append a `TApplicationException` message (`message` field 1, `type` field 2) for
/// call `name`/`seq_id` in `framing` to `out` (THeader: a frame with no flags and
/// `seq_id`; see [`answer_with_exception`] to echo a call's frame).
pub fn encode_app_exception(
    out: &mut BytesMut,
    framing: Framing,
    name: &str,
    seq_id: i32,
    kind: AppExceptionKind,
    message: &str,
) {
    let frame = FrameInfo {
        flags: 0,
        seq_id: seq_id as u32,
    };
    encode(out, framing, frame, (name, seq_id), kind, message);
}

/// Append a `TApplicationException` answering `call` in its own transport and
/// protocol, with its sequence id and bare method name (as a multiplexing server
/// replies); a THeader reply echoes the call's frame flags and sequence id.
pub fn answer_with_exception(
    out: &mut BytesMut,
    call: &Header,
    kind: AppExceptionKind,
    message: &str,
) {
    let frame = call.default_frame();
    let id = (call.method(), call.seq_id);
    encode(out, call.framing(), frame, id, kind, message);
}

fn encode(
    out: &mut BytesMut,
    framing: Framing,
    frame: FrameInfo,
    (name, seq_id): (&str, i32),
    kind: AppExceptionKind,
    message: &str,
) {
    let start = match framing.transport {
        Transport::Framed => {
            out.put_u32(0);
            Some(out.len() - 4)
        }
        Transport::Header => Some(theader::start(out, frame, framing.protocol, &[])),
        Transport::Unframed => None,
    };
    match framing.protocol {
        Protocol::Binary => {
            binary::write_header(out, name, MessageType::Exception, seq_id);
            out.put_u8(11); // string
            out.put_i16(1);
            binary::put_string(out, message.as_bytes());
            out.put_u8(8); // i32
            out.put_i16(2);
            out.put_i32(kind.to_wire());
            out.put_u8(0);
        }
        Protocol::Compact => {
            compact::write_header(out, name, MessageType::Exception, seq_id);
            compact::put_field_header(out, compact::T_BINARY, 1, 0);
            compact::put_string(out, message.as_bytes());
            compact::put_field_header(out, compact::T_I32, 2, 1);
            compact::put_i32(out, kind.to_wire());
            out.put_u8(0);
        }
    }
    if let Some(at) = start {
        theader::finish(out, at);
    }
}
