// SONAME, symbol versions and not-supported stubs for libcudart.so.12: see crates/shim-build.
fn main() {
    shim_build::Shim {
        soname: "libcudart.so.12",
        versioned: true,
        exports: "libcudart.so.12.exports",
        stub_return: "801", // cudaErrorNotSupported
        stub_type: "u32",
        sources: &["src", "../common"],
        data: &[],
    }
    .build();
}
