//! The vgpu wire protocol: frames, handshake, and the single table of forwarded calls.
//!
//! No I/O lives here; `transport` moves frames and the server and shims give them meaning.

pub mod dequant;
pub mod frame;
pub mod hello;
pub mod host_funcs;
pub mod jit;
mod macros;
pub mod pages;
pub mod runs;
mod table;

pub use table::*;

use serde::{Serialize, de::DeserializeOwned};

/// Bumped whenever the frame or handshake format changes.
pub const PROTOCOL_VERSION: u32 = 7;

/// `CUDA_ERROR_NOT_SUPPORTED`: what a backend answers for a call it does not implement.
pub const UNSUPPORTED: u32 = 801;

/// The smallest host-to-device copy offered by content (`htod_cached`), and the smallest
/// chunk a server keeps (`htod_keep`): clients offer nothing smaller, and a server keeping
/// tiny ones would run out of inodes before its byte cap.
pub const BLOB_MIN: usize = 64 << 10;

/// A forwarded call: its opcode, whether the caller waits, and what it returns.
pub trait Call: Serialize + DeserializeOwned + std::fmt::Debug {
    const OP: u32;
    const ONEWAY: bool;
    type Ret: Serialize + DeserializeOwned + std::fmt::Debug;
    /// The stream this call is ordered on, if it takes one (its argument named `stream`).
    fn stream(&self) -> Option<u64>;
    /// The event this call is about, if it takes one (its argument named `event`).
    fn event(&self) -> Option<u64>;
}

/// The raw bytes that travel beside a call's arguments.
pub struct Io<'a> {
    /// Bytes the client sent after the arguments (copy source, module image, params).
    pub bulk_in: &'a [u8],
    /// Bytes the backend returns after the reply value (copy destination).
    pub bulk_out: &'a mut Vec<u8>,
}

/// FNV-1a, so both ends can compare wire tables in the handshake.
pub const fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf29ce484222325;
    let mut i = 0;
    while i < bytes.len() {
        h ^= bytes[i] as u64;
        h = h.wrapping_mul(0x100000001b3);
        i += 1;
    }
    h
}

/// Hash of the call table: two builds interoperate only if it matches.
pub const WIRE_HASH: u64 = fnv1a(WIRE_DEFINITION.as_bytes())
    ^ fnv1a(nvml::DEFINITION.as_bytes()).rotate_left(1)
    ^ fnv1a(cublas::DEFINITION.as_bytes()).rotate_left(2);

/// Whether memory-pool attribute `attr` (a `CUmemPool_attribute`) is an `int` to the
/// driver (the three reuse flags) rather than a 64-bit value (thresholds and counters):
/// how both sides read and write `cuMemPoolSetAttribute`'s and `cuMemPoolGetAttribute`'s value.
pub fn pool_attr_is_int(attr: u32) -> bool {
    attr <= 3
}

/// An IPC handle (`CUipcMemHandle`, `CUipcEventHandle`: 64 `c_char`s) as its bytes travel.
pub fn ipc_bytes(reserved: &[std::ffi::c_char; 64]) -> Vec<u8> {
    reserved.iter().map(|&c| c as u8).collect()
}

/// An IPC handle's 64 `c_char`s from the bytes that travelled (none unless exactly 64).
pub fn ipc_reserved(bytes: &[u8]) -> Option<[std::ffi::c_char; 64]> {
    let b: [u8; 64] = bytes.try_into().ok()?;
    Some(b.map(|x| x as std::ffi::c_char))
}

/// Whether a tensor map's arrays have the lengths the header gives them for `rank`: `rank`
/// dimensions, `rank - 1` strides and `rank` of each per-dimension array (`per_dim`); rank
/// 1 to 5, 3 to 5 for im2col (whose corners have `rank - 2`, checked by the caller).
pub fn tensor_map_shape(rank: u32, dims: usize, strides: usize, per_dim: &[usize], im2col: bool) -> bool {
    let r = rank as usize;
    (if im2col { 3..=5 } else { 1..=5 }).contains(&r)
        && dims == r
        && strides == r - 1
        && per_dim.iter().all(|&n| n == r)
}

/// One line per opcode, most time first: `(op, calls, total time)` rows with calls > 0, as
/// the client's `VGPU_TRACE=summary` and the server's `VGPU_STATS=1` print them.
pub fn call_time_table(rows: impl IntoIterator<Item = (u32, u64, std::time::Duration)>) -> String {
    let mut rows: Vec<_> = rows.into_iter().filter(|r| r.1 > 0).collect();
    rows.sort_by_key(|r| std::cmp::Reverse(r.2));
    rows.iter()
        .map(|&(op, n, t)| {
            format!(
                "  {:<40} {:>9} calls {:>10.3} ms {:>8.2} us/call{}",
                op_name(op),
                n,
                t.as_secs_f64() * 1e3,
                t.as_secs_f64() * 1e6 / n as f64,
                if is_oneway(op) { " (one-way)" } else { "" }
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

pub fn op_name(op: u32) -> &'static str {
    OP_NAMES.get(op as usize).copied().unwrap_or("<unknown>")
}

/// Whether a call must see the work a server deferred before it done (a pending barrier):
/// every one but `shm_wait`, which only frees slots of the shared segment's staging ring
/// and is answered by its copies' own events. Waiting for a barrier there made each reused
/// slot a wait for the GPU, which on a shared GPU cost a prompt batch a turn of the others'
/// work (session 26).
pub fn sees_deferred_work(op: u32) -> bool {
    op != Op::shm_wait as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_is_consistent() {
        assert_eq!(OP_NAMES.len(), Op::cublas_call as usize + 1);
        assert_eq!(op_name(Op::cuMemAlloc_v2 as u32), "cuMemAlloc_v2");
        assert!(is_oneway(Op::cuLaunchKernel as u32));
        assert!(!is_oneway(Op::cuMemAlloc_v2 as u32));
        assert_ne!(WIRE_HASH, 0);
    }

    #[test]
    fn only_ring_waits_skip_deferred_work() {
        assert!(!sees_deferred_work(Op::shm_wait as u32));
        for op in [Op::cuStreamSynchronize, Op::cuCtxSynchronize, Op::cuMemcpyDtoH_v2, Op::cuLaunchKernel] {
            assert!(sees_deferred_work(op as u32), "{}", op_name(op as u32));
        }
    }

    #[test]
    fn dispatch_decodes_and_rejects() {
        let args = postcard::to_allocvec(&ops::cuMemAlloc_v2 { bytesize: 4096 }).unwrap();
        let mut out = Vec::new();
        let mut io = Io { bulk_in: &[], bulk_out: &mut out };
        let mut b = table::tests_support::Fixed(0x1000);
        let r = dispatch(&mut b, Op::cuMemAlloc_v2 as u32, &args, &mut io).unwrap().unwrap();
        let ptr: u64 = postcard::from_bytes(&r).unwrap();
        assert_eq!(ptr, 0x1000 + 4096);
        assert!(matches!(dispatch(&mut b, 99_999, &args, &mut io), Err(frame::FrameError::UnknownOp(99_999))));
        assert!(matches!(
            dispatch(&mut b, Op::cuModuleGetFunction as u32, &[0xff, 0xff, 0xff], &mut io),
            Err(frame::FrameError::Decode { .. })
        ));
        // A call the backend leaves out answers "not supported".
        let args = postcard::to_allocvec(&ops::cuCtxSynchronize {}).unwrap();
        let r = dispatch(&mut b, Op::cuCtxSynchronize as u32, &args, &mut io).unwrap();
        assert_eq!(r, Err(UNSUPPORTED));
    }

    #[test]
    fn tensor_map_arrays_are_sized_by_rank() {
        use super::tensor_map_shape as ok;
        assert!(ok(2, 2, 1, &[2, 2], false));
        assert!(!ok(2, 2, 2, &[2, 2], false), "rank - 1 strides");
        assert!(!ok(2, 2, 1, &[2, 1], false));
        assert!(!ok(6, 6, 5, &[6], false), "at most 5");
        assert!(!ok(0, 0, 0, &[], false));
        assert!(!ok(2, 2, 1, &[2], true), "im2col from rank 3");
        assert!(ok(3, 3, 2, &[3], true));
    }

    #[test]
    fn ipc_handles_are_64_bytes_both_ways() {
        let b: Vec<u8> = (0..64).map(|i| (i * 7 + 200) as u8).collect();
        assert_eq!(super::ipc_bytes(&super::ipc_reserved(&b).unwrap()), b);
        assert!(super::ipc_reserved(&b[..63]).is_none());
    }
}

pub mod cublas;
pub mod nvml;
