//! What this process knows locally: the session, visible devices, per-thread current
//! context, contexts and their devices, function parameter layouts, and which address
//! ranges are device or host memory (for `cuPointerGetAttribute` and unified copies).

use abi::cuda::{CUcontext, CUdevice, CUresult};
use client::Session;
use device_model::Device;
use parking_lot::{Mutex, RwLock};
use protocol::Call;
use rustc_hash::FxHashMap as HashMap;
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

pub type R = CUresult;
pub const OK: R = CUresult::CUDA_SUCCESS;

/// Error code for a lost or unreachable server.
pub const LOST: R = CUresult::CUDA_ERROR_DEVICE_UNAVAILABLE;

static INITIALIZED: AtomicBool = AtomicBool::new(false);
static INIT_PID: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

thread_local! {
    /// This thread's context stack; the top is the current context.
    static STACK: RefCell<Vec<u64>> = const { RefCell::new(Vec::new()) };
}

/// What we remember about a context.
#[derive(Debug, Clone, Copy)]
pub struct CtxInfo {
    /// Ordinal of the device in this process's (visible) numbering.
    pub device: CUdevice,
    pub server: usize,
    pub flags: u32,
    /// What `cuCtxGetId` answers: counted from 1 in the order contexts were made, never
    /// reused, as the driver counts (a server's raw handle can come back for a new context).
    pub id: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemKind {
    Device,
    Host,
}

/// A function's parameters: (offset, size) of each.
pub type Layout = Arc<Vec<(u32, u32)>>;

#[derive(Default)]
pub struct Tables {
    pub contexts: RwLock<HashMap<u64, CtxInfo>>,
    /// Function → parameter layout (offset, size), from the server's driver.
    pub functions: RwLock<HashMap<u64, Layout>>,
    /// Function → every CUfunction_attribute, fetched once.
    pub func_attrs: RwLock<HashMap<u64, Arc<Vec<i32>>>>,
    /// Function → its name, as `cuFuncGetName` hands it out (valid while the entry lives).
    pub func_names: RwLock<HashMap<u64, Box<std::ffi::CStr>>>,
    /// (function, block size, dynamic shared memory, flags) → blocks per SM. A pure function
    /// of these and the function's attributes, which llama.cpp asks for before launches:
    /// a round trip each would wait behind every launch queued before it.
    pub occupancy: RwLock<HashMap<(u64, i32, u64, u32), i32>>,
    /// Start → (length, kind, context) of memory ranges this process knows about.
    pub ranges: RwLock<BTreeMap<u64, (u64, MemKind, u64)>>,
}

pub fn tables() -> &'static Tables {
    static T: OnceLock<Tables> = OnceLock::new();
    T.get_or_init(Tables::default)
}

fn pid() -> u32 {
    client::pid()
}

/// `cuInit`: connect (once per process) and remember success.
pub fn init() -> R {
    match client::session() {
        Ok(_) => {
            INIT_PID.store(pid(), Ordering::Relaxed);
            INITIALIZED.store(true, Ordering::Release);
            OK
        }
        // The session printed one line naming the address it tried; applications fall back.
        Err(_) => CUresult::CUDA_ERROR_NO_DEVICE,
    }
}

/// The session, once `cuInit` succeeded in this process.
pub fn session() -> Result<&'static Session, R> {
    if !INITIALIZED.load(Ordering::Acquire) || INIT_PID.load(Ordering::Relaxed) != pid() {
        return Err(CUresult::CUDA_ERROR_NOT_INITIALIZED);
    }
    client::session().map_err(|_| CUresult::CUDA_ERROR_NOT_INITIALIZED)
}

/// Snapshot indices of the devices this process may use, in CUDA ordinal order.
pub fn visible() -> Result<&'static [usize], R> {
    static V: OnceLock<Vec<usize>> = OnceLock::new();
    let s = session()?;
    Ok(V.get_or_init(|| {
        device_model::visible_devices(&s.snapshot.devices, std::env::var("CUDA_VISIBLE_DEVICES").ok().as_deref())
    }))
}

/// This process's ordinal of device `cuda_ordinal` of `server` (`None`: not visible here).
pub fn ordinal_of(server: usize, cuda_ordinal: i32) -> Option<i32> {
    let s = session().ok()?;
    let i = visible().ok()?.iter().position(|&i| {
        let d = &s.snapshot.devices[i];
        d.server as usize == server && d.cuda_ordinal as i32 == cuda_ordinal
    })?;
    i32::try_from(i).ok()
}

/// The device with this process-local ordinal.
pub fn device(dev: CUdevice) -> Result<&'static Device, R> {
    let s = session()?;
    let v = visible()?;
    let i = usize::try_from(dev).ok().and_then(|d| v.get(d)).ok_or(CUresult::CUDA_ERROR_INVALID_DEVICE)?;
    Ok(&s.snapshot.devices[*i])
}

// The stack is gone once the thread's destructors ran; NVIDIA's runtime still calls in from
// its exit handlers after the main thread's: no context is current then.
pub fn current() -> u64 {
    STACK.try_with(|s| s.borrow().last().copied().unwrap_or(0)).unwrap_or(0)
}

pub fn set_current(ctx: u64) {
    let _ = STACK.try_with(|s| {
        let mut s = s.borrow_mut();
        match (s.last_mut(), ctx) {
            (Some(top), _) => *top = ctx,
            (None, 0) => {}
            (None, c) => s.push(c),
        }
    });
}

pub fn push(ctx: u64) {
    let _ = STACK.try_with(|s| s.borrow_mut().push(ctx));
}

pub fn pop() -> Option<u64> {
    STACK.try_with(|s| s.borrow_mut().pop()).ok().flatten()
}

pub fn ctx_info(ctx: u64) -> Option<CtxInfo> {
    tables().contexts.read().get(&ctx).copied()
}

pub fn ctx_ptr(ctx: u64) -> CUcontext {
    ctx as usize as CUcontext
}

/// Map a transport error to the driver's vocabulary.
pub fn err(e: client::Error) -> R {
    match e {
        client::Error::Api(code) => CUresult(code),
        client::Error::Lost(_) | client::Error::Refused(_) => LOST,
    }
}

/// Forward a call in the current context (to the context's server).
pub fn call<C: Call>(c: &C) -> Result<C::Ret, R> {
    call_io(c, &[], None)
}

pub fn call_io<C: Call>(c: &C, bulk_in: &[&[u8]], bulk_out: Option<&mut [u8]>) -> Result<C::Ret, R> {
    crate::route::call_to(crate::route::here(), c, bulk_in, bulk_out)
}

/// Forward a call to a device's server with no context (device-level calls).
pub fn call_on<C: Call>(dev: &Device, c: &C) -> Result<C::Ret, R> {
    session()?.call(dev.server as usize, 0, c, &[], None).map_err(err)
}

/// Collapse `Result<(), R>` into a CUresult.
pub fn done(r: Result<(), R>) -> R {
    r.err().unwrap_or(OK)
}

/// Run an entry point: not before `cuInit`, never let a panic out.
pub fn entry(f: impl FnOnce() -> Result<(), R>) -> R {
    shim_support::guard(CUresult::CUDA_ERROR_UNKNOWN, || done(f()))
}

/// Write through an out pointer, refusing NULL.
pub unsafe fn put<T>(p: *mut T, v: T) -> Result<(), R> {
    if p.is_null() {
        return Err(CUresult::CUDA_ERROR_INVALID_VALUE);
    }
    unsafe { p.write(v) };
    Ok(())
}

pub fn add_range(start: u64, len: u64, kind: MemKind) {
    insert_range(start, len, kind, current());
}

/// Remember memory `[start, start+len)` of context `ctx`: a new allocation there, with a
/// buffer id of its own.
pub fn insert_range(start: u64, len: u64, kind: MemKind, ctx: u64) {
    buffer_gone(start);
    tables().ranges.write().insert(start, (len, kind, ctx));
}

pub fn remove_range(start: u64) -> Option<(u64, MemKind, u64)> {
    buffer_gone(start);
    tables().ranges.write().remove(&start)
}

/// Buffer ids handed out, by the start of their range: given on first asking, from 1, never
/// reused in the process, as the driver's (cuFFT asks for one of each buffer it allocates).
fn buffer_ids() -> &'static Mutex<HashMap<u64, u64>> {
    static B: std::sync::OnceLock<Mutex<HashMap<u64, u64>>> = std::sync::OnceLock::new();
    B.get_or_init(Default::default)
}

/// The id of the allocation that starts at `start`.
pub fn buffer_id(start: u64) -> u64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    *buffer_ids().lock().entry(start).or_insert_with(|| NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed))
}

/// The allocation at `start` went (or a new one begins there): a later one gets a new id.
fn buffer_gone(start: u64) {
    buffer_ids().lock().remove(&start);
}

/// The known range containing `p`: (start, len, kind, ctx).
pub fn find_range(p: u64) -> Option<(u64, u64, MemKind, u64)> {
    let r = tables().ranges.read();
    let (&start, &(len, kind, ctx)) = r.range(..=p).next_back()?;
    (p < start + len.max(1)).then_some((start, len, kind, ctx))
}

/// Whether the `len` bytes at `p` lie in one range of host memory this process allocated
/// or registered as pinned.
pub fn is_pinned(p: u64, len: u64) -> bool {
    matches!(find_range(p), Some((start, n, MemKind::Host, _)) if p.checked_add(len).is_some_and(|e| e <= start + n))
}

/// Whether `p` is device memory (allocated or mapped through this process).
pub fn is_device(p: u64) -> bool {
    matches!(find_range(p), Some((_, _, MemKind::Device, _)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_are_found_by_inner_pointer() {
        add_range(0x1000, 0x100, MemKind::Device);
        add_range(0x5000, 0x10, MemKind::Host);
        assert!(is_device(0x1000));
        assert!(is_device(0x10ff));
        assert!(!is_device(0x1100));
        assert!(!is_device(0x5000));
        assert_eq!(find_range(0x5008).map(|r| r.2), Some(MemKind::Host));
        assert!(is_pinned(0x5000, 0x10) && is_pinned(0x5008, 8));
        assert!(!is_pinned(0x5008, 9), "runs past the pinned range");
        assert!(!is_pinned(0x1000, 8), "device memory");
        assert!(!is_pinned(0x5008, u64::MAX), "a length that wraps");
        assert!(remove_range(0x1000).is_some());
        assert!(!is_device(0x1000));
    }

    #[test]
    fn context_stack_per_thread() {
        set_current(7);
        assert_eq!(current(), 7);
        push(9);
        assert_eq!(current(), 9);
        assert_eq!(pop(), Some(9));
        assert_eq!(current(), 7);
        std::thread::spawn(|| assert_eq!(current(), 0)).join().unwrap();
        set_current(0);
        assert_eq!(current(), 0);
    }
}
