//! Fuzz targets for every parser that reads network or file input.
//!
//! Each target takes arbitrary bytes, runs one parser on them and asserts what must
//! hold for any input (not only "it returned"): a hand-over leaves the bytes for
//! hyper, a decoder never yields more than it was given and yields the same whether
//! the input arrives at once or a few bytes at a time, normalization is idempotent,
//! a decoded Thrift message re-encodes to itself, config diagnostics point inside
//! the text. A violated invariant panics, which both drivers report as a crash:
//!
//! - `cargo test --lib fuzz` runs every target over its seed corpus
//!   (`fuzz/corpus/<target>/`) and over inputs mutated from it by a seeded PRNG,
//!   for a bounded time (`tests.rs`; `ATTACHE_FUZZ_SECS`, `ATTACHE_FUZZ_SEED`).
//! - `fuzz/run.sh <target> <seconds>` runs one target under libFuzzer,
//!   coverage-guided, on the stable toolchain (docs/fuzzing.md).
//!
//! The module exists in test builds and with the `fuzzing` feature only.

mod chunked;
mod config;
mod cookie;
mod framing;
mod http1;
mod mutate;
mod path;
mod thrift;

#[cfg(test)]
mod tests;

pub use mutate::mutate;

pub(crate) use http1::RequestBody;

/// One fuzz target: its name (the corpus folder and the libFuzzer binary), its
/// entry point, and tokens the mutator splices in.
pub struct Target {
    pub name: &'static str,
    pub run: fn(&[u8]),
    pub dict: &'static [&'static [u8]],
}

/// Every target, in the order the bounded test and the docs list them.
pub const TARGETS: &[Target] = &[
    Target {
        name: "http1_request",
        run: http1_request,
        dict: http1::REQUEST_DICT,
    },
    Target {
        name: "http1_response",
        run: http1_response,
        dict: http1::RESPONSE_DICT,
    },
    Target {
        name: "http1_chunked",
        run: http1_chunked,
        dict: chunked::DICT,
    },
    Target {
        name: "http1_framing",
        run: http1_framing,
        dict: framing::DICT,
    },
    Target {
        name: "path_normalize",
        run: path_normalize,
        dict: path::DICT,
    },
    Target {
        name: "thrift_decode",
        run: thrift_decode,
        dict: thrift::DICT,
    },
    Target {
        name: "cookie",
        run: cookie,
        dict: cookie::DICT,
    },
    Target {
        name: "config_load",
        run: config_load,
        dict: config::DICT,
    },
];

/// The downstream HTTP/1.1 codec's request-head parse (`src/http/h1.rs`).
pub fn http1_request(data: &[u8]) {
    http1::request(data);
}

/// The upstream HTTP/1.1 client's response head (`src/upstream/h1.rs`, with the
/// response rule of `src/http1/framing.rs`) and the shared body decoder
/// (`src/http1/body.rs`). The first byte picks a HEAD request, whether the head
/// is copied out of the read buffer (an HTTP/2 downstream) and how the bytes are
/// split when fed incrementally.
pub fn http1_response(data: &[u8]) {
    http1::response(data);
}

/// The one chunked decoder of both HTTP/1.1 roles (`src/http1/chunked.rs`). The
/// first byte picks the incremental split.
pub fn http1_chunked(data: &[u8]) {
    chunked::decode(data);
}

/// Request smuggling against the downstream HTTP/1 codec (`src/http/h1.rs`): a
/// head with both `Content-Length` and `Transfer-Encoding`, or a `#fragment`, is
/// never served, and what the codec does with a head does not depend on how its
/// bytes arrive. The first byte picks the incremental split.
pub fn http1_framing(data: &[u8]) {
    framing::check(data);
}

/// Request path normalization (`src/http/normalize.rs`). The first byte picks the
/// options.
pub fn path_normalize(data: &[u8]) {
    path::normalize(data);
}

/// The Thrift decoder (`src/thrift/codec`): framed, unframed and THeader, both
/// protocols and the struct walker. The first byte picks the configured (or detected) framing, the
/// size limit and the incremental split.
pub fn thrift_decode(data: &[u8]) {
    thrift::decode(data);
}

/// The `Cookie` and `Set-Cookie` parsers (`filters/src/cookie_audit/parse.rs`).
pub fn cookie(data: &[u8]) {
    cookie::parse(data);
}

/// The config loader: YAML text to a compiled snapshot or located diagnostics
/// (`src/config/load.rs`, `compile/`).
pub fn config_load(data: &[u8]) {
    config::load(data);
}

/// How many bytes to feed at a time when a target splits its input: 1..=8, from
/// three bits of a flags byte.
fn step_of(flags: u8) -> usize {
    usize::from(flags & 7) + 1
}

/// A decoder that takes bytes from a buffer as they arrive: the chunked decoder and
/// the body decoder of both roles.
trait Incremental {
    fn decode(
        &mut self,
        buf: &mut bytes::BytesMut,
    ) -> Result<Option<bytes::Bytes>, crate::http1::chunked::Error>;
    fn is_done(&self) -> bool;
}

impl Incremental for crate::http1::chunked::Decoder {
    fn decode(
        &mut self,
        buf: &mut bytes::BytesMut,
    ) -> Result<Option<bytes::Bytes>, crate::http1::chunked::Error> {
        crate::http1::chunked::Decoder::decode(self, buf)
    }
    fn is_done(&self) -> bool {
        crate::http1::chunked::Decoder::is_done(self)
    }
}

impl Incremental for crate::http1::body::Decoder {
    fn decode(
        &mut self,
        buf: &mut bytes::BytesMut,
    ) -> Result<Option<bytes::Bytes>, crate::http1::chunked::Error> {
        crate::http1::body::Decoder::decode(self, buf)
    }
    fn is_done(&self) -> bool {
        crate::http1::body::Decoder::is_done(self)
    }
}

/// What feeding a decoder produced: the data, how it ended (`Ok(true)`: the body
/// is complete), and the bytes left after the body.
#[derive(Debug, PartialEq, Eq)]
struct Decoded {
    data: Vec<u8>,
    outcome: Result<bool, crate::http1::chunked::Error>,
    left: Option<bytes::Bytes>,
}

/// Feed `input` to `d` `step` bytes at a time, draining every frame after each
/// read, until the body ends, fails, or the input runs out.
fn feed(mut d: impl Incremental, input: &[u8], step: usize) -> Decoded {
    let mut buf = bytes::BytesMut::new();
    let mut data = Vec::new();
    let mut fed = 0;
    loop {
        // Every frame consumes input, so this ends within the input's length.
        for _ in 0..=input.len() + 1 {
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
            let done = d.is_done();
            let left =
                done.then(|| bytes::Bytes::copy_from_slice(&[&buf[..], &input[fed..]].concat()));
            return Decoded {
                data,
                outcome: Ok(done),
                left,
            };
        }
        let n = step.min(input.len() - fed);
        buf.extend_from_slice(&input[fed..fed + n]);
        fed += n;
    }
}
