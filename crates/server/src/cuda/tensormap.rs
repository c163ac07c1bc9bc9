//! Tensor maps (`cuTensorMapEncode*`): the driver encodes a TMA descriptor on the host from
//! its arguments; this side's driver does so for the client, whose kernels read it on this
//! GPU. The address need not be checked: it is only read by the session's own kernels,
//! which may read any address of its contexts anyway.

use super::{CudaSession, INVALID_VALUE, R};
use abi::cuda::{
    CUtensorMap, CUtensorMapDataType, CUtensorMapFloatOOBfill, CUtensorMapIm2ColWideMode, CUtensorMapInterleave,
    CUtensorMapL2promotion, CUtensorMapSwizzle,
};
use std::ffi::c_void;

/// Arrays sized as the header sizes them by rank (`protocol::tensor_map_shape`).
fn check_shape(rank: u32, dims: &[u64], strides: &[u64], per_dim: &[usize], im2col: bool) -> R<()> {
    if protocol::tensor_map_shape(rank, dims.len(), strides.len(), per_dim, im2col) {
        Ok(())
    } else {
        Err(INVALID_VALUE)
    }
}

/// The enums after the arrays, as the driver takes them.
pub struct Modes {
    pub interleave: u32,
    pub swizzle: u32,
    pub l2: u32,
    pub oob: u32,
}

fn empty() -> CUtensorMap {
    CUtensorMap { opaque: [0; 16] }
}

impl CudaSession {
    #[allow(clippy::too_many_arguments)] // the driver's own argument list
    pub(super) fn tensor_map_tiled(
        &mut self,
        data_type: u32,
        rank: u32,
        address: u64,
        dims: &[u64],
        strides: &[u64],
        box_dim: &[u32],
        element_strides: &[u32],
        m: Modes,
    ) -> R<[u64; 16]> {
        check_shape(rank, dims, strides, &[box_dim.len(), element_strides.len()], false)?;
        let mut t = empty();
        cu!(
            self.lib,
            cuTensorMapEncodeTiled(
                &mut t,
                CUtensorMapDataType(data_type),
                rank,
                address as *mut c_void,
                dims.as_ptr(),
                strides.as_ptr(),
                box_dim.as_ptr(),
                element_strides.as_ptr(),
                CUtensorMapInterleave(m.interleave),
                CUtensorMapSwizzle(m.swizzle),
                CUtensorMapL2promotion(m.l2),
                CUtensorMapFloatOOBfill(m.oob),
            )
        )?;
        Ok(t.opaque)
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn tensor_map_im2col(
        &mut self,
        data_type: u32,
        rank: u32,
        address: u64,
        dims: &[u64],
        strides: &[u64],
        corners: (&[i32], &[i32]),
        channels: u32,
        pixels: u32,
        element_strides: &[u32],
        m: Modes,
    ) -> R<[u64; 16]> {
        check_shape(rank, dims, strides, &[element_strides.len()], true)?;
        let (lower, upper) = corners;
        if lower.len() != rank as usize - 2 || upper.len() != rank as usize - 2 {
            return Err(INVALID_VALUE);
        }
        let mut t = empty();
        cu!(
            self.lib,
            cuTensorMapEncodeIm2col(
                &mut t,
                CUtensorMapDataType(data_type),
                rank,
                address as *mut c_void,
                dims.as_ptr(),
                strides.as_ptr(),
                lower.as_ptr(),
                upper.as_ptr(),
                channels,
                pixels,
                element_strides.as_ptr(),
                CUtensorMapInterleave(m.interleave),
                CUtensorMapSwizzle(m.swizzle),
                CUtensorMapL2promotion(m.l2),
                CUtensorMapFloatOOBfill(m.oob),
            )
        )?;
        Ok(t.opaque)
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn tensor_map_im2col_wide(
        &mut self,
        data_type: u32,
        rank: u32,
        address: u64,
        dims: &[u64],
        strides: &[u64],
        corners: (i32, i32),
        channels: u32,
        pixels: u32,
        element_strides: &[u32],
        mode: u32,
        m: Modes,
    ) -> R<[u64; 16]> {
        check_shape(rank, dims, strides, &[element_strides.len()], true)?;
        let mut t = empty();
        cu!(
            self.lib,
            cuTensorMapEncodeIm2colWide(
                &mut t,
                CUtensorMapDataType(data_type),
                rank,
                address as *mut c_void,
                dims.as_ptr(),
                strides.as_ptr(),
                corners.0,
                corners.1,
                channels,
                pixels,
                element_strides.as_ptr(),
                CUtensorMapInterleave(m.interleave),
                CUtensorMapIm2ColWideMode(mode),
                CUtensorMapSwizzle(m.swizzle),
                CUtensorMapL2promotion(m.l2),
                CUtensorMapFloatOOBfill(m.oob),
            )
        )?;
        Ok(t.opaque)
    }

    pub(super) fn tensor_map_replace_address(&mut self, map: [u64; 16], address: u64) -> R<[u64; 16]> {
        let mut t = CUtensorMap { opaque: map };
        cu!(self.lib, cuTensorMapReplaceAddress(&mut t, address as *mut c_void))?;
        Ok(t.opaque)
    }
}
