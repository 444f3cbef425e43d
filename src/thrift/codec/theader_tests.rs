//! THeader frames: written and read here by hand from the format description (the
//! `thrift` crate has no THeader; the Python library is the peer in
//! tests/thrift_theader.rs), around messages the `thrift` crate writes.

use super::*;

/// A THeader frame around `payload`; `info` is copied into the header as is.
pub(super) fn frame(proto_id: u8, flags: u16, seq: u32, info: &[u8], payload: &[u8]) -> Vec<u8> {
    let mut header = vec![proto_id, 0];
    header.extend_from_slice(info);
    while header.len() % 4 != 0 {
        header.push(0);
    }
    let mut f = vec![0x0f, 0xff];
    f.extend_from_slice(&flags.to_be_bytes());
    f.extend_from_slice(&seq.to_be_bytes());
    f.extend_from_slice(&((header.len() / 4) as u16).to_be_bytes());
    f.extend_from_slice(&header);
    f.extend_from_slice(payload);
    let mut out = (f.len() as u32).to_be_bytes().to_vec();
    out.extend_from_slice(&f);
    out
}

/// An `INFO_KEYVALUE` block (lengths and count below 128: one-byte varints).
pub(super) fn kv(pairs: &[(&str, &str)]) -> Vec<u8> {
    let mut out = vec![1, pairs.len() as u8];
    for (k, v) in pairs {
        out.push(k.len() as u8);
        out.extend_from_slice(k.as_bytes());
        out.push(v.len() as u8);
        out.extend_from_slice(v.as_bytes());
    }
    out
}

/// A THeader frame taken apart (one-byte varints only).
#[derive(Debug)]
pub(super) struct Split<'a> {
    pub flags: u16,
    pub seq: u32,
    pub proto_id: u8,
    pub headers: Vec<(Vec<u8>, Vec<u8>)>,
    pub payload: &'a [u8],
}

pub(super) fn split(bytes: &[u8]) -> Split<'_> {
    let len = u32::from_be_bytes(bytes[..4].try_into().expect("4 bytes")) as usize;
    assert_eq!(len, bytes.len() - 4, "frame length");
    assert_eq!(&bytes[4..6], &[0x0f, 0xff], "magic");
    let flags = u16::from_be_bytes([bytes[6], bytes[7]]);
    let seq = u32::from_be_bytes(bytes[8..12].try_into().expect("4 bytes"));
    let size = u16::from_be_bytes([bytes[12], bytes[13]]) as usize * 4;
    let header = &bytes[14..14 + size];
    assert_eq!(header[1], 0, "no transforms");
    let mut headers = Vec::new();
    let mut at = 2;
    while at < header.len() && header[at] == 1 {
        let n = header[at + 1];
        at += 2;
        for _ in 0..n {
            let mut s = || {
                let l = header[at] as usize;
                let v = header[at + 1..at + 1 + l].to_vec();
                at += 1 + l;
                v
            };
            let k = s();
            let v = s();
            headers.push((k, v));
        }
    }
    assert!(header[at..].iter().all(|b| *b == 0), "padding");
    Split {
        flags,
        seq,
        proto_id: header[0],
        headers,
        payload: &bytes[14 + size..],
    }
}

fn proto_id(enc: Enc) -> u8 {
    match enc.protocol() {
        Protocol::Binary => 0,
        Protocol::Compact => 2,
    }
}

fn owned(h: InfoHeaders<'_>) -> Vec<(Vec<u8>, Vec<u8>)> {
    h.map(|(k, v)| (k.to_vec(), v.to_vec())).collect()
}

fn pairs(p: &[(&str, &str)]) -> Vec<(Vec<u8>, Vec<u8>)> {
    p.iter()
        .map(|(k, v)| (k.as_bytes().to_vec(), v.as_bytes().to_vec()))
        .collect()
}

const HEADERS: [(&str, &str); 2] = [("x-tenant", "blue"), ("trace", "abc")];

/// A THeader call of `enc` with [`HEADERS`], flags 1 and frame sequence id 77.
fn th_call(enc: Enc, seq: i32) -> Vec<u8> {
    let payload = write_msg(
        enc,
        Transport::Unframed,
        None,
        call("getUser", seq),
        &rich_args,
    );
    frame(proto_id(enc), 1, 77, &kv(&HEADERS), &payload)
}

#[test]
fn theader_frames_decode_with_their_info_headers_when_configured_or_detected() {
    for enc in ENCS {
        let bytes = th_call(enc, 12);
        for cfg in [None, Some(Transport::Header)] {
            let m = decode_all(&mut decoder(cfg, None), &bytes)
                .expect("ok")
                .expect("msg");
            let h = m.header();
            assert_eq!((h.name(), h.seq_id), ("getUser", 12), "{enc:?}");
            assert_eq!(h.transport, Transport::Header);
            assert_eq!(h.protocol, enc.protocol());
            assert_eq!(
                h.frame,
                Some(FrameInfo {
                    flags: 1,
                    seq_id: 77
                })
            );
            assert_eq!(owned(m.info_headers()), pairs(&HEADERS));
            assert_eq!(&m.wire()[..], &bytes[..]);
            assert_eq!(&m.payload()[..], split(&bytes).payload);
        }
    }
}

#[test]
fn theader_reframes_both_ways_without_losing_the_call() {
    for enc in ENCS {
        let bytes = th_call(enc, 5);
        let m = decode_all(&mut decoder(None, None), &bytes)
            .expect("decodes")
            .expect("decodes");
        // THeader to THeader: the frame as received, info headers included.
        let (prefix, same) = m.wire_for(Transport::Header, None);
        assert!(prefix.is_none());
        assert_eq!(&same[..], &bytes[..]);
        // To framed and unframed: the message alone, read by the thrift crate.
        for to in [Transport::Framed, Transport::Unframed] {
            let (prefix, payload) = m.wire_for(to, None);
            let out = [prefix.as_ref().map_or(&[][..], |p| p.as_bytes()), &payload].concat();
            let (ident, _) = read_with_thrift(&out, enc.protocol(), to);
            assert_eq!((ident.name.as_str(), ident.sequence_number), ("getUser", 5));
        }
        // From framed: a head with the given frame and no info headers.
        let framed = write_msg(enc, Transport::Framed, None, call("getUser", 6), &rich_args);
        let f = decode_all(&mut decoder(None, None), &framed)
            .expect("decodes")
            .expect("decodes");
        let frame_info = FrameInfo {
            flags: 5,
            seq_id: 900,
        };
        for (given, want) in [(None, (0, 6)), (Some(frame_info), (5, 900))] {
            let (prefix, payload) = f.wire_for(Transport::Header, given);
            let out = [prefix.expect("head").as_bytes(), &payload].concat();
            let s = split(&out);
            assert_eq!(
                (s.flags, s.seq, s.proto_id),
                (want.0, want.1, proto_id(enc))
            );
            assert!(s.headers.is_empty());
            let (ident, _) = read_with_thrift(&out, enc.protocol(), Transport::Header);
            assert_eq!(ident.sequence_number, 6);
            let again = decode_all(&mut decoder(Some(Transport::Header), None), &out);
            assert_eq!(again.expect("decodes").expect("decodes").body(), f.body());
        }
        // A new sequence id keeps the frame's flags and info headers.
        let out = m.with_seq_id(40, Transport::Header);
        let s = split(&out);
        assert_eq!((s.flags, s.seq), (1, 40));
        assert_eq!(s.headers, pairs(&HEADERS));
        let (ident, _) = read_with_thrift(&out, enc.protocol(), Transport::Header);
        assert_eq!(ident.sequence_number, 40);
    }
}

#[test]
fn local_replies_to_theader_calls_echo_the_frame() {
    for enc in ENCS {
        let m = decode_all(&mut decoder(None, None), &th_call(enc, 3))
            .expect("decodes")
            .expect("decodes");
        let mut out = BytesMut::new();
        answer_with_exception(&mut out, m.header(), AppExceptionKind::UnknownMethod, "no");
        let s = split(&out);
        assert_eq!((s.flags, s.seq, s.proto_id), (1, 77, proto_id(enc)));
        let (ident, err) = read_with_thrift(&out, enc.protocol(), Transport::Header);
        assert_eq!((ident.name.as_str(), ident.sequence_number), ("getUser", 3));
        assert_eq!(
            err.expect("exception").kind,
            thrift::ApplicationErrorKind::UnknownMethod
        );
    }
}

#[test]
fn translating_a_theader_message_keeps_its_info_headers() {
    for enc in ENCS {
        let m = decode_all(&mut decoder(None, None), &th_call(enc, 8))
            .expect("decodes")
            .expect("decodes");
        let to = match enc.protocol() {
            Protocol::Binary => Protocol::Compact,
            Protocol::Compact => Protocol::Binary,
        };
        let out = transcode(&m, to, Transport::Header, None).expect("transcode");
        let s = split(&out);
        assert_eq!((s.flags, s.seq), (1, 77));
        assert_eq!(s.proto_id, if to == Protocol::Compact { 2 } else { 0 });
        assert_eq!(s.headers, pairs(&HEADERS));
        let want = dump_with_thrift(
            split(&th_call(enc, 8)).payload,
            enc.protocol(),
            Transport::Unframed,
        );
        assert_eq!(dump_with_thrift(&out, to, Transport::Header), want);
    }
}

#[test]
fn a_theader_frame_arriving_in_pieces_waits_then_completes() {
    let bytes = th_call(Enc::BinaryStrict, 1);
    for cut in 0..bytes.len() {
        let mut d = decoder(None, None);
        assert!(
            matches!(decode_all(&mut d, &bytes[..cut]), Ok(None)),
            "cut at {cut}"
        );
        let mut buf = BytesMut::from(&bytes[..cut]);
        assert!(d.decode(&mut buf).expect("decodes").is_none());
        buf.extend_from_slice(&bytes[cut..]);
        let m = d.decode(&mut buf).expect("ok").expect("msg");
        assert_eq!(owned(m.info_headers()), pairs(&HEADERS));
    }
}

#[test]
fn hostile_theader_frames_are_typed_errors() {
    let payload = write_msg(
        Enc::BinaryStrict,
        Transport::Unframed,
        None,
        call("m", 1),
        &rich_args,
    );
    let compact = write_msg(
        Enc::Compact,
        Transport::Unframed,
        None,
        call("m", 1),
        &rich_args,
    );
    let with_size = |size: u16, header: &[u8], payload: &[u8]| {
        let mut f = vec![0x0f, 0xff, 0, 0, 0, 0, 0, 9];
        f.extend_from_slice(&size.to_be_bytes());
        f.extend_from_slice(header);
        f.extend_from_slice(payload);
        let mut out = (f.len() as u32).to_be_bytes().to_vec();
        out.extend_from_slice(&f);
        out
    };
    let cases: Vec<(&str, Vec<u8>, ErrorKind)> = vec![
        (
            "header size beyond the frame",
            with_size(200, &[0, 0, 0, 0], &payload),
            ErrorKind::InvalidHeader,
        ),
        (
            "protocol id varint overflow",
            with_size(2, &[0x80, 0x80, 0x80, 0x80, 0x80, 0x01, 0, 0], &payload),
            ErrorKind::InvalidVarint,
        ),
        (
            "unknown protocol id",
            frame(1, 0, 0, &[], &payload),
            ErrorKind::UnknownProtocol,
        ),
        (
            "key longer than the header",
            frame(0, 0, 0, &[1, 1, 100, b'k'], &payload),
            ErrorKind::InvalidHeader,
        ),
        (
            "huge header count",
            frame(0, 0, 0, &[1, 0xff, 0xff, 0xff, 0xff, 0x0f], &payload),
            ErrorKind::InvalidHeader,
        ),
        (
            "info block without its count",
            with_size(1, &[0, 0, 1, 0x80], &payload),
            ErrorKind::InvalidHeader,
        ),
        (
            "header says binary, message is compact",
            frame(0, 0, 0, &[], &compact),
            ErrorKind::ProtocolMismatch,
        ),
        (
            "no message after the header",
            frame(0, 0, 0, &kv(&HEADERS), &[]),
            ErrorKind::Truncated,
        ),
        (
            "trailing bytes after the message",
            frame(0, 0, 0, &[], &[&payload[..], &[0]].concat()),
            ErrorKind::TrailingBytes,
        ),
    ];
    for (what, bytes, want) in cases {
        for cfg in [None, Some(Transport::Header)] {
            let got = decode_all(&mut decoder(cfg, None), &bytes).map(|m| m.is_some());
            assert_eq!(got.map_err(|e| e.kind()), Err(want), "{what} ({cfg:?})");
        }
    }
    // A transform (zlib = 1) is refused with a header naming the frame, so the
    // client can be answered before the connection closes.
    let zlib = with_size(1, &[0, 1, 1, 0], &payload);
    let e = decode_all(&mut decoder(None, None), &zlib).expect_err("refused");
    assert_eq!(e.kind(), ErrorKind::UnsupportedTransform);
    let h = e.header().expect("frame named");
    assert_eq!(
        (h.transport, h.seq_id, h.frame.map(|f| f.seq_id)),
        (Transport::Header, 9, Some(9))
    );
    // A frame that is not THeader on a `header` connection is refused at once,
    // without waiting for the length it declares.
    let mut d = decoder(Some(Transport::Header), None);
    let mut buf = BytesMut::from(&[0, 1, 0, 0, 0x80, 0x01, 0, 1, 0, 0][..]);
    assert_eq!(
        d.decode(&mut buf)
            .map(|m| m.is_some())
            .map_err(|e| e.kind()),
        Err(ErrorKind::UnknownProtocol)
    );
    // Unknown info block types end the info section, as Apache's readers do.
    let odd = frame(
        0,
        0,
        0,
        &[&kv(&HEADERS)[..], &[7, 1, 1, b'x']].concat(),
        &payload,
    );
    let m = decode_all(&mut decoder(None, None), &odd)
        .expect("decodes")
        .expect("decodes");
    assert_eq!(owned(m.info_headers()), pairs(&HEADERS));
}

/// Seeds for the `thrift_decode` fuzz target: THeader calls (binary and compact,
/// with info headers), detected (flags 0) and configured (flags 3).
/// `cargo test --lib write_theader_fuzz_seeds -- --ignored` rewrites them.
#[test]
#[ignore = "writes fuzz/corpus/thrift_decode"]
fn write_theader_fuzz_seeds() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/thrift_decode");
    for enc in ENCS {
        for flags in [0u8, 3] {
            let name = format!("theader-{enc:?}-{flags}").to_lowercase();
            let seed = [&[flags][..], &th_call(enc, 1), &th_call(enc, 2)].concat();
            std::fs::write(dir.join(name), seed).expect("write seed");
        }
    }
}
