//! libFuzzer entry for the `cookie` target in `attache::fuzz` (see docs/fuzzing.md).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| attache::fuzz::cookie(data));
