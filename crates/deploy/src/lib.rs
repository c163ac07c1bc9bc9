//! How vgpu is deployed and checked on a client machine:
//!
//! * [`ollama`]: `vgpu install ollama` puts vgpu's libraries into Ollama's bundled
//!   `lib/ollama/cuda_vNN` folders (originals kept, `vgpu uninstall ollama` restores them
//!   byte for byte);
//! * [`system`]: `vgpu install system` puts `libcuda.so.1` and `libnvidia-ml.so.1` where every
//!   program's loader finds them;
//! * [`env`](mod@env): `vgpu env` prints the lines for the `LD_LIBRARY_PATH` way;
//! * [`doctor`]: `vgpu doctor` answers "why does my application not see the GPU".
//!
//! Every path is taken relative to a [`root::Root`] (or given explicitly), so the tests work
//! on fake trees and never touch the real system.

pub mod cli;
pub mod config;
pub mod doctor;
pub mod elf;
pub mod env;
pub mod fsops;
pub mod handshake;
pub mod loader;
pub mod ollama;
pub mod probe;
pub mod procs;
pub mod root;
pub mod system;

/// This build's version (recorded in manifests, printed by the doctor).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Every library vgpu provides, by SONAME.
pub const LIBRARIES: [&str; 8] = [
    "libcuda.so.1",
    "libnvidia-ml.so.1",
    "libcudart.so.13",
    "libcudart.so.12",
    "libcublas.so.13",
    "libcublas.so.12",
    "libcublasLt.so.13",
    "libcublasLt.so.12",
];
