//! Stream-ordered memory pools: a device's own pools (its default and its current one),
//! their attributes, trimming, and allocation from them (PyTorch's `cudaMallocAsync`
//! backend, CuPy's async pool), and pools the application creates on a device (RAPIDS
//! RMM's `cuda_async_memory_resource`). Sharing a pool with another process (export and
//! import of handles and pointers) is not forwarded: its handles are file descriptors of
//! the GPU host's.

use crate::memory::{allocated, located, sid};
use crate::module::adopt;
use crate::route;
use crate::state::{self, R, entry, put};
use abi::cuda::*;
use protocol::ops;
use std::ffi::c_void;

/// A device's own pool (its default one, or its current one), as a handle of its server.
fn pool_of(pool: *mut CUmemoryPool, dev: CUdevice, current: bool) -> R {
    entry(|| {
        let (d, t) = (state::device(dev)?, route::for_device(dev)?);
        let h = adopt(t, route::call(t, &ops::mem_pool_of { dev: d.cuda_ordinal as i32, current })?)?;
        unsafe { put(pool, h as usize as CUmemoryPool) }
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuDeviceGetDefaultMemPool(pool: *mut CUmemoryPool, dev: CUdevice) -> R {
    pool_of(pool, dev, false)
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuDeviceGetMemPool(pool: *mut CUmemoryPool, dev: CUdevice) -> R {
    pool_of(pool, dev, true)
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuMemPoolSetAttribute(pool: CUmemoryPool, attr: CUmemPool_attribute, value: *mut c_void) -> R {
    entry(|| {
        if value.is_null() {
            return Err(CUresult::CUDA_ERROR_INVALID_VALUE);
        }
        // An int is kept as its bits (the flags are 0 or 1).
        let v = if protocol::pool_attr_is_int(attr.0) {
            u64::from(unsafe { *value.cast::<u32>() })
        } else {
            unsafe { *value.cast::<u64>() }
        };
        let h = pool as u64;
        route::call(route::of(h)?, &ops::cuMemPoolSetAttribute { pool: route::raw(h), attr: attr.0, value: v })
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuMemPoolGetAttribute(pool: CUmemoryPool, attr: CUmemPool_attribute, value: *mut c_void) -> R {
    entry(|| {
        if value.is_null() {
            return Err(CUresult::CUDA_ERROR_INVALID_VALUE);
        }
        let h = pool as u64;
        let v = route::call(route::of(h)?, &ops::cuMemPoolGetAttribute { pool: route::raw(h), attr: attr.0 })?;
        if protocol::pool_attr_is_int(attr.0) {
            unsafe { put(value.cast::<u32>(), v as u32) }
        } else {
            unsafe { put(value.cast::<u64>(), v) }
        }
    })
}

#[unsafe(no_mangle)]
pub extern "C" fn cuMemPoolTrimTo(pool: CUmemoryPool, keep: usize) -> R {
    entry(|| {
        let h = pool as u64;
        route::call(route::of(h)?, &ops::cuMemPoolTrimTo { pool: route::raw(h), keep: keep as u64 })
    })
}

/// A pool on a device; its server is the device's. Host pools are not supported.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuMemPoolCreate(pool: *mut CUmemoryPool, props: *const CUmemPoolProps) -> R {
    entry(|| {
        let p = unsafe { props.as_ref() }.ok_or(CUresult::CUDA_ERROR_INVALID_VALUE)?;
        if p.location.type_ != CUmemLocationType::CU_MEM_LOCATION_TYPE_DEVICE {
            shim_support::log_once!("host-pool", "vgpu: cuMemPoolCreate: pools in host memory are not supported");
            return Err(CUresult::CUDA_ERROR_NOT_SUPPORTED);
        }
        let (t, props) = located(props, |p| &mut p.location)?;
        let h = adopt(t, route::call(t, &ops::cuMemPoolCreate { props })?)?;
        unsafe { put(pool, h as usize as CUmemoryPool) }
    })
}

#[unsafe(no_mangle)]
pub extern "C" fn cuMemPoolDestroy(pool: CUmemoryPool) -> R {
    entry(|| {
        let h = pool as u64;
        route::call(route::of(h)?, &ops::cuMemPoolDestroy { pool: route::raw(h) })?;
        route::forget(h);
        Ok(())
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuMemAllocFromPoolAsync(
    dptr: *mut CUdeviceptr,
    bytesize: usize,
    pool: CUmemoryPool,
    stream: CUstream,
) -> R {
    entry(|| {
        let (s, h) = (sid(stream), pool as u64);
        let t = route::stream(s)?;
        if route::server_of(h)? != t.server {
            return Err(CUresult::CUDA_ERROR_INVALID_VALUE);
        }
        let op = ops::cuMemAllocFromPoolAsync { bytesize: bytesize as u64, pool: route::raw(h), stream: route::raw(s) };
        let p = allocated(t, bytesize as u64, || route::call(t, &op))?;
        unsafe { put(dptr, p) }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_attributes_are_ints_exactly_where_the_header_says() {
        use CUmemPool_attribute as A;
        let ints = [
            A::CU_MEMPOOL_ATTR_REUSE_FOLLOW_EVENT_DEPENDENCIES,
            A::CU_MEMPOOL_ATTR_REUSE_ALLOW_OPPORTUNISTIC,
            A::CU_MEMPOOL_ATTR_REUSE_ALLOW_INTERNAL_DEPENDENCIES,
        ];
        let wide = [
            A::CU_MEMPOOL_ATTR_RELEASE_THRESHOLD,
            A::CU_MEMPOOL_ATTR_RESERVED_MEM_CURRENT,
            A::CU_MEMPOOL_ATTR_RESERVED_MEM_HIGH,
            A::CU_MEMPOOL_ATTR_USED_MEM_CURRENT,
            A::CU_MEMPOOL_ATTR_USED_MEM_HIGH,
        ];
        assert!(ints.iter().all(|a| protocol::pool_attr_is_int(a.0)));
        assert!(wide.iter().all(|a| !protocol::pool_attr_is_int(a.0)));
    }
}
