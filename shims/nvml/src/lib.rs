//! `libnvidia-ml.so.1`: NVML for the remote GPUs.
//!
//! Every name of `crates/abi/exports/libnvidia-ml.so.1.exports` is exported: the ones defined
//! here by hand (`fn NAME` / `static NAME`, seen by `crates/shim-build`), and a generated stub
//! returning `NVML_ERROR_NOT_SUPPORTED` for each of the rest.

// Not-supported stubs for every exported name not defined by hand (keep this line).
include!(concat!(env!("OUT_DIR"), "/stubs.rs"));
