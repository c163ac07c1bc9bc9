//! Which streams hold work the application could still wait for, so that a synchronize
//! need not always cost a round trip.
//!
//! A decoding LLM synchronizes a stream some twenty times a token, mostly right after a
//! small host-to-device copy (the next token's inputs) or after a device-to-host copy that
//! already waited for the stream. Natively each costs a microsecond; over the wire each
//! would cost a round trip. So the client keeps, per stream, what it has queued since the
//! stream was last known drained:
//!
//! - nothing (**idle**): a synchronize returns success at once: there is nothing to wait
//!   for, and every later call reaches the server after everything before it;
//! - only copies whose bytes this process already sent, and event records (**light**, a
//!   bounded number of bytes): a synchronize becomes a one-way barrier: the server waits
//!   for the stream before it reads the next frame, so every later call, on any stream,
//!   sees the copies done; the caller was free to reuse its buffers when it queued them;
//! - anything else, kernels above all (**busy**): a real synchronize.
//!
//! Events follow their streams: an event recorded on a stream is complete once the work
//! queued there before it is known done: the stream was drained later, or another stream
//! that waited for the event was (a pipeline across two GPUs: the second GPU's copy of the
//! logits drains its stream, which waited for the first GPU's event). A synchronize or
//! query of a complete event needs no round trip, and a wait for one adds nothing.
//!
//! Errors that an answered synchronize would have returned come back with the next
//! synchronous call, as other asynchronous errors do. `VGPU_ELIDE=0` turns this off.

use parking_lot::Mutex;
use std::collections::HashMap;

/// A stream as the server knows it: server index, the server's context for the special
/// streams 0, 1, 2 (one each per context) and 0 for every other stream (whose handle is
/// unique on its server; callers reach it from whichever context is current), the
/// server's stream handle. Build it with [`key`].
pub type Key = (usize, u64, u64);

/// The key of stream `stream` used with context `ctx` on `server` (server values).
pub fn key(server: usize, ctx: u64, stream: u64) -> Key {
    (server, if stream <= 2 { ctx } else { 0 }, stream)
}

/// An event as the server knows it: server index, the server's event handle.
pub type EventKey = (usize, u64);

/// Waits remembered for completing events through the streams that waited (bounded: the
/// oldest are dropped, which only costs a round trip later).
const MAX_WAITS: usize = 4096;

/// How many bytes of copies a synchronize may skip waiting for. Once the caller's write
/// of them has returned, at most the sockets' buffers' worth (a few MiB, about a
/// millisecond) is still on its way, whatever the copy's size, and everything sent later
/// is read after it: so a synchronize that returns then is early by that much at most.
/// Prompt processing copies its input embeddings (4 MiB a batch for a 1B model, 8 MiB for
/// 8B) and synchronizes; a real wait there costs a round trip behind the whole transfer.
/// The bound keeps the host-side timing of truly large copies honest.
pub const LIGHT_BYTES: u64 = 64 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Idle,
    Light(u64),
    Busy,
}

/// What a synchronize has to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plan {
    /// Nothing queued: success, no message.
    Done,
    /// Only light work queued: send a one-way barrier.
    Barrier,
    /// Wait for the server; pass the ticket to [`Tracker::drained`] when it answered.
    Wait(u64),
}

#[derive(Default)]
struct Inner {
    /// Bumped by every change; a drain counts only if nothing changed since its ticket.
    epoch: u64,
    /// Stream → its state and the epoch it was set.
    streams: HashMap<Key, (State, u64)>,
    /// (server, context) → the epoch of the last work on streams we cannot name (a cuBLAS
    /// call runs on its handle's stream): every stream of that context is busy from then.
    unknown: HashMap<(usize, u64), u64>,
    /// Stream → every piece of work noted on it at or before this epoch is done.
    done_until: HashMap<Key, u64>,
    /// Event → the stream it was last recorded on and the epoch of that record.
    events: HashMap<EventKey, (Key, u64)>,
    /// (stream that waited, epoch of the wait, the waited-for event's stream and record
    /// epoch, as they were when the wait was queued: a later record of the same event is
    /// another point in its stream).
    waits: std::collections::VecDeque<(Key, u64, Key, u64)>,
    /// Events shared with other processes (`cuIpc*EventHandle`), which those may record:
    /// never answered here.
    shared: std::collections::HashSet<EventKey>,
}

impl Inner {
    /// The last work on streams we cannot name that may have gone to stream `k`: its own
    /// context's for a special stream, any context's of its server for the others.
    fn unknown_for(&self, k: Key) -> Option<u64> {
        if k.1 != 0 {
            return self.unknown.get(&(k.0, k.1)).copied();
        }
        self.unknown.iter().filter(|((server, _), _)| *server == k.0).map(|(_, &u)| u).max()
    }

    fn state(&self, k: Key) -> State {
        let unknown = self.unknown_for(k);
        match self.streams.get(&k) {
            // Known done through an event or a drain of another stream.
            Some(&(_, at)) if unknown.is_none_or(|u| at > u) && self.done_until.get(&k).is_some_and(|&d| d >= at) => {
                State::Idle
            }
            Some(&(s, at)) if unknown.is_none_or(|u| at > u) => s,
            _ if unknown.is_some() => State::Busy,
            _ => State::Idle,
        }
    }

    fn set(&mut self, k: Key, s: State) {
        self.epoch += 1;
        self.streams.insert(k, (s, self.epoch));
    }

    /// Work on `k` noted at or before `epoch` is done; so is what the streams it waited
    /// for had queued before the events it waited for.
    fn done(&mut self, k: Key, epoch: u64) {
        let mut todo = vec![(k, epoch)];
        while let Some((k, epoch)) = todo.pop() {
            let d = self.done_until.entry(k).or_insert(0);
            if *d >= epoch {
                continue;
            }
            *d = epoch;
            // Waits that this drain covers have told all they can: they leave the list.
            self.waits.retain(|&(w, at, src, rec)| {
                let covered = w == k && at <= epoch;
                if covered {
                    todo.push((src, rec));
                }
                !covered
            });
        }
    }

    /// Whether event `e`'s work is known done: a drain covered its record, or its stream
    /// went idle since (a barrier: what follows reaches the server after it).
    fn event_done(&self, e: EventKey) -> bool {
        let Some(&(k, rec)) = self.events.get(&e) else { return false };
        self.done_until.get(&k).is_some_and(|&d| d >= rec)
            || matches!(self.streams.get(&k), Some(&(State::Idle, at)) if at >= rec)
    }
}

pub struct Tracker {
    enabled: bool,
    inner: Mutex<Inner>,
}

impl Tracker {
    pub fn new(enabled: bool) -> Tracker {
        Tracker { enabled, inner: Mutex::new(Inner::default()) }
    }

    pub fn from_env() -> Tracker {
        Tracker::new(std::env::var_os("VGPU_ELIDE").is_none_or(|v| v != "0"))
    }

    /// Work queued on `k`: `light` with the bytes of a copy already sent (or 0 for an event
    /// record), else busy.
    pub fn work(&self, k: Key, light: Option<u64>) {
        if !self.enabled {
            return;
        }
        let mut g = self.inner.lock();
        let next = match (g.state(k), light) {
            (State::Idle, Some(n)) if n <= LIGHT_BYTES => State::Light(n),
            (State::Light(a), Some(n)) if a.saturating_add(n) <= LIGHT_BYTES => State::Light(a + n),
            _ => State::Busy,
        };
        g.set(k, next);
    }

    /// Work queued on some stream of (`server`, `ctx`) that we cannot name.
    pub fn unknown_work(&self, server: usize, ctx: u64) {
        if !self.enabled {
            return;
        }
        let mut g = self.inner.lock();
        g.epoch += 1;
        let e = g.epoch;
        g.unknown.insert((server, ctx), e);
    }

    /// The current epoch: take it before sending a call that drains a stream.
    pub fn ticket(&self) -> u64 {
        self.inner.lock().epoch
    }

    /// The server answered a call that waited for stream `k` (sent with `ticket`). Work
    /// queued meanwhile, by another thread, keeps the stream as it is.
    pub fn drained(&self, k: Key, ticket: u64) {
        if !self.enabled {
            return;
        }
        let mut g = self.inner.lock();
        let changed =
            g.streams.get(&k).is_some_and(|&(_, at)| at > ticket) || g.unknown_for(k).is_some_and(|u| u > ticket);
        if !changed {
            g.set(k, State::Idle);
        }
        g.done(k, ticket);
    }

    /// What synchronizing stream `k` takes. A barrier or an answer leaves it idle.
    pub fn plan(&self, k: Key) -> Plan {
        let mut g = self.inner.lock();
        if !self.enabled {
            return Plan::Wait(g.epoch);
        }
        match g.state(k) {
            State::Idle => Plan::Done,
            State::Light(_) => {
                g.set(k, State::Idle);
                Plan::Barrier
            }
            State::Busy => Plan::Wait(g.epoch),
        }
    }

    /// Whether stream `k` has nothing queued (for `cuStreamQuery`).
    pub fn is_idle(&self, k: Key) -> bool {
        self.enabled && self.inner.lock().state(k) == State::Idle
    }

    /// What synchronizing every stream of (`server`, `ctx`) takes: the context, or its
    /// legacy default stream, which waits for the other streams.
    pub fn plan_all(&self, server: usize, ctx: u64) -> Plan {
        let mut g = self.inner.lock();
        if !self.enabled || g.unknown.contains_key(&(server, ctx)) {
            return Plan::Wait(g.epoch);
        }
        // The context's special streams and every other stream of the server (which may be
        // the context's).
        let mine: Vec<Key> = g.streams.keys().filter(|k| k.0 == server && (k.1 == ctx || k.1 == 0)).copied().collect();
        let mut light = false;
        for &k in &mine {
            match g.state(k) {
                State::Busy => return Plan::Wait(g.epoch),
                // A barrier of this context may not cover another context's stream.
                State::Light(_) if k.1 == 0 => return Plan::Wait(g.epoch),
                State::Light(_) => light = true,
                State::Idle => {}
            }
        }
        for k in mine.into_iter().filter(|k| k.1 == ctx) {
            g.set(k, State::Idle);
        }
        if light { Plan::Barrier } else { Plan::Done }
    }

    /// The server answered a call that waited for every stream of (`server`, `ctx`): its
    /// special streams are idle (the others may belong to another context and keep their
    /// state until drained themselves).
    pub fn drained_all(&self, server: usize, ctx: u64, ticket: u64) {
        if !self.enabled {
            return;
        }
        let mut g = self.inner.lock();
        if g.unknown.get(&(server, ctx)).is_some_and(|&u| u > ticket) {
            return;
        }
        g.unknown.remove(&(server, ctx));
        let mine: Vec<Key> = g
            .streams
            .iter()
            .filter(|(k, (_, at))| k.0 == server && k.1 == ctx && *at <= ticket)
            .map(|(k, _)| *k)
            .collect();
        for k in mine {
            g.set(k, State::Idle);
        }
        let all: Vec<Key> = g.streams.keys().filter(|k| k.0 == server && k.1 == ctx).copied().collect();
        for k in all {
            g.done(k, ticket);
        }
    }

    /// Event `e` recorded on stream `k` (after the record itself was noted as work on `k`).
    pub fn recorded(&self, e: EventKey, k: Key) {
        if !self.enabled {
            return;
        }
        let mut g = self.inner.lock();
        if g.shared.contains(&e) {
            return;
        }
        // Not done yet even on an idle stream: the GPU has still to pass the record, and
        // `cuEventElapsedTime` would see that (`CUDA_ERROR_NOT_READY`).
        let at = g.epoch;
        g.events.insert(e, (k, at));
    }

    /// Stream `k` is to wait for event `e`: nothing to wait for if `e` is done (`true`);
    /// else remembered, so that draining `k` later completes `e`.
    pub fn waits_for(&self, k: Key, e: EventKey) -> bool {
        if !self.enabled {
            return false;
        }
        let mut g = self.inner.lock();
        if g.event_done(e) {
            return true;
        }
        // An event never recorded here (or of another server) teaches nothing.
        let Some(&(src, rec)) = g.events.get(&e) else { return false };
        let at = g.epoch + 1; // the epoch the wait's own work note will get
        if g.waits.len() >= MAX_WAITS {
            g.waits.pop_front();
        }
        g.waits.push_back((k, at, src, rec));
        false
    }

    /// Whether event `e` is known complete (synchronize or query answered here).
    pub fn event_done(&self, e: EventKey) -> bool {
        self.enabled && self.inner.lock().event_done(e)
    }

    /// The server answered that event `e` is complete, to a call sent with `ticket`: the
    /// record it waited for is the one made before (another thread may have recorded the
    /// event again since).
    pub fn event_completed(&self, e: EventKey, ticket: u64) {
        if !self.enabled {
            return;
        }
        let mut g = self.inner.lock();
        if let Some(&(k, rec)) = g.events.get(&e)
            && rec <= ticket
        {
            g.done(k, rec);
        }
    }

    pub fn forget_event(&self, e: EventKey) {
        let mut g = self.inner.lock();
        g.events.remove(&e);
        g.shared.remove(&e);
    }

    /// Event `e` is shared with another process, which may record it: what this process
    /// recorded says nothing about it, so its synchronizes and queries go to the server.
    pub fn share_event(&self, e: EventKey) {
        let mut g = self.inner.lock();
        g.events.remove(&e);
        g.shared.insert(e);
    }

    /// A stream that is gone.
    pub fn forget(&self, k: Key) {
        let mut g = self.inner.lock();
        g.streams.remove(&k);
        g.done_until.remove(&k);
        g.waits.retain(|w| w.0 != k && w.2 != k);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Key = (0, 7, 100);
    const T: Key = (0, 7, 200);

    #[test]
    fn a_new_stream_is_idle() {
        let t = Tracker::new(true);
        assert_eq!(t.plan(S), Plan::Done);
        assert!(t.is_idle(S));
    }

    #[test]
    fn small_copies_need_a_barrier_kernels_a_wait() {
        let t = Tracker::new(true);
        t.work(S, Some(4096));
        t.work(S, Some(0));
        assert!(!t.is_idle(S));
        assert_eq!(t.plan(S), Plan::Barrier);
        assert_eq!(t.plan(S), Plan::Done, "the barrier leaves it idle");
        t.work(S, None);
        let Plan::Wait(ticket) = t.plan(S) else { panic!("a kernel is waited for") };
        t.drained(S, ticket);
        assert_eq!(t.plan(S), Plan::Done);
    }

    #[test]
    fn many_small_copies_add_up_to_busy() {
        let t = Tracker::new(true);
        for _ in 0..=LIGHT_BYTES >> 20 {
            t.work(S, Some(1 << 20));
        }
        assert!(matches!(t.plan(S), Plan::Wait(_)));
        // A copy past the limit, or after a kernel, stays busy too.
        t.work(T, None);
        t.work(T, Some(1));
        assert!(matches!(t.plan(T), Plan::Wait(_)));
    }

    #[test]
    fn work_queued_while_waiting_keeps_the_stream_busy() {
        let t = Tracker::new(true);
        t.work(S, None);
        let Plan::Wait(ticket) = t.plan(S) else { panic!() };
        t.work(S, None); // another thread launches before the answer arrives
        t.drained(S, ticket);
        assert!(matches!(t.plan(S), Plan::Wait(_)));
    }

    #[test]
    fn unknown_work_makes_every_stream_of_its_context_busy() {
        let t = Tracker::new(true);
        t.unknown_work(0, 7);
        assert!(matches!(t.plan(S), Plan::Wait(_)));
        assert!(matches!(t.plan((0, 8, 100)), Plan::Done), "another context is not affected");
        // Draining one stream clears it alone; a context-wide drain clears all.
        let Plan::Wait(ticket) = t.plan(S) else { panic!() };
        t.drained(S, ticket);
        assert_eq!(t.plan(S), Plan::Done);
        assert!(matches!(t.plan(T), Plan::Wait(_)));
        let Plan::Wait(ticket) = t.plan_all(0, 7) else { panic!() };
        t.drained_all(0, 7, ticket);
        assert_eq!(t.plan(T), Plan::Done);
        assert_eq!(t.plan_all(0, 7), Plan::Done);
    }

    #[test]
    fn a_context_sync_waits_for_any_busy_stream() {
        let t = Tracker::new(true);
        t.work(S, Some(10));
        assert_eq!(t.plan_all(0, 7), Plan::Barrier);
        t.work(T, None);
        assert!(matches!(t.plan_all(0, 7), Plan::Wait(_)));
    }

    #[test]
    fn an_event_is_done_only_once_its_stream_is_known_past_it() {
        let t = Tracker::new(true);
        t.work(S, Some(0));
        t.recorded((0, 1), S);
        assert!(!t.event_done((0, 1)), "on an idle stream too: the GPU has to pass the record");
        assert!(!t.waits_for(T, (0, 1)));
        assert_eq!(t.plan(S), Plan::Barrier, "a record alone is light");
        assert!(t.event_done((0, 1)), "the barrier waits for it before anything that follows");
    }

    #[test]
    fn an_event_completes_when_its_stream_drains() {
        let t = Tracker::new(true);
        t.work(S, None);
        t.work(S, Some(0));
        t.recorded((0, 1), S);
        assert!(!t.event_done((0, 1)));
        let Plan::Wait(ticket) = t.plan(S) else { panic!() };
        t.drained(S, ticket);
        assert!(t.event_done((0, 1)));
    }

    #[test]
    fn an_event_completes_through_a_stream_that_waited_for_it() {
        // GPU 0 computes and records; GPU 1 waits, computes, and its stream is drained by
        // the copy of the result: GPU 0's event, and GPU 0's stream, are done too.
        let (g0, g1): (Key, Key) = ((0, 7, 100), (0, 8, 200));
        let t = Tracker::new(true);
        t.work(g0, None);
        t.work(g0, Some(0));
        t.recorded((0, 1), g0);
        assert!(!t.waits_for(g1, (0, 1)));
        t.work(g1, None);
        t.work(g1, None);
        assert!(matches!(t.plan(g0), Plan::Wait(_)));
        let ticket = t.ticket();
        t.drained(g1, ticket);
        assert!(t.event_done((0, 1)));
        assert_eq!(t.plan(g0), Plan::Done, "nothing was queued on GPU 0 after its event");
        // Work queued after the record is not covered.
        t.work(g0, None);
        t.recorded((0, 2), g0);
        assert!(!t.event_done((0, 2)));
        assert!(matches!(t.plan(g0), Plan::Wait(_)));
    }

    #[test]
    fn a_stream_is_one_stream_from_any_context() {
        // llama.cpp queues GPU 1's work while GPU 0's context is current, and the other way.
        assert_eq!(key(0, 7, 100), key(0, 8, 100));
        assert_ne!(key(0, 7, 2), key(0, 8, 2), "each context has its own per-thread stream");
        let t = Tracker::new(true);
        t.work(key(0, 7, 100), None);
        let Plan::Wait(ticket) = t.plan(key(0, 8, 100)) else { panic!("busy, whichever context asks") };
        t.drained(key(0, 8, 100), ticket);
        assert_eq!(t.plan(key(0, 7, 100)), Plan::Done);
    }

    #[test]
    fn a_context_barrier_does_not_cover_another_contexts_stream() {
        let t = Tracker::new(true);
        t.work(key(0, 7, 100), Some(16));
        assert!(matches!(t.plan_all(0, 7), Plan::Wait(_)), "stream 100 may be another context's");
        t.work(key(0, 8, 2), Some(16));
        assert!(matches!(t.plan_all(0, 7), Plan::Wait(_)));
        assert_eq!(t.plan(key(0, 7, 100)), Plan::Barrier);
        assert_eq!(t.plan_all(0, 7), Plan::Done, "context 8's per-thread stream is not context 7's");
    }

    #[test]
    fn a_wait_completes_the_record_it_waited_for_not_a_later_one() {
        let (g0, g1): (Key, Key) = ((0, 7, 100), (0, 8, 200));
        let t = Tracker::new(true);
        t.work(g0, None);
        t.recorded((0, 1), g0);
        assert!(!t.waits_for(g1, (0, 1)));
        t.work(g1, None);
        // GPU 0 goes on and records the same event again; nothing waits for that one.
        t.work(g0, None);
        t.recorded((0, 1), g0);
        let ticket = t.ticket();
        t.drained(g1, ticket);
        assert!(!t.event_done((0, 1)), "the second record is not covered");
        assert!(matches!(t.plan(g0), Plan::Wait(_)));
    }

    #[test]
    fn a_destroyed_stream_leaves_nothing_behind() {
        let t = Tracker::new(true);
        t.work(S, None);
        t.recorded((0, 1), S);
        t.waits_for(T, (0, 1));
        let ticket = t.ticket();
        t.drained(S, ticket);
        t.forget(S);
        t.forget(T);
        t.forget_event((0, 1));
        let g = t.inner.lock();
        assert!(g.streams.is_empty() && g.done_until.is_empty() && g.waits.is_empty() && g.events.is_empty());
    }

    #[test]
    fn disabled_always_waits() {
        let t = Tracker::new(false);
        assert!(matches!(t.plan(S), Plan::Wait(_)));
        assert!(!t.is_idle(S));
        assert!(matches!(t.plan_all(0, 7), Plan::Wait(_)));
    }

    #[test]
    fn a_shared_event_is_never_answered_here() {
        let t = Tracker::new(true);
        let (k, e) = (key(0, 1, 5), (0, 9));
        t.work(k, Some(0));
        t.recorded(e, k);
        let ticket = t.ticket();
        t.drained(k, ticket);
        assert!(t.event_done(e), "recorded here and drained: done");
        t.share_event(e);
        assert!(!t.event_done(e), "another process may have recorded it since");
        t.recorded(e, k);
        let ticket = t.ticket();
        t.drained(k, ticket);
        assert!(!t.event_done(e), "its records here are not all of its records");
        assert!(!t.waits_for(k, e));
        t.forget_event(e);
        t.recorded(e, k);
        let ticket = t.ticket();
        t.drained(k, ticket);
        assert!(t.event_done(e), "a new event of the same handle is this process's again");
    }
}
