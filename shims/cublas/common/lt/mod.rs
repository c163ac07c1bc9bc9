//! The cuBLASLt shim, shared by `shims/cublas/lt13` and `shims/cublas/lt12`: each declares
//! this file as its module `lt` after defining what differs between majors (`crate::api`,
//! the bindings; `crate::CUDART_VERSION`; `cfg(vgpu_major = "12")` / `"13"` is also set).
//!
//! cuBLASLt is not forwarded: its matmuls answer `CUBLAS_STATUS_NOT_SUPPORTED` (generated
//! stubs, logged once each). What is answered here lets a program that only sets cuBLASLt
//! up (creates a handle, asks for versions, prints a status) get through: `cublasLtCreate`
//! hands out a handle that exists only in this process, `cublasLtDestroy` takes it back.
//!
//! To implement an export, write `#[unsafe(no_mangle)] pub extern "C" fn NAME(...)` here (or
//! in the version's src/): crates/shim-build sees `fn NAME` and no longer generates its stub.

use crate::api::{self, cublasLtHandle_t, cublasStatus_t, libraryPropertyType};
use protocol::cublas::status;
use std::os::raw::{c_char, c_int};

/// `size_t cublasLtGetCudartVersion(void)`. Defined by hand because it returns a `size_t`,
/// not a status (a stub would answer 15).
#[allow(non_snake_case)]
#[unsafe(no_mangle)]
pub extern "C" fn cublasLtGetCudartVersion() -> usize {
    crate::CUDART_VERSION
}

/// `size_t cublasLtGetVersion(void)`: the cuBLAS version of this major (`CUBLAS_VERSION`).
#[allow(non_snake_case)]
#[unsafe(no_mangle)]
pub extern "C" fn cublasLtGetVersion() -> usize {
    api::CUBLAS_VERSION as usize
}

#[allow(non_snake_case)]
#[unsafe(no_mangle)]
/// # Safety
/// `value` must be null or writable.
pub unsafe extern "C" fn cublasLtGetProperty(t: libraryPropertyType, value: *mut c_int) -> cublasStatus_t {
    let v = match t.0 {
        0 => api::CUBLAS_VER_MAJOR,
        1 => api::CUBLAS_VER_MINOR,
        2 => api::CUBLAS_VER_PATCH,
        _ => return cublasStatus_t(status::INVALID_VALUE),
    };
    if value.is_null() {
        return cublasStatus_t(status::INVALID_VALUE);
    }
    // SAFETY: checked non-null; the caller's out-pointer.
    unsafe { *value = v as c_int };
    cublasStatus_t(status::SUCCESS)
}

#[allow(non_snake_case)]
#[unsafe(no_mangle)]
pub extern "C" fn cublasLtGetStatusName(s: cublasStatus_t) -> *const c_char {
    protocol::cublas::status_name(s.0).as_ptr()
}

#[allow(non_snake_case)]
#[unsafe(no_mangle)]
pub extern "C" fn cublasLtGetStatusString(s: cublasStatus_t) -> *const c_char {
    protocol::cublas::status_string(s.0).as_ptr()
}

/// The handles `cublasLtCreate` gave out and `cublasLtDestroy` has not taken back. A handle
/// is the address of a live one-byte allocation, so it is unique and never null.
fn lt_handles() -> &'static parking_lot::Mutex<std::collections::HashSet<usize>> {
    static H: std::sync::OnceLock<parking_lot::Mutex<std::collections::HashSet<usize>>> = std::sync::OnceLock::new();
    H.get_or_init(Default::default)
}

#[allow(non_snake_case)]
#[unsafe(no_mangle)]
/// # Safety
/// `handle` must be null or writable.
pub unsafe extern "C" fn cublasLtCreate(handle: *mut cublasLtHandle_t) -> cublasStatus_t {
    if handle.is_null() {
        return cublasStatus_t(status::INVALID_VALUE);
    }
    let h = Box::into_raw(Box::new(0u8)) as usize;
    lt_handles().lock().insert(h);
    // SAFETY: checked non-null; the caller's out-pointer.
    unsafe { *handle = h as cublasLtHandle_t };
    cublasStatus_t(status::SUCCESS)
}

#[allow(non_snake_case)]
#[unsafe(no_mangle)]
pub extern "C" fn cublasLtDestroy(handle: cublasLtHandle_t) -> cublasStatus_t {
    if !lt_handles().lock().remove(&(handle as usize)) {
        return cublasStatus_t(status::NOT_INITIALIZED);
    }
    // SAFETY: made by Box::into_raw in cublasLtCreate and removed from the set just now.
    drop(unsafe { Box::from_raw(handle as *mut u8) });
    cublasStatus_t(status::SUCCESS)
}

#[cfg(test)]
mod lt_tests {
    use super::*;

    #[test]
    fn handles_versions_and_texts() {
        let mut h: cublasLtHandle_t = std::ptr::null_mut();
        assert_eq!(unsafe { cublasLtCreate(&mut h) }.0, 0);
        assert!(!h.is_null());
        assert_eq!(cublasLtDestroy(h).0, 0);
        assert_eq!(cublasLtDestroy(h).0, status::NOT_INITIALIZED);
        assert_eq!(unsafe { cublasLtCreate(std::ptr::null_mut()) }.0, status::INVALID_VALUE);
        assert_eq!(cublasLtGetVersion() / 10000, crate::CUDART_VERSION / 1000);
        let mut major = 0;
        assert_eq!(unsafe { cublasLtGetProperty(libraryPropertyType(0), &mut major) }.0, 0);
        assert_eq!(major as usize, crate::CUDART_VERSION / 1000);
        let name = unsafe { std::ffi::CStr::from_ptr(cublasLtGetStatusName(cublasStatus_t(15))) };
        assert_eq!(name, c"CUBLAS_STATUS_NOT_SUPPORTED");
        assert!(!cublasLtGetStatusString(cublasStatus_t(0)).is_null());
    }
}
