//! libFuzzer entry for the `http1_framing` target in `attache::fuzz` (see docs/fuzzing.md).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| attache::fuzz::http1_framing(data));
