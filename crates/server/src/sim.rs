//! The `sim` backend: a CPU stand-in for one or more H100-like GPUs, so the whole client
//! side can be tested on machines with no GPU. Device memory is host memory; copies,
//! memsets, streams, events, contexts, virtual memory and module uploads behave; kernels
//! cannot run and say so (`CUDA_ERROR_NOT_SUPPORTED`).

use crate::Session;
use device_model::Snapshot;
use protocol::{nvml, Copy2D, FuncInfo, Io, NvmlOut};
use std::collections::{BTreeMap, HashMap, HashSet};

const INVALID_VALUE: u32 = 1;
const OUT_OF_MEMORY: u32 = 2;
const INVALID_CONTEXT: u32 = 201;
const FILE_NOT_FOUND: u32 = 301;
const INVALID_HANDLE: u32 = 400;
const NOT_FOUND: u32 = 500;
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

/// A piece of sim device memory: a whole allocation, or a physical handle mapped into
/// reserved address space.
struct Region {
    data: Vec<u8>,
    device: usize,
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
    reserved: BTreeMap<u64, u64>,
    streams: HashSet<u64>,
    events: HashSet<u64>,
    modules: HashSet<u64>,
    images: HashMap<[u8; 32], usize>,
    graphs: HashSet<u64>,
    next: u64,
    next_addr: u64,
    used: Vec<u64>,
}

impl Sim {
    pub fn new(snapshot: Snapshot, limit: Option<u64>) -> Sim {
        let n = snapshot.devices.len();
        Sim {
            snapshot,
            limit,
            ctx: 0,
            contexts: HashMap::new(),
            primary: HashMap::new(),
            regions: BTreeMap::new(),
            handles: HashMap::new(),
            mapped: HashMap::new(),
            reserved: BTreeMap::new(),
            streams: HashSet::new(),
            events: HashSet::new(),
            modules: HashSet::new(),
            images: HashMap::new(),
            graphs: HashSet::new(),
            next: 0x1000,
            next_addr: 0x7f00_0000_0000,
            used: vec![0; n],
        }
    }

    fn id(&mut self) -> u64 {
        self.next += 0x10;
        self.next
    }

    fn device(&self) -> Result<usize, u32> {
        self.contexts.get(&self.ctx).copied().ok_or(INVALID_CONTEXT)
    }

    fn total(&self, dev: usize) -> u64 {
        let t = self.snapshot.devices[dev].total_mem;
        self.limit.map_or(t, |l| t.min(l))
    }

    fn address_space(&mut self, size: u64) -> u64 {
        let a = self.next_addr;
        self.next_addr += size.div_ceil(1 << 21).max(1) << 21;
        a
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
        if self.used[dev] + size > self.total(dev) {
            return Err(OUT_OF_MEMORY);
        }
        // Sim memory is real host memory: refuse what the host cannot give.
        let mut data = Vec::new();
        data.try_reserve_exact(size as usize).map_err(|_| OUT_OF_MEMORY)?;
        data.resize(size as usize, 0);
        let a = self.address_space(size);
        self.used[dev] += size;
        self.regions.insert(a, Region { data, device: dev });
        Ok(a)
    }
}

impl Session for Sim {
    fn set_context(&mut self, ctx: u64) {
        self.ctx = ctx;
    }
}

impl protocol::Backend for Sim {
    fn nvml_call(&mut self, io: &mut Io<'_>, func: u16, device: u32, _args: [u64; 3]) -> Result<NvmlOut, u32> {
        let Some(&(name, _)) = nvml::FUNCS.get(func as usize) else {
            return Ok(NvmlOut { ret: NVML_ERROR_INVALID_ARGUMENT, aux: 0 });
        };
        let dev = device as usize;
        if dev >= self.snapshot.devices.len() {
            return Ok(NvmlOut { ret: NVML_ERROR_INVALID_ARGUMENT, aux: 0 });
        }
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
            "nvmlDeviceGetComputeMode" | "nvmlDeviceGetPersistenceMode" | "nvmlDeviceGetDisplayMode"
            | "nvmlDeviceGetDisplayActive" => put(&mut out, 0, &0u32.to_le_bytes()),
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
    fn cuMemAllocPitch_v2(&mut self, _io: &mut Io<'_>, width: u64, height: u64, _elem: u32) -> Result<(u64, u64), u32> {
        let pitch = width.div_ceil(512) * 512;
        Ok((self.alloc(pitch * height)?, pitch))
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
        self.stream(stream)?;
        self.write(dst, io.bulk_in)
    }
    fn cuMemcpyDtoH_v2(&mut self, io: &mut Io<'_>, src: u64, size: u64) -> Result<(), u32> {
        *io.bulk_out = self.read(src, size)?;
        Ok(())
    }
    fn cuMemcpyDtoHAsync_v2(&mut self, io: &mut Io<'_>, src: u64, size: u64, stream: u64) -> Result<(), u32> {
        self.stream(stream)?;
        *io.bulk_out = self.read(src, size)?;
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
        let (w, h) = (c.width as usize, c.height as usize);
        let mut packed = Vec::with_capacity(w * h);
        for row in 0..c.height {
            match c.src_device {
                Some(p) => packed.extend(self.read(p + (c.src_y + row) * c.src_pitch + c.src_x, c.width)?),
                None => {
                    let at = row as usize * w;
                    packed.extend_from_slice(io.bulk_in.get(at..at + w).ok_or(INVALID_VALUE)?)
                }
            }
        }
        match c.dst_device {
            Some(p) => {
                for row in 0..h {
                    self.write(p + (c.dst_y + row as u64) * c.dst_pitch + c.dst_x, &packed[row * w..(row + 1) * w])?;
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
        let row: Vec<u8> = pattern.iter().copied().cycle().take(width as usize * elem as usize).collect();
        for r in 0..height {
            self.write(dst + r * pitch, &row)?;
        }
        Ok(())
    }

    fn cuMemAddressReserve(&mut self, _io: &mut Io<'_>, size: u64, _align: u64, _addr: u64, _flags: u64) -> Result<u64, u32> {
        let a = self.address_space(size);
        self.reserved.insert(a, size);
        Ok(a)
    }
    fn cuMemAddressFree(&mut self, _io: &mut Io<'_>, ptr: u64, _size: u64) -> Result<(), u32> {
        self.reserved.remove(&ptr).map(|_| ()).ok_or(INVALID_VALUE)
    }
    fn cuMemCreate(&mut self, _io: &mut Io<'_>, size: u64, _prop: Vec<u8>, _flags: u64) -> Result<u64, u32> {
        let d = self.device()?;
        if self.used[d] + size > self.total(d) {
            return Err(OUT_OF_MEMORY);
        }
        self.used[d] += size;
        let h = self.id();
        self.handles.insert(h, (size, d));
        Ok(h)
    }
    fn cuMemRelease(&mut self, _io: &mut Io<'_>, handle: u64) -> Result<(), u32> {
        let (size, d) = self.handles.remove(&handle).ok_or(INVALID_VALUE)?;
        self.used[d] -= size;
        Ok(())
    }
    fn cuMemMap(&mut self, _io: &mut Io<'_>, ptr: u64, size: u64, _offset: u64, handle: u64, _flags: u64) -> Result<(), u32> {
        let &(hsize, d) = self.handles.get(&handle).ok_or(INVALID_VALUE)?;
        let inside = self.reserved.range(..=ptr).next_back().is_some_and(|(&b, &l)| ptr + size <= b + l);
        if !inside || size > hsize {
            return Err(INVALID_VALUE);
        }
        self.regions.insert(ptr, Region { data: vec![0; size as usize], device: d });
        self.mapped.insert(ptr, handle);
        Ok(())
    }
    fn cuMemUnmap(&mut self, _io: &mut Io<'_>, ptr: u64, _size: u64) -> Result<(), u32> {
        self.mapped.remove(&ptr).ok_or(INVALID_VALUE)?;
        self.regions.remove(&ptr);
        Ok(())
    }
    fn cuMemSetAccess(&mut self, _io: &mut Io<'_>, ptr: u64, _size: u64, _desc: Vec<u8>, _count: u64) -> Result<(), u32> {
        if self.mapped.contains_key(&ptr) { Ok(()) } else { Err(INVALID_VALUE) }
    }
    fn cuMemGetAllocationGranularity(&mut self, _io: &mut Io<'_>, _prop: Vec<u8>, _option: u32) -> Result<u64, u32> {
        Ok(2 << 20)
    }

    fn module_load(&mut self, io: &mut Io<'_>, hash: [u8; 32], _kind: u8) -> Result<u64, u32> {
        if !io.bulk_in.is_empty() {
            if *blake3::hash(io.bulk_in).as_bytes() != hash {
                return Err(INVALID_VALUE);
            }
            self.images.insert(hash, io.bulk_in.len());
        } else if !self.images.contains_key(&hash) {
            return Err(FILE_NOT_FOUND);
        }
        self.device()?;
        let m = self.id();
        self.modules.insert(m);
        Ok(m)
    }
    fn cuModuleUnload(&mut self, _io: &mut Io<'_>, module: u64) -> Result<(), u32> {
        self.modules.remove(&module).then_some(()).ok_or(INVALID_HANDLE)
    }
    fn cuModuleGetFunction(&mut self, _io: &mut Io<'_>, module: u64, _name: String) -> Result<FuncInfo, u32> {
        if !self.modules.contains(&module) {
            return Err(INVALID_HANDLE);
        }
        // The sim cannot look inside images, so it knows no functions.
        Err(NOT_FOUND)
    }
    fn cuLaunchKernel(&mut self, _io: &mut Io<'_>, _f: u64, _g: [u32; 3], _b: [u32; 3], _s: u32, _st: u64) -> Result<(), u32> {
        Err(NOT_SUPPORTED)
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
    fn cuStreamQuery(&mut self, _io: &mut Io<'_>, stream: u64) -> Result<(), u32> {
        self.stream(stream)
    }
    fn cuStreamWaitEvent(&mut self, _io: &mut Io<'_>, stream: u64, event: u64, _flags: u32) -> Result<(), u32> {
        self.stream(stream)?;
        if self.events.contains(&event) { Ok(()) } else { Err(INVALID_HANDLE) }
    }
    fn cuStreamIsCapturing(&mut self, _io: &mut Io<'_>, stream: u64) -> Result<u32, u32> {
        self.stream(stream).map(|_| 0)
    }
    fn cuStreamGetPriority(&mut self, _io: &mut Io<'_>, stream: u64) -> Result<i32, u32> {
        self.stream(stream).map(|_| 0)
    }
    fn cuStreamGetFlags(&mut self, _io: &mut Io<'_>, stream: u64) -> Result<u32, u32> {
        self.stream(stream).map(|_| 0)
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
        self.graphs.remove(&graph).then_some(()).ok_or(INVALID_HANDLE)
    }
}
