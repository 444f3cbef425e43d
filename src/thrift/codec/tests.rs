//! Codec tests against bytes written and read by the Apache `thrift` crate.

use bytes::{BufMut, BytesMut};
use thrift::protocol::{
    TBinaryInputProtocol, TBinaryOutputProtocol, TCompactInputProtocol, TCompactOutputProtocol,
    TFieldIdentifier, TInputProtocol, TListIdentifier, TMapIdentifier, TMessageIdentifier,
    TMessageType, TMultiplexedOutputProtocol, TOutputProtocol, TSetIdentifier, TStructIdentifier,
    TType,
};
use thrift::transport::{TFramedReadTransport, TFramedWriteTransport};

use super::*;

#[path = "theader_tests.rs"]
mod theader;

/// How the reference implementation writes a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Enc {
    BinaryStrict,
    BinaryOld,
    Compact,
}

const ENCS: [Enc; 3] = [Enc::BinaryStrict, Enc::BinaryOld, Enc::Compact];
const TRANSPORTS: [Transport; 2] = [Transport::Framed, Transport::Unframed];

impl Enc {
    fn protocol(self) -> Protocol {
        match self {
            Enc::BinaryStrict | Enc::BinaryOld => Protocol::Binary,
            Enc::Compact => Protocol::Compact,
        }
    }
}

type Body<'a> = &'a dyn Fn(&mut dyn TOutputProtocol) -> thrift::Result<()>;

/// Write one message with the `thrift` crate.
fn write_msg(
    enc: Enc,
    transport: Transport,
    service: Option<&str>,
    ident: TMessageIdentifier,
    body: Body<'_>,
) -> Vec<u8> {
    let mut out: Vec<u8> = Vec::new();
    {
        let sink: Box<dyn std::io::Write + '_> = match transport {
            Transport::Framed => Box::new(TFramedWriteTransport::new(&mut out)),
            Transport::Unframed => Box::new(&mut out),
            Transport::Header => unreachable!("the thrift crate has no THeader: use th_frame"),
        };
        let proto: Box<dyn TOutputProtocol + '_> = match enc {
            Enc::BinaryStrict => Box::new(TBinaryOutputProtocol::new(sink, true)),
            Enc::BinaryOld => Box::new(TBinaryOutputProtocol::new(sink, false)),
            Enc::Compact => Box::new(TCompactOutputProtocol::new(sink)),
        };
        let mut proto: Box<dyn TOutputProtocol + '_> = match service {
            Some(s) => Box::new(TMultiplexedOutputProtocol::new(s, proto)),
            None => proto,
        };
        proto.write_message_begin(&ident).expect("begin");
        body(&mut *proto).expect("body");
        proto.write_message_end().expect("end");
        proto.flush().expect("flush");
    }
    out
}

fn field(p: &mut dyn TOutputProtocol, ty: TType, id: i16) -> thrift::Result<()> {
    p.write_field_begin(&TFieldIdentifier::new("f", ty, id))
}

/// Arguments exercising every type, nesting, inline bools, and long-form field ids.
fn rich_args(p: &mut dyn TOutputProtocol) -> thrift::Result<()> {
    p.write_struct_begin(&TStructIdentifier::new("args"))?;
    field(p, TType::Bool, 1)?;
    p.write_bool(true)?;
    field(p, TType::I08, 2)?;
    p.write_i8(-7)?;
    field(p, TType::I16, 3)?;
    p.write_i16(-300)?;
    field(p, TType::I32, 4)?;
    p.write_i32(i32::MIN)?;
    field(p, TType::I64, 5)?;
    p.write_i64(i64::MAX)?;
    field(p, TType::Double, 6)?;
    p.write_double(1.5)?;
    field(p, TType::String, 7)?;
    p.write_string("héllo")?;
    field(p, TType::String, 300)?; // long-form id in compact
    p.write_bytes(&[0, 1, 2, 0x7f])?; // the thrift crate skips binary as a utf-8 string
    field(p, TType::Struct, -2)?; // negative id
    {
        p.write_struct_begin(&TStructIdentifier::new("inner"))?;
        field(p, TType::Bool, 1)?;
        p.write_bool(false)?;
        field(p, TType::List, 2)?;
        p.write_list_begin(&TListIdentifier::new(TType::I32, 20))?;
        for i in 0..20 {
            p.write_i32(i * 1000)?;
        }
        p.write_list_end()?;
        p.write_field_stop()?;
        p.write_struct_end()?;
    }
    field(p, TType::Set, 9)?;
    p.write_set_begin(&TSetIdentifier::new(TType::String, 2))?;
    p.write_string("a")?;
    p.write_string("bb")?;
    p.write_set_end()?;
    field(p, TType::Map, 10)?;
    p.write_map_begin(&TMapIdentifier::new(TType::String, TType::List, 2))?;
    for k in ["x", "y"] {
        p.write_string(k)?;
        p.write_list_begin(&TListIdentifier::new(TType::Bool, 3))?;
        for b in [true, false, true] {
            p.write_bool(b)?;
        }
        p.write_list_end()?;
    }
    p.write_map_end()?;
    field(p, TType::Map, 11)?;
    p.write_map_begin(&TMapIdentifier::new(TType::I32, TType::I32, 0))?;
    p.write_map_end()?;
    field(p, TType::List, 12)?;
    p.write_list_begin(&TListIdentifier::new(TType::Struct, 0))?;
    p.write_list_end()?;
    p.write_field_stop()?;
    p.write_struct_end()
}

fn result_field(id: i16) -> impl Fn(&mut dyn TOutputProtocol) -> thrift::Result<()> {
    move |p: &mut dyn TOutputProtocol| {
        p.write_struct_begin(&TStructIdentifier::new("result"))?;
        if id == 0 {
            field(p, TType::String, 0)?;
            p.write_string("user-42")?;
        } else {
            field(p, TType::Struct, id)?;
            p.write_struct_begin(&TStructIdentifier::new("NotFound"))?;
            field(p, TType::String, 1)?;
            p.write_string("no such user")?;
            p.write_field_stop()?;
            p.write_struct_end()?;
        }
        p.write_field_stop()?;
        p.write_struct_end()
    }
}

fn void_result(p: &mut dyn TOutputProtocol) -> thrift::Result<()> {
    p.write_struct_begin(&TStructIdentifier::new("result"))?;
    p.write_field_stop()?;
    p.write_struct_end()
}

fn call(name: &str, seq: i32) -> TMessageIdentifier {
    TMessageIdentifier::new(name, TMessageType::Call, seq)
}

fn decoder(transport: Option<Transport>, protocol: Option<Protocol>) -> Decoder {
    Decoder::new(DecoderConfig {
        transport,
        protocol,
        ..DecoderConfig::default()
    })
}

fn decode_all(d: &mut Decoder, bytes: &[u8]) -> Result<Option<Message>, Error> {
    let mut buf = BytesMut::from(bytes);
    let m = d.decode(&mut buf)?;
    if m.is_some() {
        assert!(buf.is_empty(), "{} bytes left over", buf.len());
    }
    Ok(m)
}

#[test]
fn decodes_headers_written_by_apache_thrift_in_every_combination() {
    for enc in ENCS {
        for tr in TRANSPORTS {
            for service in [None, Some("UserService")] {
                let bytes = write_msg(enc, tr, service, call("getUser", -5), &rich_args);
                for (t, p) in [(Some(tr), Some(enc.protocol())), (None, None)] {
                    let case = format!("{enc:?} {tr:?} {service:?} configured={}", t.is_some());
                    let msg = decode_all(&mut decoder(t, p), &bytes)
                        .expect(&case)
                        .expect(&case);
                    let h = msg.header();
                    assert_eq!(h.method(), "getUser", "{case}");
                    assert_eq!(h.service(), service, "{case}");
                    let full = service.map_or("getUser".to_owned(), |s| format!("{s}:getUser"));
                    assert_eq!(h.name(), full, "{case}");
                    assert_eq!(h.message_type, MessageType::Call, "{case}");
                    assert_eq!(h.seq_id, -5, "{case}");
                    assert_eq!(h.protocol, enc.protocol(), "{case}");
                    assert_eq!(h.transport, tr, "{case}");
                    assert_eq!(h.strict, enc != Enc::BinaryOld, "{case}");
                    assert_eq!(&msg.wire()[..], &bytes[..], "{case}");
                }
            }
        }
    }
}

#[test]
fn pipelined_messages_split_in_order() {
    for enc in ENCS {
        for tr in TRANSPORTS {
            let mut all = Vec::new();
            for seq in 1..=3 {
                all.extend(write_msg(enc, tr, None, call("m", seq), &rich_args));
            }
            let mut d = decoder(None, None);
            let mut buf = BytesMut::from(&all[..]);
            for seq in 1..=3 {
                let m = d.decode(&mut buf).expect("decodes").expect("complete");
                assert_eq!(m.header().seq_id, seq, "{enc:?} {tr:?}");
            }
            assert!(d.decode(&mut buf).expect("ok").is_none());
            assert!(buf.is_empty());
        }
    }
}

#[test]
fn truncation_at_every_offset_needs_more_bytes() {
    for enc in ENCS {
        for tr in TRANSPORTS {
            let bytes = write_msg(enc, tr, Some("S"), call("getUser", 9), &rich_args);
            for cut in 0..bytes.len() {
                for (t, p) in [(Some(tr), Some(enc.protocol())), (None, None)] {
                    let got = decode_all(&mut decoder(t, p), &bytes[..cut]);
                    assert!(
                        matches!(got, Ok(None)),
                        "{enc:?} {tr:?} cut {cut}/{}: {got:?}",
                        bytes.len()
                    );
                }
            }
        }
    }
}

#[test]
fn byte_at_a_time_feeding_resumes_and_completes_exactly_at_the_end() {
    for enc in ENCS {
        for tr in TRANSPORTS {
            let bytes = write_msg(enc, tr, None, call("getUser", 77), &rich_args);
            let mut d = decoder(None, None);
            let mut buf = BytesMut::new();
            for (i, b) in bytes.iter().enumerate() {
                buf.put_u8(*b);
                let got = d.decode(&mut buf).expect("no error");
                if i + 1 < bytes.len() {
                    assert!(got.is_none(), "{enc:?} {tr:?} early at {i}");
                } else {
                    let m = got.expect("complete at the last byte");
                    assert_eq!(m.header().seq_id, 77);
                    assert_eq!(&m.wire()[..], &bytes[..]);
                }
            }
        }
    }
}

#[test]
fn reply_inspector_classifies_success_void_idl_exception_and_app_exception() {
    for enc in ENCS {
        for tr in TRANSPORTS {
            let reply = TMessageIdentifier::new("getUser", TMessageType::Reply, 3);
            let cases: [(Body<'_>, ReplyOutcome); 3] = [
                (&result_field(0), ReplyOutcome::Success),
                (&void_result, ReplyOutcome::Success),
                (&result_field(1), ReplyOutcome::IdlException { field_id: 1 }),
            ];
            for (body, want) in cases {
                let bytes = write_msg(enc, tr, None, reply.clone(), body);
                let m = decode_all(&mut decoder(None, None), &bytes)
                    .expect("ok")
                    .expect("msg");
                assert_eq!(inspect_reply(&m), Ok(want), "{enc:?} {tr:?}");
            }
            let exc = TMessageIdentifier::new("getUser", TMessageType::Exception, 3);
            let bytes = write_msg(enc, tr, None, exc, &|p| {
                let e = thrift::ApplicationError::new(
                    thrift::ApplicationErrorKind::InternalError,
                    "boom",
                );
                thrift::Error::write_application_error_to_out_protocol(&e, p)
            });
            let m = decode_all(&mut decoder(None, None), &bytes)
                .expect("ok")
                .expect("msg");
            assert_eq!(
                inspect_reply(&m),
                Ok(ReplyOutcome::AppException {
                    kind: Some(AppExceptionKind::InternalError)
                })
            );
        }
    }
}

/// A `thrift` crate reader over `bytes` (not strict: old-style binary is read too).
fn thrift_reader(
    bytes: &[u8],
    protocol: Protocol,
    transport: Transport,
) -> Box<dyn TInputProtocol + '_> {
    let source: Box<dyn std::io::Read + '_> = match transport {
        Transport::Framed => Box::new(TFramedReadTransport::new(bytes)),
        Transport::Unframed => Box::new(bytes),
        Transport::Header => Box::new(theader::split(bytes).payload),
    };
    match protocol {
        Protocol::Binary => Box::new(TBinaryInputProtocol::new(source, false)),
        Protocol::Compact => Box::new(TCompactInputProtocol::new(source)),
    }
}

/// Read a message with the `thrift` crate: (identifier, application error if any).
fn read_with_thrift(
    bytes: &[u8],
    protocol: Protocol,
    transport: Transport,
) -> (TMessageIdentifier, Option<thrift::ApplicationError>) {
    let mut p = thrift_reader(bytes, protocol, transport);
    let ident = p.read_message_begin().expect("message begin");
    let err = if ident.message_type == TMessageType::Exception {
        Some(thrift::Error::read_application_error_from_in_protocol(&mut *p).expect("app error"))
    } else {
        p.skip(TType::Struct).expect("body");
        None
    };
    p.read_message_end().expect("message end");
    (ident, err)
}

#[test]
fn app_exception_replies_are_read_by_apache_thrift() {
    for protocol in [Protocol::Binary, Protocol::Compact] {
        for transport in TRANSPORTS {
            for (kind, want) in [
                (
                    AppExceptionKind::UnknownMethod,
                    thrift::ApplicationErrorKind::UnknownMethod,
                ),
                (
                    AppExceptionKind::InternalError,
                    thrift::ApplicationErrorKind::InternalError,
                ),
            ] {
                let mut out = BytesMut::new();
                let framing = Framing {
                    transport,
                    protocol,
                };
                encode_app_exception(&mut out, framing, "Svc:getUser", 1 << 30, kind, "no route");
                let (ident, err) = read_with_thrift(&out, protocol, transport);
                assert_eq!(ident.name, "Svc:getUser");
                assert_eq!(ident.sequence_number, 1 << 30);
                let err = err.expect("an application error");
                assert_eq!(err.kind, want);
                assert_eq!(err.message, "no route");
                // And our own decoder agrees.
                let m = decode_all(&mut decoder(None, None), &out)
                    .expect("ok")
                    .expect("msg");
                assert_eq!(m.header().message_type, MessageType::Exception);
                assert_eq!(
                    inspect_reply(&m),
                    Ok(ReplyOutcome::AppException { kind: Some(kind) })
                );
            }
        }
    }
}

#[test]
fn reframing_and_seq_id_rewrite_are_read_by_apache_thrift() {
    for enc in ENCS {
        for from in TRANSPORTS {
            let bytes = write_msg(enc, from, None, call("getUser", 12), &rich_args);
            let m = decode_all(&mut decoder(None, None), &bytes)
                .expect("ok")
                .expect("msg");
            for to in TRANSPORTS {
                let (prefix, payload) = m.wire_for(to, None);
                let mut out = Vec::new();
                if let Some(p) = prefix {
                    out.extend_from_slice(p.as_bytes());
                }
                out.extend_from_slice(&payload);
                let (ident, _) = read_with_thrift(&out, enc.protocol(), to);
                assert_eq!(
                    (ident.name.as_str(), ident.sequence_number),
                    ("getUser", 12)
                );

                for seq in [0, 1, -1, 300, i32::MAX, i32::MIN] {
                    let out = m.with_seq_id(seq, to);
                    let (ident, _) = read_with_thrift(&out, enc.protocol(), to);
                    assert_eq!(ident.sequence_number, seq, "{enc:?} {from:?}->{to:?}");
                    let again = decode_all(&mut decoder(Some(to), None), &out).expect("ok");
                    let again = again.expect("msg");
                    assert_eq!(again.body(), m.body());
                }
            }
        }
    }
}

fn framed(payload: &[u8]) -> Vec<u8> {
    let mut v = (payload.len() as u32).to_be_bytes().to_vec();
    v.extend_from_slice(payload);
    v
}

/// Strict binary call header for `name`, seq 1, followed by `body`.
fn binary_call(name: &[u8], body: &[u8]) -> Vec<u8> {
    let mut v = vec![0x80, 0x01, 0x00, 0x01];
    v.extend_from_slice(&(name.len() as i32).to_be_bytes());
    v.extend_from_slice(name);
    v.extend_from_slice(&1i32.to_be_bytes());
    v.extend_from_slice(body);
    v
}

fn nested_lists(depth: usize) -> Vec<u8> {
    // Field 1: list<list<...>> of one element each, `depth` levels.
    let mut v = vec![15, 0, 1];
    for _ in 0..depth {
        v.extend_from_slice(&[15, 0, 0, 0, 1]);
    }
    v.extend_from_slice(&[8, 0, 0, 0, 0]);
    v
}

#[test]
fn an_incomplete_frame_with_a_good_header_waits_and_is_checked_once() {
    let cfg = DecoderConfig {
        transport: Some(Transport::Framed),
        ..DecoderConfig::default()
    };
    let call = binary_call(b"getUser", &[0]);
    let mut wire = (call.len() as u32).to_be_bytes().to_vec();
    wire.extend_from_slice(&call);
    let mut d = Decoder::new(cfg);
    let mut buf = BytesMut::new();
    // Byte by byte: never an error, the message once it is all there.
    let mut got = None;
    for b in &wire {
        assert!(got.is_none(), "nothing before the last byte");
        buf.extend_from_slice(&[*b]);
        got = d.decode(&mut buf).unwrap_or_else(|e| panic!("{e}"));
    }
    assert_eq!(
        got.map(|m| m.header().name().to_owned()).as_deref(),
        Some("getUser")
    );
    assert!(buf.is_empty());
}

#[test]
fn bad_inputs_are_typed_errors() {
    let small = DecoderConfig {
        max_message_size: 1024,
        ..DecoderConfig::default()
    };
    let framed_binary = DecoderConfig {
        transport: Some(Transport::Framed),
        protocol: Some(Protocol::Binary),
        ..small
    };
    let unframed_binary = DecoderConfig {
        transport: Some(Transport::Unframed),
        ..framed_binary
    };
    let compact_only = DecoderConfig {
        protocol: Some(Protocol::Compact),
        ..small
    };

    let mut deep = binary_call(b"m", &nested_lists(70));
    deep.push(0);

    // (case, input, config, expected kind, header decoded)
    let cases: Vec<(&str, Vec<u8>, DecoderConfig, ErrorKind, bool)> = vec![
        (
            "frame over the limit",
            vec![0, 0, 4, 1, 0x80, 1, 0, 1],
            framed_binary,
            ErrorKind::FrameTooLarge,
            false,
        ),
        (
            "negative frame length",
            vec![0xff, 0xff, 0xff, 0xf0, 0, 0],
            framed_binary,
            ErrorKind::NegativeLength,
            false,
        ),
        (
            "empty frame",
            vec![0, 0, 0, 0],
            framed_binary,
            ErrorKind::EmptyFrame,
            false,
        ),
        (
            "frame below the smallest message",
            vec![0, 0, 0, 4, 0x82, 0x21, 0, 0],
            framed_binary,
            ErrorKind::FrameTooSmall,
            false,
        ),
        // The frame is far from complete: its first bytes decide.
        (
            "incomplete frame, bad strict version",
            vec![0, 0, 3, 0, 0x80, 0x02, 0, 1],
            framed_binary,
            ErrorKind::UnknownProtocol,
            false,
        ),
        (
            "incomplete frame, bad message type",
            vec![0, 0, 3, 0, 0x80, 1, 0, 5],
            framed_binary,
            ErrorKind::UnknownMessageType,
            false,
        ),
        (
            "incomplete frame, name longer than the frame",
            vec![0, 0, 0, 40, 0x80, 1, 0, 1, 0, 0, 0, 41],
            framed_binary,
            ErrorKind::Truncated,
            false,
        ),
        (
            "incomplete frame, unknown first byte",
            vec![0, 0, 3, 0, 0xff],
            framed_binary,
            ErrorKind::UnknownProtocol,
            false,
        ),
        (
            "http garbage, framed",
            b"GET / HTTP/1.1\r\n\r\n".to_vec(),
            framed_binary,
            ErrorKind::FrameTooLarge,
            false,
        ),
        (
            "http garbage, auto",
            b"GET / HTTP/1.1\r\n\r\n".to_vec(),
            small,
            ErrorKind::FrameTooLarge,
            false,
        ),
        (
            "tls hello, auto",
            vec![0x16, 3, 1, 0, 0xc8, 1, 0, 0, 0xc4],
            small,
            ErrorKind::MessageTooLarge,
            false,
        ),
        (
            "bad strict version",
            vec![0x80, 0x02, 0, 1, 0, 0, 0, 1, b'm'],
            unframed_binary,
            ErrorKind::UnknownProtocol,
            false,
        ),
        (
            "bad compact version",
            vec![0x82, 0x22, 1, 1, b'm', 0],
            small,
            ErrorKind::UnknownProtocol,
            false,
        ),
        (
            "unknown first byte",
            vec![0xff, 1, 2, 3, 4, 5, 6, 7, 8],
            small,
            ErrorKind::UnknownProtocol,
            false,
        ),
        (
            "binary sent to compact",
            binary_call(b"m", &[0]),
            compact_only,
            ErrorKind::ProtocolMismatch,
            false,
        ),
        (
            "unknown message type",
            vec![0x80, 1, 0, 9, 0, 0, 0, 1, b'm', 0, 0, 0, 1, 0],
            unframed_binary,
            ErrorKind::UnknownMessageType,
            false,
        ),
        (
            "invalid utf-8 name",
            binary_call(&[0xc3, 0x28], &[0]),
            unframed_binary,
            ErrorKind::InvalidName,
            false,
        ),
        (
            "invalid utf-8 name, compact",
            vec![0x82, 0x21, 1, 2, 0xc3, 0x28, 0],
            small,
            ErrorKind::InvalidName,
            false,
        ),
        (
            "name length over the limit",
            vec![0x80, 1, 0, 1, 0, 0, 0x10, 0],
            unframed_binary,
            ErrorKind::MessageTooLarge,
            false,
        ),
        (
            "negative name length",
            vec![0x80, 1, 0, 1, 0xff, 0xff, 0xff, 0xff],
            unframed_binary,
            ErrorKind::NegativeLength,
            false,
        ),
        (
            "compact name length over the limit",
            vec![0x82, 0x21, 1, 0xff, 0xff, 0x7f],
            small,
            ErrorKind::MessageTooLarge,
            false,
        ),
        (
            "string length over the limit",
            binary_call(b"m", &[11, 0, 1, 0, 0, 0x10, 0]),
            unframed_binary,
            ErrorKind::MessageTooLarge,
            true,
        ),
        (
            "negative string length",
            binary_call(b"m", &[11, 0, 1, 0xff, 0xff, 0xff, 0xfe]),
            unframed_binary,
            ErrorKind::NegativeLength,
            true,
        ),
        (
            "list size over the limit",
            binary_call(b"m", &[15, 0, 1, 8, 0, 0, 1, 0]),
            unframed_binary,
            ErrorKind::MessageTooLarge,
            true,
        ),
        (
            "map size over the limit",
            binary_call(b"m", &[13, 0, 1, 8, 8, 0, 0, 0, 200]),
            unframed_binary,
            ErrorKind::MessageTooLarge,
            true,
        ),
        (
            "negative list size",
            binary_call(b"m", &[15, 0, 1, 8, 0x80, 0, 0, 0]),
            unframed_binary,
            ErrorKind::NegativeLength,
            true,
        ),
        (
            "compact list size over the limit",
            vec![0x82, 0x21, 1, 1, b'm', 0x19, 0xf5, 0xff, 0xff, 0x03],
            small,
            ErrorKind::MessageTooLarge,
            true,
        ),
        (
            "nesting over 64",
            deep.clone(),
            unframed_binary,
            ErrorKind::DepthExceeded,
            true,
        ),
        (
            "nesting over 64, framed",
            framed(&deep),
            framed_binary,
            ErrorKind::DepthExceeded,
            true,
        ),
        (
            "unknown field type",
            binary_call(b"m", &[0x11, 0, 1, 0]),
            unframed_binary,
            ErrorKind::UnknownType,
            true,
        ),
        (
            "unknown compact field type",
            vec![0x82, 0x21, 1, 1, b'm', 0x1e, 0],
            small,
            ErrorKind::UnknownType,
            true,
        ),
        (
            "unknown list element type",
            binary_call(b"m", &[15, 0, 1, 1, 0, 0, 0, 1, 0]),
            unframed_binary,
            ErrorKind::UnknownType,
            true,
        ),
        (
            "overlong varint",
            vec![
                0x82, 0x21, 1, 1, b'm', 0x15, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01,
            ],
            small,
            ErrorKind::InvalidVarint,
            true,
        ),
        (
            "frame shorter than its message",
            framed(&binary_call(b"m", &[8, 0, 1, 0])),
            framed_binary,
            ErrorKind::Truncated,
            true,
        ),
        (
            "frame header cut",
            framed(&[0x80, 1, 0, 1, 0, 0, 0, 5, b'a']),
            framed_binary,
            ErrorKind::Truncated,
            false,
        ),
        (
            "frame with trailing bytes",
            framed(&binary_call(b"m", &[0, 0, 0])),
            framed_binary,
            ErrorKind::TrailingBytes,
            true,
        ),
    ];
    for (case, input, config, kind, with_header) in cases {
        let got = Decoder::new(config).decode(&mut BytesMut::from(&input[..]));
        match got {
            Err(e) => {
                assert_eq!(e.kind(), kind, "{case}: {e}");
                assert_eq!(e.header().is_some(), with_header, "{case}: header");
                if let Some(h) = e.header() {
                    assert_eq!((h.name(), h.seq_id), ("m", 1), "{case}");
                }
            }
            Ok(m) => panic!("{case}: expected {kind:?}, got {m:?}"),
        }
    }
}

#[test]
fn nesting_at_the_limit_is_accepted() {
    // The body struct is level 1, so 63 nested lists reach exactly 64.
    let mut ok = binary_call(b"m", &nested_lists(63));
    ok.push(0);
    let d = DecoderConfig {
        transport: Some(Transport::Unframed),
        ..DecoderConfig::default()
    };
    let m = Decoder::new(d)
        .decode(&mut BytesMut::from(&ok[..]))
        .expect("ok")
        .expect("msg");
    assert_eq!(m.header().name(), "m");
}

#[test]
fn auto_detection_holds_the_connection_to_what_it_found() {
    let compact = write_msg(
        Enc::Compact,
        Transport::Framed,
        None,
        call("a", 1),
        &void_result,
    );
    let binary = write_msg(
        Enc::BinaryStrict,
        Transport::Framed,
        None,
        call("a", 2),
        &void_result,
    );
    let mut d = decoder(None, None);
    assert!(decode_all(&mut d, &compact).expect("ok").is_some());
    assert_eq!(
        (d.transport(), d.protocol()),
        (Some(Transport::Framed), Some(Protocol::Compact))
    );
    let err = decode_all(&mut d, &binary).expect_err("mismatch");
    assert_eq!(err.kind(), ErrorKind::ProtocolMismatch);
}

#[test]
fn random_bytes_and_mutations_never_panic() {
    let mut rng = fastrand::Rng::with_seed(0x7448_7269_6674);
    let mut seeds = Vec::new();
    for enc in ENCS {
        for tr in TRANSPORTS {
            seeds.push(write_msg(
                enc,
                tr,
                Some("S"),
                call("getUser", 1),
                &rich_args,
            ));
        }
    }
    let configs = [
        DecoderConfig::default(),
        DecoderConfig {
            max_message_size: 64,
            ..DecoderConfig::default()
        },
        DecoderConfig {
            transport: Some(Transport::Unframed),
            ..DecoderConfig::default()
        },
        DecoderConfig {
            transport: Some(Transport::Framed),
            protocol: Some(Protocol::Compact),
            ..DecoderConfig::default()
        },
    ];
    for i in 0..30_000 {
        let input: Vec<u8> = if i % 3 == 0 {
            let len = rng.usize(0..64);
            (0..len).map(|_| rng.u8(..)).collect()
        } else {
            let mut v = seeds[rng.usize(..seeds.len())].clone();
            for _ in 0..rng.usize(1..4) {
                let at = rng.usize(..v.len());
                match rng.u8(0..3) {
                    0 => v[at] = rng.u8(..),
                    1 => v.truncate(at),
                    _ => v.insert(at, rng.u8(..)),
                }
                if v.is_empty() {
                    break;
                }
            }
            v
        };
        let mut d = Decoder::new(configs[i % configs.len()]);
        let mut buf = BytesMut::from(&input[..]);
        // Keep decoding until it stops; inspect whatever decodes.
        for _ in 0..8 {
            match d.decode(&mut buf) {
                Ok(Some(m)) => {
                    let _ = inspect_reply(&m);
                    let _ = m.with_seq_id(5, Transport::Framed);
                }
                Ok(None) | Err(_) => break,
            }
        }
    }
}

/// Every value of a message read with the `thrift` crate, as text: the header, then
/// the body field by field (container element types are left out, since an empty
/// compact map carries none).
fn dump_with_thrift(bytes: &[u8], protocol: Protocol, transport: Transport) -> String {
    fn value(p: &mut dyn TInputProtocol, ty: TType, out: &mut String) -> thrift::Result<()> {
        use std::fmt::Write as _;
        let _ = match ty {
            TType::Bool => write!(out, "{}", p.read_bool()?),
            TType::I08 => write!(out, "{}", p.read_i8()?),
            TType::I16 => write!(out, "{}", p.read_i16()?),
            TType::I32 => write!(out, "{}", p.read_i32()?),
            TType::I64 => write!(out, "{}", p.read_i64()?),
            TType::Double => write!(out, "{:?}", p.read_double()?),
            TType::String => write!(out, "{:?}", p.read_bytes()?),
            TType::Struct => {
                out.push('{');
                p.read_struct_begin()?;
                loop {
                    let f = p.read_field_begin()?;
                    if f.field_type == TType::Stop {
                        break;
                    }
                    let _ = write!(out, "{:?}:{:?}=", f.id, f.field_type);
                    value(p, f.field_type, out)?;
                    out.push(',');
                    p.read_field_end()?;
                }
                p.read_struct_end()?;
                write!(out, "}}")
            }
            TType::List | TType::Set => {
                let (elem, n) = if ty == TType::List {
                    let l = p.read_list_begin()?;
                    (l.element_type, l.size)
                } else {
                    let s = p.read_set_begin()?;
                    (s.element_type, s.size)
                };
                out.push('[');
                for _ in 0..n {
                    value(p, elem, out)?;
                    out.push(',');
                }
                write!(out, "]")
            }
            TType::Map => {
                let m = p.read_map_begin()?;
                out.push('<');
                for _ in 0..m.size {
                    value(p, m.key_type.unwrap_or(TType::Stop), out)?;
                    out.push(':');
                    value(p, m.value_type.unwrap_or(TType::Stop), out)?;
                    out.push(',');
                }
                write!(out, ">")
            }
            other => panic!("unexpected type {other:?}"),
        };
        Ok(())
    }
    let mut p = thrift_reader(bytes, protocol, transport);
    let ident = p.read_message_begin().expect("message begin");
    let mut out = format!("{ident:?} ");
    value(&mut *p, TType::Struct, &mut out).expect("body");
    p.read_message_end().expect("message end");
    out
}

#[test]
fn transcoding_between_binary_and_compact_keeps_every_value() {
    let bodies: [(&str, Body<'_>); 3] = [
        ("rich", &rich_args),
        ("idl exception", &result_field(1)),
        ("void", &void_result),
    ];
    for enc in ENCS {
        let to = match enc.protocol() {
            Protocol::Binary => Protocol::Compact,
            Protocol::Compact => Protocol::Binary,
        };
        for (what, body) in bodies {
            for tr in TRANSPORTS {
                let case = format!("{what}: {enc:?} {tr:?} -> {to:?}");
                let bytes = write_msg(enc, tr, Some("Users"), call("getUser", -9), body);
                let msg = decode_all(&mut decoder(Some(tr), Some(enc.protocol())), &bytes)
                    .expect(&case)
                    .expect(&case);
                let want = dump_with_thrift(&bytes, enc.protocol(), tr);
                for out_tr in TRANSPORTS {
                    let got = transcode(&msg, to, out_tr, None).expect(&case);
                    assert_eq!(
                        dump_with_thrift(&got, to, out_tr),
                        want,
                        "{case} {out_tr:?}"
                    );
                    // The result decodes as a whole message of the other protocol.
                    let again = decode_all(&mut decoder(Some(out_tr), Some(to)), &got)
                        .expect(&case)
                        .expect(&case);
                    assert_eq!(again.header().seq_id, -9, "{case}");
                    assert_eq!(again.header().name(), "Users:getUser", "{case}");
                    // What the reference writes in the target protocol, byte for byte
                    // (binary -> compact: compact drops nothing binary carries).
                    if to == Protocol::Compact {
                        let reference = write_msg(
                            Enc::Compact,
                            out_tr,
                            Some("Users"),
                            call("getUser", -9),
                            body,
                        );
                        assert_eq!(&got[..], &reference[..], "{case} {out_tr:?}");
                    }
                }
            }
        }
    }
}

#[test]
fn transcoding_keeps_app_exceptions_readable() {
    for from in [Protocol::Binary, Protocol::Compact] {
        let mut out = BytesMut::new();
        let framing = Framing {
            transport: Transport::Framed,
            protocol: from,
        };
        encode_app_exception(
            &mut out,
            framing,
            "getUser",
            4,
            AppExceptionKind::InternalError,
            "boom",
        );
        let msg = decode_all(&mut decoder(None, None), &out)
            .expect("decode")
            .expect("whole");
        let to = if from == Protocol::Binary {
            Protocol::Compact
        } else {
            Protocol::Binary
        };
        let got = transcode(&msg, to, Transport::Unframed, None).expect("transcode");
        let (ident, err) = read_with_thrift(&got, to, Transport::Unframed);
        assert_eq!(ident.sequence_number, 4);
        let err = err.expect("an application exception");
        assert_eq!(err.kind, thrift::ApplicationErrorKind::InternalError);
        assert_eq!(err.message, "boom");
    }
}

#[test]
fn transcoding_random_bodies_never_panics() {
    // Bodies the decoder would reject are never transcoded; still, arbitrary bytes
    // after a valid header must end in an error or a message, not a panic.
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    for _ in 0..2000 {
        let mut body = Vec::new();
        for _ in 0..(seed % 64) {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            body.push(seed as u8);
        }
        for enc in [Enc::BinaryStrict, Enc::Compact] {
            let bytes = write_msg(enc, Transport::Framed, None, call("m", 1), &|p| {
                p.write_struct_begin(&TStructIdentifier::new("a"))?;
                p.write_field_stop()?;
                p.write_struct_end()
            });
            // The same header with the random body behind it.
            let mut raw = bytes[4..bytes.len() - 1].to_vec();
            raw.extend_from_slice(&body);
            let framed = framed(&raw);
            if let Ok(Some(m)) = decode_all(&mut decoder(None, None), &framed) {
                for to in [Protocol::Binary, Protocol::Compact] {
                    let _ = transcode(&m, to, Transport::Framed, None);
                }
            }
        }
    }
}

/// Writes the seed corpus of the `thrift_decode` fuzz target (`src/fuzz`): messages
/// written by the `thrift` crate in every encoding and transport, each after a
/// flags byte that lets the decoder detect the framing, and pairs pipelined.
/// `cargo test --lib write_thrift_fuzz_seeds -- --ignored` rewrites them.
#[test]
#[ignore = "writes fuzz/corpus/thrift_decode"]
fn write_thrift_fuzz_seeds() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/thrift_decode");
    std::fs::create_dir_all(&dir).expect("corpus dir");
    let reply = || TMessageIdentifier::new("getUser", TMessageType::Reply, 7);
    for enc in ENCS {
        for tr in TRANSPORTS {
            let tag = format!("{enc:?}-{tr:?}").to_lowercase();
            let rich = write_msg(enc, tr, Some("Users"), call("getUser", 1), &rich_args);
            let ok = write_msg(enc, tr, None, reply(), &result_field(0));
            let idl = write_msg(enc, tr, None, reply(), &result_field(1));
            let void = write_msg(enc, tr, None, reply(), &void_result);
            let mut out = BytesMut::new();
            let framing = Framing {
                transport: tr,
                protocol: enc.protocol(),
            };
            encode_app_exception(
                &mut out,
                framing,
                "getUser",
                9,
                AppExceptionKind::UnknownMethod,
                "no",
            );
            for (name, bytes) in [
                ("call", rich.clone()),
                ("reply", ok),
                ("idl-exception", idl),
                ("void-pipelined", [void.clone(), void].concat()),
                ("app-exception", out.to_vec()),
            ] {
                let mut seed = vec![0u8];
                seed.extend_from_slice(&bytes);
                std::fs::write(dir.join(format!("{tag}-{name}")), seed).expect("write seed");
            }
        }
    }
}
