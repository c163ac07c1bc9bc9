//! `libcudart.so.13`: the CUDA 13 runtime API, forwarded to a vgpu server.
//!
//! The code is shared with the other major version in `shims/cudart/common/` (included
//! below); this crate only fixes what differs between majors. Every name of
//! `crates/abi/exports/libcudart.so.13.exports` is exported, versioned `@@libcudart.so.13`:
//! the ones defined by hand (here or in common/), and a generated stub returning
//! `cudaErrorNotSupported` for each of the rest.

/// The runtime version this library claims (`CUDART_VERSION`).
pub const RUNTIME_VERSION: i32 = 13000;

include!("../../common/mod.rs");

// Not-supported stubs for every exported name not defined by hand (keep this line).
include!(concat!(env!("OUT_DIR"), "/stubs.rs"));
