//! Kernel attributes and occupancy, by host stub (each resolved to its `CUfunction` in the
//! current context, as a launch would be).

use std::ffi::{c_char, c_int, c_uint, c_void};

use abi::cuda::{self as cu, CUfunction_attribute as F};

use super::error::{Res, api, non_null, out};
use super::registry::{function, function_name};
use crate::rt::{self, cudaError_t as E};

/// `cudaFuncAttributes` from `get` (one driver query per field). An attribute the driver does
/// not know (`cudaErrorInvalidValue`, e.g. cluster attributes on an old driver) reads as 0.
pub(crate) fn attributes(get: impl Fn(F) -> Res<i32>) -> Res<rt::cudaFuncAttributes> {
    let i = |a: F| match get(a) {
        Err(E::cudaErrorInvalidValue) => Ok(0),
        r => r,
    };
    let u = |a: F| i(a).map(|v| usize::try_from(v).unwrap_or(0));
    Ok(rt::cudaFuncAttributes {
        sharedSizeBytes: u(F::CU_FUNC_ATTRIBUTE_SHARED_SIZE_BYTES)?,
        constSizeBytes: u(F::CU_FUNC_ATTRIBUTE_CONST_SIZE_BYTES)?,
        localSizeBytes: u(F::CU_FUNC_ATTRIBUTE_LOCAL_SIZE_BYTES)?,
        maxThreadsPerBlock: i(F::CU_FUNC_ATTRIBUTE_MAX_THREADS_PER_BLOCK)?,
        numRegs: i(F::CU_FUNC_ATTRIBUTE_NUM_REGS)?,
        ptxVersion: i(F::CU_FUNC_ATTRIBUTE_PTX_VERSION)?,
        binaryVersion: i(F::CU_FUNC_ATTRIBUTE_BINARY_VERSION)?,
        cacheModeCA: i(F::CU_FUNC_ATTRIBUTE_CACHE_MODE_CA)?,
        maxDynamicSharedSizeBytes: i(F::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES)?,
        preferredShmemCarveout: i(F::CU_FUNC_ATTRIBUTE_PREFERRED_SHARED_MEMORY_CARVEOUT)?,
        clusterDimMustBeSet: i(F::CU_FUNC_ATTRIBUTE_CLUSTER_SIZE_MUST_BE_SET)?,
        requiredClusterWidth: i(F::CU_FUNC_ATTRIBUTE_REQUIRED_CLUSTER_WIDTH)?,
        requiredClusterHeight: i(F::CU_FUNC_ATTRIBUTE_REQUIRED_CLUSTER_HEIGHT)?,
        requiredClusterDepth: i(F::CU_FUNC_ATTRIBUTE_REQUIRED_CLUSTER_DEPTH)?,
        clusterSchedulingPolicyPreference: i(F::CU_FUNC_ATTRIBUTE_CLUSTER_SCHEDULING_POLICY_PREFERENCE)?,
        nonPortableClusterSizeAllowed: i(F::CU_FUNC_ATTRIBUTE_NON_PORTABLE_CLUSTER_SIZE_ALLOWED)?,
        reserved: [0; 16],
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cudaFuncGetAttributes(attr: *mut rt::cudaFuncAttributes, func: *const c_void) -> E {
    api(|| {
        non_null(attr)?;
        let f = function(func)?;
        let a = attributes(|a| {
            let mut v = 0;
            cu!(cuFuncGetAttribute(&mut v, a, f))?;
            Ok(v)
        })?;
        out(attr, a)
    })
}

/// `cudaFuncAttribute` values are the driver's `CUfunction_attribute` values.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cudaFuncSetAttribute(func: *const c_void, attr: rt::cudaFuncAttribute, value: c_int) -> E {
    api(|| cu!(cuFuncSetAttribute(function(func)?, F(attr.0), value)))
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cudaFuncSetCacheConfig(func: *const c_void, config: rt::cudaFuncCache) -> E {
    api(|| cu!(cuFuncSetCacheConfig(function(func)?, cu::CUfunc_cache(config.0))))
}

fn occupancy(n: *mut c_int, func: *const c_void, block: c_int, smem: usize, flags: c_uint) -> Res {
    non_null(n)?;
    cu!(cuOccupancyMaxActiveBlocksPerMultiprocessorWithFlags(n, function(func)?, block, smem, flags))
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cudaOccupancyMaxActiveBlocksPerMultiprocessor(
    n: *mut c_int,
    func: *const c_void,
    block: c_int,
    smem: usize,
) -> E {
    api(|| occupancy(n, func, block, smem, 0))
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cudaOccupancyMaxActiveBlocksPerMultiprocessorWithFlags(
    n: *mut c_int,
    func: *const c_void,
    block: c_int,
    smem: usize,
    flags: c_uint,
) -> E {
    api(|| occupancy(n, func, block, smem, flags))
}

/// The registered (mangled) device name; no driver call.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cudaFuncGetName(name: *mut *const c_char, func: *const c_void) -> E {
    api(|| out(name, function_name(func)?))
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cudaGetFuncBySymbol(f: *mut rt::cudaFunction_t, func: *const c_void) -> E {
    api(|| out(f, function(func)?.cast()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attributes_come_from_their_queries() {
        let a = attributes(|a| match a {
            F::CU_FUNC_ATTRIBUTE_PTX_VERSION => Ok(90),
            F::CU_FUNC_ATTRIBUTE_BINARY_VERSION => Ok(86),
            F::CU_FUNC_ATTRIBUTE_REQUIRED_CLUSTER_WIDTH => Err(E::cudaErrorInvalidValue),
            other => Ok(100 + other.0 as i32),
        })
        .unwrap();
        assert_eq!((a.ptxVersion, a.binaryVersion), (90, 86));
        assert_eq!((a.maxThreadsPerBlock, a.sharedSizeBytes, a.numRegs), (100, 101, 104));
        assert_eq!(a.maxDynamicSharedSizeBytes, 108);
        assert_eq!(a.requiredClusterWidth, 0);
        assert_eq!(a.nonPortableClusterSizeAllowed, 114);
        assert_eq!(
            attributes(|_| Err(E::cudaErrorInvalidResourceHandle)).err(),
            Some(E::cudaErrorInvalidResourceHandle)
        );
    }

    #[test]
    fn runtime_attribute_numbers_are_the_drivers() {
        use rt::cudaFuncAttribute as R;
        assert_eq!(
            R::cudaFuncAttributeMaxDynamicSharedMemorySize.0,
            F::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES.0
        );
        assert_eq!(
            R::cudaFuncAttributePreferredSharedMemoryCarveout.0,
            F::CU_FUNC_ATTRIBUTE_PREFERRED_SHARED_MEMORY_CARVEOUT.0
        );
        assert_eq!(R::cudaFuncAttributeRequiredClusterDepth.0, F::CU_FUNC_ATTRIBUTE_REQUIRED_CLUSTER_DEPTH.0);
        assert_eq!(
            R::cudaFuncAttributeClusterSchedulingPolicyPreference.0,
            F::CU_FUNC_ATTRIBUTE_CLUSTER_SCHEDULING_POLICY_PREFERENCE.0
        );
        assert_eq!(rt::cudaFuncCache::cudaFuncCachePreferL1.0, cu::CUfunc_cache::CU_FUNC_CACHE_PREFER_L1.0);
        assert_eq!(
            rt::cudaOccupancyDisableCachingOverride,
            cu::CUoccupancy_flags_enum::CU_OCCUPANCY_DISABLE_CACHING_OVERRIDE.0
        );
    }
}
