//! The way to the server: `vgpu_roundtrip` of our `libcuda.so.1` (see `include/vgpu.h`),
//! which sends a call of the protocol table in the calling thread's current context over
//! the process's one session. Resolved once, at first use: the `libcuda.so.1` already
//! loaded (`RTLD_NOLOAD`), else loaded here; never a connection of our own.

use protocol::Call;
use std::ffi::{CStr, c_void};
use std::sync::OnceLock;

/// `vgpu_roundtrip`'s answer for a lost or unreachable server.
pub const VGPU_LOST: u32 = u32::MAX;

type Roundtrip = unsafe extern "C" fn(
    op: u32,
    args: *const u8,
    args_len: usize,
    bulk_in: *const u8,
    bulk_in_len: usize,
    bulk_out: *mut u8,
    bulk_out_cap: usize,
    reply: *mut u8,
    reply_cap: usize,
    reply_len: *mut usize,
) -> u32;

/// Why a call got no value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Error {
    /// No vgpu `libcuda.so.1` in this process, or the server is lost.
    Lost,
    /// The server answered a CUDA error (the frame's context, or a deferred asynchronous
    /// error; see `protocol::cublas::status_from_cuda`).
    Cuda(u32),
}

struct Driver {
    /// The `dlopen` handle of `libcuda.so.1` (kept open for the life of the process).
    lib: usize,
    #[cfg_attr(test, allow(dead_code))]
    roundtrip: Roundtrip,
}

fn dlopen_noload_first(name: &CStr) -> *mut c_void {
    // SAFETY: dlopen with a NUL-terminated name; RTLD_NOLOAD only looks.
    let h = unsafe { libc::dlopen(name.as_ptr(), libc::RTLD_NOW | libc::RTLD_NOLOAD) };
    if !h.is_null() {
        return h;
    }
    // SAFETY: as above.
    unsafe { libc::dlopen(name.as_ptr(), libc::RTLD_NOW) }
}

fn driver() -> Option<&'static Driver> {
    static D: OnceLock<Option<Driver>> = OnceLock::new();
    D.get_or_init(|| {
        let lib = dlopen_noload_first(c"libcuda.so.1");
        let sym = if lib.is_null() {
            std::ptr::null_mut()
        } else {
            // SAFETY: a live dlopen handle and a NUL-terminated name.
            unsafe { libc::dlsym(lib, c"vgpu_roundtrip".as_ptr()) }
        };
        if sym.is_null() {
            shim_support::log_once!(
                "cublas-no-vgpu-libcuda",
                "vgpu: libcublas needs vgpu's libcuda.so.1 (vgpu_roundtrip not found{}); cuBLAS calls fail",
                if lib.is_null() { ": libcuda.so.1 not loadable" } else { "" }
            );
            return None;
        }
        // SAFETY: vgpu_roundtrip has exactly this signature (include/vgpu.h).
        let roundtrip = unsafe { std::mem::transmute::<*mut c_void, Roundtrip>(sym) };
        Some(Driver { lib: lib as usize, roundtrip })
    })
    .as_ref()
}

/// Whether this process has vgpu's `libcuda.so.1` to talk through.
pub fn available() -> bool {
    driver().is_some()
}

/// A symbol of the `libcuda.so.1` we talk through (for the context set-up of
/// `cublasCreate_v2`). `F` must be the symbol's C function pointer type.
pub unsafe fn driver_fn<F: Copy>(name: &CStr) -> Option<F> {
    let d = driver()?;
    // SAFETY: a live dlopen handle and a NUL-terminated name.
    let p = unsafe { libc::dlsym(d.lib as *mut c_void, name.as_ptr()) };
    // SAFETY: the caller names the symbol's type; a fn pointer is pointer-sized.
    (!p.is_null()).then(|| unsafe { std::mem::transmute_copy::<*mut c_void, F>(&p) })
}

/// A symbol of an already loaded library (`RTLD_NOLOAD`): `None` if it is not loaded.
pub unsafe fn loaded_fn<F: Copy>(lib: &CStr, name: &CStr) -> Option<F> {
    // SAFETY: NUL-terminated names; RTLD_NOLOAD loads nothing. The handle is leaked on
    // purpose (closing it would only drop the reference count we just took).
    let h = unsafe { libc::dlopen(lib.as_ptr(), libc::RTLD_NOW | libc::RTLD_NOLOAD) };
    if h.is_null() {
        return None;
    }
    // SAFETY: a live handle and a NUL-terminated name.
    let p = unsafe { libc::dlsym(h, name.as_ptr()) };
    // SAFETY: as in driver_fn.
    (!p.is_null()).then(|| unsafe { std::mem::transmute_copy::<*mut c_void, F>(&p) })
}

/// Send `c` and, unless it is one-way, wait for its value.
pub fn call<C: Call>(c: &C) -> Result<C::Ret, Error> {
    let args = postcard::to_allocvec(c).map_err(|_| Error::Lost)?;
    let reply = raw(C::OP, &args, C::ONEWAY)?;
    postcard::from_bytes(&reply).map_err(|_| Error::Lost)
}

#[cfg(not(test))]
fn raw(op: u32, args: &[u8], oneway: bool) -> Result<Vec<u8>, Error> {
    let d = driver().ok_or(Error::Lost)?;
    let mut reply = [0u8; 64];
    let mut len = 0usize;
    // SAFETY: buffers with their true lengths; vgpu_roundtrip writes at most reply_cap bytes.
    let r = unsafe {
        (d.roundtrip)(
            op,
            args.as_ptr(),
            args.len(),
            std::ptr::null(),
            0,
            std::ptr::null_mut(),
            0,
            reply.as_mut_ptr(),
            reply.len(),
            &mut len,
        )
    };
    match r {
        0 if oneway => Ok(Vec::new()),
        0 => Ok(reply[..len.min(reply.len())].to_vec()),
        VGPU_LOST => Err(Error::Lost),
        code => Err(Error::Cuda(code)),
    }
}

/// Unit tests record what would be sent and answer from [`test_wire::REPLIES`].
#[cfg(test)]
fn raw(op: u32, args: &[u8], oneway: bool) -> Result<Vec<u8>, Error> {
    test_wire::SENT.with(|s| s.borrow_mut().push((op, args.to_vec())));
    if oneway {
        return Ok(Vec::new());
    }
    test_wire::REPLIES.with(|r| r.borrow_mut().pop_front()).unwrap_or(Err(Error::Lost))
}

#[cfg(test)]
pub mod test_wire {
    use super::Error;
    use std::cell::RefCell;
    use std::collections::VecDeque;

    thread_local! {
        /// Every call sent on this thread: (op, postcard-encoded arguments).
        pub static SENT: RefCell<Vec<(u32, Vec<u8>)>> = const { RefCell::new(Vec::new()) };
        /// Replies for the next synchronous calls (encoded values, or errors).
        pub static REPLIES: RefCell<VecDeque<Result<Vec<u8>, Error>>> = const { RefCell::new(VecDeque::new()) };
    }

    /// Queue the encoded value `v` as the next synchronous reply.
    pub fn reply<T: serde::Serialize>(v: &T) {
        REPLIES.with(|r| r.borrow_mut().push_back(Ok(postcard::to_allocvec(v).unwrap())));
    }

    /// Take what was sent so far.
    pub fn take() -> Vec<(u32, Vec<u8>)> {
        SENT.with(|s| std::mem::take(&mut *s.borrow_mut()))
    }
}
