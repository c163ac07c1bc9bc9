//! `libcublasLt.so.12`: cuBLASLt, forwarded at API level to a vgpu server.
//!
//! The code is shared with the other major version in `shims/cublas/common/lt/` (included
//! below). Every name of `crates/abi/exports/libcublasLt.so.12.exports` is exported,
//! versioned `@@libcublasLt.so.12`: the ones defined by hand, and a generated stub
//! returning `CUBLAS_STATUS_NOT_SUPPORTED` for each of the rest.

/// The CUDA runtime version this library was "built against" (`CUDART_VERSION`).
pub const CUDART_VERSION: usize = 12090;

include!("../../common/lt/mod.rs");

// Not-supported stubs for every exported name not defined by hand (keep this line).
include!(concat!(env!("OUT_DIR"), "/stubs.rs"));
