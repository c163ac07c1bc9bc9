//! The handshake: `Hello` as the server decodes and judges it, `Welcome` as a client decodes it.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| server::fuzzing::handshake(data));
