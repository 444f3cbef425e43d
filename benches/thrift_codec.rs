//! Thrift codec micro-benchmarks: decoding a typical call (header parsed, body
//! walked, message split off the buffer) for each protocol and transport (THeader
//! with two info headers, as fbthrift clients send a trace id and a client name).

use attache::thrift::codec::{
    encode_frame, Decoder, DecoderConfig, FrameInfo, Pair, Protocol, Transport,
};
use bytes::BytesMut;
use criterion::{black_box, criterion_group, criterion_main, BatchSize, Criterion};
use thrift::protocol::{
    TBinaryOutputProtocol, TCompactOutputProtocol, TFieldIdentifier, TMessageIdentifier,
    TMessageType, TOutputProtocol, TStructIdentifier, TType,
};
use thrift::transport::TFramedWriteTransport;

/// The call in a THeader frame with two info headers.
fn theader(protocol: Protocol, payload: &[u8]) -> Vec<u8> {
    let frame = FrameInfo {
        flags: 0,
        seq_id: 12345,
    };
    let info: [Pair<'_>; 2] = [(b"trace-id", b"4bf92f3577b34da6"), (b"client", b"web")];
    encode_frame(frame, protocol, &info, payload).to_vec()
}

/// `getUser(1: i64 id, 2: string reason)` as the thrift crate writes it.
fn call(protocol: Protocol, transport: Transport) -> Vec<u8> {
    if transport == Transport::Header {
        return theader(protocol, &call(protocol, Transport::Unframed));
    }
    let mut out = Vec::new();
    {
        let sink: Box<dyn std::io::Write + '_> = match transport {
            Transport::Framed => Box::new(TFramedWriteTransport::new(&mut out)),
            Transport::Unframed | Transport::Header => Box::new(&mut out),
        };
        let mut p: Box<dyn TOutputProtocol + '_> = match protocol {
            Protocol::Binary => Box::new(TBinaryOutputProtocol::new(sink, true)),
            Protocol::Compact => Box::new(TCompactOutputProtocol::new(sink)),
        };
        let write = |p: &mut dyn TOutputProtocol| -> thrift::Result<()> {
            p.write_message_begin(&TMessageIdentifier::new(
                "UserService:getUser",
                TMessageType::Call,
                12345,
            ))?;
            p.write_struct_begin(&TStructIdentifier::new("getUser_args"))?;
            p.write_field_begin(&TFieldIdentifier::new("id", TType::I64, 1))?;
            p.write_i64(42)?;
            p.write_field_end()?;
            p.write_field_begin(&TFieldIdentifier::new("reason", TType::String, 2))?;
            p.write_string("profile page")?;
            p.write_field_end()?;
            p.write_field_stop()?;
            p.write_struct_end()?;
            p.write_message_end()?;
            p.flush()
        };
        if let Err(e) = write(&mut *p) {
            panic!("encoding the benchmark message: {e}");
        }
    }
    out
}

fn decode(c: &mut Criterion) {
    let mut group = c.benchmark_group("thrift_decode_call");
    for protocol in [Protocol::Binary, Protocol::Compact] {
        for transport in [Transport::Framed, Transport::Unframed, Transport::Header] {
            let bytes = call(protocol, transport);
            let name = format!("{protocol:?}/{transport:?}").to_lowercase();
            let config = DecoderConfig {
                transport: Some(transport),
                protocol: Some(protocol),
                ..DecoderConfig::default()
            };
            // Time only what decodes: a broken input would bench the error path.
            let once = Decoder::new(config).decode(&mut BytesMut::from(&bytes[..]));
            assert!(matches!(once, Ok(Some(_))), "{name}: {once:?}");
            group.bench_function(&name, |b| {
                b.iter_batched_ref(
                    || (Decoder::new(config), BytesMut::from(&bytes[..])),
                    |(d, buf)| {
                        let m = d.decode(buf);
                        black_box(m.map(|m| m.map(|m| m.header().seq_id)).ok())
                    },
                    BatchSize::SmallInput,
                )
            });
        }
    }
    group.finish();
}

criterion_group!(benches, decode);
criterion_main!(benches);
