//! Thrift decoder target.

use bytes::{Bytes, BytesMut};

use crate::thrift::codec::{
    encode_app_exception, inspect_reply, AppExceptionKind, Decoder, DecoderConfig, Framing, Header,
    Message, MessageType, Protocol, ReplyOutcome, Transport, DEFAULT_MAX_MESSAGE_SIZE,
};

pub(super) const DICT: &[&[u8]] = &[
    b"\x80\x01\x00\x01",
    b"\x80\x01\x00\x02",
    b"\x80\x01\x00\x03",
    b"\x82\x21",
    b"\x82\x41",
    b"\x82\x61",
    b"\x00\x00\x00\x00",
    b"\x7f\xff\xff\xff",
    b"\xff\xff\xff\xff",
    b"\x00",
    b"\x0c\x00\x01",
    b"\x0f\x00\x01\x0c\x00\x00\x00\x02",
    b"\x0d\x00\x01\x0b\x08\x00\x00\x00\x01",
    b"\x0b\x00\x01\x00\x00\x00\x03abc",
    b"\x19\x1c",
    b"\x1b\x01\x85",
    b"\xff\xff\xff\xff\x0f",
    b"Svc:method",
    // THeader: magic, flags, seq id, one header word; a key/value block.
    b"\x0f\xff\x00\x00\x00\x00\x00\x01\x00\x01",
    b"\x0f\xff",
    b"\x00\x00\x00\x00",
    b"\x02\x00\x00\x00",
    b"\x01\x01\x01k\x01v",
];

/// Messages decoded from one input, and how decoding stopped.
#[derive(Debug, PartialEq)]
struct Run {
    messages: Vec<(Header, Bytes)>,
    /// `None`: waiting for more bytes; else the error kind and whether it carried
    /// the header.
    error: Option<(crate::thrift::codec::ErrorKind, Option<Header>)>,
}

fn config(flags: u8) -> DecoderConfig {
    let transport = match flags & 3 {
        1 => Some(Transport::Framed),
        2 => Some(Transport::Unframed),
        3 => Some(Transport::Header),
        _ => None,
    };
    let protocol = match (flags >> 2) & 3 {
        1 => Some(Protocol::Binary),
        2 => Some(Protocol::Compact),
        _ => None,
    };
    let max_message_size = if flags & 0x10 != 0 {
        64
    } else {
        DEFAULT_MAX_MESSAGE_SIZE
    };
    DecoderConfig {
        transport,
        protocol,
        max_message_size,
    }
}

pub(super) fn decode(data: &[u8]) {
    let Some((&flags, input)) = data.split_first() else {
        return;
    };
    let cfg = config(flags);
    let (whole, all) = run(cfg, input, input.len().max(1));
    let (split, _) = run(cfg, input, super::step_of(flags >> 5));
    assert_eq!(whole, split, "decoding depends on how the bytes arrive");
    // Messages are split off the front in order, exactly as received.
    let wire: Vec<u8> = whole
        .messages
        .iter()
        .flat_map(|(_, w)| w.to_vec())
        .collect();
    assert!(
        input.starts_with(&wire),
        "message bytes differ from the input"
    );
    for m in &all {
        round_trips(m);
    }
}

/// Decode `input` fed `step` bytes at a time (the decoder's contract: the same
/// buffer, appended to, never consumed from in between).
fn run(cfg: DecoderConfig, input: &[u8], step: usize) -> (Run, Vec<Message>) {
    let mut d = Decoder::new(cfg);
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    let mut fed = 0;
    loop {
        match d.decode(&mut buf) {
            Ok(Some(m)) => {
                out.push(m);
                continue;
            }
            Ok(None) if fed < input.len() => {
                let n = step.min(input.len() - fed);
                buf.extend_from_slice(&input[fed..fed + n]);
                fed += n;
            }
            Ok(None) => return (outcome(&out, None), out),
            Err(e) => {
                let error = Some((e.kind(), e.header().cloned()));
                return (outcome(&out, error), out);
            }
        }
    }
}

fn outcome(
    msgs: &[Message],
    error: Option<(crate::thrift::codec::ErrorKind, Option<Header>)>,
) -> Run {
    Run {
        messages: msgs
            .iter()
            .map(|m| (m.header().clone(), m.wire().clone()))
            .collect(),
        error,
    }
}

/// Decode exactly one message from `bytes` with the framing fixed.
fn decode_one(bytes: &[u8], framing: Framing) -> Message {
    let mut d = Decoder::new(DecoderConfig {
        transport: Some(framing.transport),
        protocol: Some(framing.protocol),
        max_message_size: DEFAULT_MAX_MESSAGE_SIZE,
    });
    let mut buf = BytesMut::from(bytes);
    match d.decode(&mut buf) {
        Ok(Some(m)) if buf.is_empty() => m,
        other => panic!("re-encoded message does not decode alone: {other:?}"),
    }
}

/// A decoded message re-frames for either transport, takes another sequence id,
/// and (for a call) gets an exception reply that reads back as sent.
fn round_trips(m: &Message) {
    let h = m.header();
    match h.service() {
        Some(svc) => assert_eq!(format!("{svc}:{}", h.method()), h.name()),
        None => assert_eq!(h.method(), h.name()),
    }
    // Info headers iterate to their end whatever they hold.
    let _ = m.info_headers().count();
    for transport in [Transport::Framed, Transport::Unframed, Transport::Header] {
        let framing = Framing {
            transport,
            protocol: h.protocol,
        };
        let (prefix, payload) = m.wire_for(transport, None);
        let bytes = [
            prefix.as_ref().map_or(&[][..], |p| p.as_bytes()),
            &payload[..],
        ]
        .concat();
        let again = decode_one(&bytes, framing);
        assert_eq!(again.payload(), m.payload());
        assert_eq!(again.body(), m.body());
        let mut want = h.clone();
        want.transport = transport;
        want.frame = (transport == Transport::Header).then(|| h.default_frame());
        assert_eq!(*again.header(), want);
        if transport == h.transport {
            assert!(again.info_headers().eq(m.info_headers()));
        }

        let seq = h.seq_id.wrapping_add(1);
        let renumbered = decode_one(&m.with_seq_id(seq, transport), framing);
        assert_eq!(renumbered.header().seq_id, seq);
        assert_eq!(renumbered.header().name(), h.name());
        assert_eq!(renumbered.header().message_type, h.message_type);
        assert_eq!(renumbered.body(), m.body());

        if matches!(h.message_type, MessageType::Call) {
            exception_reads_back(h, framing);
        }
    }
    if matches!(h.message_type, MessageType::Reply | MessageType::Exception) {
        let _ = inspect_reply(m);
    }
}

fn exception_reads_back(h: &Header, framing: Framing) {
    let kind = AppExceptionKind::from_wire(h.seq_id);
    let mut out = BytesMut::new();
    encode_app_exception(&mut out, framing, h.name(), h.seq_id, kind, h.method());
    let reply = decode_one(&out, framing);
    assert_eq!(reply.header().name(), h.name());
    assert_eq!(reply.header().seq_id, h.seq_id);
    assert_eq!(
        inspect_reply(&reply),
        Ok(ReplyOutcome::AppException { kind: Some(kind) })
    );
}
