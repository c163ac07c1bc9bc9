// SONAME, symbol versions and not-supported stubs for libcuda.so.1: see crates/shim-build.
fn main() {
    shim_build::Shim {
        soname: "libcuda.so.1",
        versioned: false,
        exports: "libcuda.so.1.exports",
        stub_return: "801", // CUDA_ERROR_NOT_SUPPORTED
        stub_type: "u32",
        sources: &["src"],
        // The cudbg* exports are data objects (debugger variables) in the real library.
        data: &[("cudbgInjectionPath", 4096), ("cudbg", 8)],
    }
    .build();
}
