//! The shared-memory data plane on the real driver (`shm:` clients, see
//! `transport::Segment`): copies between device memory and the client's segment.
//!
//! The segment is registered with the driver (page-locked) at its first copy, when a
//! context exists, so the copies are DMA straight from or into the client's pages. If
//! registration fails the copies still work: the driver treats the mapping as pageable
//! memory. Staging-ring copies carry a ticket: an event recorded after each lets
//! `shm_wait` tell the client when it may reuse that part of its ring (in a stream capture
//! they are staged instead, since a graph would read the ring at every launch).

use super::memory::{HostBytes, relaxed};
use super::staging::PinnedApi;
use super::{CudaSession, INVALID_VALUE, NOT_SUPPORTED, R, STREAM_CAPTURE_UNSUPPORTED};
use abi::cuda::CU_MEMHOSTREGISTER_PORTABLE;
use std::collections::VecDeque;

/// Ring copies whose events are kept at most; past this the oldest is waited for, so a
/// client that never waits cannot make the server hold more.
const MAX_TICKETS: usize = 64;
const HOST_MEMORY_ALREADY_REGISTERED: u32 = 712;

/// A session's segment and what the driver knows of it.
pub struct Shm {
    seg: transport::Segment,
    /// The context that registered it (0: not registered).
    registered: u64,
    /// Registration failed once: not tried again.
    unregistrable: bool,
    tickets: Tickets,
}

/// Ring copies not yet waited for: (ticket, event, context), in the order they were queued.
#[derive(Default)]
pub struct Tickets(VecDeque<(u64, u64, u64)>);

impl Tickets {
    /// Record an event after the copy `ticket` just queued on `stream` in context `ctx`.
    fn record(&mut self, api: &impl PinnedApi, ticket: u64, stream: u64, ctx: u64) -> R<()> {
        if self.0.len() >= MAX_TICKETS
            && let Some((_, e, _)) = self.0.pop_front()
        {
            let _ = api.event_sync(e);
            api.event_destroy(e);
        }
        let e = api.event_create()?;
        if let Err(c) = api.event_record(e, stream) {
            api.event_destroy(e);
            return Err(c);
        }
        self.0.push_back((ticket, e, ctx));
        Ok(())
    }

    /// The events to wait for so that every copy up to `ticket` is done: those queued
    /// before the first later ticket (tickets grow). They leave the list: (event, context).
    fn due(&mut self, ticket: u64) -> Vec<(u64, u64)> {
        let n = self.0.iter().take_while(|&&(t, _, _)| t <= ticket).count();
        self.0.drain(..n).map(|(_, e, c)| (e, c)).collect()
    }

    /// Context `ctx` is gone, and its events with it.
    fn forget_ctx(&mut self, ctx: u64) {
        self.0.retain(|&(_, _, c)| c != ctx);
    }

    fn destroy_all(&mut self, api: &impl PinnedApi) {
        for (_, e, _) in self.0.drain(..) {
            api.event_destroy(e);
        }
    }
}

impl CudaSession {
    pub(super) fn shm_attach(&mut self, seg: transport::Segment) -> Result<(), String> {
        if self.shm.is_some() {
            return Err("a segment is already attached".into());
        }
        self.shm = Some(Shm { seg, registered: 0, unregistrable: false, tickets: Tickets::default() });
        Ok(())
    }

    pub(super) fn shm_len(&self) -> R<u64> {
        self.shm.as_ref().map(|s| s.seg.len() as u64).ok_or(NOT_SUPPORTED)
    }

    /// Copy `len` bytes between device memory at `dev` and the segment at `offset`, on
    /// `stream`, without waiting: host to device when `to_device`.
    pub(super) fn shm_copy(
        &mut self,
        to_device: bool,
        dev: u64,
        offset: u64,
        len: u64,
        stream: u64,
        ticket: u64,
    ) -> R<()> {
        let host = self.shm.as_ref().ok_or(NOT_SUPPORTED)?.seg.range(offset, len).ok_or(INVALID_VALUE)?;
        self.ranges.check(dev, len)?;
        let s = self.h.stream(stream)?;
        if len == 0 {
            return Ok(());
        }
        let ctx = self.h.stream_context(stream, self.current);
        self.in_context(ctx, |me| {
            let (lib, n) = (me.lib, len as usize);
            if ticket != 0 && me.is_capturing(s)? {
                // A captured ring copy would run at every graph launch, long after the
                // ring has moved on: the bytes go to a staging buffer the graph keeps, as
                // on the socket path; a captured read-back cannot be waited for at all.
                if !to_device {
                    return Err(STREAM_CAPTURE_UNSUPPORTED);
                }
                // SAFETY: `range` checked that the segment holds these bytes.
                let data = unsafe { std::slice::from_raw_parts(host.cast_const(), n) };
                return me
                    .staged_async(HostBytes::Plain(data), s, |src| cu!(lib, cuMemcpyHtoDAsync_v2(dev, src, n, s)));
            }
            me.shm_register();
            if to_device {
                cu!(lib, cuMemcpyHtoDAsync_v2(dev, host.cast(), n, s))?;
            } else {
                cu!(lib, cuMemcpyDtoHAsync_v2(host.cast(), dev, n, s))?;
            }
            if ticket == 0 {
                return Ok(());
            }
            let current = me.current;
            let shm = me.shm.as_mut().ok_or(NOT_SUPPORTED)?;
            relaxed(lib, || shm.tickets.record(lib, ticket, s as u64, current))
        })
    }

    /// Wait for the ring copies up to `ticket`; the first failure is returned.
    pub(super) fn shm_wait_ticket(&mut self, ticket: u64) -> R<()> {
        let due = self.shm.as_mut().ok_or(NOT_SUPPORTED)?.tickets.due(ticket);
        let mut result = Ok(());
        for (e, ctx) in due {
            // In the event's own context, which need not be current.
            let r = self.in_context(ctx, |me| {
                let r = me.lib.event_sync(e);
                me.lib.event_destroy(e);
                r
            });
            result = result.and(r);
        }
        result
    }

    /// Page-lock the segment in the current context, once (portable: every context of the
    /// session then sees it as pinned memory).
    fn shm_register(&mut self) {
        let (lib, current) = (self.lib, self.current);
        let Some(shm) = self.shm.as_mut() else { return };
        if shm.registered != 0 || shm.unregistrable || current == 0 {
            return;
        }
        let (p, n) = (shm.seg.as_ptr(), shm.seg.len());
        // Not the client's work: relaxed, so that it cannot invalidate a stream capture.
        let r = relaxed(lib, || (|| cu!(lib, cuMemHostRegister_v2(p.cast(), n, CU_MEMHOSTREGISTER_PORTABLE)))());
        match r {
            Ok(()) | Err(HOST_MEMORY_ALREADY_REGISTERED) => shm.registered = current,
            Err(code) => {
                tracing::warn!(
                    "cannot page-lock the shared segment ({}): copies from it are staged by the driver",
                    super::error_name(lib, code)
                );
                shm.unregistrable = true;
            }
        }
    }

    /// Context `ctx` is gone: its events, and the registration if it made it (made again,
    /// or found still there, at the next copy).
    pub(super) fn shm_forget_context(&mut self, ctx: u64) {
        if let Some(shm) = self.shm.as_mut() {
            shm.tickets.forget_ctx(ctx);
            if shm.registered == ctx {
                shm.registered = 0;
            }
        }
    }

    /// Release the events and the registration (the contexts are still alive).
    pub(super) fn shm_close(&mut self) {
        let lib = self.lib;
        if let Some(shm) = self.shm.as_mut() {
            shm.tickets.destroy_all(lib);
            if shm.registered != 0 {
                let p = shm.seg.as_ptr();
                let _ = (|| cu!(lib, cuMemHostUnregister(p.cast())))();
                shm.registered = 0;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;
    use std::collections::HashMap;

    /// Events that complete when synchronized; records every call.
    #[derive(Default)]
    struct Fake {
        next: RefCell<u64>,
        live: RefCell<HashMap<u64, bool>>,
        synced: RefCell<Vec<u64>>,
    }
    impl PinnedApi for Fake {
        fn host_alloc(&self, _len: usize) -> R<*mut u8> {
            Err(2)
        }
        fn host_free(&self, _p: *mut u8) {}
        fn event_create(&self) -> R<u64> {
            *self.next.borrow_mut() += 1;
            let e = *self.next.borrow();
            self.live.borrow_mut().insert(e, false);
            Ok(e)
        }
        fn event_destroy(&self, e: u64) {
            self.live.borrow_mut().remove(&e).expect("destroyed once");
        }
        fn event_record(&self, _e: u64, _s: u64) -> R<()> {
            Ok(())
        }
        fn event_query(&self, e: u64) -> R<bool> {
            Ok(self.live.borrow()[&e])
        }
        fn event_sync(&self, e: u64) -> R<()> {
            self.synced.borrow_mut().push(e);
            Ok(())
        }
    }

    #[test]
    fn waiting_for_a_ticket_waits_for_all_before_it() {
        let api = Fake::default();
        let mut t = Tickets::default();
        for ticket in 1..=4 {
            t.record(&api, ticket, 0, 7 + ticket % 2).unwrap();
        }
        assert_eq!(t.due(2), [(1, 8), (2, 7)], "events with their contexts");
        assert_eq!(t.due(2), [], "a ticket waited for is not waited again");
        assert_eq!(t.due(10).len(), 2);
        assert!(t.0.is_empty());
    }

    #[test]
    fn tickets_are_bounded_and_die_with_their_context() {
        let api = Fake::default();
        let mut t = Tickets::default();
        for ticket in 1..=(MAX_TICKETS as u64 + 5) {
            t.record(&api, ticket, 0, ticket % 2).unwrap();
        }
        assert_eq!(t.0.len(), MAX_TICKETS);
        assert_eq!(api.synced.borrow().len(), 5, "the oldest were waited for");
        t.forget_ctx(1);
        assert!(t.0.iter().all(|&(_, _, c)| c == 0));
        t.destroy_all(&api);
        assert!(t.0.is_empty());
    }
}
