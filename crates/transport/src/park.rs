//! Parking the lanes' polling while their side waits on the GPU.
//!
//! The threads that carry a request's chunks (the client's lane writers, the server's lane
//! readers) poll for the next chunk for a while after each one, so that the next prompt
//! batch's inputs start moving without a wake-up. But while the thread that sends those
//! inputs is itself waiting (the application for a synchronous reply, the worker inside a
//! synchronous call), no chunk can come from it, and their polling only takes cores: during
//! a prompt that is the GPU's eight milliseconds of every ten, four to eight cores a session.
//! So such a wait parks them: past a grace period they sleep in short ticks instead (a
//! chunk still wakes them at once), and the time parked does not count against their
//! polling window, so that they poll again when the wait ends.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// A wait shorter than this does not park: a round trip without GPU work is tens of
/// microseconds, and waking from a tick costs about as much.
pub const GRACE: Duration = Duration::from_micros(100);
/// How long a parked thread sleeps between looks (a chunk, or a job, wakes it sooner): the
/// longest it may poll late once the wait has ended. The application takes a millisecond or
/// more between a prompt batch's logits and the next batch's inputs.
pub const TICK: Duration = Duration::from_micros(200);
/// Most parked time a window is extended by: lanes idle for good (decoding after a prompt)
/// stop polling within a second or so even while every step waits.
const MAX_CREDIT: Duration = Duration::from_secs(1);

/// Whether, and since when, a side's sender waits. Shared by the threads it parks.
#[derive(Debug, Default)]
pub struct Park {
    waiters: AtomicU32,
    /// When the current wait began: microseconds from [`epoch`], plus one (0: none yet).
    since: AtomicU64,
}

/// A wait in progress; dropping it ends the wait.
#[must_use = "the wait ends when this is dropped"]
pub struct Parked<'a>(&'a Park);

impl Drop for Parked<'_> {
    fn drop(&mut self) {
        self.0.waiters.fetch_sub(1, Ordering::Release);
    }
}

fn epoch() -> Instant {
    static E: OnceLock<Instant> = OnceLock::new();
    *E.get_or_init(Instant::now)
}

/// Microseconds since this process first asked, plus one (never 0).
pub(crate) fn micros_now() -> u64 {
    epoch().elapsed().as_micros() as u64 + 1
}

impl Park {
    /// The sender starts waiting (several may; the threads are parked while any waits,
    /// counted from the first).
    pub fn park(&self) -> Parked<'_> {
        if self.waiters.fetch_add(1, Ordering::AcqRel) == 0 {
            self.since.store(micros_now(), Ordering::Release);
        }
        Parked(self)
    }

    /// Whether the sender has been waiting for longer than [`GRACE`].
    pub fn parked(&self) -> bool {
        if self.waiters.load(Ordering::Acquire) == 0 {
            return false;
        }
        let since = self.since.load(Ordering::Acquire);
        since != 0 && micros_now().saturating_sub(since) >= GRACE.as_micros() as u64
    }
}

/// What a polling thread does next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Pace {
    /// Look again at once (yielding the core in between).
    Poll,
    /// Parked: look again after at most [`TICK`].
    Tick,
    /// The window is over: sleep until woken.
    Over,
}

/// A thread's polling window: `spin` from its start, plus the time it spent parked.
pub(crate) struct Window<'a> {
    park: Option<&'a Park>,
    spin: Duration,
    start: Instant,
    last: Instant,
    ticking: bool,
    credit: Duration,
}

impl<'a> Window<'a> {
    pub(crate) fn new(spin: Duration, park: Option<&'a Park>) -> Window<'a> {
        let now = Instant::now();
        Window { park, spin, start: now, last: now, ticking: false, credit: Duration::ZERO }
    }

    pub(crate) fn pace(&mut self) -> Pace {
        self.pace_at(Instant::now())
    }

    fn pace_at(&mut self, now: Instant) -> Pace {
        if self.ticking {
            self.credit = (self.credit + now.saturating_duration_since(self.last)).min(MAX_CREDIT);
        }
        self.last = now;
        if now.saturating_duration_since(self.start) >= self.spin + self.credit {
            self.ticking = false;
            return Pace::Over;
        }
        self.ticking = self.park.is_some_and(Park::parked);
        if self.ticking { Pace::Tick } else { Pace::Poll }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A wait begun past the grace period.
    fn waiting(p: &Park) -> Parked<'_> {
        let g = p.park();
        std::thread::sleep(GRACE * 2);
        g
    }

    #[test]
    fn a_short_wait_does_not_park() {
        let p = Park::default();
        assert!(!p.parked());
        let w = p.park();
        assert!(!p.parked(), "within the grace period");
        std::thread::sleep(GRACE + Duration::from_micros(50));
        assert!(p.parked());
        let w2 = p.park();
        drop(w);
        assert!(p.parked(), "a second waiter keeps it parked");
        drop(w2);
        assert!(!p.parked());
    }

    #[test]
    fn parked_time_extends_the_window() {
        let p = Park::default();
        let t0 = Instant::now();
        let mut w = Window::new(Duration::from_millis(10), Some(&p));
        w.start = t0;
        w.last = t0;
        assert_eq!(w.pace_at(t0 + Duration::from_millis(1)), Pace::Poll);
        // Parked from 1 ms to 9 ms: eight milliseconds of credit.
        let g = waiting(&p);
        assert_eq!(w.pace_at(t0 + Duration::from_millis(1)), Pace::Tick);
        assert_eq!(w.pace_at(t0 + Duration::from_millis(9)), Pace::Tick);
        drop(g);
        assert_eq!(w.pace_at(t0 + Duration::from_millis(9)), Pace::Poll);
        assert_eq!(w.pace_at(t0 + Duration::from_millis(17)), Pace::Poll, "10 ms polled + 8 parked");
        assert_eq!(w.pace_at(t0 + Duration::from_millis(18) + Duration::from_micros(1)), Pace::Over);
    }

    #[test]
    fn without_a_park_the_window_is_plain() {
        let t0 = Instant::now();
        let mut w = Window::new(Duration::from_millis(2), None);
        w.start = t0;
        w.last = t0;
        assert_eq!(w.pace_at(t0 + Duration::from_millis(1)), Pace::Poll);
        assert_eq!(w.pace_at(t0 + Duration::from_millis(2)), Pace::Over);
    }

    #[test]
    fn credit_is_capped() {
        let p = Park::default();
        let _g = waiting(&p);
        let t0 = Instant::now();
        let mut w = Window::new(Duration::from_millis(1), Some(&p));
        w.start = t0;
        w.last = t0;
        assert_eq!(w.pace_at(t0), Pace::Tick);
        assert_eq!(w.pace_at(t0 + Duration::from_secs(5)), Pace::Over, "at most a second of credit");
    }
}
