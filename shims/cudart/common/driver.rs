//! The driver underneath: our own `libcuda.so.1`, loaded on first use as NVIDIA's runtime
//! loads the real one, then initialised once (`cuInit`, driver version check).

use std::sync::OnceLock;

use abi::cuda::CudaLib;

use super::error::Res;
use crate::rt::cudaError_t as E;

static LIB: OnceLock<Option<CudaLib>> = OnceLock::new();
static INIT: OnceLock<Res> = OnceLock::new();

/// The loaded driver library, not necessarily initialised (for `cudaDriverGetVersion`).
pub(crate) fn loaded() -> Res<&'static CudaLib> {
    let lib = LIB.get_or_init(|| {
        // SAFETY: loading a library runs its constructors; libcuda's are ours (or NVIDIA's).
        match unsafe { CudaLib::new("libcuda.so.1") } {
            Ok(l) => Some(l),
            Err(e) => {
                shim_support::log_once!(
                    "cudart: no libcuda",
                    "vgpu: cannot load libcuda.so.1 ({e}); the CUDA runtime reports cudaErrorInsufficientDriver"
                );
                None
            }
        }
    });
    lib.as_ref().ok_or(E::cudaErrorInsufficientDriver)
}

/// The driver, initialised. A failed initialisation is remembered, as NVIDIA's runtime does.
pub(crate) fn lib() -> Res<&'static CudaLib> {
    let l = loaded()?;
    (*INIT.get_or_init(|| init(l)))?;
    Ok(l)
}

fn init(l: &CudaLib) -> Res {
    cu!(l => cuInit(0))?;
    let mut v = 0;
    cu!(l => cuDriverGetVersion(&mut v))?;
    if !driver_is_sufficient(v, crate::RUNTIME_VERSION) {
        shim_support::log_once!(
            "cudart: old driver",
            "vgpu: the driver reports CUDA {}.{}, older than this runtime's major version {}",
            v / 1000,
            v % 1000 / 10,
            crate::RUNTIME_VERSION / 1000
        );
        return Err(E::cudaErrorInsufficientDriver);
    }
    Ok(())
}

/// Minor-version compatibility: any driver of the runtime's major version or newer will do.
pub(crate) fn driver_is_sufficient(driver: i32, runtime: i32) -> bool {
    driver / 1000 >= runtime / 1000
}

/// The answer when the loaded driver lacks a symbol (an older NVIDIA driver): logged once.
pub(crate) fn missing(name: &'static str) -> E {
    shim_support::log_once!(&format!("cudart: missing {name}"), "vgpu: libcuda.so.1 lacks {name}");
    E::cudaErrorCallRequiresNewerDriver
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_check_is_by_major() {
        assert!(driver_is_sufficient(13000, 13000));
        assert!(driver_is_sufficient(13020, 13000));
        assert!(driver_is_sufficient(12020, 12090), "minor-version compatibility");
        assert!(driver_is_sufficient(13000, 12090));
        assert!(!driver_is_sufficient(12090, 13000));
    }
}
