//! The table of forwarded calls. Handles (contexts, streams, events, modules, functions,
//! graphs, cuBLAS handles) are opaque `u64` ids issued by the server; device pointers are
//! real device addresses. Stream 0 is the legacy default stream, 1 `CU_STREAM_LEGACY`,
//! 2 `CU_STREAM_PER_THREAD`.

use crate::jit::JitOut;
use serde::{Deserialize, Serialize};

/// One side of a 2D copy: device memory at `ptr`, or (for the host side) the bulk bytes,
/// which travel packed (`pitch == width`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Copy2D {
    pub src_device: Option<u64>,
    pub src_x: u64,
    pub src_y: u64,
    pub src_pitch: u64,
    pub dst_device: Option<u64>,
    pub dst_x: u64,
    pub dst_y: u64,
    pub dst_pitch: u64,
    pub width: u64,
    pub height: u64,
}

/// A function as the server's driver sees it: its handle and its parameter layout
/// (offset, size) from `cuFuncGetParamInfo`, so launches can pack `kernelParams`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FuncInfo {
    pub handle: u64,
    pub params: Vec<(u32, u32)>,
}

/// A `CUlaunchAttribute`: its id and the raw bytes of its value union.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LaunchAttr {
    pub id: u32,
    pub value: Vec<u8>,
}

/// Where one piece of an `htod_pages` copy comes from (`protocol::pages`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Piece {
    /// Sent in the frame's bulk, not kept.
    Sent,
    /// Sent in the frame's bulk, and kept in this slot of the session's page store.
    Keep(u32),
    /// The bytes kept in this slot.
    Kept(u32),
}

/// Result of an NVML call: the NVML return code and an auxiliary count.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct NvmlOut {
    pub ret: u32,
    pub aux: u64,
}

crate::api! {
    // ---------- NVML: the shim names the function by its index in the NVML table;
    // bulk_in is the caller's output buffer (versioned structs carry their version in it),
    // bulk_out what the real call wrote there.
    sync nvml_call(func: u16, device: u32, args: [u64; 3]) -> NvmlOut;

    // ---------- contexts
    sync cuDevicePrimaryCtxRetain(dev: i32) -> u64;
    sync cuDevicePrimaryCtxRelease_v2(dev: i32) -> ();
    sync cuDevicePrimaryCtxReset_v2(dev: i32) -> ();
    sync cuDevicePrimaryCtxSetFlags_v2(dev: i32, flags: u32) -> ();
    sync cuDevicePrimaryCtxGetState(dev: i32) -> (u32, i32);
    sync cuCtxCreate_v2(flags: u32, dev: i32) -> u64;
    sync cuCtxDestroy_v2(ctx: u64) -> ();
    sync cuCtxSynchronize() -> ();
    /// `cuCtxSynchronize` answered by the client, as `stream_barrier`.
    oneway ctx_barrier() -> ();
    sync cuCtxSetLimit(limit: u32, value: u64) -> ();
    sync cuCtxGetLimit(limit: u32) -> u64;
    sync cuCtxGetStreamPriorityRange() -> (i32, i32);
    sync cuCtxEnablePeerAccess(peer: u64, flags: u32) -> ();
    sync cuCtxDisablePeerAccess(peer: u64) -> ();
    sync cuDeviceCanAccessPeer(dev: i32, peer: i32) -> i32;

    // ---------- memory
    sync cuMemGetInfo_v2() -> (u64, u64);
    sync cuMemAlloc_v2(bytesize: u64) -> u64;
    sync cuMemAllocPitch_v2(width: u64, height: u64, elem: u32) -> (u64, u64);
    sync cuMemFree_v2(dptr: u64) -> ();
    sync cuMemAllocAsync(bytesize: u64, stream: u64) -> u64;
    oneway cuMemFreeAsync(dptr: u64, stream: u64) -> ();
    /// Stream-ordered pools: a device's default pool (`current` false) or its current one
    /// (true). Pools the application creates are not forwarded.
    sync mem_pool_of(dev: i32, current: bool) -> u64;
    /// `value`: the attribute's value, whether the driver keeps it as an int or a 64-bit one.
    sync cuMemPoolSetAttribute(pool: u64, attr: u32, value: u64) -> ();
    sync cuMemPoolGetAttribute(pool: u64, attr: u32) -> u64;
    sync cuMemPoolTrimTo(pool: u64, keep: u64) -> ();
    /// A pool of the application's (`props`: a `CUmemPoolProps` as raw bytes), on a device.
    sync cuMemPoolCreate(props: Vec<u8>) -> u64;
    sync cuMemPoolDestroy(pool: u64) -> ();
    sync cuMemAllocFromPoolAsync(bytesize: u64, pool: u64, stream: u64) -> u64;
    /// bulk_in: the bytes to write at `dst`.
    sync cuMemcpyHtoD_v2(dst: u64) -> ();
    /// bulk_in: the bytes to write at `dst`, staged by the server before the copy is queued.
    oneway cuMemcpyHtoDAsync_v2(dst: u64, stream: u64) -> ();
    /// `cuMemcpyHtoDAsync_v2` whose bytes (bulk_in) are packed as runs of a word
    /// (`protocol::runs`: attention masks), `len` bytes once unpacked.
    oneway htod_runs(dst: u64, stream: u64, len: u64) -> ();
    /// A host-to-device copy of `len` bytes offered by content (`server::blobs`): chunk `i`
    /// (`chunk` bytes, the last one shorter) has blake3 hash `hashes[i]`. The server queues
    /// the chunks it holds, from its own memory, and answers which; the client sends the
    /// others with `htod_keep`.
    sync htod_cached(dst: u64, stream: u64, len: u64, chunk: u64, hashes: Vec<[u8; 32]>) -> Vec<bool>;
    /// `cuMemcpyHtoDAsync_v2` (same arguments, bulk_in the bytes) whose bytes the server
    /// also keeps by their hash for later `htod_cached` offers.
    oneway htod_keep(dst: u64, stream: u64) -> ();
    /// Opens this session's page store (`protocol::pages`): up to `slots` pieces of `piece`
    /// bytes; answers how many slots the server grants (0: none).
    sync pages_open(piece: u32, slots: u32) -> u32;
    /// `cuMemcpyHtoDAsync_v2` of `len` bytes in pieces of the store's size (the last may be
    /// shorter), each sent or kept (`pieces`); bulk_in: the sent pieces, in order.
    oneway htod_pages(dst: u64, stream: u64, len: u64, pieces: Vec<Piece>) -> ();
    /// bulk_out: `size` bytes from `src`.
    sync cuMemcpyDtoH_v2(src: u64, size: u64) -> ();
    /// bulk_out: `size` bytes from `src`, after the copy completed on `stream`.
    sync cuMemcpyDtoHAsync_v2(src: u64, size: u64, stream: u64) -> ();
    oneway cuMemcpyDtoD_v2(dst: u64, src: u64, size: u64) -> ();
    oneway cuMemcpyDtoDAsync_v2(dst: u64, src: u64, size: u64, stream: u64) -> ();
    oneway cuMemcpyPeerAsync(dst: u64, dst_ctx: u64, src: u64, src_ctx: u64, size: u64, stream: u64) -> ();
    /// Host sides travel packed as bulk (in for host-to-device, out for device-to-host).
    sync cuMemcpy2D_v2(copy: Copy2D, stream: u64) -> ();
    oneway cuMemcpy2DAsync_v2(copy: Copy2D, stream: u64) -> ();
    /// Every `cuMemsetD*` form: `elem` is 1, 2 or 4 bytes; 1D when `height == 1`.
    oneway memset(dst: u64, value: u32, elem: u8, width: u64, height: u64, pitch: u64, stream: u64) -> ();

    // ---------- the shared-memory data plane (`shm:` addresses, `transport::Segment`): host
    // memory named by its offset in the segment the client passed before the handshake.
    /// The size of this session's segment, once the server has mapped it.
    sync shm_attached() -> u64;
    /// Host to device from the segment at `offset`. The driver reads the segment after this
    /// returns, so the stream stays busy until synchronized. A non-zero `ticket` (staging
    /// ring chunks) names the copy for `shm_wait`.
    oneway shm_htod(dst: u64, offset: u64, len: u64, stream: u64, ticket: u64) -> ();
    /// Device to host into the segment at `offset`: the bytes are there once the stream is
    /// synchronized (or `shm_wait(ticket)` answered).
    oneway shm_dtoh(src: u64, offset: u64, len: u64, stream: u64, ticket: u64) -> ();
    /// Wait until the ring copies of every ticket up to `ticket` have completed.
    sync shm_wait(ticket: u64) -> ();

    // ---------- virtual memory management (CUmemAllocationProp / CUmemAccessDesc as raw bytes)
    sync cuMemAddressReserve(size: u64, align: u64, addr: u64, flags: u64) -> u64;
    sync cuMemAddressFree(ptr: u64, size: u64) -> ();
    sync cuMemCreate(size: u64, prop: Vec<u8>, flags: u64) -> u64;
    sync cuMemRelease(handle: u64) -> ();
    /// The allocation mapped at `ptr`, with one more reference to it (released by `cuMemRelease`).
    sync cuMemRetainAllocationHandle(ptr: u64) -> u64;
    /// An allocation's properties: `CUmemAllocationProp`'s bytes, its location the server's.
    sync cuMemGetAllocationPropertiesFromHandle(handle: u64) -> Vec<u8>;
    sync cuMemMap(ptr: u64, size: u64, offset: u64, handle: u64, flags: u64) -> ();
    sync cuMemUnmap(ptr: u64, size: u64) -> ();
    sync cuMemSetAccess(ptr: u64, size: u64, desc: Vec<u8>, count: u64) -> ();
    sync cuMemGetAllocationGranularity(prop: Vec<u8>, option: u32) -> u64;

    // ---------- modules and kernels. Images are offered by content hash first; the server
    // answers CUDA_ERROR_FILE_NOT_FOUND when it has not seen them, and the client resends
    // with the image as bulk_in. `jit`: the application's JIT options (`protocol::jit`).
    sync module_load(hash: [u8; 32], kind: u8, jit: Vec<(u32, u64)>) -> u64;
    sync cuModuleUnload(module: u64) -> ();
    sync cuModuleGetFunction(module: u64, name: String) -> FuncInfo;
    sync cuModuleGetGlobal_v2(module: u64, name: String) -> (u64, u64);
    sync cuLibraryGetKernel(library: u64, name: String) -> FuncInfo;
    /// A library's module in the current context (how CUDA 12's runtime finds its kernels).
    sync cuLibraryGetModule(library: u64) -> u64;
    /// A library's `__device__` variable in the current context (what NVIDIA's runtime
    /// copies constants to): its address and size.
    sync cuLibraryGetGlobal(library: u64, name: String) -> (u64, u64);
    sync cuLibraryUnload(library: u64) -> ();
    /// Every function of a module with its name, in the driver's order
    /// (cuModuleEnumerateFunctions; what cuFFT walks through the driver's table `6E163FBE…`).
    sync module_functions(module: u64) -> Vec<(String, FuncInfo)>;
    /// The driver's private tools-context table (`21318C60…`), slots 51 then 39, in the current
    /// context: what NVIDIA's cuBLAS asks before its first GEMM. `out`: the 8 bytes slot 39
    /// writes into, as the caller had them.
    sync tools_context_query(selector: u64, out: [u8; 8]) -> [u8; 8];
    // ---------- JIT linking (numba links every kernel; CuPy with -rdc), with the
    // application's JIT options (`protocol::jit`).
    /// A link in the current context.
    sync cuLinkCreate_v2(jit: Vec<(u32, u64)>) -> u64;
    /// bulk_in: one input's bytes, of `CUjitInputType` `kind`, named `name` in messages.
    sync link_add(link: u64, kind: u32, name: String, jit: Vec<(u32, u64)>) -> ();
    /// The logs and option values a JIT call left: link `link`'s (its options from
    /// `cuLinkCreate`, written by every call on it), or with 0 the session's last
    /// `module_load` or `link_add` that had options, also when that call failed.
    sync jit_out(link: u64) -> JitOut;
    /// Completes the link: the image's size (its bytes: `link_image`).
    sync cuLinkComplete(link: u64) -> u64;
    /// bulk_out: the completed image, `size` bytes.
    sync link_image(link: u64, size: u64) -> ();
    sync cuLinkDestroy(link: u64) -> ();
    sync cuFuncGetAttribute(attrib: i32, func: u64) -> i32;
    /// A function's (mangled) name, as the driver has it.
    sync cuFuncGetName(func: u64) -> String;
    /// Every `CUfunction_attribute` of `func` at once (cudaFuncGetAttributes).
    sync func_attributes(func: u64) -> Vec<i32>;
    sync cuFuncSetAttribute(func: u64, attrib: i32, value: i32) -> ();
    oneway cuFuncSetCacheConfig(func: u64, config: u32) -> ();
    sync cuOccupancyMaxActiveBlocksPerMultiprocessorWithFlags(func: u64, block: i32, smem: u64, flags: u32) -> i32;
    /// A launch's shape and attributes (cluster dimensions among them), as `cuLaunchKernelEx`.
    sync cuOccupancyMaxActiveClusters(func: u64, grid: [u32; 3], block: [u32; 3], smem: u32, attrs: Vec<LaunchAttr>) -> i32;
    sync cuOccupancyMaxPotentialClusterSize(func: u64, grid: [u32; 3], block: [u32; 3], smem: u32, attrs: Vec<LaunchAttr>) -> i32;
    sync cuOccupancyAvailableDynamicSMemPerBlock(func: u64, blocks: i32, block: i32) -> u64;
    /// bulk_in: the kernel parameters packed at the offsets of `FuncInfo::params`.
    oneway cuLaunchKernel(func: u64, grid: [u32; 3], block: [u32; 3], smem: u32, stream: u64) -> ();
    oneway cuLaunchKernelEx(func: u64, grid: [u32; 3], block: [u32; 3], smem: u32, stream: u64, attrs: Vec<LaunchAttr>) -> ();

    // ---------- streams and events
    sync cuStreamCreate(flags: u32) -> u64;
    sync cuStreamCreateWithPriority(flags: u32, priority: i32) -> u64;
    sync cuStreamDestroy_v2(stream: u64) -> ();
    sync cuStreamSynchronize(stream: u64) -> ();
    /// A synchronize the client answered itself (see `client::idle`): the server waits for
    /// the stream before it reads the next frame, and reports a failure with the next
    /// synchronous call.
    oneway stream_barrier(stream: u64) -> ();
    sync cuStreamQuery(stream: u64) -> ();
    oneway cuStreamWaitEvent(stream: u64, event: u64, flags: u32) -> ();
    /// Stream memory operations (`cuStreamWaitValue32/64`, `cuStreamWriteValue32/64`): a
    /// 4-byte word, or 8 with `wide`, of device memory at `addr`.
    oneway stream_wait_value(stream: u64, addr: u64, value: u64, flags: u32, wide: bool) -> ();
    oneway stream_write_value(stream: u64, addr: u64, value: u64, flags: u32, wide: bool) -> ();
    /// A host function (`cuLaunchHostFunc`, or `cuStreamAddCallback` with `callback`): the
    /// server runs it in stream order by asking the client over the session's host-function
    /// connection to call its function `id` (`protocol::host_funcs`), which must be open.
    oneway launch_host_func(stream: u64, id: u64, callback: bool) -> ();
    sync cuStreamBeginCapture_v2(stream: u64, mode: u32) -> ();
    sync cuStreamEndCapture(stream: u64) -> u64;
    sync cuStreamIsCapturing(stream: u64) -> u32;
    sync cuStreamGetCaptureInfo(stream: u64) -> (u32, u64);
    sync cuStreamGetPriority(stream: u64) -> i32;
    sync cuStreamGetFlags(stream: u64) -> u32;
    sync cuStreamGetId(stream: u64) -> u64;
    /// A stream attribute's value: `CUstreamAttrValue`'s bytes.
    sync stream_attribute(stream: u64, attr: u32) -> Vec<u8>;
    /// The attribute as a launch attribute (a `CUstreamAttrValue` is a `CUlaunchAttributeValue`).
    sync cuStreamSetAttribute(stream: u64, attr: LaunchAttr) -> ();
    sync cuStreamCopyAttributes(dst: u64, src: u64) -> ();
    sync cuThreadExchangeStreamCaptureMode(mode: u32) -> u32;
    sync cuEventCreate(flags: u32) -> u64;
    sync cuEventDestroy_v2(event: u64) -> ();
    // ---------- tensor maps (TMA descriptors of Hopper kernels: Triton, CUTLASS 3): the
    // driver encodes them on the host; the 128 bytes come back. Arrays as the header sizes
    // them by `rank` (strides and corners: two fewer dimensions' worth for im2col).
    sync cuTensorMapEncodeTiled(data_type: u32, rank: u32, address: u64, dims: Vec<u64>, strides: Vec<u64>, box_dim: Vec<u32>, element_strides: Vec<u32>, interleave: u32, swizzle: u32, l2: u32, oob: u32) -> [u64; 16];
    sync cuTensorMapEncodeIm2col(data_type: u32, rank: u32, address: u64, dims: Vec<u64>, strides: Vec<u64>, lower: Vec<i32>, upper: Vec<i32>, channels: u32, pixels: u32, element_strides: Vec<u32>, interleave: u32, swizzle: u32, l2: u32, oob: u32) -> [u64; 16];
    sync cuTensorMapEncodeIm2colWide(data_type: u32, rank: u32, address: u64, dims: Vec<u64>, strides: Vec<u64>, lower: i32, upper: i32, channels: u32, pixels: u32, element_strides: Vec<u32>, interleave: u32, mode: u32, swizzle: u32, l2: u32, oob: u32) -> [u64; 16];
    sync cuTensorMapReplaceAddress(map: [u64; 16], address: u64) -> [u64; 16];
    // ---------- inter-process sharing between sessions of one server (their workers are
    // processes of the GPU host): handles are the driver's 64 bytes.
    sync cuIpcGetMemHandle(dptr: u64) -> Vec<u8>;
    /// The opened memory's address in this session and its allocation's size.
    sync cuIpcOpenMemHandle_v2(handle: Vec<u8>, flags: u32) -> (u64, u64);
    sync cuIpcCloseMemHandle(dptr: u64) -> ();
    /// `event`: created with `CU_EVENT_INTERPROCESS`.
    sync cuIpcGetEventHandle(event: u64) -> Vec<u8>;
    sync cuIpcOpenEventHandle(handle: Vec<u8>) -> u64;
    oneway cuEventRecord(event: u64, stream: u64) -> ();
    oneway cuEventRecordWithFlags(event: u64, stream: u64, flags: u32) -> ();
    sync cuEventSynchronize(event: u64) -> ();
    sync cuEventQuery(event: u64) -> ();
    sync cuEventElapsedTime(start: u64, end: u64) -> f32;

    // ---------- graphs
    sync cuGraphCreate(flags: u32) -> u64;
    sync cuGraphInstantiateWithFlags(graph: u64, flags: u64) -> u64;
    oneway cuGraphLaunch(exec: u64, stream: u64) -> ();
    /// `cuMemcpyHtoDAsync_v2` sent while the application captures a stream: `host` is the
    /// address of the bytes (bulk_in) in the application. Captured into a graph, the copy
    /// keeps them under an id that `refresh_captured` updates before each launch.
    oneway htod_captured(dst: u64, stream: u64, host: u64) -> ();
    /// The copies captured into `graph` with `htod_captured`: (host address, length, id).
    sync captured_copies(graph: u64) -> Vec<(u64, u64, u64)>;
    /// The bytes now at a captured copy's source (bulk_in), for the graph's next launch.
    oneway refresh_captured(id: u64) -> ();
    /// Returns the `CUgraphExecUpdateResult`; the status says whether the update happened.
    sync cuGraphExecUpdate_v2(exec: u64, graph: u64) -> u32;
    sync cuGraphExecDestroy(exec: u64) -> ();
    sync cuGraphDestroy(graph: u64) -> ();
    oneway cuGraphUpload(exec: u64, stream: u64) -> ();
    /// A graph's nodes (`cuGraphGetNodes`), as the server's driver lists them.
    sync graph_nodes(graph: u64) -> Vec<u64>;

    // ---------- cuBLAS, forwarded at its own API (functions: `cublas::FUNCS`). A handle is
    // the server's id, created in the frame's context. A synchronous call answers the cuBLAS
    // status in its value; an `Err` is a CUDA error (the frame's context, or one deferred
    // from an earlier one-way call: `cublas::deferred_code`).
    /// Returns (status, handle).
    sync cublasCreate_v2() -> (u32, u64);
    /// Returns the status.
    sync cublasDestroy_v2(handle: u64) -> u32;
    /// One setting of a handle, in program order with its calls: `what` is a
    /// `cublas::SET_*`; `size` is used by `SET_WORKSPACE` only. The pointer mode is not a
    /// setting: every call says whether its scalars are device pointers.
    oneway cublas_set(handle: u64, what: u32, value: u64, size: u64) -> ();
    /// `cublas::FUNCS[func]` on `handle`: `args` are every argument after the handle widened
    /// to u64; unless `device_scalars`, the scalars' bytes travel in `scalars` (argument
    /// order) and their slots in `args` are 0.
    oneway cublas_call(func: u16, handle: u64, device_scalars: bool, args: Vec<u64>, scalars: Vec<u8>) -> ();
}

#[cfg(test)]
pub(crate) mod tests_support {
    use super::*;
    /// A backend that hands out addresses from a base, for dispatch tests.
    pub struct Fixed(pub u64);
    impl Backend for Fixed {
        fn cuMemAlloc_v2(&mut self, _io: &mut crate::Io<'_>, bytesize: u64) -> Result<u64, u32> {
            Ok(self.0 + bytesize)
        }
    }
}
