//! Target for the one chunked decoder (`src/http1/chunked.rs`), both roles.

use super::feed;
use crate::http1::chunked::{size_line_for, Decoder};

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

pub(super) fn decode(data: &[u8]) {
    let Some((&flags, input)) = data.split_first() else {
        return;
    };
    let whole = feed(Decoder::new(), input, input.len().max(1));
    let split = feed(Decoder::new(), input, super::step_of(flags));
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

/// The data, chunked again as the encoders write it, decodes to itself.
fn reencodes(data: &[u8]) {
    let mut wire = Vec::new();
    if !data.is_empty() {
        wire.extend_from_slice(size_line_for(data.len()).as_bytes());
        wire.extend_from_slice(data);
        wire.extend_from_slice(b"\r\n");
    }
    wire.extend_from_slice(b"0\r\n\r\n");
    let again = feed(Decoder::new(), &wire, wire.len());
    assert_eq!(again.outcome, Ok(true));
    assert_eq!(again.data, data);
}
