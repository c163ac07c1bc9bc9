//! Pinned host buffers that copies go through.
//!
//! An asynchronous host-to-device copy must neither wait for the GPU nor read the worker's
//! frame buffer after it returns (the next frame reuses it), so its bytes are copied into a
//! pinned buffer first; an event recorded after the copy tells when the buffer is free
//! again. Device-to-host copies use the same buffers synchronously.
//!
//! The policy is written against [`PinnedApi`] so it can be tested without a GPU.

use super::{NOT_READY, R};
use abi::cuda::{CU_MEMHOSTALLOC_PORTABLE, CUevent, CudaLib};

/// Smallest buffer made; sizes are rounded up to a power of two so buffers get reused.
pub const MIN_BUF: usize = 64 << 10;
/// Pinned bytes a pool grows to before it waits for a busy buffer instead of growing.
pub const POOL_LIMIT: usize = 1 << 30;

/// What the pool needs from the driver. Events and streams are their pointer values.
pub trait PinnedApi {
    fn host_alloc(&self, len: usize) -> R<*mut u8>;
    fn host_free(&self, p: *mut u8);
    fn event_create(&self) -> R<u64>;
    fn event_destroy(&self, e: u64);
    fn event_record(&self, e: u64, stream: u64) -> R<()>;
    /// `Ok(true)` once the work before the event has completed.
    fn event_query(&self, e: u64) -> R<bool>;
    fn event_sync(&self, e: u64) -> R<()>;
}

impl PinnedApi for CudaLib {
    fn host_alloc(&self, len: usize) -> R<*mut u8> {
        let mut p = std::ptr::null_mut();
        cu!(self, cuMemHostAlloc(&mut p, len, CU_MEMHOSTALLOC_PORTABLE))?;
        Ok(p.cast())
    }
    fn host_free(&self, p: *mut u8) {
        let _ = (|| cu!(self, cuMemFreeHost(p.cast())))();
    }
    fn event_create(&self) -> R<u64> {
        let mut e: CUevent = std::ptr::null_mut();
        let flags = abi::cuda::CUevent_flags_enum::CU_EVENT_DISABLE_TIMING.0;
        cu!(self, cuEventCreate(&mut e, flags))?;
        Ok(e as u64)
    }
    fn event_destroy(&self, e: u64) {
        let _ = (|| cu!(self, cuEventDestroy_v2(e as CUevent)))();
    }
    fn event_record(&self, e: u64, stream: u64) -> R<()> {
        cu!(self, cuEventRecord(e as CUevent, stream as _))
    }
    fn event_query(&self, e: u64) -> R<bool> {
        match cu!(self, cuEventQuery(e as CUevent)) {
            Ok(()) => Ok(true),
            Err(NOT_READY) => Ok(false),
            Err(c) => Err(c),
        }
    }
    fn event_sync(&self, e: u64) -> R<()> {
        cu!(self, cuEventSynchronize(e as CUevent))
    }
}

#[derive(Debug)]
struct Pinned {
    ptr: *mut u8,
    cap: usize,
    /// Made on first asynchronous use (0 until then).
    event: u64,
    /// An asynchronous copy may still be reading or writing it.
    pending: bool,
    /// When it was last queued, to wait for the oldest first.
    tick: u64,
}

/// The buffers of one context.
#[derive(Debug, Default)]
pub struct Pool {
    bufs: Vec<Pinned>,
    total: usize,
    tick: u64,
}

impl Pool {
    /// A free buffer of at least `len` bytes: the smallest whose last copy has completed,
    /// else a new one; past [`POOL_LIMIT`], the oldest busy one big enough, once it is done.
    ///
    /// Busy buffers are asked (an event query, a driver call) smallest first, and only until
    /// one big enough is free: a prompt batch leaves a dozen busy while its embeddings' DMA
    /// runs, and the small copies behind them each paid for querying all of them.
    pub fn take(&mut self, api: &impl PinnedApi, len: usize) -> R<usize> {
        let mut fit: Vec<usize> = (0..self.bufs.len()).filter(|&i| self.bufs[i].cap >= len).collect();
        fit.sort_by_key(|&i| self.bufs[i].cap);
        for i in fit {
            let b = &mut self.bufs[i];
            if b.pending {
                // An error (a broken context) means nothing will touch the buffer any more.
                b.pending = !api.event_query(b.event).unwrap_or(true);
            }
            if !b.pending {
                return Ok(i);
            }
        }
        let cap = len.max(MIN_BUF).checked_next_power_of_two().unwrap_or(len);
        let oldest_busy = (0..self.bufs.len()).filter(|&i| self.bufs[i].cap >= len).min_by_key(|&i| self.bufs[i].tick);
        if self.total + cap > POOL_LIMIT {
            if let Some(i) = oldest_busy {
                return self.wait(api, i);
            }
            self.shed(api, len);
        }
        match api.host_alloc(cap) {
            Ok(ptr) => {
                self.bufs.push(Pinned { ptr, cap, event: 0, pending: false, tick: 0 });
                self.total += cap;
                Ok(self.bufs.len() - 1)
            }
            Err(e) => match oldest_busy {
                Some(i) => self.wait(api, i),
                None => Err(e),
            },
        }
    }

    fn wait(&mut self, api: &impl PinnedApi, i: usize) -> R<usize> {
        api.event_sync(self.bufs[i].event)?;
        self.bufs[i].pending = false;
        Ok(i)
    }

    /// Free idle buffers too small for `len`, to make room under the limit (asking about
    /// busy ones here: `take` asks only about buffers big enough).
    fn shed(&mut self, api: &impl PinnedApi, len: usize) {
        let mut total = self.total;
        self.bufs.retain(|b| {
            let drop = b.cap < len && (!b.pending || api.event_query(b.event).unwrap_or(true));
            if drop {
                api.host_free(b.ptr);
                if b.event != 0 {
                    api.event_destroy(b.event);
                }
                total -= b.cap;
            }
            !drop
        });
        self.total = total;
    }

    pub fn ptr(&self, i: usize) -> *mut u8 {
        self.bufs[i].ptr
    }

    /// The first `len` bytes of buffer `i` (taken for at least `len`).
    pub fn bytes(&mut self, i: usize, len: usize) -> &mut [u8] {
        let b = &self.bufs[i];
        assert!(len <= b.cap);
        unsafe { std::slice::from_raw_parts_mut(b.ptr, len) }
    }

    /// Buffer `i` was just used by an asynchronous copy on `stream`: it is busy until an
    /// event recorded now completes. If the event cannot be recorded the buffer can never
    /// be known free, so it leaves the pool.
    pub fn record(&mut self, api: &impl PinnedApi, i: usize, stream: u64) -> R<()> {
        if self.bufs[i].event == 0 {
            match api.event_create() {
                Ok(e) => self.bufs[i].event = e,
                Err(c) => {
                    self.leak(i);
                    return Err(c);
                }
            }
        }
        if let Err(c) = api.event_record(self.bufs[i].event, stream) {
            self.leak(i);
            return Err(c);
        }
        self.tick += 1;
        let b = &mut self.bufs[i];
        b.pending = true;
        b.tick = self.tick;
        Ok(())
    }

    /// Take buffer `i` out of the pool for good, without freeing it. Used when a captured
    /// graph now reads it at every launch: it must stay allocated and unchanged for the
    /// graph's life, which we cannot see, so it is deliberately leaked (the driver frees it
    /// with its context).
    pub fn leak(&mut self, i: usize) {
        let b = self.bufs.swap_remove(i);
        self.total -= b.cap;
    }

    /// Free every buffer (the context is alive). Sessions never need it: their buffers go
    /// with their contexts.
    #[cfg(test)]
    pub fn free_all(&mut self, api: &impl PinnedApi) {
        for b in self.bufs.drain(..) {
            api.host_free(b.ptr);
            if b.event != 0 {
                api.event_destroy(b.event);
            }
        }
        self.total = 0;
    }

    /// The context died and the driver freed its memory: drop the bookkeeping only.
    pub fn forget(&mut self) {
        self.bufs.clear();
        self.total = 0;
    }

    /// A new buffer of exactly `cap` bytes (a power of two), for tests.
    #[cfg(test)]
    fn take_new(&mut self, api: &impl PinnedApi, cap: usize) -> usize {
        self.bufs.push(Pinned { ptr: api.host_alloc(cap).unwrap(), cap, event: 0, pending: false, tick: 0 });
        self.total += cap;
        self.bufs.len() - 1
    }

    #[cfg(test)]
    fn caps(&self) -> Vec<(usize, bool)> {
        self.bufs.iter().map(|b| (b.cap, b.pending)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::{Cell, RefCell};
    use std::collections::HashMap;

    /// Host memory stands in for pinned memory; events complete when `done` says so.
    #[derive(Default)]
    struct Fake {
        mem: RefCell<HashMap<usize, Vec<u8>>>,
        done: RefCell<HashMap<u64, bool>>,
        next: Cell<u64>,
        fail_alloc: Cell<bool>,
        syncs: Cell<u32>,
        queries: Cell<u32>,
    }
    impl PinnedApi for Fake {
        fn host_alloc(&self, len: usize) -> R<*mut u8> {
            if self.fail_alloc.get() {
                return Err(2);
            }
            // Big buffers are never touched by the tests: a distinct address will do.
            let mut v = if len <= 1 << 20 { vec![0u8; len] } else { Vec::new() };
            self.next.set(self.next.get() + 1);
            let p = if v.is_empty() { (self.next.get() << 32) as *mut u8 } else { v.as_mut_ptr() };
            self.mem.borrow_mut().insert(p as usize, v);
            Ok(p)
        }
        fn host_free(&self, p: *mut u8) {
            self.mem.borrow_mut().remove(&(p as usize)).expect("freed twice");
        }
        fn event_create(&self) -> R<u64> {
            self.next.set(self.next.get() + 1);
            Ok(self.next.get())
        }
        fn event_destroy(&self, _e: u64) {}
        fn event_record(&self, e: u64, _s: u64) -> R<()> {
            self.done.borrow_mut().insert(e, false);
            Ok(())
        }
        fn event_query(&self, e: u64) -> R<bool> {
            self.queries.set(self.queries.get() + 1);
            Ok(self.done.borrow()[&e])
        }
        fn event_sync(&self, e: u64) -> R<()> {
            self.syncs.set(self.syncs.get() + 1);
            self.done.borrow_mut().insert(e, true);
            Ok(())
        }
    }

    #[test]
    fn reuses_only_after_the_event_completes() {
        let api = Fake::default();
        let mut p = Pool::default();
        let a = p.take(&api, 100).unwrap();
        p.bytes(a, 100).fill(7);
        p.record(&api, a, 0).unwrap();
        // Busy: a second copy gets a new buffer.
        let b = p.take(&api, 100).unwrap();
        assert_ne!(p.ptr(a), p.ptr(b));
        assert_eq!(p.caps(), vec![(MIN_BUF, true), (MIN_BUF, false)]);
        // Its event completes: reused.
        *api.done.borrow_mut().values_mut().next().unwrap() = true;
        let c = p.take(&api, 100).unwrap();
        assert!(c == a || c == b);
        assert_eq!(p.caps().len(), 2);
        // A synchronous use never records, so the same buffer comes back.
        assert_eq!(p.take(&api, 10).unwrap(), p.take(&api, 10).unwrap());
    }

    /// Busy buffers are asked smallest first, and only until one that fits is free: the
    /// larger ones are left alone.
    #[test]
    fn busy_buffers_are_queried_only_when_needed() {
        let api = Fake::default();
        let mut p = Pool::default();
        let bufs: Vec<usize> =
            [MIN_BUF, 2 * MIN_BUF, 4 * MIN_BUF, 8 * MIN_BUF].iter().map(|&n| p.take_new(&api, n)).collect();
        for &i in &bufs[..3] {
            p.record(&api, i, 0).unwrap();
        }
        assert_eq!(p.take(&api, 10).unwrap(), bufs[3], "the free one");
        assert_eq!(api.queries.get(), 3, "each busy one asked once, none done");
        // The middle one completes: asked in size order, the search stops there.
        let events: Vec<u64> = bufs.iter().map(|&i| p.bufs[i].event).collect();
        api.done.borrow_mut().insert(events[1], true);
        api.queries.set(0);
        p.record(&api, bufs[3], 0).unwrap();
        assert_eq!(p.take(&api, 10).unwrap(), bufs[1]);
        assert_eq!(api.queries.get(), 2, "the smallest (busy) and the middle one (done)");
        // Known free now: only the smaller busy one is asked again.
        api.queries.set(0);
        assert_eq!(p.take(&api, 10).unwrap(), bufs[1]);
        assert_eq!(api.queries.get(), 1);
    }

    /// Near the limit, a small buffer whose copy has completed is freed even though no
    /// `take` asked about it since.
    #[test]
    fn shedding_asks_about_small_busy_buffers() {
        let api = Fake::default();
        let mut p = Pool::default();
        let small = p.take_new(&api, MIN_BUF);
        let ptr = p.ptr(small) as usize;
        p.record(&api, small, 0).unwrap();
        api.done.borrow_mut().values_mut().for_each(|d| *d = true);
        let big = p.take(&api, POOL_LIMIT).unwrap();
        assert_eq!(p.caps(), vec![(POOL_LIMIT, false)]);
        assert_eq!((big, p.total), (0, POOL_LIMIT));
        assert!(!api.mem.borrow().contains_key(&ptr), "the small buffer was freed");
    }

    #[test]
    fn sizes_round_up_and_smallest_fit_wins() {
        let api = Fake::default();
        let mut p = Pool::default();
        let big = p.take(&api, 3 << 20).unwrap();
        assert_eq!(p.caps()[big].0, 4 << 20);
        // A free big buffer serves a small request rather than a new allocation.
        assert_eq!(p.take(&api, 10).unwrap(), big);
        p.record(&api, big, 0).unwrap();
        let small = p.take(&api, MIN_BUF + 1).unwrap();
        assert_eq!(p.caps()[small].0, 2 * MIN_BUF);
        api.done.borrow_mut().values_mut().for_each(|d| *d = true);
        // Both are free now: a small request takes the smaller one.
        assert_eq!(p.take(&api, 1000).unwrap(), small);
        assert_eq!(p.take(&api, 3 << 20).unwrap(), big);
    }

    #[test]
    fn waits_past_the_limit_and_leaks_captured_buffers() {
        let api = Fake::default();
        let mut p = Pool::default();
        let half = POOL_LIMIT / 2;
        let a = p.take(&api, half).unwrap();
        p.record(&api, a, 0).unwrap();
        let b = p.take(&api, half).unwrap();
        p.record(&api, b, 0).unwrap();
        assert_eq!(api.syncs.get(), 0);
        // Full and all busy: wait for the oldest instead of growing.
        let c = p.take(&api, half).unwrap();
        assert_eq!((c, api.syncs.get()), (a, 1));
        assert_eq!(p.caps().len(), 2);
        p.leak(c);
        assert_eq!(p.caps().len(), 1);
        assert_eq!(p.total, half);
        // The leaked buffer stays allocated; the rest are freed.
        p.free_all(&api);
        assert_eq!(api.mem.borrow().len(), 1);
    }

    #[test]
    fn allocation_failure_waits_or_fails() {
        let api = Fake::default();
        let mut p = Pool::default();
        api.fail_alloc.set(true);
        assert_eq!(p.take(&api, 10), Err(2));
        api.fail_alloc.set(false);
        let a = p.take(&api, 10).unwrap();
        p.record(&api, a, 0).unwrap();
        api.fail_alloc.set(true);
        assert_eq!(p.take(&api, 10), Ok(a));
        assert_eq!(api.syncs.get(), 1);
    }
}
