//! When the writer thread stays awake for the next one-way frame instead of sleeping.
//!
//! A sleeping writer costs the first frame of every burst a wake-up: on the H100 VM, while
//! llama.cpp decodes, a step's first input copy reached the server 35-40 µs after the
//! application queued it (frame log, session 15), and the application paid the wake's
//! system call (8 µs in the copy call). Such bursts come right after a synchronous call's
//! reply: a decode step's copies 30-50 µs after its logits. So when the last burst followed
//! its reply within [`AFTER_REPLY`], the caller that gets the next reply wakes the writer,
//! which polls until [`AFTER_REPLY`] has passed. It does not poll while the reply is awaited:
//! polling then too (`wait`) shortened the GPU's idle time between decode steps by only
//! 8-14 of 110-126 µs (session 16), for one more busy core.
//! `VGPU_WATCH=wait` makes it poll then too, `0` never (for measuring).

use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// How long after a reply the writer keeps polling, and the longest gap between a reply
/// and the next frame for which it is woken: the application's work between a decode
/// step's logits and its next inputs (sampling) with room to spare, and short against a
/// prompt batch's CPU work (1.5-2.5 ms for a 1B model), where a polling thread would take
/// a core from the application for nothing.
pub const AFTER_REPLY: Duration = Duration::from_micros(200);

/// Nanoseconds since this process first asked, plus one: 0 stands for never.
fn now_ns() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    EPOCH.get_or_init(Instant::now).elapsed().as_nanos() as u64 + 1
}

/// Whether the writer also polls while a reply is awaited (`VGPU_WATCH`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Mode {
    Never,
    AfterReply,
    AlsoWaiting,
}

impl Mode {
    pub(crate) fn from_env() -> Mode {
        match std::env::var("VGPU_WATCH").as_deref() {
            Ok("0") => Mode::Never,
            Ok("wait") => Mode::AlsoWaiting,
            _ => Mode::AfterReply,
        }
    }
}

/// What the writer needs to know of the callers' round trips.
pub(crate) struct Watch {
    mode: Mode,
    /// Requests written whose replies are still awaited, and when the latest was written.
    waiters: AtomicUsize,
    asked: AtomicU64,
    /// When the latest reply came ([`now_ns`]).
    replied: AtomicU64,
    /// No one-way frame has been queued since that reply.
    fresh: AtomicBool,
    /// The last burst followed its reply within `after`.
    close: AtomicBool,
    /// The writer is (about to be) asleep on its condition variable.
    asleep: AtomicBool,
    /// How long a caller's wait keeps the writer polling in `AlsoWaiting` mode (the
    /// callers' own spin budget: past it, they sleep too).
    budget: Duration,
    after: Duration,
}

fn within(now: u64, t: &AtomicU64, d: Duration) -> bool {
    let t = t.load(Ordering::Relaxed);
    t != 0 && now.saturating_sub(t) < d.as_nanos() as u64
}

impl Watch {
    /// `budget`: the callers' spin budget (`VGPU_SPIN_US`; zero: the writer never polls).
    pub(crate) fn new(budget: Duration, mode: Mode) -> Watch {
        Watch {
            mode: if budget.is_zero() { Mode::Never } else { mode },
            waiters: AtomicUsize::new(0),
            asked: AtomicU64::new(0),
            replied: AtomicU64::new(0),
            fresh: AtomicBool::new(false),
            close: AtomicBool::new(false),
            asleep: AtomicBool::new(false),
            budget,
            after: AFTER_REPLY.min(budget),
        }
    }

    /// A request was written and its reply will be waited for. True: wake the writer (by
    /// notifying under the queue's lock, which it sleeps under).
    pub(crate) fn asked(&self) -> bool {
        self.asked.store(now_ns(), Ordering::Relaxed);
        self.waiters.fetch_add(1, Ordering::SeqCst);
        self.mode == Mode::AlsoWaiting && self.asleep.load(Ordering::SeqCst)
    }

    /// The reply to a request [`Watch::asked`] counted has come (or will not). True: wake
    /// the writer, the next burst being expected soon.
    pub(crate) fn answered(&self) -> bool {
        self.replied.store(now_ns(), Ordering::Relaxed);
        self.fresh.store(true, Ordering::Relaxed);
        self.waiters.fetch_sub(1, Ordering::SeqCst);
        self.mode != Mode::Never && self.close.load(Ordering::Relaxed) && self.asleep.load(Ordering::SeqCst)
    }

    /// A one-way frame was queued: the first since a reply says how soon bursts follow.
    pub(crate) fn queued(&self) {
        if self.fresh.swap(false, Ordering::Relaxed) {
            self.close.store(within(now_ns(), &self.replied, self.after), Ordering::Relaxed);
        }
    }

    /// Whether the writer, finding nothing to write, should poll rather than sleep.
    pub(crate) fn awake(&self) -> bool {
        // While other sessions share the GPU the writer sleeps between bursts, as the
        // callers do (`crate::crowd`), unless told to poll then too.
        if self.mode == Mode::Never || crate::crowd::crowded() && crate::crowd::crowded_spin().is_zero() {
            return false;
        }
        let now = now_ns();
        let waiting = self.mode == Mode::AlsoWaiting
            && self.waiters.load(Ordering::SeqCst) > 0
            && within(now, &self.asked, self.budget);
        waiting || (self.close.load(Ordering::Relaxed) && within(now, &self.replied, self.after))
    }

    /// The writer goes to sleep (true) or has woken (false). Going to sleep, it checks
    /// [`Watch::awake`] once more after saying so: a caller either saw `asleep` (and
    /// notifies) or is seen here. True: do not sleep after all.
    pub(crate) fn set_asleep(&self, asleep: bool) -> bool {
        self.asleep.store(asleep, Ordering::SeqCst);
        asleep && self.awake()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Windows long enough that a test preempted on a busy machine still checks inside them.
    const AFTER: Duration = Duration::from_millis(50);
    const BUDGET: Duration = Duration::from_millis(100);

    fn watch(mode: Mode) -> Watch {
        Watch { after: AFTER, ..Watch::new(BUDGET, mode) }
    }

    fn burst_after_reply(w: &Watch) {
        w.asked();
        w.answered();
        w.queued();
    }

    fn past(d: Duration) {
        std::thread::sleep(d + Duration::from_millis(10));
    }

    #[test]
    fn a_reply_that_bursts_follow_closely_keeps_the_writer_up() {
        let w = watch(Mode::AfterReply);
        assert!(!w.awake(), "nothing asked yet");
        w.asked();
        assert!(!w.awake(), "not while the reply is awaited");
        w.answered();
        assert!(!w.awake(), "no burst has followed a reply yet");
        w.queued();
        burst_after_reply(&w);
        assert!(w.awake(), "just after a reply that a burst followed closely");
        past(AFTER);
        assert!(!w.awake(), "long after the reply");
        w.asked();
        w.answered();
        past(AFTER);
        w.queued(); // a burst long after its reply
        w.asked();
        w.answered();
        assert!(!w.awake(), "the last burst came long after its reply");
    }

    #[test]
    fn a_sleeping_writer_is_woken_by_the_reply() {
        let w = watch(Mode::AfterReply);
        burst_after_reply(&w);
        w.asked();
        past(AFTER);
        assert!(!w.set_asleep(true), "nothing to watch: sleep");
        assert!(w.answered(), "the caller wakes it");
        assert!(w.set_asleep(true), "it would not sleep now");
        w.set_asleep(false);
        w.queued();
        w.asked();
        assert!(!w.answered(), "awake: no wake needed");
    }

    #[test]
    fn also_waiting_polls_through_a_wait_within_the_budget() {
        let w = watch(Mode::AlsoWaiting);
        w.set_asleep(true);
        assert!(w.asked(), "a sleeping writer is woken for the wait");
        w.set_asleep(false);
        assert!(w.awake());
        past(BUDGET);
        assert!(!w.awake(), "past the callers' own budget the writer sleeps");
    }

    #[test]
    fn zero_budget_never_polls() {
        let w = Watch::new(Duration::ZERO, Mode::AlsoWaiting);
        w.set_asleep(true);
        burst_after_reply(&w);
        assert!(!w.asked());
        assert!(!w.answered());
        assert!(!w.awake());
    }

    #[test]
    fn the_default_window_is_the_constant_within_the_budget() {
        assert_eq!(Watch::new(Duration::from_secs(1), Mode::AfterReply).after, AFTER_REPLY);
        assert_eq!(Watch::new(Duration::from_micros(50), Mode::AfterReply).after, Duration::from_micros(50));
    }
}
