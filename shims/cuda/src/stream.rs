//! Streams and events. Handles are the server's; records and waits are one-way.

use crate::memory::sid;
use crate::state::{call, entry, put, R};
use abi::cuda::*;
use protocol::ops;
use std::os::raw::{c_int, c_uint};

fn handle<T>(h: u64) -> *mut T {
    h as usize as *mut T
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuStreamCreate(s: *mut CUstream, flags: c_uint) -> R {
    entry(|| unsafe { put(s, handle(call(&ops::cuStreamCreate { flags })?)) })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuStreamCreateWithPriority(s: *mut CUstream, flags: c_uint, priority: c_int) -> R {
    entry(|| unsafe { put(s, handle(call(&ops::cuStreamCreateWithPriority { flags, priority })?)) })
}

#[unsafe(no_mangle)]
pub extern "C" fn cuStreamDestroy_v2(s: CUstream) -> R {
    entry(|| call(&ops::cuStreamDestroy_v2 { stream: sid(s) }))
}

#[unsafe(no_mangle)]
pub extern "C" fn cuStreamDestroy(s: CUstream) -> R {
    cuStreamDestroy_v2(s)
}

#[unsafe(no_mangle)]
pub extern "C" fn cuStreamSynchronize(s: CUstream) -> R {
    entry(|| call(&ops::cuStreamSynchronize { stream: sid(s) }))
}

#[unsafe(no_mangle)]
pub extern "C" fn cuStreamQuery(s: CUstream) -> R {
    entry(|| call(&ops::cuStreamQuery { stream: sid(s) }))
}

#[unsafe(no_mangle)]
pub extern "C" fn cuStreamWaitEvent(s: CUstream, e: CUevent, flags: c_uint) -> R {
    entry(|| call(&ops::cuStreamWaitEvent { stream: sid(s), event: e as u64, flags }))
}

#[unsafe(no_mangle)]
pub extern "C" fn cuStreamBeginCapture_v2(s: CUstream, mode: CUstreamCaptureMode) -> R {
    entry(|| call(&ops::cuStreamBeginCapture_v2 { stream: sid(s), mode: mode.0 }))
}

#[unsafe(no_mangle)]
pub extern "C" fn cuStreamBeginCapture(s: CUstream, mode: CUstreamCaptureMode) -> R {
    cuStreamBeginCapture_v2(s, mode)
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuStreamEndCapture(s: CUstream, g: *mut CUgraph) -> R {
    entry(|| unsafe { put(g, handle(call(&ops::cuStreamEndCapture { stream: sid(s) })?)) })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuStreamIsCapturing(s: CUstream, status: *mut CUstreamCaptureStatus) -> R {
    entry(|| unsafe { put(status, CUstreamCaptureStatus(call(&ops::cuStreamIsCapturing { stream: sid(s) })?)) })
}

/// Capture status and id; the graph and its dependency list stay on the server.
fn capture_info(s: CUstream, status: *mut CUstreamCaptureStatus, id: *mut cuuint64_t, rest: &[*mut usize]) -> R {
    entry(|| {
        let (st, i) = call(&ops::cuStreamGetCaptureInfo { stream: sid(s) })?;
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
pub unsafe extern "C" fn cuStreamGetCaptureInfo(s: CUstream, status: *mut CUstreamCaptureStatus, id: *mut cuuint64_t) -> R {
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
    entry(|| unsafe { put(p, call(&ops::cuStreamGetPriority { stream: sid(s) })?) })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuStreamGetFlags(s: CUstream, f: *mut c_uint) -> R {
    entry(|| unsafe { put(f, call(&ops::cuStreamGetFlags { stream: sid(s) })?) })
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
    entry(|| unsafe { put(e, handle(call(&ops::cuEventCreate { flags })?)) })
}

#[unsafe(no_mangle)]
pub extern "C" fn cuEventDestroy_v2(e: CUevent) -> R {
    entry(|| call(&ops::cuEventDestroy_v2 { event: e as u64 }))
}

#[unsafe(no_mangle)]
pub extern "C" fn cuEventDestroy(e: CUevent) -> R {
    cuEventDestroy_v2(e)
}

#[unsafe(no_mangle)]
pub extern "C" fn cuEventRecord(e: CUevent, s: CUstream) -> R {
    entry(|| call(&ops::cuEventRecord { event: e as u64, stream: sid(s) }))
}

#[unsafe(no_mangle)]
pub extern "C" fn cuEventRecordWithFlags(e: CUevent, s: CUstream, flags: c_uint) -> R {
    entry(|| call(&ops::cuEventRecordWithFlags { event: e as u64, stream: sid(s), flags }))
}

#[unsafe(no_mangle)]
pub extern "C" fn cuEventSynchronize(e: CUevent) -> R {
    entry(|| call(&ops::cuEventSynchronize { event: e as u64 }))
}

#[unsafe(no_mangle)]
pub extern "C" fn cuEventQuery(e: CUevent) -> R {
    entry(|| call(&ops::cuEventQuery { event: e as u64 }))
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuEventElapsedTime(ms: *mut f32, start: CUevent, end: CUevent) -> R {
    entry(|| unsafe { put(ms, call(&ops::cuEventElapsedTime { start: start as u64, end: end as u64 })?) })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuEventElapsedTime_v2(ms: *mut f32, start: CUevent, end: CUevent) -> R {
    unsafe { cuEventElapsedTime(ms, start, end) }
}
