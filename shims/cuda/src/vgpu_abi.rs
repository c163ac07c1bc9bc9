//! The private `vgpu_*` C ABI through which sibling shims (cuBLAS) use this process's
//! session, with the calling thread's current context. See `include/vgpu.h`.

use crate::state;

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
        let slice = |p: *const u8, n: usize| if n == 0 || p.is_null() { &[][..] } else { unsafe { std::slice::from_raw_parts(p, n) } };
        let out = (!bulk_out.is_null() && bulk_out_cap > 0).then(|| unsafe { std::slice::from_raw_parts_mut(bulk_out, bulk_out_cap) });
        let ctx = state::current();
        let server = state::ctx_info(ctx).map_or(0, |i| i.server);
        match s.roundtrip_raw(server, op, ctx, slice(args, args_len), &[slice(bulk_in, bulk_in_len)], out) {
            Ok(v) => {
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
