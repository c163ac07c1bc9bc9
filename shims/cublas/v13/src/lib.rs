//! `libcublas.so.13`: cuBLAS, forwarded at API level to a vgpu server.
//!
//! The code is shared with the other major version in `shims/cublas/common/blas/` (the
//! module `blas` below); this crate fixes what differs between majors: the bindings
//! (`api`, whose signatures the forwarded functions are checked against) and the versions
//! claimed. Every name of `crates/abi/exports/libcublas.so.13.exports` is exported, versioned
//! `@@libcublas.so.13`: the ones defined in `blas` (and generated there from
//! `protocol::cublas_functions!`), and a generated stub returning
//! `CUBLAS_STATUS_NOT_SUPPORTED` for each of the rest (see `docs/coverage.md`).

/// The cuBLAS bindings of this major version.
pub use abi::cublas13 as api;

/// The CUDA runtime version this library was "built against" (`CUDART_VERSION`).
pub const CUDART_VERSION: usize = 13000;

/// The runtime library of the same major, whose current device `cublasCreate_v2` uses.
pub const CUDART_SONAME: &str = "libcudart.so.13";

#[path = "../../common/blas/mod.rs"]
pub mod blas;

// Not-supported stubs for every exported name not defined by hand (keep this line).
include!(concat!(env!("OUT_DIR"), "/stubs.rs"));
