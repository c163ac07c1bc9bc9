//! Sizes and offsets that the wire protocol and the shims depend on, checked against the
//! values printed by a C program compiled with the same NVIDIA headers.

use core::mem::{offset_of, size_of};

#[test]
fn cudart12_device_prop() {
    use abi::cudart12::cudaDeviceProp;
    assert_eq!(size_of::<cudaDeviceProp>(), 1032);
    assert_eq!(offset_of!(cudaDeviceProp, totalGlobalMem), 288);
    assert_eq!(offset_of!(cudaDeviceProp, major), 360);
    assert_eq!(offset_of!(cudaDeviceProp, multiProcessorCount), 388);
    assert_eq!(offset_of!(cudaDeviceProp, pciBusID), 584);
    assert_eq!(offset_of!(cudaDeviceProp, sharedMemPerBlockOptin), 696);
}

#[test]
fn cudart13_device_prop() {
    use abi::cudart13::cudaDeviceProp;
    assert_eq!(size_of::<cudaDeviceProp>(), 1008);
    assert_eq!(offset_of!(cudaDeviceProp, totalGlobalMem), 288);
    assert_eq!(offset_of!(cudaDeviceProp, major), 360);
    assert_eq!(offset_of!(cudaDeviceProp, multiProcessorCount), 384);
    assert_eq!(offset_of!(cudaDeviceProp, pciBusID), 568);
    assert_eq!(offset_of!(cudaDeviceProp, sharedMemPerBlockOptin), 672);
}

#[test]
fn driver_structs() {
    use abi::cuda::*;
    assert_eq!(size_of::<CUuuid>(), 16);
    assert_eq!(size_of::<CUDA_MEMCPY3D>(), 200);
    assert_eq!(size_of::<CUlaunchConfig>(), 56);
    assert_eq!(size_of::<CUdeviceptr>(), 8);
    assert_eq!(size_of::<CUresult>(), 4);
}

#[test]
fn nvml_structs() {
    use abi::nvml::*;
    assert_eq!(size_of::<nvmlMemory_t>(), 24);
    assert_eq!(size_of::<nvmlMemory_v2_t>(), 40);
    assert_eq!(size_of::<nvmlPciInfo_t>(), 68);
    assert_eq!(offset_of!(nvmlPciInfo_t, busId), 36);
}

#[test]
fn enum_values_and_aliases() {
    use abi::{cublas12, cublas13, cuda, cudart12, cudart13, nvml};
    assert_eq!(cuda::CUresult::CUDA_SUCCESS.0, 0);
    assert_eq!(cuda::cudaError_enum::CUDA_ERROR_NOT_SUPPORTED.0, 801);
    assert_eq!(cuda::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT.0, 16);
    assert_eq!(cuda::CUDA_VERSION, 13000);
    assert_eq!(cudart13::cudaError_t::cudaSuccess.0, 0);
    assert_eq!(cudart13::cudaError_t::cudaErrorMemoryAllocation.0, 2);
    assert_eq!(cudart13::CUDART_VERSION, 13000);
    assert_eq!(cudart12::CUDART_VERSION, 12090);
    assert_eq!(nvml::nvmlReturn_t::NVML_SUCCESS.0, 0);
    assert_eq!(cublas13::cublasStatus_t::CUBLAS_STATUS_SUCCESS.0, 0);
    assert_eq!(cublas13::cudaDataType::CUDA_R_16F.0, 2);
    assert_eq!(cublas12::cublasComputeType_t::CUBLAS_COMPUTE_32F.0, 68);
    assert_eq!(cublas13::cublasComputeType_t::CUBLAS_COMPUTE_32F.0, 68);
}

/// Field (= symbol) names of a generated dynamic-loading struct.
fn fields(src: &str, strukt: &str) -> Vec<String> {
    let start = src.find(&format!("pub struct {strukt} {{")).expect("struct");
    let body = &src[start..];
    let body = &body[..body.find("\n}\n").expect("end")];
    body.lines()
        .filter_map(|l| l.trim().strip_prefix("pub "))
        .filter_map(|l| l.split_once(':').map(|(n, _)| n.to_string()))
        .collect()
}

/// Every function the dynamic-loading structs know is a name the real library exports, under
/// the same name (the `_v2`/`_ptds` spellings, not the header's macro names).
#[test]
fn dynamic_struct_names_are_real_exports() {
    let cases = [
        (include_str!("../src/cuda.rs"), "CudaLib", abi::exports::LIBCUDA, 600),
        (include_str!("../src/nvml.rs"), "NvmlLib", abi::exports::LIBNVML, 390),
        (include_str!("../src/cudart13.rs"), "CudartLib", abi::exports::LIBCUDART13, 370),
        (include_str!("../src/cudart12.rs"), "CudartLib", abi::exports::LIBCUDART12, 380),
        (include_str!("../src/cublas13.rs"), "CublasLib", abi::exports::LIBCUBLAS13, 530),
        (include_str!("../src/cublas12.rs"), "CublasLib", abi::exports::LIBCUBLAS12, 520),
        (include_str!("../src/cublas13.rs"), "CublasLtLib", abi::exports::LIBCUBLASLT13, 45),
        (include_str!("../src/cublas12.rs"), "CublasLtLib", abi::exports::LIBCUBLASLT12, 40),
    ];
    // Declared by the headers but not exported by the libraries the lists come from.
    let known_missing = ["cublasLtDisableCpuInstructionsSetMask"];
    for (src, strukt, list, min) in cases {
        let exported: std::collections::HashSet<&str> = abi::exports::names(list).map(|(n, _)| n).collect();
        let declared = fields(src, strukt);
        assert!(declared.len() >= min, "{strukt}: only {} functions", declared.len());
        let missing: Vec<_> = declared
            .iter()
            .filter(|n| !exported.contains(n.as_str()) && !known_missing.contains(&n.as_str()))
            .collect();
        assert!(missing.is_empty(), "{strukt}: not exported: {missing:?}");
    }
    let cuda = fields(include_str!("../src/cuda.rs"), "CudaLib");
    for name in [
        "cuInit",
        "cuMemAlloc_v2",
        "cuMemcpyHtoD_v2",
        "cuMemcpyHtoD_v2_ptds",
        "cuCtxCreate_v4",
        "cuLaunchKernel",
        "cuLaunchKernel_ptsz",
        "cuGetProcAddress_v2",
    ] {
        assert!(cuda.iter().any(|f| f == name), "CudaLib lacks {name}");
    }
}

/// llama.cpp's CUDA backend: every cuBLAS, cudart and libcuda import has a signature here.
#[test]
fn llama_imports_have_signatures() {
    let cublas = fields(include_str!("../src/cublas13.rs"), "CublasLib");
    let cuda = fields(include_str!("../src/cuda.rs"), "CudaLib");
    let cudart = fields(include_str!("../src/cudart13.rs"), "CudartLib");
    for (name, _) in abi::exports::names(abi::exports::LLAMA_GGML_CUDA_IMPORTS) {
        let known = if name.starts_with("cublas") {
            &cublas
        } else if name.starts_with("cuda") {
            &cudart
        } else if name.starts_with("cu") {
            &cuda
        } else {
            continue; // the nvcc hooks `__cuda*` are declared in no C header
        };
        assert!(known.iter().any(|f| f == name), "no signature for {name}");
    }
}

#[test]
fn missing_library_is_an_error_not_a_panic() {
    let r = unsafe { abi::nvml::NvmlLib::new("/nonexistent/libnvidia-ml.so.1") };
    assert!(r.is_err());
}

/// Loading a library that lacks the symbols yields `Err` fields, not a panic (libc stands in).
#[test]
fn missing_symbol_is_an_error_value() {
    let lib = unsafe { abi::cuda::CudaLib::new("libc.so.6") }.expect("libc loads");
    assert!(lib.cuInit.is_err());
}
