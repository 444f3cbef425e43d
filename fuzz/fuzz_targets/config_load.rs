//! libFuzzer entry for the `config_load` target in `attache::fuzz` (see docs/fuzzing.md).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| attache::fuzz::config_load(data));
