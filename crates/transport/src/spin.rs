//! Polling a socket for a short while before sleeping on it.
//!
//! A blocking read that has to sleep costs a wake-up when the data comes: several
//! microseconds on bare metal, tens inside a VM, which is more than the rest of a round trip.
//! The CUDA driver spins while it waits for the GPU for the same reason. So a reader that
//! expects data soon polls first, and sleeps only when none came within its budget.

use std::os::fd::RawFd;
use std::time::{Duration, Instant};

/// How long the server polls for a client's next frame; `VGPU_SPIN_US` overrides it
/// (0: never). Between a decode step's logits and the next step's first call the
/// application works for a few hundred microseconds (llama.cpp builds the next batch):
/// measured on an H100 (F16 1B model, three runs each), a 200 µs budget often slept
/// through that gap and woke late (tg128 0.92-0.98 of native, pp512 0.81-0.89), 2 ms did
/// not (0.97-0.98, 0.92-0.95).
pub const DEFAULT_SPIN: Duration = Duration::from_millis(2);
/// How long a client polls for a reply: longer, since the reply often waits for the GPU
/// (a decode step's last copy waits the whole step, a millisecond or more), and the caller
/// is idle meanwhile. The driver waits the same way for a synchronous copy (it spins,
/// yielding). Measured on an H100 (1B model, tokens/s against native): a 1 ms budget lost
/// 3-9% of decode speed to the wake-up after sleeping; 5 ms and 20 ms, none beyond noise.
pub const CLIENT_SPIN: Duration = Duration::from_millis(20);

/// The spin budget from `VGPU_SPIN_US`, else `default`.
pub fn spin_budget(default: Duration) -> Duration {
    micros(&|k| std::env::var(k).ok(), "VGPU_SPIN_US").unwrap_or(default)
}

/// The duration in microseconds that variable `name` of `var` holds, if it parses.
pub(crate) fn micros(var: &dyn Fn(&str) -> Option<String>, name: &str) -> Option<Duration> {
    var(name).and_then(|v| v.parse().ok()).map(Duration::from_micros)
}

/// Return once `fd` is readable (or closed, or in error), or after `budget`, whichever comes
/// first; the caller then reads, blocking if need be.
pub fn wait_readable(fd: RawFd, budget: Duration) -> bool {
    if budget.is_zero() {
        return false;
    }
    let start = Instant::now();
    loop {
        if readable_within(fd, Duration::ZERO) {
            return true;
        }
        if start.elapsed() >= budget {
            return false;
        }
        // Give the core to any other runnable thread (with more busy threads than cores,
        // a pure spin would take the time the peer needs to answer).
        // SAFETY: no arguments; it cannot fail in a way that matters here.
        unsafe { libc::sched_yield() };
    }
}

/// Whether `fd` is readable (or closed, or in error, or the poll itself failed: the read
/// that follows tells why) within `timeout` (zero: now), sleeping in the kernel meanwhile.
pub(crate) fn readable_within(fd: RawFd, timeout: Duration) -> bool {
    let mut p = libc::pollfd { fd, events: libc::POLLIN, revents: 0 };
    let ts = libc::timespec { tv_sec: timeout.as_secs() as _, tv_nsec: timeout.subsec_nanos() as _ };
    // SAFETY: one valid pollfd, a valid timeout, no signal mask.
    unsafe { libc::ppoll(&mut p, 1, &ts, std::ptr::null()) != 0 }
}

/// Whether the socket `fd` has reached its end (or an error), looked at without taking any
/// bytes waiting on it: those are someone else's to read.
pub(crate) fn peer_closed(fd: RawFd) -> bool {
    let mut b = 0u8;
    // SAFETY: a one-byte peek into a local from a socket the caller owns.
    let n = unsafe { libc::recv(fd, (&mut b as *mut u8).cast(), 1, libc::MSG_PEEK | libc::MSG_DONTWAIT) };
    n == 0 || (n < 0 && std::io::Error::last_os_error().kind() != std::io::ErrorKind::WouldBlock)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::fd::AsRawFd;
    use std::os::unix::net::UnixStream;

    #[test]
    fn sees_data_and_gives_up_without() {
        let (mut a, b) = UnixStream::pair().unwrap();
        let t = Instant::now();
        assert!(!wait_readable(b.as_raw_fd(), Duration::from_millis(2)));
        assert!(t.elapsed() >= Duration::from_millis(2));
        a.write_all(b"x").unwrap();
        assert!(wait_readable(b.as_raw_fd(), Duration::from_secs(5)));
        assert!(!wait_readable(b.as_raw_fd(), Duration::ZERO), "a zero budget does not poll");
    }

    #[test]
    fn readable_within_waits_at_most_its_timeout() {
        let (mut a, b) = UnixStream::pair().unwrap();
        assert!(!readable_within(b.as_raw_fd(), Duration::ZERO));
        let t = Instant::now();
        assert!(!readable_within(b.as_raw_fd(), Duration::from_micros(300)));
        assert!(t.elapsed() >= Duration::from_micros(300) && t.elapsed() < Duration::from_secs(1));
        a.write_all(b"x").unwrap();
        assert!(readable_within(b.as_raw_fd(), Duration::ZERO));
    }
}
