//! The cuBLAS functions forwarded to the server, declared once.
//!
//! `cublas_functions!` lists each forwarded function with its C argument types and the
//! role of each argument. Three places expand the same table:
//!
//! * here: [`FUNCS`] (wire index ↔ name ↔ argument roles) and [`DEFINITION`] (hashed into
//!   [`crate::WIRE_HASH`], so client and server agree on every argument list);
//! * the cuBLAS shims (`shims/cublas/common/blas`): one exported `extern "C"` function per
//!   entry, with exactly the C signature (checked against `abi::cublas13`/`cublas12` at
//!   compile time), that widens its arguments and sends [`crate::ops::cublas_call`];
//! * the server (`crates/server/src/cublas.rs`): the typed call into the real library, by
//!   the same name, through the `abi` crate's `CublasLib` (again checked by the compiler).
//!
//! # Grammar
//!
//! `fn NAME(handle, ARG: ROLE(..), ...);` — the first argument is always the
//! `cublasHandle_t`; each further argument has one role:
//!
//! * `val(T)`: a value of C type `T` (`c_int`, `i64`, `c_longlong`, an enum): on the wire
//!   widened to `u64` (signed types sign-extended, so the server truncates back exactly);
//! * `dev(T)`: a device pointer of C type `T` — including the batched forms' arrays of
//!   device pointers, which live in device memory: passed through as its address;
//! * `scalar(T)`: `alpha`/`beta`, a `*const T` (`T` is `f32`, `f64`, `__half`, `cuComplex`
//!   or `cuDoubleComplex`). Under `CUBLAS_POINTER_MODE_HOST` the shim reads the value from
//!   host memory and sends its bytes; under `CUBLAS_POINTER_MODE_DEVICE` the pointer is a
//!   device address and is passed through;
//! * `scalar_ex(COMPUTE, CTYPE)`: the same for a `*const c_void` scalar whose type follows
//!   the function's compute type argument `COMPUTE` (and, for complex results, its output
//!   type argument `CTYPE`): see [`scale_size`].
//!
//! # Wire
//!
//! [`crate::ops::cublas_call`] carries the index in [`FUNCS`], the handle, whether scalars
//! are device pointers, every argument after the handle widened to `u64` in declaration
//! order, and (host pointer mode) the scalars' bytes concatenated in argument order, their
//! slots in `args` being 0. It is one-way, like a kernel launch: a failure is logged by the
//! server and reported by the next synchronous call as the CUDA error [`deferred_code`].

use std::ffi::CStr;

/// How one argument after the handle travels (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arg {
    /// A value, widened to `u64`.
    Val,
    /// A device address, passed through.
    Dev,
    /// A scalar of this many bytes: by value (host pointer mode) or a device address.
    Scalar(usize),
    /// A scalar sized by [`scale_size`] from the values of the two named arguments.
    ScalarEx { compute: &'static str, ctype: &'static str },
}

/// One forwarded function: its name and its arguments after the handle, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Func {
    pub name: &'static str,
    pub args: &'static [(&'static str, Arg)],
}

/// [`crate::ops::cublas_set`]`::what`: `cublasSetStream_v2` (`value`: a stream id of the
/// session; 0 is the legacy default stream, 1 `cudaStreamLegacy`, 2 `cudaStreamPerThread`).
pub const SET_STREAM: u32 = 1;
/// `cublasSetMathMode` (`value`: the `cublasMath_t`).
pub const SET_MATH_MODE: u32 = 2;
/// `cublasSetAtomicsMode` (`value`: the `cublasAtomicsMode_t`).
pub const SET_ATOMICS_MODE: u32 = 3;
/// `cublasSetWorkspace_v2` (`value`: the device address, `size`: its length in bytes).
pub const SET_WORKSPACE: u32 = 4;

/// `cublasStatus_t` values used on both sides.
pub mod status {
    pub const SUCCESS: u32 = 0;
    pub const NOT_INITIALIZED: u32 = 1;
    pub const ALLOC_FAILED: u32 = 3;
    pub const INVALID_VALUE: u32 = 7;
    pub const ARCH_MISMATCH: u32 = 8;
    pub const MAPPING_ERROR: u32 = 11;
    pub const EXECUTION_FAILED: u32 = 13;
    pub const INTERNAL_ERROR: u32 = 14;
    pub const NOT_SUPPORTED: u32 = 15;
    pub const LICENSE_ERROR: u32 = 16;
}

/// The table. Callers pass a macro that receives the entries
/// `fn NAME(handle, ARG: ROLE(..), ...);` (the `fn` also lets the shims' stub generator,
/// `crates/shim-build`, see every name as defined).
#[macro_export]
macro_rules! cublas_functions {
    ($cb:ident) => {
        $cb! {
            // ---- level-3 GEMM
            fn cublasSgemm_v2(handle, transa: val(cublasOperation_t),
                transb: val(cublasOperation_t), m: val(c_int), n: val(c_int), k: val(c_int),
                alpha: scalar(f32), A: dev(*const f32), lda: val(c_int), B: dev(*const f32),
                ldb: val(c_int), beta: scalar(f32), C: dev(*mut f32), ldc: val(c_int));
            fn cublasSgemm_v2_64(handle, transa: val(cublasOperation_t),
                transb: val(cublasOperation_t), m: val(i64), n: val(i64), k: val(i64),
                alpha: scalar(f32), A: dev(*const f32), lda: val(i64), B: dev(*const f32),
                ldb: val(i64), beta: scalar(f32), C: dev(*mut f32), ldc: val(i64));
            fn cublasDgemm_v2(handle, transa: val(cublasOperation_t),
                transb: val(cublasOperation_t), m: val(c_int), n: val(c_int), k: val(c_int),
                alpha: scalar(f64), A: dev(*const f64), lda: val(c_int), B: dev(*const f64),
                ldb: val(c_int), beta: scalar(f64), C: dev(*mut f64), ldc: val(c_int));
            fn cublasDgemm_v2_64(handle, transa: val(cublasOperation_t),
                transb: val(cublasOperation_t), m: val(i64), n: val(i64), k: val(i64),
                alpha: scalar(f64), A: dev(*const f64), lda: val(i64), B: dev(*const f64),
                ldb: val(i64), beta: scalar(f64), C: dev(*mut f64), ldc: val(i64));
            fn cublasCgemm_v2(handle, transa: val(cublasOperation_t),
                transb: val(cublasOperation_t), m: val(c_int), n: val(c_int), k: val(c_int),
                alpha: scalar(cuComplex), A: dev(*const cuComplex), lda: val(c_int),
                B: dev(*const cuComplex), ldb: val(c_int), beta: scalar(cuComplex),
                C: dev(*mut cuComplex), ldc: val(c_int));
            fn cublasCgemm_v2_64(handle, transa: val(cublasOperation_t),
                transb: val(cublasOperation_t), m: val(i64), n: val(i64), k: val(i64),
                alpha: scalar(cuComplex), A: dev(*const cuComplex), lda: val(i64),
                B: dev(*const cuComplex), ldb: val(i64), beta: scalar(cuComplex),
                C: dev(*mut cuComplex), ldc: val(i64));
            fn cublasZgemm_v2(handle, transa: val(cublasOperation_t),
                transb: val(cublasOperation_t), m: val(c_int), n: val(c_int), k: val(c_int),
                alpha: scalar(cuDoubleComplex), A: dev(*const cuDoubleComplex), lda: val(c_int),
                B: dev(*const cuDoubleComplex), ldb: val(c_int), beta: scalar(cuDoubleComplex),
                C: dev(*mut cuDoubleComplex), ldc: val(c_int));
            fn cublasZgemm_v2_64(handle, transa: val(cublasOperation_t),
                transb: val(cublasOperation_t), m: val(i64), n: val(i64), k: val(i64),
                alpha: scalar(cuDoubleComplex), A: dev(*const cuDoubleComplex), lda: val(i64),
                B: dev(*const cuDoubleComplex), ldb: val(i64), beta: scalar(cuDoubleComplex),
                C: dev(*mut cuDoubleComplex), ldc: val(i64));
            fn cublasHgemm(handle, transa: val(cublasOperation_t), transb: val(cublasOperation_t),
                m: val(c_int), n: val(c_int), k: val(c_int), alpha: scalar(__half),
                A: dev(*const __half), lda: val(c_int), B: dev(*const __half), ldb: val(c_int),
                beta: scalar(__half), C: dev(*mut __half), ldc: val(c_int));
            fn cublasHgemm_64(handle, transa: val(cublasOperation_t),
                transb: val(cublasOperation_t), m: val(i64), n: val(i64), k: val(i64),
                alpha: scalar(__half), A: dev(*const __half), lda: val(i64), B: dev(*const __half),
                ldb: val(i64), beta: scalar(__half), C: dev(*mut __half), ldc: val(i64));
            fn cublasCgemm3m(handle, transa: val(cublasOperation_t), transb: val(cublasOperation_t),
                m: val(c_int), n: val(c_int), k: val(c_int), alpha: scalar(cuComplex),
                A: dev(*const cuComplex), lda: val(c_int), B: dev(*const cuComplex),
                ldb: val(c_int), beta: scalar(cuComplex), C: dev(*mut cuComplex), ldc: val(c_int));
            fn cublasCgemm3m_64(handle, transa: val(cublasOperation_t),
                transb: val(cublasOperation_t), m: val(i64), n: val(i64), k: val(i64),
                alpha: scalar(cuComplex), A: dev(*const cuComplex), lda: val(i64),
                B: dev(*const cuComplex), ldb: val(i64), beta: scalar(cuComplex),
                C: dev(*mut cuComplex), ldc: val(i64));
            fn cublasZgemm3m(handle, transa: val(cublasOperation_t), transb: val(cublasOperation_t),
                m: val(c_int), n: val(c_int), k: val(c_int), alpha: scalar(cuDoubleComplex),
                A: dev(*const cuDoubleComplex), lda: val(c_int), B: dev(*const cuDoubleComplex),
                ldb: val(c_int), beta: scalar(cuDoubleComplex), C: dev(*mut cuDoubleComplex),
                ldc: val(c_int));
            fn cublasZgemm3m_64(handle, transa: val(cublasOperation_t),
                transb: val(cublasOperation_t), m: val(i64), n: val(i64), k: val(i64),
                alpha: scalar(cuDoubleComplex), A: dev(*const cuDoubleComplex), lda: val(i64),
                B: dev(*const cuDoubleComplex), ldb: val(i64), beta: scalar(cuDoubleComplex),
                C: dev(*mut cuDoubleComplex), ldc: val(i64));
            // ---- GEMM with mixed storage types
            fn cublasSgemmEx(handle, transa: val(cublasOperation_t), transb: val(cublasOperation_t),
                m: val(c_int), n: val(c_int), k: val(c_int), alpha: scalar(f32),
                A: dev(*const c_void), Atype: val(cudaDataType), lda: val(c_int),
                B: dev(*const c_void), Btype: val(cudaDataType), ldb: val(c_int), beta: scalar(f32),
                C: dev(*mut c_void), Ctype: val(cudaDataType), ldc: val(c_int));
            fn cublasSgemmEx_64(handle, transa: val(cublasOperation_t),
                transb: val(cublasOperation_t), m: val(i64), n: val(i64), k: val(i64),
                alpha: scalar(f32), A: dev(*const c_void), Atype: val(cudaDataType), lda: val(i64),
                B: dev(*const c_void), Btype: val(cudaDataType), ldb: val(i64), beta: scalar(f32),
                C: dev(*mut c_void), Ctype: val(cudaDataType), ldc: val(i64));
            fn cublasCgemmEx(handle, transa: val(cublasOperation_t), transb: val(cublasOperation_t),
                m: val(c_int), n: val(c_int), k: val(c_int), alpha: scalar(cuComplex),
                A: dev(*const c_void), Atype: val(cudaDataType), lda: val(c_int),
                B: dev(*const c_void), Btype: val(cudaDataType), ldb: val(c_int),
                beta: scalar(cuComplex), C: dev(*mut c_void), Ctype: val(cudaDataType),
                ldc: val(c_int));
            fn cublasCgemmEx_64(handle, transa: val(cublasOperation_t),
                transb: val(cublasOperation_t), m: val(i64), n: val(i64), k: val(i64),
                alpha: scalar(cuComplex), A: dev(*const c_void), Atype: val(cudaDataType),
                lda: val(i64), B: dev(*const c_void), Btype: val(cudaDataType), ldb: val(i64),
                beta: scalar(cuComplex), C: dev(*mut c_void), Ctype: val(cudaDataType),
                ldc: val(i64));
            fn cublasCgemm3mEx(handle, transa: val(cublasOperation_t),
                transb: val(cublasOperation_t), m: val(c_int), n: val(c_int), k: val(c_int),
                alpha: scalar(cuComplex), A: dev(*const c_void), Atype: val(cudaDataType),
                lda: val(c_int), B: dev(*const c_void), Btype: val(cudaDataType), ldb: val(c_int),
                beta: scalar(cuComplex), C: dev(*mut c_void), Ctype: val(cudaDataType),
                ldc: val(c_int));
            fn cublasCgemm3mEx_64(handle, transa: val(cublasOperation_t),
                transb: val(cublasOperation_t), m: val(i64), n: val(i64), k: val(i64),
                alpha: scalar(cuComplex), A: dev(*const c_void), Atype: val(cudaDataType),
                lda: val(i64), B: dev(*const c_void), Btype: val(cudaDataType), ldb: val(i64),
                beta: scalar(cuComplex), C: dev(*mut c_void), Ctype: val(cudaDataType),
                ldc: val(i64));
            fn cublasGemmEx(handle, transa: val(cublasOperation_t), transb: val(cublasOperation_t),
                m: val(c_int), n: val(c_int), k: val(c_int), alpha: scalar_ex(computeType, Ctype),
                A: dev(*const c_void), Atype: val(cudaDataType), lda: val(c_int),
                B: dev(*const c_void), Btype: val(cudaDataType), ldb: val(c_int),
                beta: scalar_ex(computeType, Ctype), C: dev(*mut c_void), Ctype: val(cudaDataType),
                ldc: val(c_int), computeType: val(cublasComputeType_t),
                algo: val(cublasGemmAlgo_t));
            fn cublasGemmEx_64(handle, transa: val(cublasOperation_t),
                transb: val(cublasOperation_t), m: val(i64), n: val(i64), k: val(i64),
                alpha: scalar_ex(computeType, Ctype), A: dev(*const c_void),
                Atype: val(cudaDataType), lda: val(i64), B: dev(*const c_void),
                Btype: val(cudaDataType), ldb: val(i64), beta: scalar_ex(computeType, Ctype),
                C: dev(*mut c_void), Ctype: val(cudaDataType), ldc: val(i64),
                computeType: val(cublasComputeType_t), algo: val(cublasGemmAlgo_t));
            // ---- batched GEMM: arrays of device pointers, in device memory
            fn cublasSgemmBatched(handle, transa: val(cublasOperation_t),
                transb: val(cublasOperation_t), m: val(c_int), n: val(c_int), k: val(c_int),
                alpha: scalar(f32), Aarray: dev(*const *const f32), lda: val(c_int),
                Barray: dev(*const *const f32), ldb: val(c_int), beta: scalar(f32),
                Carray: dev(*const *mut f32), ldc: val(c_int), batchCount: val(c_int));
            fn cublasSgemmBatched_64(handle, transa: val(cublasOperation_t),
                transb: val(cublasOperation_t), m: val(i64), n: val(i64), k: val(i64),
                alpha: scalar(f32), Aarray: dev(*const *const f32), lda: val(i64),
                Barray: dev(*const *const f32), ldb: val(i64), beta: scalar(f32),
                Carray: dev(*const *mut f32), ldc: val(i64), batchCount: val(i64));
            fn cublasDgemmBatched(handle, transa: val(cublasOperation_t),
                transb: val(cublasOperation_t), m: val(c_int), n: val(c_int), k: val(c_int),
                alpha: scalar(f64), Aarray: dev(*const *const f64), lda: val(c_int),
                Barray: dev(*const *const f64), ldb: val(c_int), beta: scalar(f64),
                Carray: dev(*const *mut f64), ldc: val(c_int), batchCount: val(c_int));
            fn cublasDgemmBatched_64(handle, transa: val(cublasOperation_t),
                transb: val(cublasOperation_t), m: val(i64), n: val(i64), k: val(i64),
                alpha: scalar(f64), Aarray: dev(*const *const f64), lda: val(i64),
                Barray: dev(*const *const f64), ldb: val(i64), beta: scalar(f64),
                Carray: dev(*const *mut f64), ldc: val(i64), batchCount: val(i64));
            fn cublasCgemmBatched(handle, transa: val(cublasOperation_t),
                transb: val(cublasOperation_t), m: val(c_int), n: val(c_int), k: val(c_int),
                alpha: scalar(cuComplex), Aarray: dev(*const *const cuComplex), lda: val(c_int),
                Barray: dev(*const *const cuComplex), ldb: val(c_int), beta: scalar(cuComplex),
                Carray: dev(*const *mut cuComplex), ldc: val(c_int), batchCount: val(c_int));
            fn cublasCgemmBatched_64(handle, transa: val(cublasOperation_t),
                transb: val(cublasOperation_t), m: val(i64), n: val(i64), k: val(i64),
                alpha: scalar(cuComplex), Aarray: dev(*const *const cuComplex), lda: val(i64),
                Barray: dev(*const *const cuComplex), ldb: val(i64), beta: scalar(cuComplex),
                Carray: dev(*const *mut cuComplex), ldc: val(i64), batchCount: val(i64));
            fn cublasZgemmBatched(handle, transa: val(cublasOperation_t),
                transb: val(cublasOperation_t), m: val(c_int), n: val(c_int), k: val(c_int),
                alpha: scalar(cuDoubleComplex), Aarray: dev(*const *const cuDoubleComplex),
                lda: val(c_int), Barray: dev(*const *const cuDoubleComplex), ldb: val(c_int),
                beta: scalar(cuDoubleComplex), Carray: dev(*const *mut cuDoubleComplex),
                ldc: val(c_int), batchCount: val(c_int));
            fn cublasZgemmBatched_64(handle, transa: val(cublasOperation_t),
                transb: val(cublasOperation_t), m: val(i64), n: val(i64), k: val(i64),
                alpha: scalar(cuDoubleComplex), Aarray: dev(*const *const cuDoubleComplex),
                lda: val(i64), Barray: dev(*const *const cuDoubleComplex), ldb: val(i64),
                beta: scalar(cuDoubleComplex), Carray: dev(*const *mut cuDoubleComplex),
                ldc: val(i64), batchCount: val(i64));
            fn cublasHgemmBatched(handle, transa: val(cublasOperation_t),
                transb: val(cublasOperation_t), m: val(c_int), n: val(c_int), k: val(c_int),
                alpha: scalar(__half), Aarray: dev(*const *const __half), lda: val(c_int),
                Barray: dev(*const *const __half), ldb: val(c_int), beta: scalar(__half),
                Carray: dev(*const *mut __half), ldc: val(c_int), batchCount: val(c_int));
            fn cublasHgemmBatched_64(handle, transa: val(cublasOperation_t),
                transb: val(cublasOperation_t), m: val(i64), n: val(i64), k: val(i64),
                alpha: scalar(__half), Aarray: dev(*const *const __half), lda: val(i64),
                Barray: dev(*const *const __half), ldb: val(i64), beta: scalar(__half),
                Carray: dev(*const *mut __half), ldc: val(i64), batchCount: val(i64));
            fn cublasCgemm3mBatched(handle, transa: val(cublasOperation_t),
                transb: val(cublasOperation_t), m: val(c_int), n: val(c_int), k: val(c_int),
                alpha: scalar(cuComplex), Aarray: dev(*const *const cuComplex), lda: val(c_int),
                Barray: dev(*const *const cuComplex), ldb: val(c_int), beta: scalar(cuComplex),
                Carray: dev(*const *mut cuComplex), ldc: val(c_int), batchCount: val(c_int));
            fn cublasCgemm3mBatched_64(handle, transa: val(cublasOperation_t),
                transb: val(cublasOperation_t), m: val(i64), n: val(i64), k: val(i64),
                alpha: scalar(cuComplex), Aarray: dev(*const *const cuComplex), lda: val(i64),
                Barray: dev(*const *const cuComplex), ldb: val(i64), beta: scalar(cuComplex),
                Carray: dev(*const *mut cuComplex), ldc: val(i64), batchCount: val(i64));
            fn cublasGemmBatchedEx(handle, transa: val(cublasOperation_t),
                transb: val(cublasOperation_t), m: val(c_int), n: val(c_int), k: val(c_int),
                alpha: scalar_ex(computeType, Ctype), Aarray: dev(*const *const c_void),
                Atype: val(cudaDataType), lda: val(c_int), Barray: dev(*const *const c_void),
                Btype: val(cudaDataType), ldb: val(c_int), beta: scalar_ex(computeType, Ctype),
                Carray: dev(*const *mut c_void), Ctype: val(cudaDataType), ldc: val(c_int),
                batchCount: val(c_int), computeType: val(cublasComputeType_t),
                algo: val(cublasGemmAlgo_t));
            fn cublasGemmBatchedEx_64(handle, transa: val(cublasOperation_t),
                transb: val(cublasOperation_t), m: val(i64), n: val(i64), k: val(i64),
                alpha: scalar_ex(computeType, Ctype), Aarray: dev(*const *const c_void),
                Atype: val(cudaDataType), lda: val(i64), Barray: dev(*const *const c_void),
                Btype: val(cudaDataType), ldb: val(i64), beta: scalar_ex(computeType, Ctype),
                Carray: dev(*const *mut c_void), Ctype: val(cudaDataType), ldc: val(i64),
                batchCount: val(i64), computeType: val(cublasComputeType_t),
                algo: val(cublasGemmAlgo_t));
            // ---- strided batched GEMM
            fn cublasSgemmStridedBatched(handle, transa: val(cublasOperation_t),
                transb: val(cublasOperation_t), m: val(c_int), n: val(c_int), k: val(c_int),
                alpha: scalar(f32), A: dev(*const f32), lda: val(c_int), strideA: val(c_longlong),
                B: dev(*const f32), ldb: val(c_int), strideB: val(c_longlong), beta: scalar(f32),
                C: dev(*mut f32), ldc: val(c_int), strideC: val(c_longlong),
                batchCount: val(c_int));
            fn cublasSgemmStridedBatched_64(handle, transa: val(cublasOperation_t),
                transb: val(cublasOperation_t), m: val(i64), n: val(i64), k: val(i64),
                alpha: scalar(f32), A: dev(*const f32), lda: val(i64), strideA: val(c_longlong),
                B: dev(*const f32), ldb: val(i64), strideB: val(c_longlong), beta: scalar(f32),
                C: dev(*mut f32), ldc: val(i64), strideC: val(c_longlong), batchCount: val(i64));
            fn cublasDgemmStridedBatched(handle, transa: val(cublasOperation_t),
                transb: val(cublasOperation_t), m: val(c_int), n: val(c_int), k: val(c_int),
                alpha: scalar(f64), A: dev(*const f64), lda: val(c_int), strideA: val(c_longlong),
                B: dev(*const f64), ldb: val(c_int), strideB: val(c_longlong), beta: scalar(f64),
                C: dev(*mut f64), ldc: val(c_int), strideC: val(c_longlong),
                batchCount: val(c_int));
            fn cublasDgemmStridedBatched_64(handle, transa: val(cublasOperation_t),
                transb: val(cublasOperation_t), m: val(i64), n: val(i64), k: val(i64),
                alpha: scalar(f64), A: dev(*const f64), lda: val(i64), strideA: val(c_longlong),
                B: dev(*const f64), ldb: val(i64), strideB: val(c_longlong), beta: scalar(f64),
                C: dev(*mut f64), ldc: val(i64), strideC: val(c_longlong), batchCount: val(i64));
            fn cublasCgemmStridedBatched(handle, transa: val(cublasOperation_t),
                transb: val(cublasOperation_t), m: val(c_int), n: val(c_int), k: val(c_int),
                alpha: scalar(cuComplex), A: dev(*const cuComplex), lda: val(c_int),
                strideA: val(c_longlong), B: dev(*const cuComplex), ldb: val(c_int),
                strideB: val(c_longlong), beta: scalar(cuComplex), C: dev(*mut cuComplex),
                ldc: val(c_int), strideC: val(c_longlong), batchCount: val(c_int));
            fn cublasCgemmStridedBatched_64(handle, transa: val(cublasOperation_t),
                transb: val(cublasOperation_t), m: val(i64), n: val(i64), k: val(i64),
                alpha: scalar(cuComplex), A: dev(*const cuComplex), lda: val(i64),
                strideA: val(c_longlong), B: dev(*const cuComplex), ldb: val(i64),
                strideB: val(c_longlong), beta: scalar(cuComplex), C: dev(*mut cuComplex),
                ldc: val(i64), strideC: val(c_longlong), batchCount: val(i64));
            fn cublasZgemmStridedBatched(handle, transa: val(cublasOperation_t),
                transb: val(cublasOperation_t), m: val(c_int), n: val(c_int), k: val(c_int),
                alpha: scalar(cuDoubleComplex), A: dev(*const cuDoubleComplex), lda: val(c_int),
                strideA: val(c_longlong), B: dev(*const cuDoubleComplex), ldb: val(c_int),
                strideB: val(c_longlong), beta: scalar(cuDoubleComplex),
                C: dev(*mut cuDoubleComplex), ldc: val(c_int), strideC: val(c_longlong),
                batchCount: val(c_int));
            fn cublasZgemmStridedBatched_64(handle, transa: val(cublasOperation_t),
                transb: val(cublasOperation_t), m: val(i64), n: val(i64), k: val(i64),
                alpha: scalar(cuDoubleComplex), A: dev(*const cuDoubleComplex), lda: val(i64),
                strideA: val(c_longlong), B: dev(*const cuDoubleComplex), ldb: val(i64),
                strideB: val(c_longlong), beta: scalar(cuDoubleComplex),
                C: dev(*mut cuDoubleComplex), ldc: val(i64), strideC: val(c_longlong),
                batchCount: val(i64));
            fn cublasHgemmStridedBatched(handle, transa: val(cublasOperation_t),
                transb: val(cublasOperation_t), m: val(c_int), n: val(c_int), k: val(c_int),
                alpha: scalar(__half), A: dev(*const __half), lda: val(c_int),
                strideA: val(c_longlong), B: dev(*const __half), ldb: val(c_int),
                strideB: val(c_longlong), beta: scalar(__half), C: dev(*mut __half),
                ldc: val(c_int), strideC: val(c_longlong), batchCount: val(c_int));
            fn cublasHgemmStridedBatched_64(handle, transa: val(cublasOperation_t),
                transb: val(cublasOperation_t), m: val(i64), n: val(i64), k: val(i64),
                alpha: scalar(__half), A: dev(*const __half), lda: val(i64),
                strideA: val(c_longlong), B: dev(*const __half), ldb: val(i64),
                strideB: val(c_longlong), beta: scalar(__half), C: dev(*mut __half), ldc: val(i64),
                strideC: val(c_longlong), batchCount: val(i64));
            fn cublasCgemm3mStridedBatched(handle, transa: val(cublasOperation_t),
                transb: val(cublasOperation_t), m: val(c_int), n: val(c_int), k: val(c_int),
                alpha: scalar(cuComplex), A: dev(*const cuComplex), lda: val(c_int),
                strideA: val(c_longlong), B: dev(*const cuComplex), ldb: val(c_int),
                strideB: val(c_longlong), beta: scalar(cuComplex), C: dev(*mut cuComplex),
                ldc: val(c_int), strideC: val(c_longlong), batchCount: val(c_int));
            fn cublasCgemm3mStridedBatched_64(handle, transa: val(cublasOperation_t),
                transb: val(cublasOperation_t), m: val(i64), n: val(i64), k: val(i64),
                alpha: scalar(cuComplex), A: dev(*const cuComplex), lda: val(i64),
                strideA: val(c_longlong), B: dev(*const cuComplex), ldb: val(i64),
                strideB: val(c_longlong), beta: scalar(cuComplex), C: dev(*mut cuComplex),
                ldc: val(i64), strideC: val(c_longlong), batchCount: val(i64));
            fn cublasGemmStridedBatchedEx(handle, transa: val(cublasOperation_t),
                transb: val(cublasOperation_t), m: val(c_int), n: val(c_int), k: val(c_int),
                alpha: scalar_ex(computeType, Ctype), A: dev(*const c_void),
                Atype: val(cudaDataType), lda: val(c_int), strideA: val(c_longlong),
                B: dev(*const c_void), Btype: val(cudaDataType), ldb: val(c_int),
                strideB: val(c_longlong), beta: scalar_ex(computeType, Ctype), C: dev(*mut c_void),
                Ctype: val(cudaDataType), ldc: val(c_int), strideC: val(c_longlong),
                batchCount: val(c_int), computeType: val(cublasComputeType_t),
                algo: val(cublasGemmAlgo_t));
            fn cublasGemmStridedBatchedEx_64(handle, transa: val(cublasOperation_t),
                transb: val(cublasOperation_t), m: val(i64), n: val(i64), k: val(i64),
                alpha: scalar_ex(computeType, Ctype), A: dev(*const c_void),
                Atype: val(cudaDataType), lda: val(i64), strideA: val(c_longlong),
                B: dev(*const c_void), Btype: val(cudaDataType), ldb: val(i64),
                strideB: val(c_longlong), beta: scalar_ex(computeType, Ctype), C: dev(*mut c_void),
                Ctype: val(cudaDataType), ldc: val(i64), strideC: val(c_longlong),
                batchCount: val(i64), computeType: val(cublasComputeType_t),
                algo: val(cublasGemmAlgo_t));
            // ---- batched triangular solve
            fn cublasStrsmBatched(handle, side: val(cublasSideMode_t), uplo: val(cublasFillMode_t),
                trans: val(cublasOperation_t), diag: val(cublasDiagType_t), m: val(c_int),
                n: val(c_int), alpha: scalar(f32), A: dev(*const *const f32), lda: val(c_int),
                B: dev(*const *mut f32), ldb: val(c_int), batchCount: val(c_int));
            fn cublasStrsmBatched_64(handle, side: val(cublasSideMode_t),
                uplo: val(cublasFillMode_t), trans: val(cublasOperation_t),
                diag: val(cublasDiagType_t), m: val(i64), n: val(i64), alpha: scalar(f32),
                A: dev(*const *const f32), lda: val(i64), B: dev(*const *mut f32), ldb: val(i64),
                batchCount: val(i64));
            fn cublasDtrsmBatched(handle, side: val(cublasSideMode_t), uplo: val(cublasFillMode_t),
                trans: val(cublasOperation_t), diag: val(cublasDiagType_t), m: val(c_int),
                n: val(c_int), alpha: scalar(f64), A: dev(*const *const f64), lda: val(c_int),
                B: dev(*const *mut f64), ldb: val(c_int), batchCount: val(c_int));
            fn cublasDtrsmBatched_64(handle, side: val(cublasSideMode_t),
                uplo: val(cublasFillMode_t), trans: val(cublasOperation_t),
                diag: val(cublasDiagType_t), m: val(i64), n: val(i64), alpha: scalar(f64),
                A: dev(*const *const f64), lda: val(i64), B: dev(*const *mut f64), ldb: val(i64),
                batchCount: val(i64));
            fn cublasCtrsmBatched(handle, side: val(cublasSideMode_t), uplo: val(cublasFillMode_t),
                trans: val(cublasOperation_t), diag: val(cublasDiagType_t), m: val(c_int),
                n: val(c_int), alpha: scalar(cuComplex), A: dev(*const *const cuComplex),
                lda: val(c_int), B: dev(*const *mut cuComplex), ldb: val(c_int),
                batchCount: val(c_int));
            fn cublasCtrsmBatched_64(handle, side: val(cublasSideMode_t),
                uplo: val(cublasFillMode_t), trans: val(cublasOperation_t),
                diag: val(cublasDiagType_t), m: val(i64), n: val(i64), alpha: scalar(cuComplex),
                A: dev(*const *const cuComplex), lda: val(i64), B: dev(*const *mut cuComplex),
                ldb: val(i64), batchCount: val(i64));
            fn cublasZtrsmBatched(handle, side: val(cublasSideMode_t), uplo: val(cublasFillMode_t),
                trans: val(cublasOperation_t), diag: val(cublasDiagType_t), m: val(c_int),
                n: val(c_int), alpha: scalar(cuDoubleComplex),
                A: dev(*const *const cuDoubleComplex), lda: val(c_int),
                B: dev(*const *mut cuDoubleComplex), ldb: val(c_int), batchCount: val(c_int));
            fn cublasZtrsmBatched_64(handle, side: val(cublasSideMode_t),
                uplo: val(cublasFillMode_t), trans: val(cublasOperation_t),
                diag: val(cublasDiagType_t), m: val(i64), n: val(i64),
                alpha: scalar(cuDoubleComplex), A: dev(*const *const cuDoubleComplex),
                lda: val(i64), B: dev(*const *mut cuDoubleComplex), ldb: val(i64),
                batchCount: val(i64));
        }
    };
}

/// Bytes of a `scalar(T)` argument.
#[doc(hidden)]
#[macro_export]
macro_rules! __cublas_scalar_size {
    (f32) => {
        4
    };
    (f64) => {
        8
    };
    (__half) => {
        2
    };
    (cuComplex) => {
        8
    };
    (cuDoubleComplex) => {
        16
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __cublas_arg {
    (val ($($t:tt)*)) => {
        $crate::cublas::Arg::Val
    };
    (dev ($($t:tt)*)) => {
        $crate::cublas::Arg::Dev
    };
    (scalar ($t:ident)) => {
        $crate::cublas::Arg::Scalar($crate::__cublas_scalar_size!($t))
    };
    (scalar_ex ($c:ident, $ct:ident)) => {
        $crate::cublas::Arg::ScalarEx { compute: stringify!($c), ctype: stringify!($ct) }
    };
}

macro_rules! __cublas_table {
    ( $( $(#[$m:meta])* fn $name:ident ( handle $(, $arg:ident : $role:ident ( $($t:tt)* ) )* $(,)? ) ; )* ) => {
        /// Every forwarded cuBLAS function, indexed by its wire id.
        pub const FUNCS: &[Func] = &[
            $( Func { name: stringify!($name), args: &[ $( (stringify!($arg), $crate::__cublas_arg!($role ($($t)*))) ),* ] } ),*
        ];
        /// The table as text, hashed into the handshake's wire hash.
        pub const DEFINITION: &str = stringify!( $( $name ( $( $arg : $role ( $($t)* ) ),* ) ; )* );
    };
}
cublas_functions!(__cublas_table);

/// The wire id of a forwarded function (usable in constants; `None` if not in the table).
pub const fn index_of(name: &str) -> Option<u16> {
    let mut i = 0;
    while i < FUNCS.len() {
        if str_eq(FUNCS[i].name, name) {
            return Some(i as u16);
        }
        i += 1;
    }
    None
}

const fn str_eq(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    let mut i = 0;
    while i < a.len() {
        if a[i] != b[i] {
            return false;
        }
        i += 1;
    }
    true
}

/// Bytes of one `alpha`/`beta` of a function whose scale type follows its compute type
/// (`cublasGemmEx`, `cublasGemmBatchedEx`, `cublasGemmStridedBatchedEx`): `compute` is the
/// `cublasComputeType_t` (or, as older code passes it, a `cudaDataType`), `ctype` the
/// `cudaDataType` of C, which makes the scalar complex. `None` for a compute type we do not
/// know (the shim answers `CUBLAS_STATUS_INVALID_VALUE`: it cannot tell how much to read).
///
/// | compute type | scalar |
/// | --- | --- |
/// | `CUBLAS_COMPUTE_16F[_PEDANTIC]`, legacy `CUDA_R_16F` | `__half` (2) |
/// | `CUBLAS_COMPUTE_32F*`, `CUBLAS_COMPUTE_32I*`, legacy `CUDA_R_32F`/`CUDA_R_32I` | `float`/`int` (4), `cuComplex` (8) with a complex C |
/// | `CUBLAS_COMPUTE_64F*`, legacy `CUDA_R_64F` | `double` (8), `cuDoubleComplex` (16) with a complex C |
/// | legacy `CUDA_C_32F` / `CUDA_C_64F` | `cuComplex` (8) / `cuDoubleComplex` (16) |
pub const fn scale_size(compute: u32, ctype: u32) -> Option<usize> {
    let real = match compute {
        // CUBLAS_COMPUTE_16F, _PEDANTIC
        64 | 65 => 2,
        // CUBLAS_COMPUTE_32F, _PEDANTIC, _FAST_16F, _FAST_16BF, _FAST_TF32, _EMULATED_16BFX9;
        // CUBLAS_COMPUTE_32I, _PEDANTIC (int or float scalars: 4 bytes either way)
        68 | 69 | 74 | 75 | 77 | 78 | 72 | 73 => 4,
        // CUBLAS_COMPUTE_64F, _PEDANTIC, _EMULATED_FIXEDPOINT
        70 | 71 | 79 => 8,
        // legacy cudaDataType compute types: CUDA_R_32F, CUDA_R_64F, CUDA_R_16F, CUDA_R_32I
        0 | 10 => 4,
        1 => 8,
        2 => 2,
        // CUDA_C_32F, CUDA_C_64F: complex whatever C is
        4 => return Some(8),
        5 => return Some(16),
        _ => return None,
    };
    Some(if is_complex(ctype) { 2 * real } else { real })
}

/// Whether a `cudaDataType` is complex (`CUDA_C_*`).
pub const fn is_complex(t: u32) -> bool {
    // CUDA_C_32F 4, CUDA_C_64F 5, CUDA_C_16F 6, CUDA_C_8I 7, CUDA_C_8U 9, CUDA_C_32I 11,
    // CUDA_C_32U 13, CUDA_C_16BF 15, CUDA_C_4I 17, CUDA_C_4U 19, CUDA_C_16I 21, CUDA_C_16U 23,
    // CUDA_C_64I 25, CUDA_C_64U 27
    matches!(t, 4 | 5 | 6 | 7 | 9 | 11 | 13 | 15 | 17 | 19 | 21 | 23 | 25 | 27)
}

/// Why a call's arguments cannot be encoded or decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BadCall {
    /// No such function index.
    UnknownFunction,
    /// `args` does not have one value per argument of the function.
    ArgCount,
    /// A `scalar_ex` whose compute type is unknown (or whose named arguments are missing).
    ScaleType,
    /// The scalar bytes do not add up to what the arguments say.
    ScalarBytes,
}

impl Func {
    /// The scalars of a call in host pointer mode: `(argument index, bytes)` in argument
    /// order, given the call's widened arguments (whose `scalar_ex` sizing arguments must
    /// hold the values the caller passed).
    pub fn host_scalars(&self, args: &[u64]) -> Result<ScalarLayout, BadCall> {
        if args.len() != self.args.len() {
            return Err(BadCall::ArgCount);
        }
        let value = |name: &str| self.args.iter().position(|(n, _)| *n == name).map(|i| args[i] as u32);
        let mut out = Vec::new();
        for (i, (_, a)) in self.args.iter().enumerate() {
            match *a {
                Arg::Scalar(n) => out.push((i, n)),
                Arg::ScalarEx { compute, ctype } => {
                    let (Some(c), Some(t)) = (value(compute), value(ctype)) else {
                        return Err(BadCall::ScaleType);
                    };
                    out.push((i, scale_size(c, t).ok_or(BadCall::ScaleType)?));
                }
                Arg::Val | Arg::Dev => {}
            }
        }
        Ok(out)
    }
}

/// Where the host scalars of a call go: `(argument index, bytes)`, in argument order.
pub type ScalarLayout = Vec<(usize, usize)>;

/// The function `func` of a [`crate::ops::cublas_call`], checked against its arguments;
/// for host scalars also the layout of `scalars` (as [`Func::host_scalars`]), which must
/// account for every byte.
pub fn decode(
    func: u16,
    device_scalars: bool,
    args: &[u64],
    scalars: &[u8],
) -> Result<(&'static Func, ScalarLayout), BadCall> {
    let f = FUNCS.get(func as usize).ok_or(BadCall::UnknownFunction)?;
    if args.len() != f.args.len() {
        return Err(BadCall::ArgCount);
    }
    if device_scalars {
        return if scalars.is_empty() { Ok((f, Vec::new())) } else { Err(BadCall::ScalarBytes) };
    }
    let layout = f.host_scalars(args)?;
    if layout.iter().map(|(_, n)| n).sum::<usize>() != scalars.len() {
        return Err(BadCall::ScalarBytes);
    }
    Ok((f, layout))
}

/// The CUDA error that a failed one-way cuBLAS call (`cublas_call`, `cublas_set`) leaves
/// for the session's next synchronous call, which is most often a CUDA call
/// (`cudaStreamSynchronize`, a copy) and speaks CUDA's vocabulary. The server logs the
/// cuBLAS status itself.
pub const fn deferred_code(status: u32) -> u32 {
    match status {
        status::NOT_INITIALIZED => 400,                     // CUDA_ERROR_INVALID_HANDLE
        status::ALLOC_FAILED => 2,                          // CUDA_ERROR_OUT_OF_MEMORY
        status::INVALID_VALUE | status::MAPPING_ERROR => 1, // CUDA_ERROR_INVALID_VALUE
        status::ARCH_MISMATCH => 209,                       // CUDA_ERROR_NO_BINARY_FOR_GPU
        status::EXECUTION_FAILED => 719,                    // CUDA_ERROR_LAUNCH_FAILED
        status::NOT_SUPPORTED => crate::UNSUPPORTED,        // CUDA_ERROR_NOT_SUPPORTED
        _ => 999,                                           // CUDA_ERROR_UNKNOWN
    }
}

/// The cuBLAS status a synchronous cuBLAS entry point returns when the server answered a
/// CUDA error instead of a value: the frame's context was bad, or an earlier one-way call
/// failed (see [`deferred_code`]).
pub const fn status_from_cuda(code: u32) -> u32 {
    match code {
        0 => status::SUCCESS,
        // CUDA_ERROR_NOT_INITIALIZED, _DEINITIALIZED, _INVALID_CONTEXT, _INVALID_HANDLE,
        // _CONTEXT_IS_DESTROYED
        3 | 4 | 201 | 400 | 709 => status::NOT_INITIALIZED,
        2 => status::ALLOC_FAILED,
        1 => status::INVALID_VALUE,
        209 => status::ARCH_MISMATCH,
        801 => status::NOT_SUPPORTED,
        _ => status::EXECUTION_FAILED,
    }
}

/// `cublasGetStatusName` (and `cublasLtGetStatusName`): a static C string, as NVIDIA's
/// cuBLAS 13.1 answers (seen on the GPU machine).
pub const fn status_name(s: u32) -> &'static CStr {
    match s {
        status::SUCCESS => c"CUBLAS_STATUS_SUCCESS",
        status::NOT_INITIALIZED => c"CUBLAS_STATUS_NOT_INITIALIZED",
        status::ALLOC_FAILED => c"CUBLAS_STATUS_ALLOC_FAILED",
        status::INVALID_VALUE => c"CUBLAS_STATUS_INVALID_VALUE",
        status::ARCH_MISMATCH => c"CUBLAS_STATUS_ARCH_MISMATCH",
        status::MAPPING_ERROR => c"CUBLAS_STATUS_MAPPING_ERROR",
        status::EXECUTION_FAILED => c"CUBLAS_STATUS_EXECUTION_FAILED",
        status::INTERNAL_ERROR => c"CUBLAS_STATUS_INTERNAL_ERROR",
        status::NOT_SUPPORTED => c"CUBLAS_STATUS_NOT_SUPPORTED",
        status::LICENSE_ERROR => c"CUBLAS_STATUS_LICENSE_ERROR",
        _ => c"unrecognized status",
    }
}

/// `cublasGetStatusString` (and `cublasLtGetStatusString`): a static C string, as NVIDIA's
/// cuBLAS 13.1 answers (seen on the GPU machine).
pub const fn status_string(s: u32) -> &'static CStr {
    match s {
        status::SUCCESS => c"success",
        status::NOT_INITIALIZED => c"the library was not initialized",
        status::ALLOC_FAILED => c"the resource allocation failed",
        status::INVALID_VALUE => c"an unsupported value or parameter was passed to the function",
        status::ARCH_MISMATCH => c"the function requires an architectural feature absent from the device",
        status::MAPPING_ERROR => c"an access to GPU memory space failed",
        status::EXECUTION_FAILED => c"the function failed to launch on the GPU",
        status::INTERNAL_ERROR => c"an internal operation failed",
        status::NOT_SUPPORTED => c"the requested functionality is not supported",
        status::LICENSE_ERROR => c"the license check failed",
        _ => c"unrecognized status",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_names_are_unique_and_indexed() {
        let mut names: Vec<_> = FUNCS.iter().map(|f| f.name).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), FUNCS.len());
        for (i, f) in FUNCS.iter().enumerate() {
            assert_eq!(index_of(f.name), Some(i as u16));
        }
        assert_eq!(index_of("cublasNope"), None);
        const SGEMM: Option<u16> = index_of("cublasSgemm_v2");
        assert_eq!(SGEMM, Some(0));
        assert!(DEFINITION.contains("cublasGemmStridedBatchedEx"));
    }

    #[test]
    fn every_llama_cpp_gemm_is_in_the_table() {
        for n in [
            "cublasSgemm_v2",
            "cublasGemmEx",
            "cublasGemmBatchedEx",
            "cublasGemmStridedBatchedEx",
            "cublasSgemmBatched",
            "cublasSgemmStridedBatched",
            "cublasStrsmBatched",
        ] {
            assert!(index_of(n).is_some(), "{n}");
        }
    }

    #[test]
    fn every_function_has_two_scalars_and_sane_roles() {
        for f in FUNCS {
            let scalars: Vec<_> =
                f.args.iter().filter(|(_, a)| matches!(a, Arg::Scalar(_) | Arg::ScalarEx { .. })).collect();
            let want = if f.name.contains("trsm") { 1 } else { 2 };
            assert_eq!(scalars.len(), want, "{}", f.name);
            for (n, a) in f.args {
                if let Arg::ScalarEx { compute, ctype } = a {
                    assert!(f.args.iter().any(|(x, r)| x == compute && *r == Arg::Val), "{}: {n}", f.name);
                    assert!(f.args.iter().any(|(x, r)| x == ctype && *r == Arg::Val), "{}: {n}", f.name);
                }
            }
            // every 32-bit function has its _64 twin with the same roles
            if !f.name.ends_with("_64") {
                let twin = FUNCS[index_of(&format!("{}_64", f.name)).unwrap() as usize];
                assert_eq!(twin.args, f.args, "{}", f.name);
            }
        }
    }

    #[test]
    fn fixed_scalar_sizes() {
        let size = |name: &str| match FUNCS[index_of(name).unwrap() as usize]
            .args
            .iter()
            .find(|(n, _)| *n == "alpha")
            .unwrap()
            .1
        {
            Arg::Scalar(n) => n,
            a => panic!("{a:?}"),
        };
        assert_eq!(size("cublasSgemm_v2"), 4);
        assert_eq!(size("cublasDgemm_v2"), 8);
        assert_eq!(size("cublasHgemm"), 2);
        assert_eq!(size("cublasCgemm_v2"), 8);
        assert_eq!(size("cublasZgemmStridedBatched"), 16);
        assert_eq!(size("cublasSgemmEx"), 4);
        assert_eq!(size("cublasCgemmEx"), 8);
        assert_eq!(size("cublasZtrsmBatched_64"), 16);
    }

    #[test]
    fn scale_sizes_follow_the_compute_type() {
        const R_32F: u32 = 0;
        const R_16F: u32 = 2;
        const C_32F: u32 = 4;
        const C_64F: u32 = 5;
        const R_16BF: u32 = 14;
        assert_eq!(scale_size(64, R_16F), Some(2)); // COMPUTE_16F
        assert_eq!(scale_size(68, R_16F), Some(4)); // COMPUTE_32F, half output
        assert_eq!(scale_size(68, R_32F), Some(4));
        assert_eq!(scale_size(68, R_16BF), Some(4));
        assert_eq!(scale_size(77, R_32F), Some(4)); // FAST_TF32
        assert_eq!(scale_size(68, C_32F), Some(8)); // complex float
        assert_eq!(scale_size(70, R_32F + 1), Some(8)); // COMPUTE_64F
        assert_eq!(scale_size(70, C_64F), Some(16));
        assert_eq!(scale_size(72, 10), Some(4)); // COMPUTE_32I
        assert_eq!(scale_size(R_32F, R_32F), Some(4)); // legacy cudaDataType compute
        assert_eq!(scale_size(C_32F, C_32F), Some(8));
        assert_eq!(scale_size(C_64F, C_64F), Some(16));
        assert_eq!(scale_size(2, R_16F), Some(2));
        assert_eq!(scale_size(999, R_32F), None);
    }

    #[test]
    fn host_scalars_and_decode() {
        let f = FUNCS[index_of("cublasGemmEx").unwrap() as usize];
        // transa transb m n k alpha A Atype lda B Btype ldb beta C Ctype ldc computeType algo
        let mut args = vec![0u64, 0, 4, 4, 4, 0xa1, 0x100, 2, 4, 0x200, 2, 4, 0xb1, 0x300, 0, 4, 68, u64::MAX];
        assert_eq!(f.host_scalars(&args).unwrap(), vec![(5, 4), (12, 4)]);
        args[16] = 64; // COMPUTE_16F
        assert_eq!(f.host_scalars(&args).unwrap(), vec![(5, 2), (12, 2)]);
        args[16] = 70; // COMPUTE_64F with complex C
        args[14] = 5;
        assert_eq!(f.host_scalars(&args).unwrap(), vec![(5, 16), (12, 16)]);
        args[16] = 1234;
        assert_eq!(f.host_scalars(&args), Err(BadCall::ScaleType));
        assert_eq!(f.host_scalars(&args[1..]), Err(BadCall::ArgCount));

        let i = index_of("cublasSgemm_v2").unwrap();
        let a = [0u64; 13];
        assert_eq!(decode(i, false, &a, &[0; 8]).unwrap().1, vec![(5, 4), (10, 4)]);
        assert_eq!(decode(i, false, &a, &[0; 7]), Err(BadCall::ScalarBytes));
        assert!(decode(i, true, &a, &[]).unwrap().1.is_empty());
        assert_eq!(decode(i, true, &a, &[0; 8]), Err(BadCall::ScalarBytes));
        assert_eq!(decode(i, true, &a[1..], &[]), Err(BadCall::ArgCount));
        assert_eq!(decode(u16::MAX, true, &a, &[]), Err(BadCall::UnknownFunction));
    }

    #[test]
    fn error_vocabularies() {
        for s in [1, 3, 7, 8, 11, 13, 14, 15, 16] {
            let c = deferred_code(s);
            assert_ne!(c, 0);
            // what the next synchronous cuBLAS call makes of it is still a failure
            assert_ne!(status_from_cuda(c), status::SUCCESS);
        }
        assert_eq!(status_from_cuda(deferred_code(status::NOT_SUPPORTED)), status::NOT_SUPPORTED);
        assert_eq!(status_from_cuda(deferred_code(status::INVALID_VALUE)), status::INVALID_VALUE);
        assert_eq!(status_from_cuda(deferred_code(status::EXECUTION_FAILED)), status::EXECUTION_FAILED);
        assert_eq!(status_from_cuda(201), status::NOT_INITIALIZED);
        assert_eq!(status_name(15), c"CUBLAS_STATUS_NOT_SUPPORTED");
        assert_eq!(status_name(99), c"unrecognized status");
        assert_eq!(status_string(2), c"unrecognized status");
        assert_eq!(status_string(0), c"success");
    }
}
