//! Calls decoded by `protocol::dispatch` and run on a sim session (see `server::fuzzing::dispatch`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| server::fuzzing::dispatch(data));
