//! The client side of a vgpu session, shared by the shims: where the server is
//! (environment or `/etc/vgpu/client.toml`), one connection per server per process, the
//! merged device snapshot, fork safety and `VGPU_TRACE`.
//!
//! Each shim is its own cdylib with its own copy of this crate's statics: `libcuda.so.1`
//! owns the session its siblings (cudart, cuBLAS) use; NVML keeps a session of its own.

pub mod blobs;
mod config;
pub mod handles;
pub mod host_funcs;
pub mod idle;
pub mod pages;
mod session;
pub mod shm;

pub use config::{Config, read_token};
pub use session::{Pages, RENEW_EVERY, Session, pid, renewed, session, trace_note};
pub use transport::Error;
pub use transport::lanes::LANE_MIN;
