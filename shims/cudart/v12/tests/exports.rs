//! libcudart.so.12: the exported names, versions and SONAME equal the real library's list, every stub
//! answers cudaErrorNotSupported (801), and its section of docs/coverage.md is current
//! (`VGPU_BLESS=1 cargo test -p shim-cudart12` rewrites it).
shim_build::shim_tests!();
