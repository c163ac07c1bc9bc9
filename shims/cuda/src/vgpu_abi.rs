//! The private `vgpu_*` C ABI through which sibling shims (cuBLAS) use this process's
//! session, with the calling thread's current context. See `include/vgpu.h`.

use crate::route::{self, Target};
use crate::state;
use protocol::{Call, ops};

/// Returned for a lost or unreachable server.
pub const VGPU_LOST: u32 = u32::MAX;

/// Send one already-encoded call (`op` from the protocol table) and, unless it is one-way,
/// wait for its reply: the reply value goes to `reply` (its length to `*reply_len`), the
/// reply's bulk bytes to `bulk_out`. Returns 0, the API status the server returned, or
/// `VGPU_LOST`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn vgpu_roundtrip(
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
) -> u32 {
    shim_support::guard(VGPU_LOST, || {
        let Ok(s) = state::session() else { return VGPU_LOST };
        let slice = |p: *const u8, n: usize| {
            if n == 0 || p.is_null() { &[][..] } else { unsafe { std::slice::from_raw_parts(p, n) } }
        };
        let out = (!bulk_out.is_null() && bulk_out_cap > 0)
            .then(|| unsafe { std::slice::from_raw_parts_mut(bulk_out, bulk_out_cap) });
        let args = slice(args, args_len);
        let (t, args, handle_of_reply) = if s.servers() > 1 {
            match cublas_route(op, args) {
                Ok((t, a, h)) => (t, std::borrow::Cow::Owned(a), h),
                Err(code) => return code,
            }
        } else {
            (route::here(), std::borrow::Cow::Borrowed(args), false)
        };
        match s.roundtrip_raw(t.server, op, route::raw(t.ctx), &args, &[slice(bulk_in, bulk_in_len)], out) {
            Ok(v) => {
                let v = if handle_of_reply { tag_created(t, v) } else { v };
                if v.len() > reply_cap || (reply.is_null() && !v.is_empty()) {
                    return VGPU_LOST;
                }
                if !v.is_empty() {
                    unsafe { std::ptr::copy_nonoverlapping(v.as_ptr(), reply, v.len()) };
                }
                if !reply_len.is_null() {
                    unsafe { *reply_len = v.len() };
                }
                0
            }
            Err(client::Error::Api(code)) => code,
            Err(_) => VGPU_LOST,
        }
    })
}

/// With several servers, cuBLAS handles are tagged like the driver's (see `route`): a call
/// on a handle goes to its server (in its context), with the server's values of the handle
/// and of a stream it is given. Returns the target, the arguments to send, and whether the
/// reply carries a new handle to tag (`cublasCreate_v2`). Other calls go to the current
/// context's server unchanged.
fn cublas_route(op: u32, args: &[u8]) -> Result<(Target, Vec<u8>, bool), u32> {
    fn on<C: Call>(args: &[u8], f: impl FnOnce(&mut C) -> Result<u64, u32>) -> Result<(Target, Vec<u8>), u32> {
        let mut c: C = postcard::from_bytes(args).map_err(|_| INVALID_VALUE)?;
        let h = f(&mut c)?;
        let t = route::of(h).map_err(|e| e.0)?;
        Ok((t, postcard::to_allocvec(&c).map_err(|_| INVALID_VALUE)?))
    }
    let untag = |h: &mut u64| -> Result<u64, u32> {
        let client = *h;
        *h = route::raw(client);
        Ok(client)
    };
    let (t, a) = match op {
        ops::cublasCreate_v2::OP => return Ok((route::here(), args.to_vec(), true)),
        ops::cublasDestroy_v2::OP => {
            let mut client = 0;
            let r = on::<ops::cublasDestroy_v2>(args, |c| {
                client = untag(&mut c.handle)?;
                Ok(client)
            })?;
            route::forget(client);
            r
        }
        ops::cublas_set::OP => on::<ops::cublas_set>(args, |c| {
            let h = untag(&mut c.handle)?;
            if c.what == protocol::cublas::SET_STREAM && !route::special(c.value) {
                // A stream of the handle's server goes as the server knows it; any other
                // value as one no server issued, so that the server reports the error (as
                // for a bad stream on one server: at the next synchronous call).
                c.value = if route::server_of(c.value).ok() == route::server_of(h).ok() {
                    route::raw(c.value)
                } else {
                    c.value | FOREIGN
                };
            }
            Ok(h)
        })?,
        ops::cublas_call::OP => on::<ops::cublas_call>(args, |c| untag(&mut c.handle))?,
        _ => (route::here(), args.to_vec()),
    };
    Ok((t, a, false))
}

/// The reply of `cublasCreate_v2` (status, handle) with the handle tagged with its server.
fn tag_created(t: Target, reply: Vec<u8>) -> Vec<u8> {
    let Ok((status, raw)) = postcard::from_bytes::<(u32, u64)>(&reply) else { return reply };
    if status != 0 {
        return reply;
    }
    match route::tag(t.server, raw) {
        Ok(h) => {
            route::remember(h, t.ctx);
            postcard::to_allocvec(&(status, h)).unwrap_or(reply)
        }
        Err(_) => reply,
    }
}

const INVALID_VALUE: u32 = 1;
/// Set in a handle value that belongs to another server: no server issues such a value.
const FOREIGN: u64 = 1 << 63;
