//! Devices: answered from the snapshot, so CUDA and NVML report the same identity.

use crate::state::{self, R, entry, put};
use abi::cuda::{CUdevice, CUdevice_attribute, CUresult, CUuuid};
use protocol::ops;
use std::ffi::CStr;
use std::os::raw::{c_char, c_int, c_uint};

#[unsafe(no_mangle)]
pub extern "C" fn cuInit(flags: c_uint) -> R {
    shim_support::guard(CUresult::CUDA_ERROR_UNKNOWN, || {
        if flags != 0 {
            return CUresult::CUDA_ERROR_INVALID_VALUE;
        }
        state::init()
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuDriverGetVersion(v: *mut c_int) -> R {
    // Works before cuInit, as the real driver's does; it needs the server's answer though.
    entry(|| {
        let s = client::session().map_err(|_| CUresult::CUDA_ERROR_NO_DEVICE)?;
        unsafe { put(v, s.snapshot.cuda_driver_version) }
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuDeviceGetCount(n: *mut c_int) -> R {
    entry(|| unsafe { put(n, state::visible()?.len() as c_int) })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuDeviceGet(dev: *mut CUdevice, ordinal: c_int) -> R {
    entry(|| {
        state::device(ordinal)?;
        unsafe { put(dev, ordinal) }
    })
}

/// Copy `s` NUL-terminated into a caller buffer, truncating as the driver does.
unsafe fn put_str(s: &str, buf: *mut c_char, len: c_int) -> Result<(), R> {
    if buf.is_null() || len <= 0 {
        return Err(CUresult::CUDA_ERROR_INVALID_VALUE);
    }
    let n = s.len().min(len as usize - 1);
    unsafe {
        std::ptr::copy_nonoverlapping(s.as_ptr(), buf.cast(), n);
        *buf.add(n) = 0;
    }
    Ok(())
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuDeviceGetName(name: *mut c_char, len: c_int, dev: CUdevice) -> R {
    entry(|| unsafe { put_str(&state::device(dev)?.name, name, len) })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuDeviceGetUuid(uuid: *mut CUuuid, dev: CUdevice) -> R {
    entry(|| {
        let d = state::device(dev)?;
        unsafe { put(uuid, CUuuid { bytes: d.uuid.map(|b| b as c_char) }) }
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuDeviceGetUuid_v2(uuid: *mut CUuuid, dev: CUdevice) -> R {
    unsafe { cuDeviceGetUuid(uuid, dev) }
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuDeviceTotalMem_v2(bytes: *mut usize, dev: CUdevice) -> R {
    entry(|| unsafe { put(bytes, state::device(dev)?.total_mem as usize) })
}

/// The pre-v2 form with a 32-bit count.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuDeviceTotalMem(bytes: *mut c_uint, dev: CUdevice) -> R {
    entry(|| unsafe { put(bytes, state::device(dev)?.total_mem.min(u32::MAX as u64) as c_uint) })
}

/// Attribute values as the server's driver reported them, with our own policy applied.
pub fn attribute(d: &device_model::Device, attrib: i32) -> Result<c_int, R> {
    // As the driver does: attributes past the last one its header knows are invalid.
    let a = usize::try_from(attrib)
        .ok()
        .filter(|&a| a > 0 && a < CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MAX.0 as usize)
        .ok_or(CUresult::CUDA_ERROR_INVALID_VALUE)?;
    let v = d.attribute(a).ok_or(CUresult::CUDA_ERROR_INVALID_VALUE)?;
    Ok(match a {
        // Virtual memory management is forwarded; an operator can still hide it.
        device_model::attr::VIRTUAL_MEMORY_MANAGEMENT_SUPPORTED if vmm_disabled() => 0,
        _ => v,
    })
}

fn vmm_disabled() -> bool {
    std::env::var_os("VGPU_DISABLE_VMM").is_some_and(|v| v != "0")
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuDeviceGetAttribute(pi: *mut c_int, attrib: CUdevice_attribute, dev: CUdevice) -> R {
    entry(|| unsafe { put(pi, attribute(state::device(dev)?, attrib.0 as i32)?) })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuDeviceComputeCapability(major: *mut c_int, minor: *mut c_int, dev: CUdevice) -> R {
    entry(|| {
        let (ma, mi) = state::device(dev)?.compute_capability();
        unsafe {
            put(major, ma)?;
            put(minor, mi)
        }
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuDeviceGetPCIBusId(buf: *mut c_char, len: c_int, dev: CUdevice) -> R {
    entry(|| unsafe { put_str(&state::device(dev)?.pci.bus_id_short(), buf, len) })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuDeviceGetByPCIBusId(dev: *mut CUdevice, id: *const c_char) -> R {
    entry(|| {
        if id.is_null() {
            return Err(CUresult::CUDA_ERROR_INVALID_VALUE);
        }
        let want = unsafe { CStr::from_ptr(id) }.to_string_lossy();
        let s = state::session()?;
        for (ordinal, &i) in state::visible()?.iter().enumerate() {
            if s.snapshot.devices[i].pci.matches_bus_id(&want) {
                return unsafe { put(dev, ordinal as CUdevice) };
            }
        }
        Err(CUresult::CUDA_ERROR_INVALID_DEVICE)
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuDeviceCanAccessPeer(can: *mut c_int, dev: CUdevice, peer: CUdevice) -> R {
    entry(|| {
        let (a, b) = (state::device(dev)?, state::device(peer)?);
        // Peers on different servers cannot reach each other's memory directly.
        let v = if a.server != b.server || dev == peer {
            0
        } else {
            state::call_on(a, &ops::cuDeviceCanAccessPeer { dev: a.cuda_ordinal as i32, peer: b.cuda_ordinal as i32 })?
        };
        unsafe { put(can, v) }
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn attributes_follow_the_snapshot() {
        let d = device_model::sim_device(0);
        assert_eq!(super::attribute(&d, 75), Ok(9));
        assert_eq!(super::attribute(&d, 16), Ok(132));
        assert!(super::attribute(&d, 0).is_err());
        assert!(super::attribute(&d, 100_000).is_err());
        let max = abi::cuda::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MAX.0 as i32;
        assert!(super::attribute(&d, max).is_err());
        assert!(super::attribute(&d, max - 1).is_ok());
    }
}
