//! Copies and fills, in the driver's terms: a direction (from the runtime's `cudaMemcpyKind`,
//! `cudaMemcpyDefault` resolved by asking the driver where each pointer lives) and where the
//! work runs (legacy default stream, per-thread default stream, or a stream).

use std::ffi::c_void;

use abi::cuda::{self as cu, CUDA_MEMCPY2D, CUmemorytype as M, CUpointer_attribute as P, CUstream};

use super::context::current;
use super::error::Res;
use super::{PER_THREAD, cs};
use crate::rt::{cudaError_t as E, cudaMemcpyKind as K};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Dir {
    HtoH,
    HtoD,
    DtoH,
    DtoD,
}

/// Where a call's work goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum On {
    /// The synchronous call on the legacy default stream (`cudaMemcpy`).
    Legacy,
    /// The synchronous call of a `_ptds` export: the per-thread stream, then a wait.
    PerThread,
    /// An asynchronous call (`cudaMemcpyAsync`).
    Stream(CUstream),
}

/// The direction of a copy. `is_device` answers for `cudaMemcpyDefault` only.
pub(crate) fn direction(
    kind: K,
    dst: *const c_void,
    src: *const c_void,
    is_device: impl Fn(*const c_void) -> bool,
) -> Res<Dir> {
    Ok(match kind {
        K::cudaMemcpyHostToHost => Dir::HtoH,
        K::cudaMemcpyHostToDevice => Dir::HtoD,
        K::cudaMemcpyDeviceToHost => Dir::DtoH,
        K::cudaMemcpyDeviceToDevice => Dir::DtoD,
        K::cudaMemcpyDefault => match (is_device(src), is_device(dst)) {
            (false, false) => Dir::HtoH,
            (false, true) => Dir::HtoD,
            (true, false) => Dir::DtoH,
            (true, true) => Dir::DtoD,
        },
        _ => return Err(E::cudaErrorInvalidMemcpyDirection),
    })
}

/// Whether the driver knows `p` as device (or managed) memory; anything it does not know is
/// host memory.
pub(crate) fn is_device(p: *const c_void) -> bool {
    let mut t: u32 = 0;
    let r = cu!(cuPointerGetAttribute((&raw mut t).cast(), P::CU_POINTER_ATTRIBUTE_MEMORY_TYPE, p as cu::CUdeviceptr));
    r.is_ok() && [M::CU_MEMORYTYPE_DEVICE.0, M::CU_MEMORYTYPE_ARRAY.0, M::CU_MEMORYTYPE_UNIFIED.0].contains(&t)
}

/// The direction of a copy, asking the driver where the pointers live for `cudaMemcpyDefault`.
pub(crate) fn resolve(kind: K, dst: *const c_void, src: *const c_void) -> Res<Dir> {
    direction(kind, dst, src, is_device)
}

fn dptr(p: *const c_void) -> cu::CUdeviceptr {
    p as cu::CUdeviceptr
}

/// Wait for a stream before host-side work that must follow it.
fn wait(on: On) -> Res {
    match on {
        On::Legacy => Ok(()),
        On::PerThread => cu!(cuStreamSynchronize(cs(PER_THREAD))),
        On::Stream(s) => cu!(cuStreamSynchronize(s)),
    }
}

/// Copy `n` bytes. Host-to-host copies are done here, after the stream's earlier work.
pub(crate) fn copy(dst: *mut c_void, src: *const c_void, n: usize, dir: Dir, on: On) -> Res {
    if n == 0 {
        return Ok(());
    }
    current()?;
    let s = match on {
        On::Legacy => {
            return match dir {
                Dir::HtoD => cu!(cuMemcpyHtoD_v2(dptr(dst), src, n)),
                Dir::DtoH => cu!(cuMemcpyDtoH_v2(dst, dptr(src), n)),
                Dir::DtoD => cu!(cuMemcpyDtoD_v2(dptr(dst), dptr(src), n)),
                Dir::HtoH => host_copy(dst, src, n),
            };
        }
        On::PerThread => cs(PER_THREAD),
        On::Stream(s) => s,
    };
    match dir {
        Dir::HtoD => cu!(cuMemcpyHtoDAsync_v2(dptr(dst), src, n, s))?,
        Dir::DtoH => cu!(cuMemcpyDtoHAsync_v2(dst, dptr(src), n, s))?,
        Dir::DtoD => cu!(cuMemcpyDtoDAsync_v2(dptr(dst), dptr(src), n, s))?,
        Dir::HtoH => {
            wait(on)?;
            return host_copy(dst, src, n);
        }
    }
    // A synchronous copy returns when done (device-to-device ones need not).
    if on == On::PerThread && dir != Dir::DtoD { wait(on) } else { Ok(()) }
}

fn host_copy(dst: *mut c_void, src: *const c_void, n: usize) -> Res {
    if dst.is_null() || src.is_null() {
        return Err(E::cudaErrorInvalidValue);
    }
    // SAFETY: the caller's buffers of n bytes; they may overlap as in memmove.
    unsafe { std::ptr::copy(src.cast::<u8>(), dst.cast::<u8>(), n) };
    Ok(())
}

/// `cudaMemset`: bytes of `value`. Fills of device memory do not wait, in any flavour.
pub(crate) fn fill(p: *mut c_void, value: i32, n: usize, on: On) -> Res {
    if n == 0 {
        return Ok(());
    }
    current()?;
    match on {
        On::Legacy => cu!(cuMemsetD8_v2(dptr(p), value as u8, n)),
        On::PerThread => cu!(cuMemsetD8Async(dptr(p), value as u8, n, cs(PER_THREAD))),
        On::Stream(s) => cu!(cuMemsetD8Async(dptr(p), value as u8, n, s)),
    }
}

/// `cudaMemset2D`.
pub(crate) fn fill_2d(p: *mut c_void, pitch: usize, value: i32, width: usize, height: usize, on: On) -> Res {
    if width == 0 || height == 0 {
        return Ok(());
    }
    if width > pitch {
        return Err(E::cudaErrorInvalidValue);
    }
    current()?;
    let v = value as u8;
    match on {
        On::Legacy => cu!(cuMemsetD2D8_v2(dptr(p), pitch, v, width, height)),
        On::PerThread => cu!(cuMemsetD2D8Async(dptr(p), pitch, v, width, height, cs(PER_THREAD))),
        On::Stream(s) => cu!(cuMemsetD2D8Async(dptr(p), pitch, v, width, height, s)),
    }
}

/// A 2D copy's rectangle.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Rect {
    pub dst: *mut c_void,
    pub dpitch: usize,
    pub src: *const c_void,
    pub spitch: usize,
    pub width: usize,
    pub height: usize,
}

/// The driver's descriptor of a 2D copy in direction `dir`.
pub(crate) fn desc_2d(r: &Rect, dir: Dir) -> Res<CUDA_MEMCPY2D> {
    if r.width > r.dpitch || r.width > r.spitch {
        return Err(E::cudaErrorInvalidPitchValue);
    }
    let (src_dev, dst_dev) = match dir {
        Dir::HtoH => (false, false),
        Dir::HtoD => (false, true),
        Dir::DtoH => (true, false),
        Dir::DtoD => (true, true),
    };
    let mut d = CUDA_MEMCPY2D {
        srcPitch: r.spitch,
        dstPitch: r.dpitch,
        WidthInBytes: r.width,
        Height: r.height,
        ..Default::default()
    };
    if src_dev {
        (d.srcMemoryType, d.srcDevice) = (M::CU_MEMORYTYPE_DEVICE, dptr(r.src));
    } else {
        (d.srcMemoryType, d.srcHost) = (M::CU_MEMORYTYPE_HOST, r.src);
    }
    if dst_dev {
        (d.dstMemoryType, d.dstDevice) = (M::CU_MEMORYTYPE_DEVICE, dptr(r.dst));
    } else {
        (d.dstMemoryType, d.dstHost) = (M::CU_MEMORYTYPE_HOST, r.dst);
    }
    Ok(d)
}

/// `cudaMemcpy2D` and friends.
pub(crate) fn copy_2d(r: &Rect, dir: Dir, on: On) -> Res {
    let d = desc_2d(r, dir)?;
    if r.width == 0 || r.height == 0 {
        return Ok(());
    }
    current()?;
    if dir == Dir::HtoH {
        wait(on)?;
        return host_copy_2d(r);
    }
    match on {
        On::Legacy => cu!(cuMemcpy2D_v2(&d)),
        On::PerThread => {
            cu!(cuMemcpy2DAsync_v2(&d, cs(PER_THREAD)))?;
            if dir == Dir::DtoD { Ok(()) } else { wait(on) }
        }
        On::Stream(s) => cu!(cuMemcpy2DAsync_v2(&d, s)),
    }
}

fn host_copy_2d(r: &Rect) -> Res {
    for row in 0..r.height {
        // SAFETY: rows inside the caller's pitched buffers.
        let (dst, src) = unsafe { (r.dst.byte_add(row * r.dpitch), r.src.byte_add(row * r.spitch)) };
        host_copy(dst, src, r.width)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directions() {
        let dev = 0x7000_0000usize as *const c_void;
        let host = 0x1000usize as *const c_void;
        let is_dev = |p: *const c_void| p == dev;
        assert_eq!(direction(K::cudaMemcpyHostToDevice, host, host, is_dev), Ok(Dir::HtoD));
        assert_eq!(direction(K::cudaMemcpyDeviceToHost, host, host, is_dev), Ok(Dir::DtoH));
        assert_eq!(direction(K::cudaMemcpyDeviceToDevice, host, host, is_dev), Ok(Dir::DtoD));
        assert_eq!(direction(K::cudaMemcpyHostToHost, dev, dev, is_dev), Ok(Dir::HtoH));
        assert_eq!(direction(K::cudaMemcpyDefault, dev, host, is_dev), Ok(Dir::HtoD));
        assert_eq!(direction(K::cudaMemcpyDefault, host, dev, is_dev), Ok(Dir::DtoH));
        assert_eq!(direction(K::cudaMemcpyDefault, dev, dev, is_dev), Ok(Dir::DtoD));
        assert_eq!(direction(K::cudaMemcpyDefault, host, host, is_dev), Ok(Dir::HtoH));
        assert_eq!(direction(K(7), host, host, is_dev), Err(E::cudaErrorInvalidMemcpyDirection));
    }

    #[test]
    fn descriptors_2d() {
        let r = Rect {
            dst: 0x9000usize as *mut c_void,
            dpitch: 512,
            src: 0x1000usize as *const c_void,
            spitch: 100,
            width: 100,
            height: 7,
        };
        let d = desc_2d(&r, Dir::HtoD).unwrap();
        assert_eq!((d.srcMemoryType, d.srcHost as usize, d.srcPitch), (M::CU_MEMORYTYPE_HOST, 0x1000, 100));
        assert_eq!((d.dstMemoryType, d.dstDevice, d.dstPitch), (M::CU_MEMORYTYPE_DEVICE, 0x9000, 512));
        assert_eq!((d.WidthInBytes, d.Height, d.srcXInBytes, d.dstY), (100, 7, 0, 0));
        let d = desc_2d(&r, Dir::DtoH).unwrap();
        assert_eq!((d.srcMemoryType, d.srcDevice), (M::CU_MEMORYTYPE_DEVICE, 0x1000));
        assert_eq!((d.dstMemoryType, d.dstHost as usize), (M::CU_MEMORYTYPE_HOST, 0x9000));
        let wide = Rect { width: 101, ..r };
        assert_eq!(desc_2d(&wide, Dir::DtoD).err(), Some(E::cudaErrorInvalidPitchValue));
    }

    #[test]
    fn host_to_host_copies_locally() {
        let src = *b"0123456789ab";
        let mut dst = [0u8; 12];
        let r =
            Rect { dst: dst.as_mut_ptr().cast(), dpitch: 6, src: src.as_ptr().cast(), spitch: 4, width: 3, height: 2 };
        host_copy_2d(&r).unwrap();
        assert_eq!(&dst, b"012\x00\x00\x00456\x00\x00\x00");
        assert_eq!(host_copy(std::ptr::null_mut(), src.as_ptr().cast(), 1), Err(E::cudaErrorInvalidValue));
    }
}
