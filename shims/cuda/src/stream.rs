//! Streams and events. Handles are the server's (tagged with their server, see `route`);
//! records and waits are one-way. Work on a stream goes to the stream's server, whatever
//! context is current.

use crate::memory::sid;
use crate::route;
use crate::state::{R, call, entry, put};
use abi::cuda::*;
use protocol::ops;
use std::os::raw::{c_int, c_uint};

fn handle<T>(h: u64) -> *mut T {
    h as usize as *mut T
}

/// Make an object in the current context: its handle, tagged, and remembered with it.
fn made(c: &impl protocol::Call<Ret = u64>) -> Result<u64, R> {
    let t = route::here();
    let h = route::tag(t.server, route::call(t, c)?)?;
    route::remember(h, t.ctx);
    Ok(h)
}

/// A call on stream `s`, at its server, with the server's value of the stream.
fn on_stream<C: protocol::Call>(s: CUstream, f: impl FnOnce(u64) -> C) -> Result<C::Ret, R> {
    let s = sid(s);
    route::call(route::stream(s)?, &f(route::raw(s)))
}

/// A call on event `e`, at its server.
fn on_event<C: protocol::Call>(e: CUevent, f: impl FnOnce(u64) -> C) -> Result<C::Ret, R> {
    let e = e as u64;
    route::call(route::of(e)?, &f(route::raw(e)))
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuStreamCreate(s: *mut CUstream, flags: c_uint) -> R {
    entry(|| unsafe { put(s, handle(made(&ops::cuStreamCreate { flags })?)) })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuStreamCreateWithPriority(s: *mut CUstream, flags: c_uint, priority: c_int) -> R {
    entry(|| unsafe { put(s, handle(made(&ops::cuStreamCreateWithPriority { flags, priority })?)) })
}

#[unsafe(no_mangle)]
pub extern "C" fn cuStreamDestroy_v2(s: CUstream) -> R {
    entry(|| {
        on_stream(s, |stream| ops::cuStreamDestroy_v2 { stream })?;
        route::forget(sid(s));
        Ok(())
    })
}

#[unsafe(no_mangle)]
pub extern "C" fn cuStreamDestroy(s: CUstream) -> R {
    cuStreamDestroy_v2(s)
}

#[unsafe(no_mangle)]
pub extern "C" fn cuStreamSynchronize(s: CUstream) -> R {
    entry(|| on_stream(s, |stream| ops::cuStreamSynchronize { stream }))
}

#[unsafe(no_mangle)]
pub extern "C" fn cuStreamQuery(s: CUstream) -> R {
    entry(|| on_stream(s, |stream| ops::cuStreamQuery { stream }))
}

#[unsafe(no_mangle)]
pub extern "C" fn cuStreamWaitEvent(s: CUstream, e: CUevent, flags: c_uint) -> R {
    entry(|| {
        let (st, et) = (route::stream(sid(s))?, route::of(e as u64)?);
        if st.server == et.server {
            return route::call(
                st,
                &ops::cuStreamWaitEvent { stream: route::raw(sid(s)), event: route::raw(e as u64), flags },
            );
        }
        // An event of another server: this thread waits for it, so whatever is queued on
        // the stream from now on runs after it.
        route::call(et, &ops::cuEventSynchronize { event: route::raw(e as u64) })
    })
}

#[unsafe(no_mangle)]
pub extern "C" fn cuStreamBeginCapture_v2(s: CUstream, mode: CUstreamCaptureMode) -> R {
    entry(|| {
        on_stream(s, |stream| ops::cuStreamBeginCapture_v2 { stream, mode: mode.0 })?;
        route::CAPTURES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(())
    })
}

#[unsafe(no_mangle)]
pub extern "C" fn cuStreamBeginCapture(s: CUstream, mode: CUstreamCaptureMode) -> R {
    cuStreamBeginCapture_v2(s, mode)
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuStreamEndCapture(s: CUstream, g: *mut CUgraph) -> R {
    entry(|| {
        let t = route::stream(sid(s))?;
        let ended = route::call(t, &ops::cuStreamEndCapture { stream: route::raw(sid(s)) });
        // Ended either way, unless the stream was not capturing.
        if !matches!(ended, Err(CUresult::CUDA_ERROR_ILLEGAL_STATE)) {
            let _ = route::CAPTURES.fetch_update(
                std::sync::atomic::Ordering::Relaxed,
                std::sync::atomic::Ordering::Relaxed,
                |n| n.checked_sub(1),
            );
        }
        let graph = route::tag(t.server, ended?)?;
        route::remember(graph, t.ctx);
        // Best effort: the graph exists now and is the application's whatever the answer;
        // without it, its copies keep the bytes they had at capture.
        let _ = crate::graph::captured(t, graph);
        unsafe { put(g, handle(graph)) }
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuStreamIsCapturing(s: CUstream, status: *mut CUstreamCaptureStatus) -> R {
    entry(|| unsafe { put(status, CUstreamCaptureStatus(on_stream(s, |stream| ops::cuStreamIsCapturing { stream })?)) })
}

/// Capture status and id; the graph and its dependency list stay on the server.
fn capture_info(s: CUstream, status: *mut CUstreamCaptureStatus, id: *mut cuuint64_t, rest: &[*mut usize]) -> R {
    entry(|| {
        let (st, i) = on_stream(s, |stream| ops::cuStreamGetCaptureInfo { stream })?;
        unsafe { put(status, CUstreamCaptureStatus(st))? };
        if !id.is_null() {
            unsafe { *id = i };
        }
        for &p in rest {
            if !p.is_null() {
                unsafe { *p = 0 };
            }
        }
        Ok(())
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuStreamGetCaptureInfo(
    s: CUstream,
    status: *mut CUstreamCaptureStatus,
    id: *mut cuuint64_t,
) -> R {
    capture_info(s, status, id, &[])
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuStreamGetCaptureInfo_v2(
    s: CUstream,
    status: *mut CUstreamCaptureStatus,
    id: *mut cuuint64_t,
    graph: *mut CUgraph,
    deps: *mut *const CUgraphNode,
    ndeps: *mut usize,
) -> R {
    capture_info(s, status, id, &[graph.cast(), deps.cast(), ndeps])
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuStreamGetCaptureInfo_v3(
    s: CUstream,
    status: *mut CUstreamCaptureStatus,
    id: *mut cuuint64_t,
    graph: *mut CUgraph,
    deps: *mut *const CUgraphNode,
    edges: *mut *const CUgraphEdgeData,
    ndeps: *mut usize,
) -> R {
    capture_info(s, status, id, &[graph.cast(), deps.cast(), edges.cast(), ndeps])
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuStreamGetPriority(s: CUstream, p: *mut c_int) -> R {
    entry(|| unsafe { put(p, on_stream(s, |stream| ops::cuStreamGetPriority { stream })?) })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuStreamGetFlags(s: CUstream, f: *mut c_uint) -> R {
    entry(|| unsafe { put(f, on_stream(s, |stream| ops::cuStreamGetFlags { stream })?) })
}

/// The context stream `s` belongs to: a created stream's own, the special streams' the
/// calling thread's.
fn context_id(s: CUstream) -> Result<u64, R> {
    let s = sid(s);
    let ctx = if route::special(s) {
        crate::state::current()
    } else {
        route::owner(s).ok_or(CUresult::CUDA_ERROR_INVALID_HANDLE)?
    };
    if ctx == 0 {
        return Err(CUresult::CUDA_ERROR_INVALID_CONTEXT);
    }
    Ok(ctx)
}

fn context_of(s: CUstream) -> Result<CUcontext, R> {
    context_id(s).map(crate::state::ctx_ptr)
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuStreamGetCtx(s: CUstream, ctx: *mut CUcontext) -> R {
    entry(|| unsafe { put(ctx, context_of(s)?) })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuStreamGetDevice(s: CUstream, dev: *mut CUdevice) -> R {
    entry(|| {
        let info = crate::state::ctx_info(context_id(s)?).ok_or(CUresult::CUDA_ERROR_INVALID_CONTEXT)?;
        unsafe { put(dev, info.device) }
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuStreamGetId(s: CUstream, id: *mut u64) -> R {
    entry(|| unsafe { put(id, on_stream(s, |stream| ops::cuStreamGetId { stream })?) })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuStreamGetAttribute(s: CUstream, attr: CUstreamAttrID, out: *mut CUstreamAttrValue) -> R {
    entry(|| {
        if out.is_null() {
            return Err(CUresult::CUDA_ERROR_INVALID_VALUE);
        }
        let v = on_stream(s, |stream| ops::stream_attribute { stream, attr: attr.0 })?;
        let n = v.len().min(size_of::<CUstreamAttrValue>());
        // SAFETY: the caller's value, as large as the union.
        unsafe { std::ptr::copy_nonoverlapping(v.as_ptr(), out.cast::<u8>(), n) };
        Ok(())
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuStreamSetAttribute(s: CUstream, attr: CUstreamAttrID, value: *const CUstreamAttrValue) -> R {
    entry(|| {
        if value.is_null() {
            return Err(CUresult::CUDA_ERROR_INVALID_VALUE);
        }
        // SAFETY: the caller's value, as large as the union.
        let a =
            crate::launch::attr_bytes(&CUlaunchAttribute { id: attr, value: unsafe { *value }, ..Default::default() });
        on_stream(s, |stream| ops::cuStreamSetAttribute { stream, attr: a })
    })
}

#[unsafe(no_mangle)]
pub extern "C" fn cuStreamCopyAttributes(dst: CUstream, src: CUstream) -> R {
    entry(|| {
        let (d, s) = (sid(dst), sid(src));
        let t = route::stream(d)?;
        if route::stream(s)?.server != t.server {
            return Err(CUresult::CUDA_ERROR_INVALID_HANDLE);
        }
        route::call(t, &ops::cuStreamCopyAttributes { dst: route::raw(d), src: route::raw(s) })
    })
}

/// No stream here belongs to a green context.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuStreamGetCtx_v2(s: CUstream, ctx: *mut CUcontext, green: *mut CUgreenCtx) -> R {
    entry(|| {
        unsafe { put(ctx, context_of(s)?)? };
        if !green.is_null() {
            unsafe { *green = std::ptr::null_mut() };
        }
        Ok(())
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuThreadExchangeStreamCaptureMode(mode: *mut CUstreamCaptureMode) -> R {
    entry(|| {
        let m = unsafe { mode.as_mut() }.ok_or(CUresult::CUDA_ERROR_INVALID_VALUE)?;
        m.0 = call(&ops::cuThreadExchangeStreamCaptureMode { mode: m.0 })?;
        Ok(())
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuEventCreate(e: *mut CUevent, flags: c_uint) -> R {
    entry(|| unsafe { put(e, handle(made(&ops::cuEventCreate { flags })?)) })
}

#[unsafe(no_mangle)]
pub extern "C" fn cuEventDestroy_v2(e: CUevent) -> R {
    entry(|| {
        on_event(e, |event| ops::cuEventDestroy_v2 { event })?;
        route::forget(e as u64);
        Ok(())
    })
}

#[unsafe(no_mangle)]
pub extern "C" fn cuEventDestroy(e: CUevent) -> R {
    cuEventDestroy_v2(e)
}

#[unsafe(no_mangle)]
pub extern "C" fn cuEventRecord(e: CUevent, s: CUstream) -> R {
    entry(|| {
        let t = route::with_stream(route::of(e as u64)?, sid(s))?;
        route::call(t, &ops::cuEventRecord { event: route::raw(e as u64), stream: route::raw(sid(s)) })
    })
}

#[unsafe(no_mangle)]
pub extern "C" fn cuEventRecordWithFlags(e: CUevent, s: CUstream, flags: c_uint) -> R {
    entry(|| {
        let t = route::with_stream(route::of(e as u64)?, sid(s))?;
        route::call(t, &ops::cuEventRecordWithFlags { event: route::raw(e as u64), stream: route::raw(sid(s)), flags })
    })
}

#[unsafe(no_mangle)]
pub extern "C" fn cuEventSynchronize(e: CUevent) -> R {
    entry(|| on_event(e, |event| ops::cuEventSynchronize { event }))
}

#[unsafe(no_mangle)]
pub extern "C" fn cuEventQuery(e: CUevent) -> R {
    entry(|| on_event(e, |event| ops::cuEventQuery { event }))
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuEventElapsedTime(ms: *mut f32, start: CUevent, end: CUevent) -> R {
    entry(|| {
        let (a, b) = (start as u64, end as u64);
        let t = route::of(a)?;
        if route::server_of(b)? != t.server {
            return Err(CUresult::CUDA_ERROR_INVALID_HANDLE);
        }
        unsafe { put(ms, route::call(t, &ops::cuEventElapsedTime { start: route::raw(a), end: route::raw(b) })?) }
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuEventElapsedTime_v2(ms: *mut f32, start: CUevent, end: CUevent) -> R {
    unsafe { cuEventElapsedTime(ms, start, end) }
}

// ---------------------------------------------------------------- stream memory operations

/// A wait for, or a write of, a word of device memory, ordered in stream `s`.
fn memory_op(s: CUstream, addr: CUdeviceptr, value: u64, flags: c_uint, wide: bool, write: bool) -> R {
    entry(|| {
        let s = sid(s);
        let (t, stream) = (route::stream(s)?, route::raw(s));
        if write {
            route::call(t, &ops::stream_write_value { stream, addr, value, flags, wide })
        } else {
            route::call(t, &ops::stream_wait_value { stream, addr, value, flags, wide })
        }
    })
}

#[unsafe(no_mangle)]
pub extern "C" fn cuStreamWaitValue32_v2(s: CUstream, addr: CUdeviceptr, value: cuuint32_t, flags: c_uint) -> R {
    memory_op(s, addr, value.into(), flags, false, false)
}

#[unsafe(no_mangle)]
pub extern "C" fn cuStreamWaitValue32(s: CUstream, addr: CUdeviceptr, value: cuuint32_t, flags: c_uint) -> R {
    memory_op(s, addr, value.into(), flags, false, false)
}

#[unsafe(no_mangle)]
pub extern "C" fn cuStreamWaitValue64_v2(s: CUstream, addr: CUdeviceptr, value: cuuint64_t, flags: c_uint) -> R {
    memory_op(s, addr, value, flags, true, false)
}

#[unsafe(no_mangle)]
pub extern "C" fn cuStreamWaitValue64(s: CUstream, addr: CUdeviceptr, value: cuuint64_t, flags: c_uint) -> R {
    memory_op(s, addr, value, flags, true, false)
}

#[unsafe(no_mangle)]
pub extern "C" fn cuStreamWriteValue32_v2(s: CUstream, addr: CUdeviceptr, value: cuuint32_t, flags: c_uint) -> R {
    memory_op(s, addr, value.into(), flags, false, true)
}

#[unsafe(no_mangle)]
pub extern "C" fn cuStreamWriteValue32(s: CUstream, addr: CUdeviceptr, value: cuuint32_t, flags: c_uint) -> R {
    memory_op(s, addr, value.into(), flags, false, true)
}

#[unsafe(no_mangle)]
pub extern "C" fn cuStreamWriteValue64_v2(s: CUstream, addr: CUdeviceptr, value: cuuint64_t, flags: c_uint) -> R {
    memory_op(s, addr, value, flags, true, true)
}

#[unsafe(no_mangle)]
pub extern "C" fn cuStreamWriteValue64(s: CUstream, addr: CUdeviceptr, value: cuuint64_t, flags: c_uint) -> R {
    memory_op(s, addr, value, flags, true, true)
}

// ---------------------------------------------------------------- host functions

/// A host function in stream `s`: kept by the session for the stream's server, which runs
/// it in stream order (`client::host_funcs`); the launch is one-way, as natively.
fn host_func(s: CUstream, callback: bool, f: client::host_funcs::Func) -> R {
    entry(|| {
        let sid = sid(s);
        let t = route::stream(sid)?;
        let session = crate::state::session()?;
        let id = session.host_func(t.server, f).map_err(|e| {
            shim_support::log_once!("host-funcs", "vgpu: host functions on streams are not available: {e}");
            CUresult::CUDA_ERROR_NOT_SUPPORTED
        })?;
        let launched = route::call(t, &ops::launch_host_func { stream: route::raw(sid), id, callback });
        if launched.is_err() {
            session.drop_host_func(id);
        }
        launched
    })
}

#[unsafe(no_mangle)]
pub extern "C" fn cuLaunchHostFunc(s: CUstream, f: CUhostFn, data: *mut std::ffi::c_void) -> R {
    let Some(f) = f else { return CUresult::CUDA_ERROR_INVALID_VALUE };
    let data = data as usize;
    // SAFETY: the application's function with its argument, called as the driver would.
    host_func(s, false, std::sync::Arc::new(move |_| unsafe { f(data as *mut std::ffi::c_void) }))
}

#[unsafe(no_mangle)]
pub extern "C" fn cuStreamAddCallback(
    s: CUstream,
    f: CUstreamCallback,
    data: *mut std::ffi::c_void,
    flags: c_uint,
) -> R {
    let Some(f) = f else { return CUresult::CUDA_ERROR_INVALID_VALUE };
    if flags != 0 {
        return CUresult::CUDA_ERROR_INVALID_VALUE;
    }
    let (stream, data) = (s as usize, data as usize);
    // SAFETY: the application's callback, given its own stream handle, as the driver would.
    host_func(
        s,
        true,
        std::sync::Arc::new(move |status| unsafe {
            f(stream as CUstream, CUresult(status), data as *mut std::ffi::c_void)
        }),
    )
}
