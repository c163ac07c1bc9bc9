// The cuBLAS shim, shared by shims/cublas/v13 and shims/cublas/v12: each includes this file at
// its crate root (`include!("../../common/blas/mod.rs")`) after defining what differs between
// majors (`CUDART_VERSION`; `cfg(vgpu_major = "12")` / `"13"` is also set).
//
// To implement an export, write `#[unsafe(no_mangle)] pub extern "C" fn NAME(...)` here (or in
// the version's src/): crates/shim-build sees `fn NAME` and no longer generates its stub.

/// `size_t cublasGetCudartVersion(void)`. Defined by hand because it returns a `size_t`,
/// not a status (a stub would answer 15).
#[allow(non_snake_case)]
#[unsafe(no_mangle)]
pub extern "C" fn cublasGetCudartVersion() -> usize {
    CUDART_VERSION
}
