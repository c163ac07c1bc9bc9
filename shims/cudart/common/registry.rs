//! What nvcc's static constructors register — fatbins, kernels (by host stub), device
//! variables (by host shadow) — recorded without I/O; and, per context, the modules loaded
//! from them on first use and the functions and globals found there.
//!
//! Locks: `REG` is held only for map operations. A module's `loaded` list is held across
//! its `cuModuleLoadData`, so only threads needing that module in that context wait. A
//! launch of a function already resolved takes just a read lock on `FUNCS`.

use std::collections::{HashMap, HashSet};
use std::ffi::{c_char, c_void};
use std::ptr::null_mut;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use abi::cuda::{CUcontext, CUdeviceptr, CUfunction, CUmodule};
use parking_lot::{Mutex, RwLock};

use super::error::Res;
use super::{context, fatbin};
use crate::rt::cudaError_t as E;

/// One registered fatbin.
pub(crate) struct Module {
    /// `(address, length)` of the fatbin; `None` if the registration held none we know.
    image: Option<(usize, usize)>,
    /// Loaded copies: `(context, CUmodule)`.
    loaded: Mutex<Vec<(usize, usize)>>,
}

struct Symbol {
    module: Arc<Module>,
    /// The NUL-terminated device name, in the application's image (lives until unregister).
    name: usize,
    managed: bool,
}

#[derive(Default)]
struct Registry {
    modules: HashMap<usize, Arc<Module>>,
    funcs: HashMap<usize, Symbol>,
    vars: HashMap<usize, Symbol>,
}

static REG: LazyLock<Mutex<Registry>> = LazyLock::new(Default::default);
/// `(context, host stub)` → `CUfunction`.
static FUNCS: LazyLock<RwLock<HashMap<(usize, usize), usize>>> = LazyLock::new(Default::default);
/// A variable in a context: `(device address, size)`.
type Global = (CUdeviceptr, usize);
/// `(context, host shadow)` → its [`Global`].
static GLOBALS: LazyLock<RwLock<HashMap<(usize, usize), Global>>> = LazyLock::new(Default::default);

impl Module {
    /// This module in context `ctx` (which is current), loaded on first use.
    fn load(&self, ctx: usize) -> Res<CUmodule> {
        let mut loaded = self.loaded.lock();
        if let Some(&(_, m)) = loaded.iter().find(|(c, _)| *c == ctx) {
            return Ok(m as CUmodule);
        }
        let (addr, _) = self.image.ok_or(E::cudaErrorInvalidKernelImage)?;
        let mut m = null_mut();
        cu!(cuModuleLoadData(&mut m, addr as *const c_void))?;
        loaded.push((ctx, m as usize));
        Ok(m)
    }
}

/// `__cudaRegisterFatBinary`: record the image; the handle is a `void**` slot holding `arg`.
pub(crate) fn register_fatbin(arg: *mut c_void) -> *mut *mut c_void {
    // SAFETY: nvcc passes its wrapper (or a fatbin); `locate` reads only the headers.
    let image = unsafe { fatbin::locate(arg) }.map(|(p, len)| (p as usize, len));
    if image.is_none() {
        shim_support::log_once!(
            "cudart: bad fatbin",
            "vgpu: __cudaRegisterFatBinary got no fatbin we know; its kernels will not load"
        );
    }
    // Leaked on purpose: the application keeps the handle until exit, even past unregister.
    let handle = Box::into_raw(Box::new(arg));
    let module = Arc::new(Module { image, loaded: Mutex::new(Vec::new()) });
    REG.lock().modules.insert(handle as usize, module);
    handle
}

fn add(handle: *mut *mut c_void, host: usize, name: *const c_char, managed: bool, var: bool) {
    if host == 0 || name.is_null() {
        return;
    }
    let mut reg = REG.lock();
    let Some(module) = reg.modules.get(&(handle as usize)).cloned() else {
        shim_support::log_once!("cudart: unknown handle", "vgpu: registration with an unknown fatbin handle ignored");
        return;
    };
    let s = Symbol { module, name: name as usize, managed };
    if var {
        reg.vars.insert(host, s)
    } else {
        reg.funcs.insert(host, s)
    };
}

/// `__cudaRegisterFunction`.
pub(crate) fn register_function(handle: *mut *mut c_void, host: *const c_char, name: *const c_char) {
    add(handle, host as usize, name, false, false);
}

/// `__cudaRegisterVar` / `__cudaRegisterManagedVar` (the driver knows the size).
pub(crate) fn register_var(handle: *mut *mut c_void, host: *const c_void, name: *const c_char, managed: bool) {
    add(handle, host as usize, name, managed, true);
}

/// `__cudaUnregisterFatBinary`: forget the module and what it registered. No I/O (this runs
/// at exit, or when a library is unloaded), and no unbounded wait.
pub(crate) fn unregister(handle: *mut *mut c_void) {
    let Some(mut guard) = REG.try_lock_for(Duration::from_millis(100)) else {
        return;
    };
    let Some(module) = guard.modules.remove(&(handle as usize)) else {
        return;
    };
    let mut gone = HashSet::new();
    let reg = &mut *guard;
    for map in [&mut reg.funcs, &mut reg.vars] {
        map.retain(|&host, s| {
            let keep = !Arc::ptr_eq(&s.module, &module);
            if !keep {
                gone.insert(host);
            }
            keep
        });
    }
    drop(guard);
    if let Some(mut f) = FUNCS.try_write_for(Duration::from_millis(100)) {
        f.retain(|(_, host), _| !gone.contains(host));
    }
    if let Some(mut g) = GLOBALS.try_write_for(Duration::from_millis(100)) {
        g.retain(|(_, host), _| !gone.contains(host));
    }
}

/// Forget what was loaded into `ctx` (it is being destroyed).
pub(crate) fn forget_context(ctx: usize) {
    for m in REG.lock().modules.values() {
        m.loaded.lock().retain(|(c, _)| *c != ctx);
    }
    FUNCS.write().retain(|(c, _), _| *c != ctx);
    GLOBALS.write().retain(|(c, _), _| *c != ctx);
}

/// The registered device name of a host stub.
pub(crate) fn function_name(host: *const c_void) -> Res<*const c_char> {
    let reg = REG.lock();
    let s = reg.funcs.get(&(host as usize)).ok_or(E::cudaErrorInvalidDeviceFunction)?;
    Ok(s.name as *const c_char)
}

/// The `CUfunction` of host stub `host` in the current context (loading its module).
pub(crate) fn function(host: *const c_void) -> Res<CUfunction> {
    function_in(context::current()?, host)
}

/// The `CUfunction` of host stub `host` in `ctx`, the current context.
pub(crate) fn function_in(ctx: CUcontext, host: *const c_void) -> Res<CUfunction> {
    let ctx = ctx as usize;
    if let Some(&f) = FUNCS.read().get(&(ctx, host as usize)) {
        return Ok(f as CUfunction);
    }
    let (module, name) = {
        let reg = REG.lock();
        let s = reg.funcs.get(&(host as usize)).ok_or(E::cudaErrorInvalidDeviceFunction)?;
        (s.module.clone(), s.name)
    };
    let m = module.load(ctx)?;
    let mut f = null_mut();
    cu!(cuModuleGetFunction(&mut f, m, name as *const c_char))?;
    FUNCS.write().insert((ctx, host as usize), f as usize);
    Ok(f)
}

/// Device address and size of the variable whose host shadow is `host`, in the current
/// context (loading its module).
pub(crate) fn global(host: *const c_void) -> Res<(CUdeviceptr, usize)> {
    let ctx = context::current()? as usize;
    if let Some(&g) = GLOBALS.read().get(&(ctx, host as usize)) {
        return Ok(g);
    }
    let (module, name, managed) = {
        let reg = REG.lock();
        let s = reg.vars.get(&(host as usize)).ok_or(E::cudaErrorInvalidSymbol)?;
        (s.module.clone(), s.name, s.managed)
    };
    if managed {
        shim_support::log_once!("cudart: managed var", "vgpu: __managed__ variables are not supported");
        return Err(E::cudaErrorNotSupported);
    }
    let m = module.load(ctx)?;
    let (mut dptr, mut size) = (0, 0);
    cu!(cuModuleGetGlobal_v2(&mut dptr, &mut size, m, name as *const c_char))?;
    GLOBALS.write().insert((ctx, host as usize), (dptr, size));
    Ok((dptr, size))
}

#[cfg(test)]
fn is_var(host: *const c_void) -> bool {
    REG.lock().vars.contains_key(&(host as usize))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registration_and_unregistration_without_a_driver() {
        let mut blob = vec![0u8; 32];
        blob[0..4].copy_from_slice(&fatbin::FATBIN_MAGIC.to_le_bytes());
        blob[6..8].copy_from_slice(&16u16.to_le_bytes());
        blob[8..16].copy_from_slice(&16u64.to_le_bytes());
        let h = register_fatbin(blob.as_mut_ptr().cast());
        assert_eq!(unsafe { *h }, blob.as_mut_ptr().cast(), "the handle's slot holds the argument");
        let stub = 0x1000usize as *const c_char;
        let shadow = 0x2000usize as *const c_void;
        register_function(h, stub, c"_Z6kernelv".as_ptr());
        register_var(h, shadow, c"table".as_ptr(), false);
        assert_eq!(unsafe { std::ffi::CStr::from_ptr(function_name(stub.cast()).unwrap()) }, c"_Z6kernelv");
        assert!(is_var(shadow));
        assert!(REG.lock().modules[&(h as usize)].image == Some((blob.as_ptr() as usize, 32)));

        unregister(h);
        assert_eq!(function_name(stub.cast()), Err(E::cudaErrorInvalidDeviceFunction));
        assert!(!is_var(shadow));
        unregister(h); // twice is harmless
        register_function(h, stub, c"x".as_ptr()); // unknown handle: ignored
        assert!(function_name(stub.cast()).is_err());
    }

    #[test]
    fn a_bad_image_is_recorded_as_none() {
        let mut junk = [0u8; 32];
        let h = register_fatbin(junk.as_mut_ptr().cast());
        assert!(REG.lock().modules[&(h as usize)].image.is_none());
        unregister(h);
    }
}
