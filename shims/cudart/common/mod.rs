//! The CUDA runtime API, shared by `shims/cudart/v13` and `shims/cudart/v12`: each declares
//! this directory as its module `common` after fixing what differs between majors —
//! `crate::rt` (the bindings of its headers: `cudaDeviceProp` layout, enums) and
//! `crate::RUNTIME_VERSION`; `cfg(vgpu_major = "12" | "13")` selects the exports that exist
//! in only one list.
//!
//! Built on the driver API, as NVIDIA's runtime is: `libcuda.so.1` (ours, which forwards to
//! the server) is loaded on first use, and each runtime call becomes driver calls in the
//! current thread's context. Calls with local answers (error texts, call configuration, last
//! error, registration) never reach the driver.
//!
//! To implement an export, write `#[unsafe(no_mangle)] pub extern "C" fn NAME(...)` here:
//! crates/shim-build sees `fn NAME` and generates no stub for it. Exports take C's pointer
//! contracts as documented by NVIDIA, hence no per-function safety sections.
#![allow(non_snake_case, clippy::missing_safety_doc)]

/// Call a driver function: `cu!(cuMemAlloc_v2(&mut p, n))` (initialising the driver first)
/// or `cu!(lib => cuInit(0))`; yields `Res<()>` with the `CUresult` mapped.
macro_rules! cu {
    ($lib:expr => $f:ident($($a:expr),* $(,)?)) => {
        match &$lib.$f {
            Ok(f) => {
                #[allow(unused_unsafe)]
                // SAFETY: a symbol of libcuda with the signature of cuda.h; the arguments
                // follow the driver API's contract.
                let r = unsafe { f($($a),*) };
                $crate::common::error::check(r)
            }
            Err(_) => Err($crate::common::driver::missing(stringify!($f))),
        }
    };
    ($f:ident($($a:expr),* $(,)?)) => {
        match $crate::common::driver::lib() {
            Ok(l) => cu!(l => $f($($a),*)),
            Err(e) => Err(e),
        }
    };
}

/// An export and its per-thread-default-stream twin (`_ptsz`/`_ptds`, what code built with
/// `--default-stream per-thread` calls), which differ only in one value:
/// `fn cudaX, fn cudaX_ptsz(s: rt::cudaStream_t) -> E [s = s, ptsz(s)] { work(s) }` defines
/// both as `#[unsafe(no_mangle)] pub unsafe extern "C"`, with the attributes given (cfg, docs)
/// and `api(|| { let s = ...; work(s) })`, `s` being `s` in the first and `ptsz(s)` in the
/// second. Written once so that the two cannot drift apart; each `fn NAME` is spelled out for
/// crates/shim-build's scan.
macro_rules! per_thread {
    ($(
        $(#[$m:meta])*
        fn $plain:ident, fn $twin:ident($($p:ident: $t:ty),* $(,)?) -> $r:ty
        [$v:ident = $plain_v:expr, $twin_v:expr] $body:block
    )*) => {$(
        $(#[$m])*
        #[unsafe(no_mangle)]
        pub unsafe extern "C" fn $plain($($p: $t),*) -> $r {
            $crate::common::error::api(|| {
                #[allow(clippy::redundant_locals)] // `[s = s, ...]`: the first as called
                let $v = $plain_v;
                $body
            })
        }

        $(#[$m])*
        #[unsafe(no_mangle)]
        pub unsafe extern "C" fn $twin($($p: $t),*) -> $r {
            $crate::common::error::api(|| {
                let $v = $twin_v;
                $body
            })
        }
    )*};
}

mod context;
mod copy;
mod device;
mod driver;
mod error;
mod fatbin;
mod func;
mod graph;
mod hooks;
mod launch;
mod launch_attr;
mod memcpy;
mod memory;
mod names;
mod props;
mod registry;
mod stream;

use abi::cuda::CUstream;

use crate::rt;

/// `cudaStreamPerThread`; the driver's `CU_STREAM_PER_THREAD` has the same value, as have
/// the legacy stream (0x1) and the default stream (null).
pub(crate) const PER_THREAD: rt::cudaStream_t = std::ptr::without_provenance_mut(2);

/// A runtime stream handle as the driver's.
pub(crate) fn cs(s: rt::cudaStream_t) -> CUstream {
    s.cast()
}

/// The stream of a `_ptsz`/`_ptds` export (built with per-thread default streams): the
/// default stream there is the per-thread one.
pub(crate) fn ptsz(s: rt::cudaStream_t) -> rt::cudaStream_t {
    if s.is_null() { PER_THREAD } else { s }
}

/// `cudaRuntimeGetVersion`: the runtime version this library claims.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cudaRuntimeGetVersion(runtime_version: *mut i32) -> rt::cudaError_t {
    error::api(|| error::out(runtime_version, crate::RUNTIME_VERSION))
}
