//! The client side of a vgpu session, shared by the shims: where the server is
//! (environment or `/etc/vgpu/client.toml`), one connection per server per process, the
//! merged device snapshot, fork safety and `VGPU_TRACE`.
//!
//! Each shim is its own cdylib with its own copy of this crate's statics: `libcuda.so.1`
//! owns the session its siblings (cudart, cuBLAS) use; NVML keeps a session of its own.

mod config;
pub mod handles;
mod session;

pub use config::{read_token, Config};
pub use session::{pid, session, Session};
pub use transport::Error;
