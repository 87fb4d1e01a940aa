#![no_main]
//! See `agora_host::fuzzing::host_calls`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| agora_host::fuzzing::host_calls(data));
