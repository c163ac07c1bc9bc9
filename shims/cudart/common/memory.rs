//! Allocation: device memory (plain, pitched, stream-ordered, managed), pinned host memory
//! (allocated or registered), and pointer attributes.

use std::ffi::{c_int, c_uint, c_void};
use std::ptr::null_mut;

use abi::cuda::{self as cu, CUmemorytype as M, CUpointer_attribute as P};

use super::context::{check_device, current};
use super::error::{Res, api, non_null, out};
use super::{cs, ptsz};
use crate::rt::{self, cudaError_t as E};

/// `cudaInvalidDeviceId`: the device of memory no device knows.
const INVALID_DEVICE_ID: i32 = -2;

fn dptr(p: *mut c_void) -> cu::CUdeviceptr {
    p as cu::CUdeviceptr
}

fn malloc(ptr: *mut *mut c_void, size: usize) -> Res {
    non_null(ptr)?;
    current()?;
    if size == 0 {
        return out(ptr, null_mut());
    }
    let mut d = 0;
    cu!(cuMemAlloc_v2(&mut d, size))?;
    out(ptr, d as *mut c_void)
}

fn malloc_async(ptr: *mut *mut c_void, size: usize, s: rt::cudaStream_t) -> Res {
    non_null(ptr)?;
    current()?;
    let mut d = 0;
    cu!(cuMemAllocAsync(&mut d, size, cs(s)))?;
    out(ptr, d as *mut c_void)
}

fn free_async(p: *mut c_void, s: rt::cudaStream_t) -> Res {
    current()?;
    cu!(cuMemFreeAsync(dptr(p), cs(s)))
}

fn host_alloc(ptr: *mut *mut c_void, size: usize, flags: c_uint) -> Res {
    non_null(ptr)?;
    current()?;
    if size == 0 {
        return out(ptr, null_mut());
    }
    // The runtime's cudaHostAlloc* flags are the driver's CU_MEMHOSTALLOC_* bits.
    cu!(cuMemHostAlloc(ptr, size, flags))
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cudaMalloc(ptr: *mut *mut c_void, size: usize) -> E {
    api(|| malloc(ptr, size))
}

/// `cudaFree(NULL)` is the idiom for "initialise the context now".
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cudaFree(p: *mut c_void) -> E {
    api(|| {
        current()?;
        if p.is_null() { Ok(()) } else { cu!(cuMemFree_v2(dptr(p))) }
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cudaMallocPitch(ptr: *mut *mut c_void, pitch: *mut usize, width: usize, height: usize) -> E {
    api(|| {
        non_null(ptr)?;
        non_null(pitch)?;
        current()?;
        if width == 0 || height == 0 {
            out(pitch, width)?;
            return out(ptr, null_mut());
        }
        let mut d = 0;
        cu!(cuMemAllocPitch_v2(&mut d, pitch, width, height, 4))?;
        out(ptr, d as *mut c_void)
    })
}

per_thread! {
    fn cudaMallocAsync, fn cudaMallocAsync_ptsz(
        ptr: *mut *mut c_void,
        size: usize,
        s: rt::cudaStream_t,
    ) -> E [s = s, ptsz(s)] {
        malloc_async(ptr, size, s)
    }

    fn cudaFreeAsync, fn cudaFreeAsync_ptsz(p: *mut c_void, s: rt::cudaStream_t) -> E [s = s, ptsz(s)] {
        free_async(p, s)
    }

    fn cudaMallocFromPoolAsync, fn cudaMallocFromPoolAsync_ptsz(
        ptr: *mut *mut c_void,
        size: usize,
        pool: rt::cudaMemPool_t,
        s: rt::cudaStream_t,
    ) -> E [s = s, ptsz(s)] {
        non_null(ptr)?;
        current()?;
        let mut d = 0;
        cu!(cuMemAllocFromPoolAsync(&mut d, size, pool.cast(), cs(s)))?;
        out(ptr, d as *mut c_void)
    }
}

// Stream-ordered pools are the driver's (`cudaMemPool_t` is a `CUmemoryPool`, and
// `cudaMemPoolAttr` values are `CUmemPool_attribute` values).

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cudaDeviceGetDefaultMemPool(pool: *mut rt::cudaMemPool_t, device: c_int) -> E {
    api(|| {
        non_null(pool)?;
        check_device(device)?;
        cu!(cuDeviceGetDefaultMemPool(pool.cast(), device))
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cudaDeviceGetMemPool(pool: *mut rt::cudaMemPool_t, device: c_int) -> E {
    api(|| {
        non_null(pool)?;
        check_device(device)?;
        cu!(cuDeviceGetMemPool(pool.cast(), device))
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cudaMemPoolSetAttribute(
    pool: rt::cudaMemPool_t,
    attr: rt::cudaMemPoolAttr,
    value: *mut c_void,
) -> E {
    api(|| {
        non_null(value)?;
        cu!(cuMemPoolSetAttribute(pool.cast(), cu::CUmemPool_attribute(attr.0), value))
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cudaMemPoolGetAttribute(
    pool: rt::cudaMemPool_t,
    attr: rt::cudaMemPoolAttr,
    value: *mut c_void,
) -> E {
    api(|| {
        non_null(value)?;
        cu!(cuMemPoolGetAttribute(pool.cast(), cu::CUmemPool_attribute(attr.0), value))
    })
}

// Inter-process memory sharing: the runtime's handle has the driver's 64 bytes, and
// `cudaIpcMemLazyEnablePeerAccess` is `CU_IPC_MEM_LAZY_ENABLE_PEER_ACCESS`.

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cudaIpcGetMemHandle(h: *mut rt::cudaIpcMemHandle_t, p: *mut c_void) -> E {
    api(|| {
        non_null(h)?;
        current()?;
        let mut d = cu::CUipcMemHandle { reserved: [0; 64] };
        cu!(cuIpcGetMemHandle(&mut d, p as cu::CUdeviceptr))?;
        out(h, rt::cudaIpcMemHandle_t { reserved: d.reserved })
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cudaIpcOpenMemHandle(p: *mut *mut c_void, h: rt::cudaIpcMemHandle_t, flags: c_uint) -> E {
    api(|| {
        non_null(p)?;
        current()?;
        let mut d = 0;
        cu!(cuIpcOpenMemHandle_v2(&mut d, cu::CUipcMemHandle { reserved: h.reserved }, flags))?;
        out(p, d as *mut c_void)
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cudaIpcCloseMemHandle(p: *mut c_void) -> E {
    api(|| {
        current()?;
        cu!(cuIpcCloseMemHandle(p as cu::CUdeviceptr))
    })
}

/// `cudaMemPoolProps` has `CUmemPoolProps`'s fields, its enums the driver's values.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cudaMemPoolCreate(pool: *mut rt::cudaMemPool_t, props: *const rt::cudaMemPoolProps) -> E {
    api(|| {
        non_null(pool)?;
        let p = unsafe { props.as_ref() }.ok_or(rt::cudaError_t::cudaErrorInvalidValue)?;
        let props = cu::CUmemPoolProps {
            allocType: cu::CUmemAllocationType(p.allocType.0),
            handleTypes: cu::CUmemAllocationHandleType(p.handleTypes.0),
            location: cu::CUmemLocation { type_: cu::CUmemLocationType(p.location.type_.0), id: p.location.id },
            win32SecurityAttributes: p.win32SecurityAttributes,
            maxSize: p.maxSize,
            usage: p.usage,
            reserved: p.reserved,
        };
        cu!(cuMemPoolCreate(pool.cast(), &props))
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cudaMemPoolDestroy(pool: rt::cudaMemPool_t) -> E {
    api(|| cu!(cuMemPoolDestroy(pool.cast())))
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cudaMemPoolTrimTo(pool: rt::cudaMemPool_t, keep: usize) -> E {
    api(|| cu!(cuMemPoolTrimTo(pool.cast(), keep)))
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cudaMallocManaged(ptr: *mut *mut c_void, size: usize, flags: c_uint) -> E {
    api(|| {
        non_null(ptr)?;
        current()?;
        let mut d = 0;
        cu!(cuMemAllocManaged(&mut d, size, flags))?;
        out(ptr, d as *mut c_void)
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cudaMallocHost(ptr: *mut *mut c_void, size: usize) -> E {
    api(|| host_alloc(ptr, size, 0))
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cudaHostAlloc(ptr: *mut *mut c_void, size: usize, flags: c_uint) -> E {
    api(|| host_alloc(ptr, size, flags))
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cudaFreeHost(p: *mut c_void) -> E {
    api(|| {
        current()?;
        if p.is_null() { Ok(()) } else { cu!(cuMemFreeHost(p)) }
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cudaHostRegister(p: *mut c_void, size: usize, flags: c_uint) -> E {
    api(|| {
        current()?;
        cu!(cuMemHostRegister_v2(p, size, flags))
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cudaHostUnregister(p: *mut c_void) -> E {
    api(|| {
        current()?;
        cu!(cuMemHostUnregister(p))
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cudaHostGetDevicePointer(dev: *mut *mut c_void, host: *mut c_void, flags: c_uint) -> E {
    api(|| {
        non_null(dev)?;
        current()?;
        let mut d = 0;
        cu!(cuMemHostGetDevicePointer_v2(&mut d, host, flags))?;
        out(dev, d as *mut c_void)
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cudaHostGetFlags(flags: *mut c_uint, host: *mut c_void) -> E {
    api(|| {
        non_null(flags)?;
        current()?;
        cu!(cuMemHostGetFlags(flags, host))
    })
}

fn pointer_attribute<T: Default>(a: P, p: *const c_void) -> Res<T> {
    let mut v = T::default();
    cu!(cuPointerGetAttribute((&raw mut v).cast(), a, p as cu::CUdeviceptr))?;
    Ok(v)
}

/// What the driver knows of `p`; memory it does not know is "unregistered" host memory.
fn pointer_attributes(p: *const c_void) -> Res<rt::cudaPointerAttributes> {
    let mut a = rt::cudaPointerAttributes {
        type_: rt::cudaMemoryType::cudaMemoryTypeUnregistered,
        device: INVALID_DEVICE_ID,
        devicePointer: null_mut(),
        hostPointer: p.cast_mut(),
        #[cfg(vgpu_major = "13")]
        reserved: [0; 8],
    };
    let Ok(t) = pointer_attribute::<u32>(P::CU_POINTER_ATTRIBUTE_MEMORY_TYPE, p) else {
        return Ok(a);
    };
    let managed = pointer_attribute::<i32>(P::CU_POINTER_ATTRIBUTE_IS_MANAGED, p).unwrap_or(0) != 0;
    a.type_ = match M(t) {
        _ if managed => rt::cudaMemoryType::cudaMemoryTypeManaged,
        M::CU_MEMORYTYPE_HOST => rt::cudaMemoryType::cudaMemoryTypeHost,
        _ => rt::cudaMemoryType::cudaMemoryTypeDevice,
    };
    a.device = pointer_attribute(P::CU_POINTER_ATTRIBUTE_DEVICE_ORDINAL, p).unwrap_or(INVALID_DEVICE_ID);
    a.devicePointer = pointer_attribute::<u64>(P::CU_POINTER_ATTRIBUTE_DEVICE_POINTER, p).unwrap_or(0) as *mut c_void;
    a.hostPointer = pointer_attribute::<usize>(P::CU_POINTER_ATTRIBUTE_HOST_POINTER, p).unwrap_or(0) as *mut c_void;
    Ok(a)
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cudaPointerGetAttributes(attrs: *mut rt::cudaPointerAttributes, p: *const c_void) -> E {
    api(|| {
        non_null(attrs)?;
        current()?;
        out(attrs, pointer_attributes(p)?)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_types_and_flags_match_the_driver() {
        use rt::cudaMemoryType as T;
        assert_eq!(
            (T::cudaMemoryTypeHost.0, T::cudaMemoryTypeDevice.0),
            (M::CU_MEMORYTYPE_HOST.0, M::CU_MEMORYTYPE_DEVICE.0)
        );
        assert_eq!(rt::cudaHostAllocPortable, cu::CU_MEMHOSTALLOC_PORTABLE);
        assert_eq!(rt::cudaHostAllocMapped, cu::CU_MEMHOSTALLOC_DEVICEMAP);
        assert_eq!(rt::cudaHostAllocWriteCombined, cu::CU_MEMHOSTALLOC_WRITECOMBINED);
        assert_eq!(rt::cudaHostRegisterReadOnly, cu::CU_MEMHOSTREGISTER_READ_ONLY);
        assert_eq!(rt::cudaHostRegisterMapped, cu::CU_MEMHOSTREGISTER_DEVICEMAP);
        assert_eq!(rt::cudaMemAttachGlobal, cu::CUmemAttach_flags_enum::CU_MEM_ATTACH_GLOBAL.0);
    }
}
