//! Frames through shared memory: over `shm:` the session's frames, both ways, go through
//! two byte rings in the client's segment instead of the socket, so that a call and its
//! reply cost memory writes and reads (a few µs on a VM) rather than socket system calls
//! on each side. The socket stays as the doorbell: a reader that found its ring empty for
//! its polling budget says so in the ring and sleeps on the socket, and the writer that
//! sees that sends it one byte. A peer that goes away closes the socket, which wakes the
//! sleeper with end-of-stream, as over a plain socket.
//!
//! Layout, from the offset the client names ([`RING_CTL`] control bytes, then `cap` data
//! bytes, twice): the client-to-server ring, then the server-to-client one. Each control
//! block holds the consumer's `head`, the producer's `tail` (bytes ever taken and ever put,
//! on their own cache lines) and the consumer's `asleep` flag. Each side keeps its own index
//! in private memory and only publishes it: what the peer wrote is checked (`tail - head`
//! within the ring) before it is used, and the bytes are copied out before they are parsed,
//! so a client scribbling over its segment can corrupt only its own session.

use crate::shm::Segment;
use parking_lot::Mutex;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering, fence};
use std::time::{Duration, Instant};

/// Control bytes ahead of each ring's data.
pub const RING_CTL: usize = 4096;
/// Data bytes of each ring unless told otherwise: some hundreds of small frames, or a
/// quarter of a MiB-sized copy's inline bytes (larger copies go through the segment).
pub const RING_CAP: usize = 1 << 20;
const HEAD: usize = 0;
const TAIL: usize = 64;
const ASLEEP: usize = 128;
/// Longest a sleeper waits for a doorbell before looking at its ring again (a lost bell
/// costs at most this).
const TICK: Duration = Duration::from_millis(50);

/// Bytes a client reserves in its segment for rings of `cap` data bytes.
pub fn ring_bytes(cap: usize) -> usize {
    2 * (RING_CTL + cap)
}

/// One direction: its control block and data in the segment.
struct Half {
    base: *mut u8,
    cap: u64,
}

impl Half {
    fn index(&self, at: usize) -> &AtomicU64 {
        // SAFETY: `at` is one of the control block's 8-byte-aligned slots, inside the
        // segment (checked at construction), which outlives `self` (the ring holds it).
        unsafe { &*(self.base.add(at) as *const AtomicU64) }
    }

    fn data(&self) -> *mut u8 {
        // SAFETY: the data follows the control block inside the segment.
        unsafe { self.base.add(RING_CTL) }
    }

    /// Bytes in the ring between `head` and `tail`, or an error if the peer's index is out
    /// of range.
    fn used(&self, head: u64, tail: u64) -> io::Result<u64> {
        let used = tail.wrapping_sub(head);
        if used > self.cap {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "shared ring: the peer's index is out of range"));
        }
        Ok(used)
    }

    /// Copy `src` in at stream position `pos` (wrapping at the end of the data).
    fn put(&self, pos: u64, src: &[u8]) {
        let at = (pos % self.cap) as usize;
        let first = src.len().min(self.cap as usize - at);
        // SAFETY: both parts lie inside the ring's data, which only this producer writes
        // between `tail` and `head + cap`.
        unsafe {
            std::ptr::copy_nonoverlapping(src.as_ptr(), self.data().add(at), first);
            std::ptr::copy_nonoverlapping(src.as_ptr().add(first), self.data(), src.len() - first);
        }
    }

    /// Copy out at stream position `pos` into `dst`.
    fn take(&self, pos: u64, dst: &mut [u8]) {
        let at = (pos % self.cap) as usize;
        let first = dst.len().min(self.cap as usize - at);
        // SAFETY: both parts lie inside the ring's data; a misbehaving peer can change the
        // bytes as we copy, which only garbles its own frames (parsed from our copy).
        unsafe {
            std::ptr::copy_nonoverlapping(self.data().add(at), dst.as_mut_ptr(), first);
            std::ptr::copy_nonoverlapping(self.data(), dst.as_mut_ptr().add(first), dst.len() - first);
        }
    }
}

struct Rings {
    /// Keeps the mapping alive as long as any handle on the rings.
    _seg: Arc<Segment>,
    tx: Half,
    rx: Half,
    /// Our own indices: the producer's tail of `tx`, the consumer's head of `rx`.
    tx_tail: AtomicU64,
    rx_head: AtomicU64,
    /// The session's socket: doorbells, and end-of-stream when either side goes.
    bell: OwnedFd,
    timeouts: Mutex<(Option<Duration>, Option<Duration>)>,
    /// How long a reader polls its ring before sleeping on the doorbell.
    spin: Duration,
    /// The client's end: its reader does not poll while other sessions share the GPU
    /// (`crate::crowd`), as its socket's would not.
    client: bool,
}

// SAFETY: the raw pointers address the shared mapping that `_seg` keeps alive; access to
// the rings is through atomics and copies, and the callers serialize each direction (one
// reader and one writer at a time, as on a socket).
unsafe impl Send for Rings {}
unsafe impl Sync for Rings {}

/// One end of a session's rings: reads what the peer wrote, writes for the peer to read.
/// Clones are handles on the same end.
#[derive(Clone)]
pub struct RingStream(Arc<Rings>);

impl std::fmt::Debug for RingStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RingStream(cap {})", self.0.tx.cap)
    }
}

/// Which end of the rings: the client writes the first ring and reads the second.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum End {
    Client,
    Server,
}

impl RingStream {
    /// The rings at `offset` in `seg` with `cap` data bytes each way (a power of two), and
    /// `bell` the session's socket. The client zeroes the control blocks before it names
    /// them to the server; the server checks that they lie in the segment.
    pub fn new(
        seg: Arc<Segment>,
        offset: u64,
        cap: usize,
        end: End,
        bell: OwnedFd,
        spin: Duration,
    ) -> io::Result<Self> {
        let bad = |why: &str| io::Error::new(io::ErrorKind::InvalidInput, format!("shared ring: {why}"));
        if !cap.is_power_of_two() || !(4096..=64 << 20).contains(&cap) {
            return Err(bad("size is not a power of two between 4 KiB and 64 MiB"));
        }
        if !offset.is_multiple_of(4096) {
            return Err(bad("offset is not page-aligned"));
        }
        let base = seg.range(offset, ring_bytes(cap) as u64).ok_or_else(|| bad("outside the segment"))?;
        let first = Half { base, cap: cap as u64 };
        // SAFETY: the second half follows the first, inside the range checked above.
        let second = Half { base: unsafe { base.add(RING_CTL + cap) }, cap: cap as u64 };
        let (tx, rx) = match end {
            End::Client => (first, second),
            End::Server => (second, first),
        };
        if end == End::Client {
            for h in [&tx, &rx] {
                for at in [HEAD, TAIL, ASLEEP] {
                    h.index(at).store(0, Ordering::Relaxed);
                }
            }
        }
        Ok(RingStream(Arc::new(Rings {
            _seg: seg,
            tx,
            rx,
            tx_tail: AtomicU64::new(0),
            rx_head: AtomicU64::new(0),
            bell,
            timeouts: Mutex::new((None, None)),
            spin,
            client: end == End::Client,
        })))
    }

    pub fn set_timeouts(&self, read: Option<Duration>, write: Option<Duration>) {
        *self.0.timeouts.lock() = (read, write);
    }

    /// Shut the doorbell socket: both sides' sleepers wake with end-of-stream.
    pub fn shutdown(&self) {
        // SAFETY: shutdown(2) on a socket we own.
        unsafe { libc::shutdown(self.0.bell.as_raw_fd(), libc::SHUT_RDWR) };
    }
}

impl AsRawFd for RingStream {
    fn as_raw_fd(&self) -> RawFd {
        self.0.bell.as_raw_fd()
    }
}

/// What waiting on the doorbell found.
enum Bell {
    /// A bell, or the tick passed: look at the ring again.
    Again,
    /// The socket reached its end: the peer (or our own side) shut the session.
    Closed,
}

impl Rings {
    /// Sleep until a doorbell comes (draining every byte that came), the socket ends or
    /// `wait` passes.
    fn sleep(&self, wait: Duration) -> io::Result<Bell> {
        let fd = self.bell.as_raw_fd();
        let mut p = libc::pollfd { fd, events: libc::POLLIN, revents: 0 };
        let ms = wait.as_millis().clamp(1, i32::MAX as u128) as i32;
        // SAFETY: one valid pollfd.
        if unsafe { libc::poll(&mut p, 1, ms) } < 0 {
            let e = io::Error::last_os_error();
            return if e.kind() == io::ErrorKind::Interrupted { Ok(Bell::Again) } else { Err(e) };
        }
        self.drain_bells()
    }

    /// Take every doorbell byte waiting (without blocking); `Closed` at end-of-stream.
    fn drain_bells(&self) -> io::Result<Bell> {
        let mut scratch = [0u8; 256];
        loop {
            // SAFETY: recv into a local buffer from a socket we own.
            let n = unsafe {
                libc::recv(self.bell.as_raw_fd(), scratch.as_mut_ptr().cast(), scratch.len(), libc::MSG_DONTWAIT)
            };
            match n {
                0 => return Ok(Bell::Closed),
                n if n > 0 => continue,
                _ => {
                    let e = io::Error::last_os_error();
                    return match e.kind() {
                        io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted => Ok(Bell::Again),
                        io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe => Ok(Bell::Closed),
                        _ => Err(e),
                    };
                }
            }
        }
    }

    fn ring_bell(&self) {
        let b = [1u8];
        // A full socket buffer already holds bells enough; a closed one shows on the next wait.
        // SAFETY: send from a local buffer on a socket we own.
        unsafe {
            libc::send(self.bell.as_raw_fd(), b.as_ptr().cast(), 1, libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL);
        }
    }
}

fn timed_out(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, format!("shared ring: {what} timed out"))
}

impl Read for RingStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let r = &*self.0;
        let head = r.rx_head.load(Ordering::Relaxed);
        let timeout = r.timeouts.lock().0;
        let spin = if r.client { crate::crowd::spin_unless_crowded(r.spin) } else { r.spin };
        let start = Instant::now();
        let mut tries = 0u32;
        loop {
            let tail = r.rx.index(TAIL).load(Ordering::Acquire);
            let used = r.rx.used(head, tail)?;
            if used > 0 {
                let n = buf.len().min(used as usize);
                r.rx.take(head, &mut buf[..n]);
                let head = head + n as u64;
                r.rx_head.store(head, Ordering::Relaxed);
                r.rx.index(HEAD).store(head, Ordering::Release);
                return Ok(n);
            }
            let waited = start.elapsed();
            if timeout.is_some_and(|t| waited >= t) {
                return Err(timed_out("read"));
            }
            if waited < spin {
                tries += 1;
                if tries < 64 {
                    std::hint::spin_loop();
                } else {
                    std::thread::yield_now();
                }
                continue;
            }
            // Say we sleep, then look once more: the writer either sees the flag (and rings)
            // or we see its bytes.
            r.rx.index(ASLEEP).store(1, Ordering::SeqCst);
            fence(Ordering::SeqCst);
            let bell = if r.rx.index(TAIL).load(Ordering::SeqCst) != tail {
                Bell::Again
            } else {
                let left = timeout.map_or(TICK, |t| t.saturating_sub(waited).min(TICK));
                r.sleep(left)?
            };
            r.rx.index(ASLEEP).store(0, Ordering::Relaxed);
            if let Bell::Closed = bell
                && r.rx.index(TAIL).load(Ordering::Acquire) == tail
            {
                return Ok(0);
            }
        }
    }
}

impl Write for RingStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_vectored(&[io::IoSlice::new(buf)])
    }

    /// As much of `bufs` as fits, published at once (one frame's header, arguments and
    /// bytes wake the reader once).
    fn write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        let total: usize = bufs.iter().map(|b| b.len()).sum();
        if total == 0 {
            return Ok(0);
        }
        let r = &*self.0;
        let tail = r.tx_tail.load(Ordering::Relaxed);
        let timeout = r.timeouts.lock().1;
        let start = Instant::now();
        let mut looked = start;
        let free = loop {
            let head = r.tx.index(HEAD).load(Ordering::Acquire);
            let free = r.tx.cap - r.tx.used(head, tail)?;
            if free > 0 {
                break free as usize;
            }
            // Full (the reader is behind: a client's launches outrun the GPU's server, as
            // they would fill the driver's queue natively): it is taking bytes out, or gone.
            let waited = start.elapsed();
            if timeout.is_some_and(|t| waited >= t) {
                return Err(timed_out("write"));
            }
            if looked.elapsed() >= Duration::from_millis(1) {
                looked = Instant::now();
                // Without taking doorbells meant for a reader.
                if crate::spin::peer_closed(r.bell.as_raw_fd()) {
                    return Err(io::Error::new(io::ErrorKind::BrokenPipe, "shared ring: the peer closed the session"));
                }
            }
            if waited < r.spin {
                std::thread::yield_now();
            } else {
                std::thread::sleep(Duration::from_micros(200));
            }
        };
        let mut at = tail;
        let mut left = free.min(total);
        for b in bufs {
            if left == 0 {
                break;
            }
            let n = b.len().min(left);
            r.tx.put(at, &b[..n]);
            at += n as u64;
            left -= n;
        }
        r.tx_tail.store(at, Ordering::Relaxed);
        r.tx.index(TAIL).store(at, Ordering::Release);
        fence(Ordering::SeqCst);
        if r.tx.index(ASLEEP).load(Ordering::SeqCst) != 0 {
            r.ring_bell();
        }
        Ok((at - tail) as usize)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixStream;

    fn pair(cap: usize, spin: Duration) -> (RingStream, RingStream) {
        let seg = Arc::new(Segment::create(8 << 20).unwrap());
        let (a, b) = UnixStream::pair().unwrap();
        let c = RingStream::new(seg.clone(), 4096, cap, End::Client, a.into(), spin).unwrap();
        let s = RingStream::new(seg, 4096, cap, End::Server, b.into(), spin).unwrap();
        (c, s)
    }

    /// Frames larger than the ring, both ways at once, arrive whole and in order, with the
    /// readers sleeping on the doorbell between them (no polling budget).
    #[test]
    fn bytes_cross_both_ways_through_small_rings() {
        for spin in [Duration::ZERO, Duration::from_millis(5)] {
            let (mut c, mut s) = pair(4096, spin);
            let data: Vec<u8> = (0..300_000).map(|i| (i * 7 % 253) as u8).collect();
            let echo = std::thread::spawn(move || {
                let mut buf = vec![0u8; 300_000];
                for _ in 0..3 {
                    s.read_exact(&mut buf).unwrap();
                    s.write_all(&buf).unwrap();
                    std::thread::sleep(Duration::from_millis(2));
                }
            });
            for _ in 0..3 {
                let writer = {
                    let (mut c, data) = (c.clone(), data.clone());
                    std::thread::spawn(move || c.write_all(&data).unwrap())
                };
                let mut back = vec![0u8; data.len()];
                c.read_exact(&mut back).unwrap();
                writer.join().unwrap();
                assert!(back == data);
            }
            echo.join().unwrap();
        }
    }

    #[test]
    fn a_closed_peer_ends_the_stream_after_its_last_bytes() {
        let (mut c, mut s) = pair(4096, Duration::ZERO);
        c.write_all(b"last words").unwrap();
        c.shutdown();
        drop(c);
        let mut got = Vec::new();
        s.read_to_end(&mut got).unwrap();
        assert_eq!(got, b"last words");
        // The writer to a gone reader fails instead of waiting for space forever.
        let e = s.write_all(&vec![0u8; 10_000]).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::BrokenPipe, "{e}");
    }

    #[test]
    fn reads_and_full_rings_time_out() {
        let (mut c, mut s) = pair(4096, Duration::ZERO);
        c.set_timeouts(Some(Duration::from_millis(30)), Some(Duration::from_millis(30)));
        let t0 = Instant::now();
        assert_eq!(c.read(&mut [0u8; 8]).unwrap_err().kind(), io::ErrorKind::TimedOut);
        assert_eq!(c.write_all(&[0u8; 8192]).unwrap_err().kind(), io::ErrorKind::TimedOut);
        assert!(t0.elapsed() < Duration::from_secs(2));
        let mut b = [0u8; 4096];
        s.read_exact(&mut b).unwrap();
    }

    /// A peer that writes a tail beyond its ring gets an error, not a read out of bounds.
    #[test]
    fn an_index_out_of_range_is_refused() {
        let seg = Arc::new(Segment::create(1 << 20).unwrap());
        let (a, b) = UnixStream::pair().unwrap();
        let _c = RingStream::new(seg.clone(), 0, 4096, End::Client, a.into(), Duration::ZERO).unwrap();
        let mut s = RingStream::new(seg.clone(), 0, 4096, End::Server, b.into(), Duration::ZERO).unwrap();
        // SAFETY: the client-to-server ring's tail slot, inside the segment.
        unsafe { (*(seg.as_ptr().add(TAIL) as *const AtomicU64)).store(1 << 40, Ordering::Release) };
        let e = s.read(&mut [0u8; 16]).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData, "{e}");
        let server_end = |offset, cap| {
            let bell = UnixStream::pair().unwrap().0.into();
            RingStream::new(seg.clone(), offset, cap, End::Server, bell, Duration::ZERO)
        };
        assert!(server_end(1 << 20, 4096).is_err(), "outside the segment");
        assert!(server_end(0, 5000).is_err(), "not a power of two");
        assert!(server_end(100, 4096).is_err(), "not page-aligned");
    }
}
