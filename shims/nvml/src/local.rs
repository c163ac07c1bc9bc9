//! NVML entry points answered in this process: init/shutdown, error strings, and identity
//! from the device snapshot (so NVML and CUDA tell the same story).

use crate::devices;
use abi::nvml::*;
use client::Session;
use device_model::Device;
use shim_support::guard;
use std::ffi::CStr;
use std::os::raw::{c_char, c_int, c_uint};
use std::sync::atomic::{AtomicU32, Ordering};

type R = nvmlReturn_t;
const OK: R = nvmlReturn_t::NVML_SUCCESS;
const UNKNOWN: R = nvmlReturn_t::NVML_ERROR_UNKNOWN;
const INVALID: R = nvmlReturn_t::NVML_ERROR_INVALID_ARGUMENT;

static INIT: AtomicU32 = AtomicU32::new(0);

/// The session, if NVML is initialised and the server reachable. One that was lost is
/// made again once the server is back (`client::renewed`): NVML keeps no state of its
/// own there, so a long-running monitor outlives a restart of the server.
pub fn session() -> Result<&'static Session, R> {
    if INIT.load(Ordering::Acquire) == 0 {
        return Err(nvmlReturn_t::NVML_ERROR_UNINITIALIZED);
    }
    client::renewed().map_err(|_| nvmlReturn_t::NVML_ERROR_DRIVER_NOT_LOADED)
}

/// An init where the server could not be reached tries again (at most every
/// `client::RENEW_EVERY`): a service that starts before the server, and retries, finds it.
fn init() -> R {
    match client::renewed() {
        Ok(_) => {
            INIT.fetch_add(1, Ordering::AcqRel);
            OK
        }
        // The session already printed one line naming the address it tried.
        Err(_) => nvmlReturn_t::NVML_ERROR_DRIVER_NOT_LOADED,
    }
}

#[unsafe(no_mangle)]
pub extern "C" fn nvmlInit_v2() -> R {
    guard(UNKNOWN, init)
}

#[unsafe(no_mangle)]
pub extern "C" fn nvmlInit() -> R {
    guard(UNKNOWN, init)
}

#[unsafe(no_mangle)]
pub extern "C" fn nvmlInitWithFlags(_flags: c_uint) -> R {
    guard(UNKNOWN, init)
}

#[unsafe(no_mangle)]
pub extern "C" fn nvmlShutdown() -> R {
    guard(UNKNOWN, || match INIT.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1)) {
        Ok(_) => OK,
        Err(_) => nvmlReturn_t::NVML_ERROR_UNINITIALIZED,
    })
}

/// Text for an NVML code; the strings are static, as NVML's are.
pub fn error_string(r: u32) -> &'static CStr {
    match r {
        0 => c"Success",
        1 => c"Uninitialized",
        2 => c"Invalid Argument",
        3 => c"Not Supported",
        4 => c"Insufficient Permissions",
        5 => c"Already Initialized",
        6 => c"Not Found",
        7 => c"Insufficient Size",
        8 => c"Insufficient External Power",
        9 => c"Driver Not Loaded",
        10 => c"Timeout",
        11 => c"Interrupt Request Issue",
        12 => c"NVML Shared Library Not Found",
        13 => c"Function Not Found",
        14 => c"Corrupted infoROM",
        15 => c"GPU is lost",
        16 => c"GPU requires restart",
        17 => c"The operating system has blocked the request.",
        18 => c"RM has detected an NVML/RM version mismatch.",
        19 => c"In use by another client",
        20 => c"Insufficient Memory",
        21 => c"No data",
        22 => c"The requested vgpu operation is not available on target device, becasue ECC is enabled",
        23 => c"Insufficient resources",
        24 => c"Unsupported frequency",
        25 => c"Argument version mismatch",
        26 => c"Deprecated",
        27 => c"Not Ready",
        28 => c"GPU not found",
        29 => c"Invalid state",
        _ => c"Unknown Error",
    }
}

#[unsafe(no_mangle)]
pub extern "C" fn nvmlErrorString(r: nvmlReturn_t) -> *const c_char {
    guard(c"Unknown Error".as_ptr(), || error_string(r.0).as_ptr())
}

/// Copy `s` NUL-terminated into a caller buffer of `len` bytes.
pub unsafe fn put_str(s: &str, buf: *mut c_char, len: c_uint) -> R {
    if buf.is_null() {
        return INVALID;
    }
    if s.len() + 1 > len as usize {
        return nvmlReturn_t::NVML_ERROR_INSUFFICIENT_SIZE;
    }
    unsafe {
        std::ptr::copy_nonoverlapping(s.as_ptr(), buf.cast(), s.len());
        *buf.add(s.len()) = 0;
    }
    OK
}

unsafe fn put<T>(out: *mut T, v: T) -> R {
    if out.is_null() {
        return INVALID;
    }
    unsafe { out.write(v) };
    OK
}

fn with_session(f: impl FnOnce(&'static Session) -> R) -> R {
    guard(UNKNOWN, || match session() {
        Ok(s) => f(s),
        Err(e) => e,
    })
}

fn with_device(dev: nvmlDevice_t, f: impl FnOnce(usize, &'static Device) -> R) -> R {
    guard(UNKNOWN, || match devices::device(dev) {
        Ok((_, i, d)) => f(i, d),
        Err(e) => e,
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlSystemGetDriverVersion(buf: *mut c_char, len: c_uint) -> R {
    with_session(|s| unsafe { put_str(&s.snapshot.driver_version, buf, len) })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlSystemGetNVMLVersion(buf: *mut c_char, len: c_uint) -> R {
    with_session(|s| unsafe { put_str(&s.snapshot.nvml_version, buf, len) })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlSystemGetCudaDriverVersion(v: *mut c_int) -> R {
    with_session(|s| unsafe { put(v, s.snapshot.cuda_driver_version) })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlSystemGetCudaDriverVersion_v2(v: *mut c_int) -> R {
    with_session(|s| unsafe { put(v, s.snapshot.cuda_driver_version) })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetCount_v2(n: *mut c_uint) -> R {
    with_session(|s| unsafe { put(n, s.snapshot.devices.len().min(devices::MAX_DEVICES) as c_uint) })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetCount(n: *mut c_uint) -> R {
    unsafe { nvmlDeviceGetCount_v2(n) }
}

fn by_index(i: c_uint, out: *mut nvmlDevice_t) -> R {
    with_session(|s| {
        if (i as usize) >= s.snapshot.devices.len().min(devices::MAX_DEVICES) {
            return INVALID;
        }
        unsafe { put(out, devices::handle(i as usize)) }
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetHandleByIndex_v2(i: c_uint, out: *mut nvmlDevice_t) -> R {
    by_index(i, out)
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetHandleByIndex(i: c_uint, out: *mut nvmlDevice_t) -> R {
    by_index(i, out)
}

/// Find a device by a predicate on it; NOT_FOUND when none matches.
fn find(key: *const c_char, out: *mut nvmlDevice_t, matches: impl Fn(&str, &Device) -> bool) -> R {
    with_session(|s| {
        if key.is_null() {
            return INVALID;
        }
        let key = unsafe { CStr::from_ptr(key) }.to_string_lossy();
        match s.snapshot.devices.iter().take(devices::MAX_DEVICES).position(|d| matches(&key, d)) {
            Some(i) => unsafe { put(out, devices::handle(i)) },
            None => nvmlReturn_t::NVML_ERROR_NOT_FOUND,
        }
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetHandleByUUID(uuid: *const c_char, out: *mut nvmlDevice_t) -> R {
    find(uuid, out, |k, d| d.uuid_string().eq_ignore_ascii_case(k.trim()))
}

fn same_bus_id(k: &str, d: &Device) -> bool {
    d.pci.matches_bus_id(k)
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetHandleByPciBusId_v2(id: *const c_char, out: *mut nvmlDevice_t) -> R {
    find(id, out, same_bus_id)
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetHandleByPciBusId(id: *const c_char, out: *mut nvmlDevice_t) -> R {
    find(id, out, same_bus_id)
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetHandleBySerial(serial: *const c_char, out: *mut nvmlDevice_t) -> R {
    find(serial, out, |k, d| d.serial == k.trim())
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetName(dev: nvmlDevice_t, buf: *mut c_char, len: c_uint) -> R {
    with_device(dev, |_, d| unsafe { put_str(&d.name, buf, len) })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetUUID(dev: nvmlDevice_t, buf: *mut c_char, len: c_uint) -> R {
    with_device(dev, |_, d| unsafe { put_str(&d.uuid_string(), buf, len) })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetSerial(dev: nvmlDevice_t, buf: *mut c_char, len: c_uint) -> R {
    with_device(dev, |_, d| unsafe { put_str(&d.serial, buf, len) })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetBoardPartNumber(dev: nvmlDevice_t, buf: *mut c_char, len: c_uint) -> R {
    with_device(dev, |_, d| unsafe { put_str(&d.board_part_number, buf, len) })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetVbiosVersion(dev: nvmlDevice_t, buf: *mut c_char, len: c_uint) -> R {
    with_device(dev, |_, d| unsafe { put_str(&d.vbios_version, buf, len) })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetIndex(dev: nvmlDevice_t, out: *mut c_uint) -> R {
    with_device(dev, |i, _| unsafe { put(out, i as c_uint) })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetMinorNumber(dev: nvmlDevice_t, out: *mut c_uint) -> R {
    with_device(dev, |_, d| unsafe { put(out, d.minor_number) })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetArchitecture(dev: nvmlDevice_t, out: *mut nvmlDeviceArchitecture_t) -> R {
    with_device(dev, |_, d| unsafe { put(out, d.architecture) })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetCudaComputeCapability(
    dev: nvmlDevice_t,
    major: *mut c_int,
    minor: *mut c_int,
) -> R {
    with_device(dev, |_, d| {
        let (ma, mi) = d.compute_capability();
        if major.is_null() || minor.is_null() {
            return INVALID;
        }
        unsafe {
            *major = ma;
            *minor = mi;
        }
        OK
    })
}

/// Fill an `nvmlPciInfo_t` from the snapshot; `full` is false for the 36-byte v1 layout
/// (legacy bus id only).
pub fn pci_info(d: &Device, out: *mut nvmlPciInfo_t, full: bool) -> R {
    if out.is_null() {
        return INVALID;
    }
    let mut p = nvmlPciInfo_t {
        domain: d.pci.domain,
        bus: d.pci.bus,
        device: d.pci.device,
        pciDeviceId: d.pci.pci_device_id,
        pciSubSystemId: d.pci.pci_subsystem_id,
        ..Default::default()
    };
    fill(&mut p.busIdLegacy, &d.pci.bus_id_legacy());
    fill(&mut p.busId, &d.pci.bus_id());
    let n = if full { size_of::<nvmlPciInfo_t>() } else { std::mem::offset_of!(nvmlPciInfo_t, busId) };
    unsafe { std::ptr::copy_nonoverlapping((&p as *const nvmlPciInfo_t).cast::<u8>(), out.cast::<u8>(), n) };
    OK
}

fn fill(dst: &mut [c_char], s: &str) {
    let room = dst.len() - 1;
    for (d, b) in dst.iter_mut().zip(s.bytes().take(room)) {
        *d = b as c_char;
    }
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetPciInfo_v3(dev: nvmlDevice_t, out: *mut nvmlPciInfo_t) -> R {
    with_device(dev, |_, d| pci_info(d, out, true))
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetPciInfo_v2(dev: nvmlDevice_t, out: *mut nvmlPciInfo_t) -> R {
    with_device(dev, |_, d| pci_info(d, out, true))
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetPciInfo(dev: nvmlDevice_t, out: *mut nvmlPciInfo_t) -> R {
    with_device(dev, |_, d| pci_info(d, out, false))
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetPciInfoExt(dev: nvmlDevice_t, out: *mut nvmlPciInfoExt_t) -> R {
    with_device(dev, |_, d| {
        let Some(o) = (unsafe { out.as_mut() }) else { return INVALID };
        o.domain = d.pci.domain;
        o.bus = d.pci.bus;
        o.device = d.pci.device;
        o.pciDeviceId = d.pci.pci_device_id;
        o.pciSubSystemId = d.pci.pci_subsystem_id;
        // A 3D controller (0x03/0x02), as data-centre GPUs report themselves.
        o.baseClass = 3;
        o.subClass = 2;
        o.busId = [0; 32];
        fill(&mut o.busId, &d.pci.bus_id());
        OK
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn put_str_checks_size() {
        let mut buf = [0 as c_char; 4];
        assert_eq!(unsafe { put_str("abc", buf.as_mut_ptr(), 4) }, OK);
        assert_eq!(unsafe { CStr::from_ptr(buf.as_ptr()) }.to_str().unwrap(), "abc");
        assert_eq!(unsafe { put_str("abcd", buf.as_mut_ptr(), 4) }, nvmlReturn_t::NVML_ERROR_INSUFFICIENT_SIZE);
    }

    #[test]
    fn pci_info_layout() {
        let d = device_model::sim_device(0);
        let mut p = nvmlPciInfo_t::default();
        assert_eq!(pci_info(&d, &mut p, true), OK);
        let bus = unsafe { CStr::from_ptr(p.busId.as_ptr()) }.to_str().unwrap();
        assert_eq!(bus, "00000000:18:00.0");
        assert_eq!(p.pciDeviceId, 0x2330_10DE);
    }

    #[test]
    fn uninitialised_calls_fail_cleanly() {
        let mut n: c_uint = 7;
        assert_eq!(unsafe { nvmlDeviceGetCount_v2(&mut n) }, nvmlReturn_t::NVML_ERROR_UNINITIALIZED);
        assert_eq!(nvmlShutdown(), nvmlReturn_t::NVML_ERROR_UNINITIALIZED);
        assert_eq!(error_string(3).to_str().unwrap(), "Not Supported");
    }
}
