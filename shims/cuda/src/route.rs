//! Which server, and which context there, a call goes to when the process talks to several
//! servers (`VGPU_SERVER=a,b`).
//!
//! - **Handles** (contexts, streams, events, modules, libraries, functions, graphs, graph
//!   execs, VMM allocation handles, cuBLAS handles) carry their server in their value:
//!   `client::handles` tags what a server issues and [`raw`] strips the tag before the value
//!   goes back. With one server nothing is tagged. Each handle also remembers the context
//!   it was made in ([`remember`]), so that a call with a handle of another server than the
//!   current context's runs there, in the handle's own context.
//! - **Device pointers** are real addresses (kernels use them) and are routed by the ranges
//!   the process allocated (`state::find_range`). Two servers may hand out the same
//!   addresses (two workers on one host); [`unique`] keeps every range the application
//!   holds disjoint across servers by retrying an allocation or reservation that lands on
//!   another server's range.
//! - A **stream of another server** than the memory a copy or memset touches: the stream is
//!   waited for, then the work is done synchronously on the memory's server ([`place`]).
//!   Launches, event records and graph launches need their stream on their own server
//!   (`CUDA_ERROR_INVALID_HANDLE` otherwise, as with a stream of another device).
//! - **Copies between servers** are staged through this process, chunk by chunk, reading the
//!   next chunk from one server while the previous one is written to the other ([`stage`]).

use crate::state::{self, MemKind, R};
use abi::cuda::CUresult;
use parking_lot::RwLock;
use protocol::frame::CHUNK;
use protocol::{Call, ops};
use std::collections::{BTreeMap, HashMap};
use std::sync::OnceLock;

/// Where a call goes: a server, and the (application-visible) context current there for
/// the call (0: none).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Target {
    pub server: usize,
    pub ctx: u64,
}

#[derive(Default)]
struct Tables {
    /// Handle → the context it was made in.
    owners: RwLock<HashMap<u64, u64>>,
    /// Reserved virtual address ranges: start → (length, context).
    reserved: RwLock<BTreeMap<u64, (u64, u64)>>,
}

fn tables() -> &'static Tables {
    static T: OnceLock<Tables> = OnceLock::new();
    T.get_or_init(Tables::default)
}

/// Number of servers (1 before `cuInit`).
pub fn servers() -> usize {
    state::session().map_or(1, |s| s.servers())
}

/// The server of an application-visible handle, and the server's own value.
pub fn split(h: u64) -> Result<(usize, u64), R> {
    let s = state::session()?;
    s.untag(h).ok_or(CUresult::CUDA_ERROR_INVALID_HANDLE)
}

/// The server's own value of a handle (for the wire).
pub fn raw(h: u64) -> u64 {
    split(h).map_or(h, |(_, r)| r)
}

/// The server that issued a handle.
pub fn server_of(h: u64) -> Result<usize, R> {
    split(h).map(|(s, _)| s)
}

/// The application-visible value of handle `raw` from `server`.
pub fn tag(server: usize, raw: u64) -> Result<u64, R> {
    let s = state::session()?;
    s.tag(server, raw).ok_or_else(|| {
        shim_support::log_once!(
            "vgpu-untaggable-handle",
            "vgpu: server {server} issued handle {raw:#x}, which cannot be told apart from other servers' handles"
        );
        CUresult::CUDA_ERROR_UNKNOWN
    })
}

/// Remember the context a new handle belongs to.
pub fn remember(h: u64, ctx: u64) {
    tables().owners.write().insert(h, ctx);
}

pub fn forget(h: u64) {
    tables().owners.write().remove(&h);
}

/// The context handle `h` was made in, if it was remembered.
pub fn owner(h: u64) -> Option<u64> {
    tables().owners.read().get(&h).copied()
}

/// The current context's target (server 0 without one).
pub fn here() -> Target {
    let ctx = state::current();
    let server = if ctx == 0 { 0 } else { server_of(ctx).unwrap_or(0) };
    Target { server, ctx }
}

/// Work on `server`: in the current context if it lives there, else in `ctx` (the object's
/// own), else in any context this process has there.
pub fn on(server: usize, ctx: u64) -> Target {
    let h = here();
    if h.server == server && (h.ctx != 0 || ctx == 0) {
        return h;
    }
    if ctx != 0 && server_of(ctx).is_ok_and(|s| s == server) {
        return Target { server, ctx };
    }
    let any = state::tables().contexts.read().iter().find(|(_, i)| i.server == server).map(|(&c, _)| c);
    Target { server, ctx: any.unwrap_or(0) }
}

/// Work for device `dev` (this process's ordinal): in the current context if it is that
/// device's, else in a context of that device this process has, else on its server.
pub fn for_device(dev: i32) -> Result<Target, R> {
    let d = state::device(dev)?;
    let server = d.server as usize;
    let h = here();
    if h.ctx != 0 && state::ctx_info(h.ctx).is_some_and(|i| i.device == dev) {
        return Ok(h);
    }
    let mine = state::tables().contexts.read().iter().find(|(_, i)| i.device == dev).map(|(&c, _)| c);
    Ok(match mine {
        Some(ctx) => on(server, ctx),
        None => on(server, 0),
    })
}

/// Where a call on handle `h` goes.
pub fn of(h: u64) -> Result<Target, R> {
    let server = server_of(h)?;
    Ok(on(server, owner(h).unwrap_or(0)))
}

/// Whether `s` is one of the driver's special stream values (the current context's
/// default streams).
pub fn special(s: u64) -> bool {
    s <= 2
}

/// Where work on stream `s` goes (the special streams: the current context).
pub fn stream(s: u64) -> Result<Target, R> {
    if special(s) { Ok(here()) } else { of(s) }
}

/// Where work on device memory at `p` goes: its allocation's server (the current
/// context's for memory this process does not know).
pub fn ptr(p: u64) -> Target {
    match state::find_range(p) {
        Some((_, _, MemKind::Device, ctx)) => match server_of(ctx) {
            Ok(server) => on(server, ctx),
            Err(_) => here(),
        },
        _ => match reservation(p) {
            Some((_, _, ctx)) => on(server_of(ctx).unwrap_or(0), ctx),
            None => here(),
        },
    }
}

/// Work of an object on target `t`, ordered on stream `s`: the stream must be on the same
/// server (a special stream means the current context, which must be there too).
pub fn with_stream(t: Target, s: u64) -> Result<Target, R> {
    if special(s) {
        let h = here();
        return if h.server == t.server {
            Ok(if h.ctx != 0 { h } else { t })
        } else {
            Err(CUresult::CUDA_ERROR_INVALID_HANDLE)
        };
    }
    let st = of(s)?;
    if st.server != t.server {
        return Err(CUresult::CUDA_ERROR_INVALID_HANDLE);
    }
    Ok(st)
}

/// Forward `c` to `t`.
pub fn call_to<C: Call>(t: Target, c: &C, bulk_in: &[&[u8]], bulk_out: Option<&mut [u8]>) -> Result<C::Ret, R> {
    let s = state::session()?;
    s.call(t.server, raw(t.ctx), c, bulk_in, bulk_out).map_err(state::err)
}

/// Forward `c` (no bulk data) to `t`.
pub fn call<C: Call>(t: Target, c: &C) -> Result<C::Ret, R> {
    call_to(t, c, &[], None)
}

/// Forward `c`, a one-way copy on `stream` of `bytes` already staged outside the caller's
/// buffer (`client::Session::call_staged`).
pub fn call_staged<C: Call>(t: Target, c: &C, stream: u64, bytes: u64) -> Result<C::Ret, R> {
    let s = state::session()?;
    s.call_staged(t.server, raw(t.ctx), c, stream, bytes).map_err(state::err)
}

/// Wait until the work queued on stream `s` is done.
pub fn wait_stream(s: u64) -> Result<(), R> {
    let t = stream(s)?;
    if special(s) && t.ctx == 0 {
        return Ok(()); // no context: nothing can be queued on its default stream
    }
    call(t, &ops::cuStreamSynchronize { stream: raw(s) })
}

/// Where memory work on target `t` ordered on stream `stream` (`None`: the synchronous
/// form) goes, and the server's value of the stream. A stream of another server is waited
/// for first; the work then runs synchronously on the memory's server (`None`).
pub fn place(t: Target, stream: Option<u64>) -> Result<(Target, Option<u64>), R> {
    let Some(s) = stream else {
        return Ok((t, None));
    };
    let st = self::stream(s)?;
    if st.server == t.server {
        return Ok((if special(s) { t } else { st }, Some(raw(s))));
    }
    wait_stream(s)?;
    Ok((t, None))
}

// ---------------------------------------------------------------- address ranges

/// Whether `[start, start+len)` overlaps a range of `map` (start → entry, `len_of` its
/// length) for which `counts` holds.
pub fn overlaps<V>(
    map: &BTreeMap<u64, V>,
    start: u64,
    len: u64,
    len_of: impl Fn(&V) -> u64,
    counts: impl Fn(&V) -> bool,
) -> bool {
    let end = start.saturating_add(len.max(1));
    map.range(..end).any(|(&s, v)| counts(v) && s.saturating_add(len_of(v).max(1)) > start)
}

/// Whether `[start, start+len)`, just handed out by `server`, overlaps memory this process
/// knows on another server (or host memory, or another server's reservation).
pub fn taken_elsewhere(server: usize, start: u64, len: u64) -> bool {
    let other = |ctx: u64| server_of(ctx).ok() != Some(server);
    let ranges = state::tables().ranges.read();
    overlaps(&ranges, start, len, |v| v.0, |v| v.1 == MemKind::Host || other(v.2))
        || overlaps(&tables().reserved.read(), start, len, |v| v.0, |v| other(v.1))
}

/// Most tries [`unique`] makes before giving up.
const TRIES: usize = 64;

/// An allocation (`get`) on `server` whose range does not overlap another server's.
///
/// One that does is given back (`give_back`) and its address range blocked on its server
/// (`block`: reserve it as virtual address space only, which costs no memory), so that the
/// server hands out another address next time. Without `block`, or when blocking fails, a
/// colliding allocation is held instead while the next one is made, and all held ones are
/// given back at the end.
pub fn unique(
    server: usize,
    len: u64,
    get: impl FnMut() -> Result<u64, R>,
    give_back: impl FnMut(u64),
    block: Option<&mut dyn FnMut(u64) -> bool>,
) -> Result<u64, R> {
    if servers() <= 1 {
        let mut get = get;
        return get();
    }
    retry_until_free(get, give_back, block, |p| taken_elsewhere(server, p, len))
}

/// The retry of [`unique`]: `get` until `taken` says no, at most [`TRIES`] times.
fn retry_until_free(
    mut get: impl FnMut() -> Result<u64, R>,
    mut give_back: impl FnMut(u64),
    mut block: Option<&mut dyn FnMut(u64) -> bool>,
    taken: impl Fn(u64) -> bool,
) -> Result<u64, R> {
    let mut held = Vec::new();
    let mut tries = 0;
    let r = loop {
        let p = match get() {
            Ok(p) => p,
            Err(e) => break Err(e),
        };
        if !taken(p) {
            break Ok(p);
        }
        shim_support::log_once!(
            "vgpu-address-collision",
            "vgpu: two servers hand out the same device addresses (two servers on one host?); \
             vgpu allocates again to keep them apart"
        );
        tries += 1;
        if tries == TRIES {
            give_back(p);
            break Err(CUresult::CUDA_ERROR_OUT_OF_MEMORY);
        }
        match block.as_mut() {
            Some(b) => {
                give_back(p);
                if !b(p) {
                    // The server would not reserve it: hold what comes back from now on.
                    block = None;
                }
            }
            None => held.push(p),
        }
    };
    for p in held {
        give_back(p);
    }
    r
}

/// Remember device memory `[start, start+len)` of context `ctx`.
pub fn add_device_range(start: u64, len: u64, ctx: u64) {
    state::insert_range(start, len, MemKind::Device, ctx);
}

pub fn add_reservation(start: u64, len: u64, ctx: u64) {
    tables().reserved.write().insert(start, (len, ctx));
}

pub fn remove_reservation(start: u64) -> Option<(u64, u64)> {
    tables().reserved.write().remove(&start)
}

/// The reservation holding `p`: (start, length, context).
pub fn reservation(p: u64) -> Option<(u64, u64, u64)> {
    let r = tables().reserved.read();
    let (&s, &(len, ctx)) = r.range(..=p).next_back()?;
    (p < s.saturating_add(len)).then_some((s, len, ctx))
}

// ---------------------------------------------------------------- copies

/// Host to device on `t`, `HTOD_FRAME` bytes per frame. With `stream == None` (synchronous
/// form) the last chunk waits for the server so that its error comes back here;
/// everything else is one-way, staged by the server and ordered on the stream, and sent
/// packed where it is runs of a word (`packed`).
pub fn htod_to(t: Target, dst: u64, src: &[u8], stream: Option<u64>) -> Result<(), R> {
    // While a stream of this process is captured, an asynchronous copy may go into a graph,
    // which natively reads the application's memory again at every launch: the server is
    // told where the bytes came from (`crate::graph` refreshes them before launches).
    let captured = stream.is_some() && CAPTURES.load(std::sync::atomic::Ordering::Relaxed) > 0;
    if let Some(s) = stream
        && !captured
        && offered(t, dst, src, s)?
    {
        return Ok(());
    }
    let frame = htod_frame(t.server, src.len());
    let n = src.chunks(frame).len();
    for (i, c) in src.chunks(frame).enumerate() {
        let at = dst + (i * frame) as u64;
        match stream {
            None if i + 1 == n => call_to(t, &ops::cuMemcpyHtoD_v2 { dst: at }, &[c], None)?,
            s => {
                let stream = s.unwrap_or(0);
                if captured {
                    call_to(t, &ops::htod_captured { dst: at, stream, host: c.as_ptr() as u64 }, &[c], None)?;
                    CAPTURED_SENT.store(true, std::sync::atomic::Ordering::Relaxed);
                    continue;
                }
                match packed(t.server, c) {
                    Some(p) => call_to(t, &ops::htod_runs { dst: at, stream, len: c.len() as u64 }, &[&p], None)?,
                    None if paged(t, at, c, stream)? => {}
                    None => call_to(t, &ops::cuMemcpyHtoDAsync_v2 { dst: at, stream }, &[c], None)?,
                }
            }
        }
    }
    Ok(())
}

/// Whether any copy went as `htod_captured` (then an ended capture asks which it holds).
pub static CAPTURED_SENT: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// An asynchronous copy offered by content first, where the session does that
/// (`client::blobs`): the server copies the chunks it holds, the others are sent for it to
/// keep. False: not offered, to be sent as it is.
fn offered(t: Target, dst: u64, src: &[u8], stream: u64) -> Result<bool, R> {
    use client::blobs::{self, Plan};
    let offers = blobs::Offers::global();
    // Runs of a word (attention masks, zeros) go packed instead, a few KiB.
    let plan = match state::session() {
        Ok(s) if s.offers_blobs(t.server) && !(s.packs(t.server) && protocol::runs::may_pack(src)) => {
            offers.plan(t.server, dst, src.len())
        }
        _ => Plan::Plain,
    };
    if plan == Plan::Plain {
        return Ok(false);
    }
    let chunks: Vec<&[u8]> = src.chunks(blobs::CHUNK).collect();
    let have = if plan == Plan::Ask {
        let (len, chunk, hashes) = (src.len() as u64, blobs::CHUNK as u64, blobs::hashes(&chunks));
        let have = call_to(t, &ops::htod_cached { dst, stream, len, chunk, hashes }, &[], None)?;
        if have.len() != chunks.len() {
            return Err(CUresult::CUDA_ERROR_UNKNOWN);
        }
        offers.answered(have.contains(&true));
        have
    } else {
        vec![false; chunks.len()]
    };
    for (i, c) in chunks.iter().enumerate().filter(|&(i, _)| !have[i]) {
        call_to(t, &ops::htod_keep { dst: dst + (i * blobs::CHUNK) as u64, stream }, &[c], None)?;
    }
    Ok(true)
}

/// A frame of a repeated copy sent in pieces the server keeps, where the session does that
/// (`client::pages`): the pieces sent before are named by their slot. False: not paged, to
/// be sent as it is.
fn paged(t: Target, dst: u64, src: &[u8], stream: u64) -> Result<bool, R> {
    use client::{Pages, pages};
    if src.len() < pages::MIN {
        return Ok(false);
    }
    let Some(lock) = state::session().ok().and_then(|s| s.pages(t.server)) else { return Ok(false) };
    // Held until the copy is sent: the server keeps pieces in the order they were planned.
    let mut table = lock.lock();
    if matches!(*table, Pages::Unopened) {
        // A server that does not know the call (another build) grants nothing.
        let open = ops::pages_open { piece: pages::PIECE as u32, slots: pages::SLOTS };
        *table = match call_to(t, &open, &[], None) {
            Ok(slots) if slots > 0 => Pages::Open(pages::Table::new(slots)),
            _ => Pages::Off,
        };
    }
    let Pages::Open(table) = &mut *table else { return Ok(false) };
    if !table.worth(dst, src.len()) {
        return Ok(false);
    }
    let pieces = table.plan(&pages::hashes(src), !src.len().is_multiple_of(pages::PIECE));
    let bulk = pages::sent(src, &pieces);
    call_to(t, &ops::htod_pages { dst, stream, len: src.len() as u64, pieces }, &bulk, None)?;
    Ok(true)
}

/// `bytes` packed as runs of a word, where that is worth it (`protocol::runs`): llama.cpp's
/// attention mask with every prompt batch, 0.5–2 MiB that become 10 KiB, which spares the
/// link (`client::Session::packs` says where).
fn packed(server: usize, bytes: &[u8]) -> Option<Vec<u8>> {
    state::session().ok().filter(|s| s.packs(server))?;
    protocol::runs::pack_if_worth(bytes)
}

/// The size of the frames host-to-device bytes go in. Over one connection 1 MiB (less than
/// `CHUNK`): the server stages one and starts its DMA while the next is still on the wire,
/// instead of receiving a whole chunk before starting. Over lanes the largest frame the
/// server lands in pinned memory (`server::BULK_PLACE_MAX`): every frame costs a hand-over
/// between threads on both sides, which took more than the overlap gained (llama.cpp's
/// prompt batches, 4 MiB of input embeddings). `VGPU_HTOD_FRAME_KB` (64 to 4096) sets it,
/// for measuring.
fn htod_frame(server: usize, len: usize) -> usize {
    static F: OnceLock<Option<usize>> = OnceLock::new();
    let set = *F.get_or_init(|| {
        let kb = std::env::var("VGPU_HTOD_FRAME_KB").ok().and_then(|v| v.parse::<usize>().ok());
        kb.map(|k| k.clamp(64, 4096) << 10)
    });
    let lanes = len > client::LANE_MIN && state::session().is_ok_and(|s| s.lanes(server));
    set.unwrap_or(if lanes { 4 << 20 } else { 1 << 20 })
}

/// Streams of this process being captured: while any is, copies go as usual (a capture
/// fails a device-to-host copy at once, which a copy sent without waiting would report
/// only at the next synchronous call).
pub static CAPTURES: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Copies into pinned memory this small go without waiting for their bytes (logits: 128 KiB
/// to 1 MiB a batch); larger ones are read as they come, over the lanes.
const LATER_MAX: usize = 1 << 20;

/// An asynchronous copy into this process's pinned memory sent without waiting for the
/// stream (`client::Session::dtoh_later`). False: copied as usual.
pub fn dtoh_later(t: Target, dst: &mut [u8], src: u64, stream: u64) -> Result<bool, R> {
    if dst.is_empty() || dst.len() > LATER_MAX || CAPTURES.load(std::sync::atomic::Ordering::Relaxed) > 0 {
        return Ok(false);
    }
    if !state::is_pinned(dst.as_ptr() as u64, dst.len() as u64) {
        return Ok(false);
    }
    let Ok(s) = state::session() else { return Ok(false) };
    let c = ops::cuMemcpyDtoHAsync_v2 { src, size: dst.len() as u64, stream };
    // SAFETY: pinned memory of this process, which cuMemFreeHost frees only after the
    // session collected the copies into it.
    unsafe { s.dtoh_later(t.server, raw(t.ctx), &c, dst.as_mut_ptr(), dst.len()) }.map_err(state::err)
}

/// Device (on `t`) to host, straight into the caller's buffer, chunk by chunk.
pub fn dtoh_from(t: Target, dst: &mut [u8], src: u64, stream: Option<u64>) -> Result<(), R> {
    for (i, c) in dst.chunks_mut(CHUNK).enumerate() {
        let at = src + (i * CHUNK) as u64;
        let size = c.len() as u64;
        match stream {
            None => call_to(t, &ops::cuMemcpyDtoH_v2 { src: at, size }, &[], Some(c))?,
            Some(s) => call_to(t, &ops::cuMemcpyDtoHAsync_v2 { src: at, size, stream: s }, &[], Some(c))?,
        }
    }
    Ok(())
}

/// Copy `n` bytes from device memory on `from` to device memory on another server `to`,
/// through this process: each side synchronously, in the order of its context's legacy
/// default stream; the chunks are pipelined (a helper thread writes chunk i while chunk i+1
/// is read). Returns when the last byte has been written.
pub fn stage(to: Target, dst: u64, from: Target, src: u64, n: usize) -> Result<(), R> {
    if n == 0 {
        return Ok(());
    }
    if n <= CHUNK {
        let mut buf = vec![0u8; n];
        dtoh_from(from, &mut buf, src, None)?;
        return htod_to(to, dst, &buf, None);
    }
    let chunks = n.div_ceil(CHUNK);
    std::thread::scope(|scope| {
        let (full_tx, full_rx) = std::sync::mpsc::sync_channel::<(usize, Vec<u8>)>(1);
        let (empty_tx, empty_rx) = std::sync::mpsc::channel::<Vec<u8>>();
        let writer = scope.spawn(move || -> Result<(), R> {
            for (i, buf) in full_rx {
                let at = dst + (i * CHUNK) as u64;
                // One-way except the last chunk, whose answer carries any earlier error.
                if i + 1 == chunks {
                    call_to(to, &ops::cuMemcpyHtoD_v2 { dst: at }, &[&buf], None)?;
                } else {
                    call_to(to, &ops::cuMemcpyHtoDAsync_v2 { dst: at, stream: 0 }, &[&buf], None)?;
                }
                let _ = empty_tx.send(buf);
            }
            Ok(())
        });
        let read = (|| -> Result<(), R> {
            for i in 0..chunks {
                let len = CHUNK.min(n - i * CHUNK);
                let mut buf = empty_rx.try_recv().unwrap_or_default();
                buf.resize(len, 0);
                dtoh_from(from, &mut buf, src + (i * CHUNK) as u64, None)?;
                if full_tx.send((i, buf)).is_err() {
                    break; // the writer stopped: its error is the answer
                }
            }
            Ok(())
        })();
        drop(full_tx);
        let wrote = writer.join().unwrap_or(Err(CUresult::CUDA_ERROR_UNKNOWN));
        read.and(wrote)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlap_rules() {
        let mut m = BTreeMap::new();
        m.insert(0x1000u64, (0x1000u64, 1u32));
        m.insert(0x4000, (0x100, 2));
        let all = |_: &(u64, u32)| true;
        let len = |v: &(u64, u32)| v.0;
        assert!(overlaps(&m, 0x1000, 1, len, all));
        assert!(overlaps(&m, 0x1fff, 0x10, len, all));
        assert!(overlaps(&m, 0x0800, 0x0801, len, all));
        assert!(!overlaps(&m, 0x0800, 0x0800, len, all), "ends where the range starts");
        assert!(!overlaps(&m, 0x2000, 0x2000, len, all), "starts where the range ends");
        assert!(overlaps(&m, 0x0, 0x10000, len, all), "covers both");
        assert!(overlaps(&m, 0x0, 0x10000, len, |v| v.1 == 2), "a range that counts");
        assert!(!overlaps(&m, 0x1000, 0x100, len, |v| v.1 == 2), "only one that does not count");
        assert!(!overlaps(&m, u64::MAX - 4, 100, len, all), "no overflow at the top");
    }

    #[test]
    fn reservations_are_found_by_inner_address() {
        add_reservation(0x10_0000, 0x1000, 7);
        assert_eq!(reservation(0x10_0800), Some((0x10_0000, 0x1000, 7)));
        assert_eq!(reservation(0x10_1000), None);
        assert_eq!(remove_reservation(0x10_0000), Some((0x1000, 7)));
        assert_eq!(reservation(0x10_0800), None);
    }

    #[test]
    fn colliding_allocations_are_retried_and_given_back() {
        // Holding: the first two answers collide; both are held while retrying, then
        // given back.
        let mut next = 0x1000;
        let mut back = Vec::new();
        let r = retry_until_free(
            || {
                next += 0x1000;
                Ok(next)
            },
            |p| back.push(p),
            None,
            |p| p < 0x4000,
        );
        assert_eq!(r, Ok(0x4000));
        assert_eq!(back, vec![0x2000, 0x3000]);
        // Always taken: give up after TRIES, with everything given back.
        let mut back = Vec::new();
        let r = retry_until_free(|| Ok(0x10), |p| back.push(p), None, |_| true);
        assert_eq!(r, Err(CUresult::CUDA_ERROR_OUT_OF_MEMORY));
        assert_eq!(back.len(), TRIES);
        // A failing allocation stops the retry; what was held goes back.
        let mut calls = 0;
        let mut back = Vec::new();
        let r = retry_until_free(
            || {
                calls += 1;
                if calls == 1 { Ok(0x5000) } else { Err(CUresult::CUDA_ERROR_OUT_OF_MEMORY) }
            },
            |p| back.push(p),
            None,
            |p| p == 0x5000,
        );
        assert_eq!(r, Err(CUresult::CUDA_ERROR_OUT_OF_MEMORY));
        assert_eq!(back, vec![0x5000]);
    }

    #[test]
    fn colliding_allocations_are_blocked_without_holding_memory() {
        // A server that hands out the lowest free address, like a driver reusing freed
        // address space: a collision is freed and its range blocked, so the next answer
        // differs, and no memory is held meanwhile.
        let used = std::cell::RefCell::new(std::collections::BTreeSet::new());
        let lowest = || (1u64..).map(|i| i * 0x1000).find(|a| !used.borrow().contains(a)).unwrap();
        let mut blocked = Vec::new();
        let mut block = |p: u64| {
            used.borrow_mut().insert(p);
            blocked.push(p);
            true
        };
        let r = retry_until_free(
            || {
                let a = lowest();
                used.borrow_mut().insert(a);
                Ok(a)
            },
            |p| {
                used.borrow_mut().remove(&p);
            },
            Some(&mut block),
            |p| p <= 0x2000,
        );
        assert_eq!(r, Ok(0x3000));
        assert_eq!(blocked, vec![0x1000, 0x2000]);
        // Blocking refused: fall back to holding (the same address would come back).
        let used = std::cell::RefCell::new(std::collections::BTreeSet::new());
        let lowest = || (1u64..).map(|i| i * 0x1000).find(|a| !used.borrow().contains(a)).unwrap();
        let mut refuse = |_: u64| false;
        let r = retry_until_free(
            || {
                let a = lowest();
                used.borrow_mut().insert(a);
                Ok(a)
            },
            |p| {
                used.borrow_mut().remove(&p);
            },
            Some(&mut refuse),
            |p| p <= 0x2000,
        );
        assert_eq!(r, Ok(0x3000));
        assert_eq!(used.borrow().len(), 1, "held ones went back: {:?}", used.borrow());
    }

    #[test]
    fn single_server_allocations_are_not_retried() {
        // Before cuInit (and with one server) whatever the server answers is taken.
        let mut calls = 0;
        let r = unique(
            0,
            16,
            || {
                calls += 1;
                Ok(0x1000)
            },
            |_| panic!("nothing to give back"),
            None,
        );
        assert_eq!((r, calls), (Ok(0x1000), 1));
    }
}
