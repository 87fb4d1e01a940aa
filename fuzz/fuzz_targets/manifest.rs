#![no_main]
//! See `agora_host::fuzzing::manifest`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| agora_host::fuzzing::manifest(data));
