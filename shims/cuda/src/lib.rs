//! `libcuda.so.1`: the CUDA driver API, forwarded to a vgpu server.
//!
//! Device queries are answered from the snapshot the server sent at the handshake; the
//! current context is per thread and travels in each frame's header; launches, async
//! copies from the host, memsets, event records, stream waits and graph launches are sent
//! without waiting. Every name of `crates/abi/exports/libcuda.so.1.exports` is exported:
//! those defined here, a generated not-supported stub for each other function, and zeroed
//! data objects for the debugger's `cudbg*` variables.

#![allow(non_snake_case, clippy::missing_safety_doc, clippy::too_many_arguments)]

mod context;
mod device;
mod errors;
mod export_table;
mod graph;
mod integrity;
mod ipc;
mod jit;
mod launch;
mod link;
mod memory;
mod module;
mod pool;
mod procaddr;
pub mod route;
mod shm;
pub mod state;
mod stream;
mod tensormap;
mod vgpu_abi;

// Not-supported stubs for every exported name not defined by hand (keep this line).
include!(concat!(env!("OUT_DIR"), "/stubs.rs"));
