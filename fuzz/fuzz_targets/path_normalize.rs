//! libFuzzer entry for the `path_normalize` target in `attache::fuzz` (see docs/fuzzing.md).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| attache::fuzz::path_normalize(data));
