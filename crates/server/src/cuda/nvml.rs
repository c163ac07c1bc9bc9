//! Forwarded NVML calls (`protocol::nvml`): the function is named by its index in the
//! table, resolved by name in the real `libnvidia-ml.so.1` (loaded on first use), and
//! called according to its signature class with the client's buffer.
//!
//! The table also names the C output types, so the server knows each buffer's exact size
//! (and where a `DevOuts` buffer splits) and refuses buffers of any other length: the real
//! NVML never writes past what the client sent.
//!
//! Under a memory limit, `nvmlDeviceGetMemoryInfo` (and `_v2`) report what
//! `cuMemGetInfo` reports: the total capped by the limit, the free memory by what the
//! session has left of it.

use super::CudaSession;
use abi::nvml::*;
use protocol::nvml::{FUNCS, Sig};
use protocol::{Io, NvmlOut};
use std::collections::HashMap;
use std::os::raw::{c_char, c_int, c_uint, c_void};
use zerocopy::IntoBytes;

const SUCCESS: u32 = 0;
const INVALID_ARGUMENT: u32 = nvmlReturn_t::NVML_ERROR_INVALID_ARGUMENT.0;
const FUNCTION_NOT_FOUND: u32 = nvmlReturn_t::NVML_ERROR_FUNCTION_NOT_FOUND.0;
const LIBRARY_NOT_FOUND: u32 = nvmlReturn_t::NVML_ERROR_LIBRARY_NOT_FOUND.0;

macro_rules! __nvml_sizes {
    ( $( $class:ident fn $name:ident $( ( $($t:ty),* ) )? ; )* ) => {
        /// Each forwarded function's name and the sizes of its C output types, in table order.
        pub const SIZES: &[(&str, &[usize])] = &[ $( (stringify!($name), &[ $( $( size_of::<$t>() ),* )? ]) ),* ];
    };
}
protocol::nvml_functions!(__nvml_sizes);

/// The C type of each class, with every output as bytes.
type DevOut = unsafe extern "C" fn(nvmlDevice_t, *mut u8) -> nvmlReturn_t;
type DevOuts2 = unsafe extern "C" fn(nvmlDevice_t, *mut u8, *mut u8) -> nvmlReturn_t;
type DevOuts3 = unsafe extern "C" fn(nvmlDevice_t, *mut u8, *mut u8, *mut u8) -> nvmlReturn_t;
type DevOuts4 = unsafe extern "C" fn(nvmlDevice_t, *mut u8, *mut u8, *mut u8, *mut u8) -> nvmlReturn_t;
type DevArgOut = unsafe extern "C" fn(nvmlDevice_t, c_uint, *mut u8) -> nvmlReturn_t;
type DevArg2Out = unsafe extern "C" fn(nvmlDevice_t, c_uint, c_uint, *mut u8) -> nvmlReturn_t;
type DevArg3Out = unsafe extern "C" fn(nvmlDevice_t, c_uint, c_uint, c_uint, *mut u8) -> nvmlReturn_t;
type DevBuf = unsafe extern "C" fn(nvmlDevice_t, *mut c_char, c_uint) -> nvmlReturn_t;
type DevArgBuf = unsafe extern "C" fn(nvmlDevice_t, c_uint, *mut c_char, c_uint) -> nvmlReturn_t;
type DevArray = unsafe extern "C" fn(nvmlDevice_t, *mut c_uint, *mut u8) -> nvmlReturn_t;
type DevArgArray = unsafe extern "C" fn(nvmlDevice_t, c_int, *mut u8) -> nvmlReturn_t;
type DevArgCountArray = unsafe extern "C" fn(nvmlDevice_t, c_uint, *mut c_uint, *mut u8) -> nvmlReturn_t;
type SysOut = unsafe extern "C" fn(*mut u8) -> nvmlReturn_t;

/// How a call is made, once its buffer length is checked against the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// One output.
    Out,
    /// Several (`DevOuts`), one after the other; those whose bit is set in `nulls` are NULL
    /// and take no bytes.
    Outs { nulls: u8 },
    /// A string buffer of `len` bytes.
    Buf { len: u32 },
    /// An array of `count` elements (`DevArray`: count in and out).
    Array { count: u32 },
}

/// Check the client's buffer (`len` bytes, `args`) against what function `func` takes.
pub fn shape(func: usize, len: usize, args: [u64; 3]) -> Option<Shape> {
    let (_, sig) = *FUNCS.get(func)?;
    let sizes = SIZES.get(func)?.1;
    let exact = |n: u64| (n == len as u64).then_some(());
    let count = |n: u64| u32::try_from(n).ok().filter(|_| n.checked_mul(sizes[0] as u64) == Some(len as u64));
    Some(match sig {
        Sig::DevOut | Sig::DevArgOut | Sig::DevArg2Out | Sig::DevArg3Out | Sig::SysOut => {
            exact(sizes[0] as u64)?;
            Shape::Out
        }
        Sig::DevOuts => {
            let nulls = u8::try_from(args[0]).ok().filter(|&m| (m as u64) < 1 << sizes.len())?;
            exact(present(sizes, nulls).sum::<usize>() as u64)?;
            Shape::Outs { nulls }
        }
        Sig::DevBuf => {
            exact(args[0])?;
            Shape::Buf { len: len as u32 }
        }
        Sig::DevArgBuf => {
            exact(args[1])?;
            Shape::Buf { len: len as u32 }
        }
        Sig::DevArray | Sig::DevArgArray => Shape::Array { count: count(args[0])? },
        Sig::DevArgCountArray => Shape::Array { count: count(args[1])? },
    })
}

/// A call whose count goes in and out (`DevArray`, `DevArgCountArray`): `f` gets the count
/// and the array, NULL for a count of 0 (how NVML is asked for the count alone); the count
/// it leaves becomes the reply's `aux`.
fn counted(
    count: u32,
    p: *mut u8,
    aux: &mut u64,
    f: impl FnOnce(*mut c_uint, *mut u8) -> nvmlReturn_t,
) -> nvmlReturn_t {
    let mut c = count as c_uint;
    let r = f(&mut c, if count == 0 { std::ptr::null_mut() } else { p });
    *aux = c as u64;
    r
}

/// The sizes of the outputs that are not NULL.
fn present(sizes: &[usize], nulls: u8) -> impl Iterator<Item = usize> + '_ {
    sizes.iter().enumerate().filter(move |(i, _)| nulls & (1 << i) == 0).map(|(_, &s)| s)
}

/// Call a `DevOuts` function with the client's outputs (in `buf`, one after the other),
/// each in an 8-byte-aligned buffer of its own (a `u64` may follow a `u32` in the wire's
/// buffer), NULL where the client passed NULL; the outputs are written back into `buf`.
///
/// # Safety
/// `sym` is a function of `sizes.len()` output pointers whose types have `sizes`, and
/// `buf` holds the present outputs (see [`shape`]).
unsafe fn call_outs(sym: usize, dev: nvmlDevice_t, sizes: &[usize], nulls: u8, buf: &mut [u8]) -> nvmlReturn_t {
    let mut parts: Vec<Option<Vec<u64>>> = Vec::with_capacity(sizes.len());
    let mut at = 0;
    for (i, &n) in sizes.iter().enumerate() {
        parts.push((nulls & (1 << i) == 0).then(|| {
            let mut w = vec![0u64; n.div_ceil(8)];
            w.as_mut_slice().as_mut_bytes()[..n].copy_from_slice(&buf[at..at + n]);
            at += n;
            w
        }));
    }
    let mut p: Vec<*mut u8> =
        parts.iter_mut().map(|w| w.as_mut().map_or(std::ptr::null_mut(), |w| w.as_mut_ptr().cast())).collect();
    let r = unsafe {
        match p.as_mut_slice() {
            [a, b] => std::mem::transmute::<usize, DevOuts2>(sym)(dev, *a, *b),
            [a, b, c] => std::mem::transmute::<usize, DevOuts3>(sym)(dev, *a, *b, *c),
            [a, b, c, d] => std::mem::transmute::<usize, DevOuts4>(sym)(dev, *a, *b, *c, *d),
            _ => nvmlReturn_t::NVML_ERROR_INVALID_ARGUMENT,
        }
    };
    let mut at = 0;
    for (w, &n) in parts.iter().zip(sizes) {
        if let Some(w) = w {
            buf[at..at + n].copy_from_slice(&w.as_bytes()[..n]);
            at += n;
        }
    }
    r
}

/// Functions that list the processes using the GPU (or their accounting records).
pub fn is_process_list(name: &str) -> bool {
    name.contains("RunningProcesses") || name == "nvmlDeviceGetAccountingPids"
}

/// Rewrite an NVML memory struct as the session sees it under `limit`, having `used`.
pub fn patch_memory(name: &str, buf: &mut [u8], limit: u64, used: u64) {
    let get = |b: &[u8], at: usize| u64::from_ne_bytes(b[at..at + 8].try_into().unwrap());
    let put = |b: &mut [u8], at: usize, v: u64| b[at..at + 8].copy_from_slice(&v.to_ne_bytes());
    match name {
        // nvmlMemory_t { total, free, used }
        "nvmlDeviceGetMemoryInfo" if buf.len() >= 24 => {
            let total = get(buf, 0).min(limit);
            let free = get(buf, 8).min(limit.saturating_sub(used)).min(total);
            put(buf, 0, total);
            put(buf, 8, free);
            put(buf, 16, total - free);
        }
        // nvmlMemory_v2_t { version, (pad), total, reserved, free, used }
        "nvmlDeviceGetMemoryInfo_v2" if buf.len() >= 40 => {
            let total = get(buf, 8).min(limit);
            let free = get(buf, 24).min(limit.saturating_sub(used)).min(total);
            let reserved = get(buf, 16).min(total - free);
            put(buf, 8, total);
            put(buf, 16, reserved);
            put(buf, 24, free);
            put(buf, 32, total - free - reserved);
        }
        _ => {}
    }
}

/// The loaded library, or why there is none.
struct Nvml {
    lib: &'static NvmlLib,
    raw: &'static libloading::Library,
    /// Resolved symbols by table index (`None`: not yet looked up; `Some(None)`: absent).
    syms: Vec<Option<Option<usize>>>,
    handles: HashMap<u32, usize>,
}

#[derive(Default)]
pub struct NvmlState {
    loaded: Option<Result<Nvml, u32>>,
}

impl NvmlState {
    /// Like the driver, the library is never unloaded; `nvmlShutdown` balances our init.
    pub fn shutdown(&mut self) {
        if let Some(Ok(n)) = self.loaded.take()
            && let Ok(f) = n.lib.nvmlShutdown.as_ref()
        {
            unsafe { f() };
        }
    }

    fn get(&mut self) -> Result<&mut Nvml, u32> {
        self.loaded.get_or_insert_with(load).as_mut().map_err(|e| *e)
    }
}

fn load() -> Result<Nvml, u32> {
    let open = || unsafe { libloading::Library::new("libnvidia-ml.so.1") };
    let (Ok(a), Ok(b)) = (open(), open()) else {
        tracing::warn!("cannot load libnvidia-ml.so.1: NVML calls fail");
        return Err(LIBRARY_NOT_FOUND);
    };
    let lib: &'static NvmlLib = match unsafe { NvmlLib::from_library(a) } {
        Ok(l) => Box::leak(Box::new(l)),
        Err(_) => return Err(LIBRARY_NOT_FOUND),
    };
    let init = lib.nvmlInit_v2.as_ref().map_err(|_| FUNCTION_NOT_FOUND)?;
    let r = unsafe { init() }.0;
    if r != SUCCESS {
        tracing::warn!("nvmlInit_v2 failed with {r}");
        return Err(r);
    }
    Ok(Nvml { lib, raw: Box::leak(Box::new(b)), syms: vec![None; FUNCS.len()], handles: HashMap::new() })
}

impl Nvml {
    fn symbol(&mut self, func: usize) -> Option<usize> {
        *self.syms[func].get_or_insert_with(|| {
            let name = format!("{}\0", FUNCS[func].0);
            unsafe { self.raw.get::<*mut c_void>(name.as_bytes()) }.ok().map(|s| *s as usize).filter(|&p| p != 0)
        })
    }

    fn device(&mut self, index: u32) -> Result<nvmlDevice_t, u32> {
        if let Some(&h) = self.handles.get(&index) {
            return Ok(h as nvmlDevice_t);
        }
        let f = self.lib.nvmlDeviceGetHandleByIndex_v2.as_ref().map_err(|_| FUNCTION_NOT_FOUND)?;
        let mut h: nvmlDevice_t = std::ptr::null_mut();
        let r = unsafe { f(index, &mut h) }.0;
        if r != SUCCESS {
            return Err(r);
        }
        self.handles.insert(index, h as usize);
        Ok(h)
    }
}

impl CudaSession {
    /// Always an `NvmlOut`: NVML's failures are its return codes, not transport errors.
    pub(super) fn nvml_forward(&mut self, io: &mut Io<'_>, func: u16, device: u32, args: [u64; 3]) -> NvmlOut {
        let ret = |ret: u32| NvmlOut { ret, aux: 0 };
        let func = func as usize;
        let Some(shape) = shape(func, io.bulk_in.len(), args) else {
            return ret(INVALID_ARGUMENT);
        };
        let (name, sig) = FUNCS[func];
        // The GPU's processes are other clients' sessions: a tenant sees none of them, as
        // nvidia-smi's internal process list through vgpu shows none either.
        if is_process_list(name) {
            io.bulk_out.clear();
            io.bulk_out.extend_from_slice(io.bulk_in);
            return NvmlOut { ret: SUCCESS, aux: 0 };
        }
        let n = match self.nvml.get() {
            Ok(n) => n,
            Err(e) => return ret(e),
        };
        let Some(sym) = n.symbol(func) else {
            return ret(FUNCTION_NOT_FOUND);
        };
        let dev = if sig == Sig::SysOut {
            std::ptr::null_mut()
        } else {
            match n.device(device) {
                Ok(d) => d,
                Err(e) => return ret(e),
            }
        };
        // 8-byte aligned: the outputs are structs of 64-bit fields.
        let len = io.bulk_in.len();
        let mut words = vec![0u64; len.div_ceil(8)];
        let buf = unsafe { std::slice::from_raw_parts_mut(words.as_mut_ptr().cast::<u8>(), len) };
        buf.copy_from_slice(io.bulk_in);
        let p = buf.as_mut_ptr();
        let (a0, a1, a2) = (args[0] as c_uint, args[1] as c_uint, args[2] as c_uint);
        let mut aux = 0u64;
        // The symbol is the function the table names, and `shape` checked the buffer
        // against its C types, so calling it through its class's type is sound.
        let r = unsafe {
            match (sig, shape) {
                (Sig::DevOut, _) => std::mem::transmute::<usize, DevOut>(sym)(dev, p),
                (Sig::DevOuts, Shape::Outs { nulls }) => call_outs(sym, dev, SIZES[func].1, nulls, buf),
                (Sig::DevArgOut, _) => std::mem::transmute::<usize, DevArgOut>(sym)(dev, a0, p),
                (Sig::DevArg2Out, _) => std::mem::transmute::<usize, DevArg2Out>(sym)(dev, a0, a1, p),
                (Sig::DevArg3Out, _) => std::mem::transmute::<usize, DevArg3Out>(sym)(dev, a0, a1, a2, p),
                (Sig::DevBuf, Shape::Buf { len }) => std::mem::transmute::<usize, DevBuf>(sym)(dev, p.cast(), len),
                (Sig::DevArgBuf, Shape::Buf { len }) => {
                    std::mem::transmute::<usize, DevArgBuf>(sym)(dev, a0, p.cast(), len)
                }
                (Sig::DevArray, Shape::Array { count }) => {
                    counted(count, p, &mut aux, |c, arr| std::mem::transmute::<usize, DevArray>(sym)(dev, c, arr))
                }
                (Sig::DevArgArray, Shape::Array { count }) => {
                    std::mem::transmute::<usize, DevArgArray>(sym)(dev, count as c_int, p)
                }
                (Sig::DevArgCountArray, Shape::Array { count }) => counted(count, p, &mut aux, |c, arr| {
                    std::mem::transmute::<usize, DevArgCountArray>(sym)(dev, a0, c, arr)
                }),
                (Sig::SysOut, _) => std::mem::transmute::<usize, SysOut>(sym)(p),
                _ => return ret(INVALID_ARGUMENT),
            }
        }
        .0;
        if r == SUCCESS
            && let Some(limit) = self.limit
        {
            let used = self
                .snapshot
                .devices
                .iter()
                .find(|d| d.nvml_index == device)
                .and_then(|d| self.used.get(d.cuda_ordinal as usize))
                .copied()
                .unwrap_or(0);
            patch_memory(name, buf, limit, used);
        }
        io.bulk_out.clear();
        io.bulk_out.extend_from_slice(buf);
        NvmlOut { ret: r, aux }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn process_lists_are_private() {
        assert!(super::is_process_list("nvmlDeviceGetComputeRunningProcesses_v3"));
        assert!(super::is_process_list("nvmlDeviceGetGraphicsRunningProcesses"));
        assert!(super::is_process_list("nvmlDeviceGetAccountingPids"));
        assert!(!super::is_process_list("nvmlDeviceGetMemoryInfo"));
    }
    use protocol::nvml::index_of;

    fn idx(name: &str) -> usize {
        index_of(name).unwrap() as usize
    }

    #[test]
    fn sizes_follow_the_table() {
        assert_eq!(SIZES.len(), FUNCS.len());
        for (s, f) in SIZES.iter().zip(FUNCS) {
            assert_eq!(s.0, f.0);
            match f.1 {
                Sig::DevBuf | Sig::DevArgBuf => assert_eq!(s.1.len(), 0, "{}", f.0),
                Sig::DevOuts => assert!((2..=4).contains(&s.1.len()), "{}", f.0),
                _ => assert_eq!(s.1.len(), 1, "{}", f.0),
            }
        }
        assert_eq!(SIZES[idx("nvmlDeviceGetMemoryInfo")].1, &[24]);
        assert_eq!(SIZES[idx("nvmlDeviceGetMemoryInfo_v2")].1, &[40]);
    }

    #[test]
    fn buffers_must_match_their_types() {
        let mem = idx("nvmlDeviceGetMemoryInfo");
        assert_eq!(shape(mem, 24, [0; 3]), Some(Shape::Out));
        assert_eq!(shape(mem, 23, [0; 3]), None);
        assert_eq!(shape(9999, 24, [0; 3]), None);
        let buf = idx("nvmlDeviceGetInforomImageVersion");
        assert_eq!(shape(buf, 16, [16, 0, 0]), Some(Shape::Buf { len: 16 }));
        assert_eq!(shape(buf, 16, [17, 0, 0]), None);
        let argbuf = idx("nvmlDeviceGetInforomVersion");
        assert_eq!(shape(argbuf, 16, [2, 16, 0]), Some(Shape::Buf { len: 16 }));
        let arr = idx("nvmlDeviceGetSupportedMemoryClocks");
        assert_eq!(shape(arr, 0, [0; 3]), Some(Shape::Array { count: 0 }));
        assert_eq!(shape(arr, 12, [3, 0, 0]), Some(Shape::Array { count: 3 }));
        assert_eq!(shape(arr, 12, [4, 0, 0]), None);
        assert_eq!(shape(arr, 0, [u64::MAX, 0, 0]), None);
        // The retired pages' count comes after the cause.
        let pages = idx("nvmlDeviceGetRetiredPages");
        assert_eq!(shape(pages, 16, [1, 2, 0]), Some(Shape::Array { count: 2 }));
        assert_eq!(shape(pages, 16, [2, 1, 0]), None);
        let ecc = idx("nvmlDeviceGetMemoryErrorCounter");
        assert_eq!(shape(ecc, 8, [0, 1, 2]), Some(Shape::Out));
        assert_eq!(shape(ecc, 4, [0, 1, 2]), None);
    }

    #[test]
    fn several_outputs_may_each_be_null() {
        let ecc = idx("nvmlDeviceGetEccMode"); // (unsigned, unsigned)
        assert_eq!(shape(ecc, 8, [0; 3]), Some(Shape::Outs { nulls: 0 }));
        assert_eq!(shape(ecc, 4, [0; 3]), None, "both present: 8 bytes");
        assert_eq!(shape(ecc, 4, [0b10, 0, 0]), Some(Shape::Outs { nulls: 0b10 }), "pending NULL");
        assert_eq!(shape(ecc, 0, [0b11, 0, 0]), Some(Shape::Outs { nulls: 0b11 }));
        assert_eq!(shape(ecc, 0, [0b100, 0, 0]), None, "no third output");
        let bbx = idx("nvmlDeviceGetLastBBXFlushTime"); // (unsigned long long, unsigned long)
        assert_eq!(shape(bbx, 16, [0; 3]), Some(Shape::Outs { nulls: 0 }));
        assert_eq!(shape(bbx, 8, [0b01, 0, 0]), Some(Shape::Outs { nulls: 0b01 }));
        let rows = idx("nvmlDeviceGetRemappedRows"); // four unsigned
        assert_eq!(shape(rows, 16, [0; 3]), Some(Shape::Outs { nulls: 0 }));
        assert_eq!(shape(rows, 12, [0b0100, 0, 0]), Some(Shape::Outs { nulls: 0b0100 }));
    }

    #[test]
    fn outputs_are_called_aligned_and_written_back() {
        // A stand-in for NVML: writes 1, 2, 3... into each output it is given, as its type.
        unsafe extern "C" fn three(_: nvmlDevice_t, a: *mut u8, b: *mut u8, c: *mut u8) -> nvmlReturn_t {
            for (i, p) in [a, b, c].into_iter().enumerate() {
                if !p.is_null() {
                    assert_eq!(p as usize % 8, 0, "output {i} aligned");
                    unsafe { p.cast::<u32>().write(i as u32 + 1) };
                }
            }
            nvmlReturn_t::NVML_SUCCESS
        }
        let sym = three as *const () as usize;
        let mut buf = [0u8; 8];
        let r = unsafe { call_outs(sym, std::ptr::null_mut(), &[4, 4, 4], 0b010, &mut buf) };
        assert_eq!(r, nvmlReturn_t::NVML_SUCCESS);
        assert_eq!(buf, [1, 0, 0, 0, 3, 0, 0, 0], "the first and third, in the client's order");
    }

    #[test]
    fn memory_info_under_a_quota() {
        let g = 1u64 << 30;
        let mut v1 = [0u8; 24];
        for (i, v) in [80 * g, 70 * g, 10 * g].iter().enumerate() {
            v1[i * 8..i * 8 + 8].copy_from_slice(&v.to_ne_bytes());
        }
        patch_memory("nvmlDeviceGetMemoryInfo", &mut v1, 16 * g, 4 * g);
        let r = |b: &[u8], at: usize| u64::from_ne_bytes(b[at..at + 8].try_into().unwrap());
        assert_eq!((r(&v1, 0), r(&v1, 8), r(&v1, 16)), (16 * g, 12 * g, 4 * g));

        let mut v2 = [0u8; 40];
        v2[..4].copy_from_slice(&0x0200_0028u32.to_ne_bytes());
        for (at, v) in [(8, 80 * g), (16, g / 2), (24, 70 * g), (32, 9 * g + g / 2)] {
            v2[at..at + 8].copy_from_slice(&u64::to_ne_bytes(v));
        }
        patch_memory("nvmlDeviceGetMemoryInfo_v2", &mut v2, 16 * g, 4 * g);
        let (total, reserved, free, used) = (r(&v2, 8), r(&v2, 16), r(&v2, 24), r(&v2, 32));
        assert_eq!((total, free), (16 * g, 12 * g));
        assert_eq!(reserved + free + used, total);
        assert_eq!(u32::from_ne_bytes(v2[..4].try_into().unwrap()), 0x0200_0028, "version kept");

        // Other functions are left alone.
        let mut other = [1u8; 24];
        patch_memory("nvmlDeviceGetBAR1MemoryInfo", &mut other, 1, 0);
        assert_eq!(other, [1u8; 24]);
    }
}
