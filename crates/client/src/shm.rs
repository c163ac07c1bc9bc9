//! The client's side of the shared-memory data plane (`shm:/path/to/vgpu.sock`): a segment
//! shared with the server, from which pinned host memory (`cuMemAllocHost` and friends) is
//! carved, and a staging ring in it for large pageable copies.
//!
//! The segment is laid out as the ring (its first part, split into slots) and then the
//! heap. A copy whose host side lies in the heap names its offset and the server's DMA does
//! the rest. A large pageable copy goes through the ring chunk by chunk: the client copies
//! chunk i+1 into a slot while the server's DMA moves chunk i; each ring copy carries a
//! ticket, and a slot is reused only after `shm_wait` has answered for its last ticket.

use parking_lot::Mutex;
use protocol::hello::{Hello, Welcome};
use protocol::ops;
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use transport::{Address, Conn, Error, Segment, Timeouts};

/// Default segment size (`VGPU_SHM_MB`).
pub const DEFAULT_MB: usize = 256;
/// Pageable copies of at least this many bytes go through the ring; smaller ones stay on the
/// socket, where one frame costs less than a ring round.
pub const RING_MIN: usize = 256 << 10;
/// Downloads go through the ring from a smaller size: a download waits for its ticket
/// either way, and the ring spares the socket the bytes (a decoding LLM's logits, about
/// 128 KiB a token, are the case in point).
pub const RING_MIN_DOWN: usize = 32 << 10;
/// Largest ring (a quarter of the segment when that is smaller).
const RING_MAX: usize = 32 << 20;
/// Ring slots: enough to keep the DMA busy while the client fills the next ones.
const SLOTS: usize = 8;
/// Heap granularity and alignment: a page, as pinned allocations natively are.
pub const ALIGN: u64 = 4096;

/// First-fit allocator over `[start, end)` of the segment, in `ALIGN` units. Free blocks are
/// kept coalesced, keyed by offset.
#[derive(Debug)]
pub struct Heap {
    free: BTreeMap<u64, u64>,
    used: HashMap<u64, u64>,
}

impl Heap {
    pub fn new(start: u64, end: u64) -> Heap {
        let start = start.div_ceil(ALIGN) * ALIGN;
        let mut free = BTreeMap::new();
        if end > start {
            free.insert(start, (end - start) / ALIGN * ALIGN);
        }
        Heap { free, used: HashMap::new() }
    }

    /// The offset of `size` free bytes (at least one unit), or `None` when none are left.
    pub fn alloc(&mut self, size: u64) -> Option<u64> {
        let need = size.max(1).checked_next_multiple_of(ALIGN)?;
        let (&at, &len) = self.free.iter().find(|&(_, &len)| len >= need)?;
        self.free.remove(&at);
        if len > need {
            self.free.insert(at + need, len - need);
        }
        self.used.insert(at, need);
        Some(at)
    }

    /// Give back the block at `at`; `false` if no block starts there.
    pub fn free(&mut self, at: u64) -> bool {
        let Some(mut len) = self.used.remove(&at) else { return false };
        let mut start = at;
        if let Some((&next, &n)) = self.free.range(at + len..).next()
            && next == at + len
        {
            self.free.remove(&next);
            len += n;
        }
        if let Some((&prev, &p)) = self.free.range(..at).next_back()
            && prev + p == at
        {
            self.free.remove(&prev);
            start = prev;
            len += p;
        }
        self.free.insert(start, len);
        true
    }

    /// Bytes free in all.
    pub fn free_bytes(&self) -> u64 {
        self.free.values().sum()
    }
}

/// What the ring needs from the server: the `shm_*` calls, bound to a target and stream.
pub trait RingIo {
    type Error;
    fn htod(&mut self, dst: u64, offset: u64, len: u64, ticket: u64) -> Result<(), Self::Error>;
    fn dtoh(&mut self, src: u64, offset: u64, len: u64, ticket: u64) -> Result<(), Self::Error>;
    /// Wait until every ring copy up to `ticket` has completed.
    fn wait(&mut self, ticket: u64) -> Result<(), Self::Error>;
}

/// Per slot, the ticket of the last copy that used it (0: none pending).
#[derive(Debug)]
struct Ring {
    pending: Vec<u64>,
    next: usize,
    ticket: u64,
}

impl Ring {
    /// The next slot, once nothing uses it any more.
    fn slot<I: RingIo>(&mut self, io: &mut I) -> Result<usize, I::Error> {
        let k = self.next;
        self.next = (k + 1) % self.pending.len();
        self.settle(io, self.pending[k])?;
        Ok(k)
    }

    /// Wait for `ticket` (0: nothing to wait for), which frees every slot up to it.
    fn settle<I: RingIo>(&mut self, io: &mut I, ticket: u64) -> Result<(), I::Error> {
        if ticket == 0 {
            return Ok(());
        }
        io.wait(ticket)?;
        for p in &mut self.pending {
            if *p <= ticket {
                *p = 0;
            }
        }
        Ok(())
    }

    fn next_ticket(&mut self) -> u64 {
        self.ticket += 1;
        self.ticket
    }
}

/// A segment shared with one server.
pub struct Shm {
    seg: std::sync::Arc<Segment>,
    /// Bytes per ring slot (0: no ring, the segment is too small).
    slot: usize,
    heap: Mutex<Heap>,
    ring: Mutex<Ring>,
    /// For a part of a shared file: this machine's claim on that part (see `claim_part`).
    _claim: Option<std::fs::File>,
}

impl Shm {
    /// A segment of `bytes`, laid out as ring and heap.
    pub fn new(bytes: usize) -> std::io::Result<Shm> {
        Ok(Shm::over(Segment::create(bytes)?))
    }

    /// `seg` laid out as ring and heap.
    fn over(seg: Segment) -> Shm {
        let bytes = seg.len();
        let seg = std::sync::Arc::new(seg);
        let ring = (bytes / 4).min(RING_MAX);
        let mut slot = ring / SLOTS / ALIGN as usize * ALIGN as usize;
        if slot < 64 << 10 {
            slot = 0;
        }
        let heap = Heap::new((slot * SLOTS) as u64, bytes as u64);
        let ring = Ring { pending: vec![0; SLOTS], next: 0, ticket: 0 };
        Shm { seg, slot, heap: Mutex::new(heap), ring: Mutex::new(ring), _claim: None }
    }

    /// The segment size `VGPU_SHM_MB` asks for (`None`: 0, no segment).
    pub fn size_from_env() -> Option<usize> {
        let mb = match std::env::var("VGPU_SHM_MB") {
            Ok(v) => v.trim().parse::<usize>().unwrap_or(DEFAULT_MB),
            Err(_) => DEFAULT_MB,
        };
        (mb > 0).then(|| mb.saturating_mul(1 << 20).min(transport::MAX_SEGMENT as usize))
    }

    pub fn segment(&self) -> &Segment {
        &self.seg
    }

    /// `size` bytes of pinned host memory from the heap, or `None` when it is full.
    pub fn alloc(&self, size: usize) -> Option<*mut u8> {
        let at = self.heap.lock().alloc(size as u64)?;
        self.seg.range(at, size as u64)
    }

    /// Bytes of the heap not handed out.
    pub fn free_bytes(&self) -> u64 {
        self.heap.lock().free_bytes()
    }

    /// Free a block from [`Shm::alloc`]; `false` if `p` is not one.
    pub fn free(&self, p: *const u8) -> bool {
        self.seg.offset_of(p, 0).is_some_and(|at| self.heap.lock().free(at))
    }

    /// The offset of `[p, p+len)` if it lies in the segment.
    pub fn offset_of(&self, p: *const u8, len: usize) -> Option<u64> {
        self.seg.offset_of(p, len)
    }

    /// Move the connection's frames into rings carved from the heap (`transport::ring`),
    /// unless `VGPU_SHM_RING=0` or the heap has no room; the server refusing them leaves the
    /// frames on the socket. Only a connection lost on the way is an error.
    fn frames_through_rings(&self, conn: &Conn, address: &Address) -> Result<(), Error> {
        if std::env::var("VGPU_SHM_RING").is_ok_and(|v| v.trim() == "0") {
            return Ok(());
        }
        let cap = transport::ring::RING_CAP;
        let Some(at) = self.alloc(transport::ring::ring_bytes(cap)).and_then(|p| self.offset_of(p, 0)) else {
            eprintln!("vgpu: {address}: no room for frame rings in the shared segment; frames go over the socket");
            return Ok(());
        };
        match conn.use_ring(self.seg.clone(), at, cap) {
            Err(Error::Api(code)) => {
                eprintln!("vgpu: {address}: the server refused frame rings ({code}); frames go over the socket");
                Ok(())
            }
            r => r,
        }
    }

    /// The offset of `src` when an upload from it should be read by the server's DMA where
    /// it is: pinned memory of the segment, except for an asynchronous copy while other
    /// processes share the GPU (`transport::crowd`). That one goes through the ring, its
    /// bytes taken now, so that the synchronize after it needs no wait for the DMA: llama.cpp
    /// synchronizes after each input of a prompt batch, and on a shared GPU each such wait
    /// cost the batch a turn of the others' work. Alone, the in-place DMA is cheaper.
    pub fn read_in_place(&self, src: &[u8], asynchronous: bool) -> Option<u64> {
        let at = self.offset_of(src.as_ptr(), src.len())?;
        (!asynchronous || !self.has_ring() || !transport::crowd::crowded()).then_some(at)
    }

    /// Whether large pageable copies can go through the ring.
    pub fn has_ring(&self) -> bool {
        self.slot > 0
    }

    /// Host to device through the ring: returns once every byte of `src` is in the ring
    /// (the caller may reuse `src`); the DMA completes in stream order. `false` (nothing
    /// done) without a ring.
    pub fn upload<I: RingIo>(&self, io: &mut I, dst: u64, src: &[u8]) -> Result<bool, I::Error> {
        if !self.has_ring() {
            return Ok(false);
        }
        let mut ring = self.ring.lock();
        for (i, chunk) in src.chunks(self.slot).enumerate() {
            let k = ring.slot(io)?;
            let off = (k * self.slot) as u64;
            // SAFETY: slot k is `slot` bytes inside the segment and no copy uses it now.
            unsafe { par_copy(self.seg.as_ptr().add(off as usize), chunk.as_ptr(), chunk.len()) };
            let t = ring.next_ticket();
            io.htod(dst + (i * self.slot) as u64, off, chunk.len() as u64, t)?;
            ring.pending[k] = t;
        }
        Ok(true)
    }

    /// Device to host through the ring: returns when every byte is in `dst`. Up to all
    /// slots are in flight; each is copied out as soon as its DMA is done. `false` (nothing
    /// done) without a ring.
    pub fn download<I: RingIo>(&self, io: &mut I, dst: &mut [u8], src: u64) -> Result<bool, I::Error> {
        if !self.has_ring() {
            return Ok(false);
        }
        let mut ring = self.ring.lock();
        let slot = self.slot;
        let n = dst.len().div_ceil(slot);
        // (slot, ticket) of each chunk issued and not yet copied out, oldest first.
        let mut flight = std::collections::VecDeque::new();
        let mut issued = 0;
        for i in 0..n {
            while issued < n && flight.len() < SLOTS {
                let k = ring.slot(io)?;
                let at = issued * slot;
                let len = slot.min(dst.len() - at);
                let t = ring.next_ticket();
                io.dtoh(src + at as u64, (k * slot) as u64, len as u64, t)?;
                ring.pending[k] = t;
                flight.push_back((k, t));
                issued += 1;
            }
            let Some((k, t)) = flight.pop_front() else { break };
            ring.settle(io, t)?;
            let at = i * slot;
            let len = slot.min(dst.len() - at);
            // SAFETY: the DMA into slot k has completed; the slot lies inside the segment.
            unsafe { par_copy(dst[at..].as_mut_ptr(), self.seg.as_ptr().add(k * slot), len) };
        }
        Ok(true)
    }
}

/// Map a part of the shared file at `path` that no other process of this machine uses,
/// mark it with a fresh nonce and name it to the server (`OP_SHM_FILE`, before the
/// handshake). The file is cut into parts of `VGPU_SHM_MB` (default 256 MiB; the whole file
/// if smaller), so that several processes of a VM can each have one.
fn offer_file(stream: &mut transport::Stream, path: &Path) -> std::io::Result<Shm> {
    let size = std::fs::metadata(path)?.len();
    let page = transport::page_size();
    let want = Shm::size_from_env().unwrap_or(DEFAULT_MB << 20) as u64; // (0 never comes here)
    let part = want.min(size) / page * page;
    if part == 0 {
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidInput, "smaller than a page"));
    }
    let (i, claim) = (0..size / part)
        .find_map(|i| claim_part(path, i).map(|c| (i, c)))
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::AddrInUse, "every part is in use by other processes"))?;
    let seg = Segment::open_file(path, i * part, Some(part))?;
    let nonce = transport::random_nonce()?;
    seg.write_nonce(&nonce)?;
    transport::send_segment_file(stream, seg.file_offset(), seg.len() as u64, &nonce)?;
    let mut shm = Shm::over(seg);
    shm._claim = claim;
    Ok(shm)
}

/// Claim part `i` of the shared file `path` among this machine's processes: an exclusive
/// `flock` on its lock file (`transport::part_claim_path`), held for the session's life. `None`:
/// another process holds it. Where no lock file can be had the part is not claimed here
/// (`Some(None)`), and the server's own lock on the part decides.
fn claim_part(path: &Path, i: u64) -> Option<Option<std::fs::File>> {
    use std::os::fd::AsRawFd;
    let lock = transport::part_claim_path(path, i);
    let opened = std::fs::File::open(&lock).or_else(|_| {
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new().write(true).create(true).truncate(false).mode(0o666).open(&lock)
    });
    let Ok(f) = opened else { return Some(None) };
    // SAFETY: a descriptor we own.
    (unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0).then_some(Some(f))
}

/// `len` bytes from `src` to `dst`, which do not overlap. A ring slot's worth of pageable
/// memory copies at one core's memory bandwidth, well below the DMA's: above `PAR_MIN` the
/// copy is split across a few scoped threads (joined before returning; where a thread cannot
/// be started its part is copied here).
///
/// # Safety
/// As `std::ptr::copy_nonoverlapping`.
unsafe fn par_copy(dst: *mut u8, src: *const u8, len: usize) {
    const PAR_MIN: usize = 1 << 20;
    const PARTS: usize = 4;
    if len < PAR_MIN {
        // SAFETY: the caller's contract.
        unsafe { std::ptr::copy_nonoverlapping(src, dst, len) };
        return;
    }
    let part = len.div_ceil(PARTS);
    // Addresses as integers: raw pointers are not Send.
    let (d, s) = (dst as usize, src as usize);
    let copy = move |at: usize| {
        let n = part.min(len - at);
        // SAFETY: [at, at + n) lies inside both buffers (the caller's contract), and the
        // parts are disjoint.
        unsafe { std::ptr::copy_nonoverlapping((s + at) as *const u8, (d + at) as *mut u8, n) };
    };
    std::thread::scope(|scope| {
        for at in (part..len).step_by(part) {
            if std::thread::Builder::new().name("vgpu-copy".into()).spawn_scoped(scope, move || copy(at)).is_err() {
                copy(at);
            }
        }
        copy(0);
    });
}

/// Connect to `address`; for `shm:` also create the segment (`VGPU_SHM_MB`), pass it to the
/// server before the handshake, and ask whether the server mapped it. Without one (the
/// size is 0, the host cannot make it, the server refused it) the connection works as a
/// plain unix one: every copy goes over the socket. With `shared_file` (any address but
/// `shm:`) the segment is that file's memory instead, named to the server by a nonce.
pub fn connect(
    address: &Address,
    hello: &Hello,
    t: Timeouts,
    shared_file: Option<&Path>,
) -> Result<(Conn, Welcome, Option<Shm>), Error> {
    // VGPU_SHM_MB=0 turns shared memory off, a shared file's too.
    let file = shared_file.filter(|_| !address.is_shm() && Shm::size_from_env().is_some());
    if !address.is_shm() && file.is_none() {
        let (conn, welcome) = Conn::connect(address, hello, t)?;
        return Ok((conn, welcome, None));
    }
    let mut stream = address.connect(t.connect).map_err(|e| Error::Lost(e.to_string()))?;
    let shm = match file {
        None => Shm::size_from_env()
            .and_then(|n| match Shm::new(n) {
                Ok(s) => Some(s),
                Err(e) => {
                    eprintln!("vgpu: {address}: no shared segment ({e}); copies go over the socket");
                    None
                }
            })
            .filter(|s| transport::send_segment(&stream, s.segment().fd(), s.segment().len() as u64).is_ok()),
        Some(path) => match offer_file(&mut stream, path) {
            Ok(s) => Some(s),
            Err(e) => {
                eprintln!("vgpu: {address}: shared file {}: {e}; copies go over the connection", path.display());
                None
            }
        },
    };
    let (conn, welcome) = Conn::handshake(stream, address, hello, t)?;
    let shm = match shm {
        Some(s) => match conn.call(0, &ops::shm_attached {}, &[], None) {
            Ok(n) if n == s.segment().len() as u64 => {
                // Frame rings ring their doorbell on the plain socket (not through TLS).
                if !address.is_tls() {
                    s.frames_through_rings(&conn, address)?;
                }
                Some(s)
            }
            r => {
                eprintln!(
                    "vgpu: {address}: the server did not map the shared segment ({r:?}); copies go over the socket"
                );
                None
            }
        },
        None => None,
    };
    Ok((conn, welcome, shm))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn par_copy_copies_every_byte() {
        for len in [0, 1, (1 << 20) - 1, 1 << 20, (3 << 20) + 7] {
            let src: Vec<u8> = (0..len).map(|i| (i * 31 % 251) as u8).collect();
            let mut dst = vec![0u8; len];
            // SAFETY: two distinct buffers of `len` bytes.
            unsafe { par_copy(dst.as_mut_ptr(), src.as_ptr(), len) };
            assert!(dst == src, "len {len}");
        }
    }

    #[test]
    fn heap_allocates_first_fit_and_coalesces() {
        let mut h = Heap::new(100, 100 + 10 * ALIGN + 5);
        let a = h.alloc(1).unwrap();
        assert!(a.is_multiple_of(ALIGN), "page aligned");
        assert!(a >= 100);
        let b = h.alloc(ALIGN + 1).unwrap();
        assert_eq!(b, a + ALIGN);
        let c = h.alloc(ALIGN).unwrap();
        assert_eq!(c, b + 2 * ALIGN);
        assert!(h.alloc(20 * ALIGN).is_none(), "too big");
        assert!(h.free(b));
        assert!(!h.free(b), "not twice");
        assert!(!h.free(b + 1), "only block starts");
        // The hole left by b is reused first.
        assert_eq!(h.alloc(2 * ALIGN), Some(b));
        assert!(h.free(a) && h.free(b) && h.free(c));
        assert_eq!(h.free.len(), 1, "coalesced: {:?}", h.free);
        assert!(h.free_bytes() >= 9 * ALIGN);
    }

    #[test]
    fn heap_matches_a_model_under_random_use() {
        let mut h = Heap::new(0, 256 * ALIGN);
        let mut live: Vec<(u64, u64)> = Vec::new();
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut rnd = |m: u64| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % m
        };
        for _ in 0..5000 {
            if rnd(3) == 0 && !live.is_empty() {
                let (at, _) = live.swap_remove(rnd(live.len() as u64) as usize);
                assert!(h.free(at));
            } else {
                let size = rnd(8 * ALIGN) + 1;
                if let Some(at) = h.alloc(size) {
                    let end = at + size;
                    assert!(end <= 256 * ALIGN);
                    assert!(live.iter().all(|&(s, e)| end <= s || at >= e), "overlap");
                    live.push((at, end.next_multiple_of(ALIGN)));
                }
            }
            let used: u64 = live.iter().map(|&(s, e)| e - s).sum();
            assert_eq!(h.free_bytes() + used, 256 * ALIGN);
        }
    }

    /// A server stand-in: device memory, and ring copies that run only when waited for (or
    /// when too many are queued), so that a slot reused too early shows up as wrong bytes.
    struct Lazy<'a> {
        seg: &'a Segment,
        dev: Vec<u8>,
        queued: Vec<(bool, u64, u64, u64, u64)>,
        waits: usize,
    }
    impl Lazy<'_> {
        fn run_upto(&mut self, ticket: u64) {
            let (due, later): (Vec<_>, Vec<_>) = self.queued.drain(..).partition(|q| q.4 <= ticket);
            self.queued = later;
            for (to_dev, dev, off, len, _) in due {
                let p = self.seg.range(off, len).unwrap();
                let d = &mut self.dev[dev as usize..(dev + len) as usize];
                unsafe {
                    if to_dev {
                        std::ptr::copy_nonoverlapping(p, d.as_mut_ptr(), len as usize);
                    } else {
                        std::ptr::copy_nonoverlapping(d.as_ptr(), p, len as usize);
                    }
                }
            }
        }
    }
    impl RingIo for Lazy<'_> {
        type Error = ();
        fn htod(&mut self, dst: u64, offset: u64, len: u64, ticket: u64) -> Result<(), ()> {
            self.queued.push((true, dst, offset, len, ticket));
            Ok(())
        }
        fn dtoh(&mut self, src: u64, offset: u64, len: u64, ticket: u64) -> Result<(), ()> {
            self.queued.push((false, src, offset, len, ticket));
            Ok(())
        }
        fn wait(&mut self, ticket: u64) -> Result<(), ()> {
            self.waits += 1;
            self.run_upto(ticket);
            Ok(())
        }
    }

    #[test]
    fn ring_copies_are_exact_and_never_reuse_a_busy_slot() {
        let shm = Shm::new(4 << 20).unwrap();
        assert!(shm.has_ring());
        assert_eq!(shm.slot, 128 << 10);
        let mut x = 1u32;
        let data: Vec<u8> = (0..3_000_001)
            .map(|_| {
                x = x.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                (x >> 24) as u8
            })
            .collect();
        let mut io = Lazy { seg: shm.segment(), dev: vec![0; 4 << 20], queued: Vec::new(), waits: 0 };
        shm.upload(&mut io, 1000, &data).unwrap();
        // Chunks still queued read their slots now: the ring was not overwritten under them.
        io.run_upto(u64::MAX);
        assert!(io.dev[1000..1000 + data.len()] == data[..], "upload");
        assert!(io.waits > 0, "slots were reused after waiting");
        let mut back = vec![0u8; data.len()];
        shm.download(&mut io, &mut back, 1000).unwrap();
        assert!(back == data, "download");
        // A short copy and an empty one.
        shm.upload(&mut io, 7, &data[..5]).unwrap();
        let mut b5 = [0u8; 5];
        shm.download(&mut io, &mut b5, 7).unwrap();
        assert_eq!(b5, data[..5]);
        shm.download(&mut io, &mut [], 7).unwrap();
        let tiny = Shm::new(128 << 10).unwrap();
        assert_eq!(tiny.upload(&mut io, 0, &data[..5]), Ok(false), "no ring, nothing done");
    }

    #[test]
    fn pinned_blocks_come_from_the_heap_after_the_ring() {
        let shm = Shm::new(1 << 20).unwrap();
        let ring_end = (shm.slot * SLOTS) as u64;
        let p = shm.alloc(10).unwrap();
        let off = shm.offset_of(p, 10).unwrap();
        assert!(off >= ring_end && off.is_multiple_of(ALIGN));
        assert!(shm.alloc(2 << 20).is_none(), "more than the segment");
        assert!(shm.free(p));
        assert!(!shm.free(p));
        assert!(!shm.free(std::ptr::null()));
        // Too small for a ring: all heap.
        let tiny = Shm::new(128 << 10).unwrap();
        assert!(!tiny.has_ring());
        assert_eq!(tiny.offset_of(tiny.alloc(1).unwrap(), 1), Some(0));
    }

    #[test]
    fn pinned_uploads_go_through_the_ring_while_the_gpu_is_shared() {
        let shm = Shm::new(16 << 20).unwrap();
        assert!(shm.has_ring());
        let p = shm.alloc(4096).unwrap();
        // SAFETY: a block of 4096 bytes just allocated in the segment.
        let src = unsafe { std::slice::from_raw_parts(p.cast_const(), 4096) };
        let at = shm.offset_of(p, 4096);
        assert!(shm.read_in_place(&[0u8; 16], true).is_none(), "not in the segment");
        if !transport::crowd::crowded() {
            assert_eq!(shm.read_in_place(src, true), at, "alone: read where it is");
        }
        transport::crowd::note_crowded();
        assert_eq!(shm.read_in_place(src, true), None, "shared: staged, its bytes taken now");
        assert_eq!(shm.read_in_place(src, false), at, "the synchronous form waits either way");
        // Without a ring there is nowhere else to put the bytes.
        let tiny = Shm::new(1 << 20).unwrap();
        assert!(!tiny.has_ring());
        let q = tiny.alloc(16).unwrap();
        // SAFETY: as above.
        let small = unsafe { std::slice::from_raw_parts(q.cast_const(), 16) };
        assert_eq!(tiny.read_in_place(small, true), tiny.offset_of(q, 16));
    }
}
