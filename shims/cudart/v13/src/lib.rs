//! `libcudart.so.13`: the CUDA 13 runtime API, built on the driver API of `libcuda.so.1`.
//!
//! The code is shared with the other major version in `shims/cudart/common/`; this crate only
//! fixes what differs between majors: the bindings (`rt`, whose `cudaDeviceProp` is the
//! 1008-byte CUDA 13 layout) and the version claimed. Every name of
//! `crates/abi/exports/libcudart.so.13.exports` is exported, versioned `@@libcudart.so.13`:
//! the ones defined by hand in common/, and a generated stub returning `cudaErrorNotSupported`
//! for each of the rest.

/// The runtime API bindings of this major version.
pub use abi::cudart13 as rt;

/// The runtime version this library claims (`CUDART_VERSION`).
pub const RUNTIME_VERSION: i32 = 13000;

#[path = "../../common/mod.rs"]
mod common;

// Not-supported stubs for every exported name not defined by hand (keep this line).
include!(concat!(env!("OUT_DIR"), "/stubs.rs"));
