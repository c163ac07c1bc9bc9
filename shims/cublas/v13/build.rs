// SONAME, symbol versions and not-supported stubs for libcublas.so.13: see crates/shim-build.
fn main() {
    shim_build::Shim {
        soname: "libcublas.so.13",
        versioned: true,
        exports: "libcublas.so.13.exports",
        stub_return: "15", // CUBLAS_STATUS_NOT_SUPPORTED
        stub_type: "u32",
        // The forwarded GEMMs are generated from the table in crates/protocol/src/cublas.rs.
        sources: &["src", "../common/blas", "../../../crates/protocol/src/cublas.rs"],
        data: &[],
    }
    .build();
}
