//! 2D copies: `protocol::Copy2D` to the driver's `CUDA_MEMCPY2D`.
//!
//! Device sides are checked against the session's ranges; a host side is the frame's bulk
//! bytes, packed (`pitch == width`, starting at x = y = 0): `bulk_in` for host-to-device,
//! `bulk_out` for device-to-host.

use super::memory::HostBytes;
use super::ranges::RangeMap;
use super::{CudaSession, INVALID_VALUE, R};
use abi::cuda::{CUDA_MEMCPY2D, CUmemorytype};
use protocol::Copy2D;

/// Which side, if any, is host memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Host {
    /// Device to device.
    None,
    /// Host to device: the source is `len` packed bytes.
    Src(usize),
    /// Device to host: the destination is `len` packed bytes.
    Dst(usize),
}

/// Check the device sides and build the descriptor. Host pointers are left null for the
/// caller to fill in (`srcHost` / `dstHost`) once it knows where the bytes are.
pub fn plan(c: &Copy2D, ranges: &RangeMap) -> R<(CUDA_MEMCPY2D, Host)> {
    let mut d = CUDA_MEMCPY2D {
        WidthInBytes: usize::try_from(c.width).map_err(|_| INVALID_VALUE)?,
        Height: usize::try_from(c.height).map_err(|_| INVALID_VALUE)?,
        ..Default::default()
    };
    let packed = || c.width.checked_mul(c.height).and_then(|n| usize::try_from(n).ok()).ok_or(INVALID_VALUE);
    match c.src_device {
        Some(p) => {
            ranges.check_2d(p, c.src_x, c.src_y, c.src_pitch, c.width, c.height)?;
            d.srcMemoryType = CUmemorytype::CU_MEMORYTYPE_DEVICE;
            d.srcDevice = p;
            d.srcXInBytes = c.src_x as usize;
            d.srcY = c.src_y as usize;
            d.srcPitch = c.src_pitch as usize;
        }
        None => {
            d.srcMemoryType = CUmemorytype::CU_MEMORYTYPE_HOST;
            d.srcPitch = d.WidthInBytes;
        }
    }
    match c.dst_device {
        Some(p) => {
            ranges.check_2d(p, c.dst_x, c.dst_y, c.dst_pitch, c.width, c.height)?;
            d.dstMemoryType = CUmemorytype::CU_MEMORYTYPE_DEVICE;
            d.dstDevice = p;
            d.dstXInBytes = c.dst_x as usize;
            d.dstY = c.dst_y as usize;
            d.dstPitch = c.dst_pitch as usize;
        }
        None => {
            d.dstMemoryType = CUmemorytype::CU_MEMORYTYPE_HOST;
            d.dstPitch = d.WidthInBytes;
        }
    }
    let host = match (c.src_device, c.dst_device) {
        (Some(_), Some(_)) => Host::None,
        (None, Some(_)) => Host::Src(packed()?),
        (Some(_), None) => Host::Dst(packed()?),
        // Host to host never needs the server.
        (None, None) => return Err(INVALID_VALUE),
    };
    Ok((d, host))
}

impl CudaSession {
    /// The synchronous form. With stream 0 it is `cuMemcpy2D_v2`; with another stream the
    /// copy is queued there (and waited for when the bytes come back to the client).
    pub(super) fn copy_2d(&mut self, c: &Copy2D, stream: u64, bulk_in: &[u8], out: &mut Vec<u8>) -> R<()> {
        let (mut d, host) = plan(c, &self.ranges)?;
        let s = self.h.stream(stream)?;
        let lib = self.lib;
        match host {
            Host::Src(len) => {
                let src = bulk_in.get(..len).ok_or(INVALID_VALUE)?;
                if stream == 0 {
                    // Synchronous: the driver has consumed the bytes when it returns.
                    d.srcHost = src.as_ptr().cast();
                    return cu!(lib, cuMemcpy2D_v2(&d));
                }
                self.staged_async(HostBytes::Plain(src), s, |p| {
                    d.srcHost = p;
                    cu!(lib, cuMemcpy2DAsync_v2(&d, s))
                })
            }
            Host::Dst(len) => self.staged_read(out, len, |p| {
                d.dstHost = p;
                if stream == 0 {
                    cu!(lib, cuMemcpy2D_v2(&d))
                } else {
                    cu!(lib, cuMemcpy2DAsync_v2(&d, s))?;
                    cu!(lib, cuStreamSynchronize(s))
                }
            }),
            Host::None if stream == 0 => cu!(lib, cuMemcpy2D_v2(&d)),
            Host::None => cu!(lib, cuMemcpy2DAsync_v2(&d, s)),
        }
    }

    /// The one-way form: host to device (staged) or device to device, never device to host.
    pub(super) fn copy_2d_async(&mut self, c: &Copy2D, stream: u64, bulk_in: &[u8]) -> R<()> {
        let (mut d, host) = plan(c, &self.ranges)?;
        let s = self.h.stream(stream)?;
        let lib = self.lib;
        match host {
            Host::Src(len) => {
                let src = bulk_in.get(..len).ok_or(INVALID_VALUE)?;
                self.staged_async(HostBytes::Plain(src), s, |p| {
                    d.srcHost = p;
                    cu!(lib, cuMemcpy2DAsync_v2(&d, s))
                })
            }
            Host::None => cu!(lib, cuMemcpy2DAsync_v2(&d, s)),
            Host::Dst(_) => Err(INVALID_VALUE),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cuda::ranges::{Kind, Range};

    fn ranges() -> RangeMap {
        let mut m = RangeMap::default();
        m.insert(0x10000, Range { len: 0x10000, dev: 0, ctx: 1, kind: Kind::Alloc });
        m
    }

    fn copy() -> Copy2D {
        Copy2D {
            src_device: None,
            src_x: 0,
            src_y: 0,
            src_pitch: 0,
            dst_device: Some(0x10000),
            dst_x: 8,
            dst_y: 2,
            dst_pitch: 0x200,
            width: 0x100,
            height: 4,
        }
    }

    #[test]
    fn host_to_device() {
        let (d, host) = plan(&copy(), &ranges()).unwrap();
        assert_eq!(host, Host::Src(0x400));
        assert_eq!(d.srcMemoryType, CUmemorytype::CU_MEMORYTYPE_HOST);
        assert_eq!((d.srcXInBytes, d.srcY, d.srcPitch), (0, 0, 0x100));
        assert!(d.srcHost.is_null() && d.dstHost.is_null());
        assert_eq!(d.dstMemoryType, CUmemorytype::CU_MEMORYTYPE_DEVICE);
        assert_eq!((d.dstDevice, d.dstXInBytes, d.dstY, d.dstPitch), (0x10000, 8, 2, 0x200));
        assert_eq!((d.WidthInBytes, d.Height), (0x100, 4));
    }

    #[test]
    fn device_to_host_and_device_to_device() {
        let c = Copy2D { src_device: Some(0x10000), src_x: 0, src_y: 0, src_pitch: 0x200, dst_device: None, ..copy() };
        let (d, host) = plan(&c, &ranges()).unwrap();
        assert_eq!(host, Host::Dst(0x400));
        assert_eq!(d.srcMemoryType, CUmemorytype::CU_MEMORYTYPE_DEVICE);
        assert_eq!(d.dstMemoryType, CUmemorytype::CU_MEMORYTYPE_HOST);
        assert_eq!((d.dstXInBytes, d.dstY, d.dstPitch), (0, 0, 0x100));
        let c = Copy2D { src_device: Some(0x18000), src_pitch: 0x100, ..copy() };
        assert_eq!(plan(&c, &ranges()).unwrap().1, Host::None);
    }

    #[test]
    fn rejects_what_it_must() {
        // Past the end of the allocation.
        let c = Copy2D { dst_y: 0x80, ..copy() };
        assert_eq!(plan(&c, &ranges()).unwrap_err(), INVALID_VALUE);
        // Memory the session does not have.
        let c = Copy2D { dst_device: Some(0x9000), ..copy() };
        assert_eq!(plan(&c, &ranges()).unwrap_err(), INVALID_VALUE);
        let c = Copy2D { dst_device: None, ..copy() };
        assert_eq!(plan(&c, &ranges()).unwrap_err(), INVALID_VALUE);
        let c = Copy2D { width: u64::MAX, height: 2, ..copy() };
        assert_eq!(plan(&c, &ranges()).unwrap_err(), INVALID_VALUE);
    }
}
