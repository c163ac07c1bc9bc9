//! Devices and contexts, as NVIDIA's runtime manages them: a per-thread current device
//! (default 0) and, per device, the primary context, retained once per process and made
//! current on a thread by the first call there that needs a context. A context the
//! application made current through the driver API is honoured.

use std::cell::Cell;
use std::ptr::null_mut;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};

use abi::cuda::CUcontext;
use parking_lot::Mutex;

use super::error::Res;
use crate::rt::cudaError_t as E;

/// Devices beyond this many are refused (`cudaErrorInvalidDevice`).
pub(crate) const MAX_DEVICES: usize = 64;

thread_local! {
    static DEVICE: Cell<i32> = const { Cell::new(0) };
    /// The last context seen current on this thread and its device (saves a driver call).
    static BOUND: Cell<(usize, i32)> = const { Cell::new((0, -1)) };
}

/// Retained primary contexts, by device (0 = not retained).
static PRIMARY: [AtomicUsize; MAX_DEVICES] = [const { AtomicUsize::new(0) }; MAX_DEVICES];
/// Serialises retain and reset (first use of a device only).
static RETAIN: Mutex<()> = Mutex::new(());
static COUNT: OnceLock<Res<i32>> = OnceLock::new();

/// The number of devices (initialising the driver).
pub(crate) fn device_count() -> Res<i32> {
    super::driver::lib()?;
    *COUNT.get_or_init(|| {
        let mut n = 0;
        cu!(cuDeviceGetCount(&mut n))?;
        Ok(n)
    })
}

/// `Ok(device as index)` if `device` names a device of this process.
pub(crate) fn check_device(device: i32) -> Res<usize> {
    let n = device_count()?;
    match usize::try_from(device) {
        Ok(d) if device < n && d < MAX_DEVICES => Ok(d),
        _ => Err(E::cudaErrorInvalidDevice),
    }
}

/// The primary context of `device`, retained on first use.
pub(crate) fn primary(device: i32) -> Res<CUcontext> {
    let d = check_device(device)?;
    let c = PRIMARY[d].load(Ordering::Acquire);
    if c != 0 {
        return Ok(c as CUcontext);
    }
    let _g = RETAIN.lock();
    let c = PRIMARY[d].load(Ordering::Acquire);
    if c != 0 {
        return Ok(c as CUcontext);
    }
    let mut ctx = null_mut();
    cu!(cuDevicePrimaryCtxRetain(&mut ctx, device))?;
    PRIMARY[d].store(ctx as usize, Ordering::Release);
    Ok(ctx)
}

fn driver_current() -> Res<CUcontext> {
    let mut c = null_mut();
    cu!(cuCtxGetCurrent(&mut c))?;
    Ok(c)
}

/// The context this thread's calls run in: the current one, else the current device's
/// primary context, made current.
pub(crate) fn current() -> Res<CUcontext> {
    let c = driver_current()?;
    if !c.is_null() {
        return Ok(c);
    }
    let device = DEVICE.get();
    let p = primary(device)?;
    cu!(cuCtxSetCurrent(p))?;
    BOUND.set((p as usize, device));
    Ok(p)
}

/// The device of `c`, the current context.
fn device_of(c: CUcontext) -> Res<i32> {
    let (bc, bd) = BOUND.get();
    if bc == c as usize {
        return Ok(bd);
    }
    let mut d = 0;
    cu!(cuCtxGetDevice(&mut d))?;
    BOUND.set((c as usize, d));
    Ok(d)
}

/// [`current`] and its device.
pub(crate) fn current_and_device() -> Res<(CUcontext, i32)> {
    let c = current()?;
    Ok((c, device_of(c)?))
}

/// The device of the current context, or the thread's device when none is current
/// (`cudaGetDevice` creates no context).
pub(crate) fn current_device() -> Res<i32> {
    let c = driver_current()?;
    if c.is_null() { Ok(DEVICE.get()) } else { device_of(c) }
}

/// What a launch may ask of a device.
pub(crate) struct Limits {
    pub threads: u32,
    pub block: [u32; 3],
    pub grid: [u32; 3],
}

static LIMITS: [OnceLock<Limits>; MAX_DEVICES] = [const { OnceLock::new() }; MAX_DEVICES];

/// The launch limits of `device` (queried once; an unanswered query does not limit).
pub(crate) fn limits(device: i32) -> Res<&'static Limits> {
    use abi::cuda::CUdevice_attribute as A;
    let d = check_device(device)?;
    Ok(LIMITS[d].get_or_init(|| {
        let get = |a: A| {
            let mut v = 0;
            cu!(cuDeviceGetAttribute(&mut v, a, device)).ok().and_then(|()| u32::try_from(v).ok()).unwrap_or(u32::MAX)
        };
        Limits {
            threads: get(A::CU_DEVICE_ATTRIBUTE_MAX_THREADS_PER_BLOCK),
            block: [
                get(A::CU_DEVICE_ATTRIBUTE_MAX_BLOCK_DIM_X),
                get(A::CU_DEVICE_ATTRIBUTE_MAX_BLOCK_DIM_Y),
                get(A::CU_DEVICE_ATTRIBUTE_MAX_BLOCK_DIM_Z),
            ],
            grid: [
                get(A::CU_DEVICE_ATTRIBUTE_MAX_GRID_DIM_X),
                get(A::CU_DEVICE_ATTRIBUTE_MAX_GRID_DIM_Y),
                get(A::CU_DEVICE_ATTRIBUTE_MAX_GRID_DIM_Z),
            ],
        }
    }))
}

/// `cudaSetDevice`: the thread's device, with its primary context made current.
pub(crate) fn set_device(device: i32) -> Res {
    let p = primary(device)?;
    DEVICE.set(device);
    if driver_current()? != p {
        cu!(cuCtxSetCurrent(p))?;
    }
    BOUND.set((p as usize, device));
    Ok(())
}

/// `cudaDeviceReset`: destroy the current device's primary context and everything in it.
/// The next call that needs a context retains it afresh.
pub(crate) fn reset_current_device() -> Res {
    let device = current_device()?;
    let d = check_device(device)?;
    let _g = RETAIN.lock();
    let p = PRIMARY[d].swap(0, Ordering::AcqRel);
    if p != 0 {
        super::registry::forget_context(p);
    }
    cu!(cuDevicePrimaryCtxReset_v2(device))?;
    if p != 0 {
        // Our retain goes with it; the release of a reset context is harmless.
        let _ = cu!(cuDevicePrimaryCtxRelease_v2(device));
        if driver_current()? as usize == p {
            cu!(cuCtxSetCurrent(null_mut()))?;
        }
    }
    BOUND.set((0, -1));
    Ok(())
}
