//! Whether the GPU's server is busy with other sessions too, so that nothing on this side
//! waits by spinning.
//!
//! Alone on a GPU, vgpu's threads poll: the lane threads for 20 ms after each chunk, a
//! caller for its reply, the client's writer thread between bursts, the worker inside the
//! driver's waits. Waking a sleeping thread costs tens of microseconds, which alone on a
//! GPU is a point or two of speed. When several applications share one GPU, each waits for
//! the others' work anyway, and the polling only takes cores: four clients decoding at once
//! kept 8.3-8.5 of a 16-core host's cores busy, where four native processes keep 3.8.
//! So while others are active, nothing polls: lane threads ([`crowded_spin`], by default
//! not at all), the client's reply waits, ring reads and writer thread, and the worker's
//! contexts wait blocking (`server::cuda`, `cuCtxSetFlags`). The same four clients then keep
//! 1.7 cores busy at the same summed speed (session 25).
//!
//! The server learns it from a [`Board`]: one page of shared memory that `vgpu serve` gives
//! every worker, a slot each, where a worker stamps the time of each request its client
//! makes. A worker that sees another slot stamped within [`RECENT`] is crowded; it says so
//! on its replies ([`FLAG_CROWDED`](protocol::frame::FLAG_CROWDED)), and the client, reading
//! one, is crowded too.

use crate::shm::Segment;
use std::io;
use std::os::fd::{BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Another session's request this recent makes a session crowded: a decoding client asks
/// every few milliseconds, one processing a prompt every ten or so.
pub const RECENT: Duration = Duration::from_millis(100);

/// How long one sign of others (a reply's flag, a look at the board) keeps this process
/// crowded: a few of the others' requests long, so that it does not flap between them.
const HOLD: Duration = Duration::from_millis(200);

/// Until when this process is crowded: microseconds of [`crate::park::micros_now`] (0: not).
static UNTIL: AtomicU64 = AtomicU64::new(0);

/// Other sessions share the GPU: stay crowded for a while (`HOLD`) from now.
pub fn note_crowded() {
    UNTIL.fetch_max(crate::park::micros_now() + HOLD.as_micros() as u64, Ordering::Relaxed);
}

/// Whether other sessions shared the GPU lately.
pub fn crowded() -> bool {
    crate::park::micros_now() < UNTIL.load(Ordering::Relaxed)
}

/// How long a thread polls for what comes next while crowded: `VGPU_CROWDED_SPIN_US`, by
/// default not at all. Set (20000, on the server and in the clients), a session polls
/// while shared as it does alone, the worker's contexts included.
pub fn crowded_spin() -> Duration {
    static S: std::sync::OnceLock<Duration> = std::sync::OnceLock::new();
    *S.get_or_init(|| crate::spin::micros(&|k| std::env::var(k).ok(), "VGPU_CROWDED_SPIN_US").unwrap_or(Duration::ZERO))
}

/// `spin`, or while crowded [`crowded_spin`]: how long a client's thread polls for what
/// comes next (a reply, a chunk, a frame to write) before it sleeps.
pub fn spin_unless_crowded(spin: Duration) -> Duration {
    if crowded() { crowded_spin() } else { spin }
}

/// Slots on a board: one page of stamps. Sessions past this many share slots, which costs
/// nothing: with that many, others are active anyway.
pub const SLOTS: usize = 512;
const BOARD_BYTES: usize = SLOTS * 8;

/// The server's page of stamps, one slot a session: when it last saw a request from its
/// client, in microseconds of CLOCK_MONOTONIC (one clock for every process of the host).
pub struct Board {
    page: Segment,
}

impl Board {
    /// A fresh board (the listener's), all slots unstamped.
    pub fn create() -> io::Result<Board> {
        Ok(Board { page: Segment::create(BOARD_BYTES)? })
    }

    /// The board the listener passed (a worker's), refused unless it is one.
    pub fn open(fd: OwnedFd) -> io::Result<Board> {
        Ok(Board { page: Segment::open(fd, BOARD_BYTES as u64)? })
    }

    /// The descriptor to pass to a worker.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.page.fd()
    }

    fn slot(&self, i: usize) -> &AtomicU64 {
        // SAFETY: the page holds SLOTS aligned u64s, shared only as atomics, and lives as
        // long as `self`.
        unsafe { &*self.page.as_ptr().cast::<AtomicU64>().add(i % SLOTS) }
    }

    /// Session `session`'s slot.
    pub fn seat(self, session: u64) -> Seat {
        Seat { board: self, slot: (session % SLOTS as u64) as usize, looked: 0, crowded: false }
    }
}

/// A worker's slot on the board.
pub struct Seat {
    board: Board,
    slot: usize,
    /// When the others were last looked at (µs of CLOCK_MONOTONIC), and what was seen.
    looked: u64,
    crowded: bool,
}

/// How often a busy worker looks at the others' slots.
const LOOK_EVERY: Duration = Duration::from_millis(1);

impl Seat {
    /// Stamp a request of this session's client; whether other sessions are active (looked
    /// at once a millisecond at most). The caller marks the process ([`note_crowded`]).
    pub fn stamp(&mut self) -> bool {
        let now = now_micros();
        self.board.slot(self.slot).store(now, Ordering::Relaxed);
        if now.saturating_sub(self.looked) >= LOOK_EVERY.as_micros() as u64 {
            self.looked = now;
            let recent = now.saturating_sub(RECENT.as_micros() as u64);
            self.crowded =
                (0..SLOTS).any(|i| i != self.slot && self.board.slot(i).load(Ordering::Relaxed) > recent.max(1));
        }
        self.crowded
    }
}

/// CLOCK_MONOTONIC in microseconds, never 0.
fn now_micros() -> u64 {
    crate::writelog::monotonic_micros() as u64 + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    fn copy_of(b: &Board) -> Board {
        Board::open(b.fd().try_clone_to_owned().unwrap()).unwrap()
    }

    #[test]
    fn a_session_alone_is_not_crowded_and_two_are() {
        let board = Board::create().unwrap();
        let (mut a, mut b) = (copy_of(&board).seat(1), copy_of(&board).seat(2));
        assert!(!a.stamp(), "nobody else has asked");
        assert!(!a.stamp());
        assert!(b.stamp(), "a asked just now");
        std::thread::sleep(LOOK_EVERY);
        assert!(a.stamp(), "b asked just now");
    }

    #[test]
    fn stamps_age_out() {
        let board = Board::create().unwrap();
        let (mut a, mut b) = (copy_of(&board).seat(7), copy_of(&board).seat(8));
        b.stamp();
        std::thread::sleep(RECENT + Duration::from_millis(5));
        assert!(!a.stamp(), "b's last request is past RECENT");
        // A session past SLOTS shares a slot: its stamps look like its own.
        let mut c = copy_of(&board).seat(7 + SLOTS as u64);
        std::thread::sleep(LOOK_EVERY);
        assert!(!c.stamp());
    }

    #[test]
    fn a_board_of_another_size_is_refused() {
        let other = Segment::create(2 * BOARD_BYTES).unwrap();
        assert!(Board::open(other.fd().try_clone_to_owned().unwrap()).is_err());
    }
}
