// SONAME, symbol versions and not-supported stubs for libcuda.so.1: see crates/shim-build.
fn main() {
    shim_build::Shim {
        soname: "libcuda.so.1",
        versioned: false,
        exports: "libcuda.so.1.exports",
        stub_return: "801", // CUDA_ERROR_NOT_SUPPORTED
        stub_type: "u32",
        sources: &["src"],
        data: CUDBG_VARIABLES,
    }
    .build();
}

/// The debugger's variables: data OBJECTs in the real libcuda.so.1 (driver 580), the other
/// `cudbg*` exports are functions. Sizes: `cudbgInjectionPath` is a path buffer
/// (CUDBG_INJECTION_PATH_SIZE, 4096); the rest are 32- or 64-bit integers, given 8 bytes each.
const CUDBG_VARIABLES: &[(&str, usize)] = &[
    ("cudbgApiClientPid", 8),
    ("cudbgApiClientRevision", 8),
    ("cudbgAttachHandlerAvailable", 8),
    ("cudbgDebuggerCapabilities", 8),
    ("cudbgDebuggerInitialized", 8),
    ("cudbgDetachSuspendedDevicesMask", 8),
    ("cudbgEnableIntegratedMemcheck", 8),
    ("cudbgEnableLaunchBlocking", 8),
    ("cudbgEnablePreemptionDebugging", 8),
    ("cudbgInjectionPath", 4096),
    ("cudbgIpcFlag", 8),
    ("cudbgReportDriverApiErrorFlags", 8),
    ("cudbgReportedDriverApiErrorCode", 8),
    ("cudbgReportedDriverApiErrorFuncNameAddr", 8),
    ("cudbgReportedDriverApiErrorFuncNameSize", 8),
    ("cudbgReportedDriverApiErrorNameAddr", 8),
    ("cudbgReportedDriverApiErrorNameSize", 8),
    ("cudbgReportedDriverApiErrorSource", 8),
    ("cudbgReportedDriverApiErrorStringAddr", 8),
    ("cudbgReportedDriverApiErrorStringSize", 8),
    ("cudbgReportedDriverInternalErrorCode", 8),
    ("cudbgResumeForAttachDetach", 8),
    ("cudbgRpcEnabled", 8),
    ("cudbgSessionId", 8),
    ("cudbgUseExternalDebugger", 8),
];
