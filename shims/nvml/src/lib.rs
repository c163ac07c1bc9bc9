//! `libnvidia-ml.so.1`: NVML for the remote GPUs.
//!
//! Identity (name, UUID, PCI, serial, compute capability, driver version) is answered from
//! the device snapshot the server sent at the handshake; live values (memory, utilization,
//! temperature, power, clocks, processes) are forwarded by the table in
//! `protocol::nvml_functions!`. Every other name of the real library is a generated stub
//! returning `NVML_ERROR_NOT_SUPPORTED` (see `docs/coverage.md`).

#![allow(non_snake_case, clippy::missing_safety_doc)]

pub mod devices;
mod events;
pub mod forward;
mod internal;
mod local;

pub use local::*;

// Not-supported stubs for every exported name not defined by hand (keep this line).
include!(concat!(env!("OUT_DIR"), "/stubs.rs"));
