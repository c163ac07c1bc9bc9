//! What cuBLAS answers without the server: versions, library properties, status names and
//! strings, the logger configuration.

use super::{cublasHandle_t, cublasStatus_t, st, status};
use crate::api::{CUBLAS_VER_MAJOR, CUBLAS_VER_MINOR, CUBLAS_VER_PATCH, CUBLAS_VERSION, libraryPropertyType};
use std::os::raw::{c_char, c_int};

/// `CUBLAS_VERSION` of the headers this library claims (13.1.0 → 130100, 12.9.1 → 120901).
pub const VERSION: c_int = CUBLAS_VERSION as c_int;

/// `size_t cublasGetCudartVersion(void)`: returns a `size_t`, not a status.
#[unsafe(no_mangle)]
pub extern "C" fn cublasGetCudartVersion() -> usize {
    crate::CUDART_VERSION
}

/// The handle is not needed to know the version (NVIDIA's answers for any handle too).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cublasGetVersion_v2(_handle: cublasHandle_t, version: *mut c_int) -> cublasStatus_t {
    unsafe { cublasGetVersion(version) }
}

/// The legacy API's form (`cublas.h`).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cublasGetVersion(version: *mut c_int) -> cublasStatus_t {
    if version.is_null() {
        return st(status::INVALID_VALUE);
    }
    // SAFETY: checked non-null; the caller's out-pointer.
    unsafe { *version = VERSION };
    st(status::SUCCESS)
}

/// The value of a `libraryPropertyType` for this library, if it is one.
pub fn property(t: u32) -> Option<c_int> {
    match t {
        0 => Some(CUBLAS_VER_MAJOR as c_int),
        1 => Some(CUBLAS_VER_MINOR as c_int),
        2 => Some(CUBLAS_VER_PATCH as c_int),
        _ => None,
    }
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cublasGetProperty(t: libraryPropertyType, value: *mut c_int) -> cublasStatus_t {
    match property(t.0) {
        Some(v) if !value.is_null() => {
            // SAFETY: checked non-null; the caller's out-pointer.
            unsafe { *value = v };
            st(status::SUCCESS)
        }
        _ => st(status::INVALID_VALUE),
    }
}

#[unsafe(no_mangle)]
pub extern "C" fn cublasGetStatusName(s: cublasStatus_t) -> *const c_char {
    protocol::cublas::status_name(s.0).as_ptr()
}

#[unsafe(no_mangle)]
pub extern "C" fn cublasGetStatusString(s: cublasStatus_t) -> *const c_char {
    protocol::cublas::status_string(s.0).as_ptr()
}

/// Accepted and ignored: the server's cuBLAS does the work and logs nothing here.
#[unsafe(no_mangle)]
pub extern "C" fn cublasLoggerConfigure(
    _log_on: c_int,
    _to_stdout: c_int,
    _to_stderr: c_int,
    _file: *const c_char,
) -> cublasStatus_t {
    st(status::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::CStr;

    #[test]
    fn versions_match_the_major() {
        let mut v = 0;
        assert_eq!(unsafe { cublasGetVersion_v2(std::ptr::null_mut(), &mut v) }.0, 0);
        assert_eq!(v / 10000, crate::CUDART_VERSION as c_int / 1000);
        assert_eq!(v, VERSION);
        assert_eq!(unsafe { cublasGetVersion(std::ptr::null_mut()) }.0, status::INVALID_VALUE);
        let mut major = 0;
        let mut minor = 0;
        unsafe {
            assert_eq!(cublasGetProperty(libraryPropertyType(0), &mut major).0, 0);
            assert_eq!(cublasGetProperty(libraryPropertyType(1), &mut minor).0, 0);
            assert_eq!(cublasGetProperty(libraryPropertyType(7), &mut minor).0, status::INVALID_VALUE);
        }
        assert_eq!(major * 10000 + minor * 100, v - v % 100);
        assert_eq!(cublasGetCudartVersion() / 1000, major as usize);
    }

    #[test]
    fn status_texts_are_static_c_strings() {
        let name = unsafe { CStr::from_ptr(cublasGetStatusName(cublasStatus_t(7))) };
        assert_eq!(name, c"CUBLAS_STATUS_INVALID_VALUE");
        let text = unsafe { CStr::from_ptr(cublasGetStatusString(cublasStatus_t(0))) };
        assert!(!text.is_empty());
        assert_eq!(cublasGetStatusString(cublasStatus_t(0)), cublasGetStatusString(cublasStatus_t(0)));
        assert!(!cublasGetStatusName(cublasStatus_t(12345)).is_null());
        assert_eq!(cublasLoggerConfigure(1, 1, 0, std::ptr::null()).0, 0);
    }
}
