//! Virtual memory management: reserved address ranges, physical allocations (counted
//! against the quota of their device) and mappings (which become copyable ranges).
//!
//! `CUmemAllocationProp` and `CUmemAccessDesc` arrive as raw bytes of their C layout.

use super::handles::Vmm;
use super::ranges::{Kind, Range};
use super::{CudaSession, INVALID_HANDLE, INVALID_VALUE, R};
use abi::cuda::{CUmemAccessDesc, CUmemAllocationGranularity_flags, CUmemAllocationProp, CUmemLocationType};

/// Upper bound on access descriptors in one `cuMemSetAccess` (one per device and a few
/// host locations is all there can be).
const MAX_ACCESS_DESCS: u64 = 1024;

/// A plain C struct (a header type of plain fields) from exactly its bytes.
pub fn read_struct<T: Copy>(bytes: &[u8]) -> R<T> {
    if bytes.len() != size_of::<T>() {
        return Err(INVALID_VALUE);
    }
    // SAFETY: the length is T's, and T (a bindgen struct of integers, enums and pointers)
    // is valid for any bytes.
    Ok(unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<T>()) })
}

/// A plain C struct's bytes, as `read_struct` reads them (what goes back to the client).
pub fn struct_bytes<T: Copy>(v: &T) -> Vec<u8> {
    // SAFETY: the `size_of::<T>()` bytes of a live value (a bindgen struct or union the
    // caller initialised, zeroed where the driver did not write).
    unsafe { std::slice::from_raw_parts((v as *const T).cast::<u8>(), size_of::<T>()) }.to_vec()
}

/// Read a `CUmemAllocationProp` from its bytes. Its `win32HandleMetaData` is a host
/// pointer from the client, meaningless here, so it is cleared.
pub fn read_prop(bytes: &[u8]) -> R<CUmemAllocationProp> {
    let mut p: CUmemAllocationProp = read_struct(bytes)?;
    p.win32HandleMetaData = std::ptr::null_mut();
    Ok(p)
}

/// `count` access descriptors from their bytes.
pub fn read_access(bytes: &[u8], count: u64) -> R<Vec<CUmemAccessDesc>> {
    let n = usize::try_from(count).ok().filter(|_| count <= MAX_ACCESS_DESCS).ok_or(INVALID_VALUE)?;
    if bytes.len() != n * size_of::<CUmemAccessDesc>() {
        return Err(INVALID_VALUE);
    }
    Ok((0..n).map(|i| unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<CUmemAccessDesc>().add(i)) }).collect())
}

impl CudaSession {
    pub(super) fn address_reserve(&mut self, size: u64, align: u64, addr: u64, flags: u64) -> R<u64> {
        let mut p = 0;
        cu!(self.lib, cuMemAddressReserve(&mut p, size as usize, align as usize, addr, flags))?;
        self.h.reserved.insert(p, size);
        Ok(p)
    }

    pub(super) fn address_free(&mut self, ptr: u64, size: u64) -> R<()> {
        if self.h.reserved.get(&ptr) != Some(&size) {
            return Err(INVALID_VALUE);
        }
        cu!(self.lib, cuMemAddressFree(ptr, size as usize))?;
        self.h.reserved.remove(&ptr);
        let end = ptr + size;
        self.ranges.remove_where(|s, r| r.kind == Kind::Mapped && s >= ptr && s < end);
        Ok(())
    }

    pub(super) fn mem_create(&mut self, size: u64, prop: &[u8], flags: u64) -> R<u64> {
        let p = read_prop(prop)?;
        let dev = (p.location.type_ == CUmemLocationType::CU_MEM_LOCATION_TYPE_DEVICE)
            .then(|| usize::try_from(p.location.id).ok().filter(|&d| d < self.devices.len()))
            .map(|d| d.ok_or(super::INVALID_DEVICE))
            .transpose()?;
        if let Some(d) = dev {
            self.reserve_quota(d, size)?;
        }
        let mut h = 0;
        cu!(self.lib, cuMemCreate(&mut h, size as usize, &p, flags))?;
        self.h.vmm.insert(h, Vmm { size, dev, retained: 0 });
        if let Some(d) = dev {
            self.used[d] += size;
        }
        Ok(h)
    }

    pub(super) fn mem_release(&mut self, handle: u64) -> R<()> {
        let v = *self.h.vmm.get(&handle).ok_or(INVALID_HANDLE)?;
        cu!(self.lib, cuMemRelease(handle))?;
        if v.retained > 0 {
            // A reference `retain_allocation` took: the allocation stays.
            self.h.vmm.insert(handle, Vmm { retained: v.retained - 1, ..v });
            return Ok(());
        }
        self.h.vmm.remove(&handle);
        if let Some(d) = v.dev {
            self.uncount(d, v.size);
        }
        Ok(())
    }

    /// The allocation mapped at `ptr` (memory of this session's), with a reference more. One
    /// the application released already (the driver keeps it while mapped) comes back
    /// counting against no quota: its quota went with that release.
    pub(super) fn retain_allocation(&mut self, ptr: u64) -> R<u64> {
        self.ranges.check(ptr, 1)?;
        let mut h = 0;
        cu!(self.lib, cuMemRetainAllocationHandle(&mut h, ptr as *mut std::ffi::c_void))?;
        match self.h.vmm.get_mut(&h) {
            Some(v) => v.retained += 1,
            None => _ = self.h.vmm.insert(h, Vmm { size: 0, dev: None, retained: 0 }),
        }
        Ok(h)
    }

    /// `CUmemAllocationProp`'s bytes for one of this session's allocations.
    pub(super) fn allocation_properties(&mut self, handle: u64) -> R<Vec<u8>> {
        self.h.vmm.get(&handle).ok_or(INVALID_HANDLE)?;
        let mut p = CUmemAllocationProp::default();
        cu!(self.lib, cuMemGetAllocationPropertiesFromHandle(&mut p, handle))?;
        // A pointer of this process's, meaningless to the client.
        p.win32HandleMetaData = std::ptr::null_mut();
        Ok(struct_bytes(&p))
    }

    pub(super) fn mem_map(&mut self, ptr: u64, size: u64, offset: u64, handle: u64, flags: u64) -> R<()> {
        let v = *self.h.vmm.get(&handle).ok_or(INVALID_HANDLE)?;
        if !self.h.reserved_contains(ptr, size) || offset.checked_add(size).is_none_or(|e| e > v.size) {
            return Err(INVALID_VALUE);
        }
        cu!(self.lib, cuMemMap(ptr, size as usize, offset as usize, handle, flags))?;
        let dev = v.dev.unwrap_or(usize::MAX);
        self.ranges.insert(ptr, Range { len: size, dev, ctx: 0, kind: Kind::Mapped });
        Ok(())
    }

    pub(super) fn mem_unmap(&mut self, ptr: u64, size: u64) -> R<()> {
        if !self.h.reserved_contains(ptr, size) {
            return Err(INVALID_VALUE);
        }
        cu!(self.lib, cuMemUnmap(ptr, size as usize))?;
        let end = ptr + size;
        self.ranges.remove_where(|s, r| r.kind == Kind::Mapped && s >= ptr && s < end);
        Ok(())
    }

    pub(super) fn mem_set_access(&mut self, ptr: u64, size: u64, desc: &[u8], count: u64) -> R<()> {
        let d = read_access(desc, count)?;
        if !self.h.reserved_contains(ptr, size) {
            return Err(INVALID_VALUE);
        }
        cu!(self.lib, cuMemSetAccess(ptr, size as usize, d.as_ptr(), d.len()))
    }

    pub(super) fn allocation_granularity(&mut self, prop: &[u8], option: u32) -> R<u64> {
        let p = read_prop(prop)?;
        let mut g = 0usize;
        cu!(self.lib, cuMemGetAllocationGranularity(&mut g, &p, CUmemAllocationGranularity_flags(option)))?;
        Ok(g as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn props_and_access_descriptors_from_bytes() {
        let mut p = CUmemAllocationProp {
            type_: abi::cuda::CUmemAllocationType::CU_MEM_ALLOCATION_TYPE_PINNED,
            requestedHandleTypes: abi::cuda::CUmemAllocationHandleType(0),
            location: abi::cuda::CUmemLocation { type_: CUmemLocationType::CU_MEM_LOCATION_TYPE_DEVICE, id: 3 },
            win32HandleMetaData: 0x1234 as *mut _,
            allocFlags: Default::default(),
        };
        p.allocFlags.gpuDirectRDMACapable = 1;
        // Unaligned on purpose.
        let mut b = vec![0u8];
        b.extend(struct_bytes(&p));
        let q = read_prop(&b[1..]).unwrap();
        assert_eq!(q.location.id, 3);
        assert_eq!(q.location.type_, CUmemLocationType::CU_MEM_LOCATION_TYPE_DEVICE);
        assert_eq!(q.allocFlags.gpuDirectRDMACapable, 1);
        assert!(q.win32HandleMetaData.is_null());
        assert_eq!(read_prop(&b).unwrap_err(), INVALID_VALUE);

        let a = CUmemAccessDesc {
            location: abi::cuda::CUmemLocation { type_: CUmemLocationType::CU_MEM_LOCATION_TYPE_DEVICE, id: 1 },
            flags: abi::cuda::CUmemAccess_flags::CU_MEM_ACCESS_FLAGS_PROT_READWRITE,
        };
        let mut two = struct_bytes(&a);
        two.extend(struct_bytes(&a));
        let d = read_access(&two, 2).unwrap();
        assert_eq!(d.len(), 2);
        assert_eq!(d[1].location.id, 1);
        assert_eq!(read_access(&two, 1).unwrap_err(), INVALID_VALUE);
        assert_eq!(read_access(&two, 3).unwrap_err(), INVALID_VALUE);
        assert_eq!(read_access(&[], u64::MAX).unwrap_err(), INVALID_VALUE);
    }
}
