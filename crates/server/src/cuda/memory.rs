//! Device allocations (with the session's quota), 1D copies and memsets.
//!
//! Every device range is checked against the session's ranges first. Host bytes arrive in
//! the frame buffer (`io.bulk_in`), which the worker reuses for the next frame: a copy
//! that is still queued when its call returns reads from pinned staging memory instead.

use super::ranges::{Kind, Range, fits};
use super::{CudaSession, INVALID_VALUE, OUT_OF_MEMORY, R, STREAM_CAPTURE_UNSUPPORTED};
use abi::cuda::{
    CUmemLocationType, CUmemPool_attribute, CUmemPoolProps, CUmemoryPool, CUstream, CUstreamCaptureMode,
    CUstreamCaptureStatus, CudaLib,
};
use std::os::raw::c_void;

/// Device-to-host copies go through pinned buffers of at most this size at a time.
const CHUNK: usize = 32 << 20;

/// The host bytes of an asynchronous host-to-device copy, as they came off the wire.
#[derive(Clone, Copy)]
pub(super) enum HostBytes<'a> {
    Plain(&'a [u8]),
    /// Packed as runs of a word (`protocol::runs`): the packed bytes and the copy's length.
    Runs(&'a [u8], usize),
    /// Kept by content (`crate::blobs`): read straight into the pinned buffer and checked
    /// there; bytes that do not match their name fail the copy with [`BLOB_MISMATCH`].
    Blob(&'a crate::blobs::Found),
    /// Sent in pieces, some kept by the session from earlier copies (`crate::pages`).
    Pages(crate::pages::Assembly<'a>),
}

/// Not a driver status: a kept file whose bytes did not match its name (`htod_cached`
/// answers the chunk as not held).
pub(super) const BLOB_MISMATCH: u32 = u32::MAX - 1;

impl HostBytes<'_> {
    pub(super) fn len(&self) -> usize {
        match self {
            HostBytes::Plain(d) => d.len(),
            HostBytes::Runs(_, len) => *len,
            HostBytes::Blob(f) => f.len,
            HostBytes::Pages(a) => a.len,
        }
    }

    /// The bytes into `dst`, which is `len()` long.
    fn write(&self, dst: &mut [u8]) -> R<()> {
        match self {
            HostBytes::Plain(d) => dst.copy_from_slice(d),
            HostBytes::Runs(p, _) => protocol::runs::unpack(p, dst).map_err(|_| INVALID_VALUE)?,
            HostBytes::Blob(f) => {
                if !f.read_into(dst) {
                    return Err(BLOB_MISMATCH);
                }
            }
            HostBytes::Pages(a) => a.write(dst),
        }
        Ok(())
    }

    /// `copy` from ordinary memory holding the bytes (the driver stages such a source before
    /// returning, so it need not outlive the call).
    fn pageable(&self, copy: impl FnOnce(*const c_void) -> R<()>) -> R<()> {
        match self {
            HostBytes::Plain(d) => copy(d.as_ptr().cast()),
            HostBytes::Runs(..) | HostBytes::Blob(_) | HostBytes::Pages(_) => {
                let mut v = vec![0u8; self.len()];
                self.write(&mut v)?;
                copy(v.as_ptr().cast())
            }
        }
    }
}

/// Largest asynchronous host-to-device copy given to the driver from the worker's own
/// (pageable) memory rather than a pinned buffer. CUDA takes up to 64 KiB from pageable
/// memory before returning without waiting for the stream (measured on the H100 host:
/// 4 B-256 KiB behind a 20 ms kernel returned in 19-104 µs), and that costs less than a
/// pinned buffer's bookkeeping (event queries, a copy into it, an event record): a decode
/// step's six small inputs, each on the way to the graph launch, took the worker 2-3 µs
/// each instead of 5-18.
const PAGEABLE_MAX: usize = 64 << 10;

/// Whether an asynchronous host-to-device copy of `data` is given to the driver from the
/// worker's own memory rather than from a pinned buffer ([`PAGEABLE_MAX`]). Never in a
/// stream capture: the graph would read the worker's buffer at every launch, long after it
/// was reused.
fn driver_stages(data: &HostBytes<'_>, capturing: bool) -> bool {
    matches!(data, HostBytes::Plain(d) if (1..=PAGEABLE_MAX).contains(&d.len())) && !capturing
}

/// A staging buffer a stream capture took for good: the graph copies from it at every launch.
#[derive(Debug, Clone, Copy)]
pub(super) struct Kept {
    ctx: u64,
    ptr: *mut u8,
    len: usize,
}

/// Copies captured into graphs with the address of their source in the application
/// (`htod_captured`): by capture sequence while it lasts, then by graph, each with the id
/// under which its bytes are kept.
#[derive(Debug, Default)]
pub(super) struct CapturedCopies {
    by_capture: std::collections::HashMap<u64, Vec<(u64, u64, u64)>>,
    by_graph: std::collections::HashMap<u64, Vec<(u64, u64, u64)>>,
    kept: std::collections::HashMap<u64, Kept>,
    next: u64,
}

impl CapturedCopies {
    fn add(&mut self, capture: u64, host: u64, k: Kept) {
        self.next += 1;
        self.kept.insert(self.next, k);
        self.by_capture.entry(capture).or_default().push((host, k.len as u64, self.next));
    }

    /// Capture sequence `capture` ended as `graph` (`None`: invalidated, no graph).
    pub(super) fn ended(&mut self, capture: u64, graph: Option<u64>) {
        if let (Some(v), Some(g)) = (self.by_capture.remove(&capture), graph) {
            self.by_graph.insert(g, v);
        }
    }

    /// The copies captured into `graph`: (source address, length, id).
    pub(super) fn of_graph(&self, graph: u64) -> Vec<(u64, u64, u64)> {
        self.by_graph.get(&graph).cloned().unwrap_or_default()
    }

    pub(super) fn graph_destroyed(&mut self, graph: u64) {
        self.by_graph.remove(&graph);
    }

    fn kept(&self, id: u64) -> Option<Kept> {
        self.kept.get(&id).copied()
    }

    /// Context `ctx` is gone, and with it the buffers it kept.
    pub(super) fn forget_ctx(&mut self, ctx: u64) {
        self.kept.retain(|_, k| k.ctx != ctx);
    }
}

/// A reply's bulk bytes left in a pinned buffer (see `dtoh`), written from there.
#[derive(Debug)]
pub(super) struct ReplyOut {
    ctx: u64,
    buf: usize,
    len: usize,
}

/// A pinned buffer the worker is reading a copy's bytes into (see `land_htod`).
#[derive(Debug)]
pub(super) struct Landing {
    /// The context whose pool holds it.
    ctx: u64,
    /// Its index in that pool.
    buf: usize,
    ptr: *mut u8,
}

impl CudaSession {
    /// Count `size` bytes on `dev` against the limit, or refuse.
    pub(super) fn reserve_quota(&self, dev: usize, size: u64) -> R<()> {
        if fits(self.used.get(dev).copied().unwrap_or(0), size, self.limit) { Ok(()) } else { Err(OUT_OF_MEMORY) }
    }

    fn track_alloc(&mut self, ptr: u64, len: u64, dev: usize, ctx: u64) {
        self.ranges.insert(ptr, Range { len, dev, ctx, kind: Kind::Alloc });
        if let Some(u) = self.used.get_mut(dev) {
            *u += len;
        }
    }

    pub(super) fn mem_get_info(&mut self) -> R<(u64, u64)> {
        let (mut free, mut total) = (0usize, 0usize);
        cu!(self.lib, cuMemGetInfo_v2(&mut free, &mut total))?;
        let dev = self.current_device()?;
        Ok(limited_info(free as u64, total as u64, self.limit, self.used[dev]))
    }

    pub(super) fn mem_alloc(&mut self, size: u64) -> R<u64> {
        let dev = self.current_device()?;
        self.reserve_quota(dev, size)?;
        let mut p = 0;
        cu!(self.lib, cuMemAlloc_v2(&mut p, size as usize))?;
        self.track_alloc(p, size, dev, self.current);
        Ok(p)
    }

    pub(super) fn mem_alloc_pitch(&mut self, width: u64, height: u64, elem: u32) -> R<(u64, u64)> {
        let dev = self.current_device()?;
        self.reserve_quota(dev, width.checked_mul(height).ok_or(INVALID_VALUE)?)?;
        let (mut p, mut pitch) = (0, 0usize);
        cu!(self.lib, cuMemAllocPitch_v2(&mut p, &mut pitch, width as usize, height as usize, elem))?;
        // The padded size is known only now.
        let bytes = (pitch as u64).saturating_mul(height);
        if self.reserve_quota(dev, bytes).is_err() {
            let _ = (|| cu!(self.lib, cuMemFree_v2(p)))();
            return Err(OUT_OF_MEMORY);
        }
        self.track_alloc(p, bytes, dev, self.current);
        Ok((p, pitch as u64))
    }

    pub(super) fn mem_alloc_async(&mut self, size: u64, stream: u64) -> R<u64> {
        let s = self.h.stream(stream)?;
        let ctx = self.h.stream_context(stream, self.current);
        let dev = self.h.contexts.get(&ctx).map(|c| c.dev).ok_or(super::INVALID_CONTEXT)?;
        self.reserve_quota(dev, size)?;
        let mut p = 0;
        cu!(self.lib, cuMemAllocAsync(&mut p, size as usize, s))?;
        self.track_alloc(p, size, dev, ctx);
        Ok(p)
    }

    pub(super) fn mem_pool_of(&mut self, dev: i32, current: bool) -> R<u64> {
        let (d, cudev) = (self.ordinal(dev)?, self.device(dev)?);
        let mut p: CUmemoryPool = std::ptr::null_mut();
        if current {
            cu!(self.lib, cuDeviceGetMemPool(&mut p, cudev))?;
        } else {
            cu!(self.lib, cuDeviceGetDefaultMemPool(&mut p, cudev))?;
        }
        self.h.pools.insert(p as u64, d);
        Ok(p as u64)
    }

    pub(super) fn mem_pool_set(&mut self, pool: u64, attr: u32, value: u64) -> R<()> {
        let p = self.h.pool(pool)?;
        let attr = CUmemPool_attribute(attr);
        let (mut wide, mut int) = (value, value as i32);
        let v: *mut std::ffi::c_void =
            if protocol::pool_attr_is_int(attr.0) { (&raw mut int).cast() } else { (&raw mut wide).cast() };
        cu!(self.lib, cuMemPoolSetAttribute(p, attr, v))
    }

    pub(super) fn mem_pool_get(&mut self, pool: u64, attr: u32) -> R<u64> {
        let p = self.h.pool(pool)?;
        let attr = CUmemPool_attribute(attr);
        let (mut wide, mut int) = (0u64, 0i32);
        if protocol::pool_attr_is_int(attr.0) {
            cu!(self.lib, cuMemPoolGetAttribute(p, attr, (&raw mut int).cast()))?;
            Ok(int as u32 as u64)
        } else {
            cu!(self.lib, cuMemPoolGetAttribute(p, attr, (&raw mut wide).cast()))?;
            Ok(wide)
        }
    }

    pub(super) fn mem_pool_trim(&mut self, pool: u64, keep: u64) -> R<()> {
        let p = self.h.pool(pool)?;
        cu!(self.lib, cuMemPoolTrimTo(p, keep as usize))
    }

    /// A pool of the application's. Only on a device: the session's quota is per device.
    pub(super) fn mem_pool_create(&mut self, props: &[u8]) -> R<u64> {
        let mut p: CUmemPoolProps = super::vmm::read_struct(props)?;
        // A host pointer of the client's, meaningless here (and Windows only).
        p.win32SecurityAttributes = std::ptr::null_mut();
        if p.location.type_ != CUmemLocationType::CU_MEM_LOCATION_TYPE_DEVICE {
            return Err(super::NOT_SUPPORTED);
        }
        let d = self.ordinal(p.location.id)?;
        let mut pool: CUmemoryPool = std::ptr::null_mut();
        cu!(self.lib, cuMemPoolCreate(&mut pool, &p))?;
        self.h.pools.insert(pool as u64, d);
        self.h.created_pools.insert(pool as u64);
        Ok(pool as u64)
    }

    /// Its allocations stay valid until freed, as the driver keeps them.
    pub(super) fn mem_pool_destroy(&mut self, pool: u64) -> R<()> {
        let p = self.h.pool(pool)?;
        if !self.h.created_pools.contains(&pool) {
            return Err(INVALID_VALUE);
        }
        cu!(self.lib, cuMemPoolDestroy(p))?;
        self.h.pools.remove(&pool);
        self.h.created_pools.remove(&pool);
        Ok(())
    }

    pub(super) fn mem_alloc_from_pool(&mut self, size: u64, pool: u64, stream: u64) -> R<u64> {
        let (p, s) = (self.h.pool(pool)?, self.h.stream(stream)?);
        let ctx = self.h.stream_context(stream, self.current);
        let dev = self.h.pools[&pool];
        self.reserve_quota(dev, size)?;
        let mut ptr = 0;
        cu!(self.lib, cuMemAllocFromPoolAsync(&mut ptr, size as usize, p, s))?;
        self.track_alloc(ptr, size, dev, ctx);
        Ok(ptr)
    }

    /// The allocation starting at `ptr` (frees take exactly what an allocation returned).
    pub(super) fn allocation(&self, ptr: u64) -> R<Range> {
        self.ranges.get(ptr).filter(|r| r.kind == Kind::Alloc).copied().ok_or(INVALID_VALUE)
    }

    pub(super) fn mem_free(&mut self, ptr: u64) -> R<()> {
        let r = self.allocation(ptr)?;
        cu!(self.lib, cuMemFree_v2(ptr))?;
        self.ranges.remove(ptr);
        self.uncount(r.dev, r.len);
        Ok(())
    }

    pub(super) fn mem_free_async(&mut self, ptr: u64, stream: u64) -> R<()> {
        let s = self.h.stream(stream)?;
        let r = self.allocation(ptr)?;
        cu!(self.lib, cuMemFreeAsync(ptr, s))?;
        self.ranges.remove(ptr);
        self.uncount(r.dev, r.len);
        Ok(())
    }

    pub(super) fn is_capturing(&self, s: CUstream) -> R<bool> {
        let mut st = CUstreamCaptureStatus::CU_STREAM_CAPTURE_STATUS_NONE;
        cu!(self.lib, cuStreamIsCapturing(s, &mut st))?;
        Ok(st != CUstreamCaptureStatus::CU_STREAM_CAPTURE_STATUS_NONE)
    }

    /// Queue an asynchronous copy on `s` whose host source is `data`, without waiting for
    /// the GPU and without reading `data` after returning: `copy` gets a pinned copy of it.
    /// When pinned memory cannot be had, `copy` gets `data` itself, which is safe because
    /// the driver stages pageable sources before returning (but not allowed in a capture).
    ///
    /// `small_pageable`: a plain copy of a few bytes ([`driver_stages`]) goes from `data`
    /// itself.
    ///
    /// The buffer's event must belong to the stream's context, which need not be current
    /// (a copy may use another device's stream), so the work runs in that context.
    ///
    /// Returns the buffer a stream capture took for good (see `Pool::leak`), with its
    /// context: the graph copies from it at every launch.
    fn staged_async_kept(
        &mut self,
        data: HostBytes<'_>,
        s: CUstream,
        small_pageable: bool,
        copy: impl FnOnce(*const c_void) -> R<()>,
    ) -> R<Option<Kept>> {
        let len = data.len();
        if len == 0 {
            return copy(std::ptr::NonNull::<u8>::dangling().as_ptr().cast()).map(|()| None);
        }
        let ctx = self.h.stream_context(s as u64, self.current);
        let landed = match data {
            HostBytes::Plain(d) => self.landing.take().filter(|l| l.ctx == ctx && std::ptr::eq(l.ptr, d.as_ptr())),
            HostBytes::Runs(..) | HostBytes::Blob(_) | HostBytes::Pages(_) => None,
        }
        .map(|l| l.buf);
        self.in_context(ctx, |me| {
            let capturing = me.is_capturing(s)?;
            if small_pageable && landed.is_none() && driver_stages(&data, capturing) {
                // Relaxed: a copy from pageable memory beside a client's capture in global
                // mode is not the client's unsafe call (natively its memory was pinned).
                return relaxed(me.lib, || data.pageable(copy)).map(|()| None);
            }
            let (lib, pool) = (me.lib, me.pools.entry(me.current).or_default());
            let i = match landed {
                // The worker read the bytes straight into this buffer.
                Some(i) => i,
                None => {
                    let i = match relaxed(lib, || pool.take(lib, len)) {
                        Ok(i) => i,
                        Err(e) if capturing => return Err(e),
                        Err(_) => return data.pageable(copy).map(|()| None),
                    };
                    data.write(pool.bytes(i, len))?;
                    i
                }
            };
            copy(pool.ptr(i).cast())?;
            if capturing {
                // The graph reads this buffer at every launch: see `Pool::leak`.
                let kept = Kept { ctx, ptr: pool.ptr(i), len };
                pool.leak(i);
                Ok(Some(kept))
            } else {
                relaxed(lib, || pool.record(lib, i, s as u64)).map(|()| None)
            }
        })
    }

    /// [`Self::staged_async_kept`] for a copy whose source the client does not name: a
    /// buffer a capture kept replays its bytes as they were ([`Self::unrefreshed`]).
    pub(super) fn staged_async(
        &mut self,
        data: HostBytes<'_>,
        s: CUstream,
        copy: impl FnOnce(*const c_void) -> R<()>,
    ) -> R<()> {
        let kept = self.staged_async_kept(data, s, false, copy)?;
        self.unrefreshed(kept);
        Ok(())
    }

    /// `Session::bulk_place`: the bytes of an asynchronous host-to-device copy are read
    /// straight into a free pinned buffer of the stream's context, which `staged_async`
    /// then copies from, so a copy over the socket costs one copy of its bytes on this
    /// side (the socket's) instead of two. Larger frames than the client sends (the shim's
    /// `HTOD_FRAME`) are not given pinned memory before their bytes arrive, nor small ones
    /// ([`PAGEABLE_MAX`]), which the driver takes from the worker's buffer.
    pub(super) fn land_htod(&mut self, op: u32, args: &[u8], len: usize) -> Option<std::ptr::NonNull<u8>> {
        self.landing = None;
        if !crate::lands_htod(op) || len <= PAGEABLE_MAX || len > crate::BULK_PLACE_MAX || self.ready().is_err() {
            return None;
        }
        let a: protocol::ops::cuMemcpyHtoDAsync_v2 = postcard::from_bytes(args).ok()?;
        let s = self.h.stream(a.stream).ok()?;
        let ctx = self.h.stream_context(s as u64, self.current);
        let (buf, ptr) = self
            .in_context(ctx, |me| {
                let (lib, pool) = (me.lib, me.pools.entry(me.current).or_default());
                let i = relaxed(lib, || pool.take(lib, len))?;
                Ok((i, pool.ptr(i)))
            })
            .ok()?;
        self.landing = Some(Landing { ctx, buf, ptr });
        std::ptr::NonNull::new(ptr)
    }

    /// `Session::reply_bulk`: the bytes a device-to-host copy left in a pinned buffer.
    pub(super) fn take_reply_out(&mut self) -> Option<&[u8]> {
        let r = self.reply_out.take()?;
        Some(&*self.pools.get_mut(&r.ctx)?.bytes(r.buf, r.len))
    }

    /// Run `copy` into a pinned buffer of `len` bytes (synchronously: it must have completed
    /// when `copy` returns) and append the bytes to `out`. Without pinned memory, `copy`
    /// writes straight into `out`.
    pub(super) fn staged_read(
        &mut self,
        out: &mut Vec<u8>,
        len: usize,
        copy: impl FnOnce(*mut c_void) -> R<()>,
    ) -> R<()> {
        out.try_reserve(len).map_err(|_| OUT_OF_MEMORY)?;
        let (lib, pool) = (self.lib, self.pools.entry(self.current).or_default());
        match relaxed(lib, || pool.take(lib, len)) {
            Ok(i) => {
                copy(pool.ptr(i).cast())?;
                out.extend_from_slice(pool.bytes(i, len));
            }
            Err(_) => {
                let at = out.len();
                out.resize(at + len, 0);
                copy(out[at..].as_mut_ptr().cast())?;
            }
        }
        Ok(())
    }

    pub(super) fn htod(&mut self, dst: u64, data: &[u8]) -> R<()> {
        self.ranges.check(dst, data.len() as u64)?;
        // Synchronous: the driver has consumed `data` when it returns.
        cu!(self.lib, cuMemcpyHtoD_v2(dst, data.as_ptr().cast(), data.len()))
    }

    pub(super) fn htod_async(&mut self, dst: u64, data: HostBytes<'_>, stream: u64) -> R<()> {
        let kept = self.queue_htod(dst, data, stream, true)?;
        self.unrefreshed(kept);
        Ok(())
    }

    /// Queue the copy of `data` to `dst` on `stream` (`staged_async_kept`, which says what a
    /// capture kept).
    fn queue_htod(&mut self, dst: u64, data: HostBytes<'_>, stream: u64, small_pageable: bool) -> R<Option<Kept>> {
        let len = data.len();
        self.ranges.check(dst, len as u64)?;
        let s = self.h.stream(stream)?;
        let lib = self.lib;
        self.staged_async_kept(data, s, small_pageable, |src| cu!(lib, cuMemcpyHtoDAsync_v2(dst, src, len, s)))
    }

    /// `htod_captured`: an asynchronous copy sent while the application captures a stream,
    /// from its memory at `host`. Captured into a graph, its bytes are kept under an id the
    /// client refreshes before each launch (`refresh_captured`), as the driver would read
    /// the application's memory again.
    pub(super) fn htod_captured(&mut self, dst: u64, data: &[u8], stream: u64, host: u64) -> R<()> {
        if let Some(k) = self.queue_htod(dst, HostBytes::Plain(data), stream, false)? {
            let (_, capture) = self.capture_info(stream)?;
            self.captured.add(capture, host, k);
        }
        Ok(())
    }

    /// `refresh_captured`: the application's bytes now, for a copy captured into a graph.
    pub(super) fn refresh_captured(&mut self, id: u64, data: &[u8]) -> R<()> {
        let k = self.captured.kept(id).ok_or(INVALID_VALUE)?;
        if k.len != data.len() {
            return Err(INVALID_VALUE);
        }
        // SAFETY: a staging buffer of at least `len` bytes that its pool gave up for good
        // (`Pool::leak`), alive while its context is (`CapturedCopies::forget_ctx`).
        unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), k.ptr, k.len) };
        Ok(())
    }

    /// A copy captured without a source to refresh from keeps its bytes: the log says so,
    /// once a session.
    fn unrefreshed(&mut self, kept: Option<Kept>) {
        if let Some(k) = kept
            && !std::mem::replace(&mut self.told_captured_copy, true)
        {
            tracing::warn!(
                "a host-to-device copy ({} bytes) was captured into a graph: each launch copies the bytes it had \
                 at capture, not what the application's memory holds then (docs/coverage.md)",
                k.len
            );
        }
    }

    /// `size` bytes at `src` into `out`, through pinned chunks; on `stream` (and then
    /// synchronised) when given.
    pub(super) fn dtoh(&mut self, out: &mut Vec<u8>, src: u64, size: u64, stream: Option<u64>) -> R<()> {
        self.ranges.check(src, size)?;
        let s = stream.map(|s| self.h.stream(s)).transpose()?;
        if let Some(s) = s {
            // The bytes are wanted now; a captured copy would only run at graph launch.
            if self.is_capturing(s)? {
                return Err(STREAM_CAPTURE_UNSUPPORTED);
            }
        }
        let total = usize::try_from(size).map_err(|_| INVALID_VALUE)?;
        let lib = self.lib;
        // `n` bytes from device address `from` to host `dst`, complete on return.
        let copy = |dst: *mut c_void, from: u64, n: usize| match s {
            None => cu!(lib, cuMemcpyDtoH_v2(dst, from, n)),
            Some(s) => {
                cu!(lib, cuMemcpyDtoHAsync_v2(dst, from, n, s))?;
                cu!(lib, cuStreamSynchronize(s))
            }
        };
        if out.is_empty() && (1..=CHUNK).contains(&total) {
            // The reply is written straight from the pinned buffer the copy landed in.
            let ctx = self.current;
            let pool = self.pools.entry(ctx).or_default();
            if let Ok(i) = relaxed(lib, || pool.take(lib, total)) {
                copy(pool.ptr(i).cast(), src, total)?;
                self.reply_out = Some(ReplyOut { ctx, buf: i, len: total });
                return Ok(());
            }
        }
        out.try_reserve_exact(total).map_err(|_| OUT_OF_MEMORY)?;
        let mut done = 0usize;
        while done < total {
            let n = (total - done).min(CHUNK);
            let from = src + done as u64;
            self.staged_read(out, n, |dst| copy(dst, from, n))?;
            done += n;
        }
        Ok(())
    }

    pub(super) fn dtod(&mut self, dst: u64, src: u64, size: u64, stream: Option<u64>) -> R<()> {
        self.ranges.check(dst, size)?;
        self.ranges.check(src, size)?;
        match stream {
            None => cu!(self.lib, cuMemcpyDtoD_v2(dst, src, size as usize)),
            Some(s) => {
                let s = self.h.stream(s)?;
                cu!(self.lib, cuMemcpyDtoDAsync_v2(dst, src, size as usize, s))
            }
        }
    }

    pub(super) fn peer_async(
        &mut self,
        dst: u64,
        dst_ctx: u64,
        src: u64,
        src_ctx: u64,
        size: u64,
        stream: u64,
    ) -> R<()> {
        let (dc, sc) = (self.h.context(dst_ctx)?, self.h.context(src_ctx)?);
        self.ranges.check(dst, size)?;
        self.ranges.check(src, size)?;
        let s = self.h.stream(stream)?;
        cu!(self.lib, cuMemcpyPeerAsync(dst, dc, src, sc, size as usize, s))
    }

    /// Every `cuMemsetD*Async` form: `width` elements of `elem` bytes per row.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn memset_any(
        &mut self,
        dst: u64,
        value: u32,
        elem: u8,
        width: u64,
        height: u64,
        pitch: u64,
        stream: u64,
    ) -> R<()> {
        let row = width.checked_mul(elem as u64).ok_or(INVALID_VALUE)?;
        let s = self.h.stream(stream)?;
        let (w, p, h) = (width as usize, pitch as usize, height as usize);
        let lib = self.lib;
        if height == 1 {
            self.ranges.check(dst, row)?;
            return match elem {
                1 => cu!(lib, cuMemsetD8Async(dst, value as u8, w, s)),
                2 => cu!(lib, cuMemsetD16Async(dst, value as u16, w, s)),
                4 => cu!(lib, cuMemsetD32Async(dst, value, w, s)),
                _ => Err(INVALID_VALUE),
            };
        }
        self.ranges.check_2d(dst, 0, 0, pitch, row, height)?;
        match elem {
            1 => cu!(lib, cuMemsetD2D8Async(dst, p, value as u8, w, h, s)),
            2 => cu!(lib, cuMemsetD2D16Async(dst, p, value as u16, w, h, s)),
            4 => cu!(lib, cuMemsetD2D32Async(dst, p, value, w, h, s)),
            _ => Err(INVALID_VALUE),
        }
    }
}

/// Run `f` with this thread's capture mode relaxed. The staging pool's allocations and
/// event queries are not the client's work: in the default (global) mode they would count
/// as unsafe calls during a client's stream capture and invalidate it.
pub(super) fn relaxed<T>(lib: &CudaLib, f: impl FnOnce() -> T) -> T {
    let mut mode = CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_RELAXED;
    let exchange = |m: &mut CUstreamCaptureMode| -> R<()> { cu!(lib, cuThreadExchangeStreamCaptureMode(m)) };
    let swapped = exchange(&mut mode).is_ok();
    let r = f();
    if swapped {
        let _ = exchange(&mut mode);
    }
    r
}

/// `cuMemGetInfo` under a limit: the total is capped by it, and the free memory by what
/// the session has left of it. Returns `(free, total)`.
pub fn limited_info(free: u64, total: u64, limit: Option<u64>, used: u64) -> (u64, u64) {
    match limit {
        None => (free, total),
        Some(l) => {
            let total = total.min(l);
            (free.min(l.saturating_sub(used)).min(total), total)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{CapturedCopies, HostBytes, Kept, PAGEABLE_MAX, driver_stages, limited_info};

    #[test]
    fn captured_copies_follow_their_capture_into_its_graph_and_die_with_their_context() {
        let mut c = CapturedCopies::default();
        let mut buf = [0u8; 64];
        let ptr = buf.as_mut_ptr();
        let k = |ctx, len| Kept { ctx, ptr, len };
        c.add(7, 0x1000, k(1, 16));
        c.add(7, 0x2000, k(2, 32));
        c.add(8, 0x3000, k(1, 8)); // another sequence, still open
        assert!(c.of_graph(100).is_empty(), "nothing before the capture ends");
        c.ended(7, Some(100));
        assert_eq!(c.of_graph(100), vec![(0x1000, 16, 1), (0x2000, 32, 2)]);
        c.ended(9, Some(101)); // a capture that copied nothing
        assert!(c.of_graph(101).is_empty());
        c.ended(8, None); // invalidated: its list goes
        c.ended(8, Some(102));
        assert!(c.of_graph(102).is_empty());
        assert_eq!(c.kept(2).map(|k| k.len), Some(32));
        c.forget_ctx(2);
        assert!(c.kept(2).is_none(), "its context freed the buffer: no refresh may write there");
        assert!(c.kept(1).is_some() && c.kept(3).is_some());
        c.graph_destroyed(100);
        assert!(c.of_graph(100).is_empty());
    }

    #[test]
    fn only_small_plain_uncaptured_copies_go_from_pageable_memory() {
        let small = vec![7u8; 4096];
        assert!(driver_stages(&HostBytes::Plain(&small), false));
        // A captured copy reads its source at every launch: never the worker's buffer.
        assert!(!driver_stages(&HostBytes::Plain(&small), true));
        let edge = vec![0u8; PAGEABLE_MAX + 1];
        assert!(driver_stages(&HostBytes::Plain(&edge[..PAGEABLE_MAX]), false));
        assert!(!driver_stages(&HostBytes::Plain(&edge), false), "past 64 KiB the driver may wait for the stream");
        assert!(!driver_stages(&HostBytes::Plain(&[]), false));
        // Packed runs are unpacked into pinned memory, not into a buffer of their own.
        assert!(!driver_stages(&HostBytes::Runs(&small[..16], 4096), false));
    }

    #[test]
    fn memory_info_under_a_limit() {
        let g = 1u64 << 30;
        assert_eq!(limited_info(70 * g, 80 * g, None, 5 * g), (70 * g, 80 * g));
        assert_eq!(limited_info(70 * g, 80 * g, Some(16 * g), 5 * g), (11 * g, 16 * g));
        // Others use the GPU too: the real free memory is the tighter bound.
        assert_eq!(limited_info(3 * g, 80 * g, Some(16 * g), 5 * g), (3 * g, 16 * g));
        assert_eq!(limited_info(70 * g, 80 * g, Some(16 * g), 20 * g), (0, 16 * g));
        assert_eq!(limited_info(70 * g, 80 * g, Some(100 * g), 0), (70 * g, 80 * g));
    }
}
