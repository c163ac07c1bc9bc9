//! Kernel launches: parameters packed by the layout the server's driver reported, sent
//! one-way. The launch costs this thread an encode and a write, never a round trip.

use crate::memory::sid;
use crate::module::params;
use crate::route;
use crate::state::{R, entry};
use abi::cuda::*;
use protocol::{LaunchAttr, ops};
use std::cell::RefCell;
use std::ffi::c_void;
use std::os::raw::c_uint;

thread_local! {
    static PACK: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

const PARAM_END: usize = 0;
const PARAM_BUFFER_POINTER: usize = 1;
const PARAM_BUFFER_SIZE: usize = 2;

/// Pack `kernelParams` (one pointer per parameter) at the layout's offsets, or take the
/// already-packed buffer that `extra` names.
pub unsafe fn pack(
    layout: &[(u32, u32)],
    kp: *mut *mut c_void,
    extra: *mut *mut c_void,
    out: &mut Vec<u8>,
) -> Result<(), R> {
    out.clear();
    if !kp.is_null() {
        let total = layout.iter().map(|&(o, s)| (o + s) as usize).max().unwrap_or(0);
        out.resize(total, 0);
        for (i, &(o, s)) in layout.iter().enumerate() {
            let src = unsafe { *kp.add(i) };
            if src.is_null() {
                return Err(CUresult::CUDA_ERROR_INVALID_VALUE);
            }
            let dst = &mut out[o as usize..(o + s) as usize];
            dst.copy_from_slice(unsafe { std::slice::from_raw_parts(src.cast::<u8>(), s as usize) });
        }
        return Ok(());
    }
    if extra.is_null() {
        return if layout.is_empty() { Ok(()) } else { Err(CUresult::CUDA_ERROR_INVALID_VALUE) };
    }
    let (mut buf, mut size): (*const u8, usize) = (std::ptr::null(), 0);
    let mut i = 0;
    loop {
        let key = unsafe { *extra.add(i) } as usize;
        match key {
            PARAM_END => break,
            PARAM_BUFFER_POINTER => buf = unsafe { *extra.add(i + 1) }.cast(),
            PARAM_BUFFER_SIZE => size = unsafe { *(*extra.add(i + 1)).cast::<usize>() },
            _ => return Err(CUresult::CUDA_ERROR_INVALID_VALUE),
        }
        i += 2;
    }
    if buf.is_null() && size > 0 {
        return Err(CUresult::CUDA_ERROR_INVALID_VALUE);
    }
    if size > 0 {
        out.extend_from_slice(unsafe { std::slice::from_raw_parts(buf, size) });
    }
    Ok(())
}

fn launch(
    f: u64,
    grid: [u32; 3],
    block: [u32; 3],
    smem: u32,
    stream: u64,
    kp: *mut *mut c_void,
    extra: *mut *mut c_void,
    attrs: Vec<LaunchAttr>,
) -> R {
    entry(|| {
        let layout = params(f)?;
        // The function's server; the stream must be there too.
        let t = route::with_stream(route::of(f)?, stream)?;
        let (func, stream) = (route::raw(f), route::raw(stream));
        let send = |buf: &mut Vec<u8>| {
            unsafe { pack(&layout, kp, extra, buf)? };
            if attrs.is_empty() {
                route::call_to(t, &ops::cuLaunchKernel { func, grid, block, smem, stream }, &[buf], None)
            } else {
                route::call_to(t, &ops::cuLaunchKernelEx { func, grid, block, smem, stream, attrs }, &[buf], None)
            }
        };
        // The thread's buffer, lent out and put back (a fresh one once the thread's
        // destructors ran: a launch from an exit handler).
        let mut buf = PACK.try_with(|p| std::mem::take(&mut *p.borrow_mut())).unwrap_or_default();
        let r = send(&mut buf);
        let _ = PACK.try_with(|p| *p.borrow_mut() = buf);
        r
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuLaunchKernel(
    f: CUfunction,
    gx: c_uint,
    gy: c_uint,
    gz: c_uint,
    bx: c_uint,
    by: c_uint,
    bz: c_uint,
    smem: c_uint,
    s: CUstream,
    kp: *mut *mut c_void,
    extra: *mut *mut c_void,
) -> R {
    launch(crate::module::function_of(f), [gx, gy, gz], [bx, by, bz], smem, sid(s), kp, extra, Vec::new())
}

/// The raw bytes of a launch attribute's value union.
pub fn attr_bytes(a: &CUlaunchAttribute) -> LaunchAttr {
    let v = unsafe {
        std::slice::from_raw_parts(
            (&a.value as *const CUlaunchAttributeValue).cast::<u8>(),
            size_of::<CUlaunchAttributeValue>(),
        )
    };
    LaunchAttr { id: a.id.0, value: v.to_vec() }
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuLaunchKernelEx(
    config: *const CUlaunchConfig,
    f: CUfunction,
    kp: *mut *mut c_void,
    extra: *mut *mut c_void,
) -> R {
    let Some(c) = (unsafe { config.as_ref() }) else { return CUresult::CUDA_ERROR_INVALID_VALUE };
    let attrs = config_attrs(c);
    launch(
        crate::module::function_of(f),
        [c.gridDimX, c.gridDimY, c.gridDimZ],
        [c.blockDimX, c.blockDimY, c.blockDimZ],
        c.sharedMemBytes,
        sid(c.hStream),
        kp,
        extra,
        attrs,
    )
}

/// The attributes of a launch configuration, as they travel.
pub fn config_attrs(c: &CUlaunchConfig) -> Vec<LaunchAttr> {
    if c.attrs.is_null() || c.numAttrs == 0 {
        Vec::new()
    } else {
        unsafe { std::slice::from_raw_parts(c.attrs, c.numAttrs as usize) }.iter().map(attr_bytes).collect()
    }
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuLaunchCooperativeKernel(
    f: CUfunction,
    gx: c_uint,
    gy: c_uint,
    gz: c_uint,
    bx: c_uint,
    by: c_uint,
    bz: c_uint,
    smem: c_uint,
    s: CUstream,
    kp: *mut *mut c_void,
) -> R {
    let mut a =
        CUlaunchAttribute { id: CUlaunchAttributeID::CU_LAUNCH_ATTRIBUTE_COOPERATIVE, ..unsafe { std::mem::zeroed() } };
    a.value.cooperative = 1;
    launch(
        crate::module::function_of(f),
        [gx, gy, gz],
        [bx, by, bz],
        smem,
        sid(s),
        kp,
        std::ptr::null_mut(),
        vec![attr_bytes(&a)],
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packs_at_offsets() {
        let (a, b): (u32, u64) = (7, 0x1122334455667788);
        let mut kp = [(&a as *const u32).cast_mut().cast::<c_void>(), (&b as *const u64).cast_mut().cast::<c_void>()];
        let mut out = Vec::new();
        unsafe { pack(&[(0, 4), (8, 8)], kp.as_mut_ptr(), std::ptr::null_mut(), &mut out) }.unwrap();
        assert_eq!(out.len(), 16);
        assert_eq!(&out[..4], &7u32.to_le_bytes());
        assert_eq!(&out[8..], &b.to_le_bytes());
    }

    #[test]
    fn takes_extra_buffer() {
        let data = [1u8, 2, 3, 4, 5, 6, 7, 8];
        let mut size = data.len();
        let mut extra = [
            PARAM_BUFFER_POINTER as *mut c_void,
            data.as_ptr().cast_mut().cast(),
            PARAM_BUFFER_SIZE as *mut c_void,
            (&mut size as *mut usize).cast(),
            PARAM_END as *mut c_void,
        ];
        let mut out = Vec::new();
        unsafe { pack(&[(0, 8)], std::ptr::null_mut(), extra.as_mut_ptr(), &mut out) }.unwrap();
        assert_eq!(out, data);
    }

    #[test]
    fn missing_params_are_refused() {
        let mut out = Vec::new();
        assert!(unsafe { pack(&[(0, 4)], std::ptr::null_mut(), std::ptr::null_mut(), &mut out) }.is_err());
        assert!(unsafe { pack(&[], std::ptr::null_mut(), std::ptr::null_mut(), &mut out) }.is_ok());
    }
}
