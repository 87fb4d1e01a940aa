#![no_main]
//! See `agora_host::fuzzing::module`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| agora_host::fuzzing::module(data));
