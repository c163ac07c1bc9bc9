//! The `cuda` backend: the real driver (`libcuda.so.1`) and NVML (`libnvidia-ml.so.1`),
//! loaded with libloading, one `Result` per symbol (a missing symbol is an error code,
//! never a panic).
//!
//! [`snapshot`] runs once in the `vgpu serve` parent; a [`CudaSession`] runs in each
//! worker process (exec'd, so it loads and initialises the driver itself).
//!
//! Handles the client holds are the driver's own pointer values, but every one is looked up
//! in this session's sets (`handles`) before the driver sees it, so a forged or stale
//! value is an error code rather than a crash. Device ranges touched by copies and memsets
//! must lie in this session's allocations (`ranges`), which also carry the memory quota.
//!
//! One job per file: `snapshot` (describe the GPUs), `handles`, `ranges`, `staging` (pinned
//! buffers for copies), `memory` (allocations, 1D copies, memsets), `copy2d`, `vmm`, `cache`
//! (the on-disk module cache), `modules` (modules, libraries, functions), `launch`,
//! `streams` (streams, events, graphs), `contexts`, `nvml`, `shm` (copies with a client's
//! shared segment), and `backend` (the
//! `protocol::Backend` impl, which checks the frame's context and delegates).

/// Call a driver entry point: a missing symbol is `CUDA_ERROR_NOT_SUPPORTED` (returned from
/// the enclosing function), otherwise the call's status as `Result<(), u32>`.
macro_rules! cu {
    ($lib:expr, $name:ident ( $($arg:expr),* $(,)? )) => {{
        let f = *$lib.$name.as_ref().map_err(|_| $crate::cuda::NOT_SUPPORTED)?;
        $crate::cuda::check(unsafe { f($($arg),*) }.0)
    }};
}

mod backend;
mod cache;
mod contexts;
mod copy2d;
mod handles;
mod ipc;
mod jit;
mod launch;
mod memory;
mod modules;
mod nvml;
mod ranges;
mod shm;
mod snapshot;
mod staging;
mod streams;
mod tensormap;
mod tools;
mod vmm;

pub use snapshot::snapshot;
/// A plain C struct's bytes, for the sim's answers too.
pub(crate) use vmm::struct_bytes;

use crate::Session;
use abi::cuda::{CUcontext, CUdevice, CudaLib};
use device_model::Snapshot;
use std::collections::HashMap;

pub(crate) type R<T> = Result<T, u32>;

pub(crate) const INVALID_VALUE: u32 = 1;
pub(crate) const OUT_OF_MEMORY: u32 = 2;
pub(crate) const INVALID_DEVICE: u32 = 101;
pub(crate) const INVALID_CONTEXT: u32 = 201;
pub(crate) const FILE_NOT_FOUND: u32 = 301;
pub(crate) const INVALID_HANDLE: u32 = 400;
pub(crate) const NOT_READY: u32 = 600;
pub(crate) const NOT_PERMITTED: u32 = 800;
pub(crate) const NOT_SUPPORTED: u32 = 801;
pub(crate) const STREAM_CAPTURE_UNSUPPORTED: u32 = 900;

/// A driver status as a `Result`.
pub(crate) fn check(code: u32) -> R<()> {
    if code == 0 { Ok(()) } else { Err(code) }
}

/// Load and initialise the driver. It is never unloaded: libcuda starts threads and
/// registers exit handlers, and unloading it under them is asking for a crash at exit.
fn load_driver() -> Result<&'static CudaLib, String> {
    let lib = unsafe { CudaLib::new("libcuda.so.1") }.map_err(|e| format!("cannot load libcuda.so.1: {e}"))?;
    let lib: &'static CudaLib = Box::leak(Box::new(lib));
    let init = || -> R<()> { cu!(lib, cuInit(0)) };
    init().map_err(|c| format!("cuInit failed: {}", error_name(lib, c)))?;
    Ok(lib)
}

/// `CUDA_ERROR_NO_DEVICE (100)`, for log lines.
pub(crate) fn error_name(lib: &CudaLib, code: u32) -> String {
    let mut s: *const std::os::raw::c_char = std::ptr::null();
    let name = match lib.cuGetErrorName.as_ref() {
        Ok(f) if unsafe { f(abi::cuda::CUresult(code), &mut s) }.0 == 0 && !s.is_null() => {
            unsafe { std::ffi::CStr::from_ptr(s) }.to_string_lossy().into_owned()
        }
        _ => "CUDA error".to_string(),
    };
    format!("{name} ({code})")
}

/// One client session on the real driver.
pub struct CudaSession {
    lib: &'static CudaLib,
    /// `CUdevice` of each CUDA ordinal.
    devices: Vec<CUdevice>,
    snapshot: Snapshot,
    /// Bytes per device this session may allocate, if limited.
    limit: Option<u64>,
    /// Bytes counted against the limit, per CUDA ordinal.
    used: Vec<u64>,
    /// The context current on this (the only) worker thread, as the driver sees it.
    current: u64,
    /// While other sessions share the GPU: each context's scheduling flags as the
    /// application has them, its waits meanwhile blocking (`contexts::set_shared`).
    shared: Option<HashMap<u64, u32>>,
    /// Set when the frame named a context this session does not have; every call answers
    /// it until a frame names a valid context (or none).
    ctx_error: Option<u32>,
    h: handles::Handles,
    ranges: ranges::RangeMap,
    /// Pinned staging buffers, per context (they die with the context that made them).
    pools: HashMap<u64, staging::Pool>,
    images: cache::ImageCache,
    /// Each loaded library's image, which the driver reads until the library is unloaded.
    library_images: HashMap<u64, std::rc::Rc<cache::Aligned>>,
    nvml: nvml::NvmlState,
    /// cuBLAS handles (`crate::cublas`), loaded at the first `cublasCreate_v2`.
    cublas: crate::cublas::Cublas,
    /// Whether the log has said once that captured host-to-device copies keep their bytes.
    told_captured_copy: bool,
    /// Copies captured into graphs whose bytes the client refreshes before each launch.
    captured: memory::CapturedCopies,
    /// The client's shared-memory segment (`shm:` addresses).
    shm: Option<shm::Shm>,
    /// A `stream_barrier` not yet waited for (see [`streams::Barrier`]).
    barrier: Option<streams::Barrier>,
    /// Per context, the event that orders other streams after a pending barrier.
    order_events: HashMap<u64, u64>,
    /// Where the worker is reading the current frame's copy bytes, if not its own buffer.
    landing: Option<memory::Landing>,
    /// A reply's bulk bytes in a pinned buffer, for the worker to write.
    reply_out: Option<memory::ReplyOut>,
    /// The first error a deferred barrier met, for the next synchronous call.
    async_error: Option<u32>,
    /// Pieces of earlier copies the client told this session to keep (`htod_pages`).
    pages: crate::pages::Store,
    /// What the last module load or link input with JIT options of its own left (`jit_out`).
    last_jit: protocol::jit::JitOut,
    /// Where host functions run (`streams::launch_host_func`).
    host_funcs: Option<std::sync::Arc<crate::host_funcs::HostFuncs>>,
}

impl CudaSession {
    pub fn open(snapshot: &Snapshot, limit: Option<u64>) -> Result<CudaSession, String> {
        let lib = load_driver()?;
        let devices = (|| -> R<Vec<CUdevice>> {
            let mut n = 0;
            cu!(lib, cuDeviceGetCount(&mut n))?;
            (0..n)
                .map(|i| {
                    let mut d: CUdevice = 0;
                    cu!(lib, cuDeviceGet(&mut d, i))?;
                    Ok(d)
                })
                .collect()
        })()
        .map_err(|c| format!("cannot enumerate devices: {}", error_name(lib, c)))?;
        if devices.len() != snapshot.devices.len() {
            tracing::warn!("the worker sees {} device(s), the snapshot {}", devices.len(), snapshot.devices.len());
        }
        Ok(CudaSession {
            lib,
            used: vec![0; devices.len()],
            devices,
            snapshot: snapshot.clone(),
            limit,
            current: 0,
            shared: None,
            ctx_error: None,
            h: handles::Handles::default(),
            ranges: ranges::RangeMap::default(),
            pools: HashMap::new(),
            images: cache::ImageCache::new(),
            library_images: HashMap::new(),
            last_jit: Default::default(),
            nvml: nvml::NvmlState::default(),
            cublas: crate::cublas::Cublas::default(),
            told_captured_copy: false,
            captured: Default::default(),
            shm: None,
            barrier: None,
            order_events: HashMap::new(),
            landing: None,
            reply_out: None,
            async_error: None,
            pages: Default::default(),
            host_funcs: None,
        })
    }

    /// The frame's context error, if any (checked by every forwarded call but NVML's).
    fn ready(&self) -> R<()> {
        self.ctx_error.map_or(Ok(()), Err)
    }

    /// The `CUdevice` of a CUDA ordinal from the client.
    fn device(&self, dev: i32) -> R<CUdevice> {
        usize::try_from(dev).ok().and_then(|d| self.devices.get(d)).copied().ok_or(INVALID_DEVICE)
    }

    /// The ordinal of the current context's device.
    fn current_device(&self) -> R<usize> {
        self.h.contexts.get(&self.current).map(|c| c.dev).ok_or(INVALID_CONTEXT)
    }

    /// Make the driver's current context agree with `self.current` after a call that may
    /// have changed it (create pushes, destroy pops): a context we no longer track is
    /// replaced by none.
    fn resync_current(&mut self) {
        let mut c: CUcontext = std::ptr::null_mut();
        let got = (|| cu!(self.lib, cuCtxGetCurrent(&mut c)))();
        let c = if got.is_ok() { c as u64 } else { 0 };
        if c != 0 && !self.h.contexts.contains_key(&c) {
            let _ = (|| cu!(self.lib, cuCtxSetCurrent(std::ptr::null_mut())))();
            self.current = 0;
        } else {
            self.current = c;
        }
    }

    /// Run `f` with context `ctx` current (pushed, then popped), or directly when it
    /// already is (or is 0: none known).
    fn in_context<T>(&mut self, ctx: u64, f: impl FnOnce(&mut Self) -> R<T>) -> R<T> {
        if ctx == 0 || ctx == self.current {
            return f(self);
        }
        cu!(self.lib, cuCtxPushCurrent_v2(ctx as CUcontext))?;
        let saved = std::mem::replace(&mut self.current, ctx);
        let r = f(self);
        self.current = saved;
        let mut popped: CUcontext = std::ptr::null_mut();
        let _ = (|| cu!(self.lib, cuCtxPopCurrent_v2(&mut popped)))();
        r
    }

    /// Drop everything that died with context `ctx` (destroyed, reset, or released for the
    /// last time): its streams, events, modules, functions, graph execs, allocations (and
    /// their quota) and staging buffers (freed by the driver with the context).
    fn forget_context_resources(&mut self, ctx: u64) {
        self.h.forget_ctx(ctx);
        self.cublas.forget_ctx(ctx);
        for (_, r) in self.ranges.remove_where(|_, r| r.ctx == ctx) {
            if r.kind == ranges::Kind::Alloc {
                self.uncount(r.dev, r.len);
            }
        }
        if let Some(mut p) = self.pools.remove(&ctx) {
            p.forget();
        }
        self.order_events.remove(&ctx);
        self.captured.forget_ctx(ctx);
        self.shm_forget_context(ctx);
    }

    fn uncount(&mut self, dev: usize, bytes: u64) {
        if let Some(u) = self.used.get_mut(dev) {
            *u = u.saturating_sub(bytes);
        }
    }
}

impl Session for CudaSession {
    fn memory_used(&self) -> u64 {
        self.used.iter().sum()
    }

    /// 0 leaves the current context as it is; a context of this session becomes current
    /// (`cuCtxSetCurrent` only when it changes); anything else makes the frame's call fail
    /// with `CUDA_ERROR_INVALID_CONTEXT`.
    fn set_context(&mut self, ctx: u64) {
        self.ctx_error = None;
        if ctx == 0 || ctx == self.current {
            return;
        }
        // A barrier names a stream of the context current when it came.
        self.flush_barrier();
        if !self.h.contexts.contains_key(&ctx) {
            self.ctx_error = Some(INVALID_CONTEXT);
            return;
        }
        match (|| cu!(self.lib, cuCtxSetCurrent(ctx as CUcontext)))() {
            Ok(()) => self.current = ctx,
            Err(code) => self.ctx_error = Some(code),
        }
    }

    fn attach_segment(&mut self, segment: transport::Segment) -> Result<(), String> {
        self.shm_attach(segment)
    }

    fn set_host_funcs(&mut self, funcs: std::sync::Arc<crate::host_funcs::HostFuncs>) {
        self.host_funcs = Some(funcs);
    }

    fn bulk_place(&mut self, op: u32, args: &[u8], len: usize) -> Option<std::ptr::NonNull<u8>> {
        self.land_htod(op, args, len)
    }

    fn reply_bulk(&mut self) -> Option<&[u8]> {
        self.take_reply_out()
    }

    fn wait_job(&mut self, op: u32, args: &[u8]) -> Option<crate::WaitJob> {
        self.wait_off_thread(op, args)
    }

    fn share_gpu(&mut self, shared: bool) {
        self.set_shared(shared);
    }

    fn flush(&mut self) -> Option<u32> {
        self.flush_barrier();
        self.async_error.take()
    }

    fn take_async_error(&mut self) -> Option<u32> {
        self.async_error.take()
    }

    /// Best effort: the worker exits next and the driver frees whatever is left, but
    /// releasing explicitly keeps teardown orderly. Destroying a context frees everything
    /// made in it, so only context-independent objects are released one by one.
    fn close(&mut self) {
        let c = &self.images.cost;
        if c.loads > 0 && std::env::var_os("VGPU_STATS").is_some() {
            tracing::info!(
                "module images: {} loads, {:.1} MB; finding and checking them {:.1} ms, the driver's loading {:.1} ms",
                c.loads,
                c.bytes as f64 / 1e6,
                c.cache.as_secs_f64() * 1e3,
                c.driver.as_secs_f64() * 1e3
            );
        }
        self.flush_barrier();
        // cuBLAS handles first, while their contexts live; the segment's events and
        // registration too.
        self.cublas.close();
        self.shm_close();
        let lib = self.lib;
        for (&x, _) in self.h.execs.iter() {
            let _ = (|| cu!(lib, cuGraphExecDestroy(x as _)))();
        }
        for &g in self.h.graphs.iter() {
            let _ = (|| cu!(lib, cuGraphDestroy(g as _)))();
        }
        for &l in self.h.libraries.iter() {
            let _ = (|| cu!(lib, cuLibraryUnload(l as _)))();
        }
        for (&l, _) in self.h.links.iter() {
            let _ = (|| cu!(lib, cuLinkDestroy(l as _)))();
        }
        for &p in self.h.created_pools.iter() {
            let _ = (|| cu!(lib, cuMemPoolDestroy(p as _)))();
        }
        for (start, r) in self.ranges.remove_where(|_, r| r.kind == ranges::Kind::Mapped) {
            let _ = (|| cu!(lib, cuMemUnmap(start, r.len as usize)))();
        }
        for (&h, _) in self.h.vmm.iter() {
            let _ = (|| cu!(lib, cuMemRelease(h)))();
        }
        for (&p, &size) in self.h.reserved.iter() {
            let _ = (|| cu!(lib, cuMemAddressFree(p, size as usize)))();
        }
        for (&c, ctx) in self.h.contexts.iter() {
            if !ctx.primary {
                let _ = (|| cu!(lib, cuCtxDestroy_v2(c as CUcontext)))();
            }
        }
        for (&dev, &(_, n)) in self.h.primary_refs.iter() {
            for _ in 0..n {
                let _ = (|| cu!(lib, cuDevicePrimaryCtxRelease_v2(self.devices[dev])))();
            }
        }
        self.h = handles::Handles::default();
        self.ranges = ranges::RangeMap::default();
        for (_, mut p) in self.pools.drain() {
            p.forget();
        }
        self.current = 0;
        self.nvml.shutdown();
    }
}
