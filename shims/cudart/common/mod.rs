// The CUDA runtime shim, shared by shims/cudart/v13 and shims/cudart/v12: each includes this
// file at its crate root (`include!("../../common/mod.rs")`) after defining what differs
// between majors (`RUNTIME_VERSION`; `cfg(vgpu_major = "12")` / `"13"` is also set).
//
// To implement an export, write `#[unsafe(no_mangle)] pub extern "C" fn NAME(...)` here (or in
// the version's src/): crates/shim-build sees `fn NAME` and no longer generates its stub.

/// `cudaRuntimeGetVersion`: the runtime version this library claims.
///
/// # Safety
/// `runtime_version` must be null or valid for a write of an `int`.
#[allow(non_snake_case)]
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cudaRuntimeGetVersion(runtime_version: *mut i32) -> u32 {
    const CUDA_SUCCESS: u32 = 0;
    const CUDA_ERROR_INVALID_VALUE: u32 = 1;
    const CUDA_ERROR_UNKNOWN: u32 = 999;
    shim_support::guard(CUDA_ERROR_UNKNOWN, || {
        if runtime_version.is_null() {
            return CUDA_ERROR_INVALID_VALUE;
        }
        // SAFETY: non-null, and the caller promises it is writable.
        unsafe { runtime_version.write(RUNTIME_VERSION) };
        CUDA_SUCCESS
    })
}
