//! What a measuring child prints (one JSON object) and the parent reads back.

use serde::{Deserialize, Serialize};

/// Host to device or device to host.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dir {
    H2D,
    D2H,
}

/// Where the host side of a copy lives.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Mem {
    /// An ordinary allocation (`Vec`).
    Pageable,
    /// `cuMemAllocHost_v2`.
    Pinned,
}

impl Dir {
    pub fn name(self) -> &'static str {
        match self {
            Dir::H2D => "H2D",
            Dir::D2H => "D2H",
        }
    }
}

impl Mem {
    pub fn name(self) -> &'static str {
        match self {
            Mem::Pageable => "pageable",
            Mem::Pinned => "pinned",
        }
    }
}

/// The device and the libraries a child measured.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct DeviceInfo {
    /// `cuDeviceGetName` of device 0.
    pub name: String,
    /// `cuDriverGetVersion` (e.g. 13000).
    pub cuda_driver_version: i32,
    /// `nvmlSystemGetDriverVersion` (e.g. "580.159.04").
    pub driver_version: String,
    /// The file the CUDA library was loaded from, as the process maps it.
    pub cuda_lib: String,
    /// The file the NVML library was loaded from.
    pub nvml_lib: String,
}

/// Samples of one latency, in microseconds.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct Latency {
    pub n: u32,
    pub mean_us: f64,
    pub p50_us: f64,
    pub min_us: f64,
}

impl Latency {
    pub fn from_samples(us: &[f64]) -> Latency {
        Latency {
            n: us.len() as u32,
            mean_us: crate::stats::mean(us),
            p50_us: crate::stats::p50(us),
            min_us: crate::stats::min(us),
        }
    }
}

/// Empty-kernel launches.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct Launch {
    /// Back-to-back launches on one non-blocking stream.
    pub n: u32,
    /// Time of the launch loop per launch: what a launch costs the calling thread.
    pub submit_us: f64,
    /// Time until `cuStreamSynchronize` returned, per launch: launch throughput.
    pub throughput_us: f64,
    /// One launch then `cuStreamSynchronize`, repeated.
    pub launch_sync: Latency,
}

/// One copy size in one direction from one kind of host memory.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Copy {
    pub dir: Dir,
    pub mem: Mem,
    pub bytes: u64,
    /// Timed repetitions (after one untimed warm-up).
    pub reps: u32,
    /// GB/s (10^9 bytes/s) of the fastest repetition.
    pub best_gbps: f64,
    /// GB/s of the mean repetition time.
    pub mean_gbps: f64,
}

/// Everything one child measured.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct ChildResult {
    pub device: DeviceInfo,
    /// Absent when kernels cannot run (see `launch_unsupported`).
    pub launch: Option<Launch>,
    /// Why there are no launch figures (e.g. the sim backend cannot run kernels).
    pub launch_unsupported: Option<String>,
    /// `cuStreamSynchronize` on an idle stream.
    pub sync: Latency,
    pub copies: Vec<Copy>,
    /// `nvmlDeviceGetMemoryInfo`.
    pub nvml: Latency,
    /// Wall time of the whole child, seconds.
    pub elapsed_s: f64,
}

impl ChildResult {
    pub fn copy(&self, dir: Dir, mem: Mem, bytes: u64) -> Option<&Copy> {
        self.copies.iter().find(|c| c.dir == dir && c.mem == mem && c.bytes == bytes)
    }
}
