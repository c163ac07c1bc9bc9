//! Device management: count, current device, flags, properties and attributes, PCI ids,
//! versions, synchronisation and reset, peer access, memory info, limits, driver entry
//! points.

use std::ffi::{c_char, c_int, c_uint, c_void};

use abi::cuda::{self as cu, CUdevice_attribute as A};

use super::context::{self, check_device, current, current_device, primary};
use super::driver;
use super::error::{Res, api, non_null, out};
use super::props::{DeviceInfo, properties};
use crate::rt::{self, cudaError_t as E};

/// A device as the driver describes it.
struct Driver(cu::CUdevice);

impl DeviceInfo for Driver {
    fn attribute(&self, a: A) -> Res<i32> {
        let mut v = 0;
        cu!(cuDeviceGetAttribute(&mut v, a, self.0))?;
        Ok(v)
    }
    fn name(&self, buf: &mut [c_char; 256]) -> Res {
        cu!(cuDeviceGetName(buf.as_mut_ptr(), 256, self.0))
    }
    fn uuid(&self) -> Res<[c_char; 16]> {
        let mut u = cu::CUuuid::default();
        cu!(cuDeviceGetUuid_v2(&mut u, self.0))?;
        Ok(u.bytes)
    }
    fn total_mem(&self) -> Res<usize> {
        let mut n = 0;
        cu!(cuDeviceTotalMem_v2(&mut n, self.0))?;
        Ok(n)
    }
}

/// Bytes of `cudaDeviceProp` NVIDIA's runtime writes: everything before `reserved`, which
/// stays the caller's.
const PROP_BYTES: usize = std::mem::offset_of!(rt::cudaDeviceProp, reserved);

/// What the plain `cudaGetDeviceProperties` writes. In libcudart.so.12 (seen in 12.9's code)
/// that is the 728-byte prefix CUDA 11's layout shares, for callers built before `_v2`.
#[cfg(vgpu_major = "12")]
const PLAIN_PROP_BYTES: usize = 728;
#[cfg(vgpu_major = "13")]
const PLAIN_PROP_BYTES: usize = PROP_BYTES;

/// Fill the first `bytes` bytes of the caller's `cudaDeviceProp`.
fn get_properties(prop: *mut rt::cudaDeviceProp, device: c_int, bytes: usize) -> Res {
    non_null(prop)?;
    check_device(device)?;
    let p = properties(&Driver(device))?;
    let n = bytes.min(std::mem::size_of_val(&p));
    // SAFETY: the caller's struct holds at least `bytes` bytes (the API's contract).
    unsafe { std::ptr::copy_nonoverlapping((&raw const p).cast::<u8>(), prop.cast::<u8>(), n) };
    Ok(())
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cudaGetDeviceCount(count: *mut c_int) -> E {
    api(|| {
        non_null(count)?;
        let n = context::device_count();
        out(count, *n.as_ref().unwrap_or(&0))?;
        n.map(drop)
    })
}

#[unsafe(no_mangle)]
pub extern "C" fn cudaSetDevice(device: c_int) -> E {
    api(|| context::set_device(device))
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cudaGetDevice(device: *mut c_int) -> E {
    api(|| out(device, current_device()?))
}

#[unsafe(no_mangle)]
pub extern "C" fn cudaSetDeviceFlags(flags: c_uint) -> E {
    api(|| cu!(cuDevicePrimaryCtxSetFlags_v2(current_device()?, flags)))
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cudaGetDeviceFlags(flags: *mut c_uint) -> E {
    api(|| {
        let (mut f, mut active) = (0, 0);
        cu!(cuDevicePrimaryCtxGetState(current_device()?, &mut f, &mut active))?;
        out(flags, f)
    })
}

/// `cudaInitDevice`: retain the primary context now; `flags & 1`
/// (`cudaInitDeviceFlagsAreValid`) applies `device_flags` first.
#[unsafe(no_mangle)]
pub extern "C" fn cudaInitDevice(device: c_int, device_flags: c_uint, flags: c_uint) -> E {
    api(|| {
        check_device(device)?;
        if flags & 1 != 0 {
            cu!(cuDevicePrimaryCtxSetFlags_v2(device, device_flags))?;
        }
        primary(device).map(drop)
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cudaGetDeviceProperties(prop: *mut rt::cudaDeviceProp, device: c_int) -> E {
    api(|| get_properties(prop, device, PLAIN_PROP_BYTES))
}

/// CUDA 12 headers call this for `cudaGetDeviceProperties`.
#[cfg(vgpu_major = "12")]
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cudaGetDeviceProperties_v2(prop: *mut rt::cudaDeviceProp, device: c_int) -> E {
    api(|| get_properties(prop, device, PROP_BYTES))
}

/// `cudaDeviceAttr` values are the driver's `CUdevice_attribute` values.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cudaDeviceGetAttribute(value: *mut c_int, attr: rt::cudaDeviceAttr, device: c_int) -> E {
    api(|| {
        non_null(value)?;
        check_device(device)?;
        // The runtime knows its own range (the driver's may be wider).
        if attr.0 == 0 || attr.0 >= rt::cudaDeviceAttr::cudaDevAttrMax.0 {
            return Err(E::cudaErrorInvalidValue);
        }
        cu!(cuDeviceGetAttribute(value, A(attr.0), device))
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cudaDeviceGetPCIBusId(pci_bus_id: *mut c_char, len: c_int, device: c_int) -> E {
    api(|| {
        non_null(pci_bus_id)?;
        check_device(device)?;
        cu!(cuDeviceGetPCIBusId(pci_bus_id, len, device))
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cudaDeviceGetByPCIBusId(device: *mut c_int, pci_bus_id: *const c_char) -> E {
    api(|| {
        non_null(device)?;
        non_null(pci_bus_id)?;
        cu!(cuDeviceGetByPCIBusId(device, pci_bus_id))
    })
}

/// 0 (and success) when there is no driver to ask, as NVIDIA documents; ours cannot answer
/// without its server.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cudaDriverGetVersion(version: *mut c_int) -> E {
    api(|| {
        non_null(version)?;
        let mut v = 0;
        if let Ok(l) = driver::loaded()
            && cu!(l => cuDriverGetVersion(&mut v)).is_err()
        {
            v = 0;
        }
        out(version, v)
    })
}

fn synchronize() -> Res {
    current()?;
    cu!(cuCtxSynchronize())
}

#[unsafe(no_mangle)]
pub extern "C" fn cudaDeviceSynchronize() -> E {
    api(synchronize)
}

#[unsafe(no_mangle)]
pub extern "C" fn cudaDeviceReset() -> E {
    api(context::reset_current_device)
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cudaDeviceCanAccessPeer(can: *mut c_int, device: c_int, peer: c_int) -> E {
    api(|| {
        non_null(can)?;
        check_device(device)?;
        check_device(peer)?;
        cu!(cuDeviceCanAccessPeer(can, device, peer))
    })
}

#[unsafe(no_mangle)]
pub extern "C" fn cudaDeviceEnablePeerAccess(peer: c_int, flags: c_uint) -> E {
    api(|| {
        current()?;
        cu!(cuCtxEnablePeerAccess(primary(peer)?, flags))
    })
}

#[unsafe(no_mangle)]
pub extern "C" fn cudaDeviceDisablePeerAccess(peer: c_int) -> E {
    api(|| {
        current()?;
        cu!(cuCtxDisablePeerAccess(primary(peer)?))
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cudaMemGetInfo(free: *mut usize, total: *mut usize) -> E {
    api(|| {
        current()?;
        cu!(cuMemGetInfo_v2(free, total))
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cudaDeviceGetStreamPriorityRange(least: *mut c_int, greatest: *mut c_int) -> E {
    api(|| {
        current()?;
        cu!(cuCtxGetStreamPriorityRange(least, greatest))
    })
}

fn get_limit(value: *mut usize, limit: rt::cudaLimit) -> Res {
    non_null(value)?;
    current()?;
    cu!(cuCtxGetLimit(value, cu::CUlimit(limit.0)))
}

fn set_limit(limit: rt::cudaLimit, value: usize) -> Res {
    current()?;
    cu!(cuCtxSetLimit(cu::CUlimit(limit.0), value))
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cudaDeviceGetLimit(value: *mut usize, limit: rt::cudaLimit) -> E {
    api(|| get_limit(value, limit))
}

#[unsafe(no_mangle)]
pub extern "C" fn cudaDeviceSetLimit(limit: rt::cudaLimit, value: usize) -> E {
    api(|| set_limit(limit, value))
}

/// `cuGetProcAddress_v2` of our libcuda. The `_ptsz` exports default to per-thread streams.
fn entry_point(
    symbol: *const c_char,
    func: *mut *mut c_void,
    version: c_uint,
    flags: u64,
    status: *mut rt::cudaDriverEntryPointQueryResult,
    per_thread: bool,
) -> Res {
    non_null(symbol)?;
    non_null(func)?;
    let flags = if per_thread && flags == 0 {
        u64::from(cu::CUdriverProcAddress_flags::CU_GET_PROC_ADDRESS_PER_THREAD_DEFAULT_STREAM.0)
    } else {
        flags
    };
    let version = c_int::try_from(version).map_err(|_| E::cudaErrorInvalidValue)?;
    let mut st = cu::CUdriverProcAddressQueryResult(0);
    let r = cu!(cuGetProcAddress_v2(symbol, func, version, flags, &mut st));
    if !status.is_null() {
        out(status, rt::cudaDriverEntryPointQueryResult(st.0))?;
    }
    r
}

per_thread! {
    fn cudaGetDriverEntryPoint, fn cudaGetDriverEntryPoint_ptsz(
        symbol: *const c_char,
        func: *mut *mut c_void,
        flags: u64,
        status: *mut rt::cudaDriverEntryPointQueryResult,
    ) -> E [per_thread = false, true] {
        entry_point(symbol, func, crate::RUNTIME_VERSION as c_uint, flags, status, per_thread)
    }

    fn cudaGetDriverEntryPointByVersion, fn cudaGetDriverEntryPointByVersion_ptsz(
        symbol: *const c_char,
        func: *mut *mut c_void,
        version: c_uint,
        flags: u64,
        status: *mut rt::cudaDriverEntryPointQueryResult,
    ) -> E [per_thread = false, true] {
        entry_point(symbol, func, version, flags, status, per_thread)
    }
}

// The CUDA 12 list still has the pre-4.0 thread-named aliases of the device calls.

#[cfg(vgpu_major = "12")]
#[unsafe(no_mangle)]
pub extern "C" fn cudaThreadSynchronize() -> E {
    api(synchronize)
}

#[cfg(vgpu_major = "12")]
#[unsafe(no_mangle)]
pub extern "C" fn cudaThreadExit() -> E {
    api(context::reset_current_device)
}

#[cfg(vgpu_major = "12")]
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cudaThreadGetLimit(value: *mut usize, limit: rt::cudaLimit) -> E {
    api(|| get_limit(value, limit))
}

#[cfg(vgpu_major = "12")]
#[unsafe(no_mangle)]
pub extern "C" fn cudaThreadSetLimit(limit: rt::cudaLimit, value: usize) -> E {
    api(|| set_limit(limit, value))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn properties_are_written_up_to_reserved_as_nvidia_does() {
        // The copy sizes of NVIDIA's 12.9 and 13.0 runtimes.
        #[cfg(vgpu_major = "12")]
        assert_eq!((PROP_BYTES, PLAIN_PROP_BYTES), (780, 728));
        #[cfg(vgpu_major = "13")]
        assert_eq!((PROP_BYTES, PLAIN_PROP_BYTES), (784, 784));
    }

    #[test]
    fn limits_and_entry_point_enums_match_the_driver() {
        assert_eq!(rt::cudaLimit::cudaLimitStackSize.0, cu::CUlimit::CU_LIMIT_STACK_SIZE.0);
        assert_eq!(rt::cudaLimit::cudaLimitMallocHeapSize.0, cu::CUlimit::CU_LIMIT_MALLOC_HEAP_SIZE.0);
        assert_eq!(rt::cudaLimit::cudaLimitPersistingL2CacheSize.0, cu::CUlimit::CU_LIMIT_PERSISTING_L2_CACHE_SIZE.0);
        assert_eq!(
            rt::cudaDriverEntryPointQueryResult::cudaDriverEntryPointSymbolNotFound.0,
            cu::CUdriverProcAddressQueryResult::CU_GET_PROC_ADDRESS_SYMBOL_NOT_FOUND.0
        );
        assert_eq!(
            rt::cudaGetDriverEntryPointFlags::cudaEnablePerThreadDefaultStream.0,
            cu::CUdriverProcAddress_flags::CU_GET_PROC_ADDRESS_PER_THREAD_DEFAULT_STREAM.0
        );
    }
}
