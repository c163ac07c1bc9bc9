//! Modules, libraries and functions.
//!
//! Images are offered by hash first and loaded from the cache ([`super::cache`]); each
//! function handed out carries its parameter layout, which launches need to rebuild
//! `kernelParams` from the packed bytes the client sends.

use super::handles::{Func, Link};
use super::jit::Jit;
use super::ranges::{Kind, Range};
use super::{CudaSession, FILE_NOT_FOUND, INVALID_VALUE, NOT_PERMITTED, R};
use abi::cuda::{
    CUfunc_cache, CUfunction, CUfunction_attribute, CUjitInputType, CUkernel, CUlibrary, CUlibraryOption, CUlinkState,
    CUmodule,
};
use protocol::FuncInfo;
use std::ffi::CString;
use std::ptr::null_mut;
use std::time::Instant;

/// `module_load` kinds.
const KIND_DATA: u8 = 0;
const KIND_FATBIN: u8 = 1;
const KIND_LIBRARY: u8 = 2;

/// No kernel has more parameters than this (their total size is at most 32 KiB).
const MAX_PARAMS: usize = 32 << 10;

fn c_name(name: &str) -> R<CString> {
    CString::new(name).map_err(|_| INVALID_VALUE)
}

impl CudaSession {
    /// Load an image (its bytes in `bulk_in`, or cached by `hash`) with the application's
    /// JIT options `jit`; what they left is kept for `jit_out`.
    pub(super) fn load_module(&mut self, bulk_in: &[u8], hash: &[u8; 32], kind: u8, jit: &[(u32, u64)]) -> R<u64> {
        if kind > KIND_LIBRARY || (kind == KIND_FATBIN && !jit.is_empty()) {
            return Err(INVALID_VALUE);
        }
        let start = Instant::now();
        let image = if bulk_in.is_empty() {
            self.images.get(hash).ok_or(FILE_NOT_FOUND)?
        } else {
            self.images.put(hash, bulk_in)?
        };
        let found = Instant::now();
        let data = image.as_ptr();
        let mut j = Jit::new(jit)?;
        let (n, opts, vals) = (j.len(), j.options(), j.values());
        let loaded = if kind == KIND_LIBRARY {
            let mut l: CUlibrary = null_mut();
            // The image stays here until the library is unloaded, so the driver need not
            // keep a copy of its own (what NVIDIA's runtime tells it of its fat binaries).
            let mut option = [CUlibraryOption::CU_LIBRARY_BINARY_IS_PRESERVED];
            // Option values are passed as pointer-sized integers.
            let mut value = [std::ptr::without_provenance_mut::<std::ffi::c_void>(1)];
            cu!(self.lib, cuLibraryLoadData(&mut l, data, opts, vals, n, option.as_mut_ptr(), value.as_mut_ptr(), 1))
                .map(|_| {
                    self.h.libraries.insert(l as u64);
                    self.library_images.insert(l as u64, image.clone());
                    l as u64
                })
        } else {
            let mut m: CUmodule = null_mut();
            if kind == KIND_FATBIN {
                cu!(self.lib, cuModuleLoadFatBinary(&mut m, data))
            } else {
                debug_assert_eq!(kind, KIND_DATA);
                cu!(self.lib, cuModuleLoadDataEx(&mut m, data, n, opts, vals))
            }
            .map(|_| {
                self.h.modules.insert(m as u64, self.current);
                m as u64
            })
        };
        if !jit.is_empty() {
            self.last_jit = j.out();
        }
        let cost = &mut self.images.cost;
        cost.loads += 1;
        cost.bytes += image.bytes().len() as u64;
        cost.cache += found - start;
        cost.driver += found.elapsed();
        loaded
    }

    pub(super) fn module_unload(&mut self, module: u64) -> R<()> {
        let m = self.h.module(module)?;
        if self.h.library_modules.contains_key(&module) {
            // Its library owns it: unloading the library unloads it.
            return Err(NOT_PERMITTED);
        }
        cu!(self.lib, cuModuleUnload(m))?;
        self.forget_module(module);
        Ok(())
    }

    /// Forget an unloaded module: its functions and its globals' ranges.
    fn forget_module(&mut self, module: u64) {
        self.h.forget_module(module);
        self.ranges.remove_where(|_, r| r.kind == Kind::Global(module));
    }

    pub(super) fn library_unload(&mut self, library: u64) -> R<()> {
        let l = self.h.library(library)?;
        cu!(self.lib, cuLibraryUnload(l))?;
        self.h.libraries.remove(&library);
        self.library_images.remove(&library);
        // Its modules went with it; the library's own functions and globals are forgotten as
        // a module's are.
        let modules: Vec<u64> =
            self.h.library_modules.iter().filter(|(_, l)| **l == library).map(|(m, _)| *m).collect();
        for m in modules.into_iter().chain([library]) {
            self.forget_module(m);
        }
        Ok(())
    }

    /// `(offset, size)` of each parameter of `f`, asking until the index is past the end.
    fn param_layout(&self, f: CUfunction) -> R<Vec<(u32, u32)>> {
        let info = *self.lib.cuFuncGetParamInfo.as_ref().map_err(|_| super::NOT_SUPPORTED)?;
        let mut params = Vec::new();
        for i in 0..MAX_PARAMS {
            let (mut off, mut size) = (0usize, 0usize);
            match unsafe { info(f, i, &mut off, &mut size) }.0 {
                0 => params.push((off as u32, size as u32)),
                // The index is past the last parameter.
                INVALID_VALUE => break,
                code => return Err(code),
            }
        }
        Ok(params)
    }

    fn track_function(&mut self, f: CUfunction, owner: u64) -> R<FuncInfo> {
        let params = self.param_layout(f)?;
        self.h.functions.insert(f as u64, Func { owner, ctx: self.current, params: params.clone() });
        Ok(FuncInfo { handle: f as u64, params })
    }

    pub(super) fn module_get_function(&mut self, module: u64, name: &str) -> R<FuncInfo> {
        let m = self.h.module(module)?;
        let name = c_name(name)?;
        let mut f: CUfunction = null_mut();
        cu!(self.lib, cuModuleGetFunction(&mut f, m, name.as_ptr()))?;
        self.track_function(f, module)
    }

    /// A library's kernel as a function of the current context.
    pub(super) fn library_get_kernel(&mut self, library: u64, name: &str) -> R<FuncInfo> {
        let l = self.h.library(library)?;
        let name = c_name(name)?;
        let mut k: CUkernel = null_mut();
        cu!(self.lib, cuLibraryGetKernel(&mut k, l, name.as_ptr()))?;
        let mut f: CUfunction = null_mut();
        cu!(self.lib, cuKernelGetFunction(&mut f, k))?;
        self.track_function(f, library)
    }

    pub(super) fn link_create(&mut self, jit: &[(u32, u64)]) -> R<u64> {
        let mut j = Jit::new(jit)?;
        let mut l: CUlinkState = null_mut();
        cu!(self.lib, cuLinkCreate_v2(j.len(), j.options(), j.values(), &mut l))?;
        self.h.links.insert(l as u64, Link { ctx: self.current, image: None, jit: vec![j] });
        Ok(l as u64)
    }

    pub(super) fn link_add(&mut self, link: u64, kind: u32, name: &str, data: &[u8], jit: &[(u32, u64)]) -> R<()> {
        let l = self.h.link(link)?;
        let name = c_name(name)?;
        let mut j = Jit::new(jit)?;
        let (len, data) = (data.len(), data.as_ptr().cast_mut().cast());
        let added = cu!(
            self.lib,
            cuLinkAddData_v2(l, CUjitInputType(kind), data, len, name.as_ptr(), j.len(), j.options(), j.values())
        );
        if !jit.is_empty() {
            self.last_jit = j.out();
        }
        if let Some(e) = self.h.links.get_mut(&link) {
            e.jit.push(j);
        }
        added
    }

    /// What a link's options (`link`), or the last call with options of its own (0), left.
    pub(super) fn jit_result(&self, link: u64) -> R<protocol::jit::JitOut> {
        if link == 0 {
            return Ok(self.last_jit.clone());
        }
        self.h.link(link)?;
        Ok(self.h.links[&link].jit.first().map(Jit::out).unwrap_or_default())
    }

    pub(super) fn link_complete(&mut self, link: u64) -> R<u64> {
        let l = self.h.link(link)?;
        let (mut image, mut size) = (null_mut(), 0usize);
        cu!(self.lib, cuLinkComplete(l, &mut image, &mut size))?;
        if let Some(e) = self.h.links.get_mut(&link) {
            e.image = Some((image as usize, size));
        }
        Ok(size as u64)
    }

    /// The completed image's bytes, which the driver keeps until the link is destroyed.
    pub(super) fn link_image(&mut self, link: u64, size: u64, out: &mut Vec<u8>) -> R<()> {
        self.h.link(link)?;
        let (p, n) = self.h.links[&link].image.ok_or(INVALID_VALUE)?;
        if n as u64 != size {
            return Err(INVALID_VALUE);
        }
        out.clear();
        out.extend_from_slice(unsafe { std::slice::from_raw_parts(p as *const u8, n) });
        Ok(())
    }

    pub(super) fn link_destroy(&mut self, link: u64) -> R<()> {
        let l = self.h.link(link)?;
        cu!(self.lib, cuLinkDestroy(l))?;
        self.h.links.remove(&link);
        Ok(())
    }

    /// Every function of a module and its name, each tracked as `cuModuleGetFunction`'s.
    pub(super) fn module_functions(&mut self, module: u64) -> R<Vec<(String, FuncInfo)>> {
        let m = self.h.module(module)?;
        let mut n = 0u32;
        cu!(self.lib, cuModuleGetFunctionCount(&mut n, m))?;
        let mut fs: Vec<CUfunction> = vec![null_mut(); n as usize];
        cu!(self.lib, cuModuleEnumerateFunctions(fs.as_mut_ptr(), n, m))?;
        fs.into_iter().map(|f| Ok((self.name_of(f)?, self.track_function(f, module)?))).collect()
    }

    /// A library's module in the current context: its functions and globals are found as
    /// any module's; it lives as long as the library (or the context).
    pub(super) fn library_get_module(&mut self, library: u64) -> R<u64> {
        let l = self.h.library(library)?;
        let mut m: CUmodule = null_mut();
        cu!(self.lib, cuLibraryGetModule(&mut m, l))?;
        self.h.modules.insert(m as u64, self.current);
        self.h.library_modules.insert(m as u64, library);
        Ok(m as u64)
    }

    /// A `__device__` variable: its address and size. Its range becomes copyable.
    pub(super) fn module_get_global(&mut self, module: u64, name: &str) -> R<(u64, u64)> {
        let m = self.h.module(module)?;
        let ctx = self.h.modules[&module];
        let name = c_name(name)?;
        let (mut p, mut bytes) = (0u64, 0usize);
        cu!(self.lib, cuModuleGetGlobal_v2(&mut p, &mut bytes, m, name.as_ptr()))?;
        Ok(self.global_found(p, bytes as u64, ctx, module))
    }

    /// A global of `owner` (module or library) in context `ctx`: its range becomes copyable.
    fn global_found(&mut self, p: u64, bytes: u64, ctx: u64, owner: u64) -> (u64, u64) {
        let dev = self.h.contexts.get(&ctx).map_or(usize::MAX, |c| c.dev);
        if bytes > 0 && self.ranges.get(p).is_none() {
            self.ranges.insert(p, Range { len: bytes, dev, ctx, kind: Kind::Global(owner) });
        }
        (p, bytes)
    }

    /// A library's `__device__` variable in the current context. Its range becomes copyable.
    pub(super) fn library_get_global(&mut self, library: u64, name: &str) -> R<(u64, u64)> {
        let l = self.h.library(library)?;
        let name = c_name(name)?;
        let (mut p, mut bytes) = (0u64, 0usize);
        cu!(self.lib, cuLibraryGetGlobal(&mut p, &mut bytes, l, name.as_ptr()))?;
        Ok(self.global_found(p, bytes as u64, self.current, library))
    }

    pub(super) fn func_get_name(&mut self, func: u64) -> R<String> {
        self.name_of(self.h.function(func)?)
    }

    fn name_of(&self, f: CUfunction) -> R<String> {
        let mut name: *const std::ffi::c_char = std::ptr::null();
        cu!(self.lib, cuFuncGetName(&mut name, f))?;
        if name.is_null() {
            return Err(INVALID_VALUE);
        }
        Ok(unsafe { std::ffi::CStr::from_ptr(name) }.to_string_lossy().into_owned())
    }

    pub(super) fn func_get_attribute(&mut self, attrib: i32, func: u64) -> R<i32> {
        let f = self.h.function(func)?;
        let mut v = 0;
        cu!(self.lib, cuFuncGetAttribute(&mut v, CUfunction_attribute(attrib as u32), f))?;
        Ok(v)
    }

    /// Every attribute below `CU_FUNC_ATTRIBUTE_MAX`, 0 where the driver has none.
    pub(super) fn all_func_attributes(&mut self, func: u64) -> R<Vec<i32>> {
        self.h.function(func)?;
        Ok((0..CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX.0 as i32)
            .map(|a| self.func_get_attribute(a, func).unwrap_or(0))
            .collect())
    }

    pub(super) fn func_set_attribute(&mut self, func: u64, attrib: i32, value: i32) -> R<()> {
        let f = self.h.function(func)?;
        cu!(self.lib, cuFuncSetAttribute(f, CUfunction_attribute(attrib as u32), value))
    }

    pub(super) fn func_set_cache_config(&mut self, func: u64, config: u32) -> R<()> {
        let f = self.h.function(func)?;
        cu!(self.lib, cuFuncSetCacheConfig(f, CUfunc_cache(config)))
    }

    pub(super) fn occupancy(&mut self, func: u64, block: i32, smem: u64, flags: u32) -> R<i32> {
        let f = self.h.function(func)?;
        let mut n = 0;
        cu!(self.lib, cuOccupancyMaxActiveBlocksPerMultiprocessorWithFlags(&mut n, f, block, smem as usize, flags))?;
        Ok(n)
    }
}
