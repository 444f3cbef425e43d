use super::*;

/// Decode `wire` fed in pieces of `step` bytes: the data, and what was buffered
/// but not consumed when the body ended.
fn decode_in(wire: &[u8], step: usize) -> Result<(Vec<u8>, Vec<u8>), Error> {
    let mut d = Decoder::new();
    let mut buf = BytesMut::new();
    let mut data = Vec::new();
    for piece in wire.chunks(step.max(1)) {
        buf.extend_from_slice(piece);
        while let Some(b) = d.decode(&mut buf)? {
            data.extend_from_slice(&b);
        }
        if d.is_done() {
            break;
        }
    }
    while !d.is_done() {
        match d.decode(&mut buf)? {
            Some(b) => data.extend_from_slice(&b),
            None => break,
        }
    }
    assert!(
        d.is_done(),
        "incomplete: {:?}",
        String::from_utf8_lossy(wire)
    );
    Ok((data, buf.to_vec()))
}

fn decode(wire: &[u8]) -> Result<Vec<u8>, Error> {
    decode_in(wire, wire.len()).map(|(d, _)| d)
}

/// Every way of splitting `wire` gives the same verdict, and `scan` agrees with
/// `decode`.
fn verdict(wire: &[u8]) -> Result<Vec<u8>, Error> {
    let whole = decode(wire);
    for step in [1, 2, 3, 7] {
        assert_eq!(
            decode_in(wire, step).map(|(d, _)| d),
            whole,
            "{:?} in pieces of {step}",
            String::from_utf8_lossy(wire)
        );
    }
    match (&whole, Decoder::new().scan(wire)) {
        (Ok(_), Ok(Some(_))) | (Err(_), Err(_)) => {}
        (w, s) => panic!(
            "decode {w:?} but scan {s:?} for {:?}",
            String::from_utf8_lossy(wire)
        ),
    }
    whole
}

#[test]
fn valid_bodies_decode() {
    for (wire, data) in [
        (&b"0\r\n\r\n"[..], &b""[..]),
        (b"5\r\nhello\r\n0\r\n\r\n", b"hello"),
        (b"3\r\nabc\r\n4\r\ndefg\r\n0\r\n\r\n", b"abcdefg"),
        (b"A\r\n0123456789\r\n0\r\n\r\n", b"0123456789"),
        (b"a\r\n0123456789\r\n000\r\n\r\n", b"0123456789"),
        (b"0000000000000005\r\nhello\r\n0\r\n\r\n", b"hello"),
        (b"5;name=value\r\nhello\r\n0;x\r\n\r\n", b"hello"),
        (
            b"5 ;name=\"quoted \\\" value\"\r\nhello\r\n0\r\n\r\n",
            b"hello",
        ),
        (b"5\t;a\r\nhello\r\n0\r\n\r\n", b"hello"),
        (b"5;a=\xff\r\nhello\r\n0\r\n\r\n", b"hello"),
        (
            b"5\r\nhello\r\n0\r\nx-sum: 1\r\nX-Other:\tv w \r\n\r\n",
            b"hello",
        ),
        (b"5\r\nhe\r\no\r\n0\r\n\r\n", b"he\r\no"),
    ] {
        assert_eq!(
            verdict(wire).as_deref(),
            Ok(data),
            "{:?}",
            String::from_utf8_lossy(wire)
        );
    }
}

#[test]
fn malformed_bodies_are_refused_in_every_split() {
    use Error::*;
    for (wire, err) in [
        (&b"0x5\r\nhello\r\n0\r\n\r\n"[..], Size),
        (b"+5\r\nhello\r\n0\r\n\r\n", Size),
        (b"-5\r\nhello\r\n0\r\n\r\n", Size),
        (b" 5\r\nhello\r\n0\r\n\r\n", Size),
        (b"5 \r\nhello\r\n0\r\n\r\n", Size),
        (b"5_0\r\nhello\r\n0\r\n\r\n", Size),
        (b"\r\nhello\r\n0\r\n\r\n", Size),
        (b"5g\r\nhello\r\n0\r\n\r\n", Size),
        (b"5\x00\r\nhello\r\n0\r\n\r\n", Size),
        (b"00000000000000005\r\nhello\r\n0\r\n\r\n", Size),
        (b"10000000000000000\r\n", Size),
        (b"5\nhello\r\n0\r\n\r\n", LineEnd),
        (b"5\r\nhello\n0\r\n\r\n", DataEnd),
        (b"5\r\nhello0\r\n\r\n", DataEnd),
        (b"5\r\nhello!\r\n0\r\n\r\n", DataEnd),
        (b"5\rhello\r\n0\r\n\r\n", LineEnd),
        (b"5;a\rb\r\nhello\r\n0\r\n\r\n", LineEnd),
        (b"5;a\nhello\r\n0\r\n\r\n", LineEnd),
        (b"5;a\x00b\r\nhello\r\n0\r\n\r\n", Extension),
        (b"5;a\x7f\r\nhello\r\n0\r\n\r\n", Extension),
        (b"5\r\nhello\r\n0\n\r\n", LineEnd),
        (b"5\r\nhello\r\n0\r\n\n", LineEnd),
        (b"5\r\nhello\r\n0\r\nx-a: 1\n\r\n", LineEnd),
        (b"5\r\nhello\r\n0\r\nbad name: 1\r\n\r\n", Trailer),
        (b"5\r\nhello\r\n0\r\nx-a : 1\r\n\r\n", Trailer),
        (b"5\r\nhello\r\n0\r\n folded\r\n\r\n", Trailer),
        (b"5\r\nhello\r\n0\r\nx-a: a\x00b\r\n\r\n", Trailer),
        (b"5\r\nhello\r\n0\r\nno-colon\r\n\r\n", Trailer),
    ] {
        assert_eq!(
            verdict(wire),
            Err(err),
            "{:?}",
            String::from_utf8_lossy(wire)
        );
    }
}

#[test]
fn errors_are_found_before_the_line_ends() {
    for wire in [
        &b"0x"[..],
        b"+",
        b" ",
        b"5 x",
        b"5_",
        b"5\r\nhello!",
        b"5;a\x01",
    ] {
        assert!(
            Decoder::new().scan(wire).is_err(),
            "{:?}",
            String::from_utf8_lossy(wire)
        );
    }
    // Valid so far: more is needed.
    for wire in [
        &b""[..],
        b"5",
        b"5 ",
        b"5;a=b",
        b"5\r",
        b"5\r\nhel",
        b"5\r\nhello\r",
        b"0\r\nx-a: 1",
    ] {
        assert_eq!(
            Decoder::new().scan(wire),
            Ok(None),
            "{:?}",
            String::from_utf8_lossy(wire)
        );
    }
}

#[test]
fn bounds_are_enforced() {
    let long_ext = format!("5;{}\r\nhello\r\n0\r\n\r\n", "a".repeat(MAX_LINE));
    assert_eq!(decode(long_ext.as_bytes()), Err(Error::TooLong));
    // An unterminated line is refused once it passes the bound.
    let open = format!("5;{}", "a".repeat(MAX_LINE));
    assert_eq!(Decoder::new().scan(open.as_bytes()), Err(Error::TooLong));
    // Extensions add up over the body.
    let ext = format!(";{}", "e".repeat(1000));
    let mut many = String::new();
    for _ in 0..(MAX_EXTENSIONS / 1000 + 1) {
        many.push_str(&format!("1{ext}\r\nx\r\n"));
    }
    many.push_str("0\r\n\r\n");
    assert_eq!(decode(many.as_bytes()), Err(Error::TooLong));
    // Trailers too.
    let mut trailers = String::from("0\r\n");
    for i in 0..(MAX_TRAILERS / 100 + 1) {
        trailers.push_str(&format!("x-{i:04}: {}\r\n", "t".repeat(92)));
    }
    trailers.push_str("\r\n");
    assert_eq!(decode(trailers.as_bytes()), Err(Error::TooLong));
}

#[test]
fn the_body_ends_exactly_at_its_last_crlf() {
    let wire = b"3\r\nabc\r\n0\r\nx-t: 1\r\n\r\nGET / HTTP/1.1\r\n";
    assert_eq!(Decoder::new().scan(wire), Ok(Some(wire.len() - 16)));
    let mut d = Decoder::new();
    let mut buf = BytesMut::from(&wire[..]);
    let data = d.decode(&mut buf).expect("valid");
    // The last data frame already knows the body ended.
    assert_eq!(data.as_deref(), Some(&b"abc"[..]));
    assert!(d.is_done());
    assert_eq!(&buf[..], b"GET / HTTP/1.1\r\n");
    // Done is final: nothing more is read.
    assert_eq!(d.decode(&mut buf), Ok(None));
    assert_eq!(buf.len(), 16);
}

#[test]
fn data_before_an_error_is_handed_out_first() {
    let mut d = Decoder::new();
    let mut buf = BytesMut::from(&b"3\r\nabc\r\nzz\r\n"[..]);
    assert_eq!(
        d.decode(&mut buf).expect("data").as_deref(),
        Some(&b"abc"[..])
    );
    assert_eq!(d.decode(&mut buf), Err(Error::Size));
    assert_eq!(d.decode(&mut buf), Err(Error::Size));
}

#[test]
fn size_lines_are_lower_hex() {
    for (n, s) in [
        (0, "0"),
        (1, "1"),
        (15, "f"),
        (16, "10"),
        (0x1234ab, "1234ab"),
    ] {
        assert_eq!(size_line_for(n).as_bytes(), format!("{s}\r\n").as_bytes());
    }
    let max = size_line_for(usize::MAX);
    assert_eq!(Decoder::new().scan(max.as_bytes()), Ok(None));
}
