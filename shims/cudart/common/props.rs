//! `cudaDeviceProp` from driver queries: every field of this major version's layout, from the
//! attribute NVIDIA's runtime reads for it (the struct comes from `crate::rt`, so the 12 and
//! 13 layouts each get their own fields).

use std::ffi::c_char;

use abi::cuda::CUdevice_attribute as A;

use super::error::Res;
use crate::rt::{self, cudaError_t as E};

/// The driver queries `cudaGetDeviceProperties` needs (a fake one in the tests).
pub(crate) trait DeviceInfo {
    fn attribute(&self, a: A) -> Res<i32>;
    fn name(&self, buf: &mut [c_char; 256]) -> Res;
    fn uuid(&self) -> Res<[c_char; 16]>;
    fn total_mem(&self) -> Res<usize>;
}

/// The properties of the device `info` describes. An attribute the driver does not know
/// (`cudaErrorInvalidValue`: an older driver, say) reads as 0; other failures fail.
pub(crate) fn properties(info: &impl DeviceInfo) -> Res<rt::cudaDeviceProp> {
    let i = |a: A| match info.attribute(a) {
        Err(E::cudaErrorInvalidValue) => Ok(0),
        r => r,
    };
    let u = |a: A| i(a).map(|v| usize::try_from(v).unwrap_or(0));
    let c = |a: A| i(a).map(|v| v as u32);

    let mut p = rt::cudaDeviceProp::default();
    info.name(&mut p.name)?;
    p.uuid = rt::cudaUUID_t { bytes: info.uuid()? };
    p.totalGlobalMem = info.total_mem()?;
    p.sharedMemPerBlock = u(A::CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK)?;
    p.regsPerBlock = i(A::CU_DEVICE_ATTRIBUTE_MAX_REGISTERS_PER_BLOCK)?;
    p.warpSize = i(A::CU_DEVICE_ATTRIBUTE_WARP_SIZE)?;
    p.memPitch = u(A::CU_DEVICE_ATTRIBUTE_MAX_PITCH)?;
    p.maxThreadsPerBlock = i(A::CU_DEVICE_ATTRIBUTE_MAX_THREADS_PER_BLOCK)?;
    p.maxThreadsDim = [
        i(A::CU_DEVICE_ATTRIBUTE_MAX_BLOCK_DIM_X)?,
        i(A::CU_DEVICE_ATTRIBUTE_MAX_BLOCK_DIM_Y)?,
        i(A::CU_DEVICE_ATTRIBUTE_MAX_BLOCK_DIM_Z)?,
    ];
    p.maxGridSize = [
        i(A::CU_DEVICE_ATTRIBUTE_MAX_GRID_DIM_X)?,
        i(A::CU_DEVICE_ATTRIBUTE_MAX_GRID_DIM_Y)?,
        i(A::CU_DEVICE_ATTRIBUTE_MAX_GRID_DIM_Z)?,
    ];
    p.totalConstMem = u(A::CU_DEVICE_ATTRIBUTE_TOTAL_CONSTANT_MEMORY)?;
    p.major = i(A::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR)?;
    p.minor = i(A::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR)?;
    p.textureAlignment = u(A::CU_DEVICE_ATTRIBUTE_TEXTURE_ALIGNMENT)?;
    p.texturePitchAlignment = u(A::CU_DEVICE_ATTRIBUTE_TEXTURE_PITCH_ALIGNMENT)?;
    p.multiProcessorCount = i(A::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)?;
    p.integrated = i(A::CU_DEVICE_ATTRIBUTE_INTEGRATED)?;
    p.canMapHostMemory = i(A::CU_DEVICE_ATTRIBUTE_CAN_MAP_HOST_MEMORY)?;
    p.maxTexture1D = i(A::CU_DEVICE_ATTRIBUTE_MAXIMUM_TEXTURE1D_WIDTH)?;
    p.maxTexture1DMipmap = i(A::CU_DEVICE_ATTRIBUTE_MAXIMUM_TEXTURE1D_MIPMAPPED_WIDTH)?;
    p.maxTexture2D =
        [i(A::CU_DEVICE_ATTRIBUTE_MAXIMUM_TEXTURE2D_WIDTH)?, i(A::CU_DEVICE_ATTRIBUTE_MAXIMUM_TEXTURE2D_HEIGHT)?];
    p.maxTexture2DMipmap = [
        i(A::CU_DEVICE_ATTRIBUTE_MAXIMUM_TEXTURE2D_MIPMAPPED_WIDTH)?,
        i(A::CU_DEVICE_ATTRIBUTE_MAXIMUM_TEXTURE2D_MIPMAPPED_HEIGHT)?,
    ];
    p.maxTexture2DLinear = [
        i(A::CU_DEVICE_ATTRIBUTE_MAXIMUM_TEXTURE2D_LINEAR_WIDTH)?,
        i(A::CU_DEVICE_ATTRIBUTE_MAXIMUM_TEXTURE2D_LINEAR_HEIGHT)?,
        i(A::CU_DEVICE_ATTRIBUTE_MAXIMUM_TEXTURE2D_LINEAR_PITCH)?,
    ];
    p.maxTexture2DGather = [
        i(A::CU_DEVICE_ATTRIBUTE_MAXIMUM_TEXTURE2D_GATHER_WIDTH)?,
        i(A::CU_DEVICE_ATTRIBUTE_MAXIMUM_TEXTURE2D_GATHER_HEIGHT)?,
    ];
    p.maxTexture3D = [
        i(A::CU_DEVICE_ATTRIBUTE_MAXIMUM_TEXTURE3D_WIDTH)?,
        i(A::CU_DEVICE_ATTRIBUTE_MAXIMUM_TEXTURE3D_HEIGHT)?,
        i(A::CU_DEVICE_ATTRIBUTE_MAXIMUM_TEXTURE3D_DEPTH)?,
    ];
    p.maxTexture3DAlt = [
        i(A::CU_DEVICE_ATTRIBUTE_MAXIMUM_TEXTURE3D_WIDTH_ALTERNATE)?,
        i(A::CU_DEVICE_ATTRIBUTE_MAXIMUM_TEXTURE3D_HEIGHT_ALTERNATE)?,
        i(A::CU_DEVICE_ATTRIBUTE_MAXIMUM_TEXTURE3D_DEPTH_ALTERNATE)?,
    ];
    p.maxTextureCubemap = i(A::CU_DEVICE_ATTRIBUTE_MAXIMUM_TEXTURECUBEMAP_WIDTH)?;
    p.maxTexture1DLayered = [
        i(A::CU_DEVICE_ATTRIBUTE_MAXIMUM_TEXTURE1D_LAYERED_WIDTH)?,
        i(A::CU_DEVICE_ATTRIBUTE_MAXIMUM_TEXTURE1D_LAYERED_LAYERS)?,
    ];
    p.maxTexture2DLayered = [
        i(A::CU_DEVICE_ATTRIBUTE_MAXIMUM_TEXTURE2D_LAYERED_WIDTH)?,
        i(A::CU_DEVICE_ATTRIBUTE_MAXIMUM_TEXTURE2D_LAYERED_HEIGHT)?,
        i(A::CU_DEVICE_ATTRIBUTE_MAXIMUM_TEXTURE2D_LAYERED_LAYERS)?,
    ];
    p.maxTextureCubemapLayered = [
        i(A::CU_DEVICE_ATTRIBUTE_MAXIMUM_TEXTURECUBEMAP_LAYERED_WIDTH)?,
        i(A::CU_DEVICE_ATTRIBUTE_MAXIMUM_TEXTURECUBEMAP_LAYERED_LAYERS)?,
    ];
    p.maxSurface1D = i(A::CU_DEVICE_ATTRIBUTE_MAXIMUM_SURFACE1D_WIDTH)?;
    p.maxSurface2D =
        [i(A::CU_DEVICE_ATTRIBUTE_MAXIMUM_SURFACE2D_WIDTH)?, i(A::CU_DEVICE_ATTRIBUTE_MAXIMUM_SURFACE2D_HEIGHT)?];
    p.maxSurface3D = [
        i(A::CU_DEVICE_ATTRIBUTE_MAXIMUM_SURFACE3D_WIDTH)?,
        i(A::CU_DEVICE_ATTRIBUTE_MAXIMUM_SURFACE3D_HEIGHT)?,
        i(A::CU_DEVICE_ATTRIBUTE_MAXIMUM_SURFACE3D_DEPTH)?,
    ];
    p.maxSurface1DLayered = [
        i(A::CU_DEVICE_ATTRIBUTE_MAXIMUM_SURFACE1D_LAYERED_WIDTH)?,
        i(A::CU_DEVICE_ATTRIBUTE_MAXIMUM_SURFACE1D_LAYERED_LAYERS)?,
    ];
    p.maxSurface2DLayered = [
        i(A::CU_DEVICE_ATTRIBUTE_MAXIMUM_SURFACE2D_LAYERED_WIDTH)?,
        i(A::CU_DEVICE_ATTRIBUTE_MAXIMUM_SURFACE2D_LAYERED_HEIGHT)?,
        i(A::CU_DEVICE_ATTRIBUTE_MAXIMUM_SURFACE2D_LAYERED_LAYERS)?,
    ];
    p.maxSurfaceCubemap = i(A::CU_DEVICE_ATTRIBUTE_MAXIMUM_SURFACECUBEMAP_WIDTH)?;
    p.maxSurfaceCubemapLayered = [
        i(A::CU_DEVICE_ATTRIBUTE_MAXIMUM_SURFACECUBEMAP_LAYERED_WIDTH)?,
        i(A::CU_DEVICE_ATTRIBUTE_MAXIMUM_SURFACECUBEMAP_LAYERED_LAYERS)?,
    ];
    p.surfaceAlignment = u(A::CU_DEVICE_ATTRIBUTE_SURFACE_ALIGNMENT)?;
    p.concurrentKernels = i(A::CU_DEVICE_ATTRIBUTE_CONCURRENT_KERNELS)?;
    p.ECCEnabled = i(A::CU_DEVICE_ATTRIBUTE_ECC_ENABLED)?;
    p.pciBusID = i(A::CU_DEVICE_ATTRIBUTE_PCI_BUS_ID)?;
    p.pciDeviceID = i(A::CU_DEVICE_ATTRIBUTE_PCI_DEVICE_ID)?;
    p.pciDomainID = i(A::CU_DEVICE_ATTRIBUTE_PCI_DOMAIN_ID)?;
    p.tccDriver = i(A::CU_DEVICE_ATTRIBUTE_TCC_DRIVER)?;
    p.asyncEngineCount = i(A::CU_DEVICE_ATTRIBUTE_ASYNC_ENGINE_COUNT)?;
    p.unifiedAddressing = i(A::CU_DEVICE_ATTRIBUTE_UNIFIED_ADDRESSING)?;
    p.memoryBusWidth = i(A::CU_DEVICE_ATTRIBUTE_GLOBAL_MEMORY_BUS_WIDTH)?;
    p.l2CacheSize = i(A::CU_DEVICE_ATTRIBUTE_L2_CACHE_SIZE)?;
    p.persistingL2CacheMaxSize = i(A::CU_DEVICE_ATTRIBUTE_MAX_PERSISTING_L2_CACHE_SIZE)?;
    p.maxThreadsPerMultiProcessor = i(A::CU_DEVICE_ATTRIBUTE_MAX_THREADS_PER_MULTIPROCESSOR)?;
    p.streamPrioritiesSupported = i(A::CU_DEVICE_ATTRIBUTE_STREAM_PRIORITIES_SUPPORTED)?;
    p.globalL1CacheSupported = i(A::CU_DEVICE_ATTRIBUTE_GLOBAL_L1_CACHE_SUPPORTED)?;
    p.localL1CacheSupported = i(A::CU_DEVICE_ATTRIBUTE_LOCAL_L1_CACHE_SUPPORTED)?;
    p.sharedMemPerMultiprocessor = u(A::CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_MULTIPROCESSOR)?;
    p.regsPerMultiprocessor = i(A::CU_DEVICE_ATTRIBUTE_MAX_REGISTERS_PER_MULTIPROCESSOR)?;
    p.managedMemory = i(A::CU_DEVICE_ATTRIBUTE_MANAGED_MEMORY)?;
    p.isMultiGpuBoard = i(A::CU_DEVICE_ATTRIBUTE_MULTI_GPU_BOARD)?;
    p.multiGpuBoardGroupID = i(A::CU_DEVICE_ATTRIBUTE_MULTI_GPU_BOARD_GROUP_ID)?;
    p.hostNativeAtomicSupported = i(A::CU_DEVICE_ATTRIBUTE_HOST_NATIVE_ATOMIC_SUPPORTED)?;
    p.pageableMemoryAccess = i(A::CU_DEVICE_ATTRIBUTE_PAGEABLE_MEMORY_ACCESS)?;
    p.concurrentManagedAccess = i(A::CU_DEVICE_ATTRIBUTE_CONCURRENT_MANAGED_ACCESS)?;
    p.computePreemptionSupported = i(A::CU_DEVICE_ATTRIBUTE_COMPUTE_PREEMPTION_SUPPORTED)?;
    p.canUseHostPointerForRegisteredMem = i(A::CU_DEVICE_ATTRIBUTE_CAN_USE_HOST_POINTER_FOR_REGISTERED_MEM)?;
    p.cooperativeLaunch = i(A::CU_DEVICE_ATTRIBUTE_COOPERATIVE_LAUNCH)?;
    p.sharedMemPerBlockOptin = u(A::CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN)?;
    p.pageableMemoryAccessUsesHostPageTables = i(A::CU_DEVICE_ATTRIBUTE_PAGEABLE_MEMORY_ACCESS_USES_HOST_PAGE_TABLES)?;
    p.directManagedMemAccessFromHost = i(A::CU_DEVICE_ATTRIBUTE_DIRECT_MANAGED_MEM_ACCESS_FROM_HOST)?;
    p.maxBlocksPerMultiProcessor = i(A::CU_DEVICE_ATTRIBUTE_MAX_BLOCKS_PER_MULTIPROCESSOR)?;
    p.accessPolicyMaxWindowSize = i(A::CU_DEVICE_ATTRIBUTE_MAX_ACCESS_POLICY_WINDOW_SIZE)?;
    p.reservedSharedMemPerBlock = u(A::CU_DEVICE_ATTRIBUTE_RESERVED_SHARED_MEMORY_PER_BLOCK)?;
    p.hostRegisterSupported = i(A::CU_DEVICE_ATTRIBUTE_HOST_REGISTER_SUPPORTED)?;
    p.sparseCudaArraySupported = i(A::CU_DEVICE_ATTRIBUTE_SPARSE_CUDA_ARRAY_SUPPORTED)?;
    p.hostRegisterReadOnlySupported = i(A::CU_DEVICE_ATTRIBUTE_READ_ONLY_HOST_REGISTER_SUPPORTED)?;
    p.timelineSemaphoreInteropSupported = i(A::CU_DEVICE_ATTRIBUTE_TIMELINE_SEMAPHORE_INTEROP_SUPPORTED)?;
    p.memoryPoolsSupported = i(A::CU_DEVICE_ATTRIBUTE_MEMORY_POOLS_SUPPORTED)?;
    p.gpuDirectRDMASupported = i(A::CU_DEVICE_ATTRIBUTE_GPU_DIRECT_RDMA_SUPPORTED)?;
    p.gpuDirectRDMAFlushWritesOptions = c(A::CU_DEVICE_ATTRIBUTE_GPU_DIRECT_RDMA_FLUSH_WRITES_OPTIONS)?;
    p.gpuDirectRDMAWritesOrdering = i(A::CU_DEVICE_ATTRIBUTE_GPU_DIRECT_RDMA_WRITES_ORDERING)?;
    p.memoryPoolSupportedHandleTypes = c(A::CU_DEVICE_ATTRIBUTE_MEMPOOL_SUPPORTED_HANDLE_TYPES)?;
    p.deferredMappingCudaArraySupported = i(A::CU_DEVICE_ATTRIBUTE_DEFERRED_MAPPING_CUDA_ARRAY_SUPPORTED)?;
    p.ipcEventSupported = i(A::CU_DEVICE_ATTRIBUTE_IPC_EVENT_SUPPORTED)?;
    p.clusterLaunch = i(A::CU_DEVICE_ATTRIBUTE_CLUSTER_LAUNCH)?;
    p.unifiedFunctionPointers = i(A::CU_DEVICE_ATTRIBUTE_UNIFIED_FUNCTION_POINTERS)?;
    #[cfg(vgpu_major = "12")]
    {
        p.clockRate = i(A::CU_DEVICE_ATTRIBUTE_CLOCK_RATE)?;
        p.deviceOverlap = i(A::CU_DEVICE_ATTRIBUTE_GPU_OVERLAP)?;
        p.kernelExecTimeoutEnabled = i(A::CU_DEVICE_ATTRIBUTE_KERNEL_EXEC_TIMEOUT)?;
        p.computeMode = i(A::CU_DEVICE_ATTRIBUTE_COMPUTE_MODE)?;
        p.maxTexture1DLinear = i(A::CU_DEVICE_ATTRIBUTE_MAXIMUM_TEXTURE1D_LINEAR_WIDTH)?;
        p.memoryClockRate = i(A::CU_DEVICE_ATTRIBUTE_MEMORY_CLOCK_RATE)?;
        p.singleToDoublePrecisionPerfRatio = i(A::CU_DEVICE_ATTRIBUTE_SINGLE_TO_DOUBLE_PRECISION_PERF_RATIO)?;
        p.cooperativeMultiDeviceLaunch = i(A::CU_DEVICE_ATTRIBUTE_COOPERATIVE_MULTI_DEVICE_LAUNCH)?;
    }
    #[cfg(vgpu_major = "13")]
    {
        p.deviceNumaConfig = i(A::CU_DEVICE_ATTRIBUTE_NUMA_CONFIG)?;
        p.deviceNumaId = i(A::CU_DEVICE_ATTRIBUTE_NUMA_ID)?;
        p.mpsEnabled = i(A::CU_DEVICE_ATTRIBUTE_MPS_ENABLED)?;
        p.hostNumaId = i(A::CU_DEVICE_ATTRIBUTE_HOST_NUMA_ID)?;
        p.gpuPciDeviceID = c(A::CU_DEVICE_ATTRIBUTE_GPU_PCI_DEVICE_ID)?;
        p.gpuPciSubsystemID = c(A::CU_DEVICE_ATTRIBUTE_GPU_PCI_SUBSYSTEM_ID)?;
        p.hostNumaMultinodeIpcSupported = i(A::CU_DEVICE_ATTRIBUTE_HOST_NUMA_MULTINODE_IPC_SUPPORTED)?;
    }
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Attribute n answers 1000 + n; 75/76 are the compute capability; 120 is unknown.
    struct Fake;
    impl DeviceInfo for Fake {
        fn attribute(&self, a: A) -> Res<i32> {
            match a {
                A::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR => Ok(9),
                A::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR => Ok(0),
                A::CU_DEVICE_ATTRIBUTE_CLUSTER_LAUNCH => Err(E::cudaErrorInvalidValue),
                _ => Ok(1000 + a.0 as i32),
            }
        }
        fn name(&self, buf: &mut [c_char; 256]) -> Res {
            for (d, s) in buf.iter_mut().zip(b"NVIDIA H100 80GB HBM3\0") {
                *d = *s as c_char;
            }
            Ok(())
        }
        fn uuid(&self) -> Res<[c_char; 16]> {
            Ok([7; 16])
        }
        fn total_mem(&self) -> Res<usize> {
            Ok(80 << 30)
        }
    }

    #[test]
    fn fields_come_from_their_attributes() {
        let p = properties(&Fake).unwrap();
        let name = unsafe { std::ffi::CStr::from_ptr(p.name.as_ptr()) };
        assert_eq!(name, c"NVIDIA H100 80GB HBM3");
        assert_eq!(p.uuid.bytes, [7; 16]);
        assert_eq!(p.totalGlobalMem, 80 << 30);
        assert_eq!((p.major, p.minor), (9, 0));
        assert_eq!(p.sharedMemPerBlock, 1008);
        assert_eq!(p.warpSize, 1010);
        assert_eq!(p.multiProcessorCount, 1016);
        assert_eq!(p.integrated, 1018);
        assert_eq!(p.sharedMemPerBlockOptin, 1097);
        assert_eq!(p.maxThreadsDim, [1002, 1003, 1004]);
        assert_eq!(p.maxGridSize, [1005, 1006, 1007]);
        assert_eq!((p.pciBusID, p.pciDeviceID, p.pciDomainID), (1033, 1034, 1050));
        assert_eq!(p.cooperativeLaunch, 1095);
        assert_eq!(p.unifiedAddressing, 1041);
        assert_eq!(p.reservedSharedMemPerBlock, 1111);
        assert_eq!(p.clusterLaunch, 0, "an attribute the driver lacks reads as 0");
        assert_eq!(p.luidDeviceNodeMask, 0);
        #[cfg(vgpu_major = "12")]
        assert_eq!((p.clockRate, p.memoryClockRate, p.cooperativeMultiDeviceLaunch), (1013, 1036, 1096));
        #[cfg(vgpu_major = "13")]
        assert_eq!((p.deviceNumaId, p.gpuPciDeviceID, p.hostNumaMultinodeIpcSupported), (1131, 1139, 1143));
    }

    #[test]
    fn a_failing_query_fails_the_call() {
        struct Broken;
        impl DeviceInfo for Broken {
            fn attribute(&self, _: A) -> Res<i32> {
                Err(E::cudaErrorInvalidDevice)
            }
            fn name(&self, _: &mut [c_char; 256]) -> Res {
                Ok(())
            }
            fn uuid(&self) -> Res<[c_char; 16]> {
                Ok([0; 16])
            }
            fn total_mem(&self) -> Res<usize> {
                Ok(0)
            }
        }
        assert_eq!(properties(&Broken).err(), Some(E::cudaErrorInvalidDevice));
    }

    #[test]
    fn runtime_attributes_are_driver_attributes() {
        use rt::cudaDeviceAttr as R;
        for (r, d) in [
            (R::cudaDevAttrMaxThreadsPerBlock, A::CU_DEVICE_ATTRIBUTE_MAX_THREADS_PER_BLOCK),
            (R::cudaDevAttrMaxSharedMemoryPerBlock, A::CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK),
            (R::cudaDevAttrMaxGridDimX, A::CU_DEVICE_ATTRIBUTE_MAX_GRID_DIM_X),
            (R::cudaDevAttrMultiProcessorCount, A::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT),
            (R::cudaDevAttrComputeCapabilityMajor, A::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR),
            (R::cudaDevAttrComputeCapabilityMinor, A::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR),
            (R::cudaDevAttrUnifiedAddressing, A::CU_DEVICE_ATTRIBUTE_UNIFIED_ADDRESSING),
            (R::cudaDevAttrCooperativeLaunch, A::CU_DEVICE_ATTRIBUTE_COOPERATIVE_LAUNCH),
            (R::cudaDevAttrMaxSharedMemoryPerBlockOptin, A::CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN),
            (R::cudaDevAttrMemoryPoolsSupported, A::CU_DEVICE_ATTRIBUTE_MEMORY_POOLS_SUPPORTED),
            (R::cudaDevAttrClusterLaunch, A::CU_DEVICE_ATTRIBUTE_CLUSTER_LAUNCH),
            (R::cudaDevAttrNumaId, A::CU_DEVICE_ATTRIBUTE_NUMA_ID),
            (R::cudaDevAttrGpuPciSubsystemId, A::CU_DEVICE_ATTRIBUTE_GPU_PCI_SUBSYSTEM_ID),
            (R::cudaDevAttrHostNumaMultinodeIpcSupported, A::CU_DEVICE_ATTRIBUTE_HOST_NUMA_MULTINODE_IPC_SUPPORTED),
        ] {
            assert_eq!(r.0, d.0, "{r:?}");
        }
    }
}
