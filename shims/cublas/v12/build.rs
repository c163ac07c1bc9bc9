// SONAME, symbol versions and not-supported stubs for libcublas.so.12: see crates/shim-build.
fn main() {
    shim_build::Shim {
        soname: "libcublas.so.12",
        versioned: true,
        exports: "libcublas.so.12.exports",
        stub_return: "15", // CUBLAS_STATUS_NOT_SUPPORTED
        stub_type: "u32",
        sources: &["src", "../common/blas"],
        data: &[],
    }
    .build();
}
