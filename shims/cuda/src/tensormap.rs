//! Tensor maps (`cuTensorMapEncode*`): the TMA descriptors of Hopper kernels (Triton's,
//! CUTLASS 3's), encoded by the server's driver, whose GPU reads them. The encoding is a
//! function of the arguments alone, and Triton encodes a host-side descriptor at every
//! launch: answers are kept (bounded), so a repeated encode costs no round trip.

use crate::route::{self, Target};
use crate::state::{R, entry, put};
use abi::cuda::*;
use parking_lot::Mutex;
use protocol::{Call, ops};
use std::collections::HashMap;
use std::ffi::c_void;
use std::os::raw::c_int;

/// Kept answers at most; beyond, the cache starts again (a program makes a few dozen).
const KEPT: usize = 4096;

type Key = (usize, u32, Vec<u8>);

fn kept() -> &'static Mutex<HashMap<Key, [u64; 16]>> {
    static K: std::sync::OnceLock<Mutex<HashMap<Key, [u64; 16]>>> = std::sync::OnceLock::new();
    K.get_or_init(Default::default)
}

/// `c`'s answer at `t`: kept, or asked and kept.
fn encoded<C: Call<Ret = [u64; 16]>>(t: Target, c: &C) -> Result<CUtensorMap, R> {
    let key = (t.server, C::OP, postcard::to_allocvec(c).map_err(|_| CUresult::CUDA_ERROR_INVALID_VALUE)?);
    if let Some(&opaque) = kept().lock().get(&key) {
        return Ok(CUtensorMap { opaque });
    }
    let opaque = route::call(t, c)?;
    let mut k = kept().lock();
    if k.len() >= KEPT {
        k.clear();
    }
    k.insert(key, opaque);
    Ok(CUtensorMap { opaque })
}

/// `n` elements at `p` (none when `n` is 0).
unsafe fn array<T: Copy>(p: *const T, n: usize) -> Result<Vec<T>, R> {
    match (n, p.is_null()) {
        (0, _) => Ok(Vec::new()),
        (_, true) => Err(CUresult::CUDA_ERROR_INVALID_VALUE),
        _ => Ok(unsafe { std::slice::from_raw_parts(p, n) }.to_vec()),
    }
}

/// The rank's bound before its arrays are read (the driver's own checks run on the server).
fn rank_of(rank: cuuint32_t, least: u32) -> Result<usize, R> {
    if (least..=5).contains(&rank) { Ok(rank as usize) } else { Err(CUresult::CUDA_ERROR_INVALID_VALUE) }
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuTensorMapEncodeTiled(
    map: *mut CUtensorMap,
    data_type: CUtensorMapDataType,
    rank: cuuint32_t,
    address: *mut c_void,
    dims: *const cuuint64_t,
    strides: *const cuuint64_t,
    box_dim: *const cuuint32_t,
    element_strides: *const cuuint32_t,
    interleave: CUtensorMapInterleave,
    swizzle: CUtensorMapSwizzle,
    l2: CUtensorMapL2promotion,
    oob: CUtensorMapFloatOOBfill,
) -> R {
    entry(|| {
        let r = rank_of(rank, 1)?;
        let op = unsafe {
            ops::cuTensorMapEncodeTiled {
                data_type: data_type.0,
                rank,
                address: address as u64,
                dims: array(dims, r)?,
                strides: array(strides, r - 1)?,
                box_dim: array(box_dim, r)?,
                element_strides: array(element_strides, r)?,
                interleave: interleave.0,
                swizzle: swizzle.0,
                l2: l2.0,
                oob: oob.0,
            }
        };
        let m = encoded(route::ptr(address as u64), &op)?;
        unsafe { put(map, m) }
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuTensorMapEncodeIm2col(
    map: *mut CUtensorMap,
    data_type: CUtensorMapDataType,
    rank: cuuint32_t,
    address: *mut c_void,
    dims: *const cuuint64_t,
    strides: *const cuuint64_t,
    lower: *const c_int,
    upper: *const c_int,
    channels: cuuint32_t,
    pixels: cuuint32_t,
    element_strides: *const cuuint32_t,
    interleave: CUtensorMapInterleave,
    swizzle: CUtensorMapSwizzle,
    l2: CUtensorMapL2promotion,
    oob: CUtensorMapFloatOOBfill,
) -> R {
    entry(|| {
        let r = rank_of(rank, 3)?;
        let op = unsafe {
            ops::cuTensorMapEncodeIm2col {
                data_type: data_type.0,
                rank,
                address: address as u64,
                dims: array(dims, r)?,
                strides: array(strides, r - 1)?,
                lower: array(lower, r - 2)?,
                upper: array(upper, r - 2)?,
                channels,
                pixels,
                element_strides: array(element_strides, r)?,
                interleave: interleave.0,
                swizzle: swizzle.0,
                l2: l2.0,
                oob: oob.0,
            }
        };
        let m = encoded(route::ptr(address as u64), &op)?;
        unsafe { put(map, m) }
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuTensorMapEncodeIm2colWide(
    map: *mut CUtensorMap,
    data_type: CUtensorMapDataType,
    rank: cuuint32_t,
    address: *mut c_void,
    dims: *const cuuint64_t,
    strides: *const cuuint64_t,
    lower: c_int,
    upper: c_int,
    channels: cuuint32_t,
    pixels: cuuint32_t,
    element_strides: *const cuuint32_t,
    interleave: CUtensorMapInterleave,
    mode: CUtensorMapIm2ColWideMode,
    swizzle: CUtensorMapSwizzle,
    l2: CUtensorMapL2promotion,
    oob: CUtensorMapFloatOOBfill,
) -> R {
    entry(|| {
        let r = rank_of(rank, 3)?;
        let op = unsafe {
            ops::cuTensorMapEncodeIm2colWide {
                data_type: data_type.0,
                rank,
                address: address as u64,
                dims: array(dims, r)?,
                strides: array(strides, r - 1)?,
                lower,
                upper,
                channels,
                pixels,
                element_strides: array(element_strides, r)?,
                interleave: interleave.0,
                mode: mode.0,
                swizzle: swizzle.0,
                l2: l2.0,
                oob: oob.0,
            }
        };
        let m = encoded(route::ptr(address as u64), &op)?;
        unsafe { put(map, m) }
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuTensorMapReplaceAddress(map: *mut CUtensorMap, address: *mut c_void) -> R {
    entry(|| {
        let old = unsafe { map.as_ref() }.ok_or(CUresult::CUDA_ERROR_INVALID_VALUE)?;
        let op = ops::cuTensorMapReplaceAddress { map: old.opaque, address: address as u64 };
        let m = encoded(route::ptr(address as u64), &op)?;
        unsafe { put(map, m) }
    })
}
