// SONAME, symbol versions and not-supported stubs for libcublasLt.so.13: see crates/shim-build.
fn main() {
    shim_build::Shim {
        soname: "libcublasLt.so.13",
        versioned: true,
        exports: "libcublasLt.so.13.exports",
        stub_return: "15", // CUBLAS_STATUS_NOT_SUPPORTED
        stub_type: "u32",
        sources: &["src", "../common/lt"],
        data: &[],
    }
    .build();
}
