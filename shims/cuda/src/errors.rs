//! `cuGetErrorName` / `cuGetErrorString`, answered locally (names from the generated enum).

use crate::state::{R, entry, put};
use abi::cuda::CUresult;
use std::ffi::CStr;
use std::os::raw::c_char;

/// The enum name of a code, e.g. `CUDA_ERROR_INVALID_VALUE`.
pub fn name(code: u32) -> Option<&'static CStr> {
    Some(match code {
        0 => c"CUDA_SUCCESS",
        1 => c"CUDA_ERROR_INVALID_VALUE",
        2 => c"CUDA_ERROR_OUT_OF_MEMORY",
        3 => c"CUDA_ERROR_NOT_INITIALIZED",
        4 => c"CUDA_ERROR_DEINITIALIZED",
        5 => c"CUDA_ERROR_PROFILER_DISABLED",
        6 => c"CUDA_ERROR_PROFILER_NOT_INITIALIZED",
        7 => c"CUDA_ERROR_PROFILER_ALREADY_STARTED",
        8 => c"CUDA_ERROR_PROFILER_ALREADY_STOPPED",
        34 => c"CUDA_ERROR_STUB_LIBRARY",
        36 => c"CUDA_ERROR_CALL_REQUIRES_NEWER_DRIVER",
        46 => c"CUDA_ERROR_DEVICE_UNAVAILABLE",
        100 => c"CUDA_ERROR_NO_DEVICE",
        101 => c"CUDA_ERROR_INVALID_DEVICE",
        102 => c"CUDA_ERROR_DEVICE_NOT_LICENSED",
        200 => c"CUDA_ERROR_INVALID_IMAGE",
        201 => c"CUDA_ERROR_INVALID_CONTEXT",
        202 => c"CUDA_ERROR_CONTEXT_ALREADY_CURRENT",
        205 => c"CUDA_ERROR_MAP_FAILED",
        206 => c"CUDA_ERROR_UNMAP_FAILED",
        207 => c"CUDA_ERROR_ARRAY_IS_MAPPED",
        208 => c"CUDA_ERROR_ALREADY_MAPPED",
        209 => c"CUDA_ERROR_NO_BINARY_FOR_GPU",
        210 => c"CUDA_ERROR_ALREADY_ACQUIRED",
        211 => c"CUDA_ERROR_NOT_MAPPED",
        212 => c"CUDA_ERROR_NOT_MAPPED_AS_ARRAY",
        213 => c"CUDA_ERROR_NOT_MAPPED_AS_POINTER",
        214 => c"CUDA_ERROR_ECC_UNCORRECTABLE",
        215 => c"CUDA_ERROR_UNSUPPORTED_LIMIT",
        216 => c"CUDA_ERROR_CONTEXT_ALREADY_IN_USE",
        217 => c"CUDA_ERROR_PEER_ACCESS_UNSUPPORTED",
        218 => c"CUDA_ERROR_INVALID_PTX",
        219 => c"CUDA_ERROR_INVALID_GRAPHICS_CONTEXT",
        220 => c"CUDA_ERROR_NVLINK_UNCORRECTABLE",
        221 => c"CUDA_ERROR_JIT_COMPILER_NOT_FOUND",
        222 => c"CUDA_ERROR_UNSUPPORTED_PTX_VERSION",
        223 => c"CUDA_ERROR_JIT_COMPILATION_DISABLED",
        224 => c"CUDA_ERROR_UNSUPPORTED_EXEC_AFFINITY",
        225 => c"CUDA_ERROR_UNSUPPORTED_DEVSIDE_SYNC",
        226 => c"CUDA_ERROR_CONTAINED",
        300 => c"CUDA_ERROR_INVALID_SOURCE",
        301 => c"CUDA_ERROR_FILE_NOT_FOUND",
        302 => c"CUDA_ERROR_SHARED_OBJECT_SYMBOL_NOT_FOUND",
        303 => c"CUDA_ERROR_SHARED_OBJECT_INIT_FAILED",
        304 => c"CUDA_ERROR_OPERATING_SYSTEM",
        400 => c"CUDA_ERROR_INVALID_HANDLE",
        401 => c"CUDA_ERROR_ILLEGAL_STATE",
        402 => c"CUDA_ERROR_LOSSY_QUERY",
        500 => c"CUDA_ERROR_NOT_FOUND",
        600 => c"CUDA_ERROR_NOT_READY",
        700 => c"CUDA_ERROR_ILLEGAL_ADDRESS",
        701 => c"CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES",
        702 => c"CUDA_ERROR_LAUNCH_TIMEOUT",
        703 => c"CUDA_ERROR_LAUNCH_INCOMPATIBLE_TEXTURING",
        704 => c"CUDA_ERROR_PEER_ACCESS_ALREADY_ENABLED",
        705 => c"CUDA_ERROR_PEER_ACCESS_NOT_ENABLED",
        708 => c"CUDA_ERROR_PRIMARY_CONTEXT_ACTIVE",
        709 => c"CUDA_ERROR_CONTEXT_IS_DESTROYED",
        710 => c"CUDA_ERROR_ASSERT",
        711 => c"CUDA_ERROR_TOO_MANY_PEERS",
        712 => c"CUDA_ERROR_HOST_MEMORY_ALREADY_REGISTERED",
        713 => c"CUDA_ERROR_HOST_MEMORY_NOT_REGISTERED",
        714 => c"CUDA_ERROR_HARDWARE_STACK_ERROR",
        715 => c"CUDA_ERROR_ILLEGAL_INSTRUCTION",
        716 => c"CUDA_ERROR_MISALIGNED_ADDRESS",
        717 => c"CUDA_ERROR_INVALID_ADDRESS_SPACE",
        718 => c"CUDA_ERROR_INVALID_PC",
        719 => c"CUDA_ERROR_LAUNCH_FAILED",
        720 => c"CUDA_ERROR_COOPERATIVE_LAUNCH_TOO_LARGE",
        721 => c"CUDA_ERROR_TENSOR_MEMORY_LEAK",
        800 => c"CUDA_ERROR_NOT_PERMITTED",
        801 => c"CUDA_ERROR_NOT_SUPPORTED",
        802 => c"CUDA_ERROR_SYSTEM_NOT_READY",
        803 => c"CUDA_ERROR_SYSTEM_DRIVER_MISMATCH",
        804 => c"CUDA_ERROR_COMPAT_NOT_SUPPORTED_ON_DEVICE",
        805 => c"CUDA_ERROR_MPS_CONNECTION_FAILED",
        806 => c"CUDA_ERROR_MPS_RPC_FAILURE",
        807 => c"CUDA_ERROR_MPS_SERVER_NOT_READY",
        808 => c"CUDA_ERROR_MPS_MAX_CLIENTS_REACHED",
        809 => c"CUDA_ERROR_MPS_MAX_CONNECTIONS_REACHED",
        810 => c"CUDA_ERROR_MPS_CLIENT_TERMINATED",
        811 => c"CUDA_ERROR_CDP_NOT_SUPPORTED",
        812 => c"CUDA_ERROR_CDP_VERSION_MISMATCH",
        900 => c"CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED",
        901 => c"CUDA_ERROR_STREAM_CAPTURE_INVALIDATED",
        902 => c"CUDA_ERROR_STREAM_CAPTURE_MERGE",
        903 => c"CUDA_ERROR_STREAM_CAPTURE_UNMATCHED",
        904 => c"CUDA_ERROR_STREAM_CAPTURE_UNJOINED",
        905 => c"CUDA_ERROR_STREAM_CAPTURE_ISOLATION",
        906 => c"CUDA_ERROR_STREAM_CAPTURE_IMPLICIT",
        907 => c"CUDA_ERROR_CAPTURED_EVENT",
        908 => c"CUDA_ERROR_STREAM_CAPTURE_WRONG_THREAD",
        909 => c"CUDA_ERROR_TIMEOUT",
        910 => c"CUDA_ERROR_GRAPH_EXEC_UPDATE_FAILURE",
        911 => c"CUDA_ERROR_EXTERNAL_DEVICE",
        912 => c"CUDA_ERROR_INVALID_CLUSTER_SIZE",
        913 => c"CUDA_ERROR_FUNCTION_NOT_LOADED",
        914 => c"CUDA_ERROR_INVALID_RESOURCE_TYPE",
        915 => c"CUDA_ERROR_INVALID_RESOURCE_CONFIGURATION",
        916 => c"CUDA_ERROR_KEY_ROTATION",
        999 => c"CUDA_ERROR_UNKNOWN",
        _ => return None,
    })
}

/// A short description, as the real driver gives for the common codes.
pub fn description(code: u32) -> Option<&'static CStr> {
    Some(match code {
        0 => c"no error",
        1 => c"invalid argument",
        2 => c"out of memory",
        3 => c"initialization error",
        4 => c"driver shutting down",
        46 => c"CUDA-capable device(s) is/are busy or unavailable",
        100 => c"no CUDA-capable device is detected",
        101 => c"invalid device ordinal",
        200 => c"device kernel image is invalid",
        201 => c"invalid device context",
        209 => c"no kernel image is available for execution on the device",
        218 => c"a PTX JIT compilation failed",
        300 => c"invalid source",
        301 => c"file not found",
        400 => c"invalid resource handle",
        500 => c"named symbol not found",
        600 => c"device not ready",
        700 => c"an illegal memory access was encountered",
        701 => c"too many resources requested for launch",
        702 => c"the launch timed out and was terminated",
        719 => c"unspecified launch failure",
        801 => c"operation not supported",
        900 => c"operation not permitted when stream is capturing",
        999 => c"unknown error",
        _ => return name(code),
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuGetErrorName(error: R, pstr: *mut *const c_char) -> R {
    entry(|| match name(error.0) {
        Some(s) => unsafe { put(pstr, s.as_ptr()) },
        None => {
            let _ = unsafe { put(pstr, std::ptr::null()) };
            Err(CUresult::CUDA_ERROR_INVALID_VALUE)
        }
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuGetErrorString(error: R, pstr: *mut *const c_char) -> R {
    entry(|| match description(error.0) {
        Some(s) => unsafe { put(pstr, s.as_ptr()) },
        None => {
            let _ = unsafe { put(pstr, std::ptr::null()) };
            Err(CUresult::CUDA_ERROR_INVALID_VALUE)
        }
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn names_and_descriptions() {
        assert_eq!(super::name(1).unwrap().to_str().unwrap(), "CUDA_ERROR_INVALID_VALUE");
        assert_eq!(super::description(2).unwrap().to_str().unwrap(), "out of memory");
        assert!(super::name(123_456).is_none());
    }
}
