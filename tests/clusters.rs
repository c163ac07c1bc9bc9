//! Cluster occupancy questions (what NVIDIA's cuBLAS asks as it starts) through our
//! libcuda.so.1, loaded into this test's process with the generated C types, against the
//! sim: the launch configuration, its cluster attribute included, reaches the server.

mod common;
use abi::cuda::*;
use common::*;
use std::ffi::{c_char, c_int, c_void};

#[test]
fn cluster_queries_carry_the_launch_configuration() {
    let p = InProcess::start();
    unsafe {
        let load: unsafe extern "C" fn(*mut CUmodule, *const c_void) -> CUresult = p.get(b"cuModuleLoadData");
        let func: unsafe extern "C" fn(*mut CUfunction, CUmodule, *const c_char) -> CUresult =
            p.get(b"cuModuleGetFunction");
        type Cluster = unsafe extern "C" fn(*mut c_int, CUfunction, *const CUlaunchConfig) -> CUresult;
        let active: Cluster = p.get(b"cuOccupancyMaxActiveClusters");
        let potential: Cluster = p.get(b"cuOccupancyMaxPotentialClusterSize");
        let smem: unsafe extern "C" fn(*mut usize, CUfunction, c_int, c_int) -> CUresult =
            p.get(b"cuOccupancyAvailableDynamicSMemPerBlock");

        const OK: CUresult = CUresult::CUDA_SUCCESS;
        let (mut m, mut f) = (std::ptr::null_mut(), std::ptr::null_mut());
        // PTX text: the sim takes any image, and has every function.
        assert_eq!(load(&mut m, c"// a module".as_ptr().cast()), OK);
        assert_eq!(func(&mut f, m, c"k".as_ptr()), OK);

        let mut attr: CUlaunchAttribute = std::mem::zeroed();
        attr.id = CUlaunchAttributeID::CU_LAUNCH_ATTRIBUTE_CLUSTER_DIMENSION;
        attr.value.clusterDim.x = 4;
        attr.value.clusterDim.y = 1;
        attr.value.clusterDim.z = 1;
        let mut config: CUlaunchConfig = std::mem::zeroed();
        (config.gridDimX, config.gridDimY, config.gridDimZ) = (64, 1, 1);
        (config.blockDimX, config.blockDimY, config.blockDimZ) = (128, 1, 1);
        config.attrs = &mut attr;
        config.numAttrs = 1;
        let mut n = 0;
        assert_eq!(active(&mut n, f, &config), OK);
        assert_eq!(n, 132 / 4, "the sim's 132 SMs in clusters of the attribute's 4");
        assert_eq!(potential(&mut n, f, &config), OK);
        assert_eq!(n, 8);
        let mut bytes = 0;
        assert_eq!(smem(&mut bytes, f, 2, 128), OK);
        assert_eq!(bytes, 232_448 / 2);
        assert_eq!(active(&mut n, f, std::ptr::null()), CUresult::CUDA_ERROR_INVALID_VALUE);
    }
}
