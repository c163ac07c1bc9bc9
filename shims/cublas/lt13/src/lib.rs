//! `libcublasLt.so.13`: cuBLASLt for vgpu.
//!
//! The code is shared with the other major version in `shims/cublas/common/lt/` (the module
//! `lt` below); this crate fixes what differs between majors: the bindings `api` and the
//! versions claimed.
//! Every name of `crates/abi/exports/libcublasLt.so.13.exports` is exported, versioned
//! `@@libcublasLt.so.13`: the ones defined by hand, and a generated stub returning
//! `CUBLAS_STATUS_NOT_SUPPORTED` for each of the rest.

/// The cuBLAS(Lt) bindings of this major version.
pub use abi::cublas13 as api;

/// The CUDA runtime version this library was "built against" (`CUDART_VERSION`).
pub const CUDART_VERSION: usize = 13000;

#[path = "../../common/lt/mod.rs"]
pub mod lt;

// Not-supported stubs for every exported name not defined by hand (keep this line).
include!(concat!(env!("OUT_DIR"), "/stubs.rs"));
