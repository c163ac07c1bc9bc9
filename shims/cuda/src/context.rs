//! Contexts. The server owns them; which one is current is per thread and local, and rides
//! along in every frame's header.

use crate::route;
use crate::state::{self, CtxInfo, R, call, call_on, ctx_info, ctx_ptr, entry, put};
use abi::cuda::{CUcontext, CUdevice, CUresult};
use protocol::ops;
use std::os::raw::{c_int, c_uint};

/// The next context's id; the driver numbers its first context 1.
fn next_id() -> u64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

/// Records a context; one already known (a primary context retained again) keeps its id.
fn remember(ctx: u64, device: CUdevice, server: usize, flags: u32) {
    let mut all = state::tables().contexts.write();
    let id = all.get(&ctx).map_or_else(next_id, |i| i.id);
    all.insert(ctx, CtxInfo { device, server, flags, id });
}

/// Each device's primary context as handed out, so that a reset can tell the runtime's
/// context-local storage (`export_table`) which context went.
fn primaries() -> &'static parking_lot::Mutex<std::collections::HashMap<CUdevice, u64>> {
    static P: std::sync::OnceLock<parking_lot::Mutex<std::collections::HashMap<CUdevice, u64>>> =
        std::sync::OnceLock::new();
    P.get_or_init(Default::default)
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuDevicePrimaryCtxRetain(pctx: *mut CUcontext, dev: CUdevice) -> R {
    entry(|| {
        let d = state::device(dev)?;
        let raw = call_on(d, &ops::cuDevicePrimaryCtxRetain { dev: d.cuda_ordinal as i32 })?;
        let ctx = route::tag(d.server as usize, raw)?;
        remember(ctx, dev, d.server as usize, 0);
        primaries().lock().insert(dev, ctx);
        unsafe { put(pctx, ctx_ptr(ctx)) }
    })
}

fn primary_call(dev: CUdevice, f: impl FnOnce(i32) -> Result<(), R>) -> R {
    entry(|| {
        let d = state::device(dev)?;
        f(d.cuda_ordinal as i32)
    })
}

#[unsafe(no_mangle)]
pub extern "C" fn cuDevicePrimaryCtxRelease_v2(dev: CUdevice) -> R {
    primary_call(dev, |o| call_on(state::device(dev)?, &ops::cuDevicePrimaryCtxRelease_v2 { dev: o }))
}

#[unsafe(no_mangle)]
pub extern "C" fn cuDevicePrimaryCtxRelease(dev: CUdevice) -> R {
    cuDevicePrimaryCtxRelease_v2(dev)
}

#[unsafe(no_mangle)]
pub extern "C" fn cuDevicePrimaryCtxReset_v2(dev: CUdevice) -> R {
    primary_call(dev, |o| {
        call_on(state::device(dev)?, &ops::cuDevicePrimaryCtxReset_v2 { dev: o })?;
        if let Some(ctx) = primaries().lock().get(&dev).copied() {
            // The next retain makes a new primary context, with an id of its own.
            if let Some(i) = state::tables().contexts.write().get_mut(&ctx) {
                i.id = next_id();
            }
            crate::export_table::context_gone(ctx_ptr(ctx));
        }
        Ok(())
    })
}

#[unsafe(no_mangle)]
pub extern "C" fn cuDevicePrimaryCtxReset(dev: CUdevice) -> R {
    cuDevicePrimaryCtxReset_v2(dev)
}

#[unsafe(no_mangle)]
pub extern "C" fn cuDevicePrimaryCtxSetFlags_v2(dev: CUdevice, flags: c_uint) -> R {
    primary_call(dev, |o| call_on(state::device(dev)?, &ops::cuDevicePrimaryCtxSetFlags_v2 { dev: o, flags }))
}

#[unsafe(no_mangle)]
pub extern "C" fn cuDevicePrimaryCtxSetFlags(dev: CUdevice, flags: c_uint) -> R {
    cuDevicePrimaryCtxSetFlags_v2(dev, flags)
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuDevicePrimaryCtxGetState(dev: CUdevice, flags: *mut c_uint, active: *mut c_int) -> R {
    entry(|| {
        let d = state::device(dev)?;
        let (f, a) = call_on(d, &ops::cuDevicePrimaryCtxGetState { dev: d.cuda_ordinal as i32 })?;
        unsafe {
            put(flags, f)?;
            put(active, a)
        }
    })
}

fn create(pctx: *mut CUcontext, flags: c_uint, dev: CUdevice) -> R {
    entry(|| {
        let d = state::device(dev)?;
        let raw = call_on(d, &ops::cuCtxCreate_v2 { flags, dev: d.cuda_ordinal as i32 })?;
        let ctx = route::tag(d.server as usize, raw)?;
        remember(ctx, dev, d.server as usize, flags);
        // A new context becomes current, as with the real driver.
        state::push(ctx);
        unsafe { put(pctx, ctx_ptr(ctx)) }
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuCtxCreate_v2(pctx: *mut CUcontext, flags: c_uint, dev: CUdevice) -> R {
    create(pctx, flags, dev)
}

/// CUDA 12.x form with execution-affinity parameters, which a remote context ignores.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuCtxCreate_v3(
    pctx: *mut CUcontext,
    _params: *mut std::ffi::c_void,
    _n: c_int,
    flags: c_uint,
    dev: CUdevice,
) -> R {
    create(pctx, flags, dev)
}

/// CUDA 13 form (`CUctxCreateParams`); the parameters are not forwarded.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuCtxCreate_v4(
    pctx: *mut CUcontext,
    params: *mut std::ffi::c_void,
    flags: c_uint,
    dev: CUdevice,
) -> R {
    if !params.is_null() {
        shim_support::unsupported("cuCtxCreate_v4 with CUctxCreateParams");
    }
    create(pctx, flags, dev)
}

#[unsafe(no_mangle)]
pub extern "C" fn cuCtxDestroy_v2(ctx: CUcontext) -> R {
    entry(|| {
        let c = ctx as u64;
        let info = ctx_info(c).ok_or(CUresult::CUDA_ERROR_INVALID_CONTEXT)?;
        let s = state::session()?;
        s.call(info.server, 0, &ops::cuCtxDestroy_v2 { ctx: route::raw(c) }, &[], None).map_err(state::err)?;
        state::tables().contexts.write().remove(&c);
        if state::current() == c {
            state::pop();
        }
        crate::export_table::context_gone(ctx);
        Ok(())
    })
}

#[unsafe(no_mangle)]
pub extern "C" fn cuCtxDestroy(ctx: CUcontext) -> R {
    cuCtxDestroy_v2(ctx)
}

fn known(ctx: CUcontext) -> Result<u64, R> {
    let c = ctx as u64;
    if c != 0 && ctx_info(c).is_none() {
        return Err(CUresult::CUDA_ERROR_INVALID_CONTEXT);
    }
    Ok(c)
}

#[unsafe(no_mangle)]
pub extern "C" fn cuCtxSetCurrent(ctx: CUcontext) -> R {
    entry(|| {
        state::session()?;
        state::set_current(known(ctx)?);
        Ok(())
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuCtxGetCurrent(pctx: *mut CUcontext) -> R {
    entry(|| {
        state::session()?;
        unsafe { put(pctx, ctx_ptr(state::current())) }
    })
}

#[unsafe(no_mangle)]
pub extern "C" fn cuCtxPushCurrent_v2(ctx: CUcontext) -> R {
    entry(|| {
        state::session()?;
        let c = known(ctx)?;
        if c == 0 {
            return Err(CUresult::CUDA_ERROR_INVALID_CONTEXT);
        }
        state::push(c);
        Ok(())
    })
}

#[unsafe(no_mangle)]
pub extern "C" fn cuCtxPushCurrent(ctx: CUcontext) -> R {
    cuCtxPushCurrent_v2(ctx)
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuCtxPopCurrent_v2(pctx: *mut CUcontext) -> R {
    entry(|| {
        state::session()?;
        let c = state::pop().ok_or(CUresult::CUDA_ERROR_INVALID_CONTEXT)?;
        if !pctx.is_null() {
            unsafe { *pctx = ctx_ptr(c) };
        }
        Ok(())
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuCtxPopCurrent(pctx: *mut CUcontext) -> R {
    unsafe { cuCtxPopCurrent_v2(pctx) }
}

fn current_info() -> Result<CtxInfo, R> {
    state::session()?;
    ctx_info(state::current()).ok_or(CUresult::CUDA_ERROR_INVALID_CONTEXT)
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuCtxGetDevice(dev: *mut CUdevice) -> R {
    entry(|| unsafe { put(dev, current_info()?.device) })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuCtxGetDevice_v2(dev: *mut CUdevice, ctx: CUcontext) -> R {
    entry(|| {
        let c = if ctx.is_null() { state::current() } else { ctx as u64 };
        let info = ctx_info(c).ok_or(CUresult::CUDA_ERROR_INVALID_CONTEXT)?;
        unsafe { put(dev, info.device) }
    })
}

/// The context's number: PyTorch and CuPy ask for it to tell contexts apart.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuCtxGetId(ctx: CUcontext, id: *mut u64) -> R {
    entry(|| unsafe { put(id, id_of(ctx)?) })
}

/// The id of `ctx`, or of the current context where `ctx` is NULL.
pub fn id_of(ctx: CUcontext) -> Result<u64, R> {
    let c = if ctx.is_null() { state::current() } else { ctx as u64 };
    Ok(ctx_info(c).ok_or(CUresult::CUDA_ERROR_INVALID_CONTEXT)?.id)
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuCtxGetFlags(flags: *mut c_uint) -> R {
    entry(|| unsafe { put(flags, current_info()?.flags) })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuCtxGetApiVersion(ctx: CUcontext, version: *mut c_uint) -> R {
    entry(|| {
        let c = if ctx.is_null() { state::current() } else { ctx as u64 };
        ctx_info(c).ok_or(CUresult::CUDA_ERROR_INVALID_CONTEXT)?;
        // The value every context created by a CUDA >= 3.2 driver reports.
        unsafe { put(version, 3020) }
    })
}

#[unsafe(no_mangle)]
pub extern "C" fn cuCtxSynchronize() -> R {
    entry(|| {
        current_info()?;
        call(&ops::cuCtxSynchronize {})
    })
}

#[unsafe(no_mangle)]
pub extern "C" fn cuCtxSetLimit(limit: u32, value: usize) -> R {
    entry(|| call(&ops::cuCtxSetLimit { limit, value: value as u64 }))
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuCtxGetLimit(value: *mut usize, limit: u32) -> R {
    entry(|| unsafe { put(value, call(&ops::cuCtxGetLimit { limit })? as usize) })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuCtxGetStreamPriorityRange(least: *mut c_int, greatest: *mut c_int) -> R {
    entry(|| {
        let (l, g) = call(&ops::cuCtxGetStreamPriorityRange {})?;
        if !least.is_null() {
            unsafe { *least = l };
        }
        if !greatest.is_null() {
            unsafe { *greatest = g };
        }
        Ok(())
    })
}

#[unsafe(no_mangle)]
pub extern "C" fn cuCtxEnablePeerAccess(peer: CUcontext, flags: c_uint) -> R {
    entry(|| {
        let p = peer as u64;
        let (me, them) = (current_info()?, ctx_info(p).ok_or(CUresult::CUDA_ERROR_INVALID_CONTEXT)?);
        if me.server != them.server {
            return Err(CUresult::CUDA_ERROR_PEER_ACCESS_UNSUPPORTED);
        }
        call(&ops::cuCtxEnablePeerAccess { peer: route::raw(p), flags })
    })
}

#[unsafe(no_mangle)]
pub extern "C" fn cuCtxDisablePeerAccess(peer: CUcontext) -> R {
    entry(|| {
        let p = peer as u64;
        let (me, them) = (current_info()?, ctx_info(p).ok_or(CUresult::CUDA_ERROR_INVALID_CONTEXT)?);
        if me.server != them.server {
            return Err(CUresult::CUDA_ERROR_PEER_ACCESS_NOT_ENABLED);
        }
        call(&ops::cuCtxDisablePeerAccess { peer: route::raw(p) })
    })
}
