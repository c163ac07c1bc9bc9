//! Tensor maps (`cuTensorMapEncodeTiled`, `cuTensorMapReplaceAddress`: Hopper's TMA
//! descriptors, as Triton encodes them at every launch) through our libcuda.so.1 in this
//! test's process, against the sim, whose maps hold the arguments in order and count the
//! encodes it made. (A test process holds one `InProcess` library: hence a file of its own.)

mod common;
use abi::cuda::*;
use common::*;
use std::ffi::c_void;

type Tiled = unsafe extern "C" fn(
    *mut CUtensorMap,
    CUtensorMapDataType,
    u32,
    *mut c_void,
    *const u64,
    *const u64,
    *const u32,
    *const u32,
    CUtensorMapInterleave,
    CUtensorMapSwizzle,
    CUtensorMapL2promotion,
    CUtensorMapFloatOOBfill,
) -> CUresult;

#[test]
fn tensor_maps_are_encoded_once_for_the_same_arguments() {
    let p = InProcess::start();
    const OK: CUresult = CUresult::CUDA_SUCCESS;
    unsafe {
        let tiled: Tiled = p.get(b"cuTensorMapEncodeTiled");
        let replace: unsafe extern "C" fn(*mut CUtensorMap, *mut c_void) -> CUresult =
            p.get(b"cuTensorMapReplaceAddress");
        let alloc: unsafe extern "C" fn(*mut CUdeviceptr, usize) -> CUresult = p.get(b"cuMemAlloc_v2");
        let mut d = 0;
        assert_eq!(alloc(&mut d, 1 << 20), OK);

        let (dims, strides, boxes, steps) = ([256u64, 128], [512u64], [64u32, 32], [1u32, 1]);
        let encode = |m: &mut CUtensorMap, at: u64, dims: &[u64; 2]| {
            tiled(
                m,
                CUtensorMapDataType::CU_TENSOR_MAP_DATA_TYPE_FLOAT16,
                2,
                at as *mut c_void,
                dims.as_ptr(),
                strides.as_ptr(),
                boxes.as_ptr(),
                steps.as_ptr(),
                CUtensorMapInterleave::CU_TENSOR_MAP_INTERLEAVE_NONE,
                CUtensorMapSwizzle::CU_TENSOR_MAP_SWIZZLE_128B,
                CUtensorMapL2promotion::CU_TENSOR_MAP_L2_PROMOTION_L2_128B,
                CUtensorMapFloatOOBfill::CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE,
            )
        };
        let mut m = CUtensorMap { opaque: [0; 16] };
        assert_eq!(encode(&mut m, d, &dims), OK);
        assert_eq!(m.opaque[0], d);
        assert_eq!(&m.opaque[2..5], &[256, 128, 512], "dims, then strides");
        assert_eq!(m.opaque[5], 64 << 32 | 1, "box and element stride of the first dimension");
        assert_eq!(m.opaque[15], 1, "the first encode");
        let mut again = CUtensorMap { opaque: [0; 16] };
        assert_eq!(encode(&mut again, d, &dims), OK);
        assert_eq!(again.opaque, m.opaque, "the same arguments: the kept answer, no second encode");
        assert_eq!(encode(&mut again, d, &[256, 64]), OK);
        assert_eq!(again.opaque[15], 2, "other dimensions: encoded");
        assert_eq!(again.opaque[3], 64);

        assert_eq!(replace(&mut again, (d + 4096) as *mut c_void), OK);
        assert_eq!(again.opaque[0], d + 4096);
        let mut expected = m.opaque;
        (expected[0], expected[3], expected[15]) = (d + 4096, 64, 2);
        assert_eq!(again.opaque, expected, "only the address replaced");

        // The driver's checks are the server's; the client bounds the rank before reading arrays.
        assert_eq!(encode(&mut m, d + 3, &dims), CUresult::CUDA_ERROR_INVALID_VALUE, "misaligned");
        let r = tiled(
            &mut m,
            CUtensorMapDataType::CU_TENSOR_MAP_DATA_TYPE_FLOAT16,
            6,
            d as *mut c_void,
            std::ptr::null(),
            std::ptr::null(),
            std::ptr::null(),
            std::ptr::null(),
            CUtensorMapInterleave::CU_TENSOR_MAP_INTERLEAVE_NONE,
            CUtensorMapSwizzle::CU_TENSOR_MAP_SWIZZLE_NONE,
            CUtensorMapL2promotion::CU_TENSOR_MAP_L2_PROMOTION_NONE,
            CUtensorMapFloatOOBfill::CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE,
        );
        assert_eq!(r, CUresult::CUDA_ERROR_INVALID_VALUE, "rank 6");
        assert_eq!(replace(std::ptr::null_mut(), d as *mut c_void), CUresult::CUDA_ERROR_INVALID_VALUE);
    }
}
