//! The GEMM family, generated from `protocol::cublas_functions!`: one exported function per
//! table entry, with exactly the C signature of the headers (checked against `crate::api`
//! below). Each widens its arguments to `u64` and hands them to [`forward`], which reads the
//! host scalars when the handle is in host pointer mode and sends `ops::cublas_call`,
//! one-way.

use super::handles::{self, POINTER_MODE_DEVICE};
use super::{cublasHandle_t, cublasStatus_t, st, status};
#[allow(unused_imports)]
use crate::api::*;
use protocol::cublas::FUNCS;
use protocol::ops;
#[allow(unused_imports)]
use std::os::raw::{c_int, c_longlong, c_void};

/// An argument as it travels: widened to `u64`, signed values sign-extended (the server
/// truncates back to the C type).
pub trait ToWire: Copy {
    fn to_wire(self) -> u64;
}

impl ToWire for c_int {
    fn to_wire(self) -> u64 {
        self as i64 as u64
    }
}

impl ToWire for i64 {
    fn to_wire(self) -> u64 {
        self as u64
    }
}

impl<T> ToWire for *const T {
    fn to_wire(self) -> u64 {
        self as usize as u64
    }
}

impl<T> ToWire for *mut T {
    fn to_wire(self) -> u64 {
        self as usize as u64
    }
}

macro_rules! enum_to_wire {
    ($($t:ty),*) => {
        $( impl ToWire for $t {
            fn to_wire(self) -> u64 {
                self.0.to_wire()
            }
        } )*
    };
}
impl ToWire for u32 {
    fn to_wire(self) -> u64 {
        self as u64
    }
}
enum_to_wire!(
    cublasOperation_t,
    cudaDataType,
    cublasComputeType_t,
    cublasGemmAlgo_t,
    cublasSideMode_t,
    cublasFillMode_t,
    cublasDiagType_t
);

/// Send `FUNCS[func]` on `handle` with its widened arguments (one per argument after the
/// handle). In host pointer mode the scalars' bytes are read from the caller's memory.
///
/// # Safety
/// In host pointer mode every scalar argument must point to readable host memory of its
/// type (cuBLAS's own contract).
pub unsafe fn forward(func: u16, handle: cublasHandle_t, args: &[u64]) -> u32 {
    let Some(state) = handles::get(handle) else {
        return status::NOT_INITIALIZED;
    };
    let Some(f) = FUNCS.get(func as usize) else {
        return status::INTERNAL_ERROR;
    };
    let device_scalars = state.pointer_mode == POINTER_MODE_DEVICE;
    let mut args = args.to_vec();
    let mut scalars = Vec::new();
    if device_scalars {
        if f.host_scalars(&args).is_ok_and(|l| l.iter().any(|&(i, _)| args[i] == 0)) {
            return status::INVALID_VALUE;
        }
    } else {
        let Ok(layout) = f.host_scalars(&args) else {
            return status::INVALID_VALUE;
        };
        for (i, n) in layout {
            let p = args[i] as usize as *const u8;
            if p.is_null() {
                return status::INVALID_VALUE;
            }
            // SAFETY: the caller's host scalar of `n` bytes (see above).
            scalars.extend_from_slice(unsafe { std::slice::from_raw_parts(p, n) });
            args[i] = 0;
        }
    }
    handles::send_oneway(&ops::cublas_call { func, handle: handle as u64, device_scalars, args, scalars })
}

/// The C type of an argument of the table.
macro_rules! c_type {
    (val ($t:ty)) => { $t };
    (dev ($t:ty)) => { $t };
    (scalar ($t:ty)) => { *const $t };
    (scalar_ex ($c:ident, $ct:ident)) => { *const c_void };
}

/// The size check of a `scalar(T)` argument: the wire's size is the C type's.
macro_rules! scalar_size_check {
    (scalar ($t:ident)) => {
        const _: () = assert!(size_of::<$t>() == protocol::__cublas_scalar_size!($t));
    };
    ($($other:tt)*) => {};
}

macro_rules! forward_all {
    ( $( fn $name:ident ( handle $(, $arg:ident : $role:ident ( $($t:tt)* ) )* $(,)? ) ; )* ) => {
        $(
            #[unsafe(no_mangle)]
            pub unsafe extern "C" fn $name(handle: cublasHandle_t $(, $arg: c_type!($role ($($t)*)) )*) -> cublasStatus_t {
                const FUNC: u16 = match protocol::cublas::index_of(stringify!($name)) {
                    Some(i) => i,
                    None => panic!("not in the table"),
                };
                // SAFETY: the caller's arguments, under cuBLAS's contract.
                st(shim_support::guard(status::INTERNAL_ERROR, || unsafe {
                    forward(FUNC, handle, &[ $( ToWire::to_wire($arg) ),* ])
                }))
            }
            $( scalar_size_check!($role ($($t)*)); )*
        )*

        /// Never called: it compiles only if every generated function has exactly the
        /// signature of the headers' (`crate::api::CublasLib`, bindgen).
        #[allow(dead_code)]
        fn signatures_match_the_headers(lib: &CublasLib) {
            fn same<F, E>(_: &Result<F, E>, _: F) {}
            $( same(&lib.$name, $name); )*
        }
    };
}

protocol::cublas_functions!(forward_all);

#[cfg(test)]
mod tests {
    use super::super::wire::test_wire;
    use super::*;
    use protocol::cublas::index_of;

    fn sent_calls() -> Vec<ops::cublas_call> {
        test_wire::take()
            .into_iter()
            .map(|(op, a)| {
                assert_eq!(op, protocol::Op::cublas_call as u32);
                postcard::from_bytes(&a).unwrap()
            })
            .collect()
    }

    fn handle(id: u64, pointer_mode: u32) -> cublasHandle_t {
        handles::register(id, handles::State { pointer_mode, ..Default::default() });
        id as usize as cublasHandle_t
    }

    #[test]
    fn sgemm_sends_host_scalars_by_value() {
        let h = handle(0x9100, 0);
        let (alpha, beta) = (1.5f32, -2.0f32);
        let (a, b, c) = (0x7f00_0000_1000usize, 0x7f00_0000_2000usize, 0x7f00_0000_3000usize);
        let r = unsafe {
            cublasSgemm_v2(
                h,
                cublasOperation_t::CUBLAS_OP_T,
                cublasOperation_t::CUBLAS_OP_N,
                -3,
                5,
                7,
                &alpha,
                a as *const f32,
                8,
                b as *const f32,
                9,
                &beta,
                c as *mut f32,
                10,
            )
        };
        assert_eq!(r.0, 0);
        let sent = sent_calls();
        assert_eq!(sent.len(), 1);
        let s = &sent[0];
        assert_eq!(s.func, index_of("cublasSgemm_v2").unwrap());
        assert_eq!(s.handle, 0x9100);
        assert!(!s.device_scalars);
        assert_eq!(s.args, vec![1, 0, (-3i64) as u64, 5, 7, 0, a as u64, 8, b as u64, 9, 0, c as u64, 10]);
        let mut want = alpha.to_le_bytes().to_vec();
        want.extend(beta.to_le_bytes());
        assert_eq!(s.scalars, want);
    }

    #[test]
    fn device_pointer_mode_passes_scalars_through() {
        let h = handle(0x9200, POINTER_MODE_DEVICE);
        let (alpha, beta) = (0x7f00_0000_0100usize, 0x7f00_0000_0200usize);
        let r = unsafe {
            cublasGemmStridedBatchedEx(
                h,
                cublasOperation_t::CUBLAS_OP_N,
                cublasOperation_t::CUBLAS_OP_N,
                4,
                4,
                4,
                alpha as *const c_void,
                0x1000 as *const c_void,
                cudaDataType::CUDA_R_16F,
                4,
                16,
                0x2000 as *const c_void,
                cudaDataType::CUDA_R_16F,
                4,
                -16,
                beta as *const c_void,
                0x3000 as *mut c_void,
                cudaDataType::CUDA_R_32F,
                4,
                16,
                3,
                cublasComputeType_t::CUBLAS_COMPUTE_32F,
                cublasGemmAlgo_t::CUBLAS_GEMM_DEFAULT,
            )
        };
        assert_eq!(r.0, 0);
        let s = &sent_calls()[0];
        assert!(s.device_scalars);
        assert!(s.scalars.is_empty());
        assert_eq!(s.args[5], alpha as u64);
        // transa transb m n k alpha A Atype lda strideA B Btype ldb strideB beta ...
        assert_eq!(s.args[13], (-16i64) as u64);
        assert_eq!(s.args[14], beta as u64);
        assert_eq!(s.args.len(), 22);
        assert_eq!(s.args[20], 68);
        // CUBLAS_GEMM_DEFAULT is -1: sign-extended
        assert_eq!(s.args[21], u64::MAX);
    }

    #[test]
    fn gemm_ex_scalars_follow_the_compute_type() {
        let h = handle(0x9300, 0);
        let call = |compute: cublasComputeType_t, ctype: cudaDataType, alpha: *const c_void, beta: *const c_void| unsafe {
            cublasGemmEx(
                h,
                cublasOperation_t::CUBLAS_OP_N,
                cublasOperation_t::CUBLAS_OP_N,
                2,
                2,
                2,
                alpha,
                0x1000 as *const c_void,
                ctype,
                2,
                0x2000 as *const c_void,
                ctype,
                2,
                beta,
                0x3000 as *mut c_void,
                ctype,
                2,
                compute,
                cublasGemmAlgo_t::CUBLAS_GEMM_DEFAULT_TENSOR_OP,
            )
            .0
        };
        let (h1, h2) = (0x3c00u16, 0x4000u16); // __half 1.0, 2.0
        assert_eq!(
            call(
                cublasComputeType_t::CUBLAS_COMPUTE_16F,
                cudaDataType::CUDA_R_16F,
                (&h1 as *const u16).cast(),
                (&h2 as *const u16).cast()
            ),
            0
        );
        let (d1, d2) = (1.0f64, 0.5f64);
        assert_eq!(
            call(
                cublasComputeType_t::CUBLAS_COMPUTE_64F,
                cudaDataType::CUDA_R_64F,
                (&d1 as *const f64).cast(),
                (&d2 as *const f64).cast()
            ),
            0
        );
        let (c1, c2) = ([1.0f32, 2.0], [3.0f32, 4.0]); // cuComplex
        assert_eq!(
            call(
                cublasComputeType_t::CUBLAS_COMPUTE_32F,
                cudaDataType::CUDA_C_32F,
                c1.as_ptr().cast(),
                c2.as_ptr().cast()
            ),
            0
        );
        // an unknown compute type: the size of the scalars is unknowable
        assert_eq!(
            call(cublasComputeType_t(12345), cudaDataType::CUDA_R_32F, c1.as_ptr().cast(), c2.as_ptr().cast()),
            status::INVALID_VALUE
        );
        // a null host scalar
        assert_eq!(
            call(
                cublasComputeType_t::CUBLAS_COMPUTE_32F,
                cudaDataType::CUDA_R_32F,
                std::ptr::null(),
                c2.as_ptr().cast()
            ),
            status::INVALID_VALUE
        );
        let sent = sent_calls();
        assert_eq!(sent.len(), 3);
        assert_eq!(sent[0].scalars, [0x00, 0x3c, 0x00, 0x40]);
        assert_eq!(sent[1].scalars, [d1.to_le_bytes(), d2.to_le_bytes()].concat());
        let cbytes: Vec<u8> = c1.iter().chain(&c2).flat_map(|f| f.to_le_bytes()).collect();
        assert_eq!(sent[2].scalars, cbytes);
        assert!(sent.iter().all(|s| s.args[5] == 0 && s.args[12] == 0));
    }

    #[test]
    fn batched_pointer_arrays_and_64_bit_forms() {
        let h = handle(0x9400, 0);
        let alpha = 1.0f32;
        let r = unsafe {
            cublasStrsmBatched_64(
                h,
                cublasSideMode_t::CUBLAS_SIDE_LEFT,
                cublasFillMode_t::CUBLAS_FILL_MODE_UPPER,
                cublasOperation_t::CUBLAS_OP_N,
                cublasDiagType_t::CUBLAS_DIAG_UNIT,
                1 << 33,
                2,
                &alpha,
                0xa000 as *const *const f32,
                1 << 33,
                0xb000 as *const *mut f32,
                -1,
                7,
            )
        };
        assert_eq!(r.0, 0);
        let s = &sent_calls()[0];
        assert_eq!(s.func, index_of("cublasStrsmBatched_64").unwrap());
        assert_eq!(s.args, vec![0, 1, 0, 1, 1 << 33, 2, 0, 0xa000, 1 << 33, 0xb000, u64::MAX, 7]);
        assert_eq!(s.scalars, 1.0f32.to_le_bytes());
    }

    #[test]
    fn unknown_handle_sends_nothing() {
        let one = 1.0f32;
        let r = unsafe {
            cublasSgemm_v2(
                0x1234 as cublasHandle_t,
                cublasOperation_t::CUBLAS_OP_N,
                cublasOperation_t::CUBLAS_OP_N,
                1,
                1,
                1,
                &one,
                std::ptr::null(),
                1,
                std::ptr::null(),
                1,
                &one,
                std::ptr::null_mut(),
                1,
            )
        };
        assert_eq!(r.0, status::NOT_INITIALIZED);
        assert!(test_wire::take().is_empty());
    }
}
