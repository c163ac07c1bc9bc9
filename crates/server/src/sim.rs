//! The `sim` backend: a CPU stand-in for one or more H100-like GPUs, so the whole client
//! side can be tested on machines with no GPU. Device memory is host memory; copies,
//! memsets, streams, events, contexts, virtual memory and module uploads behave; kernels
//! cannot run and say so (`CUDA_ERROR_NOT_SUPPORTED`).

use crate::Session;
use device_model::Snapshot;
use protocol::jit::JitOut;
use protocol::{Copy2D, FuncInfo, Io, LaunchAttr, NvmlOut, Piece, cublas, nvml};
use std::collections::{BTreeMap, HashMap, HashSet};

const INVALID_VALUE: u32 = 1;
const OUT_OF_MEMORY: u32 = 2;
const INVALID_CONTEXT: u32 = 201;
const FILE_NOT_FOUND: u32 = 301;
const INVALID_PTX: u32 = 218;
const INVALID_HANDLE: u32 = 400;
const ILLEGAL_STATE: u32 = 401;
const NOT_SUPPORTED: u32 = 801;

const NVML_ERROR_INVALID_ARGUMENT: u32 = 2;
const NVML_ERROR_NOT_SUPPORTED: u32 = 3;
const NVML_ERROR_INSUFFICIENT_SIZE: u32 = 7;

pub fn snapshot(devices: u32, seed: u8) -> Snapshot {
    let mut s = device_model::sim_snapshot(devices.max(1));
    for d in &mut s.devices {
        // Distinct servers get distinct UUIDs and bus ids.
        d.uuid[14] = seed;
        d.pci.bus = (d.pci.bus + 0x20 * seed as u32) & 0xff;
        d.attributes[device_model::attr::PCI_BUS_ID] = d.pci.bus as i32;
    }
    s.server = format!("vgpu sim ({} device(s))", s.devices.len());
    s
}

/// Report `version` (e.g. "560.35.03") as the NVML driver version, as an older driver would.
pub fn set_driver_version(s: &mut Snapshot, version: &str) {
    s.driver_version = version.to_string();
    s.nvml_version = format!("{}.{version}", s.cuda_driver_version / 1000);
}

/// A piece of sim device memory: a whole allocation, or a physical handle mapped into
/// reserved address space.
struct Region {
    data: Vec<u8>,
    device: usize,
}

/// Stream capture, for host-to-device copies alone: a copy on a capturing stream keeps its
/// bytes (under an id) and goes into the graph, whose launches write them again, as the
/// cuda backend's captured copies do; `htod_captured` copies also name their source, for
/// the client to refresh (`refresh_captured`). Other work on a capturing stream runs at
/// once: no test captures it here.
#[derive(Default)]
struct Capture {
    /// Capturing stream → the copies captured so far: (destination, id, source or 0).
    streams: HashMap<u64, Vec<(u64, u64, u64)>>,
    /// Graph (and executable graph) → its copies.
    graphs: HashMap<u64, Vec<(u64, u64, u64)>>,
    execs: HashMap<u64, Vec<(u64, u64, u64)>>,
    kept: HashMap<u64, Vec<u8>>,
}

pub struct Sim {
    snapshot: Snapshot,
    limit: Option<u64>,
    ctx: u64,
    contexts: HashMap<u64, usize>,
    primary: HashMap<usize, u64>,
    /// Address → allocation, for plain allocations and for mapped VMM ranges.
    regions: BTreeMap<u64, Region>,
    /// VMM physical allocations not currently mapped: handle → (size, device).
    handles: HashMap<u64, (u64, usize)>,
    /// VMM mappings: address → handle.
    mapped: HashMap<u64, u64>,
    /// Handles released while mapped: freed when unmapped.
    released: HashSet<u64>,
    /// References `cuMemRetainAllocationHandle` took, by handle, not yet released.
    retained: HashMap<u64, u32>,
    reserved: BTreeMap<u64, u64>,
    streams: HashSet<u64>,
    events: HashSet<u64>,
    modules: HashSet<u64>,
    /// Each image seen: the `.entry` names of a PTX image (the one format the sim reads).
    images: HashMap<[u8; 32], Vec<String>>,
    /// Each module's entries, from its image, with the function handle each has.
    entries: HashMap<u64, Vec<(String, u64)>>,
    /// Each function handed out, by name.
    names: HashMap<u64, String>,
    links: HashMap<u64, SimLink>,
    /// What the last module load or link input with JIT options left (`jit_out`).
    last_jit: JitOut,
    /// Each device's pool (the sim has one a device) and the attributes set on pools.
    pools: HashMap<i32, u64>,
    pool_attrs: HashMap<(u64, u32), u64>,
    /// Pools the application created.
    created_pools: HashSet<u64>,
    /// Tensor maps encoded.
    encodes: u64,
    graphs: HashSet<u64>,
    /// Stream capture, as far as host-to-device copies go (`Capture`).
    capture: Capture,
    /// cuBLAS handles → the context they were created in.
    blas: HashMap<u64, u64>,
    next: u64,
    next_addr: u64,
    used: Vec<u64>,
    /// The client's shared-memory segment (`shm:` addresses).
    segment: Option<transport::Segment>,
    /// Where the worker reads an asynchronous copy's bytes (see `bulk_place`).
    landing: Vec<u8>,
    /// Where host functions run (`launch_host_func`).
    host_funcs: Option<std::sync::Arc<crate::host_funcs::HostFuncs>>,
    /// Stream attributes set: (stream, attribute) → value bytes.
    stream_attrs: HashMap<(u64, u32), Vec<u8>>,
    /// A device-to-host copy's bytes, for `reply_bulk`.
    reply: Option<Vec<u8>>,
    /// What `reply_bulk` last handed out (kept until the next call).
    replied: Vec<u8>,
    /// Pieces of earlier copies the client told this session to keep (`htod_pages`).
    pages: crate::pages::Store,
    /// How long a stream synchronize takes (`VGPU_SIM_SYNC_MS`, for tests: it is waited
    /// for on a helper thread, as the cuda backend waits for a busy stream).
    sync_delay: std::time::Duration,
}

impl Sim {
    pub fn new(snapshot: Snapshot, limit: Option<u64>) -> Sim {
        let n = snapshot.devices.len();
        // Servers with different `--sim-id`s (carried in byte 14 of their UUIDs) hand out
        // different device addresses, as GPUs on different hosts would; equal ids give
        // equal addresses, as two servers on one host may.
        let seed = snapshot.devices.first().map_or(0, |d| d.uuid[14] as u64 % 64);
        Sim {
            snapshot,
            limit,
            ctx: 0,
            contexts: HashMap::new(),
            primary: HashMap::new(),
            regions: BTreeMap::new(),
            handles: HashMap::new(),
            mapped: HashMap::new(),
            released: HashSet::new(),
            retained: HashMap::new(),
            reserved: BTreeMap::new(),
            streams: HashSet::new(),
            events: HashSet::new(),
            modules: HashSet::new(),
            images: HashMap::new(),
            entries: HashMap::new(),
            names: HashMap::new(),
            links: HashMap::new(),
            last_jit: JitOut::default(),
            pools: HashMap::new(),
            pool_attrs: HashMap::new(),
            created_pools: HashSet::new(),
            encodes: 0,
            graphs: HashSet::new(),
            capture: Capture::default(),
            blas: HashMap::new(),
            next: 0x1000,
            next_addr: 0x7f00_0000_0000 - (seed << 40),
            used: vec![0; n],
            segment: None,
            landing: Vec::new(),
            host_funcs: None,
            stream_attrs: HashMap::new(),
            reply: None,
            replied: Vec::new(),
            pages: Default::default(),
            sync_delay: std::time::Duration::from_millis(
                std::env::var("VGPU_SIM_SYNC_MS").ok().and_then(|v| v.parse().ok()).unwrap_or(0),
            ),
        }
    }

    fn id(&mut self) -> u64 {
        self.next += 0x10;
        self.next
    }

    fn pool(&self, p: u64) -> Result<(), u32> {
        if self.pools.values().any(|&q| q == p) || self.created_pools.contains(&p) {
            Ok(())
        } else {
            Err(INVALID_HANDLE)
        }
    }

    fn device(&self) -> Result<usize, u32> {
        self.contexts.get(&self.ctx).copied().ok_or(INVALID_CONTEXT)
    }

    fn total(&self, dev: usize) -> u64 {
        let t = self.snapshot.devices[dev].total_mem;
        self.limit.map_or(t, |l| t.min(l))
    }

    /// Fresh address space for `size` bytes, or `None` if the sim's address space is
    /// exhausted (a forged size must get an error, not an arithmetic panic).
    fn address_space(&mut self, size: u64) -> Option<u64> {
        let a = self.next_addr;
        let len = size.div_ceil(1 << 21).max(1).checked_mul(1 << 21)?;
        self.next_addr = a.checked_add(len).filter(|&e| e <= 1 << 63)?;
        Some(a)
    }

    /// Whether `size` more bytes fit in device `dev`'s quota.
    fn fits(&self, dev: usize, size: u64) -> bool {
        self.used[dev].checked_add(size).is_some_and(|t| t <= self.total(dev))
    }

    /// The region holding `[ptr, ptr+len)`, and the offset of `ptr` in it.
    fn region(&mut self, ptr: u64, len: u64) -> Result<(&mut Region, usize), u32> {
        let (&base, r) = self.regions.range_mut(..=ptr).next_back().ok_or(INVALID_VALUE)?;
        let off = ptr - base;
        if off.checked_add(len).is_none_or(|end| end > r.data.len() as u64) {
            return Err(INVALID_VALUE);
        }
        Ok((r, off as usize))
    }

    fn read(&mut self, ptr: u64, len: u64) -> Result<Vec<u8>, u32> {
        let (r, off) = self.region(ptr, len)?;
        Ok(r.data[off..off + len as usize].to_vec())
    }

    fn write(&mut self, ptr: u64, bytes: &[u8]) -> Result<(), u32> {
        let (r, off) = self.region(ptr, bytes.len() as u64)?;
        r.data[off..off + bytes.len()].copy_from_slice(bytes);
        Ok(())
    }

    fn stream(&self, s: u64) -> Result<(), u32> {
        if s <= 2 || self.streams.contains(&s) { Ok(()) } else { Err(INVALID_HANDLE) }
    }

    fn alloc(&mut self, size: u64) -> Result<u64, u32> {
        let dev = self.device()?;
        if size == 0 {
            return Err(INVALID_VALUE);
        }
        if !self.fits(dev, size) {
            return Err(OUT_OF_MEMORY);
        }
        // Sim memory is real host memory: refuse what the host cannot give.
        let mut data = Vec::new();
        data.try_reserve_exact(size as usize).map_err(|_| OUT_OF_MEMORY)?;
        data.resize(size as usize, 0);
        let a = self.address_space(size).ok_or(OUT_OF_MEMORY)?;
        self.used[dev] += size;
        self.regions.insert(a, Region { data, device: dev });
        Ok(a)
    }
}

impl Session for Sim {
    fn memory_used(&self) -> u64 {
        self.used.iter().sum()
    }

    fn set_context(&mut self, ctx: u64) {
        self.ctx = ctx;
    }
    fn wait_job(&mut self, op: u32, args: &[u8]) -> Option<crate::WaitJob> {
        if self.sync_delay.is_zero() || op != protocol::Op::cuStreamSynchronize as u32 {
            return None;
        }
        let a: protocol::ops::cuStreamSynchronize = postcard::from_bytes(args).ok()?;
        self.stream(a.stream).ok()?;
        let delay = self.sync_delay;
        Some(Box::new(move || {
            std::thread::sleep(delay);
            Ok(())
        }))
    }
    fn reply_bulk(&mut self) -> Option<&[u8]> {
        self.replied = self.reply.take()?;
        Some(&self.replied)
    }
    /// Asynchronous copies land in a buffer of the sim's own, as the cuda backend's land
    /// in pinned memory, so that the worker's path for it is tested without a GPU.
    fn bulk_place(&mut self, op: u32, _args: &[u8], len: usize) -> Option<std::ptr::NonNull<u8>> {
        if !crate::lands_htod(op) || len > crate::BULK_PLACE_MAX {
            return None;
        }
        self.landing.clear();
        self.landing.resize(len, 0);
        std::ptr::NonNull::new(self.landing.as_mut_ptr())
    }
    fn set_host_funcs(&mut self, funcs: std::sync::Arc<crate::host_funcs::HostFuncs>) {
        self.host_funcs = Some(funcs);
    }
    fn attach_segment(&mut self, segment: transport::Segment) -> Result<(), String> {
        if self.segment.is_some() {
            return Err("a segment is already attached".into());
        }
        self.segment = Some(segment);
        Ok(())
    }
}

impl protocol::Backend for Sim {
    fn nvml_call(&mut self, io: &mut Io<'_>, func: u16, device: u32, _args: [u64; 3]) -> Result<NvmlOut, u32> {
        let Some(&(name, _)) = nvml::FUNCS.get(func as usize) else {
            return Ok(NvmlOut { ret: NVML_ERROR_INVALID_ARGUMENT, aux: 0 });
        };
        // `device` is the NVML index (`--gpus` may serve a subset).
        let Some(dev) = self.snapshot.devices.iter().position(|d| d.nvml_index == device) else {
            return Ok(NvmlOut { ret: NVML_ERROR_INVALID_ARGUMENT, aux: 0 });
        };
        let total = self.total(dev);
        let used = self.used[dev];
        let mut out = io.bulk_in.to_vec();
        let put = |out: &mut Vec<u8>, at: usize, v: &[u8]| {
            if out.len() >= at + v.len() {
                out[at..at + v.len()].copy_from_slice(v);
                true
            } else {
                false
            }
        };
        let ok = match name {
            // nvmlMemory_t { total, free, used }
            "nvmlDeviceGetMemoryInfo" => {
                put(&mut out, 0, &total.to_le_bytes())
                    && put(&mut out, 8, &(total - used).to_le_bytes())
                    && put(&mut out, 16, &used.to_le_bytes())
            }
            // nvmlMemory_v2_t { version, total, reserved, free, used }
            "nvmlDeviceGetMemoryInfo_v2" => {
                put(&mut out, 8, &total.to_le_bytes())
                    && put(&mut out, 16, &0u64.to_le_bytes())
                    && put(&mut out, 24, &(total - used).to_le_bytes())
                    && put(&mut out, 32, &used.to_le_bytes())
            }
            "nvmlDeviceGetUtilizationRates" => put(&mut out, 0, &[0u8; 8]),
            "nvmlDeviceGetTemperature" => put(&mut out, 0, &35u32.to_le_bytes()),
            "nvmlDeviceGetPowerUsage" => put(&mut out, 0, &70_000u32.to_le_bytes()),
            "nvmlDeviceGetPowerManagementLimit" | "nvmlDeviceGetEnforcedPowerLimit" => {
                put(&mut out, 0, &700_000u32.to_le_bytes())
            }
            "nvmlDeviceGetPerformanceState" => put(&mut out, 0, &0u32.to_le_bytes()),
            "nvmlDeviceGetComputeMode"
            | "nvmlDeviceGetPersistenceMode"
            | "nvmlDeviceGetDisplayMode"
            | "nvmlDeviceGetDisplayActive" => put(&mut out, 0, &0u32.to_le_bytes()),
            // A healthy board: no memory errors, no remapped rows, an idle encoder (the
            // outputs the client passed, whichever those are, all zero).
            "nvmlDeviceGetMemoryErrorCounter" | "nvmlDeviceGetRemappedRows" | "nvmlDeviceGetEncoderStats" => {
                out.fill(0);
                true
            }
            "nvmlDeviceGetRetiredPages" => {
                *io.bulk_out = out;
                return Ok(NvmlOut { ret: 0, aux: 0 });
            }
            "nvmlDeviceGetComputeRunningProcesses_v3" | "nvmlDeviceGetGraphicsRunningProcesses_v3" => {
                *io.bulk_out = Vec::new();
                return Ok(NvmlOut { ret: 0, aux: 0 });
            }
            _ => return Ok(NvmlOut { ret: NVML_ERROR_NOT_SUPPORTED, aux: 0 }),
        };
        if !ok {
            return Ok(NvmlOut { ret: NVML_ERROR_INSUFFICIENT_SIZE, aux: 0 });
        }
        *io.bulk_out = out;
        Ok(NvmlOut { ret: 0, aux: 0 })
    }

    fn cuDevicePrimaryCtxRetain(&mut self, _io: &mut Io<'_>, dev: i32) -> Result<u64, u32> {
        let d = usize::try_from(dev).ok().filter(|&d| d < self.snapshot.devices.len()).ok_or(INVALID_VALUE)?;
        if let Some(&c) = self.primary.get(&d) {
            return Ok(c);
        }
        let c = self.id();
        self.contexts.insert(c, d);
        self.primary.insert(d, c);
        Ok(c)
    }
    fn cuDevicePrimaryCtxRelease_v2(&mut self, _io: &mut Io<'_>, _dev: i32) -> Result<(), u32> {
        Ok(())
    }
    fn cuDevicePrimaryCtxReset_v2(&mut self, _io: &mut Io<'_>, _dev: i32) -> Result<(), u32> {
        Ok(())
    }
    fn cuDevicePrimaryCtxSetFlags_v2(&mut self, _io: &mut Io<'_>, _dev: i32, _flags: u32) -> Result<(), u32> {
        Ok(())
    }
    fn cuDevicePrimaryCtxGetState(&mut self, _io: &mut Io<'_>, dev: i32) -> Result<(u32, i32), u32> {
        Ok((0, self.primary.contains_key(&(dev as usize)) as i32))
    }
    fn cuCtxCreate_v2(&mut self, _io: &mut Io<'_>, _flags: u32, dev: i32) -> Result<u64, u32> {
        let d = usize::try_from(dev).ok().filter(|&d| d < self.snapshot.devices.len()).ok_or(INVALID_VALUE)?;
        let c = self.id();
        self.contexts.insert(c, d);
        Ok(c)
    }
    fn cuCtxDestroy_v2(&mut self, _io: &mut Io<'_>, ctx: u64) -> Result<(), u32> {
        self.contexts.remove(&ctx).map(|_| ()).ok_or(INVALID_CONTEXT)
    }
    fn cuCtxSynchronize(&mut self, _io: &mut Io<'_>) -> Result<(), u32> {
        self.device().map(|_| ())
    }
    fn ctx_barrier(&mut self, _io: &mut Io<'_>) -> Result<(), u32> {
        self.device().map(|_| ())
    }
    fn cuCtxGetStreamPriorityRange(&mut self, _io: &mut Io<'_>) -> Result<(i32, i32), u32> {
        Ok((0, -5))
    }
    fn cuDeviceCanAccessPeer(&mut self, _io: &mut Io<'_>, _dev: i32, _peer: i32) -> Result<i32, u32> {
        Ok(1)
    }
    fn cuCtxEnablePeerAccess(&mut self, _io: &mut Io<'_>, peer: u64, _flags: u32) -> Result<(), u32> {
        if self.contexts.contains_key(&peer) { Ok(()) } else { Err(INVALID_CONTEXT) }
    }

    fn cuMemGetInfo_v2(&mut self, _io: &mut Io<'_>) -> Result<(u64, u64), u32> {
        let d = self.device()?;
        let t = self.total(d);
        Ok((t - self.used[d].min(t), t))
    }
    fn cuMemAlloc_v2(&mut self, _io: &mut Io<'_>, bytesize: u64) -> Result<u64, u32> {
        self.alloc(bytesize)
    }
    fn cuMemAllocAsync(&mut self, _io: &mut Io<'_>, bytesize: u64, stream: u64) -> Result<u64, u32> {
        self.stream(stream)?;
        self.alloc(bytesize)
    }
    fn mem_pool_of(&mut self, _io: &mut Io<'_>, dev: i32, _current: bool) -> Result<u64, u32> {
        if usize::try_from(dev).ok().filter(|&d| d < self.snapshot.devices.len()).is_none() {
            return Err(INVALID_VALUE);
        }
        if let Some(&p) = self.pools.get(&dev) {
            return Ok(p);
        }
        let p = self.id();
        self.pools.insert(dev, p);
        Ok(p)
    }
    fn cuMemPoolSetAttribute(&mut self, _io: &mut Io<'_>, pool: u64, attr: u32, value: u64) -> Result<(), u32> {
        self.pool(pool)?;
        self.pool_attrs.insert((pool, attr), value);
        Ok(())
    }
    fn cuMemPoolGetAttribute(&mut self, _io: &mut Io<'_>, pool: u64, attr: u32) -> Result<u64, u32> {
        self.pool(pool)?;
        Ok(self.pool_attrs.get(&(pool, attr)).copied().unwrap_or(0))
    }
    fn cuMemPoolTrimTo(&mut self, _io: &mut Io<'_>, pool: u64, _keep: u64) -> Result<(), u32> {
        self.pool(pool)
    }
    /// `props` as a `CUmemPoolProps` lays them out: its location (type, id) at offset 8.
    fn cuMemPoolCreate(&mut self, _io: &mut Io<'_>, props: Vec<u8>) -> Result<u64, u32> {
        let word = |at: usize| props.get(at..at + 4).map(|b| i32::from_le_bytes(b.try_into().unwrap()));
        let (Some(kind), Some(dev)) = (word(8), word(12)) else { return Err(INVALID_VALUE) };
        if kind != 1 {
            return Err(NOT_SUPPORTED); // CU_MEM_LOCATION_TYPE_DEVICE only, as on the GPU server
        }
        if usize::try_from(dev).ok().filter(|&d| d < self.snapshot.devices.len()).is_none() {
            return Err(INVALID_VALUE);
        }
        let p = self.id();
        self.created_pools.insert(p);
        Ok(p)
    }
    fn cuMemPoolDestroy(&mut self, _io: &mut Io<'_>, pool: u64) -> Result<(), u32> {
        self.created_pools.remove(&pool).then_some(()).ok_or(INVALID_VALUE)
    }
    fn cuMemAllocFromPoolAsync(&mut self, _io: &mut Io<'_>, bytesize: u64, pool: u64, stream: u64) -> Result<u64, u32> {
        self.pool(pool)?;
        self.stream(stream)?;
        self.alloc(bytesize)
    }
    fn cuMemAllocPitch_v2(&mut self, _io: &mut Io<'_>, width: u64, height: u64, _elem: u32) -> Result<(u64, u64), u32> {
        let pitch = width.div_ceil(512).checked_mul(512).ok_or(INVALID_VALUE)?;
        Ok((self.alloc(pitch.checked_mul(height).ok_or(OUT_OF_MEMORY)?)?, pitch))
    }
    fn cuMemFree_v2(&mut self, _io: &mut Io<'_>, dptr: u64) -> Result<(), u32> {
        if self.mapped.contains_key(&dptr) {
            return Err(INVALID_VALUE);
        }
        let r = self.regions.remove(&dptr).ok_or(INVALID_VALUE)?;
        self.used[r.device] -= r.data.len() as u64;
        Ok(())
    }
    fn cuMemFreeAsync(&mut self, io: &mut Io<'_>, dptr: u64, stream: u64) -> Result<(), u32> {
        self.stream(stream)?;
        self.cuMemFree_v2(io, dptr)
    }
    fn cuMemcpyHtoD_v2(&mut self, io: &mut Io<'_>, dst: u64) -> Result<(), u32> {
        self.write(dst, io.bulk_in)
    }
    fn cuMemcpyHtoDAsync_v2(&mut self, io: &mut Io<'_>, dst: u64, stream: u64) -> Result<(), u32> {
        self.htod_captured(io, dst, stream, 0)
    }
    fn htod_runs(&mut self, io: &mut Io<'_>, dst: u64, stream: u64, len: u64) -> Result<(), u32> {
        self.stream(stream)?;
        self.region(dst, len)?; // bounds `len` before anything is allocated for it
        // Unpacked aside first: malformed runs leave the memory as it was, as on a GPU.
        let mut data = vec![0u8; len as usize];
        protocol::runs::unpack(io.bulk_in, &mut data).map_err(|_| INVALID_VALUE)?;
        self.write(dst, &data)
    }
    fn htod_cached(
        &mut self,
        _io: &mut Io<'_>,
        dst: u64,
        stream: u64,
        len: u64,
        chunk: u64,
        hashes: Vec<[u8; 32]>,
    ) -> Result<Vec<bool>, u32> {
        self.stream(stream)?;
        self.region(dst, len)?;
        let store = crate::blobs::blobs();
        crate::blobs::offer(store, len, chunk, &hashes, INVALID_VALUE, |at, found| match found.read() {
            Some(bytes) => self.write(dst + at, &bytes).map(|()| true),
            None => Ok(false),
        })
    }
    fn htod_keep(&mut self, io: &mut Io<'_>, dst: u64, stream: u64) -> Result<(), u32> {
        self.stream(stream)?;
        self.write(dst, io.bulk_in)?;
        crate::blobs::blobs().keep(io.bulk_in);
        Ok(())
    }
    fn pages_open(&mut self, _io: &mut Io<'_>, piece: u32, slots: u32) -> Result<u32, u32> {
        Ok(self.pages.open(piece, slots, crate::pages::cap()))
    }
    fn htod_pages(&mut self, io: &mut Io<'_>, dst: u64, stream: u64, len: u64, pieces: Vec<Piece>) -> Result<(), u32> {
        // Kept first, whatever becomes of the copy: the client counts on it.
        let starts = self.pages.keep(&pieces, io.bulk_in, len as usize).map_err(|_| INVALID_VALUE)?;
        self.stream(stream)?;
        self.region(dst, len)?;
        let mut data = vec![0u8; len as usize];
        self.pages.fill(&pieces, &starts, io.bulk_in, &mut data);
        self.write(dst, &data)
    }
    fn cuMemcpyDtoH_v2(&mut self, io: &mut Io<'_>, src: u64, size: u64) -> Result<(), u32> {
        *io.bulk_out = self.read(src, size)?;
        Ok(())
    }
    fn cuMemcpyDtoHAsync_v2(&mut self, _io: &mut Io<'_>, src: u64, size: u64, stream: u64) -> Result<(), u32> {
        self.stream(stream)?;
        // Left in the sim's own memory, as the cuda backend leaves it in pinned memory, so
        // that the worker's path for it is tested without a GPU.
        self.reply = Some(self.read(src, size)?);
        Ok(())
    }
    fn shm_attached(&mut self, _io: &mut Io<'_>) -> Result<u64, u32> {
        self.segment.as_ref().map(|s| s.len() as u64).ok_or(NOT_SUPPORTED)
    }
    // Copies run at once here, so tickets have nothing to wait for.
    fn shm_htod(
        &mut self,
        _io: &mut Io<'_>,
        dst: u64,
        offset: u64,
        len: u64,
        stream: u64,
        _ticket: u64,
    ) -> Result<(), u32> {
        self.stream(stream)?;
        let src = self.segment.as_ref().and_then(|s| s.range(offset, len)).ok_or(INVALID_VALUE)?;
        let (r, off) = self.region(dst, len)?;
        // SAFETY: `range` and `region` checked that both sides hold `len` bytes. The client
        // may write the segment meanwhile, as it may race its own DMA natively.
        unsafe { std::ptr::copy_nonoverlapping(src, r.data[off..].as_mut_ptr(), len as usize) };
        Ok(())
    }
    fn shm_dtoh(
        &mut self,
        _io: &mut Io<'_>,
        src: u64,
        offset: u64,
        len: u64,
        stream: u64,
        _ticket: u64,
    ) -> Result<(), u32> {
        self.stream(stream)?;
        let dst = self.segment.as_ref().and_then(|s| s.range(offset, len)).ok_or(INVALID_VALUE)?;
        let (r, off) = self.region(src, len)?;
        // SAFETY: as above.
        unsafe { std::ptr::copy_nonoverlapping(r.data[off..].as_ptr(), dst, len as usize) };
        Ok(())
    }
    fn shm_wait(&mut self, _io: &mut Io<'_>, _ticket: u64) -> Result<(), u32> {
        Ok(())
    }
    fn cuMemcpyDtoD_v2(&mut self, _io: &mut Io<'_>, dst: u64, src: u64, size: u64) -> Result<(), u32> {
        let b = self.read(src, size)?;
        self.write(dst, &b)
    }
    fn cuMemcpyDtoDAsync_v2(&mut self, io: &mut Io<'_>, dst: u64, src: u64, size: u64, stream: u64) -> Result<(), u32> {
        self.stream(stream)?;
        self.cuMemcpyDtoD_v2(io, dst, src, size)
    }
    fn cuMemcpyPeerAsync(
        &mut self,
        io: &mut Io<'_>,
        dst: u64,
        _dst_ctx: u64,
        src: u64,
        _src_ctx: u64,
        size: u64,
        stream: u64,
    ) -> Result<(), u32> {
        self.cuMemcpyDtoDAsync_v2(io, dst, src, size, stream)
    }
    fn cuMemcpy2D_v2(&mut self, io: &mut Io<'_>, c: Copy2D, stream: u64) -> Result<(), u32> {
        self.stream(stream)?;
        // Both sides are checked whole before any byte moves or any buffer is sized from
        // the request: forged widths, heights and pitches get an error, never a huge
        // allocation or an arithmetic overflow.
        let (w, h) = (c.width as usize, c.height as usize);
        let row_at = |base: u64, x: u64, y: u64, pitch: u64, row: u64| {
            y.checked_add(row)?.checked_mul(pitch)?.checked_add(base)?.checked_add(x)
        };
        if c.width == 0 || c.height == 0 {
            return Ok(());
        }
        let total = c.width.checked_mul(c.height).ok_or(INVALID_VALUE)?;
        // Device rows must not overlap (pitch >= width) and must each lie in this
        // session's memory, so `total` is bounded by what the session holds.
        for (side, x, y, pitch) in
            [(c.src_device, c.src_x, c.src_y, c.src_pitch), (c.dst_device, c.dst_x, c.dst_y, c.dst_pitch)]
        {
            let Some(p) = side else { continue };
            if pitch < c.width {
                return Err(INVALID_VALUE);
            }
            for row in 0..c.height {
                self.region(row_at(p, x, y, pitch, row).ok_or(INVALID_VALUE)?, c.width)?;
            }
        }
        if c.src_device.is_none() && (io.bulk_in.len() as u64) < total {
            return Err(INVALID_VALUE);
        }
        let mut packed = Vec::with_capacity(total as usize);
        for row in 0..c.height {
            match c.src_device {
                Some(p) => packed
                    .extend(self.read(row_at(p, c.src_x, c.src_y, c.src_pitch, row).ok_or(INVALID_VALUE)?, c.width)?),
                None => {
                    let at = row as usize * w;
                    packed.extend_from_slice(io.bulk_in.get(at..at + w).ok_or(INVALID_VALUE)?)
                }
            }
        }
        match c.dst_device {
            Some(p) => {
                for row in 0..h {
                    let at = row_at(p, c.dst_x, c.dst_y, c.dst_pitch, row as u64).ok_or(INVALID_VALUE)?;
                    self.write(at, &packed[row * w..(row + 1) * w])?;
                }
            }
            None => *io.bulk_out = packed,
        }
        Ok(())
    }
    fn cuMemcpy2DAsync_v2(&mut self, io: &mut Io<'_>, c: Copy2D, stream: u64) -> Result<(), u32> {
        if c.dst_device.is_none() {
            return Err(INVALID_VALUE);
        }
        self.cuMemcpy2D_v2(io, c, stream)
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
    ) -> Result<(), u32> {
        self.stream(stream)?;
        let pattern = match elem {
            1 => vec![value as u8],
            2 => (value as u16).to_le_bytes().to_vec(),
            4 => value.to_le_bytes().to_vec(),
            _ => return Err(INVALID_VALUE),
        };
        // Check the whole range before sizing anything from the request: rows must not
        // overlap and must each lie in this session's memory.
        let bytes = width.checked_mul(elem as u64).ok_or(INVALID_VALUE)?;
        if bytes == 0 || height == 0 {
            return Ok(());
        }
        if height > 1 && pitch < bytes {
            return Err(INVALID_VALUE);
        }
        let row_at = |r: u64| r.checked_mul(pitch).and_then(|o| dst.checked_add(o)).ok_or(INVALID_VALUE);
        for r in 0..height {
            self.region(row_at(r)?, bytes)?;
        }
        let row: Vec<u8> = pattern.iter().copied().cycle().take(bytes as usize).collect();
        for r in 0..height {
            self.write(row_at(r)?, &row)?;
        }
        Ok(())
    }

    /// The sim runs each stream's work as it arrives, so a wait has nothing to wait for:
    /// only its word is checked to lie in this session's memory.
    fn stream_wait_value(
        &mut self,
        _io: &mut Io<'_>,
        stream: u64,
        addr: u64,
        _value: u64,
        _flags: u32,
        wide: bool,
    ) -> Result<(), u32> {
        self.stream(stream)?;
        self.region(addr, if wide { 8 } else { 4 }).map(|_| ())
    }
    fn stream_write_value(
        &mut self,
        _io: &mut Io<'_>,
        stream: u64,
        addr: u64,
        value: u64,
        _flags: u32,
        wide: bool,
    ) -> Result<(), u32> {
        self.stream(stream)?;
        let bytes = value.to_le_bytes();
        self.write(addr, if wide { &bytes[..] } else { &bytes[..4] })
    }

    /// The sim runs each stream's work as it arrives: the function runs now, the worker
    /// waiting for it as the stream would.
    fn launch_host_func(&mut self, _io: &mut Io<'_>, stream: u64, id: u64, _callback: bool) -> Result<(), u32> {
        self.stream(stream)?;
        let funcs = self.host_funcs.as_ref().filter(|f| f.joined()).ok_or(NOT_SUPPORTED)?;
        funcs.run(protocol::host_funcs::Run { id, status: 0, last: true });
        Ok(())
    }

    fn cuMemAddressReserve(
        &mut self,
        _io: &mut Io<'_>,
        size: u64,
        _align: u64,
        addr: u64,
        _flags: u64,
    ) -> Result<u64, u32> {
        // The requested address when it is address space this sim handed out before and
        // nothing of this session is there now (the driver treats it as a hint), else
        // fresh address space.
        let end = addr.checked_add(size.max(1)).filter(|&e| e <= self.next_addr);
        let free = end.is_some_and(|end| {
            let clear = |m: Option<(u64, u64)>| m.is_none_or(|(b, len)| b.saturating_add(len) <= addr);
            clear(self.regions.range(..end).next_back().map(|(&b, r)| (b, r.data.len() as u64)))
                && clear(self.reserved.range(..end).next_back().map(|(&b, &l)| (b, l)))
        });
        let a = if addr != 0 && free { addr } else { self.address_space(size).ok_or(OUT_OF_MEMORY)? };
        self.reserved.insert(a, size);
        Ok(a)
    }
    fn cuMemAddressFree(&mut self, _io: &mut Io<'_>, ptr: u64, _size: u64) -> Result<(), u32> {
        self.reserved.remove(&ptr).map(|_| ()).ok_or(INVALID_VALUE)
    }
    fn cuMemCreate(&mut self, _io: &mut Io<'_>, size: u64, _prop: Vec<u8>, _flags: u64) -> Result<u64, u32> {
        let d = self.device()?;
        if !self.fits(d, size) {
            return Err(OUT_OF_MEMORY);
        }
        self.used[d] += size;
        let h = self.id();
        self.handles.insert(h, (size, d));
        Ok(h)
    }
    /// The handle mapped at `ptr` (the start of a mapping), with a reference more.
    fn cuMemRetainAllocationHandle(&mut self, _io: &mut Io<'_>, ptr: u64) -> Result<u64, u32> {
        let h = *self.mapped.get(&ptr).ok_or(INVALID_VALUE)?;
        *self.retained.entry(h).or_default() += 1;
        Ok(h)
    }
    /// Device memory of the device it was made on (as the server numbers it).
    fn cuMemGetAllocationPropertiesFromHandle(&mut self, _io: &mut Io<'_>, handle: u64) -> Result<Vec<u8>, u32> {
        let &(_, d) = self.handles.get(&handle).ok_or(INVALID_HANDLE)?;
        let p = abi::cuda::CUmemAllocationProp {
            type_: abi::cuda::CUmemAllocationType::CU_MEM_ALLOCATION_TYPE_PINNED,
            location: abi::cuda::CUmemLocation {
                type_: abi::cuda::CUmemLocationType::CU_MEM_LOCATION_TYPE_DEVICE,
                id: d as i32,
            },
            ..Default::default()
        };
        Ok(crate::cuda::struct_bytes(&p))
    }
    fn cuMemRelease(&mut self, _io: &mut Io<'_>, handle: u64) -> Result<(), u32> {
        if !self.handles.contains_key(&handle) || self.released.contains(&handle) {
            return Err(INVALID_VALUE);
        }
        if let Some(n) = self.retained.get_mut(&handle).filter(|n| **n > 0) {
            *n -= 1;
            return Ok(());
        }
        // As with the driver, a mapped handle may be released: its memory (and quota)
        // goes when it is unmapped.
        if self.mapped.values().any(|&h| h == handle) {
            self.released.insert(handle);
            return Ok(());
        }
        let (size, d) = self.handles.remove(&handle).ok_or(INVALID_VALUE)?;
        self.used[d] -= size;
        Ok(())
    }
    fn cuMemMap(
        &mut self,
        _io: &mut Io<'_>,
        ptr: u64,
        size: u64,
        _offset: u64,
        handle: u64,
        _flags: u64,
    ) -> Result<(), u32> {
        let &(hsize, d) = self.handles.get(&handle).ok_or(INVALID_VALUE)?;
        let end = ptr.checked_add(size).ok_or(INVALID_VALUE)?;
        let inside =
            self.reserved.range(..=ptr).next_back().is_some_and(|(&b, &l)| b.checked_add(l).is_some_and(|e| end <= e));
        // The sim backs each mapping with its own memory: a handle is mapped once and
        // mappings do not overlap, so mapped memory stays within the quota.
        let overlaps = self.regions.range(..end).next_back().is_some_and(|(&b, r)| b + r.data.len() as u64 > ptr);
        if !inside
            || size > hsize
            || overlaps
            || self.released.contains(&handle)
            || self.mapped.values().any(|&h| h == handle)
        {
            return Err(INVALID_VALUE);
        }
        self.regions.insert(ptr, Region { data: vec![0; size as usize], device: d });
        self.mapped.insert(ptr, handle);
        Ok(())
    }
    fn cuMemUnmap(&mut self, _io: &mut Io<'_>, ptr: u64, _size: u64) -> Result<(), u32> {
        let handle = self.mapped.remove(&ptr).ok_or(INVALID_VALUE)?;
        self.regions.remove(&ptr);
        if self.released.remove(&handle)
            && let Some((size, d)) = self.handles.remove(&handle)
        {
            self.used[d] -= size;
        }
        Ok(())
    }
    fn cuMemSetAccess(
        &mut self,
        _io: &mut Io<'_>,
        ptr: u64,
        _size: u64,
        _desc: Vec<u8>,
        _count: u64,
    ) -> Result<(), u32> {
        if self.mapped.contains_key(&ptr) { Ok(()) } else { Err(INVALID_VALUE) }
    }
    fn cuMemGetAllocationGranularity(&mut self, _io: &mut Io<'_>, _prop: Vec<u8>, _option: u32) -> Result<u64, u32> {
        Ok(2 << 20)
    }

    fn module_load(&mut self, io: &mut Io<'_>, hash: [u8; 32], kind: u8, jit: Vec<(u32, u64)>) -> Result<u64, u32> {
        if !io.bulk_in.is_empty() {
            if *blake3::hash(io.bulk_in).as_bytes() != hash {
                return Err(INVALID_VALUE);
            }
            if let Err(why) = ptx_check(io.bulk_in) {
                self.last_jit = jit_out(&jit, "", &why);
                return Err(INVALID_PTX);
            }
            self.images.insert(hash, ptx_entries(io.bulk_in));
        }
        let entries = self.images.get(&hash).cloned().ok_or(FILE_NOT_FOUND)?;
        // A library (kind 2) belongs to no context, as with the driver.
        if kind != 2 {
            self.device()?;
        }
        let m = self.id();
        self.modules.insert(m);
        let info = format!("sim: loaded a module of {} functions", entries.len());
        let entries: Vec<(String, u64)> = entries.into_iter().map(|n| (n, self.id())).collect();
        self.names.extend(entries.iter().map(|(n, f)| (*f, n.clone())));
        self.entries.insert(m, entries);
        if !jit.is_empty() {
            self.last_jit = jit_out(&jit, &info, "");
        }
        Ok(m)
    }
    fn module_functions(&mut self, _io: &mut Io<'_>, module: u64) -> Result<Vec<(String, FuncInfo)>, u32> {
        let entries = self.entries.get(&module).ok_or(INVALID_HANDLE)?;
        Ok(entries.iter().map(|(n, f)| (n.clone(), FuncInfo { handle: *f, params: Vec::new() })).collect())
    }
    fn cuLibraryGetKernel(&mut self, io: &mut Io<'_>, library: u64, name: String) -> Result<FuncInfo, u32> {
        self.cuModuleGetFunction(io, library, name)
    }
    // Cluster questions as an H100 answers them for a kernel without limits: 132 SMs, clusters
    // of up to 8 blocks, 227 KiB of shared memory a block.
    fn cuOccupancyMaxActiveClusters(
        &mut self,
        _io: &mut Io<'_>,
        func: u64,
        _grid: [u32; 3],
        _block: [u32; 3],
        _smem: u32,
        attrs: Vec<LaunchAttr>,
    ) -> Result<i32, u32> {
        function(func)?;
        // CU_LAUNCH_ATTRIBUTE_CLUSTER_DIMENSION: three u32 at the start of the value.
        let dims = attrs.iter().find(|a| a.id == 4).map_or(1, |a| {
            a.value.chunks_exact(4).take(3).map(|c| u32::from_le_bytes(c.try_into().unwrap()).max(1)).product()
        });
        Ok((132 / dims.max(1)) as i32)
    }
    fn cuOccupancyMaxPotentialClusterSize(
        &mut self,
        _io: &mut Io<'_>,
        func: u64,
        _grid: [u32; 3],
        _block: [u32; 3],
        _smem: u32,
        _attrs: Vec<LaunchAttr>,
    ) -> Result<i32, u32> {
        function(func)?;
        Ok(8)
    }
    fn cuOccupancyAvailableDynamicSMemPerBlock(
        &mut self,
        _io: &mut Io<'_>,
        func: u64,
        blocks: i32,
        _block: i32,
    ) -> Result<u64, u32> {
        function(func)?;
        Ok(232_448 / blocks.max(1) as u64)
    }
    /// What an H100's driver answered (session 30): 7 in the first four bytes.
    fn tools_context_query(&mut self, _io: &mut Io<'_>, selector: u64, mut out: [u8; 8]) -> Result<[u8; 8], u32> {
        if selector != 0 {
            return Err(NOT_SUPPORTED);
        }
        out[..4].copy_from_slice(&7u32.to_le_bytes());
        Ok(out)
    }
    /// The sim's libraries are modules already.
    fn cuLibraryGetModule(&mut self, _io: &mut Io<'_>, library: u64) -> Result<u64, u32> {
        self.modules.contains(&library).then_some(library).ok_or(INVALID_HANDLE)
    }
    fn cuLibraryUnload(&mut self, io: &mut Io<'_>, library: u64) -> Result<(), u32> {
        self.cuModuleUnload(io, library)
    }
    fn cuModuleUnload(&mut self, _io: &mut Io<'_>, module: u64) -> Result<(), u32> {
        self.entries.remove(&module);
        self.modules.remove(&module).then_some(()).ok_or(INVALID_HANDLE)
    }
    fn cuModuleGetFunction(&mut self, _io: &mut Io<'_>, module: u64, name: String) -> Result<FuncInfo, u32> {
        if !self.modules.contains(&module) {
            return Err(INVALID_HANDLE);
        }
        // The sim reads no more of an image than a PTX image's entry names: every name is a
        // function without parameters, which it cannot run (launches fail with
        // CUDA_ERROR_NOT_SUPPORTED).
        let known = self.entries.get(&module).and_then(|e| e.iter().find(|(n, _)| *n == name)).map(|e| e.1);
        let f = known.unwrap_or_else(|| self.id());
        self.names.insert(f, name);
        Ok(FuncInfo { handle: f, params: Vec::new() })
    }
    /// A tiled tensor map in the sim's own layout (the driver's is opaque): the address, then
    /// the arguments packed in order, so that a test can see each one arrived; the last
    /// word counts the session's encodes, so that a test sees which the client answered.
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
    ) -> Result<[u64; 16], u32> {
        if !protocol::tensor_map_shape(rank, dims.len(), strides.len(), &[box_dim.len(), element_strides.len()], false)
            || !address.is_multiple_of(16)
        {
            return Err(INVALID_VALUE);
        }
        let mut m = [0u64; 16];
        m[0] = address;
        m[1] = [data_type, rank, interleave, swizzle, l2, oob].iter().fold(0, |a, &v| a << 8 | u64::from(v & 0xff));
        let pairs = box_dim.iter().zip(&element_strides).map(|(&b, &e)| u64::from(b) << 32 | u64::from(e));
        for (slot, v) in m[2..15].iter_mut().zip(dims.iter().chain(&strides).copied().chain(pairs)) {
            *slot = v;
        }
        self.encodes += 1;
        m[15] = self.encodes;
        Ok(m)
    }
    fn cuTensorMapReplaceAddress(
        &mut self,
        _io: &mut Io<'_>,
        mut map: [u64; 16],
        address: u64,
    ) -> Result<[u64; 16], u32> {
        if !address.is_multiple_of(16) {
            return Err(INVALID_VALUE);
        }
        map[0] = address;
        Ok(map)
    }
    fn cuLinkCreate_v2(&mut self, _io: &mut Io<'_>, jit: Vec<(u32, u64)>) -> Result<u64, u32> {
        self.device()?;
        let l = self.id();
        self.links.insert(l, SimLink { jit, ..Default::default() });
        Ok(l)
    }
    fn link_add(
        &mut self,
        io: &mut Io<'_>,
        link: u64,
        _kind: u32,
        name: String,
        jit: Vec<(u32, u64)>,
    ) -> Result<(), u32> {
        let l = self.links.get_mut(&link).ok_or(INVALID_HANDLE)?;
        let checked = ptx_check(io.bulk_in).map_err(|why| format!("{name}: {why}"));
        if !jit.is_empty() {
            self.last_jit = jit_out(&jit, "", checked.as_ref().err().map_or("", |e| e));
        }
        if let Err(why) = checked {
            l.error = why;
            return Err(INVALID_PTX);
        }
        let text = io.bulk_in.strip_suffix(b"\0").unwrap_or(io.bulk_in);
        l.image.extend_from_slice(text);
        l.image.push(b'\n');
        l.inputs += 1;
        Ok(())
    }
    fn cuLinkComplete(&mut self, _io: &mut Io<'_>, link: u64) -> Result<u64, u32> {
        let l = self.links.get_mut(&link).ok_or(INVALID_HANDLE)?;
        if l.image.last() != Some(&0) {
            l.image.push(0);
        }
        l.info = format!("sim: linked {} inputs", l.inputs);
        Ok(l.image.len() as u64)
    }
    fn jit_out(&mut self, _io: &mut Io<'_>, link: u64) -> Result<JitOut, u32> {
        if link == 0 {
            return Ok(self.last_jit.clone());
        }
        let l = self.links.get(&link).ok_or(INVALID_HANDLE)?;
        Ok(jit_out(&l.jit, &l.info, &l.error))
    }
    fn link_image(&mut self, io: &mut Io<'_>, link: u64, size: u64) -> Result<(), u32> {
        let image = &self.links.get(&link).ok_or(INVALID_HANDLE)?.image;
        if image.len() as u64 != size {
            return Err(INVALID_VALUE);
        }
        *io.bulk_out = image.clone();
        Ok(())
    }
    fn cuLinkDestroy(&mut self, _io: &mut Io<'_>, link: u64) -> Result<(), u32> {
        self.links.remove(&link).map(|_| ()).ok_or(INVALID_HANDLE)
    }
    /// Every `CUfunction_attribute` (16 in CUDA 13) as an H100 gives them for a kernel that
    /// uses nothing: up to 1024 threads a block, 4 registers, PTX and binary 9.0, 227 KiB of
    /// dynamic shared memory on request.
    fn func_attributes(&mut self, _io: &mut Io<'_>, func: u64) -> Result<Vec<i32>, u32> {
        function(func)?;
        let mut a = vec![0; 16];
        (a[0], a[4], a[5], a[6], a[8]) = (1024, 4, 90, 90, 232_448);
        Ok(a)
    }
    fn cuFuncGetName(&mut self, _io: &mut Io<'_>, func: u64) -> Result<String, u32> {
        self.names.get(&func).cloned().ok_or(INVALID_HANDLE)
    }
    fn cuLaunchKernel(
        &mut self,
        _io: &mut Io<'_>,
        _f: u64,
        _g: [u32; 3],
        _b: [u32; 3],
        _s: u32,
        _st: u64,
    ) -> Result<(), u32> {
        Err(NOT_SUPPORTED)
    }

    fn cuOccupancyMaxActiveBlocksPerMultiprocessorWithFlags(
        &mut self,
        _io: &mut Io<'_>,
        _func: u64,
        block: i32,
        _smem: u64,
        _flags: u32,
    ) -> Result<i32, u32> {
        // An H100 SM holds 2048 threads in at most 32 blocks.
        if block <= 0 { Err(INVALID_VALUE) } else { Ok((2048 / block).min(32)) }
    }

    fn cuStreamCreate(&mut self, _io: &mut Io<'_>, _flags: u32) -> Result<u64, u32> {
        self.device()?;
        let s = self.id();
        self.streams.insert(s);
        Ok(s)
    }
    fn cuStreamCreateWithPriority(&mut self, io: &mut Io<'_>, flags: u32, _priority: i32) -> Result<u64, u32> {
        self.cuStreamCreate(io, flags)
    }
    fn cuStreamDestroy_v2(&mut self, _io: &mut Io<'_>, stream: u64) -> Result<(), u32> {
        self.streams.remove(&stream).then_some(()).ok_or(INVALID_HANDLE)
    }
    fn cuStreamSynchronize(&mut self, _io: &mut Io<'_>, stream: u64) -> Result<(), u32> {
        self.stream(stream)
    }
    fn stream_barrier(&mut self, _io: &mut Io<'_>, stream: u64) -> Result<(), u32> {
        self.stream(stream)
    }
    fn cuStreamQuery(&mut self, _io: &mut Io<'_>, stream: u64) -> Result<(), u32> {
        self.stream(stream)
    }
    fn cuStreamWaitEvent(&mut self, _io: &mut Io<'_>, stream: u64, event: u64, _flags: u32) -> Result<(), u32> {
        self.stream(stream)?;
        if self.events.contains(&event) { Ok(()) } else { Err(INVALID_HANDLE) }
    }
    fn cuStreamGetPriority(&mut self, _io: &mut Io<'_>, stream: u64) -> Result<i32, u32> {
        self.stream(stream).map(|_| 0)
    }
    fn cuStreamGetFlags(&mut self, _io: &mut Io<'_>, stream: u64) -> Result<u32, u32> {
        self.stream(stream).map(|_| 0)
    }
    fn cuStreamGetId(&mut self, _io: &mut Io<'_>, stream: u64) -> Result<u64, u32> {
        self.stream(stream).map(|_| stream)
    }
    /// What was set, else zeros (the driver's defaults are zero but for priority).
    fn stream_attribute(&mut self, _io: &mut Io<'_>, stream: u64, attr: u32) -> Result<Vec<u8>, u32> {
        self.stream(stream)?;
        let mut v = vec![0; size_of::<abi::cuda::CUstreamAttrValue>()];
        if let Some(set) = self.stream_attrs.get(&(stream, attr)) {
            v[..set.len()].copy_from_slice(set);
        }
        Ok(v)
    }
    fn cuStreamSetAttribute(&mut self, _io: &mut Io<'_>, stream: u64, attr: LaunchAttr) -> Result<(), u32> {
        self.stream(stream)?;
        if attr.value.len() > size_of::<abi::cuda::CUstreamAttrValue>() {
            return Err(INVALID_VALUE);
        }
        self.stream_attrs.insert((stream, attr.id), attr.value);
        Ok(())
    }
    fn cuStreamCopyAttributes(&mut self, _io: &mut Io<'_>, dst: u64, src: u64) -> Result<(), u32> {
        self.stream(dst)?;
        self.stream(src)?;
        let from: Vec<_> =
            self.stream_attrs.iter().filter(|((s, _), _)| *s == src).map(|((_, a), v)| (*a, v.clone())).collect();
        for (a, v) in from {
            self.stream_attrs.insert((dst, a), v);
        }
        Ok(())
    }
    fn cuEventCreate(&mut self, _io: &mut Io<'_>, _flags: u32) -> Result<u64, u32> {
        self.device()?;
        let e = self.id();
        self.events.insert(e);
        Ok(e)
    }
    fn cuEventDestroy_v2(&mut self, _io: &mut Io<'_>, event: u64) -> Result<(), u32> {
        self.events.remove(&event).then_some(()).ok_or(INVALID_HANDLE)
    }
    fn cuEventRecord(&mut self, _io: &mut Io<'_>, event: u64, stream: u64) -> Result<(), u32> {
        self.stream(stream)?;
        if self.events.contains(&event) { Ok(()) } else { Err(INVALID_HANDLE) }
    }
    fn cuEventRecordWithFlags(&mut self, io: &mut Io<'_>, event: u64, stream: u64, _flags: u32) -> Result<(), u32> {
        self.cuEventRecord(io, event, stream)
    }
    fn cuEventSynchronize(&mut self, _io: &mut Io<'_>, event: u64) -> Result<(), u32> {
        if self.events.contains(&event) { Ok(()) } else { Err(INVALID_HANDLE) }
    }
    fn cuEventQuery(&mut self, io: &mut Io<'_>, event: u64) -> Result<(), u32> {
        self.cuEventSynchronize(io, event)
    }
    fn cuEventElapsedTime(&mut self, _io: &mut Io<'_>, start: u64, end: u64) -> Result<f32, u32> {
        if self.events.contains(&start) && self.events.contains(&end) { Ok(0.0) } else { Err(INVALID_HANDLE) }
    }
    fn cuGraphCreate(&mut self, _io: &mut Io<'_>, _flags: u32) -> Result<u64, u32> {
        let g = self.id();
        self.graphs.insert(g);
        Ok(g)
    }
    fn cuGraphDestroy(&mut self, _io: &mut Io<'_>, graph: u64) -> Result<(), u32> {
        self.capture.graphs.remove(&graph);
        self.graphs.remove(&graph).then_some(()).ok_or(INVALID_HANDLE)
    }
    fn htod_captured(&mut self, io: &mut Io<'_>, dst: u64, stream: u64, host: u64) -> Result<(), u32> {
        self.stream(stream)?;
        if !self.capture.streams.contains_key(&stream) {
            return self.write(dst, io.bulk_in);
        }
        self.region(dst, io.bulk_in.len() as u64)?;
        let id = self.id();
        self.capture.kept.insert(id, io.bulk_in.to_vec());
        self.capture.streams.get_mut(&stream).expect("capturing").push((dst, id, host));
        Ok(())
    }
    fn cuStreamBeginCapture_v2(&mut self, _io: &mut Io<'_>, stream: u64, _mode: u32) -> Result<(), u32> {
        self.stream(stream)?;
        if stream <= 2 || self.capture.streams.contains_key(&stream) {
            return Err(INVALID_VALUE);
        }
        self.capture.streams.insert(stream, Vec::new());
        Ok(())
    }
    fn cuStreamIsCapturing(&mut self, _io: &mut Io<'_>, stream: u64) -> Result<u32, u32> {
        self.stream(stream)?;
        Ok(u32::from(self.capture.streams.contains_key(&stream)))
    }
    fn cuStreamEndCapture(&mut self, _io: &mut Io<'_>, stream: u64) -> Result<u64, u32> {
        let copies = self.capture.streams.remove(&stream).ok_or(ILLEGAL_STATE)?;
        let g = self.id();
        self.graphs.insert(g);
        self.capture.graphs.insert(g, copies);
        Ok(g)
    }
    fn cuGraphInstantiateWithFlags(&mut self, _io: &mut Io<'_>, graph: u64, _flags: u64) -> Result<u64, u32> {
        if !self.graphs.contains(&graph) {
            return Err(INVALID_HANDLE);
        }
        let x = self.id();
        self.capture.execs.insert(x, self.capture.graphs.get(&graph).cloned().unwrap_or_default());
        Ok(x)
    }
    fn cuGraphLaunch(&mut self, _io: &mut Io<'_>, exec: u64, stream: u64) -> Result<(), u32> {
        self.stream(stream)?;
        let copies = self.capture.execs.get(&exec).ok_or(INVALID_HANDLE)?.clone();
        for (dst, id, _) in copies {
            let bytes = self.capture.kept.get(&id).cloned().unwrap_or_default();
            self.write(dst, &bytes)?;
        }
        Ok(())
    }
    /// A captured copy per node (the sim's graphs hold nothing else).
    fn graph_nodes(&mut self, _io: &mut Io<'_>, graph: u64) -> Result<Vec<u64>, u32> {
        let copies = self.capture.graphs.get(&graph).ok_or(INVALID_HANDLE)?;
        Ok(copies.iter().map(|c| c.1).collect())
    }
    fn cuGraphUpload(&mut self, _io: &mut Io<'_>, exec: u64, stream: u64) -> Result<(), u32> {
        self.stream(stream)?;
        self.capture.execs.get(&exec).map(|_| ()).ok_or(INVALID_HANDLE)
    }
    fn cuGraphExecDestroy(&mut self, _io: &mut Io<'_>, exec: u64) -> Result<(), u32> {
        self.capture.execs.remove(&exec).map(|_| ()).ok_or(INVALID_HANDLE)
    }
    fn captured_copies(&mut self, _io: &mut Io<'_>, graph: u64) -> Result<Vec<(u64, u64, u64)>, u32> {
        let copies = self.capture.graphs.get(&graph).ok_or(INVALID_HANDLE)?;
        let named = copies.iter().filter(|c| c.2 != 0);
        Ok(named.map(|&(_, id, host)| (host, self.capture.kept[&id].len() as u64, id)).collect())
    }
    fn refresh_captured(&mut self, io: &mut Io<'_>, id: u64) -> Result<(), u32> {
        match self.capture.kept.get_mut(&id) {
            Some(k) if k.len() == io.bulk_in.len() => {
                k.copy_from_slice(io.bulk_in);
                Ok(())
            }
            _ => Err(INVALID_VALUE),
        }
    }

    // ---------- cuBLAS. Handles and settings behave (settings are checked, then have no
    // effect). Of the forwarded functions, cublasSgemm_v2 and cublasSgemmStridedBatched
    // compute on the CPU (so the tests can check arguments and scalars end to end); every
    // other one is checked (handle, argument count, scalar bytes) and accepted without
    // effect. It cannot answer "not supported": a one-way call's error would only surface
    // at the next synchronous call, as a CUDA error unrelated to that call.
    fn cublasCreate_v2(&mut self, _io: &mut Io<'_>) -> Result<(u32, u64), u32> {
        self.device()?;
        let h = self.id();
        self.blas.insert(h, self.ctx);
        Ok((0, h))
    }
    fn cublasDestroy_v2(&mut self, _io: &mut Io<'_>, handle: u64) -> Result<u32, u32> {
        Ok(if self.blas.remove(&handle).is_some() { 0 } else { cublas::status::NOT_INITIALIZED })
    }
    fn cublas_set(&mut self, _io: &mut Io<'_>, handle: u64, what: u32, value: u64, _size: u64) -> Result<(), u32> {
        let r = if !self.blas.contains_key(&handle) {
            Err(cublas::status::NOT_INITIALIZED)
        } else {
            match what {
                cublas::SET_STREAM => self.stream(value).map_err(|_| cublas::status::INVALID_VALUE),
                cublas::SET_MATH_MODE | cublas::SET_ATOMICS_MODE | cublas::SET_WORKSPACE => Ok(()),
                _ => Err(cublas::status::INVALID_VALUE),
            }
        };
        r.map_err(cublas::deferred_code)
    }
    fn cublas_call(
        &mut self,
        _io: &mut Io<'_>,
        func: u16,
        handle: u64,
        device_scalars: bool,
        args: Vec<u64>,
        scalars: Vec<u8>,
    ) -> Result<(), u32> {
        self.blas_call(func, handle, device_scalars, &args, &scalars).map_err(cublas::deferred_code)
    }
}

impl Sim {
    fn blas_call(
        &mut self,
        func: u16,
        handle: u64,
        device_scalars: bool,
        args: &[u64],
        scalars: &[u8],
    ) -> Result<(), u32> {
        use cublas::status::{INVALID_VALUE, NOT_INITIALIZED};
        if !self.blas.contains_key(&handle) {
            return Err(NOT_INITIALIZED);
        }
        let (f, _) = cublas::decode(func, device_scalars, args, scalars).map_err(|_| INVALID_VALUE)?;
        let batched = match f.name {
            "cublasSgemm_v2" => false,
            "cublasSgemmStridedBatched" => true,
            _ => return Ok(()),
        };
        // Both are `transa transb m n k alpha A lda [strideA] B ldb [strideB] beta C ldc
        // [strideC batchCount]`: the scalars' values, then the rest by position.
        let mut scalar = |k: usize| -> Result<f32, u32> {
            let bytes = if device_scalars {
                let at = f
                    .args
                    .iter()
                    .enumerate()
                    .filter(|(_, (_, a))| matches!(a, cublas::Arg::Scalar(_)))
                    .nth(k)
                    .ok_or(INVALID_VALUE)?
                    .0;
                self.read(args[at], 4).map_err(|_| INVALID_VALUE)?
            } else {
                scalars.get(k * 4..k * 4 + 4).ok_or(INVALID_VALUE)?.to_vec()
            };
            Ok(f32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
        };
        let (alpha, beta) = (scalar(0)?, scalar(1)?);
        let int = |i: usize| args[i] as i32 as i64;
        let (ta, tb, m, n, k) = (args[0] != 0, args[1] != 0, int(2), int(3), int(4));
        let (a, lda, b, ldb, c, ldc, sa, sb, sc, count) = if batched {
            (
                args[6],
                int(7),
                args[9],
                int(10),
                args[13],
                int(14),
                args[8] as i64,
                args[11] as i64,
                args[15] as i64,
                int(16),
            )
        } else {
            (args[6], int(7), args[8], int(9), args[11], int(12), 0, 0, 0, 1)
        };
        let (ar, ac) = if ta { (k, m) } else { (m, k) };
        let (br, bc) = if tb { (n, k) } else { (k, n) };
        if m < 0 || n < 0 || k < 0 || count < 0 || lda < ar.max(1) || ldb < br.max(1) || ldc < m.max(1) {
            return Err(INVALID_VALUE);
        }
        let extent = |rows: i64, cols: i64, ld: i64| {
            if rows == 0 || cols == 0 { 0 } else { (ld * (cols - 1) + rows) as u64 * 4 }
        };
        let floats =
            |v: Vec<u8>| v.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect::<Vec<f32>>();
        for i in 0..count {
            let at = |p: u64, stride: i64| p.wrapping_add(stride.wrapping_mul(i).wrapping_mul(4) as u64);
            let av = floats(self.read(at(a, sa), extent(ar, ac, lda)).map_err(|_| INVALID_VALUE)?);
            let bv = floats(self.read(at(b, sb), extent(br, bc, ldb)).map_err(|_| INVALID_VALUE)?);
            let mut cv = floats(self.read(at(c, sc), extent(m, n, ldc)).map_err(|_| INVALID_VALUE)?);
            sgemm_reference(
                ta,
                tb,
                m as usize,
                n as usize,
                k as usize,
                alpha,
                &av,
                lda as usize,
                &bv,
                ldb as usize,
                beta,
                &mut cv,
                ldc as usize,
            );
            let out: Vec<u8> = cv.iter().flat_map(|v| v.to_le_bytes()).collect();
            self.write(at(c, sc), &out).map_err(|_| INVALID_VALUE)?;
        }
        Ok(())
    }
}

/// The sim keeps no table of functions (every name is one): only the null handle is wrong.
fn function(func: u64) -> Result<(), u32> {
    if func == 0 { Err(INVALID_HANDLE) } else { Ok(()) }
}

/// `C = alpha op(A) op(B) + beta C`, column-major, as BLAS defines it (`C` is not read
/// when `beta == 0`).
#[allow(clippy::too_many_arguments)]
fn sgemm_reference(
    ta: bool,
    tb: bool,
    m: usize,
    n: usize,
    k: usize,
    alpha: f32,
    a: &[f32],
    lda: usize,
    b: &[f32],
    ldb: usize,
    beta: f32,
    c: &mut [f32],
    ldc: usize,
) {
    for j in 0..n {
        for i in 0..m {
            let mut acc = 0f32;
            for l in 0..k {
                let x = if ta { a[l + i * lda] } else { a[i + l * lda] };
                let y = if tb { b[j + l * ldb] } else { b[l + j * ldb] };
                acc += x * y;
            }
            let old = if beta == 0.0 { 0.0 } else { beta * c[i + j * ldc] };
            c[i + j * ldc] = alpha * acc + old;
        }
    }
}

/// The kernels a PTX image declares (`.entry NAME(`), in order; none for other images.
/// A link state: the sim links PTX inputs by putting them one after another.
#[derive(Default)]
struct SimLink {
    image: Vec<u8>,
    inputs: usize,
    /// The link's JIT options and the logs it has written.
    jit: Vec<(u32, u64)>,
    info: String,
    error: String,
}

/// What a driver leaves for JIT options `jit`: each log as far as its buffer holds it with
/// its NUL, and the length written as its size option's value.
fn jit_out(jit: &[(u32, u64)], info: &str, error: &str) -> JitOut {
    use protocol::jit::{ERROR_LOG, ERROR_LOG_SIZE, INFO_LOG, INFO_LOG_SIZE, log_size};
    let fit = |log, text: &str| text.as_bytes()[..text.len().min(log_size(jit, log).saturating_sub(1))].to_vec();
    let (info_log, error_log) = (fit(INFO_LOG, info), fit(ERROR_LOG, error));
    let values = jit
        .iter()
        .map(|&(o, v)| match o {
            INFO_LOG_SIZE => info_log.len() as u64,
            ERROR_LOG_SIZE => error_log.len() as u64,
            _ => v,
        })
        .collect();
    JitOut { values, info_log, error_log }
}

/// The sim reads PTX only so far: a text that names its target must say its version.
fn ptx_check(image: &[u8]) -> Result<(), String> {
    let Ok(text) = std::str::from_utf8(image.strip_suffix(b"\0").unwrap_or(image)) else { return Ok(()) };
    if text.contains(".target") && !text.contains(".version") {
        return Err("ptxas fatal: PTX without a .version directive".into());
    }
    Ok(())
}

fn ptx_entries(image: &[u8]) -> Vec<String> {
    let Ok(text) = std::str::from_utf8(image.strip_suffix(b"\0").unwrap_or(image)) else { return Vec::new() };
    text.split(".entry")
        .skip(1)
        .filter_map(|rest| {
            let name: String =
                rest.trim_start().chars().take_while(|c| c.is_alphanumeric() || *c == '_' || *c == '$').collect();
            (!name.is_empty()).then_some(name)
        })
        .collect()
}

#[cfg(test)]
mod blas_tests {
    #[test]
    fn sgemm_reference_transposes() {
        // A = [1 2 3; 4 5 6] (2x3), B = [1 0; 0 1; 1 1] (3x2): A*B = [4 5; 10 11]
        let a = [1., 4., 2., 5., 3., 6.];
        let b = [1., 0., 1., 0., 1., 1.];
        let mut c = [1f32; 4];
        super::sgemm_reference(false, false, 2, 2, 3, 2.0, &a, 2, &b, 3, 1.0, &mut c, 2);
        assert_eq!(c, [9., 21., 11., 23.]);
        // the same with both stored transposed
        let at = [1., 2., 3., 4., 5., 6.];
        let bt = [1., 0., 0., 1., 1., 1.];
        let mut c = [f32::NAN; 4];
        super::sgemm_reference(true, true, 2, 2, 3, 1.0, &at, 3, &bt, 2, 0.0, &mut c, 2);
        assert_eq!(c, [4., 10., 5., 11.]);
    }
}

#[cfg(test)]
mod trust_tests {
    use super::*;
    use protocol::Backend;

    fn sim(limit: u64) -> Sim {
        let mut s = Sim::new(snapshot(1, 0), Some(limit));
        let mut out = Vec::new();
        let c = s.cuDevicePrimaryCtxRetain(&mut Io { bulk_in: &[], bulk_out: &mut out }, 0).unwrap();
        s.set_context(c);
        s
    }

    #[test]
    fn forged_sizes_are_errors_not_panics() {
        let mut s = sim(1 << 20);
        let mut out = Vec::new();
        let mut io = Io { bulk_in: &[], bulk_out: &mut out };
        assert_eq!(s.cuMemAlloc_v2(&mut io, u64::MAX), Err(OUT_OF_MEMORY));
        assert_eq!(s.cuMemAllocPitch_v2(&mut io, u64::MAX, 2, 4), Err(INVALID_VALUE));
        assert_eq!(s.cuMemAllocPitch_v2(&mut io, 1 << 40, 1 << 40, 4), Err(OUT_OF_MEMORY));
        assert_eq!(s.cuMemAddressReserve(&mut io, u64::MAX, 0, 0, 0), Err(OUT_OF_MEMORY));
        assert_eq!(s.cuMemCreate(&mut io, u64::MAX, Vec::new(), 0), Err(OUT_OF_MEMORY));
        let p = s.cuMemAlloc_v2(&mut io, 4096).unwrap();
        // Memsets and 2D copies are checked whole before any buffer is sized from them.
        assert_eq!(s.memset(&mut io, p, 1, 4, u64::MAX, 1, 0, 0), Err(INVALID_VALUE));
        assert_eq!(s.memset(&mut io, p, 1, 1, 1 << 40, 1, 0, 0), Err(INVALID_VALUE));
        assert_eq!(s.memset(&mut io, p, 1, 1, 16, u64::MAX, 0, 0), Err(INVALID_VALUE), "overlapping rows");
        assert_eq!(s.memset(&mut io, p, 1, 1, 16, u64::MAX, 64, 0), Err(INVALID_VALUE));
        assert_eq!(s.memset(&mut io, p, 1, 1, 16, 2, u64::MAX, 0), Err(INVALID_VALUE));
        assert_eq!(s.memset(&mut io, p, 1, 1, 64, 64, 64, 0), Ok(()));
        let c = Copy2D {
            src_device: Some(p),
            src_x: 0,
            src_y: 0,
            src_pitch: 0,
            dst_device: None,
            dst_x: 0,
            dst_y: 0,
            dst_pitch: 0,
            width: 1,
            height: u64::MAX,
        };
        assert_eq!(s.cuMemcpy2D_v2(&mut io, c, 0), Err(INVALID_VALUE));
        let c = Copy2D { src_pitch: u64::MAX, height: 2, ..c };
        assert_eq!(s.cuMemcpy2D_v2(&mut io, c, 0), Err(INVALID_VALUE));
        let c = Copy2D { src_device: None, dst_device: Some(p), dst_pitch: 64, width: 64, height: 4, ..c };
        assert_eq!(s.cuMemcpy2D_v2(&mut io, c, 0), Err(INVALID_VALUE), "bulk shorter than the copy");
        let c = Copy2D { src_pitch: 64, ..c };
        let bulk = [9u8; 256];
        let mut io = Io { bulk_in: &bulk, bulk_out: &mut out };
        assert_eq!(s.cuMemcpy2D_v2(&mut io, c, 0), Ok(()));
    }

    #[test]
    fn vmm_memory_stays_within_the_quota() {
        let mut s = sim(4 << 20);
        let mut out = Vec::new();
        let mut io = Io { bulk_in: &[], bulk_out: &mut out };
        let va = s.cuMemAddressReserve(&mut io, 8 << 20, 0, 0, 0).unwrap();
        let h = s.cuMemCreate(&mut io, 2 << 20, Vec::new(), 0).unwrap();
        s.cuMemMap(&mut io, va, 2 << 20, 0, h, 0).unwrap();
        // The same handle again, or over the mapping: refused (the sim cannot alias).
        assert_eq!(s.cuMemMap(&mut io, va + (4 << 20), 2 << 20, 0, h, 0), Err(INVALID_VALUE));
        let h2 = s.cuMemCreate(&mut io, 2 << 20, Vec::new(), 0).unwrap();
        assert_eq!(s.cuMemMap(&mut io, va + (1 << 20), 2 << 20, 0, h2, 0), Err(INVALID_VALUE));
        assert_eq!(s.cuMemMap(&mut io, u64::MAX - 1, 2 << 20, 0, h2, 0), Err(INVALID_VALUE));
        // Released while mapped (as ggml's pool does): the quota comes back at unmap.
        s.cuMemRelease(&mut io, h).unwrap();
        assert_eq!(s.cuMemRelease(&mut io, h), Err(INVALID_VALUE));
        assert_eq!(s.cuMemMap(&mut io, va + (4 << 20), 2 << 20, 0, h, 0), Err(INVALID_VALUE));
        assert_eq!(s.cuMemCreate(&mut io, 1, Vec::new(), 0), Err(OUT_OF_MEMORY));
        s.cuMemUnmap(&mut io, va, 2 << 20).unwrap();
        let h3 = s.cuMemCreate(&mut io, 2 << 20, Vec::new(), 0).unwrap();
        s.cuMemMap(&mut io, va, 2 << 20, 0, h3, 0).unwrap();
        assert_eq!(s.cuMemGetInfo_v2(&mut io), Ok((0, 4 << 20)));
    }
}
