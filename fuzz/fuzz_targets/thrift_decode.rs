//! libFuzzer entry for the `thrift_decode` target in `attache::fuzz` (see docs/fuzzing.md).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| attache::fuzz::thrift_decode(data));
