//! Target for the one chunked decoder (`src/http1/chunked.rs`), both roles.

use bytes::{Bytes, BytesMut};

use crate::http1::chunked::{size_line_for, Decoder, Error};

pub(super) const DICT: &[&[u8]] = &[
    b"\r\n",
    b"\n",
    b"0\r\n\r\n",
    b"5\r\nhello\r\n",
    b";ext=1",
    b"; a=\"b\"",
    b"ffffffffffffffff",
    b"10000000000000000",
    b"0x5",
    b"+5",
    b" 5",
    b"5_0",
    b"trailer: x\r\n",
    b"\t",
    b"\0",
];

/// What decoding produced: the data, how it ended, the bytes left after the body.
#[derive(Debug, PartialEq, Eq)]
struct Decoded {
    data: Vec<u8>,
    outcome: Result<bool, Error>,
    left: Option<Bytes>,
}

pub(super) fn decode(data: &[u8]) {
    let Some((&flags, input)) = data.split_first() else {
        return;
    };
    let whole = run(input, input.len().max(1));
    let split = run(input, super::step_of(flags));
    assert_eq!(whole, split, "decoding depends on how the bytes arrive");
    assert!(whole.data.len() <= input.len(), "more data than input");
    // scan() reads what decode() reads, without consuming.
    match (Decoder::new().scan(input), &whole.outcome) {
        (Ok(Some(n)), Ok(true)) => {
            let left = whole.left.as_deref().unwrap_or(&[]);
            assert_eq!(input.len() - n, left.len(), "scan and decode end apart");
        }
        (Ok(None), Ok(false)) | (Err(_), Err(_)) => {}
        (s, d) => panic!("scan says {s:?}, decode {d:?}"),
    }
    if whole.outcome == Ok(true) {
        reencodes(&whole.data);
    }
}

fn run(input: &[u8], step: usize) -> Decoded {
    let mut d = Decoder::new();
    let mut buf = BytesMut::new();
    let mut data = Vec::new();
    let mut fed = 0;
    loop {
        loop {
            match d.decode(&mut buf) {
                Ok(Some(frame)) => {
                    assert!(!frame.is_empty(), "empty data frame");
                    data.extend_from_slice(&frame);
                }
                Ok(None) => break,
                Err(e) => {
                    return Decoded {
                        data,
                        outcome: Err(e),
                        left: None,
                    }
                }
            }
        }
        if d.is_done() || fed == input.len() {
            let left = d
                .is_done()
                .then(|| Bytes::copy_from_slice(&[&buf[..], &input[fed..]].concat()));
            return Decoded {
                data,
                outcome: Ok(d.is_done()),
                left,
            };
        }
        let n = step.min(input.len() - fed);
        buf.extend_from_slice(&input[fed..fed + n]);
        fed += n;
    }
}

/// The data, chunked again as the encoders write it, decodes to itself.
fn reencodes(data: &[u8]) {
    let mut wire = Vec::new();
    if !data.is_empty() {
        wire.extend_from_slice(size_line_for(data.len()).as_bytes());
        wire.extend_from_slice(data);
        wire.extend_from_slice(b"\r\n");
    }
    wire.extend_from_slice(b"0\r\n\r\n");
    let again = run(&wire, wire.len());
    assert_eq!(again.outcome, Ok(true));
    assert_eq!(again.data, data);
}
