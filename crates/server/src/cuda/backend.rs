//! `protocol::Backend` for [`CudaSession`]: every forwarded call, each first answering the
//! frame's context error if there is one (NVML calls need no context), then delegating to
//! the file that does the work.

use super::memory::HostBytes;
use super::{CudaSession, R};
use protocol::{Copy2D, FuncInfo, Io, LaunchAttr, NvmlOut, Piece};

impl protocol::Backend for CudaSession {
    fn ordered(&mut self, op: u32, stream: Option<u64>) {
        if protocol::sees_deferred_work(op) {
            self.keep_order(stream);
        }
    }
    fn nvml_call(&mut self, io: &mut Io<'_>, func: u16, device: u32, args: [u64; 3]) -> R<NvmlOut> {
        Ok(self.nvml_forward(io, func, device, args))
    }

    // ---------- contexts
    fn cuDevicePrimaryCtxRetain(&mut self, _io: &mut Io<'_>, dev: i32) -> R<u64> {
        self.ready()?;
        self.primary_retain(dev)
    }
    fn cuDevicePrimaryCtxRelease_v2(&mut self, _io: &mut Io<'_>, dev: i32) -> R<()> {
        self.ready()?;
        self.primary_release(dev)
    }
    fn cuDevicePrimaryCtxReset_v2(&mut self, _io: &mut Io<'_>, dev: i32) -> R<()> {
        self.ready()?;
        self.primary_reset(dev)
    }
    fn cuDevicePrimaryCtxSetFlags_v2(&mut self, _io: &mut Io<'_>, dev: i32, flags: u32) -> R<()> {
        self.ready()?;
        self.primary_set_flags(dev, flags)
    }
    fn cuDevicePrimaryCtxGetState(&mut self, _io: &mut Io<'_>, dev: i32) -> R<(u32, i32)> {
        self.ready()?;
        self.primary_state(dev)
    }
    fn cuCtxCreate_v2(&mut self, _io: &mut Io<'_>, flags: u32, dev: i32) -> R<u64> {
        self.ready()?;
        self.ctx_create(flags, dev)
    }
    fn cuCtxDestroy_v2(&mut self, _io: &mut Io<'_>, ctx: u64) -> R<()> {
        self.ready()?;
        self.ctx_destroy(ctx)
    }
    fn cuCtxSynchronize(&mut self, _io: &mut Io<'_>) -> R<()> {
        self.ready()?;
        self.ctx_synchronize()
    }
    fn ctx_barrier(&mut self, _io: &mut Io<'_>) -> R<()> {
        self.ready()?;
        self.ctx_synchronize()
    }
    fn cuCtxSetLimit(&mut self, _io: &mut Io<'_>, limit: u32, value: u64) -> R<()> {
        self.ready()?;
        self.ctx_set_limit(limit, value)
    }
    fn cuCtxGetLimit(&mut self, _io: &mut Io<'_>, limit: u32) -> R<u64> {
        self.ready()?;
        self.ctx_get_limit(limit)
    }
    fn cuCtxGetStreamPriorityRange(&mut self, _io: &mut Io<'_>) -> R<(i32, i32)> {
        self.ready()?;
        self.stream_priority_range()
    }
    fn cuCtxEnablePeerAccess(&mut self, _io: &mut Io<'_>, peer: u64, flags: u32) -> R<()> {
        self.ready()?;
        self.enable_peer(peer, flags)
    }
    fn cuCtxDisablePeerAccess(&mut self, _io: &mut Io<'_>, peer: u64) -> R<()> {
        self.ready()?;
        self.disable_peer(peer)
    }
    fn cuDeviceCanAccessPeer(&mut self, _io: &mut Io<'_>, dev: i32, peer: i32) -> R<i32> {
        self.ready()?;
        self.can_access_peer(dev, peer)
    }

    // ---------- memory
    fn cuMemGetInfo_v2(&mut self, _io: &mut Io<'_>) -> R<(u64, u64)> {
        self.ready()?;
        self.mem_get_info()
    }
    fn cuMemAlloc_v2(&mut self, _io: &mut Io<'_>, bytesize: u64) -> R<u64> {
        self.ready()?;
        self.mem_alloc(bytesize)
    }
    fn mem_pool_of(&mut self, _io: &mut Io<'_>, dev: i32, current: bool) -> R<u64> {
        self.ready()?;
        self.mem_pool_of(dev, current)
    }
    fn cuMemPoolSetAttribute(&mut self, _io: &mut Io<'_>, pool: u64, attr: u32, value: u64) -> R<()> {
        self.ready()?;
        self.mem_pool_set(pool, attr, value)
    }
    fn cuMemPoolGetAttribute(&mut self, _io: &mut Io<'_>, pool: u64, attr: u32) -> R<u64> {
        self.ready()?;
        self.mem_pool_get(pool, attr)
    }
    fn cuMemPoolTrimTo(&mut self, _io: &mut Io<'_>, pool: u64, keep: u64) -> R<()> {
        self.ready()?;
        self.mem_pool_trim(pool, keep)
    }
    fn stream_wait_value(
        &mut self,
        _io: &mut Io<'_>,
        stream: u64,
        addr: u64,
        value: u64,
        flags: u32,
        wide: bool,
    ) -> R<()> {
        self.ready()?;
        self.stream_memory_op(false, stream, addr, value, flags, wide)
    }
    fn stream_write_value(
        &mut self,
        _io: &mut Io<'_>,
        stream: u64,
        addr: u64,
        value: u64,
        flags: u32,
        wide: bool,
    ) -> R<()> {
        self.ready()?;
        self.stream_memory_op(true, stream, addr, value, flags, wide)
    }
    fn cuStreamGetId(&mut self, _io: &mut Io<'_>, stream: u64) -> R<u64> {
        self.ready()?;
        self.stream_id(stream)
    }
    fn stream_attribute(&mut self, _io: &mut Io<'_>, stream: u64, attr: u32) -> R<Vec<u8>> {
        self.ready()?;
        self.stream_attribute(stream, attr)
    }
    fn cuStreamSetAttribute(&mut self, _io: &mut Io<'_>, stream: u64, attr: LaunchAttr) -> R<()> {
        self.ready()?;
        self.set_stream_attribute(stream, &attr)
    }
    fn cuStreamCopyAttributes(&mut self, _io: &mut Io<'_>, dst: u64, src: u64) -> R<()> {
        self.ready()?;
        let (d, s) = (self.h.stream(dst)?, self.h.stream(src)?);
        cu!(self.lib, cuStreamCopyAttributes(d, s))
    }
    fn graph_nodes(&mut self, _io: &mut Io<'_>, graph: u64) -> R<Vec<u64>> {
        self.ready()?;
        self.graph_nodes(graph)
    }
    fn cuGraphUpload(&mut self, _io: &mut Io<'_>, exec: u64, stream: u64) -> R<()> {
        self.ready()?;
        let (x, s) = (self.h.exec(exec)?, self.h.stream(stream)?);
        cu!(self.lib, cuGraphUpload(x, s))
    }
    fn launch_host_func(&mut self, _io: &mut Io<'_>, stream: u64, id: u64, callback: bool) -> R<()> {
        self.ready()?;
        self.launch_host_func(stream, id, callback)
    }
    fn cuTensorMapEncodeTiled(
        &mut self,
        _io: &mut Io<'_>,
        data_type: u32,
        rank: u32,
        address: u64,
        dims: Vec<u64>,
        strides: Vec<u64>,
        box_dim: Vec<u32>,
        element_strides: Vec<u32>,
        interleave: u32,
        swizzle: u32,
        l2: u32,
        oob: u32,
    ) -> R<[u64; 16]> {
        self.ready()?;
        let m = super::tensormap::Modes { interleave, swizzle, l2, oob };
        self.tensor_map_tiled(data_type, rank, address, &dims, &strides, &box_dim, &element_strides, m)
    }
    fn cuTensorMapEncodeIm2col(
        &mut self,
        _io: &mut Io<'_>,
        data_type: u32,
        rank: u32,
        address: u64,
        dims: Vec<u64>,
        strides: Vec<u64>,
        lower: Vec<i32>,
        upper: Vec<i32>,
        channels: u32,
        pixels: u32,
        element_strides: Vec<u32>,
        interleave: u32,
        swizzle: u32,
        l2: u32,
        oob: u32,
    ) -> R<[u64; 16]> {
        self.ready()?;
        let m = super::tensormap::Modes { interleave, swizzle, l2, oob };
        let corners = (&lower[..], &upper[..]);
        self.tensor_map_im2col(
            data_type,
            rank,
            address,
            &dims,
            &strides,
            corners,
            channels,
            pixels,
            &element_strides,
            m,
        )
    }
    fn cuTensorMapEncodeIm2colWide(
        &mut self,
        _io: &mut Io<'_>,
        data_type: u32,
        rank: u32,
        address: u64,
        dims: Vec<u64>,
        strides: Vec<u64>,
        lower: i32,
        upper: i32,
        channels: u32,
        pixels: u32,
        element_strides: Vec<u32>,
        interleave: u32,
        mode: u32,
        swizzle: u32,
        l2: u32,
        oob: u32,
    ) -> R<[u64; 16]> {
        self.ready()?;
        let m = super::tensormap::Modes { interleave, swizzle, l2, oob };
        let (d, s, e) = (&dims[..], &strides[..], &element_strides[..]);
        self.tensor_map_im2col_wide(data_type, rank, address, d, s, (lower, upper), channels, pixels, e, mode, m)
    }
    fn cuTensorMapReplaceAddress(&mut self, _io: &mut Io<'_>, map: [u64; 16], address: u64) -> R<[u64; 16]> {
        self.ready()?;
        self.tensor_map_replace_address(map, address)
    }
    fn cuIpcGetMemHandle(&mut self, _io: &mut Io<'_>, dptr: u64) -> R<Vec<u8>> {
        self.ready()?;
        self.ipc_get_mem_handle(dptr)
    }
    fn cuIpcOpenMemHandle_v2(&mut self, _io: &mut Io<'_>, handle: Vec<u8>, flags: u32) -> R<(u64, u64)> {
        self.ready()?;
        self.ipc_open_mem_handle(&handle, flags)
    }
    fn cuIpcCloseMemHandle(&mut self, _io: &mut Io<'_>, dptr: u64) -> R<()> {
        self.ready()?;
        self.ipc_close_mem_handle(dptr)
    }
    fn cuIpcGetEventHandle(&mut self, _io: &mut Io<'_>, event: u64) -> R<Vec<u8>> {
        self.ready()?;
        self.ipc_get_event_handle(event)
    }
    fn cuIpcOpenEventHandle(&mut self, _io: &mut Io<'_>, handle: Vec<u8>) -> R<u64> {
        self.ready()?;
        self.ipc_open_event_handle(&handle)
    }
    fn cuMemPoolCreate(&mut self, _io: &mut Io<'_>, props: Vec<u8>) -> R<u64> {
        self.ready()?;
        self.mem_pool_create(&props)
    }
    fn cuMemPoolDestroy(&mut self, _io: &mut Io<'_>, pool: u64) -> R<()> {
        self.ready()?;
        self.mem_pool_destroy(pool)
    }
    fn cuMemAllocFromPoolAsync(&mut self, _io: &mut Io<'_>, bytesize: u64, pool: u64, stream: u64) -> R<u64> {
        self.ready()?;
        self.mem_alloc_from_pool(bytesize, pool, stream)
    }
    fn cuMemAllocPitch_v2(&mut self, _io: &mut Io<'_>, width: u64, height: u64, elem: u32) -> R<(u64, u64)> {
        self.ready()?;
        self.mem_alloc_pitch(width, height, elem)
    }
    fn cuMemFree_v2(&mut self, _io: &mut Io<'_>, dptr: u64) -> R<()> {
        self.ready()?;
        self.mem_free(dptr)
    }
    fn cuMemAllocAsync(&mut self, _io: &mut Io<'_>, bytesize: u64, stream: u64) -> R<u64> {
        self.ready()?;
        self.mem_alloc_async(bytesize, stream)
    }
    fn cuMemFreeAsync(&mut self, _io: &mut Io<'_>, dptr: u64, stream: u64) -> R<()> {
        self.ready()?;
        self.mem_free_async(dptr, stream)
    }
    fn cuMemcpyHtoD_v2(&mut self, io: &mut Io<'_>, dst: u64) -> R<()> {
        self.ready()?;
        self.htod(dst, io.bulk_in)
    }
    fn cuMemcpyHtoDAsync_v2(&mut self, io: &mut Io<'_>, dst: u64, stream: u64) -> R<()> {
        self.ready()?;
        self.htod_async(dst, HostBytes::Plain(io.bulk_in), stream)
    }
    fn htod_runs(&mut self, io: &mut Io<'_>, dst: u64, stream: u64, len: u64) -> R<()> {
        self.ready()?;
        // One word over the whole copy: the GPU fills it, with no bytes staged on the host
        // (a single thread filling 4 MiB of staging ran slower than lanes landing them).
        match protocol::runs::single_word(io.bulk_in, len) {
            Some(w) if w == [w[0]; 4] => return self.memset_any(dst, w[0].into(), 1, len, 1, 0, stream),
            Some(w) if dst.is_multiple_of(4) => {
                return self.memset_any(dst, u32::from_le_bytes(w), 4, len / 4, 1, 0, stream);
            }
            _ => {}
        }
        let len = usize::try_from(len).map_err(|_| super::INVALID_VALUE)?;
        self.htod_async(dst, HostBytes::Runs(io.bulk_in, len), stream)
    }
    fn htod_cached(
        &mut self,
        _io: &mut Io<'_>,
        dst: u64,
        stream: u64,
        len: u64,
        chunk: u64,
        hashes: Vec<[u8; 32]>,
    ) -> R<Vec<bool>> {
        self.ready()?;
        self.ranges.check(dst, len)?;
        let store = crate::blobs::blobs();
        crate::blobs::offer(store, len, chunk, &hashes, super::INVALID_VALUE, |at, found| {
            match self.htod_async(dst + at, HostBytes::Blob(found), stream) {
                Err(super::memory::BLOB_MISMATCH) => Ok(false),
                r => r.map(|()| true),
            }
        })
    }
    fn htod_keep(&mut self, io: &mut Io<'_>, dst: u64, stream: u64) -> R<()> {
        self.ready()?;
        self.htod_async(dst, HostBytes::Plain(io.bulk_in), stream)?;
        crate::blobs::blobs().keep(io.bulk_in);
        Ok(())
    }
    fn pages_open(&mut self, _io: &mut Io<'_>, piece: u32, slots: u32) -> R<u32> {
        Ok(self.pages.open(piece, slots, crate::pages::cap()))
    }
    fn htod_pages(&mut self, io: &mut Io<'_>, dst: u64, stream: u64, len: u64, pieces: Vec<Piece>) -> R<()> {
        // Kept first, whatever becomes of the copy: the client counts on it.
        let n = usize::try_from(len).map_err(|_| super::INVALID_VALUE)?;
        let starts = self.pages.keep(&pieces, io.bulk_in, n).map_err(|_| super::INVALID_VALUE)?;
        self.ready()?;
        self.ranges.check(dst, len)?;
        // Out of `self` while the copy borrows it.
        let store = std::mem::take(&mut self.pages);
        let a = crate::pages::Assembly { store: &store, pieces: &pieces, starts: &starts, bulk: io.bulk_in, len: n };
        let r = self.htod_async(dst, HostBytes::Pages(a), stream);
        self.pages = store;
        r
    }
    fn cuMemcpyDtoH_v2(&mut self, io: &mut Io<'_>, src: u64, size: u64) -> R<()> {
        self.ready()?;
        self.dtoh(io.bulk_out, src, size, None)
    }
    fn cuMemcpyDtoHAsync_v2(&mut self, io: &mut Io<'_>, src: u64, size: u64, stream: u64) -> R<()> {
        self.ready()?;
        self.dtoh(io.bulk_out, src, size, Some(stream))
    }
    fn cuMemcpyDtoD_v2(&mut self, _io: &mut Io<'_>, dst: u64, src: u64, size: u64) -> R<()> {
        self.ready()?;
        self.dtod(dst, src, size, None)
    }
    fn cuMemcpyDtoDAsync_v2(&mut self, _io: &mut Io<'_>, dst: u64, src: u64, size: u64, stream: u64) -> R<()> {
        self.ready()?;
        self.dtod(dst, src, size, Some(stream))
    }
    fn cuMemcpyPeerAsync(
        &mut self,
        _io: &mut Io<'_>,
        dst: u64,
        dst_ctx: u64,
        src: u64,
        src_ctx: u64,
        size: u64,
        stream: u64,
    ) -> R<()> {
        self.ready()?;
        self.peer_async(dst, dst_ctx, src, src_ctx, size, stream)
    }
    fn cuMemcpy2D_v2(&mut self, io: &mut Io<'_>, copy: Copy2D, stream: u64) -> R<()> {
        self.ready()?;
        self.copy_2d(&copy, stream, io.bulk_in, io.bulk_out)
    }
    fn cuMemcpy2DAsync_v2(&mut self, io: &mut Io<'_>, copy: Copy2D, stream: u64) -> R<()> {
        self.ready()?;
        self.copy_2d_async(&copy, stream, io.bulk_in)
    }
    fn shm_attached(&mut self, _io: &mut Io<'_>) -> R<u64> {
        self.shm_len()
    }
    fn shm_htod(&mut self, _io: &mut Io<'_>, dst: u64, offset: u64, len: u64, stream: u64, ticket: u64) -> R<()> {
        self.ready()?;
        self.shm_copy(true, dst, offset, len, stream, ticket)
    }
    fn shm_dtoh(&mut self, _io: &mut Io<'_>, src: u64, offset: u64, len: u64, stream: u64, ticket: u64) -> R<()> {
        self.ready()?;
        self.shm_copy(false, src, offset, len, stream, ticket)
    }
    fn shm_wait(&mut self, _io: &mut Io<'_>, ticket: u64) -> R<()> {
        self.ready()?;
        self.shm_wait_ticket(ticket)
    }
    fn memset(
        &mut self,
        _io: &mut Io<'_>,
        dst: u64,
        value: u32,
        elem: u8,
        width: u64,
        height: u64,
        pitch: u64,
        stream: u64,
    ) -> R<()> {
        self.ready()?;
        self.memset_any(dst, value, elem, width, height, pitch, stream)
    }

    // ---------- virtual memory management
    fn cuMemAddressReserve(&mut self, _io: &mut Io<'_>, size: u64, align: u64, addr: u64, flags: u64) -> R<u64> {
        self.ready()?;
        self.address_reserve(size, align, addr, flags)
    }
    fn cuMemAddressFree(&mut self, _io: &mut Io<'_>, ptr: u64, size: u64) -> R<()> {
        self.ready()?;
        self.address_free(ptr, size)
    }
    fn cuMemCreate(&mut self, _io: &mut Io<'_>, size: u64, prop: Vec<u8>, flags: u64) -> R<u64> {
        self.ready()?;
        self.mem_create(size, &prop, flags)
    }
    fn cuMemRetainAllocationHandle(&mut self, _io: &mut Io<'_>, ptr: u64) -> R<u64> {
        self.ready()?;
        self.retain_allocation(ptr)
    }
    fn cuMemGetAllocationPropertiesFromHandle(&mut self, _io: &mut Io<'_>, handle: u64) -> R<Vec<u8>> {
        self.ready()?;
        self.allocation_properties(handle)
    }
    fn cuMemRelease(&mut self, _io: &mut Io<'_>, handle: u64) -> R<()> {
        self.ready()?;
        self.mem_release(handle)
    }
    fn cuMemMap(&mut self, _io: &mut Io<'_>, ptr: u64, size: u64, offset: u64, handle: u64, flags: u64) -> R<()> {
        self.ready()?;
        self.mem_map(ptr, size, offset, handle, flags)
    }
    fn cuMemUnmap(&mut self, _io: &mut Io<'_>, ptr: u64, size: u64) -> R<()> {
        self.ready()?;
        self.mem_unmap(ptr, size)
    }
    fn cuMemSetAccess(&mut self, _io: &mut Io<'_>, ptr: u64, size: u64, desc: Vec<u8>, count: u64) -> R<()> {
        self.ready()?;
        self.mem_set_access(ptr, size, &desc, count)
    }
    fn cuMemGetAllocationGranularity(&mut self, _io: &mut Io<'_>, prop: Vec<u8>, option: u32) -> R<u64> {
        self.ready()?;
        self.allocation_granularity(&prop, option)
    }

    // ---------- modules and kernels
    fn module_load(&mut self, io: &mut Io<'_>, hash: [u8; 32], kind: u8, jit: Vec<(u32, u64)>) -> R<u64> {
        self.ready()?;
        self.load_module(io.bulk_in, &hash, kind, &jit)
    }
    fn cuModuleUnload(&mut self, _io: &mut Io<'_>, module: u64) -> R<()> {
        self.ready()?;
        self.module_unload(module)
    }
    fn cuModuleGetFunction(&mut self, _io: &mut Io<'_>, module: u64, name: String) -> R<FuncInfo> {
        self.ready()?;
        self.module_get_function(module, &name)
    }
    fn cuModuleGetGlobal_v2(&mut self, _io: &mut Io<'_>, module: u64, name: String) -> R<(u64, u64)> {
        self.ready()?;
        self.module_get_global(module, &name)
    }
    fn cuLibraryGetKernel(&mut self, _io: &mut Io<'_>, library: u64, name: String) -> R<FuncInfo> {
        self.ready()?;
        self.library_get_kernel(library, &name)
    }
    fn tools_context_query(&mut self, _io: &mut Io<'_>, selector: u64, out: [u8; 8]) -> R<[u8; 8]> {
        self.ready()?;
        self.tools_context_query(selector, out)
    }
    fn module_functions(&mut self, _io: &mut Io<'_>, module: u64) -> R<Vec<(String, FuncInfo)>> {
        self.ready()?;
        self.module_functions(module)
    }
    fn cuLibraryGetModule(&mut self, _io: &mut Io<'_>, library: u64) -> R<u64> {
        self.ready()?;
        self.library_get_module(library)
    }
    fn cuLibraryGetGlobal(&mut self, _io: &mut Io<'_>, library: u64, name: String) -> R<(u64, u64)> {
        self.ready()?;
        self.library_get_global(library, &name)
    }
    fn cuLibraryUnload(&mut self, _io: &mut Io<'_>, library: u64) -> R<()> {
        self.ready()?;
        self.library_unload(library)
    }
    fn cuFuncGetAttribute(&mut self, _io: &mut Io<'_>, attrib: i32, func: u64) -> R<i32> {
        self.ready()?;
        self.func_get_attribute(attrib, func)
    }
    fn cuLinkCreate_v2(&mut self, _io: &mut Io<'_>, jit: Vec<(u32, u64)>) -> R<u64> {
        self.ready()?;
        self.link_create(&jit)
    }
    fn link_add(&mut self, io: &mut Io<'_>, link: u64, kind: u32, name: String, jit: Vec<(u32, u64)>) -> R<()> {
        self.ready()?;
        self.link_add(link, kind, &name, io.bulk_in, &jit)
    }
    fn jit_out(&mut self, _io: &mut Io<'_>, link: u64) -> R<protocol::jit::JitOut> {
        self.ready()?;
        self.jit_result(link)
    }
    fn cuLinkComplete(&mut self, _io: &mut Io<'_>, link: u64) -> R<u64> {
        self.ready()?;
        self.link_complete(link)
    }
    fn link_image(&mut self, io: &mut Io<'_>, link: u64, size: u64) -> R<()> {
        self.ready()?;
        self.link_image(link, size, io.bulk_out)
    }
    fn cuLinkDestroy(&mut self, _io: &mut Io<'_>, link: u64) -> R<()> {
        self.ready()?;
        self.link_destroy(link)
    }
    fn cuFuncGetName(&mut self, _io: &mut Io<'_>, func: u64) -> R<String> {
        self.ready()?;
        self.func_get_name(func)
    }
    fn func_attributes(&mut self, _io: &mut Io<'_>, func: u64) -> R<Vec<i32>> {
        self.ready()?;
        self.all_func_attributes(func)
    }
    fn cuFuncSetAttribute(&mut self, _io: &mut Io<'_>, func: u64, attrib: i32, value: i32) -> R<()> {
        self.ready()?;
        self.func_set_attribute(func, attrib, value)
    }
    fn cuFuncSetCacheConfig(&mut self, _io: &mut Io<'_>, func: u64, config: u32) -> R<()> {
        self.ready()?;
        self.func_set_cache_config(func, config)
    }
    fn cuOccupancyMaxActiveBlocksPerMultiprocessorWithFlags(
        &mut self,
        _io: &mut Io<'_>,
        func: u64,
        block: i32,
        smem: u64,
        flags: u32,
    ) -> R<i32> {
        self.ready()?;
        self.occupancy(func, block, smem, flags)
    }
    fn cuOccupancyMaxActiveClusters(
        &mut self,
        _io: &mut Io<'_>,
        func: u64,
        grid: [u32; 3],
        block: [u32; 3],
        smem: u32,
        attrs: Vec<LaunchAttr>,
    ) -> R<i32> {
        self.ready()?;
        self.clusters(func, grid, block, smem, &attrs, false)
    }
    fn cuOccupancyMaxPotentialClusterSize(
        &mut self,
        _io: &mut Io<'_>,
        func: u64,
        grid: [u32; 3],
        block: [u32; 3],
        smem: u32,
        attrs: Vec<LaunchAttr>,
    ) -> R<i32> {
        self.ready()?;
        self.clusters(func, grid, block, smem, &attrs, true)
    }
    fn cuOccupancyAvailableDynamicSMemPerBlock(
        &mut self,
        _io: &mut Io<'_>,
        func: u64,
        blocks: i32,
        block: i32,
    ) -> R<u64> {
        self.ready()?;
        self.available_smem(func, blocks, block)
    }
    fn cuLaunchKernel(
        &mut self,
        io: &mut Io<'_>,
        func: u64,
        grid: [u32; 3],
        block: [u32; 3],
        smem: u32,
        stream: u64,
    ) -> R<()> {
        self.ready()?;
        self.launch(func, grid, block, smem, stream, io.bulk_in)
    }
    fn cuLaunchKernelEx(
        &mut self,
        io: &mut Io<'_>,
        func: u64,
        grid: [u32; 3],
        block: [u32; 3],
        smem: u32,
        stream: u64,
        attrs: Vec<LaunchAttr>,
    ) -> R<()> {
        self.ready()?;
        self.launch_ex(func, grid, block, smem, stream, &attrs, io.bulk_in)
    }

    // ---------- streams and events
    fn cuStreamCreate(&mut self, _io: &mut Io<'_>, flags: u32) -> R<u64> {
        self.ready()?;
        self.stream_create(flags, None)
    }
    fn cuStreamCreateWithPriority(&mut self, _io: &mut Io<'_>, flags: u32, priority: i32) -> R<u64> {
        self.ready()?;
        self.stream_create(flags, Some(priority))
    }
    fn cuStreamDestroy_v2(&mut self, _io: &mut Io<'_>, stream: u64) -> R<()> {
        self.ready()?;
        self.stream_destroy(stream)
    }
    fn cuStreamSynchronize(&mut self, _io: &mut Io<'_>, stream: u64) -> R<()> {
        self.ready()?;
        self.stream_synchronize(stream)
    }
    fn stream_barrier(&mut self, _io: &mut Io<'_>, stream: u64) -> R<()> {
        self.ready()?;
        self.defer_barrier(stream)
    }
    fn cuStreamQuery(&mut self, _io: &mut Io<'_>, stream: u64) -> R<()> {
        self.ready()?;
        self.stream_query(stream)
    }
    fn cuStreamWaitEvent(&mut self, _io: &mut Io<'_>, stream: u64, event: u64, flags: u32) -> R<()> {
        self.ready()?;
        self.stream_wait_event(stream, event, flags)
    }
    fn cuStreamBeginCapture_v2(&mut self, _io: &mut Io<'_>, stream: u64, mode: u32) -> R<()> {
        self.ready()?;
        self.begin_capture(stream, mode)
    }
    fn cuStreamEndCapture(&mut self, _io: &mut Io<'_>, stream: u64) -> R<u64> {
        self.ready()?;
        self.end_capture(stream)
    }
    fn cuStreamIsCapturing(&mut self, _io: &mut Io<'_>, stream: u64) -> R<u32> {
        self.ready()?;
        self.stream_is_capturing(stream)
    }
    fn cuStreamGetCaptureInfo(&mut self, _io: &mut Io<'_>, stream: u64) -> R<(u32, u64)> {
        self.ready()?;
        self.capture_info(stream)
    }
    fn cuStreamGetPriority(&mut self, _io: &mut Io<'_>, stream: u64) -> R<i32> {
        self.ready()?;
        self.stream_priority(stream)
    }
    fn cuStreamGetFlags(&mut self, _io: &mut Io<'_>, stream: u64) -> R<u32> {
        self.ready()?;
        self.stream_flags(stream)
    }
    fn cuThreadExchangeStreamCaptureMode(&mut self, _io: &mut Io<'_>, mode: u32) -> R<u32> {
        self.ready()?;
        self.exchange_capture_mode(mode)
    }
    fn cuEventCreate(&mut self, _io: &mut Io<'_>, flags: u32) -> R<u64> {
        self.ready()?;
        self.event_create(flags)
    }
    fn cuEventDestroy_v2(&mut self, _io: &mut Io<'_>, event: u64) -> R<()> {
        self.ready()?;
        self.event_destroy(event)
    }
    fn cuEventRecord(&mut self, _io: &mut Io<'_>, event: u64, stream: u64) -> R<()> {
        self.ready()?;
        self.event_record(event, stream, None)
    }
    fn cuEventRecordWithFlags(&mut self, _io: &mut Io<'_>, event: u64, stream: u64, flags: u32) -> R<()> {
        self.ready()?;
        self.event_record(event, stream, Some(flags))
    }
    fn cuEventSynchronize(&mut self, _io: &mut Io<'_>, event: u64) -> R<()> {
        self.ready()?;
        self.event_synchronize(event)
    }
    fn cuEventQuery(&mut self, _io: &mut Io<'_>, event: u64) -> R<()> {
        self.ready()?;
        self.event_query(event)
    }
    fn cuEventElapsedTime(&mut self, _io: &mut Io<'_>, start: u64, end: u64) -> R<f32> {
        self.ready()?;
        self.event_elapsed(start, end)
    }

    // ---------- graphs
    fn cuGraphCreate(&mut self, _io: &mut Io<'_>, flags: u32) -> R<u64> {
        self.ready()?;
        self.graph_create(flags)
    }
    fn cuGraphInstantiateWithFlags(&mut self, _io: &mut Io<'_>, graph: u64, flags: u64) -> R<u64> {
        self.ready()?;
        self.graph_instantiate(graph, flags)
    }
    fn cuGraphLaunch(&mut self, _io: &mut Io<'_>, exec: u64, stream: u64) -> R<()> {
        self.ready()?;
        self.graph_launch(exec, stream)
    }
    fn htod_captured(&mut self, io: &mut Io<'_>, dst: u64, stream: u64, host: u64) -> R<()> {
        self.ready()?;
        self.htod_captured(dst, io.bulk_in, stream, host)
    }
    fn captured_copies(&mut self, _io: &mut Io<'_>, graph: u64) -> R<Vec<(u64, u64, u64)>> {
        self.ready()?;
        self.h.graph(graph)?;
        Ok(self.captured.of_graph(graph))
    }
    fn refresh_captured(&mut self, io: &mut Io<'_>, id: u64) -> R<()> {
        self.ready()?;
        self.refresh_captured(id, io.bulk_in)
    }
    fn cuGraphExecUpdate_v2(&mut self, _io: &mut Io<'_>, exec: u64, graph: u64) -> R<u32> {
        self.ready()?;
        self.graph_exec_update(exec, graph)
    }
    fn cuGraphExecDestroy(&mut self, _io: &mut Io<'_>, exec: u64) -> R<()> {
        self.ready()?;
        self.graph_exec_destroy(exec)
    }
    fn cuGraphDestroy(&mut self, _io: &mut Io<'_>, graph: u64) -> R<()> {
        self.ready()?;
        self.graph_destroy(graph)
    }

    // ---------- cuBLAS (crate::cublas): synchronous calls answer the cuBLAS status in
    // their value; one-way calls leave a failure for the next synchronous call, as a CUDA
    // error (protocol::cublas::deferred_code).
    fn cublasCreate_v2(&mut self, _io: &mut Io<'_>) -> R<(u32, u64)> {
        self.ready()?;
        self.current_device()?;
        Ok(self.cublas.create(self.current))
    }
    fn cublasDestroy_v2(&mut self, _io: &mut Io<'_>, handle: u64) -> R<u32> {
        self.ready()?;
        Ok(self.cublas.destroy(handle))
    }
    fn cublas_set(&mut self, _io: &mut Io<'_>, handle: u64, what: u32, value: u64, size: u64) -> R<()> {
        self.ready()?;
        let h = &self.h;
        self.cublas
            .set(handle, what, value, size, |s| h.stream(s).is_ok())
            .map_err(|s| crate::cublas::deferred("setting", s))
    }
    fn cublas_call(
        &mut self,
        _io: &mut Io<'_>,
        func: u16,
        handle: u64,
        device_scalars: bool,
        args: Vec<u64>,
        scalars: Vec<u8>,
    ) -> R<()> {
        self.ready()?;
        self.cublas
            .call(func, handle, device_scalars, &args, &scalars)
            .map_err(|s| crate::cublas::deferred(crate::cublas::func_name(func), s))
    }
}
