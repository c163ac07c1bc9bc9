//! libcuda.so.1: the exported names, versions and SONAME equal the real library's list, every stub
//! answers CUDA_ERROR_NOT_SUPPORTED (801), and its section of docs/coverage.md is current
//! (`VGPU_BLESS=1 cargo test -p shim-cuda` rewrites it).
shim_build::shim_tests!();
