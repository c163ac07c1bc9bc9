//! Handles: created and destroyed on the server (synchronously), and their settings.
//!
//! A `cublasHandle_t` is the server's id for the handle. This side remembers each live
//! handle's settings so that the getters answer locally and the forwarded calls know the
//! pointer mode; the stream, math mode, atomics mode and workspace are also sent to the
//! server (one-way, `ops::cublas_set`), so they apply to later calls in program order.

use super::wire::{self, Error};
use super::{cublasHandle_t, cublasStatus_t, st, status};
use crate::api::{cublasAtomicsMode_t, cublasMath_t, cublasPointerMode_t, cudaStream_t};
use parking_lot::RwLock;
use protocol::cublas::{SET_ATOMICS_MODE, SET_MATH_MODE, SET_STREAM, SET_WORKSPACE, status_from_cuda};
use protocol::ops;
use std::collections::HashMap;
use std::os::raw::c_void;
use std::sync::OnceLock;

/// What this side knows about a live handle.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct State {
    /// Stream id as the application passed it (0: the default stream).
    pub stream: u64,
    /// `CUBLAS_POINTER_MODE_HOST` (0) or `_DEVICE` (1).
    pub pointer_mode: u32,
    pub math_mode: u32,
    pub atomics_mode: u32,
}

/// `CUBLAS_POINTER_MODE_DEVICE`.
pub const POINTER_MODE_DEVICE: u32 = 1;

fn table() -> &'static RwLock<HashMap<u64, State>> {
    static T: OnceLock<RwLock<HashMap<u64, State>>> = OnceLock::new();
    T.get_or_init(Default::default)
}

/// The settings of a live handle.
pub fn get(h: cublasHandle_t) -> Option<State> {
    table().read().get(&(h as u64)).copied()
}

/// Register a handle as `cublasCreate_v2` does (for unit tests, which have no server).
#[cfg(test)]
pub fn register(id: u64, s: State) {
    table().write().insert(id, s);
}

/// Change a live handle's settings; `NOT_INITIALIZED` for an unknown handle.
fn update(h: cublasHandle_t, f: impl FnOnce(&mut State)) -> Result<(), u32> {
    table().write().get_mut(&(h as u64)).map(f).ok_or(status::NOT_INITIALIZED)
}

/// A one-way call on an existing handle: sent, or `EXECUTION_FAILED` for a lost server.
pub fn send_oneway<C: protocol::Call<Ret = ()>>(c: &C) -> u32 {
    match wire::call(c) {
        Ok(()) => status::SUCCESS,
        Err(Error::Cuda(code)) => status_from_cuda(code),
        Err(Error::Lost) => status::EXECUTION_FAILED,
    }
}

fn set(h: cublasHandle_t, what: u32, value: u64, size: u64) -> u32 {
    send_oneway(&ops::cublas_set { handle: h as u64, what, value, size })
}

fn result(r: Result<(), u32>) -> cublasStatus_t {
    st(r.err().unwrap_or(status::SUCCESS))
}

fn guard(f: impl FnOnce() -> Result<(), u32>) -> cublasStatus_t {
    result(shim_support::guard(Err(status::INTERNAL_ERROR), f))
}

/// Make sure the calling thread has a current context, as NVIDIA's cuBLAS (through its
/// runtime) does: the runtime of our major, if loaded, initialises its current device's
/// primary context (`cudaFree(NULL)`); without one, the primary context of device 0.
fn ensure_context() {
    type GetCurrent = unsafe extern "C" fn(*mut *mut c_void) -> u32;
    type Free = unsafe extern "C" fn(*mut c_void) -> u32;
    type Init = unsafe extern "C" fn(u32) -> u32;
    type Retain = unsafe extern "C" fn(*mut *mut c_void, i32) -> u32;
    type SetCurrent = unsafe extern "C" fn(*mut c_void) -> u32;
    // SAFETY: the driver API's signatures; out-pointers are locals.
    unsafe {
        let Some(get_current) = wire::driver_fn::<GetCurrent>(c"cuCtxGetCurrent") else {
            return;
        };
        let current = || {
            let mut c = std::ptr::null_mut();
            get_current(&mut c) == 0 && !c.is_null()
        };
        if current() {
            return;
        }
        let rt = std::ffi::CString::new(crate::CUDART_SONAME).unwrap_or_default();
        if let Some(cuda_free) = wire::loaded_fn::<Free>(&rt, c"cudaFree") {
            cuda_free(std::ptr::null_mut());
            if current() {
                return;
            }
        }
        let (Some(init), Some(retain), Some(set_current)) = (
            wire::driver_fn::<Init>(c"cuInit"),
            wire::driver_fn::<Retain>(c"cuDevicePrimaryCtxRetain"),
            wire::driver_fn::<SetCurrent>(c"cuCtxSetCurrent"),
        ) else {
            return;
        };
        let mut ctx = std::ptr::null_mut();
        if init(0) == 0 && retain(&mut ctx, 0) == 0 {
            set_current(ctx);
        }
    }
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cublasCreate_v2(handle: *mut cublasHandle_t) -> cublasStatus_t {
    if handle.is_null() {
        return st(status::INVALID_VALUE);
    }
    guard(|| {
        if !wire::available() {
            return Err(status::NOT_INITIALIZED);
        }
        ensure_context();
        let (code, id) = match wire::call(&ops::cublasCreate_v2 {}) {
            Ok(v) => v,
            Err(Error::Cuda(code)) => return Err(status_from_cuda(code)),
            Err(Error::Lost) => return Err(status::NOT_INITIALIZED),
        };
        if code != status::SUCCESS {
            return Err(code);
        }
        if id == 0 {
            return Err(status::INTERNAL_ERROR);
        }
        table().write().insert(id, State::default());
        // SAFETY: checked non-null; the caller's out-pointer.
        unsafe { *handle = id as usize as cublasHandle_t };
        Ok(())
    })
}

#[unsafe(no_mangle)]
pub extern "C" fn cublasDestroy_v2(handle: cublasHandle_t) -> cublasStatus_t {
    guard(|| {
        get(handle).ok_or(status::NOT_INITIALIZED)?;
        let r = match wire::call(&ops::cublasDestroy_v2 { handle: handle as u64 }) {
            Ok(code) => code,
            Err(Error::Cuda(code)) => status_from_cuda(code),
            Err(Error::Lost) => status::EXECUTION_FAILED,
        };
        // Whatever the server says, the handle is gone for this process.
        table().write().remove(&(handle as u64));
        if r == status::SUCCESS { Ok(()) } else { Err(r) }
    })
}

#[unsafe(no_mangle)]
pub extern "C" fn cublasSetStream_v2(handle: cublasHandle_t, stream: cudaStream_t) -> cublasStatus_t {
    guard(|| {
        let s = stream as u64;
        update(handle, |st| st.stream = s)?;
        match set(handle, SET_STREAM, s, 0) {
            status::SUCCESS => Ok(()),
            e => Err(e),
        }
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cublasGetStream_v2(handle: cublasHandle_t, stream: *mut cudaStream_t) -> cublasStatus_t {
    guard(|| {
        let s = get(handle).ok_or(status::NOT_INITIALIZED)?;
        if stream.is_null() {
            return Err(status::INVALID_VALUE);
        }
        // SAFETY: checked non-null; the caller's out-pointer.
        unsafe { *stream = s.stream as usize as cudaStream_t };
        Ok(())
    })
}

#[unsafe(no_mangle)]
pub extern "C" fn cublasSetMathMode(handle: cublasHandle_t, mode: cublasMath_t) -> cublasStatus_t {
    guard(|| {
        get(handle).ok_or(status::NOT_INITIALIZED)?;
        // NVIDIA's cuBLAS 13.1 takes any combination of the five mode bits, nothing above.
        if mode.0 >= 32 {
            return Err(status::INVALID_VALUE);
        }
        update(handle, |st| st.math_mode = mode.0)?;
        match set(handle, SET_MATH_MODE, mode.0 as u64, 0) {
            status::SUCCESS => Ok(()),
            e => Err(e),
        }
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cublasGetMathMode(handle: cublasHandle_t, mode: *mut cublasMath_t) -> cublasStatus_t {
    guard(|| {
        let s = get(handle).ok_or(status::NOT_INITIALIZED)?;
        if mode.is_null() {
            return Err(status::INVALID_VALUE);
        }
        // SAFETY: checked non-null; the caller's out-pointer.
        unsafe { *mode = cublasMath_t(s.math_mode) };
        Ok(())
    })
}

/// Local only: every forwarded call says whether its scalars are device pointers.
#[unsafe(no_mangle)]
pub extern "C" fn cublasSetPointerMode_v2(handle: cublasHandle_t, mode: cublasPointerMode_t) -> cublasStatus_t {
    guard(|| {
        get(handle).ok_or(status::NOT_INITIALIZED)?;
        if mode.0 > POINTER_MODE_DEVICE {
            return Err(status::INVALID_VALUE);
        }
        update(handle, |st| st.pointer_mode = mode.0)
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cublasGetPointerMode_v2(
    handle: cublasHandle_t,
    mode: *mut cublasPointerMode_t,
) -> cublasStatus_t {
    guard(|| {
        let s = get(handle).ok_or(status::NOT_INITIALIZED)?;
        if mode.is_null() {
            return Err(status::INVALID_VALUE);
        }
        // SAFETY: checked non-null; the caller's out-pointer.
        unsafe { *mode = cublasPointerMode_t(s.pointer_mode) };
        Ok(())
    })
}

#[unsafe(no_mangle)]
pub extern "C" fn cublasSetAtomicsMode(handle: cublasHandle_t, mode: cublasAtomicsMode_t) -> cublasStatus_t {
    guard(|| {
        get(handle).ok_or(status::NOT_INITIALIZED)?;
        if mode.0 > 1 {
            return Err(status::INVALID_VALUE);
        }
        update(handle, |st| st.atomics_mode = mode.0)?;
        match set(handle, SET_ATOMICS_MODE, mode.0 as u64, 0) {
            status::SUCCESS => Ok(()),
            e => Err(e),
        }
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cublasGetAtomicsMode(
    handle: cublasHandle_t,
    mode: *mut cublasAtomicsMode_t,
) -> cublasStatus_t {
    guard(|| {
        let s = get(handle).ok_or(status::NOT_INITIALIZED)?;
        if mode.is_null() {
            return Err(status::INVALID_VALUE);
        }
        // SAFETY: checked non-null; the caller's out-pointer.
        unsafe { *mode = cublasAtomicsMode_t(s.atomics_mode) };
        Ok(())
    })
}

/// The workspace is device memory of the application's: its address and size pass through
/// (NVIDIA's cuBLAS checks neither here: an unaligned or null one is accepted).
#[unsafe(no_mangle)]
pub extern "C" fn cublasSetWorkspace_v2(handle: cublasHandle_t, workspace: *mut c_void, size: usize) -> cublasStatus_t {
    guard(|| {
        get(handle).ok_or(status::NOT_INITIALIZED)?;
        match set(handle, SET_WORKSPACE, workspace as u64, size as u64) {
            status::SUCCESS => Ok(()),
            e => Err(e),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::super::wire::test_wire;
    use super::*;

    /// A handle as `cublasCreate_v2` would register it (which needs vgpu's libcuda.so.1).
    fn created() -> cublasHandle_t {
        register(0x5000, State::default());
        0x5000 as cublasHandle_t
    }

    #[test]
    fn settings_are_local_and_forwarded_in_order() {
        let h = created();
        test_wire::take();
        assert_eq!(cublasSetStream_v2(h, 0x7700 as cudaStream_t).0, 0);
        assert_eq!(cublasSetMathMode(h, cublasMath_t(1)).0, 0);
        assert_eq!(cublasSetMathMode(h, cublasMath_t(99)).0, status::INVALID_VALUE);
        assert_eq!(cublasSetAtomicsMode(h, cublasAtomicsMode_t(1)).0, 0);
        assert_eq!(cublasSetWorkspace_v2(h, 0x10000 as *mut c_void, 4096).0, 0);
        // not checked here (NVIDIA's accepts an unaligned workspace too)
        assert_eq!(cublasSetWorkspace_v2(h, 0x10010 as *mut c_void, 64).0, 0);
        assert_eq!(cublasSetPointerMode_v2(h, cublasPointerMode_t(1)).0, 0);
        assert_eq!(cublasSetPointerMode_v2(h, cublasPointerMode_t(2)).0, status::INVALID_VALUE);
        let sent: Vec<ops::cublas_set> = test_wire::take()
            .into_iter()
            .map(|(op, a)| {
                assert_eq!(op, protocol::Op::cublas_set as u32);
                postcard::from_bytes(&a).unwrap()
            })
            .collect();
        let what: Vec<_> = sent.iter().map(|s| (s.what, s.value, s.size)).collect();
        assert_eq!(
            what,
            [
                (SET_STREAM, 0x7700, 0),
                (SET_MATH_MODE, 1, 0),
                (SET_ATOMICS_MODE, 1, 0),
                (SET_WORKSPACE, 0x10000, 4096),
                (SET_WORKSPACE, 0x10010, 64),
            ]
        );
        assert!(sent.iter().all(|s| s.handle == 0x5000));

        let mut s: cudaStream_t = std::ptr::null_mut();
        let mut m = cublasMath_t(0);
        let mut p = cublasPointerMode_t(0);
        let mut a = cublasAtomicsMode_t(0);
        unsafe {
            assert_eq!(cublasGetStream_v2(h, &mut s).0, 0);
            assert_eq!(cublasGetMathMode(h, &mut m).0, 0);
            assert_eq!(cublasGetPointerMode_v2(h, &mut p).0, 0);
            assert_eq!(cublasGetAtomicsMode(h, &mut a).0, 0);
            assert_eq!(cublasGetMathMode(h, std::ptr::null_mut()).0, status::INVALID_VALUE);
        }
        assert_eq!((s as u64, m.0, p.0, a.0), (0x7700, 1, 1, 1));
        assert!(test_wire::take().is_empty(), "getters are local");
    }

    #[test]
    fn unknown_handles_are_not_initialized() {
        let bogus = 0xdead_0000 as cublasHandle_t;
        assert_eq!(cublasSetStream_v2(bogus, std::ptr::null_mut()).0, status::NOT_INITIALIZED);
        assert_eq!(cublasSetMathMode(bogus, cublasMath_t(0)).0, status::NOT_INITIALIZED);
        assert_eq!(cublasDestroy_v2(bogus).0, status::NOT_INITIALIZED);
        assert_eq!(cublasDestroy_v2(std::ptr::null_mut()).0, status::NOT_INITIALIZED);
        let mut m = cublasMath_t(0);
        assert_eq!(unsafe { cublasGetMathMode(bogus, &mut m) }.0, status::NOT_INITIALIZED);
        assert!(test_wire::take().is_empty());
        assert_eq!(unsafe { cublasCreate_v2(std::ptr::null_mut()) }.0, status::INVALID_VALUE);
    }

    #[test]
    fn destroy_forgets_the_handle_whatever_the_server_says() {
        table().write().insert(0x6000, State::default());
        test_wire::reply(&status::SUCCESS);
        assert_eq!(cublasDestroy_v2(0x6000 as cublasHandle_t).0, 0);
        assert!(get(0x6000 as cublasHandle_t).is_none());
        table().write().insert(0x6100, State::default());
        test_wire::REPLIES.with(|r| r.borrow_mut().push_back(Err(Error::Cuda(719))));
        assert_eq!(cublasDestroy_v2(0x6100 as cublasHandle_t).0, status::EXECUTION_FAILED);
        assert!(get(0x6100 as cublasHandle_t).is_none());
        table().write().insert(0x6200, State::default());
        assert_eq!(cublasDestroy_v2(0x6200 as cublasHandle_t).0, status::EXECUTION_FAILED, "lost server");
        let sent = test_wire::take();
        assert_eq!(sent.len(), 3);
        assert!(sent.iter().all(|(op, _)| *op == protocol::Op::cublasDestroy_v2 as u32));
    }
}
