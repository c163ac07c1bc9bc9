// SONAME, symbol versions and not-supported stubs for libnvidia-ml.so.1: see crates/shim-build.
fn main() {
    shim_build::Shim {
        soname: "libnvidia-ml.so.1",
        versioned: false,
        exports: "libnvidia-ml.so.1.exports",
        stub_return: "3", // NVML_ERROR_NOT_SUPPORTED
        stub_type: "u32",
        sources: &["src", "../../crates/protocol/src/nvml.rs"],
        data: &[],
    }
    .build();
}
