//! Cluster occupancy questions (what NVIDIA's cuBLAS asks as it starts) through our
//! libcuda.so.1, loaded into this test's process with the generated C types, against the
//! sim: the launch configuration, its cluster attribute included, reaches the server.

mod common;
use abi::cuda::*;
use common::*;
use std::ffi::{c_char, c_int, c_void};

#[test]
fn cluster_queries_carry_the_launch_configuration() {
    let tmp = tempfile::tempdir().unwrap();
    let lib = lib_dir(tmp.path());
    let server = Server::sim_quiet(tmp.path(), &[]);
    // This binary's only test: the process's environment is its own.
    unsafe {
        std::env::set_var("VGPU_SERVER", &server.address);
        std::env::set_var("VGPU_CONFIG", "/nonexistent");
    }
    let cuda = unsafe { libloading::Library::new(lib.join("libcuda.so.1")) }.unwrap();
    unsafe {
        let init: libloading::Symbol<unsafe extern "C" fn(u32) -> CUresult> = cuda.get(b"cuInit").unwrap();
        let retain: libloading::Symbol<unsafe extern "C" fn(*mut CUcontext, CUdevice) -> CUresult> =
            cuda.get(b"cuDevicePrimaryCtxRetain").unwrap();
        let set: libloading::Symbol<unsafe extern "C" fn(CUcontext) -> CUresult> =
            cuda.get(b"cuCtxSetCurrent").unwrap();
        let load: libloading::Symbol<unsafe extern "C" fn(*mut CUmodule, *const c_void) -> CUresult> =
            cuda.get(b"cuModuleLoadData").unwrap();
        let func: libloading::Symbol<unsafe extern "C" fn(*mut CUfunction, CUmodule, *const c_char) -> CUresult> =
            cuda.get(b"cuModuleGetFunction").unwrap();
        type Cluster = unsafe extern "C" fn(*mut c_int, CUfunction, *const CUlaunchConfig) -> CUresult;
        let active: libloading::Symbol<Cluster> = cuda.get(b"cuOccupancyMaxActiveClusters").unwrap();
        let potential: libloading::Symbol<Cluster> = cuda.get(b"cuOccupancyMaxPotentialClusterSize").unwrap();
        let smem: libloading::Symbol<unsafe extern "C" fn(*mut usize, CUfunction, c_int, c_int) -> CUresult> =
            cuda.get(b"cuOccupancyAvailableDynamicSMemPerBlock").unwrap();

        const OK: CUresult = CUresult::CUDA_SUCCESS;
        assert_eq!(init(0), OK);
        let mut ctx = std::ptr::null_mut();
        assert_eq!(retain(&mut ctx, 0), OK);
        assert_eq!(set(ctx), OK);
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
