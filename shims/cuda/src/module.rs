//! Modules, libraries, functions. Images travel to the server on first use, offered by
//! content hash first so that a server that has seen them (from any client) loads them
//! without the upload.

use crate::jit::AppJit;
use crate::route::{self, Target};
use crate::state::{self, R, entry, put};
use abi::cuda::*;
use parking_lot::Mutex;
use protocol::{FuncInfo, LaunchAttr, ops};
use std::collections::HashSet;
use std::ffi::{CStr, c_void};
use std::os::raw::{c_char, c_int, c_uint};
use std::sync::Arc;

const FATBIN_MAGIC: u32 = 0xBA55_ED50;
const FATBIN_WRAPPER_MAGIC: u32 = 0x4662_43B1;

unsafe fn u16_at(p: *const u8, off: usize) -> u16 {
    unsafe { std::ptr::read_unaligned(p.add(off).cast::<u16>()) }
}
unsafe fn u32_at(p: *const u8, off: usize) -> u32 {
    unsafe { std::ptr::read_unaligned(p.add(off).cast::<u32>()) }
}
unsafe fn u64_at(p: *const u8, off: usize) -> u64 {
    unsafe { std::ptr::read_unaligned(p.add(off).cast::<u64>()) }
}

/// The bytes of a module image given only its address, as the driver API does: a fatbin
/// (length from its header), a fatbin wrapper, a 64-bit ELF cubin (length from its
/// section and program headers), or NUL-terminated PTX text (the NUL included).
pub unsafe fn image<'a>(p: *const c_void) -> Result<&'a [u8], R> {
    if p.is_null() {
        return Err(CUresult::CUDA_ERROR_INVALID_VALUE);
    }
    let b = p.cast::<u8>();
    let magic = unsafe { u32_at(b, 0) };
    let len = unsafe {
        if magic == FATBIN_WRAPPER_MAGIC {
            let inner = u64_at(b, 8) as *const c_void;
            return image(inner);
        } else if magic == FATBIN_MAGIC {
            u16_at(b, 6) as usize + u64_at(b, 8) as usize
        } else if magic == u32::from_le_bytes(*b"\x7fELF") {
            elf_len(b)?
        } else {
            CStr::from_ptr(b.cast::<c_char>()).to_bytes_with_nul().len()
        }
    };
    Ok(unsafe { std::slice::from_raw_parts(b, len) })
}

unsafe fn elf_len(b: *const u8) -> Result<usize, R> {
    if unsafe { *b.add(4) } != 2 {
        return Err(CUresult::CUDA_ERROR_INVALID_IMAGE); // not ELFCLASS64
    }
    unsafe {
        let (phoff, shoff) = (u64_at(b, 0x20) as usize, u64_at(b, 0x28) as usize);
        let (phentsize, phnum) = (u16_at(b, 0x36) as usize, u16_at(b, 0x38) as usize);
        let (shentsize, shnum) = (u16_at(b, 0x3A) as usize, u16_at(b, 0x3C) as usize);
        let mut end = (phoff + phentsize * phnum).max(shoff + shentsize * shnum).max(64);
        for i in 0..shnum {
            let sh = b.add(shoff + i * shentsize);
            const SHT_NOBITS: u32 = 8;
            if u32_at(sh, 4) != SHT_NOBITS {
                end = end.max(u64_at(sh, 0x18) as usize + u64_at(sh, 0x20) as usize);
            }
        }
        for i in 0..phnum {
            let ph = b.add(phoff + i * phentsize);
            end = end.max(u64_at(ph, 8) as usize + u64_at(ph, 0x20) as usize);
        }
        Ok(end)
    }
}

/// Hashes this process has uploaded: those are offered without their bytes.
fn sent() -> &'static Mutex<HashSet<[u8; 32]>> {
    static S: std::sync::OnceLock<Mutex<HashSet<[u8; 32]>>> = std::sync::OnceLock::new();
    S.get_or_init(Default::default)
}

/// Load an image on the current context's server: kind 0 module data, 1 fatbin, 2 library.
/// Returns the (tagged) handle.
pub fn load(img: &[u8], kind: u8) -> Result<u64, R> {
    load_with(img, kind, &AppJit::default())
}

/// Load an image with the application's JIT options, whose logs and values come back
/// whether the load succeeds or not (numba's error message is the error log).
pub fn load_with(img: &[u8], kind: u8, jit: &AppJit) -> Result<u64, R> {
    let t = route::here();
    let hash = *blake3::hash(img).as_bytes();
    let op = ops::module_load { hash, kind, jit: jit.sent.clone() };
    let loaded = match route::call(t, &op) {
        Err(CUresult::CUDA_ERROR_FILE_NOT_FOUND) => {
            let h = route::call_to(t, &op, &[img], None);
            if h.is_ok() {
                sent().lock().insert(hash);
            }
            h
        }
        other => other,
    };
    // Another thread's load with options in between would hand these logs its own: the
    // server keeps the last call's (a failed call returns nothing else).
    jit.fetch(t, 0);
    adopt(t, loaded?)
}

/// A handle `t`'s server issued, as the application sees it (tagged with the server), its
/// context remembered.
pub fn adopt(t: Target, raw: u64) -> Result<u64, R> {
    let h = route::tag(t.server, raw)?;
    route::remember(h, t.ctx);
    Ok(h)
}

/// Remember a function found through `t` (its handle tagged with `t`'s server).
fn remember(t: Target, f: &FuncInfo) -> Result<u64, R> {
    let h = adopt(t, f.handle)?;
    state::tables().functions.write().insert(h, Arc::new(f.params.clone()));
    // A handle value the server reuses after an unload names another function now.
    state::tables().func_attrs.write().remove(&h);
    state::tables().func_names.write().remove(&h);
    forget_occupancy(h);
    Ok(h)
}

/// Remember a function found by name, which `cuFuncGetName` then answers without asking.
fn remember_named(t: Target, f: &FuncInfo, name: String) -> Result<u64, R> {
    let h = remember(t, f)?;
    if let Ok(c) = std::ffi::CString::new(name) {
        state::tables().func_names.write().insert(h, c.into_boxed_c_str());
    }
    Ok(h)
}

/// A call about handle `h` (module, library, function), at its server, with its raw value.
fn about<C: protocol::Call>(h: u64, f: impl FnOnce(u64) -> C) -> Result<C::Ret, R> {
    route::call(route::of(h)?, &f(route::raw(h)))
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuModuleLoadData(m: *mut CUmodule, img: *const c_void) -> R {
    entry(|| {
        let h = load(unsafe { image(img)? }, 0)?;
        unsafe { put(m, h as usize as CUmodule) }
    })
}

/// How modules load, as `CUDA_MODULE_LOADING` sets it for this process (lazy unless it
/// says `EAGER`, the driver's default since CUDA 12.2). NVIDIA's runtime asks before its
/// first call: told lazy, it loads a fat binary when a kernel of it is first used; without
/// an answer it loaded every one it holds at start (PyTorch: 4,820 loads over the wire
/// against 30 natively). The server's driver loads each image as its own process says.
fn loading_mode(setting: Option<&str>) -> CUmoduleLoadingMode {
    match setting {
        Some(s) if s.eq_ignore_ascii_case("EAGER") => CUmoduleLoadingMode::CU_MODULE_EAGER_LOADING,
        _ => CUmoduleLoadingMode::CU_MODULE_LAZY_LOADING,
    }
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuModuleGetLoadingMode(mode: *mut CUmoduleLoadingMode) -> R {
    entry(|| {
        let setting = std::env::var("CUDA_MODULE_LOADING").ok();
        unsafe { put(mode, loading_mode(setting.as_deref())) }
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuModuleLoadDataEx(
    m: *mut CUmodule,
    img: *const c_void,
    n: c_uint,
    opts: *mut CUjit_option,
    vals: *mut *mut c_void,
) -> R {
    entry(|| {
        let jit = unsafe { AppJit::read(n, opts, vals)? };
        let h = load_with(unsafe { image(img)? }, 0, &jit)?;
        unsafe { put(m, h as usize as CUmodule) }
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuModuleLoadFatBinary(m: *mut CUmodule, fat: *const c_void) -> R {
    entry(|| {
        let h = load(unsafe { image(fat)? }, 1)?;
        unsafe { put(m, h as usize as CUmodule) }
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuModuleLoad(m: *mut CUmodule, fname: *const c_char) -> R {
    entry(|| {
        let h = load(&file_image(fname)?, 0)?;
        unsafe { put(m, h as usize as CUmodule) }
    })
}

/// A file of the application's (it is on the application's machine, so its bytes travel as
/// data): its path and bytes, PTX text NUL-terminated as the driver takes PTX from memory
/// (`ptx` says whether it is text).
pub fn app_file(path: *const c_char, ptx: impl Fn(&[u8]) -> bool) -> Result<(String, Vec<u8>), R> {
    if path.is_null() {
        return Err(CUresult::CUDA_ERROR_INVALID_VALUE);
    }
    let path = unsafe { CStr::from_ptr(path) }.to_string_lossy().into_owned();
    let mut bytes = std::fs::read(&path).map_err(|_| CUresult::CUDA_ERROR_FILE_NOT_FOUND)?;
    if ptx(&bytes) && bytes.last() != Some(&0) {
        bytes.push(0);
    }
    Ok((path, bytes))
}

/// An image file's bytes: PTX unless it is an ELF cubin or a fat binary.
fn file_image(path: *const c_char) -> Result<Vec<u8>, R> {
    let text = |b: &[u8]| {
        !b.starts_with(b"\x7fELF")
            && u32::from_le_bytes(b.get(..4).and_then(|b| b.try_into().ok()).unwrap_or([0; 4])) != FATBIN_MAGIC
    };
    Ok(app_file(path, text)?.1)
}

#[unsafe(no_mangle)]
pub extern "C" fn cuModuleUnload(m: CUmodule) -> R {
    entry(|| {
        about(m as u64, |module| ops::cuModuleUnload { module })?;
        route::forget(m as u64);
        Ok(())
    })
}

fn name_of(name: *const c_char) -> Result<String, R> {
    if name.is_null() {
        return Err(CUresult::CUDA_ERROR_INVALID_VALUE);
    }
    Ok(unsafe { CStr::from_ptr(name) }.to_string_lossy().into_owned())
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuModuleGetFunction(f: *mut CUfunction, m: CUmodule, name: *const c_char) -> R {
    entry(|| {
        let t = route::of(m as u64)?;
        let name = name_of(name)?;
        let info = route::call(t, &ops::cuModuleGetFunction { module: route::raw(m as u64), name: name.clone() })?;
        let h = remember_named(t, &info, name)?;
        unsafe { put(f, h as usize as CUfunction) }
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuModuleGetGlobal_v2(
    dptr: *mut CUdeviceptr,
    bytes: *mut usize,
    m: CUmodule,
    name: *const c_char,
) -> R {
    entry(|| {
        let t = route::of(m as u64)?;
        let (p, n) = route::call(t, &ops::cuModuleGetGlobal_v2 { module: route::raw(m as u64), name: name_of(name)? })?;
        unsafe { global_found(dptr, bytes, (p, n), route::owner(m as u64).unwrap_or(t.ctx)) }
    })
}

/// A `__device__` variable the server found: its range becomes copyable here, and its address
/// and size go to whichever outputs the caller gave.
unsafe fn global_found(dptr: *mut CUdeviceptr, bytes: *mut usize, (p, n): (u64, u64), ctx: u64) -> Result<(), R> {
    route::add_device_range(p, n, ctx);
    if !dptr.is_null() {
        unsafe { *dptr = p };
    }
    if !bytes.is_null() {
        unsafe { *bytes = n as usize };
    }
    Ok(())
}

/// A library's `__device__` variable in the current context, as `cuModuleGetGlobal_v2`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuLibraryGetGlobal(
    dptr: *mut CUdeviceptr,
    bytes: *mut usize,
    lib: CUlibrary,
    name: *const c_char,
) -> R {
    entry(|| {
        let t = route::of(lib as u64)?;
        let found = route::call(t, &ops::cuLibraryGetGlobal { library: route::raw(lib as u64), name: name_of(name)? })?;
        unsafe { global_found(dptr, bytes, found, t.ctx) }
    })
}

/// Library options are not forwarded: the server passes the one NVIDIA's runtime gives
/// (the image is preserved) itself, and the other (`CU_LIBRARY_HOST_UNIVERSAL_FUNCTION_AND_DATA_TABLE`)
/// names the application's memory.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuLibraryLoadData(
    lib: *mut CUlibrary,
    code: *const c_void,
    jit_opts: *mut CUjit_option,
    jit_vals: *mut *mut c_void,
    n_jit: c_uint,
    _lib_opts: *mut CUlibraryOption,
    _lib_vals: *mut *mut c_void,
    _n_lib: c_uint,
) -> R {
    entry(|| {
        let jit = unsafe { AppJit::read(n_jit, jit_opts, jit_vals)? };
        let h = load_with(unsafe { image(code)? }, 2, &jit)?;
        unsafe { put(lib, h as usize as CUlibrary) }
    })
}

/// The file is the application's, on its own machine: its bytes go as an image.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuLibraryLoadFromFile(
    lib: *mut CUlibrary,
    path: *const c_char,
    jit_opts: *mut CUjit_option,
    jit_vals: *mut *mut c_void,
    n_jit: c_uint,
    _lib_opts: *mut CUlibraryOption,
    _lib_vals: *mut *mut c_void,
    _n_lib: c_uint,
) -> R {
    entry(|| {
        let jit = unsafe { AppJit::read(n_jit, jit_opts, jit_vals)? };
        let h = load_with(&file_image(path)?, 2, &jit)?;
        unsafe { put(lib, h as usize as CUlibrary) }
    })
}

#[unsafe(no_mangle)]
pub extern "C" fn cuLibraryUnload(lib: CUlibrary) -> R {
    entry(|| {
        about(lib as u64, |library| ops::cuLibraryUnload { library })?;
        route::forget(lib as u64);
        Ok(())
    })
}

/// A kernel is represented by the function it resolves to in the current context.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuLibraryGetKernel(k: *mut CUkernel, lib: CUlibrary, name: *const c_char) -> R {
    entry(|| {
        let t = route::of(lib as u64)?;
        let name = name_of(name)?;
        let info = route::call(t, &ops::cuLibraryGetKernel { library: route::raw(lib as u64), name: name.clone() })?;
        let h = remember_named(t, &info, name)?;
        unsafe { put(k, h as usize as CUkernel) }
    })
}

/// The library's module in the current context, a module like any other (its library unloads
/// it).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuLibraryGetModule(m: *mut CUmodule, lib: CUlibrary) -> R {
    entry(|| {
        let t = route::of(lib as u64)?;
        let h = adopt(t, route::call(t, &ops::cuLibraryGetModule { library: route::raw(lib as u64) })?)?;
        unsafe { put(m, h as usize as CUmodule) }
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuKernelGetFunction(f: *mut CUfunction, k: CUkernel) -> R {
    entry(|| unsafe { put(f, k as usize as CUfunction) })
}

/// Every function of module `m` with its name, remembered as `cuModuleGetFunction`'s.
pub fn functions_of(m: u64) -> Result<Vec<(String, u64)>, R> {
    let t = route::of(m)?;
    let all = route::call(t, &ops::module_functions { module: route::raw(m) })?;
    all.into_iter().map(|(name, f)| Ok((name.clone(), remember_named(t, &f, name)?))).collect()
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuModuleGetFunctionCount(count: *mut c_uint, m: CUmodule) -> R {
    entry(|| unsafe { put(count, functions_of(m as u64)?.len() as c_uint) })
}

/// The first `n` functions of the module (all of them where it has fewer).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuModuleEnumerateFunctions(fs: *mut CUfunction, n: c_uint, m: CUmodule) -> R {
    entry(|| {
        if fs.is_null() {
            return Err(CUresult::CUDA_ERROR_INVALID_VALUE);
        }
        for (i, (_, h)) in functions_of(m as u64)?.into_iter().take(n as usize).enumerate() {
            unsafe { *fs.add(i) = h as usize as CUfunction };
        }
        Ok(())
    })
}

/// Stand-ins for the driver's own function objects, which cuFFT's callback is handed by the
/// driver's private table (`export_table`, `6E163FBE…` slot 7) and then passes back as a
/// `CUfunction`. Each is memory of ours laid out as far as the driver's was seen to be (the
/// name at +8, the module at +0x20); `function_of` turns one back into our handle.
#[derive(Default)]
struct StandIns {
    by_address: std::collections::HashMap<u64, u64>,
    by_handle: std::collections::HashMap<u64, u64>,
}

fn stand_ins() -> &'static parking_lot::RwLock<StandIns> {
    static S: std::sync::OnceLock<parking_lot::RwLock<StandIns>> = std::sync::OnceLock::new();
    S.get_or_init(Default::default)
}

/// Whether any stand-in was made: until then every `CUfunction` is our handle as it is.
static ANY_STAND_IN: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// The name a stand-in holds at +8, as the driver's object does.
fn name_in(object: u64) -> *const c_char {
    // SAFETY: `object` is one of ours, made by `stand_in` and never freed.
    unsafe { *(object as *const *const c_char).add(1) }
}

/// The stand-in object for function `h` (named `name`, of module `m`), made once, kept for
/// the process's life as the driver keeps a function while its module lives; and the name
/// it holds.
pub fn stand_in(h: u64, name: &str, m: u64) -> (*const c_void, *const c_char) {
    if let Some(&a) = stand_ins().read().by_handle.get(&h) {
        // A handle the server gave out again after an unload names another function.
        if unsafe { std::ffi::CStr::from_ptr(name_in(a)) }.to_bytes() == name.as_bytes() {
            return (a as *const c_void, name_in(a));
        }
    }
    let name: &'static std::ffi::CStr = Box::leak(std::ffi::CString::new(name).unwrap_or_default().into_boxed_c_str());
    let mut words = Box::new([0u64; 32]);
    words[0] = 0x1_0000_0001;
    words[1] = name.as_ptr() as u64;
    words[4] = m;
    let a = Box::leak(words).as_ptr() as u64;
    let mut s = stand_ins().write();
    s.by_address.insert(a, h);
    s.by_handle.insert(h, a);
    ANY_STAND_IN.store(true, std::sync::atomic::Ordering::Release);
    (a as *const c_void, name.as_ptr())
}

/// Our handle for a `CUfunction` the application passes: itself, or what a stand-in stands for.
pub fn function_of(f: CUfunction) -> u64 {
    let v = f as u64;
    if !ANY_STAND_IN.load(std::sync::atomic::Ordering::Acquire) {
        return v;
    }
    stand_ins().read().by_address.get(&v).copied().unwrap_or(v)
}

/// Parameter layout from the server's driver, cached at lookup.
pub fn params(f: u64) -> Result<Arc<Vec<(u32, u32)>>, R> {
    state::tables().functions.read().get(&f).cloned().ok_or(CUresult::CUDA_ERROR_INVALID_HANDLE)
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuFuncGetParamInfo(f: CUfunction, index: usize, off: *mut usize, size: *mut usize) -> R {
    entry(|| {
        let p = params(function_of(f))?;
        let &(o, s) = p.get(index).ok_or(CUresult::CUDA_ERROR_INVALID_VALUE)?;
        unsafe { put(off, o as usize)? };
        if !size.is_null() {
            unsafe { *size = s as usize };
        }
        Ok(())
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuKernelGetParamInfo(k: CUkernel, index: usize, off: *mut usize, size: *mut usize) -> R {
    unsafe { cuFuncGetParamInfo(k as usize as CUfunction, index, off, size) }
}

/// All attributes of a function, fetched in one round trip and cached.
pub fn attributes(f: u64) -> Result<Arc<Vec<i32>>, R> {
    if let Some(a) = state::tables().func_attrs.read().get(&f) {
        return Ok(a.clone());
    }
    let a = Arc::new(about(f, |func| ops::func_attributes { func })?);
    state::tables().func_attrs.write().insert(f, a.clone());
    Ok(a)
}

/// The function's name: known from its lookup, else asked of the server once.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuFuncGetName(name: *mut *const c_char, f: CUfunction) -> R {
    entry(|| {
        let h = function_of(f);
        let known = state::tables().func_names.read().get(&h).map(|c| c.as_ptr());
        let p = match known {
            Some(p) => p,
            None => {
                let n = about(h, |func| ops::cuFuncGetName { func })?;
                let c = std::ffi::CString::new(n).map_err(|_| CUresult::CUDA_ERROR_INVALID_VALUE)?.into_boxed_c_str();
                let mut all = state::tables().func_names.write();
                all.entry(h).or_insert(c).as_ptr()
            }
        };
        unsafe { put(name, p) }
    })
}

/// A kernel is its function here (`cuKernelGetFunction`).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuKernelGetName(name: *mut *const c_char, k: CUkernel) -> R {
    unsafe { cuFuncGetName(name, k as usize as CUfunction) }
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuFuncGetAttribute(pi: *mut c_int, attrib: CUfunction_attribute, f: CUfunction) -> R {
    entry(|| {
        let a = attributes(function_of(f))?;
        let v = *a.get(attrib.0 as usize).ok_or(CUresult::CUDA_ERROR_INVALID_VALUE)?;
        unsafe { put(pi, v) }
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuKernelGetAttribute(
    pi: *mut c_int,
    attrib: CUfunction_attribute,
    k: CUkernel,
    _dev: CUdevice,
) -> R {
    unsafe { cuFuncGetAttribute(pi, attrib, k as usize as CUfunction) }
}

#[unsafe(no_mangle)]
pub extern "C" fn cuFuncSetAttribute(f: CUfunction, attrib: CUfunction_attribute, value: c_int) -> R {
    entry(|| {
        let h = function_of(f);
        about(h, |func| ops::cuFuncSetAttribute { func, attrib: attrib.0 as i32, value })?;
        state::tables().func_attrs.write().remove(&h);
        forget_occupancy(h);
        Ok(())
    })
}

#[unsafe(no_mangle)]
pub extern "C" fn cuKernelSetAttribute(attrib: CUfunction_attribute, value: c_int, k: CUkernel, _dev: CUdevice) -> R {
    cuFuncSetAttribute(k as usize as CUfunction, attrib, value)
}

#[unsafe(no_mangle)]
pub extern "C" fn cuFuncSetCacheConfig(f: CUfunction, config: CUfunc_cache) -> R {
    entry(|| {
        let h = function_of(f);
        about(h, |func| ops::cuFuncSetCacheConfig { func, config: config.0 })?;
        forget_occupancy(h);
        Ok(())
    })
}

/// A function's attributes changed: its occupancy may have.
fn forget_occupancy(f: u64) {
    state::tables().occupancy.write().retain(|k, _| k.0 != f);
}

/// Blocks of function `h` resident on one SM, asked once per question (a pure function of
/// it until the function's attributes change).
fn occupancy(h: u64, block: c_int, smem: usize, flags: c_uint) -> Result<c_int, R> {
    let key = (h, block, smem as u64, flags);
    if let Some(&v) = state::tables().occupancy.read().get(&key) {
        return Ok(v);
    }
    let v = about(h, |func| ops::cuOccupancyMaxActiveBlocksPerMultiprocessorWithFlags {
        func,
        block,
        smem: smem as u64,
        flags,
    })?;
    state::tables().occupancy.write().insert(key, v);
    Ok(v)
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuOccupancyMaxActiveBlocksPerMultiprocessorWithFlags(
    n: *mut c_int,
    f: CUfunction,
    block: c_int,
    smem: usize,
    flags: c_uint,
) -> R {
    entry(|| unsafe { put(n, occupancy(function_of(f), block, smem, flags)?) })
}

/// The block size of highest occupancy for function `h` and the grid that fills the GPU with
/// it, searched as the driver and `cuda_runtime.h`'s template search it: from the largest
/// block allowed down in steps of a warp, keeping the first with the most resident threads,
/// and stopping once one fills an SM. `smem` gives a block size's dynamic shared memory.
/// Each occupancy is asked once (`occupancy`), so a repeated search costs nothing.
fn potential_block_size(
    h: u64,
    smem: impl Fn(c_int) -> usize,
    limit: c_int,
    flags: c_uint,
) -> Result<(c_int, c_int), R> {
    use CUdevice_attribute as A;
    let ctx = route::of(h)?.ctx;
    let dev = state::ctx_info(ctx).ok_or(CUresult::CUDA_ERROR_INVALID_CONTEXT)?.device;
    let d = state::device(dev)?;
    let attr = |a: A| crate::device::attribute(d, a.0 as i32);
    let per_sm = attr(A::CU_DEVICE_ATTRIBUTE_MAX_THREADS_PER_MULTIPROCESSOR)?;
    let warp = attr(A::CU_DEVICE_ATTRIBUTE_WARP_SIZE)?.max(1);
    let dev_max = attr(A::CU_DEVICE_ATTRIBUTE_MAX_THREADS_PER_BLOCK)?;
    let func_max = attributes(h)?
        .get(CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_THREADS_PER_BLOCK.0 as usize)
        .copied()
        .unwrap_or(dev_max);
    let limit = if limit <= 0 { dev_max } else { limit }.min(dev_max).min(func_max);
    let (mut best_block, mut best_blocks, mut best_threads) = (0, 0, 0);
    let mut aligned = (limit + warp - 1) / warp * warp;
    while aligned > 0 {
        let block = aligned.min(limit);
        let blocks = occupancy(h, block, smem(block), flags)?;
        if block * blocks > best_threads {
            (best_block, best_blocks, best_threads) = (block, blocks, block * blocks);
        }
        if best_threads == per_sm {
            break;
        }
        aligned -= warp;
    }
    Ok((best_blocks * attr(A::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)?, best_block))
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuOccupancyMaxPotentialBlockSizeWithFlags(
    min_grid: *mut c_int,
    block: *mut c_int,
    f: CUfunction,
    smem_of: CUoccupancyB2DSize,
    smem: usize,
    limit: c_int,
    flags: c_uint,
) -> R {
    entry(|| {
        if min_grid.is_null() || block.is_null() {
            return Err(CUresult::CUDA_ERROR_INVALID_VALUE);
        }
        // The application's function of the block size, called here as the driver calls it.
        let dynamic = |b: c_int| smem_of.map_or(smem, |g| unsafe { g(b) });
        let (g, b) = potential_block_size(function_of(f), dynamic, limit, flags)?;
        unsafe { put(min_grid, g)? };
        unsafe { put(block, b) }
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuOccupancyMaxPotentialBlockSize(
    min_grid: *mut c_int,
    block: *mut c_int,
    f: CUfunction,
    smem_of: CUoccupancyB2DSize,
    smem: usize,
    limit: c_int,
) -> R {
    unsafe { cuOccupancyMaxPotentialBlockSizeWithFlags(min_grid, block, f, smem_of, smem, limit, 0) }
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuOccupancyMaxActiveBlocksPerMultiprocessor(
    n: *mut c_int,
    f: CUfunction,
    block: c_int,
    smem: usize,
) -> R {
    unsafe { cuOccupancyMaxActiveBlocksPerMultiprocessorWithFlags(n, f, block, smem, 0) }
}

/// A cluster question about a launch configuration (grid, block, shared memory,
/// attributes), asked of the function's server.
fn cluster_query<C: protocol::Call<Ret = i32>>(
    n: *mut c_int,
    f: CUfunction,
    config: *const CUlaunchConfig,
    op: impl FnOnce(u64, [u32; 3], [u32; 3], u32, Vec<LaunchAttr>) -> C,
) -> R {
    entry(|| {
        let c = unsafe { config.as_ref() }.ok_or(CUresult::CUDA_ERROR_INVALID_VALUE)?;
        let (grid, block) = ([c.gridDimX, c.gridDimY, c.gridDimZ], [c.blockDimX, c.blockDimY, c.blockDimZ]);
        let v = about(function_of(f), |func| op(func, grid, block, c.sharedMemBytes, crate::launch::config_attrs(c)))?;
        unsafe { put(n, v) }
    })
}

/// Asked by cuBLAS when it starts (with its cluster discovery kernel).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuOccupancyMaxActiveClusters(
    n: *mut c_int,
    f: CUfunction,
    config: *const CUlaunchConfig,
) -> R {
    cluster_query(n, f, config, |func, grid, block, smem, attrs| ops::cuOccupancyMaxActiveClusters {
        func,
        grid,
        block,
        smem,
        attrs,
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuOccupancyMaxPotentialClusterSize(
    n: *mut c_int,
    f: CUfunction,
    config: *const CUlaunchConfig,
) -> R {
    cluster_query(n, f, config, |func, grid, block, smem, attrs| ops::cuOccupancyMaxPotentialClusterSize {
        func,
        grid,
        block,
        smem,
        attrs,
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuOccupancyAvailableDynamicSMemPerBlock(
    n: *mut usize,
    f: CUfunction,
    blocks: c_int,
    block: c_int,
) -> R {
    entry(|| {
        let v = about(function_of(f), |func| ops::cuOccupancyAvailableDynamicSMemPerBlock { func, blocks, block })?;
        unsafe { put(n, v as usize) }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_lengths() {
        let ptx = b".version 8.0\n.target sm_90\n\0garbage";
        assert_eq!(unsafe { image(ptx.as_ptr().cast()) }.unwrap().len(), 28);
        let mut fat = [0u8; 64];
        fat[..4].copy_from_slice(&FATBIN_MAGIC.to_le_bytes());
        fat[6..8].copy_from_slice(&16u16.to_le_bytes());
        fat[8..16].copy_from_slice(&40u64.to_le_bytes());
        assert_eq!(unsafe { image(fat.as_ptr().cast()) }.unwrap().len(), 56);
        let mut wrapper = [0u8; 24];
        wrapper[..4].copy_from_slice(&FATBIN_WRAPPER_MAGIC.to_le_bytes());
        wrapper[8..16].copy_from_slice(&(fat.as_ptr() as u64).to_le_bytes());
        assert_eq!(unsafe { image(wrapper.as_ptr().cast()) }.unwrap().len(), 56);
        assert!(unsafe { image(std::ptr::null()) }.is_err());
    }

    #[test]
    fn loading_is_lazy_unless_asked_eager() {
        use CUmoduleLoadingMode as M;
        assert_eq!(loading_mode(None), M::CU_MODULE_LAZY_LOADING);
        assert_eq!(loading_mode(Some("LAZY")), M::CU_MODULE_LAZY_LOADING);
        assert_eq!(loading_mode(Some("eager")), M::CU_MODULE_EAGER_LOADING);
        assert_eq!(loading_mode(Some("")), M::CU_MODULE_LAZY_LOADING);
    }

    #[test]
    fn elf_length_covers_headers_and_sections() {
        let mut elf = vec![0u8; 512];
        elf[..4].copy_from_slice(b"\x7fELF");
        elf[4] = 2;
        elf[0x28..0x30].copy_from_slice(&256u64.to_le_bytes()); // shoff
        elf[0x3A..0x3C].copy_from_slice(&64u16.to_le_bytes()); // shentsize
        elf[0x3C..0x3E].copy_from_slice(&2u16.to_le_bytes()); // shnum
        // section 1 at offset 100, 50 bytes
        let sh = 256 + 64;
        elf[sh + 4..sh + 8].copy_from_slice(&1u32.to_le_bytes());
        elf[sh + 0x18..sh + 0x20].copy_from_slice(&100u64.to_le_bytes());
        elf[sh + 0x20..sh + 0x28].copy_from_slice(&50u64.to_le_bytes());
        assert_eq!(unsafe { image(elf.as_ptr().cast()) }.unwrap().len(), 384);
    }
}
