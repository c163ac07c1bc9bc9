//! cuBLAS, forwarded at its own API to the server, shared by `shims/cublas/v13` and
//! `shims/cublas/v12`: each declares this directory as its module `blas` after fixing what
//! differs between majors (`crate::api`, the bindings of its headers; `crate::CUDART_VERSION`;
//! `crate::CUDART_SONAME`).
//!
//! NVIDIA's cuBLAS cannot run on top of our `libcuda.so.1` (it carries a private runtime and
//! reaches the driver through undocumented tables), so the calls themselves travel: the
//! GEMMs run on the server, next to the memory they work on.
//!
//! * [`wire`]: every call goes through `vgpu_roundtrip` of our `libcuda.so.1`, which owns
//!   the process's session and the calling thread's current context; this library never
//!   opens a connection of its own.
//! * [`handles`]: `cublasCreate_v2`/`cublasDestroy_v2` (synchronous) and the handle's
//!   settings. A `cublasHandle_t` is the server's handle id. Settings are kept here too, so
//!   that the getters and the pointer mode cost no round trip; the stream, math mode,
//!   atomics mode and workspace also reach the server, one-way and in program order.
//! * [`forward`]: the GEMM family, generated from `protocol::cublas_functions!`: one-way,
//!   like kernel launches. Host scalars (`CUBLAS_POINTER_MODE_HOST`) are read here and sent
//!   by value; device scalars and every device pointer pass through.
//! * [`local`]: what needs no server: versions, properties, status names and strings, the
//!   logger.
//!
//! Errors: a call this side can judge (unknown handle, bad mode, null scalar) answers at
//! once. A one-way call's failure on the server is reported by the session's next
//! synchronous call, as a CUDA error (`protocol::cublas::deferred_code`). A lost server
//! makes `cublasCreate_v2` answer `CUBLAS_STATUS_NOT_INITIALIZED` (as NVIDIA's does without
//! a usable GPU) and every call on an existing handle `CUBLAS_STATUS_EXECUTION_FAILED`.
//!
//! Exports take C's pointer contracts as documented by NVIDIA, hence no per-function
//! safety sections. To implement another export, write
//! `#[unsafe(no_mangle)] pub extern "C" fn NAME(...)` here, or add it to the table in
//! `crates/protocol/src/cublas.rs`: crates/shim-build then generates no stub for it.
#![allow(non_snake_case, clippy::missing_safety_doc)]

pub mod forward;
pub mod handles;
pub mod local;
pub mod wire;

pub use crate::api::{cublasHandle_t, cublasStatus_t};
pub use protocol::cublas::status;

/// A `cublasStatus_t` from its raw value.
pub fn st(code: u32) -> cublasStatus_t {
    cublasStatus_t(code)
}
