//! cuBLAS on the GPU host: the real `libcublas` performs the calls the cuBLAS shims forward
//! (`protocol::cublas`), in the session's contexts and on its streams.
//!
//! The library is loaded at a session's first `cublasCreate_v2` (a worker that never sees
//! cuBLAS never pays for it): `$VGPU_CUBLAS_LIBRARY` if set, else `libcublas.so.13`, else
//! `libcublas.so.12`. Both majors are called through `abi::cublas13`'s signatures: every
//! forwarded function has the same C signature in 12 and 13 (the v12 shim checks the table
//! against `abi::cublas12`, the v13 shim and this file against `abi::cublas13`).
//!
//! [`Cublas`] owns the session's handles. A handle id is the real `cublasHandle_t`'s value,
//! used only after it is found in the session's set, so a forged or stale id is
//! `CUBLAS_STATUS_NOT_INITIALIZED`, never a pointer the library dereferences. Handles
//! remember their context: destroying the context forgets them ([`Cublas::forget_ctx`]).
//!
//! Pointer mode: each forwarded call says whether its scalars are device pointers; the
//! handle's real pointer mode is switched only when that changes. Host scalars arrive by
//! value and are passed to the library from an aligned buffer of this call.
//!
//! Device pointers (matrices, batched pointer arrays, the workspace) are not checked
//! against the session's allocations: their extents depend on the shapes, and the arrays'
//! contents live in device memory. A bad one faults on the GPU, inside this session's
//! worker process and context only.

use abi::cublas13::{
    CublasLib, cublasAtomicsMode_t, cublasComputeType_t, cublasDiagType_t, cublasFillMode_t, cublasGemmAlgo_t,
    cublasHandle_t, cublasMath_t, cublasOperation_t, cublasPointerMode_t, cublasSideMode_t, cudaDataType, cudaStream_t,
};
use protocol::cublas::{BadCall, FUNCS, SET_ATOMICS_MODE, SET_MATH_MODE, SET_STREAM, SET_WORKSPACE, status};
use std::collections::HashMap;
use std::os::raw::c_void;

/// A cuBLAS status as a `Result`.
pub type St<T> = Result<T, u32>;

fn check(code: u32) -> St<()> {
    if code == status::SUCCESS { Ok(()) } else { Err(code) }
}

/// An argument from the wire, narrowed back to its C type (the inverse of the shim's
/// widening: signed values were sign-extended, so truncation restores them).
pub trait FromWire {
    fn from_wire(v: u64) -> Self;
}

impl FromWire for i32 {
    fn from_wire(v: u64) -> Self {
        v as i32
    }
}

impl FromWire for i64 {
    fn from_wire(v: u64) -> Self {
        v as i64
    }
}

impl<T> FromWire for *const T {
    fn from_wire(v: u64) -> Self {
        v as usize as *const T
    }
}

impl<T> FromWire for *mut T {
    fn from_wire(v: u64) -> Self {
        v as usize as *mut T
    }
}

macro_rules! enum_from_wire {
    ($inner:ty => $($t:ty),*) => {
        $( impl FromWire for $t {
            fn from_wire(v: u64) -> Self {
                Self(v as $inner)
            }
        } )*
    };
}
enum_from_wire!(u32 => cublasOperation_t, cudaDataType, cublasComputeType_t, cublasSideMode_t, cublasFillMode_t, cublasDiagType_t);
enum_from_wire!(i32 => cublasGemmAlgo_t);

/// The typed call of every function of `protocol::cublas_functions!`, by wire index: the
/// C signature is the field's type in `CublasLib`, so the compiler checks each argument.
macro_rules! server_calls {
    ( $( fn $name:ident ( handle $(, $arg:ident : $role:ident ( $($t:tt)* ) )* $(,)? ) ; )* ) => {
        /// Call `FUNCS[func]` on `h` with its decoded arguments (scalars already pointing to
        /// host bytes or device memory). A symbol the library lacks is `NOT_SUPPORTED`.
        ///
        /// # Safety
        /// `h` must be a live handle of `lib`; host scalar pointers must be valid.
        #[allow(non_snake_case)]
        unsafe fn call_typed(lib: &CublasLib, func: u16, h: cublasHandle_t, args: &[u64]) -> u32 {
            $({
                const FUNC: u16 = match protocol::cublas::index_of(stringify!($name)) {
                    Some(i) => i,
                    None => panic!("not in the table"),
                };
                if func == FUNC {
                    let Ok(f) = lib.$name.as_ref() else { return status::NOT_SUPPORTED };
                    let mut it = args.iter().copied();
                    $( let $arg = it.next().unwrap_or(0); )*
                    // SAFETY: the caller's contract; each argument converted to its C type.
                    return unsafe { f(h $(, FromWire::from_wire($arg))*) }.0;
                }
            })*
            status::NOT_SUPPORTED
        }
    };
}
protocol::cublas_functions!(server_calls);

/// The library, loaded once per worker process and never unloaded (it starts threads and
/// registers exit handlers, like the driver).
fn load() -> Result<&'static CublasLib, String> {
    use std::sync::OnceLock;
    static LIB: OnceLock<Result<&'static CublasLib, String>> = OnceLock::new();
    LIB.get_or_init(|| {
        let names: Vec<String> = match std::env::var("VGPU_CUBLAS_LIBRARY") {
            Ok(p) if !p.is_empty() => vec![p],
            _ => vec!["libcublas.so.13".into(), "libcublas.so.12".into()],
        };
        let mut errors = Vec::new();
        for n in &names {
            // SAFETY: loading cuBLAS runs its initialisers, which is what we want.
            match unsafe { CublasLib::new(n) } {
                Ok(lib) => {
                    let lib: &'static CublasLib = Box::leak(Box::new(lib));
                    let prop = |p: u32| {
                        let mut v = 0;
                        lib.cublasGetProperty
                            .as_ref()
                            .ok()
                            .map(|f| unsafe { f(abi::cublas13::libraryPropertyType(p), &mut v) })
                            .map(|_| v)
                    };
                    tracing::info!(
                        "cuBLAS: {n} (version {}.{}.{})",
                        prop(0).unwrap_or(-1),
                        prop(1).unwrap_or(-1),
                        prop(2).unwrap_or(-1)
                    );
                    return Ok(lib);
                }
                Err(e) => errors.push(format!("{n}: {e}")),
            }
        }
        let msg = format!("cannot load cuBLAS ({}); set VGPU_CUBLAS_LIBRARY", errors.join("; "));
        tracing::warn!("{msg}");
        Err(msg)
    })
    .clone()
}

/// What the session knows about one of its handles.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Handle {
    /// The context it was created in (it dies with it).
    ctx: u64,
    /// The handle's real pointer mode, once this side has set it (`true`: device).
    device_scalars: Option<bool>,
}

/// The session's cuBLAS: its handles and the library they belong to.
#[derive(Default)]
pub struct Cublas {
    lib: Option<&'static CublasLib>,
    handles: HashMap<u64, Handle>,
}

impl Cublas {
    fn lib(&mut self) -> St<&'static CublasLib> {
        if let Some(l) = self.lib {
            return Ok(l);
        }
        let l = load().map_err(|_| status::NOT_INITIALIZED)?;
        self.lib = Some(l);
        Ok(l)
    }

    /// The library, for a call on `h`, which must be one of this session's handles.
    fn handle(&mut self, h: u64) -> St<(&'static CublasLib, &mut Handle)> {
        let lib = self.lib.ok_or(status::NOT_INITIALIZED)?;
        Ok((lib, self.handles.get_mut(&h).ok_or(status::NOT_INITIALIZED)?))
    }

    /// `cublasCreate_v2` in the current context `ctx` (which the caller has checked):
    /// `(status, handle id)`.
    pub fn create(&mut self, ctx: u64) -> (u32, u64) {
        let r = (|| {
            let lib = self.lib()?;
            let f = lib.cublasCreate_v2.as_ref().map_err(|_| status::NOT_SUPPORTED)?;
            let mut h: cublasHandle_t = std::ptr::null_mut();
            // SAFETY: an out-pointer to a local.
            check(unsafe { f(&mut h) }.0)?;
            if h.is_null() {
                return Err(status::INTERNAL_ERROR);
            }
            self.handles.insert(h as u64, Handle { ctx, device_scalars: None });
            Ok(h as u64)
        })();
        match r {
            Ok(h) => (status::SUCCESS, h),
            Err(s) => (s, 0),
        }
    }

    /// `cublasDestroy_v2`: the status.
    pub fn destroy(&mut self, h: u64) -> u32 {
        let Ok((lib, _)) = self.handle(h) else {
            return status::NOT_INITIALIZED;
        };
        self.handles.remove(&h);
        match lib.cublasDestroy_v2.as_ref() {
            // SAFETY: a live handle of this session, forgotten just now.
            Ok(f) => unsafe { f(h as cublasHandle_t) }.0,
            Err(_) => status::NOT_SUPPORTED,
        }
    }

    /// One setting (`protocol::cublas::SET_*`). `stream_ok` says whether a stream id
    /// belongs to this session (0, 1 and 2 are the special streams and pass through as
    /// `NULL`, `cudaStreamLegacy` and `cudaStreamPerThread`; others are the driver's
    /// `CUstream` values).
    pub fn set(&mut self, h: u64, what: u32, value: u64, size: u64, stream_ok: impl Fn(u64) -> bool) -> St<()> {
        let (lib, _) = self.handle(h)?;
        let hh = h as cublasHandle_t;
        macro_rules! call {
            ($f:ident($($a:expr),*)) => {
                match lib.$f.as_ref() {
                    // SAFETY: a live handle of this session; values of the C types.
                    Ok(f) => check(unsafe { f(hh, $($a),*) }.0),
                    Err(_) => Err(status::NOT_SUPPORTED),
                }
            };
        }
        match what {
            SET_STREAM => {
                if !stream_ok(value) {
                    return Err(status::INVALID_VALUE);
                }
                call!(cublasSetStream_v2(value as usize as cudaStream_t))
            }
            SET_MATH_MODE => call!(cublasSetMathMode(cublasMath_t(value as u32))),
            SET_ATOMICS_MODE => call!(cublasSetAtomicsMode(cublasAtomicsMode_t(value as u32))),
            SET_WORKSPACE => call!(cublasSetWorkspace_v2(value as usize as *mut c_void, size as usize)),
            _ => Err(status::INVALID_VALUE),
        }
    }

    /// A forwarded function (`ops::cublas_call`).
    pub fn call(&mut self, func: u16, h: u64, device_scalars: bool, args: &[u64], scalars: &[u8]) -> St<()> {
        let (lib, handle) = self.handle(h)?;
        let (_, layout) = protocol::cublas::decode(func, device_scalars, args, scalars).map_err(|e| match e {
            BadCall::UnknownFunction => status::NOT_SUPPORTED,
            _ => status::INVALID_VALUE,
        })?;
        if handle.device_scalars != Some(device_scalars) {
            let f = lib.cublasSetPointerMode_v2.as_ref().map_err(|_| status::NOT_SUPPORTED)?;
            let mode = cublasPointerMode_t(u32::from(device_scalars));
            // SAFETY: a live handle of this session.
            check(unsafe { f(h as cublasHandle_t, mode) }.0)?;
            handle.device_scalars = Some(device_scalars);
        }
        let mut args = args.to_vec();
        let slots = HostScalars::place(&layout, scalars, &mut args);
        // SAFETY: a live handle; host scalars point into `slots`, alive for the call.
        let r = unsafe { call_typed(lib, func, h as cublasHandle_t, &args) };
        drop(slots);
        check(r)
    }

    /// Forget the handles made in `ctx`, which is gone (and took their resources with it).
    pub fn forget_ctx(&mut self, ctx: u64) {
        self.handles.retain(|_, hd| hd.ctx != ctx);
    }

    /// Destroy every handle (the session ends; call before its contexts are destroyed).
    pub fn close(&mut self) {
        let hs: Vec<u64> = self.handles.keys().copied().collect();
        for h in hs {
            let _ = self.destroy(h);
        }
    }

    /// Number of live handles.
    pub fn len(&self) -> usize {
        self.handles.len()
    }

    pub fn is_empty(&self) -> bool {
        self.handles.is_empty()
    }
}

/// Host scalars of one call, each in its own 16-byte-aligned slot (the largest scalar,
/// `cuDoubleComplex`, is 16 bytes).
pub struct HostScalars(Vec<u128>);

impl HostScalars {
    /// Copy each scalar of `layout` (`(argument index, bytes)`, consuming `bytes` in order)
    /// into a slot and point its argument at it. `layout` comes from
    /// `protocol::cublas::decode`, which checked that the bytes add up.
    pub fn place(layout: &[(usize, usize)], bytes: &[u8], args: &mut [u64]) -> HostScalars {
        let mut slots = HostScalars(vec![0u128; layout.len()]);
        let mut at = 0;
        for (k, &(i, n)) in layout.iter().enumerate() {
            let n = n.min(16);
            let src = bytes.get(at..at + n).unwrap_or(&[]);
            let mut b = [0u8; 16];
            b[..src.len()].copy_from_slice(src);
            slots.0[k] = u128::from_ne_bytes(b);
            args[i] = &slots.0[k] as *const u128 as usize as u64;
            at += n;
        }
        slots
    }
}

/// What a failed one-way cuBLAS call leaves for the session's next synchronous call, after
/// logging it (the client saw success when it sent the call).
pub fn deferred(what: &str, s: u32) -> u32 {
    tracing::warn!("cuBLAS {what} failed on the server: {} ({s})", protocol::cublas::status_name(s).to_string_lossy());
    protocol::cublas::deferred_code(s)
}

/// The name of a forwarded function, for logs.
pub fn func_name(func: u16) -> &'static str {
    FUNCS.get(func as usize).map_or("<unknown cuBLAS function>", |f| f.name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::cublas::{decode, index_of};

    #[test]
    fn narrowing_restores_the_c_values() {
        assert_eq!(i32::from_wire((-3i32) as i64 as u64), -3);
        assert_eq!(i64::from_wire((-1i64) as u64), -1);
        assert_eq!(cublasGemmAlgo_t::from_wire(u64::MAX), cublasGemmAlgo_t::CUBLAS_GEMM_DEFAULT);
        assert_eq!(cublasOperation_t::from_wire(2), cublasOperation_t::CUBLAS_OP_C);
        assert_eq!(<*const f32>::from_wire(0x1000) as usize, 0x1000);
    }

    #[test]
    fn host_scalars_land_aligned_in_their_slots() {
        let func = index_of("cublasZgemm_v2").unwrap();
        let mut args = vec![0u64; 13];
        let alpha: [f64; 2] = [1.5, -2.5];
        let beta: [f64; 2] = [0.25, 4.0];
        let bytes: Vec<u8> = alpha.iter().chain(&beta).flat_map(|v| v.to_le_bytes()).collect();
        let (_, layout) = decode(func, false, &args, &bytes).unwrap();
        let slots = HostScalars::place(&layout, &bytes, &mut args);
        for (i, want) in [(5, alpha), (10, beta)] {
            assert_eq!(args[i] % 16, 0);
            // SAFETY: points into `slots`, alive.
            let got = unsafe { *(args[i] as usize as *const [f64; 2]) };
            assert_eq!(got, want);
        }
        drop(slots);
    }

    #[test]
    fn unknown_handles_and_settings_are_refused() {
        let mut c = Cublas::default();
        assert_eq!(c.destroy(0x1234), status::NOT_INITIALIZED);
        assert_eq!(c.set(0x1234, SET_STREAM, 0, 0, |_| true), Err(status::NOT_INITIALIZED));
        assert_eq!(c.call(0, 0x1234, false, &[0; 13], &[0; 8]), Err(status::NOT_INITIALIZED));
        assert!(c.is_empty());
        assert_eq!(func_name(0), "cublasSgemm_v2");
        assert_eq!(func_name(u16::MAX), "<unknown cuBLAS function>");
    }

    #[test]
    fn deferred_errors_speak_cuda() {
        assert_eq!(deferred("test", status::EXECUTION_FAILED), 719);
        assert_eq!(deferred("test", status::NOT_SUPPORTED), protocol::UNSUPPORTED);
    }
}
