//! Inter-process sharing (`cuIpc*`): memory and events one process exports and another
//! opens, as PyTorch's `torch.multiprocessing` and Triton's Python backend pass tensors.
//! Both processes must use the same server, whose sessions' workers are processes of one
//! host: the driver's handles pass between them unchanged. (Across servers the open fails
//! as the driver fails it for another host's handle.)

use crate::module::adopt;
use crate::route;
use crate::state::{self, R, entry, put};
use abi::cuda::*;
use protocol::ops;
use std::os::raw::{c_char, c_uint};

/// The driver's 64 handle bytes, from the server's answer.
fn reserved(bytes: &[u8]) -> Result<[c_char; 64], R> {
    protocol::ipc_reserved(bytes).ok_or(CUresult::CUDA_ERROR_INVALID_VALUE)
}

/// An event shared with another process may be recorded by it: vgpu's local answers about
/// events (`client::idle`) leave it alone.
fn shared(server: usize, raw: u64) {
    if let Ok(s) = state::session() {
        s.share_event(server, raw);
    }
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuIpcGetMemHandle(handle: *mut CUipcMemHandle, dptr: CUdeviceptr) -> R {
    entry(|| {
        let b = route::call(route::ptr(dptr), &ops::cuIpcGetMemHandle { dptr })?;
        unsafe { put(handle, CUipcMemHandle { reserved: reserved(&b)? }) }
    })
}

/// Opened in the current context; the allocation's range is this process's from then on.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuIpcOpenMemHandle_v2(pdptr: *mut CUdeviceptr, handle: CUipcMemHandle, flags: c_uint) -> R {
    entry(|| {
        if pdptr.is_null() {
            return Err(CUresult::CUDA_ERROR_INVALID_VALUE);
        }
        let t = route::here();
        let (p, size) =
            route::call(t, &ops::cuIpcOpenMemHandle_v2 { handle: protocol::ipc_bytes(&handle.reserved), flags })?;
        route::add_device_range(p, size, t.ctx);
        unsafe { put(pdptr, p) }
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuIpcOpenMemHandle(pdptr: *mut CUdeviceptr, handle: CUipcMemHandle, flags: c_uint) -> R {
    unsafe { cuIpcOpenMemHandle_v2(pdptr, handle, flags) }
}

#[unsafe(no_mangle)]
pub extern "C" fn cuIpcCloseMemHandle(dptr: CUdeviceptr) -> R {
    entry(|| {
        route::call(route::ptr(dptr), &ops::cuIpcCloseMemHandle { dptr })?;
        state::remove_range(dptr);
        Ok(())
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuIpcGetEventHandle(handle: *mut CUipcEventHandle, event: CUevent) -> R {
    entry(|| {
        let e = event as u64;
        let t = route::of(e)?;
        let b = route::call(t, &ops::cuIpcGetEventHandle { event: route::raw(e) })?;
        shared(t.server, route::raw(e));
        unsafe { put(handle, CUipcEventHandle { reserved: reserved(&b)? }) }
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuIpcOpenEventHandle(event: *mut CUevent, handle: CUipcEventHandle) -> R {
    entry(|| {
        if event.is_null() {
            return Err(CUresult::CUDA_ERROR_INVALID_VALUE);
        }
        let t = route::here();
        let raw = route::call(t, &ops::cuIpcOpenEventHandle { handle: protocol::ipc_bytes(&handle.reserved) })?;
        shared(t.server, raw);
        unsafe { put(event, adopt(t, raw)? as usize as CUevent) }
    })
}
