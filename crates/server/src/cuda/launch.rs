//! Kernel launches. The client packs the parameter values at the offsets of the function's
//! layout (`FuncInfo::params`); `kernelParams` is rebuilt here as pointers into those
//! bytes. The driver copies the values during the call, so the frame buffer may be reused
//! as soon as it returns.

use super::handles::Handles;
use super::{CudaSession, INVALID_VALUE, R};
use abi::cuda::{CUlaunchAttribute, CUlaunchAttributeID, CUlaunchAttributeValue, CUlaunchConfig};
use protocol::LaunchAttr;
use std::os::raw::c_void;

/// One pointer per parameter into `buf`, each checked to lie inside it.
pub fn param_pointers(layout: &[(u32, u32)], buf: &[u8]) -> R<Vec<*mut c_void>> {
    layout
        .iter()
        .map(|&(off, size)| {
            let (off, size) = (off as usize, size as usize);
            if off.checked_add(size).is_none_or(|end| end > buf.len()) {
                return Err(INVALID_VALUE);
            }
            // The driver only reads through these.
            Ok(buf[off..].as_ptr().cast_mut().cast())
        })
        .collect()
}

/// `CUlaunchAttribute`s from their ids and value bytes. Values that hold an event are
/// checked against the session's events, since the driver would dereference them.
pub fn launch_attrs(attrs: &[LaunchAttr], h: &Handles) -> R<Vec<CUlaunchAttribute>> {
    attrs
        .iter()
        .map(|a| {
            if a.value.len() > size_of::<CUlaunchAttributeValue>() {
                return Err(INVALID_VALUE);
            }
            let mut out = CUlaunchAttribute { id: CUlaunchAttributeID(a.id), ..Default::default() };
            let dst = unsafe { std::slice::from_raw_parts_mut((&raw mut out.value).cast::<u8>(), a.value.len()) };
            dst.copy_from_slice(&a.value);
            let id = out.id;
            if id == CUlaunchAttributeID::CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_EVENT
                || id == CUlaunchAttributeID::CU_LAUNCH_ATTRIBUTE_LAUNCH_COMPLETION_EVENT
            {
                // Both start with the `CUevent`.
                h.event(unsafe { out.value.programmaticEvent.event } as u64)?;
            }
            Ok(out)
        })
        .collect()
}

impl CudaSession {
    /// The function and its `kernelParams` built over `params`.
    fn prepare(&self, func: u64, params: &[u8]) -> R<(abi::cuda::CUfunction, Vec<*mut c_void>)> {
        let f = self.h.function(func)?;
        let ptrs = param_pointers(&self.h.functions[&func].params, params)?;
        Ok((f, ptrs))
    }

    pub(super) fn launch(
        &mut self,
        func: u64,
        grid: [u32; 3],
        block: [u32; 3],
        smem: u32,
        stream: u64,
        params: &[u8],
    ) -> R<()> {
        let (f, mut ptrs) = self.prepare(func, params)?;
        let s = self.h.stream(stream)?;
        let kp = if ptrs.is_empty() { std::ptr::null_mut() } else { ptrs.as_mut_ptr() };
        let [gx, gy, gz] = grid;
        let [bx, by, bz] = block;
        cu!(self.lib, cuLaunchKernel(f, gx, gy, gz, bx, by, bz, smem, s, kp, std::ptr::null_mut()))
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn launch_ex(
        &mut self,
        func: u64,
        grid: [u32; 3],
        block: [u32; 3],
        smem: u32,
        stream: u64,
        attrs: &[LaunchAttr],
        params: &[u8],
    ) -> R<()> {
        let (f, mut ptrs) = self.prepare(func, params)?;
        let s = self.h.stream(stream)?;
        let mut attrs = launch_attrs(attrs, &self.h)?;
        let config = launch_config(grid, block, smem, s, &mut attrs);
        let kp = if ptrs.is_empty() { std::ptr::null_mut() } else { ptrs.as_mut_ptr() };
        cu!(self.lib, cuLaunchKernelEx(&config, f, kp, std::ptr::null_mut()))
    }

    /// How many clusters of a launch of this shape fit on the GPU at once, or (`size`) the
    /// largest cluster it could have.
    pub(super) fn clusters(
        &mut self,
        func: u64,
        grid: [u32; 3],
        block: [u32; 3],
        smem: u32,
        attrs: &[LaunchAttr],
        size: bool,
    ) -> R<i32> {
        let f = self.h.function(func)?;
        let mut attrs = launch_attrs(attrs, &self.h)?;
        let config = launch_config(grid, block, smem, std::ptr::null_mut(), &mut attrs);
        let mut n = 0;
        if size {
            cu!(self.lib, cuOccupancyMaxPotentialClusterSize(&mut n, f, &config))?;
        } else {
            cu!(self.lib, cuOccupancyMaxActiveClusters(&mut n, f, &config))?;
        }
        Ok(n)
    }

    pub(super) fn available_smem(&mut self, func: u64, blocks: i32, block: i32) -> R<u64> {
        let f = self.h.function(func)?;
        let mut n = 0usize;
        cu!(self.lib, cuOccupancyAvailableDynamicSMemPerBlock(&mut n, f, blocks, block))?;
        Ok(n as u64)
    }
}

/// A `CUlaunchConfig` over `attrs` (which must outlive it).
fn launch_config(
    grid: [u32; 3],
    block: [u32; 3],
    smem: u32,
    stream: abi::cuda::CUstream,
    attrs: &mut [CUlaunchAttribute],
) -> CUlaunchConfig {
    CUlaunchConfig {
        gridDimX: grid[0],
        gridDimY: grid[1],
        gridDimZ: grid[2],
        blockDimX: block[0],
        blockDimY: block[1],
        blockDimZ: block[2],
        sharedMemBytes: smem,
        hStream: stream,
        attrs: if attrs.is_empty() { std::ptr::null_mut() } else { attrs.as_mut_ptr() },
        numAttrs: attrs.len() as u32,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params_point_into_the_packed_bytes() {
        let buf: Vec<u8> = (0..24).collect();
        let p = param_pointers(&[(0, 8), (8, 4), (16, 8)], &buf).unwrap();
        assert_eq!(p.len(), 3);
        let base = buf.as_ptr() as usize;
        assert_eq!(p.iter().map(|q| *q as usize - base).collect::<Vec<_>>(), vec![0, 8, 16]);
        assert_eq!(unsafe { *(p[1] as *const u8) }, 8);
        assert!(param_pointers(&[], &[]).unwrap().is_empty());
        assert_eq!(param_pointers(&[(16, 9)], &buf), Err(INVALID_VALUE));
        assert_eq!(param_pointers(&[(u32::MAX, u32::MAX)], &buf), Err(INVALID_VALUE));
    }

    #[test]
    fn attributes_copy_values_and_check_events() {
        let mut h = Handles::default();
        let cluster = LaunchAttr { id: 4, value: [2u32, 1, 1].iter().flat_map(|v| v.to_le_bytes()).collect() };
        let a = launch_attrs(&[cluster], &h).unwrap();
        assert_eq!(a[0].id, CUlaunchAttributeID::CU_LAUNCH_ATTRIBUTE_CLUSTER_DIMENSION);
        let d = unsafe { a[0].value.clusterDim };
        assert_eq!((d.x, d.y, d.z), (2, 1, 1));
        assert_eq!(launch_attrs(&[LaunchAttr { id: 4, value: vec![0; 65] }], &h).err(), Some(INVALID_VALUE));
        // An event the session does not have is refused; one it has is fine.
        let mut ev = 0x7000u64.to_le_bytes().to_vec();
        ev.extend([0u8; 8]);
        let attr = LaunchAttr { id: 12, value: ev };
        assert_eq!(launch_attrs(std::slice::from_ref(&attr), &h).err(), Some(crate::cuda::INVALID_HANDLE));
        h.events.insert(0x7000, 1);
        assert_eq!(launch_attrs(&[attr], &h).unwrap().len(), 1);
    }
}
