//! JIT linking (`cuLink*`): numba links every kernel it compiles, CuPy code built with
//! `-rdc`. The link runs on the server's driver; the linked image comes back to the
//! application, which loads it as any image. The link's JIT options (`crate::jit`) stay
//! with it: after each call on it, the logs and values its driver wrote come back.

use crate::jit::AppJit;
use crate::module::adopt;
use crate::route;
use crate::state::{R, entry, put};
use abi::cuda::*;
use parking_lot::Mutex;
use protocol::ops;
use std::collections::HashMap;
use std::ffi::{CStr, c_void};
use std::os::raw::{c_char, c_uint};

/// A link as the application sees it.
#[derive(Default)]
struct Link {
    /// Its image once completed, which the driver hands out as its own until the link is
    /// destroyed.
    image: Option<Box<[u8]>>,
    /// The options it was created with, whose logs and values the driver writes during
    /// every call on it.
    jit: std::sync::Arc<AppJit>,
}

fn links() -> &'static Mutex<HashMap<u64, Link>> {
    static L: std::sync::OnceLock<Mutex<HashMap<u64, Link>>> = std::sync::OnceLock::new();
    L.get_or_init(Default::default)
}

/// Bring back what link `link`'s driver has written for the options it was created with.
fn fetch(link: u64) {
    let jit = links().lock().get(&link).map(|l| l.jit.clone());
    if let (Some(jit), Ok(t)) = (jit, route::of(link)) {
        jit.fetch(t, route::raw(link));
    }
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuLinkCreate_v2(
    n: c_uint,
    options: *mut CUjit_option,
    values: *mut *mut c_void,
    state: *mut CUlinkState,
) -> R {
    entry(|| {
        let jit = unsafe { AppJit::read(n, options, values)? };
        let t = route::here();
        let h = adopt(t, route::call(t, &ops::cuLinkCreate_v2 { jit: jit.sent.clone() })?)?;
        links().lock().insert(h, Link { image: None, jit: jit.into() });
        unsafe { put(state, h as usize as CUlinkState) }
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuLinkCreate(n: c_uint, o: *mut CUjit_option, v: *mut *mut c_void, s: *mut CUlinkState) -> R {
    unsafe { cuLinkCreate_v2(n, o, v, s) }
}

/// Add an input with options of its own (`jit`); the logs of both come back, also when the
/// input fails to compile.
fn add(state: CUlinkState, kind: CUjitInputType, bytes: &[u8], name: String, jit: &AppJit) -> Result<(), R> {
    let link = state as u64;
    let t = route::of(link)?;
    let op = ops::link_add { link: route::raw(link), kind: kind.0, name, jit: jit.sent.clone() };
    let added = route::call_to(t, &op, &[bytes], None);
    jit.fetch(t, 0);
    fetch(link);
    added
}

fn name_of(name: *const c_char) -> String {
    if name.is_null() { String::new() } else { unsafe { CStr::from_ptr(name) }.to_string_lossy().into_owned() }
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuLinkAddData_v2(
    state: CUlinkState,
    kind: CUjitInputType,
    data: *mut c_void,
    size: usize,
    name: *const c_char,
    n: c_uint,
    options: *mut CUjit_option,
    values: *mut *mut c_void,
) -> R {
    entry(|| {
        if data.is_null() || size == 0 {
            return Err(CUresult::CUDA_ERROR_INVALID_VALUE);
        }
        let jit = unsafe { AppJit::read(n, options, values)? };
        add(state, kind, unsafe { std::slice::from_raw_parts(data.cast::<u8>(), size) }, name_of(name), &jit)
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuLinkAddData(
    s: CUlinkState,
    k: CUjitInputType,
    d: *mut c_void,
    size: usize,
    name: *const c_char,
    n: c_uint,
    o: *mut CUjit_option,
    v: *mut *mut c_void,
) -> R {
    unsafe { cuLinkAddData_v2(s, k, d, size, name, n, o, v) }
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuLinkAddFile_v2(
    state: CUlinkState,
    kind: CUjitInputType,
    path: *const c_char,
    n: c_uint,
    options: *mut CUjit_option,
    values: *mut *mut c_void,
) -> R {
    entry(|| {
        if path.is_null() {
            return Err(CUresult::CUDA_ERROR_INVALID_VALUE);
        }
        let jit = unsafe { AppJit::read(n, options, values)? };
        // PTX as data ends with its NUL, which a file has not (the driver refused it so).
        let (path, bytes) = crate::module::app_file(path, |_| kind == CUjitInputType::CU_JIT_INPUT_PTX)?;
        add(state, kind, &bytes, path, &jit)
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuLinkAddFile(
    s: CUlinkState,
    k: CUjitInputType,
    path: *const c_char,
    n: c_uint,
    o: *mut CUjit_option,
    v: *mut *mut c_void,
) -> R {
    unsafe { cuLinkAddFile_v2(s, k, path, n, o, v) }
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuLinkComplete(state: CUlinkState, image: *mut *mut c_void, size: *mut usize) -> R {
    entry(|| {
        let link = state as u64;
        let t = route::of(link)?;
        let completed = route::call(t, &ops::cuLinkComplete { link: route::raw(link) });
        fetch(link);
        let n = completed?;
        let mut bytes = vec![0u8; n as usize].into_boxed_slice();
        route::call_to(t, &ops::link_image { link: route::raw(link), size: n }, &[], Some(&mut bytes))?;
        let mut all = links().lock();
        let kept = all.entry(link).or_default().image.insert(bytes);
        unsafe { put(image, kept.as_ptr().cast_mut().cast())? };
        unsafe { put(size, n as usize) }
    })
}

#[unsafe(no_mangle)]
pub extern "C" fn cuLinkDestroy(state: CUlinkState) -> R {
    entry(|| {
        let link = state as u64;
        route::call(route::of(link)?, &ops::cuLinkDestroy { link: route::raw(link) })?;
        links().lock().remove(&link);
        Ok(())
    })
}
