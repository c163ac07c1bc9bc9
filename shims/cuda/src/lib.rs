//! `libcuda.so.1`: the CUDA driver API, forwarded to a vgpu server.
//!
//! Every name of `crates/abi/exports/libcuda.so.1.exports` is exported: the ones defined here
//! by hand (`fn NAME` / `static NAME`, seen by `crates/shim-build`), a generated stub returning
//! `CUDA_ERROR_NOT_SUPPORTED` for each other function, and zeroed data objects for the
//! debugger's `cudbg*` variables.

// Not-supported stubs for every exported name not defined by hand (keep this line).
include!(concat!(env!("OUT_DIR"), "/stubs.rs"));
