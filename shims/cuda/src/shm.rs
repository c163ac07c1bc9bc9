//! Pinned memory and copies through the segment shared with a server on this host (`shm:`
//! addresses, `client::shm`). Each copy function answers `false` when the segment does not
//! apply (none, or a small pageable copy) and the caller uses the socket.

use crate::route::{self, Target};
use crate::state::{self, R};
use client::shm::{RING_MIN, RING_MIN_DOWN, RingIo, Shm};
use parking_lot::Mutex;
use protocol::ops;
use std::collections::HashMap;
use std::sync::OnceLock;

fn segment(server: usize) -> Option<&'static Shm> {
    state::session().ok()?.shm(server)
}

/// Pinned blocks handed out from a segment: address → server.
fn blocks() -> &'static Mutex<HashMap<u64, usize>> {
    static B: OnceLock<Mutex<HashMap<u64, usize>>> = OnceLock::new();
    B.get_or_init(Default::default)
}

/// `size` bytes of pinned memory from the segment of the current context's server, if it
/// has one with room.
pub fn alloc_host(size: usize) -> Option<*mut u8> {
    let server = route::here().server;
    let shm = segment(server)?;
    let Some(p) = shm.alloc(size) else {
        // Correct either way, but this memory's copies now cross the socket: say how to
        // give the process a segment its pinned buffers fit in.
        shim_support::log_once!(
            "vgpu-segment-full",
            "vgpu: {} MiB of pinned memory do not fit the shared segment ({} MiB of {} MiB free);              they come from ordinary memory and their copies go over the socket, more slowly:              raise VGPU_SHM_MB",
            size.div_ceil(1 << 20),
            shm.free_bytes() >> 20,
            shm.segment().len() >> 20
        );
        return None;
    };
    blocks().lock().insert(p as u64, server);
    Some(p)
}

/// Free a block of [`alloc_host`]; `false` if `p` is not one (it came from the C heap).
pub fn free_host(p: u64) -> bool {
    let Some(server) = blocks().lock().remove(&p) else { return false };
    // A copy may still be reading or writing the block, and the next allocation may hand
    // it out again: wait for the context's work first, as freeing pinned memory does
    // natively (free when nothing is queued).
    let _ = route::call(route::here(), &ops::cuCtxSynchronize {});
    // After a fork the block is the parent's, in a segment this session does not manage:
    // then `free` finds nothing and the block stays mapped, unused.
    if let Some(s) = segment(server) {
        s.free(p as *const u8);
    }
    true
}

/// The ring's calls, on one target and stream.
struct Wire {
    t: Target,
    stream: u64,
}

impl RingIo for Wire {
    type Error = R;
    /// The chunk is in the ring already: a synchronize after it needs no wait for the GPU,
    /// as after a copy over the socket.
    fn htod(&mut self, dst: u64, offset: u64, len: u64, ticket: u64) -> Result<(), R> {
        route::call_staged(self.t, &ops::shm_htod { dst, offset, len, stream: self.stream, ticket }, self.stream, len)
    }
    fn dtoh(&mut self, src: u64, offset: u64, len: u64, ticket: u64) -> Result<(), R> {
        route::call(self.t, &ops::shm_dtoh { src, offset, len, stream: self.stream, ticket })
    }
    fn wait(&mut self, ticket: u64) -> Result<(), R> {
        route::call(self.t, &ops::shm_wait { ticket })
    }
}

/// The end of a synchronous form (`stream == None`), which ran on the legacy default
/// stream: synchronize it, so that the copy is complete, or, where only ring uploads are
/// queued there, its bytes staged, as a pageable copy returns natively (`client::idle`:
/// then a barrier, and an error comes back with the next synchronous call).
fn finish(t: Target, stream: Option<u64>) -> Result<(), R> {
    match stream {
        Some(_) => Ok(()),
        None => route::call(t, &ops::cuStreamSynchronize { stream: 0 }),
    }
}

/// The synchronous form goes through the segment from this size on (asynchronous copies
/// from `RING_MIN`): the call waits for the server either way, and carrying 64 KiB with it
/// (into the frame, out of it on the server, then the driver's staging of pageable bytes)
/// took 22 µs where a DMA from the segment takes about 9.
const SYNC_MIN: usize = 32 << 10;

/// Host to device memory at `dst` on `t`, ordered on `stream` (`None`: the synchronous
/// form), for copies of at least `RING_MIN` bytes (`SYNC_MIN` for the synchronous form).
/// From pinned memory of the segment: the server's DMA reads it, later for the asynchronous
/// form (the caller must not change it before synchronizing, as natively). From pageable
/// memory: staged through the ring.
pub fn htod(t: Target, dst: u64, src: &[u8], stream: Option<u64>) -> Result<bool, R> {
    // Smaller asynchronous copies go over the socket even from pinned memory: the bytes
    // travel with the call, so a synchronize right after needs only a barrier
    // (`client::idle`), where a DMA from the segment would have to be waited for.
    if src.len() < if stream.is_some() { RING_MIN } else { SYNC_MIN } {
        return Ok(false);
    }
    let Some(shm) = segment(t.server) else { return Ok(false) };
    let s = stream.unwrap_or(0);
    if let Some(offset) = shm.read_in_place(src, stream.is_some()) {
        route::call(t, &ops::shm_htod { dst, offset, len: src.len() as u64, stream: s, ticket: 0 })?;
    } else if !shm.upload(&mut Wire { t, stream: s }, dst, src)? {
        return Ok(false);
    }
    finish(t, stream)?;
    Ok(true)
}

/// Device memory at `src` on `t` to host. Into pinned memory of the segment: the bytes
/// are there once the stream is synchronized (at once for the synchronous form). Into
/// pageable memory of at least `RING_MIN_DOWN` bytes: through the ring, complete on return, as
/// a pageable copy is natively.
pub fn dtoh(t: Target, dst: &mut [u8], src: u64, stream: Option<u64>) -> Result<bool, R> {
    let Some(shm) = segment(t.server) else { return Ok(false) };
    if dst.is_empty() {
        return Ok(false);
    }
    let s = stream.unwrap_or(0);
    if let Some(offset) = shm.offset_of(dst.as_ptr(), dst.len()) {
        route::call(t, &ops::shm_dtoh { src, offset, len: dst.len() as u64, stream: s, ticket: 0 })?;
        finish(t, stream)?;
        return Ok(true);
    }
    if dst.len() < RING_MIN_DOWN {
        return Ok(false);
    }
    let session = state::session()?;
    let ticket = session.idle_ticket();
    let done = shm.download(&mut Wire { t, stream: s }, dst, src)?;
    if done {
        // The last chunk's copy was queued after everything before it on the stream.
        session.stream_drained(t.server, route::raw(t.ctx), s, ticket);
    }
    Ok(done)
}
