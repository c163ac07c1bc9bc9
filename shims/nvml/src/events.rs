//! Event sets. Remote GPU events (Xid errors, clock changes) are not delivered; a set can
//! be created, registered and waited on, and a wait times out, as on a GPU where no event
//! happens. nvidia-smi's default view needs the set to exist.

use crate::devices;
use abi::nvml::*;
use shim_support::guard;
use std::os::raw::{c_uint, c_ulonglong};

const UNKNOWN: nvmlReturn_t = nvmlReturn_t::NVML_ERROR_UNKNOWN;
static SET: u8 = 0;

fn the_set() -> nvmlEventSet_t {
    (&SET as *const u8).cast_mut().cast()
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlEventSetCreate(set: *mut nvmlEventSet_t) -> nvmlReturn_t {
    guard(UNKNOWN, || {
        if let Err(e) = crate::local::session() {
            return e;
        }
        if set.is_null() {
            return nvmlReturn_t::NVML_ERROR_INVALID_ARGUMENT;
        }
        unsafe { *set = the_set() };
        nvmlReturn_t::NVML_SUCCESS
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetSupportedEventTypes(dev: nvmlDevice_t, types: *mut c_ulonglong) -> nvmlReturn_t {
    guard(UNKNOWN, || match devices::device(dev) {
        Err(e) => e,
        Ok(_) if types.is_null() => nvmlReturn_t::NVML_ERROR_INVALID_ARGUMENT,
        Ok(_) => {
            unsafe { *types = 0 };
            nvmlReturn_t::NVML_SUCCESS
        }
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceRegisterEvents(
    dev: nvmlDevice_t,
    types: c_ulonglong,
    set: nvmlEventSet_t,
) -> nvmlReturn_t {
    guard(UNKNOWN, || match devices::device(dev) {
        Err(e) => e,
        Ok(_) if set != the_set() => nvmlReturn_t::NVML_ERROR_INVALID_ARGUMENT,
        // No event type is supported remotely, as nvmlDeviceGetSupportedEventTypes says.
        Ok(_) if types != 0 => nvmlReturn_t::NVML_ERROR_NOT_SUPPORTED,
        Ok(_) => nvmlReturn_t::NVML_SUCCESS,
    })
}

fn wait(set: nvmlEventSet_t, timeout_ms: c_uint) -> nvmlReturn_t {
    if set != the_set() {
        return nvmlReturn_t::NVML_ERROR_INVALID_ARGUMENT;
    }
    // Bounded: a caller asking for a long wait gets at most a few seconds.
    std::thread::sleep(std::time::Duration::from_millis(timeout_ms.min(5000) as u64));
    nvmlReturn_t::NVML_ERROR_TIMEOUT
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlEventSetWait_v2(
    set: nvmlEventSet_t,
    _data: *mut nvmlEventData_t,
    timeout_ms: c_uint,
) -> nvmlReturn_t {
    guard(UNKNOWN, || wait(set, timeout_ms))
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlEventSetWait(
    set: nvmlEventSet_t,
    _data: *mut nvmlEventData_t,
    timeout_ms: c_uint,
) -> nvmlReturn_t {
    guard(UNKNOWN, || wait(set, timeout_ms))
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlEventSetFree(set: nvmlEventSet_t) -> nvmlReturn_t {
    guard(UNKNOWN, || {
        if set == the_set() { nvmlReturn_t::NVML_SUCCESS } else { nvmlReturn_t::NVML_ERROR_INVALID_ARGUMENT }
    })
}
