//! The measuring child: loads a libcuda.so.1 and a libnvidia-ml.so.1 (NVIDIA's or ours, by
//! name or path) and measures through the driver API and NVML only, so that the same code
//! runs against both. Every call goes through the `Result` fields of the loading structs:
//! a missing symbol or a failing call is an [`Error`], never a panic.

use crate::model::{ChildResult, Copy, DeviceInfo, Dir, Latency, Launch, Mem};
use crate::stats;
use abi::cuda::{
    CUcontext, CUdevice, CUdeviceptr, CUfunction, CUmodule, CUresult, CUstream, CUstream_flags_enum, CudaLib,
};
use abi::nvml::{NvmlLib, nvmlDevice_t, nvmlMemory_t, nvmlReturn_t};
use std::ffi::{CStr, c_char, c_void};
use std::fmt;
use std::ptr::{null, null_mut};
use std::time::{Duration, Instant};

/// An empty kernel, `empty()`, as PTX text (NUL-terminated for `cuModuleLoadData`). sm_52
/// and PTX ISA 8.0 (CUDA 12.0): the driver JIT-compiles it for whatever GPU is there.
pub const EMPTY_PTX: &CStr = c"//
// vgpu bench: an empty kernel
//
.version 8.0
.target sm_52
.address_size 64

.visible .entry empty()
{
\tret;
}
";

/// The name of the kernel in [`EMPTY_PTX`].
pub const EMPTY_KERNEL: &CStr = c"empty";

const KIB: u64 = 1 << 10;
const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;

/// Copy sizes of a full run: 4 KiB to 1 GiB.
pub const FULL_SIZES: [u64; 6] = [4 * KIB, 64 * KIB, MIB, 16 * MIB, 256 * MIB, GIB];
/// Copy sizes of a `--quick` run.
pub const QUICK_SIZES: [u64; 3] = [4 * KIB, 64 * KIB, MIB];

/// How much to measure.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    /// Back-to-back empty-kernel launches.
    pub launches: u32,
    /// Launch + synchronize pairs.
    pub launch_sync_iters: u32,
    /// Synchronizations of an idle stream.
    pub sync_iters: u32,
    /// `nvmlDeviceGetMemoryInfo` calls.
    pub nvml_iters: u32,
    pub sizes: Vec<u64>,
    /// Time after which no further repetition of one copy (size, direction, memory) starts.
    pub copy_budget: Duration,
}

impl Plan {
    pub fn new(quick: bool) -> Plan {
        if quick {
            Plan {
                launches: 2_000,
                launch_sync_iters: 100,
                sync_iters: 200,
                nvml_iters: 200,
                sizes: QUICK_SIZES.to_vec(),
                copy_budget: Duration::from_millis(100),
            }
        } else {
            Plan {
                launches: 100_000,
                launch_sync_iters: 1_000,
                sync_iters: 1_000,
                nvml_iters: 1_000,
                sizes: FULL_SIZES.to_vec(),
                copy_budget: Duration::from_millis(1_500),
            }
        }
    }

    /// At most this many timed repetitions of a copy of `bytes` (big copies get few, so that a
    /// child stays near a minute even at network speed).
    pub fn max_reps(&self, bytes: u64) -> u32 {
        match bytes {
            b if b <= 64 * KIB => 200,
            b if b <= MIB => 50,
            b if b <= 16 * MIB => 20,
            b if b <= 256 * MIB => 5,
            _ => 3,
        }
    }
}

/// Why a child could not measure.
#[derive(Debug, Clone, PartialEq)]
pub enum Error {
    /// The library could not be loaded.
    Load { path: String, err: String },
    /// The library lacks a symbol.
    Missing { name: &'static str, err: String },
    /// A driver API call failed.
    Cuda { call: &'static str, code: u32, name: String },
    /// An NVML call failed.
    Nvml { call: &'static str, code: u32, name: String },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Load { path, err } => write!(f, "cannot load {path}: {err}"),
            Error::Missing { name, err } => write!(f, "symbol {name} missing: {err}"),
            Error::Cuda { call, code, name } => write!(f, "{call} failed: {name} ({code})"),
            Error::Nvml { call, code, name } => write!(f, "{call} failed: {name} ({code})"),
        }
    }
}

impl std::error::Error for Error {}

const CUDA_ERROR_NOT_FOUND: u32 = 500;
const CUDA_ERROR_NOT_SUPPORTED: u32 = 801;

impl Error {
    /// The backend cannot run kernels: `CUDA_ERROR_NOT_SUPPORTED` from any step of the kernel
    /// section, or `CUDA_ERROR_NOT_FOUND` for the kernel's name (the sim backend cannot look
    /// inside module images, so it knows no functions).
    pub fn kernels_unsupported(&self) -> bool {
        match self {
            Error::Cuda { code, .. } if *code == CUDA_ERROR_NOT_SUPPORTED => true,
            Error::Cuda { call, code, .. } => *call == "cuModuleGetFunction" && *code == CUDA_ERROR_NOT_FOUND,
            _ => false,
        }
    }
}

fn sym<T: std::marker::Copy, E: fmt::Display>(r: &Result<T, E>, name: &'static str) -> Result<T, Error> {
    r.as_ref().copied().map_err(|e| Error::Missing { name, err: e.to_string() })
}

fn cu_check(lib: &CudaLib, call: &'static str, r: CUresult) -> Result<(), Error> {
    if r == CUresult::CUDA_SUCCESS {
        return Ok(());
    }
    let mut p: *const c_char = null();
    let name = match lib.cuGetErrorName.as_ref() {
        // SAFETY: cuGetErrorName writes a pointer to a static string.
        Ok(f) if unsafe { f(r, &mut p) } == CUresult::CUDA_SUCCESS && !p.is_null() => {
            // SAFETY: non-null, NUL-terminated, static.
            unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
        }
        _ => format!("CUresult {}", r.0),
    };
    Err(Error::Cuda { call, code: r.0, name })
}

fn nvml_check(lib: &NvmlLib, call: &'static str, r: nvmlReturn_t) -> Result<(), Error> {
    if r == nvmlReturn_t::NVML_SUCCESS {
        return Ok(());
    }
    let name = match lib.nvmlErrorString.as_ref() {
        Ok(f) => {
            // SAFETY: nvmlErrorString returns a static string (or null).
            let p = unsafe { f(r) };
            if p.is_null() {
                format!("nvmlReturn {}", r.0)
            } else {
                // SAFETY: non-null, NUL-terminated, static.
                unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
            }
        }
        Err(_) => format!("nvmlReturn {}", r.0),
    };
    Err(Error::Nvml { call, code: r.0, name })
}

/// Call a driver API function through its field of [`CudaLib`]: `cu!(lib, cuInit(0))?`.
macro_rules! cu {
    ($lib:expr, $f:ident($($a:expr),* $(,)?)) => {{
        let f = sym(&$lib.$f, stringify!($f))?;
        // SAFETY: the arguments follow the driver API's contract for this call.
        let r = unsafe { f($($a),*) };
        cu_check($lib, stringify!($f), r)
    }};
}

/// Call an NVML function through its field of [`NvmlLib`].
macro_rules! nv {
    ($lib:expr, $f:ident($($a:expr),* $(,)?)) => {{
        let f = sym(&$lib.$f, stringify!($f))?;
        // SAFETY: the arguments follow NVML's contract for this call.
        let r = unsafe { f($($a),*) };
        nvml_check($lib, stringify!($f), r)
    }};
}

fn c_string(buf: &[c_char]) -> String {
    let bytes: Vec<u8> = buf.iter().take_while(|&&c| c != 0).map(|&c| c as u8).collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

/// The file a library named `name` (a path, or a bare name the loader resolved) was loaded
/// from, found in `maps` (the text of `/proc/self/maps`).
pub fn mapped_path(maps: &str, name: &str) -> Option<String> {
    let file = name.rsplit('/').next().unwrap_or(name);
    let stem = match file.find(".so") {
        Some(i) => &file[..i + 3],
        None => file,
    };
    maps.lines()
        .filter_map(|l| l.split_whitespace().nth(5))
        .find(|p| p.starts_with('/') && p.rsplit('/').next().is_some_and(|f| f.starts_with(stem)))
        .map(str::to_string)
}

fn loaded_from(name: &str) -> String {
    if name.contains('/')
        && let Ok(p) = std::fs::canonicalize(name)
    {
        return p.display().to_string();
    }
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap_or_default();
    mapped_path(&maps, name).unwrap_or_else(|| name.to_string())
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

/// Measure everything with the CUDA library `cuda_path` and the NVML library `nvml_path`.
pub fn measure(plan: &Plan, cuda_path: &str, nvml_path: &str) -> Result<ChildResult, Error> {
    let start = Instant::now();
    // SAFETY: loading a CUDA driver library runs its initialisers, as any CUDA program does.
    let cuda = unsafe { CudaLib::new(cuda_path) }
        .map_err(|e| Error::Load { path: cuda_path.to_string(), err: e.to_string() })?;
    let cuda = &cuda;
    cu!(cuda, cuInit(0))?;
    let mut dev: CUdevice = 0;
    cu!(cuda, cuDeviceGet(&mut dev, 0))?;
    let mut name = [0 as c_char; 256];
    cu!(cuda, cuDeviceGetName(name.as_mut_ptr(), name.len() as i32, dev))?;
    let mut version = 0;
    cu!(cuda, cuDriverGetVersion(&mut version))?;
    let mut ctx: CUcontext = null_mut();
    cu!(cuda, cuDevicePrimaryCtxRetain(&mut ctx, dev))?;
    cu!(cuda, cuCtxSetCurrent(ctx))?;
    let mut stream: CUstream = null_mut();
    cu!(cuda, cuStreamCreate(&mut stream, CUstream_flags_enum::CU_STREAM_NON_BLOCKING.0))?;

    let (launch, launch_unsupported) = match launches(cuda, plan, stream) {
        Ok(l) => (Some(l), None),
        Err(e) if e.kernels_unsupported() => (None, Some(e.to_string())),
        Err(e) => return Err(e),
    };
    let sync = sync_round_trips(cuda, plan, stream)?;
    let copies = copies(cuda, plan)?;
    cu!(cuda, cuStreamDestroy_v2(stream))?;
    cu!(cuda, cuDevicePrimaryCtxRelease_v2(dev))?;

    // SAFETY: as for the CUDA library.
    let nvml = unsafe { NvmlLib::new(nvml_path) }
        .map_err(|e| Error::Load { path: nvml_path.to_string(), err: e.to_string() })?;
    let (nvml_lat, driver_version) = nvml_queries(&nvml, plan)?;

    Ok(ChildResult {
        device: DeviceInfo {
            name: c_string(&name),
            cuda_driver_version: version,
            driver_version,
            cuda_lib: loaded_from(cuda_path),
            nvml_lib: loaded_from(nvml_path),
        },
        launch,
        launch_unsupported,
        sync,
        copies,
        nvml: nvml_lat,
        elapsed_s: start.elapsed().as_secs_f64(),
    })
}

/// Empty-kernel launches: the cost of a launch to the calling thread, the launch throughput,
/// and launch + synchronize.
fn launches(cuda: &CudaLib, plan: &Plan, stream: CUstream) -> Result<Launch, Error> {
    let mut module: CUmodule = null_mut();
    cu!(cuda, cuModuleLoadData(&mut module, EMPTY_PTX.as_ptr().cast::<c_void>()))?;
    let mut func: CUfunction = null_mut();
    cu!(cuda, cuModuleGetFunction(&mut func, module, EMPTY_KERNEL.as_ptr()))?;
    let launch_fn = sym(&cuda.cuLaunchKernel, "cuLaunchKernel")?;
    let sync_fn = sym(&cuda.cuStreamSynchronize, "cuStreamSynchronize")?;
    let launch = || {
        // SAFETY: a kernel without parameters: no kernelParams, no extra.
        let r = unsafe { launch_fn(func, 1, 1, 1, 1, 1, 1, 0, stream, null_mut(), null_mut()) };
        cu_check(cuda, "cuLaunchKernel", r)
    };
    // SAFETY: a stream of the current context.
    let sync = || cu_check(cuda, "cuStreamSynchronize", unsafe { sync_fn(stream) });

    for _ in 0..100 {
        launch()?;
    }
    sync()?;

    let t = Instant::now();
    for _ in 0..plan.launches {
        launch()?;
    }
    let submit = t.elapsed();
    sync()?;
    let total = t.elapsed();

    let mut samples = Vec::with_capacity(plan.launch_sync_iters as usize);
    for _ in 0..plan.launch_sync_iters {
        let t = Instant::now();
        launch()?;
        sync()?;
        samples.push(us(t.elapsed()));
    }
    cu!(cuda, cuModuleUnload(module))?;
    let n = plan.launches.max(1);
    Ok(Launch {
        n: plan.launches,
        submit_us: us(submit) / n as f64,
        throughput_us: us(total) / n as f64,
        launch_sync: Latency::from_samples(&samples),
    })
}

/// `cuStreamSynchronize` of an idle stream: one round trip to the driver (and, through vgpu,
/// to the server).
fn sync_round_trips(cuda: &CudaLib, plan: &Plan, stream: CUstream) -> Result<Latency, Error> {
    let sync_fn = sym(&cuda.cuStreamSynchronize, "cuStreamSynchronize")?;
    // SAFETY: a stream of the current context.
    let sync = || cu_check(cuda, "cuStreamSynchronize", unsafe { sync_fn(stream) });
    for _ in 0..10 {
        sync()?;
    }
    let mut samples = Vec::with_capacity(plan.sync_iters as usize);
    for _ in 0..plan.sync_iters {
        let t = Instant::now();
        sync()?;
        samples.push(us(t.elapsed()));
    }
    Ok(Latency::from_samples(&samples))
}

/// Host memory for the copies: pageable (a `Vec`) or pinned (`cuMemAllocHost_v2`), freed on
/// drop.
struct Pinned<'a> {
    cuda: &'a CudaLib,
    ptr: *mut c_void,
}

impl Drop for Pinned<'_> {
    fn drop(&mut self) {
        if let Ok(f) = self.cuda.cuMemFreeHost.as_ref() {
            // SAFETY: allocated by cuMemAllocHost_v2 of this library.
            unsafe { f(self.ptr) };
        }
    }
}

struct DeviceBuf<'a> {
    cuda: &'a CudaLib,
    ptr: CUdeviceptr,
}

impl Drop for DeviceBuf<'_> {
    fn drop(&mut self) {
        if let Ok(f) = self.cuda.cuMemFree_v2.as_ref() {
            // SAFETY: allocated by cuMemAlloc_v2 of this library.
            unsafe { f(self.ptr) };
        }
    }
}

/// Fill `buf` with 8-byte words that differ from their neighbours (a multiplicative hash of
/// their index and `seed`).
fn varied(buf: &mut [u8], seed: u64) {
    for (i, w) in buf.chunks_mut(8).enumerate() {
        let x = (i as u64 ^ seed << 56).wrapping_mul(0x9e37_79b9_7f4a_7c15).to_le_bytes();
        w.copy_from_slice(&x[..w.len()]);
    }
}

/// Synchronous copies H2D and D2H, pageable and pinned, every size of the plan.
fn copies(cuda: &CudaLib, plan: &Plan) -> Result<Vec<Copy>, Error> {
    let max = plan.sizes.iter().copied().max().unwrap_or(0) as usize;
    if max == 0 {
        return Ok(Vec::new());
    }
    let mut dptr: CUdeviceptr = 0;
    cu!(cuda, cuMemAlloc_v2(&mut dptr, max))?;
    let dbuf = DeviceBuf { cuda, ptr: dptr };
    // Filled, so that every page is touched before anything is timed, with bytes that vary
    // word to word as data does: runs of one word would go packed over TCP (`htod_runs`),
    // and the rows would time packing instead of the transport.
    let mut pageable = vec![0u8; max];
    varied(&mut pageable, 1);
    let mut p: *mut c_void = null_mut();
    cu!(cuda, cuMemAllocHost_v2(&mut p, max))?;
    let pinned = Pinned { cuda, ptr: p };
    // SAFETY: `max` bytes were just allocated at `p`, and nothing else refers to them.
    varied(unsafe { std::slice::from_raw_parts_mut(pinned.ptr.cast::<u8>(), max) }, 2);

    let mut out = Vec::new();
    for mem in [Mem::Pageable, Mem::Pinned] {
        let host = match mem {
            Mem::Pageable => pageable.as_mut_ptr().cast::<c_void>(),
            Mem::Pinned => pinned.ptr,
        };
        for dir in [Dir::H2D, Dir::D2H] {
            for &bytes in &plan.sizes {
                out.push(copy_one(cuda, plan, dir, mem, host, dbuf.ptr, bytes)?);
            }
        }
    }
    Ok(out)
}

fn copy_one(
    cuda: &CudaLib,
    plan: &Plan,
    dir: Dir,
    mem: Mem,
    host: *mut c_void,
    dptr: CUdeviceptr,
    bytes: u64,
) -> Result<Copy, Error> {
    let h2d = sym(&cuda.cuMemcpyHtoD_v2, "cuMemcpyHtoD_v2")?;
    let d2h = sym(&cuda.cuMemcpyDtoH_v2, "cuMemcpyDtoH_v2")?;
    let n = bytes as usize;
    // SAFETY: `host` and `dptr` both hold at least the largest size of the plan.
    let copy = || match dir {
        Dir::H2D => cu_check(cuda, "cuMemcpyHtoD_v2", unsafe { h2d(dptr, host, n) }),
        Dir::D2H => cu_check(cuda, "cuMemcpyDtoH_v2", unsafe { d2h(host, dptr, n) }),
    };
    copy()?; // warm-up
    let max_reps = plan.max_reps(bytes) as usize;
    let mut times = Vec::new();
    let start = Instant::now();
    while times.len() < max_reps && (times.is_empty() || start.elapsed() < plan.copy_budget) {
        let t = Instant::now();
        copy()?;
        times.push(t.elapsed().as_secs_f64());
    }
    Ok(Copy {
        dir,
        mem,
        bytes,
        reps: times.len() as u32,
        best_gbps: stats::gbps(bytes, stats::min(&times)),
        mean_gbps: stats::gbps(bytes, stats::mean(&times)),
    })
}

/// `nvmlDeviceGetMemoryInfo` latency, and the driver version.
fn nvml_queries(nvml: &NvmlLib, plan: &Plan) -> Result<(Latency, String), Error> {
    nv!(nvml, nvmlInit_v2())?;
    let mut ver = [0 as c_char; 96];
    nv!(nvml, nvmlSystemGetDriverVersion(ver.as_mut_ptr(), ver.len() as u32))?;
    let mut dev: nvmlDevice_t = null_mut();
    nv!(nvml, nvmlDeviceGetHandleByIndex_v2(0, &mut dev))?;
    let get = sym(&nvml.nvmlDeviceGetMemoryInfo, "nvmlDeviceGetMemoryInfo")?;
    let mut m = nvmlMemory_t { total: 0, free: 0, used: 0 };
    // SAFETY: a device handle from NVML and a struct of the size the call writes.
    let mut query = || nvml_check(nvml, "nvmlDeviceGetMemoryInfo", unsafe { get(dev, &mut m) });
    for _ in 0..10 {
        query()?;
    }
    let mut samples = Vec::with_capacity(plan.nvml_iters as usize);
    for _ in 0..plan.nvml_iters {
        let t = Instant::now();
        query()?;
        samples.push(us(t.elapsed()));
    }
    nv!(nvml, nvmlShutdown())?;
    Ok((Latency::from_samples(&samples), c_string(&ver)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ptx_is_well_formed() {
        let ptx = EMPTY_PTX.to_str().unwrap();
        let lines: Vec<&str> = ptx.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with("//")).collect();
        assert_eq!(
            lines,
            [".version 8.0", ".target sm_52", ".address_size 64", ".visible .entry empty()", "{", "ret;", "}"]
        );
        assert_eq!(EMPTY_KERNEL.to_str().unwrap(), "empty");
    }

    #[test]
    fn copied_bytes_do_not_pack() {
        let mut buf = vec![0u8; 1 << 20];
        varied(&mut buf, 1);
        assert!(protocol::runs::pack_if_worth(&buf).is_none());
        let mut other = vec![0u8; 1 << 20];
        varied(&mut other, 2);
        assert_ne!(buf, other, "the pinned buffer differs from the pageable one");
    }

    #[test]
    fn plans() {
        let full = Plan::new(false);
        assert_eq!(full.launches, 100_000);
        assert_eq!(full.sizes.first(), Some(&4096));
        assert_eq!(full.sizes.last(), Some(&(1 << 30)));
        assert!(Plan::new(true).sizes.iter().all(|&s| s <= MIB));
        assert_eq!(full.max_reps(4096), 200);
        assert_eq!(full.max_reps(GIB), 3);
    }

    #[test]
    fn unsupported_kernels_are_recognised() {
        let e = |call, code| Error::Cuda { call, code, name: String::new() };
        assert!(e("cuLaunchKernel", 801).kernels_unsupported());
        assert!(e("cuModuleLoadData", 801).kernels_unsupported());
        assert!(e("cuModuleGetFunction", 500).kernels_unsupported());
        assert!(!e("cuModuleLoadData", 500).kernels_unsupported());
        assert!(!e("cuLaunchKernel", 1).kernels_unsupported());
        assert!(!Error::Missing { name: "cuLaunchKernel", err: String::new() }.kernels_unsupported());
    }

    #[test]
    fn mapped_paths() {
        let maps = "\
7f00-7f10 r--p 00000000 08:01 123  /usr/lib/x86_64-linux-gnu/libcudart.so.13.0.96
7f10-7f20 r-xp 00000000 08:01 124  /usr/lib/x86_64-linux-gnu/libcuda.so.580.159.04
7f20-7f30 r--p 00000000 00:00 0
7f30-7f40 r--p 00000000 08:01 125  /usr/lib/x86_64-linux-gnu/libnvidia-ml.so.580.159.04
";
        assert_eq!(
            mapped_path(maps, "libcuda.so.1").as_deref(),
            Some("/usr/lib/x86_64-linux-gnu/libcuda.so.580.159.04")
        );
        assert_eq!(
            mapped_path(maps, "libnvidia-ml.so.1").as_deref(),
            Some("/usr/lib/x86_64-linux-gnu/libnvidia-ml.so.580.159.04")
        );
        assert_eq!(mapped_path(maps, "libcublas.so.13"), None);
    }

    #[test]
    fn missing_library_is_an_error_not_a_panic() {
        let e = measure(&Plan::new(true), "/nonexistent/libcuda.so.1", "/nonexistent/libnvidia-ml.so.1").unwrap_err();
        assert!(matches!(e, Error::Load { .. }), "{e}");
        assert!(e.to_string().contains("/nonexistent/libcuda.so.1"), "{e}");
    }
}
