//! Frame headers and whole frames read back to back, as a worker reads its socket.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| server::fuzzing::frame(data));
