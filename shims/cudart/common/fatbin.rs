//! Where the device code handed to `__cudaRegisterFatBinary` lies, and how long it is.
//! Only the 16-byte fatbin header is read; the image itself goes to the driver whole.

use std::ffi::c_void;

/// `__fatBinC_Wrapper_t.magic` (`FATBINC_MAGIC` in `fatbinary_section.h`).
pub(crate) const WRAPPER_MAGIC: u32 = 0x4662_43B1;
/// First word of a fatbin blob.
pub(crate) const FATBIN_MAGIC: u32 = 0xBA55_ED50;
/// Bytes of the fatbin header that [`fatbin_len`] reads.
pub(crate) const HEADER_LEN: usize = 16;

/// The length of the fatbin whose header is `h`: `header_size + fat_size`, or `None` when
/// the magic is wrong or the sizes are absurd.
pub(crate) fn fatbin_len(h: &[u8; HEADER_LEN]) -> Option<usize> {
    let magic = u32::from_le_bytes([h[0], h[1], h[2], h[3]]);
    let header_size = u16::from_le_bytes([h[6], h[7]]);
    let fat_size = u64::from_le_bytes([h[8], h[9], h[10], h[11], h[12], h[13], h[14], h[15]]);
    if magic != FATBIN_MAGIC || usize::from(header_size) < HEADER_LEN {
        return None;
    }
    usize::try_from(fat_size).ok()?.checked_add(usize::from(header_size))
}

/// The device image registered by `arg`: `(address, length)`. `arg` is a
/// `__fatBinC_Wrapper_t` (`{magic, version, data, filename}`) whose `data` is the fatbin, or
/// (accepted as NVIDIA's runtime does) a fatbin itself. `None` if neither.
///
/// # Safety
/// `arg` must be null or point to a readable wrapper or fatbin header.
pub(crate) unsafe fn locate(arg: *const c_void) -> Option<(*const u8, usize)> {
    if arg.is_null() {
        return None;
    }
    // SAFETY: the caller promises at least a wrapper's 24 or a header's 16 readable bytes.
    let magic = unsafe { arg.cast::<u32>().read_unaligned() };
    let blob = match magic {
        // SAFETY: a wrapper: `data` is the pointer at offset 8.
        WRAPPER_MAGIC => unsafe { arg.cast::<u8>().add(8).cast::<*const u8>().read_unaligned() },
        FATBIN_MAGIC => arg.cast::<u8>(),
        _ => return None,
    };
    if blob.is_null() {
        return None;
    }
    // SAFETY: a fatbin starts with its 16-byte header.
    let header = unsafe { blob.cast::<[u8; HEADER_LEN]>().read_unaligned() };
    fatbin_len(&header).map(|len| (blob, len))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(magic: u32, header_size: u16, fat_size: u64) -> [u8; HEADER_LEN] {
        let mut h = [0; HEADER_LEN];
        h[0..4].copy_from_slice(&magic.to_le_bytes());
        h[4..6].copy_from_slice(&1u16.to_le_bytes());
        h[6..8].copy_from_slice(&header_size.to_le_bytes());
        h[8..16].copy_from_slice(&fat_size.to_le_bytes());
        h
    }

    #[test]
    fn lengths() {
        assert_eq!(fatbin_len(&header(FATBIN_MAGIC, 16, 128)), Some(144));
        assert_eq!(fatbin_len(&header(FATBIN_MAGIC, 16, 0)), Some(16));
        assert_eq!(fatbin_len(&header(0xDEAD_BEEF, 16, 128)), None, "bad magic");
        assert_eq!(fatbin_len(&header(WRAPPER_MAGIC, 16, 128)), None, "a wrapper is not a fatbin");
        assert_eq!(fatbin_len(&header(FATBIN_MAGIC, 8, 128)), None, "header too short");
        assert_eq!(fatbin_len(&header(FATBIN_MAGIC, 16, u64::MAX)), None, "overflow");
    }

    #[repr(C)]
    struct Wrapper {
        magic: u32,
        version: u32,
        data: *const u8,
        filename: *const c_void,
    }

    #[test]
    fn locate_through_a_wrapper_or_directly() {
        let mut blob = header(FATBIN_MAGIC, 16, 48).to_vec();
        blob.resize(64, 0xAB);
        let w = Wrapper { magic: WRAPPER_MAGIC, version: 1, data: blob.as_ptr(), filename: std::ptr::null() };
        let got = unsafe { locate((&raw const w).cast()) };
        assert_eq!(got, Some((blob.as_ptr(), 64)));
        assert_eq!(unsafe { locate(blob.as_ptr().cast()) }, Some((blob.as_ptr(), 64)));

        let bad = Wrapper { magic: 0x1234_5678, ..w };
        assert_eq!(unsafe { locate((&raw const bad).cast()) }, None);
        let empty = Wrapper { data: std::ptr::null(), ..w };
        assert_eq!(unsafe { locate((&raw const empty).cast()) }, None);
        assert_eq!(unsafe { locate(std::ptr::null()) }, None);
        let mut bad_blob = blob.clone();
        bad_blob[0] = 0;
        let w2 = Wrapper { data: bad_blob.as_ptr(), ..w };
        assert_eq!(unsafe { locate((&raw const w2).cast()) }, None);
    }
}
