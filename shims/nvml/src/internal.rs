//! `nvmlInternalGetExportTable`: the private table `nvidia-smi` fetches before it trusts an
//! NVML library (without it: "Mismatch in versions between nvidia-smi and NVML").
//!
//! Only the table nvidia-smi asks for is offered. Its layout is not documented; what is
//! known (from public reverse engineering of nvidia-smi 580, e.g. NVIDIA's own mock NVML in
//! k8s-test-infra): word 0 holds the table size, every other word a function taking up to
//! four pointer-sized arguments, identified by its slot. Each slot gets its own function
//! (a const-generic instance) so the dispatcher knows which entry point was called.

use crate::devices;
use abi::nvml::{nvmlDevice_t, nvmlReturn_t};
use std::ffi::c_void;

/// 6c3efec4-8fc9-4e6c-a327-ee696e12f7c4, as the 16 bytes of the caller's GUID.
const NVIDIA_SMI_TABLE: [u8; 16] =
    [0xc4, 0xfe, 0x3e, 0x6c, 0xc9, 0x8f, 0x6c, 0x4e, 0xa3, 0x27, 0xee, 0x69, 0x6e, 0x12, 0xf7, 0xc4];

/// Slots whose meaning is known.
const SLOT_HANDLE_BY_INDEX: usize = 81;
const SLOT_PROCESS_LISTS: std::ops::RangeInclusive<usize> = 213..=215;
const SLOT_HOST_MAX_PCIE_GEN: usize = 230;
const SLOT_SPARSE_OPERATION_MODE: usize = 249;

type Entry = unsafe extern "C" fn(*mut c_void, *mut c_void, *mut c_void, *mut c_void) -> nvmlReturn_t;

#[repr(C)]
struct Table {
    size: usize,
    slots: [Entry; 255],
}

unsafe extern "C" fn slot<const N: usize>(
    a0: *mut c_void,
    a1: *mut c_void,
    a2: *mut c_void,
    _a3: *mut c_void,
) -> nvmlReturn_t {
    shim_support::guard(nvmlReturn_t::NVML_ERROR_UNKNOWN, || unsafe { dispatch(N, a0, a1, a2) })
}

/// What an internal entry point answers. Unknown ones succeed (nvidia-smi gives up on the
/// whole view at the first error) and report zero items for a device, so the caller never
/// walks memory nobody wrote.
unsafe fn dispatch(n: usize, a0: *mut c_void, a1: *mut c_void, a2: *mut c_void) -> nvmlReturn_t {
    if n == SLOT_HANDLE_BY_INDEX && (a0 as usize) < devices::MAX_DEVICES && a2 as usize == 0x22 && !a1.is_null() {
        return unsafe { crate::local::nvmlDeviceGetHandleByIndex_v2(a0 as u32, a1.cast()) };
    }
    let dev = a0 as nvmlDevice_t;
    if a1.is_null() || devices::device(dev).is_err() {
        return nvmlReturn_t::NVML_SUCCESS;
    }
    let out = a1.cast::<u32>();
    match n {
        SLOT_SPARSE_OPERATION_MODE => nvmlReturn_t::NVML_ERROR_NOT_SUPPORTED,
        SLOT_HOST_MAX_PCIE_GEN => {
            // The host side is the server's; its device maximum is the best answer we have.
            let r = unsafe { crate::forward::nvmlDeviceGetMaxPcieLinkGeneration(dev, out) };
            if r != nvmlReturn_t::NVML_SUCCESS {
                unsafe { *out = 0 };
            }
            nvmlReturn_t::NVML_SUCCESS
        }
        n if SLOT_PROCESS_LISTS.contains(&n) => {
            // Processes on the server's GPU belong to the server's sessions, not to us.
            unsafe { *out = 0 };
            nvmlReturn_t::NVML_SUCCESS
        }
        _ => {
            unsafe { *out = 0 };
            nvmlReturn_t::NVML_SUCCESS
        }
    }
}

static TABLE: Table = Table {
    size: 0x1000,
    slots: [
        slot::<1>,
        slot::<2>,
        slot::<3>,
        slot::<4>,
        slot::<5>,
        slot::<6>,
        slot::<7>,
        slot::<8>,
        slot::<9>,
        slot::<10>,
        slot::<11>,
        slot::<12>,
        slot::<13>,
        slot::<14>,
        slot::<15>,
        slot::<16>,
        slot::<17>,
        slot::<18>,
        slot::<19>,
        slot::<20>,
        slot::<21>,
        slot::<22>,
        slot::<23>,
        slot::<24>,
        slot::<25>,
        slot::<26>,
        slot::<27>,
        slot::<28>,
        slot::<29>,
        slot::<30>,
        slot::<31>,
        slot::<32>,
        slot::<33>,
        slot::<34>,
        slot::<35>,
        slot::<36>,
        slot::<37>,
        slot::<38>,
        slot::<39>,
        slot::<40>,
        slot::<41>,
        slot::<42>,
        slot::<43>,
        slot::<44>,
        slot::<45>,
        slot::<46>,
        slot::<47>,
        slot::<48>,
        slot::<49>,
        slot::<50>,
        slot::<51>,
        slot::<52>,
        slot::<53>,
        slot::<54>,
        slot::<55>,
        slot::<56>,
        slot::<57>,
        slot::<58>,
        slot::<59>,
        slot::<60>,
        slot::<61>,
        slot::<62>,
        slot::<63>,
        slot::<64>,
        slot::<65>,
        slot::<66>,
        slot::<67>,
        slot::<68>,
        slot::<69>,
        slot::<70>,
        slot::<71>,
        slot::<72>,
        slot::<73>,
        slot::<74>,
        slot::<75>,
        slot::<76>,
        slot::<77>,
        slot::<78>,
        slot::<79>,
        slot::<80>,
        slot::<81>,
        slot::<82>,
        slot::<83>,
        slot::<84>,
        slot::<85>,
        slot::<86>,
        slot::<87>,
        slot::<88>,
        slot::<89>,
        slot::<90>,
        slot::<91>,
        slot::<92>,
        slot::<93>,
        slot::<94>,
        slot::<95>,
        slot::<96>,
        slot::<97>,
        slot::<98>,
        slot::<99>,
        slot::<100>,
        slot::<101>,
        slot::<102>,
        slot::<103>,
        slot::<104>,
        slot::<105>,
        slot::<106>,
        slot::<107>,
        slot::<108>,
        slot::<109>,
        slot::<110>,
        slot::<111>,
        slot::<112>,
        slot::<113>,
        slot::<114>,
        slot::<115>,
        slot::<116>,
        slot::<117>,
        slot::<118>,
        slot::<119>,
        slot::<120>,
        slot::<121>,
        slot::<122>,
        slot::<123>,
        slot::<124>,
        slot::<125>,
        slot::<126>,
        slot::<127>,
        slot::<128>,
        slot::<129>,
        slot::<130>,
        slot::<131>,
        slot::<132>,
        slot::<133>,
        slot::<134>,
        slot::<135>,
        slot::<136>,
        slot::<137>,
        slot::<138>,
        slot::<139>,
        slot::<140>,
        slot::<141>,
        slot::<142>,
        slot::<143>,
        slot::<144>,
        slot::<145>,
        slot::<146>,
        slot::<147>,
        slot::<148>,
        slot::<149>,
        slot::<150>,
        slot::<151>,
        slot::<152>,
        slot::<153>,
        slot::<154>,
        slot::<155>,
        slot::<156>,
        slot::<157>,
        slot::<158>,
        slot::<159>,
        slot::<160>,
        slot::<161>,
        slot::<162>,
        slot::<163>,
        slot::<164>,
        slot::<165>,
        slot::<166>,
        slot::<167>,
        slot::<168>,
        slot::<169>,
        slot::<170>,
        slot::<171>,
        slot::<172>,
        slot::<173>,
        slot::<174>,
        slot::<175>,
        slot::<176>,
        slot::<177>,
        slot::<178>,
        slot::<179>,
        slot::<180>,
        slot::<181>,
        slot::<182>,
        slot::<183>,
        slot::<184>,
        slot::<185>,
        slot::<186>,
        slot::<187>,
        slot::<188>,
        slot::<189>,
        slot::<190>,
        slot::<191>,
        slot::<192>,
        slot::<193>,
        slot::<194>,
        slot::<195>,
        slot::<196>,
        slot::<197>,
        slot::<198>,
        slot::<199>,
        slot::<200>,
        slot::<201>,
        slot::<202>,
        slot::<203>,
        slot::<204>,
        slot::<205>,
        slot::<206>,
        slot::<207>,
        slot::<208>,
        slot::<209>,
        slot::<210>,
        slot::<211>,
        slot::<212>,
        slot::<213>,
        slot::<214>,
        slot::<215>,
        slot::<216>,
        slot::<217>,
        slot::<218>,
        slot::<219>,
        slot::<220>,
        slot::<221>,
        slot::<222>,
        slot::<223>,
        slot::<224>,
        slot::<225>,
        slot::<226>,
        slot::<227>,
        slot::<228>,
        slot::<229>,
        slot::<230>,
        slot::<231>,
        slot::<232>,
        slot::<233>,
        slot::<234>,
        slot::<235>,
        slot::<236>,
        slot::<237>,
        slot::<238>,
        slot::<239>,
        slot::<240>,
        slot::<241>,
        slot::<242>,
        slot::<243>,
        slot::<244>,
        slot::<245>,
        slot::<246>,
        slot::<247>,
        slot::<248>,
        slot::<249>,
        slot::<250>,
        slot::<251>,
        slot::<252>,
        slot::<253>,
        slot::<254>,
        slot::<255>,
    ],
};

#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlInternalGetExportTable(table: *mut *const c_void, guid: *const [u8; 16]) -> nvmlReturn_t {
    shim_support::guard(nvmlReturn_t::NVML_ERROR_UNKNOWN, || {
        if table.is_null() || guid.is_null() {
            return nvmlReturn_t::NVML_ERROR_INVALID_ARGUMENT;
        }
        if unsafe { *guid } != NVIDIA_SMI_TABLE {
            shim_support::unsupported("nvmlInternalGetExportTable (unknown table)");
            return nvmlReturn_t::NVML_ERROR_NOT_SUPPORTED;
        }
        unsafe { *table = (&TABLE as *const Table).cast() };
        nvmlReturn_t::NVML_SUCCESS
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_known_table_is_offered() {
        let mut t: *const c_void = std::ptr::null();
        let other = [0u8; 16];
        assert_eq!(unsafe { nvmlInternalGetExportTable(&mut t, &other) }, nvmlReturn_t::NVML_ERROR_NOT_SUPPORTED);
        assert_eq!(unsafe { nvmlInternalGetExportTable(&mut t, &NVIDIA_SMI_TABLE) }, nvmlReturn_t::NVML_SUCCESS);
        assert_eq!(unsafe { *(t as *const usize) }, 0x1000);
        // Slot 5 is a distinct function that answers success for a non-device call.
        let f: Entry = unsafe { *(t as *const Entry).add(5) };
        assert_eq!(
            unsafe { f(std::ptr::null_mut(), std::ptr::null_mut(), std::ptr::null_mut(), std::ptr::null_mut()) },
            nvmlReturn_t::NVML_SUCCESS
        );
    }
}
