//! Memory: allocation, copies (chunked, host-to-device ones asynchronous on the wire),
//! memsets, host memory, pointer attributes and virtual memory management.

use crate::route::{self, Target};
use crate::state::{self, MemKind, R, add_range, call, entry, put, remove_range};
use abi::cuda::*;
use protocol::{Copy2D, ops};
use std::ffi::c_void;
use std::os::raw::{c_uchar, c_uint, c_ushort};

/// Stream id on the wire: NULL is the legacy default stream.
pub fn sid(s: CUstream) -> u64 {
    s as u64
}

/// Host to device memory at `dst` (on its server), ordered on `stream` (`None`: the
/// synchronous form), `CHUNK` bytes per frame (see `route::htod_to`).
pub fn htod(dst: u64, src: &[u8], stream: Option<u64>) -> Result<(), R> {
    let (t, s) = route::place(route::ptr(dst), stream)?;
    if crate::shm::htod(t, dst, src, s)? {
        return Ok(());
    }
    route::htod_to(t, dst, src, s)
}

/// Device memory at `src` (on its server) to host, straight into the caller's buffer.
pub fn dtoh(dst: &mut [u8], src: u64, stream: Option<u64>) -> Result<(), R> {
    let (t, s) = route::place(route::ptr(src), stream)?;
    if crate::shm::dtoh(t, dst, src, s)? {
        return Ok(());
    }
    if let Some(s) = s
        && route::dtoh_later(t, dst, src, s)?
    {
        return Ok(());
    }
    route::dtoh_from(t, dst, src, s)
}

/// Before pinned memory is given back: copies into it still on their way land first.
fn collect() -> Result<(), R> {
    match state::session() {
        Ok(s) => s.collect().map_err(state::err),
        Err(_) => Ok(()),
    }
}

/// Device to device. On one server the server's driver copies (across its devices too, as
/// unified addressing allows); between servers the bytes are staged through this process,
/// after the stream's earlier work, and the copy is complete when this returns.
pub fn dtod(dst: u64, src: u64, n: usize, stream: Option<u64>) -> Result<(), R> {
    let (to, from) = (route::ptr(dst), route::ptr(src));
    if to.server == from.server {
        let size = n as u64;
        return match route::place(to, stream)? {
            (t, None) => route::call(t, &ops::cuMemcpyDtoD_v2 { dst, src, size }),
            (t, Some(s)) => route::call(t, &ops::cuMemcpyDtoDAsync_v2 { dst, src, size, stream: s }),
        };
    }
    if let Some(s) = stream {
        route::wait_stream(s)?;
    }
    route::stage(to, dst, from, src, n)
}

/// A new allocation on `t` (`get` asks for it), kept apart from other servers' memory and
/// remembered as device memory of `t`'s context.
pub fn allocated(t: Target, len: u64, get: impl FnMut() -> Result<u64, R>) -> Result<u64, R> {
    // A colliding allocation's range is reserved on its server (address space only, kept
    // for the life of the session), so the server's next allocation lands elsewhere.
    let span = len.div_ceil(2 << 20).max(1) * (2 << 20);
    let mut block = |p: u64| {
        let r = route::call(t, &ops::cuMemAddressReserve { size: span, align: 0, addr: p, flags: 0 });
        match r {
            Ok(a) if a == p => true,
            Ok(a) => {
                let _ = route::call(t, &ops::cuMemAddressFree { ptr: a, size: span });
                false
            }
            Err(_) => false,
        }
    };
    let give_back = |p| {
        let _ = route::call(t, &ops::cuMemFree_v2 { dptr: p });
    };
    let p = route::unique(t.server, len, get, give_back, Some(&mut block))?;
    route::add_device_range(p, len, t.ctx);
    Ok(p)
}

unsafe fn host<'a>(p: *const c_void, n: usize) -> Result<&'a [u8], R> {
    if n == 0 {
        return Ok(&[]);
    }
    if p.is_null() {
        return Err(CUresult::CUDA_ERROR_INVALID_VALUE);
    }
    Ok(unsafe { std::slice::from_raw_parts(p.cast(), n) })
}

unsafe fn host_mut<'a>(p: *mut c_void, n: usize) -> Result<&'a mut [u8], R> {
    if n == 0 {
        return Ok(&mut []);
    }
    if p.is_null() {
        return Err(CUresult::CUDA_ERROR_INVALID_VALUE);
    }
    Ok(unsafe { std::slice::from_raw_parts_mut(p.cast(), n) })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuMemGetInfo_v2(free: *mut usize, total: *mut usize) -> R {
    entry(|| {
        let (f, t) = call(&ops::cuMemGetInfo_v2 {})?;
        unsafe {
            put(free, f as usize)?;
            put(total, t as usize)
        }
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuMemAlloc_v2(dptr: *mut CUdeviceptr, bytesize: usize) -> R {
    entry(|| {
        if dptr.is_null() {
            return Err(CUresult::CUDA_ERROR_INVALID_VALUE);
        }
        let t = route::here();
        let p = allocated(t, bytesize as u64, || route::call(t, &ops::cuMemAlloc_v2 { bytesize: bytesize as u64 }))?;
        unsafe { put(dptr, p) }
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuMemAllocPitch_v2(
    dptr: *mut CUdeviceptr,
    pitch: *mut usize,
    width: usize,
    height: usize,
    elem: c_uint,
) -> R {
    entry(|| {
        let t = route::here();
        let mut pt = 0;
        let p = allocated(t, (width.div_ceil(512) * 512 * height) as u64, || {
            let (p, got) =
                route::call(t, &ops::cuMemAllocPitch_v2 { width: width as u64, height: height as u64, elem })?;
            pt = got;
            Ok(p)
        })?;
        route::add_device_range(p, pt * height as u64, t.ctx);
        unsafe {
            put(dptr, p)?;
            put(pitch, pt as usize)
        }
    })
}

#[unsafe(no_mangle)]
pub extern "C" fn cuMemFree_v2(dptr: CUdeviceptr) -> R {
    entry(|| {
        if dptr == 0 {
            return Ok(());
        }
        route::call(route::ptr(dptr), &ops::cuMemFree_v2 { dptr })?;
        remove_range(dptr);
        Ok(())
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuMemAllocAsync(dptr: *mut CUdeviceptr, bytesize: usize, stream: CUstream) -> R {
    entry(|| {
        let s = sid(stream);
        let t = route::stream(s)?;
        let p = allocated(t, bytesize as u64, || {
            route::call(t, &ops::cuMemAllocAsync { bytesize: bytesize as u64, stream: route::raw(s) })
        })?;
        unsafe { put(dptr, p) }
    })
}

#[unsafe(no_mangle)]
pub extern "C" fn cuMemFreeAsync(dptr: CUdeviceptr, stream: CUstream) -> R {
    entry(|| {
        match route::place(route::ptr(dptr), Some(sid(stream)))? {
            (t, Some(s)) => route::call(t, &ops::cuMemFreeAsync { dptr, stream: s })?,
            (t, None) => route::call(t, &ops::cuMemFree_v2 { dptr })?,
        }
        remove_range(dptr);
        Ok(())
    })
}

// ---------------------------------------------------------------- host memory

/// Page-aligned host memory: from the segment shared with the server where there is one
/// (copies from it are DMA on the server), else ordinary memory that copies stream from.
/// It is remembered so that pointer queries and unified copies know it is host memory.
fn host_alloc(pp: *mut *mut c_void, size: usize) -> Result<(), R> {
    if pp.is_null() {
        return Err(CUresult::CUDA_ERROR_INVALID_VALUE);
    }
    state::session()?;
    let mut p: *mut c_void = crate::shm::alloc_host(size).unwrap_or(std::ptr::null_mut()).cast();
    if p.is_null() && unsafe { libc::posix_memalign(&mut p, 4096, size.max(1)) } != 0 {
        return Err(CUresult::CUDA_ERROR_OUT_OF_MEMORY);
    }
    add_range(p as u64, size as u64, MemKind::Host);
    unsafe { put(pp, p) }
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuMemAllocHost_v2(pp: *mut *mut c_void, size: usize) -> R {
    entry(|| host_alloc(pp, size))
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuMemHostAlloc(pp: *mut *mut c_void, size: usize, _flags: c_uint) -> R {
    entry(|| host_alloc(pp, size))
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuMemFreeHost(p: *mut c_void) -> R {
    entry(|| match collect().map(|()| remove_range(p as u64))? {
        Some((_, MemKind::Host, _)) => {
            if !crate::shm::free_host(p as u64) {
                unsafe { libc::free(p) };
            }
            Ok(())
        }
        _ => Err(CUresult::CUDA_ERROR_INVALID_VALUE),
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuMemHostRegister_v2(p: *mut c_void, size: usize, _flags: c_uint) -> R {
    entry(|| {
        state::session()?;
        if p.is_null() || size == 0 {
            return Err(CUresult::CUDA_ERROR_INVALID_VALUE);
        }
        if state::find_range(p as u64).is_some() {
            return Err(CUresult::CUDA_ERROR_HOST_MEMORY_ALREADY_REGISTERED);
        }
        add_range(p as u64, size as u64, MemKind::Host);
        Ok(())
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuMemHostUnregister(p: *mut c_void) -> R {
    entry(|| match collect().map(|()| remove_range(p as u64))? {
        Some((_, MemKind::Host, _)) => Ok(()),
        _ => Err(CUresult::CUDA_ERROR_HOST_MEMORY_NOT_REGISTERED),
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuMemHostGetFlags(flags: *mut c_uint, p: *mut c_void) -> R {
    entry(|| match state::find_range(p as u64) {
        Some((_, _, MemKind::Host, _)) => unsafe { put(flags, 0) },
        _ => Err(CUresult::CUDA_ERROR_INVALID_VALUE),
    })
}

// ---------------------------------------------------------------- copies

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuMemcpyHtoD_v2(dst: CUdeviceptr, src: *const c_void, n: usize) -> R {
    entry(|| htod(dst, unsafe { host(src, n)? }, None))
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuMemcpyHtoDAsync_v2(dst: CUdeviceptr, src: *const c_void, n: usize, s: CUstream) -> R {
    entry(|| htod(dst, unsafe { host(src, n)? }, Some(sid(s))))
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuMemcpyDtoH_v2(dst: *mut c_void, src: CUdeviceptr, n: usize) -> R {
    entry(|| dtoh(unsafe { host_mut(dst, n)? }, src, None))
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuMemcpyDtoHAsync_v2(dst: *mut c_void, src: CUdeviceptr, n: usize, s: CUstream) -> R {
    entry(|| dtoh(unsafe { host_mut(dst, n)? }, src, Some(sid(s))))
}

#[unsafe(no_mangle)]
pub extern "C" fn cuMemcpyDtoD_v2(dst: CUdeviceptr, src: CUdeviceptr, n: usize) -> R {
    entry(|| dtod(dst, src, n, None))
}

#[unsafe(no_mangle)]
pub extern "C" fn cuMemcpyDtoDAsync_v2(dst: CUdeviceptr, src: CUdeviceptr, n: usize, s: CUstream) -> R {
    entry(|| dtod(dst, src, n, Some(sid(s))))
}

/// Unified-addressing copy: each side is device memory if this process allocated or
/// mapped it, host memory otherwise.
fn copy_any(dst: u64, src: u64, n: usize, stream: Option<u64>) -> Result<(), R> {
    match (state::is_device(dst), state::is_device(src)) {
        (true, true) => dtod(dst, src, n, stream),
        (true, false) => htod(dst, unsafe { host(src as *const c_void, n)? }, stream),
        (false, true) => dtoh(unsafe { host_mut(dst as *mut c_void, n)? }, src, stream),
        (false, false) => {
            if n > 0 {
                unsafe { std::ptr::copy(src as *const u8, dst as *mut u8, n) };
            }
            Ok(())
        }
    }
}

#[unsafe(no_mangle)]
pub extern "C" fn cuMemcpy(dst: CUdeviceptr, src: CUdeviceptr, n: usize) -> R {
    entry(|| copy_any(dst, src, n, None))
}

#[unsafe(no_mangle)]
pub extern "C" fn cuMemcpyAsync(dst: CUdeviceptr, src: CUdeviceptr, n: usize, s: CUstream) -> R {
    entry(|| copy_any(dst, src, n, Some(sid(s))))
}

/// A peer copy, ordered on stream `s`. Returns the target that ran it on one server (for the
/// synchronous form to wait on), `None` when it was staged between servers (then it is done).
fn peer(dst: u64, dst_ctx: CUcontext, src: u64, src_ctx: CUcontext, n: usize, s: u64) -> Result<Option<Target>, R> {
    let (dc, sc) = (dst_ctx as u64, src_ctx as u64);
    let (Some(a), Some(b)) = (state::ctx_info(dc), state::ctx_info(sc)) else {
        return Err(CUresult::CUDA_ERROR_INVALID_CONTEXT);
    };
    if a.server == b.server {
        let (t, stream) = route::place(route::on(a.server, dc), Some(s))?;
        let c = ops::cuMemcpyPeerAsync {
            dst,
            dst_ctx: route::raw(dc),
            src,
            src_ctx: route::raw(sc),
            size: n as u64,
            stream: stream.unwrap_or(0),
        };
        route::call(t, &c)?;
        // On another server's stream: waited for above; the copy completes here.
        if stream.is_none() && !route::special(s) {
            route::call(t, &ops::cuStreamSynchronize { stream: 0 })?;
        }
        return Ok(Some(t));
    }
    // Different servers: after the stream's earlier work, staged through this process.
    if !route::special(s) {
        route::wait_stream(s)?;
    }
    route::stage(Target { server: a.server, ctx: dc }, dst, Target { server: b.server, ctx: sc }, src, n)?;
    Ok(None)
}

#[unsafe(no_mangle)]
pub extern "C" fn cuMemcpyPeerAsync(
    dst: CUdeviceptr,
    dst_ctx: CUcontext,
    src: CUdeviceptr,
    src_ctx: CUcontext,
    n: usize,
    s: CUstream,
) -> R {
    entry(|| peer(dst, dst_ctx, src, src_ctx, n, sid(s)).map(|_| ()))
}

#[unsafe(no_mangle)]
pub extern "C" fn cuMemcpyPeer(
    dst: CUdeviceptr,
    dst_ctx: CUcontext,
    src: CUdeviceptr,
    src_ctx: CUcontext,
    n: usize,
) -> R {
    entry(|| match peer(dst, dst_ctx, src, src_ctx, n, 0)? {
        Some(t) => route::call(t, &ops::cuCtxSynchronize {}),
        None => Ok(()),
    })
}

/// Which side of a 2D copy is device memory, and where.
fn side(kind: CUmemorytype, host: *const c_void, dev: CUdeviceptr) -> Result<Option<u64>, R> {
    match kind {
        CUmemorytype::CU_MEMORYTYPE_DEVICE => Ok(Some(dev)),
        CUmemorytype::CU_MEMORYTYPE_HOST => Ok(None),
        CUmemorytype::CU_MEMORYTYPE_UNIFIED => Ok(state::is_device(dev).then_some(dev)),
        _ => {
            let _ = host;
            shim_support::unsupported("cuMemcpy2D with CUDA arrays");
            Err(CUresult::CUDA_ERROR_NOT_SUPPORTED)
        }
    }
}

/// Every 2D copy form. Host sides travel packed, one row of `WidthInBytes` after another.
pub fn copy2d(p: &CUDA_MEMCPY2D, stream: Option<u64>) -> Result<(), R> {
    let src_dev = side(p.srcMemoryType, p.srcHost, p.srcDevice)?;
    let dst_dev = side(p.dstMemoryType, p.dstHost, p.dstDevice)?;
    let (w, h) = (p.WidthInBytes, p.Height);
    if w == 0 || h == 0 {
        return Ok(());
    }
    let host_src = |r: usize| -> *const u8 {
        let base = if p.srcMemoryType == CUmemorytype::CU_MEMORYTYPE_UNIFIED {
            p.srcDevice as *const u8
        } else {
            p.srcHost.cast()
        };
        unsafe { base.add((p.srcY + r) * p.srcPitch + p.srcXInBytes) }
    };
    let host_dst = |r: usize| -> *mut u8 {
        let base = if p.dstMemoryType == CUmemorytype::CU_MEMORYTYPE_UNIFIED {
            p.dstDevice as *mut u8
        } else {
            p.dstHost.cast()
        };
        unsafe { base.add((p.dstY + r) * p.dstPitch + p.dstXInBytes) }
    };
    let c = Copy2D {
        src_device: src_dev,
        src_x: p.srcXInBytes as u64,
        src_y: p.srcY as u64,
        src_pitch: p.srcPitch as u64,
        dst_device: dst_dev,
        dst_x: p.dstXInBytes as u64,
        dst_y: p.dstY as u64,
        dst_pitch: p.dstPitch as u64,
        width: w as u64,
        height: h as u64,
    };
    match (src_dev, dst_dev) {
        (None, None) => {
            for r in 0..h {
                unsafe { std::ptr::copy(host_src(r), host_dst(r), w) };
            }
            Ok(())
        }
        (None, Some(d)) => {
            let mut packed = Vec::with_capacity(w * h);
            for r in 0..h {
                packed.extend_from_slice(unsafe { std::slice::from_raw_parts(host_src(r), w) });
            }
            match route::place(route::ptr(d), stream)? {
                (t, None) => route::call_to(t, &ops::cuMemcpy2D_v2 { copy: c, stream: 0 }, &[&packed], None),
                (t, Some(s)) => route::call_to(t, &ops::cuMemcpy2DAsync_v2 { copy: c, stream: s }, &[&packed], None),
            }
        }
        (Some(sd), None) => {
            let mut packed = vec![0u8; w * h];
            let (t, s) = route::place(route::ptr(sd), stream)?;
            route::call_to(t, &ops::cuMemcpy2D_v2 { copy: c, stream: s.unwrap_or(0) }, &[], Some(&mut packed))?;
            for r in 0..h {
                unsafe { std::ptr::copy_nonoverlapping(packed[r * w..].as_ptr(), host_dst(r), w) };
            }
            Ok(())
        }
        (Some(sd), Some(d)) => {
            let (to, from) = (route::ptr(d), route::ptr(sd));
            if to.server == from.server {
                return match route::place(to, stream)? {
                    (t, None) => route::call(t, &ops::cuMemcpy2D_v2 { copy: c, stream: 0 }),
                    (t, Some(s)) => route::call(t, &ops::cuMemcpy2DAsync_v2 { copy: c, stream: s }),
                };
            }
            // Between servers: read the rectangle packed from one, write it to the other.
            if let Some(s) = stream {
                route::wait_stream(s)?;
            }
            let mut packed = vec![0u8; w * h];
            route::call_to(
                from,
                &ops::cuMemcpy2D_v2 { copy: Copy2D { dst_device: None, ..c }, stream: 0 },
                &[],
                Some(&mut packed),
            )?;
            route::call_to(
                to,
                &ops::cuMemcpy2D_v2 { copy: Copy2D { src_device: None, ..c }, stream: 0 },
                &[&packed],
                None,
            )
        }
    }
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuMemcpy2D_v2(p: *const CUDA_MEMCPY2D) -> R {
    entry(|| copy2d(unsafe { p.as_ref() }.ok_or(CUresult::CUDA_ERROR_INVALID_VALUE)?, None))
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuMemcpy2DUnaligned_v2(p: *const CUDA_MEMCPY2D) -> R {
    unsafe { cuMemcpy2D_v2(p) }
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuMemcpy2DAsync_v2(p: *const CUDA_MEMCPY2D, s: CUstream) -> R {
    entry(|| copy2d(unsafe { p.as_ref() }.ok_or(CUresult::CUDA_ERROR_INVALID_VALUE)?, Some(sid(s))))
}

// ---------------------------------------------------------------- memsets

fn memset(dst: u64, value: u32, elem: u8, width: usize, height: usize, pitch: usize, s: u64) -> R {
    entry(|| {
        if width == 0 || height == 0 {
            return Ok(());
        }
        let pitch = if height == 1 { width * elem as usize } else { pitch };
        // `s` 0 is the synchronous form (and the legacy default stream).
        let (t, stream) = route::place(route::ptr(dst), (s != 0).then_some(s))?;
        let stream = stream.unwrap_or(0);
        route::call(
            t,
            &ops::memset { dst, value, elem, width: width as u64, height: height as u64, pitch: pitch as u64, stream },
        )
    })
}

#[unsafe(no_mangle)]
pub extern "C" fn cuMemsetD8_v2(dst: CUdeviceptr, v: c_uchar, n: usize) -> R {
    memset(dst, v as u32, 1, n, 1, 0, 0)
}
#[unsafe(no_mangle)]
pub extern "C" fn cuMemsetD16_v2(dst: CUdeviceptr, v: c_ushort, n: usize) -> R {
    memset(dst, v as u32, 2, n, 1, 0, 0)
}
#[unsafe(no_mangle)]
pub extern "C" fn cuMemsetD32_v2(dst: CUdeviceptr, v: c_uint, n: usize) -> R {
    memset(dst, v, 4, n, 1, 0, 0)
}
#[unsafe(no_mangle)]
pub extern "C" fn cuMemsetD8Async(dst: CUdeviceptr, v: c_uchar, n: usize, s: CUstream) -> R {
    memset(dst, v as u32, 1, n, 1, 0, sid(s))
}
#[unsafe(no_mangle)]
pub extern "C" fn cuMemsetD16Async(dst: CUdeviceptr, v: c_ushort, n: usize, s: CUstream) -> R {
    memset(dst, v as u32, 2, n, 1, 0, sid(s))
}
#[unsafe(no_mangle)]
pub extern "C" fn cuMemsetD32Async(dst: CUdeviceptr, v: c_uint, n: usize, s: CUstream) -> R {
    memset(dst, v, 4, n, 1, 0, sid(s))
}
#[unsafe(no_mangle)]
pub extern "C" fn cuMemsetD2D8_v2(dst: CUdeviceptr, pitch: usize, v: c_uchar, w: usize, h: usize) -> R {
    memset(dst, v as u32, 1, w, h, pitch, 0)
}
#[unsafe(no_mangle)]
pub extern "C" fn cuMemsetD2D16_v2(dst: CUdeviceptr, pitch: usize, v: c_ushort, w: usize, h: usize) -> R {
    memset(dst, v as u32, 2, w, h, pitch, 0)
}
#[unsafe(no_mangle)]
pub extern "C" fn cuMemsetD2D32_v2(dst: CUdeviceptr, pitch: usize, v: c_uint, w: usize, h: usize) -> R {
    memset(dst, v, 4, w, h, pitch, 0)
}
#[unsafe(no_mangle)]
pub extern "C" fn cuMemsetD2D8Async(dst: CUdeviceptr, pitch: usize, v: c_uchar, w: usize, h: usize, s: CUstream) -> R {
    memset(dst, v as u32, 1, w, h, pitch, sid(s))
}
#[unsafe(no_mangle)]
pub extern "C" fn cuMemsetD2D16Async(
    dst: CUdeviceptr,
    pitch: usize,
    v: c_ushort,
    w: usize,
    h: usize,
    s: CUstream,
) -> R {
    memset(dst, v as u32, 2, w, h, pitch, sid(s))
}
#[unsafe(no_mangle)]
pub extern "C" fn cuMemsetD2D32Async(dst: CUdeviceptr, pitch: usize, v: c_uint, w: usize, h: usize, s: CUstream) -> R {
    memset(dst, v, 4, w, h, pitch, sid(s))
}

// ---------------------------------------------------------------- pointer attributes

fn pointer_attribute(data: *mut c_void, attr: CUpointer_attribute, p: u64) -> Result<(), R> {
    state::session()?;
    let (start, len, kind, ctx) = state::find_range(p).ok_or(CUresult::CUDA_ERROR_INVALID_VALUE)?;
    let device = state::ctx_info(ctx).map_or(0, |i| i.device);
    unsafe {
        match attr {
            CUpointer_attribute::CU_POINTER_ATTRIBUTE_CONTEXT => put(data.cast::<CUcontext>(), state::ctx_ptr(ctx)),
            CUpointer_attribute::CU_POINTER_ATTRIBUTE_MEMORY_TYPE => put(
                data.cast::<c_uint>(),
                match kind {
                    MemKind::Device => CUmemorytype::CU_MEMORYTYPE_DEVICE.0,
                    MemKind::Host => CUmemorytype::CU_MEMORYTYPE_HOST.0,
                },
            ),
            CUpointer_attribute::CU_POINTER_ATTRIBUTE_DEVICE_POINTER if kind == MemKind::Device => {
                put(data.cast::<CUdeviceptr>(), p)
            }
            CUpointer_attribute::CU_POINTER_ATTRIBUTE_HOST_POINTER if kind == MemKind::Host => {
                put(data.cast::<*mut c_void>(), p as *mut c_void)
            }
            CUpointer_attribute::CU_POINTER_ATTRIBUTE_IS_MANAGED => put(data.cast::<c_uint>(), 0),
            CUpointer_attribute::CU_POINTER_ATTRIBUTE_MAPPED => put(data.cast::<c_uint>(), 1),
            CUpointer_attribute::CU_POINTER_ATTRIBUTE_DEVICE_ORDINAL => put(data.cast::<i32>(), device),
            CUpointer_attribute::CU_POINTER_ATTRIBUTE_RANGE_START_ADDR => put(data.cast::<CUdeviceptr>(), start),
            CUpointer_attribute::CU_POINTER_ATTRIBUTE_RANGE_SIZE => put(data.cast::<usize>(), len as usize),
            CUpointer_attribute::CU_POINTER_ATTRIBUTE_BUFFER_ID
            | CUpointer_attribute::CU_POINTER_ATTRIBUTE_MEMORY_BLOCK_ID => {
                put(data.cast::<u64>(), state::buffer_id(start))
            }
            _ => Err(CUresult::CUDA_ERROR_INVALID_VALUE),
        }
    }
}

/// The allocation that holds `p`: its start and size, each where asked for.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuMemGetAddressRange_v2(base: *mut CUdeviceptr, size: *mut usize, p: CUdeviceptr) -> R {
    entry(|| {
        state::session()?;
        let (start, len, kind, _) = state::find_range(p).ok_or(CUresult::CUDA_ERROR_NOT_FOUND)?;
        if kind != MemKind::Device {
            return Err(CUresult::CUDA_ERROR_NOT_FOUND);
        }
        if !base.is_null() {
            unsafe { *base = start };
        }
        if !size.is_null() {
            unsafe { *size = len as usize };
        }
        Ok(())
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuPointerGetAttribute(data: *mut c_void, attr: CUpointer_attribute, p: CUdeviceptr) -> R {
    entry(|| pointer_attribute(data, attr, p))
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuPointerGetAttributes(
    n: c_uint,
    attrs: *mut CUpointer_attribute,
    data: *mut *mut c_void,
    p: CUdeviceptr,
) -> R {
    entry(|| {
        if attrs.is_null() || data.is_null() {
            return Err(CUresult::CUDA_ERROR_INVALID_VALUE);
        }
        for i in 0..n as usize {
            // Unlike the single form, unknown memory is not an error here: values stay zero.
            let (a, d) = unsafe { (*attrs.add(i), *data.add(i)) };
            if let Err(e) = pointer_attribute(d, a, p)
                && e != CUresult::CUDA_ERROR_INVALID_VALUE
            {
                return Err(e);
            }
        }
        Ok(())
    })
}

// ---------------------------------------------------------------- virtual memory

fn as_bytes<T>(v: &[T]) -> Vec<u8> {
    unsafe { std::slice::from_raw_parts(v.as_ptr().cast::<u8>(), size_of_val(v)) }.to_vec()
}

/// A memory location as its server knows it: a device of this process (its ordinal after
/// `CUDA_VISIBLE_DEVICES`, across all servers) becomes that server's own CUDA ordinal;
/// returns the device's server (`None` for host locations).
fn location(l: &mut CUmemLocation) -> Result<Option<usize>, R> {
    if l.type_ != CUmemLocationType::CU_MEM_LOCATION_TYPE_DEVICE {
        return Ok(None);
    }
    let d = state::device(l.id)?;
    l.id = d.cuda_ordinal as i32;
    Ok(Some(d.server as usize))
}

/// Properties with a memory location (`at` picks it out: an allocation's, a pool's) with
/// their device translated, as bytes, and where calls about them go (a context of that
/// device where this process has one).
pub(crate) fn located<T: Copy>(
    props: *const T,
    at: impl Fn(&mut T) -> &mut CUmemLocation,
) -> Result<(Target, Vec<u8>), R> {
    let mut p = *unsafe { props.as_ref() }.ok_or(CUresult::CUDA_ERROR_INVALID_VALUE)?;
    let l = at(&mut p);
    let t = match l.type_ {
        CUmemLocationType::CU_MEM_LOCATION_TYPE_DEVICE => route::for_device(l.id)?,
        _ => route::here(),
    };
    location(l)?;
    Ok((t, as_bytes(std::slice::from_ref(&p))))
}

fn prop_on(prop: *const CUmemAllocationProp) -> Result<(Target, Vec<u8>), R> {
    located(prop, |p| &mut p.location)
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuMemAddressReserve(
    ptr: *mut CUdeviceptr,
    size: usize,
    align: usize,
    addr: CUdeviceptr,
    flags: u64,
) -> R {
    entry(|| {
        let t = route::here();
        let p = route::unique(
            t.server,
            size as u64,
            || route::call(t, &ops::cuMemAddressReserve { size: size as u64, align: align as u64, addr, flags }),
            |p| {
                let _ = route::call(t, &ops::cuMemAddressFree { ptr: p, size: size as u64 });
            },
            None,
        )?;
        if route::servers() > 1 {
            route::add_reservation(p, size as u64, t.ctx);
        }
        unsafe { put(ptr, p) }
    })
}

#[unsafe(no_mangle)]
pub extern "C" fn cuMemAddressFree(ptr: CUdeviceptr, size: usize) -> R {
    entry(|| {
        route::call(route::ptr(ptr), &ops::cuMemAddressFree { ptr, size: size as u64 })?;
        route::remove_reservation(ptr);
        Ok(())
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuMemCreate(
    handle: *mut CUmemGenericAllocationHandle,
    size: usize,
    prop: *const CUmemAllocationProp,
    flags: u64,
) -> R {
    entry(|| {
        let (t, prop) = prop_on(prop)?;
        let h = route::tag(t.server, route::call(t, &ops::cuMemCreate { size: size as u64, prop, flags })?)?;
        route::remember(h, t.ctx);
        unsafe { put(handle, h) }
    })
}

#[unsafe(no_mangle)]
pub extern "C" fn cuMemRelease(handle: CUmemGenericAllocationHandle) -> R {
    entry(|| {
        route::call(route::of(handle)?, &ops::cuMemRelease { handle: route::raw(handle) })?;
        route::forget(handle);
        Ok(())
    })
}

/// The allocation mapped at `addr`, with one more reference to it.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuMemRetainAllocationHandle(
    handle: *mut CUmemGenericAllocationHandle,
    addr: *mut c_void,
) -> R {
    entry(|| {
        let t = route::ptr(addr as u64);
        let h = route::tag(t.server, route::call(t, &ops::cuMemRetainAllocationHandle { ptr: addr as u64 })?)?;
        unsafe { put(handle, h) }
    })
}

/// An allocation's properties, its device this process's ordinal.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuMemGetAllocationPropertiesFromHandle(
    prop: *mut CUmemAllocationProp,
    handle: CUmemGenericAllocationHandle,
) -> R {
    entry(|| {
        if prop.is_null() {
            return Err(CUresult::CUDA_ERROR_INVALID_VALUE);
        }
        let t = route::of(handle)?;
        let bytes = route::call(t, &ops::cuMemGetAllocationPropertiesFromHandle { handle: route::raw(handle) })?;
        if bytes.len() != size_of::<CUmemAllocationProp>() {
            return Err(CUresult::CUDA_ERROR_UNKNOWN);
        }
        // SAFETY: the struct's bytes as the server's driver filled them (integers, enums and
        // a pointer it cleared).
        let mut p: CUmemAllocationProp = unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast()) };
        if p.location.type_ == CUmemLocationType::CU_MEM_LOCATION_TYPE_DEVICE {
            p.location.id = state::ordinal_of(t.server, p.location.id).ok_or(CUresult::CUDA_ERROR_INVALID_DEVICE)?;
        }
        unsafe { put(prop, p) }
    })
}

#[unsafe(no_mangle)]
pub extern "C" fn cuMemMap(
    ptr: CUdeviceptr,
    size: usize,
    offset: usize,
    handle: CUmemGenericAllocationHandle,
    flags: u64,
) -> R {
    entry(|| {
        let t = route::of(handle)?;
        // The reservation and the memory must be on one server.
        if route::reservation(ptr).is_some() && route::ptr(ptr).server != t.server {
            return Err(CUresult::CUDA_ERROR_INVALID_VALUE);
        }
        route::call(
            t,
            &ops::cuMemMap { ptr, size: size as u64, offset: offset as u64, handle: route::raw(handle), flags },
        )?;
        // The memory is the device's the handle was made for.
        route::add_device_range(ptr, size as u64, route::owner(handle).unwrap_or(t.ctx));
        Ok(())
    })
}

#[unsafe(no_mangle)]
pub extern "C" fn cuMemUnmap(ptr: CUdeviceptr, size: usize) -> R {
    entry(|| {
        route::call(route::ptr(ptr), &ops::cuMemUnmap { ptr, size: size as u64 })?;
        remove_range(ptr);
        Ok(())
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuMemSetAccess(
    ptr: CUdeviceptr,
    size: usize,
    desc: *const CUmemAccessDesc,
    count: usize,
) -> R {
    entry(|| {
        if desc.is_null() {
            return Err(CUresult::CUDA_ERROR_INVALID_VALUE);
        }
        let t = route::ptr(ptr);
        let mut descs = unsafe { std::slice::from_raw_parts(desc, count) }.to_vec();
        for d in &mut descs {
            // Devices of another server cannot reach this memory.
            if location(&mut d.location)?.is_some_and(|s| s != t.server) {
                return Err(CUresult::CUDA_ERROR_INVALID_DEVICE);
            }
        }
        route::call(t, &ops::cuMemSetAccess { ptr, size: size as u64, desc: as_bytes(&descs), count: count as u64 })
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuMemGetAllocationGranularity(
    gran: *mut usize,
    prop: *const CUmemAllocationProp,
    option: CUmemAllocationGranularity_flags,
) -> R {
    entry(|| {
        let (t, prop) = prop_on(prop)?;
        let g = route::call(t, &ops::cuMemGetAllocationGranularity { prop, option: option.0 })?;
        unsafe { put(gran, g as usize) }
    })
}
