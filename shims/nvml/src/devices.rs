//! `nvmlDevice_t` handles: addresses of one-byte slots in a static table, so a handle maps
//! back to its index with no allocation and a foreign pointer is recognised as invalid.

use abi::nvml::{nvmlDevice_st, nvmlDevice_t, nvmlReturn_t};
use client::Session;
use device_model::Device;

pub const MAX_DEVICES: usize = 64;
static SLOTS: [u8; MAX_DEVICES] = [0; MAX_DEVICES];

pub fn handle(index: usize) -> nvmlDevice_t {
    (&SLOTS[index] as *const u8).cast_mut().cast::<nvmlDevice_st>()
}

pub fn index(h: nvmlDevice_t) -> Option<usize> {
    let base = SLOTS.as_ptr() as usize;
    let p = h as usize;
    (p >= base && p < base + MAX_DEVICES).then(|| p - base)
}

/// The session (only between init and shutdown) and the device a handle names.
pub fn device(h: nvmlDevice_t) -> Result<(&'static Session, usize, &'static Device), nvmlReturn_t> {
    let s = crate::local::session()?;
    let i = index(h).ok_or(nvmlReturn_t::NVML_ERROR_INVALID_ARGUMENT)?;
    let d = s.snapshot.devices.get(i).ok_or(nvmlReturn_t::NVML_ERROR_INVALID_ARGUMENT)?;
    Ok((s, i, d))
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn handles_roundtrip() {
        for i in [0, 1, MAX_DEVICES - 1] {
            assert_eq!(index(handle(i)), Some(i));
        }
        assert_eq!(index(std::ptr::null_mut()), None);
        let other = 0u8;
        assert_eq!(index((&other as *const u8).cast_mut().cast()), None);
    }
}
