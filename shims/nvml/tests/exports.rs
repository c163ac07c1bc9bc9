//! libnvidia-ml.so.1: the exported names, versions and SONAME equal the real library's list, every stub
//! answers NVML_ERROR_NOT_SUPPORTED (3), and its section of docs/coverage.md is current
//! (`VGPU_BLESS=1 cargo test -p shim-nvml` rewrites it).
shim_build::shim_tests!();
