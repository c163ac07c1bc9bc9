//! Pools the application creates (`cuMemPoolCreate`, as RAPIDS RMM's async resource does),
//! through our libcuda.so.1 in this test's process, against the sim. (A test process holds
//! one `InProcess` library: hence a file of its own.)

mod common;
use abi::cuda::*;
use common::*;
use std::ffi::c_void;

#[test]
fn created_pools_allocate_and_are_destroyed_once() {
    let p = InProcess::start();
    const OK: CUresult = CUresult::CUDA_SUCCESS;
    unsafe {
        let create: unsafe extern "C" fn(*mut CUmemoryPool, *const CUmemPoolProps) -> CUresult =
            p.get(b"cuMemPoolCreate");
        let destroy: unsafe extern "C" fn(CUmemoryPool) -> CUresult = p.get(b"cuMemPoolDestroy");
        let default: unsafe extern "C" fn(*mut CUmemoryPool, CUdevice) -> CUresult =
            p.get(b"cuDeviceGetDefaultMemPool");
        let set: unsafe extern "C" fn(CUmemoryPool, CUmemPool_attribute, *mut c_void) -> CUresult =
            p.get(b"cuMemPoolSetAttribute");
        let get: unsafe extern "C" fn(CUmemoryPool, CUmemPool_attribute, *mut c_void) -> CUresult =
            p.get(b"cuMemPoolGetAttribute");
        let stream: unsafe extern "C" fn(*mut CUstream, u32) -> CUresult = p.get(b"cuStreamCreate");
        let alloc: unsafe extern "C" fn(*mut CUdeviceptr, usize, CUmemoryPool, CUstream) -> CUresult =
            p.get(b"cuMemAllocFromPoolAsync");
        let free: unsafe extern "C" fn(CUdeviceptr, CUstream) -> CUresult = p.get(b"cuMemFreeAsync");

        let mut props = CUmemPoolProps {
            allocType: CUmemAllocationType::CU_MEM_ALLOCATION_TYPE_PINNED,
            location: CUmemLocation { type_: CUmemLocationType::CU_MEM_LOCATION_TYPE_DEVICE, id: 0 },
            ..Default::default()
        };
        let mut pool = std::ptr::null_mut();
        assert_eq!(create(&mut pool, &props), OK);
        assert!(!pool.is_null());
        let mut threshold = 1u64 << 30;
        let attr = CUmemPool_attribute::CU_MEMPOOL_ATTR_RELEASE_THRESHOLD;
        assert_eq!(set(pool, attr, (&raw mut threshold).cast()), OK);
        let mut got = 0u64;
        assert_eq!(get(pool, attr, (&raw mut got).cast()), OK);
        assert_eq!(got, threshold);
        let mut s = std::ptr::null_mut();
        assert_eq!(stream(&mut s, 0), OK);
        let mut d = 0;
        assert_eq!(alloc(&mut d, 1 << 16, pool, s), OK);
        assert_ne!(d, 0);
        assert_eq!(free(d, s), OK);
        assert_eq!(destroy(pool), OK);
        assert_eq!(destroy(pool), CUresult::CUDA_ERROR_INVALID_VALUE, "destroyed once");
        assert_eq!(alloc(&mut d, 1 << 16, pool, s), CUresult::CUDA_ERROR_INVALID_HANDLE, "gone");

        // A device's own pool is the driver's to keep.
        let mut own = std::ptr::null_mut();
        assert_eq!(default(&mut own, 0), OK);
        assert_ne!(destroy(own), OK);
        // Devices this process does not have, and host memory, are refused.
        props.location.id = 7;
        assert_eq!(create(&mut pool, &props), CUresult::CUDA_ERROR_INVALID_DEVICE);
        props.location = CUmemLocation { type_: CUmemLocationType::CU_MEM_LOCATION_TYPE_HOST, id: 0 };
        assert_eq!(create(&mut pool, &props), CUresult::CUDA_ERROR_NOT_SUPPORTED);
        assert_eq!(create(&mut pool, std::ptr::null()), CUresult::CUDA_ERROR_INVALID_VALUE);

        // The allocation behind a mapping: retained (a reference more, released like the
        // first) and described, its device this process's.
        let reserve: unsafe extern "C" fn(*mut CUdeviceptr, usize, usize, CUdeviceptr, u64) -> CUresult =
            p.get(b"cuMemAddressReserve");
        let mem_create: unsafe extern "C" fn(
            *mut CUmemGenericAllocationHandle,
            usize,
            *const CUmemAllocationProp,
            u64,
        ) -> CUresult = p.get(b"cuMemCreate");
        let map: unsafe extern "C" fn(CUdeviceptr, usize, usize, CUmemGenericAllocationHandle, u64) -> CUresult =
            p.get(b"cuMemMap");
        let unmap: unsafe extern "C" fn(CUdeviceptr, usize) -> CUresult = p.get(b"cuMemUnmap");
        let release: unsafe extern "C" fn(CUmemGenericAllocationHandle) -> CUresult = p.get(b"cuMemRelease");
        let retain: unsafe extern "C" fn(*mut CUmemGenericAllocationHandle, *mut c_void) -> CUresult =
            p.get(b"cuMemRetainAllocationHandle");
        let describe: unsafe extern "C" fn(*mut CUmemAllocationProp, CUmemGenericAllocationHandle) -> CUresult =
            p.get(b"cuMemGetAllocationPropertiesFromHandle");
        let size = 2 << 20;
        let prop = CUmemAllocationProp {
            type_: CUmemAllocationType::CU_MEM_ALLOCATION_TYPE_PINNED,
            location: CUmemLocation { type_: CUmemLocationType::CU_MEM_LOCATION_TYPE_DEVICE, id: 0 },
            ..Default::default()
        };
        let (mut va, mut h, mut again) = (0, 0, 0);
        assert_eq!(reserve(&mut va, size, 0, 0, 0), OK);
        assert_eq!(mem_create(&mut h, size, &prop, 0), OK);
        assert_eq!(map(va, size, 0, h, 0), OK);
        assert_eq!(retain(&mut again, va as *mut c_void), OK);
        assert_eq!(again, h);
        let mut described = CUmemAllocationProp::default();
        assert_eq!(describe(&mut described, again), OK);
        assert_eq!(
            (described.type_, described.location.type_, described.location.id),
            (prop.type_, prop.location.type_, 0)
        );
        assert_eq!(release(again), OK);
        assert_eq!(release(h), OK, "the first reference, still there");
        assert_eq!(unmap(va, size), OK);
        assert_eq!(retain(&mut again, 0x10 as *mut c_void), CUresult::CUDA_ERROR_INVALID_VALUE);

        // Sharing memory by file descriptor is not supported, but its entry points resolve:
        // PyTorch's expandable segments fetch them at the first allocation.
        let proc_address: unsafe extern "C" fn(
            *const std::os::raw::c_char,
            *mut *mut c_void,
            i32,
            u64,
            *mut CUdriverProcAddressQueryResult,
        ) -> CUresult = p.get(b"cuGetProcAddress_v2");
        let mut f = std::ptr::null_mut();
        let mut found = CUdriverProcAddressQueryResult::CU_GET_PROC_ADDRESS_SYMBOL_NOT_FOUND;
        assert_eq!(proc_address(c"cuMemExportToShareableHandle".as_ptr(), &mut f, 12000, 0, &mut found), OK);
        assert_eq!(found, CUdriverProcAddressQueryResult::CU_GET_PROC_ADDRESS_SUCCESS);
        let export: unsafe extern "C" fn(
            *mut c_void,
            CUmemGenericAllocationHandle,
            CUmemAllocationHandleType,
            u64,
        ) -> CUresult = std::mem::transmute(f);
        let mut fd = 0i32;
        let posix = CUmemAllocationHandleType::CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR;
        assert_eq!(export((&raw mut fd).cast(), 1, posix, 0), CUresult::CUDA_ERROR_NOT_SUPPORTED);
        // Other entry points that are not implemented still do not resolve: as the driver
        // says so, with success, no function and the status.
        assert_eq!(proc_address(c"cuGraphAddMemcpyNode".as_ptr(), &mut f, 12000, 0, &mut found), OK);
        assert!(f.is_null());
        assert_eq!(found, CUdriverProcAddressQueryResult::CU_GET_PROC_ADDRESS_SYMBOL_NOT_FOUND);
    }
}
