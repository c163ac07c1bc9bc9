//! The registration hooks nvcc's host code calls from static constructors (and `atexit`).
//! They only record (see `registry`); nothing goes to the driver until a kernel is used.

use std::ffi::{c_char, c_int, c_void};

use super::registry;
use crate::rt;

#[unsafe(no_mangle)]
pub unsafe extern "C" fn __cudaRegisterFatBinary(fat_cubin: *mut c_void) -> *mut *mut c_void {
    shim_support::guard(std::ptr::null_mut(), || registry::register_fatbin(fat_cubin))
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn __cudaRegisterFatBinaryEnd(_handle: *mut *mut c_void) {
    // Nothing to finish: modules load on first use.
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn __cudaUnregisterFatBinary(handle: *mut *mut c_void) {
    shim_support::guard((), || registry::unregister(handle));
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn __cudaRegisterFunction(
    handle: *mut *mut c_void,
    host_fun: *const c_char,
    device_fun: *mut c_char,
    _device_name: *const c_char,
    _thread_limit: c_int,
    _tid: *mut rt::uint3,
    _bid: *mut rt::uint3,
    _block_dim: *mut rt::dim3,
    _grid_dim: *mut rt::dim3,
    _warp_size: *mut c_int,
) {
    shim_support::guard((), || registry::register_function(handle, host_fun, device_fun));
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn __cudaRegisterVar(
    handle: *mut *mut c_void,
    host_var: *mut c_char,
    _device_address: *mut c_char,
    device_name: *const c_char,
    _ext: c_int,
    _size: usize,
    _constant: c_int,
    _global: c_int,
) {
    shim_support::guard((), || registry::register_var(handle, host_var.cast(), device_name, false));
}

/// Recorded so that registration succeeds; using the variable answers not-supported.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn __cudaRegisterManagedVar(
    handle: *mut *mut c_void,
    host_var_ptr_address: *mut *mut c_void,
    _device_address: *mut c_char,
    device_name: *const c_char,
    _ext: c_int,
    _size: usize,
    _constant: c_int,
    _global: c_int,
) {
    shim_support::guard((), || registry::register_var(handle, host_var_ptr_address.cast(), device_name, true));
}

/// Modules load lazily, so there is nothing to do now; 1 tells the caller it succeeded.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn __cudaInitModule(_handle: *mut *mut c_void) -> c_char {
    1
}
