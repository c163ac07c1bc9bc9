//! Error handling: `CUresult` → `cudaError_t`, the per-thread last error, the wrapper every
//! export runs in, and the error-text exports (answered locally, never over the wire).

use std::cell::Cell;
use std::ffi::c_char;

use abi::cuda::CUresult;

use super::names;
use crate::rt::cudaError_t as E;

/// Result of a runtime call; `Err` carries the code the API returns.
pub(crate) type Res<T = ()> = Result<T, E>;

thread_local! {
    static LAST: Cell<u32> = const { Cell::new(0) };
}

/// The runtime code for a driver result. The two enums share their numbering wherever both
/// have a code (checked against the bindings in the tests); driver codes the runtime lacks
/// (`CUDA_ERROR_CONTEXT_ALREADY_CURRENT`, `CUDA_ERROR_KEY_ROTATION`, future ones) become
/// `cudaErrorUnknown`.
pub(crate) fn from_cu(r: CUresult) -> E {
    if names::lookup(r.0).is_some() { E(r.0) } else { E::cudaErrorUnknown }
}

/// `Ok` for `CUDA_SUCCESS`, else the mapped runtime error.
pub(crate) fn check(r: CUresult) -> Res {
    if r == CUresult::CUDA_SUCCESS { Ok(()) } else { Err(from_cu(r)) }
}

/// Remember `e` as this thread's last error. `cudaErrorNotReady` is a status, not an error
/// (NVIDIA's runtime does not record it either).
pub(crate) fn record(e: E) {
    if e != E::cudaSuccess && e != E::cudaErrorNotReady {
        // After the thread's TLS is gone there is nobody left to ask for it.
        let _ = LAST.try_with(|l| l.set(e.0));
    }
}

/// Run one API call: a panic becomes `cudaErrorUnknown`, and a failure is recorded as the
/// thread's last error.
pub(crate) fn api(f: impl FnOnce() -> Res) -> E {
    match shim_support::guard(Err(E::cudaErrorUnknown), f) {
        Ok(()) => E::cudaSuccess,
        Err(e) => {
            record(e);
            e
        }
    }
}

/// Write `v` through an out-pointer supplied by the caller; null is `cudaErrorInvalidValue`.
pub(crate) fn out<T>(p: *mut T, v: T) -> Res {
    if p.is_null() {
        return Err(E::cudaErrorInvalidValue);
    }
    // SAFETY: non-null; the API contract makes it valid for a write of T.
    unsafe { p.write(v) };
    Ok(())
}

/// `Err(cudaErrorInvalidValue)` when `p` is null.
pub(crate) fn non_null<T>(p: *const T) -> Res {
    if p.is_null() { Err(E::cudaErrorInvalidValue) } else { Ok(()) }
}

#[unsafe(no_mangle)]
pub extern "C" fn cudaGetLastError() -> E {
    shim_support::guard(E::cudaErrorUnknown, || E(LAST.try_with(|l| l.replace(0)).unwrap_or(0)))
}

#[unsafe(no_mangle)]
pub extern "C" fn cudaPeekAtLastError() -> E {
    shim_support::guard(E::cudaErrorUnknown, || E(LAST.try_with(Cell::get).unwrap_or(0)))
}

#[unsafe(no_mangle)]
pub extern "C" fn cudaGetErrorName(e: E) -> *const c_char {
    shim_support::guard(names::UNRECOGNIZED.as_ptr(), || {
        names::lookup(e.0).map_or(names::UNRECOGNIZED, |(n, _)| n).as_ptr()
    })
}

#[unsafe(no_mangle)]
pub extern "C" fn cudaGetErrorString(e: E) -> *const c_char {
    shim_support::guard(names::UNRECOGNIZED.as_ptr(), || {
        names::lookup(e.0).map_or(names::UNRECOGNIZED, |(_, s)| s).as_ptr()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::CStr;

    #[test]
    fn table_is_sorted_and_complete() {
        assert!(names::ERRORS.windows(2).all(|w| w[0].0 < w[1].0));
        assert_eq!(names::ERRORS.len(), 134);
        for (code, name, _) in names::ERRORS {
            assert!(name.to_str().unwrap().starts_with("cuda"), "{code}");
        }
        // Spot checks against the bindings' constants.
        for (e, name) in [
            (E::cudaErrorInvalidValue, "cudaErrorInvalidValue"),
            (E::cudaErrorInsufficientDriver, "cudaErrorInsufficientDriver"),
            (E::cudaErrorInvalidResourceHandle, "cudaErrorInvalidResourceHandle"),
            (E::cudaErrorStreamCaptureUnsupported, "cudaErrorStreamCaptureUnsupported"),
            (E::cudaErrorUnknown, "cudaErrorUnknown"),
            (E::cudaErrorApiFailureBase, "cudaErrorApiFailureBase"),
        ] {
            assert_eq!(names::lookup(e.0).unwrap().0.to_str().unwrap(), name);
        }
    }

    #[test]
    fn driver_codes_map_by_number() {
        for (cu, rt) in [
            (CUresult::CUDA_ERROR_NOT_INITIALIZED, E::cudaErrorInitializationError),
            (CUresult::CUDA_ERROR_NO_DEVICE, E::cudaErrorNoDevice),
            (CUresult::CUDA_ERROR_INVALID_HANDLE, E::cudaErrorInvalidResourceHandle),
            (CUresult::CUDA_ERROR_OUT_OF_MEMORY, E::cudaErrorMemoryAllocation),
            (CUresult::CUDA_ERROR_INVALID_CONTEXT, E::cudaErrorDeviceUninitialized),
            (CUresult::CUDA_ERROR_INVALID_IMAGE, E::cudaErrorInvalidKernelImage),
            (CUresult::CUDA_ERROR_NO_BINARY_FOR_GPU, E::cudaErrorNoKernelImageForDevice),
            (CUresult::CUDA_ERROR_NOT_FOUND, E::cudaErrorSymbolNotFound),
            (CUresult::CUDA_ERROR_NOT_READY, E::cudaErrorNotReady),
            (CUresult::CUDA_ERROR_LAUNCH_FAILED, E::cudaErrorLaunchFailure),
            (CUresult::CUDA_ERROR_PEER_ACCESS_ALREADY_ENABLED, E::cudaErrorPeerAccessAlreadyEnabled),
            (CUresult::CUDA_ERROR_STREAM_CAPTURE_IMPLICIT, E::cudaErrorStreamCaptureImplicit),
            (CUresult::CUDA_ERROR_GRAPH_EXEC_UPDATE_FAILURE, E::cudaErrorGraphExecUpdateFailure),
            (CUresult::CUDA_ERROR_NOT_SUPPORTED, E::cudaErrorNotSupported),
            (CUresult::CUDA_ERROR_UNKNOWN, E::cudaErrorUnknown),
            (CUresult::CUDA_ERROR_CONTEXT_ALREADY_CURRENT, E::cudaErrorUnknown),
            (CUresult::CUDA_ERROR_KEY_ROTATION, E::cudaErrorUnknown),
            (CUresult(123_456), E::cudaErrorUnknown),
        ] {
            assert_eq!(from_cu(cu), rt, "{cu:?}");
        }
        assert_eq!(check(CUresult::CUDA_SUCCESS), Ok(()));
        assert_eq!(check(CUresult::CUDA_ERROR_INVALID_VALUE), Err(E::cudaErrorInvalidValue));
    }

    #[test]
    fn last_error_is_per_thread_and_cleared_by_get() {
        assert_eq!(api(|| Err(E::cudaErrorInvalidDevice)), E::cudaErrorInvalidDevice);
        assert_eq!(api(|| Err(E::cudaErrorNotReady)), E::cudaErrorNotReady, "not recorded");
        assert_eq!(api(|| Ok(())), E::cudaSuccess, "success keeps the last error");
        std::thread::spawn(|| assert_eq!(cudaPeekAtLastError(), E::cudaSuccess)).join().unwrap();
        assert_eq!(cudaPeekAtLastError(), E::cudaErrorInvalidDevice);
        assert_eq!(cudaGetLastError(), E::cudaErrorInvalidDevice);
        assert_eq!(cudaGetLastError(), E::cudaSuccess);
        assert_eq!(api(|| panic!("boom")), E::cudaErrorUnknown);
        assert_eq!(cudaGetLastError(), E::cudaErrorUnknown);
    }

    #[test]
    fn texts() {
        let s = |p| unsafe { CStr::from_ptr(p) }.to_str().unwrap();
        assert_eq!(s(cudaGetErrorString(E::cudaErrorInvalidValue)), "invalid argument");
        assert_eq!(s(cudaGetErrorName(E::cudaErrorMemoryAllocation)), "cudaErrorMemoryAllocation");
        assert_eq!(
            s(cudaGetErrorString(E::cudaErrorInsufficientDriver)),
            "CUDA driver version is insufficient for CUDA runtime version"
        );
        assert_eq!(s(cudaGetErrorString(E(4242))), "unrecognized error code");
        assert_eq!(s(cudaGetErrorName(E(4242))), "unrecognized error code");
    }
}
